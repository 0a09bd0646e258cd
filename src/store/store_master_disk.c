/*
 * Store master: the disk tiers of the nodes (offload on evict, reads from
 * disk, promotion).
 *
 * DESIGN
 *
 * A node with a disk tier owns the file and its space; the master only
 * knows which records each node holds (key -> node, offset, put id, size,
 * checksum) and hands out work. Nodes talk to the master through one
 * method, DiskPoll: each call carries the results of the tasks the node
 * finished and the records it dropped by itself (its LRU past the disk
 * watermark, or a record that failed its checksum), and is answered with
 * new tasks. With nothing to hand out, the reply is held (the node asked
 * for it with `wait`) until a task is queued or MS_DISK_HOLD_MS passes, so
 * an idle node costs a few calls per second and a task reaches its node at
 * once.
 *
 * Offload on evict. When an eviction pass picks an object whose memory
 * replica lives in the segment of a node with a disk tier, the object is
 * not dropped: an OFFLOAD task (key, put id, record address in the node's
 * own segment) is queued for that node and the object is marked
 * MS_DISK_BUSY, which keeps it out of later passes. The node copies the
 * record from its memory to its disk and reports the offset; only then does
 * the master record the disk replica and drop the memory one (unless a
 * reader leased it meanwhile). Eviction never waits: a pass only queues.
 * An object whose node has no tier is dropped as before; one whose node's
 * queue is full (MASTER_DISK_QUEUE) stays in memory until the next pass; a
 * failed offload (disk full, write error) marks the object MS_DISK_FAILED
 * and the next pass drops it.
 *
 * Reads. GetReplicaList answers a key held only on disk with ENO_OBJECT
 * and `on_disk`. The reader then calls DiskLoad for those keys. For each,
 * the master allocates a region in the owning node's segment and queues a
 * LOAD task; the node reads the record from disk (verifying header, commit
 * word and value checksum) straight into that region. The DiskLoad reply
 * is held until every key's task ended, and then carries ordinary GetItems
 * with that region as the one replica, so the reader's library reads it
 * like any memory replica (and verifies the checksum again). The region is
 * then either
 *   - a staging copy, parked until the lease deadline (the usual parked
 *     version machinery frees it), or
 *   - after MASTER_DISK_PROMOTE_HITS reads (2): a promotion, i.e. a
 *     COMPLETE memory replica of the object again (the disk record stays,
 *     so evicting it later costs no new write).
 *
 * Failures. Every task has a deadline (MS_DISK_TASK_MS); a node silent for
 * CLIENT_TTL loses its records and tasks; a segment going away fails the
 * loads into it; a corrupt or missing record on disk is dropped and
 * reported to the reader as DANGO_ECORRUPT / DANGO_ENO_OBJECT, never
 * returned. Removing or overwriting a key drops its disk record (the node
 * is told in its next poll).
 *
 * Everything runs on the master's loop thread.
 */
#include <inttypes.h>
#include <regex.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "store/store_master_int.h"
#include "dango_store.pb-c.h"

/* A held DiskPoll is answered empty after this long. */
#define MS_DISK_HOLD_MS 100
/* A task not finished in this long fails. */
#define MS_DISK_TASK_MS 10000
/* Tasks handed out per DiskPoll reply, and drops per reply. Offloads are
 * capped lower, so that a load queued behind a burst of them waits for at
 * most that many writes. */
#define MS_DISK_TASKS_PER_POLL    256
#define MS_DISK_OFFLOADS_PER_POLL 64
/* A node not polling for this long does not get loads (they would wait
 * for MS_DISK_TASK_MS): the read fails at once. */
#define MS_DISK_SILENT_MS      3000
#define MS_DISK_DROPS_PER_POLL 4096
/* How long a node keeps a record it staged for a reader (its lease). */
#define MS_DISK_STAGE_MS 1000
/* How long eviction waits for a remounted node's disk report. */
#define MS_DISK_PENDING_MS 5000
/* Records accepted per DiskPoll report. */
#define MS_DISK_REPORT_MAX 65536

typedef struct ms_dnode ms_dnode_t;
typedef struct ms_dwait ms_dwait_t;

/* A record on a node's disk. */
typedef struct ms_dobj {
    dango_hmap_node_t node; /* in disk->objs, key = key */
    dango_list_link_t link; /* dn->objs */
    ms_dnode_t       *dn;
    uint64_t          off, rec_len, size, checksum, put_id;
    uint32_t          hits; /* disk reads since it went to disk */
    char              key[];
} ms_dobj_t;

/* One task for a node. */
typedef struct ms_dtask {
    dango_list_link_t link; /* dn->queue, then dn->sent */
    uint64_t          id;
    uint32_t          kind;
    uint64_t          put_id, rec_len, off, deadline;
    ms_seg_t         *seg; /* load: the region's segment (NULL once gone) */
    uint64_t          seg_off;
    int               nstage; /* load into the node's staging buffer */
    ms_dwait_t       *w;      /* load: the waiting DiskLoad */
    size_t            wi;
    size_t            klen;
    char              key[];
} ms_dtask_t;

/* A node with a disk tier. */
struct ms_dnode {
    dango_hmap_node_t         node; /* in disk->nodes, key = id_key */
    uint8_t                   id_key[16];
    ms_cid_t                  cid;
    uint64_t                  capacity, used, reads, writes, corrupt;
    uint64_t                  last_seen;
    dango_list_link_t         objs;
    dango_list_link_t         queue, sent;
    size_t                    nqueue, nsent, noffload;
    dango_rpc_call_t         *held;
    uint64_t                  held_until;
    int                       reported;      /* sent its records (reset) */
    uint64_t                  pending_until; /* !reported: keep until */
    Dango__Store__DiskRecord *drops;         /* to send: off, put_id, key */
    size_t                    ndrops, drops_cap;
    uint64_t                 *released; /* staging addresses, to send */
    size_t                    nreleased, released_cap;
};

/* One key of a DiskLoad. */
typedef struct ms_dwait_item {
    int       status;
    ms_seg_t *seg;
    uint64_t  off, rec_len, size, checksum, put_id;
    int       staged;  /* the region is ours to hand over */
    int       promote; /* reached the hit threshold */
    int       nstage;  /* read into the node's staging buffer, at addr */
    uint64_t  addr;
    char     *key;
    size_t    klen;
} ms_dwait_item_t;

struct ms_dwait {
    dango_list_link_t link; /* disk->waits */
    dango_rpc_call_t *call;
    size_t            n, pending;
    ms_dwait_item_t   items[];
};

/* A PutStart waiting for offloads to make room. */
typedef struct ms_dput {
    dango_list_link_t link; /* disk->puts, oldest first */
    dango_rpc_call_t *call;
    uint64_t          deadline;
    size_t            len;
    uint8_t           req[];
} ms_dput_t;

