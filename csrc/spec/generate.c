/* Generation: target-only decoding and speculative decoding behind one loop.
 *
 * Invariant between steps: the target has processed every committed token but
 * the last one (`tokens[n-1]`), which the next step feeds. A speculative step:
 *
 *   1. the draft proposes d1..dk (k cheap one-token forwards, or an n-gram
 *      match in the context for prompt lookup);
 *   2. the target runs [last, d1..dk] in ONE forward: k+1 distributions;
 *   3. the verifier keeps the longest acceptable prefix d1..dj and adds one
 *      token y (correction on rejection, bonus when all k pass);
 *   4. both caches roll back what was rejected (a length change) and commit,
 *      which applies evictions only now, after acceptance.
 *
 * Greedy verification accepts while the target's argmax equals the draft;
 * sampling uses the lossless rule (accept with min(1, p/q), else resample
 * from max(0, p - q)), so the output distribution is the target's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "spec/sampling.h"

enum { PREFILL_CHUNK = 256, MIN_BOUNDED_CHUNK = 16, LOOKUP_HORIZON = 4096 };

struct ss_generator {
    const ss_model *target, *draft;
    ss_state *ts, *ds;
    ss_speculative spec;
    ss_sampling sampling;
    ss_rng rng;
    int vocab;            /* ids both models share                          */
    int k_cap;            /* largest k a step may use                       */
    int k;                /* k of the next step                             */
    double ema_accept;    /* acceptance rate per drafted token              */
    double ema_cost;      /* draft time per token / target verify time      */
    /* committed sequence: prompt then generated tokens */
    int32_t *tokens;
    int64_t n_tokens, cap_tokens, n_prompt;
    int64_t draft_len;    /* tokens the draft has processed                 */
    int64_t max_new, produced;
    int32_t *stop_ids;
    int n_stop;
    /* tokens produced but not yet handed out */
    int32_t *outbox;
    int n_outbox, outbox_head;
    int started, prefilled, done;
    float *logits;        /* [k_cap + 1][target vocab_rows]                 */
    float *draft_logits;  /* [draft vocab_rows]                             */
    float *p, *q;         /* [k_cap + 1][vocab] target / [k_cap][vocab] draft */
    ss_prob_index *scratch;
    int32_t *feed;        /* [k_cap + 1]: the last token, then proposals  */
    int32_t *proposal;    /* feed + 1                                       */
    double t_start, t_first;
    ss_gen_stats stats;
};

static int greedy(const ss_generator *g) { return g->sampling.temperature <= 0.0f; }

const char *const ss_spec_method_names[] = {"none", "draft", "lookup", NULL};

ss_status ss_speculative_rules(const ss_speculative *s, ss_error *err) {
    if (s->adaptive && s->k_max < s->k_min)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "SpeculativeConfig needs k_min <= k_max <= 64, got k_min=%d k_max=%d", s->k_min, s->k_max);
    return SS_OK;
}

void ss_generator_free(ss_generator *g) {
    if (!g) return;
    ss_state_free(g->ts);
    ss_state_free(g->ds);
    void *bufs[] = {g->tokens, g->stop_ids, g->outbox, g->logits, g->draft_logits,
                    g->p, g->q, g->scratch, g->feed};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ss_free(bufs[i]);
    free(g);
}

/* The largest batch of a generator's state: a prefill chunk, at least one
 * verification (k + 1 tokens). A bounded ring keeps room for a whole pending
 * batch next to its window (window + R - 1 + batch slots), so a 256-token
 * chunk would more than double the memory of a small window: bounded caches
 * prefill in chunks of a quarter window instead (16 tokens at least, where
 * the GEMM path still pays off). */
static int state_batch(const ss_cache_config *cache, int k_cap) {
    int batch = PREFILL_CHUNK;
    if (cache->policy != SS_CACHE_FULL && cache->policy != SS_CACHE_RECOMPUTE) {
        const int quarter = cache->window / 4 > MIN_BOUNDED_CHUNK ? cache->window / 4 : MIN_BOUNDED_CHUNK;
        if (quarter < batch) batch = quarter;
    }
    return batch > k_cap + 1 ? batch : k_cap + 1;
}

