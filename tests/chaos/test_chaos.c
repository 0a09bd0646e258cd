/*
 * Chaos suite: a store with three masters elected through etcd, four
 * store nodes and two writing and reading clients, each on its own
 * emulated host (a network namespace joined to a bridge by a veth pair),
 * while faults are injected one after the other:
 *
 *   kill-leader     SIGKILL the leading master (restarted afterwards as a
 *                   follower); the failover time is measured
 *   kill-node       SIGKILL a store node (restarted empty: its replicas
 *                   are gone for good)
 *   kill-client     SIGKILL a client in the middle of its put loop
 *                   (restarted under a new key prefix)
 *   partition-node  a node's link to the bridge down for longer than the
 *                   master's client TTL, then up again
 *   pause-leader    SIGSTOP the leading master past its etcd lease TTL,
 *                   then SIGCONT: it must have stepped down
 *   restart-etcd    etcd stopped and started again on the same data
 *
 * The clients (tests/fixtures/chaos_client.c) put values derived from their
 * keys and read earlier ones back; every put acknowledged is recorded with the
 * segments its replicas were placed on. At the end every fault is healed
 * and every acknowledged key is read back by this process. Printed, one
 * JSON object: operations attempted, succeeded, failed (each failure a
 * DANGO_E* code), the faults injected and survived (within 30 s a write
 * begun after the fault was acknowledged, or, once the put budget is
 * spent, a read succeeded), the failover times, and the two numbers that
 * must be zero:
 *   wrong_bytes                  a get returned success with other bytes
 *   lost_acked_with_live_replica an acknowledged key that cannot be read
 *                                although one of its replicas' nodes was
 *                                never killed
 * (keys whose every replica was on killed nodes are counted apart). The
 * test fails when either is non-zero.
 *
 * The clients share a budget of puts (PUT_BUDGET) that keeps the pool far
 * from full: eviction would remove acknowledged objects legitimately.
 *
 * Duration: DANGO_CHAOS_SECONDS (default 60) of faults; needs root and
 * network namespaces, and is skipped with the reason otherwise.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/store.h>
#include "common/time.h"
#include "integration/it_proc.h"
#include "metadata/etcd.h"

#ifndef STORE_PEER_PATH
#error "STORE_PEER_PATH must name the store_peer helper"
#endif
#ifndef CHAOS_CLIENT_PATH
#error "CHAOS_CLIENT_PATH must name the chaos_client helper"
#endif

#define NET         "198.18.77"
#define NMASTERS    3
#define NNODES      4
#define NCLIENTS    2
#define TTL_S       2
#define CLIENT_TTL  3000 /* ms */
#define START_MS    30000
#define SURVIVE_MS  30000
#define MAX_DEAD    256
#define MAX_SAMPLES 256
/*
 * Puts allowed in all (node segments 64 MiB; values up to 4 KiB, two
 * replicas: 20000 objects stay far below the eviction watermark, so an
 * acknowledged object can only go missing by a fault).
 */
#define PUT_BUDGET 20000

/* Hosts: 0 etcd, 1..3 masters, 4..7 nodes, 8..9 clients, 10 this one. */
enum { H_ETCD = 0, H_M0 = 1, H_N0 = 4, H_C0 = 8, H_CTL = 10, NHOSTS = 11 };

typedef struct acked {
    char   key[48];
    size_t len;
    char  *reps; /* "seg,seg" or "?" */
} acked_t;

static char      g_ns[NHOSTS][48];
static char      g_hubns[48];
static char      g_veth[NHOSTS][16]; /* hub side */
static int       g_made;             /* namespaces made (for cleanup) */
static char      g_etcd_url[64];
static char      g_etcd_dir[128];
static char      g_key[64];
static char      g_cluster[32];
static it_proc_t g_etcd;
static it_proc_t g_masters[NMASTERS];
static char      g_maddr[NMASTERS][128];
static it_proc_t g_nodes[NNODES];
static char      g_nname[NNODES][256];
static it_proc_t g_clients[NCLIENTS];
static unsigned  g_cinc[NCLIENTS];

