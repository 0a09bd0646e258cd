/*
 * Store client, write path: put, upsert, put_from and their batch forms.
 *
 * DESIGN
 * One call, any number of keys, three phases:
 *   1. Prepare each value: a registered caller buffer is used as it is; an
 *      unregistered one of at least STORE_REGISTER_THRESHOLD bytes is
 *      registered for the call (a few microseconds, no copy); a smaller one
 *      (or one whose registration overlaps another) is copied into staging
 *      right behind its record header, so the whole record leaves in one
 *      request. The xxh3-64 of the value is taken from the registered copy
 *      (hot in cache when it was just copied).
 *   2. PutStart for all keys in one RPC; then one transfer batch with, per
 *      replica, the header+key and the value (or the whole staged record),
 *      every replica of every key in flight at once. Replicas that live in
 *      this client's own segment are plain copies, done while the batch
 *      runs.
 *   3. PutEnd for the keys whose every replica was written, PutRevoke for
 *      the others (one RPC each), then the commit words go to the
 *      committer thread.
 * A write into a peer that restarted is never retried: its regions belong
 * to the new instance. The put is revoked and the error returned.
 */
#include <inttypes.h>
#include <string.h>

#include "common/alloc.h"
#include "common/copy.h"
#include "common/hash.h"
#include "common/time.h"
#include "store/store_client_int.h"
#include "store/store_proto.h"

/* Requests kept on the stack (one key, up to 8 replicas, 2 each). */
#define PUT_STACK_REQS (2 * DANGO_STORE_REPLICA_MAX)

typedef struct put_item {
    const char *key;
    size_t      klen;
    /* The value: nparts pieces, registered once prepared (a single piece
     * points at one). */
    const dango_store_iov_t *parts;
    size_t                   nparts;
    dango_store_iov_t        one;
    size_t                   len;  /* sum of the parts */
    uint64_t                 voff; /* value offset in the record */
    uint64_t                 checksum;
    uint64_t                 put_id;
    sc_buf_t                 hdr;  /* header + key (+ the value when copied) */
    sc_buf_t                 user; /* the caller's buffer, registered */
    unsigned                 per;  /* requests per remote replica */
    int                      copied;
    int                      rc;
    int       started; /* PutStart succeeded: End or Revoke follows */
    int       ended;   /* durable end: PutEnd succeeded, words follow */
    unsigned  nrep;
    sc_seg_t *segs[DANGO_STORE_REPLICA_MAX];
    uint64_t  addrs[DANGO_STORE_REPLICA_MAX];
    size_t    req_first, req_n; /* in the batch, in submission order */
} put_item_t;

/* ---------- phase 1 ---------- */

/* xxh3-64 of the concatenation of @n parts. */
static int put_checksum(const dango_store_iov_t *parts, size_t n,
                        uint64_t *sum_p)
{
    dango_hash_state_t st;
    int                rc;

    if (n == 1) {
        *sum_p = dango_hash64(parts[0].base, parts[0].len);
        return 0;
    }

    rc = dango_hash_init(&st, 0);
    if (rc != 0) {
        return rc;
    }

    for (size_t k = 0; k < n; k++) {
        dango_hash_update(&st, parts[k].base, parts[k].len);
    }

    *sum_p = dango_hash_final(&st);
    dango_hash_cleanup(&st);
    return 0;
}

/*
 * Makes the value's bytes registered: the caller's registered parts as they
 * are; one unregistered buffer of at least STORE_REGISTER_THRESHOLD bytes
 * registered for the call; anything else gathered into staging right
 * behind the record header (one copy), so the record leaves in one request.
 */
static int put_prepare(dango_store_client_t *c, put_item_t *it, unsigned flags)
{
    size_t nonzero = 0;
    int    rc;

    it->voff = dango_store_rec_value_off(it->klen);
    for (size_t k = 0; k < it->nparts; k++) {
        if (it->parts[k].len == 0) {
            continue;
        }

        if ((flags & SC_PUT_REGISTERED) &&
            !dango__sc_ureg_covers(c, it->parts[k].base, it->parts[k].len)) {
            return DANGO_ENOTREG;
        }

        nonzero++;
    }

    if ((flags & SC_PUT_REGISTERED) ||
        ((it->nparts == 1) && (it->len >= c->cfg.register_threshold) &&
         (dango__sc_buf_user(c, it->parts[0].base, it->len, &it->user) == 0))) {
        rc      = dango__sc_buf_get(c, it->voff, &it->hdr);
        it->per = 1 + (unsigned)nonzero;
    } else {
        rc = dango__sc_buf_get(c, it->voff + it->len, &it->hdr);
        if (rc == 0) {
            char *at = (char *)it->hdr.ptr + it->voff;

            for (size_t k = 0; k < it->nparts; k++) {
                memcpy(at, it->parts[k].base, it->parts[k].len);
                at += it->parts[k].len;
            }

            it->one.base = (char *)it->hdr.ptr + it->voff;
            it->one.len  = it->len;
            it->parts    = &it->one;
            it->nparts   = 1;
            it->copied   = 1;
            it->per      = 1;
        }
    }

    if (rc != 0) {
        return rc;
    }

    return put_checksum(it->parts, it->nparts, &it->checksum);
}

