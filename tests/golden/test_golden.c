/* Golden check of the base model against Hugging Face transformers: runs the worker forward pass on a
 * fixture model (tests/golden/<name>/, made by make_golden.py) under mpirun with T worker ranks, and
 * compares, for every prompt, the logits of the prompt's last position and of each of the greedy steps
 * with the recorded ones, and the greedy tokens exactly. Prompts run one at a time and then all together
 * in one batch (prefills side by side, decodes side by side), over a scrambled page table, so batching
 * and paging cannot change the numbers.
 * Tolerances: golden_util.h. The recorded top-1/top-2 margin is >= 1e-3, so greedy tokens must match
 * exactly. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "tests/golden/golden_util.h"
#include "tests/tap.h"
#include "worker/worker.h"

#define MAX_PROMPTS 8

typedef struct golden {
    int n_prompts, max_new;
    int32_t *prompt[MAX_PROMPTS], *greedy[MAX_PROMPTS];
    int prompt_len[MAX_PROMPTS];
    st_file *logits;
} golden;

static int golden_load(golden *g, const char *dir)
{
    char path[4200];
    ls_error err = { 0 };
    json_doc *doc;
    snprintf(path, sizeof path, "%s/golden.json", dir);
    if (json_parse_file(&doc, path, 1 << 24, &err) != LS_OK) { fprintf(stderr, "%s\n", err.msg); return -1; }
    const json *root = json_root(doc), *prompts = json_get(root, "prompts"), *greedy = json_get(root, "greedy");
    int64_t mn = 0;
    json_get_int(root, "max_new_tokens", 0, &mn, &err);
    g->max_new = (int)mn;
    g->n_prompts = (int)prompts->len < MAX_PROMPTS ? (int)prompts->len : MAX_PROMPTS;
    for (int i = 0; i < g->n_prompts; i++) {
        int n;
        g->prompt[i] = golden_int_array(&prompts->items[i], &g->prompt_len[i]);
        g->greedy[i] = golden_int_array(&greedy->items[i], &n);
    }
    json_free(doc);
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    if (st_open(&g->logits, path, &err) != LS_OK) { fprintf(stderr, "%s\n", err.msg); return -1; }
    return 0;
}

/* Runs prompts [first, first+count) together; checks logits and tokens on rank 0. */
static void run_batch(worker *wk, golden *g, int first, int count, int page_tokens, int *next_page, const char *label)
{
    golden_case *c = ls_xcalloc((size_t)count, sizeof *c);
    for (int i = 0; i < count; i++) {
        char name[32];
        snprintf(name, sizeof name, "logits.%d", first + i);
        c[i] = (golden_case){ .prompt = g->prompt[first + i], .prompt_len = g->prompt_len[first + i],
                              .greedy = g->greedy[first + i], .logits = st_find(g->logits, name), .adapter = -1 };
    }
    golden_result r = golden_run(wk, c, count, g->max_new, page_tokens, next_page, NULL, NULL);
    if (wk->col.rank == 0) {
        TAP_OK(r.worst <= 1.0, "%s: logits within 1e-4 + 1e-4*|ref| (max |diff| %.3g)", label, r.max_abs);
        TAP_OK(r.tokens_ok, "%s: greedy tokens identical", label);
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
    if (argc < 2) { fprintf(stderr, "usage: test_golden FIXTURE_DIR\n"); MPI_Abort(MPI_COMM_WORLD, 2); }
    golden g = { 0 };
    // LORASERVE_BACKEND=cuda (with LORASERVE_CUDA_DTYPE=f32 for these tolerances) checks the GPU path.
    const char *backend = getenv("LORASERVE_BACKEND") ? getenv("LORASERVE_BACKEND") : "cpu";
    worker wk;
    ls_error err = { 0 };
    int page_tokens = 4, n_pages = 1024;
    if (golden_load(&g, argv[1]) != 0 || worker_load(&wk, argv[1], MPI_COMM_WORLD, backend, &err) != LS_OK ||
        worker_start(&wk, n_pages, page_tokens, 256, &err) != LS_OK) {
        fprintf(stderr, "r%d: cannot load %s: %s\n", rank, argv[1], err.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    wk.keep_logits = 1;
    if (rank == 0) TAP_DIAG("%s (%s backend) at TP=%d: %d prompts x %d greedy steps", argv[1], wk.cuda ? "cuda" : "cpu", size, g.n_prompts, g.max_new);
    int next_page = n_pages - 1;
    char label[64];
    for (int i = 0; i < g.n_prompts; i++) {
        snprintf(label, sizeof label, "prompt %d (%d tokens) alone", i, g.prompt_len[i]);
        run_batch(&wk, &g, i, 1, page_tokens, &next_page, label);
    }
    run_batch(&wk, &g, 0, g.n_prompts, page_tokens, &next_page, "all prompts in one batch");
    worker_free(&wk);
    st_close(g.logits);
    for (int i = 0; i < g.n_prompts; i++) { free(g.prompt[i]); free(g.greedy[i]); }
    int rc = rank == 0 ? tap_done() : 0;
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
