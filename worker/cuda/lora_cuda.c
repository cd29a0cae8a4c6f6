/* LoRA adapters on the CUDA backend: copy-in, descriptors and the forward calls (see lora_cuda.h). */
#include "worker/cuda/lora_cuda.h"

#include <limits.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/peft.h"
#include "common/safetensors.h"

/* Device and library failures are faults of the device, not of a request: fatal, with the call. */
#define CU_CHECK(call) \
    do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
        log_write(LOG_ERROR, __FILE__, __LINE__, "%s: %s", #call, cudaGetErrorString(e_)); abort(); } } while (0)
/* The kernel of the storage type: buffers are void *, which C converts to float * or uint16_t *. */
#define KERNEL(fn, dt, ...) \
    do { if ((dt) == DEV_F32) fn##_f32(__VA_ARGS__); else if ((dt) == DEV_BF16) fn##_bf16(__VA_ARGS__); \
         else fn##_f16(__VA_ARGS__); } while (0)

/* The descriptor arena never takes more than this, however large the pool: beyond it a step with that
 * many adapter rows fails with a clear error rather than pinning a large share of host memory. */
#define ARENA_MAX_BYTES ((size_t)256 << 20)

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

static int n_slots(const model_config *cfg) { return cfg->n_layers * LORA_N_MODULES; }

/* Bytes of one adapter's descriptors: one cuda_lora_rows per (layer, module). */
static size_t desc_bytes(const model_config *cfg) { return align16((size_t)n_slots(cfg) * sizeof(cuda_lora_rows)); }

/* Bytes of the step tables for up to max_seqs sequences: seg_start, then one pointer per (slot, segment). */
static size_t step_bytes(const model_config *cfg, int max_seqs)
{
    return align16(((size_t)max_seqs + 1) * sizeof(int32_t)) + (size_t)n_slots(cfg) * max_seqs * sizeof(void *);
}

/* The shortest row any adapter may have on this rank: bounds the rows (so the pointers) a page holds. */
static size_t shortest_row(const model_config *cfg, int tp_rank, int tp_size)
{
    size_t best = SIZE_MAX;
    for (int m = 0; m < LORA_N_MODULES; m++) {
        lora_module_dims d = lora_module_shard(cfg, (lora_module)m, 1, tp_rank, tp_size);
        if (d.in_local > 0 && (size_t)d.in_local < best) best = (size_t)d.in_local;
        if (d.out_local > 0 && (size_t)d.out_local < best) best = (size_t)d.out_local;
    }
    return best;
}

void cuda_lora_device_bytes(const model_config *cfg, int tp_rank, int tp_size, size_t page_elems, int max_tokens,
                            size_t *fixed, size_t *per_page)
{
    // Every page may hold rows of a different adapter, each with its own descriptor block.
    *per_page = (page_elems / shortest_row(cfg, tp_rank, tp_size) + 1) * sizeof(void *) + desc_bytes(cfg) + 16;
    *fixed = (size_t)max_tokens * 3 * CUDA_LORA_MAX_RANK * sizeof(float) + step_bytes(cfg, max_tokens);
}

static ls_status alloc_pinned(void **p, size_t bytes, const char *what, ls_error *err)
{
    cudaError_t e = cudaMallocHost(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "cannot pin %zu host bytes for the %s: %s", bytes, what,
                       cudaGetErrorString(e));
    }
    return LS_OK;
}

static ls_status alloc_device(void **p, size_t bytes, const char *what, ls_error *err)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "cannot allocate %zu device bytes for the %s: %s", bytes, what,
                       cudaGetErrorString(e));
    }
    return LS_OK;
}

