/* json.h against a corpus of valid and invalid documents: RFC 8259 grammar, duplicate keys, nesting
 * bombs, UTF-8 and surrogate handling, numbers, the typed getters, and a large object parsed in linear
 * time (tokenizer.json's vocab has ~150k members). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/json.h"
#include "tests/tap.h"

static json_doc *parse(const char *s, ls_error *err)
{
    json_doc *d = NULL;
    ls_status rc = json_parse(&d, s, strlen(s), err);
    return rc == LS_OK ? d : NULL;
}

static void expect_valid(size_t i, const char *s)
{
    ls_error err = { 0 };
    json_doc *d = parse(s, &err);
    TAP_OK(d != NULL, "valid corpus #%zu %s", i, d ? "" : err.msg);
    json_free(d);
}

static void expect_invalid(const char *label, const char *s, size_t len, const char *needle)
{
    ls_error err = { 0 };
    json_doc *d = NULL;
    ls_status rc = json_parse(&d, s, len, &err);
    TAP_OK(rc == LS_INVALID_ARGUMENT && !d && strstr(err.msg, needle), "invalid %s -> %s", label, err.msg);
    json_free(d);
}

static void test_valid_corpus(void)
{
    static const char *ok[] = {
        "{}", "[]", "0", "-0", "1.5e10", "\"\"", "true", "false", "null", " \t\r\n[ 1 , 2 ]\n ",
        "{\"a\":{\"b\":[{}, [], null]}}", "[1E+2, 1e-2, -0.0, 0.5]", "{\"\":1}",
        "\"\\u0041\\u00e9\\u4e2d\\ud83d\\ude00\"", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
        "{\"a\":1,\"A\":2}", "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) expect_valid(i, ok[i]);
}

static void test_invalid_corpus(void)
{
    static const struct { const char *label, *text, *needle; } bad[] = {
        { "empty", "", "unexpected end" },
        { "trailing comma array", "[1,]", "unexpected character" },
        { "trailing comma object", "{\"a\":1,}", "expected a string key" },
        { "single quotes", "{'a':1}", "expected a string key" },
        { "leading zero", "01", "trailing characters" },
        { "plus sign", "+1", "unexpected character" },
        { "bare dot", "1.", "digit expected after '.'" },
        { "bare exponent", "1e", "digit expected in exponent" },
        { "hex", "0x10", "trailing characters" },
        { "NaN", "NaN", "unexpected character" },
        { "Infinity", "[Infinity]", "unexpected character" },
        { "huge number", "1e400", "number out of range" },
        { "two values", "1 2", "trailing characters" },
        { "unterminated string", "\"abc", "unterminated string" },
        { "unterminated array", "[1", "unterminated array" },
        { "unterminated object", "{\"a\":1", "unterminated object" },
        { "missing colon", "{\"a\" 1}", "expected ':'" },
        { "raw newline in string", "\"a\nb\"", "control character" },
        { "bad escape", "\"\\x\"", "bad escape" },
        { "short unicode escape", "\"\\u12\"", "bad \\u escape" },
        { "lone high surrogate", "\"\\ud83d\"", "lone high surrogate" },
        { "high + non-low", "\"\\ud83d\\u0041\"", "lone high surrogate" },
        { "lone low surrogate", "\"\\ude00\"", "lone low surrogate" },
        { "comment", "[1 /* c */]", "expected ',' or ']'" },
        { "literal prefix", "tru", "unexpected character" },
        { "duplicate key", "{\"a\":1,\"b\":2,\"a\":3}", "duplicate key \"a\"" },
        { "nested duplicate", "[{\"x\":{\"k\":1,\"k\":1}}]", "duplicate key \"k\"" },
        { "BOM", "\xef\xbb\xbf{}", "unexpected character" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_invalid(bad[i].label, bad[i].text, strlen(bad[i].text), bad[i].needle);
}

