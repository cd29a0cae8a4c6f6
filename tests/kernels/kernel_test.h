/* Helpers shared by the kernel tests: a seeded generator for test data (so every failure replays) and
 * an elementwise comparison against a reference with a per-element tolerance that reports the first
 * few mismatches. Header-only, static inline, for the tests alone. */
#ifndef LORASERVE_TESTS_KERNEL_TEST_H
#define LORASERVE_TESTS_KERNEL_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct test_rng {
    uint64_t state;
} test_rng;

static inline uint64_t rng_next(test_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline float rng_float(test_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((rng_next(r) >> 40) * 0x1.0p-24);
}

static inline void fill_uniform(float *x, size_t n, test_rng *r, float lo, float hi)
{
    for (size_t i = 0; i < n; ++i) x[i] = rng_float(r, lo, hi);
}

static inline void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(99); }
    return p;
}

/* Elements where |got - want| > tol (a NaN in got always counts), the first three printed as TAP
 * diagnostics. tol == NULL means every element must match want exactly. */
static inline size_t count_mismatches(const char *what, const float *got, const double *want, const double *tol,
                                      size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        double t = tol ? tol[i] : 0.0;
        if (fabs((double)got[i] - want[i]) <= t) continue;
        if (bad++ < 3) printf("# %s[%zu]: got %.9g want %.9g (tol %.3g)\n", what, i, got[i], want[i], t);
    }
    return bad;
}

#endif
