/* The coordinator's Prometheus metrics, served as text over HTTP (`--metrics-listen host:port`, path
 * /metrics) for dashboards and alerts: requests by final status, queue and batch sizes, tokens,
 * first-token and per-token latency histograms, step time, tokens and sequences by kind of step (decode
 * only or mixed with prefill), pool pages by use, adapter residency, loads, evictions and bytes copied
 * to the devices.
 *
 * Threads: the coordinator's loop owns the live counters and updates them without a lock. At most
 * every ~50 ms (metrics_publish) it copies them, with the gauges read from the scheduler, into a
 * snapshot under a mutex; the HTTP thread (libmicrohttpd's) copies that snapshot under the same mutex
 * and formats it outside the lock. A scrape therefore never touches engine state, and costs the loop
 * one short memcpy, never a wait on a slow client. */
#ifndef LORASERVE_COORDINATOR_METRICS_H
#define LORASERVE_COORDINATOR_METRICS_H

#include "common/status.h"
#include "coordinator/scheduler.h"

typedef struct metrics metrics;

/* listen: "host:port" (port 0 picks a free one) or "" to count without serving the endpoint. */
ls_status metrics_create(metrics **out, const char *listen, ls_error *err);
void metrics_free(metrics *m);
int metrics_port(const metrics *m);                 // the bound port; 0 when there is no endpoint

/* Recording, from the coordinator's thread only. */
void metrics_request_done(metrics *m, ls_status code);       // a Generate call got its final status
void metrics_prompt(metrics *m, int prompt_tokens);          // a request was admitted
void metrics_first_token(metrics *m, double since_arrival_s);
void metrics_next_token(metrics *m, double since_previous_s);
/* A step ran: `batch` sequences carrying `tokens` tokens, decode_only when none brought a prompt chunk,
 * `seconds` from sending its plan to its sampled ids. */
void metrics_step(metrics *m, int batch, int tokens, int decode_only, double seconds);
void metrics_adapter_times(metrics *m, double read_s, double copy_s);   // a step's adapter reads and copies

/* Makes the counters and the scheduler's gauges visible to scrapes: at once when force, else only when
 * the last publish is older than the throttle. */
void metrics_publish(metrics *m, const scheduler *s, int force);

#endif
