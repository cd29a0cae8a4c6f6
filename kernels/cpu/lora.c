/* Batched LoRA on the CPU: shrink (v = x A^T) and expand (y += scale * v B^T) for a batch whose tokens
 * use different adapters of different ranks, with every adapter row read through a pointer into the
 * page pool. This is the CPU backend's LoRA path and the oracle the CUDA shrink/expand kernels match.
 *
 * Both passes work one segment (a run of tokens sharing an adapter) at a time, so an adapter's rows
 * are loaded once per block of four tokens rather than once per token:
 *   shrink: every output is a dot of a token row with an A row, vectorised along `in` with eight
 *     independent partial sums as kernels/cpu/matmul.c does (SIMD without reassociating anything);
 *     A rows are walked in tiles that stay in L2 while the segment's token blocks pass over them.
 *   expand: vectorised along the output columns: each lane owns one column and sums its rank terms
 *     sequentially, with blocks of columns x tokens held in registers; columns are walked in tiles of
 *     B^T that stay in L2.
 * Every path (four tokens or one, vector body or scalar tail, any tile) performs the same fp32
 * operations in the same order for a given output element, which makes the result of a token
 * independent of the batch around it: decode (bgmv) and prefill (sgmv) agree bit for bit, and a
 * request recomputed after preemption sees identical activations. */
#include "kernels/ops.h"

enum {
    TOKENS = 4,                     // token rows that share each load of an adapter row
    SHRINK_TILE_FLOATS = 1 << 16,   // 256 KiB of A rows per tile: fits L2 beside four x rows
    EXPAND_TILE_FLOATS = 1 << 16,   // 256 KiB of B^T (rank x tile columns) per tile
    EXPAND_COLS = 64,               // expand tiles start on multiples of this (the widest column block)
};

/* Eight lanes in one gcc vector (one AVX register, two SSE ones); see kernels/cpu/matmul.c. Vectors
 * travel only through macros and pointers, so no vector crosses a function boundary by value. */
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_unaligned __attribute__((vector_size(32), aligned(4)));
enum { LANES = sizeof(v8f) / sizeof(float) };
#define LOAD8(p) (*(const v8f_unaligned *)(p))
#define STORE8(p, x) (*(v8f_unaligned *)(p) = (x))

/* AVX2 clone where the CPU has it; no FMA either way (-ffp-contract=off), so both clones round alike.
 * The clones are the tile loops; every helper they call is forced inline, since a helper compiled on
 * its own would get the baseline (SSE2) target, on which the register blocks below spill. */
#if defined(__x86_64__) && defined(__GNUC__)
#define LORA_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LORA_CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

/* ---- shrink: dots along `in` ------------------------------------------------------------------ */

/* The reduction order of every dot (matmul.c's): lanes pairwise, then the scalar tail. */
INLINE float lanes_sum(const v8f *a)
{
    return (((*a)[0] + (*a)[4]) + ((*a)[2] + (*a)[6])) + (((*a)[1] + (*a)[5]) + ((*a)[3] + (*a)[7]));
}

INLINE float dot_1(const float *restrict x, const float *restrict a, int in)
{
    v8f acc = {0};
    int c = 0;
    for (; c + LANES <= in; c += LANES) acc += LOAD8(x + c) * LOAD8(a + c);
    float s = lanes_sum(&acc);
    for (; c < in; ++c) s += x[c] * a[c];
    return s;
}

/* Four consecutive token rows (stride in) against one A row, each in dot_1's order. */
INLINE void dot_4x1(float out[4], const float *restrict x, const float *restrict a, int in)
{
    const float *x0 = x, *x1 = x + in, *x2 = x + 2 * (size_t)in, *x3 = x + 3 * (size_t)in;
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int c = 0;
    for (; c + LANES <= in; c += LANES) {
        v8f ac = LOAD8(a + c);
        s0 += LOAD8(x0 + c) * ac;
        s1 += LOAD8(x1 + c) * ac;
        s2 += LOAD8(x2 + c) * ac;
        s3 += LOAD8(x3 + c) * ac;
    }
    float d0 = lanes_sum(&s0), d1 = lanes_sum(&s1), d2 = lanes_sum(&s2), d3 = lanes_sum(&s3);
    for (; c < in; ++c) {
        d0 += x0[c] * a[c];
        d1 += x1[c] * a[c];
        d2 += x2[c] * a[c];
        d3 += x3[c] * a[c];
    }
    out[0] = d0; out[1] = d1; out[2] = d2; out[3] = d3;
}

/* One token row against four A rows (decode, or a segment's leftover tokens): four independent
 * chains keep the adder busy; each dot still in dot_1's order. */
