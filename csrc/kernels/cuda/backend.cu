/* The CUDA backend behind model/backend.h: the model's weights and each
 * state's KV cache and scratch live on the GPU; ss_cuda_run_batch runs one
 * batch of new tokens (views and rotary tables prepared on the host by
 * csrc/model/forward.c) through embedding, every layer and the unembedding.
 *
 * Per layer, for n new tokens (kernels in brackets):
 *   [layernorm]      h = LN1(x)   (parallel residual: h2 = LN2(x) in the same pass)
 *   [gemm]           qkv = h . Wqkv^T + b
 *   [rotary_store]   q at text position -> qw, q at cache position -> qp,
 *                    k at text position and v -> the slot of the token's position
 *   [attention(+combine)]  attn over the pinned slots (qp) and the window run (qw)
 *   [gemm]           parallel: proj = attn . Wo^T + bo
 *                    sequential: x += attn . Wo^T + bo, then [layernorm] h2 = LN2(x)
 *   [gemm+GELU]      ff = gelu(h2 . W1^T + b1)
 *   [gemm+residual]  x += proj + (ff . W2^T + b2)   (sequential: x += ff . W2^T + b2)
 * then LN_f and the unembedding of the last n_out rows, copied to the host.
 *
 * Inputs go up in one copy from a pinned staging buffer; the call ends with a
 * stream synchronisation, so errors surface in the call that caused them and
 * the staging buffer is free for the next call. Nothing aborts: every CUDA
 * and cuBLAS status becomes an ss_status with a message.
 *
 * SPECSTREAM_CUDA_GRAPHS=1 (read when a state is created) captures the
 * one-token step (upload, ~8 kernels per layer, logits download) as a CUDA
 * graph per (logits wanted, attention split count) and replays it: one
 * launch per token instead of hundreds, the same kernels and arguments, so
 * the same bits. Any capture failure falls back to eager launches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_api.h"
#include "kernels/cuda/cuda_backend.h"

using namespace ssc;

namespace {

struct DevLayer {
    const void *qkv_w, *out_w, *fc1_w, *fc2_w; /* stored as the model's wtype */
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    const float *qkv_b, *out_b, *fc1_b, *fc2_b;
};

struct DevModel {
    int device, sm_count;
    ss_dtype etype; /* embed_in's storage (the model's etype) */
    void *arena; /* every weight, one allocation */
    size_t arena_bytes;
    DevLayer *layers;
    const void *embed_in, *embed_out;
    const float *final_ln_w, *final_ln_b;
};

struct DevState {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *arena; /* cache and scratch, one allocation */
    size_t arena_bytes;
    float *k, *v; /* [layer][head][slot][head_dim], the host cache's geometry */
    float *x, *h, *h2, *qkv, *qw, *qp, *attn, *proj, *ff, *logits, *partials;
    int logit_rows;
    GemmScratch gs;
    void *up_dev, *up_host; /* staging of tokens, views, rotary tables */
    size_t up_bytes;
    /* CUDA graphs of the one-token step (SPECSTREAM_CUDA_GRAPHS=1), one per
     * (logits wanted, attention splits): everything else a replay reads is
     * at fixed device addresses. */
    int use_graphs;
    cudaGraphExec_t graphs[2][kAttMaxSplits];
    float *logits_host; /* pinned: a graph copies the logits row here */
};

/* Offsets into one allocation, each 256-byte aligned. */
struct Carver {
    size_t off = 0;
    size_t take(size_t bytes) {
        const size_t o = off;
        off += (bytes + 255) & ~(size_t)255;
        return o;
    }
};

size_t align16(size_t v) { return (v + 15) & ~(size_t)15; }

