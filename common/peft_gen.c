/* Writes PEFT adapter directories (peft_gen.h). The config text is what json.dumps(indent=2,
 * sort_keys=True) of a PEFT 0.21 LoraConfig gives, unused fields included, so the loader is tested on
 * what it will meet. Each tensor draws from its own stream seeded by (seed, name): values do not depend
 * on the dtype or on which other modules are adapted. */
#include "common/peft_gen.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/peft.h"
#include "common/safetensors.h"

#define GEN_PEFT_VERSION "0.21.0"

peft_gen_opts peft_gen_default_opts(void)
{
    return (peft_gen_opts){ .r = 8, .lora_alpha = 16, .target_mask = PEFT_GEN_ALL_MODULES, .dtype = "float32",
                            .seed = 1, .init_std = 0.05f };
}

/* splitmix64 (Steele et al.): full period, no warm-up, one 64-bit word of state. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull;    // FNV-1a of the name, mixed with the seed
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    uint64_t s = seed ^ h;
    return splitmix64(&s);
}

/* Uniform on [-a, a] with a = std * sqrt(3): the requested standard deviation, cheaper than normal. */
static void fill_uniform(float *x, size_t n, uint64_t s, float std)
{
    double a = (double)std * sqrt(3.0);
    for (size_t i = 0; i < n; i++) x[i] = (float)(a * (2.0 * ((double)(splitmix64(&s) >> 11) * 0x1p-53) - 1.0));
}

static void put_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* Python's repr: integers written by the user stay integers ("16"), others the shortest round trip. */
static void put_number(FILE *f, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) { fprintf(f, "%lld", (long long)v); return; }
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

static int pattern_cmp(const void *a, const void *b)
{
    return strcmp(((const peft_gen_pattern *)a)->key, ((const peft_gen_pattern *)b)->key);
}

/* A dict as sort_keys writes it: keys sorted, "{}" when empty. */
static void put_patterns(FILE *f, const peft_gen_pattern *p, int n)
{
    if (n <= 0) { fputs("{}", f); return; }
    peft_gen_pattern *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) { fputs("{}", f); return; }    // the write check below then fails on the read-back
    memcpy(sorted, p, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, pattern_cmp);
    fputs("{\n", f);
    for (int i = 0; i < n; i++) {
        fputs("    ", f);
        put_json_string(f, sorted[i].key);
        fputs(": ", f);
        put_number(f, sorted[i].value);
        fputs(i + 1 < n ? ",\n" : "\n", f);
    }
    fputs("  }", f);
    free(sorted);
}

static void put_targets(FILE *f, const peft_gen_opts *o)
{
    if (o->target_string) { put_json_string(f, o->target_string); return; }
    int first = 1;
    fputc('[', f);
    for (int m = 0; m < LORA_N_MODULES; m++)
        if (o->target_mask >> m & 1u) {
            fprintf(f, "%s\n    \"%s\"", first ? "" : ",", lora_module_name((lora_module)m));
            first = 0;
        }
    fputs(first ? "]" : "\n  ]", f);
}

static void put_layers(FILE *f, const peft_gen_opts *o)
{
    if (!o->layers_to_transform) { fputs("null", f); return; }
    fputc('[', f);
    for (int i = 0; i < o->n_layers_to_transform; i++)
        fprintf(f, "%s\n    %d", i ? "," : "", o->layers_to_transform[i]);
    fputs(o->n_layers_to_transform ? "\n  ]" : "]", f);
}

/* The keys in sorted order, as PEFT 0.21 saves a LoraConfig. */
static void put_config(FILE *f, const peft_gen_opts *o)
{
    fputs("{\n  \"alora_invocation_tokens\": null,\n  \"alpha_pattern\": ", f);
    put_patterns(f, o->alpha_pattern, o->n_alpha_pattern);
    fputs(",\n  \"arrow_config\": null,\n  \"auto_mapping\": null,\n  \"base_model_name_or_path\": ", f);
    if (o->base_model) put_json_string(f, o->base_model);
    else fputs("null", f);
    fputs(",\n  \"bias\": \"none\",\n  \"corda_config\": null,\n  \"ensure_weight_tying\": false,\n"
          "  \"eva_config\": null,\n  \"exclude_modules\": null,\n  \"fan_in_fan_out\": false,\n"
          "  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n  \"layer_replication\": null,\n"
          "  \"layers_pattern\": null,\n  \"layers_to_transform\": ", f);
    put_layers(f, o);
    fputs(",\n  \"loftq_config\": {},\n  \"lora_alpha\": ", f);
    put_number(f, o->lora_alpha);
    fputs(",\n  \"lora_bias\": false,\n  \"lora_dropout\": 0.0,\n  \"megatron_config\": null,\n"
          "  \"megatron_core\": \"megatron.core\",\n  \"modules_to_save\": null,\n  \"peft_type\": \"LORA\",\n"
          "  \"peft_version\": \"" GEN_PEFT_VERSION "\",\n  \"qalora_group_size\": 16,\n", f);
    fprintf(f, "  \"r\": %d,\n  \"rank_pattern\": ", o->r);
    put_patterns(f, o->rank_pattern, o->n_rank_pattern);
    fputs(",\n  \"revision\": null,\n  \"target_modules\": ", f);
    put_targets(f, o);
    fprintf(f, ",\n  \"target_parameters\": null,\n  \"task_type\": \"CAUSAL_LM\",\n"
            "  \"trainable_token_indices\": null,\n  \"use_dora\": false,\n  \"use_qalora\": false,\n"
            "  \"use_rslora\": %s\n}", o->use_rslora ? "true" : "false");
}

