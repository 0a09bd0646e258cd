/*
 * Unit tests of the master's object operations on the state object with a
 * fake clock (src/store/store_master_obj.c): the put state machine (start,
 * end, revoke, readers see only complete objects, wrong client, idempotent
 * end, exists keeps the object), stale put preemption and release, puts
 * reclaimed after the release timeout, upsert (old value readable until
 * the end, swap, deferred free under lease, revoke, hard pin kept), leases,
 * hard pin and remove, report-bad, list paging, regex remove, the location
 * cache (upsert end and forced removes wait for its window), batch limits
 * and duplicate keys. Every test ends with all space returned.
 */
#include <stdio.h>
#include <stdlib.h>

#include "test_master_util.h"

/* ---------- helpers ---------- */

static ms_state_t *state_one_seg(uint64_t size)
{
    ms_state_t *st = tm_state();

    tm_mount(st, 1, 1, "node-a", size, T0);
    return st;
}

static void drain(ms_state_t *st, uint64_t now)
{
    assert_true(dango__store_ms_remove_match(st, NULL, 1, 1, now) >= 0);
    dango__store_ms_tick(st, now + 1000ull * 1000 * 1000);
    tm_check_empty(st);
}

/* ---------- tests ---------- */

static void put_state_machine(void **state)
{
    ms_state_t *st = state_one_seg(MiB);
    ms_obj_t   *o;
    ms_ver_t   *v;
    ms_ver_t   *v2;
    uint64_t    now = T0;

    (void)state;
    assert_dango_ok(tm_put_start(st, 1, "a", 100, now, &v));
    assert_non_null(v);
    assert_int_equal(v->nrep, 1);
    assert_int_equal(v->rep[0].status, DANGO_STORE_REPLICA_PROCESSING);
    assert_int_equal(v->rec_len, dango_store_rec_size(1, 100));
    assert_int_equal(ms_rep_addr(&v->rep[0]) % 64, 0);
    assert_int_equal(st->ninflight, 1);

    /* Invisible to readers while in flight. */
    assert_dango_err(DANGO_ENOT_READY, tm_get(st, "a", now, NULL));
    assert_int_equal(tm_exist(st, "a", now), 0);
    assert_dango_err(DANGO_ENOT_READY, tm_remove(st, "a", 1, now));

    /* A second put of the key while the first is young. */
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     tm_put_start(st, 2, "a", 100, now, NULL));

    /* End checks: unknown key, wrong put, wrong client. */
    assert_dango_err(DANGO_ENO_OBJECT, tm_put_end(st, 1, "zz", 1, 0, now));
    assert_dango_err(DANGO_EINVALID_WRITE,
                     tm_put_end(st, 1, "a", v->put_id + 1, 0, now));
    assert_dango_err(DANGO_EILLEGAL_CLIENT,
                     tm_put_end(st, 2, "a", v->put_id, 0, now));
    assert_dango_err(DANGO_EILLEGAL_CLIENT,
                     tm_put_end(st, 2, "a", v->put_id, 1, now));

    now += 5;
    assert_dango_ok(tm_put_end(st, 1, "a", v->put_id, 0, now));
    assert_int_equal(st->ninflight, 0);
    o = tm_obj(st, "a");
    assert_int_equal(o->lease_timeout, now); /* zero-length lease */
    assert_int_equal(v->rep[0].status, DANGO_STORE_REPLICA_COMPLETE);

    /* Idempotent retry of the end; a revoke of it is refused. */
    assert_dango_ok(tm_put_end(st, 1, "a", v->put_id, 0, now));
    assert_dango_err(DANGO_EILLEGAL_CLIENT,
                     tm_put_end(st, 2, "a", v->put_id, 0, now));
    assert_dango_err(DANGO_EINVALID_WRITE,
                     tm_put_end(st, 1, "a", v->put_id, 1, now));

    /* Readers see it and get a lease. */
    assert_dango_ok(tm_get(st, "a", now, &o));
    assert_ptr_equal(o->cur, v);
    assert_int_equal(o->cur->size, 100);
    assert_int_equal(o->cur->checksum, 0x5eed);
    assert_int_equal(o->lease_timeout, now + 10000);
    assert_int_equal(tm_exist(st, "a", now), 1);

    /* Exists: the stored object is untouched. */
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     tm_put_start(st, 2, "a", 300, now + 100000, &v2));
    assert_null(v2);
    assert_ptr_equal(tm_obj(st, "a")->cur, v);
    assert_null(tm_obj(st, "a")->pend);

    /* Revoke of a new key: regions freed, object gone. */
    assert_dango_ok(tm_put_start(st, 1, "b", 1000, now, &v));
    assert_dango_ok(tm_put_end(st, 1, "b", v->put_id, 1, now));
    assert_null(tm_obj(st, "b"));
    assert_dango_err(DANGO_ENO_OBJECT, tm_get(st, "b", now, NULL));
    assert_dango_err(DANGO_ENO_OBJECT, tm_put_end(st, 1, "b", 1, 1, now));
    tm_check(st);
    assert_int_equal(st->used, 256); /* only "a": 64 + 64 + 100, rounded */

    /* Remove while leased, then after the lease. */
    assert_dango_err(DANGO_ELEASE_HELD, tm_remove(st, "a", 0, now + 9999));
    assert_dango_ok(tm_remove(st, "a", 0, now + 10000));
    assert_dango_err(DANGO_ENO_OBJECT, tm_remove(st, "a", 0, now + 10000));
    assert_int_equal(dango_hmap_count(&st->objs), 0);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void put_validation(void **state)
{
    ms_state_t       *st = state_one_seg(MiB);
    ms_put_cfg_t      cfg;
    char             *longkey;
    ms_key_t          keys[3];
    uint64_t          sizes[3] = {10, 10, 10};
    ms_ver_t         *vers[3];
    int               status[3];
    static const char nul_key[] = {'a', '\0', 'b'};

    (void)state;
    longkey = malloc(DANGO_STORE_KEY_MAX + 2);
    memset(longkey, 'k', DANGO_STORE_KEY_MAX + 1);
    longkey[DANGO_STORE_KEY_MAX + 1] = '\0';

    assert_dango_err(DANGO_EINVAL, tm_put_start(st, 1, "", 10, T0, NULL));
    assert_dango_err(DANGO_EINVAL, tm_put_start(st, 1, "k", 0, T0, NULL));
    assert_dango_err(DANGO_ENAMETOOLONG,
                     tm_put_start(st, 1, longkey, 10, T0, NULL));
    longkey[DANGO_STORE_KEY_MAX] = '\0'; /* exactly the maximum is fine */
    assert_dango_ok(tm_put_start(st, 1, longkey, 10, T0, NULL));

    /* A key with NUL inside (explicit length). */
    keys[0].s   = nul_key;
    keys[0].len = sizeof(nul_key);
    memset(&cfg, 0, sizeof(cfg));
    assert_dango_ok(dango__store_ms_put_start(st, tm_cid(1), 1, keys, sizes,
                                              NULL, &cfg, 0, T0, status, vers));
    assert_dango_err(DANGO_EINVAL, status[0]);

    /* Duplicate in a batch: the later one fails. */
    keys[0] = tm_key("d1");
    keys[1] = tm_key("d2");
    keys[2] = tm_key("d1");
    assert_dango_ok(dango__store_ms_put_start(st, tm_cid(1), 3, keys, sizes,
                                              NULL, &cfg, 0, T0, status, vers));
    assert_dango_ok(status[0]);
    assert_dango_ok(status[1]);
    assert_dango_err(DANGO_EINVAL, status[2]);
    assert_null(vers[2]);

    /* Call-level errors. */
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_put_start(
                         st, tm_cid(1), DANGO_STORE_BATCH_MAX + 1, keys, sizes,
                         NULL, &cfg, 0, T0, status, vers));
    cfg.replica_num = DANGO_STORE_REPLICA_MAX + 1;
    assert_dango_err(DANGO_EINVAL, dango__store_ms_put_start(
                                       st, tm_cid(1), 1, keys, sizes, NULL,
                                       &cfg, 0, T0, status, vers));
    cfg.replica_num = 0;
    cfg.soft_pin    = 3;
    assert_dango_err(DANGO_EINVAL, dango__store_ms_put_start(
                                       st, tm_cid(1), 1, keys, sizes, NULL,
                                       &cfg, 0, T0, status, vers));
    cfg.soft_pin        = DANGO_STORE_SOFT_PIN_PRESERVE;
    cfg.soft_pin_ttl_ms = 1000; /* a TTL only goes with ENABLE */
    assert_dango_err(DANGO_EINVAL, dango__store_ms_put_start(
                                       st, tm_cid(1), 1, keys, sizes, NULL,
                                       &cfg, 0, T0, status, vers));
    cfg.soft_pin        = DANGO_STORE_SOFT_PIN_ENABLE;
    cfg.soft_pin_ttl_ms = 24ull * 3600 * 1000 + 1;
    assert_dango_err(DANGO_EINVAL, dango__store_ms_put_start(
                                       st, tm_cid(1), 1, keys, sizes, NULL,
                                       &cfg, 0, T0, status, vers));
    cfg.soft_pin_ttl_ms = 24ull * 3600 * 1000;
    assert_dango_ok(tm_put_start_cfg(st, 1, "pinned", 10, &cfg, 0, T0, NULL));

    /* Other batch calls refuse oversized batches too. */
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_get(st, DANGO_STORE_BATCH_MAX + 1, keys, 0,
                                         T0, status, NULL));
    assert_dango_err(
        DANGO_EINVAL,
        dango__store_ms_exist(st, DANGO_STORE_BATCH_MAX + 1, keys, T0, status));
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_remove(st, DANGO_STORE_BATCH_MAX + 1, keys,
                                            0, T0, status));

    /* Read-side key checks. */
    assert_dango_err(DANGO_EINVAL, tm_get(st, "", T0, NULL));
    assert_dango_err(DANGO_EINVAL, tm_exist(st, "", T0));
    assert_dango_err(DANGO_ENAMETOOLONG, (longkey[DANGO_STORE_KEY_MAX] = 'k',
                                          tm_remove(st, longkey, 0, T0)));

    free(longkey);
    /* In-flight puts go after the release timeout. */
    dango__store_ms_tick(st, T0 + 600000);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void stale_put_preempted_then_released(void **state)
{
    ms_state_t *st = state_one_seg(MiB);
    ms_ver_t   *v1;
    ms_ver_t   *v2;
    uint64_t    id1;

    (void)state;
    assert_dango_ok(tm_put_start(st, 1, "k", 1000, T0, &v1));
    id1 = v1->put_id;

    /* Younger than PUT_DISCARD_TIMEOUT: refused, for upsert too. */
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     tm_put_start(st, 2, "k", 1000, T0 + 29999, NULL));
    {
        ms_put_cfg_t cfg;

        memset(&cfg, 0, sizeof(cfg));
        assert_dango_err(DANGO_EBUSY, tm_put_start_cfg(st, 2, "k", 1000, &cfg,
                                                       1, T0 + 29999, NULL));
    }

    /* Old enough: preempted, its regions parked until start + 600 s. */
    assert_dango_ok(tm_put_start(st, 2, "k", 1000, T0 + 30000, &v2));
    assert_true(v2->put_id > id1);
    assert_int_equal(st->nparked, 1);
    assert_int_equal(st->c.discards, 1);
    assert_true(st->parked_bytes >= 1000);
    assert_int_equal(st->ninflight, 1);

    /* The preempted writer can no longer commit. */
    assert_dango_err(DANGO_EINVALID_WRITE,
                     tm_put_end(st, 1, "k", id1, 0, T0 + 30001));
    assert_dango_ok(tm_put_end(st, 2, "k", v2->put_id, 0, T0 + 30001));

    dango__store_ms_tick(st, T0 + 599999);
    assert_int_equal(st->nparked, 1);
    tm_check(st);
    dango__store_ms_tick(st, T0 + 600000);
    assert_int_equal(st->nparked, 0);
    assert_int_equal(st->parked_bytes, 0);
    assert_int_equal(st->c.releases, 1);
    tm_check(st);

    assert_dango_ok(tm_get(st, "k", T0 + 600000, NULL));
    drain(st, T0 + 700000);
    dango__store_ms_destroy(st);
}