/* ---------- phase 2 ---------- */

/* Checks the replicas PutStart gave and formats the record header. */
static int put_plan(dango_store_client_t *c, put_item_t *it,
                    const Dango__Store__PutStartItem *r)
{
    int rc = dango__sc_replicas_in(c, it->key, r->replicas, r->n_replicas,
                                   it->voff + it->len, it->segs, it->addrs,
                                   &it->nrep);
    if (rc != 0) {
        return rc;
    }

    dango_store_rec_format(it->hdr.ptr, it->key, (uint16_t)it->klen, it->len,
                           it->checksum, it->put_id);
    return 0;
}

static int put_start(dango_store_client_t *c, put_item_t *items, size_t n,
                     size_t valid, Dango__Store__ReplicateConfig *wire,
                     int upsert)
{
    Dango__Store__PutStartReq   req  = DANGO__STORE__PUT_START_REQ__INIT;
    Dango__Store__PutStartResp *resp = NULL;
    Dango__Store__ClientId      id   = DANGO__STORE__CLIENT_ID__INIT;
    char                       *k1[1];
    uint64_t                    s1[1], x1[1];
    char                      **keys  = k1;
    uint64_t                   *sizes = s1, *sums = x1;
    size_t                      m = 0;
    int                         rc;

    if (valid > 1) {
        keys  = dango_malloc(valid * sizeof(*keys), "store_put_keys");
        sizes = dango_malloc(valid * sizeof(*sizes), "store_put_sizes");
        sums  = dango_malloc(valid * sizeof(*sums), "store_put_sums");
        if ((keys == NULL) || (sizes == NULL) || (sums == NULL)) {
            rc = DANGO_ENOMEM;
            goto out;
        }
    }

    for (size_t i = 0; i < n; i++) {
        if (items[i].rc == 0) {
            keys[m]  = (char *)items[i].key;
            sizes[m] = items[i].len;
            sums[m]  = items[i].checksum;
            m++;
        }
    }

    id.hi           = c->id_hi;
    id.lo           = c->id_lo;
    req.client      = &id;
    req.n_keys      = m;
    req.keys        = keys;
    req.n_sizes     = m;
    req.sizes       = sizes;
    req.n_checksums = m;
    req.checksums   = sums;
    req.config      = wire;
    req.upsert      = upsert != 0;
    rc              = dango__sc_call(c, DANGO_STORE_M_PUT_START, &req.base,
                                     &dango__store__put_start_resp__descriptor,
                                     (ProtobufCMessage **)&resp, 0);
    if (rc == DANGO_ECONNRESET) {
        /* The master may have placed the puts: asked again as a retry, it
         * answers with the puts it placed for us (without, the keys would
         * read as taken by a put that never ends, for PUT_DISCARD). */
        req.retry = 1;
        rc        = dango__sc_call(c, DANGO_STORE_M_PUT_START, &req.base,
                                   &dango__store__put_start_resp__descriptor,
                                   (ProtobufCMessage **)&resp, 0);
    }
    if (rc != 0) {
        goto out;
    }

    if (resp->n_items != m) {
        rc = DANGO_EPROTO;
        goto out;
    }

    m = 0;
    for (size_t i = 0; i < n; i++) {
        const Dango__Store__PutStartItem *r;

        if (items[i].rc != 0) {
            continue;
        }

        r = resp->items[m++];
        if (r->status != 0) {
            items[i].rc = r->status;
            continue;
        }

        items[i].started = 1;
        items[i].put_id  = r->put_id;
        items[i].rc      = put_plan(c, &items[i], r);
    }

out:
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }

    if (valid > 1) {
        dango_free(keys);
        dango_free(sizes);
        dango_free(sums);
    }

    return rc;
}

static size_t put_add_reqs(dango_store_client_t *c, put_item_t *it,
                           dango_xfer_req_t *reqs)
{
    size_t k = 0;

    for (unsigned j = 0; j < it->nrep; j++) {
        dango_segment_id_t id;

        if (it->segs[j]->own) {
            continue;
        }

        id = dango__sc_seg_id(c, it->segs[j]);
        __atomic_add_fetch(&it->segs[j]->inflight, 1, __ATOMIC_RELAXED);
        reqs[k].op          = DANGO_XFER_OP_WRITE;
        reqs[k].segment     = id;
        reqs[k].local_addr  = it->hdr.ptr;
        reqs[k].remote_addr = it->addrs[j];
        reqs[k].length      = it->copied ? it->voff + it->len : it->voff;
        k++;
        for (size_t p = 0, off = it->voff; !it->copied && (p < it->nparts);
             p++) {
            if (it->parts[p].len == 0) {
                continue;
            }

            reqs[k].op          = DANGO_XFER_OP_WRITE;
            reqs[k].segment     = id;
            reqs[k].local_addr  = it->parts[p].base;
            reqs[k].remote_addr = it->addrs[j] + off;
            reqs[k].length      = it->parts[p].len;
            off += it->parts[p].len;
            k++;
        }
    }

    return k;
}

