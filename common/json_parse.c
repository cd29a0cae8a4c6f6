/* The strict RFC 8259 parser behind json.h. One pass over the text: children of an open array or
 * object accumulate on one growable stack and are copied into the document's arena when the container
 * closes, so a 150k-member object costs O(n) and no per-node allocation. Duplicate keys are found
 * with a hash set built per object at close time. Anything the RFC does not allow is an error: we
 * read files that decide what code runs on which bytes, so leniency here is attack surface. */
#include "common/json.h"

#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;           // bytes of data[]
    max_align_t data[];
} arena_block;

struct json_doc {
    json root;
    arena_block *blocks;        // owned, newest first
    size_t next_cap;            // bytes; blocks grow geometrically so big files take few mallocs
};

typedef struct stack_entry {
    json value;
    const char *key;            // NULL inside arrays
    size_t key_len;
} stack_entry;

typedef struct parser {
    const unsigned char *s;
    size_t n, pos;
    json_doc *doc;
    stack_entry *stack;         // owned; children of every open container
    size_t top, cap;
    uint32_t *slots;            // owned; scratch hash set for duplicate keys (index + 1, 0 = empty)
    size_t n_slots;
    ls_error *err;
} parser;

static void *arena_alloc(json_doc *d, size_t size, size_t align)
{
    arena_block *b = d->blocks;
    if (b) {
        size_t at = (b->used + align - 1) & ~(align - 1);
        if (at <= b->cap && size <= b->cap - at) {
            b->used = at + size;
            return (char *)b->data + at;
        }
    }
    size_t cap = size > d->next_cap ? size : d->next_cap;
    if (d->next_cap < (4u << 20)) d->next_cap *= 2;
    b = ls_xmalloc(sizeof *b + cap);
    b->next = d->blocks;
    b->cap = cap;
    b->used = size;
    d->blocks = b;
    return b->data;
}

static int fail(parser *p, const char *what)
{
    ls_fail(p->err, LS_INVALID_ARGUMENT, "json: %s at byte %zu", what, p->pos);
    return -1;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Length of the longest valid UTF-8 prefix of s[0..n): no overlongs, no encoded surrogates, nothing
 * above U+10FFFF (RFC 3629). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return i;
        if (n - i <= need) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += need + 1;
    }
    return n;
}

int json_utf8_valid(const char *s, size_t n)
{
    return utf8_valid_prefix((const unsigned char *)s, n) == n;
}

static int hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one \u escape (p->pos at the backslash), joining a surrogate pair into one code point. */
static int unicode_escape(parser *p, size_t end, unsigned *cp)
{
    if (end - p->pos < 6 || hex4(p->s + p->pos + 2, cp)) return fail(p, "bad \\u escape");
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) return fail(p, "lone low surrogate");
    if (*cp < 0xD800 || *cp > 0xDBFF) { p->pos += 6; return 0; }
    unsigned lo;
    if (end - p->pos < 12 || p->s[p->pos + 6] != '\\' || p->s[p->pos + 7] != 'u' ||
        hex4(p->s + p->pos + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF)
        return fail(p, "lone high surrogate");
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    p->pos += 12;
    return 0;
}

static int decode_escape(parser *p, size_t end, char *o, size_t *olen)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    unsigned char c = p->s[p->pos + 1];
    if (c == 'u') {
        unsigned cp;
        if (unicode_escape(p, end, &cp)) return -1;
        *olen += utf8_put(o + *olen, cp);
        return 0;
    }
    const char *hit = c ? strchr(from, c) : NULL;
    if (!hit) return fail(p, "bad escape");
    o[(*olen)++] = to[hit - from];
    p->pos += 2;
    return 0;
}

/* p->pos at the opening quote. The raw span bounds the decoded length, so one arena block suffices. */
static int parse_string(parser *p, const char **out, size_t *out_len)
{
    size_t start = ++p->pos, end = start;
    int escaped = 0;
    for (;; end++) {
        if (end >= p->n) return fail(p, "unterminated string");
        unsigned char c = p->s[end];
        if (c == '"') break;
        if (c < 0x20) { p->pos = end; return fail(p, "control character in string"); }
        if (c == '\\') { escaped = 1; end++; }
    }
    size_t bad = utf8_valid_prefix(p->s + start, end - start);
    if (bad != end - start) { p->pos = start + bad; return fail(p, "invalid UTF-8"); }
    char *o = arena_alloc(p->doc, end - start + 1, 1);
    size_t olen = 0;
    if (!escaped) {
        memcpy(o, p->s + start, end - start);
        olen = end - start;
    } else {
        p->pos = start;
        while (p->pos < end) {
            if (p->s[p->pos] != '\\') { o[olen++] = (char)p->s[p->pos++]; continue; }
            if (decode_escape(p, end, o, &olen)) return -1;
        }
    }
    o[olen] = 0;
    p->pos = end + 1;
    *out = o;
    *out_len = olen;
    return 0;
}

