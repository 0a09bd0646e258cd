/*
 * Metadata front end: connection strings, argument checks, dispatch to a
 * backend, and the polling watch.
 *
 * DESIGN
 *
 * dango_md_open() splits "<scheme>://<rest>", reads the MD_* options once
 * into the handle, and hands <rest> to the backend named by the scheme.
 * Every public call checks its arguments here, so backends see only valid
 * keys and sizes, and then goes through md->ops.
 *
 * Watches: a backend with a native change feed provides watch_start/stop.
 * For the others a watch is a thread that, every MD_WATCH_INTERVAL, lists
 * the prefix, reads every key, and compares the result with a snapshot of
 * (key, length, xxh3 of the value) from the previous scan; new or changed
 * keys are reported with their value, vanished keys with NULL. The snapshot
 * holds hashes, not values, so a watch over many large descriptors costs
 * little memory. A failed list skips the round; a failed read keeps the
 * key's previous snapshot entry; so a flaky server never produces false
 * deletions, only late reports.
 *
 * Stopping: the thread sleeps on a condition variable (monotonic clock),
 * so dango_md_watch_stop() wakes it at once and joins it; after the join no
 * callback can run. A callback may stop its own watch: the thread is then
 * detached and frees the watch itself when the callback returns.
 */
#include "md_int.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/time.h"

DANGO_LOG_COMPONENT_DEFINE(dango__md_log, "md");

typedef struct md_scheme {
    const char       *name;
    dango__md_open_fn open;
} md_scheme_t;

static const md_scheme_t md_schemes[] = {
    {"mem", dango__md_mem_open},
    {"http", dango__md_http_open},
    {"etcd", dango__md_etcd_open},
    {"redis", dango__md_redis_open},
};

/* One key as seen by the previous scan of a polling watch. */
typedef struct md_snap_entry {
    char    *key;
    uint64_t hash;
    size_t   len;
} md_snap_entry_t;

typedef struct md_snap {
    md_snap_entry_t *entries; /* sorted by key */
    size_t           count;
    size_t           cap;
} md_snap_t;

typedef struct md_poll_watch {
    dango_md_watch_t  super;
    dango_md_watch_cb cb;
    void             *arg;
    char             *prefix;
    uint64_t          interval_ns;
    pthread_t         thread;
    pthread_mutex_t   lock;
    pthread_cond_t    cond;
    int               stopping; /* atomic; set once by stop */
    int               detached; /* set under lock by a stop from cb */
    int               failing;  /* consecutive failed scans */
    md_snap_t         snap;
} md_poll_watch_t;

/* ---------- private functions ---------- */

static int md_prefix_check(const char *prefix)
{
    if (prefix == NULL) {
        return DANGO_EINVAL;
    }

    if (strnlen(prefix, DANGO_MD_KEY_MAX + 1) > DANGO_MD_KEY_MAX) {
        return DANGO_EINVAL;
    }

    return 0;
}

static void snap_clear(md_snap_t *snap)
{
    for (size_t i = 0; i < snap->count; i++) {
        dango_free(snap->entries[i].key);
    }

    dango_free(snap->entries);
    snap->entries = NULL;
    snap->count   = 0;
    snap->cap     = 0;
}

/* Appends (a copy of @key, @hash, @len) to @snap. */
static int snap_append(md_snap_t *snap, const char *key, uint64_t hash,
                       size_t len)
{
    md_snap_entry_t *entry;

    if (snap->count == snap->cap) {
        size_t           new_cap = (snap->cap == 0) ? 16 : snap->cap * 2;
        md_snap_entry_t *grown;

        grown = dango_realloc(snap->entries, new_cap * sizeof(*grown),
                              "md_watch_snap");
        if (grown == NULL) {
            return DANGO_ENOMEM;
        }

        snap->entries = grown;
        snap->cap     = new_cap;
    }

    entry      = &snap->entries[snap->count];
    entry->key = dango_strdup(key, "md_watch_key");
    if (entry->key == NULL) {
        return DANGO_ENOMEM;
    }

    entry->hash = hash;
    entry->len  = len;
    snap->count++;
    return 0;
}

static int watch_stopping(md_poll_watch_t *w)
{
    return __atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE);
}

