/* Products with the weight matrices: out[i][j] = sum_c x[i][c] * W[j][c],
 * then an epilogue (bias, GELU, residual add).
 *
 * n <= 8 rows (decode, speculative verification of k+1 <= 8 tokens): a
 * memory-bound GEMV. Each warp owns R weight rows and walks them in 16-byte
 * vectors (8 f16/bf16 or 4 f32 values per lane per step), loaded past L1 so
 * the activations (NR rows of x, read through L1) stay cached; every weight
 * byte leaves DRAM once per call and meets all NR activation rows in
 * registers. f32 accumulation, exact f32 activations: the same math as the
 * CPU kernel (csrc/kernels/cpu/matmul.c), only the summation order differs.
 *
 * n > 8 rows (prefill chunks): cuBLAS GemmEx. For f16/bf16 weights the
 * activations are rounded to the weight dtype so the tensor cores run
 * (f32 accumulation, CUBLAS_COMPUTE_32F); f32 weights use plain f32 math
 * (no TF32). The epilogue then runs as its own element-wise kernel. */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/dtypes.cuh"

namespace ssc {

constexpr int kGemvWarps = 4; /* 128 threads per block: many blocks per SM */

__device__ __forceinline__ void apply_epilogue(float v, int i, int j, const Epilogue &ep) {
    if (ep.bias) v += ep.bias[j];
    float *o = ep.out + (size_t)i * ep.ldo + j;
    switch (ep.mode) {
    case EPI_GELU_ERF: *o = gelu_erf(v); break;
    case EPI_GELU_TANH: *o = gelu_tanh(v); break;
    case EPI_RESIDUAL: *o = *o + (ep.add ? ep.add[(size_t)i * ep.ldo + j] + v : v); break;
    default: *o = v; break;
    }
}

/* NR activation rows (n <= NR; rows past n repeat row n-1 and are not
 * written), R weight rows per warp. Needs k % Vec16<W>::N == 0 and 16-byte
 * aligned w and x. */
template <typename W, int NR, int R>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const W *__restrict__ w, const float *__restrict__ x, int n, int k, int m, Epilogue ep) {
    constexpr int V = Vec16<W>::N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = (blockIdx.x * kGemvWarps + warp) * R;
    if (row0 >= m) return;
    const int nvec = k / V;
    const W *wr[R];
#pragma unroll
    for (int rr = 0; rr < R; rr++) wr[rr] = w + (size_t)min(row0 + rr, m - 1) * k;
    const float *xr[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) xr[r] = x + (size_t)min(r, n - 1) * k;
    float acc[R][NR];
#pragma unroll
    for (int rr = 0; rr < R; rr++)
#pragma unroll
        for (int r = 0; r < NR; r++) acc[rr][r] = 0.0f;

    /* Multiplies one 16-byte vector of each weight row (already loaded) with
     * the activations at vector index vi. */
    auto fma_step = [&](int vi, const uint4 (&u)[R]) {
        float xv[NR][V];
#pragma unroll
        for (int r = 0; r < NR; r++) {
            const float4 *src = reinterpret_cast<const float4 *>(xr[r] + (size_t)vi * V);
#pragma unroll
            for (int q = 0; q < V / 4; q++) {
                const float4 t = __ldg(src + q);
                xv[r][4 * q] = t.x;
                xv[r][4 * q + 1] = t.y;
                xv[r][4 * q + 2] = t.z;
                xv[r][4 * q + 3] = t.w;
            }
        }
#pragma unroll
        for (int rr = 0; rr < R; rr++) {
            float wf[V];
            Vec16<W>::unpack(u[rr], wf);
#pragma unroll
            for (int r = 0; r < NR; r++)
#pragma unroll
                for (int e = 0; e < V; e++) acc[rr][r] = fmaf(wf[e], xv[r][e], acc[rr][r]);
        }
    };
    /* U vectors per row are loaded before any is used, so U x R 16-byte
     * weight loads per lane are in flight. The order of the FMAs of a row is
     * vi ascending whatever U, R and NR are (batch-independent results). */
    constexpr int U = NR == 1 ? 4 : 2;
    int vi = lane;
    for (; vi + 32 * (U - 1) < nvec; vi += 32 * U) {
        uint4 u[U][R];
#pragma unroll
        for (int uu = 0; uu < U; uu++)
#pragma unroll
            for (int rr = 0; rr < R; rr++) u[uu][rr] = load_stream(wr[rr] + (size_t)(vi + 32 * uu) * V);
#pragma unroll
        for (int uu = 0; uu < U; uu++) fma_step(vi + 32 * uu, u[uu]);
    }
    for (; vi < nvec; vi += 32) {
        uint4 u[R];
#pragma unroll
        for (int rr = 0; rr < R; rr++) u[rr] = load_stream(wr[rr] + (size_t)vi * V);
        fma_step(vi, u);
    }
#pragma unroll
    for (int rr = 0; rr < R; rr++) {
#pragma unroll
        for (int r = 0; r < NR; r++) {
            const float s = warp_sum(acc[rr][r]);
            /* R * NR <= 16 < 32: each result is written by its own lane */
            if (lane == rr * NR + r && r < n && row0 + rr < m) apply_epilogue(s, r, row0 + rr, ep);
        }
    }
}

