/* CUDA backend step times against the step's floor, for a Llama-2-7B-shaped model with random fp16
 * weights (generated once into a directory by the project's model generator): decode steps at batch 1..256
 * with every sequence at context 512, with 0, 1 and 64 distinct LoRA adapters (ranks 8/16/32/64 in turn,
 * all 7 modules, served from the device pool as in serving), and a 4096-token prefill. The floor of a
 * step is the larger of (bytes it must read: weights + KV + the rows of the adapters it uses) / measured
 * copy bandwidth and (its FLOPs) / measured GEMM rate, both ceilings measured in this run (a large
 * device-to-device copy; a large cuBLAS bf16 GEMM). Decode steps replay CUDA graphs as in serving; the
 * eager time (graphs off) is printed beside. Prints one JSON object with the command, device and date.
 * Run under mpirun with one rank per GPU (TP = ranks). --generate writes the model to MODEL_DIR and four
 * adapters (one per rank) to MODEL_DIR-adapters first; the 64 adapters are 16 pool copies of each.
 * usage: mpirun -np T decode_bench MODEL_DIR [--generate] */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench/copy_ceiling.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/model_gen.h"
#include "common/peft_gen.h"
#include "kernels/cuda/cuda_ops.h"
#include "worker/adapter_store.h"
#include "worker/cuda/forward_cuda.h"

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
    double t = clock_now_s();
    for (int i = 0; i < 10; i++)
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cudaDeviceSynchronize();
    double rate = 2.0 * n * n * (double)n * 10 / (clock_now_s() - t);
    cublasDestroy(h);
    cudaFree(a); cudaFree(b); cudaFree(c);
    return rate;
}

#define N_ADAPTERS 64
static const int ranks[4] = { 8, 16, 32, 64 };

/* The adapters of the run: slot i holds the rank ranks[i % 4] adapter, on its own pool pages. */
typedef struct bench_adapters {
    adapter_store store;
    int32_t *pages[N_ADAPTERS];
    int n_pages[N_ADAPTERS];
    double bytes[N_ADAPTERS];   // this rank's rows of slot i, bytes of the storage type
    double params[N_ADAPTERS];  // elements (for FLOPs)
} bench_adapters;

/* B sequences, each n_tokens at start_pos, greedy; pages laid out consecutively; sequence s uses adapter
 * s % n_adapters (none when n_adapters is 0), each listed once in the adapter table. */
static void make_plan(plan *p, int B, int start_pos, int n_tokens, int page_tokens, const bench_adapters *ad,
                      int n_adapters)
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
        q->adapter = n_adapters ? s % n_adapters : -1;
        p->h.n_sample++;
    }
    for (int a = 0; a < n_adapters && a < B; a++) plan_add_adapter(p, a, ad->pages[a], ad->n_pages[a], 0);
}

