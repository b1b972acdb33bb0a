/* Matrix products against weight matrices stored as f32, f16, bf16 or int8
 * (per-row scales), and the dtype conversions they need.
 *
 * Small batches (decode, n = 1; verification of a few draft tokens) are
 * bound by reading the weights, so they use dot-product kernels that take 4
 * weight rows at a time and run every token against them while they are hot
 * in L1/L2: a weight row leaves memory once per call. Tokens are processed
 * in pairs to give each loaded weight vector two FMAs. From
 * SS_GEMM_MIN_TOKENS tokens on the work is bound by arithmetic and goes to
 * the blocked GEMM (gemm.c).
 *
 * Every output value is computed by exactly one thread, in an order that
 * does not depend on the thread count, so results are bitwise identical for
 * any number of threads. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels.h"
#include "simd.h"

enum { ROWS = 4, TOKEN_CHUNK = 32 };

/* Below this many multiply-adds a second thread costs more (fork/join, and
 * spinning at the barrier when cores are oversubscribed) than it saves. */
#define PARALLEL_MIN_MACS (1u << 16)

/* ------------------------------------------------------- dispatch level */

static int cpu_level = -1, simd_level = -1;

int ss_cpu_level(void) {
    int level = __atomic_load_n(&cpu_level, __ATOMIC_RELAXED);
    if (level >= 0) return level;
    level = SS_SIMD_SCALAR;
#if SS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        level = SS_SIMD_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16"))
            level = SS_SIMD_AVX512BF16;
    }
#endif
    __atomic_store_n(&cpu_level, level, __ATOMIC_RELAXED);
    return level;
}

int ss_simd_level(void) {
    int level = __atomic_load_n(&simd_level, __ATOMIC_RELAXED);
    if (level >= 0) return level;
    level = ss_cpu_level();
    const char *cap = getenv("SPECSTREAM_KERNELS");
    if (cap && !strcmp(cap, "scalar")) level = SS_SIMD_SCALAR;
    else if (cap && !strcmp(cap, "avx2") && level > SS_SIMD_AVX2) level = SS_SIMD_AVX2;
    __atomic_store_n(&simd_level, level, __ATOMIC_RELAXED);
    return level;
}

const char *ss_level_name(int level) {
    static const char *const names[] = {"scalar", "avx2", "avx512bf16"};
    return level >= 0 && level <= SS_SIMD_AVX512BF16 ? names[level] : NULL;
}

static size_t i8_scale_offset(int64_t rows, int64_t cols) {
    return ((size_t)rows * (size_t)cols + 63) & ~(size_t)63;
}

size_t ss_matrix_bytes(ss_dtype dtype, int64_t rows, int64_t cols) {
    if (dtype == SS_I8) return i8_scale_offset(rows, cols) + (size_t)rows * sizeof(float);
    return (size_t)rows * (size_t)cols * ss_dtype_size(dtype);
}

const float *ss_i8_scales(const void *w, int64_t rows, int64_t cols) {
    return (const float *)((const char *)w + i8_scale_offset(rows, cols));
}

/* ---------------------------------------------------------- scalar path */

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
    bits += 0x7fffu + ((bits >> 16) & 1); /* round to nearest even */
    return (uint16_t)(bits >> 16);
}

static inline uint16_t f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t sign = (bits >> 16) & 0x8000, abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00);         /* NaN */
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);        /* overflow to inf */
    if (abs < 0x38800000u) {                                         /* subnormal or zero */
        if (abs < 0x33000000u) return (uint16_t)sign;
        uint32_t mant = (abs & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(abs >> 23);                          /* 14..24 */
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1);
    return (uint16_t)(sign | (((rounded >> 23) - 127 + 15) << 10) | ((rounded >> 13) & 0x3ff));
}

/* Element i of a matrix as stored (int8: the integer, unscaled). */
static inline float load_scalar(const void *w, size_t i, ss_dtype wt) {
    switch (wt) {
    case SS_F32: return ((const float *)w)[i];
    case SS_F16: return f16_to_f32(((const uint16_t *)w)[i]);
    case SS_I8: return (float)((const int8_t *)w)[i];
    default: return bf16_to_f32(((const uint16_t *)w)[i]);
    }
}