typedef struct ms_disk {
    dango_list_link_t    puts; /* ms_dput_t */
    size_t               nputs;
    uint64_t             puts_bytes; /* of the ms_dput_t, requests included */
    ms_disk_put_retry_cb put_retry;
    void                *put_retry_arg;
    int                  retrying;
    uint64_t             retry_deadline; /* of the PutStart being retried */
    uint64_t             retry_used;     /* st->used at the last full retry */
    dango_hmap_t         objs;
    dango_hmap_t         nodes;
    dango_list_link_t    waits; /* DiskLoad calls not answered yet */
    uint64_t             next_task;
    ms_disk_stats_t      c;
} ms_disk_t;

/* ---------- private functions ---------- */

static void puts_retry(ms_state_t *st, uint64_t now, int all);

static ms_disk_t *disk_get(ms_state_t *st)
{
    ms_disk_t *d = st->disk;

    if (d != NULL) {
        return d;
    }

    d = dango_calloc(1, sizeof(*d), "master_disk");
    if (d == NULL) {
        return NULL;
    }
    if (dango_hmap_init(&d->objs, 1024) != 0) {
        dango_free(d);
        return NULL;
    }
    if (dango_hmap_init(&d->nodes, 0) != 0) {
        dango_hmap_cleanup(&d->objs);
        dango_free(d);
        return NULL;
    }
    d->next_task = 1;
    dango_list_init(&d->waits);
    dango_list_init(&d->puts);
    st->disk = d;
    return d;
}

static ms_dobj_t *dobj_find(ms_disk_t *d, const char *key, size_t len)
{
    dango_hmap_node_t *n =
        dango_hmap_find(&d->objs, key, len, dango_hmap_hash(key, len));

    return (n == NULL) ? NULL : dango_container_of(n, ms_dobj_t, node);
}

static ms_obj_t *mobj_find(ms_state_t *st, const char *key, size_t len)
{
    dango_hmap_node_t *n =
        dango_hmap_find(&st->objs, key, len, dango_hmap_hash(key, len));

    return (n == NULL) ? NULL : dango_container_of(n, ms_obj_t, node);
}

static ms_dnode_t *dnode_find(ms_disk_t *d, ms_cid_t cid)
{
    uint8_t            k[16];
    dango_hmap_node_t *n;

    memcpy(k, &cid.hi, 8);
    memcpy(k + 8, &cid.lo, 8);
    n = dango_hmap_find(&d->nodes, k, 16, dango_hmap_hash(k, 16));
    return (n == NULL) ? NULL : dango_container_of(n, ms_dnode_t, node);
}

static ms_dnode_t *dnode_new(ms_disk_t *d, ms_cid_t cid)
{
    ms_dnode_t *dn = dango_calloc(1, sizeof(*dn), "master_disk_node");

    if (dn == NULL) {
        return NULL;
    }
    dn->cid = cid;
    memcpy(dn->id_key, &cid.hi, 8);
    memcpy(dn->id_key + 8, &cid.lo, 8);
    dn->node.key     = dn->id_key;
    dn->node.key_len = 16;
    dn->node.hash    = dango_hmap_hash(dn->id_key, 16);
    dango_list_init(&dn->objs);
    dango_list_init(&dn->queue);
    dango_list_init(&dn->sent);
    dango_hmap_insert(&d->nodes, &dn->node);
    return dn;
}

/* Queues a drop of (@key, @put_id, @off) for its node (best effort). */
static void drop_queue(ms_dnode_t *dn, const char *key, size_t klen,
                       uint64_t put_id, uint64_t off)
{
    Dango__Store__DiskRecord *r;
    char                     *k;

    if (dn->ndrops == dn->drops_cap) {
        size_t cap = (dn->drops_cap == 0) ? 64 : dn->drops_cap * 2;
        void  *p;

        if (cap > MS_DISK_REPORT_MAX) {
            return; /* the node finds it stale on the next load */
        }
        p = dango_realloc(dn->drops, cap * sizeof(*dn->drops), "disk_drops");
        if (p == NULL) {
            return;
        }
        dn->drops     = p;
        dn->drops_cap = cap;
    }

    k = dango_malloc(klen + 1, "disk_drop_key");
    if (k == NULL) {
        return;
    }
    memcpy(k, key, klen);
    r = &dn->drops[dn->ndrops++];
    dango__store__disk_record__init(r);
    r->key.data = (uint8_t *)k;
    r->key.len  = klen;
    r->put_id   = put_id;
    r->off      = off;
}

static void dobj_free(ms_disk_t *d, ms_dobj_t *o, int tell_node)
{
    if (tell_node) {
        drop_queue(o->dn, o->key, o->node.key_len, o->put_id, o->off);
    }
    dango_hmap_remove(&d->objs, &o->node);
    dango_list_del(&o->link);
    dango_free(o);
}

/* Records that @dn holds @key at @off; replaces an older record. */
static int dobj_set(ms_disk_t *d, ms_dnode_t *dn, const char *key, size_t klen,
                    uint64_t put_id, uint64_t size, uint64_t checksum,
                    uint64_t off)
{
    ms_dobj_t *o = dobj_find(d, key, klen);

    if (o != NULL) {
        if ((o->put_id > put_id) ||
            ((o->put_id == put_id) && (o->dn == dn) && (o->off == off))) {
            /* Older than what we know, or the same: the node's copy is
             * stale unless it is the very record. */
            if ((o->put_id > put_id) || (o->off != off)) {
                drop_queue(dn, key, klen, put_id, off);
            }
            return 0;
        }
        dobj_free(d, o, 1);
    }

    o = dango_malloc(sizeof(*o) + klen + 1, "master_disk_obj");
    if (o == NULL) {
        return DANGO_ENOMEM;
    }

    memcpy(o->key, key, klen);
    o->key[klen]    = '\0';
    o->node.key     = o->key;
    o->node.key_len = klen;
    o->node.hash    = dango_hmap_hash(key, klen);
    o->dn           = dn;
    o->off          = off;
    o->put_id       = put_id;
    o->size         = size;
    o->checksum     = checksum;
    o->rec_len      = dango_store_rec_size(klen, size);
    o->hits         = 0;
    dango_hmap_insert(&d->objs, &o->node);
    dango_list_add_tail(&dn->objs, &o->link);
    return 0;
}

static ms_dtask_t *task_new(ms_disk_t *d, uint32_t kind, const char *key,
                            size_t klen)
{
    ms_dtask_t *t = dango_calloc(1, sizeof(*t) + klen + 1, "master_disk_task");

    if (t == NULL) {
        return NULL;
    }

    t->id   = d->next_task++;
    t->kind = kind;
    t->klen = klen;
    memcpy(t->key, key, klen);
    return t;
}

static void poll_answer(ms_dnode_t *dn, uint64_t now);

