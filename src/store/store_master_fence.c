/*
 * Fences: regions of a segment that went away (its node expired, was
 * partitioned, or unmounted) that the master does not give to new puts
 * when the same segment comes back, because a write may still be on its
 * way into them.
 *
 * The hazard. A writer's transfer into a node that is cut off does not
 * fail at once: TCP retransmits it, and when the link comes back (within
 * TCP_IO_TIMEOUT) it lands. Meanwhile the master expired the node; the node
 * remounted, reported the committed records it holds, and every other
 * region of its segment became free again. Without a fence the master
 * could place a new object where the late write lands (a put that was in
 * flight on the node, or the commit word of a put that ended just before
 * the node went silent): the late bytes overwrite the new record, which is
 * then lost (its node no longer reports it) or dropped as corrupt when
 * read. Never wrong bytes (every record is checksummed), but a committed
 * object can lose a replica it was counted on.
 *
 * The fence. When a segment is destroyed, the regions of its replicas
 * that may still be written are remembered under the segment's id, each
 * until the time after which no write of it can come:
 *   - a put in flight: PutStart + PUT_RELEASE_TIMEOUT (when the master
 *     would reclaim it anyway);
 *   - a parked version (a preempted, revoked or zombie put, or the old
 *     value of an upsert): its free_at;
 *   - a committed value: its PutEnd + PUT_DISCARD_TIMEOUT (its commit
 *     words follow the PutEnd at once).
 * When a segment with that id and the same geometry is created again, the
 * regions still fenced are reserved in its allocator (and counted as used)
 * before any put can be placed. A record the node reports in such a region
 * is taken back there (dango__store_ms_fence_claim: the same put's record,
 * region and length); the rest are freed when their time is up
 * (dango__store_ms_fence_tick). Fences of segments that never come back
 * simply expire. At most MS_FENCE_MAX regions per segment are kept (more
 * are counted in fence_dropped).
 *
 * Loop thread only, like the rest of the state.
 */
#include "store/store_master_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

typedef struct ms_fence_reg {
    uint64_t off;
    uint64_t asz;    /* allocated bytes; 0: claimed by a record */
    uint64_t until;  /* ms */
    uint64_t put_id; /* of the version the region held */
} ms_fence_reg_t;

typedef struct ms_fence {
    dango_hmap_node_t node; /* in st->fences, key = id_key */
    uint8_t           id_key[16];
    uint64_t          base, size; /* geometry of the segment */
    ms_seg_t         *seg;        /* the segment it is applied to, or NULL */
    uint64_t          applied;    /* bytes reserved in seg's allocator */
    ms_fence_reg_t   *r;          /* applied: sorted by off */
    size_t            n, cap;
    size_t            live; /* regions not claimed */
    uint64_t          next; /* ms of the earliest until of r */
} ms_fence_t;

static ms_fence_t *fence_find(ms_state_t *st, const uint8_t id_key[16])
{
    dango_hmap_node_t *n =
        dango_hmap_find(&st->fences, id_key, 16, dango_hmap_hash(id_key, 16));

    return (n != NULL) ? dango_container_of(n, ms_fence_t, node) : NULL;
}

static void fence_free(ms_state_t *st, ms_fence_t *f)
{
    dango_hmap_remove(&st->fences, &f->node);
    dango_free(f->r);
    dango_free(f);
}

/* Counts @asz bytes of applied fence @f as reserved (+) or not (-). */
static void fence_count(ms_state_t *st, ms_fence_t *f, int64_t asz)
{
    f->seg->used += (uint64_t)asz;
    st->used += (uint64_t)asz;
    st->fenced_bytes += (uint64_t)asz;
    f->applied += (uint64_t)asz;
}

static int reg_cmp(const void *a, const void *b)
{
    const ms_fence_reg_t *x = a, *y = b;

    return (x->off > y->off) - (x->off < y->off);
}

static uint64_t reg_until(const ms_state_t *st, const ms_ver_t *v)
{
    if (v->obj == NULL) {
        return v->free_at; /* parked */
    }
    if (v->obj->pend == v) {
        return v->start + st->p.put_release_ms; /* in flight */
    }
    return v->end + st->p.put_discard_ms; /* committed: its commit words */
}

void dango__store_ms_fence_add(ms_state_t *st, ms_seg_t *seg, const ms_rep_t *r,
                               uint64_t now)
{
    uint64_t    until = reg_until(st, r->ver);
    ms_fence_t *f;

    if (until <= now) {
        return;
    }

    f = fence_find(st, seg->id_key);
    if (f == NULL) {
        f = dango_calloc(1, sizeof(*f), "master_fence");
        if (f == NULL) {
            st->c.fence_dropped++;
            return;
        }
        memcpy(f->id_key, seg->id_key, sizeof(f->id_key));
        f->node.key     = f->id_key;
        f->node.key_len = sizeof(f->id_key);
        f->node.hash    = dango_hmap_hash(f->id_key, sizeof(f->id_key));
        dango_hmap_insert(&st->fences, &f->node);
    }

    if ((f->base != seg->base) || (f->size != seg->size)) {
        f->n    = 0; /* another geometry: the old regions mean nothing */
        f->live = 0;
        f->base = seg->base;
        f->size = seg->size;
    }

    if (f->n == f->cap) {
        size_t          cap = (f->cap == 0) ? 16 : 2 * f->cap;
        ms_fence_reg_t *nr;

        if (cap > MS_FENCE_MAX) {
            st->c.fence_dropped++;
            return;
        }
        nr = dango_realloc(f->r, cap * sizeof(*nr), "master_fence_regs");
        if (nr == NULL) {
            st->c.fence_dropped++;
            return;
        }
        f->r   = nr;
        f->cap = cap;
    }

    f->r[f->n].off    = r->off;
    f->r[f->n].asz    = ms_seg_round(seg, r->ver->rec_len);
    f->r[f->n].until  = until;
    f->r[f->n].put_id = r->ver->put_id;
    f->n++;
    f->live++;
    f->next = (f->live == 1) ? until : DANGO_MIN(f->next, until);
    if (until < st->fence_next) {
        st->fence_next = until;
    }
    st->c.fence_regions++;
}

