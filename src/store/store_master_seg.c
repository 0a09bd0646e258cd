/*
 * Master state: lifecycle, clients, segments, replica placement, parked
 * regions and the periodic work (client monitor, tick).
 *
 * DESIGN
 * - Everything here runs on one thread (the master's loop, or a test) and
 *   takes `now` in ms from the caller; nothing reads a clock.
 * - Indexes: objects, clients (by 16-byte id), segments (by 16-byte id)
 *   and segment names live in intrusive hash maps (common/hmap.h);
 *   mounted segments also sit in a dense array, so placement can start at
 *   a random segment and probe linearly, and each segment keeps the list
 *   of replica regions it holds, so unmounting costs O(its replicas) and
 *   never a scan of all objects.
 * - A region belongs to a version (store_master_int.h). When a region is
 *   lost (its segment unmounted, or reported bad) the version loses a live
 *   replica; a version with none left is freed and its object erased if it
 *   has no other version (ver_lost).
 * - Parked versions (zombie puts, preempted puts, upsert leftovers under
 *   lease, force-removed objects under lease) keep their regions until
 *   free_at, in a binary min-heap; a version whose regions all vanished
 *   (segment unmounted) leaves the heap early.
 * - In-flight versions sit on a global list ordered by start time (the
 *   clock only moves forward), so reclaiming puts older than
 *   PUT_RELEASE_TIMEOUT pops from its head, and on their client's list, so
 *   expiring a client revokes its puts without a scan.
 */
#include "store/store_master_int.h"

#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"

DANGO_LOG_COMPONENT_DEFINE(dango__log_master, "master");

/* ---------- private functions ---------- */

