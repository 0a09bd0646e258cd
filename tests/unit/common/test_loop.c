/*
 * Unit tests of the epoll event loop: fd callbacks on pipes, the error codes
 * of fd_add/fd_mod/fd_del, deleting an fd from inside a callback of the same
 * batch, periodic timers, cross-thread posting (4 producers x 1000 tasks,
 * each run exactly once, FIFO per producer), dango_loop_run_sync() and the
 * start/stop life cycle. Loops driven by the test thread call
 * dango_loop_run_once() a bounded number of times; started loops are waited
 * on with a condition variable and a deadline, never with a sleep.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include "common/alloc.h"
#include "common/loop.h"
#include "common/time.h"

#define TEST_WAIT_S    30
#define TEST_MAX_ITERS 200 /* bound for run_once loops */
#define TEST_PRODUCERS 4
#define TEST_TASKS_PER 1000

static int test_teardown(void **state)
{
    (void)state;
    dango__alloc_fail_after(-1);
    return 0;
}

/* ---------- completion waiting ---------- */

static pthread_mutex_t test_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  test_cond;

static void test_cond_init(void)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&test_cond, &attr);
    pthread_condattr_destroy(&attr);
}

/* Waits until *@counter >= @target (updated under test_lock) or deadline. */
static int test_wait_counter(const int *counter, int target)
{
    struct timespec ts;
    int             rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += TEST_WAIT_S;
    pthread_mutex_lock(&test_lock);
    while ((*counter < target) && (rc == 0)) {
        rc = pthread_cond_timedwait(&test_cond, &test_lock, &ts);
    }

    rc = (*counter >= target) ? 0 : DANGO_ETIMEDOUT;
    pthread_mutex_unlock(&test_lock);
    return rc;
}

static void test_counter_add(int *counter)
{
    pthread_mutex_lock(&test_lock);
    (*counter)++;
    pthread_cond_broadcast(&test_cond);
    pthread_mutex_unlock(&test_lock);
}

/* ---------- fd callbacks ---------- */

typedef struct test_fd_ctx {
    int      calls;
    int      last_fd;
    unsigned last_events;
    char     data[16];
    size_t   data_len;
} test_fd_ctx_t;

static void test_fd_read_cb(dango_loop_t *loop, int fd, unsigned events,
                            void *arg)
{
    test_fd_ctx_t *ctx = arg;
    ssize_t        n;

    (void)loop;
    ctx->calls++;
    ctx->last_fd     = fd;
    ctx->last_events = events;
    n = read(fd, ctx->data + ctx->data_len, sizeof(ctx->data) - ctx->data_len);
    if (n > 0) {
        ctx->data_len += (size_t)n;
    }
}

static void test_fd_count_cb(dango_loop_t *loop, int fd, unsigned events,
                             void *arg)
{
    test_fd_ctx_t *ctx = arg;

    (void)loop;
    ctx->calls++;
    ctx->last_fd     = fd;
    ctx->last_events = events;
}

/* Runs @loop until *@calls > @before or the iteration bound is reached. */
static void test_run_until_called(dango_loop_t *loop, const int *calls,
                                  int before)
{
    for (int i = 0; (i < TEST_MAX_ITERS) && (*calls <= before); i++) {
        int rc = dango_loop_run_once(loop, 100);

        assert_true(rc >= 0);
    }
}

