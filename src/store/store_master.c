/*
 * The embeddable store master (dango/store_master.h): one event-loop thread
 * that owns the master state, the RPC server that feeds it, and the timers
 * of the client monitor and the eviction tick; plus the optional admin HTTP
 * server (store_master_admin.c) and embedded metadata server.
 *
 * DESIGN
 * - Threading: the state (ms_state_t) is touched only on the loop thread.
 *   RPC handlers run there (the RPC server is loop-owned), so do the
 *   timers; the admin server's threads reach the state only through
 *   dango_loop_run_sync(). No lock is taken on any request path.
 * - A handler decodes the request (protobuf-c allocates while unpacking;
 *   that is the only allocation per request in the steady state), calls
 *   the state with the monotonic clock in ms, and packs the reply straight
 *   from the state's own strings and from a reused scratch buffer, then
 *   frees the request. A request that does not unpack is answered
 *   DANGO_EPROTO with a rate-limited log line; nothing a client sends can
 *   make the master crash or allocate without bound (batches are capped
 *   at DANGO_STORE_BATCH_MAX keys, lists at MS_LIST_MAX).
 * - Metrics are plain counters on the loop (ms_op_stats_t per operation and
 *   the state's ms_counters_t); /metrics renders them on the loop.
 */
#include "store/store_master_int.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log_limit.h"
#include "common/time.h"
#include "net/auth.h"
#include "dango_store.pb-c.h"

/* Most segments in one Remount. */
#define MS_REMOUNT_MAX 4096

const char *const dango__store_master_op_names[MS_OP_MAX] = {
    [MS_OP_SERVICE_READY] = "service_ready",
    [MS_OP_PING]          = "ping",
    [MS_OP_MOUNT]         = "mount_segment",
    [MS_OP_REMOUNT]       = "remount_segment",
    [MS_OP_UNMOUNT]       = "unmount_segment",
    [MS_OP_PUT_START]     = "put_start",
    [MS_OP_UPSERT_START]  = "upsert_start",
    [MS_OP_PUT_END]       = "put_end",
    [MS_OP_PUT_REVOKE]    = "put_revoke",
    [MS_OP_PUT_BIND]      = "put_bind",
    [MS_OP_GET]           = "get_replica_list",
    [MS_OP_EXIST]         = "exist_key",
    [MS_OP_REMOVE]        = "remove",
    [MS_OP_REMOVE_MATCH]  = "remove_match",
    [MS_OP_REPORT_BAD]    = "report_bad",
    [MS_OP_LIST]          = "list",
    [MS_OP_POOL_STAT]     = "pool_stat",
    [MS_OP_COPY_START]    = "copy_start",
    [MS_OP_COPY_END]      = "copy_end",
    [MS_OP_COPY_REVOKE]   = "copy_revoke",
    [MS_OP_KV_EVENTS]     = "kv_events",
    [MS_OP_UNKNOWN]       = "unknown_method",
};

static dango_log_limit_t ms_rpc_log_limit = DANGO_LOG_LIMIT_INIT(5);

/* Bump allocation out of the state's scratch for one reply. */
typedef struct ms_bump {
    char  *base;
    size_t off;
    size_t cap;
} ms_bump_t;

/* ---------- private functions ---------- */

static uint64_t now_ms(void)
{
    return dango_time_ns() / DANGO_NSEC_PER_MSEC;
}

static uint64_t ns_to_ms(uint64_t ns)
{
    uint64_t ms = ns / DANGO_NSEC_PER_MSEC;

    return (ms == 0) ? 1 : ms;
}

static size_t bump_size(size_t size)
{
    return (size + 15) & ~(size_t)15;
}

/* Reserves @total bytes of scratch (sum of bump_size of every piece). */
static int bump_init(ms_bump_t *b, ms_state_t *st, size_t total)
{
    b->base = dango__store_ms_scratch(st, total);
    b->off  = 0;
    b->cap  = total;
    return (b->base != NULL) ? 0 : DANGO_ENOMEM;
}

static void *bump(ms_bump_t *b, size_t size)
{
    void *p = b->base + b->off;

    b->off += bump_size(size);
    return p;
}

static ms_cid_t cid_of(const Dango__Store__ClientId *c)
{
    ms_cid_t id = {c->hi, c->lo};

    return id;
}

static void keys_of(ms_key_t *out, char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[i].s   = keys[i];
        out[i].len = strlen(keys[i]);
    }
}

/*
 * The scratch of one keyed batch call, carved from the state's scratch:
 * the keys, a status per key and, for replies that list replicas, a state
 * pointer per key (version or object), reply items of @item_size bytes and
 * their pointers, and room for every key's replicas.
 */
typedef struct ms_batch {
    ms_key_t *keys;
    int      *status;
    union {
        ms_ver_t **vers;
        ms_obj_t **objs;
    };
    void                   *items;
    void                  **itemp;
    Dango__Store__Replica  *reps;
    Dango__Store__Replica **repp;
} ms_batch_t;

static int batch_begin_items(ms_state_t *st, char **keys, size_t n,
                             size_t nitems, size_t item_size, ms_batch_t *bt)
{
    size_t    nrep = (item_size != 0) ? nitems * DANGO_STORE_REPLICA_MAX : 0;
    size_t    nptr = (item_size != 0) ? DANGO_MAX(n, nitems) : 0;
    ms_bump_t b;
    int       rc;

    rc = bump_init(&b, st,
                   bump_size(n * sizeof(*bt->keys)) +
                       bump_size(n * sizeof(*bt->status)) +
                       2 * bump_size(nptr * sizeof(void *)) +
                       bump_size(nitems * item_size) +
                       bump_size(nrep * sizeof(*bt->reps)) +
                       bump_size(nrep * sizeof(*bt->repp)));
    if (rc != 0) {
        return rc;
    }

    bt->keys   = bump(&b, n * sizeof(*bt->keys));
    bt->status = bump(&b, n * sizeof(*bt->status));
    bt->vers   = bump(&b, nptr * sizeof(void *));
    bt->items  = bump(&b, nitems * item_size);
    bt->itemp  = bump(&b, nptr * sizeof(void *));
    bt->reps   = bump(&b, nrep * sizeof(*bt->reps));
    bt->repp   = bump(&b, nrep * sizeof(*bt->repp));
    keys_of(bt->keys, keys, n);
    return 0;
}

static int batch_begin(ms_state_t *st, char **keys, size_t n, size_t item_size,
                       ms_batch_t *bt)
{
    return batch_begin_items(st, keys, n, n, item_size, bt);
}

