#include "spec/verify.h"

#include <string.h>

int ss_verify_siblings(float *p, const float *q, float *q_work, const int32_t *candidates, int n, int vocab,
                       ss_rng *rng, int32_t *next) {
    if (q) memcpy(q_work, q, (size_t)vocab * sizeof(float));
    for (int c = 0; c < n; c++) {
        const int32_t x = candidates[c];
        const double u = ss_rng_uniform(rng);
        if (q ? u * q_work[x] < p[x] : u < p[x]) return c;
        if (q) {
            for (int v = 0; v < vocab; v++) p[v] = p[v] > q_work[v] ? p[v] - q_work[v] : 0.0f;
            q_work[x] = 0.0f;
            ss_normalize(q_work, vocab);
        } else {
            p[x] = 0.0f;
        }
        /* A residual without mass is a rounding artefact of p == q, where
         * the rejection itself had probability zero: any token of p will do,
         * and none is left to prefer. */
        if (ss_normalize(p, vocab) <= 0.0) p[x] = 1.0f;
    }
    *next = ss_sample(p, vocab, rng);
    return -1;
}

/* Candidate children of node `cur` (-1: the root), in node order. */
static int children_of(const ss_draft_tree *t, int cur, int32_t *nodes, int32_t *tokens) {
    int n = 0;
    for (int i = 0; i < t->n_candidates; i++) {
        if (t->parent[i] != cur) continue;
        nodes[n] = i;
        tokens[n++] = t->token[i];
    }
    return n;
}

void ss_verify_walk(const ss_draft_tree *tree, const float *logits, int stride, int vocab,
                    const ss_sampling *sampling, float forced, ss_rng *rng, ss_verify_work *work, ss_walk *out) {
    const int greedy = sampling->temperature <= 0.0f;
    int32_t nodes[SS_MAX_TREE_NODES], tokens[SS_MAX_TREE_NODES];
    out->n_path = 0;
    for (int cur = -1;;) {
        const float *row = logits + (size_t)(cur + 1) * stride;
        const int n = children_of(tree, cur, nodes, tokens);
        int chosen = -1;
        if (forced >= 0.0f) {
            if (n > 0 && ss_rng_uniform(rng) < forced) chosen = 0;
            else if (greedy) out->next = ss_argmax(row, vocab);
            else {
                ss_sampling_probs(row, vocab, sampling, work->p, work->scratch);
                out->next = ss_sample(work->p, vocab, rng);
            }
        } else if (greedy) {
            const int32_t best = ss_argmax(row, vocab);
            for (int c = 0; c < n && chosen < 0; c++)
                if (tokens[c] == best) chosen = c;
            out->next = best;
        } else {
            ss_sampling_probs(row, vocab, sampling, work->p, work->scratch);
            const float *q = n > 0 ? tree->q[nodes[0]] : NULL;
            chosen = ss_verify_siblings(work->p, q, work->q, tokens, n, vocab, rng, &out->next);
        }
        if (chosen < 0) return;
        out->path[out->n_path++] = nodes[chosen];
        cur = nodes[chosen];
    }
}
