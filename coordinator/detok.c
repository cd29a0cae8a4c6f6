/* Decoding ids to text, whole and streamed. There is one engine: the decoder chain of tokenizer.json
 * (Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel) run as a stream, and tokenizer_decode is
 * just "push every id, then flush". So the streamed deltas concatenate to exactly the full decode by
 * construction, and the oracle tests of the full decode cover streaming too.
 *
 * Each stage holds back only what a later token can still change, which is what a streaming client
 * must never see half of:
 *   - ByteFallback holds a run of <0xNN> tokens until a normal token (or the end) arrives: the reference
 *     turns a run that is not valid UTF-8 as a whole into one U+FFFD per byte, so no prefix is final;
 *   - ByteLevel holds an incomplete UTF-8 sequence (at most 3 bytes): bytes are decoded like Rust's
 *     from_utf8_lossy, one U+FFFD per maximal invalid subpart, and a truncated tail becomes U+FFFD at flush;
 *   - Strip after Fuse holds trailing strip characters (the end of text is unknown until flush), and
 *     drops the leading ones ("the leading-space rule" of SentencePiece models). */
#include "coordinator/tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

typedef enum dec_kind { DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_FUSE, DEC_STRIP, DEC_BYTE_LEVEL, DEC_METASPACE } dec_kind;

typedef struct dec_step {
    dec_kind kind;
    bool fused;                 // after a Fuse: tokens arriving here are fragments of one string
    char *pat, *rep;            // Replace (owned)
    size_t pat_len, rep_len;
    char ch[4];                 // Strip content / Metaspace replacement, UTF-8
    size_t ch_len;
    size_t start, stop;         // Strip
    bool prepend;               // Metaspace: prepend_scheme != never
} dec_step;

struct tok_decoder {
    dec_step *step;             // owned, flattened Sequence
    size_t n;
    bool join_space;            // no decoder at all: tokens are joined with " "
};

typedef struct step_state {
    size_t count;               // tokens seen by this step (Metaspace's "first token" rule)
    tok_buf run;                // ByteFallback: pending bytes
    bool started;               // fused Strip: leading characters are done
    size_t stripped;            // fused Strip: leading characters dropped so far
    size_t held;                // fused Strip: trailing strip characters not yet emitted
} step_state;

struct detok {
    const tokenizer *t;
    step_state *st;             // owned, one per decoder step
    size_t tokens;              // tokens decoded (for the " " join without a decoder)
    uint8_t pend[4];            // ByteLevel: an incomplete UTF-8 sequence
    size_t pend_n;
    tok_buf out;                // text produced by the current push
};

static const char REPLACEMENT[] = "\xEF\xBF\xBD";   // U+FFFD

static void feed(detok *d, size_t k, const char *s, size_t n);

/* ---- ByteLevel: token characters back to bytes, then lossy UTF-8 --------------------------------- */