static int reply(dango_rpc_call_t *call, int rc, const ProtobufCMessage *msg)
{
    dango_rpc_reply_pb(call, rc, (rc == 0) ? msg : NULL);
    return rc;
}

static int malformed(dango_store_master_t *m, dango_rpc_call_t *call,
                     uint32_t method)
{
    m->malformed++;
    dango_error_limited(&ms_rpc_log_limit,
                        "master: request %u from %s does not unpack", method,
                        dango_rpc_call_peer(call));
    return reply(call, DANGO_EPROTO, NULL);
}

static void count_items(ms_op_stats_t *s, const int *status, size_t n,
                        int neg_only)
{
    s->items += n;
    for (size_t i = 0; i < n; i++) {
        s->failed_items += neg_only ? (status[i] < 0) : (status[i] != 0);
    }
}

static void seg_desc_of(ms_seg_desc_t *d, const Dango__Store__Segment *s)
{
    d->id_hi   = s->id_hi;
    d->id_lo   = s->id_lo;
    d->name    = s->name;
    d->base    = s->base_addr;
    d->size    = s->size;
    d->host_id = s->host_id;
}

/*
 * Describes the placed replicas of @v in reps[*nrep...] (pointers in
 * repp[*nrep...]), advancing *nrep; returns the start of its pointer list
 * and sets *count_p. reps/repp hold DANGO_STORE_REPLICA_MAX per item.
 */
static Dango__Store__Replica **replicas_of(const ms_ver_t         *v,
                                           Dango__Store__Replica  *reps,
                                           Dango__Store__Replica **repp,
                                           size_t *nrep, size_t *count_p)
{
    Dango__Store__Replica **first = &repp[*nrep];

    *count_p = 0;
    for (unsigned j = 0; j < v->nrep; j++) {
        const ms_rep_t        *r   = &v->rep[j];
        Dango__Store__Replica *out = &reps[*nrep];

        if (r->seg == NULL) {
            continue;
        }

        dango__store__replica__init(out);
        out->segment    = r->seg->name->name;
        out->addr       = ms_rep_addr(r);
        out->length     = v->rec_len;
        out->status     = r->status;
        out->host_id    = r->seg->host_id;
        out->seg_hi     = r->seg->id_hi;
        out->seg_lo     = r->seg->id_lo;
        repp[(*nrep)++] = out;
        (*count_p)++;
    }

    return first;
}

/* ----- handlers (each replies exactly once, returns the status) ----- */

static int rpc_service_ready(dango_store_master_t *m, dango_rpc_call_t *call)
{
    Dango__Store__ServiceReadyResp resp =
        DANGO__STORE__SERVICE_READY_RESP__INIT;

    resp.version      = (char *)dango_version_string();
    resp.view_version = m->view_version;
    return reply(call, 0, &resp.base);
}

static int rpc_ping(dango_store_master_t *m, dango_rpc_call_t *call,
                    const void *req, size_t len, uint64_t now)
{
    Dango__Store__PingResp resp = DANGO__STORE__PING_RESP__INIT;
    Dango__Store__PingReq *msg;
    ms_tomb_t             *tombs = NULL;
    Dango__Store__Tomb    *tm    = NULL;
    Dango__Store__Tomb   **tp    = NULL;
    size_t                 nt    = 0;
    int                    rc;

    msg = dango__store__ping_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_PING);
    }

    if (msg->client == NULL) {
        rc = DANGO_EINVAL;
    } else {
        rc = dango__store_ms_ping(m->st, cid_of(msg->client), now);
        if (rc == DANGO_ENEED_REMOUNT) {
            resp.status = rc;
            rc          = 0;
        }

        nt = dango__store_ms_tombs_take(m->st, cid_of(msg->client), &tombs);
    }

    if (nt > 0) {
        tm = dango_malloc(nt * sizeof(*tm), "master_ping_tombs");
        tp = dango_malloc(nt * sizeof(*tp), "master_ping_tombs");
        for (size_t i = 0; (tm != NULL) && (tp != NULL) && (i < nt); i++) {
            dango__store__tomb__init(&tm[i]);
            tm[i].addr   = tombs[i].addr;
            tm[i].put_id = tombs[i].put_id;
            tp[i]        = &tm[i];
        }

        if ((tm != NULL) && (tp != NULL)) {
            resp.n_tombs = nt;
            resp.tombs   = tp;
        }
    }

    resp.view_version = m->view_version;
    dango__store__ping_req__free_unpacked(msg, NULL);
    rc = reply(call, rc, &resp.base);
    dango_free(tombs);
    dango_free(tm);
    dango_free(tp);
    return rc;
}

static int rpc_mount(dango_store_master_t *m, dango_rpc_call_t *call,
                     const void *req, size_t len, uint64_t now)
{
    Dango__Store__MountReq *msg;
    ms_seg_desc_t           d;
    int                     rc = DANGO_EINVAL;

    msg = dango__store__mount_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_MOUNT);
    }

    if ((msg->client != NULL) && (msg->segment != NULL)) {
        seg_desc_of(&d, msg->segment);
        rc = dango__store_ms_mount(m->st, cid_of(msg->client), &d, now);
    }

    dango__store__mount_req__free_unpacked(msg, NULL);
    return reply(call, rc, NULL);
}

/* The records of a remount report, and whether more chunks follow. */
static void remount_records(dango_store_master_t           *m,
                            const Dango__Store__RemountReq *msg,
                            const ms_seg_desc_t *d, uint64_t now)
{
    ms_cid_t cid  = cid_of(msg->client);
    size_t   used = 0;

    for (size_t i = 0; i < msg->n_records; i++) {
        const Dango__Store__Record *rec = msg->records[i];
        ms_record_t r = {.key  = {(const char *)rec->key.data, rec->key.len},
                         .size = rec->size,
                         .checksum = rec->checksum,
                         .put_id   = rec->put_id,
                         .addr     = rec->addr};

        used += dango__store_ms_restore(m->st, cid, &r, now) == 0;
    }

    if (used > 0) {
        dango_debug("master: %zu of %zu reported objects taken back", used,
                    msg->n_records);
    }

    dango__store_ms_seg_recovering(m->st, cid, d, msg->n_segments, msg->more);
}

