/*
 * Unit tests of the fixed-size object pool: lazy growth, LIFO reuse, the
 * max_elems limit, allocation failure, cleanup and concurrent get/put.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "dango_test.h"

#include "common/alloc.h"
#include "common/mpool.h"

#define TEST_THREADS 4
#define TEST_ROUNDS  2000
#define TEST_HOLD    8

static int test_teardown(void **state)
{
    (void)state;
    dango__alloc_fail_after(-1);
    return 0;
}

static void mpool_get_put_reuses(void **state)
{
    dango_mpool_t mp;
    long          live = dango__alloc_live();
    void         *objs[16];

    (void)state;
    dango_mpool_init(&mp, 100, 8, 0, "test_pool");
    assert_int_equal(dango__alloc_live(), live); /* nothing until first get */
    assert_true(mp.elem_size >= 100);

    for (int i = 0; i < 16; i++) {
        objs[i] = dango_mpool_get(&mp);
        assert_non_null(objs[i]);
        memset(objs[i], i, 100); /* the whole element is usable */
        for (int j = 0; j < i; j++) {
            assert_ptr_not_equal(objs[i], objs[j]);
        }
    }

    assert_int_equal(mp.num_out, 16);
    assert_int_equal(mp.num_elems, 16);
    assert_int_equal(dango__alloc_live(), live + 2); /* two chunks of 8 */
    for (int i = 0; i < 16; i++) {
        unsigned char *p = objs[i];

        assert_int_equal(p[sizeof(void *)], i); /* neighbours untouched */
        assert_int_equal(p[99], i);
    }

    /* A put object is the next one handed out (LIFO). */
    dango_mpool_put(&mp, objs[5]);
    assert_int_equal(mp.num_out, 15);
    assert_ptr_equal(dango_mpool_get(&mp), objs[5]);
    dango_mpool_put(&mp, objs[3]);
    dango_mpool_put(&mp, objs[9]);
    assert_ptr_equal(dango_mpool_get(&mp), objs[9]);
    assert_ptr_equal(dango_mpool_get(&mp), objs[3]);

    /* Returning everything and taking it again allocates nothing. */
    for (int i = 0; i < 16; i++) {
        dango_mpool_put(&mp, objs[i]);
    }

    assert_int_equal(mp.num_out, 0);
    for (int i = 0; i < 16; i++) {
        objs[i] = dango_mpool_get(&mp);
        assert_non_null(objs[i]);
    }

    assert_int_equal(dango__alloc_live(), live + 2);
    for (int i = 0; i < 16; i++) {
        dango_mpool_put(&mp, objs[i]);
    }

    dango_mpool_cleanup(&mp);
    assert_int_equal(dango__alloc_live(), live);
    assert_null(mp.chunks);
    assert_null(mp.free_list);
}

static void mpool_max_elems_limit(void **state)
{
    dango_mpool_t mp;
    long          live = dango__alloc_live();
    void         *objs[10];
    void         *extra;

    (void)state;
    dango_mpool_init(&mp, 32, 4, 10, "limited");
    for (int i = 0; i < 10; i++) {
        objs[i] = dango_mpool_get(&mp);
        assert_non_null(objs[i]);
    }

    assert_int_equal(mp.num_elems, 10); /* chunks of 4, 4 and the last 2 */
    assert_int_equal(dango__alloc_live(), live + 3);
    assert_null(dango_mpool_get(&mp));
    assert_null(dango_mpool_get(&mp));
    assert_int_equal(mp.num_out, 10);

    dango_mpool_put(&mp, objs[7]);
    extra = dango_mpool_get(&mp);
    assert_ptr_equal(extra, objs[7]);
    assert_null(dango_mpool_get(&mp));

    for (int i = 0; i < 10; i++) {
        dango_mpool_put(&mp, objs[i]);
    }

    dango_mpool_cleanup(&mp);
    assert_int_equal(dango__alloc_live(), live);
}

