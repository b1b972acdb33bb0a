/* GPT-2's byte-level alphabet: every byte is shown as a printable character
 * so that BPE vocabularies can be stored as text. Printable Latin-1 bytes
 * stand for themselves; the other 68 (controls, space, NBSP, soft hyphen)
 * take U+0100 onwards, in byte order. ' ' is thus 'Ġ' and '\n' is 'Ċ'. */
#ifndef SS_TOK_BYTELEVEL_H
#define SS_TOK_BYTELEVEL_H

#include <stddef.h>
#include <stdint.h>

/* Code point that stands for byte b. */
uint32_t tok_bytelevel_char(uint8_t b);

/* Converts a byte-level string (UTF-8 text in the alphabet) back to the
 * bytes it stands for, into out (room for n bytes is enough). Returns the
 * number of bytes, or -1 if some character is not in the alphabet (or the
 * UTF-8 is ill-formed), in which case out is unspecified. */
ptrdiff_t tok_bytelevel_decode(const uint8_t *s, size_t n, uint8_t *out);

#endif
