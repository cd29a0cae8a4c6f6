/* Batched LoRA on the GPU: the CUDA twins of op_lora_{shrink,expand}_{sgmv,bgmv} (kernels/cpu/lora.c),
 * for adapter rows that sit anywhere in the device page pool and are reached through device arrays of
 * row pointers (cuda_lora_rows, cuda_ops.h). Nothing the kernels need is read by the host.
 *
 * SGMV (prefill; S-LoRA MBGMM, Punica SGMV): tiles of one segment's tokens, staged through shared
 *   memory 128 bytes of each row at a time, the next stage's loads held in registers while the current
 *   one is multiplied: tensor cores (wmma 16x16x16, fp32 accumulate) for bf16/f16, FFMA for f32 (tf32
 *   would lose what the CPU keeps). Shrink tiles are 16 tokens x 32 A rows, each warp streaming its own
 *   quarter of `in` (the shrink streams x: short tiles give enough blocks to keep memory busy). Expand
 *   tiles are 64 tokens x 64 columns; y is loaded first and updated with 16-byte accesses. The
 *   expand's v is fp32; rounding it to 16 bits would cost the output about one ulp, so it is split as
 *   v = hi + lo (two 16-bit values, two MMAs), which keeps ~16 (bf16) or ~22 (f16) bits of it.
 *   The grid is one full wave of resident blocks: each block scans seg_start itself (the token count
 *   and segment lengths exist only on the device) and takes every gridDim.x-th tile of the segments.
 * BGMV (decode; S-LoRA MBGMV, Punica BGMV): memory-bound. Shrink: a block per (token, 8 A rows),
 *   eight warps = 2 row groups x 4 slices of `in`, each lane with five 16-byte loads per step (x and
 *   four rows) and four steps in flight, then a fixed-order reduction. Expand: a block per (token,
 *   1024 bytes of output columns), each thread one 16-byte chunk of every B^T row (the row pointers and
 *   v in shared memory), a sequential sum over k in fp32.
 * Every output element has exactly one writer and a fixed summation order that does not depend on the
 * other tokens of the call: no split-K, no atomics, results are deterministic and batch-invariant. Rows,
 * x and y rows at any element offset work; 16-byte-aligned ones take the vector loads (the pool packs
 * rows of model widths, all multiples of 8, so in practice every row is aligned). */
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

/* ---- sgmv shrink ------------------------------------------------------------------------------- */

/* Per-warp stages and partial sums. Rows are padded by 16 bytes: ldm stays a multiple of 16 bytes for
 * wmma and the FFMA reads hit distinct banks. */
template <typename T> struct shrink_smem {
    static constexpr int WARPS = TILE_THREADS / WARP, BK = 128 / (int)sizeof(T), LD = BK + vec_of<T>();
    alignas(32) T x[WARPS][SHRINK_M][LD];
    alignas(32) T a[WARPS][SHRINK_N][LD];
    alignas(32) float c[WARPS][SHRINK_M][SHRINK_N + 4];
};

/* v[t][k] = x[t] . a[k] for t < n_tok, k < n_rows (x and v at the tile's first token, v at its first
 * column, a at its first row). A shrink is a skinny GEMM that streams x: short tiles make many blocks,
 * and each warp streams its own stages of `in` (w, w + 4, ...) through its own shared memory with no
 * block barrier; the four partials are added in warp order at the end. */
