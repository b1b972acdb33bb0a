/* Internal declarations of the CUDA backend (C++/CUDA only).
 *
 * Layout of the work:
 *   backend.cu    entry points of model/backend.h: weights and states on the
 *                 GPU, the per-batch driver (ss_cuda_run_batch), errors
 *   ops.cu        embedding, layernorm (single, dual for the parallel
 *                 residual), rotary + K/V store, activation conversion,
 *                 the GEMM epilogue, the copy-bandwidth probe
 *   gemm.cu       weight products: a memory-bound multi-row GEMV for up to
 *                 8 rows (decode, verification), cuBLAS above that
 *   attention.cu  attention of new tokens over the ring-buffer cache,
 *                 split over the KV length (flash-decoding), one softmax
 *
 * Every launcher returns a cudaError_t / ss_status; nothing aborts. All math
 * follows the CPU backend (csrc/model/forward.c, csrc/kernels/cpu): f32
 * activations, f32 accumulation, the same operation order in residuals.
 */
#ifndef SS_CUDA_BACKEND_H
#define SS_CUDA_BACKEND_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "common.h"
#include "model/backend.h"
#include "model/model.h"
#include "model/state.h"
}

namespace ssc {

/* Rows up to which the custom GEMV kernel is used; cuBLAS above. */
constexpr int kGemvMaxRows = 8;
/* Largest head_dim the attention kernel holds in registers. */
constexpr int kMaxHeadDim = 256;
/* Batches up to this many tokens split attention over the KV length, by each
 * token's key count alone (bit-identical results for any such batch). */
constexpr int kAttSplitRows = kGemvMaxRows;
constexpr int kAttMaxSplits = 64;

/* ------------------------------------------------------------ GEMM */

enum EpilogueMode {
    EPI_STORE = 0,      /* out = acc + bias                                  */
    EPI_GELU_ERF = 1,   /* out = gelu_erf(acc + bias)                        */
    EPI_GELU_TANH = 2,  /* out = gelu_tanh(acc + bias)                       */
    EPI_RESIDUAL = 3    /* out = out + (add ? add + (acc + bias) : acc + bias) */
};

struct Epilogue {
    int mode;
    const float *bias; /* [m] or NULL                                        */
    float *out;        /* row i at out + i * ldo                              */
    int ldo;
    const float *add;  /* EPI_RESIDUAL only, same layout as out, or NULL     */
};

/* Per-state scratch that the cuBLAS path needs (n > kGemvMaxRows). */
struct GemmScratch {
    cublasHandle_t blas;
    float *tmp;        /* [rows][max m] f32                                   */
    void *xh;          /* [rows][max k] activations in the weight dtype       */
    size_t tmp_elems, xh_elems;
};

/* out-epilogue( x[n][k] . W[m][k]^T ). W in dtype wt on the device. Returns
 * SS_OK or an error naming `what`. */
ss_status gemm(const float *x, int n, int k, const void *w, ss_dtype wt, int m, const Epilogue &ep,
               const GemmScratch &scratch, int sm_count, cudaStream_t stream, const char *what,
               ss_error *err);

/* ------------------------------------------------------------ ops */

cudaError_t launch_embed(float *x, const void *table, ss_dtype wt, const int32_t *tokens, int n, int d,
                         cudaStream_t stream);
/* y = LN(x) * w + b for `rows` rows; when y2 != NULL also y2 = LN(x) * w2 + b2
 * (both layernorms of a parallel-residual layer read the same x). */
cudaError_t launch_layernorm(float *y, float *y2, const float *x, const float *w, const float *b,
                             const float *w2, const float *b2, int rows, int d, float eps,
                             cudaStream_t stream);

struct CacheGeom {
    int n_sink, pinned, ring, slots; /* as ss_kv_cache                       */
    int n_head, head_dim, rotary_dim;
};

/* Rotates q (at text position -> qw, at cache position -> qp) and k (text
 * position), stores k and v into the slot of each token's text position. */
cudaError_t launch_rotary_store(const float *qkv, float *qw, float *qp, float *kc, float *vc,
                                const ss_view *views, const float *rot_cos, const float *rot_sin,
                                const float *pin_cos, const float *pin_sin, int table_stride, int n,
                                const CacheGeom &g, cudaStream_t stream);

cudaError_t launch_convert(void *dst, ss_dtype dt, const float *src, size_t count, cudaStream_t stream);
cudaError_t launch_epilogue(const float *acc, int n, int m, const Epilogue &ep, cudaStream_t stream);

/* ------------------------------------------------------------ attention */

struct AttentionArgs {
    const float *qw, *qp;  /* [n][d] queries at text / cache position        */
    const float *k, *v;    /* this layer's cache: [head][slot][head_dim]     */
    const ss_view *views;  /* [n] (device)                                    */
    const int32_t *ancestor_slots; /* what views' n_anc entries index (device) */
    float *out;            /* [n][d]                                          */
    float *partials;       /* attention_partial_floats(); used when n <= kAttSplitRows */
    int n, d;
    int max_keys;          /* largest key count of the batch (host-known)     */
    CacheGeom g;
    float scale;
};

cudaError_t launch_attention(const AttentionArgs &a, cudaStream_t stream);
/* Floats of split partials a state needs: [kAttSplitRows][head][split][hd + 2]. */
size_t attention_partial_floats(int n_head, int head_dim);
/* Splits a batch of <= kAttSplitRows tokens launches for max_keys keys (the
 * attention grid's depth; 1..kAttMaxSplits). */
int splits_for_keys(int max_keys);

} // namespace ssc

#endif
