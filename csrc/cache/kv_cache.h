/* KV cache storage, eviction schedule and heavy sets (docs/CACHE_POLICIES.md).
 *
 * Storage. Per layer and head, keys and values live in `slots` rows of
 * head_dim floats: slots [0, n_sink) hold the attention sinks (text positions
 * 0..n_sink-1), the rest form a ring in which the token at stream index
 * i >= n_sink lives in slot n_sink + (i - n_sink) % ring. The window run is
 * always a contiguous run of positions, so evicting its oldest tokens is
 * nothing but advancing its start (O(1), no copy), and rolling back rejected
 * speculative tokens nothing but lowering a length.
 *
 * Heavy sets. Evicted tokens kept anyway -- by score (h2o, snapkv, ...) or
 * as refresh tokens (window/streaming) -- move into a per-layer pool of rows
 * shared by the layer's heads: each head owns the rows of its own heavy set,
 * so per-head budgets may differ (AdaKV, PyramidKV, head-aware) while the
 * memory stays fixed at the layer's total budget. A head's heavy set is a
 * list of (position, location) sorted by position; a location is a main slot
 * (< slots) or slots + a pool row, and indexes the scorer's per-key state.
 *
 * Positions. Keys in the ring are stored rotated at their text position,
 * and the query meets them rotated at its own: within the run distances are
 * the same in text and cache coordinates. In "text" mode heavy keys are
 * kept that way too. In "cache" mode (StreamingLLM: the keys a query sees,
 * in the order sinks, heavy set, run, take positions 0, 1, ...) the sinks
 * (text position = cache position) meet the query rotated a second time, at
 * its cache position, and heavy keys are kept unrotated and meet the query
 * rotated per key by its distance in the cache (one table of cos/sin for
 * distances 0..keys_max serves every key, and nothing is re-rotated when
 * sets change).
 *
 * Schedule. Which run keys a query sees is a pure function of its position
 * and the config (ss_schedule_advance); a batch of new tokens gives each the
 * view it would have had when decoded alone, and the storage follows at
 * commit time, after speculative acceptance: a rollback never needs an
 * evicted key. */
#ifndef SS_KV_CACHE_H
#define SS_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "cache/scorer.h"
#include "kernels/cpu/kernels.h"
#include "specstream.h"

/* Eviction state after some prefix of the stream. */
typedef struct {
    int64_t first;      /* first text position of the window run               */
    int draining;       /* max_drop spread an eviction over several steps      */
    int64_t dropped;    /* keys that have left the run so far                  */
} ss_schedule;

/* What one new token's query sees, and where its own key goes. Tokens come
 * in batches that form a tree hanging off the committed sequence (a chain,
 * in the common case): a token sits at text position `pos` (its parent's
 * plus one) and is stored at stream index `index` (the committed length plus
 * its place among the pending tokens; pos == index along a chain). */
typedef struct {
    int64_t pos;        /* text position                                        */
    int64_t index;      /* stream index: the ring slot of its key and value    */
    int n_pinned;       /* sink slots visible (then the heavy set, per head)   */
    int64_t lo, hi;     /* then the keys of stream indices [lo, hi] (the window;
                           through the token itself along a chain); none when
                           lo > hi                                              */
    int64_t cache_pos;  /* sinks + uniform heavy count + its place in the run:
                           its cache position (the CUDA backend's sink rotation) */
    int anc_first, n_anc; /* then the keys in slots ancestor_slots[anc_first ..
                             + n_anc): a tree token's visible ancestors among the
                             pending tokens, in position order, itself last    */
} ss_view;

/* Keys a view shows besides the heavy set (the CUDA kernels count them too). */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline int ss_view_keys(const ss_view *v) {
    return v->n_pinned + (int)(v->hi >= v->lo ? v->hi - v->lo + 1 : 0) + v->n_anc;
}

/* One kept heavy key of a head. */
typedef struct {
    int64_t pos;
    int32_t loc;        /* main slot, or slots + pool row                       */
} ss_heavy;

typedef struct ss_policy ss_policy;

typedef struct {
    ss_cache_config cfg;
    int n_layer, n_head, head_dim, rotary_dim;
    double rotary_base;
    int n_sink, ring, slots;
    int cache_positions;   /* keys unrotated, queries rotated per key          */
    float *k, *v;          /* main rows [layer][head][slot][head_dim]          */
    ss_schedule sched;     /* advanced for the next token to come              */
    /* heavy sets: committed lists [layer][head][heavy_cap] and the pool */
    int heavy_cap;         /* most entries one head may hold                    */
    ss_heavy *heavy;
    int32_t *n_heavy;      /* [layer][head]                                     */
    int64_t *pool_offset;  /* [layer + 1]: first pool row of each layer         */
    float *pool_k, *pool_v;/* [pool rows][head_dim]                             */
    int32_t *pool_owner;   /* [pool rows]: owning head, -1 free                 */
    const ss_policy *policy;
    void *policy_state;    /* scorer states, budgets (cache/policy.c)           */
    /* per-slot data of the refresh rules and the entropy trigger */
    float *entropy;        /* [slots] predictive entropy at that token          */
    int32_t *token;        /* [slots] token ids (structural refresh)            */
    uint8_t *structural;   /* [vocab] 1 for structural ids                      */
    int vocab;
    /* cache positions: cos/sin of distances [0, keys_max) [rotary_dim / 2] */
    int keys_max;
    float *dist_cos, *dist_sin;
    ss_distance_rotation rotation;
    float *unrotate_cos, *unrotate_sin; /* [rotary_dim / 2]: commit's scratch */
} ss_kv_cache;

