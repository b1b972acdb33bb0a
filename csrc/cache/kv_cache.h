/* KV cache storage and eviction schedules.
 *
 * Storage. Per layer and head, keys and values live in `slots` rows of
 * head_dim floats: the first `pinned` slots hold the attention sinks (text
 * positions 0..n_sink-1), the rest form a ring in which the token at text
 * position p >= n_sink lives in slot n_sink + (p - n_sink) % ring. The live
 * window is always a contiguous run of text positions, so this mapping never
 * collides, evicting the oldest tokens is nothing but advancing the start of
 * the run (O(1), no copy), and rolling back rejected speculative tokens is
 * nothing but lowering the length.
 *
 * Positions. StreamingLLM gives every visible key its index in the cache as
 * rotary position. Keys are stored rotated at their text position; within the
 * contiguous window, distances to the query are the same in text and cache
 * coordinates, so only the sinks need care: the query is rotated a second
 * time, at its cache position, for its dot products with sink keys (sink k
 * sits at text = cache position k). Exact, and two rotations per query
 * instead of re-rotating the cache.
 *
 * Schedules. Which window keys a query sees is a pure function of its
 * stream position and the config (ss_schedule_advance). A batch of new tokens
 * (prefill chunk, k+1 verification tokens) therefore gives each token the
 * view it would have had when decoded alone, and the storage only has to
 * follow at commit time, after speculative acceptance: a rollback never needs
 * an evicted key. The committed schedule is always advanced for the next
 * token to come, so the eviction before it (and the choice of which evicted
 * tokens to keep) is settled at commit, with every score up to then.
 *
 * Dynamic pinned tokens. Refresh tokens (window/streaming) and heavy hitters
 * (h2o, snapkv, keynorm) are evicted tokens kept anyway. They live in pinned
 * slots after the sinks, in text order, with keys rotated at their cache
 * position, so one query rotation serves sinks and them alike. Choosing them
 * depends on data (scores, entropies), so the set changes only at commit:
 * token by token (chunk 1) this is exact sequential decoding; inside a larger
 * batch the set lags until the batch is committed.
 */
#ifndef SS_KV_CACHE_H
#define SS_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu/kernels.h"
#include "specstream.h"

/* Eviction state after some prefix of the stream. */
typedef struct {
    int64_t first;  /* first text position of the window run */
    int draining;   /* max_drop spread an eviction over several steps */
} ss_schedule;

/* What one new token's query sees, and where its own key goes. Tokens come
 * in batches that form a tree hanging off the committed sequence (a chain,
 * in the common case): a token sits at text position `pos` (its parent's
 * plus one) and is stored at stream index `index` (the committed length plus
 * its place among the pending tokens; pos == index along a chain). */
typedef struct {
    int64_t pos;        /* text position: where the query and its key are rotated */
    int64_t index;      /* stream index: the ring slot of its key and value       */
    int n_pinned;       /* sink/pinned slots visible                               */
    int64_t lo, hi;     /* then the keys of stream indices [lo, hi] (the window;
                           through the token itself along a chain); none when
                           lo > hi                                                 */
    int64_t cache_pos;  /* index of the query in the cache (sink rotation)        */
    int anc_first, n_anc; /* then the keys in slots ancestor_slots[anc_first ..
                             + n_anc): a tree token's visible ancestors among the
                             pending tokens, in position order, itself last      */
} ss_view;

/* Keys a view shows (the CUDA kernels count them too). */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline int ss_view_keys(const ss_view *v) {
    return v->n_pinned + (int)(v->hi >= v->lo ? v->hi - v->lo + 1 : 0) + v->n_anc;
}

