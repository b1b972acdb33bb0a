/* Generation: target-only and speculative decoding in one verification loop.
 *
 * Invariant between rounds: the target has processed every committed token
 * but the last one (the root), which the next round feeds. A round:
 *
 *   1. the drafter (drafter.h; none for target-only decoding) proposes a
 *      tree of candidates hanging off the root;
 *   2. the target runs [root, candidates...] in ONE forward with the tree
 *      attention mask: one distribution per node;
 *   3. the verifier (verify.h) walks the tree, accepting a path of
 *      candidates and adding one token of its own;
 *   4. the target's cache keeps the accepted path (its keys move into place,
 *      rejected branches vanish) and only then applies evictions; the
 *      drafter hears the verdict and readies itself.
 *
 * Greedy verification accepts a candidate when it is the target's argmax;
 * sampling uses the lossless multi-candidate rule, so the output is the
 * target's own in both cases (token-identical / the same distribution). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "spec/drafter.h"
#include "spec/sampling.h"
#include "spec/verify.h"

enum { PREFILL_CHUNK = 256, MIN_BOUNDED_CHUNK = 16 };

struct ss_generator {
    const ss_model *target;
    ss_state *ts;
    ss_drafter *drafter;  /* NULL: target-only decoding                       */
    ss_speculative spec;
    ss_sampling sampling;
    ss_rng rng;
    int vocab;            /* ids target and drafter share                     */
    int vocab_rows, d_model;
    int max_nodes;        /* largest tree the drafter proposes                */
    /* committed sequence: prompt then generated tokens */
    int32_t *tokens;
    int64_t n_tokens, cap_tokens, n_prompt;
    int64_t max_new, produced;
    int32_t *stop_ids;
    int n_stop;
    /* tokens produced but not yet handed out */
    int32_t *outbox;
    int n_outbox, outbox_head;
    int started, prefilled, done;
    ss_draft_tree tree;
    int32_t *feed, *feed_parent, *accept_path; /* [1 + max_nodes]            */
    float *logits;        /* [1 + max_nodes][vocab_rows]                      */
    float *hidden;        /* [1 + max_nodes][d_model], drafters that want it  */
    ss_verify_work work;
    ss_walk walk;
    double t_start, t_first;
    ss_gen_stats stats;
};

const char *const ss_spec_method_names[] = {"none", "draft", "lookup", "tree", "lookahead", "medusa", NULL};

/* Nodes a Lookahead step verifies and runs: the n-gram trie, the lookahead
 * branch's W - 1 + W (N - 2) tokens. */
static int lookahead_nodes(const ss_speculative *s) {
    return s->lookahead_guesses * s->k + (s->lookahead_window - 1) + s->lookahead_window * (s->k - 1);
}

ss_status ss_speculative_rules(const ss_speculative *s, ss_error *err) {
    if (s->adaptive && s->k_max < s->k_min)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "SpeculativeConfig needs k_min <= k_max <= 64, got k_min=%d k_max=%d", s->k_min, s->k_max);
    if ((s->method == SS_SPEC_TREE || s->method == SS_SPEC_MEDUSA) && s->max_nodes < s->k)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "SpeculativeConfig.max_nodes (%d) must be >= k (%d): a tree of depth k has k nodes at least",
                       s->max_nodes, s->k);
    if (s->method == SS_SPEC_LOOKAHEAD && s->k < 2)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "SpeculativeConfig.k must be >= 2 for lookahead (its n-grams have k + 1 >= 3 tokens), got %d",
                       s->k);
    if (s->method == SS_SPEC_LOOKAHEAD && lookahead_nodes(s) > SS_MAX_TREE_NODES)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "lookahead with k=%d, lookahead_window=%d and lookahead_guesses=%d runs %d tokens per step, "
                       "more than the limit of %d: lower one of them", s->k, s->lookahead_window, s->lookahead_guesses,
                       lookahead_nodes(s), SS_MAX_TREE_NODES);
    return SS_OK;
}

