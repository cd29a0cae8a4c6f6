/* Adapters as the clients see them: names resolved under the --adapters root, registered on every rank
 * (all or none) on first use or by LoadAdapter, unregistered by UnloadAdapter, listed by ListAdapters.
 * Registering needs the workers, and the control channel carries one thing at a time, so the requests
 * and calls that wait for a registration are parked here and served between two scheduler steps. */
#ifndef LORASERVE_COORDINATOR_ADAPTER_SERVICE_H
#define LORASERVE_COORDINATOR_ADAPTER_SERVICE_H

#include "common/channel.h"
#include "common/model_config.h"
#include "coordinator/request.h"
#include "coordinator/scheduler.h"
#include "coordinator/server.h"

typedef struct admin_op admin_op;

typedef struct adapter_service_opts {
    const char *root;               // --adapters; "" = no lazy loading, LoadAdapter refused
    const char *served_model;       // compared with base_model_name_or_path
    int allow_base_mismatch;
    int tp_size;
    int page_tokens;
} adapter_service_opts;

typedef struct adapter_service {
    adapter_service_opts o;
    const model_config *mc;
    scheduler *sched;               // owns the registry and the pool
    channel *ch;
    plan ctl;                       // control commands
    request *parked;                // requests waiting for their adapter's registration (linked by next)
    int n_parked;
    admin_op *ops, *ops_tail;       // admin calls waiting for the next turn between steps
} adapter_service;

/* What to do with a request once its adapter is known: queue it, or finish it with an error. */
typedef void (*adapter_ready_fn)(void *ctx, request *r, ls_status st, const char *why);

void adapter_service_init(adapter_service *s, const adapter_service_opts *o, const model_config *mc, scheduler *sched,
                          channel *ch);
void adapter_service_free(adapter_service *s);
/* Gives r its adapter. Returns LS_OK with *parked = 0 when r can be queued now (base model or a
 * registered adapter), LS_OK with *parked = 1 when r waits for a registration, or an error. */
ls_status adapter_service_attach(adapter_service *s, request *r, int *parked, ls_error *err);
/* The reference r holds on its adapter ends (r finished or failed). */
void adapter_service_detach(request *r);
/* Between steps: registers what parked requests and LoadAdapter calls need, answers admin calls, and
 * hands each parked request to ready (cancelled ones with LS_CANCELLED). */
void adapter_service_run(adapter_service *s, adapter_ready_fn ready, void *ctx);
/* Hands every parked request to ready with st and answers pending admin calls with st (shutdown). */
void adapter_service_fail_all(adapter_service *s, adapter_ready_fn ready, void *ctx, ls_status st, const char *why);
/* The on_admin hook. */
ls_status adapter_service_admin(adapter_service *s, server_call *call, server_admin_method m,
                                const ProtobufCMessage *req, ls_error *err);
int adapter_service_busy(const adapter_service *s);

#endif
