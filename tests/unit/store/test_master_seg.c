/*
 * Unit tests of the master's segments and clients on the state object with
 * a fake clock (src/store/store_master_seg.c): mount validation and
 * idempotence, ping and remount, unmount dropping the replicas it held,
 * client expiry (segments unmounted, replicas dropped, unfinished puts
 * revoked and their regions freed only after the zombie grace), placement
 * on distinct segment names, preferred segments, and random spread.
 */
#include <stdio.h>

#include "test_master_util.h"

static void drain(ms_state_t *st, uint64_t now)
{
    assert_true(dango__store_ms_remove_match(st, NULL, 1, 1, now) >= 0);
    dango__store_ms_tick(st, now + 1000ull * 1000 * 1000);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void mount_validation(void **state)
{
    ms_state_t   *st = tm_state();
    ms_seg_desc_t d  = {1, 1, "node-a", 0x10000, MiB, "host-a"};
    ms_seg_desc_t bad;
    char          longname[300];

    (void)state;
    bad      = d;
    bad.size = 0;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    bad      = d;
    bad.base = 0;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    bad      = d;
    bad.size = 1023;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    bad      = d;
    bad.size = (1ull << 40) + 1;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    bad      = d;
    bad.base = UINT64_MAX - 100;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    bad      = d;
    bad.name = "";
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    bad.name                       = longname;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    assert_int_equal(st->nsegs, 0);
    assert_int_equal(dango_hmap_count(&st->clients), 0);

    /* Mount, then again (idempotent), by another client, other geometry. */
    assert_dango_ok(dango__store_ms_mount(st, tm_cid(1), &d, T0));
    assert_dango_ok(dango__store_ms_mount(st, tm_cid(1), &d, T0));
    assert_int_equal(st->nsegs, 1);
    assert_int_equal(st->capacity, MiB);
    assert_dango_err(DANGO_ESEGMENT_EXISTS,
                     dango__store_ms_mount(st, tm_cid(2), &d, T0));
    bad      = d;
    bad.size = 2 * MiB;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_mount(st, tm_cid(1), &bad, T0));

    /* 1 KiB and 1 TiB are the bounds. */
    bad       = d;
    bad.id_lo = 2;
    bad.size  = KiB;
    assert_dango_ok(dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    bad.id_lo = 3;
    bad.size  = 1ull << 40;
    assert_dango_ok(dango__store_ms_mount(st, tm_cid(1), &bad, T0));
    assert_int_equal(st->nsegs, 3);
    assert_int_equal(st->capacity, MiB + KiB + (1ull << 40));

    /* Unmount: unknown is fine, another client's is not. */
    assert_dango_ok(dango__store_ms_unmount(st, tm_cid(1), 9, 9, T0));
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_unmount(st, tm_cid(2), 1, 3, T0));
    assert_dango_ok(dango__store_ms_unmount(st, tm_cid(1), 1, 3, T0));
    assert_int_equal(st->nsegs, 2);
    assert_int_equal(st->max_seg_capacity, MiB);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void ping_and_remount(void **state)
{
    ms_state_t   *st   = tm_state();
    ms_seg_desc_t d[2] = {{1, 1, "node-b", 0x10000, MiB, ""},
                          {1, 2, "node-b", 0x900000, MiB, ""}};

    (void)state;
    /* A client the master does not know must remount. */
    assert_dango_err(DANGO_ENEED_REMOUNT,
                     dango__store_ms_ping(st, tm_cid(1), T0));
    assert_dango_err(DANGO_ENEED_REMOUNT,
                     dango__store_ms_ping(st, tm_cid(1), T0));
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(1), d, 2, T0));
    assert_dango_ok(dango__store_ms_ping(st, tm_cid(1), T0));
    assert_int_equal(st->nsegs, 2);

    /* Remount again is a no-op; a pure client remounts nothing. */
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(1), d, 2, T0));
    assert_int_equal(st->nsegs, 2);
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(2), NULL, 0, T0));
    assert_dango_ok(dango__store_ms_ping(st, tm_cid(2), T0));

    /* Another client's segment id. */
    assert_dango_err(DANGO_ESEGMENT_EXISTS,
                     dango__store_ms_remount(st, tm_cid(3), d, 1, T0));

    /* A client that introduces itself with a mount is registered. */
    tm_mount(st, 4, 4, "node-c", MiB, T0);
    assert_dango_ok(dango__store_ms_ping(st, tm_cid(4), T0));

    /* Same id, new geometry: the old segment is replaced. */
    tm_put(st, 1, "on-b", 100, T0);
    d[0].size = 2 * MiB;
    d[1].size = 2 * MiB;
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(1), d, 2, T0));
    assert_int_equal(st->capacity, 5 * MiB);
    if (tm_obj(st, "on-b") != NULL) {
        /* It was placed on node-c. */
        assert_string_equal(tm_obj(st, "on-b")->cur->rep[0].seg->name->name,
                            "node-c");
    }
    drain(st, T0 + 100000);
}

