/* Exact-match oracle test: the C tokenizer against the real Hugging Face tokenizers library.
 * gen_reference.mjs runs the library (Node binding) over corpus.jsonl; every line must give the same
 * ids (user text with special-token matching off, with bos, and template mode with it on), the same
 * decode, and streamed deltas that are whole UTF-8 and concatenate to that decode.
 *   test_tokenizer_oracle <name> <tokenizer dir | gen | variant:NAME> <corpus.jsonl> <gen_reference.mjs>
 * "gen" tests the built-in demo tokenizer (tokenizer_gen_write), "variant:NAME" a tokenizer.json that
 * make_variant.mjs derives (newer SentencePiece conversions, added-token flags). Skips (TAP "1..0 # SKIP") without node or
 * tests/tokenizer/node_modules (install: npm ci --prefix tests/tokenizer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/json.h"
#include "coordinator/tokenizer.h"
#include "coordinator/tokenizer_gen.h"
#include "coordinator/tokenizer_impl.h"
#include "tests/tap.h"

enum { CHECKS = 7, SHOW = 4 };
static const char *const check_name[CHECKS] = {
    "encode user text (special tokens as plain text)", "encode with bos/eos (add_special_tokens)",
    "encode server template (special tokens matched)", "decode(encode(x))", "decode of template ids",
    "streamed deltas concatenate to decode", "every streamed delta is whole UTF-8",
};

typedef struct tally {
    size_t fail[CHECKS];
    size_t shown;
} tally;

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    tok_buf b = {0};
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) tok_buf_put(&b, chunk, r);
    fclose(f);
    *len = b.n;
    return tok_buf_cstr(&b);
}

/* Lines of a buffer, split in place. */
static char **split_lines(char *s, size_t len, size_t *n)
{
    char **v = NULL;
    *n = 0;
    for (size_t i = 0; i < len;) {
        char *e = memchr(s + i, '\n', len - i);
        size_t l = e ? (size_t)(e - (s + i)) : len - i;
        if (l) {
            v = realloc(v, (*n + 1) * sizeof *v);
            v[(*n)++] = s + i;
        }
        s[i + l] = '\0';
        i += l + 1;
    }
    return v;
}

static bool same_ids(const json *a, const int32_t *ids, size_t n)
{
    if (!a || a->type != JSON_ARRAY || a->len != n) return false;
    for (size_t i = 0; i < n; i++)
        if (a->items[i].integer != ids[i]) return false;
    return true;
}

static void show_ids(const char *what, const int32_t *ids, size_t n)
{
    printf("#   %s:", what);
    for (size_t i = 0; i < n && i < 40; i++) printf(" %d", ids[i]);
    printf("%s\n", n > 40 ? " ..." : "");
}

static void report(tally *t, int check, size_t line, const char *s, size_t len)
{
    t->fail[check]++;
    if (t->shown++ >= SHOW) return;
    printf("# line %zu, %s: input (%zu bytes) \"", line + 1, check_name[check], len);
    for (size_t i = 0; i < len && i < 120; i++)
        printf((uint8_t)s[i] < 0x20 || s[i] == '"' ? "\\x%02x" : "%c", (uint8_t)s[i]);
    printf("\"\n");
}

/* Streams ids through detok: the deltas must be whole UTF-8 and concatenate to want. */
static void check_stream(const tokenizer *tk, const int32_t *ids, size_t n, const json *want, tally *t,
                         size_t line, const char *s, size_t len)
{
    detok *d = detok_new(tk);
    tok_buf all = {0};
    bool whole = true;
    for (size_t i = 0; i <= n; i++) {
        char *out;
        size_t k = i < n ? detok_push(d, ids[i], &out) : detok_flush(d, &out);
        whole = whole && tok_utf8_invalid_at(out, k) == k;
        tok_buf_put(&all, out, k);
        free(out);
    }
    detok_free(d);
    if (all.n != want->len || (all.n && memcmp(all.p, want->str, all.n))) report(t, 5, line, s, len);
    if (!whole) report(t, 6, line, s, len);
    tok_buf_free(&all);
}

typedef ls_status (*encode_fn)(const tokenizer *, const char *, size_t, int32_t **, size_t *, ls_error *);

static void check_encode(const tokenizer *tk, encode_fn fn, const json *want, int check, tally *t, size_t line,
                         const char *s, size_t len, int32_t **ids, size_t *n)
{
    ls_error err = {0};
    if (fn(tk, s, len, ids, n, &err) != LS_OK) {
        printf("# line %zu: encode failed: %s\n", line + 1, err.msg);
        *ids = NULL, *n = 0;
    }
    if (!same_ids(want, *ids, *n)) {
        report(t, check, line, s, len);
        if (t->shown <= SHOW) show_ids("C  ", *ids, *n);
    }
}

static void check_decode(const tokenizer *tk, const int32_t *ids, size_t n, const json *want, int check,
                         tally *t, size_t line, const char *s, size_t len)
{
    size_t glen;
    char *got = tokenizer_decode_len(tk, ids, n, &glen);
    if (!want || want->type != JSON_STRING || glen != want->len || memcmp(got, want->str, glen)) {
        report(t, check, line, s, len);
        if (t->shown <= SHOW) printf("#   C decode: \"%s\"\n#   HF      : \"%s\"\n", got, want ? want->str : "?");
    }
    if (want && want->type == JSON_STRING) check_stream(tk, ids, n, want, t, line, s, len);
    free(got);
}

