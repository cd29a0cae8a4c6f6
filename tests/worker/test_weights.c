/* worker/weights.h: generated models (1 and 3 shards; float32, float16, bfloat16; tied and untied)
 * load with tp_size 1 and 2, every rank's tensor is exactly the Megatron slice of the full tensor,
 * values equal the generator's after dtype rounding, and malformed directories fail with
 * INVALID_ARGUMENT naming the file and the tensor. The slicing is re-derived here from the HF layout
 * ([out, in] row-major, heads contiguous in rows) rather than taken from weights.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/model_gen.h"
#include "common/safetensors.h"
#include "tests/tap.h"
#include "worker/weights.h"

static char root[64];

static model_gen_opts small_opts(const char *dtype, int shards, int tied)
{
    model_gen_opts o = model_gen_demo_opts(67);     // odd vocab: the last lm_head shard takes one more row
    o.cfg.hidden_size = 32;
    o.cfg.intermediate_size = 48;
    o.cfg.n_layers = 2;
    o.cfg.head_dim = 8;
    o.cfg.tie_word_embeddings = tied;
    o.dtype = dtype;
    o.n_shards = shards;
    o.seed = 11;
    return o;
}

static void gen(char *dir, const char *name, const model_gen_opts *o)
{
    snprintf(dir, 128, "%s/%s", root, name);
    ls_error err = { 0 };
    if (model_gen_write(dir, o, &err)) TAP_DIAG("generate %s: %s", name, err.msg);
}

/* rows [r0, r0 + n) of a row-major (R, C) matrix, columns [c0, c0 + nc). */
static int same_block(const float *full, int64_t C, int64_t r0, int64_t n, int64_t c0, int64_t nc, const float *part)
{
    for (int64_t r = 0; r < n; r++)
        if (memcmp(full + (r0 + r) * C + c0, part + r * nc, (size_t)nc * sizeof *part)) return 0;
    return 1;
}

static int check_rank(const model_weights *full, const model_weights *s, int t)
{
    const model_config *c = &full->cfg;
    int64_t H = c->hidden_size, hd = c->head_dim, Q = (int64_t)c->n_heads * hd, KV = (int64_t)c->n_kv_heads * hd;
    int64_t q = Q / 2, kv = KV / 2, I = c->intermediate_size / 2, V = c->vocab_size, v0 = t * (V / 2);
    int64_t vn = t ? V - V / 2 : V / 2;
    int ok = s->n_heads_local == c->n_heads / 2 && s->n_kv_heads_local == c->n_kv_heads / 2 &&
             s->inter_local == I && s->vocab_start == v0 && s->vocab_local == vn;
    ok &= same_block(full->embed, H, 0, V, 0, H, s->embed) && same_block(full->final_norm, H, 0, 1, 0, H, s->final_norm);
    ok &= same_block(full->lm_head, H, v0, vn, 0, H, s->lm_head);
    for (int l = 0; ok && l < c->n_layers; l++) {
        const layer_weights *f = &full->layers[l], *p = &s->layers[l];
        ok &= same_block(f->attn_norm, H, 0, 1, 0, H, p->attn_norm) && same_block(f->mlp_norm, H, 0, 1, 0, H, p->mlp_norm);
        ok &= same_block(f->wq, H, t * q, q, 0, H, p->wq) && same_block(f->wk, H, t * kv, kv, 0, H, p->wk) &&
              same_block(f->wv, H, t * kv, kv, 0, H, p->wv) && same_block(f->wo, Q, 0, H, t * q, q, p->wo);
        ok &= same_block(f->w_gate, H, t * I, I, 0, H, p->w_gate) && same_block(f->w_up, H, t * I, I, 0, H, p->w_up) &&
              same_block(f->w_down, 2 * I, 0, H, t * I, I, p->w_down);
    }
    return ok;
}

static float round_to(const char *dtype, float x)
{
    if (!strcmp(dtype, "float16")) return st_f16_to_f32(st_f32_to_f16(x));
    if (!strcmp(dtype, "bfloat16")) return st_bf16_to_f32(st_f32_to_bf16(x));
    return x;
}

/* The full (tp 1) load equals the float32 reference rounded to the file dtype, tensor by tensor. */
static int check_values(const model_weights *w, const model_weights *ref, const char *dtype)
{
    if (w->arena_floats != ref->arena_floats) return 0;
    for (size_t i = 0; i < w->arena_floats; i++)
        if (w->arena[i] != round_to(dtype, ref->arena[i])) return 0;
    return 1;
}

static void test_round_trips(void)
{
    static const char *dtypes[] = { "float32", "float16", "bfloat16" };
    char dir[128];
    ls_error err = { 0 };
    for (int tied = 0; tied <= 1; tied++) {
        model_weights ref;
        model_gen_opts o = small_opts("float32", 1, tied);
        gen(dir, tied ? "ref_tied" : "ref", &o);
        TAP_OK(model_weights_load(&ref, dir, 0, 1, &err) == LS_OK, "reference loads %s", err.msg);
        TAP_OK(!tied || !memcmp(ref.lm_head, ref.embed, (size_t)67 * 32 * 4), "tied lm_head = embed_tokens");
        for (int d = 0; d < 3; d++)
            for (int shards = 1; shards <= 3; shards += 2) {
                char name[64];
                snprintf(name, sizeof name, "%s_%d_%d", dtypes[d], shards, tied);
                o = small_opts(dtypes[d], shards, tied);
                gen(dir, name, &o);
                model_weights full, r0, r1;
                ls_status rc = model_weights_load(&full, dir, 0, 1, &err);
                TAP_OK(rc == LS_OK && check_values(&full, &ref, dtypes[d]), "%s: tp1 values %s", name, err.msg);
                rc = model_weights_load(&r0, dir, 0, 2, &err);
                if (!rc) rc = model_weights_load(&r1, dir, 1, 2, &err);
                TAP_OK(rc == LS_OK && check_rank(&full, &r0, 0) && check_rank(&full, &r1, 1),
                       "%s: tp2 ranks hold the Megatron slices %s", name, err.msg);
                TAP_OK(r0.arena_floats + r1.arena_floats < 2 * full.arena_floats, "%s: shards are smaller", name);
                model_weights_free(&full);
                model_weights_free(&r0);
                model_weights_free(&r1);
            }
        model_weights_free(&ref);
    }
}