static void loop_fd_callbacks_on_pipe(void **state)
{
    dango_loop_t *loop;
    test_fd_ctx_t rd = {0}, wr = {0};
    int           p[2];

    (void)state;
    assert_dango_ok(dango_loop_create("test", &loop));
    assert_string_equal(dango_loop_name(loop), "test");
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);

    assert_dango_ok(
        dango_loop_fd_add(loop, p[0], DANGO_LOOP_READ, test_fd_read_cb, &rd));
    assert_dango_ok(
        dango_loop_fd_add(loop, p[1], DANGO_LOOP_WRITE, test_fd_count_cb, &wr));

    /* An empty pipe is writable, not readable. */
    test_run_until_called(loop, &wr.calls, 0);
    assert_int_equal(wr.calls, 1);
    assert_int_equal(wr.last_fd, p[1]);
    assert_true(wr.last_events & DANGO_LOOP_WRITE);
    assert_false(wr.last_events & DANGO_LOOP_READ);
    assert_int_equal(rd.calls, 0);

    /* Stop watching for writability: no more write callbacks. */
    assert_dango_ok(dango_loop_fd_mod(loop, p[1], 0));
    assert_dango_ok(dango_loop_fd_mod(loop, p[1], 0)); /* unchanged: no-op */
    assert_int_equal(write(p[1], "hello", 5), 5);
    test_run_until_called(loop, &rd.calls, 0);
    assert_int_equal(rd.calls, 1);
    assert_int_equal(rd.last_fd, p[0]);
    assert_true(rd.last_events & DANGO_LOOP_READ);
    assert_false(rd.last_events & DANGO_LOOP_ERROR);
    assert_int_equal(rd.data_len, 5);
    assert_memory_equal(rd.data, "hello", 5);
    assert_int_equal(wr.calls, 1);

    /* Drained and nothing written: a bounded wait sees no callback. */
    assert_int_equal(dango_loop_run_once(loop, 0), 0);
    assert_int_equal(rd.calls, 1);

    /* Closing the writer is a hang-up on the reader: READ | ERROR. */
    assert_dango_ok(dango_loop_fd_del(loop, p[1]));
    close(p[1]);
    test_run_until_called(loop, &rd.calls, 1);
    assert_int_equal(rd.calls, 2);
    assert_true(rd.last_events & DANGO_LOOP_READ);
    assert_true(rd.last_events & DANGO_LOOP_ERROR);
    assert_int_equal(wr.calls, 1);

    assert_dango_ok(dango_loop_fd_del(loop, p[0]));
    close(p[0]);
    dango_loop_destroy(loop);
}

static void loop_fd_error_codes(void **state)
{
    dango_loop_t *loop;
    test_fd_ctx_t ctx = {0};
    int           p[2], closed[2];
    char          path[] = "/tmp/dango-test-loop-XXXXXX";
    int           file_fd;

    (void)state;
    assert_dango_ok(dango_loop_create(NULL, &loop));
    assert_string_equal(dango_loop_name(loop), "loop");
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);

    assert_dango_ok(
        dango_loop_fd_add(loop, p[0], DANGO_LOOP_READ, test_fd_count_cb, &ctx));
    assert_dango_err(
        DANGO_EEXIST,
        dango_loop_fd_add(loop, p[0], DANGO_LOOP_READ, test_fd_count_cb, &ctx));
    assert_dango_err(DANGO_EINVAL, dango_loop_fd_add(loop, -1, DANGO_LOOP_READ,
                                                     test_fd_count_cb, &ctx));
    assert_dango_err(
        DANGO_EINVAL,
        dango_loop_fd_add(loop, p[1], DANGO_LOOP_WRITE, NULL, &ctx));

    /* epoll refuses regular files and closed descriptors. */
    file_fd = mkstemp(path);
    assert_true(file_fd >= 0);
    unlink(path);
    assert_dango_err(DANGO_EPERM,
                     dango_loop_fd_add(loop, file_fd, DANGO_LOOP_READ,
                                       test_fd_count_cb, &ctx));
    assert_int_equal(pipe2(closed, O_CLOEXEC), 0);
    close(closed[0]);
    close(closed[1]);
    assert_dango_err(DANGO_EBADF,
                     dango_loop_fd_add(loop, closed[0], DANGO_LOOP_READ,
                                       test_fd_count_cb, &ctx));
    /* A failed add leaves the slot free. */
    assert_dango_err(DANGO_ENOENT, dango_loop_fd_del(loop, file_fd));

    /* Unknown fds: never added, beyond the table, negative. */
    assert_dango_err(DANGO_ENOENT, dango_loop_fd_del(loop, p[1]));
    assert_dango_err(DANGO_ENOENT, dango_loop_fd_del(loop, 100000));
    assert_dango_err(DANGO_ENOENT, dango_loop_fd_del(loop, -1));
    assert_dango_err(DANGO_ENOENT,
                     dango_loop_fd_mod(loop, p[1], DANGO_LOOP_READ));
    assert_dango_err(DANGO_ENOENT,
                     dango_loop_fd_mod(loop, 100000, DANGO_LOOP_READ));
    assert_dango_err(DANGO_ENOENT,
                     dango_loop_fd_mod(loop, -1, DANGO_LOOP_READ));

    /* Deleted twice: the second is unknown; re-adding works. */
    assert_dango_ok(dango_loop_fd_del(loop, p[0]));
    assert_dango_err(DANGO_ENOENT, dango_loop_fd_del(loop, p[0]));
    assert_dango_ok(
        dango_loop_fd_add(loop, p[0], DANGO_LOOP_READ, test_fd_count_cb, &ctx));
    assert_dango_ok(dango_loop_fd_del(loop, p[0]));

    close(file_fd);
    close(p[0]);
    close(p[1]);
    dango_loop_destroy(loop);
}

