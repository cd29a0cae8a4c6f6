/* Paged KV writes and causal GQA paged attention over a whole step on the GPU, twins of op_kv_store and
 * op_paged_attention (kernels/cpu/attention.c). A step mixes prefill chunks and decode tokens of many
 * sequences, and the host never reads the per-sequence arrays (they are device data), so each call runs:
 *   1. plan (one block): reads the sequences, sizes split-K chunks so the whole step yields about
 *      TARGET_BLOCKS blocks of work, and writes two work lists into the caller's scratch;
 *   2. rows: one block per (query token, key chunk, kv head, <= 8 query heads of its group), SIMT fp32,
 *      online softmax (flash-decoding). Decode tokens always go here; f32 prefill too (f32 storage is the
 *      debug/reference type, so it keeps the plain path and its 1e-5 agreement with the CPU). When a token's
 *      keys were split, the last of its blocks to finish (atomic counter) merges the partials;
 *   3. tiles (bf16/f16 prefill): one block per 64 query rows (tokens x the heads of one kv group, so each
 *      K/V tile is read once for the group) x one kv head, 64-key tiles (32 at head_dim 256) streamed by
 *      cp.async, QK^T and PV on tensor cores (mma.sync m16n8k16, fp32 accumulators), online softmax in fp32.
 *      P is rounded to the storage type for the PV product, as FlashAttention does.
 * head_dim is padded to the next of 32/64/128/256 inside the kernels (zero columns), so any head_dim up to
 * 256 works; 16-byte vector loads / cp.async are used when the layout allows, element loads otherwise.
 * Positions outside a token's window are never read, so never-written slots cannot leak into outputs. */
#include "kernels/cuda/attention_impl.cuh"
#include "kernels/cuda/cuda_ops.h"

/* ---- plan ------------------------------------------------------------------------------------------- */

struct plan_args {
    seq_arrays sq;
    row_item *rows;
    int2 *tiles;
    int *header, *counters;
    int n_seqs, n_tokens, group, window, rows_all, target, row_bound, tile_bound, grid_y;
};

/* Keys seen by positions 0..P-1 together (each sees min(p+1, window)). */
__device__ __forceinline__ long long keys_before(long long P, int window)
{
    if (window <= 0 || P <= window) return P * (P + 1) / 2;
    return (long long)window * (window + 1) / 2 + (P - window) * window;
}

__device__ __forceinline__ int4 add4(int4 a, int4 b) { return make_int4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }

__device__ __forceinline__ int4 warp_scan4(int4 v)      // inclusive
{
    const int lane = threadIdx.x % WARP;
    for (int off = 1; off < WARP; off <<= 1) {
        int4 t = make_int4(__shfl_up_sync(~0u, v.x, off), __shfl_up_sync(~0u, v.y, off), __shfl_up_sync(~0u, v.z, off),
                           __shfl_up_sync(~0u, v.w, off));
        if (lane >= off) v = add4(v, t);
    }
    return v;
}

/* Exclusive block scan of four counters at once; *total gets the block's sums. */
__device__ int4 block_scan4(int4 v, int4 *s_warp /* [WARP] */, int4 *total)
{
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, nw = blockDim.x / WARP;
    int4 inc = warp_scan4(v);
    if (lane == WARP - 1) s_warp[warp] = inc;
    __syncthreads();
    if (warp == 0) s_warp[lane] = warp_scan4(lane < nw ? s_warp[lane] : make_int4(0, 0, 0, 0));
    __syncthreads();
    int4 pre = warp > 0 ? s_warp[warp - 1] : make_int4(0, 0, 0, 0);
    *total = s_warp[nw - 1];
    __syncthreads();        // s_warp is reused by the next call
    return make_int4(pre.x + inc.x - v.x, pre.y + inc.y - v.y, pre.z + inc.z - v.z, pre.w + inc.w - v.w);
}

/* Chunk = max(SPLIT_MIN_KEYS, keys of all row tokens / target): then the split tokens hold fewer than
 * 2*target chunks in all (a split token has len > chunk, so ceil(len/chunk) < 2*len/chunk), which is
 * what bounds the scratch. A broken caller contract (bad sequence arrays) traps instead of overflowing. */
