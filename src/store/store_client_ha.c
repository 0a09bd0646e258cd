/*
 * Following the elected store master (STORE_MASTER = etcd://...).
 *
 * DESIGN
 * - The leader is the value of the etcd key dango/<STORE_CLUSTER_ID>/master
 *   (store_ha.h), its term the key's create revision. A watch with a
 *   snapshot delivers the current key and every change; each call that
 *   fails in a way that suggests a leader change also re-reads the key
 *   (at most every REREAD_MS), so a watch that is reconnecting delays
 *   nothing.
 * - Each leader gets its own RPC client (`sc_ha_conn_t`), fenced at the
 *   highest term seen: a reply stamped with an older term fails with
 *   DANGO_ESTALE_TERM and is never acted upon. A newer term (or, with the
 *   same term, another address) replaces the current connection; a
 *   deleted key drops it (calls wait for the next leader). A replaced
 *   connection is freed by the last call still using it (reference
 *   counts under `lock`), so a call is never cut short by a switch; it
 *   ends by itself (the old leader's ENOT_LEADER, a lost connection, or
 *   its attempt timeout).
 * - A call (dango__sc_ha_call) is retried on: DANGO_ENOT_LEADER (standby,
 *   warming up or deposed), DANGO_ESTALE_TERM, DANGO_ECONNREFUSED and
 *   DANGO_EPEER_GONE (never reached the server), and DANGO_ECONNRESET or
 *   DANGO_ETIMEDOUT when the leader changed since the attempt started
 *   (the old leader's effects are discarded by the new one, which
 *   rebuilds from the nodes). Backoff doubles from 20 ms to 500 ms; the
 *   whole call is bounded by its timeout (STORE_HA_TIMEOUT by default),
 *   each attempt by STORE_RPC_TIMEOUT. A put whose PutStart went to the
 *   old leader and whose PutEnd reaches the new one fails
 *   (ENO_OBJECT/EINVALID_WRITE) and is revoked: reported to the writer,
 *   never half-visible.
 */
#include "store/store_client_int.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/time.h"
#include "metadata/etcd.h"
#include "net/auth.h"
#include "store/store_ha.h"
#include "store/store_proto.h"

#define BACKOFF_MIN_MS 20ull
#define BACKOFF_MAX_MS 500ull
#define REREAD_MS      100ull

/* One connection to one leader. */
typedef struct sc_ha_conn {
    dango_rpc_client_t *rpc;
    int64_t             term;
    unsigned            refs; /* under lock: the owner (current) + calls */
    char                addr[DANGO_STORE_HA_ADDR_MAX];
} sc_ha_conn_t;

typedef struct sc_ha {
    dango_store_client_t *c;
    dango__etcd_t        *etcd;
    dango__etcd_watch_t  *watch;
    char                  key[DANGO_STORE_HA_CLUSTER_MAX + 32];
    size_t                key_len;

    pthread_mutex_t lock;
    pthread_cond_t  cond;     /* a leader appeared */
    sc_ha_conn_t   *cur;      /* under lock; NULL: no leader known */
    int64_t         max_term; /* under lock: highest term seen */
    uint64_t        changes;  /* under lock: leader switches */
    uint64_t        reread_at;
} sc_ha_t;

/* ---------- private functions ---------- */

static void conn_put(sc_ha_t *ha, sc_ha_conn_t *conn)
{
    int last;

    if (conn == NULL) {
        return;
    }

    pthread_mutex_lock(&ha->lock);
    last = (--conn->refs == 0);
    pthread_mutex_unlock(&ha->lock);
    if (last) {
        dango_rpc_client_destroy(conn->rpc);
        dango_free(conn);
    }
}

/*
 * Makes (@addr, @term) the leader when it is newer than the current one.
 * @addr NULL: the key is gone; the current connection is dropped.
 */