/* Calls the user callback unless the watch is being stopped. */
static void watch_report(md_poll_watch_t *w, const char *key, const void *value,
                         size_t len)
{
    if (!watch_stopping(w)) {
        w->cb(key, value, len, w->arg);
    }
}

/*
 * One scan: list, read, diff against w->snap, report, and replace w->snap.
 * Returns 0, or the error that made the round be skipped.
 */
static int watch_scan(md_poll_watch_t *w)
{
    dango_md_t *md    = w->super.md;
    md_snap_t   next  = {NULL, 0, 0};
    size_t      old_i = 0;
    char      **keys;
    size_t      count;
    int         rc;

    rc = md->ops->list(md, w->prefix, &keys, &count);
    if (rc != 0) {
        return rc;
    }

    for (size_t i = 0; (i < count) && !watch_stopping(w); i++) {
        const md_snap_entry_t *old = NULL;
        char                  *value;
        size_t                 len;
        uint64_t               hash;
        int                    cmp;

        /* Old keys sorting before this one are gone. */
        while (old_i < w->snap.count) {
            cmp = strcmp(w->snap.entries[old_i].key, keys[i]);
            if (cmp > 0) {
                break;
            }

            if (cmp == 0) {
                old = &w->snap.entries[old_i++];
                break;
            }

            watch_report(w, w->snap.entries[old_i++].key, NULL, 0);
        }

        rc = md->ops->get(md, keys[i], &value, &len);
        if (rc == DANGO_ENOENT) {
            /* Deleted since the listing; report it if we knew it. */
            if (old != NULL) {
                watch_report(w, old->key, NULL, 0);
            }
            continue;
        } else if (rc != 0) {
            /* Keep what we knew; the next scan retries this key. */
            if ((old != NULL) && ((rc = snap_append(&next, old->key, old->hash,
                                                    old->len)) != 0)) {
                goto err_free;
            }
            continue;
        }

        hash = dango_hash64(value, len);
        if ((old == NULL) || (old->hash != hash) || (old->len != len)) {
            watch_report(w, keys[i], value, len);
        }

        dango_md_free(value);
        rc = snap_append(&next, keys[i], hash, len);
        if (rc != 0) {
            goto err_free;
        }
    }

    while (!watch_stopping(w) && (old_i < w->snap.count)) {
        watch_report(w, w->snap.entries[old_i++].key, NULL, 0);
    }

    dango_md_list_free(keys, count);
    snap_clear(&w->snap);
    w->snap = next;
    return 0;

err_free:
    /*
     * Out of memory mid-scan: some changes were reported but the snapshot
     * is not updated, so they may be reported again. Better twice than
     * never.
     */
    snap_clear(&next);
    dango_md_list_free(keys, count);
    return rc;
}

static void watch_free(md_poll_watch_t *w)
{
    snap_clear(&w->snap);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    dango_free(w->prefix);
    dango_free(w);
}

static void *watch_thread(void *arg)
{
    md_poll_watch_t *w = arg;
    struct timespec  deadline;
    uint64_t         wake_ns;
    int              detached;
    int              rc;

    /* Wait until md_poll_watch_start() has stored w->thread. */
    pthread_mutex_lock(&w->lock);
    pthread_mutex_unlock(&w->lock);

    while (!watch_stopping(w)) {
        rc = watch_scan(w);
        if (rc != 0) {
            /* One warning per outage; the backend logged the cause. */
            if (w->failing++ == 0) {
                dango_warn("md watch %p prefix '%s': scan failed: %s", w,
                           w->prefix, dango_strerror(rc));
            }
        } else if (w->failing > 0) {
            dango_info("md watch %p prefix '%s': scans recovered after %d "
                       "failures",
                       w, w->prefix, w->failing);
            w->failing = 0;
        }

        wake_ns          = dango_time_ns() + w->interval_ns;
        deadline.tv_sec  = (time_t)(wake_ns / DANGO_NSEC_PER_SEC);
        deadline.tv_nsec = (long)(wake_ns % DANGO_NSEC_PER_SEC);

        pthread_mutex_lock(&w->lock);
        while (!watch_stopping(w) &&
               (pthread_cond_timedwait(&w->cond, &w->lock, &deadline) == 0)) {
            /* Spurious wake-up or stop: re-check the flag. */
        }
        pthread_mutex_unlock(&w->lock);
    }

    pthread_mutex_lock(&w->lock);
    detached = w->detached;
    pthread_mutex_unlock(&w->lock);

    if (detached) {
        watch_free(w);
    }

    return NULL;
}

