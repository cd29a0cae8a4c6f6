/* CUDA backend step times against the step's floor, for a Llama-2-7B-shaped model with random fp16
 * weights (generated once into a directory by the project's model generator): decode steps at batch 1..256
 * with every sequence at context 512, and a 4096-token prefill. The floor of a step is the larger of
 * (bytes it must read: weights + KV) / measured copy bandwidth and (its FLOPs) / measured GEMM rate, both
 * ceilings measured in this run (a large device-to-device copy; a large cuBLAS bf16 GEMM). Prints one JSON
 * object with the command, device and date. Run under mpirun with one rank per GPU (TP = ranks).
 * usage: mpirun -np T decode_bench MODEL_DIR [--generate]   (LoRA adapters are not in the CUDA path yet) */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/log.h"
#include "common/model_gen.h"
#include "worker/cuda/forward_cuda.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Copy bandwidth (bytes read + written per second) of a 2 GiB device-to-device copy. */
static double copy_ceiling(void)
{
    size_t n = (size_t)2 << 30;
    void *a, *b;
    cudaMalloc(&a, n);
    cudaMalloc(&b, n);
    cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    double t = now_s();
    for (int i = 0; i < 10; i++) cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    double bw = 2.0 * n * 10 / (now_s() - t);
    cudaFree(a);
    cudaFree(b);
    return bw;
}

