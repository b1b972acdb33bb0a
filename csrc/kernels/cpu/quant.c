/* Weight-only int8 quantization at load: symmetric, one f32 scale per output
 * row (per channel), q = round(w / scale) with scale = max|w| / 127. The
 * matrix products apply the scale to each row's dot product (matmul.c) or to
 * the f32 panel (gemm.c). Rounding error per weight <= scale / 2, so a row's
 * dot product is off by at most (max|w| / 254) * sum|x|. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "kernels.h"

int ss_quantize_i8(void *dst, const void *src, ss_dtype src_dtype, int64_t rows, int64_t cols) {
    int8_t *q = dst;
    float *scales = (float *)ss_i8_scales(dst, rows, cols);
    const size_t in_row = (size_t)cols * ss_dtype_size(src_dtype);
    int failed = 0;
#pragma omp parallel reduction(| : failed) if (rows * cols >= (1 << 16))
    {
        float *row = malloc((size_t)cols * sizeof(float));
        if (!row) {
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; r++) {
                ss_convert_to_f32(row, (const char *)src + (size_t)r * in_row, src_dtype, (size_t)cols);
                float amax = 0.0f;
                for (int64_t c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(row[c]));
                const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
                int8_t *qr = q + (size_t)r * (size_t)cols;
                for (int64_t c = 0; c < cols; c++) {
                    float v = nearbyintf(row[c] * inv);
                    v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
                    qr[c] = (int8_t)v;
                }
                scales[r] = scale;
            }
        }
        free(row);
    }
    return failed ? -1 : 0;
}
