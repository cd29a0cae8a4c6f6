/* The gRPC front end (coordinator/server*.c, health.c) behind a toy engine, served on 127.0.0.1:0 for
 * test_server.py, which drives it with grpcio as an independent client. The engine behaves like the real
 * one where the contract matters: it runs on the polling thread, emits one token per tick, learns of
 * cancels through on_cancel and finishes the call only at its next tick.
 *
 * The adapter field picks the behaviour:
 *   ""           echo prompt_token_ids (stream: one per tick, the last with the finish; unary: all at once)
 *   "hold"       stream the ids, then never finish until cancelled
 *   "reject"     refused in on_request with NOT_FOUND
 *   "fail"       stream the ids, then finish with RESOURCE_EXHAUSTED
 *   "burst"      stream: all ids in one tick, one 1 KiB message each, so that the server's send queue fills
 *   "ctl:<cmd>"  unary control, answered inside on_request: serving, not_serving, drain, stats
 * The Adapters methods (on_admin) cover the three ways to answer:
 *   ListAdapters    answered inside the hook: two fake adapters, "alpha" and "beta"
 *   LoadAdapter     answered at the next tick: the adapter's info echoing the name; "missing" gets
 *                   NOT_FOUND then, "hold" is never answered until cancelled
 *   UnloadAdapter   answered inside the hook with an empty response; "busy" is refused by the hook with
 *                   FAILED_PRECONDITION
 * Prints "port N" on stdout once listening; SIGTERM destroys the server with calls in flight and exits 0
 * only if every call the engine held was cancelled through on_cancel. With --bad-addr it only checks that
 * server_create reports a listen failure; with --no-admin it serves without on_admin. */
#include <grpc/grpc.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "coordinator/server.h"

#define TICK_MS 2

typedef enum job_mode { JOB_ECHO, JOB_HOLD, JOB_FAIL, JOB_BURST, JOB_LOAD, JOB_LOAD_HOLD } job_mode;

typedef struct job {
    struct job *next;
    server_call *call;
    job_mode mode;
    int streaming;
    int cancelled;          // on_cancel was called
    size_t n_ids, sent;     // prompt ids to echo, ids sent so far
    int32_t *ids;           // owned
    char *request_id;       // owned; a LoadAdapter's adapter name
} job;

typedef struct engine {
    server *s;
    job *jobs;
    int n_jobs;
    int accepted, cancels, finished;
    int64_t last_deadline_left_ms;      // of the last non-control request; -1 = none set
} engine;

static volatile sig_atomic_t got_sigterm;

static void on_sigterm(int sig) { got_sigterm = sig; }

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void job_free(job *j)
{
    free(j->ids);
    free(j->request_id);
    free(j);
}

static void engine_finish(engine *e, job *j, const Loraserve__V1__GenerateResponse *last, ls_status st,
                          const char *msg)
{
    server_call_finish(j->call, last, st, msg);
    e->finished++;
}

static ls_status engine_control(engine *e, server_call *call, const char *cmd, ls_error *err)
{
    char text[256];
    if (strcmp(cmd, "serving") == 0) server_set_serving(e->s, 1);
    else if (strcmp(cmd, "not_serving") == 0) server_set_serving(e->s, 0);
    else if (strcmp(cmd, "drain") == 0) server_drain(e->s);
    else if (strcmp(cmd, "stats") != 0) return ls_fail(err, LS_INVALID_ARGUMENT, "unknown control %s", cmd);
    // live excludes this control call itself.
    snprintf(text, sizeof text, "accepted=%d cancels=%d finished=%d jobs=%d live=%d deadline_left_ms=%" PRId64,
             e->accepted, e->cancels, e->finished, e->n_jobs, server_live_calls(e->s) - 1,
             e->last_deadline_left_ms);
    Loraserve__V1__GenerateResponse rsp = LORASERVE__V1__GENERATE_RESPONSE__INIT;
    rsp.text = text;
    server_call_finish(call, &rsp, LS_OK, NULL);    // finishing inside the hook is allowed
    return LS_OK;
}

