/*
 * dango_store_batch_replicate(): one more replica of committed objects on
 * a node the caller names (docs/design/store.md, "Copies").
 *
 * Per call: one CopyStart for all keys (the master allocates the regions
 * on the target node and leases the objects), then per key the record is
 * read whole from a source replica into registered memory, checked
 * (header against what the master said, value against its xxh3), written
 * to the new region with its commit word cleared, and the successes are
 * ended with one CopyEnd, the failures revoked with another. Only then are
 * the new replicas' commit words written, exactly as a put does after
 * PutEnd: queued for the committer or, when commit words are durable (HA
 * mode or STORE_SYNC_COMMIT), written and acknowledged before the call
 * returns; a copy whose word was not is reported bad (the master drops the
 * new replica) and fails with DANGO_EREPLICA_UNAVAIL. A record that fails
 * its checks is reported bad and the next source is tried; a wrong byte is
 * never copied.
 */
#include "store/store_client_int.h"

#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "common/copy.h"
#include "common/hash.h"
#include "store/store_proto.h"

/* Moves @len bytes between @local and the record at @addr of @seg. */
static int copy_io(dango_store_client_t *c, sc_seg_t *seg, dango_xfer_op_t op,
                   void *local, uint64_t addr, uint64_t len)
{
    dango_xfer_batch_t *batch;
    dango_xfer_req_t    req;
    int                 rc;

    if (seg->own) {
        if (!dango__sc_own_range_ok(c, addr, len)) {
            dango_error("store client %s: copy got %#llx+%llu outside the own "
                        "segment",
                        c->name, (unsigned long long)addr,
                        (unsigned long long)len);
            return DANGO_EPROTO;
        }

        if (op == DANGO_XFER_OP_READ) {
            memcpy(local, (const void *)(uintptr_t)addr, len);
        } else {
            dango_copy_stream((void *)(uintptr_t)addr, local, len);
        }
        return 0;
    }

    rc = dango__sc_batch_get(c, 1, &batch);
    if (rc != 0) {
        return rc;
    }

    req.op          = op;
    req.local_addr  = local;
    req.segment     = dango__sc_seg_id(c, seg);
    req.remote_addr = addr;
    req.length      = len;
    rc              = dango_xfer_batch_submit(batch, &req, 1);
    if (rc == 0) {
        rc = dango__sc_batch_wait(c, batch);
    }
    dango__sc_batch_put(c, batch);
    return rc;
}

/* Reads the record of @it from its first good source into @rec. */
static int copy_read(dango_store_client_t *c, const char *key, size_t klen,
                     const Dango__Store__CopyStartItem *it, char *rec)
{
    uint64_t voff = dango_store_rec_value_off(klen);
    int      rc   = DANGO_EREPLICA_UNAVAIL;

    for (size_t i = 0; i < it->n_sources; i++) {
        const Dango__Store__Replica *r = it->sources[i];
        sc_seg_t                    *seg;

        if ((r->segment == NULL) || (r->length != it->target->length)) {
            continue;
        }
        if ((dango__sc_seg_get(c, r->segment, &seg) != 0) ||
            (copy_io(c, seg, DANGO_XFER_OP_READ, rec, r->addr, r->length) !=
             0)) {
            continue;
        }

        if ((dango_store_rec_check(rec, key, (uint16_t)klen, it->size,
                                   it->checksum, it->put_id) != 0) ||
            (dango_hash64(rec + voff, it->size) != it->checksum)) {
            dango_warn("store: copy of '%s': replica on %s at %#llx is "
                       "corrupt; trying another",
                       key, r->segment, (unsigned long long)r->addr);
            dango__sc_report_bad(c, key, it->put_id, r->segment, r->addr,
                                 DANGO_ECORRUPT);
            rc = DANGO_ECORRUPT;
            continue;
        }
        return 0;
    }
    return rc;
}

