/*
 * Transfer engine integration tests: real processes on loopback (and in two
 * network namespaces joined by veth). The peer is tests/integration/
 * xfer_target_helper.c, started with fork + exec; it reports its segment and
 * buffers on a pipe and serves until its stdin closes (see that file for
 * the line protocol). Every wait is bounded; every child is killed and
 * reaped in the teardown whatever happened.
 *
 * Groups (argv[1] is a cmocka test filter; CTest runs one entry per group):
 *   roundtrip_*  WRITE then READ back, 1 byte .. 64 MiB, unaligned offsets,
 *                P2P handshake and HTTP metadata, over tcp and shm
 *   file_*       file:// segments, unaligned and 4 KiB aligned
 *   fault_*      a target killed mid-batch; restart and stale segments
 *   access_*     out-of-bounds / unregistered / private remote addresses
 *   garbage_*    random bytes and malformed frames on the TCP listener
 *   notify_*     notifications arrive after the batch's data landed
 *   token_*      DANGO_CLUSTER_TOKEN
 *   threads_*    4 threads x many batches, data verified
 *   netns_*      two emulated hosts (skipped where namespaces are refused)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"
#include "it_proc.h"

#include <dango/dango.h>
#include "common/alloc.h"
#include "common/hash.h"
#include "common/time.h"
#include "net/auth.h"
#include "net/frame.h"
#include "net/sock.h"
#include "dango_ctrl.pb-c.h"

#ifndef XFER_TARGET_PATH
#error "XFER_TARGET_PATH must name the xfer_target helper"
#endif

#define MIB           (1ull << 20)
#define TARGET_SIZE   (64 * MIB + 64 * 1024) /* 64 MiB at odd offsets */
#define START_TIMEOUT 30000                  /* ms, engine start (ASan) */
#define REPLY_TIMEOUT 30000                  /* ms, one command */
#define XFER_TIMEOUT  60000                  /* ms, one batch */

/* ---------- children ---------- */

#define MAX_NOTES 16

typedef struct target {
    it_proc_t p;
    char      notes[MAX_NOTES][512]; /* NOTIFY lines seen while waiting */
    unsigned  num_notes;
    char      name[DANGO_XFER_NAME_MAX + 1];
    char      listen[64];
    uint64_t  buf, len, rbuf, rlen, priv, plen;
} target_t;

#define MAX_CHILDREN 8

static target_t            *g_targets[MAX_CHILDREN];
static dango_xfer_engine_t *g_engines[4];
static dango_md_server_t   *g_srv;

/* Reads lines until one starts with @prefix; NOTIFY lines are kept. */
static void expect_line(target_t *t, const char *prefix, char *line, size_t len,
                        int timeout_ms)
{
    for (;;) {
        int rc = it_proc_read_line(&t->p, line, len, timeout_ms);

        if (rc != 0) {
            fail_msg("target %d: no '%s' line: %s", (int)t->p.pid, prefix,
                     dango_err_name(rc));
        }

        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            return;
        }

        if ((strncmp(line, "NOTIFY ", 7) == 0) && (t->num_notes < MAX_NOTES)) {
            snprintf(t->notes[t->num_notes++], sizeof(t->notes[0]), "%s", line);
            continue;
        }

        fail_msg("target %d: unexpected line '%s' (waiting for '%s')",
                 (int)t->p.pid, line, prefix);
    }
}

/* The next notification the target reported. */
static void next_notify(target_t *t, char *line, size_t len, int timeout_ms)
{
    if (t->num_notes > 0) {
        snprintf(line, len, "%s", t->notes[0]);
        memmove(t->notes[0], t->notes[1],
                (t->num_notes - 1) * sizeof(t->notes[0]));
        t->num_notes--;
        return;
    }

    expect_line(t, "NOTIFY ", line, len, timeout_ms);
}

static void target_cmd(target_t *t, const char *prefix, char *reply, size_t len,
                       const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void target_cmd(target_t *t, const char *prefix, char *reply, size_t len,
                       const char *fmt, ...)
{
    char    cmd[256];
    va_list ap;
    int     n;

    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
    va_end(ap);
    cmd[n++] = '\n';
    assert_int_equal(n, write(t->p.in_fd, cmd, (size_t)n));
    expect_line(t, prefix, reply, len, REPLY_TIMEOUT);
}

static uint64_t target_hash(target_t *t, const char *which, uint64_t off,
                            uint64_t len)
{
    char     line[128];
    uint64_t h = 0;

    target_cmd(t, "HASH ", line, sizeof(line), "hash %s %llu %llu", which,
               (unsigned long long)off, (unsigned long long)len);
    assert_int_equal(1, sscanf(line, "HASH %" SCNx64, &h));
    return h;
}

static int target_errors(target_t *t)
{
    char line[64];
    int  n = -1;

    target_cmd(t, "ERRORS ", line, sizeof(line), "errors");
    assert_int_equal(1, sscanf(line, "ERRORS %d", &n));
    return n;
}

typedef struct target_opts {
    const char *metadata;   /* default P2P */
    const char *listen;     /* default 127.0.0.1:0 */
    const char *segment;    /* default: engine default */
    const char *transports; /* default "tcp" */
    const char *token;      /* DANGO_CLUSTER_TOKEN, NULL = unset */
    const char *netns;      /* run under `ip netns exec` */
    size_t      size;       /* default TARGET_SIZE */
} target_opts_t;

/* Starts a target; returns 0 or the reason it did not come up. */
static int target_try_start(target_t *t, const target_opts_t *o)
{
    char        size[32], line[1024], token[256];
    char       *argv[24];
    const char *env_add[] = {token, NULL};
    int         a         = 0, rc, slot;

    memset(t, 0, sizeof(*t));
    for (slot = 0; slot < MAX_CHILDREN; slot++) {
        if (g_targets[slot] == NULL) {
            break;
        }
    }

    assert_true(slot < MAX_CHILDREN);
    snprintf(size, sizeof(size), "%llu",
             (unsigned long long)(o->size ? o->size : TARGET_SIZE));
    if (o->netns != NULL) {
        argv[a++] = (char *)it_ip_path();
        argv[a++] = "netns";
        argv[a++] = "exec";
        argv[a++] = (char *)o->netns;
    }

    argv[a++] = XFER_TARGET_PATH;
    argv[a++] = "--metadata";
    argv[a++] = (char *)(o->metadata ? o->metadata : DANGO_XFER_P2PHANDSHAKE);
    argv[a++] = "--listen";
    argv[a++] = (char *)(o->listen ? o->listen : "127.0.0.1:0");
    argv[a++] = "--transports";
    argv[a++] = (char *)(o->transports ? o->transports : "tcp");
    argv[a++] = "--size";
    argv[a++] = size;
    if (o->segment != NULL) {
        argv[a++] = "--segment";
        argv[a++] = (char *)o->segment;
    }

    argv[a] = NULL;
    snprintf(token, sizeof(token), "DANGO_CLUSTER_TOKEN=%s",
             o->token ? o->token : "");
    it_proc_spawn(&t->p, argv, o->token ? env_add : NULL);
    g_targets[slot] = t;
    rc = it_proc_read_line(&t->p, line, sizeof(line), START_TIMEOUT);
    if (rc != 0) {
        return rc;
    }

    if (sscanf(line,
               "READY %255s %63s %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64
               " %" SCNx64 " %" SCNx64,
               t->name, t->listen, &t->buf, &t->len, &t->rbuf, &t->rlen,
               &t->priv, &t->plen) != 8) {
        print_message("target said: %s\n", line);
        return DANGO_EPROTO;
    }

    return 0;
}

static void target_start(target_t *t, const target_opts_t *o)
{
    int rc = target_try_start(t, o);

    if (rc != 0) {
        fail_msg("target did not start: %s", dango_err_name(rc));
    }
}

static void target_forget(target_t *t)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_targets[i] == t) {
            g_targets[i] = NULL;
        }
    }
}

