/* Growing and pruning candidate token trees (the tree and Medusa drafters).
 *
 * A drafter generates candidates -- each a token drawn from a distribution
 * q at its parent, with the probability of its path as score -- and keeps
 * the `m` most probable (EAGLE-2 / Sequoia: "the max_nodes most probable
 * nodes"), best first, under two constraints that keep verification
 * lossless: a node is kept only after its parent, and only after its
 * earlier-drawn siblings (the verifier's rule needs each node's kept
 * children to be the first ones drawn, in draw order). Greedy children are
 * drawn by descending probability, so there the constraints change nothing.
 * Candidates may also be generated lazily, when their parent is kept. */
#ifndef SS_TREE_SELECT_H
#define SS_TREE_SELECT_H

#include <stdint.h>

#include "spec/drafter.h"

typedef struct {
    int n, capacity;
    int32_t *token, *parent;  /* parent: candidate index, or -1 for the root */
    int32_t *depth;           /* 1 for the root's children                  */
    float *score;             /* probability of the path from the root      */
    const float **q;          /* the distribution it was drawn from         */
    int32_t *first_child, *last_child, *next_sibling; /* draw order, -1 ends */
    int32_t *node_of;         /* tree node of a kept candidate              */
} ss_candidates;

ss_status ss_candidates_init(ss_candidates *c, int capacity, ss_error *err);
void ss_candidates_free(ss_candidates *c);
void ss_candidates_reset(ss_candidates *c);
/* Adds a candidate after its parent's earlier children; -1 when full. */
int ss_candidates_add(ss_candidates *c, int parent, int32_t token, float score, const float *q);

/* Draws the children of candidate `parent` (-1: the root) from q: the
 * `branch` most probable (greedy) or `branch` distinct draws (sampling), each
 * scored parent score x q(token). work: vocab floats; returns how many. */
int ss_candidates_expand(ss_candidates *c, int parent, const float *q, int vocab, int branch, int greedy,
                         ss_rng *rng, float *work);

/* Called when candidate i is kept, to generate its children lazily. */
typedef void (*ss_expand_fn)(void *ctx, ss_candidates *c, int i);

/* Keeps up to m candidates, best first under the constraints above, and
 * writes them into tree (all candidates) in the order kept (parents before
 * children, siblings in draw order); kept_of_node[i] = candidate index of
 * tree node i. */
void ss_candidates_select(ss_candidates *c, int m, ss_expand_fn expand, void *ctx, ss_draft_tree *tree,
                          int32_t *kept_of_node);

#endif