/* Copies one started item; 0 when the new region holds the record. */
static int copy_one(dango_store_client_t *c, const char *key,
                    const Dango__Store__CopyStartItem *it, sc_seg_t **tseg_p)
{
    size_t   klen = strlen(key);
    sc_buf_t b;
    uint64_t zero = 0;
    int      rc;

    if ((it->target == NULL) || (it->target->segment == NULL) ||
        (it->size >= it->target->length) ||
        (it->target->length != dango_store_rec_size(klen, it->size))) {
        return DANGO_EPROTO;
    }

    rc = dango__sc_buf_get(c, it->target->length, &b);
    if (rc != 0) {
        return rc;
    }

    rc = copy_read(c, key, klen, it, b.ptr);
    if (rc == 0) {
        memcpy((char *)b.ptr + offsetof(dango_store_rec_hdr_t, commit), &zero,
               sizeof(zero));
        rc = dango__sc_seg_get(c, it->target->segment, tseg_p);
    }
    if (rc == 0) {
        rc = copy_io(c, *tseg_p, DANGO_XFER_OP_WRITE, b.ptr, it->target->addr,
                     it->target->length);
    }

    dango__sc_buf_put(c, &b);
    return rc;
}

/* CopyEnd (or revoke) of the @n items picked by @idx; results per item
 * (@results may be NULL). */
static int copy_end(dango_store_client_t *c, const char *const *keys,
                    const Dango__Store__CopyStartResp *resp, const size_t *idx,
                    size_t n, int revoke, int *results)
{
    Dango__Store__CopyEndReq  req = DANGO__STORE__COPY_END_REQ__INIT;
    Dango__Store__ClientId    cid = DANGO__STORE__CLIENT_ID__INIT;
    Dango__Store__StatusList *st  = NULL;
    char                    **k;
    uint64_t                 *ids;
    int                       rc;

    if (n == 0) {
        return 0;
    }

    k   = dango_malloc(n * sizeof(*k), "store_copy_end");
    ids = dango_malloc(n * sizeof(*ids), "store_copy_end");
    if ((k == NULL) || (ids == NULL)) {
        dango_free(k);
        dango_free(ids);
        return DANGO_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        k[i]   = (char *)keys[idx[i]];
        ids[i] = resp->items[idx[i]]->copy_id;
    }

    cid.hi         = c->id_hi;
    cid.lo         = c->id_lo;
    req.client     = &cid;
    req.n_keys     = n;
    req.keys       = k;
    req.n_copy_ids = n;
    req.copy_ids   = ids;
    req.revoke     = revoke;
    rc             = dango__sc_call(c, DANGO_STORE_M_COPY_END, &req.base,
                                    &dango__store__status_list__descriptor,
                                    (ProtobufCMessage **)&st, 0);
    if ((rc == 0) && (st->n_status != n)) {
        rc = DANGO_EPROTO;
    }
    for (size_t i = 0; (rc == 0) && (results != NULL) && (i < n); i++) {
        results[idx[i]] = st->status[i];
    }

    if (st != NULL) {
        dango__store__status_list__free_unpacked(st, NULL);
    }
    dango_free(k);
    dango_free(ids);
    return rc;
}