/* Closes its stdin and waits for a clean exit. */
static void target_stop(target_t *t)
{
    int status = it_proc_stop(&t->p, 20000);

    target_forget(t);
    assert_true(WIFEXITED(status));
    assert_int_equal(0, WEXITSTATUS(status));
}

static void target_kill(target_t *t)
{
    it_proc_kill(&t->p);
    target_forget(t);
}

/* ---------- the test's own engine ---------- */

static dango_xfer_engine_t *engine_new(const char *md, const char *name,
                                       const char *tps, unsigned workers,
                                       const dango_config_t *cfg)
{
    dango_xfer_engine_params_t p = {0};
    dango_xfer_engine_t       *eng;
    int                        i;

    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS |
                   DANGO_XFER_ENGINE_PARAM_TRANSPORTS;
    p.metadata    = md ? md : DANGO_XFER_P2PHANDSHAKE;
    p.listen_addr = "127.0.0.1:0";
    p.num_workers = workers;
    p.transports  = tps;
    if (name != NULL) {
        p.field_mask |= DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME;
        p.segment_name = name;
    }

    assert_dango_ok(dango_xfer_engine_create(&p, cfg, &eng));
    for (i = 0; (i < 4) && (g_engines[i] != NULL); i++) {
    }

    assert_true(i < 4);
    g_engines[i] = eng;
    return eng;
}

static void engine_done(dango_xfer_engine_t *eng)
{
    for (int i = 0; i < 4; i++) {
        if (g_engines[i] == eng) {
            g_engines[i] = NULL;
        }
    }

    dango_xfer_engine_destroy(eng);
}

/* Starts the embedded HTTP metadata server; returns its connection string. */
static const char *md_http(void)
{
    static char conn[96];

    if (g_srv == NULL) {
        assert_dango_ok(dango_md_server_start("127.0.0.1:0", &g_srv));
    }

    snprintf(conn, sizeof(conn), "http://127.0.0.1:%d/metadata",
             dango_md_server_port(g_srv));
    return conn;
}

static const char *unique(const char *what)
{
    static char     names[8][96];
    static unsigned next;
    char           *n = names[next++ % 8];

    snprintf(n, sizeof(names[0]), "%s-%d-%u", what, (int)getpid(), next);
    return n;
}

/* ---------- data ---------- */

/* Fast pseudo-random fill (splitmix64), seeded from the kernel per test. */
static uint64_t g_seed;

static void fill(void *buf, size_t len)
{
    uint64_t x = g_seed;
    char    *p = buf;

    while (len > 0) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        size_t   n = len < 8 ? len : 8;

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        memcpy(p, &z, n);
        p += n;
        len -= n;
    }

    g_seed = x;
}

/* One batch of @n requests, waited for; returns the batch's result. */
static int xfer(dango_xfer_engine_t *eng, const dango_xfer_req_t *r, size_t n)
{
    dango_xfer_batch_t *batch;
    int                 rc;

    assert_dango_ok(dango_xfer_batch_create(eng, n, &batch));
    rc = dango_xfer_batch_submit(batch, r, n);
    if (rc == 0) {
        rc = dango_xfer_batch_wait(batch, XFER_TIMEOUT);
        if (rc == DANGO_ETIMEDOUT) {
            fail_msg("a batch of %zu requests did not finish in %d ms", n,
                     XFER_TIMEOUT);
        }
    }

    assert_dango_ok(dango_xfer_batch_destroy(batch));
    return rc;
}

static int xfer1(dango_xfer_engine_t *eng, dango_xfer_op_t op, void *local,
                 dango_segment_id_t seg, uint64_t remote, uint64_t len)
{
    dango_xfer_req_t r = {op, local, seg, remote, len};

    return xfer(eng, &r, 1);
}

static const uint64_t k_sizes[] = {1,     7,        4095,     4096,
                                   65537, MIB + 13, 16 * MIB, 64 * MIB};

/* ---------- setup / teardown ---------- */

static int test_setup(void **state)
{
    (void)state;
    dango_random_bytes(&g_seed, sizeof(g_seed));
    unsetenv("DANGO_CLUSTER_TOKEN");
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_targets[i] != NULL) {
            target_kill(g_targets[i]);
        }
    }

    it_proc_kill_all(); /* helpers not in targets */

    for (int i = 0; i < 4; i++) {
        if (g_engines[i] != NULL) {
            dango_xfer_engine_destroy(g_engines[i]);
            g_engines[i] = NULL;
        }
    }

    dango_md_server_stop(g_srv);
    g_srv = NULL;
    it_netns_cleanup();
    unsetenv("DANGO_CLUSTER_TOKEN");
    return 0;
}

/* ---------- (a) round trips ---------- */

