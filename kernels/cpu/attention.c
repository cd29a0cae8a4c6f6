/* Paged KV cache writes and causal GQA attention over pages, the CPU twin of the paged-attention
 * kernel. A sequence's positions live in pages found through its page table (position p is slot
 * p % page_tokens of page page_table[p / page_tokens]), so nothing here assumes the pages are
 * contiguous or in order; that is what lets KV pages and adapter pages share one pool. One query row at
 * a time: scores into scratch, a max-subtracted softmax in fp32 (as transformers computes it), then the
 * weighted sum of V rows. */
#include "kernels/ops.h"

#include <assert.h>
#include <math.h>
#include <string.h>

enum { LANES = 8 };     // independent partial sums per dot, so gcc vectorizes without reassociating

/* The [n_kv_heads, head_dim] row of position pos; which = 0 for K, 1 for V. */
static inline float *kv_row(const kv_view *kv, int layer, const int32_t *page_table, int pos, int which)
{
    size_t page = (size_t)page_table[pos / kv->page_tokens];
    size_t slot = (size_t)(pos % kv->page_tokens);
    return kv->pool + page * kv->page_stride + (size_t)layer * kv->layer_stride + (size_t)which * kv->kv_stride
         + slot * (size_t)kv->n_kv_heads * kv->head_dim;
}

void op_kv_store(const kv_view *kv, int layer, const int32_t *page_table, int start_pos, int n,
                 const float *k, const float *v)
{
    size_t row = (size_t)kv->n_kv_heads * kv->head_dim;
    for (int i = 0; i < n; ++i) {
        memcpy(kv_row(kv, layer, page_table, start_pos + i, 0), k + i * row, row * sizeof(float));
        memcpy(kv_row(kv, layer, page_table, start_pos + i, 1), v + i * row, row * sizeof(float));
    }
}

static inline float dot(const float *restrict a, const float *restrict b, int len)
{
    float acc[LANES] = {0};
    int k = 0;
    for (; k + LANES <= len; k += LANES)
        for (int l = 0; l < LANES; ++l) acc[l] += a[k + l] * b[k + l];
    float s = 0.0f;
    for (int l = 0; l < LANES; ++l) s += acc[l];
    for (; k < len; ++k) s += a[k] * b[k];
    return s;
}

/* One query head against kv head kh over positions lo..hi (inclusive). */
static void attend_row(float *out, const float *q, const kv_view *kv, int layer, const int32_t *page_table,
                       int kh, int lo, int hi, float scale, float *scores)
{
    int hd = kv->head_dim;
    float mx = -INFINITY;
    for (int t = lo; t <= hi; ++t) {
        float s = dot(q, kv_row(kv, layer, page_table, t, 0) + (size_t)kh * hd, hd) * scale;
        scores[t - lo] = s;
        mx = s > mx ? s : mx;
    }
    float sum = 0.0f;
    for (int t = lo; t <= hi; ++t) {
        float e = expf(scores[t - lo] - mx);
        scores[t - lo] = e;
        sum += e;
    }
    for (int d = 0; d < hd; ++d) out[d] = 0.0f;
    for (int t = lo; t <= hi; ++t) {
        const float *v = kv_row(kv, layer, page_table, t, 1) + (size_t)kh * hd;
        float w = scores[t - lo];
        for (int d = 0; d < hd; ++d) out[d] += w * v[d];
    }
    float inv = 1.0f / sum;
    for (int d = 0; d < hd; ++d) out[d] *= inv;
}

void op_paged_attention(float *out, const float *q, const kv_view *kv, int layer, const int32_t *page_table,
                        int start_pos, int n, int n_heads, int window, float scale, float *scratch)
{
    assert(kv->n_kv_heads > 0 && n_heads % kv->n_kv_heads == 0);
    int group = n_heads / kv->n_kv_heads;   // query heads sharing one kv head (GQA)
    size_t row = (size_t)n_heads * kv->head_dim;
    for (int i = 0; i < n; ++i) {
        int p = start_pos + i;
        int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
        for (int h = 0; h < n_heads; ++h) {
            size_t off = i * row + (size_t)h * kv->head_dim;
            attend_row(out + off, q + off, kv, layer, page_table, h / group, lo, p, scale, scratch);
        }
    }
}