void ss_generator_free(ss_generator *g) {
    if (!g) return;
    ss_state_free(g->ts);
    if (g->drafter) g->drafter->ops->free(g->drafter);
    void *bufs[] = {g->tokens, g->stop_ids, g->outbox, g->logits, g->hidden, g->work.p, g->work.q,
                    g->work.scratch, g->feed, g->feed_parent, g->accept_path, g->tree.token, g->tree.parent,
                    (void *)g->tree.q};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(g);
}

/* Tokens per prefill chunk. A bounded ring keeps room for a whole pending
 * batch next to its window (window + R - 1 + batch slots), so a 256-token
 * chunk would more than double the memory of a small window: bounded caches
 * prefill in chunks of a quarter window (16 tokens at least, where the
 * batched products still pay off). */
static int prefill_chunk(const ss_cache_config *cache) {
    if (cache->policy == SS_CACHE_FULL || cache->policy == SS_CACHE_RECOMPUTE) return PREFILL_CHUNK;
    const int quarter = cache->window / 4 > MIN_BOUNDED_CHUNK ? cache->window / 4 : MIN_BOUNDED_CHUNK;
    return quarter < PREFILL_CHUNK ? quarter : PREFILL_CHUNK;
}

ss_status ss_size_full_cache(ss_cache_config *c, int64_t needed, ss_error *err) {
    if (c->policy != SS_CACHE_FULL || c->capacity > 0) return SS_OK;
    if (needed > SS_MAX_TOKENS)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "a full cache for %lld tokens exceeds the limit of %d: use a bounded CacheConfig.policy "
                       "(window/streaming) for streams this long", (long long)needed, SS_MAX_TOKENS);
    c->capacity = (int)needed;
    return SS_OK;
}

