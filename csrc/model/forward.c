/* The forward pass: n new tokens through every layer against a sequence's KV
 * cache (ss_state).
 *
 *   token -> embed -> per layer: LN -> QKV -> rotary -> store K,V -> attention
 *   over what the cache policy shows -> out proj (+ parallel-residual MLP)
 *   -> final LN -> unembed -> logits
 *
 * New tokens form a tree hanging off the committed sequence (a chain for
 * decoding, prefill and chain speculation; a token tree for tree drafters):
 * each is rotated at its text position (its parent's plus one) and sees the
 * committed keys its cache policy shows at that position plus its
 * ancestors. Accepting a path moves its keys to the slots of their
 * positions; the rest vanish (state.h).
 *
 * Scratch memory is allocated once per state, so decoding never allocates. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cache/kv_cache.h"
#include "cache/policy.h"
#include "common.h"
#include "kernels/cpu/formats.h"
#include "model/backend.h"
#include "model/model.h"
#include "model/state.h"

enum { RECOMPUTE_CHUNK = 128 };

ss_status ss_state_create(const ss_model *model, const ss_cache_config *cache, int max_batch,
                          ss_state **out, ss_error *err) {
    *out = NULL;
    if (!model) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "model is NULL");
    if (max_batch < 1 || max_batch > (1 << 20))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "max_batch must be in [1, 2^20], got %d", max_batch);
    ss_state *s = calloc(1, sizeof *s);
    if (!s) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate a state");
    s->model = model;
    s->max_pending = max_batch;
    const ss_model_config *c = &model->cfg;
    ss_cache_config inner = *cache;
    if (cache->policy == SS_CACHE_RECOMPUTE) {
        /* Each step re-encodes the last `window` tokens into a fresh cache. */
        ss_status st = ss_config_check(SS_CONFIG_CACHE, cache, err);
        if (st != SS_OK) {
            free(s);
            return st;
        }
        s->history_cap = cache->window;
        s->history = ss_alloc((size_t)s->history_cap, sizeof(int32_t));
        s->window_ids = ss_alloc((size_t)cache->window, sizeof(int32_t));
        s->batch = max_batch > RECOMPUTE_CHUNK ? max_batch : RECOMPUTE_CHUNK;
    } else {
        s->batch = max_batch;
    }
    s->n_threads = omp_get_max_threads();
    const int pending_rows = cache->policy == SS_CACHE_RECOMPUTE ? s->batch : max_batch;
    ss_status st = ss_cache_init(&s->cache, &inner, c->n_layer, c->n_head, model->head_dim, c->rotary_dim,
                                 c->rotary_base, c->vocab_rows, pending_rows, err);
    if (st != SS_OK) {
        ss_free(s->history);
        ss_free(s->window_ids);
        free(s);
        return st;
    }
    const ss_kv_cache *kv = &s->cache;
    const size_t B = (size_t)s->batch, d = (size_t)c->d_model, half = (size_t)c->rotary_dim / 2 + 1;
    const size_t T = (size_t)s->n_threads;
    s->key_cap = kv->slots + kv->heavy_cap;
    s->row_cap = kv->heavy_cap + pending_rows;
    s->x = ss_alloc(B * d, sizeof(float));
    s->h = ss_alloc(B * d, sizeof(float));
    s->qkv = ss_alloc(B * 3 * d, sizeof(float));
    s->attn = ss_alloc(B * d, sizeof(float));
    s->proj = ss_alloc(B * d, sizeof(float));
    s->ff = ss_alloc(B * (size_t)c->d_ff, sizeof(float));
    s->rot_cos = ss_alloc(B * half, sizeof(float));
    s->rot_sin = ss_alloc(B * half, sizeof(float));
    s->pin_cos = ss_alloc(B * half, sizeof(float));
    s->pin_sin = ss_alloc(B * half, sizeof(float));
    s->heavy_seen = ss_alloc(B * (size_t)c->n_head, sizeof(int32_t));
    s->views = ss_alloc(B, sizeof(ss_view));
    s->ancestor_slots = ss_alloc(ss_ancestor_capacity(max_batch), sizeof(int32_t));
    s->schedule_at = ss_alloc(B, sizeof(ss_schedule));
    s->pending_parent = ss_alloc((size_t)max_batch, sizeof(int32_t));
    s->pending_depth = ss_alloc((size_t)max_batch, sizeof(int32_t));
    s->pending_token = ss_alloc((size_t)max_batch, sizeof(int32_t));
    s->fold_src = ss_alloc((size_t)max_batch, sizeof(int32_t));
    s->probs = ss_alloc(T * (size_t)s->key_cap, sizeof(float));
    s->loc = ss_alloc(T * (size_t)s->key_cap, sizeof(int32_t));
    s->row_k = ss_alloc(T * (size_t)s->row_cap, sizeof(float *));
    s->row_v = ss_alloc(T * (size_t)s->row_cap, sizeof(float *));
    s->thread_q = ss_alloc(T * 2, (size_t)model->head_dim * sizeof(float));
    s->thread_unrotated = ss_alloc(T * ((size_t)kv->heavy_cap + 1), (size_t)model->head_dim * sizeof(float));
    s->thread_table = ss_alloc(T * 2, half * sizeof(float));
    const int folds = cache->policy != SS_CACHE_RECOMPUTE && ss_policy_reads_attention(kv);
    if (folds) {
        const size_t LH = (size_t)c->n_layer * c->n_head;
        s->q_saved = ss_alloc((size_t)max_batch * c->n_layer, d * sizeof(float));
        s->first_probs = ss_alloc(LH * (size_t)s->key_cap, sizeof(float));
        s->first_loc = ss_alloc(LH * (size_t)s->key_cap, sizeof(int32_t));
        s->first_n = ss_alloc(LH, sizeof(int32_t));
    }
    const int replays = cache->policy != SS_CACHE_RECOMPUTE && ss_policy_batch_mode(kv) != SS_BATCH_FIXED;
    if (replays) {
        s->replay_views = ss_alloc((size_t)max_batch, sizeof(ss_view));
        s->replay_anc = ss_alloc(ss_ancestor_capacity(max_batch), sizeof(int32_t));
    }
    s->pending_chain = 1;
    if (!s->x || !s->h || !s->qkv || !s->attn || !s->proj || !s->ff || !s->rot_cos || !s->rot_sin || !s->pin_cos ||
        !s->pin_sin || !s->heavy_seen || !s->views || !s->ancestor_slots || !s->schedule_at || !s->pending_parent ||
        !s->pending_depth || !s->pending_token || !s->fold_src || !s->probs || !s->loc || !s->row_k || !s->row_v ||
        !s->thread_q || !s->thread_unrotated || !s->thread_table ||
        (folds && (!s->q_saved || !s->first_probs || !s->first_loc || !s->first_n)) || (replays && (!s->replay_views || !s->replay_anc)) || (cache->policy == SS_CACHE_RECOMPUTE && (!s->history || !s->window_ids))) {
        ss_state_free(s);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate scratch memory for a batch of %d", max_batch);
    }
    if (model->device == SS_DEVICE_CUDA) {
        st = ss_cuda_state_init(s, err);
        if (st != SS_OK) {
            ss_state_free(s);
            return st;
        }
    }
    *out = s;
    return SS_OK;
}

