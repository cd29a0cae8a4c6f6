/* cuda_kv_store_* and cuda_paged_attention_* against their CPU twins op_kv_store / op_paged_attention, for
 * f32, bf16 and f16 storage. One mixed step per shape, as the scheduler builds them: three prefill chunks
 * (from position 0 and from later positions), eight decode tokens with contexts 1 .. 2000, and an empty
 * sequence, listed out of token order, with scrambled pages in a NaN-filled pool of several layers and
 * padded strides. The history goes in through one batched kv_store and the step's tokens through a
 * second, then the pool must equal the CPU's bit for bit (NaN where nothing was written). Inputs are
 * rounded to the storage type first and the CPU runs on those values, so tolerances only cover the
 * device's arithmetic and its roundings. Outputs are NaN-poisoned; a second call on the same scratch must
 * reproduce the first bit for bit (the split-K merge order is fixed). Skips without a CUDA device.
 * `test_cuda_attention quick` (or `tiny`) runs a subset, for compute-sanitizer. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "tests/kernels/cuda_test.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>


enum { N_LAYERS = 2, LAYER = 1, MAX_SEQS = 16, SPARE_PAGES = 9, TABLE_GAP = 3 };

/* {start_pos, n_tokens}: decodes at contexts 1, 2, 17, 64, 300, 999, 1500, 2000, prefill chunks from 0,
 * 150 and 700, one empty sequence. */
static const int seq_spec[][2] = {{0, 1},  {0, 37},   {1, 1},     {16, 1},   {150, 64},  {63, 1},
                                  {10, 0}, {299, 1},  {700, 129}, {998, 1},  {1499, 1}, {1999, 1}};
enum { N_SEQS = sizeof seq_spec / sizeof seq_spec[0] };

typedef struct attn_shape {
    const char *name;
    int n_heads, n_kv_heads, head_dim, page_tokens, window, odd_strides;
} attn_shape;

/* Random values in [-1, 1) rounded in place to what type t holds. */
static void fill_rounded(float *x, size_t n, dtype t, test_rng *rng)
{
    void *tmp = xcalloc(n, dt_size(t));
    fill_uniform(x, n, rng, -1.0f, 1.0f);
    encode(tmp, x, n, t);
    decode(x, tmp, n, t);
    free(tmp);
}

