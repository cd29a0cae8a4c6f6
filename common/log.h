/* Logging and check macros. Every line carries time, rank and level so that the interleaved output of
 * an mpirun job can be read; errors name file:line and the failing call. LS_ASSERT is for invariant
 * violations only (it aborts); operational failures return ls_status (status.h). */
#ifndef LORASERVE_COMMON_LOG_H
#define LORASERVE_COMMON_LOG_H

#include <stdio.h>
#include <stdlib.h>

typedef enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } log_level;

/* The process identity written on every line; set once at start-up (rank -1 = not under MPI yet). */
void log_init(int rank, log_level level);
int log_rank(void);
int log_enabled(log_level level);
void log_write(log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Arguments are not evaluated when the level is off. */
#define LOG(level, ...) \
    do { if (log_enabled(level)) log_write((level), __FILE__, __LINE__, __VA_ARGS__); } while (0)
#define LOG_E(...) LOG(LOG_ERROR, __VA_ARGS__)
#define LOG_W(...) LOG(LOG_WARN, __VA_ARGS__)
#define LOG_I(...) LOG(LOG_INFO, __VA_ARGS__)
#define LOG_D(...) LOG(LOG_DEBUG, __VA_ARGS__)

/* Invariant violated: log where and what, then abort (which mpirun turns into a job teardown). */
#define LS_ASSERT(cond) \
    do { if (!(cond)) { log_write(LOG_ERROR, __FILE__, __LINE__, "invariant failed: %s", #cond); abort(); } } while (0)

/* MPI calls: an error here means the job is broken, so it is fatal on every rank. */
#define MPI_CHECK(call) \
    do { int rc_ = (call); if (rc_ != 0) { \
        log_write(LOG_ERROR, __FILE__, __LINE__, "%s failed: MPI error %d", #call, rc_); abort(); } } while (0)

/* Allocation that must not fail (start-up sized buffers); request-path allocations handle NULL. */
void *ls_xmalloc(size_t n);
void *ls_xcalloc(size_t count, size_t size);
void *ls_xrealloc(void *p, size_t n);

#endif
