/*
 * Master state: copies (CopyStart / CopyEnd) and KV events, driven with a
 * fake clock.
 */
#include <stdio.h>
#include <stdlib.h>
#include "test_master_util.h"

/* Two nodes: client 1 owns "node-a" (segment 1), client 2 "node-b" (2). */
static ms_state_t *two_nodes(void)
{
    ms_state_t *st = tm_state();

    tm_mount(st, 1, 1, "node-a", MiB, T0);
    tm_mount(st, 2, 2, "node-b", MiB, T0);
    return st;
}

/* Puts @k (100 bytes) with its one replica on node @name. */
static uint64_t put_on(ms_state_t *st, const char *k, const char *name,
                       uint64_t now)
{
    const char  *pref[1] = {name};
    ms_put_cfg_t cfg;
    ms_ver_t    *v;
    uint64_t     put_id;

    memset(&cfg, 0, sizeof(cfg));
    cfg.preferred  = pref;
    cfg.npreferred = 1;
    assert_dango_ok(tm_put_start_cfg(st, 1, k, 100, &cfg, 0, now, &v));
    assert_string_equal(v->rep[0].seg->name->name, name);
    put_id = v->put_id;
    assert_dango_ok(tm_put_end(st, 1, k, put_id, 0, now));
    return put_id;
}

static int copy_start(ms_state_t *st, uint64_t c, const char *k,
                      const char *target, uint64_t now, ms_ver_t **cv_p)
{
    ms_key_t  key = tm_key(k);
    ms_obj_t *o   = NULL;
    ms_ver_t *cv  = NULL;
    int       rc;

    rc = dango__store_ms_copy_start(st, tm_cid(c), &key, target, now, &cv, &o);
    if (cv_p != NULL) {
        *cv_p = cv;
    }
    return rc;
}

/* Copies in flight (parked with a copy id). */
static size_t copies(const ms_state_t *st)
{
    size_t n = 0;

    for (size_t i = 0; i < st->nparked; i++) {
        n += (st->parked[i]->copy_id != 0);
    }
    return n;
}

static int copy_end(ms_state_t *st, uint64_t c, const char *k, uint64_t copy_id,
                    int revoke, uint64_t now)
{
    ms_key_t key = tm_key(k);

    return dango__store_ms_copy_end(st, tm_cid(c), &key, copy_id, revoke, now);
}

