/* Hashing of short byte strings (words) shared by the word map and the
 * word cache: a slot keeps a word's first 8 bytes and a tag holding its
 * hash and length, so short words compare without touching their bytes. */
#ifndef SS_TOK_WORDHASH_H
#define SS_TOK_WORDHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The first min(n, 8) bytes of s, zero-padded. */
static inline uint64_t tok_word_prefix(const uint8_t *s, size_t n) {
    uint64_t x = 0;
    if (n >= 8) {
        memcpy(&x, s, 8);
    } else {
        for (size_t i = 0; i < n; i++) x |= (uint64_t)s[i] << (8 * i);
    }
    return x;
}

/* Hash of the whole word in the high 24 bits, min(n, 255) in the low 8:
 * equal tags imply equal lengths below 255, and up to 8 bytes equal
 * prefixes then imply equal words. */
static inline uint32_t tok_word_tag(const uint8_t *s, size_t n, uint64_t prefix) {
    uint64_t h = (prefix ^ (uint64_t)n) * 0x9E3779B97F4A7C15ull;
    for (size_t i = 8; i < n; i += 8) {
        h ^= tok_word_prefix(s + i, n - i);
        h *= 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    h ^= h >> 29;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return ((uint32_t)h & 0xFFFFFF00u) | (uint32_t)(n < 255 ? n : 255);
}

#endif
