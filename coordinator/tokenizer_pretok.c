/* Normalizers and pre-tokenizers of tokenizer.json: what happens to text before the BPE model sees it.
 * Unicode classes come from libraries, never from tables of our own: PCRE2 runs the split regexes
 * (tokenizer_regex.c) and ICU does NFC/NFKC. Each step is applied to every piece the previous one made,
 * with the reference's split behaviours (Isolated, MergedWithNext, ...) reproduced exactly.
 * Anything this file does not implement fails loading with the component's name, never silently. */
#include "coordinator/tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "common/log.h"

typedef enum split_behavior {
    SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_WITH_PREVIOUS, SPLIT_MERGED_WITH_NEXT, SPLIT_CONTIGUOUS,
} split_behavior;

typedef enum norm_kind { NORM_PREPEND, NORM_REPLACE, NORM_UNICODE, NORM_STRIP } norm_kind;
typedef struct norm_step {
    norm_kind kind;
    char *a, *b;                // Prepend: a = prefix; Replace: a = literal pattern (NULL with re), b = content
    size_t a_len, b_len;
    tok_regex *re;              // Replace with a Regex pattern (owned)
    const UNormalizer2 *icu;    // NFC/NFD/NFKC/NFKD (owned by ICU)
    bool left, right;           // Strip
} norm_step;

typedef enum pre_kind { PRE_SPLIT, PRE_BYTE_LEVEL, PRE_METASPACE } pre_kind;
typedef enum prepend_scheme { PREPEND_NEVER, PREPEND_ALWAYS, PREPEND_FIRST } prepend_scheme;
typedef struct pre_step {
    pre_kind kind;
    tok_regex *re;              // Split regex / ByteLevel use_regex (owned), NULL for a literal
    char *lit;                  // Split literal pattern (owned)
    size_t lit_len;
    split_behavior behavior;
    bool invert;
    bool add_prefix_space;      // ByteLevel
    char rep[4];                // Metaspace replacement, UTF-8
    size_t rep_len;
    prepend_scheme prepend;     // Metaspace
    bool split;                 // Metaspace
} pre_step;

struct tok_pipeline {
    norm_step *norm;            // owned, flattened Sequence
    size_t n_norm;
    pre_step *pre;              // owned, flattened Sequence
    size_t n_pre;
};

/* ---- spans: the (offsets, is_match) cover of a piece, then the split behaviour ------------------- */

typedef struct span {
    size_t start, end;
    bool match;
} span;
typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static void spans_add(spans *s, size_t a, size_t b, bool match)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 32;
        s->v = ls_xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = (span){a, b, match};
}

static ls_status find_spans(const pre_step *st, tok_matcher **m, const char *s, size_t n, spans *out, ls_error *err)
{
    size_t prev = 0, pos = 0, ms, me;
    for (;;) {
        if (st->re) {
            int rc = tok_regex_next(m, st->re, s, n, pos, &ms, &me);
            if (rc < 0) return ls_fail(err, LS_INTERNAL, "pre_tokenizer Split: regex matching failed");
            if (!rc) break;
        } else {
            const char *f = st->lit_len ? memmem(s + pos, n - pos, st->lit, st->lit_len) : NULL;
            if (!f) break;
            ms = (size_t)(f - s), me = ms + st->lit_len;
        }
        if (ms > prev) spans_add(out, prev, ms, false);
        spans_add(out, ms, me, true);
        prev = me;
        pos = me > ms ? me : me + tok_utf8_seq_len(s + me, n - me);    // step over an empty match
        if (pos > n) break;
    }
    if (prev < n) spans_add(out, prev, n, false);
    return LS_OK;
}