/* max_pending: tokens that may be appended between two commits. */
ss_status ss_cache_init(ss_kv_cache *c, const ss_cache_config *cfg, int n_layer, int n_head, int head_dim,
                        int rotary_dim, double rotary_base, int vocab, int max_pending, ss_error *err);
/* Checks the rules that tie a cache config's fields together. */
ss_status ss_cache_config_rules(const ss_cache_config *cfg, ss_error *err);
void ss_cache_release(ss_kv_cache *c);
void ss_cache_reset(ss_kv_cache *c);
size_t ss_cache_bytes(const ss_kv_cache *c);

/* Applies to s the eviction due before the token at text position t is
 * appended (force: the entropy trigger fired); returns how many keys left
 * the run and, through kept, how many sink + run keys the cache holds once t
 * is in. */
int ss_schedule_advance(const ss_kv_cache *c, ss_schedule *s, int64_t t, int force, int64_t *kept);

/* Whether the entropy trigger fires before token t, given that entropies of
 * positions < known are available. */
int ss_cache_entropy_force(const ss_kv_cache *c, int64_t t, int64_t known);

/* Readies slot data for a token about to be written at stream index t. */
void ss_cache_begin_token(ss_kv_cache *c, int64_t t, int32_t token);

/* Slot of the token at stream index t (sinks, then the ring). */
size_t ss_cache_slot(const ss_kv_cache *c, int64_t t);

/* The view of the query at text position t stored at stream index `index`
 * (>= t), given s already advanced for t: the sink slots and the window
 * run up to stream index visible_end - 1 (index + 1 along a chain; the
 * committed length for a tree token, whose ancestors the caller adds).
 * Fails when the ring cannot hold the stream through `index`. */
ss_status ss_cache_view(const ss_kv_cache *c, const ss_schedule *s, int64_t t, int64_t index, int64_t visible_end,
                        ss_view *view, ss_error *err);

/* Moves everything the cache keeps about stream index `from` (keys and
 * values of every layer and head, scorer state, entropy, token id) to stream
 * index `to`: an accepted tree token takes the place of its position. */
void ss_cache_move(ss_kv_cache *c, int64_t from, int64_t to);

/* Rows of the key/value of the token at stream index t, and of a location. */
float *ss_cache_key(const ss_kv_cache *c, int layer, int head, int64_t t);
float *ss_cache_value(const ss_kv_cache *c, int layer, int head, int64_t t);
float *ss_cache_loc_key(const ss_kv_cache *c, int layer, int head, int32_t loc);
float *ss_cache_loc_value(const ss_kv_cache *c, int layer, int head, int32_t loc);

/* Locations of one head: main slots, then its layer's pool rows. */
int ss_cache_locations(const ss_kv_cache *c, int layer);

/* One query of one head: rotated at its text position (`text`) and, for
 * cache positions, also unrotated (`raw`) and rotated at its cache position
 * (`sink`, filled by ss_cache_runs). */
typedef struct {
    const float *text, *raw;
    float *sink;
} ss_query;

/* Per-thread room ss_cache_runs needs: pointer lists of the heavy set and
 * the ancestors (row_k/row_v: n_heavy + n_anc), unrotated copies of heavy
 * keys still in the ring (unrotated: heavy_cap * head_dim) and a rotary
 * table (cos/sin: rotary_dim / 2 each). */
typedef struct {
    const float **row_k, **row_v;
    float *unrotated, *cos, *sin;
} ss_runs_scratch;

/* The keys one query of one head sees, in attention order: sinks, heavy
 * (the given list), window run, ancestors, with the query each meets. Fills
 * at most 5 runs and, when loc != NULL, each key's location in order;
 * returns the number of runs and through n_keys the keys. */
int ss_cache_runs(const ss_kv_cache *c, int layer, int head, const ss_view *view, const int32_t *ancestor_slots,
                  const ss_heavy *heavy, int n_heavy, const ss_query *q, const ss_runs_scratch *scratch,
                  ss_kv_run runs[5], int32_t *loc, int *n_keys);

/* Rotation of by_distance runs (NULL unless cache positions). */
const ss_distance_rotation *ss_cache_rotation(const ss_kv_cache *c);

/* Stores the key at location src (position pos, in the ring) in pool
 * location dst as heavy keys are kept: as is, or unrotated for cache
 * positions. */
void ss_cache_store_heavy_key(const ss_kv_cache *c, int layer, int head, int32_t dst, int32_t src, int64_t pos);

/* The committed heavy list of a head. */
static inline ss_heavy *ss_cache_heavy(const ss_kv_cache *c, int layer, int head) {
    return c->heavy + ((size_t)layer * c->n_head + head) * (size_t)c->heavy_cap;
}

#endif
