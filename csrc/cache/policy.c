#include "cache/policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache/budgets.h"
#include "cache/refresh.h"
#include "common.h"

/* ------------------------------------------------------------ registry */

static const ss_policy policies[] = {
    [SS_CACHE_FULL] = {"full", 0, NULL, SS_ALLOC_UNIFORM, SS_POSITIONS_TEXT},
    [SS_CACHE_WINDOW] = {"window", 1, NULL, SS_ALLOC_UNIFORM, SS_POSITIONS_CACHE},
    [SS_CACHE_STREAMING] = {"streaming", 1, NULL, SS_ALLOC_UNIFORM, SS_POSITIONS_CACHE},
    [SS_CACHE_RECOMPUTE] = {"recompute", 0, NULL, SS_ALLOC_UNIFORM, SS_POSITIONS_TEXT},
    [SS_CACHE_H2O] = {"h2o", 1, &ss_scorer_h2o, SS_ALLOC_UNIFORM, SS_POSITIONS_TEXT},
    [SS_CACHE_SNAPKV] = {"snapkv", 1, &ss_scorer_snapkv, SS_ALLOC_UNIFORM, SS_POSITIONS_TEXT},
    [SS_CACHE_KEYNORM] = {"keynorm", 1, &ss_scorer_keynorm, SS_ALLOC_UNIFORM, SS_POSITIONS_TEXT},
    [SS_CACHE_SCISSORHANDS] = {"scissorhands", 1, &ss_scorer_scissorhands, SS_ALLOC_UNIFORM, SS_POSITIONS_TEXT},
    [SS_CACHE_ADAKV] = {"adakv", 1, &ss_scorer_snapkv, SS_ALLOC_ADAKV, SS_POSITIONS_TEXT},
    [SS_CACHE_PYRAMIDKV] = {"pyramidkv", 1, &ss_scorer_snapkv, SS_ALLOC_PYRAMID, SS_POSITIONS_TEXT},
    [SS_CACHE_HEADAWARE] = {"headaware", 1, &ss_scorer_h2o, SS_ALLOC_HEADAWARE, SS_POSITIONS_TEXT},
};

const char *const ss_cache_policy_names[] = {"full", "window", "streaming", "recompute", "h2o", "snapkv",
                                             "keynorm", "scissorhands", "adakv", "pyramidkv", "headaware", NULL};
const char *const ss_refresh_names[] = {"uniform", "structural", "entropy", NULL};
const char *const ss_positions_names[] = {"auto", "text", "cache", NULL};
const char *const ss_share_names[] = {"head", "layer", "model", NULL};
const char *const ss_scorer_names[] = {"auto", "h2o", "snapkv", "keynorm", "scissorhands", NULL};

const ss_policy *ss_policy_of(ss_cache_policy policy) {
    return policy >= 0 && policy < (int)(sizeof policies / sizeof policies[0]) ? &policies[policy] : NULL;
}

int ss_policy_is_score(ss_cache_policy policy) {
    const ss_policy *p = ss_policy_of(policy);
    return p && p->scorer;
}

static const ss_scorer *scorer_of(const ss_cache_config *cfg) {
    static const ss_scorer *const by_id[] = {NULL, &ss_scorer_h2o, &ss_scorer_snapkv, &ss_scorer_keynorm,
                                             &ss_scorer_scissorhands};
    const ss_policy *p = ss_policy_of((ss_cache_policy)cfg->policy);
    if (!p->scorer) return NULL;
    return cfg->scorer == SS_SCORER_AUTO ? p->scorer : by_id[cfg->scorer];
}

/* ------------------------------------------------------------ capacities */

/* Heavy keys per head: score policies' budgets, or refresh tokens. */
static int base_heavy(const ss_cache_config *cfg) {
    return ss_policy_is_score((ss_cache_policy)cfg->policy) ? cfg->heavy : cfg->refresh_budget;
}

int ss_policy_heavy_cap(const ss_cache_config *cfg, int n_layer, int n_head) {
    const int m = base_heavy(cfg);
    const ss_policy *p = ss_policy_of((ss_cache_policy)cfg->policy);
    switch (p->allocation) {
    case SS_ALLOC_ADAKV: return n_head * m - (n_head - 1) * ss_adakv_floor(cfg);
    case SS_ALLOC_HEADAWARE: return n_head * m - (n_head - 1);
    case SS_ALLOC_PYRAMID: return ss_pyramid_budget(cfg, n_layer, 0);
    default: return m;
    }
}

int ss_policy_pool_rows(const ss_cache_config *cfg, int n_layer, int n_head, int layer) {
    const ss_policy *p = ss_policy_of((ss_cache_policy)cfg->policy);
    if (p->allocation == SS_ALLOC_PYRAMID) return n_head * ss_pyramid_budget(cfg, n_layer, layer);
    return n_head * base_heavy(cfg);
}

