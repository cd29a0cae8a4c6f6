/* RMSNorm, alone and fused with the residual add that precedes it in every Llama/Mistral sublayer.
 * The sum of squares is kept in double: it costs nothing next to a matmul and makes this op a tighter
 * oracle for the fp32 tree reductions of the CUDA twin. The arithmetic order of the scaling mirrors
 * transformers' LlamaRMSNorm: (x * rsqrt(mean(x^2) + eps)) * w. */
#include "kernels/ops.h"

#include <math.h>

static float inv_rms(const float *x, int dim, float eps)
{
    double ss = 0.0;
    for (int j = 0; j < dim; ++j) ss += (double)x[j] * x[j];
    return (float)(1.0 / sqrt(ss / dim + eps));
}

static void scale_row(float *y, const float *x, const float *w, int dim, float inv)
{
    for (int j = 0; j < dim; ++j) y[j] = (x[j] * inv) * w[j];
}

void op_rmsnorm(float *y, const float *x, const float *w, int n, int dim, float eps)
{
    for (int i = 0; i < n; ++i) {
        const float *xi = x + (size_t)i * dim;
        scale_row(y + (size_t)i * dim, xi, w, dim, inv_rms(xi, dim, eps));
    }
}

/* The whole residual row is updated before y is written, so y may alias x (or the residual). */
void op_add_rmsnorm(float *residual, float *y, const float *x, const float *w, int n, int dim, float eps)
{
    for (int i = 0; i < n; ++i) {
        float *ri = residual + (size_t)i * dim;
        const float *xi = x + (size_t)i * dim;
        for (int j = 0; j < dim; ++j) ri[j] += xi[j];
        scale_row(y + (size_t)i * dim, ri, w, dim, inv_rms(ri, dim, eps));
    }
}
