/* Continuous-batching scheduler (see scheduler.h for the policy). */
#include "coordinator/scheduler.h"

#include <string.h>

#include "common/log.h"

static void queue_remove(req_queue *q, request *r)
{
    if (r->prev) r->prev->next = r->next; else q->head = r->next;
    if (r->next) r->next->prev = r->prev; else q->tail = r->prev;
    r->prev = r->next = NULL;
    q->n--;
}

static void queue_push_back(req_queue *q, request *r)
{
    r->next = NULL;
    r->prev = q->tail;
    if (q->tail) q->tail->next = r; else q->head = r;
    q->tail = r;
    q->n++;
}

static void queue_push_front(req_queue *q, request *r)
{
    r->prev = NULL;
    r->next = q->head;
    if (q->head) q->head->prev = r; else q->tail = r;
    q->head = r;
    q->n++;
}

void scheduler_init(scheduler *s, const scheduler_opts *o, size_t page_bytes)
{
    memset(s, 0, sizeof *s);
    s->o = *o;
    page_pool_init(&s->pool, o->n_pages);
    adapter_registry_init(&s->adapters, page_bytes);
    s->cap_step = o->max_batch;
    s->step = ls_xcalloc((size_t)s->cap_step, sizeof *s->step);
    s->step_chunk = ls_xcalloc((size_t)s->cap_step, sizeof *s->step_chunk);
}

void scheduler_free(scheduler *s)
{
    adapter_registry_free(&s->adapters, &s->pool);
    free(s->copied);
    page_pool_free(&s->pool);
    free(s->step);
    free(s->step_chunk);
    memset(s, 0, sizeof *s);
}

int scheduler_pages_for(const scheduler *s, int tokens)
{
    return (tokens + s->o.page_tokens - 1) / s->o.page_tokens;
}

ls_status scheduler_submit(scheduler *s, request *r, ls_error *err)
{
    if (s->waiting.n >= s->o.max_waiting)
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "the waiting queue is full (%d requests); retry later",
                       s->o.max_waiting);
    int need = scheduler_pages_for(s, r->n_prompt + r->max_new_tokens), ad = r->ad ? r->ad->n_pages : 0;
    if (need + ad > s->o.n_pages)
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "the request needs %d KV pages%s but the pool has %d in all",
                       need + ad, ad ? " (adapter included)" : "", s->o.n_pages);
    r->arrival_no = ++s->arrivals;
    r->state = REQ_WAITING;
    queue_push_back(&s->waiting, r);
    return LS_OK;
}

static void release_pages(scheduler *s, request *r)
{
    page_pool_release(&s->pool, r->pages, r->n_pages);
    r->n_pages = 0;
    r->n_cached = 0;
}

void scheduler_remove(scheduler *s, request *r)
{
    if (r->state != REQ_WAITING && r->state != REQ_RUNNING) return;     // never queued, or already out
    if (r->state == REQ_RUNNING && r->ad) r->ad->running--;
    queue_remove(r->state == REQ_RUNNING ? &s->running : &s->waiting, r);
    release_pages(s, r);
    r->state = REQ_FINISHED;
}

static void preempt(scheduler *s, request *r)
{
    LOG_I("preempting request %s (%d tokens cached) to free KV pages", r->id, r->n_cached);
    queue_remove(&s->running, r);
    release_pages(s, r);
    if (r->ad) r->ad->running--;
    r->state = REQ_WAITING;
    queue_push_front(&s->waiting, r);
    s->preemptions++;
}

/* Grows r's page table to cover `tokens` positions; 0 on success, -1 when the pool is short. */
static int grow_pages(scheduler *s, request *r, int tokens)
{
    int need = scheduler_pages_for(s, tokens) - r->n_pages;
    if (need <= 0) return 0;
    if (r->n_pages + need > r->cap_pages) {
        r->cap_pages = scheduler_pages_for(s, r->cap_tokens);
        r->pages = ls_xrealloc(r->pages, (size_t)r->cap_pages * sizeof *r->pages);
    }
    adapter_registry_evict(&s->adapters, &s->pool, need);      // idle adapters go before any request
    if (page_pool_alloc(&s->pool, PAGE_KV, need, r->pages + r->n_pages) != 0) return -1;
    r->n_pages += need;
    return 0;
}

static void add_to_plan(scheduler *s, plan *p, request *r, int chunk)
{
    plan_seq *q = plan_add_seq(p, r->tokens + r->n_cached, chunk, r->pages, scheduler_pages_for(s, r->n_cached + chunk));
    q->start_pos = r->n_cached;
    q->sample = r->n_cached + chunk == r->n_tokens;
    q->sample_index = (uint32_t)request_generated(r);
    q->temperature = r->temperature;
    q->top_p = r->top_p;
    q->top_k = r->top_k;
    q->seed = r->seed;
    q->adapter = r->ad ? r->ad->id : -1;
    p->h.n_sample += q->sample;
    s->step[s->n_step] = r;
    s->step_chunk[s->n_step++] = chunk;
}

