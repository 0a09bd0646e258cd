/*
 * Tests of the shm transport (src/transport/shm/shm_iface.c).
 *
 * DESIGN
 *
 * Most tests run target and initiator in this one process: two engine
 * loops, a target iface whose fake host serves memfds created here, and an
 * initiator iface that maps them through the Unix socket exactly as a
 * peer process would (the kernel does not care that both ends are us). The
 * target's own mapping of each memfd lets a test check what a WRITE did
 * without going through the transport. Raw clients built from the frame
 * and protobuf helpers poke the server with garbage and with handshakes
 * that skip authentication.
 *
 * One test forks a real target process, which checks what the parent
 * wrote and reports through its exit status; it runs first, before this
 * process has started any thread. Every wait is bounded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/config.h>
#include <dango/transport.h>
#include "common/alloc.h"
#include "common/loop.h"
#include "common/time.h"
#include "net/auth.h"
#include "net/frame.h"
#include "net/sock.h"
#include "dango_ctrl.pb-c.h"

extern const dango_transport_ops_t dango__shm_ops;

#define SHM_OPS    (&dango__shm_ops)
#define MIB        (1024ull * 1024ull)
#define REGION_LEN (72 * MIB)
#define SMALL_LEN  (1 * MIB)
#define WAIT_NS    (60ull * DANGO_NSEC_PER_SEC)
#define NUM_LOOPS  2
#define DESC_MAX   4096

/* ---------- fixtures: fake host, regions, descriptors ---------- */

/* A memfd-backed buffer, as dango_xfer_mem_alloc() would make. */
typedef struct test_region {
    uint8_t *resv; /* reservation around the mapping */
    uint8_t *addr; /* the target's mapping; also its "address" */
    uint64_t len;
    int      fd;
    uint64_t report_len; /* what mem_fd() claims (tests lie with it) */
} test_region_t;

typedef struct test_host {
    dango_tp_host_t host;
    test_region_t  *regions[4];
    unsigned        num;
} test_host_t;

typedef struct test_target {
    test_host_t       host;
    dango_tp_iface_t *iface;
    char              shm_json[128]; /* iface_query()'s desc_json */
} test_target_t;

typedef struct test_state {
    dango_loop_t     *loops[NUM_LOOPS];
    test_region_t     region; /* big region, remote + shm */
    test_region_t     small;  /* second region, remote + shm */
    test_region_t     hidden; /* "shm": false: never mapped */
    test_target_t     target; /* serves the three regions */
    dango_tp_iface_t *client; /* the initiator */
    char              desc[DESC_MAX];
} test_state_t;

static int fake_mem_fd(void *ctx, uint64_t addr, int *fd_p, uint64_t *len_p)
{
    test_host_t *h = ctx;

    for (unsigned i = 0; i < h->num; i++) {
        test_region_t *r = h->regions[i];

        if ((uint64_t)(uintptr_t)r->addr == addr) {
            int fd = fcntl(r->fd, F_DUPFD_CLOEXEC, 0);

            if (fd < 0) {
                return DANGO_EIO;
            }

            *fd_p  = fd;
            *len_p = r->report_len;
            return 0;
        }
    }

    return DANGO_ENOENT;
}

static int region_create(test_region_t *r, uint64_t len)
{
    memset(r, 0, sizeof(*r));
    r->fd = memfd_create("test_shm", MFD_CLOEXEC);
    if (r->fd < 0) {
        return -1;
    }

    if (ftruncate(r->fd, (off_t)len) != 0) {
        close(r->fd);
        return -1;
    }

    /* A page of PROT_NONE on each side: no two regions are adjacent, so
     * "one byte before" a region is never inside another one. */
    r->resv = mmap(NULL, len + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (r->resv == MAP_FAILED) {
        close(r->fd);
        return -1;
    }

    r->addr = mmap(r->resv + 4096, len, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE | MAP_FIXED, r->fd, 0);
    if (r->addr == MAP_FAILED) {
        munmap(r->resv, len + 2 * 4096);
        close(r->fd);
        return -1;
    }

    r->len        = len;
    r->report_len = len;
    return 0;
}

static void region_destroy(test_region_t *r)
{
    if (r->addr != NULL) {
        munmap(r->resv, r->len + 2 * 4096);
        close(r->fd);
        r->addr = NULL;
    }
}

static uint64_t raddr(const test_region_t *r, uint64_t off)
{
    return (uint64_t)(uintptr_t)r->addr + off;
}

static void host_init(test_host_t *h)
{
    memset(h, 0, sizeof(*h));
    h->host.ctx    = h;
    h->host.mem_fd = fake_mem_fd;
}

static void host_add(test_host_t *h, test_region_t *r)
{
    h->regions[h->num++] = r;
}

static int iface_open(dango_loop_t **loops, uint64_t instance, const char *name,
                      const char *token, const dango_tp_host_t *host,
                      dango_tp_iface_t **iface_p)
{
    static const dango_tp_host_t no_host = {0};
    dango_tp_iface_params_t      p       = {
                   .host         = (host != NULL) ? host : &no_host,
                   .loops        = loops,
                   .num_loops    = NUM_LOOPS,
                   .segment_name = name,
                   .instance_id  = instance,
                   .token        = token,
    };

    return SHM_OPS->iface_open(&p, iface_p);
}

static int target_open(test_target_t *t, dango_loop_t **loops,
                       uint64_t instance, const char *token)
{
    dango_tp_iface_attr_t attr;
    int                   rc;

    rc = iface_open(loops, instance, "target", token, &t->host.host, &t->iface);
    if (rc != 0) {
        return rc;
    }

    rc = SHM_OPS->iface_query(t->iface, &attr);
    if (rc != 0) {
        return rc;
    }

    snprintf(t->shm_json, sizeof(t->shm_json), "%s", attr.desc_json);
    return 0;
}

/* A peer descriptor with @shm_json as its shm section (NULL: none). */
static void desc_build(char *out, size_t len, const char *shm_json,
                       test_region_t *const *regs, const int *shm, unsigned n)
{
    size_t off;

    off = (size_t)snprintf(out, len,
                           "{\"name\":\"target\","
                           "\"instance\":\"0000000000000001\","
                           "\"host_id\":\"h\",\"transports\":{");
    if (shm_json != NULL) {
        off += (size_t)snprintf(out + off, len - off, "\"shm\":%s,", shm_json);
    }

    off += (size_t)snprintf(out + off, len - off,
                            "\"tcp\":{\"addr\":\"127.0.0.1:1\"}},"
                            "\"buffers\":[");
    for (unsigned i = 0; i < n; i++) {
        off += (size_t)snprintf(out + off, len - off,
                                "%s{\"addr\":%" PRIu64 ",\"length\":%" PRIu64
                                ",\"location\":\"cpu:0\",\"remote\":true,"
                                "\"shm\":%s}",
                                (i > 0) ? "," : "", raddr(regs[i], 0),
                                regs[i]->len, shm[i] ? "true" : "false");
    }

    snprintf(out + off, len - off, "]}");
}

static int ep_create(dango_tp_iface_t *iface, const char *desc,
                     dango_tp_ep_t **ep_p)
{
    dango_tp_peer_t peer = {.name = "target", .desc_json = desc};

    return SHM_OPS->ep_create(iface, &peer, ep_p);
}

/* ---------- fixtures: slices and completion waits ---------- */

typedef struct test_waiter {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    unsigned        done;
    int             status; /* first error */
} test_waiter_t;

typedef struct test_slice {
    dango_tp_slice_t slice;
    test_waiter_t   *w;
} test_slice_t;

static void waiter_init(test_waiter_t *w)
{
    pthread_condattr_t a;

    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &a);
    pthread_condattr_destroy(&a);
    pthread_mutex_init(&w->lock, NULL);
    w->done   = 0;
    w->status = 0;
}

