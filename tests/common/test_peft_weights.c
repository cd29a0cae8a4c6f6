/* peft.h's tensor checks and shard reader: crafted adapter_model.safetensors files (wrong shapes, a
 * missing, extra, foreign or ".default." tensor, a layer past the base, a module the config does not
 * select, a wrong dtype) are refused naming the tensor (reliability.md §8 rows 19-20); peft_read_shard
 * at TP 1 and 2, every rank, with odd ranks (r 3 and 5 split unevenly over 2) and F32/F16/BF16 files
 * writes exactly the A and B^T slices of the dense tensors read back from the file, each element of A
 * and B exactly once over the ranks, and leaves page tails untouched. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/model_gen.h"
#include "common/peft.h"
#include "common/peft_gen.h"
#include "common/safetensors.h"
#include "tests/common/small_base.h"
#include "tests/tap.h"

#define POISON 0x7fc0deadu      // a NaN no converter produces: a float still holding it was not written

static char root[64];
static model_config base;

typedef struct tensor_list { st_spec s[64]; char names[64][160]; size_t n; } tensor_list;

/* The tensors a valid file has for adapter a (r 4 on q and v, from gen_qv). */
static void valid_list(tensor_list *t, const peft_adapter *a)
{
    t->n = 0;
    for (int l = 0; l < base.n_layers; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            int r = a->shape.rank[l * LORA_N_MODULES + m], in, out;
            if (!r) continue;
            lora_module_full_dims(&base, (lora_module)m, &in, &out);
            for (int b = 0; b < 2; b++, t->n++) {
                peft_tensor_name(t->names[t->n], sizeof t->names[0], l, (lora_module)m, b);
                t->s[t->n] = (st_spec){ .name = t->names[t->n], .dtype = ST_F32, .n_dims = 2,
                                        .shape = { b ? out : r, b ? r : in } };
            }
        }
}

static void add(tensor_list *t, const char *name, st_dtype dtype, int64_t d0, int64_t d1)
{
    snprintf(t->names[t->n], sizeof t->names[0], "%s", name);
    t->s[t->n] = (st_spec){ .name = t->names[t->n], .dtype = dtype, .n_dims = 2, .shape = { d0, d1 } };
    t->n++;
}

static void drop(tensor_list *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->names[i], name)) continue;
        for (size_t k = i + 1; k < t->n; k++) {
            memcpy(t->names[k - 1], t->names[k], sizeof t->names[0]);
            t->s[k - 1] = t->s[k];
            t->s[k - 1].name = t->names[k - 1];
        }
        t->n--;
        return;
    }
}

static st_spec *find(tensor_list *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->names[i], name)) return &t->s[i];
    return NULL;
}

/* Zero-filled file with exactly these tensors. */
static void write_list(const char *dir, const tensor_list *t)
{
    char path[320];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_writer *w = NULL;
    ls_error err = { 0 };
    static const unsigned char zeros[4096];
    if (st_writer_open(&w, path, t->s, t->n, &err)) { TAP_DIAG("write: %s", err.msg); return; }
    for (size_t i = 0; i < t->n; i++) {
        size_t n = 0;
        st_spec_nbytes(&t->s[i], &n);
        for (size_t k = 0; k < n; k += sizeof zeros)
            st_writer_put(w, zeros, n - k < sizeof zeros ? n - k : sizeof zeros, &err);
    }
    st_writer_close(w, &err);
}

static void expect_tensor_reject(const char *dir, const peft_adapter *a, const tensor_list *t, const char *label,
                                 ls_status code, const char *n1, const char *n2)
{
    ls_error err = { 0 };
    write_list(dir, t);
    ls_status rc = peft_check_tensors(a, &base, &err);
    TAP_OK(rc == code && strstr(err.msg, n1) && (!n2 || strstr(err.msg, n2)), "%s: %s -> %s %s", label,
           ls_status_name(code), ls_status_name(rc), err.msg);
}

