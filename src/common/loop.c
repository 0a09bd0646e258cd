/*
 * Event loop over epoll.
 *
 * DESIGN
 * - One thread runs a loop; fd callbacks, timers and posted tasks all run on
 *   it, so loop-owned state needs no locks.
 * - Handlers are indexed by fd. epoll_event.data.ptr points at the handler;
 *   dango_loop_fd_del() detaches it at once (no callback runs for it after
 *   the call) but frees it only after the current batch of events has been
 *   dispatched, because that batch may still hold the pointer.
 * - Cross-thread handoff: dango_loop_post() pushes onto a lock-free LIFO
 *   (one atomic exchange loop) and writes the eventfd only when no wakeup is
 *   already pending, so a burst of posts costs one syscall. The loop takes
 *   the whole stack at once and runs it in FIFO order.
 * - Timers are few and periodic (timeouts, housekeeping): a small array
 *   scanned each iteration bounds the epoll timeout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <dango/error.h>
#include <dango/log.h>
#include "common/alloc.h"
#include "common/loop.h"
#include "common/time.h"

#define LOOP_MAX_EVENTS 64
#define LOOP_MAX_TIMERS 16

typedef struct loop_handler {
    int                  fd;
    unsigned             events;
    dango_loop_fd_cb     cb;
    void                *arg;
    struct loop_handler *next_dead;
} loop_handler_t;

typedef struct loop_timer {
    int                 id;
    uint64_t            interval_ns;
    uint64_t            next_ns;
    dango_loop_timer_cb cb;
    void               *arg;
} loop_timer_t;

struct dango_loop {
    int              epfd;
    int              evfd;
    char             name[32];
    pthread_t        thread;
    int              thread_started;
    int              stop;
    pthread_t        owner;
    int              owner_set;
    loop_handler_t **handlers;
    int              num_handlers; /* size of the handlers array */
    loop_handler_t  *dead;         /* detached, freed after dispatch */
    dango_mpsc_t     tasks;        /* posted from any thread */
    int              wake_pending;
    loop_timer_t     timers[LOOP_MAX_TIMERS];
    int              num_timers;
    int              next_timer_id;
};

static uint32_t loop_to_epoll(unsigned events)
{
    uint32_t ev = 0;

    if (events & DANGO_LOOP_READ) {
        ev |= EPOLLIN | EPOLLRDHUP;
    }

    if (events & DANGO_LOOP_WRITE) {
        ev |= EPOLLOUT;
    }

    return ev;
}

int dango_loop_create(const char *name, dango_loop_t **loop_p)
{
    dango_loop_t      *loop;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    int                rc;

    loop = dango_calloc(1, sizeof(*loop), "loop");
    if (loop == NULL) {
        return DANGO_ENOMEM;
    }

    snprintf(loop->name, sizeof(loop->name), "%s", name ? name : "loop");
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        rc = dango_err_from_errno(errno);
        goto err_free;
    }

    loop->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->evfd < 0) {
        rc = dango_err_from_errno(errno);
        goto err_close_ep;
    }

    /* data.ptr == NULL marks the wakeup eventfd. */
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev) != 0) {
        rc = dango_err_from_errno(errno);
        goto err_close_ev;
    }

    loop->next_timer_id = 1;
    *loop_p             = loop;
    return 0;

err_close_ev:
    close(loop->evfd);
err_close_ep:
    close(loop->epfd);
err_free:
    dango_free(loop);
    return rc;
}

static void loop_free_dead(dango_loop_t *loop)
{
    while (loop->dead != NULL) {
        loop_handler_t *h = loop->dead;

        loop->dead = h->next_dead;
        dango_free(h);
    }
}

void dango_loop_destroy(dango_loop_t *loop)
{
    if (loop == NULL) {
        return;
    }

    dango_loop_stop(loop);
    for (int i = 0; i < loop->num_handlers; i++) {
        dango_free(loop->handlers[i]);
    }

    loop_free_dead(loop);
    dango_free(loop->handlers);
    close(loop->evfd);
    close(loop->epfd);
    dango_free(loop);
}

int dango_loop_fd_add(dango_loop_t *loop, int fd, unsigned events,
                      dango_loop_fd_cb cb, void *arg)
{
    struct epoll_event ev;
    loop_handler_t    *h;

    if ((fd < 0) || (cb == NULL)) {
        return DANGO_EINVAL;
    }

    if (fd >= loop->num_handlers) {
        int              n = DANGO_ALIGN_UP(fd + 1, 64);
        loop_handler_t **nh =
            dango_realloc(loop->handlers, sizeof(*nh) * n, "loop_handlers");

        if (nh == NULL) {
            return DANGO_ENOMEM;
        }

        memset(nh + loop->num_handlers, 0,
               sizeof(*nh) * (size_t)(n - loop->num_handlers));
        loop->handlers     = nh;
        loop->num_handlers = n;
    }

    if (loop->handlers[fd] != NULL) {
        return DANGO_EEXIST;
    }

    h = dango_calloc(1, sizeof(*h), "loop_handler");
    if (h == NULL) {
        return DANGO_ENOMEM;
    }

    h->fd       = fd;
    h->events   = events;
    h->cb       = cb;
    h->arg      = arg;
    ev.events   = loop_to_epoll(events);
    ev.data.ptr = h;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int rc = dango_err_from_errno(errno);

        dango_free(h);
        return rc;
    }

    loop->handlers[fd] = h;
    return 0;
}

