/* int8 weights on AMX with exact integer products (TDPBSSD), every batch
 * size. Converting int8 weights to bf16 tiles, as amx.c does for int4, held
 * int8 to 15 GB/s (the conversion, not the memory, was the limit); here the
 * weights load into tiles as stored, and the activations are the ones
 * converted, once per call.
 *
 * Arithmetic of an output (row j, token i):
 *  - token i's activations in fixed point: v = round(x * 2^F) to nearest
 *    even, F = 20 - e where max_c |x_i[c]| = m 2^e, m in [0.5, 1); so
 *    |v| <= 2^20 and |x - v 2^-F| <= 2^-20 max_c |x_i[c]| (the only
 *    rounding of the activations);
 *  - v as three balanced base-128 digits, v = d1 2^14 + d2 2^7 + d3 with
 *    |d| <= 65, each an int8 B tile; TDPBSSD sums the products d q exactly
 *    in int32 (no overflow below k = 2^31 / (65 * 127) ~ 260,000 columns;
 *    larger k runs the portable kernel);
 *  - S = S1 2^14 + S2 2^7 + S3, exact in double (|S| < 2^53), times 2^-F
 *    (exact) times the row scale, rounded to double and then once to f32;
 *    then + bias[j] and the epilogue.
 * So v_out is sum_c q_c s v_c 2^-F rounded once (to double, then f32):
 * |error| <= 2^-20 max_c |x_i[c]| sum_c |q_c s| + 2u |v_out| + the bias add.
 * Every output depends on its own token and row alone: an n-token product
 * is bitwise the stack of one-token products, whatever the tiling.
 *
 * Tiles: TMM0-2 the three digits' int32 sums (16 rows x up to 16 tokens),
 * TMM3 and TMM7 the weights of alternate steps (16 rows x 64 int8,
 * straight from the matrix when its rows are whole cache lines, else copied
 * with zero padding), TMM4-6 the three digits' B tiles (16 column quads x
 * the tokens). */
#include <math.h>
#include <string.h>

#include "common.h"
#include "formats.h"

#if SS_X86

enum {
    TILE = 16,             /* rows and tokens of a tile */
    KSTEP = 64,            /* columns per TDPBSSD */
    DIGITS = 3,
    GROUP_BYTES = 1 << 20, /* packed activations kept at most this large */
    MAX_K = 260000,        /* int32 sums cannot overflow below this */
    /* Each step reads a line of 16 rows; the hardware prefetcher does not
     * follow 16 such streams. Fetching the lines 4 steps ahead: 17.5 -> 20.3
     * GB/s at n = 1 (1, 2, 8, 16, 32 steps: 17.9, 18.5, 19.1, 17.0, 16.0). */
    PREFETCH_STEPS = 4
};

#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory") /* see amx.c */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

SS_AMX static void configure_tiles(int width) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = TILE;
        cfg.colsb[t] = (uint16_t)(t == 3 || t == 7 ? 64 : 4 * width);
    }
    MEMORY_BARRIER();
    _tile_loadconfig(&cfg);
}

/* F of each token [t0, t0 + count) (tokens past n: 0); 1 in bad[] when a
 * token has a non-finite activation (its outputs are NaN). */
SS_AMX static void token_exponents(const float *x, int n, int k, int t0, int count, int *F, int *bad) {
    for (int t = 0; t < count; t++) {
        F[t] = 0;
        bad[t] = 0;
        if (t0 + t >= n) continue;
        const float *xt = x + (size_t)(t0 + t) * k;
        const __m512 inf = _mm512_set1_ps(INFINITY);
        __m512 m = _mm512_setzero_ps();
        __mmask16 nonfinite = 0;
        for (int c = 0; c < k; c += 16) {
            const __mmask16 valid = (__mmask16)(k - c >= 16 ? 0xffff : (1u << (k - c)) - 1);
            const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(valid, xt + c));
            m = _mm512_max_ps(m, a);
            nonfinite |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ); /* inf or NaN */
        }
        const float max = _mm512_reduce_max_ps(m);
        bad[t] = nonfinite != 0;
        if (max > 0.0f && !bad[t]) {
            int e;
            frexpf(max, &e);
            F[t] = 20 - e;
        }
    }
}