/* ------------------------------------------------------------ state */

/* A candidate in a ranking: best first by score, then the larger position
 * (the older key goes first), then the lower head. */
typedef struct {
    float score;
    int32_t head, index;
    int64_t pos;
} ranked;

typedef struct {
    const ss_scorer *scorer;
    ss_share share;
    ss_score_state *states;    /* [layer][head]                                  */
    float *values;
    uint64_t *bits;
    int64_t *loc_offset;       /* [layer + 1]: a head's locations in values/bits  */
    int n_loc_max;
    int32_t *budget;           /* [layer][head]                                   */
    /* head-aware calibration: attention outside the recent window, summed */
    double *outside;           /* [layer][head]                                   */
    int64_t calibration_queries;
    int calibrated;
    /* a batch: rows' heavy sets, attention and outside mass per head */
    int max_rows;
    ss_heavy *row_heavy;       /* [row][head][heavy_cap]                          */
    int32_t *row_n;            /* [row][head]                                     */
    float *row_p;              /* [row][head][n_loc_max]                          */
    float *row_inv_n;          /* [row][head]                                     */
    float *row_outside;        /* [row][head]                                     */
    int64_t *row_pos;          /* [row]                                           */
    /* a row's path, per head: pending ancestors, their positions, attention */
    int32_t *path_chain;       /* [head][max_rows]                                */
    int64_t *path_pos;         /* [head][max_rows]                                */
    const float **path_p;      /* [head][max_rows]                                */
    float *path_inv_n;         /* [head][max_rows]                                */
    uint8_t *row_evicted;      /* [row]: keys left the run just before it         */
    /* selection scratch, per head: candidates, their scores, pooled scores,
     * the kept ones (AdaKV: which are taken) */
    int cand_cap;
    ss_heavy *cand, *kept;     /* [head][cand_cap]                                */
    float *cand_score, *pooled;/* [head][cand_cap]                                */
    uint8_t *taken;            /* [head][cand_cap]                                */
    ranked *rank;              /* [head][cand_cap]                                */
    int32_t *n_cand, *n_kept;  /* [head]                                          */
    int32_t *free_rows;        /* pool rows free for new keys                     */
    /* model share and refresh: one set of positions for every head */
    int64_t *shared_pos, *shared_work;
    float *shared_score;
} policy_state;

static policy_state *state_of(const ss_kv_cache *c) { return (policy_state *)c->policy_state; }

static ss_score_state *score_state(const ss_kv_cache *c, int layer, int head) {
    return &state_of(c)->states[(size_t)layer * c->n_head + head];
}

int ss_cache_locations(const ss_kv_cache *c, int layer) {
    return c->slots + (int)(c->pool_offset[layer + 1] - c->pool_offset[layer]);
}

static void set_budgets(ss_kv_cache *c) {
    policy_state *ps = state_of(c);
    const ss_policy *p = c->policy;
    for (int l = 0; l < c->n_layer; l++) {
        int32_t *b = ps->budget + (size_t)l * c->n_head;
        const int per_head = (int)((c->pool_offset[l + 1] - c->pool_offset[l]) / c->n_head);
        for (int h = 0; h < c->n_head; h++) b[h] = per_head;
        if (p->allocation == SS_ALLOC_HEADAWARE && ps->calibrated)
            ss_headaware_budgets(ps->outside + (size_t)l * c->n_head, c->n_head, per_head, b);
    }
}

