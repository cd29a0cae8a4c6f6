/* The BPE model of tokenizer.json: vocab, merges ranked by their position in the merges list, byte
 * fallback (<0xNN> tokens for characters the vocab lacks) and the GPT-2 byte-level alphabet.
 *
 * Merging follows the reference library's rule exactly, because ids must match it: repeatedly merge the
 * adjacent pair with the lowest rank, leftmost first; a queued pair that no longer exists is dropped
 * when popped. The queue is a binary heap and the symbols a doubly linked list, so one word costs
 * O(n log n): a 1 MB prompt without spaces (one word for SentencePiece-style models) cannot stall the
 * server the way a rescan-per-merge loop would (reliability.md §2, "CPU DoS in BPE"). */
#include "coordinator/tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct tok_symbol {
    int32_t id;
    int32_t prev, next;     // neighbours in the word, -1 at the ends
    uint32_t len;           // bytes of the word covered; 0 marks a symbol merged into its left neighbour
};

struct tok_heap_item {
    uint32_t rank;
    uint32_t pos;           // index of the left symbol of the pair
    int32_t new_id;
};

/* ---- byte-level alphabet ------------------------------------------------------------------------- */

/* GPT-2 keeps the 188 printable bytes as their own code point and moves the other 68 (controls, space,
 * DEL, NBSP, soft hyphen) to U+0100.. in byte order, so every byte is a visible character. */
static bool byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_bytelevel_cp(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    if (b <= 0x20) return 256u + b;                 // 33 bytes 0x00..0x20
    if (b <= 0xA0) return 256u + 33 + (b - 0x7Fu);  // 34 bytes 0x7F..0xA0
    return 256u + 67;                               // 0xAD
}

int tok_bytelevel_byte(uint32_t cp)
{
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(0x7F + cp - 256 - 33);
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

/* ---- merges table -------------------------------------------------------------------------------- */

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static size_t pair_slot(uint64_t key, size_t mask)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 29) & mask;
}

static const tok_merge_slot *merge_get(const tok_bpe *m, int32_t a, int32_t b)
{
    if (!m->merges) return NULL;
    uint64_t key = pair_key(a, b);
    for (size_t s = pair_slot(key, m->merge_mask);; s = (s + 1) & m->merge_mask) {
        if (m->merges[s].key == key) return &m->merges[s];
        if (m->merges[s].key == UINT64_MAX) return NULL;
    }
}

/* A later duplicate of a pair replaces the earlier one, as in the reference library's hash map. */
static void merge_put(tok_bpe *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id)
{
    uint64_t key = pair_key(a, b);
    size_t s = pair_slot(key, m->merge_mask);
    while (m->merges[s].key != UINT64_MAX && m->merges[s].key != key) s = (s + 1) & m->merge_mask;
    m->merges[s] = (tok_merge_slot){.key = key, .rank = rank, .new_id = new_id};
}

/* One merges entry is either "left right" (the legacy form) or ["left", "right"]. */
static ls_status merge_sides(const json *e, size_t i, const char **a, size_t *al, const char **b,
                             size_t *bl, ls_error *err)
{
    if (e->type == JSON_STRING) {
        const char *sp = memchr(e->str, ' ', e->len);
        if (!sp) return ls_fail(err, LS_INVALID_ARGUMENT, "model.merges[%zu]: no space in \"%s\"", i, e->str);
        *a = e->str, *al = (size_t)(sp - e->str), *b = sp + 1, *bl = e->len - *al - 1;
        return LS_OK;
    }
    if (e->type == JSON_ARRAY && e->len == 2 && e->items[0].type == JSON_STRING &&
        e->items[1].type == JSON_STRING) {
        *a = e->items[0].str, *al = e->items[0].len, *b = e->items[1].str, *bl = e->items[1].len;
        return LS_OK;
    }
    return ls_fail(err, LS_INVALID_ARGUMENT, "model.merges[%zu]: expected \"a b\" or [a, b]", i);
}

