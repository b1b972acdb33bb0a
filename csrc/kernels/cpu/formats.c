/* The weight-format table (formats.h) and the element conversions of the
 * float formats. */
#include "formats.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "float16.h"

/* ------------------------------------------------------ float formats */

void ss_convert_to_f32(float *dst, const void *src, ss_dtype dtype, size_t n) {
    switch (dtype) {
    case SS_F16:
        for (size_t i = 0; i < n; i++) dst[i] = ss_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case SS_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = ss_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    default: memcpy(dst, src, n * sizeof(float)); break;
    }
}

void ss_convert_from_f32(void *dst, const float *src, ss_dtype dtype, size_t n) {
    switch (dtype) {
    case SS_F16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ss_f32_to_f16(src[i]);
        break;
    case SS_BF16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ss_f32_to_bf16(src[i]);
        break;
    default: memcpy(dst, src, n * sizeof(float)); break;
    }
}

static size_t bytes_f32(int64_t rows, int64_t cols) { return (size_t)rows * (size_t)cols * 4; }
static size_t bytes_16(int64_t rows, int64_t cols) { return (size_t)rows * (size_t)cols * 2; }

static size_t element_size(ss_dtype dtype) { return dtype == SS_F32 ? 4 : 2; }

/* Row by row through f32 (exact from any float format), rounding once. */
static int convert_matrix(void *dst, ss_dtype dst_dtype, const void *src, ss_dtype src_dtype, int64_t rows,
                          int64_t cols) {
    const size_t in_row = (size_t)cols * element_size(src_dtype), out_row = (size_t)cols * element_size(dst_dtype);
    int failed = 0;
#pragma omp parallel reduction(| : failed) if (rows * cols >= (1 << 16))
    {
        float *row = malloc((size_t)cols * sizeof(float));
        if (!row) failed = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!row) continue;
            ss_convert_to_f32(row, (const char *)src + (size_t)r * in_row, src_dtype, (size_t)cols);
            ss_convert_from_f32((char *)dst + (size_t)r * out_row, row, dst_dtype, (size_t)cols);
        }
        free(row);
    }
    return failed ? -1 : 0;
}

static int pack_f32(void *dst, const void *src, ss_dtype st, int64_t rows, int64_t cols) {
    return convert_matrix(dst, SS_F32, src, st, rows, cols);
}
static int pack_f16(void *dst, const void *src, ss_dtype st, int64_t rows, int64_t cols) {
    return convert_matrix(dst, SS_F16, src, st, rows, cols);
}
static int pack_bf16(void *dst, const void *src, ss_dtype st, int64_t rows, int64_t cols) {
    return convert_matrix(dst, SS_BF16, src, st, rows, cols);
}

static void row_f32(float *dst, const void *w, int64_t rows, int64_t cols, int64_t r, int64_t c0, int64_t count) {
    (void)rows;
    ss_convert_to_f32(dst, (const float *)w + r * cols + c0, SS_F32, (size_t)count);
}
static void row_f16(float *dst, const void *w, int64_t rows, int64_t cols, int64_t r, int64_t c0, int64_t count) {
    (void)rows;
    ss_convert_to_f32(dst, (const uint16_t *)w + r * cols + c0, SS_F16, (size_t)count);
}
static void row_bf16(float *dst, const void *w, int64_t rows, int64_t cols, int64_t r, int64_t c0, int64_t count) {
    (void)rows;
    ss_convert_to_f32(dst, (const uint16_t *)w + r * cols + c0, SS_BF16, (size_t)count);
}

/* ------------------------------------------------- quantized layouts */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t ss_i8_scales_offset(int64_t rows, int64_t cols) { return align64((size_t)rows * (size_t)cols); }

static size_t bytes_i8(int64_t rows, int64_t cols) {
    return ss_i8_scales_offset(rows, cols) + (size_t)rows * sizeof(float);
}

size_t ss_i4_scales_offset(int64_t rows, int64_t cols) { return align64((size_t)rows * ss_i4_row_bytes(cols)); }

size_t ss_i4_zeros_offset(int64_t rows, int64_t cols) {
    return ss_i4_scales_offset(rows, cols) + align64((size_t)rows * (size_t)ss_i4_groups(cols) * sizeof(uint16_t));
}

static size_t bytes_i4(int64_t rows, int64_t cols) {
    return ss_i4_zeros_offset(rows, cols) + (size_t)rows * (size_t)ss_i4_groups(cols);
}

