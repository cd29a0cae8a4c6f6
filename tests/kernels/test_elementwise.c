/* op_embedding (an exact gather) and op_swiglu against a double-precision reference, including gates
 * far in both tails where a careless silu overflows to NaN. */
#include "kernels/ops.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>

static void check_embedding(int vocab, int n, int dim, test_rng *rng)
{
    float *table = xcalloc((size_t)vocab * dim, sizeof *table), *out = xcalloc((size_t)n * dim, sizeof *out);
    int32_t *tokens = xcalloc(n, sizeof *tokens);
    fill_uniform(table, (size_t)vocab * dim, rng, -1.0f, 1.0f);
    for (int i = 0; i < n; ++i) tokens[i] = (int32_t)(rng_next(rng) % vocab);
    if (n > 1) tokens[1] = tokens[0];           // repeated ids are ordinary in a batch
    tokens[n - 1] = vocab - 1;                  // the last row of the table is reachable

    for (size_t i = 0; i < (size_t)n * dim; ++i) out[i] = NAN;
    op_embedding(out, tokens, table, n, dim);
    int ok = 1;
    for (int i = 0; i < n; ++i)
        ok &= memcmp(out + (size_t)i * dim, table + (size_t)tokens[i] * dim, (size_t)dim * sizeof *out) == 0;
    TAP_OK(ok, "op_embedding vocab=%d n=%d dim=%d copies rows exactly", vocab, n, dim);
    free(table); free(out); free(tokens);
}

/* silu(g) * u computed in fp32 rounds a handful of times (expf within an ulp, the add, the divide, the
 * multiply): 8 * FLT_EPSILON relative, plus a denormal-sized floor for results that underflow. */
static void check_swiglu(int n, int dim, test_rng *rng)
{
    size_t total = (size_t)n * dim;
    float *g = xcalloc(total, sizeof *g), *u = xcalloc(total, sizeof *u), *out = xcalloc(total, sizeof *out);
    double *want = xcalloc(total, sizeof *want), *tol = xcalloc(total, sizeof *tol);
    fill_uniform(g, total, rng, -12.0f, 12.0f);
    fill_uniform(u, total, rng, -2.0f, 2.0f);
    const float tails[] = {-1000.0f, -100.0f, -88.0f, 0.0f, 88.0f, 100.0f, 1000.0f};
    for (size_t i = 0; i < total && i < sizeof tails / sizeof tails[0]; ++i) g[i] = tails[i];
    for (size_t i = 0; i < total; ++i) {
        want[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        tol[i] = 8.0 * FLT_EPSILON * fabs(want[i]) + 1e-37;
    }
    for (size_t i = 0; i < total; ++i) out[i] = NAN;
    op_swiglu(out, g, u, n, dim);
    TAP_OK(count_mismatches("swiglu", out, want, tol, total) == 0, "op_swiglu n=%d dim=%d (tails included)", n, dim);
    free(g); free(u); free(out); free(want); free(tol);
}

int main(void)
{
    test_rng rng = {11};
    check_embedding(1, 1, 1, &rng);
    check_embedding(17, 5, 7, &rng);
    check_embedding(300, 33, 64, &rng);
    check_embedding(1000, 9, 1001, &rng);

    const int shapes[][2] = {{1, 1}, {1, 7}, {3, 13}, {4, 256}, {7, 1001}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) check_swiglu(shapes[i][0], shapes[i][1], &rng);
    return tap_done();
}
