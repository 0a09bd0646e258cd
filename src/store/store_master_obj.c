/*
 * Master state: object operations (spec store.md §2.2-2.4, §3) and
 * eviction.
 *
 * DESIGN
 * - An object has at most two versions: cur, the committed value readers
 *   get, and pend, a put in flight (PROCESSING, invisible). A plain put
 *   creates pend on an object without cur; an upsert creates pend next to
 *   cur and PutEnd swaps them, parking the old value until the object's
 *   read lease ends so that readers holding it never see its regions
 *   reused. Invariant: an object in the map has cur or pend (or both), and
 *   a version in an object has at least one live replica.
 * - A put of an existing key fails (EOBJ_EXISTS; EBUSY for an upsert)
 *   while another put is in flight and younger than PUT_DISCARD_TIMEOUT;
 *   an older one is preempted: its regions are parked until its start plus
 *   PUT_RELEASE_TIMEOUT, because its writer may still be writing into them.
 * - Leases are a deadline per object: GetReplicaList and Exist extend it to
 *   now + LEASE_TTL, PutEnd to at least now. Remove refuses a leased object
 *   unless forced, and a forced remove of a leased object parks its regions
 *   until the lease ends rather than freeing them under a reader.
 * - Eviction (§3.4) scans the objects once, splits the candidates
 *   (complete, no put in flight, lease over, not hard pinned) into plain
 *   and soft-pinned ones, and picks the oldest lease deadlines with
 *   quickselect: the deadline is the last read (or write), so this is an
 *   approximate LRU.
 * - Batch calls validate the call first (size, config), then answer per
 *   key; a duplicate key of a put batch is found with a small open-address
 *   table of indices built per call (scratch reused across calls).
 */
#include "store/store_master_int.h"

#include <math.h>
#include <regex.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log_limit.h"

/* Readers cause these lines at will: a few a second at most. */
static dango_log_limit_t ms_bad_log_limit = DANGO_LOG_LIMIT_INIT(5);

/* Candidate of an eviction pass. */
typedef struct ms_cand {
    uint64_t  lease;
    ms_obj_t *obj;
} ms_cand_t;

typedef struct ms_cand_vec {
    ms_cand_t *v;
    size_t     n;
    size_t     cap;
} ms_cand_vec_t;

/* ---------- private functions ---------- */

static int key_check(const ms_key_t *k)
{
    if ((k->s == NULL) || (k->len == 0)) {
        return DANGO_EINVAL;
    }
    if (k->len > DANGO_STORE_KEY_MAX) {
        return DANGO_ENAMETOOLONG;
    }
    if (memchr(k->s, '\0', k->len) != NULL) {
        return DANGO_EINVAL;
    }
    return 0;
}

static int cid_eq(ms_cid_t a, ms_cid_t b)
{
    return (a.hi == b.hi) && (a.lo == b.lo);
}

static ms_obj_t *obj_find(ms_state_t *st, const ms_key_t *k, uint64_t hash)
{
    dango_hmap_node_t *node = dango_hmap_find(&st->objs, k->s, k->len, hash);

    return (node != NULL) ? dango_container_of(node, ms_obj_t, node) : NULL;
}

static ms_obj_t *obj_lookup(ms_state_t *st, const ms_key_t *k)
{
    return obj_find(st, k, dango_hmap_hash(k->s, k->len));
}

static void obj_set_soft_pin(ms_state_t *st, ms_obj_t *o, uint64_t deadline)
{
    if ((o->soft_pin_timeout == 0) && (deadline != 0)) {
        st->soft_pinned++;
    } else if ((o->soft_pin_timeout != 0) && (deadline == 0)) {
        st->soft_pinned--;
    }
    o->soft_pin_timeout = deadline;
}

static void obj_grant_lease(ms_state_t *st, ms_obj_t *o, uint64_t now)
{
    uint64_t until = now + st->p.lease_ttl_ms;

    if (o->lease_timeout < until) {
        o->lease_timeout = until;
    }
    st->c.leases_granted++;
}

uint64_t dango__store_ms_cache_grant(ms_state_t *st, ms_obj_t *o, uint64_t now)
{
    uint64_t ms = st->p.location_cache_ms;

    if ((ms == 0) || (o->pend != NULL) || (now < o->nocache_until)) {
        return 0;
    }

    if (o->cache_until < now + ms) {
        o->cache_until = now + ms;
    }
    return ms;
}

/* ms until no client uses a cached location of @o (0: none does). */
static uint64_t obj_cache_wait(const ms_state_t *st, const ms_obj_t *o,
                               uint64_t now)
{
    uint64_t until = DANGO_MAX(o->cache_until, st->cache_floor);

    return (until > now) ? until - now : 0;
}

/* Whether what ends @o's value must wait for cached locations: if so, no
 * new window is granted until it can have run, and st->again_ms grows. */
static int obj_cache_defer(ms_state_t *st, ms_obj_t *o, uint64_t now)
{
    uint64_t wait = obj_cache_wait(st, o, now);

    if (wait == 0) {
        return 0;
    }

    /* Room for the caller's retry to arrive. */
    o->nocache_until = now + wait + DANGO_MAX(st->p.location_cache_ms, wait);
    st->again_ms     = DANGO_MAX(st->again_ms, wait);
    return 1;
}

/* The records of @v, a value that no longer is the object's (removed or
 * replaced), are to be cleared by their nodes: a rebuild must not bring
 * them back. */
static void ver_tomb(ms_state_t *st, const ms_ver_t *v)
{
    for (unsigned i = 0; i < v->nrep; i++) {
        if (v->rep[i].seg != NULL) {
            dango__store_ms_tomb_add(st, v->rep[i].seg, ms_rep_addr(&v->rep[i]),
                                     v->put_id);
        }
    }
}