static int rpc_remount(dango_store_master_t *m, dango_rpc_call_t *call,
                       const void *req, size_t len, uint64_t now)
{
    Dango__Store__RemountReq *msg;
    ms_seg_desc_t            *d;
    int                       rc = DANGO_EINVAL;

    msg = dango__store__remount_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_REMOUNT);
    }

    if ((msg->client != NULL) && (msg->n_segments <= MS_REMOUNT_MAX)) {
        d  = dango__store_ms_scratch(m->st, (msg->n_segments + 1) * sizeof(*d));
        rc = DANGO_ENOMEM;
        if (d != NULL) {
            for (size_t i = 0; i < msg->n_segments; i++) {
                seg_desc_of(&d[i], msg->segments[i]);
            }
            rc = dango__store_ms_remount(m->st, cid_of(msg->client), d,
                                         msg->n_segments, now);
        }

        if (rc == 0) {
            remount_records(m, msg, d, now);
        }
        if ((rc == 0) && msg->disk_tier) {
            dango__store_ms_disk_expect(m->st, cid_of(msg->client), now);
        }
    }

    dango__store__remount_req__free_unpacked(msg, NULL);
    return reply(call, rc, NULL);
}

static int rpc_unmount(dango_store_master_t *m, dango_rpc_call_t *call,
                       const void *req, size_t len, uint64_t now)
{
    Dango__Store__UnmountReq *msg;
    int                       rc = DANGO_EINVAL;

    msg = dango__store__unmount_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_UNMOUNT);
    }

    if (msg->client != NULL) {
        rc = dango__store_ms_unmount(m->st, cid_of(msg->client), msg->id_hi,
                                     msg->id_lo, now);
    }

    dango__store__unmount_req__free_unpacked(msg, NULL);
    return reply(call, rc, NULL);
}

static void cfg_of(const Dango__Store__ReplicateConfig *w, ms_put_cfg_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    if (w != NULL) {
        cfg->replica_num     = w->replica_num;
        cfg->hard_pin        = w->hard_pin;
        cfg->soft_pin        = w->soft_pin;
        cfg->soft_pin_ttl_ms = w->soft_pin_ttl_ms;
        cfg->preferred       = (const char *const *)w->preferred;
        cfg->npreferred      = w->n_preferred;
    }
}

static int rpc_put_start(dango_store_master_t *m, dango_rpc_call_t *call,
                         const void *req, size_t len, uint64_t now,
                         ms_op_t *op_p)
{
    Dango__Store__PutStartResp  resp = DANGO__STORE__PUT_START_RESP__INIT;
    Dango__Store__PutStartReq  *msg;
    Dango__Store__PutStartItem *items;
    ms_put_cfg_t                cfg;
    ms_batch_t                  bt;
    size_t                      n;
    size_t                      nrep = 0;
    int                         rc;

    msg = dango__store__put_start_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_PUT_START);
    }

    *op_p = msg->upsert ? MS_OP_UPSERT_START : MS_OP_PUT_START;
    n     = msg->n_keys;
    if ((msg->client == NULL) || (n > DANGO_STORE_BATCH_MAX) ||
        (msg->n_sizes != n) ||
        ((msg->n_checksums != 0) && (msg->n_checksums != n))) {
        rc = DANGO_EINVAL;
        goto out;
    }

    cfg_of(msg->config, &cfg);
    cfg.retry = msg->retry;

    rc = batch_begin(m->st, msg->keys, n, sizeof(*items), &bt);
    if (rc != 0) {
        goto out;
    }

    rc = dango__store_ms_put_start(
        m->st, cid_of(msg->client), n, bt.keys, msg->sizes,
        (msg->n_checksums != 0) ? msg->checksums : NULL, &cfg, msg->upsert, now,
        bt.status, bt.vers);
    if (rc != 0) {
        goto out;
    }

    /* Disk tier: no room for any key, but offloads will make some. */
    if ((n > 0) && !m->disk_put_final) {
        size_t nospc = 0;

        for (size_t i = 0; i < n; i++) {
            nospc += bt.status[i] == DANGO_ENOSPC;
        }
        if ((nospc == n) &&
            dango__store_ms_disk_put_wait(m->st, call, req, len, now)) {
            dango__store__put_start_req__free_unpacked(msg, NULL);
            return 0;
        }
    }

    items = bt.items;
    for (size_t i = 0; i < n; i++) {
        ms_ver_t *v = bt.vers[i];

        dango__store__put_start_item__init(&items[i]);
        bt.itemp[i]     = &items[i];
        items[i].status = bt.status[i];
        if (v == NULL) {
            continue;
        }

        items[i].put_id = v->put_id;
        items[i].replicas =
            replicas_of(v, bt.reps, bt.repp, &nrep, &items[i].n_replicas);
    }

    count_items(&m->ops[*op_p], bt.status, n, 0);
    resp.n_items = n;
    resp.items   = (Dango__Store__PutStartItem **)bt.itemp;

out:
    rc = reply(call, rc, &resp.base);
    dango__store__put_start_req__free_unpacked(msg, NULL);
    return rc;
}

/* A PutStart that waited for offloads (store_master_disk.c), run again. */
static void put_start_retry(void *arg, dango_rpc_call_t *call, const void *req,
                            size_t len, uint64_t now, int final)
{
    dango_store_master_t *m  = arg;
    ms_op_t               op = MS_OP_PUT_START;

    if ((m->ha != NULL) && !dango__store_master_ha_serving(m)) {
        /* Deposed while it waited: its placement would be stale. */
        reply(call, DANGO_ENOT_LEADER, NULL);
        return;
    }

    m->disk_put_final = final;
    if (rpc_put_start(m, call, req, len, now, &op) != 0) {
        m->ops[op].failures++;
    }
    m->disk_put_final = 0;
}

static int rpc_put_end(dango_store_master_t *m, dango_rpc_call_t *call,
                       const void *req, size_t len, uint64_t now, ms_op_t *op_p)
{
    Dango__Store__StatusList resp = DANGO__STORE__STATUS_LIST__INIT;
    Dango__Store__PutEndReq *msg;
    ms_batch_t               bt;
    size_t                   n;
    int                      rc;

    msg = dango__store__put_end_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_PUT_END);
    }

    *op_p = msg->revoke ? MS_OP_PUT_REVOKE : MS_OP_PUT_END;
    n     = msg->n_keys;
    if ((msg->client == NULL) || (n > DANGO_STORE_BATCH_MAX) ||
        (msg->n_put_ids != n)) {
        rc = DANGO_EINVAL;
        goto out;
    }

    rc = batch_begin(m->st, msg->keys, n, 0, &bt);
    if (rc != 0) {
        goto out;
    }

    rc = dango__store_ms_put_end(m->st, cid_of(msg->client), n, bt.keys,
                                 msg->put_ids, msg->revoke, now, bt.status);
    /* Disk tier: a committed new value (an upsert) supersedes the disk copy
     * of the old one. */
    for (size_t i = 0; (rc == 0) && !msg->revoke && (i < n); i++) {
        if (bt.status[i] == 0) {
            dango__store_ms_disk_forget(m->st, bt.keys[i].s, bt.keys[i].len);
        }
    }
    if (rc == 0) {
        count_items(&m->ops[*op_p], bt.status, n, 0);
        resp.n_status = n;
        resp.status   = bt.status;
        resp.retry_ms = (uint32_t)DANGO_MIN(m->st->again_ms, UINT32_MAX);
    }

