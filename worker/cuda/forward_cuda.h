/* The forward pass of the CUDA backend over a step plan: the same math as worker/forward.c (the CPU
 * twin and oracle), with the weights in device memory (device_weights.h), one cuBLAS GEMM per fused
 * projection (fp32 accumulation), our kernels for norms, RoPE, the paged KV cache, attention and
 * sampling, and NCCL for the tensor-parallel sums. The KV pool is one device allocation sized from the
 * free memory left after start-up (capped by --kv-cache-mb), allocated once: nothing is allocated on
 * the request path. LoRA adapters share that pool (lora_cuda.h): their rows are copied into pool pages
 * on a copy stream and applied, unmerged, right after each fused projection GEMM. Every wait is
 * bounded (nccl_comm_wait): a dead peer fails the step with UNAVAILABLE. Decode steps (one token per
 * sequence) are replayed as CUDA graphs (decode_graph.h); attention is planned once per step. */
#ifndef LORASERVE_WORKER_CUDA_FORWARD_CUDA_H
#define LORASERVE_WORKER_CUDA_FORWARD_CUDA_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <mpi.h>

#include "common/plan.h"
#include "common/status.h"
#include "worker/adapter_store.h"
#include "worker/cuda/decode_graph.h"
#include "worker/cuda/device_weights.h"
#include "worker/cuda/lora_cuda.h"
#include "worker/cuda/nccl_comm.h"
#include "worker/weights.h"

typedef struct cuda_forward {
    const model_weights *w;     // host shard: shapes (and the source of dw)
    dev_weights dw;
    dev_dtype dt;
    size_t esz;                 // bytes per stored element
    cudaStream_t stream;
    cublasHandle_t blas;
    nccl_comm nc;
    int vocab_stride;           // the largest vocab_local of the group (all-gather blocks are this wide)
    int *vocab_counts, *vocab_starts;   // per TP rank
    void *pool;                 // n_pages * page_elems elements of the storage type
    size_t page_elems, layer_stride, kv_stride;
    int n_pages, page_tokens, max_tokens;
    // device scratch, max_tokens rows each
    void *x, *xn, *qkv, *q, *k, *v, *att, *proj, *gu, *act, *sel;
    float *logits_local, *logits_all, *logits;  // (rows, vocab_stride), (T, rows, vocab_stride), (rows, V)
    float *inv_freq;
    void *attn_scratch, *sample_scratch;
    size_t attn_scratch_bytes, sample_scratch_bytes;
    int32_t *d_idx, *h_idx;     // the step's index arrays: device copy and pinned host staging
    size_t idx_cap;             // int32 slots in each
    int32_t *d_ids, *h_ids;     // sampled ids
    void *d_params, *h_params;  // sampling parameters (sample_params layout)
    cuda_lora lora;             // adapters (off until cuda_forward_lora_start)
    decode_graphs graphs;       // decode steps replayed as CUDA graphs (graphs.enabled may be cleared)
    void *blas_ws;              // cuBLAS workspace: fixed, so captured GEMMs never allocate
} cuda_forward;

/* Picks the device for this worker (local rank among the node's workers), uploads the weights, creates
 * the stream, cuBLAS and NCCL over `workers`. */
ls_status cuda_forward_init(cuda_forward *f, const model_weights *w, MPI_Comm workers, double timeout_s,
                            ls_error *err);
/* Pages of page_tokens tokens that fit in the free device memory (leaving scratch for max_tokens rows),
 * at most cap_bytes worth. */
int cuda_forward_pool_capacity(cuda_forward *f, int page_tokens, int max_tokens, size_t cap_bytes);
ls_status cuda_forward_start(cuda_forward *f, int n_pages, int page_tokens, int max_tokens, ls_error *err);
/* After cuda_forward_start: serves the adapters of `store` (the worker's host store, whose page floats
 * must be this pool's page elements) with a pinned hot set of hot_bytes. Without it a plan that uses
 * adapters fails with FAILED_PRECONDITION. */
ls_status cuda_forward_lora_start(cuda_forward *f, const adapter_store *store, size_t hot_bytes, ls_error *err);
/* Runs the plan (its adapter copies first; a plan with no sequences only copies); on TP rank 0 the
 * sampled ids of the sequences with sample = 1 land in ids (and, when logits is not NULL, their rows of
 * logits). */
ls_status cuda_forward_step(cuda_forward *f, const plan *p, int32_t *ids, float *logits, ls_error *err);
void cuda_forward_free(cuda_forward *f);

#endif
