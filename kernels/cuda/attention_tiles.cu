/* Paged attention, the tensor-core prefill tiles (bf16 / f16): one block per 64 query rows (the tokens x
 * heads of one kv group) x one kv head, 64-key tiles streamed by cp.async, QK^T and PV with mma.sync
 * m16n8k16 and fp32 accumulators, online softmax in fp32. The plan kernel (attention.cu) lists the tiles. */
#include "kernels/cuda/attention_impl.cuh"

/* ---- tiles: 64 query rows x one kv head, tensor cores (bf16 / f16 only) -------------------------------- */

template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi)
{
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* c += a (16x16, row) * b (16x8, col), fp32 accumulators. */
#define MMA16816(CT, PTX) \
    template <> __device__ __forceinline__ void mma16816<CT>(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) \
    { \
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX "." PTX ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
                     "{%8,%9}, {%0,%1,%2,%3};\n" \
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1)); \
    }
template <typename T> __device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1);
MMA16816(__nv_bfloat16, "bf16")
MMA16816(__half, "f16")

__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p, bool trans)
{
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    if (trans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s) : "memory");
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s) : "memory");
}

template <int HDP> struct tile_cfg {
    static constexpr int BK = HDP > 128 ? 32 : 64, RS = HDP + 8;    // +16 bytes a row: ldmatrix rows hit distinct banks
    static constexpr size_t smem(size_t elem) { return (size_t)(TILE_BQ + 2 * BK) * RS * elem; }
};

template <typename T, int HDP>
__global__ void __launch_bounds__(ATTN_THREADS) tile_kernel(attn_args<T> a)
{
    constexpr int BK = tile_cfg<HDP>::BK, RS = tile_cfg<HDP>::RS, CPR = HDP / 8, NB = BK / 8, DB = HDP / 8;
    extern __shared__ uint4 smem[];
    __shared__ long long s_off[BK];     // pool offset of each K row of the tile being loaded, -1 past ke
    T *sQ = reinterpret_cast<T *>(smem), *sK = sQ + TILE_BQ * RS, *sV = sK + BK * RS;
    const int n_tiles = a.header[1];
    if (blockIdx.x >= (unsigned)n_tiles) return;
    const int2 it = a.tiles[n_tiles - 1 - blockIdx.x];     // a sequence's last (longest) tiles start first
    const kv_geom &g = a.g;
    const int kh = blockIdx.y, group = a.n_heads / g.n_kv_heads, hd = g.head_dim;
    const int start = a.sq.start_pos[it.x], rows = a.sq.n_tokens[it.x] * group, r0 = it.y * TILE_BQ;
    const size_t tok0 = a.sq.tok_off[it.x];
    const int32_t *pt = a.sq.page_table + a.sq.page_off[it.x];
    const bool vec = a.vec;
    const int p_first = start + r0 / group, p_last = start + (min(r0 + TILE_BQ, rows) - 1) / group;
    const int kb = first_key(p_first, a.window), ke = p_last + 1, lo_last = first_key(p_last, a.window);

    for (int c = threadIdx.x; c < TILE_BQ * CPR; c += ATTN_THREADS) {
        int r = c / CPR, d0 = c % CPR * 8, rr = r0 + r;
        const T *src = rr < rows ? a.q + ((tok0 + rr / group) * a.n_heads + kh * group + rr % group) * hd : nullptr;
        copy_chunk(sQ + r * RS + d0, src, d0, hd, vec, a.q);
    }
    /* Page lookups once per row of a tile (not per 16-byte chunk): s_off serves its K and then its V load. */
    auto find_rows = [&](int kt) {
        int key = kt + threadIdx.x;
        if (threadIdx.x < BK) s_off[threadIdx.x] = key < ke ? kv_row(a.pool, g, pt, key, 0, kh) - a.pool : -1;
    };
    auto load_kv = [&](T *dst, int which) {
        for (int c = threadIdx.x; c < BK * CPR; c += ATTN_THREADS) {
            int r = c / CPR, d0 = c % CPR * 8;
            long long off = s_off[r];
            copy_chunk(dst + r * RS + d0, off >= 0 ? a.pool + off + which * g.kv_stride : nullptr, d0, hd, vec, a.q);
        }
    };
    find_rows(kb);
    __syncthreads();
    load_kv(sK, 0);
    cp_async_commit();

    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP, gq = lane / 4, t4 = lane % 4;
    int prow[2], plo[2];            // position and first key of this thread's two rows (gq, gq + 8); -1: padding
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        int rr = r0 + warp * 16 + gq + 8 * e;
        prow[e] = rr < rows ? start + rr / group : -1;
        plo[e] = first_key(prow[e], a.window);
    }
    float o[DB][4] = {}, m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const T *qbase = sQ + (warp * 16 + (lane & 15)) * RS + (lane >> 4) * 8;                     // A: Q rows
    const T *kbase = sK + ((lane & 7) + (lane >> 4) * 8) * RS + ((lane >> 3) & 1) * 8;          // B: K rows
    const T *vbase = sV + ((lane & 7) + ((lane >> 3) & 1) * 8) * RS + (lane >> 4) * 8;          // B: V^T (trans)

    for (int kt = kb; kt < ke; kt += BK) {
        load_kv(sV, 1);             // s_off still describes this tile
        cp_async_commit();
        cp_async_wait<1>();         // Q and this K tile have landed
        __syncthreads();            // ... for everyone; every V load has read s_off
        find_rows(kt + BK);
        float s[NB][4] = {};
#pragma unroll
        for (int ks = 0; ks < HDP / 16; ++ks) {
            uint32_t qa[4];
            ldsm_x4(qa, qbase + ks * 16, false);
#pragma unroll
            for (int nb = 0; nb < NB; nb += 2) {
                uint32_t kf[4];
                ldsm_x4(kf, kbase + nb * 8 * RS + ks * 16, false);
                mma16816<T>(s[nb], qa, kf[0], kf[1]);
                mma16816<T>(s[nb + 1], qa, kf[2], kf[3]);
            }
        }
        float mx[2] = {-INFINITY, -INFINITY};
        if (kt + BK - 1 <= p_first && kt >= lo_last) {      // every row sees every key of this tile: no mask
#pragma unroll
            for (int nb = 0; nb < NB; ++nb)
#pragma unroll
                for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], s[nb][e] *= a.scale_log2);
        } else {
#pragma unroll
            for (int nb = 0; nb < NB; ++nb)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    int key = kt + nb * 8 + 2 * t4 + (e & 1), r = e >> 1;
                    s[nb][e] = key <= prow[r] && key >= plo[r] ? s[nb][e] * a.scale_log2 : -INFINITY;
                    mx[r] = fmaxf(mx[r], s[nb][e]);
                }
        }
        float alpha[2], mb[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(~0u, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(~0u, mx[r], 2));
            float mn = fmaxf(m[r], mx[r]);
            mb[r] = mn == -INFINITY ? 0.0f : mn;        // a row with nothing visible yet keeps p = 0, no NaN
            alpha[r] = fast_exp2(m[r] - mb[r]);
            m[r] = mn;
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int nb = 0; nb < NB; ++nb)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[nb][e] = fast_exp2(s[nb][e] - mb[e >> 1]);
                l[e >> 1] += s[nb][e];
            }
