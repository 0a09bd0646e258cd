/*
 * Unit tests of eviction and pins on the master state with a fake clock
 * (spec store.md §3.2-3.4): approximate LRU by lease deadline, leased and
 * hard-pinned objects never evicted, soft-pinned ones only in the second
 * pass (and only when allowed), expired soft pins, and allocation failure
 * followed by a synchronous pass, one retry and DANGO_ENOSPC.
 *
 * Geometry: one segment of 100 records of 1024 bytes (key "k%03d", value
 * 896 bytes, so 128 + 896 per record).
 */
#include <stdio.h>

#include "test_master_util.h"

#define REC_VALUE 896
#define NREC      100

static ms_state_t *state_with(int evict_soft_pinned)
{
    ms_params_t p;
    ms_state_t *st;

    dango__store_ms_params_default(&p);
    p.seed              = 7;
    p.evict_soft_pinned = evict_soft_pinned;
    st                  = tm_state_with(&p);
    tm_mount(st, 1, 1, "node-a", NREC * 1024, T0);
    assert_int_equal(st->capacity, NREC * 1024);
    return st;
}

static const char *kname(int i)
{
    static char buf[8][16];
    static int  next;
    char       *k = buf[next++ % 8];

    snprintf(k, 16, "k%03d", i);
    return k;
}

/* Puts k<from>..k<to-1>, key i at T0 + i (its lease deadline). */
static void fill(ms_state_t *st, int from, int to, const ms_put_cfg_t *cfg)
{
    for (int i = from; i < to; i++) {
        ms_ver_t *v;

        if (cfg != NULL) {
            assert_dango_ok(tm_put_start_cfg(st, 1, kname(i), REC_VALUE, cfg, 0,
                                             T0 + i, &v));
        } else {
            assert_dango_ok(
                tm_put_start(st, 1, kname(i), REC_VALUE, T0 + i, &v));
        }
        assert_int_equal(v->rec_len, 1024);
        assert_dango_ok(tm_put_end(st, 1, kname(i), v->put_id, 0, T0 + i));
    }
}