out:
    rc = reply(call, rc, &resp.base);
    dango__store__put_end_req__free_unpacked(msg, NULL);
    return rc;
}

/*
 * PutBind: gives back the released slots, binds the keys to their slots,
 * then grants the slots asked for (store_master_slot.c).
 */
static int rpc_put_bind(dango_store_master_t *m, dango_rpc_call_t *call,
                        const void *req, size_t len, uint64_t now)
{
    Dango__Store__PutBindResp   resp = DANGO__STORE__PUT_BIND_RESP__INIT;
    Dango__Store__PutBindReq   *msg;
    Dango__Store__PutStartItem *items;
    ms_client_t                *c;
    ms_put_cfg_t                cfg;
    ms_batch_t                  bt;
    size_t                      n, want = 0, granted = 0;
    size_t                      nrep = 0;
    int                         rc;

    msg = dango__store__put_bind_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_PUT_BIND);
    }

    n = msg->n_keys;
    if ((msg->client == NULL) || (n > DANGO_STORE_BATCH_MAX) ||
        (msg->n_put_ids != n) || (msg->n_sizes != n) ||
        (msg->n_checksums != n) || (msg->n_release > DANGO_STORE_BATCH_MAX)) {
        rc = DANGO_EINVAL;
        goto out;
    }

    if (msg->slots != NULL) {
        want = DANGO_MIN(msg->slots->count, (uint32_t)MS_SLOT_BATCH);
    }

    cfg_of(msg->config, &cfg);
    rc = batch_begin_items(m->st, msg->keys, n, want, sizeof(*items), &bt);
    if (rc != 0) {
        goto out;
    }

    dango__store_ms_slot_release(m->st, cid_of(msg->client), msg->n_release,
                                 msg->release, now);
    rc = dango__store_ms_put_bind(m->st, cid_of(msg->client), n, bt.keys,
                                  msg->put_ids, msg->sizes, msg->checksums,
                                  &cfg, now, bt.status);
    if (rc != 0) {
        goto out;
    }

    c = dango__store_ms_client_touch(m->st, cid_of(msg->client), now);
    if ((c != NULL) && (want > 0)) {
        granted = dango__store_ms_slot_grant(m->st, c, &cfg, want,
                                             msg->slots->rec_len, now, bt.vers);
    }

    items = bt.items;
    for (size_t i = 0; i < granted; i++) {
        ms_ver_t *v = bt.vers[i];

        dango__store__put_start_item__init(&items[i]);
        bt.itemp[i]     = &items[i];
        items[i].put_id = v->put_id;
        items[i].replicas =
            replicas_of(v, bt.reps, bt.repp, &nrep, &items[i].n_replicas);
    }

    count_items(&m->ops[MS_OP_PUT_BIND], bt.status, n, 0);
    resp.n_status = n;
    resp.status   = bt.status;
    resp.n_slots  = granted;
    resp.slots    = (Dango__Store__PutStartItem **)bt.itemp;
    resp.slot_ms  = (uint32_t)DANGO_MIN(m->st->p.put_discard_ms, UINT32_MAX);

out:
    rc = reply(call, rc, &resp.base);
    dango__store__put_bind_req__free_unpacked(msg, NULL);
    return rc;
}

static int rpc_get(dango_store_master_t *m, dango_rpc_call_t *call,
                   const void *req, size_t len, uint64_t now)
{
    Dango__Store__GetResp  resp = DANGO__STORE__GET_RESP__INIT;
    Dango__Store__KeysReq *msg;
    Dango__Store__GetItem *items;
    ms_batch_t             bt;
    size_t                 n;
    size_t                 nrep = 0;
    int                    rc;

    msg = dango__store__keys_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_GET_REPLICAS);
    }

    n = msg->n_keys;
    if (n > DANGO_STORE_BATCH_MAX) {
        rc = DANGO_EINVAL;
        goto out;
    }

    rc = batch_begin(m->st, msg->keys, n, sizeof(*items), &bt);
    if (rc != 0) {
        goto out;
    }

    rc = dango__store_ms_get(m->st, n, bt.keys, msg->no_lease, now, bt.status,
                             bt.objs);
    if (rc != 0) {
        goto out;
    }

    items = bt.items;
    for (size_t i = 0; i < n; i++) {
        ms_obj_t *o = bt.objs[i];
        ms_ver_t *v;

        dango__store__get_item__init(&items[i]);
        bt.itemp[i]     = &items[i];
        items[i].status = bt.status[i];
        if (o == NULL) {
            /* Disk tier: the reader loads it with DiskLoad. */
            items[i].on_disk =
                (bt.status[i] == DANGO_ENO_OBJECT) &&
                dango__store_ms_disk_info(m->st, bt.keys[i].s, bt.keys[i].len,
                                          &items[i].size, &items[i].checksum,
                                          &items[i].put_id);
            continue;
        }

        v                 = o->cur;
        items[i].size     = v->size;
        items[i].checksum = v->checksum;
        items[i].put_id   = v->put_id;
        items[i].lease_ms =
            msg->no_lease ? 0 : ms_client_window(m->st->p.lease_ttl_ms);
        items[i].hard_pin         = o->hard_pin;
        items[i].soft_pin_ms_left = ms_ms_left(o->soft_pin_timeout, now);
        items[i].lease_ms_left    = ms_ms_left(o->lease_timeout, now);
        items[i].replicas =
            replicas_of(v, bt.reps, bt.repp, &nrep, &items[i].n_replicas);
        if (!msg->no_lease) {
            uint64_t c = dango__store_ms_cache_grant(m->st, o, now);

            /* 1 ms: less than the master's rounding, so none. */
            items[i].cache_ms = (uint32_t)((c > 1) ? c - 1 : 0);
        }
    }

    count_items(&m->ops[MS_OP_GET], bt.status, n, 0);
    resp.n_items = n;
    resp.items   = (Dango__Store__GetItem **)bt.itemp;

out:
    rc = reply(call, rc, &resp.base);
    dango__store__keys_req__free_unpacked(msg, NULL);
    return rc;
}

