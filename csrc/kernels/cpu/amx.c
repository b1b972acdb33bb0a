/* Matrix products on AMX for bf16, int8 and int4 weights, every batch size
 * (decode, verification and prefill).
 *
 * C^T = W X^T in tiles: an A tile is 16 weight rows x 32 columns (bf16),
 * a B tile the same 32 columns of 16 tokens in the VNNI layout (column
 * pairs of a token side by side), a C tile 16 rows x 16 tokens of f32 sums.
 * One TDPBF16PS adds the 32 products of each (row, token) to C.
 *
 * Arithmetic of an output (row j, token i), whatever the batch or tiling:
 *  - activations are split as x = hi + lo, both bf16 rounded to nearest
 *    even (lo = x - hi rounded; x - hi is exact in f32); what the split
 *    drops is at most 2^-16 |x|;
 *  - weights as bf16: bf16 as stored; int8 exactly (|q| <= 127 fits 8
 *    significant bits), its row scale multiplying the finished sum; int4 as
 *    its dequantized value (q - z) * s (exact in f32, up to 12 significant
 *    bits) rounded to nearest even bf16: at most 2^-8 relative error per
 *    weight, against the ~8% RMS error of the 4-bit grid itself;
 *  - for each 32-column step in order: C += the hi products, then C += the
 *    lo products (products exact in f32, f32 sums; denormals flush to zero);
 *  - then v = C (int8: v * scale[j]), v + bias[j], and the epilogue.
 * So |error| <= (2^-16 + (2k + 8) u) sum_c |x_c w_c| against the weights
 * as multiplied (u = 2^-24), and an n-token product is bitwise the stack of
 * one-token products: a tile's columns (tokens) and rows never mix.
 *
 * Tiles: TMM0-3 hold C, TMM4-5 the A tiles, TMM6-7 the hi and lo B tiles.
 * Up to 16 tokens, a block is 64 rows (4 C tiles sharing each B load); with
 * more, 32 rows x 32 tokens (2 x 2 C tiles). bf16 A tiles load straight
 * from the row-major matrix (stride k * 2 bytes); int8 and int4 tiles, and
 * partial ones (the last rows or columns), are converted into a per-thread
 * buffer first. The activations are packed into B tiles once per call, for
 * at most GROUP_TOKENS tokens at a time so that they stay in L2. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "formats.h"
#include "vec_weights.h"

#if SS_X86

enum {
    TILE = 16,            /* rows, tokens and 32-bit column pairs of a tile */
    KSTEP = 32,           /* columns per TDPBF16PS */
    TILE_BYTES = 1024,
    GROUP_BYTES = 1 << 20 /* packed activations kept at most this large */
};

/* Stores between two tile instructions must stay in order: GCC's tile
 * intrinsics are asm statements that do not tell it they read memory. */
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

SS_AMX static void configure_tiles(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = TILE;
        cfg.colsb[t] = 64;
    }
    MEMORY_BARRIER();
    _tile_loadconfig(&cfg);
}

/* Packs tokens [t0, t0 + tiles * 16) of x (rows past n are zeros) as hi/lo
 * B tiles: dst[tile][step][hi, lo][16 pairs][16 tokens] of 32-bit pairs. */
SS_AMX static void pack_activations(uint32_t *dst, const float *x, int n, int k, int t0, int tiles) {
    const int steps = (k + KSTEP - 1) / KSTEP;
    for (int tt = 0; tt < tiles; tt++) {
        for (int t = 0; t < TILE; t++) {
            const int token = t0 + tt * TILE + t;
            const float *xt = token < n ? x + (size_t)token * k : x; /* past n: read nothing */
            for (int s = 0; s < steps; s++) {
                uint32_t *hi = dst + ((size_t)(tt * steps + s) * 2) * (TILE_BYTES / 4), *lo = hi + TILE_BYTES / 4;
                uint32_t hv[16], lv[16];
                for (int half = 0; half < 2; half++) {
                    const int c = s * KSTEP + 16 * half;
                    const int valid = token < n ? (k - c < 16 ? (k - c > 0 ? k - c : 0) : 16) : 0;
                    const __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << valid) - 1), xt + c);
                    const __m256bh h = _mm512_cvtneps_pbh(v);
                    const __m256bh l = _mm512_cvtneps_pbh(_mm512_sub_ps(v, _mm512_cvtpbh_ps(h)));
                    _mm256_storeu_si256((__m256i *)(hv + 8 * half), (__m256i)h);
                    _mm256_storeu_si256((__m256i *)(lv + 8 * half), (__m256i)l);
                }
                for (int pair = 0; pair < TILE; pair++) {
                    hi[pair * TILE + t] = hv[pair];
                    lo[pair * TILE + t] = lv[pair];
                }
            }
        }
    }
}

