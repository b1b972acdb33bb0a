/* Matrix products against stored weight matrices: which kernel runs, and
 * how threads share the rows.
 *
 * A product of at most SS_WIDE_MAX tokens runs the format's `wide` kernel
 * (register-tiled GEMV or AMX), a larger one its `gemm` kernel (blocked
 * GEMM or AMX), each the first in the format's preference order whose level
 * the CPU has (formats.c). One kernel serves every batch up to
 * SS_WIDE_MAX, and kernels compute each output independently of the
 * others, so row i of an n-token product is bitwise the 1-token product of
 * row i: speculative verification reproduces target-only decoding exactly.
 *
 * Threads split the output rows into contiguous ranges aligned to the
 * kernel's row tile; every output is computed by one thread, so results do
 * not depend on the thread count (or on how ss_matmul_part splits). */
#include <omp.h>

#include "formats.h"

/* Below this many multiply-adds a second thread costs more (fork/join, and
 * spinning at the barrier when cores are oversubscribed) than it saves. */
#define PARALLEL_MIN_MACS (1u << 16)
#define GEMM_PARALLEL_MIN_MACS (1u << 18)

/* The kernel for a batch of n tokens at `level`: exactly that level's when
 * `exact` and the format has one, else the first of the preference order
 * that the level allows. */
static const ss_kernel *choose(const ss_format *f, int n, int level, int exact) {
    const int wide = n <= SS_WIDE_MAX;
    const ss_kernel *const *kernels = wide ? f->wide : f->gemm;
    const signed char *order = wide ? f->wide_order : f->gemm_order;
    if (level > ss_cpu_level()) level = ss_cpu_level();
    if (exact && kernels[level]) return kernels[level];
    for (int i = 0; i < SS_SIMD_LEVELS; i++)
        if (order[i] <= level && kernels[order[i]]) return kernels[order[i]];
    return &ss_scalar_kernel;
}

/* Part `part` of `parts`: a contiguous range of whole row tiles. A kernel
 * without scratch memory leaves its rows to the portable one. */
static void run_part(const ss_kernel *kernel, const ss_product *p, int part, int parts) {
    const int tile = kernel->row_tile, tiles = (p->m + tile - 1) / tile;
    const int r0 = (int)((int64_t)tiles * part / parts) * tile;
    int r1 = (int)((int64_t)tiles * (part + 1) / parts) * tile;
    if (r1 > p->m) r1 = p->m;
    if (r0 < r1 && kernel->rows(p, r0, r1) != 0) ss_scalar_kernel.rows(p, r0, r1);
}

static void run(const ss_kernel *kernel, const ss_product *p) {
    const size_t macs = (size_t)p->m * (size_t)p->k * (size_t)p->n;
    if (macs < (p->n <= SS_WIDE_MAX ? PARALLEL_MIN_MACS : GEMM_PARALLEL_MIN_MACS) || omp_get_max_threads() == 1) {
        run_part(kernel, p, 0, 1);
        return;
    }
#pragma omp parallel
    run_part(kernel, p, omp_get_thread_num(), omp_get_num_threads());
}

static ss_product product(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                          const float *bias, ss_epilogue epi) {
    return (ss_product){out, x, n, k, w, ss_format_of(wt), m, bias, epi};
}

void ss_matmul_at(int level, float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi) {
    const ss_product p = product(out, x, n, k, w, wt, m, bias, epi);
    run(choose(p.fmt, n, level, 1), &p);
}

void ss_matmul_ex(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
                  const float *bias, ss_epilogue epi) {
    const ss_product p = product(out, x, n, k, w, wt, m, bias, epi);
    run(choose(p.fmt, n, ss_simd_level(), 0), &p);
}

void ss_matmul_part(int part, int parts, float *out, const float *x, int n, int k, const void *w, ss_dtype wt,
                    int m, const float *bias, ss_epilogue epi) {
    const ss_product p = product(out, x, n, k, w, wt, m, bias, epi);
    run_part(choose(p.fmt, n, ss_simd_level(), 0), &p, part, parts);
}

void ss_matmul_part_at(int level, int part, int parts, float *out, const float *x, int n, int k, const void *w,
                       ss_dtype wt, int m, const float *bias, ss_epilogue epi) {
    const ss_product p = product(out, x, n, k, w, wt, m, bias, epi);
    run_part(choose(p.fmt, n, level, 1), &p, part, parts);
}

void ss_matmul(float *out, const float *x, int n, int k, const void *w, ss_dtype wt, int m,
               const float *bias) {
    ss_matmul_ex(out, x, n, k, w, wt, m, bias, SS_EPI_NONE);
}

const char *ss_matmul_path_at(int level, ss_dtype dtype, int n) {
    return choose(ss_format_of(dtype), n, level, 1)->name;
}

const char *ss_matmul_path(ss_dtype dtype, int n) {
    return choose(ss_format_of(dtype), n, ss_simd_level(), 0)->name;
}

const char *ss_kernel_variant(void) { return ss_level_name(ss_simd_level()); }
