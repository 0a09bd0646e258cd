/*
 * Store client: lifecycle, liveness, segments, staging memory, the
 * committer thread and the thin metadata calls (exist, remove, stat, list).
 * The write path is in store_client_put.c, the read path in
 * store_client_get.c.
 *
 * DESIGN
 * - A client owns one transfer engine. Its contributed segment is memory
 *   from dango_xfer_mem_alloc() (memfd, populated, remote-accessible),
 *   mounted on the master under a random 128-bit segment id. The staging
 *   buffer is populated registered memory too (local access only), carved
 *   by the O(1) offset allocator of the master (store_alloc.h) under a
 *   mutex: record headers, small values and values of callers whose
 *   memory cannot be registered go through it. When it is full, a call
 *   falls back to a bounce buffer allocated and registered for that call,
 *   so a put or get never fails because staging is too small.
 * - Liveness: a ping thread calls Ping every STORE_PING_INTERVAL. A status
 *   DANGO_ENEED_REMOUNT (a new master, or one that expired us) is answered
 *   with Remount of our segment; so is the first answer after the master
 *   was unreachable for STORE_PING_FAILURES pings, and every answer while
 *   the segment is not mounted yet (the master may be down at create).
 *   The RPC client reconnects by itself on the next call.
 * - Segments of other nodes are opened once and cached by name (chained
 *   hash under a rwlock: every transfer reads it, opens are rare). Entries
 *   live until destroy, so callers keep plain pointers; a handle that a
 *   transfer found stale (peer restarted) is replaced in place, one opener
 *   at a time (seg_open_lock), and a peer that cannot be opened is not
 *   tried again for SC_OPEN_RETRY_NS, so a dead node costs one timeout,
 *   not one per call.
 * - Commit words: after PutEnd, the writer queues (segment, address,
 *   put_id ^ DANGO_STORE_REC_COMMIT_XOR) for each replica to the committer
 *   thread, which writes everything pending in one transfer batch per
 *   wake-up. A full queue makes the putting thread write its own words.
 *   The words only matter to a node enumerating what it holds (a master
 *   rebuild); readers rely on the master's state and the checksums.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <regex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/time.h"
#include "net/auth.h"
#include "store/store_client_int.h"
#include "store/store_ha.h"
#include "store/store_records.h"
#include "store/store_proto.h"

DANGO_LOG_COMPONENT_DEFINE(dango__log_store_client, "store");

/* A segment that could not be opened is not tried again for this long. */
#define SC_OPEN_RETRY_NS (1000ull * DANGO_NSEC_PER_MSEC)
/* Keys listed per page by dango_store_list(). */
#define SC_LIST_PAGE 1024
/* Initial buckets of the segment cache (power of two). */
#define SC_SEG_TAB_INIT 64

/* ---------- helpers ---------- */

int dango__sc_key_check(const char *key, size_t *len_p)
{
    size_t len;

    if (key == NULL) {
        return DANGO_EINVAL;
    }

    len = strnlen(key, DANGO_STORE_KEY_MAX + 1);
    if (len == 0) {
        return DANGO_EINVAL;
    }

    if (len > DANGO_STORE_KEY_MAX) {
        return DANGO_ENAMETOOLONG;
    }

    *len_p = len;
    return 0;
}

int dango__sc_own_range_ok(const dango_store_client_t *c, uint64_t addr,
                           uint64_t len)
{
    uint64_t base = (uintptr_t)c->seg_base;

    return (c->seg_base != NULL) && (addr >= base) &&
           (addr - base <= c->seg_size) && (len <= c->seg_size - (addr - base));
}

static void sc_client_id(dango_store_client_t *c, Dango__Store__ClientId *id)
{
    dango__store__client_id__init(id);
    id->hi = c->id_hi;
    id->lo = c->id_lo;
}

/*
 * 1 for the calls whose repetition has the effect of one call: reads, and
 * PutEnd (the master answers 0 for a put that is already the key's value;
 * a repeated revoke is refused, which a revoke ignores).
 */
static int sc_call_repeatable(uint32_t method)
{
    switch (method) {
    case DANGO_STORE_M_GET_REPLICAS:
    case DANGO_STORE_M_EXIST:
    case DANGO_STORE_M_LIST:
    case DANGO_STORE_M_POOL_STAT:
    case DANGO_STORE_M_PUT_END:
        return 1;
    default:
        return 0;
    }
}

static int sc_call_once(dango_store_client_t *c, uint32_t method,
                        const ProtobufCMessage           *req,
                        const ProtobufCMessageDescriptor *reply_desc,
                        ProtobufCMessage **reply_p, uint64_t timeout_ns)
{
    if (c->ha != NULL) {
        return dango__sc_ha_call(c, method, req, reply_desc, reply_p,
                                 timeout_ns);
    }

    return dango__sc_call_rpc(c, c->rpc, method, req, reply_desc, reply_p,
                              timeout_ns);
}

int dango__sc_call(dango_store_client_t *c, uint32_t method,
                   const ProtobufCMessage           *req,
                   const ProtobufCMessageDescriptor *reply_desc,
                   ProtobufCMessage **reply_p, uint64_t timeout_ns)
{
    int rc = sc_call_once(c, method, req, reply_desc, reply_p, timeout_ns);

    /* The connection went after the request did: whether the master acted
     * is unknown. A call that may be repeated is asked once more, on a new
     * connection, so that the caller gets the answer instead of a doubt
     * (a PutEnd served but unanswered would leave a visible value without
     * its commit words, its writer told that the put failed). */
    if ((rc == DANGO_ECONNRESET) && sc_call_repeatable(method)) {
        dango_debug("store client %s: call %u lost with its connection, "
                    "asking again",
                    c->name, method);
        rc = sc_call_once(c, method, req, reply_desc, reply_p, timeout_ns);
    }

    return rc;
}

int dango__sc_call_rpc(dango_store_client_t *c, dango_rpc_client_t *rpc,
                       uint32_t method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *reply_desc,
                       ProtobufCMessage **reply_p, uint64_t timeout_ns)
{
    ProtobufCMessage *reply = NULL;
    int               rc;

    if (timeout_ns == 0) {
        timeout_ns = c->cfg.rpc_timeout;
    }

    if (req == NULL) {
        void  *buf = NULL;
        size_t len = 0;

        rc = dango_rpc_call(rpc, method, NULL, 0, &buf, &len, timeout_ns);
        if (rc != 0) {
            return rc;
        }

        if (reply_desc != NULL) {
            reply = protobuf_c_message_unpack(reply_desc, NULL, len,
                                              buf ? buf : (const void *)"");
            if (reply == NULL) {
                rc = DANGO_EPROTO;
            }
        }

        dango_free(buf);
        if ((rc == 0) && (reply_p != NULL)) {
            *reply_p = reply;
        } else if (reply != NULL) {
            protobuf_c_message_free_unpacked(reply, NULL);
        }

        return rc;
    }

    /* An empty reply unpacks as any message: StatusList stands in. */
    rc = dango_rpc_call_pb(rpc, method, req,
                           reply_desc ? reply_desc
                                      : &dango__store__status_list__descriptor,
                           &reply, timeout_ns);
    if (rc != 0) {
        return rc;
    }

    if ((reply_desc != NULL) && (reply_p != NULL)) {
        *reply_p = reply;
    } else {
        protobuf_c_message_free_unpacked(reply, NULL);
    }

    return 0;
}

int dango__sc_fill_config(dango_store_client_t                 *c,
                          const dango_store_replicate_config_t *cfg,
                          Dango__Store__ReplicateConfig        *wire)
{
    dango__store__replicate_config__init(wire);
    wire->replica_num = (unsigned)c->cfg.replica_num;
    wire->host_id     = c->host_id;
    if (cfg == NULL) {
        return 0;
    }

    if ((cfg->replica_num > DANGO_STORE_REPLICA_MAX) ||
        (cfg->preferred_count > DANGO_STORE_PREFERRED_MAX) ||
        ((cfg->preferred_count > 0) && (cfg->preferred_segments == NULL)) ||
        ((unsigned)cfg->soft_pin > DANGO_STORE_SOFT_PIN_DISABLE) ||
        ((cfg->soft_pin_ttl_ms != 0) &&
         (cfg->soft_pin != DANGO_STORE_SOFT_PIN_ENABLE))) {
        return DANGO_EINVAL;
    }

    for (unsigned i = 0; i < cfg->preferred_count; i++) {
        if ((cfg->preferred_segments[i] == NULL) ||
            (cfg->preferred_segments[i][0] == '\0')) {
            return DANGO_EINVAL;
        }
    }

    if (cfg->replica_num != 0) {
        wire->replica_num = cfg->replica_num;
    }

    wire->hard_pin        = cfg->with_hard_pin != 0;
    wire->soft_pin        = (uint32_t)cfg->soft_pin;
    wire->soft_pin_ttl_ms = cfg->soft_pin_ttl_ms;
    wire->n_preferred     = cfg->preferred_count;
    wire->preferred       = (char **)cfg->preferred_segments;
    return 0;
}

