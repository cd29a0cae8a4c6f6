/* Loading tokenizer.json + tokenizer_config.json, added tokens, and the encode driver:
 *   validate UTF-8 -> cut out added tokens -> normalize -> pre-tokenize -> BPE per word -> ids.
 *
 * Added tokens are matched leftmost-longest with a byte trie, as the reference does with Aho-Corasick.
 * For user text, special tokens are NOT matched (the reference's encode_special_tokens=True, which
 * transformers exposes as split_special_tokens=True): "<|eot_id|>" typed by a user is encoded as the
 * plain characters it is made of, and only tokenizer_encode_template, fed by the server's own chat
 * template, yields control tokens (reliability.md §2 and rows 29-30). Non-special added tokens (Qwen's
 * "<think>") are still matched in user text, exactly as the reference does. */
#include "coordinator/tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/uchar.h>

#include "common/log.h"

#define TOKENIZER_JSON_MAX (512u << 20)     // bytes; real files are 2-20 MB
#define TOKENIZER_CONFIG_MAX (16u << 20)

/* ---- added-token trie ---------------------------------------------------------------------------- */

static int32_t trie_node(tok_trie *tr, uint8_t byte)
{
    if (tr->n == tr->cap) {
        tr->cap = tr->cap ? tr->cap * 2 : 256;
        tr->node = ls_xrealloc(tr->node, tr->cap * sizeof *tr->node);
    }
    tr->node[tr->n] = (tok_trie_node){.child = -1, .sibling = -1, .added = -1, .byte = byte};
    return (int32_t)tr->n++;
}

static int32_t trie_child(const tok_trie *tr, int32_t at, uint8_t byte)
{
    for (int32_t c = tr->node[at].child; c >= 0; c = tr->node[c].sibling)
        if (tr->node[c].byte == byte) return c;
    return -1;
}

/* A later token with the same text wins, as a later entry does in the reference's maps. */
static void trie_add(tok_trie *tr, const char *s, size_t n, int32_t added)
{
    if (!tr->n) trie_node(tr, 0);
    int32_t at = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = trie_child(tr, at, (uint8_t)s[i]);
        if (c < 0) {
            c = trie_node(tr, (uint8_t)s[i]);
            tr->node[c].sibling = tr->node[at].child;
            tr->node[at].child = c;
        }
        at = c;
    }
    tr->node[at].added = added;
}

/* Longest added token starting at s[0]; returns its index and sets *len, or -1. */
static int32_t trie_longest(const tok_trie *tr, const char *s, size_t n, size_t *len)
{
    int32_t at = 0, best = -1;
    for (size_t i = 0; i < n && at >= 0; i++) {
        at = trie_child(tr, at, (uint8_t)s[i]);
        if (at >= 0 && tr->node[at].added >= 0) best = tr->node[at].added, *len = i + 1;
    }
    return best;
}

/* ---- matching added tokens in text --------------------------------------------------------------- */

/* Rust regex's Unicode \w, which single_word tokens test their neighbours with. */
static bool is_word_char(uint32_t c)
{
    int8_t t = u_charType((UChar32)c);
    return u_hasBinaryProperty((UChar32)c, UCHAR_ALPHABETIC) || t == U_NON_SPACING_MARK ||
           t == U_ENCLOSING_MARK || t == U_COMBINING_SPACING_MARK || t == U_DECIMAL_DIGIT_NUMBER ||
           t == U_CONNECTOR_PUNCTUATION || u_hasBinaryProperty((UChar32)c, UCHAR_JOIN_CONTROL);
}