static void put_own_copies(dango_store_client_t *c, put_item_t *it)
{
    for (unsigned j = 0; j < it->nrep; j++) {
        char *dst = (char *)(uintptr_t)it->addrs[j];

        if (!it->segs[j]->own) {
            continue;
        }

        if (it->copied) {
            dango_copy_stream(dst, it->hdr.ptr, it->voff + it->len);
            continue;
        }

        memcpy(dst, it->hdr.ptr, it->voff);
        dst += it->voff;
        for (size_t p = 0; p < it->nparts; p++) {
            dango_copy_stream(dst, it->parts[p].base, it->parts[p].len);
            dst += it->parts[p].len;
        }
    }
}

/* Replica j of @it that request @k (relative to the item) went to. */
static unsigned put_req_replica(const put_item_t *it, size_t k)
{
    size_t per = it->per;

    for (unsigned j = 0; j < it->nrep; j++) {
        if (it->segs[j]->own) {
            continue;
        }

        if (k < per) {
            return j;
        }

        k -= per;
    }

    return 0;
}

/* Reopens, for later calls, the segment a peer-level error came from. */
static void put_note_peer(dango_store_client_t *c, put_item_t *it,
                          const dango_xfer_req_t *reqs, size_t k, int err)
{
    if (dango_err_is_peer(err)) {
        dango__sc_seg_reopen(c, it->segs[put_req_replica(it, k)],
                             reqs[k].segment);
    }
}

/*
 * Queues the requests of one key. A handle closed by another thread's
 * reopen (DANGO_ENOENT) is refreshed and the key queued again; a stale
 * segment (peer restarted) is reopened for later calls and the key fails.
 */
static int put_submit_one(dango_store_client_t *c, dango_xfer_batch_t *batch,
                          put_item_t *it, dango_xfer_req_t *reqs)
{
    int rc = dango_xfer_batch_submit(batch, reqs, it->req_n);

    if (rc == DANGO_ENOENT) {
        for (size_t k = 0; k < it->req_n; k++) {
            reqs[k].segment =
                dango__sc_seg_id(c, it->segs[put_req_replica(it, k)]);
        }

        rc = dango_xfer_batch_submit(batch, reqs, it->req_n);
    }

    if (rc != 0) {
        for (size_t k = 0; k < it->req_n; k++) {
            put_note_peer(c, it, reqs, k, rc);
        }
    }

    return rc;
}

static void put_transfer(dango_store_client_t *c, put_item_t *items, size_t n)
{
    dango_xfer_req_t    stack_reqs[PUT_STACK_REQS];
    dango_xfer_req_t   *reqs  = stack_reqs;
    dango_xfer_batch_t *batch = NULL;
    size_t              total = 0, submitted = 0;
    int                 rc;

    for (size_t i = 0; i < n; i++) {
        if (items[i].rc == 0) {
            for (unsigned j = 0; j < items[i].nrep; j++) {
                total += items[i].segs[j]->own ? 0 : items[i].per;
            }
        }
    }

    if (total > PUT_STACK_REQS) {
        reqs = dango_malloc(total * sizeof(*reqs), "store_put_reqs");
        if (reqs == NULL) {
            for (size_t i = 0; i < n; i++) {
                items[i].rc = (items[i].rc == 0) ? DANGO_ENOMEM : items[i].rc;
            }

            return;
        }
    }

    if (total > 0) {
        rc = dango__sc_batch_get(c, total, &batch);
        if (rc != 0) {
            for (size_t i = 0; i < n; i++) {
                items[i].rc = (items[i].rc == 0) ? rc : items[i].rc;
            }

            goto out;
        }
    }

    for (size_t i = 0; i < n; i++) {
        if (items[i].rc == 0) {
            items[i].req_first = submitted;
            items[i].req_n     = put_add_reqs(c, &items[i], reqs + submitted);
            submitted += items[i].req_n;
        }
    }

    if ((total > 0) && (dango_xfer_batch_submit(batch, reqs, total) != 0)) {
        /* Nothing was queued: queue key by key, isolating the one whose
         * segment went stale or away. */
        size_t at = 0;

        for (size_t i = 0; i < n; i++) {
            put_item_t *it = &items[i];

            if ((it->rc != 0) || (it->req_n == 0)) {
                continue;
            }

            rc = put_submit_one(c, batch, it, reqs + it->req_first);
            if (rc != 0) {
                it->rc = rc;
                continue;
            }

            /* Indices in the batch are in submission order. */
            memmove(reqs + at, reqs + it->req_first, it->req_n * sizeof(*reqs));
            it->req_first = at;
            at += it->req_n;
        }

        submitted = at;
    }

    for (size_t i = 0; i < n; i++) {
        if (items[i].rc == 0) {
            put_own_copies(c, &items[i]);
        }
    }

    if (submitted > 0) {
        rc = dango__sc_batch_wait(c, batch);
        for (size_t i = 0; (rc != 0) && (i < n); i++) {
            put_item_t *it = &items[i];

            if ((it->rc != 0) || (it->req_n == 0)) {
                continue;
            }

            for (size_t k = 0; k < it->req_n; k++) {
                dango_xfer_status_t st;

                dango_xfer_batch_status(batch, it->req_first + k, &st);
                if (st.state != DANGO_XFER_COMPLETED) {
                    it->rc = (st.error != 0) ? st.error : rc;
                    put_note_peer(c, it, reqs + it->req_first, k, it->rc);
                    break;
                }
            }
        }
    }

    for (size_t i = 0; i < n; i++) {
        for (unsigned j = 0; (items[i].req_n > 0) && (j < items[i].nrep); j++) {
            if (!items[i].segs[j]->own) {
                __atomic_sub_fetch(&items[i].segs[j]->inflight, 1,
                                   __ATOMIC_RELAXED);
            }
        }
    }

out:
    if (batch != NULL) {
        dango__sc_batch_put(c, batch);
    }

    if (reqs != stack_reqs) {
        dango_free(reqs);
    }
}

