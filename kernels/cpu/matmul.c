/* The CPU matmul: y = x @ w^T with w in the Hugging Face [out, in] layout, the one op that dominates a
 * CPU forward pass. Every output element is a dot product of two contiguous rows, so the loops are
 * written for that shape: each dot keeps LANES independent partial sums, which gcc turns into SIMD
 * multiplies and adds without -ffast-math (no reassociation is needed, the lanes are separate
 * variables); four rows of x share each load of a w row; w is walked in tiles that stay in L2 while
 * every block of x rows passes over them.
 *
 * Batch invariance: a row's result never depends on how many other rows are in the call or where it
 * sits among them. The 4-row and 1-row kernels sum in exactly the same order, so a request recomputed
 * after preemption, alone or in another batch, sees bit-identical activations. */
#include "kernels/ops.h"

#include <stdbool.h>

enum {
    LANES = 8,               // partial sums per dot: two SSE or one AVX register of floats
    ROWS = 4,                // x rows per pass over a w row
    W_TILE_FLOATS = 1 << 16, // 256 KiB of w per tile: fits L2 alongside a block of x rows
};

/* The fixed reduction order shared by both kernels: lanes pairwise, then the scalar tail. */
static inline float lanes_sum(const float acc[LANES])
{
    float s4[4];
    for (int l = 0; l < 4; ++l) s4[l] = acc[l] + acc[l + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

static inline float dot_1(const float *restrict x, const float *restrict w, int in)
{
    float acc[LANES] = {0};
    int k = 0;
    for (; k + LANES <= in; k += LANES)
        for (int l = 0; l < LANES; ++l) acc[l] += x[k + l] * w[k + l];
    float s = lanes_sum(acc);
    for (; k < in; ++k) s += x[k] * w[k];
    return s;
}

/* Four dots against one w row: out[r] = dot(x + r*in, w). Same order per row as dot_1. */
static inline void dot_4(float out[ROWS], const float *restrict x, const float *restrict w, int in)
{
    const float *x0 = x, *x1 = x + in, *x2 = x + 2 * (size_t)in, *x3 = x + 3 * (size_t)in;
    float a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};
    int k = 0;
    for (; k + LANES <= in; k += LANES) {
        for (int l = 0; l < LANES; ++l) {
            float wk = w[k + l];
            a0[l] += x0[k + l] * wk;
            a1[l] += x1[k + l] * wk;
            a2[l] += x2[k + l] * wk;
            a3[l] += x3[k + l] * wk;
        }
    }
    float s0 = lanes_sum(a0), s1 = lanes_sum(a1), s2 = lanes_sum(a2), s3 = lanes_sum(a3);
    for (; k < in; ++k) {
        s0 += x0[k] * w[k];
        s1 += x1[k] * w[k];
        s2 += x2[k] * w[k];
        s3 += x3[k] * w[k];
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

static inline void put(float *y, float v, bool acc)
{
    *y = acc ? *y + v : v;
}

/* Rows [o0, o1) of w against every row of x. */
static void matmul_tile(float *y, const float *x, const float *w, int n, int in, int out,
                        int o0, int o1, bool acc)
{
    int i = 0;
    for (; i + ROWS <= n; i += ROWS) {
        const float *xi = x + (size_t)i * in;
        for (int o = o0; o < o1; ++o) {
            float d[ROWS];
            dot_4(d, xi, w + (size_t)o * in, in);
            for (int r = 0; r < ROWS; ++r) put(&y[(size_t)(i + r) * out + o], d[r], acc);
        }
    }
    for (; i < n; ++i) {
        const float *xi = x + (size_t)i * in;
        for (int o = o0; o < o1; ++o) put(&y[(size_t)i * out + o], dot_1(xi, w + (size_t)o * in, in), acc);
    }
}

static void matmul(float *y, const float *x, const float *w, int n, int in, int out, bool acc)
{
    if (n <= 0 || out <= 0) return;
    int tile = in > 0 && in < W_TILE_FLOATS ? W_TILE_FLOATS / in : 1;
    for (int o0 = 0; o0 < out; o0 += tile) {
        int o1 = out - o0 > tile ? o0 + tile : out;
        matmul_tile(y, x, w, n, in, out, o0, o1, acc);
    }
}

void op_matmul(float *y, const float *x, const float *w, int n, int in, int out)
{
    matmul(y, x, w, n, in, out, false);
}

void op_matmul_acc(float *y, const float *x, const float *w, int n, int in, int out)
{
    matmul(y, x, w, n, in, out, true);
}