static void unmount_drops_replicas(void **state)
{
    ms_state_t  *st = tm_state();
    ms_put_cfg_t cfg;
    const char  *pa[1] = {"node-a"};
    ms_ver_t    *v;
    ms_ver_t    *pend;
    uint64_t     pend_id;
    ms_obj_t    *o;

    (void)state;
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    tm_mount(st, 2, 2, "node-b", MiB, T0);
    memset(&cfg, 0, sizeof(cfg));

    /* "both" on both nodes, "only-a" on node-a, "flight-a" in flight on
     * node-a, "upsert" complete on both with a pending version on a. */
    cfg.replica_num = 2;
    assert_dango_ok(tm_put_start_cfg(st, 1, "both", 100, &cfg, 0, T0, &v));
    assert_int_equal(v->nrep, 2);
    assert_dango_ok(tm_put_end(st, 1, "both", v->put_id, 0, T0));
    assert_dango_ok(tm_put_start_cfg(st, 1, "upsert", 100, &cfg, 0, T0, &v));
    assert_dango_ok(tm_put_end(st, 1, "upsert", v->put_id, 0, T0));
    cfg.replica_num = 1;
    cfg.preferred   = pa;
    cfg.npreferred  = 1;
    assert_dango_ok(tm_put_start_cfg(st, 1, "only-a", 100, &cfg, 0, T0, &v));
    assert_dango_ok(tm_put_end(st, 1, "only-a", v->put_id, 0, T0));
    assert_dango_ok(
        tm_put_start_cfg(st, 1, "flight-a", 100, &cfg, 0, T0, &pend));
    pend_id = pend->put_id; /* pend goes with the node */
    assert_dango_ok(tm_put_start_cfg(st, 1, "upsert", 100, &cfg, 1, T0, &v));
    assert_int_equal(st->ninflight, 2);

    assert_dango_ok(dango__store_ms_unmount(st, tm_cid(1), 1, 1, T0));
    tm_check(st);
    assert_int_equal(st->nsegs, 1);

    assert_dango_ok(tm_get(st, "both", T0, &o));
    assert_int_equal(o->cur->nlive, 1);
    assert_string_equal(o->cur->rep[0].seg != NULL
                            ? o->cur->rep[0].seg->name->name
                            : o->cur->rep[1].seg->name->name,
                        "node-b");
    assert_dango_err(DANGO_ENO_OBJECT, tm_get(st, "only-a", T0, NULL));
    assert_dango_err(DANGO_ENO_OBJECT, tm_get(st, "flight-a", T0, NULL));
    assert_dango_err(DANGO_ENO_OBJECT,
                     tm_put_end(st, 1, "flight-a", pend_id, 0, T0));
    /* The upsert lost its only region: the old value stays. */
    o = tm_obj(st, "upsert");
    assert_null(o->pend);
    assert_int_equal(o->cur->nlive, 1);
    assert_int_equal(st->ninflight, 0);
    assert_int_equal(dango_hmap_count(&st->objs), 2);

    /* The second node goes too: nothing is left. */
    assert_dango_ok(dango__store_ms_unmount(st, tm_cid(2), 2, 2, T0));
    assert_int_equal(dango_hmap_count(&st->objs), 0);
    assert_int_equal(st->capacity, 0);
    assert_int_equal(st->used, 0);
    assert_dango_err(DANGO_ENOSPC, tm_put_start(st, 1, "x", 1, T0, NULL));
    drain(st, T0);
}

