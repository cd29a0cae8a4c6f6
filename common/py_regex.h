/* Python `re` patterns run with PCRE2 (libpcre2-8, UTF + UCP). PEFT's adapter_config.json carries Python
 * regexes (target_modules as a string, rank_pattern / alpha_pattern keys), and a module that is matched
 * differently from PEFT gets the wrong rank or scale without any error. Adapters written by real tools
 * (Unsloth) use lookahead and \b, which POSIX ERE cannot express, so the engine is PCRE2, and the pattern
 * is read with Python's own grammar (sre_parse of Python 3.11) and rewritten into PCRE2 text that has one
 * reading: literals escaped or \x{...}, quantifiers canonical ({,n} and {,} included, "{ 1}" literal),
 * \Z as \z, \v as VT, \s / \S as Python's whitespace set, the ASCII flag's classes spelled out, global
 * flags hoisted, verbose whitespace and comments removed. Lookaround, \b, backreferences, named groups
 * ((?P<n>...), (?P=n)), conditionals, atomic groups, lazy and possessive quantifiers and inline flags
 * (global at the start, or scoped) all pass. What Python rejects is refused with Python's reason (PCRE2
 * alone decides lookbehind width: it takes alternatives of different lengths, and refuses quantified
 * empty groups there). What PCRE2 cannot do the Python way is refused by name: \N{...} names, the L flag,
 * surrogates, non-ASCII group names, repeat counts above 65535, and non-ASCII characters under IGNORECASE
 * (the two engines case-fold U+0130, U+0131, ... differently). Matching is a full match (compiled
 * ANCHORED | ENDANCHORED), like re.fullmatch. The subjects here are non-empty ASCII module paths, on which
 * the two agree exactly; on other text, \w, \b and case folding of non-ASCII characters and \B on an
 * empty string may differ. */
#ifndef LORASERVE_COMMON_PY_REGEX_H
#define LORASERVE_COMMON_PY_REGEX_H

#include <stddef.h>

#include "common/status.h"

#define PY_REGEX_MAX_LEN 1024           // pattern bytes
#define PY_REGEX_MAX_REPEAT 65535       // largest m / n of {m,n}: PCRE2's limit (Python's is 2^32 - 2)
#define PY_REGEX_MATCH_LIMIT 1000000    // PCRE2 backtracking steps per match, so a hostile pattern stays cheap

/* A compiled pattern. Zero-initialised or compiled; py_regex_free releases either. Matching only reads
 * it, so one compiled pattern may be matched from several threads. */
typedef struct py_regex {
    void *code;                 // pcre2_code (8-bit), owned
    void *limits;               // pcre2_match_context holding PY_REGEX_MATCH_LIMIT, owned
} py_regex;

/* Compiles the Python text prefix "(" pattern ")" suffix, or the pattern alone when prefix and suffix
 * are both "", for full matches: re.fullmatch of that text. prefix and suffix are Python regex text too,
 * so PEFT's rf"(.*\.)?({key})$" is prefix "(.*\\.)?" with suffix "" (a module path has no newline for
 * `$` to stop before), and group numbers and the "global flags at the start" rule are those of the whole
 * text, as in Python. INVALID_ARGUMENT naming `what`, the pattern and the construct on failure (re is
 * then zeroed). */
ls_status py_regex_compile(py_regex *re, const char *pattern, const char *prefix, const char *suffix,
                           const char *what, ls_error *err);

/* 1 = s fully matches, 0 = no match, -1 = matching failed (the backtracking limit, memory, or s is not
 * UTF-8): the caller must not take -1 for either answer. */
int py_regex_match(const py_regex *re, const char *s);

void py_regex_free(py_regex *re);

/* The rewriting alone (tests): 1 with the PCRE2 text in out (out_len bytes), else 0 with *bad set to a
 * description of the construct (or of out being too small). */
int py_regex_translate(const char *pattern, char *out, size_t out_len, const char **bad);

#endif
