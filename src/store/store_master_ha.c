/*
 * Leader election of the store master through etcd (MASTER_HA).
 *
 * DESIGN
 * - One election thread per master. It campaigns: grant an etcd lease of
 *   MASTER_HA_LEASE_TTL, then a transaction "create dango/<cluster>/master
 *   = <advertised address> under the lease if the key is absent". The
 *   revision of that create is the term (store_ha.h).
 * - Lost: the lease is revoked and the thread follows: it reads the key
 *   and watches it from the revision after; when the key goes (the
 *   leader's lease expired or was revoked) it campaigns again. A poll of
 *   the key every FOLLOW_POLL_MS backs the watch up, so a watch that is
 *   reconnecting never delays a takeover by more than that.
 * - Won: a keeper thread renews the lease every TTL/6. A leader holds
 *   its leadership for HOLD = 2/3 of the TTL from the send time of its
 *   last successful renewal (not the whole TTL etcd grants: it gives up
 *   its claim early), and a new leader warms up for HOLD, renewing all
 *   along, before it serves. Why that suffices: the old leader's last
 *   successful renewal was sent before the old key went away (etcd
 *   processed it), hence before our create, so its deadline, that send
 *   time plus HOLD, is before our create plus HOLD, when we start:
 *   whether its lease expired or was revoked behind its back, it has
 *   stopped. The failover after a leader dies is thus at most one TTL
 *   (the lease expires) plus HOLD plus the nodes' remount, under 2 TTL;
 *   a renewal may take up to HOLD - TTL/6 = TTL/2 (one lost renewal:
 *   the next within TTL/3) before a healthy leader steps down. Then the
 *   state is replaced by an empty one whose view version is the term (put
 *   ids grow with it), the term is stamped on every reply, and the nodes,
 *   told ENEED_REMOUNT by their next ping, remount and report their
 *   records: the object table is rebuilt from them (docs/design/store.md
 *   "Rebuild after a restart").
 * - Serving is checked per request on the loop thread against
 *   `valid_until`, a copy of the keeper's deadline that this thread
 *   refreshes every LEADER_POLL_MS (a stale copy is only ever earlier than
 *   the keeper's, so it errs on the side of stepping down). The keeper's
 *   lost callback zeroes it at once. A leader past its deadline answers
 *   DANGO_ENOT_LEADER to every request from that instant, then steps down
 *   (stops the keeper) and campaigns again.
 * - The election is set up (not serving) before the RPC server is created,
 *   so a standby refuses the very first call it takes; the thread starts
 *   once that server's address, advertised by default, is known.
 * - Stop revokes the lease of a leader, so a follower takes over without
 *   waiting for the lease to expire (it still warms up).
 * - Every wait is a timed condition wait on `cond`, woken by stop, the
 *   keeper's lost callback and the watch; every etcd request is bounded by
 *   the etcd client's timeouts (below the TTL).
 */
#include "store/store_master_int.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/time.h"
#include "metadata/etcd.h"
#include "store/store_ha.h"

/* Re-read of the election key while following, and leader deadline poll. */
#define FOLLOW_POLL_MS 500
#define LEADER_POLL_MS 20
/* Pause after a failed campaign (etcd unreachable), doubling to the max. */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000

typedef struct ms_ha {
    dango_store_master_t *m;
    dango__etcd_t        *etcd;
    char                  key[DANGO_STORE_HA_CLUSTER_MAX + 32];
    size_t                key_len;
    char                  addr[DANGO_STORE_HA_ADDR_MAX];
    int64_t               ttl_s;

    pthread_t       thread; /* running while started */
    int             started;
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    int             stop;        /* under lock */
    int             lost;        /* under lock: keeper gave up */
    int             key_gone;    /* under lock: watch saw a delete */
    int             serving;     /* atomic */
    uint64_t        valid_until; /* atomic: ns, 0 when not leader */
    int64_t         term;        /* atomic: current term, 0 when not leader */
} ms_ha_t;

/* ---------- private functions ---------- */

/* Waits on cond until woken or @ms passed; the lock is held. */
static void ha_wait_locked(ms_ha_t *ha, uint64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }

    pthread_cond_timedwait(&ha->cond, &ha->lock, &ts);
}

/* Sleeps up to @ms unless stopped; returns 1 when stopped. */
static int ha_sleep(ms_ha_t *ha, uint64_t ms)
{
    int stop;

    pthread_mutex_lock(&ha->lock);
    if (!ha->stop) {
        ha_wait_locked(ha, ms);
    }
    stop = ha->stop;
    pthread_mutex_unlock(&ha->lock);
    return stop;
}

static int ha_stopping(ms_ha_t *ha)
{
    int stop;

    pthread_mutex_lock(&ha->lock);
    stop = ha->stop;
    pthread_mutex_unlock(&ha->lock);
    return stop;
}

