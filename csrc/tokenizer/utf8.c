#include "utf8.h"

#include <stdlib.h>
#include <string.h>

size_t tok_utf8_prev(const uint8_t *s, size_t end, uint32_t *cp) {
    size_t start = end - 1;
    /* A character spans at most 4 bytes, so at most 3 continuation bytes. */
    while (start > 0 && end - start < 4 && (s[start] & 0xC0) == 0x80) start--;
    if (tok_utf8_decode(s + start, end - start, cp) != (int)(end - start) || *cp >= 0x110000) {
        *cp = TOK_UTF8_BAD;
        return end - 1;
    }
    return start;
}

int tok_buf_reserve(tok_buf *b, size_t extra) {
    if (extra <= b->cap - b->len) return 0;
    if (extra > SIZE_MAX / 2 - b->len) return -1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

size_t tok_utf8_repair(tok_buf *out, const uint8_t *s, size_t n, int final) {
    /* Nothing to append: out->data may still be NULL, and NULL + 0 below
     * would be undefined behaviour (clang's UBSan reports it). */
    if (n == 0) return 0;
    /* Each input byte gives at most 3 output bytes (a lone bad byte -> EF BF BD). */
    if (n > (SIZE_MAX - 16) / 3 || tok_buf_reserve(out, 3 * n) != 0) return (size_t)-1;
    uint8_t *o = out->data + out->len;
    size_t i = 0;
    while (i < n) {
        /* Copy runs of ASCII without decoding: the common case. */
        if (s[i] < 0x80) {
            *o++ = s[i++];
            continue;
        }
        uint32_t cp;
        int k = tok_utf8_decode(s + i, n - i, &cp);
        if (cp == TOK_UTF8_SHORT && !final) break;
        if (cp == TOK_UTF8_BAD || cp == TOK_UTF8_SHORT) {
            *o++ = 0xEF;
            *o++ = 0xBF;
            *o++ = 0xBD;
        } else {
            memcpy(o, s + i, (size_t)k);
            o += k;
        }
        i += (size_t)k;
    }
    out->len = (size_t)(o - out->data);
    return i;
}
