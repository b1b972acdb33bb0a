/* Long-stream evaluation: per-token negative log-likelihood of a text read
 * through a cache policy. Log-softmax happens here so that only one float per
 * token, not a vocabulary of logits, leaves the core. */
#include <math.h>

#include "common.h"
#include "model/model.h"
#include "model/state.h"

static float nll_of(const float *logits, int V, int target) {
    float max = -INFINITY;
    for (int v = 0; v < V; v++)
        if (logits[v] > max) max = logits[v];
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)(logits[v] - max));
    return (float)(log(sum) + max - logits[target]);
}

ss_status ss_eval_nll(const ss_model *m, ss_state *s, const int32_t *tokens, int64_t n, int chunk,
                      float *nll, int32_t *visible, double *first_s, double *rest_s, int64_t *n_done,
                      const volatile int *cancel, ss_error *err) {
    *n_done = 0;
    *first_s = *rest_s = 0.0;
    if (n < 2) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "perplexity needs at least 2 tokens, got %lld", (long long)n);
    if (chunk < 1 || chunk > s->max_pending)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "chunk must be in [1, %d], got %d", s->max_pending, chunk);
    if (ss_state_length(s) != 0) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "evaluation needs a fresh state");
    const int V = m->cfg.vocab_rows;
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return ss_fail(err, SS_ERR_OUT_OF_RANGE, "token id %d at index %lld is outside the vocabulary [0, %d)",
                           tokens[i], (long long)i, V);
    float *logits = ss_alloc((size_t)chunk * (size_t)V, sizeof(float));
    if (!logits) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate logits for a chunk of %d", chunk);
    ss_status st = SS_OK;
    const double t0 = ss_now();
    double t_first = t0;
    for (int64_t i = 0; i < n && st == SS_OK; i += chunk) {
        if (cancel && *cancel) {
            st = ss_fail(err, SS_ERR_CANCELLED, "evaluation cancelled after %lld tokens", (long long)i);
            break;
        }
        const int c = (int)ss_min64(chunk, n - i);
        st = ss_forward(m, s, tokens + i, c, logits, c, err);
        if (st == SS_OK) st = ss_state_commit(s, err);
        if (st != SS_OK) break;
        for (int j = 0; j < c; j++) {
            const int64_t t = i + j;
            if (visible)
                visible[t] = s->cache.cfg.policy == SS_CACHE_RECOMPUTE ? (int32_t)ss_min64(t + 1, s->cache.cfg.window)
                                                                        : ss_state_row_visible(s, j);
            if (t + 1 < n) nll[t] = nll_of(logits + (size_t)j * V, V, tokens[t + 1]);
        }
        *n_done = i + c;
        if (i == 0) t_first = ss_now();
    }
    *first_s = t_first - t0;
    *rest_s = ss_now() - t_first;
    ss_free(logits);
    return st;
}
