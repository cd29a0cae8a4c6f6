/* CPU forward pass over a step plan (see forward.h). */
#include "worker/forward.h"

#include <math.h>
#include <string.h>

#include "common/log.h"

size_t forward_page_bytes(const model_config *cfg, int tp_size, int page_tokens)
{
    size_t kv_heads = (size_t)(cfg->n_kv_heads / tp_size);
    return (size_t)page_tokens * (size_t)cfg->n_layers * 2 * kv_heads * (size_t)cfg->head_dim * sizeof(float);
}

ls_status forward_init(forward *f, const model_weights *w, collective *col, const adapter_store *store,
                       int n_pages, int page_tokens, int max_tokens, ls_error *err)
{
    const model_config *c = &w->cfg;
    memset(f, 0, sizeof *f);
    f->w = w;
    f->col = col;
    f->store = store;
    f->n_pages = n_pages;
    f->max_tokens = max_tokens;
    size_t kv_floats = (size_t)w->n_kv_heads_local * (size_t)c->head_dim;
    f->kv = (kv_view){
        .page_tokens = page_tokens, .n_kv_heads = w->n_kv_heads_local, .head_dim = c->head_dim,
        .kv_stride = (size_t)page_tokens * kv_floats,
        .layer_stride = 2 * (size_t)page_tokens * kv_floats,
        .page_stride = 2 * (size_t)page_tokens * kv_floats * (size_t)c->n_layers,
    };
    f->kv.pool = calloc((size_t)n_pages * f->kv.page_stride, sizeof(float));
    if (!f->kv.pool)
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "cannot allocate the KV pool: %d pages of %zu bytes", n_pages,
                       f->kv.page_stride * sizeof(float));
    size_t rows = (size_t)max_tokens, H = (size_t)c->hidden_size;
    size_t qd = (size_t)w->n_heads_local * (size_t)c->head_dim;
    f->x = ls_xmalloc(rows * H * sizeof(float));
    f->xn = ls_xmalloc(rows * H * sizeof(float));
    f->proj = ls_xmalloc(rows * H * sizeof(float));
    f->sel = ls_xmalloc(rows * H * sizeof(float));
    f->q = ls_xmalloc(rows * qd * sizeof(float));
    f->att = ls_xmalloc(rows * qd * sizeof(float));
    f->k = ls_xmalloc(rows * kv_floats * sizeof(float));
    f->v = ls_xmalloc(rows * kv_floats * sizeof(float));
    f->gate = ls_xmalloc(rows * (size_t)w->inter_local * sizeof(float));
    f->up = ls_xmalloc(rows * (size_t)w->inter_local * sizeof(float));
    f->pos = ls_xmalloc(rows * sizeof(int32_t));
    f->att_scratch = ls_xmalloc((size_t)c->max_position * sizeof(float));
    f->logits_local = ls_xmalloc(rows * (size_t)w->vocab_local * sizeof(float));
    f->inv_freq = ls_xmalloc((size_t)c->head_dim / 2 * sizeof(float));
    lora_batch_init(&f->lb, max_tokens, max_tokens);
    op_rope_inv_freq(f->inv_freq, c->head_dim, c->rope_theta, c->rope_scaling, c->rope_factor,
                     c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_position);
    return LS_OK;
}

void forward_free(forward *f)
{
    void *bufs[] = { f->kv.pool, f->x, f->xn, f->proj, f->sel, f->q, f->att, f->k, f->v, f->gate, f->up,
                     f->pos, f->att_scratch, f->logits_local, f->inv_freq };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    lora_batch_free(&f->lb);
    memset(f, 0, sizeof *f);
}

static void check_plan(const forward *f, const plan *p)
{
    LS_ASSERT(p->h.n_tokens <= f->max_tokens);
    for (int s = 0; s < p->h.n_seqs; s++) {
        const plan_seq *q = &p->seqs[s];
        LS_ASSERT(q->n_tokens > 0 && q->start_pos >= 0);
        LS_ASSERT(q->start_pos + q->n_tokens <= f->w->cfg.max_position);
        LS_ASSERT((int64_t)q->n_pages * f->kv.page_tokens >= q->start_pos + q->n_tokens);
        for (int i = 0; i < q->n_pages; i++) LS_ASSERT(p->pages[q->page_off + i] >= 0 && p->pages[q->page_off + i] < f->n_pages);
        for (int i = 0; i < q->n_tokens; i++) {
            int32_t t = p->tokens[q->tok_off + i];
            LS_ASSERT(t >= 0 && t < f->w->cfg.vocab_size);
        }
    }
}

