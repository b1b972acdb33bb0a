/*
 * specstream.h - the C API of the specstream inference engine.
 *
 * Runs GPT-NeoX-family models (the Pythia suite) token by token on the CPU,
 * with bounded KV caches (StreamingLLM sinks + ring-buffer window, lazy
 * eviction) and speculative decoding (a draft model proposes, the target
 * verifies k+1 tokens in one forward pass).
 *
 * Conventions
 *  - Every function that can fail returns ss_status and, on failure, writes a
 *    human-readable message into the caller's ss_error. Nothing aborts,
 *    prints or keeps global state.
 *  - Handles are opaque. Whoever creates a handle frees it with the matching
 *    *_free function; freeing NULL is a no-op.
 *  - Weight memory handed to ss_model_create is borrowed, not copied, when its
 *    dtype is the storage dtype requested; the caller keeps it alive (and
 *    unchanged) until ss_model_free. Otherwise the model converts into memory
 *    it owns.
 *  - A model is read-only after creation and may be shared by threads; a
 *    ss_state or ss_generator belongs to one thread at a time.
 */
#ifndef SPECSTREAM_H
#define SPECSTREAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ errors */

typedef enum {
    SS_OK = 0,
    SS_ERR_INVALID_ARGUMENT, /* a parameter is out of its documented range   */
    SS_ERR_SHAPE,            /* a tensor shape disagrees with the config     */
    SS_ERR_OUT_OF_RANGE,     /* token id, position or index outside bounds   */
    SS_ERR_CAPACITY,         /* the sequence no longer fits the KV cache     */
    SS_ERR_NO_MEMORY,
    SS_ERR_UNSUPPORTED,      /* valid input that this build cannot run       */
    SS_ERR_CANCELLED         /* a cancel flag was raised during the call      */
} ss_status;

typedef struct {
    char message[512];
} ss_error;

/* ------------------------------------------------------------------ models */

/* Storage dtypes. SS_I8 is a weight-matrix storage only (ss_model_create's
 * weight_dtype): each matrix is quantized at load, symmetric per output row
 * (int8 values and one f32 scale per row); embed_in stays in the dtype it
 * was given (one row is read per token), norms and biases in f32. Input
 * tensors are f32, f16 or bf16. */
typedef enum { SS_F32 = 0, SS_F16 = 1, SS_BF16 = 2, SS_I8 = 3 } ss_dtype;

typedef struct {
    int n_layer;
    int d_model;
    int n_head;
    int d_ff;
    int vocab_rows;          /* rows of embed_in / embed_out (padded vocab) */
    int rotary_dim;          /* head_dim * rotary_pct, even                 */
    double rotary_base;
    float layer_norm_eps;
    int parallel_residual;   /* 1: x + attn(ln1 x) + mlp(ln2 x)              */
    int gelu_tanh;           /* 0: exact erf GELU (Pythia), 1: tanh approx  */
} ss_model_config;

/* A borrowed 1-D or 2-D tensor. shape[1] == 1 for vectors. */
typedef struct {
    const void *data;
    ss_dtype dtype;
    int64_t rows, cols;
} ss_tensor;

typedef struct {
    ss_tensor ln1_w, ln1_b, ln2_w, ln2_b;
    ss_tensor qkv_w, qkv_b;   /* [3*d, d], GPT-NeoX head-interleaved q,k,v */
    ss_tensor out_w, out_b;   /* [d, d]     */
    ss_tensor fc1_w, fc1_b;   /* [d_ff, d]  */
    ss_tensor fc2_w, fc2_b;   /* [d, d_ff]  */
} ss_layer_weights;

typedef struct {
    ss_tensor embed_in;       /* [vocab_rows, d] */
    ss_tensor final_ln_w, final_ln_b;
    ss_tensor embed_out;      /* [vocab_rows, d] */
    const ss_layer_weights *layers; /* n_layer entries */
} ss_weights;

typedef struct ss_model ss_model;

/* Validates config and every tensor's shape, then builds the model with its
 * large matrices stored as `weight_dtype` (norms and biases are kept in f32). */
ss_status ss_model_create(const ss_model_config *config, const ss_weights *weights,
                          ss_dtype weight_dtype, ss_model **out, ss_error *err);
void ss_model_free(ss_model *model);
const ss_model_config *ss_model_get_config(const ss_model *model);
/* Moves the weights to a device: 0 = CPU (nothing to do), 1 = CUDA GPU.
 * States created afterwards run there too; the host copy stays borrowed. */
