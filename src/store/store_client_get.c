/*
 * Store client, read path: get, get_into, get_alloc and batch_get.
 *
 * DESIGN
 * One GetReplicaList RPC for all keys (t0 taken before it: the lease
 * deadline is t0 + lease_ms), then rounds of one transfer batch each:
 *   - per key the preferred replica not tried yet: this client's own
 *     segment first (a plain copy from our memory, no transfer), then
 *     same-host segments (transport shm: one copy by the engine), then the
 *     others; ties go to the segment with the fewest requests in flight;
 *   - a value lands directly in the caller's memory when that memory is
 *     registered (or can be registered for the call: values of at least
 *     STORE_REGISTER_THRESHOLD bytes), as one request of the value alone
 *     (the header is fetched into staging too only when
 *     STORE_VERIFY_CHECKSUM is off). Smaller values travel as one request
 *     of the whole record into staging and are copied out once verified;
 *     so a get is one copy plus one xxh3 pass over the value, plus a copy
 *     out of staging for small values;
 *   - every read is verified (the header, when fetched, against what the
 *     master said; xxh3-64 of the value against the checksum) before
 *     success: a bad
 *     replica is reported (DANGO_ECORRUPT), an unreachable one too
 *     (DANGO_EPEER_GONE, after one reopen of a stale handle), and the key
 *     moves to its next replica in the next round.
 * Wrong bytes are never reported as success; a caller buffer that was
 * read into and then failed verification may hold garbage.
 */
#include <inttypes.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/time.h"
#include "store/store_client_int.h"
#include "store/store_proto.h"

#define GET_STACK_REQS 8
/* Disk-tier rounds of one get (DiskLoad, then keys back in memory). */
#define GET_DISK_ROUNDS 3

typedef enum get_mode {
    GET_UNDECIDED = 0,
    GET_DIRECT,    /* value into the caller's (registered) memory */
    GET_STAGED,    /* whole record into staging, copied out when checked */
    GET_ALLOC_FAIL /* no memory to read into */
} get_mode_t;

typedef struct get_item {
    const char                *key;
    size_t                     klen;
    void                      *dst; /* one destination of cap bytes, or: */
    size_t                     cap;
    const dango_store_iov_t   *parts; /* nparts pieces filled in order */
    size_t                     nparts;
    const dango_store_range_t *ranges; /* nranges pieces of the value */
    size_t                     nranges;
    uint64_t                   rsum;      /* bytes of all ranges */
    unsigned                   maxreq;    /* most requests of one read */
    sc_loc_t                  *loc;       /* cache entry it is from, or NULL */
    sc_loc_tag_t               tag;       /* what the cache lookup saw */
    int                        done;      /* served from the cache */
    int                        cacheable; /* it came from GetReplicaList */
    /* Everything below is one attempt's (cleared by get_item_reset()). */
    const Dango__Store__GetItem *it;
    uint64_t                     size, voff, deadline;
    uint8_t                      order[DANGO_STORE_REPLICA_MAX];
    unsigned                     norder, next, cur;
    sc_seg_t                    *segs[DANGO_STORE_REPLICA_MAX];
    uint8_t                      reopened[DANGO_STORE_REPLICA_MAX];
    sc_buf_t                     hdr;  /* header + key (+ staged value) */
    sc_buf_t                     user; /* dst registered for the call */
    get_mode_t                   mode;
    int                          pending;
    int                          corrupt;
    int                          own; /* this round reads our own memory */
    int                          submit_rc;
    dango_segment_id_t           cur_id; /* handle the read went to */
    int64_t                      rc;
    size_t                       req_first, req_n;
} get_item_t;

/* ---------- replica choice ---------- */

/*
 * Preference of a replica: our own segment, then same host (known from an
 * open handle, else from the host id the master reports), then the rest.
 * Segments are not opened here: a dead node must not delay a key whose
 * first choice is alive; it is opened when its turn comes.
 */
static unsigned get_rank(dango_store_client_t *c, const sc_seg_t *s,
                         const Dango__Store__Replica *r)
{
    if ((s != NULL) && s->own) {
        return 0;
    }

    if (s != NULL) {
        int      open, same_host;
        uint64_t fail_until;

        dango__sc_seg_state(c, s, &open, &same_host, &fail_until);
        if (open) {
            return same_host ? 1 : 2;
        }

        if (dango_time_ns() < fail_until) {
            return 3; /* could not be opened a moment ago */
        }
    }

    return ((r->host_id != NULL) && (strcmp(r->host_id, c->host_id) == 0)) ? 1
                                                                           : 2;
}

