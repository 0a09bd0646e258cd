/*
 * Store cluster tests: a master and store nodes as real processes
 * (store_peer_helper.c) on loopback, and in two network namespaces joined by
 * veth; this process is a pure client. Every wait is bounded; every child is
 * killed and reaped in the teardown whatever happened.
 *
 * Groups (argv[1] is a cmocka test filter; CTest runs one entry per group):
 *   roundtrip_*  put/get of 1 B .. 64 MiB across three nodes, batches
 *   replica_*    replica_num 2 survives the death of one node
 *   writer_*     a writer killed mid-put: its space is reclaimed
 *   corrupt_*    a flipped byte in a node's memory is detected, never
 *                returned, and the bad replica dropped
 *   evict_*      eviction under pressure never removes a leased object
 *   restart_*    the master is killed and restarted: nodes remount and
 *                report their records, objects written before are back
 *   durable_*    STORE_SYNC_COMMIT: a put that runs out of memory is done
 *                or not visible; a copy's commit word is on its node
 *                when the call returns (copier and master killed after)
 *   netns_*      master and node on host A, client on host B (root only)
 *
 * Timings are shortened through the environment (client TTL 2 s, ping every
 * 200 ms) so that liveness tests finish in seconds.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/store.h>
#include "common/hash.h"
#include "common/time.h"
#include "it_proc.h"
#include "it_store.h"
#include "store/store_proto.h"
#include "test_values.h"

#ifndef STORE_PEER_PATH
#error "STORE_PEER_PATH must name the store_peer helper"
#endif

#define MIB           (1ull << 20)
#define START_TIMEOUT IT_PEER_START_MS
#define CLIENT_TTL_MS 2000
#define MAX_NODES     3

static it_proc_t             g_master;
static char                  g_master_addr[128];
static it_proc_t             g_nodes[MAX_NODES];
static char                  g_node_names[MAX_NODES][256];
static dango_store_client_t *g_client;

/* ---------- helpers ---------- */

static void master_start(const char *listen)
{
    char       *argv[] = {STORE_PEER_PATH, "master", NULL};
    char        env[160];
    const char *add[] = {env, NULL};

    snprintf(env, sizeof(env), "DANGO_MASTER_LISTEN=%s", listen);
    it_peer_start(&g_master, argv, add, g_master_addr, sizeof(g_master_addr));
}

static void node_start(int i, uint64_t seg)
{
    char  size[32];
    char *argv[] = {STORE_PEER_PATH, "node", g_master_addr, size, NULL};

    snprintf(size, sizeof(size), "%" PRIu64, seg);
    it_peer_start(&g_nodes[i], argv, NULL, g_node_names[i],
                  sizeof(g_node_names[i]));
}

static void client_start(uint64_t buf)
{
    it_store_client(g_master_addr, buf, &g_client);
}

/* Master, @n nodes of @seg bytes, and this process as a client. */
static void cluster_start(int n, uint64_t seg)
{
    master_start("127.0.0.1:0");
    for (int i = 0; i < n; i++) {
        node_start(i, seg);
    }

    client_start(128 * MIB);
}

/* As cluster_start(), with a client whose puts and copies wait for their
 * commit words (STORE_SYNC_COMMIT). */
static void cluster_start_durable(int n, uint64_t seg)
{
    master_start("127.0.0.1:0");
    for (int i = 0; i < n; i++) {
        node_start(i, seg);
    }

    setenv("DANGO_STORE_SYNC_COMMIT", "yes", 1);
    client_start(128 * MIB);
    unsetenv("DANGO_STORE_SYNC_COMMIT");
}

/* Kills the master, starts it again on its address and waits until the
 * @n nodes have remounted (and reported their records). */
static void master_restart(int n)
{
    char     addr[128];
    uint64_t deadline;

    snprintf(addr, sizeof(addr), "%s", g_master_addr);
    it_proc_kill(&g_master);
    master_start(addr);
    assert_string_equal(addr, g_master_addr);

    /* Nodes see NEED_REMOUNT on their next ping and mount again. */
    deadline = dango_time_ns() + 15ull * DANGO_NSEC_PER_SEC;
    for (;;) {
        dango_store_pool_info_t pool;

        if ((dango_store_pool_stat(g_client, &pool) == 0) &&
            (pool.segments == (uint64_t)n)) {
            return;
        }

        if (dango_time_ns() >= deadline) {
            fail_msg("the restarted master never saw %d segments", n);
        }

        test_sleep_ms(100);
    }
}

