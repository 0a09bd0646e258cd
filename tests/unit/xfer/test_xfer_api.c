/*
 * Transfer engine API: every public function's error paths, with the exact
 * code asserted (STYLE.md C.9), loopback copies through the local segment,
 * notifications between two engines of this process, and an OOM walk over
 * dango_xfer_engine_create().
 *
 * Requests that must stay in flight for a deterministic check (wait
 * timeout, reset/destroy refused, unregister refused) go to a "mute peer":
 * a listening socket of this test, published under a fake descriptor in the
 * mem:// metadata table, that never accepts. The initiator connects (the
 * kernel completes the handshake from the backlog), says Hello and waits
 * for an answer that never comes, so the request stays in flight until the
 * test closes the socket. Nothing depends on timing but the generous
 * connect timeout set in the engine's configuration.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/config.h>
#include <dango/metadata.h>
#include <dango/xfer.h>
#include "common/alloc.h"
#include "common/hash.h"
#include "common/time.h"
#include "net/auth.h"
#include "net/frame.h"
#include "net/sock.h"
#include "dango_ctrl.pb-c.h"

#define KEY_PREFIX "dango/default/xfer/segments/"

static unsigned test_seq;

/* A fresh mem:// table name for each test: tables are process-wide. */
static void md_name(char *buf, size_t len)
{
    snprintf(buf, len, "mem://xfer-api-%d-%u", (int)getpid(), ++test_seq);
}

static int engine_new(const char *md, const char *name, const char *tps,
                      const dango_config_t *cfg, dango_xfer_engine_t **eng_p)
{
    dango_xfer_engine_params_t p = {0};

    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS;
    p.metadata    = md;
    p.listen_addr = "127.0.0.1:0";
    p.num_workers = 1;
    if (name != NULL) {
        p.field_mask |= DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME;
        p.segment_name = name;
    }

    if (tps != NULL) {
        p.field_mask |= DANGO_XFER_ENGINE_PARAM_TRANSPORTS;
        p.transports = tps;
    }

    return dango_xfer_engine_create(&p, cfg, eng_p);
}

/* An engine on its own mem:// table, named "self". */
static dango_xfer_engine_t *engine_solo(void)
{
    dango_xfer_engine_t *eng = NULL;
    char                 md[64];

    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "self", "tcp", NULL, &eng));
    return eng;
}

static int create_with(const dango_xfer_engine_params_t *p)
{
    dango_xfer_engine_t *eng = NULL;
    int                  rc  = dango_xfer_engine_create(p, NULL, &eng);

    if (rc == 0) {
        dango_xfer_engine_destroy(eng);
    } else {
        assert_null(eng); /* set on success only */
    }

    return rc;
}

static void fill_random(void *buf, size_t len)
{
    assert_dango_ok(dango_random_bytes(buf, len));
}

/* ---------- the mute peer ---------- */

typedef struct mute_peer {
    int         fd; /* listening, never accepting */
    char        addr[64];
    dango_md_t *md;
    char        key[128];
} mute_peer_t;

static void mute_peer_start(mute_peer_t *mp, const char *md, const char *name)
{
    char desc[512];
    int  n;

    mp->fd = dango_sock_listen("127.0.0.1:0", 16);
    assert_true(mp->fd >= 0);
    assert_dango_ok(dango_sock_local_addr(mp->fd, mp->addr, sizeof(mp->addr)));
    n = snprintf(desc, sizeof(desc),
                 "{\"name\":\"%s\",\"instance\":\"00000000000000a1\","
                 "\"host_id\":\"mute-host\",\"version\":1,"
                 "\"transports\":{\"tcp\":{\"endpoints\":[\"%s\"],"
                 "\"version\":1}},"
                 "\"buffers\":[{\"addr\":65536,\"length\":1048576,"
                 "\"remote\":true,\"shm\":false}]}",
                 name, mp->addr);
    assert_true((n > 0) && ((size_t)n < sizeof(desc)));
    snprintf(mp->key, sizeof(mp->key), KEY_PREFIX "%s", name);
    assert_dango_ok(dango_md_open(md, NULL, &mp->md));
    assert_dango_ok(dango_md_put(mp->md, mp->key, desc, strlen(desc), 0));
}

static void mute_peer_stop(mute_peer_t *mp)
{
    if (mp->fd >= 0) {
        close(mp->fd); /* resets every connection still in the backlog */
        mp->fd = -1;
    }

    if (mp->md != NULL) {
        dango_md_delete(mp->md, mp->key);
        dango_md_close(mp->md);
        mp->md = NULL;
    }
}

/* Configuration that keeps a request to a mute peer in flight for long. */
static dango_config_t *patient_config(void)
{
    dango_config_t *cfg = NULL;

    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "TCP_CONNECT_TIMEOUT", "60s"));
    assert_dango_ok(dango_config_set(cfg, "TCP_IO_TIMEOUT", "60s"));
    return cfg;
}

/* ---------- engine_create ---------- */

static void engine_create_rejects_bad_params(void **state)
{
    dango_xfer_engine_params_t p = {0};
    char                       longname[DANGO_XFER_NAME_MAX + 2];
    char                       md[64];

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_err(DANGO_EINVAL, dango_xfer_engine_create(NULL, NULL, NULL));

    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS |
                   DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME;
    p.metadata     = md;
    p.listen_addr  = "127.0.0.1:0";
    p.segment_name = "params";
    p.num_workers  = 0;
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.num_workers = 65;
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.num_workers = 64;
    assert_dango_ok(create_with(&p)); /* the upper bound itself works */
    p.num_workers = 1;

    p.listen_addr = "nonsense:x";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.listen_addr = "127.0.0.1:70000";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.listen_addr = "";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.listen_addr = "127.0.0.1:0";

    p.field_mask |= DANGO_XFER_ENGINE_PARAM_TRANSPORTS;
    p.transports = "foo";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.transports = "shm,foo";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.transports = "tcp";

    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    p.segment_name                 = longname; /* 256 bytes: one too many */
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    longname[DANGO_XFER_NAME_MAX] = '\0'; /* 255: the longest allowed */
    assert_dango_ok(create_with(&p));
    p.segment_name = "file://x";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.segment_name = ""; /* documented: an empty name is malformed */
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.segment_name = "params";

    p.metadata = "bogus://x";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.metadata = "";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.metadata = md;
    assert_dango_ok(create_with(&p));

    /* P2P: the name is the listen address, so it must be dialable. */
    p.metadata    = DANGO_XFER_P2PHANDSHAKE;
    p.listen_addr = "0.0.0.0:0";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
    p.listen_addr = "0.0.0.0:15999";
    assert_dango_err(DANGO_EINVAL, create_with(&p));
}

static void engine_create_mem_metadata_and_names(void **state)
{
    dango_xfer_engine_t *eng = NULL;
    char                 md[64], buf[64], tiny[4];

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "named", NULL, NULL, &eng));
    assert_string_equal("named", dango_xfer_engine_segment_name(eng));
    assert_dango_ok(dango_xfer_engine_listen_addr(eng, buf, sizeof(buf)));
    assert_true(strncmp(buf, "127.0.0.1:", 10) == 0);
    assert_dango_err(DANGO_ERANGE,
                     dango_xfer_engine_listen_addr(eng, tiny, sizeof(tiny)));
    dango_xfer_engine_destroy(eng);
    dango_xfer_engine_destroy(NULL); /* ignored */

    /* P2P: the segment name is rewritten to the listen address. */
    {
        dango_xfer_engine_params_t p = {0};

        p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                       DANGO_XFER_ENGINE_PARAM_LISTEN |
                       DANGO_XFER_ENGINE_PARAM_NUM_WORKERS;
        p.metadata    = DANGO_XFER_P2PHANDSHAKE;
        p.listen_addr = "127.0.0.1:0";
        p.num_workers = 1;
        assert_dango_ok(dango_xfer_engine_create(&p, NULL, &eng));
        assert_dango_ok(dango_xfer_engine_listen_addr(eng, buf, sizeof(buf)));
        assert_string_equal(buf, dango_xfer_engine_segment_name(eng));
        dango_xfer_engine_destroy(eng);
    }
}