static void get_order(dango_store_client_t *c, get_item_t *g)
{
    const Dango__Store__GetItem *it = g->it;
    unsigned                     rank[DANGO_STORE_REPLICA_MAX];
    uint32_t                     load[DANGO_STORE_REPLICA_MAX];
    unsigned                     n = 0;

    for (size_t j = 0; (j < it->n_replicas) && (j < DANGO_STORE_REPLICA_MAX);
         j++) {
        const Dango__Store__Replica *r = it->replicas[j];

        if ((r->segment == NULL) ||
            ((r->status != DANGO_STORE_REPLICA_COMPLETE) &&
             (r->status != DANGO_STORE_REPLICA_UNDEFINED)) ||
            (r->length < g->voff + g->size)) {
            continue;
        }

        g->segs[j]    = dango__sc_seg_peek(c, r->segment);
        rank[j]       = get_rank(c, g->segs[j], r);
        load[j]       = (g->segs[j] != NULL)
                            ? __atomic_load_n(&g->segs[j]->inflight, __ATOMIC_RELAXED)
                            : 0;
        g->order[n++] = (uint8_t)j;
    }

    /* Insertion sort by (rank, in flight); stable in master order. */
    for (unsigned a = 1; a < n; a++) {
        uint8_t  j = g->order[a];
        unsigned b = a;

        while ((b > 0) && ((rank[g->order[b - 1]] > rank[j]) ||
                           ((rank[g->order[b - 1]] == rank[j]) &&
                            (load[g->order[b - 1]] > load[j])))) {
            g->order[b] = g->order[b - 1];
            b--;
        }

        g->order[b] = j;
    }

    g->norder = n;
}

/* ---------- verification ---------- */

/* xxh3-64 of the value as it lies in the destination parts. */
static int get_hash_parts(const get_item_t *g, uint64_t *sum_p)
{
    dango_hash_state_t st;
    uint64_t           left = g->size;
    int                rc   = dango_hash_init(&st, 0);

    if (rc != 0) {
        return rc;
    }

    for (size_t k = 0; (k < g->nparts) && (left > 0); k++) {
        size_t l = (size_t)DANGO_MIN((uint64_t)g->parts[k].len, left);

        dango_hash_update(&st, g->parts[k].base, l);
        left -= l;
    }

    *sum_p = dango_hash_final(&st);
    dango_hash_cleanup(&st);
    return 0;
}

/* Checks the record header at @rec (NULL: not fetched) and the value, at
 * @value (NULL: in the destination parts). */
static int get_verify(dango_store_client_t *c, get_item_t *g, const void *rec,
                      const void *value)
{
    uint64_t sum;
    int      rc =
        (rec == NULL)
                 ? 0
                 : dango_store_rec_check(rec, g->key, (uint16_t)g->klen, g->size,
                                         g->it->checksum, g->it->put_id);

    if ((rc != 0) || !c->cfg.verify_checksum) {
        return rc;
    }

    if (value != NULL) {
        sum = dango_hash64(value, g->size);
    } else {
        rc = get_hash_parts(g, &sum);
        if (rc != 0) {
            return rc;
        }
    }

    return (sum == g->it->checksum) ? 0 : DANGO_ECORRUPT;
}

/* Copies the value, whole at @value, to where the caller wants it. */
static void get_scatter(const get_item_t *g, const char *value)
{
    if (g->parts != NULL) {
        uint64_t off = 0;

        for (size_t k = 0; (k < g->nparts) && (off < g->size); k++) {
            size_t l =
                (size_t)DANGO_MIN((uint64_t)g->parts[k].len, g->size - off);

            memcpy(g->parts[k].base, value + off, l);
            off += l;
        }
    } else if (g->ranges != NULL) {
        for (size_t k = 0; k < g->nranges; k++) {
            memcpy(g->ranges[k].dst, value + g->ranges[k].src_offset,
                   g->ranges[k].len);
        }
    } else {
        memcpy(g->dst, value, g->size);
    }
}

static void get_finish_ok(dango_store_client_t *c, get_item_t *g)
{
    if (g->mode == GET_STAGED && !g->own) {
        get_scatter(g, (char *)g->hdr.ptr + g->voff);
    }

    g->rc      = (int64_t)((g->ranges != NULL) ? g->rsum : g->size);
    g->pending = 0;
    if ((g->deadline != 0) && (dango_time_ns() >= g->deadline)) {
        g->rc = DANGO_ELEASE_EXPIRED;
    }
}

/* The replica being read failed with @err (a transfer error or
 * DANGO_ECORRUPT): report it and move on, or retry it once after reopening
 * a stale handle. */
static void get_replica_failed(dango_store_client_t *c, get_item_t *g,
                               dango_segment_id_t id, int err)
{
    const Dango__Store__Replica *r   = g->it->replicas[g->cur];
    sc_seg_t                    *seg = g->segs[g->cur];

    if (g->loc != NULL) {
        /* A cached location: the key is asked of the master afresh,
         * which reports what is really wrong. */
        g->rc      = err;
        g->pending = 0;
        return;
    }

    if ((err == DANGO_ENOMEM) || (err == DANGO_EINVAL) ||
        (err == DANGO_ESTATE) || (err == DANGO_ENOTREG) ||
        (err == DANGO_EBUSY)) {
        /* Our own trouble, not the replica's: no report, no retry. */
        g->rc      = err;
        g->pending = 0;
        return;
    }

    if ((dango_err_is_peer(err) || (err == DANGO_ENOENT)) && (seg != NULL) &&
        !g->reopened[g->cur]) {
        g->reopened[g->cur] = 1;
        if (dango__sc_seg_reopen(c, seg, id) == 0) {
            return; /* same replica again, next round */
        }
    }

    if (err == DANGO_ECORRUPT) {
        g->corrupt = 1;
    } else if (dango_err_is_peer(err) || dango_err_is_link(err) ||
               (err == DANGO_ETIMEDOUT) || (err == DANGO_ENOENT)) {
        err = DANGO_EPEER_GONE;
    }

    dango__sc_report_bad(c, g->key, g->it->put_id, r->segment, r->addr, err);
    g->next++;
}

