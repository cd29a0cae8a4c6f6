/* Prometheus metrics (see metrics.h for the threading). The text format is version 0.0.4: one HELP and
 * TYPE line per family, histograms as cumulative `le` buckets plus _sum and _count. Per-adapter series
 * are bounded: only resident adapters, at most METRICS_TOP_ADAPTERS of them (the most recently used),
 * so that 2,000 registered adapters cannot blow up a scrape or the time-series database. */
#include "coordinator/metrics.h"

#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"

enum { METRICS_CODES = 17, METRICS_TOP_ADAPTERS = 64, HIST_MAX = 16, PUBLISH_EVERY_NS = 50 * 1000 * 1000 };

static const double ttft_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 };
static const double tpot_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5 };
#define N_BOUNDS(a) ((int)(sizeof a / sizeof a[0]))

typedef struct hist { uint64_t bucket[HIST_MAX + 1]; uint64_t count; double sum; } hist;
typedef struct listed_adapter { char name[256]; int pages; uint64_t last_used; } listed_adapter;

/* Decode-only steps and steps with prefill chunks cost very differently per token, so they are told
 * apart: a dashboard divides seconds by steps or tokens per kind. */
enum { STEP_DECODE, STEP_MIXED, STEP_KINDS };
static const char *const step_kind_names[STEP_KINDS] = { "decode", "mixed" };
typedef struct step_kind { uint64_t steps, tokens, seqs; double seconds; } step_kind;

typedef struct snapshot {
    uint64_t requests[METRICS_CODES];
    uint64_t tokens, prompt_tokens, steps, preemptions;
    uint64_t adapter_loads, adapter_evictions, adapter_bytes;
    double adapter_read_s, adapter_copy_s;
    int waiting, running, batch;
    int pages_total, pages_used[PAGE_USE_COUNT];
    int adapters_registered, adapters_resident, n_listed;
    listed_adapter listed[METRICS_TOP_ADAPTERS];
    hist ttft, tpot;
    step_kind by_kind[STEP_KINDS];
} snapshot;

struct metrics {
    snapshot live;              // the loop's; no lock
    int64_t last_publish_ns;
    pthread_mutex_t lock;       // guards shared
    snapshot shared;
    struct MHD_Daemon *httpd;
    int port;
};

static void hist_observe(hist *h, const double *bounds, int n, double v)
{
    int i = 0;
    while (i < n && v > bounds[i]) i++;
    h->bucket[i]++;             // bucket n is +Inf
    h->count++;
    h->sum += v;
}

void metrics_request_done(metrics *m, ls_status code)
{
    m->live.requests[(unsigned)code < METRICS_CODES ? code : LS_UNKNOWN]++;
}

void metrics_prompt(metrics *m, int prompt_tokens) { m->live.prompt_tokens += (uint64_t)prompt_tokens; }

void metrics_first_token(metrics *m, double s)
{
    m->live.tokens++;
    hist_observe(&m->live.ttft, ttft_bounds, N_BOUNDS(ttft_bounds), s);
}

void metrics_next_token(metrics *m, double s)
{
    m->live.tokens++;
    hist_observe(&m->live.tpot, tpot_bounds, N_BOUNDS(tpot_bounds), s);
}

void metrics_step(metrics *m, int batch, int tokens, int decode_only, double seconds)
{
    m->live.steps++;
    m->live.batch = batch;
    step_kind *k = &m->live.by_kind[decode_only ? STEP_DECODE : STEP_MIXED];
    k->steps++;
    k->tokens += (uint64_t)tokens;
    k->seqs += (uint64_t)batch;
    k->seconds += seconds;
}

void metrics_adapter_times(metrics *m, double read_s, double copy_s)
{
    m->live.adapter_read_s += read_s;
    m->live.adapter_copy_s += copy_s;
}

/* Keeps the METRICS_TOP_ADAPTERS most recently used resident adapters, newest first (insertion into a
 * short sorted array: the pass is over the registry's slots, the list stays small). */
static void list_adapter(snapshot *s, const adapter *a)
{
    int n = s->n_listed, at = n;
    while (at > 0 && s->listed[at - 1].last_used < a->last_used) at--;
    if (at >= METRICS_TOP_ADAPTERS) return;
    if (n == METRICS_TOP_ADAPTERS) n--;
    memmove(&s->listed[at + 1], &s->listed[at], (size_t)(n - at) * sizeof s->listed[0]);
    listed_adapter *l = &s->listed[at];
    snprintf(l->name, sizeof l->name, "%s", a->name);
    l->pages = a->n_pages;
    l->last_used = a->last_used;
    s->n_listed = n + 1;
}

static void read_gauges(snapshot *s, const scheduler *sc)
{
    const adapter_registry *r = &sc->adapters;
    s->waiting = sc->waiting.n;
    s->running = sc->running.n;
    s->preemptions = sc->preemptions;
    s->pages_total = sc->pool.n_pages;
    memcpy(s->pages_used, sc->pool.in_use, sizeof s->pages_used);
    s->adapter_loads = r->loads;
    s->adapter_evictions = r->evictions;
    s->adapter_bytes = r->rows_bytes_copied;
    s->adapters_registered = r->n;
    s->adapters_resident = s->n_listed = 0;
    for (int i = 0; i < r->cap; i++) {
        const adapter *a = r->slots[i];
        if (!a || !a->resident) continue;
        s->adapters_resident++;
        list_adapter(s, a);
    }
}