void ss_state_free(ss_state *s) {
    if (!s) return;
    if (s->cuda) ss_cuda_state_release(s);
    ss_cache_release(&s->cache);
    void *bufs[] = {s->history, s->window_ids, s->events, s->x, s->h, s->qkv, s->attn, s->proj, s->ff,
                    s->rot_cos, s->rot_sin, s->pin_cos, s->pin_sin, s->heavy_seen, s->views, s->ancestor_slots,
                    s->schedule_at, s->pending_parent, s->pending_depth, s->pending_token, s->fold_src, s->probs,
                    s->loc, (void *)s->row_k, (void *)s->row_v, s->thread_q, s->thread_unrotated, s->thread_table,
                    s->q_saved, s->first_probs, s->first_loc, s->first_n, s->replay_views, s->replay_anc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(s);
}

int64_t ss_state_length(const ss_state *s) { return s->committed + s->n_pending; }
size_t ss_state_cache_bytes(const ss_state *s) { return ss_cache_bytes(&s->cache); }
int ss_state_visible(const ss_state *s) { return s->last_visible; }

int ss_state_row_visible(const ss_state *s, int i) {
    const int keys = ss_view_keys(&s->views[i]);
    if (s->cache.heavy_cap == 0) return keys;
    const int H = s->model->cfg.n_head;
    int64_t heavy = 0; /* the heads' mean, when budgets differ */
    for (int h = 0; h < H; h++) heavy += s->heavy_seen[(size_t)i * H + h];
    return keys + (int)((heavy + H / 2) / H);
}
int ss_state_max_batch(const ss_state *s) { return s->max_pending; }

const ss_eviction *ss_state_evictions(const ss_state *s, size_t *count) {
    *count = s->n_events;
    return s->events;
}

void ss_state_record_evictions(ss_state *s, int on) { s->record = on; }

void ss_state_clear_evictions(ss_state *s) { s->n_events = 0; }

/* ----------------------------------------------------------- the layers */

/* Attention mass on keys outside a query's recent window: the heavy set
 * and run keys before position pos - window + 1 (head-aware budgets). */
static float outside_mass(const ss_kv_cache *kv, const ss_view *view, int n_heavy, const float *p) {
    float sum = 0.0f;
    int j = view->n_pinned;
    for (int i = 0; i < n_heavy; i++) sum += p[j++];
    const int64_t before = view->pos - kv->cfg.window + 1 - view->lo;
    for (int64_t i = 0; i < before; i++) sum += p[j++];
    return sum;
}

/* This thread's scratch for ss_cache_runs. */
static ss_runs_scratch runs_scratch(const ss_state *s, int tid) {
    const size_t hd = (size_t)s->model->head_dim, half = (size_t)s->model->cfg.rotary_dim / 2 + 1;
    float *table = s->thread_table + (size_t)tid * 2 * half;
    return (ss_runs_scratch){s->row_k + (size_t)tid * s->row_cap, s->row_v + (size_t)tid * s->row_cap,
                             s->thread_unrotated + (size_t)tid * ((size_t)s->cache.heavy_cap + 1) * hd, table,
                             table + half};
}

/* The query of one head as attention meets keys: q is rotated at its text
 * position (text positions), or raw with the rotated copy given in `text`
 * or made here at position pos (cache positions). */
static ss_query query_of(const ss_state *s, const float *q, const float *text, int64_t pos, int tid) {
    const ss_kv_cache *kv = &s->cache;
    if (!kv->cache_positions) return (ss_query){q, q, NULL};
    const size_t hd = (size_t)s->model->head_dim;
    float *own = s->thread_q + (size_t)tid * 2 * hd;
    if (!text) {
        const ss_runs_scratch t = runs_scratch(s, tid);
        ss_rotary_table(t.cos, t.sin, kv->rotary_dim, kv->rotary_base, pos);
        memcpy(own, q, hd * sizeof(float));
        ss_rotary(own, kv->rotary_dim, t.cos, t.sin);
        text = own;
    }
    return (ss_query){text, q, own + hd};
}

/* Attention of one query of one head (pending row `row`) over the keys its
 * view and the given heavy set show. `record`: the probabilities go to the
 * cache policy, for the row's descendants; out: where the attention output
 * goes (NULL: probabilities only). */
static void attend(ss_state *s, int layer, const ss_view *view, const ss_query *q, int row, int h,
                   const ss_heavy *heavy, int n_heavy, int record, float *out) {
    ss_kv_cache *kv = &s->cache;
    const int hd = s->model->head_dim, tid = omp_get_thread_num();
    const int32_t *anc = out ? s->ancestor_slots : s->replay_anc;
    float *probs = s->probs + (size_t)tid * s->key_cap;
    int32_t *loc = record ? s->loc + (size_t)tid * s->key_cap : NULL;
    const size_t first = ((size_t)layer * s->model->cfg.n_head + h) * s->key_cap;
    if (record && row == 0) { /* kept for the fold at commit */
        probs = s->first_probs + first;
        loc = s->first_loc + first;
    }
    const ss_runs_scratch scratch = runs_scratch(s, tid);
    ss_kv_run runs[5];
    int n_keys;
    const int n_runs = ss_cache_runs(kv, layer, h, view, anc, heavy, n_heavy, q, &scratch, runs, loc, &n_keys);
    ss_attention_probs(runs, n_runs, hd, 1.0f / sqrtf((float)hd), ss_cache_rotation(kv), probs);
    if (record) ss_policy_row_probs(kv, h, row, loc, probs, n_keys, outside_mass(kv, view, n_heavy, probs));
    if (record && row == 0) s->first_n[first / s->key_cap] = n_keys;
    if (out) ss_attention_values(out, probs, runs, n_runs, hd);
}

static const float *saved_q(const ss_state *s, int row, int layer, int h) {
    const ss_model_config *c = &s->model->cfg;
    return s->q_saved + ((size_t)row * c->n_layer + layer) * c->d_model + (size_t)h * s->model->head_dim;
}

/* Rows i of the batch (or, replaying, pending rows of earlier forwards)
 * in order, one head: what they attend to depends on the rows before. */
static void rows_of_head(ss_state *s, int layer, int h, int first, int n, int replay) {
    const ss_model_config *c = &s->model->cfg;
    ss_kv_cache *kv = &s->cache;
    const int hd = s->model->head_dim, d = c->d_model;
    const ss_batch batch = {s->committed, s->pending_parent, s->pending_depth, s->schedule_at};
    for (int i = first; i < first + n; i++) {
        const int row = replay ? i : s->plan_base + i;
        int n_heavy;
        const ss_heavy *heavy = ss_policy_row_heavy(kv, &batch, layer, h, row, &n_heavy);
        const int tid = omp_get_thread_num();
        if (replay) {
            if (!s->q_saved) continue;
            const ss_view *view = &s->replay_views[i];
            const ss_query q = query_of(s, saved_q(s, i, layer, h), NULL, view->pos, tid);
            attend(s, layer, view, &q, row, h, heavy, n_heavy, 1, NULL);
            continue;
        }
        if (layer == 0) s->heavy_seen[(size_t)i * c->n_head + h] = n_heavy;
        const ss_query q = query_of(s, s->qkv + (size_t)i * 3 * d + (size_t)h * 3 * hd,
                                    s->attn + (size_t)i * d + (size_t)h * hd, s->views[i].pos, tid);
        attend(s, layer, &s->views[i], &q, row, h, heavy, n_heavy, s->q_saved != NULL,
               s->attn + (size_t)i * d + (size_t)h * hd);
    }
}

/* Heavy sets decided inside the batch make a row depend on the rows before
 * it: per head (heads run in parallel, rows in order) or per layer (rows in
 * order, then heads in parallel). Otherwise rows and heads are independent.
 * Threads only pay off with enough work (keys x dims). */
static void attend_batch(ss_state *s, int layer, int first, int n, int replay) {
    ss_kv_cache *kv = &s->cache;
    const int H = s->model->cfg.n_head, threads = s->n_threads;
    const ss_view *last = replay ? &s->replay_views[first + n - 1] : &s->views[first + n - 1];
    const int64_t work = (int64_t)n * H * s->model->head_dim * ss_view_keys(last);
    switch (ss_policy_batch_mode(kv)) {
    case SS_BATCH_FIXED:
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (work >= (1 << 15))
        for (int i = first; i < first + n; i++)
            for (int h = 0; h < H; h++) rows_of_head(s, layer, h, i, 1, replay);
        break;
    case SS_BATCH_PER_HEAD:
#pragma omp parallel for schedule(static) num_threads(threads) if (work >= (1 << 15))
        for (int h = 0; h < H; h++) rows_of_head(s, layer, h, first, n, replay);
        break;
    case SS_BATCH_PER_LAYER: {
        const ss_batch batch = {s->committed, s->pending_parent, s->pending_depth, s->schedule_at};
        for (int i = first; i < first + n; i++) {
            ss_policy_row_layer(kv, &batch, layer, replay ? i : s->plan_base + i);
#pragma omp parallel for schedule(static) num_threads(threads) if (work >= (int64_t)n << 15)
            for (int h = 0; h < H; h++) rows_of_head(s, layer, h, i, 1, replay);
        }
        break;
    }
    }
}

static void attention(const ss_model *m, ss_state *s, int layer, int base, int n) {
    const ss_model_config *c = &m->cfg;
    const int hd = m->head_dim, d = c->d_model, H = c->n_head;
    const size_t stride = (size_t)c->rotary_dim / 2 + 1;
    ss_kv_cache *kv = &s->cache;

    /* Rotate k at its text position and store k and v; the query too (for
     * cache positions it stays raw, with its text-rotated copy parked in the
     * attention output row until attention overwrites it). The GPT-NeoX QKV
     * output is laid out per head as [q | k | v]. */
#pragma omp parallel for collapse(2) schedule(static) num_threads(s->n_threads) if (n * H >= 256)
    for (int i = 0; i < n; i++) {
        for (int h = 0; h < H; h++) {
            const ss_view *view = &s->views[i];
            float *q = s->qkv + (size_t)i * 3 * d + (size_t)h * 3 * hd;
            float *k = q + hd, *v = k + hd;
            float *q_text = q;
            if (kv->cache_positions) {
                q_text = s->attn + (size_t)i * d + (size_t)h * hd;
                memcpy(q_text, q, (size_t)hd * sizeof(float));
            }
            ss_rotary(q_text, c->rotary_dim, s->rot_cos + i * stride, s->rot_sin + i * stride);
            ss_rotary(k, c->rotary_dim, s->rot_cos + i * stride, s->rot_sin + i * stride);
            memcpy(ss_cache_key(kv, layer, h, view->index), k, (size_t)hd * sizeof(float));
            memcpy(ss_cache_value(kv, layer, h, view->index), v, (size_t)hd * sizeof(float));
            ss_policy_enter(kv, layer, h, view->index, k);
            if (s->q_saved) memcpy((float *)saved_q(s, base + i, layer, h), q, (size_t)hd * sizeof(float));
        }
    }
    /* The path state of pending rows from earlier forwards is per layer:
     * replay them first. */
    if (base > 0 && ss_policy_batch_mode(kv) != SS_BATCH_FIXED) attend_batch(s, layer, 0, base, 1);
    attend_batch(s, layer, 0, n, 0);
}

static void layer_forward(const ss_model *m, ss_state *s, int li, int base, int n) {
    const ss_model_config *c = &m->cfg;
    const ss_layer *L = &m->layers[li];
    const int d = c->d_model, ff = c->d_ff;
    for (int i = 0; i < n; i++)
        ss_layernorm(s->h + (size_t)i * d, s->x + (size_t)i * d, L->ln1_w, L->ln1_b, d, c->layer_norm_eps);
    ss_matmul(s->qkv, s->h, n, d, L->qkv_w, m->wtype, 3 * d, L->qkv_b);
    attention(m, s, li, base, n);
    /* The residual additions and the GELU are fused into the matrix products
     * (ss_matmul_ex epilogues). MLP input: ln2 of the layer input (parallel
     * residual, so taken before x changes) or of x + attn (sequential). */
    if (c->parallel_residual) {
        for (int i = 0; i < n; i++)
            ss_layernorm(s->h + (size_t)i * d, s->x + (size_t)i * d, L->ln2_w, L->ln2_b, d, c->layer_norm_eps);
        ss_matmul_ex(s->x, s->attn, n, d, L->out_w, m->wtype, d, L->out_b, SS_EPI_ADD);
    } else {
        ss_matmul_ex(s->x, s->attn, n, d, L->out_w, m->wtype, d, L->out_b, SS_EPI_ADD);
        for (int i = 0; i < n; i++)
            ss_layernorm(s->h + (size_t)i * d, s->x + (size_t)i * d, L->ln2_w, L->ln2_b, d, c->layer_norm_eps);
    }
    ss_matmul_ex(s->ff, s->h, n, d, L->fc1_w, m->wtype, ff, L->fc1_b, c->gelu_tanh ? SS_EPI_GELU_TANH : SS_EPI_GELU);
    ss_matmul_ex(s->x, s->ff, n, ff, L->fc2_w, m->wtype, d, L->fc2_b, SS_EPI_ADD);
}

/* Entropy (nats) of softmax(logits). */
static float entropy_of(const float *logits, int V) {
    float max = -INFINITY;
    for (int v = 0; v < V; v++)
        if (logits[v] > max) max = logits[v];
    double z = 0.0, ez = 0.0;
    for (int v = 0; v < V; v++) {
        const double d = (double)logits[v] - max, e = exp(d);
        z += e;
        ez += e * d;
    }
    return (float)(log(z) - ez / z);
}

/* The view of pending token j (position committed + its depth, stream index
 * committed + j): along a chain the window run through itself; in a tree
 * the committed window and then its visible ancestors, root first, itself
 * last, appended to anc at *used. */
static ss_status plan_row(ss_state *s, int64_t committed, int j, int chain, ss_view *view, int32_t *anc,
                          size_t *used, ss_error *err) {
    ss_kv_cache *kv = &s->cache;
    const int depth = chain ? j : s->pending_depth[j];
    const int64_t t = committed + depth, index = committed + j;
    ss_status st = ss_cache_view(kv, &s->schedule_at[depth], t, index, chain ? index + 1 : committed, view, err);
    view->anc_first = (int)*used;
    if (st != SS_OK || chain) return st;
    int32_t *list = anc + *used;
    int count = 0;
    for (int a = j; a >= 0; a = s->pending_parent[a]) {
        const int64_t p = committed + s->pending_depth[a];
        if (p < kv->n_sink || p >= view->lo) list[count++] = (int32_t)ss_cache_slot(kv, committed + a);
    }
    for (int x = 0, y = count - 1; x < y; x++, y--) {
        const int32_t tmp = list[x];
        list[x] = list[y];
        list[y] = tmp;
    }
    view->n_anc = count;
    *used += (size_t)count;
    return SS_OK;
}

/* Views of a batch of n tokens at pending indices base.. (their depths,
 * parents and the committed length `committed` say where they sit), with
 * their rotary tables, and the schedule at every pending depth. */
static ss_status plan_views(ss_state *s, int64_t committed, int base, int n, int chain, ss_error *err) {
    const ss_model_config *c = &s->model->cfg;
    const size_t stride = (size_t)c->rotary_dim / 2 + 1;
    ss_kv_cache *kv = &s->cache;
    /* The committed schedule is advanced for position `committed`; later
     * positions advance a copy. Entropies of uncommitted tokens are not
     * used, so that commit sees what the views saw when tokens come one by
     * one. */
    int max_depth = base + n - 1;
    for (int j = 0; j < base + n && !chain; j++)
        if (s->pending_depth[j] > max_depth) max_depth = s->pending_depth[j];
    s->schedule_at[0] = kv->sched;
    for (int d = 1; d <= max_depth; d++) {
        const int64_t t = committed + d;
        s->schedule_at[d] = s->schedule_at[d - 1];
        ss_schedule_advance(kv, &s->schedule_at[d], t, ss_cache_entropy_force(kv, t, committed), NULL);
    }
    s->plan_base = base;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        ss_status st = plan_row(s, committed, base + i, chain, &s->views[i], s->ancestor_slots, &used, err);
        if (st != SS_OK) return st;
        const int64_t t = s->views[i].pos;
        ss_rotary_table(s->rot_cos + i * stride, s->rot_sin + i * stride, c->rotary_dim, c->rotary_base, t);
        ss_rotary_table(s->pin_cos + i * stride, s->pin_sin + i * stride, c->rotary_dim, c->rotary_base,
                        s->views[i].cache_pos);
    }
    if (kv->policy_state) {
        const ss_batch batch = {committed, s->pending_parent, s->pending_depth, s->schedule_at};
        ss_policy_batch_begin(kv, &batch, base, n);
    }
    /* rows of earlier forwards, when their heavy sets must be replayed */
    if (base > 0 && s->replay_views && ss_policy_batch_mode(kv) != SS_BATCH_FIXED) {
        used = 0;
        for (int j = 0; j < base; j++) {
            ss_status st = plan_row(s, committed, j, 0, &s->replay_views[j], s->replay_anc, &used, err);
            if (st != SS_OK) return st;
        }
    }
    return SS_OK;
}