/* ---------- one round ---------- */

/* Chooses where the bytes go for a non-own replica (once per key). */
static int get_prepare(dango_store_client_t *c, get_item_t *g, unsigned flags)
{
    int rc;

    if (g->mode != GET_UNDECIDED) {
        return (g->mode == GET_ALLOC_FAIL) ? DANGO_ENOMEM : 0;
    }

    g->mode = GET_STAGED;
    if ((g->parts != NULL) || (g->ranges != NULL)) {
        /* Ranges land directly only when no checksum needs the whole
         * value. */
        if ((flags & SC_GET_REGISTERED) &&
            ((g->parts != NULL) || !c->cfg.verify_checksum)) {
            g->mode = GET_DIRECT;
        }
    } else if ((flags & SC_GET_REGISTERED) ||
               dango__sc_ureg_covers(c, g->dst, g->size) ||
               ((g->size >= c->cfg.register_threshold) &&
                (dango__sc_buf_user(c, g->dst, g->size, &g->user) == 0))) {
        g->mode = GET_DIRECT;
    }

    if ((g->mode == GET_DIRECT) && c->cfg.verify_checksum) {
        return 0; /* the value alone: see get_plan() */
    }

    rc = dango__sc_buf_get(c, g->voff + ((g->mode == GET_STAGED) ? g->size : 0),
                           &g->hdr);
    if (rc != 0) {
        g->mode = GET_ALLOC_FAIL;
    }

    return rc;
}

/* Appends the reads of the value straight into the caller's memory. */
static unsigned get_direct_reqs(const get_item_t *g, dango_segment_id_t id,
                                uint64_t value_addr, dango_xfer_req_t *reqs)
{
    unsigned k = 0;

    if (g->parts != NULL) {
        uint64_t off = 0;

        for (size_t p = 0; (p < g->nparts) && (off < g->size); p++) {
            size_t l =
                (size_t)DANGO_MIN((uint64_t)g->parts[p].len, g->size - off);

            if (l == 0) {
                continue;
            }

            reqs[k].op          = DANGO_XFER_OP_READ;
            reqs[k].segment     = id;
            reqs[k].local_addr  = g->parts[p].base;
            reqs[k].remote_addr = value_addr + off;
            reqs[k].length      = l;
            off += l;
            k++;
        }
    } else if (g->ranges != NULL) {
        for (size_t p = 0; p < g->nranges; p++) {
            if (g->ranges[p].len == 0) {
                continue;
            }

            reqs[k].op          = DANGO_XFER_OP_READ;
            reqs[k].segment     = id;
            reqs[k].local_addr  = g->ranges[p].dst;
            reqs[k].remote_addr = value_addr + g->ranges[p].src_offset;
            reqs[k].length      = g->ranges[p].len;
            k++;
        }
    } else {
        reqs[0].op          = DANGO_XFER_OP_READ;
        reqs[0].segment     = id;
        reqs[0].local_addr  = g->dst;
        reqs[0].remote_addr = value_addr;
        reqs[0].length      = g->size;
        k                   = 1;
    }

    return k;
}

/* Plans the next read of @g: 1 with requests in @reqs (count in req_n),
 * 1 with g->own set for a copy from our memory, 0 when it is finished. */
static int get_plan(dango_store_client_t *c, get_item_t *g, unsigned flags,
                    dango_xfer_req_t *reqs)
{
    while (g->next < g->norder) {
        unsigned                     j = g->order[g->next];
        const Dango__Store__Replica *r = g->it->replicas[j];
        sc_seg_t                    *s = g->segs[j];
        dango_segment_id_t           id;
        int                          rc;

        g->cur   = j;
        g->req_n = 0;
        g->own   = 0;
        if ((s == NULL) || !s->own) {
            /* Opens it if needed (cached: a lookup under a read lock). */
            rc = dango__sc_seg_get(c, r->segment, &g->segs[j]);
            if (rc != 0) {
                g->segs[j] = NULL;
                get_replica_failed(
                    c, g, 0, (rc == DANGO_ENOMEM) ? rc : DANGO_EPEER_GONE);
                if (!g->pending) {
                    return 0; /* ended (our trouble, a cached location) */
                }
                continue;
            }

            s = g->segs[j];
        }

        if (s->own) {
            if ((g->voff + g->size < g->size) ||
                !dango__sc_own_range_ok(c, r->addr, g->voff + g->size)) {
                get_replica_failed(c, g, 0, DANGO_ECORRUPT);
                if (!g->pending) {
                    return 0;
                }
                continue;
            }

            g->own = 1;
            return 1;
        }

        rc = get_prepare(c, g, flags);
        if (rc != 0) {
            g->rc      = rc;
            g->pending = 0;
            return 0;
        }

        id        = dango__sc_seg_id(c, s);
        g->cur_id = id;
        __atomic_add_fetch(&s->inflight, 1, __ATOMIC_RELAXED);
        if (g->hdr.kind == SC_BUF_NONE) {
            /*
             * The value straight into the caller's memory, without the
             * header: the checksum the master holds for this put proves
             * the bytes are the object's value (a region reused by another
             * object would not match), which is all the header check adds.
             */
            g->req_n = get_direct_reqs(g, id, r->addr + g->voff, reqs);
            return 1;
        }

        reqs[0].op          = DANGO_XFER_OP_READ;
        reqs[0].segment     = id;
        reqs[0].local_addr  = g->hdr.ptr;
        reqs[0].remote_addr = r->addr;
        reqs[0].length      = g->voff;
        if (g->mode == GET_STAGED) {
            reqs[0].length = g->voff + g->size;
            g->req_n       = 1;
        } else {
            g->req_n = 1 + get_direct_reqs(g, id, r->addr + g->voff, reqs + 1);
        }

        return 1;
    }

    g->rc      = g->corrupt ? DANGO_ECORRUPT : DANGO_EREPLICA_UNAVAIL;
    g->pending = 0;
    return 0;
}

