/* RMSNorm and the fused residual add + RMSNorm on the GPU, twins of kernels/cpu/norm.c. One block per
 * token row: the row is read once to sum squares (fp32, block-wide reduction), then again (from L1/L2)
 * to scale. Each thread touches the same elements in both passes, which is what makes y == x and
 * y == residual aliasing safe without a second buffer. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_common.h"

#include <assert.h>

enum { NORM_MAX_THREADS = 512 };

template <typename T>
__global__ void rmsnorm_kernel(T *y, const T *x, const T *w, int dim, float eps)
{
    __shared__ float warp_sums[MAX_WARPS];
    size_t row = (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float v = to_f32(x[row + j]);
        ss += v * v;
    }
    float inv = 1.0f / sqrtf(block_sum(ss, warp_sums) / dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        y[row + j] = from_f32<T>((to_f32(x[row + j]) * inv) * to_f32(w[j]));
}

/* The sum is rounded to the storage type before it is squared, so y normalises exactly the residual
 * the next sublayer will add to. */
template <typename T>
__global__ void add_rmsnorm_kernel(T *residual, T *y, const T *x, const T *w, int dim, float eps)
{
    __shared__ float warp_sums[MAX_WARPS];
    size_t row = (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        T r = from_f32<T>(to_f32(residual[row + j]) + to_f32(x[row + j]));
        residual[row + j] = r;
        float v = to_f32(r);
        ss += v * v;
    }
    float inv = 1.0f / sqrtf(block_sum(ss, warp_sums) / dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        y[row + j] = from_f32<T>((to_f32(residual[row + j]) * inv) * to_f32(w[j]));
}

template <typename T>
static void rmsnorm(T *y, const T *x, const T *w, int n, int dim, float eps, cudaStream_t stream)
{
    assert(n >= 0 && dim > 0 && eps >= 0.0f);
    if (n == 0) return;
    assert(y && x && w);
    rmsnorm_kernel<T><<<n, threads_for(dim, NORM_MAX_THREADS), 0, stream>>>(y, x, w, dim, eps);
    CUDA_CHECK(cudaGetLastError());
}

template <typename T>
static void add_rmsnorm(T *residual, T *y, const T *x, const T *w, int n, int dim, float eps, cudaStream_t stream)
{
    assert(n >= 0 && dim > 0 && eps >= 0.0f);
    if (n == 0) return;
    assert(residual && y && x && w);
    add_rmsnorm_kernel<T><<<n, threads_for(dim, NORM_MAX_THREADS), 0, stream>>>(residual, y, x, w, dim, eps);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuda_rmsnorm_f32(float *y, const float *x, const float *w, int n, int dim, float eps,
                                 cudaStream_t stream)
{
    rmsnorm(y, x, w, n, dim, eps, stream);
}

extern "C" void cuda_rmsnorm_bf16(uint16_t *y, const uint16_t *x, const uint16_t *w, int n, int dim, float eps,
                                  cudaStream_t stream)
{
    rmsnorm(as_bf16(y), as_bf16(x), as_bf16(w), n, dim, eps, stream);
}

extern "C" void cuda_rmsnorm_f16(uint16_t *y, const uint16_t *x, const uint16_t *w, int n, int dim, float eps,
                                 cudaStream_t stream)
{
    rmsnorm(as_f16(y), as_f16(x), as_f16(w), n, dim, eps, stream);
}

extern "C" void cuda_add_rmsnorm_f32(float *residual, float *y, const float *x, const float *w, int n, int dim,
                                     float eps, cudaStream_t stream)
{
    add_rmsnorm(residual, y, x, w, n, dim, eps, stream);
}

extern "C" void cuda_add_rmsnorm_bf16(uint16_t *residual, uint16_t *y, const uint16_t *x, const uint16_t *w, int n,
                                      int dim, float eps, cudaStream_t stream)
{
    add_rmsnorm(as_bf16(residual), as_bf16(y), as_bf16(x), as_bf16(w), n, dim, eps, stream);
}

extern "C" void cuda_add_rmsnorm_f16(uint16_t *residual, uint16_t *y, const uint16_t *x, const uint16_t *w, int n,
                                     int dim, float eps, cudaStream_t stream)
{
    add_rmsnorm(as_f16(residual), as_f16(y), as_f16(x), as_f16(w), n, dim, eps, stream);
}
