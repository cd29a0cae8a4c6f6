/* config.json -> model_config, with transformers' defaults and without its leniency: anything that
 * would change the math and that we do not implement (biases, other activations, other rope types,
 * quantized checkpoints) is refused by name instead of being served wrong. Both key layouts of rope
 * are read: transformers 4 ("rope_theta" + "rope_scaling") and 5 ("rope_parameters" with rope_theta
 * inside), as are "torch_dtype" (4) and "dtype" (5). */
#include "common/model_config.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/json.h"

#define CONFIG_MAX_BYTES (1u << 20)

static int is_set(const json *o, const char *key)
{
    const json *v = json_get(o, key);
    return v && v->type != JSON_NULL;
}

static int get_int(const json *o, const char *key, int64_t dflt, int *out, ls_error *err)
{
    int64_t v;
    if (!json_get_int(o, key, dflt, &v, err)) return 0;
    if (v < INT_MIN || v > INT_MAX) {
        ls_fail(err, LS_INVALID_ARGUMENT, "%s: %lld is out of range", key, (long long)v);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int require_int(const json *o, const char *key, int *out, ls_error *err)
{
    if (!is_set(o, key)) { ls_fail(err, LS_INVALID_ARGUMENT, "%s: missing", key); return 0; }
    return get_int(o, key, 0, out, err);
}

static int get_float(const json *o, const char *key, double dflt, float *out, ls_error *err)
{
    double v;
    if (!json_get_double(o, key, dflt, &v, err)) return 0;
    *out = (float)v;
    return 1;
}

static ls_status read_architecture(const json *root, model_config *cfg, ls_error *err)
{
    static const char *const supported[] = { "LlamaForCausalLM", "MistralForCausalLM" };
    const json *a = json_get(root, "architectures");
    const char *name = NULL;
    if (a && a->type == JSON_ARRAY && a->len == 1 && a->items[0].type == JSON_STRING) {
        name = a->items[0].str;
    } else if (a && a->type != JSON_NULL) {
        return ls_fail(err, LS_INVALID_ARGUMENT, "architectures: expected a list of one class name");
    } else {
        // Older configs name only the model type; transformers maps it to the causal-LM class.
        const char *type = json_get_str(root, "model_type", NULL, err);
        if (type && !strcmp(type, "llama")) name = supported[0];
        else if (type && !strcmp(type, "mistral")) name = supported[1];
        else return ls_fail(err, LS_INVALID_ARGUMENT, "architectures: missing");
    }
    for (size_t i = 0; i < sizeof supported / sizeof supported[0]; i++)
        if (!strcmp(name, supported[i])) {
            snprintf(cfg->architecture, sizeof cfg->architecture, "%s", name);
            return LS_OK;
        }
    return ls_fail(err, LS_INVALID_ARGUMENT, "architectures: unsupported \"%.100s\" (supported: %s, %s)", name,
                   supported[0], supported[1]);
}

static int is_mistral(const model_config *cfg) { return !strcmp(cfg->architecture, "MistralForCausalLM"); }

static ls_status read_sizes(const json *root, model_config *cfg, ls_error *err)
{
    if (!require_int(root, "vocab_size", &cfg->vocab_size, err) ||
        !require_int(root, "hidden_size", &cfg->hidden_size, err) ||
        !require_int(root, "intermediate_size", &cfg->intermediate_size, err) ||
        !require_int(root, "num_hidden_layers", &cfg->n_layers, err) ||
        !require_int(root, "num_attention_heads", &cfg->n_heads, err))
        return err->code;
    // transformers: an absent key takes the constructor default (Mistral: 8), a null one means MHA.
    int kv_default = is_mistral(cfg) && !json_get(root, "num_key_value_heads") ? 8 : cfg->n_heads;
    if (!get_int(root, "num_key_value_heads", kv_default, &cfg->n_kv_heads, err) ||
        !get_int(root, "max_position_embeddings", is_mistral(cfg) ? 4096 * 32 : 2048, &cfg->max_position, err))
        return err->code;
    if (is_set(root, "head_dim")) return get_int(root, "head_dim", 0, &cfg->head_dim, err) ? LS_OK : err->code;
    if (cfg->n_heads <= 0 || cfg->hidden_size % cfg->n_heads)
        return ls_fail(err, LS_INVALID_ARGUMENT, "hidden_size: %d is not divisible by num_attention_heads %d",
                       cfg->hidden_size, cfg->n_heads);
    cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    return LS_OK;
}

static ls_status read_llama3(const json *rs, model_config *cfg, ls_error *err)
{
    static const char *const keys[] = { "factor", "low_freq_factor", "high_freq_factor",
                                        "original_max_position_embeddings" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!is_set(rs, keys[i])) return ls_fail(err, LS_INVALID_ARGUMENT, "rope_scaling.%s: missing", keys[i]);
    cfg->rope_scaling = ROPE_SCALING_LLAMA3;
    if (!get_float(rs, "factor", 0, &cfg->rope_factor, err) ||
        !get_float(rs, "low_freq_factor", 0, &cfg->rope_low_freq_factor, err) ||
        !get_float(rs, "high_freq_factor", 0, &cfg->rope_high_freq_factor, err) ||
        !get_int(rs, "original_max_position_embeddings", 0, &cfg->rope_original_max_position, err))
        return ls_error_wrap(err, "rope_scaling");
    return LS_OK;
}

/* rope_scaling (transformers 4) or rope_parameters (5): null / "default" means plain RoPE. */
static ls_status read_rope(const json *root, model_config *cfg, ls_error *err)
{
    const json *rs = json_get(root, "rope_parameters");
    if (!rs || rs->type == JSON_NULL) rs = json_get(root, "rope_scaling");
    double theta = 10000.0;
    if (!json_get_double(root, "rope_theta", theta, &theta, err)) return err->code;
    if (!rs || rs->type == JSON_NULL) { cfg->rope_theta = (float)theta; return LS_OK; }
    if (rs->type != JSON_OBJECT) return ls_fail(err, LS_INVALID_ARGUMENT, "rope_scaling: expected an object");
    if (!json_get_double(rs, "rope_theta", theta, &theta, err)) return ls_error_wrap(err, "rope_parameters");
    cfg->rope_theta = (float)theta;
    int ok;
    const char *type = json_get_str(rs, "rope_type", &ok, err);
    if (ok && !type) type = json_get_str(rs, "type", &ok, err);
    if (!ok) return ls_error_wrap(err, "rope_scaling");
    if (!type) return ls_fail(err, LS_INVALID_ARGUMENT, "rope_scaling.rope_type: missing");
    if (!strcmp(type, "default")) return LS_OK;
    if (!strcmp(type, "llama3")) return read_llama3(rs, cfg, err);
    return ls_fail(err, LS_INVALID_ARGUMENT, "rope_scaling.rope_type: unsupported \"%.64s\" (supported: default, llama3)",
                   type);
}

static ls_status read_dtype(const json *root, model_config *cfg, ls_error *err)
{
    int ok;
    const char *key = is_set(root, "dtype") ? "dtype" : "torch_dtype";
    const char *dtype = json_get_str(root, key, &ok, err);
    if (!ok) return err->code;
    snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", dtype ? dtype : "float32");
    if (!strcmp(cfg->torch_dtype, "float32") || !strcmp(cfg->torch_dtype, "float16") ||
        !strcmp(cfg->torch_dtype, "bfloat16"))
        return LS_OK;
    return ls_fail(err, LS_INVALID_ARGUMENT, "%s: unsupported \"%.32s\" (float32, float16, bfloat16)", key, dtype);
}

/* Fields that change the math: refused unless they hold the value we implement. */
static ls_status read_math_flags(const json *root, model_config *cfg, ls_error *err)
{
    int ok, attn_bias, mlp_bias;
    const char *act = json_get_str(root, "hidden_act", &ok, err);
    if (!ok) return err->code;
    if (act && strcmp(act, "silu") && strcmp(act, "swish"))      // transformers maps both to SiLU
        return ls_fail(err, LS_INVALID_ARGUMENT, "hidden_act: unsupported \"%.32s\" (only silu)", act);
    if (!json_get_bool(root, "attention_bias", 0, &attn_bias, err) ||
        !json_get_bool(root, "mlp_bias", 0, &mlp_bias, err) ||
        !json_get_bool(root, "tie_word_embeddings", 0, &cfg->tie_word_embeddings, err))
        return err->code;
    if (attn_bias) return ls_fail(err, LS_INVALID_ARGUMENT, "attention_bias: true is not supported");
    if (mlp_bias) return ls_fail(err, LS_INVALID_ARGUMENT, "mlp_bias: true is not supported");
    if (is_set(root, "quantization_config"))
        return ls_fail(err, LS_INVALID_ARGUMENT, "quantization_config: quantized checkpoints are not supported");
    if (!get_float(root, "rms_norm_eps", 1e-6, &cfg->rms_eps, err)) return err->code;
    // Llama has no sliding window whatever the file says; Mistral's default is 4096, null means none.
    cfg->sliding_window = 0;
    if (is_mistral(cfg) && !get_int(root, "sliding_window", json_get(root, "sliding_window") ? 0 : 4096,
                                    &cfg->sliding_window, err))
        return err->code;
    return read_dtype(root, cfg, err);
}

/* eos_token_id: an int, a list of ints, or null/absent (cfg unchanged). */
static ls_status read_eos(const json *o, model_config *cfg, ls_error *err)
{
    const json *v = json_get(o, "eos_token_id");
    if (!v || v->type == JSON_NULL) return LS_OK;
    const json *items = v->type == JSON_ARRAY ? v->items : v;
    size_t n = v->type == JSON_ARRAY ? v->len : 1;
    if (n > MODEL_MAX_EOS)
        return ls_fail(err, LS_INVALID_ARGUMENT, "eos_token_id: %zu ids, at most %d", n, MODEL_MAX_EOS);
    for (size_t i = 0; i < n; i++) {
        if (items[i].type != JSON_NUMBER || !items[i].is_integer || items[i].integer < INT_MIN ||
            items[i].integer > INT_MAX)
            return ls_fail(err, LS_INVALID_ARGUMENT, "eos_token_id: expected an integer or a list of integers");
        cfg->eos_token_ids[i] = (int)items[i].integer;
    }
    cfg->n_eos = (int)n;
    return LS_OK;
}

static ls_status read_config(const json *root, model_config *cfg, ls_error *err)
{
    ls_status rc;
    if (root->type != JSON_OBJECT) return ls_fail(err, LS_INVALID_ARGUMENT, "not a JSON object");
    if ((rc = read_architecture(root, cfg, err)) || (rc = read_sizes(root, cfg, err)) ||
        (rc = read_rope(root, cfg, err)) || (rc = read_math_flags(root, cfg, err)))
        return rc;
    if (!get_int(root, "bos_token_id", -1, &cfg->bos_token_id, err)) return err->code;
    return read_eos(root, cfg, err);
}

static ls_status check_positive(const char *field, int v, int max, ls_error *err)
{
    if (v <= 0) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: must be positive (got %d)", field, v);
    if (v > max) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: %d is larger than the supported %d", field, v, max);
    return LS_OK;
}

static ls_status validate_sizes(const model_config *c, ls_error *err)
{
    // Caps keep every product the kernels form (e.g. heads x head_dim x hidden) far from overflow.
    const struct { const char *field; int v, max; } sizes[] = {
        { "vocab_size", c->vocab_size, 1 << 24 }, { "hidden_size", c->hidden_size, 1 << 17 },
        { "intermediate_size", c->intermediate_size, 1 << 19 }, { "num_hidden_layers", c->n_layers, 1024 },
        { "num_attention_heads", c->n_heads, 1024 }, { "num_key_value_heads", c->n_kv_heads, 1024 },
        { "head_dim", c->head_dim, 1024 }, { "max_position_embeddings", c->max_position, 1 << 24 },
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ls_status rc = check_positive(sizes[i].field, sizes[i].v, sizes[i].max, err);
        if (rc) return rc;
    }
    if (c->n_heads % c->n_kv_heads)
        return ls_fail(err, LS_INVALID_ARGUMENT, "num_key_value_heads: %d does not divide num_attention_heads %d",
                       c->n_kv_heads, c->n_heads);
    if (c->head_dim % 2)
        return ls_fail(err, LS_INVALID_ARGUMENT, "head_dim: must be even for rotary embeddings (got %d)", c->head_dim);
    if (c->sliding_window < 0)
        return ls_fail(err, LS_INVALID_ARGUMENT, "sliding_window: must not be negative (got %d)", c->sliding_window);
    return LS_OK;
}

static ls_status validate_rope(const model_config *c, ls_error *err)
{
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return ls_fail(err, LS_INVALID_ARGUMENT, "rope_theta: must be positive and finite");
    if (!(c->rms_eps > 0) || !isfinite(c->rms_eps))
        return ls_fail(err, LS_INVALID_ARGUMENT, "rms_norm_eps: must be positive and finite");
    if (c->rope_scaling == ROPE_SCALING_NONE) return LS_OK;
    if (c->rope_scaling != ROPE_SCALING_LLAMA3)
        return ls_fail(err, LS_INVALID_ARGUMENT, "rope_scaling.rope_type: unsupported");
    if (!(c->rope_factor >= 1) || !isfinite(c->rope_factor))
        return ls_fail(err, LS_INVALID_ARGUMENT, "rope_scaling.factor: must be finite and >= 1");
    if (!(c->rope_low_freq_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
        !isfinite(c->rope_high_freq_factor))
        return ls_fail(err, LS_INVALID_ARGUMENT,
                       "rope_scaling.high_freq_factor: must be finite and greater than low_freq_factor > 0");
    if (c->rope_original_max_position <= 0)
        return ls_fail(err, LS_INVALID_ARGUMENT, "rope_scaling.original_max_position_embeddings: must be positive");
    return LS_OK;
}

static ls_status validate_tokens(const model_config *c, ls_error *err)
{
    if (c->bos_token_id < -1 || c->bos_token_id >= c->vocab_size)
        return ls_fail(err, LS_INVALID_ARGUMENT, "bos_token_id: %d is outside the vocabulary of %d",
                       c->bos_token_id, c->vocab_size);
    if (c->n_eos < 0 || c->n_eos > MODEL_MAX_EOS)
        return ls_fail(err, LS_INVALID_ARGUMENT, "eos_token_id: %d ids, at most %d", c->n_eos, MODEL_MAX_EOS);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] < 0 || c->eos_token_ids[i] >= c->vocab_size)
            return ls_fail(err, LS_INVALID_ARGUMENT, "eos_token_id: %d is outside the vocabulary of %d",
                           c->eos_token_ids[i], c->vocab_size);
    return LS_OK;
}

ls_status model_config_validate(const model_config *c, ls_error *err)
{
    if (strcmp(c->architecture, "LlamaForCausalLM") && strcmp(c->architecture, "MistralForCausalLM"))
        return ls_fail(err, LS_INVALID_ARGUMENT, "architectures: unsupported \"%.64s\"", c->architecture);
    ls_status rc;
    if ((rc = validate_sizes(c, err)) || (rc = validate_rope(c, err)) || (rc = validate_tokens(c, err))) return rc;
    return LS_OK;
}

/* json_parse_file says NOT_FOUND for a missing file; for a model directory that is a bad argument. */
static ls_status parse_json_file(json_doc **doc, const char *path, ls_error *err)
{
    ls_status rc = json_parse_file(doc, path, CONFIG_MAX_BYTES, err);
    if (rc) err->code = rc = LS_INVALID_ARGUMENT;
    return rc;
}

/* generation_config.json is optional; when present it must parse, and its eos ids win. */
static ls_status read_generation_config(model_config *cfg, const char *dir, ls_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (access(path, F_OK)) return LS_OK;
    json_doc *doc;
    ls_status rc = parse_json_file(&doc, path, err);
    if (rc) return rc;
    const json *root = json_root(doc);
    if (root->type != JSON_OBJECT) rc = ls_fail(err, LS_INVALID_ARGUMENT, "not a JSON object");
    else rc = read_eos(root, cfg, err);
    json_free(doc);
    return rc ? ls_error_wrap(err, "%s", path) : LS_OK;
}

ls_status model_config_load(model_config *cfg, const char *dir, ls_error *err)
{
    ls_error local;
    if (!err) err = &local;
    memset(cfg, 0, sizeof *cfg);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_doc *doc;
    ls_status rc = parse_json_file(&doc, path, err);
    if (rc) return rc;
    rc = read_config(json_root(doc), cfg, err);
    json_free(doc);
    if (rc) return ls_error_wrap(err, "%s", path);
    if ((rc = read_generation_config(cfg, dir, err))) return rc;
    if ((rc = model_config_validate(cfg, err))) return ls_error_wrap(err, "%s", path);
    return LS_OK;
}

int model_config_is_eos(const model_config *cfg, int token)
{
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_ids[i] == token) return 1;
    return 0;
}

