/* Internals of the batched LoRA kernels shared by lora_shrink.cu and lora_expand.cu: the launch
 * constants, the 16-byte load/convert helpers, the sgmv tile schedule and the shrink parameters. CUDA C++
 * only; lora_shrink.cu's header comment describes the design of both. */
#ifndef LORASERVE_KERNELS_CUDA_LORA_IMPL_CUH
#define LORASERVE_KERNELS_CUDA_LORA_IMPL_CUH

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_common.h"

#include <assert.h>
#include <mma.h>
#include <stdint.h>
#include <string.h>

using namespace nvcuda;

enum {
    TILE_THREADS = 128,         // sgmv blocks: 4 warps
    TILE_MIN_BLOCKS = 3,        // resident sgmv blocks per SM the register budget must allow (168 each)
    TILE_M = 64,                // tokens per expand tile
    SHRINK_M = 16,              // tokens per shrink tile: one MMA row block, `in` split over the 4 warps
    SHRINK_N = 32,              // A rows (v columns) per shrink tile
    EXPAND_N = 64,              // output columns per expand tile
    EXPAND_K = 32,              // ranks per expand stage
    SEGS_PER_THREAD = 8,        // one scan pass covers 1024 segments
    BG_THREADS = 256,           // bgmv shrink: 8 warps
    BG_SLICES = 4,              // slices of `in`, one per warp of a row group
    BG_ROWS_PER_WARP = 4,
    BG_ROWS = BG_THREADS / WARP / BG_SLICES * BG_ROWS_PER_WARP,    // A rows per block: 8
    BE_THREADS = 128,           // bgmv expand: 128 threads x 16 bytes of columns
};

/* ---- small helpers ----------------------------------------------------------------------------- */

__device__ __forceinline__ bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Elements of T in one 16-byte chunk. */
template <typename T> __host__ __device__ constexpr int vec_of() { return 16 / (int)sizeof(T); }

/* Elements [c, c + VEC) of a row as one 16-byte chunk, zeros at and past len (a NULL row has len 0).
 * One vector load when the row is 16-byte aligned and the chunk whole, else element by element. */
template <typename T, bool NC = true>            // NC: through the read-only path (not for y)
__device__ __forceinline__ uint4 load_chunk(const T *row, int c, int len, bool vec_ok)
{
    constexpr int VEC = vec_of<T>();
    if (vec_ok && c + VEC <= len)
        return NC ? __ldg(reinterpret_cast<const uint4 *>(row + c)) : *reinterpret_cast<const uint4 *>(row + c);
    T e[VEC];
#pragma unroll
    for (int q = 0; q < VEC; ++q) e[q] = c + q < len ? row[c + q] : from_f32<T>(0.0f);
    uint4 u;
    memcpy(&u, e, sizeof u);
    return u;
}

template <typename T>
__device__ __forceinline__ void widen(const uint4 &u, float (&f)[vec_of<T>()])
{
    T e[vec_of<T>()];
    memcpy(e, &u, sizeof u);
#pragma unroll
    for (int q = 0; q < vec_of<T>(); ++q) f[q] = to_f32(e[q]);
}

template <typename T>
__device__ __forceinline__ uint4 narrow(const float (&f)[vec_of<T>()])
{
    T e[vec_of<T>()];
#pragma unroll
    for (int q = 0; q < vec_of<T>(); ++q) e[q] = from_f32<T>(f[q]);
    uint4 u;
    memcpy(&u, e, sizeof u);
    return u;
}

/* N chunks at column c of N rows (the register stage of a tile). */
template <typename T, int N, bool NC = true>
__device__ __forceinline__ void fetch_rows(uint4 (&buf)[N], const T *const (&rows)[N], const bool (&vec)[N], int c,
                                           int len)
{
#pragma unroll
    for (int j = 0; j < N; ++j) buf[j] = load_chunk<T, NC>(rows[j], c, rows[j] ? len : 0, vec[j]);
}

