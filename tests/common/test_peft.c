/* peft.h's adapter_config.json rules and name resolution: scales (alpha/r, rsLoRA alpha/sqrt(r)),
 * rank_pattern / alpha_pattern with PEFT's `(.*\.)?(key)$` first-match rule, layers_to_transform (int,
 * list, exact-path bypass), target_modules as a list, a regex, "all-linear" or absent, exclude_modules;
 * every refusal of reliability.md §8 rows 14-18, 21-23 with its code and the field in the message; the
 * Python-regex translation; and peft_gen's directories (PEFT's layout, deterministic, nested names).
 * Tensors and shards are in test_peft_weights.c. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json.h"
#include "common/model_gen.h"
#include "common/peft.h"
#include "common/peft_gen.h"
#include "common/py_regex.h"
#include "tests/common/small_base.h"
#include "tests/tap.h"

static char root[64];
static model_config base;

static int rank_of(const peft_adapter *a, int l, lora_module m) { return a->shape.rank[l * LORA_N_MODULES + m]; }
static float scale_of(const peft_adapter *a, int l, lora_module m) { return a->shape.scale[l * LORA_N_MODULES + m]; }

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) { TAP_DIAG("cannot write %s", path); return; }
    fputs(text, f);
    fclose(f);
}

static void rm_rf(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) TAP_DIAG("could not remove %s", dir);
}

/* A directory with this config and an empty weights file (peft_read_config only looks for it). */
static ls_status load_text(const char *name, const char *text, peft_adapter *a, const peft_opts *o, ls_error *err)
{
    char dir[256], path[320];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    write_text(path, text);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    write_text(path, "");
    return peft_read_config(a, dir, &base, o, err);
}

#define CFG(...) "{\"peft_type\": \"LORA\", " __VA_ARGS__ "}"

static void expect_reject(const char *name, const char *text, ls_status code, const char *needle)
{
    peft_adapter a;
    ls_error err = { 0 };
    ls_status rc = load_text(name, text, &a, NULL, &err);
    TAP_OK(rc == code && strstr(err.msg, needle) && !a.shape.rank, "%s: %s %s -> %s: %s", name,
           ls_status_name(code), needle, ls_status_name(rc), err.msg);
    peft_adapter_free(&a);
}

/* Loads text and compares every (layer, module) rank with want[l][m] (and its scale when scale_of_r). */
static void expect_ranks(const char *name, const char *text, const int want[3][LORA_N_MODULES], double alpha,
                         int rslora)
{
    peft_adapter a;
    ls_error err = { 0 };
    ls_status rc = load_text(name, text, &a, NULL, &err);
    int ok = rc == LS_OK, max = 0;
    for (int l = 0; ok && l < 3; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            int r = want[l][m];
            double s = r ? (rslora ? alpha / sqrt(r) : alpha / r) : 0;
            if (rank_of(&a, l, m) != r || (alpha > 0 && scale_of(&a, l, m) != (float)s)) {
                TAP_DIAG("%s: layer %d %s rank %d scale %g, want %d %g", name, l, lora_module_name(m),
                         rank_of(&a, l, m), (double)scale_of(&a, l, m), r, s);
                ok = 0;
            }
            if (r > max) max = r;
        }
    TAP_OK(ok && a.shape.max_rank == max, "%s: ranks%s%s", name, rc ? " " : "", rc ? err.msg : "");
    peft_adapter_free(&a);
}

static void fill(int want[3][LORA_N_MODULES], unsigned mask, int r)
{
    for (int l = 0; l < 3; l++)
        for (int m = 0; m < LORA_N_MODULES; m++) want[l][m] = (mask >> m & 1u) ? r : 0;
}