template <typename T>
__device__ void shrink_tile(float *v, int v_stride, const T *x, int in, int n_tok, const T *const *a, int n_rows,
                            shrink_smem<T> &sm)
{
    using S = shrink_smem<T>;
    constexpr int VEC = vec_of<T>(), CPR = S::BK / VEC, RSTEP = WARP / CPR;
    constexpr int NX = SHRINK_M / RSTEP, NA = SHRINK_N / RSTEP, STEP = S::WARPS * S::BK;
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, r0 = lane / CPR, cc = lane % CPR * VEC;
    const int ty = lane / 8, tx = lane % 8;         // FFMA: rows ty + 4 r, columns tx + 8 c
    const T *xr[NX], *ar[NA];
    bool xv[NX], av[NA];
#pragma unroll
    for (int j = 0; j < NX; ++j) {
        int r = r0 + j * RSTEP;
        xr[j] = r < n_tok ? x + (size_t)r * in : nullptr;
        xv[j] = aligned16(xr[j]);
    }
#pragma unroll
    for (int j = 0; j < NA; ++j) {
        int r = r0 + j * RSTEP;
        ar[j] = r < n_rows ? a[r] : nullptr;
        av[j] = aligned16(ar[j]);
    }
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[SHRINK_N / 16];
    float facc[SHRINK_M / 4][SHRINK_N / 8] = {};
    if constexpr (sizeof(T) == 2)
        for (int n = 0; n < SHRINK_N / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);
    uint4 bx[NX], ba[NA];
    __syncthreads();                                // the previous tile's partials have been read
    if (w * S::BK < in) {
        fetch_rows<T, NX>(bx, xr, xv, w * S::BK + cc, in);
        fetch_rows<T, NA>(ba, ar, av, w * S::BK + cc, in);
    }
    for (int c0 = w * S::BK; c0 < in; c0 += STEP) {
        __syncwarp();                               // the warp is done reading its previous stage
#pragma unroll
        for (int j = 0; j < NX; ++j) *reinterpret_cast<uint4 *>(&sm.x[w][r0 + j * RSTEP][cc]) = bx[j];
#pragma unroll
        for (int j = 0; j < NA; ++j) *reinterpret_cast<uint4 *>(&sm.a[w][r0 + j * RSTEP][cc]) = ba[j];
        __syncwarp();
        if (c0 + STEP < in) {                       // the next stage's loads fly during this one's math
            fetch_rows<T, NX>(bx, xr, xv, c0 + STEP + cc, in);
            fetch_rows<T, NA>(ba, ar, av, c0 + STEP + cc, in);
        }
        if constexpr (sizeof(T) == 2) {
#pragma unroll
            for (int kk = 0; kk < S::BK; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::load_matrix_sync(fa, &sm.x[w][0][kk], S::LD);
#pragma unroll
                for (int n = 0; n < SHRINK_N / 16; ++n) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;   // a[n][k] = A^T (k, n)
                    wmma::load_matrix_sync(fb, &sm.a[w][16 * n][kk], S::LD);
                    wmma::mma_sync(acc[n], fa, fb, acc[n]);
                }
            }
        } else {
#pragma unroll 8
            for (int k = 0; k < S::BK; ++k) {
                float xk[SHRINK_M / 4], ak[SHRINK_N / 8];
#pragma unroll
                for (int r = 0; r < SHRINK_M / 4; ++r) xk[r] = sm.x[w][ty + 4 * r][k];
#pragma unroll
                for (int c = 0; c < SHRINK_N / 8; ++c) ak[c] = sm.a[w][tx + 8 * c][k];
#pragma unroll
                for (int r = 0; r < SHRINK_M / 4; ++r)
#pragma unroll
                    for (int c = 0; c < SHRINK_N / 8; ++c) facc[r][c] = fmaf(xk[r], ak[c], facc[r][c]);
            }
        }
    }
    if constexpr (sizeof(T) == 2) {
        for (int n = 0; n < SHRINK_N / 16; ++n)
            wmma::store_matrix_sync(&sm.c[w][0][16 * n], acc[n], SHRINK_N + 4, wmma::mem_row_major);
    } else {
        for (int r = 0; r < SHRINK_M / 4; ++r)
            for (int c = 0; c < SHRINK_N / 8; ++c) sm.c[w][ty + 4 * r][tx + 8 * c] = facc[r][c];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < SHRINK_M * SHRINK_N; e += TILE_THREADS) {
        int r = e / SHRINK_N, k = e % SHRINK_N;
        if (r >= n_tok || k >= n_rows) continue;
        float sum = sm.c[0][r][k];
        for (int u = 1; u < S::WARPS; ++u) sum += sm.c[u][r][k];
        v[(size_t)r * v_stride + k] = sum;
    }
}

/* Work items of a segment: token tiles x modules x ceil(max_rank / SHRINK_N) row tiles; tiles past a
 * descriptor's a_rows (or of a NULL one) return at once. */
