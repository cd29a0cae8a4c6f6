/* op_kv_store + op_paged_attention against dense causal attention in double. The pool is laid out with
 * padded strides, several layers, and a page table whose pages are scrambled (not contiguous, not in
 * order), and is NaN-poisoned first: reading a slot that was never written turns the output into NaN
 * and fails the test; attending a written position outside the causal window is caught by the
 * reference. Cases: GQA and MHA, prefill from 0,
 * chunked prefill (start_pos > 0, n > 1), decode (n = 1), sliding window, head_dim not a multiple of 8. */
#include "kernels/ops.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>

enum { N_LAYERS = 3, LAYER = 1, N_PAGES = 40 };

typedef struct attn_case {
    const char *name;
    int n_heads, n_kv_heads, head_dim, page_tokens;
    int start_pos, n, window;
} attn_case;

/* Dense reference: token i (position start+i) of head h attends kv head h / group over positions
 * max(0, p - window + 1) .. p of k, v [len, n_kv_heads, head_dim]. */
static void reference(double *want, const float *q, const float *k, const float *v, const attn_case *c, double *w)
{
    int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    double scale = 1.0 / sqrt(hd);
    for (int i = 0; i < c->n; ++i) {
        int p = c->start_pos + i, lo = c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
        for (int h = 0; h < c->n_heads; ++h) {
            const float *qh = q + ((size_t)i * c->n_heads + h) * hd;
            size_t kv_off = (size_t)(h / group) * hd, kv_row = (size_t)c->n_kv_heads * hd;
            double mx = -INFINITY, sum = 0.0;
            for (int t = lo; t <= p; ++t) {
                double s = 0.0;
                for (int d = 0; d < hd; ++d) s += (double)qh[d] * k[t * kv_row + kv_off + d];
                w[t] = s * (double)(float)scale;
                mx = w[t] > mx ? w[t] : mx;
            }
            for (int t = lo; t <= p; ++t) sum += (w[t] = exp(w[t] - mx));
            double *o = want + ((size_t)i * c->n_heads + h) * hd;
            for (int d = 0; d < hd; ++d) {
                double acc = 0.0;
                for (int t = lo; t <= p; ++t) acc += w[t] * v[t * kv_row + kv_off + d];
                o[d] = acc / sum;
            }
        }
    }
}

/* A permutation of the pool's pages: page i of the sequence is pool page table[i]. */
static void scrambled_table(int32_t *table, int n, test_rng *rng)
{
    int32_t all[N_PAGES];
    for (int i = 0; i < N_PAGES; ++i) all[i] = i;
    for (int i = N_PAGES - 1; i > 0; --i) {
        int j = (int)(rng_next(rng) % (uint64_t)(i + 1));
        int32_t t = all[i]; all[i] = all[j]; all[j] = t;
    }
    memcpy(table, all, (size_t)n * sizeof *table);
}

static int untouched_outside_table(const kv_view *kv, const int32_t *table, int used, size_t pool_floats)
{
    char in_table[N_PAGES] = {0};
    for (int i = 0; i < used; ++i) in_table[table[i]] = 1;
    for (size_t f = 0; f < pool_floats; ++f) {
        size_t page = f / kv->page_stride, layer = f % kv->page_stride / kv->layer_stride;
        if ((!in_table[page] || layer != LAYER) && !isnan(kv->pool[f])) return 0;
    }
    return 1;
}

/* Outputs are convex combinations of V rows with weights from fp32 dot products and an fp32 softmax:
 * for |q|, |k|, |v| <= 1 and these lengths (<= 64 positions, head_dim <= 40) the error is a few 1e-6;
 * 2e-5 keeps margin while one wrong or missing position moves an output by ~1e-2. */
#define ATTN_TOL 2e-5

