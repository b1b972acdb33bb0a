/* Lookahead decoding (Fu et al. 2024): no draft model. Every step, the
 * target runs, in one forward, next to the token it must continue:
 *  - the lookahead branch: a 2-D window of W columns and N - 1 levels of
 *    Jacobi iterations. Level 0 continues the root along the columns; token
 *    (level j, column i) continues (j - 1, i), at position root + i + j, so
 *    each column's levels form the recent Jacobi trajectory of that
 *    position. The outputs at the last level are the next Jacobi iteration:
 *    the levels shift up by one and the last level takes them.
 *  - the verification branch: up to G n-grams from a pool, each N - 1 tokens
 *    that followed the root token before, merged into a trie of candidates.
 * The trajectories feed the pool: after each step every column yields the
 * n-gram (old level-0 token, levels 0..N-2 of that column), stored under its
 * first token (the newest G distinct ones per first token).
 *
 * N = k + 1: k is the number of tokens a guess proposes. Lookahead-branch
 * nodes are context, never candidates (as in the paper, only the pool's
 * n-grams are verified), so the output is the target's own. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "spec/drafter.h"

typedef struct {
    ss_drafter base;
    int W, N, G;
    int initialised;
    int32_t *levels;      /* [N - 1][W]: the Jacobi window                   */
    int32_t *previous;    /* [W]: level 0 before the last shift              */
    int vocab;
    int32_t *pool_count, *pool_head; /* [vocab]                              */
    int32_t *pool;        /* [vocab][G][N - 1]                                */
    int32_t *last_level;  /* [W]: tree node of (N - 2, i) in this proposal   */
    float *probs;         /* [vocab]: sampling a Jacobi output               */
} lookahead;

static int32_t *level(lookahead *l, int j) { return l->levels + (size_t)j * l->W; }
static int32_t *pool_entry(lookahead *l, int32_t first, int g) {
    return l->pool + ((size_t)first * l->G + g) * (size_t)(l->N - 1);
}

static int max_nodes(const ss_drafter *d) {
    const lookahead *l = (const lookahead *)d;
    return l->G * (l->N - 1) + (l->W - 1) + l->W * (l->N - 2);
}

static ss_status prefill(ss_drafter *d, const int32_t *prompt, int64_t n, const volatile int *cancel, ss_error *err) {
    (void)d; (void)prompt; (void)n; (void)cancel; (void)err;
    return SS_OK;
}

/* A node `parent` -> token child: the existing candidate, or a new one. */
static int trie_child(ss_draft_tree *t, int parent, int32_t token) {
    for (int i = 0; i < t->n; i++)
        if (t->parent[i] == parent && t->token[i] == token) return i;
    t->token[t->n] = token;
    t->parent[t->n] = parent;
    t->q[t->n] = NULL;
    return t->n++;
}

static int add_node(ss_draft_tree *t, int parent, int32_t token) {
    t->token[t->n] = token;
    t->parent[t->n] = parent;
    t->q[t->n] = NULL;
    return t->n++;
}

static ss_status propose(ss_drafter *d, const ss_draft_context *ctx, ss_draft_tree *tree, ss_error *err) {
    lookahead *l = (lookahead *)d;
    (void)err;
    const int32_t root = ctx->tokens[ctx->n_tokens - 1];
    if (!l->initialised) { /* the window starts from tokens of the prompt */
        const int64_t n = ctx->n_tokens;
        for (int j = 0; j < l->N - 1; j++)
            for (int i = 0; i < l->W; i++)
                level(l, j)[i] = ctx->tokens[n > 1 ? 1 + (j * l->W + i) % (n - 1) : 0];
        l->initialised = 1;
    }
    tree->n = 0;
    /* verification branch: the pool's n-grams after the root, as a trie */
    for (int g = 0; g < l->pool_count[root]; g++) {
        const int32_t *gram = pool_entry(l, root, g);
        for (int j = 0, node = -1; j < l->N - 1; j++) node = trie_child(tree, node, gram[j]);
    }
    tree->n_candidates = tree->n;
    /* lookahead branch: level 0 continues the root along the columns
     * (column 0 is the root itself); level j hangs under level j - 1 */
    int32_t *column_top = l->last_level; /* reused: node of each column's current bottom */
    column_top[0] = -1;
    for (int i = 1; i < l->W; i++) column_top[i] = add_node(tree, i == 1 ? -1 : column_top[i - 1], level(l, 0)[i]);
    for (int j = 1; j < l->N - 1; j++)
        for (int i = 0; i < l->W; i++) column_top[i] = add_node(tree, column_top[i], level(l, j)[i]);
    return SS_OK;
}