static size_t skip_digits(parser *p)
{
    size_t k = 0;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') { p->pos++; k++; }
    return k;
}

/* Exact int64 of an integer literal, or 0 when it does not fit (the double still holds it). */
static int integer_value(const unsigned char *s, size_t n, int64_t *out)
{
    int neg = s[0] == '-';
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (size_t i = neg; i < n; i++) {
        unsigned d = s[i] - '0';
        if (v > (lim - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

static int parse_number(parser *p, json *out)
{
    size_t start = p->pos;
    int plain = 1;
    if (p->s[p->pos] == '-') p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '0') p->pos++;
    else if (!skip_digits(p)) return fail(p, "invalid number");
    if (p->pos < p->n && p->s[p->pos] == '.') {
        p->pos++; plain = 0;
        if (!skip_digits(p)) return fail(p, "digit expected after '.'");
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++; plain = 0;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (!skip_digits(p)) return fail(p, "digit expected in exponent");
    }
    size_t n = p->pos - start;
    char small[64], *buf = n < sizeof small ? small : ls_xmalloc(n + 1);
    memcpy(buf, p->s + start, n);
    buf[n] = 0;
    out->type = JSON_NUMBER;
    out->number = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (!isfinite(out->number)) { p->pos = start; return fail(p, "number out of range"); }
    out->is_integer = plain && integer_value(p->s + start, n, &out->integer);
    return 0;
}

static int parse_literal(parser *p, json *out)
{
    static const struct { const char *word; json_type type; int boolean; } lits[] = {
        { "true", JSON_BOOL, 1 }, { "false", JSON_BOOL, 0 }, { "null", JSON_NULL, 0 },
    };
    for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++) {
        size_t k = strlen(lits[i].word);
        if (p->n - p->pos >= k && !memcmp(p->s + p->pos, lits[i].word, k)) {
            out->type = lits[i].type;
            out->boolean = lits[i].boolean;
            p->pos += k;
            return 0;
        }
    }
    return fail(p, "unexpected character");
}

static void push(parser *p, const json *v, const char *key, size_t key_len)
{
    if (p->top == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->stack = ls_xrealloc(p->stack, p->cap * sizeof *p->stack);
    }
    p->stack[p->top++] = (stack_entry){ *v, key, key_len };
}

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;      // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h;
}

static int same_key(const stack_entry *a, const stack_entry *b)
{
    return a->key_len == b->key_len && !memcmp(a->key, b->key, a->key_len);
}

static int dup_fail(parser *p, const stack_entry *e)
{
    int shown = e->key_len > 80 ? 80 : (int)e->key_len;
    ls_fail(p->err, LS_INVALID_ARGUMENT, "json: duplicate key \"%.*s\" in object ending at byte %zu",
            shown, e->key, p->pos);
    return -1;
}

/* Small objects compare pairwise; large ones (tokenizer vocab) use a fresh open-addressing set. */
static int check_duplicates(parser *p, size_t base)
{
    const stack_entry *e = p->stack + base;
    size_t n = p->top - base;
    if (n <= 8) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (same_key(e + i, e + j)) return dup_fail(p, e + i);
        return 0;
    }
    size_t size = 16;
    while (size < 2 * n) size *= 2;
    if (size > p->n_slots) {
        free(p->slots);
        p->slots = ls_xmalloc(size * sizeof *p->slots);
        p->n_slots = size;
    }
    memset(p->slots, 0, size * sizeof *p->slots);
    for (size_t i = 0; i < n; i++) {
        size_t h = hash_key(e[i].key, e[i].key_len) & (size - 1);
        for (; p->slots[h]; h = (h + 1) & (size - 1))
            if (same_key(e + i, e + p->slots[h] - 1)) return dup_fail(p, e + i);
        p->slots[h] = (uint32_t)(i + 1);
    }
    return 0;
}