static void roundtrip(int http, const char *tps, const char *expect_tp)
{
    const char               *md = http ? md_http() : NULL;
    target_opts_t             o  = {0};
    target_t                  t;
    dango_xfer_engine_t      *eng;
    dango_xfer_segment_info_t info;
    dango_segment_id_t        seg, again;
    uint64_t                  addr, len;
    const size_t              llen = 64 * MIB + 64;
    char                     *src, *dst;
    void                     *mem = NULL;
    int                       shm = (strcmp(expect_tp, "shm") == 0);

    o.metadata   = md;
    o.segment    = http ? unique("rt-target") : NULL;
    o.transports = tps;
    target_start(&t, &o);
    eng = engine_new(md, http ? unique("rt-init") : NULL, tps, 2, NULL);

    assert_dango_ok(dango_xfer_segment_open(eng, t.name, &seg));
    assert_dango_ok(dango_xfer_segment_open(eng, t.name, &again));
    assert_int_equal(seg, again);
    assert_dango_ok(dango_xfer_segment_query(eng, seg, &info));
    assert_string_equal(expect_tp, info.transport);
    assert_string_equal(t.name, info.name);
    assert_int_equal(2, info.num_buffers);
    assert_true(info.instance_id != 0);
    /* Buffers in registration order: the memfd one first. */
    assert_dango_ok(dango_xfer_segment_buffer(eng, seg, 0, &addr, &len));
    assert_int_equal(t.buf, addr);
    assert_int_equal(t.len, len);
    assert_dango_ok(dango_xfer_segment_buffer(eng, seg, 1, &addr, &len));
    assert_int_equal(t.rbuf, addr);
    assert_int_equal(t.rlen, len);

    /* Local memory: memfd-backed for shm, plain malloc for tcp. */
    if (shm) {
        assert_dango_ok(dango_xfer_mem_alloc(eng, 2 * llen, "*", 0, &mem));
        src = mem;
    } else {
        src = malloc(2 * llen);
        assert_non_null(src);
        assert_dango_ok(dango_xfer_mem_register(eng, src, 2 * llen, "*", 0));
    }

    dst = src + llen;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(k_sizes); i++) {
        uint64_t            size = k_sizes[i];
        uint64_t            off  = (1 + 2 * (i * 2654435761u)) % (t.len - size);
        dango_xfer_batch_t *batch;
        dango_xfer_status_t st;
        dango_xfer_req_t    w = {DANGO_XFER_OP_WRITE, src + 3, seg, t.buf + off,
                                 size};
        dango_xfer_req_t    r = {DANGO_XFER_OP_READ, dst + 5, seg, t.buf + off,
                                 size};
        uint64_t            h;

        fill(src + 3, size);
        memset(dst + 5, 0, size);
        h = dango_hash64(src + 3, size);
        assert_dango_ok(dango_xfer_batch_create(eng, 1, &batch));
        assert_dango_ok(dango_xfer_batch_submit(batch, &w, 1));
        assert_dango_ok(dango_xfer_batch_wait(batch, XFER_TIMEOUT));
        assert_dango_ok(dango_xfer_batch_status(batch, 0, &st));
        assert_int_equal(DANGO_XFER_COMPLETED, st.state);
        assert_int_equal(size, st.bytes);
        /* The bytes are in the target's memory, not just acknowledged. */
        if (target_hash(&t, "buf", off, size) != h) {
            fail_msg("%s: %llu bytes at offset %llu: target holds other "
                     "data (seed %016llx)",
                     expect_tp, (unsigned long long)size,
                     (unsigned long long)off, (unsigned long long)g_seed);
        }

        assert_dango_ok(dango_xfer_batch_reset(batch));
        assert_dango_ok(dango_xfer_batch_submit(batch, &r, 1));
        assert_dango_ok(dango_xfer_batch_wait(batch, XFER_TIMEOUT));
        assert_dango_ok(dango_xfer_batch_destroy(batch));
        if (dango_hash64(dst + 5, size) != h) {
            fail_msg("%s: %llu bytes at offset %llu read back differ",
                     expect_tp, (unsigned long long)size,
                     (unsigned long long)off);
        }
    }

    /* Several sizes in one batch, to non-overlapping places. */
    {
        dango_xfer_req_t w[6], r[6];
        uint64_t         roff = 17, loff = 1;

        for (size_t i = 0; i < 6; i++) {
            uint64_t size = k_sizes[i];

            w[i] = (dango_xfer_req_t){DANGO_XFER_OP_WRITE, src + loff, seg,
                                      t.buf + roff, size};
            r[i] = (dango_xfer_req_t){DANGO_XFER_OP_READ, dst + loff, seg,
                                      t.buf + roff, size};
            roff += size + 3;
            loff += size + 1;
        }

        fill(src, loff);
        memset(dst, 0, loff);
        assert_dango_ok(xfer(eng, w, 6));
        assert_dango_ok(xfer(eng, r, 6));
        for (size_t i = 0; i < 6; i++) {
            assert_memory_equal(w[i].local_addr, r[i].local_addr, k_sizes[i]);
        }
    }

    /* The malloc'd remote buffer cannot be mapped: served over tcp. */
    fill(src, 300000);
    assert_dango_ok(
        xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.rbuf + 11, 300000));
    assert_int_equal(dango_hash64(src, 300000),
                     target_hash(&t, "rbuf", 11, 300000));

    if (shm) {
        assert_dango_ok(dango_xfer_mem_free(eng, mem));
    } else {
        assert_dango_ok(dango_xfer_mem_unregister(eng, src));
        free(src);
    }

    engine_done(eng);
    target_stop(&t);
}

static void roundtrip_p2p_tcp(void **state)
{
    (void)state;
    roundtrip(0, "tcp", "tcp");
}

static void roundtrip_p2p_shm(void **state)
{
    (void)state;
    roundtrip(0, "shm,tcp", "shm");
}

static void roundtrip_http_tcp(void **state)
{
    (void)state;
    roundtrip(1, "tcp", "tcp");
}

static void roundtrip_http_shm(void **state)
{
    (void)state;
    roundtrip(1, "shm,tcp", "shm");
}

/* ---------- (b) file segments ---------- */

static void file_segment_roundtrip(void **state)
{
    const char               *tmp = getenv("TMPDIR");
    dango_xfer_engine_t      *eng;
    dango_xfer_segment_info_t info;
    dango_segment_id_t        seg, again;
    char                      dir[256], path[300], name[320];
    const size_t              llen = 64 * MIB + 8192;
    char                     *src, *dst, *chk;
    int                       fd;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/dango-xfer-file-XXXXXX",
             (tmp != NULL) && (tmp[0] != '\0') ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/seg", dir);
    snprintf(name, sizeof(name), "file://%s", path);
    eng = engine_new(NULL, NULL, "tcp", 2, NULL);
    src = aligned_alloc(4096, llen);
    dst = aligned_alloc(4096, llen);
    chk = aligned_alloc(4096, llen);
    assert_true((src != NULL) && (dst != NULL) && (chk != NULL));
    assert_dango_ok(dango_xfer_mem_register(eng, src, llen, NULL, 0));
    assert_dango_ok(dango_xfer_mem_register(eng, dst, llen, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, name, &seg));
    assert_dango_ok(dango_xfer_segment_open(eng, name, &again));
    assert_int_equal(seg, again);
    assert_dango_ok(dango_xfer_segment_query(eng, seg, &info));
    assert_string_equal("file", info.transport);
    assert_string_equal(name, info.name);
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);

    for (int aligned = 0; aligned < 2; aligned++) {
        for (size_t i = 0; i < DANGO_ARRAY_SIZE(k_sizes); i++) {
            uint64_t size = k_sizes[i];
            uint64_t off  = aligned ? 4096 * (3 + i) : 1 + 4099 * i;
            size_t   ls = aligned ? 0 : 3, ld = aligned ? 0 : 5;
            uint64_t h;

            fill(src + ls, size);
            memset(dst + ld, 0, size);
            h = dango_hash64(src + ls, size);
            assert_dango_ok(
                xfer1(eng, DANGO_XFER_OP_WRITE, src + ls, seg, off, size));
            /* What the file holds, read behind the engine's back. */
            assert_int_equal((ssize_t)size, pread(fd, chk, size, (off_t)off));
            if (dango_hash64(chk, size) != h) {
                fail_msg("file: %llu bytes at %llu (%s): file differs",
                         (unsigned long long)size, (unsigned long long)off,
                         aligned ? "aligned" : "unaligned");
            }

            assert_dango_ok(
                xfer1(eng, DANGO_XFER_OP_READ, dst + ld, seg, off, size));
            if (dango_hash64(dst + ld, size) != h) {
                fail_msg("file: %llu bytes at %llu (%s): read back differs",
                         (unsigned long long)size, (unsigned long long)off,
                         aligned ? "aligned" : "unaligned");
            }
        }
    }

    /* Reading past the end of the file is refused. */
    {
        struct stat stb;

        assert_int_equal(0, fstat(fd, &stb));
        assert_dango_err(DANGO_ERANGE, xfer1(eng, DANGO_XFER_OP_READ, dst, seg,
                                             (uint64_t)stb.st_size - 10, 4096));
        assert_dango_err(DANGO_ERANGE,
                         xfer1(eng, DANGO_XFER_OP_READ, dst, seg,
                               (uint64_t)stb.st_size + 4096, 4096));
    }

    close(fd);
    assert_dango_ok(dango_xfer_segment_close(eng, seg));
    engine_done(eng);
    unlink(path);
    rmdir(dir);
    free(src);
    free(dst);
    free(chk);
}

