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

#endif
