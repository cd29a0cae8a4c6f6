/* Token sampling on the GPU, the twin of op_sample (kernels/cpu/sample.c): one block per row. The point
 * is that a request draws the SAME token on either backend, so every path mirrors the CPU's rule, not
 * merely its distribution:
 *   - greedy: argmax, lowest id on ties (a block reduction);
 *   - the same uniform: op_sample_uniform's splitmix64 hash of (seed, index), ported bit for bit;
 *   - the same weights: w = exp((logit - max) / T) with the division in fp32 as on the CPU, and exp
 *     evaluated in double then rounded to fp32, i.e. correctly rounded nearly always; glibc's expf is
 *     too (0.502 ulp), so the two disagree by one ulp on ~1e-4 of inputs, never more;
 *   - the same order of the inverse CDF, which the CPU defines per path: id order over the vocabulary
 *     (no filter); ranked order over the nucleus (top_p); and for top_k alone the order its Lomuto
 *     quickselect leaves the kept ids in, which quickselect_order below reproduces exactly (every
 *     round's median-of-three pivot and its partition permutation), since any other order would pick a
 *     different token for most draws.
 * Where results can still legitimately differ: the running sums of the inverse CDF and of the total
 * mass are accumulated in double in a different association (per-thread chunks + a block scan instead
 * of one sequential loop), and a weight may differ by one fp32 ulp; so when u * mass (or top_p * mass
 * at the nucleus edge) falls within ~1e-7 relative of a prefix sum, the neighbouring token can win.
 * NaN logits have no defined ranking on the CPU either and are outside this contract.
 *
 * Cost per sampled row: greedy and no-filter rows are one or two passes over the row. top_p selects
 * the best 2048 (then 8x more, ... as the CPU grows its nucleus) with a radix select on the fp32 keys,
 * compacts them in id order and sorts them with a stable LSD radix sort, so ties keep id order. top_k
 * alone replays the quickselect: O(vocab) expected, one block-wide partition per round. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_common.h"
#include "kernels/ops.h"

#include <assert.h>
#include <limits.h>
#include <stddef.h>

/* A host array of sample_params may be copied to the device as cuda_sample_params. */
static_assert(sizeof(cuda_sample_params) == sizeof(sample_params) &&
              offsetof(cuda_sample_params, temperature) == offsetof(sample_params, temperature) &&
              offsetof(cuda_sample_params, top_p) == offsetof(sample_params, top_p) &&
              offsetof(cuda_sample_params, top_k) == offsetof(sample_params, top_k) &&
              offsetof(cuda_sample_params, seed) == offsetof(sample_params, seed) &&
              offsetof(cuda_sample_params, index) == offsetof(sample_params, index),
              "cuda_sample_params must mirror sample_params");

enum {
    NT = 512, NW = NT / WARP,               // threads per row; 512 leaves registers for the double math
    BUFFERS = 3,                            // int32 scratch buffers of vocab per row
    NUC_FIRST = 2048, NUC_GROWTH = 8,       // nucleus candidates tried first, and the growth factor
    SORT_BITS = 4, SORT_BINS = 1 << SORT_BITS,
    CHAIN_CAP = 32,                         // tape links one thread follows before the block compresses
};
#define FULL_MASK 0xffffffffu

struct sample_smem {
    long long ll[NW];
    double d[NW];
    int i[NW];
    float f[NW];
    unsigned hist[256];
    int warp_bins[NW][SORT_BINS + 1];       // + 1: the slot of the lanes past the end of a sort tile
    int bin_base[SORT_BINS], bin_tile[SORT_BINS];
    unsigned key;
    int take, skip;
    double acc;
};

namespace {   // device helpers and kernels stay private to this file

/* ---- the draw: op_sample_uniform, bit for bit ---- */
__device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ double uniform_draw(uint64_t seed, uint32_t index)
{
    uint64_t h = mix64(mix64(seed) + ((uint64_t)index + 1) * 0x9e3779b97f4a7c15ULL);
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);  // 53 bits times 2^-53: exact
}

