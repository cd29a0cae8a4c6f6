/* Writes a Hugging Face Llama/Mistral directory with random weights: the demo model served when no
 * --model is given, and every test model. The files are what transformers' save_pretrained writes
 * (sorted-key config.json, generation_config.json, model.safetensors or shards + index), so the
 * loader is exercised on the real layout and the directories load in transformers too.
 * Each tensor draws from its own stream seeded by (seed, name), so the values do not depend on the
 * dtype, the shard count or the order of writing: tests compare layouts of the same model. */
#include "common/model_gen.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "common/safetensors.h"

#define GEN_TRANSFORMERS_VERSION "4.46.0"     // the layout written; the loader reads 4.x and 5.x

model_gen_opts model_gen_demo_opts(int vocab_size)
{
    model_gen_opts o = { .dtype = "float32", .n_shards = 1, .seed = 1234, .init_std = 0.1f };
    model_config *c = &o.cfg;
    snprintf(c->architecture, sizeof c->architecture, "LlamaForCausalLM");
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
    c->vocab_size = vocab_size;
    c->hidden_size = 128;
    c->intermediate_size = 344;
    c->n_layers = 4;
    c->n_heads = 4;
    c->n_kv_heads = 2;          // GQA, and divisible by TP = 2
    c->head_dim = 32;
    c->max_position = 1024;
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->bos_token_id = 1;
    c->eos_token_ids[0] = 2;
    c->n_eos = 1;
    return o;
}

/* splitmix64 (Steele et al.): a full-period 64-bit generator that needs no warm-up. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform_open(uint64_t *s) { return ((double)(splitmix64(s) >> 11) + 0.5) * 0x1p-53; }

/* Box-Muller: both outputs of each pair are used. */
static void fill_normal(float *x, size_t n, uint64_t *s, float mean, float std)
{
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(uniform_open(s))), a = 2.0 * M_PI * uniform_open(s);
        x[i] = mean + std * (float)(r * cos(a));
        if (i + 1 < n) x[i + 1] = mean + std * (float)(r * sin(a));
    }
}

static uint64_t tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    uint64_t s = seed ^ h;
    return splitmix64(&s);
}

/* The shortest %g that reads back as the same float, as Python's repr does ("1e-05", "500000.0"). */
static void fmt_float(char *buf, size_t n, float v)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eni")) strncat(buf, ".0", n - strlen(buf) - 1);
}