__global__ void __launch_bounds__(PLAN_THREADS) plan_kernel(plan_args a)
{
    __shared__ unsigned long long s_keys;
    __shared__ int4 s_warp[WARP];
    if (threadIdx.x == 0) s_keys = 0;
    __syncthreads();
    unsigned long long keys = 0;
    for (int s = threadIdx.x; s < a.n_seqs; s += blockDim.x) {
        int start = a.sq.start_pos[s], n = a.sq.n_tokens[s], off = a.sq.tok_off[s];
        if (start < 0 || n < 0 || off < 0 || off > a.n_tokens - n) __trap();
        if (n > 0 && (a.rows_all || n == 1)) keys += keys_before(start + n, a.window) - keys_before(start, a.window);
    }
    atomicAdd(&s_keys, keys);
    __syncthreads();
    const long long chunk = max((long long)SPLIT_MIN_KEYS, (long long)((s_keys + a.target - 1) / a.target));

    int4 run = make_int4(0, 0, 0, 0);      // row items, split tokens, partial slots, tiles so far
    for (int b = 0; b < a.n_seqs; b += blockDim.x) {
        const int s = b + threadIdx.x;
        const int start = s < a.n_seqs ? a.sq.start_pos[s] : 0, n = s < a.n_seqs ? a.sq.n_tokens[s] : 0;
        const bool row_seq = n > 0 && (a.rows_all || n == 1);
        int4 c = make_int4(0, 0, 0, 0);
        if (row_seq) {
            for (int i = 0; i < n; ++i) {
                int p = start + i, k = (int)((p - first_key(p, a.window) + chunk) / chunk);
                c.x += k;
                if (k > 1) { c.y += 1; c.z += k; }
            }
        } else if (n > 0) {
            c.w = (n * a.group + TILE_BQ - 1) / TILE_BQ;
        }
        int4 tot, ex = add4(block_scan4(c, s_warp, &tot), run);
        if (row_seq) {
            for (int i = 0; i < n; ++i) {
                int p = start + i, lo = first_key(p, a.window), k = (int)((p - lo + chunk) / chunk);
                if (ex.x + k > a.row_bound || (k > 1 && (ex.y >= a.target || ex.z + k > 2 * a.target))) __trap();
                for (int j = 0; j < k; ++j) {
                    int kb = (int)(lo + j * chunk), ke = (int)min((long long)p + 1, lo + (j + 1) * chunk);
                    a.rows[ex.x++] = row_item{s, i, kb, ke, j, k, k > 1 ? ex.z : -1, k > 1 ? ex.y : -1};
                }
                if (k > 1) { ex.y += 1; ex.z += k; }
            }
        } else if (n > 0) {
            if (ex.w + c.w > a.tile_bound) __trap();
            for (int t = 0; t < c.w; ++t) a.tiles[ex.w + t] = make_int2(s, t);
        }
        run = add4(run, tot);
    }
    if (threadIdx.x == 0) { a.header[0] = run.x; a.header[1] = run.w; }
    for (int x = threadIdx.x; x < run.y * a.grid_y; x += blockDim.x) a.counters[x] = 0;
}

/* ---- rows: one query token, a chunk of keys, GH query heads of one kv head -------------------------- */

/* K/V stream through a ring of STAGES shared-memory stages filled by cp.async (STEP keys each), so two or
 * three stages are always in flight whatever the registers. A key group of L lanes reads one K/V row from
 * the stage (16 bytes a lane, NCH times); KG groups take U keys each per stage, and each group keeps its own
 * online-softmax state per head, updated once per U keys. The block merges the groups at the end. */
