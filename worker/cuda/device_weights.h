/* The base model's shard in device memory for the CUDA backend: ONE allocation carved by a table, 16-bit
 * storage (bf16, or fp16 for float16 models), with q/k/v fused into one [(hq + 2 hk) * hd, H] matrix
 * and gate/up into one [2 I, H] matrix so that each is a single cuBLAS GEMM. Norm weights use the same
 * storage type; the kernels accumulate in fp32. */
#ifndef LORASERVE_WORKER_CUDA_DEVICE_WEIGHTS_H
#define LORASERVE_WORKER_CUDA_DEVICE_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "worker/weights.h"

typedef enum dev_dtype { DEV_BF16 = 0, DEV_F16 = 1, DEV_F32 = 2 } dev_dtype;

static inline size_t dev_dtype_size(dev_dtype t) { return t == DEV_F32 ? 4 : 2; }

typedef struct dev_layer {
    void *attn_norm;        // (H)
    void *w_qkv;            // ((hq + 2 hk) * hd, H): q rows, then k, then v
    void *wo;               // (H, hq * hd)
    void *mlp_norm;         // (H)
    void *w_gate_up;        // (2 I, H): gate rows, then up
    void *w_down;           // (H, I)
} dev_layer;

typedef struct dev_weights {
    dev_dtype dtype;
    void *arena;                // the one device allocation
    size_t bytes;
    void *embed;            // (V, H)
    void *final_norm;       // (H)
    void *lm_head;          // (vocab_local, H)
    dev_layer *layers;          // host array of n_layers
    int n_layers;
} dev_weights;

/* The storage type for a model: fp16 models stay fp16, everything else becomes bf16; the environment
 * variable LORASERVE_CUDA_DTYPE (f32, bf16, f16) overrides it. */
dev_dtype dev_weights_dtype_for(const model_config *c);
/* Rounds w (this rank's fp32 shard) to dtype and copies it into one new device allocation. */
ls_status dev_weights_upload(dev_weights *d, const model_weights *w, dev_dtype dtype, ls_error *err);
void dev_weights_free(dev_weights *d);

#endif
