/* PEFT adapter_config.json -> per-(layer, module) ranks and scales (peft.h), with PEFT 0.21's
 * selection rules reproduced rather than approximated, because a module adapted with the wrong rank or
 * scale serves silently wrong text: target_modules as a list (exact path or ".name" suffix), as a
 * regex (full match) or "all-linear"; exclude_modules likewise; layers_to_transform (skipped for
 * exact-path entries, as PEFT does); rank_pattern / alpha_pattern keys matched as `(.*\.)?(key)$`,
 * first key in file order wins. Python regexes run on PCRE2 with Python's meaning (py_regex.h); what
 * PCRE2 cannot do the Python way is refused, never approximated, and a match that fails (PCRE2's
 * backtracking limit) fails the load. Variants with other math are refused by name.
 * The tensors and the shard reader live in peft_weights.c. */
#include "common/peft.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/json.h"
#include "common/py_regex.h"

#define PEFT_CONFIG_MAX_BYTES (1u << 20)   // real configs are ~1-2 KB; a cap keeps a hostile one cheap
#define PEFT_MAX_LIST 1024                 // target_modules / exclude_modules / layers entries
#define PEFT_MAX_PATTERNS 256              // rank_pattern / alpha_pattern keys (matched per module)

void peft_module_path(char *buf, size_t n, int layer, lora_module m)
{
    snprintf(buf, n, "model.layers.%d.%s.%s", layer, lora_module_is_mlp(m) ? "mlp" : "self_attn",
             lora_module_name(m));
}

void peft_tensor_name(char *buf, size_t n, int layer, lora_module m, int is_b)
{
    char path[96];
    peft_module_path(path, sizeof path, layer, m);
    snprintf(buf, n, "base_model.model.%s.lora_%c.weight", path, is_b ? 'B' : 'A');
}

/* ---- which modules: target_modules / exclude_modules ---- */

typedef enum sel_kind { SEL_NONE, SEL_MASK, SEL_REGEX, SEL_LIST } sel_kind;

typedef struct selector {
    sel_kind kind;
    int is_string;              // given as a JSON string (a regex or "all-linear")
    unsigned mask;              // SEL_MASK: bit m = module lora_module m, matched by its last path component
    py_regex re;                // SEL_REGEX
    int match_failed;           // a regex match errored (taken as no match; the load then fails)
    const json *list;           // SEL_LIST: array of strings
    unsigned char *hit;         // SEL_LIST: entry i selected at least one module; owned
} selector;

static void selector_free(selector *s)
{
    if (s->kind == SEL_REGEX) py_regex_free(&s->re);
    free(s->hit);
    memset(s, 0, sizeof *s);
}

/* PEFT's list rule: the entry is the whole path, or its last dotted components. *exact reports the
 * first case, for which PEFT does not apply layers_to_transform. */
static int list_entry_matches(const json *e, const char *path, int *exact)
{
    size_t n = strlen(path);
    if (e->len == n && !memcmp(e->str, path, n)) { *exact = 1; return 1; }
    return e->len < n && path[n - e->len - 1] == '.' && !memcmp(path + n - e->len, e->str, e->len);
}

static int mask_match(unsigned mask, const char *path)
{
    const char *last = strrchr(path, '.');
    last = last ? last + 1 : path;
    for (int m = 0; m < LORA_N_MODULES; m++)
        if ((mask >> m & 1u) && !strcmp(last, lora_module_name((lora_module)m))) return 1;
    return 0;
}

static int selector_match(selector *s, const char *path, int *exact)
{
    int any = 0, ex = 0;
    *exact = 0;
    switch (s->kind) {
    case SEL_NONE: return 0;
    case SEL_MASK: return mask_match(s->mask, path);
    case SEL_REGEX:
        any = py_regex_match(&s->re, path);
        if (any < 0) s->match_failed = 1;
        return any > 0;
    case SEL_LIST:
        for (size_t i = 0; i < s->list->len; i++)
            if (list_entry_matches(&s->list->items[i], path, &ex)) {
                s->hit[i] = 1;
                any = 1;
                *exact |= ex;
            }
        return any;
    }
    return 0;
}

