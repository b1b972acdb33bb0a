/* Roofline probes. A read-bandwidth probe, what batch-1 decode is measured
 * against: streams a buffer larger than the caches with every thread, the
 * same access pattern as a weight matrix in ss_matmul. And an FMA-throughput
 * probe, what prefill GEMMs are measured against: every thread runs
 * independent chains of f32 FMAs on registers (no memory traffic). */
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "common.h"
#include "kernels/cpu/kernels.h"
#include "simd.h"

/* Sums of a stream: four independent accumulators (so that the adds never
 * wait for each other and the loads are the only limit), 256 bytes per step
 * on AVX-512, 128 on AVX2. n is a multiple of 64 floats. */
#if SS_X86
SS_AVX512 static float sum_avx512(const float *p, size_t n) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 64) {
        a = _mm512_add_ps(a, _mm512_loadu_ps(p + i));
        b = _mm512_add_ps(b, _mm512_loadu_ps(p + i + 16));
        c = _mm512_add_ps(c, _mm512_loadu_ps(p + i + 32));
        d = _mm512_add_ps(d, _mm512_loadu_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

SS_AVX2 static float sum_avx2(const float *p, size_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 32) {
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

static float sum_at(int level, const float *p, size_t n) {
#if SS_X86
    if (level >= SS_SIMD_AVX512) return sum_avx512(p, n);
    if (level >= SS_SIMD_AVX2) return sum_avx2(p, n);
#else
    (void)level;
#endif
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (size_t i = 0; i < n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    return s0 + s1 + s2 + s3;
}

double ss_read_bandwidth(size_t bytes, int repeats, double *checksum) {
    return ss_read_bandwidth_at(ss_simd_level(), bytes, repeats, checksum);
}

double ss_read_bandwidth_at(int level, size_t bytes, int repeats, double *checksum) {
    if (level > ss_cpu_level()) level = ss_cpu_level();
    const size_t n = bytes / sizeof(float) & ~(size_t)63;
    float *buf = ss_alloc(n, sizeof(float));
    if (!buf || repeats < 1) {
        ss_free(buf);
        return 0.0;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7); /* touch every page, from the thread that reads it */
    double best = 1e30, total = 0.0;
    size_t streamed = n;
    for (int r = 0; r < repeats; r++) {
        const double t0 = ss_now();
        double s = 0.0;
        int threads = 1;
#pragma omp parallel reduction(+ : s)
        {
            const int nt = omp_get_num_threads(), id = omp_get_thread_num();
            const size_t per = (n / (size_t)nt) & ~(size_t)63;
            if (id == 0) threads = nt;
            s += sum_at(level, buf + (size_t)id * per, per);
        }
        const double dt = ss_now() - t0;
        streamed = ((n / (size_t)threads) & ~(size_t)63) * (size_t)threads;
        total += s;
        if (dt < best) best = dt;
    }
    if (checksum) *checksum = total;
    ss_free(buf);
    return (double)streamed * sizeof(float) / best / 1e9;
}

/* ------------------------------------------------------------ peak FLOPs */

enum { FMA_CHAINS = 12 }; /* >= FMA latency (4) x FMA ports (2), with room */

#if SS_X86
/* iters x 12 independent 8-lane FMA chains; returns a value that depends on
 * every chain so that nothing is optimised away. */
SS_AVX2 static float fma_chains_avx2(long iters, float seed) {
    /* named registers, not an array: the chains must never touch memory */
    __m256 c0 = _mm256_set1_ps(seed), c1 = _mm256_add_ps(c0, c0), c2 = _mm256_add_ps(c1, c0);
    __m256 c3 = _mm256_add_ps(c2, c0), c4 = _mm256_add_ps(c3, c0), c5 = _mm256_add_ps(c4, c0);
    __m256 c6 = _mm256_add_ps(c5, c0), c7 = _mm256_add_ps(c6, c0), c8 = _mm256_add_ps(c7, c0);
    __m256 c9 = _mm256_add_ps(c8, c0), c10 = _mm256_add_ps(c9, c0), c11 = _mm256_add_ps(c10, c0);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < iters; i++) {
        c0 = _mm256_fmadd_ps(c0, a, b); c1 = _mm256_fmadd_ps(c1, a, b); c2 = _mm256_fmadd_ps(c2, a, b);
        c3 = _mm256_fmadd_ps(c3, a, b); c4 = _mm256_fmadd_ps(c4, a, b); c5 = _mm256_fmadd_ps(c5, a, b);
        c6 = _mm256_fmadd_ps(c6, a, b); c7 = _mm256_fmadd_ps(c7, a, b); c8 = _mm256_fmadd_ps(c8, a, b);
        c9 = _mm256_fmadd_ps(c9, a, b); c10 = _mm256_fmadd_ps(c10, a, b); c11 = _mm256_fmadd_ps(c11, a, b);
    }
    const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                                   _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)),
                                                 _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11))));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

