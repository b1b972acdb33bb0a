/* Attention of each new token over the keys its view shows (model/backend.h):
 * the pinned slots [0, n_pinned) scored with the query rotated at its cache
 * position, then the window run [lo, hi] of the ring (which may wrap once)
 * and a tree token's ancestors (slots listed in ancestor_slots), scored with
 * the query rotated at its text position. One softmax spans all of them, in
 * that order, as in csrc/kernels/cpu/attention.c.
 *
 * Flash-decoding: a block handles one (token, head, split); a split is a
 * contiguous range of the token's keys, walked in tiles of kAttTile keys with
 * an online softmax (running max and sum). When a token has several splits,
 * each writes (max, sum, unnormalised output) and a second kernel merges them.
 *
 * Batches of up to kAttSplitRows tokens (decode, speculative verification)
 * split each token's keys by its own key count alone (kAttKeysPerSplit keys
 * per split, at most kAttMaxSplits splits), never by the batch size: a token
 * gets bit-identical attention whether it is decoded alone or verified among
 * k+1, which greedy speculative decoding relies on (its output must equal
 * target-only decoding). Larger batches (prefill) fill the GPU with tokens x
 * heads and use one split per token. */
#include <math.h>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/dtypes.cuh"

namespace ssc {

constexpr int kAttThreads = 256;
constexpr int kAttWarps = kAttThreads / 32;
constexpr int kAttTile = 256;
constexpr int kAttKeysPerSplit = 128;

/* Splits of a token with `total` keys (batches of <= kAttSplitRows tokens). */
__host__ __device__ __forceinline__ int splits_for(int total) {
    const int sp = (total + kAttKeysPerSplit - 1) / kAttKeysPerSplit;
    return sp < 1 ? 1 : sp > kAttMaxSplits ? kAttMaxSplits : sp;
}

static_assert(kMaxHeadDim <= kAttThreads, "one thread per output dimension");

__device__ float block_max(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = lane < kAttWarps ? red[lane] : -INFINITY;
    r = warp_max(r);
    __syncthreads();
    return r;
}

__device__ float block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = lane < kAttWarps ? red[lane] : 0.0f;
    r = warp_sum(r);
    __syncthreads();
    return r;
}

/* HW = ceil(head_dim / 32): query values per lane, kept in registers. */
/* split_mode: 1 = per-token splits (splits_for), 0 = one split per token. */
template <int HW>
__global__ void __launch_bounds__(kAttThreads) attention_kernel(AttentionArgs a, int split_mode) {
    __shared__ float sp[kAttTile];   /* scores, then probabilities */
    __shared__ int sslot[kAttTile];  /* cache slot of each key of the tile */
    __shared__ float sacc[kAttThreads];
    __shared__ float red[32];
    const int i = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const CacheGeom &g = a.g;
    const int hd = g.head_dim;
    const ss_view view = a.views[i];
    const int n_pin = view.n_pinned;
    const long long win = view.hi - view.lo + 1 > 0 ? view.hi - view.lo + 1 : 0;
    const int total = n_pin + (int)win + view.n_anc;
    const int splits = split_mode ? splits_for(total) : 1;
    if (s >= splits) return; /* the grid covers the batch's largest count */
    const int per = (total + splits - 1) / splits;
    const int j0 = min(total, s * per), j1 = min(total, j0 + per);

    const size_t qoff = (size_t)i * a.d + (size_t)h * hd;
    float qw[HW], qp[HW];
#pragma unroll
    for (int r = 0; r < HW; r++) {
        const int e = lane + 32 * r;
        qw[r] = e < hd ? a.qw[qoff + e] : 0.0f;
        qp[r] = e < hd ? a.qp[qoff + e] : 0.0f;
    }
    const float *kh = a.k + (size_t)h * g.slots * hd;
    const float *vh = a.v + (size_t)h * g.slots * hd;
    /* ring offset of the window's first key (text position lo >= n_sink) */
    const int win_start = win > 0 ? (int)((view.lo - g.n_sink) % g.ring) : 0;
    /* value phase: thread (grp, e_own) sums keys grp, grp + kg, ... of dim e_own */
    const int kg = kAttThreads / hd, grp = tid / hd, e_own = tid - grp * hd;
    const bool active = grp < kg;

    float m_run = -INFINITY, l_run = 0.0f, acc = 0.0f;
    for (int t0 = j0; t0 < j1; t0 += kAttTile) {
        const int cnt = min(kAttTile, j1 - t0);
        for (int jj = tid; jj < cnt; jj += kAttThreads) {
            const int j = t0 + jj;
            int slot = j;
            if (j >= n_pin + win) {
                slot = a.ancestor_slots[view.anc_first + (j - n_pin - (int)win)];
            } else if (j >= n_pin) {
                int o = win_start + (j - n_pin);
                if (o >= g.ring) o -= g.ring;
                slot = g.pinned + o;
            }
            sslot[jj] = slot;
        }
        __syncthreads();
        for (int jj = warp; jj < cnt; jj += kAttWarps) {
            const float *kr = kh + (size_t)sslot[jj] * hd;
            const bool pinned = t0 + jj < n_pin;
            float dot = 0.0f;
#pragma unroll
            for (int r = 0; r < HW; r++) {
                const int e = lane + 32 * r;
                if (e < hd) dot = fmaf(pinned ? qp[r] : qw[r], kr[e], dot);
            }
            dot = warp_sum(dot);
            if (lane == 0) sp[jj] = dot * a.scale;
        }
        __syncthreads();
        float mx = -INFINITY;
        for (int jj = tid; jj < cnt; jj += kAttThreads) mx = fmaxf(mx, sp[jj]);
        mx = block_max(mx, red);
        const float m_new = fmaxf(m_run, mx);
        const float corr = m_run == -INFINITY ? 0.0f : expf(m_run - m_new);
        float ls = 0.0f;
        for (int jj = tid; jj < cnt; jj += kAttThreads) {
            const float p = expf(sp[jj] - m_new);
            sp[jj] = p;
            ls += p;
        }
        ls = block_sum(ls, red); /* its barrier also publishes sp */
        l_run = l_run * corr + ls;
        m_run = m_new;
        if (active) {
            float av = acc * corr;
            for (int jj = grp; jj < cnt; jj += kg) av = fmaf(sp[jj], vh[(size_t)sslot[jj] * hd + e_own], av);
            acc = av;
        }
        __syncthreads(); /* sp and sslot are rewritten by the next tile */
    }
    if (active) sacc[tid] = acc;
    __syncthreads();
    if (tid < hd) {
        float o = 0.0f;
        for (int gg = 0; gg < kg; gg++) o += sacc[gg * hd + tid];
        if (splits == 1) {
            a.out[qoff + tid] = l_run > 0.0f ? o / l_run : 0.0f;
        } else {
            float *p = a.partials + (((size_t)i * g.n_head + h) * kAttMaxSplits + s) * (hd + 2);
            if (tid == 0) {
                p[0] = m_run;
                p[1] = l_run;
            }
            p[2 + tid] = o;
        }
    }
}