/* Which node is @name? -1 if none. */
static int node_of(const char *name)
{
    for (int i = 0; i < MAX_NODES; i++) {
        if ((g_nodes[i].pid > 0) && (strcmp(g_node_names[i], name) == 0)) {
            return i;
        }
    }

    return -1;
}

static void put_key(const char *key, size_t len,
                    const dango_store_replicate_config_t *cfg)
{
    void *val = malloc(len);

    assert_non_null(val);
    test_fill(val, len, test_key_seed(key));
    assert_dango_ok(dango_store_put(g_client, key, val, len, cfg));
    free(val);
}

/* Gets @key and checks every byte; returns the get's result. */
static int64_t get_check(const char *key, size_t len)
{
    return it_store_get_check(g_client, key, len);
}

static int setup(void **state)
{
    (void)state;
    dango_test_quiet_logs();
    memset(g_nodes, 0, sizeof(g_nodes));
    memset(&g_master, 0, sizeof(g_master));
    g_client = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dango_store_client_destroy(g_client);
    g_client = NULL;
    for (int i = 0; i < MAX_NODES; i++) {
        if (g_nodes[i].pid > 0) {
            it_proc_stop(&g_nodes[i], 10000);
        }
    }

    if (g_master.pid > 0) {
        it_proc_stop(&g_master, 10000);
    }

    it_proc_kill_all();
    it_netns_cleanup();
    return 0;
}

/* ---------- roundtrip ---------- */

static void roundtrip_sizes(void **state)
{
    static const size_t sizes[] = {1,       100,      4096,    65536 + 3,
                                   1 * MIB, 16 * MIB, 64 * MIB};

    (void)state;
    cluster_start(3, 160 * MIB);
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(sizes); i++) {
        char key[64];

        snprintf(key, sizeof(key), "rt/%zu", sizes[i]);
        put_key(key, sizes[i], NULL);
        assert_int_equal((int64_t)sizes[i], get_check(key, sizes[i]));
        assert_int_equal(1, dango_store_exist(g_client, key));
        assert_int_equal((int64_t)sizes[i], dango_store_size(g_client, key));
    }

    /* The same key again: the stored object stays as it is. */
    {
        char junk[100] = {0};

        assert_dango_err(
            DANGO_EOBJ_EXISTS,
            dango_store_put(g_client, "rt/100", junk, sizeof(junk), NULL));
        assert_int_equal(100, get_check("rt/100", 100));
    }

    /* A batch of 16 keys, then each removed. */
    {
        enum { N = 16, LEN = 200 * 1024 };
        char        names[N][32];
        const char *keys[N];
        const void *bufs[N];
        void       *outs[N];
        size_t      lens[N];
        int         res[N];
        int64_t     got[N];

        for (int i = 0; i < N; i++) {
            snprintf(names[i], sizeof(names[i]), "batch/%d", i);
            keys[i] = names[i];
            lens[i] = LEN;
            outs[i] = malloc(LEN);
            assert_non_null(outs[i]);
            test_fill(outs[i], LEN, test_key_seed(keys[i]));
            bufs[i] = outs[i];
        }

        assert_dango_ok(
            dango_store_batch_put(g_client, N, keys, bufs, lens, 0, NULL, res));
        for (int i = 0; i < N; i++) {
            assert_dango_ok(res[i]);
            memset(outs[i], 0, LEN);
        }

        assert_dango_ok(
            dango_store_batch_get(g_client, N, keys, outs, lens, 0, got));
        for (int i = 0; i < N; i++) {
            uint8_t *want = malloc(LEN);

            assert_int_equal(LEN, got[i]);
            test_fill(want, LEN, test_key_seed(keys[i]));
            assert_memory_equal(want, outs[i], LEN);
            free(want);
            free(outs[i]);
            assert_dango_ok(dango_store_remove(g_client, keys[i], 1));
        }
    }

    assert_dango_err(DANGO_ENO_OBJECT,
                     (int)dango_store_size(g_client, "batch/0"));
}

