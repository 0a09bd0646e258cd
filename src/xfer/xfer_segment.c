/*
 * Segments: names resolved to descriptors, descriptors to endpoints.
 *
 * DESIGN
 * - Ids index an array and are never reused within an engine: a stale id
 *   keeps failing with DANGO_ESEGMENT_STALE rather than silently pointing at
 *   another segment. Segment objects live until the engine is destroyed, so
 *   a pointer taken under the lock stays valid while requests use it.
 * - Opening a name that is already open and not stale returns the same id
 *   with no network traffic (the descriptor cache). A segment turns stale
 *   when a transfer finds its peer gone or restarted (a new instance id);
 *   the next open fetches the descriptor again and yields a new id.
 * - The descriptor is fetched without holding the segment lock; if two
 *   threads race to open the same name, the first one inserted wins and the
 *   other's result is dropped.
 * - Endpoints are created for every transport in the engine's preference
 *   order that can reach the peer (shm only when the host ids match); a
 *   request uses the first one that can serve its range.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/time.h"
#include "xfer/xfer_int.h"

#define XFER_FILE_NAME_MAX 4096

static void segment_free(dango_xfer_engine_t *eng, xfer_segment_t *seg)
{
    for (unsigned t = 0; t < eng->num_tps; t++) {
        if (seg->eps[t] != NULL) {
            eng->tps[t].ops->ep_destroy(seg->eps[t]);
        }
    }

    dango_free(seg->bufs);
    dango_free(seg->bufs_by_addr);
    dango_free(seg->name);
    dango_free(seg->peer_name);
    dango_free(seg->desc_json);
    dango_free(seg->host_id);
    dango_free(seg);
}

/* Appends @seg and assigns its id; seg_lock held. */
static int segment_insert(dango_xfer_engine_t *eng, xfer_segment_t *seg)
{
    if (eng->num_segs == eng->cap_segs) {
        size_t           cap = eng->cap_segs ? eng->cap_segs * 2 : 16;
        xfer_segment_t **ns;

        if (cap > INT32_MAX) {
            return DANGO_ENOSPC;
        }

        ns = dango_realloc(eng->segs, cap * sizeof(*ns), "xfer_segs");
        if (ns == NULL) {
            return DANGO_ENOMEM;
        }

        eng->segs     = ns;
        eng->cap_segs = cap;
    }

    seg->id                    = (dango_segment_id_t)eng->num_segs;
    eng->segs[eng->num_segs++] = seg;
    return 0;
}

int dango__xfer_segments_init(dango_xfer_engine_t *eng)
{
    xfer_segment_t *local = dango_calloc(1, sizeof(*local), "xfer_segment");
    int             rc;

    if (local == NULL) {
        return DANGO_ENOMEM;
    }

    local->kind      = XFER_SEG_LOCAL;
    local->open      = 1;
    local->notify_tp = -1;
    local->name      = dango_strdup(eng->name, "xfer_seg_name");
    if (local->name == NULL) {
        dango_free(local);
        return DANGO_ENOMEM;
    }

    pthread_mutex_lock(&eng->seg_lock);
    rc = segment_insert(eng, local); /* id 0 == DANGO_XFER_LOCAL_SEGMENT */
    pthread_mutex_unlock(&eng->seg_lock);
    if (rc != 0) {
        segment_free(eng, local);
    }

    return rc;
}

void dango__xfer_segments_cleanup(dango_xfer_engine_t *eng)
{
    for (size_t i = 0; i < eng->num_segs; i++) {
        segment_free(eng, eng->segs[i]);
    }

    dango_free(eng->segs);
    eng->segs     = NULL;
    eng->num_segs = eng->cap_segs = 0;
}

xfer_segment_t *dango__xfer_segment_get(dango_xfer_engine_t *eng,
                                        dango_segment_id_t   id)
{
    xfer_segment_t *seg = NULL;

    pthread_mutex_lock(&eng->seg_lock);
    if ((id >= 0) && ((size_t)id < eng->num_segs) && eng->segs[id]->open) {
        seg = eng->segs[id];
    }

    pthread_mutex_unlock(&eng->seg_lock);
    return seg;
}

void dango__xfer_segment_mark_stale(xfer_segment_t *seg)
{
    if ((seg->kind == XFER_SEG_MEMORY) &&
        !__atomic_exchange_n(&seg->stale, 1, __ATOMIC_ACQ_REL)) {
        dango_info("segment %s: marked stale; the next open re-resolves it",
                   seg->name);
    }
}

/* ---------- descriptors ---------- */

static int rbuf_addr_cmp(const void *a, const void *b)
{
    const xfer_rbuf_t *x = a, *y = b;

    return (x->addr > y->addr) - (x->addr < y->addr);
}

