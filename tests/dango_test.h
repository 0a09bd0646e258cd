/*
 * Shared cmocka helpers: assertions that decode Dango error codes, and a log
 * handler that swallows expected errors while counting them.
 */
#ifndef DANGO_TEST_H
#define DANGO_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include <dango/error.h>
#include <dango/log.h>

#define assert_dango_ok(_expr)                                                 \
    do {                                                                       \
        int _rc = (_expr);                                                     \
        if (_rc != 0) {                                                        \
            fail_msg("%s returned %d (%s: %s)", #_expr, _rc,                   \
                     dango_err_name(_rc), dango_strerror(_rc));                \
        }                                                                      \
    } while (0)

#define assert_dango_err(_expected, _expr)                                     \
    do {                                                                       \
        int _rc = (_expr);                                                     \
        if (_rc != (_expected)) {                                              \
            fail_msg("%s returned %d (%s), expected %d (%s)", #_expr, _rc,     \
                     dango_err_name(_rc), (int)(_expected),                    \
                     dango_err_name(_expected));                               \
        }                                                                      \
    } while (0)

/* Counts records at error level or worse and drops everything. */
static int dango_test_log_errors;

static inline void dango_test_log_swallow(const dango_log_record_t *rec,
                                          void                     *arg)
{
    (void)arg;
    if (rec->level <= DANGO_LOG_ERROR) {
        __atomic_add_fetch(&dango_test_log_errors, 1, __ATOMIC_RELAXED);
    }
}

/* Swallow library logs for the rest of the test (unless DANGO_TEST_LOG=1). */
static inline void dango_test_quiet_logs(void)
{
    const char *v = getenv("DANGO_TEST_LOG");

    if ((v == NULL) || (v[0] != '1')) {
        dango_log_set_handler(dango_test_log_swallow, NULL);
    }
}

#endif