/* ---------- replicas ---------- */

static void replica_survives_node_death(void **state)
{
    enum { N = 12, LEN = 256 * 1024 };
    dango_store_replicate_config_t cfg = {0};
    dango_store_object_info_t      info;
    int                            victim;

    (void)state;
    cluster_start(3, 64 * MIB);
    cfg.replica_num = 2;
    for (int i = 0; i < N; i++) {
        char key[32];

        snprintf(key, sizeof(key), "r2/%d", i);
        put_key(key, LEN, &cfg);
    }

    assert_dango_ok(dango_store_stat(g_client, "r2/0", &info));
    assert_int_equal(2, info.num_replicas);
    assert_string_not_equal(info.replicas[0].segment, info.replicas[1].segment);
    victim = node_of(info.replicas[0].segment);
    assert_true(victim >= 0);
    it_proc_kill(&g_nodes[victim]);

    /* At once (the master still lists the dead node): readers fall back. */
    for (int i = 0; i < N; i++) {
        char key[32];

        snprintf(key, sizeof(key), "r2/%d", i);
        assert_int_equal(LEN, get_check(key, LEN));
    }

    /* After the client TTL the master has dropped the dead node's replicas. */
    test_sleep_ms(CLIENT_TTL_MS + 1500);
    assert_dango_ok(dango_store_stat(g_client, "r2/0", &info));
    assert_int_equal(1, info.num_replicas);
    assert_true(node_of(info.replicas[0].segment) >= 0); /* a live node */
    assert_int_equal(LEN, get_check("r2/0", LEN));
}

/* ---------- a writer killed mid-put ---------- */

typedef struct {
    int      bad;
    unsigned seen;
} list_ctx_t;

/*
 * The writer puts more than the pool holds, so eviction runs while it
 * writes and may still be freeing room after it died: a listed object may
 * be gone by the time it is read (DANGO_ENO_OBJECT). Any other error, or
 * other bytes (get_check), is a failure.
 */
static int check_listed(void *arg, const char *key, uint64_t size)
{
    list_ctx_t *ctx = arg;
    int64_t     got;

    ctx->seen++;
    if (ctx->seen > 8) {
        return 0;
    }

    got = get_check(key, size);
    if ((got != (int64_t)size) && (got != DANGO_ENO_OBJECT)) {
        print_message("get of %s: %s\n", key, dango_err_name((int)got));
        ctx->bad++;
    }

    return 0;
}

static void writer_killed_space_reclaimed(void **state)
{
    dango_store_pool_info_t pool;
    list_ctx_t              ctx = {0, 0};
    it_proc_t               w;
    char                    line[128];
    char *argv[] = {STORE_PEER_PATH, "writer", g_master_addr, "8388608", NULL};

    (void)state;
    cluster_start(2, 96 * MIB);
    it_proc_spawn(&w, argv, NULL);
    assert_int_equal(
        0, it_proc_expect(&w, "READY", line, sizeof(line), START_TIMEOUT));
    test_sleep_ms(400 + (unsigned)(dango_time_ns() % 300));
    it_proc_kill(&w);

    /* Objects the writer completed stay readable. */
    assert_dango_ok(dango_store_list(g_client, "w/", check_listed, &ctx));
    assert_int_equal(0, ctx.bad);

    /* Its unfinished put is revoked when its TTL runs out; after removing
     * everything committed, no byte of the pool is still allocated. */
    test_sleep_ms(CLIENT_TTL_MS + 1500);
    assert_true(dango_store_remove_all(g_client, 1) >= 0);
    assert_dango_ok(dango_store_pool_stat(g_client, &pool));
    assert_int_equal(0, pool.keys);
    assert_int_equal(0, pool.used);
    assert_int_equal(2 * 96 * MIB, pool.capacity);
}

/* ---------- corruption ---------- */

