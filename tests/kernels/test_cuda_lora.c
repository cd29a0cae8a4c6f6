/* The CUDA batched LoRA kernels (kernels/cuda/lora.cu) against their CPU twins (kernels/cpu/lora.c), for
 * each storage type. Adapter rows are rounded to the storage type, then placed in shuffled order at
 * scattered offsets (16-byte aligned, or at any element offset) of one NaN-filled device pool, so a
 * wrong row, index or overrun reads NaN; the CPU ops run on the same rounded values through host views
 * of the same rows. Batches mix ranks {1, 3, 8, 16, 64, 128} with segments of 65..140 tokens (several
 * 64-token tiles), short and empty segments and base-only (NULL) segments; bgmv gets the tokens
 * shuffled, some pointing at a NULL table entry. Checked: sgmv and bgmv shrink and expand, and the fused
 * three-module shrink (a whole view, a column-split view holding A rows [ceil(r/2), r) at a_col0 =
 * ceil(r/2) (none at all for r = 1), and a table with the adapters rotated). v and y are poisoned / hold
 * a base output: whatever the CPU leaves untouched must stay bit-identical on the GPU.
 * Tolerances (per element):
 *   shrink: 16 * FLT_EPSILON * sum_c |x_c a_kc|. Products of 16-bit values are exact in fp32 and both
 *     sides add them in fp32 in different orders (eight lanes vs MMA / per-thread chains); for the
 *     zero-mean test data the accumulated error is a fraction of an eps of that sum.
 *   expand: one ulp of the storage type times |ref| (the one rounding of y, which an fp32-level
 *     difference may tip) + 16 * FLT_EPSILON * |s| sum_k |v_k b_kj| (summation order) + the error of
 *     the 16-bit hi + lo split of v on tensor cores: 2^-16 (bf16) or 2^-22 plus 2^-24 absolute per term
 *     (f16) of the same sum, + the type's subnormal step.
 * The expand runs on the CPU's v, so each kernel is judged on its own. `--bench` prints timings
 * instead (BGMV decode, SGMV prefill). Without a device: a TAP skip plan. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>

enum { MAX_ADS = 6, MAX_SEGS = 2 * MAX_ADS + 2, PAD = 3, MODS = 3 };


static int rand_int(test_rng *rng, int n) { return (int)(rng_next(rng) % (uint64_t)n); }

static int is_poison(float f)                       // the all-ones pattern the device buffers start with
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u == 0xffffffffu;
}

/* ---- fixture ----------------------------------------------------------------------------------- */

/* Fused-shrink module m uses view vm[m] of adapter (d + rot[m]) % n_ads where a segment names d. */
static const int vm[MODS] = {0, 1, 0}, rot[MODS] = {0, 0, 1};

typedef struct adapter {
    int r;
    float scale;
    float *a, *bt;                  // [r][in], [r][out] (B^T), rounded to the storage type
    const float **pa, **pb;         // host row pointers for the CPU views
} adapter;

typedef struct fixture {
    dtype t;
    int in, out, n_ads, max_r, n, n_segs, vs, ys;
    adapter ads[MAX_ADS];
    lora_rows views[2][MAX_ADS];    // 0: the whole adapter; 1: the column-split view
    int32_t seg_start[MAX_SEGS + 1], seg_ad[MAX_SEGS];
    int32_t *perm, *tok_b;          // bgmv: token i is sgmv token perm[i], table index tok_b[i]
    float *x, *y0, *xb, *y0b;       // sgmv and bgmv (permuted) inputs, rounded
    void *pool, *dptrs, *ddesc, *dsegs, *dtables;
    void *dx, *dxb;
    int32_t *dseg_start, *dtok_b;
} fixture;

static const lora_rows *host_rows(const fixture *fx, int m, int d)
{
    return d < 0 || d >= fx->n_ads ? NULL : &fx->views[vm[m]][(d + rot[m]) % fx->n_ads];
}

/* Per-token views of module m: sgmv through the segments, bgmv through the table. */
static void token_views(const lora_rows **tv, const fixture *fx, int m, int bgmv)
{
    for (int s = 0; s < fx->n_segs; ++s)
        for (int i = fx->seg_start[s]; i < fx->seg_start[s + 1]; ++i) tv[i] = host_rows(fx, m, fx->seg_ad[s]);
    if (bgmv)
        for (int i = 0; i < fx->n; ++i) tv[i] = host_rows(fx, m, fx->tok_b[i]);
}

/* Copies every A and B^T row into a NaN-filled device pool in shuffled order, with gaps of 0..32
 * elements (multiples of 8 elements = 16 bytes when aligned, any count otherwise). Fills dptrs with
 * the device address of each row: adapter d's A rows then B^T rows, after those of d - 1. */
