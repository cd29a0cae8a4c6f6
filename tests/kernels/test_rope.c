/* op_rope_inv_freq (plain and Llama 3 scaled) against the formulas of transformers'
 * _compute_default_rope_parameters / _compute_llama3_parameters written out in double here, and
 * op_rope against a double-precision rotate_half reference at small and very large positions. */
#include "kernels/ops.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>

/* transformers: inv_freq = 1 / theta^(arange(0, dim, 2) / dim). */
static double base_inv_freq(int i, int head_dim, double theta)
{
    return 1.0 / pow(theta, 2.0 * i / head_dim);
}

/* transformers' _compute_llama3_parameters, band by band. */
static double llama3_inv_freq(double inv_freq, double factor, double low, double high, double orig)
{
    double wavelen = 2.0 * M_PI / inv_freq;
    double low_freq_wavelen = orig / low, high_freq_wavelen = orig / high;
    if (wavelen > low_freq_wavelen) return inv_freq / factor;
    if (wavelen < high_freq_wavelen) return inv_freq;
    double smooth = (orig / wavelen - low) / (high - low);
    return (1.0 - smooth) * inv_freq / factor + smooth * inv_freq;
}

/* Both are computed in double and rounded once: within an ulp (FLT_EPSILON relative) of the formula. */
static void check_inv_freq(void)
{
    const int dims[] = {2, 64, 128};
    const float thetas[] = {10000.0f, 500000.0f, 1000000.0f};
    for (int t = 0; t < 3; ++t) {
        float f[64];
        int ok = 1;
        op_rope_inv_freq(f, dims[t], thetas[t], 0, 0.0f, 0.0f, 0.0f, 0);
        for (int i = 0; i < dims[t] / 2; ++i) {
            double want = base_inv_freq(i, dims[t], thetas[t]);
            ok &= fabs(f[i] - want) <= FLT_EPSILON * want;
        }
        TAP_OK(ok && f[0] == 1.0f, "op_rope_inv_freq head_dim=%d theta=%g matches 1/theta^(2i/d)", dims[t], thetas[t]);
    }

    /* Llama 3.1's rope_scaling: factor 8, low 1, high 4, original context 8192, theta 500000. */
    float f[64];
    int ok = 1, bands[3] = {0, 0, 0};
    op_rope_inv_freq(f, 128, 500000.0f, 1, 8.0f, 1.0f, 4.0f, 8192);
    for (int i = 0; i < 64; ++i) {
        double base = base_inv_freq(i, 128, 500000.0), want = llama3_inv_freq(base, 8.0, 1.0, 4.0, 8192.0);
        ok &= fabs(f[i] - want) <= FLT_EPSILON * want;
        double wavelen = 2.0 * M_PI / base;
        bands[wavelen < 8192.0 / 4.0 ? 0 : wavelen > 8192.0 ? 2 : 1]++;
    }
    TAP_OK(ok, "op_rope_inv_freq Llama 3 scaling matches _compute_llama3_parameters");
    TAP_OK(bands[0] > 0 && bands[1] > 0 && bands[2] > 0,
           "Llama 3 case covers all bands (high %d, smoothed %d, low %d)", bands[0], bands[1], bands[2]);
    TAP_OK(f[0] == 1.0f && fabs(f[63] - base_inv_freq(63, 128, 500000.0) / 8.0) <= FLT_EPSILON * f[63],
           "highest frequency kept, lowest divided by factor");
}

/* rotate_half: dimension j pairs with j + half. With x = e_0 the result is cos at 0 and sin at half;
 * an interleaved (j, j + 1) implementation would put sin at 1 instead. */
static void check_convention(void)
{
    float inv[2] = {0.5f, 0.25f}, x[4] = {1.0f, 0.0f, 0.0f, 0.0f};
    int32_t pos = 3;
    op_rope(x, &pos, inv, 1, 1, 4);
    TAP_OK(fabs(x[0] - cos(1.5)) < 1e-7 && x[1] == 0.0f && fabs(x[2] - sin(1.5)) < 1e-7 && x[3] == 0.0f,
           "op_rope pairs (j, j + head_dim/2): e0 -> (cos, 0, sin, 0), got (%g, %g, %g, %g)", x[0], x[1], x[2], x[3]);
    float y[4] = {0.0f, 0.0f, 1.0f, 0.0f};
    op_rope(y, &pos, inv, 1, 1, 4);
    TAP_OK(fabs(y[0] + sin(1.5)) < 1e-7 && fabs(y[2] - cos(1.5)) < 1e-7, "op_rope e2 -> (-sin, 0, cos, 0)");
}

/* The op rounds cos and sin to float and then does two products and a sum in fp32: the error of each
 * output is at most ~3 roundings of |x1| + |x2|; 4 * FLT_EPSILON * (|x1| + |x2|) is the bound used. */
static void check_rope(int n, int n_heads, int head_dim, int max_pos, test_rng *rng)
{
    size_t total = (size_t)n * n_heads * head_dim;
    int half = head_dim / 2;
    float *x = xcalloc(total, sizeof *x), *x0 = xcalloc(total, sizeof *x0), *inv = xcalloc(half, sizeof *inv);
    double *want = xcalloc(total, sizeof *want), *tol = xcalloc(total, sizeof *tol);
    int32_t *pos = xcalloc(n, sizeof *pos);
    fill_uniform(x0, total, rng, -2.0f, 2.0f);
    op_rope_inv_freq(inv, head_dim, 500000.0f, 1, 8.0f, 1.0f, 4.0f, 8192);
    for (int i = 0; i < n; ++i) pos[i] = (int32_t)(rng_next(rng) % ((uint64_t)max_pos + 1));
    pos[0] = max_pos;
    for (int i = 0; i < n; ++i) {
        for (int h = 0; h < n_heads; ++h) {
            size_t b = ((size_t)i * n_heads + h) * head_dim;
            for (int j = 0; j < half; ++j) {
                double a = (double)pos[i] * inv[j], c = cos(a), s = sin(a), x1 = x0[b + j], x2 = x0[b + j + half];
                want[b + j] = x1 * c - x2 * s;
                want[b + j + half] = x2 * c + x1 * s;
                tol[b + j] = tol[b + j + half] = 4.0 * FLT_EPSILON * (fabs(x1) + fabs(x2));
            }
        }
    }
    memcpy(x, x0, total * sizeof *x);
    op_rope(x, pos, inv, n, n_heads, head_dim);
    TAP_OK(count_mismatches("rope", x, want, tol, total) == 0, "op_rope n=%d heads=%d head_dim=%d positions <= %d",
           n, n_heads, head_dim, max_pos);
    free(x); free(x0); free(inv); free(want); free(tol); free(pos);
}

int main(void)
{
    test_rng rng = {3};
    check_inv_freq();
    check_convention();
    check_rope(1, 1, 2, 0, &rng);
    check_rope(3, 5, 6, 100, &rng);
    check_rope(7, 8, 64, 8191, &rng);
    check_rope(5, 3, 128, 131071, &rng);
    check_rope(2, 2, 128, 2000000, &rng);
    return tap_done();
}