/* Any k and alignment: one warp per weight row, scalar loads. */
template <typename W>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_generic_kernel(const W *__restrict__ w, const float *__restrict__ x, int n, int k, int m, Epilogue ep) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = blockIdx.x * kGemvWarps + warp;
    if (row >= m) return;
    const W *wr = w + (size_t)row * k;
    float acc[kGemvMaxRows];
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; r++) acc[r] = 0.0f;
    for (int c = lane; c < k; c += 32) {
        const float wv = to_f32(wr[c]);
#pragma unroll
        for (int r = 0; r < kGemvMaxRows; r++)
            if (r < n) acc[r] = fmaf(wv, x[(size_t)r * k + c], acc[r]);
    }
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; r++) {
        const float s = warp_sum(acc[r]);
        if (lane == r && r < n) apply_epilogue(s, r, row, ep);
    }
}

__global__ void epilogue_kernel(const float *__restrict__ acc, int n, int m, Epilogue ep) {
    const size_t total = (size_t)n * m;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(t / m), j = (int)(t % m);
        apply_epilogue(acc[t], i, j, ep);
    }
}

cudaError_t launch_epilogue(const float *acc, int n, int m, const Epilogue &ep, cudaStream_t stream) {
    const size_t total = (size_t)n * m;
    if (total == 0) return cudaSuccess;
    const int threads = 256;
    const size_t want = (total + threads - 1) / threads;
    epilogue_kernel<<<(int)(want < 8192 ? want : 8192), threads, 0, stream>>>(acc, n, m, ep);
    return cudaGetLastError();
}

template <typename W, int NR, int R>
static void launch_gemv(const void *w, const float *x, int n, int k, int m, const Epilogue &ep, cudaStream_t stream) {
    const int per_block = kGemvWarps * R;
    const int blocks = (m + per_block - 1) / per_block;
    gemv_kernel<W, NR, R><<<blocks, kGemvWarps * 32, 0, stream>>>((const W *)w, x, n, k, m, ep);
}

