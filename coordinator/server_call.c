/* One call of a registered method, from arrival to free, the Generate methods' arrival, and the
 * engine-facing server_call_* API (shared with the admin methods of server_admin.c).
 *
 * Why the bookkeeping: gRPC C core lets a call have only one batch of each kind in flight and never
 * checks that for SEND_MESSAGE (a second concurrent send is accepted and reorders the stream), so every
 * message goes through a per-call queue drained one batch at a time, the status riding with the last
 * message. The RECV_CLOSE_ON_SERVER batch sits alone so that it completes the moment the call ends
 * (cancel, deadline, lost connection), whatever the sends are doing. A call is freed only when its holder
 * released it, its close completed and no batch is pending, since gRPC may still write into it. */
#include "coordinator/server_impl.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

server_call *srv_call_new(server *s, srv_method method)
{
    server_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = s;
    c->method = method;
    c->t_new = (srv_tag){ SRV_TAG_CALL_NEW, c };
    c->t_close = (srv_tag){ SRV_TAG_CALL_CLOSE, c };
    c->t_send = (srv_tag){ SRV_TAG_CALL_SEND, c };
    grpc_metadata_array_init(&c->md);
    c->details = grpc_empty_slice();
    return c;
}

static void call_drop_queue(server_call *c)
{
    while (c->q_head) {
        srv_msg *m = c->q_head;
        c->q_head = m->next;
        grpc_byte_buffer_destroy(m->bb);
        free(m);
    }
    c->q_tail = NULL;
}

/* Everything that belongs to gRPC goes here, so that an orphan keeps only plain memory. */
static void call_release_grpc(server_call *c)
{
    if (c->orphan) return;
    c->orphan = 1;
    call_drop_queue(c);
    if (c->in_flight) grpc_byte_buffer_destroy(c->in_flight);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    c->in_flight = c->payload = NULL;
    grpc_metadata_array_destroy(&c->md);
    grpc_slice_unref(c->details);
    if (c->call) grpc_call_unref(c->call);     // cancels the call if it is still active
    c->call = NULL;
}

void srv_call_free(server_call *c)
{
    call_release_grpc(c);
    free(c);
}

static void call_link(server_call *c)
{
    server *s = c->s;
    c->next = s->live;
    if (s->live) s->live->prev = c;
    s->live = c;
    s->n_live++;
}

static void call_unlink(server_call *c)
{
    server *s = c->s;
    if (c->prev) c->prev->next = c->next;
    else s->live = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_live--;
}

void srv_call_maybe_free(server_call *c)
{
    if (c->held || c->busy || !c->closed || c->pending) return;
    server *s = c->s;
    call_unlink(c);
    srv_call_free(c);
    if (s->destroyed && !s->n_live) free(s);   // server_destroy left it for the last orphan
}

/* A batch we build wrongly is a bug in this file, not an operational error. */
static void call_start(server_call *c, const grpc_op *ops, size_t n, srv_tag *tag)
{
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) LOG_E("grpc_call_start_batch: call error %d", (int)e);
    LS_ASSERT(e == GRPC_CALL_OK);
    c->pending++;
}

static void call_tell_cancel(server_call *c)
{
    if (!c->held || c->cancel_told || !srv_engine_method(c->method)) return;
    c->cancel_told = 1;
    c->busy++;
    c->s->hooks.on_cancel(c->s->hooks.ctx, c);
    c->busy--;
}

static void call_dead(server_call *c)
{
    if (c->dead) return;
    c->dead = 1;
    c->has_status = 0;
    call_drop_queue(c);
    call_tell_cancel(c);
}

void srv_call_queue(server_call *c, grpc_byte_buffer *bb)
{
    srv_msg *m = malloc(sizeof *m);
    if (!m) {
        // Losing one message would silently corrupt the stream: end the call instead.
        LOG_E("out of memory queueing a response; cancelling the call");
        grpc_byte_buffer_destroy(bb);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "server out of memory", NULL);
        call_dead(c);
        return;
    }
    *m = (srv_msg){ .next = NULL, .bb = bb };
    if (c->q_tail) c->q_tail->next = m;
    else c->q_head = m;
    c->q_tail = m;
}

