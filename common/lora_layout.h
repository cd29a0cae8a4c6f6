/* How a LoRA adapter's weights sit in the unified page pool, computed the same way by the coordinator
 * (which allocates the pages) and by every worker (which fills and reads them).
 *
 * Page geometry. A page is one KV page: page_tokens token slots x layers x (K, V) x local kv heads x
 * head_dim floats. The paper's page is one vector of the hidden size, which does not fit GQA (K/V rows
 * are narrower than H) nor MLP LoRA (rows of the intermediate size I). We generalise to "rows": every
 * adapter module shard is a list of rows, A rows first (length = the module's local input width) then
 * B^T rows (length = its local output width), and rows are packed into pages in a fixed order
 * (layer, module q,k,v,o,gate,up,down, A rows, B rows) without ever straddling a page. A rank-r adapter
 * therefore costs pages in proportion to r (plus at most one partly filled page), any free page fits a
 * KV block or adapter rows, and the kernels address a row by (page, offset). The only requirement is
 * that the longest row fits a page, checked at start-up.
 *
 * Tensor parallelism (S-LoRA partitioning, T ranks, rank t):
 *   column-split modules (q, k, v, gate, up): A is split on the rank dim in near-equal parts (the first
 *     r % T ranks hold one row more; a rank may hold none), full input width; B^T keeps all r rows, output columns of this rank's slice. The shrink output
 *     (n, r_local) is all-gathered to (n, r) before the expand.
 *   row-split modules (o, down): A keeps all r rows over this rank's input slice; the partial shrink
 *     (n, r) is all-reduced; B^T keeps all r rows over this rank's slice of the output (H/T columns),
 *     added into the rank's slice of the base partial sum, which the base all-reduce completes.
 *
 * Worked examples (page_tokens 16, fp32 on the CPU backend; the CUDA backend stores fp16/bf16, halving
 * bytes but not the counts):
 *   Llama-2-7B (H 4096, I 11008, 32 layers, 32 heads = 32 kv heads, head_dim 128), TP=1:
 *     page = 16 x 32 x 2 x 32 x 128 = 4,194,304 floats (16 MiB); rank 8 on all 7 modules: per layer
 *     A rows 8 x (6 x 4096 + 11008) + B^T rows 8 x (5 x 4096 + 2 x 11008) = 624,640 floats, x 32 layers
 *     = 20.0 M floats = 5 pages; rank 16: 10, rank 32: 20, rank 64: 39 pages. TP=2: pages and shards
 *     both halve, so again 5 / 10 / 20 / 39 pages per rank.
 *   Llama-3-8B (H 4096, I 14336, 32 layers, 32 heads, 8 kv heads, head_dim 128), TP=1:
 *     page = 16 x 32 x 2 x 8 x 128 = 1,048,576 floats (4 MiB: GQA makes KV pages 4x smaller); k/v
 *     outputs are 1024 wide. Rank 8 on all 7 modules: A 8 x (6 x 4096 + 14336) + B^T 8 x (3 x 4096 +
 *     2 x 1024 + 2 x 14336) = 655,360 floats per layer, 21.0 M floats = 21 pages (20 full + the packing
 *     remainder); rank 16: 41, rank 32: 81, rank 64: 161 pages; the same per rank at TP=2.
 * (tests/common/test_lora_layout.c recomputes these numbers.)
 */
#ifndef LORASERVE_COMMON_LORA_LAYOUT_H
#define LORASERVE_COMMON_LORA_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "common/model_config.h"

typedef enum lora_module {
    LORA_Q = 0, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_N_MODULES
} lora_module;

/* Ranks and scales of one adapter, per (layer, module): rank 0 = the module is not adapted. */
typedef struct lora_shape {
    int n_layers;
    int16_t *rank;              // (n_layers * LORA_N_MODULES)
    float *scale;               // (n_layers * LORA_N_MODULES): alpha / r, or alpha / sqrt(r) with rsLoRA
    int max_rank;
} lora_shape;

/* Geometry of one module's shard on one rank. */
typedef struct lora_module_dims {
    int in_local, out_local;    // A row width and B^T row width on this rank
    int a_rank0, a_rows;        // A rows held: [a_rank0, a_rank0 + a_rows) of r
    int split_rank;             // 1: column-split module (shrink gathered); 0: row-split (shrink all-reduced)
    int out_offset;             // row-split: where this rank's B^T columns land in the full output
} lora_module_dims;

const char *lora_module_name(lora_module m);     // "q_proj", ... "down_proj"
int lora_module_is_mlp(lora_module m);
/* Full (unsharded) input/output widths of a module. */
void lora_module_full_dims(const model_config *c, lora_module m, int *in, int *out);
lora_module_dims lora_module_shard(const model_config *c, lora_module m, int rank, int tp_rank, int tp_size);

/* Floats in one page and the longest row any adapter may have on a rank: start-up checks
 * lora_max_row_floats <= page floats. */
size_t lora_page_floats(const model_config *c, int tp_size, int page_tokens);
size_t lora_max_row_floats(const model_config *c, int tp_size);

/* Walks the rows of an adapter's shard in pool order. For each row, calls fn with (layer, module,
 * is_b, row index within A or B^T, page index within the adapter's pages, float offset in the page,
 * row length). Returns the number of pages used. fn may be NULL (just count). */
typedef void (*lora_row_fn)(void *ctx, int layer, lora_module m, int is_b, int row, int page, size_t offset,
                            int len);
int lora_layout_walk(const model_config *c, const lora_shape *s, int tp_rank, int tp_size, size_t page_floats,
                     lora_row_fn fn, void *ctx);
/* Pages the coordinator must allocate: the maximum over the tp_size ranks. */
int lora_layout_pages(const model_config *c, const lora_shape *s, int tp_size, size_t page_floats);

#endif
