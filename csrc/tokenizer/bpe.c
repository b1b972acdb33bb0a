#include "bpe.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Words up to this many bytes merge in small arrays on the stack with a
 * linear scan for the best pair (fast for the short words that make up
 * almost all text); longer ones use a heap, so that pathological inputs
 * (a megabyte without a space) stay O(n log n). */
#define SHORT_WORD 64

#define NO_RANK INT32_MAX

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static inline size_t pair_slot(uint64_t key, size_t mask) {
    /* Fibonacci hashing: the upper half of the product mixes all key bits. */
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

static inline const tok_pair_slot *find_pair(const tok_bpe *bpe, int32_t a, int32_t b) {
    uint64_t key = pair_key(a, b);
    size_t i = pair_slot(key, bpe->pair_mask);
    for (;;) {
        const tok_pair_slot *s = &bpe->pairs[i];
        if (s->key == key) return s;
        if (s->key == TOK_PAIR_EMPTY) return NULL;
        i = (i + 1) & bpe->pair_mask;
    }
}

ss_status tok_bpe_init_merges(tok_bpe *bpe, const int32_t *rows, int32_t n, ss_error *err) {
    /* At most half full, so that probes stay short. */
    size_t slots = 64;
    while (slots < 2 * (size_t)n) slots *= 2;
    bpe->pairs = malloc(slots * sizeof *bpe->pairs);
    if (!bpe->pairs) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for %d merges", n);
    for (size_t i = 0; i < slots; i++) bpe->pairs[i].key = TOK_PAIR_EMPTY;
    bpe->pair_mask = slots - 1;
    for (int32_t r = 0; r < n; r++) {
        uint64_t key = pair_key(rows[3 * r], rows[3 * r + 1]);
        size_t i = pair_slot(key, bpe->pair_mask);
        while (bpe->pairs[i].key != TOK_PAIR_EMPTY && bpe->pairs[i].key != key) i = (i + 1) & bpe->pair_mask;
        bpe->pairs[i].key = key;
        bpe->pairs[i].rank = r;
        bpe->pairs[i].merged = rows[3 * r + 2];
    }
    bpe->byte_pairs = malloc(65536 * sizeof *bpe->byte_pairs);
    if (!bpe->byte_pairs) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for the byte-pair table");
    for (int a = 0; a < 256; a++) {
        for (int b = 0; b < 256; b++) {
            const tok_pair_slot *p = NULL;
            if (bpe->byte_id[a] >= 0 && bpe->byte_id[b] >= 0) p = find_pair(bpe, bpe->byte_id[a], bpe->byte_id[b]);
            bpe->byte_pairs[a << 8 | b] = p ? (tok_merge){p->rank, p->merged} : (tok_merge){NO_RANK, -1};
        }
    }
    return SS_OK;
}

void tok_bpe_free(tok_bpe *bpe) {
    free(bpe->pairs);
    free(bpe->byte_pairs);
    bpe->pairs = NULL;
    bpe->byte_pairs = NULL;
}

int tok_ids_push(tok_ids *v, int32_t id) {
    if (v->len == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        if (cap > SIZE_MAX / sizeof(int32_t)) return -1;
        int32_t *p = realloc(v->data, cap * sizeof(int32_t));
        if (!p) return -1;
        v->data = p;
        v->cap = cap;
    }
    v->data[v->len++] = id;
    return 0;
}

void tok_bpe_scratch_free(tok_bpe_scratch *s) {
    free(s->sym);
    free(s->prev);
    free(s->next);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

/* One symbol per byte. Bytes without a token become unk_id (runs of them one
 * unk_id when fuse_unk) or are dropped; either way their neighbours become
 * adjacent and may merge, as in Hugging Face. Returns the symbol count;
 * *all_known says whether every byte had a token. */
static size_t initial_symbols(const tok_bpe *bpe, const uint8_t *w, size_t n, int32_t *sym, int *all_known) {
    size_t m = 0;
    int pending_unk = 0;
    *all_known = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = bpe->byte_id[w[i]];
        if (id >= 0) {
            if (pending_unk) sym[m++] = bpe->unk_id;
            pending_unk = 0;
            sym[m++] = id;
            continue;
        }
        *all_known = 0;
        if (bpe->unk_id >= 0) {
            if (pending_unk && !bpe->fuse_unk) sym[m++] = bpe->unk_id;
            pending_unk = 1;
        }
    }
    if (pending_unk) sym[m++] = bpe->unk_id;
    return m;
}

static ss_status emit(tok_ids *out, const int32_t *sym, size_t m, ss_error *err) {
    for (size_t i = 0; i < m; i++)
        if (tok_ids_push(out, sym[i]) != 0) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for token ids");
    return SS_OK;
}

static ss_status merge_short(const tok_bpe *bpe, const uint8_t *w, size_t n, tok_ids *out, ss_error *err) {
    int32_t sym[SHORT_WORD], rank[SHORT_WORD], merged[SHORT_WORD];
    int all_known;
    size_t m = initial_symbols(bpe, w, n, sym, &all_known);
    /* rank[i], merged[i] describe the pair (sym[i], sym[i+1]); when every
     * byte has a token, those are pairs of bytes. */
    if (all_known) {
        for (size_t i = 0; i + 1 < m; i++) {
            tok_merge p = bpe->byte_pairs[w[i] << 8 | w[i + 1]];
            rank[i] = p.rank;
            merged[i] = p.merged;
        }
    } else {
        for (size_t i = 0; i + 1 < m; i++) {
            const tok_pair_slot *p = find_pair(bpe, sym[i], sym[i + 1]);
            rank[i] = p ? p->rank : NO_RANK;
            merged[i] = p ? p->merged : -1;
        }
    }
    while (m > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == NO_RANK) break;
        sym[best] = merged[best];
        /* Drop symbol best+1 and the pair that started with it. */
        for (size_t i = best + 1; i + 1 < m; i++) sym[i] = sym[i + 1];
        for (size_t i = best + 1; i + 2 < m; i++) {
            rank[i] = rank[i + 1];
            merged[i] = merged[i + 1];
        }
        m--;
        /* Only the pairs touching the new symbol changed. */
        for (size_t i = best ? best - 1 : 0; i <= best && i + 1 < m; i++) {
            const tok_pair_slot *p = find_pair(bpe, sym[i], sym[i + 1]);
            rank[i] = p ? p->rank : NO_RANK;
            merged[i] = p ? p->merged : -1;
        }
    }
    return emit(out, sym, m, err);
}