/* Reads our own replica with plain copies and verifies it. */
static void get_own(dango_store_client_t *c, get_item_t *g)
{
    const Dango__Store__Replica *r = g->it->replicas[g->cur];
    char        rec[DANGO_STORE_REC_HDR_SIZE + DANGO_STORE_KEY_MAX +
             DANGO_STORE_REC_ALIGN];
    const char *src = (const char *)(uintptr_t)r->addr;
    int         rc;

    /* The commit word may be being stored by the committer: it is not
     * part of the checks, so it is left out of the copy. */
    memcpy(rec, src, offsetof(dango_store_rec_hdr_t, commit));
    memset(rec + offsetof(dango_store_rec_hdr_t, commit), 0, sizeof(uint64_t));
    memcpy(rec + offsetof(dango_store_rec_hdr_t, reserved),
           src + offsetof(dango_store_rec_hdr_t, reserved),
           g->voff - offsetof(dango_store_rec_hdr_t, reserved));
    if (g->ranges != NULL) {
        /* The whole value is checked where it lies (the lease keeps it
         * there), then only the ranges are copied. */
        rc = get_verify(c, g, rec, src + g->voff);
        if (rc == 0) {
            get_scatter(g, src + g->voff);
        }
    } else {
        get_scatter(g, src + g->voff);
        rc = get_verify(c, g, rec, (g->parts != NULL) ? NULL : g->dst);
    }

    if (rc == 0) {
        get_finish_ok(c, g);
    } else {
        get_replica_failed(c, g, 0, rc);
    }
}

/* Queues the requests of one key, refreshing handles closed by another
 * thread's reopen once. */
static int get_submit_one(dango_store_client_t *c, dango_xfer_batch_t *batch,
                          get_item_t *g, dango_xfer_req_t *reqs)
{
    int rc = dango_xfer_batch_submit(batch, reqs, g->req_n);

    if (rc == DANGO_ENOENT) {
        for (size_t k = 0; k < g->req_n; k++) {
            reqs[k].segment = dango__sc_seg_id(c, g->segs[g->cur]);
        }

        rc = dango_xfer_batch_submit(batch, reqs, g->req_n);
    }

    return rc;
}

/* One round over every pending key; returns 1 if any is still pending. */
static int get_round(dango_store_client_t *c, get_item_t *items, size_t n,
                     unsigned flags)
{
    dango_xfer_req_t    stack_reqs[GET_STACK_REQS];
    dango_xfer_req_t   *reqs  = stack_reqs;
    dango_xfer_batch_t *batch = NULL;
    size_t              total = 0, pending = 0, at = 0;
    int                 rc;

    for (size_t i = 0; i < n; i++) {
        pending += items[i].pending ? items[i].maxreq : 0;
    }

    if (pending == 0) {
        return 0;
    }

    if (pending > GET_STACK_REQS) {
        reqs = dango_malloc(pending * sizeof(*reqs), "store_get_reqs");
        if (reqs == NULL) {
            for (size_t i = 0; i < n; i++) {
                if (items[i].pending) {
                    items[i].rc      = DANGO_ENOMEM;
                    items[i].pending = 0;
                }
            }

            return 0;
        }
    }

    for (size_t i = 0; i < n; i++) {
        get_item_t *g = &items[i];

        g->req_n     = 0;
        g->submit_rc = 0;
        if (g->pending && get_plan(c, g, flags, reqs + total)) {
            g->req_first = total;
            total += g->req_n;
        }
    }

    if (total > 0) {
        rc = dango__sc_batch_get(c, total, &batch);
        if (rc != 0) {
            batch = NULL;
        } else if (dango_xfer_batch_submit(batch, reqs, total) == 0) {
            rc = 0;
            at = total;
        } else {
            /* Nothing was queued: key by key, isolating failures. */
            for (size_t i = 0; i < n; i++) {
                get_item_t *g = &items[i];

                if (g->req_n == 0) {
                    continue;
                }

                g->submit_rc = get_submit_one(c, batch, g, reqs + g->req_first);
                if (g->submit_rc == 0) {
                    memmove(reqs + at, reqs + g->req_first,
                            g->req_n * sizeof(*reqs));
                    g->req_first = at;
                    at += g->req_n;
                }
            }
        }

        if (batch == NULL) {
            for (size_t i = 0; i < n; i++) {
                items[i].submit_rc = (items[i].req_n > 0) ? rc : 0;
            }
        }
    }

    /* Our own replicas while the batch runs. */
    for (size_t i = 0; i < n; i++) {
        if (items[i].pending && items[i].own) {
            get_own(c, &items[i]);
        }
    }

    rc = (at > 0) ? dango__sc_batch_wait(c, batch) : 0;
    for (size_t i = 0; i < n; i++) {
        get_item_t *g   = &items[i];
        int         err = g->submit_rc;

        if (g->req_n == 0) {
            continue;
        }

        __atomic_sub_fetch(&g->segs[g->cur]->inflight, 1, __ATOMIC_RELAXED);
        for (size_t k = 0; (err == 0) && (rc != 0) && (k < g->req_n); k++) {
            dango_xfer_status_t st;

            dango_xfer_batch_status(batch, g->req_first + k, &st);
            if (st.state != DANGO_XFER_COMPLETED) {
                err = (st.error != 0) ? st.error : rc;
            }
        }

        if (err == 0) {
            err = get_verify(
                c, g, (g->hdr.kind == SC_BUF_NONE) ? NULL : g->hdr.ptr,
                (g->mode == GET_STAGED) ? (char *)g->hdr.ptr + g->voff
                : (g->parts != NULL)    ? NULL
                                        : g->dst);
            if (err == 0) {
                get_finish_ok(c, g);
                continue;
            }
        }

        get_replica_failed(c, g, g->cur_id, err);
    }

    if (batch != NULL) {
        dango__sc_batch_put(c, batch);
    }

    if (reqs != stack_reqs) {
        dango_free(reqs);
    }

    for (size_t i = 0; i < n; i++) {
        if (items[i].pending) {
            return 1;
        }
    }

    return 0;
}

