/*
 * Copies: one more replica of an object's committed value, on a node the
 * caller names (CopyStart / CopyEnd; the conductor uses it to replicate hot
 * KV blocks next to the instance that will read them).
 *
 * CopyStart allocates a region on the target node and keeps it as a parked
 * version of its own (copy_id set, one PROCESSING replica, not linked to
 * the object), so a copy that is never ended is freed like any stale put,
 * PUT_RELEASE_TIMEOUT after its start, and one whose segment goes away
 * leaves with it. The client reads the record from a source replica,
 * checks it, writes it to the region (commit word 0) and calls CopyEnd,
 * which moves the region into the object's current version as a COMPLETE
 * replica if that version is still the one copied; then the client writes
 * the commit word, so a rebuild finds the copy as another replica of the
 * same put.
 */
#include "store/store_master_int.h"

#include <string.h>

#include "common/alloc.h"

/* A copy in flight in st->copies, by id. */
typedef struct ms_copy {
    dango_hmap_node_t node; /* key = &id */
    uint64_t          id;
    ms_ver_t         *v;
} ms_copy_t;

static int ver_on_name(const ms_ver_t *v, const ms_name_t *name)
{
    for (unsigned i = 0; i < v->nrep; i++) {
        if ((v->rep[i].seg != NULL) && (v->rep[i].seg->name == name)) {
            return 1;
        }
    }
    return 0;
}

int dango__store_ms_copy_start(ms_state_t *st, ms_cid_t cid, const ms_key_t *k,
                               const char *target, uint64_t now,
                               ms_ver_t **cv_p, ms_obj_t **obj_p)
{
    const char        *pref[1] = {target};
    dango_hmap_node_t *node;
    ms_name_t         *name;
    ms_obj_t          *o;
    ms_ver_t          *cur, *cv;
    ms_seg_t          *seg = NULL;
    uint64_t           off = 0;
    ms_copy_t         *ce;
    size_t             tlen, before;
    int                rc = dango__store_ms_key_check(k);

    if (rc != 0) {
        return rc;
    }
    if (target == NULL) {
        return DANGO_EINVAL;
    }

    o = dango__store_ms_obj_lookup(st, k);
    if ((o == NULL) || (o->cur == NULL)) {
        return DANGO_ENO_OBJECT;
    }
    cur = o->cur;

    tlen = strlen(target);
    node = dango_hmap_find(&st->names, target, tlen,
                           dango_hmap_hash(target, tlen));
    if (node == NULL) {
        return DANGO_ENO_SEGMENT;
    }
    name = dango_container_of(node, ms_name_t, node);
    if (ver_on_name(cur, name)) {
        return DANGO_EOBJ_EXISTS;
    }
    if (cur->nlive >= DANGO_STORE_REPLICA_MAX) {
        return DANGO_ERANGE;
    }

    /* Placement on the preferred name only: nothing else qualifies. */
    if (dango__store_ms_place(st, cur->rec_len, 1, pref, 1, &seg, &off) != 1) {
        st->need_evict = 1;
        return DANGO_ENOSPC;
    }
    if (seg->name != name) {
        /* Cannot happen with one preferred name, but never misplace. */
        dango__store_ms_region_free(st, seg, off, cur->rec_len);
        return DANGO_ENOSPC;
    }

    cv = dango__store_ms_ver_new(1, cid, cur->put_id, cur->size, cur->checksum,
                                 cur->rec_len, now);
    if (cv == NULL) {
        dango__store_ms_region_free(st, seg, off, cur->rec_len);
        return DANGO_ENOMEM;
    }

    cv->copy_id = st->next_put_id++;
    dango__store_ms_rep_add(cv, seg, off, DANGO_STORE_REPLICA_PROCESSING);
    ce = dango_calloc(1, sizeof(*ce), "master_copy");
    if (ce == NULL) {
        cv->copy_id = 0;
        dango__store_ms_ver_free(st, cv);
        return DANGO_ENOMEM;
    }
    ce->id           = cv->copy_id;
    ce->v            = cv;
    ce->node.key     = &ce->id;
    ce->node.key_len = sizeof(ce->id);
    ce->node.hash    = dango_hmap_hash(&ce->id, sizeof(ce->id));
    dango_hmap_insert(&st->copies, &ce->node);
    before = st->nparked;
    dango__store_ms_ver_park(st, cv, now + st->p.put_release_ms, now);
    if (st->nparked == before) {
        /* The park freed it (no memory for the heap): @cv is gone. */
        return DANGO_ENOMEM;
    }

    dango__store_ms_obj_lease(st, o, now);
    *cv_p  = cv;
    *obj_p = o;
    return 0;
}

