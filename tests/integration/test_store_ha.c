/*
 * Master high availability: masters elected through a real etcd
 * (tests/fixtures/md_servers), store nodes and this process as clients
 * that follow the leader (STORE_MASTER = etcd://...). The masters and
 * nodes are real processes (store_peer_helper.c).
 *
 *   ha_failover_*   three masters; the leader is SIGKILLed: a follower
 *                   takes over, objects committed before stay readable
 *                   byte for byte, the client's writes resume, the term
 *                   grows
 *   ha_revoked_*    the leader's etcd lease is revoked behind its back: it
 *                   answers ENOT_LEADER from then on and another master
 *                   leads
 *   ha_bad_*        malformed HA options are refused with clear codes
 *
 * Every wait is bounded; every child is killed and reaped in the teardown.
 * Lease TTL 2 s, so a failover takes about 4 s (expiry, then warm-up).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/config.h>
#include <dango/store.h>
#include <dango/store_master.h>
#include "common/time.h"
#include "fixtures/md_servers.h"
#include "it_proc.h"
#include "it_store.h"
#include "metadata/etcd.h"
#include "test_values.h"

#ifndef STORE_PEER_PATH
#error "STORE_PEER_PATH must name the store_peer helper"
#endif

#define MIB      ((uint64_t)1 << 20)
#define NMASTERS 3
#define NNODES   2
#define NKEYS    24

static dango_test_server_t   g_etcd;
static char                  g_etcd_url[64];
static char                  g_key[64];
static it_proc_t             g_masters[NMASTERS];
static char                  g_master_addrs[NMASTERS][128];
static it_proc_t             g_nodes[NNODES];
static dango_store_client_t *g_client;

/* ---------- helpers ---------- */

static int put_key(const char *key, size_t len)
{
    void *val = malloc(len);
    int   rc;

    assert_non_null(val);
    test_fill(val, len, test_key_seed(key));
    rc = dango_store_put(g_client, key, val, len, NULL);
    free(val);
    return rc;
}

/* Gets @key and checks every byte; the get's result. */
static int64_t get_check(const char *key, size_t len)
{
    return it_store_get_check(g_client, key, len);
}

static void master_start(int i)
{
    char *argv[] = {STORE_PEER_PATH, "master", NULL};

    it_peer_start(&g_masters[i], argv, NULL, g_master_addrs[i],
                  sizeof(g_master_addrs[i]));
}

static void node_start(int i)
{
    char  size[32];
    char *argv[] = {STORE_PEER_PATH, "node", g_etcd_url, size, NULL};

    snprintf(size, sizeof(size), "%" PRIu64, 32 * MIB);
    it_peer_start(&g_nodes[i], argv, NULL, NULL, 0);
}

static void client_start(const char *master, dango_store_client_t **c_p)
{
    it_store_client(master, 8 * MIB, c_p);
}

/*
 * The leader as etcd has it: index of the master, its term (create
 * revision) and lease; -1 when no key.
 */
static int leader_of(int64_t *term_p, int64_t *lease_p)
{
    dango__etcd_t    *etcd;
    dango__etcd_kv_t *kv  = NULL;
    int               idx = -1;

    assert_dango_ok(dango__etcd_open(g_etcd_url, DANGO_NSEC_PER_SEC,
                                     2 * DANGO_NSEC_PER_SEC, &etcd));
    if (dango__etcd_get(etcd, g_key, strlen(g_key), &kv, NULL) == 0) {
        for (int i = 0; i < NMASTERS; i++) {
            if ((g_masters[i].pid > 0) &&
                (strlen(g_master_addrs[i]) == kv->value_len) &&
                (memcmp(g_master_addrs[i], kv->value, kv->value_len) == 0)) {
                idx = i;
            }
        }

        if (term_p != NULL) {
            *term_p = kv->create_revision;
        }
        if (lease_p != NULL) {
            *lease_p = kv->lease;
        }
        dango__etcd_kvs_free(kv, 1);
    }

    dango__etcd_close(etcd);
    return idx;
}

/* Waits until the leader has every node's segment (a new leader: after
 * their remount). */
static void wait_segments(void)
{
    uint64_t deadline = dango_time_ns() + 20 * DANGO_NSEC_PER_SEC;

    for (;;) {
        dango_store_pool_info_t pool;

        if ((dango_store_pool_stat(g_client, &pool) == 0) &&
            (pool.segments == NNODES)) {
            break;
        }

        assert_true(dango_time_ns() < deadline);
        test_sleep_ms(50);
    }
}

/*
 * Puts @key until it succeeds (bounded): right after a failover the new
 * leader may answer ENOSPC until the nodes have remounted; any other
 * error than the ones a failover explains fails the test.
 */
