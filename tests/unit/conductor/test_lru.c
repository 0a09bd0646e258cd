/*
 * Prefix hashing of token ids and the LRU cache model.
 */
#include "conductor/conductor_int.h"

#include <string.h>

#include "common/alloc.h"
#include "dango_test.h"

/* ---------- hashing ---------- */

static void hash_chains_prefixes(void **state)
{
    uint32_t a[2048], b[2048];
    uint64_t ka[8], kb[8];
    size_t   na, nb;

    for (uint32_t i = 0; i < 2048; i++) {
        a[i] = b[i] = i * 7u;
    }
    b[600] = 1; /* differs in block 1 (tokens 512..1023) */

    assert_dango_ok(dango_conductor_hash_tokens(a, 2048, 512, 0, ka, 8, &na));
    assert_dango_ok(dango_conductor_hash_tokens(b, 2048, 512, 0, kb, 8, &nb));
    assert_int_equal(na, 4);
    assert_int_equal(nb, 4);
    assert_true(ka[0] == kb[0]);
    /* Block 1 differs, and so does every later key (chained), although
     * blocks 2 and 3 hold the same tokens. */
    for (int i = 1; i < 4; i++) {
        assert_true(ka[i] != kb[i]);
    }

    /* Deterministic; the seed changes every key. */
    assert_dango_ok(dango_conductor_hash_tokens(a, 2048, 512, 0, kb, 8, &nb));
    assert_memory_equal(ka, kb, sizeof(uint64_t) * 4);
    assert_dango_ok(dango_conductor_hash_tokens(a, 2048, 512, 9, kb, 8, &nb));
    for (int i = 0; i < 4; i++) {
        assert_true(ka[i] != kb[i]);
    }

    /* Equal blocks at different depths get different keys. */
    for (uint32_t i = 0; i < 1024; i++) {
        a[i] = 5;
    }
    assert_dango_ok(dango_conductor_hash_tokens(a, 1024, 512, 0, ka, 8, &na));
    assert_int_equal(na, 2);
    assert_true(ka[0] != ka[1]);
}

static void hash_only_complete_blocks(void **state)
{
    uint32_t t[1500] = {0};
    uint64_t k[4];
    size_t   n = 99;

    assert_dango_ok(dango_conductor_hash_tokens(t, 1500, 512, 0, k, 4, &n));
    assert_int_equal(n, 2);
    assert_dango_ok(dango_conductor_hash_tokens(t, 100, 512, 0, k, 4, &n));
    assert_int_equal(n, 0);
    /* Blocks longer than the one-shot buffer go through the stream. */
    {
        static uint32_t big[4096];

        assert_dango_ok(
            dango_conductor_hash_tokens(big, 4096, 2048, 0, k, 4, &n));
        assert_int_equal(n, 2);
        assert_true(k[0] != k[1]);
    }
}

static void hash_rejects_bad_args(void **state)
{
    uint32_t t[2048] = {0};
    uint64_t k[2];
    size_t   n;

    assert_dango_err(DANGO_ERANGE,
                     dango_conductor_hash_tokens(t, 2048, 512, 0, k, 2, &n));
    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_hash_tokens(t, 2048, 0, 0, k, 8, &n));
    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_hash_tokens(NULL, 10, 512, 0, k, 8, &n));
    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_hash_tokens(t, 1024, 512, 0, NULL, 8, &n));
    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_hash_tokens(t, 1024, 512, 0, k, 8, NULL));
}

/* ---------- LRU ---------- */

static uint64_t evicted[64];
static size_t   n_evicted;

static void on_evict(void *arg, uint64_t key)
{
    (void)arg;
    if (n_evicted < DANGO_ARRAY_SIZE(evicted)) {
        evicted[n_evicted] = key;
    }
    n_evicted++;
}

