/* The coordinator rank's serving loop: one thread runs the gRPC completion queue, admission, the
 * scheduler and the step plans. A step is in flight at most once: while the workers compute it the loop
 * keeps answering gRPC events, and request state changes (cancels) are applied only between steps, so
 * a plan never refers to freed requests or pages. */
#ifndef LORASERVE_COORDINATOR_COORDINATOR_H
#define LORASERVE_COORDINATOR_COORDINATOR_H

#include <signal.h>

#include "common/channel.h"
#include "common/model_config.h"
#include "coordinator/adapter_service.h"
#include "coordinator/scheduler.h"
#include "coordinator/server.h"
#include "coordinator/tokenizer.h"

typedef struct coordinator_opts {
    server_opts server;
    scheduler_opts sched;
    adapter_service_opts adapters;
    const char *port_file;          // "" = none
    int default_max_new_tokens;
    double shutdown_grace_s;
    double step_timeout_s;          // a step not back by then means a worker is lost; 0 = no limit
    const char *metrics_listen;     // Prometheus endpoint host:port; "" = none
} coordinator_opts;

typedef struct coordinator_stats {
    uint64_t steps, tokens_generated, prompt_tokens, requests_ok, requests_failed;
    uint64_t ids;               // server-assigned request ids
} coordinator_stats;

/* Exit code when a worker rank was lost: the caller must end the job (MPI_Abort), because the workers
 * can no longer take a plan and MPI_Finalize would wait for the dead rank. */
#define COORDINATOR_EXIT_WORKERS_LOST 3

/* Serves until *stop is set (by SIGTERM), then drains and tells the workers to stop. Returns the
 * process exit code: 0 after a clean drain, 1 when serving could not start, or
 * COORDINATOR_EXIT_WORKERS_LOST after answering every call UNAVAILABLE. */
int coordinator_run(const coordinator_opts *o, const model_config *mc, const tokenizer *tok, channel *ch,
                    volatile sig_atomic_t *stop);

#endif
