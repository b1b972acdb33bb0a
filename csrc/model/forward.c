/* The forward pass: n new tokens through every layer against a sequence's KV
 * cache (ss_state).
 *
 *   token -> embed -> per layer: LN -> QKV -> rotary -> store K,V -> attention
 *   over what the cache policy shows -> out proj (+ parallel-residual MLP)
 *   -> final LN -> unembed -> logits
 *
 * Scratch memory is allocated once per state, so decoding never allocates. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cache/kv_cache.h"
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
        s->history_cap = (int64_t)cache->window + max_batch;
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
    s->scores = ss_alloc((size_t)s->n_threads * (size_t)s->cache.slots, sizeof(float));
    if (!s->x || !s->h || !s->qkv || !s->q_pinned || !s->attn || !s->proj || !s->ff || !s->rot_cos ||
        !s->rot_sin || !s->pin_cos || !s->pin_sin || !s->views || !s->scores ||
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
                    s->rot_cos, s->rot_sin, s->pin_cos, s->pin_sin, s->views, s->scores};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(s);
}

int64_t ss_state_length(const ss_state *s) { return s->length; }
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
            memcpy(ss_cache_key(kv, layer, h, view->pos), k, (size_t)hd * sizeof(float));
            memcpy(ss_cache_value(kv, layer, h, view->pos), v, (size_t)hd * sizeof(float));
            if (kv->track_keynorm) {
                float *acc = kv->acc + (size_t)omp_get_thread_num() * kv->slots;
                acc[ss_cache_slot(kv, view->pos)] += sqrtf(ss_dot(k, k, hd));
            }
        }
    }
    /* Threads only pay off when there is enough attention work (keys x dims). */
    const int64_t work = (int64_t)n * c->n_head * hd * (s->views[n - 1].pos - s->views[n - 1].lo + 1 + s->views[n - 1].n_pinned);
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (work >= (1 << 15))
    for (int i = 0; i < n; i++) {
        for (int h = 0; h < c->n_head; h++) {
            const float *q = s->qkv + (size_t)i * 3 * d + (size_t)h * 3 * hd;
            const float *qp = s->q_pinned + (size_t)i * d + (size_t)h * hd;
            ss_kv_run runs[3];
            const int tid = omp_get_thread_num();
            float *acc = kv->track_attention ? kv->acc + (size_t)tid * kv->slots : NULL;
            const int nr = ss_cache_runs(kv, layer, h, &s->views[i], qp, q, acc, runs);
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

/* Tokens at stream positions t0.. into the cache. */
static ss_status forward_tokens(const ss_model *m, ss_state *s, const int32_t *tokens, int n,
                                int64_t t0, float *logits, int n_out, ss_error *err) {
    const ss_model_config *c = &m->cfg;
    const int half = c->rotary_dim / 2;
    const size_t stride = (size_t)half + 1;
    ss_kv_cache *kv = &s->cache;
    /* The committed schedule is advanced for position `committed`; pending
     * tokens before this call, and this batch, advance a copy. Entropies of
     * uncommitted tokens are not used, so that commit sees what the views saw
     * when tokens come one by one. */
    ss_schedule sched = kv->sched;
    for (int64_t t = s->committed + 1; t < t0; t++)
        ss_schedule_advance(kv, &sched, t, ss_cache_entropy_force(kv, t, s->committed), NULL);
    for (int i = 0; i < n; i++) {
        const int64_t t = t0 + i;
        if (t > s->committed) ss_schedule_advance(kv, &sched, t, ss_cache_entropy_force(kv, t, s->committed), NULL);
        ss_status st = ss_cache_view(kv, &sched, t, &s->views[i], err);
        if (st != SS_OK) return st;
        ss_rotary_table(s->rot_cos + i * stride, s->rot_sin + i * stride, c->rotary_dim, c->rotary_base, t0 + i);
        ss_rotary_table(s->pin_cos + i * stride, s->pin_sin + i * stride, c->rotary_dim, c->rotary_base,
                        s->views[i].cache_pos);
    }
    for (int i = 0; i < n; i++) ss_cache_begin_token(kv, t0 + i, tokens[i]);
    const ss_view *last = &s->views[n - 1];
    s->last_visible = last->n_pinned + (int)(last->pos - last->lo + 1 > 0 ? last->pos - last->lo + 1 : 0);
    ss_status st = m->device == SS_DEVICE_CUDA ? ss_cuda_run_batch(m, s, tokens, n, logits, n_out, err)
                                               : ss_cpu_run_batch(m, s, tokens, n, logits, n_out, err);
    if (st == SS_OK && kv->entropy && logits)
        for (int i = n - n_out; i < n; i++)
            kv->entropy[ss_cache_slot(kv, t0 + i)] = entropy_of(logits + (size_t)(i - (n - n_out)) * c->vocab_rows,
                                                                c->vocab_rows);
    return st;
}

/* The CPU backend: embedding, layers, final LN and unembedding of a batch. */
ss_status ss_cpu_run_batch(const ss_model *m, ss_state *s, const int32_t *tokens, int n, float *logits,
                           int n_out, ss_error *err) {
    (void)err;
    const ss_model_config *c = &m->cfg;
    const int d = c->d_model;
    const size_t es = (size_t)ss_format_of(m->etype)->bits / 8; /* a checkpoint dtype */
    for (int i = 0; i < n; i++)
        ss_convert_to_f32(s->x + (size_t)i * d, (const char *)m->embed_in + (size_t)tokens[i] * d * es,
                          m->etype, (size_t)d);
    for (int li = 0; li < c->n_layer; li++) layer_forward(m, s, li, n);
    if (logits && n_out > 0) {
        const int first = n - n_out;
        for (int i = first; i < n; i++)
            ss_layernorm(s->h + (size_t)(i - first) * d, s->x + (size_t)i * d, m->final_ln_w, m->final_ln_b, d,
                         c->layer_norm_eps);
        ss_matmul(logits, s->h, n_out, d, m->embed_out, m->wtype, c->vocab_rows, NULL);
    }
    return SS_OK;
}

/* Sliding window with re-computation: every token whose logits are wanted
 * re-encodes the `window` tokens ending at it, at positions 0..window-1, in
 * a fresh cache. Nothing carries over from one token to the next but the
 * token history, so a prompt token whose logits nobody reads is only
 * recorded: a W-token prompt costs one window, not W of them. */
static ss_status forward_recompute(const ss_model *m, ss_state *s, const int32_t *tokens, int n,
                                   float *logits, int n_out, ss_error *err) {
    const int64_t W = s->cache.cfg.window, V = m->cfg.vocab_rows;
    int32_t *window = s->window_ids;
    ss_status st = SS_OK;
    for (int i = 0; i < n && st == SS_OK; i++) {
        const int64_t t = s->length + i;
        s->history[t % s->history_cap] = tokens[i];
        if (!logits || i < n - n_out) continue;
        const int64_t start = ss_max64(0, t - W + 1), len = t - start + 1;
        for (int64_t j = 0; j < len; j++) window[j] = s->history[(start + j) % s->history_cap];
        ss_cache_reset(&s->cache);
        const int64_t saved_committed = s->committed;
        s->committed = 0;
        for (int64_t j = 0; j < len && st == SS_OK; j += s->batch) {
            const int chunk = (int)ss_min64(s->batch, len - j);
            const int last_chunk = j + chunk == len;
            st = forward_tokens(m, s, window + j, chunk, j,
                                last_chunk ? logits + (size_t)(i - (n - n_out)) * V : NULL, last_chunk, err);
        }
        s->committed = saved_committed;
    }
    return st;
}

ss_status ss_forward(const ss_model *m, ss_state *s, const int32_t *tokens, int n, float *logits,
                     int n_out, ss_error *err) {
    if (!m || !s || !tokens) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "NULL argument");
    if (m != s->model) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "state belongs to another model");
    if (n < 1) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "no tokens given (empty input)");
    if (n_out < 0 || n_out > n)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "n_out must be in [0, %d], got %d", n, n_out);
    if (s->length - s->committed + n > s->max_pending)
        return ss_fail(err, SS_ERR_CAPACITY,
                       "%lld uncommitted tokens exceed the state's batch limit of %d",
                       (long long)(s->length - s->committed + n), s->max_pending);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_rows)
            return ss_fail(err, SS_ERR_OUT_OF_RANGE, "token id %d at index %d is outside the vocabulary [0, %d)",
                           tokens[i], i, m->cfg.vocab_rows);
    ss_status st = s->cache.cfg.policy == SS_CACHE_RECOMPUTE
                       ? forward_recompute(m, s, tokens, n, logits, n_out, err)
                       : forward_tokens(m, s, tokens, n, s->length, logits, n_out, err);
    if (st == SS_OK) s->length += n;
    return st;
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
    if (n < 0 || n > s->length - s->committed)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "cannot roll back %d tokens: %lld are pending", n,
                       (long long)(s->length - s->committed));
    s->length -= n;
    return SS_OK;
}

void ss_state_commit(ss_state *s) {
    ss_kv_cache *kv = &s->cache;
    if (kv->cfg.policy != SS_CACHE_RECOMPUTE) {
        ss_cache_collect_scores(kv);
        /* Evictions due before each committed token after the first, and
         * before the next token to come: scores and entropies are complete. */
        for (int64_t t = s->committed + 1; t <= s->length; t++) {
            int64_t kept = 0;
            const int64_t first = kv->sched.first;
            const int dropped = ss_schedule_advance(kv, &kv->sched, t, ss_cache_entropy_force(kv, t, s->length), &kept);
            if (dropped == 0) continue;
            ss_cache_select(kv, first, dropped);
            if (s->record) record_eviction(s, t, dropped, kept);
        }
    }
    s->committed = s->length;
}
