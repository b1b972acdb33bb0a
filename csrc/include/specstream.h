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

/* ------------------------------------------------------- config schemas */

typedef enum { SS_FIELD_INT, SS_FIELD_FLOAT, SS_FIELD_DOUBLE, SS_FIELD_BOOL, SS_FIELD_CHOICE,
               SS_FIELD_U64, SS_FIELD_IDS } ss_field_type;

/* One member of a configuration struct, as its field list declares it. */
typedef struct {
    const char *name;
    ss_field_type type;
    size_t offset;                /* of the member                            */
    size_t count_offset;          /* IDS: of the n_<name> member              */
    double default_value;         /* CHOICE: the index of the default name    */
    double min, max;
    int bounds;                   /* SS_CLOSED, SS_OPEN_MIN, SS_OPEN_MAX      */
    const char *const *choices;   /* CHOICE names by value, NULL-terminated   */
    const char *specials;         /* "name=value,..." or NULL                 */
    const char *doc;
} ss_field;

typedef enum { SS_CONFIG_MODEL, SS_CONFIG_CACHE, SS_CONFIG_SPECULATIVE, SS_CONFIG_SAMPLING,
               SS_CONFIG_KINDS } ss_config_kind;

typedef struct {
    const char *name;             /* how messages name it: "CacheConfig"      */
    size_t size;                  /* sizeof the struct                        */
    const ss_field *fields;
    int n_fields;
} ss_config_schema;

/* The table of a configuration struct (NULL for an unknown kind). */
const ss_config_schema *ss_config_schema_of(ss_config_kind kind);
/* Fills a configuration struct with its defaults. */
void ss_config_defaults(ss_config_kind kind, void *config);
/* Checks every field against its limits, then the rules that tie fields
 * together (e.g. a streaming window no smaller than its sinks). Messages
 * name the field as "<schema name>.<field>". */
ss_status ss_config_check(ss_config_kind kind, const void *config, ss_error *err);

/* ------------------------------------------------------------------ models */

/* Storage dtypes. SS_I8 and SS_I4 are weight-matrix storage only
 * (ss_model_create's weight_dtype): each matrix is quantized at load, int8
 * symmetric per output row (one f32 scale per row), int4 per group of 64
 * weights of a row (a bf16 scale and a zero point per group; layouts in
 * kernels/cpu/formats.h); embed_in stays in the dtype it was given (one row
 * is read per token), norms and biases in f32. Input tensors are f32, f16 or
 * bf16. */
typedef enum { SS_F32 = 0, SS_F16 = 1, SS_BF16 = 2, SS_I8 = 3, SS_I4 = 4 } ss_dtype;

/* ---------------------------------------------------------- configurations
 *
 * Every configuration struct below is declared by a field list: one line
 * per member with its type, default, limits, names and documentation, from
 * which the struct itself (SS_DECLARE_FIELD) and a table that describes it
 * at run time (ss_config_schema) are both generated. Bindings parse,
 * validate and document configurations from those tables, so adding a field
 * is one line in a list here (and its use in the core).
 *
 * SS_FIELD columns: X(type, name, default, min, max, bounds, choices, specials, doc)
 *   type      INT (int), FLOAT (float), DOUBLE, BOOL (int 0/1), CHOICE (int,
 *             an index into `choices`), U64 (uint64_t), IDS (a borrowed
 *             int32 array: members `name` and `n_name`)
 *   min, max  the valid range of INT/FLOAT/DOUBLE values
 *   bounds    SS_CLOSED ([min, max]), SS_OPEN_MIN ((min, max]) or SS_OPEN_MAX
 *             ([min, max))
 *   choices   CHOICE: NULL-terminated array of names, by value
 *   specials  values outside [min, max] with a meaning, as "name=value,...":
 *             "None=0" lets a binding's None (null) stand for 0
 */
enum { SS_CLOSED = 0, SS_OPEN_MIN = 1, SS_OPEN_MAX = 2 };
#define SS_MEMBER_INT(name) int name;
#define SS_MEMBER_FLOAT(name) float name;
#define SS_MEMBER_DOUBLE(name) double name;
#define SS_MEMBER_BOOL(name) int name;
#define SS_MEMBER_CHOICE(name) int name;
#define SS_MEMBER_U64(name) uint64_t name;
#define SS_MEMBER_IDS(name) const int32_t *name; int n_##name;
#define SS_DECLARE_FIELD(type, name, ...) SS_MEMBER_##type(name)

/* Largest token count a cache size may take: the core sizes caches in int,
 * and window + compress_every + sinks + a batch must not overflow it. */
