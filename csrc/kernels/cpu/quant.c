/* Weight-only quantization at load, and the row dequantization that the
 * portable path (and the tests) use. Layouts: formats.h.
 *
 * int8: symmetric per output row, s = max|w| / 127, q = round(w / s); the
 * error per weight is at most s / 2, so a row's dot product is off by at
 * most (max|w| / 254) sum|x|.
 *
 * int4: per group of 64 weights of a row, the range [lo, hi] of the group
 * widened to contain 0 (so that 0, and padding, stay exact) is cut into 15
 * steps of s = (hi - lo) / 15 rounded up to a bf16 value, with zero point
 * z = round(-lo / s) and q = round(w / s) + z in [0, 15]. The error per
 * weight is at most s / 2 (s rounded up leaves no value outside the 16
 * levels; only an exact tie at the top step clamps, to one step). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "float16.h"
#include "formats.h"

/* Every row of src (a checkpoint dtype) as f32 through `row_fn`, threads
 * splitting the rows. */
static int each_row(const void *src, ss_dtype src_dtype, int64_t rows, int64_t cols,
                    void (*row_fn)(void *dst, const float *row, int64_t rows, int64_t cols, int64_t r),
                    void *dst) {
    const size_t in_row = (size_t)cols * (src_dtype == SS_F32 ? 4 : 2);
    int failed = 0;
#pragma omp parallel reduction(| : failed) if (rows * cols >= (1 << 16))
    {
        float *row = malloc((size_t)cols * sizeof(float));
        if (!row) failed = 1;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!row) continue;
            ss_convert_to_f32(row, (const char *)src + (size_t)r * in_row, src_dtype, (size_t)cols);
            row_fn(dst, row, rows, cols, r);
        }
        free(row);
    }
    return failed ? -1 : 0;
}

static float clampf(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); } /* NaN -> lo */

/* ----------------------------------------------------------------- int8 */

static void quantize_i8_row(void *dst, const float *row, int64_t rows, int64_t cols, int64_t r) {
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(row[c]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int8_t *q = (int8_t *)dst + (size_t)r * (size_t)cols;
    for (int64_t c = 0; c < cols; c++) q[c] = (int8_t)clampf(nearbyintf(row[c] * inv), -127.0f, 127.0f);
    ((float *)ss_i8_scales(dst, rows, cols))[r] = amax / 127.0f;
}

int ss_quantize_i8(void *dst, const void *src, ss_dtype src_dtype, int64_t rows, int64_t cols) {
    return each_row(src, src_dtype, rows, cols, quantize_i8_row, dst);
}

void ss_dequantize_i8(float *dst, const void *w, int64_t rows, int64_t cols, int64_t r, int64_t c0, int64_t count) {
    const int8_t *q = (const int8_t *)w + (size_t)r * (size_t)cols + c0;
    const float s = ss_i8_scales(w, rows, cols)[r];
    for (int64_t c = 0; c < count; c++) dst[c] = (float)q[c] * s;
}

/* ----------------------------------------------------------------- int4 */

/* The smallest bf16 value >= v (v >= 0). */
static float bf16_round_up(float v) {
    uint32_t bits = ss_f32_to_bits(v);
    if (bits & 0xffffu) bits = (bits | 0xffffu) + 1;
    return ss_bits_to_f32(bits);
}

static void quantize_i4_row(void *dst, const float *row, int64_t rows, int64_t cols, int64_t r) {
    uint8_t *packed = (uint8_t *)dst + (size_t)r * ss_i4_row_bytes(cols);
    const int64_t groups = ss_i4_groups(cols);
    uint16_t *scales = (uint16_t *)ss_i4_scales(dst, rows, cols) + r * groups;
    uint8_t *zeros = (uint8_t *)ss_i4_zeros(dst, rows, cols) + r * groups;
    for (int64_t g = 0; g < groups; g++) {
        const int64_t c0 = g * SS_I4_GROUP, c1 = c0 + SS_I4_GROUP < cols ? c0 + SS_I4_GROUP : cols;
        float lo = 0.0f, hi = 0.0f;
        for (int64_t c = c0; c < c1; c++) {
            lo = fminf(lo, row[c]);
            hi = fmaxf(hi, row[c]);
        }
        const float s = bf16_round_up((hi - lo) / 15.0f), inv = s > 0.0f ? 1.0f / s : 0.0f;
        const float z = clampf(nearbyintf(-lo * inv), 0.0f, 15.0f);
        scales[g] = (uint16_t)(ss_f32_to_bits(s) >> 16);
        zeros[g] = (uint8_t)z;
        /* the group's chunks, padding past cols included */
        const int64_t end = c0 + SS_I4_GROUP < (int64_t)ss_i4_row_bytes(cols) * 2 ? c0 + SS_I4_GROUP
                                                                                 : (int64_t)ss_i4_row_bytes(cols) * 2;
        for (int64_t c = c0; c < end; c++) {
            const float w = c < cols ? row[c] : 0.0f;
            const uint8_t q = (uint8_t)clampf(nearbyintf(w * inv) + z, 0.0f, 15.0f);
            uint8_t *byte = packed + (c / SS_I4_CHUNK) * 16 + c % 16;
            *byte = (c % SS_I4_CHUNK) < 16 ? (uint8_t)((*byte & 0xf0) | q) : (uint8_t)((*byte & 0x0f) | (q << 4));
        }
    }
}

int ss_quantize_i4(void *dst, const void *src, ss_dtype src_dtype, int64_t rows, int64_t cols) {
    return each_row(src, src_dtype, rows, cols, quantize_i4_row, dst);
}

void ss_dequantize_i4(float *dst, const void *w, int64_t rows, int64_t cols, int64_t r, int64_t c0, int64_t count) {
    const uint8_t *packed = (const uint8_t *)w + (size_t)r * ss_i4_row_bytes(cols);
    const int64_t groups = ss_i4_groups(cols);
    const uint16_t *scales = ss_i4_scales(w, rows, cols) + r * groups;
    const uint8_t *zeros = ss_i4_zeros(w, rows, cols) + r * groups;
    for (int64_t c = c0; c < c0 + count; c++) {
        const uint8_t byte = packed[(c / SS_I4_CHUNK) * 16 + c % 16];
        const int q = (c % SS_I4_CHUNK) < 16 ? byte & 15 : byte >> 4;
        dst[c - c0] = (float)(q - zeros[c / SS_I4_GROUP]) * ss_bf16_to_f32(scales[c / SS_I4_GROUP]);
    }
}
