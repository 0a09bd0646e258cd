/*
 * Unit tests of the error space: every code of DANGO_ERRNO_MAP is distinct,
 * has a message and a "DANGO_<NAME>" name; unknown codes decode safely;
 * dango_strerror_r() formats and truncates; errno conversion and the
 * link/peer bands.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "dango_test.h"

typedef struct test_code {
    int         value;
    const char *name;
    const char *msg;
} test_code_t;

static const test_code_t test_codes[] = {
#define TEST_CODE(_name, _val, _msg) {DANGO_##_name, "DANGO_" #_name, _msg},
    DANGO_ERRNO_MAP(TEST_CODE)
#undef TEST_CODE
};

static void error_codes_are_distinct_and_negative(void **state)
{
    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(test_codes); i++) {
        assert_true(test_codes[i].value < 0);
        for (size_t j = i + 1; j < DANGO_ARRAY_SIZE(test_codes); j++) {
            if (test_codes[i].value == test_codes[j].value) {
                fail_msg("%s and %s share value %d", test_codes[i].name,
                         test_codes[j].name, test_codes[i].value);
            }
        }
    }
}

static void error_every_code_has_message_and_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(test_codes); i++) {
        const test_code_t *c = &test_codes[i];

        assert_non_null(dango_strerror(c->value));
        assert_string_not_equal(dango_strerror(c->value), "unknown error");
        assert_string_equal(dango_strerror(c->value), c->msg);
        assert_string_equal(dango_err_name(c->value), c->name);
        assert_int_equal(strncmp(dango_err_name(c->value), "DANGO_E", 7), 0);
    }
}

static void error_ok_has_name_and_message(void **state)
{
    (void)state;
    assert_string_equal(dango_err_name(0), "DANGO_OK");
    assert_string_equal(dango_strerror(0), "success");
    assert_int_equal(DANGO_OK, 0);
}

static void error_unknown_codes(void **state)
{
    static const int unknown[] = {1,      12345,  -9999,   -10099,
                                  -10999, -10398, INT_MIN, INT_MAX};

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(unknown); i++) {
        assert_string_equal(dango_strerror(unknown[i]), "unknown error");
        assert_string_equal(dango_err_name(unknown[i]), "DANGO_UNKNOWN");
    }
}

static void error_strerror_r_formats(void **state)
{
    char buf[128];

    (void)state;
    assert_ptr_equal(dango_strerror_r(DANGO_ETIMEDOUT, buf, sizeof(buf)), buf);
    assert_string_equal(buf, "timed out (-110)");

    dango_strerror_r(DANGO_EAUTH, buf, sizeof(buf));
    assert_string_equal(buf,
                        "peer failed cluster token authentication (-10006)");

    dango_strerror_r(-424242, buf, sizeof(buf));
    assert_string_equal(buf, "unknown error (-424242)");

    dango_strerror_r(0, buf, sizeof(buf));
    assert_string_equal(buf, "success (0)");
}

static void error_strerror_r_truncates_safely(void **state)
{
    char buf[16];

    (void)state;
    /* Canary bytes past the advertised length must survive. */
    memset(buf, 'Z', sizeof(buf));
    assert_ptr_equal(dango_strerror_r(DANGO_ETIMEDOUT, buf, 6), buf);
    assert_string_equal(buf, "timed");
    for (size_t i = 6; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], 'Z');
    }

    memset(buf, 'Z', sizeof(buf));
    dango_strerror_r(DANGO_ETIMEDOUT, buf, 1);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[1], 'Z');

    /* len 0: nothing is written at all. */
    memset(buf, 'Z', sizeof(buf));
    assert_ptr_equal(dango_strerror_r(DANGO_ETIMEDOUT, buf, 0), buf);
    assert_int_equal(buf[0], 'Z');

    assert_null(dango_strerror_r(DANGO_ETIMEDOUT, NULL, 16));
}

static void error_from_errno(void **state)
{
    (void)state;
    assert_dango_err(DANGO_EIO, dango_err_from_errno(0));
    assert_dango_err(DANGO_ENOENT, dango_err_from_errno(ENOENT));
    assert_dango_err(DANGO_ENOENT, dango_err_from_errno(-ENOENT));
    assert_dango_err(DANGO_ETIMEDOUT, dango_err_from_errno(ETIMEDOUT));
    assert_dango_err(DANGO_ECONNREFUSED, dango_err_from_errno(-ECONNREFUSED));
    assert_dango_err(DANGO_EAGAIN, dango_err_from_errno(EWOULDBLOCK));
    assert_dango_err(DANGO_EAGAIN, dango_err_from_errno(-EWOULDBLOCK));
    assert_dango_err(DANGO_EAGAIN, dango_err_from_errno(EAGAIN));
    /* An errno unknown to the table passes through negated. */
    assert_int_equal(dango_err_from_errno(ENOTDIR), -ENOTDIR);
    assert_int_equal(dango_err_from_errno(-ENOTDIR), -ENOTDIR);
    assert_string_equal(dango_err_name(-ENOTDIR), "DANGO_UNKNOWN");
    /* Every table errno maps to itself, from either sign. */
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(test_codes); i++) {
        int v = test_codes[i].value;

        if (v > -10000) {
            assert_int_equal(dango_err_from_errno(-v), v);
            assert_int_equal(dango_err_from_errno(v), v);
        }
    }
}

static void error_link_and_peer_bands(void **state)
{
    (void)state;
    assert_true(dango_err_is_link(DANGO_ELINK_DOWN));
    assert_true(dango_err_is_link(DANGO_ELINK_TIMEOUT));
    assert_true(dango_err_is_link(-10100));
    assert_true(dango_err_is_link(-10199));
    assert_false(dango_err_is_link(-10099));
    assert_false(dango_err_is_link(-10200));
    assert_false(dango_err_is_link(DANGO_ETIMEDOUT));
    assert_false(dango_err_is_link(DANGO_EPEER_GONE));
    assert_false(dango_err_is_link(0));

    assert_true(dango_err_is_peer(DANGO_EPEER_GONE));
    assert_true(dango_err_is_peer(DANGO_ESEGMENT_STALE));
    assert_true(dango_err_is_peer(-10200));
    assert_true(dango_err_is_peer(-10299));
    assert_false(dango_err_is_peer(-10199));
    assert_false(dango_err_is_peer(-10300));
    assert_false(dango_err_is_peer(DANGO_ELINK_DOWN));
    assert_false(dango_err_is_peer(DANGO_EREPLICA_UNAVAIL));
    assert_false(dango_err_is_peer(0));

    /* Codes of each band in the table agree with the predicates. */
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(test_codes); i++) {
        int v = test_codes[i].value;

        assert_int_equal(!!dango_err_is_link(v),
                         (v <= -10100) && (v >= -10199));
        assert_int_equal(!!dango_err_is_peer(v),
                         (v <= -10200) && (v >= -10299));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_codes_are_distinct_and_negative),
        cmocka_unit_test(error_every_code_has_message_and_name),
        cmocka_unit_test(error_ok_has_name_and_message),
        cmocka_unit_test(error_unknown_codes),
        cmocka_unit_test(error_strerror_r_formats),
        cmocka_unit_test(error_strerror_r_truncates_safely),
        cmocka_unit_test(error_from_errno),
        cmocka_unit_test(error_link_and_peer_bands),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
