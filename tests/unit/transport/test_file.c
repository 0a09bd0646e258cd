/*
 * Unit tests of the file transport: real io_uring on real files in a
 * mkdtemp() directory under /tmp, driven by engine-like loops started with
 * dango_loop_start(). Completions are counted under a mutex and waited for
 * with a deadline; nothing sleeps to synchronise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/config.h>
#include <dango/transport.h>
#include "common/alloc.h"
#include "common/loop.h"
#include "common/time.h"
#include "transport/file/file_int.h"

#define TEST_KIB       1024ul
#define TEST_MIB       (1024ul * 1024ul)
#define TEST_WAIT_S    30
#define TEST_MAX_LOOPS 2

static const dango_transport_ops_t *ops = &dango__file_ops;

typedef struct test_env {
    char              dir[64];
    dango_loop_t     *loops[TEST_MAX_LOOPS];
    unsigned          num_loops;
    dango_tp_iface_t *iface;
} test_env_t;

/* ---------- fake completion ---------- */

typedef struct test_done {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    unsigned        count;
} test_done_t;

typedef struct test_slice {
    dango_tp_slice_t slice;
    test_done_t     *done;
    int              status;
    int              calls;
} test_slice_t;

static void test_done_init(test_done_t *d)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, &attr);
    pthread_condattr_destroy(&attr);
    d->count = 0;
}

static void test_done_cleanup(test_done_t *d)
{
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
}