template <typename W>
static cudaError_t dispatch_gemv(const void *w, const float *x, int n, int k, int m, const Epilogue &ep,
                                 int sm_count, cudaStream_t stream) {
    constexpr int V = Vec16<W>::N;
    const bool vec = k % V == 0 && (uintptr_t)w % 16 == 0 && (uintptr_t)x % 16 == 0;
    if (!vec) {
        gemv_generic_kernel<W><<<(m + kGemvWarps - 1) / kGemvWarps, kGemvWarps * 32, 0, stream>>>(
            (const W *)w, x, n, k, m, ep);
        return cudaGetLastError();
    }
    /* n = 2..4 runs as 4 rows and 5..8 as 8 (the extra rows repeat row n-1
     * and are not written): the weights are read once either way. */
    const int nr = n == 1 ? 1 : n <= 4 ? 4 : 8;
    /* Two weight rows per warp reuse each activation vector twice, but leave
     * half the blocks: only when at least two blocks per SM remain. */
    const int r = nr > 1 && (m + 2 * kGemvWarps - 1) / (2 * kGemvWarps) >= 2 * sm_count ? 2 : 1;
    switch (nr * 10 + r) {
    case 11: launch_gemv<W, 1, 1>(w, x, n, k, m, ep, stream); break;
    case 41: launch_gemv<W, 4, 1>(w, x, n, k, m, ep, stream); break;
    case 42: launch_gemv<W, 4, 2>(w, x, n, k, m, ep, stream); break;
    case 81: launch_gemv<W, 8, 1>(w, x, n, k, m, ep, stream); break;
    default: launch_gemv<W, 8, 2>(w, x, n, k, m, ep, stream); break;
    }
    return cudaGetLastError();
}

static cudaDataType cuda_type(ss_dtype t) {
    return t == SS_F16 ? CUDA_R_16F : t == SS_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

ss_status gemm(const float *x, int n, int k, const void *w, ss_dtype wt, int m, const Epilogue &ep,
               const GemmScratch &scratch, int sm_count, cudaStream_t stream, const char *what,
               ss_error *err) {
    if (n <= 0) return SS_OK;
    if (wt != SS_F32 && wt != SS_F16 && wt != SS_BF16)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "CUDA: %s: weight dtype %d has no GPU kernels", what, (int)wt);
    cudaError_t ce;
    if (n <= kGemvMaxRows) {
        switch (wt) {
        case SS_F16: ce = dispatch_gemv<__half>(w, x, n, k, m, ep, sm_count, stream); break;
        case SS_BF16: ce = dispatch_gemv<__nv_bfloat16>(w, x, n, k, m, ep, sm_count, stream); break;
        default: ce = dispatch_gemv<float>(w, x, n, k, m, ep, sm_count, stream); break;
        }
        if (ce != cudaSuccess)
            return ss_fail(err, SS_ERR_UNSUPPORTED, "CUDA: GEMV launch for %s (%d x %d, %d rows) failed: %s", what,
                           m, k, n, cudaGetErrorString(ce));
        return SS_OK;
    }
    const bool direct = ep.mode == EPI_STORE && !ep.bias;
    if (!direct && (size_t)n * m > scratch.tmp_elems)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "CUDA: %s: %d x %d result exceeds the state's GEMM scratch", what,
                       n, m);
    const void *b = x;
    if (wt != SS_F32) {
        if ((size_t)n * k > scratch.xh_elems)
            return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "CUDA: %s: %d x %d input exceeds the state's GEMM scratch",
                           what, n, k);
        ce = launch_convert(scratch.xh, wt, x, (size_t)n * k, stream);
        if (ce != cudaSuccess)
            return ss_fail(err, SS_ERR_UNSUPPORTED, "CUDA: activation conversion for %s failed: %s", what,
                           cudaGetErrorString(ce));
        b = scratch.xh;
    }
    float *c = direct ? ep.out : scratch.tmp;
    const int ldc = direct ? ep.ldo : m;
    const float alpha = 1.0f, beta = 0.0f;
    /* Row-major out[n][m] = x[n][k] . W[m][k]^T is, column-major,
     * out^T (m x n) = op(W) (m x k) . x^T (k x n) with op = transpose. */
    const cublasStatus_t bs = cublasGemmEx(scratch.blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w, cuda_type(wt), k,
                                           b, cuda_type(wt), k, &beta, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "cuBLAS GemmEx for %s (%d x %d x %d) failed: %s", what, m, n, k,
                       cublasGetStatusString(bs));
    if (!direct) {
        ce = launch_epilogue(scratch.tmp, n, m, ep, stream);
        if (ce != cudaSuccess)
            return ss_fail(err, SS_ERR_UNSUPPORTED, "CUDA: epilogue of %s failed: %s", what, cudaGetErrorString(ce));
    }
    return SS_OK;
}

} // namespace ssc