static void fmt_eos(char *buf, size_t n, const model_config *c)
{
    if (c->n_eos == 0) { snprintf(buf, n, "null"); return; }
    if (c->n_eos == 1) { snprintf(buf, n, "%d", c->eos_token_ids[0]); return; }
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < c->n_eos && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%d", i ? ", " : "", c->eos_token_ids[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static void fmt_rope_scaling(char *buf, size_t n, const model_config *c)
{
    if (c->rope_scaling != ROPE_SCALING_LLAMA3) { snprintf(buf, n, "null"); return; }
    char f[32], lo[32], hi[32];
    fmt_float(f, sizeof f, c->rope_factor);
    fmt_float(lo, sizeof lo, c->rope_low_freq_factor);
    fmt_float(hi, sizeof hi, c->rope_high_freq_factor);
    snprintf(buf, n, "{\n    \"factor\": %s,\n    \"high_freq_factor\": %s,\n    \"low_freq_factor\": %s,\n"
             "    \"original_max_position_embeddings\": %d,\n    \"rope_type\": \"llama3\"\n  }",
             f, hi, lo, c->rope_original_max_position);
}

typedef struct kv { const char *key; char value[512]; } kv;

static int kv_cmp(const void *a, const void *b) { return strcmp(((const kv *)a)->key, ((const kv *)b)->key); }

static void put(kv *e, int *n, const char *key, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(kv *e, int *n, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e[*n].key = key;
    vsnprintf(e[*n].value, sizeof e[*n].value, fmt, ap);
    va_end(ap);
    (*n)++;
}

/* json.dumps(indent=2, sort_keys=True) of the entries. */
static ls_status write_json(const char *path, kv *e, int n, ls_error *err)
{
    qsort(e, (size_t)n, sizeof *e, kv_cmp);
    FILE *f = fopen(path, "w");
    if (!f) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: %s", path, strerror(errno));
    fprintf(f, "{\n");
    for (int i = 0; i < n; i++) fprintf(f, "  \"%s\": %s%s\n", e[i].key, e[i].value, i + 1 < n ? "," : "");
    fprintf(f, "}\n");
    int bad = ferror(f);
    if (fclose(f) || bad) return ls_fail(err, LS_INTERNAL, "%s: write failed", path);
    return LS_OK;
}

static ls_status write_config(const char *dir, const model_gen_opts *o, ls_error *err)
{
    const model_config *c = &o->cfg;
    int mistral = !strcmp(c->architecture, "MistralForCausalLM"), n = 0;
    kv e[32];
    char eps[32], theta[32], std[32], path[4096];
    fmt_float(eps, sizeof eps, c->rms_eps);
    fmt_float(theta, sizeof theta, c->rope_theta);
    fmt_float(std, sizeof std, o->init_std);
    put(e, &n, "architectures", "[\n    \"%s\"\n  ]", c->architecture);
    put(e, &n, "attention_dropout", "0.0");
    if (c->bos_token_id >= 0) put(e, &n, "bos_token_id", "%d", c->bos_token_id);
    else put(e, &n, "bos_token_id", "null");
    fmt_eos(e[n].value, sizeof e[n].value, c); e[n++].key = "eos_token_id";
    put(e, &n, "head_dim", "%d", c->head_dim);
    put(e, &n, "hidden_act", "\"silu\"");
    put(e, &n, "hidden_size", "%d", c->hidden_size);
    put(e, &n, "initializer_range", "%s", std);
    put(e, &n, "intermediate_size", "%d", c->intermediate_size);
    put(e, &n, "max_position_embeddings", "%d", c->max_position);
    put(e, &n, "model_type", mistral ? "\"mistral\"" : "\"llama\"");
    put(e, &n, "num_attention_heads", "%d", c->n_heads);
    put(e, &n, "num_hidden_layers", "%d", c->n_layers);
    put(e, &n, "num_key_value_heads", "%d", c->n_kv_heads);
    put(e, &n, "rms_norm_eps", "%s", eps);
    fmt_rope_scaling(e[n].value, sizeof e[n].value, c); e[n++].key = "rope_scaling";
    put(e, &n, "rope_theta", "%s", theta);
    put(e, &n, "tie_word_embeddings", c->tie_word_embeddings ? "true" : "false");
    put(e, &n, "torch_dtype", "\"%s\"", o->dtype);
    put(e, &n, "transformers_version", "\"%s\"", GEN_TRANSFORMERS_VERSION);
    put(e, &n, "use_cache", "true");
    put(e, &n, "vocab_size", "%d", c->vocab_size);
    if (mistral) {
        if (c->sliding_window > 0) put(e, &n, "sliding_window", "%d", c->sliding_window);
        else put(e, &n, "sliding_window", "null");
    } else {
        put(e, &n, "attention_bias", "false");
        put(e, &n, "mlp_bias", "false");
        put(e, &n, "pretraining_tp", "1");
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    return write_json(path, e, n, err);
}

static ls_status write_generation_config(const char *dir, const model_config *c, ls_error *err)
{
    kv e[4];
    int n = 0;
    char path[4096];
    put(e, &n, "_from_model_config", "true");
    if (c->bos_token_id >= 0) put(e, &n, "bos_token_id", "%d", c->bos_token_id);
    fmt_eos(e[n].value, sizeof e[n].value, c); e[n++].key = "eos_token_id";
    put(e, &n, "transformers_version", "\"%s\"", GEN_TRANSFORMERS_VERSION);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    return write_json(path, e, n, err);
}

static ls_status parse_dtype(const char *name, st_dtype *out, ls_error *err)
{
    static const struct { const char *torch; st_dtype st; } map[] = {
        { "float32", ST_F32 }, { "float16", ST_F16 }, { "bfloat16", ST_BF16 },
    };
    for (size_t i = 0; name && i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(name, map[i].torch)) { *out = map[i].st; return LS_OK; }
    return ls_fail(err, LS_INVALID_ARGUMENT, "model_gen: dtype \"%s\" (float32, float16, bfloat16)",
                   name ? name : "(null)");
}

static st_spec spec_of(const model_tensor *t, st_dtype dtype)
{
    st_spec s = { .name = t->name, .dtype = dtype, .n_dims = t->n_dims };
    s.shape[0] = t->shape[0];
    s.shape[1] = t->shape[1];
    return s;
}

static uint64_t tensor_bytes(const model_tensor *t, st_dtype dtype)
{
    return (uint64_t)t->shape[0] * (uint64_t)(t->n_dims == 2 ? t->shape[1] : 1) * st_dtype_size(dtype);
}

/* A tiled tensor repeats one block of TILE_PERIOD values drawn from the tensor's own stream, converted
 * once: the prime period makes consecutive rows distinct shifts of the block (no rank collapse), and the
 * bytes go out at disk speed. Only benchmarks ask for it: they need the shape and scale, not i.i.d. values. */
#define TILE_PERIOD 65521
#define TILE_REPEAT 64

static ls_status put_tiled(st_writer *w, size_t numel, uint64_t s, float std, st_dtype dtype, ls_error *err)
{
    size_t esz = st_dtype_size(dtype), chunk = (size_t)TILE_PERIOD * TILE_REPEAT;
    float *x = ls_xmalloc(TILE_PERIOD * sizeof *x);
    unsigned char *buf = ls_xmalloc(chunk * esz);
    fill_normal(x, TILE_PERIOD, &s, 0.0f, std);
    for (size_t i = 0; i < TILE_PERIOD; i++) {
        uint16_t h = dtype == ST_F16 ? st_f32_to_f16(x[i]) : st_f32_to_bf16(x[i]);
        if (dtype == ST_F32) memcpy(buf + i * esz, &x[i], esz);
        else memcpy(buf + i * esz, &h, esz);
    }
    for (size_t r = 1; r < TILE_REPEAT; r++) memcpy(buf + r * TILE_PERIOD * esz, buf, TILE_PERIOD * esz);
    ls_status rc = LS_OK;
    for (size_t done = 0; !rc && done < numel; done += chunk)
        rc = st_writer_put(w, buf, (numel - done < chunk ? numel - done : chunk) * esz, err);
    free(x);
    free(buf);
    return rc;
}

/* Generates one tensor in fp32 and narrows it to the file dtype. */
static ls_status put_tensor(st_writer *w, const model_tensor *t, const model_gen_opts *o, st_dtype dtype,
                            ls_error *err)
{
    size_t numel = (size_t)(tensor_bytes(t, ST_F32) / 4);
    uint64_t s = tensor_seed(o->seed, t->name);
    int norm = t->kind == MODEL_TENSOR_ATTN_NORM || t->kind == MODEL_TENSOR_MLP_NORM ||
               t->kind == MODEL_TENSOR_FINAL_NORM;
    if (o->tiled && !norm) return put_tiled(w, numel, s, o->init_std, dtype, err);
    float *x = ls_xmalloc(numel * sizeof *x);
    fill_normal(x, numel, &s, norm ? 1.0f : 0.0f, o->init_std);
    ls_status rc;
    if (dtype == ST_F32) {
        rc = st_writer_put(w, x, numel * 4, err);
    } else {
        uint16_t *h = ls_xmalloc(numel * sizeof *h);
        for (size_t i = 0; i < numel; i++) h[i] = dtype == ST_F16 ? st_f32_to_f16(x[i]) : st_f32_to_bf16(x[i]);
        rc = st_writer_put(w, h, numel * 2, err);
        free(h);
    }
    free(x);
    return rc;
}

static void shard_name(char *buf, size_t n, int k, int n_shards)
{
    if (n_shards == 1) snprintf(buf, n, "model.safetensors");
    else snprintf(buf, n, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
}

/* Shard k holds tensors [k*T/n, (k+1)*T/n): every shard is non-empty when n <= T. */
static ls_status write_shard(const char *dir, const model_gen_opts *o, st_dtype dtype, int k, ls_error *err)
{
    int total = model_tensor_count(&o->cfg), first = k * total / o->n_shards, end = (k + 1) * total / o->n_shards;
    model_tensor *ts = ls_xcalloc((size_t)(end - first), sizeof *ts);
    st_spec *specs = ls_xcalloc((size_t)(end - first), sizeof *specs);
    for (int i = first; i < end; i++) {
        ts[i - first] = model_tensor_at(&o->cfg, i);
        specs[i - first] = spec_of(&ts[i - first], dtype);
    }
    char name[64], path[4096];
    shard_name(name, sizeof name, k, o->n_shards);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    st_writer *w = NULL;
    ls_status rc = st_writer_open(&w, path, specs, (size_t)(end - first), err);
    for (int i = 0; !rc && i < end - first; i++) rc = put_tensor(w, &ts[i], o, dtype, err);
    if (w) rc = rc ? (st_writer_close(w, NULL), rc) : st_writer_close(w, err);
    free(ts);
    free(specs);
    return rc;
}

typedef struct index_entry { model_tensor t; int shard; } index_entry;

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const index_entry *)a)->t.name, ((const index_entry *)b)->t.name);
}