/* Two readable pipes in one batch; whichever callback runs first deletes
 * (and closes) the other, then reuses its fd number for a fresh pipe. */
typedef struct test_pair {
    dango_loop_t *loop;
    int           rd[2]; /* read ends watched */
    int           wr[2];
    int           calls[2];
    int           deleted;  /* index deleted by the first callback, or -1 */
    int           spare[2]; /* the pipe created inside the callback */
} test_pair_t;

static void test_pair_noop_cb(dango_loop_t *loop, int fd, unsigned events,
                              void *arg)
{
    int *calls = arg;

    (void)loop;
    (void)fd;
    (void)events;
    (*calls)++;
}

static void test_pair_cb(dango_loop_t *loop, int fd, unsigned events, void *arg)
{
    test_pair_t *tp    = arg;
    int          self  = (fd == tp->rd[0]) ? 0 : 1;
    int          other = 1 - self;

    (void)events;
    tp->calls[self]++;
    if (tp->deleted >= 0) {
        return;
    }

    tp->deleted = other;
    assert_dango_ok(dango_loop_fd_del(loop, tp->rd[other]));
    close(tp->rd[other]);
    /* The lowest free number is the one just closed: a new handler may sit
     * on the same fd while the batch still holds the old one's event. */
    assert_int_equal(pipe2(tp->spare, O_NONBLOCK | O_CLOEXEC), 0);
    assert_dango_ok(dango_loop_fd_add(loop, tp->spare[0], DANGO_LOOP_READ,
                                      test_pair_noop_cb, &tp->calls[other]));
}

static void loop_fd_del_inside_callback(void **state)
{
    test_pair_t tp = {.deleted = -1};
    int         p[2];

    (void)state;
    assert_dango_ok(dango_loop_create("del", &tp.loop));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
        tp.rd[i] = p[0];
        tp.wr[i] = p[1];
        assert_int_equal(write(tp.wr[i], "x", 1), 1);
    }

    for (int i = 0; i < 2; i++) {
        assert_dango_ok(dango_loop_fd_add(tp.loop, tp.rd[i], DANGO_LOOP_READ,
                                          test_pair_cb, &tp));
    }

    /* Both are ready before the wait: one batch holds both events. */
    assert_int_equal(dango_loop_run_once(tp.loop, 1000), 2);
    assert_true(tp.deleted >= 0);
    assert_int_equal(tp.calls[1 - tp.deleted], 1);
    assert_int_equal(tp.calls[tp.deleted], 0); /* neither old nor new ran */

    /* A second iteration: the survivor is still readable, the new pipe
     * is empty. */
    assert_int_equal(dango_loop_run_once(tp.loop, 0), 1);
    assert_int_equal(tp.calls[1 - tp.deleted], 2);
    assert_int_equal(tp.calls[tp.deleted], 0);

    assert_dango_ok(dango_loop_fd_del(tp.loop, tp.spare[0]));
    assert_dango_ok(dango_loop_fd_del(tp.loop, tp.rd[1 - tp.deleted]));
    close(tp.rd[1 - tp.deleted]);
    close(tp.spare[0]);
    close(tp.spare[1]);
    close(tp.wr[0]);
    close(tp.wr[1]);
    dango_loop_destroy(tp.loop);
}

static void test_self_del_cb(dango_loop_t *loop, int fd, unsigned events,
                             void *arg)
{
    int *calls = arg;

    (void)events;
    (*calls)++;
    assert_dango_ok(dango_loop_fd_del(loop, fd));
}

