/* The token-wise GPU ops with no reduction, twins of kernels/cpu/elementwise.c: SwiGLU (a grid-stride
 * loop over every element) and the embedding gather (one block per token row). Both are pure memory
 * traffic; the gather keeps each row's reads contiguous across the block. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_common.h"

#include <assert.h>

enum { EW_THREADS = 256, EW_MAX_BLOCKS = 1 << 16 };

template <typename T>
__global__ void swiglu_kernel(T *out, const T *gate, const T *up, size_t total)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float g = to_f32(gate[i]);
        out[i] = from_f32<T>(g / (1.0f + expf(-g)) * to_f32(up[i]));   // silu(g) * up; -0 in the g -> -inf limit
    }
}

template <typename T>
__global__ void embedding_kernel(T *out, const int32_t *tokens, const T *table, int dim)
{
    const T *src = table + (size_t)tokens[blockIdx.x] * dim;
    T *dst = out + (size_t)blockIdx.x * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = src[j];
}

template <typename T>
static void swiglu(T *out, const T *gate, const T *up, int n, int dim, cudaStream_t stream)
{
    assert(n >= 0 && dim > 0);
    if (n == 0) return;
    assert(out && gate && up);
    size_t total = (size_t)n * dim;
    size_t want = (total + EW_THREADS - 1) / EW_THREADS;
    unsigned blocks = want < (size_t)EW_MAX_BLOCKS ? (unsigned)want : (unsigned)EW_MAX_BLOCKS;
    swiglu_kernel<T><<<blocks, EW_THREADS, 0, stream>>>(out, gate, up, total);
    CUDA_CHECK(cudaGetLastError());
}

template <typename T>
static void embedding(T *out, const int32_t *tokens, const T *table, int n, int dim, cudaStream_t stream)
{
    assert(n >= 0 && dim > 0);
    if (n == 0) return;
    assert(out && tokens && table);
    embedding_kernel<T><<<n, threads_for(dim, EW_THREADS), 0, stream>>>(out, tokens, table, dim);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuda_swiglu_f32(float *out, const float *gate, const float *up, int n, int dim, cudaStream_t stream)
{
    swiglu(out, gate, up, n, dim, stream);
}

extern "C" void cuda_swiglu_bf16(uint16_t *out, const uint16_t *gate, const uint16_t *up, int n, int dim,
                                 cudaStream_t stream)
{
    swiglu(as_bf16(out), as_bf16(gate), as_bf16(up), n, dim, stream);
}

extern "C" void cuda_swiglu_f16(uint16_t *out, const uint16_t *gate, const uint16_t *up, int n, int dim,
                                cudaStream_t stream)
{
    swiglu(as_f16(out), as_f16(gate), as_f16(up), n, dim, stream);
}

extern "C" void cuda_embedding_f32(float *out, const int32_t *tokens, const float *table, int n, int dim,
                                   cudaStream_t stream)
{
    embedding(out, tokens, table, n, dim, stream);
}

extern "C" void cuda_embedding_bf16(uint16_t *out, const int32_t *tokens, const uint16_t *table, int n, int dim,
                                    cudaStream_t stream)
{
    embedding(as_bf16(out), tokens, as_bf16(table), n, dim, stream);
}

extern "C" void cuda_embedding_f16(uint16_t *out, const int32_t *tokens, const uint16_t *table, int n, int dim,
                                   cudaStream_t stream)
{
    embedding(as_f16(out), tokens, as_f16(table), n, dim, stream);
}