/* ---------- phase 3 ---------- */

/* Takes the master's answer for started item @it: @rc for the whole
 * call, else resp->status[*m] (*m advances either way). 1 if it ended. */
static int put_ended(put_item_t *it, int rc,
                     const Dango__Store__StatusList *resp, size_t *m)
{
    it->rc = (rc != 0) ? rc : resp->status[*m];
    (*m)++;
    if (it->rc == DANGO_EAGAIN) {
        /* An upsert still waiting for cached readers of the old value
         * when put_end() gave up: not ended, so revoked. */
        it->rc = DANGO_ETIMEDOUT;
        return 0;
    }

    it->started = 0; /* ended (or its end failed): no revoke */
    return it->rc == 0;
}

/* The commit words of @it's replicas, in @w[0..nrep). */
static void put_commit_words(const put_item_t *it, sc_commit_t *w)
{
    for (unsigned j = 0; j < it->nrep; j++) {
        w[j].seg   = it->segs[j];
        w[j].addr  = it->addrs[j] + offsetof(dango_store_rec_hdr_t, commit);
        w[j].value = it->put_id ^ DANGO_STORE_REC_COMMIT_XOR;
    }
}

/* The commit words of a durable end: in place before PutEnd, so that
 * nothing ends unless its words can be written. Those of one key fit in
 * the struct; more are allocated. */
typedef struct put_words {
    sc_commit_t *w;
    const char **keys; /* the key of each word */
    int         *ok;
    sc_commit_t  w1[DANGO_STORE_REPLICA_MAX];
    const char  *keys1[DANGO_STORE_REPLICA_MAX];
    int          ok1[DANGO_STORE_REPLICA_MAX];
} put_words_t;

static int put_words_init(put_words_t *pw, size_t n)
{
    if (n <= DANGO_STORE_REPLICA_MAX) {
        pw->w    = pw->w1;
        pw->keys = pw->keys1;
        pw->ok   = pw->ok1;
        return 0;
    }

    pw->w    = dango_malloc(n * sizeof(*pw->w), "store_commit");
    pw->keys = dango_malloc(n * sizeof(*pw->keys), "store_commit");
    pw->ok   = dango_malloc(n * sizeof(*pw->ok), "store_commit");
    if ((pw->w == NULL) || (pw->keys == NULL) || (pw->ok == NULL)) {
        return DANGO_ENOMEM;
    }

    return 0;
}

static void put_words_free(put_words_t *pw)
{
    if (pw->w != pw->w1) {
        dango_free(pw->w);
        dango_free(pw->keys);
        dango_free(pw->ok);
    }
}

/*
 * The end of a put whose commit words must be durable before it returns
 * (HA mode or STORE_SYNC_COMMIT): every word of the call is written from
 * this thread and acknowledged by its node, so an acknowledged put
 * survives the death of the writer and the master as long as one replica
 * lives (the node reports the record on remount). A key none of whose
 * words could be written fails with DANGO_EREPLICA_UNAVAIL: its nodes are
 * unreachable, and no rebuild would find it. A replica whose word could
 * not be written is reported to the master (dropped), so that the
 * replicas it lists are the durable ones. @pw has room for the words of
 * every item PutEnd was sent for.
 */
static void put_end_durable(dango_store_client_t *c, put_item_t *items,
                            size_t n, int rc, Dango__Store__StatusList *resp,
                            const put_words_t *pw)
{
    size_t m = 0, nw = 0;

    for (size_t i = 0; i < n; i++) {
        put_item_t *it = &items[i];

        if (!it->started || (it->rc != 0) || !put_ended(it, rc, resp, &m)) {
            continue;
        }

        it->ended = 1;
        put_commit_words(it, &pw->w[nw]);
        for (unsigned j = 0; j < it->nrep; j++) {
            pw->keys[nw++] = it->key;
        }
    }

    if (nw == 0) {
        return;
    }

    dango__sc_commit_durable(c, pw->w, pw->keys, nw, pw->ok);

    /* The items that ended, in the order of their words: each needs one
     * durable word. */
    nw = 0;
    for (size_t i = 0; i < n; i++) {
        put_item_t *it  = &items[i];
        int         any = 0;

        if (!it->ended) {
            continue;
        }

        for (unsigned j = 0; j < it->nrep; j++) {
            any |= pw->ok[nw++];
        }

        if (!any) {
            dango_warn("store client %s: put of %s ended but no commit word "
                       "reached a replica",
                       c->name, it->key);
            it->rc = DANGO_EREPLICA_UNAVAIL;
        }
    }
}

