/* The batched LoRA ops (op_lora_{shrink,expand}_{sgmv,bgmv}) against a dense reference nobody could
 * get wrong the same way: the merged weight W + scale * B A in double, whose product with x minus x W^T
 * is the LoRA delta. Adapter rows sit in shuffled order at scattered, unaligned offsets of a
 * NaN-filled fake pool, so any wrong index or overrun reads NaN and fails. Covered: odd widths (the
 * scalar tails), mixed ranks 1..256 interleaved in one call, tokens without an adapter left untouched
 * bit for bit, padded strides, sgmv == bgmv bit for bit (also with the tokens shuffled: a token's result
 * does not depend on its neighbours), and tensor-parallel emulation: rank-split shrinks (uneven, one
 * rank holding no row) gathered, and row-split partial shrinks all-reduced, then expands over output
 * slices, against the unsplit result. */
#include "kernels/ops.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>

enum { MAX_ADAPTERS = 8, PAD = 3 };     // PAD: extra columns on each row of v and y that must stay untouched

/* One adapter's module: host copies for the reference, the same rows placed in the pool for the ops. */
typedef struct adapter {
    int r, in, out;
    float scale;
    float *a, *bt;              // [r][in] and [r][out] (B^T), contiguous
    const float **pa, **pb;     // the pool copies of those rows
    lora_rows rows;             // unsplit view (TP = 1)
} adapter;

/* Tokens in segments; seg_adapter / token_adapter hold adapter indices, -1 = base model only. */
typedef struct batch {
    int n, n_segs;
    int32_t seg_start[4 * MAX_ADAPTERS + 3], seg_adapter[4 * MAX_ADAPTERS + 2];
    int32_t *token_adapter;
} batch;

/* A case's buffers: x, the base output y0 (ys = row stride, columns [PAD-1, PAD-1+out) are the
 * module's), and v (vs = row stride) poisoned with NaN. */
typedef struct bufs {
    int ys, vs, y_col0;
    float *x, *y0, *y, *v;
} bufs;

static int rand_int(test_rng *rng, int n)
{
    return (int)(rng_next(rng) % (uint64_t)n);
}

static void fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; ++i) p[i] = NAN;
}

/* ---- fixtures --------------------------------------------------------------------------------- */

static void adapter_init(adapter *ad, int r, int in, int out, test_rng *rng)
{
    ad->r = r; ad->in = in; ad->out = out;
    ad->scale = rng_float(rng, 0.25f, 2.0f);
    ad->a = xcalloc((size_t)r * in, sizeof *ad->a);
    ad->bt = xcalloc((size_t)r * out, sizeof *ad->bt);
    ad->pa = xcalloc(r, sizeof *ad->pa);
    ad->pb = xcalloc(r, sizeof *ad->pb);
    fill_uniform(ad->a, (size_t)r * in, rng, -1.0f, 1.0f);
    fill_uniform(ad->bt, (size_t)r * out, rng, -1.0f, 1.0f);
    ad->rows = (lora_rows){.a = ad->pa, .b = ad->pb, .a_rows = r, .a_col0 = 0, .rank = r, .scale = ad->scale};
}

static void adapter_free(adapter *ad)
{
    free(ad->a); free(ad->bt); free(ad->pa); free(ad->pb);
}

/* Copies every A and B^T row of the adapters into a NaN-filled pool, in shuffled order, with gaps of
 * 1..32 floats (so rows are neither contiguous, ordered nor aligned, and an overrun reads NaN).
 * Returns the pool, which the caller frees. */
