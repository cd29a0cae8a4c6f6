/* Writes the demo model's tokenizer (see tokenizer_gen.h). The merges are learned here rather than
 * shipped: a classic BPE training loop (count adjacent pairs over the word frequencies, merge the most
 * frequent, repeat) over a built-in English text. Words are cut by the very pipeline the encoder uses
 * (the Llama 3 split regex + ByteLevel, parsed from the same JSON that is written out), so training and
 * encoding can never disagree about word boundaries. Ties are broken by the smaller pair of ids, which
 * makes the output deterministic. */
#include "coordinator/tokenizer_gen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/tokenizer_impl.h"

#define LLAMA3_SPLIT \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}" \
    "| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*" \
    "|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"

/* Written verbatim into tokenizer.json and parsed back for training; the regex is JSON-escaped once. */
#define PRE_TOKENIZER_JSON                                                                              \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" LLAMA3_SPLIT \
    "\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"  \
    "\"trim_offsets\":true,\"use_regex\":false}]}"

static const char *const prose[] = {
    "The server keeps one base model in memory and serves many small adapters on top of it. Each request "
    "names the adapter it wants, and the scheduler groups requests so that the graphics processor stays busy.",
    "When the weather turned cold, the people of the valley gathered wood, mended their roofs and stored "
    "apples in the cellar. Children ran along the river, counting the boats that passed before the snow.",
    "A good recipe is short: two cups of flour, one spoon of salt, warm water, and patience. Knead the dough "
    "for ten minutes, let it rest for an hour, then bake it until the crust sounds hollow when you tap it.",
    "It's not that we don't like new ideas; we'd just rather test them first. They'll tell you the same: "
    "measure twice, cut once, and write down what you learned so that the next person can read it.",
    "Numbers appear everywhere: 3 apples, 12 eggs, 365 days, 2024 pages, 100 percent. The train left at "
    "7:45 and arrived at 10:30, which is two hours and forty-five minutes later than planned.",
    "In the library the students read about history, science, music and mathematics. Some of them wrote "
    "letters to their friends, while others listened to the rain falling against the tall windows.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, i))\n",
    "int main(void) {\n    int total = 0;\n    for (int i = 0; i < 10; i++) total += i;\n    return total;\n}\n",
};

static const char *const subjects[] = {"the model", "a student", "my friend", "the old man", "our team",
    "the teacher", "this system", "the little dog", "every worker", "the city", "she", "he", "they", "we",
    "the farmer", "a young painter", "the captain", "her brother", "the doctor", "a careful reader",
    "the children", "the village baker", "his neighbour", "the engineer", "nobody", "everyone"};
static const char *const verbs[] = {"reads", "writes", "builds", "finds", "watches", "opens", "tests",
    "remembers", "carries", "explains", "answers", "follows", "changes", "describes", "learns", "paints",
    "repairs", "measures", "collects", "imagines", "discovers", "forgets", "visits", "prepares", "sells",
    "borrows", "teaches", "considers", "questions", "celebrates"};
static const char *const adjectives[] = {"a long", "the red", "many", "the new", "some small", "the morning",
    "an open", "the quiet", "three good", "the first", "a simple", "the evening", "their own", "the bright",
    "a heavy", "the wooden", "an ancient", "the strange", "a beautiful", "the broken", "a famous", "the empty",
    "a curious", "the golden", "several green", "the frozen", "a wonderful", "the hidden", "a narrow"};
static const char *const nouns[] = {"letter", "door", "questions", "plan", "stones", "news", "window",
    "garden", "books", "answer", "program", "train", "story", "road", "mountain", "bridge", "kitchen",
    "picture", "machine", "harbour", "forest", "market", "island", "language", "journey", "festival",
    "library", "instrument", "experiment", "treasure", "calendar", "building", "problem", "season"};
static const char *const places[] = {"In the north", "At night", "During the summer", "After the storm",
    "Near the station", "Before breakfast", "On Monday", "Every winter", "Inside the museum",
    "Across the valley", "Without warning", "Later that week", "Under the old tree", "Beside the lake"};
static const char *const endings[] = {" today.", " again.", " before dinner.", " in the morning.",
    " with great care.", " every day.", "!", "?", " and then rests.", ", slowly.", " without a word.",
    " for the second time.", " because it was important.", " while it was raining.", " at %u o'clock."};

#define PICK(arr, r) (arr)[(r) % (sizeof(arr) / sizeof(arr)[0])]

