/* Stored weights as the f32 values the kernels multiply, per format: one
 * value (the portable tails), 8 lanes (AVX2) or 16 lanes (AVX-512).
 *
 * Kernels walk a row in chunks of SS_I4_CHUNK = 32 weights (one 16-byte
 * block of int4) and take vector v of a chunk. int8 gives the integers (its
 * row scale multiplies the finished sum); int4 gives the exact dequantized
 * values (q - z) * s of the chunk's group. Kernel instances pass a constant
 * dtype, so the switches fold away. */
#ifndef SS_VEC_WEIGHTS_H
#define SS_VEC_WEIGHTS_H

#include <stdint.h>
#include <string.h>

#include "float16.h"
#include "formats.h"
#include "simd.h"

/* Bytes from one row of a [rows][k] matrix to the next. */
static inline size_t ss_row_bytes(ss_dtype wt, int k) {
    switch (wt) {
    case SS_F32: return (size_t)k * 4;
    case SS_F16:
    case SS_BF16: return (size_t)k * 2;
    case SS_I8: return (size_t)k;
    default: return ss_i4_row_bytes(k);
    }
}

/* Where a row's int4 group parameters are: scales and zero points. */
typedef struct {
    const uint16_t *scale;
    const uint8_t *zero;
} ss_i4_row;

static inline ss_i4_row ss_i4_row_at(const void *w, int64_t rows, int64_t k, int64_t r) {
    const int64_t groups = ss_i4_groups(k);
    return (ss_i4_row){ss_i4_scales(w, rows, k) + r * groups, ss_i4_zeros(w, rows, k) + r * groups};
}

/* Weight c of a row, as the kernels multiply it. */
static inline float ss_weight1(ss_dtype wt, const void *row, ss_i4_row g, int c) {
    switch (wt) {
    case SS_F32: return ((const float *)row)[c];
    case SS_F16: return ss_f16_to_f32(((const uint16_t *)row)[c]);
    case SS_BF16: return ss_bf16_to_f32(((const uint16_t *)row)[c]);
    case SS_I8: return (float)((const int8_t *)row)[c];
    default: {
        const uint8_t byte = ((const uint8_t *)row)[(c / SS_I4_CHUNK) * 16 + c % 16];
        const int q = (c % SS_I4_CHUNK) < 16 ? byte & 15 : byte >> 4, gi = c / SS_I4_GROUP;
        return (float)(q - g.zero[gi]) * ss_bf16_to_f32(g.scale[gi]);
    }
    }
}

#if SS_X86
/* ------------------------------------------------------------- 8 lanes */

/* An int4 group for 8-lane loads: w = q * scale + offset with offset =
 * -z * scale; both products are exact, so the FMA gives (q - z) * s. */
typedef struct {
    __m256 scale, offset;
} ss_group8;

SS_AVX2 static inline ss_group8 ss_group8_at(ss_dtype wt, ss_i4_row g, int c) {
    if (wt != SS_I4) return (ss_group8){_mm256_setzero_ps(), _mm256_setzero_ps()};
    const float s = ss_bf16_to_f32(g.scale[c / SS_I4_GROUP]);
    return (ss_group8){_mm256_set1_ps(s), _mm256_set1_ps(-(float)g.zero[c / SS_I4_GROUP] * s)};
}

/* Weights c + 8v .. c + 8v + 7 of a row (c a multiple of 32, v < 4). */
SS_AVX2 static inline __m256 ss_weights8(ss_dtype wt, const void *row, int c, int v, ss_group8 g) {
    const int i = c + 8 * v;
    switch (wt) {
    case SS_F32: return _mm256_loadu_ps((const float *)row + i);
    case SS_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    case SS_BF16: {
        const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case SS_I8: {
        int64_t q;
        memcpy(&q, (const int8_t *)row + i, 8);
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(q)));
    }
    default: { /* bytes (v & 1) * 8.. of the chunk; low nibbles for v < 2 */
        int64_t b;
        memcpy(&b, (const uint8_t *)row + (c / SS_I4_CHUNK) * 16 + (v & 1) * 8, 8);
        __m256i q = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(b));
        if (v >= 2) q = _mm256_srli_epi32(q, 4);
        q = _mm256_and_si256(q, _mm256_set1_epi32(15));
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), g.scale, g.offset);
    }
    }
}

/* ------------------------------------------------------------ 16 lanes */

/* An int4 group for 16-lane loads: the 16 values (i - z) * s, i < 16
 * (i * s - z * s in one FMA of exact products), looked up by the nibble. */
typedef struct {
    __m512 table;
} ss_group16;

SS_AVX512 static inline ss_group16 ss_group16_at(ss_dtype wt, ss_i4_row g, int c) {
    if (wt != SS_I4) return (ss_group16){_mm512_setzero_ps()};
    const float s = ss_bf16_to_f32(g.scale[c / SS_I4_GROUP]);
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return (ss_group16){_mm512_fmadd_ps(iota, _mm512_set1_ps(s), _mm512_set1_ps(-(float)g.zero[c / SS_I4_GROUP] * s))};
}

/* Weights c + 16v .. c + 16v + 15 of a row (c a multiple of 32, v < 2). */
SS_AVX512 static inline __m512 ss_weights16(ss_dtype wt, const void *row, int c, int v, ss_group16 g) {
    const int i = c + 16 * v;
    switch (wt) {
    case SS_F32: return _mm512_loadu_ps((const float *)row + i);
    case SS_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i)));
    case SS_BF16: {
        const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case SS_I8:
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)row + i))));
    default: { /* the chunk's 16 bytes: low nibbles for v = 0 (the lookup reads bits 0-3) */
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((const uint8_t *)row + (c / SS_I4_CHUNK) * 16)));
        if (v) q = _mm512_srli_epi32(q, 4);
        return _mm512_permutexvar_ps(q, g.table);
    }
    }
}
#endif /* SS_X86 */

#endif
