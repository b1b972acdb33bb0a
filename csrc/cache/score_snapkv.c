/* SnapKV (Li et al. 2024): keys are voted for by the attention of an
 * observation window of recent queries, and the votes are max-pooled over
 * neighbouring positions so that clusters of important tokens survive
 * together. In a streaming cache the observation window is the queries since
 * the previous eviction (the paper's is the last prompt tokens); votes
 * restart after every eviction. */
#include <string.h>

#include "cache/scorer.h"

static void enter(ss_score_state *st, int loc, const float *k, int hd) {
    (void)k; (void)hd;
    st->value[loc] = 0.0f;
}

static void observe(ss_score_state *st, const int32_t *loc, const float *p, int n) {
    for (int j = 0; j < n; j++) st->value[loc[j]] += p[j];
}

static float score(const ss_score_state *st, int loc, int64_t key_pos, const ss_path *path) {
    /* votes of the queries since the last eviction, on the path or before */
    const float committed = path->evicted_after >= 0 ? 0.0f : st->value[loc];
    return ss_path_accumulate(path, path->evicted_after + 1, loc, key_pos, committed);
}

static void evicted(ss_score_state *st, int n_locations) {
    memset(st->value, 0, (size_t)n_locations * sizeof(float));
}

const ss_scorer ss_scorer_snapkv = {
    .name = "snapkv",
    .reads_attention = 1,
    .pool_radius = 3,
    .enter = enter,
    .observe = observe,
    .score = score,
    .evicted = evicted,
};
