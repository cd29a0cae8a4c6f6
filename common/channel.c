/* MPI control channel (see channel.h for why every wait polls). */
#include "common/channel.h"

#include <string.h>
#include <time.h>

#include "common/log.h"

/* Waits spin briefly (a step's reply is often microseconds away), then nap 50 us, and once the wait
 * has lasted ~100 ms (an idle server) nap 2 ms: idle ranks then cost well under 1% of a core. */
enum { TAG_TOKENS = 17, SPIN_TESTS = 200, SHORT_NAPS = 2000, SHORT_NAP_NS = 50000, LONG_NAP_NS = 2000000 };

void channel_init(channel *c, MPI_Comm world)
{
    memset(c, 0, sizeof *c);
    c->world = world;
    MPI_CHECK(MPI_Comm_rank(world, &c->rank));
    MPI_CHECK(MPI_Comm_size(world, &c->size));
    c->tok_req = MPI_REQUEST_NULL;
}

void channel_free(channel *c)
{
    free(c->buf);
    free(c->tok_buf);
    memset(c, 0, sizeof *c);
}

void channel_wait(MPI_Request *r)
{
    const struct timespec short_nap = { 0, SHORT_NAP_NS }, long_nap = { 0, LONG_NAP_NS };
    for (int i = 0;; i++) {
        int done = 0;
        MPI_CHECK(MPI_Test(r, &done, MPI_STATUS_IGNORE));
        if (done) return;
        if (i >= SPIN_TESTS) nanosleep(i < SPIN_TESTS + SHORT_NAPS ? &short_nap : &long_nap, NULL);
    }
}

static void reserve(channel *c, size_t n)
{
    if (n <= c->cap) return;
    c->cap = n * 2;
    c->buf = ls_xrealloc(c->buf, c->cap);
}

static void bcast(channel *c, void *data, size_t n)
{
    MPI_Request r;
    LS_ASSERT(n < (size_t)1 << 31);
    MPI_CHECK(MPI_Ibcast(data, (int)n, MPI_BYTE, 0, c->world, &r));
    channel_wait(&r);
}

void channel_send_plan(channel *c, const plan *p)
{
    plan_header h = p->h;
    bcast(c, &h, sizeof h);
    size_t n = plan_payload_bytes(&h);
    if (!n) return;
    reserve(c, n);
    plan_pack_payload(p, c->buf);
    bcast(c, c->buf, n);
}

plan_cmd channel_recv_plan(channel *c, plan *p)
{
    plan_header h;
    bcast(c, &h, sizeof h);
    size_t n = plan_payload_bytes(&h);
    if (!n) {
        p->h = h;
        return (plan_cmd)h.cmd;
    }
    reserve(c, n);
    bcast(c, c->buf, n);
    plan_unpack_payload(p, &h, c->buf);
    return (plan_cmd)h.cmd;
}

void channel_tokens_post(channel *c, int n)
{
    LS_ASSERT(!c->tok_pending);
    if (n > c->tok_cap) {
        c->tok_cap = n * 2;
        c->tok_buf = ls_xrealloc(c->tok_buf, (size_t)c->tok_cap * sizeof *c->tok_buf);
    }
    MPI_CHECK(MPI_Irecv(c->tok_buf, n, MPI_INT32_T, 1, TAG_TOKENS, c->world, &c->tok_req));
    c->tok_pending = 1;
}

int channel_tokens_test(channel *c, const int32_t **ids)
{
    LS_ASSERT(c->tok_pending);
    int done = 0;
    MPI_CHECK(MPI_Test(&c->tok_req, &done, MPI_STATUS_IGNORE));
    if (!done) return 0;
    c->tok_pending = 0;
    *ids = c->tok_buf;
    return 1;
}

void channel_tokens_send(channel *c, const int32_t *ids, int n)
{
    MPI_Request r;
    MPI_CHECK(MPI_Isend(ids, n, MPI_INT32_T, 0, TAG_TOKENS, c->world, &r));
    channel_wait(&r);
}

void channel_gather_reports(channel *c, const channel_report *mine, channel_report *all)
{
    MPI_Request r;
    MPI_CHECK(MPI_Igather(mine, sizeof *mine, MPI_BYTE, all, sizeof *mine, MPI_BYTE, 0, c->world, &r));
    channel_wait(&r);
}
