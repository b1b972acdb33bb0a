/* Refresh tokens of window/streaming caches: dynamic sinks picked from each
 * evicted span (uniform, structural or entropy), the newest refresh_budget
 * of them kept; one set for every layer and head. */
#ifndef SS_REFRESH_H
#define SS_REFRESH_H

#include <stdint.h>

#include "cache/kv_cache.h"

/* The new refresh positions, given the current ones (sorted, n_current) and
 * the span [first, first + dropped) that just left the run; returns how
 * many (<= refresh_budget), sorted, in out. work: room for refresh_budget +
 * dropped positions, work_score for twice as many floats. */
int ss_refresh_choose(const ss_kv_cache *c, const int64_t *current, int n_current, int64_t first, int dropped,
                      int64_t *out, int64_t *work, float *work_score);

#endif