static ls_status engine_on_request(void *ctx, server_call *call, const Loraserve__V1__GenerateRequest *req,
                                   int streaming, int64_t deadline_ms, ls_error *err)
{
    engine *e = ctx;
    if (strncmp(req->adapter, "ctl:", 4) == 0) return engine_control(e, call, req->adapter + 4, err);
    if (strcmp(req->adapter, "reject") == 0) return ls_fail(err, LS_NOT_FOUND, "adapter 'reject' not found");
    e->last_deadline_left_ms = deadline_ms == INT64_MAX ? -1 : deadline_ms - now_ms();
    job *j = calloc(1, sizeof *j);
    int32_t *ids = malloc((req->n_prompt_token_ids + 1) * sizeof *ids);
    char *rid = strdup(req->request_id);
    if (!j || !ids || !rid) {
        free(j), free(ids), free(rid);
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "test engine out of memory");
    }
    memcpy(ids, req->prompt_token_ids, req->n_prompt_token_ids * sizeof *ids);
    *j = (job){ .next = e->jobs, .call = call, .streaming = streaming, .n_ids = req->n_prompt_token_ids,
                .ids = ids, .request_id = rid };
    j->mode = strcmp(req->adapter, "hold") == 0 ? JOB_HOLD : strcmp(req->adapter, "fail") == 0 ? JOB_FAIL
            : strcmp(req->adapter, "burst") == 0 ? JOB_BURST : JOB_ECHO;
    server_call_set_user(call, j);
    e->jobs = j;
    e->n_jobs++;
    e->accepted++;
    return LS_OK;
}

static void engine_on_cancel(void *ctx, server_call *call)
{
    engine *e = ctx;
    job *j = server_call_user(call);
    j->cancelled = 1;
    e->cancels++;
}

static job *job_new(engine *e, server_call *call, job_mode mode, const char *request_id)
{
    job *j = calloc(1, sizeof *j);
    char *rid = strdup(request_id);
    if (!j || !rid) {
        free(j), free(rid);
        return NULL;
    }
    *j = (job){ .next = e->jobs, .call = call, .mode = mode, .request_id = rid };
    server_call_set_user(call, j);
    e->jobs = j;
    e->n_jobs++;
    e->accepted++;
    return j;
}

static void fake_info(Loraserve__V1__AdapterInfo *info, char *name, uint32_t rank, char **mods, size_t n_mods)
{
    info->name = name;
    info->max_rank = rank;
    info->target_modules = mods, info->n_target_modules = n_mods;
}

/* Answered inside the hook, as the contract allows. loads is past 2^32 to check 64-bit encoding. */
static ls_status admin_list(engine *e, server_call *call)
{
    char alpha[] = "alpha", beta[] = "beta", q[] = "q_proj", v[] = "v_proj", o[] = "o_proj";
    char *mods_a[] = { q, v }, *mods_b[] = { q, v, o };
    Loraserve__V1__AdapterInfo info[2] = { LORASERVE__V1__ADAPTER_INFO__INIT, LORASERVE__V1__ADAPTER_INFO__INIT };
    fake_info(&info[0], alpha, 8, mods_a, 2);
    info[0].resident = 1, info[0].pages = 12, info[0].loads = 5000000000ull;
    fake_info(&info[1], beta, 16, mods_b, 3);
    info[1].pages = 24, info[1].active_requests = 2, info[1].loads = 1;
    Loraserve__V1__AdapterInfo *list[2] = { &info[0], &info[1] };
    Loraserve__V1__ListAdaptersResponse rsp = LORASERVE__V1__LIST_ADAPTERS_RESPONSE__INIT;
    rsp.adapters = list, rsp.n_adapters = 2;
    e->accepted++;
    server_call_finish_msg(call, &rsp.base, LS_OK, NULL);
    e->finished++;
    return LS_OK;
}

/* Like the real engine, a load is answered after a step (it needs the worker ranks). */
static ls_status admin_load(engine *e, server_call *call, const Loraserve__V1__LoadAdapterRequest *req,
                            ls_error *err)
{
    job_mode mode = strcmp(req->name, "hold") == 0 ? JOB_LOAD_HOLD : JOB_LOAD;
    if (!job_new(e, call, mode, req->name)) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "test engine out of memory");
    return LS_OK;
}

