/*
 * Unit tests of the metadata module.
 *
 * One suite of key/value tests runs against every backend: mem://, an
 * embedded server on 127.0.0.1 (port picked by the kernel) through http://,
 * a real etcd through etcd:// and a real redis-server through redis://
 * (both started on free loopback ports by tests/fixtures/md_servers.c and
 * stopped after). Plus Redis connection specifics: credentials, database
 * index, a server restart under a live handle.
 * Around it: every argument error, OOM injection on mem://, the server's
 * listen errors, an unreachable server (closed port) and a silent one
 * (listening, never answering), and raw malformed HTTP that must leave the
 * server answering /health.
 *
 * Network: only 127.0.0.1. Every wait is bounded in count and time.
 *
 * Usage: test_md [base|etcd|redis]... (no argument: all of them).
 */
#include "dango_test.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <dango/config.h>
#include <dango/metadata.h>

#include "common/alloc.h"
#include "fixtures/md_servers.h"

#define WAIT_MS      5000 /* bound on every wait for an event */
#define CONC_THREADS 4
#define CONC_ITERS   100

static char                g_conn[256]; /* backend under test */
static dango_md_server_t  *g_srv;       /* for the http suite */
static int                 g_srv_port;
static dango_test_server_t g_daemon; /* etcd or redis-server */

/* ---------- helpers ---------- */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static int open_with(const char *conn, const char *name, const char *value,
                     dango_md_t **md_p)
{
    dango_config_t *cfg;
    int             rc;

    rc = dango_config_read(NULL, &cfg);
    if (rc != 0) {
        return rc;
    }

    if (name != NULL) {
        rc = dango_config_set(cfg, name, value);
    }

    if (rc == 0) {
        rc = dango_md_open(conn, cfg, md_p);
    }

    dango_config_release(cfg);
    return rc;
}

static void delete_all(dango_md_t *md)
{
    char **keys;
    size_t count;

    assert_dango_ok(dango_md_list(md, "", &keys, &count));
    for (size_t i = 0; i < count; i++) {
        assert_dango_ok(dango_md_delete(md, keys[i]));
    }
    dango_md_list_free(keys, count);
}

static void check_value(dango_md_t *md, const char *key, const void *want,
                        size_t want_len)
{
    char  *value = NULL;
    size_t len   = 0;

    assert_dango_ok(dango_md_get(md, key, &value, &len));
    assert_int_equal(len, want_len);
    assert_memory_equal(value, want, want_len);
    assert_int_equal(value[len], '\0');
    dango_md_free(value);
}

static void check_list(dango_md_t *md, const char *prefix,
                       const char *const *want, size_t want_count)
{
    char **keys  = NULL;
    size_t count = 99;

    assert_dango_ok(dango_md_list(md, prefix, &keys, &count));
    assert_int_equal(count, want_count);
    for (size_t i = 0; i < count; i++) {
        assert_string_equal(keys[i], want[i]);
    }
    dango_md_list_free(keys, count);
}

/* A port on 127.0.0.1 that nothing listens on (bound, then released). */
static int closed_port(void)
{
    struct sockaddr_in sa  = {.sin_family = AF_INET};
    socklen_t          len = sizeof(sa);
    int                fd  = socket(AF_INET, SOCK_STREAM, 0);
    int                port;

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* ---------- per-test fixture (both backends) ---------- */

static int md_setup(void **state)
{
    dango_md_t *md;

    if (dango_md_open(g_conn, NULL, &md) != 0) {
        return -1;
    }

    *state = md;
    return 0;
}

static int md_teardown(void **state)
{
    dango_md_t *md = *state;

    delete_all(md);
    dango_md_close(md);
    return 0;
}

/* ---------- the key/value suite ---------- */

static void test_put_get(void **state)
{
    dango_md_t       *md    = *state;
    static const char bin[] = {'\0', '\1', '\2', '\377'};
    char             *value = NULL;

    assert_dango_ok(dango_md_put(md, "a/1", "hello", 5, 0));
    check_value(md, "a/1", "hello", 5);

    /* Overwrite, shorter. */
    assert_dango_ok(dango_md_put(md, "a/1", "hi", 2, 0));
    check_value(md, "a/1", "hi", 2);

    /* Binary-safe, embedded NULs. */
    assert_dango_ok(dango_md_put(md, "a/bin", bin, sizeof(bin), 0));
    check_value(md, "a/bin", bin, sizeof(bin));

    /* Empty value (NULL allowed with length 0); len_p may be NULL. */
    assert_dango_ok(dango_md_put(md, "a/empty", NULL, 0, 0));
    assert_dango_ok(dango_md_get(md, "a/empty", &value, NULL));
    assert_string_equal(value, "");
    dango_md_free(value);
}

static void test_get_missing(void **state)
{
    dango_md_t *md    = *state;
    char       *value = (char *)"untouched";
    size_t      len   = 42;

    assert_dango_err(DANGO_ENOENT, dango_md_get(md, "nope", &value, &len));
    /* Outputs are set on success only. */
    assert_string_equal(value, "untouched");
    assert_int_equal(len, 42);
}

static void test_delete(void **state)
{
    dango_md_t *md = *state;
    char       *value;

    assert_dango_err(DANGO_ENOENT, dango_md_delete(md, "d/1"));
    assert_dango_ok(dango_md_put(md, "d/1", "x", 1, 0));
    assert_dango_ok(dango_md_delete(md, "d/1"));
    assert_dango_err(DANGO_ENOENT, dango_md_get(md, "d/1", &value, NULL));
    assert_dango_err(DANGO_ENOENT, dango_md_delete(md, "d/1"));
}

static void test_list(void **state)
{
    static const char *const all[]       = {"p", "p/a", "p/b", "p/c", "q/a"};
    static const char *const p[]         = {"p/a", "p/b", "p/c"};
    static const char *const put_order[] = {"p/c", "q/a", "p/a", "p", "p/b"};
    dango_md_t              *md          = *state;
    char                   **keys        = NULL;
    size_t                   count       = 7;

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(put_order); i++) {
        assert_dango_ok(dango_md_put(md, put_order[i], "v", 1, 0));
    }

    check_list(md, "p/", p, DANGO_ARRAY_SIZE(p));
    check_list(md, "", all, DANGO_ARRAY_SIZE(all));
    check_list(md, "p", all, 4);
    check_list(md, "p/b", &p[1], 1);

    /* No match: an empty (but freeable) list. */
    assert_dango_ok(dango_md_list(md, "zzz", &keys, &count));
    assert_int_equal(count, 0);
    dango_md_list_free(keys, count);
    dango_md_list_free(NULL, 0);
}

