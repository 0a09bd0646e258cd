/*
 * dango-conductor with a store cluster, end to end: a master and two store
 * nodes (store_peer processes) publishing KV events to a dango-conductor
 * that replicates through the same store.
 *
 *   - blocks put on node A reach the conductor's index as node A's
 *     instance's blocks (STORE_KV_EVENTS_URL, "node" events);
 *   - when Algorithm 1 has the idle instance on node B fetch a prefix held
 *     on node A, the conductor copies those blocks in the store to node B
 *     (CONDUCTOR_STORE_MASTER), node B's events report them, and the bytes
 *     read back from either replica are the ones put;
 *   - removes reach the index; copies to a node that does not exist, of
 *     keys that do not exist, and from a corrupt replica fail with their
 *     own errors and copy nothing wrong.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "dango_test.h"

#include <dango/store.h>
#include "http_json.h"
#include "it_proc.h"
#include "it_store.h"
#include "store/store_proto.h"
#include "test_values.h"

#ifndef CONDUCTOR_PATH
#error "CONDUCTOR_PATH must name the dango-conductor binary"
#endif
#ifndef STORE_PEER_PATH
#error "STORE_PEER_PATH must name the store_peer helper"
#endif

#define MIB           (1ull << 20)
#define START_TIMEOUT IT_PEER_START_MS
#define WAIT_MS       15000 /* bound on waiting for events and copies */
#define VLEN          (64 * 1024)

static it_proc_t             g_master, g_cond, g_node[2];
static char                  g_master_addr[128], g_url[256];
static char                  g_node_name[2][256];
static dango_store_client_t *g_client;

/* ---------- helpers ---------- */

static long http(const char *method, const char *path, const char *body,
                 json_t **json_p, char **text_p)
{
    return test_http(g_url, method, path, body, json_p, text_p);
}

/* The cached_blocks /instances reports for @inst (-1 when absent). */
static long cached_blocks(const char *inst)
{
    json_t *j = NULL;
    long    n = -1;

    assert_int_equal(http("GET", "/instances", NULL, &j, NULL), 200);
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *o = json_array_get(j, i);

        if (!strcmp(json_string_value(json_object_get(o, "instance_id")),
                    inst)) {
            n = (long)json_integer_value(json_object_get(o, "cached_blocks"));
        }
    }
    json_decref(j);
    return n;
}

/* Waits until @inst caches @want blocks; fails after WAIT_MS. */
static void wait_cached(const char *inst, long want)
{
    long n = -1;

    for (int t = 0; t < WAIT_MS / 50; t++) {
        n = cached_blocks(inst);
        if (n == want) {
            return;
        }
        test_sleep_ms(50);
    }
    fail_msg("%s caches %ld blocks, expected %ld", inst, n, want);
}

/* Index of the node whose segment is @name, or -1. */
static int node_of(const char *name)
{
    for (int i = 0; i < 2; i++) {
        if (!strcmp(g_node_name[i], name)) {
            return i;
        }
    }
    return -1;
}

/* 1 if @key has a complete replica on node @n. */
static int on_node(const char *key, int n)
{
    dango_store_object_info_t info;

    if (dango_store_stat(g_client, key, &info) != 0) {
        return 0;
    }
    for (unsigned i = 0; i < info.num_replicas; i++) {
        if (info.replicas[i].complete &&
            (node_of(info.replicas[i].segment) == n)) {
            return 1;
        }
    }
    return 0;
}

/* Puts @key (VLEN bytes seeded by @seed) with its replica on node @n. */
static void put_on(const char *key, uint64_t seed, int n)
{
    const char                    *pref[1] = {g_node_name[n]};
    dango_store_replicate_config_t cfg;
    uint8_t                       *v = malloc(VLEN);

    assert_non_null(v);
    memset(&cfg, 0, sizeof(cfg));
    cfg.replica_num        = 1;
    cfg.preferred_segments = pref;
    cfg.preferred_count    = 1;
    test_fill(v, VLEN, seed);
    assert_dango_ok(dango_store_put(g_client, key, v, VLEN, &cfg));
    free(v);
    assert_true(on_node(key, n));
}

