/* The model's shape, read from a Hugging Face config.json (+ generation_config.json for eos ids).
 * Both the coordinator (context limits, vocabulary, eos) and the workers (weights, kernels) use it, so
 * it lives here and is parsed the same way on every rank. Shape never comes from flags. */
#ifndef LORASERVE_COMMON_MODEL_CONFIG_H
#define LORASERVE_COMMON_MODEL_CONFIG_H

#include "common/status.h"

#define MODEL_MAX_EOS 8

typedef enum rope_scaling_type { ROPE_SCALING_NONE = 0, ROPE_SCALING_LLAMA3 = 1 } rope_scaling_type;

typedef struct model_config {
    char architecture[64];      // "LlamaForCausalLM" or "MistralForCausalLM"
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int n_layers;               // num_hidden_layers
    int n_heads;                // num_attention_heads
    int n_kv_heads;             // num_key_value_heads (defaults to n_heads)
    int head_dim;               // head_dim (defaults to hidden_size / n_heads)
    int max_position;           // max_position_embeddings: the context limit
    float rms_eps;              // rms_norm_eps
    float rope_theta;
    rope_scaling_type rope_scaling;
    float rope_factor;          // llama3: factor
    float rope_low_freq_factor;
    float rope_high_freq_factor;
    int rope_original_max_position;
    int sliding_window;         // Mistral; 0 = full attention
    int tie_word_embeddings;    // lm_head shares embed_tokens
    int bos_token_id;           // -1 when absent
    int eos_token_ids[MODEL_MAX_EOS];
    int n_eos;
    char torch_dtype[16];       // "float32", "float16", "bfloat16"
} model_config;

/* Reads dir/config.json (required) and dir/generation_config.json (optional, its eos_token_id wins).
 * Unsupported architectures, hidden_act other than silu, attention/mlp bias, rope_scaling types other
 * than llama3, and inconsistent shapes fail with INVALID_ARGUMENT naming the field. */
ls_status model_config_load(model_config *cfg, const char *dir, ls_error *err);
int model_config_is_eos(const model_config *cfg, int token);

#endif
