/* Key norm (Devoto et al. 2024): keys with a low L2 norm draw high attention,
 * so the lowest-norm keys are kept; no attention needs to be read. */
#include <math.h>

#include "cache/scorer.h"

static void enter(ss_score_state *st, int loc, const float *k, int hd) {
    double sum = 0.0;
    for (int e = 0; e < hd; e++) sum += (double)k[e] * k[e];
    st->value[loc] = -(float)sqrt(sum);
}

static void observe(ss_score_state *st, const int32_t *loc, const float *p, int n) {
    (void)st; (void)loc; (void)p; (void)n;
}

static float score(const ss_score_state *st, int loc, int64_t key_pos, const ss_path *path) {
    (void)key_pos; (void)path;
    return st->value[loc];
}

static void evicted(ss_score_state *st, int n_locations) { (void)st; (void)n_locations; }

const ss_scorer ss_scorer_keynorm = {
    .name = "keynorm",
    .enter = enter,
    .observe = observe,
    .score = score,
    .evicted = evicted,
};
