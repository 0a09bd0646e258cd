/*
 * Unit tests of the intrusive hash map the master indexes its objects with
 * (src/common/hmap.c): many keys, binary keys, incremental growth and
 * shrinking, lookups in the middle of a resize, iteration that removes,
 * and a failed resize allocation.
 */
#include <stdio.h>
#include <string.h>

#include "dango_test.h"

#include "common/alloc.h"
#include "common/hmap.h"

typedef struct item {
    dango_hmap_node_t node;
    char              key[24];
    int               seen;
} item_t;

static item_t *items_make(size_t n)
{
    item_t *v = calloc(n, sizeof(*v));

    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(v[i].key, sizeof(v[i].key), "key-%zu", i);

        v[i].node.key     = v[i].key;
        v[i].node.key_len = (size_t)len;
        v[i].node.hash    = dango_hmap_hash(v[i].key, (size_t)len);
    }
    return v;
}

static item_t *find(dango_hmap_t *m, const char *k)
{
    dango_hmap_node_t *n =
        dango_hmap_find(m, k, strlen(k), dango_hmap_hash(k, strlen(k)));

    return (n != NULL) ? dango_container_of(n, item_t, node) : NULL;
}

static void many_keys(void **state)
{
    const size_t n = 300000;
    item_t      *v = items_make(n);
    dango_hmap_t m;
    char         k[32];

    (void)state;
    assert_dango_ok(dango_hmap_init(&m, 0));
    for (size_t i = 0; i < n; i++) {
        dango_hmap_insert(&m, &v[i].node);
        /* Everything inserted so far is found, also mid-resize. */
        if ((i % 9973) == 0) {
            for (size_t j = 0; j <= i; j += 97) {
                assert_ptr_equal(find(&m, v[j].key), &v[j]);
            }
        }
    }
    assert_int_equal(dango_hmap_count(&m), n);
    assert_null(find(&m, "key-x"));

    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(find(&m, v[i].key), &v[i]);
    }

    /* Remove the even ones. */
    for (size_t i = 0; i < n; i += 2) {
        dango_hmap_remove(&m, &v[i].node);
    }
    assert_int_equal(dango_hmap_count(&m), n / 2);
    for (size_t i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "key-%zu", i);
        if ((i % 2) == 0) {
            assert_null(find(&m, k));
        } else {
            assert_ptr_equal(find(&m, k), &v[i]);
        }
    }

    /* Remove the rest: the table shrinks back (incrementally). */
    for (size_t i = 1; i < n; i += 2) {
        dango_hmap_remove(&m, &v[i].node);
    }
    while (dango_hmap_rehash_step(&m, 1000)) {
    }
    assert_int_equal(dango_hmap_count(&m), 0);
    assert_true(m.mask[0] + 1 <= 1024);

    dango_hmap_cleanup(&m);
    free(v);
}

static void growth_is_incremental(void **state)
{
    const size_t n = 4096;
    item_t      *v = items_make(n + 1);
    dango_hmap_t m;
    size_t       i;

    (void)state;
    assert_dango_ok(dango_hmap_init(&m, n));
    for (i = 0; i < n - 1; i++) {
        dango_hmap_insert(&m, &v[i].node);
    }
    assert_null(m.tab[1]);

    /* The insert that reaches load 1 starts a resize and moves little. */
    dango_hmap_insert(&m, &v[i++].node);
    assert_non_null(m.tab[1]);
    assert_true(m.rehash < 64);

    /* Lookups see every key in both arrays while it runs. */
    for (size_t j = 0; j < i; j++) {
        assert_ptr_equal(find(&m, v[j].key), &v[j]);
    }

    /* Iteration pauses the resize and sees each node once. */
    {
        dango_hmap_iter_t  it;
        dango_hmap_node_t *node;
        size_t             seen   = 0;
        size_t             before = m.rehash;

        dango_hmap_iter_begin(&m, &it);
        while ((node = dango_hmap_iter_next(&it)) != NULL) {
            item_t *x = dango_container_of(node, item_t, node);

            assert_int_equal(x->seen, 0);
            x->seen = 1;
            seen++;
            assert_int_equal(dango_hmap_rehash_step(&m, 10), 1);
        }
        dango_hmap_iter_end(&it);
        assert_int_equal(seen, i);
        assert_int_equal(m.rehash, before);
    }

    while (dango_hmap_rehash_step(&m, 100)) {
    }
    assert_null(m.tab[1]);
    assert_int_equal(m.mask[0] + 1, 2 * n);
    for (size_t j = 0; j < i; j++) {
        assert_ptr_equal(find(&m, v[j].key), &v[j]);
    }

    dango_hmap_cleanup(&m);
    free(v);
}

