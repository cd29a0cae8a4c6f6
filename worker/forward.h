/* One forward pass of the base model over a step plan, on the CPU backend: the prefill chunks and decode
 * tokens of every sequence go through each layer together (the weights are read once per step), the
 * attention of each sequence reads its own pages of the paged KV cache, and the rows to sample are
 * projected to logits at the end. Megatron tensor parallelism: each rank holds a slice of the heads and
 * of the MLP (weights.h); the o and down projections produce partial sums completed by an all-reduce.
 *
 * The pool is allocated once at start-up and holds KV pages and adapter pages alike; pages are numbered
 * by the coordinator (plan.h). Adapters of the step must already be placed in the store (worker.c
 * copies them before calling forward_step). */
#ifndef LORASERVE_WORKER_FORWARD_H
#define LORASERVE_WORKER_FORWARD_H

#include "common/plan.h"
#include "common/status.h"
#include "kernels/ops.h"
#include "worker/adapter_store.h"
#include "worker/collective.h"
#include "worker/lora_apply.h"
#include "worker/weights.h"

typedef struct forward {
    const model_weights *w;
    collective *col;
    const adapter_store *store; // LoRA rows of the adapters placed for the step
    lora_batch lb;
    kv_view kv;
    int n_pages;
    int max_tokens;             // per step (the coordinator's token budget)
    float *inv_freq;            // (head_dim / 2)
    // step scratch, sized for max_tokens rows
    float *x, *xn, *q, *k, *v, *att, *proj, *gate, *up;
    int32_t *pos;
    float *att_scratch;         // (max_position)
    float *sel;                 // (max_tokens, H): rows to sample
    float *logits_local;        // (max_tokens, vocab_local)
} forward;

/* Bytes one KV page takes on a rank of a tp_size group. */
size_t forward_page_bytes(const model_config *cfg, int tp_size, int page_tokens);
ls_status forward_init(forward *f, const model_weights *w, collective *col, const adapter_store *store,
                       int n_pages, int page_tokens, int max_tokens, ls_error *err);
void forward_free(forward *f);
/* Runs the plan. On collective rank 0, logits receives (n_sample, vocab) rows in plan order of the
 * sequences with sample = 1; other ranks may pass NULL. */
void forward_step(forward *f, const plan *p, float *logits);

#endif