typedef struct {
    ss_cache_config cfg;
    int n_layer, n_head, head_dim, rotary_dim;
    double rotary_base;
    int n_sink;         /* 0 unless streaming or a score policy             */
    int pinned, ring, slots;
    float *k, *v;       /* [layer][head][slot][head_dim]                    */
    ss_schedule sched;  /* advanced for the next token to come              */
    /* dynamic pinned tokens: text positions, sorted, in slots n_sink.. */
    int dyn_cap, n_dyn;
    int64_t *dyn_pos;
    /* per-slot data the selection reads */
    int track_attention;  /* h2o, snapkv: attention probabilities per slot  */
    int track_keynorm;    /* keynorm: key norms per slot                    */
    int track_entropy;    /* entropy refresh or trigger                     */
    float *score;         /* [slots] committed scores (higher = keep)       */
    float *acc;           /* [n_acc][slots] per-thread accumulators          */
    int n_acc;
    float *entropy;       /* [slots] predictive entropy at that token       */
    int32_t *token;       /* [slots] token ids (structural refresh)          */
    uint8_t *structural;  /* [vocab] 1 for structural ids                   */
    int vocab;
    /* scratch of a dynamic-set rebuild */
    int64_t *cand_pos;
    uint8_t *cand_win;
    float *cand_score, *cand_raw, *move_k, *move_v, *rot_cos, *rot_sin;
} ss_kv_cache;

/* max_pending: tokens that may be appended between two commits; threads:
 * accumulators for scores written during attention. */
ss_status ss_cache_init(ss_kv_cache *c, const ss_cache_config *cfg, int n_layer, int n_head,
                        int head_dim, int rotary_dim, double rotary_base, int vocab, int max_pending,
                        int threads, ss_error *err);
void ss_cache_release(ss_kv_cache *c);
void ss_cache_reset(ss_kv_cache *c);
size_t ss_cache_bytes(const ss_kv_cache *c);

/* Applies to s the eviction due before the token at text position t is
 * appended (force: the entropy trigger fired); returns how many keys it
 * dropped and, through kept, how many window + sink keys the cache holds
 * once t is in. */
int ss_schedule_advance(const ss_kv_cache *c, ss_schedule *s, int64_t t, int force, int64_t *kept);

/* Whether the entropy trigger fires before token t, given that entropies of
 * positions < known are available. */
int ss_cache_entropy_force(const ss_kv_cache *c, int64_t t, int64_t known);

/* Readies slot data for a token about to be written at position t. */
void ss_cache_begin_token(ss_kv_cache *c, int64_t t, int32_t token);

/* Folds the per-thread accumulators into the committed scores. */
void ss_cache_collect_scores(ss_kv_cache *c);

/* After the schedule evicted [first, first + dropped) before token t: keeps
 * the chosen evicted tokens as dynamic pinned tokens (moving and re-rotating
 * their keys), per the policy. */
void ss_cache_select(ss_kv_cache *c, int64_t first, int dropped);

/* Slot of the token at stream index t (sinks, then the ring). */
size_t ss_cache_slot(const ss_kv_cache *c, int64_t t);

/* The view of the query at text position t stored at stream index `index`
 * (>= t), given s already advanced for t: the pinned slots and the window
 * run up to stream index visible_end - 1 (index + 1 along a chain; the
 * committed length for a tree token, whose ancestors the caller adds).
 * Fails when the ring cannot hold the stream through `index`. */
ss_status ss_cache_view(const ss_kv_cache *c, const ss_schedule *s, int64_t t, int64_t index, int64_t visible_end,
                        ss_view *view, ss_error *err);

/* Moves everything the cache keeps about stream index `from` (keys, values
 * of every layer and head, scores, entropy, token id) to stream index `to`:
 * an accepted tree token takes the place of its position. */
void ss_cache_move(ss_kv_cache *c, int64_t from, int64_t to);

/* Rows for the key/value of the token at stream index t. */
float *ss_cache_key(const ss_kv_cache *c, int layer, int head, int64_t t);
float *ss_cache_value(const ss_kv_cache *c, int layer, int head, int64_t t);

/* Fills at most 4 runs (pinned, window, window wrap-around, ancestors) for
 * one query; returns the count. q_pinned/q_window: the query rotated at
 * cache_pos/pos. acc (NULL: no tracking) is the calling thread's
 * accumulator row, by slot. */
int ss_cache_runs(const ss_kv_cache *c, int layer, int head, const ss_view *view, const int32_t *ancestor_slots,
                  const float *q_pinned, const float *q_window, float *acc, ss_kv_run runs[4]);

#endif