static void ha_apply(sc_ha_t *ha, const char *addr, size_t addr_len,
                     int64_t term)
{
    dango_store_client_t     *c = ha->c;
    dango_rpc_client_params_t rp;
    sc_ha_conn_t             *conn = NULL, *old;
    int                       rc;

    pthread_mutex_lock(&ha->lock);
    if ((addr != NULL) && (ha->cur != NULL) &&
        ((term < ha->cur->term) ||
         ((term == ha->cur->term) && (strlen(ha->cur->addr) == addr_len) &&
          (memcmp(ha->cur->addr, addr, addr_len) == 0)))) {
        pthread_mutex_unlock(&ha->lock);
        return; /* nothing new */
    }
    if ((addr != NULL) && (term < ha->max_term)) {
        pthread_mutex_unlock(&ha->lock);
        return; /* an older leader's key read late */
    }
    pthread_mutex_unlock(&ha->lock);

    if ((addr != NULL) && (addr_len > 0) &&
        (addr_len < DANGO_STORE_HA_ADDR_MAX)) {
        conn = dango_calloc(1, sizeof(*conn), "store_ha_conn");
        if (conn == NULL) {
            return;
        }

        memcpy(conn->addr, addr, addr_len);
        conn->term = term;
        conn->refs = 1;
        memset(&rp, 0, sizeof(rp));
        rp.connect_timeout_ns =
            DANGO_MIN(c->cfg.connect_timeout, c->cfg.rpc_timeout);
        rp.call_timeout_ns = c->cfg.rpc_timeout;
        rp.name            = "store-rpc";
        rp.lanes = (c->cfg.master_lanes == 0) ? -1 : (int)c->cfg.master_lanes;
        rp.local = c->cfg.master_local ? 0 : -1;
        rc = dango_rpc_client_create(conn->addr, dango_auth_env_token(), &rp,
                                     &conn->rpc);
        if (rc != 0) {
            dango_warn("store client %s: leader address %s unusable: %s",
                       c->name, conn->addr, dango_strerror(rc));
            dango_free(conn);
            return;
        }
    } else if (addr != NULL) {
        return; /* malformed value: wait for a valid one */
    }

    pthread_mutex_lock(&ha->lock);
    if ((conn != NULL) && ((term < ha->max_term) ||
                           ((ha->cur != NULL) && (ha->cur->term == term) &&
                            (strcmp(ha->cur->addr, conn->addr) == 0)))) {
        /* Overtaken meanwhile, or another thread applied the same. */
        pthread_mutex_unlock(&ha->lock);
        conn_put(ha, conn);
        return;
    }

    if (conn != NULL) {
        ha->max_term = term;
        dango_rpc_client_fence(conn->rpc, (uint64_t)term);
    }
    old = ha->cur;
    if ((old != NULL) && (conn != NULL)) {
        /* Calls still in flight on the deposed leader's connection must
         * not take its answers any more. */
        dango_rpc_client_fence(old->rpc, (uint64_t)term);
    }
    ha->cur = conn;
    ha->changes++;
    pthread_cond_broadcast(&ha->cond);
    pthread_mutex_unlock(&ha->lock);
    /* The leases behind cached locations were the old leader's, and so
     * were the slots. */
    dango__sc_loc_forget_all(c);
    dango__sc_slot_forget_all(c);

    if (conn != NULL) {
        dango_info("store client %s: master leader %s (term %lld)", c->name,
                   conn->addr, (long long)term);
    } else if (old != NULL) {
        dango_info("store client %s: master leader %s (term %lld) gone",
                   c->name, old->addr, (long long)old->term);
    }

    conn_put(ha, old);
}

static void ha_watch_cb(const dango__etcd_event_t *events, size_t count,
                        void *arg)
{
    sc_ha_t *ha = arg;

    for (size_t i = 0; i < count; i++) {
        const dango__etcd_event_t *ev = &events[i];

        if (ev->type == DANGO__ETCD_EV_PUT) {
            ha_apply(ha, ev->kv.value, ev->kv.value_len,
                     ev->kv.create_revision);
        } else if (ev->type == DANGO__ETCD_EV_DELETE) {
            ha_apply(ha, NULL, 0, 0);
        }
    }
}

/* Reads the key now (rate-limited across callers). */
static void ha_reread(sc_ha_t *ha)
{
    dango__etcd_kv_t *kv  = NULL;
    uint64_t          now = dango_time_ns();
    int               rc;

    pthread_mutex_lock(&ha->lock);
    if (now < ha->reread_at) {
        pthread_mutex_unlock(&ha->lock);
        return;
    }
    ha->reread_at = now + REREAD_MS * DANGO_NSEC_PER_MSEC;
    pthread_mutex_unlock(&ha->lock);

    rc = dango__etcd_get(ha->etcd, ha->key, ha->key_len, &kv, NULL);
    if (rc == 0) {
        ha_apply(ha, kv->value, kv->value_len, kv->create_revision);
        dango__etcd_kvs_free(kv, 1);
    } else if (rc == DANGO_ENOENT) {
        ha_apply(ha, NULL, 0, 0);
    }
}

