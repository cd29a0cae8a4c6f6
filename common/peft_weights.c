/* adapter_model.safetensors against an adapter's config (peft.h): the exact set of tensors PEFT
 * saves for the adapted modules, each with the shape the base and r demand, and nothing else. Then
 * one TP rank's shard in pool row order (lora_layout.h), unscaled fp32: the kernels apply the scale
 * once, so a scale baked in here would be applied twice.
 * Every check runs before the first row is written, so a rejected file leaves dst untouched; the
 * shard reader re-runs them because a worker must not trust that the coordinator's check saw the
 * same file. */
#include "common/peft.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/safetensors.h"

typedef struct weights {
    st_file *f;
    const st_tensor **t;        // (n_layers * LORA_N_MODULES * 2): [2 * (l * M + m) + is_b]; not owned
} weights;

static void weights_close(weights *w)
{
    st_close(w->f);
    free(w->t);
    memset(w, 0, sizeof *w);
}

/* "base_model.model.model.layers.{L}.{self_attn|mlp}.{m}.lora_{A|B}.weight" -> (L, m, is_b). */
static int parse_name(const char *name, int *layer, lora_module *m, int *is_b)
{
    static const char prefix[] = "base_model.model.model.layers.";
    if (strncmp(name, prefix, sizeof prefix - 1)) return 0;
    const char *p = name + sizeof prefix - 1;
    long l = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 7; p++, digits++) l = l * 10 + (*p - '0');
    if (!digits || (digits > 1 && p[-digits] == '0') || *p != '.') return 0;
    for (int k = 0; k < LORA_N_MODULES * 2; k++) {
        char full[160];
        peft_tensor_name(full, sizeof full, 0, (lora_module)(k / 2), k % 2);
        if (!strcmp(p, full + sizeof prefix - 1 + 1)) {     // the part after layer "0"
            *layer = (int)l;
            *m = (lora_module)(k / 2);
            *is_b = k % 2;
            return 1;
        }
    }
    return 0;
}

/* Why a tensor name is not one we load, or NULL when it is (layer bounds are checked by the caller). */
static const char *name_problem(const char *name, const lora_shape *s, int *layer, lora_module *m, int *is_b)
{
    if (strstr(name, ".default."))
        return "keeps the adapter-name segment \".default.\" (save with PEFT's save_pretrained)";
    if (!parse_name(name, layer, m, is_b))
        return "not a lora_A/lora_B weight of q/k/v/o/gate/up/down_proj of model.layers.N";
    if (*layer < s->n_layers && !s->rank[*layer * LORA_N_MODULES + *m])
        return "its module is not selected by adapter_config.json";
    return NULL;
}