static float *pool_place(adapter *ads, int n_ads, test_rng *rng)
{
    int total = 0;
    size_t cap = 1;
    for (int d = 0; d < n_ads; ++d) {
        total += 2 * ads[d].r;
        cap += (size_t)ads[d].r * (ads[d].in + ads[d].out + 64);
    }
    int32_t *order = xcalloc(total, sizeof *order);
    for (int d = 0, t = 0; d < n_ads; ++d)
        for (int k = 0; k < 2 * ads[d].r; ++k) order[t++] = d << 16 | k;   // k >= r: B^T row k - r
    for (int t = total - 1; t > 0; --t) {
        int u = rand_int(rng, t + 1), tmp = order[t];
        order[t] = order[u]; order[u] = tmp;
    }
    float *pool = xcalloc(cap, sizeof *pool);
    fill_nan(pool, cap);
    size_t used = 0;
    for (int t = 0; t < total; ++t) {
        adapter *ad = &ads[order[t] >> 16];
        int k = order[t] & 0xffff, is_b = k >= ad->r;
        int row = is_b ? k - ad->r : k, len = is_b ? ad->out : ad->in;
        used += 1 + (size_t)rand_int(rng, 32);
        memcpy(pool + used, is_b ? ad->bt + (size_t)row * len : ad->a + (size_t)row * len, (size_t)len * sizeof *pool);
        (is_b ? ad->pb : ad->pa)[row] = pool + used;
        used += (size_t)len;
    }
    free(order);
    return pool;
}

/* Each adapter gets a long segment (5..12 tokens: four-token blocks plus leftovers) and a short one
 * (0..3), plus base-model and empty segments, all shuffled so adapters interleave. */
static void batch_init(batch *b, int n_ads, test_rng *rng)
{
    int lens[4 * MAX_ADAPTERS + 2];
    b->n_segs = 0;
    for (int d = 0; d < n_ads; ++d) {
        b->seg_adapter[b->n_segs] = d; lens[b->n_segs++] = 5 + rand_int(rng, 8);
        b->seg_adapter[b->n_segs] = d; lens[b->n_segs++] = rand_int(rng, 4);
    }
    b->seg_adapter[b->n_segs] = -1; lens[b->n_segs++] = 3;
    b->seg_adapter[b->n_segs] = -1; lens[b->n_segs++] = 0;
    for (int s = b->n_segs - 1; s > 0; --s) {
        int u = rand_int(rng, s + 1), ta = b->seg_adapter[s], tl = lens[s];
        b->seg_adapter[s] = b->seg_adapter[u]; lens[s] = lens[u];
        b->seg_adapter[u] = ta; lens[u] = tl;
    }
    b->seg_start[0] = 0;
    for (int s = 0; s < b->n_segs; ++s) b->seg_start[s + 1] = b->seg_start[s] + lens[s];
    b->n = b->seg_start[b->n_segs];
    b->token_adapter = xcalloc(b->n, sizeof *b->token_adapter);
    for (int s = 0; s < b->n_segs; ++s)
        for (int i = b->seg_start[s]; i < b->seg_start[s + 1]; ++i) b->token_adapter[i] = b->seg_adapter[s];
}

static void bufs_init(bufs *f, const batch *b, int in, int out, int max_r, test_rng *rng)
{
    f->ys = out + 2 * PAD;
    f->y_col0 = PAD - 1;
    f->vs = max_r + PAD;
    f->x = xcalloc((size_t)b->n * in, sizeof *f->x);
    f->y0 = xcalloc((size_t)b->n * f->ys, sizeof *f->y0);
    f->y = xcalloc((size_t)b->n * f->ys, sizeof *f->y);
    f->v = xcalloc((size_t)b->n * f->vs, sizeof *f->v);
    fill_uniform(f->x, (size_t)b->n * in, rng, -1.0f, 1.0f);
    fill_uniform(f->y0, (size_t)b->n * f->ys, rng, -1.0f, 1.0f);
}

static void bufs_reset(bufs *f, const batch *b)
{
    memcpy(f->y, f->y0, (size_t)b->n * f->ys * sizeof *f->y);
    fill_nan(f->v, (size_t)b->n * f->vs);
}

static void bufs_free(bufs *f)
{
    free(f->x); free(f->y0); free(f->y); free(f->v);
}