ss_status ss_policy_init(ss_kv_cache *c, int max_rows, ss_error *err) {
    policy_state *ps = calloc(1, sizeof *ps);
    if (!ps) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the cache policy");
    c->policy_state = ps;
    ps->scorer = scorer_of(&c->cfg);
    ps->share = (ss_share)c->cfg.share;
    ps->max_rows = max_rows;
    const size_t LH = (size_t)c->n_layer * c->n_head;
    ps->loc_offset = ss_alloc((size_t)c->n_layer + 1, sizeof(int64_t));
    ps->budget = ss_alloc(LH, sizeof(int32_t));
    ps->outside = ss_alloc(LH, sizeof(double));
    int ok = ps->loc_offset && ps->budget && ps->outside;
    for (int l = 0; ok && l < c->n_layer; l++) {
        const int n_loc = ss_cache_locations(c, l);
        if (n_loc > ps->n_loc_max) ps->n_loc_max = n_loc;
        ps->loc_offset[l + 1] = ps->loc_offset[l] + (int64_t)c->n_head * n_loc;
    }
    if (ok && ps->scorer) {
        const size_t total = (size_t)ps->loc_offset[c->n_layer];
        ps->states = ss_alloc(LH, sizeof(ss_score_state));
        ps->values = ss_alloc(total, sizeof(float));
        ps->bits = ps->scorer == &ss_scorer_scissorhands ? ss_alloc(total, sizeof(uint64_t)) : NULL;
        ok = ps->states && ps->values && (ps->scorer != &ss_scorer_scissorhands || ps->bits);
        for (int l = 0; ok && l < c->n_layer; l++) {
            const int n_loc = ss_cache_locations(c, l);
            for (int h = 0; h < c->n_head; h++) {
                const size_t off = (size_t)ps->loc_offset[l] + (size_t)h * n_loc;
                ps->states[(size_t)l * c->n_head + h] =
                    (ss_score_state){ps->values + off, ps->bits ? ps->bits + off : NULL, c->cfg.history};
            }
        }
        const size_t R = (size_t)max_rows, H = (size_t)c->n_head;
        ps->row_heavy = ss_alloc(R * H * (size_t)c->heavy_cap, sizeof(ss_heavy));
        ps->row_n = ss_alloc(R * H, sizeof(int32_t));
        ps->row_p = ss_alloc(R * H * (size_t)ps->n_loc_max, sizeof(float));
        ps->row_inv_n = ss_alloc(R * H, sizeof(float));
        ps->row_outside = ss_alloc(R * H, sizeof(float));
        ps->row_pos = ss_alloc(R, sizeof(int64_t));
        ps->row_evicted = ss_alloc(R, 1);
        ps->path_chain = ss_alloc(H * R, sizeof(int32_t));
        ps->path_pos = ss_alloc(H * R, sizeof(int64_t));
        ps->path_p = ss_alloc(H * R, sizeof(float *));
        ps->path_inv_n = ss_alloc(H * R, sizeof(float));
        ok = ok && ps->row_heavy && ps->row_n && ps->row_p && ps->row_inv_n && ps->row_outside && ps->row_pos &&
             ps->row_evicted && ps->path_chain && ps->path_pos && ps->path_p && ps->path_inv_n;
    }
    if (ok && c->heavy_cap > 0) {
        ps->cand_cap = c->heavy_cap + c->ring;
        const size_t H = (size_t)c->n_head, n = (size_t)ps->cand_cap;
        ps->cand = ss_alloc(H * n, sizeof(ss_heavy));
        ps->kept = ss_alloc(H * n, sizeof(ss_heavy));
        ps->cand_score = ss_alloc(H * n, sizeof(float));
        ps->pooled = ss_alloc(H * n, sizeof(float));
        ps->taken = ss_alloc(H * n, 1);
        ps->rank = ss_alloc(H * n, sizeof(ranked));
        ps->n_cand = ss_alloc(H, sizeof(int32_t));
        ps->n_kept = ss_alloc(H, sizeof(int32_t));
        ps->free_rows = ss_alloc((size_t)c->pool_offset[c->n_layer] + 1, sizeof(int32_t));
        ps->shared_pos = ss_alloc(n, sizeof(int64_t));
        ps->shared_work = ss_alloc(2 * n, sizeof(int64_t));
        ps->shared_score = ss_alloc(2 * n, sizeof(float));
        ok = ps->cand && ps->kept && ps->cand_score && ps->pooled && ps->taken && ps->rank && ps->n_cand && ps->n_kept &&
             ps->free_rows && ps->shared_pos && ps->shared_work && ps->shared_score;
    }
    if (!ok) {
        ss_policy_release(c);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the state of the %s cache policy", c->policy->name);
    }
    ss_policy_reset(c);
    return SS_OK;
}

void ss_policy_release(ss_kv_cache *c) {
    policy_state *ps = state_of(c);
    if (!ps) return;
    void *bufs[] = {ps->states, ps->values, ps->bits, ps->loc_offset, ps->budget, ps->outside, ps->row_heavy,
                    ps->row_n, ps->row_p, ps->row_inv_n, ps->row_outside, ps->row_pos, ps->row_evicted, ps->path_chain, ps->path_pos, (void *)ps->path_p, ps->path_inv_n, ps->cand,
                    ps->kept, ps->cand_score, ps->pooled, ps->taken, ps->rank, ps->n_cand, ps->n_kept, ps->free_rows,
                    ps->shared_pos, ps->shared_work, ps->shared_score};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(ps);
    c->policy_state = NULL;
}

void ss_policy_reset(ss_kv_cache *c) {
    policy_state *ps = state_of(c);
    const size_t LH = (size_t)c->n_layer * c->n_head;
    if (ps->values) memset(ps->values, 0, (size_t)ps->loc_offset[c->n_layer] * sizeof(float));
    if (ps->bits) memset(ps->bits, 0, (size_t)ps->loc_offset[c->n_layer] * sizeof(uint64_t));
    memset(ps->outside, 0, LH * sizeof(double));
    ps->calibration_queries = 0;
    ps->calibrated = 0;
    set_budgets(c);
}

