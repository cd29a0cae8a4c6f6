/* The host adapter store of one worker: every registered adapter by slot id (its validated PEFT config
 * and its mmapped safetensors, so that scale is bounded by disk, not RAM), a bounded hot set of shards
 * already converted to this rank's fp32 rows, and, for adapters resident in the pool, the row pointers
 * the LoRA kernels read. Copying an adapter in = writing its shard's pages into the pool pages the
 * coordinator chose (common/lora_layout.h gives the row order). */
#ifndef LORASERVE_WORKER_ADAPTER_STORE_H
#define LORASERVE_WORKER_ADAPTER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/peft.h"
#include "common/status.h"
#include "kernels/ops.h"

typedef struct stored_adapter {
    peft_adapter peft;
    int n_pages;                // pages this rank's shard spans
    float *shard;               // hot copy (n_pages * page_floats) or NULL
    uint64_t last_used;
    lora_rows *rows;            // (n_layers * LORA_N_MODULES): row pointers into the pool
    const float **ptrs;         // backing of rows[].a / rows[].b
    size_t n_ptrs;
} stored_adapter;

typedef struct adapter_store {
    const model_config *cfg;
    int tp_rank, tp_size;
    size_t page_floats;
    stored_adapter **slots;
    int cap;
    size_t hot_bytes, hot_cap_bytes;
    uint64_t clock;
    uint64_t copies, bytes_copied, shard_reads;
} adapter_store;

void adapter_store_init(adapter_store *s, const model_config *cfg, int tp_rank, int tp_size, size_t page_floats,
                        size_t hot_cap_bytes);
void adapter_store_free(adapter_store *s);
/* Validates dir (config and tensors) for slot id; on failure the slot stays empty. */
ls_status adapter_store_register(adapter_store *s, int32_t id, const char *dir, const char *served_model,
                                 int allow_base_mismatch, ls_error *err);
void adapter_store_drop(adapter_store *s, int32_t id);
/* Points adapter id at pool pages (page_stride floats apart); with copy, first writes its rows there. */
ls_status adapter_store_place(adapter_store *s, int32_t id, const int32_t *pages, int n_pages, float *pool,
                              size_t page_stride, int copy, ls_error *err);
/* Rows of (layer, module) of a placed adapter, or NULL when that module is not adapted. */
const lora_rows *adapter_store_rows(const adapter_store *s, int32_t id, int layer, int module);

#endif