/* 32 weights of a row from column c as bf16 (columns >= valid are zeros). */
SS_AMX __attribute__((always_inline)) static inline __m512i weights_bf16(const ss_dtype wt, const char *row,
                                                                          ss_i4_row g, int c, int valid) {
    const __mmask32 mask = valid >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << valid) - 1);
    if (wt == SS_BF16) return _mm512_maskz_loadu_epi16(mask, (const uint16_t *)row + c);
    __m512 lo, hi;
    if (wt == SS_I8) {
        const __m256i q = _mm256_maskz_loadu_epi8(mask, (const int8_t *)row + c);
        lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)));
        hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)));
    } else { /* int4: the chunk is padded with quantized zeros */
        const ss_group16 grp = ss_group16_at(wt, g, c);
        lo = ss_weights16(wt, row, c, 0, grp);
        hi = ss_weights16(wt, row, c, 1, grp);
    }
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* Where the A tile of rows [j, j + 16) at column c comes from: straight
 * from the matrix (bf16, whole tile) or converted into buf. Returns the
 * address; *stride receives the row stride in bytes. */
SS_AMX __attribute__((always_inline)) static inline const void *a_tile(const ss_product *p, const ss_dtype wt,
                                                                        int j, int c, uint16_t *buf,
                                                                        long *stride) {
    const int k = p->k, rows = p->m - j < TILE ? p->m - j : TILE, cols = k - c < KSTEP ? k - c : KSTEP;
    const size_t row_bytes = ss_row_bytes(wt, k);
    if (wt == SS_BF16 && rows == TILE && cols == KSTEP) {
        *stride = (long)row_bytes;
        return (const uint16_t *)p->w + (size_t)j * k + c;
    }
    for (int r = 0; r < TILE; r++) {
        __m512i v = _mm512_setzero_si512();
        if (r < rows) {
            const ss_i4_row g = wt == SS_I4 ? ss_i4_row_at(p->w, p->m, k, j + r) : (ss_i4_row){NULL, NULL};
            v = weights_bf16(wt, (const char *)p->w + (size_t)(j + r) * row_bytes, g, c, cols);
        }
        _mm512_store_si512((__m512i *)(buf + r * KSTEP), v);
    }
    *stride = 64;
    MEMORY_BARRIER();
    return buf;
}

/* The sums of a C tile (rows j.., tokens t..) into the outputs, rows below
 * jend only (the rest belong to another caller or are past m). */
SS_AMX static void finish(const ss_product *p, const float *c, int j, int jend, int t) {
    const float *scale = p->fmt->dtype == SS_I8 ? ss_i8_scales(p->w, p->m, p->k) : NULL;
    for (int r = 0; r < TILE && j + r < jend; r++) {
        for (int i = 0; i < TILE && t + i < p->n; i++) {
            float v = c[r * TILE + i];
            if (scale) v *= scale[j + r];
            if (p->bias) v += p->bias[j + r];
            ss_emit(p->out + (size_t)(t + i) * p->m + j + r, v, p->epi);
        }
    }
}

#define DP(C, A)                         \
    do {                                 \
        _tile_dpbf16ps(C, A, 6);         \
        _tile_dpbf16ps(C, A, 7);         \
    } while (0)

/* 64 rows from j x the 16 tokens (from t) of packed tile b; rows from jend
 * on are not written. */
SS_AMX __attribute__((always_inline)) static inline void block_64x16(const ss_product *p, const ss_dtype wt, int j,
                                                                      int jend, const uint32_t *b, uint16_t *abuf,
                                                                      float *cbuf, int t) {
    const int steps = (p->k + KSTEP - 1) / KSTEP;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int s = 0; s < steps; s++) {
        const uint32_t *bs = b + (size_t)s * 2 * (TILE_BYTES / 4);
        long st;
        _tile_loadd(6, bs, 64);
        _tile_loadd(7, bs + TILE_BYTES / 4, 64);
        const void *a = a_tile(p, wt, j, s * KSTEP, abuf, &st);
        _tile_loadd(4, a, st);
        DP(0, 4);
        a = a_tile(p, wt, j + 16, s * KSTEP, abuf + TILE * KSTEP, &st);
        _tile_loadd(5, a, st);
        DP(1, 5);
        a = a_tile(p, wt, j + 32, s * KSTEP, abuf + 2 * TILE * KSTEP, &st);
        _tile_loadd(4, a, st);
        DP(2, 4);
        a = a_tile(p, wt, j + 48, s * KSTEP, abuf + 3 * TILE * KSTEP, &st);
        _tile_loadd(5, a, st);
        DP(3, 5);
    }
    _tile_stored(0, cbuf, 64);
    _tile_stored(1, cbuf + 256, 64);
    _tile_stored(2, cbuf + 512, 64);
    _tile_stored(3, cbuf + 768, 64);
    for (int rt = 0; rt < 4; rt++) finish(p, cbuf + rt * 256, j + 16 * rt, jend, t);
}

