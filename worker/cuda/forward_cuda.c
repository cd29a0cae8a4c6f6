/* CUDA forward pass over a step plan (see forward_cuda.h); the LoRA parts live in lora_cuda.c. */
#include "worker/cuda/forward_cuda.h"

#include <math.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/fused_ops.h"
#include "kernels/ops.h"

/* Device and library failures here are faults of the device, not of a request: fatal, with the call. */
#define CU_CHECK(call) \
    do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
        log_write(LOG_ERROR, __FILE__, __LINE__, "%s: %s", #call, cudaGetErrorString(e_)); abort(); } } while (0)
#define BLAS_CHECK(call) \
    do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) { \
        log_write(LOG_ERROR, __FILE__, __LINE__, "%s: cuBLAS status %d", #call, (int)s_); abort(); } } while (0)
/* The kernel of the storage type: every buffer is a void *, which C converts to float * or uint16_t *. */
#define KERNEL(fn, dt, ...) \
    do { if ((dt) == DEV_F32) fn##_f32(__VA_ARGS__); else if ((dt) == DEV_BF16) fn##_bf16(__VA_ARGS__); \
         else fn##_f16(__VA_ARGS__); } while (0)

/* cuBLAS's own workspace, given up front: a GEMM captured in a graph must not allocate. */
#define BLAS_WORKSPACE_BYTES ((size_t)32 << 20)
/* Decode-step graphs kept (each batch size and LoRA mix is one). */
#define GRAPH_CACHE 64

static cudaDataType_t blas_type(dev_dtype t)
{
    return t == DEV_F32 ? CUDA_R_32F : t == DEV_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

static ncclDataType_t nccl_type(dev_dtype t)
{
    return t == DEV_F32 ? ncclFloat32 : t == DEV_BF16 ? ncclBfloat16 : ncclFloat16;
}

/* y[n, ldy] (first `out` columns) = x[n, in] @ w[out, in]^T; y in y_type; fp32 accumulation. */
static void gemm(cuda_forward *f, void *y, cudaDataType_t y_type, int ldy, const void *x, const void *w, int n, int in,
                 int out)
{
    const float one = 1.0f, zero = 0.0f;
    cudaDataType_t t = blas_type(f->dt);
    BLAS_CHECK(cublasGemmEx(f->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, t, in, x, t, in, &zero, y, y_type,
                            ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* The device of this worker: its rank among the workers of its node. */
static int pick_device(MPI_Comm workers, ls_error *err)
{
    MPI_Comm node;
    int local, count = 0;
    MPI_CHECK(MPI_Comm_split_type(workers, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &local));
    MPI_CHECK(MPI_Comm_free(&node));
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        ls_fail(err, LS_FAILED_PRECONDITION, "no CUDA device: %s", cudaGetErrorString(e));
        return -1;
    }
    if (local >= count) {
        ls_fail(err, LS_FAILED_PRECONDITION, "worker %d of this node has no GPU of its own (%d visible)", local, count);
        return -1;
    }
    CU_CHECK(cudaSetDevice(local));
    return local;
}

ls_status cuda_forward_init(cuda_forward *f, const model_weights *w, MPI_Comm workers, double timeout_s,
                            ls_error *err)
{
    memset(f, 0, sizeof *f);
    f->w = w;
    if (pick_device(workers, err) < 0) return err->code;
    f->dt = dev_weights_dtype_for(&w->cfg);
    f->esz = dev_dtype_size(f->dt);
    ls_status st = dev_weights_upload(&f->dw, w, f->dt, err);
    if (st != LS_OK) return st;
    CU_CHECK(cudaStreamCreateWithFlags(&f->stream, cudaStreamNonBlocking));
    BLAS_CHECK(cublasCreate(&f->blas));
    BLAS_CHECK(cublasSetStream(f->blas, f->stream));
    CU_CHECK(cudaMalloc(&f->blas_ws, BLAS_WORKSPACE_BYTES));
    BLAS_CHECK(cublasSetWorkspace(f->blas, f->blas_ws, BLAS_WORKSPACE_BYTES));
    if ((st = nccl_comm_init(&f->nc, workers, f->stream, timeout_s, err)) != LS_OK) return st;
    int T = f->nc.size;
    f->vocab_counts = ls_xcalloc((size_t)T, sizeof(int));
    f->vocab_starts = ls_xcalloc((size_t)T, sizeof(int));
    MPI_CHECK(MPI_Allgather(&w->vocab_local, 1, MPI_INT, f->vocab_counts, 1, MPI_INT, workers));
    MPI_CHECK(MPI_Allgather(&w->vocab_start, 1, MPI_INT, f->vocab_starts, 1, MPI_INT, workers));
    for (int r = 0; r < T; r++)
        if (f->vocab_counts[r] > f->vocab_stride) f->vocab_stride = f->vocab_counts[r];
    return LS_OK;
}

/* Device bytes of the step scratch for max_tokens rows. */
static size_t scratch_bytes(const cuda_forward *f, int max_tokens, size_t *attn, size_t *sample)
{
    const model_weights *w = f->w;
    const model_config *c = &w->cfg;
    size_t rows = (size_t)max_tokens, H = (size_t)c->hidden_size, hd = (size_t)c->head_dim;
    size_t q = (size_t)w->n_heads_local * hd, kv = (size_t)w->n_kv_heads_local * hd, I = (size_t)w->inter_local;
    *attn = cuda_paged_attention_scratch_bytes(max_tokens, max_tokens, w->n_heads_local, w->n_kv_heads_local, c->head_dim);
    *sample = cuda_sample_scratch_bytes(max_tokens, c->vocab_size);
    size_t elems = rows * (4 * H + (q + 2 * kv) + q + 2 * kv + q + 2 * I + I);
    size_t floats = rows * ((size_t)f->vocab_stride * (1 + (size_t)f->nc.size) + (size_t)c->vocab_size);
    return elems * f->esz + floats * sizeof(float) + *attn + *sample;
}

int cuda_forward_pool_capacity(cuda_forward *f, int page_tokens, int max_tokens, size_t cap_bytes)
{
    const model_config *c = &f->w->cfg;
    size_t elems = (size_t)page_tokens * c->n_layers * 2 * f->w->n_kv_heads_local * c->head_dim;
    size_t lora_fixed, lora_page;   // what cuda_forward_lora_start will take, so the pool leaves it free
    cuda_lora_device_bytes(c, f->w->tp_rank, f->w->tp_size, elems, max_tokens, &lora_fixed, &lora_page);
    size_t page = elems * f->esz + lora_page;
    size_t free_b = 0, total = 0, attn, sample;
    CU_CHECK(cudaMemGetInfo(&free_b, &total));
    size_t keep = scratch_bytes(f, max_tokens, &attn, &sample) + lora_fixed + total / 20;   // + 5% for libraries
    size_t avail = free_b > keep ? free_b - keep : 0;
    if (avail > cap_bytes) avail = cap_bytes;
    size_t n = avail / page;
    return n > (size_t)1 << 30 ? 1 << 30 : (int)n;
}

static void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    CU_CHECK(cudaMalloc(&p, bytes ? bytes : 16));
    return p;
}

ls_status cuda_forward_start(cuda_forward *f, int n_pages, int page_tokens, int max_tokens, ls_error *err)
{
    const model_weights *w = f->w;
    const model_config *c = &w->cfg;
    size_t kv = (size_t)w->n_kv_heads_local * c->head_dim;
    f->n_pages = n_pages;
    f->page_tokens = page_tokens;
    f->max_tokens = max_tokens;
    f->kv_stride = (size_t)page_tokens * kv;
    f->layer_stride = 2 * f->kv_stride;
    f->page_elems = f->layer_stride * (size_t)c->n_layers;
    cudaError_t e = cudaMalloc(&f->pool, (size_t)n_pages * f->page_elems * f->esz);
    if (e != cudaSuccess)
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "cannot allocate the page pool (%d pages): %s", n_pages,
                       cudaGetErrorString(e));
    CU_CHECK(cudaMemset(f->pool, 0, (size_t)n_pages * f->page_elems * f->esz));
    size_t rows = (size_t)max_tokens, H = (size_t)c->hidden_size, hd = (size_t)c->head_dim;
    size_t q = (size_t)w->n_heads_local * hd, I = (size_t)w->inter_local, E = f->esz;
    f->x = dev_alloc(rows * H * E);
    f->xn = dev_alloc(rows * H * E);
    f->proj = dev_alloc(rows * H * E);
    f->sel = dev_alloc(rows * H * E);
    f->qkv = dev_alloc(rows * (q + 2 * kv) * E);
    f->q = dev_alloc(rows * q * E);
    f->k = dev_alloc(rows * kv * E);
    f->v = dev_alloc(rows * kv * E);
    f->att = dev_alloc(rows * q * E);
    f->gu = dev_alloc(rows * 2 * I * E);
    f->act = dev_alloc(rows * I * E);
    f->logits_local = dev_alloc(rows * f->vocab_stride * sizeof(float));
    f->logits_all = dev_alloc(rows * f->vocab_stride * f->nc.size * sizeof(float));
    f->logits = dev_alloc(rows * c->vocab_size * sizeof(float));
    scratch_bytes(f, max_tokens, &f->attn_scratch_bytes, &f->sample_scratch_bytes);
    f->attn_scratch = dev_alloc(f->attn_scratch_bytes);
    f->sample_scratch = dev_alloc(f->sample_scratch_bytes);
    float *inv = ls_xmalloc(hd / 2 * sizeof *inv);
    op_rope_inv_freq(inv, c->head_dim, c->rope_theta, c->rope_scaling, c->rope_factor, c->rope_low_freq_factor,
                     c->rope_high_freq_factor, c->rope_original_max_position);
    f->inv_freq = dev_alloc(hd / 2 * sizeof(float));
    CU_CHECK(cudaMemcpy(f->inv_freq, inv, hd / 2 * sizeof(float), cudaMemcpyHostToDevice));
    free(inv);
    // tokens, pos, page, slot (4 per token), 4 per sequence, the page tables, the sampled rows
    f->idx_cap = rows * 9 + rows * ((size_t)c->max_position / page_tokens + 2);
    CU_CHECK(cudaMallocHost((void **)&f->h_idx, f->idx_cap * sizeof(int32_t)));
    f->d_idx = dev_alloc(f->idx_cap * sizeof(int32_t));
    CU_CHECK(cudaMallocHost((void **)&f->h_ids, rows * sizeof(int32_t)));
    f->d_ids = dev_alloc(rows * sizeof(int32_t));
    CU_CHECK(cudaMallocHost(&f->h_params, rows * sizeof(sample_params)));
    f->d_params = dev_alloc(rows * sizeof(sample_params));
    decode_graphs_init(&f->graphs, GRAPH_CACHE, 1);
    return LS_OK;
}

ls_status cuda_forward_lora_start(cuda_forward *f, const adapter_store *store, size_t hot_bytes, ls_error *err)
{
    return cuda_lora_start(&f->lora, store, &f->w->cfg, f->w->tp_rank, f->w->tp_size, f->dt, f->pool, f->page_elems,
                           f->n_pages, f->max_tokens, f->stream, &f->nc, hot_bytes, err);
}

/* The step's index arrays, packed in one pinned buffer and sent with one copy. */
typedef struct step_idx {
    int32_t *tokens, *pos, *page, *slot, *seq_start, *seq_n, *seq_tok, *seq_page, *pages, *sel;
} step_idx;

static step_idx pack_indices(cuda_forward *f, const plan *p, int32_t *base)
{
    int n = p->h.n_tokens, S = p->h.n_seqs;
    step_idx x;
    int32_t *o = base;
    x.tokens = o; o += n;
    x.pos = o; o += n;
    x.page = o; o += n;
    x.slot = o; o += n;
    x.seq_start = o; o += S;
    x.seq_n = o; o += S;
    x.seq_tok = o; o += S;
    x.seq_page = o; o += S;
    x.pages = o; o += p->h.n_pages;
    x.sel = o; o += p->h.n_sample;
    LS_ASSERT((size_t)(o - base) <= f->idx_cap);
    memcpy(x.tokens, p->tokens, (size_t)n * sizeof *x.tokens);
    memcpy(x.pages, p->pages, (size_t)p->h.n_pages * sizeof *x.pages);
    for (int s = 0, k = 0; s < S; s++) {
        const plan_seq *q = &p->seqs[s];
        x.seq_start[s] = q->start_pos;
        x.seq_n[s] = q->n_tokens;
        x.seq_tok[s] = q->tok_off;
        x.seq_page[s] = q->page_off;
        for (int i = 0; i < q->n_tokens; i++) {
            int pos = q->start_pos + i, t = q->tok_off + i;
            x.pos[t] = pos;
            x.page[t] = p->pages[q->page_off + pos / f->page_tokens];
            x.slot[t] = pos % f->page_tokens;
        }
        if (q->sample) {
            x.sel[k] = q->tok_off + q->n_tokens - 1;
            ((sample_params *)f->h_params)[k] = (sample_params){ .temperature = q->temperature, .top_p = q->top_p,
                .top_k = q->top_k, .seed = q->seed, .index = q->sample_index };
            k++;
        }
    }
    return x;
}

/* Moves a host-packed pointer to the same place in the device copy. */
static int32_t *on_device(const cuda_forward *f, const int32_t *h) { return f->d_idx + (h - f->h_idx); }

static void layer(cuda_forward *f, const plan *p, const step_idx *x, int l, ls_error *err)
{
    const model_weights *w = f->w;
    const model_config *c = &w->cfg;
    const dev_layer *L = &f->dw.layers[l];
    int n = p->h.n_tokens, H = c->hidden_size, hd = c->head_dim, I = w->inter_local;
    int hq = w->n_heads_local, hk = w->n_kv_heads_local;
    cudaStream_t s = f->stream;
    KERNEL(cuda_add_rmsnorm, f->dt, f->x, f->xn, f->proj, L->attn_norm, n, H, c->rms_eps, s);
    gemm(f, f->qkv, blas_type(f->dt), (hq + 2 * hk) * hd, f->xn, L->w_qkv, n, H, (hq + 2 * hk) * hd);
    // LoRA adds into the q, k and v column slices of the fused rows, before RoPE rotates q and k.
    static const lora_module qkv[] = { LORA_Q, LORA_K, LORA_V };
    const int qkv_col0[] = { 0, hq * hd, (hq + hk) * hd };
    if (cuda_lora_column(&f->lora, l, qkv, 3, f->xn, n, H, f->qkv, (hq + 2 * hk) * hd, qkv_col0, err) != LS_OK) return;
    KERNEL(cuda_qkv_split_rope, f->dt, f->q, f->k, f->v, f->qkv, on_device(f, x->pos), f->inv_freq, n, hq, hk, hd, s);
    KERNEL(cuda_kv_store, f->dt, f->pool, f->k, f->v, on_device(f, x->page), on_device(f, x->slot), n, l,
           f->page_elems, f->layer_stride, f->kv_stride, f->page_tokens, hk, hd, s);
    KERNEL(cuda_paged_attention, f->dt, f->att, f->attn_scratch, f->attn_scratch_bytes, f->q, f->pool, f->page_elems,
           f->layer_stride, f->kv_stride, f->page_tokens, hk, hd, l, on_device(f, x->pages),
           on_device(f, x->seq_start), on_device(f, x->seq_n), on_device(f, x->seq_tok), on_device(f, x->seq_page),
           p->h.n_seqs, n, hq, c->sliding_window, 1.0f / sqrtf((float)hd), l > 0, s);    // planned at layer 0
    gemm(f, f->proj, blas_type(f->dt), H, f->att, L->wo, n, hq * hd, H);
    // Into this rank's output columns of the partial sum, which the base all-reduce then completes.
    if (cuda_lora_row(&f->lora, l, LORA_O, f->att, n, hq * hd, f->proj, H, err) != LS_OK) return;
    if (nccl_comm_allreduce_sum(&f->nc, f->proj, (size_t)n * H, nccl_type(f->dt), err) != LS_OK) return;
    KERNEL(cuda_add_rmsnorm, f->dt, f->x, f->xn, f->proj, L->mlp_norm, n, H, c->rms_eps, s);
    gemm(f, f->gu, blas_type(f->dt), 2 * I, f->xn, L->w_gate_up, n, H, 2 * I);
    static const lora_module gate_up[] = { LORA_GATE, LORA_UP };
    const int gate_up_col0[] = { 0, I };
    if (cuda_lora_column(&f->lora, l, gate_up, 2, f->xn, n, H, f->gu, 2 * I, gate_up_col0, err) != LS_OK) return;
    KERNEL(cuda_swiglu_fused, f->dt, f->act, f->gu, n, I, s);
    gemm(f, f->proj, blas_type(f->dt), H, f->act, L->w_down, n, I, H);
    if (cuda_lora_row(&f->lora, l, LORA_DOWN, f->act, n, I, f->proj, H, err) != LS_OK) return;
    nccl_comm_allreduce_sum(&f->nc, f->proj, (size_t)n * H, nccl_type(f->dt), err);
}

/* Final norm, lm_head over the sampled rows, the logits gathered on TP rank 0 as (ns, V). */
static float *project_logits(cuda_forward *f, const plan *p, const step_idx *x, ls_error *err)
{
    const model_config *c = &f->w->cfg;
    int ns = p->h.n_sample, H = c->hidden_size, V = c->vocab_size, T = f->nc.size, vs = f->vocab_stride;
    KERNEL(cuda_embedding, f->dt, f->sel, on_device(f, x->sel), f->xn, ns, H, f->stream);   // gather rows
    gemm(f, f->logits_local, CUDA_R_32F, vs, f->sel, f->dw.lm_head, ns, H, f->w->vocab_local);
    if (T == 1) return f->logits_local;         // vocab_stride == V
    if (nccl_comm_allgather(&f->nc, f->logits_local, f->logits_all, (size_t)ns * vs, ncclFloat32, err) != LS_OK ||
        f->nc.rank != 0)
        return NULL;
    for (int k = 0; k < T; k++)
        CU_CHECK(cudaMemcpy2DAsync(f->logits + f->vocab_starts[k], (size_t)V * sizeof(float),
                                   f->logits_all + (size_t)k * ns * vs, (size_t)vs * sizeof(float),
                                   (size_t)f->vocab_counts[k] * sizeof(float), (size_t)ns, cudaMemcpyDeviceToDevice,
                                   f->stream));
    return f->logits;
}

/* Embedding, the layers and the final norm: the part of a step a decode graph holds. */
typedef struct step_body {
    cuda_forward *f;
    const plan *p;
    const step_idx *x;
} step_body;

static void run_body(void *ctx, ls_error *err)
{
    const step_body *b = ctx;
    cuda_forward *f = b->f;
    const model_config *c = &f->w->cfg;
    int n = b->p->h.n_tokens, H = c->hidden_size;
    KERNEL(cuda_embedding, f->dt, f->x, on_device(f, b->x->tokens), f->dw.embed, n, H, f->stream);
    CU_CHECK(cudaMemsetAsync(f->proj, 0, (size_t)n * H * f->esz, f->stream));
    for (int l = 0; l < c->n_layers && !err->code; l++) layer(f, b->p, b->x, l, err);
    KERNEL(cuda_add_rmsnorm, f->dt, f->x, f->xn, f->proj, f->dw.final_norm, n, H, c->rms_eps, f->stream);
}

/* Decode steps (every sequence brings one token) go through a graph of their shape; others run eagerly. */
static ls_status body(cuda_forward *f, const plan *p, const step_idx *x, ls_error *err)
{
    step_body b = { f, p, x };
    int decode = f->graphs.enabled;
    for (int s = 0; s < p->h.n_seqs && decode; s++) decode = p->seqs[s].n_tokens == 1;
    if (!decode) {
        run_body(&b, err);
        return (ls_status)err->code;
    }
    cuda_lora_finish(&f->lora);     // a graph cannot wait on this step's copies: the stream waits before it
    const cuda_lora *L = &f->lora;
    decode_graph_key key = { .n_tokens = p->h.n_tokens, .n_seqs = p->h.n_seqs,
                             .lora_max_rank = L->active ? (L->max_rank > 0 ? L->max_rank : 1) : 0,
                             .lora_slots = L->any, .n_slots = f->w->cfg.n_layers * LORA_N_MODULES };
    return decode_graphs_run(&f->graphs, &key, f->stream, run_body, &b, err);
}

ls_status cuda_forward_step(cuda_forward *f, const plan *p, int32_t *ids, float *logits, ls_error *err)
{
    const model_config *c = &f->w->cfg;
    int n = p->h.n_tokens, ns = p->h.n_sample;
    LS_ASSERT(n <= f->max_tokens);
    // The adapter copies go first, on their own stream, so that they overlap the start of the compute.
    ls_status lst = cuda_lora_prepare(&f->lora, p, err);
    if (lst != LS_OK) return lst;
    if (!p->h.n_seqs) {         // copies only: finish them within the step, as every step does
        cuda_lora_finish(&f->lora);
        return nccl_comm_wait(&f->nc, err);
    }
    step_idx x = pack_indices(f, p, f->h_idx);
    size_t used = (size_t)(x.sel + ns - f->h_idx);
    CU_CHECK(cudaMemcpyAsync(f->d_idx, f->h_idx, used * sizeof(int32_t), cudaMemcpyHostToDevice, f->stream));
    CU_CHECK(cudaMemcpyAsync(f->d_params, f->h_params, (size_t)ns * sizeof(sample_params), cudaMemcpyHostToDevice,
                             f->stream));
    ls_error step_err = { 0 };
    body(f, p, &x, &step_err);
    float *L = ns && !step_err.code ? project_logits(f, p, &x, &step_err) : NULL;
    cuda_lora_finish(&f->lora);     // copies no sequence read still end with the step
    if (L) {
        cuda_sample(f->d_ids, L, ns, c->vocab_size, f->d_params, f->sample_scratch, f->sample_scratch_bytes, f->stream);
        CU_CHECK(cudaMemcpyAsync(f->h_ids, f->d_ids, (size_t)ns * sizeof(int32_t), cudaMemcpyDeviceToHost, f->stream));
        if (logits)
            CU_CHECK(cudaMemcpyAsync(logits, L, (size_t)ns * c->vocab_size * sizeof(float), cudaMemcpyDeviceToHost,
                                     f->stream));
    }
    ls_status st = step_err.code ? (ls_status)step_err.code : nccl_comm_wait(&f->nc, &step_err);
    if (st != LS_OK) {
        *err = step_err;
        return st;
    }
    if (L && ids) memcpy(ids, f->h_ids, (size_t)ns * sizeof *ids);
    return LS_OK;
}

void cuda_forward_free(cuda_forward *f)
{
    cuda_lora_free(&f->lora);
    decode_graphs_free(&f->graphs);
    void *dev[] = { f->blas_ws, f->pool, f->x, f->xn, f->proj, f->sel, f->qkv, f->q, f->k, f->v, f->att, f->gu, f->act,
                    f->logits_local, f->logits_all, f->logits, f->inv_freq, f->attn_scratch, f->sample_scratch,
                    f->d_idx, f->d_ids, f->d_params };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (f->h_idx) cudaFreeHost(f->h_idx);
    if (f->h_ids) cudaFreeHost(f->h_ids);
    if (f->h_params) cudaFreeHost(f->h_params);
    if (f->blas) cublasDestroy(f->blas);
    nccl_comm_free(&f->nc);
    if (f->stream) cudaStreamDestroy(f->stream);
    dev_weights_free(&f->dw);
    free(f->vocab_counts);
    free(f->vocab_starts);
    memset(f, 0, sizeof *f);
}