/* ---------- (c) a target killed mid-batch ---------- */

static void fault_target_killed_tcp(void **state)
{
    target_t             t;
    target_opts_t        o = {0};
    dango_xfer_engine_t *eng;
    dango_xfer_batch_t  *batch;
    dango_xfer_req_t     w[16];
    dango_segment_id_t   seg, seg2;
    char                 listen[DANGO_XFER_NAME_MAX + 1];
    const size_t         llen = 64 * MIB;
    char                *src  = malloc(llen);
    uint64_t             t0, elapsed;
    int                  rc;

    (void)state;
    assert_non_null(src);
    target_start(&t, &o);
    eng = engine_new(NULL, NULL, "tcp", 2, NULL);
    assert_dango_ok(dango_xfer_mem_register(eng, src, llen, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, t.name, &seg));
    fill(src, llen);
    assert_dango_ok(xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf, 4096));

    /* The target cannot acknowledge anything: the batch is in flight. */
    assert_int_equal(0, kill(t.p.pid, SIGSTOP));
    for (size_t i = 0; i < 16; i++) {
        w[i] = (dango_xfer_req_t){DANGO_XFER_OP_WRITE, src + i * 4 * MIB, seg,
                                  t.buf + i * 4 * MIB, 4 * MIB};
    }

    assert_dango_ok(dango_xfer_batch_create(eng, 16, &batch));
    assert_dango_ok(dango_xfer_batch_submit(batch, w, 16));
    assert_dango_err(DANGO_ETIMEDOUT, dango_xfer_batch_wait(batch, 200));
    snprintf(listen, sizeof(listen), "%s", t.name); /* P2P: host:port */
    target_kill(&t);

    t0      = dango_time_ns();
    rc      = dango_xfer_batch_wait(batch, 15000);
    elapsed = (dango_time_ns() - t0) / DANGO_NSEC_PER_MSEC;
    print_message("killed target: batch_wait gave %s after %llu ms\n",
                  dango_err_name(rc), (unsigned long long)elapsed);
    if (!dango_err_is_link(rc) && !dango_err_is_peer(rc)) {
        fail_msg("batch_wait returned %s, expected a link or peer error",
                 dango_err_name(rc));
    }

    assert_true(elapsed < 15000);
    assert_dango_ok(dango_xfer_batch_reset(batch));
    assert_dango_ok(dango_xfer_batch_destroy(batch));

    /* Nobody answers at that address now. */
    assert_dango_err(DANGO_EPEER_GONE,
                     dango_xfer_segment_open(eng, listen, &seg2));

    /* A new instance on the same address: the old id is stale. */
    o.listen = listen;
    target_start(&t, &o);
    assert_string_equal(listen, t.name);
    rc = xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf, 4096);
    print_message("old segment id after the restart: %s\n", dango_err_name(rc));
    assert_dango_err(DANGO_ESEGMENT_STALE, rc);
    assert_dango_err(DANGO_ESEGMENT_STALE,
                     xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf, 4096));
    assert_dango_ok(dango_xfer_segment_open(eng, listen, &seg2));
    assert_true(seg2 != seg);
    fill(src, MIB);
    assert_dango_ok(xfer1(eng, DANGO_XFER_OP_WRITE, src, seg2, t.buf + 1, MIB));
    assert_int_equal(dango_hash64(src, MIB), target_hash(&t, "buf", 1, MIB));
    /* The stale id stays stale; the new one is the one that is cached. */
    assert_dango_ok(dango_xfer_segment_open(eng, listen, &seg));
    assert_int_equal(seg2, seg);

    target_stop(&t);
    engine_done(eng);
    free(src);
}

/* Same host: the mapping outlives the target, liveness must catch it. */
static void fault_target_killed_shm(void **state)
{
    target_t                  t;
    target_opts_t             o = {0};
    dango_xfer_engine_t      *eng;
    dango_xfer_segment_info_t info;
    dango_segment_id_t        seg;
    void                     *src;
    uint64_t                  deadline;
    int                       rc = 0, ok_after = 0;

    (void)state;
    o.transports = "shm,tcp";
    target_start(&t, &o);
    eng = engine_new(NULL, NULL, "shm,tcp", 2, NULL);
    assert_dango_ok(dango_xfer_mem_alloc(eng, 4 * MIB, "*", 0, &src));
    assert_dango_ok(dango_xfer_segment_open(eng, t.name, &seg));
    assert_dango_ok(dango_xfer_segment_query(eng, seg, &info));
    assert_string_equal("shm", info.transport);
    assert_dango_ok(xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf, 4 * MIB));
    target_kill(&t);

    deadline = dango_time_ns() + 5 * DANGO_NSEC_PER_SEC;
    while (dango_time_ns() < deadline) {
        rc = xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf, 4 * MIB);
        if (rc != 0) {
            break;
        }

        ok_after++;
    }

    print_message("shm: %d writes reported done after the kill, then %s\n",
                  ok_after, dango_err_name(rc));
    if (!dango_err_is_link(rc) && !dango_err_is_peer(rc)) {
        fail_msg("writes to a dead same-host target gave %s",
                 dango_err_name(rc));
    }

    /* Found gone: the segment is stale until reopened. */
    assert_dango_err(DANGO_ESEGMENT_STALE,
                     xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf, 4096));
    engine_done(eng);
}

/* ---------- (d) refused remote addresses ---------- */

