/* Which SIMD level this CPU (and operating system) can run, and the cap
 * SPECSTREAM_KERNELS puts on it. */
#define _GNU_SOURCE
#include "simd.h"

#include <stdlib.h>
#include <string.h>

#if SS_X86 && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static int cpu_level = -1, simd_level = -1;

/* Linux hands out the 8 KB AMX tile state only to processes that ask for
 * it (once, for every thread of the process, present and future). */
static int amx_permitted(void) {
#if SS_X86 && defined(__linux__) && defined(SYS_arch_prctl)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}

int ss_cpu_level(void) {
    int level = __atomic_load_n(&cpu_level, __ATOMIC_RELAXED);
    if (level >= 0) return level;
    level = SS_SIMD_SCALAR;
#if SS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        level = SS_SIMD_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
            level = SS_SIMD_AVX512;
            if (__builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
                __builtin_cpu_supports("amx-int8") && __builtin_cpu_supports("avx512bf16") && amx_permitted())
                level = SS_SIMD_AMX;
        }
    }
#endif
    __atomic_store_n(&cpu_level, level, __ATOMIC_RELAXED);
    return level;
}

int ss_simd_level(void) {
    int level = __atomic_load_n(&simd_level, __ATOMIC_RELAXED);
    if (level >= 0) return level;
    level = ss_cpu_level();
    const char *cap = getenv("SPECSTREAM_KERNELS");
    for (int l = 0; cap && l < level; l++)
        if (!strcmp(cap, ss_level_name(l))) level = l;
    __atomic_store_n(&simd_level, level, __ATOMIC_RELAXED);
    return level;
}

const char *ss_level_name(int level) {
    static const char *const names[SS_SIMD_LEVELS] = {"scalar", "avx2", "avx512", "amx"};
    return level >= 0 && level < SS_SIMD_LEVELS ? names[level] : NULL;
}
