/*
 * Disk tier integration tests: a master and store nodes with a disk tier as
 * real processes (store_peer_helper.c) on loopback; this process is a pure
 * client. Every wait is bounded; children are killed and reaped in the
 * teardown whatever happened.
 *
 *   disk_offload_read_promote  memory 4 MiB, 12 MiB of objects: evicted
 *                              objects go to the node's disk, every get
 *                              returns the right bytes (through a node
 *                              staging buffer of 4 values, so readers must
 *                              release what they read), a disk-only object
 *                              read twice is back in memory
 *   disk_node_restart          the node is killed while offloading and
 *                              started again on the same file: the records
 *                              on disk are reported and readable again
 *   disk_corrupt_record        a flipped byte in a record on disk: the get
 *                              fails with DANGO_ECORRUPT, the record is
 *                              dropped, other objects are unaffected
 *   disk_fs_full               the tier's file system (tmpfs of 1 MiB) is
 *                              full: writes fail, the objects are dropped
 *                              as without a tier, nothing is served wrong
 *   disk_tiny_tier             a 1 MiB tier: its LRU drops the oldest
 *                              records, nothing is served wrong
 *   disk_master_restart        the master is killed and restarted: the
 *                              node reports its tier's records again and
 *                              every object is readable
 *   disk_bad_config            bad disk options fail the client's create
 *                              with a clear code
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/store.h>
#include "common/time.h"
#include "it_proc.h"
#include "it_store.h"
#include "store/store_proto.h"
#include "test_values.h"

#ifndef STORE_PEER_PATH
#error "STORE_PEER_PATH must name the store_peer helper"
#endif

#define KIB      (1ull << 10)
#define MIB      (1ull << 20)
#define SEG_SIZE (4 * MIB)
#define VAL_SIZE (256 * KIB)
#define NKEYS    48

static it_proc_t             g_master;
static char                  g_master_addr[128];
static it_proc_t             g_node;
static dango_store_client_t *g_client;
static char                  g_dir[64];
static char                  g_mnt[128];

/* ---------- helpers ---------- */

static void master_start_at(const char *listen)
{
    char        env[160];
    char       *argv[] = {STORE_PEER_PATH, "master", NULL};
    const char *add[]  = {env, NULL};

    snprintf(env, sizeof(env), "DANGO_MASTER_LISTEN=%s", listen);
    it_peer_start(&g_master, argv, add, g_master_addr, sizeof(g_master_addr));
}

static void master_start(void)
{
    master_start_at("127.0.0.1:0");
}

static void node_start(const char *path, const char *disk_size)
{
    char  size[32], env_path[256], env_size[64];
    char *argv[] = {STORE_PEER_PATH, "node", g_master_addr, size, NULL};
    /* Staging for 4 values: reads in a row work only if readers release
     * what they read (DiskRelease) instead of waiting out its time. */
    const char *add[] = {env_path, env_size, "DANGO_STORE_DISK_STAGING=1MiB",
                         NULL};

    snprintf(size, sizeof(size), "%llu", (unsigned long long)SEG_SIZE);
    snprintf(env_path, sizeof(env_path), "DANGO_STORE_DISK_PATH=%s", path);
    snprintf(env_size, sizeof(env_size), "DANGO_STORE_DISK_SIZE=%s", disk_size);
    it_peer_start(&g_node, argv, add, NULL, 0);
}

static void client_start(void)
{
    it_store_client(g_master_addr, 16 * MIB, &g_client);
}

static void key_of(char *buf, size_t len, int i)
{
    snprintf(buf, len, "disk/%d", i);
}

/* Puts @key, retrying while the pool is full and offloads are running. */
static void put_key(const char *key)
{
    void    *val      = malloc(VAL_SIZE);
    uint64_t deadline = dango_time_ns() + 20ull * DANGO_NSEC_PER_SEC;
    int      rc;

    assert_non_null(val);
    test_fill(val, VAL_SIZE, test_key_seed(key));
    do {
        rc = dango_store_put(g_client, key, val, VAL_SIZE, NULL);
        if (rc == DANGO_ENOSPC) {
            test_sleep_ms(10);
        }
    } while ((rc == DANGO_ENOSPC) && (dango_time_ns() < deadline));
    assert_dango_ok(rc);
    free(val);
}

static void put_all(void)
{
    char key[32];

    for (int i = 0; i < NKEYS; i++) {
        key_of(key, sizeof(key), i);
        put_key(key);
    }
}

