/* CPU kernels: the arithmetic of one forward pass. Each entry point picks
 * its SIMD variant at run time (AVX2+FMA+F16C where the CPU has it, portable
 * C elsewhere), so one build serves every x86-64 machine. Weights may be
 * stored as f32, f16 or bf16; activations are always f32. */
#ifndef SS_KERNELS_H
#define SS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "specstream.h"

size_t ss_dtype_size(ss_dtype dtype);

/* Converts n values of any supported dtype to f32. */
void ss_convert_to_f32(float *dst, const void *src, ss_dtype dtype, size_t n);
/* Converts n f32 values to dtype (round to nearest even for f16/bf16). */
void ss_convert_from_f32(void *dst, const float *src, ss_dtype dtype, size_t n);

/* out[i][j] = sum_c x[i][c] * w[j][c] + bias[j] for i < n, j < m.
 * w is row-major [m][k] in dtype wt (a PyTorch Linear weight); bias may be
 * NULL. Threads split the m output rows; each weight row is read from memory
 * once per call however large n is. */
void ss_matmul(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
               const float *bias);

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

/* A contiguous run of cached keys/values ([n][head_dim] each) and the query
 * that attends to it. Runs of one query differ in how the query is rotated
 * (see cache/kv_cache.h), but share one softmax. */
typedef struct {
    const float *q;
    const float *k, *v;
    int n;
    float *prob_sum; /* optional: += each key's attention probability */
} ss_kv_run;

/* Dot product of two f32 vectors. */
float ss_dot(const float *a, const float *b, int n);

/* out[head_dim] = softmax(q.k * scale over all runs) . v. scores needs room
 * for the total number of keys. */
void ss_attend(float *out, const ss_kv_run *runs, int n_runs, int head_dim, float scale,
               float *scores);

/* Best-of-`repeats` read bandwidth in GB/s over a buffer of `bytes`, all
 * threads streaming disjoint parts (0 on allocation failure). */
double ss_read_bandwidth(size_t bytes, int repeats, double *checksum);

/* Name of the SIMD variant in use. */
const char *ss_kernel_variant(void);

#endif
