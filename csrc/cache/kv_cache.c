#include "cache/kv_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"

const char *const ss_cache_policy_names[] = {"full", "window", "streaming", "recompute", "h2o", "snapkv",
                                             "keynorm", NULL};
const char *const ss_refresh_names[] = {"uniform", "structural", "entropy", NULL};

static int is_score_policy(ss_cache_policy p) {
    return p == SS_CACHE_H2O || p == SS_CACHE_SNAPKV || p == SS_CACHE_KEYNORM;
}

/* Policies that evict by the window schedule (all but full and recompute). */
static int is_windowed(ss_cache_policy p) {
    return p == SS_CACHE_WINDOW || p == SS_CACHE_STREAMING || is_score_policy(p);
}

ss_status ss_cache_config_rules(const ss_cache_config *cfg, ss_error *err) {
    const ss_cache_policy p = (ss_cache_policy)cfg->policy;
    const char *name = ss_cache_policy_names[p];
    if ((p == SS_CACHE_STREAMING || is_score_policy(p)) && cfg->window < cfg->n_sink)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "CacheConfig.window (%d) is smaller than CacheConfig.n_sink (%d)",
                       cfg->window, cfg->n_sink);
    if (cfg->overlap >= cfg->compress_every)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "CacheConfig.overlap (%d) must be smaller than CacheConfig.compress_every (%d): otherwise "
                       "nothing is ever evicted", cfg->overlap, cfg->compress_every);
    if (is_score_policy(p)) {
        if (cfg->heavy < 1)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                           "CacheConfig.heavy must be >= 1 for policy '%s' (tokens kept by score)", name);
    } else if (cfg->heavy != 0) {
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "CacheConfig.heavy applies to h2o, snapkv and keynorm, not '%s'",
                       name);
    }
    if (cfg->refresh_budget > 0) {
        if (p != SS_CACHE_WINDOW && p != SS_CACHE_STREAMING)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                           "CacheConfig.refresh_budget applies to the window and streaming policies, not '%s'", name);
        if (cfg->refresh_budget > cfg->window)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                           "CacheConfig.refresh_budget (%d) is larger than the cache window (%d)", cfg->refresh_budget,
                           cfg->window);
    }
    return SS_OK;
}

