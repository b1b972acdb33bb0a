/* The register-tiled GEMV, written once for any vector width. gemv.c
 * includes this file once per width, after defining:
 *
 *   VEC, VW          the vector type and its f32 lanes (__m256, 8; __m512, 16)
 *   TARGET           the kernels' target attribute (SS_AVX2, SS_AVX512)
 *   GROUP, group_at  the int4 group of a chunk (ss_group8/16, ss_group8/16_at)
 *   weights          VW stored weights as f32 (ss_weights8/16)
 *   vzero, vload, vfma, vsum   zero, load f32, a*b+c fused, sum of the lanes
 *   R_FEW, T_FEW     tile for n <= T_FEW tokens: R_FEW rows x T_FEW tokens
 *   R_MANY, T_MANY   tile for more tokens
 *   NAME(x)          the name of this width's instance of x
 *
 * The arithmetic of every output (row j, token i), whatever the tile:
 *
 *   acc = 0 (VW lanes); for each whole chunk of 32 columns, for each of its
 *   32 / VW vectors: acc = fma(w, x, acc)  (lane l of a vector: column
 *   c + l); sum = vsum(acc); tail = 0; for each column past the last whole
 *   chunk: tail = tail + w * x (separate multiply and add); v = sum + tail;
 *   int8: v = v * scale[j]; v = v + bias[j]; then the epilogue.
 *
 * Nothing in it depends on n, on the other rows or tokens of the tile, or on
 * the thread, so an n-token product is bitwise the stack of n one-token
 * products, and any row split gives the same results. */

#define R_MAX (R_FEW > R_MANY ? R_FEW : R_MANY)

/* Rows rows[0..R) x tokens [t0, t0 + T): each weight vector is loaded and
 * converted once and multiplied into T accumulators held in registers.
 * `prefetch`: also fetch the same columns of each row's next row (the next
 * step of its stream) into the cache. */
TARGET __attribute__((always_inline)) static inline void NAME(tile)(const ss_product *p, const ss_dtype wt,
                                                                     const int *rows, const int R, const int t0,
                                                                     const int T, const int prefetch) {
    const int k = p->k, whole = k & ~(SS_I4_CHUNK - 1);
    const size_t row_bytes = ss_row_bytes(wt, k), chunk_bytes = ss_row_bytes(wt, SS_I4_CHUNK);
    const char *row[R_MAX];
    ss_i4_row grp[R_MAX];
    VEC acc[R_MAX][6]; /* 6: the largest T all_tokens passes */
    for (int r = 0; r < R; r++) {
        row[r] = (const char *)p->w + (size_t)rows[r] * row_bytes;
        grp[r] = wt == SS_I4 ? ss_i4_row_at(p->w, p->m, k, rows[r]) : (ss_i4_row){NULL, NULL};
        for (int t = 0; t < T; t++) acc[r][t] = vzero();
    }
    const float *x = p->x + (size_t)t0 * k;
    GROUP g[R_MAX];
    for (int r = 0; r < R; r++) g[r] = group_at(wt, grp[r], 0);
    for (int c = 0; c < whole; c += SS_I4_CHUNK) {
        if (prefetch) {
            const size_t at = row_bytes + ss_row_bytes(wt, c);
            for (int r = 0; r < R; r++) {
                _mm_prefetch(row[r] + at, _MM_HINT_T0);
                if (chunk_bytes > 64) _mm_prefetch(row[r] + at + 64, _MM_HINT_T0);
            }
        }
        if (c > 0 && c % SS_I4_GROUP == 0) /* int4: the next group (two chunks each) */
            for (int r = 0; r < R; r++) g[r] = group_at(wt, grp[r], c);
        for (int v = 0; v < SS_I4_CHUNK / VW; v++) {
            VEC w[R_MAX];
            for (int r = 0; r < R; r++) w[r] = weights(wt, row[r], c, v, g[r]);
            for (int t = 0; t < T; t++) {
                const VEC xv = vload(x + (size_t)t * k + c + v * VW);
                for (int r = 0; r < R; r++) acc[r][t] = vfma(w[r], xv, acc[r][t]);
            }
        }
    }
    const float *scale = wt == SS_I8 ? ss_i8_scales(p->w, p->m, k) : NULL;
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < T; t++) {
            float tail = 0.0f;
            for (int c = whole; c < k; c++) tail += ss_weight1(wt, row[r], grp[r], c) * x[(size_t)t * k + c];
            float v = vsum(acc[r][t]) + tail;
            if (scale) v *= scale[rows[r]];
            if (p->bias) v += p->bias[rows[r]];
            ss_emit(p->out + (size_t)(t0 + t) * p->m + rows[r], v, p->epi);
        }
    }
}

_Static_assert(T_FEW <= 6 && T_MANY <= 6, "all_tokens handles remainders of up to 5 tokens");

/* Rows rows[0..R) x every token: tiles of TMAX tokens, then the rest. */
TARGET __attribute__((always_inline)) static inline void NAME(all_tokens)(const ss_product *p, const ss_dtype wt,
                                                                           const int *rows, const int R,
                                                                           const int TMAX, const int prefetch) {
    int t0 = 0;
    for (; t0 + TMAX <= p->n; t0 += TMAX) NAME(tile)(p, wt, rows, R, t0, TMAX, prefetch && t0 == 0);
    switch (p->n - t0) { /* T must be a constant: one instance per count */
    case 1: NAME(tile)(p, wt, rows, R, t0, 1, prefetch && t0 == 0); break;
    case 2: if (TMAX > 2) NAME(tile)(p, wt, rows, R, t0, 2, prefetch && t0 == 0); break;
    case 3: if (TMAX > 3) NAME(tile)(p, wt, rows, R, t0, 3, prefetch && t0 == 0); break;
    case 4: if (TMAX > 4) NAME(tile)(p, wt, rows, R, t0, 4, prefetch && t0 == 0); break;
    case 5: if (TMAX > 5) NAME(tile)(p, wt, rows, R, t0, 5, prefetch && t0 == 0); break;
    default: break;
    }
}

/* Rows [r0, r1) as R streams of q = (r1 - r0) / R consecutive rows, tile i
 * taking row i of each (see gemv.c on why streams), then the rows left
 * over one at a time. */
TARGET __attribute__((always_inline)) static inline void NAME(rows)(const ss_product *p, const ss_dtype wt, int r0,
                                                                     int r1, const int R, const int TMAX) {
    const int q = (r1 - r0) / R;
    int rows[R_MAX];
    for (int step = 0; step < q; step++) {
        for (int r = 0; r < R; r++) rows[r] = r0 + step + r * q;
        NAME(all_tokens)(p, wt, rows, R, TMAX, step + 1 < q);
    }
    for (int j = r0 + R * q; j < r1; j++) NAME(all_tokens)(p, wt, &j, 1, TMAX, 0);
}

/* The kernel of one format at this width. */
TARGET __attribute__((always_inline)) static inline int NAME(gemv)(const ss_product *p, const ss_dtype wt, int r0,
                                                                    int r1) {
    if (p->n <= T_FEW) NAME(rows)(p, wt, r0, r1, R_FEW, T_FEW);
    else NAME(rows)(p, wt, r0, r1, R_MANY, T_MANY);
    return 0;
}

#undef R_MAX
