#include "wordcache.h"

#include <stdlib.h>
#include <string.h>

#include "wordhash.h"

/* At most this many words, i.e. a table of at most 2x as many 24-byte
 * slots (1.5 MiB) plus their bytes and ids. */
#define MAX_WORDS (1u << 15)

static tok_cache_slot *find_slot(const tok_wordcache *c, const uint8_t *w, size_t n, uint64_t prefix,
                                 uint32_t tag) {
    for (size_t i = (tag >> 8) & c->mask;; i = (i + 1) & c->mask) {
        tok_cache_slot *s = &c->slots[i];
        if (s->tag == 0) return s;
        if (s->tag == tag && s->prefix == prefix && (n <= 8 || memcmp(c->words + s->word_at, w, n) == 0)) return s;
    }
}

/* A tag of 0 marks empty slots: keep real tags away from it. */
static inline uint32_t live_tag(const uint8_t *w, size_t n, uint64_t prefix) {
    uint32_t tag = tok_word_tag(w, n, prefix);
    return tag ? tag : 0x100;
}

const int32_t *tok_wordcache_find(const tok_wordcache *c, const uint8_t *w, size_t n, size_t *n_ids) {
    if (!c->slots || n > TOK_CACHE_MAX_WORD) return NULL;
    uint64_t prefix = tok_word_prefix(w, n);
    const tok_cache_slot *s = find_slot(c, w, n, prefix, live_tag(w, n, prefix));
    if (s->tag == 0) return NULL;
    *n_ids = s->n_ids;
    return c->ids + s->ids_at;
}

static int grow(tok_wordcache *c) {
    size_t n_slots = c->slots ? 2 * (c->mask + 1) : 64;
    tok_cache_slot *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return -1;
    tok_wordcache old = *c;
    c->slots = slots;
    c->mask = n_slots - 1;
    for (size_t i = 0; old.slots && i <= old.mask; i++) {
        const tok_cache_slot *s = &old.slots[i];
        if (s->tag == 0) continue;
        *find_slot(c, c->words + s->word_at, s->tag & 0xFF, s->prefix, s->tag) = *s;
    }
    free(old.slots);
    return 0;
}

static int append(void **buf, size_t *len, size_t *cap, const void *src, size_t n, size_t elem) {
    if (n == 0) return 0;
    if (*len + n > *cap) {
        size_t new_cap = *cap ? *cap : 256;
        while (new_cap < *len + n) new_cap *= 2;
        void *p = realloc(*buf, new_cap * elem);
        if (!p) return -1;
        *buf = p;
        *cap = new_cap;
    }
    memcpy((char *)*buf + *len * elem, src, n * elem);
    *len += n;
    return 0;
}

void tok_wordcache_add(tok_wordcache *c, const uint8_t *w, size_t n, const int32_t *ids, size_t n_ids) {
    if (n > TOK_CACHE_MAX_WORD || n_ids == 0 || c->count >= MAX_WORDS) return;
    if ((!c->slots || 2 * (c->count + 1) > c->mask + 1) && grow(c) != 0) return;
    uint64_t prefix = tok_word_prefix(w, n);
    uint32_t tag = live_tag(w, n, prefix);
    tok_cache_slot *s = find_slot(c, w, n, prefix, tag);
    if (s->tag != 0) return;
    tok_cache_slot fresh = {prefix, tag, (uint32_t)n_ids, (uint32_t)c->words_len, (uint32_t)c->ids_len};
    if (append((void **)&c->words, &c->words_len, &c->words_cap, w, n, 1) != 0) return;
    if (append((void **)&c->ids, &c->ids_len, &c->ids_cap, ids, n_ids, sizeof(int32_t)) != 0) return;
    *s = fresh;
    c->count++;
}

void tok_wordcache_free(tok_wordcache *c) {
    free(c->slots);
    free(c->words);
    free(c->ids);
    memset(c, 0, sizeof *c);
}