static void flip_value_byte(const char *key, unsigned replica)
{
    dango_store_object_info_t info;
    char                      cmd[64], reply[64];
    int                       n;

    assert_dango_ok(dango_store_stat(g_client, key, &info));
    assert_true(replica < info.num_replicas);
    n = node_of(info.replicas[replica].segment);
    assert_true(n >= 0);
    snprintf(cmd, sizeof(cmd), "flip %" PRIx64,
             info.replicas[replica].addr +
                 dango_store_rec_value_off(strlen(key)) + 17);
    assert_int_equal(
        0, it_proc_cmd(&g_nodes[n], cmd, reply, sizeof(reply), 10000));
    assert_string_equal("OK", reply);
}

static void corrupt_byte_detected(void **state)
{
    enum { LEN = 100 * 1024 };
    dango_store_replicate_config_t cfg = {0};
    dango_store_object_info_t      info;
    uint8_t                       *buf = malloc(LEN);

    (void)state;
    assert_non_null(buf);
    cluster_start(3, 32 * MIB);

    /* One replica: the get fails with ECORRUPT and the replica is gone. */
    put_key("c/one", LEN, NULL);
    flip_value_byte("c/one", 0);
    assert_dango_err(DANGO_ECORRUPT,
                     (int)dango_store_get(g_client, "c/one", buf, LEN, NULL));
    assert_dango_err(DANGO_ENO_OBJECT,
                     dango_store_stat(g_client, "c/one", &info));

    /* Two replicas: the good one is returned, the bad one dropped. */
    cfg.replica_num = 2;
    put_key("c/two", LEN, &cfg);
    flip_value_byte("c/two", 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(LEN, get_check("c/two", LEN));
    }

    assert_dango_ok(dango_store_stat(g_client, "c/two", &info));
    assert_int_equal(1, info.num_replicas);
    free(buf);
}

/* ---------- eviction ---------- */

static void evict_never_leased(void **state)
{
    enum { LEN = 1 * MIB, PUTS = 120 };
    dango_store_pool_info_t pool;

    (void)state;
    /* 2 x 24 MiB: room for about 46 objects of 1 MiB; 120 are put. */
    cluster_start(2, 24 * MIB);
    put_key("hot", LEN, NULL);
    for (int i = 0; i < PUTS; i++) {
        char key[32];

        /* exist() renews the read lease of "hot" at every step. */
        assert_int_equal(1, dango_store_exist(g_client, "hot"));
        snprintf(key, sizeof(key), "cold/%d", i);
        put_key(key, LEN, NULL);
    }

    assert_int_equal(1, dango_store_exist(g_client, "hot"));
    assert_int_equal(LEN, get_check("hot", LEN));
    assert_dango_ok(dango_store_pool_stat(g_client, &pool));
    assert_true(pool.evicted_keys > 0);
    assert_true(pool.keys < PUTS);
    assert_true(pool.used <= pool.capacity);
}

/* ---------- master restart ---------- */

static void restart_master_remount(void **state)
{
    (void)state;
    cluster_start(2, 32 * MIB);
    put_key("before", 4096, NULL);
    master_restart(2);

    /* The killed master's objects come back from the nodes' reports. */
    assert_int_equal(1, dango_store_exist(g_client, "before"));
    assert_int_equal(4096, get_check("before", 4096));
    put_key("after", 4096, NULL);
    assert_int_equal(4096, get_check("after", 4096));
}

/* ---------- durable commit words ---------- */

/*
 * The library's allocator in this process (dango_set_allocator() in main):
 * libc's, except that the t_fail_at-th allocation the calling thread makes
 * once armed fails, once. Only that thread: dango__alloc_fail_after()
 * fails every thread, the client's I/O thread too, and a reply lost there
 * after the master acted on the request is another case than what the
 * calling thread does with a failure of its own.
 */
static __thread long t_fail_at; /* 0: disarmed */
static __thread int  t_failed;

static int t_fail(void)
{
    if ((t_fail_at > 0) && (--t_fail_at == 0)) {
        t_failed = 1;
        return 1;
    }

    return 0;
}

static void *t_malloc(size_t size)
{
    return t_fail() ? NULL : malloc(size);
}

static void *t_calloc(size_t nmemb, size_t size)
{
    return t_fail() ? NULL : calloc(nmemb, size);
}

static void *t_realloc(void *ptr, size_t size)
{
    return t_fail() ? NULL : realloc(ptr, size);
}

