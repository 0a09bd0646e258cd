/*
 * Tests of the etcd client (src/metadata/etcd.h) and of the etcd://
 * backend's sessions, against a real etcd on free loopback ports
 * (tests/fixtures/md_servers.c), stopped after the run.
 *
 * Covered: range/put/delete with revisions, compare-and-swap success and
 * failure on create revision, value and mod revision, lease expiry making
 * keys vanish, a keeper keeping them, a lost lease reported, watch order
 * and resumption across an etcd restart, failover past a dead first
 * endpoint, and session keys vanishing when their writer is killed (and
 * re-published when the lease is lost under a live writer).
 *
 * Every wait is bounded in count and time.
 */
#include "dango_test.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <dango/config.h>
#include <dango/metadata.h>

#include "common/alloc.h"
#include "common/time.h"
#include "fixtures/md_servers.h"
#include "metadata/etcd.h"

#define WAIT_MS 8000
#define NS      1000000000ull

static dango_test_server_t g_etcd;
static char                g_ep[64]; /* "127.0.0.1:port" */

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

static int closed_port(void)
{
    int port = dango_test_free_port();

    assert_true(port > 0);
    return port;
}

static dango__etcd_t *client(void)
{
    dango__etcd_t *e;

    assert_dango_ok(dango__etcd_open(g_ep, 500 * 1000000ull, 3 * NS, &e));
    return e;
}

/* Value of @key, or NULL when absent (allocated; dango_free). */
static char *get_str(dango__etcd_t *e, const char *key)
{
    dango__etcd_kv_t *kv;
    char             *v;
    int               rc = dango__etcd_get(e, key, strlen(key), &kv, NULL);

    if (rc == DANGO_ENOENT) {
        return NULL;
    }
    assert_dango_ok(rc);
    v         = kv->value;
    kv->value = NULL;
    dango__etcd_kvs_free(kv, 1);
    return v;
}

static void put_str(dango__etcd_t *e, const char *key, const char *value,
                    int64_t lease)
{
    assert_dango_ok(dango__etcd_put(e, key, strlen(key), value, strlen(value),
                                    lease, NULL));
}

/* Waits (bounded) until @key is absent (@present 0) or present (1). */
static int wait_key(dango__etcd_t *e, const char *key, int present,
                    unsigned max_ms)
{
    uint64_t end = now_ms() + max_ms;

    for (;;) {
        char *v   = get_str(e, key);
        int   has = (v != NULL);

        dango_free(v);
        if (has == present) {
            return 1;
        }
        if (now_ms() >= end) {
            return 0;
        }
        sleep_ms(50);
    }
}

static int md_open_with(const char *conn, const char *n1, const char *v1,
                        const char *n2, const char *v2, dango_md_t **md_p)
{
    dango_config_t *cfg;
    int             rc;

    assert_dango_ok(dango_config_read(NULL, &cfg));
    if (n1 != NULL) {
        assert_dango_ok(dango_config_set(cfg, n1, v1));
    }
    if (n2 != NULL) {
        assert_dango_ok(dango_config_set(cfg, n2, v2));
    }
    rc = dango_md_open(conn, cfg, md_p);
    dango_config_release(cfg);
    return rc;
}

/* ---------- fixture ---------- */

static int group_setup(void **state)
{
    if (dango_test_server_start(&g_etcd, DANGO_TEST_ETCD) != 0) {
        dango_test_server_destroy(&g_etcd);
        return -1;
    }

    snprintf(g_ep, sizeof(g_ep), "127.0.0.1:%d", g_etcd.port);
    return 0;
}

static int group_teardown(void **state)
{
    dango_test_server_destroy(&g_etcd);
    return 0;
}

/* Each test starts from an empty keyspace. */
static int test_setup(void **state)
{
    dango__etcd_t *e;
    int            rc;

    if (dango__etcd_open(g_ep, 500 * 1000000ull, 3 * NS, &e) != 0) {
        return -1;
    }
    rc = dango__etcd_delete(e, "", 0, 1, NULL, NULL);
    dango__etcd_close(e);
    return rc;
}

/* ---------- key/value ---------- */