static acked_t *g_acked;
static size_t   g_nacked, g_capacked;
static char     g_dead[MAX_DEAD][256];
static size_t   g_ndead;
static uint64_t g_attempted, g_succeeded, g_failed, g_wrong, g_failed_puts;
static uint64_t g_fo_kill; /* pending failover measurement: kill time */
static uint64_t g_samples[MAX_SAMPLES];
static size_t   g_nsamples;
static uint64_t g_last_ack_start;
static uint64_t g_last_read_ok; /* when the last READ OK line came */

/* ---------- helpers ---------- */

static void host_ip(int h, char *buf, size_t len)
{
    static const int last[NHOSTS] = {2,  11, 12, 13, 21, 22,
                                     23, 24, 31, 32, 254};

    snprintf(buf, len, NET ".%d", last[h]);
}

static void netns_cleanup(void)
{
    for (int i = 0; i < g_made; i++) {
        it_ip("netns del %s", g_ns[i]);
    }

    if (g_hubns[0] != '\0') {
        it_ip("netns del %s", g_hubns);
    }

    g_made     = 0;
    g_hubns[0] = '\0';
}

/* The hub with its bridge, and every host joined to it. 0, 1 (skip). */
static int netns_setup(void)
{
    int pid = (int)getpid() % 100000;

    if (geteuid() != 0) {
        printf("chaos: skipped: needs root to create network namespaces\n");
        return 1;
    }
    if (it_ip_path() == NULL) {
        printf("chaos: skipped: no ip(8) command\n");
        return 1;
    }

    snprintf(g_hubns, sizeof(g_hubns), "dch%d-hub", pid);
    if (it_ip("netns add %s", g_hubns) != 0) {
        g_hubns[0] = '\0';
        printf("chaos: skipped: the kernel refused a network namespace\n");
        return 1;
    }

    if ((it_ip("-n %s link add br0 type bridge", g_hubns) != 0) ||
        (it_ip("-n %s link set br0 up", g_hubns) != 0)) {
        netns_cleanup();
        printf("chaos: skipped: cannot create a bridge in a namespace\n");
        return 1;
    }

    for (int h = 0; h < NHOSTS; h++) {
        char ip[32], peer[16];

        snprintf(g_ns[h], sizeof(g_ns[h]), "dch%d-%d", pid, h);
        snprintf(g_veth[h], sizeof(g_veth[h]), "dc%dh%d", pid, h);
        snprintf(peer, sizeof(peer), "dc%dp%d", pid, h);
        host_ip(h, ip, sizeof(ip));
        if (it_ip("netns add %s", g_ns[h]) != 0) {
            netns_cleanup();
            fail_msg("chaos: ip netns add %s failed", g_ns[h]);
        }

        g_made = h + 1;
        if ((it_ip("link add %s netns %s type veth peer name %s netns %s",
                   g_veth[h], g_hubns, peer, g_ns[h]) != 0) ||
            (it_ip("-n %s link set %s master br0", g_hubns, g_veth[h]) != 0) ||
            (it_ip("-n %s link set %s up", g_hubns, g_veth[h]) != 0) ||
            (it_ip("-n %s addr add %s/24 dev %s", g_ns[h], ip, peer) != 0) ||
            (it_ip("-n %s link set %s up", g_ns[h], peer) != 0) ||
            (it_ip("-n %s link set lo up", g_ns[h]) != 0)) {
            netns_cleanup();
            fail_msg("chaos: cannot wire host %d", h);
        }
    }

    return 0;
}

/* This process moves to the control host (its sockets live there). */
static void join_ctl(void)
{
    char path[128];
    int  fd;

    snprintf(path, sizeof(path), "/run/netns/%s", g_ns[H_CTL]);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(0, setns(fd, CLONE_NEWNET));
    close(fd);
}

static void spawn_in(it_proc_t *p, int h, char **args, const char *const *env)
{
    char *argv[24];
    int   a = 0;

    argv[a++] = (char *)it_ip_path();
    argv[a++] = "netns";
    argv[a++] = "exec";
    argv[a++] = g_ns[h];
    for (int i = 0; (args[i] != NULL) && (a < 23); i++) {
        argv[a++] = args[i];
    }

    argv[a] = NULL;
    it_proc_spawn(p, argv, env);
}

