/* A memo of the tokens BPE gave to the words of one encode call that are
 * not a single token: names and rare words recur within a text, and a
 * lookup is cheaper than merging again. It belongs to the call, so threads
 * encoding with one tokenizer share nothing, and it is bounded in size. */
#ifndef SS_TOK_WORDCACHE_H
#define SS_TOK_WORDCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t prefix;  /* first 8 bytes of the word (see wordhash.h)  */
    uint32_t tag;     /* 0 when the slot is empty                    */
    uint32_t n_ids;
    uint32_t word_at; /* the word's bytes in `words`, its ids in `ids` */
    uint32_t ids_at;
} tok_cache_slot;

typedef struct {
    tok_cache_slot *slots;
    size_t mask, count;
    uint8_t *words;
    size_t words_len, words_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
} tok_wordcache;

/* Words longer than this are not cached (they are rare, and would make
 * the memo large). */
#define TOK_CACHE_MAX_WORD 64

/* The cached tokens of w[0..n) (*n_ids of them), or NULL. */
const int32_t *tok_wordcache_find(const tok_wordcache *c, const uint8_t *w, size_t n, size_t *n_ids);
/* Remembers the tokens of w; silently does nothing when full or out of
 * memory, since the memo is only an accelerator. */
void tok_wordcache_add(tok_wordcache *c, const uint8_t *w, size_t n, const int32_t *ids, size_t n_ids);
void tok_wordcache_free(tok_wordcache *c);

#endif