static ls_status selector_read(selector *s, const json *v, const char *field, ls_error *err)
{
    memset(s, 0, sizeof *s);
    if (!v || v->type == JSON_NULL) return LS_OK;
    if (v->type == JSON_STRING) {
        if (strlen(v->str) != v->len)
            return ls_fail(err, LS_INVALID_ARGUMENT, "%s: NUL byte in the regex", field);
        s->is_string = 1;
        // PEFT expands "all-linear" (any case) to every Linear but the output layer: our seven modules.
        if (!strcasecmp(v->str, "all-linear")) {
            s->kind = SEL_MASK;
            s->mask = (1u << LORA_N_MODULES) - 1;
            return LS_OK;
        }
        ls_status rc = py_regex_compile(&s->re, v->str, "", "", field, err);
        if (rc == LS_OK) s->kind = SEL_REGEX;
        return rc;
    }
    if (v->type != JSON_ARRAY || v->len > PEFT_MAX_LIST)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: expected a list of at most %d module names or a string",
                       field, PEFT_MAX_LIST);
    for (size_t i = 0; i < v->len; i++)
        if (v->items[i].type != JSON_STRING || !v->items[i].len)
            return ls_fail(err, LS_INVALID_ARGUMENT, "%s[%zu]: expected a module name", field, i);
    s->kind = SEL_LIST;
    s->list = v;
    s->hit = calloc(v->len + 1, 1);
    return s->hit ? LS_OK : ls_fail(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", field);
}

/* Linear modules of a Llama/Mistral model that PEFT could adapt but we do not serve. */
static const char *const unsupported_paths[] = { "lm_head", "model.embed_tokens" };

/* After the walk: every list entry must have selected a module we serve (an entry naming lm_head,
 * embed_tokens or anything else would otherwise be dropped silently), and a regex must not reach the
 * modules we cannot serve. */
static ls_status targets_check(selector *t, ls_error *err)
{
    int exact;
    if (t->kind == SEL_LIST)
        for (size_t i = 0; i < t->list->len; i++)
            if (!t->hit[i])
                return ls_fail(err, LS_FAILED_PRECONDITION,
                               "target_modules: \"%.100s\" names no module we adapt (q_proj, k_proj, v_proj, "
                               "o_proj, gate_proj, up_proj, down_proj of model.layers.N)", t->list->items[i].str);
    if (t->kind == SEL_REGEX)
        for (size_t i = 0; i < sizeof unsupported_paths / sizeof unsupported_paths[0]; i++)
            if (selector_match(t, unsupported_paths[i], &exact))
                return ls_fail(err, LS_FAILED_PRECONDITION, "target_modules: the regex selects %s, which is "
                               "not supported", unsupported_paths[i]);
    return LS_OK;
}

/* ---- per-module rank and alpha: rank_pattern / alpha_pattern ---- */

typedef struct pattern { py_regex re; double value; } pattern;
typedef struct pattern_set { pattern *p; size_t n; int match_failed; } pattern_set;

static void patterns_free(pattern_set *s)
{
    for (size_t i = 0; i < s->n; i++) py_regex_free(&s->p[i].re);
    free(s->p);
    memset(s, 0, sizeof *s);
}

static ls_status pattern_value(const json *v, int is_rank, const char *field, const char *key, double *out,
                               ls_error *err)
{
    if (v->type != JSON_NUMBER || !isfinite(v->number) || !(v->number > 0))
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s[\"%.100s\"]: expected a positive number", field, key);
    if (is_rank && (!v->is_integer || v->integer > PEFT_MAX_RANK))
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s[\"%.100s\"]: rank must be an integer in [1, %d]", field, key,
                       PEFT_MAX_RANK);
    *out = v->number;
    return LS_OK;
}

static ls_status patterns_read(pattern_set *s, const json *v, int is_rank, ls_error *err)
{
    const char *field = is_rank ? "rank_pattern" : "alpha_pattern";
    memset(s, 0, sizeof *s);
    if (!v || v->type == JSON_NULL) return LS_OK;
    if (v->type != JSON_OBJECT || v->len > PEFT_MAX_PATTERNS)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: expected an object of at most %d entries", field,
                       PEFT_MAX_PATTERNS);
    if (!v->len) return LS_OK;
    if (!(s->p = calloc(v->len, sizeof *s->p))) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", field);
    for (size_t i = 0; i < v->len; i++) {
        const char *key = v->keys[i];
        ls_status rc = pattern_value(&v->items[i], is_rank, field, key, &s->p[i].value, err);
        if (!rc && strlen(key) != v->key_lens[i])
            rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: NUL byte in a key", field);
        // PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", path).
        if (!rc) rc = py_regex_compile(&s->p[i].re, key, "(.*\\.)?", "", field, err);
        if (rc) return rc;
        s->n = i + 1;
    }
    return LS_OK;
}