/* The current connection with a reference, waiting for one until
 * @deadline; NULL when none appeared. *changes_p: the switch count. */
static sc_ha_conn_t *conn_get(sc_ha_t *ha, uint64_t deadline,
                              uint64_t *changes_p)
{
    sc_ha_conn_t *conn;

    pthread_mutex_lock(&ha->lock);
    while ((ha->cur == NULL) && (dango_time_ns() < deadline)) {
        uint64_t        left = deadline - dango_time_ns();
        struct timespec ts;

        /* Wake up now and then to re-read etcd ourselves. */
        left = DANGO_MIN(left, 200 * DANGO_NSEC_PER_MSEC);
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(left / DANGO_NSEC_PER_SEC);
        ts.tv_nsec += (long)(left % DANGO_NSEC_PER_SEC);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&ha->cond, &ha->lock, &ts);
        if (ha->cur == NULL) {
            pthread_mutex_unlock(&ha->lock);
            ha_reread(ha);
            pthread_mutex_lock(&ha->lock);
        }
    }

    conn = ha->cur;
    if (conn != NULL) {
        conn->refs++;
    }
    *changes_p = ha->changes;
    pthread_mutex_unlock(&ha->lock);
    return conn;
}

static uint64_t ha_changes(sc_ha_t *ha)
{
    uint64_t n;

    pthread_mutex_lock(&ha->lock);
    n = ha->changes;
    pthread_mutex_unlock(&ha->lock);
    return n;
}

static void ha_seen(sc_ha_t *ha, sc_ha_conn_t *conn)
{
    int64_t epoch = (int64_t)dango_rpc_client_epoch(conn->rpc);

    pthread_mutex_lock(&ha->lock);
    if (epoch > ha->max_term) {
        ha->max_term = epoch;
    }
    pthread_mutex_unlock(&ha->lock);
}

/* ---------- internal API ---------- */

int dango__sc_ha_create(dango_store_client_t *c)
{
    pthread_condattr_t ca;
    sc_ha_t           *ha;
    int                rc;

    ha = dango_calloc(1, sizeof(*ha), "store_ha");
    if (ha == NULL) {
        return DANGO_ENOMEM;
    }

    ha->c = c;
    ha->key_len =
        dango__store_ha_key(c->cfg.cluster_id, ha->key, sizeof(ha->key));
    if (ha->key_len == 0) {
        dango_error("store client: STORE_CLUSTER_ID must be 1..%d bytes "
                    "without '/'",
                    DANGO_STORE_HA_CLUSTER_MAX);
        dango_free(ha);
        return DANGO_EINVAL;
    }

    rc = dango__etcd_open(c->master_addr,
                          DANGO_MIN(c->cfg.connect_timeout, DANGO_NSEC_PER_SEC),
                          2 * DANGO_NSEC_PER_SEC, &ha->etcd);
    if (rc != 0) {
        dango_error("store client: bad master address %s: %s", c->master_addr,
                    dango_strerror(rc));
        dango_free(ha);
        return rc;
    }

    pthread_mutex_init(&ha->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ha->cond, &ca);
    pthread_condattr_destroy(&ca);
    c->ha = ha;

    /* The snapshot delivers the current leader (if any) first. */
    rc = dango__etcd_watch_start(ha->etcd, ha->key, ha->key_len,
                                 DANGO__ETCD_WATCH_SNAPSHOT, 0, ha_watch_cb, ha,
                                 &ha->watch);
    if (rc != 0) {
        dango__sc_ha_destroy(c);
        return rc;
    }

    ha_reread(ha);
    return 0;
}

void dango__sc_ha_destroy(dango_store_client_t *c)
{
    sc_ha_t *ha = c->ha;

    if (ha == NULL) {
        return;
    }

    dango__etcd_watch_stop(ha->watch);
    conn_put(ha, ha->cur); /* no call is in flight any more */
    ha->cur = NULL;
    dango__etcd_close(ha->etcd);
    pthread_cond_destroy(&ha->cond);
    pthread_mutex_destroy(&ha->lock);
    c->ha = NULL;
    dango_free(ha);
}