/* The same on 16 lanes. */
SS_AVX512 static float fma_chains_avx512(long iters, float seed) {
    __m512 c0 = _mm512_set1_ps(seed), c1 = _mm512_add_ps(c0, c0), c2 = _mm512_add_ps(c1, c0);
    __m512 c3 = _mm512_add_ps(c2, c0), c4 = _mm512_add_ps(c3, c0), c5 = _mm512_add_ps(c4, c0);
    __m512 c6 = _mm512_add_ps(c5, c0), c7 = _mm512_add_ps(c6, c0), c8 = _mm512_add_ps(c7, c0);
    __m512 c9 = _mm512_add_ps(c8, c0), c10 = _mm512_add_ps(c9, c0), c11 = _mm512_add_ps(c10, c0);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (long i = 0; i < iters; i++) {
        c0 = _mm512_fmadd_ps(c0, a, b); c1 = _mm512_fmadd_ps(c1, a, b); c2 = _mm512_fmadd_ps(c2, a, b);
        c3 = _mm512_fmadd_ps(c3, a, b); c4 = _mm512_fmadd_ps(c4, a, b); c5 = _mm512_fmadd_ps(c5, a, b);
        c6 = _mm512_fmadd_ps(c6, a, b); c7 = _mm512_fmadd_ps(c7, a, b); c8 = _mm512_fmadd_ps(c8, a, b);
        c9 = _mm512_fmadd_ps(c9, a, b); c10 = _mm512_fmadd_ps(c10, a, b); c11 = _mm512_fmadd_ps(c11, a, b);
    }
    const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                                   _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)),
                                                 _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11))));
    return _mm512_reduce_add_ps(s);
}
#endif

/* Same work in portable C (the compiler vectorises what it can). */
static float fma_chains_scalar(long iters, float seed) {
    float acc[FMA_CHAINS * 8];
    for (int c = 0; c < FMA_CHAINS * 8; c++) acc[c] = seed + (float)c;
    for (long i = 0; i < iters; i++)
        for (int c = 0; c < FMA_CHAINS * 8; c++) acc[c] = fmaf(acc[c], 0.999999f, 1e-7f);
    float s = 0.0f;
    for (int c = 0; c < FMA_CHAINS * 8; c++) s += acc[c];
    return s;
}

/* Lanes per chain at a level: 16 on AVX-512, 8 elsewhere. */
static int fma_lanes(int level) { return level >= SS_SIMD_AVX512 ? 16 : 8; }

static float fma_chains(int level, long iters, float seed) {
#if SS_X86
    if (level >= SS_SIMD_AVX512) return fma_chains_avx512(iters, seed);
    if (level >= SS_SIMD_AVX2) return fma_chains_avx2(iters, seed);
#else
    (void)level;
#endif
    return fma_chains_scalar(iters, seed);
}

double ss_peak_gflops(double seconds, int repeats) {
    const int level = ss_simd_level();
    return ss_peak_gflops_at(level < SS_SIMD_AVX2 ? level : SS_SIMD_AVX2, seconds, repeats);
}

double ss_peak_gflops_at(int level, double seconds, int repeats) {
    if (repeats < 1 || !(seconds > 0.0)) return 0.0;
    if (level > ss_cpu_level()) level = ss_cpu_level();
    /* calibrate: iterations for about seconds / repeats per run */
    long iters = 1 << 16;
    for (;;) {
        const double t0 = ss_now();
        volatile float sink = fma_chains(level, iters, 1.0f);
        (void)sink;
        const double dt = ss_now() - t0;
        if (dt > 0.01 || iters > (1L << 40)) {
            iters = (long)((double)iters * (seconds / repeats) / (dt > 1e-9 ? dt : 1e-9));
            break;
        }
        iters *= 4;
    }
    if (iters < 1024) iters = 1024;
    double best = 0.0;
    for (int r = 0; r < repeats; r++) {
        double s = 0.0;
        const double t0 = ss_now();
        int nt = 1;
#pragma omp parallel reduction(+ : s)
        {
#pragma omp single
            nt = omp_get_num_threads();
            s += fma_chains(level, iters, 1.0f + (float)omp_get_thread_num());
        }
        const double dt = ss_now() - t0;
        const double gflops = (double)nt * (double)iters * FMA_CHAINS * fma_lanes(level) * 2 / dt / 1e9;
        if (gflops > best && s == s) best = gflops;
    }
    return best;
}