static int md_poll_watch_start(dango_md_t *md, const char *prefix,
                               dango_md_watch_cb cb, void *arg,
                               dango_md_watch_t **watch_p)
{
    pthread_condattr_t attr;
    md_poll_watch_t   *w;
    int                rc;

    w = dango_calloc(1, sizeof(*w), "md_watch");
    if (w == NULL) {
        return DANGO_ENOMEM;
    }

    w->prefix = dango_strdup(prefix, "md_watch_prefix");
    if (w->prefix == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_watch;
    }

    w->super.md    = md;
    w->cb          = cb;
    w->arg         = arg;
    w->interval_ns = md->config.watch_interval_ns;
    if (w->interval_ns == 0) {
        /* A zero period would spin; poll as fast as is still sane. */
        w->interval_ns = DANGO_NSEC_PER_MSEC;
    }

    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);

    /* Held so the thread cannot stop itself before w->thread is set. */
    pthread_mutex_lock(&w->lock);
    rc = pthread_create(&w->thread, NULL, watch_thread, w);
    pthread_mutex_unlock(&w->lock);
    if (rc != 0) {
        dango_error("md watch prefix '%s': pthread_create: %s", prefix,
                    strerror(rc));
        rc = dango_err_from_errno(rc);
        goto err_destroy_sync;
    }

    *watch_p = &w->super;
    return 0;

err_destroy_sync:
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    dango_free(w->prefix);
err_free_watch:
    dango_free(w);
    return rc;
}

static void md_poll_watch_stop(dango_md_watch_t *watch)
{
    md_poll_watch_t *w = dango_container_of(watch, md_poll_watch_t, super);

    pthread_mutex_lock(&w->lock);
    __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&w->cond);
    if (pthread_equal(pthread_self(), w->thread)) {
        /* Called from our own callback: the thread frees the watch. */
        w->detached = 1;
        pthread_detach(w->thread);
        pthread_mutex_unlock(&w->lock);
        return;
    }
    pthread_mutex_unlock(&w->lock);

    pthread_join(w->thread, NULL);
    watch_free(w);
}

/* ---------- internal API ---------- */

int dango__md_key_check(const char *key)
{
    size_t len;

    if (key == NULL) {
        return DANGO_EINVAL;
    }

    len = strnlen(key, DANGO_MD_KEY_MAX + 1);
    if ((len == 0) || (len > DANGO_MD_KEY_MAX)) {
        return DANGO_EINVAL;
    }

    return 0;
}

/* ---------- public API ---------- */

int dango_md_open(const char *conn, const dango_config_t *cfg,
                  dango_md_t **md_p)
{
    dango__md_config_t config;
    const char        *sep;
    size_t             scheme_len;
    dango_md_t        *md;
    int                rc;

    if ((conn == NULL) || (md_p == NULL)) {
        return DANGO_EINVAL;
    }

    sep = strstr(conn, "://");
    if (sep == NULL) {
        dango_debug("md connection string '%s' has no scheme", conn);
        return DANGO_EINVAL;
    }

    scheme_len = (size_t)(sep - conn);
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(md_schemes); i++) {
        if ((strlen(md_schemes[i].name) != scheme_len) ||
            (strncasecmp(md_schemes[i].name, conn, scheme_len) != 0)) {
            continue;
        }

        rc = dango__config_parse(cfg, &dango__md_config_table, &config);
        if (rc != 0) {
            return rc;
        }

        rc = md_schemes[i].open(sep + 3, &config, &md);
        dango__config_free(&dango__md_config_table, &config);
        if (rc != 0) {
            return rc;
        }

        dango_debug("md %p: opened %s", md, conn);
        *md_p = md;
        return 0;
    }

    dango_debug("md connection string '%s': unknown scheme", conn);
    return DANGO_EINVAL;
}

