/* Internal layout of a sequence state (KV cache + scratch).
 *
 * Tokens are committed (their evictions applied, never rolled back) or
 * pending (processed since the last commit: a chain, or a tree of
 * speculative candidates hanging off the committed sequence). Pending token
 * j is stored at stream index committed + j and sits at text position
 * committed + depth[j]; accepting a path of them moves each into the slot of
 * its position. */
#ifndef SS_STATE_H
#define SS_STATE_H

#include "cache/kv_cache.h"
#include "specstream.h"

struct ss_state {
    const ss_model *model;
    ss_kv_cache cache;
    int max_pending;   /* tokens between commits                          */
    int batch;         /* rows of the scratch buffers                     */
    int64_t committed; /* tokens whose evictions have been applied        */
    int n_pending;     /* tokens processed since                          */
    int pending_chain; /* the pending tokens form a chain                 */
    int32_t *pending_parent; /* [max_pending]: parent's pending index, -1 */
    int32_t *pending_depth;  /* [max_pending]: position - committed        */
    int32_t *pending_token;  /* [max_pending]                              */
    int last_visible;
    int n_threads;     /* score buffers allocated                         */
    /* recompute policy: the last `window` committed token ids, by position */
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
    int32_t *ancestor_slots; /* the slots views' n_anc entries point into  */
    ss_schedule *schedule_at; /* [batch]: the schedule at each depth      */
    float *scores; /* [n_threads][slots] */
    void *cuda;    /* device-side cache and scratch of the CUDA backend */
};

/* Capacity of ancestor_slots: every token of a batch of n may list up to its
 * depth + 1 ancestors. */
static inline size_t ss_ancestor_capacity(int n) { return (size_t)n * ((size_t)n + 1) / 2; }

#endif
