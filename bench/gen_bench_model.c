/* The model and adapters of the S-LoRA workload benchmark (bench/slora_sweep.sh): a Llama-2-7B- or
 * 13B-shaped directory with random fp16 weights, and PEFT adapters of S-LoRA's settings (ranks {8} for
 * S1, {8,16,32,64} for S2, on q,k,v,o) under many names. Thousands of 7B-shape adapters would take tens
 * of GB, so only a pool of distinct directories is written and the other names are symlinks into it:
 * the server registers, pages and evicts every name as its own adapter, which is what the benchmark
 * measures; only the disk (page cache) sees fewer distinct bytes.
 * usage: gen_bench_model model DIR 7b|13b|tiny
 *        gen_bench_model adapters BASE_DIR OUT_DIR N_NAMES N_DISTINCT RANKS [MODULES]
 *   RANKS and MODULES are comma lists (8,16,32,64; q_proj,k_proj,v_proj,o_proj, the default). Name i is
 *   OUT_DIR/a%04d of rank RANKS[i % #RANKS] (round-robin, as S-LoRA assigns them); names from N_DISTINCT
 *   on link to a<i % N_DISTINCT>, so N_DISTINCT must be a multiple of #RANKS for the ranks to agree. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/model_gen.h"
#include "common/peft_gen.h"

#define MAX_RANKS 16

static int usage(void)
{
    fprintf(stderr, "usage: gen_bench_model model DIR 7b|13b|tiny\n"
                    "       gen_bench_model adapters BASE_DIR OUT_DIR N_NAMES N_DISTINCT RANKS [MODULES]\n");
    return 2;
}

/* Llama-2 shapes as in the released config.json files (MHA, vocab 32000, context 4096). */
static int model_opts(const char *shape, model_gen_opts *o)
{
    *o = model_gen_demo_opts(32000);
    model_config *c = &o->cfg;
    if (!strcmp(shape, "tiny")) {       // the demo shape: lets the CPU test run this tool end to end
        o->cfg.vocab_size = 1024;
        return 0;
    }
    int big = !strcmp(shape, "13b");
    if (!big && strcmp(shape, "7b")) return -1;
    c->hidden_size = big ? 5120 : 4096;
    c->intermediate_size = big ? 13824 : 11008;
    c->n_layers = big ? 40 : 32;
    c->n_heads = c->n_kv_heads = big ? 40 : 32;
    c->head_dim = 128;
    c->max_position = 4096;
    o->dtype = "float16";
    o->n_shards = big ? 3 : 2;
    o->init_std = 0.02f;
    o->tiled = 1;
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "float16");
    return 0;
}

static int gen_model(const char *dir, const char *shape)
{
    model_gen_opts o;
    ls_error err = { 0 };
    if (model_opts(shape, &o)) return usage();
    double t = clock_now_s();
    if (model_gen_write(dir, &o, &err) != LS_OK) {
        fprintf(stderr, "gen_bench_model: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "gen_bench_model: %s model in %s (%.1f s)\n", shape, dir, clock_now_s() - t);
    return 0;
}

static int parse_ranks(const char *s, int *ranks)
{
    int n = 0;
    for (const char *p = s; *p && n < MAX_RANKS; n++) {
        char *end;
        long r = strtol(p, &end, 10);
        if (end == p || r < 1 || r > 1024 || (*end && *end != ',')) return -1;
        ranks[n] = (int)r;
        p = *end ? end + 1 : end;
    }
    return n;
}

static int parse_modules(const char *s, unsigned *mask)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    *mask = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int m = 0;
        while (m < LORA_N_MODULES && strcmp(tok, lora_module_name((lora_module)m))) m++;
        if (m == LORA_N_MODULES) {
            fprintf(stderr, "gen_bench_model: unknown module %s\n", tok);
            return -1;
        }
        *mask |= 1u << m;
    }
    return *mask ? 0 : -1;
}

/* A name that already points at the right place is kept, so a rerun over a larger N only adds links. */
static int link_name(const char *out, int i, int target)
{
    char path[4096], want[32], have[32];
    snprintf(path, sizeof path, "%s/a%04d", out, i);
    snprintf(want, sizeof want, "a%04d", target);
    ssize_t n = readlink(path, have, sizeof have - 1);
    if (n > 0 && (size_t)n == strlen(want) && !memcmp(have, want, (size_t)n)) return 0;
    if (n >= 0) unlink(path);
    if (symlink(want, path)) {
        fprintf(stderr, "gen_bench_model: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int gen_adapters(int argc, char **argv)
{
    const char *base = argv[2], *out = argv[3];
    int n_names = atoi(argv[4]), n_distinct = atoi(argv[5]), ranks[MAX_RANKS];
    int n_ranks = parse_ranks(argv[6], ranks);
    unsigned mask = 0;
    if (n_ranks < 1 || n_names < 1 || n_distinct < 1 || n_distinct % n_ranks ||
        parse_modules(argc > 7 ? argv[7] : "q_proj,k_proj,v_proj,o_proj", &mask)) {
        fprintf(stderr, "gen_bench_model: N_NAMES, N_DISTINCT > 0, N_DISTINCT a multiple of the rank count, "
                        "known modules\n");
        return usage();
    }
    if (n_distinct > n_names) n_distinct = n_names;
    model_config cfg;
    ls_error err = { 0 };
    if (model_config_load(&cfg, base, &err) != LS_OK) {
        fprintf(stderr, "gen_bench_model: %s\n", err.msg);
        return 1;
    }
    char trimmed[4096];
    snprintf(trimmed, sizeof trimmed, "%s", base);
    for (size_t k = strlen(trimmed); k > 1 && trimmed[k - 1] == '/'; k--) trimmed[k - 1] = 0;
    const char *slash = strrchr(trimmed, '/');
    double t = clock_now_s();
    for (int i = 0; i < n_distinct; i++) {
        peft_gen_opts o = peft_gen_default_opts();
        o.r = ranks[i % n_ranks];
        o.lora_alpha = 2.0 * o.r;
        o.target_mask = mask;
        o.dtype = "float16";
        o.seed = 5000 + (uint64_t)i;
        o.init_std = 0.01f;
        o.base_model = slash ? slash + 1 : trimmed;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/a%04d", out, i);
        if (peft_gen_write(dir, &cfg, &o, &err) != LS_OK) {
            fprintf(stderr, "gen_bench_model: %s: %s\n", dir, err.msg);
            return 1;
        }
    }
    for (int i = n_distinct; i < n_names; i++)
        if (link_name(out, i, i % n_distinct)) return 1;
    fprintf(stderr, "gen_bench_model: %d adapter names (%d distinct, ranks %s) in %s (%.1f s)\n", n_names,
            n_distinct, argv[6], out, clock_now_s() - t);
    return 0;
}

int main(int argc, char **argv)
{
    log_init(0, LOG_WARN);
    if (argc == 4 && !strcmp(argv[1], "model")) return gen_model(argv[2], argv[3]);
    if ((argc == 7 || argc == 8) && !strcmp(argv[1], "adapters")) return gen_adapters(argc, argv);
    return usage();
}