/* bf16 GEMM rate (FLOP/s) of 8192^3 products in cuBLAS, fp32 accumulation. */
static double gemm_ceiling(void)
{
    int n = 8192;
    void *a, *b, *c;
    cudaMalloc(&a, (size_t)n * n * 2);
    cudaMalloc(&b, (size_t)n * n * 2);
    cudaMalloc(&c, (size_t)n * n * 2);
    cudaMemset(a, 0x3c, (size_t)n * n * 2);
    cudaMemset(b, 0x3c, (size_t)n * n * 2);
    cublasHandle_t h;
    cublasCreate(&h);
    const float one = 1, zero = 0;
    for (int i = 0; i < 13; i++) {
        if (i == 3) { cudaDeviceSynchronize(); }
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    cudaDeviceSynchronize();
    double t = now_s();
    for (int i = 0; i < 10; i++)
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cudaDeviceSynchronize();
    double rate = 2.0 * n * n * (double)n * 10 / (now_s() - t);
    cublasDestroy(h);
    cudaFree(a); cudaFree(b); cudaFree(c);
    return rate;
}

/* B sequences, each n_tokens at start_pos, greedy; pages laid out consecutively. */
static void make_plan(plan *p, int B, int start_pos, int n_tokens, int page_tokens)
{
    plan_reset(p, PLAN_STEP, 1);
    int per_seq = (start_pos + n_tokens + page_tokens - 1) / page_tokens;
    int32_t tokens[4096], pages[1024];
    for (int i = 0; i < n_tokens; i++) tokens[i] = 100 + i % 1000;
    for (int s = 0; s < B; s++) {
        for (int k = 0; k < per_seq; k++) pages[k] = s * per_seq + k;
        plan_seq *q = plan_add_seq(p, tokens, n_tokens, pages, per_seq);
        q->start_pos = start_pos;
        q->sample = 1;
        p->h.n_sample++;
    }
}

static double time_steps(cuda_forward *f, const plan *p, int reps, int32_t *ids)
{
    ls_error err = { 0 };
    for (int i = 0; i < 3; i++) cuda_forward_step(f, p, ids, NULL, &err);
    double t = now_s();
    for (int i = 0; i < reps; i++) cuda_forward_step(f, p, ids, NULL, &err);
    return (now_s() - t) / reps;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, T;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &T);
    log_init(rank, LOG_WARN);
    if (argc < 2) { fprintf(stderr, "usage: decode_bench MODEL_DIR [--generate]\n"); return 2; }
    ls_error err = { 0 };
    if (argc > 2 && !strcmp(argv[2], "--generate") && rank == 0) {
        model_gen_opts o = model_gen_demo_opts(32000);
        model_config *c = &o.cfg;
        c->hidden_size = 4096; c->intermediate_size = 11008; c->n_layers = 32; c->n_heads = 32; c->n_kv_heads = 32;
        c->head_dim = 128; c->max_position = 4096;
        o.dtype = "float16";
        o.n_shards = 4;
        o.init_std = 0.02f;
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "float16");
        mkdir(argv[1], 0755);
        double t = now_s();
        if (model_gen_write(argv[1], &o, &err) != LS_OK) { fprintf(stderr, "%s\n", err.msg); MPI_Abort(MPI_COMM_WORLD, 1); }
        fprintf(stderr, "generated %s in %.1f s\n", argv[1], now_s() - t);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    model_weights w;
    cuda_forward f;
    if (model_weights_load(&w, argv[1], rank, T, &err) != LS_OK ||
        cuda_forward_init(&f, &w, MPI_COMM_WORLD, 120.0, &err) != LS_OK) {
        fprintf(stderr, "r%d: %s\n", rank, err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int page_tokens = 16, ctx = 512, max_tokens = 4096;
    int n_pages = 256 * (ctx / page_tokens + 1) + max_tokens / page_tokens + 8;
    if (cuda_forward_start(&f, n_pages, page_tokens, max_tokens, &err) != LS_OK) {
        fprintf(stderr, "r%d: %s\n", rank, err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    double bw = copy_ceiling(), rate = gemm_ceiling();
    const model_config *c = &w.cfg;
    double params = (double)f.dw.bytes / f.esz;         // this rank's weights, elements
    double kv_per_token = (double)c->n_layers * 2 * w.n_kv_heads_local * c->head_dim * f.esz;
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    plan p;
    plan_init(&p);
    int32_t *ids = ls_xcalloc(4096, sizeof *ids);
    if (rank == 0) {
        time_t now = time(NULL);
        char date[32];
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        printf("{\n  \"command\": \"mpirun -np %d decode_bench %s\",\n  \"device\": \"%d x %s\",\n  \"date\": \"%s\",\n",
               T, argv[1], T, prop.name, date);
        printf("  \"model\": \"Llama-2-7B shape, random fp16 weights, %s storage\",\n", f.dt == DEV_F16 ? "fp16" : "bf16");
        printf("  \"copy_ceiling_GBps\": %.0f,\n  \"gemm_ceiling_TFLOPs\": %.1f,\n  \"decode\": [\n", bw / 1e9, rate / 1e12);
    }
    static const int batches[] = { 1, 8, 32, 64, 128, 256 };
    for (int i = 0; i < 6; i++) {
        int B = batches[i];
        make_plan(&p, B, ctx - 1, 1, page_tokens);
        double t = time_steps(&f, &p, 20, ids);
        double bytes = params * f.esz + B * ctx * kv_per_token, flops = 2.0 * params * B;
        double floor = bytes / bw > flops / rate ? bytes / bw : flops / rate;
        if (rank == 0)
            printf("    {\"batch\": %d, \"adapters\": 0, \"context\": %d, \"step_ms\": %.3f, \"floor_ms\": %.3f, "
                   "\"fraction_of_floor\": %.3f}%s\n", B, ctx, t * 1e3, floor * 1e3, floor / t, i < 5 ? "," : "");
    }
    make_plan(&p, 1, 0, 4096, page_tokens);
    double t = time_steps(&f, &p, 5, ids);
    double flops = 2.0 * params * 4096 + 4.0 * c->n_layers * w.n_heads_local * c->head_dim * 4096.0 * 4096.0 / 2;
    if (rank == 0)
        printf("  ],\n  \"prefill_4096\": {\"step_ms\": %.2f, \"tokens_per_s\": %.0f, \"TFLOPs\": %.1f, "
               "\"fraction_of_gemm_ceiling\": %.3f}\n}\n", t * 1e3, 4096 / t, flops / t / 1e12, flops / t / rate);
    free(ids);
    plan_free(&p);
    cuda_forward_free(&f);
    model_weights_free(&w);
    MPI_Finalize();
    return 0;
}
