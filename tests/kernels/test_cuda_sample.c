/* cuda_sample against its CPU twin op_sample, token for token. The contract is identity of the chosen
 * id, not of the distribution: a request must draw the same token on either backend. So the test runs
 * the same (logits, params) through both and demands
 *   - the device uniform equal op_sample_uniform bit for bit (edge seeds and indices included);
 *   - greedy rows (and top_k = 1 rows) pick the lowest of planted tied maxima, +-0 and +-inf included;
 *   - for vocabularies of 7, 32000 and 151936, flat / peaked / heavily tied / masked logits and many
 *     (seed, index) under temperature, top_k (also vocab/2 and vocab-1) and top_p combinations: >= 99.9%
 *     identical ids, and every mismatch explained as a near tie. A mismatch is legitimate only where the
 *     CPU's own inverse CDF puts u * mass within 1e-6 (relative) of the edge of the GPU's token, or top_p
 *     * mass within 1e-6 of a nucleus edge; the CPU's order and weights for that check are read back
 *     from the scratch op_sample leaves (w[vocab], then its ids), documented in kernels/ops.h.
 * Device buffers are poisoned first, so an unwritten id or reliance on old scratch fails. `--quick` and
 * `--tiny` cut the draws by 8 and 64 (for the sanitizers); `--bench` adds launch timings. Skips (a TAP
 * skip plan) when there is no usable device. */
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "tests/kernels/kernel_test.h"
#include "tests/tap.h"

#include <float.h>
#include <string.h>

enum { N_PAT = 4 };
#define NEAR_TIE 1e-6

typedef struct combo {
    float temperature, top_p;
    int top_k;
} combo;

static sample_params cpu_params(const cuda_sample_params *g)
{
    return (sample_params){.temperature = g->temperature, .top_p = g->top_p, .top_k = g->top_k, .seed = g->seed,
                           .index = g->index};
}

/* cuda_sample over n rows, row r holding pattern r % n_pat (device, [n_pat, vocab]); returns the
 * milliseconds of the launch alone. */