static size_t prev_char(const char *s, size_t at)
{
    size_t k = at - 1;
    while (k > 0 && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
    return k;
}

static bool single_word_ok(const char *s, size_t n, size_t a, size_t b)
{
    size_t l;
    if (a > 0 && is_word_char(tok_utf8_decode(s + prev_char(s, a), a - prev_char(s, a), &l))) return false;
    return b == n || !is_word_char(tok_utf8_decode(s + b, n - b, &l));
}

typedef struct match_ctx {
    const tokenizer *t;
    const tok_trie *trie;
    bool specials;              // match special tokens too (server template only)
    bool first;                 // the text starts at byte 0 of the original input
} match_ctx;

/* Cuts s into text pieces and added-token pieces. A match that is rejected (a special token in user
 * text, a single_word token inside a word) is not rescanned, as in the reference. */
static void split_added(const match_ctx *c, const char *s, size_t n, tok_pieces *out)
{
    size_t done = 0, i = 0, l, mlen = 0;
    while (c->trie->n && i < n) {
        int32_t k = trie_longest(c->trie, s + i, n - i, &mlen);
        if (k < 0) {
            i++;
            continue;
        }
        const tok_added *a = &c->t->added[k];
        size_t start = i, stop = i + mlen;
        i = stop;
        if ((a->special && !c->specials) || (a->single_word && !single_word_ok(s, n, start, stop))) continue;
        if (a->lstrip)
            while (start > done && tok_is_white_space(tok_utf8_decode(s + prev_char(s, start),
                                                                      start - prev_char(s, start), &l)))
                start = prev_char(s, start);
        if (a->rstrip)
            while (stop < n && tok_is_white_space(tok_utf8_decode(s + stop, n - stop, &l))) stop += l;
        if (done < start) tok_pieces_add(out, s + done, start - done, -1, c->first && done == 0);
        tok_pieces_add(out, s + start, stop - start, a->id, false);
        done = i = stop;
    }
    if (done < n) tok_pieces_add(out, s + done, n - done, -1, c->first && done == 0);   // empty pieces are dropped
}

/* ---- encoding ------------------------------------------------------------------------------------ */

/* Raw split, then normalization of each text piece and the normalized added tokens inside it. */
static ls_status normalize_pieces(const tokenizer *t, const char *text, size_t len, bool specials,
                                  tok_pieces *out, ls_error *err)
{
    tok_pieces raw = {0};
    match_ctx c = {.t = t, .trie = &t->raw_trie, .specials = specials, .first = true};
    split_added(&c, text, len, &raw);
    tok_buf norm = {0};
    ls_status rc = LS_OK;
    for (size_t i = 0; i < raw.n && rc == LS_OK; i++) {
        const tok_piece *p = &raw.v[i];
        const char *s = raw.text.p + p->off;
        if (p->id >= 0) {
            tok_pieces_add(out, s, p->len, p->id, false);
            continue;
        }
        norm.n = 0;
        if ((rc = tok_normalize(t->pipe, s, p->len, &norm, err)) != LS_OK) break;
        c = (match_ctx){.t = t, .trie = &t->norm_trie, .specials = specials, .first = p->first};
        split_added(&c, norm.p ? norm.p : "", norm.n, out);
    }
    tok_buf_free(&norm);
    tok_pieces_free(&raw);
    return rc;
}

static ls_status encode_impl(const tokenizer *t, const char *text, size_t len, bool specials, bool add,
                             int32_t **ids, size_t *n, ls_error *err)
{
    *ids = NULL, *n = 0;
    size_t bad = tok_utf8_invalid_at(text, len);
    if (bad < len)
        return ls_fail(err, LS_INVALID_ARGUMENT, "prompt is not valid UTF-8: invalid byte 0x%02X at byte offset %zu",
                       (uint8_t)text[bad], bad);
    tok_pieces norm = {0}, words = {0};
    tok_ids out = {0};
    tok_bpe_scratch scratch = {0};
    ls_status rc = normalize_pieces(t, text, len, specials, &norm, err);
    if (rc == LS_OK) rc = tok_pretokenize(t->pipe, &norm, &words, err);
    if (add && t->add_bos && t->bos_id >= 0) tok_ids_push(&out, t->bos_id);
    for (size_t i = 0; i < words.n && rc == LS_OK; i++) {
        const tok_piece *p = &words.v[i];
        if (p->id >= 0) tok_ids_push(&out, p->id);
        else rc = tok_bpe_word(&t->model, words.text.p + p->off, p->len, &scratch, &out, err);
    }
    if (add && t->add_eos && t->eos_id >= 0) tok_ids_push(&out, t->eos_id);
    tok_bpe_scratch_free(&scratch);
    tok_pieces_free(&norm);
    tok_pieces_free(&words);
    if (rc != LS_OK) {
        free(out.v);
        return rc;
    }
    *ids = out.v ? out.v : ls_xmalloc(sizeof **ids);
    *n = out.n;
    return LS_OK;
}

ls_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                           ls_error *err)
{
    return encode_impl(t, text, len, false, true, ids, n, err);
}

ls_status tokenizer_encode_text(const tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                                ls_error *err)
{
    return encode_impl(t, text, len, false, false, ids, n, err);
}

ls_status tokenizer_encode_template(const tokenizer *t, const char *text, size_t len, int32_t **ids,
                                    size_t *n, ls_error *err)
{
    return encode_impl(t, text, len, true, false, ids, n, err);
}

/* ---- getters ------------------------------------------------------------------------------------- */

int tokenizer_vocab_size(const tokenizer *t) { return t->n_ids; }
int tokenizer_bos_id(const tokenizer *t) { return t->bos_id; }
int tokenizer_eos_id(const tokenizer *t) { return t->eos_id; }
int tokenizer_add_bos(const tokenizer *t) { return t->add_bos && t->bos_id >= 0; }