/* y = y + scale * acc, in the CPU's order and without contraction. */
__device__ __forceinline__ float lora_add(float y, float s, float acc) { return __fadd_rn(y, __fmul_rn(s, acc)); }

/* ---- the sgmv schedule ------------------------------------------------------------------------- */

/* Inclusive prefix sum over the TILE_THREADS threads of the block. */
__device__ __forceinline__ int block_scan(int x, int *warp_tot)
{
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    for (int o = 1; o < WARP; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == WARP - 1) warp_tot[warp] = x;
    __syncthreads();
    for (int w = 0; w < warp; ++w) x += warp_tot[w];
    return x;
}

/* Segment s has ceil(len_s / tile_m) * per_tile work items; the block runs work(s, q) for items
 * blockIdx.x, blockIdx.x + gridDim.x, ... (q: the item within its segment). Segments are scanned 1024
 * at a time; the arguments of work are uniform over the block, so work may use __syncthreads. */
template <typename F>
__device__ void for_each_item(const int32_t *seg_start, int n_segs, int tile_m, int per_tile, F &&work)
{
    enum { SEGS = TILE_THREADS * SEGS_PER_THREAD };
    __shared__ int ends[SEGS], warp_tot[TILE_THREADS / WARP];
    int item = blockIdx.x, base = 0;
    for (int s0 = 0; s0 < n_segs; s0 += SEGS) {
        int first = s0 + threadIdx.x * SEGS_PER_THREAD, mine[SEGS_PER_THREAD], sum = 0;
        int prev = first < n_segs ? seg_start[first] : 0;
#pragma unroll
        for (int u = 0; u < SEGS_PER_THREAD; ++u) {
            if (first + u < n_segs) {
                int next = seg_start[first + u + 1];
                sum += (next - prev + tile_m - 1) / tile_m * per_tile;
                prev = next;
            }
            mine[u] = sum;
        }
        __syncthreads();                            // the previous pass is done with ends and warp_tot
        int before = block_scan(sum, warp_tot) - sum;
#pragma unroll
        for (int u = 0; u < SEGS_PER_THREAD; ++u) ends[threadIdx.x * SEGS_PER_THREAD + u] = before + mine[u];
        __syncthreads();
        int total = ends[SEGS - 1];
        for (; item < base + total; item += gridDim.x) {
            int local = item - base, lo = 0, hi = SEGS - 1;
            while (lo < hi) {                       // the first segment ending after `local`
                int mid = (lo + hi) / 2;
                if (ends[mid] > local) hi = mid;
                else lo = mid + 1;
            }
            work(s0 + lo, local - (lo ? ends[lo - 1] : 0));
        }
        base += total;
    }
}

/* A launch-time copy of the fused shrink's modules (kernel parameters, so no device table is needed). */
struct shrink_params {
    float *v[CUDA_LORA_MAX_MODULES];
    int v_stride[CUDA_LORA_MAX_MODULES];
    const cuda_lora_rows *const *rows[CUDA_LORA_MAX_MODULES];
    int n_mods, max_rank;
};

/* arr[m] by selects: a run-time index into a kernel parameter would copy the array to local memory. */
template <typename A> __device__ __forceinline__ A pick(const A (&arr)[CUDA_LORA_MAX_MODULES], int m)
{
    static_assert(CUDA_LORA_MAX_MODULES == 3, "pick() selects among three modules");
    return m == 0 ? arr[0] : m == 1 ? arr[1] : arr[2];
}

/* One full wave of the persistent sgmv kernels. */
template <typename K> inline unsigned wave_blocks(K kernel)
{
    static unsigned blocks;     // per kernel; a process drives one device, so the first answer holds
    if (blocks) return blocks;
    int dev, sms, per_sm;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, TILE_THREADS, 0));
    blocks = (unsigned)(sms * (per_sm > 0 ? per_sm : 1));
    return blocks;
}

#endif