template <typename T, int HDP, int GH>
__global__ void __launch_bounds__(ATTN_THREADS) rows_kernel(attn_args<T> a)
{
    constexpr int VEC = 16 / (int)sizeof(T), L = HDP / VEC < WARP ? HDP / VEC : WARP, NCH = HDP / (VEC * L);
    constexpr int E = VEC * NCH, KG = ATTN_THREADS / L, U = 2, STEP = KG * U, CPR = HDP / VEC;
    constexpr int STAGES = NCH == 1 ? 4 : 2, STAGE = 2 * STEP * HDP;     // 32 KB of stages in every case
    constexpr int PAIRS = (GH * HDP + ATTN_THREADS - 1) / ATTN_THREADS;
    __shared__ uint4 s_buf[STAGES * STAGE * sizeof(T) / 16];             // the stages, then s_red
    __shared__ float s_m[KG][GH], s_l[KG][GH], s_M[GH], s_L[GH];
    __shared__ int s_last;
    static_assert(sizeof(float) * KG * GH * HDP <= sizeof(s_buf), "s_red must fit in the stage buffer");
    float (*s_red)[GH][HDP] = reinterpret_cast<float (*)[GH][HDP]>(s_buf);
    static_assert(2 * STEP * CPR % ATTN_THREADS == 0, "every thread copies the same number of chunks");
    constexpr int NC = 2 * STEP * CPR / ATTN_THREADS;
    // Blocks are numbered row-major: with heads_fast, the blocks that run together read the heads of the
    // same key slots, which sit side by side in a page, rather than one 256-byte head row from each of
    // many pages (attention_bench, MHA on an H200: 0.61 -> 0.73 of copy bandwidth at batch 256). GQA
    // blocks, four times the work per row read, measured faster in the other order (0.30 vs 0.26).
    const int grid_y = a.g.n_kv_heads * a.head_chunks, n_rows = (int)gridDim.x / grid_y;
    const int hy = a.heads_fast ? blockIdx.x % grid_y : blockIdx.x / n_rows;
    const int row = a.heads_fast ? blockIdx.x / grid_y : blockIdx.x % n_rows;
    if (row >= a.header[0]) return;
    const row_item it = a.rows[row];
    const kv_geom &g = a.g;
    const int hd = g.head_dim, group = a.n_heads / g.n_kv_heads;
    const int kh = hy / a.head_chunks, hb = (hy % a.head_chunks) * GH;
    const int h0 = kh * group + hb, nh = min(GH, group - hb);
    const int32_t *pt = a.sq.page_table + a.sq.page_off[it.seq];
    const size_t qrow = (size_t)a.sq.tok_off[it.seq] + it.tok;
    const int li = threadIdx.x % L, kgi = threadIdx.x / L;
    const bool vec = a.vec;
    T *stages = reinterpret_cast<T *>(s_buf);
    auto issue = [&](int i) {           // stage i: keys kb + i*STEP .., K rows then V rows
        T *dst = stages + (i % STAGES) * STAGE;
#pragma unroll
        for (int k = 0; k < NC; ++k) {
            int c = threadIdx.x + k * ATTN_THREADS, r = c / CPR, d0 = c % CPR * VEC, key = it.kb + i * STEP + r % STEP;
            const T *src = key < it.ke ? kv_row(a.pool, g, pt, key, r / STEP, kh) : nullptr;
            copy_chunk(dst + r * HDP + d0, src, d0, hd, vec, a.q);
        }
    };
    auto row_from_stage = [&](float *x, const T *row) {     // this lane's E elements of a staged row
#pragma unroll
        for (int c = 0; c < NCH; ++c) {
            chunk<T> v = *reinterpret_cast<const chunk<T> *>(row + (c * L + li) * VEC);
#pragma unroll
            for (int j = 0; j < VEC; ++j) x[c * VEC + j] = to_f32(v.e[j]);
        }
    };
    const int n_it = (it.ke - it.kb + STEP - 1) / STEP;
    for (int i = 0; i < STAGES - 1; ++i) {
        if (i < n_it) issue(i);
        cp_async_commit();              // possibly empty: keeps the group count uniform
    }

    float qv[GH][E], m[GH], l[GH], acc[GH][E];
#pragma unroll
    for (int h = 0; h < GH; ++h) {
        m[h] = -INFINITY; l[h] = 0.0f;
#pragma unroll
        for (int c = 0; c < NCH; ++c) {
            chunk<T> x = {};
            if (h < nh) x = load_chunk(a.q + (qrow * a.n_heads + h0 + h) * hd, (c * L + li) * VEC, hd, vec);
#pragma unroll
            for (int j = 0; j < VEC; ++j) { qv[h][c * VEC + j] = to_f32(x.e[j]); acc[h][c * VEC + j] = 0.0f; }
        }
    }

    for (int i = 0; i < n_it; ++i) {    // uniform trip count: shuffles stay converged
        cp_async_wait<STAGES - 2>();
        __syncthreads();                // stage i landed for all; stage i-1 is consumed, its slot refillable
        if (i + STAGES - 1 < n_it) issue(i + STAGES - 1);
        cp_async_commit();
        const T *sk = stages + (i % STAGES) * STAGE, *sv = sk + STEP * HDP;
        float sc[GH][U], p[GH][U];      // one converted K or V row live at a time keeps registers low
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float kf[E];
            row_from_stage(kf, sk + (u * KG + kgi) * HDP);
            const bool valid = it.kb + i * STEP + u * KG + kgi < it.ke;
#pragma unroll
            for (int h = 0; h < GH; ++h) {
                if (h >= nh) break;     // block-uniform
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < E; ++e) d += qv[h][e] * kf[e];
#pragma unroll
                for (int off = L / 2; off > 0; off >>= 1) d += __shfl_xor_sync(~0u, d, off);
                sc[h][u] = valid ? d * a.scale_log2 : -INFINITY;
            }
        }