/*
 * An upsert ends only once no client reads the old value through a cached
 * location: the master answers DANGO_EAGAIN and a wait. Sends PutEnd
 * again for those keys (compacting @req's arrays) until none is left or
 * STORE_RPC_TIMEOUT has passed, and writes the answers into @resp.
 */
static void put_end_again(dango_store_client_t          *c,
                          const Dango__Store__PutEndReq *req,
                          Dango__Store__StatusList      *resp)
{
    Dango__Store__PutEndReq r        = *req;
    uint64_t                deadline = dango_time_ns() + c->cfg.rpc_timeout;
    size_t                 *at       = NULL;
    size_t                  n        = resp->n_status;

    for (;;) {
        Dango__Store__StatusList *r2 = NULL;
        size_t                    k  = 0;
        int                       rc;

        for (size_t j = 0; j < n; j++) {
            k += resp->status[j] == DANGO_EAGAIN;
        }
        if ((k == 0) || (dango__sc_again_wait(resp->retry_ms, deadline) != 0)) {
            break;
        }

        if (at == NULL) {
            at = dango_malloc(
                n * (sizeof(*at) + sizeof(*r.keys) + sizeof(*r.put_ids)),
                "store_end_again");
            if (at == NULL) {
                break; /* left to the revoke */
            }
            r.put_ids = (uint64_t *)(at + n);
            r.keys    = (char **)(r.put_ids + n);
        }

        k = 0;
        for (size_t j = 0; j < n; j++) {
            if (resp->status[j] == DANGO_EAGAIN) {
                at[k]        = j;
                r.keys[k]    = req->keys[j];
                r.put_ids[k] = req->put_ids[j];
                k++;
            }
        }

        r.n_keys = r.n_put_ids = k;
        rc = dango__sc_call(c, DANGO_STORE_M_PUT_END, &r.base,
                            &dango__store__status_list__descriptor,
                            (ProtobufCMessage **)&r2, 0);
        if ((rc == 0) && (r2->n_status != k)) {
            rc = DANGO_EPROTO;
        }
        if (rc == 0) {
            for (size_t q = 0; q < k; q++) {
                resp->status[at[q]] = r2->status[q];
            }
            resp->retry_ms = r2->retry_ms;
        }

        if (r2 != NULL) {
            protobuf_c_message_free_unpacked(&r2->base, NULL);
        }
        if (rc != 0) {
            break; /* the keys still waiting are revoked */
        }
    }

    dango_free(at);
}

/*
 * Takes PutEnd's answer (@rc for the whole call, else @resp) for the
 * started items without an error: the commit words of those that ended
 * are written (@durable: from this thread, acknowledged, into @pw) or
 * queued.
 */
static void put_end_words(dango_store_client_t *c, put_item_t *items, size_t n,
                          int rc, Dango__Store__StatusList *resp,
                          const put_words_t *pw, int durable)
{
    size_t m = 0;

    if (durable) {
        put_end_durable(c, items, n, rc, resp, pw);
        return;
    }

    for (size_t i = 0; i < n; i++) {
        put_item_t *it = &items[i];
        sc_commit_t w[DANGO_STORE_REPLICA_MAX];

        if (!it->started || (it->rc != 0)) {
            continue;
        }

        if (!put_ended(it, rc, resp, &m)) {
            continue;
        }

        put_commit_words(it, w);
        dango__sc_commit_queue(c, w, it->nrep);
    }
}

/*
 * PutEnd for the items without an error (@revoke 0), or PutRevoke for the
 * started items with one (@revoke 1). Everything the end needs is
 * allocated before the request goes: an item the master ends must get its
 * commit words, so when an allocation fails nothing is ended and the items
 * take DANGO_ENOMEM (the revoke that follows frees them).
 */
