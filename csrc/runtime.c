/* Process-wide knobs of the CPU runtime: which SIMD kernels run, how many
 * OpenMP threads. */
#include <omp.h>

#include "kernels/cpu/kernels.h"
#include "specstream.h"

const char *ss_cpu_kernels(void) { return ss_kernel_variant(); }

void ss_set_num_threads(int n) {
    if (n >= 1) omp_set_num_threads(n);
}

int ss_get_num_threads(void) { return omp_get_max_threads(); }
