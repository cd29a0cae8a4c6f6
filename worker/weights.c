/* Loads one tensor-parallel rank's slice of a Hugging Face checkpoint into a single fp32 arena (see
 * weights.h for the split). Runs on every worker rank at start-up, so it must fail loudly and
 * identically on bad input: every tensor of the canonical list (model_config.h) is looked up, its
 * dtype and shape checked against config.json, and only then is the arena allocated and filled. A
 * message always names the file and the tensor, because "shape mismatch" alone is useless on a
 * 30-shard checkpoint. */
#include "worker/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/json.h"
#include "common/log.h"
#include "common/safetensors.h"

#define INDEX_MAX_BYTES (64u << 20)

/* The checkpoint's files: one model.safetensors, or the shards an index names (opened on demand). */
typedef struct ckpt {
    const char *dir;
    st_file *single;            // owned; set when there is no index
    json_doc *index;            // owned
    const json *weight_map;     // into index
    char **names;               // owned shard file names, n_files of them
    st_file **files;            // owned, parallel to names; NULL until first use
    size_t n_files;
} ckpt;

/* A shard name must stay inside the model directory. */
static int safe_file_name(const char *s, size_t len)
{
    return len > 0 && strlen(s) == len && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static ls_status ckpt_open_index(ckpt *c, const char *path, ls_error *err)
{
    ls_status rc = json_parse_file(&c->index, path, INDEX_MAX_BYTES, err);
    if (rc) return rc;
    c->weight_map = json_get(json_root(c->index), "weight_map");
    if (!c->weight_map || c->weight_map->type != JSON_OBJECT)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: weight_map: expected an object", path);
    c->names = ls_xcalloc(c->weight_map->len + 1, sizeof *c->names);
    c->files = ls_xcalloc(c->weight_map->len + 1, sizeof *c->files);
    return LS_OK;
}

static ls_status ckpt_open(ckpt *c, const char *dir, ls_error *err)
{
    memset(c, 0, sizeof *c);
    c->dir = dir;
    char path[4096];
    // transformers prefers the single file when both exist.
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!access(path, F_OK)) return st_open(&c->single, path, err);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!access(path, F_OK)) return ckpt_open_index(c, path, err);
    return ls_fail(err, LS_INVALID_ARGUMENT, "%s: no model.safetensors or model.safetensors.index.json", dir);
}

static void ckpt_close(ckpt *c)
{
    st_close(c->single);
    for (size_t i = 0; i < c->n_files; i++) {
        st_close(c->files[i]);
        free(c->names[i]);
    }
    free(c->names);
    free(c->files);
    json_free(c->index);
}

static ls_status ckpt_shard(ckpt *c, const json *file, st_file **out, ls_error *err)
{
    for (size_t i = 0; i < c->n_files; i++)
        if (!strcmp(c->names[i], file->str)) { *out = c->files[i]; return LS_OK; }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", c->dir, file->str);
    ls_status rc = st_open(&c->files[c->n_files], path, err);
    if (rc) return rc;
    c->names[c->n_files] = strdup(file->str);
    *out = c->files[c->n_files++];
    return LS_OK;
}

/* Finds a tensor, naming in `where` the file it came from (or should have come from). */
static ls_status ckpt_find(ckpt *c, const char *name, const st_tensor **t, char *where, size_t wn, ls_error *err)
{
    st_file *f = c->single;
    snprintf(where, wn, "%s/model.safetensors", c->dir);
    if (!f) {
        const json *file = json_get(c->weight_map, name);
        snprintf(where, wn, "%s/model.safetensors.index.json", c->dir);
        if (!file) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: tensor \"%s\" missing from weight_map", where, name);
        if (file->type != JSON_STRING || !safe_file_name(file->str, file->len))
            return ls_fail(err, LS_INVALID_ARGUMENT, "%s: tensor \"%s\": bad shard file name", where, name);
        ls_status rc = ckpt_shard(c, file, &f, err);
        if (rc) return ls_error_wrap(err, "tensor \"%s\"", name);
        snprintf(where, wn, "%s/%s", c->dir, file->str);
    }
    *t = st_find(f, name);
    if (!*t) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: tensor \"%s\" missing", where, name);
    return LS_OK;
}

/* This rank's share of each kind of tensor: rows kept [row0, row0 + rows), columns [col0, col0 + cols). */
typedef struct slice { int64_t row0, rows, col0, cols; } slice;

