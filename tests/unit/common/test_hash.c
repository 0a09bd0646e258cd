/*
 * Unit tests of hashing and random bytes: the one-shot xxh3 equals the
 * streaming init/update/final over any split of the input, seeds change the
 * result, and dango_random_bytes() fills whole buffers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dango_test.h"

#include "common/hash.h"

#define TEST_BUF_LEN 5000

static uint8_t test_data[TEST_BUF_LEN];

static int test_group_setup(void **state)
{
    (void)state;
    /* Deterministic, non-repeating content. */
    for (size_t i = 0; i < sizeof(test_data); i++) {
        test_data[i] = (uint8_t)((i * 2654435761u) >> 13);
    }

    return 0;
}

static uint64_t test_stream(const uint8_t *p, size_t len, uint64_t seed,
                            const size_t *cuts, size_t ncuts)
{
    dango_hash_state_t st  = {0};
    size_t             off = 0;
    uint64_t           h;

    assert_dango_ok(dango_hash_init(&st, seed));
    assert_non_null(st.impl);
    for (size_t i = 0; i < ncuts; i++) {
        size_t cut = cuts[i] < len ? cuts[i] : len;

        if (cut > off) {
            dango_hash_update(&st, p + off, cut - off);
            off = cut;
        }
    }

    dango_hash_update(&st, p + off, len - off);
    h = dango_hash_final(&st);
    dango_hash_cleanup(&st);
    assert_null(st.impl);
    return h;
}

static void hash_known_vector(void **state)
{
    (void)state;
    /* xxh3-64 of the empty input: peers must agree on the algorithm. */
    assert_int_equal(dango_hash64("", 0), 0x2D06800538D394C2ull);
    assert_int_equal(dango_hash64_seed("", 0, 0), 0x2D06800538D394C2ull);
}

static void hash_streaming_matches_oneshot(void **state)
{
    /* Lengths around xxh3's internal size classes. */
    static const size_t lens[] = {0,    1,    3,    4,    8,   9,   16,
                                  17,   128,  129,  240,  241, 255, 256,
                                  1023, 1024, 1025, 4096, 5000};

    (void)state;
    for (size_t l = 0; l < DANGO_ARRAY_SIZE(lens); l++) {
        size_t   len = lens[l];
        uint64_t one = dango_hash64(test_data, len);

        assert_true(len <= sizeof(test_data));

        /* No split, then every two-way split for short inputs and a
         * sample of splits for long ones. */
        assert_int_equal(test_stream(test_data, len, 0, NULL, 0), one);
        for (size_t cut = 0; cut <= len; cut += (len < 300) ? 1 : 97) {
            assert_int_equal(test_stream(test_data, len, 0, &cut, 1), one);
        }

        /* Three-way splits. */
        for (size_t a = 0; a <= len; a += (len / 7) + 1) {
            size_t cuts[2] = {a, a + (len - a) / 2};

            assert_int_equal(test_stream(test_data, len, 0, cuts, 2), one);
        }
    }
}

/*
 * Long inputs: the one-shot hash may run a wider vector build (AVX2,
 * AVX-512) than the streaming one; both must agree at every length class
 * and alignment, including the stripes' tail handling.
 */
static void hash_long_inputs_every_path(void **state)
{
    static const size_t lens[] = {1024 + 1,   4096 - 1,        65536,
                                  65536 + 63, (1u << 20) + 17, (4u << 20) + 5};
    uint8_t            *buf    = malloc((4u << 20) + 128);

    (void)state;
    assert_non_null(buf);
    for (size_t i = 0; i < (4u << 20) + 128; i++) {
        buf[i] = (uint8_t)((i * 2654435761u) >> 11);
    }

    for (size_t l = 0; l < DANGO_ARRAY_SIZE(lens); l++) {
        for (size_t off = 0; off < 64; off += 21) {
            assert_int_equal(test_stream(buf + off, lens[l], 0, NULL, 0),
                             dango_hash64(buf + off, lens[l]));
        }
    }

    /* A flipped bit anywhere changes it. */
    {
        uint64_t h = dango_hash64(buf, 65536);

        buf[40000] ^= 0x10;
        assert_true(dango_hash64(buf, 65536) != h);
    }

    free(buf);
}