static void check_case(const attn_case *c, test_rng *rng)
{
    int len = c->start_pos + c->n, hd = c->head_dim, pages = (len + c->page_tokens - 1) / c->page_tokens;
    size_t kv_row = (size_t)c->n_kv_heads * hd, q_total = (size_t)c->n * c->n_heads * hd;
    kv_view kv = {.page_tokens = c->page_tokens, .n_kv_heads = c->n_kv_heads, .head_dim = hd};
    kv.kv_stride = c->page_tokens * kv_row + 3;     // padding everywhere: strides must be honoured
    kv.layer_stride = 2 * kv.kv_stride + 5;
    kv.page_stride = N_LAYERS * kv.layer_stride + 7;
    size_t pool_floats = N_PAGES * kv.page_stride;
    kv.pool = xcalloc(pool_floats, sizeof(float));
    for (size_t f = 0; f < pool_floats; ++f) kv.pool[f] = NAN;

    int32_t table[N_PAGES];
    scrambled_table(table, pages, rng);
    float *k = xcalloc(len * kv_row, sizeof *k), *v = xcalloc(len * kv_row, sizeof *v);
    float *q = xcalloc(q_total, sizeof *q), *out = xcalloc(q_total, sizeof *out);
    float *scratch = xcalloc(len, sizeof *scratch);
    double *want = xcalloc(q_total, sizeof *want), *tol = xcalloc(q_total, sizeof *tol), *w = xcalloc(len, sizeof *w);
    fill_uniform(k, len * kv_row, rng, -1.0f, 1.0f);
    fill_uniform(v, len * kv_row, rng, -1.0f, 1.0f);
    fill_uniform(q, q_total, rng, -1.0f, 1.0f);

    /* The history arrives as an earlier chunk, then this call's tokens, as the scheduler would do it. */
    op_kv_store(&kv, LAYER, table, 0, c->start_pos, k, v);
    op_kv_store(&kv, LAYER, table, c->start_pos, c->n, k + c->start_pos * kv_row, v + c->start_pos * kv_row);
    TAP_OK(untouched_outside_table(&kv, table, pages, pool_floats), "%s: kv_store writes only its pages and layer",
           c->name);

    for (size_t i = 0; i < q_total; ++i) { out[i] = NAN; tol[i] = ATTN_TOL; }
    op_paged_attention(out, q, &kv, LAYER, table, c->start_pos, c->n, c->n_heads, c->window,
                       (float)(1.0 / sqrt(hd)), scratch);
    reference(want, q, k, v, c, w);
    TAP_OK(count_mismatches(c->name, out, want, tol, q_total) == 0,
           "%s: heads=%d kv_heads=%d head_dim=%d page=%d start=%d n=%d window=%d", c->name, c->n_heads,
           c->n_kv_heads, hd, c->page_tokens, c->start_pos, c->n, c->window);
    free(kv.pool); free(k); free(v); free(q); free(out); free(scratch); free(want); free(tol); free(w);
}

int main(void)
{
    test_rng rng = {5};
    const attn_case cases[] = {
        {"prefill from 0, GQA 4:1", 8, 2, 16, 4, 0, 11, 0},
        {"chunked prefill, GQA 4:1", 8, 2, 16, 4, 9, 7, 0},
        {"decode, GQA 4:1", 8, 2, 16, 4, 22, 1, 0},
        {"decode, MHA, odd page", 3, 3, 20, 3, 40, 1, 0},
        {"chunked prefill, GQA 3:1, odd page", 6, 2, 40, 5, 13, 24, 0},
        {"single token sequence", 2, 1, 8, 4, 0, 1, 0},
        {"sliding window prefill", 4, 2, 16, 4, 3, 10, 5},
        {"sliding window decode", 4, 1, 24, 4, 30, 1, 7},
        {"window larger than context", 4, 2, 16, 4, 2, 6, 100},
        {"window 1 sees only itself", 2, 2, 8, 2, 4, 3, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) check_case(&cases[i], &rng);
    return tap_done();
}