static void test_ttl_expiry(void **state)
{
    static const char *const live[] = {"t/2"};
    dango_md_t              *md     = *state;
    char                    *value;
    uint64_t                 start = now_ms();
    uint64_t                 end;
    int                      rc = 0;

    assert_dango_ok(dango_md_put(md, "t/1", "short", 5, 300));
    assert_dango_ok(dango_md_put(md, "t/2", "long", 4, 0));
    assert_dango_ok(dango_md_put(md, "t/3", "forever", 7, UINT64_MAX));

    rc = dango_md_get(md, "t/1", &value, NULL);
    if (now_ms() - start < 250) {
        /* Still inside its TTL (unless this machine stalled). */
        assert_dango_ok(rc);
    }
    if (rc == 0) {
        dango_md_free(value);
    }

    end = now_ms() + WAIT_MS;
    while (now_ms() < end) {
        rc = dango_md_get(md, "t/1", &value, NULL);
        if (rc != 0) {
            break;
        }
        dango_md_free(value);
        sleep_ms(20);
    }

    assert_dango_err(DANGO_ENOENT, rc);
    assert_true(now_ms() - start >= 300);
    assert_dango_err(DANGO_ENOENT, dango_md_delete(md, "t/1"));
    check_list(md, "t/2", live, 1);
    check_value(md, "t/3", "forever", 7);

    /* An expired key listed only through its prefix is gone too. */
    assert_dango_ok(dango_md_put(md, "t/4", "x", 1, 1));
    end = now_ms() + WAIT_MS;
    for (;;) {
        char **keys;
        size_t count;

        assert_dango_ok(dango_md_list(md, "t/4", &keys, &count));
        dango_md_list_free(keys, count);
        if ((count == 0) || (now_ms() > end)) {
            assert_int_equal(count, 0);
            break;
        }
        sleep_ms(5);
    }

    /* Re-put without TTL clears the expiry. */
    assert_dango_ok(dango_md_put(md, "t/5", "x", 1, 1));
    assert_dango_ok(dango_md_put(md, "t/5", "y", 1, 0));
    sleep_ms(20);
    check_value(md, "t/5", "y", 1);
}

static void test_key_forms(void **state)
{
    static const char *const odd_keys[] = {
        "a b/c?d&e=f%g+h#i;j",
        "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87/\xc3\xbc", /* UTF-8 */
        "/leading/slash",
        "quote\"back\\slash",
    };
    dango_md_t *md = *state;
    char        longest[DANGO_MD_KEY_MAX + 1];

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(odd_keys); i++) {
        assert_dango_ok(
            dango_md_put(md, odd_keys[i], odd_keys[i], strlen(odd_keys[i]), 0));
        check_value(md, odd_keys[i], odd_keys[i], strlen(odd_keys[i]));
        check_list(md, odd_keys[i], &odd_keys[i], 1);
        assert_dango_ok(dango_md_delete(md, odd_keys[i]));
    }

    memset(longest, 'k', DANGO_MD_KEY_MAX);
    longest[DANGO_MD_KEY_MAX] = '\0';
    {
        const char *const want[] = {longest};

        assert_dango_ok(dango_md_put(md, longest, "max", 3, 0));
        check_value(md, longest, "max", 3);
        check_list(md, longest, want, 1);
        assert_dango_ok(dango_md_delete(md, longest));
    }
}

static void test_bad_args(void **state)
{
    dango_md_t       *md = *state;
    char              toolong[DANGO_MD_KEY_MAX + 2];
    char             *big;
    char             *value;
    char            **keys;
    size_t            count;
    dango_md_watch_t *watch;

    memset(toolong, 'k', DANGO_MD_KEY_MAX + 1);
    toolong[DANGO_MD_KEY_MAX + 1] = '\0';

    assert_dango_err(DANGO_EINVAL, dango_md_get(md, "", &value, NULL));
    assert_dango_err(DANGO_EINVAL, dango_md_get(md, NULL, &value, NULL));
    assert_dango_err(DANGO_EINVAL, dango_md_get(md, toolong, &value, NULL));
    assert_dango_err(DANGO_EINVAL, dango_md_get(md, "k", NULL, NULL));
    assert_dango_err(DANGO_EINVAL, dango_md_get(NULL, "k", &value, NULL));

    assert_dango_err(DANGO_EINVAL, dango_md_put(md, "", "v", 1, 0));
    assert_dango_err(DANGO_EINVAL, dango_md_put(md, NULL, "v", 1, 0));
    assert_dango_err(DANGO_EINVAL, dango_md_put(md, toolong, "v", 1, 0));
    assert_dango_err(DANGO_EINVAL, dango_md_put(md, "k", NULL, 1, 0));
    assert_dango_err(DANGO_EINVAL, dango_md_put(NULL, "k", "v", 1, 0));

    assert_dango_err(DANGO_EINVAL, dango_md_delete(md, ""));
    assert_dango_err(DANGO_EINVAL, dango_md_delete(md, NULL));
    assert_dango_err(DANGO_EINVAL, dango_md_delete(md, toolong));
    assert_dango_err(DANGO_EINVAL, dango_md_delete(NULL, "k"));

    assert_dango_err(DANGO_EINVAL, dango_md_list(md, NULL, &keys, &count));
    assert_dango_err(DANGO_EINVAL, dango_md_list(md, toolong, &keys, &count));
    assert_dango_err(DANGO_EINVAL, dango_md_list(md, "", NULL, &count));
    assert_dango_err(DANGO_EINVAL, dango_md_list(md, "", &keys, NULL));
    assert_dango_err(DANGO_EINVAL, dango_md_list(NULL, "", &keys, &count));

    assert_dango_err(DANGO_EINVAL,
                     dango_md_watch_start(md, "", NULL, NULL, &watch));
    assert_dango_err(
        DANGO_EINVAL,
        dango_md_watch_start(md, NULL, (dango_md_watch_cb)1, NULL, &watch));
    assert_dango_err(
        DANGO_EINVAL,
        dango_md_watch_start(md, "", (dango_md_watch_cb)1, NULL, NULL));
    assert_dango_err(
        DANGO_EINVAL,
        dango_md_watch_start(NULL, "", (dango_md_watch_cb)1, NULL, &watch));
    dango_md_watch_stop(NULL);
    dango_md_close(NULL);
    dango_md_free(NULL);

    /* Value size: the limit itself is fine, one byte more is not. */
    big = malloc(DANGO_MD_VALUE_MAX + 1);
    assert_non_null(big);
    for (size_t i = 0; i <= DANGO_MD_VALUE_MAX; i++) {
        big[i] = (char)(i * 7);
    }

    assert_dango_err(DANGO_EMSGSIZE,
                     dango_md_put(md, "big", big, DANGO_MD_VALUE_MAX + 1, 0));
    assert_dango_err(DANGO_ENOENT, dango_md_get(md, "big", &value, NULL));
    assert_dango_ok(dango_md_put(md, "big", big, DANGO_MD_VALUE_MAX, 0));
    check_value(md, "big", big, DANGO_MD_VALUE_MAX);
    free(big);
}

