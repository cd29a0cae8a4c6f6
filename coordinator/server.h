/* The gRPC front end (gRPC C core, one completion queue, driven from the coordinator's loop): the
 * loraserve.v1.Generation service (Generate unary, GenerateStream server-streaming), the
 * loraserve.v1.Adapters service (LoadAdapter, UnloadAdapter, ListAdapters, all unary), grpc.health.v1
 * Health (Check, Watch), and a generic handler answering UNIMPLEMENTED for every other method.
 *
 * Ownership: for every accepted call the engine calls server_call_finish or server_call_finish_msg
 * exactly once, also after a cancel (then nothing is sent). The call's memory is freed when the finish
 * is done, the transport has closed and no batch is in flight. Streams have at most one SEND_MESSAGE in
 * flight; later messages are queued in order.
 *
 * Threads: everything here, hooks included, runs on the one thread that calls server_poll and
 * server_destroy; gRPC's own threads never call back. The hooks may call server_call_send and
 * server_call_finish(_msg) on the call they are given before returning (and must then return LS_OK).
 * The process calls grpc_init() before server_create and grpc_shutdown() after server_destroy; this
 * module calls neither. */
#ifndef LORASERVE_COORDINATOR_SERVER_H
#define LORASERVE_COORDINATOR_SERVER_H

#include <stdint.h>

#include "common/status.h"
#include "loraserve.pb-c.h"

typedef struct server server;
typedef struct server_call server_call;

/* The methods of loraserve.v1.Adapters, as told to hooks.on_admin. */
typedef enum server_admin_method {
    SERVER_ADMIN_LOAD,      // req: Loraserve__V1__LoadAdapterRequest, answer: LoadAdapterResponse
    SERVER_ADMIN_UNLOAD,    // req: Loraserve__V1__UnloadAdapterRequest, answer: UnloadAdapterResponse
    SERVER_ADMIN_LIST,      // req: Loraserve__V1__ListAdaptersRequest, answer: ListAdaptersResponse
} server_admin_method;

typedef struct server_hooks {
    void *ctx;
    /* A Generate/GenerateStream call arrived. deadline_ms is CLOCK_MONOTONIC milliseconds, or INT64_MAX
     * when the client set none (a request already past its deadline, a malformed one, or one arriving
     * after server_drain is answered by the server and never reaches this hook). Return LS_OK to take the call (the engine now owes a finish), or an error
     * status with err->msg: the server then answers with that status itself. `req` is only valid during
     * the call. */
    ls_status (*on_request)(void *ctx, server_call *call, const Loraserve__V1__GenerateRequest *req,
                            int streaming, int64_t deadline_ms, ls_error *err);
    /* The client cancelled, the deadline passed or the connection dropped (Generate and admin calls
     * alike). The engine must stop work for the call at its next step and still finish it. An admin
     * operation already under way (a load broadcast to the workers) may complete: only its answer is
     * lost. */
    void (*on_cancel)(void *ctx, server_call *call);
    /* An Adapters call arrived; `req` is the decoded request of method m (see server_admin_method),
     * valid only during the call. Malformed, expired and post-drain requests are answered by the server
     * and never reach it. Return LS_OK to take the call: the engine then owes one
     * server_call_finish_msg, which it may make inside this hook (List answers at once) or later (a
     * load needs the worker ranks, so it finishes after a scheduler step). Or return an error status
     * with err->msg: the server answers it. NULL: these methods answer UNIMPLEMENTED. */
    ls_status (*on_admin)(void *ctx, server_call *call, server_admin_method m, const ProtobufCMessage *req,
                          ls_error *err);
} server_hooks;

typedef struct server_opts {
    const char *listen_addr;        // "host:port"; port 0 picks a free one
    int max_receive_bytes;          // larger requests get RESOURCE_EXHAUSTED from gRPC itself
    int max_concurrent_streams;     // per connection
} server_opts;

ls_status server_create(server **out, const server_opts *opts, const server_hooks *hooks, ls_error *err);
int server_port(const server *s);                    // the bound port
/* Calls arrived and not yet freed (engine-held, being answered, health Watches); for metrics and tests. */
int server_live_calls(const server *s);
/* Waits up to timeout_ms for the first completion (0 = none), then handles what else is ready (at most
 * a few hundred) and returns, so the caller's next scheduler step is never starved. Dispatches hooks.
 * A signal does not cut the wait short (one of gRPC's threads may take it): keep idle timeouts short
 * (tens of ms) so that a stop flag set by a handler is seen promptly. */
void server_poll(server *s, int timeout_ms);
/* Health of the whole server ("" and "loraserve.v1.Generation"): NOT_SERVING until set. */
void server_set_serving(server *s, int serving);

void server_call_set_user(server_call *c, void *user);
void *server_call_user(const server_call *c);
int server_call_cancelled(const server_call *c);     // on_cancel has been called for it
int server_call_streaming(const server_call *c);
/* Streaming: queue one message (copied). Unary calls must not use it. Ignored once cancelled. */
void server_call_send(server_call *c, const Loraserve__V1__GenerateResponse *msg);
/* Ends the call: status OK sends `msg` (when not NULL) then OK; another status sends only the status
 * with `why` (NULL: the status name), after the messages already queued. A unary OK with msg == NULL
 * sends an empty response. After a cancel it only releases the engine's hold. msg, copied, must be the
 * method's response type (GenerateResponse, or the admin method's *Response); any call may take it. */
void server_call_finish_msg(server_call *c, const ProtobufCMessage *msg, ls_status status, const char *why);
/* server_call_finish_msg for Generate calls: `last` is the final response; with last == NULL it suits
 * any call. */
void server_call_finish(server_call *c, const Loraserve__V1__GenerateResponse *last, ls_status status,
                        const char *msg);

/* Graceful stop: new calls get UNAVAILABLE, health turns NOT_SERVING; in-flight calls continue. */
void server_drain(server *s);
/* Cancels what is left (hooks.on_cancel runs, inside this function, for calls the engine holds), shuts
 * the server down and frees it once every call is released. Calls the engine still holds when it returns
 * are inert: the engine must still finish them (nothing is sent), and the last finish frees the server. */
void server_destroy(server *s);

#endif
