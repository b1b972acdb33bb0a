/* A pure-C driver of the public API (csrc/include/specstream.h), for memory
 * checkers: valgrind and AddressSanitizer/LeakSanitizer run it without a
 * Python interpreter in the way, so every report is about the C core.
 *
 * It builds tiny GPT-NeoX models from random weights (f32, f16 and bf16
 * storage; borrowed, converted or quantized to int8), then exercises every
 * entry point: each cache policy through ss_forward (chunked, rolled back,
 * committed, eviction log), ss_eval_nll (with cancellation), the generator
 * (target-only, draft model, prompt lookup, greedy, sampling with
 * top-k/top-p, adaptive k, forced acceptance, stop ids, cancellation, early
 * free), short-lived threads, and the error paths, and checks a few
 * invariants (speculative greedy output == target-only greedy output).
 * Exit status 0 and a last line "harness: OK ..." on success.
 *
 * Usage: harness [--quick] [repeats]
 *   --quick    fewer cache x sampler x drafting combinations (valgrind)
 *   repeats    run everything this many times (look for growth)
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specstream.h"

static int checks, failures;
static int quick; /* --quick: fewer combinations (for valgrind) */

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        checks++;                                                                 \
        if (!(cond)) {                                                            \
            failures++;                                                           \
            fprintf(stderr, "harness: FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
        }                                                                         \
    } while (0)

/* The call must succeed. */
#define OK(call)                                                                  \
    do {                                                                          \
        ss_error err_ = {{0}};                                                    \
        ss_status st_ = (call_with(&err_, call));                                 \
        CHECK(st_ == SS_OK, "%s -> status %d: %s", #call, (int)st_, err_.message); \
    } while (0)

/* Helpers pass &err through a macro argument named E. */
#define call_with(e, expr) (E = (e), (expr))
static ss_error *E;

/* The call must fail with `status` and a message containing `needle`. */
#define FAILS(status, needle, call)                                               \
    do {                                                                          \
        ss_error err_ = {{0}};                                                    \
        ss_status st_ = (call_with(&err_, call));                                 \
        CHECK(st_ == (status) && strstr(err_.message, needle) != NULL,            \
              "%s -> status %d (want %d): '%s' (want '%s')", #call, (int)st_,     \
              (int)(status), err_.message, needle);                               \
    } while (0)

/* ------------------------------------------------------------ random weights */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) * 0x1.0p-52 - 1.0);
}

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static uint16_t to_f16(float f) { /* values here are small and normal */
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const int exp = (int)((u >> 23) & 0xff) - 127 + 15;
    if (exp <= 0) return (uint16_t)sign;
    return (uint16_t)(sign | ((uint32_t)exp << 10) | ((u >> 13) & 0x3ffu));
}

typedef struct {
    ss_model_config cfg;
    ss_weights w;
    ss_layer_weights *layers;
    void **bufs;
    int n_bufs;
} host_weights;

static ss_tensor make_tensor(host_weights *h, int64_t rows, int64_t cols, ss_dtype dt, float scale, float offset) {
    const size_t n = (size_t)(rows * cols), es = dt == SS_F32 ? 4 : 2;
    void *p = malloc(n * es);
    h->bufs[h->n_bufs++] = p;
    for (size_t i = 0; i < n; i++) {
        const float v = offset + scale * frand();
        if (dt == SS_F32) ((float *)p)[i] = v;
        else if (dt == SS_BF16) ((uint16_t *)p)[i] = to_bf16(v);
        else ((uint16_t *)p)[i] = to_f16(v);
    }
    return (ss_tensor){.data = p, .dtype = dt, .rows = rows, .cols = cols};
}

static void host_init(host_weights *h, int n_layer, int d, int n_head, int ff, int vocab, int parallel,
                      ss_dtype dt, uint64_t seed) {
    memset(h, 0, sizeof *h);
    rng_state = seed * 0x2545f4914f6cdd1dull + 1;
    h->cfg = (ss_model_config){.n_layer = n_layer, .d_model = d, .n_head = n_head, .d_ff = ff,
                               .vocab_rows = vocab, .rotary_dim = (d / n_head) / 2, .rotary_base = 10000.0,
                               .layer_norm_eps = 1e-5f, .parallel_residual = parallel, .gelu_tanh = !parallel};
    h->bufs = calloc((size_t)(4 + 12 * n_layer), sizeof *h->bufs);
    h->layers = calloc((size_t)n_layer, sizeof *h->layers);
    const float wscale = 0.08f, bscale = 0.02f;
    h->w.embed_in = make_tensor(h, vocab, d, dt, 1.0f, 0.0f);
    h->w.embed_out = make_tensor(h, vocab, d, dt, 1.7f / sqrtf((float)d), 0.0f);
    h->w.final_ln_w = make_tensor(h, d, 1, SS_F32, 0.05f, 1.0f);
    h->w.final_ln_b = make_tensor(h, d, 1, dt, bscale, 0.0f);
    for (int i = 0; i < n_layer; i++) {
        ss_layer_weights *L = &h->layers[i];
        L->ln1_w = make_tensor(h, d, 1, dt, 0.05f, 1.0f);
        L->ln1_b = make_tensor(h, d, 1, dt, bscale, 0.0f);
        L->ln2_w = make_tensor(h, d, 1, dt, 0.05f, 1.0f);
        L->ln2_b = make_tensor(h, d, 1, dt, bscale, 0.0f);
        L->qkv_w = make_tensor(h, 3 * d, d, dt, wscale, 0.0f);
        L->qkv_b = make_tensor(h, 3 * d, 1, dt, bscale, 0.0f);
        L->out_w = make_tensor(h, d, d, dt, wscale, 0.0f);
        L->out_b = make_tensor(h, d, 1, dt, bscale, 0.0f);
        L->fc1_w = make_tensor(h, ff, d, dt, wscale, 0.0f);
        L->fc1_b = make_tensor(h, ff, 1, dt, bscale, 0.0f);
        L->fc2_w = make_tensor(h, d, ff, dt, wscale, 0.0f);
        L->fc2_b = make_tensor(h, d, 1, dt, bscale, 0.0f);
    }
    h->w.layers = h->layers;
}

