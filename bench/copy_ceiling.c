/* See copy_ceiling.h. */
#include "bench/copy_ceiling.h"

#include <cuda_runtime.h>

#include "common/clock.h"
#include "kernels/cuda/cuda_check.h"

double bench_copy_ceiling(void)
{
    size_t n = (size_t)2 << 30;
    void *a, *b;
    CUDA_CHECK(cudaMalloc(&a, n));
    CUDA_CHECK(cudaMalloc(&b, n));
    CUDA_CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaDeviceSynchronize());
    double t = clock_now_s();
    for (int i = 0; i < 10; i++) CUDA_CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaDeviceSynchronize());
    double bw = 2.0 * n * 10 / (clock_now_s() - t);
    CUDA_CHECK(cudaFree(a));
    CUDA_CHECK(cudaFree(b));
    return bw;
}