/* Merges match spans into their neighbours as the behaviour says; the result is in place. */
static void apply_behavior(spans *s, split_behavior b, bool invert)
{
    if (invert)
        for (size_t i = 0; i < s->n; i++) s->v[i].match = !s->v[i].match;
    size_t o = 0;
    bool prev_match = false;
    if (b == SPLIT_MERGED_WITH_NEXT) {      // walk backwards: a match joins the gap after it
        size_t w = s->n;
        for (size_t i = s->n; i-- > 0;) {
            span c = s->v[i];
            if (c.match && !prev_match && w < s->n) s->v[w].start = c.start;
            else s->v[--w] = (span){c.start, c.end, false};
            prev_match = c.match;
        }
        memmove(s->v, s->v + w, (s->n - w) * sizeof *s->v);
        s->n -= w;
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        span c = s->v[i];
        if (b == SPLIT_REMOVED && c.match) continue;
        bool join = b == SPLIT_MERGED_WITH_PREVIOUS ? c.match && !prev_match
                  : b == SPLIT_CONTIGUOUS           ? c.match == prev_match
                                                    : false;
        if (join && o) s->v[o - 1].end = c.end;
        else s->v[o++] = (span){c.start, c.end, false};
        prev_match = c.match;
    }
    s->n = o;
}

/* ---- pre-tokenizers ------------------------------------------------------------------------------ */

static ls_status split_piece(const pre_step *st, tok_matcher **m, const char *s, size_t n, bool first,
                             tok_pieces *out, ls_error *err)
{
    spans sp = {0};
    ls_status rc = find_spans(st, m, s, n, &sp, err);
    if (rc == LS_OK) {
        apply_behavior(&sp, st->behavior, st->invert);
        for (size_t i = 0; i < sp.n; i++)
            if (sp.v[i].end > sp.v[i].start)
                tok_pieces_add(out, s + sp.v[i].start, sp.v[i].end - sp.v[i].start, -1,
                               first && sp.v[i].start == 0);
    }
    free(sp.v);
    return rc;
}

static void bytes_to_alphabet(const char *s, size_t n, tok_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        char c[4];
        tok_buf_put(out, c, tok_utf8_encode(tok_bytelevel_cp((uint8_t)s[i]), c));
    }
}

static ls_status byte_level_piece(const pre_step *st, tok_matcher **m, const char *s, size_t n, bool first,
                                  tok_pieces *out, ls_error *err)
{
    tok_buf tmp = {0};
    if (st->add_prefix_space && (n == 0 || s[0] != ' ')) tok_buf_putc(&tmp, ' ');
    tok_buf_put(&tmp, s, n);
    tok_pieces words = {0};
    ls_status rc = LS_OK;
    if (st->re) rc = split_piece(st, m, tmp.p, tmp.n, first, &words, err);
    else tok_pieces_add(&words, tmp.p, tmp.n, -1, first);
    for (size_t i = 0; i < words.n && rc == LS_OK; i++) {
        tmp.n = 0;
        bytes_to_alphabet(words.text.p + words.v[i].off, words.v[i].len, &tmp);
        tok_pieces_add(out, tmp.p, tmp.n, -1, words.v[i].first);
    }
    tok_pieces_free(&words);
    tok_buf_free(&tmp);
    return rc;
}

static void metaspace_piece(const pre_step *st, const char *s, size_t n, bool first, tok_pieces *out)
{
    tok_buf t = {0};
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') tok_buf_put(&t, st->rep, st->rep_len);
        else tok_buf_putc(&t, s[i]);
    }
    bool starts = t.n >= st->rep_len && memcmp(t.p, st->rep, st->rep_len) == 0;
    bool prepend = !starts && (st->prepend == PREPEND_ALWAYS || (st->prepend == PREPEND_FIRST && first));
    tok_buf u = {0};
    if (prepend) tok_buf_put(&u, st->rep, st->rep_len);
    tok_buf_put(&u, t.p, t.n);
    if (!st->split) {
        if (u.n) tok_pieces_add(out, u.p, u.n, -1, first);
    } else {                    // split before every replacement character (MergedWithNext)
        size_t start = 0;
        for (size_t i = 1; i <= u.n; i++) {
            bool cut = i == u.n || (i + st->rep_len <= u.n && memcmp(u.p + i, st->rep, st->rep_len) == 0);
            if (cut) {
                tok_pieces_add(out, u.p + start, i - start, -1, first && start == 0);
                start = i;
            }
        }
    }
    tok_buf_free(&t);
    tok_buf_free(&u);
}

