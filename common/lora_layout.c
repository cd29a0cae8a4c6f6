/* Adapter row layout in the unified pool (see lora_layout.h). */
#include "common/lora_layout.h"

#include "common/log.h"

static const char *module_names[LORA_N_MODULES] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

const char *lora_module_name(lora_module m) { return module_names[m]; }
int lora_module_is_mlp(lora_module m) { return m >= LORA_GATE; }

void lora_module_full_dims(const model_config *c, lora_module m, int *in, int *out)
{
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    switch (m) {
    case LORA_Q: *in = c->hidden_size; *out = q; break;
    case LORA_K:
    case LORA_V: *in = c->hidden_size; *out = kv; break;
    case LORA_O: *in = q; *out = c->hidden_size; break;
    case LORA_GATE:
    case LORA_UP: *in = c->hidden_size; *out = c->intermediate_size; break;
    default: *in = c->intermediate_size; *out = c->hidden_size; break;
    }
}

/* [lo, hi) of n split in T near-equal parts (the first n % T parts one longer). */
static void split(int n, int t, int T, int *lo, int *len)
{
    int base = n / T, extra = n % T;
    *lo = t * base + (t < extra ? t : extra);
    *len = base + (t < extra ? 1 : 0);
}

lora_module_dims lora_module_shard(const model_config *c, lora_module m, int rank, int tp_rank, int tp_size)
{
    lora_module_dims d = { 0 };
    int in, out, lo;
    lora_module_full_dims(c, m, &in, &out);
    d.split_rank = m != LORA_O && m != LORA_DOWN;
    if (d.split_rank) {
        // Base weight split by output rows: A split on the rank dim, B^T over this rank's outputs.
        d.in_local = in;
        d.out_local = out / tp_size;
        d.out_offset = tp_rank * d.out_local;
        split(rank, tp_rank, tp_size, &d.a_rank0, &d.a_rows);
    } else {
        // Base weight split by input columns: A over this rank's inputs, B^T over an output slice.
        d.in_local = in / tp_size;
        split(out, tp_rank, tp_size, &lo, &d.out_local);
        d.out_offset = lo;
        d.a_rank0 = 0;
        d.a_rows = rank;
    }
    return d;
}

size_t lora_page_floats(const model_config *c, int tp_size, int page_tokens)
{
    return (size_t)page_tokens * (size_t)c->n_layers * 2 * (size_t)(c->n_kv_heads / tp_size) * (size_t)c->head_dim;
}

size_t lora_max_row_floats(const model_config *c, int tp_size)
{
    size_t worst = 0;
    for (int m = 0; m < LORA_N_MODULES; m++) {
        int in, out;
        lora_module_full_dims(c, (lora_module)m, &in, &out);
        if ((size_t)in > worst) worst = (size_t)in;
        if ((size_t)(out / tp_size + 1) > worst) worst = (size_t)(out / tp_size + 1);
    }
    return worst;
}

int lora_layout_walk(const model_config *c, const lora_shape *s, int tp_rank, int tp_size, size_t page_floats,
                     lora_row_fn fn, void *ctx)
{
    int page = 0;
    size_t off = 0;
    int any = 0;
    for (int l = 0; l < s->n_layers; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            int r = s->rank[l * LORA_N_MODULES + m];
            if (!r) continue;
            lora_module_dims d = lora_module_shard(c, (lora_module)m, r, tp_rank, tp_size);
            for (int is_b = 0; is_b < 2; is_b++) {
                int rows = is_b ? r : d.a_rows, len = is_b ? d.out_local : d.in_local;
                LS_ASSERT((size_t)len <= page_floats);
                for (int i = 0; i < rows; i++) {
                    if (off + (size_t)len > page_floats) { page++; off = 0; }
                    if (fn) fn(ctx, l, (lora_module)m, is_b, i, page, off, len);
                    off += (size_t)len;
                    any = 1;
                }
            }
        }
    return any ? page + 1 : 0;
}

int lora_layout_pages(const model_config *c, const lora_shape *s, int tp_size, size_t page_floats)
{
    int worst = 0;
    for (int t = 0; t < tp_size; t++) {
        int n = lora_layout_walk(c, s, t, tp_size, page_floats, NULL, NULL);
        if (n > worst) worst = n;
    }
    return worst;
}
