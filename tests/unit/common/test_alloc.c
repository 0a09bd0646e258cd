/*
 * Unit tests of the library allocator: the fail-after hook (the n-th
 * allocation from now fails, and every later one until reset), the live
 * counter, dango_set_allocator() and the string helpers.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dango_test.h"

#include <dango/common.h>
#include "common/alloc.h"

#define TEST_THREADS        4
#define TEST_ALLOCS_PER_THR 100

static int test_teardown(void **state)
{
    (void)state;
    dango__alloc_fail_after(-1);
    dango_set_allocator(NULL);
    return 0;
}

static void alloc_fail_after_semantics(void **state)
{
    long  live = dango__alloc_live();
    void *a, *b, *c, *r;

    (void)state;
    dango__alloc_fail_after(3);
    a = dango_malloc(8, "t1");
    b = dango_calloc(2, 8, "t2");
    assert_non_null(a);
    assert_non_null(b);
    /* The third fails, and every later kind of allocation too. */
    assert_null(dango_malloc(8, "t3"));
    assert_null(dango_malloc(8, "t4"));
    assert_null(dango_calloc(1, 8, "t5"));
    assert_null(dango_realloc(NULL, 8, "t6"));
    assert_null(dango_strdup("x", "t7"));
    assert_null(dango_strndup("xyz", 2, "t8"));
    memset(a, 0x5a, 8);
    assert_null(dango_realloc(a, 64, "t9")); /* a stays valid and intact */
    assert_int_equal(((unsigned char *)a)[7], 0x5a);
    assert_int_equal(dango__alloc_live(), live + 2);

    /* Reset: allocations work again. */
    dango__alloc_fail_after(-1);
    c = dango_malloc(8, "t10");
    assert_non_null(c);
    r = dango_realloc(a, 64, "t11");
    assert_non_null(r);
    assert_int_equal(((unsigned char *)r)[7], 0x5a);
    dango_free(r);
    dango_free(b);
    dango_free(c);
    assert_int_equal(dango__alloc_live(), live);

    /* 1 = the very next allocation. */
    dango__alloc_fail_after(1);
    assert_null(dango_calloc(1, 1, "t12"));
    assert_null(dango_malloc(1, "t13"));
    dango__alloc_fail_after(-1);
    a = dango_malloc(1, "t14");
    assert_non_null(a);
    dango_free(a);
    assert_int_equal(dango__alloc_live(), live);
}

static void alloc_live_counter(void **state)
{
    long  live = dango__alloc_live();
    void *a, *b, *c, *d;

    (void)state;
    a = dango_malloc(0, "zero"); /* size 0 still returns a unique block */
    assert_non_null(a);
    assert_int_equal(dango__alloc_live(), live + 1);
    b = dango_calloc(0, 0, "zero");
    assert_non_null(b);
    assert_int_equal(dango__alloc_live(), live + 2);
    c = dango_realloc(NULL, 16, "from_null");
    assert_non_null(c);
    assert_int_equal(dango__alloc_live(), live + 3);
    c = dango_realloc(c, 4096, "grow"); /* no new live block */
    assert_non_null(c);
    assert_int_equal(dango__alloc_live(), live + 3);
    d = dango_strdup("abc", "dup");
    assert_int_equal(dango__alloc_live(), live + 4);

    dango_free(NULL);
    assert_int_equal(dango__alloc_live(), live + 4);
    dango_free(a);
    dango_free(b);
    dango_free(c);
    dango_free(d);
    assert_int_equal(dango__alloc_live(), live);
}

static void alloc_calloc_zeroes(void **state)
{
    unsigned char *p;

    (void)state;
    p = dango_calloc(64, 4, "zeroed");
    assert_non_null(p);
    for (size_t i = 0; i < 256; i++) {
        assert_int_equal(p[i], 0);
    }

    dango_free(p);
}

/* ---------- a counting allocator ---------- */

static int test_n_malloc, test_n_calloc, test_n_realloc, test_n_free;

static void *test_malloc_fn(size_t size)
{
    test_n_malloc++;
    return malloc(size);
}

static void *test_calloc_fn(size_t nmemb, size_t size)
{
    test_n_calloc++;
    return calloc(nmemb, size);
}

static void *test_realloc_fn(void *ptr, size_t size)
{
    test_n_realloc++;
    return realloc(ptr, size);
}

static void test_free_fn(void *ptr)
{
    test_n_free++;
    free(ptr);
}

static void test_reset_counts(void)
{
    test_n_malloc = test_n_calloc = test_n_realloc = test_n_free = 0;
}

