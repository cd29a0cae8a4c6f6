/* The gRPC front end's server object: listening socket, channel limits, the one completion queue and its
 * dispatch, keeping requests armed, the UNIMPLEMENTED answer for unknown methods, drain and teardown.
 *
 * Why one queue polled by the caller: the coordinator's thread owns all engine state, and C core has no
 * way to wake a queue from another thread, so the loop waits on the queue with a deadline equal to its
 * next scheduler step (server_poll) and every hook runs on that thread. Per-call logic is in
 * server_call.c, adapter management in server_admin.c, the health service in health.c. */
#include "coordinator/server_impl.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

// Requests kept armed per method. A burst beyond this waits inside gRPC until the next poll re-arms,
// so it costs latency, not correctness; Generate gets more because bursts of arrivals are normal, while
// adapter management is an operator's occasional call.
static const int srv_arm_depth[SRV_N_METHODS] = { 16, 16, 2, 2, 2, 2, 2 };

static const char *const srv_method_paths[SRV_N_METHODS] = {
    "/loraserve.v1.Generation/Generate",
    "/loraserve.v1.Generation/GenerateStream",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/loraserve.v1.Adapters/LoadAdapter",
    "/loraserve.v1.Adapters/UnloadAdapter",
    "/loraserve.v1.Adapters/ListAdapters",
};

const char *srv_method_path(srv_method m) { return srv_method_paths[m]; }

// One poll handles at most this many completions, so that a flood of arrivals cannot starve the
// scheduler step that follows it.
#define SRV_POLL_MAX_EVENTS 256

static int srv_arm_one(server *s, srv_method m)
{
    server_call *c = srv_call_new(s, m);
    if (!c) {
        LOG_E("out of memory arming %s", srv_method_paths[m]);
        return -1;
    }
    grpc_call_error e = grpc_server_request_registered_call(s->srv, s->methods[m], &c->call, &c->deadline,
                                                            &c->md, &c->payload, s->cq, s->cq, &c->t_new);
    if (e != GRPC_CALL_OK) {
        LOG_E("grpc_server_request_registered_call(%s): call error %d", srv_method_paths[m], (int)e);
        srv_call_free(c);
        return -1;
    }
    s->armed[m]++;
    return 0;
}

static void srv_unknown_free(srv_unknown *u)
{
    if (u->call) grpc_call_unref(u->call);
    grpc_call_details_destroy(&u->details);
    grpc_metadata_array_destroy(&u->md);
    grpc_slice_unref(u->status_msg);
    free(u);
}

static void srv_arm_unknown(server *s)
{
    srv_unknown *u = calloc(1, sizeof *u);
    if (!u) {
        LOG_E("out of memory arming the unknown-method handler");
        return;
    }
    u->s = s;
    u->t_new = (srv_tag){ SRV_TAG_UNKNOWN_NEW, u };
    u->t_done = (srv_tag){ SRV_TAG_UNKNOWN_DONE, u };
    u->status_msg = grpc_empty_slice();
    grpc_call_details_init(&u->details);
    grpc_metadata_array_init(&u->md);
    grpc_call_error e = grpc_server_request_call(s->srv, &u->call, &u->details, &u->md, s->cq, s->cq, &u->t_new);
    if (e != GRPC_CALL_OK) {
        LOG_E("grpc_server_request_call: call error %d", (int)e);
        srv_unknown_free(u);
        return;
    }
    s->unknown_armed = 1;
}

/* Tops every method up to its depth. Without an armed generic request, calls to unknown methods would
 * hang until their deadline instead of failing fast. */
static void srv_arm(server *s)
{
    if (s->stopping) return;
    for (int m = 0; m < SRV_N_METHODS; m++)
        while (s->armed[m] < srv_arm_depth[m])
            if (srv_arm_one(s, (srv_method)m) != 0) break;
    if (!s->unknown_armed) srv_arm_unknown(s);
}

/* Status, initial metadata and the close in one batch: there is nothing to cancel in between. */
static void srv_unknown_arrived(srv_unknown *u, int ok)
{
    server *s = u->s;
    s->unknown_armed = 0;
    if (!ok || s->stopping) {
        srv_unknown_free(u);
        return;
    }
    char *method = grpc_slice_to_c_string(u->details.method);
    char msg[320];
    snprintf(msg, sizeof msg, "unknown method %.256s", method);
    gpr_free(method);
    u->status_msg = grpc_slice_from_copied_string(msg);
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[1].data.send_status_from_server.status_details = &u->status_msg;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &u->close_cancelled;
    grpc_call_error e = grpc_call_start_batch(u->call, ops, 3, &u->t_done, NULL);
    if (e != GRPC_CALL_OK) LOG_E("grpc_call_start_batch: call error %d", (int)e);
    LS_ASSERT(e == GRPC_CALL_OK);
}

static void srv_dispatch(server *s, const grpc_event *ev)
{
    srv_tag *t = ev->tag;
    switch (t->kind) {
    case SRV_TAG_CALL_NEW: {
        server_call *c = t->obj;
        s->armed[c->method]--;
        srv_call_arrived(c, ev->success);
        srv_arm(s);
        break;
    }
    case SRV_TAG_CALL_CLOSE: srv_call_on_close(t->obj); break;
    case SRV_TAG_CALL_SEND: srv_call_on_send(t->obj, ev->success); break;
    case SRV_TAG_UNKNOWN_NEW:
        srv_unknown_arrived(t->obj, ev->success);
        srv_arm(s);
        break;
    case SRV_TAG_UNKNOWN_DONE: srv_unknown_free(t->obj); break;
    case SRV_TAG_SHUTDOWN: s->shutdown_done = 1; break;
    }
}