/* fp32 quotient as on the CPU; double exp rounded once to fp32 (see the header comment). */
__device__ __forceinline__ float weight(float logit, float mx, float temp)
{
    return (float)exp((double)((logit - mx) / temp));
}

/* The CPU's strict order with its own float comparisons, for the quickselect replay. */
__device__ __forceinline__ bool ranks_before(const float *lg, int a, int b)
{
    float la = lg[a], lb = lg[b];
    return la > lb || (la == lb && a < b);
}

/* Unsigned key increasing with the logit; -0 is folded into +0 because the CPU's == ties them. */
__device__ __forceinline__ unsigned ord_key(float f)
{
    if (f == 0.0f) f = 0.0f;
    unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* ---- block primitives (every thread must call them: they contain __syncthreads) ---- */
template <typename T> __device__ __forceinline__ T warp_inclusive_scan(T v)
{
    int lane = threadIdx.x % WARP;
    for (int off = 1; off < WARP; off <<= 1) {
        T o = __shfl_up_sync(FULL_MASK, v, off);
        if (lane >= off) v += o;
    }
    return v;
}

/* Exclusive prefix over threads in threadIdx order and the block total. The exclusive value is taken
 * by shuffle, not as inclusive - v, so double prefixes carry no cancellation error. Deterministic. */
template <typename T> __device__ T block_exclusive_scan(T v, T *total, T *sh)
{
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    T inc = warp_inclusive_scan(v);
    T exc = __shfl_up_sync(FULL_MASK, inc, 1);
    if (lane == 0) exc = T(0);
    if (lane == WARP - 1) sh[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        T s = warp_inclusive_scan(lane < NW ? sh[lane] : T(0));
        if (lane < NW) sh[lane] = s;
    }
    __syncthreads();
    T base = warp ? sh[warp - 1] : T(0);
    *total = sh[NW - 1];
    __syncthreads();                        // sh is free again on return
    return base + exc;
}

template <bool MAX> __device__ int block_min_max(int v, int *sh)
{
    for (int off = WARP / 2; off > 0; off >>= 1) {
        int o = __shfl_xor_sync(FULL_MASK, v, off);
        v = MAX ? max(v, o) : min(v, o);
    }
    if (threadIdx.x % WARP == 0) sh[threadIdx.x / WARP] = v;
    __syncthreads();
    for (int w = 0; w < NW; ++w) v = MAX ? max(v, sh[w]) : min(v, sh[w]);
    __syncthreads();
    return v;
}

/* The CPU's argmax: first index of the maximum over values > -inf (NaN never wins), else 0. */
__device__ int block_argmax(const float *lg, int vocab, sample_smem &sh)
{
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int i = threadIdx.x; i < vocab; i += NT)
        if (lg[i] > bv) { bv = lg[i]; bi = i; }
    for (int off = WARP / 2; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, bv, off);
        int oi = __shfl_xor_sync(FULL_MASK, bi, off);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    if (threadIdx.x % WARP == 0) { sh.f[threadIdx.x / WARP] = bv; sh.i[threadIdx.x / WARP] = bi; }
    __syncthreads();
    for (int w = 0; w < NW; ++w)
        if (sh.f[w] > bv || (sh.f[w] == bv && sh.i[w] < bi)) { bv = sh.f[w]; bi = sh.i[w]; }
    __syncthreads();
    return bi == INT_MAX ? 0 : bi;
}

/* This thread's contiguous chunk [*b, *e) of len items: sequence-order work (scans, stable
 * compaction) walks chunks so that thread order is sequence order. */
__device__ __forceinline__ void my_chunk(int len, int *b, int *e)
{
    int c = (len + NT - 1) / NT;
    *b = min(len, (int)threadIdx.x * c);
    *e = min(len, *b + c);
}