/* Queues @t for @dn and answers a held poll with it. */
static void task_queue(ms_dnode_t *dn, ms_dtask_t *t, uint64_t now)
{
    t->deadline = now + MS_DISK_TASK_MS;
    dango_list_add_tail(&dn->queue, &t->link);
    dn->nqueue++;
    if (t->kind == DANGO_STORE_DISK_OFFLOAD) {
        dn->noffload++;
    }
    if (dn->held != NULL) {
        poll_answer(dn, now);
    }
}

static void region_free(ms_state_t *st, ms_seg_t *seg, uint64_t off,
                        uint64_t len)
{
    if (seg != NULL) {
        dango__store_ms_region_free(st, seg, off, len);
    }
}

static void wait_reply(ms_state_t *st, ms_dwait_t *w, uint64_t now);

/* Ends load item @i of @w with @status (the task is gone). */
static void wait_item_done(ms_state_t *st, ms_dwait_t *w, size_t i, int status,
                           uint64_t now)
{
    w->items[i].status = status;
    if (--w->pending == 0) {
        wait_reply(st, w, now);
    }
}

/* A task ends (success or not): side effects, then freed. */
static void task_end(ms_state_t *st, ms_dnode_t *dn, ms_dtask_t *t, int status,
                     uint64_t off, uint64_t now);

static void task_fail_all(ms_state_t *st, ms_dnode_t *dn, int status,
                          uint64_t now)
{
    while (!dango_list_is_empty(&dn->queue)) {
        ms_dtask_t *t = dango_list_head_elem(&dn->queue, ms_dtask_t, link);

        dango_list_del(&t->link);
        dn->nqueue--;
        task_end(st, dn, t, status, 0, now);
    }
    while (!dango_list_is_empty(&dn->sent)) {
        ms_dtask_t *t = dango_list_head_elem(&dn->sent, ms_dtask_t, link);

        dango_list_del(&t->link);
        dn->nsent--;
        task_end(st, dn, t, status, 0, now);
    }
}

static void dnode_free(ms_state_t *st, ms_dnode_t *dn, uint64_t now)
{
    ms_disk_t *d = st->disk;

    task_fail_all(st, dn, DANGO_EPEER_GONE, now);
    while (!dango_list_is_empty(&dn->objs)) {
        dobj_free(d, dango_list_head_elem(&dn->objs, ms_dobj_t, link), 0);
    }
    if (dn->held != NULL) {
        dango_rpc_reply(dn->held, DANGO_ECANCELED, NULL, 0);
    }
    for (size_t i = 0; i < dn->ndrops; i++) {
        dango_free(dn->drops[i].key.data);
    }
    dango_free(dn->drops);
    dango_free(dn->released);
    dango_hmap_remove(&d->nodes, &dn->node);
    dango_free(dn);
}

/* Evicts @o from memory now (it is on disk). */
static void mem_drop(ms_state_t *st, ms_obj_t *o)
{
    ms_ver_t *v = o->cur;

    st->c.evicted_keys++;
    st->c.evicted_bytes += v->rec_len * v->nlive;
    dango__store_ms_kv_ver(st, o, v, 0); /* gone from the node's memory */
    o->cur = NULL;
    dango__store_ms_ver_free(st, v);
    if (o->pend == NULL) {
        dango__store_ms_obj_erase(st, o);
    }
}

/* A version of one COMPLETE replica at (@seg, @off). */
static ms_ver_t *ver_new(const ms_dwait_item_t *it, ms_cid_t cid, uint64_t now)
{
    ms_ver_t *v = dango__store_ms_ver_new(1, cid, it->put_id, it->size,
                                          it->checksum, it->rec_len, now);

    if (v == NULL) {
        return NULL;
    }

    dango__store_ms_rep_add(v, it->seg, it->off, DANGO_STORE_REPLICA_COMPLETE);
    return v;
}

static void task_end(ms_state_t *st, ms_dnode_t *dn, ms_dtask_t *t, int status,
                     uint64_t off, uint64_t now)
{
    ms_disk_t *d = st->disk;
    ms_obj_t  *o = mobj_find(st, t->key, t->klen);
    ms_dobj_t *r = dobj_find(d, t->key, t->klen);

    if (t->kind == DANGO_STORE_DISK_OFFLOAD) {
        dn->noffload--;
        if ((o != NULL) && (o->cur != NULL) && (o->cur->put_id == t->put_id)) {
            o->disk_busy = (status == 0) ? MS_DISK_IDLE : MS_DISK_FAILED;
        } else if (o != NULL) {
            o->disk_busy = MS_DISK_IDLE;
        }

        if (status != 0) {
            d->c.offload_failures++;
            dango_debug("master: offload of '%s' failed: %s", t->key,
                        dango_strerror(status));
        } else if ((o == NULL) || (o->cur == NULL) ||
                   (o->cur->put_id != t->put_id)) {
            /* Removed or overwritten meanwhile: the record is stale. */
            drop_queue(dn, t->key, t->klen, t->put_id, off);
        } else if (dobj_set(d, dn, t->key, t->klen, t->put_id, o->cur->size,
                            o->cur->checksum, off) == 0) {
            d->c.offloads++;
            d->c.offload_bytes += t->rec_len;
            if ((o->pend == NULL) && (o->lease_timeout <= now) &&
                !o->hard_pin) {
                mem_drop(st, o);
            }
        }
    } else {
        ms_dwait_item_t *it = &t->w->items[t->wi];

        it->seg = t->seg;
        if ((status == 0) && (t->seg == NULL)) {
            status = DANGO_EREPLICA_UNAVAIL; /* segment went away */
        }
        if ((status == 0) &&
            ((r == NULL) || (r->put_id != t->put_id) || (r->dn != dn))) {
            status = DANGO_ENO_OBJECT; /* removed meanwhile */
        }

        if (status == 0) {
            it->staged = 1;
            it->addr   = off; /* node staging: where the node put it */
            d->c.loads++;
            d->c.load_bytes += t->rec_len;
        } else {
            if (!it->nstage) {
                region_free(st, t->seg, t->seg_off, t->rec_len);
            }
            it->seg = NULL;
            d->c.load_failures++;
            if ((status == DANGO_ECORRUPT) || (status == DANGO_ENOENT)) {
                /* The node dropped its record already. */
                if ((r != NULL) && (r->put_id == t->put_id) && (r->dn == dn)) {
                    dobj_free(d, r, 0);
                }
                d->c.corrupt += status == DANGO_ECORRUPT;
                status = (status == DANGO_ENOENT) ? DANGO_ENO_OBJECT : status;
            }
        }
        wait_item_done(st, t->w, t->wi, status, now);
    }

    dango_free(t);
}

/*
 * The DiskLoad reply. A staged region becomes a version of one COMPLETE
 * replica: the object's value again when the key reached the promotion
 * threshold (and nothing else took its place), else a parked copy freed at
 * the lease deadline.
 */