/* Per-segment (sgmv) or per-adapter (bgmv table) views: rows[d] is adapter d's view on some rank. */
static void seg_views(const lora_rows **segs, const batch *b, const lora_rows *rows)
{
    for (int s = 0; s < b->n_segs; ++s) segs[s] = b->seg_adapter[s] < 0 ? NULL : &rows[b->seg_adapter[s]];
}

static void run_sgmv(const bufs *f, const batch *b, int in, int out, const lora_rows *rows)
{
    const lora_rows *segs[4 * MAX_ADAPTERS + 2];
    seg_views(segs, b, rows);
    op_lora_shrink_sgmv(f->v, f->vs, f->x, in, b->seg_start, b->n_segs, segs);
    op_lora_expand_sgmv(f->y, f->ys, f->y_col0, out, f->v, f->vs, b->seg_start, b->n_segs, segs);
}

/* ---- the merged-weight reference -------------------------------------------------------------- */

/* want = y0 + (x (W + s B A)^T - x W^T) for adapted tokens in double, y0 elsewhere (tol 0 there).
 * tol bounds fp32 rounding to first order, in units of FLT_EPSILON times the magnitudes involved:
 * each v_k = dot(x, a_k) carries at most in/8 + 12 roundings of its terms' magnitude M_k (products,
 * eight lane sums of in/8 terms, the 3-level lane reduction, up to 7 tail terms); the expand adds r
 * products and sums, the scale and the add to y0, and propagates the v errors through |b|:
 *   tol = eps * ((in/8 + r + 16 + extra) * |s| * sum_k |b_kj| M_k + |y0|),
 * extra = roundings an emulated all-reduce adds. The double reference's own cancellation error (x W'
 * minus x W) is covered by a term in DBL_EPSILON. */
static void reference(double *want, double *tol, const adapter *ads, const batch *b, const bufs *f,
                      const float *w, int extra)
{
    int in = ads[0].in, out = ads[0].out;
    int max_r = 1;
    for (int d = 0; d < MAX_ADAPTERS && ads[d].a; ++d) max_r = ads[d].r > max_r ? ads[d].r : max_r;
    double *merged[MAX_ADAPTERS] = {0}, *m = xcalloc(max_r, sizeof *m);      // m[k]: M_k of the token
    for (int d = 0; d < MAX_ADAPTERS && ads[d].a; ++d) {
        merged[d] = xcalloc((size_t)out * in, sizeof *merged[d]);
        for (int j = 0; j < out; ++j)
            for (int c = 0; c < in; ++c) {
                double acc = w[(size_t)j * in + c];
                for (int k = 0; k < ads[d].r; ++k)
                    acc += (double)ads[d].scale * ads[d].bt[(size_t)k * out + j] * ads[d].a[(size_t)k * in + c];
                merged[d][(size_t)j * in + c] = acc;
            }
    }
    for (int i = 0; i < b->n; ++i) {
        const float *xi = f->x + (size_t)i * in, *y0 = f->y0 + (size_t)i * f->ys;
        double *wi = want + (size_t)i * f->ys, *ti = tol + (size_t)i * f->ys;
        for (int j = 0; j < f->ys; ++j) { wi[j] = y0[j]; ti[j] = 0.0; }
        int d = b->token_adapter[i];
        if (d < 0) continue;
        const adapter *ad = &ads[d];
        for (int k = 0; k < ad->r; ++k) {
            m[k] = 0.0;
            for (int c = 0; c < in; ++c) m[k] += fabs((double)xi[c] * ad->a[(size_t)k * in + c]);
        }
        for (int j = 0; j < out; ++j) {
            double merged_y = 0.0, base_y = 0.0, mag_d = 0.0, mag_lora = 0.0;
            for (int c = 0; c < in; ++c) {
                merged_y += xi[c] * merged[d][(size_t)j * in + c];
                base_y += (double)xi[c] * w[(size_t)j * in + c];
                mag_d += fabs(xi[c] * merged[d][(size_t)j * in + c]) + fabs((double)xi[c] * w[(size_t)j * in + c]);
            }
            for (int k = 0; k < ad->r; ++k) mag_lora += fabs((double)ad->bt[(size_t)k * out + j]) * m[k];
            int col = f->y_col0 + j;
            wi[col] = y0[col] + (merged_y - base_y);
            ti[col] = FLT_EPSILON * ((in / 8 + ad->r + 16 + extra) * fabs(ad->scale) * mag_lora + fabs(y0[col]))
                    + 4.0 * in * DBL_EPSILON * mag_d;
        }
    }
    for (int d = 0; d < MAX_ADAPTERS; ++d) free(merged[d]);
    free(m);
}