ss_status cuda_fail(ss_error *err, cudaError_t e, const char *what) {
    const ss_status st = e == cudaErrorMemoryAllocation ? SS_ERR_NO_MEMORY : SS_ERR_UNSUPPORTED;
    return ss_fail(err, st, "CUDA error in %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

#define SS_CUDA_TRY(call, what)                                 \
    do {                                                        \
        const cudaError_t e_ = (call);                          \
        if (e_ != cudaSuccess) return cuda_fail(err, e_, what); \
    } while (0)

#define SS_TRY(call)                       \
    do {                                   \
        const ss_status st_ = (call);      \
        if (st_ != SS_OK) return st_;      \
    } while (0)

/* ---------------------------------------------------------------- model */

void free_model(DevModel *dm) {
    if (!dm) return;
    if (dm->arena) {
        cudaSetDevice(dm->device);
        cudaFree(dm->arena);
    }
    free(dm->layers);
    free(dm);
}

ss_status upload(void *dst, const void *src, size_t bytes, const char *name, ss_error *err) {
    const cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "CUDA error uploading %s (%zu bytes): %s", name, bytes,
                       cudaGetErrorString(e));
    return SS_OK;
}

ss_status model_init(ss_model *m, DevModel *dm, ss_error *err) {
    const ss_model_config *c = &m->cfg;
    const size_t d = (size_t)c->d_model, ff = (size_t)c->d_ff, V = (size_t)c->vocab_rows;
    const size_t es = m->wtype == SS_F32 ? 4 : 2, fs = sizeof(float);
    const size_t ees = m->etype == SS_F32 ? 4 : 2; /* embed_in keeps its own dtype */
    dm->etype = m->etype;
    SS_CUDA_TRY(cudaGetDevice(&dm->device), "cudaGetDevice");
    SS_CUDA_TRY(cudaDeviceGetAttribute(&dm->sm_count, cudaDevAttrMultiProcessorCount, dm->device),
                "cudaDeviceGetAttribute");
    dm->layers = (DevLayer *)calloc((size_t)c->n_layer, sizeof(DevLayer));
    if (!dm->layers) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the GPU layer table");

    /* Pass 1: offsets. Pass 2: pointers and copies. */
    Carver cv;
    const size_t o_ein = cv.take(V * d * ees), o_eout = cv.take(V * d * es);
    const size_t o_lnfw = cv.take(d * fs), o_lnfb = cv.take(d * fs);
    struct LayerOff {
        size_t qkv_w, out_w, fc1_w, fc2_w, ln1_w, ln1_b, ln2_w, ln2_b, qkv_b, out_b, fc1_b, fc2_b;
    };
    LayerOff *lo = (LayerOff *)calloc((size_t)c->n_layer, sizeof(LayerOff));
    if (!lo) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the GPU layer table");
    for (int l = 0; l < c->n_layer; l++) {
        LayerOff &o = lo[l];
        o.qkv_w = cv.take(3 * d * d * es);
        o.out_w = cv.take(d * d * es);
        o.fc1_w = cv.take(ff * d * es);
        o.fc2_w = cv.take(d * ff * es);
        o.ln1_w = cv.take(d * fs);
        o.ln1_b = cv.take(d * fs);
        o.ln2_w = cv.take(d * fs);
        o.ln2_b = cv.take(d * fs);
        o.qkv_b = cv.take(3 * d * fs);
        o.out_b = cv.take(d * fs);
        o.fc1_b = cv.take(ff * fs);
        o.fc2_b = cv.take(d * fs);
    }
    dm->arena_bytes = cv.off;
    cudaError_t e = cudaMalloc(&dm->arena, dm->arena_bytes);
    if (e != cudaSuccess) {
        dm->arena = nullptr;
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        free(lo);
        return ss_fail(err, e == cudaErrorMemoryAllocation ? SS_ERR_NO_MEMORY : SS_ERR_UNSUPPORTED,
                       "cannot allocate %.1f MiB of weights on the GPU (%.1f MiB free of %.1f MiB): %s",
                       dm->arena_bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0, cudaGetErrorString(e));
    }
    char *base = (char *)dm->arena;
    ss_status st = SS_OK;
#define UP(off, src, bytes, name)                                             \
    do {                                                                      \
        if (st == SS_OK) st = upload(base + (off), (src), (bytes), (name), err); \
    } while (0)
    UP(o_ein, m->embed_in, V * d * ees, "gpt_neox.embed_in.weight");
    UP(o_eout, m->embed_out, V * d * es, "embed_out.weight");
    UP(o_lnfw, m->final_ln_w, d * fs, "gpt_neox.final_layer_norm.weight");
    UP(o_lnfb, m->final_ln_b, d * fs, "gpt_neox.final_layer_norm.bias");
    dm->embed_in = base + o_ein;
    dm->embed_out = base + o_eout;
    dm->final_ln_w = (const float *)(base + o_lnfw);
    dm->final_ln_b = (const float *)(base + o_lnfb);
    for (int l = 0; l < c->n_layer && st == SS_OK; l++) {
        const ss_layer *L = &m->layers[l];
        const LayerOff &o = lo[l];
        DevLayer &D = dm->layers[l];
        UP(o.qkv_w, L->qkv_w, 3 * d * d * es, "attention.query_key_value.weight");
        UP(o.out_w, L->out_w, d * d * es, "attention.dense.weight");
        UP(o.fc1_w, L->fc1_w, ff * d * es, "mlp.dense_h_to_4h.weight");
        UP(o.fc2_w, L->fc2_w, d * ff * es, "mlp.dense_4h_to_h.weight");
        UP(o.ln1_w, L->ln1_w, d * fs, "input_layernorm.weight");
        UP(o.ln1_b, L->ln1_b, d * fs, "input_layernorm.bias");
        UP(o.ln2_w, L->ln2_w, d * fs, "post_attention_layernorm.weight");
        UP(o.ln2_b, L->ln2_b, d * fs, "post_attention_layernorm.bias");
        UP(o.qkv_b, L->qkv_b, 3 * d * fs, "attention.query_key_value.bias");
        UP(o.out_b, L->out_b, d * fs, "attention.dense.bias");
        UP(o.fc1_b, L->fc1_b, ff * fs, "mlp.dense_h_to_4h.bias");
        UP(o.fc2_b, L->fc2_b, d * fs, "mlp.dense_4h_to_h.bias");
        D.qkv_w = base + o.qkv_w;
        D.out_w = base + o.out_w;
        D.fc1_w = base + o.fc1_w;
        D.fc2_w = base + o.fc2_w;
        D.ln1_w = (const float *)(base + o.ln1_w);
        D.ln1_b = (const float *)(base + o.ln1_b);
        D.ln2_w = (const float *)(base + o.ln2_w);
        D.ln2_b = (const float *)(base + o.ln2_b);
        D.qkv_b = (const float *)(base + o.qkv_b);
        D.out_b = (const float *)(base + o.out_b);
        D.fc1_b = (const float *)(base + o.fc1_b);
        D.fc2_b = (const float *)(base + o.fc2_b);
    }
#undef UP
    free(lo);
    return st;
}

/* ---------------------------------------------------------------- state */

void free_state(DevState *ds) {
    if (!ds) return;
    cudaSetDevice(ds->device);
    if (ds->stream) cudaStreamSynchronize(ds->stream);
    for (int w = 0; w < 2; w++)
        for (int sp = 0; sp < kAttMaxSplits; sp++)
            if (ds->graphs[w][sp]) cudaGraphExecDestroy(ds->graphs[w][sp]);
    if (ds->logits_host) cudaFreeHost(ds->logits_host);
    if (ds->blas) cublasDestroy(ds->blas);
    if (ds->stream) cudaStreamDestroy(ds->stream);
    if (ds->arena) cudaFree(ds->arena);
    if (ds->up_host) cudaFreeHost(ds->up_host);
    free(ds);
}

ss_status state_init(ss_state *s, const DevModel *dm, DevState *ds, ss_error *err) {
    const ss_model *m = s->model;
    const ss_model_config *c = &m->cfg;
    const ss_kv_cache *kv = &s->cache;
    const size_t B = (size_t)s->batch, d = (size_t)c->d_model, ff = (size_t)c->d_ff, V = (size_t)c->vocab_rows;
    const size_t hd = (size_t)m->head_dim, fs = sizeof(float);
    const size_t stride = (size_t)c->rotary_dim / 2 + 1;
    ds->device = dm->device;
    SS_CUDA_TRY(cudaSetDevice(ds->device), "cudaSetDevice");
    SS_CUDA_TRY(cudaStreamCreateWithFlags(&ds->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    const cublasStatus_t bs = cublasCreate(&ds->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        ds->blas = nullptr;
        return ss_fail(err, SS_ERR_UNSUPPORTED, "cuBLAS initialisation failed: %s", cublasGetStatusString(bs));
    }
    if (cublasSetStream(ds->blas, ds->stream) != CUBLAS_STATUS_SUCCESS)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "cublasSetStream failed");

    const size_t kv_elems = (size_t)kv->n_layer * kv->n_head * (size_t)kv->slots * kv->head_dim;
    ds->logit_rows = (int)(B < 64 ? B : 64);
    const bool blas_path = B > (size_t)kGemvMaxRows;
    size_t max_m = 3 * d > ff ? 3 * d : ff, max_k = d > ff ? d : ff;
    ds->gs.tmp_elems = blas_path ? B * max_m : 0;
    ds->gs.xh_elems = blas_path && m->wtype != SS_F32 ? B * max_k : 0;

    Carver cv;
    const size_t o_k = cv.take(kv_elems * fs), o_v = cv.take(kv_elems * fs);
    const size_t o_x = cv.take(B * d * fs), o_h = cv.take(B * d * fs), o_h2 = cv.take(B * d * fs);
    const size_t o_qkv = cv.take(B * 3 * d * fs), o_qw = cv.take(B * d * fs), o_qp = cv.take(B * d * fs);
    const size_t o_attn = cv.take(B * d * fs), o_proj = cv.take(B * d * fs), o_ff = cv.take(B * ff * fs);
    const size_t o_logits = cv.take((size_t)ds->logit_rows * V * fs);
    const size_t o_part = cv.take(attention_partial_floats(c->n_head, (int)hd) * fs);
    const size_t o_tmp = cv.take(ds->gs.tmp_elems * fs), o_xh = cv.take(ds->gs.xh_elems * 2);
    ds->up_bytes = align16(B * sizeof(int32_t)) + align16(B * sizeof(ss_view)) + 4 * align16(B * stride * fs) +
                   align16(ss_ancestor_capacity(s->max_pending) * sizeof(int32_t));
    const size_t o_up = cv.take(ds->up_bytes);
    ds->arena_bytes = cv.off;
    cudaError_t e = cudaMalloc(&ds->arena, ds->arena_bytes);
    if (e != cudaSuccess) {
        ds->arena = nullptr;
        cudaGetLastError();
        return ss_fail(err, e == cudaErrorMemoryAllocation ? SS_ERR_NO_MEMORY : SS_ERR_UNSUPPORTED,
                       "cannot allocate %.1f MiB on the GPU for a KV cache of %d slots and a batch of %d: %s",
                       ds->arena_bytes / 1048576.0, kv->slots, s->batch, cudaGetErrorString(e));
    }
    /* Zeroed like the host cache: no slot is ever read before it is written,
     * but stale NaNs must not be able to leak through a 0 * x. */
    SS_CUDA_TRY(cudaMemsetAsync(ds->arena, 0, ds->arena_bytes, ds->stream), "cudaMemset");
    e = cudaHostAlloc(&ds->up_host, ds->up_bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        ds->up_host = nullptr;
        cudaGetLastError();
        return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate %zu bytes of pinned host memory: %s", ds->up_bytes,
                       cudaGetErrorString(e));
    }
    const char *graphs = getenv("SPECSTREAM_CUDA_GRAPHS");
    ds->use_graphs = graphs && graphs[0] && strcmp(graphs, "0") != 0;
    if (ds->use_graphs) {
        e = cudaHostAlloc((void **)&ds->logits_host, V * fs, cudaHostAllocDefault);
        if (e != cudaSuccess) { /* graphs are an optimisation: run without them */
            ds->logits_host = nullptr;
            ds->use_graphs = 0;
            cudaGetLastError();
        }
    }
    char *base = (char *)ds->arena;
    ds->k = (float *)(base + o_k);
    ds->v = (float *)(base + o_v);
    ds->x = (float *)(base + o_x);
    ds->h = (float *)(base + o_h);
    ds->h2 = (float *)(base + o_h2);
    ds->qkv = (float *)(base + o_qkv);
    ds->qw = (float *)(base + o_qw);
    ds->qp = (float *)(base + o_qp);
    ds->attn = (float *)(base + o_attn);
    ds->proj = (float *)(base + o_proj);
    ds->ff = (float *)(base + o_ff);
    ds->logits = (float *)(base + o_logits);
    ds->partials = (float *)(base + o_part);
    ds->gs.blas = ds->blas;
    ds->gs.tmp = ds->gs.tmp_elems ? (float *)(base + o_tmp) : nullptr;
    ds->gs.xh = ds->gs.xh_elems ? (void *)(base + o_xh) : nullptr;
    ds->up_dev = base + o_up;
    SS_CUDA_TRY(cudaStreamSynchronize(ds->stream), "state initialisation");
    return SS_OK;
}

/* ---------------------------------------------------------------- batch */

/* Where a batch's inputs sit in the staging buffers (same offsets on the
 * host and the device side). */
struct Staging {
    size_t o_tok, o_view, o_rc, o_rs, o_pc, o_ps, o_anc, bytes;
    Staging(int n, int stride, int n_ancestors) {
        const size_t tab = (size_t)n * stride * sizeof(float);
        o_tok = 0;
        o_view = align16((size_t)n * sizeof(int32_t));
        o_rc = o_view + align16((size_t)n * sizeof(ss_view));
        o_rs = o_rc + align16(tab);
        o_pc = o_rs + align16(tab);
        o_ps = o_pc + align16(tab);
        o_anc = o_ps + align16(tab);
        bytes = o_anc + (size_t)n_ancestors * sizeof(int32_t);
    }
};

/* Ancestor slots a batch's views list (0 along a chain). */
int ancestors_of(const ss_state *s, int n) {
    int total = 0;
    for (int i = 0; i < n; i++) total += s->views[i].n_anc;
    return total;
}

/* Host side of a batch: tokens, views and rotary tables into pinned memory;
 * returns the largest key count of the batch. */
int stage_inputs(const ss_state *s, DevState *ds, const int32_t *tokens, int n, const Staging &sg) {
    const size_t tab = (size_t)n * (s->model->cfg.rotary_dim / 2 + 1) * sizeof(float);
    char *hp = (char *)ds->up_host;
    memcpy(hp + sg.o_tok, tokens, (size_t)n * sizeof(int32_t));
    memcpy(hp + sg.o_view, s->views, (size_t)n * sizeof(ss_view));
    memcpy(hp + sg.o_rc, s->rot_cos, tab);
    memcpy(hp + sg.o_rs, s->rot_sin, tab);
    memcpy(hp + sg.o_pc, s->pin_cos, tab);
    memcpy(hp + sg.o_ps, s->pin_sin, tab);
    memcpy(hp + sg.o_anc, s->ancestor_slots, sg.bytes - sg.o_anc);
    int max_keys = 1;
    for (int i = 0; i < n; i++) {
        const int keys = ss_view_keys(&s->views[i]);
        if (keys > max_keys) max_keys = keys;
    }
    return max_keys;
}

/* Enqueues a whole batch on the state's stream (no synchronisation, so that
 * it can also be captured into a graph): the input upload, every kernel and
 * the copy of the last n_out rows of logits and of final hidden states to
 * `logits` / `hidden` (host memory; each may be NULL). */
ss_status enqueue_batch(const ss_model *m, const ss_state *s, const DevModel *dm, DevState *ds, int n,
                        int max_keys, const Staging &sg, float *logits, float *hidden, int n_out, ss_error *err) {
    const ss_model_config *c = &m->cfg;
    const ss_kv_cache *kv = &s->cache;
    const int d = c->d_model, ff = c->d_ff, V = c->vocab_rows, hd = m->head_dim;
    const int stride = c->rotary_dim / 2 + 1;
    const ss_dtype wt = m->wtype;
    cudaStream_t st = ds->stream;

    char *dp = (char *)ds->up_dev;
    SS_CUDA_TRY(cudaMemcpyAsync(dp, ds->up_host, sg.bytes, cudaMemcpyHostToDevice, st), "the input upload");
    const int32_t *d_tok = (const int32_t *)(dp + sg.o_tok);
    const ss_view *d_views = (const ss_view *)(dp + sg.o_view);
    const float *d_rc = (const float *)(dp + sg.o_rc), *d_rs = (const float *)(dp + sg.o_rs);
    const float *d_pc = (const float *)(dp + sg.o_pc), *d_ps = (const float *)(dp + sg.o_ps);
    const int32_t *d_anc = (const int32_t *)(dp + sg.o_anc);

    const CacheGeom g = {kv->n_sink, kv->n_sink, kv->ring, kv->slots, c->n_head, hd, c->rotary_dim};
    const size_t layer_kv = (size_t)c->n_head * kv->slots * hd;
    const float eps = c->layer_norm_eps;
    const int par = c->parallel_residual;

    SS_CUDA_TRY(launch_embed(ds->x, dm->embed_in, dm->etype, d_tok, n, d, st), "the embedding");
    for (int l = 0; l < c->n_layer; l++) {
        const DevLayer &L = dm->layers[l];
        SS_CUDA_TRY(launch_layernorm(ds->h, par ? ds->h2 : nullptr, ds->x, L.ln1_w, L.ln1_b, L.ln2_w, L.ln2_b, n, d,
                                     eps, st),
                    "layernorm");
        SS_TRY(gemm(ds->h, n, d, L.qkv_w, wt, 3 * d, Epilogue{EPI_STORE, L.qkv_b, ds->qkv, 3 * d, nullptr}, ds->gs,
                    dm->sm_count, st, "attention.query_key_value", err));
        float *kc = ds->k + (size_t)l * layer_kv, *vc = ds->v + (size_t)l * layer_kv;
        SS_CUDA_TRY(launch_rotary_store(ds->qkv, ds->qw, ds->qp, kc, vc, d_views, d_rc, d_rs, d_pc, d_ps, stride, n, g,
                                        st),
                    "rotary/KV store");
        AttentionArgs a;
        a.qw = ds->qw;
        a.qp = ds->qp;
        a.k = kc;
        a.v = vc;
        a.views = d_views;
        a.ancestor_slots = d_anc;
        a.out = ds->attn;
        a.partials = ds->partials;
        a.n = n;
        a.d = d;
        a.max_keys = max_keys;
        a.g = g;
        a.scale = 1.0f / sqrtf((float)hd);
        SS_CUDA_TRY(launch_attention(a, st), "attention");
        if (par) {
            SS_TRY(gemm(ds->attn, n, d, L.out_w, wt, d, Epilogue{EPI_STORE, L.out_b, ds->proj, d, nullptr}, ds->gs,
                        dm->sm_count, st, "attention.dense", err));
        } else {
            SS_TRY(gemm(ds->attn, n, d, L.out_w, wt, d, Epilogue{EPI_RESIDUAL, L.out_b, ds->x, d, nullptr}, ds->gs,
                        dm->sm_count, st, "attention.dense", err));
            SS_CUDA_TRY(launch_layernorm(ds->h2, nullptr, ds->x, L.ln2_w, L.ln2_b, nullptr, nullptr, n, d, eps, st),
                        "layernorm");
        }
        SS_TRY(gemm(ds->h2, n, d, L.fc1_w, wt, ff,
                    Epilogue{c->gelu_tanh ? EPI_GELU_TANH : EPI_GELU_ERF, L.fc1_b, ds->ff, ff, nullptr}, ds->gs,
                    dm->sm_count, st, "mlp.dense_h_to_4h", err));
        SS_TRY(gemm(ds->ff, n, ff, L.fc2_w, wt, d, Epilogue{EPI_RESIDUAL, L.fc2_b, ds->x, d, par ? ds->proj : nullptr},
                    ds->gs, dm->sm_count, st, "mlp.dense_4h_to_h", err));
    }
    if ((logits || hidden) && n_out > 0) {
        const int first = n - n_out;
        for (int r0 = 0; r0 < n_out; r0 += ds->logit_rows) {
            const int rows = n_out - r0 < ds->logit_rows ? n_out - r0 : ds->logit_rows;
            SS_CUDA_TRY(launch_layernorm(ds->h, nullptr, ds->x + (size_t)(first + r0) * d, dm->final_ln_w,
                                         dm->final_ln_b, nullptr, nullptr, rows, d, eps, st),
                        "final layernorm");
            if (hidden)
                SS_CUDA_TRY(cudaMemcpyAsync(hidden + (size_t)r0 * d, ds->h, (size_t)rows * d * sizeof(float),
                                            cudaMemcpyDeviceToHost, st),
                            "the hidden states download");
            if (!logits) continue;
            SS_TRY(gemm(ds->h, rows, d, dm->embed_out, wt, V, Epilogue{EPI_STORE, nullptr, ds->logits, V, nullptr},
                        ds->gs, dm->sm_count, st, "embed_out", err));
            SS_CUDA_TRY(cudaMemcpyAsync(logits + (size_t)r0 * V, ds->logits, (size_t)rows * V * sizeof(float),
                                        cudaMemcpyDeviceToHost, st),
                        "the logits download");
        }
    }
    return SS_OK;
}

/* The one-token step as a CUDA graph: captured on first use for its
 * (logits wanted, splits) key, then replayed with one launch. Returns
 * false when capture is not possible; the caller then runs eagerly. */
bool run_graph(const ss_model *m, const ss_state *s, const DevModel *dm, DevState *ds, int max_keys,
               const Staging &sg, float *logits, int n_out, ss_status *status, ss_error *err) {
    const int want = logits && n_out > 0;
    const int sp = splits_for_keys(max_keys) - 1;
    cudaGraphExec_t &exec = ds->graphs[want][sp];
    cudaStream_t st = ds->stream;
    if (!exec) {
        cudaGraph_t graph = nullptr;
        if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
            cudaGetLastError();
            return false;
        }
        ss_error cap_err = {{0}};
        const ss_status cst = enqueue_batch(m, s, dm, ds, 1, max_keys, sg, want ? ds->logits_host : nullptr,
                                            nullptr, want ? 1 : 0, &cap_err);
        const cudaError_t ce = cudaStreamEndCapture(st, &graph);
        cudaError_t ie = cudaErrorUnknown;
        if (cst == SS_OK && ce == cudaSuccess && graph) ie = cudaGraphInstantiate(&exec, graph, 0);
        if (graph) cudaGraphDestroy(graph);
        if (ie != cudaSuccess) {
            exec = nullptr;
            cudaGetLastError();
            return false;
        }
    }
    const cudaError_t e = cudaGraphLaunch(exec, st);
    if (e != cudaSuccess) {
        *status = cuda_fail(err, e, "the CUDA graph launch");
        return true;
    }
    const cudaError_t se = cudaStreamSynchronize(st);
    if (se != cudaSuccess) {
        *status = cuda_fail(err, se, "the forward pass (CUDA graph)");
        return true;
    }
    if (want) memcpy(logits, ds->logits_host, (size_t)m->cfg.vocab_rows * sizeof(float));
    *status = SS_OK;
    return true;
}

