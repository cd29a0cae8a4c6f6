/* op_sample and op_sample_uniform: the counter-based draw (range, uniformity, independence of call
 * order), greedy ties, and for temperature / top-k / top-p a reference distribution computed here in
 * double by sorting the whole vocabulary (transformers' order: temperature, top-k, then top-p keeping
 * every token whose higher-ranked mass is below top_p). Draws must never leave that support, and for a
 * small vocabulary their frequencies must match it. */
#include "kernels/ops.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <string.h>

typedef struct ranked {
    float logit;
    int id;
} ranked;

static int by_rank(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id - y->id;
}

/* prob[id]: the probability op_sample should draw id with (0 outside top-k / the nucleus); rank[id]:
 * its place in the ranking (when rank is not NULL). *margin: how close top_p comes to any prefix mass,
 * so a test can refuse data where fp32 rounding could legitimately move the nucleus boundary. */
static void reference_dist(double *prob, int *rank, const float *logits, int vocab, const sample_params *p,
                           double *margin)
{
    ranked *r = xcalloc(vocab, sizeof *r);
    for (int i = 0; i < vocab; ++i) r[i] = (ranked){logits[i], i};
    qsort(r, vocab, sizeof *r, by_rank);
    int k = p->top_k > 0 && p->top_k < vocab ? p->top_k : vocab;
    double z = 0.0, cum = 0.0;
    for (int j = 0; j < vocab; ++j) prob[j] = 0.0;
    for (int j = 0; j < k; ++j) z += exp(((double)r[j].logit - r[0].logit) / p->temperature);
    int keep = k;
    *margin = 1.0;
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        for (keep = 0; keep < k && cum < p->top_p; ++keep) {
            cum += exp(((double)r[keep].logit - r[0].logit) / p->temperature) / z;
            *margin = fmin(*margin, fabs(cum - p->top_p));
        }
        z *= cum;
    }
    for (int j = 0; j < keep; ++j) prob[r[j].id] = exp(((double)r[j].logit - r[0].logit) / p->temperature) / z;
    for (int j = 0; rank && j < vocab; ++j) rank[r[j].id] = j;
    free(r);
}

/* n draws with seeds seed0.. and varying indices; counts[id]++ for each. Scratch is re-poisoned before
 * every call: the op must not rely on what the previous call left there. */
static void draw_many(int *counts, const float *logits, int vocab, sample_params p, int n, uint64_t seed0)
{
    float *scratch = xcalloc(2 * (size_t)vocab, sizeof *scratch);
    memset(counts, 0, (size_t)vocab * sizeof *counts);
    for (int i = 0; i < n; ++i) {
        memset(scratch, 0xff, 2 * (size_t)vocab * sizeof *scratch);
        p.seed = seed0 + (uint64_t)i;
        p.index = (uint32_t)(i % 13);
        counts[op_sample(logits, vocab, &p, scratch)]++;
    }
    free(scratch);
}

static void check_uniform(void)
{
    enum { N = 200000, BUCKETS = 10 };
    int in_range = 1, buckets[BUCKETS] = {0};
    double mean = 0.0;
    for (int i = 0; i < N; ++i) {
        double u = op_sample_uniform((uint64_t)(i / 100), (uint32_t)(i % 100));
        in_range &= u >= 0.0 && u < 1.0;
        mean += u / N;
        if (u >= 0.0 && u < 1.0) buckets[(int)(u * BUCKETS)]++;
    }
    /* Each bucket holds N/10 = 20000 +- 134 (one sigma): 1000 is > 7 sigma, yet catches any real skew. */
    int flat = 1;
    for (int b = 0; b < BUCKETS; ++b) flat &= abs(buckets[b] - N / BUCKETS) < 1000;
    TAP_OK(in_range, "op_sample_uniform stays in [0, 1)");
    TAP_OK(fabs(mean - 0.5) < 0.005 && flat, "op_sample_uniform over consecutive seeds and indices is flat (mean %.4f)",
           mean);
    TAP_OK(op_sample_uniform(1, 0) != op_sample_uniform(2, 0) && op_sample_uniform(1, 0) != op_sample_uniform(1, 1)
           && op_sample_uniform(0, 0) != op_sample_uniform(0, 1),
           "op_sample_uniform depends on seed and index");
}