static float gpu_sample(int32_t *out, const float *d_pat, int n_pat, int vocab, const cuda_sample_params *params,
                        int n, cudaStream_t s)
{
    float *d_logits;
    cuda_sample_params *d_params;
    int32_t *d_out;
    void *d_scratch;
    size_t row = (size_t)vocab * sizeof(float), scratch = cuda_sample_scratch_bytes(n, vocab);
    CUDA_CHECK(cudaMalloc((void **)&d_logits, row * n));
    CUDA_CHECK(cudaMalloc((void **)&d_params, sizeof *d_params * n));
    CUDA_CHECK(cudaMalloc((void **)&d_out, sizeof *d_out * n));
    CUDA_CHECK(cudaMalloc(&d_scratch, scratch));
    for (int r = 0; r < n; ++r)
        CUDA_CHECK(cudaMemcpyAsync((char *)d_logits + row * r, d_pat + (size_t)(r % n_pat) * vocab, row,
                                   cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(d_params, params, sizeof *d_params * n, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemsetAsync(d_out, 0xff, sizeof *d_out * n, s));
    CUDA_CHECK(cudaMemsetAsync(d_scratch, 0xff, scratch, s));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaEventRecord(e0, s));
    cuda_sample(d_out, d_logits, n, vocab, d_params, d_scratch, scratch, s);
    CUDA_CHECK(cudaEventRecord(e1, s));
    CUDA_CHECK(cudaMemcpyAsync(out, d_out, sizeof *out * n, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    CUDA_CHECK(cudaFree(d_logits));
    CUDA_CHECK(cudaFree(d_params));
    CUDA_CHECK(cudaFree(d_out));
    CUDA_CHECK(cudaFree(d_scratch));
    return ms;
}

/* How far (relative to the mass drawn from) the CPU's inverse CDF puts u * mass from the interval of
 * token g, after op_sample just ran with this scratch; or how close top_p * mass came to a nucleus edge,
 * whichever is smaller. DBL_MAX when g is outside the CPU's support altogether. */
static double boundary_distance(const float *scratch, int vocab, const sample_params *p, int g)
{
    const float *w = scratch;
    const int *ids = (const int *)(w + vocab);
    int k = p->top_k > 0 && p->top_k < vocab ? p->top_k : vocab, count = k;
    int use_p = p->top_p > 0.0f && p->top_p < 1.0f, ordered = use_p || k < vocab;
    double edge = DBL_MAX;
    if (use_p) {                            // ids[0..k) is the top-k set, its nucleus prefix ranked
        long double total = 0.0L, cum = 0.0L, target;
        for (int j = 0; j < k; ++j) total += w[ids[j]];
        target = (long double)p->top_p * total;
        for (count = 0; count < k && cum < target; ++count) {
            edge = fmin(edge, (double)(fabsl(cum - target) / total));
            cum += w[ids[count]];
        }
        edge = fmin(edge, (double)(fabsl(cum - target) / total));
    }
    long double mass = 0.0L, lo = -1.0L, hi = -1.0L;
    for (int j = 0; j < count; ++j) {
        int id = ordered ? ids[j] : j;
        if (id == g) lo = mass;
        mass += w[id] > 0.0f ? w[id] : 0.0f;
        if (id == g) hi = mass;
    }
    if (lo < 0.0L) return edge;
    long double x = (long double)op_sample_uniform(p->seed, p->index) * mass;
    double d = (double)((x < lo ? lo - x : x >= hi ? x - hi : 0.0L) / mass);
    return fmin(d, edge);
}

/* One launch per combo of n rows over the patterns; every row also through op_sample. */
static void check_draws(const char *what, const float *pat, int vocab, const combo *combos, int n_combos, int n,
                        cudaStream_t s)
{
    float *d_pat, *scratch = xcalloc(2 * (size_t)vocab, sizeof *scratch);
    CUDA_CHECK(cudaMalloc((void **)&d_pat, sizeof *d_pat * N_PAT * vocab));
    CUDA_CHECK(cudaMemcpy(d_pat, pat, sizeof *d_pat * N_PAT * vocab, cudaMemcpyHostToDevice));
    cuda_sample_params *params = xcalloc(n, sizeof *params);
    int32_t *got = xcalloc(n, sizeof *got);
    long all = 0, all_same = 0;
    for (int c = 0; c < n_combos; ++c) {
        for (int r = 0; r < n; ++r) {
            uint64_t salt = (uint64_t)vocab * 1000003u + (uint64_t)c * 7919u + (uint64_t)r;
            params[r] = (cuda_sample_params){.temperature = combos[c].temperature, .top_p = combos[c].top_p,
                                             .top_k = combos[c].top_k,
                                             .seed = r % 11 == 5 ? UINT64_MAX - (uint64_t)r : salt * 0x9e3779b97f4a7c15ULL,
                                             .index = r % 13 == 7 ? UINT32_MAX - (uint32_t)r : (uint32_t)(r * 37 % 4099)};
        }
        float ms = gpu_sample(got, d_pat, N_PAT, vocab, params, n, s);
        int same = 0, near = 0, real = 0, bad_range = 0;
        double worst = 0.0;
        for (int r = 0; r < n; ++r) {
            sample_params p = cpu_params(&params[r]);
            memset(scratch, 0xff, 2 * (size_t)vocab * sizeof *scratch);
            int want = op_sample(pat + (size_t)(r % N_PAT) * vocab, vocab, &p, scratch);
            if (got[r] < 0 || got[r] >= vocab) { ++bad_range; continue; }
            if (got[r] == want) { ++same; continue; }
            double d = boundary_distance(scratch, vocab, &p, got[r]);
            worst = fmax(worst, d);
            if (d <= NEAR_TIE) ++near;
            else ++real;
            if (near + real <= 5)
                TAP_DIAG("%s row %d (pattern %d, T=%g k=%d p=%g seed %llu index %u): gpu %d cpu %d, distance %.3g",
                         what, r, r % N_PAT, p.temperature, p.top_k, p.top_p, (unsigned long long)p.seed, p.index,
                         got[r], want, d);
        }
        all += n;
        all_same += same;
        TAP_OK(bad_range == 0 && real == 0 && same >= 0.999 * n,
               "%s T=%g top_k=%d top_p=%g: %d/%d identical, %d near-tie mismatches (max distance %.2g), "
               "%d unexplained; %d rows in %.3f ms", what, combos[c].temperature, combos[c].top_k, combos[c].top_p,
               same, n, near, worst, real, n, ms);
    }
    TAP_DIAG("%s: %ld/%ld draws identical (%.4f%%)", what, all_same, all, 100.0 * all_same / all);
    CUDA_CHECK(cudaFree(d_pat));
    free(scratch); free(params); free(got);
}

/* Patterns for a large vocabulary: flat, peaked (LLM-like), heavily tied, and peaked with a masked
 * quarter and a tied maximum. */
static void fill_patterns(float *pat, int vocab, test_rng *rng)
{
    float *flat = pat, *peak = pat + vocab, *tied = pat + 2 * (size_t)vocab, *mask = pat + 3 * (size_t)vocab;
    fill_uniform(flat, vocab, rng, -3.0f, 3.0f);
    fill_uniform(peak, vocab, rng, -10.0f, 0.0f);
    for (int j = 0; j < 30; ++j) peak[rng_next(rng) % vocab] = rng_float(rng, 3.0f, 9.0f);
    for (int i = 0; i < vocab; ++i) tied[i] = floorf(rng_float(rng, -4.0f, 4.0f) * 2.0f) / 2.0f;
    memcpy(mask, peak, sizeof *mask * vocab);
    for (int i = 0; i < vocab; i += 4) mask[i] = -INFINITY;
    mask[vocab / 3 | 1] = mask[vocab / 2 | 1] = 12.0f;
}

static void check_large(int vocab, int n, test_rng *rng, cudaStream_t s)
{
    float *pat = xcalloc((size_t)N_PAT * vocab, sizeof *pat);
    fill_patterns(pat, vocab, rng);
    const combo combos[] = {
        {1.0f, 0.0f, 0}, {0.7f, 0.0f, 50}, {1.3f, 0.0f, 2000}, {0.9f, 0.0f, vocab / 2}, {1.0f, 0.0f, vocab - 1},
        {1.0f, 0.9f, 0}, {0.6f, 0.5f, 0}, {0.8f, 0.95f, 40}, {1.2f, 0.8f, 5000},
    };
    char what[32];
    snprintf(what, sizeof what, "V=%d", vocab);
    check_draws(what, pat, vocab, combos, (int)(sizeof combos / sizeof combos[0]), n, s);
    free(pat);
}

static void check_small(int n, cudaStream_t s)
{
    const float pat[N_PAT][7] = {
        {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, -INFINITY, 1.0f},
        {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f},
        {-1.2039728f, -0.6931472f, -1.6094379f, -INFINITY, -INFINITY, -INFINITY, -INFINITY},   // 0.3 0.5 0.2
        {0.25f, -0.0f, 3.5f, 0.0f, 3.5f, -2.0f, 1.0f},
    };
    const combo combos[] = {
        {1.0f, 0.0f, 0}, {2.0f, 0.0f, 3}, {1.0f, 0.7f, 0}, {0.5f, 0.95f, 4}, {1.0f, 0.0f, 6}, {0.9f, 0.6f, 2},
        {1.0f, 0.45f, 0}, {1.0f, 0.55f, 7},
    };
    check_draws("V=7", &pat[0][0], 7, combos, (int)(sizeof combos / sizeof combos[0]), n, s);
}

/* --bench: launch time per combo for 1, 64 and 256 rows of one pattern (peaked = LLM-like, flat = the
 * largest nuclei), best of three launches; diagnostics only. */
static void bench(int vocab, int pattern, const char *name, test_rng *rng, cudaStream_t s)
{
    float *pat = xcalloc((size_t)N_PAT * vocab, sizeof *pat), *d_pat;
    fill_patterns(pat, vocab, rng);
    CUDA_CHECK(cudaMalloc((void **)&d_pat, sizeof *d_pat * vocab));
    CUDA_CHECK(cudaMemcpy(d_pat, pat + (size_t)pattern * vocab, sizeof *d_pat * vocab, cudaMemcpyHostToDevice));
    const combo combos[] = {{0.0f, 0.0f, 0}, {1.0f, 0.0f, 0}, {0.7f, 0.0f, 50}, {1.0f, 0.9f, 0}, {0.8f, 0.95f, 40}};
    const int sizes[] = {1, 64, 256};
    cuda_sample_params *params = xcalloc(256, sizeof *params);
    int32_t *got = xcalloc(256, sizeof *got);
    for (int c = 0; c < (int)(sizeof combos / sizeof combos[0]); ++c) {
        float best[3];
        for (int z = 0; z < 3; ++z) {
            for (int r = 0; r < sizes[z]; ++r)
                params[r] = (cuda_sample_params){.temperature = combos[c].temperature, .top_p = combos[c].top_p,
                                                 .top_k = combos[c].top_k, .seed = (uint64_t)r, .index = 3};
            best[z] = FLT_MAX;
            for (int rep = 0; rep < 3; ++rep) best[z] = fminf(best[z], gpu_sample(got, d_pat, 1, vocab, params, sizes[z], s));
        }
        TAP_DIAG("bench V=%d %s T=%g top_k=%d top_p=%g: 1 row %.1f us, 64 rows %.1f us, 256 rows %.1f us", vocab, name,
                 combos[c].temperature, combos[c].top_k, combos[c].top_p, best[0] * 1e3, best[1] * 1e3, best[2] * 1e3);
    }
    CUDA_CHECK(cudaFree(d_pat));
    free(pat); free(params); free(got);
}

/* Planted tied maxima: every greedy form and top_k = 1 must return the lowest tied id. */
static void check_greedy(int vocab, test_rng *rng, cudaStream_t s)
{
    enum { ROWS = 40 };
    float *rows = xcalloc((size_t)ROWS * vocab, sizeof *rows);
    cuda_sample_params params[ROWS];
    int expect[ROWS];
    for (int r = 0; r < ROWS; ++r) {
        float *x = rows + (size_t)r * vocab;
        fill_uniform(x, vocab, rng, -5.0f, 5.0f);
        int a = (int)(rng_next(rng) % vocab), b = (int)(rng_next(rng) % vocab), c = (int)(rng_next(rng) % vocab);
        if (r % 5 == 0) { a = vocab - 1; b = 0; }
        float top = r == 3 ? INFINITY : 7.0f + (float)(r % 3);
        if (r % 7 == 1 || r == 2)
            for (int i = 0; i < vocab; ++i) x[i] = -INFINITY;
        if (r == 4) {                       // +0 and -0 tie as the maximum of negative logits
            for (int i = 0; i < vocab; ++i) x[i] = -fabsf(x[i]) - 1.0f;
            top = 0.0f;
        }
        if (r != 2) x[a] = x[b] = x[c] = top;
        if (r == 4) x[a] = -0.0f;
        expect[r] = r == 2 ? 0 : a < b ? (a < c ? a : c) : (b < c ? b : c);
        const cuda_sample_params forms[4] = {
            {.temperature = 0.0f, .top_p = 0.5f, .top_k = 3}, {.temperature = -1.0f},
            {.temperature = 0.7f, .top_k = 1}, {.temperature = 1.5f, .top_k = 1, .top_p = 0.3f}};
        params[r] = forms[r % 4];
        params[r].seed = (uint64_t)r * 31u;
        params[r].index = (uint32_t)r;
    }
    float *d_rows;
    CUDA_CHECK(cudaMalloc((void **)&d_rows, sizeof *rows * ROWS * vocab));
    CUDA_CHECK(cudaMemcpy(d_rows, rows, sizeof *rows * ROWS * vocab, cudaMemcpyHostToDevice));
    int32_t got[ROWS];
    gpu_sample(got, d_rows, ROWS, vocab, params, ROWS, s);
    float *scratch = xcalloc(2 * (size_t)vocab, sizeof *scratch);
    int ok = 0;
    for (int r = 0; r < ROWS; ++r) {
        sample_params p = cpu_params(&params[r]);
        int want = op_sample(rows + (size_t)r * vocab, vocab, &p, scratch);
        if (got[r] == want && want == expect[r]) ++ok;
        else TAP_DIAG("V=%d greedy row %d: gpu %d cpu %d expected %d", vocab, r, got[r], want, expect[r]);
    }
    TAP_OK(ok == ROWS, "V=%d greedy / top_k=1 with planted ties (+-0, +-inf, all -inf): %d/%d lowest tied id",
           vocab, ok, ROWS);
    CUDA_CHECK(cudaFree(d_rows));
    free(rows); free(scratch);
}

/* The device uniform against op_sample_uniform, compared as bits. */
static void check_uniform(test_rng *rng, cudaStream_t s)
{
    enum { N = 100000 };
    cuda_sample_params *params = xcalloc(N, sizeof *params);
    double *got = xcalloc(N, sizeof *got), *d_out;
    const uint64_t edge_seeds[] = {0, 1, UINT64_MAX, 1ULL << 63, 0x9e3779b97f4a7c15ULL};
    for (int i = 0; i < N; ++i) {
        params[i].seed = i < 5 * 4 ? edge_seeds[i % 5] : rng_next(rng) >> (i % 64);
        params[i].index = i < 5 * 4 ? (uint32_t[]){0, 1, UINT32_MAX, 12345}[i / 5] : (uint32_t)rng_next(rng) >> (i % 32);
    }
    cuda_sample_params *d_params;
    CUDA_CHECK(cudaMalloc((void **)&d_params, sizeof *params * N));
    CUDA_CHECK(cudaMalloc((void **)&d_out, sizeof *d_out * N));
    CUDA_CHECK(cudaMemcpy(d_params, params, sizeof *params * N, cudaMemcpyHostToDevice));
    cuda_sample_uniform(d_out, d_params, N, s);
    CUDA_CHECK(cudaMemcpyAsync(got, d_out, sizeof *got * N, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    int bad = 0;
    for (int i = 0; i < N; ++i) {
        double want = op_sample_uniform(params[i].seed, params[i].index);
        bad += memcmp(&want, &got[i], sizeof want) != 0;
    }
    TAP_OK(bad == 0, "device uniform == op_sample_uniform bit for bit over %d (seed, index), edges included (%d differ)",
           N, bad);
    CUDA_CHECK(cudaFree(d_params));
    CUDA_CHECK(cudaFree(d_out));
    free(params); free(got);
}

int main(int argc, char **argv)
{
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
        TAP_DIAG("cudaGetDeviceCount: %s, %d devices", cudaGetErrorString(e), devices);
        TAP_SKIP_ALL("no CUDA device");
    }
    const char *mode = argc > 1 ? argv[1] : "";
    int scale = strcmp(mode, "--quick") == 0 ? 8 : strcmp(mode, "--tiny") == 0 ? 64 : 1;
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    test_rng rng = {2024};
    check_uniform(&rng, s);
    check_greedy(7, &rng, s);
    check_greedy(32000, &rng, s);
    check_greedy(151936, &rng, s);
    check_small(8192 / scale, s);
    check_large(32000, 1024 / scale, &rng, s);
    check_large(151936, 256 / scale, &rng, s);
    if (strcmp(mode, "--bench") == 0) {
        bench(151936, 1, "peaked", &rng, s);
        bench(151936, 0, "flat", &rng, s);
        bench(32000, 1, "peaked", &rng, s);
    }
    CUDA_CHECK(cudaStreamDestroy(s));
    return tap_done();
}