/* Removes @o and its committed value (no put in flight). */
static void obj_drop(ms_state_t *st, ms_obj_t *o, uint64_t now)
{
    ms_ver_t *v = o->cur;

    dango__store_ms_kv_ver(st, o, v, 0);
    ver_tomb(st, v);

    o->cur = NULL;
    if (o->lease_timeout > now) {
        dango__store_ms_ver_park(st, v, o->lease_timeout, now);
    } else {
        dango__store_ms_ver_free(st, v);
    }
    dango__store_ms_obj_erase(st, o);
}

static int cfg_check(const ms_state_t *st, const ms_put_cfg_t *cfg)
{
    if ((cfg->replica_num > DANGO_STORE_REPLICA_MAX) ||
        (cfg->npreferred > DANGO_STORE_PREFERRED_MAX) ||
        (cfg->soft_pin > DANGO_STORE_SOFT_PIN_DISABLE) ||
        (cfg->soft_pin_ttl_ms > st->p.max_soft_pin_ttl_ms) ||
        ((cfg->soft_pin_ttl_ms != 0) &&
         (cfg->soft_pin != DANGO_STORE_SOFT_PIN_ENABLE))) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < cfg->npreferred; i++) {
        if (cfg->preferred[i] == NULL) {
            return DANGO_EINVAL;
        }
    }
    return 0;
}

/* Duplicate detection for one put batch: a table of index + 1, of *@cap_p
 * slots (the table may be larger, left from a bigger batch: only these
 * are cleared, so only these may be probed). */
static int dup_prepare(ms_state_t *st, size_t n, size_t *cap_p)
{
    size_t cap = 16;

    while (cap < 2 * n) {
        cap <<= 1;
    }

    if (cap > st->dup_cap) {
        uint32_t *tab = dango_malloc(cap * sizeof(*tab), "master_dup");

        if (tab == NULL) {
            return DANGO_ENOMEM;
        }
        dango_free(st->dup_tab);
        st->dup_tab = tab;
        st->dup_cap = cap;
    }

    memset(st->dup_tab, 0, cap * sizeof(*st->dup_tab));
    *cap_p = cap;
    return 0;
}

/* True if keys[i] repeats an earlier key of the batch (then records it). */
static int dup_check(ms_state_t *st, size_t cap, const ms_key_t *keys, size_t i,
                     uint64_t hash)
{
    size_t mask = cap - 1;

    for (size_t idx = hash & mask;; idx = (idx + 1) & mask) {
        uint32_t e = st->dup_tab[idx];

        if (e == 0) {
            st->dup_tab[idx] = (uint32_t)(i + 1);
            return 0;
        }
        if ((keys[e - 1].len == keys[i].len) &&
            (memcmp(keys[e - 1].s, keys[i].s, keys[i].len) == 0)) {
            return 1;
        }
    }
}

/* 1 while a node is still reporting its records (after a restart or a
 * takeover): its segment takes no objects, which makes placements fail
 * although the pool is not full. */
/* What a put batch of @n keys checks first: its size and config; then the
 * duplicate table (*@dup_cap_p) and the writer's record (*@c_p). */
static int put_batch_begin(ms_state_t *st, ms_cid_t cid, size_t n,
                           const ms_put_cfg_t *cfg, uint64_t now,
                           ms_client_t **c_p, size_t *dup_cap_p)
{
    int rc;

    if (n > DANGO_STORE_BATCH_MAX) {
        return DANGO_EINVAL;
    }

    rc = cfg_check(st, cfg);
    if (rc != 0) {
        return rc;
    }

    if (n > 1) {
        rc = dup_prepare(st, n, dup_cap_p);
        if (rc != 0) {
            return rc;
        }
    }

    *c_p = dango__store_ms_client_touch(st, cid, now);
    return (*c_p != NULL) ? 0 : DANGO_ENOMEM;
}

int dango__store_ms_rebuilding(const ms_state_t *st)
{
    for (size_t i = 0; i < st->nsegs; i++) {
        if (st->segs[i]->recovering) {
            return 1;
        }
    }

    return 0;
}

/*
 * The object a new put of @k goes to: @o (its stale put in flight, if any,
 * preempted and parked) or a new one in the map; NULL on ENOMEM.
 */
static ms_obj_t *obj_take(ms_state_t *st, ms_obj_t *o, const ms_key_t *k,
                          uint64_t hash, const ms_put_cfg_t *cfg, uint64_t now)
{
    if (o == NULL) {
        o = dango_calloc(1, sizeof(*o) + k->len + 1, "master_obj");
        if (o == NULL) {
            return NULL;
        }
        memcpy(o->key, k->s, k->len);
        o->node.key     = o->key;
        o->node.key_len = k->len;
        o->node.hash    = hash;
        o->hard_pin     = (cfg->hard_pin != 0);
        dango_hmap_insert(&st->objs, &o->node);
        return o;
    }

    if (o->pend != NULL) {
        ms_ver_t *old = o->pend;

        dango_debug("master: put %llu of '%s' preempted after %llu ms",
                    (unsigned long long)old->put_id, o->key,
                    (unsigned long long)(now - old->start));
        dango__store_ms_ver_unlink(st, old);
        o->pend = NULL;
        dango__store_ms_ver_park(st, old, old->start + st->p.put_release_ms,
                                 now);
        st->c.discards++;
    }
    if (o->cur == NULL) {
        o->hard_pin = (cfg->hard_pin != 0); /* the object starts over */
    }
    return o;
}

