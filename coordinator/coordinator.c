/* The coordinator's loop (see coordinator.h): gRPC events -> requests -> step plans -> sampled ids ->
 * responses. It also watches the workers: a rank that exited, or a step that does not come back in
 * time, ends the job (every call answered UNAVAILABLE first), because a replica with a dead rank can
 * never compute again and a supervisor restart is the only repair.
 *
 * Open MPI 4's mpirun, when a rank dies, sends SIGTERM to the others about two seconds later and SIGKILL
 * one second after that (odls_base_sigkill_timeout); orte_abort_on_non_zero_status (default on) does the
 * same for a non-zero exit. None of this is relied on: on one node the process watch (channel.h) sees
 * the death within ~100 ms, and the step timeout covers ranks on other nodes and hung ones.
 *
 * Start-up: the port opens while the workers still load (coordinator_open). The engine does not exist
 * yet, so instead of this loop the start-up handshake's MPI waits poll the queue (channel_idle), and the
 * hooks refuse every engine call until coordinator_run. */
#include "coordinator/coordinator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/metrics.h"

struct coordinator {
    const coordinator_opts *o;
    const model_config *mc;
    request_limits lim;
    server *srv;
    channel *ch;
    scheduler sched;
    adapter_service svc;
    plan plan;
    int in_flight;
    int loading;                                // open, the workers not all loaded: no engine yet
    int draining;
    coordinator_stats stats;
    metrics *met;
    int64_t step_started_ns, step_longest_ns;   // the step in flight; the longest recent one (decays)
    int64_t stop_ns;                            // when the stop signal was seen
    int64_t next_watch_ns;
    char lost[300];                             // why the workers are deemed lost ("" = they are fine)
    volatile sig_atomic_t *stop;                // set by SIGTERM
};

// A dead worker is looked for this often. On SIGTERM mpirun's SIGKILL follows within about a second, so a
// step that has not come back DRAIN_STALL_NS after the stop (or 4x the longest recent step, if more) is
// taken for a lost worker: the calls are answered while the coordinator still can.
enum { WATCH_EVERY_NS = 100 * 1000 * 1000, DRAIN_STALL_NS = 500 * 1000 * 1000 };

static double secs(int64_t from, int64_t to) { return from && to ? (double)(to - from) / 1e9 : 0; }

static const char *adapter_label(const request *r) { return r->adapter_name[0] ? r->adapter_name : "-"; }

static const char *finish_name(Loraserve__V1__FinishReason f)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&loraserve__v1__finish_reason__descriptor, (int)f);
    if (!v) return "?";
    return strncmp(v->name, "FINISH_REASON_", 14) ? v->name : v->name + 14;
}

/* A call the engine refused at once (the server answers it): counted and logged like a finish. */
static void note_refused(coordinator *c, const Loraserve__V1__GenerateRequest *pb, ls_status st, const char *why)
{
    metrics_request_done(c->met, st);
    LOG_I("request %s refused: status=%s adapter=%s why=\"%s\"", pb->request_id && pb->request_id[0] ? pb->request_id : "-",
          ls_status_name(st), pb->adapter && pb->adapter[0] ? pb->adapter : "-", why);
}

/* While loading, the port is open only for health: the engine's calls are refused, retryably. Counted,
 * not logged, as a load balancer may keep trying all along a long load. */
static ls_status refuse_loading(coordinator *c, ls_error *err)
{
    metrics_request_done(c->met, LS_UNAVAILABLE);
    return ls_fail(err, LS_UNAVAILABLE, "model is loading");
}