/* PEFT's get_pattern_key: the first key (in file order) matching the path decides; dflt otherwise. */
static double pattern_lookup(pattern_set *s, const char *path, double dflt)
{
    for (size_t i = 0; i < s->n; i++) {
        int m = py_regex_match(&s->p[i].re, path);
        if (m > 0) return s->p[i].value;
        if (m < 0) s->match_failed = 1;
    }
    return dflt;
}

/* ---- the whole config ---- */

typedef struct lora_config {
    int r;
    double alpha;
    int rslora;
    selector target, exclude;
    unsigned char *layer_on;    // (n_layers) layers_to_transform; NULL = every layer; owned
    pattern_set ranks, alphas;
} lora_config;

static void config_free(lora_config *c)
{
    selector_free(&c->target);
    selector_free(&c->exclude);
    patterns_free(&c->ranks);
    patterns_free(&c->alphas);
    free(c->layer_on);
}

static int is_unset(const json *v)
{
    if (!v || v->type == JSON_NULL) return 1;
    if (v->type == JSON_BOOL) return !v->boolean;
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT || v->type == JSON_STRING) return v->len == 0;
    return 0;
}

/* Fields whose non-default value means other math (or extra weights) than plain LoRA. */
static ls_status check_variants(const json *root, ls_error *err)
{
    static const struct { const char *key, *why; } refused[] = {
        { "use_dora", "DoRA adapters are not supported" },
        { "modules_to_save", "full copies of base modules are not supported" },
        { "fan_in_fan_out", "fan_in_fan_out=true is for Conv1D bases, not Llama/Mistral" },
        { "lora_bias", "LoRA bias terms are not supported" },
        { "use_qalora", "QA-LoRA is not supported" },
        { "target_parameters", "LoRA on raw parameters is not supported" },
        { "layer_replication", "layer replication is not supported" },
        { "trainable_token_indices", "trainable token embeddings are not supported" },
        { "alora_invocation_tokens", "activated LoRA (aLoRA) is not supported" },
        { "megatron_config", "Megatron-parallel LoRA layers are not supported" },
        { "arrow_config", "Arrow routing is not supported" },
        { "use_bdlora", "block-diagonal LoRA is not supported" },
    };
    int ok = 1;
    const char *type = json_get_str(root, "peft_type", &ok, err);
    if (!ok) return LS_INVALID_ARGUMENT;
    if (!type || strcmp(type, "LORA"))
        return ls_fail(err, LS_FAILED_PRECONDITION, "peft_type: \"%.60s\" is not supported (only LORA)",
                       type ? type : "(missing)");
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (!is_unset(json_get(root, refused[i].key)))
            return ls_fail(err, LS_FAILED_PRECONDITION, "%s: %s", refused[i].key, refused[i].why);
    const char *bias = json_get_str(root, "bias", &ok, err);
    if (!ok) return LS_INVALID_ARGUMENT;
    if (bias && strcmp(bias, "none"))
        return ls_fail(err, LS_FAILED_PRECONDITION, "bias: \"%.60s\" is not supported (only \"none\")", bias);
    return LS_OK;
}

static ls_status read_scalars(lora_config *c, const json *root, ls_error *err)
{
    int64_t r;
    // PEFT's defaults (r = 8, lora_alpha = 8) apply to absent keys, as LoraConfig would fill them.
    if (!json_get_int(root, "r", 8, &r, err) || !json_get_double(root, "lora_alpha", 8.0, &c->alpha, err) ||
        !json_get_bool(root, "use_rslora", 0, &c->rslora, err))
        return LS_INVALID_ARGUMENT;
    if (r < 1 || r > PEFT_MAX_RANK)
        return ls_fail(err, LS_INVALID_ARGUMENT, "r: %lld not in [1, %d]", (long long)r, PEFT_MAX_RANK);
    if (!isfinite(c->alpha) || !(c->alpha > 0))
        return ls_fail(err, LS_INVALID_ARGUMENT, "lora_alpha: must be finite and > 0");
    c->r = (int)r;
    return LS_OK;
}

