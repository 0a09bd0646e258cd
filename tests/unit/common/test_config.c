/*
 * Unit tests of configuration: a table of every option type registered by
 * the test itself (prefix "TEST"), the precedence set > environment > file >
 * default, every error code of read/set/get/print, the unit parsers, and an
 * OOM walk proving every allocation failure returns DANGO_ENOMEM and leaks
 * nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/config.h>
#include "common/alloc.h"
#include "common/config_table.h"

#define TEST_OOM_MAX_STEPS 1000

typedef struct test_opts {
    char         *name;
    long          count;
    unsigned long limit;
    size_t        buf;
    uint64_t      timeout;
    int           enable;
    double        ratio;
    char         *path;
} test_opts_t;

static const dango_config_field_t test_fields[] = {
    {"NAME", "dflt", "A string option", offsetof(test_opts_t, name),
     DANGO_CFG_STRING},
    {"COUNT", "-3", "A signed integer", offsetof(test_opts_t, count),
     DANGO_CFG_INT},
    {"LIMIT", "7", "An unsigned integer", offsetof(test_opts_t, limit),
     DANGO_CFG_UINT},
    {"BUF", "64kb", "A size", offsetof(test_opts_t, buf), DANGO_CFG_SIZE},
    {"TIMEOUT", "10ms", "A time", offsetof(test_opts_t, timeout),
     DANGO_CFG_TIME},
    {"ENABLE", "yes", "A boolean", offsetof(test_opts_t, enable),
     DANGO_CFG_BOOL},
    {"RATIO", "0.5", "A double", offsetof(test_opts_t, ratio),
     DANGO_CFG_DOUBLE},
    {"PATH", "/var/tmp/dango", "A second string", offsetof(test_opts_t, path),
     DANGO_CFG_STRING},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING},
};

static dango_config_table_t test_table = {
    .prefix = "TEST",
    .doc    = "Options of the config unit test",
    .fields = test_fields,
};
DANGO_CONFIG_REGISTER_TABLE(test_table)

static const char *test_env_names[] = {
    "DANGO_TEST_NAME",  "DANGO_TEST_COUNT",   "DANGO_TEST_LIMIT",
    "DANGO_TEST_BUF",   "DANGO_TEST_TIMEOUT", "DANGO_TEST_ENABLE",
    "DANGO_TEST_RATIO", "DANGO_TEST_PATH",
};

/* ---------- helpers ---------- */

/* Writes @content to a fresh temporary file; its path goes to @path. */
static void test_write_file(char *path, size_t len, const char *content)
{
    int     fd;
    size_t  n = strlen(content);
    ssize_t w;

    snprintf(path, len, "/tmp/dango-test-config-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    w = write(fd, content, n);
    assert_int_equal(w, (ssize_t)n);
    close(fd);
}

static void test_get_equal(const dango_config_t *cfg, const char *name,
                           const char *expect)
{
    char buf[128];

    assert_dango_ok(dango_config_get(cfg, name, buf, sizeof(buf)));
    assert_string_equal(buf, expect);
}

static int test_setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(test_env_names); i++) {
        unsetenv(test_env_names[i]);
    }

    dango_test_log_errors = 0;
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    dango__alloc_fail_after(-1);
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(test_env_names); i++) {
        unsetenv(test_env_names[i]);
    }

    return 0;
}

/* ---------- unit parsers ---------- */

static void config_parse_size_units(void **state)
{
    static const struct {
        const char *s;
        size_t      v;
    } ok[] = {
        {"0", 0},
        {"100", 100},
        {"100b", 100},
        {"64kb", 64ull << 10},
        {"64KB", 64ull << 10},
        {"2 k", 2ull << 10},
        {"3kib", 3ull << 10},
        {"1m", 1ull << 20},
        {"4MiB", 4ull << 20},
        {"1.5g", 3ull << 29},
        {"2GB", 2ull << 30},
        {"1t", 1ull << 40},
    };
    static const struct {
        const char *s;
        int         rc;
    } bad[] = {
        {"", DANGO_EINVAL},      {"-1", DANGO_EINVAL},
        {"12q", DANGO_EINVAL},   {"kb", DANGO_EINVAL},
        {"nan", DANGO_EINVAL},   {"1kbkbkbkb", DANGO_EINVAL},
        {"5 m b", DANGO_EINVAL}, {"20000000t", DANGO_ERANGE},
        {"inf", DANGO_ERANGE},
    };
    size_t v;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(ok); i++) {
        v = 12345;
        assert_dango_ok(dango_parse_size(ok[i].s, &v));
        assert_int_equal(v, ok[i].v);
    }

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        v = 12345;
        assert_dango_err(bad[i].rc, dango_parse_size(bad[i].s, &v));
        assert_int_equal(v, 12345); /* untouched on error */
    }

    assert_dango_err(DANGO_EINVAL, dango_parse_size(NULL, &v));
}