/* Runs a planned batch: logits (and final hidden states) of the last n_out. */
static ss_status run_planned(const ss_model *m, ss_state *s, const int32_t *tokens, int n, float *logits,
                             float *hidden, int n_out, ss_error *err) {
    ss_kv_cache *kv = &s->cache;
    for (int i = 0; i < n; i++) ss_cache_begin_token(kv, s->views[i].index, tokens[i]);
    ss_status st = m->device == SS_DEVICE_CUDA ? ss_cuda_run_batch(m, s, tokens, n, logits, hidden, n_out, err)
                                               : ss_cpu_run_batch(m, s, tokens, n, logits, hidden, n_out, err);
    if (st == SS_OK) s->last_visible = ss_state_row_visible(s, n - 1);
    if (st == SS_OK && kv->entropy && logits)
        for (int i = n - n_out; i < n; i++)
            kv->entropy[ss_cache_slot(kv, s->views[i].index)] =
                entropy_of(logits + (size_t)(i - (n - n_out)) * m->cfg.vocab_rows, m->cfg.vocab_rows);
    return st;
}

/* The CPU backend: embedding, layers, final LN and unembedding of a batch. */
ss_status ss_cpu_run_batch(const ss_model *m, ss_state *s, const int32_t *tokens, int n, float *logits,
                           float *hidden, int n_out, ss_error *err) {
    (void)err;
    const ss_model_config *c = &m->cfg;
    const int d = c->d_model;
    const size_t es = (size_t)ss_format_of(m->etype)->bits / 8; /* a checkpoint dtype */
    for (int i = 0; i < n; i++)
        ss_convert_to_f32(s->x + (size_t)i * d, (const char *)m->embed_in + (size_t)tokens[i] * d * es,
                          m->etype, (size_t)d);
    for (int li = 0; li < c->n_layer; li++) layer_forward(m, s, li, s->plan_base, n);
    if ((logits || hidden) && n_out > 0) {
        const int first = n - n_out;
        for (int i = first; i < n; i++)
            ss_layernorm(s->h + (size_t)(i - first) * d, s->x + (size_t)i * d, m->final_ln_w, m->final_ln_b, d,
                         c->layer_norm_eps);
        if (hidden) memcpy(hidden, s->h, (size_t)n_out * d * sizeof(float));
        if (logits) ss_matmul(logits, s->h, n_out, d, m->embed_out, m->wtype, c->vocab_rows, NULL);
    }
    return SS_OK;
}