static void access_refused(const char *tps)
{
    target_t             t;
    target_opts_t        o = {0};
    dango_xfer_engine_t *eng;
    dango_segment_id_t   seg;
    const size_t         tsize = 4 * MIB;
    char                *src, *back;
    uint64_t             hbuf, hrbuf, hpriv;

    o.transports = tps;
    o.size       = tsize;
    target_start(&t, &o);
    eng  = engine_new(NULL, NULL, tps, 2, NULL);
    src  = malloc(2 * tsize);
    back = malloc(tsize);
    assert_dango_ok(dango_xfer_mem_register(eng, src, 2 * tsize, NULL, 0));
    assert_dango_ok(dango_xfer_mem_register(eng, back, tsize, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, t.name, &seg));
    fill(src, 2 * tsize);
    assert_dango_ok(xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf, tsize));
    assert_dango_ok(xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.rbuf, t.rlen));
    hbuf  = target_hash(&t, "buf", 0, t.len);
    hrbuf = target_hash(&t, "rbuf", 0, t.rlen);
    hpriv = target_hash(&t, "priv", 0, t.plen);
    fill(src, 2 * tsize); /* what a refused write would leave behind */

    {
        const struct {
            dango_xfer_op_t op;
            uint64_t        addr, len;
            const char     *what;
        } bad[] = {
            {DANGO_XFER_OP_WRITE, t.buf + t.len - 10, 11, "past the end"},
            {DANGO_XFER_OP_WRITE, t.buf - 1, 10, "before the start"},
            {DANGO_XFER_OP_WRITE, t.buf, t.len + 1, "one byte too long"},
            {DANGO_XFER_OP_WRITE, t.buf + 4096, 2 * tsize, "far too long"},
            {DANGO_XFER_OP_READ, t.buf + t.len, 1, "read past the end"},
            {DANGO_XFER_OP_WRITE, t.rbuf + t.rlen - 1, 2, "rbuf end"},
            {DANGO_XFER_OP_WRITE, t.priv, 64, "private region"},
            {DANGO_XFER_OP_READ, t.priv + 100, 64, "read private region"},
            {DANGO_XFER_OP_WRITE, 0x10000, 64, "unregistered"},
            {DANGO_XFER_OP_READ, 0x10000, 64, "read unregistered"},
            {DANGO_XFER_OP_WRITE, UINT64_MAX - 4096 * 2, 4096, "top"},
        };

        for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
            int rc = xfer1(eng, bad[i].op,
                           bad[i].op == DANGO_XFER_OP_READ ? back : src, seg,
                           bad[i].addr, bad[i].len);

            if (rc != DANGO_EREMOTE_ACCESS) {
                fail_msg("%s (%s): %s, expected DANGO_EREMOTE_ACCESS", tps,
                         bad[i].what, dango_err_name(rc));
            }
        }

        /* All in one batch: every request fails on its own. */
        {
            dango_xfer_req_t    r[DANGO_ARRAY_SIZE(bad)];
            dango_xfer_batch_t *batch;
            dango_xfer_status_t st;

            for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
                r[i] = (dango_xfer_req_t){
                    bad[i].op, bad[i].op == DANGO_XFER_OP_READ ? back : src,
                    seg, bad[i].addr, bad[i].len};
            }

            assert_dango_ok(
                dango_xfer_batch_create(eng, DANGO_ARRAY_SIZE(bad), &batch));
            assert_dango_ok(
                dango_xfer_batch_submit(batch, r, DANGO_ARRAY_SIZE(bad)));
            assert_dango_err(DANGO_EREMOTE_ACCESS,
                             dango_xfer_batch_wait(batch, XFER_TIMEOUT));
            for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
                assert_dango_ok(dango_xfer_batch_status(batch, i, &st));
                assert_int_equal(DANGO_XFER_FAILED, st.state);
                assert_dango_err(DANGO_EREMOTE_ACCESS, st.error);
            }

            assert_dango_ok(dango_xfer_batch_destroy(batch));
        }
    }

    /* An address range that wraps is refused before anything is sent. */
    {
        dango_xfer_batch_t *batch;
        dango_xfer_req_t    r = {DANGO_XFER_OP_WRITE, src, seg, UINT64_MAX - 5,
                                 10};

        assert_dango_ok(dango_xfer_batch_create(eng, 1, &batch));
        assert_dango_err(DANGO_EINVAL, dango_xfer_batch_submit(batch, &r, 1));
        assert_dango_ok(dango_xfer_batch_destroy(batch));
    }

    /* Nothing was written anywhere: the target says so, and so does a READ. */
    assert_int_equal(hbuf, target_hash(&t, "buf", 0, t.len));
    assert_int_equal(hrbuf, target_hash(&t, "rbuf", 0, t.rlen));
    assert_int_equal(hpriv, target_hash(&t, "priv", 0, t.plen));
    assert_dango_ok(xfer1(eng, DANGO_XFER_OP_READ, back, seg, t.buf, t.len));
    assert_int_equal(hbuf, dango_hash64(back, t.len));
    /* And the connection still serves good requests. */
    assert_dango_ok(xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf + 9, 999));
    assert_int_equal(dango_hash64(src, 999), target_hash(&t, "buf", 9, 999));

    engine_done(eng);
    target_stop(&t);
    free(src);
    free(back);
}

static void access_refused_tcp(void **state)
{
    (void)state;
    access_refused("tcp");
}

static void access_refused_shm(void **state)
{
    (void)state;
    access_refused("shm,tcp");
}

/* ---------- (e) garbage on the TCP listener ---------- */

static int raw_connect(const char *addr)
{
    int fd = dango_sock_connect(addr, 5 * DANGO_NSEC_PER_SEC, 0);

    assert_true(fd >= 0);
    return fd;
}

static void raw_send(int fd, const void *buf, size_t len)
{
    /* The target may close early: a reset here is not a failure. */
    dango_sock_send_all(fd, buf, len, dango_time_ns() + 5 * DANGO_NSEC_PER_SEC);
}

static void raw_frame(int fd, uint8_t type, uint64_t id, uint64_t addr,
                      uint64_t length, const void *payload, size_t plen)
{
    dango_frame_t hdr;

    dango_frame_init(&hdr, type, id, addr, length, 0);
    raw_send(fd, &hdr, sizeof(hdr));
    if (plen > 0) {
        raw_send(fd, payload, plen);
    }
}

/* True when the peer closes the connection within @timeout_ms. */
static int raw_closed(int fd, int timeout_ms)
{
    uint64_t deadline =
        dango_time_ns() + (uint64_t)timeout_ms * DANGO_NSEC_PER_MSEC;
    char scratch[4096];

    while (dango_time_ns() < deadline) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t       n;

        if (poll(&pfd, 1, 50) <= 0) {
            continue;
        }

        n = recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT);
        if ((n == 0) || ((n < 0) && (errno != EAGAIN) && (errno != EINTR))) {
            return 1;
        }
    }

    return 0;
}

static void raw_hello(int fd)
{
    Dango__Ctrl__Hello hello                       = DANGO__CTRL__HELLO__INIT;
    uint8_t            nonce[DANGO_AUTH_NONCE_LEN] = {9, 9, 9};
    uint8_t            buf[256];
    dango_frame_t      hdr;
    void              *payload = NULL;
    size_t             len;

    hello.version      = DANGO_FRAME_VERSION;
    hello.segment_name = "raw";
    hello.instance_id  = 5;
    hello.nonce.data   = nonce;
    hello.nonce.len    = sizeof(nonce);
    hello.target_name  = "";
    len                = dango__ctrl__hello__pack(&hello, buf);
    raw_frame(fd, DANGO_FRAME_HELLO, 0, 0, len, buf, len);
    assert_dango_ok(dango_sock_recv_frame(
        fd, &hdr, &payload, dango_time_ns() + 5 * DANGO_NSEC_PER_SEC));
    assert_int_equal(DANGO_FRAME_HELLO_ACK, hdr.type);
    dango_free(payload);
}

