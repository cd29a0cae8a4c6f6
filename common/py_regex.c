/* Python re -> PCRE2 (py_regex.h). The pattern is parsed the way Python's sre_parse (3.11) parses a str
 * pattern, item by item, and every item is written back in a PCRE2 spelling with one reading: where the
 * two syntaxes overlap but differ ({,n}, {}, \Z, \v, [[:x:]], \1 vs octal, (?#...) with escapes, verbose
 * mode, the ASCII flag) the meaning written is Python's, and where Python would raise re.error the
 * pattern is refused with Python's reason, so a config PEFT could not load is not served either. */
#include "common/py_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/py_regex_impl.h"

static int push(tr *t, int num)
{
    t->stack[t->depth++] = (group){ .flags = t->flags, .num = num };
    t->prev = PREV_NONE;
    return 1;
}

/* A Python group name up to `end` (text after *t->p): an ASCII identifier, the names PCRE2 accepts. */
static int group_name(tr *t, char end, const char **s, size_t *n)
{
    const char *e = strchr(t->p, end);
    if (!e) return rx_fail(t, end == '>' ? "missing >, unterminated name" : "missing ), unterminated name");
    *s = t->p;
    *n = (size_t)(e - t->p);
    if (!*n) return rx_fail(t, "missing group name");
    for (size_t i = 0; i < *n; i++) {
        char c = (*s)[i];
        if ((unsigned char)c >= 0x80) return rx_fail(t, "a non-ASCII group name (PCRE2 takes ASCII names only)");
        if (!(rx_is_alpha(c) || c == '_' || (i && rx_is_digit(c)))) return rx_fail(t, "bad character in group name");
    }
    t->p = e + 1;
    return 1;
}

static const gname *find_name(const tr *t, const char *s, size_t n)
{
    for (int i = 0; i < t->n_names; i++)
        if (t->names[i].n == n && !memcmp(t->names[i].s, s, n)) return &t->names[i];
    return NULL;
}

static int put_name_group(tr *t, const char *open, const char *s, size_t n, const char *close)
{
    return rx_puts(t, open) && rx_put(t, s, n) && rx_puts(t, close);
}

static unsigned flag_bit(char c)
{
    switch (c) {
    case 'i': return F_I;
    case 'm': return F_M;
    case 's': return F_S;
    case 'x': return F_X;
    case 'a': return F_A;
    case 'u': return F_U;
    default: return 0;
    }
}

/* The i, m, s of f as PCRE2 flag letters (x, a and u are handled here, not by PCRE2). */
static void ims(unsigned f, char *b)
{
    if (f & F_I) *b++ = 'i';
    if (f & F_M) *b++ = 'm';
    if (f & F_S) *b++ = 's';
    *b = 0;
}

/* (?flags) at the start of the pattern, or (?flags-flags:...), t->p at the first flag letter or '-'. */
static int flags_group(tr *t)
{
    unsigned add = 0, del = 0;
    char c = *t->p;
    if (c == 'L') return rx_fail(t, "the L (locale) flag, which Python refuses for str patterns");
    if (c == 't') return rx_fail(t, "the t (template) flag");
    if (c != '-')
        for (;;) {
            add |= flag_bit(c);
            if ((add & F_A) && (add & F_U)) return rx_fail(t, "flags 'a' and 'u' are incompatible");
            c = *++t->p;
            if (c == ')' || c == '-' || c == ':') break;
            if (c == 'L') return rx_fail(t, "the L (locale) flag, which Python refuses for str patterns");
            if (!flag_bit(c)) return rx_fail(t, rx_is_alpha(c) ? "unknown flag" : "missing -, : or )");
        }
    if (c == ')') {                                     // global: only before the first item
        if (t->depth || t->n) return rx_fail(t, "global flags not at the start of the expression");
        t->p++;
        if (add & (F_A | F_U)) t->flags &= ~(unsigned)(F_A | F_U);
        t->flags |= add;
        t->global |= add;
        if ((t->global & F_A) && (t->global & F_U)) return rx_fail(t, "ASCII and UNICODE flags are incompatible");
        return 1;
    }
    if (c == '-') {
        c = *++t->p;
        if (!flag_bit(c)) return rx_fail(t, rx_is_alpha(c) ? "unknown flag" : "missing flag");
        for (;;) {
            if (c == 'a' || c == 'u') return rx_fail(t, "cannot turn off flags 'a', 'u' and 'L'");
            del |= flag_bit(c);
            c = *++t->p;
            if (c == ':') break;
            if (!flag_bit(c)) return rx_fail(t, rx_is_alpha(c) ? "unknown flag" : "missing :");
        }
    }
    if (add & del) return rx_fail(t, "flag turned on and off");
    t->p++;                                             // past ':'
    push(t, 0);
    if (add & (F_A | F_U)) t->flags &= ~(unsigned)(F_A | F_U);
    t->flags = (t->flags | add) & ~del;
    char a[4], d[4];
    ims(add, a);
    ims(del, d);
    return rx_puts(t, "(?") && rx_puts(t, a) && (!*d || (rx_put(t, "-", 1) && rx_puts(t, d))) && rx_put(t, ":", 1);
}