static void loop_fd_del_self_inside_callback(void **state)
{
    dango_loop_t *loop;
    int           p[2], calls = 0;

    (void)state;
    assert_dango_ok(dango_loop_create("self", &loop));
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_dango_ok(dango_loop_fd_add(loop, p[0], DANGO_LOOP_READ,
                                      test_self_del_cb, &calls));
    assert_int_equal(dango_loop_run_once(loop, 1000), 1);
    assert_int_equal(calls, 1);
    assert_int_equal(dango_loop_run_once(loop, 0), 0);
    assert_int_equal(calls, 1);
    assert_dango_err(DANGO_ENOENT, dango_loop_fd_del(loop, p[0]));
    close(p[0]);
    close(p[1]);
    dango_loop_destroy(loop);
}

/* ---------- timers ---------- */

typedef struct test_timer_ctx {
    int      fired;
    uint64_t first_ns;
} test_timer_ctx_t;

static void test_timer_cb(dango_loop_t *loop, void *arg)
{
    test_timer_ctx_t *t = arg;

    (void)loop;
    if (t->fired++ == 0) {
        t->first_ns = dango_time_ns();
    }
}

static void test_timer_noop(dango_loop_t *loop, void *arg)
{
    (void)loop;
    (void)arg;
}

static void loop_periodic_timer(void **state)
{
    dango_loop_t    *loop;
    test_timer_ctx_t t = {0};
    uint64_t         start;
    int              id, ids[16];

    (void)state;
    assert_dango_ok(dango_loop_create("timer", &loop));
    start = dango_time_ns();
    id    = dango_loop_timer_add(loop, 5, test_timer_cb, &t);
    assert_true(id > 0);

    /* run_once(-1) returns for the timer: no fd is watched. */
    for (int i = 0; (i < TEST_MAX_ITERS) && (t.fired < 3); i++) {
        assert_true(dango_loop_run_once(loop, -1) >= 0);
    }

    assert_int_equal(t.fired, 3);
    assert_true(t.first_ns - start >= 5 * DANGO_NSEC_PER_MSEC);

    assert_dango_ok(dango_loop_timer_del(loop, id));
    assert_dango_err(DANGO_ENOENT, dango_loop_timer_del(loop, id));
    assert_dango_err(DANGO_ENOENT, dango_loop_timer_del(loop, 9999));
    /* Deleted: an iteration several intervals long fires nothing. */
    assert_int_equal(dango_loop_run_once(loop, 20), 0);
    assert_int_equal(t.fired, 3);

    assert_dango_err(DANGO_EINVAL,
                     dango_loop_timer_add(loop, 0, test_timer_noop, NULL));
    assert_dango_err(DANGO_EINVAL, dango_loop_timer_add(loop, 10, NULL, NULL));
    for (int i = 0; i < 16; i++) {
        ids[i] = dango_loop_timer_add(loop, 100000, test_timer_noop, NULL);
        assert_true(ids[i] > 0);
        for (int j = 0; j < i; j++) {
            assert_int_not_equal(ids[i], ids[j]);
        }
    }

    assert_dango_err(DANGO_ENOSPC,
                     dango_loop_timer_add(loop, 100000, test_timer_noop, NULL));
    assert_dango_ok(dango_loop_timer_del(loop, ids[3]));
    assert_true(dango_loop_timer_add(loop, 100000, test_timer_noop, NULL) > 0);
    dango_loop_destroy(loop);
}

/* ---------- posting across threads ---------- */

typedef struct test_task {
    dango_loop_task_t task;
    int               producer;
    int               seq;
    int               runs;
} test_task_t;

typedef struct test_post_ctx {
    dango_loop_t *loop;
    test_task_t   tasks[TEST_PRODUCERS][TEST_TASKS_PER];
    int           next_seq[TEST_PRODUCERS]; /* loop thread only */
    int           order_errors;             /* loop thread only */
    int           off_thread;               /* loop thread only */
    int           done;                     /* under test_lock */
    pthread_t     producers[TEST_PRODUCERS];
} test_post_ctx_t;

static test_post_ctx_t *test_post;

