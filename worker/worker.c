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
    ls_status st = forward_init(&wk->fwd, &wk->w, &wk->col, n_pages, page_tokens, max_tokens, err);
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

void worker_serve(worker *wk, channel *ch)
{
    plan p;
    plan_init(&p);
    while (channel_recv_plan(ch, &p) == PLAN_STEP) {
        forward_step(&wk->fwd, &p, wk->logits);
        if (wk->col.rank != 0) continue;
        worker_sample(wk, &p, wk->logits, wk->sampled);
        channel_tokens_send(ch, wk->sampled, p.h.n_sample);
    }
    plan_free(&p);
}

void worker_free(worker *wk)
{
    forward_free(&wk->fwd);
    collective_free(&wk->col);
    model_weights_free(&wk->w);
    free(wk->logits);
    free(wk->sample_scratch);
    free(wk->sampled);
    memset(wk, 0, sizeof *wk);
}
