/* Scissorhands (Liu et al. 2023), persistence of importance: tokens that
 * drew more than the average attention from recent queries will draw it
 * again. A key's score is the number of the last `history` queries that gave
 * it more than 1 / n of their attention (n: the keys they saw), kept as a
 * bit per query. */
#include "cache/scorer.h"

static void enter(ss_score_state *st, int loc, const float *k, int hd) {
    (void)k; (void)hd;
    st->bits[loc] = 0;
}

static void observe(ss_score_state *st, const int32_t *loc, const float *p, int n) {
    const float average = 1.0f / (float)n;
    for (int j = 0; j < n; j++) st->bits[loc[j]] = (st->bits[loc[j]] << 1) | (uint64_t)(p[j] > average);
}

static float score(const ss_score_state *st, int loc, int64_t key_pos, const ss_path *path) {
    /* the newest `history` queries: the path's last ones, then committed ones */
    const int from_path = path->n < st->history ? path->n : st->history;
    int count = 0;
    for (int a = path->n - from_path; a < path->n; a++)
        if (path->pos[a] >= key_pos) count += path->p[a][loc] > path->inv_n[a];
    const int from_committed = st->history - from_path;
    if (from_committed > 0) {
        const uint64_t recent = from_committed >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << from_committed) - 1;
        count += __builtin_popcountll(st->bits[loc] & recent);
    }
    return (float)count;
}

static void evicted(ss_score_state *st, int n_locations) { (void)st; (void)n_locations; }

const ss_scorer ss_scorer_scissorhands = {
    .name = "scissorhands",
    .reads_attention = 1,
    .enter = enter,
    .observe = observe,
    .score = score,
    .evicted = evicted,
};