int dango__xfer_segment_check_range(const xfer_segment_t *seg, uint64_t addr,
                                    uint64_t len)
{
    const xfer_rbuf_t *b  = seg->bufs_by_addr;
    size_t             lo = 0, hi = seg->num_bufs;

    /* lo = number of buffers that start at or before @addr. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (b[mid].addr <= addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }

    if ((lo > 0) && (addr - b[lo - 1].addr < b[lo - 1].len)) {
        /* Starts inside a buffer: must end inside it too. */
        return (len <= b[lo - 1].len - (addr - b[lo - 1].addr))
                   ? 0
                   : DANGO_EREMOTE_ACCESS;
    }

    /* Starts outside every buffer: must not run into the next one. */
    if ((lo < seg->num_bufs) && (b[lo].addr - addr < len)) {
        return DANGO_EREMOTE_ACCESS;
    }

    return 1; /* not published (yet): the target decides */
}

static int segment_parse_desc(xfer_segment_t *seg, const char *json)
{
    json_t      *root, *bufs;
    json_error_t err;
    const char  *inst, *host;
    int          rc = DANGO_ECORRUPT;

    root = json_loads(json, 0, &err);
    if (!json_is_object(root)) {
        dango_error("segment %s: descriptor is not a JSON object: %s",
                    seg->name, err.text);
        json_decref(root);
        return DANGO_ECORRUPT;
    }

    inst = json_string_value(json_object_get(root, "instance"));
    host = json_string_value(json_object_get(root, "host_id"));
    bufs = json_object_get(root, "buffers");
    if ((inst == NULL) || (host == NULL) || !json_is_array(bufs) ||
        !json_is_object(json_object_get(root, "transports"))) {
        dango_error("segment %s: descriptor lacks instance, host_id, "
                    "transports or buffers",
                    seg->name);
        goto out;
    }

    seg->instance_id = strtoull(inst, NULL, 16);
    seg->peer_name =
        dango_strdup(json_is_string(json_object_get(root, "name"))
                         ? json_string_value(json_object_get(root, "name"))
                         : seg->name,
                     "xfer_seg_peer");
    if (seg->peer_name == NULL) {
        rc = DANGO_ENOMEM;
        goto out;
    }

    seg->host_id = dango_strdup(host, "xfer_seg_host");
    seg->bufs    = dango_calloc(json_array_size(bufs) + 1, sizeof(*seg->bufs),
                                "xfer_seg_bufs");
    if ((seg->host_id == NULL) || (seg->bufs == NULL)) {
        rc = DANGO_ENOMEM;
        goto out;
    }

    for (size_t i = 0; i < json_array_size(bufs); i++) {
        json_t *b    = json_array_get(bufs, i);
        json_t *addr = json_object_get(b, "addr");
        json_t *len  = json_object_get(b, "length");

        if (!json_is_integer(addr) || !json_is_integer(len) ||
            (json_integer_value(len) <= 0)) {
            dango_error("segment %s: malformed buffer %zu in descriptor",
                        seg->name, i);
            goto out;
        }

        seg->bufs[seg->num_bufs].addr = (uint64_t)json_integer_value(addr);
        seg->bufs[seg->num_bufs].len  = (uint64_t)json_integer_value(len);
        seg->bufs[seg->num_bufs].shm  = json_is_true(json_object_get(b, "shm"));
        seg->num_bufs++;
    }

    /* A copy sorted by address, for dango__xfer_segment_check_range(). */
    seg->bufs_by_addr = dango_calloc(
        seg->num_bufs + 1, sizeof(*seg->bufs_by_addr), "xfer_seg_bufs_sorted");
    if (seg->bufs_by_addr == NULL) {
        rc = DANGO_ENOMEM;
        goto out;
    }

    memcpy(seg->bufs_by_addr, seg->bufs, seg->num_bufs * sizeof(*seg->bufs));
    qsort(seg->bufs_by_addr, seg->num_bufs, sizeof(*seg->bufs_by_addr),
          rbuf_addr_cmp);
    rc = 0;

out:
    json_decref(root);
    return rc;
}

static int segment_fetch(dango_xfer_engine_t *eng, const char *name,
                         char **json_p)
{
    char  key[DANGO_XFER_NAME_MAX + 128];
    char *val;
    int   rc;

    if (eng->p2p) {
        xfer_tp_t *tcp = &eng->tps[eng->tcp_idx];

        return tcp->ops->desc_fetch(tcp->iface, name, eng->cfg.open_timeout,
                                    json_p);
    }

    snprintf(key, sizeof(key), "dango/%s/xfer/segments/%s", eng->cfg.cluster_id,
             name);
    rc = dango_md_get(eng->md, key, &val, NULL);
    if (rc == DANGO_ENOENT) {
        return DANGO_ENOENT;
    }

    if (rc != 0) {
        return (rc == DANGO_ETIMEDOUT) ? rc : DANGO_EMETADATA;
    }

    *json_p = val;
    return 0;
}

