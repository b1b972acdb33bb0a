#include "cache/kv_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache/budgets.h"
#include "cache/policy.h"
#include "common.h"
#include "config.h"

ss_status ss_cache_config_rules(const ss_cache_config *cfg, ss_error *err) {
    const ss_cache_policy p = (ss_cache_policy)cfg->policy;
    const char *name = ss_cache_policy_names[p];
    const int score = ss_policy_is_score(p);
    if ((p == SS_CACHE_STREAMING || score) && cfg->window < cfg->n_sink)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "CacheConfig.window (%d) is smaller than CacheConfig.n_sink (%d)",
                       cfg->window, cfg->n_sink);
    if (cfg->overlap >= cfg->compress_every)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "CacheConfig.overlap (%d) must be smaller than CacheConfig.compress_every (%d): otherwise "
                       "nothing is ever evicted", cfg->overlap, cfg->compress_every);
    if (score) {
        if (cfg->heavy < 1)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                           "CacheConfig.heavy must be >= 1 for policy '%s' (tokens kept by score)", name);
    } else {
        if (cfg->heavy != 0)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "CacheConfig.heavy applies to score policies, not '%s'", name);
        if (cfg->scorer != SS_SCORER_AUTO)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "CacheConfig.scorer applies to score policies, not '%s'",
                           name);
        if (cfg->share != SS_SHARE_HEAD)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "CacheConfig.share applies to score policies, not '%s'", name);
    }
    const int allocator = p == SS_CACHE_ADAKV || p == SS_CACHE_PYRAMIDKV || p == SS_CACHE_HEADAWARE;
    if (score && !allocator && cfg->scorer != SS_SCORER_AUTO && strcmp(ss_scorer_names[cfg->scorer], name) != 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "policy '%s' is its own scorer: CacheConfig.scorer applies to adakv, pyramidkv and headaware "
                       "(got '%s')", name, ss_scorer_names[cfg->scorer]);
    if ((p == SS_CACHE_ADAKV || p == SS_CACHE_HEADAWARE) && cfg->share != SS_SHARE_HEAD)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "policy '%s' gives each head its own budget: CacheConfig.share must be 'head', not '%s'", name,
                       ss_share_names[cfg->share]);
    if (p == SS_CACHE_PYRAMIDKV && cfg->share == SS_SHARE_MODEL)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "policy 'pyramidkv' gives each layer its own budget: CacheConfig.share must be 'head' or "
                       "'layer', not 'model'");
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

/* The config as the cache runs it: settings a policy ignores are zeroed and
 * "auto" choices resolved. */
static ss_cache_config effective_config(const ss_cache_config *cfg) {
    ss_cache_config e = *cfg;
    const ss_cache_policy p = (ss_cache_policy)cfg->policy;
    const ss_policy *pol = ss_policy_of(p);
    e.structural_ids = NULL; /* borrowed: copied into c->structural */
    if (p == SS_CACHE_WINDOW || p == SS_CACHE_FULL || p == SS_CACHE_RECOMPUTE) e.n_sink = 0;
    if (!pol->windowed) {
        e.compress_every = 1;
        e.max_drop = 0;
        e.overlap = 0;
        e.entropy_threshold = 0.0f;
    }
    if (!pol->scorer) e.heavy = 0;
    if (!pol->windowed || pol->scorer) e.refresh_budget = 0;
    if (e.positions == SS_POSITIONS_AUTO) e.positions = pol->positions;
    return e;
}