static uint64_t rng_next(ms_state_t *st)
{
    uint64_t z = (st->rng += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void id_key(uint8_t *key, uint64_t hi, uint64_t lo)
{
    memcpy(key, &hi, sizeof(hi));
    memcpy(key + sizeof(hi), &lo, sizeof(lo));
}

/* ----- parked heap (min on free_at) ----- */

static void heap_set(ms_state_t *st, size_t i, ms_ver_t *v)
{
    st->parked[i] = v;
    v->heap_idx   = i;
}

static void heap_up(ms_state_t *st, size_t i)
{
    ms_ver_t *v = st->parked[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (st->parked[parent]->free_at <= v->free_at) {
            break;
        }
        heap_set(st, i, st->parked[parent]);
        i = parent;
    }

    heap_set(st, i, v);
}

static void heap_down(ms_state_t *st, size_t i)
{
    ms_ver_t *v = st->parked[i];

    for (;;) {
        size_t l = 2 * i + 1;
        size_t m = l;

        if (l >= st->nparked) {
            break;
        }
        if ((l + 1 < st->nparked) &&
            (st->parked[l + 1]->free_at < st->parked[l]->free_at)) {
            m = l + 1;
        }
        if (st->parked[m]->free_at >= v->free_at) {
            break;
        }
        heap_set(st, i, st->parked[m]);
        i = m;
    }

    heap_set(st, i, v);
}

static int heap_push(ms_state_t *st, ms_ver_t *v)
{
    if (st->nparked == st->parked_cap) {
        size_t     cap = (st->parked_cap == 0) ? 64 : st->parked_cap * 2;
        ms_ver_t **arr;

        arr = dango_realloc(st->parked, cap * sizeof(*arr), "master_parked");
        if (arr == NULL) {
            return DANGO_ENOMEM;
        }
        st->parked     = arr;
        st->parked_cap = cap;
    }

    st->parked[st->nparked] = v;
    v->heap_idx             = st->nparked++;
    heap_up(st, v->heap_idx);
    return 0;
}

static void heap_remove(ms_state_t *st, ms_ver_t *v);

/* Takes parked @v out of the heap, its regions out of parked_bytes. */
static void ver_unpark(ms_state_t *st, ms_ver_t *v)
{
    for (unsigned i = 0; i < v->nrep; i++) {
        if (v->rep[i].seg != NULL) {
            st->parked_bytes -= ms_seg_round(v->rep[i].seg, v->rec_len);
        }
    }
    heap_remove(st, v);
}

static void heap_remove(ms_state_t *st, ms_ver_t *v)
{
    size_t    i    = v->heap_idx;
    ms_ver_t *last = st->parked[--st->nparked];

    v->heap_idx = SIZE_MAX;
    if (last == v) {
        return;
    }

    heap_set(st, i, last);
    heap_up(st, i);
    heap_down(st, last->heap_idx);
}

/* ----- replicas and versions ----- */

/*
 * Takes the region of @r away from its segment, freeing it in the
 * allocator when @free_region (not when the allocator is going away).
 */
static void rep_detach(ms_state_t *st, ms_rep_t *r, int free_region)
{
    ms_seg_t *seg = r->seg;
    ms_ver_t *v   = r->ver;
    uint64_t  asz = ms_seg_round(seg, v->rec_len);

    if (free_region) {
        int rc = dango__store_alloc_free(seg->alloc, r->off);

        if (rc != 0) {
            dango_error("master: segment %s: free of region %#llx: %s",
                        seg->name->name, (unsigned long long)r->off,
                        dango_strerror(rc));
        }
    }

    seg->used -= asz;
    st->used -= asz;
    if (v->heap_idx != SIZE_MAX) {
        st->parked_bytes -= asz;
    }

    dango_list_del(&r->seg_link);
    r->seg    = NULL;
    r->status = DANGO_STORE_REPLICA_REMOVED;
    v->nlive--;
}

static void name_put(ms_state_t *st, ms_name_t *n)
{
    if (--n->nsegs == 0) {
        dango_hmap_remove(&st->names, &n->node);
        dango_free(n);
    }
}

static ms_name_t *name_get(ms_state_t *st, const char *name)
{
    size_t             len  = strlen(name);
    uint64_t           hash = dango_hmap_hash(name, len);
    dango_hmap_node_t *node = dango_hmap_find(&st->names, name, len, hash);
    ms_name_t         *n;

    if (node != NULL) {
        n = dango_container_of(node, ms_name_t, node);
        n->nsegs++;
        return n;
    }

    n = dango_malloc(sizeof(*n) + len + 1, "master_name");
    if (n == NULL) {
        return NULL;
    }

    memcpy(n->name, name, len + 1);
    n->node.key     = n->name;
    n->node.key_len = len;
    n->node.hash    = hash;
    n->nsegs        = 1;
    dango_list_init(&n->segs);
    dango_hmap_insert(&st->names, &n->node);
    return n;
}

static void seg_free(ms_state_t *st, ms_seg_t *seg)
{
    ms_seg_t *last = st->segs[--st->nsegs];

    dango__store_ms_fence_detach(st, seg);
    last->idx          = seg->idx;
    st->segs[seg->idx] = last;
    dango_hmap_remove(&st->segs_by_id, &seg->node);
    dango_list_del(&seg->name_link);
    dango_list_del(&seg->client_link);
    name_put(st, seg->name);
    st->capacity -= seg->capacity;
    dango__store_alloc_destroy(seg->alloc);
    dango_free(seg->host_id);
    dango_free(seg);
}

static void recompute_max_capacity(ms_state_t *st)
{
    st->max_seg_capacity = 0;
    for (size_t i = 0; i < st->nsegs; i++) {
        if (st->segs[i]->capacity > st->max_seg_capacity) {
            st->max_seg_capacity = st->segs[i]->capacity;
        }
    }
}

/* Unmounts @seg: its regions vanish with its allocator. */
static void seg_destroy(ms_state_t *st, ms_seg_t *seg, uint64_t now)
{
    ms_rep_t *r;
    ms_rep_t *tmp;

    dango__store_ms_disk_seg_gone(st, seg);
    size_t nrep = 0;

    /*
     * A version has at most one replica per segment, so dropping the
     * version of @r (ver_lost) never frees the next replica of this list.
     */
    dango_list_for_each_safe(r, tmp, &seg->replicas, seg_link)
    {
        ms_ver_t *v = r->ver;

        dango__store_ms_fence_add(st, seg, r, now);
        rep_detach(st, r, 0);
        dango__store_ms_ver_lost(st, v);
        nrep++;
    }

    dango_info("master: segment %s (%016llx-%016llx) unmounted, %zu replicas "
               "dropped",
               seg->name->name, (unsigned long long)seg->id_hi,
               (unsigned long long)seg->id_lo, nrep);
    seg_free(st, seg);
    recompute_max_capacity(st);
}

static ms_seg_t *seg_find(ms_state_t *st, uint64_t hi, uint64_t lo)
{
    uint8_t            key[16];
    dango_hmap_node_t *node;

    id_key(key, hi, lo);
    node = dango_hmap_find(&st->segs_by_id, key, sizeof(key),
                           dango_hmap_hash(key, sizeof(key)));
    return (node != NULL) ? dango_container_of(node, ms_seg_t, node) : NULL;
}

static int seg_desc_check(const ms_seg_desc_t *d)
{
    size_t name_len = (d->name != NULL) ? strlen(d->name) : 0;
    size_t host_len = (d->host_id != NULL) ? strlen(d->host_id) : 0;

    if ((d->size == 0) || (d->base == 0) || (d->size < MS_SEG_MIN) ||
        (d->size > MS_SEG_MAX) || (d->base + d->size < d->base) ||
        (name_len == 0) || (name_len > MS_NAME_MAX) ||
        (host_len > MS_NAME_MAX)) {
        return DANGO_EINVAL;
    }

    return 0;
}

static int seg_same(const ms_seg_t *seg, const ms_seg_desc_t *d)
{
    return (seg->base == d->base) && (seg->size == d->size) &&
           (strcmp(seg->name->name, d->name) == 0);
}

static int cid_eq(ms_cid_t a, ms_cid_t b)
{
    return (a.hi == b.hi) && (a.lo == b.lo);
}

static int seg_create(ms_state_t *st, ms_client_t *c, const ms_seg_desc_t *d,
                      uint64_t now)
{
    dango_store_alloc_stats_t stats;
    ms_seg_t                 *seg;
    int                       rc;

    if (st->nsegs == st->segs_cap) {
        size_t     cap = (st->segs_cap == 0) ? 16 : st->segs_cap * 2;
        ms_seg_t **arr;

        arr = dango_realloc(st->segs, cap * sizeof(*arr), "master_segs");
        if (arr == NULL) {
            return DANGO_ENOMEM;
        }
        st->segs     = arr;
        st->segs_cap = cap;
    }

    seg = dango_calloc(1, sizeof(*seg), "master_seg");
    if (seg == NULL) {
        return DANGO_ENOMEM;
    }

    seg->host_id =
        dango_strdup((d->host_id != NULL) ? d->host_id : "", "master_seg_host");
    if (seg->host_id == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_seg;
    }

    rc = dango__store_alloc_create(d->size, DANGO_STORE_REC_ALIGN, &seg->alloc);
    if (rc != 0) {
        goto err_free_host;
    }

    seg->name = name_get(st, d->name);
    if (seg->name == NULL) {
        rc = DANGO_ENOMEM;
        goto err_destroy_alloc;
    }

    dango__store_alloc_stats(seg->alloc, &stats);
    seg->id_hi    = d->id_hi;
    seg->id_lo    = d->id_lo;
    seg->base     = d->base;
    seg->size     = d->size;
    seg->capacity = stats.capacity;
    seg->granule  = stats.granule;
    seg->client   = c;
    id_key(seg->id_key, d->id_hi, d->id_lo);
    seg->node.key     = seg->id_key;
    seg->node.key_len = sizeof(seg->id_key);
    seg->node.hash    = dango_hmap_hash(seg->id_key, sizeof(seg->id_key));
    dango_list_init(&seg->replicas);
    dango_list_add_tail(&seg->name->segs, &seg->name_link);
    dango_list_add_tail(&c->segs, &seg->client_link);
    dango_hmap_insert(&st->segs_by_id, &seg->node);
    seg->idx              = st->nsegs;
    st->segs[st->nsegs++] = seg;
    st->capacity += seg->capacity;
    if (seg->capacity > st->max_seg_capacity) {
        st->max_seg_capacity = seg->capacity;
    }
    dango__store_ms_fence_apply(st, seg, now);

    dango_info("master: segment %s (%016llx-%016llx) mounted by "
               "%016llx-%016llx: base %#llx size %llu",
               d->name, (unsigned long long)d->id_hi,
               (unsigned long long)d->id_lo, (unsigned long long)c->id.hi,
               (unsigned long long)c->id.lo, (unsigned long long)d->base,
               (unsigned long long)d->size);
    return 0;

err_destroy_alloc:
    dango__store_alloc_destroy(seg->alloc);
err_free_host:
    dango_free(seg->host_id);
err_free_seg:
    dango_free(seg);
    return rc;
}

/* Revokes the client's puts (regions parked for ZOMBIE_GRACE), unmounts its
 * segments and forgets it. */
static void client_expire(ms_state_t *st, ms_client_t *c, uint64_t now)
{
    ms_ver_t *v;
    ms_ver_t *vtmp;
    ms_seg_t *seg;
    ms_seg_t *stmp;
    size_t    nputs = 0;

    dango_info("master: client %016llx-%016llx expired (silent for %llu ms)",
               (unsigned long long)c->id.hi, (unsigned long long)c->id.lo,
               (unsigned long long)(now - c->last_seen));

    dango_list_for_each_safe(v, vtmp, &c->puts, client_link)
    {
        ms_obj_t *o = v->obj;

        if (v->slot) {
            /* It may still be writing into its slots. */
            dango__store_ms_slot_drop(st, v, now + st->p.zombie_grace_ms, now);
            continue;
        }

        dango__store_ms_ver_unlink(st, v);
        o->pend = NULL;
        dango__store_ms_ver_park(st, v, now + st->p.zombie_grace_ms, now);
        if (o->cur == NULL) {
            dango__store_ms_obj_erase(st, o);
        }
        nputs++;
    }

    dango_list_for_each_safe(seg, stmp, &c->segs, client_link)
    {
        seg_destroy(st, seg, now);
    }

    st->c.zombie_puts += nputs;
    st->c.clients_expired++;
    dango_hmap_remove(&st->clients, &c->node);
    dango_free(c->tombs);
    dango__store_ms_kv_free(c->kv);
    dango_free(c);
}

/* ---------- internal API ---------- */

void dango__store_ms_params_default(ms_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->lease_ttl_ms         = 10000;
    p->client_ttl_ms        = 10000;
    p->put_discard_ms       = 30000;
    p->put_release_ms       = 600000;
    p->zombie_grace_ms      = 30000;
    p->rebuild_window_ms    = 60000;
    p->soft_pin_ttl_ms      = 30ull * 60 * 1000;
    p->max_soft_pin_ttl_ms  = 24ull * 3600 * 1000;
    p->evict_high_watermark = 0.90;
    p->evict_ratio          = 0.05;
    p->evict_soft_pinned    = 1;
    p->view_version         = 1;
    p->put_slot_bytes       = 64ull << 20;
}

int dango__store_ms_create(const ms_params_t *p, ms_state_t **st_p)
{
    ms_state_t *st;
    int         rc;

    st = dango_calloc(1, sizeof(*st), "master_state");
    if (st == NULL) {
        return DANGO_ENOMEM;
    }

    st->p = *p;
    rc    = dango_hmap_init(&st->objs, 1024);
    if (rc != 0) {
        goto err_free;
    }
    rc = dango_hmap_init(&st->clients, 0);
    if (rc != 0) {
        goto err_objs;
    }
    rc = dango_hmap_init(&st->segs_by_id, 0);
    if (rc != 0) {
        goto err_clients;
    }
    rc = dango_hmap_init(&st->names, 0);
    if (rc != 0) {
        goto err_segs;
    }
    rc = dango_hmap_init(&st->ghosts, 0);
    if (rc != 0) {
        goto err_names;
    }
    rc = dango_hmap_init(&st->copies, 0);
    if (rc != 0) {
        dango_hmap_cleanup(&st->ghosts);
        goto err_names;
    }
    rc = dango_hmap_init(&st->fences, 0);
    if (rc != 0) {
        dango_hmap_cleanup(&st->copies);
        dango_hmap_cleanup(&st->ghosts);
        goto err_names;
    }
    rc = dango_hmap_init(&st->slots, 0);
    if (rc != 0) {
        dango_hmap_cleanup(&st->fences);
        dango_hmap_cleanup(&st->copies);
        dango_hmap_cleanup(&st->ghosts);
        goto err_names;
    }

    dango_list_init(&st->inflight);
    dango_list_init(&st->ghost_fifo);
    st->rng = p->seed;
    if (st->rng == 0) {
        dango_random_bytes(&st->rng, sizeof(st->rng));
    }

    /* Put ids of a later master (larger view version) stay above ours. */
    st->next_put_id = 1;
    if ((p->view_version > 0) && ((uint64_t)p->view_version < (1ull << 43))) {
        st->next_put_id = ((uint64_t)p->view_version << 20) + 1;
    }

    *st_p = st;
    return 0;

err_names:
    dango_hmap_cleanup(&st->names);
err_segs:
    dango_hmap_cleanup(&st->segs_by_id);
err_clients:
    dango_hmap_cleanup(&st->clients);
err_objs:
    dango_hmap_cleanup(&st->objs);
err_free:
    dango_free(st);
    return rc;
}

void dango__store_ms_destroy(ms_state_t *st)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;

    if (st == NULL) {
        return;
    }

    dango__store_ms_disk_destroy(st);

    /* Regions need no freeing: the allocators go as a whole. */
    dango_hmap_iter_begin(&st->objs, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_obj_t *o = dango_container_of(node, ms_obj_t, node);

        dango_free(o->cur);
        dango_free(o->pend);
        dango_hmap_remove(&st->objs, node);
        dango_free(o);
    }
    dango_hmap_iter_end(&it);

    dango_hmap_iter_begin(&st->slots, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        dango_hmap_remove(&st->slots, node);
        dango_free(dango_container_of(node, ms_ver_t, slot_node));
    }
    dango_hmap_iter_end(&it);
    dango_hmap_cleanup(&st->slots);

    for (size_t i = 0; i < st->nparked; i++) {
        if (st->parked[i]->copy_id != 0) {
            dango__store_ms_copy_forget(st, st->parked[i]);
        }
        dango_free(st->parked[i]);
    }

    while (st->nsegs > 0) {
        seg_free(st, st->segs[st->nsegs - 1]);
    }

    dango_hmap_iter_begin(&st->clients, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_client_t *c = dango_container_of(node, ms_client_t, node);

        dango_hmap_remove(&st->clients, node);
        dango_free(c->tombs);
        dango__store_ms_kv_free(c->kv);
        dango_free(c);
    }
    dango_hmap_iter_end(&it);

    dango__store_ms_ghost_forget_match(st, NULL);
    dango__store_ms_fence_destroy(st);
    dango_hmap_cleanup(&st->ghosts);
    dango_hmap_cleanup(&st->copies);
    dango_hmap_cleanup(&st->objs);
    dango_hmap_cleanup(&st->clients);
    dango_hmap_cleanup(&st->segs_by_id);
    dango_hmap_cleanup(&st->names);
    dango_free(st->segs);
    dango_free(st->parked);
    dango_free(st->dup_tab);
    dango_free(st->scratch);
    dango_free(st);
}

void *dango__store_ms_scratch(ms_state_t *st, size_t size)
{
    if ((st->scratch == NULL) || (size > st->scratch_cap)) {
        size_t cap = (st->scratch_cap == 0) ? 65536 : st->scratch_cap;
        void  *buf;

        while (cap < size) {
            cap *= 2;
        }

        buf = dango_malloc(cap, "master_scratch");
        if (buf == NULL) {
            return NULL;
        }
        dango_free(st->scratch);
        st->scratch     = buf;
        st->scratch_cap = cap;
    }

    return st->scratch;
}

ms_client_t *dango__store_ms_client_find(ms_state_t *st, ms_cid_t id)
{
    uint8_t            key[16];
    dango_hmap_node_t *node;

    id_key(key, id.hi, id.lo);
    node = dango_hmap_find(&st->clients, key, sizeof(key),
                           dango_hmap_hash(key, sizeof(key)));
    return (node != NULL) ? dango_container_of(node, ms_client_t, node) : NULL;
}

ms_client_t *dango__store_ms_client_touch(ms_state_t *st, ms_cid_t id,
                                          uint64_t now)
{
    ms_client_t *c = dango__store_ms_client_find(st, id);

    if (st->first_seen == 0) {
        st->first_seen = now;
    }
    if (c == NULL) {
        c = dango_calloc(1, sizeof(*c), "master_client");
        if (c == NULL) {
            return NULL;
        }

        c->id = id;
        id_key(c->id_key, id.hi, id.lo);
        c->node.key     = c->id_key;
        c->node.key_len = sizeof(c->id_key);
        c->node.hash    = dango_hmap_hash(c->id_key, sizeof(c->id_key));
        dango_list_init(&c->segs);
        dango_list_init(&c->puts);
        dango_hmap_insert(&st->clients, &c->node);
        dango_debug("master: client %016llx-%016llx known",
                    (unsigned long long)id.hi, (unsigned long long)id.lo);
    }

    c->last_seen = now;
    return c;
}

int dango__store_ms_mount(ms_state_t *st, ms_cid_t cid, const ms_seg_desc_t *d,
                          uint64_t now)
{
    ms_client_t *c;
    ms_seg_t    *seg;
    int          is_new;
    int          rc;

    rc = seg_desc_check(d);
    if (rc != 0) {
        return rc;
    }

    seg = seg_find(st, d->id_hi, d->id_lo);
    if (seg != NULL) {
        if (!cid_eq(seg->client->id, cid)) {
            return DANGO_ESEGMENT_EXISTS;
        }
        if (!seg_same(seg, d)) {
            return DANGO_EINVAL;
        }
        seg->client->last_seen = now;
        return 0;
    }

    is_new = (dango__store_ms_client_find(st, cid) == NULL);
    c      = dango__store_ms_client_touch(st, cid, now);
    if (c == NULL) {
        return DANGO_ENOMEM;
    }

    rc = seg_create(st, c, d, now);
    if (rc != 0) {
        return rc;
    }

    /* A client that introduces itself with a mount is registered; one the
     * master knew but lost track of (not ok) must remount everything. */
    if (is_new) {
        c->ok = 1;
    }
    return 0;
}

int dango__store_ms_remount(ms_state_t *st, ms_cid_t cid,
                            const ms_seg_desc_t *d, size_t n, uint64_t now)
{
    ms_client_t *c;
    int          rc;

    for (size_t i = 0; i < n; i++) {
        ms_seg_t *seg;

        rc = seg_desc_check(&d[i]);
        if (rc != 0) {
            return rc;
        }

        seg = seg_find(st, d[i].id_hi, d[i].id_lo);
        if ((seg != NULL) && !cid_eq(seg->client->id, cid)) {
            return DANGO_ESEGMENT_EXISTS;
        }
    }

    c = dango__store_ms_client_touch(st, cid, now);
    if (c == NULL) {
        return DANGO_ENOMEM;
    }

    /* Node reports are taken from the first remount on for a while: a
     * master that just started rebuilds from them. Not a master that has
     * been serving for longer than the window (a node back from a
     * partition): its table is the truth, and what such a node holds comes
     * back only as replicas of what the table has, or of a ghost. */
    if ((st->rebuild_until == 0) &&
        (now < st->first_seen + st->p.rebuild_window_ms)) {
        st->rebuild_until = now + st->p.rebuild_window_ms;
    }

    for (size_t i = 0; i < n; i++) {
        ms_seg_t *seg = seg_find(st, d[i].id_hi, d[i].id_lo);

        if (seg != NULL) {
            if (seg_same(seg, &d[i])) {
                continue;
            }
            seg_destroy(st, seg, now); /* same id, new geometry */
        }

        rc = seg_create(st, c, &d[i], now);
        if (rc != 0) {
            return rc;
        }
    }

    if (!c->ok) {
        dango_info("master: client %016llx-%016llx remounted %zu segments",
                   (unsigned long long)cid.hi, (unsigned long long)cid.lo, n);
    }
    c->ok = 1;
    return 0;
}

void dango__store_ms_tomb_add(ms_state_t *st, ms_seg_t *seg, uint64_t addr,
                              uint64_t put_id)
{
    ms_client_t *c = seg->client;

    if (c->ntombs == c->tombs_cap) {
        size_t     cap = c->tombs_cap ? 2 * c->tombs_cap : 64;
        ms_tomb_t *t;

        if (cap > MS_TOMB_MAX) {
            st->c.tombs_dropped++;
            return;
        }

        t = dango_realloc(c->tombs, cap * sizeof(*t), "master_tombs");
        if (t == NULL) {
            st->c.tombs_dropped++;
            return;
        }

        c->tombs     = t;
        c->tombs_cap = cap;
    }

    c->tombs[c->ntombs].addr   = addr;
    c->tombs[c->ntombs].put_id = put_id;
    c->ntombs++;
}

size_t dango__store_ms_tombs_take(ms_state_t *st, ms_cid_t cid,
                                  ms_tomb_t **tombs_p)
{
    ms_client_t *c = dango__store_ms_client_find(st, cid);
    size_t       n;

    *tombs_p = NULL;
    if ((c == NULL) || (c->ntombs == 0)) {
        return 0;
    }

    *tombs_p     = c->tombs;
    n            = c->ntombs;
    c->tombs     = NULL;
    c->ntombs    = 0;
    c->tombs_cap = 0;
    return n;
}

void dango__store_ms_seg_recovering(ms_state_t *st, ms_cid_t cid,
                                    const ms_seg_desc_t *d, size_t n, int on)
{
    for (size_t i = 0; i < n; i++) {
        ms_seg_t *seg = seg_find(st, d[i].id_hi, d[i].id_lo);

        if ((seg != NULL) && cid_eq(seg->client->id, cid)) {
            seg->recovering = on;
        }
    }
}

int dango__store_ms_unmount(ms_state_t *st, ms_cid_t cid, uint64_t id_hi,
                            uint64_t id_lo, uint64_t now)
{
    ms_seg_t *seg = seg_find(st, id_hi, id_lo);

    if (seg == NULL) {
        return 0;
    }

    if (!cid_eq(seg->client->id, cid)) {
        return DANGO_EINVAL;
    }

    seg->client->last_seen = now;
    seg_destroy(st, seg, now);
    return 0;
}

int dango__store_ms_ping(ms_state_t *st, ms_cid_t cid, uint64_t now)
{
    ms_client_t *c = dango__store_ms_client_touch(st, cid, now);

    if (c == NULL) {
        return DANGO_ENOMEM;
    }

    return c->ok ? 0 : DANGO_ENEED_REMOUNT;
}

size_t dango__store_ms_monitor(ms_state_t *st, uint64_t now)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    size_t             n = 0;

    /* Expiring removes the client's own node only: allowed mid-iteration. */
    dango_hmap_iter_begin(&st->clients, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_client_t *c = dango_container_of(node, ms_client_t, node);

        if (c->last_seen + st->p.client_ttl_ms <= now) {
            client_expire(st, c, now);
            n++;
        }
    }
    dango_hmap_iter_end(&it);
    return n;
}