static void pool_place(fixture *fx, int aligned, test_rng *rng, size_t *row_base)
{
    size_t es = dt_size(fx->t), cap = 64, total = 0;
    for (int d = 0; d < fx->n_ads; ++d) {
        row_base[d] = total;
        total += 2 * (size_t)fx->ads[d].r;
        cap += (size_t)fx->ads[d].r * (fx->in + fx->out + 2 * 40);
    }
    int32_t *order = xcalloc(total, sizeof *order);
    for (size_t q = 0; q < total; ++q) order[q] = (int32_t)q;
    for (size_t q = total - 1; q > 0; --q) {
        int u = rand_int(rng, (int)q + 1), tmp = order[q];
        order[q] = order[u]; order[u] = tmp;
    }
    unsigned char *host = xcalloc(cap, es);
    memset(host, 0xff, cap * es);
    size_t *off = xcalloc(total, sizeof *off), used = 0;
    for (size_t q = 0; q < total; ++q) {
        int d = 0;
        while (d + 1 < fx->n_ads && row_base[d + 1] <= (size_t)order[q]) ++d;
        int k = order[q] - (int)row_base[d], r = fx->ads[d].r, is_b = k >= r, len = is_b ? fx->out : fx->in;
        used += aligned ? 8 * (size_t)rand_int(rng, 5) : (size_t)rand_int(rng, 33);
        if (aligned) used = (used + 7) / 8 * 8;
        const float *src = is_b ? fx->ads[d].bt + (size_t)(k - r) * len : fx->ads[d].a + (size_t)k * len;
        encode(host + used * es, src, len, fx->t);
        off[order[q]] = used;
        used += len;
    }
    CUDA_CHECK(cudaMalloc(&fx->pool, cap * es));
    CUDA_CHECK(cudaMemcpy(fx->pool, host, cap * es, cudaMemcpyHostToDevice));
    void **ptrs = xcalloc(total, sizeof *ptrs);
    for (size_t q = 0; q < total; ++q) ptrs[q] = (char *)fx->pool + off[q] * es;
    fx->dptrs = upload_raw(ptrs, total * sizeof *ptrs);
    free(order); free(host); free(off); free(ptrs);
}

/* Descriptors (both views of every adapter) and, per module, the segment array and the table (one
 * more entry, NULL), all in device memory. */
static void descriptors(fixture *fx, const size_t *row_base)
{
    int na = fx->n_ads;
    cuda_lora_rows desc[2 * MAX_ADS];
    const void *const *p = fx->dptrs;
    for (int d = 0; d < na; ++d) {
        adapter *ad = &fx->ads[d];
        int r = ad->r, h = (r + 1) / 2;
        const void *const *a = p + row_base[d], *const *b = p + row_base[d] + r;
        desc[d] = (cuda_lora_rows){.a = a, .b = b, .a_rows = r, .a_col0 = 0, .rank = r, .scale = ad->scale};
        desc[na + d] = (cuda_lora_rows){.a = a + h, .b = b, .a_rows = r - h, .a_col0 = h, .rank = r, .scale = ad->scale};
        fx->views[0][d] = (lora_rows){.a = ad->pa, .b = ad->pb, .a_rows = r, .a_col0 = 0, .rank = r, .scale = ad->scale};
        fx->views[1][d] = (lora_rows){.a = ad->pa + h, .b = ad->pb, .a_rows = r - h, .a_col0 = h, .rank = r,
                                      .scale = ad->scale};
    }
    fx->ddesc = upload_raw(desc, sizeof desc);
    const cuda_lora_rows *segs[MODS][MAX_SEGS], *tables[MODS][MAX_ADS + 1];
    const cuda_lora_rows *dd = fx->ddesc;
    for (int m = 0; m < MODS; ++m) {
        for (int s = 0; s < fx->n_segs; ++s)
            segs[m][s] = fx->seg_ad[s] < 0 ? NULL : dd + vm[m] * na + (fx->seg_ad[s] + rot[m]) % na;
        for (int d = 0; d <= na; ++d) tables[m][d] = d == na ? NULL : dd + vm[m] * na + (d + rot[m]) % na;
    }
    fx->dsegs = upload_raw(segs, sizeof segs);
    fx->dtables = upload_raw(tables, sizeof tables);
}