static void test_post_task_cb(dango_loop_task_t *task)
{
    test_task_t *t = dango_container_of(task, test_task_t, task);

    t->runs++;
    if (!dango_loop_is_current(test_post->loop)) {
        test_post->off_thread++;
    }

    if (t->seq != test_post->next_seq[t->producer]) {
        test_post->order_errors++;
    }

    test_post->next_seq[t->producer] = t->seq + 1;
    test_counter_add(&test_post->done);
}

static void *test_producer(void *arg)
{
    int id = (int)(intptr_t)arg;

    for (int i = 0; i < TEST_TASKS_PER; i++) {
        test_task_t *t = &test_post->tasks[id][i];

        t->task.cb  = test_post_task_cb;
        t->producer = id;
        t->seq      = i;
        dango_loop_post(test_post->loop, &t->task);
    }

    return NULL;
}

static void loop_post_from_threads_fifo_exactly_once(void **state)
{
    test_post_ctx_t *ctx = calloc(1, sizeof(*ctx));

    (void)state;
    assert_non_null(ctx);
    test_post = ctx;
    assert_dango_ok(dango_loop_create("post", &ctx->loop));
    assert_dango_ok(dango_loop_start(ctx->loop));
    for (int i = 0; i < TEST_PRODUCERS; i++) {
        assert_int_equal(pthread_create(&ctx->producers[i], NULL, test_producer,
                                        (void *)(intptr_t)i),
                         0);
    }

    for (int i = 0; i < TEST_PRODUCERS; i++) {
        pthread_join(ctx->producers[i], NULL);
    }

    assert_dango_ok(
        test_wait_counter(&ctx->done, TEST_PRODUCERS * TEST_TASKS_PER));
    dango_loop_stop(ctx->loop);

    /* The loop thread is joined: its writes are visible. */
    assert_int_equal(ctx->done, TEST_PRODUCERS * TEST_TASKS_PER);
    assert_int_equal(ctx->order_errors, 0);
    assert_int_equal(ctx->off_thread, 0);
    for (int p = 0; p < TEST_PRODUCERS; p++) {
        assert_int_equal(ctx->next_seq[p], TEST_TASKS_PER);
        for (int i = 0; i < TEST_TASKS_PER; i++) {
            assert_int_equal(ctx->tasks[p][i].runs, 1);
        }
    }

    dango_loop_destroy(ctx->loop);
    test_post = NULL;
    free(ctx);
}

typedef struct test_simple_task {
    dango_loop_task_t task;
    int               runs;
} test_simple_task_t;

static void test_simple_task_cb(dango_loop_task_t *task)
{
    test_simple_task_t *t = dango_container_of(task, test_simple_task_t, task);

    t->runs++;
}

/*
 * A burst from several producers, then one post to the idle loop. If a burst
 * could leave the wake-up flag set with the eventfd drained, the lone post
 * would not write the eventfd and would wait for the loop's 1 s poll
 * timeout instead of running at once.
 */
#define TEST_WAKE_ROUNDS   300
#define TEST_WAKE_BURST    1000
#define TEST_WAKE_PROMPT_S 0.5

typedef struct test_burst {
    dango_loop_t      *loop;
    test_simple_task_t tasks[TEST_PRODUCERS][TEST_WAKE_BURST];
    int                done; /* under test_lock */
} test_burst_t;

static test_burst_t *test_burst_ctx;

static void test_burst_task_cb(dango_loop_task_t *task)
{
    (void)task;
    test_counter_add(&test_burst_ctx->done);
}

static void *test_burst_producer(void *arg)
{
    test_simple_task_t *tasks = arg;

    for (int i = 0; i < TEST_WAKE_BURST; i++) {
        tasks[i].task.cb = test_burst_task_cb;
        dango_loop_post(test_burst_ctx->loop, &tasks[i].task);
    }

    return NULL;
}

