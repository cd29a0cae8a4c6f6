/* Worker rank main loop (see worker.h). */
#include "worker/worker.h"

#include <string.h>

#include "common/log.h"

ls_status worker_load(worker *wk, const char *model_dir, MPI_Comm workers, ls_error *err)
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
    collective_init(&wk->col, workers, wk->w.vocab_start, wk->w.vocab_local, wk->w.cfg.vocab_size);
    return LS_OK;
}

int worker_pool_capacity(const worker *wk, int page_tokens, size_t kv_bytes)
{
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
    ls_status st = forward_init(&wk->fwd, &wk->w, &wk->col, &wk->store, n_pages, page_tokens, max_tokens, err);
    if (st != LS_OK) return st;
    if (wk->col.rank == 0) {
        size_t V = (size_t)wk->w.cfg.vocab_size;
        wk->logits = ls_xmalloc((size_t)max_tokens * V * sizeof(float));
        wk->sample_scratch = ls_xmalloc(V * (sizeof(float) + sizeof(int32_t)));
        wk->sampled = ls_xmalloc((size_t)max_tokens * sizeof(int32_t));
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
    if (adapter_store_register(&wk->store, p->h.arg, p->bytes, wk->model_name, wk->allow_base_mismatch, &err) != LS_OK) {
        rep.code = err.code;
        snprintf(rep.msg, sizeof rep.msg, "%.*s", (int)sizeof rep.msg - 1, err.msg);
    }
    channel_gather_reports(ch, &rep, NULL);
}

/* Copies the step's new adapters into their pages and points every listed adapter at its pages. */
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

void worker_serve(worker *wk, channel *ch)
{
    plan p;
    plan_init(&p);
    for (;;) {
        plan_cmd cmd = channel_recv_plan(ch, &p);
        if (cmd == PLAN_SHUTDOWN) break;
        if (cmd == PLAN_ADAPTER_REGISTER) { handle_register(wk, ch, &p); continue; }
        if (cmd == PLAN_ADAPTER_DROP) { adapter_store_drop(&wk->store, p.h.arg); continue; }
        place_adapters(wk, &p);
        if (p.h.n_seqs) forward_step(&wk->fwd, &p, wk->logits);
        if (wk->col.rank != 0) continue;
        worker_sample(wk, &p, wk->logits, wk->sampled);
        channel_tokens_send(ch, wk->sampled, p.h.n_sample);
    }
    plan_free(&p);
}

void worker_free(worker *wk)
{
    forward_free(&wk->fwd);
    adapter_store_free(&wk->store);
    collective_free(&wk->col);
    model_weights_free(&wk->w);
    free(wk->logits);
    free(wk->sample_scratch);
    free(wk->sampled);
    memset(wk, 0, sizeof *wk);
}