size_t ss_policy_bytes(const ss_kv_cache *c) {
    const policy_state *ps = state_of(c);
    if (!ps->scorer) return 0;
    return (size_t)ps->loc_offset[c->n_layer] * (sizeof(float) + (ps->bits ? sizeof(uint64_t) : 0));
}

ss_batch_mode ss_policy_batch_mode(const ss_kv_cache *c) {
    const policy_state *ps = state_of(c);
    if (!ps->scorer || ps->share == SS_SHARE_MODEL) return SS_BATCH_FIXED;
    if (ps->share == SS_SHARE_LAYER || c->policy->allocation == SS_ALLOC_ADAKV ||
        c->policy->allocation == SS_ALLOC_HEADAWARE)
        return SS_BATCH_PER_LAYER;
    return SS_BATCH_PER_HEAD;
}

int ss_policy_reads_attention(const ss_kv_cache *c) {
    const policy_state *ps = state_of(c);
    return ps->scorer && (ps->scorer->reads_attention || c->policy->allocation == SS_ALLOC_HEADAWARE);
}

void ss_policy_enter(ss_kv_cache *c, int layer, int head, int64_t t, const float *k) {
    const policy_state *ps = state_of(c);
    if (ps->scorer) ps->scorer->enter(score_state(c, layer, head), (int)ss_cache_slot(c, t), k, c->head_dim);
}

void ss_policy_move(ss_kv_cache *c, int from, int to) {
    const policy_state *ps = state_of(c);
    if (!ps->scorer) return;
    for (int l = 0; l < c->n_layer; l++) {
        for (int h = 0; h < c->n_head; h++) {
            ss_score_state *st = score_state(c, l, h);
            st->value[to] = st->value[from];
            if (st->bits) st->bits[to] = st->bits[from];
        }
    }
}

/* ------------------------------------------------------------ selection */

/* Final scores of n candidates (sorted by position): NaN counts as lowest;
 * with pool_radius > 0 (snapkv) each score is max-pooled over that many
 * position neighbours each side. scratch: room for n floats. */
static void finish_scores(float *score, int n, int pool_radius, float *scratch) {
    for (int i = 0; i < n; i++)
        if (isnan(score[i])) score[i] = -INFINITY;
    if (pool_radius <= 0) return;
    for (int i = 0; i < n; i++) {
        float best = score[i];
        for (int j = i - pool_radius; j <= i + pool_radius; j++)
            if (j >= 0 && j < n && score[j] > best) best = score[j];
        scratch[i] = best;
    }
    memcpy(score, scratch, (size_t)n * sizeof(float));
}

static int by_rank(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->pos != y->pos) return x->pos > y->pos ? -1 : 1;
    return (x->head > y->head) - (x->head < y->head);
}

/* The best m of n candidates by (finished) score. Writes the kept ones, in
 * position order, to out; returns how many. rank/taken: room for n. */
static int keep_best(const ss_heavy *cand, const float *score, int n, int m, ss_heavy *out, ranked *rank,
                     uint8_t *taken) {
    if (n <= 0) return 0;
    if (n <= m) {
        memcpy(out, cand, (size_t)n * sizeof *out);
        return n;
    }
    for (int i = 0; i < n; i++) rank[i] = (ranked){score[i], 0, i, cand[i].pos};
    qsort(rank, (size_t)n, sizeof *rank, by_rank);
    for (int i = 0; i < n; i++) taken[i] = 0;
    for (int i = 0; i < m; i++) taken[rank[i].index] = 1;
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (taken[i]) out[kept++] = cand[i];
    return kept;
}

static ss_heavy *cand_of(policy_state *ps, int h) { return ps->cand + (size_t)h * ps->cand_cap; }
static ranked *rank_of(policy_state *ps, int h) { return ps->rank + (size_t)h * ps->cand_cap; }
static uint8_t *taken_of(policy_state *ps, int h) { return ps->taken + (size_t)h * ps->cand_cap; }
static ss_heavy *kept_of(policy_state *ps, int h) { return ps->kept + (size_t)h * ps->cand_cap; }
static float *score_of(policy_state *ps, int h) { return ps->cand_score + (size_t)h * ps->cand_cap; }

static void finish_head(policy_state *ps, int h) {
    finish_scores(score_of(ps, h), ps->n_cand[h], ps->scorer->pool_radius, ps->pooled + (size_t)h * ps->cand_cap);
}

static void select_head(ss_kv_cache *c, int layer, int h) {
    policy_state *ps = state_of(c);
    finish_head(ps, h);
    ps->n_kept[h] = keep_best(cand_of(ps, h), score_of(ps, h), ps->n_cand[h],
                              ps->budget[(size_t)layer * c->n_head + h], kept_of(ps, h), rank_of(ps, h),
                              taken_of(ps, h));
}