/* ---- the inverse CDF over a sequence (ids, or 0..len-1 when ids is NULL) ----
 * Prefix sums of the weights in sequence order: each thread's chunk sequentially in double from its
 * block-scan offset. draw: the first position whose prefix exceeds u01 * total (positions of zero
 * weight never win, as the CPU skips them), else the last position of positive weight, else 0.
 * nucleus: the first position whose prefix reaches x (pos -1 if none), with that prefix in acc. */
struct crossing {
    int pos;
    double acc;
};

__device__ crossing cross(const int *ids, int len, const float *lg, float mx, float temp, bool draw, double x,
                          float *wbuf, sample_smem &sh)
{
    int b, e;
    my_chunk(len, &b, &e);
    double sum = 0.0;
    int last = -1;
    for (int j = b; j < e; ++j) {
        float w = weight(lg[ids ? ids[j] : j], mx, temp);
        wbuf[j] = w;                        // this thread reads it back below: no sync needed
        sum += w;
        if (w > 0.0f) last = j;
    }
    double total, acc = block_exclusive_scan(sum, &total, sh.d);
    double thr = draw ? x * total : x;
    int pos = INT_MAX;
    for (int j = b; j < e; ++j) {
        float w = wbuf[j];
        acc += w;
        if (draw ? (w > 0.0f && thr < acc) : acc >= thr) { pos = j; break; }
    }
    int first = block_min_max<false>(pos, sh.i);
    if (first != INT_MAX && pos == first) sh.acc = acc;
    last = block_min_max<true>(last, sh.i);  // its __syncthreads publish sh.acc
    crossing c = {first, first != INT_MAX ? sh.acc : total};
    if (first == INT_MAX) c.pos = draw ? max(last, 0) : -1;
    return c;
}

/* ---- top-m by rank (logit desc, id asc) with a radix select on ord keys ----
 * Members: key > t.key, plus the first t.take ids (in id order) whose key == t.key. */
struct threshold {
    unsigned key;
    int take;
};

__device__ threshold select_top_m(const float *lg, int vocab, int m, sample_smem &sh)
{
    unsigned prefix = 0, mask = 0;
    int remaining = m;                      // how many still to take inside the current prefix
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int d = threadIdx.x; d < 256; d += NT) sh.hist[d] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += NT) {
            unsigned k = ord_key(lg[i]);
            if ((k & mask) == prefix) atomicAdd(&sh.hist[(k >> shift) & 255u], 1u);  // integer: deterministic
        }
        __syncthreads();
        if (threadIdx.x < WARP) {           // lane l owns digits 255-8l down to 248-8l
            int lane = threadIdx.x, c = 0;
            for (int q = 0; q < 8; ++q) c += sh.hist[255 - 8 * lane - q];
            int inc = warp_inclusive_scan(c), above = inc - c;
            if (above < remaining && remaining <= inc) {
                int d = 255 - 8 * lane;
                for (; above + (int)sh.hist[d] < remaining; --d) above += sh.hist[d];
                sh.key = prefix | ((unsigned)d << shift);
                sh.take = remaining - above;
            }
        }
        __syncthreads();
        prefix = sh.key;
        remaining = sh.take;
        mask |= 255u << shift;
        __syncthreads();
    }
    return {prefix, remaining};
}

/* Members of t in id order: written to out when out != NULL, else their weight sum is returned. */
__device__ double members(const float *lg, int vocab, threshold t, int *out, float mx, float temp,
                          sample_smem &sh)
{
    int b, e;
    my_chunk(vocab, &b, &e);
    long long gt = 0, eq = 0;
    for (int i = b; i < e; ++i) {
        unsigned k = ord_key(lg[i]);
        gt += k > t.key;
        eq += k == t.key;
    }
    long long tot, pre = block_exclusive_scan(gt | (eq << 32), &tot, sh.ll);
    int eq_before = (int)(pre >> 32), pos = (int)(pre & 0xffffffffLL) + min(eq_before, t.take);
    double mass = 0.0;
    for (int i = b; i < e; ++i) {
        unsigned k = ord_key(lg[i]);
        if (!(k > t.key || (k == t.key && eq_before++ < t.take))) continue;
        if (out) out[pos++] = i;
        else mass += weight(lg[i], mx, temp);
    }
    double total;
    block_exclusive_scan(mass, &total, sh.d);
    return total;
}