/* model.safetensors.index.json: {"metadata": {"total_size": bytes}, "weight_map": {name: file}},
 * names sorted as transformers writes them. */
static ls_status write_index(const char *dir, const model_gen_opts *o, st_dtype dtype, ls_error *err)
{
    int total = model_tensor_count(&o->cfg);
    index_entry *e = ls_xcalloc((size_t)total, sizeof *e);
    uint64_t bytes = 0;
    for (int k = 0; k < o->n_shards; k++)
        for (int i = k * total / o->n_shards; i < (k + 1) * total / o->n_shards; i++) {
            e[i] = (index_entry){ model_tensor_at(&o->cfg, i), k };
            bytes += tensor_bytes(&e[i].t, dtype);
        }
    qsort(e, (size_t)total, sizeof *e, entry_cmp);
    char path[4096], file[64];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "w");
    ls_status rc = LS_OK;
    if (!f) rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: %s", path, strerror(errno));
    if (f) {
        fprintf(f, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {\n",
                (unsigned long long)bytes);
        for (int i = 0; i < total; i++) {
            shard_name(file, sizeof file, e[i].shard, o->n_shards);
            fprintf(f, "    \"%s\": \"%s\"%s\n", e[i].t.name, file, i + 1 < total ? "," : "");
        }
        fprintf(f, "  }\n}\n");
        int bad = ferror(f);
        if (fclose(f) || bad) rc = ls_fail(err, LS_INTERNAL, "%s: write failed", path);
    }
    free(e);
    return rc;
}