/* ---------- segment cache ---------- */

static sc_seg_t *seg_lookup(dango_store_client_t *c, const char *name,
                            uint64_t h)
{
    for (sc_seg_t *s = c->seg_tab[h & (c->seg_tab_size - 1)]; s != NULL;
         s           = s->next) {
        if ((s->hash == h) && (strcmp(s->name, name) == 0)) {
            return s;
        }
    }

    return NULL;
}

/* Inserts @s; write lock held. Grows the table past load 1. */
static void seg_insert(dango_store_client_t *c, sc_seg_t *s)
{
    if (c->seg_count >= c->seg_tab_size) {
        size_t     size = c->seg_tab_size * 2;
        sc_seg_t **tab  = dango_calloc(size, sizeof(*tab), "store_seg_tab");

        if (tab != NULL) {
            for (size_t i = 0; i < c->seg_tab_size; i++) {
                while (c->seg_tab[i] != NULL) {
                    sc_seg_t *e = c->seg_tab[i];

                    c->seg_tab[i]             = e->next;
                    e->next                   = tab[e->hash & (size - 1)];
                    tab[e->hash & (size - 1)] = e;
                }
            }

            dango_free(c->seg_tab);
            c->seg_tab      = tab;
            c->seg_tab_size = size;
        } /* else: longer chains, still correct */
    }

    s->next = c->seg_tab[s->hash & (c->seg_tab_size - 1)];
    c->seg_tab[s->hash & (c->seg_tab_size - 1)] = s;
    c->seg_count++;
}

static sc_seg_t *seg_new(const char *name, uint64_t h)
{
    sc_seg_t *s = dango_calloc(1, sizeof(*s), "store_seg");

    if (s == NULL) {
        return NULL;
    }

    s->name = dango_strdup(name, "store_seg_name");
    if (s->name == NULL) {
        dango_free(s);
        return NULL;
    }

    s->hash = h;
    return s;
}

/* Opens @name with the engine; seg_open_lock held. */
static int seg_open(dango_store_client_t *c, const char *name,
                    dango_segment_id_t *id_p, int *same_host_p)
{
    dango_xfer_segment_info_t info;
    int                       rc;

    rc = dango_xfer_segment_open(c->eng, name, id_p);
    if (rc != 0) {
        return rc;
    }

    *same_host_p = 0;
    if ((dango_xfer_segment_query(c->eng, *id_p, &info) == 0) &&
        (strcmp(info.transport, "shm") == 0)) {
        *same_host_p = 1;
    }

    return 0;
}

int dango__sc_seg_get(dango_store_client_t *c, const char *name,
                      sc_seg_t **seg_p)
{
    uint64_t           h = dango_hash64(name, strlen(name));
    sc_seg_t          *s;
    dango_segment_id_t id;
    int                same_host, rc;

    pthread_rwlock_rdlock(&c->seg_lock);
    s = seg_lookup(c, name, h);
    if ((s != NULL) && s->open) {
        pthread_rwlock_unlock(&c->seg_lock);
        *seg_p = s;
        return 0;
    }

    pthread_rwlock_unlock(&c->seg_lock);

    pthread_mutex_lock(&c->seg_open_lock);
    pthread_rwlock_rdlock(&c->seg_lock);
    s = seg_lookup(c, name, h);
    pthread_rwlock_unlock(&c->seg_lock);
    if ((s != NULL) && s->open) {
        pthread_mutex_unlock(&c->seg_open_lock);
        *seg_p = s;
        return 0;
    }

    if ((s != NULL) && (dango_time_ns() < s->fail_until)) {
        rc = s->fail_rc;
        pthread_mutex_unlock(&c->seg_open_lock);
        return rc;
    }

    if (s == NULL) {
        s = seg_new(name, h);
        if (s == NULL) {
            pthread_mutex_unlock(&c->seg_open_lock);
            return DANGO_ENOMEM;
        }

        pthread_rwlock_wrlock(&c->seg_lock);
        seg_insert(c, s);
        pthread_rwlock_unlock(&c->seg_lock);
    }

    rc = seg_open(c, name, &id, &same_host);
    pthread_rwlock_wrlock(&c->seg_lock);
    if (rc == 0) {
        s->id        = id;
        s->same_host = same_host;
        s->open      = 1;
    } else {
        s->fail_rc    = rc;
        s->fail_until = dango_time_ns() + SC_OPEN_RETRY_NS;
    }

    pthread_rwlock_unlock(&c->seg_lock);
    pthread_mutex_unlock(&c->seg_open_lock);
    if (rc != 0) {
        dango_debug("store client %s: segment %s cannot be opened: %s", c->name,
                    name, dango_strerror(rc));
        return rc;
    }

    *seg_p = s;
    return 0;
}

sc_seg_t *dango__sc_seg_peek(dango_store_client_t *c, const char *name)
{
    uint64_t  h = dango_hash64(name, strlen(name));
    sc_seg_t *s;

    pthread_rwlock_rdlock(&c->seg_lock);
    s = seg_lookup(c, name, h);
    pthread_rwlock_unlock(&c->seg_lock);
    return s;
}

void dango__sc_seg_state(dango_store_client_t *c, const sc_seg_t *seg,
                         int *open_p, int *same_host_p, uint64_t *fail_until_p)
{
    pthread_rwlock_rdlock(&c->seg_lock);
    *open_p       = seg->open;
    *same_host_p  = seg->same_host;
    *fail_until_p = seg->fail_until;
    pthread_rwlock_unlock(&c->seg_lock);
}

dango_segment_id_t dango__sc_seg_id(dango_store_client_t *c, sc_seg_t *seg)
{
    dango_segment_id_t id;

    pthread_rwlock_rdlock(&c->seg_lock);
    id = seg->id;
    pthread_rwlock_unlock(&c->seg_lock);
    return id;
}

int dango__sc_seg_reopen(dango_store_client_t *c, sc_seg_t *seg,
                         dango_segment_id_t old_id)
{
    dango_segment_id_t id;
    int                same_host, rc;

    if (seg->own) {
        return 0;
    }

    pthread_mutex_lock(&c->seg_open_lock);
    pthread_rwlock_rdlock(&c->seg_lock);
    if (seg->open && (seg->id != old_id)) {
        pthread_rwlock_unlock(&c->seg_lock);
        pthread_mutex_unlock(&c->seg_open_lock);
        return 0; /* another thread did it */
    }

    if (!seg->open && (dango_time_ns() < seg->fail_until)) {
        rc = seg->fail_rc;
        pthread_rwlock_unlock(&c->seg_lock);
        pthread_mutex_unlock(&c->seg_open_lock);
        return rc;
    }

    pthread_rwlock_unlock(&c->seg_lock);
    if (seg->open) {
        dango_xfer_segment_close(c->eng, old_id);
    }

    rc = seg_open(c, seg->name, &id, &same_host);
    pthread_rwlock_wrlock(&c->seg_lock);
    if (rc == 0) {
        seg->id        = id;
        seg->same_host = same_host;
        seg->open      = 1;
    } else {
        seg->open       = 0;
        seg->fail_rc    = rc;
        seg->fail_until = dango_time_ns() + SC_OPEN_RETRY_NS;
    }

    pthread_rwlock_unlock(&c->seg_lock);
    pthread_mutex_unlock(&c->seg_open_lock);
    dango_debug("store client %s: segment %s reopened: %s", c->name, seg->name,
                dango_strerror(rc));
    return rc;
}

static void seg_cache_free(dango_store_client_t *c)
{
    if (c->seg_tab == NULL) {
        return;
    }

    for (size_t i = 0; i < c->seg_tab_size; i++) {
        while (c->seg_tab[i] != NULL) {
            sc_seg_t *s = c->seg_tab[i];

            c->seg_tab[i] = s->next;
            if (s->open && !s->own) {
                dango_xfer_segment_close(c->eng, s->id);
            }

            dango_free(s->name);
            dango_free(s);
        }
    }

    dango_free(c->seg_tab);
    c->seg_tab = NULL;
}

/* ---------- registered memory ---------- */

/* Index of the first registration whose start is > @addr. */
static size_t ureg_upper(dango_store_client_t *c, uintptr_t addr)
{
    size_t lo = 0, hi = c->ureg_count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (c->ureg[mid].addr <= addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }

    return lo;
}