void metrics_publish(metrics *m, const scheduler *s, int force)
{
    int64_t t = clock_now_ns();
    if (!force && t - m->last_publish_ns < PUBLISH_EVERY_NS) return;
    m->last_publish_ns = t;
    read_gauges(&m->live, s);
    pthread_mutex_lock(&m->lock);
    m->shared = m->live;
    pthread_mutex_unlock(&m->lock);
}

/* ---- the text format ---------------------------------------------------------------------------- */

typedef struct text { char *p; size_t n, cap; int oom; } text;

static void text_printf(text *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
}

static void family(text *b, const char *name, const char *type, const char *help)
{
    text_printf(b, "# HELP loraserve_%s %s\n# TYPE loraserve_%s %s\n", name, help, name, type);
}

static void scalar(text *b, const char *name, const char *type, const char *help, double v)
{
    family(b, name, type, help);
    text_printf(b, "loraserve_%s %.17g\n", name, v);
}

static void hist_write(text *b, const char *name, const char *help, const hist *h, const double *bounds, int n)
{
    family(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < n; i++) {
        cum += h->bucket[i];
        text_printf(b, "loraserve_%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
    }
    text_printf(b, "loraserve_%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    text_printf(b, "loraserve_%s_sum %.17g\nloraserve_%s_count %llu\n", name, h->sum, name,
                (unsigned long long)h->count);
}

/* A label value: backslash, double quote and newline escaped, as the format requires. */
static void label_value(text *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') text_printf(b, "\\%c", *v);
        else if (*v == '\n') text_printf(b, "\\n");
        else text_printf(b, "%c", *v);
    }
}

static void requests_write(text *b, const snapshot *s)
{
    family(b, "requests_total", "counter", "Generate calls by final gRPC status (those that reached the engine)");
    for (int c = 0; c < METRICS_CODES; c++)
        if (s->requests[c] || c == LS_OK)
            text_printf(b, "loraserve_requests_total{code=\"%s\"} %llu\n", ls_status_name((ls_status)c),
                        (unsigned long long)s->requests[c]);
}

static void pool_write(text *b, const snapshot *s)
{
    scalar(b, "pool_pages_capacity", "gauge", "pages in each worker's unified pool", s->pages_total);
    family(b, "pool_pages", "gauge", "pool pages by use (kv: KV cache, adapter: LoRA rows, free)");
    text_printf(b, "loraserve_pool_pages{use=\"kv\"} %d\nloraserve_pool_pages{use=\"adapter\"} %d\n"
                   "loraserve_pool_pages{use=\"free\"} %d\n", s->pages_used[PAGE_KV], s->pages_used[PAGE_ADAPTER],
                s->pages_total - s->pages_used[PAGE_KV] - s->pages_used[PAGE_ADAPTER]);
}

static void adapters_write(text *b, const snapshot *s)
{
    scalar(b, "adapters_registered", "gauge", "adapters registered on every rank", s->adapters_registered);
    scalar(b, "adapters_resident", "gauge", "adapters whose rows are in the pool", s->adapters_resident);
    family(b, "adapter_resident_pages", "gauge",
           "pool pages of a resident adapter (the most recently used resident adapters only)");
    for (int i = 0; i < s->n_listed; i++) {
        text_printf(b, "loraserve_adapter_resident_pages{adapter=\"");
        label_value(b, s->listed[i].name);
        text_printf(b, "\"} %d\n", s->listed[i].pages);
    }
    scalar(b, "adapter_loads_total", "counter", "adapter copies into the pool", (double)s->adapter_loads);
    scalar(b, "adapter_evictions_total", "counter", "idle adapters evicted from the pool", (double)s->adapter_evictions);
    scalar(b, "adapter_copy_bytes_total", "counter", "bytes of adapter rows copied host to device, per worker",
           (double)s->adapter_bytes);
    scalar(b, "adapter_read_seconds_total", "counter",
           "host time worker rank 1 spent reading adapter files into memory (CPU backend: with the copy)",
           s->adapter_read_s);
    scalar(b, "adapter_copy_seconds_total", "counter",
           "device time of worker rank 1's host-to-device adapter copies (copy stream, overlapping compute)",
           s->adapter_copy_s);
}

/* One counter family with a series per kind of step. */
static void by_kind_write(text *b, const char *name, const char *help, const double v[STEP_KINDS])
{
    family(b, name, "counter", help);
    for (int i = 0; i < STEP_KINDS; i++)
        text_printf(b, "loraserve_%s{kind=\"%s\"} %.17g\n", name, step_kind_names[i], v[i]);
}

