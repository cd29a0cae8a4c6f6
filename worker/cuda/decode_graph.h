/* CUDA graphs for decode steps. A decode step of a 7B model is ~400 small launches (per layer: norms,
 * four GEMMs, RoPE, KV store, attention, LoRA shrink/expand, all-reduces); issued one by one from the
 * host, their launch cost alone is about a third of a batch-1 step. A step whose sequences each bring
 * one token is captured once per shape and replayed: everything it reads that changes from step to step
 * (token ids, positions, page tables, LoRA segment tables and descriptors, sampling parameters) lives in
 * device buffers at fixed addresses, refreshed by copies before the launch, so one graph serves every
 * step of that shape. The shape (the key) is what the launches' grids and arguments depend on: the token
 * and sequence counts, and for LoRA the largest rank and which (layer, module) slots some adapter of the
 * batch touches. Graphs are kept in a small LRU cache; each batch size is its own bucket (a new size costs
 * one capture, ~the time of an eager step). */
#ifndef LORASERVE_WORKER_CUDA_DECODE_GRAPH_H
#define LORASERVE_WORKER_CUDA_DECODE_GRAPH_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "common/status.h"

typedef struct decode_graph_key {
    int n_tokens, n_seqs;
    int lora_max_rank;          // 0 = no LoRA in the step
    const uint8_t *lora_slots;  // n_slots flags (only when lora_max_rank > 0)
    int n_slots;
} decode_graph_key;

typedef struct decode_graph {
    int n_tokens, n_seqs, lora_max_rank;
    uint8_t *lora_slots;
    cudaGraphExec_t exec;
    uint64_t last_used;
} decode_graph;

typedef struct decode_graphs {
    int enabled;
    decode_graph *g;
    int n, cap;
    uint64_t clock;
    uint64_t captures, replays; // counters for logs and benchmarks
} decode_graphs;

/* The body of a step: enqueues its work on the stream; errors (a failed collective) go to err. */
typedef void (*decode_graph_body)(void *ctx, ls_error *err);

void decode_graphs_init(decode_graphs *d, int cap, int enabled);
/* Runs the body of a step of this shape on stream: replays its graph, capturing it first when the cache
 * has none (evicting the least recently used). A failure inside the body during capture discards the
 * capture and returns the body's status. */
ls_status decode_graphs_run(decode_graphs *d, const decode_graph_key *key, cudaStream_t stream,
                            decode_graph_body body, void *ctx, ls_error *err);
void decode_graphs_free(decode_graphs *d);

#endif