int dango_loop_fd_mod(dango_loop_t *loop, int fd, unsigned events)
{
    struct epoll_event ev;
    loop_handler_t    *h;

    if ((fd < 0) || (fd >= loop->num_handlers) ||
        ((h = loop->handlers[fd]) == NULL)) {
        return DANGO_ENOENT;
    }

    if (h->events == events) {
        return 0;
    }

    ev.events   = loop_to_epoll(events);
    ev.data.ptr = h;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
        return dango_err_from_errno(errno);
    }

    h->events = events;
    return 0;
}

int dango_loop_fd_del(dango_loop_t *loop, int fd)
{
    loop_handler_t *h;

    if ((fd < 0) || (fd >= loop->num_handlers) ||
        ((h = loop->handlers[fd]) == NULL)) {
        return DANGO_ENOENT;
    }

    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    loop->handlers[fd] = NULL;
    h->fd              = -1; /* pending events for it are skipped */
    h->next_dead       = loop->dead;
    loop->dead         = h;
    return 0;
}

int dango_loop_timer_add(dango_loop_t *loop, uint64_t interval_ms,
                         dango_loop_timer_cb cb, void *arg)
{
    loop_timer_t *t;

    if ((cb == NULL) || (interval_ms == 0)) {
        return DANGO_EINVAL;
    }

    if (loop->num_timers >= LOOP_MAX_TIMERS) {
        return DANGO_ENOSPC;
    }

    t              = &loop->timers[loop->num_timers++];
    t->id          = loop->next_timer_id++;
    t->interval_ns = interval_ms * DANGO_NSEC_PER_MSEC;
    t->next_ns     = dango_time_ns() + t->interval_ns;
    t->cb          = cb;
    t->arg         = arg;
    return t->id;
}

int dango_loop_timer_del(dango_loop_t *loop, int timer_id)
{
    for (int i = 0; i < loop->num_timers; i++) {
        if (loop->timers[i].id == timer_id) {
            loop->timers[i] = loop->timers[--loop->num_timers];
            return 0;
        }
    }

    return DANGO_ENOENT;
}

void dango_loop_wakeup(dango_loop_t *loop)
{
    uint64_t one = 1;

    if (__atomic_exchange_n(&loop->wake_pending, 1, __ATOMIC_ACQ_REL) == 0) {
        ssize_t n = write(loop->evfd, &one, sizeof(one));

        (void)n; /* EAGAIN means the counter is already non-zero: awake */
    }
}

void dango_loop_post(dango_loop_t *loop, dango_loop_task_t *task)
{
    dango_mpsc_push(&loop->tasks, &task->link);
    dango_loop_wakeup(loop);
}

static void loop_run_tasks(dango_loop_t *loop)
{
    dango_mpsc_link_t *l = dango_mpsc_take(&loop->tasks);

    while (l != NULL) {
        dango_loop_task_t *task =
            dango_container_of(l, dango_loop_task_t, link);

        l = l->next; /* read before: the callback may free the task */
        task->cb(task);
    }
}

static int loop_timer_timeout(dango_loop_t *loop, int timeout_ms)
{
    uint64_t now;

    if (loop->num_timers == 0) {
        return timeout_ms;
    }

    now = dango_time_ns();
    for (int i = 0; i < loop->num_timers; i++) {
        int64_t left = (int64_t)(loop->timers[i].next_ns - now);
        int     ms   = left <= 0 ? 0 : (int)((left + 999999) / 1000000);

        if ((timeout_ms < 0) || (ms < timeout_ms)) {
            timeout_ms = ms;
        }
    }

    return timeout_ms;
}

static void loop_run_timers(dango_loop_t *loop)
{
    uint64_t now = dango_time_ns();

    for (int i = 0; i < loop->num_timers; i++) {
        loop_timer_t *t = &loop->timers[i];

        if ((int64_t)(t->next_ns - now) <= 0) {
            t->next_ns = now + t->interval_ns;
            t->cb(loop, t->arg); /* must not delete timers other than its own */
        }
    }
}