/* ---------- entry ---------- */

static int get_replicas(dango_store_client_t *c, get_item_t *items, size_t n,
                        size_t valid, Dango__Store__GetResp **resp_p)
{
    Dango__Store__KeysReq req = DANGO__STORE__KEYS_REQ__INIT;
    char                 *k1[1];
    char                **keys = k1;
    size_t                m    = 0;
    int                   rc;

    if (valid > 1) {
        keys = dango_malloc(valid * sizeof(*keys), "store_get_keys");
        if (keys == NULL) {
            return DANGO_ENOMEM;
        }
    }

    for (size_t i = 0; i < n; i++) {
        if ((items[i].rc == 0) && !items[i].done) {
            keys[m++] = (char *)items[i].key;
        }
    }

    req.n_keys = m;
    req.keys   = keys;
    rc         = dango__sc_call(c, DANGO_STORE_M_GET_REPLICAS, &req.base,
                                &dango__store__get_resp__descriptor,
                                (ProtobufCMessage **)resp_p, 0);
    if ((rc == 0) && ((*resp_p)->n_items != m)) {
        protobuf_c_message_free_unpacked(&(*resp_p)->base, NULL);
        rc = DANGO_EPROTO;
    }

    if (keys != k1) {
        dango_free(keys);
    }

    return rc;
}

/* Takes key @i's destination from @dsts and checks it. */
static int get_dst_init(dango_store_client_t *c, get_item_t *g,
                        const sc_dsts_t *dsts, size_t i, unsigned flags)
{
    size_t n;

    g->maxreq = 2;
    if (dsts->parts != NULL) {
        g->parts  = dsts->parts[i];
        g->nparts = n = dsts->n_parts[i];
    } else if (dsts->ranges != NULL) {
        g->ranges  = dsts->ranges[i];
        g->nranges = n = dsts->n_ranges[i];
    } else {
        g->dst = dsts->bufs[i];
        g->cap = dsts->lens[i];
        if (g->dst == NULL) {
            return DANGO_EINVAL;
        }

        if ((flags & SC_GET_REGISTERED) &&
            !dango__sc_ureg_covers(c, g->dst, g->cap)) {
            return DANGO_ENOTREG;
        }

        return 0;
    }

    if (((g->parts == NULL) && (g->ranges == NULL)) || (n == 0) ||
        (n > DANGO_STORE_PARTS_MAX)) {
        return DANGO_EINVAL;
    }

    g->maxreq = 1 + (unsigned)n;
    for (size_t k = 0; k < n; k++) {
        void  *p = (g->parts != NULL) ? g->parts[k].base : g->ranges[k].dst;
        size_t l = (g->parts != NULL) ? g->parts[k].len : g->ranges[k].len;

        if ((p == NULL) && (l > 0)) {
            return DANGO_EINVAL;
        }

        if ((l > 0) && (flags & SC_GET_REGISTERED) &&
            !dango__sc_ureg_covers(c, p, l)) {
            return DANGO_ENOTREG;
        }

        if (g->parts != NULL) {
            g->cap += l;
        } else {
            g->rsum += l;
        }
    }

    return 0;
}

/* 0 if the object of @size fits the destination of @g, else DANGO_ERANGE. */
static int get_dst_fits(const get_item_t *g, uint64_t size)
{
    for (size_t k = 0; k < g->nranges; k++) {
        const dango_store_range_t *r = &g->ranges[k];

        if ((r->src_offset > size) || (r->len > size - r->src_offset)) {
            return DANGO_ERANGE;
        }
    }

    return ((g->ranges == NULL) && (size > g->cap)) ? DANGO_ERANGE : 0;
}