static void waiter_cleanup(test_waiter_t *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

static void slice_complete(dango_tp_slice_t *slice, int status)
{
    test_slice_t *ts = dango_container_of(slice, test_slice_t, slice);

    pthread_mutex_lock(&ts->w->lock);
    if ((status != 0) && (ts->w->status == 0)) {
        ts->w->status = status;
    }

    ts->w->done++;
    pthread_cond_broadcast(&ts->w->cond);
    pthread_mutex_unlock(&ts->w->lock);
}

/* Waits until @n completions arrived; DANGO_ETIMEDOUT after WAIT_NS. */
static int waiter_wait(test_waiter_t *w, unsigned n)
{
    uint64_t        deadline = dango_time_ns() + WAIT_NS;
    struct timespec ts       = {(time_t)(deadline / DANGO_NSEC_PER_SEC),
                                (long)(deadline % DANGO_NSEC_PER_SEC)};
    int             rc       = 0;

    pthread_mutex_lock(&w->lock);
    while ((w->done < n) && (rc == 0)) {
        if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) == ETIMEDOUT) {
            rc = DANGO_ETIMEDOUT;
        }
    }

    if (rc == 0) {
        rc = w->status;
    }

    pthread_mutex_unlock(&w->lock);
    return rc;
}

static void slice_init(test_slice_t *ts, test_waiter_t *w, uint8_t op,
                       void *local, uint64_t remote, uint64_t len)
{
    memset(ts, 0, sizeof(*ts));
    ts->w              = w;
    ts->slice.op       = op;
    ts->slice.local    = local;
    ts->slice.remote   = remote;
    ts->slice.length   = len;
    ts->slice.complete = slice_complete;
}

/* Moves @len bytes in slices of at most @chunk and waits for all of them. */
static int xfer(dango_tp_ep_t *ep, uint8_t op, void *local, uint64_t remote,
                uint64_t len, uint64_t chunk)
{
    unsigned      n = (unsigned)((len + chunk - 1) / chunk), posted = 0;
    test_slice_t *slices;
    test_waiter_t w;
    int           rc = 0, wrc;

    slices = calloc(n, sizeof(*slices));
    if (slices == NULL) {
        return DANGO_ENOMEM;
    }

    waiter_init(&w);
    for (unsigned i = 0; i < n; i++) {
        uint64_t off = (uint64_t)i * chunk;
        uint64_t l   = (len - off < chunk) ? len - off : chunk;

        slice_init(&slices[i], &w, op, (uint8_t *)local + off, remote + off, l);
        slices[i].slice.id = i;
        rc                 = SHM_OPS->post(ep, &slices[i].slice);
        if (rc != 0) {
            break;
        }

        posted++;
    }

    wrc = waiter_wait(&w, posted);
    if (rc == 0) {
        rc = wrc;
    }

    waiter_cleanup(&w);
    free(slices);
    return rc;
}

static void fill_random(uint8_t *p, size_t len, uint64_t seed)
{
    uint64_t x = seed | 1;

    for (size_t i = 0; i < len; i++) {
        if ((i & 7) == 0) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
        }

        p[i] = (uint8_t)((x * 0x2545F4914F6CDD1Dull) >> (8 * (i & 7)));
    }
}

static uint64_t checksum(const uint8_t *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }

    return h;
}

/* ---------- fixtures: raw clients ---------- */

static int raw_connect(const char *shm_json)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char        *q  = strstr(shm_json, "\"@");
    size_t             n;
    int                fd;

    if (q == NULL) {
        return -1;
    }

    q += 2;
    n = strcspn(q, "\"");
    memcpy(sa.sun_path + 1, q, n);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }

    if (connect(fd, (struct sockaddr *)&sa,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) !=
        0) {
        close(fd);
        return -1;
    }

    return fd;
}