static void test_kv(void **state)
{
    static const char bin[] = {'k', '\0', '\377', 'x'};
    dango__etcd_t    *e     = client();
    dango__etcd_kv_t *kvs;
    dango__etcd_kv_t *kv;
    size_t            n;
    int64_t           rev1;
    int64_t           rev2;
    int64_t           deleted;

    assert_dango_ok(dango__etcd_put(e, "a/2", 3, "two", 3, 0, &rev1));
    assert_true(rev1 > 0);
    assert_dango_ok(dango__etcd_put(e, "a/1", 3, "one", 3, 0, &rev2));
    assert_int_equal(rev2, rev1 + 1);
    put_str(e, "b/1", "other", 0);
    assert_dango_ok(
        dango__etcd_put(e, bin, sizeof(bin), bin, sizeof(bin), 0, NULL));

    /* Single key with its revisions; binary keys and values survive. */
    assert_dango_ok(dango__etcd_get(e, "a/1", 3, &kv, NULL));
    assert_int_equal(kv->value_len, 3);
    assert_memory_equal(kv->value, "one", 3);
    assert_int_equal(kv->create_revision, rev2);
    assert_int_equal(kv->mod_revision, rev2);
    assert_int_equal(kv->version, 1);
    dango__etcd_kvs_free(kv, 1);
    assert_dango_ok(dango__etcd_get(e, bin, sizeof(bin), &kv, NULL));
    assert_int_equal(kv->key_len, sizeof(bin));
    assert_memory_equal(kv->key, bin, sizeof(bin));
    assert_memory_equal(kv->value, bin, sizeof(bin));
    dango__etcd_kvs_free(kv, 1);
    assert_dango_err(DANGO_ENOENT, dango__etcd_get(e, "a/3", 3, &kv, NULL));

    /* Prefix range: sorted, keys only or with values, and historical. */
    assert_dango_ok(dango__etcd_range_prefix(e, "a/", 2, 0, 0, &kvs, &n, NULL));
    assert_int_equal(n, 2);
    assert_string_equal(kvs[0].key, "a/1");
    assert_string_equal(kvs[0].value, "one");
    assert_string_equal(kvs[1].key, "a/2");
    dango__etcd_kvs_free(kvs, n);
    assert_dango_ok(dango__etcd_range_prefix(e, "a/", 2, 1, 0, &kvs, &n, NULL));
    assert_int_equal(n, 2);
    assert_null(kvs[0].value);
    dango__etcd_kvs_free(kvs, n);
    assert_dango_ok(
        dango__etcd_range_prefix(e, "a/", 2, 0, rev1, &kvs, &n, NULL));
    assert_int_equal(n, 1);
    assert_string_equal(kvs[0].key, "a/2");
    dango__etcd_kvs_free(kvs, n);
    assert_dango_ok(dango__etcd_range_prefix(e, "", 0, 1, 0, &kvs, &n, NULL));
    assert_int_equal(n, 4);
    dango__etcd_kvs_free(kvs, n);

    /* Delete: single (count 0 is no error here) and prefix. */
    assert_dango_ok(dango__etcd_delete(e, "zz", 2, 0, &deleted, NULL));
    assert_int_equal(deleted, 0);
    assert_dango_ok(dango__etcd_delete(e, "a/", 2, 1, &deleted, NULL));
    assert_int_equal(deleted, 2);
    assert_dango_ok(dango__etcd_range_prefix(e, "a/", 2, 1, 0, &kvs, &n, NULL));
    assert_int_equal(n, 0);
    assert_non_null(kvs);
    dango__etcd_kvs_free(kvs, n);

    /* Argument errors. */
    assert_dango_err(DANGO_EINVAL, dango__etcd_get(e, NULL, 0, &kv, NULL));
    assert_dango_err(DANGO_EINVAL, dango__etcd_get(e, "k", 1, NULL, NULL));
    assert_dango_err(DANGO_EINVAL, dango__etcd_put(e, "", 0, "v", 1, 0, NULL));
    assert_dango_err(DANGO_EINVAL,
                     dango__etcd_put(e, "k", 1, NULL, 1, 0, NULL));
    assert_dango_err(DANGO_EINVAL, dango__etcd_delete(e, "", 0, 0, NULL, NULL));
    /* A lease that does not exist. */
    assert_dango_err(DANGO_ENOENT,
                     dango__etcd_put(e, "k", 1, "v", 1, 12345, NULL));
    dango__etcd_close(e);
}