static ms_copy_t *copy_lookup(ms_state_t *st, uint64_t copy_id)
{
    dango_hmap_node_t *n =
        dango_hmap_find(&st->copies, &copy_id, sizeof(copy_id),
                        dango_hmap_hash(&copy_id, sizeof(copy_id)));

    return (n != NULL) ? dango_container_of(n, ms_copy_t, node) : NULL;
}

static ms_ver_t *copy_find(ms_state_t *st, ms_cid_t cid, uint64_t copy_id)
{
    ms_copy_t *e = copy_lookup(st, copy_id);

    if ((e == NULL) || (e->v->cid.hi != cid.hi) || (e->v->cid.lo != cid.lo)) {
        return NULL;
    }
    return e->v;
}

void dango__store_ms_copy_forget(ms_state_t *st, const ms_ver_t *v)
{
    ms_copy_t *e = copy_lookup(st, v->copy_id);

    if ((e != NULL) && (e->v == v)) {
        dango_hmap_remove(&st->copies, &e->node);
        dango_free(e);
    }
}

int dango__store_ms_copy_end(ms_state_t *st, ms_cid_t cid, const ms_key_t *k,
                             uint64_t copy_id, int revoke, uint64_t now)
{
    ms_obj_t *o;
    ms_ver_t *cv, *cur;
    ms_rep_t *r;
    int       rc = dango__store_ms_key_check(k);

    if (rc != 0) {
        return rc;
    }

    cv = (copy_id != 0) ? copy_find(st, cid, copy_id) : NULL;
    if (cv == NULL) {
        return DANGO_ENO_OBJECT;
    }

    dango__store_ms_ver_unpark(st, cv);
    dango__store_ms_copy_forget(st, cv);
    cv->copy_id = 0; /* an ordinary version from here on */
    o           = dango__store_ms_obj_lookup(st, k);
    if (revoke || (cv->nlive == 0) || (o == NULL) || (o->cur == NULL) ||
        (o->cur->put_id != cv->put_id)) {
        dango__store_ms_ver_free(st, cv);
        return revoke ? 0 : DANGO_ENO_OBJECT;
    }
    if (ver_on_name(o->cur, cv->rep[0].seg->name) ||
        (o->cur->nlive >= DANGO_STORE_REPLICA_MAX)) {
        dango__store_ms_ver_free(st, cv);
        return DANGO_EOBJ_EXISTS;
    }

    cur = dango__store_ms_ver_grow(o->cur);
    if (cur == NULL) {
        dango__store_ms_ver_free(st, cv);
        return DANGO_ENOMEM;
    }

    /* Move the region over: same segment list entry, new owner. */
    r         = &cur->rep[cur->nrep];
    *r        = cv->rep[0];
    r->ver    = cur;
    r->status = DANGO_STORE_REPLICA_COMPLETE;
    dango_list_del(&cv->rep[0].seg_link);
    dango_list_add_tail(&r->seg->replicas, &r->seg_link);
    cur->nrep++;
    cur->nlive++;
    cur->end = now; /* its commit word follows */
    dango_free(cv);

    dango__store_ms_kv_rep(st, o, r, 1);
    return 0;
}