void dango__store_ms_fence_detach(ms_state_t *st, ms_seg_t *seg)
{
    ms_fence_t *f = fence_find(st, seg->id_key);

    if ((f != NULL) && (f->seg == seg)) {
        /* The allocator goes with the segment; the regions stay fenced
         * for its next return. (Regions added while it was being
         * destroyed were never counted.) */
        st->used -= f->applied;
        st->fenced_bytes -= f->applied;
        f->applied = 0;
        f->seg     = NULL;
    }
}

void dango__store_ms_fence_apply(ms_state_t *st, ms_seg_t *seg, uint64_t now)
{
    ms_fence_t *f    = fence_find(st, seg->id_key);
    size_t      kept = 0;

    if ((f == NULL) || (f->seg != NULL)) {
        return;
    }

    if ((f->base != seg->base) || (f->size != seg->size)) {
        fence_free(st, f); /* not the memory it was about */
        return;
    }

    /* Sorted by offset, so that each record a node reports finds its
     * region by binary search (dango__store_ms_fence_claim). */
    qsort(f->r, f->n, sizeof(*f->r), reg_cmp);
    f->seg  = seg;
    f->next = UINT64_MAX;
    for (size_t i = 0; i < f->n; i++) {
        ms_fence_reg_t *g = &f->r[i];

        if ((g->asz == 0) || (g->until <= now) ||
            (dango__store_alloc_reserve(seg->alloc, g->off, g->asz) != 0)) {
            continue;
        }

        fence_count(st, f, (int64_t)g->asz);
        f->next      = DANGO_MIN(f->next, g->until);
        f->r[kept++] = *g;
    }

    f->n = f->live = kept;
    if (f->n == 0) {
        f->seg = NULL;
        fence_free(st, f);
        return;
    }

    dango_info("master: segment %s came back: %zu regions fenced against late "
               "writes",
               seg->name->name, f->n);
}

int dango__store_ms_fence_claim(ms_state_t *st, ms_seg_t *seg, uint64_t off,
                                uint64_t asz, uint64_t put_id)
{
    ms_fence_t    *f = fence_find(st, seg->id_key);
    ms_fence_reg_t key, *g;

    if ((f == NULL) || (f->seg != seg)) {
        return DANGO_ENOENT;
    }

    key.off = off;
    g       = bsearch(&key, f->r, f->n, sizeof(*f->r), reg_cmp);
    if ((g == NULL) || (g->asz != asz) || (g->put_id != put_id)) {
        return DANGO_ENOENT;
    }

    /* The allocator keeps the region: it is the record's now. */
    fence_count(st, f, -(int64_t)asz);
    g->asz = 0;
    st->c.fence_claimed++;
    if (--f->live == 0) {
        fence_free(st, f);
    }
    return 0;
}

void dango__store_ms_fence_tick(ms_state_t *st, uint64_t now)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;

    if (now < st->fence_next) {
        return;
    }
    st->fence_next = UINT64_MAX;

    /* Freeing a fence removes its own node only: allowed mid-iteration. */
    dango_hmap_iter_begin(&st->fences, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        ms_fence_t *f    = dango_container_of(node, ms_fence_t, node);
        size_t      kept = 0;

        if (f->next > now) {
            st->fence_next = DANGO_MIN(st->fence_next, f->next);
            continue; /* nothing due in this one */
        }

        /* Keeps the order (claims search it). */
        f->next = UINT64_MAX;
        for (size_t i = 0; i < f->n; i++) {
            ms_fence_reg_t *g = &f->r[i];

            if (g->asz == 0) {
                continue; /* claimed */
            }

            if (g->until > now) {
                f->next      = DANGO_MIN(f->next, g->until);
                f->r[kept++] = *g;
                continue;
            }

            if (f->seg != NULL) {
                dango__store_ms_region_free(st, f->seg, g->off, g->asz);
                st->fenced_bytes -= g->asz;
                f->applied -= g->asz;
            }
            st->c.fence_released++;
        }

        f->n = f->live = kept;
        st->fence_next = DANGO_MIN(st->fence_next, f->next);
        if (f->n == 0) {
            fence_free(st, f);
        }
    }
    dango_hmap_iter_end(&it);
}

void dango__store_ms_fence_destroy(ms_state_t *st)
{
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;

    dango_hmap_iter_begin(&st->fences, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        fence_free(st, dango_container_of(node, ms_fence_t, node));
    }
    dango_hmap_iter_end(&it);
    dango_hmap_cleanup(&st->fences);
}
