/*
 * Unit tests of the RPC layer on 127.0.0.1: a server on its own loop thread
 * and clients in the test's threads. Round trips of every size class,
 * status codes, many threads at once with every reply checked against its
 * own request, replies deferred to other threads and sent out of order,
 * timeouts with late replies, a server that dies mid-call and comes back,
 * refused connections, tokens both ways, malformed and hostile input, limits
 * (payload size, connections, pending calls, handshake time) and allocation
 * failures during create. Every test runs twice: with the client's default
 * lanes (a caller borrows a connection of its own) and with none (every call
 * over the shared pipelined connection); the lane tests check what is
 * particular to lanes. Every wait is bounded; nothing sleeps to
 * synchronise: tests wait on conditions with deadlines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include "common/alloc.h"
#include "common/loop.h"
#include "common/time.h"
#include "dango_ctrl.pb-c.h"
#include "net/auth.h"
#include "net/rpc.h"
#include "net/rpc_chan.h"
#include "net/sock.h"

#define TEST_WAIT_NS  (10 * DANGO_NSEC_PER_SEC)
#define TEST_CALL_NS  (20 * DANGO_NSEC_PER_SEC)
#define TEST_SHORT_NS (150 * DANGO_NSEC_PER_MSEC)
#define TEST_THREADS  8
#define TEST_CALLS    2000
#define TEST_HELD_MAX 64

enum {
    M_ECHO   = 1, /* reply = request, from the handler */
    M_STATUS = 2, /* request = int32 status to reply with */
    M_WORKER = 3, /* echo from the test's worker thread */
    M_HOLD   = 4, /* kept until the test answers it */
    M_PB     = 5, /* Notify in, Notify out */
    M_BAD    = 6, /* replies with a positive status and with bytes that are
                     no protobuf message */
    M_HUGE = 7,   /* replies with more than DANGO_FRAME_RPC_MAX bytes */
    M_PEER = 8,   /* replies with dango_rpc_call_peer() */
};

typedef struct test_held {
    dango_rpc_call_t *call;
    void             *data;
    size_t            len;
} test_held_t;

typedef struct test_server {
    dango_loop_t       *loop;
    dango_rpc_server_t *srv;
    char                addr[DANGO_ADDR_STR_MAX];
    long                live_before;

    pthread_mutex_t lock;
    pthread_cond_t  cond;
    test_held_t     held[TEST_HELD_MAX];
    unsigned        num_held;
    unsigned long   served; /* requests seen by the handler */
    int             last_reply_rc;

    /* worker: echoes M_WORKER calls from its own thread */
    pthread_t   worker;
    int         worker_stop;
    test_held_t work[4096];
    unsigned    work_head, work_tail;
} test_server_t;

/* dango_rpc_client_params_t::lanes of test_client(): the suite runs with 0
 * (the default lanes) and with -1 (the shared connection only). */
static int g_lanes;
static int g_local;     /* dango_rpc_client_params_t::local of test clients */
static int g_srv_local; /* dango_rpc_server_params_t::local_lanes */

/* ---------- helpers ---------- */

/* cmocka's asserts may only run on the test's thread; elsewhere, abort. */
#define test_check(_cond)                                                      \
    do {                                                                       \
        if (!(_cond)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #_cond);                                                   \
            abort();                                                           \
        }                                                                      \
    } while (0)

static struct timespec test_abs(uint64_t ns_from_now)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ns_from_now / DANGO_NSEC_PER_SEC);
    ts.tv_nsec += (long)(ns_from_now % DANGO_NSEC_PER_SEC);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }

    return ts;
}

static void *test_dup(const void *p, size_t len)
{
    void *d = malloc(len ? len : 1);

    test_check(d != NULL);
    if (len > 0) {
        memcpy(d, p, len);
    }

    return d;
}

