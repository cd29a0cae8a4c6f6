/* LoRA in the forward pass (see lora_apply.h). */
#include "worker/lora_apply.h"

#include <string.h>

#include "common/log.h"
#include "common/peft.h"

void lora_batch_init(lora_batch *b, int max_tokens, int max_seqs)
{
    memset(b, 0, sizeof *b);
    b->max_tokens = max_tokens;
    b->max_seqs = max_seqs;
    b->seg_start = ls_xcalloc((size_t)max_seqs + 1, sizeof *b->seg_start);
    b->seg_adapter = ls_xcalloc((size_t)max_seqs, sizeof *b->seg_adapter);
    b->seg_rows = ls_xcalloc((size_t)max_seqs, sizeof *b->seg_rows);
    b->v = ls_xmalloc((size_t)max_tokens * 3 * PEFT_MAX_RANK * sizeof *b->v);
}

void lora_batch_free(lora_batch *b)
{
    free(b->seg_start);
    free(b->seg_adapter);
    free(b->seg_rows);
    free(b->v);
    memset(b, 0, sizeof *b);
}

void lora_batch_prepare(lora_batch *b, const plan *p, const adapter_store *s)
{
    LS_ASSERT(p->h.n_seqs <= b->max_seqs && p->h.n_tokens <= b->max_tokens);
    b->active = 0;
    b->stride = 0;
    b->n_segs = p->h.n_seqs;
    for (int i = 0; i < p->h.n_seqs; i++) {
        const plan_seq *q = &p->seqs[i];
        b->seg_start[i] = q->tok_off;
        b->seg_adapter[i] = q->adapter;
        if (q->adapter < 0) continue;
        b->active = 1;
        int r = s->slots[q->adapter]->peft.shape.max_rank;
        if (r > b->stride) b->stride = r;
    }
    b->seg_start[p->h.n_seqs] = p->h.n_tokens;
}

/* Rows of (layer, module) for each segment; 0 when no segment adapts this module. */
static int gather_rows(lora_batch *b, const adapter_store *s, int layer, lora_module m)
{
    int any = 0;
    for (int i = 0; i < b->n_segs; i++) {
        b->seg_rows[i] = b->seg_adapter[i] < 0 ? NULL : adapter_store_rows(s, b->seg_adapter[i], layer, m);
        any |= b->seg_rows[i] != NULL;
    }
    return any;
}

void lora_apply_column(lora_batch *b, const adapter_store *s, collective *col, int layer, const lora_module *mods,
                       int n_mods, const float *x, int n, int in, float *const *ys, const int *widths)
{
    if (!b->active) return;
    LS_ASSERT(n_mods <= 3);
    size_t block = (size_t)n * (size_t)b->stride;
    memset(b->v, 0, (size_t)n_mods * block * sizeof *b->v);
    for (int i = 0; i < n_mods; i++)
        if (gather_rows(b, s, layer, mods[i]))
            op_lora_shrink_sgmv(b->v + i * block, b->stride, x, in, b->seg_start, b->n_segs, b->seg_rows);
    // Each rank produced its own columns of the rank dim (zeros elsewhere): one sum completes all modules.
    collective_allreduce_sum(col, b->v, (size_t)n_mods * block);
    for (int i = 0; i < n_mods; i++)
        if (gather_rows(b, s, layer, mods[i]))
            op_lora_expand_sgmv(ys[i], widths[i], 0, widths[i], b->v + i * block, b->stride, b->seg_start, b->n_segs,
                                b->seg_rows);
}

void lora_apply_row(lora_batch *b, const adapter_store *s, collective *col, int layer, lora_module m,
                    const float *x, int n, int in_local, float *y, int y_width)
{
    if (!b->active) return;
    size_t block = (size_t)n * (size_t)b->stride;
    int any = gather_rows(b, s, layer, m);
    memset(b->v, 0, block * sizeof *b->v);
    if (any) op_lora_shrink_sgmv(b->v, b->stride, x, in_local, b->seg_start, b->n_segs, b->seg_rows);
    collective_allreduce_sum(col, b->v, block);
    if (!any) return;
    lora_module_dims d = lora_module_shard(s->cfg, m, 1, s->tp_rank, s->tp_size);
    op_lora_expand_sgmv(y, y_width, d.out_offset, d.out_local, b->v, b->stride, b->seg_start, b->n_segs,
                        b->seg_rows);
}