/* Exist and Remove: KeysReq in, StatusList out. */
static int rpc_keys_status(dango_store_master_t *m, dango_rpc_call_t *call,
                           uint32_t method, const void *req, size_t len,
                           uint64_t now)
{
    Dango__Store__StatusList resp = DANGO__STORE__STATUS_LIST__INIT;
    Dango__Store__KeysReq   *msg;
    ms_batch_t               bt;
    size_t                   n;
    int                      exist = (method == DANGO_STORE_M_EXIST);
    int                      rc;

    msg = dango__store__keys_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, method);
    }

    n = msg->n_keys;
    if (n > DANGO_STORE_BATCH_MAX) {
        rc = DANGO_EINVAL;
        goto out;
    }

    rc = batch_begin(m->st, msg->keys, n, 0, &bt);
    if (rc != 0) {
        goto out;
    }

    rc = exist ? dango__store_ms_exist(m->st, n, bt.keys, now, bt.status)
               : dango__store_ms_remove(m->st, n, bt.keys, msg->force, now,
                                        bt.status);
    /* Disk tier: exists there too; a remove drops the disk record. */
    for (size_t i = 0; (rc == 0) && (i < n); i++) {
        if (exist && (bt.status[i] == 0)) {
            bt.status[i] =
                dango__store_ms_disk_has(m->st, bt.keys[i].s, bt.keys[i].len);
        } else if (!exist &&
                   ((bt.status[i] == 0) ||
                    (bt.status[i] == DANGO_ENO_OBJECT)) &&
                   dango__store_ms_disk_forget(m->st, bt.keys[i].s,
                                               bt.keys[i].len)) {
            bt.status[i] = 0;
        }
    }
    if (rc == 0) {
        count_items(&m->ops[exist ? MS_OP_EXIST : MS_OP_REMOVE], bt.status, n,
                    exist);
        resp.n_status = n;
        resp.status   = bt.status;
        resp.retry_ms =
            exist ? 0 : (uint32_t)DANGO_MIN(m->st->again_ms, UINT32_MAX);
    }

out:
    rc = reply(call, rc, &resp.base);
    dango__store__keys_req__free_unpacked(msg, NULL);
    return rc;
}

static int rpc_remove_match(dango_store_master_t *m, dango_rpc_call_t *call,
                            const void *req, size_t len, uint64_t now)
{
    Dango__Store__CountResp       resp = DANGO__STORE__COUNT_RESP__INIT;
    Dango__Store__RemoveMatchReq *msg;
    int64_t                       count, disk;

    msg = dango__store__remove_match_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_REMOVE_MATCH);
    }

    /* Disk tier: objects held only on disk first (they count), then the
     * disk copies of the objects removed from memory. */
    disk  = dango__store_ms_disk_remove_match(m->st, msg->regex, msg->all, 0);
    count = dango__store_ms_remove_match(m->st, msg->regex, msg->all,
                                         msg->force, now);
    if ((count >= 0) && (disk >= 0)) {
        dango__store_ms_disk_remove_match(m->st, msg->regex, msg->all, 1);
        count += disk;
    }
    dango__store__remove_match_req__free_unpacked(msg, NULL);
    if (count < 0) {
        return reply(call, (int)count, NULL);
    }

    resp.count    = count;
    resp.deferred = (int64_t)m->st->again_n;
    resp.retry_ms = (uint32_t)DANGO_MIN(m->st->again_ms, UINT32_MAX);
    return reply(call, 0, &resp.base);
}

static int rpc_report_bad(dango_store_master_t *m, dango_rpc_call_t *call,
                          const void *req, size_t len, uint64_t now)
{
    Dango__Store__ReportBadReq *msg;
    ms_key_t                    key;
    int                         rc = DANGO_EINVAL;

    msg = dango__store__report_bad_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_REPORT_BAD);
    }

    if (msg->client != NULL) {
        key.s   = msg->key;
        key.len = strlen(msg->key);
        rc      = dango__store_ms_report_bad(m->st, cid_of(msg->client), &key,
                                             msg->put_id, msg->segment, msg->addr,
                                             now);
    }

    dango__store__report_bad_req__free_unpacked(msg, NULL);
    return reply(call, rc, NULL);
}

static int rpc_list(dango_store_master_t *m, dango_rpc_call_t *call,
                    const void *req, size_t len)
{
    Dango__Store__ListResp resp = DANGO__STORE__LIST_RESP__INIT;
    Dango__Store__ListReq *msg;
    ms_key_t               prefix;
    ms_key_t               after;
    ms_obj_t             **objs;
    ms_bump_t              b;
    char                 **keys;
    uint64_t              *sizes;
    size_t                 limit;
    size_t                 n;
    int                    more;
    int                    rc;

    msg = dango__store__list_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_LIST);
    }

    limit = ((msg->limit == 0) || (msg->limit > MS_LIST_MAX)) ? MS_LIST_MAX
                                                              : msg->limit;
    rc    = bump_init(&b, m->st,
                      bump_size(limit * sizeof(*objs)) +
                          bump_size(limit * sizeof(*keys)) +
                          bump_size(limit * sizeof(*sizes)));
    if (rc != 0) {
        goto out;
    }

    objs       = bump(&b, limit * sizeof(*objs));
    keys       = bump(&b, limit * sizeof(*keys));
    sizes      = bump(&b, limit * sizeof(*sizes));
    prefix.s   = msg->prefix;
    prefix.len = strlen(msg->prefix);
    after.s    = msg->after;
    after.len  = strlen(msg->after);
    n = dango__store_ms_list(m->st, &prefix, &after, limit, objs, &more);
    for (size_t i = 0; i < n; i++) {
        keys[i]  = objs[i]->key;
        sizes[i] = objs[i]->cur->size;
    }

    resp.n_keys  = n;
    resp.keys    = keys;
    resp.n_sizes = n;
    resp.sizes   = sizes;
    resp.more    = more;

out:
    rc = reply(call, rc, &resp.base);
    dango__store__list_req__free_unpacked(msg, NULL);
    return rc;
}

static int rpc_pool_stat(dango_store_master_t *m, dango_rpc_call_t *call)
{
    Dango__Store__PoolStatResp resp = DANGO__STORE__POOL_STAT_RESP__INIT;
    ms_state_t                *st   = m->st;

    resp.capacity     = st->capacity;
    resp.used         = st->used;
    resp.keys         = dango_hmap_count(&st->objs);
    resp.segments     = st->nsegs;
    resp.clients      = dango_hmap_count(&st->clients);
    resp.evicted_keys = st->c.evicted_keys;
    {
        ms_disk_stats_t ds;

        dango__store_ms_disk_stats(st, &ds);
        resp.disk_capacity   = ds.capacity;
        resp.disk_used       = ds.used;
        resp.disk_keys       = ds.keys;
        resp.disk_offloads   = ds.offloads;
        resp.disk_loads      = ds.loads;
        resp.disk_promotions = ds.promotions;
    }
    return reply(call, 0, &resp.base);
}