static void config_parse_time_units(void **state)
{
    static const struct {
        const char *s;
        uint64_t    v;
    } ok[] = {
        {"10ms", 10000000ull},
        {"5s", 5000000000ull},
        {"250us", 250000ull},
        {"2", 2000000000ull},
        {"1min", 60000000000ull},
        {"2m", 120000000000ull},
        {"100ns", 100ull},
        {"1.5s", 1500000000ull},
        {"3sec", 3000000000ull},
        {"7 MS", 7000000ull},
        {"0", 0},
        {"24h", 86400000000000ull},
    };
    static const struct {
        const char *s;
        int         rc;
    } bad[] = {
        {"x", DANGO_EINVAL},       {"", DANGO_EINVAL},
        {"-1s", DANGO_EINVAL},     {"10d", DANGO_EINVAL},
        {"5 s x", DANGO_EINVAL},   {"nan", DANGO_EINVAL},
        {"1e12min", DANGO_ERANGE}, {"1e10h", DANGO_ERANGE},
    };
    uint64_t v;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(ok); i++) {
        v = 12345;
        assert_dango_ok(dango_parse_time_ns(ok[i].s, &v));
        assert_int_equal(v, ok[i].v);
    }

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        v = 12345;
        assert_dango_err(bad[i].rc, dango_parse_time_ns(bad[i].s, &v));
        assert_int_equal(v, 12345);
    }

    assert_dango_err(DANGO_EINVAL, dango_parse_time_ns(NULL, &v));
}

static void config_parse_bool_values(void **state)
{
    static const char *yes[] = {"y", "yes", "true", "on", "1", "YES", "True"};
    static const char *no[]  = {"n", "no", "false", "off", "0", "OFF", "No"};
    static const char *bad[] = {"", "maybe", "2", "yess", " yes"};
    int                v;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(yes); i++) {
        v = -1;
        assert_dango_ok(dango_parse_bool(yes[i], &v));
        assert_int_equal(v, 1);
    }

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(no); i++) {
        v = -1;
        assert_dango_ok(dango_parse_bool(no[i], &v));
        assert_int_equal(v, 0);
    }

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        v = -1;
        assert_dango_err(DANGO_EINVAL, dango_parse_bool(bad[i], &v));
        assert_int_equal(v, -1);
    }

    assert_dango_err(DANGO_EINVAL, dango_parse_bool(NULL, &v));
}

/* ---------- sources and precedence ---------- */

static void config_defaults(void **state)
{
    dango_config_t *cfg = NULL;
    test_opts_t     o;
    long            live = dango__alloc_live();

    (void)state;
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_non_null(cfg);
    memset(&o, 0, sizeof(o));
    assert_dango_ok(dango__config_parse(cfg, &test_table, &o));
    assert_string_equal(o.name, "dflt");
    assert_int_equal(o.count, -3);
    assert_int_equal(o.limit, 7);
    assert_int_equal(o.buf, 64 * 1024);
    assert_int_equal(o.timeout, 10000000ull);
    assert_int_equal(o.enable, 1);
    assert_true(o.ratio == 0.5);
    assert_string_equal(o.path, "/var/tmp/dango");
    dango__config_free(&test_table, &o);
    assert_null(o.name);
    assert_null(o.path);

    /* No object: environment, DANGO_CONFIG_FILE and defaults only. */
    memset(&o, 0, sizeof(o));
    assert_dango_ok(dango__config_parse(NULL, &test_table, &o));
    assert_int_equal(o.count, -3);
    dango__config_free(&test_table, &o);
    test_get_equal(NULL, "TEST_BUF", "64kb");
    test_get_equal(cfg, "TEST_BUF", "64kb");

    dango_config_release(cfg);
    dango_config_release(NULL);
    assert_int_equal(dango__alloc_live(), live);
}