/* Gets @key: its bytes must be right when it succeeds. Returns the rc. */
static int64_t get_check(const char *key)
{
    return it_store_get_check(g_client, key, VAL_SIZE);
}

static void pool(dango_store_pool_info_t *info)
{
    memset(info, 0, sizeof(*info));
    assert_dango_ok(dango_store_pool_stat(g_client, info));
}

/* Waits (bounded) until the master knows at least @n disk objects. */
static void wait_disk_keys(uint64_t n)
{
    uint64_t deadline = dango_time_ns() + 10ull * DANGO_NSEC_PER_SEC;
    dango_store_pool_info_t info;

    do {
        pool(&info);
        if (info.disk_keys >= n) {
            return;
        }
        test_sleep_ms(20);
    } while (dango_time_ns() < deadline);
    fail_msg("only %" PRIu64 " disk keys, want %" PRIu64, info.disk_keys, n);
}

/* Waits (bounded) until @n segments are mounted. */
static void wait_segments(uint64_t n)
{
    uint64_t deadline = dango_time_ns() + 15ull * DANGO_NSEC_PER_SEC;
    dango_store_pool_info_t info;

    do {
        pool(&info);
        if (info.segments >= n) {
            return;
        }
        test_sleep_ms(20);
    } while (dango_time_ns() < deadline);
    fail_msg("%" PRIu64 " segments, want %" PRIu64, info.segments, n);
}

/* A key held on disk only (stat without lease says not in memory). */
static int disk_only_key(char *key, size_t len)
{
    for (int i = 0; i < NKEYS; i++) {
        dango_store_object_info_t oi;

        key_of(key, len, i);
        if ((dango_store_stat(g_client, key, &oi) == 0) && oi.on_disk) {
            assert_int_equal(oi.num_replicas, 0);
            assert_int_equal(oi.size, VAL_SIZE);
            assert_int_equal(dango_store_size(g_client, key), VAL_SIZE);
            assert_int_equal(dango_store_exist(g_client, key), 1);
            return i;
        }
    }
    return -1;
}

/* Offset of @key's record in the tier file, or -1. */
static off_t record_off(const char *file, const char *key)
{
    int    fd = open(file, O_RDONLY);
    char   blk[4096];
    off_t  off  = -1;
    size_t klen = strlen(key);

    assert_true(fd >= 0);
    for (off_t o = 0; pread(fd, blk, sizeof(blk), o) == (ssize_t)sizeof(blk);
         o += (off_t)sizeof(blk)) {
        uint32_t magic;

        memcpy(&magic, blk, 4);
        if ((magic == DANGO_STORE_REC_MAGIC) &&
            (memcmp(blk + DANGO_STORE_REC_HDR_SIZE, key, klen) == 0) &&
            (blk[DANGO_STORE_REC_HDR_SIZE + klen] == '\0')) {
            off = o;
            break;
        }
    }
    close(fd);
    return off;
}