ls_status cuda_lora_start(cuda_lora *L, const adapter_store *store, const model_config *cfg, int tp_rank,
                          int tp_size, dev_dtype dt, void *pool, size_t page_elems, int n_pages, int max_tokens,
                          cudaStream_t compute, nccl_comm *nc, size_t hot_bytes, ls_error *err)
{
    memset(L, 0, sizeof *L);
    LS_ASSERT(store->page_floats == page_elems);   // the host shard pages are pool pages
    L->store = store;
    L->cfg = cfg;
    L->dt = dt;
    L->esz = dev_dtype_size(dt);
    L->pool = pool;
    L->page_elems = page_elems;
    L->page_bytes = page_elems * L->esz;
    L->n_pages = n_pages;
    L->max_tokens = max_tokens;
    L->tp_rank = tp_rank;
    L->tp_size = tp_size;
    L->compute = compute;
    L->nc = nc;
    L->arena_gen = 1;           // built_gen 0 = never built
    CU_CHECK(cudaStreamCreateWithFlags(&L->copy, cudaStreamNonBlocking));
    CU_CHECK(cudaEventCreateWithFlags(&L->copied, cudaEventDisableTiming));
    CU_CHECK(cudaEventCreate(&L->copy_t0));
    CU_CHECK(cudaEventCreate(&L->copy_t1));
    size_t hp = hot_bytes / L->page_bytes;
    L->hot_pages = hp > INT_MAX ? INT_MAX : (int)hp;
    L->free_pages = ls_xcalloc((size_t)L->hot_pages + 1, sizeof *L->free_pages);
    for (int i = 0; i < L->hot_pages; i++) L->free_pages[i] = L->hot_pages - 1 - i;
    L->n_free = L->hot_pages;
    size_t fixed, per_page;
    cuda_lora_device_bytes(cfg, tp_rank, tp_size, page_elems, max_tokens, &fixed, &per_page);
    L->arena_cap = (size_t)n_pages * per_page;
    if (L->arena_cap > ARENA_MAX_BYTES) L->arena_cap = ARENA_MAX_BYTES;
    L->step_cap = step_bytes(cfg, max_tokens);
    ls_status st;
    if ((st = alloc_pinned((void **)&L->hot, (size_t)L->hot_pages * L->page_bytes, "adapter hot set", err)) ||
        (st = alloc_pinned((void **)&L->h_arena, L->arena_cap, "adapter descriptors", err)) ||
        (st = alloc_device((void **)&L->d_arena, L->arena_cap, "adapter descriptors", err)) ||
        (st = alloc_pinned((void **)&L->h_step, L->step_cap, "LoRA segment tables", err)) ||
        (st = alloc_device((void **)&L->d_step, L->step_cap, "LoRA segment tables", err)) ||
        (st = alloc_device((void **)&L->v, (size_t)max_tokens * 3 * CUDA_LORA_MAX_RANK * sizeof(float),
                           "LoRA shrink outputs", err)) ||
        (st = alloc_device((void **)&L->token_seg, (size_t)max_tokens * sizeof(int32_t), "LoRA token table", err)))
        return st;
    // Decode steps have one token per segment, so token i's table entry is segment i's: a fixed identity.
    int32_t *ident = ls_xmalloc((size_t)max_tokens * sizeof *ident);
    for (int i = 0; i < max_tokens; i++) ident[i] = i;
    CU_CHECK(cudaMemcpy(L->token_seg, ident, (size_t)max_tokens * sizeof *ident, cudaMemcpyHostToDevice));
    free(ident);
    L->any = ls_xcalloc((size_t)n_slots(cfg), 1);
    L->on = 1;
    return LS_OK;
}

/* ---- the hot set of converted shards ------------------------------------------------------------ */

/* Returns e's hot pages to the free list; a copy of this step may still read them, so wait for it. */
static void release_hot(cuda_lora *L, cuda_lora_entry *e)
{
    if (!e->hot) return;
    if (e->copy_step == L->step) CU_CHECK(cudaStreamSynchronize(L->copy));
    for (int p = 0; p < e->n_hot; p++) L->free_pages[L->n_free++] = e->hot[p];
    free(e->hot);
    e->hot = NULL;
    e->n_hot = 0;
}

/* Everything this backend knows of slot e (the slot was dropped or now holds another adapter). */
static void forget(cuda_lora *L, cuda_lora_entry *e)
{
    release_hot(L, e);
    free(e->pages);
    memset(e, 0, sizeof *e);
}

/* Makes e's shard hot: read from its safetensors as fp32 rows (the host store's reader), converted into
 * free pinned pages, evicting the least recently used shards (never e's own) as needed. */