static void check_value(const char *key, uint64_t seed)
{
    uint8_t *want = malloc(VLEN), *got = malloc(VLEN);

    assert_non_null(want);
    assert_non_null(got);
    test_fill(want, VLEN, seed);
    assert_int_equal(dango_store_get(g_client, key, got, VLEN, NULL), VLEN);
    assert_memory_equal(want, got, VLEN);
    free(want);
    free(got);
}

static void cluster_start(void)
{
    char                 line[512], env_url[320];
    char                *margv[] = {STORE_PEER_PATH, "master", NULL};
    const char          *menv[]  = {"DANGO_MASTER_LISTEN=127.0.0.1:0", NULL};
    char                 opt[192];
    char                *cargv[] = {CONDUCTOR_PATH,
                                    "--listen",
                                    "127.0.0.1:0",
                                    "-o",
                                    opt,
                                    "-o",
                                    "CONDUCTOR_STORE_KEY_PREFIX=kv/",
                                    NULL};
    const char          *nenv[]  = {env_url, "DANGO_STORE_KV_EVENTS_PREFIX=kv/",
                                    "DANGO_STORE_KV_EVENTS_INTERVAL=50ms", NULL};
    dango_store_params_t p;

    it_peer_start(&g_master, margv, menv, g_master_addr, sizeof(g_master_addr));

    snprintf(opt, sizeof(opt), "CONDUCTOR_STORE_MASTER=%s", g_master_addr);
    it_proc_spawn(&g_cond, cargv, NULL);
    assert_dango_ok(it_proc_expect(&g_cond, "dango-conductor listening on ",
                                   line, sizeof(line), START_TIMEOUT));
    snprintf(g_url, sizeof(g_url), "%.200s",
             line + strlen("dango-conductor listening on "));

    snprintf(env_url, sizeof(env_url), "DANGO_STORE_KV_EVENTS_URL=%s", g_url);
    for (int i = 0; i < 2; i++) {
        char *nargv[] = {STORE_PEER_PATH, "node", g_master_addr, "16777216",
                         NULL};

        it_peer_start(&g_node[i], nargv, nenv, g_node_name[i],
                      sizeof(g_node_name[i]));
    }

    memset(&p, 0, sizeof(p));
    p.field_mask  = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.master_addr = g_master_addr;
    assert_dango_ok(dango_store_client_create(&p, NULL, &g_client));
}

static void cluster_stop(void)
{
    int status;

    dango_store_client_destroy(g_client);
    g_client = NULL;
    assert_int_equal(kill(g_cond.pid, SIGTERM), 0);
    status     = it_reap(g_cond.pid, 10000);
    g_cond.pid = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(WEXITSTATUS(it_proc_stop(&g_node[i], 10000)), 0);
    }
    assert_int_equal(WEXITSTATUS(it_proc_stop(&g_master, 10000)), 0);
}

static int teardown(void **state)
{
    (void)state;
    if (g_client != NULL) {
        dango_store_client_destroy(g_client);
        g_client = NULL;
    }
    it_proc_kill_all();
    return 0;
}

/* ---------- tests ---------- */

