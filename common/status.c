/* ls_status helpers: formatting of operational errors. */
#include "common/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

ls_status ls_fail(ls_error *e, ls_status code, const char *fmt, ...)
{
    if (!e) return code;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

ls_status ls_error_wrap(ls_error *e, const char *fmt, ...)
{
    if (!e) return LS_UNKNOWN;
    char prefix[256], old[sizeof e->msg];
    int room;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    room = (int)(sizeof e->msg - strlen(prefix) - 3);
    snprintf(e->msg, sizeof e->msg, "%s: %.*s", prefix, room > 0 ? room : 0, old);
    return e->code;
}

const char *ls_status_name(ls_status code)
{
    static const char *names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
        "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    };
    return (unsigned)code < sizeof names / sizeof names[0] ? names[code] : "UNKNOWN";
}