static int is_dead(const char *seg, size_t len)
{
    for (size_t i = 0; i < g_ndead; i++) {
        if ((strlen(g_dead[i]) == len) && (memcmp(g_dead[i], seg, len) == 0)) {
            return 1;
        }
    }

    return 0;
}

/* 1 when some replica of @a is on a node never killed (or unknown). */
static int has_live_replica(const acked_t *a)
{
    const char *s = a->reps;

    if (strcmp(s, "?") == 0) {
        return 1;
    }

    while (*s != '\0') {
        const char *e = strchr(s, ',');
        size_t      l = (e != NULL) ? (size_t)(e - s) : strlen(s);

        if (!is_dead(s, l)) {
            return 1;
        }

        s += l + (e != NULL);
    }

    return 0;
}

static void on_line(char *line)
{
    char     key[48], reps[1200], res[64];
    size_t   len;
    uint64_t t0, t1;

    if (sscanf(line, "ACK %47s %zu %" SCNu64 " %" SCNu64 " %1199s", key, &len,
               &t0, &t1, reps) == 5) {
        g_attempted++;
        g_succeeded++;
        if (g_nacked == g_capacked) {
            g_capacked = g_capacked ? g_capacked * 2 : 1024;
            g_acked    = realloc(g_acked, g_capacked * sizeof(*g_acked));
            assert_non_null(g_acked);
        }

        snprintf(g_acked[g_nacked].key, sizeof(g_acked[0].key), "%s", key);
        g_acked[g_nacked].len  = len;
        g_acked[g_nacked].reps = strdup(reps);
        g_nacked++;
        if (t0 > g_last_ack_start) {
            g_last_ack_start = t0;
        }

        /* Failover: the first write begun after the kill that succeeded. */
        if ((g_fo_kill != 0) && (t0 >= g_fo_kill) &&
            (g_nsamples < MAX_SAMPLES)) {
            g_samples[g_nsamples++] = t1 - g_fo_kill;
            g_fo_kill               = 0;
        }
    } else if (strncmp(line, "FAIL ", 5) == 0) {
        g_attempted++;
        g_failed++;
        g_failed_puts++;
    } else if (sscanf(line, "READ %47s %63s", key, res) == 2) {
        g_attempted++;
        if (strcmp(res, "OK") == 0) {
            g_succeeded++;
            g_last_read_ok = dango_time_ns();
        } else if (strcmp(res, "WRONG") == 0) {
            g_wrong++;
            printf("chaos: WRONG BYTES for %s\n", key);
        } else {
            g_failed++;
        }
    }
}

/* Reads the clients' lines for @ms. */
static void pump(unsigned ms)
{
    uint64_t end = dango_time_ns() + (uint64_t)ms * DANGO_NSEC_PER_MSEC;

    do {
        for (int j = 0; j < NCLIENTS; j++) {
            char line[1400];

            while ((g_clients[j].pid > 0) &&
                   (it_proc_read_line(&g_clients[j], line, sizeof(line), 1) ==
                    0)) {
                on_line(line);
            }
        }
    } while (dango_time_ns() < end);
}

static void etcd_start(void)
{
    char     ip[32], cu[64], pu[64], ic[80];
    char    *args[]   = {"etcd",     "--name",
                         "e",        "--data-dir",
                         g_etcd_dir, "--listen-client-urls",
                         cu,         "--advertise-client-urls",
                         cu,         "--listen-peer-urls",
                         pu,         "--initial-advertise-peer-urls",
                         pu,         "--initial-cluster",
                         ic,         "--log-level",
                         "error",    NULL};
    uint64_t deadline = dango_time_ns() + 20 * DANGO_NSEC_PER_SEC;

    host_ip(H_ETCD, ip, sizeof(ip));
    snprintf(cu, sizeof(cu), "http://%s:2379", ip);
    snprintf(pu, sizeof(pu), "http://%s:2380", ip);
    snprintf(ic, sizeof(ic), "e=%s", pu);
    spawn_in(&g_etcd, H_ETCD, args, NULL);
    for (;;) {
        dango__etcd_t    *etcd;
        dango__etcd_kv_t *kv = NULL;
        int               rc;

        assert_dango_ok(dango__etcd_open(g_etcd_url, DANGO_NSEC_PER_SEC / 2,
                                         DANGO_NSEC_PER_SEC, &etcd));
        rc = dango__etcd_get(etcd, "x", 1, &kv, NULL);
        dango__etcd_kvs_free(kv, (rc == 0) ? 1 : 0);
        dango__etcd_close(etcd);
        if ((rc == 0) || (rc == DANGO_ENOENT)) {
            return;
        }

        assert_true(dango_time_ns() < deadline);
        pump(100);
    }
}

