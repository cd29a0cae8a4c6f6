/* NCCL communicator with bounded waits (see nccl_comm.h). */
#include "worker/cuda/nccl_comm.h"

#include <string.h>
#include <time.h>

#include "common/channel.h"
#include "common/clock.h"
#include "common/log.h"

static void nap(void)
{
    const struct timespec t = { 0, 20000 };
    nanosleep(&t, NULL);
}

/* Polls the communicator until its state is not ncclInProgress (a non-blocking init or call). */
static ls_status settle(nccl_comm *c, double deadline, const char *what, ls_error *err)
{
    for (;;) {
        ncclResult_t state;
        ncclResult_t r = ncclCommGetAsyncError(c->comm, &state);
        if (r != ncclSuccess) state = r;
        if (state == ncclSuccess) return LS_OK;
        if (state != ncclInProgress) {
            ncclCommAbort(c->comm);
            c->aborted = 1;
            return ls_fail(err, LS_UNAVAILABLE, "%s: NCCL error %s (rank %d of %d)", what, ncclGetErrorString(state),
                           c->rank, c->size);
        }
        if (clock_now_s() > deadline) {
            ncclCommAbort(c->comm);
            c->aborted = 1;
            return ls_fail(err, LS_UNAVAILABLE, "%s: no progress within %.1f s (rank %d of %d): a peer is gone or stuck",
                           what, c->timeout_s, c->rank, c->size);
        }
        nap();
    }
}

ls_status nccl_comm_init(nccl_comm *c, MPI_Comm workers, cudaStream_t stream, double timeout_s, ls_error *err)
{
    memset(c, 0, sizeof *c);
    c->stream = stream;
    c->timeout_s = timeout_s;
    MPI_CHECK(MPI_Comm_rank(workers, &c->rank));
    MPI_CHECK(MPI_Comm_size(workers, &c->size));
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (c->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess)
        LOG_E("ncclGetUniqueId failed; the other ranks will time out");
    MPI_Request r;
    MPI_CHECK(MPI_Ibcast(&id, sizeof id, MPI_BYTE, 0, workers, &r));
    channel_wait(&r);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;           // bounded start-up: poll below instead of hanging in init
    ncclResult_t res = ncclCommInitRankConfig(&c->comm, c->size, id, c->rank, &cfg);
    if (res != ncclSuccess && res != ncclInProgress)
        return ls_fail(err, LS_UNAVAILABLE, "ncclCommInitRankConfig: %s", ncclGetErrorString(res));
    return settle(c, clock_now_s() + timeout_s, "NCCL communicator start-up", err);
}

/* A non-blocking communicator may answer ncclInProgress while it enqueues; it must reach ncclSuccess
 * before the next call on it, so wait for that (bounded) here. */
static ls_status enqueued(nccl_comm *c, ncclResult_t r, const char *what, ls_error *err)
{
    if (r == ncclSuccess) return LS_OK;
    if (r == ncclInProgress) return settle(c, clock_now_s() + c->timeout_s, what, err);
    ncclCommAbort(c->comm);
    c->aborted = 1;
    return ls_fail(err, LS_UNAVAILABLE, "%s: %s", what, ncclGetErrorString(r));
}

ls_status nccl_comm_allreduce_sum(nccl_comm *c, void *buf, size_t count, ncclDataType_t type, ls_error *err)
{
    if (c->size == 1 || count == 0) return LS_OK;
    if (c->aborted) return ls_fail(err, LS_UNAVAILABLE, "the tensor-parallel communicator was aborted");
    return enqueued(c, ncclAllReduce(buf, buf, count, type, ncclSum, c->comm, c->stream), "ncclAllReduce", err);
}

ls_status nccl_comm_allgather(nccl_comm *c, const void *send, void *recv, size_t count, ncclDataType_t type,
                              ls_error *err)
{
    if (c->aborted) return ls_fail(err, LS_UNAVAILABLE, "the tensor-parallel communicator was aborted");
    return enqueued(c, ncclAllGather(send, recv, count, type, c->comm, c->stream), "ncclAllGather", err);
}

ls_status nccl_comm_wait(nccl_comm *c, ls_error *err)
{
    double deadline = clock_now_s() + c->timeout_s;
    for (;;) {
        cudaError_t q = cudaStreamQuery(c->stream);
        if (q == cudaSuccess) return c->size > 1 && !c->aborted ? settle(c, deadline, "collective", err) : LS_OK;
        if (q != cudaErrorNotReady)
            return ls_fail(err, LS_INTERNAL, "CUDA error on the compute stream: %s", cudaGetErrorString(q));
        if (c->size > 1) {
            ncclResult_t state = ncclSuccess;
            ncclCommGetAsyncError(c->comm, &state);
            if (state != ncclSuccess && state != ncclInProgress) return settle(c, deadline, "collective", err);
        }
        if (clock_now_s() > deadline) {
            if (c->size > 1 && !c->aborted) {
                ncclCommAbort(c->comm);
                c->aborted = 1;
            }
            return ls_fail(err, LS_UNAVAILABLE, "step did not finish within %.1f s (rank %d): a peer is gone or stuck",
                           c->timeout_s, c->rank);
        }
        nap();
    }
}

void nccl_comm_free(nccl_comm *c)
{
    if (c->comm && !c->aborted) ncclCommDestroy(c->comm);
    memset(c, 0, sizeof *c);
}