void dango_md_close(dango_md_t *md)
{
    int watches;

    if (md == NULL) {
        return;
    }

    watches = __atomic_load_n(&md->num_watches, __ATOMIC_ACQUIRE);
    if (watches != 0) {
        /*
         * The watch threads still use the handle: freeing it would be a
         * use-after-free later, far from the bug. Leak it loudly instead.
         */
        dango_error("md %p: closed with %d watches still running; "
                    "handle leaked",
                    md, watches);
        return;
    }

    dango_debug("md %p: closing", md);
    md->ops->close(md);
}

int dango_md_get(dango_md_t *md, const char *key, char **value_p, size_t *len_p)
{
    char  *value;
    size_t len;
    int    rc;

    if ((md == NULL) || (value_p == NULL) || (dango__md_key_check(key) != 0)) {
        return DANGO_EINVAL;
    }

    rc = md->ops->get(md, key, &value, &len);
    if (rc != 0) {
        return rc;
    }

    *value_p = value;
    if (len_p != NULL) {
        *len_p = len;
    }

    return 0;
}

int dango_md_put(dango_md_t *md, const char *key, const void *value, size_t len,
                 uint64_t ttl_ms)
{
    if ((md == NULL) || (dango__md_key_check(key) != 0) ||
        ((value == NULL) && (len > 0))) {
        return DANGO_EINVAL;
    }

    if (len > DANGO_MD_VALUE_MAX) {
        dango_debug("md %p key '%s': value of %zu bytes exceeds %u", md, key,
                    len, DANGO_MD_VALUE_MAX);
        return DANGO_EMSGSIZE;
    }

    return md->ops->put(md, key, (value == NULL) ? "" : value, len, ttl_ms);
}

int dango_md_delete(dango_md_t *md, const char *key)
{
    if ((md == NULL) || (dango__md_key_check(key) != 0)) {
        return DANGO_EINVAL;
    }

    return md->ops->del(md, key);
}

int dango_md_list(dango_md_t *md, const char *prefix, char ***keys_p,
                  size_t *count_p)
{
    char **keys;
    size_t count;
    int    rc;

    if ((md == NULL) || (keys_p == NULL) || (count_p == NULL) ||
        (md_prefix_check(prefix) != 0)) {
        return DANGO_EINVAL;
    }

    rc = md->ops->list(md, prefix, &keys, &count);
    if (rc != 0) {
        return rc;
    }

    *keys_p  = keys;
    *count_p = count;
    return 0;
}

void dango_md_list_free(char **keys, size_t count)
{
    if (keys == NULL) {
        return;
    }

    for (size_t i = 0; i < count; i++) {
        dango_free(keys[i]);
    }

    dango_free(keys);
}

void dango_md_free(void *value)
{
    dango_free(value);
}

int dango_md_watch_start(dango_md_t *md, const char *prefix,
                         dango_md_watch_cb cb, void *arg,
                         dango_md_watch_t **watch_p)
{
    dango_md_watch_t *watch;
    int               rc;

    if ((md == NULL) || (cb == NULL) || (watch_p == NULL) ||
        (md_prefix_check(prefix) != 0)) {
        return DANGO_EINVAL;
    }

    if (md->ops->watch_start != NULL) {
        rc = md->ops->watch_start(md, prefix, cb, arg, &watch);
    } else {
        rc = md_poll_watch_start(md, prefix, cb, arg, &watch);
    }

    if (rc != 0) {
        return rc;
    }

    /* The backend set watch->md before its thread could read it. */
    __atomic_add_fetch(&md->num_watches, 1, __ATOMIC_RELEASE);
    dango_debug("md %p: watch %p started on prefix '%s'", md, watch, prefix);
    *watch_p = watch;
    return 0;
}

void dango_md_watch_stop(dango_md_watch_t *watch)
{
    dango_md_t *md;

    if (watch == NULL) {
        return;
    }

    md = watch->md;
    dango_debug("md %p: stopping watch %p", md, watch);
    if (md->ops->watch_stop != NULL) {
        md->ops->watch_stop(watch);
    } else {
        md_poll_watch_stop(watch);
    }

    __atomic_sub_fetch(&md->num_watches, 1, __ATOMIC_RELEASE);
}