static void host_free(host_weights *h) {
    for (int i = 0; i < h->n_bufs; i++) free(h->bufs[i]);
    free(h->bufs);
    free(h->layers);
}

/* ------------------------------------------------------------------ caches */

enum { N_CACHES = 15 };

static const int32_t STRUCTURAL[] = {3, 7, 11};

/* The default cache config (a zero-initialised one is not valid). */
static ss_cache_config cache_defaults(ss_cache_policy policy) {
    ss_cache_config c;
    ss_config_defaults(SS_CONFIG_CACHE, &c);
    c.policy = policy;
    return c;
}

static ss_cache_config full_cache(int capacity) {
    ss_cache_config c = cache_defaults(SS_CACHE_FULL);
    c.capacity = capacity;
    return c;
}

static ss_cache_config cache_config(int which) {
    static const ss_cache_policy policies[N_CACHES] = {
        SS_CACHE_FULL, SS_CACHE_WINDOW, SS_CACHE_STREAMING, SS_CACHE_STREAMING, SS_CACHE_RECOMPUTE, SS_CACHE_H2O,
        SS_CACHE_SNAPKV, SS_CACHE_KEYNORM, SS_CACHE_STREAMING, SS_CACHE_WINDOW, SS_CACHE_STREAMING,
        SS_CACHE_SCISSORHANDS, SS_CACHE_ADAKV, SS_CACHE_PYRAMIDKV, SS_CACHE_HEADAWARE};
    ss_cache_config c = cache_defaults(policies[which]);
    c.n_sink = 2;
    c.window = 8;
    switch (which) {
    case 0: c.capacity = 512; break;
    case 3: /* lazy pruning with spread-out eviction and overlap */
        c.n_sink = 3, c.window = 9, c.compress_every = 5, c.max_drop = 2, c.overlap = 1;
        break;
    case 4: c.window = 7; break;
    case 5: c.window = 6, c.heavy = 3, c.compress_every = 2; break;
    case 6: c.window = 6, c.heavy = 3, c.compress_every = 4; break;
    case 7: c.n_sink = 1, c.window = 6, c.heavy = 2; break;
    case 8: c.compress_every = 3, c.refresh_budget = 2, c.refresh = SS_REFRESH_UNIFORM; break;
    case 9:
        c.refresh_budget = 3, c.refresh = SS_REFRESH_STRUCTURAL;
        c.structural_ids = STRUCTURAL, c.n_structural_ids = 3;
        break;
    case 10: c.compress_every = 4, c.refresh_budget = 2, c.refresh = SS_REFRESH_ENTROPY, c.entropy_threshold = 3.0f; break;
    case 11: c.window = 6, c.heavy = 3, c.history = 4; break;
    case 12: c.window = 6, c.heavy = 3, c.compress_every = 3, c.overlap = 1; break;
    case 13: c.window = 6, c.heavy = 4, c.share = SS_SHARE_LAYER, c.pyramid_beta = 2.0f; break;
    case 14: c.window = 6, c.heavy = 3, c.compress_every = 3, c.positions = SS_POSITIONS_CACHE; break;
    default: break;
    }
    return c;
}

/* ---------------------------------------------------------------- exercises */

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Forward through one cache policy: prefill in chunks, decode, a speculative
 * style forward + rollback, the eviction log; logits must agree with
 * token-by-token decoding. */
