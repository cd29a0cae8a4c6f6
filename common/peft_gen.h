/* Writes a PEFT LoRA adapter directory for a base model config, as PEFT 0.21's save_pretrained lays
 * it out (adapter_config.json with sorted keys and every field PEFT writes; adapter_model.safetensors
 * with PEFT's tensor names, sorted), filled with seeded random A and B. Unlike PEFT's init, B is not
 * zero, so the adapter changes the model's output and tests can see it. Tests and the scale test
 * (thousands of adapters on a small base) use it; the same seed gives the same bytes. */
#ifndef LORASERVE_COMMON_PEFT_GEN_H
#define LORASERVE_COMMON_PEFT_GEN_H

#include <stdint.h>

#include "common/lora_layout.h"
#include "common/model_config.h"
#include "common/status.h"

#define PEFT_GEN_ALL_MODULES ((1u << LORA_N_MODULES) - 1)

typedef struct peft_gen_pattern {
    const char *key;            // a rank_pattern / alpha_pattern key (a Python regex, as in PEFT)
    double value;               // rank (an integer) or alpha
} peft_gen_pattern;

typedef struct peft_gen_opts {
    int r;
    double lora_alpha;
    int use_rslora;
    unsigned target_mask;       // bit m = lora_module m, written as the target_modules list
    const char *target_string;  // instead of the list: a regex or "all-linear" (NULL = use the mask)
    const int *layers_to_transform;   // NULL = null (every layer)
    int n_layers_to_transform;
    const peft_gen_pattern *rank_pattern;
    int n_rank_pattern;
    const peft_gen_pattern *alpha_pattern;
    int n_alpha_pattern;
    const char *dtype;          // "float32", "float16" or "bfloat16"
    uint64_t seed;
    float init_std;             // A and B ~ uniform with this standard deviation
    const char *base_model;     // base_model_name_or_path; NULL writes null
} peft_gen_opts;

/* r 8, alpha 16, all seven modules, float32, seed 1, std 0.05, no base model name. */
peft_gen_opts peft_gen_default_opts(void);
/* Creates dir (and missing parents) and writes both files; the config is read back with
 * peft_read_config to size the tensors, so whatever it writes is exactly what the loader accepts. */
ls_status peft_gen_write(const char *dir, const model_config *base, const peft_gen_opts *o, ls_error *err);
/* Writes only adapter_config.json from the options (tests that then craft their own tensors). */
ls_status peft_gen_write_config(const char *dir, const peft_gen_opts *o, ls_error *err);

#endif