static void test_txn_cas(void **state)
{
    dango__etcd_t    *e = client();
    dango__etcd_kv_t *kv;
    char             *v;
    int64_t           rev;
    int64_t           mod;
    int               ok;

    /* Create-if-absent: the first wins, the second loses. */
    dango__etcd_cmp_t absent = {.key     = "leader",
                                .key_len = 6,
                                .target  = DANGO__ETCD_CMP_CREATE,
                                .rev     = 0};
    dango__etcd_op_t  put_a  = {.type      = DANGO__ETCD_OP_PUT,
                                .key       = "leader",
                                .key_len   = 6,
                                .value     = "A",
                                .value_len = 1};
    dango__etcd_op_t  put_b  = put_a;
    dango__etcd_op_t  mark   = {.type      = DANGO__ETCD_OP_PUT,
                                .key       = "lost",
                                .key_len   = 4,
                                .value     = "B",
                                .value_len = 1};

    put_b.value = "B";
    assert_dango_ok(
        dango__etcd_txn(e, &absent, 1, &put_a, 1, NULL, 0, &ok, &rev));
    assert_true(ok);
    assert_dango_ok(
        dango__etcd_txn(e, &absent, 1, &put_b, 1, &mark, 1, &ok, NULL));
    assert_false(ok);
    v = get_str(e, "leader");
    assert_string_equal(v, "A");
    dango_free(v);
    /* The failure branch ran. */
    v = get_str(e, "lost");
    assert_string_equal(v, "B");
    dango_free(v);

    /* Value compare-and-swap. */
    {
        dango__etcd_cmp_t is_b = {.key       = "leader",
                                  .key_len   = 6,
                                  .target    = DANGO__ETCD_CMP_VALUE,
                                  .value     = "B",
                                  .value_len = 1};
        dango__etcd_cmp_t is_a = is_b;

        is_a.value = "A";
        assert_dango_ok(
            dango__etcd_txn(e, &is_b, 1, &put_b, 1, NULL, 0, &ok, NULL));
        assert_false(ok);
        assert_dango_ok(
            dango__etcd_txn(e, &is_a, 1, &put_b, 1, NULL, 0, &ok, NULL));
        assert_true(ok);
    }

    /* Mod-revision compare, with a delete in the success branch. */
    assert_dango_ok(dango__etcd_get(e, "leader", 6, &kv, NULL));
    mod = kv->mod_revision;
    dango__etcd_kvs_free(kv, 1);
    {
        dango__etcd_cmp_t stale = {.key     = "leader",
                                   .key_len = 6,
                                   .target  = DANGO__ETCD_CMP_MOD,
                                   .rev     = mod - 1};
        dango__etcd_cmp_t fresh = stale;
        dango__etcd_op_t  del   = {
               .type = DANGO__ETCD_OP_DELETE, .key = "leader", .key_len = 6};
        dango__etcd_cmp_t ver = {.key     = "leader",
                                 .key_len = 6,
                                 .target  = DANGO__ETCD_CMP_VERSION,
                                 .rev     = 2};

        fresh.rev = mod;
        assert_dango_ok(
            dango__etcd_txn(e, &stale, 1, &del, 1, NULL, 0, &ok, NULL));
        assert_false(ok);
        /* Two conditions, both true (version 2: created, then swapped). */
        {
            dango__etcd_cmp_t both[2] = {fresh, ver};

            assert_dango_ok(
                dango__etcd_txn(e, both, 2, &del, 1, NULL, 0, &ok, NULL));
        }
        assert_true(ok);
        assert_null(get_str(e, "leader"));
    }

    /* Bad arguments. */
    assert_dango_err(DANGO_EINVAL, dango__etcd_txn(e, &absent, 1, NULL, 0, NULL,
                                                   0, NULL, NULL));
    {
        dango__etcd_cmp_t bad = absent;

        bad.key_len = 0;
        assert_dango_err(DANGO_EINVAL, dango__etcd_txn(e, &bad, 1, NULL, 0,
                                                       NULL, 0, &ok, NULL));
    }
    dango__etcd_close(e);
}

/* ---------- leases ---------- */

static void test_lease_expiry(void **state)
{
    dango__etcd_t *e = client();
    int64_t        id;
    int64_t        granted;
    int64_t        ttl;
    uint64_t       start;

    assert_dango_ok(dango__etcd_lease_grant(e, 1, &id, &granted));
    assert_true(granted >= 1);
    put_str(e, "eph/1", "x", id);
    put_str(e, "eph/2", "y", id);
    put_str(e, "keep", "z", 0);
    assert_dango_ok(dango__etcd_lease_ttl(e, id, &ttl, &granted));
    assert_true((ttl >= 0) && (ttl <= granted));

    /* Nobody renews it: both keys vanish on their own, the other stays. */
    start = now_ms();
    assert_true(wait_key(e, "eph/1", 0, WAIT_MS));
    assert_true(wait_key(e, "eph/2", 0, 1000));
    assert_true(now_ms() - start >= 500);
    assert_true(wait_key(e, "keep", 1, 0));
    assert_dango_err(DANGO_ENOENT, dango__etcd_lease_ttl(e, id, &ttl, NULL));
    assert_dango_err(DANGO_ENOENT, dango__etcd_lease_keepalive(e, id, &ttl));
    assert_dango_err(DANGO_ENOENT, dango__etcd_lease_revoke(e, id));

    /* Revoke deletes at once. */
    assert_dango_ok(dango__etcd_lease_grant(e, 60, &id, NULL));
    put_str(e, "eph/3", "x", id);
    assert_dango_ok(dango__etcd_lease_revoke(e, id));
    assert_true(wait_key(e, "eph/3", 0, 0));

    assert_dango_err(DANGO_EINVAL, dango__etcd_lease_grant(e, 0, &id, NULL));
    assert_dango_err(DANGO_EINVAL, dango__etcd_lease_keepalive(e, 0, NULL));
    dango__etcd_close(e);
}

typedef struct lost_log {
    pthread_mutex_t lock;
    int             calls;
    int64_t         lease;
} lost_log_t;

static void lost_cb(int64_t lease, void *arg)
{
    lost_log_t *log = arg;

    pthread_mutex_lock(&log->lock);
    log->calls++;
    log->lease = lease;
    pthread_mutex_unlock(&log->lock);
}

