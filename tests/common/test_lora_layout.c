/* The adapter row layout in pool pages: the worked examples of common/lora_layout.h (Llama-2-7B and
 * Llama-3-8B at TP=1 and TP=2) are recomputed here; pages grow with the rank and not beyond; no row
 * straddles a page; every rank's shard fits the pages the coordinator allocates (the max over ranks);
 * and the TP shards of each module cover A's rank rows and B's output columns exactly once. */
#include <stdlib.h>
#include <string.h>

#include "common/lora_layout.h"
#include "common/log.h"
#include "tests/tap.h"

static lora_shape uniform(int n_layers, int rank)
{
    lora_shape s = { .n_layers = n_layers, .max_rank = rank };
    s.rank = calloc((size_t)n_layers * LORA_N_MODULES, sizeof *s.rank);
    s.scale = calloc((size_t)n_layers * LORA_N_MODULES, sizeof *s.scale);
    for (int i = 0; i < n_layers * LORA_N_MODULES; i++) s.rank[i] = (int16_t)rank;
    return s;
}

typedef struct walk_check { size_t page_floats; int straddles; size_t floats; } walk_check;

static void check_row(void *ctx, int layer, lora_module m, int is_b, int row, int page, size_t off, int len)
{
    walk_check *w = ctx;
    (void)layer, (void)m, (void)is_b, (void)row, (void)page;
    if (off + (size_t)len > w->page_floats) w->straddles++;
    w->floats += (size_t)len;
}

static void worked_example(const char *name, model_config c, const int *want)
{
    for (int tp = 1; tp <= 2; tp++)
        for (int k = 0, r = 8; r <= 64; r *= 2, k++) {
            lora_shape s = uniform(c.n_layers, r);
            size_t pf = lora_page_floats(&c, tp, 16);
            int pages = lora_layout_pages(&c, &s, tp, pf);
            walk_check w = { .page_floats = pf };
            int mine = lora_layout_walk(&c, &s, tp - 1, tp, pf, check_row, &w);
            TAP_OK(pages == want[k] && mine <= pages && !w.straddles,
                   "%s TP=%d rank %d: %d pages (%zu floats each), no row straddles a page", name, tp, r, pages, pf);
            free(s.rank);
            free(s.scale);
        }
}

/* Over all TP ranks, A rank rows and B^T output columns of one module are covered exactly once. */
static void shard_coverage(const model_config *c, int tp, int rank)
{
    for (int m = 0; m < LORA_N_MODULES; m++) {
        int in, out, rows = 0, cols = 0, ok = 1;
        lora_module_full_dims(c, (lora_module)m, &in, &out);
        for (int t = 0; t < tp; t++) {
            lora_module_dims d = lora_module_shard(c, (lora_module)m, rank, t, tp);
            if (d.split_rank) {
                ok &= d.a_rank0 == rows && d.in_local == in;
                rows += d.a_rows;
            } else {
                ok &= d.a_rows == rank && d.in_local * tp == in;
                rows = rank;
            }
            ok &= d.out_offset == cols;
            cols += d.out_local;
        }
        TAP_OK(ok && rows == rank && cols == out, "%s TP=%d rank %d: shards cover A rows and B columns once",
               lora_module_name((lora_module)m), tp, rank);
    }
}

int main(void)
{
    log_init(0, LOG_WARN);
    model_config l2 = { .hidden_size = 4096, .intermediate_size = 11008, .n_layers = 32, .n_heads = 32,
                        .n_kv_heads = 32, .head_dim = 128 };
    model_config l3 = { .hidden_size = 4096, .intermediate_size = 14336, .n_layers = 32, .n_heads = 32,
                        .n_kv_heads = 8, .head_dim = 128 };
    static const int want_l2[] = { 5, 10, 20, 39 }, want_l3[] = { 21, 41, 81, 161 };
    worked_example("Llama-2-7B", l2, want_l2);
    worked_example("Llama-3-8B", l3, want_l3);
    model_config small = { .hidden_size = 64, .intermediate_size = 176, .n_layers = 2, .n_heads = 4,
                           .n_kv_heads = 2, .head_dim = 16 };
    shard_coverage(&small, 2, 3);
    shard_coverage(&small, 2, 1);
    shard_coverage(&l3, 4, 8);
    lora_shape none = uniform(2, 0);
    TAP_OK(lora_layout_pages(&small, &none, 1, 512) == 0, "an adapter of no module takes no page");
    free(none.rank);
    free(none.scale);
    return tap_done();
}