static int put_end(dango_store_client_t *c, put_item_t *items, size_t n,
                   int revoke)
{
    Dango__Store__PutEndReq   req  = DANGO__STORE__PUT_END_REQ__INIT;
    Dango__Store__StatusList *resp = NULL;
    Dango__Store__ClientId    id   = DANGO__STORE__CLIENT_ID__INIT;
    char                     *k1[1];
    uint64_t                  p1[1];
    char                    **keys = k1;
    uint64_t                 *pids = p1;
    put_words_t               pw;
    size_t                    m  = 0;
    size_t                    nw = 0;
    int                       rc = 0;
    int                       durable;

    durable = !revoke && dango__sc_commit_durable_mode(c);
    for (size_t i = 0; i < n; i++) {
        if (items[i].started && ((items[i].rc != 0) == revoke)) {
            m++;
            nw += items[i].nrep;
        }
    }

    if (m == 0) {
        return 0;
    }

    if (m > 1) {
        keys = dango_malloc(m * sizeof(*keys), "store_end_keys");
        pids = dango_malloc(m * sizeof(*pids), "store_end_ids");
        if ((keys == NULL) || (pids == NULL)) {
            rc = DANGO_ENOMEM;
        }
    }

    pw.w = pw.w1; /* nothing to free yet */
    if ((rc == 0) && durable) {
        rc = put_words_init(&pw, nw);
    }

    if (rc != 0) {
        for (size_t i = 0; (i < n) && !revoke; i++) {
            if (items[i].started && (items[i].rc == 0)) {
                items[i].rc = rc;
            }
        }

        goto out;
    }

    m = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].started && ((items[i].rc != 0) == revoke)) {
            keys[m] = (char *)items[i].key;
            pids[m] = items[i].put_id;
            m++;
        }
    }

    id.hi         = c->id_hi;
    id.lo         = c->id_lo;
    req.client    = &id;
    req.n_keys    = m;
    req.keys      = keys;
    req.n_put_ids = m;
    req.put_ids   = pids;
    req.revoke    = revoke != 0;
    rc            = dango__sc_call(c, DANGO_STORE_M_PUT_END, &req.base,
                                   &dango__store__status_list__descriptor,
                                   (ProtobufCMessage **)&resp, 0);
    if ((rc == 0) && (resp->n_status != m)) {
        rc = DANGO_EPROTO;
    }

    if (!revoke && (rc == 0)) {
        put_end_again(c, &req, resp);
    }

    if (revoke) {
        if (rc != 0) {
            dango_debug("store client %s: revoke failed: %s", c->name,
                        dango_strerror(rc));
        }

        goto out;
    }

    put_end_words(c, items, n, rc, resp, &pw, durable);

out:
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }

    if (keys != k1) {
        dango_free(keys);
        dango_free(pids);
    }

    put_words_free(&pw);
    return rc;
}

/* ---------- one round trip: slots ---------- */

/*
 * PutBind of @it (NULL: of no key), asking for @want slots of @rec_len
 * bytes and giving back some of the slots waiting for it. The reply in
 * *@resp_p (free it) when 0. A call whose connection was lost after it
 * went is asked once more without the request for slots, which would
 * otherwise be granted twice (a bind is answered 0 when it already took).
 */
static int put_bind(dango_store_client_t *c, put_item_t *it,
                    Dango__Store__ReplicateConfig *wire, uint32_t want,
                    uint64_t rec_len, Dango__Store__PutBindResp **resp_p)
{
    Dango__Store__PutBindReq req   = DANGO__STORE__PUT_BIND_REQ__INIT;
    Dango__Store__ClientId   id    = DANGO__STORE__CLIENT_ID__INIT;
    Dango__Store__SlotReq    slots = DANGO__STORE__SLOT_REQ__INIT;
    char                    *key;
    uint64_t                 size;
    uint64_t                 release[SC_SLOT_MAX];
    int                      rc;

    id.hi      = c->id_hi;
    id.lo      = c->id_lo;
    req.client = &id;
    req.config = wire;
    if (it != NULL) {
        key             = (char *)it->key;
        req.n_keys      = 1;
        req.keys        = &key;
        req.n_put_ids   = 1;
        req.put_ids     = &it->put_id;
        size            = it->len;
        req.n_sizes     = 1;
        req.sizes       = &size;
        req.n_checksums = 1;
        req.checksums   = &it->checksum;
    }
    if (want > 0) {
        slots.count   = want;
        slots.rec_len = rec_len;
        req.slots     = &slots;
    }
    req.n_release = dango__sc_slot_take_free(c, release, SC_SLOT_MAX);
    req.release   = release;

    *resp_p = NULL;
    rc      = dango__sc_call(c, DANGO_STORE_M_PUT_BIND, &req.base,
                             &dango__store__put_bind_resp__descriptor,
                             (ProtobufCMessage **)resp_p, 0);
    if (rc == DANGO_ECONNRESET) {
        req.slots = NULL;
        rc        = dango__sc_call(c, DANGO_STORE_M_PUT_BIND, &req.base,
                                   &dango__store__put_bind_resp__descriptor,
                                   (ProtobufCMessage **)resp_p, 0);
    }

    if ((rc == 0) && ((*resp_p)->n_status != req.n_keys)) {
        rc = DANGO_EPROTO;
    }
    if ((rc != 0) && (*resp_p != NULL)) {
        protobuf_c_message_free_unpacked(&(*resp_p)->base, NULL);
        *resp_p = NULL;
    }

    return rc;
}

/* Hands the slots granted in @resp (NULL: none) to the pool. */
static void put_slots_add(dango_store_client_t *c, uint64_t rec_len,
                          unsigned replica_num, uint64_t epoch,
                          const Dango__Store__PutBindResp *resp, uint64_t t0)
{
    if (resp == NULL) {
        dango__sc_slot_add(c, rec_len, replica_num, epoch, NULL, 0, t0, 0);
        return;
    }

    dango__sc_slot_add(c, rec_len, replica_num, epoch, resp->slots,
                       resp->n_slots, t0, resp->slot_ms);
}