static void copy_adds_a_replica(void **state)
{
    ms_state_t *st = two_nodes();
    uint64_t    put_id;
    ms_ver_t   *cv;
    ms_obj_t   *o;
    uint64_t    copy_id;

    (void)state;
    put_id = put_on(st, "k", "node-a", T0);
    assert_dango_ok(copy_start(st, 3, "k", "node-b", T0, &cv));
    assert_int_equal(cv->put_id, put_id);
    assert_int_equal(cv->size, 100);
    assert_int_equal(cv->nrep, 1);
    assert_string_equal(cv->rep[0].seg->name->name, "node-b");
    assert_int_equal(cv->rep[0].status, DANGO_STORE_REPLICA_PROCESSING);
    copy_id = cv->copy_id;
    tm_invariants(st);

    /* Readers do not see the copy before it ends; the object is leased. */
    assert_dango_ok(tm_get_lease(st, "k", 1, T0, &o));
    assert_int_equal(o->cur->nrep, 1);
    assert_true(o->lease_timeout > T0);

    /* Someone else's end, or an unknown id, is refused. */
    assert_dango_err(DANGO_ENO_OBJECT, copy_end(st, 4, "k", copy_id, 0, T0));
    assert_dango_err(DANGO_ENO_OBJECT,
                     copy_end(st, 3, "k", copy_id + 1000, 0, T0));
    assert_dango_ok(copy_end(st, 3, "k", copy_id, 0, T0 + 1));
    o = tm_obj(st, "k");
    assert_int_equal(o->cur->nrep, 2);
    assert_int_equal(o->cur->nlive, 2);
    assert_int_equal(o->cur->rep[1].status, DANGO_STORE_REPLICA_COMPLETE);
    assert_string_equal(o->cur->rep[1].seg->name->name, "node-b");
    tm_invariants(st);

    /* Ended once: a second end finds nothing. */
    assert_dango_err(DANGO_ENO_OBJECT, copy_end(st, 3, "k", copy_id, 0, T0));

    /* Both nodes hold it now; bad targets and keys. */
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     copy_start(st, 3, "k", "node-a", T0, NULL));
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     copy_start(st, 3, "k", "node-b", T0, NULL));
    assert_dango_err(DANGO_ENO_SEGMENT,
                     copy_start(st, 3, "k", "node-z", T0, NULL));
    assert_dango_err(DANGO_ENO_OBJECT,
                     copy_start(st, 3, "nope", "node-b", T0, NULL));
    assert_dango_err(DANGO_EINVAL, copy_start(st, 3, "k", NULL, T0, NULL));

    /* Removing the object frees both regions. */
    assert_dango_ok(tm_remove(st, "k", 1, T0 + 20000));
    dango__store_ms_tick(st, T0 + 20000);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void copy_of_a_changed_value_is_dropped(void **state)
{
    ms_state_t *st = two_nodes();
    ms_ver_t   *cv;
    uint64_t    id;

    (void)state;
    (void)put_on(st, "k", "node-a", T0);

    /* Removed during the copy. */
    assert_dango_ok(copy_start(st, 3, "k", "node-b", T0, &cv));
    id = cv->copy_id;
    assert_dango_ok(tm_remove(st, "k", 1, T0));
    assert_dango_err(DANGO_ENO_OBJECT, copy_end(st, 3, "k", id, 0, T0));
    tm_invariants(st);

    /* Replaced (removed and put again) during the copy. */
    (void)put_on(st, "k", "node-a", T0);
    assert_dango_ok(copy_start(st, 3, "k", "node-b", T0, &cv));
    id = cv->copy_id;
    assert_dango_ok(tm_remove(st, "k", 1, T0));
    (void)put_on(st, "k", "node-a", T0);
    assert_dango_err(DANGO_ENO_OBJECT, copy_end(st, 3, "k", id, 0, T0));
    assert_int_equal(tm_obj(st, "k")->cur->nrep, 1);
    tm_invariants(st);

    /* Revoked: freed at once. */
    assert_dango_ok(copy_start(st, 3, "k", "node-b", T0, &cv));
    assert_dango_ok(copy_end(st, 3, "k", cv->copy_id, 1, T0));
    assert_int_equal(copies(st), 0);
    tm_invariants(st);

    /* Never ended: freed PUT_RELEASE_TIMEOUT after the start. */
    assert_dango_ok(copy_start(st, 3, "k", "node-b", T0, &cv));
    id = cv->copy_id;
    dango__store_ms_tick(st, T0 + st->p.put_release_ms - 1);
    assert_int_equal(copies(st), 1);
    dango__store_ms_tick(st, T0 + st->p.put_release_ms);
    assert_int_equal(copies(st), 0);
    assert_dango_err(DANGO_ENO_OBJECT, copy_end(st, 3, "k", id, 0, T0));

    assert_dango_ok(tm_remove(st, "k", 1, T0 + st->p.put_release_ms));
    dango__store_ms_tick(st, T0 + 2 * st->p.put_release_ms);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

static void copy_to_a_full_node(void **state)
{
    ms_state_t *st = tm_state();
    ms_ver_t   *cv;

    (void)state;
    tm_mount(st, 1, 1, "node-a", MiB, T0);
    tm_mount(st, 2, 2, "node-b", 4 * KiB, T0);
    (void)put_on(st, "big", "node-a", T0);
    assert_dango_ok(copy_start(st, 3, "big", "node-b", T0, &cv));
    assert_dango_ok(copy_end(st, 3, "big", cv->copy_id, 0, T0));

    /* node-b is nearly full now: the next copy finds no room there and is
     * never placed anywhere else. */
    for (int i = 0; i < 64; i++) {
        char k[16];
        int  rc;

        snprintf(k, sizeof(k), "k%d", i);
        (void)put_on(st, k, "node-a", T0);
        rc = copy_start(st, 3, k, "node-b", T0, &cv);
        if (rc == DANGO_ENOSPC) {
            tm_invariants(st);
            dango__store_ms_destroy(st);
            return;
        }
        assert_dango_ok(rc);
        assert_string_equal(cv->rep[0].seg->name->name, "node-b");
    }
    fail_msg("a 4 KiB node took 64 copies");
}

/*
 * The replica limit counts live replicas: slots of replicas dropped with
 * their segment do not keep an object from being copied again, and the
 * array does not grow with each drop and copy.
 */
static void copy_counts_live_replicas(void **state)
{
    ms_state_t *st  = tm_state();
    uint64_t    now = T0;
    ms_ver_t   *cv;
    ms_obj_t   *o;
    char        name[16];
    int         refused = 0;

    (void)state;
    for (uint64_t i = 1; i <= DANGO_STORE_REPLICA_MAX + 1; i++) {
        snprintf(name, sizeof(name), "node-%llu", (unsigned long long)i);
        tm_mount(st, i, i, name, MiB, now);
    }
    (void)put_on(st, "k", "node-1", now);
    for (int i = 2; i <= DANGO_STORE_REPLICA_MAX; i++) {
        snprintf(name, sizeof(name), "node-%d", i);
        assert_dango_ok(copy_start(st, 99, "k", name, now, &cv));
        assert_dango_ok(copy_end(st, 99, "k", cv->copy_id, 0, now));
    }
    snprintf(name, sizeof(name), "node-%d", DANGO_STORE_REPLICA_MAX + 1);
    assert_dango_err(DANGO_ERANGE, copy_start(st, 99, "k", name, now, NULL));

    /* Each round: a node holding a replica goes away and comes back
     * empty, and gets a copy again. */
    for (int round = 0; round < 3 * DANGO_STORE_REPLICA_MAX; round++) {
        ms_seg_t *seg = NULL;
        uint64_t  idx;

        o = tm_obj(st, "k");
        for (unsigned i = 0; (seg == NULL) && (i < o->cur->nrep); i++) {
            seg = o->cur->rep[i].seg;
        }
        assert_non_null(seg);
        snprintf(name, sizeof(name), "%s", seg->name->name);
        idx = seg->id_hi;

        assert_dango_ok(
            dango__store_ms_unmount(st, tm_cid(idx), idx, idx, now));
        assert_int_equal(tm_obj(st, "k")->cur->nlive,
                         DANGO_STORE_REPLICA_MAX - 1);
        tm_mount(st, idx, idx, name, MiB, now);

        assert_dango_ok(copy_start(st, 99, "k", name, now, &cv));
        assert_dango_ok(copy_end(st, 99, "k", cv->copy_id, 0, now));
        o = tm_obj(st, "k");
        assert_int_equal(o->cur->nlive, DANGO_STORE_REPLICA_MAX);
        assert_true(o->cur->nrep <= DANGO_STORE_REPLICA_MAX);
        tm_invariants(st);
        now += 1000;
    }
    /* Eight live replicas: the one node without one is refused. */
    for (int i = 1; i <= DANGO_STORE_REPLICA_MAX + 1; i++) {
        int rc;

        snprintf(name, sizeof(name), "node-%d", i);
        rc = copy_start(st, 99, "k", name, now, NULL);
        refused += (rc == DANGO_ERANGE);
        assert_true((rc == DANGO_ERANGE) || (rc == DANGO_EOBJ_EXISTS));
    }
    assert_int_equal(refused, 1);

    /* The regions of the departed segments stay fenced for a while. */
    assert_dango_ok(tm_remove(st, "k", 1, now + 20000));
    dango__store_ms_tick(st, now + 1000ull * 1000 * 1000);
    tm_check_empty(st);
    dango__store_ms_destroy(st);
}

/* Takes client @c's KV events as "+key" / "-key" lines. */
static size_t kv_take(ms_state_t *st, uint64_t c, char *out, size_t cap)
{
    ms_kv_q_t *q = NULL;
    size_t     n = 0, at = 0;

    out[0] = '\0';
    assert_dango_ok(dango__store_ms_kv_take(st, tm_cid(c), &q));
    if (q == NULL) {
        return 0;
    }
    for (size_t i = 0; i < q->n; i++) {
        at += (size_t)snprintf(out + at, cap - at, "%c%.*s ",
                               q->ev[i].stored ? '+' : '-', (int)q->ev[i].len,
                               q->keys + q->ev[i].off);
        n++;
    }
    dango__store_ms_kv_free(q);
    return n;
}

static void kv_events_follow_the_segment(void **state)
{
    ms_state_t *st = two_nodes();
    ms_ver_t   *cv;
    char        ev[512];

    (void)state;
    /* Nothing is queued before a client's first poll. */
    (void)put_on(st, "before", "node-b", T0);
    assert_int_equal(kv_take(st, 2, ev, sizeof(ev)), 0);
    assert_int_equal(kv_take(st, 2, ev, sizeof(ev)), 0);

    /* Puts on node-b, not node-a; a copy to node-b; removes. */
    (void)put_on(st, "b1", "node-b", T0);
    (void)put_on(st, "a1", "node-a", T0);
    assert_dango_ok(copy_start(st, 3, "a1", "node-b", T0, &cv));
    assert_dango_ok(copy_end(st, 3, "a1", cv->copy_id, 0, T0));
    assert_dango_ok(tm_remove(st, "b1", 1, T0));
    assert_int_equal(kv_take(st, 2, ev, sizeof(ev)), 3);
    assert_string_equal(ev, "+b1 +a1 -b1 ");

    /* Removing an object with replicas on both nodes tells node-b. */
    assert_dango_ok(tm_remove(st, "a1", 1, T0));
    assert_int_equal(kv_take(st, 2, ev, sizeof(ev)), 1);
    assert_string_equal(ev, "-a1 ");

    /* node-a never polled: nothing was queued for it. */
    assert_int_equal(kv_take(st, 1, ev, sizeof(ev)), 0);

    /* An unknown client gets nothing and no queue. */
    assert_int_equal(kv_take(st, 77, ev, sizeof(ev)), 0);
    dango__store_ms_destroy(st);
}

/* A queue whose reply could not be built goes back in its place, with its
 * drop count: the consumer never silently misses events. */
static void kv_events_survive_a_failed_reply(void **state)
{
    ms_state_t *st = two_nodes();
    ms_kv_q_t  *q  = NULL;
    char        ev[256];

    (void)state;
    assert_int_equal(kv_take(st, 2, ev, sizeof(ev)), 0);
    (void)put_on(st, "a", "node-b", T0);
    assert_dango_ok(dango__store_ms_kv_take(st, tm_cid(2), &q));
    assert_int_equal(q->n, 1);
    q->dropped = 3; /* as if some had overflowed */
    dango__store_ms_kv_untake(st, tm_cid(2), q);
    assert_dango_ok(dango__store_ms_kv_take(st, tm_cid(2), &q));
    assert_int_equal(q->n, 1);
    assert_int_equal(q->ev[0].len, 1);
    assert_int_equal(q->keys[q->ev[0].off], 'a');
    assert_int_equal(q->dropped, 3);
    dango__store_ms_kv_free(q);
    assert_int_equal(kv_take(st, 2, ev, sizeof(ev)), 0);

    (void)put_on(st, "b", "node-b", T0);
    assert_int_equal(kv_take(st, 2, ev, sizeof(ev)), 1);
    assert_string_equal(ev, "+b ");
    dango__store_ms_destroy(st);
}

static void kv_events_are_bounded(void **state)
{
    ms_state_t *st = two_nodes();
    ms_kv_q_t  *q  = NULL;
    char        k[32];

    (void)state;
    assert_dango_ok(dango__store_ms_kv_take(st, tm_cid(2), &q));
    assert_null(q);

    /* Put and remove one key until the queue overflows. */
    for (size_t i = 0; i < MS_KV_EVENTS_MAX / 2 + 10; i++) {
        snprintf(k, sizeof(k), "key-%zu", i % 7);
        (void)put_on(st, k, "node-b", T0);
        assert_dango_ok(tm_remove(st, k, 1, T0));
    }
    assert_dango_ok(dango__store_ms_kv_take(st, tm_cid(2), &q));
    assert_non_null(q);
    assert_int_equal(q->n, MS_KV_EVENTS_MAX);
    assert_int_equal(q->dropped, 20);
    dango__store_ms_kv_free(q);
    dango__store_ms_destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(copy_adds_a_replica, tm_teardown),
        cmocka_unit_test_teardown(copy_of_a_changed_value_is_dropped,
                                  tm_teardown),
        cmocka_unit_test_teardown(copy_to_a_full_node, tm_teardown),
        cmocka_unit_test_teardown(copy_counts_live_replicas, tm_teardown),
        cmocka_unit_test_teardown(kv_events_follow_the_segment, tm_teardown),
        cmocka_unit_test_teardown(kv_events_are_bounded, tm_teardown),
        cmocka_unit_test_teardown(kv_events_survive_a_failed_reply,
                                  tm_teardown),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
