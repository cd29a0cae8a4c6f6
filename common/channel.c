/* MPI control channel (see channel.h for why every wait polls). */
#include "common/channel.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"

/* Waits spin briefly (a step's reply is often microseconds away), then nap 50 us, and once the wait
 * has lasted ~100 ms (an idle server) nap 2 ms: idle ranks then cost well under 1% of a core. */
enum { TAG_TOKENS = 17, SPIN_TESTS = 200, SHORT_NAPS = 2000, SHORT_NAP_NS = 50000, LONG_NAP_NS = 2000000 };
#define WATCH_EVERY_NS 100000000LL

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
    free(c->peer_pids);
    memset(c, 0, sizeof *c);
}

typedef struct peer_id { int32_t pid; char host[124]; } peer_id;

/* The state letter of /proc/<pid>/stat: 0 when there is no such process. A killed rank stays a zombie
 * ('Z') until mpirun reaps it, so exists-or-not alone would miss it for a while. */
static char proc_state(int pid)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    const char *paren = strrchr(line, ')');     // the command name may itself hold ')' or spaces
    return paren && paren[1] == ' ' && paren[2] ? paren[2] : 0;
}

static int proc_gone(int pid)
{
    char st = proc_state(pid);
    return st == 0 || st == 'Z' || st == 'X' || st == 'x';
}

static void peers_log(const peer_id *all, int n)
{
    char line[900];
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof line; i++)
        k += (size_t)snprintf(line + k, sizeof line - k, "%s%d pid %d on %s", i ? ", " : "", i, (int)all[i].pid,
                              all[i].host);
    LOG_I("ranks: %s", line);
}

void channel_peers_record(channel *c)
{
    peer_id mine = { .pid = (int32_t)getpid() };
    if (gethostname(mine.host, sizeof mine.host - 1) != 0) snprintf(mine.host, sizeof mine.host, "?");
    peer_id *all = c->rank == 0 ? ls_xcalloc((size_t)c->size, sizeof *all) : NULL;
    MPI_Request r;
    MPI_CHECK(MPI_Igather(&mine, sizeof mine, MPI_BYTE, all, sizeof mine, MPI_BYTE, 0, c->world, &r));
    channel_wait(&r);
    if (c->rank != 0) return;
    peers_log(all, c->size);
    c->peer_pids = ls_xcalloc((size_t)c->size, sizeof *c->peer_pids);
    for (int i = 1; i < c->size; i++)    // watched only when this rank sees that process (same pid namespace)
        if (!strcmp(all[i].host, mine.host) && !proc_gone(all[i].pid)) c->peer_pids[i] = all[i].pid;
    free(all);
}

int channel_peer_lost(const channel *c)
{
    for (int i = 1; c->peer_pids && i < c->size; i++)
        if (c->peer_pids[i] && proc_gone(c->peer_pids[i])) return i;
    return 0;
}

static struct { void (*check)(void *, double); void *ctx; } watch;
static struct { void (*fn)(void *); void *ctx; } idle;

void channel_watch(void (*check)(void *ctx, double waited_s), void *ctx)
{
    watch.check = check;
    watch.ctx = ctx;
}

void channel_idle(void (*fn)(void *ctx), void *ctx)
{
    idle.fn = fn;
    idle.ctx = ctx;
}

/* A wait on a dead rank never completes: let the watch judge it. */
static void watch_check(int64_t start_ns, int64_t *next_ns)
{
    int64_t t = clock_now_ns();
    if (t < *next_ns) return;
    *next_ns = t + WATCH_EVERY_NS;
    watch.check(watch.ctx, (double)(t - start_ns) / 1e9);
}

void channel_wait(MPI_Request *r)
{
    const struct timespec short_nap = { 0, SHORT_NAP_NS }, long_nap = { 0, LONG_NAP_NS };
    int64_t start_ns = 0, next_check_ns = 0;
    for (int i = 0;; i++) {
        int done = 0;
        MPI_CHECK(MPI_Test(r, &done, MPI_STATUS_IGNORE));
        if (done) return;
        if (i < SPIN_TESTS) continue;
        if (i == SPIN_TESTS && watch.check) next_check_ns = (start_ns = clock_now_ns()) + WATCH_EVERY_NS;
        nanosleep(i < SPIN_TESTS + SHORT_NAPS ? &short_nap : &long_nap, NULL);
        if (idle.fn) idle.fn(idle.ctx);
        if (watch.check) watch_check(start_ns, &next_check_ns);
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
    if (n + CHANNEL_TOKEN_EXTRA > c->tok_cap) {
        c->tok_cap = 2 * (n + CHANNEL_TOKEN_EXTRA);
        c->tok_buf = ls_xrealloc(c->tok_buf, (size_t)c->tok_cap * sizeof *c->tok_buf);
    }
    c->tok_n = n;
    MPI_CHECK(MPI_Irecv(c->tok_buf, n + CHANNEL_TOKEN_EXTRA, MPI_INT32_T, 1, TAG_TOKENS, c->world, &c->tok_req));
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

void channel_tokens_adapter_us(const channel *c, int32_t *read_us, int32_t *copy_us)
{
    *read_us = c->tok_buf[c->tok_n];
    *copy_us = c->tok_buf[c->tok_n + 1];
}

void channel_tokens_send(channel *c, const int32_t *ids, int n)
{
    MPI_Request r;
    MPI_CHECK(MPI_Isend(ids, n + CHANNEL_TOKEN_EXTRA, MPI_INT32_T, 0, TAG_TOKENS, c->world, &r));
    channel_wait(&r);
}

void channel_gather_reports(channel *c, const channel_report *mine, channel_report *all)
{
    MPI_Request r;
    MPI_CHECK(MPI_Igather(mine, sizeof *mine, MPI_BYTE, all, sizeof *mine, MPI_BYTE, 0, c->world, &r));
    channel_wait(&r);
}
