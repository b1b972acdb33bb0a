/* A read-bandwidth probe: the roofline that batch-1 decode is measured
 * against. Streams a buffer larger than the caches with every thread, the
 * same access pattern as a weight matrix in ss_matmul. */
#include <omp.h>
#include <stdint.h>

#include "common.h"
#include "kernels/cpu/kernels.h"
#include "simd.h"

#if SS_X86
SS_AVX2 static float sum_avx2(const float *p, size_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(p + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(p + i + 8));
        c = _mm256_add_ps(c, _mm256_loadu_ps(p + i + 16));
        d = _mm256_add_ps(d, _mm256_loadu_ps(p + i + 24));
    }
    float out[8];
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#endif

static float sum_any(const float *p, size_t n) {
#if SS_X86
    if (ss_have_avx2()) return sum_avx2(p, n);
#endif
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s;
}

double ss_read_bandwidth(size_t bytes, int repeats, double *checksum) {
    const size_t n = bytes / sizeof(float);
    float *buf = ss_alloc(n, sizeof(float));
    if (!buf || repeats < 1) {
        ss_free(buf);
        return 0.0;
    }
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7); /* touch every page */
    double best = 1e30, total = 0.0;
    for (int r = 0; r < repeats; r++) {
        const double t0 = ss_now();
        double s = 0.0;
#pragma omp parallel reduction(+ : s)
        {
            const int nt = omp_get_num_threads(), id = omp_get_thread_num();
            const size_t per = (n / nt) & ~(size_t)31;
            s += sum_any(buf + (size_t)id * per, per);
        }
        const double dt = ss_now() - t0;
        total += s;
        if (dt < best) best = dt;
    }
    if (checksum) *checksum = total;
    ss_free(buf);
    return (double)(n & ~(size_t)31) * sizeof(float) / best / 1e9;
}