static void exercise_state(const ss_model *m, int which, int n_tokens) {
    const int V = ss_model_get_config(m)->vocab_rows;
    const ss_cache_config cc = cache_config(which);
    int32_t *ids = malloc((size_t)n_tokens * sizeof *ids);
    for (int i = 0; i < n_tokens; i++) ids[i] = (int32_t)((i * 7 + 3) % V);
    float *a = malloc((size_t)n_tokens * V * sizeof(float)), *b = malloc((size_t)n_tokens * V * sizeof(float));

    ss_state *s1 = NULL, *s2 = NULL;
    OK(ss_state_create(m, &cc, 1, &s1, E));
    OK(ss_state_create(m, &cc, 16, &s2, E));
    if (!s1 || !s2) goto out;
    ss_state_record_evictions(s1, 1);
    for (int i = 0; i < n_tokens; i++) {
        OK(ss_forward(m, s1, ids + i, 1, a + (size_t)i * V, 1, E));
        OK(ss_state_commit(s1, E));
        CHECK(ss_state_visible(s1) >= 1, "visible %d", ss_state_visible(s1));
    }
    CHECK(ss_state_length(s1) == n_tokens, "length %lld", (long long)ss_state_length(s1));
    size_t n_ev = 0;
    const ss_eviction *ev = ss_state_evictions(s1, &n_ev);
    /* An eviction is due before a token is appended: the last may be for
     * the token after the stream. */
    for (size_t i = 0; i < n_ev; i++)
        CHECK(ev[i].dropped > 0 && ev[i].step <= n_tokens && ev[i].kept >= 1, "event %zu", i);
    if (cc.policy != SS_CACHE_FULL && cc.policy != SS_CACHE_RECOMPUTE && n_tokens >= 30)
        CHECK(n_ev > 0, "policy %d evicted nothing", (int)cc.policy);
    ss_state_clear_evictions(s1);
    ev = ss_state_evictions(s1, &n_ev);
    CHECK(n_ev == 0, "cleared log has %zu events", n_ev);

    /* Chunked: speculative-style over-run + rollback, then the real tokens. */
    int pos = 0;
    while (pos < n_tokens) {
        const int c = n_tokens - pos < 5 ? n_tokens - pos : 5;
        int32_t junk[3] = {1, 2, 3};
        OK(ss_forward(m, s2, ids + pos, c, b + (size_t)pos * V, c, E));
        if (pos + c < n_tokens && c + 3 <= 16) {
            OK(ss_forward(m, s2, junk, 3, NULL, 0, E));
            OK(ss_state_rollback(s2, 3, E));
        }
        OK(ss_state_commit(s2, E));
        pos += c;
    }
    CHECK(all_finite(b, (size_t)n_tokens * V), "non-finite logits, policy %d", (int)cc.policy);
    /* Data-dependent policies settle choices at commit, so chunked runs may
     * differ from token-by-token ones; the rest must agree. */
    const int exact = cc.policy <= SS_CACHE_RECOMPUTE && cc.refresh_budget == 0 && cc.entropy_threshold == 0.0f;
    if (exact) {
        double worst = 0.0;
        for (size_t i = 0; i < (size_t)n_tokens * V; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
        CHECK(worst < 1e-3, "policy case %d: chunked vs token-by-token differ by %g", which, worst);
    }
    CHECK(ss_state_cache_bytes(s2) > 0, "cache bytes");
out:
    ss_state_free(s1);
    ss_state_free(s2);
    free(ids);
    free(a);
    free(b);
}

static void exercise_eval(const ss_model *m, int which) {
    const int V = ss_model_get_config(m)->vocab_rows, n = quick ? 30 : 50;
    const ss_cache_config cc = cache_config(which);
    int32_t ids[50];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 13 + 1) % V);
    float nll[49];
    int32_t visible[50];
    double t0, t1;
    int64_t done = 0;
    for (int chunk = 1; chunk <= 8; chunk += 7) {
        ss_state *s = NULL;
        OK(ss_state_create(m, &cc, chunk, &s, E));
        if (!s) continue;
        ss_state_record_evictions(s, 1);
        OK(ss_eval_nll(m, s, ids, n, chunk, nll, visible, &t0, &t1, &done, NULL, E));
        CHECK(done == n && all_finite(nll, (size_t)n - 1), "eval_nll policy case %d chunk %d", which, chunk);
        for (int i = 0; i < n - 1; i++) CHECK(nll[i] >= 0.0f, "nll[%d] = %g", i, (double)nll[i]);
        /* not fresh any more */
        FAILS(SS_ERR_INVALID_ARGUMENT, "fresh state", ss_eval_nll(m, s, ids, n, chunk, nll, NULL, &t0, &t1, &done, NULL, E));
        ss_state_free(s);
    }
    ss_state *s = NULL;
    OK(ss_state_create(m, &cc, 4, &s, E));
    volatile int cancel = 1;
    FAILS(SS_ERR_CANCELLED, "cancelled", ss_eval_nll(m, s, ids, n, 4, nll, NULL, &t0, &t1, &done, &cancel, E));
    CHECK(done == 0, "done %lld after cancel", (long long)done);
    ss_state_free(s);
}

typedef struct {
    ss_spec_method method;
    int k, adaptive;
    float forced;
    ss_sampling sampling;
    int use_padded_draft;
} gen_case;