int dango_store_batch_replicate(dango_store_client_t *c, size_t n,
                                const char *const *keys, const char *target,
                                int *results)
{
    Dango__Store__CopyStartReq   req   = DANGO__STORE__COPY_START_REQ__INIT;
    Dango__Store__ClientId       cid   = DANGO__STORE__CLIENT_ID__INIT;
    Dango__Store__CopyStartResp *resp  = NULL;
    sc_seg_t                   **tsegs = NULL;
    size_t                      *ok = NULL, *bad = NULL, nok = 0, nbad = 0;
    char                       **good = NULL;
    size_t                      *map = NULL, ngood = 0;
    int                         *sub   = NULL;
    sc_commit_t                 *w     = NULL; /* commit words of the copies */
    const char                 **wkeys = NULL; /* durable only: their keys */
    int                         *wok   = NULL; /* durable only: written */
    size_t                       nw    = 0;
    int                          durable, rc;

    if ((c == NULL) || ((n > 0) && ((keys == NULL) || (results == NULL))) ||
        (target == NULL) || (target[0] == '\0') ||
        (n > DANGO_STORE_BATCH_MAX)) {
        return DANGO_EINVAL;
    }
    if (n == 0) {
        return 0;
    }

    /* Fixed for the client's life: HA mode or STORE_SYNC_COMMIT. */
    durable = dango__sc_commit_durable_mode(c);

    good  = dango_malloc(n * sizeof(*good), "store_copy");
    map   = dango_malloc(n * sizeof(*map), "store_copy");
    ok    = dango_malloc(n * sizeof(*ok), "store_copy");
    bad   = dango_malloc(n * sizeof(*bad), "store_copy");
    sub   = dango_malloc(n * sizeof(*sub), "store_copy");
    tsegs = dango_calloc(n, sizeof(*tsegs), "store_copy");
    w     = dango_malloc(n * sizeof(*w), "store_copy");
    /* Taken before anything is copied, as a put takes them before PutEnd:
     * no copy is ended unless its word can be written. */
    if (durable) {
        wkeys = dango_malloc(n * sizeof(*wkeys), "store_copy");
        wok   = dango_malloc(n * sizeof(*wok), "store_copy");
    }
    if ((good == NULL) || (map == NULL) || (ok == NULL) || (bad == NULL) ||
        (sub == NULL) || (tsegs == NULL) || (w == NULL) ||
        (durable && ((wkeys == NULL) || (wok == NULL)))) {
        for (size_t i = 0; i < n; i++) {
            results[i] = DANGO_ENOMEM;
        }
        rc = DANGO_ENOMEM;
        goto out;
    }

    for (size_t i = 0; i < n; i++) {
        size_t len;

        results[i] = dango__sc_key_check(keys[i], &len);
        if (results[i] == 0) {
            map[ngood]    = i;
            good[ngood++] = (char *)keys[i];
        }
    }
    if (ngood == 0) {
        rc = 0;
        goto out;
    }

    cid.hi     = c->id_hi;
    cid.lo     = c->id_lo;
    req.client = &cid;
    req.n_keys = ngood;
    req.keys   = good;
    req.target = (char *)target;
    rc         = dango__sc_call(c, DANGO_STORE_M_COPY_START, &req.base,
                                &dango__store__copy_start_resp__descriptor,
                                (ProtobufCMessage **)&resp, 0);
    if (rc != 0) {
        goto out;
    }
    if (resp->n_items != ngood) {
        rc = DANGO_EPROTO;
        goto out;
    }

    for (size_t j = 0; j < ngood; j++) {
        const Dango__Store__CopyStartItem *it = resp->items[j];

        sub[j] = it->status;
        if (it->status != 0) {
            continue;
        }
        sub[j] = copy_one(c, good[j], it, &tsegs[j]);
        if (sub[j] == 0) {
            ok[nok++] = j;
        } else {
            dango_debug("store: copy of '%s' to %s failed: %s", good[j], target,
                        dango_strerror(sub[j]));
            bad[nbad++] = j;
        }
    }

    /* Failed copies are revoked (best effort: unrevoked ones are freed by
     * the master after PUT_RELEASE_TIMEOUT); the caller sees why each
     * failed. */
    (void)copy_end(c, (const char *const *)good, resp, bad, nbad, 1, NULL);
    rc = copy_end(c, (const char *const *)good, resp, ok, nok, 0, sub);
    if (rc != 0) {
        goto out;
    }

    /* The commit words of the copies CopyEnd accepted (ok[] keeps those). */
    for (size_t i = 0; i < nok; i++) {
        const Dango__Store__CopyStartItem *it = resp->items[ok[i]];
        sc_commit_t                       *cw = &w[nw];

        if (sub[ok[i]] != 0) {
            continue;
        }
        cw->seg   = tsegs[ok[i]];
        cw->addr  = it->target->addr + offsetof(dango_store_rec_hdr_t, commit);
        cw->value = it->put_id ^ DANGO_STORE_REC_COMMIT_XOR;
        if (durable) {
            wkeys[nw] = good[ok[i]];
        }
        ok[nw++] = ok[i];
    }

    if (durable) {
        /* As a put: acknowledged before we return, or the new replica is
         * dropped (reported bad) and the copy fails. */
        dango__sc_commit_durable(c, w, wkeys, nw, wok);
        for (size_t k = 0; k < nw; k++) {
            sub[ok[k]] = wok[k] ? 0 : DANGO_EREPLICA_UNAVAIL;
        }
    } else {
        dango__sc_commit_queue(c, w, nw);
    }

    for (size_t j = 0; j < ngood; j++) {
        results[map[j]] = sub[j];
    }

out:
    if (rc != 0) {
        /* The call failed as a whole: no key counts as copied. */
        for (size_t j = 0; j < ngood; j++) {
            results[map[j]] = rc;
        }
    }
    if (resp != NULL) {
        dango__store__copy_start_resp__free_unpacked(resp, NULL);
    }
    dango_free(good);
    dango_free(map);
    dango_free(ok);
    dango_free(bad);
    dango_free(sub);
    dango_free(tsegs);
    dango_free(w);
    dango_free(wkeys);
    dango_free(wok);
    return rc;
}