static void unfinished_put_reclaimed(void **state)
{
    ms_state_t *st = state_one_seg(MiB);
    ms_ver_t   *v;
    ms_ver_t   *u;

    (void)state;
    /* A plain put that never ends, and an upsert that never ends. */
    assert_dango_ok(tm_put_start(st, 1, "z", 100, T0, &v));
    tm_put(st, 1, "y", 100, T0);
    {
        ms_put_cfg_t cfg;

        memset(&cfg, 0, sizeof(cfg));
        assert_dango_ok(
            tm_put_start_cfg(st, 1, "y", 200, &cfg, 1, T0 + 10, &u));
    }
    assert_int_equal(st->ninflight, 2);

    dango__store_ms_tick(st, T0 + 599999);
    assert_non_null(tm_obj(st, "z"));
    dango__store_ms_tick(st, T0 + 600000);
    assert_null(tm_obj(st, "z"));
    assert_non_null(tm_obj(st, "y")->pend);
    dango__store_ms_tick(st, T0 + 600010);
    assert_null(tm_obj(st, "y")->pend);
    assert_int_equal(st->ninflight, 0);
    assert_int_equal(st->c.reclaims, 2);

    /* The old value of "y" is intact. */
    assert_dango_ok(tm_get(st, "y", T0 + 600010, NULL));
    assert_int_equal(tm_obj(st, "y")->cur->size, 100);
    assert_int_equal(st->used, 256);
    drain(st, T0 + 700000);
    dango__store_ms_destroy(st);
}

static void upsert(void **state)
{
    ms_state_t  *st = state_one_seg(MiB);
    ms_put_cfg_t cfg;
    ms_obj_t    *o;
    ms_ver_t    *v1;
    ms_ver_t    *v2;
    uint64_t     now = T0;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cfg.hard_pin = 1;
    assert_dango_ok(tm_put_start_cfg(st, 1, "u", 100, &cfg, 0, now, &v1));
    assert_dango_ok(tm_put_end(st, 1, "u", v1->put_id, 0, now));
    assert_dango_ok(tm_get(st, "u", now, &o)); /* lease until now + 10 s */

    /* Upsert: a new pending version, the old one stays readable. */
    cfg.hard_pin = 0;
    now += 100;
    assert_dango_ok(tm_put_start_cfg(st, 2, "u", 5000, &cfg, 1, now, &v2));
    assert_ptr_not_equal(v1, v2);
    assert_dango_ok(tm_get(st, "u", now, &o));
    assert_ptr_equal(o->cur, v1);
    assert_ptr_equal(o->pend, v2);
    assert_int_equal(o->cur->size, 100);
    assert_int_equal(tm_exist(st, "u", now), 1);

    /* Busy while it runs; a plain put sees an existing object. */
    assert_dango_err(DANGO_EBUSY,
                     tm_put_start_cfg(st, 3, "u", 10, &cfg, 1, now, NULL));
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     tm_put_start(st, 3, "u", 10, now, NULL));
    assert_dango_err(DANGO_ENOT_READY, tm_remove(st, "u", 1, now));

    /* End: swap; the old regions wait for the lease (now + 10 s). */
    assert_dango_ok(tm_put_end(st, 2, "u", v2->put_id, 0, now));
    assert_dango_ok(tm_get_lease(st, "u", 1, now, &o));
    assert_ptr_equal(o->cur, v2);
    assert_int_equal(o->cur->size, 5000);
    assert_int_equal(o->hard_pin, 1); /* kept across upsert */
    assert_int_equal(st->nparked, 1);
    assert_int_equal(o->lease_timeout, now + 10000);
    dango__store_ms_tick(st, now + 9999);
    assert_int_equal(st->nparked, 1);
    dango__store_ms_tick(st, now + 10000);
    assert_int_equal(st->nparked, 0);
    tm_check(st);
    assert_int_equal(st->used,
                     dango_store_rec_size(1, 5000) / 64 * 64 +
                         ((dango_store_rec_size(1, 5000) % 64) ? 64 : 0));

    /* Upsert of an unleased object: the old value goes at once. */
    now += 20000;
    assert_dango_ok(tm_put_start_cfg(st, 2, "u", 64, &cfg, 1, now, &v1));
    assert_dango_ok(tm_put_end(st, 2, "u", v1->put_id, 0, now));
    assert_int_equal(st->nparked, 0);
    assert_int_equal(st->used, 192);

    /* Revoke of an upsert: the old value stays. */
    assert_dango_ok(tm_put_start_cfg(st, 2, "u", 999, &cfg, 1, now, &v2));
    assert_dango_ok(tm_put_end(st, 2, "u", v2->put_id, 1, now));
    assert_dango_ok(tm_get(st, "u", now, &o));
    assert_ptr_equal(o->cur, v1);
    assert_null(o->pend);
    assert_int_equal(st->used, 192);

    /* Upsert of an absent key behaves like a put. */
    assert_dango_ok(tm_put_start_cfg(st, 2, "new", 64, &cfg, 1, now, &v2));
    assert_dango_err(DANGO_ENOT_READY, tm_get(st, "new", now, NULL));
    assert_dango_ok(tm_put_end(st, 2, "new", v2->put_id, 0, now));
    assert_dango_ok(tm_get(st, "new", now, NULL));

    /* Hard pinned: remove needs force. */
    assert_dango_err(DANGO_EPERM, tm_remove(st, "u", 0, now + 100000));
    assert_dango_ok(tm_remove(st, "u", 1, now + 100000));
    drain(st, now + 200000);
    dango__store_ms_destroy(st);
}

/* A PutStart marked retry (its reply was lost) gets back its client's put
 * in flight, and only that. */
static void put_start_retry(void **state)
{
    ms_state_t  *st = state_one_seg(MiB);
    ms_put_cfg_t cfg;
    ms_ver_t    *v1, *v;
    uint64_t     now = T0, used;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    assert_dango_ok(tm_put_start(st, 1, "r", 100, now, &v1));
    used = st->used;

    cfg.retry = 1;
    v         = NULL;
    assert_dango_ok(tm_put_start_cfg(st, 1, "r", 100, &cfg, 0, now, &v));
    assert_ptr_equal(v, v1);
    assert_int_equal(st->used, used); /* nothing placed twice */
    assert_int_equal(st->ninflight, 1);

    /* Another client's, another size, or no retry mark: the key is taken. */
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     tm_put_start_cfg(st, 2, "r", 100, &cfg, 0, now, NULL));
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     tm_put_start_cfg(st, 1, "r", 200, &cfg, 0, now, NULL));
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     tm_put_start(st, 1, "r", 100, now, NULL));

    /* Ended: a retry finds nothing in flight and the value exists. */
    assert_dango_ok(tm_put_end(st, 1, "r", v1->put_id, 0, now));
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     tm_put_start_cfg(st, 1, "r", 100, &cfg, 0, now, NULL));

    /* An upsert in flight is given back to its retried upsert. */
    cfg.retry = 0;
    assert_dango_ok(tm_put_start_cfg(st, 1, "r", 300, &cfg, 1, now, &v1));
    cfg.retry = 1;
    assert_dango_ok(tm_put_start_cfg(st, 1, "r", 300, &cfg, 1, now, &v));
    assert_ptr_equal(v, v1);
    assert_dango_ok(tm_put_end(st, 1, "r", v1->put_id, 0, now));
    tm_check(st);
    drain(st, now + 100000);
    dango__store_ms_destroy(st);
}