#pragma unroll
        for (int db = 0; db < DB; ++db)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[db][e] *= alpha[e >> 1];
        __syncthreads();            // every warp is done with sK; s_off describes the next tile
        if (kt + BK < ke) load_kv(sK, 0);
        cp_async_commit();          // possibly empty: keeps the group count uniform
        cp_async_wait<1>();         // this V tile has landed
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) {
            const float *s0 = s[2 * ks], *s1 = s[2 * ks + 1];     // P's A fragment is S's C layout, repacked
            uint32_t pa[4] = {pack2<T>(s0[0], s0[1]), pack2<T>(s0[2], s0[3]), pack2<T>(s1[0], s1[1]),
                              pack2<T>(s1[2], s1[3])};
#pragma unroll
            for (int db = 0; db < DB; db += 2) {
                uint32_t vf[4];
                ldsm_x4(vf, vbase + ks * 16 * RS + db * 8, true);
                mma16816<T>(o[db], pa, vf[0], vf[1]);
                mma16816<T>(o[db + 1], pa, vf[2], vf[3]);
            }
        }
        __syncthreads();            // every warp is done with sV
    }
    cp_async_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(~0u, l[r], 1);
        l[r] += __shfl_xor_sync(~0u, l[r], 2);
        if (prow[r] < 0) continue;
        int rr = r0 + warp * 16 + gq + 8 * r;
        T *dst = a.out + ((tok0 + rr / group) * a.n_heads + kh * group + rr % group) * hd;
        float inv = 1.0f / l[r];
#pragma unroll
        for (int db = 0; db < DB; ++db) {
            int d = db * 8 + 2 * t4;
            if (d < hd) dst[d] = from_f32<T>(o[db][2 * r] * inv);
            if (d + 1 < hd) dst[d + 1] = from_f32<T>(o[db][2 * r + 1] * inv);
        }
    }
}

template <typename T, int HDP>
static void launch_tiles(const attn_args<T> &a, dim3 grid, cudaStream_t stream)
{
    size_t smem = tile_cfg<HDP>::smem(sizeof(T));
    if (smem > SMEM_DEFAULT)
        CUDA_CHECK(cudaFuncSetAttribute(tile_kernel<T, HDP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    tile_kernel<T, HDP><<<grid, ATTN_THREADS, smem, stream>>>(a);
    CUDA_CHECK(cudaGetLastError());
}

template <typename T> void attention_launch_tiles(const attn_args<T> &a, int head_dim, dim3 grid, cudaStream_t stream)
{
    if (head_dim <= 32) launch_tiles<T, 32>(a, grid, stream);
    else if (head_dim <= 64) launch_tiles<T, 64>(a, grid, stream);
    else if (head_dim <= 128) launch_tiles<T, 128>(a, grid, stream);
    else launch_tiles<T, 256>(a, grid, stream);
}

template void attention_launch_tiles<__half>(const attn_args<__half> &, int, dim3, cudaStream_t);
template void attention_launch_tiles<__nv_bfloat16>(const attn_args<__nv_bfloat16> &, int, dim3, cudaStream_t);