template <typename T>
__global__ void __launch_bounds__(TILE_THREADS, TILE_MIN_BLOCKS)
shrink_sgmv_kernel(shrink_params p, const T *__restrict__ x, int in, const int32_t *__restrict__ seg_start, int n_segs)
{
    __shared__ shrink_smem<T> sm;
    const int row_tiles = (p.max_rank + SHRINK_N - 1) / SHRINK_N, per_tile = p.n_mods * row_tiles;
    for_each_item(seg_start, n_segs, SHRINK_M, per_tile, [&](int s, int q) {
        int m = q % per_tile / row_tiles, k0 = q % row_tiles * SHRINK_N;
        const cuda_lora_rows *l = pick(p.rows, m)[s];
        if (!l) return;
        const cuda_lora_rows d = *l;
        assert(d.a_rows >= 0 && d.a_col0 >= 0 && d.a_col0 + d.a_rows <= p.max_rank);
        if (k0 >= d.a_rows) return;
        int t0 = seg_start[s] + q / per_tile * SHRINK_M;
        const int vs = pick(p.v_stride, m);
        shrink_tile<T>(pick(p.v, m) + (size_t)t0 * vs + d.a_col0 + k0, vs, x + (size_t)t0 * in, in,
                       min(SHRINK_M, seg_start[s + 1] - t0), reinterpret_cast<const T *const *>(d.a) + k0,
                       min(SHRINK_N, d.a_rows - k0), sm);
    });
}

/* ---- sgmv expand ------------------------------------------------------------------------------- */

template <typename T> struct expand_smem {
    static constexpr bool TC = sizeof(T) == 2;
    static constexpr int LDV = EXPAND_K + vec_of<T>(), LDB = EXPAND_N + vec_of<T>();
    alignas(32) T vh[TILE_M][LDV];                  // v (f32), or its high 16-bit part
    alignas(32) T vl[TC ? TILE_M : 1][LDV];         // v - hi, rounded
    alignas(32) T b[EXPAND_K][LDB];
    alignas(32) float c[TILE_M][EXPAND_N + 4];       // the products on their way into y
};

/* y[t][j] += scale * sum_{k < rank} v[t][k] b[k][j0 + j] for t < n_tok, j < min(EXPAND_N, out - j0)
 * (y and v at the tile's first token, y at column j0). */
template <typename T>
__device__ void expand_tile(T *y, int y_stride, int j0, int out, const float *v, int v_stride, int n_tok,
                            const T *const *b, int rank, float scale, expand_smem<T> &sm)
{
    using S = expand_smem<T>;
    constexpr int VEC = vec_of<T>(), CPR = EXPAND_N / VEC, RSTEP = TILE_THREADS / CPR, NB = EXPAND_K / RSTEP;
    constexpr int NV = TILE_M * EXPAND_K / 4 / TILE_THREADS;     // float4 chunks of v per thread
    constexpr int NY = TILE_M / RSTEP;                           // y chunks per thread (same layout as B^T's)
    const int warp = threadIdx.x / WARP, n_cols = min(EXPAND_N, out - j0);
    const int vr0 = threadIdx.x / (EXPAND_K / 4), vc = threadIdx.x % (EXPAND_K / 4) * 4;
    const int br0 = threadIdx.x / CPR, bc = threadIdx.x % CPR * VEC;
    const float *vrow[NV];
    bool vvec[NV];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
        int r = vr0 + j * (TILE_THREADS / (EXPAND_K / 4));
        vrow[j] = r < n_tok ? v + (size_t)r * v_stride : nullptr;
        vvec[j] = aligned16(vrow[j]);
    }
    const T *yrow[NY];
    bool yvec[NY];
    uint4 by[NY];                                   // y is loaded first: its latency hides behind v, B^T and the MMAs