static void config_precedence(void **state)
{
    char            path[64];
    dango_config_t *cfg;
    test_opts_t     o;

    (void)state;
    test_write_file(path, sizeof(path),
                    "# a comment\n"
                    "; another comment\n"
                    "\n"
                    "TEST_COUNT = 5\n"
                    "  dango_test_limit=9  \n"
                    "test_name = from file\n"
                    "TEST_BUF = 1m\n"
                    "TEST_BUF = 2m\n" /* the last line wins */
                    "TEST_TIMEOUT=5s\n"
                    "TEST_ENABLE = off\n"
                    "TEST_RATIO = 2.25\n"
                    "TEST_PATH = a=b\n");
    assert_dango_ok(dango_config_read(path, &cfg));

    /* file > default */
    memset(&o, 0, sizeof(o));
    assert_dango_ok(dango__config_parse(cfg, &test_table, &o));
    assert_string_equal(o.name, "from file");
    assert_int_equal(o.count, 5);
    assert_int_equal(o.limit, 9);
    assert_int_equal(o.buf, 2u << 20);
    assert_int_equal(o.timeout, 5000000000ull);
    assert_int_equal(o.enable, 0);
    assert_true(o.ratio == 2.25);
    assert_string_equal(o.path, "a=b");
    dango__config_free(&test_table, &o);
    test_get_equal(cfg, "TEST_COUNT", "5");
    test_get_equal(NULL, "TEST_COUNT", "-3"); /* the file is the object's */

    /* env > file */
    assert_int_equal(setenv("DANGO_TEST_COUNT", "6", 1), 0);
    assert_int_equal(setenv("DANGO_TEST_NAME", "from env", 1), 0);
    test_get_equal(cfg, "TEST_COUNT", "6");
    test_get_equal(NULL, "TEST_COUNT", "6");
    memset(&o, 0, sizeof(o));
    assert_dango_ok(dango__config_parse(cfg, &test_table, &o));
    assert_int_equal(o.count, 6);
    assert_string_equal(o.name, "from env");
    assert_int_equal(o.limit, 9);
    dango__config_free(&test_table, &o);

    /* set > env; names are case-insensitive, "DANGO_" is optional */
    assert_dango_ok(dango_config_set(cfg, "test_count", "7"));
    assert_dango_ok(dango_config_set(cfg, "DANGO_TEST_NAME", "from set"));
    assert_dango_ok(dango_config_set(cfg, "Test_Limit", "0x10"));
    assert_dango_ok(dango_config_set(cfg, "TEST_LIMIT", "11")); /* last wins */
    test_get_equal(cfg, "TEST_COUNT", "7");
    test_get_equal(cfg, "dango_test_count", "7");
    test_get_equal(NULL, "TEST_COUNT", "6");
    memset(&o, 0, sizeof(o));
    assert_dango_ok(dango__config_parse(cfg, &test_table, &o));
    assert_int_equal(o.count, 7);
    assert_string_equal(o.name, "from set");
    assert_int_equal(o.limit, 11);
    assert_int_equal(o.buf, 2u << 20);
    dango__config_free(&test_table, &o);

    dango_config_release(cfg);
    unlink(path);
}

