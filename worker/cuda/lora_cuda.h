/* LoRA adapters on the CUDA backend: the GPU twin of worker/lora_apply.c, with adapter rows in the same
 * device page pool as the KV cache (common/lora_layout.h gives the row order; the pool page is one KV
 * page, in the model's storage type).
 *
 * Copy-in, as S-LoRA does it: a step's plan_adapter entries with copy = 1 are read from the worker's
 * host adapter store (adapter_store.h validated them at registration), converted to the storage type
 * into a bounded hot set of pinned host pages (LRU, so a re-copy after a pool eviction does not touch
 * the disk), and copied into their pool pages with cudaMemcpyAsync on a COPY stream; the compute stream
 * waits on a cudaEvent that the copy stream records, just before the first LoRA kernel of the step, so
 * the copies overlap the embedding and the first fused qkv GEMM. Every copy is finished when the step
 * ends, so a step never starts with work of an earlier one in flight.
 *
 * Descriptors: for each adapter and (layer, module), a cuda_lora_rows with device arrays of row
 * pointers into the pool. They depend only on the adapter's placement, so they are built once per
 * placement (lora_layout_walk into a pinned host mirror of a device arena, uploaded in one copy) and
 * reused while the plan keeps the same pages; the arena is a bump allocator that is reset and refilled
 * with the step's adapters when it runs out. Per step only the segment tables (one segment per plan
 * sequence, NULL = base model) and seg_start are rebuilt and uploaded. Everything is allocated at start
 * and sized from the limits (pool pages, max tokens, the hot-set budget); a step that needs more fails
 * with RESOURCE_EXHAUSTED instead of allocating on the request path.
 *
 * Forward (sgmv, segments = sequences), tensor parallel like lora_apply.h: column-split modules (q, k,
 * v / gate, up) shrink into zeroed fp32 v buffers with ONE fused launch, ONE fp32 all-reduce completes
 * the rank dim of all of them, then each expands into its column slice of the fused GEMM output;
 * row-split modules (o, down) shrink this rank's input slice, all-reduce v, and expand into this rank's
 * output columns of the base partial sum before the base all-reduce. A (layer, module) that no adapter
 * of the step adapts is skipped entirely; every rank decides the same from the plan and the adapters'
 * configs. */
#ifndef LORASERVE_WORKER_CUDA_LORA_CUDA_H
#define LORASERVE_WORKER_CUDA_LORA_CUDA_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "common/lora_layout.h"
#include "common/plan.h"
#include "common/status.h"
#include "kernels/cuda/cuda_ops.h"
#include "worker/adapter_store.h"
#include "worker/cuda/device_weights.h"
#include "worker/cuda/nccl_comm.h"

/* What this backend keeps per adapter slot id. */
typedef struct cuda_lora_entry {
    const stored_adapter *src;  // the host store's adapter the state below belongs to
    int32_t *pages;             // its latest placement (pool pages), n_pages of them
    int n_pages, pages_cap;
    uint64_t built_gen;         // arena generation its descriptors (for `pages`) were built in; 0 = none
    size_t desc_off;            // byte offset of its descriptors (n_layers * LORA_N_MODULES) in the arena
    int32_t *hot;               // hot-set page of each shard page, or NULL when not hot
    int n_hot;                  // pages in hot (kept here: src may be gone when the slot is reused)
    uint64_t last_used;         // LRU clock of the hot set
    uint64_t copy_step;         // the step whose copies last read its hot pages
    uint64_t mark;              // the step that listed it (deduplication)
} cuda_lora_entry;