static int put_start_one(ms_state_t *st, ms_client_t *c, const ms_key_t *k,
                         uint64_t hash, uint64_t size, uint64_t checksum,
                         const ms_put_cfg_t *cfg, int upsert, uint64_t now,
                         int *evicted, ms_ver_t **ver_p)
{
    ms_seg_t *segs[DANGO_STORE_REPLICA_MAX];
    uint64_t  offs[DANGO_STORE_REPLICA_MAX];
    unsigned  want = (cfg->replica_num == 0) ? 1 : cfg->replica_num;
    unsigned  placed;
    uint64_t  rec_len;
    ms_obj_t *o;
    ms_ver_t *v;

    if ((size == 0) || (size > MS_SEG_MAX)) {
        return (size == 0) ? DANGO_EINVAL : DANGO_ENOSPC;
    }
    rec_len = dango_store_rec_size(k->len, size);

again:
    o = obj_find(st, k, hash);
    if (cfg->retry && (o != NULL) && (o->pend != NULL) &&
        (o->pend->client == c) && (o->pend->size == size) &&
        (o->pend->checksum == checksum)) {
        *ver_p = o->pend; /* our own put, whose answer was lost */
        return 0;
    }
    if ((o != NULL) && (o->pend != NULL) &&
        (now < o->pend->start + st->p.put_discard_ms)) {
        return upsert ? DANGO_EBUSY : DANGO_EOBJ_EXISTS;
    }
    /* A value held only on a disk tier exists too (an upsert replaces it):
     * refused before placement, so that it costs no region or eviction. */
    if (!upsert && (((o != NULL) && (o->cur != NULL)) ||
                    dango__store_ms_disk_has(st, k->s, k->len))) {
        return DANGO_EOBJ_EXISTS;
    }

    if (rec_len > st->max_seg_capacity) {
        st->c.alloc_failures++;
        return DANGO_ENOSPC; /* no segment could ever hold it */
    }

    placed = dango__store_ms_place(st, rec_len, want, cfg->preferred,
                                   cfg->npreferred, segs, offs);
    if (placed == 0) {
        if (dango__store_ms_rebuilding(st)) {
            /* Not a full pool: nodes are still reporting their records,
             * and evicting would free regions that hold them. */
            st->c.alloc_failures++;
            return DANGO_ENOSPC;
        }

        /* One synchronous eviction pass per call, then one more try. */
        if (!*evicted && (now >= st->evict_idle_until)) {
            *evicted = 1;
            if (dango__store_ms_evict(st, now) > 0) {
                goto again; /* the pass may have erased @o */
            }
            st->evict_idle_until = now + MS_EVICT_IDLE_MS;
        }
        st->c.alloc_failures++;
        st->need_evict = 1;
        return DANGO_ENOSPC;
    }

    if (placed < want) {
        st->c.partial_allocs++;
    }

    /* The put id is taken (next_put_id moves) only once the put is in. */
    v = dango__store_ms_ver_new(placed, c->id, st->next_put_id, size, checksum,
                                rec_len, now);
    if (v == NULL) {
        goto err_free_regions;
    }

    o = obj_take(st, o, k, hash, cfg, now);
    if (o == NULL) {
        dango_free(v);
        goto err_free_regions;
    }

    st->next_put_id++;
    v->obj          = o;
    v->soft_pin     = cfg->soft_pin;
    v->soft_pin_ttl = cfg->soft_pin_ttl_ms;
    dango__store_ms_ver_start(st, v, c, segs, offs, placed);
    o->pend = v;
    dango__store_ms_ghost_forget(st, k); /* a new value is coming */
    *ver_p = v;
    return 0;

err_free_regions:
    for (unsigned i = 0; i < placed; i++) {
        dango__store_ms_region_free(st, segs[i], offs[i], rec_len);
    }
    return DANGO_ENOMEM;
}

/* Makes @v (off the in-flight lists) @o's complete value, the old one
 * parked for its readers. */
static void ver_commit(ms_state_t *st, ms_obj_t *o, ms_ver_t *v,
                       const ms_key_t *k, uint64_t now)
{
    ms_ver_t *old;

    for (unsigned i = 0; i < v->nrep; i++) {
        if (v->rep[i].seg != NULL) {
            v->rep[i].status = DANGO_STORE_REPLICA_COMPLETE;
        }
    }
    v->end = now;

    old    = o->cur;
    o->cur = v;
    /* A value lost with its nodes while this put ran is replaced now: its
     * node coming back must not bring it back (say, after a remove). */
    dango__store_ms_ghost_forget(st, k);
    if (old != NULL) {
        dango__store_ms_kv_ver(st, o, old, 0);
    }
    dango__store_ms_kv_ver(st, o, v, 1);
    if (old != NULL) {
        /* Readers of the old value hold it until the lease ends. */
        ver_tomb(st, old);
        old->obj = NULL;
        dango__store_ms_ver_park(st, old, o->lease_timeout, now);
    }

    if (o->lease_timeout < now) {
        o->lease_timeout = now; /* zero-length lease */
    }

    if (v->soft_pin == DANGO_STORE_SOFT_PIN_ENABLE) {
        uint64_t ttl =
            (v->soft_pin_ttl != 0) ? v->soft_pin_ttl : st->p.soft_pin_ttl_ms;

        obj_set_soft_pin(st, o, now + ttl);
    } else if (v->soft_pin == DANGO_STORE_SOFT_PIN_DISABLE) {
        obj_set_soft_pin(st, o, 0);
    }
}