ss_status run_batch(const ss_model *m, ss_state *s, const DevModel *dm, DevState *ds, const int32_t *tokens,
                    int n, float *logits, float *hidden, int n_out, ss_error *err) {
    const Staging sg(n, m->cfg.rotary_dim / 2 + 1, ancestors_of(s, n));
    const int max_keys = stage_inputs(s, ds, tokens, n, sg);
    if (ds->use_graphs && n == 1 && !hidden) { /* the captured step returns logits only */
        ss_status st = SS_OK;
        if (run_graph(m, s, dm, ds, max_keys, sg, logits, n_out, &st, err)) return st;
        ds->use_graphs = 0; /* capture failed: stay eager from now on */
    }
    SS_TRY(enqueue_batch(m, s, dm, ds, n, max_keys, sg, logits, hidden, n_out, err));
    SS_CUDA_TRY(cudaStreamSynchronize(ds->stream), "the forward pass");
    return SS_OK;
}

} // namespace

/* ------------------------------------------------------- backend.h hooks */

extern "C" int ss_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: clear, report none */
        return 0;
    }
    return n;
}

extern "C" ss_status ss_cuda_model_init(ss_model *m, ss_error *err) {
    if (!m) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "model is NULL");
    if (m->cuda) return SS_OK;
    if (m->head_dim > kMaxHeadDim)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "the CUDA backend supports head_dim up to %d, the model has %d",
                       kMaxHeadDim, m->head_dim);
    if (m->wtype == SS_I8)
        return ss_fail(err, SS_ERR_UNSUPPORTED,
                       "int8 weights run on the CPU backend only; load the model as f16 or bf16 for the GPU");
    const bool float_type = m->wtype == SS_F32 || m->wtype == SS_F16 || m->wtype == SS_BF16;
    const bool float_embed = m->etype == SS_F32 || m->etype == SS_F16 || m->etype == SS_BF16;
    if (!float_type || !float_embed)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "weight dtype %d (embedding %d) has no CUDA kernels", (int)m->wtype,
                       (int)m->etype);
    if (ss_cuda_device_count() < 1)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "no CUDA GPU is available (no device or no driver)");
    DevModel *dm = (DevModel *)calloc(1, sizeof(DevModel));
    if (!dm) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the GPU model");
    const ss_status st = model_init(m, dm, err);
    if (st != SS_OK) {
        free_model(dm);
        return st;
    }
    m->cuda = dm;
    return SS_OK;
}

