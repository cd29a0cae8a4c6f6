/* Rotary embeddings on the GPU, twin of op_rope (kernels/cpu/rope.c): rotate_half pairs (j, j + half),
 * angles pos * inv_freq in double so long contexts stay exact. One block per token: its threads first
 * build the token's cos/sin table in shared memory (half entries, shared by every head), then rotate
 * all heads' pairs from it. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_common.h"

#include <assert.h>

enum { ROPE_MAX_THREADS = 256, ROPE_MAX_SMEM = 48 * 1024 };   // the default dynamic shared memory limit

template <typename T>
__global__ void rope_kernel(T *x, const int32_t *pos, const float *inv_freq, int n_heads, int head_dim)
{
    extern __shared__ float cos_sin[];      // [half] cos, then [half] sin
    int half = head_dim / 2;
    double p = pos[blockIdx.x];
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        double s, c;
        sincos(p * (double)inv_freq[j], &s, &c);
        cos_sin[j] = (float)c;
        cos_sin[half + j] = (float)s;
    }
    __syncthreads();
    T *xt = x + (size_t)blockIdx.x * n_heads * head_dim;
    for (int e = threadIdx.x; e < n_heads * half; e += blockDim.x) {
        int h = e / half, j = e % half;
        T *xh = xt + (size_t)h * head_dim;
        float x1 = to_f32(xh[j]), x2 = to_f32(xh[j + half]);
        float c = cos_sin[j], s = cos_sin[half + j];
        xh[j] = from_f32<T>(x1 * c - x2 * s);
        xh[j + half] = from_f32<T>(x2 * c + x1 * s);
    }
}

template <typename T>
static void rope(T *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                 cudaStream_t stream)
{
    size_t smem = (size_t)head_dim * sizeof(float);
    assert(n >= 0 && n_heads > 0 && head_dim > 0 && head_dim % 2 == 0 && smem <= ROPE_MAX_SMEM);
    if (n == 0) return;
    assert(x && pos && inv_freq);
    int threads = threads_for(n_heads * head_dim / 2, ROPE_MAX_THREADS);
    rope_kernel<T><<<n, threads, smem, stream>>>(x, pos, inv_freq, n_heads, head_dim);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuda_rope_f32(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                              cudaStream_t stream)
{
    rope(x, pos, inv_freq, n, n_heads, head_dim, stream);
}

extern "C" void cuda_rope_bf16(uint16_t *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                               int head_dim, cudaStream_t stream)
{
    rope(as_bf16(x), pos, inv_freq, n, n_heads, head_dim, stream);
}

extern "C" void cuda_rope_f16(uint16_t *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                              int head_dim, cudaStream_t stream)
{
    rope(as_f16(x), pos, inv_freq, n, n_heads, head_dim, stream);
}
