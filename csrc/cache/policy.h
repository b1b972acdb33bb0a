/* Cache policies (docs/CACHE_POLICIES.md): which evicted tokens each head
 * keeps. A policy is a scorer (cache/scorer.h) plus a retention rule -- keep
 * the best `budget` candidates of each selection unit -- and a budget
 * allocator across heads and layers wraps any scorer (uniform, adakv,
 * pyramidkv, headaware); window/streaming keep refresh tokens by their own
 * rules (cache/refresh.c).
 *
 * Decisions are made at two moments, by one selection routine:
 *  - inside a batch of new tokens (prefill chunk, speculative tree), token by
 *    token along each token's path, into scratch lists that only that
 *    batch's attention reads (ss_policy_row_*): what sequential decoding
 *    would decide, without touching the committed state;
 *  - when tokens are committed (ss_policy_commit_*): the same decisions, now
 *    written into the heavy sets (keys move into the pool), with each
 *    committed query's attention folded into the scorer's state. */
#ifndef SS_POLICY_H
#define SS_POLICY_H

#include <stdint.h>

#include "cache/kv_cache.h"
#include "cache/scorer.h"

/* How a policy splits its heavy budget among heads. */
typedef enum { SS_ALLOC_UNIFORM, SS_ALLOC_ADAKV, SS_ALLOC_PYRAMID, SS_ALLOC_HEADAWARE } ss_allocation;

struct ss_policy {
    const char *name;
    int windowed;              /* evicts by the window schedule               */
    const ss_scorer *scorer;   /* default scorer; NULL: not a score policy    */
    ss_allocation allocation;
    ss_positions positions;    /* default position treatment                   */
};

/* The policy of a cache config (after its scorer/positions overrides). */
const ss_policy *ss_policy_of(ss_cache_policy policy);
int ss_policy_is_score(ss_cache_policy policy);

/* Heavy-set capacity and pool rows of each layer for a config (what the
 * cache allocates). */
int ss_policy_heavy_cap(const ss_cache_config *cfg, int n_layer, int n_head);
int ss_policy_pool_rows(const ss_cache_config *cfg, int n_layer, int n_head, int layer);

/* Per-cache state: scorer states, budgets, batch scratch. max_rows: the most
 * new tokens of one forward. */
ss_status ss_policy_init(ss_kv_cache *c, int max_rows, ss_error *err);
void ss_policy_release(ss_kv_cache *c);
void ss_policy_reset(ss_kv_cache *c);
/* Bytes of the state beyond keys and values. */
size_t ss_policy_bytes(const ss_kv_cache *c);

/* How heavy sets are decided inside a batch. */
typedef enum {
    SS_BATCH_FIXED = 0, /* committed sets throughout (no heavy sets, or decided at commit) */
    SS_BATCH_PER_HEAD,  /* each head alone: heads may run in parallel     */
    SS_BATCH_PER_LAYER  /* the heads of a layer together, row by row       */
} ss_batch_mode;
ss_batch_mode ss_policy_batch_mode(const ss_kv_cache *c);
/* Whether the scorer reads committed queries' attention (they are kept
 * until commit and recomputed there). */
int ss_policy_reads_attention(const ss_kv_cache *c);

/* A key was written at stream index t (a scorer may read it: key norms). */
void ss_policy_enter(ss_kv_cache *c, int layer, int head, int64_t t, const float *k);
/* The scorer state of main slot `from` moves to `to` (ss_cache_move). */
void ss_policy_move(ss_kv_cache *c, int from, int to);

/* ---------------------------------------------------------------- batches
 * Rows are pending indices (tokens since the last commit, over any number
 * of forwards): row j sits at position committed + depth[j], its parent a
 * pending index or -1 (the committed end). schedule[d]: the schedule
 * advanced for position committed + d. */
typedef struct {
    int64_t committed;
    const int32_t *parent, *depth;
    const ss_schedule *schedule;
} ss_batch;

/* Call once for new rows [first_row, first_row + n), before their heads. */
void ss_policy_batch_begin(ss_kv_cache *c, const ss_batch *b, int first_row, int n);
/* The heavy set row j of (layer, head) sees: its parent's (or the
 * committed one), re-decided from the committed scores plus its path's
 * attention when keys left the run before it. Rows in order (parents
 * first); for SS_BATCH_PER_LAYER call ss_policy_row_layer(row) before the
 * row's heads. */
const ss_heavy *ss_policy_row_heavy(ss_kv_cache *c, const ss_batch *b, int layer, int head, int row, int *n_heavy);
void ss_policy_row_layer(ss_kv_cache *c, const ss_batch *b, int layer, int row);
/* Records row j's attention of a head (probabilities p to the keys at loc;
 * `outside`: its mass outside the recent window) for its descendants. */
void ss_policy_row_probs(ss_kv_cache *c, int head, int row, const int32_t *loc, const float *p, int n, float outside);

/* ---------------------------------------------------------------- commits */

/* Keys [first, first + dropped) left the run: each selection unit keeps its
 * best candidates; kept keys move into the pool. */
void ss_policy_commit_eviction(ss_kv_cache *c, int64_t first, int dropped);
/* A committed query of (layer, head) attended with probabilities p to the
 * keys at loc (`outside`: as above). */
void ss_policy_commit_probs(ss_kv_cache *c, int layer, int head, const int32_t *loc, const float *p, int n,
                            float outside);

#endif
