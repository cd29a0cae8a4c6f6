/* The regexes of tokenizer.json (Split patterns, ByteLevel's GPT-2 split, Replace), run with PCRE2 in
 * UTF + UCP mode with JIT. The reference library runs them with Oniguruma, whose Unicode escapes read
 * differently from PCRE2's: its \s is the White_Space property (U+0085 included, which PCRE2's \s leaves
 * out) and its \w includes marks. Patterns are therefore rewritten to name those properties before they
 * are compiled; \p{L}, \p{N}, (?i:...) and lookahead mean the same in both. */
#include "coordinator/tokenizer_impl.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define WS "\\p{White_Space}"
#define WORD "\\p{L}\\p{M}\\p{Nd}\\p{Pc}"

/* Rewrites Oniguruma's Unicode \s \S \w \W \d for PCRE2, which would otherwise read them differently. */
static ls_status onig_to_pcre2(const char *p, size_t n, tok_buf *out, const char *what, ls_error *err)
{
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[++i];
            const char *r = NULL;
            if (e == 's') r = WS;
            else if (e == 'S') r = in_class ? NULL : "\\P{White_Space}";
            else if (e == 'w') r = in_class ? WORD : "[" WORD "]";
            else if (e == 'W') r = in_class ? NULL : "[^" WORD "]";
            else if (e == 'd') r = "\\p{Nd}";
            if (!r && (e == 'S' || e == 'W'))
                return ls_fail(err, LS_INVALID_ARGUMENT, "%s: unsupported \\%c inside a class", what, e);
            if (r) tok_buf_put(out, r, strlen(r));
            else tok_buf_put(out, p + i - 1, 2);
            continue;
        }
        if (c == '[' && !in_class) in_class = true;
        else if (c == ']' && in_class) in_class = false;
        tok_buf_putc(out, c);
    }
    return LS_OK;
}

struct tok_regex {
    pcre2_code *code;           // owned; shareable between threads once compiled
};

struct tok_matcher {
    pcre2_match_data *md;       // per call: PCRE2 match data must not be shared between threads
    pcre2_match_context *ctx;   // created with the JIT stack, only when a match needs more stack
    pcre2_jit_stack *stack;
};

ls_status tok_regex_compile(tok_regex **re, const char *pat, size_t n, const char *what, ls_error *err)
{
    pcre2_code **out = &(*re = ls_xcalloc(1, sizeof **re))->code;
    tok_buf t = {0};
    ls_status rc = onig_to_pcre2(pat, n, &t, what, err);
    if (rc != LS_OK) {
        tok_buf_free(&t);
        free(*re);
        *re = NULL;
        return rc;
    }
    int code;
    PCRE2_SIZE at;
    *out = pcre2_compile((PCRE2_SPTR)(t.p ? t.p : ""), t.n, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &code,
                         &at, NULL);
    tok_buf_free(&t);
    if (!*out) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        free(*re);
        *re = NULL;
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: regex \"%.*s\": %s", what, (int)n, pat, (char *)msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);    // interpreted when JIT is unavailable
    return LS_OK;
}

void tok_regex_free(tok_regex *re)
{
    if (!re) return;
    pcre2_code_free(re->code);
    free(re);
}

void tok_matcher_free(tok_matcher *m)
{
    if (!m) return;
    pcre2_match_data_free(m->md);
    pcre2_match_context_free(m->ctx);
    pcre2_jit_stack_free(m->stack);
    free(m);
}

int tok_regex_next(tok_matcher **mp, const tok_regex *re, const char *s, size_t n, size_t from, size_t *ms,
                   size_t *me)
{
    if (!*mp) *mp = ls_xcalloc(1, sizeof **mp);
    tok_matcher *m = *mp;
    if (!m->md) m->md = pcre2_match_data_create(1, NULL);
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, m->md, m->ctx);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !m->stack) {  // long runs: give JIT a bigger stack
            m->ctx = pcre2_match_context_create(NULL);
            m->stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
            pcre2_jit_stack_assign(m->ctx, NULL, m->stack);
            continue;
        }
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
        *ms = ov[0], *me = ov[1];
        return 1;
    }
    return -1;
}