static int raw_send_msg(int fd, uint8_t type, const ProtobufCMessage *msg)
{
    uint8_t       buf[512];
    size_t        len = protobuf_c_message_pack(msg, buf);
    dango_frame_t hdr;

    dango_frame_init(&hdr, type, 0, 0, len, 0);
    return dango_sock_send_frame(fd, &hdr, buf, len,
                                 dango_time_ns() + 5 * DANGO_NSEC_PER_SEC);
}

static int raw_hello(int fd, uint8_t *cnonce)
{
    Dango__Ctrl__Hello hello = DANGO__CTRL__HELLO__INIT;

    memset(cnonce, 0x5a, DANGO_AUTH_NONCE_LEN);
    hello.version    = DANGO_FRAME_VERSION;
    hello.nonce.data = cnonce;
    hello.nonce.len  = DANGO_AUTH_NONCE_LEN;
    return raw_send_msg(fd, DANGO_FRAME_HELLO, &hello.base);
}

/* Receives the hello ack; copies the server nonce and proof length. */
static int raw_hello_ack(int fd, uint8_t *snonce, size_t *proof_len_p)
{
    Dango__Ctrl__HelloAck *ack;
    dango_frame_t          hdr;
    void                  *payload;
    int                    rc;

    rc = dango_sock_recv_frame(fd, &hdr, &payload,
                               dango_time_ns() + 5 * DANGO_NSEC_PER_SEC);
    if (rc != 0) {
        return rc;
    }

    ack = dango__ctrl__hello_ack__unpack(NULL, hdr.length, payload);
    dango_free(payload);
    if ((ack == NULL) || (hdr.type != DANGO_FRAME_HELLO_ACK) ||
        (ack->nonce.len != DANGO_AUTH_NONCE_LEN)) {
        dango__ctrl__hello_ack__free_unpacked(ack, NULL);
        return DANGO_EPROTO;
    }

    memcpy(snonce, ack->nonce.data, DANGO_AUTH_NONCE_LEN);
    *proof_len_p = ack->proof.len;
    dango__ctrl__hello_ack__free_unpacked(ack, NULL);
    return 0;
}

static int raw_map_request(int fd, uint64_t addr)
{
    Dango__Ctrl__ShmMapRequest req = DANGO__CTRL__SHM_MAP_REQUEST__INIT;

    req.addr = addr;
    return raw_send_msg(fd, DANGO_FRAME_SHM_MAP, &req.base);
}

/*
 * True when the server closes @fd within 10 s without sending anything
 * (and so without passing a descriptor).
 */
static int raw_closed_by_server(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char          buf[64];
    ssize_t       n;

    if (poll(&pfd, 1, 10000) != 1) {
        return 0;
    }

    n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    return (n == 0) || ((n < 0) && (errno == ECONNRESET));
}

/* ---------- group setup ---------- */

static int loops_start(dango_loop_t **loops)
{
    for (int i = 0; i < NUM_LOOPS; i++) {
        char name[16];

        snprintf(name, sizeof(name), "shm-test-%d", i);
        if ((dango_loop_create(name, &loops[i]) != 0) ||
            (dango_loop_start(loops[i]) != 0)) {
            return -1;
        }
    }

    return 0;
}

static void loops_destroy(dango_loop_t **loops)
{
    for (int i = 0; i < NUM_LOOPS; i++) {
        dango_loop_destroy(loops[i]);
        loops[i] = NULL;
    }
}

static int group_setup(void **state)
{
    test_state_t  *s = calloc(1, sizeof(*s));
    test_region_t *regs[3];
    const int      shm[3] = {1, 1, 0};

    if ((s == NULL) || (loops_start(s->loops) != 0) ||
        (region_create(&s->region, REGION_LEN) != 0) ||
        (region_create(&s->small, SMALL_LEN) != 0) ||
        (region_create(&s->hidden, SMALL_LEN) != 0)) {
        return -1;
    }

    host_init(&s->target.host);
    host_add(&s->target.host, &s->region);
    host_add(&s->target.host, &s->small);
    host_add(&s->target.host, &s->hidden);
    if ((target_open(&s->target, s->loops, 0x1111, NULL) != 0) ||
        (iface_open(s->loops, 0x2222, "client", NULL, NULL, &s->client) != 0)) {
        return -1;
    }

    regs[0] = &s->region;
    regs[1] = &s->small;
    regs[2] = &s->hidden;
    desc_build(s->desc, sizeof(s->desc), s->target.shm_json, regs, shm, 3);
    *state = s;
    return 0;
}

static int group_teardown(void **state)
{
    test_state_t *s = *state;

    SHM_OPS->iface_close(s->client);
    SHM_OPS->iface_close(s->target.iface);
    loops_destroy(s->loops);
    region_destroy(&s->region);
    region_destroy(&s->small);
    region_destroy(&s->hidden);
    free(s);
    return 0;
}

/* ---------- tests ---------- */

static void shm_query_reports_same_host_and_socket(void **state)
{
    test_state_t         *s = *state;
    dango_tp_iface_attr_t attr;
    char                  want[64];

    assert_dango_ok(SHM_OPS->iface_query(s->target.iface, &attr));
    assert_int_equal(DANGO_TP_CAP_SAME_HOST, attr.caps);
    assert_int_equal(4 * MIB, attr.max_slice);
    snprintf(want, sizeof(want), "{\"uds\":\"@dango-shm-%016x-%d\"}", 0x1111,
             (int)getpid());
    assert_string_equal(want, attr.desc_json);
    assert_string_equal("shm", SHM_OPS->name);
    assert_null(SHM_OPS->notify);
    assert_null(SHM_OPS->desc_fetch);
    assert_null(SHM_OPS->mem_reg);
}