/* Sliding window with re-computation: every token whose logits are wanted
 * re-encodes the `window` tokens ending at it (committed history, then its
 * ancestors among the pending tokens), at positions 0..window-1, in a fresh
 * cache. Nothing carries over from one token to the next but the token
 * history, so a prompt token whose logits nobody reads is only recorded: a
 * W-token prompt costs one window, not W of them. */
static ss_status forward_recompute(const ss_model *m, ss_state *s, int base, int n, float *logits, float *hidden,
                                   int n_out, ss_error *err) {
    const int64_t W = s->cache.cfg.window, V = m->cfg.vocab_rows, D = m->cfg.d_model;
    int32_t *window = s->window_ids;
    ss_status st = SS_OK;
    for (int i = n - n_out; i < n && st == SS_OK && (logits || hidden); i++) {
        const int j = base + i;
        const int64_t t = s->committed + s->pending_depth[j], start = ss_max64(0, t - W + 1), len = t - start + 1;
        int64_t w = len;
        for (int a = j; a >= 0 && w > 0; a = s->pending_parent[a]) window[--w] = s->pending_token[a];
        for (int64_t p = s->committed - 1; w > 0; p--) window[--w] = s->history[p % s->history_cap];
        ss_cache_reset(&s->cache);
        for (int64_t c0 = 0; c0 < len && st == SS_OK; c0 += s->batch) {
            const int chunk = (int)ss_min64(s->batch, len - c0), last = c0 + chunk == len;
            const size_t row = (size_t)(i - (n - n_out));
            st = plan_views(s, c0, 0, chunk, 1, err); /* recompute caches never evict */
            if (st == SS_OK)
                st = run_planned(m, s, window + c0, chunk, last && logits ? logits + row * V : NULL,
                                 last && hidden ? hidden + row * D : NULL, last, err);
        }
    }
    return st;
}

