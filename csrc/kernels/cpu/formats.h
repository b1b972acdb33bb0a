/* Weight formats: how a [rows][cols] weight matrix is stored. One table
 * entry per ss_dtype holds everything that depends on the format: its names,
 * its size, the packing done at load (conversion or quantization from
 * f32/f16/bf16), a scalar dequantization of (part of) a row (the reference and
 * portable path), and its kernels per SIMD level with the order in which
 * the dispatcher prefers them. Adding a format is adding an entry (and its
 * kernels). ggml's type traits are the model.
 *
 * Layouts (row-major; one block of `bytes(rows, cols)` bytes per matrix):
 *  f32, f16, bf16  rows * cols values.
 *  int8            rows * cols int8 values q, then at the next 64-byte
 *                  boundary rows f32 scales s: w[r][c] = q[r][c] * s[r].
 *                  Symmetric per row: s = max|w| / 127, q = round(w / s).
 *  int4            groups of SS_I4_GROUP weights along a row, asymmetric:
 *                  w[r][c] = (q[r][c] - z[r][g]) * s[r][g], g = c / group,
 *                  q and z in [0, 15], s a bf16 value >= 0. A row is
 *                  ceil(cols / 32) chunks of 16 bytes (rows are padded to a
 *                  multiple of 32 weights, padding quantizes 0): byte i of
 *                  the chunk at column c0 holds q[c0 + i] in its low nibble
 *                  and q[c0 + 16 + i] in its high one, so one 16-byte load
 *                  gives 32 weights as two runs of 16. Then, each at the
 *                  next 64-byte boundary, the scales s [rows][groups] (bf16)
 *                  and the zero points z [rows][groups] (uint8).
 *                  Because s has 8 significant bits and q - z at most 4, the
 *                  dequantized weight (q - z) * s is exact in f32.
 *
 * Why int4 is asymmetric with groups of 64 (measured, bundled target,
 * WikiText-2: PPL over 2,048 tokens with chunk=64, and the mean KL of the
 * next-token distributions over 512 tokens against f32; random 70m model
 * the same way; scales rounded up to bf16 in every variant):
 *
 *   variant (bits/weight)             target PPL  KL target  KL 70m  weight RMS err
 *   f32                               135.23      -          -       -
 *   symmetric [-7,7],  g32  (4.5)     135.02      .00199     .0276   8.9%
 *   symmetric [-8,7],  g32  (4.5)     135.73      .00154     .0211   7.9%
 *   asymmetric,        g32  (4.75)    135.61      .00144     .0186   7.5%
 *   symmetric [-7,7],  g64  (4.25)    135.14      .00239     .0344   9.8%
 *   symmetric [-8,7],  g64  (4.25)    135.52      .00200     .0257   8.6%
 *   asymmetric,        g64  (4.375)   135.53      .00185     .0240   8.3%
 *   symmetric [-8,7],  g128 (4.125)   135.40      .00226     .0309   9.3%
 *   asymmetric,        g128 (4.19)    135.12      .00198     .0290   9.1%
 *
 * PPL moves by less than its noise (+-0.4%; every variant is far inside
 * the 10% budget), so the choice rests on the distributions: zero points
 * cut the KL by 7-12% at equal group size for 1/8 bit per weight, less than
 * halving the group costs, and groups of 64 sit between the size of g128
 * and the accuracy of g32 (4.375 bits per weight: decode reads 0.55 bytes
 * per weight). The zero point costs nothing in the kernels (they subtract
 * z where a symmetric format would subtract 8). */
#ifndef SS_FORMATS_H
#define SS_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include "product.h"
#include "simd.h"
#include "specstream.h"

enum { SS_DTYPES = SS_I4 + 1, SS_I4_GROUP = 64, SS_I4_CHUNK = 32 };

typedef enum {
    SS_SCALES_NONE = 0,     /* the values are the weights */
    SS_SCALES_PER_ROW = 1,  /* one f32 scale per row (int8) */
    SS_SCALES_PER_GROUP = 2 /* a scale and a zero point per `group` weights of a row (int4) */
} ss_scale_layout;