/* Runs a generation to the end in steps of 3 tokens; returns tokens made. */
static int run_generation(const ss_model *t, const ss_model *d, const ss_cache_config *tc, const ss_cache_config *dc,
                          const gen_case *gc, int max_new, int32_t *out) {
    const int32_t prompt[] = {5, 9, 2, 5, 9, 2, 5, 9, 11, 4, 5, 9};
    const int32_t stops[] = {0};
    ss_speculative spec;
    ss_config_defaults(SS_CONFIG_SPECULATIVE, &spec);
    spec.method = gc->method;
    spec.k = gc->k > 0 ? gc->k : 1;
    spec.adaptive = gc->adaptive;
    spec.k_max = 6;
    spec.ema_decay = 0.7f;
    spec.cost_ratio = 0.1f;
    spec.forced_acceptance = gc->forced;
    ss_generator *g = NULL;
    const int uses_draft = gc->method == SS_SPEC_DRAFT || gc->method == SS_SPEC_TREE;
    OK(ss_generator_create(t, tc, uses_draft ? d : NULL, dc, NULL, &spec, &gc->sampling, prompt,
                           (int)(sizeof prompt / sizeof prompt[0]), max_new, stops, 1, &g, E));
    if (!g) return 0;
    int total = 0;
    while (!ss_generator_done(g)) {
        int got = 0;
        OK(ss_generator_step(g, out + total, 3, &got, NULL, E));
        CHECK(got >= 0 && got <= 3, "step returned %d", got);
        total += got;
        if (got == 0) break;
    }
    const ss_gen_stats *st = ss_generator_stats(g);
    CHECK(st->new_tokens == total, "stats %lld vs %d", (long long)st->new_tokens, total);
    CHECK(st->accepted <= st->drafted, "accepted %lld > drafted %lld", (long long)st->accepted, (long long)st->drafted);
    if (total > 0) CHECK(ss_state_length(ss_generator_target_state(g)) >= 12, "target length");
    CHECK(st->cache_bytes > 0, "cache bytes");
    ss_generator_free(g);
    return total;
}