static ls_status ensure_hot(cuda_lora *L, cuda_lora_entry *e, int32_t id, ls_error *err)
{
    const stored_adapter *a = e->src;
    e->last_used = ++L->clock;
    if (e->hot) return LS_OK;
    int need = a->n_pages;
    if (need > L->hot_pages)
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "adapter %d: its shard spans %d pages of %zu bytes but the pinned "
                       "hot set holds %d (raise --adapter-cache-mb)", id, need, L->page_bytes, L->hot_pages);
    while (L->n_free < need) {
        cuda_lora_entry *lru = NULL;
        for (int i = 0; i < L->n_ent; i++) {
            cuda_lora_entry *x = &L->ent[i];
            if (x->hot && x != e && (!lru || x->last_used < lru->last_used)) lru = x;
        }
        LS_ASSERT(lru);         // the pages not free belong to other entries
        release_hot(L, lru);
    }
    size_t bytes = (size_t)need * L->page_bytes;
    if (bytes > L->shard_cap) {
        free(L->shard);
        L->shard = malloc(bytes);
        L->shard_cap = L->shard ? bytes : 0;
        if (!L->shard) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "cannot hold an adapter shard of %zu bytes", bytes);
    }
    memset(L->shard, 0, bytes);     // page tails are not written by the reader
    // Read straight into the storage type: a 16-bit file of that type is copied, not widened and rounded.
    double t0 = clock_now_s();
    const adapter_store *s = L->store;
    ls_status st = L->dt == DEV_F32
        ? peft_read_shard(&a->peft, s->cfg, s->tp_rank, s->tp_size, L->page_elems, (float *)L->shard, err)
        : peft_read_shard16(&a->peft, s->cfg, s->tp_rank, s->tp_size, L->page_elems, L->dt == DEV_BF16,
                            (uint16_t *)L->shard, err);
    if (st != LS_OK) return st;
    e->hot = ls_xmalloc((size_t)need * sizeof *e->hot);
    e->n_hot = need;
    for (int p = 0; p < need; p++) {
        e->hot[p] = L->free_pages[--L->n_free];
        memcpy(L->hot + (size_t)e->hot[p] * L->page_bytes, L->shard + (size_t)p * L->page_bytes, L->page_bytes);
    }
    L->read_s += clock_now_s() - t0;
    return LS_OK;
}

/* Enqueues the copy of e's hot pages into its pool pages on the copy stream, runs of consecutive pages
 * on both sides as one copy. */
static void copy_in(cuda_lora *L, cuda_lora_entry *e)
{
    int n = e->src->n_pages;
    if (!L->wait_pending) CU_CHECK(cudaEventRecord(L->copy_t0, L->copy));     // the step's first copy
    for (int p = 0; p < n;) {
        int run = 1;
        while (p + run < n && e->pages[p + run] == e->pages[p] + run && e->hot[p + run] == e->hot[p] + run) run++;
        CU_CHECK(cudaMemcpyAsync(L->pool + (size_t)e->pages[p] * L->page_bytes,
                                 L->hot + (size_t)e->hot[p] * L->page_bytes, (size_t)run * L->page_bytes,
                                 cudaMemcpyHostToDevice, L->copy));
        p += run;
    }
    e->copy_step = L->step;
    L->wait_pending = 1;
}

/* ---- per-step bookkeeping ----------------------------------------------------------------------- */

/* The entry of slot id (the table grows to hold it), reset when the slot now holds another adapter than
 * the one it was built for. */
static cuda_lora_entry *entry_for(cuda_lora *L, int32_t id, const stored_adapter *a)
{
    if (id >= L->n_ent) {
        int cap = L->n_ent ? L->n_ent : 64;
        while (cap <= id) cap *= 2;
        L->ent = ls_xrealloc(L->ent, (size_t)cap * sizeof *L->ent);
        memset(L->ent + L->n_ent, 0, (size_t)(cap - L->n_ent) * sizeof *L->ent);
        L->n_ent = cap;
    }
    cuda_lora_entry *e = &L->ent[id];
    if (e->src != a) {
        forget(L, e);
        e->src = a;
    }
    return e;
}

/* The entry of slot id for this step (listed once in step_ids); its state is reset when the slot now
 * holds another adapter than the one it was built for. */
static ls_status note(cuda_lora *L, int32_t id, cuda_lora_entry **out, ls_error *err)
{
    const adapter_store *s = L->store;
    const stored_adapter *a = id >= 0 && id < s->cap ? s->slots[id] : NULL;
    if (!a)
        return ls_fail(err, LS_FAILED_PRECONDITION, "the step uses adapter %d, which this worker does not hold", id);
    cuda_lora_entry *e = entry_for(L, id, a);
    if (e->mark != L->step) {
        e->mark = L->step;
        if (L->n_step_ids == L->step_ids_cap) {
            L->step_ids_cap = L->step_ids_cap ? 2 * L->step_ids_cap : 64;
            L->step_ids = ls_xrealloc(L->step_ids, (size_t)L->step_ids_cap * sizeof *L->step_ids);
        }
        L->step_ids[L->n_step_ids++] = id;
    }
    *out = e;
    return LS_OK;
}