/* Second-byte range of a sequence given its lead (Unicode table 3-7); 0 for a byte that cannot lead. */
static size_t lead_info(uint8_t b, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80, *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) *lo = 0xA0;
        if (b == 0xED) *hi = 0x9F;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) *lo = 0x90;
        if (b == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

static void lossy_byte(detok *d, uint8_t b)
{
    uint8_t lo, hi;
    if (d->pend_n) {
        size_t need = lead_info(d->pend[0], &lo, &hi);
        if (d->pend_n > 1) lo = 0x80, hi = 0xBF;
        if (b >= lo && b <= hi) {
            d->pend[d->pend_n++] = b;
            if (d->pend_n == need) {
                tok_buf_put(&d->out, d->pend, need);
                d->pend_n = 0;
            }
            return;
        }
        tok_buf_put(&d->out, REPLACEMENT, 3);   // the maximal subpart so far is one U+FFFD
        d->pend_n = 0;
    }
    if (b < 0x80) tok_buf_putc(&d->out, (char)b);
    else if (lead_info(b, &lo, &hi)) d->pend[d->pend_n++] = b;
    else tok_buf_put(&d->out, REPLACEMENT, 3);
}

/* A token whose characters all belong to the byte alphabet stands for those bytes; any other (an added
 * token such as "<think>" spelled with other characters) stands for its own UTF-8. */
static void byte_level_token(detok *d, const char *s, size_t n)
{
    size_t l;
    for (size_t i = 0; i < n; i += l)
        if (tok_bytelevel_byte(tok_utf8_decode(s + i, n - i, &l)) < 0) {
            for (size_t j = 0; j < n; j++) lossy_byte(d, (uint8_t)s[j]);
            return;
        }
    for (size_t i = 0; i < n; i += l) lossy_byte(d, (uint8_t)tok_bytelevel_byte(tok_utf8_decode(s + i, n - i, &l)));
}

/* ---- ByteFallback -------------------------------------------------------------------------------- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static void flush_run(detok *d, size_t k)
{
    tok_buf *run = &d->st[k].run;
    if (!run->n) return;
    if (tok_utf8_invalid_at(run->p, run->n) == run->n) {
        feed(d, k + 1, run->p, run->n);
    } else {
        for (size_t i = 0; i < run->n; i++) feed(d, k + 1, REPLACEMENT, 3);
    }
    run->n = 0;
}

/* ---- Strip, Metaspace, Replace ------------------------------------------------------------------- */

static bool is_ch(const dec_step *s, const char *p, size_t n) { return n == s->ch_len && !memcmp(p, s->ch, n); }

/* Per-token Strip: up to `start` leading and `stop` trailing content characters. */
static void strip_token(detok *d, size_t k, const char *s, size_t n)
{
    const dec_step *st = &d->t->dec->step[k];
    size_t a = 0, b = n, l;
    for (size_t i = 0; i < st->start && a < n; i++, a += l)
        if (!is_ch(st, s + a, (l = tok_utf8_seq_len(s + a, n - a)))) break;
    for (size_t i = 0; i < st->stop && b > a; i++) {
        size_t c = b - 1;
        while (c > a && ((uint8_t)s[c] & 0xC0) == 0x80) c--;
        if (!is_ch(st, s + c, b - c)) break;
        b = c;
    }
    feed(d, k + 1, s + a, b - a);
}

/* Strip over the whole fused text: leading characters dropped as they come, trailing ones held. */
static void strip_fused(detok *d, size_t k, const char *s, size_t n)
{
    const dec_step *st = &d->t->dec->step[k];
    step_state *ss = &d->st[k];
    size_t l;
    for (size_t i = 0; i < n; i += l) {
        l = tok_utf8_seq_len(s + i, n - i);
        bool c = is_ch(st, s + i, l);
        if (!ss->started && c && ss->stripped < st->start) {
            ss->stripped++;
            continue;
        }
        ss->started = true;
        if (c && st->stop) {
            ss->held++;
            continue;
        }
        for (; ss->held; ss->held--) feed(d, k + 1, st->ch, st->ch_len);
        feed(d, k + 1, s + i, l);
    }
}

static void metaspace_token(detok *d, size_t k, const char *s, size_t n)
{
    const dec_step *st = &d->t->dec->step[k];
    bool first = d->st[k].count == 0;
    if (!st->fused) d->st[k].count++;
    tok_buf t = {0};
    size_t l;
    for (size_t i = 0; i < n; i += l) {
        l = tok_utf8_seq_len(s + i, n - i);
        if (!is_ch(st, s + i, l)) tok_buf_put(&t, s + i, l);
        else if (!(first && st->prepend)) tok_buf_putc(&t, ' ');
    }
    feed(d, k + 1, t.p, t.n);
    tok_buf_free(&t);
}

static void replace_token(detok *d, size_t k, const char *s, size_t n)
{
    const dec_step *st = &d->t->dec->step[k];
    tok_buf t = {0};
    size_t i = 0;
    for (const char *f; i < n && (f = memmem(s + i, n - i, st->pat, st->pat_len));) {
        tok_buf_put(&t, s + i, (size_t)(f - (s + i)));
        tok_buf_put(&t, st->rep, st->rep_len);
        i = (size_t)(f - s) + st->pat_len;
    }
    tok_buf_put(&t, s + i, n - i);
    feed(d, k + 1, t.p, t.n);
    tok_buf_free(&t);
}

/* Runs one token (or, after Fuse, one fragment) through step k and everything after it. */
static void feed(detok *d, size_t k, const char *s, size_t n)
{
    const tok_decoder *dec = d->t->dec;
    if (k == dec->n) {
        tok_buf_put(&d->out, s, n);
        return;
    }
    const dec_step *st = &dec->step[k];
    int b;
    switch (st->kind) {
    case DEC_REPLACE: replace_token(d, k, s, n); break;
    case DEC_BYTE_FALLBACK:
        if ((b = byte_token(s, n)) >= 0) {
            char c = (char)b;
            tok_buf_put(&d->st[k].run, &c, 1);
        } else {
            flush_run(d, k);
            feed(d, k + 1, s, n);
        }
        break;
    case DEC_FUSE: feed(d, k + 1, s, n); break;
    case DEC_STRIP: st->fused ? strip_fused(d, k, s, n) : strip_token(d, k, s, n); break;
    case DEC_METASPACE: metaspace_token(d, k, s, n); break;
    case DEC_BYTE_LEVEL: byte_level_token(d, s, n); break;
    }
}

/* End of stream: release what each stage held, in chain order. */
static void flush_all(detok *d)
{
    const tok_decoder *dec = d->t->dec;
    for (size_t k = 0; k < dec->n; k++) {
        const dec_step *st = &dec->step[k];
        if (st->kind == DEC_BYTE_FALLBACK) flush_run(d, k);
        if (st->kind == DEC_STRIP && st->fused) {
            size_t keep = d->st[k].held > st->stop ? d->st[k].held - st->stop : 0;
            d->st[k].held = 0;
            for (; keep; keep--) feed(d, k + 1, st->ch, st->ch_len);
        }
    }
    if (d->pend_n) tok_buf_put(&d->out, REPLACEMENT, 3);
    d->pend_n = 0;
}

/* ---- public API ---------------------------------------------------------------------------------- */

static detok *detok_make(const tokenizer *t, bool continuation)
{
    detok *d = ls_xcalloc(1, sizeof *d);
    d->t = t;
    d->st = ls_xcalloc(t->dec->n + 1, sizeof *d->st);
    if (continuation) {     // as if text came before: no first-token or leading-space rules
        d->tokens = 1;
        for (size_t k = 0; k < t->dec->n; k++) d->st[k].count = 1, d->st[k].started = true;
    }
    return d;
}

detok *detok_new(const tokenizer *t) { return detok_make(t, false); }
detok *detok_new_continuation(const tokenizer *t) { return detok_make(t, true); }

void detok_free(detok *d)
{
    if (!d) return;
    for (size_t k = 0; k < d->t->dec->n; k++) tok_buf_free(&d->st[k].run);
    free(d->st);
    tok_buf_free(&d->out);
    free(d);
}

static void push_id(detok *d, int32_t id)
{
    const tokenizer *t = d->t;
    if (id < 0 || id >= t->n_ids || !t->id_text[id] || t->id_special[id]) return;
    if (t->dec->join_space && d->tokens) tok_buf_putc(&d->out, ' ');
    d->tokens++;
    feed(d, 0, t->id_text[id], t->id_len[id]);
}

static size_t take_out(detok *d, char **out)
{
    size_t n = d->out.n;
    *out = ls_xmalloc(n + 1);
    if (n) memcpy(*out, d->out.p, n);
    (*out)[n] = '\0';
    d->out.n = 0;
    return n;
}

size_t detok_push(detok *d, int32_t id, char **out)
{
    push_id(d, id);
    return take_out(d, out);
}

size_t detok_flush(detok *d, char **out)
{
    flush_all(d);
    return take_out(d, out);
}

char *tokenizer_decode_len(const tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    detok *d = detok_make(t, false);
    for (size_t i = 0; i < n; i++) push_id(d, ids[i]);
    flush_all(d);
    char *s;
    size_t l = take_out(d, &s);
    if (len) *len = l;
    detok_free(d);
    return s;
}

char *tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n)
{
    return tokenizer_decode_len(t, ids, n, NULL);
}