static void exercise_generation(const ss_model *t, const ss_model *d, const ss_model *d_padded) {
    enum { MAX_OUT = 24 };
    const int MAX_NEW = quick ? 12 : MAX_OUT;
    int32_t ref[MAX_OUT], out[MAX_OUT];
    const ss_sampling greedy = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 1};
    const ss_sampling samplers[] = {
        {.temperature = 0.9f, .top_k = 0, .top_p = 1.0f, .seed = 7},
        {.temperature = 1.2f, .top_k = 5, .top_p = 1.0f, .seed = 8},
        {.temperature = 0.8f, .top_k = 0, .top_p = 0.7f, .seed = 9},
        {.temperature = 1.0f, .top_k = 9, .top_p = 0.9f, .seed = 10},
    };
    const int all_caches[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, quick_caches[] = {0, 3, 5, 10, 12};
    const int *caches = quick ? quick_caches : all_caches;
    const size_t n_caches = quick ? 5 : 15;
    for (size_t ci = 0; ci < n_caches; ci++) {
        ss_cache_config tc = cache_config(caches[ci]);
        if (tc.policy == SS_CACHE_FULL) tc.capacity = 12 + MAX_NEW + 40; /* room for a pending tree */
        /* a score-policy draft decides heavy sets over several forwards
         * between commits (its rows are replayed layer by layer) */
        const ss_cache_config dc = cache_config(ci % 2 ? 12 : 2);
        const gen_case plain = {.method = SS_SPEC_NONE, .forced = -1.0f, .sampling = greedy};
        const int n_ref = run_generation(t, d, &tc, &dc, &plain, MAX_NEW, ref);
        const gen_case greedy_cases[] = {
            {.method = SS_SPEC_DRAFT, .k = 4, .forced = -1.0f, .sampling = greedy},
            {.method = SS_SPEC_DRAFT, .k = 3, .adaptive = 1, .forced = -1.0f, .sampling = greedy},
            {.method = SS_SPEC_LOOKUP, .k = 5, .forced = -1.0f, .sampling = greedy},
            {.method = SS_SPEC_DRAFT, .k = 2, .forced = -1.0f, .sampling = greedy, .use_padded_draft = 1},
            {.method = SS_SPEC_TREE, .k = 3, .forced = -1.0f, .sampling = greedy},
            {.method = SS_SPEC_LOOKAHEAD, .k = 3, .forced = -1.0f, .sampling = greedy},
        };
        /* Greedy speculative decoding is lossless for policies without
         * data-dependent choices; score policies are too, up to near-ties
         * that batch shapes may flip (random weights have many: the Python
         * tests check them on models with clear heavy hitters). */
        const int exact = tc.policy <= SS_CACHE_RECOMPUTE && tc.refresh_budget == 0 && tc.entropy_threshold == 0.0f;
        for (size_t g = 0; g < sizeof greedy_cases / sizeof greedy_cases[0]; g++) {
            const gen_case *gc = &greedy_cases[g];
            const int n = run_generation(t, gc->use_padded_draft ? d_padded : d, &tc, &dc, gc, MAX_NEW, out);
            if (exact)
                CHECK(n == n_ref && memcmp(out, ref, (size_t)n * sizeof *out) == 0,
                      "cache case %d, greedy case %zu: speculative output differs from target-only", caches[ci], g);
        }
        /* every sampler with the full cache, one (in turn) with the others */
        for (size_t s = 0; s < sizeof samplers / sizeof samplers[0]; s++) {
            if ((quick || ci > 0) && s != ci % 4) continue;
            const gen_case cases[] = {
                {.method = SS_SPEC_NONE, .forced = -1.0f, .sampling = samplers[s]},
                {.method = SS_SPEC_DRAFT, .k = 3, .forced = -1.0f, .sampling = samplers[s]},
                {.method = SS_SPEC_LOOKUP, .k = 4, .forced = -1.0f, .sampling = samplers[s]},
                {.method = SS_SPEC_DRAFT, .k = 4, .forced = 0.5f, .sampling = samplers[s]},
                {.method = SS_SPEC_TREE, .k = 3, .forced = -1.0f, .sampling = samplers[s]},
                {.method = SS_SPEC_LOOKAHEAD, .k = 2, .forced = -1.0f, .sampling = samplers[s]},
                /* adaptive k follows measured timings: not reproducible */
                {.method = SS_SPEC_DRAFT, .k = 4, .adaptive = 1, .forced = -1.0f, .sampling = samplers[s]},
            };
            for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
                int32_t again[MAX_OUT];
                const int n1 = run_generation(t, d, &tc, &dc, &cases[c], MAX_NEW, out);
                for (int i = 0; i < n1; i++) CHECK(out[i] >= 0 && out[i] < 97, "token %d", out[i]);
                if (cases[c].method == SS_SPEC_NONE || cases[c].adaptive) continue;
                const int n2 = run_generation(t, d, &tc, &dc, &cases[c], MAX_NEW, again);
                CHECK(n1 == n2 && memcmp(out, again, (size_t)n1 * sizeof *out) == 0,
                      "sampling is not reproducible (cache %d, sampler %zu, case %zu)", caches[ci], s, c);
            }
        }
    }
    /* forced acceptance extremes, max_new_tokens 0, cancellation, early free */
    const ss_cache_config full = full_cache(128);
    const gen_case all = {.method = SS_SPEC_DRAFT, .k = 6, .forced = 1.0f, .sampling = greedy};
    const gen_case none = {.method = SS_SPEC_DRAFT, .k = 6, .forced = 0.0f, .sampling = samplers[0]};
    CHECK(run_generation(t, d, &full, &full, &all, MAX_NEW, out) >= 1, "forced 1");
    CHECK(run_generation(t, d, &full, &full, &none, MAX_NEW, out) >= 1, "forced 0");
    const gen_case plain = {.method = SS_SPEC_NONE, .forced = -1.0f, .sampling = greedy};
    CHECK(run_generation(t, d, &full, &full, &plain, 0, out) == 0, "max_new_tokens 0");

    const int32_t prompt[] = {1, 2, 3};
    ss_speculative spec;
    ss_config_defaults(SS_CONFIG_SPECULATIVE, &spec);
    spec.k = 3;
    ss_generator *g = NULL;
    OK(ss_generator_create(t, &full, d, &full, NULL, &spec, &greedy, prompt, 3, 50, NULL, 0, &g, E));
    volatile int cancel = 1;
    int got = -1;
    FAILS(SS_ERR_CANCELLED, "cancelled", ss_generator_step(g, out, 5, &got, &cancel, E));
    cancel = 0;
    OK(ss_generator_step(g, out, 5, &got, &cancel, E));
    CHECK(got == 5, "got %d", got);
    ss_generator_free(g); /* before the end */

    /* a stop id ends generation at its first occurrence, included */
    int32_t free_run[50];
    const int n_free = run_generation(t, d, &full, &full, &plain, 30, free_run);
    if (n_free >= 6) {
        const int32_t stop = free_run[5];
        int first = 0;
        while (free_run[first] != stop) first++;
        g = NULL;
        const int32_t prompt12[] = {5, 9, 2, 5, 9, 2, 5, 9, 11, 4, 5, 9};
        ss_speculative none;
        ss_config_defaults(SS_CONFIG_SPECULATIVE, &none);
        none.method = SS_SPEC_NONE;
        OK(ss_generator_create(t, &full, NULL, NULL, NULL, &none, &greedy, prompt12, 12, 50, &stop, 1, &g, E));
        int n = 0;
        while (g && !ss_generator_done(g)) {
            OK(ss_generator_step(g, out + n, MAX_NEW - n, &got, NULL, E));
            n += got;
            if (got == 0) break;
        }
        CHECK(n == first + 1 && out[n - 1] == stop, "stop id %d: %d tokens, want %d", stop, n, first + 1);
        ss_generator_free(g);
    }
}