ss_status ss_model_set_device(ss_model *model, int device, ss_error *err);
int ss_model_get_device(const ss_model *model);
/* Number of usable CUDA devices (0 without a GPU or without a CUDA build). */
int ss_cuda_available(void);
/* Bytes of weights read by one decode step (what bounds decode speed). */
size_t ss_model_weight_bytes(const ss_model *model);

/* ------------------------------------------------------------------ caches */

typedef enum {
    SS_CACHE_FULL = 0,      /* keep everything (capacity fixed at creation)  */
    SS_CACHE_WINDOW,        /* the most recent `window` tokens, no sinks     */
    SS_CACHE_STREAMING,     /* n_sink first tokens + `window` recent tokens  */
    SS_CACHE_RECOMPUTE,     /* re-encode the last `window` tokens every step */
    SS_CACHE_H2O,           /* sinks + window + `heavy` tokens of highest
                               accumulated attention (heavy hitters)         */
    SS_CACHE_SNAPKV,        /* ... highest attention from the queries since
                               the last eviction, max-pooled over neighbours */
    SS_CACHE_KEYNORM        /* ... lowest key L2 norm                         */
} ss_cache_policy;

/* How window/streaming caches pick "refresh" tokens (dynamic sinks) from
 * each evicted span. */
typedef enum {
    SS_REFRESH_UNIFORM = 0,  /* evenly spaced                                 */
    SS_REFRESH_STRUCTURAL,   /* ids in structural_ids (newlines, full stops)  */
    SS_REFRESH_ENTROPY       /* highest predictive entropy                    */
} ss_refresh_select;

typedef struct {
    ss_cache_policy policy;
    int n_sink;          /* streaming and score policies                     */
    int window;          /* recent tokens kept (all but full)                */
    int capacity;        /* full policy: maximum tokens in the sequence      */
    int compress_every;  /* R >= 1: the cache may hold R-1 keys over budget,
                            then evicts in one batch                         */
    int max_drop;        /* 0 = unlimited; else at most this many evicted per
                            step, the rest over the following steps          */
    int overlap;         /* keys kept beyond the budget after an eviction    */
    int heavy;           /* score policies: evicted tokens kept by score     */
    int refresh_budget;  /* window/streaming: evicted tokens kept as dynamic
                            sinks (0 = off)                                  */
    ss_refresh_select refresh;
    const int32_t *structural_ids; /* borrowed during ss_state_create only  */
    int n_structural;
    float entropy_threshold; /* > 0: evict at once (down to the budget) when
                                the newest token's predictive entropy (nats)
                                exceeds this, instead of waiting for R      */
} ss_cache_config;

/* One eviction, recorded for analysis (token-level NLL vs boundaries). */
typedef struct {
    int64_t step;        /* stream position of the token being appended      */
    int32_t dropped;     /* keys evicted in this event                       */
    int32_t kept;        /* keys in the cache after the event and the append */
} ss_eviction;

/* ----------------------------------------------------------------- states */

/* A sequence being decoded by one model: its KV cache and scratch memory. */
typedef struct ss_state ss_state;

/* max_batch bounds how many tokens one ss_forward call may process (prefill
 * chunks, k+1 verification tokens). */
ss_status ss_state_create(const ss_model *model, const ss_cache_config *cache,
                          int max_batch, ss_state **out, ss_error *err);
void ss_state_free(ss_state *state);
/* Tokens processed so far (the stream position of the next token). */
int64_t ss_state_length(const ss_state *state);
/* Bytes allocated for the KV cache (constant for bounded policies). */
size_t ss_state_cache_bytes(const ss_state *state);
/* The max_batch the state was created with. */
int ss_state_max_batch(const ss_state *state);
/* Keys the most recent query attended to. */
int ss_state_visible(const ss_state *state);
/* Eviction log (off by default: it grows with the stream). The pointer is
 * valid until the next commit or clear. */
void ss_state_record_evictions(ss_state *state, int on);
const ss_eviction *ss_state_evictions(const ss_state *state, size_t *count);
void ss_state_clear_evictions(ss_state *state);

/* Runs n new tokens through the model. Token i attends to what the cache
 * policy would let it see had the tokens been decoded one at a time. Logits
 * (n_out rows x vocab_rows, float32) are written for the last n_out tokens
 * when logits != NULL. New tokens stay pending (roll-back-able) until
 * ss_state_commit. */
ss_status ss_forward(const ss_model *model, ss_state *state, const int32_t *tokens,
                     int n, float *logits, int n_out, ss_error *err);