/* Attention sublayer of one layer: f->xn (normed input) -> f->proj (partial o-projection). */
static void attention_block(forward *f, const plan *p, int l)
{
    const model_config *c = &f->w->cfg;
    const layer_weights *L = &f->w->layers[l];
    int n = p->h.n_tokens, H = c->hidden_size, hd = c->head_dim;
    int hq = f->w->n_heads_local, hk = f->w->n_kv_heads_local;
    op_matmul(f->q, f->xn, L->wq, n, H, hq * hd);
    op_matmul(f->k, f->xn, L->wk, n, H, hk * hd);
    op_matmul(f->v, f->xn, L->wv, n, H, hk * hd);
    static const lora_module qkv[] = { LORA_Q, LORA_K, LORA_V };
    float *const outs[] = { f->q, f->k, f->v };
    const int widths[] = { hq * hd, hk * hd, hk * hd };
    lora_apply_column(&f->lb, f->store, f->col, l, qkv, 3, f->xn, n, H, outs, widths);
    op_rope(f->q, f->pos, f->inv_freq, n, hq, hd);
    op_rope(f->k, f->pos, f->inv_freq, n, hk, hd);
    float scale = 1.0f / sqrtf((float)hd);
    for (int s = 0; s < p->h.n_seqs; s++) {
        const plan_seq *q = &p->seqs[s];
        const int32_t *pt = p->pages + q->page_off;
        size_t o = (size_t)q->tok_off;
        op_kv_store(&f->kv, l, pt, q->start_pos, q->n_tokens, f->k + o * hk * hd, f->v + o * hk * hd);
        op_paged_attention(f->att + o * hq * hd, f->q + o * hq * hd, &f->kv, l, pt, q->start_pos, q->n_tokens, hq,
                           c->sliding_window, scale, f->att_scratch);
    }
    op_matmul(f->proj, f->att, L->wo, n, hq * hd, H);
    lora_apply_row(&f->lb, f->store, f->col, l, LORA_O, f->att, n, hq * hd, f->proj, H);
}

/* MLP sublayer: f->xn -> f->proj (partial down-projection). */
static void mlp_block(forward *f, int n, int l)
{
    const layer_weights *L = &f->w->layers[l];
    int H = f->w->cfg.hidden_size, I = f->w->inter_local;
    op_matmul(f->gate, f->xn, L->w_gate, n, H, I);
    op_matmul(f->up, f->xn, L->w_up, n, H, I);
    static const lora_module gate_up[] = { LORA_GATE, LORA_UP };
    float *const outs[] = { f->gate, f->up };
    const int widths[] = { I, I };
    lora_apply_column(&f->lb, f->store, f->col, l, gate_up, 2, f->xn, n, H, outs, widths);
    op_swiglu(f->gate, f->gate, f->up, n, I);
    op_matmul(f->proj, f->gate, L->w_down, n, I, H);
    lora_apply_row(&f->lb, f->store, f->col, l, LORA_DOWN, f->gate, n, I, f->proj, H);
}

/* Final norm and lm_head over the last position of each sampled sequence, gathered on rank 0. */
static void project_logits(forward *f, const plan *p, float *logits)
{
    const model_config *c = &f->w->cfg;
    int H = c->hidden_size, rows = 0;
    for (int s = 0; s < p->h.n_seqs; s++) {
        const plan_seq *q = &p->seqs[s];
        if (!q->sample) continue;
        memcpy(f->sel + (size_t)rows * H, f->x + (size_t)(q->tok_off + q->n_tokens - 1) * H, (size_t)H * sizeof(float));
        rows++;
    }
    LS_ASSERT(rows == p->h.n_sample);
    if (!rows) return;
    op_rmsnorm(f->sel, f->sel, f->w->final_norm, rows, H, c->rms_eps);
    op_matmul(f->logits_local, f->sel, f->w->lm_head, rows, H, f->w->vocab_local);
    collective_gather_logits(f->col, f->logits_local, rows, logits);
}

void forward_step(forward *f, const plan *p, float *logits)
{
    const model_config *c = &f->w->cfg;
    int n = p->h.n_tokens, H = c->hidden_size;
    check_plan(f, p);
    lora_batch_prepare(&f->lb, p, f->store);
    for (int s = 0; s < p->h.n_seqs; s++)
        for (int i = 0; i < p->seqs[s].n_tokens; i++) f->pos[p->seqs[s].tok_off + i] = p->seqs[s].start_pos + i;
    op_embedding(f->x, p->tokens, f->w->embed, n, H);
    memset(f->proj, 0, (size_t)n * H * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        // residual += previous sublayer output; xn = norm(residual): one pass per sublayer boundary
        op_add_rmsnorm(f->x, f->xn, f->proj, f->w->layers[l].attn_norm, n, H, c->rms_eps);
        attention_block(f, p, l);
        collective_allreduce_sum(f->col, f->proj, (size_t)n * H);
        op_add_rmsnorm(f->x, f->xn, f->proj, f->w->layers[l].mlp_norm, n, H, c->rms_eps);
        mlp_block(f, n, l);
        collective_allreduce_sum(f->col, f->proj, (size_t)n * H);
    }
    for (size_t i = 0; i < (size_t)n * H; i++) f->x[i] += f->proj[i];
    project_logits(f, p, logits);
}