static void engine_create_address_in_use(void **state)
{
    dango_xfer_engine_t       *a = NULL, *b = NULL;
    dango_xfer_engine_params_t p = {0};
    char                       md[64], addr[64];

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "first", "tcp", NULL, &a));
    assert_dango_ok(dango_xfer_engine_listen_addr(a, addr, sizeof(addr)));

    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS |
                   DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME;
    p.metadata     = md;
    p.listen_addr  = addr;
    p.num_workers  = 1;
    p.segment_name = "second";
    assert_dango_err(DANGO_EADDRINUSE, dango_xfer_engine_create(&p, NULL, &b));
    assert_null(b);
    p.metadata = DANGO_XFER_P2PHANDSHAKE;
    assert_dango_err(DANGO_EADDRINUSE, dango_xfer_engine_create(&p, NULL, &b));
    assert_null(b);
    dango_xfer_engine_destroy(a);
}

static void engine_create_name_taken(void **state)
{
    dango_xfer_engine_t *a = NULL, *b = NULL;
    dango_md_t          *md_h;
    char                 md[64];
    const char          *leftover =
        "{\"name\":\"dup\",\"instance\":\"0000000000000003\","
        "\"host_id\":\"gone\",\"transports\":{\"tcp\":{\"endpoints\":"
        "[\"127.0.0.1:1\"]}},\"buffers\":[]}";

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "dup", "tcp", NULL, &a));
    /* A live engine publishes "dup": a second one must not replace it. */
    assert_dango_err(DANGO_EEXIST, engine_new(md, "dup", "tcp", NULL, &b));
    assert_null(b);
    dango_xfer_engine_destroy(a);

    /* Its name is free again once it is gone... */
    assert_dango_ok(engine_new(md, "dup", "tcp", NULL, &a));
    dango_xfer_engine_destroy(a);

    /* ...and a leftover descriptor of a dead engine does not block it. */
    assert_dango_ok(dango_md_open(md, NULL, &md_h));
    assert_dango_ok(
        dango_md_put(md_h, KEY_PREFIX "dup", leftover, strlen(leftover), 0));
    assert_dango_ok(engine_new(md, "dup", "tcp", NULL, &a));
    dango_xfer_engine_destroy(a);
    dango_md_close(md_h);
}

static void engine_create_bad_config_and_metadata(void **state)
{
    dango_xfer_engine_t       *eng = NULL;
    dango_xfer_engine_params_t p   = {0};
    dango_config_t            *cfg = NULL;
    char                       md[64];

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "TCP_CONNS_PER_PEER", "0"));
    assert_dango_err(DANGO_ECONFIG, engine_new(md, "cfg", "tcp", cfg, &eng));
    assert_null(eng);
    dango_config_release(cfg);

    /* P2P with port 0 probes XFER_P2P_PORTS, which must parse. */
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "XFER_P2P_PORTS", "9-3"));
    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS;
    p.metadata    = DANGO_XFER_P2PHANDSHAKE;
    p.listen_addr = "127.0.0.1:0";
    p.num_workers = 1;
    assert_dango_err(DANGO_ECONFIG, dango_xfer_engine_create(&p, cfg, &eng));
    assert_null(eng);
    dango_config_release(cfg);

    /* Nothing listens on 127.0.0.1:1: the service cannot be reached. */
    assert_dango_err(DANGO_EMETADATA, engine_new("http://127.0.0.1:1/metadata",
                                                 "nomd", "tcp", NULL, &eng));
    assert_null(eng);
}

/* ---------- memory ---------- */

static void mem_register_errors(void **state)
{
    dango_xfer_engine_t *eng = engine_solo();
    char                *buf = malloc(8192);

    (void)state;
    assert_non_null(buf);
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_register(eng, NULL, 10, "*", 0));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_register(eng, buf, 0, "*", 0));
    assert_dango_err(
        DANGO_EINVAL,
        dango_xfer_mem_register(eng, (void *)(UINTPTR_MAX - 15), 64, "*", 0));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_register(eng, buf, 64, "*", 1u << 7));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_register(eng, buf, 64, "gpu", 0));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_register(eng, buf, 64, "cpu:", 0));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_register(eng, buf, 64, "cpu:-1", 0));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_register(eng, buf, 64, "cpu:0x", 0));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_register(eng, buf, 64, "cpu:999", 0));
    assert_dango_err(DANGO_ENOTSUP,
                     dango_xfer_mem_register(eng, buf, 64, "cuda:0", 0));

    /* [buf+1024, buf+2048) registered; everything touching it overlaps. */
    assert_dango_ok(dango_xfer_mem_register(eng, buf + 1024, 1024, "cpu:0", 0));
    assert_dango_err(DANGO_EOVERLAP,
                     dango_xfer_mem_register(eng, buf + 1024, 1024, NULL, 0));
    assert_dango_err(DANGO_EOVERLAP,
                     dango_xfer_mem_register(eng, buf + 512, 513, NULL, 0));
    assert_dango_err(DANGO_EOVERLAP,
                     dango_xfer_mem_register(eng, buf + 2047, 10, NULL, 0));
    assert_dango_err(DANGO_EOVERLAP,
                     dango_xfer_mem_register(eng, buf + 1500, 1, NULL, 0));
    assert_dango_err(DANGO_EOVERLAP,
                     dango_xfer_mem_register(eng, buf, 4096, NULL, 0));
    /* Adjacent on both sides is fine. */
    assert_dango_ok(dango_xfer_mem_register(eng, buf + 512, 512, NULL, 0));
    assert_dango_ok(dango_xfer_mem_register(eng, buf + 2048, 512, "*",
                                            DANGO_XFER_MEM_REMOTE));

    /* Unregister: only at a region start; alloc'd memory is refused. */
    assert_dango_err(DANGO_EINVAL, dango_xfer_mem_unregister(eng, NULL));
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_unregister(eng, buf));
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_unregister(eng, buf + 1025));
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_free(eng, buf + 1024));
    assert_dango_ok(dango_xfer_mem_unregister(eng, buf + 1024));
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_unregister(eng, buf + 1024));
    assert_dango_ok(dango_xfer_mem_unregister(eng, buf + 512));
    assert_dango_ok(dango_xfer_mem_unregister(eng, buf + 2048));
    /* Everything is free again. */
    assert_dango_ok(dango_xfer_mem_register(eng, buf, 8192, NULL, 0));
    assert_dango_ok(dango_xfer_mem_unregister(eng, buf));

    dango_xfer_engine_destroy(eng);
    free(buf);
}

static void mem_alloc_errors(void **state)
{
    dango_xfer_engine_t *eng = engine_solo();
    void                *p = NULL, *q = NULL;
    char                *buf = malloc(4096);
    uint64_t             addr, len;

    (void)state;
    assert_dango_err(DANGO_EINVAL, dango_xfer_mem_alloc(eng, 0, "*", 0, &p));
    assert_dango_err(DANGO_EINVAL, dango_xfer_mem_alloc(eng, 16, "*", 0, NULL));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_alloc(eng, SIZE_MAX, "*", 0, &p));
    assert_dango_err(DANGO_EINVAL, dango_xfer_mem_alloc(eng, 16, "gpu", 0, &p));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_alloc(eng, 16, "cpu:999", 0, &p));
    assert_dango_err(DANGO_ENOTSUP,
                     dango_xfer_mem_alloc(eng, 16, "cuda:0", 0, &p));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_mem_alloc(eng, 16, "*", 1u << 9, &p));
    assert_null(p); /* set on success only */

    assert_dango_ok(
        dango_xfer_mem_alloc(eng, 100, "*", DANGO_XFER_MEM_REMOTE, &p));
    assert_dango_ok(dango_xfer_mem_alloc(eng, 100, "cpu:0", 0, &q));
    memset(p, 0x5a, 100); /* usable */
    assert_dango_ok(dango_xfer_segment_buffer(eng, DANGO_XFER_LOCAL_SEGMENT, 0,
                                              &addr, &len));
    assert_int_equal((uintptr_t)p, addr);
    assert_true(len >= 100);
    /* Registered over it: overlap. */
    assert_dango_err(DANGO_EOVERLAP,
                     dango_xfer_mem_register(eng, p, 10, NULL, 0));
    assert_dango_err(DANGO_EINVAL, dango_xfer_mem_unregister(eng, p));
    assert_dango_ok(dango_xfer_mem_register(eng, buf, 4096, NULL, 0));
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_free(eng, buf));
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_free(eng, (char *)p + 1));
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_free(eng, (void *)0x1000));
    assert_dango_ok(dango_xfer_mem_free(eng, p));
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_free(eng, p));
    assert_dango_err(DANGO_ENOENT,
                     dango_xfer_segment_buffer(eng, DANGO_XFER_LOCAL_SEGMENT, 0,
                                               &addr, &len));
    /* q stays allocated: engine destroy frees it. */
    dango_xfer_engine_destroy(eng);
    free(buf);
}

