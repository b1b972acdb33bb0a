/* Blocked GEMM for prefill batches (more than SS_WIDE_MAX tokens) on AVX2:
 * out[n][m] = x[n][k] . w[m][k]^T (+ bias, + epilogue), weights in any
 * format.
 *
 * The classic three-level blocking, with the weights in the role of the
 * packed "B" operand so that each weight element is converted to f32 exactly
 * once per call:
 *
 *   for each chunk of NC output columns (weight rows) owned by this thread
 *     for each KC slice of k
 *       pack W[chunk][slice] as f32 panels of NR=16 rows, k-major   (L2/L3)
 *       for each MC block of tokens
 *         pack x[block][slice] as panels of MR=6 tokens, k-major     (L2)
 *         for each 16-wide weight panel (stays in L1)
 *           for each 6-token panel: 6x16 outer-product kernel over KC
 *
 * The micro-kernel keeps a 6x16 tile of results in 12 ymm registers and per
 * k step does 2 loads of weights, 6 broadcasts of activations and 12 FMAs.
 *
 * Arithmetic of an output: the weight is converted to f32 (int8: times its
 * row scale, rounded; int4: exactly dequantized), then for each KC slice in
 * order a chain of FMAs over the slice's columns, added to the output (which
 * starts as the bias, or the residual plus the bias); then the activation.
 * Every output value is computed by one kernel call on the rows (output
 * columns) that contain it, in an order fixed by the blocking alone: results
 * do not depend on how the rows are split between threads. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "formats.h"
#include "vec_weights.h"

#if SS_X86

enum { MR = 6, NR = 16, KC = 256, MC = 120, NC = 512 };
_Static_assert(KC % SS_I4_CHUNK == 0, "slices start at whole chunks");

/* Transposes 8 rows of 8 floats in place (row r becomes column r). */
SS_AVX2 static inline void transpose8(__m256 *r) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Packs weight rows [j0, j0+16) x columns [p0, p0+kc) into dst[kc][16] as
 * f32 (int8 times its row scale); rows past m are zeros. */
SS_AVX2 __attribute__((always_inline)) static inline void pack_w_panel(float *dst, const ss_product *p,
                                                                        const ss_dtype wt, const float *scale,
                                                                        int j0, int p0, int kc) {
    const int rows = p->m - j0 < NR ? p->m - j0 : NR;
    const size_t row_bytes = ss_row_bytes(wt, p->k);
    const char *row[NR];
    ss_i4_row grp[NR];
    for (int r = 0; r < rows; r++) {
        row[r] = (const char *)p->w + (size_t)(j0 + r) * row_bytes;
        grp[r] = wt == SS_I4 ? ss_i4_row_at(p->w, p->m, p->k, j0 + r) : (ss_i4_row){NULL, NULL};
    }
    const int whole = rows == NR ? (kc & ~(SS_I4_CHUNK - 1)) : 0;
    for (int half = 0; half < 2 && whole > 0; half++) {
        const int r0 = 8 * half;
        __m256 sc[8];
        for (int r = 0; r < 8; r++) sc[r] = _mm256_set1_ps(scale ? scale[j0 + r0 + r] : 1.0f);
        for (int c = 0; c < whole; c += SS_I4_CHUNK) {
            ss_group8 g[8];
            for (int r = 0; r < 8; r++) g[r] = ss_group8_at(wt, grp[r0 + r], p0 + c);
            for (int v = 0; v < SS_I4_CHUNK / 8; v++) {
                __m256 t[8];
                for (int r = 0; r < 8; r++) {
                    t[r] = ss_weights8(wt, row[r0 + r], p0 + c, v, g[r]);
                    if (scale) t[r] = _mm256_mul_ps(t[r], sc[r]);
                }
                transpose8(t);
                for (int q = 0; q < 8; q++) _mm256_store_ps(dst + (size_t)(c + 8 * v + q) * NR + r0, t[q]);
            }
        }
    }
    for (int c = whole; c < kc; c++) {
        for (int r = 0; r < NR; r++) {
            float v = 0.0f;
            if (r < rows) {
                v = ss_weight1(wt, row[r], grp[r], p0 + c);
                if (scale) v *= scale[j0 + r];
            }
            dst[(size_t)c * NR + r] = v;
        }
    }
}

/* Packs tokens [i0, i0+6) x columns [p0, p0+kc) into dst[kc][6]; tokens past
 * n are zeros. */
static void pack_x_panel(float *dst, const float *x, int k, int n, int i0, int p0, int kc) {
    const int rows = n - i0 < MR ? n - i0 : MR;
    const float *src[MR];
    for (int r = 0; r < MR; r++) src[r] = x + (size_t)(i0 + (r < rows ? r : 0)) * k + p0;
    if (rows == MR) {
        for (int c = 0; c < kc; c++) {
            float *d = dst + (size_t)c * MR;
            d[0] = src[0][c]; d[1] = src[1][c]; d[2] = src[2][c];
            d[3] = src[3][c]; d[4] = src[4][c]; d[5] = src[5][c];
        }
    } else {
        for (int c = 0; c < kc; c++)
            for (int r = 0; r < MR; r++) dst[(size_t)c * MR + r] = r < rows ? src[r][c] : 0.0f;
    }
}