/* AdaKV: each head keeps its floor best, the rest of the layer's budget
 * goes to the best remaining candidates of any head (ties: larger position,
 * then lower head). */
static void select_adakv(ss_kv_cache *c, int layer) {
    policy_state *ps = state_of(c);
    const int H = c->n_head, floor_keep = ss_adakv_floor(&c->cfg);
    int total = 0, used = 0;
    for (int h = 0; h < H; h++) total += ps->budget[(size_t)layer * H + h];
    for (int h = 0; h < H; h++) {
        finish_head(ps, h);
        const int n = ps->n_cand[h];
        ss_heavy *floor_set = kept_of(ps, h); /* scratch: which candidates the floor keeps */
        uint8_t *taken = taken_of(ps, h);
        const int got = keep_best(cand_of(ps, h), score_of(ps, h), n, floor_keep, floor_set, rank_of(ps, h), taken);
        if (n <= floor_keep) memset(taken, 1, (size_t)n);
        used += got;
    }
    /* the rest of the layer's slots: the best candidates left, over all heads */
    ranked *rank = rank_of(ps, 0);
    int n_rest = 0;
    for (int h = 0; h < H; h++) {
        const uint8_t *taken = taken_of(ps, h);
        for (int i = 0; i < ps->n_cand[h]; i++)
            if (!taken[i]) rank[n_rest++] = (ranked){score_of(ps, h)[i], h, i, cand_of(ps, h)[i].pos};
    }
    qsort(rank, (size_t)n_rest, sizeof *rank, by_rank);
    for (int r = 0; r < n_rest && used < total; r++, used++) taken_of(ps, rank[r].head)[rank[r].index] = 1;
    for (int h = 0; h < H; h++) {
        const uint8_t *taken = taken_of(ps, h);
        ps->n_kept[h] = 0;
        for (int i = 0; i < ps->n_cand[h]; i++)
            if (taken[i]) kept_of(ps, h)[ps->n_kept[h]++] = cand_of(ps, h)[i];
    }
}

/* One set for the layer (share "layer"): scores summed over its heads,
 * whose candidates are the same positions at each head's locations. */
static void select_layer_shared(ss_kv_cache *c, int layer) {
    policy_state *ps = state_of(c);
    const int H = c->n_head, n = ps->n_cand[0];
    float *sum = score_of(ps, 0);
    for (int h = 1; h < H; h++)
        for (int i = 0; i < n; i++) sum[i] += score_of(ps, h)[i];
    finish_head(ps, 0);
    ps->n_kept[0] = keep_best(cand_of(ps, 0), sum, n, ps->budget[(size_t)layer * H], kept_of(ps, 0), rank_of(ps, 0),
                              taken_of(ps, 0));
    for (int h = 1; h < H; h++) {
        const ss_heavy *cand = cand_of(ps, h);
        int k = 0;
        for (int i = 0; i < n && k < ps->n_kept[0]; i++)
            if (cand[i].pos == kept_of(ps, 0)[k].pos) kept_of(ps, h)[k++] = cand[i];
        ps->n_kept[h] = k;
    }
}

/* Keeps the best candidates of every head of a layer (cand / cand_score /
 * n_cand filled) into kept / n_kept, by the policy's allocation and share. */
static void select_layer(ss_kv_cache *c, int layer) {
    policy_state *ps = state_of(c);
    if (c->policy->allocation == SS_ALLOC_ADAKV) select_adakv(c, layer);
    else if (ps->share == SS_SHARE_LAYER) select_layer_shared(c, layer);
    else
        for (int h = 0; h < c->n_head; h++) select_head(c, layer, h);
}

/* ------------------------------------------------------------ batches */

/* Positions that left the run between row j's parent (or the committed
 * state) and row j. */
static void batch_dropped(const ss_batch *b, int row, int64_t *d0, int64_t *d1) {
    const int parent = b->parent[row];
    *d0 = b->schedule[parent >= 0 ? b->depth[parent] : 0].first;
    *d1 = b->schedule[b->depth[row]].first;
}

/* Location of position p among row j's keys: committed, or one of its
 * pending ancestors (when the window is shallower than the tree). */
static int32_t batch_loc(const ss_kv_cache *c, const ss_batch *b, int row, int64_t p) {
    if (p < b->committed) return (int32_t)ss_cache_slot(c, p);
    int j = row;
    while (b->depth[j] > p - b->committed) j = b->parent[j];
    return (int32_t)ss_cache_slot(c, b->committed + j);
}

static ss_heavy *row_heavy(policy_state *ps, const ss_kv_cache *c, int row, int h) {
    return ps->row_heavy + ((size_t)row * c->n_head + h) * (size_t)c->heavy_cap;
}
static float *row_p(policy_state *ps, const ss_kv_cache *c, int row, int h) {
    return ps->row_p + ((size_t)row * c->n_head + h) * (size_t)ps->n_loc_max;
}

