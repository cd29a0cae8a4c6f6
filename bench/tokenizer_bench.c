/* Tokenizer benchmark: encode throughput of the C tokenizer next to the Hugging Face library's (Node
 * binding, bench/tokenizer_bench_hf.mjs) on the same corpus, plus the time of one 1 MB word without
 * spaces (the BPE worst case, reliability.md row 33). Single-threaded on the C side.
 *   tokenizer_bench [--corpus F] [--hf SCRIPT|none] [--json OUT] [--seconds S] NAME=DIR|gen ...
 * Run from the repository root, defaults: --corpus tests/tokenizer/corpus.jsonl,
 * --hf bench/tokenizer_bench_hf.mjs (skipped when node or tests/tokenizer/node_modules is missing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/json.h"
#include "coordinator/tokenizer.h"
#include "coordinator/tokenizer_gen.h"
#include "coordinator/tokenizer_impl.h"

typedef struct opts {
    const char *corpus, *hf, *json;
    double seconds;
} opts;

typedef struct corpus {
    char **s;
    size_t *len, n, bytes;
} corpus;

typedef struct result {
    const char *name;
    double enc_mb_s, tok_s, dec_mb_s, word_a_s, word_rand_s;
    json_doc *hf;           // the HF script's figures, NULL when not run
} result;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int load_corpus(const char *path, corpus *c)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t r;
    while ((r = getline(&line, &cap, f)) > 0) {
        json_doc *d = NULL;
        ls_error err = {0};
        const json *s;
        if (json_parse(&d, line, (size_t)r, &err) == LS_OK && (s = json_get(json_root(d), "s")) && s->type == JSON_STRING) {
            c->s = realloc(c->s, (c->n + 1) * sizeof *c->s);
            c->len = realloc(c->len, (c->n + 1) * sizeof *c->len);
            c->s[c->n] = malloc(s->len + 1);
            memcpy(c->s[c->n], s->str, s->len + 1);
            c->len[c->n++] = s->len;
            c->bytes += s->len;
        }
        json_free(d);
    }
    free(line);
    fclose(f);
    return 0;
}

/* Encodes the corpus until `seconds` have passed; returns MB/s and fills tokens/s. */
static double bench_encode(const tokenizer *t, const corpus *c, double seconds, double *tok_s)
{
    size_t reps = 0, tokens = 0;
    double t0 = now(), dt;
    do {
        for (size_t i = 0; i < c->n; i++) {
            int32_t *ids;
            size_t n;
            ls_error err;
            if (tokenizer_encode_text(t, c->s[i], c->len[i], &ids, &n, &err) == LS_OK) tokens += n, free(ids);
        }
        reps++;
    } while ((dt = now() - t0) < seconds);
    *tok_s = (double)tokens / dt;
    return (double)c->bytes * (double)reps / dt / 1e6;
}

/* Decodes the corpus' ids: MB/s of decoded text. */
static double bench_decode(const tokenizer *t, const corpus *c, double seconds)
{
    int32_t **ids = calloc(c->n, sizeof *ids);
    size_t *n = calloc(c->n, sizeof *n), out = 0, reps = 0;
    ls_error err;
    for (size_t i = 0; i < c->n; i++) tokenizer_encode_text(t, c->s[i], c->len[i], &ids[i], &n[i], &err);
    double t0 = now(), dt;
    do {
        for (size_t i = 0; i < c->n; i++) {
            size_t len;
            free(tokenizer_decode_len(t, ids[i], n[i], &len));
            out += len;
        }
        reps++;
    } while ((dt = now() - t0) < seconds);
    for (size_t i = 0; i < c->n; i++) free(ids[i]);
    free(ids), free(n);
    return (double)out / dt / 1e6;
}

static double bench_word(const tokenizer *t, bool random_letters)
{
    size_t n = 1 << 20;
    char *s = malloc(n);
    uint32_t r = 1;     // the same generator as the HF script, so both see the same word
    for (size_t i = 0; i < n; i++) {
        r = r * 1103515245u + 12345u;
        s[i] = random_letters ? (char)('a' + (r >> 16) % 26) : 'a';
    }
    int32_t *ids;
    size_t m;
    ls_error err;
    double t0 = now();
    if (tokenizer_encode_text(t, s, n, &ids, &m, &err) == LS_OK) free(ids);
    double dt = now() - t0;
    free(s);
    return dt;
}

static json_doc *run_hf(const opts *o, const char *dir)
{
    char cmd[8192], out[] = "/tmp/ls-tok-bench-XXXXXX";
    int fd = mkstemp(out);
    if (fd < 0) return NULL;
    close(fd);
    snprintf(cmd, sizeof cmd, "node '%s' '%s' '%s' %g '%s'", o->hf, dir, o->corpus, o->seconds, out);
    json_doc *d = NULL;
    ls_error err;
    if (system(cmd) != 0 || json_parse_file(&d, out, 1 << 20, &err) != LS_OK) d = NULL;
    unlink(out);
    return d;
}

static double hf_num(const result *r, const char *key, const char *sub)
{
    const json *v = r->hf ? json_get(json_root(r->hf), key) : NULL;
    if (sub) v = json_get(v, sub);
    return v && v->type == JSON_NUMBER ? v->number : -1;
}

static void print_row(const result *r)
{
    printf("%-11s C %7.2f MB/s %9.0f tok/s | HF %7.2f MB/s (batch, all cores %7.2f) | decode C %7.1f MB/s | "
           "1 MB word: C %.3f s / %.3f s, HF %.3f s / %.3f s (aaaa / random letters)\n",
           r->name, r->enc_mb_s, r->tok_s, hf_num(r, "encode_mb_s", NULL), hf_num(r, "batch_encode_mb_s", NULL),
           r->dec_mb_s, r->word_a_s, r->word_rand_s, hf_num(r, "word_1mb_s", "a"),
           hf_num(r, "word_1mb_s", "random_letters"));
}

