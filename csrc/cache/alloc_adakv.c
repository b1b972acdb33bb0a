/* AdaKV (Feng et al. 2024): the heads of a layer share its heavy budget,
 * which goes to the best candidates of all heads together, after a
 * guaranteed floor per head (the selection itself is in policy.c). */
#include <math.h>

#include "cache/budgets.h"

int ss_adakv_floor(const ss_cache_config *cfg) { return (int)floor((double)cfg->adakv_floor * cfg->heavy); }
