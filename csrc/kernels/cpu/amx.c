/* Matrix products on AMX for bf16 and int4 weights, every batch size
 * (decode, verification and prefill); int8 has its own, integer, kernel
 * (amx_int8.c).
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
 *  - weights as bf16: bf16 as stored; int4 as its dequantized value
 *    (q - z) * s (exact in f32, up to 12 significant bits) rounded to
 *    nearest even bf16: at most 2^-8 relative error per weight, against the
 *    ~8% RMS error of the 4-bit grid itself;
 *  - for each 32-column step in order: C += the hi products, then C += the
 *    lo products (products exact in f32, f32 sums; denormals flush to zero);
 *  - then v = C + bias[j], and the epilogue.
 * So |error| <= (2^-16 + (2k + 8) u) sum_c |x_c w_c| against the weights
 * as multiplied (u = 2^-24), and an n-token product is bitwise the stack of
 * one-token products: a tile's columns (tokens) and rows never mix.
 *
 * Blocks: up to 16 tokens, 32 rows (A tiles in TMM4-5, C in TMM0-1) x one
 * token tile as wide as the batch (hi and lo B tiles in TMM6-7); beyond, 16
 * rows (TMM4) x two 16-token tiles (C in TMM0-1, B in TMM3, 5, 6, 7).
 * bf16 A tiles load straight from the row-major matrix (stride k * 2 bytes)
 * when its rows are whole cache lines; int4 and misaligned bf16 tiles are
 * converted to bf16, a cache line of each row at a time, into a small
 * per-thread buffer, or, with more than 16 tokens (a block's tiles loaded
 * once per 32 tokens), once per block into a buffer that stays in L2. The
 * activations are packed into B tiles once per call, GROUP_BYTES at a time
 * so that they stay in L2. */
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

/* A tiles 32 bf16 wide; B and C tiles `width` tokens wide (4 bytes each),
 * so that a batch of fewer than 16 tokens loads and multiplies no padding. */
SS_AMX static void configure_tiles(int width) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = TILE;
        cfg.colsb[t] = (uint16_t)(t == 4 || t == 5 ? 64 : 4 * width);
    }
    MEMORY_BARRIER();
    _tile_loadconfig(&cfg);
}

/* Packs tokens [t0, t0 + tiles * width) of x (rows past n are zeros) as
 * hi/lo B tiles: dst[tile][step][hi, lo][16 column pairs][width tokens]. */
SS_AMX static void pack_activations(uint32_t *dst, const float *x, int n, int k, int t0, int tiles, int width) {
    const int steps = (k + KSTEP - 1) / KSTEP;
    const size_t tile_words = (size_t)TILE * width;
    for (int tt = 0; tt < tiles; tt++) {
        for (int t = 0; t < width; t++) {
            const int token = t0 + tt * width + t;
            const float *xt = token < n ? x + (size_t)token * k : x; /* past n: read nothing */
            for (int s = 0; s < steps; s++) {
                uint32_t *hi = dst + (size_t)(tt * steps + s) * 2 * tile_words, *lo = hi + tile_words;
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
                    hi[pair * width + t] = hv[pair];
                    lo[pair * width + t] = lv[pair];
                }
            }
        }
    }
}

/* 32 weights of a bf16 or int4 row from column c as bf16 (columns >= valid
 * are zeros). */
SS_AMX __attribute__((always_inline)) static inline __m512i weights_bf16(const ss_dtype wt, const char *row,
                                                                          ss_i4_row g, int c, int valid) {
    const __mmask32 mask = valid >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << valid) - 1);
    if (wt == SS_BF16) return _mm512_maskz_loadu_epi16(mask, (const uint16_t *)row + c);
    /* int4: the chunk is padded with quantized zeros */
    const ss_group16 grp = ss_group16_at(wt, g, c);
    return (__m512i)_mm512_cvtne2ps_pbh(ss_weights16(wt, row, c, 1, grp), ss_weights16(wt, row, c, 0, grp));
}

/* How a block's A tiles (32 rows) are found, step after step. */
typedef enum {
    A_DIRECT,    /* straight from a bf16 matrix whose rows are whole cache lines */
    A_CONVERTED, /* converted to bf16 a cache line of each row at a time, into
                    a small buffer in L1 */
    A_BLOCK      /* converted once per block into a buffer in L2, for blocks
                    that several token passes load again */
} a_mode;

/* Steps whose weights fill one cache line of a row: converting them
 * together reads each line once (the 32 rows of a block, a multiple of 2 or
 * 4 KB apart, share L1 sets and evict each other between steps). */
static inline int line_steps(ss_dtype wt) { return wt == SS_I4 ? 4 : 1; }

/* Steps [s0, s0 + count) of rows [j, j + 32) as bf16 tiles at dst: step s's
 * two tiles at dst + (s - s0) * 1024 values (rows past m and columns past k
 * are zeros). */