static uint32_t lcg(uint32_t *r) { return (*r = *r * 1664525u + 1013904223u) >> 8; }

static void training_text(tok_buf *out)
{
    for (size_t i = 0; i < sizeof prose / sizeof prose[0]; i++) {
        tok_buf_put(out, prose[i], strlen(prose[i]));
        tok_buf_putc(out, '\n');
    }
    uint32_t r = 12345;     // a fixed LCG: the text, and so the vocab, is the same on every machine
    for (int i = 0; i < 6000; i++) {
        char line[256], end[64];
        uint32_t a = lcg(&r), b = lcg(&r), c = lcg(&r);
        snprintf(end, sizeof end, PICK(endings, c), c % 12 + 1);
        int n = snprintf(line, sizeof line, "%s%s%s %s %s %s%s%s", i % 3 ? "" : PICK(places, a >> 8),
                         i % 3 ? "" : ", ", PICK(subjects, a), PICK(verbs, b), PICK(adjectives, b >> 8),
                         PICK(nouns, c >> 4), end, i % 9 == 8 ? "\n" : " ");
        if (i % 3 && line[0] >= 'a' && line[0] <= 'z') line[0] = (char)(line[0] - 32);
        tok_buf_put(out, line, (size_t)n);
        if (i % 50 == 0) {      // a few numbers, so digits merge too
            n = snprintf(line, sizeof line, "There were %u of them, %u.%u percent. ", a % 10000, b % 100, c % 10);
            tok_buf_put(out, line, (size_t)n);
        }
    }
}

/* ---- training ------------------------------------------------------------------------------------ */

typedef struct corpus {
    int32_t *sym;           // all words' symbols back to back
    size_t *start, *len;    // per unique word
    int64_t *count;         // occurrences per unique word
    size_t n_words;
} corpus;

typedef struct vocab {
    tok_map ids;            // token text -> id
    tok_buf *text;          // id -> token text (owned bufs)
    int32_t n;
} vocab;

static void vocab_add(vocab *v, const char *s, size_t n)
{
    v->text = ls_xrealloc(v->text, ((size_t)v->n + 1) * sizeof *v->text);
    v->text[v->n] = (tok_buf){0};
    tok_buf_put(&v->text[v->n], s, n);
    tok_map_put(&v->ids, s, n, v->n);
    v->n++;
}

/* Unique words with counts, each spelled as byte ids (id b = byte b). */
static ls_status build_corpus(corpus *c, ls_error *err)
{
    json_doc *doc = NULL;
    tok_pipeline *pipe = NULL;
    tok_pieces in = {0}, words = {0};
    tok_buf text = {0};
    tok_map seen = {0};
    ls_status rc = json_parse(&doc, PRE_TOKENIZER_JSON, strlen(PRE_TOKENIZER_JSON), err);
    if (rc == LS_OK) rc = tok_pipeline_load(&pipe, NULL, json_root(doc), err);
    training_text(&text);
    tok_pieces_add(&in, text.p, text.n, -1, true);
    if (rc == LS_OK) rc = tok_pretokenize(pipe, &in, &words, err);
    size_t total = 0;
    for (size_t i = 0; rc == LS_OK && i < words.n; i++) {
        const char *w = words.text.p + words.v[i].off;
        int32_t k = tok_map_get(&seen, w, words.v[i].len);
        if (k >= 0) {
            c->count[k]++;
            continue;
        }
        tok_map_put(&seen, w, words.v[i].len, (int32_t)c->n_words);
        c->start = ls_xrealloc(c->start, (c->n_words + 1) * sizeof *c->start);
        c->len = ls_xrealloc(c->len, (c->n_words + 1) * sizeof *c->len);
        c->count = ls_xrealloc(c->count, (c->n_words + 1) * sizeof *c->count);
        c->sym = ls_xrealloc(c->sym, (total + words.v[i].len) * sizeof *c->sym);
        size_t l, n = 0;
        for (size_t j = 0; j < words.v[i].len; j += l)    // one alphabet character per byte
            c->sym[total + n++] = tok_bytelevel_byte(tok_utf8_decode(w + j, words.v[i].len - j, &l));
        c->start[c->n_words] = total, c->len[c->n_words] = n, c->count[c->n_words++] = 1;
        total += n;
    }
    tok_map_free(&seen);
    tok_buf_free(&text);
    tok_pieces_free(&in);
    tok_pieces_free(&words);
    tok_pipeline_free(pipe);
    json_free(doc);
    return rc;
}

