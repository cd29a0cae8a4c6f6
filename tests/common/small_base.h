/* The base model shape the PEFT tests generate adapters for: small enough to write and read in
 * milliseconds, yet with GQA and widths that all split over TP 2. */
#ifndef LORASERVE_TESTS_COMMON_SMALL_BASE_H
#define LORASERVE_TESTS_COMMON_SMALL_BASE_H

#include "common/model_gen.h"

/* H 32, I 48, 3 layers, 4 heads of 8, 2 kv heads: q 32 wide, k/v 16, everything splits over TP 2. */
static inline model_config small_base(void)
{
    model_config c = model_gen_demo_opts(64).cfg;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.n_layers = 3;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    return c;
}

#endif
