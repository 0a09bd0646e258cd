/*
 * Unit tests of dango_copy_stream(): every length around the streaming
 * threshold and the vector widths, at every destination and source
 * alignment, copies exactly the bytes asked for and writes nothing outside
 * the destination.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dango_test.h"

#include "common/copy.h"

#define TEST_GUARD 64
#define TEST_MAX   (3 * DANGO_COPY_STREAM_MIN + 200)

static uint8_t test_src[TEST_MAX + 64];
static uint8_t test_dst[TEST_MAX + 64 + 2 * TEST_GUARD];

static void test_fill(void)
{
    for (size_t i = 0; i < sizeof(test_src); i++) {
        test_src[i] = (uint8_t)((i * 2654435761u) >> 11);
    }
}

/* One copy of @len bytes from test_src + @so to test_dst + guard + @doff,
 * checked byte by byte with the guard bytes around it. */
static void test_one(size_t len, size_t so, size_t doff)
{
    uint8_t *dst = test_dst + TEST_GUARD + doff;

    memset(test_dst, 0xA5, sizeof(test_dst));
    dango_copy_stream(dst, test_src + so, len);
    assert_memory_equal(dst, test_src + so, len);
    for (uint8_t *p = test_dst; p < dst; p++) {
        assert_int_equal(*p, 0xA5);
    }

    for (uint8_t *p = dst + len; p < test_dst + sizeof(test_dst); p++) {
        assert_int_equal(*p, 0xA5);
    }
}

static void copy_lengths_and_alignments(void **state)
{
    static const size_t lens[] = {0,
                                  1,
                                  15,
                                  16,
                                  17,
                                  63,
                                  64,
                                  65,
                                  DANGO_COPY_STREAM_MIN - 1,
                                  DANGO_COPY_STREAM_MIN,
                                  DANGO_COPY_STREAM_MIN + 1,
                                  DANGO_COPY_STREAM_MIN + 15,
                                  DANGO_COPY_STREAM_MIN + 16,
                                  DANGO_COPY_STREAM_MIN + 63,
                                  DANGO_COPY_STREAM_MIN + 64,
                                  DANGO_COPY_STREAM_MIN + 79,
                                  2 * DANGO_COPY_STREAM_MIN + 7,
                                  TEST_MAX};

    (void)state;
    test_fill();
    for (size_t l = 0; l < DANGO_ARRAY_SIZE(lens); l++) {
        for (size_t doff = 0; doff < 32; doff += (lens[l] > 64) ? 3 : 1) {
            for (size_t so = 0; so < 32; so += 5) {
                test_one(lens[l], so, doff);
            }
        }
    }
}

static void copy_large_value(void **state)
{
    size_t   len = (4u << 20) + 37;
    uint8_t *src = malloc(len);
    uint8_t *dst = malloc(len + 1);

    (void)state;
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < len; i++) {
        src[i] = (uint8_t)(i ^ (i >> 9));
    }

    dst[len] = 0x5A;
    dango_copy_stream(dst + 1, src + 1, len - 1);
    assert_memory_equal(dst + 1, src + 1, len - 1);
    assert_int_equal(dst[len], 0x5A);
    free(src);
    free(dst);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(copy_lengths_and_alignments),
        cmocka_unit_test(copy_large_value),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