/* The digits of 16 activations (times 2^F) as int8 vectors. */
SS_AMX static inline void digits16(const float *x, int valid, int F, __m128i d[DIGITS]) {
    const __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)((1u << valid) - 1), x);
    const __m512i v = _mm512_cvtps_epi32(_mm512_scalef_ps(v0, _mm512_set1_ps((float)F)));
    const __m512i half = _mm512_set1_epi32(64), low = _mm512_set1_epi32(127);
    const __m512i d3 = _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(v, half), low), half);
    const __m512i r = _mm512_srai_epi32(_mm512_sub_epi32(v, d3), 7);
    const __m512i d2 = _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(r, half), low), half);
    const __m512i d1 = _mm512_srai_epi32(_mm512_sub_epi32(r, d2), 7);
    d[0] = _mm512_cvtepi32_epi8(d1);
    d[1] = _mm512_cvtepi32_epi8(d2);
    d[2] = _mm512_cvtepi32_epi8(d3);
}

/* Tokens [t0, t0 + tiles * width) as digit B tiles:
 * dst[tile][step][digit][16 quads][width tokens] of 4 int8. */
SS_AMX static void pack_digits(uint32_t *dst, const float *x, int n, int k, int t0, int tiles, int width,
                               const int *F) {
    const int steps = (k + KSTEP - 1) / KSTEP;
    const size_t tile_words = (size_t)TILE * width;
    for (int tt = 0; tt < tiles; tt++) {
        for (int t = 0; t < width; t++) {
            const int token = t0 + tt * width + t;
            const float *xt = token < n ? x + (size_t)token * k : x; /* past n: read nothing */
            for (int s = 0; s < steps; s++) {
                uint32_t *b = dst + (size_t)(tt * steps + s) * DIGITS * tile_words;
                uint32_t q[DIGITS][16];
                for (int part = 0; part < 4; part++) {
                    const int c = s * KSTEP + 16 * part;
                    const int valid = token < n ? (k - c < 16 ? (k - c > 0 ? k - c : 0) : 16) : 0;
                    __m128i d[DIGITS];
                    digits16(xt + c, valid, F[tt * width + t], d);
                    for (int g = 0; g < DIGITS; g++) _mm_storeu_si128((__m128i *)(q[g] + 4 * part), d[g]);
                }
                for (int g = 0; g < DIGITS; g++)
                    for (int quad = 0; quad < TILE; quad++) b[g * tile_words + quad * width + t] = q[g][quad];
            }
        }
    }
}

/* The weights of rows [j, j + 16) at columns [c, c + 64): straight from
 * the matrix, or copied into buf with zeros past m and k. Returns where the
 * tile is; *stride receives its row stride. */
SS_AMX __attribute__((always_inline)) static inline const int8_t *weights_at(const ss_product *p, int j, int c,
                                                                              int direct, int8_t *buf, long *stride) {
    const int8_t *w = (const int8_t *)p->w;
    if (direct) {
        *stride = p->k;
        return w + (size_t)j * p->k + c;
    }
    const int cols = p->k - c < KSTEP ? p->k - c : KSTEP;
    const __mmask64 mask = cols >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << cols) - 1);
    for (int r = 0; r < TILE; r++) {
        const __m512i v = j + r < p->m ? _mm512_maskz_loadu_epi8(mask, w + (size_t)(j + r) * p->k + c)
                                       : _mm512_setzero_si512();
        _mm512_store_si512((__m512i *)(buf + r * KSTEP), v);
    }
    MEMORY_BARRIER();
    *stride = 64;
    return buf;
}

/* One step: the weights into tile A (3 or 7: alternating, a step's loads
 * need not wait for the previous step's products to release the register),
 * the digit tiles into TMM4-6, the three products. */
