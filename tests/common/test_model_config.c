/* model_config.h on config.json files as transformers 4 and 5 write them: Llama 3 rope scaling,
 * Mistral's sliding window and defaults, eos lists and the generation_config override, and every
 * rejection naming its field. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/model_config.h"
#include "tests/tap.h"

typedef struct ctx { char dir[64]; } ctx;

static void write_text(const ctx *c, const char *file, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", c->dir, file);
    if (!text) { unlink(path); return; }
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static ls_status load(const ctx *c, const char *config, const char *gen, model_config *cfg, ls_error *err)
{
    write_text(c, "config.json", config);
    write_text(c, "generation_config.json", gen);
    return model_config_load(cfg, c->dir, err);
}

#define LLAMA_BASE "\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":384,\"hidden_size\":64," \
                   "\"intermediate_size\":176,\"num_hidden_layers\":2,\"num_attention_heads\":4"

static void test_llama3_v4(const ctx *c)
{
    model_config m;
    ls_error err = { 0 };
    ls_status rc = load(c, "{" LLAMA_BASE ",\"num_key_value_heads\":2,\"head_dim\":16,\"hidden_act\":\"silu\","
                        "\"max_position_embeddings\":512,\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,"
                        "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                        "\"original_max_position_embeddings\":64,\"rope_type\":\"llama3\"},"
                        "\"attention_bias\":false,\"mlp_bias\":false,\"tie_word_embeddings\":false,"
                        "\"bos_token_id\":1,\"eos_token_id\":[2,3],\"torch_dtype\":\"float32\"}",
                        NULL, &m, &err);
    TAP_OK(rc == LS_OK, "llama3 (transformers 4 keys) loads %s", err.msg);
    TAP_OK(!strcmp(m.architecture, "LlamaForCausalLM") && m.vocab_size == 384 && m.hidden_size == 64 &&
           m.intermediate_size == 176 && m.n_layers == 2 && m.n_heads == 4 && m.n_kv_heads == 2 &&
           m.head_dim == 16 && m.max_position == 512, "llama3 sizes");
    TAP_OK(m.rms_eps == 1e-5f && m.rope_theta == 500000.0f && m.rope_scaling == ROPE_SCALING_LLAMA3 &&
           m.rope_factor == 8 && m.rope_low_freq_factor == 1 && m.rope_high_freq_factor == 4 &&
           m.rope_original_max_position == 64, "llama3 rope fields");
    TAP_OK(m.bos_token_id == 1 && m.n_eos == 2 && model_config_is_eos(&m, 3) && !model_config_is_eos(&m, 1) &&
           !strcmp(m.torch_dtype, "float32") && m.sliding_window == 0 && !m.tie_word_embeddings, "llama3 tokens");
}

static void test_llama3_v5(const ctx *c)
{
    model_config m;
    ls_error err = { 0 };
    ls_status rc = load(c, "{" LLAMA_BASE ",\"num_key_value_heads\":2,\"dtype\":\"bfloat16\","
                        "\"rope_parameters\":{\"rope_type\":\"llama3\",\"rope_theta\":500000.0,\"factor\":32.0,"
                        "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192},"
                        "\"eos_token_id\":128001}",
                        "{\"eos_token_id\":[128001,128008,128009]}", &m, &err);
    // vocab 384 cannot hold those eos ids: the validator must say so, naming the field.
    TAP_OK(rc == LS_INVALID_ARGUMENT && strstr(err.msg, "eos_token_id"), "eos outside vocab -> %s", err.msg);
    rc = load(c, "{" LLAMA_BASE ",\"num_key_value_heads\":2,\"dtype\":\"bfloat16\","
              "\"rope_parameters\":{\"rope_type\":\"llama3\",\"rope_theta\":500000.0,\"factor\":32.0,"
              "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192},"
              "\"eos_token_id\":100}",
              "{\"bos_token_id\":1,\"eos_token_id\":[100,101,102]}", &m, &err);
    TAP_OK(rc == LS_OK && m.rope_theta == 500000.0f && m.rope_factor == 32 && m.rope_original_max_position == 8192 &&
           !strcmp(m.torch_dtype, "bfloat16"), "llama3 (transformers 5 rope_parameters, dtype) %s", err.msg);
    TAP_OK(m.n_eos == 3 && m.eos_token_ids[2] == 102, "generation_config eos list overrides config");
    rc = load(c, "{" LLAMA_BASE ",\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1234.0}}", NULL, &m, &err);
    TAP_OK(rc == LS_OK && m.rope_scaling == ROPE_SCALING_NONE && m.rope_theta == 1234.0f, "rope_parameters default");
}

static void test_defaults(const ctx *c)
{
    model_config m;
    ls_error err = { 0 };
    ls_status rc = load(c, "{" LLAMA_BASE "}", NULL, &m, &err);
    TAP_OK(rc == LS_OK, "minimal llama config %s", err.msg);
    TAP_OK(m.n_kv_heads == 4 && m.head_dim == 16 && m.rms_eps == 1e-6f && m.rope_theta == 10000.0f &&
           m.max_position == 2048 && !m.tie_word_embeddings && m.bos_token_id == -1 && m.n_eos == 0 &&
           m.rope_scaling == ROPE_SCALING_NONE && !strcmp(m.torch_dtype, "float32"), "transformers defaults");
    rc = load(c, "{\"model_type\":\"llama\",\"vocab_size\":384,\"hidden_size\":64,\"intermediate_size\":176,"
              "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":null,"
              "\"tie_word_embeddings\":true,\"eos_token_id\":2}", "{\"eos_token_id\":null}", &m, &err);
    TAP_OK(rc == LS_OK && !strcmp(m.architecture, "LlamaForCausalLM") && m.n_kv_heads == 4 &&
           m.tie_word_embeddings && m.n_eos == 1 && m.eos_token_ids[0] == 2,
           "model_type fallback, null kv heads, null generation eos keeps config's");
}

#define MISTRAL_BASE "\"architectures\":[\"MistralForCausalLM\"],\"vocab_size\":320,\"hidden_size\":64," \
                     "\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":16"

static void test_mistral(const ctx *c)
{
    model_config m;
    ls_error err = { 0 };
    ls_status rc = load(c, "{" MISTRAL_BASE ",\"num_key_value_heads\":2,\"sliding_window\":16,"
                        "\"max_position_embeddings\":512}", NULL, &m, &err);
    TAP_OK(rc == LS_OK && m.sliding_window == 16 && m.n_kv_heads == 2 && m.head_dim == 4, "mistral %s", err.msg);
    rc = load(c, "{" MISTRAL_BASE ",\"sliding_window\":null}", NULL, &m, &err);
    TAP_OK(rc == LS_OK && m.sliding_window == 0 && m.n_kv_heads == 8 && m.max_position == 131072,
           "mistral null window -> 0; absent kv heads -> 8 (MistralConfig default)");
    rc = load(c, "{" MISTRAL_BASE "}", NULL, &m, &err);
    TAP_OK(rc == LS_OK && m.sliding_window == 4096, "mistral absent window -> 4096 (MistralConfig default)");
    rc = load(c, "{" LLAMA_BASE ",\"sliding_window\":16}", NULL, &m, &err);
    TAP_OK(rc == LS_OK && m.sliding_window == 0, "llama ignores sliding_window");
}

static void expect_reject(const ctx *c, const char *config, const char *gen, const char *field)
{
    model_config m;
    ls_error err = { 0 };
    ls_status rc = load(c, config, gen, &m, &err);
    TAP_OK(rc == LS_INVALID_ARGUMENT && strstr(err.msg, field) && strstr(err.msg, c->dir),
           "reject %s -> %s", field, err.msg);
}

static void test_rejects(const ctx *c)
{
    expect_reject(c, "{" LLAMA_BASE ",\"hidden_act\":\"gelu\"}", NULL, "hidden_act");
    expect_reject(c, "{" LLAMA_BASE ",\"attention_bias\":true}", NULL, "attention_bias");
    expect_reject(c, "{" LLAMA_BASE ",\"mlp_bias\":true}", NULL, "mlp_bias");
    expect_reject(c, "{" LLAMA_BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}}", NULL, "rope_type");
    expect_reject(c, "{" LLAMA_BASE ",\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2.0}}", NULL, "rope_type");
    expect_reject(c, "{" LLAMA_BASE ",\"rope_scaling\":{\"factor\":2.0}}", NULL, "rope_scaling.rope_type");
    expect_reject(c, "{" LLAMA_BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"low_freq_factor\":1.0,"
                  "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}}", NULL, "rope_scaling.factor");
    expect_reject(c, "{" LLAMA_BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":4.0,"
                  "\"high_freq_factor\":1.0,\"original_max_position_embeddings\":64}}", NULL, "high_freq_factor");
    expect_reject(c, "{" LLAMA_BASE ",\"num_key_value_heads\":3}", NULL, "num_key_value_heads");
    expect_reject(c, "{" LLAMA_BASE ",\"num_key_value_heads\":0}", NULL, "num_key_value_heads");
    expect_reject(c, "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":384,\"hidden_size\":0,"
                  "\"intermediate_size\":176,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"head_dim\":16}",
                  NULL, "hidden_size");
    expect_reject(c, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":176,"
                  "\"num_hidden_layers\":2,\"num_attention_heads\":4}", NULL, "vocab_size: missing");
    expect_reject(c, "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":-5,\"hidden_size\":64,"
                  "\"intermediate_size\":176,\"num_hidden_layers\":2,\"num_attention_heads\":4}", NULL, "vocab_size");
    expect_reject(c, "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":384,\"hidden_size\":66,"
                  "\"intermediate_size\":176,\"num_hidden_layers\":2,\"num_attention_heads\":4}", NULL, "hidden_size");
    expect_reject(c, "{" LLAMA_BASE ",\"head_dim\":15}", NULL, "head_dim");
    expect_reject(c, "{" LLAMA_BASE ",\"head_dim\":\"16\"}", NULL, "head_dim: expected an integer");
    expect_reject(c, "{\"architectures\":[\"GPT2LMHeadModel\"],\"vocab_size\":384}", NULL, "architectures");
    expect_reject(c, "{" LLAMA_BASE ",\"quantization_config\":{\"quant_method\":\"gptq\"}}", NULL, "quantization_config");
    expect_reject(c, "{" LLAMA_BASE ",\"torch_dtype\":\"int8\"}", NULL, "torch_dtype");
    expect_reject(c, "{" LLAMA_BASE ",\"eos_token_id\":\"</s>\"}", NULL, "eos_token_id");
    expect_reject(c, "{" LLAMA_BASE ",\"eos_token_id\":384}", NULL, "eos_token_id");
    expect_reject(c, "{" LLAMA_BASE ",\"rms_norm_eps\":0}", NULL, "rms_norm_eps");
    expect_reject(c, "{" LLAMA_BASE ",\"rope_theta\":-1}", NULL, "rope_theta");
    expect_reject(c, "{" LLAMA_BASE ",\"max_position_embeddings\":0}", NULL, "max_position_embeddings");
    expect_reject(c, "{" LLAMA_BASE ",}", NULL, "config.json");
    expect_reject(c, "[1]", NULL, "not a JSON object");
    expect_reject(c, "{" LLAMA_BASE "}", "{\"eos_token_id\":", "generation_config.json");
    expect_reject(c, NULL, NULL, "config.json");
}

static void test_tensor_list(void)
{
    model_config m = { .vocab_size = 100, .hidden_size = 32, .intermediate_size = 48, .n_layers = 2,
                       .n_heads = 4, .n_kv_heads = 2, .head_dim = 16 };
    TAP_OK(model_tensor_count(&m) == 21, "untied: 2 + 9 x 2 + 1 tensors");
    model_tensor t = model_tensor_at(&m, 0);
    TAP_OK(!strcmp(t.name, "model.embed_tokens.weight") && t.shape[0] == 100 && t.shape[1] == 32, "embed");
    t = model_tensor_at(&m, 2);
    TAP_OK(!strcmp(t.name, "model.layers.0.self_attn.q_proj.weight") && t.shape[0] == 64 && t.shape[1] == 32, "q");
    t = model_tensor_at(&m, 12);
    TAP_OK(!strcmp(t.name, "model.layers.1.self_attn.k_proj.weight") && t.shape[0] == 32 && t.layer == 1, "k");
    t = model_tensor_at(&m, 14);
    TAP_OK(!strcmp(t.name, "model.layers.1.self_attn.o_proj.weight") && t.shape[0] == 32 && t.shape[1] == 64, "o");
    t = model_tensor_at(&m, 18);
    TAP_OK(!strcmp(t.name, "model.layers.1.mlp.down_proj.weight") && t.shape[0] == 32 && t.shape[1] == 48, "down");
    t = model_tensor_at(&m, 19);
    TAP_OK(!strcmp(t.name, "model.norm.weight") && t.n_dims == 1 && t.shape[0] == 32, "norm");
    t = model_tensor_at(&m, 20);
    TAP_OK(!strcmp(t.name, "lm_head.weight") && t.kind == MODEL_TENSOR_LM_HEAD, "lm_head");
    m.tie_word_embeddings = 1;
    TAP_OK(model_tensor_count(&m) == 20, "tied: no lm_head");
}

int main(void)
{
    ctx c;
    snprintf(c.dir, sizeof c.dir, "/tmp/ls_test_cfg_XXXXXX");
    if (!mkdtemp(c.dir)) return 1;
    test_llama3_v4(&c);
    test_llama3_v5(&c);
    test_defaults(&c);
    test_mistral(&c);
    test_rejects(&c);
    test_tensor_list();
    write_text(&c, "config.json", NULL);
    write_text(&c, "generation_config.json", NULL);
    rmdir(c.dir);
    return tap_done();
}