/* y within tol of want; elements with tol 0 (no adapter, padding columns) bit-identical to y0. */
static int y_matches(const char *what, const bufs *f, const batch *b, const double *want, const double *tol)
{
    size_t total = (size_t)b->n * f->ys;
    int bad = count_mismatches(what, f->y, want, tol, total) != 0;
    for (size_t e = 0; e < total; ++e)
        if (tol[e] == 0.0 && memcmp(&f->y[e], &f->y0[e], sizeof *f->y) != 0) {
            printf("# %s: y[%zu] touched (token without adapter or padding column)\n", what, e);
            return 0;
        }
    return !bad;
}

/* v columns of each token outside [r t/T, r (t+1)/T) (the A rows rank t of T holds) still NaN: the
 * shrink wrote nowhere else. */
static int v_untouched_outside(const bufs *f, const batch *b, const adapter *ads, int t, int T)
{
    for (int i = 0; i < b->n; ++i) {
        int d = b->token_adapter[i], r = d < 0 ? 0 : ads[d].r;
        int lo = r * t / T, hi = r * (t + 1) / T;
        if (d < 0) hi = lo = 0;
        for (int k = 0; k < f->vs; ++k)
            if ((k < lo || k >= hi) && !isnan(f->v[(size_t)i * f->vs + k])) return 0;
    }
    return 1;
}

/* ---- checks ----------------------------------------------------------------------------------- */

typedef struct fixture {
    int in, out, n_ads, max_r;
    adapter ads[MAX_ADAPTERS + 1];   // zero-terminated (a == NULL)
    lora_rows rows[MAX_ADAPTERS];
    float *pool, *w;
    batch b;
    bufs f;
    double *want, *tol;
} fixture;

static void fixture_init(fixture *fx, int in, int out, const int *ranks, int n_ads, test_rng *rng)
{
    memset(fx, 0, sizeof *fx);
    fx->in = in; fx->out = out; fx->n_ads = n_ads;
    for (int d = 0; d < n_ads; ++d) {
        adapter_init(&fx->ads[d], ranks[d], in, out, rng);
        fx->max_r = ranks[d] > fx->max_r ? ranks[d] : fx->max_r;
    }
    fx->pool = pool_place(fx->ads, n_ads, rng);
    for (int d = 0; d < n_ads; ++d) fx->rows[d] = fx->ads[d].rows;
    batch_init(&fx->b, n_ads, rng);
    bufs_init(&fx->f, &fx->b, in, out, fx->max_r, rng);
    fx->w = xcalloc((size_t)out * in, sizeof *fx->w);
    fill_uniform(fx->w, (size_t)out * in, rng, -1.0f, 1.0f);
    fx->want = xcalloc((size_t)fx->b.n * fx->f.ys, sizeof *fx->want);
    fx->tol = xcalloc((size_t)fx->b.n * fx->f.ys, sizeof *fx->tol);
}

static void fixture_free(fixture *fx)
{
    for (int d = 0; d < fx->n_ads; ++d) adapter_free(&fx->ads[d]);
    free(fx->pool); free(fx->w); free(fx->b.token_adapter); bufs_free(&fx->f); free(fx->want); free(fx->tol);
}