int model_tensor_count(const model_config *cfg)
{
    return 2 + 9 * cfg->n_layers + !cfg->tie_word_embeddings;
}

static model_tensor layer_tensor(const model_config *c, int layer, int j)
{
    static const struct { model_tensor_kind kind; const char *suffix; } parts[9] = {
        { MODEL_TENSOR_ATTN_NORM, "input_layernorm" }, { MODEL_TENSOR_Q, "self_attn.q_proj" },
        { MODEL_TENSOR_K, "self_attn.k_proj" }, { MODEL_TENSOR_V, "self_attn.v_proj" },
        { MODEL_TENSOR_O, "self_attn.o_proj" }, { MODEL_TENSOR_MLP_NORM, "post_attention_layernorm" },
        { MODEL_TENSOR_GATE, "mlp.gate_proj" }, { MODEL_TENSOR_UP, "mlp.up_proj" },
        { MODEL_TENSOR_DOWN, "mlp.down_proj" },
    };
    int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t in = c->intermediate_size;
    const int64_t shapes[9][2] = { { h, 0 }, { q, h }, { kv, h }, { kv, h }, { h, q }, { h, 0 }, { in, h }, { in, h }, { h, in } };
    model_tensor t = { .kind = parts[j].kind, .layer = layer, .n_dims = shapes[j][1] ? 2 : 1 };
    snprintf(t.name, sizeof t.name, "model.layers.%d.%s.weight", layer, parts[j].suffix);
    t.shape[0] = shapes[j][0];
    t.shape[1] = shapes[j][1];
    return t;
}

model_tensor model_tensor_at(const model_config *c, int i)
{
    int64_t v = c->vocab_size, h = c->hidden_size;
    model_tensor t = { .layer = -1, .n_dims = 2, .shape = { v, h } };
    if (i == 0) {
        t.kind = MODEL_TENSOR_EMBED;
        snprintf(t.name, sizeof t.name, "model.embed_tokens.weight");
    } else if (i <= 9 * c->n_layers) {
        t = layer_tensor(c, (i - 1) / 9, (i - 1) % 9);
    } else if (i == 9 * c->n_layers + 1) {
        t = (model_tensor){ .kind = MODEL_TENSOR_FINAL_NORM, .layer = -1, .n_dims = 1, .shape = { h, 0 } };
        snprintf(t.name, sizeof t.name, "model.norm.weight");
    } else {
        t.kind = MODEL_TENSOR_LM_HEAD;
        snprintf(t.name, sizeof t.name, "lm_head.weight");
    }
    return t;
}