/* Merges the splits of one (token, head): o = sum_s e^(m_s - M) o_s / L.
 * Tokens with a single split were written by attention_kernel directly. */
__global__ void attention_combine_kernel(AttentionArgs a) {
    const int i = blockIdx.x, h = blockIdx.y, hd = a.g.head_dim;
    const int splits = splits_for(ss_view_keys(&a.views[i]));
    if (splits == 1) return;
    const float *p = a.partials + ((size_t)i * a.g.n_head + h) * kAttMaxSplits * (hd + 2);
    float M = -INFINITY;
    for (int s = 0; s < splits; s++)
        if (p[(size_t)s * (hd + 2) + 1] > 0.0f) M = fmaxf(M, p[(size_t)s * (hd + 2)]);
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float L = 0.0f, o = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float *ps = p + (size_t)s * (hd + 2);
            if (ps[1] > 0.0f) {
                const float f = expf(ps[0] - M);
                L += ps[1] * f;
                o += ps[2 + e] * f;
            }
        }
        a.out[(size_t)i * a.d + (size_t)h * hd + e] = L > 0.0f ? o / L : 0.0f;
    }
}

cudaError_t launch_attention(const AttentionArgs &a, cudaStream_t stream) {
    const int hd = a.g.head_dim;
    if (a.n <= 0) return cudaSuccess;
    if (hd < 1 || hd > kMaxHeadDim) return cudaErrorInvalidValue;
    const int split_mode = a.n <= kAttSplitRows;
    const int splits = split_mode ? splits_for(a.max_keys) : 1;
    if (split_mode && a.partials == nullptr) return cudaErrorInvalidValue;
    const dim3 grid(a.n, a.g.n_head, splits);
    switch ((hd + 31) / 32) {
    case 1: attention_kernel<1><<<grid, kAttThreads, 0, stream>>>(a, split_mode); break;
    case 2: attention_kernel<2><<<grid, kAttThreads, 0, stream>>>(a, split_mode); break;
    case 3: attention_kernel<3><<<grid, kAttThreads, 0, stream>>>(a, split_mode); break;
    case 4: attention_kernel<4><<<grid, kAttThreads, 0, stream>>>(a, split_mode); break;
    case 5: attention_kernel<5><<<grid, kAttThreads, 0, stream>>>(a, split_mode); break;
    case 6: attention_kernel<6><<<grid, kAttThreads, 0, stream>>>(a, split_mode); break;
    case 7: attention_kernel<7><<<grid, kAttThreads, 0, stream>>>(a, split_mode); break;
    default: attention_kernel<8><<<grid, kAttThreads, 0, stream>>>(a, split_mode); break;
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || splits == 1) return e;
    const int threads = hd >= 128 ? 128 : (hd + 31) / 32 * 32;
    attention_combine_kernel<<<dim3(a.n, a.g.n_head), threads, 0, stream>>>(a);
    return cudaGetLastError();
}

int splits_for_keys(int max_keys) { return splits_for(max_keys); }

size_t attention_partial_floats(int n_head, int head_dim) {
    return (size_t)kAttSplitRows * n_head * kAttMaxSplits * (size_t)(head_dim + 2);
}

} // namespace ssc