static void master_start(int i)
{
    char        line[256], ip[32], listen[64];
    char       *args[] = {STORE_PEER_PATH, "master", NULL};
    const char *env[]  = {listen, NULL};

    host_ip(H_M0 + i, ip, sizeof(ip));
    snprintf(listen, sizeof(listen), "DANGO_MASTER_LISTEN=%s:0", ip);
    spawn_in(&g_masters[i], H_M0 + i, args, env);
    if (it_proc_expect(&g_masters[i], "READY ", line, sizeof(line), START_MS) !=
        0) {
        fail_msg("chaos: master %d did not start", i);
    }

    snprintf(g_maddr[i], sizeof(g_maddr[i]), "%.120s", line + 6);
}

static void node_start(int i)
{
    char  line[512], ip[32], listen[64];
    char *args[]      = {STORE_PEER_PATH, "node", g_etcd_url, "67108864", NULL};
    const char *env[] = {listen, NULL};

    host_ip(H_N0 + i, ip, sizeof(ip));
    snprintf(listen, sizeof(listen), "DANGO_XFER_LISTEN=%s:0", ip);
    spawn_in(&g_nodes[i], H_N0 + i, args, env);
    if (it_proc_expect(&g_nodes[i], "READY ", line, sizeof(line), START_MS) !=
        0) {
        fail_msg("chaos: node %d did not start", i);
    }

    sscanf(line + 6, "%255s", g_nname[i]);
}

static void client_start(int j)
{
    char        line[256], ip[32], listen[64], tag[32], seed[32], puts[32];
    char       *args[] = {CHAOS_CLIENT_PATH, g_etcd_url, tag, seed, puts, NULL};
    uint64_t    used   = g_nacked + g_failed_puts;
    const char *env[]  = {listen, NULL};

    host_ip(H_C0 + j, ip, sizeof(ip));
    snprintf(listen, sizeof(listen), "DANGO_XFER_LISTEN=%s:0", ip);
    snprintf(tag, sizeof(tag), "c%d-%u", j, g_cinc[j]);
    snprintf(seed, sizeof(seed), "%u",
             (unsigned)(getpid() * 31 + j * 7 + g_cinc[j] * 131));
    /* What is left of the budget, shared by the clients. */
    snprintf(puts, sizeof(puts), "%" PRIu64,
             (used < PUT_BUDGET) ? (PUT_BUDGET - used) / NCLIENTS : 0);
    g_cinc[j]++;
    spawn_in(&g_clients[j], H_C0 + j, args, env);
    if (it_proc_expect(&g_clients[j], "READY", line, sizeof(line), START_MS) !=
        0) {
        fail_msg("chaos: client %d did not start", j);
    }
}

/* The master etcd names as leader, or -1. */
static int leader(int64_t *term_p)
{
    dango__etcd_t    *etcd;
    dango__etcd_kv_t *kv  = NULL;
    int               idx = -1;

    if (dango__etcd_open(g_etcd_url, DANGO_NSEC_PER_SEC / 2, DANGO_NSEC_PER_SEC,
                         &etcd) != 0) {
        return -1;
    }

    if (dango__etcd_get(etcd, g_key, strlen(g_key), &kv, NULL) == 0) {
        for (int i = 0; i < NMASTERS; i++) {
            if ((g_masters[i].pid > 0) &&
                (strlen(g_maddr[i]) == kv->value_len) &&
                (memcmp(g_maddr[i], kv->value, kv->value_len) == 0)) {
                idx = i;
            }
        }

        if (term_p != NULL) {
            *term_p = kv->create_revision;
        }
        dango__etcd_kvs_free(kv, 1);
    }

    dango__etcd_close(etcd);
    return idx;
}

static int wait_leader(int64_t *term_p)
{
    uint64_t deadline = dango_time_ns() + 20 * DANGO_NSEC_PER_SEC;
    int      l;

    while (((l = leader(term_p)) < 0) && (dango_time_ns() < deadline)) {
        pump(100);
    }

    return l;
}

