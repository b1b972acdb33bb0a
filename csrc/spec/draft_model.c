/* The draft-model drafter: a smaller model sharing the target's vocabulary
 * proposes a chain of k tokens (method "draft") or a token tree of depth k
 * (method "tree", EAGLE-2 / SpecInfer style).
 *
 * A tree grows depth by depth: the root's `branch` children are drawn from
 * the draft's distribution after the root; then, at each further depth, the
 * `branch` most probable nodes of the depth before are run through the draft
 * in ONE batched forward with the tree attention mask and each gets `branch`
 * children of its own. The `max_nodes` most probable candidates are kept
 * (tree_select.h). A chain is the tree with branch 1 and max_nodes k, which
 * costs the classic k - 1 single-token draft forwards.
 *
 * The draft keeps its own KV cache: committed tokens it has not seen yet
 * (the root, and an accepted leaf it never ran) are fed first each round;
 * after the verdict the draft accepts the same path among the nodes it ran
 * (ss_state_accept), so rejected branches vanish from its cache too.
 *
 * Adaptive k (chains): the k that maximises expected tokens per unit time,
 * (1 - a^(k+1)) / ((1 - a)(1 + k c)), for EMAs of the acceptance rate a and
 * of the cost ratio c (fixed, the weight-bytes ratio, or measured). */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "spec/drafter.h"
#include "spec/tree_select.h"

typedef struct {
    ss_drafter base;
    const ss_model *model;
    ss_state *state;
    int tree;              /* method "tree" (else a chain)                      */
    int k_cap, branch, max_nodes;
    /* adaptive chains */
    int adaptive, k, k_min, k_max;
    double ema_decay, ema_accept, ema_cost;
    int cost_measured;
    int64_t seen;          /* committed tokens the draft has processed          */
    int fed;               /* committed tokens fed this round (pending 0..fed-1) */
    int vocab_rows;        /* the draft's logits rows                           */
    float *logits;         /* [branch][vocab_rows]: one expansion forward       */
    float *dist;           /* [expanded][vocab]: the distribution after a node   */
    int n_dist;
    float *work;           /* [vocab]                                           */
    ss_candidates cand;
    int32_t *draft_index;  /* per candidate: its pending index in the draft, -1 */
    int32_t *frontier, *feed, *feed_parent;
    int32_t *kept_of_node; /* per tree node: its candidate                      */
} draft_model;

static int max_nodes(const ss_drafter *d) {
    const draft_model *m = (const draft_model *)d;
    return m->tree ? m->max_nodes : m->k_cap;
}

static ss_status prefill(ss_drafter *d, const int32_t *prompt, int64_t n, const volatile int *cancel, ss_error *err) {
    draft_model *m = (draft_model *)d;
    const int batch = ss_state_max_batch(m->state);
    for (int64_t i = ss_state_length(m->state); i < n; i += batch) {
        if (cancel && *cancel) return ss_fail(err, SS_ERR_CANCELLED, "generation cancelled during the prompt");
        const int chunk = (int)ss_min64(batch, n - i);
        ss_status st = ss_forward(m->model, m->state, prompt + i, chunk, NULL, 0, err);
        if (st == SS_OK) st = ss_state_commit(m->state, err);
        if (st != SS_OK) return st;
    }
    m->seen = n;
    return SS_OK;
}

/* The distribution the draft proposes from, after logits row `row`: the
 * sampling distribution when sampling (verification divides by it), the
 * softmax otherwise (its probabilities only rank greedy candidates). */
static const float *distribution(draft_model *m, const ss_draft_context *ctx, const float *row) {
    float *q = m->dist + (size_t)m->n_dist++ * ctx->vocab;
    if (ctx->sampling->temperature > 0.0f) {
        ss_sampling_probs(row, ctx->vocab, ctx->sampling, q, ctx->scratch);
    } else {
        const ss_sampling softmax = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
        ss_sampling_probs(row, ctx->vocab, &softmax, q, ctx->scratch);
    }
    return q;
}