void ss_policy_batch_begin(ss_kv_cache *c, const ss_batch *b, int first_row, int n) {
    policy_state *ps = state_of(c);
    if (!ps->row_pos) return;
    for (int row = first_row; row < first_row + n; row++) {
        int64_t d0, d1;
        batch_dropped(b, row, &d0, &d1);
        ps->row_pos[row] = b->committed + b->depth[row];
        ps->row_evicted[row] = d1 > d0;
    }
}

/* The path of row j (its pending ancestors, oldest first) as head h's
 * scorer reads it, in that head's scratch. */
static ss_path path_of(policy_state *ps, const ss_kv_cache *c, const ss_batch *b, int row, int h) {
    const size_t off = (size_t)h * ps->max_rows;
    int32_t *chain = ps->path_chain + off;
    int64_t *pos = ps->path_pos + off;
    const float **p = ps->path_p + off;
    float *inv_n = ps->path_inv_n + off;
    int n = 0;
    for (int a = b->parent[row]; a >= 0; a = b->parent[a]) chain[n++] = a;
    int evicted_after = -1;
    for (int i = 0; i < n; i++) {
        const int a = chain[n - 1 - i];
        pos[i] = ps->row_pos[a];
        p[i] = row_p(ps, c, a, h);
        inv_n[i] = ps->row_inv_n[(size_t)a * c->n_head + h];
        if (ps->row_evicted[a]) evicted_after = i - 1; /* before a's query */
    }
    return (ss_path){n, pos, p, inv_n, evicted_after};
}

/* Head-aware budgets of a layer before calibration: the committed queries'
 * outside mass plus that of row j's path up to its first eviction, added in
 * the order commits add them (oldest first). */
static void row_headaware_budgets(ss_kv_cache *c, const ss_batch *b, int layer, int row) {
    policy_state *ps = state_of(c);
    if (ps->calibrated) return; /* committed budgets hold */
    const int H = c->n_head;
    int32_t *chain = ps->path_chain;
    int n = 0;
    for (int a = b->parent[row]; a >= 0; a = b->parent[a]) chain[n++] = a;
    double outside[SS_MAX_HEADS_HEADAWARE];
    for (int h = 0; h < H; h++) {
        outside[h] = ps->outside[(size_t)layer * H + h];
        for (int i = n - 1; i >= 0 && !ps->row_evicted[chain[i]]; i--)
            outside[h] += ps->row_outside[(size_t)chain[i] * H + h];
    }
    const int per_head = (int)((c->pool_offset[layer + 1] - c->pool_offset[layer]) / H);
    ss_headaware_budgets(outside, H, per_head, ps->budget + (size_t)layer * H);
}

/* The heavy list row j starts from: its parent's, or the committed one. */
static const ss_heavy *row_start(policy_state *ps, const ss_kv_cache *c, const ss_batch *b, int layer, int h,
                                 int row, int *n) {
    const int parent = b->parent[row];
    if (parent >= 0) {
        *n = ps->row_n[(size_t)parent * c->n_head + h];
        return row_heavy(ps, c, parent, h);
    }
    *n = c->n_heavy[(size_t)layer * c->n_head + h];
    return ss_cache_heavy(c, layer, h);
}

/* Candidates and scores of head h for row j (keys left the run before it). */
static void row_candidates(ss_kv_cache *c, const ss_batch *b, int layer, int h, int row, int64_t d0, int64_t d1) {
    policy_state *ps = state_of(c);
    int n_from;
    const ss_heavy *from = row_start(ps, c, b, layer, h, row, &n_from);
    ss_heavy *cand = cand_of(ps, h);
    int n = 0;
    for (int i = 0; i < n_from; i++) cand[n++] = from[i];
    for (int64_t p = d0; p < d1; p++) cand[n++] = (ss_heavy){p, batch_loc(c, b, row, p)};
    ps->n_cand[h] = n;
    const ss_path path = path_of(ps, c, b, row, h);
    const ss_score_state *st = score_state(c, layer, h);
    for (int i = 0; i < n; i++) score_of(ps, h)[i] = ps->scorer->score(st, cand[i].loc, cand[i].pos, &path);
}

static void row_keep(ss_kv_cache *c, int h, int row) {
    policy_state *ps = state_of(c);
    memcpy(row_heavy(ps, c, row, h), kept_of(ps, h), (size_t)ps->n_kept[h] * sizeof(ss_heavy));
    ps->row_n[(size_t)row * c->n_head + h] = ps->n_kept[h];
}

static void row_inherit(ss_kv_cache *c, const ss_batch *b, int layer, int h, int row) {
    policy_state *ps = state_of(c);
    int n;
    const ss_heavy *from = row_start(ps, c, b, layer, h, row, &n);
    memcpy(row_heavy(ps, c, row, h), from, (size_t)n * sizeof(ss_heavy));
    ps->row_n[(size_t)row * c->n_head + h] = n;
}