/* bgmv on the tokens in the order perm (NULL = as they are) equals sgmv's y and v bit for bit. */
static int bgmv_matches(const fixture *fx, const float *y_sgmv, const float *v_sgmv, test_rng *rng, int shuffle)
{
    const batch *b = &fx->b;
    int n = b->n, ys = fx->f.ys, vs = fx->f.vs, ok = 1;
    int32_t *perm = xcalloc(n, sizeof *perm), *ta = xcalloc(n, sizeof *ta);
    bufs g = fx->f;
    g.x = xcalloc((size_t)n * fx->in, sizeof *g.x);
    g.y = xcalloc((size_t)n * ys, sizeof *g.y);
    g.v = xcalloc((size_t)n * vs, sizeof *g.v);
    for (int i = 0; i < n; ++i) perm[i] = i;
    for (int i = n - 1; shuffle && i > 0; --i) {
        int u = rand_int(rng, i + 1), t = perm[i];
        perm[i] = perm[u]; perm[u] = t;
    }
    for (int i = 0; i < n; ++i) {
        ta[i] = b->token_adapter[perm[i]];
        memcpy(g.x + (size_t)i * fx->in, fx->f.x + (size_t)perm[i] * fx->in, (size_t)fx->in * sizeof *g.x);
        memcpy(g.y + (size_t)i * ys, fx->f.y0 + (size_t)perm[i] * ys, (size_t)ys * sizeof *g.y);
    }
    fill_nan(g.v, (size_t)n * vs);
    const lora_rows *table[MAX_ADAPTERS];
    for (int d = 0; d < fx->n_ads; ++d) table[d] = &fx->rows[d];
    op_lora_shrink_bgmv(g.v, vs, g.x, fx->in, ta, n, table);
    op_lora_expand_bgmv(g.y, ys, g.y_col0, fx->out, g.v, vs, ta, n, table);
    for (int i = 0; i < n; ++i) {
        ok &= memcmp(g.y + (size_t)i * ys, y_sgmv + (size_t)perm[i] * ys, (size_t)ys * sizeof *g.y) == 0;
        ok &= memcmp(g.v + (size_t)i * vs, v_sgmv + (size_t)perm[i] * vs, (size_t)vs * sizeof *g.v) == 0;
    }
    free(perm); free(ta); free(g.x); free(g.y); free(g.v);
    return ok;
}

/* (1) merged-weight reference, (2) mixed ranks and untouched tokens, (3) sgmv == bgmv, (5) odd sizes. */
static void check_batch(int in, int out, const int *ranks, int n_ads, test_rng *rng)
{
    fixture fx;
    fixture_init(&fx, in, out, ranks, n_ads, rng);
    bufs_reset(&fx.f, &fx.b);
    run_sgmv(&fx.f, &fx.b, in, out, fx.rows);
    reference(fx.want, fx.tol, fx.ads, &fx.b, &fx.f, fx.w, 0);
    TAP_OK(y_matches("sgmv", &fx.f, &fx.b, fx.want, fx.tol), "sgmv in=%d out=%d %d adapters (max r %d), %d tokens: "
           "merged-weight delta, base tokens and padding bit-exact", in, out, n_ads, fx.max_r, fx.b.n);
    TAP_OK(v_untouched_outside(&fx.f, &fx.b, fx.ads, 0, 1), "sgmv in=%d out=%d: shrink writes only v[0, r_i)",
           in, out);
    TAP_OK(bgmv_matches(&fx, fx.f.y, fx.f.v, rng, 0) && bgmv_matches(&fx, fx.f.y, fx.f.v, rng, 1),
           "bgmv in=%d out=%d == sgmv bit for bit, in order and with tokens shuffled", in, out);
    fixture_free(&fx);
}