static int lost_calls(lost_log_t *log)
{
    int n;

    pthread_mutex_lock(&log->lock);
    n = log->calls;
    pthread_mutex_unlock(&log->lock);
    return n;
}

static void test_keeper(void **state)
{
    dango__etcd_t        *e   = client();
    lost_log_t            log = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dango__etcd_keeper_t *k;
    uint64_t              end;
    uint64_t              t0;
    int64_t               id;
    int64_t               ttl;

    /* A 1 s lease kept for 3 s: the key stays. */
    assert_dango_ok(dango__etcd_lease_grant(e, 1, &id, &ttl));
    put_str(e, "kept", "x", id);
    assert_dango_ok(dango__etcd_keeper_start(e, id, ttl, lost_cb, &log, &k));
    t0 = dango_time_ns();
    for (int i = 0; i < 6; i++) {
        sleep_ms(500);
        assert_true(wait_key(e, "kept", 1, 0));
        assert_true(dango__etcd_keeper_valid_until(k) > t0);
    }
    assert_int_equal(lost_calls(&log), 0);

    /* Stopping the keeper stops renewals (no revoke): the key expires. */
    dango__etcd_keeper_stop(k);
    assert_true(wait_key(e, "kept", 0, WAIT_MS));
    assert_int_equal(lost_calls(&log), 0);

    /* A lease revoked behind the keeper's back is reported lost, once. */
    assert_dango_ok(dango__etcd_lease_grant(e, 3, &id, &ttl));
    assert_dango_ok(dango__etcd_keeper_start(e, id, ttl, lost_cb, &log, &k));
    assert_dango_ok(dango__etcd_lease_revoke(e, id));
    end = now_ms() + WAIT_MS;
    while ((lost_calls(&log) == 0) && (now_ms() < end)) {
        sleep_ms(20);
    }
    assert_int_equal(lost_calls(&log), 1);
    assert_int_equal(log.lease, id);
    assert_int_equal(dango__etcd_keeper_valid_until(k), 0);
    sleep_ms(1200); /* more renewal periods: no second report */
    assert_int_equal(lost_calls(&log), 1);
    dango__etcd_keeper_stop(k);

    /* Starting a keeper on a lease that is gone fails at once. */
    assert_dango_err(DANGO_ENOENT,
                     dango__etcd_keeper_start(e, id, 3, lost_cb, &log, &k));
    assert_dango_err(DANGO_EINVAL,
                     dango__etcd_keeper_start(e, 0, 3, lost_cb, &log, &k));
    dango__etcd_keeper_stop(NULL);
    dango__etcd_close(e);
}

/* ---------- watch ---------- */

#define MAX_EVENTS 128

typedef struct ev_rec {
    dango__etcd_event_type_t type;
    char                     key[32];
    char                     value[32];
    int64_t                  rev;
} ev_rec_t;

typedef struct ev_log {
    pthread_mutex_t lock;
    ev_rec_t        ev[MAX_EVENTS];
    int             count;
    int             calls;
} ev_log_t;

static void ev_cb(const dango__etcd_event_t *events, size_t count, void *arg)
{
    ev_log_t *log = arg;

    pthread_mutex_lock(&log->lock);
    log->calls++;
    for (size_t i = 0; i < count; i++) {
        ev_rec_t *r;

        if (log->count >= MAX_EVENTS) {
            break;
        }
        r       = &log->ev[log->count++];
        r->type = events[i].type;
        r->rev  = events[i].kv.mod_revision;
        snprintf(r->key, sizeof(r->key), "%.*s", (int)events[i].kv.key_len,
                 (events[i].kv.key != NULL) ? events[i].kv.key : "");
        snprintf(r->value, sizeof(r->value), "%.*s",
                 (int)events[i].kv.value_len,
                 (events[i].kv.value != NULL) ? events[i].kv.value : "");
    }
    pthread_mutex_unlock(&log->lock);
}

/* Waits (bounded) until the log holds @n events. */
static int ev_wait(ev_log_t *log, int n, unsigned max_ms)
{
    uint64_t end = now_ms() + max_ms;
    int      have;

    for (;;) {
        pthread_mutex_lock(&log->lock);
        have = log->count;
        pthread_mutex_unlock(&log->lock);
        if ((have >= n) || (now_ms() >= end)) {
            return have >= n;
        }
        sleep_ms(10);
    }
}

static void ev_check(ev_log_t *log, int i, dango__etcd_event_type_t type,
                     const char *key, const char *value)
{
    pthread_mutex_lock(&log->lock);
    if ((log->ev[i].type != type) || (strcmp(log->ev[i].key, key) != 0) ||
        ((value != NULL) && (strcmp(log->ev[i].value, value) != 0))) {
        pthread_mutex_unlock(&log->lock);
        fail_msg("event %d: type %d key '%s' value '%s'; want %d '%s' '%s'", i,
                 log->ev[i].type, log->ev[i].key, log->ev[i].value, type, key,
                 (value != NULL) ? value : "");
    }
    if (i > 0) {
        assert_true(log->ev[i].rev > log->ev[i - 1].rev);
    }
    pthread_mutex_unlock(&log->lock);
}