/*
 * A peer access in progress pins a region: unregister waits at most
 * XFER_UNREGISTER_TIMEOUT, then gives DANGO_EBUSY and keeps the region.
 * The "peer" is a raw connection of this test that says Hello and sends a
 * WRITE header with only part of its payload; the payload lands straight in
 * the region, which is how the test knows the pin is held.
 */
static int raw_hello(int fd)
{
    Dango__Ctrl__Hello hello                       = DANGO__CTRL__HELLO__INIT;
    uint8_t            nonce[DANGO_AUTH_NONCE_LEN] = {1};
    uint8_t            buf[256];
    dango_frame_t      hdr;
    void              *payload  = NULL;
    uint64_t           deadline = dango_time_ns() + 5 * DANGO_NSEC_PER_SEC;
    size_t             len;
    int                rc;

    hello.version      = DANGO_FRAME_VERSION;
    hello.segment_name = "raw";
    hello.instance_id  = 7;
    hello.nonce.data   = nonce;
    hello.nonce.len    = sizeof(nonce);
    hello.target_name  = "";
    len                = dango__ctrl__hello__pack(&hello, buf);
    dango_frame_init(&hdr, DANGO_FRAME_HELLO, 0, 0, len, 0);
    rc = dango_sock_send_frame(fd, &hdr, buf, len, deadline);
    if (rc == 0) {
        rc = dango_sock_recv_frame(fd, &hdr, &payload, deadline);
    }

    if ((rc == 0) && (hdr.type != DANGO_FRAME_HELLO_ACK)) {
        rc = DANGO_EPROTO;
    }

    dango_free(payload);
    return rc;
}

typedef struct unregister_arg {
    dango_xfer_engine_t *eng;
    void                *addr;
    int                  running; /* atomic */
    int                  rc;
} unregister_arg_t;

static void *unregister_thread(void *p)
{
    unregister_arg_t *a = p;

    a->rc = dango_xfer_mem_unregister(a->eng, a->addr);
    __atomic_store_n(&a->running, 0, __ATOMIC_RELEASE);
    return NULL;
}

static void mem_unregister_busy_while_peer_writes(void **state)
{
    dango_xfer_engine_t *eng;
    dango_config_t      *cfg = NULL;
    dango_frame_t        hdr;
    char                 md[64], addr[64], part[100];
    void                *region;
    uint64_t             deadline;
    int                  fd, rc;

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "XFER_UNREGISTER_TIMEOUT", "300ms"));
    assert_dango_ok(engine_new(md, "pinned", "tcp", cfg, &eng));
    dango_config_release(cfg);
    region = aligned_alloc(4096, 1 << 20);
    assert_non_null(region);
    memset(region, 0, 1 << 20);
    assert_dango_ok(dango_xfer_mem_register(eng, region, 1 << 20, "*",
                                            DANGO_XFER_MEM_REMOTE));

    assert_dango_ok(dango_xfer_engine_listen_addr(eng, addr, sizeof(addr)));
    fd = dango_sock_connect(addr, 5 * DANGO_NSEC_PER_SEC, 0);
    assert_true(fd >= 0);
    assert_dango_ok(raw_hello(fd));
    memset(part, 0xab, sizeof(part));
    dango_frame_init(&hdr, DANGO_FRAME_WRITE, 1, (uintptr_t)region + 4096,
                     65536, 0);
    deadline = dango_time_ns() + 5 * DANGO_NSEC_PER_SEC;
    assert_dango_ok(dango_sock_send_all(fd, &hdr, sizeof(hdr), deadline));
    assert_dango_ok(dango_sock_send_all(fd, part, sizeof(part), deadline));
    /* Wait (bounded) until the partial payload is in the region. */
    while (memcmp((char *)region + 4096, part, sizeof(part)) != 0) {
        struct timespec ts = {0, 1000000};

        assert_true(dango_time_ns() < deadline);
        nanosleep(&ts, NULL);
    }

    assert_dango_err(DANGO_EBUSY, dango_xfer_mem_unregister(eng, region));
    /* Still registered. */
    assert_dango_err(DANGO_EOVERLAP,
                     dango_xfer_mem_register(eng, region, 4096, NULL, 0));

    /*
     * While an unregister waits for the peer, the region still occupies its
     * range: a registration overlapping it is refused all along, and when
     * the wait gives up the region is registered as before.
     */
    {
        unregister_arg_t ua = {eng, region, 1, 0};
        pthread_t        th;
        int              stolen = 0;

        assert_int_equal(0, pthread_create(&th, NULL, unregister_thread, &ua));
        while (__atomic_load_n(&ua.running, __ATOMIC_ACQUIRE)) {
            rc = dango_xfer_mem_register(eng, (char *)region + 8192, 16, NULL,
                                         0);
            if (rc == 0) {
                stolen++;
                assert_dango_ok(
                    dango_xfer_mem_unregister(eng, (char *)region + 8192));
            } else {
                assert_dango_err(DANGO_EOVERLAP, rc);
            }
        }

        pthread_join(th, NULL);
        assert_dango_err(DANGO_EBUSY, ua.rc);
        if (stolen > 0) {
            fail_msg("memory being unregistered was registered again %d "
                     "time(s) while a peer still wrote into it",
                     stolen);
        }

        assert_dango_err(DANGO_EOVERLAP,
                         dango_xfer_mem_register(eng, region, 4096, NULL, 0));
        {
            uint64_t a, l;

            assert_dango_ok(dango_xfer_segment_buffer(
                eng, DANGO_XFER_LOCAL_SEGMENT, 0, &a, &l));
            assert_int_equal((uintptr_t)region, a);
        }
    }

    close(fd);
    /* The connection's close releases the pin. */
    deadline = dango_time_ns() + 10 * DANGO_NSEC_PER_SEC;
    while ((rc = dango_xfer_mem_unregister(eng, region)) == DANGO_EBUSY) {
        assert_true(dango_time_ns() < deadline);
    }

    assert_dango_ok(rc);
    dango_xfer_engine_destroy(eng);
    free(region);
}

static void mem_register_publish_failure(void **state)
{
    dango_md_server_t   *srv;
    dango_xfer_engine_t *eng;
    char                 md[96];
    char                *region = malloc(4096);

    (void)state;
    assert_dango_ok(dango_md_server_start("127.0.0.1:0", &srv));
    snprintf(md, sizeof(md), "http://127.0.0.1:%d/metadata",
             dango_md_server_port(srv));
    assert_dango_ok(engine_new(md, "unpublished", "tcp", NULL, &eng));
    dango_md_server_stop(srv);
    /* Local-only memory is not published: no service needed. */
    assert_dango_ok(dango_xfer_mem_register(eng, region, 1024, NULL, 0));
    assert_dango_ok(dango_xfer_mem_unregister(eng, region));
    assert_dango_err(DANGO_EMETADATA,
                     dango_xfer_mem_register(eng, region, 1024, NULL,
                                             DANGO_XFER_MEM_REMOTE));
    /* Not registered: nothing to unregister, and the range is free. */
    assert_dango_err(DANGO_ENOENT, dango_xfer_mem_unregister(eng, region));
    assert_dango_ok(dango_xfer_mem_register(eng, region, 1024, NULL, 0));
    assert_dango_ok(dango_xfer_mem_unregister(eng, region));
    dango_xfer_engine_destroy(eng);
    free(region);
}

/* ---------- segments ---------- */