static void leases(void **state)
{
    ms_state_t *st  = state_one_seg(MiB);
    uint64_t    now = T0;
    ms_obj_t   *o;

    (void)state;
    tm_put(st, 1, "l", 100, now);
    o = tm_obj(st, "l");

    /* Exist and get extend to now + TTL, never shorten; admin reads do
     * not lease. */
    assert_int_equal(tm_exist(st, "l", now + 10), 1);
    assert_int_equal(o->lease_timeout, now + 10010);
    assert_dango_ok(tm_get_lease(st, "l", 1, now + 5000, NULL));
    assert_int_equal(o->lease_timeout, now + 10010);
    assert_dango_ok(tm_get(st, "l", now + 5000, NULL));
    assert_int_equal(o->lease_timeout, now + 15000);
    assert_dango_ok(tm_get(st, "l", now + 4000, NULL)); /* older read */
    assert_int_equal(o->lease_timeout, now + 15000);

    assert_dango_err(DANGO_ELEASE_HELD, tm_remove(st, "l", 0, now + 14999));

    /* A forced remove under lease parks the regions until it ends. */
    assert_dango_ok(tm_remove(st, "l", 1, now + 6000));
    assert_null(tm_obj(st, "l"));
    assert_int_equal(st->nparked, 1);
    assert_dango_err(DANGO_ENO_OBJECT, tm_get(st, "l", now + 6000, NULL));
    dango__store_ms_tick(st, now + 14999);
    assert_int_equal(st->nparked, 1);
    dango__store_ms_tick(st, now + 15000);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void report_bad(void **state)
{
    ms_state_t  *st = tm_state();
    ms_put_cfg_t cfg;
    ms_ver_t    *v;
    ms_key_t     key = tm_key("r");
    uint64_t     addr0;
    uint64_t     addr1;
    char         seg0[64];
    char         seg1[64];

    (void)state;
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    tm_mount(st, 2, 2, "node-b", MiB, T0);
    memset(&cfg, 0, sizeof(cfg));
    cfg.replica_num = 2;
    assert_dango_ok(tm_put_start_cfg(st, 1, "r", 100, &cfg, 0, T0, &v));
    assert_int_equal(v->nrep, 2);
    assert_dango_ok(tm_put_end(st, 1, "r", v->put_id, 0, T0));
    addr0 = ms_rep_addr(&v->rep[0]);
    addr1 = ms_rep_addr(&v->rep[1]);
    snprintf(seg0, sizeof(seg0), "%s", v->rep[0].seg->name->name);
    snprintf(seg1, sizeof(seg1), "%s", v->rep[1].seg->name->name);

    /* Wrong put, wrong address, wrong segment: nothing happens. */
    assert_dango_ok(dango__store_ms_report_bad(st, tm_cid(3), &key,
                                               v->put_id + 1, seg0, addr0, T0));
    assert_dango_ok(dango__store_ms_report_bad(st, tm_cid(3), &key, v->put_id,
                                               seg0, addr0 + 64, T0));
    assert_dango_ok(dango__store_ms_report_bad(st, tm_cid(3), &key, v->put_id,
                                               seg1, addr0, T0));
    assert_int_equal(v->nlive, 2);

    /* The right one: dropped and freed; readers get the other. */
    assert_dango_ok(dango__store_ms_report_bad(st, tm_cid(3), &key, v->put_id,
                                               seg0, addr0, T0));
    assert_int_equal(v->nlive, 1);
    assert_int_equal(st->c.bad_replicas, 1);
    tm_check(st);
    assert_dango_ok(dango__store_ms_report_bad(st, tm_cid(3), &key, v->put_id,
                                               seg0, addr0, T0));
    assert_int_equal(st->c.bad_replicas, 1);

    /* The last one: the object goes. */
    assert_dango_ok(dango__store_ms_report_bad(st, tm_cid(3), &key, v->put_id,
                                               seg1, addr1, T0));
    assert_null(tm_obj(st, "r"));
    assert_dango_err(
        DANGO_ENO_OBJECT,
        dango__store_ms_report_bad(st, tm_cid(3), &key, 1, seg1, addr1, T0));
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void list_paging(void **state)
{
    ms_state_t *st = state_one_seg(16 * MiB);
    ms_obj_t  **out;
    ms_key_t    prefix = tm_key("k");
    ms_key_t    after  = {NULL, 0};
    char        last[32];
    char        k[32];
    size_t      total = 0;
    int         more;

    (void)state;
    out = calloc(2600, sizeof(*out));
    /* Inserted in a scrambled order. */
    for (int i = 0; i < 2500; i++) {
        snprintf(k, sizeof(k), "k%05d", (i * 7919) % 2500);
        tm_put(st, 1, k, 64, T0);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "other%d", i);
        tm_put(st, 1, k, 64, T0);
    }
    assert_dango_ok(tm_put_start(st, 1, "k00000x", 64, T0, NULL)); /* hidden */

    last[0] = '\0';
    do {
        size_t n = dango__store_ms_list(st, &prefix, &after, 0, out, &more);

        assert_true(n <= MS_LIST_MAX);
        for (size_t i = 0; i < n; i++) {
            snprintf(k, sizeof(k), "k%05zu", total + i);
            assert_string_equal(out[i]->key, k);
            assert_int_equal(out[i]->cur->size, 64);
        }
        total += n;
        if (n > 0) {
            snprintf(last, sizeof(last), "%s", out[n - 1]->key);
        }
        after = tm_key(last);
        assert_int_equal(more, total < 2500);
    } while (more);
    assert_int_equal(total, 2500);

    /* Small limit, everything, no prefix. */
    assert_int_equal(dango__store_ms_list(st, NULL, NULL, 3, out, &more), 3);
    assert_true(more);
    assert_string_equal(out[0]->key, "k00000");
    prefix = tm_key("other");
    assert_int_equal(dango__store_ms_list(st, &prefix, NULL, 2600, out, &more),
                     10);
    assert_false(more);
    assert_string_equal(out[9]->key, "other9");
    prefix = tm_key("none");
    assert_int_equal(dango__store_ms_list(st, &prefix, NULL, 0, out, &more), 0);

    free(out);
    dango__store_ms_tick(st, T0 + 600000);
    drain(st, T0 + 700000);
    dango__store_ms_destroy(st);
}

static void remove_match(void **state)
{
    ms_state_t  *st = state_one_seg(MiB);
    ms_put_cfg_t cfg;
    char         k[16];
    uint64_t     now = T0;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "a%d", i);
        tm_put(st, 1, k, 64, now);
        snprintf(k, sizeof(k), "b%d", i);
        tm_put(st, 1, k, 64, now);
    }
    cfg.hard_pin = 1;
    assert_dango_ok(
        tm_put_start_cfg(st, 1, "a-pinned", 64, &cfg, 0, now, NULL));
    assert_dango_ok(tm_put_end(st, 1, "a-pinned",
                               tm_obj(st, "a-pinned")->pend->put_id, 0, now));
    assert_dango_ok(tm_put_start(st, 1, "a-flight", 64, now, NULL));
    assert_dango_ok(tm_get(st, "a3", now, NULL)); /* leased */

    assert_dango_err(DANGO_EINVAL,
                     (int)dango__store_ms_remove_match(st, "(", 0, 0, now));
    assert_dango_err(DANGO_EINVAL,
                     (int)dango__store_ms_remove_match(st, "", 0, 0, now));

    /* Not leased, not pinned, not in flight. */
    assert_int_equal(dango__store_ms_remove_match(st, "^a[0-9]$", 0, 0, now),
                     9);
    assert_non_null(tm_obj(st, "a3"));
    assert_int_equal(dango__store_ms_remove_match(st, "^a", 0, 0, now), 0);
    /* Force takes leased and pinned, never in-flight. */
    assert_int_equal(dango__store_ms_remove_match(st, "^a", 0, 1, now), 2);
    assert_non_null(tm_obj(st, "a-flight"));

    /* Remove all: the b keys. */
    assert_int_equal(dango__store_ms_remove_match(st, NULL, 1, 0, now), 10);
    assert_int_equal(dango_hmap_count(&st->objs), 1);
    dango__store_ms_tick(st, now + 10000);
    assert_dango_ok(tm_put_end(st, 1, "a-flight",
                               tm_obj(st, "a-flight")->pend->put_id, 1, now));
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static ms_state_t *state_cached(uint64_t cache_ms)
{
    ms_params_t p;
    ms_state_t *st;

    dango__store_ms_params_default(&p);
    p.seed              = 42;
    p.location_cache_ms = cache_ms;
    st                  = tm_state_with(&p);
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    return st;
}

/* A leased get may let its client cache the locations: an upsert's end
 * and a forced remove wait until that window is over, and no new window
 * is granted while either waits. */