/* ---- loading ------------------------------------------------------------------------------------- */

static ls_status one_char(const json *v, dec_step *st, const char *what, ls_error *err)
{
    if (!v || v->type != JSON_STRING || !v->len || tok_utf8_seq_len(v->str, v->len) != v->len)
        return ls_fail(err, LS_INVALID_ARGUMENT, "decoder %s: expected a single character", what);
    memcpy(st->ch, v->str, v->len);
    st->ch_len = v->len;
    return LS_OK;
}

static ls_status load_replace(dec_step *st, const json *o, ls_error *err)
{
    const json *pat = json_get(json_get(o, "pattern"), "String"), *rep = json_get(o, "content");
    if (!pat || pat->type != JSON_STRING || !pat->len || !rep || rep->type != JSON_STRING)
        return ls_fail(err, LS_INVALID_ARGUMENT, "decoder Replace: only a non-empty String pattern is supported");
    if (st->fused && tok_utf8_seq_len(pat->str, pat->len) != pat->len)   // would straddle fragments
        return ls_fail(err, LS_INVALID_ARGUMENT, "decoder Replace after Fuse: pattern must be one character");
    st->pat = ls_xmalloc(pat->len + 1), st->rep = ls_xmalloc(rep->len + 1);
    memcpy(st->pat, pat->str, pat->len + 1), memcpy(st->rep, rep->str, rep->len + 1);
    st->pat_len = pat->len, st->rep_len = rep->len;
    return LS_OK;
}