static ls_status on_request(void *ctx, server_call *call, const Loraserve__V1__GenerateRequest *pb, int streaming,
                            int64_t deadline_ms, ls_error *err)
{
    coordinator *c = ctx;      // the server itself refuses calls while draining or already past deadline
    if (c->loading) return refuse_loading(c, err);
    request *r;
    int parked = 0;
    ls_status st = request_new(&r, &c->lim, pb, err);
    if (st != LS_OK) {
        note_refused(c, pb, st, err->msg);
        return st;
    }
    if ((st = adapter_service_attach(&c->svc, r, &parked, err)) == LS_OK && !parked)
        st = scheduler_submit(&c->sched, r, err);
    if (st != LS_OK) {
        note_refused(c, pb, st, err->msg);
        adapter_service_detach(r);
        request_free(r);
        return st;
    }
    if (!r->id[0]) snprintf(r->id, sizeof r->id, "req-%llu", (unsigned long long)++c->stats.ids);
    r->call = call;
    r->streaming = streaming;
    r->deadline_ms = deadline_ms;
    r->t_arrival_ns = clock_now_ns();
    server_call_set_user(call, r);
    metrics_prompt(c->met, r->n_prompt);
    LOG_I("request %s admitted: adapter=%s prompt_tokens=%d max_new_tokens=%d stream=%d%s", r->id, adapter_label(r),
          r->n_prompt, r->max_new_tokens, streaming, parked ? " (waiting for its adapter)" : "");
    return LS_OK;
}

static void on_cancel(void *ctx, server_call *call)
{
    request *r = server_call_user(call);
    if (r) r->cancelled = 1;
}

/* Fills msg with what r has not sent yet: its new ids and text[text_sent .. ready), where ready is the
 * end of the text that is final (text[ready] must be NUL while msg is in use). */
static void fill_delta(request *r, size_t ready, Loraserve__V1__GenerateResponse *msg)
{
    int from = r->streaming ? r->tokens_sent : 0;
    msg->request_id = r->id;
    msg->n_token_ids = (size_t)(request_generated(r) - from);
    msg->token_ids = r->tokens + r->n_prompt + from;
    msg->text = r->text + (r->streaming ? r->text_sent : 0);
    r->tokens_sent = request_generated(r);
    r->text_sent = ready;
}

static void send_delta(request *r)
{
    Loraserve__V1__GenerateResponse msg = LORASERVE__V1__GENERATE_RESPONSE__INIT;
    size_t ready = request_text_ready(r);
    if (r->tokens_sent == request_generated(r) && ready == r->text_sent) return;
    char saved = r->text[ready];
    r->text[ready] = 0;         // holds back a tail that may still become a stop string
    fill_delta(r, ready, &msg);
    server_call_send(r->call, &msg);
    r->text[ready] = saved;
}

/* The request's one "finished" log line: grep-able key=value pairs. */
static void log_finish(const request *r, ls_status status, const char *why, int64_t t)
{
    if (status != LS_OK) {
        LOG_I("request %s finished: status=%s adapter=%s prompt_tokens=%d completion_tokens=%d total_s=%.3f why=\"%s\"",
              r->id, ls_status_name(status), adapter_label(r), r->n_prompt, request_generated(r),
              secs(r->t_arrival_ns, t), why ? why : "");
        return;
    }
    LOG_I("request %s finished: status=OK finish=%s adapter=%s prompt_tokens=%d completion_tokens=%d queue_s=%.3f "
          "ttft_s=%.3f total_s=%.3f", r->id, finish_name(r->finish), adapter_label(r), r->n_prompt,
          request_generated(r), secs(r->t_arrival_ns, r->t_scheduled_ns), secs(r->t_arrival_ns, r->t_first_token_ns),
          secs(r->t_arrival_ns, t));
}