static void client_expiry(void **state)
{
    ms_state_t  *st = tm_state();
    ms_put_cfg_t cfg;
    const char  *pa[1] = {"node-a"};
    const char  *pb[1] = {"node-b"};
    ms_ver_t    *zv;
    ms_seg_t    *seg_a;
    uint64_t     now;

    (void)state;
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    tm_mount(st, 2, 2, "node-b", MiB, T0);
    seg_a = st->segs[0];
    memset(&cfg, 0, sizeof(cfg));
    cfg.preferred  = pa;
    cfg.npreferred = 1;

    /* Client 3 (no segment) starts a put into node-a and goes silent. */
    assert_dango_ok(tm_put_start_cfg(st, 3, "zombie", 100, &cfg, 0, T0, &zv));
    assert_ptr_equal(zv->rep[0].seg, seg_a);
    /* Client 2's data on node-b, client 1's on node-a. */
    cfg.preferred = pb;
    assert_dango_ok(tm_put_start_cfg(st, 2, "on-b", 100, &cfg, 0, T0, &zv));
    assert_dango_ok(tm_put_end(st, 2, "on-b", zv->put_id, 0, T0));
    cfg.preferred = pa;
    assert_dango_ok(tm_put_start_cfg(st, 1, "on-a", 100, &cfg, 0, T0, &zv));
    assert_dango_ok(tm_put_end(st, 1, "on-a", zv->put_id, 0, T0));

    /* Everyone but client 3 keeps pinging. */
    for (now = T0 + 1000; now < T0 + 10000; now += 1000) {
        assert_dango_ok(dango__store_ms_ping(st, tm_cid(1), now));
        assert_dango_ok(dango__store_ms_ping(st, tm_cid(2), now));
        assert_int_equal(dango__store_ms_monitor(st, now), 0);
    }
    assert_dango_ok(dango__store_ms_ping(st, tm_cid(1), T0 + 10000));
    assert_dango_ok(dango__store_ms_ping(st, tm_cid(2), T0 + 10000));
    assert_int_equal(dango__store_ms_monitor(st, T0 + 9999), 0);
    assert_int_equal(dango__store_ms_monitor(st, T0 + 10000), 1);
    assert_int_equal(st->c.clients_expired, 1);
    assert_int_equal(st->c.zombie_puts, 1);

    /* Its put is revoked, but the region is held for the grace period. */
    assert_null(tm_obj(st, "zombie"));
    assert_int_equal(st->ninflight, 0);
    assert_int_equal(st->nparked, 1);
    assert_int_equal(seg_a->used, 2 * 256);
    dango__store_ms_tick(st, T0 + 10000 + 29999);
    assert_int_equal(seg_a->used, 2 * 256);
    dango__store_ms_tick(st, T0 + 10000 + 30000);
    assert_int_equal(seg_a->used, 256);
    assert_int_equal(st->nparked, 0);
    tm_check(st);

    /* Client 2 goes silent: node-b is unmounted and its data dropped. */
    now = T0 + 40000;
    assert_dango_ok(dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(dango__store_ms_monitor(st, now), 1);
    assert_int_equal(st->nsegs, 1);
    assert_dango_err(DANGO_ENO_OBJECT, tm_get(st, "on-b", now, NULL));
    assert_dango_ok(tm_get(st, "on-a", now, NULL));

    /* When it comes back it is told to remount. */
    assert_dango_err(DANGO_ENEED_REMOUNT,
                     dango__store_ms_ping(st, tm_cid(2), now));
    drain(st, now + 100000);
}

static void zombie_region_on_expired_node(void **state)
{
    ms_state_t *st = tm_state();
    ms_ver_t   *v;

    (void)state;
    /* Client 1's own put into its own segment: expiry drops both. */
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    assert_dango_ok(tm_put_start(st, 1, "mine", 100, T0, &v));
    assert_int_equal(dango__store_ms_monitor(st, T0 + 10000), 1);
    assert_int_equal(st->nparked, 0); /* its regions went with the node */
    assert_int_equal(st->nsegs, 0);
    assert_int_equal(dango_hmap_count(&st->objs), 0);
    drain(st, T0 + 20000);
}

static void distinct_names_and_preferred(void **state)
{
    ms_state_t  *st = tm_state();
    ms_put_cfg_t cfg;
    const char  *pref[2] = {"node-c", "nowhere"};
    ms_ver_t    *v;
    char         k[16];

    (void)state;
    /* node-a has two segments, node-b and node-c one each. */
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    tm_mount(st, 1, 2, "node-a", MiB, T0);
    tm_mount(st, 2, 3, "node-b", MiB, T0);
    tm_mount(st, 3, 4, "node-c", MiB, T0);
    memset(&cfg, 0, sizeof(cfg));

    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "r3-%d", i);
        cfg.replica_num = 3;
        assert_dango_ok(tm_put_start_cfg(st, 1, k, 100, &cfg, 0, T0, &v));
        assert_int_equal(v->nrep, 3);
        assert_ptr_not_equal(v->rep[0].seg->name, v->rep[1].seg->name);
        assert_ptr_not_equal(v->rep[0].seg->name, v->rep[2].seg->name);
        assert_ptr_not_equal(v->rep[1].seg->name, v->rep[2].seg->name);
        assert_dango_ok(tm_put_end(st, 1, k, v->put_id, 0, T0));
    }
    assert_int_equal(st->c.partial_allocs, 0);

    /* More replicas than names: best effort, counted. */
    cfg.replica_num = 5;
    assert_dango_ok(tm_put_start_cfg(st, 1, "r5", 100, &cfg, 0, T0, &v));
    assert_int_equal(v->nrep, 3);
    assert_int_equal(st->c.partial_allocs, 1);

    /* Preferred names first, unknown ones skipped. */
    cfg.replica_num = 2;
    cfg.preferred   = pref;
    cfg.npreferred  = 2;
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof(k), "p-%d", i);
        assert_dango_ok(tm_put_start_cfg(st, 1, k, 100, &cfg, 0, T0, &v));
        assert_int_equal(v->nrep, 2);
        assert_string_equal(v->rep[0].seg->name->name, "node-c");
        assert_string_not_equal(v->rep[1].seg->name->name, "node-c");
    }
    drain(st, T0 + 700000);
}

