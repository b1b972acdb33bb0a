/* Matrix products against weight matrices stored as f32, f16 or bf16.
 *
 * The kernel takes 4 weight rows at a time and runs every token against them
 * while they are hot in L1/L2, so a weight row leaves memory once per call
 * (decode is bound by exactly that traffic). Tokens are processed in pairs to
 * give each loaded weight vector two FMAs. Large batches are cut into chunks
 * of tokens whose activations fit in L2. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels.h"
#include "simd.h"

enum { ROWS = 4, TOKEN_CHUNK = 32 };

/* Below this many multiply-adds a second thread costs more (fork/join, and
 * spinning at the barrier when cores are oversubscribed) than it saves. */
#define PARALLEL_MIN_MACS (1u << 16)

size_t ss_dtype_size(ss_dtype dtype) { return dtype == SS_F32 ? 4 : 2; }

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

static inline float load_scalar(const void *w, size_t i, ss_dtype wt) {
    switch (wt) {
    case SS_F32: return ((const float *)w)[i];
    case SS_F16: return f16_to_f32(((const uint16_t *)w)[i]);
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
        default: ((uint16_t *)dst)[i] = f32_to_bf16(src[i]); break;
        }
    }
}

static void rows_scalar(float *out, const float *x, int n, int k, const void *w, ss_dtype wt,
                        int m, const float *bias, int r0, int r1) {
    for (int j = r0; j < r1; j++) {
        const size_t row = (size_t)j * (size_t)k;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * k;
            float acc = 0.0f;
            for (int c = 0; c < k; c++) acc += load_scalar(w, row + c, wt) * xi[c];
            out[(size_t)i * m + j] = acc + (bias ? bias[j] : 0.0f);
        }
    }
}

/* ------------------------------------------------------------ AVX2 path */
#if SS_X86

SS_AVX2 static inline __m256 load8(const void *w, size_t i, ss_dtype wt) {
    switch (wt) {
    case SS_F32: return _mm256_loadu_ps((const float *)w + i);
    case SS_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    default: {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    }
}

/* Sums of four vectors, one per lane of the result. */
SS_AVX2 static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* Four weight rows j..j+3 against tokens [0, n). k % 8 tail handled after. */
SS_AVX2 __attribute__((always_inline)) static inline void block4_avx2(
    float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
    const float *bias, int j) {
    const size_t r0 = (size_t)j * k, r1 = r0 + k, r2 = r1 + k, r3 = r2 + k;
    const int k8 = k & ~7;
    const __m128 b = bias ? _mm_loadu_ps(bias + j) : _mm_setzero_ps();
    int i = 0;
    for (; i + 2 <= n; i += 2) {
        const float *xa = x + (size_t)i * k, *xb = xa + k;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int c = 0; c < k8; c += 8) {
            const __m256 w0 = load8(w, r0 + c, wt), w1 = load8(w, r1 + c, wt);
            const __m256 w2 = load8(w, r2 + c, wt), w3 = load8(w, r3 + c, wt);
            const __m256 va = _mm256_loadu_ps(xa + c), vb = _mm256_loadu_ps(xb + c);
            a0 = _mm256_fmadd_ps(w0, va, a0); b0 = _mm256_fmadd_ps(w0, vb, b0);
            a1 = _mm256_fmadd_ps(w1, va, a1); b1 = _mm256_fmadd_ps(w1, vb, b1);
            a2 = _mm256_fmadd_ps(w2, va, a2); b2 = _mm256_fmadd_ps(w2, vb, b2);
            a3 = _mm256_fmadd_ps(w3, va, a3); b3 = _mm256_fmadd_ps(w3, vb, b3);
        }
        float ra[4], rb[4];
        _mm_storeu_ps(ra, _mm_add_ps(hsum4(a0, a1, a2, a3), b));
        _mm_storeu_ps(rb, _mm_add_ps(hsum4(b0, b1, b2, b3), b));
        for (int c = k8; c < k; c++) {
            for (int r = 0; r < 4; r++) {
                const float wv = load_scalar(w, r0 + (size_t)r * k + c, wt);
                ra[r] += wv * xa[c];
                rb[r] += wv * xb[c];
            }
        }
        memcpy(out + (size_t)i * m + j, ra, sizeof ra);
        memcpy(out + (size_t)(i + 1) * m + j, rb, sizeof rb);
    }
    if (i < n) {
        const float *xa = x + (size_t)i * k;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < k8; c += 8) {
            const __m256 va = _mm256_loadu_ps(xa + c);
            a0 = _mm256_fmadd_ps(load8(w, r0 + c, wt), va, a0);
            a1 = _mm256_fmadd_ps(load8(w, r1 + c, wt), va, a1);
            a2 = _mm256_fmadd_ps(load8(w, r2 + c, wt), va, a2);
            a3 = _mm256_fmadd_ps(load8(w, r3 + c, wt), va, a3);
        }
        float ra[4];
        _mm_storeu_ps(ra, _mm_add_ps(hsum4(a0, a1, a2, a3), b));
        for (int c = k8; c < k; c++)
            for (int r = 0; r < 4; r++) ra[r] += load_scalar(w, r0 + (size_t)r * k + c, wt) * xa[c];
        memcpy(out + (size_t)i * m + j, ra, sizeof ra);
    }
}

/* One instance per dtype so that load8's switch folds away. */
#define DEFINE_BLOCK4(NAME, DT)                                                                   \
    SS_AVX2 static void NAME(float *out, const float *x, int n, int k, const void *w, int m,     \
                             const float *bias, int j) {                                          \
        block4_avx2(out, x, n, k, w, DT, m, bias, j);                                             \
    }
DEFINE_BLOCK4(block4_f32, SS_F32)
DEFINE_BLOCK4(block4_f16, SS_F16)
DEFINE_BLOCK4(block4_bf16, SS_BF16)
#undef DEFINE_BLOCK4

typedef void (*block4_fn)(float *, const float *, int, int, const void *, int, const float *, int);

#endif /* SS_X86 */

/* ---------------------------------------------------------- dispatch */

const char *ss_kernel_variant(void) { return ss_have_avx2() ? "avx2+fma+f16c" : "scalar"; }

void ss_matmul(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
               const float *bias) {
#if SS_X86
    if (ss_have_avx2()) {
        const block4_fn block = wt == SS_F32 ? block4_f32 : wt == SS_F16 ? block4_f16 : block4_bf16;
        const int full = m / ROWS;
        for (int t0 = 0; t0 < n; t0 += TOKEN_CHUNK) {
            const int nt = n - t0 < TOKEN_CHUNK ? n - t0 : TOKEN_CHUNK;
            const float *xc = x + (size_t)t0 * k;
            float *oc = out + (size_t)t0 * m;
            const int par = (size_t)m * (size_t)k * (size_t)nt >= PARALLEL_MIN_MACS;
#pragma omp parallel for schedule(static) if (par)
            for (int blk = 0; blk < full; blk++) block(oc, xc, nt, k, w, m, bias, blk * ROWS);
            if (full * ROWS < m) rows_scalar(oc, xc, nt, k, w, wt, m, bias, full * ROWS, m);
        }
        return;
    }
#endif
    const int par = (size_t)m * (size_t)k * (size_t)n >= PARALLEL_MIN_MACS;
#pragma omp parallel for schedule(static) if (par)
    for (int j = 0; j < m; j++) rows_scalar(out, x, n, k, w, wt, m, bias, j, j + 1);
}
