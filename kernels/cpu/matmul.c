/* The CPU matmul: y = x @ w^T with w in the Hugging Face [out, in] layout, the one op that dominates a
 * CPU forward pass. Every output element is a dot product of two contiguous rows, so the loops are
 * written for that shape: each dot keeps 8 independent partial sums in a gcc vector, i.e. SIMD
 * multiplies and adds without -ffast-math (no reassociation is needed, the lanes are separate sums);
 * four rows of x share each load of a w row; w is walked in tiles that stay in L2 while
 * every block of x rows passes over them.
 *
 * Batch invariance: a row's result never depends on how many other rows are in the call or where it
 * sits among them. All three dot kernels sum in exactly the same order, so a request recomputed
 * after preemption, alone or in another batch, sees bit-identical activations. */
#include "kernels/ops.h"

#include <stdbool.h>

enum {
    ROWS = 4,                // x rows per pass over a w row
    W_TILE_FLOATS = 1 << 16, // 256 KiB of w per tile: fits L2 alongside a block of x rows
};

/* Eight partial sums per dot, one gcc vector: one AVX register, or two SSE ones on baseline x86-64.
 * Lanes are independent, so this is plain SIMD without any reassociation of the fp32 sums. Vectors
 * travel only through macros and pointers: passing them by value across functions draws gcc's ABI
 * warning when AVX is not enabled. */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_unaligned __attribute__((vector_size(32), aligned(4)));
enum { LANES = sizeof(v8f) / sizeof(float) };
#define LOAD8(p) (*(const v8f_unaligned *)(p))

/* Baseline x86-64 has only SSE2; where the CPU has AVX2, the same code runs on 256-bit registers (the
 * loader picks the clone, 3-4x faster on prefill shapes). There is no FMA (-ffp-contract=off), so both
 * clones round identically: results do not depend on the machine. */
#if defined(__x86_64__) && defined(__GNUC__)
#define MATMUL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MATMUL_CLONES
#endif

/* The fixed reduction order shared by every kernel: lanes pairwise, then the scalar tail. */
static inline float lanes_sum(const v8f *a)
{
    return (((*a)[0] + (*a)[4]) + ((*a)[2] + (*a)[6])) + (((*a)[1] + (*a)[5]) + ((*a)[3] + (*a)[7]));
}

static inline float dot_1(const float *restrict x, const float *restrict w, int in)
{
    v8f acc = {0};
    int k = 0;
    for (; k + LANES <= in; k += LANES) acc += LOAD8(x + k) * LOAD8(w + k);
    float s = lanes_sum(&acc);
    for (; k < in; ++k) s += x[k] * w[k];
    return s;
}

/* Four rows of x against one w row: out[r] = dot(x + r*in, w), each in dot_1's order. */
static inline void dot_4x1(float out[4], const float *restrict x, const float *restrict w, int in)
{
    const float *x0 = x, *x1 = x + in, *x2 = x + 2 * (size_t)in, *x3 = x + 3 * (size_t)in;
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int k = 0;
    for (; k + LANES <= in; k += LANES) {
        v8f wk = LOAD8(w + k);
        a0 += LOAD8(x0 + k) * wk;
        a1 += LOAD8(x1 + k) * wk;
        a2 += LOAD8(x2 + k) * wk;
        a3 += LOAD8(x3 + k) * wk;
    }
    float s0 = lanes_sum(&a0), s1 = lanes_sum(&a1), s2 = lanes_sum(&a2), s3 = lanes_sum(&a3);
    for (; k < in; ++k) {
        s0 += x0[k] * w[k];
        s1 += x1[k] * w[k];
        s2 += x2[k] * w[k];
        s3 += x3[k] * w[k];
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

/* One row of x against four w rows (decode, where rows are few): four independent chains instead of
 * one keep the adder busy; each dot is still in dot_1's order. */
static inline void dot_1x4(float out[4], const float *restrict x, const float *restrict w, int in)
{
    const float *w0 = w, *w1 = w + in, *w2 = w + 2 * (size_t)in, *w3 = w + 3 * (size_t)in;
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int k = 0;
    for (; k + LANES <= in; k += LANES) {
        v8f xk = LOAD8(x + k);
        a0 += xk * LOAD8(w0 + k);
        a1 += xk * LOAD8(w1 + k);
        a2 += xk * LOAD8(w2 + k);
        a3 += xk * LOAD8(w3 + k);
    }
    float s0 = lanes_sum(&a0), s1 = lanes_sum(&a1), s2 = lanes_sum(&a2), s3 = lanes_sum(&a3);
    for (; k < in; ++k) {
        s0 += x[k] * w0[k];
        s1 += x[k] * w1[k];
        s2 += x[k] * w2[k];
        s3 += x[k] * w3[k];
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

static inline void put(float *y, float v, bool acc)
{
    *y = acc ? *y + v : v;
}

/* Rows [o0, o1) of w against every row of x: blocks of four x rows, then the leftover rows one at a
 * time against four w rows at once. */
MATMUL_CLONES
static void matmul_tile(float *y, const float *x, const float *w, int n, int in, int out,
                        int o0, int o1, bool acc)
{
    float d[4];
    int i = 0;
    for (; i + ROWS <= n; i += ROWS) {
        const float *xi = x + (size_t)i * in;
        for (int o = o0; o < o1; ++o) {
            dot_4x1(d, xi, w + (size_t)o * in, in);
            for (int r = 0; r < ROWS; ++r) put(&y[(size_t)(i + r) * out + o], d[r], acc);
        }
    }
    for (; i < n; ++i) {
        const float *xi = x + (size_t)i * in;
        float *yi = y + (size_t)i * out;
        int o = o0;
        for (; o + 4 <= o1; o += 4) {
            dot_1x4(d, xi, w + (size_t)o * in, in);
            for (int r = 0; r < 4; ++r) put(&yi[o + r], d[r], acc);
        }
        for (; o < o1; ++o) put(&yi[o], dot_1(xi, w + (size_t)o * in, in), acc);
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
