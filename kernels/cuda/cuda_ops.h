/* C-callable launchers of the CUDA twins of kernels/ops.h: same semantics and layouts as the CPU op of
 * the same name, fp32 accumulation whatever the storage type. Storage comes in three flavours, chosen
 * by suffix: _f32 (float), _bf16 and _f16 (the raw 16-bit patterns of __nv_bfloat16 / __half, passed
 * as uint16_t so that C callers need no CUDA C++ headers). Every launcher takes outputs, inputs, sizes,
 * then the stream; it only enqueues (no allocation, no sync), asserts its preconditions, and aborts
 * with file:line if the launch itself fails. n = 0 launches nothing. */
#ifndef LORASERVE_KERNELS_CUDA_OPS_H
#define LORASERVE_KERNELS_CUDA_OPS_H

#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y = x / rms(x) * w over rows of dim; y may alias x. */
void cuda_rmsnorm_f32(float *y, const float *x, const float *w, int n, int dim, float eps, cudaStream_t stream);
void cuda_rmsnorm_bf16(uint16_t *y, const uint16_t *x, const uint16_t *w, int n, int dim, float eps,
                       cudaStream_t stream);
void cuda_rmsnorm_f16(uint16_t *y, const uint16_t *x, const uint16_t *w, int n, int dim, float eps,
                      cudaStream_t stream);

/* residual += x, then y = rmsnorm(residual) * w, normalising the residual as stored (rounded to the
 * storage type, as transformers does); y may alias x or residual. */
void cuda_add_rmsnorm_f32(float *residual, float *y, const float *x, const float *w, int n, int dim, float eps,
                          cudaStream_t stream);
void cuda_add_rmsnorm_bf16(uint16_t *residual, uint16_t *y, const uint16_t *x, const uint16_t *w, int n, int dim,
                           float eps, cudaStream_t stream);
void cuda_add_rmsnorm_f16(uint16_t *residual, uint16_t *y, const uint16_t *x, const uint16_t *w, int n, int dim,
                          float eps, cudaStream_t stream);

/* Rotates x[n, n_heads, head_dim] in place (rotate_half pairs j, j + head_dim/2), token i at pos[i];
 * inv_freq[head_dim/2] from op_rope_inv_freq. Angles in double, as on the CPU. */
void cuda_rope_f32(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                   cudaStream_t stream);
void cuda_rope_bf16(uint16_t *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                    cudaStream_t stream);
void cuda_rope_f16(uint16_t *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                   cudaStream_t stream);

/* out[n, dim] = silu(gate) * up. */
void cuda_swiglu_f32(float *out, const float *gate, const float *up, int n, int dim, cudaStream_t stream);
void cuda_swiglu_bf16(uint16_t *out, const uint16_t *gate, const uint16_t *up, int n, int dim, cudaStream_t stream);
void cuda_swiglu_f16(uint16_t *out, const uint16_t *gate, const uint16_t *up, int n, int dim, cudaStream_t stream);

/* out[n, dim] = table[tokens[i], :]; token ids must be valid (the coordinator checks them). */
void cuda_embedding_f32(float *out, const int32_t *tokens, const float *table, int n, int dim, cudaStream_t stream);
void cuda_embedding_bf16(uint16_t *out, const int32_t *tokens, const uint16_t *table, int n, int dim,
                         cudaStream_t stream);
void cuda_embedding_f16(uint16_t *out, const int32_t *tokens, const uint16_t *table, int n, int dim,
                        cudaStream_t stream);

/* ---- Batched LoRA (kernels/cuda/lora.cu): twins of op_lora_{shrink,expand}_{sgmv,bgmv} -------------
 * Same math and layouts as kernels/ops.h, but everything the kernels read lives in device memory: the
 * adapter rows (in the pool, one device allocation), the arrays of row pointers, the descriptors, the
 * per-segment / per-table arrays of descriptor pointers, seg_start and token_adapter. The host never
 * reads them, which is why every launcher takes max_rank: an upper bound on a_col0 + a_rows and on rank
 * of every descriptor reached by the call (<= CUDA_LORA_MAX_RANK; checked by device asserts), and at
 * most v_stride. v is fp32 whatever the storage type. Numerics: fp32 accumulation (tensor cores for
 * the 16-bit sgmv forms, with v split into two 16-bit parts so that the expand keeps ~fp32 precision,
 * which needs |v| < 65504 for f16), y rounded once into the storage type; a token's result depends only
 * on its own data, but sgmv and bgmv sum in different orders, so they agree to rounding, not bit for
 * bit as on the CPU. Rows may sit at any element offset; 16-byte-aligned rows (and x / y rows) take the
 * vector path. */