static void test_scales(void)
{
    int w[3][LORA_N_MODULES];
    fill(w, 1u << LORA_Q | 1u << LORA_DOWN, 4);
    expect_ranks("scale", CFG("\"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\", \"down_proj\"]"), w, 8, 0);
    fill(w, 1u << LORA_Q, 16);
    expect_ranks("rslora", CFG("\"r\": 16, \"lora_alpha\": 8.0, \"use_rslora\": true, \"target_modules\": "
                               "[\"q_proj\"]"), w, 8, 1);
    fill(w, 1u << LORA_V, 9);
    expect_ranks("rslora r 9", CFG("\"r\": 9, \"lora_alpha\": 3, \"use_rslora\": true, \"target_modules\": "
                                   "[\"v_proj\"]"), w, 3, 1);
    fill(w, 1u << LORA_Q | 1u << LORA_V, 8);
    expect_ranks("PEFT defaults: r 8, alpha 8, q and v", CFG("\"bias\": \"none\""), w, 8, 0);
    expect_ranks("ignored fields", CFG("\"lora_dropout\": 0.1, \"init_lora_weights\": \"gaussian\", \"task_type\": "
                                       "\"CAUSAL_LM\", \"inference_mode\": false, \"revision\": \"main\", "
                                       "\"some_future_key\": {\"x\": [1]}, \"use_dora\": false, "
                                       "\"modules_to_save\": [], \"loftq_config\": {}"), w, 8, 0);
}

static void test_patterns(void)
{
    int w[3][LORA_N_MODULES];
    fill(w, PEFT_GEN_ALL_MODULES, 8);
    for (int l = 0; l < 3; l++) w[l][LORA_Q] = 4;
    w[1][LORA_DOWN] = 2;
    w[2][LORA_K] = 3;
    // "proj" must not match "q_proj" (needs a '.' boundary); \d is translated.
    expect_ranks("rank_pattern", CFG("\"r\": 8, \"lora_alpha\": 16, \"target_modules\": \"all-linear\", "
                                     "\"rank_pattern\": {\"q_proj\": 4, \"model.layers.1.mlp.down_proj\": 2, "
                                     "\"proj\": 1, \"layers\\\\.[2-9]\\\\d*\\\\.self_attn\\\\.k_proj\": 3}"), w, 16, 0);
    peft_adapter a;
    ls_error err = { 0 };
    ls_status rc = load_text("alpha_pattern", CFG("\"r\": 8, \"lora_alpha\": 16, \"target_modules\": [\"q_proj\", "
                             "\"v_proj\"], \"rank_pattern\": {\"v_proj\": 4}, \"alpha_pattern\": {\"v_proj\": 2.0, "
                             "\"model.layers.0.self_attn.q_proj\": 64}"), &a, NULL, &err);
    TAP_OK(rc == LS_OK && scale_of(&a, 0, LORA_Q) == 8.0f && scale_of(&a, 1, LORA_Q) == 2.0f &&
           scale_of(&a, 2, LORA_V) == 0.5f && rank_of(&a, 2, LORA_V) == 4, "alpha_pattern per module %s", err.msg);
    TAP_OK(a.n_params == 3 * (8 * (32 + 32) + 4 * (32 + 16)), "n_params %zu", a.n_params);
    peft_adapter_free(&a);
    // PEFT takes the first key that matches, in file order.
    load_text("first key wins", CFG("\"r\": 8, \"target_modules\": [\"q_proj\"], \"rank_pattern\": "
              "{\"q_proj\": 4, \"model.layers.0.self_attn.q_proj\": 2}"), &a, NULL, &err);
    TAP_OK(rank_of(&a, 0, LORA_Q) == 4 && rank_of(&a, 2, LORA_Q) == 4, "first key wins (general first)");
    peft_adapter_free(&a);
    load_text("first key wins 2", CFG("\"r\": 8, \"target_modules\": [\"q_proj\"], \"rank_pattern\": "
              "{\"model.layers.0.self_attn.q_proj\": 2, \"q_proj\": 4}"), &a, NULL, &err);
    TAP_OK(rank_of(&a, 0, LORA_Q) == 2 && rank_of(&a, 2, LORA_Q) == 4, "first key wins (specific first)");
    peft_adapter_free(&a);
}

