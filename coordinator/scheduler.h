/* Iteration-level continuous batching. Every step takes one decode token of each running request and
 * fills the rest of a per-step token budget with prefill chunks: first of running requests whose prompt
 * is not yet fully in the cache (long prompts are chunked), then of new requests admitted in arrival
 * order. Admission reserves KV pages for the request's whole current sequence plus its next token, so
 * an admitted prompt is never stranded half-cached. When a decode step needs a page and none is free,
 * the newest running request is preempted: its pages are freed and it goes back to the head of the
 * queue, to be recomputed later (prompt + what it already generated) with identical output, because
 * sampling is keyed by (seed, token index), not by the batch.
 *
 * Adapters share the pool (adapter_registry.h): a request is admitted only when its adapter is
 * resident or can be made resident in this very step (the copy is part of the plan and runs before
 * the compute); pages for KV growth come from evicting idle adapters before preempting anyone; and
 * the adapters of the next queued requests are prefetched while free pages stay above a quarter of
 * the pool. */
#ifndef LORASERVE_COORDINATOR_SCHEDULER_H
#define LORASERVE_COORDINATOR_SCHEDULER_H

#include <stdint.h>

#include "common/plan.h"
#include "common/status.h"
#include "coordinator/adapter_registry.h"
#include "coordinator/page_pool.h"
#include "coordinator/request.h"

typedef struct req_queue { request *head, *tail; int n; } req_queue;

typedef struct scheduler_opts {
    int n_pages;
    int page_tokens;
    int max_batch;              // running requests at most
    int max_step_tokens;        // token budget of one step
    int max_waiting;            // queued requests at most; more get RESOURCE_EXHAUSTED at once
    int prefetch;               // adapters of queued requests copied in ahead, per step at most
} scheduler_opts;

typedef struct scheduler {
    scheduler_opts o;
    page_pool pool;
    adapter_registry adapters;  // shares the pool
    req_queue waiting, running;
    uint64_t arrivals;
    uint64_t preemptions;
    request **step;             // requests of the last built plan, in plan order
    int32_t *step_chunk;        // tokens each one processes in that plan
    int n_step, cap_step;
    adapter **copied;           // adapters made resident by the last built plan
    int n_copied, cap_copied;
} scheduler;

/* page_bytes: the size of one pool page on a worker (for the copy statistics). */
void scheduler_init(scheduler *s, const scheduler_opts *o, size_t page_bytes);
void scheduler_free(scheduler *s);
/* Queues r, or refuses it (RESOURCE_EXHAUSTED) when the queue is full or r could never fit the pool. */
ls_status scheduler_submit(scheduler *s, request *r, ls_error *err);
/* Builds the next step into p; returns the number of sequences (0 = nothing to run now). */
int scheduler_build(scheduler *s, plan *p, uint64_t step_no);
/* Records that the last built step ran: advances the cached prefix of every request in it. */
void scheduler_step_done(scheduler *s);
/* Takes r out of its queue and frees its pages. */
void scheduler_remove(scheduler *s, request *r);
static inline int scheduler_idle(const scheduler *s) { return s->waiting.n == 0 && s->running.n == 0; }
int scheduler_pages_for(const scheduler *s, int tokens);

#endif