enum { CUDA_LORA_MAX_RANK = 256, CUDA_LORA_MAX_MODULES = 3 };

/* One adapter's (layer, module) on this rank, in device memory: lora_rows with device pointers. */
typedef struct cuda_lora_rows {
    const void *const *a;       // device array of a_rows device pointers, each `in` elements (storage type)
    const void *const *b;       // device array of rank device pointers to rows of B^T, each `out` elements
    int a_rows;                 // A rows held = shrink outputs produced on this rank (may be 0)
    int a_col0;                 // column of v where this rank's shrink outputs start
    int rank;                   // width of v the expand consumes (0: adds nothing)
    float scale;                // applied once, in the expand
} cuda_lora_rows;

/* One module of a fused shrink: its v (device, fp32) and its device array of descriptor pointers (per
 * segment for sgmv, per table entry for bgmv; NULL entries = base model only). */
typedef struct cuda_lora_shrink_out {
    float *v;
    int v_stride;
    const cuda_lora_rows *const *rows;
} cuda_lora_shrink_out;

/* SGMV / MBGMM (prefill): tokens [seg_start[s], seg_start[s+1]) use adapters[s] (device array of
 * n_segs device pointers, NULL = none). shrink: v[i, a_col0 + k] = x[i] . a[k], k < a_rows, other
 * columns untouched. expand: y[i, y_col0 + j] += scale * sum_{k < rank} v[i, k] b[k][j], j < out. */