static void wait_reply(ms_state_t *st, ms_dwait_t *w, uint64_t now)
{
    Dango__Store__GetResp  resp = DANGO__STORE__GET_RESP__INIT;
    Dango__Store__GetItem *items, **itemp;
    Dango__Store__Replica *reps, **repp;
    ms_disk_t             *d = st->disk;

    dango_list_del(&w->link);
    items = dango_calloc(
        w->n, sizeof(*items) + sizeof(*itemp) + sizeof(*reps) + sizeof(*repp),
        "disk_load_reply");
    if (items == NULL) {
        for (size_t i = 0; i < w->n; i++) {
            if (w->items[i].staged && !w->items[i].nstage) {
                region_free(st, w->items[i].seg, w->items[i].off,
                            w->items[i].rec_len);
            }
        }
        dango_rpc_reply(w->call, DANGO_ENOMEM, NULL, 0);
        for (size_t i = 0; i < w->n; i++) {
            dango_free(w->items[i].key);
        }
        dango_free(w);
        return;
    }
    itemp = (Dango__Store__GetItem **)(items + w->n);
    reps  = (Dango__Store__Replica *)(itemp + w->n);
    repp  = (Dango__Store__Replica **)(reps + w->n);

    for (size_t i = 0; i < w->n; i++) {
        ms_dwait_item_t *it  = &w->items[i];
        ms_seg_t        *seg = it->seg;
        ms_ver_t        *v;
        ms_obj_t        *o;

        dango__store__get_item__init(&items[i]);
        itemp[i]        = &items[i];
        items[i].status = it->status;
        if (!it->staged) {
            continue;
        }

        if (it->nstage) {
            /* In the node's staging buffer for MS_DISK_STAGE_MS. */
            items[i].size        = it->size;
            items[i].checksum    = it->checksum;
            items[i].put_id      = it->put_id;
            items[i].lease_ms    = MS_DISK_STAGE_MS / 2;
            items[i].disk_staged = 1;
            dango__store__replica__init(&reps[i]);
            reps[i].segment     = seg->name->name;
            reps[i].addr        = it->addr;
            reps[i].length      = it->rec_len;
            reps[i].status      = DANGO_STORE_REPLICA_COMPLETE;
            reps[i].host_id     = seg->host_id;
            reps[i].seg_hi      = seg->id_hi;
            reps[i].seg_lo      = seg->id_lo;
            repp[i]             = &reps[i];
            items[i].n_replicas = 1;
            items[i].replicas   = &repp[i];
            continue;
        }

        v = ver_new(it,
                    (seg->client != NULL) ? seg->client->id : (ms_cid_t){0, 0},
                    now);
        o = NULL;
        if ((v != NULL) && it->promote &&
            (mobj_find(st, it->key, it->klen) == NULL)) {
            o = dango_calloc(1, sizeof(*o) + it->klen + 1, "master_obj");
        }
        if (v == NULL) {
            region_free(st, seg, it->off, it->rec_len);
            items[i].status = DANGO_ENOMEM;
            continue;
        }

        if (o != NULL) {
            memcpy(o->key, it->key, it->klen);
            o->node.key      = o->key;
            o->node.key_len  = it->klen;
            o->node.hash     = dango_hmap_hash(it->key, it->klen);
            o->cur           = v;
            o->lease_timeout = now + st->p.lease_ttl_ms;
            v->obj           = o;
            dango_hmap_insert(&st->objs, &o->node);
            dango__store_ms_kv_ver(st, o, v, 1); /* in memory again */
            d->c.promotions++;
        }

        items[i].size     = it->size;
        items[i].checksum = it->checksum;
        items[i].put_id   = it->put_id;
        items[i].lease_ms = ms_client_window(st->p.lease_ttl_ms);
        dango__store__replica__init(&reps[i]);
        reps[i].segment     = seg->name->name;
        reps[i].addr        = seg->base + it->off;
        reps[i].length      = it->rec_len;
        reps[i].status      = DANGO_STORE_REPLICA_COMPLETE;
        reps[i].host_id     = seg->host_id;
        reps[i].seg_hi      = seg->id_hi;
        reps[i].seg_lo      = seg->id_lo;
        repp[i]             = &reps[i];
        items[i].n_replicas = 1;
        items[i].replicas   = &repp[i];
        if (o == NULL) {
            /* Parking never frees before the deadline: the strings above
             * stay valid until the reply is packed below. */
            dango__store_ms_ver_park(st, v, now + st->p.lease_ttl_ms, now);
        }
    }

    resp.n_items = w->n;
    resp.items   = itemp;
    dango_rpc_reply_pb(w->call, 0, &resp.base);
    dango_free(items);
    for (size_t i = 0; i < w->n; i++) {
        dango_free(w->items[i].key);
    }
    dango_free(w);
}

/* ---------- DiskPoll ---------- */

/* Moves @t from the queue to the sent list and describes it in @o. */
static void task_send(ms_dnode_t *dn, ms_dtask_t *t, Dango__Store__DiskTask *o,
                      uint64_t now)
{
    dango_list_del(&t->link);
    dn->nqueue--;
    dango_list_add_tail(&dn->sent, &t->link);
    dn->nsent++;
    t->deadline = now + MS_DISK_TASK_MS;
    dango__store__disk_task__init(o);
    o->id       = t->id;
    o->kind     = t->kind;
    o->key.data = (uint8_t *)t->key;
    o->key.len  = t->klen;
    o->put_id   = t->put_id;
    o->length   = t->rec_len;
    o->off      = t->off;
    if (t->kind == DANGO_STORE_DISK_OFFLOAD) {
        o->addr = t->seg_off; /* absolute address, see on_evict */
    } else if ((t->seg != NULL) && !t->nstage) {
        o->addr = t->seg->base + t->seg_off; /* promotion: our region */
    } else {
        o->addr = 0; /* into the node's staging buffer */
    }
}

