/* Golden check of multi-LoRA against Hugging Face PEFT: the fixture base model and its adapters
 * (tests/golden_lora, made by make_golden_lora.py) are registered in the worker's adapter store and
 * given pool pages; then every (adapter, prompt) case runs greedy steps alone, and all 32 cases run
 * again together in ONE batch (7 adapters of ranks 1..64 incl. rsLoRA, rank/alpha patterns and
 * MLP-only, mixed with the base model), under mpirun with T workers. Logits must match PEFT's within
 * golden_util.h's tolerance and greedy tokens exactly.
 * Steps go through worker_forward with plans as the coordinator builds them: every adapter a sequence
 * uses is listed (plan_adapter), with copy = 1 on the first step of each run (a re-copy into the same
 * pages from the second run on) and copy = 0 after, so the copy-in path of the backend is the one
 * checked. LORASERVE_BACKEND=cuda (with LORASERVE_CUDA_DTYPE=f32 for these tolerances) checks the GPU
 * path; the default is the CPU. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "tests/golden/golden_util.h"
#include "tests/tap.h"
#include "worker/worker.h"

#define MAX_CASES 64
#define MAX_ADAPTERS 16

typedef struct lora_golden {
    int max_new, n_prompts, n_cases, n_adapters;
    int32_t *prompt[8];
    int prompt_len[8];
    char adapter_name[MAX_ADAPTERS][64];
    struct { int adapter; int prompt; int32_t *greedy; char logits[96]; } cases[MAX_CASES];
    st_file *logits;
} lora_golden;

static int find_adapter(const lora_golden *g, const char *name)
{
    for (int i = 0; i < g->n_adapters; i++)
        if (!strcmp(g->adapter_name[i], name)) return i;
    return -1;
}

static int load(lora_golden *g, const char *dir)
{
    char path[4200];
    ls_error err = { 0 };
    json_doc *doc;
    snprintf(path, sizeof path, "%s/golden.json", dir);
    if (json_parse_file(&doc, path, 1 << 24, &err) != LS_OK) { fprintf(stderr, "%s\n", err.msg); return -1; }
    const json *root = json_root(doc), *prompts = json_get(root, "prompts"), *ads = json_get(root, "adapters");
    const json *cases = json_get(root, "cases");
    int64_t mn = 0;
    json_get_int(root, "max_new_tokens", 0, &mn, &err);
    g->max_new = (int)mn;
    g->n_prompts = (int)prompts->len;
    for (int i = 0; i < g->n_prompts && i < 8; i++) g->prompt[i] = golden_int_array(&prompts->items[i], &g->prompt_len[i]);
    g->n_adapters = (int)ads->len < MAX_ADAPTERS ? (int)ads->len : MAX_ADAPTERS;
    for (int i = 0; i < g->n_adapters; i++)
        snprintf(g->adapter_name[i], sizeof g->adapter_name[i], "%s", json_get_str(&ads->items[i], "name", NULL, NULL));
    g->n_cases = (int)cases->len < MAX_CASES ? (int)cases->len : MAX_CASES;
    for (int i = 0; i < g->n_cases; i++) {
        const json *c = &cases->items[i];
        int64_t pr = 0, n;
        json_get_int(c, "prompt", 0, &pr, NULL);
        g->cases[i].prompt = (int)pr;
        g->cases[i].adapter = find_adapter(g, json_get_str(c, "adapter", NULL, NULL));   // -1 = base
        int nn;
        g->cases[i].greedy = golden_int_array(json_get(c, "greedy"), &nn);
        snprintf(g->cases[i].logits, sizeof g->cases[i].logits, "%s", json_get_str(c, "logits", NULL, NULL));
        (void)n;
    }
    json_free(doc);
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    if (st_open(&g->logits, path, &err) != LS_OK) { fprintf(stderr, "%s\n", err.msg); return -1; }
    return 0;
}

/* Where each adapter's rows live: pages from the top of the pool, as the coordinator would give. */
typedef struct placement {
    int32_t *pages[MAX_ADAPTERS];
    int n_pages[MAX_ADAPTERS];
} placement;

/* Registers every adapter under slot = its index (what a PLAN_ADAPTER_REGISTER does on each rank) and
 * reserves its pages; the rows are copied in by the first step that lists it. */
