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
#include "common.h"
#include "kernels/cpu/kernels.h"
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
    ss_status st = ss_cache_init(&s->cache, &inner, c->n_layer, c->n_head, model->head_dim, c->rotary_dim,
                                 c->rotary_base, c->vocab_rows,
                                 cache->policy == SS_CACHE_RECOMPUTE ? s->batch : max_batch, s->n_threads, err);
    if (st != SS_OK) {
        ss_free(s->history);
        ss_free(s->window_ids);
        free(s);
        return st;
    }
    const size_t B = (size_t)s->batch, d = (size_t)c->d_model, half = (size_t)c->rotary_dim / 2 + 1;
    s->x = ss_alloc(B * d, sizeof(float));
    s->h = ss_alloc(B * d, sizeof(float));
    s->qkv = ss_alloc(B * 3 * d, sizeof(float));
    s->q_pinned = ss_alloc(B * d, sizeof(float));
    s->attn = ss_alloc(B * d, sizeof(float));
    s->proj = ss_alloc(B * d, sizeof(float));
    s->ff = ss_alloc(B * (size_t)c->d_ff, sizeof(float));
    s->rot_cos = ss_alloc(B * half, sizeof(float));
    s->rot_sin = ss_alloc(B * half, sizeof(float));
    s->pin_cos = ss_alloc(B * half, sizeof(float));
    s->pin_sin = ss_alloc(B * half, sizeof(float));
    s->views = ss_alloc(B, sizeof(ss_view));
    s->ancestor_slots = ss_alloc(ss_ancestor_capacity(max_batch), sizeof(int32_t));
    s->schedule_at = ss_alloc(B, sizeof(ss_schedule));
    s->pending_parent = ss_alloc((size_t)max_batch, sizeof(int32_t));
    s->pending_depth = ss_alloc((size_t)max_batch, sizeof(int32_t));
    s->pending_token = ss_alloc((size_t)max_batch, sizeof(int32_t));
    s->scores = ss_alloc((size_t)s->n_threads * (size_t)s->cache.slots, sizeof(float));
    s->pending_chain = 1;
    if (!s->x || !s->h || !s->qkv || !s->q_pinned || !s->attn || !s->proj || !s->ff || !s->rot_cos ||
        !s->rot_sin || !s->pin_cos || !s->pin_sin || !s->views || !s->scores || !s->ancestor_slots ||
        !s->schedule_at || !s->pending_parent || !s->pending_depth || !s->pending_token ||
        (cache->policy == SS_CACHE_RECOMPUTE && (!s->history || !s->window_ids))) {
        ss_state_free(s);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate scratch memory for a batch of %d", max_batch);
    }
    if (model->device == SS_DEVICE_CUDA && (s->cache.dyn_cap > 0 || s->cache.acc)) {
        ss_state_free(s);
        return ss_fail(err, SS_ERR_UNSUPPORTED,
                       "refresh tokens and score-based policies (h2o, snapkv, keynorm) run on the CPU only");
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
    void *bufs[] = {s->history, s->window_ids, s->events, s->x, s->h, s->qkv, s->q_pinned, s->attn, s->proj, s->ff,
                    s->rot_cos, s->rot_sin, s->pin_cos, s->pin_sin, s->views, s->scores, s->ancestor_slots,
                    s->schedule_at, s->pending_parent, s->pending_depth, s->pending_token};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(s);
}

int64_t ss_state_length(const ss_state *s) { return s->committed + s->n_pending; }
size_t ss_state_cache_bytes(const ss_state *s) { return ss_cache_bytes(&s->cache); }
int ss_state_visible(const ss_state *s) { return s->last_visible; }
int ss_state_max_batch(const ss_state *s) { return s->max_pending; }

const ss_eviction *ss_state_evictions(const ss_state *s, size_t *count) {
    *count = s->n_events;
    return s->events;
}

void ss_state_record_evictions(ss_state *s, int on) { s->record = on; }