static void test_targets(void)
{
    int w[3][LORA_N_MODULES];
    fill(w, PEFT_GEN_ALL_MODULES, 2);
    expect_ranks("all-linear any case", CFG("\"r\": 2, \"target_modules\": \"ALL-Linear\""), w, 0, 0);
    fill(w, 1u << LORA_Q | 1u << LORA_K, 2);
    expect_ranks("regex", CFG("\"r\": 2, \"target_modules\": \".*\\\\.(q|k)_proj\""), w, 0, 0);
    expect_ranks("regex with (?:) and lazy", CFG("\"r\": 2, \"target_modules\": \"model\\\\.layers\\\\.\\\\d+?\\\\."
                                                 "(?:self_attn)\\\\.[qk]_proj\""), w, 0, 0);
    fill(w, 0, 0);
    w[0][LORA_GATE] = w[0][LORA_UP] = w[2][LORA_GATE] = w[2][LORA_UP] = 2;
    expect_ranks("regex on layers", CFG("\"r\": 2, \"target_modules\": \"model\\\\.layers\\\\.[02]\\\\.mlp\\\\."
                                        "(gate|up)_proj\""), w, 0, 0);
    // Unsloth's target_modules string: the language-model half of a multimodal pattern (never matches a
    // Llama path here: no "language"/"text") or model.layers.N.<attn|mlp>.<proj> behind a \b.
    fill(w, PEFT_GEN_ALL_MODULES, 2);
    expect_ranks("Unsloth target_modules", CFG("\"r\": 2, \"target_modules\": \"(?:.*?(?:language|text).*?(?:self_attn|"
                 "attention|attn|mlp|feed_forward|ffn|dense).*?(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|"
                 "down_proj).*?)|(?:\\\\bmodel\\\\.layers\\\\.[\\\\d]{1,}\\\\.(?:self_attn|attention|attn|mlp|"
                 "feed_forward|ffn|dense)\\\\.(?:(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)))\""),
                 w, 0, 0);
    fill(w, PEFT_GEN_ALL_MODULES & ~(1u << LORA_O | 1u << LORA_DOWN), 2);
    for (int m = 0; m < LORA_N_MODULES; m++) w[1][m] = 0;
    expect_ranks("lookahead subset", CFG("\"r\": 2, \"target_modules\": \"model\\\\.layers\\\\.(?!1\\\\.)\\\\d+"
                                         "\\\\.\\\\w+\\\\.(?!o_proj|down_proj)\\\\w+\""), w, 0, 0);
    // Lookbehind in a rank_pattern key: PEFT's (.*\.)?((?<=mlp\.)\w+)$ selects the MLP projections.
    fill(w, PEFT_GEN_ALL_MODULES, 8);
    for (int l = 0; l < 3; l++) w[l][LORA_GATE] = w[l][LORA_UP] = w[l][LORA_DOWN] = 4;
    expect_ranks("lookbehind rank_pattern", CFG("\"r\": 8, \"target_modules\": \"all-linear\", \"rank_pattern\": "
                                                "{\"(?<=mlp\\\\.)\\\\w+\": 4}"), w, 0, 0);
    fill(w, 1u << LORA_Q | 1u << LORA_V | 1u << LORA_O, 2);
    expect_ranks("list with suffix paths", CFG("\"r\": 2, \"target_modules\": [\"self_attn.q_proj\", \"v_proj\", "
                                               "\"o_proj\"]"), w, 0, 0);
    fill(w, PEFT_GEN_ALL_MODULES & ~(1u << LORA_K), 2);
    expect_ranks("exclude_modules", CFG("\"r\": 2, \"target_modules\": \"all-linear\", \"exclude_modules\": "
                                        "[\"k_proj\"]"), w, 0, 0);
    fill(w, 0, 0);
    w[0][LORA_Q] = w[2][LORA_Q] = 2;
    expect_ranks("layers_to_transform list", CFG("\"r\": 2, \"target_modules\": [\"q_proj\"], "
                                                 "\"layers_to_transform\": [0, 2], \"layers_pattern\": \"layers\""),
                 w, 0, 0);
    fill(w, 0, 0);
    w[1][LORA_Q] = 2;
    expect_ranks("layers_to_transform int", CFG("\"r\": 2, \"target_modules\": [\"q_proj\"], "
                                                "\"layers_to_transform\": 1"), w, 0, 0);
    // An exact module path in the list bypasses layers_to_transform, as in PEFT.
    fill(w, 0, 0);
    w[0][LORA_Q] = w[1][LORA_O] = 2;
    expect_ranks("exact path bypasses layers", CFG("\"r\": 2, \"target_modules\": [\"q_proj\", "
                                                   "\"model.layers.1.self_attn.o_proj\"], \"layers_to_transform\": [0]"),
                 w, 0, 0);
}