/* Running requests: decode tokens and the rest of chunked prefills; preempts when pages run out. */
static void schedule_running(scheduler *s, plan *p, int *budget)
{
    request *r = s->running.head;
    while (r && *budget > 0) {
        request *next = r->next;
        int chunk = r->n_tokens - r->n_cached;
        if (chunk > *budget) chunk = *budget;
        int preempted_self = 0;
        while (grow_pages(s, r, r->n_cached + chunk) != 0) {
            request *victim = s->running.tail;
            if (victim == r) { preempted_self = 1; break; }
            if (victim == next) next = NULL;   // the loop ends at the victim's place anyway
            preempt(s, victim);
        }
        if (preempted_self) { preempt(s, r); break; }
        add_to_plan(s, p, r, chunk);
        *budget -= chunk;
        r = next;
    }
}

static void note_copy(scheduler *s, adapter *a)
{
    if (s->n_copied == s->cap_copied) {
        s->cap_copied = s->cap_copied ? 2 * s->cap_copied : 16;
        s->copied = ls_xrealloc(s->copied, (size_t)s->cap_copied * sizeof *s->copied);
    }
    s->copied[s->n_copied++] = a;
}

/* Waiting requests in arrival order, while pages for their whole sequence can be reserved. */
static void schedule_waiting(scheduler *s, plan *p, int *budget)
{
    while (s->waiting.head && *budget > 0 && s->running.n < s->o.max_batch) {
        request *r = s->waiting.head;
        int need = scheduler_pages_for(s, r->n_tokens + 1) - r->n_pages;
        if (r->ad) {
            int copied = adapter_registry_make_resident(&s->adapters, &s->pool, r->ad, need);
            if (copied < 0) break;
            if (copied) note_copy(s, r->ad);
            r->ad->running++;       // pinned before evicting for KV: the victim must never be r's own adapter
        }
        if (adapter_registry_evict(&s->adapters, &s->pool, need) < need) {
            if (r->ad) r->ad->running--;
            break;
        }
        LS_ASSERT(grow_pages(s, r, r->n_tokens + 1) == 0);
        queue_remove(&s->waiting, r);
        queue_push_back(&s->running, r);
        r->state = REQ_RUNNING;
        int chunk = r->n_tokens - r->n_cached;
        if (chunk > *budget) chunk = *budget;
        add_to_plan(s, p, r, chunk);
        *budget -= chunk;
    }
}

/* Copies in the adapters of the next queued requests while a quarter of the pool stays free, without
 * evicting anything: the copy then overlaps the wait instead of delaying the admission. */
static void prefetch(scheduler *s)
{
    int budget = s->o.prefetch, reserve = s->pool.n_pages / 4;
    for (request *r = s->waiting.head; r && budget > 0; r = r->next) {
        adapter *a = r->ad;
        if (!a || a->resident || page_pool_available(&s->pool) < a->n_pages + reserve) continue;
        LS_ASSERT(page_pool_alloc(&s->pool, PAGE_ADAPTER, a->n_pages, a->pages) == 0);
        a->resident = 1;
        a->loads++;
        s->adapters.loads++;
        s->adapters.rows_bytes_copied += (uint64_t)a->n_pages * s->adapters.page_bytes;
        note_copy(s, a);
        budget--;
    }
}

static int copied_now(const scheduler *s, const adapter *a)
{
    for (int i = 0; i < s->n_copied; i++)
        if (s->copied[i] == a) return 1;
    return 0;
}

/* The plan's adapter table: every adapter a sequence uses, and every copy. */
static void add_adapters(scheduler *s, plan *p)
{
    for (int i = 0; i < s->n_step; i++) {
        adapter *a = s->step[i]->ad;
        if (!a || a->last_used == s->adapters.clock + 1) continue;  // already listed this step
        a->last_used = s->adapters.clock + 1;
        plan_add_adapter(p, a->id, a->pages, a->n_pages, copied_now(s, a));
    }
    for (int i = 0; i < s->n_copied; i++)
        if (s->copied[i]->last_used != s->adapters.clock + 1) {
            s->copied[i]->last_used = s->adapters.clock + 1;
            plan_add_adapter(p, s->copied[i]->id, s->copied[i]->pages, s->copied[i]->n_pages, 1);
        }
    s->adapters.clock++;
}

int scheduler_build(scheduler *s, plan *p, uint64_t step_no)
{
    plan_reset(p, PLAN_STEP, step_no);
    s->n_step = 0;
    s->n_copied = 0;
    int budget = s->o.max_step_tokens;
    schedule_running(s, p, &budget);
    schedule_waiting(s, p, &budget);
    prefetch(s);
    add_adapters(s, p);
    return p->h.n_seqs + p->h.n_adapters;
}

void scheduler_step_done(scheduler *s)
{
    for (int i = 0; i < s->n_step; i++) s->step[i]->n_cached += s->step_chunk[i];
}