static ss_status propose(ss_drafter *d, const ss_draft_context *ctx, ss_draft_tree *tree, ss_error *err) {
    draft_model *m = (draft_model *)d;
    const int greedy = ctx->sampling->temperature <= 0.0f;
    const int k = m->tree ? m->k_cap : m->k, branch = m->tree ? m->branch : 1;
    m->n_dist = 0;
    ss_candidates_reset(&m->cand);
    /* committed tokens the draft has not seen, the root last */
    m->fed = (int)(ctx->n_tokens - m->seen);
    ss_status st = ss_forward(m->model, m->state, ctx->tokens + m->seen, m->fed, m->logits, 1, err);
    if (st != SS_OK) return st;
    ss_candidates_expand(&m->cand, -1, distribution(m, ctx, m->logits), ctx->vocab, branch, greedy, ctx->rng,
                         m->work);
    for (int i = 0; i < m->cand.n; i++) m->draft_index[i] = -1;
    int level_start = 0;
    for (int depth = 2; depth <= k && st == SS_OK; depth++) {
        /* the most probable nodes of the depth before, run in one forward */
        const int level_end = m->cand.n;
        const int n = ss_top_indices(m->cand.score + level_start, level_end - level_start, branch, m->frontier);
        if (n == 0) break;
        const int pending = (int)(ss_state_length(m->state) - m->seen);
        for (int f = 0; f < n; f++) {
            const int i = level_start + m->frontier[f], parent = m->cand.parent[i];
            m->frontier[f] = i;
            m->feed[f] = m->cand.token[i];
            m->feed_parent[f] = parent < 0 ? m->fed - 1 : m->draft_index[parent];
            m->draft_index[i] = pending + f;
        }
        st = ss_forward_tree(m->model, m->state, m->feed, m->feed_parent, n, m->logits, NULL, n, err);
        for (int f = 0; f < n && st == SS_OK; f++) {
            const float *q = distribution(m, ctx, m->logits + (size_t)f * m->vocab_rows);
            const int first = m->cand.n;
            ss_candidates_expand(&m->cand, m->frontier[f], q, ctx->vocab, branch, greedy, ctx->rng, m->work);
            for (int i = first; i < m->cand.n; i++) m->draft_index[i] = -1;
        }
        level_start = level_end;
    }
    if (st != SS_OK) return st;
    ss_candidates_select(&m->cand, m->tree ? m->max_nodes : k, NULL, NULL, tree, m->kept_of_node);
    return SS_OK;
}

static ss_status accept(ss_drafter *d, const ss_draft_context *ctx, const ss_draft_tree *tree, const ss_verdict *v,
                        ss_error *err) {
    draft_model *m = (draft_model *)d;
    (void)ctx;
    if (v->n_nodes == 0 && tree->n == 0) return SS_OK; /* the first verdict, after the prompt */
    /* the committed tokens fed this round, then the accepted nodes it ran */
    int32_t path[SS_MAX_TREE_NODES + 2];
    int n = 0;
    for (; n < m->fed; n++) path[n] = n;
    for (int i = 0; i < v->n_path; i++) {
        const int32_t index = m->draft_index[m->kept_of_node[v->path[i]]];
        if (index < 0) break;
        path[n++] = index;
    }
    ss_status st = ss_state_accept(m->state, path, n, err);
    if (st != SS_OK) return st;
    m->seen += n;
    if (m->adaptive) {
        const double w = m->ema_decay;
        m->ema_accept = w * m->ema_accept + (1.0 - w) * ((double)v->n_path / m->k);
        if (m->cost_measured && v->verify_s > 0.0)
            m->ema_cost = w * m->ema_cost + (1.0 - w) * (v->propose_s / m->k) / v->verify_s;
        const double a = fmin(0.99, fmax(0.01, m->ema_accept)), c = fmax(1e-3, m->ema_cost);
        double best_rate = -1.0;
        for (int k = m->k_min; k <= m->k_max; k++) {
            const double rate = (1.0 - pow(a, k + 1)) / ((1.0 - a) * (1.0 + k * c));
            if (rate > best_rate) {
                best_rate = rate;
                m->k = k;
            }
        }
    }
    return SS_OK;
}