static void test_refusals(void)
{
    expect_reject("peft_type", "{\"peft_type\": \"PREFIX_TUNING\"}", LS_FAILED_PRECONDITION, "peft_type");
    expect_reject("peft_type missing", "{\"r\": 8}", LS_FAILED_PRECONDITION, "peft_type");
    expect_reject("dora", CFG("\"use_dora\": true"), LS_FAILED_PRECONDITION, "use_dora");
    expect_reject("modules_to_save", CFG("\"modules_to_save\": [\"lm_head\"]"), LS_FAILED_PRECONDITION,
                  "modules_to_save");
    expect_reject("bias", CFG("\"bias\": \"lora_only\""), LS_FAILED_PRECONDITION, "bias");
    expect_reject("fan_in_fan_out", CFG("\"fan_in_fan_out\": true"), LS_FAILED_PRECONDITION, "fan_in_fan_out");
    expect_reject("lora_bias", CFG("\"lora_bias\": true"), LS_FAILED_PRECONDITION, "lora_bias");
    expect_reject("trainable tokens", CFG("\"trainable_token_indices\": [1, 2]"), LS_FAILED_PRECONDITION,
                  "trainable_token_indices");
    expect_reject("r 0", CFG("\"r\": 0"), LS_INVALID_ARGUMENT, "r:");
    expect_reject("r -1", CFG("\"r\": -1"), LS_INVALID_ARGUMENT, "r:");
    expect_reject("r 257", CFG("\"r\": 257"), LS_INVALID_ARGUMENT, "r:");
    expect_reject("r 8.5", CFG("\"r\": 8.5"), LS_INVALID_ARGUMENT, "r:");
    expect_reject("alpha 0", CFG("\"lora_alpha\": 0"), LS_INVALID_ARGUMENT, "lora_alpha");
    expect_reject("alpha -2", CFG("\"lora_alpha\": -2.5"), LS_INVALID_ARGUMENT, "lora_alpha");
    expect_reject("alpha string", CFG("\"lora_alpha\": \"16\""), LS_INVALID_ARGUMENT, "lora_alpha");
    expect_reject("rank_pattern 0", CFG("\"rank_pattern\": {\"q_proj\": 0}"), LS_INVALID_ARGUMENT, "rank_pattern");
    expect_reject("rank_pattern 1.5", CFG("\"rank_pattern\": {\"q_proj\": 1.5}"), LS_INVALID_ARGUMENT, "rank_pattern");
    expect_reject("alpha_pattern -1", CFG("\"alpha_pattern\": {\"q_proj\": -1}"), LS_INVALID_ARGUMENT,
                  "alpha_pattern");
    expect_reject("rank_pattern list", CFG("\"rank_pattern\": [1]"), LS_INVALID_ARGUMENT, "rank_pattern");
    expect_reject("lm_head target", CFG("\"target_modules\": [\"q_proj\", \"lm_head\"]"), LS_FAILED_PRECONDITION,
                  "target_modules: \"lm_head\"");
    expect_reject("regex reaching lm_head", CFG("\"target_modules\": \".*\""), LS_FAILED_PRECONDITION, "lm_head");
    expect_reject("bad regex", CFG("\"target_modules\": \"(q_proj\""), LS_INVALID_ARGUMENT, "target_modules");
    expect_reject("not Python syntax", CFG("\"target_modules\": \"(?<n>.*)q_proj\""), LS_INVALID_ARGUMENT,
                  "target_modules: regex \"(?<n>.*)q_proj\": (?<name>...) is not Python syntax");
    // PEFT wraps a key as (.*\.)?(key)$, where Python 3.11 refuses flags that are no longer at the start.
    expect_reject("flag inside a key", CFG("\"target_modules\": \"all-linear\", \"rank_pattern\": {\"(?i)Q_PROJ\": 4}"),
                  LS_INVALID_ARGUMENT, "rank_pattern: regex \"(?i)Q_PROJ\": global flags not at the start");
    expect_reject("backtracking limit", CFG("\"target_modules\": \"(?:.+)+\\\\.q_pro\""), LS_INVALID_ARGUMENT,
                  "target_modules: regex matching failed");
    expect_reject("selects nothing", CFG("\"target_modules\": \"nothing\""), LS_FAILED_PRECONDITION, "target_modules");
    expect_reject("layers out of range", CFG("\"target_modules\": [\"q_proj\"], \"layers_to_transform\": [0, 3]"),
                  LS_FAILED_PRECONDITION, "layers_to_transform");
    expect_reject("layers with a regex", CFG("\"target_modules\": \".*q_proj\", \"layers_to_transform\": [0]"),
                  LS_INVALID_ARGUMENT, "layers_to_transform");
    expect_reject("layers_pattern", CFG("\"layers_to_transform\": [0], \"layers_pattern\": \"h\""),
                  LS_FAILED_PRECONDITION, "layers_pattern");
    expect_reject("not JSON", "{\"peft_type\": ", LS_INVALID_ARGUMENT, "adapter_config.json");
    expect_reject("array root", "[1]", LS_INVALID_ARGUMENT, "JSON object");
    char *big = malloc((2u << 20) + 64);
    if (!big) return;
    int n = sprintf(big, "{\"peft_type\": \"LORA\", \"pad\": \"");
    memset(big + n, 'x', 2u << 20);
    strcpy(big + n + (2u << 20), "\"}");
    expect_reject("config over 1 MB", big, LS_INVALID_ARGUMENT, "too large");
    free(big);
}