static void loop_post_wakes_idle_loop_after_burst(void **state)
{
    test_burst_t      *ctx = calloc(1, sizeof(*ctx));
    test_simple_task_t ping;
    pthread_t          thr[TEST_PRODUCERS];
    int                target = 0;

    (void)state;
    assert_non_null(ctx);
    test_burst_ctx = ctx;
    assert_dango_ok(dango_loop_create("burst", &ctx->loop));
    assert_dango_ok(dango_loop_start(ctx->loop));
    for (int r = 0; r < TEST_WAKE_ROUNDS; r++) {
        uint64_t start;

        for (int i = 0; i < TEST_PRODUCERS; i++) {
            assert_int_equal(pthread_create(&thr[i], NULL, test_burst_producer,
                                            ctx->tasks[i]),
                             0);
        }

        for (int i = 0; i < TEST_PRODUCERS; i++) {
            pthread_join(thr[i], NULL);
        }

        target += TEST_PRODUCERS * TEST_WAKE_BURST;
        assert_dango_ok(test_wait_counter(&ctx->done, target));

        /* The loop is idle now: a single post must wake it promptly. */
        ping.task.cb = test_burst_task_cb;
        start        = dango_time_ns();
        dango_loop_post(ctx->loop, &ping.task);
        target++;
        assert_dango_ok(test_wait_counter(&ctx->done, target));
        if (dango_time_ns() - start >
            (uint64_t)(TEST_WAKE_PROMPT_S * DANGO_NSEC_PER_SEC)) {
            fail_msg("round %d: a post to the idle loop took %.3f s", r,
                     (double)(dango_time_ns() - start) / 1e9);
        }
    }

    dango_loop_destroy(ctx->loop);
    test_burst_ctx = NULL;
    free(ctx);
}

static void loop_post_without_thread_and_wakeup(void **state)
{
    dango_loop_t      *loop;
    test_simple_task_t t[3];

    (void)state;
    assert_dango_ok(dango_loop_create("manual", &loop));
    memset(t, 0, sizeof(t));
    for (int i = 0; i < 3; i++) {
        t[i].task.cb = test_simple_task_cb;
        dango_loop_post(loop, &t[i].task);
    }

    /* Queued tasks make the iteration non-blocking even with -1. */
    assert_true(dango_loop_run_once(loop, -1) >= 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t[i].runs, 1);
    }

    /* Nothing left: a zero timeout returns at once with no event. */
    assert_int_equal(dango_loop_run_once(loop, 0), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t[i].runs, 1);
    }

    /* A wakeup alone ends an unbounded wait (the eventfd is one event). */
    dango_loop_wakeup(loop);
    dango_loop_wakeup(loop); /* coalesced */
    assert_int_equal(dango_loop_run_once(loop, -1), 1);
    assert_int_equal(dango_loop_run_once(loop, 0), 0);
    dango_loop_destroy(loop);
}

/* ---------- run_sync ---------- */

typedef struct test_sync_ctx {
    dango_loop_t *loop;
    pthread_t     caller;
    int           ran;
    int           on_loop;
    int           on_caller;
    int           nested_ran;
} test_sync_ctx_t;

static void test_sync_fn(void *arg)
{
    test_sync_ctx_t *s = arg;

    s->ran++;
    s->on_loop   = dango_loop_is_current(s->loop);
    s->on_caller = pthread_equal(pthread_self(), s->caller);
}

static void test_sync_nested_inner(void *arg)
{
    test_sync_ctx_t *s = arg;

    s->nested_ran = dango_loop_is_current(s->loop) ? 1 : -1;
}

static void test_sync_nested(void *arg)
{
    test_sync_ctx_t *s = arg;

    /* On the loop thread itself it must run inline, not deadlock. */
    dango_loop_run_sync(s->loop, test_sync_nested_inner, s);
    s->ran++;
}

static void loop_run_sync_runs_on_loop_thread(void **state)
{
    test_sync_ctx_t s = {0};

    (void)state;
    assert_dango_ok(dango_loop_create("sync", &s.loop));
    s.caller = pthread_self();

    /* No thread runs the loop: runs inline on the caller. */
    dango_loop_run_sync(s.loop, test_sync_fn, &s);
    assert_int_equal(s.ran, 1);
    assert_true(s.on_caller);

    /* The caller drove the loop by hand before starting it. */
    assert_int_equal(dango_loop_run_once(s.loop, 0), 0);
    assert_true(dango_loop_is_current(s.loop));

    assert_dango_ok(dango_loop_start(s.loop));
    assert_false(dango_loop_is_current(s.loop));
    dango_loop_run_sync(s.loop, test_sync_fn, &s);
    assert_int_equal(s.ran, 2); /* synchronous: done on return */
    assert_true(s.on_loop);
    assert_false(s.on_caller);

    for (int i = 0; i < 100; i++) {
        dango_loop_run_sync(s.loop, test_sync_fn, &s);
        assert_true(s.on_loop);
        assert_false(s.on_caller);
    }

    assert_int_equal(s.ran, 102);
    dango_loop_run_sync(s.loop, test_sync_nested, &s);
    assert_int_equal(s.ran, 103);
    assert_int_equal(s.nested_ran, 1);

    dango_loop_stop(s.loop);
    assert_false(dango_loop_is_current(s.loop));
    dango_loop_run_sync(s.loop, test_sync_fn, &s); /* inline again */
    assert_int_equal(s.ran, 104);
    assert_true(s.on_caller);
    dango_loop_destroy(s.loop);
}

