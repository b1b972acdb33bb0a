#include "spec/tree_select.h"

#include <stdlib.h>

#include "common.h"

ss_status ss_candidates_init(ss_candidates *c, int capacity, ss_error *err) {
    *c = (ss_candidates){.capacity = capacity};
    const size_t n = (size_t)capacity;
    c->token = ss_alloc(n, sizeof(int32_t));
    c->parent = ss_alloc(n, sizeof(int32_t));
    c->depth = ss_alloc(n, sizeof(int32_t));
    c->score = ss_alloc(n, sizeof(float));
    c->q = ss_alloc(n, sizeof(float *));
    c->first_child = ss_alloc(n + 1, sizeof(int32_t)); /* [n]: the root's */
    c->last_child = ss_alloc(n + 1, sizeof(int32_t));
    c->next_sibling = ss_alloc(n, sizeof(int32_t));
    c->node_of = ss_alloc(n, sizeof(int32_t));
    if (!c->token || !c->parent || !c->depth || !c->score || !c->q || !c->first_child || !c->last_child ||
        !c->next_sibling || !c->node_of) {
        ss_candidates_free(c);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate %d tree candidates", capacity);
    }
    ss_candidates_reset(c);
    return SS_OK;
}

void ss_candidates_free(ss_candidates *c) {
    void *bufs[] = {c->token, c->parent, c->depth, c->score, (void *)c->q, c->first_child, c->last_child,
                    c->next_sibling, c->node_of};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    *c = (ss_candidates){0};
}

/* The root's child list lives in slot `capacity`. */
static int slot_of(const ss_candidates *c, int parent) { return parent < 0 ? c->capacity : parent; }

void ss_candidates_reset(ss_candidates *c) {
    c->n = 0;
    c->first_child[c->capacity] = c->last_child[c->capacity] = -1;
}

int ss_candidates_add(ss_candidates *c, int parent, int32_t token, float score, const float *q) {
    if (c->n == c->capacity) return -1;
    const int i = c->n++;
    c->token[i] = token;
    c->parent[i] = parent;
    c->depth[i] = parent < 0 ? 1 : c->depth[parent] + 1;
    c->score[i] = score;
    c->q[i] = q;
    c->first_child[i] = c->last_child[i] = c->next_sibling[i] = -1;
    const int p = slot_of(c, parent);
    if (c->last_child[p] < 0) c->first_child[p] = i;
    else c->next_sibling[c->last_child[p]] = i;
    c->last_child[p] = i;
    return i;
}

int ss_candidates_expand(ss_candidates *c, int parent, const float *q, int vocab, int branch, int greedy,
                         ss_rng *rng, float *work) {
    int32_t drawn[16];
    if (branch > 16) branch = 16;
    const int n = greedy ? ss_top_indices(q, vocab, branch, drawn)
                         : ss_sample_distinct(q, vocab, branch, rng, work, drawn);
    const float base = parent < 0 ? 1.0f : c->score[parent];
    int added = 0;
    for (int j = 0; j < n; j++)
        if (ss_candidates_add(c, parent, drawn[j], base * q[drawn[j]], q) >= 0) added++;
    return added;
}

void ss_candidates_select(ss_candidates *c, int m, ss_expand_fn expand, void *ctx, ss_draft_tree *tree,
                          int32_t *kept_of_node) {
    /* Eligible candidates: the first child of every kept node (and of the
     * root), and the next sibling of every kept candidate. At most two per
     * kept node, so a linear scan for the best stays cheap. */
    int32_t eligible[2 * SS_MAX_TREE_NODES + 2];
    int n_eligible = 0, kept = 0;
    if (c->first_child[c->capacity] >= 0) eligible[n_eligible++] = c->first_child[c->capacity];
    if (m > tree->capacity) m = tree->capacity;
    if (m > SS_MAX_TREE_NODES) m = SS_MAX_TREE_NODES;
    while (kept < m && n_eligible > 0) {
        int best = 0;
        for (int e = 1; e < n_eligible; e++)
            if (c->score[eligible[e]] > c->score[eligible[best]]) best = e;
        const int i = eligible[best];
        eligible[best] = eligible[--n_eligible];
        if (expand) expand(ctx, c, i);
        tree->token[kept] = c->token[i];
        tree->parent[kept] = c->parent[i] < 0 ? -1 : c->node_of[c->parent[i]];
        tree->q[kept] = c->q[i];
        kept_of_node[kept] = i;
        c->node_of[i] = kept;
        kept++;
        if (c->next_sibling[i] >= 0) eligible[n_eligible++] = c->next_sibling[i];
        if (c->first_child[i] >= 0) eligible[n_eligible++] = c->first_child[i];
    }
    tree->n = tree->n_candidates = kept;
}