int dango__sc_ureg_covers(dango_store_client_t *c, const void *ptr, size_t len)
{
    uintptr_t a = (uintptr_t)ptr;
    size_t    i;
    int       ok = 0;

    pthread_rwlock_rdlock(&c->ureg_lock);
    i = ureg_upper(c, a);
    if (i > 0) {
        const sc_ureg_t *r = &c->ureg[i - 1];

        ok = (a - r->addr < r->len) && (len <= r->len - (a - r->addr));
    }

    pthread_rwlock_unlock(&c->ureg_lock);
    return ok;
}

int dango__sc_buf_get(dango_store_client_t *c, size_t len, sc_buf_t *b)
{
    uint64_t off;
    void    *p;
    int      rc;

    b->kind = SC_BUF_NONE;
    b->len  = len;
    pthread_mutex_lock(&c->staging_lock);
    rc = dango__store_alloc_alloc(c->staging_alloc, len, &off, NULL);
    pthread_mutex_unlock(&c->staging_lock);
    if (rc == 0) {
        b->ptr  = (char *)c->staging + off;
        b->kind = SC_BUF_STAGING;
        return 0;
    }

    /* Staging is full (or too small): a bounce buffer for this call. */
    p = dango_malloc(len, "store_bounce");
    if (p == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango_xfer_mem_register(c->eng, p, len, NULL, 0);
    if (rc != 0) {
        dango_free(p);
        return rc;
    }

    b->ptr  = p;
    b->kind = SC_BUF_BOUNCE;
    return 0;
}

int dango__sc_buf_user(dango_store_client_t *c, void *ptr, size_t len,
                       sc_buf_t *b)
{
    int rc;

    b->ptr  = ptr;
    b->len  = len;
    b->kind = SC_BUF_NONE;
    if (dango__sc_ureg_covers(c, ptr, len)) {
        return 0;
    }

    rc = dango_xfer_mem_register(c->eng, ptr, len, NULL, 0);
    if (rc != 0) {
        return rc; /* DANGO_EOVERLAP: the caller stages instead */
    }

    b->kind = SC_BUF_USERREG;
    return 0;
}

void dango__sc_buf_put(dango_store_client_t *c, sc_buf_t *b)
{
    switch (b->kind) {
    case SC_BUF_STAGING:
        pthread_mutex_lock(&c->staging_lock);
        dango__store_alloc_free(
            c->staging_alloc, (uint64_t)((char *)b->ptr - (char *)c->staging));
        pthread_mutex_unlock(&c->staging_lock);
        break;
    case SC_BUF_BOUNCE:
        dango_xfer_mem_unregister(c->eng, b->ptr);
        dango_free(b->ptr);
        break;
    case SC_BUF_USERREG:
        dango_xfer_mem_unregister(c->eng, b->ptr);
        break;
    case SC_BUF_NONE:
        break;
    }

    b->kind = SC_BUF_NONE;
}

/*
 * Waiting: the engine's wait spins (XFER_WAIT_SPIN) before it sleeps, which
 * on a host with more busy threads than cores takes the CPU from the very
 * engine threads that move our bytes. So we first poll for up to
 * STORE_WAIT_POLL, yielding the CPU between polls, and only then wait in
 * the engine (spin, then sleep until done).
 */
int dango__sc_batch_wait(dango_store_client_t *c, dango_xfer_batch_t *batch)
{
    uint64_t ms = c->cfg.transfer_timeout / DANGO_NSEC_PER_MSEC;
    uint64_t t0 = 0;
    int      rc;

    for (;;) {
        rc = dango_xfer_batch_wait(batch, 0);
        if (rc != DANGO_ETIMEDOUT) {
            return rc;
        }

        if (t0 == 0) {
            t0 = dango_time_ns();
        } else if (dango_time_ns() - t0 >= c->cfg.wait_poll) {
            break;
        }

        sched_yield();
    }

    rc = dango_xfer_batch_wait(
        batch, (int)DANGO_MIN(DANGO_MAX(ms, 1ull), (uint64_t)INT32_MAX));
    if (rc == DANGO_ETIMEDOUT) {
        /* The requests still own our memory: let the transports end them
         * (each is bounded by its own I/O timeout) before giving it back. */
        dango_warn("store client %s: transfers still running after %" PRIu64
                   " ms",
                   c->name, ms);
        dango_xfer_batch_wait(batch, -1);
        return DANGO_ETIMEDOUT;
    }

    return rc;
}

/*
 * Batches are reused rather than created per call: besides the allocation,
 * freeing (or resetting) a batch right after its wait returns must wait for
 * the engine thread that completed it to leave the batch, and that thread
 * may be preempted on a busy host. Returned batches queue up behind the
 * others and are reset only when they come round again, long after.
 */
int dango__sc_batch_get(dango_store_client_t *c, size_t n,
                        dango_xfer_batch_t **batch_p)
{
    dango_xfer_batch_t *b = NULL;

    if (n <= SC_POOL_CAP) {
        pthread_mutex_lock(&c->pool_lock);
        if (c->pool_count > 0) {
            b            = c->pool[c->pool_head];
            c->pool_head = (c->pool_head + 1) % SC_POOL_MAX;
            c->pool_count--;
        }

        pthread_mutex_unlock(&c->pool_lock);
        if (b != NULL) {
            if (dango_xfer_batch_reset(b) == 0) {
                *batch_p = b;
                return 0;
            }

            dango_xfer_batch_destroy(b);
        }

        n = SC_POOL_CAP;
    }

    return dango_xfer_batch_create(c->eng, n, batch_p);
}

void dango__sc_batch_put(dango_store_client_t *c, dango_xfer_batch_t *batch)
{
    if (dango_xfer_batch_capacity(batch) == SC_POOL_CAP) {
        pthread_mutex_lock(&c->pool_lock);
        if (c->pool_count < SC_POOL_MAX) {
            c->pool[(c->pool_head + c->pool_count) % SC_POOL_MAX] = batch;
            c->pool_count++;
            batch = NULL;
        }

        pthread_mutex_unlock(&c->pool_lock);
    }

    if (batch != NULL) {
        dango_xfer_batch_destroy(batch);
    }
}

/* ---------- committer ---------- */

void dango__sc_commit_req(dango_store_client_t *c, const sc_commit_t *w,
                          uint64_t *word, dango_xfer_req_t *req)
{
    *word            = w->value;
    req->op          = DANGO_XFER_OP_WRITE;
    req->local_addr  = word;
    req->segment     = dango__sc_seg_id(c, w->seg);
    req->remote_addr = w->addr;
    req->length      = sizeof(uint64_t);
}

/*
 * Writes the commit words @w[0..n) (at most SC_COMMIT_BATCH) through
 * @batch, staged at @words, and waits. Own-segment words are plain stores.
 * With @ok, ok[i] says whether word i is in place (stored, or acknowledged
 * by its node). @batch NULL (no memory for one): only the own-segment
 * words are written.
 */
static void commit_write(dango_store_client_t *c, dango_xfer_batch_t *batch,
                         const sc_commit_t *w, size_t n, uint64_t *words,
                         int *ok)
{
    dango_xfer_req_t reqs[SC_COMMIT_BATCH];
    size_t           idx[SC_COMMIT_BATCH];
    size_t           nreq = 0, nsub = 0;
    int              rc;

    for (size_t i = 0; i < n; i++) {
        if (ok != NULL) {
            ok[i] = w[i].seg->own;
        }

        if (w[i].seg->own) {
            /* Our own memory: a plain store, seen by peers' reads. */
            __atomic_store_n((uint64_t *)(uintptr_t)w[i].addr, w[i].value,
                             __ATOMIC_RELEASE);
            continue;
        }

        if (batch != NULL) {
            dango__sc_commit_req(c, &w[i], &words[nreq], &reqs[nreq]);
            idx[nreq++] = i;
        }
    }

    if (nreq == 0) {
        return;
    }

    if (dango_xfer_batch_submit(batch, reqs, nreq) == 0) {
        nsub = nreq;
    } else {
        /* Nothing was queued: one by one, so that a refused word does not
         * hide the others. */
        for (size_t r = 0; r < nreq; r++) {
            if (dango_xfer_batch_submit(batch, &reqs[r], 1) == 0) {
                idx[nsub++] = idx[r];
            }
        }
    }

    rc = dango__sc_batch_wait(c, batch);
    if (rc != 0) {
        dango_debug("store client %s: commit words not all written: %s",
                    c->name, dango_strerror(rc));
    }

    for (size_t k = 0; (ok != NULL) && (k < nsub); k++) {
        dango_xfer_status_t st;

        ok[idx[k]] = (dango_xfer_batch_status(batch, k, &st) == 0) &&
                     (st.state == DANGO_XFER_COMPLETED);
    }

    dango_xfer_batch_reset(batch);
}

static void *commit_thread(void *arg)
{
    dango_store_client_t *c = arg;
    sc_commit_t           w[SC_COMMIT_BATCH];

    pthread_mutex_lock(&c->commit_lock);
    for (;;) {
        size_t n = 0;

        while ((c->commit_count == 0) && !c->commit_stop) {
            pthread_cond_wait(&c->commit_cond, &c->commit_lock);
        }

        if (c->commit_count == 0) {
            break; /* stopping and drained */
        }

        while ((c->commit_count > 0) && (n < SC_COMMIT_BATCH)) {
            w[n++]         = c->commit_ring[c->commit_head];
            c->commit_head = (c->commit_head + 1) % c->commit_cap;
            c->commit_count--;
        }

        pthread_mutex_unlock(&c->commit_lock);
        commit_write(c, c->commit_batch, w, n, c->commit_words, NULL);
        pthread_mutex_lock(&c->commit_lock);
    }

    pthread_mutex_unlock(&c->commit_lock);
    return NULL;
}

void dango__sc_commit_sync(dango_store_client_t *c, const sc_commit_t *w,
                           size_t n, int *ok)
{
    while (n > 0) {
        size_t              k     = DANGO_MIN(n, (size_t)SC_COMMIT_BATCH);
        dango_xfer_batch_t *batch = NULL;
        sc_buf_t            b;
        int                 have_b;

        have_b = dango__sc_buf_get(c, k * sizeof(uint64_t), &b) == 0;
        if (have_b && (dango__sc_batch_get(c, k, &batch) != 0)) {
            batch = NULL;
        }

        commit_write(c, batch, w, k, have_b ? b.ptr : NULL, ok);
        if (batch != NULL) {
            dango__sc_batch_put(c, batch);
        }

        if (have_b) {
            dango__sc_buf_put(c, &b);
        }

        w += k;
        n -= k;
        ok = (ok != NULL) ? ok + k : NULL;
    }
}

void dango__sc_commit_queue(dango_store_client_t *c, const sc_commit_t *w,
                            size_t n)
{
    int local = 1;

    /* Words for this host are plain copies (own memory, or shm slices
     * copied inline): cheaper written now than handed to the committer. */
    for (size_t i = 0; (i < n) && local; i++) {
        int      open, same_host;
        uint64_t fail_until;

        dango__sc_seg_state(c, w[i].seg, &open, &same_host, &fail_until);
        local = w[i].seg->own || (open && same_host);
    }

    if (local) {
        dango__sc_commit_sync(c, w, n, NULL);
        return;
    }

    pthread_mutex_lock(&c->commit_lock);
    if (c->commit_started && !c->commit_stop &&
        (c->commit_count + n <= c->commit_cap)) {
        for (size_t i = 0; i < n; i++) {
            size_t tail = (c->commit_head + c->commit_count) % c->commit_cap;

            c->commit_ring[tail] = w[i];
            c->commit_count++;
        }

        pthread_cond_signal(&c->commit_cond);
        pthread_mutex_unlock(&c->commit_lock);
        return;
    }

    pthread_mutex_unlock(&c->commit_lock);
    dango__sc_commit_sync(c, w, n, NULL);
}

/* ---------- master membership ---------- */

static void sc_segment_msg(dango_store_client_t *c, Dango__Store__Segment *s)
{
    dango__store__segment__init(s);
    s->id_hi     = c->seg_hi;
    s->id_lo     = c->seg_lo;
    s->name      = (char *)c->name;
    s->base_addr = (uint64_t)(uintptr_t)c->seg_base;
    s->size      = c->seg_size;
    s->host_id   = c->host_id;
}

static int sc_mount(dango_store_client_t *c, uint64_t timeout_ns)
{
    Dango__Store__MountReq req = DANGO__STORE__MOUNT_REQ__INIT;
    Dango__Store__ClientId id;
    Dango__Store__Segment  seg;

    sc_client_id(c, &id);
    sc_segment_msg(c, &seg);
    req.client  = &id;
    req.segment = &seg;
    return dango__sc_call(c, DANGO_STORE_M_MOUNT, &req.base, NULL, NULL,
                          timeout_ns);
}

/* A remount in progress: the request and the chunk of records being
 * filled by the segment scan. */
typedef struct sc_report {
    dango_store_client_t    *c;
    uint64_t                 timeout_ns;
    Dango__Store__RemountReq req;
    Dango__Store__Record     recs[SC_REPORT_CHUNK];
    Dango__Store__Record    *ptrs[SC_REPORT_CHUNK];
    size_t                   bytes; /* of keys in the chunk */
    size_t                   sent;  /* records sent so far */
    int                      rc;
} sc_report_t;

/* Sends the request with the records gathered so far. */
static int sc_report_send(sc_report_t *r, int more)
{
    r->req.more    = more != 0;
    r->req.records = r->ptrs;
    r->rc = dango__sc_call(r->c, DANGO_STORE_M_REMOUNT, &r->req.base, NULL,
                           NULL, r->timeout_ns);
    r->sent += r->req.n_records;
    r->req.n_records = 0;
    r->bytes         = 0;
    return r->rc;
}

static int sc_report_rec(void *arg, const dango_store_rec_hdr_t *h,
                         const char *key, uint64_t off)
{
    sc_report_t          *r   = arg;
    Dango__Store__Record *rec = &r->recs[r->req.n_records];

    dango__store__record__init(rec);
    rec->key.data               = (uint8_t *)key;
    rec->key.len                = h->key_len;
    rec->size                   = h->value_len;
    rec->checksum               = h->checksum;
    rec->put_id                 = h->put_id;
    rec->addr                   = (uint64_t)(uintptr_t)r->c->seg_base + off;
    r->ptrs[r->req.n_records++] = rec;
    r->bytes += h->key_len;
    if ((r->req.n_records == SC_REPORT_CHUNK) ||
        (r->bytes >= SC_REPORT_CHUNK_BYTES)) {
        return sc_report_send(r, 1);
    }

    return 0;
}

/*
 * Registers our segment again with a master that does not know it (a new
 * or restarted master, or one that expired us). With it go the committed
 * records the segment holds, found by a scan, in chunks: a master that is
 * rebuilding serves them again as they were (others ignore them), and the
 * segment takes no new objects until the last chunk has arrived.
 */
static int sc_remount(dango_store_client_t *c, uint64_t timeout_ns)
{
    sc_report_t           *r;
    Dango__Store__ClientId id;
    Dango__Store__Segment  seg;
    Dango__Store__Segment *segs[1] = {&seg};
    int                    rc;

    r = dango_calloc(1, sizeof(*r), "store_remount");
    if (r == NULL) {
        return DANGO_ENOMEM;
    }

    dango__store__remount_req__init(&r->req);
    sc_client_id(c, &id);
    r->c          = c;
    r->timeout_ns = timeout_ns;
    r->req.client = &id;
    /* Disk tier (store_client_disk.c): its report comes separately. */
    r->req.disk_tier = __atomic_load_n(&c->disk, __ATOMIC_ACQUIRE) != NULL;
    if (c->seg_base != NULL) {
        sc_segment_msg(c, &seg);
        r->req.n_segments = 1;
        r->req.segments   = segs;
        dango__store_rec_scan(c->seg_base, c->seg_size, sc_report_rec, r);
    }

    rc = r->rc;
    if (rc == 0) {
        rc = sc_report_send(r, 0);
    }

    if ((rc == 0) && (r->sent > 0)) {
        dango_info("store client %s: reported %zu objects held in its segment",
                   c->name, r->sent);
    }

    dango_free(r);
    return rc;
}

static int sc_ping(dango_store_client_t *c, uint64_t timeout_ns, int *status_p)
{
    Dango__Store__PingReq   req  = DANGO__STORE__PING_REQ__INIT;
    Dango__Store__PingResp *resp = NULL;
    Dango__Store__ClientId  id;
    int                     rc;

    sc_client_id(c, &id);
    req.client = &id;
    rc         = dango__sc_call(c, DANGO_STORE_M_PING, &req.base,
                                &dango__store__ping_resp__descriptor,
                                (ProtobufCMessage **)&resp, timeout_ns);
    if (rc != 0) {
        return rc;
    }

    *status_p = resp->status;
    for (size_t i = 0; (i < resp->n_tombs) && (c->seg_base != NULL); i++) {
        uint64_t addr = resp->tombs[i]->addr;
        uint64_t base = (uint64_t)(uintptr_t)c->seg_base;
        uint64_t want = resp->tombs[i]->put_id ^ DANGO_STORE_REC_COMMIT_XOR;

        /* Cleared only while it still is the removed put's record: a new
         * object in the same place has another commit word. */
        if ((addr >= base) &&
            (addr - base <= c->seg_size - DANGO_STORE_REC_HDR_SIZE) &&
            (addr % DANGO_STORE_REC_ALIGN == 0)) {
            uint64_t *commit =
                (uint64_t *)(uintptr_t)(addr + offsetof(dango_store_rec_hdr_t,
                                                        commit));

            __atomic_compare_exchange_n(commit, &want, 0, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED);
        }
    }

    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

/* One liveness round: ping, and (re)mount when the master asks or when it
 * has not seen our segment yet. */
static void sc_liveness(dango_store_client_t *c, uint64_t timeout_ns,
                        unsigned *failures)
{
    int status = 0;
    int rc     = sc_ping(c, timeout_ns, &status);

    if (rc != 0) {
        __atomic_store_n(&c->health, DANGO_EPEER_GONE, __ATOMIC_RELAXED);
        if (++*failures == c->cfg.ping_failures) {
            dango_warn("store client %s: master %s lost after %u pings: %s",
                       c->name, c->master_addr, *failures, dango_strerror(rc));
            /* Mount again whatever the next answer says. */
            __atomic_store_n(&c->mounted, 0, __ATOMIC_RELAXED);
        }

        return;
    }

    if (*failures >= c->cfg.ping_failures) {
        dango_info("store client %s: master %s answers again", c->name,
                   c->master_addr);
    }

    *failures = 0;
    __atomic_store_n(&c->health, 0, __ATOMIC_RELAXED);
    if ((status == DANGO_ENEED_REMOUNT) ||
        !__atomic_load_n(&c->mounted, __ATOMIC_RELAXED)) {
        /* A master that lost us may have lost the leases too, and the
         * slots it granted. */
        dango__sc_loc_forget_all(c);
        dango__sc_slot_forget_all(c);
        rc = sc_remount(c, timeout_ns);
        if (rc == 0) {
            __atomic_store_n(&c->mounted, 1, __ATOMIC_RELAXED);
            dango_info("store client %s: segment mounted on %s", c->name,
                       c->master_addr);
        } else {
            dango_warn("store client %s: remount on %s failed: %s", c->name,
                       c->master_addr, dango_strerror(rc));
        }
    }
}

static void *ping_thread(void *arg)
{
    dango_store_client_t *c        = arg;
    unsigned              failures = 0;
    uint64_t              timeout =
        DANGO_MIN(c->cfg.rpc_timeout,
                  DANGO_MAX(c->cfg.ping_interval * 2, DANGO_NSEC_PER_SEC));

    pthread_mutex_lock(&c->ping_lock);
    while (!c->ping_stop) {
        struct timespec ts;
        uint64_t        ns;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ns = (uint64_t)ts.tv_sec * DANGO_NSEC_PER_SEC + (uint64_t)ts.tv_nsec +
             c->cfg.ping_interval;
        ts.tv_sec  = (time_t)(ns / DANGO_NSEC_PER_SEC);
        ts.tv_nsec = (long)(ns % DANGO_NSEC_PER_SEC);
        while (!c->ping_stop &&
               (pthread_cond_timedwait(&c->ping_cond, &c->ping_lock, &ts) !=
                ETIMEDOUT)) {
        }

        if (c->ping_stop) {
            break;
        }

        pthread_mutex_unlock(&c->ping_lock);
        sc_liveness(c, timeout, &failures);
        dango__sc_slot_flush(c, 0);
        pthread_mutex_lock(&c->ping_lock);
    }

    pthread_mutex_unlock(&c->ping_lock);
    return NULL;
}

/* ---------- create / destroy ---------- */

static int sc_params(dango_store_client_t *c, const dango_store_params_t *p,
                     dango_xfer_engine_params_t *xp)
{
    uint64_t mask = (p != NULL) ? p->field_mask : 0;

    memset(xp, 0, sizeof(*xp));
    c->seg_size = c->cfg.segment_size;
    if (mask & DANGO_STORE_PARAM_SEGMENT_SIZE) {
        c->seg_size = p->segment_size;
    }

    if (mask & DANGO_STORE_PARAM_BUFFER_SIZE) {
        c->cfg.local_buffer_size = p->local_buffer_size;
    }

    if ((c->seg_size != 0) &&
        ((c->seg_size < SC_SEGMENT_MIN) || (c->seg_size > SC_SEGMENT_MAX))) {
        dango_error("store client: segment size %" PRIu64
                    " outside 1 KiB .. 1 TiB",
                    c->seg_size);
        return DANGO_EINVAL;
    }

    if (c->cfg.local_buffer_size > SC_SEGMENT_MAX) {
        dango_error("store client: local buffer size %zu above 1 TiB",
                    c->cfg.local_buffer_size);
        return DANGO_EINVAL;
    }

    if ((c->cfg.replica_num == 0) ||
        (c->cfg.replica_num > DANGO_STORE_REPLICA_MAX)) {
        dango_error("store client: STORE_REPLICA_NUM %lu outside 1..%d",
                    c->cfg.replica_num, DANGO_STORE_REPLICA_MAX);
        return DANGO_ECONFIG;
    }

    if (c->cfg.master_lanes > SC_MASTER_LANES_MAX) {
        dango_error("store client: STORE_MASTER_LANES %lu above %u",
                    c->cfg.master_lanes, SC_MASTER_LANES_MAX);
        return DANGO_ECONFIG;
    }

    if (c->cfg.location_cache_entries > SC_LOC_ENTRIES_MAX) {
        dango_error("store client: STORE_LOCATION_CACHE_ENTRIES %lu above %u",
                    c->cfg.location_cache_entries, SC_LOC_ENTRIES_MAX);
        return DANGO_ECONFIG;
    }

    if ((c->cfg.commit_queue == 0) || (c->cfg.ping_interval == 0) ||
        (c->cfg.rpc_timeout == 0) || (c->cfg.transfer_timeout == 0)) {
        dango_error("store client: STORE_COMMIT_QUEUE, STORE_PING_INTERVAL, "
                    "STORE_RPC_TIMEOUT and STORE_TRANSFER_TIMEOUT must be "
                    "> 0");
        return DANGO_ECONFIG;
    }

    c->master_addr = dango_strdup((mask & DANGO_STORE_PARAM_MASTER) &&
                                          (p->master_addr != NULL)
                                      ? p->master_addr
                                      : c->cfg.master,
                                  "store_master_addr");
    if (c->master_addr == NULL) {
        return DANGO_ENOMEM;
    }

    if ((mask & DANGO_STORE_PARAM_LOCAL_NAME) && (p->local_name != NULL)) {
        xp->field_mask |= DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME;
        xp->segment_name = p->local_name;
    }

    if ((mask & DANGO_STORE_PARAM_METADATA) && (p->metadata != NULL)) {
        xp->field_mask |= DANGO_XFER_ENGINE_PARAM_METADATA;
        xp->metadata = p->metadata;
    }

    if ((mask & DANGO_STORE_PARAM_TRANSPORTS) && (p->transports != NULL)) {
        xp->field_mask |= DANGO_XFER_ENGINE_PARAM_TRANSPORTS;
        xp->transports = p->transports;
    }

    if ((mask & DANGO_STORE_PARAM_LISTEN) && (p->listen_addr != NULL)) {
        xp->field_mask |= DANGO_XFER_ENGINE_PARAM_LISTEN;
        xp->listen_addr = p->listen_addr;
    }

    return 0;
}

static int sc_staging_create(dango_store_client_t *c)
{
    uint64_t off;
    int      rc;

    c->staging_size = c->cfg.local_buffer_size + SC_STAGING_RESERVE;
    rc = dango_xfer_mem_alloc(c->eng, c->staging_size, NULL, 0, &c->staging);
    if (rc != 0) {
        c->staging = NULL;
        return rc;
    }

    rc = dango__store_alloc_create(c->staging_size, DANGO_STORE_REC_ALIGN,
                                   &c->staging_alloc);
    if (rc != 0) {
        return rc;
    }

    /* The committer's words live in staging for the client's lifetime. */
    rc = dango__store_alloc_alloc(
        c->staging_alloc, SC_COMMIT_BATCH * sizeof(uint64_t), &off, NULL);
    if (rc != 0) {
        return rc;
    }

    c->commit_words = (uint64_t *)((char *)c->staging + off);
    return 0;
}

static int sc_own_segment(dango_store_client_t *c)
{
    const char *name = c->name;
    uint64_t    h    = dango_hash64(name, strlen(name));
    sc_seg_t   *s    = seg_new(name, h);

    if (s == NULL) {
        return DANGO_ENOMEM;
    }

    s->own       = 1;
    s->open      = 1;
    s->same_host = 1;
    s->id        = DANGO_XFER_LOCAL_SEGMENT;
    seg_insert(c, s);
    c->own_seg = s;
    return 0;
}

static void sc_free(dango_store_client_t *c)
{
    dango__sc_loc_cleanup(c);
    dango__sc_slot_cleanup(c);
    for (size_t i = 0; i < c->pool_count; i++) {
        dango_xfer_batch_destroy(c->pool[(c->pool_head + i) % SC_POOL_MAX]);
    }

    seg_cache_free(c);
    if (c->commit_batch != NULL) {
        dango_xfer_batch_destroy(c->commit_batch);
    }

    dango__store_alloc_destroy(c->staging_alloc);
    if (c->eng != NULL) {
        if (c->staging != NULL) {
            dango_xfer_mem_free(c->eng, c->staging);
        }

        if (c->seg_base != NULL) {
            dango_xfer_mem_free(c->eng, c->seg_base);
        }

        dango_xfer_engine_destroy(c->eng);
    }

    dango_free(c->commit_ring);
    dango_free(c->ureg);
    dango_free(c->master_addr);
    pthread_mutex_destroy(&c->staging_lock);
    pthread_mutex_destroy(&c->pool_lock);
    pthread_rwlock_destroy(&c->seg_lock);
    pthread_mutex_destroy(&c->seg_open_lock);
    pthread_rwlock_destroy(&c->ureg_lock);
    pthread_mutex_destroy(&c->ping_lock);
    pthread_cond_destroy(&c->ping_cond);
    pthread_mutex_destroy(&c->commit_lock);
    pthread_cond_destroy(&c->commit_cond);
    dango__config_free(&dango__store_client_config_table, &c->cfg);
    dango_free(c);
}

static void sc_threads_stop(dango_store_client_t *c)
{
    dango__sc_events_stop(c);
    if (c->ping_started) {
        pthread_mutex_lock(&c->ping_lock);
        c->ping_stop = 1;
        pthread_cond_signal(&c->ping_cond);
        pthread_mutex_unlock(&c->ping_lock);
        pthread_join(c->ping_thread, NULL);
        c->ping_started = 0;
    }

    if (c->commit_started) {
        pthread_mutex_lock(&c->commit_lock);
        c->commit_stop = 1;
        pthread_cond_signal(&c->commit_cond);
        pthread_mutex_unlock(&c->commit_lock);
        pthread_join(c->commit_thread, NULL);
        c->commit_started = 0;
    }
}

int dango_store_client_create(const dango_store_params_t *params,
                              const dango_config_t       *config,
                              dango_store_client_t      **client_p)
{
    dango_xfer_engine_params_t xp;
    dango_rpc_client_params_t  rp;
    dango_store_client_t      *c;
    pthread_condattr_t         ca;
    uint64_t                   ids[4];
    int                        rc;

    if (client_p == NULL) {
        return DANGO_EINVAL;
    }

    c = dango_calloc(1, sizeof(*c), "store_client");
    if (c == NULL) {
        return DANGO_ENOMEM;
    }

    pthread_mutex_init(&c->staging_lock, NULL);
    pthread_mutex_init(&c->pool_lock, NULL);
    pthread_rwlock_init(&c->seg_lock, NULL);
    pthread_mutex_init(&c->seg_open_lock, NULL);
    pthread_rwlock_init(&c->ureg_lock, NULL);
    pthread_mutex_init(&c->ping_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->ping_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->commit_lock, NULL);
    pthread_cond_init(&c->commit_cond, NULL);

    rc =
        dango__config_parse(config, &dango__store_client_config_table, &c->cfg);
    if (rc != 0) {
        memset(&c->cfg, 0, sizeof(c->cfg));
        goto err_free;
    }

    rc = sc_params(c, params, &xp);
    if (rc != 0) {
        goto err_free;
    }

    rc = dango_random_bytes(ids, sizeof(ids));
    if (rc != 0) {
        goto err_free;
    }

    c->id_hi  = ids[0];
    c->id_lo  = ids[1];
    c->seg_hi = ids[2];
    c->seg_lo = ids[3];
    rc        = dango_xfer_engine_create(&xp, config, &c->eng);
    if (rc != 0) {
        c->eng = NULL;
        goto err_free;
    }

    /* The master compares it to pick same-host replicas. */
    snprintf(c->host_id, sizeof(c->host_id), "%s",
             dango_xfer_engine_host_id(c->eng));
    c->name = dango_xfer_engine_segment_name(c->eng);
    if (c->seg_size != 0) {
        rc = dango_xfer_mem_alloc(c->eng, c->seg_size, NULL,
                                  DANGO_XFER_MEM_REMOTE, &c->seg_base);
        if (rc != 0) {
            c->seg_base = NULL;
            goto err_free;
        }
    }

    rc = sc_staging_create(c);
    if (rc == 0) {
        rc = dango__sc_loc_init(c);
    }
    if (rc == 0) {
        rc = dango__sc_slot_init(c);
    }
    if (rc != 0) {
        goto err_free;
    }

    c->seg_tab_size = SC_SEG_TAB_INIT;
    c->seg_tab =
        dango_calloc(c->seg_tab_size, sizeof(*c->seg_tab), "store_seg_tab");
    c->commit_cap  = c->cfg.commit_queue;
    c->commit_ring = dango_calloc(c->commit_cap, sizeof(*c->commit_ring),
                                  "store_commit_ring");
    if ((c->seg_tab == NULL) || (c->commit_ring == NULL)) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    rc = (c->seg_base != NULL) ? sc_own_segment(c) : 0;
    if (rc != 0) {
        goto err_free;
    }

    rc = dango_xfer_batch_create(c->eng, SC_COMMIT_BATCH, &c->commit_batch);
    if (rc != 0) {
        c->commit_batch = NULL;
        goto err_free;
    }

    memset(&rp, 0, sizeof(rp));
    rp.connect_timeout_ns =
        DANGO_MIN(c->cfg.connect_timeout, c->cfg.rpc_timeout);
    rp.call_timeout_ns = c->cfg.rpc_timeout;
    rp.name            = "store-rpc";
    rp.lanes = (c->cfg.master_lanes == 0) ? -1 : (int)c->cfg.master_lanes;
    rp.local = c->cfg.master_local ? 0 : -1;
    if (dango__store_ha_is_url(c->master_addr)) {
        rc = dango__sc_ha_create(c); /* follows the elected leader */
    } else {
        rc = dango_rpc_client_create(c->master_addr, dango_auth_env_token(),
                                     &rp, &c->rpc);
    }
    if (rc != 0) {
        c->rpc = NULL;
        goto err_free;
    }

    /* The master may be down: then the ping thread mounts later. */
    rc = (c->seg_base != NULL) ? sc_mount(c, 0) : sc_remount(c, 0);
    if (rc == 0) {
        c->mounted = 1;
    } else {
        c->health = DANGO_EPEER_GONE;
        dango_warn("store client %s: master %s not reachable yet: %s", c->name,
                   c->master_addr, dango_strerror(rc));
    }

    rc = pthread_create(&c->commit_thread, NULL, commit_thread, c);
    if (rc != 0) {
        rc = dango_err_from_errno(rc);
        goto err_rpc;
    }

    c->commit_started = 1;
    rc                = pthread_create(&c->ping_thread, NULL, ping_thread, c);
    if (rc != 0) {
        rc = dango_err_from_errno(rc);
        goto err_threads;
    }

    c->ping_started = 1;
    rc              = dango__sc_events_start(c);
    if (rc == 0) {
        rc = dango__sc_disk_start(c);
    }
    if (rc != 0) {
        goto err_threads;
    }

    dango_info("store client %s: segment %" PRIu64 " bytes, staging %zu "
               "bytes, master %s",
               c->name, c->seg_size, c->cfg.local_buffer_size, c->master_addr);
    *client_p = c;
    return 0;

err_threads:
    sc_threads_stop(c);
err_rpc:
    dango__sc_ha_destroy(c);
    dango_rpc_client_destroy(c->rpc);
err_free:
    sc_free(c);
    return rc;
}

void dango_store_client_destroy(dango_store_client_t *c)
{
    if (c == NULL) {
        return;
    }

    dango__sc_disk_stop(c);
    sc_threads_stop(c);
    dango__sc_slot_flush(c, 1);
    if ((c->seg_base != NULL) &&
        __atomic_load_n(&c->mounted, __ATOMIC_RELAXED)) {
        Dango__Store__UnmountReq req = DANGO__STORE__UNMOUNT_REQ__INIT;
        Dango__Store__ClientId   id;
        int                      rc;

        sc_client_id(c, &id);
        req.client = &id;
        req.id_hi  = c->seg_hi;
        req.id_lo  = c->seg_lo;
        rc         = dango__sc_call(
                    c, DANGO_STORE_M_UNMOUNT, &req.base, NULL, NULL,
                    DANGO_MIN(c->cfg.rpc_timeout, 5 * DANGO_NSEC_PER_SEC));
        if (rc != 0) {
            dango_warn("store client %s: unmount failed: %s", c->name,
                       dango_strerror(rc));
        }
    }

    dango__sc_ha_destroy(c);
    dango_rpc_client_destroy(c->rpc);
    dango_info("store client %s: destroyed", c->name);
    sc_free(c);
}

const char *dango_store_client_name(const dango_store_client_t *c)
{
    return (c != NULL) ? c->name : NULL;
}

int dango_store_health(dango_store_client_t *c)
{
    if (c == NULL) {
        return DANGO_EINVAL;
    }

    return __atomic_load_n(&c->health, __ATOMIC_RELAXED);
}

/* ---------- registered buffers ---------- */

int dango_store_register_buffer(dango_store_client_t *c, void *buf, size_t len)
{
    uintptr_t a = (uintptr_t)buf;
    size_t    i;
    int       rc;

    if ((c == NULL) || (buf == NULL) || (len == 0) || (a + len < a)) {
        return DANGO_EINVAL;
    }

    pthread_rwlock_wrlock(&c->ureg_lock);
    i = ureg_upper(c, a);
    if (((i > 0) && (c->ureg[i - 1].addr + c->ureg[i - 1].len > a)) ||
        ((i < c->ureg_count) && (a + len > c->ureg[i].addr))) {
        pthread_rwlock_unlock(&c->ureg_lock);
        return DANGO_EOVERLAP;
    }

    if (c->ureg_count == c->ureg_cap) {
        size_t     cap = c->ureg_cap ? c->ureg_cap * 2 : 16;
        sc_ureg_t *n   = dango_realloc(c->ureg, cap * sizeof(*n), "store_ureg");

        if (n == NULL) {
            pthread_rwlock_unlock(&c->ureg_lock);
            return DANGO_ENOMEM;
        }

        c->ureg     = n;
        c->ureg_cap = cap;
    }

    rc = dango_xfer_mem_register(c->eng, buf, len, NULL, 0);
    if (rc != 0) {
        pthread_rwlock_unlock(&c->ureg_lock);
        return rc;
    }

    memmove(&c->ureg[i + 1], &c->ureg[i],
            (c->ureg_count - i) * sizeof(*c->ureg));
    c->ureg[i].addr = a;
    c->ureg[i].len  = len;
    c->ureg_count++;
    pthread_rwlock_unlock(&c->ureg_lock);
    return 0;
}

int dango_store_unregister_buffer(dango_store_client_t *c, void *buf)
{
    uintptr_t a = (uintptr_t)buf;
    size_t    i;
    int       rc;

    if ((c == NULL) || (buf == NULL)) {
        return DANGO_EINVAL;
    }

    pthread_rwlock_wrlock(&c->ureg_lock);
    i = ureg_upper(c, a);
    if ((i == 0) || (c->ureg[i - 1].addr != a)) {
        pthread_rwlock_unlock(&c->ureg_lock);
        return DANGO_ENOTREG;
    }

    rc = dango_xfer_mem_unregister(c->eng, buf);
    if (rc != 0) {
        pthread_rwlock_unlock(&c->ureg_lock);
        return (rc == DANGO_ENOENT) ? DANGO_ENOTREG : rc;
    }

    memmove(&c->ureg[i - 1], &c->ureg[i],
            (c->ureg_count - i) * sizeof(*c->ureg));
    c->ureg_count--;
    pthread_rwlock_unlock(&c->ureg_lock);
    return 0;
}

/* ---------- reports ---------- */

int dango__sc_report_bad(dango_store_client_t *c, const char *key,
                         uint64_t put_id, const char *segment, uint64_t addr,
                         int reason)
{
    Dango__Store__ReportBadReq req = DANGO__STORE__REPORT_BAD_REQ__INIT;
    Dango__Store__ClientId     id;
    int                        rc;

    sc_client_id(c, &id);
    req.client  = &id;
    req.key     = (char *)key;
    req.put_id  = put_id;
    req.segment = (char *)segment;
    req.addr    = addr;
    req.reason  = reason;
    dango_warn("store client %s: replica of %s at %s 0x%" PRIx64 " is bad: %s",
               c->name, key, segment, addr, dango_strerror(reason));
    rc = dango__sc_call(c, DANGO_STORE_M_REPORT_BAD, &req.base, NULL, NULL, 0);
    if (rc != 0) {
        dango_debug("store client %s: report of %s failed: %s", c->name, key,
                    dango_strerror(rc));
    }

    return rc;
}

/* ---------- metadata calls ---------- */

/* Validates @n keys for a batch call (whole-call errors only). */
static int sc_batch_check(dango_store_client_t *c, size_t n,
                          const char *const *keys, const void *out)
{
    if ((c == NULL) || (n == 0) || (n > DANGO_STORE_BATCH_MAX) ||
        (keys == NULL) || (out == NULL)) {
        return DANGO_EINVAL;
    }

    return 0;
}

int dango__sc_again_wait(uint32_t retry_ms, uint64_t deadline)
{
    uint64_t ns =
        DANGO_MAX((uint64_t)retry_ms, (uint64_t)1) * DANGO_NSEC_PER_MSEC;
    struct timespec ts;

    if (dango_time_ns() + ns >= deadline) {
        return DANGO_ETIMEDOUT;
    }

    ts.tv_sec  = (time_t)(ns / DANGO_NSEC_PER_SEC);
    ts.tv_nsec = (long)(ns % DANGO_NSEC_PER_SEC);
    while ((nanosleep(&ts, &ts) != 0) && (errno == EINTR)) {
    }
    return 0;
}

/*
 * Sends the valid keys among @keys with @method (KeysReq -> StatusList) and
 * fills @results: the key's validation error, or the master's status.
 */
static int sc_keys_status(dango_store_client_t *c, uint32_t method, size_t n,
                          const char *const *keys, int force, int *results)
{
    Dango__Store__KeysReq     req  = DANGO__STORE__KEYS_REQ__INIT;
    Dango__Store__StatusList *resp = NULL;
    char                     *one[1];
    char                    **send = one;
    size_t                   *idx = NULL, one_idx[1], k = 0, len;
    uint64_t                  deadline;
    int                       rc;

    if (n > 1) {
        send = dango_malloc(n * sizeof(*send), "store_keys");
        idx  = dango_malloc(n * sizeof(*idx), "store_keys_idx");
        if ((send == NULL) || (idx == NULL)) {
            rc = DANGO_ENOMEM;
            goto out;
        }
    } else {
        idx = one_idx;
    }

    for (size_t i = 0; i < n; i++) {
        results[i] = dango__sc_key_check(keys[i], &len);
        if (results[i] == 0) {
            send[k] = (char *)keys[i];
            idx[k]  = i;
            k++;
        }
    }

    rc = 0;
    if (k == 0) {
        goto out;
    }

    deadline = dango_time_ns() + c->cfg.rpc_timeout;
    for (;;) {
        size_t   again = 0;
        uint32_t wait;

        req.n_keys = k;
        req.keys   = send;
        req.force  = force != 0;
        rc         = dango__sc_call(c, method, &req.base,
                                    &dango__store__status_list__descriptor,
                                    (ProtobufCMessage **)&resp, 0);
        if (rc != 0) {
            goto out;
        }

        if (resp->n_status != k) {
            rc = DANGO_EPROTO;
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            goto out;
        }

        /* A forced remove of an object other clients may still read
         * through cached locations waits for them: those keys again. */
        for (size_t j = 0; j < k; j++) {
            results[idx[j]] = resp->status[j];
            if (resp->status[j] == DANGO_EAGAIN) {
                send[again] = send[j];
                idx[again]  = idx[j];
                again++;
            }
        }

        wait = resp->retry_ms;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (again == 0) {
            break;
        }

        if (dango__sc_again_wait(wait, deadline) != 0) {
            for (size_t j = 0; j < again; j++) {
                results[idx[j]] = DANGO_ETIMEDOUT;
            }
            break;
        }

        k = again;
    }

out:
    if (n > 1) {
        dango_free(send);
        dango_free(idx);
    }

    return rc;
}

int dango_store_exist(dango_store_client_t *c, const char *key)
{
    int res, rc;

    if (c == NULL) {
        return DANGO_EINVAL;
    }

    rc = sc_keys_status(c, DANGO_STORE_M_EXIST, 1, &key, 0, &res);
    return (rc != 0) ? rc : res;
}

int dango_store_batch_exist(dango_store_client_t *c, size_t n,
                            const char *const *keys, int *results)
{
    int rc = sc_batch_check(c, n, keys, results);

    if (rc != 0) {
        return rc;
    }

    return sc_keys_status(c, DANGO_STORE_M_EXIST, n, keys, 0, results);
}

int dango_store_remove(dango_store_client_t *c, const char *key, int force)
{
    int res, rc;

    if (c == NULL) {
        return DANGO_EINVAL;
    }

    rc = sc_keys_status(c, DANGO_STORE_M_REMOVE, 1, &key, force, &res);
    dango__sc_loc_forget_keys(c, 1, &key);
    return (rc != 0) ? rc : res;
}

int dango_store_batch_remove(dango_store_client_t *c, size_t n,
                             const char *const *keys, int force, int *results)
{
    int rc = sc_batch_check(c, n, keys, results);

    if (rc != 0) {
        return rc;
    }

    rc = sc_keys_status(c, DANGO_STORE_M_REMOVE, n, keys, force, results);
    dango__sc_loc_forget_keys(c, n, keys);
    return rc;
}

/* GetReplicaList without a lease, for size and stat. */
static int sc_describe(dango_store_client_t *c, const char *key,
                       Dango__Store__GetResp **resp_p)
{
    Dango__Store__KeysReq  req  = DANGO__STORE__KEYS_REQ__INIT;
    Dango__Store__GetResp *resp = NULL;
    char                  *k    = (char *)key;
    size_t                 len;
    int                    rc;

    if (c == NULL) {
        return DANGO_EINVAL;
    }

    rc = dango__sc_key_check(key, &len);
    if (rc != 0) {
        return rc;
    }

    req.n_keys   = 1;
    req.keys     = &k;
    req.no_lease = 1;
    rc           = dango__sc_call(c, DANGO_STORE_M_GET_REPLICAS, &req.base,
                                  &dango__store__get_resp__descriptor,
                                  (ProtobufCMessage **)&resp, 0);
    if (rc != 0) {
        return rc;
    }

    if (resp->n_items != 1) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return DANGO_EPROTO;
    }

    rc = resp->items[0]->status;
    if ((rc == DANGO_ENO_OBJECT) && resp->items[0]->on_disk) {
        rc = 0; /* on a node's disk tier only: it exists */
    }
    if (rc != 0) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return rc;
    }

    *resp_p = resp;
    return 0;
}

