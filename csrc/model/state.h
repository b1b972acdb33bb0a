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
    float *x, *h, *qkv, *attn, *proj, *ff;
    float *rot_cos, *rot_sin; /* [batch][rotary_dim/2]: text positions      */
    float *pin_cos, *pin_sin; /* [batch][rotary_dim/2]: cache positions (CUDA sinks) */
    int32_t *heavy_seen;      /* [batch][n_head]: heavy keys layer 0 showed  */
    /* score policies that read attention: each pending token's queries (as
     * attention used them), refolded at commit over the committed sets */
    float *q_saved;           /* [max_pending][n_layer][d_model]             */
    /* the attention of pending row 0 (its keys are committed ones and
     * itself, so its fold can reuse it): [n_layer][n_head][key_cap] */
    float *first_probs;
    int32_t *first_loc, *first_n;
    int32_t *fold_src;        /* [max_pending]: pending index of the token
                                 committed at position committed + d        */
    ss_view *views;
    int32_t *ancestor_slots; /* the slots views' n_anc entries point into  */
    int plan_base;            /* pending index of the batch's first row     */
    /* pending rows of earlier forwards, replayed layer by layer when heavy
     * sets are decided inside batches (their path state is per layer) */
    ss_view *replay_views;    /* [max_pending]                              */
    int32_t *replay_anc;
    ss_schedule *schedule_at; /* [batch]: the schedule at each depth      */
    /* per thread: attention probabilities and key locations (key_cap each),
     * row pointers of heavy sets and ancestors (row_cap each), queries
     * (2 x head_dim), unrotated heavy keys (heavy_cap x head_dim), a rotary
     * table (2 x (rotary_dim / 2 + 1)) */
    int key_cap, row_cap;
    float *probs;
    int32_t *loc;
    const float **row_k, **row_v;
    float *thread_q, *thread_unrotated, *thread_table;
    void *cuda;    /* device-side cache and scratch of the CUDA backend */
};

/* Keys row i of the last batch attended to (heavy sets: the heads' mean). */
int ss_state_row_visible(const ss_state *s, int i);

/* Capacity of ancestor_slots: every token of a batch of n may list up to its
 * depth + 1 ancestors. */
static inline size_t ss_ancestor_capacity(int n) { return (size_t)n * ((size_t)n + 1) / 2; }

#endif