static void shm_config_options_apply(void **state)
{
    test_state_t           *s = *state;
    dango_config_t         *cfg;
    dango_tp_iface_t       *iface;
    dango_tp_iface_attr_t   attr;
    dango_tp_iface_params_t p = {.loops       = s->loops,
                                 .num_loops   = NUM_LOOPS,
                                 .instance_id = 0x3333,
                                 .host        = &s->target.host.host};

    assert_dango_ok(dango_config_read("/dev/null", &cfg));
    assert_dango_ok(dango_config_set(cfg, "SHM_MAX_SLICE", "1m"));
    p.config = cfg;
    assert_dango_ok(SHM_OPS->iface_open(&p, &iface));
    assert_dango_ok(SHM_OPS->iface_query(iface, &attr));
    assert_int_equal(1 * MIB, attr.max_slice);
    SHM_OPS->iface_close(iface);

    assert_dango_ok(dango_config_set(cfg, "SHM_TIMEOUT", "0"));
    assert_dango_err(DANGO_ECONFIG, SHM_OPS->iface_open(&p, &iface));
    dango_config_release(cfg);

    p.num_loops = 0;
    assert_dango_err(DANGO_EINVAL, SHM_OPS->iface_open(&p, &iface));
}

static void shm_iface_open_same_instance_fails(void **state)
{
    test_state_t     *s = *state;
    dango_tp_iface_t *iface;

    /* Same instance and pid: the socket name is taken. */
    assert_dango_err(DANGO_EADDRINUSE,
                     iface_open(s->loops, 0x1111, "dup", NULL, NULL, &iface));
}

typedef struct test_barrier {
    dango_loop_task_t task;
    test_waiter_t     w;
} test_barrier_t;

static void barrier_cb(dango_loop_task_t *task)
{
    test_barrier_t *b = dango_container_of(task, test_barrier_t, task);

    pthread_mutex_lock(&b->w.lock);
    b->w.done = 1;
    pthread_cond_broadcast(&b->w.cond);
    pthread_mutex_unlock(&b->w.lock);
}

/*
 * Returns once @loop has finished the iteration it was in: handlers it
 * detached are freed only at the end of an iteration.
 */
static int loop_barrier(dango_loop_t *loop)
{
    test_barrier_t b = {.task.cb = barrier_cb};
    int            rc;

    waiter_init(&b.w);
    dango_loop_post(loop, &b.task);
    rc = waiter_wait(&b.w, 1);
    waiter_cleanup(&b.w);
    return rc;
}

static void shm_iface_open_oom(void **state)
{
    test_state_t     *s = *state;
    dango_tp_iface_t *iface;
    long              live;
    int               rc = DANGO_ENOMEM;

    /* Earlier tests' closes may still have a handler to free. */
    assert_dango_ok(loop_barrier(s->loops[0]));
    live = dango__alloc_live();

    for (long n = 1; (n < 100) && (rc == DANGO_ENOMEM); n++) {
        dango__alloc_fail_after(n);
        rc = iface_open(s->loops, 0x4444, "oom", "tok", NULL, &iface);
        dango__alloc_fail_after(-1);
        if (rc == DANGO_ENOMEM) {
            assert_int_equal(live, dango__alloc_live());
        }
    }

    assert_dango_ok(rc);
    SHM_OPS->iface_close(iface);
    assert_dango_ok(loop_barrier(s->loops[0]));
    assert_int_equal(live, dango__alloc_live());
}

static void shm_write_read_sizes(void **state)
{
    static const uint64_t sizes[] = {1, 4095, 1 * MIB + 3, 64 * MIB};
    test_state_t         *s       = *state;
    dango_tp_ep_t        *ep;
    uint8_t              *src, *dst;

    src = malloc(64 * MIB + 64);
    dst = malloc(64 * MIB + 64);
    assert_non_null(src);
    assert_non_null(dst);
    assert_dango_ok(ep_create(s->client, s->desc, &ep));

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(sizes); i++) {
        uint64_t len  = sizes[i];
        uint64_t roff = 4096 * (i + 1) + 13 + i; /* unaligned remote */
        uint8_t *lsrc = src + 3 + i;             /* unaligned local */
        uint8_t *ldst = dst + 7 + i;

        fill_random(lsrc, len, 0x1234 + i);
        memset(s->region.addr + roff - 1, 0xee, len + 2);
        assert_dango_ok(xfer(ep, DANGO_TP_OP_WRITE, lsrc,
                             raddr(&s->region, roff), len, 4 * MIB));
        /* The target sees the bytes, and nothing around them changed. */
        assert_memory_equal(lsrc, s->region.addr + roff, len);
        assert_int_equal(0xee, s->region.addr[roff - 1]);
        assert_int_equal(0xee, s->region.addr[roff + len]);

        memset(ldst, 0, len);
        assert_dango_ok(xfer(ep, DANGO_TP_OP_READ, ldst,
                             raddr(&s->region, roff), len, 4 * MIB));
        assert_memory_equal(lsrc, ldst, len);
    }

    /* The second buffer is mapped too. */
    fill_random(src, 4096, 99);
    assert_dango_ok(xfer(ep, DANGO_TP_OP_WRITE, src,
                         raddr(&s->small, SMALL_LEN - 4096), 4096, 4096));
    assert_memory_equal(src, s->small.addr + SMALL_LEN - 4096, 4096);

    SHM_OPS->ep_destroy(ep);
    free(src);
    free(dst);
}

