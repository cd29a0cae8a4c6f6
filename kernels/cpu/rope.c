/* Rotary position embeddings: the inverse frequencies (with Llama 3's frequency-dependent context
 * scaling) and the rotation itself in Hugging Face's "rotate_half" convention, where dimension j pairs
 * with j + head_dim/2 (not the interleaved pairs of the original paper; HF checkpoints are permuted for
 * this). Frequencies and angles are computed in double and rounded once, so position 100k is as exact as
 * position 1; transformers rounds the angle to fp32 first, which the golden tolerances absorb. */
#include "kernels/ops.h"

#include <assert.h>
#include <math.h>

/* Llama 3 rope_scaling (transformers' _compute_llama3_parameters): long wavelengths are stretched by
 * factor, short ones kept, and the band between is interpolated smoothly. */
static double llama3_scale(double inv_freq, double factor, double low_freq_factor, double high_freq_factor,
                           double original_max_position)
{
    double wavelen = 2.0 * M_PI / inv_freq;
    double low_freq_wavelen = original_max_position / low_freq_factor;
    double high_freq_wavelen = original_max_position / high_freq_factor;
    if (wavelen < high_freq_wavelen) return inv_freq;
    if (wavelen > low_freq_wavelen) return inv_freq / factor;
    double smooth = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    return (1.0 - smooth) * inv_freq / factor + smooth * inv_freq;
}

void op_rope_inv_freq(float *inv_freq, int head_dim, float theta, int scaling_type, float factor,
                      float low_freq_factor, float high_freq_factor, int original_max_position)
{
    assert(head_dim > 0 && head_dim % 2 == 0 && theta > 0.0f);
    assert(scaling_type == 0 || scaling_type == 1);
    for (int i = 0; i < head_dim / 2; ++i) {
        double f = 1.0 / pow(theta, (double)(2 * i) / head_dim);
        if (scaling_type == 1) f = llama3_scale(f, factor, low_freq_factor, high_freq_factor, original_max_position);
        inv_freq[i] = (float)f;
    }
}

/* One (cos, sin) per frequency serves every head of the token. */
static void rotate_token(float *x, double pos, const float *inv_freq, int n_heads, int head_dim)
{
    int half = head_dim / 2;
    for (int j = 0; j < half; ++j) {
        double a = pos * inv_freq[j];
        float c = (float)cos(a), s = (float)sin(a);
        for (int h = 0; h < n_heads; ++h) {
            float *xh = x + (size_t)h * head_dim;
            float x1 = xh[j], x2 = xh[j + half];
            xh[j] = x1 * c - x2 * s;
            xh[j + half] = x2 * c + x1 * s;
        }
    }
}

void op_rope(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim)
{
    assert(head_dim % 2 == 0);
    for (int i = 0; i < n; ++i)
        rotate_token(x + (size_t)i * n_heads * head_dim, (double)pos[i], inv_freq, n_heads, head_dim);
}
