/* The one configuration table of the server: every setting has a flag, an environment variable (what
 * deploy/slurm and deploy/k8s set), a default and a line of help. Precedence: flag > environment >
 * default. Model shape is not here: it comes from the model's config.json. */
#ifndef LORASERVE_LAUNCH_CONFIG_H
#define LORASERVE_LAUNCH_CONFIG_H

#include <stdio.h>

typedef struct ls_config {
    const char *model;              // HF model directory; empty = the built-in demo model
    const char *demo_dir;           // where the demo model is generated
    const char *adapters;           // root of PEFT adapter directories; "" = none
    const char *listen;             // gRPC address
    const char *port_file;          // bound port written here once serving
    const char *pid_file;           // coordinator pid written here (send SIGTERM to it to stop)
    const char *log_level;          // error, warn, info, debug
    const char *backend;            // auto, cpu, cuda
    int max_waiting;
    int max_batch;
    int max_step_tokens;
    int page_tokens;
    int kv_cache_mb;
    int max_pages;                  // 0 = as many as kv_cache_mb allows
    int default_max_new_tokens;
    int max_request_bytes;
    int max_concurrent_streams;
    double shutdown_grace_s;
    double step_timeout_s;          // 0 = no limit
    const char *metrics_listen;     // "" = no metrics endpoint
    int allow_adapter_base_mismatch;
    int adapter_cache_mb;
    int cuda_graphs;
    int prefetch_adapters;
    double test_load_delay_s;       // tests only: workers report their load this much later
} ls_config;

/* Fills cfg from defaults, environment and argv. Returns 0, 1 when --help was printed, or -1 after
 * printing the problem to `err`. */
int config_parse(ls_config *cfg, int argc, char **argv, FILE *err);
void config_print_help(FILE *out);

#endif