void dango__store_ms_tick(ms_state_t *st, uint64_t now)
{
    double hwm = st->p.evict_high_watermark * (double)st->capacity;

    if ((st->capacity > 0) && (now >= st->evict_idle_until) &&
        (((double)st->used > hwm) ||
         (st->need_evict && (st->p.evict_ratio > 0)))) {
        if (dango__store_ms_evict(st, now) == 0) {
            st->evict_idle_until = now + MS_EVICT_IDLE_MS;
        }
        st->need_evict = 0;
    }

    while ((st->nparked > 0) && (st->parked[0]->free_at <= now)) {
        ms_ver_t *v = st->parked[0];

        ver_unpark(st, v);
        dango__store_ms_ver_free(st, v);
        st->c.releases++;
    }

    while (!dango_list_is_empty(&st->inflight)) {
        ms_ver_t *v =
            dango_list_head_elem(&st->inflight, ms_ver_t, inflight_link);
        ms_obj_t *o = v->obj;

        if (v->start + st->p.put_release_ms > now) {
            break;
        }

        if (v->slot) {
            dango__store_ms_slot_drop(st, v, now, now);
            st->c.reclaims++;
            continue;
        }

        dango_debug("master: put %llu of '%s' reclaimed after %llu ms",
                    (unsigned long long)v->put_id, o->key,
                    (unsigned long long)(now - v->start));
        dango__store_ms_ver_unlink(st, v);
        o->pend = NULL;
        dango__store_ms_ver_free(st, v);
        if (o->cur == NULL) {
            dango__store_ms_obj_erase(st, o);
        }
        st->c.reclaims++;
        st->c.releases++;
    }

    dango_hmap_rehash_step(&st->objs, MS_REHASH_STEP);
    dango_hmap_rehash_step(&st->clients, MS_REHASH_STEP);
    dango_hmap_rehash_step(&st->segs_by_id, MS_REHASH_STEP);
    dango_hmap_rehash_step(&st->names, MS_REHASH_STEP);
    dango__store_ms_disk_tick(st, now);
    dango__store_ms_fence_tick(st, now);
}

