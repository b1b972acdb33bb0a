/* Run-time SIMD dispatch. Kernels carry target attributes (SS_AVX2,
 * SS_AVX512, SS_AMX) so that a portable build (no -march=native) still
 * contains them; ss_simd_level() decides at run time which may be called.
 *
 * Levels, each including the ones before it:
 *   scalar  portable C
 *   avx2    AVX2 + FMA + F16C
 *   avx512  AVX-512 F/BW/VL/DQ
 *   amx     AMX-TILE + AMX-BF16 + AMX-INT8 (and AVX-512 BF16 for conversions), with
 *           the kernel's permission to use the tile registers granted
 *           (Linux arch_prctl; refused: the CPU counts as avx512)
 * A level says what may run, not what does: each weight format lists its
 * kernels in the order measured fastest (formats.c), so a format without an
 * AVX-512 kernel, or whose AVX-512 kernel measured slower, runs its AVX2 one
 * on an AVX-512 machine.
 *
 * The environment variable SPECSTREAM_KERNELS caps the level, read once per
 * process: "scalar", "avx2", "avx512", "amx" or "auto" (default: the best the
 * CPU has). Tests use it to compare levels; users can use it to rule one out. */
#ifndef SS_SIMD_H
#define SS_SIMD_H

enum {
    SS_SIMD_SCALAR = 0,
    SS_SIMD_AVX2 = 1,
    SS_SIMD_AVX512 = 2,
    SS_SIMD_AMX = 3,
    SS_SIMD_LEVELS = 4
};

/* The level in use (cached after the first call): the best the CPU has,
 * capped by SPECSTREAM_KERNELS. */
int ss_simd_level(void);
/* The best level this CPU can execute, whatever SPECSTREAM_KERNELS says
 * (tests run every level up to it). */
int ss_cpu_level(void);
/* "scalar", "avx2", "avx512", "amx"; NULL for an unknown level. */
const char *ss_level_name(int level);

#if defined(__x86_64__) || defined(__i386__)
#define SS_X86 1
#include <immintrin.h>
#define SS_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SS_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define SS_AMX                                                                                                 \
    __attribute__((                                                                                            \
        target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16,amx-int8")))
#else
#define SS_X86 0
#endif

static inline int ss_have_avx2(void) { return ss_simd_level() >= SS_SIMD_AVX2; }

#endif