static int setup(void **state)
{
    (void)state;
    dango_test_quiet_logs();
    memset(&g_node, 0, sizeof(g_node));
    memset(&g_master, 0, sizeof(g_master));
    g_client = NULL;
    g_mnt[0] = '\0';
    snprintf(g_dir, sizeof(g_dir), "/tmp/dango-disk-it-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[256];

    (void)state;
    dango_store_client_destroy(g_client);
    g_client = NULL;
    if (g_node.pid > 0) {
        it_proc_stop(&g_node, 10000);
    }
    if (g_master.pid > 0) {
        it_proc_stop(&g_master, 10000);
    }
    it_proc_kill_all();
    if (g_mnt[0] != '\0') {
        umount(g_mnt);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", g_dir);
    }
    return 0;
}

/* ---------- tests ---------- */

static void disk_offload_read_promote(void **state)
{
    dango_store_pool_info_t before, after;
    char                    key[32];
    int                     ok = 0;

    (void)state;
    master_start();
    node_start(g_dir, "64MiB");
    client_start();
    put_all();
    wait_disk_keys(NKEYS / 2);

    pool(&before);
    assert_true(before.disk_offloads >= NKEYS / 2);
    assert_true(before.disk_capacity >= 60 * MIB);
    assert_true(before.used <= SEG_SIZE);

    /* Every object comes back with the right bytes, from memory or disk. */
    for (int i = 0; i < NKEYS; i++) {
        key_of(key, sizeof(key), i);
        ok += get_check(key) == (int64_t)VAL_SIZE;
    }
    assert_int_equal(ok, NKEYS);
    pool(&after);
    assert_true(after.disk_loads > before.disk_loads);

    /* Promotion: the second read of a disk-only object brings it back. */
    assert_true(disk_only_key(key, sizeof(key)) >= 0);
    pool(&before);
    assert_int_equal(get_check(key), VAL_SIZE);
    assert_int_equal(get_check(key), VAL_SIZE);
    pool(&after);
    assert_true(after.disk_promotions > before.disk_promotions);
    {
        dango_store_object_info_t oi;

        assert_dango_ok(dango_store_stat(g_client, key, &oi));
        assert_int_equal(oi.size, VAL_SIZE);
        assert_int_equal(oi.on_disk, 0);
        assert_int_equal(oi.num_replicas, 1);
    }

    /* Remove drops the disk copy too. */
    assert_true(disk_only_key(key, sizeof(key)) >= 0);
    assert_dango_ok(dango_store_remove(g_client, key, 0));
    assert_int_equal(dango_store_exist(g_client, key), 0);
    assert_dango_err(DANGO_ENO_OBJECT, get_check(key));
}

static void disk_node_restart(void **state)
{
    dango_store_pool_info_t info;
    char                    key[32];
    int                     ok = 0;

    (void)state;
    master_start();
    node_start(g_dir, "64MiB");
    client_start();
    put_all();
    wait_disk_keys(NKEYS / 2);

    /* Killed in the middle of offloading a burst of evictions. */
    for (int i = NKEYS; i < NKEYS + 8; i++) {
        key_of(key, sizeof(key), i);
        put_key(key);
    }
    it_proc_kill(&g_node);
    memset(&g_node, 0, sizeof(g_node));

    /* Restarted on the same file: the records come back. */
    node_start(g_dir, "64MiB");
    wait_disk_keys(NKEYS / 2);
    for (int i = 0; i < NKEYS + 8; i++) {
        int64_t rc;

        key_of(key, sizeof(key), i);
        rc = get_check(key);
        if (rc == (int64_t)VAL_SIZE) {
            ok++;
        } else {
            /* Only memory objects of the dead node may be gone. */
            assert_true((rc == DANGO_ENO_OBJECT) ||
                        (rc == DANGO_EREPLICA_UNAVAIL) ||
                        (rc == DANGO_EPEER_GONE));
        }
    }
    pool(&info);
    assert_true(ok >= NKEYS / 2);
    assert_true(info.disk_loads > 0);
}

static void disk_corrupt_record(void **state)
{
    char    key[32], file[128], other[32];
    off_t   off;
    int     fd;
    uint8_t b;

    (void)state;
    master_start();
    node_start(g_dir, "64MiB");
    client_start();
    put_all();
    wait_disk_keys(NKEYS / 2);

    assert_true(disk_only_key(key, sizeof(key)) >= 0);
    snprintf(file, sizeof(file), "%s/dango-disk.data", g_dir);
    off = record_off(file, key);
    assert_true(off >= 0);

    /* Flip one byte of the value. */
    fd = open(file, O_RDWR);
    assert_true(fd >= 0);
    off += (off_t)(DANGO_STORE_REC_HDR_SIZE + 64 + 1000);
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0xff;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);

    assert_dango_err(DANGO_ECORRUPT, get_check(key));
    assert_dango_err(DANGO_ENO_OBJECT, get_check(key));
    assert_int_equal(dango_store_exist(g_client, key), 0);

    /* The others are fine, on disk or in memory. */
    for (int i = 0; i < NKEYS; i++) {
        key_of(other, sizeof(other), i);
        if (strcmp(other, key) != 0) {
            assert_int_equal(get_check(other), VAL_SIZE);
        }
    }
}

static void fs_run(const char *path, const char *size, int *ok_p, int *gone_p)
{
    char key[32];

    master_start();
    node_start(path, size);
    client_start();
    put_all();
    test_sleep_ms(500); /* the last offloads end, failed or not */
    *ok_p   = 0;
    *gone_p = 0;
    for (int i = 0; i < NKEYS; i++) {
        int64_t rc;

        key_of(key, sizeof(key), i);
        rc = get_check(key);
        if (rc == (int64_t)VAL_SIZE) {
            (*ok_p)++;
        } else {
            assert_dango_err(DANGO_ENO_OBJECT, rc);
            (*gone_p)++;
        }
    }
}