static slice slice_of(const model_weights *w, const model_tensor *t)
{
    const model_config *c = &w->cfg;
    int64_t r = t->shape[0], k = t->n_dims == 2 ? t->shape[1] : 1, hd = c->head_dim;
    slice s = { 0, r, 0, k };
    switch (t->kind) {
    case MODEL_TENSOR_Q: s.rows = w->n_heads_local * hd; s.row0 = w->tp_rank * s.rows; break;
    case MODEL_TENSOR_K: case MODEL_TENSOR_V: s.rows = w->n_kv_heads_local * hd; s.row0 = w->tp_rank * s.rows; break;
    case MODEL_TENSOR_GATE: case MODEL_TENSOR_UP: s.rows = w->inter_local; s.row0 = (int64_t)w->tp_rank * s.rows; break;
    case MODEL_TENSOR_O: s.cols = w->n_heads_local * hd; s.col0 = w->tp_rank * s.cols; break;
    case MODEL_TENSOR_DOWN: s.cols = w->inter_local; s.col0 = (int64_t)w->tp_rank * s.cols; break;
    case MODEL_TENSOR_LM_HEAD: s.rows = w->vocab_local; s.row0 = w->vocab_start; break;
    default: break;             // embed and norms are replicated
    }
    return s;
}

static float **dest_of(model_weights *w, const model_tensor *t)
{
    layer_weights *l = t->layer >= 0 ? &w->layers[t->layer] : NULL;
    switch (t->kind) {
    case MODEL_TENSOR_EMBED: return &w->embed;
    case MODEL_TENSOR_FINAL_NORM: return &w->final_norm;
    case MODEL_TENSOR_LM_HEAD: return &w->lm_head;
    case MODEL_TENSOR_ATTN_NORM: return &l->attn_norm;
    case MODEL_TENSOR_Q: return &l->wq;
    case MODEL_TENSOR_K: return &l->wk;
    case MODEL_TENSOR_V: return &l->wv;
    case MODEL_TENSOR_O: return &l->wo;
    case MODEL_TENSOR_MLP_NORM: return &l->mlp_norm;
    case MODEL_TENSOR_GATE: return &l->w_gate;
    case MODEL_TENSOR_UP: return &l->w_up;
    case MODEL_TENSOR_DOWN: return &l->w_down;
    }
    return NULL;
}

static void fmt_shape(char *buf, size_t n, int n_dims, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < n_dims && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static ls_status check_tensor(const st_tensor *t, const model_tensor *want, const char *where, ls_error *err)
{
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: tensor \"%s\": dtype %s, expected F32, F16 or BF16", where,
                       want->name, st_dtype_name(t->dtype));
    int same = t->n_dims == want->n_dims;
    for (int i = 0; same && i < want->n_dims; i++) same = t->shape[i] == want->shape[i];
    if (same) return LS_OK;
    char got[96], need[96];
    fmt_shape(got, sizeof got, t->n_dims, t->shape);
    fmt_shape(need, sizeof need, want->n_dims, want->shape);
    return ls_fail(err, LS_INVALID_ARGUMENT, "%s: tensor \"%s\": shape %s, config.json needs %s", where, want->name,
                   got, need);
}

static void copy_slice(float *dst, const st_tensor *t, const model_tensor *want, slice s)
{
    int64_t full_cols = want->n_dims == 2 ? want->shape[1] : 1;
    if (s.cols == full_cols) {
        st_to_f32(dst, t, (size_t)(s.row0 * full_cols), (size_t)(s.rows * full_cols));
        return;
    }
    for (int64_t r = 0; r < s.rows; r++)
        st_to_f32(dst + r * s.cols, t, (size_t)((s.row0 + r) * full_cols + s.col0), (size_t)s.cols);
}

static ls_status check_split(model_weights *w, int tp_rank, int tp_size, ls_error *err)
{
    const model_config *c = &w->cfg;
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size)
        return ls_fail(err, LS_INVALID_ARGUMENT, "weights: tp_rank %d / tp_size %d", tp_rank, tp_size);
    const struct { const char *field; int n; } parts[] = {
        { "num_attention_heads", c->n_heads }, { "num_key_value_heads", c->n_kv_heads },
        { "intermediate_size", c->intermediate_size }, { "vocab_size", c->vocab_size },
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if ((i < 3 && parts[i].n % tp_size) || parts[i].n < tp_size)
            return ls_fail(err, LS_INVALID_ARGUMENT, "weights: %s %d is not divisible by tp_size %d", parts[i].field,
                           parts[i].n, tp_size);
    w->tp_rank = tp_rank;
    w->tp_size = tp_size;
    w->n_heads_local = c->n_heads / tp_size;
    w->n_kv_heads_local = c->n_kv_heads / tp_size;
    w->inter_local = c->intermediate_size / tp_size;
    int per = c->vocab_size / tp_size;
    w->vocab_start = tp_rank * per;
    w->vocab_local = tp_rank == tp_size - 1 ? c->vocab_size - w->vocab_start : per;
    return LS_OK;
}

/* Tied checkpoints have no lm_head tensor: the head is this rank's rows of embed_tokens. */
static model_tensor lm_head_want(const model_config *c)
{
    model_tensor t = model_tensor_at(c, 0);
    t.kind = MODEL_TENSOR_LM_HEAD;
    return t;
}

typedef struct plan_entry { model_tensor want; const st_tensor *src; slice s; } plan_entry;

/* Progress of the copy into the arena, logged by the first worker at most every PROGRESS_EVERY_S and
 * once at the end, so that a 70B load (minutes) is not silent; the other ranks load in step with it. */