/*
 * 1 when, within SURVIVE_MS, a write begun after @since was acknowledged,
 * or (once the put budget is spent and the clients only read) a read
 * succeeded at least 500 ms after @since.
 */
static int survived(uint64_t since)
{
    uint64_t deadline = dango_time_ns() + SURVIVE_MS * DANGO_NSEC_PER_MSEC;

    while (dango_time_ns() < deadline) {
        if ((g_last_ack_start > since) ||
            ((g_nacked + g_failed_puts >= PUT_BUDGET) &&
             (g_last_read_ok > since + 500 * DANGO_NSEC_PER_MSEC))) {
            return 1;
        }

        pump(50);
    }

    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/*
 * Reads @a back: its result (negative: an error; wrong bytes are counted
 * in g_wrong and reported as success).
 */
static int64_t verify_one(dango_store_client_t *c, const acked_t *a)
{
    uint8_t *buf = malloc(a->len), *want = malloc(a->len);
    int64_t  r = DANGO_ENO_OBJECT;
    uint64_t s = 1469598103934665603ull;

    assert_non_null(buf);
    assert_non_null(want);
    for (const char *q = a->key; *q != '\0'; q++) {
        s = (s ^ (uint8_t)*q) * 1099511628211ull;
    }
    s |= 1;
    for (size_t b = 0; b < a->len; b++) {
        if ((b & 7) == 0) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
        }
        want[b] = (uint8_t)(s >> ((b & 7) * 8));
    }

    /* Transient errors (a replica's node restarting) get a few tries. */
    for (int tries = 0; tries < 3; tries++) {
        r = dango_store_get(c, a->key, buf, a->len, NULL);
        if ((r >= 0) || (r == DANGO_ENO_OBJECT)) {
            break;
        }
        pump(200);
    }

    if ((r >= 0) &&
        (((size_t)r != a->len) || (memcmp(buf, want, a->len) != 0))) {
        g_wrong++;
        printf("chaos: WRONG BYTES for %s at the end\n", a->key);
    }

    free(buf);
    free(want);
    return r;
}

/* ---------- the run ---------- */