ss_status ss_generator_create(const ss_model *target, const ss_cache_config *target_cache,
                              const ss_model *draft, const ss_cache_config *draft_cache,
                              const ss_medusa *medusa, const ss_speculative *spec, const ss_sampling *sampling,
                              const int32_t *prompt, int n_prompt, int64_t max_new_tokens,
                              const int32_t *stop_ids, int n_stop, ss_generator **out, ss_error *err) {
    *out = NULL;
    if (!target || !target_cache || !spec || !sampling || (!prompt && n_prompt > 0))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "NULL argument");
    if (n_prompt < 1) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "the prompt is empty");
    if (max_new_tokens < 0)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "max_new_tokens must be >= 0, got %lld",
                       (long long)max_new_tokens);
    if (n_stop < 0 || (n_stop > 0 && !stop_ids))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "invalid stop ids");
    ss_status st = ss_config_check(SS_CONFIG_SAMPLING, sampling, err);
    if (st == SS_OK) st = ss_config_check(SS_CONFIG_SPECULATIVE, spec, err);
    if (st != SS_OK) return st;
    const int uses_draft = spec->method == SS_SPEC_DRAFT || spec->method == SS_SPEC_TREE;
    if (uses_draft && (!draft || !draft_cache))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "speculative decoding with a draft model needs the draft");
    const ss_model_config *tc = ss_model_get_config(target);
    int vocab = tc->vocab_rows;
    if (uses_draft) {
        /* Padding rows beyond the tokenizer may differ; ids both know must mean
         * the same, which the caller checks against the tokenizers. */
        const int dv = ss_model_get_config(draft)->vocab_rows;
        vocab = dv < vocab ? dv : vocab;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= vocab)
            return ss_fail(err, SS_ERR_OUT_OF_RANGE, "prompt token id %d at index %d is outside the vocabulary [0, %d)",
                           prompt[i], i, vocab);
    for (int i = 0; i < n_stop; i++)
        if (stop_ids[i] < 0 || stop_ids[i] >= tc->vocab_rows)
            return ss_fail(err, SS_ERR_OUT_OF_RANGE, "stop token id %d is outside the vocabulary [0, %d)",
                           stop_ids[i], tc->vocab_rows);

    ss_generator *g = calloc(1, sizeof *g);
    if (!g) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate a generator");
    g->target = target;
    g->spec = *spec;
    g->sampling = *sampling;
    g->vocab = vocab;
    g->vocab_rows = tc->vocab_rows;
    g->d_model = tc->d_model;
    g->max_new = max_new_tokens;
    g->n_prompt = n_prompt;
    ss_rng_seed(&g->rng, sampling->seed);

    const ss_cache_config *dcache = draft_cache ? draft_cache : target_cache;
    const ss_draft_sources src = {.target = target, .draft = uses_draft ? draft : NULL, .draft_cache = dcache,
                                  .medusa = medusa, .spec = spec, .max_prefill = prefill_chunk(dcache),
                                  .sequence_tokens = (int64_t)n_prompt + max_new_tokens};
    st = ss_drafter_create(&src, &g->drafter, err);
    if (st != SS_OK) {
        ss_generator_free(g);
        return st;
    }
    g->max_nodes = g->drafter ? g->drafter->ops->max_nodes(g->drafter) : 0;
    if (g->max_nodes > SS_MAX_TREE_NODES) g->max_nodes = SS_MAX_TREE_NODES;
    /* A full cache without a capacity holds what this call can produce, and
     * the pending tree of a round beyond it. */
    ss_cache_config tcache = *target_cache;
    st = ss_size_full_cache(&tcache, src.sequence_tokens + g->max_nodes + 2, err);
    if (st != SS_OK) {
        ss_generator_free(g);
        return st;
    }
    const size_t V = (size_t)g->vocab_rows, rows = (size_t)g->max_nodes + 1;
    g->cap_tokens = n_prompt + 64;
    g->tokens = ss_alloc((size_t)g->cap_tokens, sizeof(int32_t));
    g->stop_ids = ss_alloc((size_t)n_stop + 1, sizeof(int32_t));
    g->outbox = ss_alloc(rows + 1, sizeof(int32_t));
    g->logits = ss_alloc(rows * V, sizeof(float));
    if (g->drafter && g->drafter->ops->wants_hidden) g->hidden = ss_alloc(rows * (size_t)g->d_model, sizeof(float));
    g->work.p = ss_alloc(V, sizeof(float));
    g->work.q = ss_alloc(V, sizeof(float));
    g->work.scratch = ss_alloc(V, sizeof(ss_prob_index));
    g->feed = ss_alloc(rows, sizeof(int32_t));
    g->feed_parent = ss_alloc(rows, sizeof(int32_t));
    g->accept_path = ss_alloc(rows, sizeof(int32_t));
    g->tree.capacity = g->max_nodes;
    g->tree.token = ss_alloc(rows, sizeof(int32_t));
    g->tree.parent = ss_alloc(rows, sizeof(int32_t));
    g->tree.q = ss_alloc(rows, sizeof(float *));
    if (!g->tokens || !g->stop_ids || !g->outbox || !g->logits || !g->work.p || !g->work.q || !g->work.scratch ||
        !g->feed || !g->feed_parent || !g->accept_path || !g->tree.token || !g->tree.parent || !g->tree.q ||
        (g->drafter && g->drafter->ops->wants_hidden && !g->hidden)) {
        ss_generator_free(g);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate generator buffers");
    }
    memcpy(g->tokens, prompt, (size_t)n_prompt * sizeof(int32_t));
    g->n_tokens = n_prompt;
    if (n_stop > 0) memcpy(g->stop_ids, stop_ids, (size_t)n_stop * sizeof(int32_t));
    g->n_stop = n_stop;
    const int chunk = prefill_chunk(&tcache);
    st = ss_state_create(target, &tcache, chunk > g->max_nodes + 1 ? chunk : g->max_nodes + 1, &g->ts, err);
    if (st != SS_OK) {
        ss_generator_free(g);
        return st;
    }
    g->stats.cache_bytes = ss_state_cache_bytes(g->ts) + (g->drafter ? g->drafter->ops->cache_bytes(g->drafter) : 0);
    if (max_new_tokens == 0) g->done = 1;
    *out = g;
    return SS_OK;
}

/* ------------------------------------------------------------- helpers */

static ss_status push_token(ss_generator *g, int32_t t, ss_error *err) {
    if (g->n_tokens == g->cap_tokens) {
        const int64_t cap = 2 * g->cap_tokens;
        int32_t *grown = realloc(g->tokens, (size_t)cap * sizeof(int32_t));
        if (!grown) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot grow the token buffer");
        g->tokens = grown;
        g->cap_tokens = cap;
    }
    g->tokens[g->n_tokens++] = t;
    return SS_OK;
}