static void check_line(const tokenizer *tk, const json *c, const json *r, size_t line, tally *t)
{
    const json *sv = json_get(c, "s");
    const char *s = sv->str;
    size_t len = sv->len, n;
    int32_t *ids;
    check_encode(tk, tokenizer_encode, json_get(r, "bos"), 1, t, line, s, len, &ids, &n);
    free(ids);
    check_encode(tk, tokenizer_encode_template, json_get(r, "tpl"), 2, t, line, s, len, &ids, &n);
    check_decode(tk, ids, n, json_get(r, "dtpl"), 4, t, line, s, len);
    free(ids);
    check_encode(tk, tokenizer_encode_text, json_get(r, "ids"), 0, t, line, s, len, &ids, &n);
    check_decode(tk, ids, n, json_get(r, "dec"), 3, t, line, s, len);
    free(ids);
}

static int run_reference(const char *script, const char *dir, const char *corpus, const char *out)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "node '%s' '%s' '%s' '%s'", script, dir, corpus, out);
    return system(cmd);
}

static int compare(const tokenizer *tk, const char *name, const char *corpus_path, const char *ref_path)
{
    size_t clen, rlen, nc, nr;
    char *ctext = read_file(corpus_path, &clen), *rtext = read_file(ref_path, &rlen);
    TAP_OK(ctext && rtext, "%s: corpus and reference read", name);
    if (!ctext || !rtext) return tap_done();
    char **cl = split_lines(ctext, clen, &nc), **rl = split_lines(rtext, rlen, &nr);
    TAP_OK(nc == nr && nc >= 2000, "%s: %zu corpus strings, %zu reference lines", name, nc, nr);
    tally t = {0};
    clock_t t0 = clock();
    for (size_t i = 0; i < nc && i < nr; i++) {
        json_doc *cd = NULL, *rd = NULL;
        ls_error err = {0};
        if (json_parse(&cd, cl[i], strlen(cl[i]), &err) || json_parse(&rd, rl[i], strlen(rl[i]), &err))
            printf("# line %zu: %s\n", i + 1, err.msg), t.fail[0]++;
        else check_line(tk, json_root(cd), json_root(rd), i, &t);
        json_free(cd);
        json_free(rd);
    }
    TAP_DIAG("%s: checked in %.2f s of CPU", name, (double)(clock() - t0) / CLOCKS_PER_SEC);
    for (int k = 0; k < CHECKS; k++)
        TAP_OK(t.fail[k] == 0, "%s: %s: %zu/%zu exact", name, check_name[k], nc - t.fail[k], nc);
    free(cl), free(rl), free(ctext), free(rtext);
    return 0;
}

/* Writes the tokenizer under test into tmp when it is made rather than installed: "gen" (the demo
 * tokenizer) or "variant:NAME" (make_variant.mjs over a real or the demo tokenizer). */
static int prepare(const char *spec, const char *tmp, const char *script_dir, char *dir, size_t cap)
{
    ls_error err = {0};
    int vocab = 0;
    snprintf(dir, cap, "%s", tmp);
    if (!strcmp(spec, "gen")) {
        TAP_OK(tokenizer_gen_write(tmp, 1024, &vocab, &err) == LS_OK, "gen: wrote %d tokens %s", vocab, err.msg);
        return err.code == LS_OK ? 0 : -1;
    }
    if (strncmp(spec, "variant:", 8)) {
        snprintf(dir, cap, "%s", spec);
        return 0;
    }
    char demo[256], cmd[8192];
    snprintf(demo, sizeof demo, "%s/demo", tmp);
    if (mkdir(demo, 0755) != 0 || tokenizer_gen_write(demo, 1024, &vocab, &err) != LS_OK) return -1;
    snprintf(cmd, sizeof cmd, "node '%s/make_variant.mjs' '%s' '%s' '%s'", script_dir, spec + 8, demo, tmp);
    TAP_OK(system(cmd) == 0, "%s: variant written", spec);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s <name> <tokenizer dir | gen | variant:NAME> <corpus.jsonl> <gen_reference.mjs>\n",
                argv[0]);
        return 2;
    }
    const char *name = argv[1], *spec = argv[2], *corpus = argv[3], *script = argv[4];
    char script_dir[4096], mods[4200], tmp[] = "/tmp/ls-tok-oracle-XXXXXX", dir[4096], ref[sizeof tmp + 32];
    const char *slash = strrchr(script, '/');
    snprintf(script_dir, sizeof script_dir, "%.*s", slash ? (int)(slash - script) : 1, slash ? script : ".");
    snprintf(mods, sizeof mods, "%s/node_modules/@anush008/tokenizers", script_dir);
    if (access(mods, R_OK) != 0 || system("node --version > /dev/null 2>&1") != 0)
        TAP_SKIP_ALL("needs node and tests/tokenizer/node_modules (npm ci --prefix tests/tokenizer)");
    bool made = !strcmp(spec, "gen") || !strncmp(spec, "variant:", 8);
    if (!made && access(spec, R_OK) != 0) TAP_SKIP_ALL("tokenizer package not installed");
    if (!mkdtemp(tmp)) return 1;
    if (prepare(spec, tmp, script_dir, dir, sizeof dir) == 0) {
        ls_error err = {0};
        snprintf(ref, sizeof ref, "%s/reference.jsonl", tmp);
        TAP_OK(run_reference(script, dir, corpus, ref) == 0, "%s: Hugging Face tokenizers produced the reference", name);
        tokenizer *tk = NULL;
        TAP_OK(tokenizer_load(&tk, dir, &err) == LS_OK, "%s: C tokenizer loads %s", name, err.msg);
        if (tk) compare(tk, name, corpus, ref);
        tokenizer_free(tk);
    }
    char cmd[sizeof tmp + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) TAP_DIAG("could not remove %s", tmp);
    return tap_done();
}