/* ---------- watch ---------- */

#define WATCH_MAX_EVENTS 64

typedef struct watch_event {
    char key[32];
    char value[32];
    int  deleted;
} watch_event_t;

typedef struct watch_log {
    pthread_mutex_t   lock;
    pthread_cond_t    cond;
    watch_event_t     ev[WATCH_MAX_EVENTS];
    int               count;
    dango_md_watch_t *self_stop;    /* stop this watch from the callback */
    int               self_stopped; /* set once that stop returned */
} watch_log_t;

static void watch_cb(const char *key, const void *value, size_t len, void *arg)
{
    watch_log_t      *log = arg;
    dango_md_watch_t *stop;

    pthread_mutex_lock(&log->lock);
    if (log->count < WATCH_MAX_EVENTS) {
        watch_event_t *ev = &log->ev[log->count];

        snprintf(ev->key, sizeof(ev->key), "%s", key);
        ev->deleted = (value == NULL);
        snprintf(ev->value, sizeof(ev->value), "%.*s",
                 (int)((len < sizeof(ev->value)) ? len : 0),
                 (value != NULL) ? (const char *)value : "");
    }
    log->count++;
    stop           = log->self_stop;
    log->self_stop = NULL;
    pthread_cond_broadcast(&log->cond);
    pthread_mutex_unlock(&log->lock);

    if (stop != NULL) {
        dango_md_watch_stop(stop);
        pthread_mutex_lock(&log->lock);
        log->self_stopped = 1;
        pthread_cond_broadcast(&log->cond);
        pthread_mutex_unlock(&log->lock);
    }
}

/*
 * Waits (bounded) for an event on @key with @value (NULL: a deletion),
 * looking at events from *@from on; moves *@from past it.
 */
static int watch_wait(watch_log_t *log, int *from, const char *key,
                      const char *value)
{
    uint64_t end   = now_ms() + WAIT_MS;
    int      found = 0;

    pthread_mutex_lock(&log->lock);
    while (!found) {
        for (; *from < log->count && *from < WATCH_MAX_EVENTS; (*from)++) {
            watch_event_t *ev = &log->ev[*from];

            if ((strcmp(ev->key, key) == 0) &&
                ((value == NULL)
                     ? ev->deleted
                     : (!ev->deleted && (strcmp(ev->value, value) == 0)))) {
                found = 1;
                (*from)++;
                break;
            }
        }

        if (!found) {
            struct timespec ts;
            uint64_t        left = now_ms();

            if (left >= end) {
                break;
            }
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&log->cond, &log->lock, &ts);
        }
    }
    pthread_mutex_unlock(&log->lock);
    return found;
}

static void test_watch(void **state)
{
    dango_md_t       *md = *state;
    dango_md_t       *wmd;
    dango_md_watch_t *watch;
    watch_log_t       log = {.lock = PTHREAD_MUTEX_INITIALIZER,
                             .cond = PTHREAD_COND_INITIALIZER};
    int               at  = 0;
    int               count;
    int               rc;

    assert_dango_ok(dango_md_put(md, "w/a", "1", 1, 0));
    assert_dango_ok(dango_md_put(md, "x/a", "0", 1, 0));

    assert_dango_ok(open_with(g_conn, "MD_WATCH_INTERVAL", "20ms", &wmd));
    assert_dango_ok(dango_md_watch_start(wmd, "w/", watch_cb, &log, &watch));

    /* The first scan reports what exists. */
    assert_true(watch_wait(&log, &at, "w/a", "1"));

    assert_dango_ok(dango_md_put(md, "w/b", "2", 1, 0));
    assert_true(watch_wait(&log, &at, "w/b", "2"));

    assert_dango_ok(dango_md_put(md, "w/a", "3", 1, 0));
    assert_true(watch_wait(&log, &at, "w/a", "3"));

    assert_dango_ok(dango_md_put(md, "x/b", "9", 1, 0));
    assert_dango_ok(dango_md_delete(md, "w/a"));
    assert_true(watch_wait(&log, &at, "w/a", NULL));

    /* Expiry is a deletion too. */
    assert_dango_ok(dango_md_put(md, "w/ttl", "t", 1, 50));
    assert_true(watch_wait(&log, &at, "w/ttl", NULL));

    dango_md_watch_stop(watch);

    /* Nothing outside the prefix, nothing after stop. */
    pthread_mutex_lock(&log.lock);
    count = log.count;
    for (int i = 0; (i < count) && (i < WATCH_MAX_EVENTS); i++) {
        assert_true(strncmp(log.ev[i].key, "w/", 2) == 0);
    }
    pthread_mutex_unlock(&log.lock);

    assert_dango_ok(dango_md_put(md, "w/c", "4", 1, 0));
    sleep_ms(100); /* five polling periods in which nothing may arrive */
    pthread_mutex_lock(&log.lock);
    assert_int_equal(log.count, count);
    pthread_mutex_unlock(&log.lock);

    /*
     * A callback may stop its own watch. The lock is held across the start
     * so the first callback sees self_stop set; the first scan reports w/b
     * first (keys come sorted) and stops there: w/c is never reported.
     */
    pthread_mutex_lock(&log.lock);
    rc = dango_md_watch_start(wmd, "w/", watch_cb, &log, &log.self_stop);
    pthread_mutex_unlock(&log.lock);
    assert_dango_ok(rc);
    at = count;
    assert_true(watch_wait(&log, &at, "w/b", "2"));

    pthread_mutex_lock(&log.lock);
    for (int i = 0; (i < WAIT_MS / 10) && !log.self_stopped; i++) {
        pthread_mutex_unlock(&log.lock);
        sleep_ms(10);
        pthread_mutex_lock(&log.lock);
    }
    count = log.count;
    pthread_mutex_unlock(&log.lock);
    assert_true(log.self_stopped);
    assert_int_equal(count, at);

    assert_dango_ok(dango_md_put(md, "w/d", "5", 1, 0));
    sleep_ms(100);
    pthread_mutex_lock(&log.lock);
    assert_int_equal(log.count, count);
    pthread_mutex_unlock(&log.lock);

    /* The detached watch thread frees itself; give it a moment. */
    sleep_ms(20);
    dango_md_close(wmd);
}

