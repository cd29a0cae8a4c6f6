/* Writes a valid Hugging Face Llama/Mistral model directory with random weights (config.json,
 * generation_config.json, model.safetensors or shards + index): the embedded demo model and the models
 * of the tests. Deterministic for a seed. The tokenizer files are written separately. */
#ifndef LORASERVE_COMMON_MODEL_GEN_H
#define LORASERVE_COMMON_MODEL_GEN_H

#include "common/model_config.h"
#include "common/status.h"

typedef struct model_gen_opts {
    model_config cfg;           // shape; architecture, rope and eos fields are written as given
    const char *dtype;          // "float32", "float16" or "bfloat16"
    int n_shards;               // 1 = model.safetensors; >1 = model-0000i-of-0000n.safetensors + index
    uint64_t seed;
    float init_std;             // weights ~ N(0, std); norms are 1 + N(0, std)
    int tiled;                  // 1: each matrix tiles one seeded N(0, std) block (benchmark models: a 7B
                                // model in seconds instead of minutes of Box-Muller; not i.i.d.)
} model_gen_opts;

/* The tiny Llama that is served when no --model is given (vocab_size set by the caller from the
 * tokenizer it pairs with). */
model_gen_opts model_gen_demo_opts(int vocab_size);
ls_status model_gen_write(const char *dir, const model_gen_opts *opts, ls_error *err);

#endif