SS_AMX __attribute__((always_inline)) static inline void convert_steps(const ss_product *p, const ss_dtype wt, int j,
                                                                        int s0, int count, uint16_t *dst) {
    const int k = p->k;
    const size_t row_bytes = ss_row_bytes(wt, k);
    for (int r = 0; r < 2 * TILE; r++) {
        const int row = j + r;
        const char *w = (const char *)p->w + (size_t)row * row_bytes;
        const ss_i4_row g = wt == SS_I4 && row < p->m ? ss_i4_row_at(p->w, p->m, k, row) : (ss_i4_row){NULL, NULL};
        /* the row's next line: the hardware prefetcher loses 32 rows read
         * a line at a time (int4: 4.8 -> 7.3 GB/s with it) */
        if (row < p->m && (s0 + count) * KSTEP < k) _mm_prefetch(w + ss_row_bytes(wt, (s0 + count) * KSTEP), _MM_HINT_T0);
        for (int i = 0; i < count; i++) {
            const int c = (s0 + i) * KSTEP, cols = k - c < KSTEP ? k - c : KSTEP;
            const __m512i v = row < p->m && cols > 0 ? weights_bf16(wt, w, g, c, cols) : _mm512_setzero_si512();
            _mm512_store_si512((__m512i *)(dst + ((size_t)i * 2 * TILE + r) * KSTEP), v);
        }
    }
    MEMORY_BARRIER();
}

/* The A tiles of step s: rows j.. into TMM4 and, when `both`, rows j + 16..
 * into TMM5. buf: two lines' worth of steps (A_CONVERTED, alternating so
 * that the conversion of the next line need not wait for the loads of the
 * last), or the whole block's (A_BLOCK, filled by convert_steps beforehand;
 * rows j.. are the block's first 16 or, at buf + 512, its last). */
SS_AMX __attribute__((always_inline)) static inline void load_a(const ss_product *p, const ss_dtype wt, int j, int s,
                                                                 a_mode mode, uint16_t *buf, int both) {
    if (mode == A_DIRECT) {
        const long stride = (long)ss_row_bytes(wt, p->k);
        const char *a = (const char *)p->w + (size_t)j * stride + (size_t)s * 64;
        _tile_loadd(4, a, stride);
        if (both) _tile_loadd(5, a + TILE * stride, stride);
        return;
    }
    const int line = line_steps(wt);
    uint16_t *a = buf + (size_t)s * 2 * TILE * KSTEP;
    if (mode == A_CONVERTED) {
        uint16_t *half = buf + (size_t)((s / line) & 1) * line * 2 * TILE * KSTEP;
        if (s % line == 0) convert_steps(p, wt, j, s, line, half);
        a = half + (size_t)(s % line) * 2 * TILE * KSTEP;
    }
    _tile_loadd(4, a, 64);
    if (both) _tile_loadd(5, a + TILE * KSTEP, 64);
}

/* The sums of a C tile (rows j.., `width` tokens from t) into the outputs,
 * rows below jend only (the rest belong to another caller or are past m). */