static void random_spread(void **state)
{
    ms_state_t *st = tm_state();
    ms_ver_t   *v;
    size_t      count[4] = {0};
    char        k[16];

    (void)state;
    for (uint64_t i = 1; i <= 4; i++) {
        char name[16];

        snprintf(name, sizeof(name), "node-%llu", (unsigned long long)i);
        tm_mount(st, i, i, name, MiB, T0);
    }

    for (int i = 0; i < 400; i++) {
        snprintf(k, sizeof(k), "s-%d", i);
        assert_dango_ok(tm_put_start(st, 1, k, 100, T0, &v));
        count[v->rep[0].seg->idx]++;
        assert_int_equal(ms_rep_addr(&v->rep[0]) - v->rep[0].seg->base,
                         v->rep[0].off);
    }
    for (int i = 0; i < 4; i++) {
        assert_true(count[i] > 40);
    }
    drain(st, T0 + 700000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(mount_validation, tm_teardown),
        cmocka_unit_test_teardown(ping_and_remount, tm_teardown),
        cmocka_unit_test_teardown(unmount_drops_replicas, tm_teardown),
        cmocka_unit_test_teardown(client_expiry, tm_teardown),
        cmocka_unit_test_teardown(zombie_region_on_expired_node, tm_teardown),
        cmocka_unit_test_teardown(distinct_names_and_preferred, tm_teardown),
        cmocka_unit_test_teardown(random_spread, tm_teardown),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