/* (4a) column-split module over T ranks: rank t holds A rows [r t/T, r (t+1)/T) (a_col0 there) and
 * B^T columns [out t/T, out (t+1)/T). The gathered shrinks and the concatenated expands must equal
 * the unsplit run bit for bit: every element is computed by the same operations either way. */
static void check_column_split(int in, int out, const int *ranks, int n_ads, int T, test_rng *rng)
{
    fixture fx;
    fixture_init(&fx, in, out, ranks, n_ads, rng);
    bufs_reset(&fx.f, &fx.b);
    run_sgmv(&fx.f, &fx.b, in, out, fx.rows);
    size_t ny = (size_t)fx.b.n * fx.f.ys, nv = (size_t)fx.b.n * fx.f.vs;
    float *y_ref = xcalloc(ny, sizeof *y_ref), *v_gather = xcalloc(nv, sizeof *v_gather);
    memcpy(y_ref, fx.f.y, ny * sizeof *y_ref);
    fill_nan(v_gather, nv);
    lora_rows split[MAX_ADAPTERS];
    const float **bslices[MAX_ADAPTERS];
    int disjoint = 1;
    for (int t = 0; t < T; ++t) {              // shrink on every rank, then the all-gather
        for (int d = 0; d < n_ads; ++d) {
            int r = fx.ads[d].r, k0 = r * t / T, k1 = r * (t + 1) / T;
            split[d] = fx.rows[d];
            split[d].a = fx.ads[d].pa + k0;
            split[d].a_rows = k1 - k0;
            split[d].a_col0 = k0;
        }
        const lora_rows *segs[4 * MAX_ADAPTERS + 2];
        seg_views(segs, &fx.b, split);
        fill_nan(fx.f.v, nv);
        op_lora_shrink_sgmv(fx.f.v, fx.f.vs, fx.f.x, in, fx.b.seg_start, fx.b.n_segs, segs);
        disjoint &= v_untouched_outside(&fx.f, &fx.b, fx.ads, t, T);
        for (size_t e = 0; e < nv; ++e)
            if (!isnan(fx.f.v[e])) v_gather[e] = fx.f.v[e];
    }
    memcpy(fx.f.v, v_gather, nv * sizeof *v_gather);
    memcpy(fx.f.y, fx.f.y0, ny * sizeof *fx.f.y);
    int ys = fx.f.ys;
    float *y_local = xcalloc((size_t)fx.b.n * out, sizeof *y_local);
    for (int t = 0; t < T; ++t) {              // expand on every rank into its local output slice
        int o0 = out * t / T, o1 = out * (t + 1) / T;
        for (int d = 0; d < n_ads; ++d) {
            bslices[d] = xcalloc(fx.ads[d].r, sizeof *bslices[d]);
            for (int k = 0; k < fx.ads[d].r; ++k) bslices[d][k] = fx.ads[d].pb[k] + o0;
            split[d] = fx.rows[d];
            split[d].b = bslices[d];
        }
        const lora_rows *segs[4 * MAX_ADAPTERS + 2];
        seg_views(segs, &fx.b, split);
        for (int i = 0; i < fx.b.n; ++i)
            memcpy(y_local + (size_t)i * (o1 - o0), fx.f.y0 + (size_t)i * ys + fx.f.y_col0 + o0,
                   (size_t)(o1 - o0) * sizeof *y_local);
        op_lora_expand_sgmv(y_local, o1 - o0, 0, o1 - o0, fx.f.v, fx.f.vs, fx.b.seg_start, fx.b.n_segs, segs);
        for (int i = 0; i < fx.b.n; ++i)
            memcpy(fx.f.y + (size_t)i * ys + fx.f.y_col0 + o0, y_local + (size_t)i * (o1 - o0),
                   (size_t)(o1 - o0) * sizeof *y_local);
        for (int d = 0; d < n_ads; ++d) free(bslices[d]);
    }
    TAP_OK(disjoint, "column-split T=%d in=%d out=%d: each rank's shrink writes only its columns", T, in, out);
    TAP_OK(memcmp(fx.f.y, y_ref, ny * sizeof *y_ref) == 0,
           "column-split T=%d in=%d out=%d (ranks %d..): gathered shrink + sliced expand == unsplit, bit for bit",
           T, in, out, ranks[0]);
    free(y_ref); free(v_gather); free(y_local);
    fixture_free(&fx);
}