/* Records where the plan puts adapter id; a new placement makes its descriptors stale. */
static ls_status place(cuda_lora *L, cuda_lora_entry *e, int32_t id, const int32_t *pages, int n, ls_error *err)
{
    if (n < e->src->n_pages)
        return ls_fail(err, LS_INTERNAL, "adapter %d: the plan gives %d pages, its shard on rank %d spans %d", id, n,
                       L->tp_rank, e->src->n_pages);
    for (int i = 0; i < n; i++)
        if (pages[i] < 0 || pages[i] >= L->n_pages)
            return ls_fail(err, LS_INTERNAL, "adapter %d: page %d is outside the pool (%d pages)", id, pages[i],
                           L->n_pages);
    if (n == e->n_pages && !memcmp(pages, e->pages, (size_t)n * sizeof *pages)) return LS_OK;
    if (n > e->pages_cap) {
        e->pages = ls_xrealloc(e->pages, (size_t)n * sizeof *e->pages);
        e->pages_cap = n;
    }
    memcpy(e->pages, pages, (size_t)n * sizeof *pages);
    e->n_pages = n;
    e->built_gen = 0;
    return LS_OK;
}

static size_t entry_bytes(const cuda_lora *L, const stored_adapter *a)
{
    return desc_bytes(L->cfg) + align16(a->n_ptrs * sizeof(void *));
}

typedef struct build_ctx {
    const cuda_lora *L;
    cuda_lora_rows *desc;       // host mirror of the descriptors
    void **ptrs;                // host mirror of the row pointers
    char *d_ptrs;               // their device address
    const int32_t *pages;
    size_t next;
} build_ctx;

/* Points one row pointer at its place in the pool; a module's A rows (then its B^T rows) are
 * consecutive in the walk, so the first one's slot starts its array. */
static void put_row(void *ctx, int layer, lora_module m, int is_b, int row, int page, size_t off, int len)
{
    build_ctx *b = ctx;
    cuda_lora_rows *r = &b->desc[layer * LORA_N_MODULES + m];
    size_t slot = b->next++;
    if (row == 0) {
        const void *const *dev = (const void *const *)(b->d_ptrs + slot * sizeof(void *));
        if (is_b) r->b = dev; else r->a = dev;
    }
    b->ptrs[slot] = b->L->pool + (size_t)b->pages[page] * b->L->page_bytes + off * b->L->esz;
    (void)len;
}

/* Writes e's descriptors at the arena's end (host mirror). */
static void build(cuda_lora *L, cuda_lora_entry *e)
{
    const stored_adapter *a = e->src;
    const lora_shape *sh = &a->peft.shape;
    char *h = L->h_arena + L->arena_used;
    build_ctx b = { .L = L, .desc = (cuda_lora_rows *)h, .ptrs = (void **)(h + desc_bytes(L->cfg)),
                    .d_ptrs = L->d_arena + L->arena_used + desc_bytes(L->cfg), .pages = e->pages };
    memset(b.desc, 0, desc_bytes(L->cfg));
    for (int i = 0; i < n_slots(L->cfg); i++) {
        if (!sh->rank[i]) continue;
        lora_module_dims d = lora_module_shard(L->cfg, (lora_module)(i % LORA_N_MODULES), sh->rank[i], L->tp_rank,
                                               L->tp_size);
        b.desc[i] = (cuda_lora_rows){ .a_rows = d.a_rows, .a_col0 = d.a_rank0, .rank = sh->rank[i],
                                      .scale = sh->scale[i] };
    }
    lora_layout_walk(L->cfg, sh, L->tp_rank, L->tp_size, L->page_elems, put_row, &b);
    LS_ASSERT(b.next == a->n_ptrs);
    e->desc_off = L->arena_used;
    e->built_gen = L->arena_gen;
    L->arena_used += entry_bytes(L, a);
}

/* Builds the descriptors the step's adapters lack and uploads them with one copy; when the arena is
 * full it starts over with only this step's adapters (earlier steps are finished with it). */