static const dango_allocator_t t_alloc = {t_malloc, t_calloc, t_realloc, free};

/*
 * A durable batch put whose calling thread fails its n-th allocation, for
 * every n until the put makes fewer: each key either succeeded (and reads
 * back) or failed and is not visible. Never a key the master shows complete
 * while the caller got an error and no commit word was written. Two keys,
 * so that the key list of PutEnd is allocated too.
 */
static void durable_put_oom_done_or_invisible(void **state)
{
    enum { N = 2, LEN = 8192, MAX_ALLOCS = 2000 };
    dango_store_replicate_config_t cfg = {.replica_num = 2};
    char                           names[N][48];
    const char                    *keys[N];
    const void                    *bufs[N];
    void                          *vals[N];
    size_t                         lens[N];
    int                            res[N];
    long                           n, failures = 0;
    int                            rc;

    (void)state;
    cluster_start_durable(2, 32 * MIB);
    /* Opens both nodes' segments and fills the client's pools. */
    put_key("oom/warm", LEN, &cfg);
    for (int i = 0; i < N; i++) {
        vals[i] = malloc(LEN);
        assert_non_null(vals[i]);
        bufs[i] = vals[i];
        lens[i] = LEN;
        keys[i] = names[i];
    }

    for (n = 1; n <= MAX_ALLOCS; n++) {
        for (int i = 0; i < N; i++) {
            snprintf(names[i], sizeof(names[i]), "oom/%ld/%d", n, i);
            test_fill(vals[i], LEN, test_key_seed(names[i]));
        }

        t_failed  = 0;
        t_fail_at = n;
        rc = dango_store_batch_put(g_client, N, keys, bufs, lens, 0, &cfg, res);
        t_fail_at = 0;
        if (!t_failed) {
            /* Fewer than n allocations: the walk is over. */
            assert_dango_ok(rc);
            for (int i = 0; i < N; i++) {
                assert_dango_ok(res[i]);
                assert_int_equal(LEN, get_check(keys[i], LEN));
            }

            break;
        }

        failures++;
        for (int i = 0; i < N; i++) {
            int64_t got;

            if (res[i] == 0) {
                got = get_check(keys[i], LEN);
                if (got != LEN) {
                    fail_msg("allocation %ld failing: %s succeeded but its "
                             "get fails (%s)",
                             n, keys[i], dango_err_name((int)got));
                }
            } else if (dango_store_exist(g_client, keys[i]) != 0) {
                fail_msg("allocation %ld failing: %s failed (%s) but is "
                         "visible",
                         n, keys[i], dango_err_name(res[i]));
            }
        }
    }

    assert_true(n <= MAX_ALLOCS);
    assert_true(failures >= 4);
    for (int i = 0; i < N; i++) {
        free(vals[i]);
    }
}

/*
 * A copy made with STORE_SYNC_COMMIT over TCP (as between hosts; a word
 * for this host is written before the call returns anyway) has its commit
 * word in the new node's memory when the call returns: the copier kills
 * itself right then, the master is killed and restarted, and the object
 * rebuilt from the nodes' reports still has the new replica. A word left
 * queued for the copier's committer thread dies with it, and the rebuild
 * finds one replica.
 */