static void generate(const char *dir, model_gen_opts *o)
{
    model_config *c = &o->cfg;
    ls_error err = { 0 };
    mkdir(dir, 0755);
    double t = clock_now_s();
    if (model_gen_write(dir, o, &err) != LS_OK) { fprintf(stderr, "%s\n", err.msg); MPI_Abort(MPI_COMM_WORLD, 1); }
    for (int i = 0; i < 4; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s-adapters/r%d", dir, ranks[i]);
        peft_gen_opts a = peft_gen_default_opts();
        a.r = ranks[i];
        a.lora_alpha = 2.0 * ranks[i];
        a.dtype = "float16";
        a.seed = 100 + (uint64_t)i;
        a.init_std = 0.01f;
        if (peft_gen_write(path, c, &a, &err) != LS_OK) {
            fprintf(stderr, "%s: %s\n", path, err.msg);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    fprintf(stderr, "generated %s and its adapters in %.1f s\n", dir, clock_now_s() - t);
}

/* Registers the 64 slots and copies each into its pages (one copies-only step); pages from first_page. */
static void load_adapters(bench_adapters *ad, cuda_forward *f, const model_weights *w, const char *dir,
                          int page_tokens, int first_page)
{
    const model_config *c = &w->cfg;
    ls_error err = { 0 };
    adapter_store_init(&ad->store, c, w->tp_rank, w->tp_size, lora_page_floats(c, w->tp_size, page_tokens),
                       (size_t)4 << 30);
    plan p;
    plan_init(&p);
    plan_reset(&p, PLAN_STEP, 0);
    int next = first_page;
    for (int i = 0; i < N_ADAPTERS; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s-adapters/r%d", dir, ranks[i % 4]);
        if (adapter_store_register(&ad->store, i, path, "bench", 1, &err) != LS_OK) {
            fprintf(stderr, "%s: %s\n", path, err.msg);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        const lora_shape *sh = &ad->store.slots[i]->peft.shape;
        ad->n_pages[i] = lora_layout_pages(c, sh, w->tp_size, ad->store.page_floats);
        ad->pages[i] = ls_xcalloc((size_t)ad->n_pages[i], sizeof(int32_t));
        for (int k = 0; k < ad->n_pages[i]; k++) ad->pages[i][k] = next++;
        for (int slot = 0; slot < c->n_layers * LORA_N_MODULES; slot++) {
            if (!sh->rank[slot]) continue;
            lora_module_dims d = lora_module_shard(c, (lora_module)(slot % LORA_N_MODULES), sh->rank[slot],
                                                   w->tp_rank, w->tp_size);
            ad->params[i] += (double)d.a_rows * d.in_local + (double)sh->rank[slot] * d.out_local;
        }
        ad->bytes[i] = ad->params[i] * f->esz;
        plan_add_adapter(&p, i, ad->pages[i], ad->n_pages[i], 1);
    }
    if (cuda_forward_lora_start(f, &ad->store, (size_t)4 << 30, &err) != LS_OK ||
        cuda_forward_step(f, &p, NULL, NULL, &err) != LS_OK) {
        fprintf(stderr, "adapters: %s\n", err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    plan_free(&p);
}

/* Seconds per call of fn(ctx), from CUDA events over reps calls after 3 warm-up calls. */
static double time_kernel(void (*fn)(void *), void *ctx, cudaStream_t s, int reps)
{
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int i = 0; i < 3; i++) fn(ctx);
    cudaEventRecord(a, s);
    for (int i = 0; i < reps; i++) fn(ctx);
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / 1e3 / reps;
}

/* One kernel of a decode step at batch B, on the buffers and device index arrays of the last step run
 * (make_plan's layout, so the arrays sit where pack_indices put them). */
typedef struct kernel_ctx {
    cuda_forward *f;
    int B, ctx, which;          // 0 attention, 1 qkv GEMM, 2 down GEMM, 3 add+RMSNorm
} kernel_ctx;

static void run_kernel(void *p)
{
    kernel_ctx *k = p;
    cuda_forward *f = k->f;
    const model_config *c = &f->w->cfg;
    int B = k->B, H = c->hidden_size, hd = c->head_dim, hq = f->w->n_heads_local, hk = f->w->n_kv_heads_local;
    int32_t *d = f->d_idx;       // tokens, pos, page, slot (B each), then start, n, tok, page_off, pages
    const float one = 1.0f, zero = 0.0f;
    if (k->which == 0)
        cuda_paged_attention_f16(f->att, f->attn_scratch, f->attn_scratch_bytes, f->q, f->pool, f->page_elems,
                                 f->layer_stride, f->kv_stride, f->page_tokens, hk, hd, 0, d + 4 * B + 4 * B, d + 4 * B,
                                 d + 5 * B, d + 6 * B, d + 7 * B, B, B, hq, 0, 0.088f, 1, f->stream);   // step plan
    else if (k->which == 1)
        cublasGemmEx(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, (hq + 2 * hk) * hd, B, H, &one, f->dw.layers[0].w_qkv,
                     CUDA_R_16F, H, f->xn, CUDA_R_16F, H, &zero, f->qkv, CUDA_R_16F, (hq + 2 * hk) * hd,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    else if (k->which == 2)
        cublasGemmEx(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, H, B, f->w->inter_local, &one, f->dw.layers[0].w_down,
                     CUDA_R_16F, f->w->inter_local, f->act, CUDA_R_16F, f->w->inter_local, &zero, f->proj, CUDA_R_16F,
                     H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    else
        cuda_add_rmsnorm_f16(f->x, f->xn, f->proj, f->dw.layers[0].attn_norm, B, H, c->rms_eps, f->stream);
}

/* Achieved bandwidth of the step's main kernels at batch B (fp16 storage), as JSON lines. */
static void kernel_rates(cuda_forward *f, int B, int ctx, double bw, int last)
{
    const model_config *c = &f->w->cfg;
    double H = c->hidden_size, kvw = (double)f->w->n_kv_heads_local * c->head_dim, I = f->w->inter_local;
    double qkv = ((double)f->w->n_heads_local * c->head_dim + 2 * kvw);
    static const char *names[] = { "paged_attention_decode", "gemm_qkv", "gemm_down", "add_rmsnorm" };
    double bytes[] = { B * (double)ctx * 2 * kvw * 2 + 4.0 * B * qkv, (H * qkv + B * (H + qkv)) * 2,
                       (H * I + B * (H + I)) * 2, 5.0 * B * H * 2 };
    for (int which = 0; which < 4; which++) {
        kernel_ctx k = { f, B, ctx, which };
        double t = time_kernel(run_kernel, &k, f->stream, 50);
        printf("    {\"kernel\": \"%s\", \"batch\": %d, \"us\": %.1f, \"GBps\": %.0f, \"fraction_of_copy\": %.3f}%s\n",
               names[which], B, t * 1e6, bytes[which] / t / 1e9, bytes[which] / t / bw, last && which == 3 ? "" : ",");
    }
}

static double time_steps(cuda_forward *f, const plan *p, int reps, int32_t *ids)
{
    ls_error err = { 0 };
    for (int i = 0; i < 3; i++) cuda_forward_step(f, p, ids, NULL, &err);
    double t = clock_now_s();
    for (int i = 0; i < reps; i++) cuda_forward_step(f, p, ids, NULL, &err);
    return (clock_now_s() - t) / reps;
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
        o.tiled = 1;
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "float16");
        generate(argv[1], &o);
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
    int kv_pages = 256 * (ctx / page_tokens + 1) + max_tokens / page_tokens + 8;
    int n_pages = kv_pages + N_ADAPTERS * 40;   // rank 64 on all 7 modules spans 39 pages
    if (cuda_forward_start(&f, n_pages, page_tokens, max_tokens, &err) != LS_OK) {
        fprintf(stderr, "r%d: %s\n", rank, err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    bench_adapters ad;
    memset(&ad, 0, sizeof ad);
    load_adapters(&ad, &f, &w, argv[1], page_tokens, kv_pages);
    double bw = bench_copy_ceiling(), rate = gemm_ceiling();
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
    static const int batches[] = { 1, 8, 32, 64, 128, 256 }, n_ads[] = { 0, 1, N_ADAPTERS };
    double base64 = 0, lora64 = 0;
    for (int j = 0; j < 3; j++)
        for (int i = 0; i < 6; i++) {
            int B = batches[i], A = n_ads[j], distinct = A < B ? A : B;
            make_plan(&p, B, ctx - 1, 1, page_tokens, &ad, A);
            f.graphs.enabled = 1;
            double t = time_steps(&f, &p, 20, ids);
            f.graphs.enabled = 0;
            double eager = time_steps(&f, &p, 10, ids);
            double ad_bytes = 0, ad_flops = 0;
            for (int a = 0; a < distinct; a++) ad_bytes += ad.bytes[a];
            for (int s = 0; s < B && A; s++) ad_flops += 2.0 * ad.params[s % A];
            double bytes = params * f.esz + B * ctx * kv_per_token + ad_bytes, flops = 2.0 * params * B + ad_flops;
            double floor = bytes / bw > flops / rate ? bytes / bw : flops / rate;
            if (B == 64 && A == 0) base64 = t;
            if (B == 64 && A == N_ADAPTERS) lora64 = t;
            if (rank == 0)
                printf("    {\"batch\": %d, \"adapters\": %d, \"context\": %d, \"step_ms\": %.3f, \"eager_step_ms\": %.3f, "
                       "\"floor_ms\": %.3f, \"fraction_of_floor\": %.3f}%s\n", B, A, ctx, t * 1e3, eager * 1e3,
                       floor * 1e3, floor / t, i < 5 || j < 2 ? "," : "");
        }
    f.graphs.enabled = 1;
    if (rank == 0)
        printf("  ],\n  \"adapter_ranks\": \"8, 16, 32, 64 in turn, all 7 modules\",\n"
               "  \"lora_overhead_batch64_64_adapters\": %.3f,\n  \"graph_captures\": %llu,\n",
               lora64 / base64 - 1.0, (unsigned long long)f.graphs.captures);
    if (rank == 0 && T == 1 && f.dt == DEV_F16) {     // the arrays of the last plan run are on the device
        printf("  \"kernels\": [\n");
        static const int kb[] = { 1, 64, 256 };
        for (int i = 0; i < 3; i++) {
            make_plan(&p, kb[i], ctx - 1, 1, page_tokens, &ad, 0);
            time_steps(&f, &p, 1, ids);
            kernel_rates(&f, kb[i], ctx, bw, i == 2);
        }
        printf("  ],\n");
    }
    make_plan(&p, 1, 0, 4096, page_tokens, &ad, 0);
    double t = time_steps(&f, &p, 5, ids);
    double flops = 2.0 * params * 4096 + 4.0 * c->n_layers * w.n_heads_local * c->head_dim * 4096.0 * 4096.0 / 2;
    if (rank == 0)
        printf("  \"prefill_4096\": {\"step_ms\": %.2f, \"tokens_per_s\": %.0f, \"TFLOPs\": %.1f, "
               "\"fraction_of_gemm_ceiling\": %.3f}\n}\n", t * 1e3, 4096 / t, flops / t / 1e12, flops / t / rate);
    free(ids);
    plan_free(&p);
    cuda_forward_free(&f);
    adapter_store_free(&ad.store);
    for (int i = 0; i < N_ADAPTERS; i++) free(ad.pages[i]);
    model_weights_free(&w);
    MPI_Finalize();
    return 0;
}