/* (?#...): dropped. Python reads it token by token, so "\)" does not end it. */
static int comment(tr *t)
{
    for (;;) {
        if (!*t->p) return rx_fail(t, "missing ), unterminated comment");
        if (*t->p == '\\') {
            if (!t->p[1]) return rx_fail(t, "bad escape (end of pattern)");
            t->p += 2;
        } else if (*t->p++ == ')') {
            return 1;
        }
    }
}

/* (?(id)yes|no): id a group number or the name of a group defined earlier. */
static int conditional(tr *t)
{
    const char *e = strchr(t->p, ')');
    if (!e) return rx_fail(t, "missing ), unterminated name");
    const char *s = t->p;
    size_t n = (size_t)(e - s);
    int digits = n > 0, ident = n > 0;
    for (size_t i = 0; i < n; i++) {
        digits &= rx_is_digit(s[i]);
        ident &= rx_is_alpha(s[i]) || s[i] == '_' || (i && rx_is_digit(s[i]));
    }
    char b[32];
    if (ident) {
        if (!find_name(t, s, n)) return rx_fail(t, "unknown group name");
        t->p = e + 1;
        return push(t, 0) && put_name_group(t, "(?(<", s, n, ">)");
    }
    if (!digits) return rx_fail(t, "bad character in group name");
    if (n > 5) return rx_fail(t, "invalid group reference");
    long g = strtol(s, NULL, 10);
    if (!g) return rx_fail(t, "bad group number");
    t->p = e + 1;
    snprintf(b, sizeof b, "(?(%ld)", g);
    return push(t, 0) && rx_puts(t, b);
}

static int group_open(tr *t)
{
    if (t->p[1] != '?') {
        t->p++;
        int g = ++t->groups;
        t->closed[g] = 0;
        return push(t, g) && rx_put(t, "(", 1);
    }
    t->p += 2;
    char c = *t->p;
    const char *s;
    size_t n;
    switch (c) {
    case ':': case '>': case '=': case '!':
        t->p++;
        push(t, 0);
        return rx_puts(t, c == ':' ? "(?:" : c == '>' ? "(?>" : c == '=' ? "(?=" : "(?!");
    case '<':
        if (t->p[1] != '=' && t->p[1] != '!')
            return rx_fail(t, "(?<name>...) is not Python syntax (Python writes (?P<name>...))");
        t->p += 2;
        push(t, 0);
        return rx_puts(t, t->p[-1] == '=' ? "(?<=" : "(?<!");
    case '#':
        t->p++;
        return comment(t);
    case '(':
        t->p++;
        return conditional(t);
    case 'P':
        t->p++;
        if (*t->p == '<') {
            t->p++;
            if (!group_name(t, '>', &s, &n)) return 0;
            if (find_name(t, s, n)) return rx_fail(t, "redefinition of group name");
            int g = ++t->groups;
            t->closed[g] = 0;
            t->names[t->n_names++] = (gname){ s, n, g };
            return push(t, g) && put_name_group(t, "(?P<", s, n, ">");
        }
        if (*t->p == '=') {
            t->p++;
            if (!group_name(t, ')', &s, &n)) return 0;
            const gname *g = find_name(t, s, n);
            if (!g) return rx_fail(t, "unknown group name");
            if (!t->closed[g->num]) return rx_fail(t, "cannot refer to an open group");
            t->prev = PREV_ITEM;
            return put_name_group(t, "(?P=", s, n, ")");
        }
        return rx_fail(t, "unknown extension (?P");
    default:
        if (c == '-' || c == 'L' || c == 't' || flag_bit(c)) return flags_group(t);
        return rx_fail(t, "unknown extension (?...");
    }
}

static int group_close(tr *t)
{
    if (!t->depth) return rx_fail(t, "unbalanced parenthesis");
    group g = t->stack[--t->depth];
    t->flags = g.flags;
    if (g.num) t->closed[g.num] = 1;
    t->p++;
    t->prev = PREV_ITEM;
    return rx_put(t, ")", 1);
}

/* Verbose mode between items: whitespace and "#" comments (to the end of the line) are not pattern. */
static int skip_verbose(tr *t)
{
    char c = *t->p;
    if (c && strchr(" \t\n\r\v\f", c)) {
        t->p++;
        return 1;
    }
    while (*++t->p && *t->p != '\n')                    // c == '#'
        if (*t->p == '\\' && !*++t->p) return rx_fail(t, "bad escape (end of pattern)");
    if (*t->p) t->p++;
    return 1;
}

