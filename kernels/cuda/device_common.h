/* Device-side helpers shared by the kernels (CUDA C++ only, not part of the C interface): conversion
 * between the storage types and fp32, the map from the uint16_t of the C launchers to the real 16-bit
 * types, and a block-wide sum. */
#ifndef LORASERVE_KERNELS_CUDA_DEVICE_COMMON_H
#define LORASERVE_KERNELS_CUDA_DEVICE_COMMON_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/* The C launchers pass 16-bit storage as uint16_t; same size and alignment as the CUDA types. */
static_assert(sizeof(__half) == sizeof(unsigned short) && sizeof(__nv_bfloat16) == sizeof(unsigned short),
              "16-bit storage types must be 2 bytes");
__host__ __forceinline__ __nv_bfloat16 *as_bf16(unsigned short *p) { return reinterpret_cast<__nv_bfloat16 *>(p); }
__host__ __forceinline__ const __nv_bfloat16 *as_bf16(const unsigned short *p)
{
    return reinterpret_cast<const __nv_bfloat16 *>(p);
}
__host__ __forceinline__ __half *as_f16(unsigned short *p) { return reinterpret_cast<__half *>(p); }
__host__ __forceinline__ const __half *as_f16(const unsigned short *p) { return reinterpret_cast<const __half *>(p); }

enum { WARP = 32, MAX_WARPS = 32 };

__device__ __forceinline__ float warp_sum(float v)
{
    for (int off = WARP / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* Sum over the block, returned to every thread. blockDim.x must be a multiple of 32; one
 * __syncthreads, so a block calls it once per shared buffer. */
__device__ __forceinline__ float block_sum(float v, float *warp_sums /* [MAX_WARPS], shared */)
{
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, n_warps = blockDim.x / WARP;
    v = warp_sum(v);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    return warp_sum(lane < n_warps ? warp_sums[lane] : 0.0f);
}

/* Threads for a kernel that strides over dim elements: whole warps, at most max_threads. */
static inline int threads_for(int dim, int max_threads)
{
    int t = (dim + WARP - 1) / WARP * WARP;
    return t < max_threads ? t : max_threads;
}

#endif
