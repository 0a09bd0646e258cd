/*
 * Helpers of the master state tests: a state with test parameters and a
 * fixed placement seed, one-key wrappers around the batch calls, and
 * checks that every allocator is consistent and agrees with the master's
 * accounting.
 */
#ifndef TEST_MASTER_UTIL_H
#define TEST_MASTER_UTIL_H

#include <string.h>

/* First: it names the log component before dango/log.h is seen. */
#include "store/store_master_int.h"

#include "dango_test.h"

#include "common/alloc.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)

/* The fake clock starts here (ms). */
#define T0 1000000ull

static inline ms_cid_t tm_cid(uint64_t n)
{
    ms_cid_t id = {0xc11e0000ull + n, n};

    return id;
}

static inline ms_state_t *tm_state_with(const ms_params_t *p)
{
    ms_state_t *st = NULL;

    assert_dango_ok(dango__store_ms_create(p, &st));
    return st;
}

static inline ms_state_t *tm_state(void)
{
    ms_params_t p;

    dango__store_ms_params_default(&p);
    p.seed = 42;
    return tm_state_with(&p);
}

/* Mounts segment @idx (id idx/idx) named @name for client @c. */
static inline void tm_mount(ms_state_t *st, uint64_t c, uint64_t idx,
                            const char *name, uint64_t size, uint64_t now)
{
    ms_seg_desc_t d = {idx, idx, name, 0x100000000ull * idx, size, "host"};

    assert_dango_ok(dango__store_ms_mount(st, tm_cid(c), &d, now));
}

static inline ms_key_t tm_key(const char *k)
{
    ms_key_t key = {k, strlen(k)};

    return key;
}

static inline int tm_put_start_cfg(ms_state_t *st, uint64_t c, const char *k,
                                   uint64_t size, const ms_put_cfg_t *cfg,
                                   int upsert, uint64_t now, ms_ver_t **v_p)
{
    ms_key_t  key = tm_key(k);
    ms_ver_t *v   = NULL;
    uint64_t  sum = 0x5eed;
    int       status;

    assert_dango_ok(dango__store_ms_put_start(
        st, tm_cid(c), 1, &key, &size, &sum, cfg, upsert, now, &status, &v));
    if (v_p != NULL) {
        *v_p = v;
    }
    return status;
}

static inline int tm_put_start(ms_state_t *st, uint64_t c, const char *k,
                               uint64_t size, uint64_t now, ms_ver_t **v_p)
{
    ms_put_cfg_t cfg;

    memset(&cfg, 0, sizeof(cfg));
    return tm_put_start_cfg(st, c, k, size, &cfg, 0, now, v_p);
}

static inline int tm_put_end(ms_state_t *st, uint64_t c, const char *k,
                             uint64_t put_id, int revoke, uint64_t now)
{
    ms_key_t key = tm_key(k);
    int      status;

    assert_dango_ok(dango__store_ms_put_end(st, tm_cid(c), 1, &key, &put_id,
                                            revoke, now, &status));
    return status;
}

/* PutBind of @k (value @size bytes) to slot @put_id of client @c. */
static inline int tm_bind(ms_state_t *st, uint64_t c, const char *k,
                          uint64_t put_id, uint64_t size, uint64_t now)
{
    ms_key_t     key = tm_key(k);
    uint64_t     sum = 0x5107;
    ms_put_cfg_t cfg;
    int          status;

    memset(&cfg, 0, sizeof(cfg));
    assert_dango_ok(dango__store_ms_put_bind(st, tm_cid(c), 1, &key, &put_id,
                                             &size, &sum, &cfg, now, &status));
    return status;
}

/* Grants client @c up to @count slots for records of @rec bytes. */
static inline size_t tm_slots(ms_state_t *st, uint64_t c, size_t count,
                              uint64_t rec, uint64_t now, ms_ver_t **v)
{
    ms_client_t *cl = dango__store_ms_client_touch(st, tm_cid(c), now);
    ms_put_cfg_t cfg;

    memset(&cfg, 0, sizeof(cfg));
    assert_non_null(cl);
    return dango__store_ms_slot_grant(st, cl, &cfg, count, rec, now, v);
}

/* Put start + end; returns the put id. */
static inline uint64_t tm_put(ms_state_t *st, uint64_t c, const char *k,
                              uint64_t size, uint64_t now)
{
    ms_ver_t *v;
    uint64_t  put_id;

    assert_dango_ok(tm_put_start(st, c, k, size, now, &v));
    put_id = v->put_id;
    assert_dango_ok(tm_put_end(st, c, k, put_id, 0, now));
    return put_id;
}

static inline int tm_get_lease(ms_state_t *st, const char *k, int no_lease,
                               uint64_t now, ms_obj_t **o_p)
{
    ms_key_t  key = tm_key(k);
    ms_obj_t *o   = NULL;
    int       status;

    assert_dango_ok(
        dango__store_ms_get(st, 1, &key, no_lease, now, &status, &o));
    if (o_p != NULL) {
        *o_p = o;
    }
    return status;
}

static inline int tm_get(ms_state_t *st, const char *k, uint64_t now,
                         ms_obj_t **o_p)
{
    return tm_get_lease(st, k, 0, now, o_p);
}

static inline int tm_exist(ms_state_t *st, const char *k, uint64_t now)
{
    ms_key_t key = tm_key(k);
    int      status;

    assert_dango_ok(dango__store_ms_exist(st, 1, &key, now, &status));
    return status;
}