extern "C" void ss_cuda_model_release(ss_model *m) {
    if (!m || !m->cuda) return;
    free_model((DevModel *)m->cuda);
    m->cuda = nullptr;
}

extern "C" ss_status ss_cuda_state_init(ss_state *s, ss_error *err) {
    if (!s || !s->model) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "state is NULL");
    const DevModel *dm = (const DevModel *)s->model->cuda;
    if (!dm) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "the model's weights are not on the GPU");
    const ss_kv_cache *kv = &s->cache;
    /* Policies that keep evicted tokens (heavy sets chosen from scores on
     * the host) need host-side key moves the GPU does not mirror; sinks are
     * placed at cache positions (keys rotated at text positions, queries
     * re-rotated for the sinks). */
    if ((int)kv->cfg.policy > (int)SS_CACHE_RECOMPUTE || kv->heavy_cap > 0)
        return ss_fail(err, SS_ERR_UNSUPPORTED,
                       "the CUDA backend runs the full, window, streaming and recompute cache policies; this cache "
                       "(%s policy%s) keeps evicted tokens, which only the CPU backend supports",
                       ss_cache_policy_names[kv->cfg.policy], kv->heavy_cap > 0 ? " with refresh tokens" : "");
    if (kv->n_sink > 0 && kv->cfg.positions == SS_POSITIONS_TEXT)
        return ss_fail(err, SS_ERR_UNSUPPORTED,
                       "the CUDA backend places sinks at cache positions: CacheConfig.positions='text' runs on the "
                       "CPU only");
    DevState *ds = (DevState *)calloc(1, sizeof(DevState));
    if (!ds) return ss_fail(err, SS_ERR_NO_MEMORY, "cannot allocate the GPU state");
    const ss_status st = state_init(s, dm, ds, err);
    if (st != SS_OK) {
        free_state(ds);
        return st;
    }
    s->cuda = ds;
    return SS_OK;
}

