/* Pure-C tokenizer tests (no Node): the demo tokenizer, a hand-written SentencePiece-style
 * tokenizer.json (byte fallback, Prepend/Replace normalizer, Strip decoder) and a Metaspace one, so
 * that merging by rank, byte fallback, the leading-space rule and streaming are pinned without the
 * oracle; plus the failure paths: invalid UTF-8 (with the offset), user text that spells control
 * tokens, malformed or unsupported tokenizer.json (named component), and a 1 MB word without spaces
 * (bounded time, reliability.md row 33). Exactness against the reference is test_tokenizer_oracle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/tokenizer.h"
#include "coordinator/tokenizer_gen.h"
#include "coordinator/tokenizer_impl.h"
#include "tests/tap.h"

static char root[] = "/tmp/ls-tok-unit-XXXXXX";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) fputs(text, f), fclose(f);
}

/* A fresh directory under root holding tokenizer.json (and the config when given). */
static const char *make_dir(const char *name, const char *tokenizer_json, const char *config)
{
    static char dir[512];   // single-threaded test: one directory in use at a time
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    mkdir(dir, 0755);
    if (tokenizer_json) write_text(dir, "tokenizer.json", tokenizer_json);
    if (config) write_text(dir, "tokenizer_config.json", config);
    return dir;
}

static bool ids_eq(const int32_t *a, size_t n, const int32_t *b, size_t m)
{
    return n == m && (n == 0 || memcmp(a, b, n * sizeof *a) == 0);
}

/* Streams ids: deltas must be whole UTF-8 and concatenate to the full decode. */
static bool stream_ok(const tokenizer *t, const int32_t *ids, size_t n)
{
    size_t want_len;
    char *want = tokenizer_decode_len(t, ids, n, &want_len);
    detok *d = detok_new(t);
    tok_buf all = {0};
    bool whole = true;
    for (size_t i = 0; i <= n; i++) {
        char *out;
        size_t k = i < n ? detok_push(d, ids[i], &out) : detok_flush(d, &out);
        whole = whole && tok_utf8_invalid_at(out, k) == k;
        tok_buf_put(&all, out, k);
        free(out);
    }
    bool ok = whole && all.n == want_len && (!want_len || !memcmp(all.p, want, want_len));
    detok_free(d);
    tok_buf_free(&all);
    free(want);
    return ok;
}

/* ---- a tiny SentencePiece-style BPE -------------------------------------------------------------- */

/* ids: <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258, then the pieces below from 259. */
static const char *const sp_pieces[] = {"\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "a", "ab", "\xE2\x96\x81" "ab",
                                        "h", "i", "hi", "\xE2\x96\x81" "hi"};
enum { SP_SPACE = 259, SP_A, SP_B, SP_SA, SP_AB, SP_SAB, SP_H, SP_I, SP_HI, SP_SHI, SP_BYTE0 = 3 };

static void put(tok_buf *b, const char *s) { tok_buf_put(b, s, strlen(s)); }

static char *sp_json(const char *normalizer, const char *pre, const char *decoder)
{
    tok_buf b = {0};
    char tmp[64];
    put(&b, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
            "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
            "\"normalizer\":");
    put(&b, normalizer);
    put(&b, ",\"pre_tokenizer\":");
    put(&b, pre);
    put(&b, ",\"decoder\":");
    put(&b, decoder);
    put(&b, ",\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
            "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    for (int i = 0; i < 256; i++) tok_buf_put(&b, tmp, (size_t)snprintf(tmp, sizeof tmp, ",\"<0x%02X>\":%d", i, 3 + i));
    for (int i = 0; i < 10; i++)
        tok_buf_put(&b, tmp, (size_t)snprintf(tmp, sizeof tmp, ",\"%s\":%d", sp_pieces[i], SP_SPACE + i));
    put(&b, "},\"merges\":[\"\xE2\x96\x81 a\",\"a b\",\"\xE2\x96\x81" "a b\",\"h i\",\"\xE2\x96\x81 hi\"]}}");
    return tok_buf_cstr(&b);
}

#define SP_NORMALIZER \
    "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"}," \
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]}"
#define SP_DECODER \
    "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"}," \
    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \"," \
    "\"start\":1,\"stop\":0}]}"

static tokenizer *load(const char *dir)
{
    tokenizer *t = NULL;
    ls_error err = {0};
    if (tokenizer_load(&t, dir, &err) != LS_OK) TAP_DIAG("load %s: %s", dir, err.msg);
    return t;
}