static inline int tm_remove(ms_state_t *st, const char *k, int force,
                            uint64_t now)
{
    ms_key_t key = tm_key(k);
    int      status;

    assert_dango_ok(dango__store_ms_remove(st, 1, &key, force, now, &status));
    return status;
}

/* The object of @k in the map, or NULL (no lease, any state). */
static inline ms_obj_t *tm_obj(ms_state_t *st, const char *k)
{
    dango_hmap_node_t *n =
        dango_hmap_find(&st->objs, k, strlen(k), dango_hmap_hash(k, strlen(k)));

    return (n != NULL) ? dango_container_of(n, ms_obj_t, node) : NULL;
}

/* Every allocator is consistent and holds what the master accounts. */
static inline void tm_check(ms_state_t *st)
{
    uint64_t used = 0;

    for (size_t i = 0; i < st->nsegs; i++) {
        dango_store_alloc_stats_t s;
        ms_seg_t                 *seg = st->segs[i];

        assert_dango_ok(dango__store_alloc_check(seg->alloc));
        dango__store_alloc_stats(seg->alloc, &s);
        assert_int_equal(s.allocated_bytes, seg->used);
        assert_int_equal(seg->idx, i);
        used += seg->used;
    }
    assert_int_equal(used, st->used);
}

/* Nothing is allocated anywhere (after everything was removed). */
static inline void tm_check_empty(ms_state_t *st)
{
    tm_check(st);
    for (size_t i = 0; i < st->nsegs; i++) {
        dango_store_alloc_stats_t s;

        dango__store_alloc_stats(st->segs[i]->alloc, &s);
        assert_int_equal(s.allocated_count, 0);
    }
    assert_int_equal(st->used, 0);
    assert_int_equal(st->parked_bytes, 0);
}

/* Every structural invariant of the state (O(everything): tests only). */
static inline void tm_invariants(ms_state_t *st)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    ms_ver_t          *v;
    size_t             live_reps   = 0;
    size_t             listed_reps = 0;
    size_t             pinned      = 0;
    size_t             inflight    = 0;
    size_t             slots       = 0;
    uint64_t           slot_bytes  = 0;
    uint64_t           parked      = 0;

    tm_check(st);
    dango_hmap_iter_begin(&st->objs, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_obj_t *o = dango_container_of(node, ms_obj_t, node);

        assert_true((o->cur != NULL) || (o->pend != NULL));
        pinned += (o->soft_pin_timeout != 0);
        for (int w = 0; w < 2; w++) {
            ms_ver_t *x = (w == 0) ? o->cur : o->pend;
            unsigned  n = 0;

            if (x == NULL) {
                continue;
            }
            assert_ptr_equal(x->obj, o);
            assert_int_equal(x->heap_idx, SIZE_MAX);
            assert_int_equal(x->client != NULL, w == 1);
            for (unsigned i = 0; i < x->nrep; i++) {
                if (x->rep[i].seg != NULL) {
                    n++;
                    assert_int_equal(x->rep[i].status,
                                     (w == 0) ? DANGO_STORE_REPLICA_COMPLETE
                                              : DANGO_STORE_REPLICA_PROCESSING);
                }
            }
            assert_int_equal(n, x->nlive);
            assert_true(n > 0);
            live_reps += n;
        }
    }
    dango_hmap_iter_end(&it);
    assert_int_equal(pinned, st->soft_pinned);

    for (size_t i = 0; i < st->nparked; i++) {
        v = st->parked[i];
        assert_int_equal(v->heap_idx, i);
        assert_null(v->obj);
        assert_true(v->nlive > 0);
        if (i > 0) {
            assert_true(st->parked[(i - 1) / 2]->free_at <= v->free_at);
        }
        for (unsigned j = 0; j < v->nrep; j++) {
            if (v->rep[j].seg != NULL) {
                parked += (v->rec_len + v->rep[j].seg->granule - 1) /
                          v->rep[j].seg->granule * v->rep[j].seg->granule;
                live_reps++;
            }
        }
    }
    assert_int_equal(parked, st->parked_bytes);

    /* Slots: in flight with no object, each in the slot map. */
    dango_list_for_each(v, &st->inflight, inflight_link)
    {
        inflight++;
        if (!v->slot) {
            assert_non_null(v->obj);
            assert_ptr_equal(v->obj->pend, v);
            continue;
        }
        assert_null(v->obj);
        assert_non_null(v->client);
        assert_ptr_equal(dango__store_ms_slot_find(st, v->put_id), v);
        assert_true(v->nlive > 0);
        live_reps += v->nlive;
        slots++;
        slot_bytes += v->rec_len;
    }
    assert_int_equal(inflight, st->ninflight);
    assert_int_equal(slots, dango_hmap_count(&st->slots));
    assert_int_equal(slot_bytes, st->slot_bytes);

    for (size_t i = 0; i < st->nsegs; i++) {
        ms_rep_t *r;

        dango_list_for_each(r, &st->segs[i]->replicas, seg_link)
        {
            assert_ptr_equal(r->seg, st->segs[i]);
            listed_reps++;
        }
    }
    assert_int_equal(listed_reps, live_reps);
}

static inline int tm_teardown(void **state)
{
    (void)state;
    dango__alloc_fail_after(-1);
    return 0;
}

#endif
