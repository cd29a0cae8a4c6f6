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
#include "kernels/cuda/lora_impl.cuh"

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

/* ---- bgmv shrink -------------------------------------------------------------------------------- */

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

/* ---- launchers ----------------------------------------------------------------------------------- */

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

LORA_SHRINK(sgmv, f32, false, float, , float)
LORA_SHRINK(bgmv, f32, true, float, , float)
LORA_SHRINK(sgmv, bf16, false, __nv_bfloat16, as_bf16, uint16_t)
LORA_SHRINK(bgmv, bf16, true, __nv_bfloat16, as_bf16, uint16_t)
LORA_SHRINK(sgmv, f16, false, __half, as_f16, uint16_t)
LORA_SHRINK(bgmv, f16, true, __half, as_f16, uint16_t)