static void garbage_on_tcp_listener(void **state)
{
    target_t             t;
    target_opts_t        o = {0};
    dango_xfer_engine_t *eng;
    dango_segment_id_t   seg;
    char                *src = malloc(2 * MIB);
    uint8_t              junk[65536];
    int                  fd, before, after;

    (void)state;
    o.size = 4 * MIB;
    target_start(&t, &o);

    /*
     * Each case on its own connection; each must be closed by the target.
     * @logged: the frame check itself refuses it (exactly one error line).
     */
#define GARBAGE_CASE(_what, _logged, ...)                                      \
    do {                                                                       \
        before = target_errors(&t);                                            \
        fd     = raw_connect(t.listen);                                        \
        __VA_ARGS__;                                                           \
        if (!raw_closed(fd, 10000)) {                                          \
            fail_msg("%s: the target kept the connection open", _what);        \
        }                                                                      \
        close(fd);                                                             \
        after = target_errors(&t);                                             \
        print_message("garbage: %-28s closed, %d error line(s)\n", _what,      \
                      after - before);                                         \
        if ((_logged) && (after - before != 1)) {                              \
            fail_msg("%s: %d error lines, expected one", _what,                \
                     after - before);                                          \
        }                                                                      \
        assert_true(after - before <= 1);                                      \
    } while (0)

    GARBAGE_CASE("random bytes", 1, {
        fill(junk, sizeof(junk));
        junk[0] = 'x'; /* never the magic */
        raw_send(fd, junk, sizeof(junk));
    });
    GARBAGE_CASE("bad magic", 1, {
        dango_frame_t h;

        dango_frame_init(&h, DANGO_FRAME_HELLO, 0, 0, 0, 0);
        h.magic = 0x12345678;
        raw_send(fd, &h, sizeof(h));
    });
    GARBAGE_CASE("bad version", 1, {
        dango_frame_t h;

        dango_frame_init(&h, DANGO_FRAME_HELLO, 0, 0, 0, 0);
        h.version = 77;
        raw_send(fd, &h, sizeof(h));
    });
    GARBAGE_CASE("unknown type", 1, {
        dango_frame_t h;

        dango_frame_init(&h, DANGO_FRAME_HELLO, 0, 0, 0, 0);
        h.type = 200;
        raw_send(fd, &h, sizeof(h));
    });
    GARBAGE_CASE("reserved bits", 1, {
        dango_frame_t h;

        dango_frame_init(&h, DANGO_FRAME_HELLO, 0, 0, 0, 0);
        h.reserved = 1;
        raw_send(fd, &h, sizeof(h));
    });
    GARBAGE_CASE("huge hello", 1, {
        raw_frame(fd, DANGO_FRAME_HELLO, 0, 0, UINT64_MAX / 2, NULL, 0);
    });
    GARBAGE_CASE("hello over 1 MiB", 1, {
        raw_frame(fd, DANGO_FRAME_HELLO, 0, 0, DANGO_FRAME_CTRL_MAX + 1, NULL,
                  0);
    });
    GARBAGE_CASE("write before hello", 0, {
        raw_frame(fd, DANGO_FRAME_WRITE, 1, t.buf, 16, "0123456789abcdef", 16);
    });
    GARBAGE_CASE("read before hello", 0,
                 { raw_frame(fd, DANGO_FRAME_READ, 1, t.buf, 16, NULL, 0); });
    GARBAGE_CASE("notify before hello", 0,
                 { raw_frame(fd, DANGO_FRAME_NOTIFY, 1, 0, 4, "abcd", 4); });
    GARBAGE_CASE("hello with junk payload", 0, {
        fill(junk, 64);
        raw_frame(fd, DANGO_FRAME_HELLO, 0, 0, 64, junk, 64);
    });
    GARBAGE_CASE("hello twice", 0, {
        raw_hello(fd);
        {
            uint8_t            nonce[DANGO_AUTH_NONCE_LEN] = {1};
            Dango__Ctrl__Hello h2 = DANGO__CTRL__HELLO__INIT;
            uint8_t            b[128];
            size_t             l;

            h2.version    = DANGO_FRAME_VERSION;
            h2.nonce.data = nonce;
            h2.nonce.len  = sizeof(nonce);
            l             = dango__ctrl__hello__pack(&h2, b);
            raw_frame(fd, DANGO_FRAME_HELLO, 0, 0, l, b, l);
        }
    });
    GARBAGE_CASE("write of 1 GiB + 1", 1, {
        raw_hello(fd);
        raw_frame(fd, DANGO_FRAME_WRITE, 1, t.buf, DANGO_FRAME_DATA_MAX + 1,
                  NULL, 0);
    });
    GARBAGE_CASE("ack from an initiator", 0, {
        raw_hello(fd);
        raw_frame(fd, DANGO_FRAME_WRITE_ACK, 1, 0, 0, NULL, 0);
    });
    GARBAGE_CASE("payload on a desc request", 1, {
        raw_hello(fd);
        raw_frame(fd, DANGO_FRAME_DESC_REQ, 1, 0, 8, "12345678", 8);
    });
#undef GARBAGE_CASE

    /* Cut short: half a header, half a payload. */
    before = target_errors(&t);
    fd     = raw_connect(t.listen);
    raw_send(fd, "DGXF\x01\x01", 6);
    close(fd);
    fd = raw_connect(t.listen);
    raw_hello(fd);
    raw_frame(fd, DANGO_FRAME_WRITE, 1, t.buf + 4096, 65536, junk, 1000);
    close(fd);
    fd = raw_connect(t.listen);
    raw_hello(fd);
    raw_frame(fd, DANGO_FRAME_READ, 1, t.buf, 3 * MIB, NULL, 0);
    close(fd); /* never reads the reply */

    /* Refused write: acknowledged with the error, the connection lives on. */
    fd = raw_connect(t.listen);
    raw_hello(fd);
    {
        dango_frame_t hdr;
        void         *payload  = NULL;
        uint64_t      deadline = dango_time_ns() + 10 * DANGO_NSEC_PER_SEC;

        raw_frame(fd, DANGO_FRAME_WRITE, 41, 0x10000, sizeof(junk), junk,
                  sizeof(junk));
        assert_dango_ok(dango_sock_recv_frame(fd, &hdr, &payload, deadline));
        assert_int_equal(DANGO_FRAME_WRITE_ACK, hdr.type);
        assert_int_equal(41, hdr.id);
        assert_dango_err(DANGO_EREMOTE_ACCESS, hdr.status);
        raw_frame(fd, DANGO_FRAME_READ, 42, t.priv, 16, NULL, 0);
        assert_dango_ok(dango_sock_recv_frame(fd, &hdr, &payload, deadline));
        assert_int_equal(DANGO_FRAME_READ_RESP, hdr.type);
        assert_dango_err(DANGO_EREMOTE_ACCESS, hdr.status);
        assert_int_equal(0, hdr.length);
        raw_frame(fd, DANGO_FRAME_READ, 43, t.buf + 8, 16, NULL, 0);
        assert_dango_ok(dango_sock_recv_frame(fd, &hdr, &payload, deadline));
        assert_int_equal(DANGO_FRAME_READ_RESP, hdr.type);
        assert_int_equal(43, hdr.id);
        assert_int_equal(0, hdr.status);
        assert_int_equal(16, hdr.length);
        assert_int_equal(dango_hash64(payload, 16),
                         target_hash(&t, "buf", 8, 16));
        dango_free(payload);
    }

    close(fd);

    /* Many connections opened and dropped at once. */
    {
        int fds[64];

        for (int i = 0; i < 64; i++) {
            fds[i] = raw_connect(t.listen);
            if (i % 2) {
                raw_send(fds[i], junk, 100 + (size_t)i);
            }
        }

        for (int i = 0; i < 64; i++) {
            close(fds[i]);
        }
    }

    after = target_errors(&t);
    print_message("garbage: cut-short and burst cases: %d error line(s)\n",
                  after - before);

    /* Alive and serving. */
    assert_int_equal(0, waitpid(t.p.pid, NULL, WNOHANG));
    eng = engine_new(NULL, NULL, "tcp", 2, NULL);
    assert_dango_ok(dango_xfer_mem_register(eng, src, 2 * MIB, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, t.name, &seg));
    fill(src, MIB);
    assert_dango_ok(xfer1(eng, DANGO_XFER_OP_WRITE, src, seg, t.buf + 3, MIB));
    assert_dango_ok(
        xfer1(eng, DANGO_XFER_OP_READ, src + MIB, seg, t.buf + 3, MIB));
    assert_memory_equal(src, src + MIB, MIB);
    assert_int_equal(dango_hash64(src, MIB), target_hash(&t, "buf", 3, MIB));
    engine_done(eng);
    target_stop(&t);
    free(src);
}

