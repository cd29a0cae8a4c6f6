/* Python re -> PCRE2, the atoms: literal characters, escapes, character sets and quantifiers, each
 * written back so that PCRE2 can only read it with Python's meaning (see py_regex.c for the driver). */
#include "common/py_regex_impl.h"
#include "common/py_regex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char rx_oom[] = "out of memory";

int rx_fail(tr *t, const char *why)
{
    if (!t->bad) t->bad = why;
    return 0;
}

int rx_put(tr *t, const char *s, size_t n)
{
    if (t->n + n + 1 > t->cap) {
        size_t cap = (t->n + n + 1) * 2;
        char *o = realloc(t->o, cap);
        if (!o) return rx_fail(t, rx_oom);
        t->o = o;
        t->cap = cap;
    }
    memcpy(t->o + t->n, s, n);
    t->n += n;
    t->o[t->n] = 0;
    return 1;
}

int rx_puts(tr *t, const char *s) { return rx_put(t, s, strlen(s)); }

int rx_is_digit(char c) { return c >= '0' && c <= '9'; }
int rx_is_octal(char c) { return c >= '0' && c <= '7'; }
int rx_is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

int rx_hex_value(char c)
{
    if (rx_is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One UTF-8 code point at s: its length, or 0 when the bytes are not UTF-8 (overlong, surrogate, ...). */
int rx_utf8_decode(const char *s, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    int len = u[0] < 0x80 ? 1 : u[0] >= 0xc2 && u[0] < 0xe0 ? 2 : u[0] >= 0xe0 && u[0] < 0xf0 ? 3
            : u[0] >= 0xf0 && u[0] < 0xf5 ? 4 : 0;
    if (!len) return 0;
    uint32_t v = len == 1 ? u[0] : u[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((u[i] & 0xc0) != 0x80) return 0;
        v = v << 6 | (u[i] & 0x3f);
    }
    static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v < 0xe000)) return 0;
    *cp = v;
    return len;
}

/* A literal code point, written so PCRE2 can only read it as that character (inside or outside [...]):
 * ASCII letters, digits and '_' as themselves, other printable ASCII behind a backslash, the rest \x{}. */
int rx_put_char(tr *t, uint32_t c)
{
    char b[16];
    if (c >= 0x80 && (t->flags & F_I))
        return rx_fail(t, "a non-ASCII character in a case-insensitive pattern (Python and PCRE2 fold some "
                       "differently)");
    if (c < 0x80 && (rx_is_alpha((char)c) || rx_is_digit((char)c) || c == '_')) {
        b[0] = (char)c;
        return rx_put(t, b, 1);
    }
    if (c > 0x20 && c < 0x7f) {
        b[0] = '\\';
        b[1] = (char)c;
        return rx_put(t, b, 2);
    }
    snprintf(b, sizeof b, "\\x{%x}", (unsigned)c);
    return rx_puts(t, b);
}

/* \d \D \w \W \s \S: Unicode classes with PCRE2's UCP (which agree with Python's on ASCII), but \s and
 * \S as Python's set; under the ASCII flag every class is spelled out. */
int rx_put_category(tr *t, char c, int in_class)
{
    int ascii = !!(t->flags & F_A);
    const char *in = NULL, *out = NULL;
    switch (c) {
    case 'd': in = ascii ? DIGIT_A : "\\d"; out = ascii ? "[" DIGIT_A "]" : "\\d"; break;
    case 'D': in = ascii ? NDIGIT_A : "\\D"; out = ascii ? "[^" DIGIT_A "]" : "\\D"; break;
    case 'w': in = ascii ? WORD_A : "\\w"; out = ascii ? "[" WORD_A "]" : "\\w"; break;
    case 'W': in = ascii ? (t->flags & F_I ? NWORD_AI : NWORD_A) : "\\W"; out = ascii ? "[^" WORD_A "]" : "\\W"; break;
    case 's': in = ascii ? SPACE_A : SPACE_U; out = ascii ? "[" SPACE_A "]" : "[" SPACE_U "]"; break;
    case 'S': in = ascii ? NSPACE_A : NSPACE_U; out = ascii ? "[^" SPACE_A "]" : "[^" SPACE_U "]"; break;
    }
    return rx_puts(t, in_class ? in : out);
}

/* \b \B: PCRE2's with UCP; under the ASCII flag as lookarounds on [0-9A-Z_a-z]. */
int rx_put_boundary(tr *t, int negated)
{
    if (!(t->flags & F_A)) return rx_puts(t, negated ? "\\B" : "\\b");
#define W "[" WORD_A "]"
    return rx_puts(t, negated ? "(?:(?<=" W ")(?=" W ")|(?<!" W ")(?!" W "))"
                            : "(?:(?<=" W ")(?!" W ")|(?<!" W ")(?=" W "))");
#undef W
}