static ls_status layer_mark(lora_config *c, const json *v, int n_layers, ls_error *err)
{
    if (v->type != JSON_NUMBER || !v->is_integer || v->integer < 0)
        return ls_fail(err, LS_INVALID_ARGUMENT, "layers_to_transform: expected layer indices");
    if (v->integer >= n_layers)
        return ls_fail(err, LS_FAILED_PRECONDITION, "layers_to_transform: layer %lld >= num_hidden_layers %d",
                       (long long)v->integer, n_layers);
    c->layer_on[v->integer] = 1;
    return LS_OK;
}

static ls_status read_layers(lora_config *c, const json *root, int n_layers, ls_error *err)
{
    const json *v = json_get(root, "layers_to_transform"), *pat = json_get(root, "layers_pattern");
    // Our modules live under "layers"; another pattern would select nothing in PEFT either.
    int pat_ok = is_unset(pat) || (pat->type == JSON_STRING && !strcmp(pat->str, "layers")) ||
                 (pat->type == JSON_ARRAY && pat->len == 1 && pat->items[0].type == JSON_STRING &&
                  !strcmp(pat->items[0].str, "layers"));
    if (!pat_ok) return ls_fail(err, LS_FAILED_PRECONDITION, "layers_pattern: only \"layers\" fits this model");
    if (is_unset(v)) return LS_OK;     // null or [] : every layer, as in PEFT
    if (c->target.is_string)
        return ls_fail(err, LS_INVALID_ARGUMENT, "layers_to_transform: cannot be used when target_modules is a "
                       "string (PEFT refuses it too)");
    if (v->type == JSON_ARRAY && v->len > PEFT_MAX_LIST)
        return ls_fail(err, LS_INVALID_ARGUMENT, "layers_to_transform: too many entries");
    if (!(c->layer_on = calloc((size_t)n_layers, 1)))
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "layers_to_transform: out of memory");
    if (v->type != JSON_ARRAY) return layer_mark(c, v, n_layers, err);
    for (size_t i = 0; i < v->len; i++) {
        ls_status rc = layer_mark(c, &v->items[i], n_layers, err);
        if (rc) return rc;
    }
    return LS_OK;
}

static ls_status read_targets(lora_config *c, const json *root, ls_error *err)
{
    const json *t = json_get(root, "target_modules");
    if (!t || t->type == JSON_NULL) {
        // PEFT fills a missing target_modules from its per-architecture table: llama/mistral -> q, v.
        c->target.kind = SEL_MASK;
        c->target.mask = 1u << LORA_Q | 1u << LORA_V;
    } else {
        ls_status rc = selector_read(&c->target, t, "target_modules", err);
        if (rc) return rc;
    }
    return selector_read(&c->exclude, json_get(root, "exclude_modules"), "exclude_modules", err);
}

static ls_status read_lora_config(lora_config *c, const json *root, const model_config *base, ls_error *err)
{
    ls_status rc;
    if ((rc = check_variants(root, err)) || (rc = read_scalars(c, root, err)) || (rc = read_targets(c, root, err)) ||
        (rc = read_layers(c, root, base->n_layers, err)) ||
        (rc = patterns_read(&c->ranks, json_get(root, "rank_pattern"), 1, err)) ||
        (rc = patterns_read(&c->alphas, json_get(root, "alpha_pattern"), 0, err)))
        return rc;
    return LS_OK;
}

/* PEFT's check_target_module_exists + _create_and_replace for one module path: 0 = not adapted. */
static int module_rank(lora_config *c, const char *path, int layer, double *alpha)
{
    int exact = 0;
    if (!selector_match(&c->target, path, &exact)) return 0;
    int ex_exact;
    if (selector_match(&c->exclude, path, &ex_exact)) return 0;
    if (c->layer_on && !exact && !c->layer_on[layer]) return 0;
    *alpha = pattern_lookup(&c->alphas, path, c->alpha);
    return (int)pattern_lookup(&c->ranks, path, (double)c->r);
}

