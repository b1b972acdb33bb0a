#include "spec/sampling.h"
#include "common.h"
#include "config.h"

#include <math.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ss_rng_seed(ss_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

double ss_rng_uniform(ss_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(result >> 11) * 0x1.0p-53;
}

int ss_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Ascending by probability, ties by descending index, so the nucleus is
 * deterministic. */
static int by_prob_ascending(const void *a, const void *b) {
    const ss_prob_index *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? -1 : 1;
    return x->index < y->index ? 1 : -1;
}

/* k-th largest value of probs (1-based) by quickselect on a copy. */
static float kth_largest(const float *probs, int n, int k, ss_prob_index *scratch) {
    for (int i = 0; i < n; i++) scratch[i].p = probs[i];
    int lo = 0, hi = n - 1;
    const int target = k - 1;
    while (lo < hi) {
        const float pivot = scratch[(lo + hi) / 2].p;
        int i = lo, j = hi;
        while (i <= j) {
            while (scratch[i].p > pivot) i++;
            while (scratch[j].p < pivot) j--;
            if (i <= j) {
                const float t = scratch[i].p;
                scratch[i].p = scratch[j].p;
                scratch[j].p = t;
                i++;
                j--;
            }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else break;
    }
    return scratch[target].p;
}

void ss_sampling_probs(const float *logits, int n, const ss_sampling *params, float *probs,
                       ss_prob_index *scratch) {
    const float inv_t = 1.0f / params->temperature;
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        if (logits[i] > max) max = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        probs[i] = expf((logits[i] - max) * inv_t);
        sum += probs[i];
    }
    if (params->top_k > 0 && params->top_k < n) {
        /* Keep every token at least as likely as the k-th (ties kept, as HF). */
        const float threshold = kth_largest(probs, n, params->top_k, scratch);
        sum = 0.0;
        for (int i = 0; i < n; i++) {
            if (probs[i] < threshold) probs[i] = 0.0f;
            sum += probs[i];
        }
    }
    for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / sum);
    if (params->top_p < 1.0f) {
        /* HF removes the ascending-order prefix whose cumulative mass is
         * <= 1 - top_p. Tokens below (1 - top_p) / (n - 1) are always in that
         * prefix (all of them together weigh less), so only the rest is sorted. */
        const double tail = 1.0 - params->top_p;
        const float cutoff = (float)(tail / (n > 1 ? n - 1 : 1));
        int m = 0;
        double below = 0.0;
        for (int i = 0; i < n; i++) {
            if (probs[i] >= cutoff && probs[i] > 0.0f) scratch[m++] = (ss_prob_index){probs[i], i};
            else below += probs[i];
        }
        qsort(scratch, (size_t)m, sizeof *scratch, by_prob_ascending);
        double cum = below;
        int keep_from = 0;
        for (; keep_from < m - 1; keep_from++) { /* the most likely token always stays */
            cum += scratch[keep_from].p;
            if (cum > tail) break;
        }
        for (int i = 0; i < n; i++)
            if (probs[i] < cutoff) probs[i] = 0.0f;
        for (int r = 0; r < keep_from; r++) probs[scratch[r].index] = 0.0f;
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += probs[i];
        for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / sum);
    }
}

int ss_sample(const float *probs, int n, ss_rng *rng) {
    double total = 0.0;
    for (int i = 0; i < n; i++) total += probs[i];
    const double u = ss_rng_uniform(rng) * total;
    double cum = 0.0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (probs[i] <= 0.0f) continue;
        cum += probs[i];
        last = i;
        if (u < cum) return i;
    }
    return last; /* rounding left u just above the total */
}

int ss_sample_distinct(const float *probs, int n, int m, ss_rng *rng, float *work, int32_t *out) {
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        work[i] = probs[i] > 0.0f ? probs[i] : 0.0f;
        total += work[i];
    }
    int drawn = 0;
    for (; drawn < m && total > 0.0; drawn++) {
        const int x = ss_sample(work, n, rng);
        out[drawn] = x;
        total -= work[x];
        work[x] = 0.0f;
        if (total <= 0.0) { /* rounding: recount what is left */
            total = 0.0;
            for (int i = 0; i < n; i++) total += work[i];
        }
    }
    return drawn;
}

int ss_top_indices(const float *probs, int n, int m, int32_t *out) {
    if (m > n) m = n;
    int have = 0; /* out[0, have) sorted, most probable first */
    for (int i = 0; i < n && m > 0; i++) {
        if (have == m && !(probs[i] > probs[out[m - 1]])) continue;
        int pos = have < m ? have++ : m - 1;
        for (; pos > 0 && probs[i] > probs[out[pos - 1]]; pos--) out[pos] = out[pos - 1];
        out[pos] = i;
    }
    return have;
}

double ss_normalize(float *x, int n) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += x[i];
    if (sum > 0.0)
        for (int i = 0; i < n; i++) x[i] = (float)(x[i] / sum);
    return sum;
}

/* Below this temperature 1 / T overflows float32. */
#define MIN_TEMPERATURE 1e-30f

ss_status ss_sampling_rules(const ss_sampling *s, ss_error *err) {
    if (s->temperature > 0.0f && s->temperature < MIN_TEMPERATURE)
        return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "temperature must be 0 (greedy) or >= %g, got %g",
                       (double)MIN_TEMPERATURE, (double)s->temperature);
    return SS_OK;
}
