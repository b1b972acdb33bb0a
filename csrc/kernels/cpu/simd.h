/* Run-time SIMD dispatch. Kernels compiled for AVX2 carry SS_AVX2 (and the
 * AVX-512 ones SS_AVX512BF16) so that a portable build (no -march=native)
 * still contains them; ss_simd_level() decides at run time which may be
 * called.
 *
 * The environment variable SPECSTREAM_KERNELS caps the level, read once per
 * process: "scalar" (portable C everywhere), "avx2" (no AVX-512 paths) or
 * "auto" (default: the best the CPU has). Tests use it to compare the
 * portable path with the SIMD one; users can use it to rule out a path. */
#ifndef SS_SIMD_H
#define SS_SIMD_H

enum {
    SS_SIMD_SCALAR = 0,
    SS_SIMD_AVX2 = 1,       /* AVX2 + FMA + F16C                              */
    SS_SIMD_AVX512BF16 = 2  /* + AVX-512 F/BW/VL and BF16 dot products        */
};

/* The level in use (cached after the first call): the best the CPU has,
 * capped by SPECSTREAM_KERNELS. */
int ss_simd_level(void);
/* The best level this CPU can execute, whatever SPECSTREAM_KERNELS says
 * (tests run every level up to it). */
int ss_cpu_level(void);
/* "scalar", "avx2", "avx512bf16"; NULL for an unknown level. */
const char *ss_level_name(int level);

#if defined(__x86_64__) || defined(__i386__)
#define SS_X86 1
#include <immintrin.h>
#define SS_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SS_AVX512BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")))

#include <stdint.h>
#include <string.h>

#include "specstream.h"

/* 8 consecutive stored weights as f32 (int8: unscaled), for every dtype. */
SS_AVX2 static inline __m256 ss_load8_f32(const void *w, size_t i, ss_dtype wt) {
    switch (wt) {
    case SS_F32: return _mm256_loadu_ps((const float *)w + i);
    case SS_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    case SS_I8: {
        int64_t q;
        memcpy(&q, (const int8_t *)w + i, 8);
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(q)));
    }
    default: {
        const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    }
}
#else
#define SS_X86 0
#endif

static inline int ss_have_avx2(void) { return ss_simd_level() >= SS_SIMD_AVX2; }
static inline int ss_have_avx512bf16(void) { return ss_simd_level() >= SS_SIMD_AVX512BF16; }

#endif