static int rpc_copy_start(dango_store_master_t *m, dango_rpc_call_t *call,
                          const void *req, size_t len, uint64_t now)
{
    Dango__Store__CopyStartResp  resp = DANGO__STORE__COPY_START_RESP__INIT;
    Dango__Store__CopyStartReq  *msg;
    Dango__Store__CopyStartItem *items;
    ms_batch_t                   bt;
    size_t                       n, nrep = 0;
    int                          rc;

    msg = dango__store__copy_start_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_COPY_START);
    }

    n = msg->n_keys;
    if ((msg->client == NULL) || (n > DANGO_STORE_BATCH_MAX) ||
        (msg->target == NULL) || (msg->target[0] == '\0')) {
        rc = DANGO_EINVAL;
        goto out;
    }

    rc = batch_begin(m->st, msg->keys, n, sizeof(*items), &bt);
    if (rc != 0) {
        goto out;
    }

    items = bt.items;
    for (size_t i = 0; i < n; i++) {
        Dango__Store__CopyStartItem *it = &items[i];
        ms_ver_t                    *cv = NULL;
        ms_obj_t                    *o  = NULL;
        size_t                       cnt;

        dango__store__copy_start_item__init(it);
        it->status = dango__store_ms_copy_start(
            m->st, cid_of(msg->client), &bt.keys[i], msg->target, now, &cv, &o);
        if (it->status == 0) {
            it->copy_id   = cv->copy_id;
            it->put_id    = cv->put_id;
            it->size      = cv->size;
            it->checksum  = cv->checksum;
            it->sources   = replicas_of(o->cur, bt.reps, bt.repp, &nrep, &cnt);
            it->n_sources = cnt;
            it->target    = *replicas_of(cv, bt.reps, bt.repp, &nrep, &cnt);
        }
        bt.status[i] = it->status;
        bt.itemp[i]  = it;
    }

    count_items(&m->ops[MS_OP_COPY_START], bt.status, n, 0);
    resp.n_items = n;
    resp.items   = (Dango__Store__CopyStartItem **)bt.itemp;

out:
    rc = reply(call, rc, &resp.base);
    dango__store__copy_start_req__free_unpacked(msg, NULL);
    return rc;
}

static int rpc_copy_end(dango_store_master_t *m, dango_rpc_call_t *call,
                        const void *req, size_t len, uint64_t now,
                        ms_op_t *op_p)
{
    Dango__Store__StatusList  resp = DANGO__STORE__STATUS_LIST__INIT;
    Dango__Store__CopyEndReq *msg;
    ms_batch_t                bt;
    size_t                    n;
    int                       rc;

    msg = dango__store__copy_end_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_COPY_END);
    }

    *op_p = msg->revoke ? MS_OP_COPY_REVOKE : MS_OP_COPY_END;
    n     = msg->n_keys;
    if ((msg->client == NULL) || (n > DANGO_STORE_BATCH_MAX) ||
        (msg->n_copy_ids != n)) {
        rc = DANGO_EINVAL;
        goto out;
    }

    rc = batch_begin(m->st, msg->keys, n, 0, &bt);
    if (rc != 0) {
        goto out;
    }

    for (size_t i = 0; i < n; i++) {
        bt.status[i] =
            dango__store_ms_copy_end(m->st, cid_of(msg->client), &bt.keys[i],
                                     msg->copy_ids[i], msg->revoke, now);
    }
    count_items(&m->ops[*op_p], bt.status, n, 0);
    resp.n_status = n;
    resp.status   = bt.status;

out:
    rc = reply(call, rc, &resp.base);
    dango__store__copy_end_req__free_unpacked(msg, NULL);
    return rc;
}

static int rpc_kv_events(dango_store_master_t *m, dango_rpc_call_t *call,
                         const void *req, size_t len)
{
    Dango__Store__KvEventsResp resp = DANGO__STORE__KV_EVENTS_RESP__INIT;
    Dango__Store__KvEventsReq *msg;
    Dango__Store__KvEvent     *ev  = NULL;
    Dango__Store__KvEvent    **evp = NULL;
    ms_kv_q_t                 *q   = NULL;
    int                        rc;

    msg = dango__store__kv_events_req__unpack(NULL, len, req);
    if (msg == NULL) {
        return malformed(m, call, DANGO_STORE_M_KV_EVENTS);
    }

    rc = (msg->client == NULL)
             ? DANGO_EINVAL
             : dango__store_ms_kv_take(m->st, cid_of(msg->client), &q);
    if ((rc == 0) && (q != NULL) && (q->n > 0)) {
        ev  = dango_malloc(q->n * sizeof(*ev), "master_kv_reply");
        evp = dango_malloc(q->n * sizeof(*evp), "master_kv_reply");
        if ((ev == NULL) || (evp == NULL)) {
            rc = DANGO_ENOMEM;
            dango__store_ms_kv_untake(m->st, cid_of(msg->client), q);
            q = NULL; /* back in place for the next poll */
        } else {
            for (size_t i = 0; i < q->n; i++) {
                dango__store__kv_event__init(&ev[i]);
                ev[i].stored   = q->ev[i].stored;
                ev[i].key.data = (uint8_t *)q->keys + q->ev[i].off;
                ev[i].key.len  = q->ev[i].len;
                evp[i]         = &ev[i];
            }
            resp.n_events = q->n;
            resp.events   = evp;
        }
    }
    if (q != NULL) {
        resp.dropped = q->dropped;
    }

    rc = reply(call, rc, &resp.base);
    dango__store_ms_kv_free(q);
    dango_free(ev);
    dango_free(evp);
    dango__store__kv_events_req__free_unpacked(msg, NULL);
    return rc;
}

