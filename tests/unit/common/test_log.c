/*
 * Unit tests of logging: DANGO_LOG-style specs, per-component levels, lazy
 * argument evaluation, the record passed to a handler, %m and errno, the
 * default stderr sink, and the level name helpers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dango_test.h"

static DANGO_LOG_COMPONENT_DEFINE(test_xfer, "xfer");
static DANGO_LOG_COMPONENT_DEFINE(test_tcp, "tcp");
static DANGO_LOG_COMPONENT_DEFINE(test_env, "envcomp");
static DANGO_LOG_COMPONENT_DEFINE(test_late, "late");

typedef struct test_capture {
    int               count;
    dango_log_level_t level;
    const char       *component;
    const char       *file;
    int               line;
    const char       *func;
    char              message[1024];
    int               clobber_errno; /* errno the handler leaves behind */
} test_capture_t;

static test_capture_t test_cap;
static int            test_side_effects;

static void test_capture_handler(const dango_log_record_t *rec, void *arg)
{
    test_capture_t *cap = arg;

    cap->count++;
    cap->level     = rec->level;
    cap->component = rec->component;
    cap->file      = rec->file;
    cap->line      = rec->line;
    cap->func      = rec->func;
    snprintf(cap->message, sizeof(cap->message), "%s", rec->message);
    if (cap->clobber_errno != 0) {
        errno = cap->clobber_errno;
    }
}

static int test_side_effect(void)
{
    test_side_effects++;
    return 42;
}

static int test_setup(void **state)
{
    (void)state;
    memset(&test_cap, 0, sizeof(test_cap));
    test_side_effects = 0;
    dango_log_set_handler(test_capture_handler, &test_cap);
    return dango_log_configure("*=warn");
}

static int test_teardown(void **state)
{
    (void)state;
    dango_log_set_handler(NULL, NULL);
    return 0;
}

/* True when @lvl is enabled for @comp, as the macros decide it. */
#define test_enabled(_comp, _lvl) (dango__log_enabled((_comp), (_lvl)) ? 1 : 0)

/* Must run first: main() sets DANGO_LOG before any component resolves. */
static void log_env_spec_applies_on_first_use(void **state)
{
    (void)state;
    assert_int_equal(dango__log_component_level(&test_env), DANGO_LOG_TRACE);
    assert_int_equal(dango__log_component_level(&test_tcp), DANGO_LOG_ERROR);
    assert_int_equal(test_enabled(&test_env, DANGO_LOG_TRACE), 1);
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_WARN), 0);
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_ERROR), 1);
}

static void log_spec_per_component(void **state)
{
    (void)state;
    assert_dango_ok(dango_log_configure("xfer=debug,*=warn"));
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_DEBUG), 1);
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_TRACE), 0);
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_WARN), 1);
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_INFO), 0);
    assert_int_equal(test_enabled(&dango__log_default, DANGO_LOG_WARN), 1);
    assert_int_equal(test_enabled(&dango__log_default, DANGO_LOG_INFO), 0);

    /* Order does not matter; spaces after commas are accepted. */
    assert_dango_ok(dango_log_configure("*=error, tcp=trace"));
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_TRACE), 1);
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_WARN), 0);
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_ERROR), 1);

    /* A component resolved for the first time sees the current spec. */
    assert_dango_ok(dango_log_configure("late=info,*=fatal"));
    assert_int_equal(dango__log_component_level(&test_late), DANGO_LOG_INFO);
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_ERROR), 0);
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_FATAL), 1);
}

static void log_spec_bare_level(void **state)
{
    (void)state;
    assert_dango_ok(dango_log_configure("xfer=trace"));
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_TRACE), 1);

    /* A bare level replaces every override and sets the default. */
    assert_dango_ok(dango_log_configure("info"));
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_INFO), 1);
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_DEBUG), 0);
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_INFO), 1);
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_DEBUG), 0);

    assert_dango_ok(dango_log_configure("DEBUG"));
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_DEBUG), 1);
}

static void log_spec_malformed_changes_nothing(void **state)
{
    static const char *bad[] = {
        "xfer=loud",           /* unknown level */
        "loud",                /* unknown bare level */
        "=debug",              /* empty component name */
        "xfer=",               /* empty level */
        "tcp=trace,xfer=nope", /* a later entry is bad: the first is dropped */
        "a_component_name_longer_than_32_chars=debug",
    };
    char long_spec[600];

    (void)state;
    assert_dango_ok(dango_log_configure("xfer=debug,*=warn"));
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        assert_dango_err(DANGO_EINVAL, dango_log_configure(bad[i]));
        assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_DEBUG), 1);
        assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_TRACE), 0);
        assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_WARN), 1);
        assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_INFO), 0);
    }

    memset(long_spec, 'a', sizeof(long_spec) - 1);
    long_spec[sizeof(long_spec) - 1] = '\0';
    assert_dango_err(DANGO_EINVAL, dango_log_configure(long_spec));
    assert_dango_err(DANGO_EINVAL, dango_log_configure(NULL));
    assert_int_equal(test_enabled(&test_xfer, DANGO_LOG_DEBUG), 1);
    assert_int_equal(test_enabled(&test_tcp, DANGO_LOG_INFO), 0);
}