int32_t tokenizer_token_id(const tokenizer *t, const char *token)
{
    size_t n = strlen(token), len = 0;
    if (t->raw_trie.n) {
        int32_t k = trie_longest(&t->raw_trie, token, n, &len);
        if (k >= 0 && len == n) return t->added[k].id;
    }
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].content, token, n)) return t->added[i].id;
    return tok_map_get(&t->model.vocab, token, n);
}

const char *tokenizer_id_text(const tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids || !t->id_text[id]) return NULL;
    if (len) *len = t->id_len[id];
    return t->id_text[id];
}

/* ---- loading ------------------------------------------------------------------------------------- */

static ls_status load_added(tokenizer *t, const json *list, ls_error *err)
{
    if (!list || list->type == JSON_NULL) return LS_OK;
    if (list->type != JSON_ARRAY) return ls_fail(err, LS_INVALID_ARGUMENT, "added_tokens: expected an array");
    t->added = ls_xcalloc(list->len ? list->len : 1, sizeof *t->added);
    for (size_t i = 0; i < list->len; i++) {
        const json *o = &list->items[i], *c = json_get(o, "content");
        int64_t id = -1;
        int sw = 0, ls = 0, rs = 0, norm = 0, sp = 0;
        if (!c || c->type != JSON_STRING || !json_get_int(o, "id", -1, &id, err) || id < 0 || id >= INT32_MAX ||
            !json_get_bool(o, "single_word", 0, &sw, err) || !json_get_bool(o, "lstrip", 0, &ls, err) ||
            !json_get_bool(o, "rstrip", 0, &rs, err) || !json_get_bool(o, "normalized", 0, &norm, err) ||
            !json_get_bool(o, "special", 0, &sp, err))
            return ls_fail(err, LS_INVALID_ARGUMENT, "added_tokens[%zu]: needs content, id >= 0 and boolean flags", i);
        if (!c->len) continue;      // the reference ignores empty tokens
        // A token the model vocab already has keeps the model's id, as in the reference.
        int32_t vid = tok_map_get(&t->model.vocab, c->str, c->len);
        tok_added *a = &t->added[t->n_added++];
        *a = (tok_added){.len = c->len, .id = vid >= 0 ? vid : (int32_t)id, .special = sp, .single_word = sw,
                         .lstrip = ls, .rstrip = rs, .normalized = norm};
        a->content = ls_xmalloc(c->len + 1);
        memcpy(a->content, c->str, c->len + 1);
    }
    return LS_OK;
}

static ls_status build_tries(tokenizer *t, ls_error *err)
{
    tok_buf nb = {0};
    for (size_t i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        if (!a->normalized) {
            trie_add(&t->raw_trie, a->content, a->len, (int32_t)i);
            continue;
        }
        nb.n = 0;   // a normalized token is looked for in its normalized spelling
        ls_status rc = tok_normalize(t->pipe, a->content, a->len, &nb, err);
        if (rc != LS_OK) {
            tok_buf_free(&nb);
            return ls_error_wrap(err, "added token \"%s\"", a->content);
        }
        if (nb.n) trie_add(&t->norm_trie, nb.p, nb.n, (int32_t)i);
    }
    tok_buf_free(&nb);
    return LS_OK;
}

static void build_id_table(tokenizer *t)
{
    int32_t max = -1;
    for (size_t i = 0; i < t->model.vocab.n; i++) max = t->model.vocab.e[i].val > max ? t->model.vocab.e[i].val : max;
    for (size_t i = 0; i < t->n_added; i++) max = t->added[i].id > max ? t->added[i].id : max;
    t->n_ids = max + 1;
    t->id_text = ls_xcalloc((size_t)t->n_ids + 1, sizeof *t->id_text);
    t->id_len = ls_xcalloc((size_t)t->n_ids + 1, sizeof *t->id_len);
    t->id_special = ls_xcalloc((size_t)t->n_ids + 1, 1);
    for (size_t i = 0; i < t->model.vocab.n; i++) {
        size_t len;
        const char *k = tok_map_key(&t->model.vocab, i, &len);
        t->id_text[t->model.vocab.e[i].val] = k, t->id_len[t->model.vocab.e[i].val] = (uint32_t)len;
    }
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        t->id_text[a->id] = a->content, t->id_len[a->id] = (uint32_t)a->len;
        t->id_special[a->id] = a->special;
    }
}

/* bos/eos in tokenizer_config.json are a string or {"content": ...}. */
static const char *config_token(const json *cfg, const char *key)
{
    const json *v = json_get(cfg, key);
    if (v && v->type == JSON_OBJECT) v = json_get(v, "content");
    return v && v->type == JSON_STRING ? v->str : NULL;
}

