/* loraserve.v1.Adapters (LoadAdapter, UnloadAdapter, ListAdapters): the server side of adapter
 * management. The server only decodes, screens and hands the request to hooks.on_admin; the registry
 * lives in the engine, because a load must reach every worker rank between two scheduler steps.
 *
 * Why the same path as Generate (hold, cancel, finish): a load can outlast its client, so an admin call
 * needs the cancel and release rules of an engine call; only the message types differ. */
#include "coordinator/server_impl.h"

#include <stdio.h>

// srv_method lists the admin methods in server_admin_method's order, so that one maps to the other by
// an offset.
_Static_assert(SRV_ADMIN_UNLOAD - SRV_ADMIN_LOAD == SERVER_ADMIN_UNLOAD - SERVER_ADMIN_LOAD &&
               SRV_ADMIN_LIST - SRV_ADMIN_LOAD == SERVER_ADMIN_LIST - SERVER_ADMIN_LOAD,
               "srv_method's admin entries must follow server_admin_method");

static server_admin_method admin_method(srv_method m)
{
    return (server_admin_method)(SERVER_ADMIN_LOAD + (m - SRV_ADMIN_LOAD));
}

static const ProtobufCMessageDescriptor *admin_request_desc(server_admin_method m)
{
    switch (m) {
    case SERVER_ADMIN_LOAD: return &loraserve__v1__load_adapter_request__descriptor;
    case SERVER_ADMIN_UNLOAD: return &loraserve__v1__unload_adapter_request__descriptor;
    case SERVER_ADMIN_LIST: return &loraserve__v1__list_adapters_request__descriptor;
    }
    return NULL;
}

/* A server built without adapter management says so per method, like an unknown method would. */
static void admin_unimplemented(server_call *c)
{
    char msg[128];
    snprintf(msg, sizeof msg, "%s is not served here", srv_method_path(c->method));
    srv_call_set_status(c, GRPC_STATUS_UNIMPLEMENTED, msg);
}

void admin_arrived(server_call *c)
{
    server *s = c->s;
    if (!s->hooks.on_admin) {
        admin_unimplemented(c);
        return;
    }
    server_admin_method m = admin_method(c->method);
    ProtobufCMessage *req = srv_unpack(c, admin_request_desc(m));
    if (!req) {
        srv_call_set_status(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed request");
        return;
    }
    if (!srv_call_refused(c, srv_call_deadline_ms(c))) {
        ls_error err = { .code = LS_OK };
        srv_call_hold(c);
        ls_status st = s->hooks.on_admin(s->hooks.ctx, c, m, req, &err);
        srv_call_offered(c, st, &err);
    }
    protobuf_c_message_free_unpacked(req, NULL);
}
