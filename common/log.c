/* Line-oriented log sink shared by all ranks: "<time> r<rank> <L> file:line: message". The rank and
 * level are the only process state, set once at start-up. */
#include "common/log.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

static struct { int rank; log_level level; } log_state = { -1, LOG_INFO };

void log_init(int rank, log_level level)
{
    log_state.rank = rank;
    log_state.level = level;
    setvbuf(stderr, NULL, _IOLBF, 0);
}

int log_rank(void) { return log_state.rank; }
int log_enabled(log_level level) { return level <= log_state.level; }

void log_write(log_level level, const char *file, int line, const char *fmt, ...)
{
    static const char tag[] = "EWID";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%02d:%02d:%02d.%03ld r%d %c %s:%d: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, log_state.rank, tag[level], base ? base + 1 : file, line, msg);
}

static void *oom(size_t n)
{
    log_write(LOG_ERROR, __FILE__, __LINE__, "out of memory allocating %zu bytes", n);
    abort();
}

void *ls_xmalloc(size_t n) { void *p = malloc(n ? n : 1); return p ? p : oom(n); }
void *ls_xcalloc(size_t c, size_t s) { void *p = calloc(c ? c : 1, s ? s : 1); return p ? p : oom(c * s); }
void *ls_xrealloc(void *p, size_t n) { void *q = realloc(p, n ? n : 1); return q ? q : oom(n); }