INLINE void dot_1x4(float out[4], const float *restrict x, const float *const *a, int in)
{
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int c = 0;
    for (; c + LANES <= in; c += LANES) {
        v8f xc = LOAD8(x + c);
        s0 += xc * LOAD8(a0 + c);
        s1 += xc * LOAD8(a1 + c);
        s2 += xc * LOAD8(a2 + c);
        s3 += xc * LOAD8(a3 + c);
    }
    float d0 = lanes_sum(&s0), d1 = lanes_sum(&s1), d2 = lanes_sum(&s2), d3 = lanes_sum(&s3);
    for (; c < in; ++c) {
        d0 += x[c] * a0[c];
        d1 += x[c] * a1[c];
        d2 += x[c] * a2[c];
        d3 += x[c] * a3[c];
    }
    out[0] = d0; out[1] = d1; out[2] = d2; out[3] = d3;
}

/* A rows [k0, k1) against the n token rows of one segment; v points at the segment's first row,
 * already offset to column a_col0. */
LORA_CLONES
static void shrink_tile(float *v, int v_stride, const float *x, int in, int n, const float *const *a,
                        int k0, int k1)
{
    float d[4];
    int i = 0;
    for (; i + TOKENS <= n; i += TOKENS) {
        const float *xi = x + (size_t)i * in;
        float *vi = v + (size_t)i * v_stride;
        for (int k = k0; k < k1; ++k) {
            dot_4x1(d, xi, a[k], in);
            for (int t = 0; t < TOKENS; ++t) vi[(size_t)t * v_stride + k] = d[t];
        }
    }
    for (; i < n; ++i) {
        const float *xi = x + (size_t)i * in;
        float *vi = v + (size_t)i * v_stride;
        int k = k0;
        for (; k + 4 <= k1; k += 4) {
            dot_1x4(d, xi, a + k, in);
            for (int t = 0; t < 4; ++t) vi[k + t] = d[t];
        }
        for (; k < k1; ++k) vi[k] = dot_1(xi, a[k], in);
    }
}

static void shrink_segment(float *v, int v_stride, const float *x, int in, int n, const lora_rows *l)
{
    if (n <= 0 || l->a_rows <= 0) return;
    int tile = in > 0 && in < SHRINK_TILE_FLOATS / 4 ? SHRINK_TILE_FLOATS / in : 4;
    for (int k0 = 0; k0 < l->a_rows; k0 += tile) {
        int k1 = l->a_rows - k0 > tile ? k0 + tile : l->a_rows;
        shrink_tile(v + l->a_col0, v_stride, x, in, n, l->a, k0, k1);
    }
}

/* ---- expand: sequential sums over k, vectorised along the output columns ---------------------- */

/* Four tokens x 16 columns starting at j: eight accumulators, each B^T load shared by four tokens. */
INLINE void expand_4x16(float *y, int y_stride, const float *v, int v_stride, const float *const *b,
                        int rank, float scale, int j)
{
    const float *v0 = v, *v1 = v + v_stride, *v2 = v + 2 * (size_t)v_stride, *v3 = v + 3 * (size_t)v_stride;
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
    for (int k = 0; k < rank; ++k) {
        v8f lo = LOAD8(b[k] + j), hi = LOAD8(b[k] + j + LANES);
        a0 += v0[k] * lo; c0 += v0[k] * hi;
        a1 += v1[k] * lo; c1 += v1[k] * hi;
        a2 += v2[k] * lo; c2 += v2[k] * hi;
        a3 += v3[k] * lo; c3 += v3[k] * hi;
    }
    float *y0 = y + j, *y1 = y0 + y_stride, *y2 = y0 + 2 * (size_t)y_stride, *y3 = y0 + 3 * (size_t)y_stride;
    STORE8(y0, LOAD8(y0) + scale * a0); STORE8(y0 + LANES, LOAD8(y0 + LANES) + scale * c0);
    STORE8(y1, LOAD8(y1) + scale * a1); STORE8(y1 + LANES, LOAD8(y1 + LANES) + scale * c1);
    STORE8(y2, LOAD8(y2) + scale * a2); STORE8(y2 + LANES, LOAD8(y2 + LANES) + scale * c2);
    STORE8(y3, LOAD8(y3) + scale * a3); STORE8(y3 + LANES, LOAD8(y3 + LANES) + scale * c3);
}

/* One token x 64 columns: eight independent chains so the adds do not wait on each other (decode
 * streams B^T from memory; four chains measured 1.3x slower there). */
INLINE void expand_1x64(float *y, const float *v, const float *const *b, int rank, float scale, int j)
{
    enum { BLOCKS = 8 };
    v8f acc[BLOCKS];
    for (int q = 0; q < BLOCKS; ++q) acc[q] = (v8f){0};
    for (int k = 0; k < rank; ++k) {
        const float *bk = b[k] + j;
        for (int q = 0; q < BLOCKS; ++q) acc[q] += v[k] * LOAD8(bk + q * LANES);
    }
    for (int q = 0; q < BLOCKS; ++q) STORE8(y + j + q * LANES, LOAD8(y + j + q * LANES) + scale * acc[q]);
}

/* One token x 8 columns: the narrow vector step before the scalar tail. */
INLINE void expand_1x8(float *y, const float *v, const float *const *b, int rank, float scale, int j)
{
    v8f acc = {0};
    for (int k = 0; k < rank; ++k) acc += v[k] * LOAD8(b[k] + j);
    STORE8(y + j, LOAD8(y + j) + scale * acc);
}