static void test_tensor_refusals(void)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/crafted", root);
    peft_gen_opts o = peft_gen_default_opts();
    o.r = 4;
    o.target_mask = 1u << LORA_Q | 1u << LORA_V;
    peft_adapter a;
    ls_error err = { 0 };
    TAP_OK(peft_gen_write(dir, &base, &o, &err) == LS_OK && peft_read_config(&a, dir, &base, NULL, &err) == LS_OK,
           "crafted base adapter %s", err.msg);
    tensor_list t;
    valid_list(&t, &a);
    write_list(dir, &t);
    TAP_OK(peft_check_tensors(&a, &base, &err) == LS_OK, "zero-filled valid list accepted %s", err.msg);
    const char *q1a = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight";
    const char *v0b = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight";
    const char *v2b = "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight";

    find(&t, q1a)->shape[1] = 31;
    expect_tensor_reject(dir, &a, &t, "row 20: input width", LS_FAILED_PRECONDITION, q1a, "[4, 31], expected [4, 32]");
    valid_list(&t, &a);
    find(&t, v0b)->shape[1] = 5;
    expect_tensor_reject(dir, &a, &t, "row 20: rank dim", LS_INVALID_ARGUMENT, v0b, "[16, 5], expected [16, 4]");
    valid_list(&t, &a);
    st_spec *s = find(&t, q1a);
    s->n_dims = 3;
    s->shape[2] = 1;
    expect_tensor_reject(dir, &a, &t, "3-d tensor", LS_INVALID_ARGUMENT, q1a, "[4, 32, 1]");
    valid_list(&t, &a);
    find(&t, q1a)->dtype = ST_I32;
    expect_tensor_reject(dir, &a, &t, "dtype", LS_INVALID_ARGUMENT, q1a, "I32");

    valid_list(&t, &a);
    drop(&t, v2b);
    expect_tensor_reject(dir, &a, &t, "missing lora_B", LS_INVALID_ARGUMENT, "missing tensor", v2b);

    static const struct { const char *name, *why; ls_status code; } extra[] = {
        { "base_model.model.lm_head.lora_A.weight", "not a lora_A", LS_INVALID_ARGUMENT },
        { "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", ".default.", LS_INVALID_ARGUMENT },
        { "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight", "not a lora_A", LS_INVALID_ARGUMENT },
        { "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "not a lora_A", LS_INVALID_ARGUMENT },
        { "base_model.model.model.layers.00.self_attn.q_proj.lora_A.weight", "not a lora_A", LS_INVALID_ARGUMENT },
        { "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", "not selected", LS_INVALID_ARGUMENT },
        { "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", "layer 3 >= num_hidden_layers 3",
          LS_FAILED_PRECONDITION },
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        valid_list(&t, &a);
        add(&t, extra[i].name, ST_F32, 4, 32);
        expect_tensor_reject(dir, &a, &t, "row 19: extra tensor", extra[i].code, extra[i].name, extra[i].why);
    }
    valid_list(&t, &a);
    add(&t, extra[0].name, ST_F32, 4, 32);
    add(&t, extra[1].name, ST_F32, 4, 32);
    expect_tensor_reject(dir, &a, &t, "row 19: several extras are listed", LS_INVALID_ARGUMENT, extra[0].name,
                         extra[1].name);

    // A worker re-checks: a bad file never reaches dst.
    size_t pf = 64, n = (size_t)lora_layout_walk(&base, &a.shape, 0, 1, pf, NULL, NULL) * pf;
    float *dst = malloc(n * sizeof *dst);
    for (size_t i = 0; i < n; i++) memcpy(&dst[i], &(uint32_t){ POISON }, 4);
    ls_status rc = peft_read_shard(&a, &base, 0, 1, pf, dst, &err);
    int untouched = 1;
    for (size_t i = 0; i < n; i++) untouched &= !memcmp(&dst[i], &(uint32_t){ POISON }, 4);
    TAP_OK(rc == LS_INVALID_ARGUMENT && untouched, "read_shard refuses a bad file, dst untouched: %s", err.msg);
    TAP_OK(peft_read_shard(&a, &base, 0, 3, pf, dst, &err) == LS_INVALID_ARGUMENT, "tp 3 does not split: %s", err.msg);
    TAP_OK(peft_read_shard(&a, &base, 0, 1, 20, dst, &err) == LS_INVALID_ARGUMENT, "rows wider than a page: %s",
           err.msg);
    free(dst);
    peft_adapter_free(&a);
}

