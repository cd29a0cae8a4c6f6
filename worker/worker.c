/* Worker rank main loop (see worker.h). */
#include "worker/worker.h"

#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#ifdef LORASERVE_HAVE_CUDA
#include <cuda_runtime.h>

#include "worker/cuda/forward_cuda.h"
#endif

/* How long a GPU step or collective may take before the group is declared broken. */
#define WORKER_STEP_TIMEOUT_S 60.0

/* Starts the CUDA backend when asked to (or when "auto" finds a GPU); 0 = stay on the CPU. */
static ls_status start_cuda(worker *wk, MPI_Comm workers, const char *backend, ls_error *err)
{
#ifdef LORASERVE_HAVE_CUDA
    int count = 0;
    int has_gpu = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
    // The decision must be the same on every rank: a group with a GPU-less rank runs on the CPU.
    int all = has_gpu;
    MPI_CHECK(MPI_Allreduce(&has_gpu, &all, 1, MPI_INT, MPI_MIN, workers));
    if (!strcmp(backend, "cpu") || (!strcmp(backend, "auto") && !all)) return LS_OK;
    if (!all) return ls_fail(err, LS_FAILED_PRECONDITION, "--backend cuda: a worker rank sees no CUDA device");
    wk->cuda = ls_xcalloc(1, sizeof *wk->cuda);
    return cuda_forward_init(wk->cuda, &wk->w, workers, WORKER_STEP_TIMEOUT_S, err);
#else
    (void)wk, (void)workers;
    if (!strcmp(backend, "cuda")) return ls_fail(err, LS_FAILED_PRECONDITION, "--backend cuda: built without CUDA");
    return LS_OK;
#endif
}

ls_status worker_load(worker *wk, const char *model_dir, MPI_Comm workers, const char *backend, ls_error *err)
{
    int rank, size;
    memset(wk, 0, sizeof *wk);
    MPI_CHECK(MPI_Comm_rank(workers, &rank));
    MPI_CHECK(MPI_Comm_size(workers, &size));
    ls_status st = model_weights_load(&wk->w, model_dir, rank, size, err);
    if (st != LS_OK) return st;
    const char *base = strrchr(model_dir, '/');
    snprintf(wk->model_name, sizeof wk->model_name, "%s", base && base[1] ? base + 1 : model_dir);
    wk->adapter_cache_bytes = (size_t)1 << 30;
    wk->cuda_graphs = 1;
    collective_init(&wk->col, workers, wk->w.vocab_start, wk->w.vocab_local, wk->w.cfg.vocab_size);
    return start_cuda(wk, workers, backend, err);
}

int worker_pool_capacity(const worker *wk, int page_tokens, int max_tokens, size_t kv_bytes)
{
#ifdef LORASERVE_HAVE_CUDA
    if (wk->cuda) return cuda_forward_pool_capacity(wk->cuda, page_tokens, max_tokens, kv_bytes);
#endif
    (void)max_tokens;
    size_t page = forward_page_bytes(&wk->w.cfg, wk->w.tp_size, page_tokens);
    size_t n = kv_bytes / page;
    return n > (size_t)1 << 30 ? 1 << 30 : (int)n;
}

ls_status worker_start(worker *wk, int n_pages, int page_tokens, int max_tokens, ls_error *err)
{
    size_t page_floats = lora_page_floats(&wk->w.cfg, wk->w.tp_size, page_tokens);
    if (lora_max_row_floats(&wk->w.cfg, wk->w.tp_size) > page_floats)
        return ls_fail(err, LS_INVALID_ARGUMENT, "a page of %d tokens (%zu floats) cannot hold an adapter row of "
                       "%zu floats: raise --page-tokens", page_tokens, page_floats,
                       lora_max_row_floats(&wk->w.cfg, wk->w.tp_size));
    adapter_store_init(&wk->store, &wk->w.cfg, wk->w.tp_rank, wk->w.tp_size, page_floats, wk->adapter_cache_bytes);
    ls_status st;
#ifdef LORASERVE_HAVE_CUDA
    if (wk->cuda) {
        // Adapters on the GPU: their rows go to the device pool; the host store keeps the registry.
        st = cuda_forward_start(wk->cuda, n_pages, page_tokens, max_tokens, err);
        if (st == LS_OK) st = cuda_forward_lora_start(wk->cuda, &wk->store, wk->adapter_cache_bytes, err);
        wk->cuda->graphs.enabled = wk->cuda_graphs;
    } else
#endif
    st = forward_init(&wk->fwd, &wk->w, &wk->col, &wk->store, n_pages, page_tokens, max_tokens, err);
    if (st != LS_OK) return st;
    if (wk->col.rank == 0) {
        size_t V = (size_t)wk->w.cfg.vocab_size;
        wk->logits = ls_xmalloc((size_t)max_tokens * V * sizeof(float));
        wk->sample_scratch = ls_xmalloc(V * (sizeof(float) + sizeof(int32_t)));
        wk->sampled = ls_xmalloc(((size_t)max_tokens + CHANNEL_TOKEN_EXTRA) * sizeof(int32_t));
    }
    return LS_OK;
}