static void hash_byte_by_byte(void **state)
{
    dango_hash_state_t st  = {0};
    const size_t       len = 1500;

    (void)state;
    assert_dango_ok(dango_hash_init(&st, 77));
    for (size_t i = 0; i < len; i++) {
        dango_hash_update(&st, test_data + i, 1);
    }

    assert_int_equal(dango_hash_final(&st),
                     dango_hash64_seed(test_data, len, 77));
    /* final does not consume the state: it can be read again. */
    assert_int_equal(dango_hash_final(&st),
                     dango_hash64_seed(test_data, len, 77));
    dango_hash_cleanup(&st);
    dango_hash_cleanup(&st); /* second cleanup is a no-op */
}

static void hash_seeds_differ(void **state)
{
    static const size_t lens[] = {0, 5, 64, 1000};

    (void)state;
    for (size_t l = 0; l < DANGO_ARRAY_SIZE(lens); l++) {
        size_t   len = lens[l];
        uint64_t h0  = dango_hash64(test_data, len);
        uint64_t h1  = dango_hash64_seed(test_data, len, 1);
        uint64_t h2  = dango_hash64_seed(test_data, len, 2);
        size_t   cut = len / 3;

        assert_int_equal(dango_hash64_seed(test_data, len, 0), h0);
        assert_int_not_equal(h0, h1);
        assert_int_not_equal(h0, h2);
        assert_int_not_equal(h1, h2);
        /* The streaming form honours the seed. */
        assert_int_equal(test_stream(test_data, len, 1, &cut, 1), h1);
        assert_int_equal(test_stream(test_data, len, 2, &cut, 1), h2);
    }
}

static void hash_input_sensitivity(void **state)
{
    uint8_t  buf[256];
    uint64_t base;

    (void)state;
    memcpy(buf, test_data, sizeof(buf));
    base = dango_hash64(buf, sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i += 17) {
        buf[i] ^= 0x01;
        assert_int_not_equal(dango_hash64(buf, sizeof(buf)), base);
        buf[i] ^= 0x01;
    }

    assert_int_equal(dango_hash64(buf, sizeof(buf)), base);
    assert_int_not_equal(dango_hash64(buf, sizeof(buf) - 1), base);
}

static int test_all_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != 0) {
            return 0;
        }
    }

    return 1;
}

static void hash_random_bytes_fills(void **state)
{
    static uint8_t big[1 << 20];
    uint8_t        a[64], b[64], guard[80];
    size_t         nonzero_words = 0;

    (void)state;
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    assert_dango_ok(dango_random_bytes(a, sizeof(a)));
    assert_dango_ok(dango_random_bytes(b, sizeof(b)));
    assert_false(test_all_zero(a, sizeof(a)));
    assert_memory_not_equal(a, b, sizeof(a));

    /* Exactly len bytes are written. */
    memset(guard, 0, sizeof(guard));
    assert_dango_ok(dango_random_bytes(guard + 8, 64));
    assert_true(test_all_zero(guard, 8));
    assert_true(test_all_zero(guard + 72, 8));
    assert_dango_ok(dango_random_bytes(guard, 0));

    /* A large buffer is filled to the end, not only its first block. */
    memset(big, 0, sizeof(big));
    assert_dango_ok(dango_random_bytes(big, sizeof(big)));
    for (size_t off = 0; off < sizeof(big); off += 4096) {
        nonzero_words += !test_all_zero(big + off, 8);
    }

    assert_int_equal(nonzero_words, sizeof(big) / 4096);
    assert_false(test_all_zero(big + sizeof(big) - 16, 16));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hash_known_vector),
        cmocka_unit_test(hash_streaming_matches_oneshot),
        cmocka_unit_test(hash_long_inputs_every_path),
        cmocka_unit_test(hash_byte_by_byte),
        cmocka_unit_test(hash_seeds_differ),
        cmocka_unit_test(hash_input_sensitivity),
        cmocka_unit_test(hash_random_bytes_fills),
    };

    return cmocka_run_group_tests(tests, test_group_setup, NULL);
}