static void lru_match_is_leading_run(void **state)
{
    dango_conductor_lru_t *lru;
    uint64_t               a[] = {1, 2, 3}, q[] = {1, 2, 9, 3}, r[] = {2, 3};

    assert_dango_ok(dango_conductor_lru_create(10, NULL, NULL, &lru));
    assert_int_equal(dango_conductor_lru_match(lru, a, 3), 0);
    assert_dango_ok(dango_conductor_lru_access(lru, a, 3, 0));
    assert_int_equal(dango_conductor_lru_match(lru, a, 3), 3);
    assert_int_equal(dango_conductor_lru_match(lru, q, 4), 2);
    /* Present keys that are not a prefix of the request do not count. */
    assert_int_equal(dango_conductor_lru_match(lru, (uint64_t[]){9, 1}, 2), 0);
    assert_int_equal(dango_conductor_lru_match(lru, r, 2), 2);
    assert_int_equal(dango_conductor_lru_count(lru), 3);
    dango_conductor_lru_destroy(lru);
}

static void lru_evicts_least_recent(void **state)
{
    dango_conductor_lru_t *lru;
    uint64_t               k;

    n_evicted = 0;
    assert_dango_ok(dango_conductor_lru_create(3, on_evict, NULL, &lru));
    for (k = 1; k <= 3; k++) {
        assert_dango_ok(dango_conductor_lru_access(lru, &k, 1, 0));
    }
    /* A match does not refresh 1; an access refreshes 2. */
    k = 1;
    assert_int_equal(dango_conductor_lru_match(lru, &k, 1), 1);
    k = 2;
    assert_dango_ok(dango_conductor_lru_access(lru, &k, 1, 0));
    k = 4;
    assert_dango_ok(dango_conductor_lru_access(lru, &k, 1, 0));
    assert_int_equal(n_evicted, 1);
    assert_int_equal(evicted[0], 1);
    k = 5;
    assert_dango_ok(dango_conductor_lru_access(lru, &k, 1, 0));
    assert_int_equal(evicted[1], 3);
    assert_int_equal(dango_conductor_lru_count(lru), 3);
    assert_int_equal(dango_conductor_lru_evictions(lru), 2);
    assert_true(dango_conductor_lru_contains(lru, 2));
    assert_false(dango_conductor_lru_contains(lru, 1));
    dango_conductor_lru_destroy(lru);
}

static void lru_long_request_evicts_itself(void **state)
{
    dango_conductor_lru_t *lru;
    uint64_t               keys[] = {10, 11, 12, 13, 14};

    n_evicted = 0;
    assert_dango_ok(dango_conductor_lru_create(2, on_evict, NULL, &lru));
    assert_dango_ok(dango_conductor_lru_access(lru, keys, 5, 0));
    /* Forward order keeps the last two blocks... */
    assert_true(dango_conductor_lru_contains(lru, 13));
    assert_true(dango_conductor_lru_contains(lru, 14));
    assert_int_equal(n_evicted, 3);
    /* ... and the prefix is gone, so nothing matches. */
    assert_int_equal(dango_conductor_lru_match(lru, keys, 5), 0);
    dango_conductor_lru_clear(lru, 0);
    assert_int_equal(dango_conductor_lru_count(lru), 0);
    /* Reverse order keeps the first two. */
    assert_dango_ok(
        dango_conductor_lru_access(lru, keys, 5, DANGO_CONDUCTOR_LRU_REVERSE));
    assert_int_equal(dango_conductor_lru_match(lru, keys, 5), 2);
    dango_conductor_lru_destroy(lru);
}

static void lru_zero_and_infinite_capacity(void **state)
{
    dango_conductor_lru_t *zero, *inf;
    uint64_t               keys[1000];

    for (size_t i = 0; i < 1000; i++) {
        keys[i] = i * 31 + 7;
    }
    assert_dango_ok(dango_conductor_lru_create(0, NULL, NULL, &zero));
    assert_dango_ok(dango_conductor_lru_create(DANGO_CONDUCTOR_CAPACITY_INF,
                                               NULL, NULL, &inf));
    assert_dango_ok(dango_conductor_lru_access(zero, keys, 1000, 0));
    assert_dango_ok(dango_conductor_lru_access(inf, keys, 1000, 0));
    assert_int_equal(dango_conductor_lru_count(zero), 0);
    assert_int_equal(dango_conductor_lru_count(inf), 1000);
    assert_int_equal(dango_conductor_lru_match(inf, keys, 1000), 1000);
    assert_int_equal(dango_conductor_lru_evictions(inf), 0);
    dango_conductor_lru_destroy(zero);
    dango_conductor_lru_destroy(inf);
}