ss_status ss_cache_init(ss_kv_cache *c, const ss_cache_config *cfg, int n_layer, int n_head, int head_dim,
                        int rotary_dim, double rotary_base, int vocab, int max_pending, int threads,
                        ss_error *err) {
    *c = (ss_kv_cache){0};
    ss_status st = ss_config_check(SS_CONFIG_CACHE, cfg, err);
    if (st != SS_OK) return st;
    if (cfg->policy == SS_CACHE_FULL && cfg->capacity < 1)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "full cache: CacheConfig.capacity must be set (>= 1) before a state is created");
    if (cfg->refresh_budget > 0 && cfg->refresh == SS_REFRESH_STRUCTURAL && cfg->n_structural_ids < 1)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "structural refresh needs CacheConfig.structural_ids");
    c->cfg = *cfg;
    c->cfg.structural_ids = NULL; /* borrowed: copied into c->structural */
    const ss_cache_policy p = (ss_cache_policy)cfg->policy;
    if (p == SS_CACHE_WINDOW || p == SS_CACHE_FULL || p == SS_CACHE_RECOMPUTE) c->cfg.n_sink = 0;
    if (!is_windowed(p)) {
        c->cfg.compress_every = 1;
        c->cfg.max_drop = 0;
        c->cfg.overlap = 0;
        c->cfg.entropy_threshold = 0.0f;
    }
    if (!is_score_policy(p)) c->cfg.heavy = 0;
    if (!is_windowed(p) || is_score_policy(p)) c->cfg.refresh_budget = 0;
    c->n_layer = n_layer;
    c->n_head = n_head;
    c->head_dim = head_dim;
    c->rotary_dim = rotary_dim;
    c->rotary_base = rotary_base;
    c->vocab = vocab;
    c->n_sink = c->cfg.n_sink;
    c->dyn_cap = is_score_policy(p) ? c->cfg.heavy : c->cfg.refresh_budget;
    c->pinned = c->n_sink + c->dyn_cap;
    switch (p) {
    case SS_CACHE_FULL: c->ring = cfg->capacity; break;
    case SS_CACHE_RECOMPUTE: c->ring = cfg->window; break;
    default:
        /* The committed window run holds at most window + R - 1 keys; pending
         * tokens are stored before their evictions are applied. */
        c->ring = cfg->window + c->cfg.compress_every - 1 + max_pending;
        break;
    }
    c->slots = c->pinned + c->ring;
    c->track_attention = p == SS_CACHE_H2O || p == SS_CACHE_SNAPKV;
    c->track_keynorm = p == SS_CACHE_KEYNORM;
    c->track_entropy = c->cfg.entropy_threshold > 0.0f ||
                       (c->cfg.refresh_budget > 0 && c->cfg.refresh == SS_REFRESH_ENTROPY);
    const size_t per_layer = (size_t)n_head * (size_t)c->slots * (size_t)head_dim;
    const size_t S = (size_t)c->slots;
    c->k = ss_alloc((size_t)n_layer, per_layer * sizeof(float));
    c->v = ss_alloc((size_t)n_layer, per_layer * sizeof(float));
    int ok = c->k && c->v;
    if (c->dyn_cap > 0) {
        const size_t cand = (size_t)c->dyn_cap + (size_t)c->ring;
        c->dyn_pos = ss_alloc((size_t)c->dyn_cap, sizeof(int64_t));
        c->score = ss_alloc(S, sizeof(float));
        c->entropy = ss_alloc(S, sizeof(float));
        c->token = ss_alloc(S, sizeof(int32_t));
        c->cand_pos = ss_alloc(cand, sizeof(int64_t));
        c->cand_score = ss_alloc(cand, sizeof(float));
        c->cand_raw = ss_alloc(cand, sizeof(float));
        c->cand_win = ss_alloc(cand, 1);
        c->move_k = ss_alloc((size_t)c->dyn_cap * head_dim, sizeof(float));
        c->move_v = ss_alloc((size_t)c->dyn_cap * head_dim, sizeof(float));
        c->rot_cos = ss_alloc((size_t)rotary_dim / 2 + 1, sizeof(float));
        c->rot_sin = ss_alloc((size_t)rotary_dim / 2 + 1, sizeof(float));
        ok = ok && c->dyn_pos && c->score && c->entropy && c->token && c->cand_pos && c->cand_score && c->cand_raw && c->cand_win && c->move_k &&
             c->move_v && c->rot_cos && c->rot_sin;
    } else if (c->track_entropy) {
        c->entropy = ss_alloc(S, sizeof(float));
        ok = ok && c->entropy;
    }
    if (c->track_attention || c->track_keynorm) {
        c->n_acc = threads < 1 ? 1 : threads;
        c->acc = ss_alloc((size_t)c->n_acc * S, sizeof(float));
        ok = ok && c->acc;
    }
    if (c->cfg.refresh_budget > 0 && c->cfg.refresh == SS_REFRESH_STRUCTURAL) {
        c->structural = ss_alloc((size_t)vocab, 1);
        ok = ok && c->structural;
        for (int i = 0; ok && i < cfg->n_structural_ids; i++) {
            const int32_t id = cfg->structural_ids[i];
            if (id < 0 || id >= vocab) {
                ss_cache_release(c);
                return ss_fail(err, SS_ERR_OUT_OF_RANGE, "structural id %d is outside the vocabulary [0, %d)", id,
                               vocab);
            }
            c->structural[id] = 1;
        }
    }
    if (!ok) {
        ss_cache_release(c);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate a KV cache of %d slots", c->slots);
    }
    ss_cache_reset(c);
    return SS_OK;
}

void ss_cache_release(ss_kv_cache *c) {
    void *bufs[] = {c->k, c->v, c->dyn_pos, c->score, c->acc, c->entropy, c->token, c->structural,
                    c->cand_pos, c->cand_score, c->cand_raw, c->cand_win, c->move_k, c->move_v, c->rot_cos, c->rot_sin};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    c->k = c->v = NULL;
    c->dyn_pos = NULL;
    c->score = c->acc = c->entropy = c->cand_score = c->cand_raw = c->move_k = c->move_v = c->rot_cos = c->rot_sin = NULL;
    c->token = NULL;
    c->structural = c->cand_win = NULL;
    c->cand_pos = NULL;
}

void ss_cache_reset(ss_kv_cache *c) {
    c->sched = (ss_schedule){.first = c->n_sink, .draining = 0};
    c->n_dyn = 0;
    if (c->score) memset(c->score, 0, (size_t)c->slots * sizeof(float));
    if (c->acc) memset(c->acc, 0, (size_t)c->n_acc * c->slots * sizeof(float));
}