static void finish_request(coordinator *c, request *r, ls_status status, const char *why)
{
    scheduler_remove(&c->sched, r);
    adapter_service_detach(r);
    ls_status final = r->cancelled ? LS_CANCELLED : status;
    metrics_request_done(c->met, final);
    log_finish(r, final, r->cancelled ? "cancelled by the client" : why, clock_now_ns());
    if (r->cancelled) {
        server_call_finish(r->call, NULL, LS_CANCELLED, "cancelled");
    } else if (status != LS_OK) {
        server_call_finish(r->call, NULL, status, why);
        c->stats.requests_failed++;
    } else {
        int64_t t = clock_now_ns();
        Loraserve__V1__GenerateResponse msg = LORASERVE__V1__GENERATE_RESPONSE__INIT;
        fill_delta(r, r->text_len, &msg);
        msg.finish_reason = r->finish;
        msg.prompt_tokens = (uint32_t)r->n_prompt;
        msg.completion_tokens = (uint32_t)request_generated(r);
        msg.queue_time_s = secs(r->t_arrival_ns, r->t_scheduled_ns);
        msg.first_token_time_s = secs(r->t_arrival_ns, r->t_first_token_ns);
        msg.total_time_s = secs(r->t_arrival_ns, t);
        server_call_finish(r->call, &msg, LS_OK, NULL);
        c->stats.requests_ok++;
    }
    request_free(r);
}

/* Requests whose client went away: dropped between steps, their pages back in the pool. */
static void reap_cancelled(coordinator *c)
{
    req_queue *qs[] = { &c->sched.running, &c->sched.waiting };
    for (int i = 0; i < 2; i++)
        for (request *r = qs[i]->head, *next; r; r = next) {
            next = r->next;
            if (r->cancelled) finish_request(c, r, LS_CANCELLED, "cancelled");
        }
}

/* A parked request's adapter is settled: queue it, or finish it with the error. */
static void on_adapter_ready(void *ctx, request *r, ls_status st, const char *why)
{
    coordinator *c = ctx;
    ls_error err = { 0 };
    if (st == LS_OK && scheduler_submit(&c->sched, r, &err) == LS_OK) return;
    finish_request(c, r, st == LS_OK ? err.code : st, st == LS_OK ? err.msg : why);
}

static ls_status on_admin(void *ctx, server_call *call, server_admin_method m, const ProtobufCMessage *req,
                          ls_error *err)
{
    coordinator *c = ctx;
    if (c->loading) return ls_fail(err, LS_UNAVAILABLE, "model is loading");
    return adapter_service_admin(&c->svc, call, m, req, err);
}

static void fail_all(coordinator *c, ls_status status, const char *why)
{
    adapter_service_fail_all(&c->svc, on_adapter_ready, c, status, why);
    while (c->sched.running.head) finish_request(c, c->sched.running.head, status, why);
    while (c->sched.waiting.head) finish_request(c, c->sched.waiting.head, status, why);
}

/* Before scheduler_step_done: whether every sequence of the step only brings back the token it generated
 * last. A prompt's final token, even alone in its chunk, is prefill: nothing is generated yet. */
static int step_decode_only(const scheduler *s)
{
    for (int i = 0; i < s->n_step; i++) {
        const request *r = s->step[i];
        if (s->step_chunk[i] != 1 || r->n_cached + 1 != r->n_tokens || request_generated(r) == 0) return 0;
    }
    return 1;
}

static void apply_results(coordinator *c, const int32_t *ids)
{
    scheduler *s = &c->sched;
    int64_t t = clock_now_ns();
    int64_t took = t - c->step_started_ns;
    metrics_step(c->met, s->n_step, c->plan.h.n_tokens, step_decode_only(s), took / 1e9);
    scheduler_step_done(s);
    c->stats.steps++;
    c->step_longest_ns = took > c->step_longest_ns ? took : c->step_longest_ns - c->step_longest_ns / 64;
    for (int i = 0, k = 0; i < s->n_step; i++) {
        request *r = s->step[i];
        if (!r->t_scheduled_ns) r->t_scheduled_ns = t;
        if (r->n_cached < r->n_tokens) continue;         // a prefill chunk that did not reach the end
        LS_ASSERT(k < c->plan.h.n_sample);
        int32_t id = ids[k++];
        if (!r->t_first_token_ns) {
            r->t_first_token_ns = t;
            metrics_first_token(c->met, secs(r->t_arrival_ns, t));
        } else {
            metrics_next_token(c->met, secs(r->t_last_token_ns, t));
        }
        r->t_last_token_ns = t;
        c->stats.tokens_generated++;
        r->finish = request_append(r, &c->lim, id);
        if (r->cancelled) continue;
        if (r->finish != LORASERVE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) finish_request(c, r, LS_OK, NULL);
        else if (r->streaming) r->delta_due = 1;
    }
}

