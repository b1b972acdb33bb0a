#include "bytelevel.h"

#include "utf8.h"

/* The non-printable bytes are 0x00-0x20 (33 of them), 0x7F-0xA0 (34) and
 * 0xAD (1); in that order they take U+0100 + 0..67. */

uint32_t tok_bytelevel_char(uint8_t b) {
    if (b <= 0x20) return 0x100 + b;
    if (b >= 0x7F && b <= 0xA0) return 0x100 + 33 + (b - 0x7F);
    if (b == 0xAD) return 0x100 + 67;
    return b;
}

/* Inverse of tok_bytelevel_char: -1 for code points outside the alphabet. */
static int char_byte(uint32_t cp) {
    if (cp < 0x100) {
        int printable = (cp > 0x20 && cp < 0x7F) || (cp > 0xA0 && cp != 0xAD);
        return printable ? (int)cp : -1;
    }
    uint32_t k = cp - 0x100;
    if (k <= 32) return (int)k;
    if (k <= 66) return (int)(0x7F + k - 33);
    if (k == 67) return 0xAD;
    return -1;
}

ptrdiff_t tok_bytelevel_decode(const uint8_t *s, size_t n, uint8_t *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint32_t cp;
        i += (size_t)tok_utf8_decode(s + i, n - i, &cp);
        int b = char_byte(cp);
        if (b < 0) return -1;
        out[o++] = (uint8_t)b;
    }
    return (ptrdiff_t)o;
}
