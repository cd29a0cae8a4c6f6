/* The coordinator rank's serving loop: one thread runs the gRPC completion queue, admission, the
 * scheduler and the step plans. A step is in flight at most once: while the workers compute it the loop
 * keeps answering gRPC events, and request state changes (cancels) are applied only between steps, so
 * a plan never refers to freed requests or pages. Its life has two phases: open (the port answers
 * health NOT_SERVING while the workers load the model, which can take minutes for a large one), then
 * run (SERVING until the stop). */
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

typedef struct coordinator coordinator;

/* Opens the gRPC port (and the metrics endpoint) as soon as rank 0's own model config and tokenizer
 * are ready, before the workers have loaded, so that a probe meets a loading server rather than a
 * refused connection: health says NOT_SERVING and every Generation/Adapters call gets UNAVAILABLE
 * "model is loading". Writes the port file and prints "loraserve: listening on HOST:PORT" now, so a
 * script that waits for either must then wait for SERVING. Until coordinator_run or coordinator_close,
 * every channel wait of this process (the start-up handshake) keeps answering gRPC, turns a stop
 * signal into a drain, and ends the job when a worker rank dies while loading. o, mc and tok must
 * outlive the coordinator. Returns NULL with err filled when it cannot listen. */
coordinator *coordinator_open(const coordinator_opts *o, const model_config *mc, const tokenizer *tok, channel *ch,
                              volatile sig_atomic_t *stop, ls_error *err);

/* Start-up failed on some rank: closes the ports (health never said SERVING) and frees c; NULL is a
 * no-op. Sends nothing to the workers. */
void coordinator_close(coordinator *c);

/* Every rank has loaded and allocated its pool of n_pages (o->sched.n_pages is ignored): health turns
 * SERVING; serves until *stop is set (by SIGTERM), then drains, tells the workers to stop and frees c.
 * Returns the process exit code: 0 after a clean drain, 1 when serving could not start, or
 * COORDINATOR_EXIT_WORKERS_LOST after answering every call UNAVAILABLE. */
int coordinator_run(coordinator *c, int n_pages);

#endif