int64_t dango_store_size(dango_store_client_t *c, const char *key)
{
    Dango__Store__GetResp *resp;
    int64_t                size;
    int                    rc = sc_describe(c, key, &resp);

    if (rc != 0) {
        return rc;
    }

    size = (int64_t)resp->items[0]->size;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return size;
}

int dango_store_stat(dango_store_client_t *c, const char *key,
                     dango_store_object_info_t *info)
{
    Dango__Store__GetResp *resp;
    Dango__Store__GetItem *it;
    int                    rc;

    if (info == NULL) {
        return DANGO_EINVAL;
    }

    rc = sc_describe(c, key, &resp);
    if (rc != 0) {
        return rc;
    }

    it = resp->items[0];
    memset(info, 0, sizeof(*info));
    info->size             = it->size;
    info->checksum         = it->checksum;
    info->lease_ms_left    = it->lease_ms_left;
    info->hard_pinned      = it->hard_pin;
    info->soft_pin_ms_left = it->soft_pin_ms_left;
    info->on_disk          = it->on_disk;
    for (size_t i = 0; (i < it->n_replicas) && (i < DANGO_STORE_REPLICA_MAX);
         i++) {
        dango_store_replica_info_t *r = &info->replicas[info->num_replicas++];

        snprintf(r->segment, sizeof(r->segment), "%s",
                 it->replicas[i]->segment ? it->replicas[i]->segment : "");
        r->addr     = it->replicas[i]->addr;
        r->complete = it->replicas[i]->status == DANGO_STORE_REPLICA_COMPLETE;
    }

    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static int64_t sc_remove_match(dango_store_client_t *c, const char *regex,
                               int all, int force)
{
    Dango__Store__RemoveMatchReq req   = DANGO__STORE__REMOVE_MATCH_REQ__INIT;
    Dango__Store__CountResp     *resp  = NULL;
    int64_t                      count = 0;
    uint64_t deadline                  = dango_time_ns() + c->cfg.rpc_timeout;
    int      rc;

    req.regex = (char *)regex;
    req.all   = all != 0;
    req.force = force != 0;
    for (;;) {
        int64_t  deferred;
        uint32_t wait;

        rc = dango__sc_call(c, DANGO_STORE_M_REMOVE_MATCH, &req.base,
                            &dango__store__count_resp__descriptor,
                            (ProtobufCMessage **)&resp, 0);
        dango__sc_loc_forget_all(c);
        if ((rc != 0) && (count > 0)) {
            /* The count removed stands; the objects left stay. */
            dango_warn("store client %s: remove by pattern stopped after "
                       "%" PRId64 " objects: %s",
                       c->name, count, dango_strerror(rc));
            return count;
        }
        if (rc != 0) {
            return rc;
        }

        count += resp->count;
        deferred = resp->deferred;
        wait     = resp->retry_ms;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        /* Objects clients may still read through cached locations were
         * left: the same call again once they are done. */
        if ((deferred <= 0) || (dango__sc_again_wait(wait, deadline) != 0)) {
            return count;
        }
    }
}

int64_t dango_store_remove_by_regex(dango_store_client_t *c, const char *regex,
                                    int force)
{
    regex_t re;

    if ((c == NULL) || (regex == NULL) || (regex[0] == '\0')) {
        return DANGO_EINVAL;
    }

    /* Refuse what the master would refuse, without a round trip. */
    if (regcomp(&re, regex, REG_EXTENDED | REG_NOSUB) != 0) {
        return DANGO_EINVAL;
    }

    regfree(&re);
    return sc_remove_match(c, regex, 0, force);
}

int64_t dango_store_remove_all(dango_store_client_t *c, int force)
{
    if (c == NULL) {
        return DANGO_EINVAL;
    }

    return sc_remove_match(c, "", 1, force);
}

int dango_store_pool_stat(dango_store_client_t    *c,
                          dango_store_pool_info_t *info)
{
    Dango__Store__PoolStatResp *resp = NULL;
    int                         rc;

    if ((c == NULL) || (info == NULL)) {
        return DANGO_EINVAL;
    }

    rc = dango__sc_call(c, DANGO_STORE_M_POOL_STAT, NULL,
                        &dango__store__pool_stat_resp__descriptor,
                        (ProtobufCMessage **)&resp, 0);
    if (rc != 0) {
        return rc;
    }

    info->capacity     = resp->capacity;
    info->used         = resp->used;
    info->keys         = resp->keys;
    info->segments     = resp->segments;
    info->clients      = resp->clients;
    info->evicted_keys = resp->evicted_keys;

    /* Disk tiers. */
    info->disk_capacity   = resp->disk_capacity;
    info->disk_used       = resp->disk_used;
    info->disk_keys       = resp->disk_keys;
    info->disk_offloads   = resp->disk_offloads;
    info->disk_loads      = resp->disk_loads;
    info->disk_promotions = resp->disk_promotions;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int dango_store_list(dango_store_client_t *c, const char *prefix,
                     dango_store_list_cb cb, void *arg)
{
    Dango__Store__ListReq req   = DANGO__STORE__LIST_REQ__INIT;
    char                 *after = NULL;
    int                   rc    = 0;

    if ((c == NULL) || (cb == NULL) ||
        ((prefix != NULL) &&
         (strnlen(prefix, DANGO_STORE_KEY_MAX + 1) > DANGO_STORE_KEY_MAX))) {
        return DANGO_EINVAL;
    }

    req.prefix = (char *)(prefix ? prefix : "");
    req.limit  = SC_LIST_PAGE;
    for (;;) {
        Dango__Store__ListResp *resp = NULL;
        int                     more;

        req.after = after ? after : "";
        rc        = dango__sc_call(c, DANGO_STORE_M_LIST, &req.base,
                                   &dango__store__list_resp__descriptor,
                                   (ProtobufCMessage **)&resp, 0);
        if (rc != 0) {
            break;
        }

        for (size_t i = 0; (i < resp->n_keys) && (rc == 0); i++) {
            rc = cb(arg, resp->keys[i],
                    (i < resp->n_sizes) ? resp->sizes[i] : 0);
        }

        more = resp->more && (resp->n_keys > 0);
        if ((rc == 0) && more) {
            dango_free(after);
            after = dango_strdup(resp->keys[resp->n_keys - 1], "store_list");
            if (after == NULL) {
                rc = DANGO_ENOMEM;
            }
        }

        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if ((rc != 0) || !more) {
            break;
        }
    }

    dango_free(after);
    return rc;
}