static void put_retry(const char *key, size_t len)
{
    uint64_t deadline = dango_time_ns() + 30 * DANGO_NSEC_PER_SEC;
    int      rc;

    while ((rc = put_key(key, len)) != 0) {
        /* A call caught on the dying leader's connection fails with
         * ECONNRESET or ETIMEDOUT when the election has not moved yet
         * (retrying it on that leader could apply it twice). */
        if ((rc != DANGO_ENOSPC) && (rc != DANGO_ENOT_LEADER) &&
            (rc != DANGO_ESTALE_TERM) && (rc != DANGO_ECONNRESET) &&
            (rc != DANGO_ETIMEDOUT)) {
            fail_msg("put %s during the failover: %s", key, dango_err_name(rc));
        }
        assert_true(dango_time_ns() < deadline);
        test_sleep_ms(20);
    }
}

/* etcd, @nm masters, the nodes, this process as a client; puts NKEYS. */
static void cluster_start(int nm)
{
    char key[32];

    for (int i = 0; i < nm; i++) {
        master_start(i);
    }

    for (int i = 0; i < NNODES; i++) {
        node_start(i);
    }

    client_start(g_etcd_url, &g_client);
    wait_segments(); /* both nodes mounted on the first leader */

    for (int i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "before/%d", i);
        assert_dango_ok(put_key(key, 1000 + (size_t)i * 4099));
    }
}