/* Hands a new token to the caller; ends generation on a stop id or the limit. */
static ss_status emit(ss_generator *g, int32_t t, ss_error *err) {
    if (g->done) return SS_OK;
    ss_status st = push_token(g, t, err);
    if (st != SS_OK) return st;
    g->outbox[g->n_outbox++] = t;
    g->produced++;
    if (g->produced == 1) g->t_first = ss_now();
    if (g->produced >= g->max_new) g->done = 1;
    for (int i = 0; i < g->n_stop; i++)
        if (g->stop_ids[i] == t) g->done = 1;
    return SS_OK;
}

static ss_draft_context context(ss_generator *g) {
    return (ss_draft_context){g->tokens, g->n_tokens, &g->sampling, &g->rng, g->vocab, g->work.scratch};
}

/* Runs `tokens` through a state in chunks of its largest batch, committing
 * after each; the last token's logits (and hidden state) into `logits`
 * (`hidden`) when non-NULL. Goes on from the state's length, so a prefix
 * cancelled between chunks resumes where it stopped. */
static ss_status run_prefix(const ss_model *m, ss_state *s, const int32_t *tokens, int64_t n, float *logits,
                            float *hidden, const volatile int *cancel, ss_error *err) {
    const int batch = ss_state_max_batch(s);
    for (int64_t i = ss_state_length(s); i < n; i += batch) {
        if (cancel && *cancel) return ss_fail(err, SS_ERR_CANCELLED, "generation cancelled during the prompt");
        const int chunk = (int)ss_min64(batch, n - i);
        const int last = i + chunk == n;
        ss_status st = ss_forward_tree(m, s, tokens + i, NULL, chunk, last ? logits : NULL, last ? hidden : NULL,
                                       last && (logits || hidden) ? 1 : 0, err);
        if (st == SS_OK) st = ss_state_commit(s, err);
        if (st != SS_OK) return st;
    }
    return SS_OK;
}

/* The prompt through the target and the drafter, then the first token. A
 * cancelled prefill keeps what it committed; the next call finishes it (the
 * target's outputs stay in g->logits / g->hidden meanwhile: nothing else
 * writes them). */
static ss_status prefill(ss_generator *g, const volatile int *cancel, ss_error *err) {
    const double t0 = ss_now();
    ss_status st = run_prefix(g->target, g->ts, g->tokens, g->n_prompt, g->logits, g->hidden, cancel, err);
    if (st == SS_OK && g->drafter) st = g->drafter->ops->prefill(g->drafter, g->tokens, g->n_prompt - 1, cancel, err);
    g->stats.prefill_s += ss_now() - t0;
    if (st != SS_OK) return st;
    g->prefilled = 1;
    /* the first token: a verdict on an empty tree */
    g->tree.n = g->tree.n_candidates = 0;
    ss_verify_walk(&g->tree, g->logits, g->vocab_rows, g->vocab, &g->sampling, -1.0f, &g->rng, &g->work, &g->walk);
    st = emit(g, g->walk.next, err);
    if (st == SS_OK && g->drafter) {
        const ss_draft_context ctx = context(g);
        const ss_verdict v = {g->walk.path, 0, g->walk.next, 0, g->logits, g->vocab_rows, g->hidden, 0.0, 0.0};
        st = g->drafter->ops->accept(g->drafter, &ctx, &g->tree, &v, err);
    }
    return st;
}

/* Acceptance by depth: at each depth the walk reached, whether the tree
 * offered candidates there and whether one was accepted. */
static void count_depths(ss_generator *g) {
    for (int d = 1; d <= g->walk.n_path + 1 && d <= SS_MAX_DEPTH; d++) {
        const int parent = d == 1 ? -1 : g->walk.path[d - 2];
        int offered = 0;
        for (int i = 0; i < g->tree.n_candidates && !offered; i++) offered = g->tree.parent[i] == parent;
        if (!offered) break;
        g->stats.depth_tried[d]++;
        if (d <= g->walk.n_path) g->stats.depth_accepted[d]++;
    }
}