static ls_status check_tensor(const st_tensor *t, const peft_adapter *a, const model_config *base, int layer,
                              lora_module m, int is_b, ls_error *err)
{
    int r = a->shape.rank[layer * LORA_N_MODULES + m], in, out;
    lora_module_full_dims(base, m, &in, &out);
    int64_t want0 = is_b ? out : r, want1 = is_b ? r : in;
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return ls_fail(err, LS_INVALID_ARGUMENT, "tensor \"%s\": dtype %s (F32, F16 or BF16 only)", t->name,
                       st_dtype_name(t->dtype));
    if (t->n_dims == 2 && t->shape[0] == want0 && t->shape[1] == want1) return LS_OK;
    char got[64] = "[";
    for (int d = 0; d < t->n_dims && d < 4; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    strncat(got, "]", sizeof got - strlen(got) - 1);
    // The rank dimension disagreeing with r is a broken file; the other one, an adapter for another base.
    int rank_ok = t->n_dims == 2 && t->shape[is_b ? 1 : 0] == r;
    return ls_fail(err, rank_ok ? LS_FAILED_PRECONDITION : LS_INVALID_ARGUMENT,
                   "tensor \"%s\": shape %s, expected [%lld, %lld] (r %d, base %s %d -> %d)", t->name, got,
                   (long long)want0, (long long)want1, r, lora_module_name(m), in, out);
}

/* Files the tensor under its (layer, module, A/B) slot; extra or foreign tensors fail, listing them. */
static ls_status index_tensors(weights *w, const peft_adapter *a, const model_config *base, ls_error *err)
{
    char names[256] = "";
    const char *first_why = NULL;
    size_t n_bad = 0;
    for (size_t i = 0; i < st_count(w->f); i++) {
        const st_tensor *t = st_at(w->f, i);
        int layer = 0, is_b = 0;
        lora_module m = LORA_Q;
        const char *why = name_problem(t->name, &a->shape, &layer, &m, &is_b);
        if (!why && layer >= base->n_layers)
            return ls_fail(err, LS_FAILED_PRECONDITION, "tensor \"%s\": layer %d >= num_hidden_layers %d of the "
                           "base", t->name, layer, base->n_layers);
        if (why) {
            if (!n_bad++) first_why = why;
            if (n_bad <= 3)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s\"%.70s\"", n_bad > 1 ? ", " : "",
                         t->name);
            continue;
        }
        ls_status rc = check_tensor(t, a, base, layer, m, is_b, err);
        if (rc) return rc;
        w->t[2 * (layer * LORA_N_MODULES + m) + is_b] = t;
    }
    if (n_bad == 1) return ls_fail(err, LS_INVALID_ARGUMENT, "unexpected tensor %s: %s", names, first_why);
    if (n_bad)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%zu unexpected tensors %s%s; the first %s", n_bad, names,
                       n_bad > 3 ? ", ..." : "", first_why);
    return LS_OK;
}

static ls_status check_complete(const weights *w, const peft_adapter *a, ls_error *err)
{
    for (int l = 0; l < a->shape.n_layers; l++)
        for (int m = 0; m < LORA_N_MODULES; m++)
            for (int is_b = 0; is_b < 2; is_b++) {
                if (!a->shape.rank[l * LORA_N_MODULES + m] || w->t[2 * (l * LORA_N_MODULES + m) + is_b]) continue;
                char name[160];
                peft_tensor_name(name, sizeof name, l, (lora_module)m, is_b);
                return ls_fail(err, LS_INVALID_ARGUMENT, "missing tensor \"%s\"", name);
            }
    return LS_OK;
}

static ls_status weights_open(weights *w, const peft_adapter *a, const model_config *base, ls_error *err)
{
    char path[4200];
    memset(w, 0, sizeof *w);
    if (a->shape.n_layers != base->n_layers || !a->shape.rank)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: adapter config was read for another base", a->dir);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", a->dir);
    ls_status rc = st_open(&w->f, path, err);
    if (rc) return rc;
    if (!(w->t = calloc((size_t)base->n_layers * LORA_N_MODULES * 2, sizeof *w->t)))
        rc = ls_fail(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", path);
    if (!rc && !(rc = index_tensors(w, a, base, err))) rc = check_complete(w, a, err);
    if (rc) {
        ls_error_wrap(err, "%s", path);
        weights_close(w);
    }
    return rc;
}

ls_status peft_check_tensors(const peft_adapter *a, const model_config *base, ls_error *err)
{
    weights w;
    ls_status rc = weights_open(&w, a, base, err);
    weights_close(&w);
    return rc;
}

/* ---- one rank's shard ---- */

typedef struct shard_ctx {
    const weights *w;
    const peft_adapter *a;
    const model_config *base;
    int tp_rank, tp_size;
    size_t page_floats;
    float *dst;
    uint16_t *dst16;            // peft_read_shard16: rows in `want` instead of dst
    st_dtype want;
} shard_ctx;

/* Element k of t as fp32. */
static float elem_f32(const st_tensor *t, size_t k)
{
    const unsigned char *src = t->data;
    float f;
    uint16_t h;
    if (t->dtype == ST_F32) { memcpy(&f, src + 4 * k, 4); return f; }
    memcpy(&h, src + 2 * k, 2);
    return t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
}