/* Exactly n hex digits after *p (Python's \xhh, \uhhhh, \Uhhhhhhhh). */
int rx_hex_escape(tr *t, int n, uint32_t *v)
{
    uint32_t x = 0;
    for (int i = 0; i < n; i++) {
        int h = rx_hex_value(t->p[i]);
        if (h < 0) return rx_fail(t, "incomplete escape \\x, \\u or \\U");
        x = x << 4 | (uint32_t)h;
    }
    t->p += n;
    if (x > 0x10ffff) return rx_fail(t, "bad escape \\U (above U+10FFFF)");
    if (x >= 0xd800 && x < 0xe000) return rx_fail(t, "a surrogate code point (PCRE2's UTF mode has none)");
    *v = x;
    return 1;
}

/* The escapes that stand for one character, with t->p just past the letter c: 1 with *v, 0 on refusal,
 * 2 when c is none of them (categories, anchors, group references: the caller's). */
int rx_char_escape(tr *t, char c, int in_class, uint32_t *v)
{
    switch (c) {
    case 'a': *v = 7; return 1;
    case 'f': *v = 12; return 1;
    case 'n': *v = 10; return 1;
    case 'r': *v = 13; return 1;
    case 't': *v = 9; return 1;
    case 'v': *v = 11; return 1;                        // PCRE2's \v is a class; Python's is VT
    case 'b': if (in_class) { *v = 8; return 1; } return 2;
    case 'x': return rx_hex_escape(t, 2, v);
    case 'u': return rx_hex_escape(t, 4, v);
    case 'U': return rx_hex_escape(t, 8, v);
    case 'N': return rx_fail(t, "\\N{...} named characters (PCRE2 has no character names)");
    default: break;
    }
    if (c == '0' || (in_class && rx_is_octal(c))) {        // octal: \0 plus two digits, or three in a class
        uint32_t x = (uint32_t)(c - '0');
        for (int i = 0; i < 2 && rx_is_octal(*t->p); i++) x = x * 8 + (uint32_t)(*t->p++ - '0');
        if (x > 0377) return rx_fail(t, "octal escape value outside of range 0-0o377");
        *v = x;
        return 1;
    }
    if (rx_is_digit(c)) return in_class ? rx_fail(t, "bad escape \\8 or \\9 in a set") : 2;
    if (rx_is_alpha(c)) return rx_fail(t, "bad escape (a letter Python does not define)");
    int len = rx_utf8_decode(t->p - 1, v);                 // any other character stands for itself
    if (!len) return rx_fail(t, "invalid UTF-8");
    t->p += len - 1;
    return 1;
}

/* \1 .. \99 outside a set: a group reference, or a three-digit octal escape (Python's rule). */
int rx_backref(tr *t, char c)
{
    int g = c - '0';
    if (rx_is_digit(*t->p)) {
        char d = *t->p++;
        if (rx_is_octal(c) && rx_is_octal(d) && rx_is_octal(*t->p)) {
            uint32_t x = (uint32_t)((c - '0') * 64 + (d - '0') * 8 + (*t->p++ - '0'));
            if (x > 0377) return rx_fail(t, "octal escape value outside of range 0-0o377");
            t->prev = PREV_ITEM;
            return rx_put_char(t, x);
        }
        g = g * 10 + (d - '0');
    }
    if (g > t->groups) return rx_fail(t, "invalid group reference");
    if (!t->closed[g]) return rx_fail(t, "cannot refer to an open group");
    char b[16];
    snprintf(b, sizeof b, "\\g{%d}", g);
    t->prev = PREV_ITEM;
    return rx_puts(t, b);
}

int rx_escape(tr *t)
{
    char c = t->p[1];
    uint32_t v;
    if (!c) return rx_fail(t, "bad escape (end of pattern)");
    t->p += 2;
    switch (c) {
    case 'A': t->prev = PREV_ANCHOR; return rx_puts(t, "\\A");
    case 'Z': t->prev = PREV_ANCHOR; return rx_puts(t, "\\z");    // Python's \Z is PCRE2's \z
    case 'b': case 'B': t->prev = PREV_ANCHOR; return rx_put_boundary(t, c == 'B');
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S': t->prev = PREV_ITEM; return rx_put_category(t, c, 0);
    default: break;
    }
    int k = rx_char_escape(t, c, 0, &v);
    if (k == 2) return rx_backref(t, c);
    t->prev = PREV_ITEM;
    return k && rx_put_char(t, v);
}