static ls_status build_descriptors(cuda_lora *L, ls_error *err)
{
    size_t need = 0, all = 0;
    for (int i = 0; i < L->n_step_ids; i++) {
        const cuda_lora_entry *e = &L->ent[L->step_ids[i]];
        size_t b = entry_bytes(L, e->src);
        all += b;
        if (e->built_gen != L->arena_gen) need += b;
    }
    if (L->arena_used + need > L->arena_cap) {
        if (all > L->arena_cap)
            return ls_fail(err, LS_RESOURCE_EXHAUSTED, "the step's %d adapters need %zu bytes of row descriptors; "
                           "%zu were set aside at start", L->n_step_ids, all, L->arena_cap);
        L->arena_gen++;
        L->arena_used = 0;
    }
    size_t lo = L->arena_used;
    for (int i = 0; i < L->n_step_ids; i++) {
        cuda_lora_entry *e = &L->ent[L->step_ids[i]];
        if (e->built_gen != L->arena_gen) build(L, e);
    }
    if (L->arena_used > lo)
        CU_CHECK(cudaMemcpyAsync(L->d_arena + lo, L->h_arena + lo, L->arena_used - lo, cudaMemcpyHostToDevice,
                                 L->compute));
    return LS_OK;
}

/* Device table of (layer, module) slot i: one descriptor pointer per segment. */
static const cuda_lora_rows *const *table(const cuda_lora *L, int i)
{
    size_t off = align16(((size_t)L->n_segs + 1) * sizeof(int32_t)) + (size_t)i * L->n_segs * sizeof(void *);
    return (const cuda_lora_rows *const *)(L->d_step + off);
}

static const int32_t *seg_start(const cuda_lora *L) { return (const int32_t *)L->d_step; }

/* seg_start and the per-slot segment tables of the step, uploaded with one copy. */
static void build_tables(cuda_lora *L, const plan *p)
{
    int S = p->h.n_seqs, n_slot = n_slots(L->cfg);
    LS_ASSERT(S <= L->max_tokens);
    L->n_segs = S;
    L->max_rank = 0;
    memset(L->any, 0, (size_t)n_slot);
    int32_t *seg = (int32_t *)L->h_step;
    size_t tab_off = align16(((size_t)S + 1) * sizeof(int32_t));
    const cuda_lora_rows **tab = (const cuda_lora_rows **)(L->h_step + tab_off);
    for (int s = 0; s < S; s++) {
        const plan_seq *q = &p->seqs[s];
        seg[s] = q->tok_off;
        const cuda_lora_entry *e = q->adapter >= 0 ? &L->ent[q->adapter] : NULL;
        const lora_shape *sh = e ? &e->src->peft.shape : NULL;
        const cuda_lora_rows *d = e ? (const cuda_lora_rows *)(L->d_arena + e->desc_off) : NULL;
        if (sh && sh->max_rank > L->max_rank) L->max_rank = sh->max_rank;
        for (int i = 0; i < n_slot; i++) {
            int on = sh && sh->rank[i];
            tab[(size_t)i * S + s] = on ? d + i : NULL;
            L->any[i] |= (uint8_t)on;
        }
    }
    seg[S] = p->h.n_tokens;
    // The leading one-token segments (decode tokens; the scheduler lists running sequences first) take
    // the MBGMV kernels, token i being segment i; the rest of the step takes SGMV tiles.
    L->n_single = 0;
    while (L->n_single < S && seg[L->n_single] == L->n_single && seg[L->n_single + 1] == L->n_single + 1)
        L->n_single++;
    L->v_stride = (L->max_rank + 3) & ~3;       // 16-byte rows of v
    LS_ASSERT(L->max_rank <= CUDA_LORA_MAX_RANK);
    CU_CHECK(cudaMemcpyAsync(L->d_step, L->h_step, tab_off + (size_t)n_slot * S * sizeof(void *),
                             cudaMemcpyHostToDevice, L->compute));
}