void ss_state_clear_evictions(ss_state *s) { s->n_events = 0; }

/* ----------------------------------------------------------- the layers */

static void attention(const ss_model *m, ss_state *s, int layer, int n) {
    const ss_model_config *c = &m->cfg;
    const int hd = m->head_dim, d = c->d_model, half = c->rotary_dim / 2;
    const size_t stride = (size_t)half + 1;
    const float scale = 1.0f / sqrtf((float)hd);
    ss_kv_cache *kv = &s->cache;

    /* Rotate q and k, store k and v. The GPT-NeoX QKV output is laid out per
     * head as [q | k | v]. Cheap: threads only for large batches. */
    const int threads = s->n_threads;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (n * c->n_head >= 256)
    for (int i = 0; i < n; i++) {
        for (int h = 0; h < c->n_head; h++) {
            const ss_view *view = &s->views[i];
            float *q = s->qkv + (size_t)i * 3 * d + (size_t)h * 3 * hd;
            float *k = q + hd, *v = k + hd;
            const float *cs = s->rot_cos + i * stride, *sn = s->rot_sin + i * stride;
            float *qp = s->q_pinned + (size_t)i * d + (size_t)h * hd;
            memcpy(qp, q, (size_t)hd * sizeof(float));
            ss_rotary(qp, c->rotary_dim, s->pin_cos + i * stride, s->pin_sin + i * stride);
            ss_rotary(q, c->rotary_dim, cs, sn);
            ss_rotary(k, c->rotary_dim, cs, sn);
            memcpy(ss_cache_key(kv, layer, h, view->index), k, (size_t)hd * sizeof(float));
            memcpy(ss_cache_value(kv, layer, h, view->index), v, (size_t)hd * sizeof(float));
            if (kv->track_keynorm) {
                float *acc = kv->acc + (size_t)omp_get_thread_num() * kv->slots;
                acc[ss_cache_slot(kv, view->index)] += sqrtf(ss_dot(k, k, hd));
            }
        }
    }
    /* Threads only pay off when there is enough attention work (keys x dims). */
    const int64_t work = (int64_t)n * c->n_head * hd * ss_view_keys(&s->views[n - 1]);
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (work >= (1 << 15))
    for (int i = 0; i < n; i++) {
        for (int h = 0; h < c->n_head; h++) {
            const float *q = s->qkv + (size_t)i * 3 * d + (size_t)h * 3 * hd;
            const float *qp = s->q_pinned + (size_t)i * d + (size_t)h * hd;
            ss_kv_run runs[4];
            const int tid = omp_get_thread_num();
            float *acc = kv->track_attention ? kv->acc + (size_t)tid * kv->slots : NULL;
            const int nr = ss_cache_runs(kv, layer, h, &s->views[i], s->ancestor_slots, qp, q, acc, runs);
            float *scores = s->scores + (size_t)tid * kv->slots;
            ss_attend(s->attn + (size_t)i * d + (size_t)h * hd, runs, nr, hd, scale, scores);
        }
    }
}