/*
 * A put of one key through a slot (store_client_slot.c): the record is
 * written into a region the master reserved ahead, then PutBind makes it
 * the key's value, one round trip in all. Returns 1 when the put is done
 * (it->rc says how), 0 when it is to go the two round trip way: no slot to
 * be had, or the master does not know the slot any more (it restarted, or
 * the slot's segment went away) and nothing was committed.
 */
static int put_slotted(dango_store_client_t *c, put_item_t *it,
                       Dango__Store__ReplicateConfig *wire)
{
    Dango__Store__PutBindResp *resp = NULL;
    uint64_t                   rec  = it->voff + it->len;
    unsigned                   rn   = wire->replica_num;
    sc_slot_t                  s;
    uint32_t                   want;
    uint64_t                   epoch, t0;
    int                        rc;

    if (!dango__sc_slot_take(c, rec, rn, &s, &want, &epoch)) {
        if (want == 0) {
            return 0;
        }

        /* None pooled yet: ask (one round trip, as PutStart would be). */
        t0 = dango_time_ns();
        rc = put_bind(c, NULL, wire, want, rec, &resp);
        put_slots_add(c, rec, rn, epoch, resp, t0);
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            resp = NULL;
        }

        if (!dango__sc_slot_take(c, rec, rn, &s, &want, &epoch)) {
            if (want > 0) {
                put_slots_add(c, rec, rn, epoch, NULL, 0);
            }
            return 0;
        }
    }

    it->put_id = s.put_id;
    it->nrep   = s.nrep;
    memcpy(it->segs, s.segs, sizeof(it->segs));
    memcpy(it->addrs, s.addrs, sizeof(it->addrs));
    dango_store_rec_format(it->hdr.ptr, it->key, (uint16_t)it->klen, it->len,
                           it->checksum, it->put_id);
    put_transfer(c, it, 1);
    if (it->rc != 0) {
        /* Part written: not for another key. */
        dango__sc_slot_return(c, rec, rn, &s, 0);
        if (want > 0) {
            put_slots_add(c, rec, rn, epoch, NULL, 0);
        }
        return 1;
    }

    t0 = dango_time_ns();
    rc = put_bind(c, it, wire, want, rec, &resp);
    if (want > 0) {
        put_slots_add(c, rec, rn, epoch, resp, t0);
    }
    it->rc = (rc != 0) ? rc : resp->status[0];
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }

    switch (it->rc) {
    case 0: {
        int32_t                  ok = 0;
        Dango__Store__StatusList sl = DANGO__STORE__STATUS_LIST__INIT;
        put_words_t              pw;

        sl.n_status = 1;
        sl.status   = &ok;
        it->started = 1;
        put_words_init(&pw, it->nrep); /* fits in the struct */
        put_end_words(c, it, 1, 0, &sl, &pw, dango__sc_commit_durable_mode(c));
        put_words_free(&pw);
        __atomic_add_fetch(&c->slot_puts, 1, __ATOMIC_RELAXED);
        return 1;
    }
    case DANGO_EOBJ_EXISTS:
        /* Refused before anything changed: the slot serves another key. */
        dango__sc_slot_return(c, rec, rn, &s, 1);
        return 1;
    case DANGO_EINVALID_WRITE:
        /* The master restarted, or the slot's segment went: the pool is
         * given back (a master ignores slots it does not know). */
        dango_debug("store client %s: slot %" PRIu64 " of %s unknown to the "
                    "master, slots given back",
                    c->name, s.put_id, it->key);
        dango__sc_slot_forget_all(c);
        __atomic_add_fetch(&c->slot_fallbacks, 1, __ATOMIC_RELAXED);
        it->rc = 0;
        return 0;
    default:
        /* Whether it took may be unknown (the call failed): a give-back
         * of a slot that was bound is ignored by the master. */
        dango__sc_slot_return(c, rec, rn, &s, 0);
        return 1;
    }
}

/* ---------- entry ---------- */