void srv_call_set_status(server_call *c, int code, const char *msg)
{
    grpc_slice_unref(c->details);
    c->details = grpc_slice_from_copied_string(msg ? msg : "");
    c->status = code;
    c->has_status = 1;
    srv_call_pump(c);
}

/* One batch at a time: initial metadata rides with the first send, the status with the last message. */
void srv_call_pump(server_call *c)
{
    if (c->sending || c->dead || c->s->stopping) return;
    if (!c->q_head && !c->has_status) return;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    if (c->q_head) {
        srv_msg *m = c->q_head;
        c->q_head = m->next;
        if (!c->q_head) c->q_tail = NULL;
        c->in_flight = m->bb;
        free(m);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->in_flight;
    }
    if (c->has_status && !c->q_head) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)c->status;
        ops[n++].data.send_status_from_server.status_details = &c->details;
        c->has_status = 0;
    }
    c->sending = 1;
    call_start(c, ops, n, &c->t_send);
}

/* After a completion: free the call, or, while server_destroy waits for gRPC to let go of every call,
 * release the gRPC side of a call the engine still holds (it may finish only after server_destroy). */
static void call_settle(server_call *c)
{
    if (c->s->stopping && c->held && c->closed && !c->pending) call_release_grpc(c);
    srv_call_maybe_free(c);
}

void srv_call_on_send(server_call *c, int ok)
{
    c->pending--;
    c->sending = 0;
    if (c->in_flight) grpc_byte_buffer_destroy(c->in_flight);
    c->in_flight = NULL;
    if (!ok) call_dead(c);      // the peer is gone: nothing later can be delivered
    else srv_call_pump(c);
    call_settle(c);
}

void srv_call_on_close(server_call *c)
{
    c->pending--;
    c->closed = 1;
    call_dead(c);               // a closed call takes no more sends; a holder still in it is told
    if (c->method == SRV_HEALTH_WATCH) health_closed(c);
    call_settle(c);
}

void srv_call_orphan(server_call *c)
{
    call_release_grpc(c);
    c->dead = 1;
    c->closed = 1;
    c->pending = 0;
}

grpc_byte_buffer *srv_pack(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);       // the buffer holds its own reference
    return bb;
}

ProtobufCMessage *srv_unpack(server_call *c, const ProtobufCMessageDescriptor *desc)
{
    if (!c->payload) return NULL;
    ProtobufCMessage *m = NULL;
    grpc_byte_buffer_reader rd;
    if (grpc_byte_buffer_reader_init(&rd, c->payload)) {     // also decompresses
        grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
        m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
        grpc_slice_unref(sl);
        grpc_byte_buffer_reader_destroy(&rd);
    }
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    return m;
}

static int64_t mono_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* gRPC hands a REALTIME deadline; the engine compares against CLOCK_MONOTONIC. Going through "time
 * left" avoids depending on how gpr's own monotonic clock is offset. */