static void segment_open_errors(void **state)
{
    dango_xfer_engine_t *eng = NULL, *peer = NULL;
    dango_md_t          *md_h;
    dango_segment_id_t   id = -5, id2 = -5;
    char                 md[64], longname[DANGO_XFER_NAME_MAX + 2];
    char                *longfile;

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "opener", "tcp", NULL, &eng));
    assert_dango_err(DANGO_EINVAL, dango_xfer_segment_open(eng, "", &id));
    assert_dango_err(DANGO_EINVAL, dango_xfer_segment_open(eng, NULL, &id));
    assert_dango_err(DANGO_EINVAL, dango_xfer_segment_open(eng, "x", NULL));
    memset(longname, 'q', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_dango_err(DANGO_EINVAL, dango_xfer_segment_open(eng, longname, &id));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_segment_open(eng, "file://", &id));
    longfile = malloc(5000);
    memcpy(longfile, "file:///tmp/", 12);
    memset(longfile + 12, 'f', 5000 - 13);
    longfile[4999] = '\0';
    assert_dango_err(DANGO_EINVAL, dango_xfer_segment_open(eng, longfile, &id));
    free(longfile);
    assert_dango_err(DANGO_ENOENT, dango_xfer_segment_open(eng, "nobody", &id));
    assert_dango_err(DANGO_ENOENT,
                     dango_xfer_segment_open(eng,
                                             "file:///nonexistent-dir-"
                                             "dango/seg",
                                             &id));
    assert_int_equal(-5, id); /* untouched on failure */

    /* A descriptor that does not parse. */
    assert_dango_ok(dango_md_open(md, NULL, &md_h));
    assert_dango_ok(
        dango_md_put(md_h, KEY_PREFIX "garbage", "{not json", 9, 0));
    assert_dango_ok(dango_md_put(md_h, KEY_PREFIX "partial",
                                 "{\"name\":\"partial\"}", 18, 0));
    assert_dango_err(DANGO_ECORRUPT,
                     dango_xfer_segment_open(eng, "garbage", &id));
    assert_dango_err(DANGO_ECORRUPT,
                     dango_xfer_segment_open(eng, "partial", &id));
    dango_md_close(md_h);

    /* The engine's own name is the local segment. */
    assert_dango_ok(dango_xfer_segment_open(eng, "opener", &id));
    assert_int_equal(DANGO_XFER_LOCAL_SEGMENT, id);

    /* Opening an open name again gives the same id. */
    assert_dango_ok(engine_new(md, "peer", "tcp", NULL, &peer));
    assert_dango_ok(dango_xfer_segment_open(eng, "peer", &id));
    assert_true(id > 0);
    assert_dango_ok(dango_xfer_segment_open(eng, "peer", &id2));
    assert_int_equal(id, id2);

    dango_xfer_engine_destroy(eng);
    dango_xfer_engine_destroy(peer);
}

static void segment_open_p2p_peer_gone(void **state)
{
    dango_xfer_engine_t       *eng = NULL;
    dango_xfer_engine_params_t p   = {0};
    dango_config_t            *cfg = NULL;
    dango_segment_id_t         id;
    char                       addr[64];
    uint64_t                   t0;
    int                        mute;

    (void)state;
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "XFER_OPEN_TIMEOUT", "300ms"));
    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS;
    p.metadata    = DANGO_XFER_P2PHANDSHAKE;
    p.listen_addr = "127.0.0.1:0";
    p.num_workers = 1;
    assert_dango_ok(dango_xfer_engine_create(&p, cfg, &eng));
    dango_config_release(cfg);

    /* Nothing listens there. */
    assert_dango_err(DANGO_EPEER_GONE,
                     dango_xfer_segment_open(eng, "127.0.0.1:1", &id));
    /* Not an address at all. */
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_segment_open(eng, "no-port-here:x", &id));

    /* Something listens but never answers: bounded by XFER_OPEN_TIMEOUT. */
    mute = dango_sock_listen("127.0.0.1:0", 4);
    assert_true(mute >= 0);
    assert_dango_ok(dango_sock_local_addr(mute, addr, sizeof(addr)));
    t0 = dango_time_ns();
    assert_dango_err(DANGO_EPEER_GONE, dango_xfer_segment_open(eng, addr, &id));
    assert_true(dango_time_ns() - t0 < 5 * DANGO_NSEC_PER_SEC);
    close(mute);
    dango_xfer_engine_destroy(eng);
}

static void segment_close_query_buffer(void **state)
{
    dango_xfer_engine_t      *eng = NULL, *peer = NULL;
    dango_xfer_segment_info_t info;
    dango_xfer_batch_t       *batch;
    dango_segment_id_t        id, id2;
    uint64_t                  addr, len;
    void                     *pbuf, *local;
    char                      md[64];

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "closer", "tcp", NULL, &eng));
    assert_dango_ok(engine_new(md, "closee", "tcp", NULL, &peer));
    assert_dango_ok(
        dango_xfer_mem_alloc(peer, 8192, "*", DANGO_XFER_MEM_REMOTE, &pbuf));
    assert_dango_ok(dango_xfer_mem_alloc(eng, 8192, "*", 0, &local));

    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_segment_close(eng, DANGO_XFER_LOCAL_SEGMENT));
    assert_dango_err(DANGO_ENOENT, dango_xfer_segment_close(eng, 999));
    assert_dango_err(DANGO_ENOENT, dango_xfer_segment_close(eng, -3));
    assert_dango_err(DANGO_ENOENT, dango_xfer_segment_query(eng, 999, &info));
    assert_dango_err(DANGO_ENOENT,
                     dango_xfer_segment_buffer(eng, 999, 0, &addr, &len));
    assert_dango_err(DANGO_EINVAL, dango_xfer_segment_query(eng, 0, NULL));

    /* The local segment. */
    assert_dango_ok(
        dango_xfer_segment_query(eng, DANGO_XFER_LOCAL_SEGMENT, &info));
    assert_string_equal("closer", info.name);
    assert_string_equal("local", info.transport);
    assert_int_equal(0, info.num_buffers); /* local-only memory is private */
    assert_true(info.instance_id != 0);
    assert_dango_err(DANGO_ENOENT,
                     dango_xfer_segment_buffer(eng, DANGO_XFER_LOCAL_SEGMENT, 0,
                                               &addr, &len));
    assert_dango_ok(
        dango_xfer_segment_query(peer, DANGO_XFER_LOCAL_SEGMENT, &info));
    assert_int_equal(1, info.num_buffers);

    /* A peer. */
    assert_dango_ok(dango_xfer_segment_open(eng, "closee", &id));
    assert_dango_ok(dango_xfer_segment_query(eng, id, &info));
    assert_string_equal("closee", info.name);
    assert_string_equal("tcp", info.transport);
    assert_int_equal(1, info.num_buffers);
    assert_dango_ok(dango_xfer_segment_buffer(eng, id, 0, &addr, &len));
    assert_int_equal((uintptr_t)pbuf, addr);
    assert_int_equal(8192, len);
    assert_dango_err(DANGO_ENOENT,
                     dango_xfer_segment_buffer(eng, id, 1, &addr, &len));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_segment_buffer(eng, id, 0, NULL, &len));

    /* Closed: every use of the id is refused, a reopen gives it back. */
    assert_dango_ok(dango_xfer_segment_close(eng, id));
    assert_dango_err(DANGO_ENOENT, dango_xfer_segment_close(eng, id));
    assert_dango_err(DANGO_ENOENT, dango_xfer_segment_query(eng, id, &info));
    assert_dango_ok(dango_xfer_batch_create(eng, 4, &batch));
    {
        dango_xfer_req_t r = {DANGO_XFER_OP_WRITE, local, id, (uintptr_t)pbuf,
                              64};

        assert_dango_err(DANGO_ENOENT, dango_xfer_batch_submit(batch, &r, 1));
        assert_dango_err(DANGO_ENOENT,
                         dango_xfer_batch_notify(batch, id, "x", 1));
        assert_dango_err(DANGO_ENOENT,
                         dango_xfer_notify_send(eng, id, "x", 1, 1000));
        assert_dango_ok(dango_xfer_segment_open(eng, "closee", &id2));
        assert_int_equal(id, id2);
        memset(local, 0x77, 64);
        assert_dango_ok(dango_xfer_batch_submit(batch, &r, 1));
        assert_dango_ok(dango_xfer_batch_wait(batch, 10000));
        assert_memory_equal(local, pbuf, 64);
    }

    assert_dango_ok(dango_xfer_batch_destroy(batch));
    dango_xfer_engine_destroy(eng);
    dango_xfer_engine_destroy(peer);
}

