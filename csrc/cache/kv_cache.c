#include "cache/kv_cache.h"

#include "common.h"

static const char *policy_name(ss_cache_policy p) {
    switch (p) {
    case SS_CACHE_FULL: return "full";
    case SS_CACHE_WINDOW: return "window";
    case SS_CACHE_STREAMING: return "streaming";
    case SS_CACHE_RECOMPUTE: return "recompute";
    }
    return "?";
}

ss_status ss_cache_config_check(const ss_cache_config *cfg, ss_error *err) {
    if (cfg->policy < SS_CACHE_FULL || cfg->policy > SS_CACHE_RECOMPUTE)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "cache policy %d is unknown", (int)cfg->policy);
    const char *name = policy_name(cfg->policy);
    if (cfg->policy == SS_CACHE_FULL) {
        if (cfg->capacity < 1)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "full cache: capacity must be >= 1, got %d",
                           cfg->capacity);
        return SS_OK;
    }
    if (cfg->window < 1)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "%s cache: window must be >= 1, got %d", name,
                       cfg->window);
    if (cfg->policy != SS_CACHE_STREAMING) return SS_OK;
    if (cfg->n_sink < 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "streaming cache: n_sink must be >= 0, got %d",
                       cfg->n_sink);
    if (cfg->window < cfg->n_sink)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "streaming cache: window (%d) is smaller than n_sink (%d)", cfg->window,
                       cfg->n_sink);
    if (cfg->compress_every < 1)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "streaming cache: compress_every must be >= 1, got %d", cfg->compress_every);
    if (cfg->max_drop < 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "streaming cache: max_drop must be >= 0 (0 = unlimited), got %d", cfg->max_drop);
    if (cfg->overlap < 0 || cfg->overlap >= cfg->compress_every)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "streaming cache: overlap must be in [0, compress_every) = [0, %d), got %d",
                       cfg->compress_every, cfg->overlap);
    return SS_OK;
}

/* The window policy is the streaming schedule without sinks; lazy pruning
 * knobs apply to both. */
static int is_windowed(const ss_kv_cache *c) {
    return c->cfg.policy == SS_CACHE_WINDOW || c->cfg.policy == SS_CACHE_STREAMING;
}

ss_status ss_cache_init(ss_kv_cache *c, const ss_cache_config *cfg, int n_layer, int n_head,
                        int head_dim, int max_pending, ss_error *err) {
    *c = (ss_kv_cache){0};
    ss_status st = ss_cache_config_check(cfg, err);
    if (st != SS_OK) return st;
    c->cfg = *cfg;
    if (cfg->policy != SS_CACHE_STREAMING) c->cfg.n_sink = 0;
    if (!is_windowed(c)) {
        c->cfg.compress_every = 1;
        c->cfg.max_drop = 0;
        c->cfg.overlap = 0;
    }
    c->n_layer = n_layer;
    c->n_head = n_head;
    c->head_dim = head_dim;
    c->n_sink = c->cfg.n_sink;
    c->pinned = c->n_sink;
    switch (cfg->policy) {
    case SS_CACHE_FULL: c->ring = cfg->capacity; break;
    case SS_CACHE_RECOMPUTE: c->ring = cfg->window; break;
    default:
        /* The committed window run holds at most window + R - 1 keys; pending
         * tokens are stored before their evictions are applied. */
        c->ring = cfg->window + c->cfg.compress_every - 1 + max_pending;
        break;
    }
    c->slots = c->pinned + c->ring;
    const size_t per_layer = (size_t)n_head * (size_t)c->slots * (size_t)head_dim;
    c->k = ss_alloc((size_t)n_layer, per_layer * sizeof(float));
    c->v = ss_alloc((size_t)n_layer, per_layer * sizeof(float));
    if (!c->k || !c->v) {
        ss_cache_release(c);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate a KV cache of %d slots", c->slots);
    }
    ss_cache_reset(c);
    return SS_OK;
}

void ss_cache_release(ss_kv_cache *c) {
    ss_free(c->k);
    ss_free(c->v);
    c->k = c->v = NULL;
}

void ss_cache_reset(ss_kv_cache *c) { c->sched = (ss_schedule){.first = c->n_sink, .draining = 0}; }

size_t ss_cache_bytes(const ss_kv_cache *c) {
    return 2 * (size_t)c->n_layer * c->n_head * (size_t)c->slots * c->head_dim * sizeof(float);
}

int ss_schedule_advance(const ss_kv_cache *c, ss_schedule *s, int64_t t, int64_t *kept) {
    const int64_t sinks = c->n_sink;
    if (!is_windowed(c) || t < sinks) {
        if (kept) *kept = t + 1;
        return 0;
    }
    const int64_t budget = sinks + c->cfg.window;
    const int64_t size = sinks + (t - s->first);
    int64_t drop = 0;
    if (s->draining || size + 1 > budget + c->cfg.compress_every - 1) {
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

ss_status ss_cache_view(const ss_kv_cache *c, const ss_schedule *s, int64_t t, ss_view *view,
                        ss_error *err) {
    view->pos = t;
    if (t < c->n_sink) {
        view->n_pinned = (int)(t + 1);
        view->lo = t + 1;
        view->cache_pos = t;
        return SS_OK;
    }
    view->n_pinned = c->n_sink;
    view->lo = s->first;
    view->cache_pos = c->n_sink + (t - s->first);
    if (t - s->first + 1 > c->ring)
        return ss_fail(err, SS_ERR_CAPACITY,
                       "sequence of %lld tokens exceeds the KV cache capacity of %d tokens "
                       "(raise CacheConfig.capacity or use a bounded policy)",
                       (long long)(t + 1), c->ring);
    return SS_OK;
}

static size_t slot_of(const ss_kv_cache *c, int64_t t) {
    return t < c->n_sink ? (size_t)t : (size_t)(c->n_sink + (t - c->n_sink) % c->ring);
}

static size_t row_of(const ss_kv_cache *c, int layer, int head, size_t slot) {
    return (((size_t)layer * c->n_head + head) * c->slots + slot) * c->head_dim;
}

float *ss_cache_key(const ss_kv_cache *c, int layer, int head, int64_t t) {
    return c->k + row_of(c, layer, head, slot_of(c, t));
}

float *ss_cache_value(const ss_kv_cache *c, int layer, int head, int64_t t) {
    return c->v + row_of(c, layer, head, slot_of(c, t));
}

int ss_cache_runs(const ss_kv_cache *c, int layer, int head, const ss_view *view,
                  const float *q_pinned, const float *q_window, ss_kv_run runs[3]) {
    int n = 0;
    const size_t base = row_of(c, layer, head, 0);
    if (view->n_pinned > 0)
        runs[n++] = (ss_kv_run){q_pinned, c->k + base, c->v + base, view->n_pinned};
    int64_t len = view->pos - view->lo + 1;
    if (len <= 0) return n;
    size_t start = slot_of(c, view->lo);
    const size_t ring_end = (size_t)c->slots;
    while (len > 0) {
        const int64_t take = ss_min64(len, (int64_t)(ring_end - start));
        const size_t off = base + start * c->head_dim;
        runs[n++] = (ss_kv_run){q_window, c->k + off, c->v + off, (int)take};
        len -= take;
        start = (size_t)c->pinned;
    }
    return n;
}