ss_status ss_cache_init(ss_kv_cache *c, const ss_cache_config *cfg, int n_layer, int n_head, int head_dim,
                        int rotary_dim, double rotary_base, int vocab, int max_pending, ss_error *err) {
    *c = (ss_kv_cache){0};
    ss_status st = ss_config_check(SS_CONFIG_CACHE, cfg, err);
    if (st != SS_OK) return st;
    if (cfg->policy == SS_CACHE_FULL && cfg->capacity < 1)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "full cache: CacheConfig.capacity must be set (>= 1) before a state is created");
    if (cfg->refresh_budget > 0 && cfg->refresh == SS_REFRESH_STRUCTURAL && cfg->n_structural_ids < 1)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "structural refresh needs CacheConfig.structural_ids");
    if (cfg->policy == SS_CACHE_HEADAWARE && n_head > SS_MAX_HEADS_HEADAWARE)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "policy 'headaware' supports at most %d heads, the model has %d",
                       SS_MAX_HEADS_HEADAWARE, n_head);
    c->cfg = effective_config(cfg);
    const ss_cache_policy p = (ss_cache_policy)c->cfg.policy;
    c->policy = ss_policy_of(p);
    c->n_layer = n_layer;
    c->n_head = n_head;
    c->head_dim = head_dim;
    c->rotary_dim = rotary_dim;
    c->rotary_base = rotary_base;
    c->vocab = vocab;
    c->n_sink = c->cfg.n_sink;
    switch (p) {
    case SS_CACHE_FULL: c->ring = cfg->capacity; break;
    case SS_CACHE_RECOMPUTE: c->ring = cfg->window; break;
    default:
        /* The committed run holds at most window + R - 1 keys, plus the
         * heavy budget while the heavy sets fill (a max_drop eviction drains
         * without growing it); pending tokens are stored before their
         * evictions are applied. */
        c->ring = c->cfg.window + c->cfg.compress_every - 1 + c->cfg.heavy + max_pending;
        break;
    }
    c->slots = c->n_sink + c->ring;
    c->heavy_cap = ss_policy_heavy_cap(&c->cfg, n_layer, n_head);
    /* Cache positions differ from text positions only for keys outside the
     * run: sinks and heavy sets. */
    c->cache_positions = c->cfg.positions == SS_POSITIONS_CACHE && (c->n_sink > 0 || c->heavy_cap > 0);

    const size_t rows = (size_t)n_layer * n_head * (size_t)c->slots, hd = (size_t)head_dim;
    c->k = ss_alloc(rows, hd * sizeof(float));
    c->v = ss_alloc(rows, hd * sizeof(float));
    c->pool_offset = ss_alloc((size_t)n_layer + 1, sizeof(int64_t));
    int ok = c->k && c->v && c->pool_offset;
    for (int l = 0; ok && l < n_layer; l++)
        c->pool_offset[l + 1] = c->pool_offset[l] + ss_policy_pool_rows(&c->cfg, n_layer, n_head, l);
    if (ok && c->heavy_cap > 0) {
        const size_t pool = (size_t)c->pool_offset[n_layer];
        c->heavy = ss_alloc((size_t)n_layer * n_head * (size_t)c->heavy_cap, sizeof(ss_heavy));
        c->n_heavy = ss_alloc((size_t)n_layer * n_head, sizeof(int32_t));
        c->pool_k = ss_alloc(pool, hd * sizeof(float));
        c->pool_v = ss_alloc(pool, hd * sizeof(float));
        c->pool_owner = ss_alloc(pool + 1, sizeof(int32_t));
        c->token = ss_alloc((size_t)c->slots, sizeof(int32_t));
        ok = c->heavy && c->n_heavy && c->pool_k && c->pool_v && c->pool_owner && c->token;
    }
    if (ok && (c->cfg.entropy_threshold > 0.0f || (c->cfg.refresh_budget > 0 && c->cfg.refresh == SS_REFRESH_ENTROPY))) {
        c->entropy = ss_alloc((size_t)c->slots, sizeof(float));
        ok = c->entropy != NULL;
    }
    if (ok && c->cache_positions) {
        /* a query sees at most the sinks, a heavy list and the ring */
        c->keys_max = c->n_sink + c->heavy_cap + c->ring;
        const size_t half = (size_t)rotary_dim / 2;
        c->dist_cos = ss_alloc((size_t)c->keys_max * half + 1, sizeof(float));
        c->dist_sin = ss_alloc((size_t)c->keys_max * half + 1, sizeof(float));
        ok = c->dist_cos && c->dist_sin;
        float *cs = ss_alloc(half + 1, sizeof(float)), *sn = ss_alloc(half + 1, sizeof(float));
        ok = ok && cs && sn;
        for (int d = 0; ok && d < c->keys_max; d++) {
            ss_rotary_table(cs, sn, rotary_dim, rotary_base, d);
            memcpy(c->dist_cos + (size_t)d * half, cs, half * sizeof(float));
            memcpy(c->dist_sin + (size_t)d * half, sn, half * sizeof(float));
        }
        ss_free(cs);
        ss_free(sn);
        c->rotation = (ss_distance_rotation){c->dist_cos, c->dist_sin, rotary_dim};
        c->unrotate_cos = ss_alloc(half + 1, sizeof(float));
        c->unrotate_sin = ss_alloc(half + 1, sizeof(float));
        ok = ok && c->unrotate_cos && c->unrotate_sin;
    }
    if (ok && c->cfg.refresh_budget > 0 && c->cfg.refresh == SS_REFRESH_STRUCTURAL) {
        c->structural = ss_alloc((size_t)vocab, 1);
        ok = c->structural != NULL;
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
    st = ss_policy_init(c, max_pending, err);
    if (st != SS_OK) {
        ss_cache_release(c);
        return st;
    }
    ss_cache_reset(c);
    return SS_OK;
}