/* Where a pool row comes from: the tensor and its elements first, first + stride, ... An A row is a
 * slice of a lora_A row (row-split modules hold this rank's input columns, column-split ones all of
 * them); a B^T row is a column of lora_B. */
static const st_tensor *row_source(const shard_ctx *s, int layer, lora_module m, int is_b, int row, size_t *first,
                                   size_t *stride)
{
    int idx = layer * LORA_N_MODULES + m, r = s->a->shape.rank[idx];
    lora_module_dims d = lora_module_shard(s->base, m, r, s->tp_rank, s->tp_size);
    const st_tensor *t = s->w->t[2 * idx + is_b];
    if (!is_b) {
        size_t in = (size_t)t->shape[1], col = d.split_rank ? 0 : (size_t)s->tp_rank * (size_t)d.in_local;
        *first = (size_t)(d.a_rank0 + row) * in + col;
        *stride = 1;
    } else {
        *first = (size_t)d.out_offset * (size_t)r + (size_t)row;
        *stride = (size_t)r;
    }
    return t;
}

static void put_row(void *ctx, int layer, lora_module m, int is_b, int row, int page, size_t offset, int len)
{
    const shard_ctx *s = ctx;
    size_t first, stride;
    const st_tensor *t = row_source(s, layer, m, is_b, row, &first, &stride);
    float *out = s->dst + (size_t)page * s->page_floats + offset;
    LS_ASSERT(len == 0 || first + (size_t)(len - 1) * stride < t->numel);
    if (stride == 1) {
        st_to_f32(out, t, first, (size_t)len);
        return;
    }
    for (int i = 0; i < len; i++) out[i] = elem_f32(t, first + (size_t)i * stride);
}

/* n elements of t at first, first + stride, ... in the 16-bit type want: bits copied when t already
 * has that type (what converting through fp32 and back would give), else rounded from fp32. */
static void strided_to_16(uint16_t *dst, const st_tensor *t, size_t first, size_t stride, size_t n, st_dtype want)
{
    LS_ASSERT(n == 0 || first + (n - 1) * stride < t->numel);
    const unsigned char *src = t->data;
    if (t->dtype == want && stride == 1) {
        memcpy(dst, src + 2 * first, 2 * n);
    } else if (t->dtype == want) {
        for (size_t i = 0; i < n; i++) memcpy(&dst[i], src + 2 * (first + i * stride), 2);
    } else {
        for (size_t i = 0; i < n; i++) {
            float f = elem_f32(t, first + i * stride);
            dst[i] = want == ST_F16 ? st_f32_to_f16(f) : st_f32_to_bf16(f);
        }
    }
}

static void put_row16(void *ctx, int layer, lora_module m, int is_b, int row, int page, size_t offset, int len)
{
    const shard_ctx *s = ctx;
    size_t first, stride;
    const st_tensor *t = row_source(s, layer, m, is_b, row, &first, &stride);
    strided_to_16(s->dst16 + (size_t)page * s->page_floats + offset, t, first, stride, (size_t)len, s->want);
}

/* TP must split every adapted module evenly and every row must fit a page; walking would abort otherwise. */
static ls_status check_split(const peft_adapter *a, const model_config *base, int tp_rank, int tp_size,
                             size_t page_floats, ls_error *err)
{
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size)
        return ls_fail(err, LS_INVALID_ARGUMENT, "tp rank %d of %d", tp_rank, tp_size);
    for (int m = 0; m < LORA_N_MODULES; m++) {
        int in, out, used = 0;
        for (int l = 0; l < a->shape.n_layers; l++) used |= a->shape.rank[l * LORA_N_MODULES + m] != 0;
        if (!used) continue;
        lora_module_full_dims(base, (lora_module)m, &in, &out);
        lora_module_dims d = lora_module_shard(base, (lora_module)m, 1, tp_rank, tp_size);
        int split = d.split_rank ? out : in;
        if (split % tp_size)
            return ls_fail(err, LS_INVALID_ARGUMENT, "%s: width %d does not split over tp %d", lora_module_name(m),
                           split, tp_size);
        if ((size_t)d.in_local > page_floats || (size_t)d.out_local > page_floats)
            return ls_fail(err, LS_INVALID_ARGUMENT, "%s: rows of %d / %d floats exceed a page of %zu",
                           lora_module_name(m), d.in_local, d.out_local, page_floats);
    }
    return LS_OK;
}