static int put_end_one(ms_state_t *st, ms_cid_t cid, const ms_key_t *k,
                       uint64_t put_id, int revoke, uint64_t now)
{
    ms_obj_t *o;
    ms_ver_t *v;
    uint64_t  wait;
    int       rc = key_check(k);

    if (rc != 0) {
        return rc;
    }

    o = obj_lookup(st, k);
    if (o == NULL) {
        return DANGO_ENO_OBJECT;
    }

    v = o->pend;
    if ((v == NULL) || (v->put_id != put_id)) {
        /* A retried End of the put that is already the object's value. */
        if (!revoke && (o->cur != NULL) && (o->cur->put_id == put_id)) {
            return cid_eq(o->cur->cid, cid) ? 0 : DANGO_EILLEGAL_CLIENT;
        }
        return DANGO_EINVALID_WRITE;
    }

    if (!cid_eq(v->cid, cid)) {
        return DANGO_EILLEGAL_CLIENT;
    }

    /* An upsert is visible only once no client reads the old value
     * through a cached location (no new window while it is pending). */
    wait = (!revoke && (o->cur != NULL)) ? obj_cache_wait(st, o, now) : 0;
    if (wait > 0) {
        st->again_ms = DANGO_MAX(st->again_ms, wait);
        return DANGO_EAGAIN;
    }

    dango__store_ms_ver_unlink(st, v);
    o->pend = NULL;
    if (revoke) {
        dango__store_ms_ver_free(st, v);
        if (o->cur == NULL) {
            dango__store_ms_obj_erase(st, o);
        }
        return 0;
    }

    ver_commit(st, o, v, k, now);
    return 0;
}

/* ----- eviction ----- */

static int cand_push(ms_cand_vec_t *cv, uint64_t lease, ms_obj_t *o)
{
    if (cv->n == cv->cap) {
        size_t     cap = (cv->cap == 0) ? 1024 : cv->cap * 2;
        ms_cand_t *v   = dango_realloc(cv->v, cap * sizeof(*v), "master_cand");

        if (v == NULL) {
            return DANGO_ENOMEM;
        }
        cv->v   = v;
        cv->cap = cap;
    }

    cv->v[cv->n].lease = lease;
    cv->v[cv->n].obj   = o;
    cv->n++;
    return 0;
}

static void cand_swap(ms_cand_t *a, ms_cand_t *b)
{
    ms_cand_t t = *a;

    *a = *b;
    *b = t;
}

/* Moves the @k smallest leases of @v[0..n) to the front (quickselect). */
static void cand_select(ms_cand_t *v, size_t n, size_t k)
{
    size_t lo = 0;
    size_t hi = n;

    if ((k == 0) || (k >= n)) {
        return;
    }

    while (hi - lo > 1) {
        size_t   mid = lo + (hi - lo) / 2;
        uint64_t pivot;
        size_t   i;
        size_t   j;

        /* Median of three as pivot, placed at hi - 1. */
        if (v[mid].lease < v[lo].lease) {
            cand_swap(&v[mid], &v[lo]);
        }
        if (v[hi - 1].lease < v[lo].lease) {
            cand_swap(&v[hi - 1], &v[lo]);
        }
        if (v[mid].lease < v[hi - 1].lease) {
            cand_swap(&v[mid], &v[hi - 1]);
        }
        pivot = v[hi - 1].lease;

        /* Three-way partition: < pivot, == pivot, > pivot. */
        i = lo;
        j = lo;
        for (size_t m = lo; m < hi; m++) {
            if (v[m].lease < pivot) {
                cand_swap(&v[m], &v[j]);
                cand_swap(&v[j], &v[i]);
                i++;
                j++;
            } else if (v[m].lease == pivot) {
                cand_swap(&v[m], &v[j]);
                j++;
            }
        }

        /* [lo, i) < pivot, [i, j) == pivot, [j, hi) > pivot */
        if (k < i) {
            hi = i;
        } else if (k <= j) {
            return;
        } else {
            lo = j;
        }
    }
}

static void evict_obj(ms_state_t *st, ms_obj_t *o)
{
    ms_ver_t *v = o->cur;

    st->c.evicted_keys++;
    st->c.evicted_bytes += v->rec_len * v->nlive;
    dango_trace("master: evicting '%s'", o->key);
    dango__store_ms_kv_ver(st, o, v, 0);
    o->cur = NULL;
    dango__store_ms_ver_free(st, v);
    dango__store_ms_obj_erase(st, o);
}

/* Eviction with a disk tier: the object may go to disk first. */
static void evict_or_offload(ms_state_t *st, ms_obj_t *o, uint64_t now)
{
    if (dango__store_ms_disk_on_evict(st, o, now) == 0) {
        evict_obj(st, o);
    }
}

/* ---------- internal API ---------- */

int dango__store_ms_put_start(ms_state_t *st, ms_cid_t cid, size_t n,
                              const ms_key_t *keys, const uint64_t *sizes,
                              const uint64_t     *checksums,
                              const ms_put_cfg_t *cfg, int upsert, uint64_t now,
                              int *status, ms_ver_t **vers)
{
    ms_client_t *c;
    size_t       dup_cap = 0;
    int          evicted = 0;
    int          rc      = put_batch_begin(st, cid, n, cfg, now, &c, &dup_cap);

    if (rc != 0) {
        return rc;
    }

    for (size_t i = 0; i < n; i++) {
        uint64_t hash;

        vers[i]   = NULL;
        status[i] = key_check(&keys[i]);
        if (status[i] != 0) {
            continue;
        }

        hash = dango_hmap_hash(keys[i].s, keys[i].len);
        if ((n > 1) && dup_check(st, dup_cap, keys, i, hash)) {
            status[i] = DANGO_EINVAL;
            continue;
        }

        status[i] = put_start_one(st, c, &keys[i], hash, sizes[i],
                                  (checksums != NULL) ? checksums[i] : 0, cfg,
                                  upsert, now, &evicted, &vers[i]);
    }

    return 0;
}

