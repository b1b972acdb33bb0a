/* The portable kernel, every format: the weights of a row are dequantized
 * to f32 by the format's scalar function, a block at a time, and multiplied
 * into each token with one f32 multiply and one add per weight, in column
 * order (the build is ISO C: the compiler neither fuses nor reorders them).
 * It needs no scratch memory, so it is also what runs when another kernel
 * cannot get its scratch. */
#include "formats.h"

enum { BLOCK = 256 };

static int rows_portable(const ss_product *p, int r0, int r1) {
    float w[BLOCK];
    for (int j = r0; j < r1; j++) {
        for (int i = 0; i < p->n; i++) {
            const float *x = p->x + (size_t)i * p->k;
            float acc = 0.0f;
            for (int c0 = 0; c0 < p->k; c0 += BLOCK) {
                const int count = p->k - c0 < BLOCK ? p->k - c0 : BLOCK;
                p->fmt->dequantize(w, p->w, p->m, p->k, j, c0, count);
                for (int c = 0; c < count; c++) acc += w[c] * x[c0 + c];
            }
            ss_emit(p->out + (size_t)i * p->m + j, acc + (p->bias ? p->bias[j] : 0.0f), p->epi);
        }
    }
    return 0;
}

const ss_kernel ss_scalar_kernel = {"scalar", SS_SIMD_SCALAR, 1, rows_portable};
