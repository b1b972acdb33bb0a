/* Matrix products of up to SS_WIDE_MAX tokens (decode, speculative
 * verification) on AVX2 and AVX-512: one register-tiled kernel
 * (gemv_tile.h), instantiated for 8 and 16 lanes and every weight format.
 *
 * These products are bound by reading the weights, so a weight row leaves
 * memory once per call however many tokens there are: a tile of R rows x T
 * tokens keeps R x T accumulators in registers, converts each weight vector
 * once and multiplies it into T tokens, and the tiles of further tokens
 * re-read the same R rows from L1/L2.
 *
 * The rows of a call are walked as R long streams (rows j, j + q, j + 2q,
 * ...; q = rows / R) rather than R adjacent rows: adjacent rows would be R
 * short streams (2 KB each for bf16 at k = 1024) that restart at every
 * tile, which the hardware prefetcher loses at each 4 KB page (a probe of
 * that pattern read ~12 GB/s where long streams read ~16 on the machine of
 * the first version; 13.4 vs 15.6 GB/s on one core of the Xeon in
 * formats.c). Each tile also prefetches its rows' successors in software. */
#include "formats.h"
#include "vec_weights.h"

#if SS_X86

/* Sum of the 8 lanes in a fixed order: halves, then pairs, then the two. */
SS_AVX2 static inline float sum8(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

SS_AVX512 static inline float sum16(__m512 a) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ------------------------------------------------------ AVX2: 8 lanes
 * 16 ymm registers: 4 rows x 2 tokens (8 accumulators + 4 weights) for one
 * or two tokens, 3 rows x 4 tokens (12 + 3 + 1 activation) beyond. */
#define VEC __m256
#define VW 8
#define TARGET SS_AVX2
#define GROUP ss_group8
#define group_at ss_group8_at
#define weights ss_weights8
#define vzero _mm256_setzero_ps
#define vload _mm256_loadu_ps
#define vfma _mm256_fmadd_ps
#define vsum sum8
#define R_FEW 4
#define T_FEW 2
#define R_MANY 3
#define T_MANY 4
#define NAME(x) x##_avx2
#include "gemv_tile.h"
#undef VEC
#undef VW
#undef TARGET
#undef GROUP
#undef group_at
#undef weights
#undef vzero
#undef vload
#undef vfma
#undef vsum
#undef R_FEW
#undef T_FEW
#undef R_MANY
#undef T_MANY
#undef NAME

/* ---------------------------------------------------- AVX-512: 16 lanes
 * 32 zmm registers: 4 rows x 4 tokens for up to four tokens, 5 x 5 beyond
 * (25 accumulators + 5 weights + 1 activation). Measured on the 1b shapes,
 * bf16/int8 at 8 tokens: 18.9/12.1 GB/s, against 17.2/11.1 for 4 x 6,
 * 17.3/11.5 for 6 x 4 and 15.9/10.1 for 8 x 3. */
#define VEC __m512
#define VW 16
#define TARGET SS_AVX512
#define GROUP ss_group16
#define group_at ss_group16_at
#define weights ss_weights16
#define vzero _mm512_setzero_ps
#define vload _mm512_loadu_ps
#define vfma _mm512_fmadd_ps
#define vsum sum16
#define R_FEW 4
#define T_FEW 4
#define R_MANY 5
#define T_MANY 5
#define NAME(x) x##_avx512
#include "gemv_tile.h"

/* --------------------------------------------------- the instances */

#define INSTANCES(DT, SUFFIX)                                                                                \
    SS_AVX2 static int gemv_avx2_##SUFFIX(const ss_product *p, int r0, int r1) {                             \
        return gemv_avx2(p, DT, r0, r1);                                                                     \
    }                                                                                                        \
    SS_AVX512 static int gemv_avx512_##SUFFIX(const ss_product *p, int r0, int r1) {                         \
        return gemv_avx512(p, DT, r0, r1);                                                                   \
    }
INSTANCES(SS_F32, f32)
INSTANCES(SS_F16, f16)
INSTANCES(SS_BF16, bf16)
INSTANCES(SS_I8, i8)
INSTANCES(SS_I4, i4)
#undef INSTANCES

const ss_kernel ss_gemv_avx2[SS_DTYPES] = {
    [SS_F32] = {"avx2-gemv", SS_SIMD_AVX2, 16, gemv_avx2_f32},
    [SS_F16] = {"avx2-gemv", SS_SIMD_AVX2, 16, gemv_avx2_f16},
    [SS_BF16] = {"avx2-gemv", SS_SIMD_AVX2, 16, gemv_avx2_bf16},
    [SS_I8] = {"avx2-gemv", SS_SIMD_AVX2, 16, gemv_avx2_i8},
    [SS_I4] = {"avx2-gemv", SS_SIMD_AVX2, 16, gemv_avx2_i4},
};

const ss_kernel ss_gemv_avx512[SS_DTYPES] = {
    [SS_F32] = {"avx512-gemv", SS_SIMD_AVX512, 16, gemv_avx512_f32},
    [SS_F16] = {"avx512-gemv", SS_SIMD_AVX512, 16, gemv_avx512_f16},
    [SS_BF16] = {"avx512-gemv", SS_SIMD_AVX512, 16, gemv_avx512_bf16},
    [SS_I8] = {"avx512-gemv", SS_SIMD_AVX512, 16, gemv_avx512_i8},
    [SS_I4] = {"avx512-gemv", SS_SIMD_AVX512, 16, gemv_avx512_i4},
};

#endif /* SS_X86 */