static void expect_fail(const char *dir, int rank, int size, const char *n1, const char *n2, const char *label)
{
    model_weights w;
    ls_error err = { 0 };
    ls_status rc = model_weights_load(&w, dir, rank, size, &err);
    TAP_OK(rc == LS_INVALID_ARGUMENT && strstr(err.msg, n1) && (!n2 || strstr(err.msg, n2)) && !w.arena,
           "%s -> %s", label, err.msg);
}

static void replace_in_file(const char *path, const char *from, const char *to)
{
    FILE *f = fopen(path, "rb");
    char buf[1 << 14];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *at = strstr(buf, from), out[1 << 14];
    if (!at) { TAP_DIAG("%s not in %s", from, path); return; }
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - buf), buf, to, at + strlen(from));
    f = fopen(path, "wb");
    fputs(out, f);
    fclose(f);
}

static const char *in_dir(char *path, const char *dir, const char *file)
{
    snprintf(path, 256, "%s/%s", dir, file);
    return path;
}

static void test_malformed(void)
{
    char dir[128], path[256];
    model_gen_opts o = small_opts("float32", 3, 0);
    gen(dir, "missing_shard", &o);
    unlink(in_dir(path, dir, "model-00002-of-00003.safetensors"));
    expect_fail(dir, 0, 1, "model-00002-of-00003.safetensors", "No such file", "missing shard");

    o = small_opts("float16", 1, 0);
    gen(dir, "truncated", &o);
    if (truncate(in_dir(path, dir, "model.safetensors"), 4000)) TAP_DIAG("truncate failed");
    expect_fail(dir, 0, 1, "model.safetensors", "incomplete buffer", "truncated file");

    gen(dir, "wrong_shape", &o);
    replace_in_file(in_dir(path, dir, "config.json"), "\"intermediate_size\": 48", "\"intermediate_size\": 40");
    expect_fail(dir, 0, 1, "model.layers.0.mlp.gate_proj.weight", "shape [48, 32], config.json needs [40, 32]",
                "wrong shape");

    gen(dir, "bad_config", &o);
    replace_in_file(in_dir(path, dir, "config.json"), "\"hidden_act\": \"silu\"", "\"hidden_act\": silu");
    expect_fail(dir, 0, 1, "config.json", "json", "bad config.json");

    o = small_opts("float32", 1, 1);
    gen(dir, "tied_file", &o);
    replace_in_file(in_dir(path, dir, "config.json"), "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    expect_fail(dir, 0, 1, "lm_head.weight", "missing", "config untied, file tied");

    o = small_opts("bfloat16", 3, 0);
    gen(dir, "index_missing", &o);
    replace_in_file(in_dir(path, dir, "model.safetensors.index.json"), "\"model.norm.weight\"",
                    "\"model.norm.weight.renamed\"");
    expect_fail(dir, 0, 1, "model.norm.weight", "missing from weight_map", "index lacks a tensor");

    gen(dir, "index_escape", &o);
    replace_in_file(in_dir(path, dir, "model.safetensors.index.json"), "\"model.norm.weight\": \"",
                    "\"model.norm.weight\": \"../");
    expect_fail(dir, 0, 1, "model.norm.weight", "bad shard file name", "index escapes the directory");

    gen(dir, "no_weights", &o);
    unlink(in_dir(path, dir, "model.safetensors.index.json"));
    expect_fail(dir, 0, 1, "no model.safetensors", NULL, "no weights at all");

    o = small_opts("float32", 1, 0);
    gen(dir, "tp4", &o);
    expect_fail(dir, 0, 4, "num_key_value_heads 2 is not divisible by tp_size 4", NULL, "tp 4 with 2 kv heads");
    expect_fail(dir, 2, 2, "tp_rank 2", NULL, "rank out of range");
}

/* A file whose embed_tokens is I32: right bytes, wrong dtype. */
static void test_wrong_dtype(void)
{
    char dir[128], path[256];
    model_gen_opts o = small_opts("float32", 1, 0);
    gen(dir, "wrong_dtype", &o);
    int n = model_tensor_count(&o.cfg);
    model_tensor *ts = calloc((size_t)n, sizeof *ts);
    st_spec *specs = calloc((size_t)n, sizeof *specs);
    const void **data = calloc((size_t)n, sizeof *data);
    static float zeros[67 * 48];
    for (int i = 0; i < n; i++) {
        ts[i] = model_tensor_at(&o.cfg, i);
        specs[i] = (st_spec){ ts[i].name, i == 0 ? ST_I32 : ST_F32, ts[i].n_dims, { ts[i].shape[0], ts[i].shape[1] } };
        data[i] = zeros;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ls_error err = { 0 };
    if (st_write(path, specs, data, (size_t)n, &err)) TAP_DIAG("st_write: %s", err.msg);
    expect_fail(dir, 0, 1, "model.embed_tokens.weight", "dtype I32", "wrong dtype");
    free(ts);
    free(specs);
    free(data);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/ls_test_weights_XXXXXX");
    if (!mkdtemp(root)) return 1;
    test_round_trips();
    test_malformed();
    test_wrong_dtype();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd)) TAP_DIAG("could not remove %s", root);
    return tap_done();
}
