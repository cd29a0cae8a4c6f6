/* loraserve's entry point. One binary, started by mpirun/srun: world rank 0 becomes the coordinator
 * (gRPC, tokenizer, scheduler, page allocator; no device code), ranks 1..T become the tensor-parallel
 * workers. Start-up is a two-round handshake so that a bad model directory or flag makes every rank
 * exit non-zero with the cause printed, and never reports SERVING:
 *   1. rank 0 settles the model directory (generating the demo model when none is given) and sends it;
 *   2. rank 0 loads its config and tokenizer and opens the gRPC port, which answers health NOT_SERVING
 *      (a load can take minutes, and a probe should see a loading server, not a refused connection);
 *   3. every rank loads its part and reports {status, pool capacity}; rank 0, still answering gRPC
 *      while it waits, decides and sends go/no-go with the pool size all workers will mirror;
 *   4. workers allocate their pools and report again; then rank 0 says SERVING and serves. A no-go
 *      closes the port again before every rank exits. */
#include <errno.h>
#include <grpc/grpc.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/channel.h"
#include "common/log.h"
#include "common/model_gen.h"
#include "coordinator/coordinator.h"
#include "coordinator/tokenizer_gen.h"
#include "launch/config.h"
#include "worker/worker.h"

enum { PATH_BYTES = 4096, DEMO_VOCAB = 1024 };

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static void bcast_bytes(MPI_Comm comm, void *buf, int n)
{
    MPI_Request r;
    MPI_CHECK(MPI_Ibcast(buf, n, MPI_BYTE, 0, comm, &r));
    channel_wait(&r);
}

/* Gathers every rank's report on rank 0, which prints the failures and tells everyone whether to go
 * on; returns 0 to go on. *min_capacity: the smallest pool among the workers (rank 0). */
static int gather_reports(channel *ch, const channel_report *mine, int *min_capacity)
{
    int bad = 0;
    channel_report *all = ch->rank == 0 ? ls_xcalloc((size_t)ch->size, sizeof *all) : NULL;
    channel_gather_reports(ch, mine, all);
    if (ch->rank == 0) {
        *min_capacity = INT32_MAX;
        for (int i = 0; i < ch->size; i++) {
            if (all[i].code != LS_OK) {
                fprintf(stderr, "loraserve: rank %d failed to start: %s\n", i, all[i].msg);
                bad = 1;
            }
            if (i > 0 && all[i].value < *min_capacity) *min_capacity = all[i].value;
        }
        free(all);
    }
    int go = !bad;
    bcast_bytes(ch->world, &go, sizeof go);
    return go ? 0 : -1;
}

static void report_error(channel_report *rep, const ls_error *err)
{
    rep->code = err->code ? err->code : LS_INTERNAL;
    snprintf(rep->msg, sizeof rep->msg, "%.*s", (int)sizeof rep->msg - 1, err->msg);
}