typedef struct verify {
    st_file *f;
    const peft_adapter *a;
    int t, T;
    size_t pf;
    const float *dst;
    unsigned char *written;     // per float of dst
    int *cover[3][LORA_N_MODULES][2];   // times each element of A / B was delivered, over the ranks
    int bad;
} verify;

static float elem(const st_tensor *t, size_t i)
{
    float v;
    st_to_f32(&v, t, i, 1);
    return v;
}

static void check_row(void *ctx, int l, lora_module m, int is_b, int row, int page, size_t off, int len)
{
    verify *v = ctx;
    int r = v->a->shape.rank[l * LORA_N_MODULES + m], in, out;
    lora_module_full_dims(&base, m, &in, &out);
    lora_module_dims d = lora_module_shard(&base, m, r, v->t, v->T);
    char name[160];
    peft_tensor_name(name, sizeof name, l, m, is_b);
    const st_tensor *t = st_find(v->f, name);
    int col_split = m != LORA_O && m != LORA_DOWN;
    // Expected row widths from the TP rules alone: A full or in/T wide, B^T out/T wide (row-split: its slice).
    int want_len = is_b ? d.out_local : (col_split ? in : in / v->T);
    if (len != want_len || (is_b && col_split && len != out / v->T)) v->bad++;
    for (int j = 0; j < len && t; j++) {
        size_t idx = is_b ? (size_t)(d.out_offset + j) * (size_t)r + (size_t)row
                          : (size_t)(d.a_rank0 + row) * (size_t)in + (size_t)(col_split ? j : v->t * (in / v->T) + j);
        float want = elem(t, idx), got = v->dst[(size_t)page * v->pf + off + (size_t)j];
        if (memcmp(&want, &got, 4)) v->bad++;
        v->cover[l][m][is_b][idx]++;
        v->written[(size_t)page * v->pf + off + (size_t)j] = 1;
    }
}

/* Reads every rank's shard and checks it element by element against the dense tensors. */
static void check_shards(const char *label, const char *dir, int T)
{
    peft_adapter a;
    ls_error err = { 0 };
    verify v = { .a = &a, .T = T, .pf = 100 };
    ls_status rc = peft_read_config(&a, dir, &base, NULL, &err);
    char path[320];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (!rc) rc = st_open(&v.f, path, &err);
    for (int l = 0; !rc && l < 3; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            int r = a.shape.rank[l * LORA_N_MODULES + m], in, out;
            lora_module_full_dims(&base, (lora_module)m, &in, &out);
            v.cover[l][m][0] = calloc((size_t)(r * in) + 1, sizeof(int));
            v.cover[l][m][1] = calloc((size_t)(r * out) + 1, sizeof(int));
        }
    int tails_ok = 1;
    for (v.t = 0; !rc && v.t < T; v.t++) {
        int pages = lora_layout_walk(&base, &a.shape, v.t, T, v.pf, NULL, NULL);
        size_t n = (size_t)pages * v.pf;
        float *dst = malloc(n * sizeof *dst);
        for (size_t i = 0; i < n; i++) memcpy(&dst[i], &(uint32_t){ POISON }, 4);
        v.written = calloc(n, 1);
        v.dst = dst;
        rc = peft_read_shard(&a, &base, v.t, T, v.pf, dst, &err);
        if (!rc) lora_layout_walk(&base, &a.shape, v.t, T, v.pf, check_row, &v);
        for (size_t i = 0; i < n; i++)
            if (!v.written[i]) tails_ok &= !memcmp(&dst[i], &(uint32_t){ POISON }, 4);
        free(dst);
        free(v.written);
    }
    int covered = 1;
    for (int l = 0; l < 3; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            int r = rc ? 0 : a.shape.rank[l * LORA_N_MODULES + m], in, out;
            lora_module_full_dims(&base, (lora_module)m, &in, &out);
            for (int i = 0; i < r * in; i++) covered &= v.cover[l][m][0][i] == 1;
            for (int i = 0; i < r * out; i++) covered &= v.cover[l][m][1][i] == 1;
            free(v.cover[l][m][0]);
            free(v.cover[l][m][1]);
        }
    TAP_OK(rc == LS_OK && !v.bad && covered && tails_ok, "%s tp %d: rows exact (%d bad), every element once (%d), "
           "tails untouched (%d) %s", label, T, v.bad, covered, tails_ok, rc ? err.msg : "");
    st_close(v.f);
    peft_adapter_free(&a);
}

