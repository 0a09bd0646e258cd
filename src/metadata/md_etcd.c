/*
 * etcd:// metadata backend, on the etcd client of etcd.c.
 *
 * DESIGN
 *
 * Keys: every metadata key K is stored in etcd as MD_ETCD_PREFIX + K
 * (default "/dango/"), so several clusters or tenants can share one etcd;
 * list and watch strip the prefix again.
 *
 * TTLs (dango_md_put with ttl_ms > 0): etcd expires keys only through
 * leases, in whole seconds. A put with ttl_ms attaches the key to a lease
 * of ceil(ttl_ms / 1 s) + 1 seconds; that lease is reused by every put
 * with the same TTL during the next second and then replaced, so a TTL
 * costs one lease grant per second per distinct TTL rather than one per
 * put, and a key never expires before its TTL: at most about 2 s after it
 * (etcd's own minimum lease TTL, 1.5 x the election timeout, can stretch
 * that on a slow-election cluster). These leases are never renewed.
 *
 * Session (dango_md_put with ttl_ms == 0, when MD_ETCD_SESSION_TTL > 0):
 * the key is attached to one lease per handle that a thread of the handle
 * renews every third of its TTL. A process that dies stops renewing, so
 * its descriptors vanish from etcd within MD_ETCD_SESSION_TTL on their
 * own. A clean dango_md_close() revokes the lease (the keys go at once).
 * If the lease is lost while the process lives (etcd unreachable for
 * longer than the TTL), the handle grants a new one and re-publishes
 * every session key it wrote (it keeps a copy of them for that), so a
 * long etcd outage heals by itself instead of leaving the cluster without
 * descriptors. Session writes and deletes of session keys are serialized
 * by sess_lock, held across the etcd call, so a re-publication can never
 * resurrect a key deleted or overwritten meanwhile.
 *
 * Watch: native. An etcd watch with a snapshot first reports every key
 * under the prefix (like the first scan of the polling watch), then every
 * change in revision order, reconnecting and resuming from the next
 * revision after an etcd restart. Expiry of a lease is reported as a
 * deletion. After a compaction gap the existing keys are reported again;
 * deletions inside the gap are not (logged).
 */
#include "md_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <string.h>
#include <sys/types.h>

#include "common/alloc.h"
#include "common/time.h"
#include "etcd.h"

/* TTL leases remembered at once (distinct TTL values). */
#define MD_ETCD_BUCKETS 16
/* A TTL lease is reused by puts within this time after its grant. */
#define MD_ETCD_BUCKET_NS DANGO_NSEC_PER_SEC

typedef struct md_etcd_bucket {
    int64_t  ttl_s; /* 0: free slot */
    int64_t  lease;
    uint64_t granted_ns;
} md_etcd_bucket_t;

/* A key written under the session lease, kept for re-publication. */
typedef struct md_etcd_sess_key {
    char  *key; /* full etcd key */
    size_t key_len;
    char  *value;
    size_t len;
} md_etcd_sess_key_t;

typedef struct md_etcd {
    dango_md_t       super;
    dango__etcd_t   *etcd;
    char            *prefix;
    size_t           prefix_len;
    pthread_mutex_t  bucket_lock;
    md_etcd_bucket_t buckets[MD_ETCD_BUCKETS];
    /* Session (all under sess_lock except where noted). */
    int64_t             sess_ttl_s; /* 0: no session; read-only */
    pthread_mutex_t     sess_lock;
    int64_t             sess_lease; /* 0: none granted (or lost) */
    int                 sess_dirty; /* a re-publication is owed */
    md_etcd_sess_key_t *sess_keys;
    size_t              sess_count;
    size_t              sess_cap;
    int                 sess_thread_started;
    pthread_t           sess_thread;
    pthread_mutex_t     stop_lock;
    pthread_cond_t      stop_cond;
    int                 stopping; /* atomic */
} md_etcd_t;

typedef struct md_etcd_watch {
    dango_md_watch_t     super;
    dango__etcd_watch_t *ew;
    dango_md_watch_cb    cb;
    void                *arg;
    size_t               strip; /* prefix length to remove from keys */
    int                  stopped;
    int                  free_in_cb; /* stopped from its own callback */
} md_etcd_watch_t;

/* ---------- private functions ---------- */

