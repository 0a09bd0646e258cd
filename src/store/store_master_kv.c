/*
 * KV events: which keys were stored on, or removed from, the segments of a
 * client. A node that publishes them (STORE_KV_EVENTS_URL, e.g. to the
 * conductor's global KV index) polls with KvEvents; its first poll turns
 * its queue on, so clients that never ask cost nothing. The queue is
 * bounded (MS_KV_EVENTS_MAX events, MS_KV_EVENTS_BYTES_MAX bytes of keys
 * between two polls); beyond that events
 * are dropped and the drop count travels with the next reply, so the
 * consumer knows its view may have gaps (events are hints for scheduling,
 * never a source of truth for reads).
 */
#include "store/store_master_int.h"

#include <string.h>

#include "common/alloc.h"

static void kv_push(ms_client_t *c, const char *key, size_t len, int stored)
{
    ms_kv_q_t *q = c->kv;

    if ((q->n == MS_KV_EVENTS_MAX) ||
        (q->keys_len + len > MS_KV_EVENTS_BYTES_MAX)) {
        q->dropped++;
        return;
    }

    if (q->n == q->cap) {
        size_t      cap = q->cap ? 2 * q->cap : 256;
        ms_kv_ev_t *ev  = dango_realloc(q->ev, cap * sizeof(*ev), "master_kv");

        if (ev == NULL) {
            q->dropped++;
            return;
        }
        q->ev  = ev;
        q->cap = cap;
    }

    if (q->keys_len + len > q->keys_cap) {
        size_t cap = q->keys_cap ? 2 * q->keys_cap : 16384;
        char  *k;

        while (cap < q->keys_len + len) {
            cap *= 2;
        }
        k = dango_realloc(q->keys, cap, "master_kv_keys");
        if (k == NULL) {
            q->dropped++;
            return;
        }
        q->keys     = k;
        q->keys_cap = cap;
    }

    memcpy(q->keys + q->keys_len, key, len);
    q->ev[q->n].off    = (uint32_t)q->keys_len;
    q->ev[q->n].len    = (uint16_t)len;
    q->ev[q->n].stored = (uint8_t)(stored != 0);
    q->keys_len += len;
    q->n++;
}

void dango__store_ms_kv_rep(ms_state_t *st, const ms_obj_t *o,
                            const ms_rep_t *r, int stored)
{
    (void)st;
    if ((r->seg != NULL) && (r->seg->client != NULL) &&
        (r->seg->client->kv != NULL)) {
        kv_push(r->seg->client, o->key, o->node.key_len, stored);
    }
}

void dango__store_ms_kv_ver(ms_state_t *st, const ms_obj_t *o,
                            const ms_ver_t *v, int stored)
{
    for (unsigned i = 0; i < v->nrep; i++) {
        dango__store_ms_kv_rep(st, o, &v->rep[i], stored);
    }
}

int dango__store_ms_kv_take(ms_state_t *st, ms_cid_t cid, ms_kv_q_t **q_p)
{
    ms_client_t *c = dango__store_ms_client_find(st, cid);
    ms_kv_q_t   *fresh;

    *q_p = NULL;
    if (c == NULL) {
        return 0; /* not registered (yet): nothing can have been stored */
    }

    fresh = dango_calloc(1, sizeof(*fresh), "master_kv");
    if (fresh == NULL) {
        return DANGO_ENOMEM;
    }

    *q_p  = c->kv; /* NULL on the first poll */
    c->kv = fresh;
    return 0;
}

void dango__store_ms_kv_free(ms_kv_q_t *q)
{
    if (q != NULL) {
        dango_free(q->ev);
        dango_free(q->keys);
        dango_free(q);
    }
}

void dango__store_ms_kv_untake(ms_state_t *st, ms_cid_t cid, ms_kv_q_t *q)
{
    ms_client_t *c;

    if (q == NULL) {
        return;
    }

    /* The take found the client and left it a fresh queue; nothing has run
     * on the state since (the KvEvents handler only allocates its reply in
     * between, on the loop thread), so that queue is still empty. */
    c = dango__store_ms_client_find(st, cid);
    dango__store_ms_kv_free(c->kv);
    c->kv = q;
}
