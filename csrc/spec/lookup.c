/* Prompt lookup (no draft model): the k tokens that followed the most
 * recent earlier occurrence of the context's last n-gram (longest n first,
 * within the last LOOKUP_HORIZON tokens), proposed as a deterministic chain.
 * Cheap, and strong on inputs that repeat themselves (code, extraction,
 * summaries quoting their source). */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "spec/drafter.h"

enum { LOOKUP_HORIZON = 4096 };

typedef struct {
    ss_drafter base;
    int k, ngram;
} lookup;

static int max_nodes(const ss_drafter *d) { return ((const lookup *)d)->k; }

static ss_status prefill(ss_drafter *d, const int32_t *prompt, int64_t n, const volatile int *cancel, ss_error *err) {
    (void)d; (void)prompt; (void)n; (void)cancel; (void)err;
    return SS_OK;
}

static ss_status propose(ss_drafter *d, const ss_draft_context *ctx, ss_draft_tree *tree, ss_error *err) {
    const lookup *l = (const lookup *)d;
    (void)err;
    const int64_t n = ctx->n_tokens, horizon = ss_max64(0, n - LOOKUP_HORIZON);
    tree->n = tree->n_candidates = 0;
    for (int ng = l->ngram; ng >= 1 && tree->n == 0; ng--) {
        if (n < ng + 1) continue;
        const int32_t *suffix = ctx->tokens + n - ng;
        for (int64_t start = n - ng - 1; start >= horizon; start--) {
            if (memcmp(ctx->tokens + start, suffix, (size_t)ng * sizeof(int32_t)) != 0) continue;
            for (int64_t j = start + ng; j < n && tree->n < l->k; j++) {
                tree->token[tree->n] = ctx->tokens[j];
                tree->parent[tree->n] = tree->n - 1;
                tree->q[tree->n++] = NULL;
            }
            break;
        }
    }
    tree->n_candidates = tree->n;
    return SS_OK;
}

static ss_status accept(ss_drafter *d, const ss_draft_context *ctx, const ss_draft_tree *tree, const ss_verdict *v,
                        ss_error *err) {
    (void)d; (void)ctx; (void)tree; (void)v; (void)err;
    return SS_OK;
}

static size_t cache_bytes(const ss_drafter *d) {
    (void)d;
    return 0;
}

static void release(ss_drafter *d) { free(d); }

static const ss_drafter_ops ops = {
    .name = "prompt lookup",
    .max_nodes = max_nodes,
    .prefill = prefill,
    .propose = propose,
    .accept = accept,
    .cache_bytes = cache_bytes,
    .free = release,
};

ss_status ss_drafter_lookup(const ss_draft_sources *src, ss_drafter **out, ss_error *err) {
    lookup *l = calloc(1, sizeof *l);
    if (!l) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the drafter");
    l->base.ops = &ops;
    l->k = src->spec->k;
    l->ngram = src->spec->lookup_ngram;
    *out = &l->base;
    return SS_OK;
}
