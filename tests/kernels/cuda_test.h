/* Shared by the GPU kernel tests: the three storage types (f32, bf16, f16) and the moves between host fp32
 * and device storage. upload() rounds the host copy in place to exactly what the device holds, so the CPU
 * twin runs on the same values and tolerances only cover the device's arithmetic and output rounding.
 * Device buffers get one spare byte so a zero-size buffer is still a valid allocation. */
#ifndef LORASERVE_TESTS_KERNELS_CUDA_TEST_H
#define LORASERVE_TESTS_KERNELS_CUDA_TEST_H

#include <float.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/cuda_check.h"
#include "tests/kernels/kernel_test.h"

typedef enum dtype { DT_F32, DT_BF16, DT_F16 } dtype;
static const char *const dt_names[] = {"f32", "bf16", "f16"};

static inline size_t dt_size(dtype t) { return t == DT_F32 ? sizeof(float) : sizeof(uint16_t); }
/* One ulp at 1.0 of the storage type: bounds one rounding of an output plus fp32-level differences. */
static inline double dt_ulp(dtype t) { return t == DT_F32 ? FLT_EPSILON : t == DT_BF16 ? 0x1p-7 : 0x1p-10; }
/* The type's subnormal step: below the smallest normal, precision is absolute. */
static inline double dt_atol(dtype t) { return t == DT_F32 ? 0x1p-149 : t == DT_BF16 ? 0x1p-133 : 0x1p-24; }

/* Round-to-nearest-even to bf16 (test data is finite, so no NaN special case). */
static inline uint16_t bf16_from(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_to(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline void encode(void *dst, const float *src, size_t n, dtype t)
{
    for (size_t i = 0; i < n; ++i) {
        if (t == DT_F32) ((float *)dst)[i] = src[i];
        else if (t == DT_BF16) ((uint16_t *)dst)[i] = bf16_from(src[i]);
        else { _Float16 h = (_Float16)src[i]; memcpy((uint16_t *)dst + i, &h, sizeof h); }
    }
}

static inline void decode(float *dst, const void *src, size_t n, dtype t)
{
    for (size_t i = 0; i < n; ++i) {
        if (t == DT_F32) dst[i] = ((const float *)src)[i];
        else if (t == DT_BF16) dst[i] = bf16_to(((const uint16_t *)src)[i]);
        else { _Float16 h; memcpy(&h, (const uint16_t *)src + i, sizeof h); dst[i] = (float)h; }
    }
}

/* A device copy of x in type t, x rounded in place to what the device holds. */
static inline void *upload(float *x, size_t n, dtype t)
{
    void *host = xcalloc(n ? n : 1, dt_size(t)), *dev;
    encode(host, x, n, t);
    decode(x, host, n, t);
    CUDA_CHECK(cudaMalloc(&dev, n * dt_size(t) + 1));
    CUDA_CHECK(cudaMemcpy(dev, host, n * dt_size(t), cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

static inline void *upload_raw(const void *host, size_t bytes)
{
    void *dev;
    CUDA_CHECK(cudaMalloc(&dev, bytes + 1));
    CUDA_CHECK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    return dev;
}

/* A device buffer of n elements, every byte 0xff: NaN in all three types, so unwritten outputs fail. */
static inline void *alloc_poisoned(size_t n, dtype t)
{
    void *dev;
    CUDA_CHECK(cudaMalloc(&dev, n * dt_size(t) + 1));
    CUDA_CHECK(cudaMemset(dev, 0xff, n * dt_size(t) + 1));
    return dev;
}

static inline void download(float *x, const void *dev, size_t n, dtype t)
{
    void *host = xcalloc(n ? n : 1, dt_size(t));
    CUDA_CHECK(cudaMemcpy(host, dev, n * dt_size(t), cudaMemcpyDeviceToHost));
    decode(x, host, n, t);
    free(host);
}

#endif