static void fixture_init(fixture *fx, dtype t, int in, int out, const int *ranks, int n_ads, int aligned, int long_min,
                         int long_span, test_rng *rng)
{
    memset(fx, 0, sizeof *fx);
    fx->t = t; fx->in = in; fx->out = out; fx->n_ads = n_ads;
    for (int d = 0; d < n_ads; ++d) {
        adapter *ad = &fx->ads[d];
        ad->r = ranks[d];
        ad->scale = rng_float(rng, 0.25f, 2.0f);
        ad->a = xcalloc((size_t)ad->r * in, sizeof *ad->a);
        ad->bt = xcalloc((size_t)ad->r * out, sizeof *ad->bt);
        fill_uniform(ad->a, (size_t)ad->r * in, rng, -1.0f, 1.0f);
        fill_uniform(ad->bt, (size_t)ad->r * out, rng, -1.0f, 1.0f);
        CUDA_CHECK(cudaFree(upload(ad->a, (size_t)ad->r * in, t)));      // round in place
        CUDA_CHECK(cudaFree(upload(ad->bt, (size_t)ad->r * out, t)));
        ad->pa = xcalloc(ad->r, sizeof *ad->pa);
        ad->pb = xcalloc(ad->r, sizeof *ad->pb);
        for (int k = 0; k < ad->r; ++k) { ad->pa[k] = ad->a + (size_t)k * in; ad->pb[k] = ad->bt + (size_t)k * out; }
        fx->max_r = ad->r > fx->max_r ? ad->r : fx->max_r;
    }
    int lens[MAX_SEGS];                             // a long and a short segment per adapter, two base-only
    for (int d = 0; d < n_ads; ++d) {
        fx->seg_ad[fx->n_segs] = d; lens[fx->n_segs++] = long_min + rand_int(rng, long_span);
        fx->seg_ad[fx->n_segs] = d; lens[fx->n_segs++] = rand_int(rng, 4);
    }
    fx->seg_ad[fx->n_segs] = -1; lens[fx->n_segs++] = 5;
    fx->seg_ad[fx->n_segs] = -1; lens[fx->n_segs++] = 0;
    for (int s = fx->n_segs - 1; s > 0; --s) {
        int u = rand_int(rng, s + 1), ta = fx->seg_ad[s], tl = lens[s];
        fx->seg_ad[s] = fx->seg_ad[u]; lens[s] = lens[u];
        fx->seg_ad[u] = ta; lens[u] = tl;
    }
    for (int s = 0; s < fx->n_segs; ++s) fx->seg_start[s + 1] = fx->seg_start[s] + lens[s];
    fx->n = fx->seg_start[fx->n_segs];
    fx->vs = fx->max_r + PAD;
    fx->ys = out + 2 * PAD;
    size_t row_base[MAX_ADS];
    pool_place(fx, aligned, rng, row_base);
    descriptors(fx, row_base);

    int n = fx->n;
    fx->x = xcalloc((size_t)n * in, sizeof *fx->x);
    fx->y0 = xcalloc((size_t)n * fx->ys, sizeof *fx->y0);
    fill_uniform(fx->x, (size_t)n * in, rng, -1.0f, 1.0f);
    fill_uniform(fx->y0, (size_t)n * fx->ys, rng, -1.0f, 1.0f);
    fx->dx = upload(fx->x, (size_t)n * in, t);
    CUDA_CHECK(cudaFree(upload(fx->y0, (size_t)n * fx->ys, t)));
    fx->dseg_start = upload_raw(fx->seg_start, (fx->n_segs + 1) * sizeof(int32_t));

    fx->perm = xcalloc(n, sizeof *fx->perm);       // bgmv: shuffled tokens, a third of the base-only
    fx->tok_b = xcalloc(n, sizeof *fx->tok_b);     // ones through the NULL table entry
    fx->xb = xcalloc((size_t)n * in, sizeof *fx->xb);
    fx->y0b = xcalloc((size_t)n * fx->ys, sizeof *fx->y0b);
    for (int i = 0; i < n; ++i) fx->perm[i] = i;
    for (int i = n - 1; i > 0; --i) {
        int u = rand_int(rng, i + 1), tmp = fx->perm[i];
        fx->perm[i] = fx->perm[u]; fx->perm[u] = tmp;
    }
    for (int s = 0; s < fx->n_segs; ++s)
        for (int i = fx->seg_start[s]; i < fx->seg_start[s + 1]; ++i) fx->tok_b[i] = fx->seg_ad[s];
    int32_t *by_token = xcalloc(n, sizeof *by_token);
    memcpy(by_token, fx->tok_b, n * sizeof *by_token);
    for (int i = 0; i < n; ++i) {
        fx->tok_b[i] = by_token[fx->perm[i]];
        if (fx->tok_b[i] < 0 && i % 3 == 0) fx->tok_b[i] = n_ads;
        memcpy(fx->xb + (size_t)i * in, fx->x + (size_t)fx->perm[i] * in, (size_t)in * sizeof *fx->xb);
        memcpy(fx->y0b + (size_t)i * fx->ys, fx->y0 + (size_t)fx->perm[i] * fx->ys, (size_t)fx->ys * sizeof *fx->y0b);
    }
    free(by_token);
    fx->dxb = upload(fx->xb, (size_t)n * in, t);
    fx->dtok_b = upload_raw(fx->tok_b, n * sizeof(int32_t));
}