/* Stable LSD radix sort of ids[0..len) by logit, descending (SORT_BITS per pass): the input is in id
 * order, so equal logits stay in id order, which is the CPU's ranking. Each tile of NT ids is ranked
 * per digit with warp match masks; passes where every key shares the digit are skipped. Returns the
 * buffer (a or b) holding the result. */
__device__ int *sort_ranked(int *a, int *b, int len, const float *lg, sample_smem &sh)
{
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    for (int shift = 0; shift < 32; shift += SORT_BITS) {
        if (threadIdx.x < SORT_BINS) sh.bin_tile[threadIdx.x] = 0;
        for (int q = threadIdx.x; q < NW * (SORT_BINS + 1); q += NT) (&sh.warp_bins[0][0])[q] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < len; i += NT)
            atomicAdd(&sh.bin_tile[SORT_BINS - 1 - ((ord_key(lg[a[i]]) >> shift) & (SORT_BINS - 1))], 1);
        __syncthreads();
        if (threadIdx.x == 0) {
            int run = 0;
            sh.skip = 0;
            for (int d = 0; d < SORT_BINS; ++d) {
                sh.skip |= sh.bin_tile[d] == len;
                sh.bin_base[d] = run;
                run += sh.bin_tile[d];
            }
        }
        __syncthreads();
        if (sh.skip) continue;              // uniform: read after the barrier, rewritten after another
        for (int t0 = 0; t0 < len; t0 += NT) {
            int i = t0 + (int)threadIdx.x, id = i < len ? a[i] : 0;
            unsigned d = i < len ? SORT_BINS - 1 - ((ord_key(lg[id]) >> shift) & (SORT_BINS - 1)) : SORT_BINS;
            unsigned peers = __match_any_sync(FULL_MASK, d);
            int rank = __popc(peers & ((1u << lane) - 1u));
            if (rank == 0) sh.warp_bins[warp][d] = __popc(peers);
            __syncthreads();
            if (threadIdx.x < SORT_BINS) {  // per digit: offsets of the warps, then the tile's count
                int run = 0;
                for (int w = 0; w < NW; ++w) {
                    int c = sh.warp_bins[w][threadIdx.x];
                    sh.warp_bins[w][threadIdx.x] = run;
                    run += c;
                }
                sh.bin_tile[threadIdx.x] = run;
            }
            __syncthreads();
            if (i < len) b[sh.bin_base[d] + sh.warp_bins[warp][d] + rank] = id;
            __syncthreads();
            if (threadIdx.x < SORT_BINS) {
                sh.bin_base[threadIdx.x] += sh.bin_tile[threadIdx.x];
                for (int w = 0; w < NW; ++w) sh.warp_bins[w][threadIdx.x] = 0;
            }
            __syncthreads();
        }
        int *t = a; a = b; b = t;
    }
    return a;
}

/* ---- top_k alone: the CPU's quickselect, replayed ----
 * select_top (kernels/cpu/sample.c) leaves ids[0..m) in the order its Lomuto partitions produce, and
 * the CPU draws in that order, so this reproduces it round by round: thread 0 does the median-of-three
 * swaps, then the partition runs block-wide. A Lomuto pass keeps the "before" ids in order; the others
 * form a FIFO queue (window [store, i)) whose front moves to the back at each later "before" id.
 * When the next round goes left only the before ids matter; when it goes right the queue's final order
 * is needed: on a tape of every push (arrivals and re-pushes), rotation r re-pushes tape[r], so the
 * final queue tape[R..) is resolved by following those back links. Chains are short on real logits;
 * an id rotated many times (position-sorted logits) makes a long one, and then the tape is compressed
 * by pointer jumping (O(log) rounds) instead of being walked by one thread. */