static void master_rpc(void *arg, dango_rpc_call_t *call, uint32_t method,
                       const void *req, size_t len)
{
    dango_store_master_t *m   = arg;
    uint64_t              now = now_ms();
    ms_op_t               op  = MS_OP_UNKNOWN;
    int                   rc;

    /* A standby or deposed master serves nothing but ServiceReady. */
    if ((m->ha != NULL) && (method != DANGO_STORE_M_SERVICE_READY) &&
        !dango__store_master_ha_serving(m)) {
        reply(call, DANGO_ENOT_LEADER, NULL);
        return;
    }

    if ((method >= DANGO_STORE_M_DISK_FIRST) &&
        (method <= DANGO_STORE_M_DISK_LAST)) {
        dango__store_master_disk_rpc(m, call, method, req, len, now);
        return;
    }

    switch (method) {
    case DANGO_STORE_M_SERVICE_READY:
        op = MS_OP_SERVICE_READY;
        rc = rpc_service_ready(m, call);
        break;
    case DANGO_STORE_M_PING:
        op = MS_OP_PING;
        rc = rpc_ping(m, call, req, len, now);
        break;
    case DANGO_STORE_M_MOUNT:
        op = MS_OP_MOUNT;
        rc = rpc_mount(m, call, req, len, now);
        break;
    case DANGO_STORE_M_REMOUNT:
        op = MS_OP_REMOUNT;
        rc = rpc_remount(m, call, req, len, now);
        break;
    case DANGO_STORE_M_UNMOUNT:
        op = MS_OP_UNMOUNT;
        rc = rpc_unmount(m, call, req, len, now);
        break;
    case DANGO_STORE_M_PUT_START:
        op = MS_OP_PUT_START;
        rc = rpc_put_start(m, call, req, len, now, &op);
        break;
    case DANGO_STORE_M_PUT_END:
        op = MS_OP_PUT_END;
        rc = rpc_put_end(m, call, req, len, now, &op);
        break;
    case DANGO_STORE_M_PUT_BIND:
        op = MS_OP_PUT_BIND;
        rc = rpc_put_bind(m, call, req, len, now);
        break;
    case DANGO_STORE_M_GET_REPLICAS:
        op = MS_OP_GET;
        rc = rpc_get(m, call, req, len, now);
        break;
    case DANGO_STORE_M_EXIST:
        op = MS_OP_EXIST;
        rc = rpc_keys_status(m, call, method, req, len, now);
        break;
    case DANGO_STORE_M_REMOVE:
        op = MS_OP_REMOVE;
        rc = rpc_keys_status(m, call, method, req, len, now);
        break;
    case DANGO_STORE_M_REMOVE_MATCH:
        op = MS_OP_REMOVE_MATCH;
        rc = rpc_remove_match(m, call, req, len, now);
        break;
    case DANGO_STORE_M_REPORT_BAD:
        op = MS_OP_REPORT_BAD;
        rc = rpc_report_bad(m, call, req, len, now);
        break;
    case DANGO_STORE_M_LIST:
        op = MS_OP_LIST;
        rc = rpc_list(m, call, req, len);
        break;
    case DANGO_STORE_M_POOL_STAT:
        op = MS_OP_POOL_STAT;
        rc = rpc_pool_stat(m, call);
        break;
    case DANGO_STORE_M_COPY_START:
        op = MS_OP_COPY_START;
        rc = rpc_copy_start(m, call, req, len, now);
        break;
    case DANGO_STORE_M_COPY_END:
        op = MS_OP_COPY_END;
        rc = rpc_copy_end(m, call, req, len, now, &op);
        break;
    case DANGO_STORE_M_KV_EVENTS:
        op = MS_OP_KV_EVENTS;
        rc = rpc_kv_events(m, call, req, len);
        break;
    default:
        dango_error_limited(&ms_rpc_log_limit,
                            "master: unknown method %u from %s", method,
                            dango_rpc_call_peer(call));
        rc = reply(call, DANGO_ENOSYS, NULL);
        break;
    }

    m->ops[op].requests++;
    if (rc != 0) {
        m->ops[op].failures++;
    }
}

static void master_tick(dango_loop_t *loop, void *arg)
{
    dango_store_master_t *m = arg;

    dango__store_ms_tick(m->st, now_ms());
}

static void master_monitor(dango_loop_t *loop, void *arg)
{
    dango_store_master_t *m = arg;

    dango__store_ms_monitor(m->st, now_ms());
}

typedef struct ms_timer_op {
    dango_store_master_t *m;
    int                   rc;
} ms_timer_op_t;

static void timers_add(void *arg)
{
    ms_timer_op_t        *op = arg;
    dango_store_master_t *m  = op->m;

    m->tick_timer = dango_loop_timer_add(
        m->loop, ns_to_ms(m->cfg.evict_interval), master_tick, m);
    if (m->tick_timer < 0) {
        op->rc = m->tick_timer;
        return;
    }

    m->monitor_timer = dango_loop_timer_add(
        m->loop, ns_to_ms(m->cfg.monitor_interval), master_monitor, m);
    if (m->monitor_timer < 0) {
        op->rc = m->monitor_timer;
        dango_loop_timer_del(m->loop, m->tick_timer);
        m->tick_timer = 0;
    }
}

static void timers_del(void *arg)
{
    dango_store_master_t *m = arg;

    if (m->tick_timer > 0) {
        dango_loop_timer_del(m->loop, m->tick_timer);
    }
    if (m->monitor_timer > 0) {
        dango_loop_timer_del(m->loop, m->monitor_timer);
    }
    m->tick_timer    = 0;
    m->monitor_timer = 0;
}

/* "http://host:port/metadata" for the embedded metadata server. */
static void md_url_of(dango_store_master_t *m)
{
    const char *listen = m->cfg.metadata_listen;
    const char *colon  = strrchr(listen, ':');
    size_t      hlen   = (colon != NULL) ? (size_t)(colon - listen) : 0;
    char        host[64];

    if ((hlen == 0) || (hlen >= sizeof(host)) ||
        ((hlen == 7) && (memcmp(listen, "0.0.0.0", 7) == 0)) ||
        ((hlen == 4) && (memcmp(listen, "[::]", 4) == 0))) {
        snprintf(host, sizeof(host), "127.0.0.1");
    } else {
        memcpy(host, listen, hlen);
        host[hlen] = '\0';
    }

    snprintf(m->md_url, sizeof(m->md_url), "http://%s:%d/metadata", host,
             dango_md_server_port(m->md));
}

static void params_of(ms_params_t *p, const ms_config_t *c, int64_t view)
{
    dango__store_ms_params_default(p);
    p->lease_ttl_ms         = ns_to_ms(c->lease_ttl);
    p->client_ttl_ms        = ns_to_ms(c->client_ttl);
    p->put_discard_ms       = ns_to_ms(c->put_discard_timeout);
    p->put_release_ms       = ns_to_ms(c->put_release_timeout);
    p->zombie_grace_ms      = ns_to_ms(c->zombie_grace);
    p->rebuild_window_ms    = ns_to_ms(c->rebuild_window);
    p->soft_pin_ttl_ms      = ns_to_ms(c->soft_pin_ttl);
    p->max_soft_pin_ttl_ms  = ns_to_ms(c->max_soft_pin_ttl);
    p->evict_high_watermark = c->evict_high_watermark;
    p->evict_ratio          = c->evict_ratio;
    p->evict_soft_pinned    = c->evict_soft_pinned;
    p->view_version         = view;
    p->seed                 = 0;
    p->disk_no_offload      = !c->disk_offload;
    p->disk_promote_hits    = (unsigned)c->disk_promote_hits;
    p->disk_queue           = (unsigned)c->disk_queue;
    p->location_cache_ms =
        DANGO_MIN(ns_to_ms(c->location_cache_time), p->lease_ttl_ms / 2);
    p->put_slot_bytes = c->put_slots;
}