static void steps_write(text *b, const snapshot *s)
{
    const step_kind *d = &s->by_kind[STEP_DECODE], *x = &s->by_kind[STEP_MIXED];
    scalar(b, "steps_total", "counter", "steps run by the workers", (double)s->steps);
    by_kind_write(b, "steps_by_kind_total",
                  "steps by kind (decode: every sequence brings its last generated token; mixed: prompt chunks too)",
                  (double[]){ (double)d->steps, (double)x->steps });
    by_kind_write(b, "step_tokens_total", "tokens processed by steps of each kind (prompt chunks + decode tokens)",
                  (double[]){ (double)d->tokens, (double)x->tokens });
    by_kind_write(b, "step_sequences_total", "sequences in steps of each kind",
                  (double[]){ (double)d->seqs, (double)x->seqs });
    by_kind_write(b, "step_seconds_total", "seconds from sending a step's plan to its sampled ids, by kind",
                  (double[]){ d->seconds, x->seconds });
}

static void metrics_format(text *b, const snapshot *s)
{
    requests_write(b, s);
    scalar(b, "requests_waiting", "gauge", "requests queued for admission", s->waiting);
    scalar(b, "requests_running", "gauge", "requests in the running batch", s->running);
    scalar(b, "batch_size", "gauge", "sequences in the last step", s->batch);
    steps_write(b, s);
    scalar(b, "generated_tokens_total", "counter", "tokens generated", (double)s->tokens);
    scalar(b, "prompt_tokens_total", "counter", "prompt tokens of admitted requests", (double)s->prompt_tokens);
    scalar(b, "preemptions_total", "counter", "running requests preempted for KV pages", (double)s->preemptions);
    hist_write(b, "time_to_first_token_seconds", "arrival to first generated token", &s->ttft, ttft_bounds,
               N_BOUNDS(ttft_bounds));
    hist_write(b, "time_per_output_token_seconds", "time between consecutive tokens of a request", &s->tpot,
               tpot_bounds, N_BOUNDS(tpot_bounds));
    pool_write(b, s);
    adapters_write(b, s);
}

/* ---- the HTTP endpoint --------------------------------------------------------------------------- */

static enum MHD_Result http_reply(struct MHD_Connection *conn, unsigned code, char *body, size_t n)
{
    struct MHD_Response *rsp = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
    if (!rsp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(rsp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result r = MHD_queue_response(conn, code, rsp);
    MHD_destroy_response(rsp);
    return r;
}

static enum MHD_Result http_handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version; (void)upload; (void)upload_size; (void)con_cls;
    metrics *m = cls;
    text b = { 0 };
    unsigned code = MHD_HTTP_OK;
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
        text_printf(&b, "only GET\n");
    } else if (strcmp(url, "/metrics")) {
        code = MHD_HTTP_NOT_FOUND;
        text_printf(&b, "metrics are at /metrics\n");
    } else {
        snapshot *s = malloc(sizeof *s);
        if (!s) return MHD_NO;
        pthread_mutex_lock(&m->lock);
        *s = m->shared;
        pthread_mutex_unlock(&m->lock);
        metrics_format(&b, s);
        free(s);
    }
    if (b.oom) {
        free(b.p);
        return MHD_NO;
    }
    return http_reply(conn, code, b.p, b.n);
}

/* "host:port" or "[v6]:port" to a socket address. */
static ls_status parse_listen(const char *listen, struct addrinfo **out, ls_error *err)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1]) return ls_fail(err, LS_INVALID_ARGUMENT, "--metrics-listen %s: expected host:port", listen);
    char host[256];
    const char *h = listen;
    size_t n = (size_t)(colon - listen);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') { h++; n -= 2; }
    if (n >= sizeof host) return ls_fail(err, LS_INVALID_ARGUMENT, "--metrics-listen %s: host too long", listen);
    memcpy(host, h, n);
    host[n] = 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    int rc = getaddrinfo(n ? host : NULL, colon + 1, &hints, out);
    if (rc) return ls_fail(err, LS_INVALID_ARGUMENT, "--metrics-listen %s: %s", listen, gai_strerror(rc));
    return LS_OK;
}

static ls_status http_start(metrics *m, const char *listen, ls_error *err)
{
    struct addrinfo *ai = NULL;
    ls_status st = parse_listen(listen, &ai, err);
    if (st != LS_OK) return st;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    m->httpd = MHD_start_daemon(flags, 0, NULL, NULL, http_handle, m, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!m->httpd) return ls_fail(err, LS_UNAVAILABLE, "cannot serve metrics on %s", listen);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->httpd, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : 0;
    return LS_OK;
}

ls_status metrics_create(metrics **out, const char *listen, ls_error *err)
{
    metrics *m = ls_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    *out = m;
    if (!listen || !listen[0]) return LS_OK;
    ls_status st = http_start(m, listen, err);
    if (st != LS_OK) {
        metrics_free(m);
        *out = NULL;
        return st;
    }
    const char *colon = strrchr(listen, ':');
    LOG_I("metrics on http://%.*s:%d/metrics", (int)(colon - listen), listen, m->port);
    return LS_OK;
}

int metrics_port(const metrics *m) { return m ? m->port : 0; }

void metrics_free(metrics *m)
{
    if (!m) return;
    if (m->httpd) MHD_stop_daemon(m->httpd);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
