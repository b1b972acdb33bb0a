/* Added tokens: split out of the text before pre-tokenization, as Hugging
 * Face's AddedVocabulary::find_matches does: non-overlapping matches, each
 * the longest pattern at the leftmost position where one starts, then the
 * token's single_word / lstrip / rstrip rules. */
#ifndef SS_TOK_ADDED_H
#define SS_TOK_ADDED_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef struct {
    int32_t id;
    uint8_t lstrip, rstrip, single_word;
} tok_added_info;

/* A byte trie of the patterns of one set of added tokens. */
typedef struct {
    int32_t root[256];          /* child of the root for each byte, -1 if none */
    int32_t *child, *sibling;   /* first child and next sibling of each node   */
    int32_t *pattern;           /* pattern that ends at each node, or -1       */
    uint8_t *label;             /* byte on the edge into each node             */
    int32_t n_nodes;
    tok_added_info *info;       /* per pattern                                 */
    int32_t n_patterns;
} tok_added_set;

/* Builds the set of tokens whose normalized flag equals `normalized`. For
 * identical patterns the first token wins. */
ss_status tok_added_init(tok_added_set *set, const ss_added_token *tokens, int32_t n, int normalized,
                         ss_error *err);
void tok_added_free(tok_added_set *set);

/* Receives the pieces of a split in order: a token (id >= 0) or the text
 * between tokens (id == -1), as byte offsets [start, end). */
typedef ss_status (*tok_piece_fn)(void *ctx, const uint8_t *s, size_t start, size_t end, int32_t id);

/* Splits s[0..n) on the set's tokens. Empty pieces are not reported. */
ss_status tok_added_split(const tok_added_set *set, const uint8_t *s, size_t n, tok_piece_fn fn, void *ctx);

#endif
