/* PyramidKV (Cai et al. 2024): lower layers attend broadly and keep more,
 * upper layers concentrate and keep less: budgets decrease linearly with
 * depth, from 2m - m/beta at the bottom to m/beta at the top (m: the
 * average), summing to what a uniform budget would hold. */
#include <math.h>

#include "cache/budgets.h"

int ss_pyramid_budget(const ss_cache_config *cfg, int n_layer, int layer) {
    const int m = cfg->heavy;
    if (n_layer < 2) return m;
    int top = (int)lround(m / (double)cfg->pyramid_beta);
    if (top < 1) top = 1;
    const int bottom = 2 * m - top;
    /* floor of the linear budgets; the remainder goes to the lowest layers */
    int total = 0, mine = 0;
    for (int l = 0; l < n_layer; l++) {
        const int b = bottom + (int)floor((double)l * (top - bottom) / (n_layer - 1));
        total += b;
        if (l == layer) mine = b;
    }
    const int remainder = n_layer * m - total;
    return mine + (layer < remainder ? 1 : 0);
}
