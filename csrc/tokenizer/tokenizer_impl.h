/* The inside of ss_tokenizer, shared by tokenizer.c (building, encoding)
 * and decode.c. */
#ifndef SS_TOK_IMPL_H
#define SS_TOK_IMPL_H

#include <stdint.h>

#include "added.h"
#include "bpe.h"
#include "tokenizer.h"
#include "wordmap.h"

enum { TOK_ID_PRESENT = 1, TOK_ID_SPECIAL = 2 };

struct ss_tokenizer {
    int32_t n_ids;
    uint8_t *bytes;      /* what each id decodes to, concatenated        */
    int64_t *offsets;    /* id i: bytes[offsets[i] .. offsets[i+1])      */
    uint8_t *id_flags;   /* TOK_ID_* per id                              */
    tok_bpe bpe;
    tok_wordmap words;   /* words that encode to exactly one token       */
    tok_added_set raw;   /* added tokens matched before normalization    */
    tok_added_set normalized;
    int add_prefix_space, use_regex;
};

static inline int tok_id_ok(const ss_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids && (tok->id_flags[id] & TOK_ID_PRESENT);
}

#endif