static void test_files_and_base(void)
{
    char dir[256], path[320];
    peft_adapter a;
    ls_error err = { 0 };
    snprintf(dir, sizeof dir, "%s/pickle", root);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    write_text(path, CFG("\"r\": 8"));
    snprintf(path, sizeof path, "%s/adapter_model.bin", dir);
    write_text(path, "PK");
    ls_status rc = peft_read_config(&a, dir, &base, NULL, &err);
    TAP_OK(rc == LS_FAILED_PRECONDITION && strstr(err.msg, "pickle .bin adapters are not supported; convert to "
           "safetensors"), "row 22: pickle-only -> %s", err.msg);
    unlink(path);
    rc = peft_read_config(&a, dir, &base, NULL, &err);
    TAP_OK(rc == LS_NOT_FOUND && strstr(err.msg, "adapter_model.safetensors"), "no weights -> %s", err.msg);
    snprintf(dir, sizeof dir, "%s/none", root);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    write_text(path, "");
    rc = peft_read_config(&a, dir, &base, NULL, &err);
    TAP_OK(rc == LS_NOT_FOUND && strstr(err.msg, "adapter_config.json"), "row 14: no config -> %s", err.msg);

    const char *text = CFG("\"base_model_name_or_path\": \"meta-llama/Llama-2-7b-hf\"");
    peft_opts o = { .served_model_name = "/models/Llama-3-8B" };
    rc = load_text("base", text, &a, &o, &err);
    TAP_OK(rc == LS_FAILED_PRECONDITION && strstr(err.msg, "base_model_name_or_path"), "row 21: -> %s", err.msg);
    o.allow_base_mismatch = 1;
    rc = load_text("base", text, &a, &o, &err);
    TAP_OK(rc == LS_OK && !strcmp(a.base_model, "meta-llama/Llama-2-7b-hf"), "override accepts the other base");
    peft_adapter_free(&a);
    o = (peft_opts){ .served_model_name = "/srv/models/Llama-2-7b-hf/" };
    rc = load_text("base", text, &a, &o, &err);
    TAP_OK(rc == LS_OK, "same last path component accepted %s", rc ? err.msg : "");
    peft_adapter_free(&a);
    rc = load_text("no base", CFG("\"base_model_name_or_path\": null"), &a, &o, &err);
    TAP_OK(rc == LS_OK && !a.base_model[0], "absent base name is not compared");
    peft_adapter_free(&a);
}

