/* PEFT LoRA adapters: a directory with adapter_config.json and adapter_model.safetensors, validated
 * strictly against the base model before anything is registered, and read shard by shard for the
 * workers. What changes the math is honoured (r, lora_alpha, use_rslora, target_modules,
 * rank_pattern, alpha_pattern, layers_to_transform); what we cannot serve exactly is refused with a
 * message naming the field: DoRA, modules_to_save, bias other than "none", fan_in_fan_out, peft_type
 * other than LORA, a pickle-only directory, tensors whose names or shapes do not fit the base and r,
 * keys for modules the base lacks, and a base_model_name_or_path that differs from the served model's
 * (unless the caller allows it). A failed load leaves nothing behind. */
#ifndef LORASERVE_COMMON_PEFT_H
#define LORASERVE_COMMON_PEFT_H

#include "common/lora_layout.h"
#include "common/model_config.h"
#include "common/status.h"

#define PEFT_MAX_RANK 256

typedef struct peft_adapter {
    char dir[4096];
    lora_shape shape;           // ranks and scales per (layer, module); owned
    char base_model[512];       // base_model_name_or_path ("" when absent)
    size_t n_params;            // floats in all A and B tensors
} peft_adapter;

typedef struct peft_opts {
    const char *served_model_name;  // compared with base_model_name_or_path; NULL or "" = do not check
    int allow_base_mismatch;        // accept a different base_model_name_or_path
} peft_opts;

/* Reads adapter_config.json only (cheap: the coordinator uses it to size pages) and checks it against
 * the base config. INVALID_ARGUMENT / FAILED_PRECONDITION naming the field. */
ls_status peft_read_config(peft_adapter *a, const char *dir, const model_config *base, const peft_opts *o,
                           ls_error *err);
/* peft_read_config without looking for the weights file: the generator sizes the tensors with it
 * before it writes them. */
ls_status peft_parse_config(peft_adapter *a, const char *dir, const model_config *base, const peft_opts *o,
                            ls_error *err);
/* Opens adapter_model.safetensors and checks every tensor name, dtype (F32/F16/BF16) and shape against
 * the config read above: every adapted (layer, module) must have exactly lora_A [r, in] and lora_B
 * [out, r], nothing else may be present. */
ls_status peft_check_tensors(const peft_adapter *a, const model_config *base, ls_error *err);
/* Writes this rank's shard (lora_layout.h: rows in pool order, fp32) into dst, which holds
 * lora_layout_walk(...) pages of page_floats; rows of unused page tails are left untouched. */
ls_status peft_read_shard(const peft_adapter *a, const model_config *base, int tp_rank, int tp_size,
                          size_t page_floats, float *dst, ls_error *err);
/* The same rows in a 16-bit storage type (bf16 ? bf16 : f16), for a device pool: tensors already of that
 * type are copied bit for bit and others rounded to nearest even, so the result equals peft_read_shard
 * followed by a conversion, without the fp32 pass (a 7B rank-8 adapter loads several times faster). */
ls_status peft_read_shard16(const peft_adapter *a, const model_config *base, int tp_rank, int tp_size,
                            size_t page_elems, int bf16, uint16_t *dst, ls_error *err);
void peft_adapter_free(peft_adapter *a);   // frees the shape and zeroes a; NULL is fine

/* The module path PEFT matches target_modules, rank_pattern and alpha_pattern against
 * ("model.layers.3.self_attn.q_proj"), and the tensor name it saves for lora_A (is_b 0) or lora_B
 * ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"). */
void peft_module_path(char *buf, size_t n, int layer, lora_module m);
void peft_tensor_name(char *buf, size_t n, int layer, lora_module m, int is_b);

/* Resolves an adapter name under root: refuses empty names, absolute paths, "..", and anything whose
 * real path leaves root (symlinks included) with INVALID_ARGUMENT, before opening anything inside. */
ls_status peft_resolve_name(const char *root, const char *name, char *out, size_t out_len, ls_error *err);

#endif