/* Appends the n tokens to the pending tree: token i's parent is parents[i]
 * (a pending index, -1: the last committed token), or, without parents,
 * the pending token before it (a chain). */
static ss_status extend_pending(ss_state *s, const int32_t *tokens, const int32_t *parents, int n, ss_error *err) {
    const int base = s->n_pending;
    for (int i = 0; i < n && parents; i++) {
        const int j = base + i, p = parents[i];
        if (p < -1 || p >= j)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                           "parent %d of token %d must be -1 or an earlier pending token (< %d)", p, i, j);
    }
    for (int i = 0; i < n; i++) {
        const int j = base + i, p = parents ? parents[i] : j - 1;
        s->pending_parent[j] = p;
        s->pending_depth[j] = p < 0 ? 0 : s->pending_depth[p] + 1;
        s->pending_token[j] = tokens[i];
        s->pending_chain = s->pending_chain && p == j - 1;
    }
    return SS_OK;
}

ss_status ss_forward_tree(const ss_model *m, ss_state *s, const int32_t *tokens, const int32_t *parents, int n,
                          float *logits, float *hidden, int n_out, ss_error *err) {
    if (!m || !s || !tokens) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "NULL argument");
    if (m != s->model) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "state belongs to another model");
    if (n < 1) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "no tokens given (empty input)");
    if (n_out < 0 || n_out > n)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "n_out must be in [0, %d], got %d", n, n_out);
    if (s->n_pending + n > s->max_pending)
        return ss_fail(err, SS_ERR_CAPACITY, "%d uncommitted tokens exceed the state's batch limit of %d",
                       s->n_pending + n, s->max_pending);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_rows)
            return ss_fail(err, SS_ERR_OUT_OF_RANGE, "token id %d at index %d is outside the vocabulary [0, %d)",
                           tokens[i], i, m->cfg.vocab_rows);
    const int base = s->n_pending, was_chain = s->pending_chain;
    ss_status st = extend_pending(s, tokens, parents, n, err);
    if (st == SS_OK) {
        if (s->cache.cfg.policy == SS_CACHE_RECOMPUTE) {
            st = forward_recompute(m, s, base, n, logits, hidden, n_out, err);
        } else {
            st = plan_views(s, s->committed, base, n, s->pending_chain, err);
            if (st == SS_OK) st = run_planned(m, s, tokens, n, logits, hidden, n_out, err);
        }
    }
    if (st == SS_OK) {
        s->n_pending += n;
    } else {
        s->pending_chain = was_chain; /* the pending tokens stay as they were */
    }
    return st;
}