void ss_convert_to_f32(float *dst, const void *src, ss_dtype dtype, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = load_scalar(src, i, dtype);
}

void ss_convert_from_f32(void *dst, const float *src, ss_dtype dtype, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (dtype) {
        case SS_F32: ((float *)dst)[i] = src[i]; break;
        case SS_F16: ((uint16_t *)dst)[i] = f32_to_f16(src[i]); break;
        case SS_I8: {
            const float r = nearbyintf(src[i]);
            ((int8_t *)dst)[i] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
            break;
        }
        default: ((uint16_t *)dst)[i] = f32_to_bf16(src[i]); break;
        }
    }
}

float ss_gelu_one(float v, int tanh_approx) {
    if (tanh_approx) {
        const float c = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

/* Stores one finished value according to the epilogue. */
static inline void emit(float *dst, float v, ss_epilogue epi) {
    switch (epi) {
    case SS_EPI_GELU: *dst = ss_gelu_one(v, 0); break;
    case SS_EPI_GELU_TANH: *dst = ss_gelu_one(v, 1); break;
    case SS_EPI_ADD: *dst += v; break;
    default: *dst = v; break;
    }
}

static void rows_scalar(float *out, const float *x, int n, int k, const void *w, ss_dtype wt,
                        const float *scale, int m, const float *bias, ss_epilogue epi, int r0, int r1) {
    for (int j = r0; j < r1; j++) {
        const size_t row = (size_t)j * (size_t)k;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * k;
            float acc = 0.0f;
            for (int c = 0; c < k; c++) acc += load_scalar(w, row + c, wt) * xi[c];
            if (scale) acc *= scale[j];
            emit(out + (size_t)i * m + j, acc + (bias ? bias[j] : 0.0f), epi);
        }
    }
}

/* ------------------------------------------------------------ AVX2 path */
#if SS_X86


/* Sums of four vectors, one per lane of the result. */
SS_AVX2 static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* The 4 results of rows j, j+q, j+2q, j+3q for one token: scale, bias,
 * epilogue; dst is the token's output row. */
SS_AVX2 static inline void finish4(float *dst, __m128 sums, const float *scale, const float *bias,
                                   int j, int q, ss_epilogue epi) {
    if (scale) sums = _mm_mul_ps(sums, _mm_setr_ps(scale[j], scale[j + q], scale[j + 2 * q], scale[j + 3 * q]));
    if (bias) sums = _mm_add_ps(sums, _mm_setr_ps(bias[j], bias[j + q], bias[j + 2 * q], bias[j + 3 * q]));
    float r[4];
    _mm_storeu_ps(r, sums);
    for (int t = 0; t < 4; t++) emit(dst + j + t * q, r[t], epi);
}

/* Four weight rows j, j+q, j+2q, j+3q against tokens [0, n). k % 8 tail
 * handled after the vector loop, in the same order for every token.
 *
 * The caller walks j through a range of q rows, so each of the 4 rows is
 * one long contiguous stream through the matrix. Four adjacent rows would
 * be 4 short streams (2 KB each for bf16 at k = 1024) that restart every
 * block: the hardware prefetcher loses them at each 4 KB page and a probe
 * reading that pattern got ~12 GB/s where long streams got ~16 on this
 * machine. The next row of each stream is also prefetched in software as
 * this one is consumed (with one or two tokens the loop is a pure stream). */
SS_AVX2 __attribute__((always_inline)) static inline void block4_avx2(
    float *out, const float *x, int n, int k, const void *w, ss_dtype wt, const float *scale, int m,
    const float *bias, ss_epilogue epi, int j, int q, int prefetch) {
    const size_t stride = (size_t)q * k;
    const size_t r0 = (size_t)j * k, r1 = r0 + stride, r2 = r1 + stride, r3 = r2 + stride;
    const int k8 = k & ~7;
    const size_t es = ss_dtype_size(wt);
    const char *pf = (const char *)w + (r0 + (size_t)k) * es; /* row j + 1: the next step of stream 0 */
    const size_t pf_stream = stride * es;
    const int pf_every = (int)(64 / (8 * es)) > 0 ? (int)(64 / (8 * es)) : 1; /* 8-element steps per line */
    int i = 0;
    for (; i + 2 <= n; i += 2) {
        const float *xa = x + (size_t)i * k, *xb = xa + k;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        size_t pfo = 0;
        for (int c = 0; c < k8; c += 8) {
            if (prefetch && i == 0 && (c / 8) % pf_every == 0) {
                for (int t = 0; t < 4; t++) _mm_prefetch(pf + pfo + t * pf_stream, _MM_HINT_T0);
                pfo += 64;
            }
            const __m256 w0 = ss_load8_f32(w, r0 + c, wt), w1 = ss_load8_f32(w, r1 + c, wt);
            const __m256 w2 = ss_load8_f32(w, r2 + c, wt), w3 = ss_load8_f32(w, r3 + c, wt);
            const __m256 va = _mm256_loadu_ps(xa + c), vb = _mm256_loadu_ps(xb + c);
            a0 = _mm256_fmadd_ps(w0, va, a0); b0 = _mm256_fmadd_ps(w0, vb, b0);
            a1 = _mm256_fmadd_ps(w1, va, a1); b1 = _mm256_fmadd_ps(w1, vb, b1);
            a2 = _mm256_fmadd_ps(w2, va, a2); b2 = _mm256_fmadd_ps(w2, vb, b2);
            a3 = _mm256_fmadd_ps(w3, va, a3); b3 = _mm256_fmadd_ps(w3, vb, b3);
        }
        __m128 sa = hsum4(a0, a1, a2, a3), sb = hsum4(b0, b1, b2, b3);
        if (k8 < k) {
            float ra[4] = {0}, rb[4] = {0};
            for (int c = k8; c < k; c++) {
                for (int r = 0; r < 4; r++) {
                    const float wv = load_scalar(w, r0 + (size_t)r * stride + c, wt);
                    ra[r] += wv * xa[c];
                    rb[r] += wv * xb[c];
                }
            }
            sa = _mm_add_ps(sa, _mm_loadu_ps(ra));
            sb = _mm_add_ps(sb, _mm_loadu_ps(rb));
        }
        finish4(out + (size_t)i * m, sa, scale, bias, j, q, epi);
        finish4(out + (size_t)(i + 1) * m, sb, scale, bias, j, q, epi);
    }
    if (i < n) {
        const float *xa = x + (size_t)i * k;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        size_t pfo = 0;
        for (int c = 0; c < k8; c += 8) {
            if (prefetch && i == 0 && (c / 8) % pf_every == 0) {
                for (int t = 0; t < 4; t++) _mm_prefetch(pf + pfo + t * pf_stream, _MM_HINT_T0);
                pfo += 64;
            }
            const __m256 va = _mm256_loadu_ps(xa + c);
            a0 = _mm256_fmadd_ps(ss_load8_f32(w, r0 + c, wt), va, a0);
            a1 = _mm256_fmadd_ps(ss_load8_f32(w, r1 + c, wt), va, a1);
            a2 = _mm256_fmadd_ps(ss_load8_f32(w, r2 + c, wt), va, a2);
            a3 = _mm256_fmadd_ps(ss_load8_f32(w, r3 + c, wt), va, a3);
        }
        __m128 sa = hsum4(a0, a1, a2, a3);
        if (k8 < k) {
            float ra[4] = {0};
            for (int c = k8; c < k; c++)
                for (int r = 0; r < 4; r++) ra[r] += load_scalar(w, r0 + (size_t)r * stride + c, wt) * xa[c];
            sa = _mm_add_ps(sa, _mm_loadu_ps(ra));
        }
        finish4(out + (size_t)i * m, sa, scale, bias, j, q, epi);
    }
}

/* One instance per dtype so that ss_load8_f32's switch folds away. */
#define DEFINE_BLOCK4(NAME, DT)                                                                   \
    SS_AVX2 static void NAME(float *out, const float *x, int n, int k, const void *w,            \
                             const float *scale, int m, const float *bias, ss_epilogue epi,       \
                             int j, int q, int prefetch) {                                        \
        block4_avx2(out, x, n, k, w, DT, scale, m, bias, epi, j, q, prefetch);                    \
    }
DEFINE_BLOCK4(block4_f32, SS_F32)
DEFINE_BLOCK4(block4_f16, SS_F16)
DEFINE_BLOCK4(block4_bf16, SS_BF16)
DEFINE_BLOCK4(block4_i8, SS_I8)
#undef DEFINE_BLOCK4

typedef void (*block4_fn)(float *, const float *, int, int, const void *, const float *, int,
                          const float *, ss_epilogue, int, int, int);

/* Rows [4 b0, 4 b1) as 4 streams of q = b1 - b0 consecutive rows each. */
static void block_range(block4_fn block, float *out, const float *x, int n, int k, const void *w,
                        const float *scale, int m, const float *bias, ss_epilogue epi, int b0, int b1) {
    const int q = b1 - b0;
    for (int step = 0; step < q; step++)
        block(out, x, n, k, w, scale, m, bias, epi, b0 * ROWS + step, q, step + 1 < q);
}

/* ------------------------------------------------- AVX-512 BF16 path
 * Matrix-vector products of bf16 weights with VDPBF16PS. The activations
 * are split as x = hi + lo, both bf16 (hi = x rounded to bf16, lo = the
 * rounded rest), so two dot-product instructions per 32 weights keep ~16
 * bits of x: within a few ulps of f32 activations, where rounding x to bf16
 * alone would add an error as large as the weights' own rounding. Used for
 * decode-size batches only (the GEMM path converts to f32). */

/* x split into hi/lo bf16 arrays, padded with zeros to a multiple of 32. */
SS_AVX512BF16 static void bf16_split(uint16_t *hi, uint16_t *lo, const float *x, int k, int kp) {
    for (int c = 0; c < kp; c++) {
        const float v = c < k ? x[c] : 0.0f;
        const uint16_t h = f32_to_bf16(v);
        hi[c] = h;
        lo[c] = f32_to_bf16(v - bf16_to_f32(h));
    }
}

SS_AVX512BF16 static void rows_avx512bf16(float *out, const uint16_t *xs, int n, int k, int kp,
                                          const uint16_t *w, int m, const float *bias,
                                          ss_epilogue epi, int j0, int j1) {
    const __mmask32 tail = (__mmask32)(k % 32 == 0 ? 0xffffffffu : ((1u << (k % 32)) - 1));
    const int kfull = k & ~31;
    for (int j = j0; j < j1; j++) {
        const uint16_t *row = w + (size_t)j * k;
        for (int i = 0; i < n; i++) {
            const uint16_t *hi = xs + (size_t)i * 2 * kp, *lo = hi + kp;
            __m512 a = _mm512_setzero_ps(), b = a;
            int c = 0;
            for (; c < kfull; c += 32) {
                const __m512bh wv = (__m512bh)_mm512_loadu_si512((const void *)(row + c));
                a = _mm512_dpbf16_ps(a, wv, (__m512bh)_mm512_loadu_si512((const void *)(hi + c)));
                b = _mm512_dpbf16_ps(b, wv, (__m512bh)_mm512_loadu_si512((const void *)(lo + c)));
            }
            if (c < k) {
                const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail, row + c);
                a = _mm512_dpbf16_ps(a, wv, (__m512bh)_mm512_loadu_si512((const void *)(hi + c)));
                b = _mm512_dpbf16_ps(b, wv, (__m512bh)_mm512_loadu_si512((const void *)(lo + c)));
            }
            const float v = _mm512_reduce_add_ps(_mm512_add_ps(a, b)) + (bias ? bias[j] : 0.0f);
            emit(out + (size_t)i * m + j, v, epi);
        }
    }
}