/* Hands queued tasks and drops to the node (answers the held call). */
static void poll_answer(ms_dnode_t *dn, uint64_t now)
{
    Dango__Store__DiskPollResp resp  = DANGO__STORE__DISK_POLL_RESP__INIT;
    Dango__Store__DiskTask    *tasks = NULL, **taskp = NULL;
    Dango__Store__DiskRecord **dropp = NULL;
    size_t                     nt    = 0;
    size_t            nd   = (dn->ndrops < MS_DISK_DROPS_PER_POLL) ? dn->ndrops
                                                                   : MS_DISK_DROPS_PER_POLL;
    size_t            want = (dn->nqueue < MS_DISK_TASKS_PER_POLL)
                                 ? dn->nqueue
                                 : MS_DISK_TASKS_PER_POLL;
    dango_rpc_call_t *call = dn->held;

    dn->held = NULL;
    if (want + nd > 0) {
        tasks = dango_calloc(want + 1, sizeof(*tasks) + sizeof(*taskp),
                             "disk_poll_tasks");
        dropp = dango_calloc(nd + 1, sizeof(*dropp), "disk_poll_drops");
        if ((tasks == NULL) || (dropp == NULL)) {
            dango_free(tasks);
            dango_free(dropp);
            dango_rpc_reply(call, DANGO_ENOMEM, NULL, 0);
            return;
        }
        taskp = (Dango__Store__DiskTask **)(tasks + want + 1);
    }

    /* Loads first (a reader waits for each), then offloads, each in the
     * order queued. */
    for (int pass = 0; pass < 2; pass++) {
        ms_dtask_t *t, *tmp;
        size_t      first = nt;

        dango_list_for_each_safe(t, tmp, &dn->queue, link)
        {
            if ((nt == want) ||
                ((pass == 1) && (nt - first == MS_DISK_OFFLOADS_PER_POLL))) {
                break;
            }
            if ((t->kind == DANGO_STORE_DISK_LOAD) == (pass == 0)) {
                task_send(dn, t, &tasks[nt], now);
                taskp[nt] = &tasks[nt];
                nt++;
            }
        }
    }

    for (size_t i = 0; i < nd; i++) {
        dropp[i] = &dn->drops[i];
    }

    resp.n_tasks    = nt;
    resp.tasks      = taskp;
    resp.n_drops    = nd;
    resp.drops      = dropp;
    resp.n_released = dn->nreleased;
    resp.released   = dn->released;
    dango_rpc_reply_pb(call, 0, &resp.base);
    dn->nreleased = 0;

    for (size_t i = 0; i < nd; i++) {
        dango_free(dn->drops[i].key.data);
    }
    if (nd > 0) {
        memmove(dn->drops, dn->drops + nd,
                (dn->ndrops - nd) * sizeof(*dn->drops));
        dn->ndrops -= nd;
    }
    dango_free(tasks);
    dango_free(dropp);
}

static ms_dtask_t *sent_take(ms_dnode_t *dn, uint64_t id)
{
    ms_dtask_t *t;

    dango_list_for_each(t, &dn->sent, link)
    {
        if (t->id == id) {
            dango_list_del(&t->link);
            dn->nsent--;
            return t;
        }
    }
    return NULL;
}

static int rpc_disk_poll(dango_store_master_t *m, dango_rpc_call_t *call,
                         const void *req, size_t len, uint64_t now)
{
    ms_state_t                *st = m->st;
    Dango__Store__DiskPollReq *msg;
    ms_disk_t                 *d;
    ms_dnode_t                *dn;
    ms_cid_t                   cid;
    size_t                     ended;
    int                        rc = 0, wait;

    msg = dango__store__disk_poll_req__unpack(NULL, len, req);
    if (msg == NULL) {
        dango_rpc_reply(call, DANGO_EPROTO, NULL, 0);
        return DANGO_EPROTO;
    }

    if ((msg->client == NULL) || (msg->n_records > MS_DISK_REPORT_MAX) ||
        (msg->n_done > MS_DISK_REPORT_MAX) ||
        (msg->n_dropped > MS_DISK_REPORT_MAX)) {
        rc = DANGO_EINVAL;
        goto out_err;
    }

    d = disk_get(st);
    if (d == NULL) {
        rc = DANGO_ENOMEM;
        goto out_err;
    }

    cid.hi = msg->client->hi;
    cid.lo = msg->client->lo;
    if (dango__store_ms_client_find(st, cid) == NULL) {
        /* Only a mounted client has a disk tier: mount first. */
        Dango__Store__DiskPollResp resp = DANGO__STORE__DISK_POLL_RESP__INIT;

        resp.status = DANGO_ENEED_REMOUNT;
        dango__store__disk_poll_req__free_unpacked(msg, NULL);
        dango_rpc_reply_pb(call, 0, &resp.base);
        return 0;
    }
    dango__store_ms_client_touch(st, cid, now);
    dn = dnode_find(d, cid);
    if ((dn != NULL) && msg->reset) {
        dnode_free(st, dn, now);
        dn = NULL;
    }

    if ((dn != NULL) && !dn->reported) {
        /* Announced by a remount: its report replaces the placeholder. */
        if (msg->reset) {
            dnode_free(st, dn, now);
        }
        dn = NULL;
    }

    if (dn == NULL) {
        if (!msg->reset) {
            Dango__Store__DiskPollResp resp =
                DANGO__STORE__DISK_POLL_RESP__INIT;

            resp.status = DANGO_ENEED_REMOUNT;
            dango__store__disk_poll_req__free_unpacked(msg, NULL);
            dango_rpc_reply_pb(call, 0, &resp.base);
            return 0;
        }

        dn = dnode_new(d, cid);
        if (dn == NULL) {
            rc = DANGO_ENOMEM;
            goto out_err;
        }
        dn->reported = 1;
        dango_info("master: disk tier of client %016" PRIx64 "%016" PRIx64
                   " mounted (%" PRIu64 " bytes)",
                   cid.hi, cid.lo, msg->capacity);
    }

    dn->last_seen = now;
    dn->capacity  = msg->capacity;
    dn->used      = msg->used;
    dn->reads     = msg->reads;
    dn->writes    = msg->writes;
    dn->corrupt   = msg->corrupt;

    for (size_t i = 0; i < msg->n_records; i++) {
        Dango__Store__DiskRecord *r = msg->records[i];

        if ((r->key.len == 0) || (r->key.len > DANGO_STORE_KEY_MAX) ||
            (r->size == 0) || (r->size > MS_SEG_MAX) ||
            (dango_store_rec_size(r->key.len, r->size) > msg->capacity) ||
            (memchr(r->key.data, '\0', r->key.len) != NULL)) {
            continue; /* not a record this tier can hold */
        }
        if (dobj_set(d, dn, (const char *)r->key.data, r->key.len, r->put_id,
                     r->size, r->checksum, r->off) != 0) {
            break;
        }
    }

    for (size_t i = 0; i < msg->n_dropped; i++) {
        Dango__Store__DiskRecord *r = msg->dropped[i];
        ms_dobj_t *o = dobj_find(d, (const char *)r->key.data, r->key.len);

        if ((o != NULL) && (o->dn == dn) && (o->put_id == r->put_id) &&
            (o->off == r->off)) {
            dobj_free(d, o, 0);
            d->c.node_evicted++;
        }
    }

    for (size_t i = 0; i < msg->n_done; i++) {
        ms_dtask_t *t = sent_take(dn, msg->done[i]->task_id);

        if (t != NULL) {
            task_end(st, dn, t, msg->done[i]->status, msg->done[i]->off, now);
        }
    }

    wait  = msg->wait;
    ended = msg->n_done;
    dango__store__disk_poll_req__free_unpacked(msg, NULL);
    /* Offloads that ended may have made room: every waiting put tries
     * again; otherwise only those at their deadline get their answer. */
    puts_retry(st, now, ended > 0);
    if (dn->held != NULL) {
        poll_answer(dn, now); /* an older poll of the same node */
    }
    dn->held       = call;
    dn->held_until = now + MS_DISK_HOLD_MS;
    if ((dn->nqueue > 0) || (dn->ndrops > 0) || (dn->nreleased > 0) || !wait) {
        poll_answer(dn, now);
    }
    return 0;

out_err:
    dango__store__disk_poll_req__free_unpacked(msg, NULL);
    dango_rpc_reply(call, rc, NULL, 0);
    return rc;
}