ss_status ss_forward(const ss_model *m, ss_state *s, const int32_t *tokens, int n, float *logits, int n_out,
                     ss_error *err) {
    return ss_forward_tree(m, s, tokens, NULL, n, logits, NULL, n_out, err);
}

static void record_eviction(ss_state *s, int64_t step, int dropped, int64_t kept) {
    if (s->n_events == s->cap_events) {
        const size_t cap = s->cap_events ? 2 * s->cap_events : 256;
        ss_eviction *grown = realloc(s->events, cap * sizeof *grown);
        if (!grown) return; /* the log is best effort; decoding is not */
        s->events = grown;
        s->cap_events = cap;
    }
    s->events[s->n_events++] = (ss_eviction){step, dropped, (int32_t)kept};
}

ss_status ss_state_rollback(ss_state *s, int n, ss_error *err) {
    if (n < 0 || n > s->n_pending)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "cannot roll back %d tokens: %d are pending", n, s->n_pending);
    /* parents precede their children, so the newest tokens are never the
     * parents of those that stay */
    s->n_pending -= n;
    s->pending_chain = 1;
    for (int j = 0; j < s->n_pending; j++) s->pending_chain = s->pending_chain && s->pending_parent[j] == j - 1;
    return SS_OK;
}

/* Folds the attention of the committed query at position t (pending row
 * `row` when it was computed) into the scores, over the keys it saw as
 * committed: the probabilities are recomputed from its saved queries, bit
 * for bit what its forward computed (the same keys in the same order). */
