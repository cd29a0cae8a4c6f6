/* Internals of the gRPC front end, shared by server.c (queue, dispatch, lifecycle), server_call.c (one
 * call: close watch, ordered sends, release, Generate), server_admin.c (loraserve.v1.Adapters) and
 * health.c (grpc.health.v1). Not part of the contract in server.h; nothing outside these files
 * includes it.
 *
 * DESIGN: a single completion queue, read only by the thread that calls server_poll/server_destroy, so
 * no field here needs a lock (gRPC's own threads never see these structs; they only post tags). Every
 * completion carries a srv_tag embedded in the object it concerns. A call object is freed when nobody
 * holds it (the engine, or a health Watch), its RECV_CLOSE batch has completed and no batch is pending. */
#ifndef LORASERVE_COORDINATOR_SERVER_IMPL_H
#define LORASERVE_COORDINATOR_SERVER_IMPL_H

#include <grpc/grpc.h>
#include <stdint.h>

#include "coordinator/server.h"

typedef enum srv_tag_kind {
    SRV_TAG_CALL_NEW,       // a registered call arrived (or its request failed at shutdown)
    SRV_TAG_CALL_CLOSE,     // RECV_CLOSE_ON_SERVER done: the call is over, cancelled or not
    SRV_TAG_CALL_SEND,      // the one send batch of a call completed
    SRV_TAG_UNKNOWN_NEW,    // a call to an unregistered method arrived
    SRV_TAG_UNKNOWN_DONE,   // its UNIMPLEMENTED answer completed
    SRV_TAG_SHUTDOWN,       // grpc_server_shutdown_and_notify finished
} srv_tag_kind;

typedef struct srv_tag {
    srv_tag_kind kind;
    void *obj;              // the server_call / srv_unknown / server it belongs to
} srv_tag;

typedef enum srv_method {
    SRV_GENERATE = 0,
    SRV_GENERATE_STREAM,
    SRV_HEALTH_CHECK,
    SRV_HEALTH_WATCH,
    SRV_ADMIN_LOAD,         // loraserve.v1.Adapters, in server_admin_method order
    SRV_ADMIN_UNLOAD,
    SRV_ADMIN_LIST,
    SRV_N_METHODS,
} srv_method;

/* Calls handed to the engine's hooks (the others are health's own): only these hear of a cancel. */
static inline int srv_engine_method(srv_method m)
{
    return m != SRV_HEALTH_CHECK && m != SRV_HEALTH_WATCH;
}

typedef struct srv_msg {
    struct srv_msg *next;
    grpc_byte_buffer *bb;   // owned
} srv_msg;

struct server_call {
    server *s;
    srv_method method;
    srv_tag t_new, t_close, t_send;
    grpc_call *call;                // owned ref; NULL once orphaned by server_destroy
    gpr_timespec deadline;          // filled by gRPC when the call arrives
    grpc_metadata_array md;         // request metadata, filled by gRPC
    grpc_byte_buffer *payload;      // the request message; destroyed right after decoding
    struct server_call *prev, *next;    // the server's list of arrived calls
    srv_msg *q_head, *q_tail;       // messages waiting for the send slot, in order
    grpc_byte_buffer *in_flight;    // the message of the batch in flight, kept alive until it completes
    grpc_slice details;             // status message, alive until the call is freed
    int status;                     // grpc_status_code to send once the queue is empty
    int has_status;                 // status set, not yet handed to gRPC
    int md_sent;                    // initial metadata went out with an earlier batch
    int sending;                    // a send batch is in flight (at most one per call)
    int pending;                    // batches started and not completed, close included
    int closed;                     // RECV_CLOSE_ON_SERVER completed
    int close_cancelled;            // written by gRPC: 1 = cancel, deadline or connection loss
    int dead;                       // nothing more can be sent (cancelled, send failed, orphaned)
    int held;                       // the engine (or a Watch) still owes a release
    int cancel_told;                // on_cancel already called
    int busy;                       // inside a hook: the call must not be freed under the hook
    int orphan;                     // gRPC side released by server_destroy; only memory is left
    int health_known;               // Watch: the service asked for is ours
    int health_sent;                // Watch: the ServingStatus last queued
    void *user;                     // the engine's pointer
};

/* Calls to methods nobody registered: answered UNIMPLEMENTED, naming the method. */
typedef struct srv_unknown {
    server *s;
    srv_tag t_new, t_done;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_slice status_msg;          // alive until t_done
    int close_cancelled;
} srv_unknown;

struct server {
    server_hooks hooks;
    grpc_server *srv;
    grpc_completion_queue *cq;
    void *methods[SRV_N_METHODS];   // registered method handles
    int armed[SRV_N_METHODS];       // outstanding request_registered_call per method
    int unknown_armed;              // outstanding generic request_call (0 or 1)
    int port;
    server_call *live;              // arrived calls not yet freed (head of a doubly linked list)
    int n_live;
    int serving;                    // as set by server_set_serving
    int draining;                   // server_drain was called
    int stopping;                   // server_destroy runs: arm nothing, send nothing
    int destroyed;                  // server_destroy returned; freed with the last orphan
    srv_tag t_shutdown;
    int shutdown_done;
};

/* server.c */
const char *srv_method_path(srv_method m);      // "/package.Service/Method"

/* server_call.c */
server_call *srv_call_new(server *s, srv_method method);
void srv_call_free(server_call *c);
void srv_call_arrived(server_call *c, int ok);
void srv_call_on_close(server_call *c);
void srv_call_on_send(server_call *c, int ok);
void srv_call_queue(server_call *c, grpc_byte_buffer *bb);
void srv_call_set_status(server_call *c, int code, const char *msg);
void srv_call_pump(server_call *c);
void srv_call_maybe_free(server_call *c);
void srv_call_orphan(server_call *c);
grpc_byte_buffer *srv_pack(const ProtobufCMessage *msg);
/* Decodes the request payload with the given descriptor; NULL when absent or malformed. */
ProtobufCMessage *srv_unpack(server_call *c, const ProtobufCMessageDescriptor *desc);
/* The request's deadline in CLOCK_MONOTONIC ms (INT64_MAX: none). */
int64_t srv_call_deadline_ms(const server_call *c);
/* The checks an engine call passes before its hook: when draining or already expired, answers the call
 * and returns 1. */
int srv_call_refused(server_call *c, int64_t deadline_ms);
/* Around a hook that may take the call: srv_call_hold before it (the call counts as the engine's and
 * cannot be freed under the hook, which may finish it), srv_call_offered after it with the hook's
 * result: on an error the server answers with that status and err's message. */
void srv_call_hold(server_call *c);
void srv_call_offered(server_call *c, ls_status hook_status, const ls_error *err);

/* server_admin.c */
void admin_arrived(server_call *c);

/* health.c */
void health_arrived(server_call *c);
void health_closed(server_call *c);
void health_notify(server *s);
int health_serving(const server *s);

#endif