static void test_slice_complete(dango_tp_slice_t *slice, int status)
{
    test_slice_t *ts = dango_container_of(slice, test_slice_t, slice);
    test_done_t  *d  = ts->done;

    pthread_mutex_lock(&d->lock);
    ts->status = status;
    ts->calls++;
    d->count++;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

/* Waits until @n completions were counted; 0, or ETIMEDOUT. */
static int test_done_wait(test_done_t *d, unsigned n, unsigned timeout_s)
{
    uint64_t        t  = dango_time_ns() + timeout_s * DANGO_NSEC_PER_SEC;
    struct timespec ts = {.tv_sec  = (time_t)(t / DANGO_NSEC_PER_SEC),
                          .tv_nsec = (long)(t % DANGO_NSEC_PER_SEC)};
    int             rc = 0;

    pthread_mutex_lock(&d->lock);
    while ((d->count < n) && (rc == 0)) {
        rc = pthread_cond_timedwait(&d->cond, &d->lock, &ts);
    }

    rc = d->count >= n ? 0 : ETIMEDOUT;
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static unsigned test_done_count(test_done_t *d)
{
    unsigned n;

    pthread_mutex_lock(&d->lock);
    n = d->count;
    pthread_mutex_unlock(&d->lock);
    return n;
}

static void test_slice_init(test_slice_t *ts, test_done_t *d, uint8_t op,
                            void *local, uint64_t remote, uint64_t length,
                            uint64_t id)
{
    memset(ts, 0, sizeof(*ts));
    ts->done           = d;
    ts->status         = 1; /* not a valid status: "never completed" */
    ts->slice.id       = id;
    ts->slice.op       = op;
    ts->slice.local    = local;
    ts->slice.remote   = remote;
    ts->slice.length   = length;
    ts->slice.post_ns  = dango_time_ns();
    ts->slice.complete = test_slice_complete;
}

/* ---------- helpers ---------- */

static void test_fill_random(void *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    uint8_t *p = buf;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

/* An allocation whose returned pointer is 4 KiB aligned plus @misalign. */
typedef struct test_buf {
    void *base;
    char *ptr;
} test_buf_t;

static void test_buf_alloc(test_buf_t *b, size_t len, size_t misalign)
{
    assert_int_equal(posix_memalign(&b->base, 4096, len + 4096), 0);
    b->ptr = (char *)b->base + misalign;
}

static void test_buf_free(test_buf_t *b)
{
    free(b->base);
}

static void test_path(const test_env_t *env, const char *name, char *out,
                      size_t len)
{
    snprintf(out, len, "%s/%s", env->dir, name);
}

static void test_ep_create(test_env_t *env, const char *name,
                           dango_tp_ep_t **ep_p)
{
    char            seg[256];
    dango_tp_peer_t peer = {.name = seg};

    snprintf(seg, sizeof(seg), "file://%s/%s", env->dir, name);
    assert_dango_ok(ops->ep_create(env->iface, &peer, ep_p));
}

/*
 * Moves [buf, buf+len) to or from file offset @off as slices of at most
 * @slice_size, all posted before waiting, as the engine does. Returns the
 * first failed slice's status, or 0.
 */
static int test_xfer(dango_tp_ep_t *ep, uint8_t op, void *buf, uint64_t off,
                     size_t len, size_t slice_size)
{
    size_t        n      = (len + slice_size - 1) / slice_size;
    test_slice_t *slices = calloc(n, sizeof(*slices));
    test_done_t   done;
    int           status = 0;

    assert_non_null(slices);
    test_done_init(&done);
    for (size_t i = 0; i < n; i++) {
        size_t pos = i * slice_size;
        size_t l   = len - pos < slice_size ? len - pos : slice_size;

        test_slice_init(&slices[i], &done, op, (char *)buf + pos, off + pos, l,
                        i);
        assert_dango_ok(ops->post(ep, &slices[i].slice));
    }

    assert_int_equal(test_done_wait(&done, (unsigned)n, TEST_WAIT_S), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(slices[i].calls, 1);
        if ((status == 0) && (slices[i].status != 0)) {
            status = slices[i].status;
        }
    }

    test_done_cleanup(&done);
    free(slices);
    return status;
}

static int test_rm_cb(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* ---------- fixtures ---------- */

static int test_env_setup(void **state, unsigned num_loops,
                          const char *queue_depth, const char *direct)
{
    test_env_t             *env = calloc(1, sizeof(*env));
    dango_config_t         *cfg;
    dango_tp_iface_params_t params;

    if (env == NULL) {
        return -1;
    }

    dango_test_quiet_logs();
    snprintf(env->dir, sizeof(env->dir), "/tmp/dango-test-file-XXXXXX");
    if (mkdtemp(env->dir) == NULL) {
        free(env);
        return -1;
    }

    env->num_loops = num_loops;
    for (unsigned i = 0; i < num_loops; i++) {
        if ((dango_loop_create("test-file", &env->loops[i]) != 0) ||
            (dango_loop_start(env->loops[i]) != 0)) {
            return -1;
        }
    }

    if (dango_config_read(NULL, &cfg) != 0) {
        return -1;
    }

    if (((queue_depth != NULL) &&
         (dango_config_set(cfg, "FILE_QUEUE_DEPTH", queue_depth) != 0)) ||
        ((direct != NULL) &&
         (dango_config_set(cfg, "FILE_DIRECT", direct) != 0))) {
        dango_config_release(cfg);
        return -1;
    }

    memset(&params, 0, sizeof(params));
    params.loops        = env->loops;
    params.num_loops    = num_loops;
    params.segment_name = "test";
    params.config       = cfg;
    if (ops->iface_open(&params, &env->iface) != 0) {
        dango_config_release(cfg);
        return -1;
    }

    /* The iface copied what it needs. */
    dango_config_release(cfg);
    *state = env;
    return 0;
}

static int setup_default(void **state)
{
    return test_env_setup(state, 2, NULL, NULL);
}

/* A tiny ring, so that most slices wait in the backlog. */
static int setup_small_ring(void **state)
{
    return test_env_setup(state, 1, "4", NULL);
}

static int setup_no_direct(void **state)
{
    return test_env_setup(state, 1, NULL, "n");
}

static int teardown_env(void **state)
{
    test_env_t *env = *state;

    ops->iface_close(env->iface);
    for (unsigned i = 0; i < env->num_loops; i++) {
        dango_loop_destroy(env->loops[i]);
    }

    nftw(env->dir, test_rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(env);
    return 0;
}

/* ---------- tests ---------- */

/* Write then read back, over sizes, offsets and buffer alignments. */
static void test_file_rw_roundtrip(void **state)
{
    static const size_t sizes[] = {1, 4095, 4096, TEST_MIB + 17, 64 * TEST_MIB};
    static const struct {
        uint64_t off;
        size_t   misalign;
    } cases[] = {
        {0, 0},        /* everything aligned: O_DIRECT */
        {3 * 4096, 0}, /* aligned offset */
        {777, 0},      /* unaligned offset */
        {0, 1},        /* unaligned buffer */
        {12345, 513},  /* both unaligned */
    };
    test_env_t           *env = *state;
    dango_tp_iface_attr_t attr;

    assert_dango_ok(ops->iface_query(env->iface, &attr));
    for (size_t s = 0; s < DANGO_ARRAY_SIZE(sizes); s++) {
        size_t len = sizes[s];

        for (size_t c = 0; c < DANGO_ARRAY_SIZE(cases); c++) {
            dango__file_ep_stats_t stats;
            dango_tp_ep_t         *ep;
            test_buf_t             wbuf, rbuf;
            char                   name[64], path[256];
            struct stat            st;

            snprintf(name, sizeof(name), "rw-%zu-%zu", s, c);
            test_path(env, name, path, sizeof(path));
            test_ep_create(env, name, &ep);
            test_buf_alloc(&wbuf, len, cases[c].misalign);
            test_buf_alloc(&rbuf, len, cases[c].misalign);
            test_fill_random(wbuf.ptr, len, s * 100 + c + 1);
            memset(rbuf.ptr, 0xa5, len);

            assert_dango_ok(test_xfer(ep, DANGO_TP_OP_WRITE, wbuf.ptr,
                                      cases[c].off, len, attr.max_slice));
            /* A write past the end extends the file. */
            assert_int_equal(stat(path, &st), 0);
            assert_int_equal((uint64_t)st.st_size, cases[c].off + len);

            assert_dango_ok(test_xfer(ep, DANGO_TP_OP_READ, rbuf.ptr,
                                      cases[c].off, len, attr.max_slice));
            assert_memory_equal(wbuf.ptr, rbuf.ptr, len);

            /* O_DIRECT exactly when address, offset and length allow. */
            dango__file_ep_stats_get(ep, &stats);
            if ((cases[c].misalign != 0) || (cases[c].off % 4096 != 0) ||
                (len < 4096) || !stats.has_direct) {
                assert_int_equal(stats.direct, 0);
            } else {
                assert_true(stats.direct > 0);
                if (len % 4096 == 0) {
                    assert_int_equal(stats.buffered, 0);
                }
            }

            ops->ep_destroy(ep);
            test_buf_free(&wbuf);
            test_buf_free(&rbuf);
        }
    }
}

/* The same 64 MiB as one slice, larger than FILE_MAX_SLICE. */
static void test_file_rw_single_big_slice(void **state)
{
    test_env_t    *env = *state;
    size_t         len = 64 * TEST_MIB;
    dango_tp_ep_t *ep;
    test_buf_t     wbuf, rbuf;

    test_ep_create(env, "big", &ep);
    test_buf_alloc(&wbuf, len, 0);
    test_buf_alloc(&rbuf, len, 0);
    test_fill_random(wbuf.ptr, len, 42);
    memset(rbuf.ptr, 0, len);
    assert_dango_ok(test_xfer(ep, DANGO_TP_OP_WRITE, wbuf.ptr, 4096, len, len));
    assert_dango_ok(test_xfer(ep, DANGO_TP_OP_READ, rbuf.ptr, 4096, len, len));
    assert_memory_equal(wbuf.ptr, rbuf.ptr, len);
    ops->ep_destroy(ep);
    test_buf_free(&wbuf);
    test_buf_free(&rbuf);
}

typedef struct test_poster {
    dango_tp_ep_t *ep;
    test_slice_t  *slices;
    size_t         count;
    int            rc;
} test_poster_t;

static void *test_poster_main(void *arg)
{
    test_poster_t *p = arg;

    p->rc = 0;
    for (size_t i = 0; (i < p->count) && (p->rc == 0); i++) {
        p->rc = ops->post(p->ep, &p->slices[i].slice);
    }

    return NULL;
}

/*
 * Many more slices than the ring holds (depth 4), posted by four threads
 * at once, with mixed sizes and alignments; then read back.
 */
static void test_file_many_inflight(void **state)
{
    enum { NSLICES = 1024, NTHREADS = 4, SLOT = 8192 };
    test_env_t    *env = *state;
    dango_tp_ep_t *ep;
    test_buf_t     wbuf, rbuf;
    test_slice_t  *slices = calloc(NSLICES, sizeof(*slices));
    test_done_t    done;
    test_poster_t  posters[NTHREADS];
    pthread_t      threads[NTHREADS];
    size_t         len = (size_t)NSLICES * SLOT;

    assert_non_null(slices);
    test_ep_create(env, "many", &ep);
    test_buf_alloc(&wbuf, len, 0);
    test_buf_alloc(&rbuf, len, 0);
    test_fill_random(wbuf.ptr, len, 7);
    memset(rbuf.ptr, 0, len);

    for (int pass = 0; pass < 2; pass++) {
        uint8_t op  = pass == 0 ? DANGO_TP_OP_WRITE : DANGO_TP_OP_READ;
        char   *buf = pass == 0 ? wbuf.ptr : rbuf.ptr;

        test_done_init(&done);
        for (size_t i = 0; i < NSLICES; i++) {
            /* Odd slices: 4 KiB, aligned; even: an unaligned remainder. */
            size_t l = (i % 2 != 0) ? 4096 : SLOT - 1 - i % 97;

            test_slice_init(&slices[i], &done, op, buf + i * SLOT, i * SLOT, l,
                            i);
        }

        for (int t = 0; t < NTHREADS; t++) {
            posters[t].ep     = ep;
            posters[t].slices = slices + t * (NSLICES / NTHREADS);
            posters[t].count  = NSLICES / NTHREADS;
            assert_int_equal(pthread_create(&threads[t], NULL, test_poster_main,
                                            &posters[t]),
                             0);
        }

        for (int t = 0; t < NTHREADS; t++) {
            pthread_join(threads[t], NULL);
            assert_dango_ok(posters[t].rc);
        }

        assert_int_equal(test_done_wait(&done, NSLICES, TEST_WAIT_S), 0);
        for (size_t i = 0; i < NSLICES; i++) {
            assert_int_equal(slices[i].calls, 1);
            assert_dango_ok(slices[i].status);
        }

        test_done_cleanup(&done);
    }

    for (size_t i = 0; i < NSLICES; i++) {
        size_t l = (i % 2 != 0) ? 4096 : SLOT - 1 - i % 97;

        assert_memory_equal(wbuf.ptr + i * SLOT, rbuf.ptr + i * SLOT, l);
    }

    ops->ep_destroy(ep);
    test_buf_free(&wbuf);
    test_buf_free(&rbuf);
    free(slices);
}

/* Reads that reach past the end of the file never report success. */
static void test_file_read_past_eof(void **state)
{
    static const struct {
        uint64_t off;
        size_t   len;
        size_t   misalign;
        int      expect;
    } reads[] = {
        {0, 10000, 0, 0},                 /* exactly the file */
        {9999, 1, 0, 0},                  /* its last byte */
        {4096, 4096, 0, 0},               /* aligned, inside */
        {8192, 4096, 0, DANGO_ERANGE},    /* O_DIRECT read stops short */
        {9000, 2000, 3, DANGO_ERANGE},    /* buffered read stops short */
        {10000, 1, 0, DANGO_ERANGE},      /* starts at EOF */
        {TEST_MIB, 4096, 0, DANGO_ERANGE} /* entirely beyond */
    };
    test_env_t    *env = *state;
    dango_tp_ep_t *ep;
    test_buf_t     wbuf, rbuf;

    test_ep_create(env, "eof", &ep);
    test_buf_alloc(&wbuf, 10000, 0);
    test_buf_alloc(&rbuf, 2 * 4096 + 10000, 0);
    test_fill_random(wbuf.ptr, 10000, 3);
    assert_dango_ok(
        test_xfer(ep, DANGO_TP_OP_WRITE, wbuf.ptr, 0, 10000, TEST_MIB));

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(reads); i++) {
        char *dst = (char *)rbuf.base + reads[i].misalign;

        memset(dst, 0, reads[i].len);
        assert_dango_err(reads[i].expect,
                         test_xfer(ep, DANGO_TP_OP_READ, dst, reads[i].off,
                                   reads[i].len, TEST_MIB));
        if (reads[i].expect == 0) {
            assert_memory_equal(dst, wbuf.ptr + reads[i].off, reads[i].len);
        }
    }

    ops->ep_destroy(ep);
    test_buf_free(&wbuf);
    test_buf_free(&rbuf);
}

static void test_file_peer_not_file(void **state)
{
    static const char *names[] = {"node1", "tcp://127.0.0.1:1234",
                                  "file:/tmp/x", "FILE://tmp/x", ""};
    test_env_t        *env     = *state;
    dango_tp_ep_t     *ep      = NULL;

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(names); i++) {
        dango_tp_peer_t peer = {.name = names[i]};

        assert_dango_err(DANGO_ENOTSUP, ops->ep_create(env->iface, &peer, &ep));
        assert_null(ep);
    }
}

static void test_file_peer_invalid(void **state)
{
    test_env_t     *env   = *state;
    dango_tp_ep_t  *ep    = NULL;
    dango_tp_peer_t none  = {.name = NULL};
    dango_tp_peer_t empty = {.name = "file://"};

    assert_dango_err(DANGO_EINVAL, ops->ep_create(env->iface, &none, &ep));
    assert_dango_err(DANGO_EINVAL, ops->ep_create(env->iface, &empty, &ep));
    assert_dango_err(DANGO_EINVAL, ops->ep_create(env->iface, NULL, &ep));
    assert_null(ep);
}

static void test_file_missing_dir(void **state)
{
    test_env_t     *env = *state;
    dango_tp_ep_t  *ep  = NULL;
    char            seg[256];
    dango_tp_peer_t peer = {.name = seg};

    snprintf(seg, sizeof(seg), "file://%s/no/such/dir/f.bin", env->dir);
    assert_dango_err(DANGO_ENOENT, ops->ep_create(env->iface, &peer, &ep));
    assert_null(ep);
}

/* ep_create() in a directory we may not write to; 0 when as expected. */
static int test_access_denied_child(test_env_t *env, const char *seg)
{
    dango_tp_ep_t  *ep   = NULL;
    dango_tp_peer_t peer = {.name = seg};

    /* Root ignores mode bits: drop to "nobody" first. */
    if ((geteuid() == 0) && ((setgid(65534) != 0) || (setuid(65534) != 0))) {
        return 2;
    }

    return (ops->ep_create(env->iface, &peer, &ep) == DANGO_EACCES) &&
                   (ep == NULL)
               ? 0
               : 1;
}

static void test_file_access_denied(void **state)
{
    test_env_t *env = *state;
    char        dir[128], seg[256];
    pid_t       pid;
    int         wstatus;

    snprintf(dir, sizeof(dir), "%s/ro", env->dir);
    assert_int_equal(mkdir(dir, 0555), 0);
    assert_int_equal(chmod(env->dir, 0755), 0); /* let "nobody" in */
    snprintf(seg, sizeof(seg), "file://%s/f.bin", dir);
    if (geteuid() != 0) {
        assert_int_equal(test_access_denied_child(env, seg), 0);
    } else {
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            _exit(test_access_denied_child(env, seg));
        }

        assert_int_equal(waitpid(pid, &wstatus, 0), pid);
        assert_true(WIFEXITED(wstatus));
        assert_int_equal(WEXITSTATUS(wstatus), 0);
    }

    assert_int_equal(chmod(dir, 0700), 0);
}

static void test_file_post_invalid(void **state)
{
    test_env_t    *env = *state;
    dango_tp_ep_t *ep;
    test_done_t    done;
    test_slice_t   ts;
    char           buf[16];

    test_done_init(&done);
    test_ep_create(env, "inval", &ep);

    test_slice_init(&ts, &done, DANGO_TP_OP_READ, buf, 0, 0, 1);
    assert_dango_err(DANGO_EINVAL, ops->post(ep, &ts.slice));
    test_slice_init(&ts, &done, 7, buf, 0, sizeof(buf), 2);
    assert_dango_err(DANGO_EINVAL, ops->post(ep, &ts.slice));
    test_slice_init(&ts, &done, DANGO_TP_OP_READ, NULL, 0, sizeof(buf), 3);
    assert_dango_err(DANGO_EINVAL, ops->post(ep, &ts.slice));
    test_slice_init(&ts, &done, DANGO_TP_OP_WRITE, buf, UINT64_MAX - 4,
                    sizeof(buf), 4);
    assert_dango_err(DANGO_ERANGE, ops->post(ep, &ts.slice));

    /* A slice whose post() failed is never completed. */
    ops->ep_destroy(ep);
    assert_int_equal(test_done_count(&done), 0);
    test_done_cleanup(&done);
}

/*
 * ep_destroy() with hundreds of slices queued or in the kernel: when it
 * returns every slice has completed exactly once, with success or
 * DANGO_ECANCELED, and the iface keeps working. Round 0 destroys at once
 * (slices still queued on the loop), round 1 once @wait_for slices have
 * completed (the rest are in the ring or in the backlog).
 */
static void test_file_destroy_inflight(void **state)
{
    enum { NSLICES = 512, SLEN = 64 * 1024 };
    test_env_t    *env = *state;
    dango_tp_ep_t *ep;
    test_buf_t     buf;
    test_slice_t  *slices = calloc(NSLICES, sizeof(*slices));
    test_done_t    done;

    assert_non_null(slices);
    test_buf_alloc(&buf, SLEN, 0);
    test_fill_random(buf.ptr, SLEN, 9);
    for (unsigned round = 0; round < 2; round++) {
        unsigned wait_for = round == 0 ? 0 : 8;
        unsigned ok = 0, canceled = 0;

        test_done_init(&done);
        test_ep_create(env, round == 0 ? "destroy-0" : "destroy-1", &ep);
        for (size_t i = 0; i < NSLICES; i++) {
            test_slice_init(&slices[i], &done, DANGO_TP_OP_WRITE, buf.ptr,
                            i * SLEN, SLEN, i);
            assert_dango_ok(ops->post(ep, &slices[i].slice));
        }

        assert_int_equal(test_done_wait(&done, wait_for, TEST_WAIT_S), 0);
        ops->ep_destroy(ep);
        assert_int_equal(test_done_count(&done), NSLICES);
        for (size_t i = 0; i < NSLICES; i++) {
            assert_int_equal(slices[i].calls, 1);
            if (slices[i].status == 0) {
                ok++;
            } else {
                assert_dango_err(DANGO_ECANCELED, slices[i].status);
                canceled++;
            }
        }

        assert_true(ok >= wait_for);
        print_message("destroy after %u completions: %u done, %u canceled\n",
                      wait_for, ok, canceled);
        test_done_cleanup(&done);
    }

    /* The ring is still usable by a new endpoint. */
    test_ep_create(env, "after-destroy", &ep);
    assert_dango_ok(test_xfer(ep, DANGO_TP_OP_WRITE, buf.ptr, 0, SLEN, SLEN));
    assert_dango_ok(test_xfer(ep, DANGO_TP_OP_READ, buf.ptr, 0, SLEN, SLEN));
    ops->ep_destroy(ep);

    test_buf_free(&buf);
    free(slices);
}

typedef struct test_destroy_task {
    dango_loop_task_t task;
    dango_tp_ep_t    *ep;
    test_slice_t      marker; /* counted in the same test_done_t */
} test_destroy_task_t;

static void test_destroy_task_cb(dango_loop_task_t *task)
{
    test_destroy_task_t *t = (test_destroy_task_t *)task;

    ops->ep_destroy(t->ep);
    test_slice_complete(&t->marker.slice, 0);
}

/* ep_destroy() called on the loop thread that owns the ring. */
static void test_file_destroy_on_loop(void **state)
{
    enum { NSLICES = 64, SLEN = 16 * 1024 };
    test_env_t         *env = *state;
    test_buf_t          buf;
    test_slice_t       *slices = calloc(NSLICES, sizeof(*slices));
    test_done_t         done;
    test_destroy_task_t t;

    assert_non_null(slices);
    assert_int_equal(env->num_loops, 1); /* the ring's loop is loops[0] */
    test_buf_alloc(&buf, SLEN, 0);
    test_fill_random(buf.ptr, SLEN, 11);
    test_done_init(&done);
    test_ep_create(env, "destroy-on-loop", &t.ep);
    for (size_t i = 0; i < NSLICES; i++) {
        test_slice_init(&slices[i], &done, DANGO_TP_OP_WRITE, buf.ptr, i * SLEN,
                        SLEN, i);
        assert_dango_ok(ops->post(t.ep, &slices[i].slice));
    }

    test_slice_init(&t.marker, &done, DANGO_TP_OP_READ, buf.ptr, 0, 1, 999);
    t.task.cb = test_destroy_task_cb;
    dango_loop_post(env->loops[0], &t.task);
    assert_int_equal(test_done_wait(&done, NSLICES + 1, TEST_WAIT_S), 0);
    for (size_t i = 0; i < NSLICES; i++) {
        assert_int_equal(slices[i].calls, 1);
        if (slices[i].status != 0) {
            assert_dango_err(DANGO_ECANCELED, slices[i].status);
        }
    }

    test_done_cleanup(&done);
    test_buf_free(&buf);
    free(slices);
}

/*
 * An engine may stop and destroy its loops before closing transports: once
 * the endpoints are gone, iface_close() must not need (or touch) the loop.
 */
static void test_file_close_after_loops(void **state)
{
    test_env_t    *env = *state;
    dango_tp_ep_t *ep;
    test_buf_t     buf;

    test_buf_alloc(&buf, 3 * 4096, 0);
    test_fill_random(buf.ptr, 3 * 4096, 13);
    test_ep_create(env, "close-after-loops", &ep);
    assert_dango_ok(
        test_xfer(ep, DANGO_TP_OP_WRITE, buf.ptr, 0, 3 * 4096, 4096));
    ops->ep_destroy(ep);
    for (unsigned i = 0; i < env->num_loops; i++) {
        dango_loop_destroy(env->loops[i]);
        env->loops[i] = NULL;
    }

    ops->iface_close(env->iface);
    env->iface = NULL;
    test_buf_free(&buf);
}

/* FILE_DIRECT=n: aligned I/O goes through the page cache too. */
static void test_file_no_direct(void **state)
{
    test_env_t            *env = *state;
    dango__file_ep_stats_t stats;
    dango_tp_ep_t         *ep;
    test_buf_t             wbuf, rbuf;

    test_ep_create(env, "nodirect", &ep);
    test_buf_alloc(&wbuf, 64 * 1024, 0);
    test_buf_alloc(&rbuf, 64 * 1024, 0);
    test_fill_random(wbuf.ptr, 64 * 1024, 5);
    assert_dango_ok(
        test_xfer(ep, DANGO_TP_OP_WRITE, wbuf.ptr, 0, 64 * 1024, 4096));
    assert_dango_ok(
        test_xfer(ep, DANGO_TP_OP_READ, rbuf.ptr, 0, 64 * 1024, 4096));
    assert_memory_equal(wbuf.ptr, rbuf.ptr, 64 * 1024);
    dango__file_ep_stats_get(ep, &stats);
    assert_int_equal(stats.has_direct, 0);
    assert_int_equal(stats.direct, 0);
    assert_int_equal(stats.buffered, 32);
    ops->ep_destroy(ep);
    test_buf_free(&wbuf);
    test_buf_free(&rbuf);
}

static void test_file_query(void **state)
{
    test_env_t           *env = *state;
    dango_tp_iface_attr_t attr;

    assert_string_equal(ops->name, "file");
    assert_null(ops->notify);
    assert_null(ops->desc_fetch);
    assert_null(ops->ep_can_serve);
    assert_dango_ok(ops->iface_query(env->iface, &attr));
    assert_int_equal(attr.caps, DANGO_TP_CAP_FILE);
    assert_int_equal(attr.max_slice, TEST_MIB);
    assert_null(attr.desc_json);
    assert_dango_err(DANGO_EINVAL, ops->iface_query(env->iface, NULL));
}

static void test_file_config(void **state)
{
    dango_loop_t           *loop;
    dango_config_t         *cfg;
    dango_tp_iface_params_t params;
    dango_tp_iface_t       *iface = NULL;
    dango_tp_iface_attr_t   attr;

    (void)state;
    dango_test_quiet_logs();
    assert_dango_ok(dango_loop_create("test-file-cfg", &loop));
    assert_dango_ok(dango_config_read(NULL, &cfg));
    memset(&params, 0, sizeof(params));
    params.loops     = &loop;
    params.num_loops = 1;
    params.config    = cfg;

    assert_dango_ok(dango_config_set(cfg, "FILE_MAX_SLICE", "256k"));
    assert_dango_ok(dango_config_set(cfg, "FILE_QUEUE_DEPTH", "128"));
    assert_dango_ok(ops->iface_open(&params, &iface));
    assert_dango_ok(ops->iface_query(iface, &attr));
    assert_int_equal(attr.max_slice, 256 * TEST_KIB);
    /* Never used: closes without the loop running. */
    ops->iface_close(iface);
    iface = NULL;

    assert_dango_ok(dango_config_set(cfg, "FILE_QUEUE_DEPTH", "0"));
    assert_dango_err(DANGO_ECONFIG, ops->iface_open(&params, &iface));
    assert_dango_ok(dango_config_set(cfg, "FILE_QUEUE_DEPTH", "100000"));
    assert_dango_err(DANGO_ECONFIG, ops->iface_open(&params, &iface));
    assert_dango_ok(dango_config_set(cfg, "FILE_QUEUE_DEPTH", "64"));
    assert_dango_ok(dango_config_set(cfg, "FILE_MAX_SLICE", "0"));
    assert_dango_err(DANGO_ECONFIG, ops->iface_open(&params, &iface));
    assert_null(iface);

    params.num_loops = 0;
    assert_dango_err(DANGO_EINVAL, ops->iface_open(&params, &iface));
    assert_dango_err(DANGO_EINVAL, ops->iface_open(NULL, &iface));
    assert_null(iface);

    ops->iface_close(NULL);
    ops->ep_destroy(NULL);
    dango_config_release(cfg);
    dango_loop_destroy(loop);
}

/* Every failure of iface_open() under OOM is DANGO_ENOMEM, leak-free. */
static void test_file_iface_open_oom(void **state)
{
    dango_loop_t           *loop;
    dango_tp_iface_params_t params;
    dango_tp_iface_t       *iface;
    long                    live;
    int                     rc = DANGO_ENOMEM;

    (void)state;
    dango_test_quiet_logs();
    assert_dango_ok(dango_loop_create("test-file-oom", &loop));
    memset(&params, 0, sizeof(params));
    params.loops     = &loop;
    params.num_loops = 1;
    live             = dango__alloc_live();
    for (long n = 1; (n < 100) && (rc != 0); n++) {
        iface = NULL;
        dango__alloc_fail_after(n);
        rc = ops->iface_open(&params, &iface);
        dango__alloc_fail_after(-1);
        if (rc != 0) {
            assert_dango_err(DANGO_ENOMEM, rc);
            assert_null(iface);
            assert_int_equal(dango__alloc_live(), live);
        }
    }

    assert_dango_ok(rc);

    /* The same for ep_create(). */
    rc = DANGO_ENOMEM;
    for (long n = 1; (n < 100) && (rc != 0); n++) {
        dango_tp_ep_t  *ep     = NULL;
        dango_tp_peer_t peer   = {.name = "file:///tmp/dango-test-file-oom"};
        long            before = dango__alloc_live();

        dango__alloc_fail_after(n);
        rc = ops->ep_create(iface, &peer, &ep);
        dango__alloc_fail_after(-1);
        if (rc != 0) {
            assert_dango_err(DANGO_ENOMEM, rc);
            assert_null(ep);
            assert_int_equal(dango__alloc_live(), before);
        } else {
            assert_true(n > 1);
            ops->ep_destroy(ep);
        }
    }

    assert_dango_ok(rc);
    unlink("/tmp/dango-test-file-oom");
    ops->iface_close(iface);
    assert_int_equal(dango__alloc_live(), live);
    dango_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_rw_roundtrip, setup_default,
                                        teardown_env),
        cmocka_unit_test_setup_teardown(test_file_rw_single_big_slice,
                                        setup_default, teardown_env),
        cmocka_unit_test_setup_teardown(test_file_many_inflight,
                                        setup_small_ring, teardown_env),
        cmocka_unit_test_setup_teardown(test_file_read_past_eof, setup_default,
                                        teardown_env),
        cmocka_unit_test_setup_teardown(test_file_peer_not_file, setup_default,
                                        teardown_env),
        cmocka_unit_test_setup_teardown(test_file_peer_invalid, setup_default,
                                        teardown_env),
        cmocka_unit_test_setup_teardown(test_file_missing_dir, setup_default,
                                        teardown_env),
        cmocka_unit_test_setup_teardown(test_file_access_denied, setup_default,
                                        teardown_env),
        cmocka_unit_test_setup_teardown(test_file_post_invalid, setup_default,
                                        teardown_env),
        cmocka_unit_test_setup_teardown(test_file_destroy_inflight,
                                        setup_small_ring, teardown_env),
        cmocka_unit_test_setup_teardown(test_file_destroy_on_loop,
                                        setup_small_ring, teardown_env),
        cmocka_unit_test_setup_teardown(test_file_close_after_loops,
                                        setup_default, teardown_env),
        cmocka_unit_test_setup_teardown(test_file_no_direct, setup_no_direct,
                                        teardown_env),
        cmocka_unit_test_setup_teardown(test_file_query, setup_default,
                                        teardown_env),
        cmocka_unit_test(test_file_config),
        cmocka_unit_test(test_file_iface_open_oom),
    };

    return cmocka_run_group_tests_name("transport_file", tests, NULL, NULL);
}