static void alloc_set_allocator_routes_calls(void **state)
{
    const dango_allocator_t counting = {test_malloc_fn, test_calloc_fn,
                                        test_realloc_fn, test_free_fn};
    void                   *a, *b, *c;
    char                   *s;

    (void)state;
    test_reset_counts();
    assert_dango_ok(dango_set_allocator(&counting));
    a = dango_malloc(10, "a");
    b = dango_calloc(3, 10, "b");
    c = dango_realloc(NULL, 10, "c"); /* realloc of NULL is a malloc */
    c = dango_realloc(c, 100, "c");
    s = dango_strndup("counting", 5, "s");
    assert_string_equal(s, "count");
    assert_int_equal(test_n_malloc, 3);
    assert_int_equal(test_n_calloc, 1);
    assert_int_equal(test_n_realloc, 1);
    assert_int_equal(test_n_free, 0);
    dango_free(a);
    dango_free(b);
    dango_free(c);
    dango_free(s);
    dango_free(NULL); /* not forwarded */
    assert_int_equal(test_n_free, 4);

    /* Injected failures never reach the allocator. */
    dango__alloc_fail_after(1);
    assert_null(dango_malloc(10, "fail"));
    dango__alloc_fail_after(-1);
    assert_int_equal(test_n_malloc, 3);

    /* NULL restores libc: the counters stop moving. */
    assert_dango_ok(dango_set_allocator(NULL));
    a = dango_malloc(10, "a");
    dango_free(a);
    assert_int_equal(test_n_malloc, 3);
    assert_int_equal(test_n_free, 4);
}

static void alloc_set_allocator_rejects_missing_function(void **state)
{
    const dango_allocator_t counting = {test_malloc_fn, test_calloc_fn,
                                        test_realloc_fn, test_free_fn};
    dango_allocator_t       bad;
    void                   *a;

    (void)state;
    test_reset_counts();
    assert_dango_ok(dango_set_allocator(&counting));
    for (int i = 0; i < 4; i++) {
        bad = counting;
        switch (i) {
        case 0:
            bad.malloc_fn = NULL;
            break;
        case 1:
            bad.calloc_fn = NULL;
            break;
        case 2:
            bad.realloc_fn = NULL;
            break;
        default:
            bad.free_fn = NULL;
            break;
        }

        assert_dango_err(DANGO_EINVAL, dango_set_allocator(&bad));
    }

    /* The rejected calls left the counting allocator in place. */
    a = dango_malloc(1, "still_counting");
    dango_free(a);
    assert_int_equal(test_n_malloc, 1);
    assert_int_equal(test_n_free, 1);
    assert_dango_ok(dango_set_allocator(NULL));
}

static void alloc_strdup_strndup(void **state)
{
    long  live = dango__alloc_live();
    char *s;

    (void)state;
    s = dango_strdup("hello", "s");
    assert_string_equal(s, "hello");
    dango_free(s);
    s = dango_strdup("", "s");
    assert_string_equal(s, "");
    dango_free(s);
    s = dango_strndup("hello", 3, "s");
    assert_string_equal(s, "hel");
    dango_free(s);
    s = dango_strndup("hi", 10, "s"); /* n past the end: stops at NUL */
    assert_string_equal(s, "hi");
    dango_free(s);
    s = dango_strndup("hello", 0, "s");
    assert_string_equal(s, "");
    dango_free(s);
    assert_int_equal(dango__alloc_live(), live);
}

/* ---------- the hook is exact under concurrency ---------- */

typedef struct test_thr {
    pthread_t thread;
    void     *ptrs[TEST_ALLOCS_PER_THR];
    int       ok;
} test_thr_t;

static void *test_alloc_thread(void *arg)
{
    test_thr_t *t = arg;

    for (int i = 0; i < TEST_ALLOCS_PER_THR; i++) {
        t->ptrs[i] = dango_malloc(16, "thr");
        t->ok += (t->ptrs[i] != NULL);
    }

    return NULL;
}

static void alloc_fail_after_is_exact_across_threads(void **state)
{
    test_thr_t thr[TEST_THREADS];
    long       live  = dango__alloc_live();
    long       limit = TEST_THREADS * TEST_ALLOCS_PER_THR / 2;
    int        ok    = 0;

    (void)state;
    memset(thr, 0, sizeof(thr));
    dango__alloc_fail_after(limit + 1);
    for (int i = 0; i < TEST_THREADS; i++) {
        assert_int_equal(
            pthread_create(&thr[i].thread, NULL, test_alloc_thread, &thr[i]),
            0);
    }

    for (int i = 0; i < TEST_THREADS; i++) {
        pthread_join(thr[i].thread, NULL);
        ok += thr[i].ok;
    }

    dango__alloc_fail_after(-1);
    assert_int_equal(ok, limit);
    assert_int_equal(dango__alloc_live(), live + limit);
    for (int i = 0; i < TEST_THREADS; i++) {
        for (int j = 0; j < TEST_ALLOCS_PER_THR; j++) {
            dango_free(thr[i].ptrs[j]);
        }
    }

    assert_int_equal(dango__alloc_live(), live);
}

int main(void)
{
#define T(_fn) cmocka_unit_test_teardown(_fn, test_teardown)
    const struct CMUnitTest tests[] = {
        T(alloc_fail_after_semantics),
        T(alloc_live_counter),
        T(alloc_calloc_zeroes),
        T(alloc_set_allocator_routes_calls),
        T(alloc_set_allocator_rejects_missing_function),
        T(alloc_strdup_strndup),
        T(alloc_fail_after_is_exact_across_threads),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
