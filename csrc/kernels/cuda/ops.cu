/* Row-wise and element-wise kernels of the forward pass: embedding gather,
 * layernorm (one or two affine outputs from one set of statistics), rotary
 * embedding with the K/V store into the ring-buffer cache, and activation
 * conversion for the tensor-core GEMM path. Each mirrors its CPU counterpart
 * in csrc/kernels/cpu/ops.c and csrc/model/forward.c. */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/dtypes.cuh"

namespace ssc {

/* ------------------------------------------------------------ embedding */

template <typename W>
__global__ void embed_kernel(float *__restrict__ x, const W *__restrict__ table, const int32_t *__restrict__ tokens,
                             int d) {
    const int i = blockIdx.x;
    const W *row = table + (size_t)tokens[i] * d;
    float *out = x + (size_t)i * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) out[c] = to_f32(row[c]);
}

cudaError_t launch_embed(float *x, const void *table, ss_dtype wt, const int32_t *tokens, int n, int d,
                         cudaStream_t stream) {
    const int threads = 256;
    switch (wt) {
    case SS_F32: embed_kernel<float><<<n, threads, 0, stream>>>(x, (const float *)table, tokens, d); break;
    case SS_F16: embed_kernel<__half><<<n, threads, 0, stream>>>(x, (const __half *)table, tokens, d); break;
    case SS_BF16:
        embed_kernel<__nv_bfloat16><<<n, threads, 0, stream>>>(x, (const __nv_bfloat16 *)table, tokens, d);
        break;
    default: return cudaErrorInvalidValue; /* int8 tables stay on the CPU */
    }
    return cudaGetLastError();
}

/* ------------------------------------------------------------ layernorm */

constexpr int kLnThreads = 256;

/* Sum over the block, returned to every thread; red holds 32 doubles. */
__device__ double block_sum_d(double v, double *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum_d(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double r = lane < nwarps ? red[lane] : 0.0;
    r = warp_sum_d(r);
    __syncthreads(); /* red may be reused right after */
    return r;
}

/* Two passes in double, like the CPU (d is up to 5120 and the variance
 * subtracts the mean): y = (x - mean) * inv * w + b. */
__global__ void __launch_bounds__(kLnThreads)
    layernorm_kernel(float *__restrict__ y, float *__restrict__ y2, const float *__restrict__ x,
                     const float *__restrict__ w, const float *__restrict__ b, const float *__restrict__ w2,
                     const float *__restrict__ b2, int d, float eps) {
    __shared__ double red[32];
    const size_t row = blockIdx.x;
    const float *xr = x + row * d;
    double s = 0.0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += xr[i];
    const double mean = block_sum_d(s, red) / d;
    double var = 0.0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const double c = xr[i] - mean;
        var += c * c;
    }
    var = block_sum_d(var, red);
    const float inv = (float)(1.0 / sqrt(var / d + (double)eps)), m = (float)mean;
    float *yr = y + row * d;
    float *y2r = y2 ? y2 + row * d : nullptr;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float nrm = (xr[i] - m) * inv;
        yr[i] = nrm * w[i] + b[i];
        if (y2r) y2r[i] = nrm * w2[i] + b2[i];
    }
}

cudaError_t launch_layernorm(float *y, float *y2, const float *x, const float *w, const float *b,
                             const float *w2, const float *b2, int rows, int d, float eps,
                             cudaStream_t stream) {
    if (rows <= 0) return cudaSuccess;
    layernorm_kernel<<<rows, kLnThreads, 0, stream>>>(y, y2, x, w, b, w2, b2, d, eps);
    return cudaGetLastError();
}

/* ------------------------------------------------------ rotary + K/V store */

__device__ __forceinline__ size_t slot_of(long long t, const CacheGeom &g) {
    return t < g.n_sink ? (size_t)t : (size_t)(g.pinned + (t - g.n_sink) % g.ring);
}

