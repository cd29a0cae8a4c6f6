/* op_rmsnorm and op_add_rmsnorm against double-precision references on seeded random data, odd and
 * even row sizes, and the in-place forms the forward pass uses (y aliasing x, y aliasing residual). */
#include "kernels/ops.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>

/* The op sums squares in double and then rounds three times (1/rms to float, x * inv, * w), each at
 * most half an ulp: 4 * FLT_EPSILON relative covers that with margin and catches any real mistake
 * (a wrong eps or mean is off by far more). */
#define NORM_RTOL (4.0 * FLT_EPSILON)

static void reference(double *want, double *tol, const float *x, const float *w, int n, int dim, float eps)
{
    for (int i = 0; i < n; ++i) {
        const float *xi = x + (size_t)i * dim;
        double ss = 0.0;
        for (int j = 0; j < dim; ++j) ss += (double)xi[j] * xi[j];
        double inv = 1.0 / sqrt(ss / dim + eps);
        for (int j = 0; j < dim; ++j) {
            want[(size_t)i * dim + j] = xi[j] * inv * w[j];
            tol[(size_t)i * dim + j] = NORM_RTOL * fabs(want[(size_t)i * dim + j]);
        }
    }
}

static void check_rmsnorm(int n, int dim, float eps, test_rng *rng)
{
    size_t total = (size_t)n * dim;
    float *x = xcalloc(total, sizeof *x), *w = xcalloc(dim, sizeof *w), *y = xcalloc(total, sizeof *y);
    double *want = xcalloc(total, sizeof *want), *tol = xcalloc(total, sizeof *tol);
    fill_uniform(x, total, rng, -3.0f, 3.0f);
    fill_uniform(w, dim, rng, 0.5f, 1.5f);
    reference(want, tol, x, w, n, dim, eps);

    for (size_t i = 0; i < total; ++i) y[i] = NAN;
    op_rmsnorm(y, x, w, n, dim, eps);
    TAP_OK(count_mismatches("rmsnorm", y, want, tol, total) == 0, "op_rmsnorm n=%d dim=%d eps=%g", n, dim, eps);

    float *inplace = xcalloc(total, sizeof *inplace);
    memcpy(inplace, x, total * sizeof *x);
    op_rmsnorm(inplace, inplace, w, n, dim, eps);
    TAP_OK(memcmp(inplace, y, total * sizeof *y) == 0, "op_rmsnorm n=%d dim=%d in place (y == x) is identical", n, dim);
    free(inplace); free(x); free(w); free(y); free(want); free(tol);
}

/* residual' = residual + x must be the plain fp32 sum; y is then checked against the double
 * reference norm of residual'. Run three ways: separate y, y == x, y == residual. */
static void check_add_rmsnorm(int n, int dim, float eps, test_rng *rng)
{
    size_t total = (size_t)n * dim, bytes = total * sizeof(float);
    float *x = xcalloc(total, sizeof *x), *r0 = xcalloc(total, sizeof *r0), *w = xcalloc(dim, sizeof *w);
    float *r = xcalloc(total, sizeof *r), *y = xcalloc(total, sizeof *y), *sum = xcalloc(total, sizeof *sum);
    double *want = xcalloc(total, sizeof *want), *tol = xcalloc(total, sizeof *tol);
    fill_uniform(x, total, rng, -1.0f, 1.0f);
    fill_uniform(r0, total, rng, -3.0f, 3.0f);
    fill_uniform(w, dim, rng, 0.5f, 1.5f);
    for (size_t i = 0; i < total; ++i) sum[i] = r0[i] + x[i];
    reference(want, tol, sum, w, n, dim, eps);

    memcpy(r, r0, bytes);
    for (size_t i = 0; i < total; ++i) y[i] = NAN;
    op_add_rmsnorm(r, y, x, w, n, dim, eps);
    TAP_OK(memcmp(r, sum, bytes) == 0, "op_add_rmsnorm n=%d dim=%d: residual += x", n, dim);
    TAP_OK(count_mismatches("add_rmsnorm", y, want, tol, total) == 0, "op_add_rmsnorm n=%d dim=%d: y", n, dim);

    float *xy = xcalloc(total, sizeof *xy);
    memcpy(r, r0, bytes);
    memcpy(xy, x, bytes);
    op_add_rmsnorm(r, xy, xy, w, n, dim, eps);
    TAP_OK(memcmp(r, sum, bytes) == 0 && memcmp(xy, y, bytes) == 0,
           "op_add_rmsnorm n=%d dim=%d with y == x is identical", n, dim);

    memcpy(r, r0, bytes);
    op_add_rmsnorm(r, r, x, w, n, dim, eps);
    TAP_OK(memcmp(r, y, bytes) == 0, "op_add_rmsnorm n=%d dim=%d with y == residual gives the same y", n, dim);
    free(xy); free(x); free(r0); free(w); free(r); free(y); free(sum); free(want); free(tol);
}

int main(void)
{
    test_rng rng = {7};
    const int shapes[][2] = {{1, 1}, {1, 8}, {3, 7}, {2, 64}, {5, 129}, {4, 1000}, {3, 4096}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
        float eps = i % 2 ? 1e-5f : 1e-6f;
        check_rmsnorm(shapes[i][0], shapes[i][1], eps, &rng);
        check_add_rmsnorm(shapes[i][0], shapes[i][1], eps, &rng);
    }

    /* A zero row: the eps keeps it finite (0 / sqrt(eps) = 0), no NaN. */
    float zero[4] = {0}, w[4] = {1, 1, 1, 1}, y[4];
    op_rmsnorm(y, zero, w, 1, 4, 1e-6f);
    TAP_OK(y[0] == 0.0f && y[3] == 0.0f, "op_rmsnorm of a zero row is zero, not NaN");
    return tap_done();
}