/* Streams the ids of the step just applied. It runs after the next step has been sent, so the gRPC work
 * (a message per streaming request per step) overlaps the workers' compute instead of delaying it. A
 * request preempted meanwhile keeps its ids until it runs again or finishes (the final message carries
 * whatever was not streamed). */
static void flush_deltas(coordinator *c)
{
    for (request *r = c->sched.running.head; r; r = r->next)
        if (r->delta_due) {
            r->delta_due = 0;
            if (!r->cancelled) send_delta(r);
        }
}

static void start_step(coordinator *c)
{
    if (scheduler_build(&c->sched, &c->plan, c->stats.steps + 1) == 0) return;
    channel_tokens_post(c->ch, c->plan.h.n_sample);
    channel_send_plan(c->ch, &c->plan);
    c->in_flight = 1;
    c->step_started_ns = clock_now_ns();
}

/* Sets c->lost when a worker rank has exited or the step in flight is overdue; returns 1 then. */
static int workers_lost(coordinator *c)
{
    int64_t t = clock_now_ns();
    if (t < c->next_watch_ns) return 0;
    c->next_watch_ns = t + WATCH_EVERY_NS;
    int rank = channel_peer_lost(c->ch);
    int64_t waited = c->in_flight ? t - c->step_started_ns : 0;
    int64_t stall = 4 * c->step_longest_ns > DRAIN_STALL_NS ? 4 * c->step_longest_ns : DRAIN_STALL_NS;
    if (rank)
        snprintf(c->lost, sizeof c->lost, "worker rank %d has exited", rank);
    else if (c->in_flight && c->o->step_timeout_s > 0 && waited > (int64_t)(c->o->step_timeout_s * 1e9))
        snprintf(c->lost, sizeof c->lost, "the workers did not answer a step for %.1f s", waited / 1e9);
    else if (c->in_flight && c->stop_ns && t - c->stop_ns > stall && waited > stall)
        snprintf(c->lost, sizeof c->lost, "the workers did not finish the step in flight after the stop signal");
    else
        return 0;
    LOG_E("%s: answering every call UNAVAILABLE and ending the job", c->lost);
    return 1;
}

static void write_port_file(const char *path, int port)
{
    if (!path || !path[0]) return;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        LOG_W("cannot write the port file %s", path);
}

/* One turn of the loop; returns 0 when the loop should end. */
static int loop_once(coordinator *c, volatile sig_atomic_t *stop, int64_t *grace_end)
{
    if (workers_lost(c)) return 0;
    if (*stop && !c->draining) {
        c->stop_ns = clock_now_ns();
        LOG_I("stopping: draining %d running and %d waiting requests", c->sched.running.n, c->sched.waiting.n);
        c->draining = 1;
        server_drain(c->srv);
        *grace_end = clock_now_ns() + (int64_t)(c->o->shutdown_grace_s * 1e9);
    }
    int idle = scheduler_idle(&c->sched) && !adapter_service_busy(&c->svc);
    if (c->draining && !c->in_flight && (idle || clock_now_ns() >= *grace_end)) return 0;
    server_poll(c->srv, c->in_flight || !idle ? 0 : 50);
    if (c->in_flight) {
        const int32_t *ids;
        if (!channel_tokens_test(c->ch, &ids)) {
            const struct timespec nap = { 0, 50000 };
            nanosleep(&nap, NULL);
            return 1;
        }
        c->in_flight = 0;
        int32_t read_us, copy_us;
        channel_tokens_adapter_us(c->ch, &read_us, &copy_us);
        metrics_adapter_times(c->met, read_us / 1e6, copy_us / 1e6);
        apply_results(c, ids);
    }
    reap_cancelled(c);
    adapter_service_run(&c->svc, on_adapter_ready, c);
    // Past the grace no new step starts: under steady load a step is always in flight, so the check
    // above would otherwise never see a gap and the grace would not bound the drain.
    if (!c->draining || clock_now_ns() < *grace_end) start_step(c);
    flush_deltas(c);
    return 1;
}

