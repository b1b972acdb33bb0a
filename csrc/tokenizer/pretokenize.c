#include "pretokenize.h"

#include "unicode.h"
#include "utf8.h"

/* Class of the character at s[pos] (0 for ill-formed bytes, which thus read
 * as punctuation); *len receives its length in bytes. */
static inline uint8_t class_at(const uint8_t *s, size_t n, size_t pos, size_t *len) {
    if (s[pos] < 0x80) {
        *len = 1;
        return tok_uni_low[s[pos]];
    }
    uint32_t cp;
    *len = (size_t)tok_utf8_decode(s + pos, n - pos, &cp);
    return tok_uni_class(cp);
}

#define LNS (TOK_LETTER | TOK_NUMBER | TOK_SPACE)

/* End of the run of characters from pos whose class, masked by `mask`, is
 * `want`: letters, numbers, or "none of letter/number/space". */
static size_t run(const uint8_t *s, size_t n, size_t pos, uint8_t mask, uint8_t want) {
    while (pos < n) {
        size_t len;
        if ((class_at(s, n, pos, &len) & mask) != want) break;
        pos += len;
    }
    return pos;
}

size_t tok_pretokenize_next(const uint8_t *s, size_t n, size_t pos) {
    /* 's|'t|'re|'ve|'m|'ll|'d: case-sensitive, and tried before anything else,
     * so "'sup" gives "'s" + "up". */
    if (s[pos] == '\'' && pos + 1 < n) {
        uint8_t a = s[pos + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
        if (pos + 2 < n) {
            uint8_t b = s[pos + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return pos + 3;
        }
    }
    size_t start = pos, len;
    uint8_t cls = class_at(s, n, pos, &len);
    /* " ?X+": one ASCII space joins the letters, digits or punctuation that
     * follow it (but not following whitespace). */
    if (s[pos] == ' ' && pos + 1 < n) {
        size_t len2;
        uint8_t next = class_at(s, n, pos + 1, &len2);
        if (!(next & TOK_SPACE)) {
            cls = next;
            pos += 1;
        }
    }
    if (cls & TOK_LETTER) return run(s, n, pos, TOK_LETTER, TOK_LETTER);
    if (cls & TOK_NUMBER) return run(s, n, pos, TOK_NUMBER, TOK_NUMBER);
    if (!(cls & TOK_SPACE)) return run(s, n, pos, LNS, 0);

    /* Whitespace: "\s+(?!\S)" takes the whole run at the end of the text,
     * else backtracks one character so that the last one can prefix the next
     * word; a single whitespace character before a word falls to "\s+". */
    size_t last = pos;
    while (pos < n && (class_at(s, n, pos, &len) & TOK_SPACE)) {
        last = pos;
        pos += len;
    }
    if (pos == n) return n;
    return last > start ? last : pos;
}