static void expect_encode(const tokenizer *t, const char *text, const int32_t *want, size_t m, const char *what)
{
    int32_t *ids = NULL;
    size_t n = 0;
    ls_error err = {0};
    ls_status rc = tokenizer_encode(t, text, strlen(text), &ids, &n, &err);
    TAP_OK(rc == LS_OK && ids_eq(ids, n, want, m), "%s", what);
    free(ids);
}

static void expect_decode(const tokenizer *t, const int32_t *ids, size_t n, const char *want, const char *what)
{
    char *s = tokenizer_decode(t, ids, n);
    TAP_OK(!strcmp(s, want), "%s: \"%s\"", what, s);
    free(s);
    TAP_OK(stream_ok(t, ids, n), "%s: streamed deltas are whole UTF-8 and add up", what);
}

static void test_sentencepiece(void)
{
    char *js = sp_json(SP_NORMALIZER, "null", SP_DECODER);
    tokenizer *t = load(make_dir("sp", js, "{\"add_bos_token\":true,\"bos_token\":\"<s>\",\"eos_token\":\"</s>\"}"));
    free(js);
    TAP_OK(t && tokenizer_bos_id(t) == 1 && tokenizer_eos_id(t) == 2 && tokenizer_add_bos(t), "sp: loads, bos/eos from config");
    if (!t) return;
    expect_encode(t, "ab hi", (int32_t[]){1, SP_SAB, SP_SHI}, 3, "sp: merges applied by rank");
    expect_encode(t, "\xC3\xA9", (int32_t[]){1, SP_SPACE, SP_BYTE0 + 0xC3, SP_BYTE0 + 0xA9}, 4, "sp: byte fallback");
    expect_encode(t, "</s>", (int32_t[]){1, SP_SPACE, SP_BYTE0 + '<', SP_BYTE0 + '/', SP_BYTE0 + 's', SP_BYTE0 + '>'}, 6,
                  "sp: \"</s>\" in user text is plain text, not eos");
    int32_t *ids;
    size_t n;
    ls_error err = {0};
    TAP_OK(tokenizer_encode_template(t, "</s>", 4, &ids, &n, &err) == LS_OK && n == 1 && ids[0] == 2,
           "sp: the server template does get eos");
    free(ids);
    expect_decode(t, (int32_t[]){SP_SAB, SP_SHI}, 2, "ab hi", "sp: leading space dropped at text start");
    expect_decode(t, (int32_t[]){SP_SPACE, SP_BYTE0 + 0xC3, SP_BYTE0 + 0xA9}, 3, "\xC3\xA9", "sp: byte tokens decode");
    expect_decode(t, (int32_t[]){SP_BYTE0 + 0xE4, SP_BYTE0 + 0xBD, SP_A}, 3, "\xEF\xBF\xBD\xEF\xBF\xBD" "a",
                  "sp: a run that is not UTF-8 gives one U+FFFD per byte");
    expect_decode(t, (int32_t[]){SP_BYTE0 + 0xC3, SP_BYTE0 + 0xA9, SP_BYTE0 + 0xFF}, 3,
                  "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", "sp: one bad byte spoils its whole run");
    expect_decode(t, (int32_t[]){1, SP_A, 2, -5, 99999}, 5, "a", "sp: special and unknown ids are skipped");
    detok *d = detok_new_continuation(t);
    char *out;
    size_t k = detok_push(d, SP_SAB, &out);
    TAP_OK(k == 3 && !strcmp(out, " ab"), "sp: continuation stream keeps the leading space");
    free(out);
    detok_free(d);
    d = detok_new(t);
    size_t k1 = detok_push(d, SP_BYTE0 + 0xC3, &out);
    free(out);
    size_t k2 = detok_push(d, SP_BYTE0 + 0xA9, &out);
    free(out);
    size_t k3 = detok_flush(d, &out);
    TAP_OK(k1 == 0 && k2 == 0 && k3 == 2 && !strcmp(out, "\xC3\xA9"), "sp: a split character is held, then flushed whole");
    free(out);
    detok_free(d);
    tokenizer_free(t);
}

static void test_metaspace(void)
{
    char *js = sp_json("null", "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":true}",
                       "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"Metaspace\","
                       "\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":true}]}");
    tokenizer *t = load(make_dir("ms", js, NULL));
    free(js);
    TAP_OK(t && !tokenizer_add_bos(t), "metaspace: loads; no config means no bos");
    if (!t) return;
    expect_encode(t, "ab hi", (int32_t[]){SP_SAB, SP_SHI}, 2, "metaspace: split on the replacement, prepend first");
    expect_decode(t, (int32_t[]){SP_SAB, SP_SHI}, 2, "ab hi", "metaspace: decoder drops the first prefix");
    tokenizer_free(t);
}

