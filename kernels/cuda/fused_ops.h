/* Fused launchers the CUDA forward pass needs around its fused GEMMs (one GEMM for q/k/v, one for
 * gate/up): they read the GEMM's interleaved rows directly instead of splitting them first. Same
 * conventions as cuda_ops.h (suffix = storage type, fp32 math, stream last). CPU twins: op_rope after a
 * split, and op_swiglu on the two halves. */
#ifndef LORASERVE_KERNELS_CUDA_FUSED_OPS_H
#define LORASERVE_KERNELS_CUDA_FUSED_OPS_H

#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* qkv rows [n, (hq + 2 hk) * hd] (q heads, then k, then v) -> q [n, hq, hd] and k [n, hk, hd] rotated
 * at pos (rotate_half, angles in double), v [n, hk, hd] copied. */
void cuda_qkv_split_rope_f32(float *q, float *k, float *v, const float *qkv, const int32_t *pos,
                             const float *inv_freq, int n, int hq, int hk, int hd, cudaStream_t stream);
void cuda_qkv_split_rope_bf16(uint16_t *q, uint16_t *k, uint16_t *v, const uint16_t *qkv, const int32_t *pos,
                              const float *inv_freq, int n, int hq, int hk, int hd, cudaStream_t stream);
void cuda_qkv_split_rope_f16(uint16_t *q, uint16_t *k, uint16_t *v, const uint16_t *qkv, const int32_t *pos,
                             const float *inv_freq, int n, int hq, int hk, int hd, cudaStream_t stream);

/* gate_up rows [n, 2 dim] (gate, then up) -> out [n, dim] = silu(gate) * up. */
void cuda_swiglu_fused_f32(float *out, const float *gate_up, int n, int dim, cudaStream_t stream);
void cuda_swiglu_fused_bf16(uint16_t *out, const uint16_t *gate_up, int n, int dim, cudaStream_t stream);
void cuda_swiglu_fused_f16(uint16_t *out, const uint16_t *gate_up, int n, int dim, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