/* ---------- (f) notifications ---------- */

static void notify_after_data(const char *tps)
{
    target_t             t;
    target_opts_t        o = {0};
    dango_xfer_engine_t *eng;
    dango_xfer_batch_t  *batch;
    dango_segment_id_t   seg;
    const size_t         len = 16 * MIB + 5;
    char                *src = malloc(len + 64);
    char                 msg[128], line[1024], from[300], text[600];
    uint64_t             h, got;

    o.transports = tps;
    o.segment    = NULL;
    target_start(&t, &o);
    eng = engine_new(NULL, NULL, tps, 2, NULL);
    assert_dango_ok(dango_xfer_mem_register(eng, src, len + 64, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, t.name, &seg));

    for (int round = 0; round < 4; round++) {
        dango_xfer_req_t w[4];
        uint64_t         off  = 1 + (uint64_t)round * 97;
        size_t           part = len / 4;

        fill(src, len);
        h = dango_hash64(src, len);
        for (int i = 0; i < 4; i++) {
            w[i] =
                (dango_xfer_req_t){DANGO_XFER_OP_WRITE, src + (size_t)i * part,
                                   seg, t.buf + off + (uint64_t)i * part,
                                   i == 3 ? len - 3 * part : part};
        }

        snprintf(msg, sizeof(msg), "check %llu %llu", (unsigned long long)off,
                 (unsigned long long)len);
        assert_dango_ok(dango_xfer_batch_create(eng, 4, &batch));
        assert_dango_ok(dango_xfer_batch_submit(batch, w, 4));
        assert_dango_ok(dango_xfer_batch_notify(batch, seg, msg, strlen(msg)));
        /* The target checks its memory the moment the message arrives. */
        next_notify(&t, line, sizeof(line), REPLY_TIMEOUT);
        assert_dango_ok(dango_xfer_batch_wait(batch, XFER_TIMEOUT));
        assert_dango_ok(dango_xfer_batch_destroy(batch));
        assert_int_equal(3, sscanf(line, "NOTIFY %299s %" SCNx64 " %599[^\n]",
                                   from, &got, text));
        assert_string_equal(msg, text);
        assert_string_equal(dango_xfer_engine_segment_name(eng), from);
        if (got != h) {
            fail_msg("%s: notification arrived before its data had landed",
                     tps);
        }
    }

    /* A failed request: no notification, and the batch reports the error. */
    {
        dango_xfer_req_t w[2] = {
            {DANGO_XFER_OP_WRITE, src, seg, t.buf, 4096},
            {DANGO_XFER_OP_WRITE, src, seg, t.buf + t.len - 1, 2}};

        assert_dango_ok(dango_xfer_batch_create(eng, 2, &batch));
        assert_dango_ok(dango_xfer_batch_submit(batch, w, 2));
        assert_dango_ok(
            dango_xfer_batch_notify(batch, seg, "must not arrive", 15));
        assert_dango_err(DANGO_EREMOTE_ACCESS,
                         dango_xfer_batch_wait(batch, XFER_TIMEOUT));
        assert_dango_ok(dango_xfer_batch_destroy(batch));
        assert_dango_ok(
            dango_xfer_notify_send(eng, seg, "sync", 4, XFER_TIMEOUT));
        next_notify(&t, line, sizeof(line), REPLY_TIMEOUT);
        assert_int_equal(3, sscanf(line, "NOTIFY %299s %" SCNx64 " %599[^\n]",
                                   from, &got, text));
        assert_string_equal("sync", text);
    }

    engine_done(eng);
    target_stop(&t);
    free(src);
}

static void notify_after_data_tcp(void **state)
{
    (void)state;
    notify_after_data("tcp");
}

static void notify_after_data_shm(void **state)
{
    (void)state;
    notify_after_data("shm,tcp");
}

/* ---------- (g) cluster token ---------- */

static int token_try(const char *md, const char *tps, const char *tgt_token,
                     const char *our_token, int *open_rc)
{
    target_t             t;
    target_opts_t        o = {0};
    dango_xfer_engine_t *eng;
    dango_segment_id_t   seg;
    char                 buf[4096];
    int                  rc;

    o.metadata   = md;
    o.segment    = md ? unique("tok-target") : NULL;
    o.transports = tps;
    o.token      = tgt_token;
    o.size       = MIB;
    target_start(&t, &o);
    if (our_token != NULL) {
        setenv("DANGO_CLUSTER_TOKEN", our_token, 1);
    } else {
        unsetenv("DANGO_CLUSTER_TOKEN");
    }

    eng = engine_new(md, md ? unique("tok-init") : NULL, tps, 1, NULL);
    unsetenv("DANGO_CLUSTER_TOKEN");
    assert_dango_ok(dango_xfer_mem_register(eng, buf, sizeof(buf), NULL, 0));
    *open_rc = dango_xfer_segment_open(eng, t.name, &seg);
    rc       = *open_rc;
    if (rc == 0) {
        fill(buf, sizeof(buf));
        rc = xfer1(eng, DANGO_XFER_OP_WRITE, buf, seg, t.buf + 1, sizeof(buf));
        if (rc == 0) {
            assert_int_equal(dango_hash64(buf, sizeof(buf)),
                             target_hash(&t, "buf", 1, sizeof(buf)));
        }
    }

    engine_done(eng);
    target_stop(&t);
    return rc;
}

static void token_p2p(void **state)
{
    int orc;

    (void)state;
    assert_dango_ok(token_try(NULL, "tcp", "alpha", "alpha", &orc));
    /* P2P: the descriptor exchange itself authenticates. */
    assert_dango_err(DANGO_EAUTH,
                     token_try(NULL, "tcp", "alpha", "beta", &orc));
    assert_dango_err(DANGO_EAUTH, orc);
    assert_dango_err(DANGO_EAUTH, token_try(NULL, "tcp", "alpha", NULL, &orc));
    assert_dango_err(DANGO_EAUTH, token_try(NULL, "tcp", NULL, "alpha", &orc));
}

static void token_http(void **state)
{
    const char *md = md_http();
    int         orc;

    (void)state;
    assert_dango_ok(token_try(md, "tcp", "alpha", "alpha", &orc));
    assert_dango_ok(token_try(md, "shm,tcp", "alpha", "alpha", &orc));
    /* The descriptor comes from the service; the transfer is refused. */
    assert_dango_err(DANGO_EAUTH, token_try(md, "tcp", "alpha", "beta", &orc));
    assert_dango_ok(orc);
    assert_dango_err(DANGO_EAUTH,
                     token_try(md, "shm,tcp", "alpha", "beta", &orc));
    assert_dango_err(DANGO_EAUTH,
                     token_try(md, "shm,tcp", "alpha", NULL, &orc));
    assert_dango_err(DANGO_EAUTH, token_try(md, "tcp", NULL, "alpha", &orc));
}

/* ---------- (h) threads ---------- */

