/* The configuration table and its parser (see config.h). */
#include "launch/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { CFG_STR, CFG_INT, CFG_DOUBLE } cfg_type;

typedef struct cfg_entry {
    const char *flag, *env;
    cfg_type type;
    size_t offset;
    const char *dflt;
    double min, max;
    const char *help;
} cfg_entry;

#define F(field) offsetof(ls_config, field)
static const cfg_entry cfg_table[] = {
    { "model", "LORASERVE_MODEL", CFG_STR, F(model), "", 0, 0,
      "Hugging Face model directory (Llama/Mistral); empty serves the built-in demo model" },
    { "demo-dir", "LORASERVE_DEMO_DIR", CFG_STR, F(demo_dir), "/tmp/loraserve-demo", 0, 0,
      "where the built-in demo model is generated" },
    { "adapters", "LORASERVE_ADAPTERS", CFG_STR, F(adapters), "", 0, 0,
      "root directory of PEFT LoRA adapters; a request's adapter name is a directory under it" },
    { "allow-adapter-base-mismatch", "LORASERVE_ALLOW_ADAPTER_BASE_MISMATCH", CFG_INT,
      F(allow_adapter_base_mismatch), "0", 0, 1,
      "1: serve adapters whose base_model_name_or_path names another model" },
    { "adapter-cache-mb", "LORASERVE_ADAPTER_CACHE_MB", CFG_INT, F(adapter_cache_mb), "1024", 0, 1 << 24,
      "per worker: host memory for adapter shards ready to copy (the rest is read from disk on demand)" },
    { "prefetch-adapters", "LORASERVE_PREFETCH_ADAPTERS", CFG_INT, F(prefetch_adapters), "4", 0, 1024,
      "adapters of queued requests copied into the pool ahead, per step at most" },
    { "listen", "LORASERVE_LISTEN", CFG_STR, F(listen), "127.0.0.1:50051", 0, 0,
      "gRPC listen address host:port (port 0 picks a free one)" },
    { "port-file", "LORASERVE_PORT_FILE", CFG_STR, F(port_file), "", 0, 0,
      "write the bound port to this file once serving" },
    { "pid-file", "LORASERVE_PID_FILE", CFG_STR, F(pid_file), "", 0, 0,
      "write the coordinator's pid here (SIGTERM to it stops the server gracefully)" },
    { "backend", "LORASERVE_BACKEND", CFG_STR, F(backend), "auto", 0, 0,
      "auto (CUDA when built with it and every worker sees a GPU), cpu or cuda" },
    { "cuda-graphs", "LORASERVE_CUDA_GRAPHS", CFG_INT, F(cuda_graphs), "1", 0, 1,
      "CUDA backend: 1 replays decode steps as CUDA graphs (one capture per batch size), 0 launches every kernel" },
    { "log-level", "LORASERVE_LOG_LEVEL", CFG_STR, F(log_level), "info", 0, 0, "error, warn, info or debug" },
    { "max-waiting", "LORASERVE_MAX_WAITING", CFG_INT, F(max_waiting), "256", 1, 1e6,
      "queued requests at most; more are refused with RESOURCE_EXHAUSTED" },
    { "max-batch", "LORASERVE_MAX_BATCH", CFG_INT, F(max_batch), "64", 1, 4096, "running requests per step at most" },
    { "max-step-tokens", "LORASERVE_MAX_STEP_TOKENS", CFG_INT, F(max_step_tokens), "512", 1, 1 << 20,
      "token budget of one step (decode tokens + prefill chunks)" },
    { "page-tokens", "LORASERVE_PAGE_TOKENS", CFG_INT, F(page_tokens), "16", 1, 4096, "token slots per KV page" },
    { "kv-cache-mb", "LORASERVE_KV_CACHE_MB", CFG_INT, F(kv_cache_mb), "256", 1, 1 << 24,
      "memory per worker for the page pool, in MiB" },
    { "max-pages", "LORASERVE_MAX_PAGES", CFG_INT, F(max_pages), "0", 0, 1 << 30,
      "cap on the number of pool pages (0 = what kv-cache-mb allows)" },
    { "default-max-new-tokens", "LORASERVE_DEFAULT_MAX_NEW_TOKENS", CFG_INT, F(default_max_new_tokens), "128", 1,
      1 << 24, "max_new_tokens when a request leaves it 0" },
    { "max-request-bytes", "LORASERVE_MAX_REQUEST_BYTES", CFG_INT, F(max_request_bytes), "4194304", 1024, 1 << 30,
      "largest request message accepted" },
    { "max-concurrent-streams", "LORASERVE_MAX_CONCURRENT_STREAMS", CFG_INT, F(max_concurrent_streams), "1024", 1,
      1 << 20, "concurrent calls per client connection" },
    { "shutdown-grace-s", "LORASERVE_SHUTDOWN_GRACE_S", CFG_DOUBLE, F(shutdown_grace_s), "10", 0, 3600,
      "on SIGTERM, seconds in-flight calls may take to finish before they are cancelled" },
    { "step-timeout-s", "LORASERVE_STEP_TIMEOUT_S", CFG_DOUBLE, F(step_timeout_s), "120", 0, 86400,
      "a step the workers have not finished after this many seconds ends the job (every call UNAVAILABLE, exit "
      "non-zero); 0 = no limit" },
    { "metrics-listen", "LORASERVE_METRICS_LISTEN", CFG_STR, F(metrics_listen), "", 0, 0,
      "Prometheus metrics over HTTP at host:port/metrics (port 0 picks a free one, logged); empty = off" },
    { "test-load-delay-s", "LORASERVE_TEST_LOAD_DELAY_S", CFG_DOUBLE, F(test_load_delay_s), "0", 0, 3600,
      "for tests only: each worker waits this long after loading the model before reporting it loaded, so that "
      "the loading phase (health NOT_SERVING) can be observed" },
};
#define N_CFG (sizeof cfg_table / sizeof cfg_table[0])

