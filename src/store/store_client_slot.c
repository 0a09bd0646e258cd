/*
 * Store client, slots: regions the master reserved ahead for this client's
 * coming puts, so that a put costs one master round trip (write the record
 * into a slot, then PutBind) instead of two (PutStart, PutEnd).
 *
 * DESIGN
 * The pool holds up to SC_SLOT_CLASSES classes, one per (record length,
 * replica count), each a stack of up to SC_SLOT_MAX slots, all under one
 * mutex (a take is a few loads and stores). A class asks for more (in the
 * PutBind of the put that finds it below half its target) when no request
 * of it is in flight; its target is STORE_PUT_SLOTS / record length, at
 * most SC_SLOT_MAX. A fifth length replaces the least used class, whose
 * slots are given back.
 *
 * A slot is usable until its use_until: the master's slot_ms after the
 * request that asked for it was sent. One found past it is given back
 * instead, as are the slots of a put whose write failed and, from the ping
 * thread, slots nobody took in time: their put ids ride on the next
 * PutBind of no keys. When the master changes (remount, leader change)
 * every slot is taken out of use (epoch) and given back: the new master
 * never granted them and may place other values there (a master ignores
 * slots it does not know). A request that gets no slot (no room, slots
 * off at the master) keeps its class from asking for SC_SLOT_QUIET, so
 * that its puts do not pay for a request on every put.
 */
#include <inttypes.h>
#include <string.h>

#include "common/alloc.h"
#include "common/time.h"
#include "store/store_client_int.h"
#include "store/store_proto.h"

/* Put ids waiting to be given back, at most (more are left to the
 * master's PUT_RELEASE_TIMEOUT). */
#define SC_SLOT_FREE_MAX (2 * SC_SLOT_CLASSES * SC_SLOT_MAX)
/* After a request for slots got none, the class asks again no sooner. */
#define SC_SLOT_QUIET DANGO_NSEC_PER_SEC

/* ---------- private functions ---------- */

static size_t slot_target(const dango_store_client_t *c, uint64_t rec_len)
{
    return (size_t)DANGO_MIN(c->cfg.put_slots / rec_len, (uint64_t)SC_SLOT_MAX);
}

/* The class of (@rec_len, @replica_num), or NULL. Under slot_lock. */
static sc_slot_class_t *slot_class(dango_store_client_t *c, uint64_t rec_len,
                                   unsigned replica_num)
{
    for (size_t k = 0; k < SC_SLOT_CLASSES; k++) {
        sc_slot_class_t *cl = &c->slot_cls[k];

        if ((cl->rec_len == rec_len) && (cl->replica_num == replica_num)) {
            return cl;
        }
    }

    return NULL;
}

/* Queues @put_id to be given back. Under slot_lock. */
static void slot_free_push(dango_store_client_t *c, uint64_t put_id)
{
    if (c->slot_nfree < SC_SLOT_FREE_MAX) {
        c->slot_free[c->slot_nfree++] = put_id;
    }
}

/* A class for a new length: an unused one, else the least used one with
 * no request in flight (its slots given back); NULL when none. Under
 * slot_lock. */
static sc_slot_class_t *slot_class_new(dango_store_client_t *c,
                                       uint64_t rec_len, unsigned replica_num)
{
    sc_slot_class_t *lru = NULL;

    for (size_t k = 0; k < SC_SLOT_CLASSES; k++) {
        sc_slot_class_t *cl = &c->slot_cls[k];

        if (cl->rec_len == 0) {
            lru = cl;
            break;
        }
        if ((cl->asked == 0) &&
            ((lru == NULL) || (cl->last_use < lru->last_use))) {
            lru = cl;
        }
    }

    if (lru == NULL) {
        return NULL;
    }

    for (size_t i = 0; i < lru->n; i++) {
        slot_free_push(c, lru->s[i].put_id);
    }

    memset(lru, 0, sizeof(*lru));
    lru->rec_len     = rec_len;
    lru->replica_num = replica_num;
    return lru;
}

/* Gives back the slots of @cl no write may start into any more (all of
 * them with @all). Under slot_lock. */
static void slot_expire(dango_store_client_t *c, sc_slot_class_t *cl,
                        uint64_t now, int all)
{
    size_t kept = 0;

    for (size_t i = 0; i < cl->n; i++) {
        if (all || (cl->s[i].use_until <= now)) {
            slot_free_push(c, cl->s[i].put_id);
        } else {
            cl->s[kept++] = cl->s[i];
        }
    }

    cl->n = kept;
}

/* ---------- internal API ---------- */