void cuda_lora_shrink_sgmv_f32(float *v, int v_stride, const float *x, int in, const int32_t *seg_start, int n_segs,
                               const cuda_lora_rows *const *adapters, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_sgmv_bf16(float *v, int v_stride, const uint16_t *x, int in, const int32_t *seg_start,
                                int n_segs, const cuda_lora_rows *const *adapters, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_sgmv_f16(float *v, int v_stride, const uint16_t *x, int in, const int32_t *seg_start,
                               int n_segs, const cuda_lora_rows *const *adapters, int max_rank, cudaStream_t stream);
void cuda_lora_expand_sgmv_f32(float *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                               const int32_t *seg_start, int n_segs, const cuda_lora_rows *const *adapters,
                               int max_rank, cudaStream_t stream);
void cuda_lora_expand_sgmv_bf16(uint16_t *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                                const int32_t *seg_start, int n_segs, const cuda_lora_rows *const *adapters,
                                int max_rank, cudaStream_t stream);
void cuda_lora_expand_sgmv_f16(uint16_t *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                               const int32_t *seg_start, int n_segs, const cuda_lora_rows *const *adapters,
                               int max_rank, cudaStream_t stream);

/* BGMV / MBGMV (decode): token i (of n) uses table[token_adapter[i]] (device arrays; -1 or a NULL entry
 * = none); tokens need not be grouped, ranks may differ. Same math as sgmv. */
void cuda_lora_shrink_bgmv_f32(float *v, int v_stride, const float *x, int in, const int32_t *token_adapter, int n,
                               const cuda_lora_rows *const *table, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_bgmv_bf16(float *v, int v_stride, const uint16_t *x, int in, const int32_t *token_adapter,
                                int n, const cuda_lora_rows *const *table, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_bgmv_f16(float *v, int v_stride, const uint16_t *x, int in, const int32_t *token_adapter,
                               int n, const cuda_lora_rows *const *table, int max_rank, cudaStream_t stream);
void cuda_lora_expand_bgmv_f32(float *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                               const int32_t *token_adapter, int n, const cuda_lora_rows *const *table, int max_rank,
                               cudaStream_t stream);
void cuda_lora_expand_bgmv_bf16(uint16_t *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                                const int32_t *token_adapter, int n, const cuda_lora_rows *const *table,
                                int max_rank, cudaStream_t stream);
void cuda_lora_expand_bgmv_f16(uint16_t *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                               const int32_t *token_adapter, int n, const cuda_lora_rows *const *table, int max_rank,
                               cudaStream_t stream);

/* Fused shrink of 1..CUDA_LORA_MAX_MODULES modules that read the same x (q/k/v, gate/up) in one launch:
 * outs[m] (a host array, copied into the launch) is shrunk exactly as the single-module call would. */
void cuda_lora_shrink_sgmv_multi_f32(const cuda_lora_shrink_out *outs, int n_outs, const float *x, int in,
                                     const int32_t *seg_start, int n_segs, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_sgmv_multi_bf16(const cuda_lora_shrink_out *outs, int n_outs, const uint16_t *x, int in,
                                      const int32_t *seg_start, int n_segs, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_sgmv_multi_f16(const cuda_lora_shrink_out *outs, int n_outs, const uint16_t *x, int in,
                                     const int32_t *seg_start, int n_segs, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_bgmv_multi_f32(const cuda_lora_shrink_out *outs, int n_outs, const float *x, int in,
                                     const int32_t *token_adapter, int n, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_bgmv_multi_bf16(const cuda_lora_shrink_out *outs, int n_outs, const uint16_t *x, int in,
                                      const int32_t *token_adapter, int n, int max_rank, cudaStream_t stream);
void cuda_lora_shrink_bgmv_multi_f16(const cuda_lora_shrink_out *outs, int n_outs, const uint16_t *x, int in,
                                     const int32_t *token_adapter, int n, int max_rank, cudaStream_t stream);

/* ---- Sampling (kernels/cuda/sample.cu): the twin of op_sample ------------------------------------
 * Per-row parameters, field for field the layout of sample_params (sample.cu asserts it), so a host
 * array of sample_params can be copied to the device as it is. */
typedef struct cuda_sample_params {
    float temperature;          // <= 0: greedy
    float top_p;                // <= 0 or >= 1: off
    int top_k;                  // <= 0 or >= vocab: off
    uint64_t seed;
    uint32_t index;             // which generated token of the request this is
} cuda_sample_params;

/* Scratch bytes cuda_sample needs for n rows of vocab (three int32 buffers of vocab per row). */
size_t cuda_sample_scratch_bytes(int n, int vocab);
/* out_ids[r] = the token op_sample(logits + r*vocab, vocab, &params[r]) draws, for r < n: logits
 * [n, vocab] fp32, params a device array of n, all device memory. Same rules as the CPU (greedy ties
 * to the lowest id; temperature, top_k, top_p as transformers; one draw op_sample_uniform(seed, index);
 * the same inverse-CDF order), so the ids agree except where u * mass falls within ~1e-7 relative of a
 * cumulative boundary (double sums in another association, expf differing by an ulp): see sample.cu. */
void cuda_sample(int32_t *out_ids, const float *logits, int n, int vocab, const cuda_sample_params *params,
                 void *scratch, size_t scratch_bytes, cudaStream_t stream);
/* out[r] = op_sample_uniform(params[r].seed, params[r].index) computed on the device, bit for bit: the
 * draw cuda_sample uses for row r (exposed so tests can compare the bits). */
void cuda_sample_uniform(double *out, const cuda_sample_params *params, int n, cudaStream_t stream);

/* ---- Paged KV cache and paged attention (kernels/cuda/attention.cu): twins of op_kv_store and
 * op_paged_attention --------------------------------------------------------------------------------------
 * The pool is a kv_view (kernels/ops.h) given as plain numbers, in elements of the storage type: element
 * (page, layer, kv, slot, head, d) sits at
 *   page*page_stride + layer*layer_stride + kv*kv_stride + (slot*n_kv_heads + head)*head_dim + d.
 * Every array argument is device memory. 16-byte-aligned pointers with strides and head_dim multiples of
 * 16 bytes take the vector path; any other layout works through element loads. */

/* Writes k, v [n, n_kv_heads, head_dim] of n tokens (any mix of sequences): token i goes to slot
 * token_slot[i] of pool page token_page[i], which the caller resolved from the token's sequence page
 * table and position (page_table[pos / page_tokens], pos % page_tokens). No two tokens may share a slot;
 * a slot outside [0, page_tokens) or a negative page traps the kernel. */
void cuda_kv_store_f32(float *pool, const float *k, const float *v, const int32_t *token_page,
                       const int32_t *token_slot, int n, int layer, size_t page_stride, size_t layer_stride,
                       size_t kv_stride, int page_tokens, int n_kv_heads, int head_dim, cudaStream_t stream);
void cuda_kv_store_bf16(uint16_t *pool, const uint16_t *k, const uint16_t *v, const int32_t *token_page,
                        const int32_t *token_slot, int n, int layer, size_t page_stride, size_t layer_stride,
                        size_t kv_stride, int page_tokens, int n_kv_heads, int head_dim, cudaStream_t stream);
void cuda_kv_store_f16(uint16_t *pool, const uint16_t *k, const uint16_t *v, const int32_t *token_page,
                       const int32_t *token_slot, int n, int layer, size_t page_stride, size_t layer_stride,
                       size_t kv_stride, int page_tokens, int n_kv_heads, int head_dim, cudaStream_t stream);

/* Bytes of scratch a cuda_paged_attention_* call needs for up to max_tokens query rows and max_seqs
 * sequences (with these head counts and head_dim); a buffer sized for the maxima serves every smaller
 * call. Work lists plus split-K partials, whose number the planner bounds independently of the context
 * length: e.g. 4.4 MB for 8192 tokens, 256 sequences, 32 heads, 8 kv heads, head_dim 128. */
size_t cuda_paged_attention_scratch_bytes(int max_tokens, int max_seqs, int n_heads, int n_kv_heads, int head_dim);

/* Causal GQA attention of a whole step over the paged KV (which must already hold every position the
 * step attends to, this step's tokens included): the same result as op_paged_attention called per
 * sequence s with q + seq_tok_off[s]*n_heads*head_dim, page_table + seq_page_off[s], seq_start_pos[s] and
 * seq_n_tokens[s] (0 allowed), writing out [n_tokens, n_heads*head_dim] at the same rows. Sequences' rows
 * must lie in [0, n_tokens) and not overlap; rows no sequence covers are left untouched. window 0 = none.
 * head_dim <= 256. fp32 softmax and accumulation; 16-bit prefill runs on tensor cores with P rounded to
 * the storage type before the PV product (as FlashAttention); decode tokens (and f32 prefill) run split-K
 * SIMT in fp32. Deterministic: the same inputs give the same bits. scratch: 16-byte aligned, at least
 * cuda_paged_attention_scratch_bytes(n_tokens, n_seqs, ...) bytes (asserted), owned by the stream for the
 * call. Three launches (two for f32), no allocation, no sync; bad sequence arrays trap the plan kernel.
 * reuse_plan = 1 skips the plan kernel: the scratch already holds the plan of an earlier call of the same
 * step (same sequence arrays and counts, another layer), which is how a forward pass plans once per step. */
void cuda_paged_attention_f32(float *out, void *scratch, size_t scratch_bytes, const float *q, const float *pool,
                              size_t page_stride, size_t layer_stride, size_t kv_stride, int page_tokens,
                              int n_kv_heads, int head_dim, int layer, const int32_t *page_table,
                              const int32_t *seq_start_pos, const int32_t *seq_n_tokens, const int32_t *seq_tok_off,
                              const int32_t *seq_page_off, int n_seqs, int n_tokens, int n_heads, int window,
                              float scale, int reuse_plan, cudaStream_t stream);
void cuda_paged_attention_bf16(uint16_t *out, void *scratch, size_t scratch_bytes, const uint16_t *q,
                               const uint16_t *pool, size_t page_stride, size_t layer_stride, size_t kv_stride,
                               int page_tokens, int n_kv_heads, int head_dim, int layer, const int32_t *page_table,
                               const int32_t *seq_start_pos, const int32_t *seq_n_tokens, const int32_t *seq_tok_off,
                               const int32_t *seq_page_off, int n_seqs, int n_tokens, int n_heads, int window,
                               float scale, int reuse_plan, cudaStream_t stream);
void cuda_paged_attention_f16(uint16_t *out, void *scratch, size_t scratch_bytes, const uint16_t *q,
                              const uint16_t *pool, size_t page_stride, size_t layer_stride, size_t kv_stride,
                              int page_tokens, int n_kv_heads, int head_dim, int layer, const int32_t *page_table,
                              const int32_t *seq_start_pos, const int32_t *seq_n_tokens, const int32_t *seq_tok_off,
                              const int32_t *seq_page_off, int n_seqs, int n_tokens, int n_heads, int window,
                              float scale, int reuse_plan, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
