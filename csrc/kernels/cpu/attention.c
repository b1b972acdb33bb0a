/* Attention of one query (one head) over the keys a cache policy lets it see.
 * The keys arrive as a few runs (sink slots, the ring buffer's window, which
 * may wrap once, and a tree token's ancestors by slot), so one kernel serves
 * every policy and every batch shape. */
#include <math.h>

#include "kernels.h"
#include "simd.h"

static float dot_scalar(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_scalar(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

#if SS_X86
SS_AVX2 static float dot_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    const __m256 s = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

SS_AVX2 static void axpy_avx2(float *y, float a, const float *x, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}
#endif

static inline int run_row(const ss_kv_run *r, int j) { return r->rows ? r->rows[j] : r->first + j; }

/* The body is written once; each instance inlines its own dot/axpy. */
__attribute__((always_inline)) static inline void attend_impl(
    float *out, const ss_kv_run *runs, int n_runs, int hd, float scale, float *scores,
    float (*dot)(const float *, const float *, int), void (*axpy)(float *, float, const float *, int)) {
    float max = -INFINITY;
    int total = 0;
    for (int r = 0; r < n_runs; r++) {
        for (int j = 0; j < runs[r].n; j++) {
            const float s = dot(runs[r].q, runs[r].k + (size_t)run_row(&runs[r], j) * hd, hd) * scale;
            scores[total++] = s;
            if (s > max) max = s;
        }
    }
    float sum = 0.0f;
    for (int j = 0; j < total; j++) {
        scores[j] = expf(scores[j] - max);
        sum += scores[j];
    }
    const float inv = 1.0f / sum;
    for (int i = 0; i < hd; i++) out[i] = 0.0f;
    total = 0;
    for (int r = 0; r < n_runs; r++) {
        for (int j = 0; j < runs[r].n; j++) {
            const float p = scores[total++] * inv;
            const int row = run_row(&runs[r], j);
            if (runs[r].prob) runs[r].prob[row] += p;
            axpy(out, p, runs[r].v + (size_t)row * hd, hd);
        }
    }
}

#if SS_X86
SS_AVX2 static void attend_avx2(float *out, const ss_kv_run *runs, int n_runs, int hd, float scale,
                                float *scores) {
    attend_impl(out, runs, n_runs, hd, scale, scores, dot_avx2, axpy_avx2);
}
#endif

void ss_attend(float *out, const ss_kv_run *runs, int n_runs, int head_dim, float scale,
               float *scores) {
#if SS_X86
    if (ss_have_avx2()) {
        attend_avx2(out, runs, n_runs, head_dim, scale, scores);
        return;
    }
#endif
    attend_impl(out, runs, n_runs, head_dim, scale, scores, dot_scalar, axpy_scalar);
}

float ss_dot(const float *a, const float *b, int n) {
#if SS_X86
    if (ss_have_avx2()) return dot_avx2(a, b, n);
#endif
    return dot_scalar(a, b, n);
}
