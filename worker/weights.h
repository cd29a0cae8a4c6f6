/* The base model's weights as held by one tensor-parallel worker: its Megatron shard, converted to fp32
 * for the CPU backend. Split (T = tp_size, rank t):
 *   q, k, v, gate, up    by output rows  (heads / intermediate columns t*n/T .. (t+1)*n/T)
 *   o, down              by input columns (the partial products are summed by an all-reduce)
 *   embed_tokens         replicated: a lookup costs no communication, and its memory (V x H) is small
 *                        next to the layers
 *   lm_head              by vocabulary rows (V/T each, the last shard takes the remainder); the logits
 *                        are gathered on the sampling rank
 *   norms                replicated.
 * Loading reads model.safetensors or the shards named by model.safetensors.index.json through mmap, and
 * checks every tensor's presence, dtype (F32/F16/BF16) and shape against config.json before serving. */
#ifndef LORASERVE_WORKER_WEIGHTS_H
#define LORASERVE_WORKER_WEIGHTS_H

#include "common/model_config.h"
#include "common/status.h"

typedef struct layer_weights {
    float *attn_norm;           // (H)
    float *wq;                  // (n_heads_local * head_dim, H)
    float *wk;                  // (n_kv_heads_local * head_dim, H)
    float *wv;                  // (n_kv_heads_local * head_dim, H)
    float *wo;                  // (H, n_heads_local * head_dim)
    float *mlp_norm;            // (H)
    float *w_gate;              // (I_local, H)
    float *w_up;                // (I_local, H)
    float *w_down;              // (H, I_local)
} layer_weights;

typedef struct model_weights {
    model_config cfg;
    int tp_rank, tp_size;
    int n_heads_local, n_kv_heads_local, inter_local;
    int vocab_start, vocab_local;   // this rank's lm_head rows
    float *embed;               // (V, H), replicated
    float *final_norm;          // (H)
    float *lm_head;             // (vocab_local, H)
    layer_weights *layers;      // n_layers, owned
    float *arena;               // one allocation backing every tensor above
    size_t arena_floats;
} model_weights;

/* Loads this rank's shard. Shapes that do not divide (heads or kv heads or intermediate by tp_size)
 * fail with INVALID_ARGUMENT saying which. */
ls_status model_weights_load(model_weights *w, const char *dir, int tp_rank, int tp_size, ls_error *err);
void model_weights_free(model_weights *w);

#endif