#pragma unroll
    for (int j = 0; j < NY; ++j) {
        int r = br0 + j * RSTEP;
        yrow[j] = r < n_tok ? y + (size_t)r * y_stride : nullptr;
        yvec[j] = aligned16(yrow[j]);
    }
    fetch_rows<T, NY, false>(by, yrow, yvec, bc, n_cols);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[EXPAND_N / 16];
    float facc[TILE_M / 16][EXPAND_N / 8] = {};
    if constexpr (S::TC)
        for (int n = 0; n < EXPAND_N / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);
    uint4 bv[NV], bb[NB];
    const T *brow[NB];
    bool bvec[NB];
    auto fetch = [&](int k0) {                      // v columns and B^T rows [k0, k0 + EXPAND_K), zeros past rank
#pragma unroll
        for (int j = 0; j < NB; ++j) {
            int k = k0 + br0 + j * RSTEP;
            brow[j] = k < rank ? b[k] + j0 : nullptr;
            bvec[j] = aligned16(brow[j]);
        }
        fetch_rows<T, NB>(bb, brow, bvec, bc, out - j0);
        fetch_rows<float, NV>(bv, vrow, vvec, k0 + vc, rank);
    };
    fetch(0);
    for (int k0 = 0; k0 < rank; k0 += EXPAND_K) {
        __syncthreads();
#pragma unroll
        for (int j = 0; j < NV; ++j) {
            float f[4];
            widen<float>(bv[j], f);
            int r = vr0 + j * (TILE_THREADS / (EXPAND_K / 4));
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                T hi = from_f32<T>(f[q]);
                sm.vh[r][vc + q] = hi;
                if constexpr (S::TC) sm.vl[r][vc + q] = from_f32<T>(f[q] - to_f32(hi));
            }
        }
#pragma unroll
        for (int j = 0; j < NB; ++j) *reinterpret_cast<uint4 *>(&sm.b[br0 + j * RSTEP][bc]) = bb[j];
        __syncthreads();
        if (k0 + EXPAND_K < rank) fetch(k0 + EXPAND_K);
        if constexpr (S::TC) {
#pragma unroll
            for (int kk = 0; kk < EXPAND_K; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fh, fl;
                wmma::load_matrix_sync(fh, &sm.vh[16 * warp][kk], S::LDV);
                wmma::load_matrix_sync(fl, &sm.vl[16 * warp][kk], S::LDV);
#pragma unroll
                for (int n = 0; n < EXPAND_N / 16; ++n) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
                    wmma::load_matrix_sync(fb, &sm.b[kk][16 * n], S::LDB);
                    wmma::mma_sync(acc[n], fh, fb, acc[n]);
                    wmma::mma_sync(acc[n], fl, fb, acc[n]);
                }
            }
        } else {
            const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
#pragma unroll 4
            for (int k = 0; k < EXPAND_K; ++k) {
                float vk[TILE_M / 16], bk[EXPAND_N / 8];
#pragma unroll
                for (int r = 0; r < TILE_M / 16; ++r) vk[r] = to_f32(sm.vh[ty + 16 * r][k]);
#pragma unroll
                for (int c = 0; c < EXPAND_N / 8; ++c) bk[c] = to_f32(sm.b[k][tx + 8 * c]);
#pragma unroll
                for (int r = 0; r < TILE_M / 16; ++r)
#pragma unroll
                    for (int c = 0; c < EXPAND_N / 8; ++c) facc[r][c] = fmaf(vk[r], bk[c], facc[r][c]);
            }
        }
    }
    if constexpr (S::TC) {
        for (int n = 0; n < EXPAND_N / 16; ++n)
            wmma::store_matrix_sync(&sm.c[16 * warp][16 * n], acc[n], EXPAND_N + 4, wmma::mem_row_major);
    } else {
        const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
        for (int r = 0; r < TILE_M / 16; ++r)
            for (int c = 0; c < EXPAND_N / 8; ++c) sm.c[ty + 16 * r][tx + 8 * c] = facc[r][c];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < NY; ++j) {                  // y += scale * products, 16 bytes per access
        if (!yrow[j]) continue;
        const int r = br0 + j * RSTEP;
        float f[VEC];
        widen<T>(by[j], f);
#pragma unroll
        for (int e = 0; e < VEC; ++e) f[e] = lora_add(f[e], scale, sm.c[r][bc + e]);
        T *py = y + (size_t)r * y_stride + bc;
        if (yvec[j] && bc + VEC <= n_cols) {
            *reinterpret_cast<uint4 *>(py) = narrow<T>(f);
        } else {
            for (int e = 0; e < VEC && bc + e < n_cols; ++e) py[e] = from_f32<T>(f[e]);
        }
    }
}

