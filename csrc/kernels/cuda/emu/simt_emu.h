/* A small SIMT emulator for running the CUDA backend's kernels on a CPU, so
 * that their logic can be checked on machines without a GPU (see
 * build_emu.py). Not part of any normal build.
 *
 * Each CUDA thread of a block is a fiber (own stack) on one OS thread; blocks
 * run one after another. A fiber runs until it reaches a barrier:
 * __syncthreads() waits for every live thread of the block, a warp shuffle
 * for the 32 lanes of its warp (all must take part, as with a full mask).
 * __shared__ variables become function statics, which is right because one
 * block runs at a time. Kernel launches are rewritten by build_emu.py into
 * ss_emu::launch(grid, block, stream, closure); the CUDA runtime and the few
 * cuBLAS calls the backend makes are emulated in emu_runtime.cpp with host
 * memory, including stream capture into replayable graphs. A barrier that
 * cannot be met (divergent __syncthreads, a shuffle some lanes skip) aborts
 * with a message: that is a bug in the kernel. */
#ifndef SS_SIMT_EMU_H
#define SS_SIMT_EMU_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

namespace ss_emu {

/* The thread that is running (set by the scheduler at every switch). */
extern uint3 cur_tid;
extern uint3 cur_bid;
extern dim3 cur_bdim, cur_gdim;

void sync_block();
uint64_t shfl_xor_bits(uint64_t bits, int offset);

/* Runs `body` as a kernel: every block in turn, every thread a fiber. */
void run_kernel(dim3 grid, dim3 block, const std::function<void()> &body);
/* A launch on a stream: run now, or recorded while the stream is captured. */
cudaError_t launch(dim3 grid, dim3 block, cudaStream_t stream, std::function<void()> body);

template <typename T> inline T shfl_xor(T v, int offset) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = shfl_xor_bits(bits, offset);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}

inline float bits_to_float(unsigned int u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

} // namespace ss_emu

#define threadIdx (ss_emu::cur_tid)
#define blockIdx (ss_emu::cur_bid)
#define blockDim (ss_emu::cur_bdim)
#define gridDim (ss_emu::cur_gdim)
#define __syncthreads() ss_emu::sync_block()
#define __shfl_xor_sync(mask, v, offset) ss_emu::shfl_xor((v), (offset))

template <typename T> inline T __ldg(const T *p) { return *p; }
inline float __uint_as_float(unsigned int u) { return ss_emu::bits_to_float(u); }
/* The _rn intrinsics round each operation: with -ffp-contract=off, so do
 * plain host operations. */
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

#endif