static void fixture_free(fixture *fx)
{
    for (int d = 0; d < fx->n_ads; ++d) {
        free(fx->ads[d].a); free(fx->ads[d].bt); free(fx->ads[d].pa); free(fx->ads[d].pb);
    }
    free(fx->perm); free(fx->tok_b); free(fx->x); free(fx->y0); free(fx->xb); free(fx->y0b);
    void *dev[] = {fx->pool, fx->dptrs, fx->ddesc, fx->dsegs, fx->dtables, fx->dx, fx->dxb, fx->dseg_start, fx->dtok_b};
    for (size_t q = 0; q < sizeof dev / sizeof dev[0]; ++q) CUDA_CHECK(cudaFree(dev[q]));
}

/* ---- checks ------------------------------------------------------------------------------------ */

/* got against the CPU's v: columns the CPU left NaN must still hold the poison, the others the
 * shrink tolerance. */
static int v_ok(const char *what, const float *got, const float *ref, const float *x, int in, int n, int vs,
                const lora_rows *const *tv)
{
    size_t bad = 0;
    for (int i = 0; i < n; ++i)
        for (int c = 0; c < vs; ++c) {
            size_t e = (size_t)i * vs + c;
            double tol = 0.0;
            if (isnan(ref[e])) {
                if (is_poison(got[e])) continue;
            } else {
                const float *ak = tv[i]->a[c - tv[i]->a_col0], *xi = x + (size_t)i * in;
                double mag = 0.0;
                for (int q = 0; q < in; ++q) mag += fabs((double)xi[q] * ak[q]);
                tol = 16.0 * FLT_EPSILON * mag;
                if (fabs((double)got[e] - ref[e]) <= tol) continue;
            }
            if (bad++ < 3) printf("# %s: v[%d][%d] got %.9g want %.9g (tol %.3g)\n", what, i, c, got[e], ref[e], tol);
        }
    return bad == 0;
}

/* got against the CPU's y: bit-identical where the CPU left y0, else the expand tolerance. */
static int y_ok(const char *what, const fixture *fx, const float *got, const float *ref, const float *y0,
                const float *v, const lora_rows *const *tv)
{
    size_t bad = 0;
    double split = fx->t == DT_BF16 ? 0x1p-16 : fx->t == DT_F16 ? 0x1p-22 : 0.0;
    double split_abs = fx->t == DT_F16 ? 0x1p-24 : 0.0;
    for (int i = 0; i < fx->n; ++i)
        for (int c = 0; c < fx->ys; ++c) {
            size_t e = (size_t)i * fx->ys + c;
            int j = c - (PAD - 1);
            const lora_rows *l = tv[i];
            double tol = 0.0;
            if (!l || l->rank == 0 || j < 0 || j >= fx->out) {
                if (memcmp(&got[e], &y0[e], 4) == 0) continue;
            } else {
                double mag = 0.0, bmag = 0.0;
                for (int k = 0; k < l->rank; ++k) {
                    mag += fabs((double)v[(size_t)i * fx->vs + k] * l->b[k][j]);
                    bmag += fabs((double)l->b[k][j]);
                }
                mag *= fabs(l->scale);
                bmag *= fabs(l->scale);
                tol = dt_ulp(fx->t) * fabs(ref[e]) + (16.0 * FLT_EPSILON + split) * mag + split_abs * bmag +
                      dt_atol(fx->t);
                if (fabs((double)got[e] - ref[e]) <= tol) continue;
            }
            if (bad++ < 3) printf("# %s: y[%d][%d] got %.9g want %.9g (tol %.3g)\n", what, i, c, got[e], ref[e], tol);
        }
    return bad == 0;
}