size_t ss_cache_bytes(const ss_kv_cache *c) {
    return 2 * (size_t)c->n_layer * c->n_head * (size_t)c->slots * c->head_dim * sizeof(float);
}

int ss_schedule_advance(const ss_kv_cache *c, ss_schedule *s, int64_t t, int force, int64_t *kept) {
    const int64_t sinks = c->n_sink;
    if (!is_windowed(c->cfg.policy) || t < sinks) {
        if (kept) *kept = t + 1;
        return 0;
    }
    const int64_t budget = sinks + c->cfg.window;
    const int64_t size = sinks + (t - s->first);
    int64_t drop = 0;
    if (s->draining || force || size + 1 > budget + c->cfg.compress_every - 1) {
        const int64_t need = size + 1 - (budget + c->cfg.overlap);
        if (need > 0) {
            drop = c->cfg.max_drop ? ss_min64(need, c->cfg.max_drop) : need;
            s->first += drop;
            s->draining = c->cfg.max_drop > 0 && need > drop;
        } else {
            s->draining = 0;
        }
    }
    if (kept) *kept = size + 1 - drop;
    return (int)drop;
}

size_t ss_cache_slot(const ss_kv_cache *c, int64_t t) {
    return t < c->n_sink ? (size_t)t : (size_t)(c->pinned + (t - c->n_sink) % c->ring);
}

int ss_cache_entropy_force(const ss_kv_cache *c, int64_t t, int64_t known) {
    if (c->cfg.entropy_threshold <= 0.0f || t < 1 || t - 1 >= known) return 0;
    return c->entropy[ss_cache_slot(c, t - 1)] > c->cfg.entropy_threshold;
}

ss_status ss_cache_view(const ss_kv_cache *c, const ss_schedule *s, int64_t t, int64_t index, int64_t visible_end,
                        ss_view *view, ss_error *err) {
    view->pos = t;
    view->index = index;
    view->hi = visible_end - 1;
    view->n_anc = view->anc_first = 0;
    /* dynamic pinned tokens exist only once the stream is far past the sinks */
    view->n_pinned = (int)ss_min64(visible_end, c->n_sink) + c->n_dyn;
    if (t < c->n_sink) {
        view->lo = c->n_sink;
        view->cache_pos = t;
        return SS_OK;
    }
    view->lo = s->first;
    view->cache_pos = view->n_pinned + (t - s->first);
    if (index - s->first + 1 > c->ring) {
        if (index == t)
            return ss_fail(err, SS_ERR_CAPACITY,
                           "sequence of %lld tokens exceeds the KV cache capacity of %d tokens "
                           "(raise CacheConfig.capacity or use a bounded policy)",
                           (long long)(index + 1), c->ring);
        return ss_fail(err, SS_ERR_CAPACITY,
                       "a token tree pending at position %lld needs %lld cache slots, more than the KV cache capacity "
                       "of %d tokens (raise CacheConfig.capacity or verify smaller trees)",
                       (long long)t, (long long)(index - s->first + 1), c->ring);
    }
    return SS_OK;
}

static size_t row_of(const ss_kv_cache *c, int layer, int head, size_t slot) {
    return (((size_t)layer * c->n_head + head) * c->slots + slot) * c->head_dim;
}

float *ss_cache_key(const ss_kv_cache *c, int layer, int head, int64_t t) {
    return c->k + row_of(c, layer, head, ss_cache_slot(c, t));
}

float *ss_cache_value(const ss_kv_cache *c, int layer, int head, int64_t t) {
    return c->v + row_of(c, layer, head, ss_cache_slot(c, t));
}

int ss_cache_runs(const ss_kv_cache *c, int layer, int head, const ss_view *view, const int32_t *ancestor_slots,
                  const float *q_pinned, const float *q_window, float *acc, ss_kv_run runs[4]) {
    int n = 0;
    const size_t base = row_of(c, layer, head, 0);
    const float *k = c->k + base, *v = c->v + base;
    if (view->n_pinned > 0) runs[n++] = (ss_kv_run){q_pinned, k, v, 0, view->n_pinned, NULL, acc};
    int64_t len = view->hi - view->lo + 1;
    if (len > 0) {
        int start = (int)ss_cache_slot(c, view->lo);
        while (len > 0) {
            const int take = (int)ss_min64(len, (int64_t)(c->slots - start));
            runs[n++] = (ss_kv_run){q_window, k, v, start, take, NULL, acc};
            len -= take;
            start = c->pinned;
        }
    }
    if (view->n_anc > 0)
        runs[n++] = (ss_kv_run){q_window, k, v, 0, view->n_anc, ancestor_slots + view->anc_first, acc};
    return n;
}