static void check_greedy(void)
{
    const float logits[] = {1.0f, 3.0f, -INFINITY, 3.0f, 2.0f};
    float scratch[10];
    sample_params p = {.temperature = 0.0f, .top_p = 0.5f, .top_k = 3, .seed = 9};
    TAP_OK(op_sample(logits, 5, &p, scratch) == 1, "greedy: ties go to the lowest id");
    p.temperature = -1.0f;
    TAP_OK(op_sample(logits, 5, &p, scratch) == 1, "negative temperature is greedy");
    const float neg[] = {-5.0f, -2.0f, -2.0f};
    TAP_OK(op_sample(neg, 3, &p, scratch) == 1, "greedy over all-negative logits");

    /* top_k = 1 is greedy at any temperature, ties included. */
    test_rng rng = {17};
    float big[500], s2[1000];
    int same = 1;
    for (int trial = 0; trial < 50; ++trial) {
        fill_uniform(big, 500, &rng, -4.0f, 4.0f);
        if (trial % 2) big[trial * 7 % 500] = big[trial * 3 % 500] = 9.0f;    // a tied maximum
        sample_params g = {.temperature = 0.0f}, k1 = {.temperature = 1.3f, .top_k = 1, .top_p = 0.9f,
                                                       .seed = (uint64_t)trial, .index = 4};
        same &= op_sample(big, 500, &g, s2) == op_sample(big, 500, &k1, s2);
    }
    TAP_OK(same, "top_k = 1 equals greedy (ties included)");
}

/* The draw for (seed, index) is the same whatever was sampled before it and in whatever order. */
static void check_order_independence(void)
{
    enum { V = 300, STEPS = 32 };
    test_rng rng = {23};
    float logits[V], scratch[2 * V];
    fill_uniform(logits, V, &rng, -3.0f, 3.0f);
    sample_params p = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 50, .seed = 1234};
    int forward[STEPS], backward[STEPS];
    for (int i = 0; i < STEPS; ++i) {
        p.index = (uint32_t)i;
        forward[i] = op_sample(logits, V, &p, scratch);
    }
    for (int i = STEPS - 1; i >= 0; --i) {
        sample_params other = {.temperature = 1.0f, .seed = (uint64_t)i * 77, .index = 3};
        (void)op_sample(logits, V, &other, scratch);   // another request in the same batch
        p.index = (uint32_t)i;
        backward[i] = op_sample(logits, V, &p, scratch);
    }
    TAP_OK(memcmp(forward, backward, sizeof forward) == 0, "same (seed, index) -> same token, any call order");
    int varied = 0;
    for (int i = 1; i < STEPS; ++i) varied |= forward[i] != forward[0];
    TAP_OK(varied, "different indices give different draws");
}

/* Draws never leave the reference support; every supported token of non-negligible probability shows
 * up; and the worse-ranked half of the support gets its share of the draws (a nucleus cut short, say
 * at the first 64 candidates, fails that): its expected fraction f has a standard deviation under 0.012
 * for 2000 draws, 0.06 is 5 sigma. */
