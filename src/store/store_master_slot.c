/*
 * Slots: regions reserved ahead for a client's coming puts, so that a put
 * costs one master round trip instead of two.
 *
 * A plain put asks the master for regions (PutStart), writes its record
 * into them and commits (PutEnd). A client that puts many values of one
 * record length asks instead for a few regions of that length at a time
 * (PutBind with a SlotReq); each later put writes its record into one of
 * them and binds the key to it in the PutBind that commits it, which may
 * also ask for more. The master keeps a slot as an in-flight version with
 * no object (ms_ver_t.slot): on the client's list of puts and on the
 * in-flight list, so that what ends a put ends a slot too (the client
 * expiring, a segment going away, PUT_RELEASE_TIMEOUT); its put id is
 * known from the grant, so the record the client writes is complete.
 *
 * Bounds: at most MS_SLOT_BATCH slots per request; per client, record
 * bytes of MASTER_PUT_SLOTS and 1/16 of the pool's capacity; for all
 * clients, 1/8 of it. A slot is never worth an eviction: none is granted
 * that would take the pool past EVICT_HIGH_WATERMARK or that placement
 * finds no room for, and none while nodes still report their records. A client
 * starts writing into a slot only within PUT_DISCARD_TIMEOUT of asking for it
 * and gives back the ones it did not use (docs/design/store.md, "One round trip
 * puts").
 */
#include "store/store_master_int.h"

#include <string.h>

#include "common/alloc.h"

static ms_ver_t *slot_of(dango_hmap_node_t *n)
{
    return (n != NULL) ? dango_container_of(n, ms_ver_t, slot_node) : NULL;
}

size_t dango__store_ms_slot_grant(ms_state_t *st, ms_client_t *c,
                                  const ms_put_cfg_t *cfg, size_t count,
                                  uint64_t rec_len, uint64_t now,
                                  ms_ver_t **vers)
{
    unsigned want = (cfg->replica_num == 0) ? 1 : cfg->replica_num;
    uint64_t mine = DANGO_MIN(st->p.put_slot_bytes, st->capacity / 16);
    uint64_t all  = st->capacity / 8;
    uint64_t hwm =
        (uint64_t)(st->p.evict_high_watermark * (double)st->capacity);
    size_t n = 0;

    if ((st->p.put_slot_bytes == 0) || (want > DANGO_STORE_REPLICA_MAX) ||
        (rec_len < dango_store_rec_size(1, 1)) ||
        (rec_len > st->max_seg_capacity) || dango__store_ms_rebuilding(st)) {
        return 0;
    }

    count = DANGO_MIN(count, (size_t)MS_SLOT_BATCH);
    while ((n < count) && (c->slot_bytes + rec_len <= mine) &&
           (st->slot_bytes + rec_len <= all) &&
           (st->used + want * rec_len <= hwm)) {
        ms_seg_t *segs[DANGO_STORE_REPLICA_MAX];
        uint64_t  offs[DANGO_STORE_REPLICA_MAX];
        unsigned  placed;
        ms_ver_t *v;

        placed = dango__store_ms_place(st, rec_len, want, cfg->preferred,
                                       cfg->npreferred, segs, offs);
        if (placed == 0) {
            break; /* no room: a slot is not worth an eviction */
        }

        v = dango__store_ms_ver_new(placed, c->id, st->next_put_id, 0, 0,
                                    rec_len, now);
        if (v == NULL) {
            for (unsigned i = 0; i < placed; i++) {
                dango__store_ms_region_free(st, segs[i], offs[i], rec_len);
            }
            break;
        }

        st->next_put_id++;
        v->slot = 1;
        dango__store_ms_ver_start(st, v, c, segs, offs, placed);
        v->slot_node.key     = &v->put_id;
        v->slot_node.key_len = sizeof(v->put_id);
        v->slot_node.hash    = dango_hmap_hash(&v->put_id, sizeof(v->put_id));
        dango_hmap_insert(&st->slots, &v->slot_node);
        c->slot_bytes += rec_len;
        st->slot_bytes += rec_len;
        st->c.slots_granted++;
        vers[n++] = v;
    }

    return n;
}

ms_ver_t *dango__store_ms_slot_find(ms_state_t *st, uint64_t put_id)
{
    return slot_of(dango_hmap_find(&st->slots, &put_id, sizeof(put_id),
                                   dango_hmap_hash(&put_id, sizeof(put_id))));
}

void dango__store_ms_slot_unlink(ms_state_t *st, ms_ver_t *v)
{
    if (v->client != NULL) {
        v->client->slot_bytes -= v->rec_len;
    }
    st->slot_bytes -= v->rec_len;

    dango_hmap_remove(&st->slots, &v->slot_node);
    dango__store_ms_ver_unlink(st, v);
    v->slot = 0;
}

void dango__store_ms_slot_drop(ms_state_t *st, ms_ver_t *v, uint64_t free_at,
                               uint64_t now)
{
    dango__store_ms_slot_unlink(st, v);
    st->c.slots_released++;
    dango__store_ms_ver_park(st, v, free_at, now);
}

size_t dango__store_ms_slot_release(ms_state_t *st, ms_cid_t cid, size_t n,
                                    const uint64_t *put_ids, uint64_t now)
{
    size_t freed = 0;

    for (size_t i = 0; i < n; i++) {
        ms_ver_t *v = dango__store_ms_slot_find(st, put_ids[i]);

        /* Another client's slot, or one already gone, stays as it is. */
        if ((v == NULL) || (v->cid.hi != cid.hi) || (v->cid.lo != cid.lo)) {
            continue;
        }

        dango__store_ms_slot_drop(st, v, now, now);
        freed++;
    }

    return freed;
}