static ls_status pre_step_run(const pre_step *st, tok_matcher **m, const tok_pieces *in, tok_pieces *out,
                              ls_error *err)
{
    ls_status rc = LS_OK;
    for (size_t i = 0; i < in->n && rc == LS_OK; i++) {
        const tok_piece *p = &in->v[i];
        const char *s = in->text.p + p->off;
        if (p->id >= 0) tok_pieces_add(out, s, p->len, p->id, p->first);
        else if (st->kind == PRE_SPLIT) rc = split_piece(st, m, s, p->len, p->first, out, err);
        else if (st->kind == PRE_BYTE_LEVEL) rc = byte_level_piece(st, m, s, p->len, p->first, out, err);
        else metaspace_piece(st, s, p->len, p->first, out);
    }
    return rc;
}

ls_status tok_pretokenize(const tok_pipeline *p, const tok_pieces *in, tok_pieces *out, ls_error *err)
{
    tok_matcher *m = NULL;
    tok_pieces cur = {0};
    ls_status rc = LS_OK;
    for (size_t i = 0; i < in->n; i++)
        tok_pieces_add(&cur, in->text.p + in->v[i].off, in->v[i].len, in->v[i].id, in->v[i].first);
    for (size_t k = 0; k < p->n_pre && rc == LS_OK; k++) {
        tok_pieces next = {0};
        rc = pre_step_run(&p->pre[k], &m, &cur, &next, err);
        tok_pieces_free(&cur);
        cur = next;
    }
    tok_matcher_free(m);
    *out = cur;
    return rc;
}

/* ---- normalizers --------------------------------------------------------------------------------- */

static ls_status icu_normalize(const UNormalizer2 *nz, const char *s, size_t n, tok_buf *out, ls_error *err)
{
    bool ascii = true;      // ASCII is invariant under every normalization form
    for (size_t i = 0; i < n && ascii; i++) ascii = (uint8_t)s[i] < 0x80;
    if (ascii || n > INT32_MAX / 4) {
        tok_buf_put(out, s, n);
        return ascii ? LS_OK : ls_fail(err, LS_INVALID_ARGUMENT, "normalizer: text too long");
    }
    UErrorCode st = U_ZERO_ERROR;
    int32_t len16 = 0, cap = (int32_t)n + 16, got = 0;
    UChar *src = ls_xmalloc((size_t)n * sizeof *src), *dst = NULL;
    u_strFromUTF8(src, (int32_t)n, &len16, s, (int32_t)n, &st);
    for (int attempt = 0; attempt < 2 && U_SUCCESS(st); attempt++) {
        free(dst);
        dst = ls_xmalloc((size_t)cap * sizeof *dst);
        got = unorm2_normalize(nz, src, len16, dst, cap, &st);
        if (st != U_BUFFER_OVERFLOW_ERROR) break;
        st = U_ZERO_ERROR, cap = got + 1;
    }
    int32_t len8 = 0;
    if (U_SUCCESS(st)) u_strToUTF8(NULL, 0, &len8, dst, got, &st);
    if (st == U_BUFFER_OVERFLOW_ERROR) st = U_ZERO_ERROR;
    if (U_SUCCESS(st)) {
        size_t at = out->n;
        tok_buf_put(out, NULL, (size_t)len8 + 1);
        u_strToUTF8(out->p + at, len8 + 1, NULL, dst, got, &st);
        out->n = at + (size_t)len8;
    }
    free(src);
    free(dst);
    return U_SUCCESS(st) ? LS_OK : ls_fail(err, LS_INTERNAL, "normalizer: ICU: %s", u_errorName(st));
}

static void replace_literal(const norm_step *st, const char *s, size_t n, tok_buf *out)
{
    size_t i = 0;
    while (i < n) {
        const char *f = st->a_len ? memmem(s + i, n - i, st->a, st->a_len) : NULL;
        if (!f) break;
        tok_buf_put(out, s + i, (size_t)(f - (s + i)));
        tok_buf_put(out, st->b, st->b_len);
        i = (size_t)(f - s) + st->a_len;
    }
    tok_buf_put(out, s + i, n - i);
}