typedef struct ss_format {
    ss_dtype dtype;
    const char *name;     /* what bindings, messages and reports call it: "bf16" */
    const char *aliases;  /* other accepted names, comma-separated: "bfloat16" */
    int bits;             /* bits per stored weight, scales not included */
    int group;            /* weights per scale along a row (0: none, or one per row) */
    ss_scale_layout scales;
    int checkpoint;       /* 1: checkpoint tensors may come in this dtype (f32, f16, bf16) */
    int cuda;             /* 1: the CUDA backend has kernels for it */
    /* Bytes of a [rows][cols] matrix, scales included. */
    size_t (*bytes)(int64_t rows, int64_t cols);
    /* Stores a [rows][cols] matrix given in a checkpoint dtype at dst
     * (bytes(rows, cols) bytes). Threads split the rows. 0, or -1 when scratch
     * memory cannot be allocated. */
    int (*pack)(void *dst, const void *src, ss_dtype src_dtype, int64_t rows, int64_t cols);
    /* Weights [c0, c0 + count) of row r of a stored matrix, as the f32
     * values they stand for (the reference and portable path). */
    void (*dequantize)(float *dst, const void *w, int64_t rows, int64_t cols, int64_t r, int64_t c0, int64_t count);
    /* Kernels per SIMD level (NULL: none at that level) for batches of at
     * most SS_WIDE_MAX tokens (`wide`) and for larger ones (`gemm`), and the
     * dispatcher's preference among them: levels, best first, ending with
     * SS_SIMD_SCALAR (whose kernel every format has). */
    const ss_kernel *wide[SS_SIMD_LEVELS], *gemm[SS_SIMD_LEVELS];
    signed char wide_order[SS_SIMD_LEVELS], gemm_order[SS_SIMD_LEVELS];
} ss_format;

/* The entry of a dtype (NULL for a value outside ss_dtype). */
const ss_format *ss_format_of(ss_dtype dtype);
/* The entry called `name` or one of its aliases (NULL if none). */
const ss_format *ss_format_named(const char *name);
/* Every entry, by dtype; *count receives how many. */
const ss_format *ss_formats(int *count);

/* Where the int8 scales and the int4 scales/zero points of a matrix start
 * (byte offsets, and pointers into a stored matrix w). */
size_t ss_i8_scales_offset(int64_t rows, int64_t cols);
size_t ss_i4_scales_offset(int64_t rows, int64_t cols);
size_t ss_i4_zeros_offset(int64_t rows, int64_t cols);
static inline const float *ss_i8_scales(const void *w, int64_t rows, int64_t cols) {
    return (const float *)((const char *)w + ss_i8_scales_offset(rows, cols));
}
static inline const uint16_t *ss_i4_scales(const void *w, int64_t rows, int64_t cols) {
    return (const uint16_t *)((const char *)w + ss_i4_scales_offset(rows, cols));
}
static inline const uint8_t *ss_i4_zeros(const void *w, int64_t rows, int64_t cols) {
    return (const uint8_t *)w + ss_i4_zeros_offset(rows, cols);
}
/* Bytes of one packed int4 row (chunks of 32 weights) and groups per row. */
static inline size_t ss_i4_row_bytes(int64_t cols) { return (size_t)((cols + SS_I4_CHUNK - 1) / SS_I4_CHUNK) * 16; }
static inline int64_t ss_i4_groups(int64_t cols) { return (cols + SS_I4_GROUP - 1) / SS_I4_GROUP; }

/* The packing and row dequantization of the quantized formats (quant.c). */
int ss_quantize_i8(void *dst, const void *src, ss_dtype src_dtype, int64_t rows, int64_t cols);
int ss_quantize_i4(void *dst, const void *src, ss_dtype src_dtype, int64_t rows, int64_t cols);
void ss_dequantize_i8(float *dst, const void *w, int64_t rows, int64_t cols, int64_t r, int64_t c0, int64_t count);
void ss_dequantize_i4(float *dst, const void *w, int64_t rows, int64_t cols, int64_t r, int64_t c0, int64_t count);

/* The kernels, one ss_kernel per level, kind and format (defined by the
 * kernel files; formats.c puts them in the table). */
extern const ss_kernel ss_scalar_kernel;
extern const ss_kernel ss_gemv_avx2[SS_DTYPES], ss_gemv_avx512[SS_DTYPES], ss_gemm_avx2[SS_DTYPES];
extern const ss_kernel ss_amx_kernel[SS_DTYPES], ss_amx_int8_kernel;

#endif
