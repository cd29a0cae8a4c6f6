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

#ifdef __cplusplus
}
#endif

#endif