static ls_status replace_regex(const norm_step *st, const char *s, size_t n, tok_buf *out, ls_error *err)
{
    tok_matcher *m = NULL;
    size_t i = 0, ms, me;
    int rc;
    while (i <= n && (rc = tok_regex_next(&m, st->re, s, n, i, &ms, &me)) > 0) {
        tok_buf_put(out, s + i, ms - i);
        tok_buf_put(out, st->b, st->b_len);
        if (me == ms) {         // an empty match replaces nothing: copy one character and go on
            size_t l = ms < n ? tok_utf8_seq_len(s + ms, n - ms) : 1;
            tok_buf_put(out, s + ms, ms < n ? l : 0);
            me = ms + l;
        }
        i = me;
    }
    tok_matcher_free(m);
    if (i < n) tok_buf_put(out, s + i, n - i);
    return rc < 0 ? ls_fail(err, LS_INTERNAL, "normalizer Replace: regex matching failed") : LS_OK;
}

static void strip_ws(const norm_step *st, const char *s, size_t n, tok_buf *out)
{
    size_t a = 0, b = n, l;
    while (st->left && a < b && tok_is_white_space(tok_utf8_decode(s + a, b - a, &l))) a += l;
    while (st->right && b > a) {
        size_t k = b - 1;
        while (k > a && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
        if (!tok_is_white_space(tok_utf8_decode(s + k, b - k, &l))) break;
        b = k;
    }
    tok_buf_put(out, s + a, b - a);
}

static ls_status norm_step_run(const norm_step *st, const char *s, size_t n, tok_buf *out, ls_error *err)
{
    switch (st->kind) {
    case NORM_PREPEND:
        if (n) tok_buf_put(out, st->a, st->a_len);
        tok_buf_put(out, s, n);
        return LS_OK;
    case NORM_REPLACE:
        if (st->re) return replace_regex(st, s, n, out, err);
        replace_literal(st, s, n, out);
        return LS_OK;
    case NORM_UNICODE: return icu_normalize(st->icu, s, n, out, err);
    case NORM_STRIP: strip_ws(st, s, n, out); return LS_OK;
    }
    return LS_OK;
}

bool tok_pipeline_has_normalizer(const tok_pipeline *p) { return p->n_norm > 0; }

ls_status tok_normalize(const tok_pipeline *p, const char *s, size_t n, tok_buf *out, ls_error *err)
{
    tok_buf a = {0}, b = {0};
    tok_buf_put(&a, s, n);
    ls_status rc = LS_OK;
    for (size_t i = 0; i < p->n_norm && rc == LS_OK; i++) {
        b.n = 0;
        rc = norm_step_run(&p->norm[i], a.p, a.n, &b, err);
        tok_buf t = a;
        a = b, b = t;
    }
    if (rc == LS_OK) tok_buf_put(out, a.p, a.n);
    tok_buf_free(&a);
    tok_buf_free(&b);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------------- */

static char *dup_str(const json *v, size_t *len)
{
    char *s = ls_xmalloc(v->len + 1);
    memcpy(s, v->str, v->len + 1);
    *len = v->len;
    return s;
}

static const json *get_string(const json *o, const char *key)
{
    const json *v = json_get(o, key);
    return v && v->type == JSON_STRING ? v : NULL;
}

/* A {"String": ...} or {"Regex": ...} pattern: a literal goes to *lit, a regex is compiled. */
static ls_status load_pattern(const json *o, char **lit, size_t *lit_len, tok_regex **re, const char *what,
                              ls_error *err)
{
    const json *pat = json_get(o, "pattern"), *v;
    if ((v = get_string(pat, "String"))) {
        *lit = dup_str(v, lit_len);
        return LS_OK;
    }
    if ((v = get_string(pat, "Regex"))) return tok_regex_compile(re, v->str, v->len, what, err);
    return ls_fail(err, LS_INVALID_ARGUMENT, "%s: pattern must be {\"String\"} or {\"Regex\"}", what);
}

static const char *type_of(const json *o)
{
    const json *t = get_string(o, "type");
    return t ? t->str : "(no type)";
}

static ls_status load_norm(tok_pipeline *p, const json *o, ls_error *err)
{
    const char *type = type_of(o);
    if (!strcmp(type, "Sequence")) {
        const json *list = json_get(o, "normalizers");
        if (!list || list->type != JSON_ARRAY)
            return ls_fail(err, LS_INVALID_ARGUMENT, "normalizer Sequence: expected normalizers[]");
        for (size_t i = 0; i < list->len; i++) {
            ls_status rc = load_norm(p, &list->items[i], err);
            if (rc != LS_OK) return rc;
        }
        return LS_OK;
    }
    p->norm = ls_xrealloc(p->norm, (p->n_norm + 1) * sizeof *p->norm);
    norm_step *st = &p->norm[p->n_norm++];
    *st = (norm_step){0};
    const json *v;
    UErrorCode ue = U_ZERO_ERROR;
    if (!strcmp(type, "Prepend")) {
        if (!(v = get_string(o, "prepend")))
            return ls_fail(err, LS_INVALID_ARGUMENT, "normalizer Prepend: expected a \"prepend\" string");
        st->kind = NORM_PREPEND, st->a = dup_str(v, &st->a_len);
    } else if (!strcmp(type, "Replace")) {
        if (!(v = get_string(o, "content")))
            return ls_fail(err, LS_INVALID_ARGUMENT, "normalizer Replace: expected a \"content\" string");
        st->kind = NORM_REPLACE, st->b = dup_str(v, &st->b_len);
        return load_pattern(o, &st->a, &st->a_len, &st->re, "normalizer Replace", err);
    } else if (!strcmp(type, "NFC") || !strcmp(type, "NFD") || !strcmp(type, "NFKC") || !strcmp(type, "NFKD")) {
        st->kind = NORM_UNICODE;
        st->icu = type[2] == 'K' ? (type[3] == 'C' ? unorm2_getNFKCInstance(&ue) : unorm2_getNFKDInstance(&ue))
                                 : (type[2] == 'C' ? unorm2_getNFCInstance(&ue) : unorm2_getNFDInstance(&ue));
        if (U_FAILURE(ue)) return ls_fail(err, LS_INTERNAL, "normalizer %s: ICU: %s", type, u_errorName(ue));
    } else if (!strcmp(type, "Strip")) {
        int l = 1, r = 1;
        if (!json_get_bool(o, "strip_left", 1, &l, err) || !json_get_bool(o, "strip_right", 1, &r, err))
            return ls_error_wrap(err, "normalizer Strip");
        st->kind = NORM_STRIP, st->left = l, st->right = r;
    } else {
        p->n_norm--;
        return ls_fail(err, LS_INVALID_ARGUMENT, "unsupported normalizer '%s'", type);
    }
    return LS_OK;
}

static split_behavior parse_behavior(const char *b, bool *ok)
{
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (b && !strcmp(b, names[i])) return (split_behavior)i;
    *ok = false;
    return SPLIT_ISOLATED;
}

/* The regex the ByteLevel pre-tokenizer uses when use_regex is set (GPT-2's word split). */
#define GPT2_SPLIT "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static ls_status load_metaspace(pre_step *st, const json *o, ls_error *err)
{
    const json *rep = get_string(o, "replacement"), *scheme = get_string(o, "prepend_scheme");
    int split = 1, add_prefix = 1;
    if (!rep || !rep->len || tok_utf8_seq_len(rep->str, rep->len) != rep->len)
        return ls_fail(err, LS_INVALID_ARGUMENT, "pre_tokenizer Metaspace: replacement must be one character");
    if (!json_get_bool(o, "split", 1, &split, err) || !json_get_bool(o, "add_prefix_space", 1, &add_prefix, err))
        return ls_error_wrap(err, "pre_tokenizer Metaspace");
    st->kind = PRE_METASPACE, st->split = split;
    memcpy(st->rep, rep->str, rep->len);
    st->rep_len = rep->len;
    st->prepend = add_prefix ? PREPEND_ALWAYS : PREPEND_NEVER;  // the spelling before prepend_scheme
    if (scheme) {
        if (!strcmp(scheme->str, "first")) st->prepend = PREPEND_FIRST;
        else if (!strcmp(scheme->str, "always")) st->prepend = PREPEND_ALWAYS;
        else if (!strcmp(scheme->str, "never")) st->prepend = PREPEND_NEVER;
        else return ls_fail(err, LS_INVALID_ARGUMENT, "pre_tokenizer Metaspace: prepend_scheme '%s'", scheme->str);
    }
    return LS_OK;
}

static ls_status load_pre_one(pre_step *st, const char *type, const json *o, ls_error *err)
{
    if (!strcmp(type, "Split")) {
        int inv = 0;
        bool ok = true;
        const json *b = get_string(o, "behavior");
        st->kind = PRE_SPLIT, st->behavior = parse_behavior(b ? b->str : NULL, &ok);
        if (!ok || !json_get_bool(o, "invert", 0, &inv, err))
            return ls_fail(err, LS_INVALID_ARGUMENT, "pre_tokenizer Split: bad behavior or invert");
        st->invert = inv;
        return load_pattern(o, &st->lit, &st->lit_len, &st->re, "pre_tokenizer Split", err);
    }
    if (!strcmp(type, "ByteLevel")) {
        int prefix = 1, use_regex = 1;
        if (!json_get_bool(o, "add_prefix_space", 1, &prefix, err) ||
            !json_get_bool(o, "use_regex", 1, &use_regex, err))
            return ls_error_wrap(err, "pre_tokenizer ByteLevel");
        st->kind = PRE_BYTE_LEVEL, st->add_prefix_space = prefix, st->behavior = SPLIT_ISOLATED;
        return use_regex ? tok_regex_compile(&st->re, GPT2_SPLIT, strlen(GPT2_SPLIT), "pre_tokenizer ByteLevel", err)
                         : LS_OK;
    }
    if (!strcmp(type, "Digits")) {      // Rust's char::is_numeric is exactly \p{N}
        int single = 0;
        if (!json_get_bool(o, "individual_digits", 0, &single, err)) return ls_error_wrap(err, "pre_tokenizer Digits");
        st->kind = PRE_SPLIT, st->behavior = single ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS;
        return tok_regex_compile(&st->re, "\\p{N}", 5, "pre_tokenizer Digits", err);
    }
    if (!strcmp(type, "Metaspace")) return load_metaspace(st, o, err);
    return ls_fail(err, LS_INVALID_ARGUMENT, "unsupported pre_tokenizer '%s'", type);
}

static ls_status load_pre(tok_pipeline *p, const json *o, ls_error *err)
{
    const char *type = type_of(o);
    if (!strcmp(type, "Sequence")) {
        const json *list = json_get(o, "pretokenizers");
        if (!list || list->type != JSON_ARRAY)
            return ls_fail(err, LS_INVALID_ARGUMENT, "pre_tokenizer Sequence: expected pretokenizers[]");
        for (size_t i = 0; i < list->len; i++) {
            ls_status rc = load_pre(p, &list->items[i], err);
            if (rc != LS_OK) return rc;
        }
        return LS_OK;
    }
    p->pre = ls_xrealloc(p->pre, (p->n_pre + 1) * sizeof *p->pre);
    pre_step *st = &p->pre[p->n_pre++];
    *st = (pre_step){0};
    return load_pre_one(st, type, o, err);
}

ls_status tok_pipeline_load(tok_pipeline **out, const json *normalizer, const json *pre_tokenizer, ls_error *err)
{
    tok_pipeline *p = ls_xcalloc(1, sizeof *p);
    ls_status rc = LS_OK;
    if (normalizer && normalizer->type != JSON_NULL) rc = load_norm(p, normalizer, err);
    if (rc == LS_OK && pre_tokenizer && pre_tokenizer->type != JSON_NULL) rc = load_pre(p, pre_tokenizer, err);
    if (rc != LS_OK) {
        tok_pipeline_free(p);
        p = NULL;
    }
    *out = p;
    return rc;
}

void tok_pipeline_free(tok_pipeline *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_norm; i++) {
        free(p->norm[i].a);
        free(p->norm[i].b);
        tok_regex_free(p->norm[i].re);
    }
    for (size_t i = 0; i < p->n_pre; i++) {
        free(p->pre[i].lit);
        tok_regex_free(p->pre[i].re);
    }
    free(p->norm);
    free(p->pre);
    free(p);
}
