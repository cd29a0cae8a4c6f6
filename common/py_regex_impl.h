/* Internals of the Python-regex translator shared by its two files: py_regex_atoms.c (characters,
 * escapes, sets, quantifiers) and py_regex.c (groups, flags, the driver and the public API). */
#ifndef LORASERVE_COMMON_PY_REGEX_IMPL_H
#define LORASERVE_COMMON_PY_REGEX_IMPL_H

#include <stddef.h>
#include <stdint.h>

enum { F_I = 1, F_M = 2, F_S = 4, F_X = 8, F_A = 16, F_U = 32 };   // inline flags; F_A = ASCII classes
enum { PREV_NONE, PREV_ITEM, PREV_REPEAT, PREV_ANCHOR };           // what a quantifier would apply to

/* Python's whitespace (str.isspace: bidi WS/B/S or Zs), which \s means for a str pattern, and its
 * complement, as PCRE2 class bodies. PCRE2's own \s lacks U+001C-U+001F and U+0085. */
#define SPACE_U "\\x{9}-\\x{d}\\x{1c}-\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}" \
                "\\x{202f}\\x{205f}\\x{3000}"
#define NSPACE_U "\\x{0}-\\x{8}\\x{e}-\\x{1b}\\x{21}-\\x{84}\\x{86}-\\x{9f}\\x{a1}-\\x{167f}\\x{1681}-\\x{1fff}" \
                 "\\x{200b}-\\x{2027}\\x{202a}-\\x{202e}\\x{2030}-\\x{205e}\\x{2060}-\\x{2fff}\\x{3001}-\\x{10ffff}"
/* The ASCII flag's classes. In a case-insensitive class PCRE2 adds the case partners of each member, so
 * the complement of \w leaves out the four non-ASCII letters whose partners are ASCII (U+0130 U+0131
 * U+017F U+212A); otherwise [\W] would match 'i', 's' or 'k'. */
#define SPACE_A "\\x{9}-\\x{d}\\x{20}"
#define NSPACE_A "\\x{0}-\\x{8}\\x{e}-\\x{1f}\\x{21}-\\x{10ffff}"
#define DIGIT_A "0-9"
#define NDIGIT_A "\\x{0}-\\x{2f}\\x{3a}-\\x{10ffff}"
#define WORD_A "0-9A-Z_a-z"
#define NWORD_A "\\x{0}-\\x{2f}\\x{3a}-\\x{40}\\x{5b}-\\x{5e}\\x{60}\\x{7b}-\\x{10ffff}"
#define NWORD_AI "\\x{0}-\\x{2f}\\x{3a}-\\x{40}\\x{5b}-\\x{5e}\\x{60}\\x{7b}-\\x{12f}\\x{132}-\\x{17e}" \
                 "\\x{180}-\\x{2129}\\x{212b}-\\x{10ffff}"

/* The one "out of memory" reason: compared by address to tell it from a refusal. */
extern const char rx_oom[];

typedef struct group { unsigned flags; int num; } group;       // flags to restore at ')'; capture number
typedef struct gname { const char *s; size_t n; int num; } gname;

typedef struct tr {
    const char *p;              // next pattern byte
    const char *tok;            // start of the item being read (error positions)
    char *o;                    // output, n bytes of cap
    size_t n, cap;
    unsigned flags;             // F_* in effect here
    unsigned global;            // global flags seen at the start
    int prev;                   // PREV_*
    group *stack;               // open groups
    int depth;
    int groups;                 // capturing groups opened so far
    unsigned char *closed;      // closed[g]: group g has been closed
    gname *names;
    int n_names;
    const char *bad;            // why the pattern was refused
} tr;

int rx_fail(tr *t, const char *why);
int rx_put(tr *t, const char *s, size_t n);
int rx_puts(tr *t, const char *s);
int rx_is_digit(char c);
int rx_is_octal(char c);
int rx_is_alpha(char c);
int rx_hex_value(char c);
int rx_utf8_decode(const char *s, uint32_t *cp);
int rx_put_char(tr *t, uint32_t c);
int rx_put_category(tr *t, char c, int in_class);
int rx_put_boundary(tr *t, int negated);
int rx_hex_escape(tr *t, int n, uint32_t *v);
int rx_char_escape(tr *t, char c, int in_class, uint32_t *v);
int rx_backref(tr *t, char c);
int rx_escape(tr *t);
int rx_set_member(tr *t, uint32_t *v, char *cat);
int rx_set(tr *t);
int rx_quantifier(tr *t, const char *q);
int rx_count(const char **p, long *v);
int rx_brace(tr *t);

#endif
