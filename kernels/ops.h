/* The op interface of the CPU backend: plain C, fp32 storage and accumulation. These functions are the
 * engine of the CPU backend and the oracle every CUDA kernel is tested against. Pure math: no
 * allocation (callers pass scratch), no I/O, no MPI. Weight matrices use the Hugging Face layout
 * [out, in] (row-major), activations are [n_tokens, dim] row-major. */
#ifndef LORASERVE_KERNELS_OPS_H
#define LORASERVE_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

/* y[n, out] = x[n, in] @ w[out, in]^T. */
void op_matmul(float *y, const float *x, const float *w, int n, int in, int out);
/* y[n, out] += x[n, in] @ w[out, in]^T. */
void op_matmul_acc(float *y, const float *x, const float *w, int n, int in, int out);

/* y = x / rms(x) * w over rows of dim; y may alias x. */
void op_rmsnorm(float *y, const float *x, const float *w, int n, int dim, float eps);
/* residual += x (per row), then y = rmsnorm(residual) * w: the fused add + norm between sublayers. */
void op_add_rmsnorm(float *residual, float *y, const float *x, const float *w, int n, int dim, float eps);

/* out[n, dim] = table[tokens[i], :]. */
void op_embedding(float *out, const int32_t *tokens, const float *table, int n, int dim);

/* Inverse frequencies for rotary embeddings, head_dim/2 of them, with Llama 3 "rope_scaling" when
 * scaling_type == 1 (factor, low/high frequency factors, original context). */
void op_rope_inv_freq(float *inv_freq, int head_dim, float theta, int scaling_type, float factor,
                      float low_freq_factor, float high_freq_factor, int original_max_position);
/* Rotates x[n, n_heads, head_dim] in place, token i at position pos[i], Hugging Face "rotate_half"
 * convention (pairs (j, j + head_dim/2)). Angles are computed in double so long contexts stay exact. */
void op_rope(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim);

/* out[n, dim] = silu(gate) * up. */
void op_swiglu(float *out, const float *gate, const float *up, int n, int dim);

/* Paged KV cache view. The pool is n_pages pages; a page holds page_tokens token slots for every layer,
 * K then V: element (page, layer, kv, slot, head, d) sits at
 *   page*page_stride + layer*layer_stride + kv*kv_stride + slot*n_kv_heads*head_dim + head*head_dim + d. */
typedef struct kv_view {
    float *pool;
    size_t page_stride;         // floats per page
    size_t layer_stride;        // floats per layer within a page
    size_t kv_stride;           // floats from K to V within a layer
    int page_tokens;
    int n_kv_heads;             // heads held by this rank
    int head_dim;
} kv_view;

/* Writes k, v [n, n_kv_heads, head_dim] for positions start_pos.. of one sequence into its pages. */
void op_kv_store(const kv_view *kv, int layer, const int32_t *page_table, int start_pos, int n,
                 const float *k, const float *v);
/* Causal GQA attention of one sequence over its paged KV (which must already hold positions
 * 0 .. start_pos+n-1): q[n, n_heads, head_dim] -> out[n, n_heads*head_dim]. Token i sits at position
 * start_pos+i and sees positions max(0, p-window+1) .. p (window 0 = no window). scratch holds at least
 * start_pos+n floats. */
void op_paged_attention(float *out, const float *q, const kv_view *kv, int layer, const int32_t *page_table,
                        int start_pos, int n, int n_heads, int window, float scale, float *scratch);

/* Sampling of one token from logits[vocab]. temperature <= 0 -> greedy (lowest id wins ties);
 * otherwise softmax(logits / temperature), top_k (0 = off), top_p (<= 0 or >= 1 = off), then one draw
 * from a counter-based generator keyed by (seed, index): the same request draws the same number at its
 * index-th token whatever else is in the batch, and a recomputed request reproduces its tokens.
 * scratch holds 2*vocab floats' worth (vocab floats + vocab ints). */