static void ha_lost_cb(int64_t lease_id, void *arg)
{
    ms_ha_t *ha = arg;

    /* Stop serving before anything else: this is the step-down instant. */
    __atomic_store_n(&ha->valid_until, 0, __ATOMIC_RELEASE);
    pthread_mutex_lock(&ha->lock);
    ha->lost = 1;
    pthread_cond_broadcast(&ha->cond);
    pthread_mutex_unlock(&ha->lock);
}

static void ha_watch_cb(const dango__etcd_event_t *events, size_t count,
                        void *arg)
{
    ms_ha_t *ha   = arg;
    int      gone = 0;

    for (size_t i = 0; i < count; i++) {
        gone |= (events[i].type != DANGO__ETCD_EV_PUT);
    }

    if (gone) {
        pthread_mutex_lock(&ha->lock);
        ha->key_gone = 1;
        pthread_cond_broadcast(&ha->cond);
        pthread_mutex_unlock(&ha->lock);
    }
}

/*
 * Follows the leader that holds the key until the key goes away (returns
 * 0) or the master stops (1).
 */
static int ha_follow(ms_ha_t *ha)
{
    dango__etcd_watch_t *watch = NULL;
    dango__etcd_kv_t    *kv    = NULL;
    int64_t              rev   = 0;
    int                  rc, stop = 0;

    rc = dango__etcd_get(ha->etcd, ha->key, ha->key_len, &kv, &rev);
    if (rc == DANGO_ENOENT) {
        return 0;
    }

    if (rc == 0) {
        dango_info("master: following leader %.*s (term %lld)",
                   (int)kv->value_len, kv->value,
                   (long long)kv->create_revision);
        dango__etcd_kvs_free(kv, 1);
        pthread_mutex_lock(&ha->lock);
        ha->key_gone = 0;
        pthread_mutex_unlock(&ha->lock);
        if (dango__etcd_watch_start(ha->etcd, ha->key, ha->key_len, 0, rev + 1,
                                    ha_watch_cb, ha, &watch) != 0) {
            watch = NULL; /* the poll below still notices */
        }
    }

    for (;;) {
        int gone;

        pthread_mutex_lock(&ha->lock);
        if (!ha->stop && !ha->key_gone) {
            ha_wait_locked(ha, FOLLOW_POLL_MS);
        }
        stop = ha->stop;
        gone = ha->key_gone;
        pthread_mutex_unlock(&ha->lock);
        if (stop || gone) {
            break;
        }

        rc = dango__etcd_get(ha->etcd, ha->key, ha->key_len, &kv, NULL);
        if (rc == DANGO_ENOENT) {
            break;
        }
        if (rc == 0) {
            dango__etcd_kvs_free(kv, 1);
        }
    }

    dango__etcd_watch_stop(watch);
    return stop;
}

/* How long a renewal holds leadership: HOLD_NUM/HOLD_DEN of the TTL. */
#define HOLD_NUM 2
#define HOLD_DEN 3

static uint64_t ha_hold_ns(int64_t ttl_s)
{
    return (uint64_t)ttl_s * DANGO_NSEC_PER_SEC * HOLD_NUM / HOLD_DEN;
}

/* Refreshes valid_until from the keeper (its deadline, renewal send time
 * plus the TTL, cut to plus HOLD); 1 while still leader. */
static int ha_refresh(ms_ha_t *ha, dango__etcd_keeper_t *keeper, int64_t ttl_s)
{
    uint64_t until = dango__etcd_keeper_valid_until(keeper);
    uint64_t cut   = (uint64_t)ttl_s * DANGO_NSEC_PER_SEC - ha_hold_ns(ttl_s);
    int      lost;

    until = (until > cut) ? until - cut : 0;

    pthread_mutex_lock(&ha->lock);
    lost = ha->lost;
    pthread_mutex_unlock(&ha->lock);
    if (lost || (until == 0) || (dango_time_ns() >= until)) {
        __atomic_store_n(&ha->valid_until, 0, __ATOMIC_RELEASE);
        return 0;
    }

    __atomic_store_n(&ha->valid_until, until, __ATOMIC_RELEASE);
    return 1;
}

/*
 * Leads from a won campaign until the lease is lost (returns 0) or the
 * master stops (1, the lease revoked).
 */
