/* Scheduler and page pool: token budget and chunked prefill, prefills joining decodes, admission that
 * reserves pages, the pool never over-committed, preemption of the newest request and its recompute
 * plan, queue bounds. Requests are built by hand (no tokenizer) and "generation" appends ids directly,
 * which is all the scheduler sees of the workers. */
#include <string.h>

#include "common/log.h"
#include "coordinator/scheduler.h"
#include "tests/tap.h"

static request *make_request(int n_prompt, int max_new)
{
    request *r = ls_xcalloc(1, sizeof *r);
    r->cap_tokens = n_prompt + max_new;
    r->tokens = ls_xcalloc((size_t)r->cap_tokens, sizeof *r->tokens);
    for (int i = 0; i < n_prompt; i++) r->tokens[i] = 100 + i;
    r->n_prompt = r->n_tokens = n_prompt;
    r->max_new_tokens = max_new;
    return r;
}

static void free_request(request *r)
{
    free(r->tokens);
    free(r->pages);
    free(r);
}

/* Plays the workers: marks the step done and appends one id per sampled sequence. */
static void run_step(scheduler *s, const plan *p)
{
    scheduler_step_done(s);
    for (int i = 0; i < s->n_step; i++) {
        request *r = s->step[i];
        if (p->seqs[i].sample) r->tokens[r->n_tokens++] = 7;
    }
}

static int pages_used(const scheduler *s)
{
    int n = 0;
    for (const request *r = s->running.head; r; r = r->next) n += r->n_pages;
    return n;
}

static void test_chunked_prefill(void)
{
    scheduler s;
    scheduler_init(&s, &(scheduler_opts){ .n_pages = 64, .page_tokens = 16, .max_batch = 8, .max_step_tokens = 32,
                                          .max_waiting = 8 }, 0);
    plan p;
    plan_init(&p);
    request *a = make_request(100, 4);
    TAP_OK(scheduler_submit(&s, a, NULL) == LS_OK, "submit");
    int chunks[8], n = 0;
    while (a->n_tokens == a->n_prompt && n < 8) {
        scheduler_build(&s, &p, 1);
        chunks[n++] = p.seqs[0].n_tokens;
        TAP_OK(p.seqs[0].start_pos == a->n_cached, "chunk %d starts where the cache ends", n);
        run_step(&s, &p);
    }
    TAP_OK(n == 4 && chunks[0] == 32 && chunks[3] == 4, "a 100-token prompt is prefilled in chunks 32,32,32,4");
    TAP_OK(a->n_pages == 7, "admission reserved pages for prompt + next token (got %d)", a->n_pages);
    request *b = make_request(20, 4);
    scheduler_submit(&s, b, NULL);
    scheduler_build(&s, &p, 2);
    TAP_OK(p.h.n_seqs == 2 && p.seqs[0].n_tokens == 1 && p.seqs[1].n_tokens == 20,
           "a new prefill joins the running decode in one step");
    TAP_OK(p.h.n_tokens == 21 && p.h.n_sample == 2, "step holds 21 tokens, 2 samples");
    run_step(&s, &p);
    scheduler_remove(&s, a);
    scheduler_remove(&s, b);
    TAP_OK(page_pool_available(&s.pool) == 64, "all pages back after removal");
    free_request(a);
    free_request(b);
    plan_free(&p);
    scheduler_free(&s);
}

static void test_bounds(void)
{
    scheduler s;
    scheduler_init(&s, &(scheduler_opts){ .n_pages = 4, .page_tokens = 16, .max_batch = 2, .max_step_tokens = 64,
                                          .max_waiting = 2 }, 0);
    request *big = make_request(60, 10);
    ls_error err = { 0 };
    TAP_OK(scheduler_submit(&s, big, &err) == LS_RESOURCE_EXHAUSTED && strstr(err.msg, "pool"),
           "a request larger than the pool is refused: %s", err.msg);
    request *r[3];
    for (int i = 0; i < 3; i++) r[i] = make_request(4, 4);
    TAP_OK(scheduler_submit(&s, r[0], NULL) == LS_OK && scheduler_submit(&s, r[1], NULL) == LS_OK, "two fit");
    TAP_OK(scheduler_submit(&s, r[2], &err) == LS_RESOURCE_EXHAUSTED, "third: queue full: %s", err.msg);
    free_request(big);
    free_request(r[2]);
    plan p;
    plan_init(&p);
    scheduler_build(&s, &p, 1);
    TAP_OK(p.h.n_seqs == 2 && s.running.n == 2, "max_batch of 2 respected");
    for (int i = 0; i < 2; i++) { scheduler_remove(&s, r[i]); free_request(r[i]); }
    plan_free(&p);
    scheduler_free(&s);
}