/* The refusal comes from the hook; a success is answered inside it with no message (an empty one). */
static ls_status admin_unload(engine *e, server_call *call, const Loraserve__V1__UnloadAdapterRequest *req,
                              ls_error *err)
{
    if (strcmp(req->name, "busy") == 0)
        return ls_fail(err, LS_FAILED_PRECONDITION, "adapter 'busy' is used by 2 requests");
    e->accepted++;
    server_call_finish_msg(call, NULL, LS_OK, NULL);
    e->finished++;
    return LS_OK;
}

static ls_status engine_on_admin(void *ctx, server_call *call, server_admin_method m, const ProtobufCMessage *req,
                                 ls_error *err)
{
    engine *e = ctx;
    switch (m) {
    case SERVER_ADMIN_LIST:
        LS_ASSERT(req->descriptor == &loraserve__v1__list_adapters_request__descriptor);
        return admin_list(e, call);
    case SERVER_ADMIN_LOAD:
        LS_ASSERT(req->descriptor == &loraserve__v1__load_adapter_request__descriptor);
        return admin_load(e, call, (const Loraserve__V1__LoadAdapterRequest *)req, err);
    case SERVER_ADMIN_UNLOAD:
        LS_ASSERT(req->descriptor == &loraserve__v1__unload_adapter_request__descriptor);
        return admin_unload(e, call, (const Loraserve__V1__UnloadAdapterRequest *)req, err);
    }
    return ls_fail(err, LS_INTERNAL, "unknown admin method %d", (int)m);
}

/* LoadAdapter at its first tick: "missing" fails, "hold" waits for its cancel, others echo the name. */
static int job_step_load(engine *e, job *j)
{
    if (j->mode == JOB_LOAD_HOLD) return 0;
    if (strcmp(j->request_id, "missing") == 0) {
        server_call_finish_msg(j->call, NULL, LS_NOT_FOUND, "adapter 'missing' not found");
    } else {
        char q[] = "q_proj";
        char *mods[] = { q };
        Loraserve__V1__AdapterInfo info = LORASERVE__V1__ADAPTER_INFO__INIT;
        fake_info(&info, j->request_id, 4, mods, 1);
        info.resident = 1, info.pages = 3, info.loads = 1;
        Loraserve__V1__LoadAdapterResponse rsp = LORASERVE__V1__LOAD_ADAPTER_RESPONSE__INIT;
        rsp.adapter = &info;
        server_call_finish_msg(j->call, &rsp.base, LS_OK, NULL);
    }
    e->finished++;
    return 1;
}

/* Unary: answer everything at the first tick (hold waits for its cancel). */
static int job_step_unary(engine *e, job *j, Loraserve__V1__GenerateResponse *rsp)
{
    if (j->mode == JOB_HOLD) return 0;
    if (j->mode == JOB_FAIL) {
        engine_finish(e, j, NULL, LS_RESOURCE_EXHAUSTED, "kv cache full");
        return 1;
    }
    rsp->n_token_ids = j->n_ids, rsp->token_ids = j->ids;
    rsp->finish_reason = LORASERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    engine_finish(e, j, rsp, LS_OK, NULL);
    return 1;
}

/* Stream: one id per tick (burst: all in the first). Echo and burst send the last id with the finish;
 * hold and fail carry on after the ids. */
static int job_step_stream(engine *e, job *j, Loraserve__V1__GenerateResponse *rsp)
{
    size_t left = j->n_ids - j->sent;
    if (left == 0 && j->mode == JOB_HOLD) return 0;
    if (left == 0 && j->mode == JOB_FAIL) {
        engine_finish(e, j, NULL, LS_RESOURCE_EXHAUSTED, "kv cache full");
        return 1;
    }
    char pad[1025];     // burst messages are padded so that they outrun HTTP/2 flow control and queue up
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    if (j->mode == JOB_BURST) rsp->text = pad;
    rsp->token_ids = j->ids + j->sent;
    for (; j->mode == JOB_BURST && left > 1; left--, rsp->token_ids++, j->sent++) {
        rsp->n_token_ids = 1;
        server_call_send(j->call, rsp);
    }
    rsp->n_token_ids = left ? 1 : 0;
    j->sent += rsp->n_token_ids;
    if (left <= 1 && (j->mode == JOB_ECHO || j->mode == JOB_BURST)) {
        rsp->finish_reason = LORASERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH;
        rsp->completion_tokens = (uint32_t)j->n_ids;
        engine_finish(e, j, rsp, LS_OK, NULL);
        return 1;
    }
    server_call_send(j->call, rsp);
    return 0;
}