/* 32 rows from j x the 32 tokens (from t) of packed tiles b (two, one after
 * the other); rows from jend on are not written. */
SS_AMX __attribute__((always_inline)) static inline void block_32x32(const ss_product *p, const ss_dtype wt, int j,
                                                                      int jend, const uint32_t *b, uint16_t *abuf,
                                                                      float *cbuf, int t) {
    const int steps = (p->k + KSTEP - 1) / KSTEP;
    const size_t next_tile = (size_t)steps * 2 * (TILE_BYTES / 4);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int s = 0; s < steps; s++) {
        long st0, st1;
        const void *a0 = a_tile(p, wt, j, s * KSTEP, abuf, &st0);
        const void *a1 = a_tile(p, wt, j + 16, s * KSTEP, abuf + TILE * KSTEP, &st1);
        _tile_loadd(4, a0, st0);
        _tile_loadd(5, a1, st1);
        const uint32_t *b0 = b + (size_t)s * 2 * (TILE_BYTES / 4), *b1 = b0 + next_tile;
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b0 + TILE_BYTES / 4, 64);
        DP(0, 4);
        DP(2, 5);
        _tile_loadd(6, b1, 64);
        _tile_loadd(7, b1 + TILE_BYTES / 4, 64);
        DP(1, 4);
        DP(3, 5);
    }
    _tile_stored(0, cbuf, 64);
    _tile_stored(1, cbuf + 256, 64);
    _tile_stored(2, cbuf + 512, 64);
    _tile_stored(3, cbuf + 768, 64);
    finish(p, cbuf, j, jend, t);
    finish(p, cbuf + 256, j, jend, t + TILE);
    finish(p, cbuf + 512, j + TILE, jend, t);
    finish(p, cbuf + 768, j + TILE, jend, t + TILE);
}

/* Rows [r0, r1) of every token. Beyond 16 tokens, token tiles go in pairs
 * (a missing last one packed as zeros and not written). */
SS_AMX __attribute__((always_inline)) static inline int amx_rows(const ss_product *p, const ss_dtype wt, int r0,
                                                                  int r1) {
    const int k = p->k, steps = (k + KSTEP - 1) / KSTEP;
    const size_t tile_words = (size_t)steps * 2 * (TILE_BYTES / 4); /* hi + lo B tiles of 16 tokens */
    const int token_tiles = (p->n + TILE - 1) / TILE, paired = token_tiles > 1 ? (token_tiles + 1) & ~1 : 1;
    int group = (int)(GROUP_BYTES / (tile_words * 4)) & ~1;
    if (group < 2) group = 2;
    if (group > paired) group = paired;
    uint32_t *b = ss_thread_scratch(SS_SCRATCH_PACK_X, (size_t)group * tile_words * 4);
    char *work = ss_thread_scratch(SS_SCRATCH_TILES, 8 * TILE_BYTES);
    if (!b || !work) return -1;
    uint16_t *abuf = (uint16_t *)work;
    float *cbuf = (float *)(work + 4 * TILE_BYTES);
    configure_tiles();
    for (int g0 = 0; g0 < paired; g0 += group) {
        const int tiles = paired - g0 < group ? paired - g0 : group;
        pack_activations(b, p->x, p->n, k, g0 * TILE, tiles);
        MEMORY_BARRIER();
        if (tiles == 1) {
            for (int j = r0; j < r1; j += 64) block_64x16(p, wt, j, r1, b, abuf, cbuf, g0 * TILE);
            continue;
        }
        for (int j = r0; j < r1; j += 32)
            for (int tt = 0; tt < tiles; tt += 2)
                block_32x32(p, wt, j, r1, b + (size_t)tt * tile_words, abuf, cbuf, (g0 + tt) * TILE);
    }
    _tile_release();
    return 0;
}

#define INSTANCE(DT, SUFFIX)                                                    \
    SS_AMX static int amx_##SUFFIX(const ss_product *p, int r0, int r1) {       \
        return amx_rows(p, DT, r0, r1);                                         \
    }
INSTANCE(SS_BF16, bf16)
INSTANCE(SS_I8, i8)
INSTANCE(SS_I4, i4)
#undef INSTANCE

const ss_kernel ss_amx_kernel[SS_DTYPES] = {
    [SS_BF16] = {"amx", SS_SIMD_AMX, 32, amx_bf16},
    [SS_I8] = {"amx", SS_SIMD_AMX, 32, amx_i8},
    [SS_I4] = {"amx", SS_SIMD_AMX, 32, amx_i4},
};

#endif /* SS_X86 */