/* (4b) row-split module over T ranks: rank t holds all r A rows over input columns [in t/T,
 * in (t+1)/T) and shrinks its contiguous slice of x; the partial v are summed (the all-reduce), then
 * rank t expands B^T columns [out t/T, out (t+1)/T) at y_col0 + out t/T of the full-width y. Against
 * the merged reference with T more roundings (the all-reduce); each rank's expand must leave the
 * other ranks' columns bit-identical. */
static void check_row_split(int in, int out, const int *ranks, int n_ads, int T, test_rng *rng)
{
    fixture fx;
    fixture_init(&fx, in, out, ranks, n_ads, rng);
    int n = fx.b.n, ys = fx.f.ys, vs = fx.f.vs;
    size_t ny = (size_t)n * ys, nv = (size_t)n * vs;
    float *x_local = xcalloc((size_t)n * in, sizeof *x_local), *v_sum = xcalloc(nv, sizeof *v_sum);
    lora_rows split[MAX_ADAPTERS];
    const float **slices[MAX_ADAPTERS];
    const lora_rows *segs[4 * MAX_ADAPTERS + 2];
    fill_nan(v_sum, nv);
    for (int t = 0; t < T; ++t) {              // partial shrinks, then the all-reduce
        int c0 = in * t / T, c1 = in * (t + 1) / T;
        for (int i = 0; i < n; ++i)
            memcpy(x_local + (size_t)i * (c1 - c0), fx.f.x + (size_t)i * in + c0, (size_t)(c1 - c0) * sizeof *x_local);
        for (int d = 0; d < n_ads; ++d) {
            slices[d] = xcalloc(fx.ads[d].r, sizeof *slices[d]);
            for (int k = 0; k < fx.ads[d].r; ++k) slices[d][k] = fx.ads[d].pa[k] + c0;
            split[d] = fx.rows[d];
            split[d].a = slices[d];
        }
        seg_views(segs, &fx.b, split);
        fill_nan(fx.f.v, nv);
        op_lora_shrink_sgmv(fx.f.v, vs, x_local, c1 - c0, fx.b.seg_start, fx.b.n_segs, segs);
        for (size_t e = 0; e < nv; ++e) v_sum[e] = t == 0 ? fx.f.v[e] : v_sum[e] + fx.f.v[e];
        for (int d = 0; d < n_ads; ++d) free(slices[d]);
    }
    memcpy(fx.f.v, v_sum, nv * sizeof *v_sum);
    memcpy(fx.f.y, fx.f.y0, ny * sizeof *fx.f.y);
    float *y_one = xcalloc(ny, sizeof *y_one);
    int others_untouched = 1;
    for (int t = 0; t < T; ++t) {              // expands into the rank's columns of the full y
        int o0 = out * t / T, o1 = out * (t + 1) / T;
        for (int d = 0; d < n_ads; ++d) {
            slices[d] = xcalloc(fx.ads[d].r, sizeof *slices[d]);
            for (int k = 0; k < fx.ads[d].r; ++k) slices[d][k] = fx.ads[d].pb[k] + o0;
            split[d] = fx.rows[d];
            split[d].b = slices[d];
        }
        seg_views(segs, &fx.b, split);
        op_lora_expand_sgmv(fx.f.y, ys, fx.f.y_col0 + o0, o1 - o0, fx.f.v, vs, fx.b.seg_start, fx.b.n_segs, segs);
        memcpy(y_one, fx.f.y0, ny * sizeof *y_one);   // this rank alone: only its columns may change
        op_lora_expand_sgmv(y_one, ys, fx.f.y_col0 + o0, o1 - o0, fx.f.v, vs, fx.b.seg_start, fx.b.n_segs, segs);
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < ys; ++j) {
                size_t e = (size_t)i * ys + j;
                int mine = j >= fx.f.y_col0 + o0 && j < fx.f.y_col0 + o1;
                if (!mine) others_untouched &= memcmp(&y_one[e], &fx.f.y0[e], sizeof *y_one) == 0;
            }
        for (int d = 0; d < n_ads; ++d) free(slices[d]);
    }
    reference(fx.want, fx.tol, fx.ads, &fx.b, &fx.f, fx.w, T);
    TAP_OK(others_untouched, "row-split T=%d in=%d out=%d: a rank's expand writes only its y_col0 slice", T, in, out);
    TAP_OK(y_matches("row-split", &fx.f, &fx.b, fx.want, fx.tol),
           "row-split T=%d in=%d out=%d (ranks %d..): summed partial shrinks + sliced expands == merged reference",
           T, in, out, ranks[0]);
    free(x_local); free(v_sum); free(y_one);
    fixture_free(&fx);
}