int dango__sc_put_many(dango_store_client_t *c, size_t n,
                       const char *const *keys, const sc_vals_t *vals,
                       unsigned                              flags,
                       const dango_store_replicate_config_t *cfg, int *results)
{
    Dango__Store__ReplicateConfig wire;
    put_item_t                    one;
    put_item_t                   *items = &one;
    size_t                        valid = 0;
    int                           rc;

    rc = dango__sc_fill_config(c, cfg, &wire);
    if (rc != 0) {
        goto fail_all;
    }

    if (n > 1) {
        items = dango_calloc(n, sizeof(*items), "store_put_items");
        if (items == NULL) {
            rc = DANGO_ENOMEM;
            goto fail_all;
        }
    } else {
        memset(&one, 0, sizeof(one));
    }

    for (size_t i = 0; i < n; i++) {
        put_item_t *it = &items[i];

        it->key = keys[i];
        it->rc  = dango__sc_key_check(it->key, &it->klen);
        if (vals->parts == NULL) {
            it->one.base = (void *)vals->bufs[i];
            it->one.len  = vals->lens[i];
            it->parts    = &it->one;
            it->nparts   = 1;
        } else {
            it->parts  = vals->parts[i];
            it->nparts = vals->n_parts[i];
        }

        if ((it->rc == 0) && ((it->parts == NULL) || (it->nparts == 0) ||
                              (it->nparts > DANGO_STORE_PARTS_MAX))) {
            it->rc = DANGO_EINVAL;
        }

        for (size_t k = 0; (it->rc == 0) && (k < it->nparts); k++) {
            if ((it->parts[k].base == NULL) && (it->parts[k].len > 0)) {
                it->rc = DANGO_EINVAL;
            }

            it->len += it->parts[k].len;
        }

        if ((it->rc == 0) && (it->len == 0)) {
            it->rc = DANGO_EINVAL;
        }

        if (it->rc == 0) {
            it->rc = put_prepare(c, it, flags);
        }

        valid += it->rc == 0;
    }

    rc = 0;
    if ((n == 1) && (valid == 1) && !(flags & SC_PUT_UPSERT) &&
        (wire.n_preferred == 0) &&
        dango__sc_slot_fits(c, items[0].voff + items[0].len) &&
        put_slotted(c, &items[0], &wire)) {
        valid = 0; /* done in one round trip */
    }

    if (valid > 0) {
        rc = put_start(c, items, n, valid, &wire, flags & SC_PUT_UPSERT);
        if (rc != 0) {
            for (size_t i = 0; i < n; i++) {
                items[i].rc = (items[i].rc == 0) ? rc : items[i].rc;
            }
        } else {
            put_transfer(c, items, n);
            put_end(c, items, n, 0);
            put_end(c, items, n, 1);
        }
    }

    /* Whatever happened, this client's next get of these keys asks. */
    dango__sc_loc_forget_keys(c, n, keys);
    for (size_t i = 0; i < n; i++) {
        dango__sc_buf_put(c, &items[i].hdr);
        dango__sc_buf_put(c, &items[i].user);
        results[i] = items[i].rc;
    }

    if (items != &one) {
        dango_free(items);
    }

    return rc;

fail_all:
    for (size_t i = 0; i < n; i++) {
        results[i] = rc;
    }

    return rc;
}

/* ---------- public ---------- */

static int put_one(dango_store_client_t *c, const char *key, const void *value,
                   size_t len, unsigned flags,
                   const dango_store_replicate_config_t *cfg)
{
    sc_vals_t vals = {.bufs = &value, .lens = &len};
    int       res;

    if (c == NULL) {
        return DANGO_EINVAL;
    }

    dango__sc_put_many(c, 1, &key, &vals, flags, cfg, &res);
    return res;
}

int dango_store_put(dango_store_client_t *c, const char *key, const void *value,
                    size_t len, const dango_store_replicate_config_t *cfg)
{
    return put_one(c, key, value, len, 0, cfg);
}

int dango_store_upsert(dango_store_client_t *c, const char *key,
                       const void *value, size_t len,
                       const dango_store_replicate_config_t *cfg)
{
    return put_one(c, key, value, len, SC_PUT_UPSERT, cfg);
}

int dango_store_put_from(dango_store_client_t *c, const char *key,
                         const void *buf, size_t len,
                         const dango_store_replicate_config_t *cfg)
{
    return put_one(c, key, buf, len, SC_PUT_REGISTERED, cfg);
}

int dango_store_batch_put(dango_store_client_t *c, size_t n,
                          const char *const *keys, const void *const *bufs,
                          const size_t *lens, int registered,
                          const dango_store_replicate_config_t *cfg,
                          int                                  *results)
{
    sc_vals_t vals = {.bufs = bufs, .lens = lens};

    if ((c == NULL) || (n == 0) || (n > DANGO_STORE_BATCH_MAX) ||
        (keys == NULL) || (bufs == NULL) || (lens == NULL) ||
        (results == NULL)) {
        return DANGO_EINVAL;
    }

    return dango__sc_put_many(c, n, keys, &vals,
                              registered ? SC_PUT_REGISTERED : 0, cfg, results);
}

int dango_store_batch_put_parts(dango_store_client_t *c, size_t n,
                                const char *const              *keys,
                                const dango_store_iov_t *const *parts,
                                const size_t *n_parts, unsigned flags,
                                const dango_store_replicate_config_t *cfg,
                                int                                  *results)
{
    sc_vals_t vals = {.parts = parts, .n_parts = n_parts};
    unsigned  f    = 0;

    if ((c == NULL) || (n == 0) || (n > DANGO_STORE_BATCH_MAX) ||
        (keys == NULL) || (parts == NULL) || (n_parts == NULL) ||
        (results == NULL) ||
        ((flags & ~(unsigned)(DANGO_STORE_REGISTERED | DANGO_STORE_UPSERT)) !=
         0)) {
        return DANGO_EINVAL;
    }

    f |= (flags & DANGO_STORE_REGISTERED) ? SC_PUT_REGISTERED : 0;
    f |= (flags & DANGO_STORE_UPSERT) ? SC_PUT_UPSERT : 0;
    return dango__sc_put_many(c, n, keys, &vals, f, cfg, results);
}