static void durable_copy_survives_copier_and_master(void **state)
{
    enum { LEN = 100 * 1024 };
    dango_store_replicate_config_t cfg = {0};
    dango_store_object_info_t      info;
    const char                    *pref[1];
    const char                    *env[] = {"DANGO_STORE_SYNC_COMMIT=yes",
                                            "DANGO_XFER_TRANSPORTS=tcp", NULL};
    char     *argv[] = {STORE_PEER_PATH, "copier",   g_master_addr,
                        g_node_names[1], "dur/copy", NULL};
    char      line[128];
    it_proc_t cp;
    int       on[2] = {0, 0};
    int       rc, status;

    (void)state;
    cluster_start(2, 32 * MIB);
    pref[0]                = g_node_names[0];
    cfg.replica_num        = 1;
    cfg.preferred_segments = pref;
    cfg.preferred_count    = 1;
    put_key("dur/copy", LEN, &cfg);

    /* The copier prints only when the copy failed. */
    it_proc_spawn(&cp, argv, env);
    rc = it_proc_expect(&cp, "COPY ", line, sizeof(line), START_TIMEOUT);
    if (rc == 0) {
        fail_msg("copier: %s", line);
    }

    assert_int_equal(DANGO_ECONNRESET, rc);
    status = it_proc_stop(&cp, 10000);
    assert_true(WIFSIGNALED(status) && (WTERMSIG(status) == SIGKILL));
    assert_dango_ok(dango_store_stat(g_client, "dur/copy", &info));
    assert_int_equal(2, info.num_replicas);

    master_restart(2);
    assert_dango_ok(dango_store_stat(g_client, "dur/copy", &info));
    for (unsigned a = 0; a < info.num_replicas; a++) {
        int k = node_of(info.replicas[a].segment);

        assert_true(k >= 0);
        on[k]++;
    }

    assert_int_equal(1, on[0]);
    assert_int_equal(1, on[1]); /* the copy, back from node 1's report */
    assert_int_equal(LEN, get_check("dur/copy", LEN));
}

/* ---------- two hosts ---------- */

static void netns_two_hosts(void **state)
{
    char      ns[2][64], line[256], master[128], size[32];
    it_proc_t node, cli;

    (void)state;
    if (it_netns_pair("dango-store", "192.0.2.1/24", "192.0.2.2/24", ns) != 0) {
        skip();
    }

    /* Host A: master and node. */
    {
        char       *argv[] = {(char *)it_ip_path(), "netns",  "exec", ns[0],
                              STORE_PEER_PATH,      "master", NULL};
        const char *add[]  = {"DANGO_MASTER_LISTEN=192.0.2.1:0", NULL};

        it_peer_start(&g_master, argv, add, master, sizeof(master));
    }

    snprintf(size, sizeof(size), "%llu", 64 * MIB);
    {
        char *argv[] = {(char *)it_ip_path(), "netns", "exec", ns[0],
                        STORE_PEER_PATH,      "node",  master, size,
                        "192.0.2.1:0",        NULL};

        it_peer_start(&node, argv, NULL, line, sizeof(line));
        assert_true(strncmp(line, "192.0.2.1:", 10) == 0);
    }

    /* Host B: a client puts and gets 4 MiB over the veth. */
    {
        char *argv[] = {(char *)it_ip_path(),
                        "netns",
                        "exec",
                        ns[1],
                        STORE_PEER_PATH,
                        "client",
                        master,
                        "x/netns",
                        "4194304",
                        "192.0.2.2:0",
                        NULL};

        it_proc_spawn(&cli, argv, NULL);
        assert_int_equal(
            0, it_proc_expect(&cli, "PUT ", line, sizeof(line), START_TIMEOUT));
        assert_string_equal("PUT 0", line);
        assert_int_equal(
            0, it_proc_expect(&cli, "GET ", line, sizeof(line), START_TIMEOUT));
        assert_string_equal("GET 0", line);
        assert_true(WIFEXITED(it_proc_stop(&cli, 20000)));
    }

    it_proc_stop(&node, 10000);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(roundtrip_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(replica_survives_node_death, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(writer_killed_space_reclaimed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(corrupt_byte_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(evict_never_leased, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_master_remount, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(durable_put_oom_done_or_invisible,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(durable_copy_survives_copier_and_master,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(netns_two_hosts, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    /* Before any library object exists (see t_alloc). */
    dango_set_allocator(&t_alloc);
    /* Short liveness timings, inherited by every child. */
    setenv("DANGO_MASTER_ADMIN_LISTEN", "", 1);
    setenv("DANGO_MASTER_CLIENT_TTL", "2s", 1);
    setenv("DANGO_MASTER_MONITOR_INTERVAL", "200ms", 1);
    setenv("DANGO_MASTER_ZOMBIE_GRACE", "500ms", 1);
    setenv("DANGO_MASTER_LEASE_TTL", "2s", 1);
    setenv("DANGO_STORE_PING_INTERVAL", "200ms", 1);
    setenv("DANGO_XFER_LISTEN", "127.0.0.1:0", 1);
    unsetenv("DANGO_CLUSTER_TOKEN");
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