void ss_cache_release(ss_kv_cache *c) {
    if (c->policy_state) ss_policy_release(c);
    void *bufs[] = {c->k, c->v, c->heavy, c->n_heavy, c->pool_offset, c->pool_k, c->pool_v, c->pool_owner,
                    c->entropy, c->token, c->structural, c->dist_cos, c->dist_sin, c->unrotate_cos,
                    c->unrotate_sin};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    *c = (ss_kv_cache){0};
}

void ss_cache_reset(ss_kv_cache *c) {
    c->sched = (ss_schedule){.first = c->n_sink};
    if (c->n_heavy) memset(c->n_heavy, 0, (size_t)c->n_layer * c->n_head * sizeof(int32_t));
    for (int64_t r = 0; c->pool_owner && r < c->pool_offset[c->n_layer]; r++) c->pool_owner[r] = -1;
    if (c->policy_state) ss_policy_reset(c);
}

size_t ss_cache_bytes(const ss_kv_cache *c) {
    const size_t row = (size_t)c->head_dim * sizeof(float);
    const size_t main = (size_t)c->n_layer * c->n_head * (size_t)c->slots;
    return 2 * (main + (size_t)c->pool_offset[c->n_layer]) * row + ss_policy_bytes(c);
}

int ss_schedule_advance(const ss_kv_cache *c, ss_schedule *s, int64_t t, int force, int64_t *kept) {
    const int64_t sinks = c->n_sink;
    if (!c->policy->windowed || t < sinks) {
        if (kept) *kept = t + 1;
        return 0;
    }
    /* c: the heavy keys of a head once its set has filled (score policies);
     * refresh tokens do not count against the window's budget */
    const int64_t m = c->policy->scorer ? c->cfg.heavy : 0;
    const int64_t heavy_now = ss_min64(m, s->dropped);
    const int64_t budget = sinks + c->cfg.window + m;
    const int64_t size = sinks + (t - s->first) + heavy_now;
    int64_t drop = 0;
    if (s->draining || force || size + 1 > budget + c->cfg.compress_every - 1) {
        const int64_t need = (t - s->first) + 1 - (c->cfg.window + c->cfg.overlap);
        if (need > 0) {
            drop = c->cfg.max_drop ? ss_min64(need, c->cfg.max_drop) : need;
            s->first += drop;
            s->dropped += drop;
            s->draining = c->cfg.max_drop > 0 && need > drop;
        } else {
            s->draining = 0;
        }
    }
    if (kept) *kept = sinks + (t - s->first) + 1 + ss_min64(m, s->dropped);
    return (int)drop;
}