static void test_preemption(void)
{
    // 6 pages of 4 tokens: two requests of 8 prompt tokens each take 3 pages at admission; decoding
    // past 12 tokens needs a 4th page each, which the pool cannot give both.
    scheduler s;
    scheduler_init(&s, &(scheduler_opts){ .n_pages = 6, .page_tokens = 4, .max_batch = 4, .max_step_tokens = 64,
                                          .max_waiting = 4 }, 0);
    plan p;
    plan_init(&p);
    request *old = make_request(8, 12), *young = make_request(8, 12);
    scheduler_submit(&s, old, NULL);
    scheduler_submit(&s, young, NULL);
    int preempted_seen = 0, overcommit = 0, steps = 0;
    while ((old->n_tokens < 20 || young->n_tokens < 20) && steps < 100) {
        if (scheduler_build(&s, &p, (uint64_t)steps) == 0) break;
        if (pages_used(&s) > 6 || page_pool_available(&s.pool) < 0) overcommit = 1;
        for (int i = 0; i < p.h.n_seqs; i++)
            if (s.step[i] == young && p.seqs[i].start_pos == 0 && young->n_tokens > young->n_prompt) {
                preempted_seen = 1;
                TAP_OK(p.seqs[i].n_tokens == young->n_tokens, "recompute covers prompt + generated (%d tokens)",
                       p.seqs[i].n_tokens);
            }
        run_step(&s, &p);
        if (old->n_tokens == 20 && old->state == REQ_RUNNING) scheduler_remove(&s, old);
        if (young->n_tokens == 20 && young->state == REQ_RUNNING) scheduler_remove(&s, young);
        steps++;
    }
    TAP_OK(s.preemptions >= 1 && preempted_seen, "the newest request was preempted and recomputed (%llu)",
           (unsigned long long)s.preemptions);
    TAP_OK(!overcommit, "the pool was never over-committed");
    TAP_OK(old->n_tokens == 20 && young->n_tokens == 20, "both finished (%d, %d)", old->n_tokens, young->n_tokens);
    TAP_OK(page_pool_available(&s.pool) == 6, "all pages returned");
    free_request(old);
    free_request(young);
    plan_free(&p);
    scheduler_free(&s);
}

/* A registered adapter taking n_pages pages (its ranks do not matter to the scheduler). */
static adapter *make_adapter(scheduler *s, const char *name, int n_pages)
{
    peft_adapter p;
    memset(&p, 0, sizeof p);
    p.shape.n_layers = 1;
    p.shape.rank = ls_xcalloc(LORA_N_MODULES, sizeof *p.shape.rank);
    p.shape.scale = ls_xcalloc(LORA_N_MODULES, sizeof *p.shape.scale);
    return adapter_registry_add(&s->adapters, name, &p, n_pages);
}

static int plan_copies(const plan *p, const adapter *a)
{
    for (int i = 0; i < p->h.n_adapters; i++)
        if (p->adapters[i].id == a->id) return p->adapters[i].copy ? 1 : 0;
    return -1;
}

