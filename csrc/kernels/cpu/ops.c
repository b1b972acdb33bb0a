/* Element-wise and per-row operations of the transformer block. These are a
 * small share of the time per token (matrices dominate), so they are plain C
 * that the compiler vectorises. */
#include <math.h>

#include "kernels.h"

void ss_layernorm(float *y, const float *x, const float *weight, const float *bias, int d,
                  float eps) {
    /* double accumulators: d is up to 5120 and the variance subtracts means. */
    double sum = 0.0;
    for (int i = 0; i < d; i++) sum += x[i];
    const double mean = sum / d;
    double var = 0.0;
    for (int i = 0; i < d; i++) {
        const double c = x[i] - mean;
        var += c * c;
    }
    const float inv = (float)(1.0 / sqrt(var / d + eps)), m = (float)mean;
    for (int i = 0; i < d; i++) y[i] = (x[i] - m) * inv * weight[i] + bias[i];
}

float ss_gelu_one(float v, int tanh_approx) {
    if (tanh_approx) {
        const float c = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

void ss_gelu(float *x, size_t n, int tanh_approx) {
    if (tanh_approx) {
        const float c = 0.7978845608028654f; /* sqrt(2/pi) */
        for (size_t i = 0; i < n; i++) {
            const float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
        }
    } else {
        for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
    }
}

void ss_rotary_table(float *cos_tab, float *sin_tab, int rotary_dim, double base, int64_t pos) {
    const int half = rotary_dim / 2;
    for (int i = 0; i < half; i++) {
        const double inv_freq = pow(base, -(2.0 * i) / rotary_dim);
        const double angle = (double)pos * inv_freq;
        cos_tab[i] = (float)cos(angle);
        sin_tab[i] = (float)sin(angle);
    }
}

void ss_rotary(float *v, int rotary_dim, const float *cos_tab, const float *sin_tab) {
    const int half = rotary_dim / 2;
    for (int i = 0; i < half; i++) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_tab[i] - b * sin_tab[i];
        v[i + half] = b * cos_tab[i] + a * sin_tab[i];
    }
}
