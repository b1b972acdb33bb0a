/* Head-aware compression (the project's research plan, seed 002 s4.4): heads
 * that attend far back get more of their layer's heavy budget. Keep ratio
 * r = 0.5 + 0.5 * importance, importance = the head's attention mass on keys
 * outside its recent window before the first eviction, min-max normalised
 * in the layer; budgets proportional to r (largest remainders), >= 1. */
#include <math.h>

#include "cache/budgets.h"

void ss_headaware_budgets(const double *outside, int n_head, int per_head, int32_t *budget) {
    double lo = outside[0], hi = outside[0];
    for (int h = 1; h < n_head; h++) {
        lo = fmin(lo, outside[h]);
        hi = fmax(hi, outside[h]);
    }
    double ratio[SS_MAX_HEADS_HEADAWARE], sum = 0.0;
    for (int h = 0; h < n_head; h++) {
        const double importance = hi > lo ? (outside[h] - lo) / (hi - lo) : 1.0;
        ratio[h] = 0.5 + 0.5 * importance;
        sum += ratio[h];
    }
    const int total = n_head * per_head;
    double frac[SS_MAX_HEADS_HEADAWARE];
    int given = 0;
    for (int h = 0; h < n_head; h++) {
        const double share = total * ratio[h] / sum;
        budget[h] = (int)floor(share);
        if (budget[h] < 1) budget[h] = 1;
        frac[h] = share - floor(share);
        given += budget[h];
    }
    while (given < total) { /* largest fractional parts first (ties: lower head) */
        int best = 0;
        for (int h = 1; h < n_head; h++)
            if (frac[h] > frac[best]) best = h;
        budget[best]++;
        frac[best] = -1.0;
        given++;
    }
    while (given > total) { /* the floor of 1 overshot: take from the largest */
        int best = 0;
        for (int h = 1; h < n_head; h++)
            if (budget[h] > budget[best]) best = h;
        budget[best]--;
        given--;
    }
}