#pragma unroll
        for (int h = 0; h < GH; ++h) {
            if (h >= nh) break;
            float mn = m[h], ps = 0.0f;
#pragma unroll
            for (int u = 0; u < U; ++u) mn = fmaxf(mn, sc[h][u]);
            const float mb = mn == -INFINITY ? 0.0f : mn, alpha = exp2f(m[h] - mb);   // no NaN before any key
#pragma unroll
            for (int u = 0; u < U; ++u) ps += (p[h][u] = exp2f(sc[h][u] - mb));
            l[h] = l[h] * alpha + ps;
            m[h] = mn;
#pragma unroll
            for (int e = 0; e < E; ++e) acc[h][e] *= alpha;
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float vf[E];
            row_from_stage(vf, sv + (u * KG + kgi) * HDP);
#pragma unroll
            for (int h = 0; h < GH; ++h) {
                if (h >= nh) break;
#pragma unroll
                for (int e = 0; e < E; ++e) acc[h][e] += p[h][u] * vf[e];
            }
        }
    }
    cp_async_wait<0>();
    __syncthreads();                    // every group is done with the stages: s_red may overwrite them

    /* Merge the key groups: common max per head, each group's state rescaled onto it, summed. */
    if (li == 0)
        for (int h = 0; h < GH; ++h) { s_m[kgi][h] = m[h]; s_l[kgi][h] = l[h]; }
    __syncthreads();
    if (threadIdx.x < GH) {
        float M = -INFINITY, S = 0.0f;
        for (int j = 0; j < KG; ++j) M = fmaxf(M, s_m[j][threadIdx.x]);
        for (int j = 0; j < KG; ++j)
            if (s_m[j][threadIdx.x] != -INFINITY) S += s_l[j][threadIdx.x] * exp2f(s_m[j][threadIdx.x] - M);
        s_M[threadIdx.x] = M; s_L[threadIdx.x] = S;
    }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < GH; ++h) {
        float f = m[h] == -INFINITY ? 0.0f : exp2f(m[h] - s_M[h]);
#pragma unroll
        for (int e = 0; e < E; ++e) s_red[kgi][h][((e / VEC) * L + li) * VEC + e % VEC] = acc[h][e] * f;
    }
    __syncthreads();
    const bool single = it.n_splits == 1;
    for (int x = threadIdx.x; x < nh * hd; x += ATTN_THREADS) {
        int h = x / hd, d = x % hd;
        float sum = 0.0f;
        for (int j = 0; j < KG; ++j) sum += s_red[j][h][d];
        if (single) {
            a.out[(qrow * a.n_heads + h0 + h) * hd + d] = from_f32<T>(sum / s_L[h]);
        } else {
            size_t slot = (size_t)(it.slot0 + it.split) * a.n_heads + h0 + h;
            a.pacc[slot * hd + d] = sum;
            if (d == 0) { a.pm[slot] = s_M[h]; a.pl[slot] = s_L[h]; }
        }
    }
    if (single) return;

    /* Split token: publish, count; the last block of this (token, head set) merges all chunks. */
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0)
        s_last = atomicAdd(&a.counters[it.split_row * grid_y + hy], 1) == it.n_splits - 1;
    __syncthreads();
    if (!s_last) return;
    // Every chunk of this (token, head set) has counted: rearm the counter, so a later call of the step
    // (the next layer) can reuse the plan without re-zeroing.
    if (threadIdx.x == 0) a.counters[it.split_row * grid_y + hy] = 0;
    __threadfence();
    const int ns = it.n_splits;
    if (threadIdx.x < nh) {
        size_t h = h0 + threadIdx.x;
        float M = -INFINITY, S = 0.0f;
        for (int j = 0; j < ns; ++j) M = fmaxf(M, __ldcg(a.pm + (size_t)(it.slot0 + j) * a.n_heads + h));
        for (int j = 0; j < ns; ++j) {
            size_t slot = (size_t)(it.slot0 + j) * a.n_heads + h;
            S += __ldcg(a.pl + slot) * exp2f(__ldcg(a.pm + slot) - M);
        }
        s_M[threadIdx.x] = M; s_L[threadIdx.x] = 1.0f / S;
    }
    constexpr int CMB = KG * HDP;            // weights per head that fit in s_red, per round
    float *s_w = &s_red[0][0][0];
    float o[PAIRS] = {};
    for (int j0 = 0; j0 < ns; j0 += CMB) {
        __syncthreads();
        for (int x = threadIdx.x; x < CMB * nh; x += ATTN_THREADS) {
            int j = j0 + x / nh, h = x % nh;
            if (j < ns) s_w[x] = exp2f(__ldcg(a.pm + (size_t)(it.slot0 + j) * a.n_heads + h0 + h) - s_M[h]) * s_L[h];
        }
        __syncthreads();
        const int jn = min(CMB, ns - j0);
#pragma unroll
        for (int k = 0; k < PAIRS; ++k) {
            int x = threadIdx.x + k * ATTN_THREADS, h = x / hd, d = x % hd;
            if (x >= nh * hd) break;
            for (int j = 0; j < jn; ++j)
                o[k] += s_w[j * nh + h] * __ldcg(a.pacc + ((size_t)(it.slot0 + j0 + j) * a.n_heads + h0 + h) * hd + d);
        }
    }