void ss_policy_row_layer(ss_kv_cache *c, const ss_batch *b, int layer, int row) {
    int64_t d0, d1;
    batch_dropped(b, row, &d0, &d1);
    if (d1 <= d0) {
        for (int h = 0; h < c->n_head; h++) row_inherit(c, b, layer, h, row);
        return;
    }
    if (c->policy->allocation == SS_ALLOC_HEADAWARE) row_headaware_budgets(c, b, layer, row);
    for (int h = 0; h < c->n_head; h++) row_candidates(c, b, layer, h, row, d0, d1);
    select_layer(c, layer);
    for (int h = 0; h < c->n_head; h++) row_keep(c, h, row);
}

const ss_heavy *ss_policy_row_heavy(ss_kv_cache *c, const ss_batch *b, int layer, int head, int row, int *n_heavy) {
    policy_state *ps = state_of(c);
    if (ss_policy_batch_mode(c) == SS_BATCH_FIXED) {
        if (c->heavy_cap == 0) {
            *n_heavy = 0;
            return NULL;
        }
        *n_heavy = c->n_heavy[(size_t)layer * c->n_head + head];
        return ss_cache_heavy(c, layer, head);
    }
    if (ss_policy_batch_mode(c) == SS_BATCH_PER_HEAD) {
        int64_t d0, d1;
        batch_dropped(b, row, &d0, &d1);
        if (d1 > d0) {
            row_candidates(c, b, layer, head, row, d0, d1);
            select_head(c, layer, head);
            row_keep(c, head, row);
        } else {
            row_inherit(c, b, layer, head, row);
        }
    }
    *n_heavy = ps->row_n[(size_t)row * c->n_head + head];
    return row_heavy(ps, c, row, head);
}

void ss_policy_row_probs(ss_kv_cache *c, int head, int row, const int32_t *loc, const float *p, int n,
                         float outside) {
    policy_state *ps = state_of(c);
    if (!ps->row_p) return;
    float *dense = row_p(ps, c, row, head);
    for (int j = 0; j < n; j++) dense[loc[j]] = p[j];
    ps->row_inv_n[(size_t)row * c->n_head + head] = 1.0f / (float)n;
    ps->row_outside[(size_t)row * c->n_head + head] = outside;
}

/* ------------------------------------------------------------ commits */

void ss_policy_commit_probs(ss_kv_cache *c, int layer, int head, const int32_t *loc, const float *p, int n,
                            float outside) {
    policy_state *ps = state_of(c);
    ps->scorer->observe(score_state(c, layer, head), loc, p, n);
    if (!ps->calibrated) ps->outside[(size_t)layer * c->n_head + head] += outside;
}

/* Writes a head's new heavy list: entries still in main slots take a free
 * pool row of the layer (keys, values and scorer state move there). */
static void store_heavy(ss_kv_cache *c, int layer, int h, const ss_heavy *list, int n, int32_t *free_rows,
                        int *n_free) {
    policy_state *ps = state_of(c);
    ss_heavy *heavy = ss_cache_heavy(c, layer, h);
    const size_t bytes = (size_t)c->head_dim * sizeof(float);
    ss_score_state *st = ps->scorer ? score_state(c, layer, h) : NULL;
    for (int i = 0; i < n; i++) {
        ss_heavy e = list[i];
        if (e.loc < c->slots) {
            const int32_t row = free_rows[--*n_free];
            const int32_t loc = c->slots + (int32_t)(row - c->pool_offset[layer]);
            ss_cache_store_heavy_key(c, layer, h, loc, e.loc, e.pos);
            memcpy(ss_cache_loc_value(c, layer, h, loc), ss_cache_loc_value(c, layer, h, e.loc), bytes);
            if (st) {
                st->value[loc] = st->value[e.loc];
                if (st->bits) st->bits[loc] = st->bits[e.loc];
            }
            c->pool_owner[row] = h;
            e.loc = loc;
        }
        heavy[i] = e;
    }
    c->n_heavy[(size_t)layer * c->n_head + h] = n;
}

/* Replaces the heavy lists of a layer by kept / n_kept: the pool rows of
 * dropped entries are freed first, then new entries take free rows. */
