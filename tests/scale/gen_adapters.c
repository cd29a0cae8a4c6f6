/* Writes N PEFT adapters of mixed ranks and target modules for a base model directory, named
 * a0000 .. a<N-1> under an output root: the population of the scale test. Deterministic for a seed.
 * usage: gen_adapters BASE_MODEL_DIR OUT_ROOT N */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/peft_gen.h"

int main(int argc, char **argv)
{
    log_init(0, LOG_WARN);
    if (argc != 4) {
        fprintf(stderr, "usage: gen_adapters BASE_MODEL_DIR OUT_ROOT N\n");
        return 2;
    }
    model_config cfg;
    ls_error err = { 0 };
    if (model_config_load(&cfg, argv[1], &err) != LS_OK) {
        fprintf(stderr, "gen_adapters: %s\n", err.msg);
        return 1;
    }
    static const int ranks[] = { 1, 2, 4, 8, 8, 16, 16, 32 };
    static const unsigned masks[] = {
        (1u << LORA_Q) | (1u << LORA_V), PEFT_GEN_ALL_MODULES,
        (1u << LORA_GATE) | (1u << LORA_UP) | (1u << LORA_DOWN),
        (1u << LORA_Q) | (1u << LORA_K) | (1u << LORA_V) | (1u << LORA_O),
    };
    const char *slash = strrchr(argv[1], '/');
    int n = atoi(argv[3]);
    for (int i = 0; i < n; i++) {
        peft_gen_opts o = peft_gen_default_opts();
        o.r = ranks[i % 8];
        o.lora_alpha = 2.0 * o.r;
        o.use_rslora = i % 5 == 0;
        o.target_mask = masks[(i / 8) % 4];
        o.seed = 1000 + (uint64_t)i;
        o.init_std = 0.1f;
        o.base_model = slash ? slash + 1 : argv[1];
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/a%04d", argv[2], i);
        if (peft_gen_write(dir, &cfg, &o, &err) != LS_OK) {
            fprintf(stderr, "gen_adapters: %s: %s\n", dir, err.msg);
            return 1;
        }
    }
    return 0;
}
