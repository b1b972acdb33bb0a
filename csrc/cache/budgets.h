/* How many heavy keys each head keeps, for the allocators of
 * docs/CACHE_POLICIES.md: adakv (alloc_adakv.c), pyramidkv
 * (alloc_pyramid.c), headaware (alloc_headaware.c). */
#ifndef SS_BUDGETS_H
#define SS_BUDGETS_H

#include <stdint.h>

#include "specstream.h"

/* AdaKV: the keys every head keeps before the layer's shared remainder. */
int ss_adakv_floor(const ss_cache_config *cfg);

/* PyramidKV: heavy keys per head of layer `layer` of n_layer (they sum to
 * n_layer * heavy over the layers). */
int ss_pyramid_budget(const ss_cache_config *cfg, int n_layer, int layer);

/* Heads a head-aware layer may have. */
#define SS_MAX_HEADS_HEADAWARE 1024

/* Head-aware: per-head budgets from the heads' attention mass outside
 * their recent window (outside[h]), summing to n_head * per_head, each >= 1. */
void ss_headaware_budgets(const double *outside, int n_head, int per_head, int32_t *budget);

#endif
