/* Attention of one query (one head) over the keys a cache policy lets it see.
 * The keys arrive as a few runs (sink slots, a heavy set, the ring buffer's
 * window, which may wrap once, a tree token's ancestors), so one kernel
 * serves every policy and every batch shape. It is split in two so that a
 * cache can recompute the probabilities of committed queries alone
 * (scorers read them), bit for bit. */
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

static inline const float *run_key(const ss_kv_run *r, int j, int hd) {
    return r->row_k ? r->row_k[j] : r->k + (size_t)(r->first + j) * hd;
}
static inline const float *run_value(const ss_kv_run *r, int j, int hd) {
    return r->row_v ? r->row_v[j] : r->v + (size_t)(r->first + j) * hd;
}

/* q rotated by cos/sin (rotate-half on rotary_dim dims) dotted with k:
 * sum_i c_i (q_i k_i + q_j k_j) + s_i (q_i k_j - q_j k_i), j = i + half, plus
 * the plain dot of the dims beyond rotary_dim. */
static float rotated_dot_scalar(const float *q, const float *k, int hd, int rd, const float *cs, const float *sn) {
    const int half = rd / 2;
    float s = 0.0f;
    for (int i = 0; i < half; i++)
        s += cs[i] * (q[i] * k[i] + q[i + half] * k[i + half]) + sn[i] * (q[i] * k[i + half] - q[i + half] * k[i]);
    return s + dot_scalar(q + rd, k + rd, hd - rd);
}

#if SS_X86
SS_AVX2 static float rotated_dot_avx2(const float *q, const float *k, int hd, int rd, const float *cs,
                                      const float *sn) {
    const int half = rd / 2;
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= half; i += 8) {
        const __m256 ql = _mm256_loadu_ps(q + i), qh = _mm256_loadu_ps(q + i + half);
        const __m256 kl = _mm256_loadu_ps(k + i), kh = _mm256_loadu_ps(k + i + half);
        const __m256 same = _mm256_fmadd_ps(ql, kl, _mm256_mul_ps(qh, kh));
        const __m256 cross = _mm256_fmsub_ps(ql, kh, _mm256_mul_ps(qh, kl));
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(cs + i), same, acc);
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(sn + i), cross, acc);
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; i < half; i++)
        s += cs[i] * (q[i] * k[i] + q[i + half] * k[i + half]) + sn[i] * (q[i] * k[i + half] - q[i + half] * k[i]);
    return s + dot_avx2(q + rd, k + rd, hd - rd);
}
#endif

/* The bodies are written once; each instance inlines its own dot/axpy. */
__attribute__((always_inline)) static inline int probs_impl(
    const ss_kv_run *runs, int n_runs, int hd, float scale, const ss_distance_rotation *rot,
    float *probs, float (*dot)(const float *, const float *, int),
    float (*rotated_dot)(const float *, const float *, int, int, const float *, const float *)) {
    int total = 0;
    for (int r = 0; r < n_runs; r++) total += runs[r].n;
    const int half = rot ? rot->rotary_dim / 2 : 0;
    float max = -INFINITY;
    int j = 0;
    for (int r = 0; r < n_runs; r++) {
        const float *q = runs[r].q;
        for (int i = 0; i < runs[r].n; i++, j++) {
            const float *k = run_key(&runs[r], i, hd);
            const size_t d = (size_t)(total - 1 - j) * half;
            const float s = (runs[r].by_distance ? rotated_dot(q, k, hd, rot->rotary_dim, rot->cos + d, rot->sin + d)
                                                 : dot(q, k, hd)) * scale;
            probs[j] = s;
            if (s > max) max = s;
        }
    }
    float sum = 0.0f;
    for (j = 0; j < total; j++) {
        probs[j] = expf(probs[j] - max);
        sum += probs[j];
    }
    const float inv = 1.0f / sum;
    for (j = 0; j < total; j++) probs[j] *= inv;
    return total;
}

__attribute__((always_inline)) static inline void values_impl(float *out, const float *probs, const ss_kv_run *runs,
                                                             int n_runs, int hd,
                                                             void (*axpy)(float *, float, const float *, int)) {
    for (int i = 0; i < hd; i++) out[i] = 0.0f;
    int j = 0;
    for (int r = 0; r < n_runs; r++)
        for (int i = 0; i < runs[r].n; i++) axpy(out, probs[j++], run_value(&runs[r], i, hd), hd);
}

#if SS_X86
SS_AVX2 static int probs_avx2(const ss_kv_run *runs, int n_runs, int hd, float scale,
                              const ss_distance_rotation *rot, float *probs) {
    return probs_impl(runs, n_runs, hd, scale, rot, probs, dot_avx2, rotated_dot_avx2);
}
SS_AVX2 static void values_avx2(float *out, const float *probs, const ss_kv_run *runs, int n_runs, int hd) {
    values_impl(out, probs, runs, n_runs, hd, axpy_avx2);
}
#endif

int ss_attention_probs(const ss_kv_run *runs, int n_runs, int head_dim, float scale,
                       const ss_distance_rotation *rot, float *probs) {
#if SS_X86
    if (ss_have_avx2()) return probs_avx2(runs, n_runs, head_dim, scale, rot, probs);
#endif
    return probs_impl(runs, n_runs, head_dim, scale, rot, probs, dot_scalar, rotated_dot_scalar);
}

void ss_attention_values(float *out, const float *probs, const ss_kv_run *runs, int n_runs, int head_dim) {
#if SS_X86
    if (ss_have_avx2()) {
        values_avx2(out, probs, runs, n_runs, head_dim);
        return;
    }
#endif
    values_impl(out, probs, runs, n_runs, head_dim, axpy_scalar);
}

float ss_dot(const float *a, const float *b, int n) {
#if SS_X86
    if (ss_have_avx2()) return dot_avx2(a, b, n);
#endif
    return dot_scalar(a, b, n);
}