#define PROGRESS_EVERY_S 2.0

typedef struct progress { int tp_rank; size_t n_shards; double t0, next; size_t done, total; } progress;

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t entry_bytes(const plan_entry *p) { return (size_t)(p->s.rows * p->s.cols) * st_dtype_size(p->src->dtype); }

static void progress_start(progress *pg, const model_weights *w, const ckpt *c, const plan_entry *p, int n)
{
    memset(pg, 0, sizeof *pg);
    pg->tp_rank = w->tp_rank;
    pg->n_shards = c->single ? 1 : c->n_files;
    pg->t0 = wall_s();
    pg->next = pg->t0 + PROGRESS_EVERY_S;
    for (int i = 0; i < n; i++) pg->total += entry_bytes(&p[i]);
}

static void progress_step(progress *pg, const plan_entry *p, int i, int n)
{
    pg->done += entry_bytes(p);
    double t = wall_s();
    if (pg->tp_rank != 0 || (t < pg->next && i + 1 < n)) return;
    pg->next = t + PROGRESS_EVERY_S;
    double gib = 1.0 / (1 << 30), frac = pg->total ? (double)pg->done / (double)pg->total : 1;
    if (i + 1 == n) {
        LOG_I("weights loaded: %d tensors, %.2f GiB of this rank's slices from %zu shard file(s) in %.1f s", n,
              pg->total * gib, pg->n_shards, t - pg->t0);
        return;
    }
    LOG_I("loading weights: %d/%d tensors, %.2f/%.2f GiB (%.0f%%) from %zu shard file(s), about %.0f s left", i + 1, n,
          pg->done * gib, pg->total * gib, 100 * frac, pg->n_shards, frac > 0 ? (t - pg->t0) * (1 - frac) / frac : 0);
}

/* Looks up and checks every tensor before anything is allocated. */
static ls_status plan_tensors(model_weights *w, ckpt *c, plan_entry *p, int n, size_t *floats, ls_error *err)
{
    char where[4200];
    *floats = 0;
    for (int i = 0; i < n; i++) {
        p[i].want = i < model_tensor_count(&w->cfg) ? model_tensor_at(&w->cfg, i) : lm_head_want(&w->cfg);
        const char *lookup = i < model_tensor_count(&w->cfg) ? p[i].want.name : "model.embed_tokens.weight";
        ls_status rc = ckpt_find(c, lookup, &p[i].src, where, sizeof where, err);
        if (!rc) rc = check_tensor(p[i].src, &p[i].want, where, err);
        if (rc) return rc;
        p[i].s = slice_of(w, &p[i].want);
        *floats += (size_t)(p[i].s.rows * p[i].s.cols);
    }
    return LS_OK;
}

static ls_status load_all(model_weights *w, ckpt *c, ls_error *err)
{
    int n = model_tensor_count(&w->cfg) + !!w->cfg.tie_word_embeddings;
    plan_entry *p = ls_xcalloc((size_t)n, sizeof *p);
    size_t floats = 0;
    ls_status rc = plan_tensors(w, c, p, n, &floats, err);
    if (!rc) {
        w->arena = malloc(floats * sizeof *w->arena);
        if (!w->arena)
            rc = ls_fail(err, LS_RESOURCE_EXHAUSTED, "weights: cannot allocate %zu MiB", floats * 4 >> 20);
    }
    if (!rc) {
        w->arena_floats = floats;
        w->layers = ls_xcalloc((size_t)w->cfg.n_layers, sizeof *w->layers);
        float *at = w->arena;
        progress pg;
        progress_start(&pg, w, c, p, n);
        for (int i = 0; i < n; i++) {
            *dest_of(w, &p[i].want) = at;
            copy_slice(at, p[i].src, &p[i].want, p[i].s);
            at += p[i].s.rows * p[i].s.cols;
            progress_step(&pg, &p[i], i, n);
        }
    }
    free(p);
    return rc;
}

ls_status model_weights_load(model_weights *w, const char *dir, int tp_rank, int tp_size, ls_error *err)
{
    ls_error local;
    if (!err) err = &local;
    memset(w, 0, sizeof *w);
    ls_status rc = model_config_load(&w->cfg, dir, err);
    if (rc) return rc;
    if ((rc = check_split(w, tp_rank, tp_size, err))) return rc;
    ckpt c;
    rc = ckpt_open(&c, dir, err);
    if (!rc) rc = load_all(w, &c, err);
    ckpt_close(&c);
    if (rc) {
        // A missing shard is NOT_FOUND to st_open, but to the operator it is a bad model directory.
        if (rc != LS_RESOURCE_EXHAUSTED) err->code = rc = LS_INVALID_ARGUMENT;
        model_weights_free(w);
        return rc;
    }
    return LS_OK;
}

void model_weights_free(model_weights *w)
{
    if (!w) return;
    free(w->arena);
    free(w->layers);
    memset(w, 0, sizeof *w);
}
