/* The tensor-parallel communicator of the CUDA backend: NCCL among the worker ranks, bootstrapped over
 * MPI (worker rank 0 creates the unique id and broadcasts it), created non-blocking so that start-up
 * cannot hang on a peer that never arrives. Every wait on a collective is bounded: the stream is polled
 * together with ncclCommGetAsyncError against a deadline, and on timeout or error the communicator is
 * aborted and UNAVAILABLE returned, so a stuck or dead peer ends in an error, never a hang. */
#ifndef LORASERVE_WORKER_CUDA_NCCL_COMM_H
#define LORASERVE_WORKER_CUDA_NCCL_COMM_H

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <stddef.h>

#include "common/status.h"

typedef struct nccl_comm {
    ncclComm_t comm;
    int rank, size;
    cudaStream_t stream;        // the stream collectives are enqueued on (the compute stream)
    double timeout_s;           // bound on every wait
    int aborted;
} nccl_comm;

/* Collective over `workers` (an MPI communicator of the worker ranks only). */
ls_status nccl_comm_init(nccl_comm *c, MPI_Comm workers, cudaStream_t stream, double timeout_s, ls_error *err);
/* Enqueues an in-place sum; completion is observed by nccl_comm_wait (or any later stream sync). */
ls_status nccl_comm_allreduce_sum(nccl_comm *c, void *buf, size_t count, ncclDataType_t type, ls_error *err);
/* Enqueues an all-gather of count elements from every rank, rank-major in recv. */
ls_status nccl_comm_allgather(nccl_comm *c, const void *send, void *recv, size_t count, ncclDataType_t type,
                              ls_error *err);
/* Waits for everything enqueued on the stream, within the deadline; aborts the communicator on
 * timeout or asynchronous error (UNAVAILABLE). */
ls_status nccl_comm_wait(nccl_comm *c, ls_error *err);
void nccl_comm_free(nccl_comm *c);

#endif