/* The newest G distinct n-grams per first token. */
static void remember(lookahead *l, int32_t first, const int32_t *gram) {
    for (int g = 0; g < l->pool_count[first]; g++)
        if (!memcmp(pool_entry(l, first, g), gram, (size_t)(l->N - 1) * sizeof(int32_t))) return;
    memcpy(pool_entry(l, first, l->pool_head[first]), gram, (size_t)(l->N - 1) * sizeof(int32_t));
    l->pool_head[first] = (l->pool_head[first] + 1) % l->G;
    if (l->pool_count[first] < l->G) l->pool_count[first]++;
}

static ss_status accept(ss_drafter *d, const ss_draft_context *ctx, const ss_draft_tree *tree, const ss_verdict *v,
                        ss_error *err) {
    lookahead *l = (lookahead *)d;
    (void)err;
    if (v->n_nodes == 0) return SS_OK; /* nothing ran: the first verdict */
    const int greedy = ctx->sampling->temperature <= 0.0f;
    int32_t gram[SS_MAX_DEPTH];
    /* one shift per token the step produced: the first takes the Jacobi
     * outputs, later ones (accepted guesses moved the window on) repeat
     * level 0 at the bottom */
    for (int v_tok = 0; v_tok <= v->n_path; v_tok++) {
        memcpy(l->previous, level(l, 0), (size_t)l->W * sizeof(int32_t));
        memmove(l->levels, level(l, 1), (size_t)(l->N - 2) * l->W * sizeof(int32_t));
        int32_t *bottom = level(l, l->N - 2);
        for (int i = 0; i < l->W; i++) {
            if (v_tok > 0) {
                bottom[i] = level(l, 0)[i];
                continue;
            }
            const float *row = v->logits + (size_t)(1 + l->last_level[i]) * v->logits_stride;
            if (greedy) {
                bottom[i] = ss_argmax(row, ctx->vocab);
            } else {
                ss_sampling_probs(row, ctx->vocab, ctx->sampling, l->probs, ctx->scratch);
                bottom[i] = ss_sample(l->probs, ctx->vocab, ctx->rng);
            }
        }
        if (v_tok == 0) {
            for (int i = 0; i < l->W; i++) {
                for (int j = 0; j < l->N - 1; j++) gram[j] = level(l, j)[i];
                remember(l, l->previous[i], gram);
            }
        }
    }
    (void)tree;
    return SS_OK;
}

static size_t cache_bytes(const ss_drafter *d) {
    (void)d;
    return 0;
}

static void release(ss_drafter *d) {
    lookahead *l = (lookahead *)d;
    void *bufs[] = {l->levels, l->previous, l->pool_count, l->pool_head, l->pool, l->last_level, l->probs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(l);
}

static const ss_drafter_ops ops = {
    .name = "lookahead",
    .max_nodes = max_nodes,
    .prefill = prefill,
    .propose = propose,
    .accept = accept,
    .cache_bytes = cache_bytes,
    .free = release,
};

ss_status ss_drafter_lookahead(const ss_draft_sources *src, ss_drafter **out, ss_error *err) {
    const ss_speculative *spec = src->spec;
    lookahead *l = calloc(1, sizeof *l);
    if (!l) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the drafter");
    l->base.ops = &ops;
    l->W = spec->lookahead_window;
    l->N = spec->k + 1;
    l->G = spec->lookahead_guesses;
    l->vocab = ss_model_get_config(src->target)->vocab_rows;
    l->levels = ss_alloc((size_t)(l->N - 1) * l->W, sizeof(int32_t));
    l->previous = ss_alloc((size_t)l->W, sizeof(int32_t));
    l->last_level = ss_alloc((size_t)l->W, sizeof(int32_t));
    l->pool_count = ss_alloc((size_t)l->vocab, sizeof(int32_t));
    l->pool_head = ss_alloc((size_t)l->vocab, sizeof(int32_t));
    l->pool = ss_alloc((size_t)l->vocab * l->G * (l->N - 1), sizeof(int32_t));
    l->probs = ss_alloc((size_t)l->vocab, sizeof(float));
    if (!l->levels || !l->previous || !l->last_level || !l->pool_count || !l->pool_head || !l->pool || !l->probs) {
        release(&l->base);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the Lookahead n-gram pool (%zu bytes)",
                       (size_t)l->vocab * l->G * (l->N - 1) * sizeof(int32_t));
    }
    *out = &l->base;
    return SS_OK;
}
