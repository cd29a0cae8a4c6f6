/* Decode paged attention alone, against the copy ceiling: the kernel that bounds a large decode step
 * (at batch 256 and context 512 it is about 80% of a Llama-2-7B step). No model is needed: the KV pool is
 * filled with small random fp16 values, every sequence has one query token at position ctx-1, and its
 * pages are either laid out in order or scattered over the pool in random order, as they are after a
 * server has run for a while. Shapes: MHA (32 heads of 128, Llama-2-7B) and GQA (32 query heads on 8 kv
 * heads, Llama-3-8B); the pool keeps 4 layers per page, so a page's layer-0 rows are strided as in serving.
 * Times are per call with the step plan reused (one call per layer in a forward pass); the plan kernel,
 * which runs once per step, is timed beside. Bytes counted: the K and V rows read plus q and out.
 * Prints one JSON object. usage: attention_bench [REPS] */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/copy_ceiling.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

enum { PAGE_TOKENS = 16, LAYERS = 4, HEAD_DIM = 128, N_HEADS = 32 };

typedef struct shape { int batch, ctx, n_kv_heads, scattered; } shape;

static const shape shapes[] = {
    { 1, 512, 32, 0 }, { 64, 512, 32, 0 }, { 64, 512, 32, 1 }, { 256, 512, 32, 0 }, { 256, 512, 32, 1 },
    { 32, 2048, 32, 1 }, { 8, 4096, 32, 1 }, { 64, 512, 8, 1 }, { 256, 512, 8, 1 }, { 64, 2048, 8, 1 },
};

static uint32_t rng_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* fp16 bits of a value in about [-1, 1): sign, exponent 14 or 13, random mantissa. */
static uint16_t rand_half(uint64_t *s)
{
    uint32_t r = rng_next(s);
    return (uint16_t)((r & 0x8000) | (0x3400 + (r & 0x3ff) + ((r >> 10) & 1) * 0x400));
}

/* Fills n halves at dev with a 16 MiB random block, repeated. */
static void fill_random(uint16_t *dev, size_t n, uint64_t *seed)
{
    size_t block = (size_t)8 << 20;
    uint16_t *h = malloc(block * sizeof *h);
    for (size_t i = 0; i < block; i++) h[i] = rand_half(seed);
    for (size_t at = 0; at < n; at += block)
        CUDA_CHECK(cudaMemcpy(dev + at, h, (n - at < block ? n - at : block) * sizeof *h, cudaMemcpyHostToDevice));
    free(h);
}

typedef struct run { double us, plan_us; } run;

