/* Fused element-wise kernels around the fused q/k/v and gate/up GEMMs (see fused_ops.h): one pass over
 * the GEMM output instead of a split copy and a second kernel. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_common.h"
#include "kernels/cuda/fused_ops.h"

#include <assert.h>

enum { FUSED_MAX_THREADS = 256, FUSED_MAX_SMEM = 48 * 1024 };

/* One block per token: the token's cos/sin table in shared memory, then every q and k head rotated from
 * the qkv row into its own buffer, and v copied. */
template <typename T>
__global__ void qkv_split_rope_kernel(T *q, T *k, T *v, const T *qkv, const int32_t *pos, const float *inv_freq,
                                      int hq, int hk, int hd)
{
    extern __shared__ float cos_sin[];      // [half] cos, then [half] sin
    int half = hd / 2, t = blockIdx.x;
    double p = pos[t];
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        double s, c;
        sincos(p * (double)inv_freq[j], &s, &c);
        cos_sin[j] = (float)c;
        cos_sin[half + j] = (float)s;
    }
    __syncthreads();
    const T *row = qkv + (size_t)t * (hq + 2 * hk) * hd;
    for (int e = threadIdx.x; e < (hq + hk) * half; e += blockDim.x) {
        int h = e / half, j = e % half;
        const T *src = row + (size_t)h * hd;
        T *dst = h < hq ? q + ((size_t)t * hq + h) * hd : k + ((size_t)t * hk + (h - hq)) * hd;
        float x1 = to_f32(src[j]), x2 = to_f32(src[j + half]);
        float c = cos_sin[j], s = cos_sin[half + j];
        dst[j] = from_f32<T>(x1 * c - x2 * s);
        dst[j + half] = from_f32<T>(x2 * c + x1 * s);
    }
    const T *vsrc = row + (size_t)(hq + hk) * hd;
    for (int e = threadIdx.x; e < hk * hd; e += blockDim.x) v[(size_t)t * hk * hd + e] = vsrc[e];
}

template <typename T>
static void qkv_split_rope(T *q, T *k, T *v, const T *qkv, const int32_t *pos, const float *inv_freq, int n, int hq,
                           int hk, int hd, cudaStream_t stream)
{
    size_t smem = (size_t)hd * sizeof(float);
    assert(n >= 0 && hq > 0 && hk > 0 && hq % hk == 0 && hd > 0 && hd % 2 == 0 && smem <= FUSED_MAX_SMEM);
    if (n == 0) return;
    assert(q && k && v && qkv && pos && inv_freq);
    int threads = threads_for((hq + hk) * hd / 2, FUSED_MAX_THREADS);
    qkv_split_rope_kernel<T><<<n, threads, smem, stream>>>(q, k, v, qkv, pos, inv_freq, hq, hk, hd);
    CUDA_CHECK(cudaGetLastError());
}

template <typename T>
__global__ void swiglu_fused_kernel(T *out, const T *gate_up, int n, int dim)
{
    size_t total = (size_t)n * dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / dim, j = i % dim;
        float g = to_f32(gate_up[t * 2 * dim + j]), u = to_f32(gate_up[t * 2 * dim + dim + j]);
        out[i] = from_f32<T>(g / (1.0f + expf(-g)) * u);
    }
}

template <typename T>
static void swiglu_fused(T *out, const T *gate_up, int n, int dim, cudaStream_t stream)
{
    assert(n >= 0 && dim > 0);
    if (n == 0) return;
    assert(out && gate_up);
    size_t total = (size_t)n * dim;
    int blocks = (int)((total + FUSED_MAX_THREADS - 1) / FUSED_MAX_THREADS);
    if (blocks > 65535) blocks = 65535;
    swiglu_fused_kernel<T><<<blocks, FUSED_MAX_THREADS, 0, stream>>>(out, gate_up, n, dim);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuda_qkv_split_rope_f32(float *q, float *k, float *v, const float *qkv, const int32_t *pos,
                                        const float *inv_freq, int n, int hq, int hk, int hd, cudaStream_t stream)
{
    qkv_split_rope(q, k, v, qkv, pos, inv_freq, n, hq, hk, hd, stream);
}

extern "C" void cuda_qkv_split_rope_bf16(uint16_t *q, uint16_t *k, uint16_t *v, const uint16_t *qkv,
                                         const int32_t *pos, const float *inv_freq, int n, int hq, int hk, int hd,
                                         cudaStream_t stream)
{
    qkv_split_rope(as_bf16(q), as_bf16(k), as_bf16(v), as_bf16(qkv), pos, inv_freq, n, hq, hk, hd, stream);
}

extern "C" void cuda_qkv_split_rope_f16(uint16_t *q, uint16_t *k, uint16_t *v, const uint16_t *qkv,
                                        const int32_t *pos, const float *inv_freq, int n, int hq, int hk, int hd,
                                        cudaStream_t stream)
{
    qkv_split_rope(as_f16(q), as_f16(k), as_f16(v), as_f16(qkv), pos, inv_freq, n, hq, hk, hd, stream);
}

extern "C" void cuda_swiglu_fused_f32(float *out, const float *gate_up, int n, int dim, cudaStream_t stream)
{
    swiglu_fused(out, gate_up, n, dim, stream);
}

extern "C" void cuda_swiglu_fused_bf16(uint16_t *out, const uint16_t *gate_up, int n, int dim, cudaStream_t stream)
{
    swiglu_fused(as_bf16(out), as_bf16(gate_up), n, dim, stream);
}

extern "C" void cuda_swiglu_fused_f16(uint16_t *out, const uint16_t *gate_up, int n, int dim, cudaStream_t stream)
{
    swiglu_fused(as_f16(out), as_f16(gate_up), n, dim, stream);
}