static void mpool_alloc_failure_returns_null(void **state)
{
    dango_mpool_t mp;
    long          live = dango__alloc_live();
    void         *a, *b;

    (void)state;
    dango_mpool_init(&mp, 16, 2, 0, "oom");
    dango__alloc_fail_after(1);
    assert_null(dango_mpool_get(&mp));
    assert_int_equal(mp.num_out, 0);
    assert_int_equal(mp.num_elems, 0);
    dango__alloc_fail_after(-1);

    a = dango_mpool_get(&mp);
    b = dango_mpool_get(&mp);
    assert_non_null(a);
    assert_non_null(b);
    /* A warm pool needs no allocation: get works while allocations fail. */
    dango_mpool_put(&mp, a);
    dango__alloc_fail_after(1);
    assert_ptr_equal(dango_mpool_get(&mp), a);
    assert_null(dango_mpool_get(&mp)); /* would need a new chunk */
    dango__alloc_fail_after(-1);
    dango_mpool_put(&mp, a);
    dango_mpool_put(&mp, b);
    dango_mpool_cleanup(&mp);
    assert_int_equal(dango__alloc_live(), live);
}

static void mpool_small_elements_and_default_chunk(void **state)
{
    dango_mpool_t mp;
    long          live = dango__alloc_live();
    void         *objs[65];

    (void)state;
    dango_mpool_init(&mp, 1, 0, 0, "tiny");
    assert_true(mp.elem_size >= sizeof(void *));
    assert_true(mp.per_chunk > 0);
    for (int i = 0; i < 65; i++) {
        objs[i] = dango_mpool_get(&mp);
        assert_non_null(objs[i]);
        assert_int_equal((uintptr_t)objs[i] % sizeof(void *), 0);
    }

    for (int i = 0; i < 65; i++) {
        dango_mpool_put(&mp, objs[i]);
    }

    dango_mpool_cleanup(&mp);
    assert_int_equal(dango__alloc_live(), live);

    /* Cleanup of a pool never used is fine, and so is a second cleanup. */
    dango_mpool_init(&mp, 8, 4, 0, "unused");
    dango_mpool_cleanup(&mp);
    dango_mpool_cleanup(&mp);
    assert_int_equal(dango__alloc_live(), live);
}

typedef struct test_worker {
    pthread_t      thread;
    dango_mpool_t *mp;
    int            id;
    int            errors;
} test_worker_t;

static void *test_pool_worker(void *arg)
{
    test_worker_t *w = arg;
    uint64_t      *held[TEST_HOLD];

    for (int r = 0; r < TEST_ROUNDS; r++) {
        for (int i = 0; i < TEST_HOLD; i++) {
            held[i] = dango_mpool_get(w->mp);
            if (held[i] == NULL) {
                w->errors++;
                return NULL;
            }

            held[i][1] = ((uint64_t)w->id << 32) | (uint64_t)i;
        }

        for (int i = 0; i < TEST_HOLD; i++) {
            /* Nobody else wrote into an object this thread holds. */
            if (held[i][1] != (((uint64_t)w->id << 32) | (uint64_t)i)) {
                w->errors++;
            }

            dango_mpool_put(w->mp, held[i]);
        }
    }

    return NULL;
}

static void mpool_concurrent_get_put(void **state)
{
    dango_mpool_t mp;
    test_worker_t w[TEST_THREADS];
    long          live = dango__alloc_live();

    (void)state;
    dango_mpool_init(&mp, 16, 4, TEST_THREADS * TEST_HOLD, "shared");
    for (int i = 0; i < TEST_THREADS; i++) {
        w[i] = (test_worker_t){.mp = &mp, .id = i + 1};
        assert_int_equal(
            pthread_create(&w[i].thread, NULL, test_pool_worker, &w[i]), 0);
    }

    for (int i = 0; i < TEST_THREADS; i++) {
        pthread_join(w[i].thread, NULL);
        assert_int_equal(w[i].errors, 0);
    }

    assert_int_equal(mp.num_out, 0);
    assert_true(mp.num_elems <= TEST_THREADS * TEST_HOLD);
    dango_mpool_cleanup(&mp);
    assert_int_equal(dango__alloc_live(), live);
}

int main(void)
{
#define T(_fn) cmocka_unit_test_teardown(_fn, test_teardown)
    const struct CMUnitTest tests[] = {
        T(mpool_get_put_reuses),
        T(mpool_max_elems_limit),
        T(mpool_alloc_failure_returns_null),
        T(mpool_small_elements_and_default_chunk),
        T(mpool_concurrent_get_put),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