static void test_watch_order(void **state)
{
    dango__etcd_t       *e    = client();
    ev_log_t             log  = {.lock = PTHREAD_MUTEX_INITIALIZER};
    ev_log_t             snap = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dango__etcd_watch_t *w;
    dango__etcd_watch_t *ws;
    int64_t              rev;
    int                  count;

    put_str(e, "w/old", "0", 0);
    assert_dango_ok(dango__etcd_put(e, "zz", 2, "x", 1, 0, &rev));

    /* From the next revision: w/old is not reported. */
    assert_dango_ok(dango__etcd_watch_start(
        e, "w/", 2, DANGO__ETCD_WATCH_PREFIX, rev + 1, ev_cb, &log, &w));
    /* With a snapshot: w/old first, then the same changes. */
    assert_dango_ok(dango__etcd_watch_start(
        e, "w/", 2, DANGO__ETCD_WATCH_PREFIX | DANGO__ETCD_WATCH_SNAPSHOT, 0,
        ev_cb, &snap, &ws));
    assert_true(ev_wait(&snap, 1, WAIT_MS));

    put_str(e, "w/a", "1", 0);
    put_str(e, "x/a", "outside", 0);
    put_str(e, "w/b", "2", 0);
    assert_dango_ok(dango__etcd_delete(e, "w/a", 3, 0, NULL, NULL));
    put_str(e, "w/a", "3", 0);
    assert_dango_ok(dango__etcd_delete(e, "w/", 2, 1, NULL, NULL));

    assert_true(ev_wait(&log, 7, WAIT_MS));
    ev_check(&log, 0, DANGO__ETCD_EV_PUT, "w/a", "1");
    ev_check(&log, 1, DANGO__ETCD_EV_PUT, "w/b", "2");
    ev_check(&log, 2, DANGO__ETCD_EV_DELETE, "w/a", NULL);
    ev_check(&log, 3, DANGO__ETCD_EV_PUT, "w/a", "3");
    /* One delete-range: three events at one revision, in key order. */
    pthread_mutex_lock(&log.lock);
    for (int i = 4; i < 7; i++) {
        assert_int_equal(log.ev[i].type, DANGO__ETCD_EV_DELETE);
        assert_int_equal(log.ev[i].rev, log.ev[4].rev);
    }
    assert_string_equal(log.ev[4].key, "w/a");
    assert_string_equal(log.ev[5].key, "w/b");
    assert_string_equal(log.ev[6].key, "w/old");
    pthread_mutex_unlock(&log.lock);

    assert_true(ev_wait(&snap, 8, WAIT_MS));
    ev_check(&snap, 0, DANGO__ETCD_EV_PUT, "w/old", "0");
    ev_check(&snap, 1, DANGO__ETCD_EV_PUT, "w/a", "1");
    ev_check(&snap, 4, DANGO__ETCD_EV_PUT, "w/a", "3");

    /* No more, and nothing after stop. */
    assert_int_equal(dango__etcd_watch_stop(w), 0);
    assert_int_equal(dango__etcd_watch_stop(ws), 0);
    pthread_mutex_lock(&log.lock);
    count = log.count;
    pthread_mutex_unlock(&log.lock);
    assert_int_equal(count, 7);
    put_str(e, "w/late", "9", 0);
    sleep_ms(200);
    pthread_mutex_lock(&log.lock);
    assert_int_equal(log.count, count);
    pthread_mutex_unlock(&log.lock);

    /* A single-key watch and argument errors. */
    assert_dango_ok(
        dango__etcd_watch_start(e, "one", 3, 0, 0, ev_cb, &log, &w));
    sleep_ms(200); /* let the stream be set up: "from now" */
    put_str(e, "one", "1", 0);
    put_str(e, "one2", "no", 0);
    put_str(e, "one", "2", 0);
    assert_true(ev_wait(&log, count + 2, WAIT_MS));
    ev_check(&log, count, DANGO__ETCD_EV_PUT, "one", "1");
    ev_check(&log, count + 1, DANGO__ETCD_EV_PUT, "one", "2");
    dango__etcd_watch_stop(w);

    assert_dango_err(DANGO_EINVAL,
                     dango__etcd_watch_start(e, "", 0, 0, 0, ev_cb, &log, &w));
    assert_dango_err(DANGO_EINVAL,
                     dango__etcd_watch_start(e, "k", 1, 0, 0, NULL, &log, &w));
    assert_int_equal(dango__etcd_watch_stop(NULL), 0);
    dango__etcd_close(e);
}