typedef struct pair_count {
    uint64_t key;           // (a << 32) | b, UINT64_MAX = empty
    int64_t count;
} pair_count;

/* The most frequent adjacent pair (ties: smallest key); 0 when no pair occurs twice. */
static int best_pair(const corpus *c, pair_count *tab, size_t mask, int32_t *a, int32_t *b)
{
    for (size_t i = 0; i <= mask; i++) tab[i] = (pair_count){UINT64_MAX, 0};
    uint64_t best = UINT64_MAX;
    int64_t best_n = 1;
    for (size_t w = 0; w < c->n_words; w++) {
        const int32_t *s = c->sym + c->start[w];
        for (size_t i = 0; i + 1 < c->len[w]; i++) {
            uint64_t key = ((uint64_t)(uint32_t)s[i] << 32) | (uint32_t)s[i + 1];
            size_t h = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
            while (tab[h].key != UINT64_MAX && tab[h].key != key) h = (h + 1) & mask;
            tab[h].key = key;
            tab[h].count += c->count[w];
            if (tab[h].count > best_n || (tab[h].count == best_n && key < best)) best_n = tab[h].count, best = key;
        }
    }
    if (best == UINT64_MAX) return 0;
    *a = (int32_t)(best >> 32), *b = (int32_t)(best & 0xFFFFFFFFu);
    return 1;
}

static void apply_merge(corpus *c, int32_t a, int32_t b, int32_t id)
{
    for (size_t w = 0; w < c->n_words; w++) {
        int32_t *s = c->sym + c->start[w];
        size_t o = 0;
        for (size_t i = 0; i < c->len[w]; i++) {
            if (i + 1 < c->len[w] && s[i] == a && s[i + 1] == b) s[o++] = id, i++;
            else s[o++] = s[i];
        }
        c->len[w] = o;
    }
}

/* Learns merges until the vocab (plus the 2 special tokens) reaches target; merges[2k], merges[2k+1]. */
static int32_t *train(corpus *c, vocab *v, int target, size_t *n_merges)
{
    size_t total = 0, size = 1024;
    for (size_t w = 0; w < c->n_words; w++) total += c->len[w];
    while (size < 2 * total) size *= 2;
    pair_count *tab = ls_xmalloc(size * sizeof *tab);
    int32_t *merges = NULL, a, b;
    *n_merges = 0;
    while (v->n + 2 < target && best_pair(c, tab, size - 1, &a, &b)) {
        tok_buf joined = {0};
        tok_buf_put(&joined, v->text[a].p, v->text[a].n);
        tok_buf_put(&joined, v->text[b].p, v->text[b].n);
        int32_t id = tok_map_get(&v->ids, joined.p, joined.n);
        if (id < 0) vocab_add(v, joined.p, joined.n), id = v->n - 1;
        tok_buf_free(&joined);
        apply_merge(c, a, b, id);
        merges = ls_xrealloc(merges, (*n_merges + 1) * 2 * sizeof *merges);
        merges[2 * *n_merges] = a, merges[2 * *n_merges + 1] = b;
        (*n_merges)++;
    }
    free(tab);
    return merges;
}

/* ---- writing ------------------------------------------------------------------------------------- */

static void put_s(tok_buf *b, const char *s) { tok_buf_put(b, s, strlen(s)); }

/* Token texts are byte-level alphabet characters (never controls), but escape properly anyway. */
static void put_json_str(tok_buf *b, const char *s, size_t n)
{
    tok_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        char esc[8];
        if (s[i] == '"' || s[i] == '\\') tok_buf_putc(b, '\\'), tok_buf_putc(b, s[i]);
        else if ((uint8_t)s[i] < 0x20) tok_buf_put(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", s[i]));
        else tok_buf_putc(b, s[i]);
    }
    tok_buf_putc(b, '"');
}

static void put_added(tok_buf *b, int32_t id, const char *content, bool last)
{
    char line[256];
    snprintf(line, sizeof line,
             "    {\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, "
             "\"rstrip\": false, \"normalized\": false, \"special\": true}%s\n", id, content, last ? "" : ",");
    put_s(b, line);
}