int dango__sc_slot_init(dango_store_client_t *c)
{
    int rc = pthread_mutex_init(&c->slot_lock, NULL);

    if (rc != 0) {
        return dango_err_from_errno(rc);
    }

    c->slot_ready = 1;
    if (c->cfg.put_slots == 0) {
        return 0;
    }

    c->slot_cls  = dango_calloc(SC_SLOT_CLASSES, sizeof(*c->slot_cls),
                                "store_slot_classes");
    c->slot_free = dango_malloc(SC_SLOT_FREE_MAX * sizeof(*c->slot_free),
                                "store_slot_free");
    if ((c->slot_cls == NULL) || (c->slot_free == NULL)) {
        dango_free(c->slot_cls);
        dango_free(c->slot_free);
        c->slot_cls  = NULL;
        c->slot_free = NULL;
        return DANGO_ENOMEM; /* the lock goes with the cleanup */
    }

    return 0;
}

void dango__sc_slot_cleanup(dango_store_client_t *c)
{
    if (!c->slot_ready) {
        return;
    }

    if (c->slot_cls != NULL) {
        dango_debug("store client %s: slots: %" PRIu64
                    " one round trip puts, %" PRIu64 " fallbacks",
                    c->name, c->slot_puts, c->slot_fallbacks);
    }

    dango_free(c->slot_cls);
    dango_free(c->slot_free);
    c->slot_cls   = NULL;
    c->slot_free  = NULL;
    c->slot_ready = 0;
    pthread_mutex_destroy(&c->slot_lock);
}

int dango__sc_slot_fits(const dango_store_client_t *c, uint64_t rec_len)
{
    return (c->slot_cls != NULL) && (rec_len > 0) &&
           (slot_target(c, rec_len) >= 2);
}

int dango__sc_slot_take(dango_store_client_t *c, uint64_t rec_len,
                        unsigned replica_num, sc_slot_t *s, uint32_t *want_p,
                        uint64_t *epoch_p)
{
    uint64_t         now    = dango_time_ns();
    size_t           target = slot_target(c, rec_len);
    int              got    = 0;
    sc_slot_class_t *cl;

    *want_p = 0;
    pthread_mutex_lock(&c->slot_lock);
    *epoch_p = c->slot_epoch;
    cl       = slot_class(c, rec_len, replica_num);
    if (cl == NULL) {
        cl = slot_class_new(c, rec_len, replica_num);
    }

    if (cl != NULL) {
        cl->last_use = now;
        while ((cl->n > 0) && !got) {
            sc_slot_t *top = &cl->s[--cl->n];

            if (top->use_until > now) {
                *s  = *top;
                got = 1;
            } else {
                slot_free_push(c, top->put_id);
            }
        }

        if ((cl->asked == 0) && (cl->n < target / 2) &&
            (now >= cl->quiet_until)) {
            *want_p = (uint32_t)(target - cl->n);
            cl->asked++;
        }
    }

    pthread_mutex_unlock(&c->slot_lock);
    return got;
}

int dango__sc_replicas_in(dango_store_client_t *c, const char *what,
                          Dango__Store__Replica *const *reps, size_t n,
                          uint64_t rec, sc_seg_t **segs, uint64_t *addrs,
                          unsigned *nrep_p)
{
    if ((n == 0) || (n > DANGO_STORE_REPLICA_MAX)) {
        dango_error("store client %s: replicas for %s: %zu of them", c->name,
                    what, n);
        return DANGO_EPROTO;
    }

    for (size_t j = 0; j < n; j++) {
        const Dango__Store__Replica *rep = reps[j];
        int                          rc;

        if ((rep->segment == NULL) || (rep->length < rec)) {
            dango_error("store client %s: replicas for %s: a region of %" PRIu64
                        " bytes for a record of %" PRIu64,
                        c->name, what, rep->length, rec);
            return DANGO_EPROTO;
        }

        rc = dango__sc_seg_get(c, rep->segment, &segs[j]);
        if (rc != 0) {
            return rc;
        }

        if (segs[j]->own && !dango__sc_own_range_ok(c, rep->addr, rec)) {
            dango_error("store client %s: replicas for %s: 0x%" PRIx64
                        " outside the own segment",
                        c->name, what, rep->addr);
            return DANGO_EPROTO;
        }

        addrs[j] = rep->addr;
    }

    *nrep_p = (unsigned)n;
    return 0;
}