/* Rank 0: the model directory to serve, generating the demo model when none is given. */
static ls_status settle_model_dir(const ls_config *cfg, char *dir, ls_error *err)
{
    if (cfg->model[0]) {
        snprintf(dir, PATH_BYTES, "%s", cfg->model);
        return LS_OK;
    }
    snprintf(dir, PATH_BYTES, "%s", cfg->demo_dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ls_fail(err, LS_INVALID_ARGUMENT, "cannot create the demo model directory %s: %s", dir, strerror(errno));
    int vocab = 0;
    ls_status st = tokenizer_gen_write(dir, DEMO_VOCAB, &vocab, err);
    if (st != LS_OK) return ls_error_wrap(err, "writing the demo tokenizer");
    model_gen_opts mg = model_gen_demo_opts(vocab);
    if ((st = model_gen_write(dir, &mg, err)) != LS_OK) return ls_error_wrap(err, "writing the demo model");
    LOG_I("serving the built-in demo model (%s, vocabulary %d) from %s", mg.cfg.architecture, vocab, dir);
    return LS_OK;
}

typedef struct coord_state { model_config mc; tokenizer *tok; } coord_state;

static ls_status coordinator_load(coord_state *cs, const char *dir, ls_error *err)
{
    ls_status st = model_config_load(&cs->mc, dir, err);
    if (st != LS_OK) return st;
    char path[PATH_BYTES + 32];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (access(path, F_OK) != 0) {
        // As vLLM's skip_tokenizer_init: such a model is served by token ids only.
        LOG_W("%s has no tokenizer.json: serving token ids only (text prompts are refused)", dir);
        return LS_OK;
    }
    if ((st = tokenizer_load(&cs->tok, dir, err)) != LS_OK) return ls_error_wrap(err, "tokenizer of %s", dir);
    if (tokenizer_vocab_size(cs->tok) > cs->mc.vocab_size)
        return ls_fail(err, LS_INVALID_ARGUMENT, "tokenizer has %d tokens but config.json vocab_size is %d",
                       tokenizer_vocab_size(cs->tok), cs->mc.vocab_size);
    return LS_OK;
}

/* The last component of the model directory: what an adapter's base_model_name_or_path must name. */
static const char *served_model_name(const char *dir)
{
    const char *slash = strrchr(dir, '/');
    return slash && slash[1] ? slash + 1 : dir;
}

static coordinator_opts coordinator_opts_from(const ls_config *cfg, const char *dir, const channel *ch)
{
    return (coordinator_opts){
        .server = { .listen_addr = cfg->listen, .max_receive_bytes = cfg->max_request_bytes,
                    .max_concurrent_streams = cfg->max_concurrent_streams },
        .sched = { .page_tokens = cfg->page_tokens, .max_batch = cfg->max_batch,
                   .max_step_tokens = cfg->max_step_tokens, .max_waiting = cfg->max_waiting,
                   .prefetch = cfg->prefetch_adapters },
        .adapters = { .root = cfg->adapters, .served_model = served_model_name(dir),
                      .allow_base_mismatch = cfg->allow_adapter_base_mismatch, .tp_size = ch->size - 1,
                      .page_tokens = cfg->page_tokens },
        .port_file = cfg->port_file, .default_max_new_tokens = cfg->default_max_new_tokens,
        .shutdown_grace_s = cfg->shutdown_grace_s, .step_timeout_s = cfg->step_timeout_s,
        .metrics_listen = cfg->metrics_listen,
    };
}

/* Rank 0's side of rounds 3 and 4 (rep: its own outcome so far); returns the pool size, or -1 when
 * start-up failed somewhere. */
static int coordinator_handshake(const ls_config *cfg, channel *ch, channel_report *rep)
{
    int capacity = 0;
    if (gather_reports(ch, rep, &capacity) != 0) return -1;
    int n_pages = cfg->max_pages && cfg->max_pages < capacity ? cfg->max_pages : capacity;
    if (n_pages < 1) {
        fprintf(stderr, "loraserve: --kv-cache-mb %d holds no KV page of %d tokens\n", cfg->kv_cache_mb, cfg->page_tokens);
        n_pages = -1;
    }
    bcast_bytes(ch->world, &n_pages, sizeof n_pages);
    if (n_pages < 1 || gather_reports(ch, rep, &capacity) != 0) return -1;
    return n_pages;
}

static int run_coordinator(const ls_config *cfg, MPI_Comm world, channel *ch)
{
    char dir[PATH_BYTES] = { 0 };
    channel_report rep = { .code = LS_OK };
    ls_error err = { 0 };
    coord_state cs = { 0 };
    coordinator *c = NULL;
    if (settle_model_dir(cfg, dir, &err) != LS_OK) report_error(&rep, &err);
    bcast_bytes(world, dir, PATH_BYTES);
    if (rep.code == LS_OK && coordinator_load(&cs, dir, &err) != LS_OK) report_error(&rep, &err);
    coordinator_opts o = coordinator_opts_from(cfg, dir, ch);
    grpc_init();
    if (rep.code == LS_OK && !(c = coordinator_open(&o, &cs.mc, cs.tok, ch, &stop_requested, &err)))
        report_error(&rep, &err);
    int rc = 1, n_pages = coordinator_handshake(cfg, ch, &rep);
    if (n_pages > 0) {
        LOG_I("model %s: %d layers, hidden %d, vocab %d, context %d; %d workers; pool of %d pages x %d tokens",
              cs.mc.architecture, cs.mc.n_layers, cs.mc.hidden_size, cs.mc.vocab_size, cs.mc.max_position,
              ch->size - 1, n_pages, cfg->page_tokens);
        rc = coordinator_run(c, n_pages);
        if (rc == COORDINATOR_EXIT_WORKERS_LOST) MPI_Abort(world, rc);     // the job cannot finalize cleanly
    } else {
        coordinator_close(c);
    }
    grpc_shutdown();
    tokenizer_free(cs.tok);
    return rc;
}

/* --test-load-delay-s: lets a test watch the server while the workers are still loading. */
static void test_load_delay(double s)
{
    if (s <= 0) return;
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static int run_worker(const ls_config *cfg, MPI_Comm world, MPI_Comm workers, channel *ch)
{
    char dir[PATH_BYTES];
    channel_report rep = { .code = LS_OK };
    ls_error err = { 0 };
    worker wk;
    memset(&wk, 0, sizeof wk);
    bcast_bytes(world, dir, PATH_BYTES);
    if (dir[0] && worker_load(&wk, dir, workers, cfg->backend, &err) != LS_OK) report_error(&rep, &err);
    test_load_delay(cfg->test_load_delay_s);
    if (rep.code == LS_OK) rep.value = worker_pool_capacity(&wk, cfg->page_tokens, cfg->max_step_tokens,
                                                         (size_t)cfg->kv_cache_mb << 20);
    int unused, n_pages = 0;
    if (gather_reports(ch, &rep, &unused) != 0) goto out;
    bcast_bytes(world, &n_pages, sizeof n_pages);
    if (n_pages < 1) goto out;
    wk.allow_base_mismatch = cfg->allow_adapter_base_mismatch;
    wk.adapter_cache_bytes = (size_t)cfg->adapter_cache_mb << 20;
    wk.cuda_graphs = cfg->cuda_graphs;
    if (worker_start(&wk, n_pages, cfg->page_tokens, cfg->max_step_tokens, &err) != LS_OK) report_error(&rep, &err);
    if (gather_reports(ch, &rep, &unused) != 0) goto out;
    worker_serve(&wk, ch);
    worker_free(&wk);
    return 0;
out:
    worker_free(&wk);
    return 1;
}

static void write_pid_file(const char *path)
{
    if (!path[0]) return;
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) LOG_W("cannot write the pid file %s", path);
}

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_CHECK(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    ls_config cfg;
    int pr = config_parse(&cfg, argc, argv, rank == 0 ? stderr : fopen("/dev/null", "w"));
    if (pr == 1 && rank == 0) config_print_help(stdout);
    static const char *levels[] = { "error", "warn", "info", "debug" };
    int level = LOG_INFO;
    for (int i = 0; pr == 0 && i < 4; i++)
        if (!strcmp(cfg.log_level, levels[i])) level = i;
    log_init(rank, (log_level)level);
    if (pr == 0 && size < 2) {
        fprintf(stderr, "loraserve: needs at least 2 ranks: mpirun -np 1+T loraserve (1 coordinator + T workers)\n");
        pr = -1;
    }
    if (pr != 0) {
        MPI_Finalize();
        return pr == 1 ? 0 : 2;
    }
    MPI_Comm workers;
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? MPI_UNDEFINED : 1, rank, &workers));
    channel ch;
    channel_init(&ch, MPI_COMM_WORLD);
    channel_peers_record(&ch);
    int rc;
    if (rank == 0) {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        write_pid_file(cfg.pid_file);
        rc = run_coordinator(&cfg, MPI_COMM_WORLD, &ch);
    } else {
        // Only rank 0 decides when to stop: it drains and then tells the workers (mpirun forwards
        // signals to every rank, and a worker that died first would break the drain).
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        rc = run_worker(&cfg, MPI_COMM_WORLD, workers, &ch);
        MPI_Comm_free(&workers);
    }
    channel_free(&ch);
    // Every rank learned the outcome of start-up in the handshake, so even a failed start ends with a
    // clean finalize; mpirun then exits non-zero because ranks did.
    MPI_Finalize();
    return rc;
}
