/* The fatal check for CUDA runtime calls, usable from C and CUDA C++: a failing call here means the
 * device or the program is broken (a bad launch configuration, a sticky fault), so it names file:line
 * and the call, then aborts, which mpirun turns into a job teardown. */
#ifndef LORASERVE_KERNELS_CUDA_CHECK_H
#define LORASERVE_KERNELS_CUDA_CHECK_H

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_CHECK(call) \
    do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
        fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_), \
                cudaGetErrorName(e_)); \
        abort(); } } while (0)

#endif