static void test_watch_resume(void **state)
{
    dango__etcd_t       *e   = client();
    ev_log_t             log = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dango__etcd_watch_t *w;
    char                 key[16];
    int64_t              rev;

    assert_dango_ok(dango__etcd_put(e, "r/0", 3, "0", 1, 0, &rev));
    assert_dango_ok(dango__etcd_watch_start(
        e, "r/", 2, DANGO__ETCD_WATCH_PREFIX, rev, ev_cb, &log, &w));
    assert_true(ev_wait(&log, 1, WAIT_MS));

    /* etcd goes away and comes back with its data (same data dir). */
    dango_test_server_stop(&g_etcd, 0);
    sleep_ms(300); /* the watch notices and starts backing off */
    assert_int_equal(dango_test_server_start(&g_etcd, DANGO_TEST_ETCD), 0);

    /* Written before the watch is back: delivered from the revision on. */
    for (int i = 1; i <= 5; i++) {
        snprintf(key, sizeof(key), "r/%d", i);
        put_str(e, key, key, 0);
    }
    assert_dango_ok(dango__etcd_delete(e, "r/3", 3, 0, NULL, NULL));

    assert_true(ev_wait(&log, 7, WAIT_MS));
    sleep_ms(300); /* duplicates would show up now */
    pthread_mutex_lock(&log.lock);
    assert_int_equal(log.count, 7);
    pthread_mutex_unlock(&log.lock);
    ev_check(&log, 0, DANGO__ETCD_EV_PUT, "r/0", "0");
    for (int i = 1; i <= 5; i++) {
        snprintf(key, sizeof(key), "r/%d", i);
        ev_check(&log, i, DANGO__ETCD_EV_PUT, key, key);
    }
    ev_check(&log, 6, DANGO__ETCD_EV_DELETE, "r/3", NULL);

    dango__etcd_watch_stop(w);
    dango__etcd_close(e);
}

/* ---------- failover and errors ---------- */

static void test_failover(void **state)
{
    dango__etcd_t       *e;
    ev_log_t             log = {.lock = PTHREAD_MUTEX_INITIALIZER};
    dango__etcd_watch_t *w;
    char                 eps[160];
    char                *v;
    uint64_t             start;
    int64_t              id;
    int                  ok;

    /* The first endpoint is a closed port: skipped, the second answers. */
    snprintf(eps, sizeof(eps), "etcd://127.0.0.1:%d,%s", closed_port(), g_ep);
    assert_dango_ok(dango__etcd_open(eps, 500 * 1000000ull, 3 * NS, &e));
    assert_int_equal(dango__etcd_num_endpoints(e), 2);
    assert_string_equal(dango__etcd_endpoint(e, 1), g_ep);
    assert_null(dango__etcd_endpoint(e, 2));

    start = now_ms();
    put_str(e, "f/1", "v", 0);
    v = get_str(e, "f/1");
    assert_string_equal(v, "v");
    dango_free(v);
    {
        dango__etcd_cmp_t c = {
            .key = "f/2", .key_len = 3, .target = DANGO__ETCD_CMP_CREATE};
        dango__etcd_op_t op = {.type      = DANGO__ETCD_OP_PUT,
                               .key       = "f/2",
                               .key_len   = 3,
                               .value     = "w",
                               .value_len = 1};

        /* Not sent to the dead endpoint, so even a txn fails over. */
        assert_dango_ok(dango__etcd_txn(e, &c, 1, &op, 1, NULL, 0, &ok, NULL));
        assert_true(ok);
    }
    assert_dango_ok(dango__etcd_lease_grant(e, 5, &id, NULL));
    assert_dango_ok(dango__etcd_lease_revoke(e, id));
    assert_true(now_ms() - start < 3000);
    dango__etcd_close(e);

    /* A watch given the same list finds the live endpoint too. */
    assert_dango_ok(dango__etcd_open(eps, 500 * 1000000ull, 3 * NS, &e));
    assert_dango_ok(dango__etcd_watch_start(
        e, "f/", 2, DANGO__ETCD_WATCH_PREFIX | DANGO__ETCD_WATCH_SNAPSHOT, 0,
        ev_cb, &log, &w));
    assert_true(ev_wait(&log, 2, WAIT_MS));
    put_str(e, "f/3", "x", 0);
    assert_true(ev_wait(&log, 3, WAIT_MS));
    ev_check(&log, 2, DANGO__ETCD_EV_PUT, "f/3", "x");
    dango__etcd_watch_stop(w);
    dango__etcd_close(e);

    /* Every endpoint dead: a clear error, quickly. */
    snprintf(eps, sizeof(eps), "127.0.0.1:%d,127.0.0.1:%d", closed_port(),
             closed_port());
    assert_dango_ok(dango__etcd_open(eps, 500 * 1000000ull, NS, &e));
    start = now_ms();
    assert_dango_err(DANGO_EMETADATA,
                     dango__etcd_put(e, "k", 1, "v", 1, 0, NULL));
    assert_dango_err(DANGO_EMETADATA, dango__etcd_lease_grant(e, 5, &id, NULL));
    assert_true(now_ms() - start < 3000);
    dango__etcd_close(e);
}