/* A new, empty state of view @view, wired to this master (the same at
 * start and at every election). */
static int state_new(dango_store_master_t *m, int64_t view, ms_state_t **st_p)
{
    ms_params_t p;
    int         rc;

    params_of(&p, &m->cfg, view);
    rc = dango__store_ms_create(&p, st_p);
    if (rc == 0) {
        dango__store_ms_disk_set_put_retry(*st_p, put_start_retry, m);
        /* Clients may still hold locations an earlier master granted. */
        (*st_p)->cache_floor = now_ms() + p.location_cache_ms;
    }
    return rc;
}

/* ---------- public API ---------- */

int dango_store_master_create(const dango_config_t  *config,
                              dango_store_master_t **master_p)
{
    dango_rpc_server_params_t rp;
    ms_timer_op_t             top;
    dango_store_master_t     *m;
    int                       rc;

    if (master_p == NULL) {
        return DANGO_EINVAL;
    }

    m = dango_calloc(1, sizeof(*m), "store_master");
    if (m == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango__master_config_load(config, &m->cfg);
    if (rc != 0) {
        goto err_free;
    }

    m->view_version = m->cfg.view_version;
    if (m->view_version == 0) {
        m->view_version = (int64_t)(dango_time_wall_us() / 1000);
    }

    rc = state_new(m, m->view_version, &m->st);
    if (rc != 0) {
        goto err_config;
    }

    rc = dango_loop_create("master", &m->loop);
    if (rc != 0) {
        goto err_state;
    }

    rc = dango_loop_start(m->loop);
    if (rc != 0) {
        goto err_loop;
    }

    /* Before the RPC server: a standby refuses its very first call. */
    rc = dango__store_master_ha_init(m);
    if (rc != 0) {
        goto err_loop;
    }

    memset(&rp, 0, sizeof(rp));
    rp.loop        = m->loop;
    rp.listen      = m->cfg.listen;
    rp.token       = dango_auth_env_token();
    rp.handler     = master_rpc;
    rp.arg         = m;
    rp.local_lanes = (m->cfg.local_lanes == 0) ? -1 : (int)m->cfg.local_lanes;
    rc             = dango_rpc_server_create(&rp, &m->rpc);
    if (rc != 0) {
        dango_error("master: cannot serve RPC on %s: %s", m->cfg.listen,
                    dango_strerror(rc));
        goto err_loop;
    }

    top.m  = m;
    top.rc = 0;
    dango_loop_run_sync(m->loop, timers_add, &top);
    rc = top.rc;
    if (rc != 0) {
        goto err_rpc;
    }

    if (m->cfg.admin_listen[0] != '\0') {
        rc = dango__store_master_admin_start(m);
        if (rc != 0) {
            goto err_timers;
        }
    }

    if (m->cfg.metadata_listen[0] != '\0') {
        rc = dango_md_server_start(m->cfg.metadata_listen, &m->md);
        if (rc != 0) {
            dango_error("master: cannot serve metadata on %s: %s",
                        m->cfg.metadata_listen, dango_strerror(rc));
            goto err_admin;
        }
        md_url_of(m);
    }

    rc = dango__store_master_ha_start(m);
    if (rc != 0) {
        goto err_md;
    }

    dango_info("master: serving on %s (admin %s, metadata %s), view %lld",
               dango_rpc_server_addr(m->rpc),
               (m->admin != NULL) ? m->admin_addr : "off",
               (m->md != NULL) ? m->md_url : "off", (long long)m->view_version);
    *master_p = m;
    return 0;

err_md:
    dango_md_server_stop(m->md);
err_admin:
    dango__store_master_admin_stop(m);
err_timers:
    dango_loop_run_sync(m->loop, timers_del, m);
err_rpc:
    dango_rpc_server_destroy(m->rpc);
err_loop:
    dango_loop_destroy(m->loop);
    dango__store_master_ha_free(m); /* nothing reads it any more */
err_state:
    dango__store_ms_destroy(m->st);
err_config:
    dango__master_config_free(&m->cfg);
err_free:
    dango_free(m);
    return rc;
}

void dango_store_master_destroy(dango_store_master_t *m)
{
    if (m == NULL) {
        return;
    }

    /* The election and admin threads use the loop: stop them first. */
    dango__store_master_ha_stop(m);
    dango__store_master_admin_stop(m);
    dango_md_server_stop(m->md);
    dango_rpc_server_destroy(m->rpc);
    dango_loop_run_sync(m->loop, timers_del, m);
    dango_loop_stop(m->loop);
    dango__store_master_ha_free(m);
    dango__store_ms_destroy(m->st);
    dango_loop_destroy(m->loop);
    dango_info("master: stopped");
    dango__master_config_free(&m->cfg);
    dango_free(m);
}

const char *dango_store_master_addr(const dango_store_master_t *m)
{
    return (m != NULL) ? dango_rpc_server_addr(m->rpc) : NULL;
}

const char *dango_store_master_admin_addr(const dango_store_master_t *m)
{
    return ((m != NULL) && (m->admin != NULL)) ? m->admin_addr : NULL;
}

const char *dango_store_master_metadata_url(const dango_store_master_t *m)
{
    return ((m != NULL) && (m->md != NULL)) ? m->md_url : NULL;
}

/* ---------- high availability (see store_master_ha.c) ---------- */

typedef struct ms_reset_op {
    dango_store_master_t *m;
    int64_t               view;
    int                   rc;
} ms_reset_op_t;

static void reset_on_loop(void *arg)
{
    ms_reset_op_t *op = arg;
    ms_state_t    *st;

    op->rc = state_new(op->m, op->view, &st);
    if (op->rc != 0) {
        return;
    }

    dango__store_ms_destroy(op->m->st);
    op->m->st           = st;
    op->m->view_version = op->view;
    dango_rpc_server_set_epoch(op->m->rpc, (uint64_t)op->view);
}

int dango__store_master_reset(dango_store_master_t *m, int64_t view)
{
    ms_reset_op_t op = {m, view, 0};

    dango_loop_run_sync(m->loop, reset_on_loop, &op);
    return op.rc;
}
