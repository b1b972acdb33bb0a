/* Verification: which of a proposed tree's candidates the target accepts,
 * and the one token it adds after them, so that the output is the target's
 * own (token-identical when greedy; the same distribution when sampling).
 *
 * The walk starts at the root (the last committed token) with the target's
 * distribution p there, tries the node's candidate children in their order
 * and moves to the first one accepted; when none is, it adds a token of its
 * own and stops.
 *  - greedy: a child is accepted when its token is the argmax of p;
 *  - sampled (multi-candidate speculative sampling, the recursive rule of
 *    SpecInfer / Sequoia for siblings drawn without replacement from the
 *    draft distribution q): child x is accepted with probability
 *    min(1, p(x) / q(x)); after a rejection p becomes the residual
 *    norm(max(0, p - q)) and q loses x (renormalised), so each later sibling
 *    is judged against what is left. Deterministic candidates (q = NULL) are
 *    the one-hot case: x is accepted with probability p(x), then removed
 *    from p. The token added after the last accepted node is drawn from the
 *    final residual, so the emitted token has exactly distribution p.
 *  - forced (a benchmark knob, NOT the target's output): the first child is
 *    accepted with a fixed probability. */
#ifndef SS_VERIFY_H
#define SS_VERIFY_H

#include <stdint.h>

#include "spec/drafter.h"
#include "spec/sampling.h"

typedef struct {
    int32_t path[SS_MAX_TREE_NODES]; /* accepted nodes, the root's child first */
    int n_path;
    int32_t next;                      /* the token the target adds after them   */
} ss_walk;

/* Scratch for the sampled rule: p, q [vocab] and the sort scratch. */
typedef struct {
    float *p, *q;
    ss_prob_index *scratch;
} ss_verify_work;

/* logits: row 0 the root, row 1 + i node i, `stride` floats apart; vocab:
 * ids shared by target and drafter. forced < 0: the target's rule. */
void ss_verify_walk(const ss_draft_tree *tree, const float *logits, int stride, int vocab,
                    const ss_sampling *sampling, float forced, ss_rng *rng, ss_verify_work *work, ss_walk *out);

/* The sampled rule at one node: p (the target's distribution, normalised;
 * left as the final residual), q (the candidates' shared draft distribution,
 * or NULL: deterministic candidates; q_work: vocab floats of scratch), the
 * candidates' tokens in draw order. Returns the index of the accepted
 * candidate, or -1 after drawing *next from the residual. */
int ss_verify_siblings(float *p, const float *q, float *q_work, const int32_t *candidates, int n, int vocab,
                       ss_rng *rng, int32_t *next);

#endif