/* ----------------------------------------------------------- the table
 *
 * DISPATCH. Each format lists its kernels in the order the dispatcher
 * prefers them, measured, not newest instruction set first:
 * benchmarks/bench_kernels.py, Intel Xeon (Sapphire Rapids class, 2 cores),
 * 2 GB of stored weights per format in 8192x2048 and 2048x8192 matrices
 * (Pythia-1b MLP shapes), best of 5 passes, load average 0.7 before the
 * run; read bandwidth 28.5 GB/s (AVX-512 probe), FMA peak 238 (AVX2) / 452
 * (AVX-512) GFLOP/s; results/kernels_cpu.json. GB/s of stored weights at
 * n = 1 / 8 / 16 tokens:
 *
 *            avx2-gemv           avx512-gemv         amx
 *   f32      30.5 / 20.8 / 13.7  30.0 / 23.4 / 16.2  -
 *   f16      27.0 / 16.7 /  9.7  28.2 / 18.5 / 11.0  -
 *   bf16     26.6 / 15.6 /  9.0  27.5 / 18.7 / 10.9  25.9 / 22.9 / 20.0
 *   int8     24.8 /  9.5 /  4.9  25.1 / 11.5 /  5.8  15.2 / 15.1 / 12.3
 *   int4     11.2 /  3.7 /  1.9  11.7 /  4.0 /  2.1   6.9 /  6.5 /  5.0
 *
 * Rule: the fastest kernel at n = 1 (decode), unless another is within 10%
 * of it there and faster at n = 8 (verification): f32, f16 -> avx512;
 * bf16 -> amx (6% slower at n = 1, 1.2x / 1.8x faster at n = 8 / 16);
 * int8, int4 -> avx512 (AMX converts them to bf16 and is held to 15 and 7
 * GB/s by the conversion). Larger batches (n > SS_WIDE_MAX) take AMX where
 * the format has it (n = 128, GFLOP/s: bf16 684, int8 508 against 170-180
 * for the AVX2 GEMM), else the AVX2 GEMM (there is no AVX-512 GEMM). A CPU
 * without AMX or AVX-512 falls through to the next level of the list. */

#define SCALAR_ONLY {&ss_scalar_kernel, NULL, NULL, NULL}
#if SS_X86
#define WIDE(dt) {&ss_scalar_kernel, &ss_gemv_avx2[dt], &ss_gemv_avx512[dt], NULL}
#define WIDE_AMX(dt) {&ss_scalar_kernel, &ss_gemv_avx2[dt], &ss_gemv_avx512[dt], AMX_KERNEL(dt)}
#define GEMM(dt) {&ss_scalar_kernel, &ss_gemm_avx2[dt], NULL, NULL}
#define GEMM_AMX(dt) {&ss_scalar_kernel, &ss_gemm_avx2[dt], NULL, AMX_KERNEL(dt)}
#define AMX_KERNEL(dt) ((dt) == SS_I8 ? &ss_amx_int8_kernel : &ss_amx_kernel[dt])
#else
#define WIDE(dt) SCALAR_ONLY
#define WIDE_AMX(dt) SCALAR_ONLY
#define GEMM(dt) SCALAR_ONLY
#define GEMM_AMX(dt) SCALAR_ONLY
#endif

enum { S = SS_SIMD_SCALAR, A2 = SS_SIMD_AVX2, A5 = SS_SIMD_AVX512, AMX = SS_SIMD_AMX };

static const ss_format formats[SS_DTYPES] = {
    [SS_F32] = {SS_F32, "f32", "float32,fp32", 32, 0, SS_SCALES_NONE, 1, 1, bytes_f32, pack_f32, row_f32,
                WIDE(SS_F32), GEMM(SS_F32), {A5, A2, S, S}, {A2, S, S, S}},
    [SS_F16] = {SS_F16, "f16", "float16,fp16,half", 16, 0, SS_SCALES_NONE, 1, 1, bytes_16, pack_f16, row_f16,
                WIDE(SS_F16), GEMM(SS_F16), {A5, A2, S, S}, {A2, S, S, S}},
    [SS_BF16] = {SS_BF16, "bf16", "bfloat16", 16, 0, SS_SCALES_NONE, 1, 1, bytes_16, pack_bf16, row_bf16,
                 WIDE_AMX(SS_BF16), GEMM_AMX(SS_BF16), {AMX, A5, A2, S}, {AMX, A2, S, S}},
    [SS_I8] = {SS_I8, "int8", "i8", 8, 0, SS_SCALES_PER_ROW, 0, 0, bytes_i8, ss_quantize_i8, ss_dequantize_i8,
               WIDE_AMX(SS_I8), GEMM_AMX(SS_I8), {A5, AMX, A2, S}, {AMX, A2, S, S}},
    [SS_I4] = {SS_I4, "int4", "i4", 4, SS_I4_GROUP, SS_SCALES_PER_GROUP, 0, 0, bytes_i4, ss_quantize_i4,
               ss_dequantize_i4, WIDE_AMX(SS_I4), GEMM_AMX(SS_I4), {A5, AMX, A2, S}, {AMX, A2, S, S}},
};

const ss_format *ss_format_of(ss_dtype dtype) {
    return (int)dtype >= 0 && (int)dtype < SS_DTYPES ? &formats[dtype] : NULL;
}

const ss_format *ss_formats(int *count) {
    *count = SS_DTYPES;
    return formats;
}

/* `name` equal to one of the comma-separated words of `list`. */
static int in_list(const char *name, const char *list) {
    const size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        const size_t word = end ? (size_t)(end - p) : strlen(p);
        if (word == len && !strncmp(p, name, len)) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

const ss_format *ss_format_named(const char *name) {
    for (int i = 0; i < SS_DTYPES; i++)
        if (!strcmp(name, formats[i].name) || in_list(name, formats[i].aliases)) return &formats[i];
    return NULL;
}
