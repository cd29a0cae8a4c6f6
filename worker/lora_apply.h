/* Unmerged LoRA inside the forward pass: y += scale * (x A^T) B^T for every token with its own
 * adapter, computed by the batched shrink/expand ops over rows that sit in pool pages. With tensor
 * parallelism it follows S-LoRA's partitioning (common/lora_layout.h): column-split modules shrink to
 * this rank's part of the rank dim, and the parts of q, k and v (or gate and up) are completed in ONE
 * all-reduce before the expand; row-split modules (o, down) shrink over this rank's input slice, the
 * partial (n, r) is all-reduced, and the expand writes this rank's slice of the output columns into the
 * base partial sum, which the base model's own all-reduce then completes. Every rank takes the same
 * branches because they depend only on the plan. */
#ifndef LORASERVE_WORKER_LORA_APPLY_H
#define LORASERVE_WORKER_LORA_APPLY_H

#include "common/lora_layout.h"
#include "common/plan.h"
#include "worker/adapter_store.h"
#include "worker/collective.h"

typedef struct lora_batch {
    int active;                 // some sequence of the step uses an adapter
    int n_segs;
    int32_t *seg_start;         // (max_seqs + 1) token offsets: one segment per sequence
    int32_t *seg_adapter;       // (max_seqs) adapter id or -1
    const lora_rows **seg_rows; // (max_seqs) rows of the (layer, module) being applied
    int stride;                 // v row stride: the widest rank in the step
    float *v;                   // (max_tokens, 3 * PEFT_MAX_RANK) shrink outputs
    int max_tokens, max_seqs;
} lora_batch;

void lora_batch_init(lora_batch *b, int max_tokens, int max_seqs);
void lora_batch_free(lora_batch *b);
void lora_batch_prepare(lora_batch *b, const plan *p, const adapter_store *s);
/* Modules that read the same input x (n, in): q/k/v or gate/up; ys[i] has width widths[i] (local). */
void lora_apply_column(lora_batch *b, const adapter_store *s, collective *col, int layer, const lora_module *mods,
                       int n_mods, const float *x, int n, int in, float *const *ys, const int *widths);
/* A row-split module (o or down): x (n, in_local) is this rank's input slice; y (n, y_width) the base
 * partial sum, full width. */
void lora_apply_row(lora_batch *b, const adapter_store *s, collective *col, int layer, lora_module m,
                    const float *x, int n, int in_local, float *y, int y_width);

#endif