/* Sets up the read of key @i whose GetItem (status 0) is in g->it. */
static void get_item_start(dango_store_client_t *c, get_item_t *g, size_t i,
                           uint64_t *sizes, void **allocs, uint64_t t0)
{
    g->size = g->it->size;
    g->voff = dango_store_rec_value_off(g->klen);
    if (sizes != NULL) {
        sizes[i] = g->size;
    }

    if (allocs != NULL) {
        g->dst = dango_malloc(DANGO_MAX(g->size, (uint64_t)1), "store_value");
        g->cap = g->size;
        if (g->dst == NULL) {
            g->rc = DANGO_ENOMEM;
            return;
        }
    } else if ((g->rc = get_dst_fits(g, g->size)) != 0) {
        return;
    }

    if (g->it->lease_ms != 0) {
        g->deadline = t0 + g->it->lease_ms * DANGO_NSEC_PER_MSEC;
    }

    get_order(c, g);
    g->pending = 1;
}

/*
 * One KeysReq call (GetReplicaList or DiskLoad) for the items whose rc is
 * @want (and, for DANGO_ENO_OBJECT, that the master said are on disk);
 * their GetItems replace g->it and set g->rc. The reply goes to *@resp_p
 * (freed by the caller). Returns the number of items asked for.
 */
static size_t get_disk_call(dango_store_client_t *c, get_item_t *items,
                            size_t n, uint32_t method, int want,
                            uint64_t *sizes, void **allocs,
                            Dango__Store__GetResp **resp_p)
{
    Dango__Store__KeysReq  req  = DANGO__STORE__KEYS_REQ__INIT;
    Dango__Store__GetResp *resp = NULL;
    char                 **keys;
    size_t                 m = 0, k = 0;
    uint64_t               t0;
    int                    rc;

    for (size_t i = 0; i < n; i++) {
        m += (items[i].rc == want) &&
             ((want != DANGO_ENO_OBJECT) ||
              ((items[i].it != NULL) && items[i].it->on_disk));
    }
    if (m == 0) {
        return 0;
    }

    keys = dango_malloc(m * sizeof(*keys), "store_get_disk_keys");
    for (size_t i = 0; i < n; i++) {
        if ((items[i].rc == want) &&
            ((want != DANGO_ENO_OBJECT) ||
             ((items[i].it != NULL) && items[i].it->on_disk))) {
            if (keys == NULL) {
                items[i].rc = DANGO_ENOMEM;
            } else {
                keys[k++] = (char *)items[i].key;
            }
        }
    }
    if (keys == NULL) {
        return 0;
    }

    req.n_keys = m;
    req.keys   = keys;
    t0         = dango_time_ns();
    rc         = dango__sc_call(c, method, &req.base,
                                &dango__store__get_resp__descriptor,
                                (ProtobufCMessage **)&resp, 0);
    if ((rc == 0) && (resp->n_items != m)) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        rc = DANGO_EPROTO;
    }

    k = 0;
    for (size_t i = 0; i < n; i++) {
        get_item_t *g = &items[i];

        if ((g->rc != want) || ((want == DANGO_ENO_OBJECT) &&
                                ((g->it == NULL) || !g->it->on_disk))) {
            continue;
        }

        if (rc != 0) {
            g->rc = rc;
            continue;
        }

        g->it = resp->items[k++];
        g->rc = g->it->status;
        if (g->rc == 0) {
            get_item_start(c, g, i, sizes, allocs, t0);
        }
    }

    dango_free(keys);
    *resp_p = resp;
    return m;
}

/*
 * Disk tier: a key the master holds only on a node's disk (ENO_OBJECT with
 * on_disk) is loaded into memory by that node (DiskLoad, which answers
 * once the record is in place) and then read like any replica. A key that
 * came back to memory meanwhile (DANGO_EAGAIN: a concurrent promotion or a
 * new put) is asked for again. Bounded to GET_DISK_ROUNDS rounds.
 */
static void get_disk(dango_store_client_t *c, get_item_t *items, size_t n,
                     uint64_t *sizes, void **allocs,
                     Dango__Store__GetResp **resps)
{
    for (unsigned r = 0; r < GET_DISK_ROUNDS; r++) {
        size_t asked = 0;

        asked += get_disk_call(c, items, n, DANGO_STORE_M_DISK_LOAD,
                               DANGO_ENO_OBJECT, sizes, allocs, &resps[2 * r]);
        asked += get_disk_call(c, items, n, DANGO_STORE_M_GET_REPLICAS,
                               DANGO_EAGAIN, sizes, allocs, &resps[2 * r + 1]);
        if (asked == 0) {
            return;
        }
    }

    for (size_t i = 0; i < n; i++) {
        if (items[i].rc == DANGO_EAGAIN) {
            items[i].rc = DANGO_EREPLICA_UNAVAIL;
        }
    }
}

/*
 * Records a node staged for us (DiskLoad without promotion) are read: the
 * node may reuse their space now (best effort: it also frees them after a
 * second).
 */