/* c[6][16] (row stride ldc) += a[kc][6] * b[kc][16]. Partial tiles (mr < 6
 * or nr < 16) go through a local tile. */
SS_AVX2 static void kernel_6x16(int kc, const float *a, const float *b, float *c, int ldc, int mr, int nr) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int p = 0; p < kc; p++) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 av = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(av, b0, c00); c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(av, b0, c10); c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(av, b0, c20); c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(av, b0, c30); c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(av, b0, c40); c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(av, b0, c50); c51 = _mm256_fmadd_ps(av, b1, c51);
        a += MR;
        b += NR;
    }
    const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (mr == MR && nr == NR) {
        for (int r = 0; r < MR; r++) {
            float *cr = c + (size_t)r * ldc;
            _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), acc[r][0]));
            _mm256_storeu_ps(cr + 8, _mm256_add_ps(_mm256_loadu_ps(cr + 8), acc[r][1]));
        }
        return;
    }
    float tile[MR][NR];
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_ps(tile[r], acc[r][0]);
        _mm256_storeu_ps(tile[r] + 8, acc[r][1]);
    }
    for (int r = 0; r < mr; r++)
        for (int q = 0; q < nr; q++) c[(size_t)r * ldc + q] += tile[r][q];
}

/* Output columns [j0, j1) of every token: bias/residual before the
 * products, activation after. */
SS_AVX2 __attribute__((always_inline)) static inline int gemm_columns(const ss_product *p, const ss_dtype wt,
                                                                       int j0, int j1) {
    if (j0 >= j1) return 0;
    const int n = p->n, k = p->k, m = p->m;
    const float *x = p->x, *bias = p->bias, *scale = wt == SS_I8 ? ss_i8_scales(p->w, m, k) : NULL;
    float *out = p->out;
    const int kc_max = k < KC ? k : KC, mc_max = n < MC ? ((n + MR - 1) / MR) * MR : MC;
    float *wp = ss_thread_scratch(SS_SCRATCH_GEMM_PACK, ((size_t)NC * kc_max + (size_t)mc_max * kc_max) * sizeof(float));
    if (!wp) return -1;
    float *xp = wp + (size_t)NC * kc_max;
    /* start values: bias (and the residual already in out for SS_EPI_ADD) */
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * m;
        if (p->epi == SS_EPI_ADD) {
            if (bias)
                for (int j = j0; j < j1; j++) o[j] += bias[j];
        } else if (bias) {
            memcpy(o + j0, bias + j0, (size_t)(j1 - j0) * sizeof(float));
        } else {
            memset(o + j0, 0, (size_t)(j1 - j0) * sizeof(float));
        }
    }
    for (int jc = j0; jc < j1; jc += NC) {
        const int nc = j1 - jc < NC ? j1 - jc : NC;
        for (int pc = 0; pc < k; pc += KC) {
            const int kc = k - pc < KC ? k - pc : KC;
            for (int jr = 0; jr < nc; jr += NR) pack_w_panel(wp + (size_t)jr * kc, p, wt, scale, jc + jr, pc, kc);
            for (int ic = 0; ic < n; ic += MC) {
                const int mc = n - ic < MC ? n - ic : MC;
                for (int ir = 0; ir < mc; ir += MR) pack_x_panel(xp + (size_t)ir * kc, x, k, ic + mc, ic + ir, pc, kc);
                for (int jr = 0; jr < nc; jr += NR) {
                    const int nr = nc - jr < NR ? nc - jr : NR;
                    for (int ir = 0; ir < mc; ir += MR) {
                        const int mr = mc - ir < MR ? mc - ir : MR;
                        kernel_6x16(kc, xp + (size_t)ir * kc, wp + (size_t)jr * kc,
                                    out + (size_t)(ic + ir) * m + jc + jr, m, mr, nr);
                    }
                }
            }
        }
    }
    if (p->epi == SS_EPI_GELU || p->epi == SS_EPI_GELU_TANH) {
        for (int i = 0; i < n; i++) {
            float *o = out + (size_t)i * m;
            for (int j = j0; j < j1; j++) o[j] = ss_gelu_one(o[j], p->epi == SS_EPI_GELU_TANH);
        }
    }
    return 0;
}

#define INSTANCE(DT, SUFFIX)                                                             \
    SS_AVX2 static int gemm_avx2_##SUFFIX(const ss_product *p, int r0, int r1) {         \
        return gemm_columns(p, DT, r0, r1);                                              \
    }
INSTANCE(SS_F32, f32)
INSTANCE(SS_F16, f16)
INSTANCE(SS_BF16, bf16)
INSTANCE(SS_I8, i8)
INSTANCE(SS_I4, i4)
#undef INSTANCE

const ss_kernel ss_gemm_avx2[SS_DTYPES] = {
    [SS_F32] = {"avx2-gemm", SS_SIMD_AVX2, NR, gemm_avx2_f32},
    [SS_F16] = {"avx2-gemm", SS_SIMD_AVX2, NR, gemm_avx2_f16},
    [SS_BF16] = {"avx2-gemm", SS_SIMD_AVX2, NR, gemm_avx2_bf16},
    [SS_I8] = {"avx2-gemm", SS_SIMD_AVX2, NR, gemm_avx2_i8},
    [SS_I4] = {"avx2-gemm", SS_SIMD_AVX2, NR, gemm_avx2_i4},
};

#endif /* SS_X86 */
