/* Hash map from a word's bytes to the single token id it encodes to, so
 * that the words BPE would rebuild into one vocabulary token (most of them,
 * in ordinary text) skip merging. Keys are the bytes each id decodes to,
 * kept by the tokenizer; a slot holds their first 8 bytes and a tag (see
 * wordhash.h), so that looking up a short word touches one cache line. */
#ifndef SS_TOK_WORDMAP_H
#define SS_TOK_WORDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "specstream.h"

typedef struct {
    uint64_t prefix; /* first 8 bytes of the key, zero-padded          */
    uint32_t tag;    /* hash in the high 24 bits, min(length, 255) low */
    int32_t id;      /* -1 when the slot is empty                      */
} tok_word_slot;

typedef struct {
    tok_word_slot *slots;
    size_t mask;
    const uint8_t *bytes;   /* borrowed: the bytes of id i are    */
    const int64_t *offsets; /* bytes[offsets[i] .. offsets[i+1])  */
} tok_wordmap;

ss_status tok_wordmap_init(tok_wordmap *m, size_t capacity, const uint8_t *bytes, const int64_t *offsets,
                           ss_error *err);
void tok_wordmap_free(tok_wordmap *m);
/* Adds id (whose bytes must not be in the map yet); at most `capacity` ids. */
void tok_wordmap_add(tok_wordmap *m, int32_t id);
/* The id whose bytes are w[0..n), or -1. */
int32_t tok_wordmap_find(const tok_wordmap *m, const uint8_t *w, size_t n);

#endif