static void exercise_errors(const ss_model *m, const host_weights *h) {
    ss_model *bad = NULL;
    ss_model_config cfg = h->cfg;
    cfg.n_head = 5; /* 32 % 5 != 0 */
    FAILS(SS_ERR_INVALID_ARGUMENT, "not divisible", ss_model_create(&cfg, &h->w, SS_F32, &bad, E));
    cfg = h->cfg;
    cfg.vocab_rows = 0;
    FAILS(SS_ERR_INVALID_ARGUMENT, "ModelConfig.vocab_rows must be >= 1", ss_model_create(&cfg, &h->w, SS_F32, &bad, E));
    FAILS(SS_ERR_INVALID_ARGUMENT, "dtype", ss_model_create(&h->cfg, &h->w, (ss_dtype)9, &bad, E));
    /* a missing tensor and a wrong shape, named */
    ss_weights w = h->w;
    ss_layer_weights *layers = malloc((size_t)h->cfg.n_layer * sizeof *layers);
    memcpy(layers, h->layers, (size_t)h->cfg.n_layer * sizeof *layers);
    w.layers = layers;
    layers[1].out_w.data = NULL;
    FAILS(SS_ERR_SHAPE, "gpt_neox.layers.1.attention.dense.weight is missing", ss_model_create(&h->cfg, &w, SS_BF16, &bad, E));
    layers[1] = h->layers[1];
    layers[0].fc1_w.rows = 7;
    FAILS(SS_ERR_SHAPE, "gpt_neox.layers.0.mlp.dense_h_to_4h.weight has shape", ss_model_create(&h->cfg, &w, SS_F16, &bad, E));
    layers[0] = h->layers[0];
    w.embed_out.dtype = (ss_dtype)7;
    FAILS(SS_ERR_SHAPE, "embed_out.weight has an unsupported dtype", ss_model_create(&h->cfg, &w, SS_F32, &bad, E));
    w.embed_out.dtype = SS_I8; /* a storage format, never an input */
    FAILS(SS_ERR_SHAPE, "embed_out.weight has an unsupported dtype", ss_model_create(&h->cfg, &w, SS_I8, &bad, E));
    free(layers);
    CHECK(bad == NULL, "failed create returned a model");

    /* states */
    ss_state *s = NULL;
    /* one rule broken at a time */
    ss_cache_config bad_caches[8];
    const ss_cache_policy bad_policies[8] = {SS_CACHE_WINDOW,    SS_CACHE_FULL,      SS_CACHE_WINDOW, SS_CACHE_STREAMING,
                                             SS_CACHE_STREAMING, SS_CACHE_STREAMING, SS_CACHE_H2O,    SS_CACHE_WINDOW};
    for (int i = 0; i < 8; i++) bad_caches[i] = cache_defaults(bad_policies[i]);
    bad_caches[0].policy = 99;
    bad_caches[1].capacity = 0; /* a full cache needs one before a state exists */
    bad_caches[2].window = 0;
    bad_caches[3].n_sink = 9, bad_caches[3].window = 8;
    bad_caches[4].compress_every = 0;
    bad_caches[5].compress_every = 2, bad_caches[5].overlap = 2;
    bad_caches[6].heavy = 0;
    bad_caches[7].window = 8, bad_caches[7].refresh_budget = 2, bad_caches[7].refresh = SS_REFRESH_STRUCTURAL;
    for (size_t i = 0; i < sizeof bad_caches / sizeof bad_caches[0]; i++) {
        FAILS(SS_ERR_INVALID_ARGUMENT, "CacheConfig", ss_state_create(m, &bad_caches[i], 4, &s, E));
        CHECK(s == NULL, "failed state create returned a state");
    }
    const ss_cache_config full = full_cache(6);
    FAILS(SS_ERR_INVALID_ARGUMENT, "max_batch", ss_state_create(m, &full, 0, &s, E));
    OK(ss_state_create(m, &full, 4, &s, E));
    const int32_t ids[] = {1, 2, 3, 4, 5, 6, 7, 8}, oob[] = {1, 97}, neg[] = {-1};
    float logits[8 * 97];
    FAILS(SS_ERR_OUT_OF_RANGE, "token id 97 at index 1", ss_forward(m, s, oob, 2, logits, 2, E));
    FAILS(SS_ERR_OUT_OF_RANGE, "token id -1", ss_forward(m, s, neg, 1, logits, 1, E));
    FAILS(SS_ERR_INVALID_ARGUMENT, "empty", ss_forward(m, s, ids, 0, logits, 0, E));
    FAILS(SS_ERR_INVALID_ARGUMENT, "n_out", ss_forward(m, s, ids, 2, logits, 3, E));
    FAILS(SS_ERR_CAPACITY, "batch limit", ss_forward(m, s, ids, 5, logits, 5, E));
    OK(ss_forward(m, s, ids, 3, logits, 3, E));
    FAILS(SS_ERR_INVALID_ARGUMENT, "roll back", ss_state_rollback(s, 4, E));
    OK(ss_state_commit(s, E));
    OK(ss_forward(m, s, ids, 3, logits, 1, E));
    OK(ss_state_commit(s, E));
    FAILS(SS_ERR_CAPACITY, "exceeds the KV cache capacity of 6", ss_forward(m, s, ids, 1, logits, 1, E));
    CHECK(ss_state_length(s) == 6, "length after failures %lld", (long long)ss_state_length(s));
    ss_state_free(s);

    s = NULL;
    OK(ss_state_create(m, &full, 2, &s, E));
    float nll[8];
    double a, b;
    int64_t done;
    FAILS(SS_ERR_INVALID_ARGUMENT, "at least 2 tokens", ss_eval_nll(m, s, ids, 1, 1, nll, NULL, &a, &b, &done, NULL, E));
    FAILS(SS_ERR_INVALID_ARGUMENT, "chunk", ss_eval_nll(m, s, ids, 4, 3, nll, NULL, &a, &b, &done, NULL, E));
    FAILS(SS_ERR_OUT_OF_RANGE, "token id 97", ss_eval_nll(m, s, oob, 2, 1, nll, NULL, &a, &b, &done, NULL, E));
    FAILS(SS_ERR_CAPACITY, "capacity", ss_eval_nll(m, s, ids, 8, 2, nll, NULL, &a, &b, &done, NULL, E));
    ss_state_free(s);

    /* generators */
    ss_generator *g = NULL;
    ss_speculative none;
    ss_config_defaults(SS_CONFIG_SPECULATIVE, &none);
    none.method = SS_SPEC_NONE;
    const ss_sampling greedy = {.temperature = 0.0f, .top_p = 1.0f};
    const ss_cache_config big = full_cache(64);
    FAILS(SS_ERR_INVALID_ARGUMENT, "empty", ss_generator_create(m, &big, NULL, NULL, NULL, &none, &greedy, ids, 0, 4, NULL, 0, &g, E));
    FAILS(SS_ERR_INVALID_ARGUMENT, "max_new_tokens", ss_generator_create(m, &big, NULL, NULL, NULL, &none, &greedy, ids, 2, -1, NULL, 0, &g, E));
    FAILS(SS_ERR_OUT_OF_RANGE, "prompt token id 97", ss_generator_create(m, &big, NULL, NULL, NULL, &none, &greedy, oob, 2, 4, NULL, 0, &g, E));
    FAILS(SS_ERR_OUT_OF_RANGE, "stop token id", ss_generator_create(m, &big, NULL, NULL, NULL, &none, &greedy, ids, 2, 4, oob + 1, 1, &g, E));
    const ss_sampling bad_samplings[] = {
        {.temperature = -1.0f, .top_p = 1.0f}, {.temperature = NAN, .top_p = 1.0f},
        {.temperature = INFINITY, .top_p = 1.0f}, {.temperature = 1.0f, .top_p = 0.0f},
        {.temperature = 1.0f, .top_p = 1.5f}, {.temperature = 1.0f, .top_p = NAN}, {.temperature = 1.0f, .top_k = -1, .top_p = 1.0f},
    };
    for (size_t i = 0; i < sizeof bad_samplings / sizeof bad_samplings[0]; i++)
        FAILS(SS_ERR_INVALID_ARGUMENT, "must", ss_generator_create(m, &big, NULL, NULL, NULL, &none, &bad_samplings[i], ids, 2, 4, NULL, 0, &g, E));
    /* one field out of its limits at a time, from the defaults */
    ss_speculative bad_specs[7];
    for (size_t i = 0; i < sizeof bad_specs / sizeof bad_specs[0]; i++) {
        ss_config_defaults(SS_CONFIG_SPECULATIVE, &bad_specs[i]);
        bad_specs[i].method = SS_SPEC_LOOKUP;
    }
    bad_specs[0].k = 0;
    bad_specs[1].k = 65;
    bad_specs[2].method = 7;
    bad_specs[3].adaptive = 1, bad_specs[3].k_min = 4, bad_specs[3].k_max = 2;
    bad_specs[4].lookup_ngram = 0;
    bad_specs[5].forced_acceptance = 1.5f;
    bad_specs[6].method = SS_SPEC_DRAFT; /* no draft given */
    const char *const bad_spec_messages[] = {"SpeculativeConfig.k must be >= 1", "SpeculativeConfig.k must be <= 64",
                                             "unknown method 7", "k_min <= k_max", "lookup_ngram must be >= 1",
                                             "forced_acceptance must be in [0, 1]", "needs the draft"};
    for (size_t i = 0; i < sizeof bad_specs / sizeof bad_specs[0]; i++)
        FAILS(SS_ERR_INVALID_ARGUMENT, bad_spec_messages[i],
              ss_generator_create(m, &big, NULL, NULL, NULL, &bad_specs[i], &greedy, ids, 2, 4, NULL, 0, &g, E));
    CHECK(g == NULL, "failed generator create returned a generator");
    /* the target cache too small for the prompt fails at the first step */
    const ss_cache_config tiny = full_cache(4);
    OK(ss_generator_create(m, &tiny, NULL, NULL, NULL, &none, &greedy, ids, 8, 4, NULL, 0, &g, E));
    int32_t out[8];
    int got;
    FAILS(SS_ERR_CAPACITY, "capacity", ss_generator_step(g, out, 4, &got, NULL, E));
    FAILS(SS_ERR_INVALID_ARGUMENT, "max_tokens", ss_generator_step(g, out, -1, &got, NULL, E));
    CHECK(ss_generator_done(g), "a failed generator is done");
    ss_generator_free(g);

    /* no CUDA in this build: moving the model must fail cleanly */
    if (ss_cuda_available() == 0) {
        ss_model *copy = NULL;
        OK(ss_model_create(&h->cfg, &h->w, SS_F32, &copy, E));
        FAILS(SS_ERR_UNSUPPORTED, "", ss_model_set_device(copy, 1, E));
        CHECK(ss_model_get_device(copy) == 0, "device after failure");
        OK(ss_model_set_device(copy, 0, E));
        ss_model_free(copy);
    }

    /* freeing NULL is a no-op */
    ss_model_free(NULL);
    ss_state_free(NULL);
    ss_generator_free(NULL);
}

