/*
 * Rate-limited error lines, for errors a remote peer can cause at will
 * (malformed frames, failed authentication): at most `per_sec` lines a
 * second per limiter, and the number dropped is reported (at warn level)
 * with the next line that gets through, so a hostile client cannot flood
 * the log and nothing goes unnoticed.
 */
#ifndef DANGO_COMMON_LOG_LIMIT_H
#define DANGO_COMMON_LOG_LIMIT_H

#include <stdint.h>
#include <dango/log.h>

typedef struct dango_log_limit {
    uint64_t window;  /* atomic: the current second */
    unsigned count;   /* atomic: lines in that second */
    unsigned dropped; /* atomic: lines dropped since the last one logged */
    unsigned per_sec;
} dango_log_limit_t;

#define DANGO_LOG_LIMIT_INIT(_per_sec)                                         \
    {                                                                          \
        0, 0, 0, (_per_sec)                                                    \
    }

DANGO_BEGIN_DECLS

/* True when one more line may be logged; @dropped_p gets the count skipped. */
DANGO_API int dango__log_limit_allow(dango_log_limit_t *lim,
                                     unsigned          *dropped_p);

DANGO_END_DECLS

/* dango_error() through limiter @_lim. */
#define dango_error_limited(_lim, _fmt, ...)                                   \
    do {                                                                       \
        unsigned _dango_dropped;                                               \
                                                                               \
        if (dango__log_enabled(&DANGO_LOG_COMPONENT, DANGO_LOG_ERROR) &&       \
            dango__log_limit_allow((_lim), &_dango_dropped)) {                 \
            if (_dango_dropped > 0) {                                          \
                dango_warn("%u similar errors not logged", _dango_dropped);    \
            }                                                                  \
                                                                               \
            dango_error(_fmt, ##__VA_ARGS__);                                  \
        }                                                                      \
    } while (0)

#endif