typedef struct thread_arg {
    dango_xfer_engine_t *eng;
    dango_segment_id_t   seg;
    uint64_t             remote; /* this thread's part of the target */
    uint64_t             span;
    char                *src, *dst;
    uint64_t             seed;
    int                  rc;
    unsigned             batches;
    char                 why[160];
} thread_arg_t;

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void *thread_main(void *p)
{
    thread_arg_t       *a = p;
    dango_xfer_batch_t *batch;
    dango_xfer_req_t    w[8], r[8];

    if (dango_xfer_batch_create(a->eng, 8, &batch) != 0) {
        a->rc = DANGO_ENOMEM;
        return NULL;
    }

    for (unsigned it = 0; (it < a->batches) && (a->rc == 0); it++) {
        uint64_t off = rnd(&a->seed) % 4096;
        size_t   n   = 1 + rnd(&a->seed) % 8;

        for (size_t i = 0; i < n; i++) {
            uint64_t len = 1 + rnd(&a->seed) % (a->span / 8 - 4096);

            for (uint64_t k = 0; k < len; k += 8) {
                uint64_t v = rnd(&a->seed);

                memcpy(a->src + off + k, &v, len - k < 8 ? len - k : 8);
            }

            w[i] = (dango_xfer_req_t){DANGO_XFER_OP_WRITE, a->src + off, a->seg,
                                      a->remote + off, len};
            r[i] = (dango_xfer_req_t){DANGO_XFER_OP_READ, a->dst + off, a->seg,
                                      a->remote + off, len};
            off += len + rnd(&a->seed) % 64;
        }

        a->rc = dango_xfer_batch_submit(batch, w, n);
        a->rc = a->rc ? a->rc : dango_xfer_batch_wait(batch, XFER_TIMEOUT);
        a->rc = a->rc ? a->rc : dango_xfer_batch_reset(batch);
        a->rc = a->rc ? a->rc : dango_xfer_batch_submit(batch, r, n);
        a->rc = a->rc ? a->rc : dango_xfer_batch_wait(batch, XFER_TIMEOUT);
        a->rc = a->rc ? a->rc : dango_xfer_batch_reset(batch);
        if (a->rc != 0) {
            snprintf(a->why, sizeof(a->why), "batch %u: %s", it,
                     dango_err_name(a->rc));
            break;
        }

        for (size_t i = 0; i < n; i++) {
            if (memcmp(w[i].local_addr, r[i].local_addr, w[i].length) != 0) {
                snprintf(a->why, sizeof(a->why),
                         "batch %u request %zu: %llu bytes read back differ",
                         it, i, (unsigned long long)w[i].length);
                a->rc = DANGO_ECORRUPT;
            }
        }
    }

    if (dango_xfer_batch_wait(batch, XFER_TIMEOUT) == DANGO_ETIMEDOUT) {
        a->rc = DANGO_ETIMEDOUT;
        return NULL; /* leak rather than free a batch in flight */
    }

    dango_xfer_batch_destroy(batch);
    return NULL;
}

static void threads_many_batches(const char *tps, const char *expect_tp)
{
    target_t                  t;
    target_opts_t             o = {0};
    dango_xfer_engine_t      *eng;
    dango_xfer_segment_info_t info;
    dango_segment_id_t        seg;
    thread_arg_t              a[4];
    pthread_t                 th[4];
    const uint64_t            span = 4 * MIB;
    char                     *mem;

    o.transports = tps;
    o.size       = 4 * span;
    target_start(&t, &o);
    eng = engine_new(NULL, NULL, tps, 2, NULL);
    mem = malloc(8 * span);
    assert_non_null(mem);
    assert_dango_ok(dango_xfer_mem_register(eng, mem, 8 * span, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, t.name, &seg));
    assert_dango_ok(dango_xfer_segment_query(eng, seg, &info));
    assert_string_equal(expect_tp, info.transport);
    for (int i = 0; i < 4; i++) {
        a[i] = (thread_arg_t){.eng     = eng,
                              .seg     = seg,
                              .remote  = t.buf + (uint64_t)i * span,
                              .span    = span,
                              .src     = mem + 2 * i * span,
                              .dst     = mem + (2 * i + 1) * span,
                              .seed    = g_seed + (uint64_t)i,
                              .batches = 60};
        assert_int_equal(0, pthread_create(&th[i], NULL, thread_main, &a[i]));
    }

    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }

    for (int i = 0; i < 4; i++) {
        if (a[i].rc != 0) {
            fail_msg("%s thread %d: %s (seed %016llx)", tps, i, a[i].why,
                     (unsigned long long)g_seed);
        }
    }

    engine_done(eng);
    target_stop(&t);
    free(mem);
}

static void threads_many_batches_tcp(void **state)
{
    (void)state;
    threads_many_batches("tcp", "tcp");
}

static void threads_many_batches_shm(void **state)
{
    (void)state;
    threads_many_batches("shm,tcp", "shm");
}

/* ---------- (i) two emulated hosts ---------- */

static void netns_two_hosts(void **state)
{
    char      ns[2][64];
    char      line[512];
    char     *argv[16];
    target_t  t;
    it_proc_t r;
    int       status, a = 0, rc;

    (void)state;
    /* TEST-NET-1 addresses, only ever inside the two namespaces. */
    rc = it_netns_pair("dango-xfer", "192.0.2.1/24", "192.0.2.2/24", ns);
    if (rc > 0) {
        skip();
    }

    assert_int_equal(0, rc);

    /* Target on host A, P2P (no metadata service across hosts needed). */
    {
        target_opts_t o = {0};

        o.listen     = "192.0.2.1:0";
        o.transports = "shm,tcp";
        o.netns      = ns[0];
        o.size       = 32 * MIB;
        rc           = target_try_start(&t, &o);
        if (rc != 0) {
            fail_msg("netns: target did not start: %s", dango_err_name(rc));
        }
    }

    assert_true(strncmp(t.name, "192.0.2.1:", 10) == 0);
    /* Initiator on host B: shm must not be chosen (other host id). */
    argv[a++] = (char *)it_ip_path();
    argv[a++] = "netns";
    argv[a++] = "exec";
    argv[a++] = ns[1];
    argv[a++] = XFER_TARGET_PATH;
    argv[a++] = "--listen";
    argv[a++] = "192.0.2.2:0";
    argv[a++] = "--transports";
    argv[a++] = "shm,tcp";
    argv[a++] = "--initiate";
    argv[a++] = t.name;
    argv[a]   = NULL;
    it_proc_spawn(&r, argv, NULL);
    rc     = it_proc_read_line(&r, line, sizeof(line), 120000);
    status = it_proc_stop(&r, 30000);
    if (rc != 0) {
        fail_msg("netns: the initiator said nothing: %s", dango_err_name(rc));
    }

    print_message("netns: initiator: %s\n", line);
    assert_string_equal("PASS 7 tcp", line);
    assert_true(WIFEXITED(status) && (WEXITSTATUS(status) == 0));
    target_stop(&t);
    it_netns_cleanup();
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
#define T(_f) cmocka_unit_test_setup_teardown(_f, test_setup, test_teardown)
        T(roundtrip_p2p_tcp),
        T(roundtrip_p2p_shm),
        T(roundtrip_http_tcp),
        T(roundtrip_http_shm),
        T(file_segment_roundtrip),
        T(fault_target_killed_tcp),
        T(fault_target_killed_shm),
        T(access_refused_tcp),
        T(access_refused_shm),
        T(garbage_on_tcp_listener),
        T(notify_after_data_tcp),
        T(notify_after_data_shm),
        T(token_p2p),
        T(token_http),
        T(threads_many_batches_tcp),
        T(threads_many_batches_shm),
        T(netns_two_hosts),
#undef T
    };

    signal(SIGPIPE, SIG_IGN);
    it_ip_path();
    dango_test_quiet_logs();
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