__device__ void quickselect_order(int *ids, int *before, int *tape, const float *lg, int vocab, int m,
                                  sample_smem &sh)
{
    for (int i = threadIdx.x; i < vocab; i += NT) ids[i] = i;
    int lo = 0, hi = vocab - 1;
    __syncthreads();
    while (lo < hi) {
        if (threadIdx.x == 0) {
            int mid = lo + (hi - lo) / 2, t;
            if (ranks_before(lg, ids[mid], ids[lo])) { t = ids[mid]; ids[mid] = ids[lo]; ids[lo] = t; }
            if (ranks_before(lg, ids[hi], ids[lo])) { t = ids[hi]; ids[hi] = ids[lo]; ids[lo] = t; }
            if (ranks_before(lg, ids[mid], ids[hi])) { t = ids[mid]; ids[mid] = ids[hi]; ids[hi] = t; }
        }
        __syncthreads();
        int pivot = ids[hi], b, e;
        my_chunk(hi - lo, &b, &e);
        b += lo;
        e += lo;
        long long nb = 0, na = 0;
        int first_arrival = INT_MAX;
        for (int q = b; q < e; ++q) {
            if (ranks_before(lg, ids[q], pivot)) ++nb;
            else { ++na; first_arrival = min(first_arrival, q); }
        }
        long long tot, pre = block_exclusive_scan(nb | (na << 32), &tot, sh.ll);
        int jb = (int)(pre & 0xffffffffLL), ja = (int)(pre >> 32);
        int n_before = (int)(tot & 0xffffffffLL), n_arrive = (int)(tot >> 32), store = lo + n_before;
        if (store >= m - 1) {               // left (or done): the queue is never looked at again
            for (int q = b; q < e; ++q)
                if (ranks_before(lg, ids[q], pivot)) before[jb++] = ids[q];
            __syncthreads();
            for (int j = threadIdx.x; j < n_before; j += NT) ids[lo + j] = before[j];
            if (store == m - 1 && threadIdx.x == 0) ids[store] = pivot;
            __syncthreads();
            if (store == m - 1) break;
            hi = store - 1;
            continue;
        }
        /* befores ahead of the first arrival swap with themselves: they are not rotations */
        int f = block_min_max<false>(first_arrival, sh.i) - lo;
        for (int q = b; q < e; ++q) {
            int id = ids[q];
            if (ranks_before(lg, id, pivot)) {
                before[jb] = id;
                if (ja > 0) tape[ja + jb - f] = jb - f;     // rotation number jb - f re-pushes tape[jb - f]
                ++jb;
            } else {
                tape[ja + jb - f] = -id - 1;               // an arrival pushes the id itself
                ++ja;
            }
        }
        __syncthreads();
        int rotations = n_before - f;
        bool unresolved = false;
        for (int x = threadIdx.x; x < n_arrive; x += NT) {
            int t = rotations + x, steps = 0;
            while (tape[t] >= 0 && steps++ < CHAIN_CAP) t = tape[t];
            if (tape[t] < 0) ids[x ? store + x : hi] = -tape[t] - 1;   // the final swap sends the front to hi
            else unresolved = true;
        }
        if (__syncthreads_or(unresolved)) {
            /* Long chains: pointer jumping in place until every link names an arrival. A racing read
             * sees the old or the new link of an entry, and both lie on its chain, so races are benign. */
            bool again;
            do {
                again = false;
                for (int t = threadIdx.x; t < n_arrive + rotations; t += NT) {
                    int v = tape[t];
                    if (v >= 0) { v = tape[v]; tape[t] = v; again |= v >= 0; }
                }
            } while (__syncthreads_or(again));
            for (int x = threadIdx.x; x < n_arrive; x += NT) ids[x ? store + x : hi] = -tape[rotations + x] - 1;
        }
        for (int j = threadIdx.x; j < n_before; j += NT) ids[lo + j] = before[j];
        if (threadIdx.x == 0) ids[store] = pivot;
        __syncthreads();
        lo = store + 1;
    }
}