static int ha_lead(ms_ha_t *ha, int64_t lease, int64_t ttl_s, int64_t term)
{
    dango__etcd_keeper_t *keeper;
    uint64_t              warm_end;
    int                   rc, stop = 0, failed = 0, leading;

    pthread_mutex_lock(&ha->lock);
    ha->lost = 0;
    pthread_mutex_unlock(&ha->lock);
    rc = dango__etcd_keeper_start(ha->etcd, lease, ttl_s, ha_lost_cb, ha,
                                  &keeper);
    if (rc != 0) {
        dango_error("master: cannot keep the leader lease: %s",
                    dango_strerror(rc));
        dango__etcd_lease_revoke(ha->etcd, lease);
        return ha_stopping(ha);
    }

    /* Warm-up: HOLD (see DESIGN), renewing all along. */
    dango_info("master: elected (term %lld), warming up for %llu ms",
               (long long)term,
               (unsigned long long)(ha_hold_ns(ttl_s) / DANGO_NSEC_PER_MSEC));
    warm_end = dango_time_ns() + ha_hold_ns(ttl_s);
    leading  = 1;
    while (leading && (dango_time_ns() < warm_end)) {
        if (ha_sleep(ha, LEADER_POLL_MS)) {
            stop = 1;
            break;
        }
        leading = ha_refresh(ha, keeper, ttl_s);
    }

    if (leading && !stop) {
        rc = dango__store_master_reset(ha->m, term);
        if (rc != 0) {
            dango_error("master: cannot start term %lld: %s", (long long)term,
                        dango_strerror(rc));
            leading = 0;
            failed  = 1; /* give the key up now, not after the TTL */
        }
    }

    if (leading && !stop) {
        __atomic_store_n(&ha->term, term, __ATOMIC_RELEASE);
        __atomic_store_n(&ha->serving, 1, __ATOMIC_RELEASE);
        dango_info("master: leader of term %lld, serving on %s",
                   (long long)term, ha->addr);
        while (ha_refresh(ha, keeper, ttl_s)) {
            if (ha_sleep(ha, LEADER_POLL_MS)) {
                stop = 1;
                break;
            }
        }
    }

    __atomic_store_n(&ha->serving, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&ha->valid_until, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&ha->term, 0, __ATOMIC_RELEASE);
    dango__etcd_keeper_stop(keeper);
    if (stop || failed) {
        dango__etcd_lease_revoke(ha->etcd, lease);
        dango_info("master: term %lld ended (%s), lease revoked",
                   (long long)term, stop ? "stopping" : "could not start");
    } else {
        dango_warn("master: lost the leader lease of term %lld: stepped "
                   "down",
                   (long long)term);
    }

    return stop;
}

/*
 * One campaign: 1 when stopped, 0 to campaign again, or a negative error
 * (etcd unreachable; the caller backs off).
 */
static int ha_campaign(ms_ha_t *ha)
{
    dango__etcd_cmp_t cmp = {.key     = ha->key,
                             .key_len = ha->key_len,
                             .target  = DANGO__ETCD_CMP_CREATE,
                             .rev     = 0};
    dango__etcd_op_t  put = {.type      = DANGO__ETCD_OP_PUT,
                             .key       = ha->key,
                             .key_len   = ha->key_len,
                             .value     = ha->addr,
                             .value_len = strlen(ha->addr)};
    int64_t           lease, granted, rev = 0;
    int               rc, won = 0;

    rc = dango__etcd_lease_grant(ha->etcd, ha->ttl_s, &lease, &granted);
    if (rc != 0) {
        return rc;
    }

    put.lease = lease;
    rc = dango__etcd_txn(ha->etcd, &cmp, 1, &put, 1, NULL, 0, &won, &rev);
    if (rc != 0) {
        dango__etcd_lease_revoke(ha->etcd, lease);
        return rc;
    }

    if (!won) {
        dango__etcd_lease_revoke(ha->etcd, lease);
        return ha_follow(ha);
    }

    /* The txn's revision is the create's: our term. */
    return ha_lead(ha, lease, (granted > ha->ttl_s) ? granted : ha->ttl_s, rev);
}

static void *ha_main(void *arg)
{
    ms_ha_t *ha      = arg;
    uint64_t backoff = RETRY_MIN_MS;

    for (;;) {
        int rc = ha_campaign(ha);

        if (rc > 0) {
            break;
        }

        if (rc < 0) {
            dango_warn("master: election through %s failed: %s; retrying",
                       ha->m->cfg.ha, dango_strerror(rc));
            if (ha_sleep(ha, backoff)) {
                break;
            }
            backoff = (backoff * 2 > RETRY_MAX_MS) ? RETRY_MAX_MS : backoff * 2;
            continue;
        }

        backoff = RETRY_MIN_MS;
        if (ha_stopping(ha)) {
            break;
        }
    }

    return NULL;
}

/* The advertised address: MASTER_ADVERTISE, else the RPC address with a
 * wildcard host replaced by the loopback. */
