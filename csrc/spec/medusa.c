/* Medusa heads (Cai et al. 2024) and their drafter.
 *
 * Head i reads the target's final hidden state x of the last verified token
 * and predicts the token i + 2 places ahead (the target's own head predicts
 * the next one): logits_i = lm_head_i(x + SiLU(w_i x + b_i)). Heads without
 * an lm_head of their own share the target's embed_out, so all of them go
 * through it in one batched product (one read of the unembedding).
 *
 * The drafter proposes a tree: the root's children are head 1's most
 * probable tokens, their children head 2's, and so on to depth k, the
 * max_nodes most probable paths kept (tree_select.h; children are generated
 * when their parent is kept). Each depth's candidates were drawn from that
 * head's distribution, which verification uses as q, so sampled output is
 * the target's distribution exactly -- where the Medusa paper verifies with
 * its lossy "typical acceptance", this is the lossless rule. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels/cpu/kernels.h"
#include "model/model.h"
#include "spec/drafter.h"
#include "spec/tree_select.h"

struct ss_medusa {
    const ss_model *target;
    int n_heads, d, vocab_rows;
    float *w;          /* [n_heads][d][d]                                    */
    float *b;          /* [n_heads][d]                                       */
    float **lm_head;   /* [n_heads]: [vocab_rows][d] of its own, or NULL     */
};

int ss_medusa_n_heads(const ss_medusa *m) { return m->n_heads; }

void ss_medusa_free(ss_medusa *m) {
    if (!m) return;
    for (int i = 0; m->lm_head && i < m->n_heads; i++) ss_free(m->lm_head[i]);
    ss_free(m->lm_head);
    ss_free(m->w);
    ss_free(m->b);
    free(m);
}

/* Head `head`'s tensor `what` as an f32 copy in dst, after checking its
 * shape against the target's. */
static ss_status take(const ss_tensor *t, int64_t rows, int64_t cols, float *dst, int head, const char *what,
                      ss_error *err) {
    if (!t->data) return ss_fail(err, SS_ERR_SHAPE, "Medusa head %d: tensor %s is missing", head, what);
    if (t->rows != rows || t->cols != cols)
        return ss_fail(err, SS_ERR_SHAPE,
                       "Medusa head %d: tensor %s has shape [%lld, %lld], the target model implies [%lld, %lld] "
                       "(heads must match its hidden size and vocabulary)",
                       head, what, (long long)t->rows, (long long)t->cols, (long long)rows, (long long)cols);
    if (t->dtype != SS_F32 && t->dtype != SS_F16 && t->dtype != SS_BF16)
        return ss_fail(err, SS_ERR_SHAPE, "Medusa head %d: tensor %s has an unsupported dtype", head, what);
    ss_convert_to_f32(dst, t->data, t->dtype, (size_t)(rows * cols));
    return SS_OK;
}

ss_status ss_medusa_create(const ss_model *target, const ss_medusa_head_weights *heads, int n_heads,
                           ss_medusa **out, ss_error *err) {
    *out = NULL;
    if (!target || !heads) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "NULL argument");
    if (n_heads < 1 || n_heads > SS_MAX_DEPTH)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "Medusa needs 1 to %d heads, got %d", SS_MAX_DEPTH, n_heads);
    ss_medusa *m = calloc(1, sizeof *m);
    if (!m) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate Medusa heads");
    const ss_model_config *c = ss_model_get_config(target);
    m->target = target;
    m->n_heads = n_heads;
    m->d = c->d_model;
    m->vocab_rows = c->vocab_rows;
    const size_t d = (size_t)m->d;
    m->w = ss_alloc((size_t)n_heads * d * d, sizeof(float));
    m->b = ss_alloc((size_t)n_heads * d, sizeof(float));
    m->lm_head = ss_alloc((size_t)n_heads, sizeof(float *));
    ss_status st = m->w && m->b && m->lm_head ? SS_OK : ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate Medusa heads");
    for (int i = 0; i < n_heads && st == SS_OK; i++) {
        st = take(&heads[i].w, m->d, m->d, m->w + (size_t)i * d * d, i, "w", err);
        if (st == SS_OK) st = take(&heads[i].b, m->d, 1, m->b + (size_t)i * d, i, "b", err);
        if (st == SS_OK && heads[i].lm_head.data) {
            m->lm_head[i] = ss_alloc((size_t)m->vocab_rows * d, sizeof(float));
            st = m->lm_head[i] ? take(&heads[i].lm_head, m->vocab_rows, m->d, m->lm_head[i], i, "lm_head", err)
                               : ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate Medusa head %d", i);
        }
    }
    if (st != SS_OK) {
        ss_medusa_free(m);
        return st;
    }
    *out = m;
    return SS_OK;
}