static void iterate_and_remove(void **state)
{
    const size_t       n = 5000;
    item_t            *v = items_make(n);
    dango_hmap_t       m;
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    size_t             seen = 0;

    (void)state;
    assert_dango_ok(dango_hmap_init(&m, 0));
    for (size_t i = 0; i < n; i++) {
        dango_hmap_insert(&m, &v[i].node);
    }

    /* Remove every node as it is returned, resize or not. */
    dango_hmap_iter_begin(&m, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        dango_hmap_remove(&m, node);
        seen++;
    }
    dango_hmap_iter_end(&it);
    assert_int_equal(seen, n);
    assert_int_equal(dango_hmap_count(&m), 0);

    dango_hmap_cleanup(&m);
    free(v);
}

static void binary_keys(void **state)
{
    static const char a[] = {'k', '\0', 'x'};
    static const char b[] = {'k', '\0', 'y'};
    dango_hmap_node_t na  = {NULL, dango_hmap_hash(a, 3), a, 3};
    dango_hmap_node_t nb  = {NULL, dango_hmap_hash(b, 3), b, 3};
    dango_hmap_node_t nc  = {NULL, dango_hmap_hash(a, 1), a, 1};
    dango_hmap_t      m;

    (void)state;
    assert_dango_ok(dango_hmap_init(&m, 0));
    dango_hmap_insert(&m, &na);
    dango_hmap_insert(&m, &nb);
    dango_hmap_insert(&m, &nc);
    assert_ptr_equal(dango_hmap_find(&m, a, 3, na.hash), &na);
    assert_ptr_equal(dango_hmap_find(&m, b, 3, nb.hash), &nb);
    assert_ptr_equal(dango_hmap_find(&m, a, 1, nc.hash), &nc);
    assert_null(dango_hmap_find(&m, a, 2, dango_hmap_hash(a, 2)));
    dango_hmap_cleanup(&m);
}

static void oom_on_growth(void **state)
{
    const size_t n = 64;
    item_t      *v = items_make(n);
    dango_hmap_t m;

    (void)state;
    assert_dango_ok(dango_hmap_init(&m, 16));
    for (size_t i = 0; i < 15; i++) {
        dango_hmap_insert(&m, &v[i].node);
    }

    /* The growth allocation fails: inserts still work, growth is later. */
    dango__alloc_fail_after(1);
    dango_hmap_insert(&m, &v[15].node);
    dango__alloc_fail_after(-1);
    assert_null(m.tab[1]);
    for (size_t i = 16; i < n; i++) {
        dango_hmap_insert(&m, &v[i].node);
    }
    while (dango_hmap_rehash_step(&m, 100)) {
    }
    assert_true(m.mask[0] + 1 > 16);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(find(&m, v[i].key), &v[i]);
    }

    dango_hmap_cleanup(&m);
    dango__alloc_fail_after(1);
    assert_dango_err(DANGO_ENOMEM, dango_hmap_init(&m, 0));
    dango__alloc_fail_after(-1);
    free(v);
}

static int teardown(void **state)
{
    (void)state;
    dango__alloc_fail_after(-1);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(many_keys, teardown),
        cmocka_unit_test_teardown(growth_is_incremental, teardown),
        cmocka_unit_test_teardown(iterate_and_remove, teardown),
        cmocka_unit_test_teardown(binary_keys, teardown),
        cmocka_unit_test_teardown(oom_on_growth, teardown),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