static void *upload_as(const float *x, size_t n, dtype t)
{
    void *host = xcalloc(n, dt_size(t)), *dev;
    encode(host, x, n, t);
    CUDA_CHECK(cudaMalloc(&dev, n * dt_size(t) + 1));
    CUDA_CHECK(cudaMemcpy(dev, host, n * dt_size(t), cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

static void launch_store(dtype t, void *pool, const void *k, const void *v, const int32_t *page, const int32_t *slot,
                         int n, const kv_view *kv, cudaStream_t s)
{
    if (t == DT_F32)
        cuda_kv_store_f32(pool, k, v, page, slot, n, LAYER, kv->page_stride, kv->layer_stride, kv->kv_stride,
                          kv->page_tokens, kv->n_kv_heads, kv->head_dim, s);
    else if (t == DT_BF16)
        cuda_kv_store_bf16(pool, k, v, page, slot, n, LAYER, kv->page_stride, kv->layer_stride, kv->kv_stride,
                           kv->page_tokens, kv->n_kv_heads, kv->head_dim, s);
    else
        cuda_kv_store_f16(pool, k, v, page, slot, n, LAYER, kv->page_stride, kv->layer_stride, kv->kv_stride,
                          kv->page_tokens, kv->n_kv_heads, kv->head_dim, s);
}

/* The step's device arrays. */
typedef struct dev_step {
    int32_t *table, *start, *n, *tok_off, *page_off;
    int n_seqs, n_tokens;
} dev_step;

static void launch_attention(dtype t, void *out, void *scratch, size_t bytes, const void *q, const void *pool,
                             const kv_view *kv, const dev_step *d, int n_heads, int window, float scale,
                             int reuse_plan, cudaStream_t s)
{
    if (t == DT_F32)
        cuda_paged_attention_f32(out, scratch, bytes, q, pool, kv->page_stride, kv->layer_stride, kv->kv_stride,
                                 kv->page_tokens, kv->n_kv_heads, kv->head_dim, LAYER, d->table, d->start, d->n,
                                 d->tok_off, d->page_off, d->n_seqs, d->n_tokens, n_heads, window, scale, reuse_plan, s);
    else if (t == DT_BF16)
        cuda_paged_attention_bf16(out, scratch, bytes, q, pool, kv->page_stride, kv->layer_stride, kv->kv_stride,
                                  kv->page_tokens, kv->n_kv_heads, kv->head_dim, LAYER, d->table, d->start, d->n,
                                  d->tok_off, d->page_off, d->n_seqs, d->n_tokens, n_heads, window, scale, reuse_plan, s);
    else
        cuda_paged_attention_f16(out, scratch, bytes, q, pool, kv->page_stride, kv->layer_stride, kv->kv_stride,
                                 kv->page_tokens, kv->n_kv_heads, kv->head_dim, LAYER, d->table, d->start, d->n,
                                 d->tok_off, d->page_off, d->n_seqs, d->n_tokens, n_heads, window, scale, reuse_plan, s);
}

/* Per output element, from the softmax weights w of its row (double, same rounded inputs):
 * mag = sum w|v| / sum w (what fp32 sums are relative to) and rms = sqrt(sum (w v)^2) / sum w (the scale
 * of independent per-weight roundings, as when P is rounded to 16 bits for the tensor-core PV). */
static void magnitudes(double *mag, double *rms, const float *q, const float *kd, const float *vd, int p, int lo,
                       int hd, int kv_row_len, int kh, float scale, double *w)
{
    double mx = -INFINITY, sum = 0.0;
    for (int t = lo; t <= p; ++t) {
        double s = 0.0;
        for (int d = 0; d < hd; ++d) s += (double)q[d] * kd[(size_t)t * kv_row_len + kh * hd + d];
        w[t] = s * scale;
        mx = w[t] > mx ? w[t] : mx;
    }
    for (int t = lo; t <= p; ++t) sum += (w[t] = exp(w[t] - mx));
    for (int d = 0; d < hd; ++d) {
        double a = 0.0, r = 0.0;
        for (int t = lo; t <= p; ++t) {
            double x = w[t] * vd[(size_t)t * kv_row_len + kh * hd + d];
            a += fabs(x);
            r += x * x;
        }
        mag[d] = a / sum;
        rms[d] = sqrt(r) / sum;
    }
}

/* fp32 sums over up to 2000 positions, in different orders on the two sides (the CPU's sequential, the
 * device's per key group and split): a few 1e-6 of mag; 2e-5 keeps margin while one missing position at
 * context 2000 moves an output by ~5e-4 of mag. 16-bit adds one output rounding (|ref| ulp) and, on the
 * tensor-core path, P rounded to the storage type: unit roundoff per weight, 2 ulp * rms is ~7 sigma. */
#define RTOL_F32 2e-5

static void check_shape(const attn_shape *sh, dtype t, test_rng *rng, cudaStream_t s)
{
    const int hd = sh->head_dim, pt = sh->page_tokens, kvr = sh->n_kv_heads * hd, qr = sh->n_heads * hd;
    const int pad = sh->odd_strides ? 3 : 8;
    kv_view kv = {.page_tokens = pt, .n_kv_heads = sh->n_kv_heads, .head_dim = hd};
    kv.kv_stride = (size_t)pt * kvr + pad;
    kv.layer_stride = 2 * kv.kv_stride + pad + 2 * sh->odd_strides;
    kv.page_stride = N_LAYERS * kv.layer_stride + pad + 4 * sh->odd_strides;

    int32_t start[MAX_SEQS], n[MAX_SEQS], tok_off[MAX_SEQS], page_off[MAX_SEQS], ctx[MAX_SEQS];
    int n_tokens = 0, n_hist = 0, table_len = TABLE_GAP, n_pages = SPARE_PAGES;
    for (int i = N_SEQS - 1; i >= 0; --i) {         // token rows in reverse sequence order
        start[i] = seq_spec[i][0]; n[i] = seq_spec[i][1]; ctx[i] = start[i] + n[i];
        tok_off[i] = n_tokens; n_tokens += n[i]; n_hist += start[i];
    }
    for (int i = 0; i < N_SEQS; ++i) {
        int pages = (ctx[i] + pt - 1) / pt;
        page_off[i] = table_len;
        table_len += pages + TABLE_GAP;             // gaps hold INT32_MAX: reading one faults
        n_pages += pages;
    }
    int32_t *perm = xcalloc(n_pages, sizeof *perm), *table = xcalloc(table_len, sizeof *table);
    for (int p = 0; p < n_pages; ++p) perm[p] = p;
    for (int p = n_pages - 1; p > 0; --p) {
        int j = (int)(rng_next(rng) % (uint64_t)(p + 1)), x = perm[p];
        perm[p] = perm[j]; perm[j] = x;
    }
    for (int x = 0; x < table_len; ++x) table[x] = INT32_MAX;
    for (int i = 0, used = 0; i < N_SEQS; ++i)
        for (int p = 0; p < (ctx[i] + pt - 1) / pt; ++p) table[page_off[i] + p] = perm[used++];

    /* Data: K/V of every position of every sequence, q of the step's rows. */
    float *kd[MAX_SEQS], *vd[MAX_SEQS];
    float *q = xcalloc((size_t)n_tokens * qr, sizeof *q);
    for (int i = 0; i < N_SEQS; ++i) {
        kd[i] = xcalloc((size_t)ctx[i] * kvr, sizeof(float));
        vd[i] = xcalloc((size_t)ctx[i] * kvr, sizeof(float));
        fill_rounded(kd[i], (size_t)ctx[i] * kvr, t, rng);
        fill_rounded(vd[i], (size_t)ctx[i] * kvr, t, rng);
    }
    fill_rounded(q, (size_t)n_tokens * qr, t, rng);

    /* Two batched stores (the history, then the step's tokens) vs op_kv_store per sequence. */
    size_t pool_n = (size_t)n_pages * kv.page_stride;
    kv.pool = xcalloc(pool_n, sizeof(float));
    for (size_t x = 0; x < pool_n; ++x) kv.pool[x] = NAN;
    void *dpool;
    CUDA_CHECK(cudaMalloc(&dpool, pool_n * dt_size(t)));
    CUDA_CHECK(cudaMemset(dpool, 0xff, pool_n * dt_size(t)));
    for (int phase = 0; phase < 2; ++phase) {
        int cnt = phase ? n_tokens : n_hist, at = 0;
        int32_t *tp = xcalloc(cnt, sizeof *tp), *ts = xcalloc(cnt, sizeof *ts);
        float *kb = xcalloc((size_t)cnt * kvr, sizeof *kb), *vb = xcalloc((size_t)cnt * kvr, sizeof *vb);
        for (int i = 0; i < N_SEQS; ++i) {
            int p0 = phase ? start[i] : 0, p1 = phase ? ctx[i] : start[i];
            for (int p = p0; p < p1; ++p, ++at) {
                int row = phase ? tok_off[i] + p - p0 : at;
                tp[row] = table[page_off[i] + p / pt]; ts[row] = p % pt;
                memcpy(kb + (size_t)row * kvr, kd[i] + (size_t)p * kvr, kvr * sizeof(float));
                memcpy(vb + (size_t)row * kvr, vd[i] + (size_t)p * kvr, kvr * sizeof(float));
            }
            op_kv_store(&kv, LAYER, table + page_off[i], p0, p1 - p0, kd[i] + (size_t)p0 * kvr,
                        vd[i] + (size_t)p0 * kvr);
        }
        void *dk = upload_as(kb, (size_t)cnt * kvr, t), *dv = upload_as(vb, (size_t)cnt * kvr, t);
        int32_t *dtp = upload_raw(tp, cnt * sizeof *tp), *dts = upload_raw(ts, cnt * sizeof *ts);
        launch_store(t, dpool, dk, dv, dtp, dts, cnt, &kv, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
        CUDA_CHECK(cudaFree(dk)); CUDA_CHECK(cudaFree(dv)); CUDA_CHECK(cudaFree(dtp)); CUDA_CHECK(cudaFree(dts));
        free(tp); free(ts); free(kb); free(vb);
    }
    float *gpool = xcalloc(pool_n, sizeof *gpool);
    download(gpool, dpool, pool_n, t);
    size_t bad_store = 0;
    for (size_t x = 0; x < pool_n; ++x)
        if (isnan(gpool[x]) != isnan(kv.pool[x]) || (!isnan(gpool[x]) && gpool[x] != kv.pool[x]))
            if (bad_store++ < 3) printf("# pool[%zu]: got %.9g want %.9g\n", x, gpool[x], kv.pool[x]);
    TAP_OK(bad_store == 0, "kv_store %s, %s: %d history + %d step tokens, pool bit-exact", dt_names[t], sh->name,
           n_hist, n_tokens);
    free(gpool);

    /* Attention on the device vs op_paged_attention per sequence; then again on the same scratch reusing
     * the first call's plan (as the layers of a step do): the split counters must have rearmed. */
    const float scale = (float)(1.0 / sqrt(hd));
    size_t qn = (size_t)n_tokens * qr;
    float *ref = xcalloc(qn, sizeof *ref), *got = xcalloc(qn, sizeof *got), *again = xcalloc(qn, sizeof *again);
    float *cpu_scratch = xcalloc(2048, sizeof(float));
    double *tol = xcalloc(qn, sizeof *tol), *want = xcalloc(qn, sizeof *want), *w = xcalloc(2048, sizeof *w);
    double *mag = xcalloc(hd, sizeof *mag), *rms = xcalloc(hd, sizeof *rms);
    for (int i = 0; i < N_SEQS; ++i)
        op_paged_attention(ref + (size_t)tok_off[i] * qr, q + (size_t)tok_off[i] * qr, &kv, LAYER,
                           table + page_off[i], start[i], n[i], sh->n_heads, sh->window, scale, cpu_scratch);
    for (int i = 0; i < N_SEQS; ++i)
        for (int j = 0; j < n[i]; ++j)
            for (int h = 0; h < sh->n_heads; ++h) {
                int p = start[i] + j, lo = sh->window > 0 && p - sh->window + 1 > 0 ? p - sh->window + 1 : 0;
                size_t o = ((size_t)(tok_off[i] + j) * sh->n_heads + h) * hd;
                magnitudes(mag, rms, q + o, kd[i], vd[i], p, lo, hd, kvr, h / (sh->n_heads / sh->n_kv_heads), scale, w);
                for (int d = 0; d < hd; ++d) {
                    double r = fabs(ref[o + d]);
                    want[o + d] = ref[o + d];
                    tol[o + d] = RTOL_F32 * (r + mag[d]) + dt_atol(t);
                    if (t != DT_F32) tol[o + d] += dt_ulp(t) * (r + 2.0 * rms[d]);
                }
            }
    dev_step d = {upload_raw(table, table_len * sizeof *table), upload_raw(start, N_SEQS * sizeof *start),
                  upload_raw(n, N_SEQS * sizeof *n), upload_raw(tok_off, N_SEQS * sizeof *tok_off),
                  upload_raw(page_off, N_SEQS * sizeof *page_off), N_SEQS, n_tokens};
    size_t bytes = cuda_paged_attention_scratch_bytes(n_tokens, N_SEQS, sh->n_heads, sh->n_kv_heads, hd);
    void *dq = upload_as(q, qn, t), *dout, *scratch;
    CUDA_CHECK(cudaMalloc(&dout, qn * dt_size(t)));
    CUDA_CHECK(cudaMalloc(&scratch, bytes));
    for (int rep = 0; rep < 2; ++rep) {
        CUDA_CHECK(cudaMemset(dout, 0xff, qn * dt_size(t)));
        launch_attention(t, dout, scratch, bytes, dq, dpool, &kv, &d, sh->n_heads, sh->window, scale, rep, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
        download(rep ? again : got, dout, qn, t);
    }
    double worst = 0.0;
    for (size_t x = 0; x < qn; ++x) {
        double e = fabs((double)got[x] - want[x]) / tol[x];
        worst = e > worst || isnan(e) ? e : worst;
    }
    TAP_OK(count_mismatches("attention", got, want, tol, qn) == 0,
           "paged_attention %s, %s: %d seqs, %d tokens, worst error %.3f of tol", dt_names[t], sh->name, N_SEQS,
           n_tokens, worst);
    TAP_OK(memcmp(got, again, qn * sizeof *got) == 0, "paged_attention %s, %s: second call, reusing the plan, bit-identical",
           dt_names[t], sh->name);

    CUDA_CHECK(cudaFree(d.table)); CUDA_CHECK(cudaFree(d.start)); CUDA_CHECK(cudaFree(d.n));
    CUDA_CHECK(cudaFree(d.tok_off)); CUDA_CHECK(cudaFree(d.page_off));
    CUDA_CHECK(cudaFree(dq)); CUDA_CHECK(cudaFree(dout)); CUDA_CHECK(cudaFree(scratch)); CUDA_CHECK(cudaFree(dpool));
    for (int i = 0; i < N_SEQS; ++i) { free(kd[i]); free(vd[i]); }
    free(q); free(ref); free(got); free(again); free(cpu_scratch); free(tol); free(want); free(w); free(mag);
    free(rms); free(kv.pool); free(perm); free(table);
}

int main(int argc, char **argv)
{
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
        TAP_DIAG("cudaGetDeviceCount: %s, %d devices", cudaGetErrorString(e), devices);
        TAP_SKIP_ALL("no CUDA device");
    }
    const attn_shape shapes[] = {
        {"GQA 4:1 head_dim 128 page 16", 8, 2, 128, 16, 0, 0},
        {"GQA 8:1 head_dim 64 page 5", 8, 1, 64, 5, 0, 0},
        {"MHA head_dim 64 page 16", 4, 4, 64, 16, 0, 0},
        {"GQA 4:1 head_dim 20 page 5 odd strides", 4, 1, 20, 5, 0, 1},
        {"GQA 4:1 head_dim 128 page 16 window 300", 8, 2, 128, 16, 300, 0},
        {"GQA 3:1 head_dim 40 page 5 window 77", 6, 2, 40, 5, 77, 0},
        {"GQA 2:1 head_dim 256 page 16", 4, 2, 256, 16, 0, 0},
        {"GQA 16:1 head_dim 64 page 16 window 1000", 16, 1, 64, 16, 1000, 0},
        {"MHA head_dim 128 page 5 odd strides", 2, 2, 128, 5, 0, 1},
    };
    /* quick: vector path, element path, window, head_dim 256; tiny (racecheck): two of them, f32 and bf16. */
    const size_t quick_set[] = {0, 3, 5, 6}, tiny_set[] = {0, 5}, all = sizeof shapes / sizeof shapes[0];
    const int quick = argc > 1 && strcmp(argv[1], "quick") == 0, tiny = argc > 1 && strcmp(argv[1], "tiny") == 0;
    const size_t *set = quick ? quick_set : tiny ? tiny_set : NULL;
    const size_t n_shapes = quick ? sizeof quick_set / sizeof *quick_set
                                  : tiny ? sizeof tiny_set / sizeof *tiny_set : all;
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    test_rng rng = {11};
    for (int t = DT_F32; t <= (tiny ? DT_BF16 : DT_F16); ++t)
        for (size_t i = 0; i < n_shapes; ++i) check_shape(&shapes[set ? set[i] : i], (dtype)t, &rng, s);
    CUDA_CHECK(cudaStreamDestroy(s));
    return tap_done();
}