/* Buffers are enumerated in registration order, not address order. */
static void segment_buffer_registration_order(void **state)
{
    dango_xfer_engine_t      *eng = NULL, *peer = NULL;
    dango_xfer_segment_info_t info;
    dango_segment_id_t        id;
    uint64_t                  addr, len;
    char                     *mem = malloc(3 * 4096);
    char                      md[64];

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "order-peer", "tcp", NULL, &peer));
    /* Highest address first, then the lowest, then the middle. */
    assert_dango_ok(dango_xfer_mem_register(peer, mem + 8192, 4096, NULL,
                                            DANGO_XFER_MEM_REMOTE));
    assert_dango_ok(
        dango_xfer_mem_register(peer, mem, 4096, NULL, DANGO_XFER_MEM_REMOTE));
    assert_dango_ok(dango_xfer_mem_register(peer, mem + 4096, 100, NULL,
                                            DANGO_XFER_MEM_REMOTE));
    assert_dango_ok(
        dango_xfer_segment_query(peer, DANGO_XFER_LOCAL_SEGMENT, &info));
    assert_int_equal(3, info.num_buffers);
    assert_dango_ok(dango_xfer_segment_buffer(peer, DANGO_XFER_LOCAL_SEGMENT, 0,
                                              &addr, &len));
    assert_int_equal((uintptr_t)mem + 8192, addr);
    assert_dango_ok(dango_xfer_segment_buffer(peer, DANGO_XFER_LOCAL_SEGMENT, 2,
                                              &addr, &len));
    assert_int_equal((uintptr_t)mem + 4096, addr);
    assert_int_equal(100, len);

    assert_dango_ok(engine_new(md, "order-viewer", "tcp", NULL, &eng));
    assert_dango_ok(dango_xfer_segment_open(eng, "order-peer", &id));
    assert_dango_ok(dango_xfer_segment_buffer(eng, id, 0, &addr, &len));
    assert_int_equal((uintptr_t)mem + 8192, addr);
    assert_dango_ok(dango_xfer_segment_buffer(eng, id, 1, &addr, &len));
    assert_int_equal((uintptr_t)mem, addr);
    assert_dango_ok(dango_xfer_segment_buffer(eng, id, 2, &addr, &len));
    assert_int_equal((uintptr_t)mem + 4096, addr);
    assert_int_equal(100, len);
    dango_xfer_engine_destroy(eng);
    dango_xfer_engine_destroy(peer);
    free(mem);
}

/* ---------- batches ---------- */

static void batch_create_errors(void **state)
{
    dango_xfer_engine_t *eng   = engine_solo();
    dango_xfer_batch_t  *batch = NULL;

    (void)state;
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_create(eng, 0, &batch));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_create(eng, 65537, &batch));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_batch_create(eng, SIZE_MAX, &batch));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_create(NULL, 1, &batch));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_create(eng, 1, NULL));
    assert_null(batch);
    assert_dango_ok(dango_xfer_batch_create(eng, 65536, &batch));
    assert_int_equal(65536, dango_xfer_batch_capacity(batch));
    assert_int_equal(0, dango_xfer_batch_capacity(NULL));
    assert_dango_ok(dango_xfer_batch_destroy(batch));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_destroy(NULL));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_reset(NULL));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_wait(NULL, 0));
    dango_xfer_engine_destroy(eng);
}

static void batch_submit_errors_queue_nothing(void **state)
{
    dango_xfer_engine_t *eng = engine_solo();
    dango_xfer_batch_t  *batch;
    dango_xfer_status_t  st;
    char                *local  = malloc(4096);
    char                *remote = malloc(4096);
    char                *unreg  = malloc(4096);
    dango_xfer_req_t     good, bad[2];

    (void)state;
    memset(local, 0x11, 4096);
    memset(remote, 0x22, 4096);
    assert_dango_ok(dango_xfer_mem_register(eng, local, 4096, NULL, 0));
    assert_dango_ok(dango_xfer_mem_register(eng, remote, 4096, NULL,
                                            DANGO_XFER_MEM_REMOTE));
    assert_dango_ok(dango_xfer_batch_create(eng, 4, &batch));
    good =
        (dango_xfer_req_t){DANGO_XFER_OP_WRITE, local, DANGO_XFER_LOCAL_SEGMENT,
                           (uintptr_t)remote, 4096};

    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_submit(batch, &good, 0));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_submit(batch, NULL, 1));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_submit(NULL, &good, 1));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_submit(batch, &good, 5));

    /* Each bad request comes second, after a good one: nothing is queued. */
    bad[0] = good;
#define SUBMIT_BAD(_code, ...)                                                 \
    do {                                                                       \
        bad[1] = good;                                                         \
        __VA_ARGS__;                                                           \
        assert_dango_err(_code, dango_xfer_batch_submit(batch, bad, 2));       \
        assert_dango_err(DANGO_EINVAL,                                         \
                         dango_xfer_batch_status(batch, 0, &st));              \
    } while (0)

    SUBMIT_BAD(DANGO_EINVAL, bad[1].op = (dango_xfer_op_t)7);
    SUBMIT_BAD(DANGO_EINVAL, bad[1].local_addr = NULL);
    SUBMIT_BAD(DANGO_EINVAL, bad[1].remote_addr = UINT64_MAX - 10);
    SUBMIT_BAD(DANGO_EINVAL, bad[1].local_addr = (void *)(UINTPTR_MAX - 10));
    SUBMIT_BAD(DANGO_ENOTREG, bad[1].local_addr = unreg);
    SUBMIT_BAD(DANGO_ENOTREG, bad[1].local_addr = local + 1);
    SUBMIT_BAD(DANGO_ENOTREG, bad[1].length = 4097);
    SUBMIT_BAD(DANGO_ENOENT, bad[1].segment = 42);
    SUBMIT_BAD(DANGO_ENOENT, bad[1].segment = -1);
#undef SUBMIT_BAD

    /* The good request never ran. */
    {
        char expect[4096];

        memset(expect, 0x22, sizeof(expect));
        assert_memory_equal(expect, remote, 4096);
    }

    assert_dango_ok(dango_xfer_batch_query(batch, &st));
    assert_int_equal(DANGO_XFER_COMPLETED, st.state); /* empty */
    assert_int_equal(0, st.bytes);
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_query(batch, NULL));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_query(NULL, &st));

    /* Capacity counts what was submitted: 3 + 2 does not fit in 4. */
    {
        dango_xfer_req_t three[3] = {good, good, good};

        three[1].length     = 0; /* completes at once, local_addr irrelevant */
        three[1].local_addr = NULL;
        assert_dango_ok(dango_xfer_batch_submit(batch, three, 3));
        assert_dango_err(DANGO_EINVAL,
                         dango_xfer_batch_submit(batch, three, 2));
        assert_dango_ok(dango_xfer_batch_wait(batch, 5000));
        assert_dango_ok(dango_xfer_batch_submit(batch, three, 1));
        assert_dango_err(DANGO_EINVAL,
                         dango_xfer_batch_submit(batch, three, 1));
        assert_dango_ok(dango_xfer_batch_wait(batch, 5000));
        assert_dango_ok(dango_xfer_batch_status(batch, 3, &st));
        assert_int_equal(DANGO_XFER_COMPLETED, st.state);
        assert_dango_err(DANGO_EINVAL, dango_xfer_batch_status(batch, 4, &st));
        assert_dango_err(DANGO_EINVAL, dango_xfer_batch_status(batch, 0, NULL));
        assert_dango_ok(dango_xfer_batch_status(batch, 1, &st));
        assert_int_equal(DANGO_XFER_COMPLETED, st.state);
        assert_int_equal(0, st.bytes);
    }

    assert_memory_equal(local, remote, 4096);
    assert_dango_ok(dango_xfer_batch_destroy(batch));
    dango_xfer_engine_destroy(eng);
    free(local);
    free(remote);
    free(unreg);
}