typedef struct sample_params {
    float temperature;
    float top_p;
    int top_k;
    uint64_t seed;
    uint32_t index;             // which generated token of the request this is (0 = first)
} sample_params;
int op_sample(const float *logits, int vocab, const sample_params *p, void *scratch);
/* The uniform draw op_sample uses, exposed so CUDA sampling draws the very same number. */
double op_sample_uniform(uint64_t seed, uint32_t index);

/* Batched LoRA (S-LoRA MBGMM / MBGMV, Punica SGMV / BGMV), the CPU twin of the LoRA kernels. LoRA is
 * applied unmerged, y += scale * (x A^T) B^T per token with that token's own adapter, in two passes:
 * shrink (v = x A^T, width r) and expand (y += scale * v B^T). Adapter rows are read through pointers
 * because they sit wherever the pool put them (common/lora_layout.h); the caller gathers one adapter's
 * pointers per (layer, module) into a lora_rows. Ranks may differ between adapters of one call.
 *
 * Tensor parallelism: for a column-split module (q, k, v, gate, up) a rank holds A rows
 * [a_col0, a_col0 + a_rows) of r over the full input, so its shrink fills only those columns of v and
 * the all-gather completes them; for a row-split module (o, down) it holds all r rows over its input
 * slice (a_col0 = 0, a_rows = r), its partial v is all-reduced, and the expand writes its output slice
 * at y_col0 inside the full-width base partial sum. The expand always reads v columns [0, rank).
 *
 * Numerics: fp32 throughout, no FMA; each v element is an eight-lane dot like op_matmul's, each
 * expand output one sequential sum over k, then y = y + scale * sum. A token's results
 * never depend on the other tokens of the call (batch invariance), so sgmv and bgmv agree bit for
 * bit and a split of output columns over ranks changes nothing. No allocation. x, v and y must not
 * overlap each other or the adapter rows. */
typedef struct lora_rows {
    const float *const *a;      // a_rows pointers, each `in` floats: the A rows this rank holds
    const float *const *b;      // rank pointers, each `out` floats: the rows of B^T (this rank's output slice)
    int a_rows;                 // A rows held = shrink outputs produced on this rank (may be 0)
    int a_col0;                 // column of v where this rank's shrink outputs start (rank-split modules)
    int rank;                   // r = B^T rows = width of v consumed by the expand (0: adds nothing)
    float scale;                // applied once, in the expand
} lora_rows;

/* SGMV / MBGMM (prefill): tokens [seg_start[s], seg_start[s+1]) share adapters[s] (NULL = base model
 * only: nothing written or added); seg_start has n_segs + 1 ascending entries, segments may be empty.
 * Token i's rows are x[i*in ..], v[i*v_stride ..], y[i*y_stride ..].
 * shrink: v[i*v_stride + a_col0 + k] = dot(x[i*in .. +in], a[k]) for k < a_rows; other columns untouched.
 * expand: y[i*y_stride + y_col0 + j] += scale * sum_k v[i*v_stride + k] * b[k][j] for j < out, k < rank. */
void op_lora_shrink_sgmv(float *v, int v_stride, const float *x, int in, const int32_t *seg_start, int n_segs,
                         const lora_rows *const *adapters);
void op_lora_expand_sgmv(float *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                         const int32_t *seg_start, int n_segs, const lora_rows *const *adapters);
/* MBGMV (decode): token i (of n) uses table[token_adapter[i]]; -1 or a NULL entry = none. Same math as
 * sgmv; tokens need not be grouped (consecutive tokens of one adapter do share row loads). */
void op_lora_shrink_bgmv(float *v, int v_stride, const float *x, int in, const int32_t *token_adapter, int n,
                         const lora_rows *const *table);
void op_lora_expand_bgmv(float *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                         const int32_t *token_adapter, int n, const lora_rows *const *table);

#endif