static ls_status load_merges(tok_bpe *m, const json *merges, ls_error *err)
{
    if (!merges || merges->type != JSON_ARRAY)
        return ls_fail(err, LS_INVALID_ARGUMENT, "model.merges: expected an array");
    size_t size = 1024;
    while (size < merges->len * 2) size *= 2;
    m->merges = ls_xmalloc(size * sizeof *m->merges);
    for (size_t i = 0; i < size; i++) m->merges[i].key = UINT64_MAX;
    m->merge_mask = size - 1;
    tok_buf joined = {0};
    ls_status rc = LS_OK;
    for (size_t i = 0; i < merges->len && rc == LS_OK; i++) {
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if ((rc = merge_sides(&merges->items[i], i, &a, &al, &b, &bl, err)) != LS_OK) break;
        int32_t ia = tok_map_get(&m->vocab, a, al), ib = tok_map_get(&m->vocab, b, bl);
        if (ia < 0 || ib < 0) {
            rc = ls_fail(err, LS_INVALID_ARGUMENT, "model.merges[%zu]: \"%.*s\" is not in the vocab", i,
                         (int)(ia < 0 ? al : bl), ia < 0 ? a : b);
            break;
        }
        // The right side's continuing-subword prefix is dropped when the pair is joined.
        size_t skip = m->prefix && m->prefix_len <= bl && !memcmp(b, m->prefix, m->prefix_len) ? m->prefix_len : 0;
        joined.n = 0;
        tok_buf_put(&joined, a, al);
        tok_buf_put(&joined, b + skip, bl - skip);
        int32_t id = tok_map_get(&m->vocab, joined.p, joined.n);
        if (id < 0)
            rc = ls_fail(err, LS_INVALID_ARGUMENT, "model.merges[%zu]: merged \"%.*s\" is not in the vocab",
                         i, (int)joined.n, joined.p);
        else
            merge_put(m, ia, ib, (uint32_t)i, id);
    }
    tok_buf_free(&joined);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------------- */

static ls_status load_vocab(tok_bpe *m, const json *vocab, ls_error *err)
{
    if (!vocab || vocab->type != JSON_OBJECT)
        return ls_fail(err, LS_INVALID_ARGUMENT, "model.vocab: expected an object");
    for (size_t i = 0; i < vocab->len; i++) {
        const json *v = &vocab->items[i];
        if (v->type != JSON_NUMBER || !v->is_integer || v->integer < 0 || v->integer > INT32_MAX - 1)
            return ls_fail(err, LS_INVALID_ARGUMENT, "model.vocab[\"%s\"]: expected an id >= 0",
                           vocab->keys[i]);
        tok_map_put(&m->vocab, vocab->keys[i], vocab->key_lens[i], (int32_t)v->integer);
    }
    return LS_OK;
}

static ls_status opt_string(const json *model, const char *key, char **out, size_t *len, ls_error *err)
{
    int ok = 1;
    const char *s = json_get_str(model, key, &ok, err);
    if (!ok) return ls_error_wrap(err, "model");
    const json *v = json_get(model, key);
    if (s && v->len) {      // "" behaves as absent: prefixing or suffixing it changes nothing
        *out = ls_xmalloc(v->len + 1);
        memcpy(*out, s, v->len + 1);
        *len = v->len;
    }
    return LS_OK;
}

static ls_status load_flags(tok_bpe *m, const json *model, ls_error *err)
{
    int fuse = 0, fallback = 0, ignore = 0;
    double dropout = 0;
    if (!json_get_bool(model, "fuse_unk", 0, &fuse, err) ||
        !json_get_bool(model, "byte_fallback", 0, &fallback, err) ||
        !json_get_bool(model, "ignore_merges", 0, &ignore, err) ||
        !json_get_double(model, "dropout", 0, &dropout, err))
        return ls_error_wrap(err, "model");
    if (dropout > 0)    // random merges would make ids irreproducible; no served model uses it
        return ls_fail(err, LS_INVALID_ARGUMENT, "model BPE: unsupported dropout %g", dropout);
    m->fuse_unk = fuse, m->byte_fallback = fallback, m->ignore_merges = ignore;
    return LS_OK;
}

ls_status tok_bpe_load(tok_bpe *m, const json *model, ls_error *err)
{
    *m = (tok_bpe){.unk_id = -1};
    if (!model || model->type != JSON_OBJECT)
        return ls_fail(err, LS_INVALID_ARGUMENT, "model: expected an object");
    int ok = 1;
    const char *type = json_get_str(model, "type", &ok, err);
    if (!ok) return ls_error_wrap(err, "model");
    if (type ? strcmp(type, "BPE") != 0 : !json_get(model, "merges"))
        return ls_fail(err, LS_INVALID_ARGUMENT, "model: unsupported model type '%s' (only BPE)",
                       type ? type : "(none)");
    ls_status rc;
    if ((rc = load_flags(m, model, err)) || (rc = load_vocab(m, json_get(model, "vocab"), err)) ||
        (rc = opt_string(model, "continuing_subword_prefix", &m->prefix, &m->prefix_len, err)) ||
        (rc = opt_string(model, "end_of_word_suffix", &m->suffix, &m->suffix_len, err)) ||
        (rc = load_merges(m, json_get(model, "merges"), err)))
        return rc;
    const char *unk = json_get_str(model, "unk_token", &ok, err);
    if (!ok) return ls_error_wrap(err, "model");
    if (unk && (m->unk_id = tok_map_get(&m->vocab, unk, strlen(unk))) < 0)
        return ls_fail(err, LS_INVALID_ARGUMENT, "model: unk_token \"%s\" is not in the vocab", unk);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_ids[b] = tok_map_get(&m->vocab, name, 6);
    }
    return LS_OK;
}