/* One member of a set: a character (kind 1, *v) or a class escape (kind 2, *cat). 0 on refusal. */
int rx_set_member(tr *t, uint32_t *v, char *cat)
{
    if (!*t->p) return rx_fail(t, "unterminated character set");
    if (*t->p != '\\') {
        int len = rx_utf8_decode(t->p, v);
        if (!len) return rx_fail(t, "invalid UTF-8");
        t->p += len;
        return 1;
    }
    char c = t->p[1];
    if (!c) return rx_fail(t, "bad escape (end of pattern)");
    t->p += 2;
    if (strchr("dDsSwW", c)) {
        *cat = c;
        return 2;
    }
    return rx_char_escape(t, c, 1, v);     // never 2 in a set
}

/* [...] with Python's rules: ']' first is a literal, '[' is always a literal (no POSIX [:x:]), a range
 * needs two characters, a trailing '-' is a literal. Members are written one by one. */
int rx_set(tr *t)
{
    t->p++;
    int negate = *t->p == '^', first = 1;
    if (negate) t->p++;
    if (!rx_puts(t, negate ? "[^" : "[")) return 0;
    for (;;) {
        if (!*t->p) return rx_fail(t, "unterminated character set");
        if (*t->p == ']' && !first) {
            t->p++;
            break;
        }
        first = 0;
        uint32_t lo = 0, hi = 0;
        char cat1 = 0, cat2 = 0;
        int k1 = rx_set_member(t, &lo, &cat1);
        if (!k1) return 0;
        if (*t->p == '-' && t->p[1] == ']') {           // "x-]": x and a literal '-'
            t->p++;
            if (!(k1 == 2 ? rx_put_category(t, cat1, 1) : rx_put_char(t, lo)) || !rx_put_char(t, '-')) return 0;
            continue;
        }
        if (*t->p != '-') {
            if (!(k1 == 2 ? rx_put_category(t, cat1, 1) : rx_put_char(t, lo))) return 0;
            continue;
        }
        t->p++;
        int k2 = rx_set_member(t, &hi, &cat2);
        if (!k2) return 0;
        if (k1 == 2 || k2 == 2 || hi < lo) return rx_fail(t, "bad character range");
        if (!rx_put_char(t, lo) || !rx_put(t, "-", 1) || !rx_put_char(t, hi)) return 0;
    }
    t->prev = PREV_ITEM;
    return rx_put(t, "]", 1);
}

/* *, +, ? or {m,n} (as text q) after an item; then Python's lazy '?' or possessive '+'. */
int rx_quantifier(tr *t, const char *q)
{
    if (t->prev == PREV_NONE || t->prev == PREV_ANCHOR) return rx_fail(t, "nothing to repeat");
    if (t->prev == PREV_REPEAT) return rx_fail(t, "multiple repeat");
    if (!rx_puts(t, q)) return 0;
    if (*t->p == '?' || *t->p == '+')
        if (!rx_put(t, t->p++, 1)) return 0;
    t->prev = PREV_REPEAT;
    return 1;
}

int rx_count(const char **p, long *v)
{
    if (!rx_is_digit(**p)) return 0;
    long n = 0;
    while (rx_is_digit(**p)) {
        if (n <= PY_REGEX_MAX_REPEAT) n = n * 10 + (*(*p)++ - '0');
        else (*p)++;
    }
    *v = n;
    return 1;
}

/* '{': {m}, {m,}, {,n}, {m,n} and {,} are quantifiers in Python (no spaces); "{}" and anything else make
 * '{' a literal. Written canonically ({0,n}), since PCRE2 before 10.43 reads {,n} as text. */
int rx_brace(tr *t)
{
    const char *q = t->p + 1;
    long lo = 0, hi = -1;
    int has_lo = rx_count(&q, &lo), comma = *q == ',';
    if (comma) q++;
    int has_hi = comma && rx_count(&q, &hi);
    if (*q != '}' || (!comma && !has_lo)) {            // "{}" included
        t->p++;
        t->prev = PREV_ITEM;
        return rx_put_char(t, '{');
    }
    t->p = q + 1;
    if (!comma) hi = lo;
    if (lo > PY_REGEX_MAX_REPEAT || hi > PY_REGEX_MAX_REPEAT)
        return rx_fail(t, "a repeat count above 65535 (PCRE2's limit)");
    if (has_hi && hi < lo) return rx_fail(t, "min repeat greater than max repeat");
    char b[48];
    if (!comma) snprintf(b, sizeof b, "{%ld}", lo);
    else if (!has_hi) snprintf(b, sizeof b, "{%ld,}", lo);
    else snprintf(b, sizeof b, "{%ld,%ld}", lo, hi);
    return rx_quantifier(t, b);
}
