/* op_matmul / op_matmul_acc against a double-precision triple loop on seeded random data, over shapes
 * that exercise every path: the 4-row blocks and the leftover rows, the 8-lane body and the scalar tail
 * of each dot, and several w tiles (in = 4096 makes the tile 16 rows). Also checks batch invariance:
 * a row's result is bit-identical whether it is computed alone or inside a batch. */
#include "kernels/ops.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>

typedef struct shape {
    int n, in, out;
} shape;

/* want = y0 + x @ w^T in double; tol is the worst-case bound of fp32 summation: a dot of `in` terms
 * summed as 8 lanes of in/8 terms, a 3-level lane reduction, up to 7 tail terms and one rounding per
 * product and for y0: (in/8 + 12) rounding errors of at most FLT_EPSILON times the sum of |terms|. */
static void reference(double *want, double *tol, const float *y0, const float *x, const float *w, shape s)
{
    for (int i = 0; i < s.n; ++i) {
        for (int o = 0; o < s.out; ++o) {
            double acc = y0 ? y0[(size_t)i * s.out + o] : 0.0, mag = fabs(acc);
            for (int k = 0; k < s.in; ++k) {
                double t = (double)x[(size_t)i * s.in + k] * w[(size_t)o * s.in + k];
                acc += t;
                mag += fabs(t);
            }
            want[(size_t)i * s.out + o] = acc;
            tol[(size_t)i * s.out + o] = (s.in / 8 + 12) * FLT_EPSILON * mag;
        }
    }
}

static void check_shape(shape s, test_rng *rng)
{
    size_t nx = (size_t)s.n * s.in, nw = (size_t)s.out * s.in, ny = (size_t)s.n * s.out;
    float *x = xcalloc(nx, sizeof *x), *w = xcalloc(nw, sizeof *w);
    float *y = xcalloc(ny, sizeof *y), *y0 = xcalloc(ny, sizeof *y0), *row = xcalloc(s.out, sizeof *row);
    double *want = xcalloc(ny, sizeof *want), *tol = xcalloc(ny, sizeof *tol);
    fill_uniform(x, nx, rng, -1.0f, 1.0f);
    fill_uniform(w, nw, rng, -1.0f, 1.0f);
    fill_uniform(y0, ny, rng, -4.0f, 4.0f);

    for (size_t i = 0; i < ny; ++i) y[i] = NAN;     // every output must be written
    op_matmul(y, x, w, s.n, s.in, s.out);
    reference(want, tol, NULL, x, w, s);
    TAP_OK(count_mismatches("matmul", y, want, tol, ny) == 0, "op_matmul n=%d in=%d out=%d", s.n, s.in, s.out);

    int invariant = 1;
    for (int i = 0; i < s.n; ++i) {
        op_matmul(row, x + (size_t)i * s.in, w, 1, s.in, s.out);
        invariant &= memcmp(row, y + (size_t)i * s.out, (size_t)s.out * sizeof *row) == 0;
    }
    TAP_OK(invariant, "op_matmul n=%d in=%d out=%d: each row bit-identical when computed alone", s.n, s.in, s.out);

    float *sum = xcalloc(ny, sizeof *sum);
    for (size_t i = 0; i < ny; ++i) sum[i] = y0[i] + y[i];   // what accumulation must give, bit for bit
    memcpy(y, y0, ny * sizeof *y);
    op_matmul_acc(y, x, w, s.n, s.in, s.out);
    reference(want, tol, y0, x, w, s);
    TAP_OK(count_mismatches("matmul_acc", y, want, tol, ny) == 0 && memcmp(y, sum, ny * sizeof *y) == 0,
           "op_matmul_acc n=%d in=%d out=%d (== y0 + op_matmul exactly)", s.n, s.in, s.out);
    free(sum); free(x); free(w); free(y); free(y0); free(row); free(want); free(tol);
}

int main(void)
{
    test_rng rng = {42};
    const shape shapes[] = {
        {1, 1, 1}, {1, 7, 5}, {3, 13, 9}, {4, 8, 4}, {4, 64, 33}, {5, 100, 17},
        {9, 257, 31}, {17, 1000, 65}, {6, 4096, 40},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) check_shape(shapes[i], &rng);

    float y[2] = {5.0f, 6.0f};
    op_matmul(y, NULL, NULL, 0, 3, 2);
    TAP_OK(y[0] == 5.0f && y[1] == 6.0f, "n = 0 writes nothing");
    return tap_done();
}
