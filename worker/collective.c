/* MPI implementation of the worker collectives (CPU backend). */
#include "worker/collective.h"

#include <string.h>

#include "common/log.h"

void collective_init(collective *c, MPI_Comm comm, int vocab_start, int vocab_local, int vocab)
{
    memset(c, 0, sizeof *c);
    c->comm = comm;
    MPI_CHECK(MPI_Comm_rank(comm, &c->rank));
    MPI_CHECK(MPI_Comm_size(comm, &c->size));
    c->vocab = vocab;
    c->vocab_counts = ls_xcalloc((size_t)c->size, sizeof(int));
    c->vocab_starts = ls_xcalloc((size_t)c->size, sizeof(int));
    c->recv_counts = ls_xcalloc((size_t)c->size, sizeof(int));
    c->recv_displs = ls_xcalloc((size_t)c->size, sizeof(int));
    MPI_CHECK(MPI_Allgather(&vocab_local, 1, MPI_INT, c->vocab_counts, 1, MPI_INT, comm));
    MPI_CHECK(MPI_Allgather(&vocab_start, 1, MPI_INT, c->vocab_starts, 1, MPI_INT, comm));
}

void collective_free(collective *c)
{
    free(c->vocab_counts);
    free(c->vocab_starts);
    free(c->recv_counts);
    free(c->recv_displs);
    free(c->staging);
    memset(c, 0, sizeof *c);
}

void collective_allreduce_sum(collective *c, float *buf, size_t n)
{
    if (c->size == 1 || n == 0) return;
    LS_ASSERT(n < (size_t)1 << 31);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, c->comm));
}

void collective_gather_logits(collective *c, const float *local, int n_rows, float *full)
{
    int mine = c->vocab_counts[c->rank];
    if (c->size == 1) {
        memcpy(full, local, (size_t)n_rows * (size_t)mine * sizeof *full);
        return;
    }
    size_t total = (size_t)n_rows * (size_t)c->vocab;
    if (c->rank == 0 && total > c->staging_cap) {
        c->staging_cap = total;
        c->staging = ls_xrealloc(c->staging, total * sizeof *c->staging);
    }
    for (int r = 0, off = 0; r < c->size; r++) {
        c->recv_counts[r] = n_rows * c->vocab_counts[r];
        c->recv_displs[r] = off;
        off += c->recv_counts[r];
    }
    MPI_CHECK(MPI_Gatherv(local, n_rows * mine, MPI_FLOAT, c->staging, c->recv_counts, c->recv_displs,
                          MPI_FLOAT, 0, c->comm));
    if (c->rank != 0) return;
    // Blocks arrive rank-major [rank][row][slice]; logits are row-major over the whole vocabulary.
    for (int r = 0; r < c->size; r++) {
        const float *blk = c->staging + c->recv_displs[r];
        for (int i = 0; i < n_rows; i++)
            memcpy(full + (size_t)i * c->vocab + c->vocab_starts[r], blk + (size_t)i * c->vocab_counts[r],
                   (size_t)c->vocab_counts[r] * sizeof *full);
    }
}