static int register_adapters(worker *wk, const lora_golden *g, const char *dir, int *next_page, placement *pl)
{
    for (int i = 0; i < g->n_adapters; i++) {
        char path[4200];
        ls_error err = { 0 };
        snprintf(path, sizeof path, "%s/adapters/%s", dir, g->adapter_name[i]);
        if (adapter_store_register(&wk->store, i, path, "base", 0, &err) != LS_OK) {
            fprintf(stderr, "r%d: %s: %s\n", wk->col.rank, g->adapter_name[i], err.msg);
            return -1;
        }
        int n = lora_layout_pages(&wk->w.cfg, &wk->store.slots[i]->peft.shape, wk->w.tp_size, wk->store.page_floats);
        pl->n_pages[i] = n;
        pl->pages[i] = ls_xcalloc((size_t)n, sizeof *pl->pages[i]);
        for (int k = 0; k < n; k++) pl->pages[i][k] = (*next_page)--;
    }
    return 0;
}

/* Plan hook: lists every adapter the plan's sequences use, once, copied in at the first step of a run. */
static void add_adapters(void *ctx, plan *p, int step)
{
    const placement *pl = ctx;
    int listed[MAX_ADAPTERS] = { 0 };
    for (int s = 0; s < p->h.n_seqs; s++) {
        int a = p->seqs[s].adapter;
        if (a < 0 || listed[a]) continue;
        listed[a] = 1;
        plan_add_adapter(p, a, pl->pages[a], pl->n_pages[a], step == 0);
    }
}

/* Runs cases [first, first+count) together, greedy with teacher forcing; checks on worker rank 0. */
static void run_cases(worker *wk, const lora_golden *g, placement *pl, int first, int count, int page_tokens,
                      int *next_page, const char *label)
{
    golden_case *c = ls_xcalloc((size_t)count, sizeof *c);
    for (int i = 0; i < count; i++) {
        int pr = g->cases[first + i].prompt;
        c[i] = (golden_case){ .prompt = g->prompt[pr], .prompt_len = g->prompt_len[pr],
                              .greedy = g->cases[first + i].greedy,
                              .logits = st_find(g->logits, g->cases[first + i].logits),
                              .adapter = g->cases[first + i].adapter };
    }
    golden_result r = golden_run(wk, c, count, g->max_new, page_tokens, next_page, add_adapters, pl);
    if (wk->col.rank == 0) {
        TAP_OK(r.worst <= 1.0, "%s: logits within 1e-4 + 1e-4*|ref| of PEFT (max |diff| %.3g)", label, r.max_abs);
        TAP_OK(r.tokens_ok, "%s: greedy tokens identical to PEFT", label);
    }
    free(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    log_init(rank, LOG_WARN);
    if (argc < 2) { fprintf(stderr, "usage: test_golden_lora FIXTURE_DIR\n"); MPI_Abort(MPI_COMM_WORLD, 2); }
    lora_golden g;
    memset(&g, 0, sizeof g);
    worker wk;
    ls_error err = { 0 };
    char base[4200];
    snprintf(base, sizeof base, "%s/base", argv[1]);
    const char *backend = getenv("LORASERVE_BACKEND") ? getenv("LORASERVE_BACKEND") : "cpu";
    int page_tokens = 4, n_pages = 4096, next_page = n_pages - 1;
    placement pl;
    memset(&pl, 0, sizeof pl);
    if (load(&g, argv[1]) != 0 || worker_load(&wk, base, MPI_COMM_WORLD, backend, &err) != LS_OK ||
        worker_start(&wk, n_pages, page_tokens, 1024, &err) != LS_OK ||
        register_adapters(&wk, &g, argv[1], &next_page, &pl)) {
        fprintf(stderr, "r%d: cannot set up %s: %s\n", rank, argv[1], err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    wk.keep_logits = 1;
    if (rank == 0) TAP_DIAG("%s (%s backend) at TP=%d: %d adapters, %d cases x %d greedy steps", argv[1],
                            wk.cuda ? "cuda" : "cpu", size, g.n_adapters, g.n_cases, g.max_new);
    char label[128];
    for (int i = 0; i < g.n_cases; i++) {
        int a = g.cases[i].adapter;
        snprintf(label, sizeof label, "%s, prompt %d alone", a < 0 ? "base" : g.adapter_name[a], g.cases[i].prompt);
        run_cases(&wk, &g, &pl, i, 1, page_tokens, &next_page, label);
    }
    run_cases(&wk, &g, &pl, 0, g.n_cases, page_tokens, &next_page, "all cases in one mixed-adapter batch");
    worker_free(&wk);
    st_close(g.logits);
    for (int i = 0; i < g.n_adapters; i++) free(pl.pages[i]);
    int rc = rank == 0 ? tap_done() : 0;
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