static void location_cache(void **state)
{
    ms_state_t  *st = state_cached(0);
    ms_put_cfg_t cfg;
    ms_obj_t    *o;
    ms_ver_t    *v;
    uint64_t     t = T0 + 100;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));

    /* Off: no window, nothing waits. */
    tm_put(st, 1, "c", 100, T0);
    assert_dango_ok(tm_get(st, "c", t, &o));
    assert_int_equal(dango__store_ms_cache_grant(st, o, t), 0);
    assert_dango_ok(tm_remove(st, "c", 1, t + 10));
    drain(st, t + 10);
    dango__store_ms_destroy(st);

    /* On: a leased get is granted the whole window. */
    st = state_cached(1000);
    tm_put(st, 1, "c", 100, T0);
    assert_dango_ok(tm_get(st, "c", t, &o));
    assert_int_equal(dango__store_ms_cache_grant(st, o, t), 1000);
    assert_int_equal(o->cache_until, t + 1000);

    /* An upsert ends only once the window is over; until then the old
     * value is what readers get and no window is granted. */
    assert_dango_ok(tm_put_start_cfg(st, 2, "c", 200, &cfg, 1, t, &v));
    assert_dango_err(DANGO_EAGAIN,
                     tm_put_end(st, 2, "c", v->put_id, 0, t + 10));
    assert_int_equal(st->again_ms, 990);
    assert_ptr_equal(o->pend, v);
    assert_dango_ok(tm_get(st, "c", t + 20, &o));
    assert_int_equal(o->cur->size, 100);
    assert_int_equal(dango__store_ms_cache_grant(st, o, t + 20), 0);
    assert_int_equal(o->cache_until, t + 1000);
    assert_dango_err(DANGO_EAGAIN,
                     tm_put_end(st, 2, "c", v->put_id, 0, t + 999));
    assert_int_equal(st->again_ms, 1);
    assert_dango_ok(tm_put_end(st, 2, "c", v->put_id, 0, t + 1000));
    assert_int_equal(st->again_ms, 0);
    assert_null(o->pend);
    assert_dango_ok(tm_get(st, "c", t + 1000, &o));
    assert_ptr_equal(o->cur, v);
    assert_int_equal(o->cur->size, 200);

    /* A revoke is not held back by the window. */
    t += 1000;
    assert_int_equal(dango__store_ms_cache_grant(st, o, t), 1000);
    assert_dango_ok(tm_put_start_cfg(st, 2, "c", 300, &cfg, 1, t, &v));
    assert_dango_ok(tm_put_end(st, 2, "c", v->put_id, 1, t + 10));
    assert_int_equal(o->cur->size, 200);

    /* A forced remove waits too, and meanwhile no window is granted. */
    assert_dango_err(DANGO_EAGAIN, tm_remove(st, "c", 1, t + 10));
    assert_int_equal(st->again_ms, 990);
    assert_non_null(tm_obj(st, "c"));
    assert_int_equal(dango__store_ms_cache_grant(st, o, t + 10), 0);
    assert_int_equal(o->cache_until, t + 1000);
    assert_dango_err(DANGO_EAGAIN, tm_remove(st, "c", 1, t + 500));
    assert_int_equal(st->again_ms, 500);
    assert_dango_ok(tm_remove(st, "c", 1, t + 1000));
    assert_int_equal(st->again_ms, 0);
    assert_null(tm_obj(st, "c"));
    drain(st, t + 2000);
    dango__store_ms_destroy(st);
}

/* A forced regex remove leaves the objects still cached; before the floor
 * (a master just started) every object counts as cached. */
static void location_cache_remove_match_and_floor(void **state)
{
    ms_state_t *st = state_cached(1000);
    ms_obj_t   *o;
    uint64_t    t = T0 + 100;

    (void)state;
    tm_put(st, 1, "m-cached", 100, T0);
    tm_put(st, 1, "m-plain", 100, T0);
    assert_dango_ok(tm_get(st, "m-cached", t, &o));
    assert_int_equal(dango__store_ms_cache_grant(st, o, t), 1000);
    assert_dango_ok(tm_get(st, "m-plain", t, NULL)); /* leased, not cached */

    assert_int_equal(dango__store_ms_remove_match(st, "^m-", 0, 1, t + 10), 1);
    assert_int_equal(st->again_n, 1);
    assert_int_equal(st->again_ms, 990);
    assert_ptr_equal(tm_obj(st, "m-cached"), o);
    assert_null(tm_obj(st, "m-plain"));
    assert_int_equal(dango__store_ms_cache_grant(st, o, t + 10), 0);

    tm_put(st, 1, "m-new", 100, t + 10);
    assert_int_equal(dango__store_ms_remove_match(st, "^m-", 0, 1, t + 1000),
                     2);
    assert_int_equal(st->again_n, 0);
    assert_int_equal(st->again_ms, 0);
    assert_null(tm_obj(st, "m-cached"));
    drain(st, t + 2000);
    dango__store_ms_destroy(st);

    /* The floor: an object never granted a window still waits for it. */
    st              = state_cached(1000);
    st->cache_floor = T0 + 500;
    tm_put(st, 1, "f", 100, T0);
    o = tm_obj(st, "f");
    assert_int_equal(o->cache_until, 0);
    assert_dango_err(DANGO_EAGAIN, tm_remove(st, "f", 1, T0 + 100));
    assert_int_equal(st->again_ms, 400);
    assert_non_null(tm_obj(st, "f"));
    assert_int_equal(dango__store_ms_remove_match(st, NULL, 1, 1, T0 + 100), 0);
    assert_int_equal(st->again_n, 1);
    assert_int_equal(st->again_ms, 400);
    assert_dango_ok(tm_remove(st, "f", 1, T0 + 500));
    assert_null(tm_obj(st, "f"));
    drain(st, T0 + 500);
    dango__store_ms_destroy(st);
}

static void slots(void **state)
{
    ms_state_t *st  = state_one_seg(MiB);
    uint64_t    rec = dango_store_rec_size(1, 1000); /* 1128 */
    uint64_t    now = T0;
    ms_ver_t   *v[MS_SLOT_BATCH];
    uint64_t    id[MS_SLOT_BATCH];
    ms_obj_t   *o;
    ms_ver_t   *pv;
    size_t      n;

    (void)state;
    /* A client holds at most 1/16 of the capacity: 64 KiB here. */
    n = tm_slots(st, 2, MS_SLOT_BATCH, rec, now, v);
    assert_int_equal(n, (64 * KiB) / rec);
    assert_int_equal(0, tm_slots(st, 2, 1, rec, now, v + n));
    for (size_t i = 0; i < n; i++) {
        id[i] = v[i]->put_id;
        assert_int_equal(v[i]->rep[0].status, DANGO_STORE_REPLICA_PROCESSING);
    }
    assert_int_equal(dango_hmap_count(&st->objs), 0); /* nothing to read */
    assert_int_equal(st->ninflight, n);
    assert_int_equal(st->slot_bytes, n * rec);
    tm_invariants(st);

    /* Bound: the key's value at once; asked again, the same answer. */
    assert_dango_ok(tm_bind(st, 2, "a", id[0], 1000, ++now));
    o = tm_obj(st, "a");
    assert_non_null(o);
    assert_ptr_equal(o->cur, v[0]);
    assert_null(o->pend);
    assert_int_equal(o->cur->size, 1000);
    assert_int_equal(o->cur->checksum, 0x5107);
    assert_int_equal(o->cur->rep[0].status, DANGO_STORE_REPLICA_COMPLETE);
    assert_dango_ok(tm_get(st, "a", now, NULL));
    assert_dango_ok(tm_bind(st, 2, "a", id[0], 1000, now));
    assert_dango_err(DANGO_EILLEGAL_CLIENT,
                     tm_bind(st, 3, "a", id[0], 1000, now));
    assert_null(dango__store_ms_slot_find(st, id[0]));
    tm_invariants(st);

    /* Refused, and the slot stays the client's: an existing key, another
     * length, another client, an unknown slot. */
    assert_dango_err(DANGO_EOBJ_EXISTS, tm_bind(st, 2, "a", id[1], 1000, now));
    assert_dango_err(DANGO_EINVAL, tm_bind(st, 2, "b", id[1], 999, now));
    /* A key past 64 bytes makes a longer record. */
    assert_dango_err(DANGO_EINVAL,
                     tm_bind(st, 2,
                             "0123456789012345678901234567890123456789"
                             "0123456789012345678901234",
                             id[1], 1000, now));
    assert_dango_err(DANGO_EINVAL, tm_bind(st, 2, "b", id[1], 0, now));
    assert_dango_err(DANGO_EILLEGAL_CLIENT,
                     tm_bind(st, 3, "b", id[1], 1000, now));
    assert_dango_err(DANGO_EINVALID_WRITE,
                     tm_bind(st, 2, "b", 1ull << 60, 1000, now));
    assert_ptr_equal(dango__store_ms_slot_find(st, id[1]), v[1]);

    /* A young put in flight of the key refuses it; a stale one yields. */
    assert_dango_ok(tm_put_start(st, 3, "c", 1000, now, &pv));
    assert_dango_err(DANGO_EOBJ_EXISTS, tm_bind(st, 2, "c", id[1], 1000, now));
    now += 30000;
    assert_dango_ok(tm_bind(st, 2, "c", id[1], 1000, now));
    assert_int_equal(st->c.discards, 1);
    assert_int_equal(tm_put_end(st, 3, "c", pv->put_id, 0, now),
                     DANGO_EINVALID_WRITE);
    tm_invariants(st);

    /* Given back: only by its client. */
    assert_int_equal(
        0, dango__store_ms_slot_release(st, tm_cid(3), 1, &id[2], now));
    assert_int_equal(
        1, dango__store_ms_slot_release(st, tm_cid(2), 1, &id[2], now));
    assert_int_equal(
        0, dango__store_ms_slot_release(st, tm_cid(2), 1, &id[2], now));
    assert_dango_err(DANGO_EINVALID_WRITE,
                     tm_bind(st, 2, "d", id[2], 1000, now));
    assert_int_equal(st->c.slots_bound, 2);
    assert_int_equal(st->c.slots_released, 1);
    tm_invariants(st);

    /* Unbound ones go after PUT_RELEASE_TIMEOUT from their grant. */
    dango__store_ms_tick(st, T0 + 599999);
    assert_int_equal(dango_hmap_count(&st->slots), n - 3);
    dango__store_ms_tick(st, T0 + 600000);
    assert_int_equal(dango_hmap_count(&st->slots), 0);
    assert_int_equal(st->ninflight, 0);
    assert_int_equal(st->slot_bytes, 0);
    assert_int_equal(st->c.reclaims, n - 3);
    tm_invariants(st);

    /* The bound values stay, readable. */
    assert_dango_ok(tm_get(st, "a", T0 + 600000, NULL));
    assert_dango_ok(tm_get(st, "c", T0 + 600000, NULL));
    drain(st, T0 + 700000);
    dango__store_ms_destroy(st);
}