static ls_status build_shape(peft_adapter *a, lora_config *c, const model_config *base, ls_error *err)
{
    lora_shape *s = &a->shape;
    size_t n = (size_t)base->n_layers * LORA_N_MODULES;
    s->n_layers = base->n_layers;
    s->rank = calloc(n, sizeof *s->rank);
    s->scale = calloc(n, sizeof *s->scale);
    if (!s->rank || !s->scale) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "adapter shape: out of memory");
    for (int l = 0; l < base->n_layers; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            char path[96];
            double alpha = 0;
            peft_module_path(path, sizeof path, l, (lora_module)m);
            int r = module_rank(c, path, l, &alpha), in, out;
            if (!r) continue;
            s->rank[l * LORA_N_MODULES + m] = (int16_t)r;
            s->scale[l * LORA_N_MODULES + m] = (float)(c->rslora ? alpha / sqrt((double)r) : alpha / r);
            if (r > s->max_rank) s->max_rank = r;
            lora_module_full_dims(base, (lora_module)m, &in, &out);
            a->n_params += (size_t)r * (size_t)(in + out);
        }
    ls_status rc = targets_check(&c->target, err);
    // A match that errored was taken as "no match" above, so it decides before anything it may have caused.
    const char *failed = c->target.match_failed ? "target_modules" : c->exclude.match_failed ? "exclude_modules"
                         : c->ranks.match_failed ? "rank_pattern" : c->alphas.match_failed ? "alpha_pattern" : NULL;
    if (failed)
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: regex matching failed on a module path (PCRE2's limit of %d "
                     "backtracking steps, or memory)", failed, PY_REGEX_MATCH_LIMIT);
    if (!rc && !s->max_rank)
        rc = ls_fail(err, LS_FAILED_PRECONDITION, "target_modules: selects no module of the base model");
    return rc;
}

/* The last path component, trailing slashes ignored ("org/model/" -> "model"). */
static void base_name(const char *p, const char **start, size_t *len)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && p[b - 1] != '/') b--;
    *start = p + b;
    *len = n - b;
}

static ls_status read_base_model(peft_adapter *a, const json *root, const peft_opts *o, ls_error *err)
{
    int ok = 1;
    const char *name = json_get_str(root, "base_model_name_or_path", &ok, err);
    if (!ok) return LS_INVALID_ARGUMENT;
    if (!name || !*name) return LS_OK;  // nothing to compare with; the tensor shapes still must fit
    snprintf(a->base_model, sizeof a->base_model, "%s", name);
    if (!o || !o->served_model_name || !*o->served_model_name || o->allow_base_mismatch) return LS_OK;
    const char *x, *y;
    size_t nx, ny;
    base_name(name, &x, &nx);
    base_name(o->served_model_name, &y, &ny);
    if (nx == ny && !memcmp(x, y, nx)) return LS_OK;
    return ls_fail(err, LS_FAILED_PRECONDITION, "base_model_name_or_path: \"%.200s\" differs from the served "
                   "model \"%.200s\"", name, o->served_model_name);
}

/* A pickle-only adapter is refused before anything is parsed: loading it would mean running pickle. */
static ls_status check_weights_file(const char *dir, ls_error *err)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (!stat(path, &st)) return LS_OK;
    snprintf(path, sizeof path, "%s/adapter_model.bin", dir);
    if (!stat(path, &st))
        return ls_fail(err, LS_FAILED_PRECONDITION, "%s: pickle .bin adapters are not supported; convert to "
                       "safetensors", dir);
    return ls_fail(err, LS_NOT_FOUND, "%s/adapter_model.safetensors: %s", dir, strerror(ENOENT));
}

ls_status peft_read_config(peft_adapter *a, const char *dir, const model_config *base, const peft_opts *o,
                           ls_error *err)
{
    memset(a, 0, sizeof *a);
    ls_status rc = check_weights_file(dir, err);
    return rc ? rc : peft_parse_config(a, dir, base, o, err);
}