static int segment_make_eps(dango_xfer_engine_t *eng, xfer_segment_t *seg)
{
    dango_tp_peer_t peer = {seg->peer_name, seg->desc_json, seg->instance_id};
    int             any  = 0;

    seg->notify_tp = -1;
    for (unsigned k = 0; k < eng->num_order; k++) {
        int        t  = eng->order[k];
        xfer_tp_t *tp = &eng->tps[t];
        int        rc;

        if ((tp->attr.caps & DANGO_TP_CAP_SAME_HOST) &&
            (strcmp(seg->host_id, eng->host_id) != 0)) {
            continue;
        }

        rc = tp->ops->ep_create(tp->iface, &peer, &seg->eps[t]);
        if (rc == 0) {
            any = 1;
            if ((tp->attr.caps & DANGO_TP_CAP_NOTIFY) && (seg->notify_tp < 0)) {
                seg->notify_tp = t;
            }
        } else if (rc != DANGO_ENOTSUP) {
            dango_warn("segment %s: transport %s unusable: %s", seg->name,
                       tp->ops->name, dango_strerror(rc));
        }

        if (rc != 0) {
            seg->eps[t] = NULL;
        }
    }

    return any ? 0 : DANGO_EPEER_GONE;
}

static int segment_create_file(dango_xfer_engine_t *eng, const char *name,
                               xfer_segment_t *seg)
{
    dango_tp_peer_t peer = {name, NULL, 0};
    xfer_tp_t      *tp   = &eng->tps[eng->file_idx];

    seg->kind      = XFER_SEG_FILE;
    seg->notify_tp = -1;
    return tp->ops->ep_create(tp->iface, &peer, &seg->eps[eng->file_idx]);
}

/* Finds an open-able (not stale) segment by name; seg_lock held. */
static xfer_segment_t *segment_lookup(dango_xfer_engine_t *eng,
                                      const char          *name)
{
    for (size_t i = 0; i < eng->num_segs; i++) {
        xfer_segment_t *s = eng->segs[i];

        if (!__atomic_load_n(&s->stale, __ATOMIC_ACQUIRE) &&
            (strcmp(s->name, name) == 0)) {
            return s;
        }
    }

    return NULL;
}

int dango_xfer_segment_open(dango_xfer_engine_t *eng, const char *name,
                            dango_segment_id_t *id_p)
{
    xfer_segment_t *seg, *other;
    int             is_file;
    size_t          len;
    int             rc;

    if ((eng == NULL) || (name == NULL) || (id_p == NULL)) {
        return DANGO_EINVAL;
    }

    len     = strlen(name);
    is_file = (strncmp(name, "file://", 7) == 0);
    if ((len == 0) ||
        (len > (is_file ? XFER_FILE_NAME_MAX : DANGO_XFER_NAME_MAX)) ||
        (is_file && (len == 7))) {
        return DANGO_EINVAL;
    }

    if (__atomic_load_n(&eng->shutting_down, __ATOMIC_ACQUIRE)) {
        return DANGO_ESTATE;
    }

    pthread_mutex_lock(&eng->seg_lock);
    seg = segment_lookup(eng, name);
    if (seg != NULL) {
        seg->open = 1;
        *id_p     = seg->id;
        pthread_mutex_unlock(&eng->seg_lock);
        return 0;
    }

    pthread_mutex_unlock(&eng->seg_lock);

    seg = dango_calloc(1, sizeof(*seg), "xfer_segment");
    if (seg == NULL) {
        return DANGO_ENOMEM;
    }

    seg->name = dango_strdup(name, "xfer_seg_name");
    if (seg->name == NULL) {
        rc = DANGO_ENOMEM;
        goto err;
    }

    if (is_file) {
        rc = segment_create_file(eng, name, seg);
    } else {
        seg->kind = XFER_SEG_MEMORY;
        rc        = segment_fetch(eng, name, &seg->desc_json);
        if (rc == 0) {
            rc = segment_parse_desc(seg, seg->desc_json);
        }

        if (rc == 0) {
            rc = segment_make_eps(eng, seg);
        }
    }

    if (rc != 0) {
        goto err;
    }

    seg->open = 1;
    pthread_mutex_lock(&eng->seg_lock);
    other = segment_lookup(eng, name);
    if (other != NULL) {
        /* Lost a race with another opener: use its segment. */
        other->open = 1;
        *id_p       = other->id;
        pthread_mutex_unlock(&eng->seg_lock);
        segment_free(eng, seg);
        return 0;
    }

    rc = segment_insert(eng, seg);
    if (rc == 0) {
        *id_p = seg->id;
    }

    pthread_mutex_unlock(&eng->seg_lock);
    if (rc != 0) {
        goto err;
    }

    dango_debug("engine %s: opened segment %s as %d", eng->name, name,
                (int)seg->id);
    return 0;

err:
    dango_debug("engine %s: open %s: %s", eng->name, name, dango_strerror(rc));
    segment_free(eng, seg);
    return rc;
}