void ss_cache_move(ss_kv_cache *c, int64_t from, int64_t to) {
    const size_t src = ss_cache_slot(c, from), dst = ss_cache_slot(c, to), bytes = (size_t)c->head_dim * sizeof(float);
    if (src == dst) return;
    for (int l = 0; l < c->n_layer; l++) {
        for (int h = 0; h < c->n_head; h++) {
            memcpy(c->k + row_of(c, l, h, dst), c->k + row_of(c, l, h, src), bytes);
            memcpy(c->v + row_of(c, l, h, dst), c->v + row_of(c, l, h, src), bytes);
        }
    }
    if (c->score) c->score[dst] = c->score[src];
    if (c->token) c->token[dst] = c->token[src];
    if (c->entropy) c->entropy[dst] = c->entropy[src];
    for (int i = 0; i < c->n_acc; i++) c->acc[(size_t)i * c->slots + dst] = c->acc[(size_t)i * c->slots + src];
}

/* ------------------------------------------------------- dynamic tokens */

void ss_cache_begin_token(ss_kv_cache *c, int64_t t, int32_t token) {
    const size_t slot = ss_cache_slot(c, t);
    if (c->score) c->score[slot] = 0.0f;
    if (c->token) c->token[slot] = token;
    if (c->entropy) c->entropy[slot] = 0.0f;
    for (int i = 0; i < c->n_acc; i++) c->acc[(size_t)i * c->slots + slot] = 0.0f;
}

void ss_cache_collect_scores(ss_kv_cache *c) {
    if (!c->acc) return;
    for (int i = 0; i < c->n_acc; i++) {
        float *row = c->acc + (size_t)i * c->slots;
        for (int s = 0; s < c->slots; s++) {
            c->score[s] += c->track_keynorm ? -row[s] : row[s];
            row[s] = 0.0f;
        }
    }
}

/* Slot a candidate's data comes from: its dynamic slot if already pinned. */
static size_t source_slot(const ss_kv_cache *c, int64_t pos, int *dyn_index) {
    for (int j = 0; j < c->n_dyn; j++) {
        if (c->dyn_pos[j] == pos) {
            *dyn_index = j;
            return (size_t)(c->n_sink + j);
        }
    }
    *dyn_index = -1;
    return ss_cache_slot(c, pos);
}

static int cmp_i64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The m candidates with the highest score (ties: larger position; NaN counts
 * as lowest), in candidate order; returns how many were kept (<= m).
 * Winners are decided against the full list first, then compacted. */
static int keep_top(int64_t *pos, float *score, int n, int m, uint8_t *win) {
    if (n <= m) return n;
    for (int i = 0; i < n; i++)
        if (isnan(score[i])) score[i] = -INFINITY;
    for (int i = 0; i < n; i++) {
        int better = 0; /* candidates that beat i */
        for (int j = 0; j < n && better < m; j++)
            if (score[j] > score[i] || (score[j] == score[i] && pos[j] > pos[i])) better++;
        win[i] = better < m;
    }
    int kept = 0;
    for (int i = 0; i < n && kept < m; i++) {
        if (!win[i]) continue;
        pos[kept] = pos[i];
        score[kept] = score[i];
        kept++;
    }
    return kept;
}

/* Rewrites the pinned slots after the sinks to hold new_pos (sorted), keys
 * rotated at their new cache positions. Sources are read before any write. */