/* The workers are gone: health turns NOT_SERVING, every call is answered UNAVAILABLE, and the answers
 * get a moment to leave before the caller aborts the job. */
static void answer_lost(coordinator *c)
{
    server_drain(c->srv);
    fail_all(c, LS_UNAVAILABLE, c->lost);
    int64_t end = clock_now_ns() + DRAIN_STALL_NS;
    while (server_live_calls(c->srv) > 0 && clock_now_ns() < end) server_poll(c->srv, 10);
}

/* Called from inside a blocking channel wait (a plan broadcast, an adapter command's reports) that has
 * lasted a while: a dead worker, the step timeout, or the stop signal with the wait still stuck make it
 * hopeless. The loop cannot be resumed from here, so answer everyone and end the job. */
static void on_long_wait(void *ctx, double waited_s)
{
    coordinator *c = ctx;
    int64_t t = clock_now_ns();
    if (*c->stop && !c->stop_ns) c->stop_ns = t;
    int rank = channel_peer_lost(c->ch);
    if (rank)
        snprintf(c->lost, sizeof c->lost, "worker rank %d has exited", rank);
    else if (c->o->step_timeout_s > 0 && waited_s > c->o->step_timeout_s)
        snprintf(c->lost, sizeof c->lost, "the workers did not answer for %.1f s", waited_s);
    else if (c->stop_ns && t - c->stop_ns > DRAIN_STALL_NS && waited_s * 1e9 > DRAIN_STALL_NS)
        snprintf(c->lost, sizeof c->lost, "the workers did not answer after the stop signal");
    else
        return;
    LOG_E("%s (during a wait on the workers): answering every call UNAVAILABLE and ending the job", c->lost);
    answer_lost(c);
    MPI_Abort(c->ch->world, COORDINATOR_EXIT_WORKERS_LOST);
}

static void log_totals(const coordinator *c)
{
    LOG_I("served %llu requests (%llu failed), %llu tokens in %llu steps, %llu preemptions; adapters: %d "
          "registered, %llu loads, %llu evictions, %.1f MiB copied",
          (unsigned long long)c->stats.requests_ok, (unsigned long long)c->stats.requests_failed,
          (unsigned long long)c->stats.tokens_generated, (unsigned long long)c->stats.steps,
          (unsigned long long)c->sched.preemptions, c->sched.adapters.n, (unsigned long long)c->sched.adapters.loads,
          (unsigned long long)c->sched.adapters.evictions, (double)c->sched.adapters.rows_bytes_copied / (1 << 20));
}

/* Start-up, inside the handshake's waits: answer health and refuse calls until the workers report. A
 * stop only drains the port here (the loaded workers are stopped by the run that follows, which sees
 * the flag at once), because a load in progress on the workers cannot be interrupted. */
static void on_loading_idle(void *ctx)
{
    coordinator *c = ctx;
    server_poll(c->srv, 0);
    if (!*c->stop || c->stop_ns) return;
    c->stop_ns = clock_now_ns();
    LOG_I("stop signal while the workers load the model: stopping once they have reported");
    server_drain(c->srv);
}

/* Start-up waits can be as long as a model load, so only a dead worker ends them early; the step
 * timeout does not apply. */
static void on_loading_watch(void *ctx, double waited_s)
{
    coordinator *c = ctx;
    int rank = channel_peer_lost(c->ch);
    if (!rank) return;
    LOG_E("worker rank %d exited during start-up (%.1f s into a wait for the workers' reports): ending the job",
          rank, waited_s);
    MPI_Abort(c->ch->world, COORDINATOR_EXIT_WORKERS_LOST);
}