static void test_adapters(void)
{
    // 12 pages of 4 tokens; adapters of 4 pages. Requests need 2 KV pages (4 prompt + 1 next token).
    scheduler s;
    scheduler_init(&s, &(scheduler_opts){ .n_pages = 12, .page_tokens = 4, .max_batch = 4, .max_step_tokens = 64,
                                          .max_waiting = 8, .prefetch = 2 }, 0);
    adapter *a = make_adapter(&s, "a", 4), *b = make_adapter(&s, "b", 4), *c = make_adapter(&s, "c", 4);
    plan p;
    plan_init(&p);
    request *ra = make_request(4, 4);
    ra->ad = a;
    a->active++;
    scheduler_submit(&s, ra, NULL);
    scheduler_build(&s, &p, 1);
    TAP_OK(a->resident && plan_copies(&p, a) == 1, "admission copies the adapter in within the same step");
    TAP_OK(p.seqs[0].adapter == a->id, "the sequence names its adapter slot");
    run_step(&s, &p);
    scheduler_build(&s, &p, 2);
    TAP_OK(plan_copies(&p, a) == 0, "a resident adapter is not copied again");
    run_step(&s, &p);
    // b queued behind c: while a runs, c is admitted and b prefetched if pages allow.
    request *rc = make_request(4, 4), *rb = make_request(4, 4);
    rc->ad = c; c->active++;
    rb->ad = b; b->active++;
    scheduler_submit(&s, rc, NULL);
    scheduler_submit(&s, rb, NULL);
    scheduler_build(&s, &p, 3);
    TAP_OK(c->resident && a->resident, "second adapter admitted next to the running one (%d free)",
           page_pool_available(&s.pool));
    TAP_OK(!b->resident, "third adapter waits: pool too small with both pinned");
    TAP_OK(s.pool.in_use[PAGE_ADAPTER] == 8 && s.pool.in_use[PAGE_KV] <= 4, "pages by use: %d adapter, %d KV",
           s.pool.in_use[PAGE_ADAPTER], s.pool.in_use[PAGE_KV]);
    run_step(&s, &p);
    scheduler_remove(&s, ra);
    a->active--;
    scheduler_build(&s, &p, 4);
    TAP_OK(!a->resident && b->resident && plan_copies(&p, b) == 1,
           "the idle adapter is evicted (LRU) to admit the waiting one");
    TAP_OK(c->resident, "an adapter of a running request is never evicted");
    TAP_OK(s.adapters.evictions == 1 && s.adapters.loads == 3, "1 eviction, 3 loads (%llu, %llu)",
           (unsigned long long)s.adapters.evictions, (unsigned long long)s.adapters.loads);
    run_step(&s, &p);
    scheduler_remove(&s, rb);
    scheduler_remove(&s, rc);
    b->active--;
    c->active--;
    free_request(ra);
    free_request(rb);
    free_request(rc);
    plan_free(&p);
    scheduler_free(&s);
}

/* A queued request whose adapter is resident but idle (and the least recently used) needs KV pages that
 * only an eviction can give: the victim must be another adapter, never the request's own. */
static void test_own_adapter_not_evicted(void)
{
    scheduler s;
    scheduler_init(&s, &(scheduler_opts){ .n_pages = 12, .page_tokens = 4, .max_batch = 4, .max_step_tokens = 64,
                                          .max_waiting = 4 }, 0);
    adapter *a = make_adapter(&s, "a", 4), *b = make_adapter(&s, "b", 4);
    plan p;
    plan_init(&p);
    request *ra = make_request(3, 1), *rb = make_request(3, 1);
    ra->ad = a; a->active++;
    rb->ad = b; b->active++;
    scheduler_submit(&s, ra, NULL);
    scheduler_build(&s, &p, 1);                 // a resident, ra runs
    run_step(&s, &p);
    scheduler_remove(&s, ra);
    a->active--;
    scheduler_submit(&s, rb, NULL);
    scheduler_build(&s, &p, 2);                 // b resident too; a idle and least recently used
    run_step(&s, &p);
    scheduler_remove(&s, rb);
    b->active--;
    request *rc = make_request(16, 4);          // 5 KV pages; only 4 are free
    rc->ad = a; a->active++;
    scheduler_submit(&s, rc, NULL);
    scheduler_build(&s, &p, 3);
    int overlap = 0;
    for (int i = 0; i < rc->n_pages; i++)
        for (int k = 0; k < a->n_pages; k++) overlap |= rc->pages[i] == a->pages[k];
    TAP_OK(rc->state == REQ_RUNNING && a->resident && !b->resident && !overlap,
           "the request's own idle adapter stays resident; the other idle one is evicted for its KV pages");
    scheduler_remove(&s, rc);
    a->active--;
    free_request(ra); free_request(rb); free_request(rc);
    plan_free(&p);
    scheduler_free(&s);
}

int main(void)
{
    log_init(0, LOG_WARN);
    test_chunked_prefill();
    test_bounds();
    test_preemption();
    test_adapters();
    test_own_adapter_not_evicted();
    return tap_done();
}
