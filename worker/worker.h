/* A worker rank: loads its shard of the model, allocates the KV pool, then executes step plans until
 * the coordinator says stop. Worker rank 0 (world rank 1) samples and returns the token ids. */
#ifndef LORASERVE_WORKER_WORKER_H
#define LORASERVE_WORKER_WORKER_H

#include <mpi.h>

#include "common/channel.h"
#include "common/status.h"
#include "worker/adapter_store.h"
#include "worker/collective.h"
#include "worker/forward.h"
#include "worker/weights.h"

typedef struct worker {
    model_weights w;
    collective col;
    adapter_store store;
    forward fwd;
    char model_name[256];       // the served model's directory name (adapters' base_model_name_or_path)
    int allow_base_mismatch;    // set before worker_start
    size_t adapter_cache_bytes; // hot set of converted shards; set before worker_start
    int cuda_graphs;            // CUDA: replay decode steps as graphs (default 1); set before worker_start
    struct cuda_forward *cuda;  // the CUDA backend when it runs; NULL = the CPU backend (fwd)
    int keep_logits;            // CUDA: also copy the sampled rows' logits to `logits` (tests)
    float *logits;              // (max_tokens, vocab) on worker rank 0
    void *sample_scratch;
    int32_t *sampled;           // ids, then the step's adapter read and copy microseconds
    double adapter_read_s, adapter_copy_s;      // the last step's (copy is 0 on the CPU: part of read)
} worker;

/* Loads the shard of this rank of the workers' communicator. backend: "cpu", "cuda", or "auto" (CUDA
 * when this build has it and the rank sees a GPU). */
ls_status worker_load(worker *wk, const char *model_dir, MPI_Comm workers, const char *backend, ls_error *err);
/* Pages of page_tokens tokens that fit in kv_bytes on this rank (and, on a GPU, in its free memory
 * once the step scratch for max_tokens rows is set aside). */
int worker_pool_capacity(const worker *wk, int page_tokens, int max_tokens, size_t kv_bytes);
ls_status worker_start(worker *wk, int n_pages, int page_tokens, int max_tokens, ls_error *err);
/* Runs one step on this rank's backend; on worker rank 0 the sampled ids land in wk->sampled and the
 * sampled rows' logits in wk->logits (CPU always, CUDA when keep_logits). */
ls_status worker_forward(worker *wk, const plan *p, ls_error *err);
/* Executes plans (steps and adapter commands) until PLAN_SHUTDOWN. */
void worker_serve(worker *wk, channel *ch);
/* Samples every sequence with sample = 1 from logits rows (worker rank 0 only). */
void worker_sample(worker *wk, const plan *p, const float *logits, int32_t *out);
void worker_free(worker *wk);

#endif