void dango__sc_slot_add(dango_store_client_t *c, uint64_t rec_len,
                        unsigned replica_num, uint64_t epoch,
                        Dango__Store__PutStartItem *const *items, size_t n,
                        uint64_t t0, uint32_t slot_ms)
{
    sc_slot_t       *got  = NULL;
    size_t           ngot = 0;
    sc_slot_class_t *cl;

    n = DANGO_MIN(n, (size_t)SC_SLOT_MAX);
    if (n > 0) {
        got = dango_malloc(n * sizeof(*got), "store_slot_add");
    }

    /* Segments resolve outside the pool's lock (an open may connect). */
    for (size_t i = 0; (got != NULL) && (i < n); i++) {
        sc_slot_t *s = &got[ngot];

        if (dango__sc_replicas_in(c, "a slot", items[i]->replicas,
                                  items[i]->n_replicas, rec_len, s->segs,
                                  s->addrs, &s->nrep) == 0) {
            s->put_id    = items[i]->put_id;
            s->use_until = t0 + (uint64_t)slot_ms * DANGO_NSEC_PER_MSEC;
            ngot++;
        }
    }

    pthread_mutex_lock(&c->slot_lock);
    cl = slot_class(c, rec_len, replica_num);
    if ((cl != NULL) && (cl->asked > 0)) {
        cl->asked--;
    }
    if ((cl != NULL) && (ngot == 0)) {
        /* Refused (no room, slots off at the master) or failed: the puts
         * of this length go the two round trip way for a while instead of
         * asking on every put. */
        cl->quiet_until = dango_time_ns() + SC_SLOT_QUIET;
    }
    if (epoch != c->slot_epoch) {
        cl = NULL; /* granted by a master since forgotten: given back */
    }

    for (size_t i = 0; i < n; i++) {
        if (got == NULL) {
            slot_free_push(c, items[i]->put_id);
        }
    }

    for (size_t i = 0; i < ngot; i++) {
        if ((cl != NULL) && (cl->n < SC_SLOT_MAX)) {
            cl->s[cl->n++] = got[i];
        } else {
            slot_free_push(c, got[i].put_id);
        }
    }

    pthread_mutex_unlock(&c->slot_lock);
    dango_free(got);
}

void dango__sc_slot_return(dango_store_client_t *c, uint64_t rec_len,
                           unsigned replica_num, const sc_slot_t *s, int reuse)
{
    sc_slot_class_t *cl;

    pthread_mutex_lock(&c->slot_lock);
    cl = slot_class(c, rec_len, replica_num);
    if (reuse && (cl != NULL) && (cl->n < SC_SLOT_MAX) &&
        (s->use_until > dango_time_ns())) {
        cl->s[cl->n++] = *s;
    } else {
        slot_free_push(c, s->put_id);
    }

    pthread_mutex_unlock(&c->slot_lock);
}

size_t dango__sc_slot_take_free(dango_store_client_t *c, uint64_t *ids,
                                size_t max)
{
    size_t n;

    pthread_mutex_lock(&c->slot_lock);
    n = DANGO_MIN(max, c->slot_nfree);
    c->slot_nfree -= n;
    memcpy(ids, c->slot_free + c->slot_nfree, n * sizeof(*ids));
    pthread_mutex_unlock(&c->slot_lock);
    return n;
}

void dango__sc_slot_forget_all(dango_store_client_t *c)
{
    if (c->slot_cls == NULL) {
        return;
    }

    pthread_mutex_lock(&c->slot_lock);
    c->slot_epoch++;
    for (size_t k = 0; k < SC_SLOT_CLASSES; k++) {
        slot_expire(c, &c->slot_cls[k], 0, 1);
    }
    pthread_mutex_unlock(&c->slot_lock);
}

void dango__sc_slot_flush(dango_store_client_t *c, int all)
{
    Dango__Store__PutBindReq   req = DANGO__STORE__PUT_BIND_REQ__INIT;
    Dango__Store__ClientId     id  = DANGO__STORE__CLIENT_ID__INIT;
    Dango__Store__PutBindResp *resp;
    uint64_t                   ids[SC_SLOT_FREE_MAX];
    uint64_t                   now = dango_time_ns();
    int                        rc;

    if (c->slot_cls == NULL) {
        return;
    }

    pthread_mutex_lock(&c->slot_lock);
    for (size_t k = 0; k < SC_SLOT_CLASSES; k++) {
        slot_expire(c, &c->slot_cls[k], now, all);
    }
    pthread_mutex_unlock(&c->slot_lock);

    req.n_release = dango__sc_slot_take_free(c, ids, SC_SLOT_FREE_MAX);
    if (req.n_release == 0) {
        return;
    }

    id.hi       = c->id_hi;
    id.lo       = c->id_lo;
    req.client  = &id;
    req.release = ids;
    resp        = NULL;
    rc          = dango__sc_call(c, DANGO_STORE_M_PUT_BIND, &req.base,
                                 &dango__store__put_bind_resp__descriptor,
                                 (ProtobufCMessage **)&resp,
                                 DANGO_MIN(c->cfg.rpc_timeout, 5 * DANGO_NSEC_PER_SEC));
    if (rc != 0) {
        /* Left to the master's PUT_RELEASE_TIMEOUT or our expiry. */
        dango_debug("store client %s: giving back %zu slots: %s", c->name,
                    req.n_release, dango_strerror(rc));
    }

    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
}