static void shm_post_out_of_range_touches_nothing(void **state)
{
    test_state_t  *s = *state;
    dango_tp_ep_t *ep;
    test_waiter_t  w;
    test_slice_t   ts;
    uint8_t        local[64];
    struct {
        uint8_t  op;
        uint64_t remote;
        uint64_t len;
    } bad[] = {
        {DANGO_TP_OP_WRITE, raddr(&s->region, REGION_LEN - 10), 11},
        {DANGO_TP_OP_READ, raddr(&s->region, REGION_LEN - 10), 11},
        {DANGO_TP_OP_WRITE, raddr(&s->region, 0) - 1, 2},
        {DANGO_TP_OP_WRITE, raddr(&s->region, REGION_LEN), 1},
        {DANGO_TP_OP_WRITE, raddr(&s->hidden, 0), 1}, /* "shm": false */
        {DANGO_TP_OP_READ, raddr(&s->small, 16), UINT64_MAX - 8},
        {DANGO_TP_OP_WRITE, UINT64_MAX - 3, 8},
    };

    waiter_init(&w);
    assert_dango_ok(ep_create(s->client, s->desc, &ep));
    memset(s->region.addr + REGION_LEN - 16, 0x77, 16);
    memset(s->hidden.addr, 0x77, 16);
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        memset(local, 0x33, sizeof(local));
        slice_init(&ts, &w, bad[i].op, local, bad[i].remote, bad[i].len);
        assert_dango_err(DANGO_EREMOTE_ACCESS, SHM_OPS->post(ep, &ts.slice));
        for (size_t j = 0; j < sizeof(local); j++) {
            assert_int_equal(0x33, local[j]);
        }
    }

    for (size_t j = 0; j < 16; j++) {
        assert_int_equal(0x77, s->region.addr[REGION_LEN - 16 + j]);
        assert_int_equal(0x77, s->hidden.addr[j]);
    }

    /* A bad op code is refused before anything else. */
    slice_init(&ts, &w, 7, local, raddr(&s->region, 0), 1);
    assert_dango_err(DANGO_EINVAL, SHM_OPS->post(ep, &ts.slice));

    SHM_OPS->ep_destroy(ep);
    assert_int_equal(0, w.done); /* no completion for refused slices */
    waiter_cleanup(&w);
}

static void shm_can_serve_edges(void **state)
{
    test_state_t  *s = *state;
    dango_tp_ep_t *ep;
    uint64_t       b = raddr(&s->region, 0);
    uint64_t       e = raddr(&s->region, REGION_LEN);

    assert_dango_ok(ep_create(s->client, s->desc, &ep));
    assert_true(SHM_OPS->ep_can_serve(ep, b, REGION_LEN));
    assert_true(SHM_OPS->ep_can_serve(ep, b, 1));
    assert_true(SHM_OPS->ep_can_serve(ep, e - 1, 1));
    assert_true(SHM_OPS->ep_can_serve(ep, b + 5, REGION_LEN - 5));
    assert_false(SHM_OPS->ep_can_serve(ep, b, REGION_LEN + 1));
    assert_false(SHM_OPS->ep_can_serve(ep, e, 1));
    assert_false(SHM_OPS->ep_can_serve(ep, e - 1, 2));
    assert_false(SHM_OPS->ep_can_serve(ep, b - 1, 1));
    assert_false(SHM_OPS->ep_can_serve(ep, b - 1, 2));
    assert_false(SHM_OPS->ep_can_serve(ep, b, 0));
    assert_false(SHM_OPS->ep_can_serve(ep, b + 1, UINT64_MAX));
    assert_false(SHM_OPS->ep_can_serve(ep, e - 1, UINT64_MAX));
    assert_false(SHM_OPS->ep_can_serve(ep, UINT64_MAX, 1));
    assert_false(SHM_OPS->ep_can_serve(ep, UINT64_MAX - 1, 2));
    assert_false(SHM_OPS->ep_can_serve(ep, 0, 1));
    assert_false(SHM_OPS->ep_can_serve(ep, 0, UINT64_MAX));
    /* Spanning two buffers is not one mapping. */
    assert_false(SHM_OPS->ep_can_serve(ep, raddr(&s->small, 0), SMALL_LEN + 1));
    assert_true(SHM_OPS->ep_can_serve(ep, raddr(&s->small, 0), SMALL_LEN));
    /* Not marked shm: never mapped. */
    assert_false(SHM_OPS->ep_can_serve(ep, raddr(&s->hidden, 0), 1));
    SHM_OPS->ep_destroy(ep);
}

static void shm_ep_create_unusable_peers(void **state)
{
    test_state_t  *s       = *state;
    test_region_t *regs[1] = {&s->region};
    const int      yes[1] = {1}, no[1] = {0};
    dango_tp_ep_t *ep;
    char           desc[DESC_MAX];

    /* No shm section: the engine falls back to tcp. */
    desc_build(desc, sizeof(desc), NULL, regs, yes, 1);
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, desc, &ep));
    desc_build(desc, sizeof(desc), "{}", regs, yes, 1);
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, desc, &ep));
    desc_build(desc, sizeof(desc), "{\"uds\":7}", regs, yes, 1);
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, desc, &ep));
    /* A socket nobody listens on, and a name that is not abstract. */
    desc_build(desc, sizeof(desc),
               "{\"uds\":\"@dango-shm-ffffffffffffffff-1\"}", regs, yes, 1);
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, desc, &ep));
    desc_build(desc, sizeof(desc), "{\"uds\":\"/tmp/x\"}", regs, yes, 1);
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, desc, &ep));
    /* Nothing marked shm. */
    desc_build(desc, sizeof(desc), s->target.shm_json, regs, no, 1);
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, desc, &ep));
    /* No descriptor at all, or not JSON. */
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, NULL, &ep));
    assert_dango_err(DANGO_EINVAL, ep_create(s->client, "{\"name\":", &ep));
}