void dango__store_ms_rep_drop(ms_state_t *st, ms_rep_t *r)
{
    rep_detach(st, r, 1);
}

void dango__store_ms_ver_free(ms_state_t *st, ms_ver_t *v)
{
    if (v->copy_id != 0) {
        dango__store_ms_copy_forget(st, v);
    }
    for (unsigned i = 0; i < v->nrep; i++) {
        if (v->rep[i].seg != NULL) {
            rep_detach(st, &v->rep[i], 1);
        }
    }

    dango_free(v);
}

void dango__store_ms_ver_park(ms_state_t *st, ms_ver_t *v, uint64_t free_at,
                              uint64_t now)
{
    v->obj     = NULL;
    v->client  = NULL;
    v->free_at = free_at;
    if ((free_at <= now) || (v->nlive == 0) || (heap_push(st, v) != 0)) {
        /* Out of memory for the heap: freeing early is the lesser evil
         * than leaking the regions for good. */
        dango__store_ms_ver_free(st, v);
        st->c.releases++;
        return;
    }

    for (unsigned i = 0; i < v->nrep; i++) {
        if (v->rep[i].seg != NULL) {
            st->parked_bytes += ms_seg_round(v->rep[i].seg, v->rec_len);
        }
    }
}

void dango__store_ms_ver_unlink(ms_state_t *st, ms_ver_t *v)
{
    if (!dango_list_is_empty(&v->inflight_link)) {
        dango_list_del(&v->inflight_link);
        dango_list_del(&v->client_link);
        st->ninflight--;
    }

    v->client = NULL;
}