static void test_silent_endpoint(void **state)
{
    struct sockaddr_in sa  = {.sin_family = AF_INET};
    socklen_t          len = sizeof(sa);
    dango__etcd_t     *e;
    char               eps[160];
    char              *v;
    uint64_t           start;
    int                fd;

    /* Listens but never answers: reads time out and go to the next one. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);

    snprintf(eps, sizeof(eps), "127.0.0.1:%d,%s", ntohs(sa.sin_port), g_ep);
    assert_dango_ok(
        dango__etcd_open(eps, 500 * 1000000ull, 300 * 1000000ull, &e));
    start = now_ms();
    /* A read is retried on the next endpoint... */
    assert_null(get_str(e, "nothing"));
    assert_true(now_ms() - start < 3000);
    /* ...which is now the current one: writes go there directly. */
    put_str(e, "s/1", "v", 0);
    v = get_str(e, "s/1");
    assert_string_equal(v, "v");
    dango_free(v);
    dango__etcd_close(e);

    /* Only the silent one: a write times out and is not retried. */
    snprintf(eps, sizeof(eps), "127.0.0.1:%d", ntohs(sa.sin_port));
    assert_dango_ok(
        dango__etcd_open(eps, 500 * 1000000ull, 300 * 1000000ull, &e));
    start = now_ms();
    assert_dango_err(DANGO_ETIMEDOUT,
                     dango__etcd_put(e, "k", 1, "v", 1, 0, NULL));
    assert_true(now_ms() - start < 2000);
    dango__etcd_close(e);
    close(fd);
}

static void test_open_errors(void **state)
{
    static const char *const bad[] = {
        "",       "etcd://", "host",  "host:",    "host:0", "host:65536",
        ":2379",  "h:1,",    ",h:1",  "h:1,,h:2", "h:1/v3", "http://h:1",
        "[::1:1", "[]:1",    "[::1]", "h o:1",    "h:12a",  "h:123456",
    };
    dango__etcd_t *e = (dango__etcd_t *)state;

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        int rc = dango__etcd_open(bad[i], 0, 0, &e);

        if (rc != DANGO_EINVAL) {
            fail_msg("'%s': %s, expected DANGO_EINVAL", bad[i],
                     dango_err_name(rc));
        }
        assert_ptr_equal(e, state);
    }

    assert_dango_err(DANGO_EINVAL, dango__etcd_open(NULL, 0, 0, &e));
    assert_dango_err(DANGO_EINVAL, dango__etcd_open("h:1", 0, 0, NULL));
    assert_dango_ok(
        dango__etcd_open("[::1]:2379,localhost:2,ETCD-1:3", 0, 0, &e));
    assert_int_equal(dango__etcd_num_endpoints(e), 3);
    dango__etcd_close(e);
    dango__etcd_close(NULL);

    /* Prefix ends. */
    {
        char end[4];

        assert_int_equal(dango__etcd_prefix_end("ab", 2, end), 2);
        assert_memory_equal(end, "ac", 2);
        assert_int_equal(dango__etcd_prefix_end("a\xff", 2, end), 1);
        assert_memory_equal(end, "b", 1);
        assert_int_equal(dango__etcd_prefix_end("\xff\xff", 2, end), 0);
        assert_int_equal(dango__etcd_prefix_end("", 0, end), 0);
    }
}

/* ---------- etcd:// sessions ---------- */

static void test_md_session_dies_with_writer(void **state)
{
    dango__etcd_t *e = client();
    char           conn[96];
    int            pipefd[2];
    char           byte = 0;
    pid_t          pid;
    uint64_t       killed;

    snprintf(conn, sizeof(conn), "etcd://%s", g_ep);
    assert_int_equal(pipe(pipefd), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dango_md_t *md;
        int         rc;

        close(pipefd[0]);
        rc = md_open_with(conn, "MD_ETCD_SESSION_TTL", "1s", NULL, NULL, &md);
        if (rc == 0) {
            rc = dango_md_put(md, "node/1", "desc", 4, 0);
        }
        if (rc == 0) {
            rc = dango_md_put(md, "node/ttl", "t", 1, 60000);
        }
        byte = (rc == 0) ? 'k' : 'e';
        if (write(pipefd[1], &byte, 1) != 1) {
            _exit(1);
        }
        for (int i = 0; i < 600; i++) { /* killed long before */
            sleep_ms(100);
        }
        _exit(0);
    }

    close(pipefd[1]);
    assert_int_equal(read(pipefd[0], &byte, 1), 1);
    close(pipefd[0]);
    assert_int_equal(byte, 'k');

    /* Alive for three lease TTLs: renewed, still there. */
    for (int i = 0; i < 6; i++) {
        sleep_ms(500);
        assert_true(wait_key(e, "/dango/node/1", 1, 0));
    }

    /* Killed without any cleanup: the session key vanishes by itself. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    killed = now_ms();
    assert_true(wait_key(e, "/dango/node/1", 0, WAIT_MS));
    assert_true(now_ms() - killed < 4000);
    /* A key with its own TTL is not tied to the session. */
    assert_true(wait_key(e, "/dango/node/ttl", 1, 0));
    dango__etcd_close(e);
}