static void batch_notify_errors(void **state)
{
    dango_xfer_engine_t *eng = NULL, *peer = NULL;
    dango_xfer_batch_t  *batch;
    dango_xfer_notify_t  got[2];
    dango_segment_id_t   id, fid;
    size_t               n = 99;
    char                 md[64], dir[] = "/tmp/dango-xfer-api-XXXXXX";
    char                 fname[128], big[DANGO_XFER_NOTIFY_MAX + 1];
    char                *local = malloc(64);
    void                *pbuf;
    uint64_t             deadline;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(fname, sizeof(fname), "file://%s/seg", dir);
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "notifier", "tcp", NULL, &eng));
    assert_dango_ok(engine_new(md, "notified", NULL, NULL, &peer));
    assert_dango_ok(
        dango_xfer_mem_alloc(peer, 4096, "*", DANGO_XFER_MEM_REMOTE, &pbuf));
    assert_dango_ok(dango_xfer_mem_register(eng, local, 64, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, "notified", &id));
    assert_dango_ok(dango_xfer_segment_open(eng, fname, &fid));
    assert_dango_ok(dango_xfer_batch_create(eng, 4, &batch));
    memset(big, 'b', sizeof(big));

    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_notify(batch, id, "m", 0));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_notify(batch, id, NULL, 1));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_batch_notify(batch, id, big, sizeof(big)));
    assert_dango_err(DANGO_EINVAL, dango_xfer_batch_notify(NULL, id, "m", 1));
    assert_dango_err(
        DANGO_ENOTSUP,
        dango_xfer_batch_notify(batch, DANGO_XFER_LOCAL_SEGMENT, "m", 1));
    assert_dango_err(DANGO_ENOTSUP,
                     dango_xfer_batch_notify(batch, fid, "m", 1));
    assert_dango_err(DANGO_ENOENT, dango_xfer_batch_notify(batch, 77, "m", 1));

    /* A write, then the notification; the longest message goes through. */
    {
        dango_xfer_req_t r = {DANGO_XFER_OP_WRITE, local, id,
                              (uintptr_t)pbuf + 100, 64};

        memset(local, 0x3c, 64);
        assert_dango_ok(dango_xfer_batch_submit(batch, &r, 1));
        assert_dango_ok(
            dango_xfer_batch_notify(batch, id, big, DANGO_XFER_NOTIFY_MAX));
        assert_dango_err(DANGO_EBUSY,
                         dango_xfer_batch_notify(batch, id, "again", 5));
        assert_dango_err(DANGO_EBUSY, dango_xfer_batch_submit(batch, &r, 1));
        assert_dango_ok(dango_xfer_batch_wait(batch, 10000));
        assert_dango_err(DANGO_EBUSY,
                         dango_xfer_batch_notify(batch, id, "again", 5));
    }

    /* The batch completed only after the target acknowledged. */
    assert_dango_ok(dango_xfer_notify_recv(peer, got, 2, &n));
    assert_int_equal(1, n);
    assert_string_equal("notifier", got[0].from);
    assert_int_equal(DANGO_XFER_NOTIFY_MAX, got[0].length);
    assert_memory_equal(big, got[0].msg, DANGO_XFER_NOTIFY_MAX);
    assert_int_equal('\0', got[0].msg[DANGO_XFER_NOTIFY_MAX]);
    assert_memory_equal(local, (char *)pbuf + 100, 64);

    /* Reset clears the notification for the next use. */
    assert_dango_ok(dango_xfer_batch_reset(batch));
    assert_dango_ok(dango_xfer_batch_notify(batch, id, "second", 6));
    assert_dango_ok(dango_xfer_batch_wait(batch, 10000));
    deadline = dango_time_ns() + 5 * DANGO_NSEC_PER_SEC;
    do {
        assert_dango_ok(dango_xfer_notify_recv(peer, got, 2, &n));
    } while ((n == 0) && (dango_time_ns() < deadline));
    assert_int_equal(1, n);
    assert_string_equal("second", got[0].msg);

    assert_dango_ok(dango_xfer_batch_destroy(batch));
    dango_xfer_engine_destroy(eng);
    dango_xfer_engine_destroy(peer);
    unlink(fname + 7);
    rmdir(dir);
    free(local);
}

static void notify_recv_and_send(void **state)
{
    dango_xfer_engine_t *eng = NULL, *peer = NULL;
    dango_xfer_notify_t  got[4];
    dango_segment_id_t   id, fid;
    size_t               n = 99;
    char                 md[64], big[DANGO_XFER_NOTIFY_MAX + 1];

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "sender", NULL, NULL, &eng));
    assert_dango_ok(engine_new(md, "receiver", "tcp", NULL, &peer));

    assert_dango_err(DANGO_EINVAL, dango_xfer_notify_recv(peer, got, 4, NULL));
    assert_dango_err(DANGO_EINVAL, dango_xfer_notify_recv(peer, NULL, 4, &n));
    assert_dango_err(DANGO_EINVAL, dango_xfer_notify_recv(NULL, got, 4, &n));
    assert_dango_ok(dango_xfer_notify_recv(peer, NULL, 0, &n));
    assert_int_equal(0, n);
    n = 99;
    assert_dango_ok(dango_xfer_notify_recv(peer, got, 4, &n));
    assert_int_equal(0, n);

    assert_dango_ok(dango_xfer_segment_open(eng, "receiver", &id));
    assert_dango_ok(
        dango_xfer_segment_open(eng, "file:///tmp/dango-unused", &fid));
    memset(big, 'z', sizeof(big));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_notify_send(eng, id, "x", 0, 1000));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_notify_send(eng, id, NULL, 1, 1000));
    assert_dango_err(DANGO_EINVAL,
                     dango_xfer_notify_send(eng, id, big, sizeof(big), 1000));
    assert_dango_err(
        DANGO_ENOTSUP,
        dango_xfer_notify_send(eng, DANGO_XFER_LOCAL_SEGMENT, "x", 1, 1000));
    assert_dango_err(DANGO_ENOTSUP,
                     dango_xfer_notify_send(eng, fid, "x", 1, 1000));
    assert_dango_err(DANGO_ENOENT,
                     dango_xfer_notify_send(eng, 31, "x", 1, 1000));

    /* Three in order, taken two then one. */
    assert_dango_ok(dango_xfer_notify_send(eng, id, "one", 3, 10000));
    assert_dango_ok(dango_xfer_notify_send(eng, id, "two", 3, 10000));
    assert_dango_ok(dango_xfer_notify_send(eng, id, "three", 5, 10000));
    assert_dango_ok(dango_xfer_notify_recv(peer, got, 2, &n));
    assert_int_equal(2, n);
    assert_string_equal("one", got[0].msg);
    assert_string_equal("two", got[1].msg);
    assert_string_equal("sender", got[1].from);
    assert_int_equal(3, got[1].length);
    assert_dango_ok(dango_xfer_notify_recv(peer, got, 4, &n));
    assert_int_equal(1, n);
    assert_string_equal("three", got[0].msg);
    assert_dango_ok(dango_xfer_notify_recv(peer, got, 4, &n));
    assert_int_equal(0, n);

    /* Unread notifications are freed with the engine. */
    assert_dango_ok(dango_xfer_notify_send(eng, id, "left", 4, 10000));
    dango_xfer_engine_destroy(eng);
    dango_xfer_engine_destroy(peer);
    unlink("/tmp/dango-unused");
}