/* ---------- life cycle ---------- */

static void loop_start_stop_idempotent(void **state)
{
    dango_loop_t      *loop;
    test_simple_task_t t = {.task.cb = test_simple_task_cb};
    test_sync_ctx_t    s = {0};

    (void)state;
    assert_dango_ok(dango_loop_create("life", &loop));
    s.loop   = loop;
    s.caller = pthread_self();

    dango_loop_stop(loop); /* never started: no-op */
    assert_dango_ok(dango_loop_start(loop));
    assert_dango_err(DANGO_EBUSY, dango_loop_start(loop));
    dango_loop_stop(loop);
    dango_loop_stop(loop);

    /* Restart after stop works, and the new thread owns the loop. */
    assert_dango_ok(dango_loop_start(loop));
    dango_loop_run_sync(loop, test_sync_fn, &s);
    assert_true(s.on_loop);
    assert_false(s.on_caller);
    dango_loop_post(loop, &t.task);
    dango_loop_stop(loop); /* a task posted before stop still runs */
    assert_int_equal(t.runs, 1);

    /* Destroy stops a running loop. */
    assert_dango_ok(dango_loop_start(loop));
    dango_loop_destroy(loop);
}

static void loop_oom(void **state)
{
    long          live = dango__alloc_live();
    dango_loop_t *loop = NULL;
    test_fd_ctx_t ctx  = {0};
    int           p[2];
    int           failures = 0, done = 0;

    (void)state;
    dango__alloc_fail_after(1);
    assert_dango_err(DANGO_ENOMEM, dango_loop_create("oom", &loop));
    dango__alloc_fail_after(-1);
    assert_null(loop);
    assert_int_equal(dango__alloc_live(), live);

    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    for (long n = 1; (n <= 10) && !done; n++) {
        int rc;

        assert_dango_ok(dango_loop_create("oom", &loop));
        dango__alloc_fail_after(n);
        rc = dango_loop_fd_add(loop, p[0], DANGO_LOOP_READ, test_fd_count_cb,
                               &ctx);
        dango__alloc_fail_after(-1);
        if (rc == 0) {
            done = 1;
            assert_dango_ok(dango_loop_fd_del(loop, p[0]));
        } else {
            assert_dango_err(DANGO_ENOMEM, rc);
            failures++;
            /* The failed add left nothing registered. */
            assert_dango_err(DANGO_ENOENT, dango_loop_fd_del(loop, p[0]));
        }

        dango_loop_destroy(loop);
        assert_int_equal(dango__alloc_live(), live);
    }

    assert_true(done);
    assert_int_equal(failures, 2); /* the fd table, then the handler */
    close(p[0]);
    close(p[1]);
}

int main(void)
{
#define T(_fn) cmocka_unit_test_teardown(_fn, test_teardown)
    const struct CMUnitTest tests[] = {
        T(loop_fd_callbacks_on_pipe),
        T(loop_fd_error_codes),
        T(loop_fd_del_inside_callback),
        T(loop_fd_del_self_inside_callback),
        T(loop_periodic_timer),
        T(loop_post_from_threads_fifo_exactly_once),
        T(loop_post_wakes_idle_loop_after_burst),
        T(loop_post_without_thread_and_wakeup),
        T(loop_run_sync_runs_on_loop_thread),
        T(loop_start_stop_idempotent),
        T(loop_oom),
    };
#undef T

    test_cond_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
