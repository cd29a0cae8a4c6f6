/* Internals of the paged attention kernels shared by attention.cu (plan, SIMT rows, host side, kv store)
 * and attention_tiles.cu (the tensor-core prefill tiles): the launch constants, the argument structs and
 * the device helpers both kinds of block use. CUDA C++ only; see attention.cu for the design. */
#ifndef LORASERVE_KERNELS_CUDA_ATTENTION_IMPL_CUH
#define LORASERVE_KERNELS_CUDA_ATTENTION_IMPL_CUH

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_common.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>


enum {
    ATTN_THREADS = 128,     // rows and tiles blocks: 4 warps
    PLAN_THREADS = 512,
    TILE_BQ = 64,           // query rows per tile block: 16 per warp
    SPLIT_MIN_KEYS = 64,    // a key chunk never gets fewer keys: below that the merge costs more than it gains
    // Row blocks the split planner aims for: ~4.5 waves of resident blocks (7 per SM of an H100/H200 at
    // 32 KB of stages each), so the last, partial wave costs little (at 1024, batch 64 x 32 heads of
    // context 512 ran unsplit as 2.2 waves and reached 55% of copy bandwidth).
    TARGET_BLOCKS = 4096,
    MIN_TARGET = 64,
    KV_STORE_THREADS = 256,
    SMEM_DEFAULT = 48 * 1024,
};

/* kv_view without the pointer, plus the layer; in elements of the storage type. */
struct kv_geom {
    size_t page_stride, layer_stride, kv_stride;
    int page_tokens, n_kv_heads, head_dim, layer;
};

struct seq_arrays { const int32_t *start_pos, *n_tokens, *tok_off, *page_off, *page_table; };

/* One row block: token tok of sequence seq over keys [kb, ke), chunk split of n_splits; split tokens
 * own partial slots slot0.. and merge counter split_row (both -1 when n_splits == 1). */
struct row_item { int seq, tok, kb, ke, split, n_splits, slot0, split_row; };

template <typename T> struct attn_args {
    T *out;
    const T *q, *pool;
    kv_geom g;
    seq_arrays sq;
    const row_item *rows;
    const int2 *tiles;          // (seq, 64-row tile index)
    const int *header;          // [0] row items, [1] tiles: written by the plan
    float *pm, *pl, *pacc;      // split partials: running max (log2 domain), sum, unnormalised output
    int *counters;
    int n_heads, head_chunks, window, vec, heads_fast;
    float scale_log2;           // scale * log2(e): softmax in exp2
};

__device__ __forceinline__ int first_key(int p, int window)
{
    return window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
}

/* Start of the [n_kv_heads*head_dim] K (which = 0) or V row of position pos, then head kh. */
template <typename T>
__device__ __forceinline__ const T *kv_row(const T *pool, const kv_geom &g, const int32_t *pt, int pos, int which,
                                           int kh)
{
    size_t page = (size_t)pt[pos / g.page_tokens], slot = (size_t)(pos % g.page_tokens);
    return pool + page * g.page_stride + (size_t)g.layer * g.layer_stride + (size_t)which * g.kv_stride
         + (slot * g.n_kv_heads + kh) * g.head_dim;
}

template <typename T> struct alignas(16) chunk { T e[16 / sizeof(T)]; };

/* The 16 bytes of a row at element d0, zero past head_dim: one vector load when the layout allows. */
template <typename T>
__device__ __forceinline__ chunk<T> load_chunk(const T *row, int d0, int hd, bool vec)
{
    constexpr int VEC = 16 / sizeof(T);
    chunk<T> c;
    if (vec && d0 + VEC <= hd) {
        *reinterpret_cast<uint4 *>(&c) = __ldg(reinterpret_cast<const uint4 *>(row + d0));
    } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) c.e[j] = d0 + j < hd ? row[d0 + j] : from_f32<T>(0.0f);
    }
    return c;
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* The 16 bytes of a row at element d0 (src NULL = a row outside the range) into shared memory, zero past
 * head_dim or for a missing row: cp.async with zero fill on the vector path, plain stores otherwise. */
template <typename T>
__device__ __forceinline__ void copy_chunk(T *dst, const T *src, int d0, int hd, bool vec, const T *dummy)
{
    constexpr int VEC = 16 / sizeof(T);
    if (vec) {
        uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
        int bytes = src && d0 < hd ? 16 : 0;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                     ::"r"(s), "l"(bytes ? src + d0 : dummy), "r"(bytes) : "memory");
    } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) dst[j] = src && d0 + j < hd ? src[d0 + j] : from_f32<T>(0.0f);
    }
}

/* 2^x on the SFU (~2 ulp, 0 for -inf): the tiles' P is rounded to 16 bits right after. */
__device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}


/* The tile (prefill) kernels for storage T, head_dim padded from head_dim (attention_tiles.cu). */
template <typename T> void attention_launch_tiles(const attn_args<T> &a, int head_dim, dim3 grid, cudaStream_t stream);

#endif
