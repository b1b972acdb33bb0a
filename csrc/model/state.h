/* Internal layout of a sequence state (KV cache + scratch). */
#ifndef SS_STATE_H
#define SS_STATE_H

#include "cache/kv_cache.h"
#include "specstream.h"

struct ss_state {
    const ss_model *model;
    ss_kv_cache cache;
    int max_pending;   /* tokens between commits                          */
    int batch;         /* rows of the scratch buffers                     */
    int64_t length;    /* stream position of the next token               */
    int64_t committed; /* tokens whose evictions have been applied        */
    int last_visible;
    int n_threads;     /* score buffers allocated                         */
    /* recompute policy: the last `window` token ids, by stream position */
    int32_t *history;
    int64_t history_cap;
    int32_t *window_ids;
    /* eviction log (when enabled) */
    int record;
    ss_eviction *events;
    size_t n_events, cap_events;
    /* scratch, `batch` rows each */
    float *x, *h, *qkv, *q_pinned, *attn, *proj, *ff;
    float *rot_cos, *rot_sin, *pin_cos, *pin_sin; /* [batch][rotary_dim/2] */
    ss_view *views;
    float *scores; /* [n_threads][slots] */
    void *cuda;    /* device-side cache and scratch of the CUDA backend */
};

#endif
