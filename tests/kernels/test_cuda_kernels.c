/* Every CUDA kernel of kernels/cuda against its CPU twin (kernels/cpu), for each storage type (f32,
 * bf16, f16), on fresh seeded random data and several shapes including odd ones. Inputs are rounded to
 * the storage type first and the CPU twin runs on those rounded values, so the tolerances only have to
 * cover the device's own fp32 arithmetic plus one rounding of the output to the storage type. Outputs
 * are NaN-poisoned (all-ones bytes are NaN in all three types) so an element a kernel forgets to write
 * fails. Skips (a TAP skip plan) when there is no usable CUDA device. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/fused_ops.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>


/* The CPU twin's output as the reference, with tol = rtol * |ref| + atol per element. */
static size_t compare(const char *what, const float *got, const float *ref, size_t n, double rtol, double atol)
{
    double *want = xcalloc(n, sizeof *want), *tol = xcalloc(n, sizeof *tol);
    for (size_t i = 0; i < n; ++i) {
        want[i] = ref[i];
        tol[i] = rtol * fabs(ref[i]) + atol;
    }
    size_t bad = count_mismatches(what, got, want, tol, n);
    free(want); free(tol);
    return bad;
}

static void launch_rmsnorm(dtype t, void *y, const void *x, const void *w, int n, int dim, float eps, cudaStream_t s)
{
    if (t == DT_F32) cuda_rmsnorm_f32(y, x, w, n, dim, eps, s);
    else if (t == DT_BF16) cuda_rmsnorm_bf16(y, x, w, n, dim, eps, s);
    else cuda_rmsnorm_f16(y, x, w, n, dim, eps, s);
}

static void launch_add_rmsnorm(dtype t, void *r, void *y, const void *x, const void *w, int n, int dim, float eps,
                               cudaStream_t s)
{
    if (t == DT_F32) cuda_add_rmsnorm_f32(r, y, x, w, n, dim, eps, s);
    else if (t == DT_BF16) cuda_add_rmsnorm_bf16(r, y, x, w, n, dim, eps, s);
    else cuda_add_rmsnorm_f16(r, y, x, w, n, dim, eps, s);
}

static void launch_rope(dtype t, void *x, const int32_t *pos, const float *inv, int n, int heads, int hd,
                        cudaStream_t s)
{
    if (t == DT_F32) cuda_rope_f32(x, pos, inv, n, heads, hd, s);
    else if (t == DT_BF16) cuda_rope_bf16(x, pos, inv, n, heads, hd, s);
    else cuda_rope_f16(x, pos, inv, n, heads, hd, s);
}

static void launch_swiglu(dtype t, void *out, const void *g, const void *u, int n, int dim, cudaStream_t s)
{
    if (t == DT_F32) cuda_swiglu_f32(out, g, u, n, dim, s);
    else if (t == DT_BF16) cuda_swiglu_bf16(out, g, u, n, dim, s);
    else cuda_swiglu_f16(out, g, u, n, dim, s);
}

static void launch_embedding(dtype t, void *out, const int32_t *tok, const void *table, int n, int dim, cudaStream_t s)
{
    if (t == DT_F32) cuda_embedding_f32(out, tok, table, n, dim, s);
    else if (t == DT_BF16) cuda_embedding_bf16(out, tok, table, n, dim, s);
    else cuda_embedding_f16(out, tok, table, n, dim, s);
}

/* fp32 vs fp32: the device sums squares in a different order (a tree of fp32 partial sums, the host in
 * double), a few 1e-6 relative at dim 8192; 1e-5 relative. 16-bit: plus one output rounding (one ulp
 * bounds half an ulp of rounding plus that). */
static double norm_rtol(dtype t)
{
    return t == DT_F32 ? 1e-5 : dt_ulp(t) + 1e-5;
}

