/* Golden test helpers (see golden_util.h). */
#include "tests/golden/golden_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

int32_t *golden_int_array(const json *a, int *n)
{
    *n = (int)a->len;
    int32_t *v = ls_xcalloc(a->len, sizeof *v);
    for (size_t i = 0; i < a->len; i++) v[i] = (int32_t)a->items[i].integer;
    return v;
}

void golden_seq_init(golden_seq *s, const int32_t *prompt, int n, int max_new, int page_tokens, int *next_page)
{
    memset(s, 0, sizeof *s);
    memcpy(s->tokens, prompt, (size_t)n * sizeof *prompt);
    s->n_tokens = n;
    s->adapter = -1;
    s->n_pages = (n + max_new + page_tokens - 1) / page_tokens;
    for (int k = 0; k < s->n_pages; k++) s->pages[k] = (*next_page)--;
}

void golden_seq_add(plan *p, golden_seq *s, int page_tokens)
{
    int n = s->n_tokens - s->n_cached;
    plan_seq *q = plan_add_seq(p, s->tokens + s->n_cached, n, s->pages, (s->n_tokens + page_tokens - 1) / page_tokens);
    q->start_pos = s->n_cached;
    q->sample = 1;
    q->adapter = s->adapter;
    p->h.n_sample++;
}

double golden_compare_row(const float *got, const st_tensor *t, int row, int vocab, double *max_abs)
{
    float *ref = ls_xmalloc((size_t)vocab * sizeof *ref);
    st_to_f32(ref, t, (size_t)row * vocab, (size_t)vocab);
    double worst = 0;
    for (int i = 0; i < vocab; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (d > *max_abs) *max_abs = d;
        double scaled = d / (GOLDEN_ATOL + GOLDEN_RTOL * fabs(ref[i]));
        if (!(scaled <= worst)) worst = scaled;     // NaN propagates as a failure
    }
    free(ref);
    return worst;
}

golden_result golden_run(worker *wk, const golden_case *cases, int count, int max_new, int page_tokens,
                         int *next_page, golden_plan_hook hook, void *hook_ctx)
{
    golden_seq *s = ls_xcalloc((size_t)count, sizeof *s);
    int V = wk->w.cfg.vocab_size, rank = wk->col.rank;
    for (int i = 0; i < count; i++) {
        golden_seq_init(&s[i], cases[i].prompt, cases[i].prompt_len, max_new, page_tokens, next_page);
        s[i].adapter = cases[i].adapter;
    }
    plan p;
    plan_init(&p);
    golden_result r = { .tokens_ok = 1 };
    int32_t *ids = ls_xcalloc((size_t)count, sizeof *ids);
    for (int step = 0; step < max_new; step++) {
        plan_reset(&p, PLAN_STEP, (uint64_t)step);
        for (int i = 0; i < count; i++) golden_seq_add(&p, &s[i], page_tokens);
        if (hook) hook(hook_ctx, &p, step);
        ls_error err = { 0 };
        if (worker_forward(wk, &p, &err) != LS_OK) {
            fprintf(stderr, "r%d: step failed: %s\n", rank, err.msg);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (rank == 0) memcpy(ids, wk->sampled, (size_t)count * sizeof *ids);
        MPI_Bcast(ids, count, MPI_INT32_T, 0, wk->col.comm);
        for (int i = 0; i < count; i++) {
            if (rank == 0) {
                const st_tensor *t = cases[i].logits;
                double w = t ? golden_compare_row(wk->logits + (size_t)i * V, t, step, V, &r.max_abs) : 1e9;
                if (!(w <= r.worst)) r.worst = w;
            }
            if (ids[i] != cases[i].greedy[step]) r.tokens_ok = 0;
            s[i].n_cached = s[i].n_tokens;
            s[i].tokens[s[i].n_tokens++] = cases[i].greedy[step];
        }
    }
    free(ids);
    free(s);
    plan_free(&p);
    return r;
}