static int step(tr *t)
{
    char c = *t->p;
    uint32_t v;
    t->tok = t->p;
    if ((t->flags & F_X) && (strchr(" \t\n\r\v\f", c) || c == '#')) return skip_verbose(t);
    switch (c) {
    case '\\': return rx_escape(t);
    case '[': return rx_set(t);
    case '(': return group_open(t);
    case ')': return group_close(t);
    case '{': return rx_brace(t);
    case '*': t->p++; return rx_quantifier(t, "*");
    case '+': t->p++; return rx_quantifier(t, "+");
    case '?': t->p++; return rx_quantifier(t, "?");
    case '|': t->p++; t->prev = PREV_NONE; return rx_put(t, "|", 1);
    case '.': t->p++; t->prev = PREV_ITEM; return rx_put(t, ".", 1);
    case '^': t->p++; t->prev = PREV_ANCHOR; return rx_put(t, "^", 1);
    case '$': t->p++; t->prev = PREV_ANCHOR; return rx_put(t, "$", 1);
    default: {
        int len = rx_utf8_decode(t->p, &v);
        if (!len) return rx_fail(t, "invalid UTF-8");
        t->p += len;
        t->prev = PREV_ITEM;
        return rx_put_char(t, v);
    }
    }
}

/* The PCRE2 text for Python text py (malloc'd), or NULL with *bad and *at (byte offset in py). */
static char *translate(const char *py, const char **bad, size_t *at)
{
    size_t len = strlen(py);
    tr t = { .p = py, .tok = py };
    t.stack = malloc((len + 1) * sizeof *t.stack);
    t.closed = calloc(len + 2, 1);
    t.names = malloc((len + 1) * sizeof *t.names);
    if (!t.stack || !t.closed || !t.names || !rx_put(&t, "", 0)) rx_fail(&t, rx_oom);
    else
        while (*t.p && step(&t)) {}
    if (!t.bad && t.depth) {
        t.tok = t.p;
        rx_fail(&t, "missing ), unterminated subpattern");
    }
    char *res = NULL;
    char f[8];
    ims(t.global, f);
    if (!t.bad && *f) {                                 // global flags: one leading PCRE2 setting
        size_t k = t.n + strlen(f) + 4;
        char *o = malloc(k);
        if (!o) {
            rx_fail(&t, rx_oom);
        } else {
            snprintf(o, k, "(?%s)%s", f, t.o);
            free(t.o);
            t.o = o;
        }
    }
    if (!t.bad) {
        res = t.o;
        t.o = NULL;
    }
    *bad = t.bad;
    *at = (size_t)(t.tok - py);
    free(t.o);
    free(t.stack);
    free(t.closed);
    free(t.names);
    return res;
}

int py_regex_translate(const char *pattern, char *out, size_t out_len, const char **bad)
{
    size_t at;
    char *s = translate(pattern, bad, &at);
    if (!s) return 0;
    int ok = strlen(s) < out_len;
    if (ok) memcpy(out, s, strlen(s) + 1);
    else *bad = "output buffer too small";
    free(s);
    return ok;
}

ls_status py_regex_compile(py_regex *re, const char *pattern, const char *prefix, const char *suffix,
                           const char *what, ls_error *err)
{
    memset(re, 0, sizeof *re);
    size_t n = strlen(pattern), skip = 0, at = 0;
    if (n > PY_REGEX_MAX_LEN)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: regex longer than %d bytes", what, PY_REGEX_MAX_LEN);
    char *text = NULL, *pc = NULL;
    const char *bad = NULL;
    if (*prefix || *suffix) {
        skip = strlen(prefix) + 1;
        if (asprintf(&text, "%s(%s)%s", prefix, pattern, suffix) < 0) text = NULL;
        if (!text) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", what);
    }
    pc = translate(text ? text : pattern, &bad, &at);
    free(text);
    if (!pc) {
        if (bad == rx_oom) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", what);
        at = at > skip ? at - skip : 0;
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: regex \"%.200s\": %s (at byte %zu)", what, pattern, bad,
                       at < n ? at : n);
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_code *code = NULL;
    int e = 0;
    PCRE2_SIZE off;
    if (cc && mc) {
        pcre2_set_newline(cc, PCRE2_NEWLINE_LF);        // Python's '.', '^' and '$' know only '\n'
        pcre2_set_match_limit(mc, PY_REGEX_MATCH_LIMIT);
        code = pcre2_compile((PCRE2_SPTR)pc, PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_ALT_CIRCUMFLEX |
                             PCRE2_NEVER_BACKSLASH_C, &e, &off, cc);
    }
    free(pc);
    pcre2_compile_context_free(cc);
    if (!code) {
        pcre2_match_context_free(mc);
        if (!e) return ls_fail(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", what);
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(e, msg, sizeof msg);
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: regex \"%.200s\": PCRE2: %s", what, pattern, (char *)msg);
    }
    re->code = code;
    re->limits = mc;
    return LS_OK;
}

int py_regex_match(const py_regex *re, const char *s)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return -1;
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, strlen(s), 0, 0, md, re->limits);
    pcre2_match_data_free(md);
    return rc >= 0 ? 1 : rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

void py_regex_free(py_regex *re)
{
    pcre2_code_free(re->code);
    pcre2_match_context_free(re->limits);
    memset(re, 0, sizeof *re);
}