static void shm_ep_create_skips_bad_buffers(void **state)
{
    test_state_t  *s     = *state;
    test_region_t  bogus = {.addr = (uint8_t *)(uintptr_t)0x10000, .len = 4096};
    test_region_t *regs[2] = {&bogus, &s->small};
    const int      yes[2]  = {1, 1};
    dango_tp_ep_t *ep;
    char           desc[DESC_MAX];

    /* The target has no memfd for the first buffer: only the second. */
    desc_build(desc, sizeof(desc), s->target.shm_json, regs, yes, 2);
    assert_dango_ok(ep_create(s->client, desc, &ep));
    assert_false(SHM_OPS->ep_can_serve(ep, 0x10000, 1));
    assert_true(SHM_OPS->ep_can_serve(ep, raddr(&s->small, 0), 1));
    SHM_OPS->ep_destroy(ep);

    /* Only the bogus one: nothing mapped. */
    desc_build(desc, sizeof(desc), s->target.shm_json, regs, yes, 1);
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, desc, &ep));

    /* The target reports another length than the descriptor. */
    s->small.report_len = SMALL_LEN / 2;
    desc_build(desc, sizeof(desc), s->target.shm_json, regs + 1, yes, 1);
    assert_dango_err(DANGO_ENOTSUP, ep_create(s->client, desc, &ep));
    s->small.report_len = SMALL_LEN;
    assert_dango_ok(ep_create(s->client, desc, &ep));
    SHM_OPS->ep_destroy(ep);
}

static void shm_token_must_match(void **state)
{
    test_state_t     *s       = *state;
    test_region_t    *regs[1] = {&s->small};
    const int         yes[1]  = {1};
    test_target_t     t;
    dango_tp_iface_t *good, *bad, *none;
    dango_tp_ep_t    *ep;
    char              desc[DESC_MAX];
    uint8_t           buf[100];

    host_init(&t.host);
    host_add(&t.host, &s->small);
    assert_dango_ok(target_open(&t, s->loops, 0x5555, "s3cret"));
    desc_build(desc, sizeof(desc), t.shm_json, regs, yes, 1);
    assert_dango_ok(
        iface_open(s->loops, 0x5556, "good", "s3cret", NULL, &good));
    assert_dango_ok(iface_open(s->loops, 0x5557, "bad", "other", NULL, &bad));
    assert_dango_ok(iface_open(s->loops, 0x5558, "none", NULL, NULL, &none));

    /* Server has a token, client none or another one. */
    assert_dango_err(DANGO_EAUTH, ep_create(none, desc, &ep));
    assert_dango_err(DANGO_EAUTH, ep_create(bad, desc, &ep));

    assert_dango_ok(ep_create(good, desc, &ep));
    fill_random(buf, sizeof(buf), 5);
    assert_dango_ok(xfer(ep, DANGO_TP_OP_WRITE, buf, raddr(&s->small, 1),
                         sizeof(buf), 4096));
    assert_memory_equal(buf, s->small.addr + 1, sizeof(buf));
    SHM_OPS->ep_destroy(ep);

    /* Client has a token, server none: the server cannot prove it. */
    assert_dango_err(DANGO_EAUTH, ep_create(good, s->desc, &ep));

    SHM_OPS->iface_close(none);
    SHM_OPS->iface_close(bad);
    SHM_OPS->iface_close(good);
    SHM_OPS->iface_close(t.iface);
}

static void shm_server_refuses_unauthenticated_clients(void **state)
{
    test_state_t *s = *state;
    test_target_t t;
    uint8_t       cnonce[DANGO_AUTH_NONCE_LEN], snonce[DANGO_AUTH_NONCE_LEN];
    uint8_t       proof[DANGO_AUTH_PROOF_LEN];
    size_t        proof_len;
    int           fd;

    host_init(&t.host);
    host_add(&t.host, &s->small);
    assert_dango_ok(target_open(&t, s->loops, 0x6666, "s3cret"));

    /* Skips AUTH and asks for a buffer right away. */
    fd = raw_connect(t.shm_json);
    assert_true(fd >= 0);
    assert_dango_ok(raw_hello(fd, cnonce));
    assert_dango_ok(raw_hello_ack(fd, snonce, &proof_len));
    assert_int_equal(DANGO_AUTH_PROOF_LEN, proof_len);
    assert_dango_ok(raw_map_request(fd, raddr(&s->small, 0)));
    assert_true(raw_closed_by_server(fd));
    close(fd);

    /* Sends a proof made with the wrong token. */
    fd = raw_connect(t.shm_json);
    assert_true(fd >= 0);
    assert_dango_ok(raw_hello(fd, cnonce));
    assert_dango_ok(raw_hello_ack(fd, snonce, &proof_len));
    {
        Dango__Ctrl__Auth auth = DANGO__CTRL__AUTH__INIT;

        assert_dango_ok(
            dango_auth_proof("wrong", "dango-cli", cnonce, snonce, proof));
        auth.proof.data = proof;
        auth.proof.len  = sizeof(proof);
        assert_dango_ok(raw_send_msg(fd, DANGO_FRAME_AUTH, &auth.base));
    }

    /* The server may already have hung up: the send may fail. */
    (void)raw_map_request(fd, raddr(&s->small, 0));
    assert_true(raw_closed_by_server(fd));
    close(fd);

    SHM_OPS->iface_close(t.iface);
}