static void get_disk_release(dango_store_client_t *c, get_item_t *items,
                             size_t n)
{
    Dango__Store__DiskReleaseReq req = DANGO__STORE__DISK_RELEASE_REQ__INIT;
    Dango__Store__DiskStaged    *st;
    Dango__Store__DiskStaged   **stp;
    size_t                       m = 0;

    for (size_t i = 0; i < n; i++) {
        m += (items[i].it != NULL) && items[i].it->disk_staged &&
             (items[i].it->n_replicas == 1);
    }
    if (m == 0) {
        return;
    }

    st = dango_calloc(m, sizeof(*st) + sizeof(*stp), "store_get_release");
    if (st == NULL) {
        return;
    }
    stp = (Dango__Store__DiskStaged **)(st + m);
    m   = 0;
    for (size_t i = 0; i < n; i++) {
        const Dango__Store__GetItem *it = items[i].it;

        if ((it != NULL) && it->disk_staged && (it->n_replicas == 1)) {
            dango__store__disk_staged__init(&st[m]);
            st[m].seg_hi = it->replicas[0]->seg_hi;
            st[m].seg_lo = it->replicas[0]->seg_lo;
            st[m].addr   = it->replicas[0]->addr;
            stp[m]       = &st[m];
            m++;
        }
    }

    req.n_staged = m;
    req.staged   = stp;
    (void)dango__sc_call(c, DANGO_STORE_M_DISK_RELEASE, &req.base, NULL, NULL,
                         0);
    dango_free(st);
}

/* Clears the attempt of @g (key @i) so that it can start again. */
static void get_item_reset(dango_store_client_t *c, get_item_t *g, size_t i,
                           uint64_t *sizes, void **allocs)
{
    dango__sc_buf_put(c, &g->hdr);
    dango__sc_buf_put(c, &g->user);
    if (allocs != NULL) {
        dango_free(g->dst);
        g->dst = NULL;
        g->cap = 0;
    }

    if (sizes != NULL) {
        sizes[i] = 0;
    }

    memset(&g->it, 0, sizeof(*g) - offsetof(get_item_t, it));
}

/*
 * Reads the keys whose locations are cached (store_client_loc.c) and
 * marks them done. A key whose cached read failed in any way loses its
 * entry and is cleared for the master path. Returns the keys done.
 */
static size_t get_cached(dango_store_client_t *c, get_item_t *items, size_t n,
                         unsigned flags, uint64_t *sizes, void **allocs)
{
    size_t hits = 0, done = 0;

    for (size_t i = 0; i < n; i++) {
        get_item_t *g = &items[i];

        if (g->rc != 0) {
            continue;
        }

        g->loc = dango__sc_loc_find(c, g->key, g->klen, &g->tag);
        if (g->loc != NULL) {
            g->it = &g->loc->it;
            get_item_start(c, g, i, sizes, allocs, g->loc->t0);
            hits++;
        }
    }

    if (hits == 0) {
        return 0;
    }

    while (get_round(c, items, n, flags)) {
    }

    for (size_t i = 0; i < n; i++) {
        get_item_t *g = &items[i];

        if (g->loc == NULL) {
            continue;
        }

        /* A buffer too small for the cached size is the caller's
         * answer: the master would give the same one. */
        if ((g->rc >= 0) || (g->rc == DANGO_ERANGE)) {
            g->done = 1;
            g->it   = NULL; /* the entry's, released below */
            done++;
        } else {
            __atomic_add_fetch(&c->loc_stale, 1, __ATOMIC_RELAXED);
            dango__sc_loc_forget(c, g->key, g->klen, &g->tag);
            get_item_reset(c, g, i, sizes, allocs);
        }

        dango__sc_loc_release(g->loc);
        g->loc = NULL;
    }

    return done;
}

int dango__sc_get_many(dango_store_client_t *c, size_t n,
                       const char *const *keys, const sc_dsts_t *dsts,
                       unsigned flags, int64_t *results, uint64_t *sizes,
                       void **allocs)
{
    Dango__Store__GetResp *resp                           = NULL;
    Dango__Store__GetResp *disk_resp[GET_DISK_ROUNDS * 2] = {NULL};
    get_item_t             one;
    get_item_t            *items = &one;
    size_t                 valid = 0, m = 0;
    uint64_t               t0;
    int                    rc = 0;

    if (n > 1) {
        items = dango_calloc(n, sizeof(*items), "store_get_items");
        if (items == NULL) {
            for (size_t i = 0; i < n; i++) {
                results[i] = DANGO_ENOMEM;
            }

            return DANGO_ENOMEM;
        }
    } else {
        memset(&one, 0, sizeof(one));
    }

    for (size_t i = 0; i < n; i++) {
        get_item_t *g = &items[i];
        int         krc;

        g->key    = keys[i];
        g->maxreq = 2;
        krc       = dango__sc_key_check(g->key, &g->klen);
        if ((krc == 0) && (allocs == NULL)) {
            krc = get_dst_init(c, g, dsts, i, flags);
        }

        g->rc = krc;
        valid += krc == 0;
        if (sizes != NULL) {
            sizes[i] = 0;
        }

        if (allocs != NULL) {
            allocs[i] = NULL;
        }
    }

    if ((valid > 0) && (c->loc != NULL)) {
        valid -= get_cached(c, items, n, flags, sizes, allocs);
    }

    if (valid == 0) {
        goto out;
    }

    t0 = dango_time_ns();
    rc = get_replicas(c, items, n, valid, &resp);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            if ((items[i].rc == 0) && !items[i].done) {
                items[i].rc = rc;
            }
        }

        goto out;
    }

    for (size_t i = 0; i < n; i++) {
        get_item_t *g = &items[i];

        if ((g->rc != 0) || g->done) {
            continue;
        }

        g->it = resp->items[m++];
        if (g->it->status != 0) {
            g->rc = g->it->status;
            continue;
        }

        g->cacheable = c->loc != NULL;
        get_item_start(c, g, i, sizes, allocs, t0);
    }

    get_disk(c, items, n, sizes, allocs, disk_resp);
    while (get_round(c, items, n, flags)) {
    }
    get_disk_release(c, items, n);

    /* Locations that served a read at the first replica tried are kept
     * (one that failed was reported: the master's next answer differs). */
    for (size_t i = 0; i < n; i++) {
        get_item_t *g = &items[i];

        if (g->cacheable && (g->rc >= 0) && (g->next == 0)) {
            dango__sc_loc_add(c, g->key, g->klen, &g->tag, g->it, t0);
        }
    }

