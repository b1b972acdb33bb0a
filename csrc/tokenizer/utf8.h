/* UTF-8 decoding with the Unicode standard's rules for ill-formed input
 * (Table 3-7 and "U+FFFD substitution of maximal subparts"), which is also
 * what Python's "replace" error handler and Rust's from_utf8_lossy do. */
#ifndef SS_TOK_UTF8_H
#define SS_TOK_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define TOK_UTF8_BAD 0xFFFFFFFFu   /* ill-formed: the bytes are a maximal subpart */
#define TOK_UTF8_SHORT 0xFFFFFFFEu /* the input ends inside a well-formed prefix  */

/* Decodes the character at s[0..n), n >= 1. Returns the bytes it spans and
 * stores its code point in *cp, or one of the two markers above with the
 * length of the ill-formed (or cut-short) prefix, always >= 1. */
static inline int tok_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int need;
    uint32_t c;
    /* The second byte's range depends on the lead byte: it is what rules out
     * overlong forms, surrogates and values above U+10FFFF. */
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        *cp = TOK_UTF8_BAD;
        return 1;
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) {
            *cp = TOK_UTF8_SHORT;
            return i;
        }
        uint8_t x = s[i];
        if (x < lo || x > hi) {
            *cp = TOK_UTF8_BAD;
            return i;
        }
        lo = 0x80;
        hi = 0xBF;
        c = (c << 6) | (x & 0x3F);
    }
    *cp = c;
    return need + 1;
}

/* Start of the character that ends at s[end) (end > 0), found by stepping
 * back over continuation bytes; *cp is TOK_UTF8_BAD when the bytes before end
 * are not one well-formed character ending exactly there. */
size_t tok_utf8_prev(const uint8_t *s, size_t end, uint32_t *cp);

/* A growable byte buffer. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} tok_buf;

/* Makes room for `extra` more bytes; 0 on success, -1 when out of memory. */
int tok_buf_reserve(tok_buf *b, size_t extra);

/* Appends s[0..n) to out as valid UTF-8, each ill-formed maximal subpart
 * replaced by U+FFFD. Unless final, a character cut short by the end of s is
 * left unconverted. Returns the bytes of s consumed, or (size_t)-1 when out
 * of memory. */
size_t tok_utf8_repair(tok_buf *out, const uint8_t *s, size_t n, int final);

#endif