/* Min-heap of (rank << 32 | position): the lowest rank, then leftmost. */
static void heap_push(uint64_t *h, size_t *len, uint64_t v) {
    size_t i = (*len)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *len) {
    uint64_t top = h[0], v = h[--*len];
    size_t i = 0, n = *len;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = v;
    return top;
}

static ss_status reserve_scratch(tok_bpe_scratch *s, size_t n, ss_error *err) {
    if (n <= s->cap) return SS_OK;
    tok_bpe_scratch_free(s);
    if (n > SIZE_MAX / (3 * sizeof(uint64_t))) return ss_fail(err, SS_ERR_NO_MEMORY, "word of %zu bytes is too long", n);
    s->sym = malloc(n * sizeof(int32_t));
    s->prev = malloc(n * sizeof(int32_t));
    s->next = malloc(n * sizeof(int32_t));
    s->heap = malloc(3 * n * sizeof(uint64_t));
    if (!s->sym || !s->prev || !s->next || !s->heap) {
        tok_bpe_scratch_free(s);
        return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for a word of %zu bytes", n);
    }
    s->cap = n;
    return SS_OK;
}

static ss_status merge_long(const tok_bpe *bpe, tok_bpe_scratch *s, const uint8_t *w, size_t n, tok_ids *out,
                            ss_error *err) {
    if (n >= INT32_MAX) return ss_fail(err, SS_ERR_UNSUPPORTED, "word of %zu bytes is too long for BPE", n);
    ss_status st = reserve_scratch(s, n, err);
    if (st != SS_OK) return st;
    int32_t *sym = s->sym, *prev = s->prev, *next = s->next;
    int all_known;
    size_t m = initial_symbols(bpe, w, n, sym, &all_known);
    if (m == 0) return SS_OK;
    size_t hlen = 0;
    for (size_t i = 0; i < m; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
        if (i + 1 == m) break;
        int32_t rank = NO_RANK;
        if (all_known) {
            rank = bpe->byte_pairs[w[i] << 8 | w[i + 1]].rank;
        } else {
            const tok_pair_slot *p = find_pair(bpe, sym[i], sym[i + 1]);
            if (p) rank = p->rank;
        }
        if (rank != NO_RANK) heap_push(s->heap, &hlen, (uint64_t)rank << 32 | i);
    }
    while (hlen) {
        uint64_t top = heap_pop(s->heap, &hlen);
        int32_t i = (int32_t)(top & 0xFFFFFFFFu), rank = (int32_t)(top >> 32);
        int32_t j = next[i];
        /* Entries go stale when a neighbour merged first: skip those whose
         * pair is gone or is no longer the one they were pushed for. */
        if (sym[i] < 0 || j < 0) continue;
        const tok_pair_slot *p = find_pair(bpe, sym[i], sym[j]);
        if (!p || p->rank != rank) continue;
        sym[i] = p->merged;
        sym[j] = -1;
        next[i] = next[j];
        if (next[i] >= 0) prev[next[i]] = i;
        if (prev[i] >= 0 && (p = find_pair(bpe, sym[prev[i]], sym[i])))
            heap_push(s->heap, &hlen, (uint64_t)p->rank << 32 | (uint32_t)prev[i]);
        if (next[i] >= 0 && (p = find_pair(bpe, sym[i], sym[next[i]])))
            heap_push(s->heap, &hlen, (uint64_t)p->rank << 32 | (uint32_t)i);
    }
    /* The first symbol only ever absorbs its right neighbours, so it heads the list. */
    for (int32_t i = 0; i >= 0; i = next[i])
        if (tok_ids_push(out, sym[i]) != 0) return ss_fail(err, SS_ERR_NO_MEMORY, "out of memory for token ids");
    return SS_OK;
}

ss_status tok_bpe_word(const tok_bpe *bpe, tok_bpe_scratch *scratch, const uint8_t *w, size_t n, tok_ids *out,
                       ss_error *err) {
    if (n == 0) return SS_OK;
    if (n <= SHORT_WORD) return merge_short(bpe, w, n, out, err);
    return merge_long(bpe, scratch, w, n, out, err);
}
