/* model_gen.h: the directories it writes load back through model_config_load and st_open with the
 * exact HF names, shapes and dtypes; the config text looks like transformers' (sorted keys, Python
 * float spelling); the output is deterministic and independent of dtype and sharding; the index
 * maps every tensor to the shard that holds it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/json.h"
#include "common/model_gen.h"
#include "common/safetensors.h"
#include "tests/tap.h"

static char root[64];

static void rm_dir(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) TAP_DIAG("could not remove %s", dir);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

static model_gen_opts small_opts(void)
{
    model_gen_opts o = model_gen_demo_opts(67);
    o.cfg.hidden_size = 32;
    o.cfg.intermediate_size = 48;
    o.cfg.n_layers = 2;
    o.cfg.head_dim = 8;
    o.seed = 7;
    return o;
}

static void gen(const char *name, const model_gen_opts *o, char *dir)
{
    snprintf(dir, 128, "%s/%s", root, name);
    ls_error err = { 0 };
    ls_status rc = model_gen_write(dir, o, &err);
    TAP_OK(rc == LS_OK, "generate %s %s", name, err.msg);
}

static void test_demo_round_trip(void)
{
    model_gen_opts o = model_gen_demo_opts(300);
    char dir[128];
    gen("demo", &o, dir);
    model_config m;
    ls_error err = { 0 };
    TAP_OK(model_config_load(&m, dir, &err) == LS_OK, "demo config loads %s", err.msg);
    TAP_OK(m.vocab_size == 300 && m.hidden_size == 128 && m.intermediate_size == 344 && m.n_layers == 4 &&
           m.n_heads == 4 && m.n_kv_heads == 2 && m.head_dim == 32 && m.max_position == 1024 &&
           m.rms_eps == o.cfg.rms_eps && m.rope_theta == 10000.0f && m.bos_token_id == 1 && m.n_eos == 1 &&
           m.eos_token_ids[0] == 2 && !m.tie_word_embeddings && !strcmp(m.torch_dtype, "float32"),
           "demo config round trips");
    char path[256];
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = slurp(path, &len);
    TAP_OK(text && !strncmp(text, "{\n  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],", 50) &&
           strstr(text, "\"rms_norm_eps\": 1e-05,") && strstr(text, "\"rope_theta\": 10000.0,") &&
           strstr(text, "\"rope_scaling\": null,") && strstr(text, "\"torch_dtype\": \"float32\","),
           "config.json reads like transformers' output");
    TAP_OK(text && strstr(text, "\"attention_bias\"") < strstr(text, "\"vocab_size\""), "keys sorted");
    free(text);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file *f = NULL;
    TAP_OK(st_open(&f, path, &err) == LS_OK && st_count(f) == (size_t)model_tensor_count(&m), "all tensors written");
    int names_ok = 1;
    for (int i = 0; f && i < model_tensor_count(&m); i++) {
        model_tensor t = model_tensor_at(&m, i);
        const st_tensor *s = st_find(f, t.name);
        names_ok &= s && s->dtype == ST_F32 && s->n_dims == t.n_dims && s->shape[0] == t.shape[0] &&
                    (t.n_dims == 1 || s->shape[1] == t.shape[1]);
    }
    TAP_OK(names_ok, "HF names, shapes and dtype");
    const st_tensor *q = f ? st_find(f, "model.layers.0.self_attn.q_proj.weight") : NULL;
    const st_tensor *n = f ? st_find(f, "model.layers.3.post_attention_layernorm.weight") : NULL;
    double sum = 0, sq = 0, nsum = 0;
    for (size_t i = 0; q && i < q->numel; i++) { float v; st_to_f32(&v, q, i, 1); sum += v; sq += v * v; }
    for (size_t i = 0; n && i < n->numel; i++) { float v; st_to_f32(&v, n, i, 1); nsum += v; }
    double mean = q ? sum / q->numel : 1, sd = q ? sqrt(sq / q->numel - mean * mean) : 0;
    // 16384 draws: the sample std is within ~1% of the true one, the mean within ~0.001.
    TAP_OK(fabs(mean) < 0.005 && fabs(sd - 0.1) < 0.005, "weights ~ N(0, 0.1): mean %.4f std %.4f", mean, sd);
    TAP_OK(n && fabs(nsum / n->numel - 1.0) < 0.05, "norms ~ 1 + N(0, std)");
    st_close(f);
}

static void test_configs(void)
{
    model_gen_opts o = small_opts();
    o.cfg.rope_scaling = ROPE_SCALING_LLAMA3;
    o.cfg.rope_factor = 8;
    o.cfg.rope_low_freq_factor = 1;
    o.cfg.rope_high_freq_factor = 4;
    o.cfg.rope_original_max_position = 64;
    o.cfg.rope_theta = 500000;
    o.cfg.n_eos = 3;
    o.cfg.eos_token_ids[1] = 5;
    o.cfg.eos_token_ids[2] = 6;
    char dir[128];
    gen("llama3", &o, dir);
    model_config m;
    ls_error err = { 0 };
    TAP_OK(model_config_load(&m, dir, &err) == LS_OK && m.rope_scaling == ROPE_SCALING_LLAMA3 && m.rope_factor == 8 &&
           m.rope_high_freq_factor == 4 && m.rope_original_max_position == 64 && m.rope_theta == 500000 &&
           m.n_eos == 3 && m.eos_token_ids[2] == 6, "llama3 rope and eos list round trip %s", err.msg);
    o = small_opts();
    snprintf(o.cfg.architecture, sizeof o.cfg.architecture, "MistralForCausalLM");
    o.cfg.sliding_window = 16;
    gen("mistral", &o, dir);
    TAP_OK(model_config_load(&m, dir, &err) == LS_OK && !strcmp(m.architecture, "MistralForCausalLM") &&
           m.sliding_window == 16 && m.n_kv_heads == 2, "mistral round trip %s", err.msg);
    o.cfg.sliding_window = 0;
    gen("mistral_full", &o, dir);
    TAP_OK(model_config_load(&m, dir, &err) == LS_OK && m.sliding_window == 0, "mistral without window");
}

static int same_file(const char *a, const char *b)
{
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = x && y && la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return same;
}

static void test_determinism_and_dtypes(void)
{
    model_gen_opts o = small_opts();
    char d1[128], d2[128], d16[128], dbf[128], p1[256], p2[256];
    gen("det1", &o, d1);
    gen("det2", &o, d2);
    snprintf(p1, sizeof p1, "%s/model.safetensors", d1);
    snprintf(p2, sizeof p2, "%s/model.safetensors", d2);
    TAP_OK(same_file(p1, p2), "same seed, same bytes");
    o.dtype = "float16";
    gen("f16", &o, d16);
    o.dtype = "bfloat16";
    gen("bf16", &o, dbf);
    st_file *f32 = NULL, *f16 = NULL, *fbf = NULL;
    ls_error err = { 0 };
    snprintf(p2, sizeof p2, "%s/model.safetensors", d16);
    st_open(&f32, p1, &err);
    st_open(&f16, p2, &err);
    snprintf(p2, sizeof p2, "%s/model.safetensors", dbf);
    st_open(&fbf, p2, &err);
    int ok = f32 && f16 && fbf;
    for (size_t i = 0; ok && i < st_count(f32); i++) {
        const st_tensor *a = st_at(f32, i), *h = st_find(f16, a->name), *b = st_find(fbf, a->name);
        ok = h && b && h->dtype == ST_F16 && b->dtype == ST_BF16;
        for (size_t k = 0; ok && k < a->numel; k++) {
            float x, y, z;
            st_to_f32(&x, a, k, 1);
            st_to_f32(&y, h, k, 1);
            st_to_f32(&z, b, k, 1);
            ok = y == st_f16_to_f32(st_f32_to_f16(x)) && z == st_bf16_to_f32(st_f32_to_bf16(x));
        }
    }
    TAP_OK(ok, "float16 / bfloat16 files hold the rounded float32 values");
    st_close(f32);
    st_close(f16);
    st_close(fbf);
}

static void test_shards(void)
{
    model_gen_opts o = small_opts();
    o.n_shards = 3;
    o.dtype = "bfloat16";
    char dir[128], path[256];
    gen("sharded", &o, dir);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    json_doc *idx = NULL;
    ls_error err = { 0 };
    TAP_OK(json_parse_file(&idx, path, 1 << 20, &err) == LS_OK, "index parses %s", err.msg);
    const json *map = json_get(json_root(idx), "weight_map");
    int64_t total = 0;
    json_get_int(json_get(json_root(idx), "metadata"), "total_size", 0, &total, &err);
    int n = model_tensor_count(&o.cfg), ok = map && map->len == (size_t)n;
    uint64_t bytes = 0;
    for (int i = 0; ok && i < n; i++) {
        model_tensor t = model_tensor_at(&o.cfg, i);
        const json *file = json_get(map, t.name);
        st_file *f = NULL;
        snprintf(path, sizeof path, "%s/%s", dir, file ? file->str : "?");
        ok = file && st_open(&f, path, &err) == LS_OK && st_find(f, t.name);
        if (ok) bytes += st_find(f, t.name)->nbytes;
        st_close(f);
    }
    TAP_OK(ok, "every tensor is in the shard the index names");
    TAP_OK(total > 0 && (uint64_t)total == bytes, "total_size %lld = sum of tensor bytes", (long long)total);
    snprintf(path, sizeof path, "%s/model-00003-of-00003.safetensors", dir);
    TAP_OK(access(path, F_OK) == 0, "shard names model-0000k-of-0000n.safetensors");
    json_free(idx);
}

static void test_rejects(void)
{
    ls_error err = { 0 };
    char dir[128];
    snprintf(dir, sizeof dir, "%s/bad", root);
    model_gen_opts o = small_opts();
    o.dtype = "int8";
    TAP_OK(model_gen_write(dir, &o, &err) == LS_INVALID_ARGUMENT && strstr(err.msg, "dtype"), "bad dtype: %s", err.msg);
    o = small_opts();
    o.n_shards = 0;
    TAP_OK(model_gen_write(dir, &o, &err) == LS_INVALID_ARGUMENT && strstr(err.msg, "n_shards"), "0 shards");
    o.n_shards = 1000;
    TAP_OK(model_gen_write(dir, &o, &err) == LS_INVALID_ARGUMENT && strstr(err.msg, "n_shards"), "too many shards");
    o = small_opts();
    o.cfg.n_kv_heads = 3;
    TAP_OK(model_gen_write(dir, &o, &err) == LS_INVALID_ARGUMENT && strstr(err.msg, "num_key_value_heads"),
           "invalid config: %s", err.msg);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/ls_test_gen_XXXXXX");
    if (!mkdtemp(root)) return 1;
    test_demo_round_trip();
    test_configs();
    test_determinism_and_dtypes();
    test_shards();
    test_rejects();
    rm_dir(root);
    return tap_done();
}