static void config_file_from_environment(void **state)
{
    char            path[64], other[64];
    dango_config_t *cfg;

    (void)state;
    dango_test_quiet_logs();
    test_write_file(path, sizeof(path), "TEST_RATIO = 4.5\n");
    test_write_file(other, sizeof(other), "TEST_RATIO = 1.25\n");
    assert_int_equal(setenv("DANGO_CONFIG_FILE", path, 1), 0);
    assert_dango_ok(dango_config_read(NULL, &cfg));
    test_get_equal(cfg, "TEST_RATIO", "4.5");
    dango_config_release(cfg);

    /* An explicit file wins over DANGO_CONFIG_FILE. */
    assert_dango_ok(dango_config_read(other, &cfg));
    test_get_equal(cfg, "TEST_RATIO", "1.25");
    dango_config_release(cfg);

    unlink(path);
    assert_dango_err(DANGO_ENOENT, dango_config_read(NULL, &cfg));
    assert_int_equal(setenv("DANGO_CONFIG_FILE", "", 1), 0);
    assert_dango_ok(dango_config_read(NULL, &cfg)); /* empty: no file */
    test_get_equal(cfg, "TEST_RATIO", "0.5");
    dango_config_release(cfg);
    unsetenv("DANGO_CONFIG_FILE");
    unlink(other);
    dango_log_set_handler(NULL, NULL);
}

static void config_bad_env_value_fails_parse_and_leaks_nothing(void **state)
{
    test_opts_t o;
    long        live = dango__alloc_live();
    int         errors;

    (void)state;
    /* Counted, whatever DANGO_TEST_LOG says: the counts are asserted. */
    dango_log_set_handler(dango_test_log_swallow, NULL);
    assert_int_equal(setenv("DANGO_TEST_BUF", "12q", 1), 0);
    errors = dango_test_log_errors;
    memset(&o, 0, sizeof(o));
    /* NAME (a string) is parsed before BUF fails: it must be freed. */
    assert_dango_err(DANGO_ECONFIG, dango__config_parse(NULL, &test_table, &o));
    assert_null(o.name);
    assert_int_equal(dango__alloc_live(), live);
    assert_int_equal(dango_test_log_errors, errors + 1);
    dango_log_set_handler(NULL, NULL);
}

/* ---------- error codes ---------- */

static void config_set_errors(void **state)
{
    static const struct {
        const char *name;
        const char *value;
    } bad_values[] = {
        {"TEST_COUNT", "abc"},    {"TEST_COUNT", "5x"},
        {"TEST_COUNT", ""},       {"TEST_COUNT", "99999999999999999999"},
        {"TEST_LIMIT", "-1"},     {"TEST_LIMIT", "1.5"},
        {"TEST_BUF", "12q"},      {"TEST_BUF", "-1"},
        {"TEST_TIMEOUT", "x"},    {"TEST_TIMEOUT", "1d"},
        {"TEST_ENABLE", "maybe"}, {"TEST_RATIO", "1.5.2"},
        {"TEST_RATIO", ""},
    };
    dango_config_t *cfg;
    char            longname[200];

    (void)state;
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "TEST_COUNT", "1"));

    assert_dango_err(DANGO_ENOENT, dango_config_set(cfg, "TEST_NOPE", "1"));
    assert_dango_err(DANGO_ENOENT, dango_config_set(cfg, "NOPE", "1"));
    assert_dango_err(DANGO_ENOENT, dango_config_set(cfg, "TEST", "1"));
    assert_dango_err(DANGO_ENOENT, dango_config_set(cfg, "TESTCOUNT", "1"));
    assert_dango_err(DANGO_ENOENT, dango_config_set(cfg, "", "1"));
    assert_dango_err(DANGO_ENOENT, dango_config_set(cfg, "DANGO_", "1"));
    memset(longname, 'A', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    memcpy(longname, "TEST_", 5);
    assert_dango_err(DANGO_ENOENT, dango_config_set(cfg, longname, "1"));

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad_values); i++) {
        assert_dango_err(
            DANGO_ECONFIG,
            dango_config_set(cfg, bad_values[i].name, bad_values[i].value));
    }

    /* Nothing changed by the failed calls. */
    test_get_equal(cfg, "TEST_COUNT", "1");
    test_get_equal(cfg, "TEST_LIMIT", "7");

    assert_dango_err(DANGO_EINVAL, dango_config_set(NULL, "TEST_COUNT", "1"));
    assert_dango_err(DANGO_EINVAL, dango_config_set(cfg, NULL, "1"));
    assert_dango_err(DANGO_EINVAL, dango_config_set(cfg, "TEST_COUNT", NULL));
    dango_config_release(cfg);
}