/* ---------- concurrency ---------- */

typedef struct conc_arg {
    dango_md_t *md;
    int         id;
    int         failures;
    int         last_rc;
} conc_arg_t;

static void *conc_thread(void *p)
{
    conc_arg_t *a = p;
    char        key[64];
    char        want[64];
    char       *value;
    size_t      len;
    int         rc;

    for (int i = 0; i < CONC_ITERS; i++) {
        snprintf(key, sizeof(key), "c/%d/%03d", a->id, i);
        snprintf(want, sizeof(want), "v%d-%d", a->id, i);

        rc = dango_md_put(a->md, key, want, strlen(want), 0);
        if (rc == 0) {
            rc = dango_md_get(a->md, key, &value, &len);
            if (rc == 0) {
                if ((len != strlen(want)) || (memcmp(value, want, len) != 0)) {
                    a->failures++;
                }
                dango_md_free(value);
            }
        }

        /* Everyone fights over one shared key too. */
        if (rc == 0) {
            rc = dango_md_put(a->md, "c/shared", want, strlen(want), 0);
        }

        if ((rc == 0) && (i % 2 == 1)) {
            snprintf(key, sizeof(key), "c/%d/%03d", a->id, i - 1);
            rc = dango_md_delete(a->md, key);
        }

        if ((rc == 0) && (i % 10 == 0)) {
            char **keys;
            size_t count;

            rc = dango_md_list(a->md, "c/", &keys, &count);
            if (rc == 0) {
                dango_md_list_free(keys, count);
            }
        }

        if (rc != 0) {
            a->failures++;
            a->last_rc = rc;
        }
    }

    return NULL;
}

static void test_concurrent(void **state)
{
    dango_md_t *md = *state;
    pthread_t   threads[CONC_THREADS];
    conc_arg_t  args[CONC_THREADS];
    char        prefix[16];
    char      **keys;
    size_t      count;
    char       *value;

    for (int t = 0; t < CONC_THREADS; t++) {
        args[t] = (conc_arg_t){.md = md, .id = t};
        assert_int_equal(
            pthread_create(&threads[t], NULL, conc_thread, &args[t]), 0);
    }

    for (int t = 0; t < CONC_THREADS; t++) {
        pthread_join(threads[t], NULL);
    }

    for (int t = 0; t < CONC_THREADS; t++) {
        if (args[t].failures != 0) {
            fail_msg("thread %d: %d failures, last %s", t, args[t].failures,
                     dango_err_name(args[t].last_rc));
        }

        /* Every odd iteration deleted its predecessor: half remain. */
        snprintf(prefix, sizeof(prefix), "c/%d/", t);
        assert_dango_ok(dango_md_list(md, prefix, &keys, &count));
        assert_int_equal(count, CONC_ITERS / 2);
        dango_md_list_free(keys, count);
    }

    assert_dango_ok(dango_md_get(md, "c/shared", &value, NULL));
    assert_true(value[0] == 'v');
    dango_md_free(value);
}

/* ---------- opening ---------- */

static void test_open_errors(void **state)
{
    static const char *const bad[] = {
        "",
        "nonsense",
        "mem:/x",
        "ftp://host/x",
        "mem://",
        "http://",
        "http://:80/metadata",
        "http://host:0/metadata",
        "http://host:65536/metadata",
        "http://host:8o/metadata",
        "http://host:/metadata",
        "http://ho st:80/metadata",
        "http://[::1/metadata",
        "http://[]:80/",
        "http://host:80/p?q=1",
        "http://host:80/p#frag",
        "http://user@host:80/",
        "http://host:123456/",
        "etcd://",
        "etcd://host",
        "etcd://host:0",
        "etcd://host:2379,",
        "etcd://,host:2379",
        "etcd://host:2379/path",
        "etcd://ho st:2379",
        "etcd://[::1:2379",
        "redis://",
        "redis://host:0",
        "redis://host:70000",
        "redis://host:1/x",
        "redis://host:1/",
        "redis://user@host:1",
        "redis://:pw@",
        "redis://:p%zz@host",
        "redis://:p%00@host",
        "redis://ho st",
    };
    static const char *const good[] = {
        "mem://x",
        "MEM://x",
        "http://127.0.0.1:1/metadata",
        "http://localhost",
        "http://localhost:8080",
        "HTTP://h-1.b_c:80/a/b",
        "http://[::1]:8080/metadata",
        "etcd://127.0.0.1:2379",
        "ETCD://localhost:1,127.0.0.1:2,[::1]:3",
        "redis://127.0.0.1",
        "redis://127.0.0.1:6379/3",
        "redis://:pw@localhost:1",
        "redis://user:p%40ss@[::1]:6379/0",
    };
    dango_md_t *md = (dango_md_t *)state; /* a sentinel that must survive */

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        int rc = dango_md_open(bad[i], NULL, &md);

        if (rc != DANGO_EINVAL) {
            fail_msg("'%s': %s, expected DANGO_EINVAL", bad[i],
                     dango_err_name(rc));
        }
        assert_ptr_equal(md, state);
    }

    assert_dango_err(DANGO_EINVAL, dango_md_open(NULL, NULL, &md));
    assert_dango_err(DANGO_EINVAL, dango_md_open("mem://x", NULL, NULL));

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(good); i++) {
        int rc = dango_md_open(good[i], NULL, &md);

        if (rc != 0) {
            fail_msg("'%s': %s", good[i], dango_err_name(rc));
        }
        dango_md_close(md);
    }
}

static void test_open_bad_config(void **state)
{
    dango_md_t *md = NULL;

    assert_int_equal(setenv("DANGO_MD_TIMEOUT", "soon", 1), 0);
    assert_dango_err(DANGO_ECONFIG, dango_md_open("mem://cfg", NULL, &md));
    assert_dango_err(DANGO_ECONFIG,
                     dango_md_open("http://127.0.0.1:1/", NULL, &md));
    assert_null(md);
    unsetenv("DANGO_MD_TIMEOUT");

    assert_dango_ok(open_with("mem://cfg", "MD_WATCH_INTERVAL", "5ms", &md));
    dango_md_close(md);
}