static void fold_query(ss_state *s, int64_t t, int row) {
    ss_kv_cache *kv = &s->cache;
    const int L = s->model->cfg.n_layer, H = s->model->cfg.n_head, hd = s->model->head_dim;
    ss_view view;
    ss_cache_view(kv, &kv->sched, t, t, t + 1, &view, NULL); /* committed: always fits */
    /* The first committed token saw, in its forward, what it sees now (no
     * eviction came between): its probabilities are reused, with its own
     * key's slot where acceptance moved it. */
    const int reuse = t == s->committed;
    const int32_t moved_from = (int32_t)ss_cache_slot(kv, s->committed + row), moved_to = (int32_t)ss_cache_slot(kv, t);
#pragma omp parallel for collapse(2) schedule(static) num_threads(s->n_threads) if (L * H >= 8 && !reuse)
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < H; h++) {
            const int tid = omp_get_thread_num(), n_heavy = kv->n_heavy[(size_t)l * H + h];
            const size_t first = ((size_t)l * H + h) * s->key_cap;
            float *probs = s->probs + (size_t)tid * s->key_cap;
            int32_t *loc = s->loc + (size_t)tid * s->key_cap;
            int n_keys;
            if (reuse) {
                probs = s->first_probs + first;
                loc = s->first_loc + first;
                n_keys = s->first_n[first / s->key_cap];
                if (moved_from != moved_to)
                    for (int j = 0; j < n_keys; j++)
                        if (loc[j] == moved_from) loc[j] = moved_to;
            } else {
                const ss_runs_scratch scratch = runs_scratch(s, tid);
                const ss_query q = query_of(s, saved_q(s, row, l, h), NULL, t, tid);
                ss_kv_run runs[5];
                const int n_runs = ss_cache_runs(kv, l, h, &view, NULL, ss_cache_heavy(kv, l, h), n_heavy, &q,
                                                 &scratch, runs, loc, &n_keys);
                ss_attention_probs(runs, n_runs, hd, 1.0f / sqrtf((float)hd), ss_cache_rotation(kv), probs);
            }
            ss_policy_commit_probs(kv, l, h, loc, probs, n_keys, outside_mass(kv, &view, n_heavy, probs));
        }
    }
}