void tok_bpe_free(tok_bpe *m)
{
    tok_map_free(&m->vocab);
    free(m->merges);
    free(m->prefix);
    free(m->suffix);
    *m = (tok_bpe){0};
}

void tok_bpe_scratch_free(tok_bpe_scratch *s)
{
    free(s->sym);
    free(s->heap);
    *s = (tok_bpe_scratch){0};
}

/* ---- the word's initial symbols ------------------------------------------------------------------ */

typedef struct word {
    struct tok_symbol *sym;
    size_t n;
    int32_t unk_id;         // pending unk run (fuse_unk), -1 = none
    uint32_t unk_len;
} word;

static void word_add(word *w, int32_t id, uint32_t len)
{
    struct tok_symbol *s = &w->sym[w->n];
    *s = (struct tok_symbol){.id = id, .prev = (int32_t)w->n - 1, .next = (int32_t)w->n + 1, .len = len};
    w->n++;
}

/* Looks a character up as the model spells it: with the continuing-subword prefix when it is not the
 * first character, with the end-of-word suffix when it is the last. */
static int32_t char_id(const tok_bpe *m, const char *c, size_t cl, bool first, bool last, tok_buf *key)
{
    bool pre = !first && m->prefix, suf = last && m->suffix;
    if (!pre && !suf) return tok_map_get(&m->vocab, c, cl);
    key->n = 0;
    if (pre) tok_buf_put(key, m->prefix, m->prefix_len);
    tok_buf_put(key, c, cl);
    if (suf) tok_buf_put(key, m->suffix, m->suffix_len);
    return tok_map_get(&m->vocab, key->p, key->n);
}

/* A character outside the vocab: its bytes as <0xNN> tokens when the model has them all, else the unk
 * token (consecutive unknowns fused into one when fuse_unk). A pending unk is not flushed before byte
 * tokens, matching the reference (which cannot happen when every byte token exists). */
static ls_status add_unknown(const tok_bpe *m, word *w, const char *c, size_t cl, ls_error *err)
{
    if (m->byte_fallback) {
        bool all = true;
        for (size_t i = 0; i < cl; i++) all = all && m->byte_ids[(uint8_t)c[i]] >= 0;
        if (all) {
            for (size_t i = 0; i < cl; i++) word_add(w, m->byte_ids[(uint8_t)c[i]], 1);
            return LS_OK;
        }
    }
    if (m->unk_id < 0) {
        size_t l;
        return ls_fail(err, LS_INVALID_ARGUMENT, "character U+%04X is not in the vocab and the model has no unk token",
                       tok_utf8_decode(c, cl, &l));
    }
    if (w->unk_id >= 0 && m->fuse_unk) {
        w->unk_len += (uint32_t)cl;
        return LS_OK;
    }
    if (w->unk_id >= 0) word_add(w, w->unk_id, w->unk_len);
    w->unk_id = m->unk_id, w->unk_len = (uint32_t)cl;
    return LS_OK;
}