static void test_mem_shared(void **state)
{
    dango_md_t *a;
    dango_md_t *b;
    dango_md_t *other;
    char       *value;

    assert_dango_ok(dango_md_open("mem://shared", NULL, &a));
    assert_dango_ok(dango_md_open("mem://shared", NULL, &b));
    assert_dango_ok(dango_md_open("mem://other", NULL, &other));

    assert_dango_ok(dango_md_put(a, "k", "from-a", 6, 0));
    check_value(b, "k", "from-a", 6);
    assert_dango_err(DANGO_ENOENT, dango_md_get(other, "k", &value, NULL));

    /* The table lives while any handle does. */
    dango_md_close(a);
    check_value(b, "k", "from-a", 6);
    dango_md_close(b);
    dango_md_close(other);

    assert_dango_ok(dango_md_open("mem://shared", NULL, &a));
    assert_dango_err(DANGO_ENOENT, dango_md_get(a, "k", &value, NULL));
    dango_md_close(a);
}

/* Everything mem:// does, with cleanup; returns the first error. */
static int oom_sequence(void)
{
    dango_md_t *md;
    char       *value;
    char      **keys;
    size_t      count;
    char        key[16];
    int         rc;

    rc = dango_md_open("mem://oom", NULL, &md);
    if (rc != 0) {
        return rc;
    }

    /* Enough keys to grow the entry array past its first size. */
    for (int i = 0; (rc == 0) && (i < 20); i++) {
        snprintf(key, sizeof(key), "k%02d", i);
        rc = dango_md_put(md, key, "value", 5, 0);
    }

    if (rc == 0) {
        rc = dango_md_put(md, "k00", "other", 5, 0);
    }

    if (rc == 0) {
        rc = dango_md_get(md, "k00", &value, NULL);
        if (rc == 0) {
            dango_md_free(value);
        }
    }

    if (rc == 0) {
        rc = dango_md_list(md, "k", &keys, &count);
        if (rc == 0) {
            dango_md_list_free(keys, count);
        }
    }

    if (rc == 0) {
        rc = dango_md_list(md, "none", &keys, &count);
        if (rc == 0) {
            dango_md_list_free(keys, count);
        }
    }

    dango_md_close(md);
    return rc;
}

static void test_oom(void **state)
{
    long live = dango__alloc_live();
    long n;
    int  rc = DANGO_ENOMEM;

    for (n = 1; n < 1000; n++) {
        dango__alloc_fail_after(n);
        rc = oom_sequence();
        dango__alloc_fail_after(-1);
        if (rc == 0) {
            break;
        }

        if (rc != DANGO_ENOMEM) {
            fail_msg("allocation %ld failing gave %s", n, dango_err_name(rc));
        }
        assert_int_equal(dango__alloc_live(), live);
    }

    assert_dango_ok(rc);
    assert_true(n > 5);
    assert_int_equal(dango__alloc_live(), live);

    /* Same for opening remote handles (no request is made). */
    {
        static const char *const conns[] = {
            "http://127.0.0.1:1/metadata",
            "etcd://127.0.0.1:1,[::1]:2,localhost:3",
            "redis://user:p%40ss@127.0.0.1:1/2",
        };

        for (size_t c = 0; c < DANGO_ARRAY_SIZE(conns); c++) {
            for (n = 1; n < 100; n++) {
                dango_md_t *md;

                dango__alloc_fail_after(n);
                rc = dango_md_open(conns[c], NULL, &md);
                dango__alloc_fail_after(-1);
                if (rc == 0) {
                    dango_md_close(md);
                    break;
                }
                if (rc != DANGO_ENOMEM) {
                    fail_msg("'%s', allocation %ld failing: %s", conns[c], n,
                             dango_err_name(rc));
                }
                assert_int_equal(dango__alloc_live(), live);
            }
            assert_dango_ok(rc);
            assert_int_equal(dango__alloc_live(), live);
        }
    }
}

/* ---------- server and http error paths ---------- */

static void test_server_errors(void **state)
{
    static const char *const bad[] = {
        "",
        "garbage",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:99999",
        "127.0.0.1:-1",
        "127.0.0.1:8o",
        "[::1",
        "[::1]",
        "[]:0",
        "::1:0",
        "no.such.host.invalid:0",
    };
    dango_md_server_t *srv = (dango_md_server_t *)state;
    char               addr[64];
    int                rc;

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        rc = dango_md_server_start(bad[i], &srv);
        if (rc != DANGO_EINVAL) {
            fail_msg("'%s': %s, expected DANGO_EINVAL", bad[i],
                     dango_err_name(rc));
        }
        assert_ptr_equal(srv, state);
    }

    assert_dango_err(DANGO_EINVAL, dango_md_server_start("127.0.0.1:0", NULL));
    /* Not an address of this machine (TEST-NET-1): nothing is sent. */
    assert_dango_err(DANGO_EINVAL, dango_md_server_start("192.0.2.1:0", &srv));

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", g_srv_port);
    assert_dango_err(DANGO_EADDRINUSE, dango_md_server_start(addr, &srv));

    assert_dango_err(DANGO_EINVAL, dango_md_server_port(NULL));
    dango_md_server_stop(NULL);

    /* The default address may be taken on a busy machine; both are fine. */
    rc = dango_md_server_start(NULL, &srv);
    if (rc == 0) {
        assert_int_equal(dango_md_server_port(srv), 8080);
        dango_md_server_stop(srv);
    } else {
        assert_dango_err(DANGO_EADDRINUSE, rc);
    }
}

static void test_unreachable(void **state)
{
    dango_md_t *md;
    char        conn[64];
    char       *value;
    char      **keys;
    size_t      count;
    uint64_t    start;
    int         rc;

    snprintf(conn, sizeof(conn), "http://127.0.0.1:%d/metadata", closed_port());
    assert_dango_ok(open_with(conn, "MD_TIMEOUT", "1s", &md));

    start = now_ms();
    rc    = dango_md_get(md, "k", &value, NULL);
    assert_true((rc == DANGO_EMETADATA) || (rc == DANGO_ETIMEDOUT));
    rc = dango_md_put(md, "k", "v", 1, 0);
    assert_true((rc == DANGO_EMETADATA) || (rc == DANGO_ETIMEDOUT));
    rc = dango_md_delete(md, "k");
    assert_true((rc == DANGO_EMETADATA) || (rc == DANGO_ETIMEDOUT));
    rc = dango_md_list(md, "", &keys, &count);
    assert_true((rc == DANGO_EMETADATA) || (rc == DANGO_ETIMEDOUT));
    /* Four calls, each bounded by MD_TIMEOUT (plus slack). */
    assert_true(now_ms() - start < 4 * 1000 + 2000);
    dango_md_close(md);
}