static void check_rmsnorm(dtype t, int n, int dim, int in_place, test_rng *rng, cudaStream_t s)
{
    size_t total = (size_t)n * dim;
    float *x = xcalloc(total, sizeof *x), *w = xcalloc(dim, sizeof *w);
    float *ref = xcalloc(total, sizeof *ref), *got = xcalloc(total, sizeof *got);
    fill_uniform(x, total, rng, -3.0f, 3.0f);
    fill_uniform(w, dim, rng, 0.5f, 1.5f);
    void *dx = upload(x, total, t), *dw = upload(w, dim, t), *dy = in_place ? dx : alloc_poisoned(total, t);
    launch_rmsnorm(t, dy, dx, dw, n, dim, 1e-5f, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    download(got, dy, total, t);
    op_rmsnorm(ref, x, w, n, dim, 1e-5f);
    TAP_OK(compare("rmsnorm", got, ref, total, norm_rtol(t), dt_atol(t)) == 0, "rmsnorm %s n=%d dim=%d%s",
           dt_names[t], n, dim, in_place ? " in place" : "");
    if (!in_place) CUDA_CHECK(cudaFree(dy));
    CUDA_CHECK(cudaFree(dx)); CUDA_CHECK(cudaFree(dw));
    free(x); free(w); free(ref); free(got);
}

/* alias: 0 = separate y, 1 = y == x, 2 = y == residual. The residual is exact in fp32 (one IEEE add on
 * both sides) and within one rounding in 16-bit; y normalises the rounded residual on the device, so
 * 16-bit y gets two ulps. */
static void check_add_rmsnorm(dtype t, int n, int dim, int alias, test_rng *rng, cudaStream_t s)
{
    size_t total = (size_t)n * dim;
    float *x = xcalloc(total, sizeof *x), *r = xcalloc(total, sizeof *r), *w = xcalloc(dim, sizeof *w);
    float *ref = xcalloc(total, sizeof *ref), *got = xcalloc(total, sizeof *got);
    fill_uniform(x, total, rng, -1.0f, 1.0f);
    fill_uniform(r, total, rng, -3.0f, 3.0f);
    fill_uniform(w, dim, rng, 0.5f, 1.5f);
    void *dx = upload(x, total, t), *dr = upload(r, total, t), *dw = upload(w, dim, t);
    void *dy = alias == 1 ? dx : alias == 2 ? dr : alloc_poisoned(total, t);
    launch_add_rmsnorm(t, dr, dy, dx, dw, n, dim, 1e-6f, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    op_add_rmsnorm(r, ref, x, w, n, dim, 1e-6f);
    const char *how[] = {"", " y == x", " y == residual"};
    double rtol_r = t == DT_F32 ? 0.0 : dt_ulp(t), atol_r = t == DT_F32 ? 0.0 : dt_atol(t);
    double rtol_y = t == DT_F32 ? 1e-5 : 2.0 * dt_ulp(t);
    if (alias != 2) {
        download(got, dr, total, t);
        TAP_OK(compare("add_rmsnorm residual", got, r, total, rtol_r, atol_r) == 0,
               "add_rmsnorm %s n=%d dim=%d%s: residual", dt_names[t], n, dim, how[alias]);
    }
    download(got, dy, total, t);
    TAP_OK(compare("add_rmsnorm y", got, ref, total, rtol_y, dt_atol(t)) == 0, "add_rmsnorm %s n=%d dim=%d%s: y",
           dt_names[t], n, dim, how[alias]);
    if (alias == 0) CUDA_CHECK(cudaFree(dy));
    CUDA_CHECK(cudaFree(dx)); CUDA_CHECK(cudaFree(dr)); CUDA_CHECK(cudaFree(dw));
    free(x); free(r); free(w); free(ref); free(got);
}

/* Rotation error on either side is a few fp32 roundings of |x1| + |x2| (the device may fuse a multiply
 * and add; cos/sin may differ by an ulp when double results round differently to float): 4 * FLT_EPSILON
 * of that, plus one output rounding for 16-bit. The tolerance is built per element from the pair. */
static void check_rope(dtype t, int n, int heads, int hd, int max_pos, test_rng *rng, cudaStream_t s)
{
    size_t total = (size_t)n * heads * hd;
    int half = hd / 2;
    float *x = xcalloc(total, sizeof *x), *got = xcalloc(total, sizeof *got), *inv = xcalloc(half, sizeof *inv);
    double *want = xcalloc(total, sizeof *want), *tol = xcalloc(total, sizeof *tol);
    int32_t *pos = xcalloc(n, sizeof *pos);
    fill_uniform(x, total, rng, -2.0f, 2.0f);
    for (int i = 0; i < n; ++i) pos[i] = (int32_t)(rng_next(rng) % ((uint64_t)max_pos + 1));
    pos[n - 1] = max_pos;
    op_rope_inv_freq(inv, hd, 500000.0f, 1, 8.0f, 1.0f, 4.0f, 8192);
    void *dx = upload(x, total, t), *dpos, *dinv;
    CUDA_CHECK(cudaMalloc(&dpos, n * sizeof *pos));
    CUDA_CHECK(cudaMalloc(&dinv, half * sizeof *inv));
    CUDA_CHECK(cudaMemcpy(dpos, pos, n * sizeof *pos, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dinv, inv, half * sizeof *inv, cudaMemcpyHostToDevice));
    for (size_t b = 0; b < total; b += hd)
        for (int j = 0; j < half; ++j)
            tol[b + j] = tol[b + j + half] = 4.0 * FLT_EPSILON * (fabs(x[b + j]) + fabs(x[b + j + half]));
    launch_rope(t, dx, dpos, dinv, n, heads, hd, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    download(got, dx, total, t);
    op_rope(x, pos, inv, n, heads, hd);
    for (size_t i = 0; i < total; ++i) {
        want[i] = x[i];
        tol[i] += (t == DT_F32 ? 0.0 : dt_ulp(t) * fabs(x[i])) + dt_atol(t);
    }
    TAP_OK(count_mismatches("rope", got, want, tol, total) == 0, "rope %s n=%d heads=%d head_dim=%d positions <= %d",
           dt_names[t], n, heads, hd, max_pos);
    CUDA_CHECK(cudaFree(dx)); CUDA_CHECK(cudaFree(dpos)); CUDA_CHECK(cudaFree(dinv));
    free(x); free(got); free(inv); free(want); free(tol); free(pos);
}

/* expf within 2 ulp on the device, ~1 on the host, then an add, a divide and a multiply on each side:
 * 16 * FLT_EPSILON relative, plus one output rounding for 16-bit, plus a subnormal step for tails that
 * underflow. */
static void check_swiglu(dtype t, int n, int dim, test_rng *rng, cudaStream_t s)
{
    size_t total = (size_t)n * dim;
    float *g = xcalloc(total, sizeof *g), *u = xcalloc(total, sizeof *u);
    float *ref = xcalloc(total, sizeof *ref), *got = xcalloc(total, sizeof *got);
    fill_uniform(g, total, rng, -12.0f, 12.0f);
    fill_uniform(u, total, rng, -2.0f, 2.0f);
    const float tails[] = {-1000.0f, -100.0f, -20.0f, 0.0f, 20.0f, 100.0f};
    for (size_t i = 0; i < total && i < sizeof tails / sizeof tails[0]; ++i) g[i] = tails[i];
    void *dg = upload(g, total, t), *du = upload(u, total, t), *dout = alloc_poisoned(total, t);
    launch_swiglu(t, dout, dg, du, n, dim, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    download(got, dout, total, t);
    op_swiglu(ref, g, u, n, dim);
    double rtol = 16.0 * FLT_EPSILON + (t == DT_F32 ? 0.0 : dt_ulp(t));
    TAP_OK(compare("swiglu", got, ref, total, rtol, dt_atol(t)) == 0, "swiglu %s n=%d dim=%d", dt_names[t], n, dim);
    CUDA_CHECK(cudaFree(dg)); CUDA_CHECK(cudaFree(du)); CUDA_CHECK(cudaFree(dout));
    free(g); free(u); free(ref); free(got);
}

/* A gather copies bits: exact. */
static void check_embedding(dtype t, int vocab, int n, int dim, test_rng *rng, cudaStream_t s)
{
    size_t total = (size_t)n * dim;
    float *table = xcalloc((size_t)vocab * dim, sizeof *table);
    float *ref = xcalloc(total, sizeof *ref), *got = xcalloc(total, sizeof *got);
    int32_t *tok = xcalloc(n, sizeof *tok);
    fill_uniform(table, (size_t)vocab * dim, rng, -1.0f, 1.0f);
    for (int i = 0; i < n; ++i) tok[i] = (int32_t)(rng_next(rng) % (uint64_t)vocab);
    tok[n - 1] = vocab - 1;
    void *dtable = upload(table, (size_t)vocab * dim, t), *dout = alloc_poisoned(total, t), *dtok;
    CUDA_CHECK(cudaMalloc(&dtok, n * sizeof *tok));
    CUDA_CHECK(cudaMemcpy(dtok, tok, n * sizeof *tok, cudaMemcpyHostToDevice));
    launch_embedding(t, dout, dtok, dtable, n, dim, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    download(got, dout, total, t);
    op_embedding(ref, tok, table, n, dim);
    TAP_OK(compare("embedding", got, ref, total, 0.0, 0.0) == 0, "embedding %s vocab=%d n=%d dim=%d", dt_names[t],
           vocab, n, dim);
    CUDA_CHECK(cudaFree(dtable)); CUDA_CHECK(cudaFree(dout)); CUDA_CHECK(cudaFree(dtok));
    free(table); free(ref); free(got); free(tok);
}

/* The fused q/k/v split + rotation against a CPU split followed by op_rope: the same rotation, so the
 * rope tolerance; v is copied bit for bit. */
static void check_qkv_split_rope(dtype t, int n, int hq, int hk, int hd, test_rng *rng, cudaStream_t s)
{
    size_t row = (size_t)(hq + 2 * hk) * hd, total = (size_t)n * row;
    size_t nq = (size_t)n * hq * hd, nk = (size_t)n * hk * hd;
    int half = hd / 2;
    float *qkv = xcalloc(total, sizeof *qkv), *inv = xcalloc(half, sizeof *inv);
    float *q = xcalloc(nq, sizeof *q), *k = xcalloc(nk, sizeof *k), *v = xcalloc(nk, sizeof *v);
    float *got = xcalloc(nq, sizeof *got);
    int32_t *pos = xcalloc(n, sizeof *pos);
    fill_uniform(qkv, total, rng, -2.0f, 2.0f);
    for (int i = 0; i < n; ++i) pos[i] = (int32_t)(rng_next(rng) % 5000);
    op_rope_inv_freq(inv, hd, 10000.0f, 0, 0, 0, 0, 0);
    void *dqkv = upload(qkv, total, t), *dq = alloc_poisoned(nq, t), *dk = alloc_poisoned(nk, t);
    void *dv = alloc_poisoned(nk, t), *dpos, *dinv;
    CUDA_CHECK(cudaMalloc(&dpos, n * sizeof *pos));
    CUDA_CHECK(cudaMalloc(&dinv, half * sizeof *inv));
    CUDA_CHECK(cudaMemcpy(dpos, pos, n * sizeof *pos, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dinv, inv, half * sizeof *inv, cudaMemcpyHostToDevice));
    if (t == DT_F32) cuda_qkv_split_rope_f32(dq, dk, dv, dqkv, dpos, dinv, n, hq, hk, hd, s);
    else if (t == DT_BF16) cuda_qkv_split_rope_bf16(dq, dk, dv, dqkv, dpos, dinv, n, hq, hk, hd, s);
    else cuda_qkv_split_rope_f16(dq, dk, dv, dqkv, dpos, dinv, n, hq, hk, hd, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    for (int i = 0; i < n; ++i) {
        memcpy(q + (size_t)i * hq * hd, qkv + i * row, (size_t)hq * hd * sizeof *q);
        memcpy(k + (size_t)i * hk * hd, qkv + i * row + (size_t)hq * hd, (size_t)hk * hd * sizeof *k);
        memcpy(v + (size_t)i * hk * hd, qkv + i * row + (size_t)(hq + hk) * hd, (size_t)hk * hd * sizeof *v);
    }
    op_rope(q, pos, inv, n, hq, hd);
    op_rope(k, pos, inv, n, hk, hd);
    double rtol = 8.0 * FLT_EPSILON + (t == DT_F32 ? 0.0 : dt_ulp(t)), atol = 8.0 * FLT_EPSILON + dt_atol(t);
    size_t bad = 0;
    download(got, dq, nq, t);
    bad += compare("qkv q", got, q, nq, rtol, atol);
    download(got, dk, nk, t);
    bad += compare("qkv k", got, k, nk, rtol, atol);
    download(got, dv, nk, t);
    bad += compare("qkv v", got, v, nk, 0.0, 0.0);
    TAP_OK(bad == 0, "qkv_split_rope %s n=%d hq=%d hk=%d hd=%d", dt_names[t], n, hq, hk, hd);
    CUDA_CHECK(cudaFree(dqkv)); CUDA_CHECK(cudaFree(dq)); CUDA_CHECK(cudaFree(dk)); CUDA_CHECK(cudaFree(dv));
    CUDA_CHECK(cudaFree(dpos)); CUDA_CHECK(cudaFree(dinv));
    free(qkv); free(inv); free(q); free(k); free(v); free(got); free(pos);
}

/* The fused gate/up SwiGLU against op_swiglu on the two halves: swiglu's tolerance. */
static void check_swiglu_fused(dtype t, int n, int dim, test_rng *rng, cudaStream_t s)
{
    size_t total = (size_t)n * dim;
    float *gu = xcalloc(2 * total, sizeof *gu), *g = xcalloc(total, sizeof *g), *u = xcalloc(total, sizeof *u);
    float *ref = xcalloc(total, sizeof *ref), *got = xcalloc(total, sizeof *got);
    fill_uniform(gu, 2 * total, rng, -8.0f, 8.0f);
    void *dgu = upload(gu, 2 * total, t), *dout = alloc_poisoned(total, t);
    for (int i = 0; i < n; ++i) {
        memcpy(g + (size_t)i * dim, gu + (size_t)i * 2 * dim, (size_t)dim * sizeof *g);
        memcpy(u + (size_t)i * dim, gu + (size_t)i * 2 * dim + dim, (size_t)dim * sizeof *u);
    }
    if (t == DT_F32) cuda_swiglu_fused_f32(dout, dgu, n, dim, s);
    else if (t == DT_BF16) cuda_swiglu_fused_bf16(dout, dgu, n, dim, s);
    else cuda_swiglu_fused_f16(dout, dgu, n, dim, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    download(got, dout, total, t);
    op_swiglu(ref, g, u, n, dim);
    double rtol = 16.0 * FLT_EPSILON + (t == DT_F32 ? 0.0 : dt_ulp(t));
    TAP_OK(compare("swiglu_fused", got, ref, total, rtol, dt_atol(t)) == 0, "swiglu_fused %s n=%d dim=%d",
           dt_names[t], n, dim);
    CUDA_CHECK(cudaFree(dgu)); CUDA_CHECK(cudaFree(dout));
    free(gu); free(g); free(u); free(ref); free(got);
}

static void check_type(dtype t, test_rng *rng, cudaStream_t s)
{
    const int norm_shapes[][2] = {{1, 1}, {3, 7}, {5, 129}, {2, 1000}, {4, 4096}, {3, 8192}};
    for (size_t i = 0; i < sizeof norm_shapes / sizeof norm_shapes[0]; ++i) {
        int n = norm_shapes[i][0], dim = norm_shapes[i][1];
        check_rmsnorm(t, n, dim, 0, rng, s);
        check_add_rmsnorm(t, n, dim, 0, rng, s);
    }
    check_rmsnorm(t, 3, 1000, 1, rng, s);
    check_add_rmsnorm(t, 3, 1000, 1, rng, s);
    check_add_rmsnorm(t, 3, 1000, 2, rng, s);

    check_rope(t, 1, 1, 2, 0, rng, s);
    check_rope(t, 3, 5, 6, 100, rng, s);
    check_rope(t, 7, 8, 64, 8191, rng, s);
    check_rope(t, 5, 32, 128, 131071, rng, s);
    check_rope(t, 2, 3, 256, 2000000, rng, s);

    check_swiglu(t, 1, 1, rng, s);
    check_swiglu(t, 3, 13, rng, s);
    check_swiglu(t, 7, 1001, rng, s);
    check_swiglu(t, 16, 11008, rng, s);

    check_embedding(t, 1, 1, 1, rng, s);
    check_embedding(t, 17, 5, 7, rng, s);
    check_embedding(t, 5000, 9, 1001, rng, s);
    check_embedding(t, 300, 33, 4096, rng, s);

    check_qkv_split_rope(t, 1, 1, 1, 2, rng, s);
    check_qkv_split_rope(t, 5, 8, 2, 64, rng, s);
    check_qkv_split_rope(t, 3, 32, 8, 128, rng, s);
    check_swiglu_fused(t, 1, 1, rng, s);
    check_swiglu_fused(t, 7, 1001, rng, s);
    check_swiglu_fused(t, 4, 14336, rng, s);
}

int main(void)
{
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
        TAP_DIAG("cudaGetDeviceCount: %s, %d devices", cudaGetErrorString(e), devices);
        TAP_SKIP_ALL("no CUDA device");
    }
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    test_rng rng = {1};
    for (int t = DT_F32; t <= DT_F16; ++t) check_type((dtype)t, &rng, s);

    /* The grid-stride loop must wrap: more elements than one grid of 65536 blocks * 256 threads. */
    check_swiglu(DT_F32, 3, 6000001, &rng, s);
    CUDA_CHECK(cudaStreamDestroy(s));
    return tap_done();
}