static void events_and_replication(void **state)
{
    static const char *const keys[2] = {"kv/0000000000001111",
                                        "kv/0000000000002222"};
    char                     reg[640];
    json_t                  *j;
    char                    *text;
    const char              *sched = "{\"block_hashes\": [\"1111\", \"2222\"], "
                                     "\"input_length\": 1100, \"output_length\": 16}";

    (void)state;
    cluster_start();

    for (int i = 0; i < 2; i++) {
        snprintf(reg, sizeof(reg),
                 "{\"instance_id\": \"p%d\", \"role\": \"prefill\", "
                 "\"cache_blocks\": 100, \"node\": \"%s\"}",
                 i, g_node_name[i]);
        assert_int_equal(http("POST", "/register", reg, NULL, NULL), 200);
    }
    assert_int_equal(http("POST", "/register",
                          "{\"instance_id\": \"d0\", \"role\": \"decode\"}",
                          NULL, NULL),
                     200);

    /* Blocks put on node A become p0's; a key that is not a block is not
     * published. */
    put_on(keys[0], 1, 0);
    put_on(keys[1], 2, 0);
    put_on("not-a-block", 3, 0);
    wait_cached("p0", 2);
    assert_int_equal(cached_blocks("p1"), 0);

    /* p0 holds the prefix: the first request goes there; the second finds
     * p0 busy and has idle p1 fetch the prefix from p0. */
    assert_int_equal(http("POST", "/schedule", sched, &j, NULL), 200);
    assert_string_equal(json_string_value(json_object_get(j, "prefill")), "p0");
    assert_int_equal(json_integer_value(json_object_get(j, "matched_blocks")),
                     2);
    json_decref(j);
    assert_int_equal(http("POST", "/schedule", sched, &j, NULL), 200);
    assert_string_equal(json_string_value(json_object_get(j, "prefill")), "p1");
    assert_string_equal(json_string_value(json_object_get(j, "transfer_from")),
                        "p0");
    json_decref(j);

    /* The store now holds both blocks on node B too, with the same bytes. */
    for (int t = 0; t < WAIT_MS / 50; t++) {
        if (on_node(keys[0], 1) && on_node(keys[1], 1)) {
            break;
        }
        test_sleep_ms(50);
    }
    assert_true(on_node(keys[0], 1));
    assert_true(on_node(keys[1], 1));
    assert_true(on_node(keys[0], 0));
    check_value(keys[0], 1);
    check_value(keys[1], 2);
    assert_int_equal(http("GET", "/metrics", NULL, NULL, &text), 200);
    assert_non_null(
        strstr(text, "dango_conductor_store_copied_blocks_total 2\n"));
    assert_non_null(
        strstr(text, "dango_conductor_store_failed_blocks_total 0\n"));
    free(text);

    /* Removing a block reaches both instances through their nodes. */
    assert_dango_ok(dango_store_remove(g_client, keys[1], 1));
    wait_cached("p0", 1);
    wait_cached("p1", 1);
    cluster_stop();
}

static void replicate_errors(void **state)
{
    const char               *one[1] = {"kv/00000000000000aa"};
    const char               *two[2] = {"kv/00000000000000bb", "no/such/key"};
    char                      cmd[64], reply[64];
    int                       res[2];
    dango_store_object_info_t info;

    (void)state;
    cluster_start();

    put_on(one[0], 7, 0);
    put_on(two[0], 8, 0);

    /* No such node; bad arguments. */
    assert_dango_ok(
        dango_store_batch_replicate(g_client, 1, one, "no-such-node", res));
    assert_dango_err(DANGO_ENO_SEGMENT, res[0]);
    assert_dango_err(DANGO_EINVAL,
                     dango_store_batch_replicate(g_client, 1, one, "", res));
    assert_dango_err(DANGO_EINVAL,
                     dango_store_batch_replicate(g_client, 1, one, NULL, res));

    /* A missing key fails alone; the other copies. Again: already there. */
    assert_dango_ok(
        dango_store_batch_replicate(g_client, 2, two, g_node_name[1], res));
    assert_dango_ok(res[0]);
    assert_dango_err(DANGO_ENO_OBJECT, res[1]);
    assert_true(on_node(two[0], 1));
    check_value(two[0], 8);
    assert_dango_ok(
        dango_store_batch_replicate(g_client, 1, two, g_node_name[1], res));
    assert_dango_err(DANGO_EOBJ_EXISTS, res[0]);

    /* A corrupt source is never copied: the copy fails, the bad replica is
     * reported and dropped, node B gets nothing. */
    assert_dango_ok(dango_store_stat(g_client, one[0], &info));
    assert_int_equal(info.num_replicas, 1);
    snprintf(cmd, sizeof(cmd), "flip %" PRIx64,
             info.replicas[0].addr + dango_store_rec_value_off(strlen(one[0])) +
                 99);
    assert_dango_ok(it_proc_cmd(&g_node[0], cmd, reply, sizeof(reply), 10000));
    assert_string_equal(reply, "OK");
    assert_dango_ok(
        dango_store_batch_replicate(g_client, 1, one, g_node_name[1], res));
    assert_dango_err(DANGO_ECORRUPT, res[0]);
    assert_false(on_node(one[0], 1));
    cluster_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(events_and_replication, teardown),
        cmocka_unit_test_teardown(replicate_errors, teardown),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