/* What ends a put ends a slot: its client expiring, its segment going;
 * and what a slot may not take. */
static void slots_end_and_bounds(void **state)
{
    ms_params_t p;
    ms_state_t *st;
    uint64_t    rec = dango_store_rec_size(1, 1000);
    ms_ver_t   *v[MS_SLOT_BATCH];
    uint64_t    id;
    size_t      n;

    (void)state;
    dango__store_ms_params_default(&p);
    p.seed = 42;
    st     = tm_state_with(&p);
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    tm_mount(st, 2, 2, "node-b", MiB, T0);

    /* Client 3 expires: its slots are parked for ZOMBIE_GRACE (it may
     * still be writing), then freed. */
    n = tm_slots(st, 3, 4, rec, T0, v);
    assert_int_equal(n, 4);
    dango__store_ms_client_touch(st, tm_cid(1), T0 + 10000);
    dango__store_ms_client_touch(st, tm_cid(2), T0 + 10000);
    assert_int_equal(1, dango__store_ms_monitor(st, T0 + 10000));
    assert_int_equal(dango_hmap_count(&st->slots), 0);
    assert_int_equal(st->nparked, 4);
    assert_int_equal(st->ninflight, 0);
    tm_invariants(st);
    dango__store_ms_tick(st, T0 + 40000);
    assert_int_equal(st->nparked, 0);
    tm_check_empty(st);

    /* A segment goes: the slots on it with it, as any put would. */
    n = tm_slots(st, 1, 8, rec, T0 + 40000, v);
    assert_int_equal(n, 8);
    id = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->rep[0].seg->id_lo == 2) {
            id = v[i]->put_id;
        }
    }
    assert_true(id != 0);
    assert_dango_ok(dango__store_ms_unmount(st, tm_cid(2), 2, 2, T0 + 40000));
    assert_null(dango__store_ms_slot_find(st, id));
    assert_dango_err(DANGO_EINVALID_WRITE,
                     tm_bind(st, 1, "x", id, 1000, T0 + 40000));
    tm_invariants(st);
    n = dango_hmap_count(&st->slots);
    assert_true((n > 0) && (n < 8));

    /* Two replicas on distinct nodes, or none. */
    {
        ms_client_t *c = dango__store_ms_client_touch(st, tm_cid(1), T0);
        ms_put_cfg_t cfg;

        memset(&cfg, 0, sizeof(cfg));
        cfg.replica_num = 2;
        tm_mount(st, 2, 3, "node-b", MiB, T0 + 40000);
        assert_int_equal(
            1, dango__store_ms_slot_grant(st, c, &cfg, 1, rec, T0 + 40000, v));
        assert_int_equal(v[0]->nrep, 2);
        assert_ptr_not_equal(v[0]->rep[0].seg->name, v[0]->rep[1].seg->name);
    }

    /* No slot of a length no record has, nor past the watermark. */
    assert_int_equal(
        0, tm_slots(st, 4, 1, dango_store_rec_size(1, 1) - 1, T0 + 40000, v));
    assert_int_equal(0, tm_slots(st, 4, 1, 2 * MiB, T0 + 40000, v));
    assert_int_equal(0, tm_slots(st, 4, 0, rec, T0 + 40000, v));
    tm_check(st);
    dango__store_ms_tick(st, T0 + 40000 + 600000);
    assert_int_equal(dango_hmap_count(&st->slots), 0);
    tm_check_empty(st);
    dango__store_ms_destroy(st);

    /* Off (MASTER_PUT_SLOTS 0), and while nodes report their records. */
    p.put_slot_bytes = 0;
    st               = tm_state_with(&p);
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    assert_int_equal(0, tm_slots(st, 1, 1, rec, T0, v));
    dango__store_ms_destroy(st);
    p.put_slot_bytes = 64 * MiB;
    st               = tm_state_with(&p);
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    st->segs[0]->recovering = 1;
    assert_int_equal(0, tm_slots(st, 1, 1, rec, T0, v));
    st->segs[0]->recovering = 0;
    assert_int_equal(1, tm_slots(st, 1, 1, rec, T0, v));
    dango__store_ms_destroy(st); /* frees the slot with the state */
}

static void batch_calls(void **state)
{
    ms_state_t  *st = state_one_seg(4 * MiB);
    ms_put_cfg_t cfg;
    ms_key_t     keys[64];
    uint64_t     sizes[64];
    uint64_t     sums[64];
    uint64_t     ids[64];
    ms_ver_t    *vers[64];
    ms_obj_t    *objs[64];
    int          status[64];
    char         names[64][16];

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    for (int i = 0; i < 64; i++) {
        snprintf(names[i], sizeof(names[i]), "batch-%d", i);
        keys[i]  = tm_key(names[i]);
        sizes[i] = 100 + (uint64_t)i;
        sums[i]  = (uint64_t)i;
    }
    tm_put(st, 1, "batch-7", 10, T0); /* exists already */

    assert_dango_ok(dango__store_ms_put_start(st, tm_cid(1), 64, keys, sizes,
                                              sums, &cfg, 0, T0, status, vers));
    for (int i = 0; i < 64; i++) {
        if (i == 7) {
            assert_dango_err(DANGO_EOBJ_EXISTS, status[i]);
            ids[i] = 0;
        } else {
            assert_dango_ok(status[i]);
            ids[i] = vers[i]->put_id;
        }
    }

    assert_dango_ok(
        dango__store_ms_put_end(st, tm_cid(1), 64, keys, ids, 0, T0, status));
    for (int i = 0; i < 64; i++) {
        if (i == 7) {
            assert_dango_err(DANGO_EINVALID_WRITE, status[i]);
        } else {
            assert_dango_ok(status[i]);
        }
    }

    keys[63] = tm_key("missing");
    assert_dango_ok(dango__store_ms_get(st, 64, keys, 0, T0, status, objs));
    for (int i = 0; i < 63; i++) {
        assert_dango_ok(status[i]);
        assert_int_equal(objs[i]->cur->size, (i == 7) ? 10 : 100 + i);
        assert_int_equal(objs[i]->cur->checksum, (i == 7) ? 0x5eed : i);
    }
    assert_dango_err(DANGO_ENO_OBJECT, status[63]);
    assert_null(objs[63]);

    assert_dango_ok(dango__store_ms_exist(st, 64, keys, T0, status));
    assert_int_equal(status[0], 1);
    assert_int_equal(status[63], 0);

    assert_dango_ok(
        dango__store_ms_remove(st, 64, keys, 0, T0 + 10000, status));
    assert_dango_ok(status[0]);
    assert_dango_err(DANGO_ENO_OBJECT, status[63]);
    keys[63] = tm_key("batch-63");
    assert_dango_ok(dango__store_ms_remove(st, 64, keys, 0, T0, status));
    assert_dango_err(DANGO_ENO_OBJECT, status[0]);
    assert_dango_ok(status[63]);
    tm_check_empty(st);

    /* Smaller batches after a big one: the duplicate table left by the big
     * one must not make distinct keys look repeated. */
    for (int round = 0; round < 32; round++) {
        for (int i = 0; i < 3; i++) {
            snprintf(names[i], sizeof(names[i]), "small-%d-%d", round, i);
            keys[i] = tm_key(names[i]);
        }

        assert_dango_ok(dango__store_ms_put_start(
            st, tm_cid(1), 3, keys, sizes, sums, &cfg, 0, T0, status, vers));
        for (int i = 0; i < 3; i++) {
            assert_dango_ok(status[i]);
            ids[i] = vers[i]->put_id;
        }

        assert_dango_ok(dango__store_ms_put_end(st, tm_cid(1), 3, keys, ids, 1,
                                                T0, status));
    }

    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void oom_paths(void **state)
{
    ms_state_t *st = state_one_seg(MiB);
    ms_ver_t   *v;
    long        live;

    (void)state;
    /* A failed version or object allocation frees the regions. */
    for (long n = 1; n <= 2; n++) {
        dango__alloc_fail_after(n);
        assert_dango_err(DANGO_ENOMEM, tm_put_start(st, 1, "o", 10, T0, &v));
        dango__alloc_fail_after(-1);
        tm_check_empty(st);
        assert_null(tm_obj(st, "o"));
    }

    live = dango__alloc_live();
    tm_put(st, 1, "o", 10, T0);
    assert_dango_ok(tm_remove(st, "o", 0, T0));
    /* The removed record waits for its node's next ping as a tomb. */
    {
        ms_tomb_t *t;

        assert_int_equal(1, dango__store_ms_tombs_take(st, tm_cid(1), &t));
        assert_int_equal(0x100000000ull, t[0].addr);
        dango_free(t);
        assert_int_equal(0, dango__store_ms_tombs_take(st, tm_cid(1), &t));
        assert_null(t);
    }
    assert_int_equal(dango__alloc_live(), live);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

/* Mounts node-a (client 1, 1 MiB) and node-b (client 2, @b_size) and sets
 * @cfg to place a put on node-b. */
static void tm_two_nodes(ms_state_t *st, uint64_t b_size, uint64_t now,
                         ms_put_cfg_t *cfg)
{
    static const char *const pref[1] = {"node-b"};

    tm_mount(st, 1, 1, "node-a", MiB, now);
    tm_mount(st, 2, 2, "node-b", b_size, now);
    memset(cfg, 0, sizeof(*cfg));
    cfg->preferred  = pref;
    cfg->npreferred = 1;
}

/*
 * An object whose every node went silent is lost to the master, but a node
 * coming back later (partition, pause) gives it back from its record, at
 * any time; not once the key was put again or removed meanwhile.
 */
static void ghost_comes_back_with_its_node(void **state)
{
    ms_state_t   *st = tm_state();
    ms_seg_desc_t d  = {2, 2, "node-b", 0x200000000ull, MiB, "host"};
    ms_put_cfg_t  cfg;
    ms_record_t   r;
    ms_ver_t     *v;
    uint64_t      now     = T0, put_id[3], addr[3];
    const char   *keys[3] = {"back", "put-again", "removed"};

    (void)state;
    tm_two_nodes(st, MiB, now, &cfg);
    for (int i = 0; i < 3; i++) {
        assert_dango_ok(
            tm_put_start_cfg(st, 1, keys[i], 100, &cfg, 0, now, &v));
        assert_int_equal(2, v->rep[0].seg->id_hi);
        put_id[i] = v->put_id;
        addr[i]   = ms_rep_addr(&v->rep[0]);
        assert_dango_ok(tm_put_end(st, 1, keys[i], put_id[i], 0, now));
    }

    /* node-b goes silent past the TTL: all three are lost. */
    now += 2 * 60 * 1000;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    for (int i = 0; i < 3; i++) {
        assert_null(tm_obj(st, keys[i]));
    }
    assert_int_equal(3, dango_hmap_count(&st->ghosts));

    /* Meanwhile one key is put again (elsewhere), one removed. */
    (void)tm_put(st, 1, "put-again", 50, now);
    assert_dango_err(DANGO_ENO_OBJECT, tm_remove(st, "removed", 1, now));
    assert_int_equal(1, dango_hmap_count(&st->ghosts));

    /* node-b comes back long after any rebuild window and reports. */
    now += 10 * 60 * 1000;
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(2), &d, 1, now));
    dango__store_ms_seg_recovering(st, tm_cid(2), &d, 1, 1);
    for (int i = 0; i < 3; i++) {
        r = (ms_record_t){tm_key(keys[i]), 100, 0x5eed, put_id[i], addr[i]};
        assert_int_equal((i == 0) ? 0 : 1,
                         dango__store_ms_restore(st, tm_cid(2), &r, now));
    }
    dango__store_ms_seg_recovering(st, tm_cid(2), &d, 1, 0);
    assert_non_null(tm_obj(st, "back"));
    assert_int_equal(put_id[0], tm_obj(st, "back")->cur->put_id);
    assert_int_equal(50, tm_obj(st, "put-again")->cur->size);
    assert_null(tm_obj(st, "removed"));
    assert_int_equal(0, dango_hmap_count(&st->ghosts));
    assert_int_equal(1, st->c.ghosts_restored);

    /* A record that does not match the ghost (other put) is ignored. */
    (void)tm_remove(st, "back", 1, now);
    tm_invariants(st);
    dango__store_ms_destroy(st);
}