static int set_value(ls_config *cfg, const cfg_entry *e, const char *val, FILE *err)
{
    char *p = (char *)cfg + e->offset, *end = NULL;
    if (e->type == CFG_STR) {
        *(const char **)p = val;
        return 0;
    }
    errno = 0;
    double d = strtod(val, &end);
    if (errno || end == val || *end || d < e->min || d > e->max || (e->type == CFG_INT && d != (double)(long)d)) {
        fprintf(err, "loraserve: --%s: '%s' is not %s in [%g, %g]\n", e->flag, val,
                e->type == CFG_INT ? "an integer" : "a number", e->min, e->max);
        return -1;
    }
    if (e->type == CFG_INT) *(int *)p = (int)d; else *(double *)p = d;
    return 0;
}

static const cfg_entry *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_CFG; i++)
        if (strlen(cfg_table[i].flag) == len && strncmp(cfg_table[i].flag, name, len) == 0) return &cfg_table[i];
    return NULL;
}

static int parse_args(ls_config *cfg, int argc, char **argv, FILE *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (strncmp(a, "--", 2) != 0) {
            fprintf(err, "loraserve: unexpected argument '%s' (see --help)\n", a);
            return -1;
        }
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        const cfg_entry *e = find_flag(a + 2, len);
        if (!e) {
            fprintf(err, "loraserve: unknown flag '%s' (see --help)\n", a);
            return -1;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            fprintf(err, "loraserve: --%s needs a value\n", e->flag);
            return -1;
        }
        if (set_value(cfg, e, val, err)) return -1;
    }
    return 0;
}

int config_parse(ls_config *cfg, int argc, char **argv, FILE *err)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_CFG; i++) {
        const char *env = getenv(cfg_table[i].env);
        if (set_value(cfg, &cfg_table[i], cfg_table[i].dflt, err)) return -1;
        if (env && set_value(cfg, &cfg_table[i], env, err)) {
            fprintf(err, "loraserve: (from environment variable %s)\n", cfg_table[i].env);
            return -1;
        }
    }
    return parse_args(cfg, argc, argv, err);
}

void config_print_help(FILE *out)
{
    fprintf(out, "usage: mpirun -np 1+T loraserve [flags]   (rank 0 coordinates, ranks 1..T are tensor-parallel workers)\n\n");
    for (size_t i = 0; i < N_CFG; i++)
        fprintf(out, "  --%-24s %-34s default '%s'\n      %s\n", cfg_table[i].flag, cfg_table[i].env, cfg_table[i].dflt,
                cfg_table[i].help);
}
