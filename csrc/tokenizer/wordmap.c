#include "wordmap.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "wordhash.h"

ss_status tok_wordmap_init(tok_wordmap *m, size_t capacity, const uint8_t *bytes, const int64_t *offsets,
                           ss_error *err) {
    size_t n_slots = 64;
    while (n_slots < 2 * capacity) n_slots *= 2;
    m->slots = malloc(n_slots * sizeof *m->slots);
    if (!m->slots) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for the word map");
    for (size_t i = 0; i < n_slots; i++) m->slots[i] = (tok_word_slot){0, 0, -1};
    m->mask = n_slots - 1;
    m->bytes = bytes;
    m->offsets = offsets;
    return SS_OK;
}

void tok_wordmap_free(tok_wordmap *m) {
    free(m->slots);
    m->slots = NULL;
}

void tok_wordmap_add(tok_wordmap *m, int32_t id) {
    const uint8_t *w = m->bytes + m->offsets[id];
    size_t n = (size_t)(m->offsets[id + 1] - m->offsets[id]);
    uint64_t prefix = tok_word_prefix(w, n);
    uint32_t tag = tok_word_tag(w, n, prefix);
    size_t i = (tag >> 8) & m->mask;
    while (m->slots[i].id >= 0) i = (i + 1) & m->mask;
    m->slots[i] = (tok_word_slot){prefix, tag, id};
}

int32_t tok_wordmap_find(const tok_wordmap *m, const uint8_t *w, size_t n) {
    uint64_t prefix = tok_word_prefix(w, n);
    uint32_t tag = tok_word_tag(w, n, prefix);
    for (size_t i = (tag >> 8) & m->mask;; i = (i + 1) & m->mask) {
        const tok_word_slot *s = &m->slots[i];
        if (s->id < 0) return -1;
        if (s->tag != tag || s->prefix != prefix) continue;
        if (n <= 8) return s->id;
        if ((size_t)(m->offsets[s->id + 1] - m->offsets[s->id]) == n &&
            memcmp(m->bytes + m->offsets[s->id] + 8, w + 8, n - 8) == 0)
            return s->id;
    }
}