static void shrink_gpu(const fixture *fx, float *v, const void *x, int bgmv, int n_mods)
{
    cuda_lora_shrink_out outs[MODS];
    for (int m = 0; m < n_mods; ++m) {
        const cuda_lora_rows *const *segs = fx->dsegs, *const *tables = fx->dtables;
        outs[m] = (cuda_lora_shrink_out){.v = v + (size_t)m * fx->n * fx->vs, .v_stride = fx->vs,
                                         .rows = bgmv ? tables + (size_t)m * (MAX_ADS + 1) : segs + (size_t)m * MAX_SEGS};
    }
    int in = fx->in, n = fx->n, ns = fx->n_segs, r = fx->max_r;
    const int32_t *ss = fx->dseg_start, *ta = fx->dtok_b;
    if (n_mods == 1 && !bgmv) {                     // the single-module entry points
        if (fx->t == DT_F32) cuda_lora_shrink_sgmv_f32(v, fx->vs, x, in, ss, ns, outs[0].rows, r, 0);
        else if (fx->t == DT_BF16) cuda_lora_shrink_sgmv_bf16(v, fx->vs, x, in, ss, ns, outs[0].rows, r, 0);
        else cuda_lora_shrink_sgmv_f16(v, fx->vs, x, in, ss, ns, outs[0].rows, r, 0);
    } else if (n_mods == 1) {
        if (fx->t == DT_F32) cuda_lora_shrink_bgmv_f32(v, fx->vs, x, in, ta, n, outs[0].rows, r, 0);
        else if (fx->t == DT_BF16) cuda_lora_shrink_bgmv_bf16(v, fx->vs, x, in, ta, n, outs[0].rows, r, 0);
        else cuda_lora_shrink_bgmv_f16(v, fx->vs, x, in, ta, n, outs[0].rows, r, 0);
    } else if (!bgmv) {
        if (fx->t == DT_F32) cuda_lora_shrink_sgmv_multi_f32(outs, n_mods, x, in, ss, ns, r, 0);
        else if (fx->t == DT_BF16) cuda_lora_shrink_sgmv_multi_bf16(outs, n_mods, x, in, ss, ns, r, 0);
        else cuda_lora_shrink_sgmv_multi_f16(outs, n_mods, x, in, ss, ns, r, 0);
    } else {
        if (fx->t == DT_F32) cuda_lora_shrink_bgmv_multi_f32(outs, n_mods, x, in, ta, n, r, 0);
        else if (fx->t == DT_BF16) cuda_lora_shrink_bgmv_multi_bf16(outs, n_mods, x, in, ta, n, r, 0);
        else cuda_lora_shrink_bgmv_multi_f16(outs, n_mods, x, in, ta, n, r, 0);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
}

static void expand_gpu(const fixture *fx, void *y, const float *v, int bgmv)
{
    const cuda_lora_rows *const *rows = bgmv ? fx->dtables : fx->dsegs;
    int ys = fx->ys, out = fx->out, vs = fx->vs, n = fx->n, ns = fx->n_segs, r = fx->max_r;
    const int32_t *ss = fx->dseg_start, *ta = fx->dtok_b;
    if (!bgmv) {
        if (fx->t == DT_F32) cuda_lora_expand_sgmv_f32(y, ys, PAD - 1, out, v, vs, ss, ns, rows, r, 0);
        else if (fx->t == DT_BF16) cuda_lora_expand_sgmv_bf16(y, ys, PAD - 1, out, v, vs, ss, ns, rows, r, 0);
        else cuda_lora_expand_sgmv_f16(y, ys, PAD - 1, out, v, vs, ss, ns, rows, r, 0);
    } else {
        if (fx->t == DT_F32) cuda_lora_expand_bgmv_f32(y, ys, PAD - 1, out, v, vs, ta, n, rows, r, 0);
        else if (fx->t == DT_BF16) cuda_lora_expand_bgmv_bf16(y, ys, PAD - 1, out, v, vs, ta, n, rows, r, 0);
        else cuda_lora_expand_bgmv_f16(y, ys, PAD - 1, out, v, vs, ta, n, rows, r, 0);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
}

/* The CPU op of module m on the sgmv or bgmv layout. */
static void shrink_cpu(const fixture *fx, float *v, int m, int bgmv)
{
    const lora_rows *rows[MAX_SEGS > MAX_ADS + 1 ? MAX_SEGS : MAX_ADS + 1];   // segments, or the table
    for (int q = 0; q < (bgmv ? fx->n_ads + 1 : fx->n_segs); ++q) rows[q] = host_rows(fx, m, bgmv ? q : fx->seg_ad[q]);
    for (size_t e = 0; e < (size_t)fx->n * fx->vs; ++e) v[e] = NAN;
    if (bgmv) op_lora_shrink_bgmv(v, fx->vs, fx->xb, fx->in, fx->tok_b, fx->n, rows);
    else op_lora_shrink_sgmv(v, fx->vs, fx->x, fx->in, fx->seg_start, fx->n_segs, rows);
}

/* Shrink (single module and fused three) and expand of one layout, GPU against CPU. */
static void check_layout(const fixture *fx, int bgmv)
{
    const char *form = bgmv ? "bgmv" : "sgmv", *ty = dt_names[fx->t];
    size_t nv = (size_t)fx->n * fx->vs, ny = (size_t)fx->n * fx->ys;
    float *v_ref = xcalloc(MODS * nv, sizeof *v_ref), *v_got = xcalloc(MODS * nv, sizeof *v_got);
    float *y_ref = xcalloc(ny, sizeof *y_ref), *y_got = xcalloc(ny, sizeof *y_got);
    const lora_rows **tv = xcalloc(fx->n, sizeof *tv);
    const float *x = bgmv ? fx->xb : fx->x, *y0 = bgmv ? fx->y0b : fx->y0;
    float *dv;
    CUDA_CHECK(cudaMalloc((void **)&dv, MODS * nv * sizeof *dv));
    for (int m = 0; m < MODS; ++m) shrink_cpu(fx, v_ref + m * nv, m, bgmv);

    CUDA_CHECK(cudaMemset(dv, 0xff, MODS * nv * sizeof *dv));
    shrink_gpu(fx, dv, bgmv ? fx->dxb : fx->dx, bgmv, 1);
    CUDA_CHECK(cudaMemcpy(v_got, dv, MODS * nv * sizeof *dv, cudaMemcpyDeviceToHost));
    token_views(tv, fx, 0, bgmv);
    int untouched = 1;
    for (size_t e = nv; e < MODS * nv; ++e) untouched &= is_poison(v_got[e]);
    TAP_OK(v_ok("shrink", v_got, v_ref, x, fx->in, fx->n, fx->vs, tv) && untouched,
           "%s shrink %s in=%d %d tokens, max rank %d", form, ty, fx->in, fx->n, fx->max_r);

    CUDA_CHECK(cudaMemset(dv, 0xff, MODS * nv * sizeof *dv));
    shrink_gpu(fx, dv, bgmv ? fx->dxb : fx->dx, bgmv, MODS);
    CUDA_CHECK(cudaMemcpy(v_got, dv, MODS * nv * sizeof *dv, cudaMemcpyDeviceToHost));
    int ok = 1;
    for (int m = 0; m < MODS; ++m) {
        token_views(tv, fx, m, bgmv);
        ok &= v_ok("fused shrink", v_got + m * nv, v_ref + m * nv, x, fx->in, fx->n, fx->vs, tv);
    }
    TAP_OK(ok, "%s fused 3-module shrink %s in=%d (whole, column-split, rotated table)", form, ty, fx->in);

    memcpy(y_ref, y0, ny * sizeof *y_ref);
    token_views(tv, fx, 0, bgmv);
    if (bgmv) {
        const lora_rows *table[MAX_ADS + 1];
        for (int d = 0; d <= fx->n_ads; ++d) table[d] = host_rows(fx, 0, d);
        op_lora_expand_bgmv(y_ref, fx->ys, PAD - 1, fx->out, v_ref, fx->vs, fx->tok_b, fx->n, table);
    } else {
        const lora_rows *segs[MAX_SEGS];
        for (int s = 0; s < fx->n_segs; ++s) segs[s] = host_rows(fx, 0, fx->seg_ad[s]);
        op_lora_expand_sgmv(y_ref, fx->ys, PAD - 1, fx->out, v_ref, fx->vs, fx->seg_start, fx->n_segs, segs);
    }
    float *y_in = xcalloc(ny, sizeof *y_in);
    memcpy(y_in, y0, ny * sizeof *y_in);
    void *dy = upload(y_in, ny, fx->t);            // y0 is already rounded: exact
    CUDA_CHECK(cudaMemcpy(dv, v_ref, nv * sizeof *dv, cudaMemcpyHostToDevice));   // NaN past each rank
    expand_gpu(fx, dy, dv, bgmv);
    download(y_got, dy, ny, fx->t);
    TAP_OK(y_ok("expand", fx, y_got, y_ref, y0, v_ref, tv), "%s expand %s out=%d (y_col0 %d) %d tokens, max rank %d",
           form, ty, fx->out, PAD - 1, fx->n, fx->max_r);
    CUDA_CHECK(cudaFree(dy)); CUDA_CHECK(cudaFree(dv));
    free(v_ref); free(v_got); free(y_ref); free(y_got); free(y_in); free((void *)tv);
}

/* Empty calls (no segments, no tokens, max_rank 0) launch nothing and touch nothing. */
static void check_empty(void)
{
    float *dv;
    CUDA_CHECK(cudaMalloc((void **)&dv, 16));
    CUDA_CHECK(cudaMemset(dv, 0xff, 16));
    cuda_lora_shrink_sgmv_bf16(dv, 4, NULL, 4, NULL, 0, NULL, 4, 0);
    cuda_lora_shrink_bgmv_f16(dv, 4, NULL, 4, NULL, 0, NULL, 4, 0);
    cuda_lora_expand_sgmv_f32(dv, 4, 0, 4, NULL, 4, NULL, 0, NULL, 4, 0);
    cuda_lora_expand_bgmv_f32(dv, 4, 0, 4, NULL, 4, NULL, 0, NULL, 0, 0);
    float got[4];
    CUDA_CHECK(cudaMemcpy(got, dv, 16, cudaMemcpyDeviceToHost));
    TAP_OK(is_poison(got[0]) && is_poison(got[3]), "empty calls write nothing");
    CUDA_CHECK(cudaFree(dv));
}

/* ---- timing (--bench) -------------------------------------------------------------------------- */

/* n tokens, n_ads adapters of rank r on an h x h bf16 module, `sets` copies of everything (so that
 * the adapters exceed L2 and the loop streams them from memory); token i uses adapter i % n_ads. */
typedef struct bench_setup {
    int n, n_ads, r, h, sets;
    uint16_t *pool, *x, *y;
    float *v;
    const cuda_lora_rows **tables;  // (sets, n_ads) device
    int32_t *tok, *seg;             // token_adapter; seg_start of n_ads equal segments
} bench_setup;

static void bench_init(bench_setup *b, int n, int n_ads, int r, int h, int sets)
{
    *b = (bench_setup){.n = n, .n_ads = n_ads, .r = r, .h = h, .sets = sets};
    size_t rows = (size_t)sets * n_ads * 2 * r;
    CUDA_CHECK(cudaMalloc((void **)&b->pool, rows * h * 2));
    CUDA_CHECK(cudaMemset(b->pool, 0x3c, rows * h * 2));          // bf16 0x3c3c: ~0.0115
    void **ptrs = xcalloc(rows, sizeof *ptrs);
    for (size_t q = 0; q < rows; ++q) ptrs[q] = b->pool + q * h;
    const void *const *dptrs = upload_raw(ptrs, rows * sizeof *ptrs);
    cuda_lora_rows *desc = xcalloc((size_t)sets * n_ads, sizeof *desc);
    for (int q = 0; q < sets * n_ads; ++q)
        desc[q] = (cuda_lora_rows){dptrs + (size_t)q * 2 * r, dptrs + (size_t)q * 2 * r + r, r, 0, r, 0.5f};
    const cuda_lora_rows *ddesc = upload_raw(desc, (size_t)sets * n_ads * sizeof *desc);
    const cuda_lora_rows **tables = xcalloc((size_t)sets * n_ads, sizeof *tables);
    for (int q = 0; q < sets * n_ads; ++q) tables[q] = ddesc + q;
    b->tables = upload_raw(tables, (size_t)sets * n_ads * sizeof *tables);
    int32_t *tok = xcalloc(n, sizeof *tok), *seg = xcalloc(n_ads + 1, sizeof *seg);
    for (int i = 0; i < n; ++i) tok[i] = i % n_ads;
    for (int s = 0; s <= n_ads; ++s) seg[s] = (int32_t)((int64_t)n * s / n_ads);
    b->tok = upload_raw(tok, n * sizeof *tok);
    b->seg = upload_raw(seg, (n_ads + 1) * sizeof *seg);
    CUDA_CHECK(cudaMalloc((void **)&b->x, (size_t)n * h * 2));
    CUDA_CHECK(cudaMalloc((void **)&b->y, (size_t)n * h * 2));
    CUDA_CHECK(cudaMalloc((void **)&b->v, (size_t)MODS * n * r * 4));
    CUDA_CHECK(cudaMemset(b->x, 0x3c, (size_t)n * h * 2));
    CUDA_CHECK(cudaMemset(b->y, 0, (size_t)n * h * 2));
    free(ptrs); free(desc); free(tables); free(tok); free(seg);
    // dptrs and ddesc live as long as the process: the bench ends it.
}

enum { OP_SHRINK_BGMV, OP_EXPAND_BGMV, OP_FUSED3_BGMV, OP_SHRINK_SGMV, OP_EXPAND_SGMV };

static void bench_op(const bench_setup *b, int op, int set)
{
    const cuda_lora_rows *const *t = b->tables + (size_t)set * b->n_ads;
    if (op == OP_SHRINK_BGMV) cuda_lora_shrink_bgmv_bf16(b->v, b->r, b->x, b->h, b->tok, b->n, t, b->r, 0);
    else if (op == OP_EXPAND_BGMV) cuda_lora_expand_bgmv_bf16(b->y, b->h, 0, b->h, b->v, b->r, b->tok, b->n, t, b->r, 0);
    else if (op == OP_SHRINK_SGMV) cuda_lora_shrink_sgmv_bf16(b->v, b->r, b->x, b->h, b->seg, b->n_ads, t, b->r, 0);
    else if (op == OP_EXPAND_SGMV) cuda_lora_expand_sgmv_bf16(b->y, b->h, 0, b->h, b->v, b->r, b->seg, b->n_ads, t, b->r, 0);
    else {
        cuda_lora_shrink_out outs[MODS];
        for (int m = 0; m < MODS; ++m)
            outs[m] = (cuda_lora_shrink_out){b->v + (size_t)m * b->n * b->r, b->r,
                                             b->tables + (size_t)((set + m) % b->sets) * b->n_ads};
        cuda_lora_shrink_bgmv_multi_bf16(outs, MODS, b->x, b->h, b->tok, b->n, b->r, 0);
    }
}

/* Mean microseconds per launch over `iters` back-to-back launches, cycling through the sets. */
static double bench_time(const bench_setup *b, int op, int iters)
{
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0)); CUDA_CHECK(cudaEventCreate(&e1));
    for (int i = 0; i < 10; ++i) bench_op(b, op, i % b->sets);
    CUDA_CHECK(cudaEventRecord(e0, 0));
    for (int i = 0; i < iters; ++i) bench_op(b, op, i % b->sets);
    CUDA_CHECK(cudaEventRecord(e1, 0));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    CUDA_CHECK(cudaEventDestroy(e0)); CUDA_CHECK(cudaEventDestroy(e1));
    return 1000.0 * ms / iters;
}

