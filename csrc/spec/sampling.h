/* Turning logits into tokens: a seedable RNG, the sampling distribution after
 * temperature / top-k / top-p (HF transformers semantics), greedy argmax. */
#ifndef SS_SAMPLING_H
#define SS_SAMPLING_H

#include <stdint.h>

#include "specstream.h"

typedef struct {
    uint64_t s[4];
} ss_rng; /* xoshiro256** */

void ss_rng_seed(ss_rng *rng, uint64_t seed);
/* Uniform in [0, 1) with 53 random bits. */
double ss_rng_uniform(ss_rng *rng);

/* Index of the largest value; the first one on ties (as torch.argmax). */
int ss_argmax(const float *x, int n);

typedef struct {
    float p;
    int index;
} ss_prob_index;

/* probs[n] = softmax(logits / temperature) restricted to the top_k largest
 * and then to the top_p nucleus, renormalised. temperature must be > 0.
 * scratch needs room for n entries. */
void ss_sampling_probs(const float *logits, int n, const ss_sampling *params, float *probs,
                       ss_prob_index *scratch);

/* Draws an index from an (unnormalised, non-negative) distribution. */
int ss_sample(const float *probs, int n, ss_rng *rng);

/* Draws up to m distinct indices from probs (unnormalised, non-negative)
 * without replacement, into out in draw order; returns how many (fewer when
 * fewer indices have mass). work: n floats of scratch. */
int ss_sample_distinct(const float *probs, int n, int m, ss_rng *rng, float *work, int32_t *out);

/* The m most probable indices, most probable first (ties: lower index);
 * returns how many (min(m, n)). */
int ss_top_indices(const float *probs, int n, int m, int32_t *out);

/* Scales x[n] to sum 1; returns the sum it had (0: left unchanged). */
double ss_normalize(float *x, int n);

#endif