/* logits [n][vocab_rows] of the first n heads; work: n * d floats. */
static void head_logits(const ss_medusa *m, const float *x, int n, float *work, float *logits) {
    const size_t d = (size_t)m->d;
    for (int i = 0; i < n; i++) {
        float *h = work + (size_t)i * d;
        ss_matmul(h, x, 1, m->d, m->w + (size_t)i * d * d, SS_F32, m->d, m->b + (size_t)i * d);
        for (size_t e = 0; e < d; e++) h[e] = x[e] + h[e] / (1.0f + expf(-h[e]));
    }
    int shared = 0;
    for (int i = 0; i < n; i++) {
        float *row = logits + (size_t)i * m->vocab_rows;
        if (m->lm_head[i]) ss_matmul(row, work + (size_t)i * d, 1, m->d, m->lm_head[i], SS_F32, m->vocab_rows, NULL);
        else shared++;
    }
    if (shared == n) { /* one read of the unembedding for every head */
        ss_matmul(logits, work, n, m->d, m->target->embed_out, m->target->wtype, m->vocab_rows, NULL);
        return;
    }
    for (int i = 0; i < n; i++)
        if (!m->lm_head[i])
            ss_matmul(logits + (size_t)i * m->vocab_rows, work + (size_t)i * d, 1, m->d, m->target->embed_out,
                      m->target->wtype, m->vocab_rows, NULL);
}

ss_status ss_medusa_logits(const ss_medusa *m, const float *hidden, float *logits, ss_error *err) {
    float *work = ss_alloc((size_t)m->n_heads * m->d, sizeof(float));
    if (!work) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate Medusa scratch");
    head_logits(m, hidden, m->n_heads, work, logits);
    ss_free(work);
    return SS_OK;
}

/* ------------------------------------------------------------ drafter */

typedef struct {
    ss_drafter base;
    const ss_medusa *heads;
    int k, branch, max_nodes;
    float *hidden;        /* [d]: the target's state at the last verified token */
    float *work;          /* [k][d]                                            */
    float *logits;        /* [k][vocab_rows]                                   */
    float *dist;          /* [k][vocab]: each head's distribution              */
    float *draw;          /* [vocab]                                           */
    ss_candidates cand;
    int32_t *kept_of_node;
    /* while proposing */
    const ss_draft_context *ctx;
} medusa_drafter;

static int max_nodes(const ss_drafter *d) { return ((const medusa_drafter *)d)->max_nodes; }

static ss_status prefill(ss_drafter *d, const int32_t *prompt, int64_t n, const volatile int *cancel, ss_error *err) {
    (void)d; (void)prompt; (void)n; (void)cancel; (void)err;
    return SS_OK;
}

/* A kept node of depth < k gets its children from the next head. */
static void expand(void *ctx, ss_candidates *c, int i) {
    medusa_drafter *m = ctx;
    const int depth = c->depth[i];
    if (depth >= m->k) return;
    ss_candidates_expand(c, i, m->dist + (size_t)depth * m->ctx->vocab, m->ctx->vocab, m->branch,
                         m->ctx->sampling->temperature <= 0.0f, m->ctx->rng, m->draw);
}