#pragma unroll
    for (int k = 0; k < PAIRS; ++k) {
        int x = threadIdx.x + k * ATTN_THREADS, h = x / hd, d = x % hd;
        if (x < nh * hd) a.out[(qrow * a.n_heads + h0 + h) * hd + d] = from_f32<T>(o[k]);
    }
}

/* ---- host side ------------------------------------------------------------------------------------------ */

/* The scratch of one call: item lists, merge counters and split partials, each section 256-aligned.
 * Everything grows with n_tokens and n_seqs only, so a layout for the maxima covers every smaller call. */
struct attn_layout {
    int group, gh, head_chunks, grid_y, target, row_bound, tile_bound;
    size_t rows, tiles, counters, pm, pl, pacc, total;
};

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static attn_layout layout_for(int n_tokens, int n_seqs, int n_heads, int n_kv_heads, int head_dim)
{
    attn_layout a;
    a.group = n_heads / n_kv_heads;
    a.gh = a.group >= 8 ? 8 : a.group > 2 ? (a.group > 4 ? 8 : 4) : a.group;
    a.head_chunks = (a.group + a.gh - 1) / a.gh;
    a.grid_y = n_kv_heads * a.head_chunks;
    a.target = TARGET_BLOCKS / a.grid_y > MIN_TARGET ? TARGET_BLOCKS / a.grid_y : MIN_TARGET;
    a.row_bound = (n_tokens > n_seqs ? n_tokens : n_seqs) + 2 * a.target;
    a.tile_bound = (int)(((size_t)n_tokens * a.group + TILE_BQ - 1) / TILE_BQ) + n_seqs;
    size_t slots = 2 * (size_t)a.target * n_heads;
    a.rows = 256;                                               // [0, 256): header
    a.tiles = a.rows + align256((size_t)a.row_bound * sizeof(row_item));
    a.counters = a.tiles + align256((size_t)a.tile_bound * sizeof(int2));
    a.pm = a.counters + align256((size_t)a.target * a.grid_y * sizeof(int));
    a.pl = a.pm + align256(slots * sizeof(float));
    a.pacc = a.pl + align256(slots * sizeof(float));
    a.total = a.pacc + align256(slots * head_dim * sizeof(float));
    return a;
}