static ss_status size_full_cache(ss_cache_config *c, int64_t needed, ss_error *err) {
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
                              const ss_speculative *spec, const ss_sampling *sampling,
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
    if (spec->method == SS_SPEC_DRAFT && (!draft || !draft_cache))
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "speculative decoding with a draft model needs the draft");
    const ss_model_config *tc = ss_model_get_config(target);
    int vocab = tc->vocab_rows;
    if (spec->method == SS_SPEC_DRAFT) {
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
    g->draft = spec->method == SS_SPEC_DRAFT ? draft : NULL;
    g->spec = *spec;
    g->sampling = *sampling;
    g->vocab = vocab;
    ss_rng_seed(&g->rng, sampling->seed);
    g->k_cap = spec->method == SS_SPEC_NONE ? 0 : spec->adaptive ? spec->k_max : spec->k;
    g->k = spec->k;
    if (spec->adaptive) g->k = spec->k < spec->k_min ? spec->k_min : spec->k > spec->k_max ? spec->k_max : spec->k;
    g->ema_accept = 0.7;
    if (spec->cost_ratio == SS_COST_RATIO_BYTES) /* what bounds batch-1 decode on a CPU */
        g->ema_cost = g->draft ? (double)ss_model_weight_bytes(draft) / (double)ss_model_weight_bytes(target) : 0.0;
    else
        g->ema_cost = spec->cost_ratio == SS_COST_RATIO_MEASURED ? 0.1 : spec->cost_ratio;
    g->max_new = max_new_tokens;
    g->n_prompt = n_prompt;
    g->cap_tokens = n_prompt + 64;
    const size_t V = (size_t)tc->vocab_rows, K1 = (size_t)g->k_cap + 1;
    g->tokens = ss_alloc((size_t)g->cap_tokens, sizeof(int32_t));
    g->stop_ids = ss_alloc((size_t)n_stop + 1, sizeof(int32_t));
    g->outbox = ss_alloc(K1 + 1, sizeof(int32_t));
    g->logits = ss_alloc(K1 * V, sizeof(float));
    g->p = ss_alloc(K1 * (size_t)vocab, sizeof(float));
    g->q = ss_alloc(K1 * (size_t)vocab, sizeof(float));
    g->scratch = ss_alloc(V, sizeof(ss_prob_index));
    g->feed = ss_alloc(K1, sizeof(int32_t));
    g->proposal = g->feed + 1;
    if (g->draft) g->draft_logits = ss_alloc((size_t)ss_model_get_config(draft)->vocab_rows, sizeof(float));
    if (!g->tokens || !g->stop_ids || !g->outbox || !g->logits || !g->p || !g->q || !g->scratch ||
        !g->feed || (g->draft && !g->draft_logits)) {
        ss_generator_free(g);
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate generator buffers");
    }
    memcpy(g->tokens, prompt, (size_t)n_prompt * sizeof(int32_t));
    g->n_tokens = n_prompt;
    if (n_stop > 0) memcpy(g->stop_ids, stop_ids, (size_t)n_stop * sizeof(int32_t));
    g->n_stop = n_stop;
    /* A full cache without a capacity holds what this call can produce. */
    const int64_t needed = (int64_t)n_prompt + max_new_tokens + g->k_cap + 2;
    ss_cache_config tcache = *target_cache, dcache = draft_cache ? *draft_cache : *target_cache;
    st = size_full_cache(&tcache, needed, err);
    if (st == SS_OK) st = size_full_cache(&dcache, needed, err);
    if (st == SS_OK) st = ss_state_create(target, &tcache, state_batch(&tcache, g->k_cap), &g->ts, err);
    if (st == SS_OK && g->draft) st = ss_state_create(draft, &dcache, state_batch(&dcache, g->k_cap), &g->ds, err);
    if (st != SS_OK) {
        ss_generator_free(g);
        return st;
    }
    g->stats.cache_bytes = ss_state_cache_bytes(g->ts) + (g->ds ? ss_state_cache_bytes(g->ds) : 0);
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

/* Samples (or picks greedily) from one row of target logits; for sampling
 * also leaves the distribution in probs. */
static int32_t choose(ss_generator *g, const float *logits, float *probs) {
    if (greedy(g)) return ss_argmax(logits, g->vocab);
    ss_sampling_probs(logits, g->vocab, &g->sampling, probs, g->scratch);
    return ss_sample(probs, g->vocab, &g->rng);
}

/* Runs `tokens` through a state in chunks of its largest batch, committing
 * after each; logits of the last token into `logits` when non-NULL. Goes on
 * from the state's length, so a prefix cancelled between chunks resumes
 * where it stopped. */
static ss_status run_prefix(const ss_model *m, ss_state *s, const int32_t *tokens, int64_t n,
                            float *logits, const volatile int *cancel, ss_error *err) {
    const int batch = ss_state_max_batch(s);
    for (int64_t i = ss_state_length(s); i < n; i += batch) {
        if (cancel && *cancel) return ss_fail(err, SS_ERR_CANCELLED, "generation cancelled during the prompt");
        const int chunk = (int)ss_min64(batch, n - i);
        const int last = i + chunk == n;
        ss_status st = ss_forward(m, s, tokens + i, chunk, last ? logits : NULL, last && logits ? 1 : 0, err);
        if (st != SS_OK) return st;
        ss_state_commit(s);
    }
    return SS_OK;
}

/* The prompt through both models, then the first token. A cancelled
 * prefill keeps what it committed; the next call finishes it (the target's
 * logits stay in g->logits meanwhile: nothing else writes them). */
static ss_status prefill(ss_generator *g, const volatile int *cancel, ss_error *err) {
    const double t0 = ss_now();
    ss_status st = run_prefix(g->target, g->ts, g->tokens, g->n_prompt, g->logits, cancel, err);
    if (st == SS_OK && g->ds) {
        st = run_prefix(g->draft, g->ds, g->tokens, g->n_prompt, NULL, cancel, err);
        if (st == SS_OK) g->draft_len = g->n_prompt;
    }
    g->stats.prefill_s += ss_now() - t0;
    if (st != SS_OK) return st;
    g->prefilled = 1;
    return emit(g, choose(g, g->logits, g->p), err);
}

/* Target-only: feed the last token, pick the next. */
static ss_status plain_step(ss_generator *g, ss_error *err) {
    const double t0 = ss_now();
    ss_status st = ss_forward(g->target, g->ts, &g->tokens[g->n_tokens - 1], 1, g->logits, 1, err);
    if (st != SS_OK) return st;
    ss_state_commit(g->ts);
    g->stats.target_forwards++;
    g->stats.verify_s += ss_now() - t0;
    return emit(g, choose(g, g->logits, g->p), err);
}

/* Draft model proposals d1..dk; q rows hold their distributions. */
static ss_status propose_with_model(ss_generator *g, int k, ss_error *err) {
    const int64_t unseen = g->n_tokens - g->draft_len;
    ss_status st = ss_forward(g->draft, g->ds, g->tokens + g->draft_len, (int)unseen, g->draft_logits, 1, err);
    for (int i = 0; i < k && st == SS_OK; i++) {
        float *q = g->q + (size_t)i * g->vocab;
        g->proposal[i] = choose(g, g->draft_logits, q);
        if (i + 1 < k) st = ss_forward(g->draft, g->ds, &g->proposal[i], 1, g->draft_logits, 1, err);
    }
    return st;
}

/* Prompt lookup: the tokens that followed the most recent earlier occurrence
 * of the context's last n-gram (longest n first). Returns how many. */
static int propose_with_lookup(ss_generator *g, int k) {
    const int64_t n = g->n_tokens, horizon = ss_max64(0, n - LOOKUP_HORIZON);
    for (int ng = g->spec.lookup_ngram; ng >= 1; ng--) {
        if (n < ng + 1) continue;
        const int32_t *suffix = g->tokens + n - ng;
        for (int64_t start = n - ng - 1; start >= horizon; start--) {
            if (memcmp(g->tokens + start, suffix, (size_t)ng * sizeof(int32_t)) != 0) continue;
            int count = 0;
            for (int64_t j = start + ng; j < n && count < k; j++) g->proposal[count++] = g->tokens[j];
            return count;
        }
    }
    return 0;
}

/* Accepts or rejects proposal i against target row i. On rejection returns 0
 * and sets *fix to the corrected token. q == NULL: a deterministic proposal. */
static int verify_one(ss_generator *g, int i, const float *q, int32_t *fix) {
    const float *logits = g->logits + (size_t)i * ss_model_get_config(g->target)->vocab_rows;
    const int32_t d = g->proposal[i];
    float *p = g->p + (size_t)i * g->vocab;
    if (g->spec.forced_acceptance >= 0.0f) { /* benchmark knob: ignores the models */
        if (ss_rng_uniform(&g->rng) < g->spec.forced_acceptance) return 1;
        *fix = choose(g, logits, p);
        return 0;
    }
    if (greedy(g)) {
        const int32_t best = ss_argmax(logits, g->vocab);
        if (best == d) return 1;
        *fix = best;
        return 0;
    }
    ss_sampling_probs(logits, g->vocab, &g->sampling, p, g->scratch);
    const double qd = q ? q[d] : 1.0;
    if (ss_rng_uniform(&g->rng) * qd < p[d]) return 1;
    /* Residual distribution max(0, p - q), sampled unnormalised. */
    for (int v = 0; v < g->vocab; v++) {
        const float qv = q ? q[v] : (v == d ? 1.0f : 0.0f);
        p[v] = p[v] > qv ? p[v] - qv : 0.0f;
    }
    *fix = ss_sample(p, g->vocab, &g->rng);
    return 0;
}

/* The k that maximises expected tokens per unit time,
 * (1 - a^(k+1)) / ((1 - a)(1 + k c)), for the running estimates of a and c. */
static int pick_k(const ss_generator *g) {
    const double a = fmin(0.99, fmax(0.01, g->ema_accept)), c = fmax(1e-3, g->ema_cost);
    int best = g->spec.k_min;
    double best_rate = -1.0;
    for (int k = g->spec.k_min; k <= g->spec.k_max; k++) {
        const double rate = (1.0 - pow(a, k + 1)) / ((1.0 - a) * (1.0 + k * c));
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    return best;
}

static ss_status speculative_step(ss_generator *g, ss_error *err) {
    int k = g->k;
    const double t0 = ss_now();
    ss_status st = SS_OK;
    if (g->ds) {
        st = propose_with_model(g, k, err);
    } else {
        k = propose_with_lookup(g, k);
        if (k == 0) return plain_step(g, err);
    }
    if (st != SS_OK) return st;
    const double t1 = ss_now();
    /* One target forward over [last, d1..dk]. */
    g->feed[0] = g->tokens[g->n_tokens - 1];
    st = ss_forward(g->target, g->ts, g->feed, k + 1, g->logits, k + 1, err);
    if (st != SS_OK) return st;
    int accepted = 0;
    int32_t next = 0;
    for (; accepted < k; accepted++)
        if (!verify_one(g, accepted, g->ds ? g->q + (size_t)accepted * g->vocab : NULL, &next)) break;
    if (accepted == k) {
        const float *row = g->logits + (size_t)k * ss_model_get_config(g->target)->vocab_rows;
        next = choose(g, row, g->p + (size_t)k * g->vocab);
    }
    st = ss_state_rollback(g->ts, k - accepted, err);
    if (st != SS_OK) return st;
    ss_state_commit(g->ts);
    if (g->ds) {
        /* The draft saw d1..d(k-1); keep what was accepted. */
        const int seen = k - 1, keep = accepted < seen ? accepted : seen;
        st = ss_state_rollback(g->ds, seen - keep, err);
        if (st != SS_OK) return st;
        ss_state_commit(g->ds);
        g->draft_len = g->n_tokens + keep;
    }
    const double t2 = ss_now();
    g->stats.draft_s += t1 - t0;
    g->stats.verify_s += t2 - t1;
    g->stats.target_forwards++;
    g->stats.draft_steps++;
    g->stats.drafted += k;
    g->stats.accepted += accepted;
    for (int i = 0; i < accepted && st == SS_OK; i++) st = emit(g, g->proposal[i], err);
    if (st == SS_OK) st = emit(g, next, err);
    if (g->spec.adaptive) {
        const double w = g->spec.ema_decay;
        g->ema_accept = w * g->ema_accept + (1.0 - w) * ((double)accepted / k);
        if (g->spec.cost_ratio == SS_COST_RATIO_MEASURED && g->ds && t2 > t1) g->ema_cost = w * g->ema_cost + (1.0 - w) * ((t1 - t0) / k) / (t2 - t1);
        g->k = pick_k(g);
    }
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
        } else if (g->spec.method == SS_SPEC_NONE) {
            st = plain_step(g, err);
        } else {
            st = speculative_step(g, err);
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
