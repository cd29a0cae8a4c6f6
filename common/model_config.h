/* The model's shape, read from a Hugging Face config.json (+ generation_config.json for eos ids).
 * Both the coordinator (context limits, vocabulary, eos) and the workers (weights, kernels) use it, so
 * it lives here and is parsed the same way on every rank. Shape never comes from flags. */
#ifndef LORASERVE_COMMON_MODEL_CONFIG_H
#define LORASERVE_COMMON_MODEL_CONFIG_H

#include <stdint.h>

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
/* The consistency rules of model_config_load on an already filled struct (the generator uses it):
 * positive sizes, kv heads dividing heads, even head_dim, eos ids inside the vocabulary, sane rope. */
ls_status model_config_validate(const model_config *cfg, ls_error *err);
int model_config_is_eos(const model_config *cfg, int token);

/* The checkpoint's tensors, by their Hugging Face names and [out, in] shapes, in canonical order:
 * embed_tokens; per layer input_layernorm, q, k, v, o, post_attention_layernorm, gate, up, down;
 * norm; lm_head (absent when tied). The generator writes exactly these; the loader requires them. */
typedef enum model_tensor_kind {
    MODEL_TENSOR_EMBED, MODEL_TENSOR_ATTN_NORM, MODEL_TENSOR_Q, MODEL_TENSOR_K, MODEL_TENSOR_V,
    MODEL_TENSOR_O, MODEL_TENSOR_MLP_NORM, MODEL_TENSOR_GATE, MODEL_TENSOR_UP, MODEL_TENSOR_DOWN,
    MODEL_TENSOR_FINAL_NORM, MODEL_TENSOR_LM_HEAD,
} model_tensor_kind;

typedef struct model_tensor {
    char name[96];
    model_tensor_kind kind;
    int layer;                  // -1 outside the layers
    int n_dims;                 // 1 (norms) or 2
    int64_t shape[2];           // [out, in] for projections, [V, H] for embeddings, [H] for norms
} model_tensor;

/* Number of tensors of a (validated) config. */
int model_tensor_count(const model_config *cfg);
/* Tensor i (0 <= i < model_tensor_count) of the canonical list. */
model_tensor model_tensor_at(const model_config *cfg, int i);

#endif