SS_AMX static void finish(const ss_product *p, const float *c, int width, int j, int jend, int t) {
    for (int r = 0; r < TILE && j + r < jend; r++) {
        for (int i = 0; i < width && t + i < p->n; i++) {
            float v = c[r * width + i];
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

/* 32 rows from j x one packed tile b of `width` tokens from t; rows from
 * jend on are not written. */
SS_AMX __attribute__((always_inline)) static inline void block_32xw(const ss_product *p, const ss_dtype wt, int j,
                                                                     int jend, a_mode mode, uint16_t *abuf,
                                                                     const uint32_t *b, int width, float *cbuf,
                                                                     int t) {
    const int steps = (p->k + KSTEP - 1) / KSTEP;
    const size_t tile_words = (size_t)TILE * width;
    _tile_zero(0);
    _tile_zero(1);
    for (int s = 0; s < steps; s++) {
        const uint32_t *bs = b + (size_t)s * 2 * tile_words;
        load_a(p, wt, j, s, mode, abuf, 1);
        _tile_loadd(6, bs, 4 * width);
        _tile_loadd(7, bs + tile_words, 4 * width);
        DP(0, 4);
        DP(1, 5);
    }
    _tile_stored(0, cbuf, 4 * width);
    _tile_stored(1, cbuf + tile_words, 4 * width);
    finish(p, cbuf, width, j, jend, t);
    finish(p, cbuf + tile_words, width, j + TILE, jend, t);
}

/* 16 rows from j x the 32 tokens from t of two packed 16-token tiles b
 * (one after the other), the four B tiles in TMM3, TMM5, TMM6 and TMM7: a
 * 32 x 32 block would have to reload a B tile register within a step, and
 * wait for the products that read it. Rows from jend on are not written. */
SS_AMX __attribute__((always_inline)) static inline void block_16x32(const ss_product *p, const ss_dtype wt, int j,
                                                                      int jend, a_mode mode, uint16_t *abuf,
                                                                      const uint32_t *b, float *cbuf, int t) {
    const int steps = (p->k + KSTEP - 1) / KSTEP;
    const size_t tile_words = TILE * TILE, next_tile = (size_t)steps * 2 * tile_words;
    _tile_zero(0);
    _tile_zero(1);
    for (int s = 0; s < steps; s++) {
        load_a(p, wt, j, s, mode, abuf, 0);
        const uint32_t *b0 = b + (size_t)s * 2 * tile_words, *b1 = b0 + next_tile;
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b0 + tile_words, 64);
        _tile_loadd(3, b1, 64);
        _tile_loadd(5, b1 + tile_words, 64);
        DP(0, 4);
        _tile_dpbf16ps(1, 4, 3);
        _tile_dpbf16ps(1, 4, 5);
    }
    _tile_stored(0, cbuf, 64);
    _tile_stored(1, cbuf + tile_words, 64);
    finish(p, cbuf, TILE, j, jend, t);
    finish(p, cbuf + tile_words, TILE, j, jend, t + TILE);
}

/* Rows [r0, r1) of every token. Up to 16 tokens: one tile as wide as the
 * batch. Beyond: 16-token tiles in pairs (a missing last one packed as zeros
 * and not written), packed GROUP_BYTES at a time. */
SS_AMX __attribute__((always_inline)) static inline int amx_rows(const ss_product *p, const ss_dtype wt, int r0,
                                                                  int r1) {
    const int k = p->k, steps = (k + KSTEP - 1) / KSTEP;
    const int width = p->n < TILE ? p->n : TILE, token_tiles = (p->n + TILE - 1) / TILE;
    const int paired = token_tiles > 1 ? (token_tiles + 1) & ~1 : 1;
    const size_t tile_words = (size_t)steps * 2 * TILE * width; /* hi + lo B tiles of one token tile */
    int group = (int)(GROUP_BYTES / (tile_words * 4)) & ~1;
    if (group < 2) group = 2;
    if (group > paired) group = paired;
    const a_mode mode = wt == SS_BF16 && k % KSTEP == 0 && ((uintptr_t)p->w | ss_row_bytes(wt, k)) % 64 == 0
                            ? A_DIRECT
                        : token_tiles > 1 ? A_BLOCK
                                          : A_CONVERTED;
    /* a block of fewer than 32 rows is converted: room for that too */
    const a_mode partial = token_tiles > 1 ? A_BLOCK : A_CONVERTED;
    const size_t a_bytes = (size_t)(partial == A_BLOCK ? steps : 2 * line_steps(wt)) * 2 * TILE_BYTES;
    uint32_t *b = ss_thread_scratch(SS_SCRATCH_PACK_X, (size_t)group * tile_words * 4);
    char *work = ss_thread_scratch(SS_SCRATCH_TILES, 4 * TILE_BYTES + a_bytes);
    if (!b || !work) return -1;
    float *cbuf = (float *)work;
    uint16_t *abuf = (uint16_t *)(work + 4 * TILE_BYTES);
    configure_tiles(width);
    for (int g0 = 0; g0 < paired; g0 += group) {
        const int tiles = paired - g0 < group ? paired - g0 : group;
        pack_activations(b, p->x, p->n, k, g0 * TILE, tiles, width);
        MEMORY_BARRIER();
        for (int j = r0; j < r1; j += 2 * TILE) {
            const a_mode m = mode == A_DIRECT && p->m - j < 2 * TILE ? partial : mode;
            if (m == A_BLOCK) convert_steps(p, wt, j, 0, steps, abuf);
            if (tiles == 1) block_32xw(p, wt, j, r1, m, abuf, b, width, cbuf, g0 * TILE);
            for (int tt = 0; tt + 1 < tiles; tt += 2)
                for (int half = 0; half < 2; half++)
                    block_16x32(p, wt, j + half * TILE, r1, m, abuf + half * TILE * KSTEP,
                                b + (size_t)tt * tile_words, cbuf, (g0 + tt) * TILE);
        }
    }
    _tile_release();
    return 0;
}

#define INSTANCE(DT, SUFFIX)                                                    \
    SS_AMX static int amx_##SUFFIX(const ss_product *p, int r0, int r1) {       \
        return amx_rows(p, DT, r0, r1);                                         \
    }
INSTANCE(SS_BF16, bf16)
INSTANCE(SS_I4, i4)
#undef INSTANCE

const ss_kernel ss_amx_kernel[SS_DTYPES] = {
    [SS_BF16] = {"amx", SS_SIMD_AMX, 32, amx_bf16},
    [SS_I4] = {"amx", SS_SIMD_AMX, 32, amx_i4},
};

#endif /* SS_X86 */