static run time_shape(const shape *sh, int reps, uint64_t *seed)
{
    const int B = sh->batch, hk = sh->n_kv_heads, per_seq = sh->ctx / PAGE_TOKENS + 1;
    const size_t kv_stride = (size_t)PAGE_TOKENS * hk * HEAD_DIM, layer_stride = 2 * kv_stride;
    const size_t page_stride = LAYERS * layer_stride, n_pages = (size_t)B * per_seq;
    int32_t *h_pages = malloc(n_pages * sizeof *h_pages), *h_seq = malloc(5 * (size_t)B * sizeof *h_seq);
    for (size_t i = 0; i < n_pages; i++) h_pages[i] = (int32_t)i;
    for (size_t i = n_pages; sh->scattered && i > 1; i--) {      // Fisher-Yates over the pool
        size_t j = rng_next(seed) % i;
        int32_t t = h_pages[i - 1]; h_pages[i - 1] = h_pages[j]; h_pages[j] = t;
    }
    for (int s = 0; s < B; s++) {       // start, n, tok_off, page_off
        h_seq[s] = sh->ctx - 1; h_seq[B + s] = 1; h_seq[2 * B + s] = s; h_seq[3 * B + s] = s * per_seq;
    }
    uint16_t *pool, *q, *out;
    int32_t *d_pages, *d_seq;
    void *scratch;
    size_t scratch_bytes = cuda_paged_attention_scratch_bytes(B, B, N_HEADS, hk, HEAD_DIM);
    CUDA_CHECK(cudaMalloc((void **)&pool, n_pages * page_stride * 2));
    CUDA_CHECK(cudaMalloc((void **)&q, (size_t)B * N_HEADS * HEAD_DIM * 2));
    CUDA_CHECK(cudaMalloc((void **)&out, (size_t)B * N_HEADS * HEAD_DIM * 2));
    CUDA_CHECK(cudaMalloc((void **)&d_pages, n_pages * sizeof *d_pages));
    CUDA_CHECK(cudaMalloc((void **)&d_seq, 4 * (size_t)B * sizeof *d_seq));
    CUDA_CHECK(cudaMalloc(&scratch, scratch_bytes));
    fill_random(pool, n_pages * page_stride, seed);
    fill_random(q, (size_t)B * N_HEADS * HEAD_DIM, seed);
    CUDA_CHECK(cudaMemcpy(d_pages, h_pages, n_pages * sizeof *d_pages, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_seq, h_seq, 4 * (size_t)B * sizeof *d_seq, cudaMemcpyHostToDevice));
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    run r = { 0, 0 };
    for (int reuse = 1; reuse >= 0; reuse--) {
        for (int i = -3; i < reps; i++) {
            if (i == 0) CUDA_CHECK(cudaEventRecord(a, 0));
            cuda_paged_attention_f16(out, scratch, scratch_bytes, q, pool, page_stride, layer_stride, kv_stride,
                                     PAGE_TOKENS, hk, HEAD_DIM, 0, d_pages, d_seq, d_seq + B, d_seq + 2 * B,
                                     d_seq + 3 * B, B, B, N_HEADS, 0, 0.088f, reuse && i > -3, 0);
        }
        CUDA_CHECK(cudaEventRecord(b, 0));
        CUDA_CHECK(cudaEventSynchronize(b));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
        if (reuse) r.us = ms * 1e3 / reps;
        else r.plan_us = ms * 1e3 / reps - r.us;
    }
    CUDA_CHECK(cudaGetLastError());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaFree(pool); cudaFree(q); cudaFree(out); cudaFree(d_pages); cudaFree(d_seq); cudaFree(scratch);
    free(h_pages);
    free(h_seq);
    return r;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 50;
    if (reps < 1) { fprintf(stderr, "usage: attention_bench [REPS >= 1]\n"); return 2; }
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    double bw = bench_copy_ceiling();
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    printf("{\n  \"command\": \"attention_bench %d\",\n  \"device\": \"%s\",\n  \"date\": \"%s\",\n", reps, prop.name,
           date);
    printf("  \"copy_ceiling_GBps\": %.0f,\n  \"page_tokens\": %d,\n  \"head_dim\": %d,\n  \"runs\": [\n", bw / 1e9,
           PAGE_TOKENS, HEAD_DIM);
    uint64_t seed = 42;
    int n = (int)(sizeof shapes / sizeof shapes[0]);
    for (int i = 0; i < n; i++) {
        const shape *sh = &shapes[i];
        run r = time_shape(sh, reps, &seed);
        double bytes = (double)sh->batch * sh->ctx * 2 * sh->n_kv_heads * HEAD_DIM * 2
                     + 2.0 * sh->batch * N_HEADS * HEAD_DIM * 2;
        printf("    {\"batch\": %d, \"context\": %d, \"heads\": %d, \"kv_heads\": %d, \"pages\": \"%s\", "
               "\"us\": %.1f, \"plan_us\": %.1f, \"GBps\": %.0f, \"fraction_of_copy\": %.3f}%s\n",
               sh->batch, sh->ctx, N_HEADS, sh->n_kv_heads, sh->scattered ? "scattered" : "in order", r.us,
               r.plan_us, bytes / (r.us * 1e-6) / 1e9, bytes / (r.us * 1e-6) / bw, i + 1 < n ? "," : "");
        fflush(stdout);
    }
    printf("  ]\n}\n");
    return 0;
}