/* A value lost while an upsert of its key was in flight is replaced when
 * that upsert ends: removed afterwards, it never comes back with its node. */
static void ghost_replaced_by_put_in_flight(void **state)
{
    ms_state_t   *st      = tm_state();
    ms_seg_desc_t d       = {2, 2, "node-b", 0x200000000ull, MiB, "host"};
    const char   *here[1] = {"node-a"};
    ms_put_cfg_t  cfg;
    ms_record_t   r;
    ms_ver_t     *v;
    uint64_t      now = T0, old_id, old_addr;

    (void)state;
    tm_two_nodes(st, MiB, now, &cfg);
    assert_dango_ok(tm_put_start_cfg(st, 1, "k", 100, &cfg, 0, now, &v));
    old_id   = v->put_id;
    old_addr = ms_rep_addr(&v->rep[0]);
    assert_dango_ok(tm_put_end(st, 1, "k", old_id, 0, now));

    /* An upsert to node-a starts; node-b goes silent meanwhile. */
    cfg.preferred = here;
    assert_dango_ok(tm_put_start_cfg(st, 1, "k", 60, &cfg, 1, now, &v));
    now += st->p.client_ttl_ms + 1;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    assert_int_equal(1, dango_hmap_count(&st->ghosts));
    assert_dango_ok(tm_put_end(st, 1, "k", v->put_id, 0, now));
    assert_int_equal(0, dango_hmap_count(&st->ghosts));
    assert_dango_ok(tm_remove(st, "k", 1, now));

    /* node-b comes back (after any rebuild window) with the old record: it
     * stays gone. */
    now += 10 * 60 * 1000;
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(2), &d, 1, now));
    dango__store_ms_seg_recovering(st, tm_cid(2), &d, 1, 1);
    r = (ms_record_t){tm_key("k"), 100, 0x5eed, old_id, old_addr};
    assert_int_equal(1, dango__store_ms_restore(st, tm_cid(2), &r, now));
    dango__store_ms_seg_recovering(st, tm_cid(2), &d, 1, 0);
    assert_null(tm_obj(st, "k"));
    tm_invariants(st);
    dango__store_ms_destroy(st);
}

/*
 * A node that went silent and came back: the regions that a late write may
 * still reach (a put in flight on it, a put that ended just before) are not
 * given to new puts until no such write can come; the node's record of such
 * a put takes its region back.
 */
static void fence_keeps_late_writes_off_new_puts(void **state)
{
    ms_state_t   *st = tm_state();
    ms_seg_desc_t d  = {2, 2, "node-b", 0x200000000ull, 64 * KiB, "h"};
    ms_put_cfg_t  cfg;
    ms_record_t   r;
    ms_ver_t     *v, *fly, *done;
    uint64_t      now = T0, fly_off, done_off, done_id, asz;
    ms_seg_t     *seg;

    (void)state;
    tm_two_nodes(st, 64 * KiB, now, &cfg);

    /* Ended long before the node went away: nothing to fence. */
    assert_dango_ok(tm_put_start_cfg(st, 1, "old", 4000, &cfg, 0, now, &v));
    assert_dango_ok(tm_put_end(st, 1, "old", v->put_id, 0, now));
    now += st->p.put_discard_ms + 1;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(2), now));

    /* Ended just before, and still in flight. */
    assert_dango_ok(tm_put_start_cfg(st, 1, "done", 4000, &cfg, 0, now, &done));
    done_id  = done->put_id;
    done_off = done->rep[0].off;
    assert_dango_ok(tm_put_end(st, 1, "done", done_id, 0, now));
    assert_dango_ok(tm_put_start_cfg(st, 1, "fly", 4000, &cfg, 0, now, &fly));
    fly_off = fly->rep[0].off;
    asz     = (fly->rec_len + 63) / 64 * 64;

    /* node-b goes silent past the TTL (the writer stays). */
    now += st->p.client_ttl_ms + 1;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    assert_int_equal(2, st->c.fence_regions);
    assert_null(tm_obj(st, "fly"));

    /* It comes back: both regions are held, new puts go around them. */
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(2), &d, 1, now));
    assert_int_equal(2 * asz, st->fenced_bytes);
    tm_check(st);
    for (int i = 0; i < 32; i++) {
        char key[16];

        snprintf(key, sizeof(key), "new-%d", i);
        if (tm_put_start_cfg(st, 1, key, 100, &cfg, 0, now, &v) != 0) {
            break;
        }
        if (v->rep[0].seg->id_hi == 2) {
            assert_true((v->rep[0].off + v->rec_len <= fly_off) ||
                        (v->rep[0].off >= fly_off + asz));
            assert_true((v->rep[0].off + v->rec_len <= done_off) ||
                        (v->rep[0].off >= done_off + asz));
        }
        assert_dango_ok(tm_put_end(st, 1, key, v->put_id, 1, now));
    }

    /* A record of another put at exactly the place and size of the
     * region "fly" held is not that put's: the region stays fenced. */
    r = (ms_record_t){tm_key("fly"), 4000, 0x5eed, done_id + 100,
                      d.base + fly_off};
    assert_int_equal(1, dango__store_ms_restore(st, tm_cid(2), &r, now));
    assert_int_equal(0, st->c.fence_claimed);
    assert_int_equal(2 * asz, st->fenced_bytes);

    /* The node reports the record of "done": it takes its region back (as
     * a lost object coming back); a record overlapping a fence does not. */
    r = (ms_record_t){tm_key("done"), 4000, 0x5eed, done_id, d.base + done_off};
    assert_int_equal(0, dango__store_ms_restore(st, tm_cid(2), &r, now));
    assert_int_equal(1, st->c.fence_claimed);
    assert_int_equal(asz, st->fenced_bytes);
    r = (ms_record_t){tm_key("other"), 100, 1, done_id + 100,
                      d.base + fly_off + 64};
    assert_int_equal(1, dango__store_ms_restore(st, tm_cid(2), &r, now));
    tm_invariants(st);

    /* The late writer's end finds nothing; once the put's release time is
     * past, its region is free again. */
    assert_dango_err(DANGO_ENO_OBJECT, tm_put_end(st, 1, "fly", 1, 0, now));
    now += st->p.put_release_ms;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(2), now));
    dango__store_ms_tick(st, now);
    assert_int_equal(1, st->c.fence_released);
    assert_int_equal(0, st->fenced_bytes);
    seg = st->segs[1]->id_hi == 2 ? st->segs[1] : st->segs[0];
    assert_dango_ok(dango__store_alloc_reserve(seg->alloc, fly_off, asz));
    assert_dango_ok(dango__store_alloc_free(seg->alloc, fly_off));
    tm_invariants(st);
    assert_dango_ok(tm_remove(st, "done", 1, now));
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

/*
 * A fenced segment that goes away again keeps its fence for its next
 * return; one that comes back with another geometry gets none; one that
 * never comes back is forgotten when the time is up.
 */