/* Empty calls and an adapter of rank 0 (module not adapted) write nothing. */
static void check_degenerate(void)
{
    float y[4] = {1.0f, -0.0f, 3.0f, 4.0f}, v[4] = {NAN, NAN, NAN, NAN}, x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    float y_copy[4], v_copy[4];
    memcpy(y_copy, y, sizeof y); memcpy(v_copy, v, sizeof v);
    lora_rows zero = {.a = NULL, .b = NULL, .a_rows = 0, .a_col0 = 0, .rank = 0, .scale = 1.0f};
    const lora_rows *segs[1] = {&zero};
    int32_t seg_start[2] = {0, 1}, token_adapter[1] = {0};
    op_lora_shrink_sgmv(v, 4, x, 4, seg_start, 1, segs);
    op_lora_expand_sgmv(y, 4, 0, 4, v, 4, seg_start, 1, segs);
    op_lora_shrink_bgmv(v, 4, x, 4, token_adapter, 1, segs);
    op_lora_expand_bgmv(y, 4, 0, 4, v, 4, token_adapter, 1, segs);
    op_lora_shrink_sgmv(v, 4, x, 4, seg_start, 0, NULL);
    op_lora_expand_bgmv(y, 4, 0, 4, v, 4, token_adapter, 0, NULL);
    TAP_OK(memcmp(y, y_copy, sizeof y) == 0 && memcmp(v, v_copy, sizeof v) == 0,
           "rank-0 adapter and empty calls write nothing");
}

int main(void)
{
    test_rng rng = {20240611};
    const int small[] = {4, 8, 2};
    const int mixed[] = {1, 3, 8, 16, 64, 128, 256};
    const int tiled[] = {128, 256, 5};          // in=1030: 63 A rows per shrink tile; r=256: 256-column expand tiles
    const struct { int in, out; const int *ranks; int n; } batches[] = {
        {1, 1, small, 3}, {7, 5, small, 3}, {13, 37, small, 3}, {64, 48, small, 3},
        {131, 77, mixed, 7}, {96, 136, mixed, 7}, {1030, 300, tiled, 3},
    };
    for (size_t c = 0; c < sizeof batches / sizeof batches[0]; ++c)
        check_batch(batches[c].in, batches[c].out, batches[c].ranks, batches[c].n, &rng);

    const int tp_a[] = {3, 16, 1}, tp_b[] = {2, 64, 7};
    for (int T = 2; T <= 3; ++T) {
        check_column_split(131, 77, tp_a, 3, T, &rng);
        check_column_split(40, 33, tp_b, 3, T, &rng);
        check_row_split(131, 77, tp_a, 3, T, &rng);
        check_row_split(40, 33, tp_b, 3, T, &rng);
    }
    check_degenerate();
    return tap_done();
}