static void test_silent_server(void **state)
{
    struct sockaddr_in sa  = {.sin_family = AF_INET};
    socklen_t          len = sizeof(sa);
    dango_md_t        *md;
    char               conn[64];
    char              *value;
    uint64_t           start;
    uint64_t           took;
    int                fd;

    /* Listens (the kernel completes handshakes) but never answers. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);

    snprintf(conn, sizeof(conn), "http://127.0.0.1:%d/metadata",
             ntohs(sa.sin_port));
    assert_dango_ok(open_with(conn, "MD_TIMEOUT", "300ms", &md));

    start = now_ms();
    assert_dango_err(DANGO_ETIMEDOUT, dango_md_get(md, "k", &value, NULL));
    took = now_ms() - start;
    assert_true(took >= 250);
    assert_true(took < 3000);

    dango_md_close(md);
    close(fd);
}

static void test_http_protocol_errors(void **state)
{
    dango_md_t *md;
    char        conn[64];
    char       *value;
    char      **keys;
    size_t      count;

    /* Keys travel in JSON listings, so the server wants UTF-8: 400. */
    snprintf(conn, sizeof(conn), "http://127.0.0.1:%d/metadata", g_srv_port);
    assert_dango_ok(dango_md_open(conn, NULL, &md));
    assert_dango_err(DANGO_EINVAL, dango_md_put(md, "bad\xff", "v", 1, 0));
    dango_md_close(md);

    /* A server path that is not the metadata endpoint. */
    snprintf(conn, sizeof(conn), "http://127.0.0.1:%d/elsewhere", g_srv_port);
    assert_dango_ok(dango_md_open(conn, NULL, &md));
    assert_dango_err(DANGO_ENOENT, dango_md_get(md, "k", &value, NULL));
    assert_dango_err(DANGO_EMETADATA, dango_md_list(md, "", &keys, &count));
    dango_md_close(md);

    /* /health answers 200 "ok" but is no metadata endpoint: not JSON. */
    snprintf(conn, sizeof(conn), "http://127.0.0.1:%d/health", g_srv_port);
    assert_dango_ok(dango_md_open(conn, NULL, &md));
    assert_dango_err(DANGO_EMETADATA, dango_md_list(md, "", &keys, &count));
    /* PUT there is 405: an unexpected status. */
    assert_dango_err(DANGO_EMETADATA, dango_md_put(md, "k", "v", 1, 0));
    dango_md_close(md);
}

/* ---------- raw HTTP against the server ---------- */

/* Receive timeout of raw requests; short for those that may get no reply. */
static int g_raw_wait_ms = 3000;

static int raw_connect(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timeval     tv = {.tv_sec  = g_raw_wait_ms / 1000,
                             .tv_usec = (g_raw_wait_ms % 1000) * 1000};
    int                fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port        = htons((uint16_t)g_srv_port);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Sends @len bytes, ignoring failures (the server may hang up early). */
static void raw_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n <= 0) {
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Reads a response head; returns its status, or 0 if none came. */
static int raw_status(int fd)
{
    char   buf[4096];
    size_t len    = 0;
    int    status = 0;

    while (len < sizeof(buf) - 1) {
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);

        if (n <= 0) {
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL) {
            break;
        }
    }

    buf[len] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        status = 0;
    }

    return status;
}

/* One request on a fresh connection; returns the status (0: none). */
static int raw_request(const void *req, size_t len)
{
    int fd = raw_connect();
    int status;

    raw_send(fd, req, len);
    status = raw_status(fd);
    close(fd);
    return status;
}

#define RAW(_s) raw_request((_s), sizeof(_s) - 1)