static void disk_fs_full(void **state)
{
    dango_store_pool_info_t info;
    int                     ok, gone;

    (void)state;
    snprintf(g_mnt, sizeof(g_mnt), "%s/mnt", g_dir);
    assert_int_equal(mkdir(g_mnt, 0755), 0);
    if (mount("tmpfs", g_mnt, "tmpfs", 0, "size=1m") != 0) {
        g_mnt[0] = '\0';
        skip(); /* needs root */
    }

    fs_run(g_mnt, "64MiB", &ok, &gone);
    pool(&info);
    /* The memory tier keeps working; what did not fit on disk is gone. */
    assert_true(ok >= (int)(SEG_SIZE / VAL_SIZE / 2));
    assert_true(gone > 0);
    assert_true(info.disk_keys <= 4);
}

static void disk_tiny_tier(void **state)
{
    dango_store_pool_info_t info;
    int                     ok, gone;

    (void)state;
    fs_run(g_dir, "1MiB", &ok, &gone);
    pool(&info);
    assert_true(gone > 0);
    assert_true(ok >= (int)(SEG_SIZE / VAL_SIZE / 2));
    assert_true(info.disk_used <= MIB);
}

/* A new master learns the tier's records from the node and serves them. */
static void disk_master_restart(void **state)
{
    dango_store_pool_info_t before;
    char                    addr[128], key[32];
    int                     ok = 0;

    (void)state;
    master_start();
    node_start(g_dir, "64MiB");
    client_start();
    put_all();
    wait_disk_keys(NKEYS / 2);
    pool(&before);

    snprintf(addr, sizeof(addr), "%s", g_master_addr);
    it_proc_kill(&g_master);
    master_start_at(addr);
    assert_string_equal(addr, g_master_addr);
    wait_disk_keys(before.disk_keys);
    wait_segments(1); /* the node's segment: where it stages disk reads */

    for (int i = 0; i < NKEYS; i++) {
        key_of(key, sizeof(key), i);
        ok += get_check(key) == (int64_t)VAL_SIZE;
    }
    assert_int_equal(ok, NKEYS);
}

/* Bad disk options: clear errors at create, nothing started. */
static void disk_bad_config(void **state)
{
    dango_store_params_t  p;
    dango_config_t       *cfg;
    dango_store_client_t *c = NULL;
    char                  file[128];

    (void)state;
    memset(&p, 0, sizeof(p));
    p.field_mask   = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.master_addr  = "127.0.0.1:1"; /* no master needed to fail */
    p.segment_size = SEG_SIZE;
    assert_dango_ok(dango_config_read(NULL, &cfg));

    /* A tier needs a segment. */
    assert_dango_ok(dango_config_set(cfg, "STORE_DISK_PATH", g_dir));
    assert_dango_ok(dango_config_set(cfg, "STORE_DISK_SIZE", "64MiB"));
    p.segment_size = 0;
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));
    p.segment_size = SEG_SIZE;

    /* ... and a size of at least 1 MiB. */
    assert_dango_ok(dango_config_set(cfg, "STORE_DISK_SIZE", "4KiB"));
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));
    assert_dango_ok(dango_config_set(cfg, "STORE_DISK_SIZE", "64MiB"));
    assert_dango_ok(dango_config_set(cfg, "STORE_DISK_HIGH_WATERMARK", "1.5"));
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));
    assert_dango_ok(dango_config_set(cfg, "STORE_DISK_HIGH_WATERMARK", "0.9"));

    /* A path that cannot be created. */
    snprintf(file, sizeof(file), "%s/no/such/dir/tier", g_dir);
    assert_dango_ok(dango_config_set(cfg, "STORE_DISK_PATH", file));
    assert_dango_err(DANGO_ENOENT, dango_store_client_create(&p, cfg, &c));
    assert_null(c);

    /* A size that is not a size. */
    assert_dango_err(DANGO_ECONFIG,
                     dango_config_set(cfg, "STORE_DISK_SIZE", "lots"));
    dango_config_release(cfg);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(disk_offload_read_promote, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(disk_node_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_corrupt_record, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_fs_full, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_tiny_tier, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_master_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_bad_config, setup, teardown),
    };

    setenv("DANGO_MASTER_ADMIN_LISTEN", "", 1);
    setenv("DANGO_MASTER_CLIENT_TTL", "2s", 1);
    setenv("DANGO_MASTER_MONITOR_INTERVAL", "200ms", 1);
    setenv("DANGO_MASTER_LEASE_TTL", "1s", 1);
    setenv("DANGO_STORE_PING_INTERVAL", "200ms", 1);
    setenv("DANGO_XFER_LISTEN", "127.0.0.1:0", 1);
    unsetenv("DANGO_CLUSTER_TOKEN");
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