/* Moves the children above `base` off the stack into the arena. */
static void close_container(parser *p, size_t base, json_type type, json *out)
{
    size_t n = p->top - base;
    out->type = type;
    out->len = n;
    if (!n) { p->top = base; return; }
    out->items = arena_alloc(p->doc, n * sizeof *out->items, alignof(json));
    if (type == JSON_OBJECT) {
        out->keys = arena_alloc(p->doc, n * sizeof *out->keys, alignof(const char *));
        out->key_lens = arena_alloc(p->doc, n * sizeof *out->key_lens, alignof(size_t));
    }
    for (size_t i = 0; i < n; i++) {
        const stack_entry *e = p->stack + base + i;
        out->items[i] = e->value;
        if (type == JSON_OBJECT) { out->keys[i] = e->key; out->key_lens[i] = e->key_len; }
    }
    p->top = base;
}

static int parse_value(parser *p, int depth, json *out);

static int parse_array(parser *p, int depth, json *out)
{
    size_t base = p->top;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == ']') { p->pos++; close_container(p, base, JSON_ARRAY, out); return 0; }
    for (;;) {
        json v = { 0 };
        if (parse_value(p, depth + 1, &v)) return -1;
        push(p, &v, NULL, 0);
        skip_ws(p);
        if (p->pos >= p->n) return fail(p, "unterminated array");
        unsigned char c = p->s[p->pos++];
        if (c == ']') break;
        if (c != ',') { p->pos--; return fail(p, "expected ',' or ']'"); }
    }
    close_container(p, base, JSON_ARRAY, out);
    return 0;
}

static int parse_member(parser *p, int depth)
{
    const char *key;
    size_t key_len;
    skip_ws(p);
    if (p->pos >= p->n || p->s[p->pos] != '"') return fail(p, "expected a string key");
    if (parse_string(p, &key, &key_len)) return -1;
    skip_ws(p);
    if (p->pos >= p->n || p->s[p->pos] != ':') return fail(p, "expected ':'");
    p->pos++;
    json v = { 0 };
    if (parse_value(p, depth + 1, &v)) return -1;
    push(p, &v, key, key_len);
    return 0;
}

static int parse_object(parser *p, int depth, json *out)
{
    size_t base = p->top;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == '}') { p->pos++; close_container(p, base, JSON_OBJECT, out); return 0; }
    for (;;) {
        if (parse_member(p, depth)) return -1;
        skip_ws(p);
        if (p->pos >= p->n) return fail(p, "unterminated object");
        unsigned char c = p->s[p->pos++];
        if (c == '}') break;
        if (c != ',') { p->pos--; return fail(p, "expected ',' or '}'"); }
    }
    if (check_duplicates(p, base)) return -1;
    close_container(p, base, JSON_OBJECT, out);
    return 0;
}

static int parse_value(parser *p, int depth, json *out)
{
    skip_ws(p);
    if (p->pos >= p->n) return fail(p, "unexpected end of input");
    unsigned char c = p->s[p->pos];
    if ((c == '[' || c == '{') && depth >= JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    if (c == '[') return parse_array(p, depth, out);
    if (c == '{') return parse_object(p, depth, out);
    if (c == '"') {
        out->type = JSON_STRING;
        return parse_string(p, &out->str, &out->len);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, out);
    return parse_literal(p, out);
}

ls_status json_parse(json_doc **out, const char *text, size_t len, ls_error *err)
{
    *out = NULL;
    if (!text && len) return ls_fail(err, LS_INVALID_ARGUMENT, "json: NULL text");
    json_doc *doc = ls_xcalloc(1, sizeof *doc);
    doc->next_cap = 64u << 10;
    parser p = { .s = (const unsigned char *)text, .n = len, .doc = doc, .err = err };
    int rc = parse_value(&p, 0, &doc->root);
    if (!rc) {
        skip_ws(&p);
        if (p.pos != p.n) rc = fail(&p, "trailing characters after the value");
    }
    free(p.stack);
    free(p.slots);
    if (rc) { json_free(doc); return LS_INVALID_ARGUMENT; }
    *out = doc;
    return LS_OK;
}

const json *json_root(const json_doc *doc) { return doc ? &doc->root : NULL; }

void json_free(json_doc *doc)
{
    if (!doc) return;
    for (arena_block *b = doc->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(doc);
}