out:
    for (size_t i = 0; i < n; i++) {
        get_item_t *g = &items[i];

        dango__sc_buf_put(c, &g->hdr);
        dango__sc_buf_put(c, &g->user);
        results[i] = g->rc;
        if (allocs != NULL) {
            if (g->rc >= 0) {
                allocs[i] = g->dst;
            } else {
                dango_free(g->dst);
            }
        }
    }

    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }

    for (size_t i = 0; i < GET_DISK_ROUNDS * 2; i++) {
        if (disk_resp[i] != NULL) {
            protobuf_c_message_free_unpacked(&disk_resp[i]->base, NULL);
        }
    }

    if (items != &one) {
        dango_free(items);
    }

    return rc;
}

/* ---------- public ---------- */

int64_t dango_store_get(dango_store_client_t *c, const char *key, void *buf,
                        size_t len, uint64_t *size_p)
{
    sc_dsts_t dsts = {.bufs = &buf, .lens = &len};
    int64_t   res;
    uint64_t  size;

    if (c == NULL) {
        return DANGO_EINVAL;
    }

    dango__sc_get_many(c, 1, &key, &dsts, 0, &res, &size, NULL);
    if (size_p != NULL) {
        *size_p = size;
    }

    return res;
}

int64_t dango_store_get_into(dango_store_client_t *c, const char *key,
                             void *buf, size_t len)
{
    sc_dsts_t dsts = {.bufs = &buf, .lens = &len};
    int64_t   res;

    if (c == NULL) {
        return DANGO_EINVAL;
    }

    dango__sc_get_many(c, 1, &key, &dsts, SC_GET_REGISTERED, &res, NULL, NULL);
    return res;
}

int dango_store_get_alloc(dango_store_client_t *c, const char *key,
                          void **value_p, size_t *len_p)
{
    int64_t  res;
    uint64_t size;
    void    *val;

    if ((c == NULL) || (value_p == NULL) || (len_p == NULL)) {
        return DANGO_EINVAL;
    }

    dango__sc_get_many(c, 1, &key, NULL, 0, &res, &size, &val);
    if (res < 0) {
        return (int)res;
    }

    *value_p = val;
    *len_p   = (size_t)size;
    return 0;
}

void dango_store_free(void *value)
{
    dango_free(value);
}

int dango_store_batch_get(dango_store_client_t *c, size_t n,
                          const char *const *keys, void *const *bufs,
                          const size_t *lens, int registered, int64_t *results)
{
    sc_dsts_t dsts = {.bufs = bufs, .lens = lens};

    if ((c == NULL) || (n == 0) || (n > DANGO_STORE_BATCH_MAX) ||
        (keys == NULL) || (bufs == NULL) || (lens == NULL) ||
        (results == NULL)) {
        return DANGO_EINVAL;
    }

    return dango__sc_get_many(c, n, keys, &dsts,
                              registered ? SC_GET_REGISTERED : 0, results, NULL,
                              NULL);
}

/* The _parts / _ranges calls: common checks, then the gets into @dsts. */
static int get_batch_lists(dango_store_client_t *c, size_t n,
                           const char *const *keys, const sc_dsts_t *dsts,
                           const void *lists, const size_t *counts,
                           unsigned flags, int64_t *results)
{
    if ((c == NULL) || (n == 0) || (n > DANGO_STORE_BATCH_MAX) ||
        (keys == NULL) || (lists == NULL) || (counts == NULL) ||
        (results == NULL) ||
        ((flags & ~(unsigned)DANGO_STORE_REGISTERED) != 0)) {
        return DANGO_EINVAL;
    }

    return dango__sc_get_many(
        c, n, keys, dsts,
        (flags & DANGO_STORE_REGISTERED) ? SC_GET_REGISTERED : 0, results, NULL,
        NULL);
}

int dango_store_batch_get_parts(dango_store_client_t *c, size_t n,
                                const char *const              *keys,
                                const dango_store_iov_t *const *parts,
                                const size_t *n_parts, unsigned flags,
                                int64_t *results)
{
    sc_dsts_t dsts = {.parts = parts, .n_parts = n_parts};

    return get_batch_lists(c, n, keys, &dsts, parts, n_parts, flags, results);
}

int dango_store_batch_get_ranges(dango_store_client_t *c, size_t n,
                                 const char *const                *keys,
                                 const dango_store_range_t *const *ranges,
                                 const size_t *n_ranges, unsigned flags,
                                 int64_t *results)
{
    sc_dsts_t dsts = {.ranges = ranges, .n_ranges = n_ranges};

    return get_batch_lists(c, n, keys, &dsts, ranges, n_ranges, flags, results);
}
