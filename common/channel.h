/* The MPI control channel between the coordinator (world rank 0) and the workers (ranks 1..T): step
 * plans go out by broadcast, sampled token ids come back from worker rank 1. Only control travels here;
 * tensors go over the workers' own communicator.
 *
 * Waiting never spins a core: an idle worker blocked in MPI_Bcast was measured at 100% CPU, which on a
 * small machine starves the coordinator and gRPC. Every wait is a non-blocking operation tested in a
 * loop that sleeps after a short burst of spinning. Because blocking and non-blocking collectives do not
 * match, every rank uses MPI_Ibcast for plans.
 *
 * Open MPI (without fault-tolerance extensions) never reports a dead peer: a wait on it just does not
 * complete. So rank 0 records every rank's pid and host at start-up and, for the ranks on its own host
 * (the usual one-node job), can see in the process table that one has gone (channel_peer_lost). Ranks
 * on other hosts are covered only by the coordinator's step timeout. */
#ifndef LORASERVE_COMMON_CHANNEL_H
#define LORASERVE_COMMON_CHANNEL_H

#include <mpi.h>
#include <stdint.h>

#include "common/plan.h"

typedef struct channel {
    MPI_Comm world;
    int rank, size;
    void *buf;                  // plan payload staging, grows
    size_t cap;
    MPI_Request tok_req;        // rank 0: the pending receive of sampled ids
    int32_t *tok_buf;
    int tok_cap, tok_n;
    int tok_pending;
    int32_t *peer_pids;         // rank 0: (size) pid of each rank on this host that can be watched, else 0
} channel;

void channel_init(channel *c, MPI_Comm world);
void channel_free(channel *c);

/* Every rank: tells rank 0 its pid and host; rank 0 logs them in one line ("ranks: 0 pid P on H, ...")
 * and keeps the pids of the workers on its own host whose process it can see. */
void channel_peers_record(channel *c);
/* Rank 0: a worker rank on this host whose process has exited (killed, crashed), or 0 when all the
 * watched ones are alive. A few /proc reads: call it at most every ~100 ms. */
int channel_peer_lost(const channel *c);

/* Rank 0: once a wait of this process has lasted ~100 ms, calls check(ctx, seconds waited) about every
 * 100 ms, so that the coordinator can judge a wait on a dead or hung worker hopeless and end the job
 * from inside it (check then does not return). A process-wide hook, because channel_wait is given only
 * a request: set by the coordinator while it serves; NULL removes it. */
void channel_watch(void (*check)(void *ctx, double waited_s), void *ctx);

/* Rank 0 during start-up: calls idle(ctx) after every nap of every wait (every 50 us to 2 ms), so that
 * the coordinator answers gRPC (health NOT_SERVING) while it waits for the workers' load reports. idle
 * must not block. Process-wide like channel_watch, for the same reason; NULL removes it. Never set
 * while serving: a hook that reached the engine from inside a plan broadcast would change requests
 * in the middle of a step. */
void channel_idle(void (*idle)(void *ctx), void *ctx);

/* Completes r, spinning for a few microseconds and then sleeping between tests. */
void channel_wait(MPI_Request *r);

/* Rank 0: sends p to every worker. */
void channel_send_plan(channel *c, const plan *p);
/* Workers: receives the next plan into p; returns its command. */
plan_cmd channel_recv_plan(channel *c, plan *p);

/* Every rank's answer to a control command or to a start-up round. */
typedef struct channel_report {
    int32_t code;               // ls_status
    int32_t value;              // command specific (start-up: pool pages this rank can hold)
    char msg[504];
} channel_report;

/* Gathers one report per rank on rank 0 (all: c->size entries there; NULL on the others). */
void channel_gather_reports(channel *c, const channel_report *mine, channel_report *all);

/* Rank 0: posts the receive of n sampled ids for the plan just sent. */
void channel_tokens_post(channel *c, int n);
/* Rank 0: 1 when the ids have arrived (*ids then points into the channel, valid until the next post). */
int channel_tokens_test(channel *c, const int32_t **ids);
/* Rank 0, after channel_tokens_test: the step's adapter times on worker rank 1, in microseconds (host
 * reads of adapter files into memory; device time of the host-to-device copies). */
void channel_tokens_adapter_us(const channel *c, int32_t *read_us, int32_t *copy_us);
/* Worker rank 1: returns the sampled ids of a step; ids[n] and ids[n + 1] carry its adapter read and
 * copy times (microseconds), so ids holds n + CHANNEL_TOKEN_EXTRA values. */
#define CHANNEL_TOKEN_EXTRA 2
void channel_tokens_send(channel *c, const int32_t *ids, int n);

#endif