__global__ void __launch_bounds__(NT) sample_kernel(int32_t *out, const float *logits, int vocab,
                                                    const cuda_sample_params *params, int32_t *scratch)
{
    __shared__ sample_smem sh;
    const float *lg = logits + (size_t)blockIdx.x * vocab;
    int *A = scratch + (size_t)blockIdx.x * BUFFERS * vocab, *B = A + vocab, *C = B + vocab;
    cuda_sample_params p = params[blockIdx.x];
    int best = block_argmax(lg, vocab, sh);
    float mx = lg[best];
    if (p.temperature <= 0.0f || !isfinite(mx)) {
        if (threadIdx.x == 0) out[blockIdx.x] = best;
        return;
    }
    float temp = p.temperature;
    int top_k = p.top_k > 0 && p.top_k < vocab ? p.top_k : vocab;
    bool use_p = p.top_p > 0.0f && p.top_p < 1.0f;
    double u01 = uniform_draw(p.seed, p.index);
    int id;
    if (!use_p && top_k == vocab) {         // id order over the whole vocabulary
        id = cross(nullptr, vocab, lg, mx, temp, true, u01, (float *)C, sh).pos;
    } else if (!use_p) {                    // the quickselect's order over the kept ids
        quickselect_order(A, B, C, lg, vocab, top_k, sh);
        id = A[cross(A, top_k, lg, mx, temp, true, u01, (float *)B, sh).pos];
    } else {                                // ranked order over the nucleus
        threshold all = {0u, INT_MAX};
        double mass = members(lg, vocab, top_k < vocab ? select_top_m(lg, vocab, top_k, sh) : all, nullptr, mx,
                              temp, sh);
        double target = (double)p.top_p * mass;
        int *ranked = A, count;
        for (int m = min(top_k, (int)NUC_FIRST);; m = min(top_k, m * NUC_GROWTH)) {
            members(lg, vocab, select_top_m(lg, vocab, m, sh), A, mx, temp, sh);
            ranked = sort_ranked(A, B, m, lg, sh);
            crossing c = cross(ranked, m, lg, mx, temp, false, target, (float *)C, sh);
            count = c.pos >= 0 ? c.pos + 1 : m;
            if (c.pos >= 0 || m == top_k) break;
        }
        id = ranked[cross(ranked, count, lg, mx, temp, true, u01, (float *)C, sh).pos];
    }
    if (threadIdx.x == 0) out[blockIdx.x] = id;
}

__global__ void uniform_kernel(double *out, const cuda_sample_params *params, int n)
{
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < n) out[r] = uniform_draw(params[r].seed, params[r].index);
}

}  // namespace

extern "C" size_t cuda_sample_scratch_bytes(int n, int vocab)
{
    assert(n >= 0 && vocab >= 0);
    return (size_t)n * BUFFERS * (size_t)vocab * sizeof(int32_t);
}

extern "C" void cuda_sample(int32_t *out_ids, const float *logits, int n, int vocab, const cuda_sample_params *params,
                            void *scratch, size_t scratch_bytes, cudaStream_t stream)
{
    assert(n >= 0 && vocab > 0 && vocab <= INT_MAX / NUC_GROWTH);
    if (n == 0) return;
    assert(out_ids && logits && params && scratch);
    assert(scratch_bytes >= cuda_sample_scratch_bytes(n, vocab));
    assert((uintptr_t)scratch % alignof(int32_t) == 0);
    sample_kernel<<<n, NT, 0, stream>>>(out_ids, logits, vocab, params, (int32_t *)scratch);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuda_sample_uniform(double *out, const cuda_sample_params *params, int n, cudaStream_t stream)
{
    assert(n >= 0);
    if (n == 0) return;
    assert(out && params);
    enum { THREADS = 256 };
    uniform_kernel<<<(n + THREADS - 1) / THREADS, THREADS, 0, stream>>>(out, params, n);
    CUDA_CHECK(cudaGetLastError());
}