/* Work items of a segment: token tiles x ceil(out / EXPAND_N) column tiles. */
template <typename T>
__global__ void __launch_bounds__(TILE_THREADS, TILE_MIN_BLOCKS)
expand_sgmv_kernel(T *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                   const int32_t *__restrict__ seg_start, int n_segs, const cuda_lora_rows *const *adapters,
                   int max_rank)
{
    __shared__ expand_smem<T> sm;
    const int col_tiles = (out + EXPAND_N - 1) / EXPAND_N;
    for_each_item(seg_start, n_segs, TILE_M, col_tiles, [&](int s, int q) {
        const cuda_lora_rows *l = adapters[s];
        if (!l) return;
        const cuda_lora_rows d = *l;
        assert(d.rank >= 0 && d.rank <= max_rank);
        if (d.rank == 0) return;
        int t0 = seg_start[s] + q / col_tiles * TILE_M, j0 = q % col_tiles * EXPAND_N;
        expand_tile<T>(y + (size_t)t0 * y_stride + y_col0 + j0, y_stride, j0, out, v + (size_t)t0 * v_stride,
                       v_stride, min(TILE_M, seg_start[s + 1] - t0), reinterpret_cast<const T *const *>(d.b), d.rank,
                       d.scale, sm);
    });
}

/* ---- bgmv -------------------------------------------------------------------------------------- */

/* Block (token i, module m, A rows [k0, k0 + BG_ROWS)): warp (g, s) dots rows k0 + 4g .. + 3 with
 * slice s of x (chunks s, s + BG_SLICES, ...); the four slice partials are added in slice order. */
template <typename T>
__global__ void __launch_bounds__(BG_THREADS)
shrink_bgmv_kernel(shrink_params p, const T *__restrict__ x, int in, const int32_t *__restrict__ token_adapter,
                   int chunks)
{
    constexpr int VEC = vec_of<T>(), RPW = BG_ROWS_PER_WARP;
    __shared__ float part[BG_SLICES][BG_ROWS];
    const int i = blockIdx.x, m = blockIdx.y / chunks, k0 = blockIdx.y % chunks * BG_ROWS;
    const int ad = token_adapter[i];
    if (ad < 0) return;
    const cuda_lora_rows *l = pick(p.rows, m)[ad];
    if (!l) return;
    const cuda_lora_rows d = *l;
    assert(d.a_rows >= 0 && d.a_col0 >= 0 && d.a_col0 + d.a_rows <= p.max_rank);
    if (k0 >= d.a_rows) return;                     // uniform over the block, before any barrier
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, g = warp / BG_SLICES, s = warp % BG_SLICES;
    const T *xi = x + (size_t)i * in;
    const T *const *a = reinterpret_cast<const T *const *>(d.a);
    const T *row[RPW];
    bool vec = aligned16(xi);
#pragma unroll
    for (int q = 0; q < RPW; ++q) {
        int k = k0 + g * RPW + q;
        row[q] = k < d.a_rows ? a[k] : nullptr;
        vec &= !row[q] || aligned16(row[q]);
    }
    float acc[RPW] = {};
    if (row[0]) {
        const int vec_end = vec ? in - in % VEC : 0;
#pragma unroll 4
        for (int c = (s * WARP + lane) * VEC; c < vec_end; c += BG_SLICES * WARP * VEC) {
            float xf[VEC];
            widen<T>(__ldg(reinterpret_cast<const uint4 *>(xi + c)), xf);
#pragma unroll
            for (int q = 0; q < RPW; ++q) {
                if (!row[q]) continue;
                float af[VEC];
                widen<T>(__ldg(reinterpret_cast<const uint4 *>(row[q] + c)), af);
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[q] = fmaf(xf[e], af[e], acc[q]);
            }
        }
        for (int c = vec_end + s * WARP + lane; c < in; c += BG_SLICES * WARP) {   // unaligned rows, ragged tail
            float xc = to_f32(xi[c]);
#pragma unroll
            for (int q = 0; q < RPW; ++q)
                if (row[q]) acc[q] = fmaf(xc, to_f32(row[q][c]), acc[q]);
        }
    }
#pragma unroll
    for (int q = 0; q < RPW; ++q) acc[q] = warp_sum(acc[q]);
    if (lane == 0)
        for (int q = 0; q < RPW; ++q) part[s][g * RPW + q] = acc[q];
    __syncthreads();
    const int k = k0 + (int)threadIdx.x;
    if (threadIdx.x < BG_ROWS && k < d.a_rows) {
        float sum = part[0][threadIdx.x];
        for (int u = 1; u < BG_SLICES; ++u) sum += part[u][threadIdx.x];
        pick(p.v, m)[(size_t)i * pick(p.v_stride, m) + d.a_col0 + k] = sum;
    }
}