static void store_layer(ss_kv_cache *c, int layer) {
    policy_state *ps = state_of(c);
    const int H = c->n_head;
    for (int h = 0; h < H; h++) {
        const ss_heavy *old = ss_cache_heavy(c, layer, h);
        const int n_old = c->n_heavy[(size_t)layer * H + h];
        for (int i = 0, k = 0; i < n_old; i++) {
            while (k < ps->n_kept[h] && kept_of(ps, h)[k].pos < old[i].pos) k++;
            const int still = k < ps->n_kept[h] && kept_of(ps, h)[k].pos == old[i].pos;
            if (!still) c->pool_owner[c->pool_offset[layer] + (old[i].loc - c->slots)] = -1;
        }
    }
    int n_free = 0;
    for (int64_t row = c->pool_offset[layer]; row < c->pool_offset[layer + 1]; row++)
        if (c->pool_owner[row] < 0) ps->free_rows[n_free++] = (int32_t)row;
    for (int h = 0; h < H; h++) store_heavy(c, layer, h, kept_of(ps, h), ps->n_kept[h], ps->free_rows, &n_free);
}

/* Candidates of every head of a layer: its heavy list and [first, first +
 * dropped) (committed keys in main slots), scored from the committed state. */
static void commit_candidates(ss_kv_cache *c, int layer, int64_t first, int dropped) {
    policy_state *ps = state_of(c);
    const ss_path empty = {0, NULL, NULL, NULL, -1};
    for (int h = 0; h < c->n_head; h++) {
        const ss_heavy *heavy = ss_cache_heavy(c, layer, h);
        ss_heavy *cand = cand_of(ps, h);
        int n = c->n_heavy[(size_t)layer * c->n_head + h];
        memcpy(cand, heavy, (size_t)n * sizeof(ss_heavy));
        for (int64_t p = first; p < first + dropped; p++) cand[n++] = (ss_heavy){p, (int32_t)ss_cache_slot(c, p)};
        ps->n_cand[h] = n;
        const ss_score_state *st = ps->scorer ? score_state(c, layer, h) : NULL;
        for (int i = 0; i < n && st; i++) score_of(ps, h)[i] = ps->scorer->score(st, cand[i].loc, cand[i].pos, &empty);
    }
}

/* One set of positions for every layer and head: refresh tokens, or the
 * model-shared score policies (scores summed over all heads). */
static int shared_positions(ss_kv_cache *c, int64_t first, int dropped) {
    policy_state *ps = state_of(c);
    const ss_heavy *any = ss_cache_heavy(c, 0, 0);
    const int n_now = c->n_heavy[0];
    if (!ps->scorer) {
        for (int i = 0; i < n_now; i++) ps->shared_work[i] = any[i].pos;
        return ss_refresh_choose(c, ps->shared_work, n_now, first, dropped, ps->shared_pos, ps->shared_work + n_now,
                                 ps->shared_score);
    }
    const int n = n_now + dropped;
    float *sum = ps->shared_score;
    memset(sum, 0, (size_t)n * sizeof(float));
    for (int l = 0; l < c->n_layer; l++) {
        commit_candidates(c, l, first, dropped);
        for (int h = 0; h < c->n_head; h++)
            for (int i = 0; i < n; i++) sum[i] += score_of(ps, h)[i];
    }
    finish_scores(sum, n, ps->scorer->pool_radius, ps->pooled);
    const int kept = keep_best(cand_of(ps, 0), sum, n, c->heavy_cap, kept_of(ps, 0), rank_of(ps, 0), taken_of(ps, 0));
    for (int i = 0; i < kept; i++) ps->shared_pos[i] = kept_of(ps, 0)[i].pos;
    return kept;
}

void ss_policy_commit_eviction(ss_kv_cache *c, int64_t first, int dropped) {
    policy_state *ps = state_of(c);
    if (c->heavy_cap == 0 || dropped <= 0) return;
    if (c->policy->allocation == SS_ALLOC_HEADAWARE && !ps->calibrated) {
        ps->calibrated = 1; /* importance from every query before the first eviction */
        set_budgets(c);
    }
    const int shared = !ps->scorer || ps->share == SS_SHARE_MODEL;
    const int n_shared = shared ? shared_positions(c, first, dropped) : 0;
    for (int l = 0; l < c->n_layer; l++) {
        if (!shared) {
            commit_candidates(c, l, first, dropped);
            select_layer(c, l);
        } else { /* each head's entries for the shared positions */
            for (int h = 0; h < c->n_head; h++) {
                const ss_heavy *heavy = ss_cache_heavy(c, l, h);
                const int n_old = c->n_heavy[(size_t)l * c->n_head + h];
                ss_heavy *kept = kept_of(ps, h);
                for (int i = 0, k = 0; i < n_shared; i++) {
                    const int64_t p = ps->shared_pos[i];
                    while (k < n_old && heavy[k].pos < p) k++;
                    kept[i] = k < n_old && heavy[k].pos == p ? heavy[k] : (ss_heavy){p, (int32_t)ss_cache_slot(c, p)};
                }
                ps->n_kept[h] = n_shared;
            }
        }
        store_layer(c, l);
        for (int h = 0; ps->scorer && h < c->n_head; h++)
            ps->scorer->evicted(score_state(c, l, h), ss_cache_locations(c, l));
    }
}