static void shm_server_survives_garbage(void **state)
{
    test_state_t  *s = *state;
    dango_tp_ep_t *ep;
    dango_frame_t  hdr;
    uint8_t        junk[100], cnonce[DANGO_AUTH_NONCE_LEN];
    int            fd;

    /* Random bytes: bad magic. Exactly one error is logged for it. */
    dango_log_set_handler(dango_test_log_swallow, NULL);
    __atomic_store_n(&dango_test_log_errors, 0, __ATOMIC_RELAXED);
    fill_random(junk, sizeof(junk), 77);
    fd = raw_connect(s->target.shm_json);
    assert_true(fd >= 0);
    assert_int_equal(sizeof(junk), send(fd, junk, sizeof(junk), 0));
    assert_true(raw_closed_by_server(fd));
    close(fd);
    assert_int_equal(1,
                     __atomic_load_n(&dango_test_log_errors, __ATOMIC_RELAXED));

    /* A valid HELLO header with a payload that is not protobuf. */
    memset(junk, 0xff, sizeof(junk));
    dango_frame_init(&hdr, DANGO_FRAME_HELLO, 0, 0, 20, 0);
    fd = raw_connect(s->target.shm_json);
    assert_true(fd >= 0);
    assert_dango_ok(dango_sock_send_frame(
        fd, &hdr, junk, 20, dango_time_ns() + DANGO_NSEC_PER_SEC));
    assert_true(raw_closed_by_server(fd));
    close(fd);

    /* A map request before the handshake. */
    fd = raw_connect(s->target.shm_json);
    assert_true(fd >= 0);
    assert_dango_ok(raw_map_request(fd, raddr(&s->region, 0)));
    assert_true(raw_closed_by_server(fd));
    close(fd);

    /* A second HELLO where a map request is due. */
    fd = raw_connect(s->target.shm_json);
    assert_true(fd >= 0);
    assert_dango_ok(raw_hello(fd, cnonce));
    {
        uint8_t snonce[DANGO_AUTH_NONCE_LEN];
        size_t  plen;

        assert_dango_ok(raw_hello_ack(fd, snonce, &plen));
        assert_int_equal(0, plen); /* no token: no proof */
    }

    assert_dango_ok(raw_hello(fd, cnonce));
    assert_true(raw_closed_by_server(fd));
    close(fd);

    /* A header that promises more than it sends, then hangs up. */
    dango_frame_init(&hdr, DANGO_FRAME_HELLO, 0, 0, 1000, 0);
    fd = raw_connect(s->target.shm_json);
    assert_true(fd >= 0);
    assert_int_equal(sizeof(hdr), send(fd, &hdr, sizeof(hdr), 0));
    assert_int_equal(10, send(fd, junk, 10, 0));
    close(fd);

    /* Still serving. */
    assert_dango_ok(ep_create(s->client, s->desc, &ep));
    fill_random(junk, sizeof(junk), 78);
    assert_dango_ok(xfer(ep, DANGO_TP_OP_WRITE, junk, raddr(&s->region, 5),
                         sizeof(junk), 4096));
    assert_memory_equal(junk, s->region.addr + 5, sizeof(junk));
    SHM_OPS->ep_destroy(ep);
}

static void shm_ep_destroy_waits_for_copies(void **state)
{
    test_state_t  *s = *state;
    test_slice_t  *slices;
    test_waiter_t  w;
    dango_tp_ep_t *ep;
    uint8_t       *src;
    unsigned       n = 64;

    src    = malloc(n * MIB);
    slices = calloc(n, sizeof(*slices));
    assert_non_null(src);
    assert_non_null(slices);
    fill_random(src, n * MIB, 3);
    waiter_init(&w);
    assert_dango_ok(ep_create(s->client, s->desc, &ep));
    for (unsigned i = 0; i < n; i++) {
        slice_init(&slices[i], &w, DANGO_TP_OP_WRITE, src + i * MIB,
                   raddr(&s->region, i * MIB), MIB);
        assert_dango_ok(SHM_OPS->post(ep, &slices[i].slice));
    }

    /* Returns only after every queued copy ran and completed. */
    SHM_OPS->ep_destroy(ep);
    assert_int_equal(n, w.done);
    assert_dango_ok(w.status);
    assert_memory_equal(src, s->region.addr, n * MIB);
    waiter_cleanup(&w);
    free(slices);
    free(src);
}

static void shm_post_fails_after_target_closes(void **state)
{
    test_state_t  *s       = *state;
    test_region_t *regs[1] = {&s->small};
    const int      yes[1]  = {1};
    test_target_t  t;
    dango_tp_ep_t *ep;
    test_waiter_t  w;
    test_slice_t   ts;
    uint8_t        b = 1;
    char           desc[DESC_MAX];
    int            rc = 0;

    host_init(&t.host);
    host_add(&t.host, &s->small);
    assert_dango_ok(target_open(&t, s->loops, 0x7777, NULL));
    desc_build(desc, sizeof(desc), t.shm_json, regs, yes, 1);
    assert_dango_ok(ep_create(s->client, desc, &ep));
    assert_dango_ok(xfer(ep, DANGO_TP_OP_WRITE, &b, raddr(&s->small, 0), 1, 1));
    SHM_OPS->iface_close(t.iface);

    /* Liveness is sampled every 10 ms: bounded retries. */
    waiter_init(&w);
    for (unsigned i = 1; (i <= 2000) && (rc == 0); i++) {
        struct timespec d = {0, 1000000};

        slice_init(&ts, &w, DANGO_TP_OP_WRITE, &b, raddr(&s->small, 0), 1);
        rc = SHM_OPS->post(ep, &ts.slice);
        if (rc == 0) {
            assert_dango_ok(waiter_wait(&w, i));
            nanosleep(&d, NULL);
        }
    }

    assert_dango_err(DANGO_EPEER_GONE, rc);
    SHM_OPS->ep_destroy(ep);
    waiter_cleanup(&w);
}

/* ---------- cross-process test ---------- */

#define XP_LEN (8 * MIB + 5)

/* Reads one line (at most @len - 1 bytes) from @fd within 30 s. */
static int read_line(int fd, char *buf, size_t len)
{
    size_t off = 0;

    while (off + 1 < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t       n;

        if (poll(&pfd, 1, 30000) != 1) {
            return -1;
        }

        n = read(fd, buf + off, 1);
        if (n != 1) {
            return -1;
        }

        if (buf[off] == '\n') {
            buf[off] = '\0';
            return 0;
        }

        off++;
    }

    return -1;
}