/* Block (token i, columns [j0, j0 + BE_THREADS * VEC)): thread t owns VEC consecutive columns and sums
 * over k in order, one 16-byte load of each B^T row (several in flight through the unrolled loop). */
template <typename T>
__global__ void __launch_bounds__(BE_THREADS)
expand_bgmv_kernel(T *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                   const int32_t *__restrict__ token_adapter, const cuda_lora_rows *const *table, int max_rank)
{
    constexpr int VEC = vec_of<T>();
    __shared__ float sv[CUDA_LORA_MAX_RANK];
    __shared__ const T *sb[CUDA_LORA_MAX_RANK];
    const int i = blockIdx.x, ad = token_adapter[i];
    if (ad < 0) return;
    const cuda_lora_rows *l = table[ad];
    if (!l) return;
    const cuda_lora_rows d = *l;
    assert(d.rank >= 0 && d.rank <= max_rank);
    if (d.rank == 0) return;
    const T *const *b = reinterpret_cast<const T *const *>(d.b);
    T *yi = y + (size_t)i * y_stride + y_col0;
    int vec = aligned16(yi);
    for (int k = threadIdx.x; k < d.rank; k += BE_THREADS) {
        sv[k] = v[(size_t)i * v_stride + k];
        sb[k] = b[k];
        vec &= aligned16(sb[k]);
    }
    vec = __syncthreads_and(vec);                   // also publishes sv and sb
    const int j = blockIdx.y * BE_THREADS * VEC + threadIdx.x * VEC;
    float acc[VEC] = {};
    if (vec && j + VEC <= out) {
        const uint4 y_old = *reinterpret_cast<const uint4 *>(yi + j);     // in flight with the B^T loads
#pragma unroll 16
        for (int k = 0; k < d.rank; ++k) {
            float bf[VEC];
            widen<T>(__ldg(reinterpret_cast<const uint4 *>(sb[k] + j)), bf);
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[e] = fmaf(sv[k], bf[e], acc[e]);
        }
        float yf[VEC];
        widen<T>(y_old, yf);
#pragma unroll
        for (int e = 0; e < VEC; ++e) yf[e] = lora_add(yf[e], d.scale, acc[e]);
        *reinterpret_cast<uint4 *>(yi + j) = narrow<T>(yf);
        return;
    }
    for (int e = 0; e < VEC && j + e < out; ++e) {  // unaligned rows or the ragged last chunk: same order
        float a = 0.0f;
        for (int k = 0; k < d.rank; ++k) a = fmaf(sv[k], to_f32(sb[k][j + e]), a);
        yi[j + e] = from_f32<T>(lora_add(to_f32(yi[j + e]), d.scale, a));
    }
}

/* ---- launchers --------------------------------------------------------------------------------- */

/* One full wave of the persistent sgmv kernels. */
template <typename K> static unsigned wave_blocks(K kernel)
{
    int dev, sms, per_sm;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, TILE_THREADS, 0));
    return (unsigned)(sms * (per_sm > 0 ? per_sm : 1));
}

/* Both shrink forms: `index` is seg_start (count = n_segs) for sgmv, token_adapter (count = n) for bgmv. */
template <typename T>
static void shrink(bool bgmv, const cuda_lora_shrink_out *outs, int n_outs, const T *x, int in, const int32_t *index,
                   int count, int max_rank, cudaStream_t stream)
{
    assert(n_outs >= 1 && n_outs <= CUDA_LORA_MAX_MODULES && in > 0 && count >= 0);
    assert(max_rank >= 0 && max_rank <= CUDA_LORA_MAX_RANK);
    if (count == 0 || max_rank == 0) return;
    assert(outs && x && index);
    shrink_params p = {};
    for (int m = 0; m < n_outs; ++m) {
        assert(outs[m].v && outs[m].rows && outs[m].v_stride >= max_rank);
        p.v[m] = outs[m].v;
        p.v_stride[m] = outs[m].v_stride;
        p.rows[m] = outs[m].rows;
    }
    p.n_mods = n_outs;
    p.max_rank = max_rank;
    const int chunks = (max_rank + BG_ROWS - 1) / BG_ROWS;
    if (bgmv)
        shrink_bgmv_kernel<T><<<dim3((unsigned)count, (unsigned)(n_outs * chunks)), BG_THREADS, 0, stream>>>(
            p, x, in, index, chunks);
    else
        shrink_sgmv_kernel<T><<<wave_blocks(shrink_sgmv_kernel<T>), TILE_THREADS, 0, stream>>>(p, x, in, index, count);
    CUDA_CHECK(cudaGetLastError());
}

