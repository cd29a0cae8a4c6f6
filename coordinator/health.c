/* grpc.health.v1.Health for the whole server, so that Kubernetes gRPC probes, grpc_health_probe and load
 * balancers see whether the model is loaded and whether the server is draining: NOT_SERVING while the
 * ranks load the model (the port opens before they finish), SERVING once all have, NOT_SERVING again
 * from the drain on. It runs on the same
 * completion queue as Generate but never waits for the engine, so a probe is answered between two
 * scheduler steps even during long generations.
 *
 * Check answers NOT_FOUND for a service we do not serve (as the protocol asks); Watch instead sends
 * SERVICE_UNKNOWN and stays open, then sends every change of the status until the call ends. */
#include "coordinator/server_impl.h"

#include <string.h>

#include "health.pb-c.h"

#define HEALTH_SERVICE_NAME "loraserve.v1.Generation"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus health_status;

int health_serving(const server *s) { return s->serving && !s->draining; }

static int health_known(const char *service)
{
    return service[0] == '\0' || strcmp(service, HEALTH_SERVICE_NAME) == 0;
}

static health_status health_current(const server *s, int known)
{
    if (!known) return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    return health_serving(s) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                             : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

/* Queued, not sent: a Check's answer must leave in one batch with its status. */
static void health_queue(server_call *c, health_status st)
{
    Grpc__Health__V1__HealthCheckResponse rsp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rsp.status = st;
    c->health_sent = (int)st;
    srv_call_queue(c, srv_pack(&rsp.base));
}

static void health_check(server_call *c, int known)
{
    if (!known) {
        srv_call_set_status(c, GRPC_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    health_queue(c, health_current(c->s, known));
    srv_call_set_status(c, GRPC_STATUS_OK, "");
}

/* The Watch is held (like an engine call) until its close, so that changes can still reach it. */
static void health_watch(server_call *c, int known)
{
    c->held = 1;
    c->health_known = known;
    health_queue(c, health_current(c->s, known));
    srv_call_pump(c);
}

void health_arrived(server_call *c)
{
    Grpc__Health__V1__HealthCheckRequest *req =
        (Grpc__Health__V1__HealthCheckRequest *)srv_unpack(c, &grpc__health__v1__health_check_request__descriptor);
    if (!req) {
        srv_call_set_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed request");
        return;
    }
    int known = health_known(req->service);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    if (c->method == SRV_HEALTH_CHECK) health_check(c, known);
    else health_watch(c, known);
}

void health_closed(server_call *c) { c->held = 0; }

void health_notify(server *s)
{
    for (server_call *c = s->live; c; c = c->next) {
        if (c->method != SRV_HEALTH_WATCH || !c->held || c->dead) continue;
        health_status st = health_current(s, c->health_known);
        if ((int)st == c->health_sent) continue;
        health_queue(c, st);
        srv_call_pump(c);
    }
}