extern "C" void ss_cuda_state_release(ss_state *s) {
    if (!s || !s->cuda) return;
    free_state((DevState *)s->cuda);
    s->cuda = nullptr;
}

extern "C" ss_status ss_cuda_run_batch(const ss_model *m, ss_state *s, const int32_t *tokens, int n, float *logits,
                                       float *hidden, int n_out, ss_error *err) {
    if (!m || !s || !tokens) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "NULL argument");
    const DevModel *dm = (const DevModel *)m->cuda;
    DevState *ds = (DevState *)s->cuda;
    if (!dm) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "the model's weights are not on the GPU");
    if (!ds)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT,
                       "this state was created while the model was on the CPU; create a new state (or generator) "
                       "after moving the model to the GPU");
    if (n < 1 || n > s->batch)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "batch of %d tokens outside [1, %d]", n, s->batch);
    if (n_out < 0 || n_out > n)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "n_out must be in [0, %d], got %d", n, n_out);
    const cudaError_t e = cudaSetDevice(ds->device);
    if (e != cudaSuccess) return cuda_fail(err, e, "cudaSetDevice");
    return run_batch(m, s, dm, ds, tokens, n, logits, hidden, n_out, err);
}

/* ------------------------------------------------------------- cuda_api.h */

#define SS_STR2(...) #__VA_ARGS__
#define SS_STR(...) SS_STR2(__VA_ARGS__)