int dango_loop_run_once(dango_loop_t *loop, int timeout_ms)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    int                n;

    if (!__atomic_load_n(&loop->owner_set, __ATOMIC_ACQUIRE)) {
        loop->owner = pthread_self();
        __atomic_store_n(&loop->owner_set, 1, __ATOMIC_RELEASE);
    }

    if (!dango_mpsc_is_empty(&loop->tasks)) {
        timeout_ms = 0;
    }

    n = epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS,
                   loop_timer_timeout(loop, timeout_ms));
    if (n < 0) {
        if (errno == EINTR) {
            return 0;
        }

        return dango_err_from_errno(errno);
    }

    for (int i = 0; i < n; i++) {
        loop_handler_t *h  = events[i].data.ptr;
        unsigned        ev = 0;

        if (h == NULL) {
            uint64_t cnt;
            ssize_t  r;

            /*
             * Drain the eventfd first, then re-arm: a poster that saw the
             * flag still set has already pushed its task, and the tasks are
             * taken after this; a poster after the store writes again. The
             * other order loses wake-ups (the read eats a later write).
             */
            r = read(loop->evfd, &cnt, sizeof(cnt));
            (void)r;
            __atomic_store_n(&loop->wake_pending, 0, __ATOMIC_SEQ_CST);
            continue;
        }

        if (h->fd < 0) {
            continue; /* deleted by an earlier callback in this batch */
        }

        if (events[i].events & (EPOLLIN | EPOLLRDHUP)) {
            ev |= DANGO_LOOP_READ;
        }

        if (events[i].events & EPOLLOUT) {
            ev |= DANGO_LOOP_WRITE;
        }

        if (events[i].events & (EPOLLERR | EPOLLHUP)) {
            ev |= DANGO_LOOP_ERROR | DANGO_LOOP_READ;
        }

        h->cb(loop, h->fd, ev, h->arg);
    }

    loop_run_tasks(loop);
    loop_run_timers(loop);
    loop_free_dead(loop);
    return n;
}

typedef struct loop_sync_call {
    dango_loop_task_t task; /* first member: the task pointer is the call */
    void (*fn)(void *arg);
    void           *arg;
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    int             done;
} loop_sync_call_t;

static void loop_sync_task(dango_loop_task_t *task)
{
    loop_sync_call_t *call = (loop_sync_call_t *)task;

    call->fn(call->arg);
    pthread_mutex_lock(&call->lock);
    call->done = 1;
    pthread_cond_signal(&call->cond);
    pthread_mutex_unlock(&call->lock);
}

void dango_loop_run_sync(dango_loop_t *loop, void (*fn)(void *arg), void *arg)
{
    loop_sync_call_t call;

    if (!__atomic_load_n(&loop->thread_started, __ATOMIC_ACQUIRE) ||
        dango_loop_is_current(loop)) {
        fn(arg);
        return;
    }

    call.task.cb = loop_sync_task;
    call.fn      = fn;
    call.arg     = arg;
    call.done    = 0;
    pthread_mutex_init(&call.lock, NULL);
    pthread_cond_init(&call.cond, NULL);
    dango_loop_post(loop, &call.task);
    /* The loop thread runs posted tasks on every iteration: no deadline is
     * needed, the call is bounded by the work of @fn itself. */
    pthread_mutex_lock(&call.lock);
    while (!call.done) {
        pthread_cond_wait(&call.cond, &call.lock);
    }

    pthread_mutex_unlock(&call.lock);
    pthread_mutex_destroy(&call.lock);
    pthread_cond_destroy(&call.cond);
}

static void *loop_thread_main(void *arg)
{
    dango_loop_t *loop = arg;

    pthread_setname_np(pthread_self(), loop->name);
    loop->owner = pthread_self();
    __atomic_store_n(&loop->owner_set, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE)) {
        int rc = dango_loop_run_once(loop, 1000);

        if (rc < 0) {
            dango_error("loop %s: epoll_wait failed: %s", loop->name,
                        dango_strerror(rc));
            break;
        }
    }

    loop_run_tasks(loop); /* tasks posted while stopping still run once */
    return NULL;
}

int dango_loop_start(dango_loop_t *loop)
{
    int rc;

    if (loop->thread_started) {
        return DANGO_EBUSY;
    }

    loop->stop      = 0;
    loop->owner_set = 0; /* a thread that ran run_once() by hand is not it */
    rc = pthread_create(&loop->thread, NULL, loop_thread_main, loop);
    if (rc != 0) {
        return dango_err_from_errno(rc);
    }

    __atomic_store_n(&loop->thread_started, 1, __ATOMIC_RELEASE);
    return 0;
}

void dango_loop_stop(dango_loop_t *loop)
{
    if (!loop->thread_started) {
        return;
    }

    __atomic_store_n(&loop->stop, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&loop->wake_pending, 0, __ATOMIC_RELEASE);
    dango_loop_wakeup(loop);
    pthread_join(loop->thread, NULL);
    __atomic_store_n(&loop->thread_started, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&loop->owner_set, 0, __ATOMIC_RELEASE);
}

int dango_loop_is_current(const dango_loop_t *loop)
{
    /* owner is written before owner_set is released by the loop thread. */
    return __atomic_load_n(&loop->owner_set, __ATOMIC_ACQUIRE) &&
           pthread_equal(loop->owner, pthread_self());
}

const char *dango_loop_name(const dango_loop_t *loop)
{
    return loop->name;
}