/* Short-lived threads, each decoding its own sequence on the shared model
 * with prefill-sized batches: whatever per-thread scratch the core keeps
 * must be released when the thread ends (valgrind/LSan see it otherwise). */
typedef struct {
    const ss_model *m;
    int seed;
    float sum;
    ss_status st;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *job = arg;
    const int V = ss_model_get_config(job->m)->vocab_rows;
    int32_t ids[40];
    static float logits[4][40 * 97];
    float *lg = logits[job->seed % 4];
    for (int i = 0; i < 40; i++) ids[i] = (int32_t)((i * 11 + job->seed) % V);
    const ss_cache_config full = full_cache(64);
    ss_state *s = NULL;
    ss_error err = {{0}};
    job->st = ss_state_create(job->m, &full, 40, &s, &err);
    if (job->st == SS_OK) job->st = ss_forward(job->m, s, ids, 40, lg, 40, &err);
    ss_state_free(s);
    job->sum = 0.0f;
    for (int i = 0; i < 40 * V; i++) job->sum += lg[i];
    return NULL;
}

static void exercise_threads(const ss_model *m) {
    for (int round = 0; round < 2; round++) {
        pthread_t th[4];
        thread_job jobs[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (thread_job){.m = m, .seed = i};
            CHECK(pthread_create(&th[i], NULL, thread_main, &jobs[i]) == 0, "pthread_create");
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            CHECK(jobs[i].st == SS_OK && isfinite(jobs[i].sum), "thread %d: status %d", i, (int)jobs[i].st);
        }
    }
}