extern "C" int ss_cuda_compiled_runtime_version(void) { return CUDART_VERSION; }

extern "C" int ss_cuda_loaded_runtime_version(void) {
    int v = 0;
    if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return v;
}

extern "C" int ss_cuda_compiled_cublas_version(void) { return CUBLAS_VERSION; }

extern "C" const char *ss_cuda_archs(void) {
#if defined(SS_SIMT_EMU)
    return "simt-emulator";
#elif defined(__CUDA_ARCH_LIST__)
    return "compute " SS_STR(__CUDA_ARCH_LIST__);
#else
    return "unknown";
#endif
}

extern "C" ss_status ss_cuda_device_name(int device, char *buf, size_t len, ss_error *err) {
    if (!buf || len == 0) return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "no buffer for the device name");
    buf[0] = '\0';
    const int count = ss_cuda_device_count();
    if (device < 0 || device >= count)
        return ss_fail(err, SS_ERR_UNSUPPORTED, "CUDA device %d does not exist (%d available)", device, count);
    cudaDeviceProp prop;
    SS_CUDA_TRY(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    snprintf(buf, len, "%s", prop.name);
    return SS_OK;
}

extern "C" ss_status ss_cuda_copy_bandwidth(size_t bytes, int repeats, double *gbs, ss_error *err) {
    *gbs = 0.0;
    if (bytes < 1024 || repeats < 1)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "copy bandwidth needs bytes >= 1 KiB and repeats >= 1");
    if (ss_cuda_device_count() < 1) return ss_fail(err, SS_ERR_UNSUPPORTED, "no CUDA GPU is available");
    void *a = nullptr, *b = nullptr;
    cudaEvent_t t0 = nullptr, t1 = nullptr;
    cudaStream_t st = nullptr;
    float best = INFINITY;
    cudaError_t e = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaMalloc(&a, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&b, bytes);
    if (e == cudaSuccess) e = cudaEventCreate(&t0);
    if (e == cudaSuccess) e = cudaEventCreate(&t1);
    if (e == cudaSuccess) e = cudaMemsetAsync(a, 1, bytes, st);
    if (e == cudaSuccess) e = cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st); /* warm-up */
    for (int r = 0; r < repeats && e == cudaSuccess; r++) {
        e = cudaEventRecord(t0, st);
        if (e == cudaSuccess) e = cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st);
        if (e == cudaSuccess) e = cudaEventRecord(t1, st);
        if (e == cudaSuccess) e = cudaEventSynchronize(t1);
        float ms = 0.0f;
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, t0, t1);
        if (e == cudaSuccess && ms > 0.0f && ms < best) best = ms;
    }
    if (st) cudaStreamSynchronize(st);
    if (t0) cudaEventDestroy(t0);
    if (t1) cudaEventDestroy(t1);
    if (a) cudaFree(a);
    if (b) cudaFree(b);
    if (st) cudaStreamDestroy(st);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return cuda_fail(err, e, "the copy-bandwidth probe");
    }
    if (!(best < INFINITY)) return ss_fail(err, SS_ERR_UNSUPPORTED, "the copy-bandwidth probe measured no time");
    *gbs = 2.0 * (double)bytes / (best * 1e-3) / 1e9;
    return SS_OK;
}
