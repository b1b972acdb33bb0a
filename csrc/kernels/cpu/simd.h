/* Run-time SIMD dispatch. Kernels compiled for AVX2 carry SS_AVX2 so that a
 * portable build (no -march=native) still contains them; ss_have_avx2()
 * decides at run time whether they may be called. */
#ifndef SS_SIMD_H
#define SS_SIMD_H

#if defined(__x86_64__) || defined(__i386__)
#define SS_X86 1
#include <immintrin.h>
#define SS_AVX2 __attribute__((target("avx2,fma,f16c")))
static inline int ss_have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}
#else
#define SS_X86 0
static inline int ss_have_avx2(void) { return 0; }
#endif

#endif