int dango_xfer_segment_close(dango_xfer_engine_t *eng, dango_segment_id_t id)
{
    int rc = DANGO_ENOENT;

    if (eng == NULL) {
        return DANGO_EINVAL;
    }

    if (id == DANGO_XFER_LOCAL_SEGMENT) {
        return DANGO_EINVAL;
    }

    pthread_mutex_lock(&eng->seg_lock);
    if ((id > 0) && ((size_t)id < eng->num_segs) && eng->segs[id]->open) {
        eng->segs[id]->open = 0; /* endpoints stay cached for a reopen */
        rc                  = 0;
    }

    pthread_mutex_unlock(&eng->seg_lock);
    return rc;
}

int dango_xfer_segment_query(dango_xfer_engine_t *eng, dango_segment_id_t id,
                             dango_xfer_segment_info_t *info)
{
    xfer_segment_t *seg;

    if ((eng == NULL) || (info == NULL)) {
        return DANGO_EINVAL;
    }

    seg = dango__xfer_segment_get(eng, id);
    if (seg == NULL) {
        return DANGO_ENOENT;
    }

    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", seg->name);
    info->instance_id =
        (seg->kind == XFER_SEG_LOCAL) ? eng->instance_id : seg->instance_id;
    info->num_buffers = seg->num_bufs;
    if (seg->kind == XFER_SEG_LOCAL) {
        /*
         * The local segment has no parsed descriptor (num_bufs is 0): count
         * the remote-accessible regions, as dango_xfer_segment_buffer()
         * enumerates them.
         */
        info->num_buffers = 0;
        pthread_rwlock_rdlock(&eng->mem_lock);
        for (size_t i = 0; i < eng->num_regions; i++) {
            if (eng->regions[i]->flags & DANGO_XFER_MEM_REMOTE) {
                info->num_buffers++;
            }
        }

        pthread_rwlock_unlock(&eng->mem_lock);
        snprintf(info->transport, sizeof(info->transport), "local");
    } else if (seg->kind == XFER_SEG_FILE) {
        snprintf(info->transport, sizeof(info->transport), "file");
    } else {
        for (unsigned k = 0; k < eng->num_order; k++) {
            if (seg->eps[eng->order[k]] != NULL) {
                snprintf(info->transport, sizeof(info->transport), "%s",
                         eng->tps[eng->order[k]].ops->name);
                break;
            }
        }
    }

    return 0;
}

int dango_xfer_segment_buffer(dango_xfer_engine_t *eng, dango_segment_id_t id,
                              unsigned index, uint64_t *addr_p, uint64_t *len_p)
{
    xfer_segment_t *seg;

    if ((eng == NULL) || (addr_p == NULL) || (len_p == NULL)) {
        return DANGO_EINVAL;
    }

    seg = dango__xfer_segment_get(eng, id);
    if (seg == NULL) {
        return DANGO_ENOENT;
    }

    if (seg->kind == XFER_SEG_LOCAL) {
        int rc = DANGO_ENOENT;

        /*
         * The index-th in registration order: the one remote region that
         * exactly @index others precede (no allocation; rarely called).
         */
        pthread_rwlock_rdlock(&eng->mem_lock);
        for (size_t i = 0; (i < eng->num_regions) && (rc != 0); i++) {
            const xfer_region_t *r    = eng->regions[i];
            unsigned             rank = 0;

            if (!(r->flags & DANGO_XFER_MEM_REMOTE)) {
                continue;
            }

            for (size_t j = 0; j < eng->num_regions; j++) {
                rank += (eng->regions[j]->flags & DANGO_XFER_MEM_REMOTE) &&
                        (eng->regions[j]->seq < r->seq);
            }

            if (rank == index) {
                *addr_p = r->addr;
                *len_p  = r->len;
                rc      = 0;
            }
        }

        pthread_rwlock_unlock(&eng->mem_lock);
        return rc;
    }

    if (index >= seg->num_bufs) {
        return DANGO_ENOENT;
    }

    *addr_p = seg->bufs[index].addr;
    *len_p  = seg->bufs[index].len;
    return 0;
}