static void config_get_errors(void **state)
{
    char buf[64];

    (void)state;
    /* The default "dflt" needs 5 bytes. */
    assert_dango_err(DANGO_ERANGE, dango_config_get(NULL, "TEST_NAME", buf, 4));
    assert_dango_err(DANGO_ERANGE, dango_config_get(NULL, "TEST_NAME", buf, 0));
    assert_dango_ok(dango_config_get(NULL, "TEST_NAME", buf, 5));
    assert_string_equal(buf, "dflt");

    assert_dango_err(DANGO_ENOENT,
                     dango_config_get(NULL, "TEST_NOPE", buf, sizeof(buf)));
    assert_dango_err(DANGO_ENOENT,
                     dango_config_get(NULL, "", buf, sizeof(buf)));
    assert_dango_err(DANGO_EINVAL,
                     dango_config_get(NULL, NULL, buf, sizeof(buf)));
    assert_dango_err(DANGO_EINVAL,
                     dango_config_get(NULL, "TEST_NAME", NULL, sizeof(buf)));
}

static void config_file_errors(void **state)
{
    static const char *bad_files[] = {
        "TEST_COUNT = 1\nTEST_LIMIT 5\n", /* malformed: no '=' */
        "just words\n",                   /* malformed */
        "TEST_NOPE = 1\n",                /* unknown option */
        "OTHER_COUNT = 1\n",              /* unknown table */
        " = 1\n",                         /* empty name */
        "TEST_COUNT = five\n",            /* bad value */
        "TEST_COUNT =\n",                 /* empty value for an integer */
        "TEST_ENABLE = maybe\n",          /* bad value */
        "TEST_BUF = 1 zb\n",              /* bad unit */
    };
    dango_config_t *sentinel = (dango_config_t *)&sentinel;
    dango_config_t *cfg;
    char            path[64];
    long            live = dango__alloc_live();

    (void)state;
    /* Counted, whatever DANGO_TEST_LOG says: the counts are asserted. */
    dango_log_set_handler(dango_test_log_swallow, NULL);

    cfg = sentinel;
    assert_dango_err(DANGO_ENOENT,
                     dango_config_read("/nonexistent/dango/test.conf", &cfg));
    assert_ptr_equal(cfg, sentinel);
    assert_int_equal(dango_test_log_errors, 1);

    /* A directory opens but cannot be read. */
    assert_dango_err(DANGO_ENOENT, dango_config_read("/tmp", &cfg));
    assert_ptr_equal(cfg, sentinel);

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad_files); i++) {
        int errors = dango_test_log_errors;

        test_write_file(path, sizeof(path), bad_files[i]);
        cfg = sentinel;
        assert_dango_err(DANGO_ECONFIG, dango_config_read(path, &cfg));
        assert_ptr_equal(cfg, sentinel);
        /* One error logged, naming the line. */
        assert_int_equal(dango_test_log_errors, errors + 1);
        unlink(path);
    }

    assert_dango_err(DANGO_EINVAL, dango_config_read(NULL, NULL));
    assert_int_equal(dango__alloc_live(), live);
    dango_log_set_handler(NULL, NULL);
}

/* ---------- printing ---------- */

