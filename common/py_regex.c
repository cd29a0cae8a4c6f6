/* Python re -> POSIX ERE (py_regex.h). Only full matches are ever asked for, which is what makes
 * lazy quantifiers safe to drop: greedy and lazy forms accept the same set of whole strings. */
#include "common/py_regex.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tr {
    const char *p;              // next pattern byte
    char *o;                    // next output byte
    int depth;                  // open groups
    int bounded;                // {m,n} quantifiers seen
    const char *bad;            // what could not be translated
} tr;

static void emit(tr *t, const char *s)
{
    size_t n = strlen(s);
    memcpy(t->o, s, n);
    t->o += n;
}

static void emit_c(tr *t, char c) { *t->o++ = c; }

static int fail(tr *t, const char *why)
{
    t->bad = why;
    return 0;
}

/* \d \w \s (and outside brackets their negations) as ERE bracket text. */
static const char *class_text(char c, int in_bracket)
{
    switch (c) {
    case 'd': return in_bracket ? "0-9" : "[0-9]";
    case 'w': return in_bracket ? "A-Za-z0-9_" : "[A-Za-z0-9_]";
    case 's': return in_bracket ? "[:space:]" : "[[:space:]]";
    case 'D': return in_bracket ? NULL : "[^0-9]";
    case 'W': return in_bracket ? NULL : "[^A-Za-z0-9_]";
    case 'S': return in_bracket ? NULL : "[^[:space:]]";
    default: return NULL;
    }
}

/* After a quantifier: Python's lazy '?' is dropped (same full-match language); possessive '+' is not. */
static int quantifier_tail(tr *t)
{
    if (*t->p == '?') t->p++;
    else if (*t->p == '+') return fail(t, "possessive quantifier");
    return 1;
}

static int escape_outside(tr *t)
{
    char c = t->p[1];
    const char *cls = class_text(c, 0);
    t->p += 2;
    if (cls) { emit(t, cls); return 1; }
    if (!c) return fail(t, "trailing backslash");
    if (isdigit((unsigned char)c)) return fail(t, "backreference");
    if (isalpha((unsigned char)c)) return fail(t, "escape \\b, \\A, \\Z or another letter escape");
    if (strchr(".[](){}*+?|^$\\", c)) emit_c(t, '\\');
    emit_c(t, c);
    return 1;
}

/* A [...] set. ERE has no escapes inside brackets, so only escapes with a position-free meaning pass. */
static int bracket(tr *t)
{
    emit_c(t, *t->p++);
    if (*t->p == '^') emit_c(t, *t->p++);
    if (*t->p == ']') emit_c(t, *t->p++);
    for (;;) {
        char c = *t->p;
        if (!c) return fail(t, "unterminated [");
        if (c == ']') { emit_c(t, *t->p++); return 1; }
        if (c == '[' && strchr(":.=", t->p[1]) && t->p[1]) return fail(t, "POSIX [: :] syntax inside a set");
        if (c != '\\') { emit_c(t, *t->p++); continue; }
        char e = t->p[1];
        const char *cls = class_text(e, 1);
        if (cls) emit(t, cls);
        else if (e && (ispunct((unsigned char)e) || e == ' ') && !strchr("]-^", e)) emit_c(t, e);
        else return fail(t, "escape inside [...] that ERE cannot express");
        t->p += 2;
    }
}

static int parse_count(const char **p, int *v)
{
    if (!isdigit((unsigned char)**p)) return 0;
    long n = 0;
    while (isdigit((unsigned char)**p) && n <= 100000) n = n * 10 + (*(*p)++ - '0');
    *v = n > 100000 ? 100001 : (int)n;
    return 1;
}

/* {m}, {m,}, {,n}, {m,n} are quantifiers in Python; any other '{' is a literal. */
static int brace(tr *t)
{
    const char *q = t->p + 1;
    int lo = 0, hi = -1, has_lo = parse_count(&q, &lo), comma = *q == ',';
    if (comma) q++;
    int has_hi = comma && parse_count(&q, &hi);
    if (*q != '}' || (!has_lo && !has_hi)) { emit(t, "\\{"); t->p++; return 1; }
    if (!comma) hi = lo;
    if (lo > PY_REGEX_MAX_REPEAT || hi > PY_REGEX_MAX_REPEAT) return fail(t, "repeat count above 64");
    if (++t->bounded > PY_REGEX_MAX_BOUNDED) return fail(t, "more than 4 {m,n} repeats");
    char buf[32];
    if (!comma) snprintf(buf, sizeof buf, "{%d}", lo);
    else if (has_hi) snprintf(buf, sizeof buf, "{%d,%d}", lo, hi);
    else snprintf(buf, sizeof buf, "{%d,}", lo);
    emit(t, buf);
    t->p = q + 1;
    return quantifier_tail(t);
}

static int group_open(tr *t)
{
    if (t->p[1] == '?') {
        if (t->p[2] != ':') return fail(t, "(?...) construct (lookaround, named group or inline flag)");
        t->p += 2;          // (?:x) -> (x): ERE groups do not capture anything we use
    }
    t->p++;
    t->depth++;
    emit_c(t, '(');
    return 1;
}

static int step(tr *t)
{
    char c = *t->p;
    switch (c) {
    case '\\': return escape_outside(t);
    case '[': return bracket(t);
    case '{': return brace(t);
    case '}': t->p++; emit(t, "\\}"); return 1;
    case '(': return group_open(t);
    case ')':
        if (!t->depth--) return fail(t, "unbalanced parenthesis");
        t->p++;
        emit_c(t, ')');
        return 1;
    case '*': case '+': case '?':
        t->p++;
        emit_c(t, c);
        return quantifier_tail(t);
    default:
        t->p++;
        emit_c(t, c);
        return 1;
    }
}

int py_regex_to_ere(const char *pattern, char *out, const char **bad)
{
    tr t = { .p = pattern, .o = out };
    while (*t.p)
        if (!step(&t)) { *bad = t.bad; return 0; }
    if (t.depth) { *bad = "unbalanced parenthesis"; return 0; }
    *t.o = 0;
    return 1;
}

ls_status py_regex_compile(regex_t *re, const char *pattern, const char *prefix, const char *suffix,
                           const char *what, ls_error *err)
{
    size_t n = strlen(pattern);
    if (n > PY_REGEX_MAX_LEN)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: regex longer than %d bytes", what, PY_REGEX_MAX_LEN);
    size_t cap = 16 * n + strlen(prefix) + strlen(suffix) + 8;
    char *ere = malloc(16 * n + 1), *full = malloc(cap);
    const char *bad = NULL;
    ls_status rc = LS_OK;
    if (!ere || !full) {
        rc = ls_fail(err, LS_RESOURCE_EXHAUSTED, "%s: out of memory", what);
    } else if (!py_regex_to_ere(pattern, ere, &bad)) {
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: regex \"%.200s\": %s is not supported", what, pattern, bad);
    } else {
        snprintf(full, cap, "^%s(%s)%s$", prefix, ere, suffix);
        int e = regcomp(re, full, REG_EXTENDED | REG_NOSUB);
        if (e) {
            char msg[128];
            regerror(e, re, msg, sizeof msg);
            rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: regex \"%.200s\": %s", what, pattern, msg);
        }
    }
    free(ere);
    free(full);
    return rc;
}

int py_regex_match(const regex_t *re, const char *s) { return regexec(re, s, 0, NULL, 0) == 0; }