void worker_sample(worker *wk, const plan *p, const float *logits, int32_t *out)
{
    int V = wk->w.cfg.vocab_size, row = 0;
    for (int s = 0; s < p->h.n_seqs; s++) {
        const plan_seq *q = &p->seqs[s];
        if (!q->sample) continue;
        sample_params sp = { .temperature = q->temperature, .top_p = q->top_p, .top_k = q->top_k,
                             .seed = q->seed, .index = q->sample_index };
        out[row] = op_sample(logits + (size_t)row * V, V, &sp, wk->sample_scratch);
        row++;
    }
}

/* Registers an adapter on this rank and answers; the coordinator keeps it only if every rank agrees. */
static void handle_register(worker *wk, channel *ch, const plan *p)
{
    ls_error err = { 0 };
    channel_report rep = { .code = LS_OK };
    if (adapter_store_register(&wk->store, p->h.arg, p->bytes, wk->model_name, wk->allow_base_mismatch, &err) !=
        LS_OK) {
        rep.code = err.code;
        snprintf(rep.msg, sizeof rep.msg, "%.*s", (int)sizeof rep.msg - 1, err.msg);
    }
#ifdef LORASERVE_HAVE_CUDA
    else if (wk->cuda) cuda_lora_warm(&wk->cuda->lora, p->h.arg);
#endif
    channel_gather_reports(ch, &rep, NULL);
}

/* Forgets slot id on this rank: the host store's entry and, on the GPU, its hot shard and descriptors
 * (the slot may next hold another adapter). */
static void handle_drop(worker *wk, int32_t id)
{
#ifdef LORASERVE_HAVE_CUDA
    if (wk->cuda) cuda_lora_drop(&wk->cuda->lora, id);
#endif
    adapter_store_drop(&wk->store, id);
}

/* CPU backend: copies the step's new adapters into their pages and points every listed adapter at its
 * pages (the CUDA backend does this inside cuda_forward_step, on its copy stream). */
static void place_adapters(worker *wk, const plan *p)
{
    for (int i = 0; i < p->h.n_adapters; i++) {
        const plan_adapter *a = &p->adapters[i];
        ls_error err = { 0 };
        // The shard was validated when the adapter was registered; failing now means the files changed
        // under us, and a step cannot go on without its weights.
        if (adapter_store_place(&wk->store, a->id, p->pages + a->page_off, a->n_pages, wk->fwd.kv.pool,
                                wk->fwd.kv.page_stride, a->copy, &err) != LS_OK) {
            LOG_E("adapter %d: %s", a->id, err.msg);
            LS_ASSERT(!"adapter copy failed");
        }
    }
}

ls_status worker_forward(worker *wk, const plan *p, ls_error *err)
{
#ifdef LORASERVE_HAVE_CUDA
    if (wk->cuda) {
        wk->adapter_read_s = wk->adapter_copy_s = 0;
        if (!p->h.n_seqs && !p->h.n_adapters) return LS_OK;
        ls_status st = cuda_forward_step(wk->cuda, p, wk->sampled, wk->keep_logits ? wk->logits : NULL, err);
        cuda_lora_step_times(&wk->cuda->lora, &wk->adapter_read_s, &wk->adapter_copy_s);
        return st;
    }
#endif
    (void)err;
    double t0 = clock_now_s();
    place_adapters(wk, p);
    wk->adapter_read_s = clock_now_s() - t0;
    wk->adapter_copy_s = 0;
    if (p->h.n_seqs) forward_step(&wk->fwd, p, wk->logits);
    if (wk->col.rank == 0) worker_sample(wk, p, wk->logits, wk->sampled);
    return LS_OK;
}

void worker_serve(worker *wk, channel *ch)
{
    plan p;
    plan_init(&p);
    for (;;) {
        plan_cmd cmd = channel_recv_plan(ch, &p);
        if (cmd == PLAN_SHUTDOWN) break;
        if (cmd == PLAN_ADAPTER_REGISTER) { handle_register(wk, ch, &p); continue; }
        if (cmd == PLAN_ADAPTER_DROP) { handle_drop(wk, p.h.arg); continue; }
        ls_error err = { 0 };
        if (worker_forward(wk, &p, &err) != LS_OK) {
            // A broken tensor-parallel group cannot finish this step or any later one: end the job so
            // that mpirun (and Slurm or Kubernetes) can restart it, rather than hang the clients.
            LOG_E("step %llu failed: %s", (unsigned long long)p.h.step, err.msg);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
        if (wk->col.rank == 0) {
            wk->sampled[p.h.n_sample] = (int32_t)(wk->adapter_read_s * 1e6);
            wk->sampled[p.h.n_sample + 1] = (int32_t)(wk->adapter_copy_s * 1e6);
            channel_tokens_send(ch, wk->sampled, p.h.n_sample);
        }
    }
    plan_free(&p);
}

void worker_free(worker *wk)
{
#ifdef LORASERVE_HAVE_CUDA
    if (wk->cuda) cuda_forward_free(wk->cuda);
#endif
    free(wk->cuda);
    forward_free(&wk->fwd);
    adapter_store_free(&wk->store);
    collective_free(&wk->col);
    model_weights_free(&wk->w);
    free(wk->logits);
    free(wk->sample_scratch);
    free(wk->sampled);
    memset(wk, 0, sizeof *wk);
}