ls_status cuda_lora_prepare(cuda_lora *L, const plan *p, ls_error *err)
{
    L->active = 0;
    L->wait_pending = 0;
    int uses = p->h.n_adapters > 0;
    for (int s = 0; s < p->h.n_seqs && !uses; s++) uses = p->seqs[s].adapter >= 0;
    if (!uses) return LS_OK;
    if (!L->on)
        return ls_fail(err, LS_FAILED_PRECONDITION, "the step uses LoRA adapters, which this CUDA forward was not "
                       "started for");
    L->step++;
    L->n_step_ids = 0;
    ls_status st;
    cuda_lora_entry *e;
    for (int i = 0; i < p->h.n_adapters; i++) {
        const plan_adapter *pa = &p->adapters[i];
        if ((st = note(L, pa->id, &e, err)) ||
            (st = place(L, e, pa->id, p->pages + pa->page_off, pa->n_pages, err)))
            return st;
        if (!pa->copy) continue;
        if ((st = ensure_hot(L, e, pa->id, err))) return st;
        copy_in(L, e);
    }
    for (int s = 0; s < p->h.n_seqs; s++) {
        int32_t id = p->seqs[s].adapter;
        if (id < 0) continue;
        L->active = 1;
        // An adapter left out of the table keeps the placement of the last step that listed it.
        if ((st = note(L, id, &e, err))) return st;
        if (!e->n_pages) return ls_fail(err, LS_INTERNAL, "the step uses adapter %d, which no step has placed", id);
    }
    if (L->wait_pending) {
        CU_CHECK(cudaEventRecord(L->copy_t1, L->copy));
        CU_CHECK(cudaEventRecord(L->copied, L->copy));
        L->timed = 1;
    }
    if ((st = build_descriptors(L, err))) return st;
    if (L->active) build_tables(L, p);
    return LS_OK;
}

void cuda_lora_finish(cuda_lora *L)
{
    if (!L->wait_pending) return;
    CU_CHECK(cudaStreamWaitEvent(L->compute, L->copied, 0));
    L->wait_pending = 0;
}

/* ---- the forward calls -------------------------------------------------------------------------- */

/* Shrink and expand in the step's form: the leading one-token segments (decode tokens) with MBGMV (a
 * block per token streams its adapter's rows, a few round trips whatever the rank), the other segments
 * with SGMV tiles (prefill chunks, which fill them). */
static void shrink(cuda_lora *L, const cuda_lora_shrink_out *outs, int k, const void *x, int in)
{
    int d = L->n_single, rest = L->n_segs - d;
    if (d)
        KERNEL(cuda_lora_shrink_bgmv_multi, L->dt, outs, k, x, in, L->token_seg, d, L->max_rank, L->compute);
    if (!rest) return;
    cuda_lora_shrink_out tail[CUDA_LORA_MAX_MODULES];
    for (int m = 0; m < k; m++) {
        tail[m] = outs[m];
        tail[m].rows = outs[m].rows + d;
    }
    KERNEL(cuda_lora_shrink_sgmv_multi, L->dt, tail, k, x, in, seg_start(L) + d, rest, L->max_rank, L->compute);
}

static void expand(cuda_lora *L, void *y, int y_stride, int col0, int out, const float *v,
                   const cuda_lora_rows *const *rows)
{
    int d = L->n_single, rest = L->n_segs - d;
    if (d)
        KERNEL(cuda_lora_expand_bgmv, L->dt, y, y_stride, col0, out, v, L->v_stride, L->token_seg, d, rows,
               L->max_rank, L->compute);
    if (rest)
        KERNEL(cuda_lora_expand_sgmv, L->dt, y, y_stride, col0, out, v, L->v_stride, seg_start(L) + d, rest, rows + d,
               L->max_rank, L->compute);
}

/* v must be zero outside each rank's own columns for the all-reduce to assemble it; with one rank the
 * shrink writes every column the expand reads. */
static void clear_v(cuda_lora *L, size_t floats)
{
    if (L->tp_size > 1) CU_CHECK(cudaMemsetAsync(L->v, 0, floats * sizeof(float), L->compute));
}