typedef struct cuda_lora {
    int on;                     // cuda_lora_start ran: adapters can be served
    const adapter_store *store;
    const model_config *cfg;
    dev_dtype dt;
    size_t esz;
    char *pool;                 // the device page pool (shared with the KV cache)
    size_t page_elems, page_bytes;
    int n_pages, max_tokens, tp_rank, tp_size;
    cudaStream_t compute, copy;
    cudaEvent_t copied;         // recorded on copy after the step's copies
    cudaEvent_t copy_t0, copy_t1;   // timing: around the step's copies (timed = 1 when both were recorded)
    int timed;
    double read_s;              // host time reading adapter files since the last cuda_lora_step_times
    nccl_comm *nc;
    // pinned hot set of converted shard pages
    char *hot;
    int hot_pages, n_free;
    int32_t *free_pages;
    char *shard;                // host read buffer in the storage type (grows; host memory only)
    size_t shard_cap;
    // descriptor arena: pinned host mirror and device copy, bump-allocated
    char *h_arena, *d_arena;
    size_t arena_cap, arena_used;
    uint64_t arena_gen;
    // per-step segment tables: seg_start then (n_layers * LORA_N_MODULES) arrays of n_segs pointers
    char *h_step, *d_step;
    size_t step_cap;
    uint8_t *any;               // (n_layers * LORA_N_MODULES): some segment of the step adapts it
    float *v;                   // device, max_tokens * 3 * CUDA_LORA_MAX_RANK
    int32_t *token_seg;         // device identity 0..max_tokens-1: a decode token's segment
    cuda_lora_entry *ent;
    int n_ent;
    int32_t *step_ids;          // the step's distinct adapters
    int step_ids_cap, n_step_ids;
    // the step being run
    uint64_t step, clock;
    int active;                 // some sequence uses an adapter
    int n_segs, max_rank, v_stride;
    int n_single;               // leading one-token segments (decode tokens): the MBGMV kernels
    int wait_pending;           // copies enqueued: the compute stream must wait before reading the pool
} cuda_lora;

/* Device bytes cuda_lora_start will take: `fixed` plus `per_page` for every pool page (the descriptor
 * arena grows with the pool), so that the pool capacity can leave room for them. */
void cuda_lora_device_bytes(const model_config *cfg, int tp_rank, int tp_size, size_t page_elems, int max_tokens,
                            size_t *fixed, size_t *per_page);
/* Allocates everything adapters need (after the pool exists): the hot set of hot_bytes pinned bytes,
 * the descriptor arena, the step tables and v. */
ls_status cuda_lora_start(cuda_lora *L, const adapter_store *store, const model_config *cfg, int tp_rank,
                          int tp_size, dev_dtype dt, void *pool, size_t page_elems, int n_pages, int max_tokens,
                          cudaStream_t compute, nccl_comm *nc, size_t hot_bytes, ls_error *err);
/* Before the step's compute: enqueues the plan's copies, builds the descriptors it lacks and uploads the
 * step's segment tables (on the compute stream). Sets L->active. */
ls_status cuda_lora_prepare(cuda_lora *L, const plan *p, ls_error *err);
/* Makes the compute stream wait for the step's copies if it has not yet (the end of every step). */
void cuda_lora_finish(cuda_lora *L);
/* Column-split modules reading the same x (n, in): mods[i] adds into y (rows of y_stride elements) at
 * columns [y_col0[i], y_col0[i] + its local output width). */
ls_status cuda_lora_column(cuda_lora *L, int layer, const lora_module *mods, int n_mods, const void *x, int n,
                           int in, void *y, int y_stride, const int *y_col0, ls_error *err);
/* A row-split module (o or down): x (n, in_local) is this rank's input slice, y (n, y_stride) the base
 * partial sum of the full output width. */
ls_status cuda_lora_row(cuda_lora *L, int layer, lora_module m, const void *x, int n, int in_local, void *y,
                        int y_stride, ls_error *err);
/* Forgets slot id (PLAN_ADAPTER_DROP): its hot pages and descriptors. */
/* After a step has completed: the host time spent reading adapter files since the last call (steps and
 * warm-ups) and the device time of the step's host-to-device adapter copies, in seconds. */
void cuda_lora_step_times(cuda_lora *L, double *read_s, double *copy_s);
/* Reads a newly registered adapter's shard into free pages of the pinned hot set (never evicting), so
 * that its first use only copies host to device: with a hot set as large as the adapter population (as
 * S-LoRA keeps every adapter in host memory) no step waits on a file. */
void cuda_lora_warm(cuda_lora *L, int32_t id);
void cuda_lora_drop(cuda_lora *L, int32_t id);
void cuda_lora_free(cuda_lora *L);

#endif
