/* Minimal TAP producer for C tests (meson `protocol : 'tap'`): every check is one numbered subtest, a
 * failing one names file:line and the expression, and tap_done() prints the plan and the exit code. */
#ifndef LORASERVE_TESTS_TAP_H
#define LORASERVE_TESTS_TAP_H

#include <stdio.h>

static int tap_n, tap_failed;

static inline void tap_fail_where(const char *file, int line, const char *expr)
{
    printf("  # %s:%d: %s", file, line, expr);
}

#define TAP_OK(cond, ...) do { \
        ++tap_n; \
        int ok_ = !!(cond); \
        if (!ok_) ++tap_failed; \
        printf("%s %d - ", ok_ ? "ok" : "not ok", tap_n); \
        printf(__VA_ARGS__); \
        if (!ok_) tap_fail_where(__FILE__, __LINE__, #cond); \
        printf("\n"); \
        fflush(stdout); \
    } while (0)

/* meson 1.0 reads exit 77 of a TAP test as an error: a skipped TAP test prints a skip plan and exits 0. */
#define TAP_SKIP_ALL(why) do { printf("1..0 # SKIP %s\n", why); return 0; } while (0)
#define TAP_DIAG(...) do { printf("# "); printf(__VA_ARGS__); printf("\n"); } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