static void drain(ms_state_t *st, uint64_t now)
{
    assert_true(dango__store_ms_remove_match(st, NULL, 1, 1, now) >= 0);
    dango__store_ms_tick(st, now + 1000ull * 1000 * 1000);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void lru_by_lease(void **state)
{
    ms_state_t *st = state_with(1);

    (void)state;
    /* At the watermark (not above) nothing happens. */
    fill(st, 0, 90, NULL);
    dango__store_ms_tick(st, T0 + 89);
    assert_int_equal(st->c.evict_attempts, 0);

    fill(st, 90, 95, NULL);
    /* Reading k000..k004 makes them the most recently used. */
    for (int i = 0; i < 5; i++) {
        assert_dango_ok(tm_get(st, kname(i), T0 + 1000, NULL));
    }

    /* 95 % used: target 0.95 - 0.90 + 0.05 = 10 % of 95 objects. */
    dango__store_ms_tick(st, T0 + 20000);
    assert_int_equal(st->c.evict_attempts, 1);
    assert_int_equal(st->c.evicted_keys, 10);
    assert_int_equal(st->c.evicted_bytes, 10 * 1024);
    for (int i = 0; i < 95; i++) {
        if ((i >= 5) && (i < 15)) {
            assert_null(tm_obj(st, kname(i)));
        } else {
            assert_non_null(tm_obj(st, kname(i)));
        }
    }
    assert_int_equal(st->used, 85 * 1024);
    tm_check(st);

    /* Under the watermark again: no more passes. */
    dango__store_ms_tick(st, T0 + 20010);
    assert_int_equal(st->c.evict_attempts, 1);
    drain(st, T0 + 30000);
}

static void leased_never_evicted(void **state)
{
    ms_state_t *st = state_with(1);

    (void)state;
    fill(st, 0, 95, NULL);
    for (int i = 0; i < 95; i++) {
        assert_int_equal(tm_exist(st, kname(i), T0 + 100), 1);
    }

    dango__store_ms_tick(st, T0 + 200);
    assert_int_equal(st->c.evict_attempts, 1);
    assert_int_equal(st->c.evicted_keys, 0);
    assert_int_equal(dango_hmap_count(&st->objs), 95);

    /* A fruitless pass is not repeated at once. */
    dango__store_ms_tick(st, T0 + 250);
    assert_int_equal(st->c.evict_attempts, 1);
    dango__store_ms_tick(st, T0 + 10099);
    assert_int_equal(st->c.evict_attempts, 2);
    assert_int_equal(st->c.evicted_keys, 0);

    /* Leases over (and the pause after the last pass): evicted. */
    dango__store_ms_tick(st, T0 + 10100 + MS_EVICT_IDLE_MS);
    assert_int_equal(st->c.evicted_keys, 10);
    drain(st, T0 + 30000);
}

static void hard_pin_never_evicted(void **state)
{
    ms_state_t  *st = state_with(1);
    ms_put_cfg_t cfg;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cfg.hard_pin = 1;
    fill(st, 0, 95, &cfg);
    dango__store_ms_tick(st, T0 + 20000);
    assert_int_equal(st->c.evicted_keys, 0);
    assert_int_equal(dango_hmap_count(&st->objs), 95);

    /* And a put that finds no room cannot make room either. */
    fill(st, 95, 100, &cfg);
    assert_dango_err(DANGO_ENOSPC,
                     tm_put_start(st, 1, "extra", REC_VALUE, T0 + 40000, NULL));
    assert_int_equal(st->c.evict_attempts, 2);
    assert_int_equal(st->c.evicted_keys, 0);
    drain(st, T0 + 50000);
}

static void soft_pin_second_pass(void **state)
{
    ms_put_cfg_t cfg;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cfg.soft_pin = DANGO_STORE_SOFT_PIN_ENABLE;

    for (int allowed = 1; allowed >= 0; allowed--) {
        ms_state_t *st = state_with(allowed);

        fill(st, 0, 2, NULL);
        fill(st, 2, 95, &cfg);
        assert_int_equal(st->soft_pinned, 93);
        assert_int_equal(tm_obj(st, "k002")->soft_pin_timeout,
                         T0 + 2 + 30 * 60 * 1000);

        /* Pass 1 finds 2 plain objects, short of the lower bound (5):
         * pass 2 takes soft-pinned ones up to the target (10). */
        dango__store_ms_tick(st, T0 + 20000);
        assert_null(tm_obj(st, "k000"));
        assert_null(tm_obj(st, "k001"));
        if (allowed) {
            assert_int_equal(st->c.evicted_keys, 10);
            for (int i = 2; i < 10; i++) {
                assert_null(tm_obj(st, kname(i)));
            }
            assert_non_null(tm_obj(st, "k010"));
            assert_int_equal(st->soft_pinned, 85);
        } else {
            assert_int_equal(st->c.evicted_keys, 2);
            assert_non_null(tm_obj(st, "k002"));
            assert_int_equal(st->soft_pinned, 93);
        }
        drain(st, T0 + 30000);
    }
}

static void soft_pin_expiry_and_actions(void **state)
{
    ms_state_t  *st = state_with(0);
    ms_put_cfg_t cfg;
    ms_ver_t    *v;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cfg.soft_pin        = DANGO_STORE_SOFT_PIN_ENABLE;
    cfg.soft_pin_ttl_ms = 1000;
    fill(st, 0, 95, &cfg);
    assert_int_equal(st->soft_pinned, 95);

    /* The pins have run out: ordinary cache, evicted in pass 1. */
    dango__store_ms_tick(st, T0 + 20000);
    assert_int_equal(st->c.evicted_keys, 10);
    assert_int_equal(st->soft_pinned, 0);

    /* ENABLE, then PRESERVE keeps the deadline, DISABLE clears it. */
    cfg.soft_pin_ttl_ms = 0;
    assert_dango_ok(tm_put_start_cfg(st, 1, "p", 10, &cfg, 0, T0 + 30000, &v));
    assert_dango_ok(tm_put_end(st, 1, "p", v->put_id, 0, T0 + 30000));
    assert_int_equal(tm_obj(st, "p")->soft_pin_timeout,
                     T0 + 30000 + 30 * 60 * 1000);
    cfg.soft_pin = DANGO_STORE_SOFT_PIN_PRESERVE;
    assert_dango_ok(tm_put_start_cfg(st, 1, "p", 10, &cfg, 1, T0 + 31000, &v));
    assert_dango_ok(tm_put_end(st, 1, "p", v->put_id, 0, T0 + 31000));
    assert_int_equal(tm_obj(st, "p")->soft_pin_timeout,
                     T0 + 30000 + 30 * 60 * 1000);
    assert_int_equal(st->soft_pinned, 1);
    cfg.soft_pin = DANGO_STORE_SOFT_PIN_DISABLE;
    assert_dango_ok(tm_put_start_cfg(st, 1, "p", 10, &cfg, 1, T0 + 32000, &v));
    assert_dango_ok(tm_put_end(st, 1, "p", v->put_id, 0, T0 + 32000));
    assert_int_equal(tm_obj(st, "p")->soft_pin_timeout, 0);
    assert_int_equal(st->soft_pinned, 0);

    /* Reads never extend a pin. */
    assert_dango_ok(tm_get(st, "p", T0 + 33000, NULL));
    assert_int_equal(tm_obj(st, "p")->soft_pin_timeout, 0);
    cfg.soft_pin        = DANGO_STORE_SOFT_PIN_ENABLE;
    cfg.soft_pin_ttl_ms = 5000;
    assert_dango_ok(tm_put_start_cfg(st, 1, "p", 10, &cfg, 1, T0 + 34000, &v));
    assert_dango_ok(tm_put_end(st, 1, "p", v->put_id, 0, T0 + 34000));
    assert_int_equal(tm_obj(st, "p")->soft_pin_timeout, T0 + 39000);
    assert_dango_ok(tm_get(st, "p", T0 + 38000, NULL));
    assert_int_equal(tm_obj(st, "p")->soft_pin_timeout, T0 + 39000);
    drain(st, T0 + 40000);
}

static void alloc_failure_evicts_and_retries(void **state)
{
    ms_state_t  *st = state_with(1);
    ms_key_t     keys[2];
    uint64_t     sizes[2] = {REC_VALUE, REC_VALUE};
    ms_ver_t    *vers[2];
    int          status[2];
    ms_put_cfg_t cfg;

    (void)state;
    fill(st, 0, NREC, NULL);
    assert_int_equal(st->used, st->capacity);

    /* Full: the put runs a pass (target 1.00 - 0.90 + 0.05 = 15 %), then
     * retries and succeeds. */
    assert_dango_ok(tm_put_start(st, 1, "new", REC_VALUE, T0 + 20000, NULL));
    assert_int_equal(st->c.evict_attempts, 1);
    assert_int_equal(st->c.evicted_keys, 15);
    assert_int_equal(st->c.alloc_failures, 0);
    assert_null(tm_obj(st, "k000"));
    assert_non_null(tm_obj(st, "k015"));

    /* Fill up again and lease everything. */
    fill(st, 100, 114, NULL);
    assert_int_equal(st->used, st->capacity);
    for (int i = 15; i < 114; i++) {
        assert_int_equal(tm_exist(st, kname(i), T0 + 20100), 1);
    }

    /* Nothing evictable: ENOSPC, counted, and the next pass waits. */
    assert_dango_err(DANGO_ENOSPC,
                     tm_put_start(st, 1, "x", REC_VALUE, T0 + 20100, NULL));
    assert_int_equal(st->c.evict_attempts, 2);
    assert_int_equal(st->c.alloc_failures, 1);
    assert_int_equal(st->need_evict, 1);
    assert_dango_err(DANGO_ENOSPC,
                     tm_put_start(st, 1, "y", REC_VALUE, T0 + 20100, NULL));
    assert_int_equal(st->c.evict_attempts, 2);
    assert_null(tm_obj(st, "x"));

    /* A batch makes at most one pass. */
    keys[0] = tm_key("b0");
    keys[1] = tm_key("b1");
    memset(&cfg, 0, sizeof(cfg));
    assert_dango_ok(dango__store_ms_put_start(st, tm_cid(1), 2, keys, sizes,
                                              NULL, &cfg, 0, T0 + 20300, status,
                                              vers));
    assert_dango_err(DANGO_ENOSPC, status[0]);
    assert_dango_err(DANGO_ENOSPC, status[1]);
    assert_int_equal(st->c.evict_attempts, 3);

    /* Larger than any segment: no pass at all. */
    assert_dango_err(DANGO_ENOSPC, tm_put_start(st, 1, "huge", NREC * 1024,
                                                T0 + 30400, NULL));
    assert_int_equal(st->c.evict_attempts, 3);

    /* The failure flag makes the next tick evict once leases are over. */
    dango__store_ms_tick(st, T0 + 30500);
    assert_int_equal(st->need_evict, 0);
    assert_true(st->c.evicted_keys > 15);
    drain(st, T0 + 40000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(lru_by_lease, tm_teardown),
        cmocka_unit_test_teardown(leased_never_evicted, tm_teardown),
        cmocka_unit_test_teardown(hard_pin_never_evicted, tm_teardown),
        cmocka_unit_test_teardown(soft_pin_second_pass, tm_teardown),
        cmocka_unit_test_teardown(soft_pin_expiry_and_actions, tm_teardown),
        cmocka_unit_test_teardown(alloc_failure_evicts_and_retries,
                                  tm_teardown),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