/* peft_read_shard16 (the device pools' reader) against peft_read_shard then rounding, bit for bit, for
 * both 16-bit targets; page tails stay as they were. */
static void check_shards16(const char *label, const char *dir, int T)
{
    peft_adapter a;
    ls_error err = { 0 };
    const size_t pf = 100;
    ls_status rc = peft_read_config(&a, dir, &base, NULL, &err);
    size_t bad = 0;
    for (int t = 0; !rc && t < T; t++)
        for (int bf16 = 0; bf16 < 2 && !rc; bf16++) {
            size_t n = (size_t)lora_layout_walk(&base, &a.shape, t, T, pf, NULL, NULL) * pf;
            float *ref = calloc(n, sizeof *ref);
            uint16_t *got = malloc(n * sizeof *got);
            memset(got, 0, n * sizeof *got);
            rc = peft_read_shard(&a, &base, t, T, pf, ref, &err);
            if (!rc) rc = peft_read_shard16(&a, &base, t, T, pf, bf16, got, &err);
            for (size_t i = 0; !rc && i < n; i++)
                bad += got[i] != (bf16 ? st_f32_to_bf16(ref[i]) : st_f32_to_f16(ref[i]));
            free(ref);
            free(got);
        }
    TAP_OK(rc == LS_OK && bad == 0, "%s tp %d: 16-bit reader equals fp32 reader + rounding (f16 and bf16; %zu "
           "differ) %s", label, T, bad, rc ? err.msg : "");
    peft_adapter_free(&a);
}

static void test_shards(void)
{
    static const char *const dtypes[] = { "float32", "float16", "bfloat16" };
    peft_gen_pattern rp[] = { { "q_proj", 5 }, { "down_proj", 2 }, { "model.layers.1.self_attn.k_proj", 1 } };
    for (int i = 0; i < 3; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "%s/shard_%s", root, dtypes[i]);
        peft_gen_opts o = peft_gen_default_opts();
        o.r = 3;                // odd: the column-split A rows divide unevenly over TP 2
        o.rank_pattern = rp;
        o.n_rank_pattern = 3;
        o.dtype = dtypes[i];
        o.seed = 100 + (uint64_t)i;
        o.init_std = 0.5f;
        ls_error err = { 0 };
        TAP_OK(peft_gen_write(dir, &base, &o, &err) == LS_OK, "generate %s %s", dtypes[i], err.msg);
        check_shards(dtypes[i], dir, 1);
        check_shards(dtypes[i], dir, 2);
        check_shards16(dtypes[i], dir, 1);
        check_shards16(dtypes[i], dir, 2);
    }
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/test_peft_w.XXXXXX");
    if (!mkdtemp(root)) TAP_SKIP_ALL("no temporary directory");
    base = small_base();
    test_tensor_refusals();
    test_shards();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd)) TAP_DIAG("could not remove %s", root);
    return tap_done();
}