static void test_fill(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

/* ---------- the test server ---------- */

static void test_handler(void *arg, dango_rpc_call_t *call, uint32_t method,
                         const void *req, size_t len)
{
    test_server_t *ts = arg;
    int            rc = 0;

    pthread_mutex_lock(&ts->lock);
    ts->served++;
    pthread_mutex_unlock(&ts->lock);

    switch (method) {
    case M_ECHO:
        rc = dango_rpc_reply(call, 0, req, len);
        break;
    case M_STATUS: {
        int32_t status = 0;

        test_check(len == sizeof(status));
        memcpy(&status, req, sizeof(status));
        rc = dango_rpc_reply(call, status, req, len);
        break;
    }
    case M_WORKER:
    case M_HOLD:
        pthread_mutex_lock(&ts->lock);
        if (method == M_HOLD) {
            test_check(ts->num_held < TEST_HELD_MAX);
            ts->held[ts->num_held++] =
                (test_held_t){call, test_dup(req, len), len};
        } else {
            unsigned n = ts->work_tail - ts->work_head;

            test_check(n < DANGO_ARRAY_SIZE(ts->work));
            ts->work[ts->work_tail++ % DANGO_ARRAY_SIZE(ts->work)] =
                (test_held_t){call, test_dup(req, len), len};
        }

        pthread_cond_broadcast(&ts->cond);
        pthread_mutex_unlock(&ts->lock);
        return;
    case M_PB: {
        Dango__Ctrl__Notify *in =
            dango__ctrl__notify__unpack(NULL, len, (const uint8_t *)req);
        Dango__Ctrl__Notify out = DANGO__CTRL__NOTIFY__INIT;
        uint8_t             rev[256];

        test_check(in != NULL);
        test_check(in->message.len <= sizeof(rev));
        for (size_t i = 0; i < in->message.len; i++) {
            rev[i] = in->message.data[in->message.len - 1 - i];
        }

        out.from         = "server";
        out.message.data = rev;
        out.message.len  = in->message.len;
        rc               = dango_rpc_reply_pb(call, 0, &out.base);
        dango__ctrl__notify__free_unpacked(in, NULL);
        break;
    }
    case M_BAD:
        if (len == 0) {
            rc = dango_rpc_reply(call, 5, NULL, 0); /* positive: invalid */
        } else {
            static const uint8_t junk[] = {0xff, 0xff, 0xff};

            rc = dango_rpc_reply(call, 0, junk, sizeof(junk));
        }
        break;
    case M_HUGE:
        rc = dango_rpc_reply(call, 0, req, DANGO_FRAME_RPC_MAX + 1);
        break;
    case M_PEER: {
        const char *peer = dango_rpc_call_peer(call);

        rc = dango_rpc_reply(call, 0, peer, strlen(peer));
        break;
    }
    default:
        rc = dango_rpc_reply(call, DANGO_ENOSYS, NULL, 0);
        break;
    }

    pthread_mutex_lock(&ts->lock);
    ts->last_reply_rc = rc;
    pthread_mutex_unlock(&ts->lock);
}

static void *test_worker_main(void *arg)
{
    test_server_t *ts = arg;

    pthread_mutex_lock(&ts->lock);
    for (;;) {
        test_held_t h;

        while ((ts->work_head == ts->work_tail) && !ts->worker_stop) {
            pthread_cond_wait(&ts->cond, &ts->lock);
        }

        if (ts->work_head == ts->work_tail) {
            break;
        }

        h = ts->work[ts->work_head++ % DANGO_ARRAY_SIZE(ts->work)];
        pthread_mutex_unlock(&ts->lock);
        test_check(dango_rpc_reply(h.call, 0, h.data, h.len) == 0);
        free(h.data);
        pthread_mutex_lock(&ts->lock);
    }

    pthread_mutex_unlock(&ts->lock);
    return NULL;
}

static int test_server_start(test_server_t *ts, const char *listen,
                             const char *token, unsigned max_conns,
                             unsigned max_pending)
{
    dango_rpc_server_params_t p = {
        .loop        = ts->loop,
        .listen      = listen,
        .token       = token,
        .handler     = test_handler,
        .arg         = ts,
        .max_conns   = max_conns,
        .max_pending = max_pending,
        .local_lanes = g_srv_local,
    };
    int rc = dango_rpc_server_create(&p, &ts->srv);

    if (rc == 0) {
        snprintf(ts->addr, sizeof(ts->addr), "%s",
                 dango_rpc_server_addr(ts->srv));
    }

    return rc;
}

static test_server_t *test_server_new(const char *token, unsigned max_conns,
                                      unsigned max_pending)
{
    test_server_t     *ts = calloc(1, sizeof(*ts));
    pthread_condattr_t cattr;

    assert_non_null(ts);
    dango_test_quiet_logs();
    ts->live_before = dango__alloc_live();
    pthread_mutex_init(&ts->lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&ts->cond, &cattr);
    pthread_condattr_destroy(&cattr);
    assert_dango_ok(dango_loop_create("rpc-test-srv", &ts->loop));
    assert_dango_ok(dango_loop_start(ts->loop));
    assert_int_equal(pthread_create(&ts->worker, NULL, test_worker_main, ts),
                     0);
    assert_dango_ok(
        test_server_start(ts, "127.0.0.1:0", token, max_conns, max_pending));
    assert_int_equal(strncmp(ts->addr, "127.0.0.1:", 10), 0);
    return ts;
}

/* Waits until the server holds @n calls. */
static void test_wait_held(test_server_t *ts, unsigned n)
{
    struct timespec dl = test_abs(TEST_WAIT_NS);

    pthread_mutex_lock(&ts->lock);
    while (ts->num_held < n) {
        if (pthread_cond_timedwait(&ts->cond, &ts->lock, &dl) == ETIMEDOUT) {
            break;
        }
    }

    assert_int_equal(ts->num_held, n);
    pthread_mutex_unlock(&ts->lock);
}

/* Answers held call @i with its own payload (from the calling thread). */
static int test_answer(test_server_t *ts, unsigned i, int status)
{
    test_held_t h;
    int         rc;

    pthread_mutex_lock(&ts->lock);
    assert_true(i < ts->num_held);
    h = ts->held[i];
    assert_non_null(h.call);
    ts->held[i].call = NULL;
    pthread_mutex_unlock(&ts->lock);
    rc = dango_rpc_reply(h.call, status, h.data, h.len);
    free(h.data);
    return rc;
}

static void test_server_free(test_server_t *ts)
{
    dango_rpc_server_destroy(ts->srv);
    for (unsigned i = 0; i < ts->num_held; i++) {
        if (ts->held[i].call != NULL) {
            assert_dango_ok(test_answer(ts, i, DANGO_ECANCELED));
        }
    }

    pthread_mutex_lock(&ts->lock);
    ts->worker_stop = 1;
    pthread_cond_broadcast(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    pthread_join(ts->worker, NULL);
    dango_loop_destroy(ts->loop); /* runs the tasks still posted */
    if (ts->live_before >= 0) {
        assert_int_equal(dango__alloc_live(), ts->live_before);
    }

    pthread_mutex_destroy(&ts->lock);
    pthread_cond_destroy(&ts->cond);
    free(ts);
}

/* Reads a counter the handler updates, under the handler's lock. */
static unsigned long test_served(test_server_t *ts)
{
    unsigned long n;

    pthread_mutex_lock(&ts->lock);
    n = ts->served;
    pthread_mutex_unlock(&ts->lock);
    return n;
}

static int test_last_reply_rc(test_server_t *ts)
{
    int rc;

    pthread_mutex_lock(&ts->lock);
    rc = ts->last_reply_rc;
    pthread_mutex_unlock(&ts->lock);
    return rc;
}

static dango_rpc_client_t *test_client_lanes(const char *addr,
                                             const char *token, int lanes)
{
    dango_rpc_client_params_t p = {.connect_timeout_ns = TEST_WAIT_NS,
                                   .call_timeout_ns    = TEST_CALL_NS,
                                   .lanes              = lanes,
                                   .local              = g_local};
    dango_rpc_client_t       *cli;

    assert_dango_ok(dango_rpc_client_create(addr, token, &p, &cli));
    return cli;
}

static dango_rpc_client_t *test_client(const char *addr, const char *token)
{
    return test_client_lanes(addr, token, g_lanes);
}

/* The address the server sees the call of @cli come from, in @peer. */
static void test_peer(dango_rpc_client_t *cli, char *peer, size_t cap)
{
    void  *rep;
    size_t rlen;

    assert_dango_ok(dango_rpc_call(cli, M_PEER, NULL, 0, &rep, &rlen, 0));
    assert_true(rlen < cap);
    memcpy(peer, rep, rlen);
    peer[rlen] = '\0';
    dango_free(rep);
}

/* One echo of @len bytes through @method, checked. */
static void test_echo(dango_rpc_client_t *cli, uint32_t method, size_t len,
                      uint64_t seed)
{
    uint8_t *req  = malloc(len ? len : 1);
    void    *rep  = (void *)1;
    size_t   rlen = 12345;

    assert_non_null(req);
    test_fill(req, len, seed);
    assert_dango_ok(dango_rpc_call(cli, method, req, len, &rep, &rlen, 0));
    assert_int_equal(rlen, len);
    if (len == 0) {
        assert_null(rep);
    } else {
        assert_non_null(rep);
        assert_memory_equal(rep, req, len);
    }

    dango_free(rep);
    free(req);
}

/* ---------- round trips ---------- */

static void rpc_echo_sizes(void **state)
{
    static const size_t sizes[] = {0,   1,     64 << 10, 16 << 20,
                                   100, 16384, 16344,    16345};
    test_server_t      *ts      = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli     = test_client(ts->addr, NULL);
    char                peer[DANGO_ADDR_STR_MAX];
    size_t              rlen;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(sizes); i++) {
        test_echo(cli, M_ECHO, sizes[i], i);
        test_echo(cli, M_WORKER, sizes[i], i + 100); /* deferred reply */
    }

    /* A reply can be discarded by the caller. */
    assert_dango_ok(dango_rpc_call(cli, M_ECHO, "abc", 3, NULL, NULL, 0));
    assert_dango_ok(dango_rpc_call(cli, M_ECHO, "abc", 3, NULL, &rlen, 0));
    assert_int_equal(rlen, 3);

    /* The handler sees where the call came from: the local channel's
     * Unix connection (named by the client's pid), or the network. */
    test_peer(cli, peer, sizeof(peer));
    if (g_local >= 0) {
        char want[32];

        snprintf(want, sizeof(want), "local pid %ld", (long)getpid());
        assert_string_equal(peer, want);
    } else {
        assert_int_equal(strncmp(peer, "127.0.0.1:", 10), 0);
    }

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

static void rpc_status_codes(void **state)
{
    static const int32_t codes[] = {
        DANGO_ENOENT,      DANGO_EEXIST,   DANGO_ENOSPC, DANGO_EREPLICA_UNAVAIL,
        DANGO_ELEASE_HELD, DANGO_EEVICTED, DANGO_ESTATE, DANGO_EAGAIN};
    test_server_t      *ts   = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli  = test_client(ts->addr, NULL);
    void               *rep  = (void *)0x1;
    size_t              rlen = 77;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(codes); i++) {
        assert_dango_err(codes[i],
                         dango_rpc_call(cli, M_STATUS, &codes[i],
                                        sizeof(codes[i]), &rep, &rlen, 0));
        assert_ptr_equal(rep, (void *)0x1); /* untouched on error */
        assert_int_equal(rlen, 77);
    }

    /* Status 0 carries the payload. */
    {
        int32_t zero = 0;

        assert_dango_ok(
            dango_rpc_call(cli, M_STATUS, &zero, sizeof(zero), &rep, &rlen, 0));
        assert_int_equal(rlen, sizeof(zero));
        dango_free(rep);
    }

    /* Unknown method: what the handler chose. */
    assert_dango_err(DANGO_ENOSYS,
                     dango_rpc_call(cli, 999, NULL, 0, NULL, NULL, 0));

    /* A positive status is refused by reply() and reaches the client as a
     * protocol error; an oversized reply as DANGO_EMSGSIZE. */
    assert_dango_err(DANGO_EPROTO,
                     dango_rpc_call(cli, M_BAD, NULL, 0, NULL, NULL, 0));
    assert_int_equal(test_last_reply_rc(ts), DANGO_EINVAL);
    assert_dango_err(DANGO_EMSGSIZE,
                     dango_rpc_call(cli, M_HUGE, "x", 1, NULL, NULL, 0));
    assert_int_equal(test_last_reply_rc(ts), DANGO_EMSGSIZE);
    assert_dango_err(DANGO_EINVAL, dango_rpc_reply(NULL, 0, NULL, 0));

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

static void rpc_protobuf_helpers(void **state)
{
    test_server_t       *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t  *cli = test_client(ts->addr, NULL);
    Dango__Ctrl__Notify  req = DANGO__CTRL__NOTIFY__INIT;
    Dango__Ctrl__Notify *rep = NULL;
    ProtobufCMessage    *msg = NULL;

    (void)state;
    req.from         = "client";
    req.message.data = (uint8_t *)"hello";
    req.message.len  = 5;
    assert_dango_ok(dango_rpc_call_pb(
        cli, M_PB, &req.base, &dango__ctrl__notify__descriptor, &msg, 0));
    rep = (Dango__Ctrl__Notify *)msg;
    assert_string_equal(rep->from, "server");
    assert_int_equal(rep->message.len, 5);
    assert_memory_equal(rep->message.data, "olleh", 5);
    protobuf_c_message_free_unpacked(msg, NULL);

    /* Bytes that are not the expected message. */
    msg = NULL;
    assert_dango_err(DANGO_EPROTO,
                     dango_rpc_call_pb(cli, M_BAD, &req.base,
                                       &dango__ctrl__notify__descriptor, &msg,
                                       0));
    assert_null(msg);
    assert_dango_err(DANGO_EINVAL,
                     dango_rpc_call_pb(cli, M_PB, NULL,
                                       &dango__ctrl__notify__descriptor, &msg,
                                       0));
    assert_dango_err(DANGO_EINVAL,
                     dango_rpc_call_pb(cli, M_PB, &req.base, NULL, &msg, 0));

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* ---------- many threads ---------- */

typedef struct test_thread_arg {
    dango_rpc_client_t *cli;
    unsigned            idx;
    unsigned            calls;
    int                 failures;
    int                 first_rc;
} test_thread_arg_t;

static void *test_caller_main(void *arg)
{
    test_thread_arg_t *a = arg;
    uint8_t            req[600];

    for (unsigned i = 0; i < a->calls; i++) {
        size_t   len    = (i * 37u + a->idx * 11u) % sizeof(req);
        uint64_t seed   = ((uint64_t)a->idx << 32) | i;
        uint32_t method = (i % 3 == 2) ? M_WORKER : M_ECHO;
        void    *rep    = NULL;
        size_t   rlen   = 0;
        int      rc;

        test_fill(req, len, seed);
        memcpy(req, &seed, DANGO_MIN(len, sizeof(seed))); /* unique */
        rc = dango_rpc_call(a->cli, method, req, len, &rep, &rlen, 0);
        if ((rc != 0) || (rlen != len) ||
            ((len > 0) && (memcmp(rep, req, len) != 0))) {
            if (a->failures++ == 0) {
                a->first_rc = rc;
            }
        }

        dango_free(rep);
    }

    return NULL;
}

static void test_run_callers(dango_rpc_client_t *cli, unsigned threads,
                             unsigned calls)
{
    pthread_t         tid[TEST_THREADS];
    test_thread_arg_t args[TEST_THREADS];

    assert_true(threads <= TEST_THREADS);
    for (unsigned t = 0; t < threads; t++) {
        args[t] = (test_thread_arg_t){.cli = cli, .idx = t, .calls = calls};
        assert_int_equal(
            pthread_create(&tid[t], NULL, test_caller_main, &args[t]), 0);
    }

    for (unsigned t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
    }

    for (unsigned t = 0; t < threads; t++) {
        if (args[t].failures != 0) {
            fail_msg("thread %u: %d bad replies, first rc %s", t,
                     args[t].failures, dango_err_name(args[t].first_rc));
        }
    }
}

static void rpc_many_threads(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client(ts->addr, NULL);

    (void)state;
    test_run_callers(cli, TEST_THREADS, TEST_CALLS);
    assert_int_equal(test_served(ts), TEST_THREADS * TEST_CALLS);
    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* With a tiny pending limit the server pauses and resumes reading. */
static void rpc_pending_limit(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 2);
    dango_rpc_client_t *cli = test_client(ts->addr, NULL);

    (void)state;
    test_run_callers(cli, TEST_THREADS, 300);
    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* ---------- deferred replies, timeouts ---------- */

typedef struct test_async_call {
    dango_rpc_client_t *cli;
    uint32_t            method;
    uint8_t             req[32];
    size_t              len;
    uint64_t            timeout_ns;
    int                 rc;
    void               *rep;
    size_t              rlen;
    uint64_t            elapsed_ns;
    int                 done; /* atomic */
    pthread_t           tid;
} test_async_call_t;

static void *test_async_main(void *arg)
{
    test_async_call_t *c     = arg;
    uint64_t           start = dango_time_ns();

    c->rc = dango_rpc_call(c->cli, c->method, c->req, c->len, &c->rep, &c->rlen,
                           c->timeout_ns);
    c->elapsed_ns = dango_time_ns() - start;
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_async_start(test_async_call_t *c, dango_rpc_client_t *cli,
                             uint32_t method, unsigned tag, uint64_t timeout_ns)
{
    memset(c, 0, sizeof(*c));
    c->cli        = cli;
    c->method     = method;
    c->len        = sizeof(c->req);
    c->timeout_ns = timeout_ns;
    test_fill(c->req, c->len, tag);
    assert_int_equal(pthread_create(&c->tid, NULL, test_async_main, c), 0);
}

static void rpc_deferred_out_of_order(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client(ts->addr, NULL);
    test_async_call_t   c[4];

    (void)state;
    /* One at a time, so the server holds them in a known order. */
    for (unsigned i = 0; i < 4; i++) {
        test_async_start(&c[i], cli, M_HOLD, i, 0);
        test_wait_held(ts, i + 1);
    }

    /* Answer from this thread (not the loop), last first. */
    for (unsigned i = 4; i-- > 0;) {
        assert_dango_ok(test_answer(ts, i, 0));
        pthread_join(c[i].tid, NULL);
        assert_dango_ok(c[i].rc);
        assert_int_equal(c[i].rlen, c[i].len);
        assert_memory_equal(c[i].rep, c[i].req, c[i].len);
        dango_free(c[i].rep);
        for (unsigned j = 0; j < i; j++) {
            /* the others are still held, so still waiting */
            assert_int_equal(__atomic_load_n(&c[j].done, __ATOMIC_ACQUIRE), 0);
        }
    }

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

static void rpc_timeout_then_late_reply(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client(ts->addr, NULL);
    void               *rep = NULL;
    size_t              rlen;
    uint64_t            start;

    (void)state;
    start = dango_time_ns();
    assert_dango_err(
        DANGO_ETIMEDOUT,
        dango_rpc_call(cli, M_HOLD, "late", 4, &rep, &rlen, TEST_SHORT_NS));
    assert_true(dango_time_ns() - start >= TEST_SHORT_NS);
    assert_null(rep);
    test_wait_held(ts, 1);

    /* The late reply reaches the client and is dropped; the next calls get
     * their own replies. */
    assert_dango_ok(test_answer(ts, 0, 0));
    for (unsigned i = 0; i < 50; i++) {
        test_echo(cli, M_ECHO, 4, 1000 + i);
    }

    /* A deadline that passes at once: the call times out, usually before its
     * request left the client (then it is withdrawn), unless the reply won
     * the race. */
    for (unsigned i = 0; i < 20; i++) {
        int rc = dango_rpc_call(cli, M_ECHO, "x", 1, NULL, NULL, 1);

        if ((rc != DANGO_ETIMEDOUT) && (rc != 0)) {
            fail_msg("call returned %s", dango_err_name(rc));
        }
    }

    test_echo(cli, M_ECHO, 10, 7);

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* ---------- connection failures ---------- */

static void rpc_server_dies_mid_call(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client(ts->addr, NULL);
    test_async_call_t   c;
    char                addr[DANGO_ADDR_STR_MAX];

    (void)state;
    test_echo(cli, M_ECHO, 8, 1);
    test_async_start(&c, cli, M_HOLD, 1, TEST_CALL_NS);
    test_wait_held(ts, 1);

    snprintf(addr, sizeof(addr), "%s", ts->addr);
    dango_rpc_server_destroy(ts->srv);
    ts->srv = NULL;
    pthread_join(c.tid, NULL);
    if ((c.rc != DANGO_ECONNRESET) && (c.rc != DANGO_EPEER_GONE)) {
        fail_msg("call returned %s", dango_err_name(c.rc));
    }

    assert_true(c.elapsed_ns < TEST_CALL_NS);

    /* The held call outlives the server; answering it only frees it. */
    assert_dango_ok(test_answer(ts, 0, 0));

    /* Nothing listens now. */
    assert_dango_err(DANGO_ECONNREFUSED,
                     dango_rpc_call(cli, M_ECHO, "x", 1, NULL, NULL, 0));

    /* A new server on the same port: the client reconnects by itself. */
    assert_dango_ok(test_server_start(ts, addr, NULL, 0, 0));
    assert_string_equal(ts->addr, addr);
    test_echo(cli, M_ECHO, 100, 2);
    test_echo(cli, M_WORKER, 100, 3);

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

static void rpc_connect_refused(void **state)
{
    char                addr[DANGO_ADDR_STR_MAX];
    dango_rpc_client_t *cli;
    long                live = dango__alloc_live();
    int                 lfd;

    (void)state;
    dango_test_quiet_logs();
    lfd = dango_sock_listen("127.0.0.1:0", 1);
    assert_true(lfd >= 0);
    assert_dango_ok(dango_sock_local_addr(lfd, addr, sizeof(addr)));
    close(lfd); /* the port is free and nothing listens */

    cli = test_client(addr, NULL);
    assert_dango_err(DANGO_ECONNREFUSED,
                     dango_rpc_call(cli, M_ECHO, "x", 1, NULL, NULL, 0));
    assert_dango_err(DANGO_ECONNREFUSED, /* tried again, lazily */
                     dango_rpc_call(cli, M_ECHO, NULL, 0, NULL, NULL, 0));
    dango_rpc_client_destroy(cli);
    assert_int_equal(dango__alloc_live(), live);
}

static void rpc_client_destroy_cancels(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client(ts->addr, NULL);
    test_async_call_t   c[3];

    (void)state;
    for (unsigned i = 0; i < 3; i++) {
        test_async_start(&c[i], cli, M_HOLD, i, TEST_CALL_NS);
    }

    test_wait_held(ts, 3);
    dango_rpc_client_destroy(cli);
    for (unsigned i = 0; i < 3; i++) {
        pthread_join(c[i].tid, NULL);
        assert_dango_err(DANGO_ECANCELED, c[i].rc);
        assert_true(c[i].elapsed_ns < TEST_CALL_NS);
    }

    /* The connection is gone: the replies are dropped. */
    for (unsigned i = 0; i < 3; i++) {
        assert_dango_ok(test_answer(ts, i, 0));
    }

    test_server_free(ts);
}

/* ---------- tokens ---------- */

static void rpc_tokens(void **state)
{
    test_server_t      *ts = test_server_new("cluster-secret", 0, 0);
    test_server_t      *open_ts;
    dango_rpc_client_t *cli;

    (void)state;
    /* Same token: served. */
    cli = test_client(ts->addr, "cluster-secret");
    test_echo(cli, M_ECHO, 64, 1);
    dango_rpc_client_destroy(cli);

    /* Client without a token against a server with one. */
    cli = test_client(ts->addr, NULL);
    assert_dango_err(DANGO_EAUTH,
                     dango_rpc_call(cli, M_ECHO, "x", 1, NULL, NULL, 0));
    dango_rpc_client_destroy(cli);

    /* Different tokens. */
    cli = test_client(ts->addr, "another-secret");
    assert_dango_err(DANGO_EAUTH,
                     dango_rpc_call(cli, M_ECHO, "x", 1, NULL, NULL, 0));
    dango_rpc_client_destroy(cli);

    /* Client with a token against a server without one. */
    open_ts              = test_server_new(NULL, 0, 0);
    open_ts->live_before = -1; /* ts may still free connections meanwhile */
    cli                  = test_client(open_ts->addr, "cluster-secret");
    assert_dango_err(DANGO_EAUTH,
                     dango_rpc_call(cli, M_ECHO, "x", 1, NULL, NULL, 0));
    dango_rpc_client_destroy(cli);
    assert_int_equal(test_served(ts), 1);
    assert_int_equal(test_served(open_ts), 0);
    test_server_free(open_ts);
    test_server_free(ts);
}

/* ---------- hostile peers ---------- */

static int test_raw_connect(const char *addr)
{
    int fd = dango_sock_connect(addr, TEST_WAIT_NS, 0);

    assert_true(fd >= 0);
    return fd;
}

/* True when the server closes @fd within the wait (data is skipped). */
static int test_raw_closed(int fd)
{
    uint64_t deadline = dango_time_ns() + TEST_WAIT_NS;
    char     buf[4096];

    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        uint64_t      now = dango_time_ns();
        ssize_t       n;

        if (now >= deadline) {
            return 0;
        }

        if (poll(&pfd, 1, (int)((deadline - now) / DANGO_NSEC_PER_MSEC) + 1) <=
            0) {
            continue;
        }

        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if ((n == 0) || ((n < 0) && (errno == ECONNRESET))) {
            return 1;
        }
    }
}

static void test_raw_send(int fd, uint8_t type, uint64_t id, uint64_t addr,
                          uint64_t length, const void *payload, size_t len)
{
    dango_frame_t hdr;

    dango_frame_init(&hdr, type, id, addr, length, 0);
    assert_dango_ok(dango_sock_send_frame(fd, &hdr, payload, len,
                                          dango_time_ns() + TEST_WAIT_NS));
}

/* Sends Hello on @fd and reads HelloAck (without token); the local
 * channel's socket name goes to @name (when not NULL). */
static void test_raw_handshake_name(int fd, char *name, size_t cap)
{
    Dango__Ctrl__Hello     hello = DANGO__CTRL__HELLO__INIT;
    Dango__Ctrl__HelloAck *ack;
    uint8_t                nonce[DANGO_AUTH_NONCE_LEN] = {1, 2, 3};
    uint8_t                buf[256];
    dango_frame_t          hdr;
    void                  *payload = NULL;
    size_t                 len;

    hello.version    = DANGO_FRAME_VERSION;
    hello.nonce.data = nonce;
    hello.nonce.len  = sizeof(nonce);
    len              = dango__ctrl__hello__pack(&hello, buf);
    test_raw_send(fd, DANGO_FRAME_HELLO, 0, 0, len, buf, len);
    assert_dango_ok(dango_sock_recv_frame(fd, &hdr, &payload,
                                          dango_time_ns() + TEST_WAIT_NS));
    assert_int_equal(hdr.type, DANGO_FRAME_HELLO_ACK);
    ack = dango__ctrl__hello_ack__unpack(NULL, hdr.length, payload);
    assert_non_null(ack);
    assert_int_equal(ack->status, 0);
    assert_int_equal(ack->nonce.len, DANGO_AUTH_NONCE_LEN);
    if (name != NULL) {
        assert_true(strlen(ack->local_addr) < cap);
        snprintf(name, cap, "%s", ack->local_addr);
    }

    dango__ctrl__hello_ack__free_unpacked(ack, NULL);
    dango_free(payload);
}

static void test_raw_handshake(int fd)
{
    test_raw_handshake_name(fd, NULL, 0);
}

/* Connects and does the handshake; returns the fd, ready. */
static int test_raw_hello(const char *addr)
{
    int fd = test_raw_connect(addr);

    test_raw_handshake(fd);
    return fd;
}

static void rpc_malformed_input(void **state)
{
    test_server_t      *ts = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli;
    uint8_t             junk[4096];
    dango_frame_t       hdr;
    void               *payload = NULL;
    int                 fd;

    (void)state;
    /* Random bytes instead of a handshake. */
    fd = test_raw_connect(ts->addr);
    test_fill(junk, sizeof(junk), 42);
    assert_dango_ok(dango_sock_send_all(fd, junk, sizeof(junk),
                                        dango_time_ns() + TEST_WAIT_NS));
    assert_true(test_raw_closed(fd));
    close(fd);

    /* A request before the handshake. */
    fd = test_raw_connect(ts->addr);
    test_raw_send(fd, DANGO_FRAME_RPC_REQ, 1, M_ECHO, 0, NULL, 0);
    assert_true(test_raw_closed(fd));
    close(fd);

    /* A hello larger than allowed before authentication. */
    fd = test_raw_connect(ts->addr);
    test_raw_send(fd, DANGO_FRAME_HELLO, 0, 0, 1 << 20, NULL, 0);
    assert_true(test_raw_closed(fd));
    close(fd);

    /* A hello that is no protobuf message. */
    fd = test_raw_connect(ts->addr);
    test_raw_send(fd, DANGO_FRAME_HELLO, 0, 0, 16, junk, 16);
    assert_true(test_raw_closed(fd));
    close(fd);

    /* After the handshake: a request above the limit, a reply frame from
     * the client, a method id out of range, garbage. */
    fd = test_raw_hello(ts->addr);
    test_raw_send(fd, DANGO_FRAME_RPC_REQ, 1, M_ECHO, DANGO_FRAME_RPC_MAX + 1,
                  NULL, 0);
    assert_true(test_raw_closed(fd));
    close(fd);

    fd = test_raw_hello(ts->addr);
    test_raw_send(fd, DANGO_FRAME_RPC_RESP, 1, 0, 0, NULL, 0);
    assert_true(test_raw_closed(fd));
    close(fd);

    fd = test_raw_hello(ts->addr);
    test_raw_send(fd, DANGO_FRAME_RPC_REQ, 1, 1ull << 32, 0, NULL, 0);
    assert_true(test_raw_closed(fd));
    close(fd);

    fd = test_raw_hello(ts->addr);
    test_raw_send(fd, DANGO_FRAME_RPC_REQ, 7, M_ECHO, 3, "abc", 3);
    assert_dango_ok(dango_sock_recv_frame(fd, &hdr, &payload,
                                          dango_time_ns() + TEST_WAIT_NS));
    assert_int_equal(hdr.type, DANGO_FRAME_RPC_RESP);
    assert_int_equal(hdr.id, 7);
    assert_int_equal(hdr.length, 3);
    assert_memory_equal(payload, "abc", 3);
    dango_free(payload);
    assert_dango_ok(dango_sock_send_all(fd, junk, sizeof(junk),
                                        dango_time_ns() + TEST_WAIT_NS));
    assert_true(test_raw_closed(fd));
    close(fd);

    /* A peer that vanishes mid-frame. */
    fd = test_raw_hello(ts->addr);
    test_raw_send(fd, DANGO_FRAME_RPC_REQ, 1, M_ECHO, 1 << 20, junk, 100);
    close(fd);

    /* The server is still up and serves a proper client. */
    cli = test_client(ts->addr, NULL);
    test_echo(cli, M_ECHO, 1000, 5);
    dango_rpc_client_destroy(cli);
    assert_true(__atomic_load_n(&dango_test_log_errors, __ATOMIC_RELAXED) > 0);
    test_server_free(ts);
}

static void rpc_token_server_refuses_unauthenticated(void **state)
{
    test_server_t *ts = test_server_new("cluster-secret", 0, 0);
    int            fd;

    (void)state;
    /* Hello answered (with the server's proof), then a request without the
     * client's proof: closed, and the handler never runs. */
    fd = test_raw_hello(ts->addr);
    test_raw_send(fd, DANGO_FRAME_RPC_REQ, 1, M_ECHO, 0, NULL, 0);
    assert_true(test_raw_closed(fd));
    close(fd);

    /* A wrong proof. */
    fd = test_raw_hello(ts->addr);
    {
        Dango__Ctrl__Auth auth                        = DANGO__CTRL__AUTH__INIT;
        uint8_t           proof[DANGO_AUTH_PROOF_LEN] = {0};
        uint8_t           buf[64];
        size_t            len;

        auth.proof.data = proof;
        auth.proof.len  = sizeof(proof);
        len             = dango__ctrl__auth__pack(&auth, buf);
        test_raw_send(fd, DANGO_FRAME_AUTH, 0, 0, len, buf, len);
    }

    test_raw_send(fd, DANGO_FRAME_RPC_REQ, 1, M_ECHO, 0, NULL, 0);
    assert_true(test_raw_closed(fd));
    close(fd);
    assert_int_equal(test_served(ts), 0);
    test_server_free(ts);
}

static void rpc_limits(void **state)
{
    test_server_t            *ts = test_server_new(NULL, 1, 0);
    dango_rpc_client_t       *a, *b;
    dango_rpc_server_params_t p = {0};
    dango_rpc_server_t       *srv;
    char                      big;
    int                       fd;

    (void)state;
    /* Oversized request: refused before anything is sent. */
    a = test_client(ts->addr, NULL);
    assert_dango_err(DANGO_EMSGSIZE,
                     dango_rpc_call(a, M_ECHO, &big, DANGO_FRAME_RPC_MAX + 1,
                                    NULL, NULL, 0));
    assert_int_equal(test_served(ts), 0);

    /* One connection allowed: the second client is turned away. */
    test_echo(a, M_ECHO, 1, 1);
    b = test_client(ts->addr, NULL);
    assert_dango_err(DANGO_EPEER_GONE,
                     dango_rpc_call(b, M_ECHO, "x", 1, NULL, NULL, 0));
    dango_rpc_client_destroy(a);
    dango_rpc_client_destroy(b);

    /* Argument checks. */
    assert_dango_err(DANGO_EINVAL,
                     dango_rpc_call(NULL, M_ECHO, NULL, 0, NULL, NULL, 0));
    a = test_client(ts->addr, NULL);
    assert_dango_err(DANGO_EINVAL,
                     dango_rpc_call(a, M_ECHO, NULL, 1, NULL, NULL, 0));
    dango_rpc_client_destroy(a);
    assert_dango_err(DANGO_EINVAL,
                     dango_rpc_client_create(NULL, NULL, NULL, &a));
    assert_dango_err(DANGO_EINVAL,
                     dango_rpc_client_create("127.0.0.1:x", NULL, NULL, &a));
    assert_dango_err(DANGO_EINVAL, dango_rpc_server_create(&p, &srv));
    p.loop    = ts->loop;
    p.handler = test_handler;
    p.arg     = ts;
    assert_dango_err(DANGO_EINVAL, dango_rpc_server_create(&p, &srv));
    p.listen = "127.0.0.1:99999";
    assert_dango_err(DANGO_EINVAL, dango_rpc_server_create(&p, &srv));
    p.listen = ts->addr;
    assert_dango_err(DANGO_EADDRINUSE, dango_rpc_server_create(&p, &srv));
    dango_rpc_server_destroy(NULL);
    dango_rpc_client_destroy(NULL);

    /* A peer that connects and says nothing is closed after the handshake
     * timeout; one that stops in the middle of a frame after the I/O
     * timeout. */
    p.listen               = "127.0.0.1:0";
    p.handshake_timeout_ns = 200 * DANGO_NSEC_PER_MSEC;
    p.io_timeout_ns        = 200 * DANGO_NSEC_PER_MSEC;
    assert_dango_ok(dango_rpc_server_create(&p, &srv));
    fd = test_raw_connect(dango_rpc_server_addr(srv));
    assert_true(test_raw_closed(fd));
    close(fd);
    fd = test_raw_hello(dango_rpc_server_addr(srv));
    test_raw_send(fd, DANGO_FRAME_RPC_REQ, 1, M_ECHO, 100, "0123456789", 10);
    assert_true(test_raw_closed(fd));
    close(fd);
    dango_rpc_server_destroy(srv);

    test_server_free(ts);
}

/* ---------- allocation failures ---------- */

static void rpc_client_create_oom(void **state)
{
    dango_rpc_client_t *cli  = NULL;
    long                live = dango__alloc_live();
    int                 rc   = DANGO_ENOMEM;

    (void)state;
    for (long n = 1; n < 100; n++) {
        dango__alloc_fail_after(n);
        rc = dango_rpc_client_create("127.0.0.1:1", "token", NULL, &cli);
        dango__alloc_fail_after(-1);
        if (rc == 0) {
            break;
        }

        assert_dango_err(DANGO_ENOMEM, rc);
        assert_int_equal(dango__alloc_live(), live);
    }

    assert_dango_ok(rc);
    dango_rpc_client_destroy(cli);
    assert_int_equal(dango__alloc_live(), live);
}

static void rpc_server_create_oom(void **state)
{
    dango_rpc_server_params_t p = {
        .listen = "127.0.0.1:0", .token = "token", .handler = test_handler};
    dango_rpc_server_t *srv  = NULL;
    dango_loop_t       *loop = NULL;
    long                live;
    int                 rc = DANGO_ENOMEM;

    (void)state;
    dango_test_quiet_logs();
    assert_dango_ok(dango_loop_create("rpc-oom", &loop));
    p.loop = loop;
    /* Once, so the loop has sized its tables for the listener's fd. */
    assert_dango_ok(dango_rpc_server_create(&p, &srv));
    dango_rpc_server_destroy(srv);
    dango_loop_run_once(loop, 0); /* frees detached handlers */
    live = dango__alloc_live();
    for (long n = 1; n < 100; n++) {
        dango__alloc_fail_after(n);
        rc = dango_rpc_server_create(&p, &srv);
        dango__alloc_fail_after(-1);
        if (rc == 0) {
            break;
        }

        assert_dango_err(DANGO_ENOMEM, rc);
        dango_loop_run_once(loop, 0); /* frees detached handlers */
        assert_int_equal(dango__alloc_live(), live);
    }

    assert_dango_ok(rc);
    dango_rpc_server_destroy(srv);
    dango_loop_run_once(loop, 0);
    assert_int_equal(dango__alloc_live(), live);
    dango_loop_destroy(loop);
}

/*
 * Epoch fencing (the store master's terms): replies carry the server's
 * epoch; a client refuses replies older than the highest it has seen or
 * been fenced at, with DANGO_ESTALE_TERM.
 */
static void rpc_stale_epoch_rejected(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client(ts->addr, NULL);
    dango_rpc_client_t *old = test_client(ts->addr, NULL);

    (void)state;
    /* Epoch 0 (a server that never sets one) is accepted by default. */
    test_echo(cli, M_ECHO, 16, 1);
    assert_int_equal(dango_rpc_client_epoch(cli), 0);

    /* A newer epoch is accepted and remembered. */
    dango_rpc_server_set_epoch(ts->srv, 7);
    test_echo(cli, M_ECHO, 16, 2);
    assert_int_equal(dango_rpc_client_epoch(cli), 7);
    test_echo(cli, M_WORKER, 16, 3); /* deferred replies are stamped too */

    /* The server goes back to an older term: its replies are refused. */
    dango_rpc_server_set_epoch(ts->srv, 5);
    assert_dango_err(DANGO_ESTALE_TERM,
                     dango_rpc_call(cli, M_ECHO, "abc", 3, NULL, NULL, 0));
    assert_dango_err(DANGO_ESTALE_TERM,
                     dango_rpc_call(cli, M_WORKER, "abc", 3, NULL, NULL, 0));
    assert_int_equal(dango_rpc_client_epoch(cli), 7);

    /* A client that never saw 7 accepts 5 until it is fenced above it. */
    test_echo(old, M_ECHO, 16, 4);
    assert_int_equal(dango_rpc_client_epoch(old), 5);
    dango_rpc_client_fence(old, 6);
    assert_dango_err(DANGO_ESTALE_TERM,
                     dango_rpc_call(old, M_ECHO, "abc", 3, NULL, NULL, 0));
    dango_rpc_client_fence(old, 2); /* never goes down */
    assert_int_equal(dango_rpc_client_epoch(old), 6);

    /* The connection stays usable once the server's term is current. */
    dango_rpc_server_set_epoch(ts->srv, 9);
    test_echo(cli, M_ECHO, 16, 5);
    test_echo(old, M_ECHO, 16, 6);
    assert_int_equal(dango_rpc_client_epoch(cli), 9);

    dango_rpc_client_destroy(old);
    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* ---------- lanes ---------- */

/* A call that finds every lane busy takes the shared connection; the lane
 * serves again once it is given back. */
static void rpc_lanes_busy_use_shared(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client_lanes(ts->addr, NULL, 1);
    char                lane[DANGO_ADDR_STR_MAX], shared[DANGO_ADDR_STR_MAX];
    char                again[DANGO_ADDR_STR_MAX];
    test_async_call_t   c;

    (void)state;
    test_peer(cli, lane, sizeof(lane));
    test_async_start(&c, cli, M_HOLD, 1, TEST_CALL_NS); /* on the lane */
    test_wait_held(ts, 1);
    test_peer(cli, shared, sizeof(shared));
    assert_string_not_equal(lane, shared);
    test_echo(cli, M_ECHO, 100, 1);
    test_echo(cli, M_WORKER, 100, 2);
    test_peer(cli, again, sizeof(again));
    assert_string_equal(again, shared);

    assert_dango_ok(test_answer(ts, 0, 0));
    pthread_join(c.tid, NULL);
    assert_dango_ok(c.rc);
    dango_free(c.rep);
    test_peer(cli, again, sizeof(again));
    assert_string_equal(again, lane);

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* A lane the server closed while it was idle (a server restart) is opened
 * again by its next call, which does not fail. */
static void rpc_lanes_reopen_after_restart(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client_lanes(ts->addr, NULL, 2);
    char                addr[DANGO_ADDR_STR_MAX];
    char                before[DANGO_ADDR_STR_MAX], after[DANGO_ADDR_STR_MAX];

    (void)state;
    test_peer(cli, before, sizeof(before));
    snprintf(addr, sizeof(addr), "%s", ts->addr);
    for (unsigned i = 0; i < 3; i++) {
        dango_rpc_server_destroy(ts->srv);
        ts->srv = NULL;
        assert_dango_ok(test_server_start(ts, addr, NULL, 0, 0));
        test_echo(cli, M_ECHO, 64, i);
        test_peer(cli, after, sizeof(after));
        assert_string_not_equal(before, after); /* a new connection */
        snprintf(before, sizeof(before), "%s", after);
    }

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* A timed-out call closes its lane: its late reply never reaches the next
 * call on that lane, and short deadlines are kept (not rounded up to the
 * lane's timeout slice). */
static void rpc_lanes_timeout_closes_lane(void **state)
{
    test_server_t      *ts  = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli = test_client_lanes(ts->addr, NULL, 1);
    uint64_t            start, took;

    (void)state;
    test_echo(cli, M_ECHO, 8, 1);
    start = dango_time_ns();
    assert_dango_err(DANGO_ETIMEDOUT,
                     dango_rpc_call(cli, M_HOLD, "late", 4, NULL, NULL,
                                    20 * DANGO_NSEC_PER_MSEC));
    took = dango_time_ns() - start;
    assert_true(took >= 20 * DANGO_NSEC_PER_MSEC);
    assert_true(took < 95 * DANGO_NSEC_PER_MSEC); /* below a slice */
    test_wait_held(ts, 1);
    assert_dango_ok(test_answer(ts, 0, 0));
    for (unsigned i = 0; i < 20; i++) {
        test_echo(cli, M_ECHO, 16, 100 + i);
    }

    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* ---------- listener ---------- */

static uint64_t test_cpu_ns(void)
{
    struct rusage ru;

    assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) *
               DANGO_NSEC_PER_SEC +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) *
               1000;
}

/* Out of descriptors, the server leaves a pending connection queued and
 * stops watching its listener until its next tick, instead of spinning on
 * accept(); once descriptors are free it serves the connection. */
static void rpc_accept_out_of_fds(void **state)
{
    test_server_t      *ts = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli;
    struct rlimit       old, low;
    int                *fds;
    unsigned            n = 0;
    uint64_t            cpu;
    int                 cfd;

    (void)state;
    dango_test_quiet_logs();
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low          = old;
    low.rlim_cur = DANGO_MIN(old.rlim_cur, (rlim_t)2048);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    fds = calloc(low.rlim_cur, sizeof(*fds));
    assert_non_null(fds);
    while (n < low.rlim_cur) {
        int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);

        if (fd < 0) {
            assert_int_equal(errno, EMFILE);
            break;
        }

        fds[n++] = fd;
    }

    assert_true(n > 0);
    close(fds[--n]); /* one for the client's end; none for the server's */
    cfd = test_raw_connect(ts->addr);

    cpu = test_cpu_ns();
    usleep(300 * 1000);
    cpu = test_cpu_ns() - cpu;
    assert_true(cpu < 100 * DANGO_NSEC_PER_MSEC);

    while (n > 0) {
        close(fds[--n]);
    }

    free(fds);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    test_raw_handshake(cfd); /* accepted at the next tick, and served */
    close(cfd);
    cli = test_client(ts->addr, NULL);
    test_echo(cli, M_ECHO, 32, 1);
    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

static int test_teardown(void **state)
{
    (void)state;
    dango__alloc_fail_after(-1);
    return 0;
}

/* ---------- local channel ---------- */

/* A channel opened by hand, as a client could (or a hostile one). */
typedef struct test_chan {
    int             fd;  /* the Unix connection */
    int             efd; /* the server's eventfd */
    rpc_chan_hdr_t *hdr;
    uint64_t        size;
} test_chan_t;

/* Learns the local socket over TCP, connects to it and asks for a
 * channel; returns the Unix connection with the channel mapped. */
static void test_chan_open(const char *addr, test_chan_t *tc)
{
    Dango__Ctrl__ChanOpen req = DANGO__CTRL__CHAN_OPEN__INIT;
    Dango__Ctrl__ChanAck *ack;
    struct sockaddr_un    un = {.sun_family = AF_UNIX};
    char                  name[64];
    uint8_t               buf[128];
    dango_frame_t         hdr;
    int                   fds[2];
    unsigned              n;
    size_t                len;
    int                   tcp = test_raw_connect(addr);

    test_raw_handshake_name(tcp, name, sizeof(name));
    close(tcp);
    assert_int_equal(strncmp(name, "dango-rpc-", 10), 0);
    memcpy(un.sun_path + 1, name, strlen(name));
    tc->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(tc->fd >= 0);
    assert_int_equal(
        connect(tc->fd, (struct sockaddr *)&un,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                            strlen(name))),
        0);
    test_raw_handshake(tc->fd);
    req.lanes = 4;
    len       = dango__ctrl__chan_open__pack(&req, buf);
    test_raw_send(tc->fd, DANGO_FRAME_CHAN_OPEN, 0, 0, len, buf, len);
    assert_dango_ok(dango_sock_recv_hdr_fds(tc->fd, &hdr, fds, 2, &n,
                                            dango_time_ns() + TEST_WAIT_NS));
    assert_int_equal(n, 2);
    assert_int_equal(hdr.type, DANGO_FRAME_CHAN_ACK);
    assert_true(hdr.length <= sizeof(buf));
    assert_dango_ok(dango_sock_recv_all(tc->fd, buf, hdr.length,
                                        dango_time_ns() + TEST_WAIT_NS));
    ack = dango__ctrl__chan_ack__unpack(NULL, hdr.length, buf);
    assert_non_null(ack);
    assert_int_equal(ack->status, 0);
    assert_int_equal(ack->lanes, 4);
    tc->size = ack->size;
    tc->hdr =
        mmap(NULL, tc->size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    assert_true(tc->hdr != MAP_FAILED);
    assert_int_equal(tc->hdr->magic, RPC_CHAN_MAGIC);
    assert_int_equal(tc->hdr->lanes, 4);
    dango__ctrl__chan_ack__free_unpacked(ack, NULL);
    /* Sealed: a client cannot shrink the server's mapping under it. */
    assert_int_not_equal(ftruncate(fds[0], 0), 0);
    assert_int_not_equal(ftruncate(fds[0], (off_t)tc->size * 2), 0);
    close(fds[0]);
    tc->efd = fds[1];
}

static void test_chan_close(test_chan_t *tc)
{
    munmap(tc->hdr, tc->size);
    close(tc->efd);
    close(tc->fd);
}

/* Publishes lane 0's request (@len bytes already in place) and kicks. */
static void test_chan_post(test_chan_t *tc, uint32_t len)
{
    uint64_t one = 1;

    __atomic_store_n(&tc->hdr->lane[0].req_len, len, __ATOMIC_RELAXED);
    __atomic_store_n(&tc->hdr->lane[0].state, RPC_LANE_REQ, __ATOMIC_SEQ_CST);
    assert_int_equal(write(tc->efd, &one, sizeof(one)), sizeof(one));
}

/*
 * The channel by hand: a well-formed request is answered in its lane; a
 * lane length out of bounds, a frame that is not a request, a length that
 * disagrees with the frame, a second ChanOpen, and ChanOpen over TCP each
 * close that connection only; the server serves on, through a channel too.
 */
static void rpc_chan_by_hand(void **state)
{
    test_server_t      *ts = test_server_new(NULL, 0, 0);
    dango_rpc_client_t *cli;
    test_chan_t         tc;
    dango_frame_t       hdr;
    char               *req, *rep;
    uint64_t            deadline;
    uint8_t             buf[16];
    size_t              len;
    int                 fd;
    char                peer[DANGO_ADDR_STR_MAX], want[32];

    (void)state;
    /* A well-formed request. */
    test_chan_open(ts->addr, &tc);
    req = rpc_chan_req(tc.hdr, 0, tc.hdr->req_cap, tc.hdr->rep_cap);
    rep = rpc_chan_rep(tc.hdr, 0, tc.hdr->req_cap, tc.hdr->rep_cap);
    dango_frame_init(&hdr, DANGO_FRAME_RPC_REQ, 42, M_ECHO, 5, 0);
    memcpy(req, &hdr, sizeof(hdr));
    memcpy(req + sizeof(hdr), "hello", 5);
    test_chan_post(&tc, sizeof(hdr) + 5);
    deadline = dango_time_ns() + TEST_WAIT_NS;
    while ((__atomic_load_n(&tc.hdr->lane[0].state, __ATOMIC_ACQUIRE) !=
            RPC_LANE_DONE) &&
           (dango_time_ns() < deadline)) {
        usleep(1000);
    }

    assert_int_equal(tc.hdr->lane[0].state, RPC_LANE_DONE);
    assert_int_equal(tc.hdr->lane[0].rep_len, sizeof(hdr) + 5);
    memcpy(&hdr, rep, sizeof(hdr));
    assert_int_equal(hdr.type, DANGO_FRAME_RPC_RESP);
    assert_int_equal(hdr.id, 42);
    assert_int_equal(hdr.status, 0);
    assert_memory_equal(rep + sizeof(hdr), "hello", 5);

    /* Lane lengths out of bounds. */
    test_chan_post(&tc, 10);
    assert_true(test_raw_closed(tc.fd));
    test_chan_close(&tc);
    test_chan_open(ts->addr, &tc);
    test_chan_post(&tc, tc.hdr->req_cap + 1);
    assert_true(test_raw_closed(tc.fd));
    test_chan_close(&tc);

    /* A reply frame, then a length the frame does not announce. */
    test_chan_open(ts->addr, &tc);
    req = rpc_chan_req(tc.hdr, 0, tc.hdr->req_cap, tc.hdr->rep_cap);
    dango_frame_init(&hdr, DANGO_FRAME_RPC_RESP, 1, M_ECHO, 0, 0);
    memcpy(req, &hdr, sizeof(hdr));
    test_chan_post(&tc, sizeof(hdr));
    assert_true(test_raw_closed(tc.fd));
    test_chan_close(&tc);
    test_chan_open(ts->addr, &tc);
    req = rpc_chan_req(tc.hdr, 0, tc.hdr->req_cap, tc.hdr->rep_cap);
    dango_frame_init(&hdr, DANGO_FRAME_RPC_REQ, 1, M_ECHO, 100, 0);
    memcpy(req, &hdr, sizeof(hdr));
    test_chan_post(&tc, sizeof(hdr) + 5);
    assert_true(test_raw_closed(tc.fd));
    test_chan_close(&tc);

    /* ChanOpen twice; ChanOpen over TCP. */
    test_chan_open(ts->addr, &tc);
    len = 0;
    test_raw_send(tc.fd, DANGO_FRAME_CHAN_OPEN, 0, 0, len, buf, len);
    assert_true(test_raw_closed(tc.fd));
    test_chan_close(&tc);
    fd = test_raw_hello(ts->addr);
    test_raw_send(fd, DANGO_FRAME_CHAN_OPEN, 0, 0, len, buf, len);
    assert_true(test_raw_closed(fd));
    close(fd);

    /* The server serves on, a client through its own channel. */
    g_local = 0;
    cli     = test_client_lanes(ts->addr, NULL, 0);
    g_local = -1;
    test_echo(cli, M_ECHO, 100, 1);
    test_peer(cli, peer, sizeof(peer));
    snprintf(want, sizeof(want), "local pid %ld", (long)getpid());
    assert_string_equal(peer, want);
    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

/* Without a local channel on either side, calls take TCP. */
static void rpc_chan_off(void **state)
{
    test_server_t      *ts;
    dango_rpc_client_t *cli;
    char                peer[DANGO_ADDR_STR_MAX], name[64];
    int                 fd;

    (void)state;
    g_srv_local = -1;
    ts          = test_server_new(NULL, 0, 0);
    g_srv_local = 0;
    fd          = test_raw_connect(ts->addr);
    test_raw_handshake_name(fd, name, sizeof(name));
    close(fd);
    assert_string_equal(name, "");
    cli = test_client_lanes(ts->addr, NULL, 0);
    test_echo(cli, M_ECHO, 100, 1);
    test_peer(cli, peer, sizeof(peer));
    assert_int_equal(strncmp(peer, "127.0.0.1:", 10), 0);
    dango_rpc_client_destroy(cli);
    test_server_free(ts);

    ts  = test_server_new(NULL, 0, 0); /* offers one; the client says no */
    cli = test_client_lanes(ts->addr, NULL, 0);
    test_echo(cli, M_ECHO, 100, 2);
    test_peer(cli, peer, sizeof(peer));
    assert_int_equal(strncmp(peer, "127.0.0.1:", 10), 0);
    dango_rpc_client_destroy(cli);
    test_server_free(ts);
}

int main(void)
{
#define T(_fn) cmocka_unit_test_teardown(_fn, test_teardown)
    const struct CMUnitTest tests[] = {
        T(rpc_echo_sizes),
        T(rpc_status_codes),
        T(rpc_protobuf_helpers),
        T(rpc_many_threads),
        T(rpc_pending_limit),
        T(rpc_deferred_out_of_order),
        T(rpc_timeout_then_late_reply),
        T(rpc_server_dies_mid_call),
        T(rpc_connect_refused),
        T(rpc_client_destroy_cancels),
        T(rpc_tokens),
        T(rpc_malformed_input),
        T(rpc_token_server_refuses_unauthenticated),
        T(rpc_limits),
        T(rpc_client_create_oom),
        T(rpc_server_create_oom),
        T(rpc_stale_epoch_rejected),
    };
    const struct CMUnitTest lane_tests[] = {
        T(rpc_lanes_busy_use_shared),
        T(rpc_lanes_reopen_after_restart),
        T(rpc_lanes_timeout_closes_lane),
        T(rpc_accept_out_of_fds),
        T(rpc_chan_by_hand),
        T(rpc_chan_off),
    };
#undef T
    int failed;

    g_lanes = 0;
    g_local = 0;
    failed = cmocka_run_group_tests_name("rpc through the local channel", tests,
                                         NULL, NULL);
    g_local = -1;
    failed += cmocka_run_group_tests_name("rpc with lanes", tests, NULL, NULL);
    g_lanes = -1;
    failed += cmocka_run_group_tests_name("rpc over the shared connection",
                                          tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("lanes and the listener", lane_tests,
                                          NULL, NULL);
    return failed;
}