#define SS_MAX_TOKENS (1 << 29)

#define SS_MODEL_FIELDS(X)                                                                                     \
    X(INT, n_layer, 1, 1, 4096, SS_CLOSED, NULL, NULL, "transformer blocks")                                        \
    X(INT, d_model, 1, 1, 1 << 22, SS_CLOSED, NULL, NULL, "residual stream width")                                  \
    X(INT, n_head, 1, 1, 1 << 22, SS_CLOSED, NULL, NULL, "attention heads (divides d_model)")                      \
    X(INT, d_ff, 1, 1, 1 << 24, SS_CLOSED, NULL, NULL, "MLP hidden width")                                          \
    X(INT, vocab_rows, 1, 1, 1 << 24, SS_CLOSED, NULL, NULL, "rows of embed_in / embed_out (the padded vocabulary)")\
    X(INT, rotary_dim, 0, 0, 1 << 22, SS_CLOSED, NULL, NULL, "head dims turned by rotary embeddings (even)")        \
    X(DOUBLE, rotary_base, 10000.0, 0.0, 1e300, SS_OPEN_MIN, NULL, NULL, "rotary base theta")                         \
    X(FLOAT, layer_norm_eps, 1e-5, 0.0, 3.4028234663852886e38, SS_OPEN_MIN, NULL, NULL, "LayerNorm epsilon")          \
    X(BOOL, parallel_residual, 1, 0, 1, SS_CLOSED, NULL, NULL, "x + attn(ln1 x) + mlp(ln2 x) (else sequential)")  \
    X(BOOL, gelu_tanh, 0, 0, 1, SS_CLOSED, NULL, NULL, "tanh approximation of GELU (else exact erf)")

typedef struct {
    SS_MODEL_FIELDS(SS_DECLARE_FIELD)
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

/* The checkpoint's tensors under their Hugging Face GPT-NeoX names, each
 * with its shape and its place in ss_weights / ss_layer_weights: the one
 * table that loaders, bindings and shape checks read. */
typedef enum { SS_DIM_ONE, SS_DIM_D, SS_DIM_3D, SS_DIM_FF, SS_DIM_VOCAB } ss_dim;
typedef struct {
    const char *name;       /* per layer: a format with %d for the layer     */
    int per_layer;
    ss_dim rows, cols;      /* cols SS_DIM_ONE: a vector of `rows` values    */
    int attention_bias;     /* absent from checkpoints without attention
                               biases (the loader then passes zeros)         */
    size_t offset;          /* of the ss_tensor in ss_layer_weights
                               (per layer) or in ss_weights                  */
} ss_tensor_spec;

/* Every tensor, in checkpoint order; *count receives how many. */
const ss_tensor_spec *ss_tensor_specs(int *count);
/* The length of a dimension under a config. */
int64_t ss_dim_size(const ss_model_config *config, ss_dim dim);

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
    SS_CACHE_KEYNORM,       /* ... lowest key L2 norm                         */
    SS_CACHE_SCISSORHANDS,  /* ... most often above-average attention among
                               the last `history` queries                    */
    SS_CACHE_ADAKV,         /* a layer's heavy slots shared by its heads,
                               best scores across heads (snapkv scores)      */
    SS_CACHE_PYRAMIDKV,     /* heavy budgets decreasing with depth (snapkv)  */
    SS_CACHE_HEADAWARE      /* heavy budgets per head by how far back each
                               head attends (h2o scores)                     */
} ss_cache_policy;

/* Where attention places keys (docs/CACHE_POLICIES.md): at their text
 * positions, or at their places in the cache (StreamingLLM). */
typedef enum { SS_POSITIONS_AUTO = 0, SS_POSITIONS_TEXT, SS_POSITIONS_CACHE } ss_positions;
/* Which heads choose their heavy keys together. */
typedef enum { SS_SHARE_HEAD = 0, SS_SHARE_LAYER, SS_SHARE_MODEL } ss_share;
/* The scorer of a score policy (auto: the policy's own). */
typedef enum {
    SS_SCORER_AUTO = 0, SS_SCORER_H2O, SS_SCORER_SNAPKV, SS_SCORER_KEYNORM, SS_SCORER_SCISSORHANDS
} ss_scorer_id;

/* How window/streaming caches pick "refresh" tokens (dynamic sinks) from
 * each evicted span. */
typedef enum {
    SS_REFRESH_UNIFORM = 0,  /* evenly spaced                                 */
    SS_REFRESH_STRUCTURAL,   /* ids in structural_ids (newlines, full stops)  */
    SS_REFRESH_ENTROPY       /* highest predictive entropy                    */
} ss_refresh_select;

