/* CPU kernels: the arithmetic of one forward pass. Each entry point picks
 * its SIMD variant at run time (AVX2+FMA+F16C where the CPU has it, AVX-512
 * BF16 for bf16 matrix-vector products where the CPU has that, portable C
 * elsewhere; see simd.h), so one build serves every x86-64 machine. Weights
 * may be stored as f32, f16, bf16 or int8 with per-row scales; activations
 * are always f32.
 *
 * Layout of an SS_I8 matrix [rows][cols]: rows*cols int8 values, row-major,
 * then at the next 64-byte boundary `rows` f32 scales; row r stands for
 * q[r][c] * scale[r]. ss_matrix_bytes gives the size of the whole block. */
#ifndef SS_KERNELS_H
#define SS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "specstream.h"

/* Bytes per stored element (inline: kernels specialised per dtype fold it). */
static inline size_t ss_dtype_size(ss_dtype dtype) { return dtype == SS_F32 ? 4 : dtype == SS_I8 ? 1 : 2; }
/* Bytes of a [rows][cols] weight matrix stored as dtype (scales included). */
size_t ss_matrix_bytes(ss_dtype dtype, int64_t rows, int64_t cols);
/* The per-row scales of an SS_I8 matrix. */
const float *ss_i8_scales(const void *w, int64_t rows, int64_t cols);
/* Quantizes a [rows][cols] matrix of f32/f16/bf16 values into the SS_I8
 * layout at dst (ss_matrix_bytes(SS_I8, rows, cols) bytes): symmetric, per
 * row, scale = max|w| / 127, q = round(w / scale). Threads split the rows.
 * Returns 0, or -1 when scratch memory cannot be allocated. */
int ss_quantize_i8(void *dst, const void *src, ss_dtype src_dtype, int64_t rows, int64_t cols);

/* Converts n values of any supported dtype to f32. */
void ss_convert_to_f32(float *dst, const void *src, ss_dtype dtype, size_t n);
/* Converts n f32 values to dtype (round to nearest even for f16/bf16). */
void ss_convert_from_f32(void *dst, const float *src, ss_dtype dtype, size_t n);

/* out[i][j] = sum_c x[i][c] * w[j][c] + bias[j] for i < n, j < m.
 *
 * Arithmetic per SIMD level (simd.h); the tests derive their tolerances from
 * it (tests/kernel_arithmetic.py models each level in NumPy):
 *  - scalar, avx2 (gemv and gemm paths), any weight dtype: weights are
 *    converted exactly to f32 (int8: the integer; its row scale multiplies
 *    the finished sum), activations are f32, every product and sum is an f32
 *    FMA or add. Each output is a sum of k products plus the bias and scale,
 *    so |error| <= (k + 8) u sum_c |x_c w_c|, u = 2^-24.
 *  - avx512bf16, bf16 weights, batches below SS_GEMM_MIN_TOKENS: each
 *    activation is split as x = hi + lo, both bf16 rounded to nearest even,
 *    and VDPBF16PS forms the products with hi and with lo (exact in f32) and
 *    sums them in f32. What the split drops, x - hi - lo, is at most
 *    2^-16 |x| (two roundings to 8 significant bits), so |error| <=
 *    (2^-16 + (k + 8) u) sum_c |x_c w_c| (subnormals flush to zero).
 *
 * w is row-major [m][k] in dtype wt (a PyTorch Linear weight); bias may be
 * NULL. Threads split the m output rows and every output is computed by one
 * thread, so results do not depend on the thread count. Each weight row is
 * read from memory once per call however large n is: small batches (decode,
 * short verification) stream the weights through dot-product kernels; from
 * SS_GEMM_MIN_TOKENS tokens on, a blocked GEMM converts each weight panel to
 * f32 once and runs a register-blocked outer-product kernel. */
void ss_matmul(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
               const float *bias);

/* What ss_matmul_ex does with each result v = x.w + bias before storing it. */
typedef enum {
    SS_EPI_NONE = 0,      /* out = v                                          */
    SS_EPI_GELU = 1,      /* out = gelu(v), exact (erf)                       */
    SS_EPI_GELU_TANH = 2, /* out = gelu(v), tanh approximation                */
    SS_EPI_ADD = 3        /* out += v (residual accumulation)                 */
} ss_epilogue;