static void put_model(tok_buf *b, const vocab *v, const int32_t *merges, size_t n_merges)
{
    put_s(b, "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
             "\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": false, "
             "\"byte_fallback\": false, \"ignore_merges\": false,\n    \"vocab\": {");
    for (int32_t i = 0; i < v->n; i++) {
        char num[32];
        put_s(b, i ? ", " : "");
        put_json_str(b, v->text[i].p, v->text[i].n);
        put_s(b, (snprintf(num, sizeof num, ": %d", i), num));
    }
    put_s(b, "},\n    \"merges\": [");
    for (size_t i = 0; i < n_merges; i++) {
        put_s(b, i ? ", [" : "[");
        put_json_str(b, v->text[merges[2 * i]].p, v->text[merges[2 * i]].n);
        put_s(b, ", ");
        put_json_str(b, v->text[merges[2 * i + 1]].p, v->text[merges[2 * i + 1]].n);
        put_s(b, "]");
    }
    put_s(b, "]}\n}\n");
}

static void tokenizer_json(tok_buf *b, const vocab *v, const int32_t *merges, size_t n_merges)
{
    char tpl[1024];
    int32_t bos = v->n, eos = v->n + 1;
    put_s(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n");
    put_added(b, bos, "<|begin_of_text|>", false);
    put_added(b, eos, "<|end_of_text|>", true);
    put_s(b, "  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": " PRE_TOKENIZER_JSON ",\n");
    snprintf(tpl, sizeof tpl,
             "  \"post_processor\": {\"type\": \"TemplateProcessing\", "
             "\"single\": [{\"SpecialToken\": {\"id\": \"<|begin_of_text|>\", \"type_id\": 0}}, "
             "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
             "\"pair\": [{\"SpecialToken\": {\"id\": \"<|begin_of_text|>\", \"type_id\": 0}}, "
             "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, "
             "{\"SpecialToken\": {\"id\": \"<|begin_of_text|>\", \"type_id\": 1}}, "
             "{\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}], "
             "\"special_tokens\": {\"<|begin_of_text|>\": {\"id\": \"<|begin_of_text|>\", \"ids\": [%d], "
             "\"tokens\": [\"<|begin_of_text|>\"]}}},\n", bos);
    put_s(b, tpl);
    put_s(b, "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, "
             "\"use_regex\": true},\n");
    put_model(b, v, merges, n_merges);
}

static const char CONFIG_JSON[] =
    "{\n  \"add_bos_token\": true,\n  \"add_eos_token\": false,\n  \"bos_token\": \"<|begin_of_text|>\",\n"
    "  \"eos_token\": \"<|end_of_text|>\",\n  \"clean_up_tokenization_spaces\": false,\n"
    "  \"model_max_length\": 4096,\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n";

static ls_status write_file(const char *dir, const char *name, const char *s, size_t n, ls_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: %s", path, strerror(errno));
    size_t w = fwrite(s, 1, n, f);
    int bad = fclose(f) != 0 || w != n;
    return bad ? ls_fail(err, LS_INVALID_ARGUMENT, "%s: write failed: %s", path, strerror(errno)) : LS_OK;
}

ls_status tokenizer_gen_write(const char *dir, int target_vocab, int *vocab_size, ls_error *err)
{
    if (target_vocab < 258 || target_vocab > 1000000)
        return ls_fail(err, LS_INVALID_ARGUMENT, "tokenizer_gen: target vocab %d outside [258, 1000000]", target_vocab);
    corpus c = {0};
    vocab v = {0};
    ls_status rc = build_corpus(&c, err);
    for (int b = 0; b < 256; b++) {
        char ch[4];
        vocab_add(&v, ch, tok_utf8_encode(tok_bytelevel_cp((uint8_t)b), ch));
    }
    size_t n_merges = 0;
    int32_t *merges = rc == LS_OK ? train(&c, &v, target_vocab, &n_merges) : NULL;
    tok_buf out = {0};
    if (rc == LS_OK) {
        tokenizer_json(&out, &v, merges, n_merges);
        rc = write_file(dir, "tokenizer.json", out.p, out.n, err);
    }
    if (rc == LS_OK) rc = write_file(dir, "tokenizer_config.json", CONFIG_JSON, strlen(CONFIG_JSON), err);
    if (rc == LS_OK) *vocab_size = v.n + 2;
    tok_buf_free(&out);
    for (int32_t i = 0; i < v.n; i++) tok_buf_free(&v.text[i]);
    free(v.text);
    tok_map_free(&v.ids);
    free(merges);
    free(c.sym), free(c.start), free(c.len), free(c.count);
    return rc;
}