static int ha_addr_of(ms_ha_t *ha)
{
    const char *adv = ha->m->cfg.advertise;
    const char *rpc = dango_rpc_server_addr(ha->m->rpc);
    const char *colon;
    int         n;

    if ((adv != NULL) && (adv[0] != '\0')) {
        n = snprintf(ha->addr, sizeof(ha->addr), "%s", adv);
    } else if (((colon = strrchr(rpc, ':')) != NULL) &&
               (((colon - rpc == 7) && (memcmp(rpc, "0.0.0.0", 7) == 0)) ||
                ((colon - rpc == 4) && (memcmp(rpc, "[::]", 4) == 0)))) {
        n = snprintf(ha->addr, sizeof(ha->addr), "127.0.0.1%s", colon);
    } else {
        n = snprintf(ha->addr, sizeof(ha->addr), "%s", rpc);
    }

    return ((n > 0) && ((size_t)n < sizeof(ha->addr))) ? 0 : DANGO_EINVAL;
}

/* ---------- internal API ---------- */

int dango__store_master_ha_init(dango_store_master_t *m)
{
    ms_ha_t *ha;
    int      rc;

    if ((m->cfg.ha == NULL) || (m->cfg.ha[0] == '\0')) {
        return 0;
    }

    ha = dango_calloc(1, sizeof(*ha), "master_ha");
    if (ha == NULL) {
        return DANGO_ENOMEM;
    }

    ha->m     = m;
    ha->ttl_s = (int64_t)((m->cfg.ha_lease_ttl + DANGO_NSEC_PER_SEC - 1) /
                          DANGO_NSEC_PER_SEC);
    ha->key_len =
        dango__store_ha_key(m->cfg.cluster_id, ha->key, sizeof(ha->key));
    if (ha->key_len == 0) {
        dango_error("master: bad cluster id %s", m->cfg.cluster_id);
        rc = DANGO_ECONFIG;
        goto err_free;
    }

    /* Each etcd request well below the TTL, so a renewal can be retried. */
    rc = dango__etcd_open(m->cfg.ha, DANGO_NSEC_PER_SEC / 2,
                          (uint64_t)ha->ttl_s * DANGO_NSEC_PER_SEC / 3,
                          &ha->etcd);
    if (rc != 0) {
        dango_error("master: bad MASTER_HA endpoints %s: %s", m->cfg.ha,
                    dango_strerror(rc));
        goto err_free;
    }

    pthread_mutex_init(&ha->lock, NULL);
    {
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&ha->cond, &ca);
        pthread_condattr_destroy(&ca);
    }

    /* Not serving until elected. The RPC server is created after this, and
     * handing it to the loop thread orders the write before its first
     * request. */
    m->ha = ha;
    return 0;

err_free:
    dango_free(ha);
    return rc;
}

int dango__store_master_ha_start(dango_store_master_t *m)
{
    ms_ha_t *ha = m->ha;
    int      rc;

    if (ha == NULL) {
        return 0;
    }

    rc = ha_addr_of(ha);
    if (rc != 0) {
        dango_error("master: bad advertised address");
        return rc;
    }

    rc = pthread_create(&ha->thread, NULL, ha_main, ha);
    if (rc != 0) {
        return DANGO__ERR(rc);
    }

    ha->started = 1;
    dango_info("master: standing for election on %s as %s (cluster key %s)",
               m->cfg.ha, ha->addr, ha->key);
    return 0;
}

void dango__store_master_ha_stop(dango_store_master_t *m)
{
    ms_ha_t *ha = m->ha;

    if (ha == NULL) {
        return;
    }

    if (ha->started) {
        pthread_mutex_lock(&ha->lock);
        ha->stop = 1;
        pthread_cond_broadcast(&ha->cond);
        pthread_mutex_unlock(&ha->lock);
        pthread_join(ha->thread, NULL);
        ha->started = 0;
    }
    /* Requests still arriving are refused from here on. */
    __atomic_store_n(&ha->serving, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&ha->valid_until, 0, __ATOMIC_RELEASE);
    dango__etcd_close(ha->etcd);
    ha->etcd = NULL;
}

void dango__store_master_ha_free(dango_store_master_t *m)
{
    ms_ha_t *ha = m->ha;

    if (ha == NULL) {
        return;
    }

    dango__store_master_ha_stop(m); /* if not stopped yet */
    m->ha = NULL;
    pthread_cond_destroy(&ha->cond);
    pthread_mutex_destroy(&ha->lock);
    dango_free(ha);
}

int dango__store_master_ha_serving(dango_store_master_t *m)
{
    ms_ha_t *ha = m->ha;

    if (ha == NULL) {
        return 1;
    }

    return __atomic_load_n(&ha->serving, __ATOMIC_ACQUIRE) &&
           (dango_time_ns() <
            __atomic_load_n(&ha->valid_until, __ATOMIC_ACQUIRE));
}