static ss_status propose(ss_drafter *d, const ss_draft_context *ctx, ss_draft_tree *tree, ss_error *err) {
    medusa_drafter *m = (medusa_drafter *)d;
    (void)err;
    head_logits(m->heads, m->hidden, m->k, m->work, m->logits);
    const ss_sampling softmax = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
    const ss_sampling *how = ctx->sampling->temperature > 0.0f ? ctx->sampling : &softmax;
    for (int i = 0; i < m->k; i++)
        ss_sampling_probs(m->logits + (size_t)i * m->heads->vocab_rows, ctx->vocab, how,
                          m->dist + (size_t)i * ctx->vocab, ctx->scratch);
    m->ctx = ctx;
    ss_candidates_reset(&m->cand);
    ss_candidates_expand(&m->cand, -1, m->dist, ctx->vocab, m->branch, ctx->sampling->temperature <= 0.0f, ctx->rng,
                         m->draw);
    ss_candidates_select(&m->cand, m->max_nodes, expand, m, tree, m->kept_of_node);
    return SS_OK;
}

static ss_status accept(ss_drafter *d, const ss_draft_context *ctx, const ss_draft_tree *tree, const ss_verdict *v,
                        ss_error *err) {
    medusa_drafter *m = (medusa_drafter *)d;
    (void)ctx; (void)tree; (void)err;
    const int row = v->n_path > 0 ? 1 + v->path[v->n_path - 1] : 0;
    memcpy(m->hidden, v->hidden + (size_t)row * m->heads->d, (size_t)m->heads->d * sizeof(float));
    return SS_OK;
}

static size_t cache_bytes(const ss_drafter *d) {
    (void)d;
    return 0;
}

static void release(ss_drafter *d) {
    medusa_drafter *m = (medusa_drafter *)d;
    ss_candidates_free(&m->cand);
    void *bufs[] = {m->hidden, m->work, m->logits, m->dist, m->draw, m->kept_of_node};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(m);
}

static const ss_drafter_ops ops = {
    .name = "medusa",
    .wants_hidden = 1,
    .max_nodes = max_nodes,
    .prefill = prefill,
    .propose = propose,
    .accept = accept,
    .cache_bytes = cache_bytes,
    .free = release,
};

ss_status ss_drafter_medusa(const ss_draft_sources *src, ss_drafter **out, ss_error *err) {
    const ss_speculative *spec = src->spec;
    const ss_medusa *heads = src->medusa;
    if (!heads) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "the medusa method needs Medusa heads");
    if (heads->target != src->target)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "these Medusa heads were made for another target model");
    if (spec->k > heads->n_heads)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "SpeculativeConfig.k (%d) exceeds the %d Medusa heads", spec->k,
                       heads->n_heads);
    medusa_drafter *m = calloc(1, sizeof *m);
    if (!m) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the drafter");
    m->base.ops = &ops;
    m->heads = heads;
    m->k = spec->k;
    m->branch = spec->branch;
    m->max_nodes = spec->max_nodes;
    const size_t d = (size_t)heads->d, V = (size_t)heads->vocab_rows;
    m->hidden = ss_alloc(d, sizeof(float));
    m->work = ss_alloc((size_t)m->k * d, sizeof(float));
    m->logits = ss_alloc((size_t)m->k * V, sizeof(float));
    m->dist = ss_alloc((size_t)m->k * V, sizeof(float));
    m->draw = ss_alloc(V, sizeof(float));
    m->kept_of_node = ss_alloc(SS_MAX_TREE_NODES, sizeof(int32_t));
    /* every kept node may be expanded: branch children each */
    ss_status st = ss_candidates_init(&m->cand, m->branch * (m->max_nodes + 1), err);
    if (st == SS_OK && (!m->hidden || !m->work || !m->logits || !m->dist || !m->draw || !m->kept_of_node))
        st = ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the drafter's buffers");
    if (st != SS_OK) {
        release(&m->base);
        return st;
    }
    *out = &m->base;
    return SS_OK;
}