/* Applies the evictions the newly committed tokens imply, token by token:
 * each committed query's attention is folded into the scores after the
 * eviction before it, as sequential decoding would. */
static void apply_evictions(ss_state *s) {
    ss_kv_cache *kv = &s->cache;
    const int64_t end = s->committed + s->n_pending;
    if (kv->cfg.policy != SS_CACHE_RECOMPUTE) {
        /* The eviction before the first committed token was applied by the
         * previous commit; those before each later one and before the next
         * token to come are applied now. */
        for (int64_t t = s->committed; t <= end; t++) {
            if (t > s->committed) {
                int64_t kept = 0;
                const int64_t first = kv->sched.first;
                const int dropped = ss_schedule_advance(kv, &kv->sched, t, ss_cache_entropy_force(kv, t, end), &kept);
                if (dropped > 0) {
                    ss_policy_commit_eviction(kv, first, dropped);
                    if (s->record) record_eviction(s, t, dropped, kept);
                }
            }
            if (t < end && s->q_saved) fold_query(s, t, s->fold_src[t - s->committed]);
        }
    } else {
        for (int j = 0; j < s->n_pending; j++)
            s->history[(s->committed + j) % s->history_cap] = s->pending_token[j];
    }
    s->committed = end;
    s->n_pending = 0;
    s->pending_chain = 1;
}

ss_status ss_state_accept(ss_state *s, const int32_t *path, int n, ss_error *err) {
    if (n < 0 || n > s->n_pending || (n > 0 && !path))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "an accepted path of %d tokens (%d are pending)", n,
                       s->n_pending);
    for (int d = 0; d < n; d++) {
        const int j = path[d], want = d == 0 ? -1 : path[d - 1];
        if (j < 0 || j >= s->n_pending || s->pending_parent[j] != want)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                           "accepted token %d (pending index %d) is not a child of the one before it", d, j);
    }
    /* Path token d moves from stream index committed + path[d] to committed
     * + d; path[d] >= d and sources lie ahead of every later destination, so
     * moving in order never overwrites a source still to be read. */
    for (int d = 0; d < n; d++) {
        if (path[d] != d && s->cache.cfg.policy != SS_CACHE_RECOMPUTE)
            ss_cache_move(&s->cache, s->committed + path[d], s->committed + d);
        s->pending_token[d] = s->pending_token[path[d]];
        s->fold_src[d] = path[d];
        s->pending_parent[d] = d - 1;
        s->pending_depth[d] = d;
    }
    s->n_pending = n;
    apply_evictions(s);
    return SS_OK;
}

ss_status ss_state_commit(ss_state *s, ss_error *err) {
    if (!s->pending_chain)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "the pending tokens branch: accept a path of them (ss_state_accept) instead");
    for (int j = 0; j < s->n_pending; j++) s->fold_src[j] = j;
    apply_evictions(s);
    return SS_OK;
}