static void lru_pins_block_eviction(void **state)
{
    dango_conductor_lru_t *lru;
    uint64_t               a[] = {1, 2}, k;

    n_evicted = 0;
    assert_dango_ok(dango_conductor_lru_create(2, on_evict, NULL, &lru));
    assert_dango_ok(dango_conductor_lru_access(lru, a, 2, 0));
    assert_int_equal(dango_conductor_lru_pin(lru, a, 1, 1), 1);
    k = 3;
    assert_dango_ok(dango_conductor_lru_access(lru, &k, 1, 0));
    /* 1 is the least recent but pinned: 2 goes. */
    assert_int_equal(evicted[0], 2);
    assert_true(dango_conductor_lru_contains(lru, 1));
    /* Everything pinned: a new key is not cached at all. */
    assert_int_equal(dango_conductor_lru_pin(lru, &k, 1, 1), 1);
    k = 4;
    assert_dango_ok(dango_conductor_lru_access(lru, &k, 1, 0));
    assert_false(dango_conductor_lru_contains(lru, 4));
    assert_int_equal(dango_conductor_lru_count(lru), 2);
    /* Unpinned, 1 is evictable again. */
    assert_int_equal(dango_conductor_lru_pin(lru, a, 1, -1), 1);
    assert_int_equal(dango_conductor_lru_pin(lru, a, 1, -1), 0);
    assert_dango_ok(dango_conductor_lru_access(lru, &k, 1, 0));
    assert_false(dango_conductor_lru_contains(lru, 1));
    /* Removal wins over pins and does not call back. */
    k         = 3;
    n_evicted = 0;
    assert_dango_ok(dango_conductor_lru_remove(lru, 3));
    assert_dango_err(DANGO_ENOENT, dango_conductor_lru_remove(lru, 3));
    assert_int_equal(n_evicted, 0);
    dango_conductor_lru_clear(lru, 1);
    assert_int_equal(n_evicted, 1);
    dango_conductor_lru_destroy(lru);
}

static void lru_bad_args_and_oom(void **state)
{
    dango_conductor_lru_t *lru = NULL;
    uint64_t               keys[4096];
    int                    rc;

    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_lru_create(1, NULL, NULL, NULL));
    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_lru_access(NULL, keys, 1, 0));
    /* Allocation failures are DANGO_ENOMEM, never a crash or a leak. */
    for (long n = 1; n < 64; n++) {
        long live = dango__alloc_live();

        dango__alloc_fail_after(n);
        rc = dango_conductor_lru_create(DANGO_CONDUCTOR_CAPACITY_INF, NULL,
                                        NULL, &lru);
        if (rc == 0) {
            for (size_t i = 0; i < 4096; i++) {
                keys[i] = i;
            }
            rc = dango_conductor_lru_access(lru, keys, 4096, 0);
            dango__alloc_fail_after(-1);
            if (rc != 0) {
                assert_dango_err(DANGO_ENOMEM, rc);
            }
            dango_conductor_lru_destroy(lru);
        } else {
            dango__alloc_fail_after(-1);
            assert_dango_err(DANGO_ENOMEM, rc);
        }
        assert_int_equal(dango__alloc_live(), live);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hash_chains_prefixes),
        cmocka_unit_test(hash_only_complete_blocks),
        cmocka_unit_test(hash_rejects_bad_args),
        cmocka_unit_test(lru_match_is_leading_run),
        cmocka_unit_test(lru_evicts_least_recent),
        cmocka_unit_test(lru_long_request_evicts_itself),
        cmocka_unit_test(lru_zero_and_infinite_capacity),
        cmocka_unit_test(lru_pins_block_eviction),
        cmocka_unit_test(lru_bad_args_and_oom),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
