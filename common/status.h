/* Operational errors: a status code whose values are the gRPC status codes, plus a message naming the
 * problem. Every layer that can fail for a reason outside the program (bad input, bad files, peers)
 * returns ls_status and fills an ls_error; only invariant violations abort (see log.h). */
#ifndef LORASERVE_COMMON_STATUS_H
#define LORASERVE_COMMON_STATUS_H

#include <stddef.h>

typedef enum ls_status {
    LS_OK = 0,
    LS_CANCELLED = 1,
    LS_UNKNOWN = 2,
    LS_INVALID_ARGUMENT = 3,
    LS_DEADLINE_EXCEEDED = 4,
    LS_NOT_FOUND = 5,
    LS_ALREADY_EXISTS = 6,
    LS_PERMISSION_DENIED = 7,
    LS_RESOURCE_EXHAUSTED = 8,
    LS_FAILED_PRECONDITION = 9,
    LS_ABORTED = 10,
    LS_OUT_OF_RANGE = 11,
    LS_UNIMPLEMENTED = 12,
    LS_INTERNAL = 13,
    LS_UNAVAILABLE = 14,
    LS_DATA_LOSS = 15,
} ls_status;

typedef struct ls_error {
    ls_status code;
    char msg[512];          // human-readable cause, names the field / file / value at fault
} ls_error;

/* Sets e (when not NULL) and returns code, so callers can write `return ls_fail(err, ...)`. */
ls_status ls_fail(ls_error *e, ls_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes the message already in e with more context ("loading x: <old message>"). */
ls_status ls_error_wrap(ls_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ls_status_name(ls_status code);

#endif