/* Returns 0 when scratch memory is missing (the caller falls back). */
static int gemv_avx512bf16(float *out, const float *x, int n, int k, const void *w, int m,
                           const float *bias, ss_epilogue epi) {
    const int kp = (k + 31) & ~31;
    const size_t need = (size_t)n * 2 * (size_t)kp;
    uint16_t *xs = ss_thread_scratch(SS_SCRATCH_BF16_SPLIT, need * sizeof(uint16_t));
    if (!xs) return 0;
    for (int i = 0; i < n; i++)
        bf16_split(xs + (size_t)i * 2 * kp, xs + (size_t)i * 2 * kp + kp, x + (size_t)i * k, k, kp);
    const int par = (size_t)m * (size_t)k * (size_t)n >= PARALLEL_MIN_MACS;
    enum { CHUNK = 16 };
    const int chunks = (m + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (par)
    for (int c = 0; c < chunks; c++) {
        const int j1 = (c + 1) * CHUNK < m ? (c + 1) * CHUNK : m;
        rows_avx512bf16(out, xs, n, k, kp, w, m, bias, epi, c * CHUNK, j1);
    }
    return 1;
}

#endif /* SS_X86 */

/* ---------------------------------------------------------- dispatch */

const char *ss_kernel_variant(void) { return ss_have_avx2() ? "avx2+fma+f16c" : "scalar"; }

const char *ss_matmul_path_at(int level, ss_dtype dtype, int n) {
    if (level < SS_SIMD_AVX2) return "scalar";
    if (n >= SS_GEMM_MIN_TOKENS) return "gemm-avx2";
    if (dtype == SS_BF16 && level >= SS_SIMD_AVX512BF16) return "gemv-avx512bf16";
    return "gemv-avx2";
}

const char *ss_matmul_path(ss_dtype dtype, int n) { return ss_matmul_path_at(ss_simd_level(), dtype, n); }

void ss_matmul_at(int level, float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi) {
    const float *scale = wt == SS_I8 ? ss_i8_scales(w, m, k) : NULL;
    if (level > ss_cpu_level()) level = ss_cpu_level();
#if SS_X86
    if (level >= SS_SIMD_AVX2) {
        if (n >= SS_GEMM_MIN_TOKENS) {
            ss_gemm_avx2(out, x, n, k, w, wt, m, bias, epi);
            return;
        }
        if (wt == SS_BF16 && level >= SS_SIMD_AVX512BF16 && gemv_avx512bf16(out, x, n, k, w, m, bias, epi)) return;
        const block4_fn block = wt == SS_F32   ? block4_f32
                                : wt == SS_F16 ? block4_f16
                                : wt == SS_I8  ? block4_i8
                                               : block4_bf16;
        const int full = m / ROWS;
        for (int t0 = 0; t0 < n; t0 += TOKEN_CHUNK) {
            const int nt = n - t0 < TOKEN_CHUNK ? n - t0 : TOKEN_CHUNK;
            const float *xc = x + (size_t)t0 * k;
            float *oc = out + (size_t)t0 * m;
            const int par = (size_t)m * (size_t)k * (size_t)nt >= PARALLEL_MIN_MACS;
            if (par) {
                /* A contiguous range of rows per thread */
#pragma omp parallel
                {
                    const int nth = omp_get_num_threads(), id = omp_get_thread_num();
                    const int b0 = (int)((int64_t)full * id / nth), b1 = (int)((int64_t)full * (id + 1) / nth);
                    block_range(block, oc, xc, nt, k, w, scale, m, bias, epi, b0, b1);
                }
            } else {
                block_range(block, oc, xc, nt, k, w, scale, m, bias, epi, 0, full);
            }
            if (full * ROWS < m) rows_scalar(oc, xc, nt, k, w, wt, scale, m, bias, epi, full * ROWS, m);
        }
        return;
    }
#endif
    const int par = (size_t)m * (size_t)k * (size_t)n >= PARALLEL_MIN_MACS;
#pragma omp parallel for schedule(static) if (par)
    for (int j = 0; j < m; j++) rows_scalar(out, x, n, k, w, wt, scale, m, bias, epi, j, j + 1);
}

void ss_matmul_ex(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi) {
    ss_matmul_at(ss_simd_level(), out, x, n, k, w, wt, m, bias, epi);
}

void ss_matmul(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
               const float *bias) {
    ss_matmul_ex(out, x, n, k, w, wt, m, bias, SS_EPI_NONE);
}