static void fence_follows_the_segment(void **state)
{
    ms_state_t   *st = tm_state();
    ms_seg_desc_t d  = {2, 2, "node-b", 0x200000000ull, 64 * KiB, "h"};
    ms_put_cfg_t  cfg;
    ms_ver_t     *v;
    uint64_t      now = T0;

    (void)state;
    tm_two_nodes(st, 64 * KiB, now, &cfg);
    assert_dango_ok(tm_put_start_cfg(st, 1, "fly", 4000, &cfg, 0, now, &v));

    now += st->p.client_ttl_ms + 1;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(2), &d, 1, now));
    assert_true(st->fenced_bytes > 0);
    tm_check(st);

    /* Silent again: the fence waits, and is applied on the next return. */
    now += st->p.client_ttl_ms + 1;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    assert_int_equal(0, st->fenced_bytes);
    assert_int_equal(0, st->used);
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(2), &d, 1, now));
    assert_true(st->fenced_bytes > 0);
    tm_check(st);

    /* Back with another geometry: the old regions mean nothing there. */
    now += st->p.client_ttl_ms + 1;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    d.size = 128 * KiB;
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(2), &d, 1, now));
    assert_int_equal(0, st->fenced_bytes);
    assert_int_equal(0, dango_hmap_count(&st->fences));
    tm_check_empty(st);

    /* Away for good: forgotten when the time is up. */
    assert_dango_ok(tm_put_start_cfg(st, 1, "fly2", 4000, &cfg, 0, now, &v));
    now += st->p.client_ttl_ms + 1;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    assert_int_equal(1, dango_hmap_count(&st->fences));
    now += st->p.put_release_ms;
    dango__store_ms_tick(st, now);
    assert_int_equal(0, dango_hmap_count(&st->fences));
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

/* Records reported on remount rebuild objects, while the window lasts. */
static void restore_from_reports(void **state)
{
    ms_state_t   *st   = tm_state();
    uint64_t      base = 0x100000000ull;
    ms_seg_desc_t d    = {1, 1, "node-a", base, MiB, "host"};
    ms_record_t   r    = {tm_key("k"), 100, 7, 5, base};
    ms_obj_t     *o;
    ms_ver_t     *v;

    (void)state;
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(1), &d, 1, T0));
    dango__store_ms_seg_recovering(st, tm_cid(1), &d, 1, 1);
    assert_dango_err(DANGO_ENOSPC, tm_put_start(st, 1, "x", 10, T0, &v));
    assert_dango_ok(dango__store_ms_restore(st, tm_cid(1), &r, T0));
    o = tm_obj(st, "k");
    assert_non_null(o);
    assert_non_null(o->cur);
    assert_int_equal(5, o->cur->put_id);
    assert_int_equal(1, o->cur->nrep);
    assert_int_equal(DANGO_STORE_REPLICA_COMPLETE, o->cur->rep[0].status);
    assert_true(st->next_put_id > 5);

    /* The same put elsewhere is one more replica; an older one, one that
     * overlaps, a bad address or a late report is ignored. */
    r.addr = base + 4096;
    assert_dango_ok(dango__store_ms_restore(st, tm_cid(1), &r, T0));
    assert_int_equal(2, tm_obj(st, "k")->cur->nrep);
    r.put_id = 4;
    r.addr   = base + 8192;
    assert_int_equal(1, dango__store_ms_restore(st, tm_cid(1), &r, T0));
    r.key  = tm_key("k2");
    r.addr = base + 64;
    assert_int_equal(1, dango__store_ms_restore(st, tm_cid(1), &r, T0));
    r.addr = base + MiB - 64;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_restore(st, tm_cid(1), &r, T0));
    r.addr = base + 8192;
    assert_dango_err(DANGO_EINVAL,
                     dango__store_ms_restore(st, tm_cid(2), &r, T0));
    assert_int_equal(
        1, dango__store_ms_restore(st, tm_cid(1), &r, T0 + 60 * 1000));
    assert_null(tm_obj(st, "k2"));

    /* A newer put of the key replaces the reported one. */
    r.key    = tm_key("k");
    r.put_id = 9;
    assert_dango_ok(dango__store_ms_restore(st, tm_cid(1), &r, T0));
    assert_int_equal(9, tm_obj(st, "k")->cur->put_id);
    assert_int_equal(1, tm_obj(st, "k")->cur->nrep);

    /* Done reporting: the segment takes puts again, with larger ids. */
    dango__store_ms_seg_recovering(st, tm_cid(1), &d, 1, 0);
    tm_put(st, 1, "x", 10, T0);
    assert_true(tm_obj(st, "x")->cur->put_id > 9);
    drain(st, T0);
    dango__store_ms_destroy(st);
}

/*
 * A put that finds no room while a node is still reporting its records
 * (its segment takes nothing yet) fails with ENOSPC without evicting: the
 * objects already taken back from that node stay (before the fix, the
 * eviction pass erased them and freed regions holding their records).
 */
static void restore_no_evict_while_reporting(void **state)
{
    ms_state_t   *st   = tm_state();
    uint64_t      base = 0x100000000ull;
    ms_seg_desc_t d    = {1, 1, "node-a", base, MiB, "host"};
    ms_record_t   r    = {tm_key("k"), 100, 7, 5, base};
    ms_ver_t     *v;

    (void)state;
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(1), &d, 1, T0));
    dango__store_ms_seg_recovering(st, tm_cid(1), &d, 1, 1);
    assert_dango_ok(dango__store_ms_restore(st, tm_cid(1), &r, T0));
    assert_dango_err(DANGO_ENOSPC, tm_put_start(st, 2, "x", 10, T0, &v));
    dango__store_ms_tick(st, T0 + 1000);
    assert_non_null(tm_obj(st, "k"));
    assert_non_null(tm_obj(st, "k")->cur);

    /* Reported: the segment takes puts, "k" is still there. */
    dango__store_ms_seg_recovering(st, tm_cid(1), &d, 1, 0);
    tm_put(st, 2, "x", 10, T0 + 1000);
    assert_non_null(tm_obj(st, "k"));
    drain(st, T0 + 1000);
    dango__store_ms_destroy(st);
}

/*
 * A node back from a partition (expired, its replicas dropped) reports a
 * record of the put the object still holds: it becomes a replica again
 * (before the fix it was ignored because this master, not a report, had
 * committed the object), while other records are ignored.
 */
static void restore_readopts_same_put(void **state)
{
    ms_state_t   *st = tm_state();
    ms_seg_desc_t d  = {2, 2, "node-b", 0x200000000ull, MiB, "host"};
    ms_put_cfg_t  cfg;
    ms_record_t   r;
    ms_ver_t     *v;
    uint64_t      now = T0, addr_b = 0, put_id;
    unsigned      live;

    (void)state;
    tm_mount(st, 1, 1, "node-a", MiB, now);
    tm_mount(st, 2, 2, "node-b", MiB, now);
    memset(&cfg, 0, sizeof(cfg));
    cfg.replica_num = 2;
    assert_dango_ok(tm_put_start_cfg(st, 1, "k", 100, &cfg, 0, now, &v));
    put_id = v->put_id;
    assert_int_equal(2, v->nrep);
    for (unsigned i = 0; i < v->nrep; i++) {
        if (v->rep[i].seg->id_hi == 2) {
            addr_b = ms_rep_addr(&v->rep[i]);
        }
    }
    assert_dango_ok(tm_put_end(st, 1, "k", put_id, 0, now));

    /* Only client 1 pings: client 2 (node-b) expires, its replica goes. */
    now += 2 * 60 * 1000;
    assert_int_equal(0, dango__store_ms_ping(st, tm_cid(1), now));
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    live = 0;
    for (unsigned i = 0; i < tm_obj(st, "k")->cur->nrep; i++) {
        live += tm_obj(st, "k")->cur->rep[i].seg != NULL;
    }
    assert_int_equal(1, live);

    /* It remounts and reports: the same put is taken back... */
    assert_dango_ok(dango__store_ms_remount(st, tm_cid(2), &d, 1, now));
    dango__store_ms_seg_recovering(st, tm_cid(2), &d, 1, 1);
    r = (ms_record_t){tm_key("k"), 100, 0x5eed, put_id, addr_b};
    assert_dango_ok(dango__store_ms_restore(st, tm_cid(2), &r, now));
    live = 0;
    for (unsigned i = 0; i < tm_obj(st, "k")->cur->nrep; i++) {
        live += tm_obj(st, "k")->cur->rep[i].seg != NULL;
    }
    assert_int_equal(2, live);
    /* ...but not twice, nor another checksum, nor a key it does not know. */
    assert_int_equal(1, dango__store_ms_restore(st, tm_cid(2), &r, now));
    r.checksum = 1;
    r.addr     = addr_b + 4096;
    assert_int_equal(1, dango__store_ms_restore(st, tm_cid(2), &r, now));
    /* Past the rebuild window (60 s from that first remount). */
    r.key      = tm_key("gone");
    r.checksum = 0x5eed;
    assert_int_equal(
        1, dango__store_ms_restore(st, tm_cid(2), &r, now + 61 * 1000));
    assert_null(tm_obj(st, "gone"));
    dango__store_ms_seg_recovering(st, tm_cid(2), &d, 1, 0);
    drain(st, now);
    dango__store_ms_destroy(st);
}

/* The same with every replica slot used: the slot of the dropped replica
 * does not count against DANGO_STORE_REPLICA_MAX. */