/* ---------- DiskLoad ---------- */

/* Region of @len bytes in one of @c's segments. 0 or DANGO_ENOSPC. */
static int region_in_client(ms_state_t *st, ms_client_t *c, uint64_t len,
                            ms_seg_t **seg_p, uint64_t *off_p)
{
    ms_seg_t *seg;

    if (c == NULL) {
        return DANGO_EREPLICA_UNAVAIL;
    }

    dango_list_for_each(seg, &c->segs, client_link)
    {
        uint64_t asz;

        if (!seg->recovering && (seg->capacity - seg->used >= len) &&
            (dango__store_alloc_alloc(seg->alloc, len, off_p, &asz) == 0)) {
            seg->used += asz;
            st->used += asz;
            *seg_p = seg;
            return 0;
        }
    }
    return DANGO_ENOSPC;
}

static int rpc_disk_load(dango_store_master_t *m, dango_rpc_call_t *call,
                         const void *req, size_t len, uint64_t now)
{
    ms_state_t            *st = m->st;
    ms_disk_t             *d;
    Dango__Store__KeysReq *msg;
    ms_dwait_t            *w;
    size_t                 n;
    int                    rc = 0;

    msg = dango__store__keys_req__unpack(NULL, len, req);
    if (msg == NULL) {
        dango_rpc_reply(call, DANGO_EPROTO, NULL, 0);
        return DANGO_EPROTO;
    }

    n = msg->n_keys;
    if ((n == 0) || (n > DANGO_STORE_BATCH_MAX)) {
        rc = DANGO_EINVAL;
        goto out_err;
    }

    d = disk_get(st); /* a DiskLoad before any node polled: no records */
    if (d == NULL) {
        rc = DANGO_ENOMEM;
        goto out_err;
    }

    w = dango_calloc(1, sizeof(*w) + n * sizeof(w->items[0]), "disk_wait");
    if (w == NULL) {
        rc = DANGO_ENOMEM;
        goto out_err;
    }
    w->call    = call;
    w->n       = n;
    w->pending = 1; /* held until every key is queued */
    dango_list_add_tail(&d->waits, &w->link);

    for (size_t i = 0; i < n; i++) {
        ms_dwait_item_t *it   = &w->items[i];
        const char      *key  = msg->keys[i];
        size_t           klen = strlen(key);
        ms_dobj_t       *r    = NULL;
        ms_client_t     *c;
        ms_dtask_t      *t;
        ms_obj_t        *o;

        ms_key_t k = {key, klen};

        it->status = dango__store_ms_key_check(&k);
        if (it->status != 0) {
            continue; /* empty or too long: refused like every handler */
        }
        it->status = DANGO_ENO_OBJECT;
        it->key    = dango_malloc(klen + 1, "disk_wait_key");
        if (it->key == NULL) {
            it->status = DANGO_ENOMEM;
            continue;
        }
        memcpy(it->key, key, klen + 1);
        it->klen = klen;

        o = mobj_find(st, key, klen);
        if ((o != NULL) && (o->cur != NULL)) {
            it->status = DANGO_EAGAIN; /* in memory: read it from there */
            continue;
        }
        if ((d == NULL) || ((r = dobj_find(d, key, klen)) == NULL)) {
            continue;
        }

        it->put_id   = r->put_id;
        it->size     = r->size;
        it->checksum = r->checksum;
        it->rec_len  = r->rec_len;
        if ((r->dn->held == NULL) &&
            (r->dn->last_seen + MS_DISK_SILENT_MS <= now)) {
            it->status = DANGO_EREPLICA_UNAVAIL; /* its node is not polling */
            continue;
        }

        /*
         * Promotion: a region of the node's segment, filled by the node,
         * becomes the object's memory replica. Otherwise (or when the
         * segment is full) the node reads into its own staging buffer and
         * keeps it there for MS_DISK_STAGE_MS.
         */
        c = dango__store_ms_client_find(st, r->dn->cid);
        it->promote =
            (r->hits + 1 >= st->p.disk_promote_hits) &&
            (region_in_client(st, c, r->rec_len, &it->seg, &it->off) == 0);
        if (!it->promote) {
            it->nstage = 1;
            it->seg    = NULL;
            if ((c != NULL) && !dango_list_is_empty(&c->segs)) {
                it->seg = dango_list_head_elem(&c->segs, ms_seg_t, client_link);
            }
            if (it->seg == NULL) {
                it->status = DANGO_EREPLICA_UNAVAIL;
                continue;
            }
        }
        it->status = 0;

        t = task_new(d, DANGO_STORE_DISK_LOAD, key, klen);
        if (t == NULL) {
            if (!it->nstage) {
                region_free(st, it->seg, it->off, it->rec_len);
            }
            it->seg    = NULL;
            it->status = DANGO_ENOMEM;
            continue;
        }

        r->hits++;
        t->nstage  = it->nstage;
        t->put_id  = r->put_id;
        t->rec_len = r->rec_len;
        t->off     = r->off;
        t->seg     = it->seg;
        t->seg_off = it->off;
        t->w       = w;
        t->wi      = i;
        w->pending++;
        task_queue(r->dn, t, now);
    }

    dango__store__keys_req__free_unpacked(msg, NULL);
    if (--w->pending == 0) { /* drops the hold: no task was queued */
        wait_reply(st, w, now);
    }
    return 0;

out_err:
    dango__store__keys_req__free_unpacked(msg, NULL);
    dango_rpc_reply(call, rc, NULL, 0);
    return rc;
}

/* ---------- DiskRelease ---------- */

static int rpc_disk_release(dango_store_master_t *m, dango_rpc_call_t *call,
                            const void *req, size_t len, uint64_t now)
{
    ms_state_t                   *st = m->st;
    Dango__Store__DiskReleaseReq *msg;

    msg = dango__store__disk_release_req__unpack(NULL, len, req);
    if (msg == NULL) {
        dango_rpc_reply(call, DANGO_EPROTO, NULL, 0);
        return DANGO_EPROTO;
    }

    for (size_t i = 0; (st->disk != NULL) && (i < msg->n_staged) &&
                       (i < DANGO_STORE_BATCH_MAX);
         i++) {
        const Dango__Store__DiskStaged *s  = msg->staged[i];
        ms_dnode_t                     *dn = NULL;

        for (size_t k = 0; k < st->nsegs; k++) {
            ms_seg_t *seg = st->segs[k];

            if ((seg->id_hi == s->seg_hi) && (seg->id_lo == s->seg_lo) &&
                (seg->client != NULL)) {
                dn = dnode_find(st->disk, seg->client->id);
                break;
            }
        }
        if (dn == NULL) {
            continue; /* gone: its staging went with it */
        }

        if (dn->nreleased == dn->released_cap) {
            size_t cap = (dn->released_cap == 0) ? 256 : dn->released_cap * 2;
            void  *p;

            if (cap > MS_DISK_REPORT_MAX) {
                continue; /* the node frees it after its time */
            }
            p = dango_realloc(dn->released, cap * sizeof(*dn->released),
                              "disk_released");
            if (p == NULL) {
                continue;
            }
            dn->released     = p;
            dn->released_cap = cap;
        }
        dn->released[dn->nreleased++] = s->addr;
        if (dn->held != NULL) {
            poll_answer(dn, now);
        }
    }

    dango__store__disk_release_req__free_unpacked(msg, NULL);
    dango_rpc_reply(call, 0, NULL, 0);
    return 0;
}