static void write_json(const opts *o, int argc, char **argv, const corpus *c, const result *res, size_t n)
{
    FILE *f = fopen(o->json, "w");
    if (!f) return;
    char date[64];
    time_t t = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    fprintf(f, "{\n  \"command\": \"");
    for (int i = 0; i < argc; i++) fprintf(f, "%s%s", i ? " " : "", argv[i]);
    fprintf(f, "\",\n  \"date\": \"%s\",\n  \"cpus\": %ld,\n  \"corpus\": {\"path\": \"%s\", \"strings\": %zu, \"bytes\": %zu},\n"
               "  \"results\": [\n", date, sysconf(_SC_NPROCESSORS_ONLN), o->corpus, c->n, c->bytes);
    for (size_t i = 0; i < n; i++) {
        const result *r = &res[i];
        fprintf(f, "    {\"tokenizer\": \"%s\", \"c\": {\"encode_mb_s\": %.3f, \"tokens_per_s\": %.0f, \"decode_mb_s\": %.3f, "
                   "\"word_1mb_s\": {\"a\": %.4f, \"random_letters\": %.4f}}, \"hf\": ",
                r->name, r->enc_mb_s, r->tok_s, r->dec_mb_s, r->word_a_s, r->word_rand_s);
        fprintf(f, "{\"encode_mb_s\": %.3f, \"tokens_per_s\": %.0f, \"batch_encode_mb_s\": %.3f, "
                   "\"word_1mb_s\": {\"a\": %.4f, \"random_letters\": %.4f}}}%s\n",
                hf_num(r, "encode_mb_s", NULL), hf_num(r, "tokens_per_s", NULL), hf_num(r, "batch_encode_mb_s", NULL),
                hf_num(r, "word_1mb_s", "a"), hf_num(r, "word_1mb_s", "random_letters"), i + 1 < n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
}

static int bench_one(const opts *o, const char *spec, const corpus *c, result *r)
{
    char tmp[] = "/tmp/ls-tok-bench-gen-XXXXXX", name[64];
    const char *eq = strchr(spec, '='), *dir = eq ? eq + 1 : spec;
    snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - spec) : 63, spec);
    ls_error err = {0};
    int vocab;
    if (!strcmp(dir, "gen") && (!mkdtemp(tmp) || tokenizer_gen_write(tmp, 1024, &vocab, &err) != LS_OK)) return -1;
    if (!strcmp(dir, "gen")) dir = tmp;
    tokenizer *t = NULL;
    if (tokenizer_load(&t, dir, &err) != LS_OK) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return -1;
    }
    *r = (result){.name = strdup(name)};
    r->enc_mb_s = bench_encode(t, c, o->seconds, &r->tok_s);
    r->dec_mb_s = bench_decode(t, c, o->seconds);
    r->word_a_s = bench_word(t, false);
    r->word_rand_s = bench_word(t, true);
    tokenizer_free(t);
    if (o->hf) r->hf = run_hf(o, dir);
    if (dir == tmp) {
        char cmd[sizeof tmp + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o = {.corpus = "tests/tokenizer/corpus.jsonl", .hf = "bench/tokenizer_bench_hf.mjs",
              .json = "tokenizer_bench.json", .seconds = 1.0};
    int first = 1;
    for (; first + 1 < argc && !strncmp(argv[first], "--", 2); first += 2) {
        if (!strcmp(argv[first], "--corpus")) o.corpus = argv[first + 1];
        else if (!strcmp(argv[first], "--hf")) o.hf = strcmp(argv[first + 1], "none") ? argv[first + 1] : NULL;
        else if (!strcmp(argv[first], "--json")) o.json = argv[first + 1];
        else if (!strcmp(argv[first], "--seconds")) o.seconds = atof(argv[first + 1]);
    }
    if (first >= argc) {
        fprintf(stderr, "usage: %s [--corpus F] [--hf SCRIPT|none] [--json OUT] [--seconds S] NAME=DIR|gen ...\n", argv[0]);
        return 2;
    }
    if (o.hf && (access(o.hf, R_OK) || access("tests/tokenizer/node_modules/@anush008/tokenizers", R_OK) ||
                 system("node --version > /dev/null 2>&1"))) {
        fprintf(stderr, "note: Hugging Face side skipped (needs node, %s and tests/tokenizer/node_modules)\n", o.hf);
        o.hf = NULL;
    }
    corpus c = {0};
    if (load_corpus(o.corpus, &c) != 0 || !c.n) {
        fprintf(stderr, "cannot read corpus %s\n", o.corpus);
        return 1;
    }
    printf("corpus: %zu strings, %zu bytes; encode = user text, one string at a time\n", c.n, c.bytes);
    result *res = calloc((size_t)argc, sizeof *res);
    size_t n = 0;
    for (int i = first; i < argc; i++)
        if (bench_one(&o, argv[i], &c, &res[n]) == 0) print_row(&res[n++]);
    write_json(&o, argc, argv, &c, res, n);
    printf("wrote %s\n", o.json);
    for (size_t i = 0; i < n; i++) json_free(res[i].hf), free((char *)res[i].name);
    for (size_t i = 0; i < c.n; i++) free(c.s[i]);
    free(c.s), free(c.len), free(res);
    return n ? 0 : 1;
}
