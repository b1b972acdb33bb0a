/* Byte-pair encoding of one word: start from one symbol per byte, then
 * repeatedly merge the adjacent pair with the lowest merge rank (the
 * leftmost one among equals) until no listed pair is left. This is the
 * order Hugging Face's BPE model merges in. */
#ifndef SS_TOK_BPE_H
#define SS_TOK_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "specstream.h"

/* Merge table: (left id, right id) -> (rank, merged id), open addressing. */
typedef struct {
    uint64_t key;    /* left << 32 | right; TOK_PAIR_EMPTY if unused */
    int32_t rank, merged;
} tok_pair_slot;

#define TOK_PAIR_EMPTY UINT64_MAX

typedef struct {
    int32_t rank, merged; /* rank NO_RANK (INT32_MAX): no merge */
} tok_merge;

typedef struct {
    int32_t byte_id[256]; /* token of each single byte, -1 when not in the vocabulary */
    int32_t unk_id;       /* -1: bytes without a token are dropped */
    int fuse_unk;
    tok_pair_slot *pairs;
    size_t pair_mask;     /* slot count - 1 (a power of two minus one) */
    /* The merge of every pair of single bytes, [first byte << 8 | second]:
     * every word starts as single bytes, and a dense table of them (mostly
     * the letters' corner) stays in cache where the hash table would not. */
    tok_merge *byte_pairs;
} tok_bpe;

/* Builds the merge tables from n rows of (left, right, merged), after
 * byte_id is set; a repeated pair takes the later rank. Ids are assumed
 * checked by the caller. */
ss_status tok_bpe_init_merges(tok_bpe *bpe, const int32_t *rows, int32_t n, ss_error *err);
void tok_bpe_free(tok_bpe *bpe);

/* Growable int32 array: the ids an encode call produces. */
typedef struct {
    int32_t *data;
    size_t len, cap;
} tok_ids;

int tok_ids_push(tok_ids *v, int32_t id); /* 0, or -1 when out of memory */

/* Scratch memory for long words, owned by one encode call. */
typedef struct {
    int32_t *sym, *prev, *next;
    uint64_t *heap;
    size_t cap;
} tok_bpe_scratch;

void tok_bpe_scratch_free(tok_bpe_scratch *s);

/* Appends the tokens of word w[0..n) to out. */
ss_status tok_bpe_word(const tok_bpe *bpe, tok_bpe_scratch *scratch, const uint8_t *w, size_t n,
                       tok_ids *out, ss_error *err);

#endif
