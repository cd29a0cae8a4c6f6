/* Device copy of the weights (see device_weights.h). The host side is converted in one staging buffer
 * and copied with a single cudaMemcpy: start-up is bound by the host conversion, not by many small
 * transfers. */
#include "worker/cuda/device_weights.h"

#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/safetensors.h"

dev_dtype dev_weights_dtype_for(const model_config *c)
{
    const char *env = getenv("LORASERVE_CUDA_DTYPE");
    if (env && !strcmp(env, "f32")) return DEV_F32;
    if (env && !strcmp(env, "f16")) return DEV_F16;
    if (env && !strcmp(env, "bf16")) return DEV_BF16;
    return strcmp(c->torch_dtype, "float16") == 0 ? DEV_F16 : DEV_BF16;
}

/* One tensor of the table: where it comes from (up to 3 host parts, concatenated by rows). */
typedef struct part { const float *src; size_t n; } part;

typedef struct carve {
    void **dst;
    part parts[3];
} carve;

static size_t carve_elems(const carve *c)
{
    return c->parts[0].n + c->parts[1].n + c->parts[2].n;
}

/* The table of every tensor in arena order; returns the count written into out (capacity cap). */
static int build_table(dev_weights *d, const model_weights *w, carve *out, int cap)
{
    const model_config *c = &w->cfg;
    size_t H = (size_t)c->hidden_size, hd = (size_t)c->head_dim, I = (size_t)w->inter_local;
    size_t q = (size_t)w->n_heads_local * hd, kv = (size_t)w->n_kv_heads_local * hd;
    int n = 0;
    out[n++] = (carve){ &d->embed, { { w->embed, (size_t)c->vocab_size * H } } };
    out[n++] = (carve){ &d->final_norm, { { w->final_norm, H } } };
    out[n++] = (carve){ &d->lm_head, { { w->lm_head, (size_t)w->vocab_local * H } } };
    for (int l = 0; l < c->n_layers && n + 6 <= cap; l++) {
        const layer_weights *L = &w->layers[l];
        dev_layer *D = &d->layers[l];
        out[n++] = (carve){ &D->attn_norm, { { L->attn_norm, H } } };
        out[n++] = (carve){ &D->w_qkv, { { L->wq, q * H }, { L->wk, kv * H }, { L->wv, kv * H } } };
        out[n++] = (carve){ &D->wo, { { L->wo, H * q } } };
        out[n++] = (carve){ &D->mlp_norm, { { L->mlp_norm, H } } };
        out[n++] = (carve){ &D->w_gate_up, { { L->w_gate, I * H }, { L->w_up, I * H } } };
        out[n++] = (carve){ &D->w_down, { { L->w_down, H * I } } };
    }
    return n;
}

/* Writes n values of src into dst (element offset at) in the storage type. */
static void round_into(void *dst, size_t at, const float *src, size_t n, dev_dtype t)
{
    if (t == DEV_F32) {
        memcpy((float *)dst + at, src, n * sizeof(float));
        return;
    }
    uint16_t *d = (uint16_t *)dst + at;
    for (size_t i = 0; i < n; i++) d[i] = t == DEV_F16 ? st_f32_to_f16(src[i]) : st_f32_to_bf16(src[i]);
}

ls_status dev_weights_upload(dev_weights *d, const model_weights *w, dev_dtype dtype, ls_error *err)
{
    memset(d, 0, sizeof *d);
    d->dtype = dtype;
    d->n_layers = w->cfg.n_layers;
    d->layers = ls_xcalloc((size_t)d->n_layers, sizeof *d->layers);
    int cap = 3 + 6 * d->n_layers;
    carve *table = ls_xcalloc((size_t)cap, sizeof *table);
    int n = build_table(d, w, table, cap);
    size_t elems = 0;
    for (int i = 0; i < n; i++) elems += (carve_elems(&table[i]) + 127) & ~(size_t)127;   // 256-byte aligned
    size_t esz = dev_dtype_size(dtype);
    d->bytes = elems * esz;
    void *host = malloc(d->bytes);
    cudaError_t ce = host ? cudaMalloc(&d->arena, d->bytes) : cudaErrorMemoryAllocation;
    if (ce != cudaSuccess) {
        free(host);
        free(table);
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "cannot allocate %zu bytes of weights on the device: %s", d->bytes,
                       cudaGetErrorString(ce));
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        *table[i].dst = (char *)d->arena + off * esz;
        size_t at = off;
        for (int p = 0; p < 3 && table[i].parts[p].src; p++) {
            round_into(host, at, table[i].parts[p].src, table[i].parts[p].n, dtype);
            at += table[i].parts[p].n;
        }
        off += (carve_elems(&table[i]) + 127) & ~(size_t)127;
    }
    ce = cudaMemcpy(d->arena, host, d->bytes, cudaMemcpyHostToDevice);
    free(host);
    free(table);
    if (ce != cudaSuccess) return ls_fail(err, LS_INTERNAL, "copying the weights to the device: %s", cudaGetErrorString(ce));
    return LS_OK;
}

void dev_weights_free(dev_weights *d)
{
    if (d->arena) cudaFree(d->arena);
    free(d->layers);
    memset(d, 0, sizeof *d);
}