ls_status cuda_lora_column(cuda_lora *L, int layer, const lora_module *mods, int n_mods, const void *x, int n,
                           int in, void *y, int y_stride, const int *y_col0, ls_error *err)
{
    if (!L->active) return LS_OK;
    LS_ASSERT(n_mods <= CUDA_LORA_MAX_MODULES && n <= L->max_tokens);
    cuda_lora_shrink_out outs[CUDA_LORA_MAX_MODULES];
    int which[CUDA_LORA_MAX_MODULES], k = 0;
    size_t block = (size_t)n * (size_t)L->v_stride;
    for (int i = 0; i < n_mods; i++) {
        int slot = layer * LORA_N_MODULES + mods[i];
        if (!L->any[slot]) continue;
        outs[k] = (cuda_lora_shrink_out){ .v = L->v + k * block, .v_stride = L->v_stride, .rows = table(L, slot) };
        which[k++] = i;
    }
    if (!k) return LS_OK;
    cuda_lora_finish(L);
    clear_v(L, (size_t)k * block);
    shrink(L, outs, k, x, in);
    // Each rank wrote its own columns of the rank dim (zeros elsewhere): one sum completes every module.
    ls_status st = nccl_comm_allreduce_sum(L->nc, L->v, (size_t)k * block, ncclFloat32, err);
    if (st != LS_OK) return st;
    for (int j = 0; j < k; j++) {
        lora_module_dims d = lora_module_shard(L->cfg, mods[which[j]], 1, L->tp_rank, L->tp_size);
        expand(L, y, y_stride, y_col0[which[j]], d.out_local, outs[j].v, outs[j].rows);
    }
    return LS_OK;
}

ls_status cuda_lora_row(cuda_lora *L, int layer, lora_module m, const void *x, int n, int in_local, void *y,
                        int y_stride, ls_error *err)
{
    int slot = layer * LORA_N_MODULES + m;
    if (!L->active || !L->any[slot]) return LS_OK;
    LS_ASSERT(n <= L->max_tokens);
    cuda_lora_finish(L);
    size_t block = (size_t)n * (size_t)L->v_stride;
    clear_v(L, block);
    cuda_lora_shrink_out out = { .v = L->v, .v_stride = L->v_stride, .rows = table(L, slot) };
    shrink(L, &out, 1, x, in_local);
    ls_status st = nccl_comm_allreduce_sum(L->nc, L->v, block, ncclFloat32, err);
    if (st != LS_OK) return st;
    lora_module_dims d = lora_module_shard(L->cfg, m, 1, L->tp_rank, L->tp_size);
    expand(L, y, y_stride, d.out_offset, d.out_local, L->v, out.rows);
    return LS_OK;
}

void cuda_lora_step_times(cuda_lora *L, double *read_s, double *copy_s)
{
    *read_s = L->read_s;
    *copy_s = 0;
    L->read_s = 0;
    if (!L->timed) return;
    L->timed = 0;
    float ms = 0;
    // The step waited for its copies (the compute stream waits on `copied`, recorded after copy_t1).
    if (cudaEventElapsedTime(&ms, L->copy_t0, L->copy_t1) == cudaSuccess) *copy_s = ms / 1e3;
}

void cuda_lora_warm(cuda_lora *L, int32_t id)
{
    const adapter_store *s = L->store;
    const stored_adapter *a = L->on && id >= 0 && id < s->cap ? s->slots[id] : NULL;
    if (!a || a->n_pages > L->n_free) return;       // never evicts: a warm-up must not cost a hot adapter
    ls_error err = { 0 };
    if (ensure_hot(L, entry_for(L, id, a), id, &err) != LS_OK)
        LOG_W("adapter %d stays cold (its first step reads it and reports): %s", id, err.msg);
}

void cuda_lora_drop(cuda_lora *L, int32_t id)
{
    if (id >= 0 && id < L->n_ent) forget(L, &L->ent[id]);
}

void cuda_lora_free(cuda_lora *L)
{
    if (L->copy) cudaStreamSynchronize(L->copy);
    for (int i = 0; i < L->n_ent; i++) {
        free(L->ent[i].pages);
        free(L->ent[i].hot);
    }
    void *pinned[] = { L->hot, L->h_arena, L->h_step };
    void *dev[] = { L->d_arena, L->d_step, L->v, L->token_seg };
    for (size_t i = 0; i < sizeof pinned / sizeof pinned[0]; i++)
        if (pinned[i]) cudaFreeHost(pinned[i]);
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (L->copied) cudaEventDestroy(L->copied);
    if (L->copy_t0) cudaEventDestroy(L->copy_t0);
    if (L->copy_t1) cudaEventDestroy(L->copy_t1);
    if (L->copy) cudaStreamDestroy(L->copy);
    free(L->free_pages);
    free(L->shard);
    free(L->any);
    free(L->ent);
    free(L->step_ids);
    memset(L, 0, sizeof *L);
}