/* ss_matmul with a fused epilogue: the threads that compute a row apply it,
 * saving a pass over the output (and a fork/join) per matrix. */
void ss_matmul_ex(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi);

/* ss_matmul_ex at a given SIMD level (simd.h), capped at what the CPU has:
 * tests run every level the machine offers in one process. */
void ss_matmul_at(int level, float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi);

/* Batches from this many tokens on take the GEMM path. */
#define SS_GEMM_MIN_TOKENS 12

/* The blocked GEMM itself (AVX2 machines; called by ss_matmul_ex). */
void ss_gemm_avx2(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi);

/* Which kernels the matrix products use for dtype at this batch size, e.g.
 * "gemv-avx2", "gemm-avx2", "gemv-avx512bf16", "scalar" (for tests and
 * benchmark reports). */
const char *ss_matmul_path(ss_dtype dtype, int n);
const char *ss_matmul_path_at(int level, ss_dtype dtype, int n);

/* One GELU value, exactly as ss_gelu computes it. */
float ss_gelu_one(float v, int tanh_approx);

/* y = LayerNorm(x) * weight + bias over d values. */
void ss_layernorm(float *y, const float *x, const float *weight, const float *bias, int d,
                  float eps);

/* In-place GELU: exact (erf) or the tanh approximation. */
void ss_gelu(float *x, size_t n, int tanh_approx);

/* Rotary position embedding, GPT-NeoX "rotate half" convention: dims i and
 * i + rotary_dim/2 form a pair rotated by angle pos * inv_freq[i]. cos/sin
 * hold rotary_dim/2 values for one position. */
void ss_rotary(float *v, int rotary_dim, const float *cos_tab, const float *sin_tab);
/* Fills cos/sin tables for one position, computed in double so that angles
 * stay exact at stream positions in the millions. */
void ss_rotary_table(float *cos_tab, float *sin_tab, int rotary_dim, double base, int64_t pos);

/* A run of cached keys/values of one (layer, head): rows [first, first + n)
 * of k and v ([row][head_dim] each), or the rows row_k[j] / row_v[j], and
 * the query that scores them. The keys of one query come as a few runs
 * (sinks, heavy set, window, ancestors) that share one softmax; runs differ
 * in how the query meets the keys' rotations (cache/kv_cache.h). */
typedef struct {
    const float *k, *v;
    int first, n;
    const float *const *row_k; /* NULL: contiguous rows from `first` */
    const float *const *row_v;
    const float *q;
    int by_distance;           /* q is rotated per key by its distance */
} ss_kv_run;

/* Rotation of the query per key, for runs marked by_distance: the j-th of n
 * keys (attention order) is n - 1 - j places before the query, and the
 * query is rotated by that distance (GPT-NeoX rotate-half on its first
 * rotary_dim dims) before its dot product with the (unrotated) key. cos/sin
 * hold rotary_dim / 2 values per distance. */
typedef struct {
    const float *cos, *sin;
    int rotary_dim;
} ss_distance_rotation;

/* Dot product of two f32 vectors. */
float ss_dot(const float *a, const float *b, int n);

/* probs[j] = softmax over all keys of (q . k_j * scale), keys taken in run
 * order (the order fixes the floating-point result: the same keys and
 * queries in the same order give the same bits however they are split into
 * runs). rot: the per-key rotation of by_distance runs (NULL if none).
 * Returns the number of keys; probs needs room for all of them. */
int ss_attention_probs(const ss_kv_run *runs, int n_runs, int head_dim, float scale,
                       const ss_distance_rotation *rot, float *probs);
/* out[head_dim] = sum_j probs[j] v_j over the runs' values in order. */
void ss_attention_values(float *out, const float *probs, const ss_kv_run *runs, int n_runs, int head_dim);

/* Best-of-`repeats` read bandwidth in GB/s over a buffer of `bytes`, all
 * threads streaming disjoint parts (0 on allocation failure). */
double ss_read_bandwidth(size_t bytes, int repeats, double *checksum);

/* Best-of-`repeats` f32 FMA throughput in GFLOP/s (2 flops per lane per
 * FMA), all threads running independent register-resident FMA chains for
 * about `seconds` in all: the compute roofline that prefill is measured
 * against. */
double ss_peak_gflops(double seconds, int repeats);

/* Name of the SIMD variant in use. */
const char *ss_kernel_variant(void);

#endif