extern const char *const ss_cache_policy_names[];  /* by ss_cache_policy */
extern const char *const ss_refresh_names[];       /* by ss_refresh_select */
extern const char *const ss_positions_names[];     /* by ss_positions */
extern const char *const ss_share_names[];         /* by ss_share */
extern const char *const ss_scorer_names[];        /* by ss_scorer_id */

#define SS_CACHE_FIELDS(X)                                                                                     \
    X(CHOICE, policy, SS_CACHE_FULL, 0, 0, SS_CLOSED, ss_cache_policy_names, NULL, "which keys are kept")          \
    X(INT, n_sink, 4, 0, SS_MAX_TOKENS, SS_CLOSED, NULL, NULL, "first tokens kept for good (streaming, score)")    \
    X(INT, window, 1024, 1, SS_MAX_TOKENS, SS_CLOSED, NULL, NULL, "recent tokens kept (all but full)")             \
    X(INT, capacity, 0, 1, SS_MAX_TOKENS, SS_CLOSED, NULL, "None=0",                                               \
      "full policy: most tokens of the sequence (none: as many as the call needs)")                           \
    X(INT, compress_every, 1, 1, SS_MAX_TOKENS, SS_CLOSED, NULL, NULL,                                             \
      "R: the cache may hold R-1 keys over its budget, then evicts in one batch")                             \
    X(INT, max_drop, 0, 1, SS_MAX_TOKENS, SS_CLOSED, NULL, "None=0",                                               \
      "keys evicted per step at most, the rest over the following steps (none: unlimited)")                   \
    X(INT, overlap, 0, 0, SS_MAX_TOKENS, SS_CLOSED, NULL, NULL, "keys kept beyond the budget after an eviction")   \
    X(INT, heavy, 0, 0, SS_MAX_TOKENS, SS_CLOSED, NULL, NULL,                                                      \
      "score policies: evicted tokens kept by score, per head (the average, for per-head budgets)")          \
    X(CHOICE, scorer, SS_SCORER_AUTO, 0, 0, SS_CLOSED, ss_scorer_names, NULL,                                      \
      "score policies: how candidates are rated (auto: the policy's own)")                                  \
    X(CHOICE, share, SS_SHARE_HEAD, 0, 0, SS_CLOSED, ss_share_names, NULL,                                         \
      "score policies: heads that choose heavy keys together (head, layer or the whole model)")             \
    X(CHOICE, positions, SS_POSITIONS_AUTO, 0, 0, SS_CLOSED, ss_positions_names, NULL,                             \
      "rotary positions of keys: text, or their place in the cache (auto: cache for window/streaming)")     \
    X(INT, history, 32, 1, 64, SS_CLOSED, NULL, NULL, "scissorhands: recent queries that vote")                   \
    X(FLOAT, adakv_floor, 0.2, 0.0, 1.0, SS_CLOSED, NULL, NULL,                                                    \
      "adakv: share of the per-head budget every head keeps before the layer's pool")                        \
    X(FLOAT, pyramid_beta, 20.0, 1.0, 3.4028234663852886e38, SS_CLOSED, NULL, NULL,                                \
      "pyramidkv: the top layer keeps heavy / beta keys per head")                                           \
    X(INT, refresh_budget, 0, 0, SS_MAX_TOKENS, SS_CLOSED, NULL, NULL,                                             \
      "window/streaming: evicted tokens kept as dynamic sinks (0: off)")                                      \
    X(CHOICE, refresh, SS_REFRESH_UNIFORM, 0, 0, SS_CLOSED, ss_refresh_names, NULL,                                \
      "how refresh tokens are picked from an evicted span")                                                   \
    X(IDS, structural_ids, 0, 0, SS_MAX_TOKENS, SS_CLOSED, NULL, NULL,                                             \
      "structural refresh: token ids that mark structure (borrowed while a state is created)")                \
    X(FLOAT, entropy_threshold, 0.0, 0.0, 3.4028234663852886e38, SS_CLOSED, NULL, NULL,                            \
      "> 0: evict at once when the newest token's predictive entropy (nats) exceeds this")