size_t ss_cache_slot(const ss_kv_cache *c, int64_t t) {
    return t < c->n_sink ? (size_t)t : (size_t)(c->n_sink + (t - c->n_sink) % c->ring);
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
    view->n_pinned = (int)ss_min64(visible_end, c->n_sink);
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

static size_t pool_row(const ss_kv_cache *c, int layer, int32_t loc) {
    return ((size_t)c->pool_offset[layer] + (size_t)(loc - c->slots)) * c->head_dim;
}

float *ss_cache_loc_key(const ss_kv_cache *c, int layer, int head, int32_t loc) {
    return loc < c->slots ? c->k + row_of(c, layer, head, (size_t)loc) : c->pool_k + pool_row(c, layer, loc);
}

float *ss_cache_loc_value(const ss_kv_cache *c, int layer, int head, int32_t loc) {
    return loc < c->slots ? c->v + row_of(c, layer, head, (size_t)loc) : c->pool_v + pool_row(c, layer, loc);
}

const ss_distance_rotation *ss_cache_rotation(const ss_kv_cache *c) {
    return c->cache_positions ? &c->rotation : NULL;
}

/* k (rotated at text position pos) unrotated into out; cs/sn: room for
 * rotary_dim / 2 floats each. */
static void unrotate(const ss_kv_cache *c, const float *k, int64_t pos, float *out, float *cs, float *sn) {
    ss_rotary_table(cs, sn, c->rotary_dim, c->rotary_base, -pos);
    memcpy(out, k, (size_t)c->head_dim * sizeof(float));
    ss_rotary(out, c->rotary_dim, cs, sn);
}

void ss_cache_store_heavy_key(const ss_kv_cache *c, int layer, int head, int32_t dst, int32_t src, int64_t pos) {
    const float *k = ss_cache_loc_key(c, layer, head, src);
    float *out = ss_cache_loc_key(c, layer, head, dst);
    if (c->cache_positions) unrotate(c, k, pos, out, c->unrotate_cos, c->unrotate_sin);
    else memcpy(out, k, (size_t)c->head_dim * sizeof(float));
}

int ss_cache_runs(const ss_kv_cache *c, int layer, int head, const ss_view *view, const int32_t *ancestor_slots,
                  const ss_heavy *heavy, int n_heavy, const ss_query *q, const ss_runs_scratch *scratch,
                  ss_kv_run runs[5], int32_t *loc, int *n_keys) {
    int n = 0, keys = 0;
    const size_t base = row_of(c, layer, head, 0);
    const float *k = c->k + base, *v = c->v + base;
    const int hd = c->head_dim;
    if (view->n_pinned > 0) {
        runs[n++] = (ss_kv_run){k, v, 0, view->n_pinned, NULL, NULL, c->cache_positions ? q->sink : q->text, 0};
        for (int i = 0; loc && i < view->n_pinned; i++) loc[keys + i] = i;
        keys += view->n_pinned;
    }
    if (n_heavy > 0) {
        for (int i = 0; i < n_heavy; i++) {
            const int32_t at = heavy[i].loc;
            scratch->row_k[i] = ss_cache_loc_key(c, layer, head, at);
            scratch->row_v[i] = ss_cache_loc_value(c, layer, head, at);
            if (c->cache_positions && at < c->slots) { /* kept inside this batch: still in the ring */
                float *u = scratch->unrotated + (size_t)i * hd;
                unrotate(c, scratch->row_k[i], heavy[i].pos, u, scratch->cos, scratch->sin);
                scratch->row_k[i] = u;
            }
            if (loc) loc[keys + i] = at;
        }
        runs[n++] = (ss_kv_run){k, v, 0, n_heavy, scratch->row_k, scratch->row_v,
                                c->cache_positions ? q->raw : q->text, c->cache_positions};
        keys += n_heavy;
    }
    int64_t len = view->hi - view->lo + 1;
    if (len > 0) {
        int start = (int)ss_cache_slot(c, view->lo);
        while (len > 0) {
            const int take = (int)ss_min64(len, (int64_t)(c->slots - start));
            runs[n++] = (ss_kv_run){k, v, start, take, NULL, NULL, q->text, 0};
            for (int i = 0; loc && i < take; i++) loc[keys + i] = start + i;
            keys += take;
            len -= take;
            start = c->n_sink;
        }
    }
    if (view->n_anc > 0) {
        const float **anc_k = scratch->row_k + n_heavy, **anc_v = scratch->row_v + n_heavy;
        const int32_t *slots = ancestor_slots + view->anc_first;
        for (int i = 0; i < view->n_anc; i++) {
            anc_k[i] = k + (size_t)slots[i] * hd;
            anc_v[i] = v + (size_t)slots[i] * hd;
            if (loc) loc[keys + i] = slots[i];
        }
        runs[n++] = (ss_kv_run){k, v, 0, view->n_anc, anc_k, anc_v, q->text, 0};
        keys += view->n_anc;
    }
    if (c->cache_positions && view->n_pinned > 0) { /* the query at its cache position, keys - 1 */
        const size_t half = (size_t)c->rotary_dim / 2, d = (size_t)(keys - 1) * half;
        memcpy(q->sink, q->raw, (size_t)hd * sizeof(float));
        ss_rotary(q->sink, c->rotary_dim, c->dist_cos + d, c->dist_sin + d);
    }
    *n_keys = keys;
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
    ss_policy_move(c, (int)src, (int)dst);
    if (c->token) c->token[dst] = c->token[src];
    if (c->entropy) c->entropy[dst] = c->entropy[src];
}

void ss_cache_begin_token(ss_kv_cache *c, int64_t t, int32_t token) {
    const size_t slot = ss_cache_slot(c, t);
    if (c->token) c->token[slot] = token;
    if (c->entropy) c->entropy[slot] = 0.0f;
}
