/* The coordinator's loop (see coordinator.h): gRPC events -> requests -> step plans -> sampled ids ->
 * responses. */
#include "coordinator/coordinator.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

typedef struct coordinator {
    const coordinator_opts *o;
    request_limits lim;
    server *srv;
    channel *ch;
    scheduler sched;
    adapter_service svc;
    plan plan;
    int in_flight;
    int draining;
    coordinator_stats stats;
} coordinator;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double secs(int64_t from, int64_t to) { return from && to ? (double)(to - from) / 1e9 : 0; }

static ls_status on_request(void *ctx, server_call *call, const Loraserve__V1__GenerateRequest *pb, int streaming,
                            int64_t deadline_ms, ls_error *err)
{
    coordinator *c = ctx;      // the server itself refuses calls while draining or already past deadline
    request *r;
    int parked = 0;
    ls_status st = request_new(&r, &c->lim, pb, err);
    if (st != LS_OK) return st;
    if ((st = adapter_service_attach(&c->svc, r, &parked, err)) == LS_OK && !parked)
        st = scheduler_submit(&c->sched, r, err);
    if (st != LS_OK) {
        adapter_service_detach(r);
        request_free(r);
        return st;
    }
    if (!r->id[0]) snprintf(r->id, sizeof r->id, "req-%llu", (unsigned long long)++c->stats.ids);
    r->call = call;
    r->streaming = streaming;
    r->deadline_ms = deadline_ms;
    r->t_arrival_ns = now_ns();
    server_call_set_user(call, r);
    LOG_D("request %s: %d prompt tokens, max_new_tokens %d", r->id, r->n_prompt, r->max_new_tokens);
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

static void finish_request(coordinator *c, request *r, ls_status status, const char *why)
{
    scheduler_remove(&c->sched, r);
    adapter_service_detach(r);
    if (r->cancelled) {
        server_call_finish(r->call, NULL, LS_CANCELLED, "cancelled");
    } else if (status != LS_OK) {
        server_call_finish(r->call, NULL, status, why);
        c->stats.requests_failed++;
    } else {
        int64_t t = now_ns();
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
    return adapter_service_admin(&((coordinator *)ctx)->svc, call, m, req, err);
}

static void fail_all(coordinator *c, ls_status status, const char *why)
{
    adapter_service_fail_all(&c->svc, on_adapter_ready, c, status, why);
    while (c->sched.running.head) finish_request(c, c->sched.running.head, status, why);
    while (c->sched.waiting.head) finish_request(c, c->sched.waiting.head, status, why);
}

static void apply_results(coordinator *c, const int32_t *ids)
{
    scheduler *s = &c->sched;
    int64_t t = now_ns();
    scheduler_step_done(s);
    c->stats.steps++;
    for (int i = 0, k = 0; i < s->n_step; i++) {
        request *r = s->step[i];
        if (!r->t_scheduled_ns) r->t_scheduled_ns = t;
        if (r->n_cached < r->n_tokens) continue;         // a prefill chunk that did not reach the end
        LS_ASSERT(k < c->plan.h.n_sample);
        int32_t id = ids[k++];
        if (!r->t_first_token_ns) r->t_first_token_ns = t;
        c->stats.tokens_generated++;
        r->finish = request_append(r, &c->lim, id);
        if (r->cancelled) continue;
        if (r->finish != LORASERVE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) finish_request(c, r, LS_OK, NULL);
        else if (r->streaming) send_delta(r);
    }
}

static void start_step(coordinator *c)
{
    if (scheduler_build(&c->sched, &c->plan, c->stats.steps + 1) == 0) return;
    channel_tokens_post(c->ch, c->plan.h.n_sample);
    channel_send_plan(c->ch, &c->plan);
    c->in_flight = 1;
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
    if (*stop && !c->draining) {
        LOG_I("stopping: draining %d running and %d waiting requests", c->sched.running.n, c->sched.waiting.n);
        c->draining = 1;
        server_drain(c->srv);
        *grace_end = now_ns() + (int64_t)(c->o->shutdown_grace_s * 1e9);
    }
    int idle = scheduler_idle(&c->sched) && !adapter_service_busy(&c->svc);
    if (c->draining && !c->in_flight && (idle || now_ns() >= *grace_end)) return 0;
    server_poll(c->srv, c->in_flight || !idle ? 0 : 50);
    if (c->in_flight) {
        const int32_t *ids;
        if (!channel_tokens_test(c->ch, &ids)) {
            const struct timespec nap = { 0, 50000 };
            nanosleep(&nap, NULL);
            return 1;
        }
        c->in_flight = 0;
        apply_results(c, ids);
    }
    reap_cancelled(c);
    adapter_service_run(&c->svc, on_adapter_ready, c);
    start_step(c);
    return 1;
}

int coordinator_run(const coordinator_opts *o, const model_config *mc, const tokenizer *tok, channel *ch,
                    volatile sig_atomic_t *stop)
{
    coordinator c = { .o = o, .ch = ch };
    c.lim = (request_limits){ .model = mc, .tok = tok, .vocab_size = mc->vocab_size,
                              .default_max_new_tokens = o->default_max_new_tokens };
    scheduler_init(&c.sched, &o->sched,
                   lora_page_floats(mc, o->adapters.tp_size, o->sched.page_tokens) * sizeof(float));
    adapter_service_init(&c.svc, &o->adapters, mc, &c.sched, ch);
    plan_init(&c.plan);
    server_hooks hooks = { .ctx = &c, .on_request = on_request, .on_cancel = on_cancel, .on_admin = on_admin };
    ls_error err = { 0 };
    int rc = 0;
    if (server_create(&c.srv, &o->server, &hooks, &err) != LS_OK) {
        LOG_E("cannot serve on %s: %s", o->server.listen_addr, err.msg);
        rc = 1;
    } else {
        write_port_file(o->port_file, server_port(c.srv));
        const char *colon = strrchr(o->server.listen_addr, ':');
        int host_len = colon ? (int)(colon - o->server.listen_addr) : (int)strlen(o->server.listen_addr);
        printf("loraserve: listening on %.*s:%d\n", host_len, o->server.listen_addr, server_port(c.srv));
        fflush(stdout);
        server_set_serving(c.srv, 1);
        int64_t grace_end = 0;
        while (loop_once(&c, stop, &grace_end)) {}
        fail_all(&c, LS_UNAVAILABLE, "server is shutting down");
        server_destroy(c.srv);
        LOG_I("served %llu requests (%llu failed), %llu tokens in %llu steps, %llu preemptions; adapters: %d "
              "registered, %llu loads, %llu evictions, %.1f MiB copied",
              (unsigned long long)c.stats.requests_ok, (unsigned long long)c.stats.requests_failed,
              (unsigned long long)c.stats.tokens_generated, (unsigned long long)c.stats.steps,
              (unsigned long long)c.sched.preemptions, c.sched.adapters.n, (unsigned long long)c.sched.adapters.loads,
              (unsigned long long)c.sched.adapters.evictions, (double)c.sched.adapters.rows_bytes_copied / (1 << 20));
    }
    plan_reset(&c.plan, PLAN_SHUTDOWN, 0);
    channel_send_plan(ch, &c.plan);
    plan_free(&c.plan);
    adapter_service_free(&c.svc);
    scheduler_free(&c.sched);
    return rc;
}