/* The rewriting (one PCRE2 reading of each Python item) and the matching (re.fullmatch semantics). */
static void test_regex_translation(void)
{
    static const struct { const char *py, *pcre; } ok[] = {
        { "(?:a|b)+?c", "(?:a|b)+?c" }, { "\\d{1,}\\.x", "\\d{1,}\\.x" }, { "a{,3}b??", "a{0,3}b??" },
        { "x{y}{}a{,}", "x\\{y\\}\\{\\}a{0,}" }, { "q\\Z", "q\\z" }, { "[[:]", "[\\[\\:]" }, { "\\v", "\\x{b}" },
        { "(?i)(?x) q _ # c", "(?i)q_" }, { "(a)\\1\\101", "(a)\\g{1}A" }, { "(?P<n>a)(?P=n)", "(?P<n>a)(?P=n)" },
        { "(?a:\\w)", "(?:[0-9A-Z_a-z])" }, { "(?s-i:.)(?#x\\)y)", "(?s-i:.)" }, { "[a-]\\-/", "[a\\-]\\-\\/" },
        { "(?<!a)(?=b)(?>c)*+", "(?<!a)(?=b)(?>c)*+" }, { "(a)(?(1)b|c)", "(a)(?(1)b|c)" },
    };
    static const char *const bad[] = {
        "(?<n>a)", "\\N{DIGIT ONE}", "(?L)a", "a**", "*a", "\\b*", "\\q", "a{70000}", "(a", "a)", "[a",
        "(?i)\xc3\xa9", "a(?i)b", "\\1(a)", "(a\\1)", "[z-a]", "[\\d-z]", "\\x4", "(?P<a>x)(?P<a>y)", "\\ud800",
        "(?au)a", "(?-a:a)", "a\\", "[a-\\w]",
    };
    char out[512];
    const char *why = NULL;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        out[0] = 0;
        TAP_OK(py_regex_translate(ok[i].py, out, sizeof out, &why) && !strcmp(out, ok[i].pcre), "regex %s -> %s "
               "(got %s)", ok[i].py, ok[i].pcre, out);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        TAP_OK(!py_regex_translate(bad[i], out, sizeof out, &why) && why, "regex %s refused: %s", bad[i],
               why ? why : "");
    }

    TAP_OK(!py_regex_translate("a\xff", out, sizeof out, &why) && !strcmp(why, "invalid UTF-8"), "invalid UTF-8 "
           "refused");
    TAP_OK(!py_regex_translate("(a)", out, 3, &why) && why, "small output buffer refused");

    // Each row: pattern (full match, as re.fullmatch), subjects that match, subjects that do not.
    static const struct { const char *py, *yes[3], *no[3]; } m[] = {
        { "a|ab", { "a", "ab" }, { "abc", "b" } },
        { "a{,2}", { "", "aa" }, { "aaa" } },
        { "x{y}", { "x{y}" }, { "xy" } },
        { "(?i)Q_PROJ", { "q_proj", "Q_Proj" }, { "k_proj" } },
        { "(?x) q _ proj  # the query", { "q_proj" }, { "q _ proj" } },
        { ".*\\bq_proj", { "q_proj", "x.q_proj" }, { "xq_proj" } },
        { "(?!.*mlp).*_proj", { "self_attn.q_proj" }, { "mlp.up_proj" } },
        { "\\s", { "\x1c", " " }, { "a" } },
        { "(?a)\\w", { "a" }, { "\xc3\xa9" } },
        { "\\w", { "a", "\xc3\xa9" }, { "." } },
        { "(a)\\1|(?P<b>c)(?P=b)", { "aa", "cc" }, { "ac" } },
        { "[]a]+", { "]a" }, { "b" } },
        { "(?m)a$\\n^b", { "a\nb" }, { "ab" } },
    };
    py_regex re;
    ls_error err = { 0 };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        int ok_all = py_regex_compile(&re, m[i].py, "", "", "k", &err) == LS_OK;
        if (!ok_all) TAP_DIAG("%s", err.msg);
        for (int j = 0; ok_all && j < 3; j++) {
            if (m[i].yes[j] && py_regex_match(&re, m[i].yes[j]) != 1) {
                TAP_DIAG("%s does not match \"%s\"", m[i].py, m[i].yes[j]);
                ok_all = 0;
            }
            if (m[i].no[j] && py_regex_match(&re, m[i].no[j]) != 0) {
                TAP_DIAG("%s matches \"%s\"", m[i].py, m[i].no[j]);
                ok_all = 0;
            }
        }
        TAP_OK(ok_all, "fullmatch %s", m[i].py);
        py_regex_free(&re);
    }
    TAP_OK(py_regex_compile(&re, "q_proj|v_proj", "(.*\\.)?", "", "k", &err) == LS_OK, "compile suffix pattern");
    TAP_OK(py_regex_match(&re, "model.layers.0.self_attn.v_proj") == 1 && !py_regex_match(&re, "x.k_proj") &&
           !py_regex_match(&re, "x.qq_proj") && py_regex_match(&re, "q_proj") == 1, "suffix semantics");
    py_regex_free(&re);
    TAP_OK(py_regex_compile(&re, "(?i)q", "(.*\\.)?", "", "k", &err) == LS_INVALID_ARGUMENT &&
           strstr(err.msg, "global flags not at the start") && !re.code, "flags inside PEFT's wrapper refused: %s",
           err.msg);
    TAP_OK(py_regex_compile(&re, "(?<=a|bc)x", "", "", "k", &err) == LS_OK, "PCRE2 accepts what it can run");
    py_regex_free(&re);
    TAP_OK(py_regex_compile(&re, "(?:.+)+\\.q_pro", "", "", "k", &err) == LS_OK &&
           py_regex_match(&re, "model.layers.0.self_attn.q_proj") == -1, "backtracking limit reported as -1");
    py_regex_free(&re);
}