static void chaos_run(void **state)
{
    static const char *const names[] = {"kill-leader",  "kill-node",
                                        "kill-client",  "partition-node",
                                        "pause-leader", "restart-etcd"};
    dango_store_params_t     p;
    dango_store_client_t    *c;
    const char              *dur     = getenv("DANGO_CHAOS_SECONDS");
    unsigned                 seconds = (dur != NULL) ? (unsigned)atoi(dur) : 60;
    unsigned                 injected[6] = {0}, ok[6] = {0};
    uint64_t                 end, lost_live = 0, lost_dead = 0, verified = 0;
    uint64_t                 rnd = (uint64_t)getpid() * 2654435761u | 1;
    char                     ip[32];
    int64_t                  term;

    (void)state;
    if (netns_setup() != 0) {
        skip();
    }

    join_ctl();
    host_ip(H_ETCD, ip, sizeof(ip));
    snprintf(g_etcd_url, sizeof(g_etcd_url), "etcd://%s:2379", ip);
    snprintf(g_etcd_dir, sizeof(g_etcd_dir), "/tmp/dango-chaos-%d",
             (int)getpid());
    snprintf(g_cluster, sizeof(g_cluster), "chaos%d", (int)getpid());
    snprintf(g_key, sizeof(g_key), "dango/%s/master", g_cluster);
    setenv("DANGO_MASTER_HA", g_etcd_url, 1);
    setenv("DANGO_MASTER_CLUSTER_ID", g_cluster, 1);
    setenv("DANGO_STORE_CLUSTER_ID", g_cluster, 1);

    etcd_start();
    for (int i = 0; i < NMASTERS; i++) {
        master_start(i);
    }
    assert_true(wait_leader(NULL) >= 0);
    for (int i = 0; i < NNODES; i++) {
        node_start(i);
    }
    for (int j = 0; j < NCLIENTS; j++) {
        client_start(j);
    }

    pump(2000);
    end = dango_time_ns() + (uint64_t)seconds * DANGO_NSEC_PER_SEC;
    for (unsigned f = 0; dango_time_ns() < end; f = (f + 1) % 6) {
        uint64_t t = dango_time_ns();
        int      l, i, j;

        injected[f]++;
        printf("chaos: %s\n", names[f]);
        switch (f) {
        case 0: /* kill the leader; it comes back as a follower */
            l = wait_leader(NULL);
            if (l < 0) {
                break;
            }
            t = dango_time_ns();
            it_proc_kill(&g_masters[l]);
            g_fo_kill = t;
            pump(500);
            master_start(l);
            break;
        case 1: /* kill a node: its memory is gone */
            rnd = rnd * 6364136223846793005ull + 1;
            i   = (int)((rnd >> 33) % NNODES);
            if (g_ndead < MAX_DEAD) {
                snprintf(g_dead[g_ndead++], sizeof(g_dead[0]), "%s",
                         g_nname[i]);
            }
            printf("chaos:   node %s killed\n", g_nname[i]);
            it_proc_kill(&g_nodes[i]);
            pump(500);
            node_start(i);
            printf("chaos:   node %d back as %s\n", i, g_nname[i]);
            break;
        case 2: /* kill a client mid-put */
            rnd = rnd * 6364136223846793005ull + 1;
            j   = (int)((rnd >> 33) % NCLIENTS);
            pump(200);
            it_proc_kill(&g_clients[j]);
            client_start(j);
            break;
        case 3: /* partition a node past the client TTL */
            rnd = rnd * 6364136223846793005ull + 1;
            i   = (int)((rnd >> 33) % NNODES);
            printf("chaos:   node %s cut off\n", g_nname[i]);
            it_ip("-n %s link set %s down", g_hubns, g_veth[H_N0 + i]);
            pump(CLIENT_TTL + 1500);
            it_ip("-n %s link set %s up", g_hubns, g_veth[H_N0 + i]);
            break;
        case 4: /* pause the leader past its lease */
            l = wait_leader(NULL);
            if (l < 0) {
                break;
            }
            kill(g_masters[l].pid, SIGSTOP);
            pump(2 * TTL_S * 1000 + 1500);
            kill(g_masters[l].pid, SIGCONT);
            break;
        case 5: /* restart etcd on the same data */
            kill(g_etcd.pid, SIGTERM);
            it_reap(g_etcd.pid, 10000);
            it_proc_kill(&g_etcd); /* forget it */
            etcd_start();
            break;
        }

        t = dango_time_ns();
        ok[f] += survived(t);
        if (f == 4) {
            /* The paused master must not lead any more (a new term). */
            pump(500);
        }
        pump(1000);
    }

    /* Heal: links up, everyone running; stop the writers. */
    for (int i = 0; i < NNODES; i++) {
        it_ip("-n %s link set %s up", g_hubns, g_veth[H_N0 + i]);
    }
    for (int i = 0; i < NMASTERS; i++) {
        kill(g_masters[i].pid, SIGCONT);
    }
    for (int j = 0; j < NCLIENTS; j++) {
        close(g_clients[j].in_fd);
        g_clients[j].in_fd = -1;
    }
    pump(3000);
    for (int j = 0; j < NCLIENTS; j++) {
        pump(10);
        it_proc_stop(&g_clients[j], 15000);
    }

    /*
     * Read every acknowledged key back once all nodes are mounted (after
     * the client TTL, so that no killed node's segment is still counted).
     */
    pump(CLIENT_TTL + 1000);
    memset(&p, 0, sizeof(p));
    p.field_mask  = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_BUFFER_SIZE;
    p.master_addr = g_etcd_url;
    p.local_buffer_size = 8u << 20;
    host_ip(H_CTL, ip, sizeof(ip));
    assert_true(wait_leader(&term) >= 0);
    assert_dango_ok(dango_store_client_create(&p, NULL, &c));
    {
        uint64_t deadline = dango_time_ns() + 30 * DANGO_NSEC_PER_SEC;

        while (dango_time_ns() < deadline) {
            dango_store_pool_info_t pool;

            if ((dango_store_pool_stat(c, &pool) == 0) &&
                (pool.segments == NNODES)) {
                break;
            }
            pump(100);
        }
    }
    {
        size_t *again  = calloc(g_nacked + 1, sizeof(*again));
        size_t  nagain = 0;

        assert_non_null(again);
        for (size_t k = 0; k < g_nacked; k++) {
            int64_t r = verify_one(c, &g_acked[k]);

            verified++;
            if ((r < 0) && has_live_replica(&g_acked[k])) {
                again[nagain++] = k; /* a node may still be remounting */
            } else if (r < 0) {
                lost_dead++;
            }
        }

        /* Those missing get a second look once every node had time to
         * remount (a dead node's segment expires after the client TTL). */
        if (nagain > 0) {
            printf("chaos: %zu keys missing on the first pass, again in %d "
                   "ms\n",
                   nagain, CLIENT_TTL + 3000);
            pump(CLIENT_TTL + 3000);
        }
        for (size_t i = 0; i < nagain; i++) {
            acked_t *a = &g_acked[again[i]];
            int64_t  r = verify_one(c, a);

            if (r < 0) {
                lost_live++;
                printf("chaos: LOST %s (%s) replicas %s\n", a->key,
                       dango_err_name((int)r), a->reps);
            }
        }
        free(again);
    }
    dango_store_client_destroy(c);

    qsort(g_samples, g_nsamples, sizeof(g_samples[0]), cmp_u64);
    printf("{\"chaos\": {\"seconds\": %u, \"ops_attempted\": %" PRIu64
           ", \"ops_succeeded\": %" PRIu64 ", \"ops_failed\": %" PRIu64
           ", \"acked_keys\": %zu, \"verified\": %" PRIu64
           ", \"wrong_bytes\": %" PRIu64
           ", \"lost_acked_with_live_replica\": %" PRIu64
           ", \"lost_all_replicas_dead\": %" PRIu64 ", \"faults\": {",
           seconds, g_attempted, g_succeeded, g_failed, g_nacked, verified,
           g_wrong, lost_live, lost_dead);
    for (int f = 0; f < 6; f++) {
        printf("%s\"%s\": [%u, %u]", (f > 0) ? ", " : "", names[f], injected[f],
               ok[f]);
    }
    printf("}, \"failover_ms_samples\": [");
    for (size_t s = 0; s < g_nsamples; s++) {
        printf("%s%.0f", (s > 0) ? ", " : "", (double)g_samples[s] / 1e6);
    }
    printf("], \"failover_ms_median\": %.0f}}\n",
           (g_nsamples > 0) ? (double)g_samples[g_nsamples / 2] / 1e6 : -1.0);
    fflush(stdout);

    assert_int_equal(0, g_wrong);
    assert_int_equal(0, lost_live);
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NMASTERS; i++) {
        if (g_masters[i].pid > 0) {
            kill(g_masters[i].pid, SIGCONT);
        }
    }
    it_proc_kill_all();
    netns_cleanup();
    if (g_etcd_dir[0] != '\0') {
        char cmd[200];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", g_etcd_dir);
        if (system(cmd) != 0) {
            printf("chaos: could not remove %s\n", g_etcd_dir);
        }
    }
    for (size_t k = 0; k < g_nacked; k++) {
        free(g_acked[k].reps);
    }
    free(g_acked);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(chaos_run, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    dango_test_quiet_logs();
    setenv("DANGO_LOG", "error", 0);
    setenv("DANGO_MASTER_ADMIN_LISTEN", "", 1);
    setenv("DANGO_MASTER_HA_LEASE_TTL", "2s", 1);
    setenv("DANGO_MASTER_CLIENT_TTL", "3s", 1);
    setenv("DANGO_MASTER_MONITOR_INTERVAL", "200ms", 1);
    setenv("DANGO_MASTER_REBUILD_WINDOW", "1h", 1);
    setenv("DANGO_STORE_PING_INTERVAL", "200ms", 1);
    setenv("DANGO_STORE_RPC_TIMEOUT", "2s", 1);
    setenv("DANGO_STORE_HA_TIMEOUT", "20s", 1);
    setenv("DANGO_STORE_REPLICA_NUM", "2", 1);
    setenv("DANGO_STORE_TRANSFER_TIMEOUT", "5s", 1);
    setenv("DANGO_XFER_TRANSPORTS", "tcp", 1);
    unsetenv("DANGO_CLUSTER_TOKEN");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