extern "C" size_t cuda_paged_attention_scratch_bytes(int max_tokens, int max_seqs, int n_heads, int n_kv_heads,
                                                     int head_dim)
{
    assert(max_tokens >= 0 && max_seqs >= 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0 && head_dim > 0);
    return layout_for(max_tokens, max_seqs, n_heads, n_kv_heads, head_dim).total;
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static bool geom_vec(const kv_geom &g, size_t vec)
{
    return g.head_dim % vec == 0 && g.page_stride % vec == 0 && g.layer_stride % vec == 0 && g.kv_stride % vec == 0;
}

template <typename T, int HDP>
static void launch_rows(const attn_args<T> &a, int gh, dim3 grid, cudaStream_t stream)
{
    if (gh == 1) rows_kernel<T, HDP, 1><<<grid, ATTN_THREADS, 0, stream>>>(a);
    else if (gh == 2) rows_kernel<T, HDP, 2><<<grid, ATTN_THREADS, 0, stream>>>(a);
    else if (gh == 4) rows_kernel<T, HDP, 4><<<grid, ATTN_THREADS, 0, stream>>>(a);
    else rows_kernel<T, HDP, 8><<<grid, ATTN_THREADS, 0, stream>>>(a);
    CUDA_CHECK(cudaGetLastError());
}

template <typename T>
static void paged_attention(T *out, void *scratch, size_t scratch_bytes, const T *q, const T *pool, kv_geom g,
                            seq_arrays sq, int n_seqs, int n_tokens, int n_heads, int window, float scale,
                            bool reuse_plan, cudaStream_t stream)
{
    assert(n_seqs >= 0 && n_tokens >= 0 && n_heads > 0 && g.n_kv_heads > 0 && n_heads % g.n_kv_heads == 0);
    assert(g.head_dim > 0 && g.head_dim <= 256 && g.page_tokens > 0 && g.layer >= 0 && window >= 0);
    assert(g.kv_stride >= (size_t)g.page_tokens * g.n_kv_heads * g.head_dim && g.layer_stride >= 2 * g.kv_stride);
    if (n_seqs == 0 || n_tokens == 0) return;
    assert(out && scratch && q && pool && sq.start_pos && sq.n_tokens && sq.tok_off && sq.page_off && sq.page_table);
    attn_layout lay = layout_for(n_tokens, n_seqs, n_heads, g.n_kv_heads, g.head_dim);
    assert(lay.total <= scratch_bytes && aligned16(scratch));
    const bool rows_all = sizeof(T) == 4;
    const int rows_grid = rows_all ? lay.row_bound : n_seqs + 2 * lay.target;    // 16-bit: decode tokens only
    char *base = static_cast<char *>(scratch);

    plan_args pa = {sq, reinterpret_cast<row_item *>(base + lay.rows), reinterpret_cast<int2 *>(base + lay.tiles),
                    reinterpret_cast<int *>(base), reinterpret_cast<int *>(base + lay.counters), n_seqs, n_tokens,
                    lay.group, window, rows_all, lay.target, rows_grid, lay.tile_bound, lay.grid_y};
    if (!reuse_plan) {
        plan_kernel<<<1, PLAN_THREADS, 0, stream>>>(pa);
        CUDA_CHECK(cudaGetLastError());
    }

    attn_args<T> a = {out, q, pool, g, sq, pa.rows, pa.tiles, pa.header, reinterpret_cast<float *>(base + lay.pm),
                      reinterpret_cast<float *>(base + lay.pl), reinterpret_cast<float *>(base + lay.pacc),
                      pa.counters, n_heads, lay.head_chunks, window,
                      aligned16(q) && aligned16(pool) && geom_vec(g, 16 / sizeof(T)), lay.group == 1,
                      (float)((double)scale * 1.4426950408889634)};
    dim3 rgrid((unsigned)rows_grid * lay.grid_y);
    int hd = g.head_dim;
    if (hd <= 32) launch_rows<T, 32>(a, lay.gh, rgrid, stream);
    else if (hd <= 64) launch_rows<T, 64>(a, lay.gh, rgrid, stream);
    else if (hd <= 128) launch_rows<T, 128>(a, lay.gh, rgrid, stream);
    else launch_rows<T, 256>(a, lay.gh, rgrid, stream);
    if constexpr (sizeof(T) == 2) {
        attention_launch_tiles(a, hd, dim3((unsigned)lay.tile_bound, g.n_kv_heads), stream);
    }
}

/* ---- kv store ------------------------------------------------------------------------------------------ */

template <typename T>
__global__ void kv_store_kernel(T *pool, const T *k, const T *v, const int32_t *token_page, const int32_t *token_slot,
                                kv_geom g, bool vec)
{
    const size_t row = (size_t)g.n_kv_heads * g.head_dim, i = blockIdx.x;
    const int page = token_page[i], slot = token_slot[i];
    if (page < 0 || slot < 0 || slot >= g.page_tokens) __trap();       // the caller resolved a bad position
    T *dk = pool + (size_t)page * g.page_stride + (size_t)g.layer * g.layer_stride + (size_t)slot * row;
    T *dv = dk + g.kv_stride;
    const T *sk = k + i * row, *sv = v + i * row;
    if (vec) {
        constexpr int VEC = 16 / sizeof(T);
        for (size_t c = threadIdx.x; c < row / VEC; c += blockDim.x) {
            reinterpret_cast<uint4 *>(dk)[c] = reinterpret_cast<const uint4 *>(sk)[c];
            reinterpret_cast<uint4 *>(dv)[c] = reinterpret_cast<const uint4 *>(sv)[c];
        }
    } else {
        for (size_t e = threadIdx.x; e < row; e += blockDim.x) { dk[e] = sk[e]; dv[e] = sv[e]; }
    }
}

template <typename T>
static void kv_store(T *pool, const T *k, const T *v, const int32_t *token_page, const int32_t *token_slot, int n,
                     kv_geom g, cudaStream_t stream)
{
    assert(n >= 0 && g.layer >= 0 && g.page_tokens > 0 && g.n_kv_heads > 0 && g.head_dim > 0);
    assert(g.kv_stride >= (size_t)g.page_tokens * g.n_kv_heads * g.head_dim);
    if (n == 0) return;
    assert(pool && k && v && token_page && token_slot);
    const size_t vec_n = 16 / sizeof(T), row = (size_t)g.n_kv_heads * g.head_dim;
    bool vec = aligned16(pool) && aligned16(k) && aligned16(v) && row % vec_n == 0 && g.page_stride % vec_n == 0
            && g.layer_stride % vec_n == 0 && g.kv_stride % vec_n == 0;
    size_t work = vec ? row / vec_n : row;
    int threads = threads_for((int)work, KV_STORE_THREADS);       // row fits an int: n_kv_heads * head_dim
    kv_store_kernel<T><<<n, threads, 0, stream>>>(pool, k, v, token_page, token_slot, g, vec);
    CUDA_CHECK(cudaGetLastError());
}

/* ---- C entry points: the 16-bit ones map uint16_t onto the CUDA types ----------------------------------- */

#define AS_F32(p) (p)
#define KV_GEOM kv_geom{page_stride, layer_stride, kv_stride, page_tokens, n_kv_heads, head_dim, layer}
#define KV_STORE_ENTRY(SUFFIX, CT, CAST) \
    extern "C" void cuda_kv_store_##SUFFIX(CT *pool, const CT *k, const CT *v, const int32_t *token_page, \
                                           const int32_t *token_slot, int n, int layer, size_t page_stride, \
                                           size_t layer_stride, size_t kv_stride, int page_tokens, int n_kv_heads, \
                                           int head_dim, cudaStream_t stream) \
    { \
        kv_store(CAST(pool), CAST(k), CAST(v), token_page, token_slot, n, KV_GEOM, stream); \
    }