/* ---------- PutStart waiting for room ---------- */

/*
 * Runs the waiting PutStarts again, oldest first: all when @all (memory was
 * freed), else only those at their deadline (which are then answered
 * whatever happens). A retry that still finds no room waits again, with its
 * first deadline (it goes back to the tail, so one pass sees each at most
 * once).
 */
static void puts_retry(ms_state_t *st, uint64_t now, int all)
{
    ms_disk_t *d = st->disk;
    size_t     n;

    if ((d == NULL) || d->retrying || (d->put_retry == NULL)) {
        return;
    }

    if (st->used < d->retry_used) {
        all = 1; /* room was made some other way (remove, eviction) */
    }
    d->retry_used = st->used;

    d->retrying = 1;
    n           = d->nputs;
    for (size_t i = 0; (i < n) && !dango_list_is_empty(&d->puts); i++) {
        ms_dput_t *p     = dango_list_head_elem(&d->puts, ms_dput_t, link);
        int        final = p->deadline <= now;

        dango_list_del(&p->link);
        if (!all && !final) {
            dango_list_add_tail(&d->puts, &p->link); /* keeps waiting */
            continue;
        }
        d->nputs--;
        d->puts_bytes -= sizeof(*p) + p->len;
        d->retry_deadline = p->deadline;
        d->put_retry(d->put_retry_arg, p->call, p->req, p->len, now, final);
        dango_free(p);
    }
    d->retrying = 0;
}

void dango__store_ms_disk_set_put_retry(ms_state_t *st, ms_disk_put_retry_cb cb,
                                        void *arg)
{
    ms_disk_t *d = disk_get(st);

    if (d != NULL) {
        d->put_retry     = cb;
        d->put_retry_arg = arg;
    }
}

int dango__store_ms_disk_put_wait(ms_state_t *st, dango_rpc_call_t *call,
                                  const void *req, size_t len, uint64_t now)
{
    ms_disk_t         *d = st->disk;
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    ms_dput_t         *p;
    int                offloading = 0;

    if ((d == NULL) || (d->put_retry == NULL) ||
        (d->nputs >= MS_DISK_PUT_WAIT_MAX) ||
        (d->puts_bytes + sizeof(*p) + len > MS_DISK_PUT_WAIT_BYTES)) {
        return 0;
    }

    dango_hmap_iter_begin(&d->nodes, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        offloading |= dango_container_of(node, ms_dnode_t, node)->noffload > 0;
    }
    dango_hmap_iter_end(&it);
    if (!offloading) {
        return 0; /* nothing will make room soon */
    }

    p = dango_malloc(sizeof(*p) + len, "disk_put_wait");
    if (p == NULL) {
        return 0;
    }
    p->call = call;
    p->len  = len;
    /* A retry keeps its first deadline. */
    p->deadline = d->retrying ? d->retry_deadline : now + MS_DISK_PUT_WAIT_MS;
    memcpy(p->req, req, len);
    dango_list_add_tail(&d->puts, &p->link);
    d->nputs++;
    d->puts_bytes += sizeof(*p) + len;
    return 1;
}

/* ---------- internal API ---------- */

int dango__store_ms_disk_on_evict(ms_state_t *st, ms_obj_t *o, uint64_t now)
{
    ms_disk_t *d = st->disk;
    ms_ver_t  *v = o->cur;
    ms_dobj_t *r;

    if ((d == NULL) || (v == NULL) || st->p.disk_no_offload ||
        (o->disk_busy == MS_DISK_FAILED)) {
        return 0;
    }

    if (o->disk_busy == MS_DISK_BUSY) {
        return 1;
    }

    r = dobj_find(d, o->key, o->node.key_len);
    if ((r != NULL) && (r->put_id == v->put_id)) {
        return 0; /* already on disk */
    }

    for (unsigned i = 0; i < v->nrep; i++) {
        ms_seg_t   *seg = v->rep[i].seg;
        ms_dnode_t *dn;
        ms_dtask_t *t;

        if ((seg == NULL) || (seg->client == NULL) ||
            ((dn = dnode_find(d, seg->client->id)) == NULL)) {
            continue;
        }
        if (!dn->reported) {
            if (dn->pending_until > now) {
                return 1; /* its tier reports soon: keep the object */
            }
            continue;
        }
        if ((dn->capacity < v->rec_len) ||
            (dn->last_seen + st->p.client_ttl_ms <= now)) {
            continue;
        }

        if (dn->noffload >= st->p.disk_queue) {
            d->c.offload_skipped++;
            return 1; /* stays in memory until the node catches up */
        }

        t = task_new(d, DANGO_STORE_DISK_OFFLOAD, o->key, o->node.key_len);
        if (t == NULL) {
            return 0;
        }
        t->put_id    = v->put_id;
        t->rec_len   = v->rec_len;
        t->seg_off   = ms_rep_addr(&v->rep[i]);
        o->disk_busy = MS_DISK_BUSY;
        task_queue(dn, t, now);
        return 1;
    }

    return 0;
}

void dango__store_ms_disk_expect(ms_state_t *st, ms_cid_t cid, uint64_t now)
{
    ms_disk_t  *d = disk_get(st);
    ms_dnode_t *dn;

    if ((d == NULL) || (dnode_find(d, cid) != NULL)) {
        return;
    }
    dn = dnode_new(d, cid);
    if (dn != NULL) {
        dn->last_seen     = now;
        dn->pending_until = now + MS_DISK_PENDING_MS;
    }
}