/* "loraserve: listening on HOST:PORT" on stdout: scripts and operators wait for this line. */
static void announce(const coordinator *c)
{
    const char *addr = c->o->server.listen_addr, *colon = strrchr(addr, ':');
    int host_len = colon ? (int)(colon - addr) : (int)strlen(addr);
    write_port_file(c->o->port_file, server_port(c->srv));
    printf("loraserve: listening on %.*s:%d\n", host_len, addr, server_port(c->srv));
    fflush(stdout);
}

coordinator *coordinator_open(const coordinator_opts *o, const model_config *mc, const tokenizer *tok, channel *ch,
                              volatile sig_atomic_t *stop, ls_error *err)
{
    coordinator *c = ls_xcalloc(1, sizeof *c);
    *c = (coordinator){ .o = o, .mc = mc, .ch = ch, .stop = stop, .loading = 1 };
    c->lim = (request_limits){ .model = mc, .tok = tok, .vocab_size = mc->vocab_size,
                               .default_max_new_tokens = o->default_max_new_tokens };
    server_hooks hooks = { .ctx = c, .on_request = on_request, .on_cancel = on_cancel, .on_admin = on_admin };
    if (metrics_create(&c->met, o->metrics_listen, err) != LS_OK ||
        server_create(&c->srv, &o->server, &hooks, err) != LS_OK)
        goto fail;
    announce(c);
    channel_idle(on_loading_idle, c);
    channel_watch(on_loading_watch, c);
    return c;
fail:
    metrics_free(c->met);
    free(c);
    return NULL;
}

static void coordinator_free(coordinator *c)
{
    channel_idle(NULL, NULL);
    channel_watch(NULL, NULL);
    server_destroy(c->srv);
    metrics_free(c->met);
    free(c);
}

void coordinator_close(coordinator *c)
{
    if (!c) return;
    LOG_I("start-up failed: closing port %d without having served", server_port(c->srv));
    coordinator_free(c);
}

/* Runs the loop until the stop or a lost worker; the server is still to be destroyed. */
static int serve(coordinator *c)
{
    metrics_publish(c->met, &c->sched, 1);     // the pool's gauges are right from the first scrape
    server_set_serving(c->srv, 1);
    channel_watch(on_long_wait, c);
    int64_t grace_end = 0;
    while (loop_once(c, c->stop, &grace_end)) metrics_publish(c->met, &c->sched, 0);
    if (c->lost[0]) answer_lost(c);
    else fail_all(c, LS_UNAVAILABLE, "server is shutting down");
    metrics_publish(c->met, &c->sched, 1);
    channel_watch(NULL, NULL);
    return c->lost[0] ? COORDINATOR_EXIT_WORKERS_LOST : 0;
}

int coordinator_run(coordinator *c, int n_pages)
{
    const coordinator_opts *o = c->o;
    scheduler_opts so = o->sched;
    so.n_pages = n_pages;
    // Engine calls may now reach the hooks: from here on channel waits (plan broadcasts) must not poll.
    channel_idle(NULL, NULL);
    scheduler_init(&c->sched, &so, lora_page_floats(c->mc, o->adapters.tp_size, so.page_tokens) * sizeof(float));
    adapter_service_init(&c->svc, &o->adapters, c->mc, &c->sched, c->ch);
    plan_init(&c->plan);
    c->loading = 0;
    int rc = serve(c);
    server_destroy(c->srv);
    c->srv = NULL;
    log_totals(c);
    if (rc != COORDINATOR_EXIT_WORKERS_LOST) {   // a lost worker would never take the last plan
        plan_reset(&c->plan, PLAN_SHUTDOWN, 0);
        channel_send_plan(c->ch, &c->plan);
    }
    plan_free(&c->plan);
    adapter_service_free(&c->svc);
    scheduler_free(&c->sched);
    coordinator_free(c);
    return rc;
}