/* The target process: serves one buffer, then checks what landed in it. */
static int child_main(int to_parent, int from_parent)
{
    dango_loop_t *loops[NUM_LOOPS] = {NULL};
    test_target_t t;
    test_region_t r;
    uint64_t      want;
    char          line[256];
    int           ok = 0;

    if ((region_create(&r, XP_LEN) != 0) || (loops_start(loops) != 0)) {
        return 10;
    }

    fill_random(r.addr, XP_LEN, 0xc41d);
    host_init(&t.host);
    host_add(&t.host, &r);
    if (target_open(&t, loops, 0xabcdef, NULL) != 0) {
        return 11;
    }

    snprintf(line, sizeof(line), "%s %" PRIu64 "\n", t.shm_json, raddr(&r, 0));
    if (write(to_parent, line, strlen(line)) != (ssize_t)strlen(line)) {
        return 12;
    }

    /* The parent has written when it sends the expected checksum. */
    if ((read_line(from_parent, line, sizeof(line)) == 0) &&
        (sscanf(line, "%" SCNu64, &want) == 1)) {
        ok = (checksum(r.addr, XP_LEN) == want);
    }

    SHM_OPS->iface_close(t.iface);
    loops_destroy(loops);
    region_destroy(&r);
    return ok ? 0 : 1;
}

static void shm_cross_process_write(void **state)
{
    dango_loop_t     *loops[NUM_LOOPS] = {NULL};
    test_region_t     fake             = {.len = XP_LEN};
    test_region_t    *regs[1]          = {&fake};
    const int         yes[1]           = {1};
    dango_tp_iface_t *client;
    dango_tp_ep_t    *ep;
    int               up[2], down[2], status = -1;
    char              line[256], desc[DESC_MAX], shm_json[128];
    uint8_t          *buf, *expect;
    uint64_t          addr;
    pid_t             pid, w = 0;
    test_waiter_t     wt;
    test_slice_t      ts;
    int               rc = 0;

    assert_int_equal(0, pipe2(up, O_CLOEXEC));
    assert_int_equal(0, pipe2(down, O_CLOEXEC));
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        _exit(child_main(up[1], down[0]));
    }

    close(up[1]);
    close(down[0]);
    assert_int_equal(0, read_line(up[0], line, sizeof(line)));
    assert_int_equal(2, sscanf(line, "%127s %" SCNu64, shm_json, &addr));
    fake.addr = (uint8_t *)(uintptr_t)addr;
    desc_build(desc, sizeof(desc), shm_json, regs, yes, 1);

    assert_int_equal(0, loops_start(loops));
    assert_dango_ok(iface_open(loops, 0xfeed, "parent", NULL, NULL, &client));
    assert_dango_ok(ep_create(client, desc, &ep));

    /* READ what the child put there, then overwrite it. */
    buf    = malloc(XP_LEN);
    expect = malloc(XP_LEN);
    assert_non_null(buf);
    assert_non_null(expect);
    fill_random(expect, XP_LEN, 0xc41d);
    assert_dango_ok(xfer(ep, DANGO_TP_OP_READ, buf, addr, XP_LEN, MIB));
    assert_memory_equal(expect, buf, XP_LEN);
    fill_random(buf, XP_LEN, 0xbeef);
    assert_dango_ok(xfer(ep, DANGO_TP_OP_WRITE, buf, addr, XP_LEN, MIB));
    snprintf(line, sizeof(line), "%" PRIu64 "\n", checksum(buf, XP_LEN));
    assert_int_equal(strlen(line), write(down[1], line, strlen(line)));

    for (int i = 0; (i < 3000) && (w == 0); i++) {
        struct timespec d = {0, 10000000};

        w = waitpid(pid, &status, WNOHANG);
        if (w == 0) {
            nanosleep(&d, NULL);
        }
    }

    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("target process did not exit in 30 s");
    }

    assert_true(WIFEXITED(status));
    assert_int_equal(0, WEXITSTATUS(status));

    /* The target is gone: posts fail instead of landing in orphan pages. */
    waiter_init(&wt);
    for (unsigned i = 1; (i <= 2000) && (rc == 0); i++) {
        struct timespec d = {0, 1000000};

        slice_init(&ts, &wt, DANGO_TP_OP_WRITE, buf, addr, 1);
        rc = SHM_OPS->post(ep, &ts.slice);
        if (rc == 0) {
            assert_dango_ok(waiter_wait(&wt, i));
            nanosleep(&d, NULL);
        }
    }

    assert_dango_err(DANGO_EPEER_GONE, rc);
    waiter_cleanup(&wt);

    SHM_OPS->ep_destroy(ep);
    SHM_OPS->iface_close(client);
    loops_destroy(loops);
    close(up[0]);
    close(down[1]);
    free(buf);
    free(expect);
}

int main(void)
{
    const struct CMUnitTest xproc[] = {
        cmocka_unit_test(shm_cross_process_write),
    };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shm_query_reports_same_host_and_socket),
        cmocka_unit_test(shm_config_options_apply),
        cmocka_unit_test(shm_iface_open_same_instance_fails),
        cmocka_unit_test(shm_iface_open_oom),
        cmocka_unit_test(shm_write_read_sizes),
        cmocka_unit_test(shm_post_out_of_range_touches_nothing),
        cmocka_unit_test(shm_can_serve_edges),
        cmocka_unit_test(shm_ep_create_unusable_peers),
        cmocka_unit_test(shm_ep_create_skips_bad_buffers),
        cmocka_unit_test(shm_token_must_match),
        cmocka_unit_test(shm_server_refuses_unauthenticated_clients),
        cmocka_unit_test(shm_server_survives_garbage),
        cmocka_unit_test(shm_ep_destroy_waits_for_copies),
        cmocka_unit_test(shm_post_fails_after_target_closes),
    };
    int failed;

    dango_test_quiet_logs();
    /* Forks: must run before this process has any thread. */
    failed = cmocka_run_group_tests_name("shm_xproc", xproc, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("shm", tests, group_setup, group_teardown);
    return failed;
}