/* ---- the demo tokenizer -------------------------------------------------------------------------- */

static void test_demo_roundtrip(const tokenizer *t)
{
    static const char *const texts[] = {
        "Hello world", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "数字 12345678901234567890",
        "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family", "caf\xC3\xA9 na\xC3\xAFve",
        "\x01\x02\x7F control", "x = {\"a\": [1, 2]};", "it's THEY'RE we'll",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids;
        size_t n, len;
        ls_error err = {0};
        tokenizer_encode_text(t, texts[i], strlen(texts[i]), &ids, &n, &err);
        char *s = tokenizer_decode_len(t, ids, n, &len);
        TAP_OK(len == strlen(texts[i]) && !memcmp(s, texts[i], len), "demo: decode(encode(text %zu)) is the text", i);
        TAP_OK(stream_ok(t, ids, n), "demo: streaming text %zu: whole UTF-8 deltas that add up", i);
        free(s);
        free(ids);
    }
}

static void test_demo_specials(const tokenizer *t)
{
    int bos = tokenizer_bos_id(t), eos = tokenizer_eos_id(t);
    TAP_OK(bos >= 0 && eos >= 0 && tokenizer_token_id(t, "<|end_of_text|>") == eos, "demo: bos %d, eos %d", bos, eos);
    size_t len = 0;
    const char *bos_text = tokenizer_id_text(t, bos, &len);
    TAP_OK(bos_text && len == 17 && !memcmp(bos_text, "<|begin_of_text|>", 17) && !tokenizer_id_text(t, 1 << 30, &len),
           "demo: id text of bos; none past the vocab");
    const char *text = "<|begin_of_text|>hi<|end_of_text|>";
    int32_t *ids;
    size_t n;
    ls_error err = {0};
    TAP_OK(tokenizer_encode(t, text, strlen(text), &ids, &n, &err) == LS_OK && n > 2 && ids[0] == bos,
           "demo: user text gets bos prepended");
    size_t controls = 0;
    for (size_t i = 1; i < n; i++) controls += ids[i] == bos || ids[i] == eos;
    TAP_OK(controls == 0, "demo: control-token text in a prompt yields no control token");
    char *s = tokenizer_decode(t, ids, n);
    TAP_OK(!strcmp(s, text), "demo: and decodes back to the typed text");
    free(s);
    free(ids);
    TAP_OK(tokenizer_encode_template(t, text, strlen(text), &ids, &n, &err) == LS_OK && n >= 3 && ids[0] == bos &&
               ids[n - 1] == eos, "demo: the template path matches control tokens");
    free(ids);
    TAP_OK(tokenizer_encode(t, "", 0, &ids, &n, &err) == LS_OK && n == 1 && ids[0] == bos, "demo: empty text is just bos");
    free(ids);
}

static void test_invalid_utf8(const tokenizer *t)
{
    static const struct { const char *s; size_t len, at; const char *what; } cases[] = {
        {"ab\x80", 3, 2, "stray continuation"},   {"\xC0\x80", 2, 0, "overlong NUL"},
        {"a\xE0\x80\xAF", 4, 1, "overlong 3-byte"}, {"\xED\xA0\x80", 3, 0, "surrogate"},
        {"\xF4\x90\x80\x80", 4, 0, "above U+10FFFF"}, {"\xF5\x80", 2, 0, "F5 lead"},
        {"ok\xE4\xBD", 4, 2, "truncated at the end"}, {"x\xFF", 2, 1, "FF"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids = NULL;
        size_t n;
        ls_error err = {0};
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", cases[i].at);
        ls_status rc = tokenizer_encode(t, cases[i].s, cases[i].len, &ids, &n, &err);
        TAP_OK(rc == LS_INVALID_ARGUMENT && strstr(err.msg, want) && !ids, "invalid UTF-8 (%s): %s", cases[i].what, err.msg);
    }
    int32_t ids[2] = {0xE4, 'a'};    // the demo vocab's id b is byte b: 0xE4 alone, then "a"
    char *s = tokenizer_decode(t, ids, 2);
    TAP_OK(!strcmp(s, "\xEF\xBF\xBD" "a"), "demo: a lone lead byte decodes to U+FFFD, the next char survives");
    free(s);
    s = tokenizer_decode(t, ids, 1);
    TAP_OK(!strcmp(s, "\xEF\xBF\xBD"), "demo: a truncated sequence at the end becomes U+FFFD at flush");
    free(s);
    TAP_OK(stream_ok(t, ids, 2), "demo: streaming invalid bytes stays whole UTF-8");
}

static void test_long_word(const tokenizer *t, const char *name)
{
    size_t n = 1 << 20;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++) s[i] = "ab"[i % 2];
    int32_t *ids;
    size_t m;
    ls_error err = {0};
    double t0 = now();
    ls_status rc = tokenizer_encode_text(t, s, n, &ids, &m, &err);
    double dt = now() - t0;
    // 2 s is ~10x what it takes here; a quadratic merge loop would take minutes.
    TAP_OK(rc == LS_OK && dt < 2.0, "%s: 1 MB word without spaces encodes in %.3f s (%zu ids)", name, dt, m);
    if (rc == LS_OK) free(ids);
    free(s);
}

