/* Scorers: how a score policy rates the keys it may keep (docs/CACHE_POLICIES.md).
 *
 * A scorer keeps a state per key of one (layer, head), at the key's
 * location (a main slot, or a heavy-pool row after the main slots). The
 * committed state has seen every committed query; while a batch of new
 * tokens is in flight, a candidate's score also counts the queries of the
 * batch on its token's path (ss_path), without touching the committed
 * state, so that decisions inside a batch are those sequential decoding
 * would make and rejected speculative tokens leave no trace. */
#ifndef SS_SCORER_H
#define SS_SCORER_H

#include <stdint.h>

/* Queries of a path not committed yet, oldest first: query a at position
 * pos[a] attended with probability p[a][loc] to the key at loc (an entry is
 * only read for keys that query saw: keys at positions <= pos[a]) and to
 * 1 / inv_n[a] keys in all. evicted_after: the path index after which the
 * last eviction on the path happened (-1: none). */
typedef struct {
    int n;
    const int64_t *pos;
    const float *const *p;
    const float *inv_n;
    int evicted_after;
} ss_path;

/* The committed state of one (layer, head). */
typedef struct {
    float *value;     /* [locations]: h2o sums, snapkv votes, keynorm -norms */
    uint64_t *bits;   /* [locations]: scissorhands' above-average history    */
    int history;      /* scissorhands: queries remembered (<= 64)            */
} ss_score_state;

typedef struct {
    const char *name;
    int reads_attention; /* observes committed queries' attention              */
    int pool_radius;     /* candidates' scores max-pooled over this many
                            neighbours each side (snapkv: 3)                    */
    /* A key enters at loc (its vector as stored: rotation keeps norms). */
    void (*enter)(ss_score_state *st, int loc, const float *k, int hd);
    /* A committed query attended to n keys: probability p[j] to loc[j]. */
    void (*observe)(ss_score_state *st, const int32_t *loc, const float *p, int n);
    /* The score of the key at loc (position key_pos), committed state plus
     * a pending path; higher = keep. */
    float (*score)(const ss_score_state *st, int loc, int64_t key_pos, const ss_path *path);
    /* After an eviction event (of the selection unit's scores). */
    void (*evicted)(ss_score_state *st, int n_locations);
} ss_scorer;

extern const ss_scorer ss_scorer_h2o, ss_scorer_snapkv, ss_scorer_keynorm, ss_scorer_scissorhands;

/* start plus a path's probabilities to the key at loc (from the queries
 * that saw it, path index `from` on), added one by one in order: the sums
 * sequential decoding would form, to the last bit. */
static inline float ss_path_accumulate(const ss_path *path, int from, int loc, int64_t key_pos, float start) {
    for (int a = from < 0 ? 0 : from; a < path->n; a++)
        if (path->pos[a] >= key_pos) start += path->p[a][loc];
    return start;
}

#endif