/* One token, one column: the scalar twin of a single lane above. */
INLINE void expand_1x1(float *y, const float *v, const float *const *b, int rank, float scale, int j)
{
    float acc = 0.0f;
    for (int k = 0; k < rank; ++k) acc += v[k] * b[k][j];
    y[j] = y[j] + scale * acc;
}

/* One token, columns [j0, j1): 64-wide blocks, then 8-wide, then single columns. */
INLINE void expand_row(float *y, const float *v, const float *const *b, int rank, float scale, int j0, int j1)
{
    int j = j0;
    for (; j + 8 * LANES <= j1; j += 8 * LANES) expand_1x64(y, v, b, rank, scale, j);
    for (; j + LANES <= j1; j += LANES) expand_1x8(y, v, b, rank, scale, j);
    for (; j < j1; ++j) expand_1x1(y, v, b, rank, scale, j);
}

/* Columns [j0, j1) of B^T against the n token rows of one segment; y points at the segment's first
 * row, already offset to column y_col0. */
LORA_CLONES
static void expand_tile(float *y, int y_stride, const float *v, int v_stride, int n, const lora_rows *l,
                        int j0, int j1)
{
    int i = 0;
    for (; i + TOKENS <= n; i += TOKENS) {
        float *yi = y + (size_t)i * y_stride;
        const float *vi = v + (size_t)i * v_stride;
        int j = j0;
        for (; j + 2 * LANES <= j1; j += 2 * LANES)
            expand_4x16(yi, y_stride, vi, v_stride, l->b, l->rank, l->scale, j);
        for (int t = 0; t < TOKENS; ++t)
            expand_row(yi + (size_t)t * y_stride, vi + (size_t)t * v_stride, l->b, l->rank, l->scale, j, j1);
    }
    for (; i < n; ++i)
        expand_row(y + (size_t)i * y_stride, v + (size_t)i * v_stride, l->b, l->rank, l->scale, j0, j1);
}

static void expand_segment(float *y, int y_stride, int out, const float *v, int v_stride, int n,
                           const lora_rows *l)
{
    if (n <= 0 || l->rank <= 0) return;
    int tile = EXPAND_TILE_FLOATS / l->rank / EXPAND_COLS * EXPAND_COLS;
    if (tile < EXPAND_COLS) tile = EXPAND_COLS;
    for (int j0 = 0; j0 < out; j0 += tile) {
        int j1 = out - j0 > tile ? j0 + tile : out;
        expand_tile(y, y_stride, v, v_stride, n, l, j0, j1);
    }
}

/* ---- the four entry points: segments, or runs of equal adapters for bgmv ----------------------- */

void op_lora_shrink_sgmv(float *v, int v_stride, const float *x, int in, const int32_t *seg_start, int n_segs,
                         const lora_rows *const *adapters)
{
    for (int s = 0; s < n_segs; ++s) {
        if (!adapters[s]) continue;
        size_t i0 = (size_t)seg_start[s];
        shrink_segment(v + i0 * v_stride, v_stride, x + i0 * in, in, seg_start[s + 1] - seg_start[s], adapters[s]);
    }
}

void op_lora_expand_sgmv(float *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                         const int32_t *seg_start, int n_segs, const lora_rows *const *adapters)
{
    for (int s = 0; s < n_segs; ++s) {
        if (!adapters[s]) continue;
        size_t i0 = (size_t)seg_start[s];
        expand_segment(y + i0 * y_stride + y_col0, y_stride, out, v + i0 * v_stride, v_stride,
                       seg_start[s + 1] - seg_start[s], adapters[s]);
    }
}

/* Length of the run of tokens from i on that share token i's adapter index. */
static int run_length(const int32_t *token_adapter, int i, int n)
{
    int j = i + 1;
    while (j < n && token_adapter[j] == token_adapter[i]) ++j;
    return j - i;
}

static const lora_rows *table_entry(const lora_rows *const *table, int32_t index)
{
    return index < 0 ? NULL : table[index];
}

void op_lora_shrink_bgmv(float *v, int v_stride, const float *x, int in, const int32_t *token_adapter, int n,
                         const lora_rows *const *table)
{
    for (int i = 0, len; i < n; i += len) {
        len = run_length(token_adapter, i, n);
        const lora_rows *l = table_entry(table, token_adapter[i]);
        if (l) shrink_segment(v + (size_t)i * v_stride, v_stride, x + (size_t)i * in, in, len, l);
    }
}

void op_lora_expand_bgmv(float *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                         const int32_t *token_adapter, int n, const lora_rows *const *table)
{
    for (int i = 0, len; i < n; i += len) {
        len = run_length(token_adapter, i, n);
        const lora_rows *l = table_entry(table, token_adapter[i]);
        if (l) expand_segment(y + (size_t)i * y_stride + y_col0, y_stride, out, v + (size_t)i * v_stride, v_stride,
                              len, l);
    }
}