static ls_status check_opts(const model_gen_opts *o, st_dtype *dtype, ls_error *err)
{
    ls_status rc = parse_dtype(o->dtype, dtype, err);
    if (rc) return rc;
    if ((rc = model_config_validate(&o->cfg, err))) return ls_error_wrap(err, "model_gen");
    if (o->n_shards < 1 || o->n_shards > model_tensor_count(&o->cfg))
        return ls_fail(err, LS_INVALID_ARGUMENT, "model_gen: n_shards %d not in [1, %d]", o->n_shards,
                       model_tensor_count(&o->cfg));
    if (!(o->init_std >= 0) || !isfinite(o->init_std))
        return ls_fail(err, LS_INVALID_ARGUMENT, "model_gen: init_std must be finite and >= 0");
    return LS_OK;
}

ls_status model_gen_write(const char *dir, const model_gen_opts *o, ls_error *err)
{
    st_dtype dtype = ST_F32;
    ls_status rc = check_opts(o, &dtype, err);
    if (rc) return rc;
    if (mkdir(dir, 0755) && errno != EEXIST) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: %s", dir, strerror(errno));
    if ((rc = write_config(dir, o, err)) || (rc = write_generation_config(dir, &o->cfg, err))) return rc;
    for (int k = 0; k < o->n_shards; k++)
        if ((rc = write_shard(dir, o, dtype, k, err))) return rc;
    return o->n_shards > 1 ? write_index(dir, o, dtype, err) : LS_OK;
}