static void bench(void)
{
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("# device %s, L2 %d MiB\n", prop.name, prop.l2CacheSize >> 20);
    bench_setup b;
    bench_init(&b, 64, 64, 16, 4096, 8);            // 16 MiB of adapter rows per set, 128 MiB in all
    double ab = 64.0 * 16 * 4096 * 2, xb = 64.0 * 4096 * 2, vb = 64.0 * 16 * 4;
    double t = bench_time(&b, OP_SHRINK_BGMV, 400);
    printf("# bgmv shrink bf16 64 tok x 64 adapters r16, 4096 -> 16: %.2f us, %.0f GB/s\n", t, (ab + xb + vb) / t / 1e3);
    t = bench_time(&b, OP_EXPAND_BGMV, 400);
    printf("# bgmv expand bf16 64 tok x 64 adapters r16, 16 -> 4096: %.2f us, %.0f GB/s\n", t, (ab + 2 * xb + vb) / t / 1e3);
    t = bench_time(&b, OP_FUSED3_BGMV, 400);
    printf("# bgmv fused q/k/v shrink bf16 (3 x the above): %.2f us, %.0f GB/s\n", t, 3 * (ab + vb) / t / 1e3 + xb / t / 1e3);
    for (int r = 16; r <= 64; r *= 4) {
        bench_setup p;
        bench_init(&p, 4096, 4, r, 4096, 1);        // prefill: 4 sequences of 1024 tokens
        double flop = 2.0 * 4096 * r * 4096, big = 4096.0 * 4096 * 2, w = 4.0 * r * 4096 * 2;
        t = bench_time(&p, OP_SHRINK_SGMV, 50);
        printf("# sgmv shrink bf16 4096 tok x 4 adapters r%d, 4096 -> %d: %.1f us, %.1f TFLOP/s, %.0f GB/s\n", r, r, t,
               flop / t / 1e6, (big + w) / t / 1e3);
        t = bench_time(&p, OP_EXPAND_SGMV, 50);
        printf("# sgmv expand bf16 4096 tok x 4 adapters r%d, %d -> 4096: %.1f us, %.1f TFLOP/s, %.0f GB/s\n", r, r, t,
               flop / t / 1e6, (2 * big + w) / t / 1e3);
    }
}