void dango__store_ms_obj_erase(ms_state_t *st, ms_obj_t *o)
{
    if (o->soft_pin_timeout != 0) {
        st->soft_pinned--;
    }

    dango_hmap_remove(&st->objs, &o->node);
    dango_free(o);
}

void dango__store_ms_ver_lost(ms_state_t *st, ms_ver_t *v)
{
    ms_obj_t *o = v->obj;

    if (v->nlive > 0) {
        return;
    }

    if (v->slot) {
        dango__store_ms_slot_drop(st, v, 0, 0);
        return;
    }

    if (o == NULL) {
        if (v->heap_idx != SIZE_MAX) {
            heap_remove(st, v);
        }
        if (v->copy_id != 0) {
            dango__store_ms_copy_forget(st, v);
        }
        dango_free(v);
        return;
    }

    if (o->cur == v) {
        /* Its nodes may come back with it (partition, pause). */
        dango__store_ms_ghost_add(st, o, v);
        o->cur = NULL;
    } else {
        dango__store_ms_ver_unlink(st, v);
        o->pend = NULL;
    }

    dango_free(v);
    if ((o->cur == NULL) && (o->pend == NULL)) {
        dango__store_ms_obj_erase(st, o);
    }
}

unsigned dango__store_ms_place(ms_state_t *st, uint64_t len, unsigned want,
                               const char *const *preferred, size_t npref,
                               ms_seg_t **segs, uint64_t *offs)
{
    unsigned placed = 0;
    size_t   probes;
    size_t   start;

    /* Is name @n already used by a replica of this object? */
#define MS_NAME_USED(_n)                                                       \
    ({                                                                         \
        int _used = 0;                                                         \
        for (unsigned _j = 0; _j < placed; _j++) {                             \
            _used |= (segs[_j]->name == (_n));                                 \
        }                                                                      \
        _used;                                                                 \
    })

    for (size_t i = 0; (i < npref) && (placed < want); i++) {
        size_t             nlen = strlen(preferred[i]);
        dango_hmap_node_t *node;
        ms_name_t         *name;
        ms_seg_t          *seg;

        node = dango_hmap_find(&st->names, preferred[i], nlen,
                               dango_hmap_hash(preferred[i], nlen));
        if (node == NULL) {
            continue;
        }

        name = dango_container_of(node, ms_name_t, node);
        if (MS_NAME_USED(name)) {
            continue;
        }

        dango_list_for_each(seg, &name->segs, name_link)
        {
            uint64_t asz;

            if (!seg->recovering && (seg->capacity - seg->used >= len) &&
                (dango__store_alloc_alloc(seg->alloc, len, &offs[placed],
                                          &asz) == 0)) {
                seg->used += asz;
                st->used += asz;
                segs[placed++] = seg;
                break;
            }
        }
    }

    if ((placed == want) || (st->nsegs == 0)) {
        return placed;
    }

    probes = (st->nsegs < MS_PROBE_MAX) ? st->nsegs : MS_PROBE_MAX;
    start  = rng_next(st) % st->nsegs;
    for (size_t k = 0; (k < probes) && (placed < want); k++) {
        ms_seg_t *seg = st->segs[(start + k) % st->nsegs];
        uint64_t  asz;

        if (seg->recovering || (seg->capacity - seg->used < len) ||
            MS_NAME_USED(seg->name)) {
            continue;
        }

        if (dango__store_alloc_alloc(seg->alloc, len, &offs[placed], &asz) ==
            0) {
            seg->used += asz;
            st->used += asz;
            segs[placed++] = seg;
        }
    }
#undef MS_NAME_USED

    return placed;
}

void dango__store_ms_region_free(ms_state_t *st, ms_seg_t *seg, uint64_t off,
                                 uint64_t len)
{
    uint64_t asz = ms_seg_round(seg, len);

    dango__store_alloc_free(seg->alloc, off);
    seg->used -= asz;
    st->used -= asz;
}

void dango__store_ms_ver_unpark(ms_state_t *st, ms_ver_t *v)
{
    ver_unpark(st, v);
}