/* PutBind of one key (see dango__store_ms_put_bind()). */
static int put_bind_one(ms_state_t *st, ms_client_t *c, const ms_key_t *k,
                        uint64_t put_id, uint64_t size, uint64_t checksum,
                        const ms_put_cfg_t *cfg, uint64_t now)
{
    uint64_t  hash = dango_hmap_hash(k->s, k->len);
    ms_ver_t *v    = dango__store_ms_slot_find(st, put_id);
    ms_obj_t *o    = obj_find(st, k, hash);

    if ((v == NULL) || !cid_eq(v->cid, c->id)) {
        /* A repeated bind whose first answer was lost. */
        if ((o != NULL) && (o->cur != NULL) && (o->cur->put_id == put_id)) {
            return cid_eq(o->cur->cid, c->id) ? 0 : DANGO_EILLEGAL_CLIENT;
        }
        return (v == NULL) ? DANGO_EINVALID_WRITE : DANGO_EILLEGAL_CLIENT;
    }

    if ((size == 0) || (dango_store_rec_size(k->len, size) != v->rec_len)) {
        return DANGO_EINVAL;
    }

    /* What PutStart refuses, bind refuses: the slot stays the client's. */
    if ((o != NULL) && (o->pend != NULL) &&
        (now < o->pend->start + st->p.put_discard_ms)) {
        return DANGO_EOBJ_EXISTS;
    }
    if (((o != NULL) && (o->cur != NULL)) ||
        dango__store_ms_disk_has(st, k->s, k->len)) {
        return DANGO_EOBJ_EXISTS;
    }

    o = obj_take(st, o, k, hash, cfg, now);
    if (o == NULL) {
        return DANGO_ENOMEM;
    }

    dango__store_ms_slot_unlink(st, v);
    v->obj          = o;
    v->size         = size;
    v->checksum     = checksum;
    v->soft_pin     = cfg->soft_pin;
    v->soft_pin_ttl = cfg->soft_pin_ttl_ms;
    ver_commit(st, o, v, k, now);
    st->c.slots_bound++;
    return 0;
}

int dango__store_ms_put_bind(ms_state_t *st, ms_cid_t cid, size_t n,
                             const ms_key_t *keys, const uint64_t *put_ids,
                             const uint64_t *sizes, const uint64_t *checksums,
                             const ms_put_cfg_t *cfg, uint64_t now, int *status)
{
    ms_client_t *c;
    size_t       dup_cap = 0;
    int          rc      = put_batch_begin(st, cid, n, cfg, now, &c, &dup_cap);

    if (rc != 0) {
        return rc;
    }

    for (size_t i = 0; i < n; i++) {
        status[i] = key_check(&keys[i]);
        if (status[i] != 0) {
            continue;
        }

        if ((n > 1) && dup_check(st, dup_cap, keys, i,
                                 dango_hmap_hash(keys[i].s, keys[i].len))) {
            status[i] = DANGO_EINVAL;
            continue;
        }

        status[i] = put_bind_one(st, c, &keys[i], put_ids[i], sizes[i],
                                 checksums[i], cfg, now);
    }

    return 0;
}

int dango__store_ms_put_end(ms_state_t *st, ms_cid_t cid, size_t n,
                            const ms_key_t *keys, const uint64_t *put_ids,
                            int revoke, uint64_t now, int *status)
{
    st->again_ms = 0;
    if (n > DANGO_STORE_BATCH_MAX) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < n; i++) {
        status[i] = put_end_one(st, cid, &keys[i], put_ids[i], revoke, now);
    }
    return 0;
}

int dango__store_ms_get(ms_state_t *st, size_t n, const ms_key_t *keys,
                        int no_lease, uint64_t now, int *status,
                        ms_obj_t **objs)
{
    if (n > DANGO_STORE_BATCH_MAX) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < n; i++) {
        ms_obj_t *o;

        objs[i]   = NULL;
        status[i] = key_check(&keys[i]);
        if (status[i] != 0) {
            continue;
        }

        o = obj_lookup(st, &keys[i]);
        if (o == NULL) {
            status[i] = DANGO_ENO_OBJECT;
        } else if (o->cur == NULL) {
            status[i] = DANGO_ENOT_READY;
        } else {
            if (!no_lease) {
                obj_grant_lease(st, o, now);
            }
            objs[i] = o;
        }
    }
    return 0;
}

int dango__store_ms_exist(ms_state_t *st, size_t n, const ms_key_t *keys,
                          uint64_t now, int *status)
{
    if (n > DANGO_STORE_BATCH_MAX) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < n; i++) {
        ms_obj_t *o;

        status[i] = key_check(&keys[i]);
        if (status[i] != 0) {
            continue;
        }

        o = obj_lookup(st, &keys[i]);
        if ((o != NULL) && (o->cur != NULL)) {
            obj_grant_lease(st, o, now);
            status[i] = 1;
        }
    }
    return 0;
}

int dango__store_ms_remove(ms_state_t *st, size_t n, const ms_key_t *keys,
                           int force, uint64_t now, int *status)
{
    st->again_ms = 0;
    if (n > DANGO_STORE_BATCH_MAX) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < n; i++) {
        ms_obj_t *o;

        status[i] = key_check(&keys[i]);
        if (status[i] != 0) {
            continue;
        }

        o = obj_lookup(st, &keys[i]);
        if (o == NULL) {
            dango__store_ms_ghost_forget(st, &keys[i]);
            status[i] = DANGO_ENO_OBJECT;
        } else if (o->pend != NULL) {
            status[i] = DANGO_ENOT_READY;
        } else if (!force && (o->lease_timeout > now)) {
            status[i] = DANGO_ELEASE_HELD;
        } else if (!force && o->hard_pin) {
            status[i] = DANGO_EPERM;
        } else if (obj_cache_defer(st, o, now)) {
            status[i] = DANGO_EAGAIN; /* forced: cached locations first */
        } else {
            obj_drop(st, o, now);
        }
    }
    return 0;
}