static void restore_readopts_same_put_at_the_limit(void **state)
{
    ms_state_t  *st = tm_state();
    ms_put_cfg_t cfg;
    ms_record_t  r;
    ms_ver_t    *v;
    ms_obj_t    *o;
    uint64_t     now = T0, addr = 0, put_id, last = DANGO_STORE_REPLICA_MAX;
    char         name[16];

    (void)state;
    for (uint64_t i = 1; i <= last; i++) {
        snprintf(name, sizeof(name), "node-%llu", (unsigned long long)i);
        tm_mount(st, i, i, name, MiB, now);
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.replica_num = DANGO_STORE_REPLICA_MAX;
    assert_dango_ok(tm_put_start_cfg(st, 1, "k", 100, &cfg, 0, now, &v));
    put_id = v->put_id;
    assert_int_equal(DANGO_STORE_REPLICA_MAX, v->nrep);
    for (unsigned i = 0; i < v->nrep; i++) {
        if (v->rep[i].seg->id_hi == last) {
            addr = ms_rep_addr(&v->rep[i]);
        }
    }
    assert_dango_ok(tm_put_end(st, 1, "k", put_id, 0, now));

    /* The last node expires, then comes back with its record. */
    now += 2 * 60 * 1000;
    for (uint64_t i = 1; i < last; i++) {
        assert_int_equal(0, dango__store_ms_ping(st, tm_cid(i), now));
    }
    assert_int_equal(1, dango__store_ms_monitor(st, now));
    assert_int_equal(DANGO_STORE_REPLICA_MAX - 1, tm_obj(st, "k")->cur->nlive);
    snprintf(name, sizeof(name), "node-%llu", (unsigned long long)last);
    {
        ms_seg_desc_t d = {last, last,  name, 0x100000000ull * last,
                           MiB,  "host"};

        assert_dango_ok(dango__store_ms_remount(st, tm_cid(last), &d, 1, now));
    }
    r = (ms_record_t){tm_key("k"), 100, 0x5eed, put_id, addr};
    assert_dango_ok(dango__store_ms_restore(st, tm_cid(last), &r, now));
    o = tm_obj(st, "k");
    assert_int_equal(DANGO_STORE_REPLICA_MAX, o->cur->nlive);
    assert_true(o->cur->nrep <= DANGO_STORE_REPLICA_MAX);
    tm_invariants(st);
    drain(st, now);
    dango__store_ms_destroy(st);
}

static uint64_t rnd(uint64_t *s, uint64_t n)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (*s >> 33) % n;
}

/* Random operations of three clients on four small segments, with every
 * invariant checked after each step, then everything drained. */
static void random_operations(void **state)
{
    ms_state_t *st  = tm_state();
    uint64_t    rng = 12345;
    uint64_t    now = T0;
    uint64_t    ids[64];
    uint64_t    sids[64], srec[64];
    int         alive[4] = {1, 1, 1, 1};
    char        k[16];

    (void)state;
    memset(ids, 0, sizeof(ids));
    memset(sids, 0, sizeof(sids));
    memset(srec, 0, sizeof(srec));
    for (uint64_t c = 1; c <= 3; c++) {
        char name[16];

        snprintf(name, sizeof(name), "node-%llu", (unsigned long long)c);
        tm_mount(st, c, c, name, 64 * KiB, now);
    }
    tm_mount(st, 3, 4, "node-3", 32 * KiB, now);

#define RND(_n) rnd(&rng, (_n))
    for (int step = 0; step < 20000; step++) {
        uint64_t     c  = 1 + RND(3);
        unsigned     ki = (unsigned)RND(64);
        unsigned     op = (unsigned)RND(100);
        ms_put_cfg_t cfg;
        ms_ver_t    *v;
        int          rc;

        if (!alive[c] && (op < 84)) {
            op = 99; /* a quiet client sends nothing: time passes */
        }
        snprintf(k, sizeof(k), "key-%u", ki);
        memset(&cfg, 0, sizeof(cfg));
        cfg.replica_num = 1 + (unsigned)RND(3);
        cfg.soft_pin    = (unsigned)RND(3);
        cfg.hard_pin    = (RND(20) == 0);
        if (op < 30) {
            rc = tm_put_start_cfg(st, c, k, 1 + RND(6000), &cfg, RND(3) == 0,
                                  now, &v);
            if (rc == 0) {
                ids[ki] = v->put_id;
            }
        } else if (op < 50) {
            tm_put_end(st, c, k, ids[ki], RND(5) == 0, now);
        } else if (op < 55) {
            /* Slots: granted, bound (any length), given back. */
            unsigned j = (unsigned)RND(64);

            if (RND(3) == 0) {
                ms_client_t *cl =
                    dango__store_ms_client_touch(st, tm_cid(c), now);
                ms_ver_t *sv[4];
                uint64_t  rec = dango_store_rec_size(strlen(k), 1 + RND(6000));
                size_t    got = dango__store_ms_slot_grant(
                       st, cl, &cfg, 1 + RND(4), rec, now, sv);

                for (size_t i = 0; i < got; i++) {
                    sids[(j + i) % 64] = sv[i]->put_id;
                    srec[(j + i) % 64] = rec;
                }
            } else if ((RND(4) == 0) && (sids[j] != 0)) {
                dango__store_ms_slot_release(st, tm_cid(c), 1, &sids[j], now);
            } else if (sids[j] != 0) {
                tm_bind(st, c, k, sids[j],
                        srec[j] - dango_store_rec_value_off(strlen(k)), now);
            }
        } else if (op < 75) {
            tm_get(st, k, now, NULL);
        } else if (op < 80) {
            tm_remove(st, k, RND(2), now);
        } else if (op < 82) {
            ms_key_t key = tm_key(k);

            if (tm_obj(st, k) != NULL && tm_obj(st, k)->cur != NULL &&
                tm_obj(st, k)->cur->rep[0].seg != NULL) {
                ms_rep_t *r = &tm_obj(st, k)->cur->rep[0];

                dango__store_ms_report_bad(
                    st, tm_cid(c), &key, tm_obj(st, k)->cur->put_id,
                    r->seg->name->name, ms_rep_addr(r), now);
            }
        } else if (op < 83) {
            dango__store_ms_remove_match(st, "^key-1", 0, RND(2), now);
        } else if (op < 84) {
            /* A client goes quiet for a while. */
            alive[c] = 0;
        } else {
            now += RND(400);
            for (uint64_t x = 1; x <= 3; x++) {
                if (alive[x] ||
                    (RND(100) == 0)) { /* ... and comes back, remounting */
                    ms_seg_desc_t d[2];
                    char          name[16];
                    size_t        nd = 1;

                    alive[x] = 1;
                    if (dango__store_ms_ping(st, tm_cid(x), now) ==
                        DANGO_ENEED_REMOUNT) {
                        snprintf(name, sizeof(name), "node-%llu",
                                 (unsigned long long)x);
                        d[0] = (ms_seg_desc_t){
                            x, x, name, 0x100000000ull * x, 64 * KiB, "host"};
                        if (x == 3) {
                            d[1] = (ms_seg_desc_t){
                                3, 4, name, 0x400000000ull, 32 * KiB, "host"};
                            nd = 2;
                        }
                        assert_dango_ok(
                            dango__store_ms_remount(st, tm_cid(x), d, nd, now));
                    }
                }
            }
            dango__store_ms_monitor(st, now);
            dango__store_ms_tick(st, now);
        }
        tm_invariants(st);
    }
#undef RND

    if (getenv("TM_VERBOSE") != NULL) {
        print_message("evicted %llu expired %llu zombies %llu discards %llu "
                      "reclaims %llu bad %llu partial %llu allocfail %llu "
                      "releases %llu slots %llu bound %llu released %llu\n",
                      (unsigned long long)st->c.evicted_keys,
                      (unsigned long long)st->c.clients_expired,
                      (unsigned long long)st->c.zombie_puts,
                      (unsigned long long)st->c.discards,
                      (unsigned long long)st->c.reclaims,
                      (unsigned long long)st->c.bad_replicas,
                      (unsigned long long)st->c.partial_allocs,
                      (unsigned long long)st->c.alloc_failures,
                      (unsigned long long)st->c.releases,
                      (unsigned long long)st->c.slots_granted,
                      (unsigned long long)st->c.slots_bound,
                      (unsigned long long)st->c.slots_released);
    }
    assert_true(st->c.evicted_keys > 0);
    assert_true(st->c.clients_expired > 0);
    assert_true(st->c.zombie_puts > 0);
    assert_true(st->c.slots_bound > 0);
    assert_true(st->c.slots_released > 0);
    drain(st, now + 1000);
    dango__store_ms_destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(put_state_machine, tm_teardown),
        cmocka_unit_test_teardown(put_validation, tm_teardown),
        cmocka_unit_test_teardown(stale_put_preempted_then_released,
                                  tm_teardown),
        cmocka_unit_test_teardown(unfinished_put_reclaimed, tm_teardown),
        cmocka_unit_test_teardown(upsert, tm_teardown),
        cmocka_unit_test_teardown(put_start_retry, tm_teardown),
        cmocka_unit_test_teardown(leases, tm_teardown),
        cmocka_unit_test_teardown(report_bad, tm_teardown),
        cmocka_unit_test_teardown(list_paging, tm_teardown),
        cmocka_unit_test_teardown(remove_match, tm_teardown),
        cmocka_unit_test_teardown(location_cache, tm_teardown),
        cmocka_unit_test_teardown(location_cache_remove_match_and_floor,
                                  tm_teardown),
        cmocka_unit_test_teardown(slots, tm_teardown),
        cmocka_unit_test_teardown(slots_end_and_bounds, tm_teardown),
        cmocka_unit_test_teardown(batch_calls, tm_teardown),
        cmocka_unit_test_teardown(oom_paths, tm_teardown),
        cmocka_unit_test_teardown(restore_from_reports, tm_teardown),
        cmocka_unit_test_teardown(ghost_comes_back_with_its_node, tm_teardown),
        cmocka_unit_test_teardown(ghost_replaced_by_put_in_flight, tm_teardown),
        cmocka_unit_test_teardown(restore_readopts_same_put, tm_teardown),
        cmocka_unit_test_teardown(restore_readopts_same_put_at_the_limit,
                                  tm_teardown),
        cmocka_unit_test_teardown(fence_keeps_late_writes_off_new_puts,
                                  tm_teardown),
        cmocka_unit_test_teardown(fence_follows_the_segment, tm_teardown),
        cmocka_unit_test_teardown(restore_no_evict_while_reporting,
                                  tm_teardown),
        cmocka_unit_test_teardown(random_operations, tm_teardown),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