static void test_bad_utf8(void)
{
    static const struct { const char *label, *text; } bad[] = {
        { "lone continuation", "\"\x80\"" },
        { "overlong 2-byte", "\"\xc0\xaf\"" },
        { "overlong 3-byte", "\"\xe0\x80\xaf\"" },
        { "encoded surrogate", "\"\xed\xa0\x80\"" },
        { "above U+10FFFF", "\"\xf4\x90\x80\x80\"" },
        { "truncated sequence", "\"\xe4\xb8\"" },
        { "invalid byte", "\"\xff\"" },
        { "bad key", "{\"\xc3\":1}" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_invalid(bad[i].label, bad[i].text, strlen(bad[i].text), "invalid UTF-8");
    TAP_OK(json_utf8_valid("a\xc3\xa9", 3) && !json_utf8_valid("\xc3", 1), "json_utf8_valid");
}

static void test_embedded_nul(void)
{
    const char text[] = "[\"a\\u0000b\", \"x\"]";
    expect_invalid("NUL byte outside string", "[1,\0 2]", 7, "unexpected character");
    ls_error err = { 0 };
    json_doc *d = parse(text, &err);
    const json *s = d ? &json_root(d)->items[0] : NULL;
    TAP_OK(s && s->len == 3 && !memcmp(s->str, "a\0b", 3), "\\u0000 decodes to an embedded NUL");
    json_free(d);
}

static void test_depth(void)
{
    char *s = malloc(2 * (JSON_MAX_DEPTH + 1) + 1);
    for (int depth = JSON_MAX_DEPTH; depth <= JSON_MAX_DEPTH + 1; depth++) {
        for (int i = 0; i < depth; i++) { s[i] = '['; s[depth + i] = ']'; }
        s[2 * depth] = 0;
        ls_error err = { 0 };
        json_doc *d = parse(s, &err);
        if (depth == JSON_MAX_DEPTH) TAP_OK(d != NULL, "nesting %d accepted", depth);
        else TAP_OK(!d && strstr(err.msg, "nesting too deep"), "nesting %d rejected: %s", depth, err.msg);
        json_free(d);
    }
    free(s);
    // A bomb far deeper than any C stack would survive without the cap.
    size_t n = 1000000;
    char *bomb = malloc(n);
    memset(bomb, '[', n);
    expect_invalid("depth bomb", bomb, n, "nesting too deep");
    free(bomb);
}

static void test_numbers(void)
{
    ls_error err = { 0 };
    json_doc *d = parse("[42, -9223372036854775808, 9223372036854775807, 9223372036854775808, 2.5, 1e3, -0]",
                        &err);
    const json *a = json_root(d);
    TAP_OK(a && a->len == 7, "number array parsed");
    if (!a) return;
    TAP_OK(a->items[0].is_integer && a->items[0].integer == 42, "42 is an integer");
    TAP_OK(a->items[1].is_integer && a->items[1].integer == INT64_MIN, "INT64_MIN fits");
    TAP_OK(a->items[2].is_integer && a->items[2].integer == INT64_MAX, "INT64_MAX fits");
    TAP_OK(!a->items[3].is_integer && a->items[3].number == 9223372036854775808.0, "2^63 is only a double");
    TAP_OK(!a->items[4].is_integer && a->items[4].number == 2.5, "2.5");
    TAP_OK(!a->items[5].is_integer && a->items[5].number == 1000.0, "1e3 is not an integer literal");
    TAP_OK(a->items[6].is_integer && a->items[6].integer == 0, "-0 is integer 0");
    json_free(d);
}

static void test_getters(void)
{
    ls_error err = { 0 };
    json_doc *d = parse("{\"i\":7,\"f\":2048.0,\"d\":0.5,\"b\":true,\"s\":\"x\",\"n\":null,\"bad\":\"7\"}", &err);
    const json *o = json_root(d);
    int64_t i = 0;
    double x = 0;
    int b = 0, ok = 0;
    TAP_OK(json_get_int(o, "i", 0, &i, &err) && i == 7, "get_int");
    TAP_OK(json_get_int(o, "f", 0, &i, &err) && i == 2048, "get_int accepts 2048.0");
    TAP_OK(!json_get_int(o, "d", 0, &i, &err) && strstr(err.msg, "d: expected an integer"), "get_int rejects 0.5");
    TAP_OK(json_get_int(o, "missing", 5, &i, &err) && i == 5, "get_int default when absent");
    TAP_OK(json_get_int(o, "n", 6, &i, &err) && i == 6, "get_int default when null");
    TAP_OK(!json_get_int(o, "bad", 0, &i, &err) && strstr(err.msg, "bad"), "get_int rejects a string");
    TAP_OK(json_get_double(o, "d", 0, &x, &err) && x == 0.5, "get_double");
    TAP_OK(json_get_bool(o, "b", 0, &b, &err) && b == 1, "get_bool");
    TAP_OK(!json_get_bool(o, "i", 0, &b, &err), "get_bool rejects a number");
    const char *s = json_get_str(o, "s", &ok, &err);
    TAP_OK(s && ok && !strcmp(s, "x"), "get_str");
    TAP_OK(!json_get_str(o, "n", &ok, &err) && ok, "get_str NULL and ok for null");
    TAP_OK(!json_get_str(o, "i", &ok, &err) && !ok, "get_str rejects a number");
    TAP_OK(json_get(o, "zz") == NULL && json_get(&o->items[0], "i") == NULL, "json_get absent / non-object");
    json_free(d);
}

/* A tokenizer-sized object: 200k members and ~5 MB, with one duplicate appended for the second run. */
static char *big_object(size_t n, int with_duplicate, size_t *len)
{
    size_t cap = n * 40 + 64, k = 0;
    char *s = malloc(cap);
    s[k++] = '{';
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(s + k, cap - k, "%s\"tok\\u00e9_%zu\":%zu", i ? "," : "", i, i);
    if (with_duplicate) k += (size_t)snprintf(s + k, cap - k, ",\"tok\\u00e9_%zu\":0", n / 2);
    s[k++] = '}';
    *len = k;
    return s;
}

static void test_large(void)
{
    size_t n = 200000, len;
    char *s = big_object(n, 0, &len);
    clock_t t0 = clock();
    json_doc *d = NULL;
    ls_error err = { 0 };
    ls_status rc = json_parse(&d, s, len, &err);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    const json *o = json_root(d);
    TAP_OK(rc == LS_OK && o->len == n, "200k-member object parsed in %.3f s", secs);
    TAP_OK(secs < 1.0, "large parse is fast (linear)");
    TAP_OK(o && o->key_lens[n - 1] == strlen("tok\xc3\xa9_199999") && o->items[n - 1].integer == (int64_t)n - 1,
           "last member decoded");
    json_free(d);
    free(s);
    s = big_object(n, 1, &len);
    rc = json_parse(&d, s, len, &err);
    TAP_OK(rc == LS_INVALID_ARGUMENT && strstr(err.msg, "duplicate key \"tok\xc3\xa9_100000\""),
           "duplicate in a large object: %s", err.msg);
    free(s);
}

static void test_file(void)
{
    char path[] = "/tmp/ls_test_json_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs("{\"vocab_size\": 32000}", f);
    fclose(f);
    json_doc *d = NULL;
    ls_error err = { 0 };
    int64_t v = 0;
    TAP_OK(json_parse_file(&d, path, 1 << 20, &err) == LS_OK &&
           json_get_int(json_root(d), "vocab_size", 0, &v, &err) && v == 32000, "parse_file");
    json_free(d);
    TAP_OK(json_parse_file(&d, path, 5, &err) == LS_INVALID_ARGUMENT && strstr(err.msg, "too large"),
           "parse_file size cap: %s", err.msg);
    unlink(path);
    TAP_OK(json_parse_file(&d, path, 1 << 20, &err) == LS_NOT_FOUND && strstr(err.msg, path),
           "parse_file missing: %s", err.msg);
}

int main(void)
{
    test_valid_corpus();
    test_invalid_corpus();
    test_bad_utf8();
    test_embedded_nul();
    test_depth();
    test_numbers();
    test_getters();
    test_large();
    test_file();
    return tap_done();
}