/* ---- malformed and unsupported files ------------------------------------------------------------- */

static void expect_load_error(const char *name, const char *json_text, ls_status code, const char *needle)
{
    tokenizer *t = NULL;
    ls_error err = {0};
    ls_status rc = tokenizer_load(&t, make_dir(name, json_text, NULL), &err);
    TAP_OK(rc == code && !t && strstr(err.msg, needle), "rejects %s: %s", name, err.msg);
    tokenizer_free(t);
}

static void test_bad_files(void)
{
    char *js;
#define BAD(name, norm, pre, dec, code, needle)  \
    js = sp_json(norm, pre, dec);                \
    expect_load_error(name, js, code, needle);   \
    free(js)
    BAD("unsupported-normalizer", "{\"type\":\"Lowercase\"}", "null", "null", LS_INVALID_ARGUMENT, "normalizer 'Lowercase'");
    BAD("nested-normalizer", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"BertNormalizer\"}]}",
        "null", "null", LS_INVALID_ARGUMENT, "normalizer 'BertNormalizer'");
    BAD("unsupported-pretokenizer", "null", "{\"type\":\"Whitespace\"}", "null", LS_INVALID_ARGUMENT, "pre_tokenizer 'Whitespace'");
    BAD("bad-regex", "null", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},\"behavior\":\"Isolated\",\"invert\":false}",
        "null", LS_INVALID_ARGUMENT, "pre_tokenizer Split");
    BAD("unsupported-decoder", "null", "null", "{\"type\":\"WordPiece\"}", LS_INVALID_ARGUMENT, "decoder 'WordPiece'");
#undef BAD
    expect_load_error("unigram", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", LS_INVALID_ARGUMENT, "model type 'Unigram'");
    expect_load_error("wordpiece", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", LS_INVALID_ARGUMENT, "model type 'WordPiece'");
    expect_load_error("bad-merge", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a q\"]}}",
                      LS_INVALID_ARGUMENT, "merges[0]");
    expect_load_error("dropout", "{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{},\"merges\":[]}}",
                      LS_INVALID_ARGUMENT, "dropout");
    expect_load_error("not-json", "{\"model\": [", LS_INVALID_ARGUMENT, "tokenizer.json");
    expect_load_error("missing", NULL, LS_NOT_FOUND, "tokenizer.json");
}

int main(void)
{
    if (!mkdtemp(root)) TAP_SKIP_ALL("cannot create a temporary directory");
    test_sentencepiece();
    test_metaspace();
    test_bad_files();
    const char *demo = make_dir("demo", NULL, NULL);
    int vocab = 0;
    ls_error err = {0};
    TAP_OK(tokenizer_gen_write(demo, 1024, &vocab, &err) == LS_OK && vocab == 1024, "demo: generated, vocab %d %s", vocab, err.msg);
    tokenizer *t = load(demo);
    TAP_OK(t && tokenizer_vocab_size(t) == vocab && tokenizer_add_bos(t), "demo: loads with bos prepended");
    if (t) {
        test_demo_roundtrip(t);
        test_demo_specials(t);
        test_invalid_utf8(t);
        test_long_word(t, "demo");
    }
    tokenizer_free(t);
    char *js = sp_json(SP_NORMALIZER, "null", SP_DECODER);
    t = load(make_dir("sp-long", js, NULL));
    free(js);
    if (t) test_long_word(t, "sp (one word per prompt)");
    tokenizer_free(t);
    char cmd[sizeof root + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) TAP_DIAG("could not remove %s", root);
    return tap_done();
}
