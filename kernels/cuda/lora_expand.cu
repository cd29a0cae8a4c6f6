/* Batched LoRA on the GPU, the expand half: y += scale * v B^T per token with its own adapter, for
 * sgmv (tensor-core tiles of a segment's tokens) and bgmv (a block per token and 1024 bytes of columns).
 * The design of both halves is described in lora_shrink.cu. */
#include "kernels/cuda/lora_impl.cuh"

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

/* ---- bgmv expand -------------------------------------------------------------------------------- */

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

/* ---- launchers ----------------------------------------------------------------------------------- */

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

#define LORA_EXPAND(FORM, SUF, IDX, DT, CAST, ST)                                                                    \
    extern "C" void cuda_lora_expand_##FORM##_##SUF(ST *y, int y_stride, int y_col0, int out, const float *v,        \
                                                    int v_stride, const int32_t *index, int count,                   \
                                                    const cuda_lora_rows *const *rows, int max_rank,                 \
                                                    cudaStream_t stream)                                             \
    {                                                                                                                \
        expand<DT>(IDX, CAST(y), y_stride, y_col0, out, v, v_stride, index, count, rows, max_rank, stream);          \
    }

LORA_EXPAND(sgmv, f32, false, float, , float)
LORA_EXPAND(bgmv, f32, true, float, , float)
LORA_EXPAND(sgmv, bf16, false, __nv_bfloat16, as_bf16, uint16_t)
LORA_EXPAND(bgmv, bf16, true, __nv_bfloat16, as_bf16, uint16_t)
LORA_EXPAND(sgmv, f16, false, __half, as_f16, uint16_t)
LORA_EXPAND(bgmv, f16, true, __half, as_f16, uint16_t)