/* Every storage dtype x every weight dtype (int8, int4: quantized at load)
 * gives close logits (int4: ~9% RMS weight error). */
static void exercise_dtypes(void) {
    const ss_dtype dts[] = {SS_F32, SS_F16, SS_BF16, SS_I8, SS_I4};
    const int32_t ids[] = {4, 8, 15, 16, 23, 42};
    float ref[6 * 97], got[6 * 97];
    const ss_cache_config full = full_cache(16);
    for (int st = 0; st < 3; st++) {
        host_weights h;
        host_init(&h, 2, 32, 4, 96, 97, st != 1, dts[st], 42);
        for (int ct = 0; ct < 5; ct++) {
            ss_model *m = NULL;
            ss_state *s = NULL;
            OK(ss_model_create(&h.cfg, &h.w, dts[ct], &m, E));
            if (!m) continue;
            CHECK(ss_model_weight_bytes(m) > 0, "weight bytes");
            OK(ss_state_create(m, &full, 6, &s, E));
            OK(ss_forward(m, s, ids, 6, ct == 0 ? ref : got, 6, E));
            if (ct > 0) {
                double worst = 0.0, scale = 0.0;
                for (int i = 0; i < 6 * 97; i++) {
                    worst = fmax(worst, fabs((double)ref[i] - got[i]));
                    scale = fmax(scale, fabs((double)ref[i]));
                }
                CHECK(worst <= (dts[ct] == SS_I4 ? 0.15 : 0.05) * scale + 1e-3, "storage %d compute %d: error %g of %g",
                      st, ct, worst, scale);
            }
            ss_state_free(s);
            ss_model_free(m);
        }
        host_free(&h);
    }
}

int main(int argc, char **argv) {
    int repeats = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else repeats = atoi(argv[i]);
    }
    CHECK(strlen(ss_cpu_kernels()) > 0, "kernel name");
    const int threads = ss_get_num_threads();
    ss_set_num_threads(2);
    CHECK(ss_get_num_threads() == 2, "threads %d", ss_get_num_threads());
    for (int r = 0; r < repeats; r++) {
        host_weights ht, hd, hp;
        host_init(&ht, 2, 32, 4, 96, 97, 1, SS_F32, 1);
        host_init(&hd, 1, 16, 2, 64, 97, 0, SS_BF16, 2);
        host_init(&hp, 1, 16, 2, 64, 128, 1, SS_F16, 3); /* padded vocabulary */
        ss_model *t = NULL, *d = NULL, *dp = NULL;
        OK(ss_model_create(&ht.cfg, &ht.w, SS_F32, &t, E));  /* borrows */
        OK(ss_model_create(&hd.cfg, &hd.w, r % 3 == 1 ? SS_I8 : r % 3 == 2 ? SS_I4 : SS_BF16, &d, E)); /* borrows bf16 / quantizes */
        OK(ss_model_create(&hp.cfg, &hp.w, SS_F32, &dp, E)); /* converts f16 */
        if (!t || !d || !dp) return 1;
        for (int c = 0; c < N_CACHES; c++) exercise_state(t, c, quick ? 30 : 60);
        for (int c = 0; c < N_CACHES; c++) exercise_eval(t, c);
        exercise_generation(t, d, dp);
        exercise_errors(t, &ht);
        exercise_threads(t);
        exercise_dtypes();
        ss_model_free(t);
        ss_model_free(d);
        ss_model_free(dp);
        host_free(&ht);
        host_free(&hd);
        host_free(&hp);
    }
    ss_set_num_threads(threads);
    if (failures) {
        fprintf(stderr, "harness: FAILED %d of %d checks\n", failures, checks);
        return 1;
    }
    printf("harness: OK, %d checks passed (%s, %d repeat%s, kernels %s)\n", checks, quick ? "quick" : "full", repeats,
           repeats == 1 ? "" : "s", ss_cpu_kernels());
    return 0;
}