static int setup(void **state)
{
    char env[160];

    (void)state;
    dango_test_quiet_logs();
    memset(g_masters, 0, sizeof(g_masters));
    memset(g_nodes, 0, sizeof(g_nodes));
    g_client = NULL;
    if (dango_test_server_start(&g_etcd, DANGO_TEST_ETCD) != 0) {
        fail_msg("etcd did not start");
    }

    snprintf(g_etcd_url, sizeof(g_etcd_url), "etcd://127.0.0.1:%d",
             g_etcd.port);
    snprintf(g_key, sizeof(g_key), "dango/ha%d/master", (int)getpid());
    setenv("DANGO_MASTER_HA", g_etcd_url, 1);
    snprintf(env, sizeof(env), "ha%d", (int)getpid());
    setenv("DANGO_MASTER_CLUSTER_ID", env, 1);
    setenv("DANGO_STORE_CLUSTER_ID", env, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dango_store_client_destroy(g_client);
    g_client = NULL;
    for (int i = 0; i < NNODES; i++) {
        if (g_nodes[i].pid > 0) {
            it_proc_stop(&g_nodes[i], 10000);
        }
    }

    for (int i = 0; i < NMASTERS; i++) {
        if (g_masters[i].pid > 0) {
            it_proc_stop(&g_masters[i], 10000);
        }
    }

    it_proc_kill_all();
    dango_test_server_destroy(&g_etcd);
    unsetenv("DANGO_MASTER_HA");
    return 0;
}

/* ---------- failover ---------- */

static void ha_failover_kill_leader(void **state)
{
    int64_t  term0 = 0, term1 = 0;
    uint64_t t0, t1;
    char     key[32];
    int      old, now;

    (void)state;
    cluster_start(NMASTERS);
    old = leader_of(&term0, NULL);
    assert_true(old >= 0);

    it_proc_kill(&g_masters[old]); /* SIGKILL: no lease revoke */
    t0 = dango_time_ns();
    /*
     * The put waits for the new leader inside the library (HA timeout);
     * it may then see ENOSPC until the nodes have remounted.
     */
    put_retry("after/0", 5000);
    t1 = dango_time_ns();
    print_message("failover: first write %.2f s after the kill\n",
                  (double)(t1 - t0) / 1e9);

    now = leader_of(&term1, NULL);
    assert_true(now >= 0);
    assert_int_not_equal(now, old);
    assert_true(term1 > term0);

    /*
     * Committed objects are back once the nodes remounted and reported
     * (their next ping after the new leader serves).
     */
    for (int i = 0; i < NKEYS; i++) {
        uint64_t deadline = dango_time_ns() + 15 * DANGO_NSEC_PER_SEC;
        int64_t  got;

        snprintf(key, sizeof(key), "before/%d", i);
        while ((got = get_check(key, 1000 + (size_t)i * 4099)) < 0) {
            assert_true(dango_time_ns() < deadline);
            test_sleep_ms(100);
        }
    }

    /* Writes go on; each is readable. */
    for (int i = 1; i < 10; i++) {
        snprintf(key, sizeof(key), "after/%d", i);
        assert_dango_ok(put_key(key, 3000 + (size_t)i));
        assert_int_equal(3000 + i, get_check(key, 3000 + (size_t)i));
    }
    assert_int_equal(5000, get_check("after/0", 5000));
}

/* ---------- revoked lease ---------- */

static void ha_revoked_lease_steps_down(void **state)
{
    dango_store_client_t *direct = NULL;
    dango__etcd_t        *etcd;
    int64_t               term0 = 0, term1 = 0, lease = 0;
    uint64_t              deadline;
    int                   old, now = -1, rc = 0;

    (void)state;
    cluster_start(2);
    old = leader_of(&term0, &lease);
    assert_true(old >= 0);
    assert_true(lease != 0);

    /* A plain client of the leader's own address. */
    client_start(g_master_addrs[old], &direct);
    assert_int_equal(1, dango_store_exist(direct, "before/0"));

    assert_dango_ok(dango__etcd_open(g_etcd_url, DANGO_NSEC_PER_SEC,
                                     2 * DANGO_NSEC_PER_SEC, &etcd));
    assert_dango_ok(dango__etcd_lease_revoke(etcd, lease));
    dango__etcd_close(etcd);

    /* The deposed leader refuses from its next renewal (TTL/6) on. */
    deadline = dango_time_ns() + 10 * DANGO_NSEC_PER_SEC;
    while (dango_time_ns() < deadline) {
        rc = dango_store_exist(direct, "before/0");
        if (rc == DANGO_ENOT_LEADER) {
            break;
        }

        test_sleep_ms(50);
    }
    assert_int_equal(DANGO_ENOT_LEADER, rc);

    /* Another term begins (either master may win it); the data is back. */
    deadline = dango_time_ns() + 15 * DANGO_NSEC_PER_SEC;
    while (dango_time_ns() < deadline) {
        now = leader_of(&term1, NULL);
        if ((now >= 0) && (term1 > term0)) {
            break;
        }

        test_sleep_ms(100);
    }
    assert_true(now >= 0);
    assert_true(term1 > term0);
    wait_segments();
    assert_dango_ok(put_key("after/revoke", 777));
    assert_int_equal(777, get_check("after/revoke", 777));
    deadline = dango_time_ns() + 15 * DANGO_NSEC_PER_SEC;
    while (get_check("before/3", 1000 + 3 * 4099) < 0) {
        assert_true(dango_time_ns() < deadline);
        test_sleep_ms(100);
    }

    dango_store_client_destroy(direct);
}

/* ---------- bad options ---------- */

static void ha_bad_options(void **state)
{
    static const char *const bad_ha[] = {"http://127.0.0.1:1", "127.0.0.1:1",
                                         "etcd"};
    dango_store_master_t    *m        = NULL;
    dango_store_client_t    *c        = NULL;
    dango_config_t          *cfg      = NULL;
    dango_store_params_t     p;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad_ha); i++) {
        assert_dango_ok(dango_config_read(NULL, &cfg));
        assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", "127.0.0.1:0"));
        assert_dango_ok(dango_config_set(cfg, "MASTER_HA", bad_ha[i]));
        assert_dango_err(DANGO_ECONFIG, dango_store_master_create(cfg, &m));
        dango_config_release(cfg);
    }

    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_CLUSTER_ID", "a/b"));
    assert_dango_err(DANGO_ECONFIG, dango_store_master_create(cfg, &m));
    assert_dango_ok(dango_config_set(cfg, "MASTER_CLUSTER_ID", "ok"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_HA_LEASE_TTL", "100ms"));
    assert_dango_err(DANGO_ECONFIG, dango_store_master_create(cfg, &m));
    dango_config_release(cfg);

    /* A client: bad cluster id, malformed endpoint list. */
    memset(&p, 0, sizeof(p));
    p.field_mask  = DANGO_STORE_PARAM_MASTER;
    p.master_addr = g_etcd_url;
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "STORE_CLUSTER_ID", "x/y"));
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));
    dango_config_release(cfg);
    p.master_addr = "etcd://";
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, NULL, &c));
    assert_null(c);

    /*
     * No master at all: a call fails with a clear error once the HA
     * timeout is spent, never hangs.
     */
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "STORE_HA_TIMEOUT", "300ms"));
    assert_dango_ok(dango_config_set(cfg, "STORE_RPC_TIMEOUT", "300ms"));
    p.master_addr = g_etcd_url;
    assert_dango_ok(dango_store_client_create(&p, cfg, &c));
    dango_config_release(cfg);
    assert_dango_err(DANGO_ENOT_LEADER, dango_store_exist(c, "k"));
    dango_store_client_destroy(c);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(ha_failover_kill_leader, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(ha_revoked_lease_steps_down, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(ha_bad_options, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    setenv("DANGO_MASTER_ADMIN_LISTEN", "", 1);
    setenv("DANGO_MASTER_LISTEN", "127.0.0.1:0", 1);
    setenv("DANGO_MASTER_HA_LEASE_TTL", "2s", 1);
    setenv("DANGO_MASTER_CLIENT_TTL", "3s", 1);
    setenv("DANGO_MASTER_MONITOR_INTERVAL", "200ms", 1);
    setenv("DANGO_STORE_PING_INTERVAL", "200ms", 1);
    setenv("DANGO_STORE_RPC_TIMEOUT", "3s", 1);
    setenv("DANGO_XFER_LISTEN", "127.0.0.1:0", 1);
    unsetenv("DANGO_CLUSTER_TOKEN");
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