typedef struct {
    SS_CACHE_FIELDS(SS_DECLARE_FIELD)
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

/* Runs n new tokens through the model as a chain after the tokens already
 * there (the committed ones and any pending since). Token i attends to what
 * the cache policy would let it see had the tokens been decoded one at a
 * time. Logits (n_out rows x vocab_rows, float32) are written for the last
 * n_out tokens when logits != NULL. New tokens stay pending (roll-back-able)
 * until ss_state_commit or ss_state_accept. */
ss_status ss_forward(const ss_model *model, ss_state *state, const int32_t *tokens,
                     int n, float *logits, int n_out, ss_error *err);
/* The same for n tokens that form a tree hanging off the committed
 * sequence: parents[i] is the pending index of token i's parent (pending
 * tokens are numbered from 0 in the order they were given since the last
 * commit, this call's included) or -1 for a child of the last committed
 * token; parents == NULL continues the pending chain. A token sits at its
 * parent's position + 1 and sees the committed keys its cache policy shows
 * there plus its ancestors (the tree attention mask); its result does not
 * depend on the other branches. Outputs for the last n_out tokens: logits
 * [n_out][vocab_rows] and/or hidden [n_out][d_model] (the final hidden
 * states, after the final LayerNorm), each optional. */
ss_status ss_forward_tree(const ss_model *model, ss_state *state, const int32_t *tokens, const int32_t *parents,
                          int n, float *logits, float *hidden, int n_out, ss_error *err);
/* Drops the newest n pending tokens (rejected speculative tokens): O(1). */
ss_status ss_state_rollback(ss_state *state, int n, ss_error *err);
/* Accepts all pending tokens (they must form a chain) and applies the
 * evictions they imply. */
ss_status ss_state_commit(ss_state *state, ss_error *err);
/* Accepts a path of pending tokens -- path[0] a child of the last committed
 * token, each next one a child of the one before -- and drops every other
 * pending token: the path's keys move to the slots of their positions
 * (O(accepted) copies), then the evictions they imply apply. */
ss_status ss_state_accept(ss_state *state, const int32_t *path, int n, ss_error *err);

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

#define SS_SAMPLING_FIELDS(X)                                                                                  \
    X(FLOAT, temperature, 0.0, 0.0, 3.4028234663852886e38, SS_CLOSED, NULL, NULL, "0: greedy; else softmax(logits / T)") \
    X(INT, top_k, 0, 0, 2147483647, SS_CLOSED, NULL, NULL, "keep the k most likely tokens (0: off)")                \
    X(FLOAT, top_p, 1.0, 0.0, 1.0, SS_OPEN_MIN, NULL, NULL, "keep the smallest nucleus of this mass (1: off)")       \
    X(U64, seed, 0, 0, 0, SS_CLOSED, NULL, NULL, "random stream of the sampler")

typedef struct {
    SS_SAMPLING_FIELDS(SS_DECLARE_FIELD)
} ss_sampling;

/* ------------------------------------------------------------- generation */

typedef enum {
    SS_SPEC_NONE = 0,    /* target-only decoding                                   */
    SS_SPEC_DRAFT,       /* a small draft model proposes a chain of k tokens       */
    SS_SPEC_LOOKUP,      /* prompt lookup: the continuation of an earlier n-gram   */
    SS_SPEC_TREE,        /* a draft model proposes a token tree (depth k)          */
    SS_SPEC_LOOKAHEAD,   /* Lookahead decoding: Jacobi iterations + n-gram pool    */
    SS_SPEC_MEDUSA       /* Medusa heads on the target's last hidden state         */
} ss_spec_method;

extern const char *const ss_spec_method_names[]; /* by ss_spec_method */

/* Deepest speculation (k) any method may use, and most tree nodes verified
 * in one step. */
#define SS_MAX_DEPTH 64
#define SS_MAX_TREE_NODES 255

#define SS_SPECULATIVE_FIELDS(X)                                                                               \
    X(INT, k, 5, 1, SS_MAX_DEPTH, SS_CLOSED, NULL, NULL,                                                      \
      "tokens proposed per step: chain length, tree depth, Lookahead n-gram size - 1, Medusa heads used")     \
    X(BOOL, adaptive, 0, 0, 1, SS_CLOSED, NULL, NULL, "draft chains: pick k each step from the acceptance rate") \
    X(INT, k_min, 1, 1, SS_MAX_DEPTH, SS_CLOSED, NULL, NULL, "adaptive k: smallest k")                        \
    X(INT, k_max, 8, 1, SS_MAX_DEPTH, SS_CLOSED, NULL, NULL, "adaptive k: largest k")                         \
    X(FLOAT, ema_decay, 0.8, 0.0, 1.0, SS_OPEN_MAX, NULL, NULL, "adaptive k: weight of the past in the EMAs") \
    X(FLOAT, cost_ratio, -2.0, 0.0, 1000.0, SS_CLOSED, NULL, "None=-2,measured=-1",                           \
      "adaptive k: draft time per token / target time per verification (None: the models' weight-bytes "   \
      "ratio; measured: an EMA of step timings)")                                                             \
    X(CHOICE, method, SS_SPEC_DRAFT, 0, 0, SS_CLOSED, ss_spec_method_names, NULL, "how tokens are proposed")  \
    X(INT, lookup_ngram, 3, 1, 64, SS_CLOSED, NULL, NULL, "prompt lookup: longest n-gram matched")            \
    X(FLOAT, forced_acceptance, -1.0, 0.0, 1.0, SS_CLOSED, NULL, "None=-1",                                   \
      "benchmark knob: accept each proposal with this probability, ignoring the models (None: off)")          \
    X(INT, branch, 2, 1, 16, SS_CLOSED, NULL, NULL,                                                           \
      "tree and medusa: children drawn per expanded node (tree: nodes expanded per depth)")                   \
    X(INT, max_nodes, 16, 1, SS_MAX_TREE_NODES, SS_CLOSED, NULL, NULL, "tree and medusa: candidate nodes verified per step") \
    X(INT, lookahead_window, 5, 1, 64, SS_CLOSED, NULL, NULL, "lookahead: W, the Jacobi window (columns)")     \
    X(INT, lookahead_guesses, 5, 1, 64, SS_CLOSED, NULL, NULL, "lookahead: G, n-grams verified per step")

typedef struct {
    SS_SPECULATIVE_FIELDS(SS_DECLARE_FIELD)
} ss_speculative;

/* The special values of ss_speculative.cost_ratio ("None" and "measured"). */
#define SS_COST_RATIO_BYTES (-2.0f)
#define SS_COST_RATIO_MEASURED (-1.0f)

typedef struct {
    double prefill_s;        /* prompt processing (both models)            */
    double ttft_s;           /* call start to first new token              */
    double decode_s;         /* after the first token to the last          */
    double draft_s, verify_s;/* speculative split of decode_s              */
    int64_t new_tokens;
    int64_t target_forwards; /* decode-phase target forward calls          */
    int64_t drafted, accepted; /* candidate nodes verified / accepted       */
    int64_t draft_steps;     /* verification rounds                        */
    size_t cache_bytes;      /* KV bytes of target (+ draft)               */
    /* acceptance by depth: rounds whose tree offered candidates at depth d
     * below an accepted node (tried) and that accepted one (accepted) */
    int64_t depth_tried[SS_MAX_DEPTH + 1], depth_accepted[SS_MAX_DEPTH + 1];
} ss_gen_stats;

/* Medusa heads (Cai et al. 2024): extra decoding heads on a target's final
 * hidden state x (after the final LayerNorm); head i gives logits for the
 * token i + 2 places ahead: lm_head_i(x + SiLU(w_i x + b_i)). lm_head_i may
 * be absent (NULL data): the head then shares the target's embed_out. */
typedef struct {
    ss_tensor w;        /* [d_model, d_model] */
    ss_tensor b;        /* [d_model]          */
    ss_tensor lm_head;  /* [vocab_rows, d_model], or data == NULL */
} ss_medusa_head_weights;

typedef struct ss_medusa ss_medusa;

/* Copies the heads (f32); the target is borrowed and must outlive them. */
ss_status ss_medusa_create(const ss_model *target, const ss_medusa_head_weights *heads, int n_heads,
                           ss_medusa **out, ss_error *err);
void ss_medusa_free(ss_medusa *medusa);
int ss_medusa_n_heads(const ss_medusa *medusa);
/* Logits of every head ([n_heads][vocab_rows]) for one hidden state. */
ss_status ss_medusa_logits(const ss_medusa *medusa, const float *hidden, float *logits, ss_error *err);

typedef struct ss_generator ss_generator;

/* draft: the draft model of the draft and tree methods (else NULL); medusa:
 * the heads of the medusa method (else NULL). The generator owns the states
 * it creates; models and heads are borrowed and must outlive it. The prompt
 * is processed by the first ss_generator_step call. */
ss_status ss_generator_create(const ss_model *target, const ss_cache_config *target_cache,
                              const ss_model *draft, const ss_cache_config *draft_cache,
                              const ss_medusa *medusa, const ss_speculative *spec, const ss_sampling *sampling,
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

/* The SIMD level of the kernels chosen at run time: "scalar", "avx2",
 * "avx512" or "amx" (kernels/cpu/simd.h). */
const char *ss_cpu_kernels(void);
void ss_set_num_threads(int n);
int ss_get_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* SPECSTREAM_H */
