/* Tensor collectives among the worker ranks of one tensor-parallel group. The CPU backend runs them
 * over MPI on the workers' own communicator (the coordinator is not in it); the CUDA backend will run
 * the same calls over NCCL. Sums are order-independent between two ranks, so TP=2 is deterministic. */
#ifndef LORASERVE_WORKER_COLLECTIVE_H
#define LORASERVE_WORKER_COLLECTIVE_H

#include <mpi.h>
#include <stddef.h>

typedef struct collective {
    MPI_Comm comm;              // workers only
    int rank, size;
    int *vocab_counts;          // per rank: lm_head rows (floats per gathered row = count)
    int *vocab_starts;
    int vocab;
    int *recv_counts, *recv_displs;   // scratch for gathers
    float *staging;             // gathered blocks before interleaving, grows
    size_t staging_cap;
} collective;

/* Collective over comm: learns every rank's vocabulary slice. */
void collective_init(collective *c, MPI_Comm comm, int vocab_start, int vocab_local, int vocab);
void collective_free(collective *c);

void collective_allreduce_sum(collective *c, float *buf, size_t n);
/* Gathers logits rows [n_rows, vocab_local] of every rank into full[n_rows, vocab] on rank 0. */
void collective_gather_logits(collective *c, const float *local, int n_rows, float *full);

#endif