ls_status peft_parse_config(peft_adapter *a, const char *dir, const model_config *base, const peft_opts *o,
                            ls_error *err)
{
    memset(a, 0, sizeof *a);
    if (strlen(dir) + 32 >= sizeof a->dir)
        return ls_fail(err, LS_INVALID_ARGUMENT, "adapter directory path too long");
    snprintf(a->dir, sizeof a->dir, "%s", dir);
    ls_status rc;
    char path[4200];
    json_doc *doc = NULL;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if ((rc = json_parse_file(&doc, path, PEFT_CONFIG_MAX_BYTES, err))) return rc;
    const json *root = json_root(doc);
    lora_config c = { 0 };
    if (root->type != JSON_OBJECT) rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: expected a JSON object", path);
    if (!rc && !(rc = read_base_model(a, root, o, err)) && !(rc = read_lora_config(&c, root, base, err)))
        rc = build_shape(a, &c, base, err);
    config_free(&c);
    json_free(doc);
    if (rc) {
        ls_error_wrap(err, "%s", dir);
        peft_adapter_free(a);
    }
    return rc;
}

void peft_adapter_free(peft_adapter *a)
{
    if (!a) return;
    free(a->shape.rank);
    free(a->shape.scale);
    memset(a, 0, sizeof *a);
}

/* ---- adapter names ---- */

/* The name as it may appear in a message: bytes outside printable ASCII become '?'. */
static const char *printable(char *buf, size_t n, const char *name)
{
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++) buf[i] = name[i] >= 0x20 && name[i] < 0x7f ? name[i] : '?';
    buf[i] = 0;
    return buf;
}

/* Relative, '/'-separated components, none empty, "." or ".."; no backslash or control bytes. */
static int name_syntax_ok(const char *name)
{
    size_t n = strlen(name), comp = 0;
    if (!n || n > 1024 || name[0] == '/' || !json_utf8_valid(name, n)) return 0;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || c == 0) {
            const char *s = name + i - comp;
            if (!comp || comp > 255 || (comp == 1 && s[0] == '.') || (comp == 2 && s[0] == '.' && s[1] == '.'))
                return 0;
            comp = 0;
            continue;
        }
        if (c < 0x20 || c == 0x7f || c == '\\') return 0;
        comp++;
    }
    return 1;
}

/* root_real is inside-checked by prefix plus a separator, so "/a/bc" is not inside "/a/b". */
static int path_inside(const char *root_real, const char *p)
{
    size_t n = strlen(root_real);
    if (n == 1) return p[0] == '/' && p[1];     // root is "/"
    return !strncmp(p, root_real, n) && p[n] == '/';
}

ls_status peft_resolve_name(const char *root, const char *name, char *out, size_t out_len, ls_error *err)
{
    char shown[128];
    if (!name_syntax_ok(name))
        return ls_fail(err, LS_INVALID_ARGUMENT, "adapter name \"%s\": must be a relative path without \"..\", "
                       "\".\", empty components, backslashes or control bytes", printable(shown, sizeof shown, name));
    printable(shown, sizeof shown, name);
    char *root_real = realpath(root, NULL), *joined = NULL, *real = NULL;
    ls_status rc = LS_OK;
    struct stat st;
    if (!root_real) return ls_fail(err, LS_FAILED_PRECONDITION, "adapter root %s: %s", root, strerror(errno));
    if (asprintf(&joined, "%s/%s", root_real, name) < 0) joined = NULL;
    if (!joined) rc = ls_fail(err, LS_RESOURCE_EXHAUSTED, "adapter name \"%s\": out of memory", shown);
    else if (!(real = realpath(joined, NULL)))
        rc = ls_fail(err, errno == ENOENT || errno == ENOTDIR ? LS_NOT_FOUND : LS_INVALID_ARGUMENT,
                     "adapter \"%s\": %s", shown, strerror(errno));
    else if (!path_inside(root_real, real))
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "adapter name \"%s\" resolves outside the adapter root", shown);
    else if (stat(real, &st) || !S_ISDIR(st.st_mode))
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "adapter name \"%s\" is not a directory", shown);
    else if (strlen(real) >= out_len)
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "adapter name \"%s\": path too long", shown);
    else
        memcpy(out, real, strlen(real) + 1);
    free(root_real);
    free(joined);
    free(real);
    return rc;
}