/* Builds prefix + key into a new allocation; NULL on ENOMEM. */
static char *full_key(const md_etcd_t *h, const char *key, size_t *len_p)
{
    size_t klen = strlen(key);
    char  *full = dango_malloc(h->prefix_len + klen + 1, "md_etcd_key");

    if (full == NULL) {
        return NULL;
    }

    memcpy(full, h->prefix, h->prefix_len);
    memcpy(full + h->prefix_len, key, klen + 1);
    *len_p = h->prefix_len + klen;
    return full;
}

/* A TTL that etcd cannot express counts as "no TTL". */
static int ttl_forever(uint64_t ttl_ms)
{
    return (ttl_ms == 0) ||
           (ttl_ms / 1000 >= (uint64_t)DANGO__ETCD_LEASE_TTL_MAX - 2);
}

/* The lease for a put with @ttl_ms (> 0, not forever). */
static int bucket_lease(md_etcd_t *h, uint64_t ttl_ms, int64_t *lease_p)
{
    int64_t           ttl_s = (int64_t)((ttl_ms + 999) / 1000) + 1;
    uint64_t          now   = dango_time_ns();
    md_etcd_bucket_t *slot  = NULL;
    int64_t           lease;
    int               rc;

    pthread_mutex_lock(&h->bucket_lock);
    for (size_t i = 0; i < MD_ETCD_BUCKETS; i++) {
        md_etcd_bucket_t *b = &h->buckets[i];

        if ((b->ttl_s == ttl_s) && (now - b->granted_ns < MD_ETCD_BUCKET_NS)) {
            *lease_p = b->lease;
            pthread_mutex_unlock(&h->bucket_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&h->bucket_lock);

    rc = dango__etcd_lease_grant(h->etcd, ttl_s, &lease, NULL);
    if (rc != 0) {
        return rc;
    }

    /* Replace the slot of this TTL, else a free one, else the oldest. */
    pthread_mutex_lock(&h->bucket_lock);
    for (size_t i = 0; i < MD_ETCD_BUCKETS; i++) {
        md_etcd_bucket_t *b = &h->buckets[i];

        if (b->ttl_s == ttl_s) {
            slot = b;
            break;
        }
        if ((slot == NULL) ||
            (slot->ttl_s != 0 &&
             ((b->ttl_s == 0) || (b->granted_ns < slot->granted_ns)))) {
            slot = b;
        }
    }
    slot->ttl_s      = ttl_s;
    slot->lease      = lease;
    slot->granted_ns = now;
    pthread_mutex_unlock(&h->bucket_lock);

    *lease_p = lease;
    return 0;
}

static void bucket_forget(md_etcd_t *h, int64_t lease)
{
    pthread_mutex_lock(&h->bucket_lock);
    for (size_t i = 0; i < MD_ETCD_BUCKETS; i++) {
        if (h->buckets[i].lease == lease) {
            h->buckets[i].ttl_s = 0;
        }
    }
    pthread_mutex_unlock(&h->bucket_lock);
}

/* Index of @key in the session list, or -1. Under sess_lock. */
static ssize_t sess_find(const md_etcd_t *h, const char *key, size_t key_len)
{
    for (size_t i = 0; i < h->sess_count; i++) {
        if ((h->sess_keys[i].key_len == key_len) &&
            (memcmp(h->sess_keys[i].key, key, key_len) == 0)) {
            return (ssize_t)i;
        }
    }

    return -1;
}

static void sess_remove(md_etcd_t *h, ssize_t i)
{
    if (i < 0) {
        return;
    }

    dango_free(h->sess_keys[i].key);
    dango_free(h->sess_keys[i].value);
    h->sess_keys[i] = h->sess_keys[--h->sess_count];
}

/* Records (a copy of) a session key's value. Under sess_lock. */
static int sess_record(md_etcd_t *h, const char *key, size_t key_len,
                       const void *value, size_t len)
{
    ssize_t i    = sess_find(h, key, key_len);
    char   *copy = dango_malloc(len + 1, "md_etcd_sess_value");

    if (copy == NULL) {
        return DANGO_ENOMEM;
    }
    memcpy(copy, value, len);

    if (i >= 0) {
        dango_free(h->sess_keys[i].value);
        h->sess_keys[i].value = copy;
        h->sess_keys[i].len   = len;
        return 0;
    }

    if (h->sess_count == h->sess_cap) {
        size_t              cap = (h->sess_cap == 0) ? 16 : 2 * h->sess_cap;
        md_etcd_sess_key_t *grown;

        grown =
            dango_realloc(h->sess_keys, cap * sizeof(*grown), "md_etcd_sess");
        if (grown == NULL) {
            dango_free(copy);
            return DANGO_ENOMEM;
        }
        h->sess_keys = grown;
        h->sess_cap  = cap;
    }

    h->sess_keys[h->sess_count].key =
        dango_strndup(key, key_len, "md_etcd_sess_key");
    if (h->sess_keys[h->sess_count].key == NULL) {
        dango_free(copy);
        return DANGO_ENOMEM;
    }

    h->sess_keys[h->sess_count].key_len = key_len;
    h->sess_keys[h->sess_count].value   = copy;
    h->sess_keys[h->sess_count].len     = len;
    h->sess_count++;
    return 0;
}

/*
 * Makes sure a session lease exists, granting a new one (and re-putting
 * every session key under it) when there is none or a re-publication is
 * owed. Under sess_lock.
 */
static int sess_ensure(md_etcd_t *h)
{
    int rc;

    if (h->sess_lease == 0) {
        rc = dango__etcd_lease_grant(h->etcd, h->sess_ttl_s, &h->sess_lease,
                                     NULL);
        if (rc != 0) {
            return rc;
        }
        h->sess_dirty = (h->sess_count > 0);
        dango_debug("md etcd %p: session lease %" PRIx64 " (%" PRId64 " s)", h,
                    (uint64_t)h->sess_lease, h->sess_ttl_s);
    }

    if (h->sess_dirty) {
        for (size_t i = 0; i < h->sess_count; i++) {
            md_etcd_sess_key_t *k = &h->sess_keys[i];

            rc = dango__etcd_put(h->etcd, k->key, k->key_len, k->value, k->len,
                                 h->sess_lease, NULL);
            if (rc == DANGO_ENOENT) {
                h->sess_lease = 0; /* lost again meanwhile */
            }
            if (rc != 0) {
                return rc;
            }
        }

        if (h->sess_count > 0) {
            dango_info("md etcd %p: re-published %zu session keys", h,
                       h->sess_count);
        }
        h->sess_dirty = 0;
    }

    return 0;
}

static int md_etcd_stopping(md_etcd_t *h)
{
    return __atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE);
}

/* Renews the session lease every third of its TTL; heals a lost one. */
static void *sess_thread(void *arg)
{
    md_etcd_t *h       = arg;
    uint64_t   period  = (uint64_t)h->sess_ttl_s * DANGO_NSEC_PER_SEC / 3;
    int        failing = 0;

    for (;;) {
        uint64_t wake      = dango_time_ns() + (failing ? period / 4 : period);
        struct timespec ts = {.tv_sec  = (time_t)(wake / DANGO_NSEC_PER_SEC),
                              .tv_nsec = (long)(wake % DANGO_NSEC_PER_SEC)};
        int64_t         lease;
        int             rc;

        pthread_mutex_lock(&h->stop_lock);
        while (
            !md_etcd_stopping(h) &&
            (pthread_cond_timedwait(&h->stop_cond, &h->stop_lock, &ts) == 0)) {
        }
        pthread_mutex_unlock(&h->stop_lock);
        if (md_etcd_stopping(h)) {
            break;
        }

        pthread_mutex_lock(&h->sess_lock);
        lease = h->sess_lease;
        pthread_mutex_unlock(&h->sess_lock);

        rc = (lease != 0) ? dango__etcd_lease_keepalive(h->etcd, lease, NULL)
                          : DANGO_ENOENT;
        if (rc == DANGO_ENOENT) {
            pthread_mutex_lock(&h->sess_lock);
            if (h->sess_lease == lease) {
                if (lease != 0) {
                    dango_warn("md etcd %p: session lease %" PRIx64 " expired;"
                               " granting a new one",
                               h, (uint64_t)lease);
                }
                h->sess_lease = 0;
            }
            rc = sess_ensure(h);
            pthread_mutex_unlock(&h->sess_lock);
        } else if ((rc == 0) && h->sess_dirty) {
            pthread_mutex_lock(&h->sess_lock);
            rc = sess_ensure(h);
            pthread_mutex_unlock(&h->sess_lock);
        }

        if ((rc != 0) && (failing++ == 0)) {
            dango_warn("md etcd %p: session renewal failed: %s; retrying", h,
                       dango_strerror(rc));
        } else if (rc == 0) {
            failing = 0;
        }
    }

    return NULL;
}

/* Puts under the session lease. Under sess_lock. */
static int sess_put(md_etcd_t *h, const char *key, size_t key_len,
                    const void *value, size_t len)
{
    int rc;

    for (int attempt = 0; attempt < 2; attempt++) {
        rc = sess_ensure(h);
        if (rc != 0) {
            return rc;
        }

        if (!h->sess_thread_started) {
            rc = pthread_create(&h->sess_thread, NULL, sess_thread, h);
            if (rc != 0) {
                dango_error("md etcd: pthread_create: %s", strerror(rc));
                return dango_err_from_errno(rc);
            }
            h->sess_thread_started = 1;
        }

        rc = dango__etcd_put(h->etcd, key, key_len, value, len, h->sess_lease,
                             NULL);
        if (rc != DANGO_ENOENT) {
            break;
        }

        /* The lease vanished under us: grant anew, re-publish, retry. */
        h->sess_lease = 0;
    }

    if (rc == 0) {
        rc = sess_record(h, key, key_len, value, len);
    }

    return rc;
}

static int md_etcd_put(dango_md_t *md, const char *key, const void *value,
                       size_t len, uint64_t ttl_ms)
{
    md_etcd_t *h = dango_container_of(md, md_etcd_t, super);
    size_t     key_len;
    char      *full;
    int64_t    lease = 0;
    int        rc;

    full = full_key(h, key, &key_len);
    if (full == NULL) {
        return DANGO_ENOMEM;
    }

    if (ttl_forever(ttl_ms) && (h->sess_ttl_s > 0)) {
        pthread_mutex_lock(&h->sess_lock);
        rc = sess_put(h, full, key_len, value, len);
        pthread_mutex_unlock(&h->sess_lock);
        goto out;
    }

    /* Not a session key (any more): no re-publication may bring it back. */
    if (h->sess_ttl_s > 0) {
        pthread_mutex_lock(&h->sess_lock);
        sess_remove(h, sess_find(h, full, key_len));
        pthread_mutex_unlock(&h->sess_lock);
    }

    for (int attempt = 0; attempt < 2; attempt++) {
        if (!ttl_forever(ttl_ms)) {
            rc = bucket_lease(h, ttl_ms, &lease);
            if (rc != 0) {
                goto out;
            }
        }

        rc = dango__etcd_put(h->etcd, full, key_len, value, len, lease, NULL);
        if ((rc != DANGO_ENOENT) || (lease == 0)) {
            break;
        }

        /* The shared TTL lease expired or was revoked: use a new one. */
        bucket_forget(h, lease);
    }

out:
    dango_free(full);
    return rc;
}

static int md_etcd_get(dango_md_t *md, const char *key, char **value_p,
                       size_t *len_p)
{
    md_etcd_t        *h = dango_container_of(md, md_etcd_t, super);
    dango__etcd_kv_t *kv;
    size_t            key_len;
    char             *full;
    int               rc;

    full = full_key(h, key, &key_len);
    if (full == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango__etcd_get(h->etcd, full, key_len, &kv, NULL);
    dango_free(full);
    if (rc != 0) {
        return rc;
    }

    *value_p  = kv->value;
    *len_p    = kv->value_len;
    kv->value = NULL;
    dango__etcd_kvs_free(kv, 1);
    return 0;
}

static int md_etcd_del(dango_md_t *md, const char *key)
{
    md_etcd_t *h = dango_container_of(md, md_etcd_t, super);
    size_t     key_len;
    char      *full;
    int64_t    deleted = 0;
    int        rc;

    full = full_key(h, key, &key_len);
    if (full == NULL) {
        return DANGO_ENOMEM;
    }

    if (h->sess_ttl_s > 0) {
        ssize_t i;

        pthread_mutex_lock(&h->sess_lock);
        i = sess_find(h, full, key_len);
        if (i >= 0) {
            rc = dango__etcd_delete(h->etcd, full, key_len, 0, &deleted, NULL);
            /* Whatever etcd said, this handle no longer owns the key. */
            sess_remove(h, i);
            pthread_mutex_unlock(&h->sess_lock);
            goto out;
        }
        pthread_mutex_unlock(&h->sess_lock);
    }

    rc = dango__etcd_delete(h->etcd, full, key_len, 0, &deleted, NULL);

out:
    dango_free(full);
    if ((rc == 0) && (deleted == 0)) {
        rc = DANGO_ENOENT;
    }

    return rc;
}

static int md_etcd_list(dango_md_t *md, const char *prefix, char ***keys_p,
                        size_t *count_p)
{
    md_etcd_t        *h = dango_container_of(md, md_etcd_t, super);
    dango__etcd_kv_t *kvs;
    size_t            count;
    size_t            full_len;
    char             *full;
    char            **keys;
    int               rc;

    full = full_key(h, prefix, &full_len);
    if (full == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango__etcd_range_prefix(h->etcd, full, full_len, 1, 0, &kvs, &count,
                                  NULL);
    dango_free(full);
    if (rc != 0) {
        return rc;
    }

    keys = dango_calloc(count + 1, sizeof(*keys), "md_list");
    if (keys == NULL) {
        dango__etcd_kvs_free(kvs, count);
        return DANGO_ENOMEM;
    }

    /* etcd sorts by key bytes: strcmp() order, prefix stripped or not. */
    for (size_t i = 0; i < count; i++) {
        keys[i] = dango_strdup(kvs[i].key + h->prefix_len, "md_list_key");
        if (keys[i] == NULL) {
            dango_md_list_free(keys, i);
            dango__etcd_kvs_free(kvs, count);
            return DANGO_ENOMEM;
        }
    }

    dango__etcd_kvs_free(kvs, count);
    *keys_p  = keys;
    *count_p = count;
    return 0;
}

static void md_etcd_watch_cb(const dango__etcd_event_t *events, size_t count,
                             void *arg)
{
    md_etcd_watch_t *w = arg;

    for (size_t i = 0;
         (i < count) && !__atomic_load_n(&w->stopped, __ATOMIC_ACQUIRE); i++) {
        const dango__etcd_event_t *ev = &events[i];

        if (ev->type == DANGO__ETCD_EV_COMPACTED) {
            dango_warn("md etcd watch %p: history compacted at revision "
                       "%" PRId64 "; deletions before it may be unreported",
                       w, ev->kv.mod_revision);
            continue;
        }

        if ((ev->kv.key_len <= w->strip) ||
            (strlen(ev->kv.key) != ev->kv.key_len)) {
            continue; /* not a metadata key (empty or binary) */
        }

        if (ev->type == DANGO__ETCD_EV_PUT) {
            w->cb(ev->kv.key + w->strip, ev->kv.value, ev->kv.value_len,
                  w->arg);
        } else {
            w->cb(ev->kv.key + w->strip, NULL, 0, w->arg);
        }
    }

    if (w->free_in_cb) {
        /* Stopped from the user callback: the etcd watch is done with us. */
        dango_free(w);
    }
}

static int md_etcd_watch_start(dango_md_t *md, const char *prefix,
                               dango_md_watch_cb cb, void *arg,
                               dango_md_watch_t **watch_p)
{
    md_etcd_t       *h = dango_container_of(md, md_etcd_t, super);
    md_etcd_watch_t *w;
    size_t           full_len;
    char            *full;
    int              rc;

    w = dango_calloc(1, sizeof(*w), "md_etcd_watch");
    if (w == NULL) {
        return DANGO_ENOMEM;
    }

    full = full_key(h, prefix, &full_len);
    if (full == NULL) {
        dango_free(w);
        return DANGO_ENOMEM;
    }

    w->super.md = md;
    w->cb       = cb;
    w->arg      = arg;
    w->strip    = h->prefix_len;
    rc          = dango__etcd_watch_start(h->etcd, full, full_len,
                                          DANGO__ETCD_WATCH_PREFIX |
                                              DANGO__ETCD_WATCH_SNAPSHOT,
                                          0, md_etcd_watch_cb, w, &w->ew);
    dango_free(full);
    if (rc != 0) {
        dango_free(w);
        return rc;
    }

    *watch_p = &w->super;
    return 0;
}

static void md_etcd_watch_stop(dango_md_watch_t *watch)
{
    md_etcd_watch_t *w = dango_container_of(watch, md_etcd_watch_t, super);

    __atomic_store_n(&w->stopped, 1, __ATOMIC_RELEASE);
    if (dango__etcd_watch_stop(w->ew) != 0) {
        /* From our own callback, which frees w when it returns. */
        w->free_in_cb = 1;
        return;
    }

    dango_free(w);
}

static void md_etcd_close(dango_md_t *md)
{
    md_etcd_t *h = dango_container_of(md, md_etcd_t, super);

    if (h->sess_thread_started) {
        pthread_mutex_lock(&h->stop_lock);
        __atomic_store_n(&h->stopping, 1, __ATOMIC_RELEASE);
        pthread_cond_signal(&h->stop_cond);
        pthread_mutex_unlock(&h->stop_lock);
        pthread_join(h->sess_thread, NULL);
    }

    if (h->sess_lease != 0) {
        /* The handle's keys go with it; a failure leaves them to the TTL. */
        int rc = dango__etcd_lease_revoke(h->etcd, h->sess_lease);

        if ((rc != 0) && (rc != DANGO_ENOENT)) {
            dango_warn("md etcd %p: revoking the session lease: %s; its keys "
                       "expire within %" PRId64 " s",
                       h, dango_strerror(rc), h->sess_ttl_s);
        }
    }

    for (size_t i = 0; i < h->sess_count; i++) {
        dango_free(h->sess_keys[i].key);
        dango_free(h->sess_keys[i].value);
    }

    dango_free(h->sess_keys);
    dango__etcd_close(h->etcd);
    pthread_cond_destroy(&h->stop_cond);
    pthread_mutex_destroy(&h->stop_lock);
    pthread_mutex_destroy(&h->sess_lock);
    pthread_mutex_destroy(&h->bucket_lock);
    dango_free(h->prefix);
    dango_free(h);
}

static const dango__md_ops_t md_etcd_ops = {.name        = "etcd",
                                            .get         = md_etcd_get,
                                            .put         = md_etcd_put,
                                            .del         = md_etcd_del,
                                            .list        = md_etcd_list,
                                            .close       = md_etcd_close,
                                            .watch_start = md_etcd_watch_start,
                                            .watch_stop  = md_etcd_watch_stop};

/* ---------- backend entry point ---------- */

int dango__md_etcd_open(const char *rest, const dango__md_config_t *config,
                        dango_md_t **md_p)
{
    const char *prefix =
        (config->etcd_prefix != NULL) ? config->etcd_prefix : "";
    pthread_condattr_t attr;
    md_etcd_t         *h;
    int                rc;

    if (strlen(prefix) > DANGO_MD_KEY_MAX) {
        dango_error("md etcd: MD_ETCD_PREFIX is longer than %d bytes",
                    DANGO_MD_KEY_MAX);
        return DANGO_ECONFIG;
    }

    h = dango_calloc(1, sizeof(*h), "md_etcd");
    if (h == NULL) {
        return DANGO_ENOMEM;
    }

    h->prefix = dango_strdup(prefix, "md_etcd_prefix");
    if (h->prefix == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    rc = dango__etcd_open(rest, config->connect_timeout_ns, config->timeout_ns,
                          &h->etcd);
    if (rc != 0) {
        goto err_free;
    }

    h->prefix_len = strlen(prefix);
    if (config->etcd_session_ttl_ns > 0) {
        uint64_t s = (config->etcd_session_ttl_ns + DANGO_NSEC_PER_SEC - 1) /
                     DANGO_NSEC_PER_SEC;

        h->sess_ttl_s = (s > (uint64_t)DANGO__ETCD_LEASE_TTL_MAX)
                            ? DANGO__ETCD_LEASE_TTL_MAX
                            : (int64_t)s;
    }

    pthread_mutex_init(&h->bucket_lock, NULL);
    pthread_mutex_init(&h->sess_lock, NULL);
    pthread_mutex_init(&h->stop_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&h->stop_cond, &attr);
    pthread_condattr_destroy(&attr);

    h->super.ops    = &md_etcd_ops;
    h->super.config = *config;
    /* The parsed strings die after open; the handle keeps its own copy. */
    h->super.config.etcd_prefix  = NULL;
    h->super.config.redis_prefix = NULL;
    *md_p                        = &h->super;
    return 0;

err_free:
    dango_free(h->prefix);
    dango_free(h);
    return rc;
}