static void test_server_raw(void **state)
{
    static const char chunk_head[] =
        "PUT /metadata?key=big HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\n\r\n";
    char  *junk;
    size_t junk_len = 64 * 1024;
    char   line[64];
    int    fd;

    /* Answered by the handler: exact codes. */
    assert_int_equal(RAW("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_int_equal(RAW("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_int_equal(RAW("GET /health HTTP/1.0\r\n\r\n"), 200);
    assert_int_equal(RAW("GET /metadata HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_int_equal(RAW("GET /metadata?key= HTTP/1.1\r\nHost: x\r\n\r\n"),
                     400);
    assert_int_equal(RAW("GET /metadata?key HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_int_equal(RAW("GET /metadata?key=%ZZ%00 HTTP/1.1\r\n"
                         "Host: x\r\n\r\n"),
                     400);
    assert_int_equal(RAW("GET /metadata?key=%ff%fe HTTP/1.1\r\n"
                         "Host: x\r\n\r\n"),
                     400);
    assert_int_equal(RAW("PUT /metadata HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 1\r\n\r\nx"),
                     400);
    assert_int_equal(RAW("PUT /metadata?key=t&ttl_ms=soon HTTP/1.1\r\n"
                         "Host: x\r\nContent-Length: 1\r\n\r\nx"),
                     400);
    assert_int_equal(RAW("PUT /metadata?key=t&ttl_ms=-1 HTTP/1.1\r\n"
                         "Host: x\r\nContent-Length: 1\r\n\r\nx"),
                     400);
    assert_int_equal(RAW("PUT /metadata?key=t&ttl_ms=99999999999999999999999"
                         " HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n"
                         "x"),
                     400);
    assert_int_equal(RAW("POST /metadata?key=x HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 0\r\n\r\n"),
                     405);
    assert_int_equal(RAW("DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
    assert_int_equal(RAW("DELETE /metadata?prefix=a HTTP/1.1\r\n"
                         "Host: x\r\n\r\n"),
                     405);
    assert_int_equal(RAW("GET /other HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
    assert_int_equal(RAW("GET /metadata?key=none HTTP/1.1\r\nHost: x\r\n\r\n"),
                     404);
    assert_int_equal(RAW("GET /metadata?prefix=%ff HTTP/1.1\r\n"
                         "Host: x\r\n\r\n"),
                     200);
    assert_int_equal(RAW("GET /metadata?prefix HTTP/1.1\r\nHost: x\r\n\r\n"),
                     200);
    assert_int_equal(RAW("GET /metadata?key=x HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 3\r\n\r\nabc"),
                     404);
    assert_int_equal(RAW("PUT /metadata?key=big HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 1048577\r\n\r\n"),
                     413);

    /* A chunked body that outgrows the limit: read, dropped, refused. */
    fd = raw_connect();
    raw_send(fd, chunk_head, sizeof(chunk_head) - 1);
    junk = malloc(junk_len);
    assert_non_null(junk);
    memset(junk, 'j', junk_len);
    for (int i = 0; i < 17; i++) {
        snprintf(line, sizeof(line), "%zx\r\n", junk_len);
        raw_send(fd, line, strlen(line));
        raw_send(fd, junk, junk_len);
        raw_send(fd, "\r\n", 2);
    }
    raw_send(fd, "0\r\n\r\n", 5);
    assert_int_equal(raw_status(fd), 413);
    close(fd);

    /* Garbage of every kind: any answer (or none), but no crash. */
    g_raw_wait_ms = 300;
    RAW("GARBAGE\r\n\r\n");
    RAW("\r\n\r\n\r\n");
    RAW("GET\r\n\r\n");
    RAW("GET / HTTP/9.9\r\n\r\n");
    RAW("GET /metadata?key=x HTTP/1.1\r\n\r\n"); /* no Host */
    RAW("PUT /metadata?key=x HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: abc\r\n\r\nxyz");
    RAW("PUT /metadata?key=x HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: -5\r\n\r\n");
    RAW("PUT /metadata?key=x HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 99999999999999999999999\r\n\r\n");
    RAW("PUT /metadata?key=x HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n");
    RAW("GET /metadata?key=x HTTP/1.1\r\nHost:"); /* truncated head */
    RAW("PUT /metadata?key=x HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 10\r\n\r\nabc"); /* truncated body */
    RAW("G\0T /health HTTP/1.1\r\nHost: x\r\n\r\n");

    for (size_t i = 0; i < junk_len; i++) {
        junk[i] = (char)((i * 2654435761u) >> 13);
    }
    raw_request(junk, 4096);

    /* Oversized request line and header. */
    memcpy(junk, "GET /metadata?key=", 18);
    memset(junk + 18, 'k', junk_len - 18);
    raw_request(junk, junk_len);
    memcpy(junk, "GET /health HTTP/1.1\r\nX-Big: ", 29);
    memset(junk + 29, 'a', junk_len - 29);
    raw_request(junk, junk_len);
    free(junk);

    /* Half a request, then the client vanishes. */
    fd = raw_connect();
    raw_send(fd, "PUT /metadata?key=x HTTP/1.1\r\n", 30);
    close(fd);

    /* Still serving, and nothing malformed was stored. */
    g_raw_wait_ms = 3000;
    assert_int_equal(RAW("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_int_equal(RAW("GET /metadata?key=x HTTP/1.1\r\nHost: x\r\n\r\n"),
                     404);
    assert_int_equal(RAW("GET /metadata?key=big HTTP/1.1\r\nHost: x\r\n\r\n"),
                     404);
}

/* ---------- groups ---------- */

static int mem_group_setup(void **state)
{
    snprintf(g_conn, sizeof(g_conn), "mem://test");
    return 0;
}

static int http_group_setup(void **state)
{
    if (dango_md_server_start("127.0.0.1:0", &g_srv) != 0) {
        return -1;
    }

    g_srv_port = dango_md_server_port(g_srv);
    snprintf(g_conn, sizeof(g_conn), "http://127.0.0.1:%d/metadata",
             g_srv_port);
    return 0;
}

static int http_group_teardown(void **state)
{
    dango_md_server_stop(g_srv);
    g_srv = NULL;
    return 0;
}

static int etcd_group_setup(void **state)
{
    if (dango_test_server_start(&g_daemon, DANGO_TEST_ETCD) != 0) {
        dango_test_server_destroy(&g_daemon);
        return -1;
    }

    snprintf(g_conn, sizeof(g_conn), "etcd://127.0.0.1:%d", g_daemon.port);
    return 0;
}

static int redis_group_setup(void **state)
{
    if (dango_test_server_start(&g_daemon, DANGO_TEST_REDIS) != 0) {
        dango_test_server_destroy(&g_daemon);
        return -1;
    }

    snprintf(g_conn, sizeof(g_conn), "redis://127.0.0.1:%d", g_daemon.port);
    return 0;
}

static int daemon_group_teardown(void **state)
{
    dango_test_server_destroy(&g_daemon);
    return 0;
}

/* ---------- redis connection specifics ---------- */

static void test_redis_auth(void **state)
{
    dango_test_server_t srv = {.password = "s3:c@r"};
    dango_md_t         *md;
    char                conn[256];
    char               *value;

    assert_int_equal(dango_test_server_start(&srv, DANGO_TEST_REDIS), 0);

    /* Password only, percent-encoded ':' and '@'. */
    snprintf(conn, sizeof(conn), "redis://:s3%%3Ac%%40r@127.0.0.1:%d",
             srv.port);
    assert_dango_ok(dango_md_open(conn, NULL, &md));
    assert_dango_ok(dango_md_put(md, "k", "v", 1, 0));
    check_value(md, "k", "v", 1);
    dango_md_close(md);

    /* The ACL form with the default user. */
    snprintf(conn, sizeof(conn), "redis://default:s3%%3Ac%%40r@127.0.0.1:%d",
             srv.port);
    assert_dango_ok(dango_md_open(conn, NULL, &md));
    check_value(md, "k", "v", 1);
    dango_md_close(md);

    /* Wrong password, and none at all: refused, clearly. */
    snprintf(conn, sizeof(conn), "redis://:wrong@127.0.0.1:%d", srv.port);
    assert_dango_ok(dango_md_open(conn, NULL, &md));
    assert_dango_err(DANGO_EACCES, dango_md_get(md, "k", &value, NULL));
    assert_dango_err(DANGO_EACCES, dango_md_put(md, "k", "x", 1, 0));
    dango_md_close(md);

    snprintf(conn, sizeof(conn), "redis://127.0.0.1:%d", srv.port);
    assert_dango_ok(dango_md_open(conn, NULL, &md));
    assert_dango_err(DANGO_EACCES, dango_md_get(md, "k", &value, NULL));
    dango_md_close(md);

    dango_test_server_destroy(&srv);
}

static void test_redis_db(void **state)
{
    dango_md_t *db0;
    dango_md_t *db1;
    dango_md_t *bad;
    char        conn[256];
    char       *value;

    snprintf(conn, sizeof(conn), "redis://127.0.0.1:%d/0", g_daemon.port);
    assert_dango_ok(dango_md_open(conn, NULL, &db0));
    snprintf(conn, sizeof(conn), "redis://127.0.0.1:%d/1", g_daemon.port);
    assert_dango_ok(dango_md_open(conn, NULL, &db1));

    assert_dango_ok(dango_md_put(db1, "only-in-1", "v", 1, 0));
    check_value(db1, "only-in-1", "v", 1);
    assert_dango_err(DANGO_ENOENT,
                     dango_md_get(db0, "only-in-1", &value, NULL));
    assert_dango_ok(dango_md_delete(db1, "only-in-1"));

    /* A database the server does not have. */
    snprintf(conn, sizeof(conn), "redis://127.0.0.1:%d/99999", g_daemon.port);
    assert_dango_ok(dango_md_open(conn, NULL, &bad));
    assert_dango_err(DANGO_EINVAL, dango_md_get(bad, "k", &value, NULL));
    dango_md_close(bad);

    dango_md_close(db0);
    dango_md_close(db1);
}

static void test_redis_prefix(void **state)
{
    static const char *const want[] = {"a*b", "a?c", "a[d]", "axe"};
    dango_md_t              *plain;
    dango_md_t              *spaced;
    char                    *value;

    assert_dango_ok(open_with(g_conn, "MD_REDIS_PREFIX", "", &plain));
    assert_dango_ok(open_with(g_conn, "MD_REDIS_PREFIX", "ns*1/", &spaced));

    assert_dango_ok(dango_md_put(spaced, "a*b", "1", 1, 0));
    assert_dango_ok(dango_md_put(spaced, "a?c", "2", 1, 0));
    assert_dango_ok(dango_md_put(spaced, "a[d]", "3", 1, 0));
    assert_dango_ok(dango_md_put(plain, "ns*1/axe", "4", 1, 0));
    assert_dango_ok(dango_md_put(plain, "nsX1/a*b", "5", 1, 0));

    /* Glob characters in prefixes match only themselves. */
    check_list(spaced, "a", want, 4);
    check_list(spaced, "a*", want, 1);
    check_value(plain, "ns*1/a*b", "1", 1);
    check_value(spaced, "axe", "4", 1);
    assert_dango_err(DANGO_ENOENT, dango_md_get(spaced, "a", &value, NULL));

    delete_all(plain);
    check_list(spaced, "", NULL, 0);
    dango_md_close(plain);
    dango_md_close(spaced);
}

static void test_redis_restart(void **state)
{
    dango_md_t *md;
    char       *value;
    int         rc;

    assert_dango_ok(open_with(g_conn, "MD_TIMEOUT", "1s", &md));
    assert_dango_ok(dango_md_put(md, "r/1", "before", 6, 0));

    /* Down: a clear error, quickly. */
    dango_test_server_stop(&g_daemon, 1);
    rc = dango_md_get(md, "r/1", &value, NULL);
    assert_true((rc == DANGO_EMETADATA) || (rc == DANGO_ETIMEDOUT));

    /* Back (empty: no persistence): the same handle just works. */
    assert_int_equal(dango_test_server_start(&g_daemon, DANGO_TEST_REDIS), 0);
    assert_dango_err(DANGO_ENOENT, dango_md_get(md, "r/1", &value, NULL));
    assert_dango_ok(dango_md_put(md, "r/1", "after", 5, 0));
    check_value(md, "r/1", "after", 5);
    assert_dango_ok(dango_md_delete(md, "r/1"));
    dango_md_close(md);
}

static void test_redis_unreachable(void **state)
{
    dango_md_t *md;
    char        conn[64];
    char      **keys;
    size_t      count;
    uint64_t    start = now_ms();
    int         rc;

    snprintf(conn, sizeof(conn), "redis://127.0.0.1:%d", closed_port());
    assert_dango_ok(open_with(conn, "MD_TIMEOUT", "1s", &md));
    rc = dango_md_put(md, "k", "v", 1, 0);
    assert_dango_err(DANGO_EMETADATA, rc);
    rc = dango_md_list(md, "", &keys, &count);
    assert_dango_err(DANGO_EMETADATA, rc);
    assert_true(now_ms() - start < 3000);
    dango_md_close(md);
}
#define SUITE_TEST(_f)                                                         \
    cmocka_unit_test_setup_teardown(_f, md_setup, md_teardown)

static int want_group(int argc, char **argv, const char *name)
{
    if (argc < 2) {
        return 1;
    }

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            return 1;
        }
    }

    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest suite[] = {
        SUITE_TEST(test_put_get),    SUITE_TEST(test_get_missing),
        SUITE_TEST(test_delete),     SUITE_TEST(test_list),
        SUITE_TEST(test_ttl_expiry), SUITE_TEST(test_key_forms),
        SUITE_TEST(test_bad_args),   SUITE_TEST(test_watch),
        SUITE_TEST(test_concurrent),
    };
    const struct CMUnitTest local[] = {
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_open_bad_config),
        cmocka_unit_test(test_mem_shared),
        cmocka_unit_test(test_oom),
    };
    const struct CMUnitTest server[] = {
        cmocka_unit_test(test_server_errors),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_silent_server),
        cmocka_unit_test(test_http_protocol_errors),
        cmocka_unit_test(test_server_raw),
    };
    const struct CMUnitTest redis[] = {
        cmocka_unit_test(test_redis_auth),
        cmocka_unit_test(test_redis_db),
        cmocka_unit_test(test_redis_prefix),
        cmocka_unit_test(test_redis_restart),
        cmocka_unit_test(test_redis_unreachable),
    };
    long live   = dango__alloc_live();
    int  failed = 0;

    dango_test_quiet_logs();
    if (want_group(argc, argv, "base")) {
        failed +=
            cmocka_run_group_tests_name("metadata_local", local, NULL, NULL);
        failed += cmocka_run_group_tests_name("metadata_mem", suite,
                                              mem_group_setup, NULL);
        failed += cmocka_run_group_tests_name(
            "metadata_http", suite, http_group_setup, http_group_teardown);
        failed += cmocka_run_group_tests_name(
            "metadata_server", server, http_group_setup, http_group_teardown);
    }

    if (want_group(argc, argv, "etcd")) {
        failed += cmocka_run_group_tests_name(
            "metadata_etcd", suite, etcd_group_setup, daemon_group_teardown);
    }

    if (want_group(argc, argv, "redis")) {
        failed += cmocka_run_group_tests_name(
            "metadata_redis", suite, redis_group_setup, daemon_group_teardown);
        failed += cmocka_run_group_tests_name("metadata_redis_conn", redis,
                                              redis_group_setup,
                                              daemon_group_teardown);
    }

    if (dango__alloc_live() != live) {
        fprintf(stderr, "leak: %ld dango allocations still live\n",
                dango__alloc_live() - live);
        failed++;
    }

    return (failed == 0) ? 0 : 1;
}