static void config_print_lists_options(void **state)
{
    dango_config_t *cfg;
    char           *out  = NULL;
    size_t          size = 0;
    FILE           *f;
    FILE           *ro;

    (void)state;
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "TEST_COUNT", "42"));
    assert_int_equal(setenv("DANGO_TEST_BUF", "1m", 1), 0);

    f = open_memstream(&out, &size);
    assert_non_null(f);
    assert_dango_ok(dango_config_print(cfg, f, 0));
    fclose(f);
    assert_non_null(strstr(out, "DANGO_TEST_NAME=dflt\n"));
    assert_non_null(strstr(out, "DANGO_TEST_COUNT=42\n"));
    assert_non_null(strstr(out, "DANGO_TEST_LIMIT=7\n"));
    assert_non_null(strstr(out, "DANGO_TEST_BUF=1m\n"));
    assert_non_null(strstr(out, "DANGO_TEST_TIMEOUT=10ms\n"));
    assert_non_null(strstr(out, "DANGO_TEST_ENABLE=yes\n"));
    assert_non_null(strstr(out, "DANGO_TEST_RATIO=0.5\n"));
    assert_non_null(strstr(out, "DANGO_TEST_PATH=/var/tmp/dango\n"));
    assert_null(strstr(out, "# "));
    free(out);

    out = NULL;
    f   = open_memstream(&out, &size);
    assert_non_null(f);
    assert_dango_ok(dango_config_print(
        cfg, f, DANGO_CONFIG_PRINT_DOC | DANGO_CONFIG_PRINT_HEADER));
    fclose(f);
    assert_non_null(strstr(out, "# TEST: Options of the config unit test\n"));
    assert_non_null(strstr(out, "# A signed integer\n# default: -3; from set\n"
                                "DANGO_TEST_COUNT=42\n"));
    assert_non_null(strstr(out, "# A size\n# default: 64kb; from env\n"
                                "DANGO_TEST_BUF=1m\n"));
    assert_non_null(strstr(out, "# An unsigned integer\n# default: 7\n"
                                "DANGO_TEST_LIMIT=7\n"));
    free(out);

    /* A stream that cannot be written. */
    ro = fopen("/dev/null", "r");
    assert_non_null(ro);
    assert_dango_err(DANGO_EIO, dango_config_print(cfg, ro, 0));
    fclose(ro);

    dango_config_release(cfg);
}

/* ---------- out of memory ---------- */

static void config_oom_walk(void **state)
{
    char path[64];
    long live     = dango__alloc_live();
    int  failures = 0;
    int  done     = 0;

    (void)state;
    test_write_file(path, sizeof(path),
                    "TEST_COUNT = 5\n"
                    "TEST_NAME = filename\n"
                    "TEST_BUF = 4k\n"
                    "TEST_PATH = /srv\n");

    for (long n = 1; (n <= TEST_OOM_MAX_STEPS) && !done; n++) {
        dango_config_t *cfg = NULL;
        test_opts_t     o;
        int             rc;

        memset(&o, 0, sizeof(o));
        dango__alloc_fail_after(n);
        rc = dango_config_read(path, &cfg);
        if (rc == 0) {
            rc = dango_config_set(cfg, "TEST_LIMIT", "12");
        }

        if (rc == 0) {
            rc = dango_config_set(cfg, "TEST_NAME", "setname");
        }

        if (rc == 0) {
            rc = dango__config_parse(cfg, &test_table, &o);
        }

        dango__alloc_fail_after(-1);
        if (rc == 0) {
            assert_string_equal(o.name, "setname");
            assert_string_equal(o.path, "/srv");
            assert_int_equal(o.count, 5);
            assert_int_equal(o.limit, 12);
            assert_int_equal(o.buf, 4096);
            dango__config_free(&test_table, &o);
            done = 1;
        } else {
            assert_dango_err(DANGO_ENOMEM, rc);
            assert_null(o.name); /* a failed parse leaves nothing to free */
            assert_null(o.path);
            failures++;
        }

        dango_config_release(cfg);
        assert_int_equal(dango__alloc_live(), live);
    }

    assert_true(done);
    /* calloc + 4 lines (3 each) + 2 sets (3 each) + 2 strings at least. */
    assert_true(failures >= 1 + 4 * 3 + 2 * 3 + 2);
    unlink(path);
}

int main(void)
{
#define T(_fn) cmocka_unit_test_setup_teardown(_fn, test_setup, test_teardown)
    const struct CMUnitTest tests[] = {
        T(config_parse_size_units),
        T(config_parse_time_units),
        T(config_parse_bool_values),
        T(config_defaults),
        T(config_precedence),
        T(config_file_from_environment),
        T(config_bad_env_value_fails_parse_and_leaks_nothing),
        T(config_set_errors),
        T(config_get_errors),
        T(config_file_errors),
        T(config_print_lists_options),
        T(config_oom_walk),
    };
#undef T

    /* The process-wide DANGO_CONFIG_FILE is read once: keep it out. */
    unsetenv("DANGO_CONFIG_FILE");
    {
        char buf[16];

        if (dango_config_get(NULL, "TEST_NAME", buf, sizeof(buf)) != 0) {
            return 1;
        }
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