void dango__store_ms_disk_seg_gone(ms_state_t *st, ms_seg_t *seg)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    ms_dtask_t        *t;
    ms_dwait_t        *w;

    if (st->disk == NULL) {
        return;
    }

    /* Loads that ended but wait for the other keys of their call. */
    dango_list_for_each(w, &st->disk->waits, link)
    {
        for (size_t i = 0; i < w->n; i++) {
            if (w->items[i].seg == seg) {
                w->items[i].seg = NULL;
                if (w->items[i].staged) {
                    w->items[i].staged = 0;
                    w->items[i].status = DANGO_EREPLICA_UNAVAIL;
                }
            }
        }
    }

    dango_hmap_iter_begin(&st->disk->nodes, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_dnode_t *dn = dango_container_of(node, ms_dnode_t, node);

        dango_list_for_each(t, &dn->queue, link)
        {
            if (t->seg == seg) {
                t->seg = NULL;
            }
        }
        dango_list_for_each(t, &dn->sent, link)
        {
            if (t->seg == seg) {
                t->seg = NULL;
            }
        }
    }
    dango_hmap_iter_end(&it);
}

/* Fails the tasks of @head past their deadline. */
static void tasks_expire(ms_state_t *st, ms_dnode_t *dn,
                         dango_list_link_t *head, size_t *count, uint64_t now)
{
    while (!dango_list_is_empty(head)) {
        ms_dtask_t *t = dango_list_head_elem(head, ms_dtask_t, link);

        if (t->deadline > now) {
            break; /* deadlines only grow along a list */
        }
        dango_list_del(&t->link);
        (*count)--;
        st->disk->c.timeouts++;
        task_end(st, dn, t, DANGO_ETIMEDOUT, 0, now);
    }
}

void dango__store_ms_disk_tick(ms_state_t *st, uint64_t now)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    ms_dnode_t        *gone = NULL;

    if (st->disk == NULL) {
        return;
    }

    dango_hmap_iter_begin(&st->disk->nodes, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_dnode_t *dn = dango_container_of(node, ms_dnode_t, node);

        if ((dn->held != NULL) && (dn->held_until <= now)) {
            poll_answer(dn, now);
        }
        tasks_expire(st, dn, &dn->queue, &dn->nqueue, now);
        tasks_expire(st, dn, &dn->sent, &dn->nsent, now);
        if ((gone == NULL) && (dn->held == NULL) &&
            (dn->last_seen + st->p.client_ttl_ms <= now)) {
            gone = dn;
        }
    }
    dango_hmap_iter_end(&it);

    if (gone != NULL) {
        dango_info("master: disk tier of client %016" PRIx64 "%016" PRIx64
                   " silent: its records are forgotten",
                   gone->cid.hi, gone->cid.lo);
        dnode_free(st, gone, now);
    }

    puts_retry(st, now, 0); /* those at their deadline */
    dango_hmap_rehash_step(&st->disk->objs, MS_REHASH_STEP);
}

void dango__store_ms_disk_destroy(ms_state_t *st)
{
    ms_disk_t         *d = st->disk;
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;

    if (d == NULL) {
        return;
    }

    while (!dango_list_is_empty(&d->puts)) {
        ms_dput_t *p = dango_list_head_elem(&d->puts, ms_dput_t, link);

        dango_list_del(&p->link);
        dango_rpc_reply(p->call, DANGO_ECANCELED, NULL, 0);
        dango_free(p);
    }

    /* Each node's tasks end (their waiting loads are answered). */
    for (;;) {
        ms_dnode_t *dn = NULL;

        dango_hmap_iter_begin(&d->nodes, &it);
        node = dango_hmap_iter_next(&it);
        dango_hmap_iter_end(&it);
        if (node == NULL) {
            break;
        }
        dn = dango_container_of(node, ms_dnode_t, node);
        dnode_free(st, dn, 0);
    }

    dango_hmap_cleanup(&d->objs);
    dango_hmap_cleanup(&d->nodes);
    dango_free(d);
    st->disk = NULL;
}

int dango__store_ms_disk_has(ms_state_t *st, const char *key, size_t len)
{
    return (st->disk != NULL) && (dobj_find(st->disk, key, len) != NULL);
}

int dango__store_ms_disk_info(ms_state_t *st, const char *key, size_t len,
                              uint64_t *size, uint64_t *checksum,
                              uint64_t *put_id)
{
    ms_dobj_t *r;

    if ((st->disk == NULL) || ((r = dobj_find(st->disk, key, len)) == NULL)) {
        return 0;
    }
    *size     = r->size;
    *checksum = r->checksum;
    *put_id   = r->put_id;
    return 1;
}

int64_t dango__store_ms_disk_remove_match(ms_state_t *st, const char *regex,
                                          int all, int after)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;
    regex_t            re;
    int64_t            count = 0;

    if (!all && ((regex == NULL) || (regex[0] == '\0') ||
                 (regcomp(&re, regex, REG_EXTENDED | REG_NOSUB) != 0))) {
        return DANGO_EINVAL;
    }

    if (st->disk != NULL) {
        /* Removing the node just returned is allowed while iterating. */
        dango_hmap_iter_begin(&st->disk->objs, &it);
        while ((node = dango_hmap_iter_next(&it)) != NULL) {
            ms_dobj_t *r = dango_container_of(node, ms_dobj_t, node);

            if ((all || (regexec(&re, r->key, 0, NULL, 0) == 0)) &&
                (mobj_find(st, r->key, node->key_len) == NULL)) {
                dobj_free(st->disk, r, 1);
                count++;
            }
        }
        dango_hmap_iter_end(&it);
    }

    if (!all) {
        regfree(&re);
    }
    return after ? 0 : count;
}

int dango__store_ms_disk_forget(ms_state_t *st, const char *key, size_t len)
{
    ms_dobj_t *r;

    if ((st->disk == NULL) || ((r = dobj_find(st->disk, key, len)) == NULL)) {
        return 0;
    }
    dobj_free(st->disk, r, 1);
    return 1;
}

void dango__store_ms_disk_stats(ms_state_t *st, ms_disk_stats_t *s)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;

    memset(s, 0, sizeof(*s));
    if (st->disk == NULL) {
        return;
    }

    *s                = st->disk->c;
    s->keys           = dango_hmap_count(&st->disk->objs);
    s->put_waits      = st->disk->nputs;
    s->put_wait_bytes = st->disk->puts_bytes;
    dango_hmap_iter_begin(&st->disk->nodes, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_dnode_t *dn = dango_container_of(node, ms_dnode_t, node);

        s->nodes++;
        s->capacity += dn->capacity;
        s->used += dn->used;
        s->node_reads += dn->reads;
        s->node_writes += dn->writes;
    }
    dango_hmap_iter_end(&it);
}

void dango__store_master_disk_rpc(dango_store_master_t *m,
                                  dango_rpc_call_t *call, uint32_t method,
                                  const void *req, size_t len, uint64_t now)
{
    switch (method) {
    case DANGO_STORE_M_DISK_POLL:
        rpc_disk_poll(m, call, req, len, now);
        break;
    case DANGO_STORE_M_DISK_LOAD:
        rpc_disk_load(m, call, req, len, now);
        break;
    case DANGO_STORE_M_DISK_RELEASE:
        rpc_disk_release(m, call, req, len, now);
        break;
    default:
        dango_rpc_reply(call, DANGO_ENOSYS, NULL, 0);
        break;
    }
}
