/* Minimal TAP producer for C tests (meson `protocol : 'tap'`): every check is one numbered subtest, a
 * failing one names file:line and the expression, and tap_done() prints the plan and the exit code. */
#ifndef LORASERVE_TESTS_TAP_H
#define LORASERVE_TESTS_TAP_H

#include <stdio.h>

static int tap_n, tap_failed;

#define TAP_OK(cond, ...) do { \
    ++tap_n; int ok_ = !!(cond); if (!ok_) ++tap_failed; \
    printf("%s %d - ", ok_ ? "ok" : "not ok", tap_n); printf(__VA_ARGS__); \
    if (!ok_) printf("  # %s:%d: %s", __FILE__, __LINE__, #cond); printf("\n"); fflush(stdout); } while (0)

#define TAP_SKIP_ALL(why) do { printf("1..0 # SKIP %s\n", why); return 77; } while (0)
#define TAP_DIAG(...) do { printf("# "); printf(__VA_ARGS__); printf("\n"); } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