static void layer_forward(const ss_model *m, ss_state *s, int li, int n) {
    const ss_model_config *c = &m->cfg;
    const ss_layer *L = &m->layers[li];
    const int d = c->d_model, ff = c->d_ff;
    for (int i = 0; i < n; i++)
        ss_layernorm(s->h + (size_t)i * d, s->x + (size_t)i * d, L->ln1_w, L->ln1_b, d, c->layer_norm_eps);
    ss_matmul(s->qkv, s->h, n, d, L->qkv_w, m->wtype, 3 * d, L->qkv_b);
    attention(m, s, li, n);
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

/* Views of a batch of n tokens at pending indices base.. (their depths,
 * parents and the committed length `committed` say where they sit), with
 * their rotary tables; a chain's tokens see one window run through
 * themselves, a tree token the committed window and then its ancestors. */
static ss_status plan_views(ss_state *s, int64_t committed, int base, int n, int chain, ss_error *err) {
    const ss_model_config *c = &s->model->cfg;
    const size_t stride = (size_t)c->rotary_dim / 2 + 1;
    ss_kv_cache *kv = &s->cache;
    /* The committed schedule is advanced for position `committed`; later
     * positions advance a copy. Entropies of uncommitted tokens are not
     * used, so that commit sees what the views saw when tokens come one by
     * one. */
    int max_depth = 0;
    for (int i = 0; i < n; i++) {
        const int depth = chain ? base + i : s->pending_depth[base + i];
        if (depth > max_depth) max_depth = depth;
    }
    s->schedule_at[0] = kv->sched;
    for (int d = 1; d <= max_depth; d++) {
        const int64_t t = committed + d;
        s->schedule_at[d] = s->schedule_at[d - 1];
        ss_schedule_advance(kv, &s->schedule_at[d], t, ss_cache_entropy_force(kv, t, committed), NULL);
    }
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        const int j = base + i, depth = chain ? j : s->pending_depth[j];
        const int64_t t = committed + depth, index = committed + j;
        ss_view *view = &s->views[i];
        ss_status st = ss_cache_view(kv, &s->schedule_at[depth], t, index, chain ? index + 1 : committed, view, err);
        if (st != SS_OK) return st;
        if (!chain) { /* visible ancestors, root first, the token itself last */
            int32_t *list = s->ancestor_slots + used;
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
            view->anc_first = (int)used;
            view->n_anc = count;
            used += (size_t)count;
        }
        ss_rotary_table(s->rot_cos + i * stride, s->rot_sin + i * stride, c->rotary_dim, c->rotary_base, t);
        ss_rotary_table(s->pin_cos + i * stride, s->pin_sin + i * stride, c->rotary_dim, c->rotary_base,
                        view->cache_pos);
    }
    return SS_OK;
}

/* Runs a planned batch: logits (and final hidden states) of the last n_out. */
static ss_status run_planned(const ss_model *m, ss_state *s, const int32_t *tokens, int n, float *logits,
                             float *hidden, int n_out, ss_error *err) {
    ss_kv_cache *kv = &s->cache;
    for (int i = 0; i < n; i++) ss_cache_begin_token(kv, s->views[i].index, tokens[i]);
    s->last_visible = ss_view_keys(&s->views[n - 1]);
    ss_status st = m->device == SS_DEVICE_CUDA ? ss_cuda_run_batch(m, s, tokens, n, logits, hidden, n_out, err)
                                               : ss_cpu_run_batch(m, s, tokens, n, logits, hidden, n_out, err);
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
    const size_t es = ss_dtype_size(m->etype);
    for (int i = 0; i < n; i++)
        ss_convert_to_f32(s->x + (size_t)i * d, (const char *)m->embed_in + (size_t)tokens[i] * d * es,
                          m->etype, (size_t)d);
    for (int li = 0; li < c->n_layer; li++) layer_forward(m, s, li, n);
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

/* Applies the evictions the newly committed tokens imply. */
static void apply_evictions(ss_state *s) {
    ss_kv_cache *kv = &s->cache;
    const int64_t end = s->committed + s->n_pending;
    if (kv->cfg.policy != SS_CACHE_RECOMPUTE) {
        ss_cache_collect_scores(kv);
        /* Evictions due before each committed token after the first, and
         * before the next token to come: scores and entropies are complete. */
        for (int64_t t = s->committed + 1; t <= end; t++) {
            int64_t kept = 0;
            const int64_t first = kv->sched.first;
            const int dropped = ss_schedule_advance(kv, &kv->sched, t, ss_cache_entropy_force(kv, t, end), &kept);
            if (dropped == 0) continue;
            ss_cache_select(kv, first, dropped);
            if (s->record) record_eviction(s, t, dropped, kept);
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
    apply_evictions(s);
    return SS_OK;
}