int64_t srv_call_deadline_ms(const server_call *c)
{
    gpr_timespec dl = c->deadline;
    if (gpr_time_cmp(dl, gpr_inf_future(dl.clock_type)) == 0) return INT64_MAX;
    gpr_timespec left = gpr_time_sub(dl, gpr_now(dl.clock_type));
    if (left.tv_sec > INT32_MAX) return INT64_MAX;      // decades away: as good as none
    return mono_now_ms() + left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

int srv_call_refused(server_call *c, int64_t deadline_ms)
{
    if (c->s->draining)
        srv_call_set_status(c, GRPC_STATUS_UNAVAILABLE, "server is shutting down");
    else if (deadline_ms <= mono_now_ms())
        srv_call_set_status(c, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline expired before the request was queued");
    else
        return 0;
    return 1;
}

void srv_call_hold(server_call *c)
{
    c->held = 1;
    c->busy++;
}

void srv_call_offered(server_call *c, ls_status hook_status, const ls_error *err)
{
    c->busy--;
    if (hook_status == LS_OK) return;
    // A hook that finished the call already must say LS_OK, or the call would get two statuses.
    LS_ASSERT(c->held);
    c->held = 0;
    srv_call_set_status(c, (int)hook_status, err->msg[0] ? err->msg : ls_status_name(hook_status));
}

static void gen_offer(server_call *c, const Loraserve__V1__GenerateRequest *req, int64_t deadline_ms)
{
    server *s = c->s;
    ls_error err = { .code = LS_OK };
    srv_call_hold(c);
    ls_status st = s->hooks.on_request(s->hooks.ctx, c, req, c->method == SRV_GENERATE_STREAM, deadline_ms, &err);
    srv_call_offered(c, st, &err);
}

static void gen_arrived(server_call *c)
{
    Loraserve__V1__GenerateRequest *req =
        (Loraserve__V1__GenerateRequest *)srv_unpack(c, &loraserve__v1__generate_request__descriptor);
    if (!req) {
        srv_call_set_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed request");
        return;
    }
    int64_t deadline_ms = srv_call_deadline_ms(c);
    if (!srv_call_refused(c, deadline_ms)) gen_offer(c, req, deadline_ms);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

void srv_call_arrived(server_call *c, int ok)
{
    if (!ok || c->s->stopping) {        // a request that failed at shutdown, or a call we will not serve
        srv_call_free(c);
        return;
    }
    call_link(c);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    call_start(c, &op, 1, &c->t_close);
    if (c->method == SRV_GENERATE || c->method == SRV_GENERATE_STREAM) gen_arrived(c);
    else if (c->method == SRV_HEALTH_CHECK || c->method == SRV_HEALTH_WATCH) health_arrived(c);
    else admin_arrived(c);
    srv_call_maybe_free(c);
}

void server_call_set_user(server_call *c, void *user) { c->user = user; }
void *server_call_user(const server_call *c) { return c->user; }
int server_call_cancelled(const server_call *c) { return c->cancel_told; }
int server_call_streaming(const server_call *c) { return c->method == SRV_GENERATE_STREAM; }

void server_call_send(server_call *c, const Loraserve__V1__GenerateResponse *msg)
{
    LS_ASSERT(c->held && c->method == SRV_GENERATE_STREAM);
    if (c->dead) return;
    srv_call_queue(c, srv_pack(&msg->base));
    srv_call_pump(c);
}

/* What each method answers with; a mismatch is an engine bug that would corrupt the client's decoding. */
static const ProtobufCMessageDescriptor *call_response_desc(srv_method m)
{
    switch (m) {
    case SRV_GENERATE:
    case SRV_GENERATE_STREAM: return &loraserve__v1__generate_response__descriptor;
    case SRV_ADMIN_LOAD: return &loraserve__v1__load_adapter_response__descriptor;
    case SRV_ADMIN_UNLOAD: return &loraserve__v1__unload_adapter_response__descriptor;
    case SRV_ADMIN_LIST: return &loraserve__v1__list_adapters_response__descriptor;
    default: return NULL;   // health answers by itself
    }
}

/* A unary OK must carry a message, or the client reports a protocol error; an empty message of any
 * type is zero bytes, so msg == NULL needs no descriptor. */
static void call_queue_last(server_call *c, const ProtobufCMessage *msg)
{
    if (msg) {
        srv_call_queue(c, srv_pack(msg));
    } else if (c->method != SRV_GENERATE_STREAM) {
        grpc_slice none = grpc_empty_slice();
        srv_call_queue(c, grpc_raw_byte_buffer_create(&none, 1));
    }
}

void server_call_finish_msg(server_call *c, const ProtobufCMessage *msg, ls_status status, const char *why)
{
    LS_ASSERT(c->held && srv_engine_method(c->method));
    LS_ASSERT(!msg || msg->descriptor == call_response_desc(c->method));
    c->held = 0;
    if (!c->dead) {
        if (status == LS_OK) call_queue_last(c, msg);
        if (!c->dead)
            srv_call_set_status(c, (int)status, status == LS_OK ? "" : (why ? why : ls_status_name(status)));
    }
    srv_call_maybe_free(c);
}

void server_call_finish(server_call *c, const Loraserve__V1__GenerateResponse *last, ls_status status,
                        const char *msg)
{
    server_call_finish_msg(c, last ? &last->base : NULL, status, msg);
}