/* Without add_bos_token in tokenizer_config.json, the library adds what the post-processor's
 * TemplateProcessing puts around $A; we take its first/last special token as bos/eos. */
static void template_defaults(tokenizer *t, const json *pp, int *bos, int *eos)
{
    if (pp && pp->type == JSON_OBJECT && json_get(pp, "processors")) {
        const json *list = json_get(pp, "processors");
        for (size_t i = 0; list->type == JSON_ARRAY && i < list->len; i++)
            template_defaults(t, &list->items[i], bos, eos);
        return;
    }
    const json *type = json_get(pp, "type"), *single = json_get(pp, "single");
    if (!type || type->type != JSON_STRING || strcmp(type->str, "TemplateProcessing") || !single ||
        single->type != JSON_ARRAY)
        return;
    bool seen_seq = false;
    for (size_t i = 0; i < single->len; i++) {
        const json *sp = json_get(json_get(&single->items[i], "SpecialToken"), "id");
        if (!sp || sp->type != JSON_STRING) {
            seen_seq = true;
            continue;
        }
        const json *ids = json_get(json_get(json_get(pp, "special_tokens"), sp->str), "ids");
        int32_t id = ids && ids->type == JSON_ARRAY && ids->len == 1 && ids->items[0].is_integer
                         ? (int32_t)ids->items[0].integer : tokenizer_token_id(t, sp->str);
        if (!seen_seq && *bos < 0) *bos = id;
        if (seen_seq) *eos = id;
    }
}

static ls_status load_config(tokenizer *t, const char *dir, const json *post, ls_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    json_doc *doc = NULL;
    ls_status rc = json_parse_file(&doc, path, TOKENIZER_CONFIG_MAX, err);
    if (rc == LS_NOT_FOUND) rc = LS_OK;     // optional: the post-processor then decides
    if (rc != LS_OK) return rc;
    const json *cfg = doc ? json_root(doc) : NULL;
    int tpl_bos = -1, tpl_eos = -1, add_bos = 0, add_eos = 0;
    template_defaults(t, post, &tpl_bos, &tpl_eos);
    const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
    t->bos_id = bos ? tokenizer_token_id(t, bos) : tpl_bos;
    t->eos_id = eos ? tokenizer_token_id(t, eos) : -1;
    if (!json_get_bool(cfg, "add_bos_token", tpl_bos >= 0, &add_bos, err) ||
        !json_get_bool(cfg, "add_eos_token", tpl_eos >= 0, &add_eos, err))
        rc = ls_error_wrap(err, "%s", path);
    else if ((bos && t->bos_id < 0) || (eos && t->eos_id < 0))
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: %s token \"%s\" is not in the vocab", path,
                     bos && t->bos_id < 0 ? "bos" : "eos", bos && t->bos_id < 0 ? bos : eos);
    if (add_eos && t->eos_id < 0) t->eos_id = tpl_eos;
    t->add_bos = add_bos, t->add_eos = add_eos;
    json_free(doc);
    return rc;
}

static ls_status load_json(tokenizer *t, const json *root, ls_error *err)
{
    ls_status rc;
    if (!root || root->type != JSON_OBJECT) return ls_fail(err, LS_INVALID_ARGUMENT, "expected a JSON object");
    if ((rc = tok_bpe_load(&t->model, json_get(root, "model"), err)) ||
        (rc = tok_pipeline_load(&t->pipe, json_get(root, "normalizer"), json_get(root, "pre_tokenizer"), err)) ||
        (rc = tok_decoder_load(&t->dec, json_get(root, "decoder"), err)) ||
        (rc = load_added(t, json_get(root, "added_tokens"), err)) || (rc = build_tries(t, err)))
        return rc;
    build_id_table(t);
    return LS_OK;
}

ls_status tokenizer_load(tokenizer **out, const char *dir, ls_error *err)
{
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_doc *doc = NULL;
    ls_status rc = json_parse_file(&doc, path, TOKENIZER_JSON_MAX, err);
    if (rc != LS_OK) return rc;
    tokenizer *t = ls_xcalloc(1, sizeof *t);
    t->bos_id = t->eos_id = -1;
    if ((rc = load_json(t, json_root(doc), err)) != LS_OK) ls_error_wrap(err, "%s", path);
    else rc = load_config(t, dir, json_get(json_root(doc), "post_processor"), err);
    json_free(doc);
    if (rc != LS_OK) {
        tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LS_OK;
}

void tokenizer_free(tokenizer *t)
{
    if (!t) return;
    tok_bpe_free(&t->model);
    tok_pipeline_free(t->pipe);
    tok_decoder_free(t->dec);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->raw_trie.node);
    free(t->norm_trie.node);
    free(t->id_text);
    free(t->id_len);
    free(t->id_special);
    free(t);
}