/* One step of a job; returns 1 when the job is finished. */
static int job_step(engine *e, job *j)
{
    Loraserve__V1__GenerateResponse rsp = LORASERVE__V1__GENERATE_RESPONSE__INIT;
    rsp.request_id = j->request_id;
    if (j->cancelled) {
        engine_finish(e, j, NULL, LS_CANCELLED, "cancelled");
        return 1;
    }
    if (j->mode == JOB_LOAD || j->mode == JOB_LOAD_HOLD) return job_step_load(e, j);
    return j->streaming ? job_step_stream(e, j, &rsp) : job_step_unary(e, j, &rsp);
}

static void engine_tick(engine *e)
{
    for (job **pp = &e->jobs; *pp;) {
        job *j = *pp;
        if (job_step(e, j)) {
            *pp = j->next;
            job_free(j);
            e->n_jobs--;
        } else {
            pp = &j->next;
        }
    }
}

/* After server_destroy: every job left must have been told of the cancel; finishing frees the memory. */
static int engine_release_all(engine *e)
{
    int uncancelled = 0;
    while (e->jobs) {
        job *j = e->jobs;
        e->jobs = j->next;
        uncancelled += !j->cancelled || !server_call_cancelled(j->call);
        engine_finish(e, j, NULL, LS_CANCELLED, "server stopped");
        job_free(j);
    }
    e->n_jobs = 0;
    return uncancelled;
}

static int check_bad_addr(void)
{
    server_opts opts = { .listen_addr = "unix:/nonexistent-loraserve-dir/sock" };
    server_hooks hooks = { .on_request = engine_on_request, .on_cancel = engine_on_cancel };
    server *s = NULL;
    ls_error err = { 0 };
    ls_status st = server_create(&s, &opts, &hooks, &err);
    fprintf(stderr, "bad address: %s: %s\n", ls_status_name(st), err.msg);
    return st == LS_UNAVAILABLE && s == NULL ? 0 : 1;
}

static int serve(int admin)
{
    engine e = { .last_deadline_left_ms = -1 };
    server_opts opts = { .listen_addr = "127.0.0.1:0", .max_receive_bytes = 64 * 1024,
                         .max_concurrent_streams = 100 };
    server_hooks hooks = { .ctx = &e, .on_request = engine_on_request, .on_cancel = engine_on_cancel,
                           .on_admin = admin ? engine_on_admin : NULL };
    ls_error err = { 0 };
    if (server_create(&e.s, &opts, &hooks, &err) != LS_OK) {
        fprintf(stderr, "server_create: %s\n", err.msg);
        return 1;
    }
    server_set_serving(e.s, 1);
    printf("port %d\n", server_port(e.s));
    fflush(stdout);
    int64_t next_tick = now_ms() + TICK_MS;
    while (!got_sigterm) {
        int64_t wait = next_tick - now_ms();
        server_poll(e.s, wait > 0 ? (int)wait : 0);
        if (now_ms() >= next_tick) {
            engine_tick(&e);
            next_tick = now_ms() + TICK_MS;
        }
    }
    int in_flight = e.n_jobs;
    server_destroy(e.s);
    int uncancelled = engine_release_all(&e);
    fprintf(stderr, "stopped: %d jobs in flight at SIGTERM, %d not cancelled; accepted=%d cancels=%d finished=%d\n",
            in_flight, uncancelled, e.accepted, e.cancels, e.finished);
    return uncancelled || e.finished != e.accepted ? 2 : 0;
}

int main(int argc, char **argv)
{
    log_init(-1, LOG_WARN);
    struct sigaction sa = { .sa_handler = on_sigterm };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    grpc_init();
    const char *opt = argc > 1 ? argv[1] : "";
    int rc = strcmp(opt, "--bad-addr") == 0 ? check_bad_addr() : serve(strcmp(opt, "--no-admin") != 0);
    grpc_shutdown();
    return rc;
}
