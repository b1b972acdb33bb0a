/* CPU kernels: the arithmetic of one forward pass. Each entry point picks
 * its SIMD kernel at run time (simd.h: scalar, avx2, avx512, amx), so one
 * build serves every x86-64 machine. Weights may be stored in any format of
 * formats.h (f32, f16, bf16, int8 with per-row scales, int4 with per-group
 * scales and zero points); activations are always f32. */
#ifndef SS_KERNELS_H
#define SS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "specstream.h"

/* Converts n values of a float dtype (f32, f16, bf16) to f32, exactly. */
void ss_convert_to_f32(float *dst, const void *src, ss_dtype dtype, size_t n);
/* Converts n f32 values to a float dtype (round to nearest even). */
void ss_convert_from_f32(void *dst, const float *src, ss_dtype dtype, size_t n);

/* Products of up to this many tokens (decode, speculative verification)
 * run one kernel whatever their size, so that each token's results are
 * bitwise those of a 1-token product; larger ones (prefill) may run a GEMM. */
#define SS_WIDE_MAX 96

/* out[i][j] = sum_c x[i][c] * w[j][c] + bias[j] for i < n, j < m.
 *
 * w is row-major [m][k] in format wt (a PyTorch Linear weight); bias may be
 * NULL. Each weight row is read from memory once per call however large n
 * is (up to SS_WIDE_MAX tokens: in one pass; beyond, once per block of
 * tokens).
 *
 * Arithmetic per kernel; the tests derive their tolerances from it
 * (tests/kernel_arithmetic.py models each kernel in NumPy). "The weights"
 * are the values the stored format stands for (formats.h: f16/bf16 exactly,
 * int8 q * s, int4 (q - z) * s); u = 2^-24.
 *  - scalar (portable C, every format): each weight dequantized to f32
 *    (int8: q * s rounded to f32; the others exactly), then one f32 multiply
 *    and one f32 add per weight, in column order, then + bias.
 *  - avx2-gemv, avx512-gemv (up to SS_WIDE_MAX tokens): weights converted
 *    exactly to f32 (int8: the integer q, its row scale multiplying the
 *    finished sum); f32 FMAs into one 8- or 16-lane accumulator per output,
 *    a fixed-order sum of the lanes, the columns past the last multiple of
 *    32 added one by one (gemv_tile.h); then scale, + bias.
 *  - avx2-gemm (more than SS_WIDE_MAX tokens; avx2 and avx512 levels):
 *    weights converted to f32 (int8: q * s rounded), f32 FMA chains over
 *    256-column slices added to the output in order (gemm.c).
 *    For all of these activations are f32 as given, and
 *    |error| <= (k + 8) u sum_c |x_c w_c|.
 *  - amx, bf16 and int4 (every batch size): each activation split as
 *    x = hi + lo (bf16, round to nearest even), dropping at most 2^-16 |x|;
 *    weights multiplied as bf16: bf16 exactly, int4 as (q - z) * s rounded
 *    to bf16 (at most 2^-8 |w| off); exact products of hi and of lo summed
 *    in f32 (2k terms), denormals flushed (amx.c). Against the weights as
 *    multiplied, |error| <= (2^-16 + (2k + 8) u) sum_c |x_c w_c|.
 *  - amx, int8 (every batch size): each token's activations in fixed point,
 *    v = round(x 2^F) with |v| <= 2^20, so |x - v 2^-F| <= 2^-20 max|x|
 *    over the token; products of int8 digits of v and q summed exactly in
 *    int32, scaled in double, rounded once to f32 (amx_int8.c):
 *    |error| <= 2^-20 max_c |x_c| sum_c |w_c| + 3u |result|.
 *
 * For a given kernel every output's operations are fixed by x, w and bias
 * alone: not by n (up to SS_WIDE_MAX), by the other rows or tokens, or by
 * the thread count. */
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
 * saving a pass over the output (and a fork/join) per matrix. Opens its own
 * parallel region (when the product is large enough to share). */
void ss_matmul_ex(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi);

/* The output rows of part `part` of `parts` (0 <= part < parts) of
 * ss_matmul_ex: contiguous row ranges aligned to the kernel's row tile,
 * together every row once. For callers already inside a parallel region
 * (one region per forward pass): thread t calls it with part t of the team
 * size; it opens no region of its own. Results are bitwise those of
 * ss_matmul_ex for any `parts`. */
void ss_matmul_part(int part, int parts, float *out, const float *x, int n, int k, const void *w, ss_dtype wt,
                    int m, const float *bias, ss_epilogue epi);

/* ss_matmul_ex and ss_matmul_part with the kernel of a given SIMD level
 * (simd.h) where the format has one, else the one dispatch prefers below
 * it; capped at what the CPU has. Tests run every level the machine offers
 * in one process. */
void ss_matmul_at(int level, float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi);
void ss_matmul_part_at(int level, int part, int parts, float *out, const float *x, int n, int k, const void *w,
                       ss_dtype wt, int m, const float *bias, ss_epilogue epi);

/* Name of the kernel that runs a batch of n tokens of dtype: "avx2-gemv",
 * "avx512-gemv", "avx2-gemm", "amx", "scalar" (tests, benchmark reports). */
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

/* Best-of-`repeats` read bandwidth in GB/s over a buffer of `bytes` (use
 * far more than the last-level cache), every thread streaming its own part
 * with several independent vector accumulators at the best level (AVX-512
 * where present, else AVX2, else C): what decode is measured against. 0 on
 * allocation failure. */
double ss_read_bandwidth(size_t bytes, int repeats, double *checksum);
/* The same with the loads of a given level (avx2: the probe of earlier
 * versions, 4 ymm accumulators). */
double ss_read_bandwidth_at(int level, size_t bytes, int repeats, double *checksum);

/* Best-of-`repeats` f32 FMA throughput in GFLOP/s (2 flops per lane per
 * FMA), all threads running independent register-resident FMA chains for
 * about `seconds` in all: the compute roofline that prefill is measured
 * against. ss_peak_gflops runs 8-lane AVX2 FMAs (the arithmetic of the
 * GEMM); ss_peak_gflops_at those of a level (avx512: 16 lanes). */
double ss_peak_gflops(double seconds, int repeats);
double ss_peak_gflops_at(int level, double seconds, int repeats);

/* Name of the SIMD level in use ("scalar", "avx2", "avx512", "amx"). */
const char *ss_kernel_variant(void);

#endif