static void test_md_session_heals(void **state)
{
    dango__etcd_t    *e = client();
    dango__etcd_kv_t *kv;
    dango_md_t       *md;
    dango_md_t       *other;
    char              conn[96];
    char             *v;
    int64_t           lease;

    snprintf(conn, sizeof(conn), "etcd://%s", g_ep);
    assert_dango_ok(
        md_open_with(conn, "MD_ETCD_SESSION_TTL", "2s", NULL, NULL, &md));
    assert_dango_ok(dango_md_put(md, "s/a", "1", 1, 0));
    assert_dango_ok(dango_md_put(md, "s/b", "2", 1, 0));
    assert_dango_ok(dango_md_put(md, "s/c", "3", 1, 0));
    assert_dango_ok(dango_md_put(md, "s/b", "2b", 2, 0));
    /* s/c leaves the session: it has a TTL now; s/a is deleted. */
    assert_dango_ok(dango_md_put(md, "s/c", "3t", 2, 60000));
    assert_dango_ok(dango_md_delete(md, "s/a"));

    assert_dango_ok(dango__etcd_get(e, "/dango/s/b", 10, &kv, NULL));
    lease = kv->lease;
    dango__etcd_kvs_free(kv, 1);
    assert_true(lease != 0);

    /* The lease is lost under a live writer: keys vanish, then return. */
    assert_dango_ok(dango__etcd_lease_revoke(e, lease));
    assert_true(wait_key(e, "/dango/s/b", 0, 0));
    assert_true(wait_key(e, "/dango/s/b", 1, WAIT_MS));
    v = get_str(e, "/dango/s/b");
    assert_string_equal(v, "2b");
    dango_free(v);
    assert_dango_ok(dango__etcd_get(e, "/dango/s/b", 10, &kv, NULL));
    assert_true((kv->lease != 0) && (kv->lease != lease));
    dango__etcd_kvs_free(kv, 1);
    /* Nothing deleted or moved out of the session came back. */
    assert_null(get_str(e, "/dango/s/a"));
    v = get_str(e, "/dango/s/c");
    assert_string_equal(v, "3t");
    dango_free(v);

    /* With sessions off, a key without TTL outlives its handle. */
    assert_dango_ok(md_open_with(conn, "MD_ETCD_SESSION_TTL", "0",
                                 "MD_ETCD_PREFIX", "/tenant-b/", &other));
    assert_dango_ok(dango_md_put(other, "s/b", "mine", 4, 0));
    assert_dango_ok(dango_md_get(other, "s/b", &v, NULL));
    assert_string_equal(v, "mine"); /* prefixes keep tenants apart */
    dango_md_free(v);
    dango_md_close(other);
    v = get_str(e, "/tenant-b/s/b");
    assert_string_equal(v, "mine");
    dango_free(v);

    /* A clean close revokes the session: its keys go at once. */
    dango_md_close(md);
    assert_true(wait_key(e, "/dango/s/b", 0, 0));
    assert_true(wait_key(e, "/dango/s/c", 1, 0));

    /* MD_ETCD_PREFIX longer than a key: refused. */
    {
        char long_prefix[DANGO_MD_KEY_MAX + 2];

        memset(long_prefix, 'p', sizeof(long_prefix) - 1);
        long_prefix[sizeof(long_prefix) - 1] = '\0';
        assert_dango_err(
            DANGO_ECONFIG,
            md_open_with(conn, "MD_ETCD_PREFIX", long_prefix, NULL, NULL, &md));
    }
    dango__etcd_close(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test_setup(test_kv, test_setup),
        cmocka_unit_test_setup(test_txn_cas, test_setup),
        cmocka_unit_test_setup(test_lease_expiry, test_setup),
        cmocka_unit_test_setup(test_keeper, test_setup),
        cmocka_unit_test_setup(test_watch_order, test_setup),
        cmocka_unit_test_setup(test_watch_resume, test_setup),
        cmocka_unit_test_setup(test_failover, test_setup),
        cmocka_unit_test_setup(test_silent_endpoint, test_setup),
        cmocka_unit_test_setup(test_md_session_dies_with_writer, test_setup),
        cmocka_unit_test_setup(test_md_session_heals, test_setup),
    };
    long live = dango__alloc_live();
    int  failed;

    dango_test_quiet_logs();
    failed = cmocka_run_group_tests_name("metadata_etcd_client", tests,
                                         group_setup, group_teardown);
    if (dango__alloc_live() != live) {
        fprintf(stderr, "leak: %ld dango allocations still live\n",
                dango__alloc_live() - live);
        failed++;
    }

    return (failed == 0) ? 0 : 1;
}