/* One round: propose, verify in one target forward, accept. */
static ss_status round_step(ss_generator *g, ss_error *err) {
    const double t0 = ss_now();
    ss_draft_context ctx = context(g);
    ss_status st = SS_OK;
    g->tree.n = g->tree.n_candidates = 0;
    if (g->drafter) st = g->drafter->ops->propose(g->drafter, &ctx, &g->tree, err);
    if (st != SS_OK) return st;
    const double t1 = ss_now();
    const int n = 1 + g->tree.n;
    g->feed[0] = g->tokens[g->n_tokens - 1];
    g->feed_parent[0] = -1;
    for (int i = 0; i < g->tree.n; i++) {
        g->feed[1 + i] = g->tree.token[i];
        g->feed_parent[1 + i] = g->tree.parent[i] + 1; /* the root is pending token 0 */
    }
    st = ss_forward_tree(g->target, g->ts, g->feed, g->feed_parent, n, g->logits, g->hidden, n, err);
    if (st != SS_OK) return st;
    ss_verify_walk(&g->tree, g->logits, g->vocab_rows, g->vocab, &g->sampling, g->spec.forced_acceptance, &g->rng,
                   &g->work, &g->walk);
    g->accept_path[0] = 0;
    for (int i = 0; i < g->walk.n_path; i++) g->accept_path[1 + i] = 1 + g->walk.path[i];
    st = ss_state_accept(g->ts, g->accept_path, 1 + g->walk.n_path, err);
    const double t2 = ss_now();
    if (st == SS_OK && g->drafter) {
        ctx = context(g);
        const ss_verdict v = {g->walk.path, g->walk.n_path, g->walk.next, g->tree.n, g->logits, g->vocab_rows,
                              g->hidden, t1 - t0, t2 - t1};
        st = g->drafter->ops->accept(g->drafter, &ctx, &g->tree, &v, err);
    }
    if (st != SS_OK) return st;
    g->stats.draft_s += t1 - t0 + (ss_now() - t2);
    g->stats.verify_s += t2 - t1;
    g->stats.target_forwards++;
    if (g->drafter) {
        g->stats.draft_steps++;
        g->stats.drafted += g->tree.n_candidates;
        g->stats.accepted += g->walk.n_path;
        count_depths(g);
    }
    for (int i = 0; i < g->walk.n_path && st == SS_OK; i++) st = emit(g, g->tree.token[g->walk.path[i]], err);
    if (st == SS_OK) st = emit(g, g->walk.next, err);
    return st;
}

/* ---------------------------------------------------------------- step */

ss_status ss_generator_step(ss_generator *g, int32_t *out, int max_tokens, int *n_out,
                            const volatile int *cancel, ss_error *err) {
    *n_out = 0;
    if (max_tokens < 0) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "max_tokens must be >= 0");
    ss_status st = SS_OK;
    while (*n_out < max_tokens) {
        if (g->outbox_head < g->n_outbox) {
            out[(*n_out)++] = g->outbox[g->outbox_head++];
            continue;
        }
        g->outbox_head = g->n_outbox = 0;
        if (g->done) break;
        if (cancel && *cancel) {
            st = ss_fail(err, SS_ERR_CANCELLED, "generation cancelled");
            break;
        }
        if (!g->prefilled) {
            if (!g->started) g->t_start = ss_now();
            g->started = 1;
            st = prefill(g, cancel, err);
        } else {
            st = round_step(g, err);
        }
        if (st == SS_ERR_CANCELLED) break; /* between chunks: the next call goes on */
        if (st != SS_OK) {
            g->done = 1;
            return st;
        }
    }
    g->stats.new_tokens = g->produced;
    if (g->produced > 0) {
        g->stats.ttft_s = g->t_first - g->t_start;
        g->stats.decode_s = ss_now() - g->t_first;
    }
    return st;
}

int ss_generator_done(const ss_generator *g) { return g->done && g->outbox_head >= g->n_outbox; }
const ss_gen_stats *ss_generator_stats(const ss_generator *g) { return &g->stats; }
const ss_state *ss_generator_target_state(const ss_generator *g) { return g->ts; }