/* Requests to a peer that never answers stay in flight. */
static void batch_in_flight_refusals(void **state)
{
    dango_xfer_engine_t *eng = NULL;
    dango_config_t      *cfg = patient_config();
    dango_xfer_batch_t  *batch, *other;
    dango_xfer_status_t  st;
    dango_segment_id_t   id;
    mute_peer_t          mp;
    char                 md[64];
    char                *local = malloc(8192);
    uint64_t             t0;
    int                  rc;

    (void)state;
    md_name(md, sizeof(md));
    mute_peer_start(&mp, md, "mute");
    assert_dango_ok(engine_new(md, "impatient", "tcp", cfg, &eng));
    dango_config_release(cfg);
    assert_dango_ok(dango_xfer_mem_register(eng, local, 8192, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, "mute", &id));
    assert_dango_ok(dango_xfer_batch_create(eng, 4, &batch));
    {
        dango_xfer_req_t r[2] = {
            {DANGO_XFER_OP_READ, local, id, 65536, 4096},
            {DANGO_XFER_OP_WRITE, local + 4096, id, 65536 + 8192, 4096}};

        assert_dango_ok(dango_xfer_batch_submit(batch, r, 2));
    }

    assert_dango_err(DANGO_ETIMEDOUT, dango_xfer_batch_wait(batch, 0));
    t0 = dango_time_ns();
    assert_dango_err(DANGO_ETIMEDOUT, dango_xfer_batch_wait(batch, 100));
    assert_true(dango_time_ns() - t0 >= 100 * DANGO_NSEC_PER_MSEC);
    assert_dango_err(DANGO_EBUSY, dango_xfer_batch_reset(batch));
    assert_dango_err(DANGO_EBUSY, dango_xfer_batch_destroy(batch));
    assert_dango_ok(dango_xfer_batch_status(batch, 0, &st));
    assert_int_equal(DANGO_XFER_PENDING, st.state);
    assert_dango_ok(dango_xfer_batch_query(batch, &st));
    assert_int_equal(DANGO_XFER_PENDING, st.state);
    assert_int_equal(0, st.error);

    /*
     * A range that runs out of a buffer the peer published is refused
     * whole, without asking the peer (which would never answer); a range
     * outside every published buffer goes to the peer, which may have
     * registered it since.
     */
    assert_dango_ok(dango_xfer_batch_create(eng, 4, &other));
    {
        dango_xfer_req_t r[3] = {
            {DANGO_XFER_OP_WRITE, local, id, 65536 + (1 << 20) - 10, 20},
            {DANGO_XFER_OP_WRITE, local, id, 65536 - 10, 4096},
            {DANGO_XFER_OP_READ, local, id, 65536 + 4096, 8192}};

        assert_dango_ok(dango_xfer_batch_submit(other, r, 2));
        assert_dango_err(DANGO_EREMOTE_ACCESS,
                         dango_xfer_batch_wait(other, 10000));
        assert_dango_ok(dango_xfer_batch_status(other, 1, &st));
        assert_dango_err(DANGO_EREMOTE_ACCESS, st.error);
        assert_dango_ok(dango_xfer_batch_reset(other));
        r[0].remote_addr = 1ull << 40;
        assert_dango_ok(dango_xfer_batch_submit(other, r, 1));
        assert_dango_err(DANGO_ETIMEDOUT, dango_xfer_batch_wait(other, 50));
    }

    /* The peer goes away: all fail with a link or peer error, promptly. */
    mute_peer_stop(&mp);
    rc = dango_xfer_batch_wait(other, 15000);
    assert_true(dango_err_is_link(rc) || dango_err_is_peer(rc));
    assert_dango_ok(dango_xfer_batch_destroy(other));
    rc = dango_xfer_batch_wait(batch, 15000);
    assert_true(dango_err_is_link(rc) || dango_err_is_peer(rc));
    assert_dango_ok(dango_xfer_batch_status(batch, 1, &st));
    assert_int_equal(DANGO_XFER_FAILED, st.state);
    assert_true(dango_err_is_link(st.error) || dango_err_is_peer(st.error));
    assert_dango_ok(dango_xfer_batch_query(batch, &st));
    assert_int_equal(DANGO_XFER_FAILED, st.state);
    assert_int_equal(rc, st.error);
    assert_dango_ok(dango_xfer_batch_reset(batch));
    assert_dango_ok(dango_xfer_batch_destroy(batch));
    dango_xfer_engine_destroy(eng);
    free(local);
}

/* notify_send gives up after its timeout; the peer never acknowledges. */
static void notify_send_timeout(void **state)
{
    dango_xfer_engine_t *eng = NULL;
    dango_config_t      *cfg = NULL;
    dango_segment_id_t   id;
    mute_peer_t          mp;
    char                 md[64];
    uint64_t             t0;

    (void)state;
    md_name(md, sizeof(md));
    mute_peer_start(&mp, md, "mute-notify");
    assert_dango_ok(dango_config_read(NULL, &cfg));
    /* After the timeout, notify_send waits for the transport to give up. */
    assert_dango_ok(dango_config_set(cfg, "TCP_CONNECT_TIMEOUT", "300ms"));
    assert_dango_ok(engine_new(md, "notify-sender", "tcp", cfg, &eng));
    dango_config_release(cfg);
    assert_dango_ok(dango_xfer_segment_open(eng, "mute-notify", &id));
    t0 = dango_time_ns();
    assert_dango_err(DANGO_ETIMEDOUT,
                     dango_xfer_notify_send(eng, id, "hello?", 6, 50));
    assert_true(dango_time_ns() - t0 < 10 * DANGO_NSEC_PER_SEC);
    mute_peer_stop(&mp);
    dango_xfer_engine_destroy(eng);
}

/*
 * Destroying an engine with requests in flight cancels them. The batch is
 * read and destroyed after the engine is gone: xfer.h says batches must be
 * destroyed first, but batch_destroy refuses (DANGO_EBUSY) while requests
 * are in flight, so this is the only way to see DANGO_ECANCELED; it touches
 * nothing but the batch itself.
 */
static void engine_destroy_with_requests_in_flight(void **state)
{
    dango_xfer_engine_t *eng = NULL;
    dango_config_t      *cfg = patient_config();
    dango_xfer_batch_t  *batch;
    dango_xfer_status_t  st;
    dango_segment_id_t   id;
    mute_peer_t          mp;
    char                 md[64];
    char                *local = malloc(4096);
    uint64_t             t0;

    (void)state;
    md_name(md, sizeof(md));
    mute_peer_start(&mp, md, "mute-destroy");
    assert_dango_ok(engine_new(md, "destroyer", "tcp", cfg, &eng));
    dango_config_release(cfg);
    assert_dango_ok(dango_xfer_mem_register(eng, local, 4096, NULL, 0));
    assert_dango_ok(dango_xfer_segment_open(eng, "mute-destroy", &id));
    assert_dango_ok(dango_xfer_batch_create(eng, 1, &batch));
    {
        dango_xfer_req_t r = {DANGO_XFER_OP_WRITE, local, id, 65536, 4096};

        assert_dango_ok(dango_xfer_batch_submit(batch, &r, 1));
    }

    assert_dango_err(DANGO_ETIMEDOUT, dango_xfer_batch_wait(batch, 20));
    t0 = dango_time_ns();
    dango_xfer_engine_destroy(eng); /* must not wait for the peer */
    assert_true(dango_time_ns() - t0 < 10 * DANGO_NSEC_PER_SEC);
    /* The request finished (canceled) before destroy returned. */
    assert_dango_ok(dango_xfer_batch_query(batch, &st));
    assert_int_equal(DANGO_XFER_FAILED, st.state);
    assert_dango_err(DANGO_ECANCELED, st.error);
    assert_dango_ok(dango_xfer_batch_destroy(batch));
    mute_peer_stop(&mp);
    free(local);
}

/* ---------- loopback through the local segment ---------- */

