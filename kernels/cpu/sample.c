/* Token sampling: greedy, or temperature + top-k + top-p and one draw from a counter-based generator.
 * The draw is a pure function of (seed, index), so a request's tokens do not depend on what else is in
 * the batch, on call order or on preemption and recompute, and the CUDA sampler can draw the very same
 * number. Ranking is by logit with ties going to the lower id, so every path is deterministic.
 *
 * Cost: the full-vocabulary path is two linear passes. top-k is a quickselect (O(vocab)). top-p never
 * sorts the vocabulary: it selects and sorts the best 64 candidates, and only if their mass falls short
 * of top_p the next 4x as many, and so on; a nucleus is usually far smaller than the vocabulary. */
#include "kernels/ops.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

enum { NUCLEUS_FIRST = 64, NUCLEUS_GROWTH = 4 };

#define GOLDEN 0x9e3779b97f4a7c15ULL

/* The splitmix64 output function: a bijection on 64 bits with full avalanche. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The index-th output of a splitmix64 stream that starts at the hashed seed: O(1) for any index (a
 * counter-based generator), and hashing the seed first keeps the streams of nearby seeds apart. */
double op_sample_uniform(uint64_t seed, uint32_t index)
{
    uint64_t h = mix64(mix64(seed) + ((uint64_t)index + 1) * GOLDEN);
    return (double)(h >> 11) * 0x1.0p-53;   // 53 random bits: a double in [0, 1)
}

/* Greedy: the first maximum wins, so ties go to the lowest id. */
static int argmax(const float *logits, int vocab)
{
    int best = 0;
    float mx = -INFINITY;
    for (int i = 0; i < vocab; ++i)
        if (logits[i] > mx) { mx = logits[i]; best = i; }
    return best;
}

/* Strict total order: higher logit first, then lower id. */
static inline bool ranks_before(const float *logits, int a, int b)
{
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

static int cmp_rank(const void *a, const void *b, void *logits)
{
    int ia = *(const int *)a, ib = *(const int *)b;
    return ranks_before(logits, ia, ib) ? -1 : ranks_before(logits, ib, ia) ? 1 : 0;
}

static inline void swap_ids(int *ids, int a, int b)
{
    int t = ids[a]; ids[a] = ids[b]; ids[b] = t;
}

/* Quickselect: afterwards ids[0..m) are the m best of ids[0..len), in no particular order.
 * Median-of-three pivots; the order is strict so equal logits cannot degrade it. */
static void select_top(int *ids, int len, int m, const float *logits)
{
    if (m <= 0 || m >= len) return;
    int lo = 0, hi = len - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (ranks_before(logits, ids[mid], ids[lo])) swap_ids(ids, mid, lo);
        if (ranks_before(logits, ids[hi], ids[lo])) swap_ids(ids, hi, lo);
        if (ranks_before(logits, ids[mid], ids[hi])) swap_ids(ids, mid, hi);  // median now at hi
        int store = lo;
        for (int i = lo; i < hi; ++i)
            if (ranks_before(logits, ids[i], ids[hi])) swap_ids(ids, i, store++);
        swap_ids(ids, store, hi);
        if (store == m - 1) return;
        if (store > m - 1) hi = store - 1;
        else lo = store + 1;
    }
}

/* How many of the ranked candidates ids[0..cand) form the top-p nucleus: token j stays while the mass
 * ranked strictly above it is below top_p (transformers' rule; the best token always stays). Sorts
 * ids[0..nucleus) best first and returns the nucleus mass in *mass. */
static int nucleus(int *ids, int cand, const float *w, const float *logits, double target, double *mass)
{
    double cum = 0.0;
    int sorted = 0, j = 0, m = cand < NUCLEUS_FIRST ? cand : NUCLEUS_FIRST;
    for (;;) {
        select_top(ids + sorted, cand - sorted, m - sorted, logits);
        qsort_r(ids + sorted, (size_t)(m - sorted), sizeof(int), cmp_rank, (void *)logits);
        sorted = m;
        for (; j < sorted && cum < target; ++j) cum += w[ids[j]];
        if (j < sorted || cum >= target || sorted == cand) break;
        m = cand / NUCLEUS_GROWTH < m ? cand : m * NUCLEUS_GROWTH;
    }
    *mass = cum;
    return j;
}

/* One draw from weights w over ids (or over 0..count-1 when ids is NULL), total mass `mass` summed in
 * the same order. A u that rounding pushes past the last step lands on the last token with weight. */
static int draw(const int *ids, int count, const float *w, double mass, double u01)
{
    double u = u01 * mass, acc = 0.0;
    int last = ids ? ids[0] : 0;
    for (int j = 0; j < count; ++j) {
        int id = ids ? ids[j] : j;
        if (w[id] <= 0.0f) continue;
        acc += w[id];
        last = id;
        if (u < acc) return id;
    }
    return last;
}

int op_sample(const float *logits, int vocab, const sample_params *p, void *scratch)
{
    assert(vocab > 0);
    int best = argmax(logits, vocab);
    float mx = logits[best];
    if (p->temperature <= 0.0f || !isfinite(mx)) return best;

    float *w = scratch;                     // w[id]: unnormalised probability of token id
    int *ids = (int *)(w + vocab);          // candidate ids, best first once ranked
    int top_k = p->top_k > 0 && p->top_k < vocab ? p->top_k : vocab;
    bool use_p = p->top_p > 0.0f && p->top_p < 1.0f;
    double u01 = op_sample_uniform(p->seed, p->index);
    double mass = 0.0;

    if (top_k == vocab && !use_p) {
        for (int i = 0; i < vocab; ++i) {
            w[i] = expf((logits[i] - mx) / p->temperature);
            mass += w[i];
        }
        return draw(NULL, vocab, w, mass, u01);
    }
    for (int i = 0; i < vocab; ++i) ids[i] = i;
    if (top_k < vocab) select_top(ids, vocab, top_k, logits);
    for (int j = 0; j < top_k; ++j) {
        w[ids[j]] = expf((logits[ids[j]] - mx) / p->temperature);
        mass += w[ids[j]];
    }
    int count = top_k;
    if (use_p) count = nucleus(ids, top_k, w, logits, p->top_p * mass, &mass);
    return draw(ids, count, w, mass, u01);
}