int main(int argc, char **argv)
{
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
        TAP_DIAG("cudaGetDeviceCount: %s, %d devices", cudaGetErrorString(e), devices);
        TAP_SKIP_ALL("no CUDA device");
    }
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        bench();
        return 0;
    }
    test_rng rng = {20250611};
    const int mixed[] = {1, 3, 8, 16, 64, 128}, big[] = {16, 64, 128}, small[] = {2, 5, 16};
    const struct { int in, out; const int *ranks; int n_ads, aligned, long_min, long_span; } cases[] = {
        {131, 77, mixed, 6, 0, 65, 76},             // odd widths, rows at any offset: the scalar paths
        {1000, 520, mixed, 6, 1, 65, 76},           // vector paths, ragged last K stage and column tile
        {256, 136, small, 3, 0, 1, 140},            // aligned widths but misaligned rows
        {4096, 4096, big, 3, 1, 20, 50},            // model-sized module
    };
    for (int t = DT_F32; t <= DT_F16; ++t)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
            fixture fx;
            fixture_init(&fx, (dtype)t, cases[c].in, cases[c].out, cases[c].ranks, cases[c].n_ads, cases[c].aligned,
                         cases[c].long_min, cases[c].long_span, &rng);
            check_layout(&fx, 0);
            check_layout(&fx, 1);
            fixture_free(&fx);
        }
    check_empty();
    return tap_done();
}