static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb, ca, cb;
    while (same && ((ca = fgetc(fa)) != EOF) | ((cb = fgetc(fb)) != EOF)) same = ca == cb;
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void test_gen(void)
{
    char d1[256], d2[256], p1[320], p2[320];
    ls_error err = { 0 };
    peft_gen_opts o = peft_gen_default_opts();
    peft_gen_pattern rp[] = { { "v_proj", 3 }, { "model.layers.2.mlp.up_proj", 5 } };
    o.rank_pattern = rp;
    o.n_rank_pattern = 2;
    o.base_model = "org/tiny-llama";
    o.dtype = "bfloat16";
    snprintf(d1, sizeof d1, "%s/gen/one", root);
    snprintf(d2, sizeof d2, "%s/gen/two", root);
    ls_status rc = peft_gen_write(d1, &base, &o, &err);
    TAP_OK(rc == LS_OK, "peft_gen_write (nested dir) %s", err.msg);
    TAP_OK(peft_gen_write(d2, &base, &o, &err) == LS_OK, "second write");
    snprintf(p1, sizeof p1, "%s/adapter_model.safetensors", d1);
    snprintf(p2, sizeof p2, "%s/adapter_model.safetensors", d2);
    TAP_OK(same_file(p1, p2), "same seed, same weights bytes");
    snprintf(p1, sizeof p1, "%s/adapter_config.json", d1);
    snprintf(p2, sizeof p2, "%s/adapter_config.json", d2);
    TAP_OK(same_file(p1, p2), "same config bytes");
    json_doc *doc = NULL;
    rc = json_parse_file(&doc, p1, 1u << 20, &err);
    const json *r = doc ? json_root(doc) : NULL;
    int sorted = r && r->type == JSON_OBJECT && r->len >= 30;
    for (size_t i = 1; sorted && i < r->len; i++) sorted = strcmp(r->keys[i - 1], r->keys[i]) < 0;
    TAP_OK(rc == LS_OK && sorted, "config has PEFT's fields with sorted keys");
    json_free(doc);
    peft_adapter a;
    peft_opts po = { .served_model_name = "tiny-llama" };
    rc = peft_read_config(&a, d1, &base, &po, &err);
    TAP_OK(rc == LS_OK && rank_of(&a, 0, LORA_V) == 3 && rank_of(&a, 2, LORA_UP) == 5 && rank_of(&a, 1, LORA_UP) == 8 &&
           scale_of(&a, 0, LORA_V) == (float)(16.0 / 3), "generated config reads back %s", err.msg);
    TAP_OK(rc == LS_OK && peft_check_tensors(&a, &base, &err) == LS_OK, "generated tensors check %s", err.msg);
    peft_adapter_free(&a);
    o.target_string = "all-linear";
    o.n_rank_pattern = 0;
    o.use_rslora = 1;
    o.seed = 9;
    snprintf(d1, sizeof d1, "%s/gen/many", root);
    int all_ok = 1;
    for (int i = 0; i < 40 && all_ok; i++) {
        char d[300];
        snprintf(d, sizeof d, "%s/tenant%d/adapter", d1, i % 4);
        o.seed = (uint64_t)i;
        o.r = 1 + i % 16;
        all_ok = peft_gen_write(d, &base, &o, &err) == LS_OK && peft_read_config(&a, d, &base, NULL, &err) == LS_OK &&
                 a.shape.max_rank == o.r && peft_check_tensors(&a, &base, &err) == LS_OK;
        peft_adapter_free(&a);
    }
    TAP_OK(all_ok, "40 generated adapters of ranks 1-16 load %s", all_ok ? "" : err.msg);
}