int64_t dango__store_ms_remove_match(ms_state_t *st, const char *regex, int all,
                                     int force, uint64_t now)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    regex_t            re;
    int64_t            count = 0;

    st->again_ms = 0;
    st->again_n  = 0;
    if (!all) {
        if ((regex == NULL) || (regex[0] == '\0') ||
            (regcomp(&re, regex, REG_EXTENDED | REG_NOSUB) != 0)) {
            return DANGO_EINVAL;
        }
    }

    /* Removing the node just returned is allowed while iterating. */
    dango_hmap_iter_begin(&st->objs, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_obj_t *o = dango_container_of(node, ms_obj_t, node);

        if ((o->pend != NULL) ||
            (!force && ((o->lease_timeout > now) || (o->hard_pin && !all)))) {
            continue;
        }
        if (!all && (regexec(&re, o->key, 0, NULL, 0) != 0)) {
            continue;
        }
        if (obj_cache_defer(st, o, now)) {
            st->again_n++;
            continue;
        }

        obj_drop(st, o, now);
        count++;
    }
    dango_hmap_iter_end(&it);
    dango__store_ms_ghost_forget_match(st, all ? NULL : &re);

    if (!all) {
        regfree(&re);
    }
    return count;
}

int dango__store_ms_report_bad(ms_state_t *st, ms_cid_t cid,
                               const ms_key_t *key, uint64_t put_id,
                               const char *segment, uint64_t addr, uint64_t now)
{
    ms_obj_t *o;
    ms_ver_t *v;
    int       rc = key_check(key);

    if (rc != 0) {
        return rc;
    }
    if (segment == NULL) {
        return DANGO_EINVAL;
    }

    o = obj_lookup(st, key);
    if (o == NULL) {
        return DANGO_ENO_OBJECT;
    }

    v = o->cur;
    if ((v == NULL) || (v->put_id != put_id)) {
        return 0; /* already replaced or gone */
    }

    for (unsigned i = 0; i < v->nrep; i++) {
        ms_rep_t *r = &v->rep[i];

        if ((r->seg != NULL) && (ms_rep_addr(r) == addr) &&
            (strcmp(r->seg->name->name, segment) == 0)) {
            unsigned dropped;

            if (dango__log_enabled(&DANGO_LOG_COMPONENT, DANGO_LOG_WARN) &&
                dango__log_limit_allow(&ms_bad_log_limit, &dropped)) {
                dango_warn("master: replica of '%s' (put %llu) on %s at "
                           "%#llx reported bad by %016llx-%016llx (%u more "
                           "not logged)",
                           o->key, (unsigned long long)put_id, segment,
                           (unsigned long long)addr, (unsigned long long)cid.hi,
                           (unsigned long long)cid.lo, dropped);
            }
            dango__store_ms_kv_rep(st, o, r, 0);
            dango__store_ms_rep_drop(st, r);
            st->c.bad_replicas++;
            dango__store_ms_ver_lost(st, v); /* may erase @o */
            break;
        }
    }
    return 0;
}

/* Byte order of keys, shorter first on a common prefix. */
static int keycmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, (alen < blen) ? alen : blen);

    if (c != 0) {
        return c;
    }
    return (alen < blen) ? -1 : (alen > blen);
}

static int objcmp(const ms_obj_t *a, const ms_obj_t *b)
{
    return keycmp(a->key, a->node.key_len, b->key, b->node.key_len);
}

/* Max-heap on key of @h[0..n): restores the heap below @i. */
static void list_sift_down(ms_obj_t **h, size_t n, size_t i)
{
    for (;;) {
        size_t    l = 2 * i + 1;
        size_t    m = l;
        ms_obj_t *t;

        if (l >= n) {
            return;
        }
        if ((l + 1 < n) && (objcmp(h[l + 1], h[l]) > 0)) {
            m = l + 1;
        }
        if (objcmp(h[m], h[i]) <= 0) {
            return;
        }
        t    = h[m];
        h[m] = h[i];
        h[i] = t;
        i    = m;
    }
}

static void list_sift_up(ms_obj_t **h, size_t i)
{
    while (i > 0) {
        size_t    p = (i - 1) / 2;
        ms_obj_t *t;

        if (objcmp(h[p], h[i]) >= 0) {
            return;
        }
        t    = h[p];
        h[p] = h[i];
        h[i] = t;
        i    = p;
    }
}

size_t dango__store_ms_list(ms_state_t *st, const ms_key_t *prefix,
                            const ms_key_t *after, size_t limit, ms_obj_t **out,
                            int *more_p)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    size_t             n    = 0;
    int                more = 0;

    if (limit == 0) {
        limit = MS_LIST_MAX;
    }

    /* Keep the @limit smallest matching keys in a max-heap. */
    dango_hmap_iter_begin(&st->objs, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_obj_t *o    = dango_container_of(node, ms_obj_t, node);
        size_t    klen = node->key_len;

        if ((o->cur == NULL) ||
            ((prefix != NULL) &&
             ((klen < prefix->len) ||
              (memcmp(o->key, prefix->s, prefix->len) != 0))) ||
            ((after != NULL) && (after->len > 0) &&
             (keycmp(o->key, klen, after->s, after->len) <= 0))) {
            continue;
        }

        if (n < limit) {
            out[n] = o;
            list_sift_up(out, n++);
        } else {
            more = 1;
            if (objcmp(o, out[0]) < 0) {
                out[0] = o;
                list_sift_down(out, n, 0);
            }
        }
    }
    dango_hmap_iter_end(&it);

    /* Heap sort in place: ascending. */
    for (size_t end = n; end > 1; end--) {
        ms_obj_t *t = out[0];

        out[0]       = out[end - 1];
        out[end - 1] = t;
        list_sift_down(out, end - 1, 0);
    }

    *more_p = more;
    return n;
}