static void local_segment_loopback(void **state)
{
    dango_xfer_engine_t *eng = engine_solo();
    dango_xfer_batch_t  *batch;
    dango_xfer_status_t  st;
    const size_t         len = 3 << 20;
    char                *src = malloc(len), *dst = malloc(len);
    char                *back = malloc(len), *priv = malloc(4096);
    void                *remote;

    (void)state;
    assert_dango_ok(dango_xfer_mem_register(eng, src, len, NULL, 0));
    assert_dango_ok(dango_xfer_mem_register(eng, back, len, NULL, 0));
    assert_dango_ok(dango_xfer_mem_register(eng, priv, 4096, NULL, 0));
    assert_dango_ok(
        dango_xfer_mem_register(eng, dst, len, NULL, DANGO_XFER_MEM_REMOTE));
    assert_dango_ok(
        dango_xfer_mem_alloc(eng, 8192, "*", DANGO_XFER_MEM_REMOTE, &remote));
    fill_random(src, len);
    memset(back, 0, len);
    assert_dango_ok(dango_xfer_batch_create(eng, 8, &batch));
    {
        dango_xfer_req_t w[3] = {
            {DANGO_XFER_OP_WRITE, src + 1, DANGO_XFER_LOCAL_SEGMENT,
             (uintptr_t)dst + 3, len - 5},
            {DANGO_XFER_OP_WRITE, src, DANGO_XFER_LOCAL_SEGMENT,
             (uintptr_t)remote + 1, 8191},
            {DANGO_XFER_OP_WRITE, src, DANGO_XFER_LOCAL_SEGMENT, (uintptr_t)dst,
             0}};

        assert_dango_ok(dango_xfer_batch_submit(batch, w, 3));
        assert_dango_ok(dango_xfer_batch_wait(batch, 10000));
        assert_memory_equal(src + 1, dst + 3, len - 5);
        assert_memory_equal(src, (char *)remote + 1, 8191);
        assert_dango_ok(dango_xfer_batch_status(batch, 0, &st));
        assert_int_equal(DANGO_XFER_COMPLETED, st.state);
        assert_int_equal(len - 5, st.bytes);
        assert_dango_ok(dango_xfer_batch_query(batch, &st));
        assert_int_equal(DANGO_XFER_COMPLETED, st.state);
        assert_int_equal(len - 5 + 8191, st.bytes);
    }

    assert_dango_ok(dango_xfer_batch_reset(batch));
    {
        dango_xfer_req_t r = {DANGO_XFER_OP_READ, back,
                              DANGO_XFER_LOCAL_SEGMENT, (uintptr_t)dst + 3,
                              len - 5};

        assert_dango_ok(dango_xfer_batch_submit(batch, &r, 1));
        assert_dango_ok(dango_xfer_batch_wait(batch, 10000));
        assert_memory_equal(src + 1, back, len - 5);
    }

    /*
     * Refused: past the end, before the start, local-only memory, memory
     * that is not registered at all. Nothing is written.
     */
    assert_dango_ok(dango_xfer_batch_reset(batch));
    memcpy(back, dst, len);
    {
        dango_xfer_req_t r[4] = {
            {DANGO_XFER_OP_WRITE, src, DANGO_XFER_LOCAL_SEGMENT,
             (uintptr_t)dst + len - 10, 11},
            {DANGO_XFER_OP_WRITE, src, DANGO_XFER_LOCAL_SEGMENT,
             (uintptr_t)dst - 1, 10},
            {DANGO_XFER_OP_READ, src, DANGO_XFER_LOCAL_SEGMENT, (uintptr_t)priv,
             10},
            {DANGO_XFER_OP_WRITE, src, DANGO_XFER_LOCAL_SEGMENT, 4096, 10}};

        assert_dango_ok(dango_xfer_batch_submit(batch, r, 4));
        assert_dango_err(DANGO_EREMOTE_ACCESS,
                         dango_xfer_batch_wait(batch, 10000));
        for (size_t i = 0; i < 4; i++) {
            assert_dango_ok(dango_xfer_batch_status(batch, i, &st));
            assert_int_equal(DANGO_XFER_FAILED, st.state);
            assert_dango_err(DANGO_EREMOTE_ACCESS, st.error);
            assert_int_equal(0, st.bytes);
        }

        assert_dango_ok(dango_xfer_batch_query(batch, &st));
        assert_int_equal(DANGO_XFER_FAILED, st.state);
        assert_dango_err(DANGO_EREMOTE_ACCESS, st.error);
    }

    assert_memory_equal(back, dst, len);
    /* A failure does not stick after reset. */
    assert_dango_ok(dango_xfer_batch_reset(batch));
    assert_dango_ok(dango_xfer_batch_query(batch, &st));
    assert_int_equal(DANGO_XFER_COMPLETED, st.state);
    assert_int_equal(0, st.error);
    assert_dango_ok(dango_xfer_batch_destroy(batch));
    dango_xfer_engine_destroy(eng);
    free(src);
    free(dst);
    free(back);
    free(priv);
}

/* ---------- OOM ---------- */

static void engine_create_oom(void **state)
{
    dango_xfer_engine_params_t p = {0};
    dango_xfer_engine_t       *eng;
    long                       base;
    long                       n, failures = 0;
    int                        rc = -1;

    (void)state;
    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS |
                   DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME |
                   DANGO_XFER_ENGINE_PARAM_TRANSPORTS;
    p.metadata     = "mem://xfer-oom";
    p.listen_addr  = "127.0.0.1:0";
    p.num_workers  = 2;
    p.segment_name = "oom";
    p.transports   = "shm,tcp";

    /* Warm up whatever is allocated once per process. */
    assert_dango_ok(dango_xfer_engine_create(&p, NULL, &eng));
    dango_xfer_engine_destroy(eng);
    base = dango__alloc_live();

    for (n = 1; n <= 5000; n++) {
        eng = NULL;
        dango__alloc_fail_after(n);
        rc = dango_xfer_engine_create(&p, NULL, &eng);
        dango__alloc_fail_after(-1);
        if (rc == 0) {
            break;
        }

        failures++;
        if (rc != DANGO_ENOMEM) {
            fail_msg("allocation %ld failing: engine_create returned %s, "
                     "expected DANGO_ENOMEM",
                     n, dango_err_name(rc));
        }

        assert_null(eng);
        if (dango__alloc_live() != base) {
            fail_msg("allocation %ld failing: %ld allocations leaked", n,
                     dango__alloc_live() - base);
        }
    }

    assert_dango_ok(rc);
    assert_true(failures > 10);
    print_message("engine_create: %ld allocation failures handled\n", failures);
    dango_xfer_engine_destroy(eng);
    assert_int_equal(base, dango__alloc_live());
}

/*
 * A request over a range the peer registered after its descriptor was read
 * travels as one slice, so a target refusal covers the whole request: here
 * the 4 MiB write spans two regions with a gap, and nothing may land in the
 * first one (cut into 1 MiB slices, the first two would have been written).
 */
static void write_unpublished_range_refused_whole(void **state)
{
    const size_t         half = 2u << 20, page = 4096;
    dango_xfer_engine_t *tgt, *ini;
    dango_segment_id_t   seg;
    dango_xfer_batch_t  *batch;
    dango_xfer_req_t     req;
    char                *remote, *local;
    char                 md[64];

    (void)state;
    md_name(md, sizeof(md));
    assert_dango_ok(engine_new(md, "late-target", "tcp", NULL, &tgt));
    assert_dango_ok(engine_new(md, "late-initiator", "tcp", NULL, &ini));
    assert_dango_ok(dango_xfer_segment_open(ini, "late-target", &seg));

    /* Registered only now: the initiator's descriptor shows neither. */
    remote = mmap(NULL, 2 * half + page, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    local  = mmap(NULL, 2 * half, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    assert_true((remote != MAP_FAILED) && (local != MAP_FAILED));
    memset(remote, 0, 2 * half + page);
    memset(local, 0xab, 2 * half);
    assert_dango_ok(
        dango_xfer_mem_register(tgt, remote, half, "*", DANGO_XFER_MEM_REMOTE));
    assert_dango_ok(dango_xfer_mem_register(tgt, remote + half + page, half,
                                            "*", DANGO_XFER_MEM_REMOTE));
    assert_dango_ok(dango_xfer_mem_register(ini, local, 2 * half, "*", 0));

    req = (dango_xfer_req_t){DANGO_XFER_OP_WRITE, local, seg, (uintptr_t)remote,
                             2 * half};
    assert_dango_ok(dango_xfer_batch_create(ini, 1, &batch));
    assert_dango_ok(dango_xfer_batch_submit(batch, &req, 1));
    assert_dango_err(DANGO_EREMOTE_ACCESS, dango_xfer_batch_wait(batch, 10000));
    for (size_t i = 0; i < 2 * half + page; i++) {
        if (remote[i] != 0) {
            fail_msg("byte %zu of the target was written", i);
        }
    }

    /* Inside one of the new regions the same kind of request lands. */
    assert_dango_ok(dango_xfer_batch_reset(batch));
    req.length = half;
    assert_dango_ok(dango_xfer_batch_submit(batch, &req, 1));
    assert_dango_ok(dango_xfer_batch_wait(batch, 10000));
    assert_memory_equal(remote, local, half);
    assert_dango_ok(dango_xfer_batch_destroy(batch));
    dango_xfer_engine_destroy(ini);
    dango_xfer_engine_destroy(tgt);
    munmap(remote, 2 * half + page);
    munmap(local, 2 * half);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(engine_create_rejects_bad_params),
        cmocka_unit_test(engine_create_mem_metadata_and_names),
        cmocka_unit_test(engine_create_address_in_use),
        cmocka_unit_test(engine_create_name_taken),
        cmocka_unit_test(engine_create_bad_config_and_metadata),
        cmocka_unit_test(mem_register_errors),
        cmocka_unit_test(mem_alloc_errors),
        cmocka_unit_test(mem_unregister_busy_while_peer_writes),
        cmocka_unit_test(mem_register_publish_failure),
        cmocka_unit_test(segment_open_errors),
        cmocka_unit_test(segment_open_p2p_peer_gone),
        cmocka_unit_test(segment_close_query_buffer),
        cmocka_unit_test(segment_buffer_registration_order),
        cmocka_unit_test(batch_create_errors),
        cmocka_unit_test(batch_submit_errors_queue_nothing),
        cmocka_unit_test(batch_notify_errors),
        cmocka_unit_test(notify_recv_and_send),
        cmocka_unit_test(batch_in_flight_refusals),
        cmocka_unit_test(notify_send_timeout),
        cmocka_unit_test(engine_destroy_with_requests_in_flight),
        cmocka_unit_test(local_segment_loopback),
        cmocka_unit_test(write_unpublished_range_refused_whole),
        cmocka_unit_test(engine_create_oom),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