static void log_args_not_evaluated_when_disabled(void **state)
{
    (void)state;
    assert_dango_ok(dango_log_configure("xfer=warn"));
    dango_log_at(&test_xfer, DANGO_LOG_DEBUG, "value %d", test_side_effect());
    dango_log_at(&test_xfer, DANGO_LOG_INFO, "value %d", test_side_effect());
    assert_int_equal(test_side_effects, 0);
    assert_int_equal(test_cap.count, 0);

    dango_log_at(&test_xfer, DANGO_LOG_WARN, "value %d", test_side_effect());
    assert_int_equal(test_side_effects, 1);
    assert_int_equal(test_cap.count, 1);
    assert_string_equal(test_cap.message, "value 42");

    /* Above the compile-time ceiling nothing is evaluated at all. */
    assert_dango_ok(dango_log_configure("xfer=data"));
    dango_log_at(&test_xfer, DANGO_LOG_DATA, "value %d", test_side_effect());
    assert_int_equal(test_side_effects, 1);
    assert_int_equal(test_cap.count, 1);
    dango_log_at(&test_xfer, DANGO_LOG_TRACE, "value %d", test_side_effect());
    assert_int_equal(test_side_effects, 2);
    assert_int_equal(test_cap.count, 2);
}

static void log_handler_receives_record(void **state)
{
    int line;

    (void)state;
    assert_dango_ok(dango_log_configure("tcp=info"));
    line = __LINE__ + 1;
    dango_log_at(&test_tcp, DANGO_LOG_INFO, "hello %s %d", "world", 7);
    assert_int_equal(test_cap.count, 1);
    assert_int_equal(test_cap.level, DANGO_LOG_INFO);
    assert_string_equal(test_cap.component, "tcp");
    assert_string_equal(test_cap.file, __FILE__);
    assert_int_equal(test_cap.line, line);
    assert_string_equal(test_cap.func, __func__);
    assert_string_equal(test_cap.message, "hello world 7");

    /* The level macros use the default component "dango". */
    line = __LINE__ + 1;
    dango_warn("plain %u", 3u);
    assert_int_equal(test_cap.count, 2);
    assert_int_equal(test_cap.level, DANGO_LOG_WARN);
    assert_string_equal(test_cap.component, "dango");
    assert_int_equal(test_cap.line, line);
    assert_string_equal(test_cap.message, "plain 3");
    dango_info("not shown");
    assert_int_equal(test_cap.count, 2);
}

static void log_long_message_is_truncated(void **state)
{
    char big[3000];

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    dango_error("%s", big);
    assert_int_equal(test_cap.count, 1);
    assert_true(strlen(test_cap.message) >= 512);
    assert_true(strlen(test_cap.message) < sizeof(big) - 1);
    assert_int_equal(strspn(test_cap.message, "x"), strlen(test_cap.message));
}

static void log_percent_m_and_errno_preserved(void **state)
{
    char expect[256];

    (void)state;
    snprintf(expect, sizeof(expect), "open: %s", strerror(ENOENT));
    test_cap.clobber_errno = EBADF;
    errno                  = ENOENT;
    dango_error("open: %m");
    assert_int_equal(errno, ENOENT);
    assert_int_equal(test_cap.count, 1);
    assert_string_equal(test_cap.message, expect);

    /* A disabled record leaves errno alone too. */
    errno = EPIPE;
    dango_debug("off: %m");
    assert_int_equal(errno, EPIPE);
    assert_int_equal(test_cap.count, 1);
}

static void log_default_sink_writes_stderr(void **state)
{
    FILE *tmp        = tmpfile();
    char  line[2048] = "";
    int   saved;

    (void)state;
    assert_non_null(tmp);
    dango_log_set_handler(NULL, NULL);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);

    dango_log_at(&test_tcp, DANGO_LOG_ERROR, "to stderr %d", 5);
    dango_log_disable_default(1);
    dango_log_at(&test_tcp, DANGO_LOG_ERROR, "dropped");
    dango_log_disable_default(0);

    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    assert_non_null(fgets(line, sizeof(line), tmp));
    assert_non_null(strstr(line, "tcp"));
    assert_non_null(strstr(line, "error"));
    assert_non_null(strstr(line, "test_log.c:"));
    assert_non_null(strstr(line, "log_default_sink_writes_stderr()"));
    assert_non_null(strstr(line, "to stderr 5"));
    assert_null(fgets(line, sizeof(line), tmp)); /* exactly one line */
    fclose(tmp);
    assert_int_equal(test_cap.count, 0);
}

static void log_level_parse_and_name(void **state)
{
    static const char *names[] = {"fatal", "error", "warn", "info",
                                  "debug", "trace", "data"};

    (void)state;
    for (int i = 0; i < (int)DANGO_ARRAY_SIZE(names); i++) {
        assert_int_equal(dango_log_level_parse(names[i]), i);
        assert_string_equal(dango_log_level_name(i), names[i]);
    }

    assert_int_equal(dango_log_level_parse("WARN"), DANGO_LOG_WARN);
    assert_int_equal(dango_log_level_parse("Trace"), DANGO_LOG_TRACE);
    assert_int_equal(dango_log_level_parse("warning"), DANGO_LOG_WARN);
    assert_dango_err(DANGO_EINVAL, dango_log_level_parse("loud"));
    assert_dango_err(DANGO_EINVAL, dango_log_level_parse(""));
    assert_string_equal(dango_log_level_name(-1), "unknown");
    assert_string_equal(dango_log_level_name(7), "unknown");
    assert_string_equal(dango_log_level_name(DANGO_EINVAL), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(log_env_spec_applies_on_first_use, NULL,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(log_spec_per_component, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(log_spec_bare_level, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(log_spec_malformed_changes_nothing,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(log_args_not_evaluated_when_disabled,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(log_handler_receives_record, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(log_long_message_is_truncated,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(log_percent_m_and_errno_preserved,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(log_default_sink_writes_stderr,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(log_level_parse_and_name, test_setup,
                                        test_teardown),
    };

    /* Read once, on the first level lookup: set before anything logs. */
    setenv("DANGO_LOG", "envcomp=trace,*=error", 1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