/* Both expand forms, `index` and `count` as for shrink(); rows: per segment or the table. */
template <typename T>
static void expand(bool bgmv, T *y, int y_stride, int y_col0, int out, const float *v, int v_stride,
                   const int32_t *index, int count, const cuda_lora_rows *const *rows, int max_rank,
                   cudaStream_t stream)
{
    assert(out > 0 && y_col0 >= 0 && y_col0 + out <= y_stride && count >= 0);
    assert(max_rank >= 0 && max_rank <= CUDA_LORA_MAX_RANK && v_stride >= max_rank);
    if (count == 0 || max_rank == 0) return;
    assert(y && v && index && rows);
    const int cols = BE_THREADS * vec_of<T>();
    if (bgmv)
        expand_bgmv_kernel<T><<<dim3((unsigned)count, (unsigned)((out + cols - 1) / cols)), BE_THREADS, 0, stream>>>(
            y, y_stride, y_col0, out, v, v_stride, index, rows, max_rank);
    else
        expand_sgmv_kernel<T><<<wave_blocks(expand_sgmv_kernel<T>), TILE_THREADS, 0, stream>>>(
            y, y_stride, y_col0, out, v, v_stride, index, count, rows, max_rank);
    CUDA_CHECK(cudaGetLastError());
}

/* The C entry points of one storage type: ST is the C type, DT the device type, CAST maps one to the other. */
#define LORA_SHRINK(FORM, SUF, IDX, DT, CAST, ST)                                                                    \
    extern "C" void cuda_lora_shrink_##FORM##_##SUF(float *v, int v_stride, const ST *x, int in,                     \
                                                    const int32_t *index, int count,                                 \
                                                    const cuda_lora_rows *const *rows, int max_rank,                 \
                                                    cudaStream_t stream)                                             \
    {                                                                                                                \
        cuda_lora_shrink_out o = {v, v_stride, rows};                                                                \
        shrink<DT>(IDX, &o, 1, CAST(x), in, index, count, max_rank, stream);                                         \
    }                                                                                                                \
    extern "C" void cuda_lora_shrink_##FORM##_multi_##SUF(const cuda_lora_shrink_out *outs, int n_outs,              \
                                                          const ST *x, int in, const int32_t *index, int count,      \
                                                          int max_rank, cudaStream_t stream)                         \
    {                                                                                                                \
        shrink<DT>(IDX, outs, n_outs, CAST(x), in, index, count, max_rank, stream);                                  \
    }
#define LORA_EXPAND(FORM, SUF, IDX, DT, CAST, ST)                                                                    \
    extern "C" void cuda_lora_expand_##FORM##_##SUF(ST *y, int y_stride, int y_col0, int out, const float *v,        \
                                                    int v_stride, const int32_t *index, int count,                   \
                                                    const cuda_lora_rows *const *rows, int max_rank,                 \
                                                    cudaStream_t stream)                                             \
    {                                                                                                                \
        expand<DT>(IDX, CAST(y), y_stride, y_col0, out, v, v_stride, index, count, rows, max_rank, stream);          \
    }
#define LORA_LAUNCHERS(SUF, ST, DT, CAST)                                                                            \
    LORA_SHRINK(sgmv, SUF, false, DT, CAST, ST)                                                                      \
    LORA_SHRINK(bgmv, SUF, true, DT, CAST, ST)                                                                       \
    LORA_EXPAND(sgmv, SUF, false, DT, CAST, ST)                                                                      \
    LORA_EXPAND(bgmv, SUF, true, DT, CAST, ST)

LORA_LAUNCHERS(f32, float, float, )
LORA_LAUNCHERS(bf16, uint16_t, __nv_bfloat16, as_bf16)
LORA_LAUNCHERS(f16, uint16_t, __half, as_f16)