#define STEP(A, s)                                                                                   \
    do {                                                                                             \
        const uint32_t *bs = b + (size_t)(s) * DIGITS * tile_words;                                  \
        long stride;                                                                                 \
        const int8_t *a = weights_at(p, j, (s) * KSTEP, direct, abuf + ((s) & 1) * TILE * KSTEP, &stride); \
        if (direct && ((s) + PREFETCH_STEPS) * KSTEP < p->k)                                         \
            for (int r = 0; r < TILE; r++)                                                           \
                _mm_prefetch((const char *)a + r * stride + PREFETCH_STEPS * KSTEP, _MM_HINT_T0);    \
        _tile_loadd(A, a, stride);                                                                   \
        _tile_loadd(4, bs, 4 * width);                                                               \
        _tile_loadd(5, bs + tile_words, 4 * width);                                                  \
        _tile_loadd(6, bs + 2 * tile_words, 4 * width);                                              \
        _tile_dpbssd(0, A, 4);                                                                       \
        _tile_dpbssd(1, A, 5);                                                                       \
        _tile_dpbssd(2, A, 6);                                                                       \
    } while (0)

/* Rows [j, min(j + 16, jend)) x `width` tokens from t. */
SS_AMX __attribute__((always_inline)) static inline void block(const ss_product *p, int j, int jend, int direct,
                                                                const uint32_t *b, int width, int t, const int *F,
                                                                const int *bad, int8_t *abuf, int32_t *cbuf) {
    const int steps = (p->k + KSTEP - 1) / KSTEP;
    const size_t tile_words = (size_t)TILE * width;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    int s = 0;
    for (; s + 2 <= steps; s += 2) {
        STEP(3, s);
        STEP(7, s + 1);
    }
    if (s < steps) STEP(3, s);
    _tile_stored(0, cbuf, 4 * width);
    _tile_stored(1, cbuf + tile_words, 4 * width);
    _tile_stored(2, cbuf + 2 * tile_words, 4 * width);
    const float *scale = ss_i8_scales(p->w, p->m, p->k);
    for (int r = 0; r < TILE && j + r < jend; r++) {
        for (int i = 0; i < width && t + i < p->n; i++) {
            const size_t at = (size_t)r * width + i;
            const double S = (double)cbuf[at] * 16384.0 + (double)cbuf[tile_words + at] * 128.0 +
                             (double)cbuf[2 * tile_words + at];
            float v = bad[i] ? NAN : (float)(ldexp(S, -F[i]) * (double)scale[j + r]);
            if (p->bias) v += p->bias[j + r];
            ss_emit(p->out + (size_t)(t + i) * p->m + j + r, v, p->epi);
        }
    }
}

SS_AMX static int amx_int8(const ss_product *p, int r0, int r1) {
    const int k = p->k, steps = (k + KSTEP - 1) / KSTEP;
    if (k >= MAX_K) return -1;
    const int width = p->n < TILE ? p->n : TILE, tiles = (p->n + TILE - 1) / TILE;
    const size_t tile_words = (size_t)steps * DIGITS * TILE * width; /* the B tiles of one token tile */
    int group = (int)(GROUP_BYTES / (tile_words * 4));
    if (group < 1) group = 1;
    if (group > tiles) group = tiles;
    uint32_t *b = ss_thread_scratch(SS_SCRATCH_PACK_X, (size_t)group * tile_words * 4);
    char *work = ss_thread_scratch(SS_SCRATCH_TILES, 2048 + DIGITS * 1024 + (size_t)group * TILE * 2 * sizeof(int));
    if (!b || !work) return -1;
    int8_t *abuf = (int8_t *)work; /* two steps' weight tiles */
    int32_t *cbuf = (int32_t *)(work + 2048);
    int *F = (int *)(work + 2048 + DIGITS * 1024), *bad = F + group * TILE;
    const int direct = k % KSTEP == 0 && ((uintptr_t)p->w | (size_t)k) % 64 == 0;
    configure_tiles(width);
    for (int g0 = 0; g0 < tiles; g0 += group) {
        const int count = tiles - g0 < group ? tiles - g0 : group;
        token_exponents(p->x, p->n, k, g0 * TILE, count * width, F, bad);
        pack_digits(b, p->x, p->n, k, g0 * TILE, count, width, F);
        MEMORY_BARRIER();
        for (int j = r0; j < r1; j += TILE)
            for (int tt = 0; tt < count; tt++)
                block(p, j, r1, direct && p->m - j >= TILE, b + (size_t)tt * tile_words, width, (g0 + tt) * TILE,
                      F + tt * width, bad + tt * width, abuf, cbuf);
    }
    _tile_release();
    return 0;
}

const ss_kernel ss_amx_int8_kernel = {"amx", SS_SIMD_AMX, TILE, amx_int8};

#endif /* SS_X86 */