/* Drops the newest n pending tokens (rejected speculative tokens): O(1). */
ss_status ss_state_rollback(ss_state *state, int n, ss_error *err);
/* Accepts all pending tokens and applies the evictions they imply. */
void ss_state_commit(ss_state *state);

/* ------------------------------------------------------------- evaluation */

/* Streams n tokens through a fresh state, `chunk` tokens per forward (1 =
 * token by token, exactly as generation sees them; larger chunks give the
 * same numbers faster), committing after each. nll[i] = -log p(tokens[i+1] |
 * tokens[..i]) for i < n - 1 (natural log); visible[i] (optional) = keys
 * token i attended to. Times: the first chunk, and everything after it.
 * *cancel (may be NULL) is polled before each chunk; on cancellation,
 * *n_done tokens were processed and their nll / visible entries are set. */
ss_status ss_eval_nll(const ss_model *model, ss_state *state, const int32_t *tokens, int64_t n,
                      int chunk, float *nll, int32_t *visible, double *first_s, double *rest_s,
                      int64_t *n_done, const volatile int *cancel, ss_error *err);

/* --------------------------------------------------------------- sampling */

typedef struct {
    float temperature;   /* 0 = greedy */
    int top_k;           /* 0 = off    */
    float top_p;         /* 1 = off    */
    uint64_t seed;
} ss_sampling;

/* ------------------------------------------------------------- generation */

typedef enum {
    SS_DRAFT_NONE = 0,   /* target-only decoding                          */
    SS_DRAFT_MODEL,      /* a small draft model proposes                   */
    SS_DRAFT_LOOKUP      /* prompt lookup: n-gram match in the context     */
} ss_draft_kind;

typedef struct {
    ss_draft_kind kind;
    int k;               /* tokens proposed per step (fixed mode, start)  */
    int adaptive;        /* pick k from an EMA of the acceptance rate      */
    int k_min, k_max;
    float ema_decay;
    float cost_ratio;    /* adaptive k: draft time per token / target time
                            per verification; < 0: measured (an EMA of the
                            step timings, so sampled output then depends on
                            the machine's timing, not only on the seed)    */
    int lookup_ngram;    /* prompt lookup: longest n-gram to match         */
    float forced_acceptance; /* < 0 off; else a benchmark-only verifier that
                                accepts each draft with this probability   */
} ss_speculative;

typedef struct {
    double prefill_s;        /* prompt processing (both models)            */
    double ttft_s;           /* call start to first new token              */
    double decode_s;         /* after the first token to the last          */
    double draft_s, verify_s;/* speculative split of decode_s              */
    int64_t new_tokens;
    int64_t target_forwards; /* decode-phase target forward calls          */
    int64_t drafted, accepted;
    int64_t draft_steps;     /* verification rounds                        */
    size_t cache_bytes;      /* KV bytes of target (+ draft)               */
} ss_gen_stats;

typedef struct ss_generator ss_generator;

/* draft may be NULL (target-only or prompt lookup). The generator owns the
 * states it creates; models are borrowed and must outlive it. The prompt is
 * processed by the first ss_generator_step call. */
ss_status ss_generator_create(const ss_model *target, const ss_cache_config *target_cache,
                              const ss_model *draft, const ss_cache_config *draft_cache,
                              const ss_speculative *spec, const ss_sampling *sampling,
                              const int32_t *prompt, int n_prompt, int64_t max_new_tokens,
                              const int32_t *stop_ids, int n_stop,
                              ss_generator **out, ss_error *err);
void ss_generator_free(ss_generator *gen);
/* Produces up to max_tokens new tokens into out; *n_out is how many. Returns
 * fewer only at the end (max_new_tokens or a stop id, which is included).
 * If *cancel becomes non-zero the call returns SS_ERR_CANCELLED with the
 * tokens produced so far in out (it is polled before each token or
 * speculative round, and between the prompt's chunks). The generator stays
 * usable: the next call goes on from there, a prompt from its next chunk. */
ss_status ss_generator_step(ss_generator *gen, int32_t *out, int max_tokens, int *n_out,
                            const volatile int *cancel, ss_error *err);
int ss_generator_done(const ss_generator *gen);
const ss_gen_stats *ss_generator_stats(const ss_generator *gen);
const ss_state *ss_generator_target_state(const ss_generator *gen);

/* ------------------------------------------------------------------ misc */

/* "avx2+fma+f16c" or "scalar": the kernels chosen at run time. */
const char *ss_cpu_kernels(void);
void ss_set_num_threads(int n);
int ss_get_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* SPECSTREAM_H */
