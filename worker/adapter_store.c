/* Worker host adapter store (see adapter_store.h). */
#include "worker/adapter_store.h"

#include <string.h>

#include "common/log.h"

void adapter_store_init(adapter_store *s, const model_config *cfg, int tp_rank, int tp_size, size_t page_floats,
                        size_t hot_cap_bytes)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->tp_rank = tp_rank;
    s->tp_size = tp_size;
    s->page_floats = page_floats;
    s->hot_cap_bytes = hot_cap_bytes;
}

static void drop_hot(adapter_store *s, stored_adapter *a)
{
    if (!a->shard) return;
    s->hot_bytes -= (size_t)a->n_pages * s->page_floats * sizeof(float);
    free(a->shard);
    a->shard = NULL;
}

static void free_adapter(adapter_store *s, stored_adapter *a)
{
    drop_hot(s, a);
    peft_adapter_free(&a->peft);
    free(a->rows);
    free(a->ptrs);
    free(a);
}

void adapter_store_free(adapter_store *s)
{
    for (int i = 0; i < s->cap; i++)
        if (s->slots[i]) free_adapter(s, s->slots[i]);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

/* Counts the rows this rank holds (one pointer each). */
static void count_row(void *ctx, int layer, lora_module m, int is_b, int row, int page, size_t off, int len)
{
    (void)layer, (void)m, (void)is_b, (void)row, (void)page, (void)off, (void)len;
    (*(size_t *)ctx)++;
}

ls_status adapter_store_register(adapter_store *s, int32_t id, const char *dir, const char *served_model,
                                 int allow_base_mismatch, ls_error *err)
{
    LS_ASSERT(id >= 0);
    if (id >= s->cap) {
        int cap = s->cap ? s->cap : 64;
        while (cap <= id) cap *= 2;
        s->slots = ls_xrealloc(s->slots, (size_t)cap * sizeof *s->slots);
        memset(s->slots + s->cap, 0, (size_t)(cap - s->cap) * sizeof *s->slots);
        s->cap = cap;
    }
    LS_ASSERT(!s->slots[id]);
    stored_adapter *a = ls_xcalloc(1, sizeof *a);
    peft_opts o = { .served_model_name = served_model, .allow_base_mismatch = allow_base_mismatch };
    ls_status st = peft_read_config(&a->peft, dir, s->cfg, &o, err);
    if (st == LS_OK) st = peft_check_tensors(&a->peft, s->cfg, err);
    if (st != LS_OK) {
        free_adapter(s, a);
        return st;
    }
    a->n_pages = lora_layout_walk(s->cfg, &a->peft.shape, s->tp_rank, s->tp_size, s->page_floats, count_row, &a->n_ptrs);
    a->rows = ls_xcalloc((size_t)s->cfg->n_layers * LORA_N_MODULES, sizeof *a->rows);
    a->ptrs = ls_xcalloc(a->n_ptrs ? a->n_ptrs : 1, sizeof *a->ptrs);
    s->slots[id] = a;
    return LS_OK;
}

void adapter_store_drop(adapter_store *s, int32_t id)
{
    if (id < 0 || id >= s->cap || !s->slots[id]) return;
    free_adapter(s, s->slots[id]);
    s->slots[id] = NULL;
}

/* Keeps the hot set under its cap by dropping least recently used shards (never `keep`). */
static void trim_hot(adapter_store *s, const stored_adapter *keep)
{
    while (s->hot_bytes > s->hot_cap_bytes) {
        stored_adapter *lru = NULL;
        for (int i = 0; i < s->cap; i++) {
            stored_adapter *a = s->slots[i];
            if (a && a->shard && a != keep && (!lru || a->last_used < lru->last_used)) lru = a;
        }
        if (!lru) return;
        drop_hot(s, lru);
    }
}

static ls_status load_shard(adapter_store *s, stored_adapter *a, ls_error *err)
{
    if (a->shard) return LS_OK;
    size_t n = (size_t)a->n_pages * s->page_floats;
    a->shard = malloc(n * sizeof(float) + 1);
    if (!a->shard) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "cannot hold an adapter shard of %zu floats", n);
    ls_status st = peft_read_shard(&a->peft, s->cfg, s->tp_rank, s->tp_size, s->page_floats, a->shard, err);
    if (st != LS_OK) {
        free(a->shard);
        a->shard = NULL;
        return st;
    }
    s->hot_bytes += n * sizeof(float);
    s->shard_reads++;
    return LS_OK;
}

typedef struct place_ctx {
    stored_adapter *a;
    const model_config *cfg;
    float *pool;
    const int32_t *pages;
    size_t page_stride;
    size_t next;                // next free pointer slot
} place_ctx;

/* Points the row pointer of one row at its place in the pool; A rows come before B rows per module. */
static void place_row(void *ctx, int layer, lora_module m, int is_b, int row, int page, size_t off, int len)
{
    place_ctx *p = ctx;
    lora_rows *r = &p->a->rows[layer * LORA_N_MODULES + m];
    const float **slot = &p->a->ptrs[p->next++];
    if (row == 0) {
        if (is_b) r->b = slot; else r->a = slot;
    }
    *slot = p->pool + (size_t)p->pages[page] * p->page_stride + off;
    (void)len;
}

static void set_geometry(const adapter_store *s, stored_adapter *a)
{
    for (int l = 0; l < a->peft.shape.n_layers; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            int i = l * LORA_N_MODULES + m, rank = a->peft.shape.rank[i];
            lora_rows *r = &a->rows[i];
            if (!rank) { memset(r, 0, sizeof *r); continue; }
            lora_module_dims d = lora_module_shard(s->cfg, (lora_module)m, rank, s->tp_rank, s->tp_size);
            r->a_rows = d.a_rows;
            r->a_col0 = d.a_rank0;
            r->rank = rank;
            r->scale = a->peft.shape.scale[i];
        }
}

ls_status adapter_store_place(adapter_store *s, int32_t id, const int32_t *pages, int n_pages, float *pool,
                              size_t page_stride, int copy, ls_error *err)
{
    LS_ASSERT(id >= 0 && id < s->cap && s->slots[id]);
    stored_adapter *a = s->slots[id];
    LS_ASSERT(n_pages >= a->n_pages);    // the coordinator sizes for the largest shard of all ranks
    a->last_used = ++s->clock;
    if (copy) {
        ls_status st = load_shard(s, a, err);
        if (st != LS_OK) return st;
        for (int p = 0; p < a->n_pages; p++)
            memcpy(pool + (size_t)pages[p] * page_stride, a->shard + (size_t)p * s->page_floats,
                   s->page_floats * sizeof(float));
        s->copies++;
        s->bytes_copied += (size_t)a->n_pages * s->page_floats * sizeof(float);
        trim_hot(s, a);
    }
    place_ctx ctx = { .a = a, .cfg = s->cfg, .pool = pool, .pages = pages, .page_stride = page_stride };
    lora_layout_walk(s->cfg, &a->peft.shape, s->tp_rank, s->tp_size, s->page_floats, place_row, &ctx);
    set_geometry(s, a);
    return LS_OK;
}

const lora_rows *adapter_store_rows(const adapter_store *s, int32_t id, int layer, int module)
{
    const stored_adapter *a = s->slots[id];
    const lora_rows *r = &a->rows[layer * LORA_N_MODULES + module];
    return r->rank ? r : NULL;
}