void server_poll(server *s, int timeout_ms)
{
    srv_arm(s);     // retries arming that failed for lack of memory
    gpr_timespec dl = gpr_inf_past(GPR_CLOCK_MONOTONIC);
    if (timeout_ms > 0)
        dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    for (int i = 0; i < SRV_POLL_MAX_EVENTS; i++) {
        grpc_event ev = grpc_completion_queue_next(s->cq, dl, NULL);
        if (ev.type != GRPC_OP_COMPLETE) return;
        srv_dispatch(s, &ev);
        dl = gpr_inf_past(GPR_CLOCK_MONOTONIC);   // after the first event take only what is ready
    }
}

int server_port(const server *s) { return s->port; }
int server_live_calls(const server *s) { return s->n_live; }

void server_set_serving(server *s, int serving)
{
    s->serving = serving != 0;
    health_notify(s);
}

void server_drain(server *s)
{
    if (s->draining) return;
    LOG_I("server draining: new calls get UNAVAILABLE, %d calls in flight", s->n_live);
    s->draining = 1;
    health_notify(s);
}

static grpc_arg srv_int_arg(const char *key, int value)
{
    grpc_arg a = { .type = GRPC_ARG_INTEGER, .key = (char *)key };
    a.value.integer = value;
    return a;
}

/* Limits from reliability.md §3: the transport rejects oversized messages before we allocate them,
 * caps streams per connection, notices dead peers and drops connections that never finish the
 * handshake. Non-positive options keep gRPC's defaults. */
static grpc_server *srv_grpc_create(const server_opts *opts)
{
    grpc_arg args[5];
    size_t n = 0;
    if (opts->max_receive_bytes > 0)
        args[n++] = srv_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, opts->max_receive_bytes);
    if (opts->max_concurrent_streams > 0)
        args[n++] = srv_int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, opts->max_concurrent_streams);
    args[n++] = srv_int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
    args[n++] = srv_int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
    args[n++] = srv_int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 20 * 1000);
    grpc_channel_args ca = { .num_args = n, .args = args };
    return grpc_server_create(&ca, NULL);
}

static ls_status srv_listen(server *s, const server_opts *opts, ls_error *err)
{
    for (int m = 0; m < SRV_N_METHODS; m++) {
        s->methods[m] = grpc_server_register_method(s->srv, srv_method_paths[m], NULL,
                                                    GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!s->methods[m]) return ls_fail(err, LS_INTERNAL, "cannot register %s", srv_method_paths[m]);
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    s->port = grpc_server_add_http2_port(s->srv, opts->listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) return ls_fail(err, LS_UNAVAILABLE, "cannot listen on %s", opts->listen_addr);
    return LS_OK;
}

/* Queue teardown shared by the failed-create and destroy paths: nothing may still be armed. */
static void srv_cq_close(server *s)
{
    grpc_completion_queue_shutdown(s->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) srv_dispatch(s, &ev);
    }
    grpc_completion_queue_destroy(s->cq);
    s->cq = NULL;
}

ls_status server_create(server **out, const server_opts *opts, const server_hooks *hooks, ls_error *err)
{
    *out = NULL;
    if (!opts->listen_addr || !hooks->on_request || !hooks->on_cancel)
        return ls_fail(err, LS_INVALID_ARGUMENT, "server_create: listen address and both hooks are required");
    server *s = calloc(1, sizeof *s);
    if (!s) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "server_create: out of memory");
    s->hooks = *hooks;
    s->t_shutdown = (srv_tag){ SRV_TAG_SHUTDOWN, s };
    s->cq = grpc_completion_queue_create_for_next(NULL);
    s->srv = srv_grpc_create(opts);
    grpc_server_register_completion_queue(s->srv, s->cq, NULL);
    ls_status st = srv_listen(s, opts, err);
    if (st != LS_OK) {
        grpc_server_destroy(s->srv);     // never started: no shutdown needed
        srv_cq_close(s);
        free(s);
        return st;
    }
    grpc_server_start(s->srv);
    srv_arm(s);
    LOG_I("gRPC server listening on %s (port %d)", opts->listen_addr, s->port);
    *out = s;
    return LS_OK;
}

/* Stop listening and cancel everything; hooks.on_cancel runs for calls the engine still holds. The
 * shutdown tag comes only once gRPC let go of every call, which call_settle in server_call.c makes
 * possible for held calls by releasing their gRPC side early. */
void server_destroy(server *s)
{
    if (!s) return;
    s->stopping = 1;
    grpc_server_shutdown_and_notify(s->srv, s->cq, &s->t_shutdown);
    grpc_server_cancel_all_calls(s->srv);
    while (!s->shutdown_done) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_OP_COMPLETE) srv_dispatch(s, &ev);
    }
    grpc_server_destroy(s->srv);
    s->srv = NULL;
    srv_cq_close(s);
    for (server_call *c = s->live; c; c = c->next) srv_call_orphan(c);
    if (s->n_live) {
        LOG_I("server stopped; %d calls still held by the engine are freed at their finish", s->n_live);
        s->destroyed = 1;
        return;
    }
    free(s);
}