static int ha_retryable(int rc, int changed)
{
    switch (rc) {
    case DANGO_ENOT_LEADER:
    case DANGO_ESTALE_TERM:
    case DANGO_ECONNREFUSED:
    case DANGO_EPEER_GONE:
        return 1;
    case DANGO_ECONNRESET:
    case DANGO_ETIMEDOUT:
        return changed;
    default:
        return 0;
    }
}

int dango__sc_ha_call(dango_store_client_t *c, uint32_t method,
                      const ProtobufCMessage           *req,
                      const ProtobufCMessageDescriptor *reply_desc,
                      ProtobufCMessage **reply_p, uint64_t timeout_ns)
{
    sc_ha_t *ha = c->ha;
    uint64_t deadline =
        dango_time_ns() + ((timeout_ns != 0) ? timeout_ns : c->cfg.ha_timeout);
    uint64_t backoff = BACKOFF_MIN_MS;
    int      rc      = DANGO_ENOT_LEADER;

    for (unsigned attempt = 0;; attempt++) {
        sc_ha_conn_t *conn;
        uint64_t      changes, now, left;
        int           changed;

        conn = conn_get(ha, deadline, &changes);
        now  = dango_time_ns();
        if ((conn == NULL) || (now >= deadline)) {
            conn_put(ha, conn);
            break;
        }

        left = DANGO_MIN(deadline - now, c->cfg.rpc_timeout);
        rc = dango__sc_call_rpc(c, conn->rpc, method, req, reply_desc, reply_p,
                                left);
        if (rc == 0) {
            ha_seen(ha, conn);
            conn_put(ha, conn);
            return 0;
        }

        conn_put(ha, conn);
        if (ha_retryable(rc, 1)) {
            ha_reread(ha);
        }

        changed = (ha_changes(ha) != changes);
        if (!ha_retryable(rc, changed)) {
            return rc;
        }

        now = dango_time_ns();
        if (now >= deadline) {
            break;
        }

        if (!changed) {
            /* Same leader (warming up, or not reachable yet): back off. */
            struct timespec ts;
            uint64_t        ns =
                DANGO_MIN(backoff * DANGO_NSEC_PER_MSEC, deadline - now);

            ts.tv_sec  = (time_t)(ns / DANGO_NSEC_PER_SEC);
            ts.tv_nsec = (long)(ns % DANGO_NSEC_PER_SEC);
            nanosleep(&ts, NULL);
            backoff = DANGO_MIN(backoff * 2, BACKOFF_MAX_MS);
        }

        dango_debug("store client %s: master call %u retried (attempt %u): "
                    "%s",
                    c->name, method, attempt + 1, dango_strerror(rc));
    }

    /* The ping thread reports lost pings itself (STORE_PING_FAILURES). */
    if (method == DANGO_STORE_M_PING) {
        dango_debug("store client %s: no master leader answered a ping in "
                    "time: %s",
                    c->name, dango_strerror(rc));
    } else {
        dango_error("store client %s: no master leader answered call %u in "
                    "time: %s",
                    c->name, method, dango_strerror(rc));
    }
    return rc;
}

/* ---------- durable commit words ---------- */

int dango__sc_commit_durable_mode(const dango_store_client_t *c)
{
    return (c->ha != NULL) || c->cfg.sync_commit;
}

void dango__sc_commit_durable(dango_store_client_t *c, const sc_commit_t *w,
                              const char *const *keys, size_t n, int *ok)
{
    size_t unreported = 0;

    dango__sc_commit_sync(c, w, n, ok);
    for (size_t i = 0; i < n; i++) {
        if (ok[i]) {
            continue;
        }

        /* Not durable there: the master must not count that replica (a
         * rebuild would not find it). Once a report fails (master gone
         * or failing over: each call waits out its timeout), the rest
         * would fail the same way. */
        if ((unreported > 0) ||
            (dango__sc_report_bad(
                 c, keys[i], w[i].value ^ DANGO_STORE_REC_COMMIT_XOR,
                 w[i].seg->name,
                 w[i].addr - offsetof(dango_store_rec_hdr_t, commit),
                 DANGO_EPEER_GONE) != 0)) {
            unreported++;
        }
    }

    if (unreported > 0) {
        dango_warn("store client %s: %zu replicas without a commit word "
                   "not reported to the master (unreachable)",
                   c->name, unreported);
    }
}