static void test_resolve(void)
{
    char r[128], outside[128], p[300], want[PATH_MAX], out[PATH_MAX];
    snprintf(r, sizeof r, "%s/adapters", root);
    snprintf(outside, sizeof outside, "%s/outside", root);
    mkdir(r, 0755);
    mkdir(outside, 0755);
    snprintf(p, sizeof p, "%s/org", r);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/org/name", r);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/plain", r);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/file", r);
    write_text(p, "x");
    snprintf(p, sizeof p, "%s/evil", r);
    TAP_OK(symlink(outside, p) == 0, "symlink out of root created");
    snprintf(p, sizeof p, "%s/alias", r);
    TAP_OK(symlink("plain", p) == 0, "symlink inside root created");
    static const char *const invalid[] = { "../x", "/abs", "a/../../b", "evil", "", "a\\b", "org//name", "./plain",
                                           "org/", "..", "file", "a\x01", "evil/x" };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        ls_error err = { 0 };
        ls_status rc = peft_resolve_name(r, invalid[i], out, sizeof out, &err);
        TAP_OK(rc == LS_INVALID_ARGUMENT || (rc == LS_NOT_FOUND && !strcmp(invalid[i], "evil/x")),
               "row 23: name \"%s\" refused: %s", invalid[i], err.msg);
    }
    ls_error err = { 0 };
    TAP_OK(peft_resolve_name(r, "missing", out, sizeof out, &err) == LS_NOT_FOUND, "missing -> NOT_FOUND");
    ls_status rc = peft_resolve_name(r, "org/name", out, sizeof out, &err);
    snprintf(p, sizeof p, "%s/org/name", r);
    TAP_OK(rc == LS_OK && realpath(p, want) && !strcmp(out, want), "org/name resolves to %s", out);
    rc = peft_resolve_name(r, "alias", out, sizeof out, &err);
    TAP_OK(rc == LS_OK && strstr(out, "/adapters/plain"), "symlink inside root accepted: %s", out);
    TAP_OK(peft_resolve_name(r, "org/name", out, 8, &err) == LS_INVALID_ARGUMENT, "small out buffer refused");
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/test_peft.XXXXXX");
    if (!mkdtemp(root)) TAP_SKIP_ALL("no temporary directory");
    base = small_base();
    ls_error err = { 0 };
    TAP_OK(model_config_validate(&base, &err) == LS_OK, "test base config valid %s", err.msg);
    test_scales();
    test_patterns();
    test_targets();
    test_refusals();
    test_files_and_base();
    test_regex_translation();
    test_gen();
    test_resolve();
    rm_rf(root);
    return tap_done();
}