/* GPT-NeoX "rotate half": dims e and e + half form a pair. The products are
 * rounded separately (no FMA contraction), as the CPU computes them. */
__device__ __forceinline__ float rotate(const float *v, int e, int half, const float *cs, const float *sn) {
    if (e < half) return __fsub_rn(__fmul_rn(v[e], cs[e]), __fmul_rn(v[e + half], sn[e]));
    const int p = e - half;
    return __fadd_rn(__fmul_rn(v[e], cs[p]), __fmul_rn(v[p], sn[p]));
}

/* One block per (token, head). The QKV output is laid out per head as
 * [q | k | v] (GPT-NeoX head-interleaved). */
__global__ void rotary_store_kernel(const float *__restrict__ qkv, float *__restrict__ qw, float *__restrict__ qp,
                                    float *__restrict__ kc, float *__restrict__ vc, const ss_view *__restrict__ views,
                                    const float *__restrict__ rot_cos, const float *__restrict__ rot_sin,
                                    const float *__restrict__ pin_cos, const float *__restrict__ pin_sin,
                                    int table_stride, CacheGeom g) {
    const int i = blockIdx.x, h = blockIdx.y, hd = g.head_dim, d = g.n_head * hd;
    const int half = g.rotary_dim / 2;
    const float *q = qkv + (size_t)i * 3 * d + (size_t)h * 3 * hd;
    const float *k = q + hd, *v = k + hd;
    const float *cs = rot_cos + (size_t)i * table_stride, *sn = rot_sin + (size_t)i * table_stride;
    const float *pcs = pin_cos + (size_t)i * table_stride, *psn = pin_sin + (size_t)i * table_stride;
    const size_t slot = slot_of(views[i].index, g);
    const size_t row = (((size_t)h) * g.slots + slot) * hd;
    float *qwo = qw + (size_t)i * d + (size_t)h * hd, *qpo = qp + (size_t)i * d + (size_t)h * hd;
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        if (e < g.rotary_dim) {
            qwo[e] = rotate(q, e, half, cs, sn);
            qpo[e] = rotate(q, e, half, pcs, psn);
            kc[row + e] = rotate(k, e, half, cs, sn);
        } else {
            qwo[e] = q[e];
            qpo[e] = q[e];
            kc[row + e] = k[e];
        }
        vc[row + e] = v[e];
    }
}

cudaError_t launch_rotary_store(const float *qkv, float *qw, float *qp, float *kc, float *vc,
                                const ss_view *views, const float *rot_cos, const float *rot_sin,
                                const float *pin_cos, const float *pin_sin, int table_stride, int n,
                                const CacheGeom &g, cudaStream_t stream) {
    const int threads = g.head_dim >= 128 ? 128 : (g.head_dim + 31) / 32 * 32;
    rotary_store_kernel<<<dim3(n, g.n_head), threads, 0, stream>>>(qkv, qw, qp, kc, vc, views, rot_cos, rot_sin,
                                                                    pin_cos, pin_sin, table_stride, g);
    return cudaGetLastError();
}

/* ------------------------------------------------------------ conversion */

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

template <typename T>
__global__ void convert_kernel(T *__restrict__ dst, const float *__restrict__ src, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_f32<T>(src[i]);
}

cudaError_t launch_convert(void *dst, ss_dtype dt, const float *src, size_t count, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    const int threads = 256;
    const size_t want = (count + threads - 1) / threads;
    const int blocks = (int)(want < 4096 ? want : 4096);
    switch (dt) {
    case SS_F32:
        return cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToDevice, stream);
    case SS_F16: convert_kernel<__half><<<blocks, threads, 0, stream>>>((__half *)dst, src, count); break;
    case SS_BF16:
        convert_kernel<__nv_bfloat16><<<blocks, threads, 0, stream>>>((__nv_bfloat16 *)dst, src, count);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

} // namespace ssc
