/* Extra entry points of a CUDA build, callable from C (the Python binding
 * uses them for build information and the benchmark's copy-bandwidth probe).
 * They exist only when the extension is compiled with SS_WITH_CUDA; the
 * backend hooks proper are declared in model/backend.h. */
#ifndef SS_CUDA_API_H
#define SS_CUDA_API_H

#include <stddef.h>

#include "specstream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CUDA runtime and cuBLAS versions this build was compiled against, and the
 * runtime actually loaded ("13.0"); the loaded one needs no GPU to answer. */
int ss_cuda_compiled_runtime_version(void); /* CUDART_VERSION, e.g. 13000  */
int ss_cuda_loaded_runtime_version(void);   /* 0 if it cannot be asked     */
int ss_cuda_compiled_cublas_version(void);  /* CUBLAS_VERSION              */
/* Device architectures the kernels were compiled for, e.g. "sm_80,sm_90". */
const char *ss_cuda_archs(void);

/* Name of GPU `device` ("NVIDIA H100 80GB HBM3") into buf. */
ss_status ss_cuda_device_name(int device, char *buf, size_t len, ss_error *err);

/* Best-of-`repeats` device-to-device cudaMemcpy over `bytes` on the current
 * GPU, as GB/s of DRAM traffic (bytes read + bytes written per copy). */
ss_status ss_cuda_copy_bandwidth(size_t bytes, int repeats, double *gbs, ss_error *err);

#ifdef __cplusplus
}
#endif
#endif