size_t dango__store_ms_evict(ms_state_t *st, uint64_t now)
{
    ms_cand_vec_t      plain = {NULL, 0, 0};
    ms_cand_vec_t      soft  = {NULL, 0, 0};
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    double             used_ratio;
    double             target;
    double             lower;
    size_t             base = 0;
    size_t             want;
    size_t             want_min;
    size_t             n1;
    size_t             evicted = 0;

    st->c.evict_attempts++;
    if (st->capacity == 0) {
        return 0;
    }

    used_ratio = (double)st->used / (double)st->capacity;
    target     = used_ratio - st->p.evict_high_watermark + st->p.evict_ratio;
    if (target < st->p.evict_ratio) {
        target = st->p.evict_ratio;
    }
    if (target > 1.0) {
        target = 1.0;
    }
    lower = used_ratio - st->p.evict_high_watermark;
    if (lower < target / 2) {
        lower = target / 2;
    }

    dango_hmap_iter_begin(&st->objs, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_obj_t *o = dango_container_of(node, ms_obj_t, node);
        int       rc;

        if (o->cur == NULL) {
            continue;
        }
        base++;

        if ((o->soft_pin_timeout != 0) && (o->soft_pin_timeout <= now)) {
            obj_set_soft_pin(st, o, 0); /* expired: ordinary cache now */
        }
        if ((o->pend != NULL) || (o->lease_timeout > now) || o->hard_pin) {
            continue;
        }
        if (o->disk_busy == MS_DISK_BUSY) {
            continue; /* being written to a disk tier */
        }

        rc = cand_push((o->soft_pin_timeout != 0) ? &soft : &plain,
                       o->lease_timeout, o);
        if (rc != 0) {
            break; /* evict from what was gathered */
        }
    }
    dango_hmap_iter_end(&it);

    /* The epsilon keeps 0.15 * 100 from becoming 16 through rounding. */
    want     = (size_t)ceil((double)base * target - 1e-9);
    want_min = (size_t)ceil((double)base * lower - 1e-9);
    if ((want == 0) && (base > 0)) {
        want = 1;
    }

    n1 = (want < plain.n) ? want : plain.n;
    cand_select(plain.v, plain.n, n1);
    for (size_t i = 0; i < n1; i++) {
        evict_or_offload(st, plain.v[i].obj, now);
    }
    evicted = n1;

    if ((evicted < want_min) && st->p.evict_soft_pinned && (soft.n > 0)) {
        size_t n2 = want - evicted;

        n2 = (n2 < soft.n) ? n2 : soft.n;
        cand_select(soft.v, soft.n, n2);
        for (size_t i = 0; i < n2; i++) {
            evict_or_offload(st, soft.v[i].obj, now);
        }
        evicted += n2;
    }

    dango_free(plain.v);
    dango_free(soft.v);
    if (evicted > 0) {
        st->c.evict_successes++;
        dango_debug("master: evicted %zu of %zu objects (used %.3f)", evicted,
                    base, used_ratio);
    }
    return evicted;
}

/* ---------- rebuild from node reports ---------- */

void dango__store_ms_ver_start(ms_state_t *st, ms_ver_t *v, ms_client_t *c,
                               ms_seg_t *const *segs, const uint64_t *offs,
                               unsigned n)
{
    v->client = c;
    for (unsigned i = 0; i < n; i++) {
        dango__store_ms_rep_add(v, segs[i], offs[i],
                                DANGO_STORE_REPLICA_PROCESSING);
    }
    dango_list_add_tail(&st->inflight, &v->inflight_link);
    dango_list_add_tail(&c->puts, &v->client_link);
    st->ninflight++;
}

ms_ver_t *dango__store_ms_ver_new(unsigned nrep, ms_cid_t cid, uint64_t put_id,
                                  uint64_t size, uint64_t checksum,
                                  uint64_t rec_len, uint64_t now)
{
    ms_ver_t *v =
        dango_calloc(1, sizeof(*v) + nrep * sizeof(v->rep[0]), "master_ver");

    if (v == NULL) {
        return NULL;
    }

    dango_list_init(&v->inflight_link);
    dango_list_init(&v->client_link);
    v->heap_idx = SIZE_MAX;
    v->cid      = cid;
    v->put_id   = put_id;
    v->size     = size;
    v->checksum = checksum;
    v->rec_len  = rec_len;
    v->start    = now;
    return v;
}

void dango__store_ms_rep_add(ms_ver_t *v, ms_seg_t *seg, uint64_t off,
                             uint32_t status)
{
    ms_rep_t *r = &v->rep[v->nrep++];

    r->seg    = seg;
    r->ver    = v;
    r->off    = off;
    r->status = status;
    dango_list_add_tail(&seg->replicas, &r->seg_link);
    v->nlive++;
}

/*
 * A copy of @v's live replicas with room for one more, taking @v's place in
 * its object and segment lists; @v's struct is freed (not its regions).
 * Slots of dropped replicas are left out: however often replicas are lost
 * and added again, the array holds at most the live ones and the new one.
 */