static ls_status word_init(const tok_bpe *m, const char *s, size_t n, word *w, ls_error *err)
{
    tok_buf key = {0};
    ls_status rc = LS_OK;
    for (size_t i = 0; i < n && rc == LS_OK;) {
        size_t cl = tok_utf8_seq_len(s + i, n - i);
        int32_t id = char_id(m, s + i, cl, i == 0, i + cl == n, &key);
        if (id >= 0) {
            if (w->unk_id >= 0) word_add(w, w->unk_id, w->unk_len);
            w->unk_id = -1;
            word_add(w, id, (uint32_t)cl);
        } else {
            rc = add_unknown(m, w, s + i, cl, err);
        }
        i += cl;
    }
    if (rc == LS_OK && w->unk_id >= 0) word_add(w, w->unk_id, w->unk_len);
    if (w->n) w->sym[w->n - 1].next = -1;
    tok_buf_free(&key);
    return rc;
}

/* ---- merging ------------------------------------------------------------------------------------- */

typedef struct heap {
    struct tok_heap_item *v;
    size_t n;
} heap;

static bool item_less(const struct tok_heap_item *a, const struct tok_heap_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(heap *h, struct tok_heap_item it)
{
    size_t i = h->n++;
    while (i && item_less(&it, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = it;
}

static struct tok_heap_item heap_pop(heap *h)
{
    struct tok_heap_item top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && item_less(&h->v[c + 1], &h->v[c])) c++;
        if (!item_less(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static void push_pair(const tok_bpe *m, heap *h, const struct tok_symbol *sym, int32_t pos)
{
    if (pos < 0 || sym[pos].next < 0) return;
    const tok_merge_slot *ms = merge_get(m, sym[pos].id, sym[sym[pos].next].id);
    if (ms) heap_push(h, (struct tok_heap_item){.rank = ms->rank, .pos = (uint32_t)pos, .new_id = ms->new_id});
}

static void merge_all(const tok_bpe *m, word *w, heap *h)
{
    struct tok_symbol *sym = w->sym;
    for (size_t i = 0; i + 1 < w->n; i++) push_pair(m, h, sym, (int32_t)i);
    while (h->n) {
        struct tok_heap_item top = heap_pop(h);
        struct tok_symbol *left = &sym[top.pos];
        if (left->len == 0 || left->next < 0) continue;
        struct tok_symbol *right = &sym[left->next];
        const tok_merge_slot *ms = merge_get(m, left->id, right->id);
        if (!ms || ms->new_id != top.new_id) continue;     // stale: the pair changed since queued
        left->id = top.new_id;
        left->len += right->len;
        left->next = right->next;
        right->len = 0;
        if (left->next >= 0) sym[left->next].prev = (int32_t)top.pos;
        push_pair(m, h, sym, left->prev);
        push_pair(m, h, sym, (int32_t)top.pos);
    }
}

static void scratch_reserve(tok_bpe_scratch *s, size_t n)
{
    if (s->sym_cap < n) {
        s->sym_cap = n < 64 ? 64 : n;
        free(s->sym);
        s->sym = ls_xmalloc(s->sym_cap * sizeof *s->sym);
    }
    // Each merge queues at most two pairs on top of the n - 1 initial ones.
    if (s->heap_cap < 3 * n) {
        s->heap_cap = 3 * n < 192 ? 192 : 3 * n;
        free(s->heap);
        s->heap = ls_xmalloc(s->heap_cap * sizeof *s->heap);
    }
}

ls_status tok_bpe_word(const tok_bpe *m, const char *w, size_t n, tok_bpe_scratch *s, tok_ids *out,
                       ls_error *err)
{
    if (n == 0) return LS_OK;
    if (m->ignore_merges) {     // a word that is itself a token is taken whole, merges unconsulted
        int32_t id = tok_map_get(&m->vocab, w, n);
        if (id >= 0) {
            tok_ids_push(out, id);
            return LS_OK;
        }
    }
    scratch_reserve(s, n);      // at most one symbol per byte
    word wd = {.sym = s->sym, .unk_id = -1};
    ls_status rc = word_init(m, w, n, &wd, err);
    if (rc != LS_OK) return rc;
    heap h = {.v = s->heap};
    merge_all(m, &wd, &h);
    for (size_t i = 0; i < wd.n; i++)
        if (wd.sym[i].len) tok_ids_push(out, wd.sym[i].id);
    return LS_OK;
}
