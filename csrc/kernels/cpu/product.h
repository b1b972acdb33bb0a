/* The interface between the matrix-product dispatcher (matmul.c) and the
 * kernels that compute products (gemv.c, gemm.c, amx.c, the portable path
 * in matmul.c): what one product is, and what a kernel is. */
#ifndef SS_PRODUCT_H
#define SS_PRODUCT_H

#include "kernels.h"

struct ss_format;

/* out[i][j] (=, += or activation of) sum_c x[i][c] w[j][c] + bias[j] for
 * i < n, j < m: the arguments of ss_matmul_ex, with the weight format looked
 * up. */
typedef struct {
    float *out;
    const float *x;
    int n, k;
    const void *w;
    const struct ss_format *fmt;
    int m;
    const float *bias;
    ss_epilogue epi;
} ss_product;

/* A kernel computes the output rows [r0, r1) of every token of a product.
 * It is called by one thread (inside or outside a parallel region), opens no
 * parallel region, and takes its scratch memory from ss_thread_scratch. It
 * returns 0, or -1 when scratch memory is missing (the dispatcher then runs
 * the portable path for those rows). The value of each output it writes
 * depends only on x, w and bias: never on n, on r0/r1 or on the thread. */
typedef struct {
    const char *name;  /* "avx2-gemv": level, then kind (for tests and reports) */
    int level;         /* the SIMD level it needs (simd.h) */
    int row_tile;      /* rows it handles at once: thread parts start at multiples of it */
    int (*rows)(const ss_product *p, int r0, int r1);
} ss_kernel;

/* Stores one finished value according to the epilogue. */
static inline void ss_emit(float *dst, float v, ss_epilogue epi) {
    switch (epi) {
    case SS_EPI_GELU: *dst = ss_gelu_one(v, 0); break;
    case SS_EPI_GELU_TANH: *dst = ss_gelu_one(v, 1); break;
    case SS_EPI_ADD: *dst += v; break;
    default: *dst = v; break;
    }
}

#endif