static ms_ver_t *ver_grow(ms_ver_t *v)
{
    ms_ver_t *n = dango_calloc(
        1, sizeof(*n) + (v->nlive + 1u) * sizeof(n->rep[0]), "master_ver");

    if (n == NULL) {
        return NULL;
    }

    memcpy(n, v, sizeof(*v));
    n->nrep = 0;
    for (unsigned i = 0; i < v->nrep; i++) {
        ms_rep_t *r = &n->rep[n->nrep];

        if (v->rep[i].seg == NULL) {
            continue;
        }
        *r     = v->rep[i];
        r->ver = n;
        dango_list_del(&v->rep[i].seg_link);
        dango_list_add_tail(&r->seg->replicas, &r->seg_link);
        n->nrep++;
    }

    n->obj->cur = n;
    dango_free(v);
    return n;
}

int dango__store_ms_restore(ms_state_t *st, ms_cid_t cid, const ms_record_t *r,
                            uint64_t now)
{
    ms_client_t *c   = dango__store_ms_client_find(st, cid);
    ms_seg_t    *seg = NULL, *s;
    ms_obj_t    *o;
    ms_ver_t    *v, *old = NULL;
    uint64_t     rec_len, off, asz;
    int          same, ghost;
    int          rc = key_check(&r->key);

    if (rc != 0) {
        return rc;
    }

    if ((c == NULL) || (r->size == 0) || (r->size > MS_SEG_MAX)) {
        return DANGO_EINVAL;
    }

    o = obj_lookup(st, &r->key);
    /*
     * A record of the very put the object holds now (a node back from a
     * partition or a pause whose replica was dropped when it expired) is
     * taken back as a replica at any time: it brings nothing old back.
     * Anything else only within the rebuild window.
     */
    same = (o != NULL) && (o->cur != NULL) && (o->cur->put_id == r->put_id) &&
           (o->cur->size == r->size) && (o->cur->checksum == r->checksum) &&
           (o->cur->nlive < DANGO_STORE_REPLICA_MAX);
    /* So is the record of an object lost with its nodes (a ghost), when
     * one of them comes back: nothing was put or removed since. */
    ghost = (o == NULL) && dango__store_ms_ghost_match(st, &r->key, r->put_id,
                                                       r->size, r->checksum);
    if (!same && !ghost &&
        ((st->rebuild_until == 0) || (now >= st->rebuild_until))) {
        return 1;
    }

    dango_list_for_each(s, &c->segs, client_link)
    {
        if ((r->addr >= s->base) && (r->addr - s->base < s->size)) {
            seg = s;
            break;
        }
    }

    rec_len = dango_store_rec_size(r->key.len, r->size);
    if ((seg == NULL) || (rec_len > seg->size - (r->addr - seg->base))) {
        return DANGO_EINVAL;
    }

    off = r->addr - seg->base;
    if ((o != NULL) && (o->cur == NULL)) {
        return 1; /* a put of this key started since: it wins */
    }

    if ((o != NULL) && !same &&
        ((o->cur->put_id > r->put_id) || !o->cur->restored ||
         ((o->cur->put_id == r->put_id) &&
          ((o->cur->size != r->size) || (o->cur->checksum != r->checksum) ||
           (o->cur->nlive >= DANGO_STORE_REPLICA_MAX))))) {
        return 1; /* older, or not the same put after all */
    }

    asz = ms_seg_round(seg, rec_len);
    if ((off % seg->granule != 0) ||
        ((dango__store_alloc_reserve(seg->alloc, off, asz) != 0) &&
         (dango__store_ms_fence_claim(st, seg, off, asz, r->put_id) != 0))) {
        return 1; /* overlaps what is already there */
    }

    seg->used += asz;
    st->used += asz;
    if ((o != NULL) && (o->cur->put_id == r->put_id)) {
        v = ver_grow(o->cur); /* another replica of the same put */
        if (v == NULL) {
            dango__store_ms_region_free(st, seg, off, rec_len);
            return DANGO_ENOMEM;
        }
    } else {
        v = dango__store_ms_ver_new(1, cid, r->put_id, r->size, r->checksum,
                                    rec_len, now);
        if ((v == NULL) ||
            ((o == NULL) && ((o = dango_calloc(1, sizeof(*o) + r->key.len + 1,
                                               "master_obj")) == NULL))) {
            dango_free(v);
            dango__store_ms_region_free(st, seg, off, rec_len);
            return DANGO_ENOMEM;
        }

        if (o->node.key == NULL) {
            memcpy(o->key, r->key.s, r->key.len);
            o->node.key     = o->key;
            o->node.key_len = r->key.len;
            o->node.hash    = dango_hmap_hash(r->key.s, r->key.len);
            dango_hmap_insert(&st->objs, &o->node);
            st->restored++;
            st->c.ghosts_restored += ghost;
            dango__store_ms_ghost_forget(st, &r->key);
        }

        old         = o->cur;
        v->obj      = o;
        v->restored = 1;
        o->cur      = v;
        if (old != NULL) {
            /* A newer put of the key than the one reported before. */
            old->obj = NULL;
            dango__store_ms_ver_free(st, old);
        }
    }

    dango__store_ms_rep_add(v, seg, off, DANGO_STORE_REPLICA_COMPLETE);
    if (st->next_put_id <= r->put_id) {
        st->next_put_id = r->put_id + 1;
    }

    return 0;
}

ms_ver_t *dango__store_ms_ver_grow(ms_ver_t *v)
{
    ms_ver_t *n = ver_grow(v);

    if (n != NULL) {
        /* A committed version is on no list; its copied links are stale. */
        dango_list_init(&n->inflight_link);
        dango_list_init(&n->client_link);
    }
    return n;
}

void dango__store_ms_obj_lease(ms_state_t *st, ms_obj_t *o, uint64_t now)
{
    obj_grant_lease(st, o, now);
}

ms_obj_t *dango__store_ms_obj_lookup(ms_state_t *st, const ms_key_t *k)
{
    return obj_lookup(st, k);
}

int dango__store_ms_key_check(const ms_key_t *k)
{
    return key_check(k);
}
