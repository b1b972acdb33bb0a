#include "cache/refresh.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_i64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The m highest-scoring of n positions (ties: the larger position), in the
 * order given; returns how many. Winners are decided against the whole
 * list (flags in win), then compacted. */
static int keep_top(int64_t *pos, float *score, int n, int m, float *win) {
    if (n <= m) return n;
    for (int i = 0; i < n; i++) {
        int better = 0;
        for (int j = 0; j < n && better < m; j++)
            if (score[j] > score[i] || (score[j] == score[i] && pos[j] > pos[i])) better++;
        win[i] = better < m;
    }
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (win[i] != 0.0f) pos[kept++] = pos[i];
    return kept;
}

int ss_refresh_choose(const ss_kv_cache *c, const int64_t *current, int n_current, int64_t first, int dropped,
                      int64_t *out, int64_t *work, float *work_score) {
    const int M = c->cfg.refresh_budget;
    int n = 0;
    switch (c->cfg.refresh) {
    case SS_REFRESH_UNIFORM: {
        const int m = dropped < M ? dropped : M;
        for (int i = 0; i < m; i++) work[n++] = first + (int64_t)floor((i + 0.5) * dropped / m);
        break;
    }
    case SS_REFRESH_STRUCTURAL:
        for (int64_t p = first + dropped - 1; p >= first && n < M; p--)
            if (c->structural[c->token[ss_cache_slot(c, p)]]) work[n++] = p;
        break;
    default: /* entropy */
        for (int64_t p = first; p < first + dropped; p++) {
            work[n] = p;
            work_score[n++] = isnan(c->entropy[ss_cache_slot(c, p)]) ? -INFINITY : c->entropy[ss_cache_slot(c, p)];
        }
        n = keep_top(work, work_score, n, M, work_score + n);
        break;
    }
    memcpy(work + n, current, (size_t)n_current * sizeof(int64_t));
    n += n_current;
    qsort(work, (size_t)n, sizeof *work, cmp_i64);
    const int keep = n < M ? n : M; /* the newest */
    memcpy(out, work + (n - keep), (size_t)keep * sizeof(int64_t));
    return keep;
}