ls_status peft_read_shard(const peft_adapter *a, const model_config *base, int tp_rank, int tp_size,
                          size_t page_floats, float *dst, ls_error *err)
{
    ls_status rc = check_split(a, base, tp_rank, tp_size, page_floats, err);
    if (rc) return rc;
    weights w;
    if ((rc = weights_open(&w, a, base, err))) return rc;
    shard_ctx ctx = { &w, a, base, tp_rank, tp_size, page_floats, dst, NULL, ST_F32 };
    lora_layout_walk(base, &a->shape, tp_rank, tp_size, page_floats, put_row, &ctx);
    weights_close(&w);
    return LS_OK;
}

/* The 16-bit reader's rows are listed first, then copied by a few threads: a rank-64 7B adapter is
 * ~130 MB of gathers, and the worker that waits on it has cores to spare. */
typedef struct row_job {
    int layer, module, is_b, row, page, len;
    size_t offset;
} row_job;

typedef struct row_jobs {
    row_job *j;
    size_t n, cap;
    const shard_ctx *ctx;
    int n_threads;
} row_jobs;

#define READ_THREADS 4

static void list_row(void *ctx, int layer, lora_module m, int is_b, int row, int page, size_t offset, int len)
{
    row_jobs *r = ctx;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 1024;
        r->j = ls_xrealloc(r->j, r->cap * sizeof *r->j);
    }
    r->j[r->n++] = (row_job){ layer, (int)m, is_b, row, page, len, offset };
}

typedef struct row_part {
    const row_jobs *r;
    int part;
} row_part;

static void *copy_rows(void *arg)
{
    const row_part *p = arg;
    const row_jobs *r = p->r;
    size_t lo = r->n * (size_t)p->part / (size_t)r->n_threads, hi = r->n * (size_t)(p->part + 1) / (size_t)r->n_threads;
    for (size_t i = lo; i < hi; i++) {
        const row_job *j = &r->j[i];
        put_row16((void *)r->ctx, j->layer, (lora_module)j->module, j->is_b, j->row, j->page, j->offset, j->len);
    }
    return NULL;
}

ls_status peft_read_shard16(const peft_adapter *a, const model_config *base, int tp_rank, int tp_size,
                            size_t page_elems, int bf16, uint16_t *dst, ls_error *err)
{
    ls_status rc = check_split(a, base, tp_rank, tp_size, page_elems, err);
    if (rc) return rc;
    weights w;
    if ((rc = weights_open(&w, a, base, err))) return rc;
    shard_ctx ctx = { &w, a, base, tp_rank, tp_size, page_elems, NULL, dst, bf16 ? ST_BF16 : ST_F16 };
    row_jobs r = { .ctx = &ctx, .n_threads = READ_THREADS };
    lora_layout_walk(base, &a->shape, tp_rank, tp_size, page_elems, list_row, &r);
    pthread_t th[READ_THREADS];
    row_part parts[READ_THREADS];
    int started = 0;
    for (int t = 1; t < READ_THREADS; t++) {
        parts[t] = (row_part){ &r, t };
        if (pthread_create(&th[t], NULL, copy_rows, &parts[t]) != 0) break;
        started = t;
    }
    parts[0] = (row_part){ &r, 0 };
    copy_rows(&parts[0]);
    for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
    for (int t = started + 1; t < READ_THREADS; t++) copy_rows(&parts[t]);   // threads that did not start
    free(r.j);
    weights_close(&w);
    return LS_OK;
}
