/* Python `re` patterns evaluated with POSIX ERE (libc regex.h). PEFT's adapter_config.json carries
 * Python regexes (target_modules as a string, rank_pattern / alpha_pattern keys), and a module that
 * is matched differently from PEFT gets the wrong rank or scale without any error. So the subset with
 * the same meaning under full matching is translated ((?:...) groups, lazy quantifiers, \d \w \s and
 * their negations, bounded repeats, escaped punctuation), and every construct ERE cannot express
 * (lookaround, backreferences, \b, inline flags, possessive quantifiers, named groups) is refused with
 * a message naming it. Bounded repeats are capped so a hostile pattern cannot make regcomp explode. */
#ifndef LORASERVE_COMMON_PY_REGEX_H
#define LORASERVE_COMMON_PY_REGEX_H

#include <regex.h>

#include "common/status.h"

#define PY_REGEX_MAX_LEN 1024       // pattern bytes
#define PY_REGEX_MAX_REPEAT 64      // largest m / n of {m,n}
#define PY_REGEX_MAX_BOUNDED 4      // {m,n} quantifiers per pattern (nesting multiplies their size)

/* Compiles "^" prefix "(" translated pattern ")" suffix "$" (prefix and suffix are ERE text and may be
 * ""), so a match is a full match of the string, like Python's re.fullmatch of prefix+pattern+suffix.
 * INVALID_ARGUMENT naming `what` and the construct on failure; re is only valid on LS_OK. */
ls_status py_regex_compile(regex_t *re, const char *pattern, const char *prefix, const char *suffix,
                           const char *what, ls_error *err);
int py_regex_match(const regex_t *re, const char *s);

/* The translation alone (tests): 1 on success, else 0 with *bad set to a description of the construct.
 * out needs 16 x strlen(pattern) + 1 bytes. */
int py_regex_to_ere(const char *pattern, char *out, const char **bad);

#endif
