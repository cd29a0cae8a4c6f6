/* The token-wise ops with no reduction: the embedding gather and the SwiGLU activation of the MLP. */
#include "kernels/ops.h"

#include <math.h>
#include <string.h>

/* Token ids are trusted: the coordinator validates them against the vocabulary before they get here. */
void op_embedding(float *out, const int32_t *tokens, const float *table, int n, int dim)
{
    for (int i = 0; i < n; ++i)
        memcpy(out + (size_t)i * dim, table + (size_t)tokens[i] * dim, (size_t)dim * sizeof(float));
}

/* silu(g) = g * sigmoid(g) = g / (1 + e^-g); for very negative g, e^-g overflows to inf and the quotient
 * goes to -0, the right limit, with no special case. */
static inline float silu(float g)
{
    return g / (1.0f + expf(-g));
}

void op_swiglu(float *out, const float *gate, const float *up, int n, int dim)
{
    size_t total = (size_t)n * dim;
    for (size_t i = 0; i < total; ++i) out[i] = silu(gate[i]) * up[i];
}