static void check_support(const char *what, const float *logits, int vocab, sample_params p, int n_draws)
{
    double *prob = xcalloc(vocab, sizeof *prob), margin, tail_mass = 0.0;
    int *counts = xcalloc(vocab, sizeof *counts), *rank = xcalloc(vocab, sizeof *rank);
    reference_dist(prob, rank, logits, vocab, &p, &margin);
    draw_many(counts, logits, vocab, p, n_draws, 1000);
    int outside = 0, missed = 0, support = 0, tail_draws = 0;
    for (int i = 0; i < vocab; ++i) support += prob[i] > 0.0;
    for (int i = 0; i < vocab; ++i) {
        outside += prob[i] == 0.0 && counts[i] > 0;
        missed += prob[i] * n_draws > 20.0 && counts[i] == 0;   // P(miss) < e^-20
        if (prob[i] > 0.0 && rank[i] >= support / 2) { tail_mass += prob[i]; tail_draws += counts[i]; }
    }
    double tail_err = fabs((double)tail_draws / n_draws - tail_mass);
    TAP_OK(margin > 1e-5 && outside == 0 && missed == 0 && tail_err < 0.06,
           "%s: %d draws within a support of %d, tail share off by %.3f (margin %.2g)", what, n_draws, support,
           tail_err, margin);
    free(prob); free(counts); free(rank);
}

/* Frequencies of a small vocabulary against the reference: 20000 draws give a standard deviation of
 * at most 0.0036 per probability; 0.02 is over 5 sigma, loose enough never to flake, tight enough to
 * catch a wrong temperature or renormalisation. */
static void check_frequencies(const char *what, const float *logits, int vocab, sample_params p)
{
    enum { N = 20000 };
    double prob[16], margin, worst = 0.0;
    int counts[16];
    reference_dist(prob, NULL, logits, vocab, &p, &margin);
    draw_many(counts, logits, vocab, p, N, 77);
    for (int i = 0; i < vocab; ++i) worst = fmax(worst, fabs((double)counts[i] / N - prob[i]));
    TAP_OK(margin > 1e-5 && worst < 0.02, "%s: frequencies match (worst |f - p| = %.4f)", what, worst);
}

int main(void)
{
    check_uniform();
    check_greedy();
    check_order_independence();

    const float small[] = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, -INFINITY};
    check_frequencies("T=1", small, 6, (sample_params){.temperature = 1.0f});
    check_frequencies("T=2, top_k=3", small, 6, (sample_params){.temperature = 2.0f, .top_k = 3});
    check_frequencies("T=1, top_p=0.7", small, 6, (sample_params){.temperature = 1.0f, .top_p = 0.7f});
    check_frequencies("T=0.5, top_k=4, top_p=0.95", small, 6,
                      (sample_params){.temperature = 0.5f, .top_k = 4, .top_p = 0.95f});

    /* Probabilities 0.5, 0.3, 0.2: the nucleus boundary exactly as transformers draws it. */
    const float three[] = {logf(0.3f), logf(0.5f), logf(0.2f)};
    check_frequencies("top_p=0.45 keeps only the best", three, 3, (sample_params){.temperature = 1.0f, .top_p = 0.45f});
    check_frequencies("top_p=0.55 keeps two", three, 3, (sample_params){.temperature = 1.0f, .top_p = 0.55f});

    enum { V = 5000 };
    static float big[V];
    test_rng rng = {29};
    fill_uniform(big, V, &rng, -3.0f, 3.0f);
    for (int i = 0; i < V; i += 3) big[i] = -INFINITY;     // masked tokens are never drawn
    check_support("V=5000, T=1", big, V, (sample_params){.temperature = 1.0f}, 2000);
    check_support("V=5000, top_k=10", big, V, (sample_params){.temperature = 1.5f, .top_k = 10}, 2000);
    check_support("V=5000, top_p=0.3 (nucleus > 64: grows)", big, V,
                  (sample_params){.temperature = 1.0f, .top_p = 0.3f}, 2000);
    check_support("V=5000, T=0.3, top_p=0.9", big, V, (sample_params){.temperature = 0.3f, .top_p = 0.9f}, 2000);
    check_support("V=5000, top_k=300, top_p=0.8", big, V,
                  (sample_params){.temperature = 0.7f, .top_k = 300, .top_p = 0.8f}, 2000);
    return tap_done();
}