static size_t cache_bytes(const ss_drafter *d) { return ss_state_cache_bytes(((const draft_model *)d)->state); }

static void release(ss_drafter *d) {
    draft_model *m = (draft_model *)d;
    ss_state_free(m->state);
    ss_candidates_free(&m->cand);
    void *bufs[] = {m->logits, m->dist, m->work, m->draft_index, m->frontier, m->feed, m->feed_parent,
                    m->kept_of_node};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(m);
}

static const ss_drafter_ops ops = {
    .name = "draft model",
    .max_nodes = max_nodes,
    .prefill = prefill,
    .propose = propose,
    .accept = accept,
    .cache_bytes = cache_bytes,
    .free = release,
};

ss_status ss_drafter_model(const ss_draft_sources *src, ss_drafter **out, ss_error *err) {
    const ss_speculative *spec = src->spec;
    if (!src->draft || !src->draft_cache)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "speculative decoding with a draft model needs the draft");
    draft_model *m = calloc(1, sizeof *m);
    if (!m) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the drafter");
    m->base.ops = &ops;
    m->model = src->draft;
    m->tree = spec->method == SS_SPEC_TREE;
    m->adaptive = spec->adaptive && !m->tree;
    m->k_min = spec->k_min;
    m->k_max = spec->k_max;
    m->k_cap = m->adaptive ? spec->k_max : spec->k;
    m->k = m->adaptive ? (spec->k < spec->k_min ? spec->k_min : spec->k > spec->k_max ? spec->k_max : spec->k)
                       : spec->k;
    m->branch = m->tree ? spec->branch : 1;
    m->max_nodes = spec->max_nodes;
    m->ema_decay = spec->ema_decay;
    m->ema_accept = 0.7;
    m->cost_measured = spec->cost_ratio == SS_COST_RATIO_MEASURED;
    m->ema_cost = spec->cost_ratio == SS_COST_RATIO_BYTES
                      ? (double)ss_model_weight_bytes(src->draft) / (double)ss_model_weight_bytes(src->target)
                  : m->cost_measured ? 0.1
                                     : spec->cost_ratio;
    const ss_model_config *dc = ss_model_get_config(src->draft), *tc = ss_model_get_config(src->target);
    const int vocab = dc->vocab_rows < tc->vocab_rows ? dc->vocab_rows : tc->vocab_rows;
    m->vocab_rows = dc->vocab_rows;
    /* pending tokens in a round: up to 2 unseen committed ones, then
     * `branch` nodes per expanded depth */
    const int round = 2 + m->branch * (m->k_cap - 1);
    const int batch = src->max_prefill > round ? src->max_prefill : round;
    const int expansions = 1 + m->branch * (m->k_cap - 1);
    const int candidates = m->branch * expansions;
    m->logits = ss_alloc((size_t)m->branch * m->vocab_rows, sizeof(float));
    m->dist = ss_alloc((size_t)expansions * vocab, sizeof(float));
    m->work = ss_alloc((size_t)vocab, sizeof(float));
    m->draft_index = ss_alloc((size_t)candidates, sizeof(int32_t));
    m->frontier = ss_alloc((size_t)m->branch, sizeof(int32_t));
    m->feed = ss_alloc((size_t)m->branch, sizeof(int32_t));
    m->feed_parent = ss_alloc((size_t)m->branch, sizeof(int32_t));
    m->kept_of_node = ss_alloc(SS_MAX_TREE_NODES, sizeof(int32_t));
    ss_status st = ss_candidates_init(&m->cand, candidates, err);
    if (st == SS_OK && (!m->logits || !m->dist || !m->work || !m->draft_index || !m->frontier || !m->feed ||
                        !m->feed_parent || !m->kept_of_node))
        st = ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the drafter's buffers");
    ss_cache_config cache = *src->draft_cache;
    if (st == SS_OK) st = ss_size_full_cache(&cache, src->sequence_tokens + round, err);
    if (st == SS_OK) st = ss_state_create(src->draft, &cache, batch, &m->state, err);
    if (st != SS_OK) {
        release(&m->base);
        return st;
    }
    *out = &m->base;
    return SS_OK;
}
