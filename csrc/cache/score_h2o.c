/* H2O (Zhang et al. 2023), heavy hitters: a key's score is the attention it
 * has received from every query since it entered the cache, its own
 * included. */
#include "cache/scorer.h"

static void enter(ss_score_state *st, int loc, const float *k, int hd) {
    (void)k; (void)hd;
    st->value[loc] = 0.0f;
}

static void observe(ss_score_state *st, const int32_t *loc, const float *p, int n) {
    for (int j = 0; j < n; j++) st->value[loc[j]] += p[j];
}

static float score(const ss_score_state *st, int loc, int64_t key_pos, const ss_path *path) {
    return ss_path_accumulate(path, 0, loc, key_pos, st->value[loc]);
}

static void evicted(ss_score_state *st, int n_locations) { (void)st; (void)n_locations; }

const ss_scorer ss_scorer_h2o = {
    .name = "h2o",
    .reads_attention = 1,
    .enter = enter,
    .observe = observe,
    .score = score,
    .evicted = evicted,
};