static void rebuild_pinned(ss_kv_cache *c, const int64_t *new_pos, int n_new) {
    const int hd = c->head_dim;
    if (n_new > c->dyn_cap) n_new = c->dyn_cap; /* never write past the pinned slots */
    int src_dyn[n_new > 0 ? n_new : 1];
    size_t src_slot[n_new > 0 ? n_new : 1];
    int64_t src_rot[n_new > 0 ? n_new : 1];
    for (int j = 0; j < n_new; j++) {
        src_slot[j] = source_slot(c, new_pos[j], &src_dyn[j]);
        /* keys in the window are rotated at their text position, dynamic
         * ones at their cache position */
        src_rot[j] = src_dyn[j] >= 0 ? c->n_sink + src_dyn[j] : new_pos[j];
    }
    float new_score[n_new > 0 ? n_new : 1], new_entropy[n_new > 0 ? n_new : 1];
    int32_t new_token[n_new > 0 ? n_new : 1];
    for (int j = 0; j < n_new; j++) {
        new_score[j] = c->score[src_slot[j]];
        new_entropy[j] = c->entropy[src_slot[j]];
        new_token[j] = c->token[src_slot[j]];
    }
    for (int l = 0; l < c->n_layer; l++) {
        for (int h = 0; h < c->n_head; h++) {
            for (int j = 0; j < n_new; j++) {
                memcpy(c->move_k + (size_t)j * hd, c->k + row_of(c, l, h, src_slot[j]), (size_t)hd * sizeof(float));
                memcpy(c->move_v + (size_t)j * hd, c->v + row_of(c, l, h, src_slot[j]), (size_t)hd * sizeof(float));
            }
            for (int j = 0; j < n_new; j++) {
                const size_t dst = (size_t)(c->n_sink + j);
                float *k = c->k + row_of(c, l, h, dst);
                memcpy(k, c->move_k + (size_t)j * hd, (size_t)hd * sizeof(float));
                memcpy(c->v + row_of(c, l, h, dst), c->move_v + (size_t)j * hd, (size_t)hd * sizeof(float));
                const int64_t delta = (int64_t)dst - src_rot[j];
                if (delta != 0) {
                    ss_rotary_table(c->rot_cos, c->rot_sin, c->rotary_dim, c->rotary_base, delta);
                    ss_rotary(k, c->rotary_dim, c->rot_cos, c->rot_sin);
                }
            }
        }
    }
    for (int j = 0; j < n_new; j++) {
        const size_t dst = (size_t)(c->n_sink + j);
        c->dyn_pos[j] = new_pos[j];
        c->score[dst] = new_score[j];
        c->entropy[dst] = new_entropy[j];
        c->token[dst] = new_token[j];
    }
    c->n_dyn = n_new;
}

void ss_cache_select(ss_kv_cache *c, int64_t first, int dropped) {
    if (c->dyn_cap == 0 || dropped <= 0) return;
    const int M = c->dyn_cap;
    int64_t *pos = c->cand_pos;
    float *sc = c->cand_score;
    int n = 0;
    if (c->cfg.policy == SS_CACHE_WINDOW || c->cfg.policy == SS_CACHE_STREAMING) {
        /* refresh: choose from the evicted span, then keep the newest M */
        int dummy;
        switch (c->cfg.refresh) {
        case SS_REFRESH_UNIFORM: {
            const int m = dropped < M ? dropped : M;
            for (int i = 0; i < m; i++) pos[n++] = first + (int64_t)floor((i + 0.5) * dropped / m);
            break;
        }
        case SS_REFRESH_STRUCTURAL:
            for (int64_t p = first + dropped - 1; p >= first && n < M; p--)
                if (c->structural[c->token[source_slot(c, p, &dummy)]]) pos[n++] = p;
            break;
        case SS_REFRESH_ENTROPY:
            for (int64_t p = first; p < first + dropped; p++) {
                pos[n] = p;
                sc[n++] = c->entropy[source_slot(c, p, &dummy)];
            }
            n = keep_top(pos, sc, n, M, c->cand_win);
            break;
        }
        for (int j = 0; j < c->n_dyn; j++) pos[n++] = c->dyn_pos[j];
        qsort(pos, (size_t)n, sizeof *pos, cmp_i64);
        if (n > M) {
            memmove(pos, pos + (n - M), (size_t)M * sizeof *pos);
            n = M;
        }
    } else {
        /* score policies: the current heavy tokens compete with the evicted */
        int dummy;
        for (int j = 0; j < c->n_dyn; j++) pos[n++] = c->dyn_pos[j];
        for (int64_t p = first; p < first + dropped; p++) pos[n++] = p;
        qsort(pos, (size_t)n, sizeof *pos, cmp_i64);
        for (int i = 0; i < n; i++) sc[i] = c->score[source_slot(c, pos[i], &dummy)];
        if (c->cfg.policy == SS_CACHE_SNAPKV) {
            /* max-pool over +-3 neighbours keeps clusters of attention */
            float *raw = c->cand_raw;
            memcpy(raw, sc, (size_t)n * sizeof(float));
            for (int i = 0; i < n; i++) {
                float m = raw[i];
                for (int j = i - 3; j <= i + 3; j++)
                    if (j >= 0 && j < n && raw[j] > m) m = raw[j];
                sc[i] = m;
            }
        }
        n = keep_top(pos, sc, n, M, c->cand_win);
    }
    rebuild_pinned(c, pos, n);
    if (c->cfg.policy == SS_CACHE_SNAPKV) memset(c->score, 0, (size_t)c->slots * sizeof(float));
}