#define ATTENTION_ENTRY(SUFFIX, CT, CAST) \
    extern "C" void cuda_paged_attention_##SUFFIX( \
        CT *out, void *scratch, size_t scratch_bytes, const CT *q, const CT *pool, size_t page_stride, \
        size_t layer_stride, size_t kv_stride, int page_tokens, int n_kv_heads, int head_dim, int layer, \
        const int32_t *page_table, const int32_t *seq_start_pos, const int32_t *seq_n_tokens, \
        const int32_t *seq_tok_off, const int32_t *seq_page_off, int n_seqs, int n_tokens, int n_heads, int window, \
        float scale, int reuse_plan, cudaStream_t stream) \
    { \
        paged_attention(CAST(out), scratch, scratch_bytes, CAST(q), CAST(pool), KV_GEOM, \
                        seq_arrays{seq_start_pos, seq_n_tokens, seq_tok_off, seq_page_off, page_table}, n_seqs, \
                        n_tokens, n_heads, window, scale, reuse_plan != 0, stream); \
    }

KV_STORE_ENTRY(f32, float, AS_F32)
KV_STORE_ENTRY(bf16, uint16_t, as_bf16)
KV_STORE_ENTRY(f16, uint16_t, as_f16)
ATTENTION_ENTRY(f32, float, AS_F32)
ATTENTION_ENTRY(bf16, uint16_t, as_bf16)
ATTENTION_ENTRY(f16, uint16_t, as_f16)