/* mkdir -p: the scale test nests adapters as tenant/name. */
static ls_status make_dirs(const char *dir, ls_error *err)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n >= sizeof buf) return ls_fail(err, LS_INVALID_ARGUMENT, "peft_gen: path too long");
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    return LS_OK;
}

ls_status peft_gen_write_config(const char *dir, const peft_gen_opts *o, ls_error *err)
{
    char path[4200];
    ls_status rc = make_dirs(dir, err);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: %s", path, strerror(errno));
    put_config(f, o);
    int bad = ferror(f);
    if (fclose(f) || bad) return ls_fail(err, LS_INTERNAL, "%s: write failed", path);
    return LS_OK;
}

typedef struct gen_tensor {
    char name[160];
    int64_t shape[2];
} gen_tensor;

static int gen_tensor_cmp(const void *a, const void *b)
{
    return strcmp(((const gen_tensor *)a)->name, ((const gen_tensor *)b)->name);
}

/* lora_A [r, in] and lora_B [out, r] of every adapted module, sorted by name as safetensors saves. */
static gen_tensor *list_tensors(const peft_adapter *a, const model_config *base, size_t *n)
{
    gen_tensor *t = calloc((size_t)base->n_layers * LORA_N_MODULES * 2, sizeof *t);
    *n = 0;
    for (int l = 0; t && l < base->n_layers; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            int r = a->shape.rank[l * LORA_N_MODULES + m], in, out;
            if (!r) continue;
            lora_module_full_dims(base, (lora_module)m, &in, &out);
            for (int is_b = 0; is_b < 2; is_b++, (*n)++) {
                peft_tensor_name(t[*n].name, sizeof t[*n].name, l, (lora_module)m, is_b);
                t[*n].shape[0] = is_b ? out : r;
                t[*n].shape[1] = is_b ? r : in;
            }
        }
    if (t) qsort(t, *n, sizeof *t, gen_tensor_cmp);
    return t;
}

static ls_status put_tensor(st_writer *w, const gen_tensor *t, const peft_gen_opts *o, st_dtype dtype,
                            ls_error *err)
{
    size_t numel = (size_t)(t->shape[0] * t->shape[1]);
    float *x = malloc(numel * sizeof *x);
    uint16_t *h = dtype == ST_F32 ? NULL : malloc(numel * sizeof *h);
    if (!x || (dtype != ST_F32 && !h)) {
        free(x);
        free(h);
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "peft_gen: out of memory");
    }
    fill_uniform(x, numel, tensor_seed(o->seed, t->name), o->init_std);
    for (size_t i = 0; h && i < numel; i++) h[i] = dtype == ST_F16 ? st_f32_to_f16(x[i]) : st_f32_to_bf16(x[i]);
    ls_status rc = h ? st_writer_put(w, h, numel * 2, err) : st_writer_put(w, x, numel * 4, err);
    free(x);
    free(h);
    return rc;
}

static ls_status write_weights(const char *dir, const peft_adapter *a, const model_config *base,
                               const peft_gen_opts *o, st_dtype dtype, ls_error *err)
{
    size_t n = 0;
    gen_tensor *t = list_tensors(a, base, &n);
    st_spec *specs = calloc(n + 1, sizeof *specs);
    ls_status rc = LS_OK;
    if (!t || !specs) rc = ls_fail(err, LS_RESOURCE_EXHAUSTED, "peft_gen: out of memory");
    for (size_t i = 0; !rc && i < n; i++)
        specs[i] = (st_spec){ .name = t[i].name, .dtype = dtype, .n_dims = 2, .shape = { t[i].shape[0], t[i].shape[1] } };
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_writer *w = NULL;
    if (!rc) rc = st_writer_open(&w, path, specs, n, err);
    for (size_t i = 0; !rc && i < n; i++) rc = put_tensor(w, &t[i], o, dtype, err);
    if (w) rc = rc ? (st_writer_close(w, NULL), rc) : st_writer_close(w, err);
    free(t);
    free(specs);
    return rc;
}

static ls_status check_opts(const peft_gen_opts *o, st_dtype *dtype, ls_error *err)
{
    if (!o->dtype || !strcmp(o->dtype, "float32")) *dtype = ST_F32;
    else if (!strcmp(o->dtype, "float16")) *dtype = ST_F16;
    else if (!strcmp(o->dtype, "bfloat16")) *dtype = ST_BF16;
    else return ls_fail(err, LS_INVALID_ARGUMENT, "peft_gen: dtype \"%s\" (float32, float16, bfloat16)", o->dtype);
    if (!o->target_string && !(o->target_mask & PEFT_GEN_ALL_MODULES))
        return ls_fail(err, LS_INVALID_ARGUMENT, "peft_gen: no target module");
    if (!isfinite(o->init_std) || o->init_std < 0)
        return ls_fail(err, LS_INVALID_ARGUMENT, "peft_gen: init_std must be finite and >= 0");
    return LS_OK;
}

ls_status peft_gen_write(const char *dir, const model_config *base, const peft_gen_opts *o, ls_error *err)
{
    st_dtype dtype = ST_F32;
    peft_adapter a;
    ls_status rc = check_opts(o, &dtype, err);
    if (rc || (rc = peft_gen_write_config(dir, o, err))) return rc;
    // Read back with the loader's own rules: the tensors then match whatever it will expect.
    peft_opts any_base = { .allow_base_mismatch = 1 };
    if ((rc = peft_parse_config(&a, dir, base, &any_base, err))) return ls_error_wrap(err, "peft_gen");
    rc = write_weights(dir, &a, base, o, dtype, err);
    peft_adapter_free(&a);
    return rc;
}