static ls_status load_strip(dec_step *st, const json *o, ls_error *err)
{
    int64_t a = 0, b = 0;
    if (!json_get_int(o, "start", 0, &a, err) || !json_get_int(o, "stop", 0, &b, err))
        return ls_error_wrap(err, "decoder Strip");
    if (a < 0 || b < 0 || a > 1024 || b > 1024)
        return ls_fail(err, LS_INVALID_ARGUMENT, "decoder Strip: start/stop out of range");
    st->start = (size_t)a, st->stop = (size_t)b;
    return one_char(json_get(o, "content"), st, "Strip", err);
}

static ls_status load_metaspace(dec_step *st, const json *o, ls_error *err)
{
    int add_prefix = 1;
    if (!json_get_bool(o, "add_prefix_space", 1, &add_prefix, err)) return ls_error_wrap(err, "decoder Metaspace");
    const json *scheme = json_get(o, "prepend_scheme");
    st->prepend = scheme && scheme->type == JSON_STRING ? strcmp(scheme->str, "never") != 0 : add_prefix;
    return one_char(json_get(o, "replacement"), st, "Metaspace", err);
}

static ls_status load_step(tok_decoder *dec, const json *o, bool *fused, ls_error *err)
{
    const json *tv = json_get(o, "type");
    const char *type = tv && tv->type == JSON_STRING ? tv->str : "(no type)";
    if (!strcmp(type, "Sequence")) {
        const json *list = json_get(o, "decoders");
        if (!list || list->type != JSON_ARRAY)
            return ls_fail(err, LS_INVALID_ARGUMENT, "decoder Sequence: expected decoders[]");
        for (size_t i = 0; i < list->len; i++) {
            ls_status rc = load_step(dec, &list->items[i], fused, err);
            if (rc != LS_OK) return rc;
        }
        return LS_OK;
    }
    if (dec->n && dec->step[dec->n - 1].kind == DEC_BYTE_LEVEL)     // it ends the chain with one string
        return ls_fail(err, LS_INVALID_ARGUMENT, "decoder ByteLevel must be the last decoder");
    dec->step = ls_xrealloc(dec->step, (dec->n + 1) * sizeof *dec->step);
    dec_step *st = &dec->step[dec->n++];
    *st = (dec_step){.fused = *fused};
    if (!strcmp(type, "Replace")) st->kind = DEC_REPLACE;
    else if (!strcmp(type, "ByteFallback")) st->kind = DEC_BYTE_FALLBACK;
    else if (!strcmp(type, "Fuse")) st->kind = DEC_FUSE, *fused = true;
    else if (!strcmp(type, "Strip")) st->kind = DEC_STRIP;
    else if (!strcmp(type, "Metaspace")) st->kind = DEC_METASPACE;
    else if (!strcmp(type, "ByteLevel")) st->kind = DEC_BYTE_LEVEL;
    else {
        dec->n--;
        return ls_fail(err, LS_INVALID_ARGUMENT, "unsupported decoder '%s'", type);
    }
    if (st->kind == DEC_BYTE_FALLBACK && st->fused)
        return ls_fail(err, LS_INVALID_ARGUMENT, "decoder ByteFallback after Fuse is not supported");
    if (st->kind == DEC_REPLACE) return load_replace(st, o, err);
    if (st->kind == DEC_STRIP) return load_strip(st, o, err);
    if (st->kind == DEC_METASPACE) return load_metaspace(st, o, err);
    return LS_OK;
}

ls_status tok_decoder_load(tok_decoder **out, const json *decoder, ls_error *err)
{
    tok_decoder *dec = ls_xcalloc(1, sizeof *dec);
    bool fused = false;
    ls_status rc = LS_OK;
    if (!decoder || decoder->type == JSON_NULL) dec->join_space = true;
    else rc = load_step(dec, decoder, &fused, err);
    if (rc != LS_OK) {
        tok_decoder_free(dec);
        dec = NULL;
    }
    *out = dec;
    return rc;
}

void tok_decoder_free(tok_decoder *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->step[i].pat);
        free(d->step[i].rep);
    }
    free(d->step);
    free(d);
}
