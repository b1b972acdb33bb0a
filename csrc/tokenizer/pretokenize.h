/* The GPT-2 pre-tokenizer: cuts text into the words that BPE merges, as the
 * regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * does when matched repeatedly (Oniguruma semantics: first alternative that
 * matches, greedy with backtracking). Every character falls in one of the
 * classes, so the words tile the text. */
#ifndef SS_TOK_PRETOKENIZE_H
#define SS_TOK_PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>

/* End of the word that starts at s[pos], pos < n. */
size_t tok_pretokenize_next(const uint8_t *s, size_t n, size_t pos);

#endif
