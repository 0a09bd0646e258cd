/*
 * file transport: slices read and write "file://<path>" segments through
 * io_uring.
 *
 * DESIGN
 *
 * A file segment is one file; a slice's remote address is an offset into
 * it. Each endpoint opens the file twice: buffered, and (unless FILE_DIRECT
 * is off, or the filesystem refuses) with O_DIRECT. A submission goes to
 * the O_DIRECT fd only when its memory address, file offset and length are
 * all multiples of 4 KiB, so no bounce buffer is ever needed; everything
 * else takes the page cache. The kernel keeps the two coherent for
 * non-overlapping I/O (a direct read first writes back dirty cached pages
 * of its range; a direct write invalidates them).
 *
 * One ring per iface, owned by one engine loop (the last one: loops[0]
 * carries the tcp and shm listeners). Everything that touches the ring,
 * the backlog and the counters below runs on that loop thread, so none of
 * it needs a lock:
 *   - post() (any thread) stores a dango_loop_task_t in slice->tp_priv
 *     and hands the slice over with dango_loop_post(): one atomic push,
 *     and at most one eventfd write per burst.
 *   - The slice task prepares an SQE when the ring has room, or appends
 *     the slice to the backlog. It does not submit: it posts one flush
 *     task, which runs after the whole burst of slice tasks and submits
 *     all their SQEs with a single io_uring_enter().
 *   - The ring signals an eventfd (io_uring_register_eventfd) that the
 *     loop watches. Its callback reaps every CQE, continues short
 *     transfers with their remainder, refills the ring from the backlog
 *     and submits once.
 * SQEs prepared plus SQEs in the kernel never exceed FILE_QUEUE_DEPTH, and
 * the CQ ring is twice that size, so completions cannot overflow.
 *
 * Short transfers and EOF: a read or write that moves fewer bytes than
 * asked is resubmitted for the remainder (with the O_DIRECT choice made
 * again, since the remainder may be unaligned). A read that returns 0 has
 * hit end of file, so the slice fails with DANGO_ERANGE: a READ reports
 * success only if every byte came from the file. A WRITE past the end
 * extends the file.
 *
 * Lifetime. Every slice holds a reference on its endpoint from post() to
 * completion, and so do the queued flush and cancel tasks. References are
 * dropped only at the very end of each loop-thread entry point
 * (file_loop_leave), after its last use of the iface, and under the iface
 * lock, which is also what ep_destroy() and iface_close() wait on. So once
 * ep_destroy() has seen its endpoint's references drain, the loop thread no
 * longer touches that endpoint, and once every endpoint is gone it no
 * longer touches the iface either.
 *
 * The eventfd is watched only while some endpoint is alive (it is added on
 * the loop thread by the first slice and removed there once the last
 * endpoint is being destroyed and the ring is idle). That lets
 * iface_close() free everything from any thread, without a round trip
 * through the loop and whether or not the loop thread still runs.
 *
 * ep_destroy() fails the endpoint's slices that are still queued (in the
 * backlog, or not yet picked up by the loop) with DANGO_ECANCELED, waits up
 * to FILE_DRAIN_TIMEOUT_NS for those already in the kernel, and returns
 * when no completion for the endpoint can run any more. On the loop thread
 * it reaps the ring itself instead of waiting, since nobody else would.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#define DANGO_LOG_COMPONENT dango__log_file

#include <dango/error.h>
#include <dango/log.h>
#include <dango/transport.h>
#include "common/alloc.h"
#include "common/config_table.h"
#include "common/list.h"
#include "common/loop.h"
#include "common/time.h"
#include "transport/file/file_int.h"

DANGO_LOG_COMPONENT_DEFINE(dango__log_file, "file");

/* O_DIRECT is used only when address, offset and length are multiples. */
#define FILE_DIRECT_ALIGN 4096u
/* Largest single read/write; longer slices continue as short transfers. */
#define FILE_IO_MAX (1u << 30)
/* io_uring's own limit on ring entries. */
#define FILE_QUEUE_DEPTH_MAX 32768ul
/* Bound on ep_destroy()/iface_close() waiting for I/O in the kernel. */
#define FILE_DRAIN_TIMEOUT_NS (10 * DANGO_NSEC_PER_SEC)
/* Resubmissions after -EAGAIN/-EINTR before the slice fails. */
#define FILE_MAX_RETRIES 16
/* user_data = slice pointer | this bit when the O_DIRECT fd was used. */
#define FILE_UD_DIRECT 1ull

typedef struct file_config {
    unsigned long queue_depth;
    int           direct;
    size_t        max_slice;
} file_config_t;

static const dango_config_field_t file_config_fields[] = {
    {"QUEUE_DEPTH", "64",
     "io_uring submission queue depth; slices beyond it wait in a backlog.",
     offsetof(file_config_t, queue_depth), DANGO_CFG_UINT},
    {"DIRECT", "y",
     "Use O_DIRECT for reads and writes whose address, offset and length "
     "are 4 KiB aligned.",
     offsetof(file_config_t, direct), DANGO_CFG_BOOL},
    {"MAX_SLICE", "1m", "Preferred slice size reported to the transfer engine.",
     offsetof(file_config_t, max_slice), DANGO_CFG_SIZE},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING}};

static dango_config_table_t file_config_table = {
    .prefix = "FILE",
    .doc    = "File segments over io_uring",
    .fields = file_config_fields,
    .next   = NULL};

DANGO_CONFIG_REGISTER_TABLE(file_config_table)

struct dango_tp_iface {
    dango_loop_t   *loop; /* owns the ring */
    file_config_t   config;
    unsigned        depth; /* SQEs prepared + in kernel, at most */
    struct io_uring ring;
    int             evfd; /* signalled by the ring on each CQE */

    /* Loop-thread state. */
    int               evfd_watched; /* atomic: read by iface_close() */
    unsigned          sq_ready;     /* SQEs prepared, not yet submitted */
    unsigned          inflight;     /* SQEs submitted, not yet reaped */
    dango_list_link_t backlog;      /* file_op_t.link, FIFO */
    int               flush_posted;
    dango_loop_task_t flush_task;
    dango_tp_ep_t    *flush_ep;     /* holds a reference for flush_task */
    dango_tp_ep_t    *last_prep_ep; /* endpoint of the newest SQE */
    unsigned          cb_depth;     /* nesting of loop-thread entry points */
    dango_tp_ep_t    *put_list;     /* endpoints with deferred puts */

    /* Any thread. */
    int             active_eps; /* atomic: created, not destroying */
    pthread_mutex_t lock;       /* guards the fields below and the
                                   reference wake-up protocol */
    pthread_cond_t cond;        /* broadcast when a reference drops */
    int            num_eps;     /* endpoints not yet freed */
    int            waiters;
};

struct dango_tp_ep {
    dango_tp_iface_t *iface;
    char             *path;
    int               fd;         /* buffered */
    int               dfd;        /* O_DIRECT, or -1 */
    unsigned long     refs;       /* atomic: owner + slices + tasks */
    int               destroying; /* atomic */
    dango_loop_task_t cancel_task;

    /* Loop-thread state. */
    int                    direct;   /* dfd usable (cleared on EINVAL) */
    unsigned               inflight; /* SQEs prepared or in the kernel */
    unsigned long          put_pending;
    dango_tp_ep_t         *put_next;
    dango__file_ep_stats_t stats; /* updated with relaxed atomics */
};

/*
 * Per-slice state, kept in slice->tp_priv. The task is needed only until
 * the loop runs it, so the backlog link reuses its space.
 */
typedef struct file_op {
    union {
        dango_loop_task_t task; /* while handed to the loop thread */
        dango_list_link_t link; /* while waiting in the backlog */
    };
    dango_tp_ep_t *ep;
    uint64_t       done; /* bytes transferred so far */
} file_op_t;

_Static_assert(sizeof(file_op_t) <= sizeof(((dango_tp_slice_t *)0)->tp_priv),
               "file_op_t must fit in dango_tp_slice_t.tp_priv");
_Static_assert(_Alignof(dango_tp_slice_t) > FILE_UD_DIRECT,
               "user_data keeps a flag in the low bit of slice pointers");

static void file_evfd_cb(dango_loop_t *loop, int fd, unsigned events,
                         void *arg);

/* ---------- private functions ---------- */

static inline file_op_t *file_op(dango_tp_slice_t *slice)
{
    return (file_op_t *)(void *)slice->tp_priv;
}

static inline dango_tp_slice_t *file_op_slice(file_op_t *op)
{
    return dango_container_of((void *)op, dango_tp_slice_t, tp_priv);
}

static void file_deadline(struct timespec *ts, uint64_t timeout_ns)
{
    uint64_t t = dango_time_ns() + timeout_ns;

    ts->tv_sec  = (time_t)(t / DANGO_NSEC_PER_SEC);
    ts->tv_nsec = (long)(t % DANGO_NSEC_PER_SEC);
}

static void file_ep_free(dango_tp_ep_t *ep)
{
    if (ep->dfd >= 0) {
        close(ep->dfd);
    }

    close(ep->fd);
    dango_debug("file ep %s: closed", ep->path);
    dango_free(ep->path);
    dango_free(ep);
}

/*
 * Drops @n references. The decrement and the wake-up happen under the
 * iface lock, so a waiter that sees the count drain knows this thread is
 * done with the endpoint and the iface (apart from the unlock itself).
 */
static void file_ep_put(dango_tp_ep_t *ep, unsigned long n)
{
    dango_tp_iface_t *iface = ep->iface;
    unsigned long     left;

    pthread_mutex_lock(&iface->lock);
    left = __atomic_sub_fetch(&ep->refs, n, __ATOMIC_ACQ_REL);
    if (left == 0) {
        iface->num_eps--;
    }

    if (iface->waiters > 0) {
        pthread_cond_broadcast(&iface->cond);
    }

    pthread_mutex_unlock(&iface->lock);
    if (left == 0) {
        file_ep_free(ep); /* touches no iface state */
    }
}

/* Loop thread: drops a reference at the end of the current entry point. */
static void file_defer_put(dango_tp_iface_t *iface, dango_tp_ep_t *ep)
{
    if (ep->put_pending++ == 0) {
        ep->put_next    = iface->put_list;
        iface->put_list = ep;
    }
}

static void file_loop_enter(dango_tp_iface_t *iface)
{
    iface->cb_depth++;
}

/*
 * Loop thread: stops watching the eventfd once no endpoint can bring new
 * work and the ring is idle, so that iface_close() need not visit the loop.
 */
static void file_idle_check(dango_tp_iface_t *iface)
{
    if (!iface->evfd_watched || (iface->inflight != 0) ||
        (iface->sq_ready != 0) || iface->flush_posted ||
        !dango_list_is_empty(&iface->backlog) ||
        (__atomic_load_n(&iface->active_eps, __ATOMIC_SEQ_CST) != 0)) {
        return;
    }

    dango_loop_fd_del(iface->loop, iface->evfd);
    __atomic_store_n(&iface->evfd_watched, 0, __ATOMIC_RELEASE);
    dango_debug("file iface %p: idle, eventfd %d unwatched", (void *)iface,
                iface->evfd);
}

/*
 * Loop thread: ends an entry point. The deferred puts come last: after the
 * final one, another thread may free the endpoint or the iface, so the
 * caller must not touch either once this returns.
 */
static void file_loop_leave(dango_tp_iface_t *iface)
{
    dango_tp_ep_t *ep;

    if (--iface->cb_depth != 0) {
        return; /* the outermost entry point flushes */
    }

    file_idle_check(iface);
    ep              = iface->put_list;
    iface->put_list = NULL;
    while (ep != NULL) {
        dango_tp_ep_t *next = ep->put_next;
        unsigned long  n    = ep->put_pending;

        ep->put_pending = 0;
        file_ep_put(ep, n);
        ep = next;
    }
}

/* Loop thread: completes a slice and releases its endpoint reference. */
static void file_op_finish(dango_tp_iface_t *iface, dango_tp_slice_t *slice,
                           int status)
{
    dango_tp_ep_t *ep = file_op(slice)->ep;

    /* The slice belongs to the engine again from here on. */
    slice->complete(slice, status);
    file_defer_put(iface, ep);
}

static int file_has_slot(const dango_tp_iface_t *iface)
{
    return (iface->sq_ready + iface->inflight) < iface->depth;
}

/*
 * Loop thread: prepares one SQE for what is left of @slice. The caller has
 * checked file_has_slot().
 */
static void file_op_prep(dango_tp_iface_t *iface, dango_tp_slice_t *slice)
{
    file_op_t     *op   = file_op(slice);
    dango_tp_ep_t *ep   = op->ep;
    uint64_t       off  = slice->remote + op->done;
    char          *addr = (char *)slice->local + op->done;
    uint64_t       left = slice->length - op->done;
    unsigned       len  = left > FILE_IO_MAX ? FILE_IO_MAX : (unsigned)left;
    struct io_uring_sqe *sqe;
    int                  direct;
    int                  fd;

    sqe = io_uring_get_sqe(&iface->ring);
    if (sqe == NULL) {
        /* Cannot happen while sq_ready + inflight <= ring size. */
        dango_list_add_head(&iface->backlog, &op->link);
        return;
    }

    direct = ep->direct &&
             ((((uintptr_t)addr | off | len) & (FILE_DIRECT_ALIGN - 1)) == 0);
    fd = direct ? ep->dfd : ep->fd;
    if (slice->op == DANGO_TP_OP_READ) {
        io_uring_prep_read(sqe, fd, addr, len, off);
    } else {
        io_uring_prep_write(sqe, fd, addr, len, off);
    }

    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)slice |
                                     (direct ? FILE_UD_DIRECT : 0));
    iface->sq_ready++;
    ep->inflight++;
    iface->last_prep_ep = ep;
    __atomic_add_fetch(direct ? &ep->stats.direct : &ep->stats.buffered, 1,
                       __ATOMIC_RELAXED);
    dango_trace("file ep %s: slice %" PRIu64 " %s %u bytes at %" PRIu64 " (%s)",
                ep->path, slice->id,
                slice->op == DANGO_TP_OP_READ ? "read" : "write", len, off,
                direct ? "direct" : "buffered");
}

/*
 * Loop thread: posts the flush task unless it is already queued. It holds
 * a reference on @ep, an endpoint with an unsubmitted SQE, so the iface
 * stays alive until the task has run.
 */
static void file_schedule_flush(dango_tp_iface_t *iface, dango_tp_ep_t *ep)
{
    if (iface->flush_posted) {
        return;
    }

    iface->flush_posted = 1;
    iface->flush_ep     = ep;
    __atomic_add_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL);
    dango_loop_post(iface->loop, &iface->flush_task);
}

/* Loop thread: submits every prepared SQE with one system call. */
static void file_submit(dango_tp_iface_t *iface)
{
    int rc;

    if (iface->sq_ready == 0) {
        return;
    }

    rc = io_uring_submit(&iface->ring);
    if (rc > 0) {
        iface->sq_ready -= (unsigned)rc;
        iface->inflight += (unsigned)rc;
    }

    if (iface->sq_ready == 0) {
        return;
    }

    /*
     * The kernel took only part of the queue (-EAGAIN under memory
     * pressure, or -EINTR). The SQEs stay in the ring; with I/O in flight
     * the next reap resubmits them, otherwise try again from a task.
     */
    if ((rc < 0) && (rc != -EAGAIN) && (rc != -EBUSY) && (rc != -EINTR)) {
        dango_error("file iface %p: io_uring_enter failed: %s", (void *)iface,
                    dango_strerror(dango_err_from_errno(-rc)));
    }

    if (iface->inflight == 0) {
        file_schedule_flush(iface, iface->last_prep_ep);
    }
}

/* Loop thread: moves backlog slices into free ring slots. */
static void file_backlog_drain(dango_tp_iface_t *iface)
{
    while (!dango_list_is_empty(&iface->backlog) && file_has_slot(iface)) {
        file_op_t *op = dango_list_head_elem(&iface->backlog, file_op_t, link);

        dango_list_del(&op->link);
        file_op_prep(iface, file_op_slice(op));
    }
}

/* Loop thread: handles one CQE (its ring slot is free again). */
static void file_cqe(dango_tp_iface_t *iface, uint64_t user_data, int res)
{
    dango_tp_slice_t *slice =
        (dango_tp_slice_t *)(uintptr_t)(user_data & ~FILE_UD_DIRECT);
    int            direct = (user_data & FILE_UD_DIRECT) != 0;
    file_op_t     *op     = file_op(slice);
    dango_tp_ep_t *ep     = op->ep;
    int            status;

    ep->inflight--;
    if (res > 0) {
        op->done += (uint64_t)res;
        if (op->done < slice->length) {
            __atomic_add_fetch(&ep->stats.resubmits, 1, __ATOMIC_RELAXED);
            file_op_prep(iface, slice);
            return;
        }

        status = 0;
    } else if (res == 0) {
        if (slice->op == DANGO_TP_OP_READ) {
            /* End of file before the end of the slice. */
            dango_debug("file ep %s: slice %" PRIu64 " reads past end of "
                        "file at %" PRIu64,
                        ep->path, slice->id, slice->remote + op->done);
            status = DANGO_ERANGE;
        } else {
            dango_error("file ep %s: write at %" PRIu64 " made no progress",
                        ep->path, slice->remote + op->done);
            status = DANGO_EIO;
        }
    } else if (((res == -EAGAIN) || (res == -EINTR)) &&
               (slice->retries < FILE_MAX_RETRIES)) {
        slice->retries++;
        file_op_prep(iface, slice);
        return;
    } else if (direct && (res == -EINVAL)) {
        /* The device wants a larger alignment than we check for. */
        dango_warn("file ep %s: O_DIRECT rejected (%s); using the page "
                   "cache from now on",
                   ep->path, dango_strerror(DANGO_EINVAL));
        ep->direct = 0;
        file_op_prep(iface, slice);
        return;
    } else {
        status = dango_err_from_errno(-res);
        dango_error("file ep %s: %s of %" PRIu64 " bytes at %" PRIu64
                    " failed: %s",
                    ep->path, slice->op == DANGO_TP_OP_READ ? "read" : "write",
                    slice->length - op->done, slice->remote + op->done,
                    dango_strerror(status));
    }

    file_op_finish(iface, slice, status);
}

/*
 * Loop thread: reaps every CQE, refills the ring and submits once. Each
 * CQE is consumed before it is handled, so a completion callback that
 * re-enters the transport cannot see it twice.
 */
static void file_reap(dango_tp_iface_t *iface)
{
    struct io_uring_cqe *cqe;

    while (io_uring_peek_cqe(&iface->ring, &cqe) == 0) {
        uint64_t user_data = cqe->user_data;
        int      res       = cqe->res;

        io_uring_cqe_seen(&iface->ring, cqe);
        iface->inflight--;
        file_cqe(iface, user_data, res);
    }

    file_backlog_drain(iface);
    file_submit(iface);
}

static void file_evfd_cb(dango_loop_t *loop, int fd, unsigned events, void *arg)
{
    dango_tp_iface_t *iface = arg;
    uint64_t          cnt;
    ssize_t           n;

    /* Clear before reaping: a CQE posted after this signals again. */
    n = read(fd, &cnt, sizeof(cnt));
    (void)n;
    file_loop_enter(iface);
    file_reap(iface);
    file_loop_leave(iface);
}

/* Loop thread: watches the eventfd if it is not watched yet. */
static int file_evfd_watch(dango_tp_iface_t *iface)
{
    int rc;

    if (iface->evfd_watched) {
        return 0;
    }

    rc = dango_loop_fd_add(iface->loop, iface->evfd, DANGO_LOOP_READ,
                           file_evfd_cb, iface);
    if (rc != 0) {
        dango_error("file iface %p: cannot watch eventfd on loop %s: %s",
                    (void *)iface, dango_loop_name(iface->loop),
                    dango_strerror(rc));
        return rc;
    }

    __atomic_store_n(&iface->evfd_watched, 1, __ATOMIC_RELEASE);
    return 0;
}

/* Loop thread: a slice handed over by post(). */
static void file_slice_task(dango_loop_task_t *task)
{
    file_op_t        *op    = (file_op_t *)(void *)task;
    dango_tp_slice_t *slice = file_op_slice(op);
    dango_tp_ep_t    *ep    = op->ep;
    dango_tp_iface_t *iface = ep->iface;
    int               rc;

    file_loop_enter(iface);
    if (__atomic_load_n(&ep->destroying, __ATOMIC_ACQUIRE)) {
        file_op_finish(iface, slice, DANGO_ECANCELED);
        goto out;
    }

    rc = file_evfd_watch(iface);
    if (rc != 0) {
        file_op_finish(iface, slice, rc);
        goto out;
    }

    /* Through the backlog, so that slices keep their order. */
    dango_list_add_tail(&iface->backlog, &op->link);
    file_backlog_drain(iface);
    if (iface->sq_ready > 0) {
        file_schedule_flush(iface, iface->last_prep_ep);
    }

out:
    file_loop_leave(iface);
}

/* Loop thread: submits what the slice tasks of one burst prepared. */
static void file_flush_task(dango_loop_task_t *task)
{
    dango_tp_iface_t *iface =
        dango_container_of(task, dango_tp_iface_t, flush_task);
    dango_tp_ep_t *ep = iface->flush_ep;

    file_loop_enter(iface);
    iface->flush_posted = 0;
    iface->flush_ep     = NULL;
    file_backlog_drain(iface);
    file_submit(iface);
    file_defer_put(iface, ep);
    file_loop_leave(iface);
}

/* Loop thread: fails the slices of @ep still waiting in the backlog. */
static void file_ep_cancel_queued(dango_tp_iface_t *iface, dango_tp_ep_t *ep)
{
    DANGO_LIST_HEAD(canceled);
    file_op_t *op, *tmp;

    dango_list_for_each_safe(op, tmp, &iface->backlog, link)
    {
        if (op->ep == ep) {
            dango_list_del(&op->link);
            dango_list_add_tail(&canceled, &op->link);
        }
    }

    /* Completion callbacks run only once the backlog is consistent. */
    while (!dango_list_is_empty(&canceled)) {
        op = dango_list_head_elem(&canceled, file_op_t, link);
        dango_list_del(&op->link);
        file_op_finish(iface, file_op_slice(op), DANGO_ECANCELED);
    }
}

static void file_ep_cancel_task(dango_loop_task_t *task)
{
    dango_tp_ep_t    *ep = dango_container_of(task, dango_tp_ep_t, cancel_task);
    dango_tp_iface_t *iface = ep->iface;

    file_loop_enter(iface);
    file_ep_cancel_queued(iface, ep);
    file_defer_put(iface, ep); /* the task's own reference */
    file_loop_leave(iface);
}

/*
 * ep_destroy() on the loop thread: nobody else will reap, so wait for the
 * endpoint's SQEs here. Slices of @ep whose tasks are still queued on the
 * loop complete with DANGO_ECANCELED when they run, after this returns.
 */
static void file_ep_destroy_on_loop(dango_tp_ep_t *ep)
{
    dango_tp_iface_t *iface    = ep->iface;
    uint64_t          deadline = dango_time_ns() + FILE_DRAIN_TIMEOUT_NS;

    file_loop_enter(iface);
    file_ep_cancel_queued(iface, ep);
    file_submit(iface);
    while (ep->inflight > 0) {
        uint64_t                 now = dango_time_ns();
        struct __kernel_timespec ts;
        struct io_uring_cqe     *cqe;
        int                      rc;

        if (now >= deadline) {
            dango_error("file ep %s: %u I/Os still in the kernel after "
                        "%llu s; they will complete after ep_destroy",
                        ep->path, ep->inflight,
                        FILE_DRAIN_TIMEOUT_NS / DANGO_NSEC_PER_SEC);
            break;
        }

        ts.tv_sec  = (long long)((deadline - now) / DANGO_NSEC_PER_SEC);
        ts.tv_nsec = (long long)((deadline - now) % DANGO_NSEC_PER_SEC);
        rc         = io_uring_wait_cqe_timeout(&iface->ring, &cqe, &ts);
        if ((rc < 0) && (rc != -ETIME) && (rc != -EINTR) && (rc != -EAGAIN)) {
            dango_error("file ep %s: waiting for completions failed: %s",
                        ep->path, dango_strerror(dango_err_from_errno(-rc)));
            break;
        }

        file_reap(iface);
    }

    file_defer_put(iface, ep); /* the owner's reference */
    file_loop_leave(iface);
}

/* ---------- ops ---------- */

static int file_iface_open(const dango_tp_iface_params_t *params,
                           dango_tp_iface_t             **iface_p)
{
    dango_tp_iface_t  *iface;
    pthread_condattr_t cattr;
    int                rc;

    if ((params == NULL) || (params->loops == NULL) ||
        (params->num_loops == 0) || (iface_p == NULL)) {
        dango_debug("file iface_open: invalid parameters");
        return DANGO_EINVAL;
    }

    iface = dango_calloc(1, sizeof(*iface), "file_iface");
    if (iface == NULL) {
        return DANGO_ENOMEM;
    }

    rc =
        dango__config_parse(params->config, &file_config_table, &iface->config);
    if (rc != 0) {
        goto err_free;
    }

    if ((iface->config.queue_depth == 0) ||
        (iface->config.queue_depth > FILE_QUEUE_DEPTH_MAX)) {
        dango_error("file iface: FILE_QUEUE_DEPTH %lu is not in 1..%lu",
                    iface->config.queue_depth, FILE_QUEUE_DEPTH_MAX);
        rc = DANGO_ECONFIG;
        goto err_config;
    }

    if (iface->config.max_slice == 0) {
        dango_error("file iface: FILE_MAX_SLICE must not be 0");
        rc = DANGO_ECONFIG;
        goto err_config;
    }

    iface->depth = (unsigned)iface->config.queue_depth;
    iface->loop  = params->loops[params->num_loops - 1];
    dango_list_init(&iface->backlog);
    iface->flush_task.cb = file_flush_task;

    rc = io_uring_queue_init(iface->depth, &iface->ring, 0);
    if (rc < 0) {
        rc = dango_err_from_errno(-rc);
        dango_error("file iface: io_uring_queue_init(%u) failed: %s",
                    iface->depth, dango_strerror(rc));
        goto err_config;
    }

    iface->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (iface->evfd < 0) {
        rc = dango_err_from_errno(errno);
        dango_error("file iface: eventfd failed: %s", dango_strerror(rc));
        goto err_ring;
    }

    rc = io_uring_register_eventfd(&iface->ring, iface->evfd);
    if (rc < 0) {
        rc = dango_err_from_errno(-rc);
        dango_error("file iface: io_uring_register_eventfd failed: %s",
                    dango_strerror(rc));
        goto err_evfd;
    }

    rc = pthread_mutex_init(&iface->lock, NULL);
    if (rc != 0) {
        rc = dango_err_from_errno(rc);
        goto err_evfd;
    }

    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&iface->cond, &cattr);
    pthread_condattr_destroy(&cattr);
    if (rc != 0) {
        rc = dango_err_from_errno(rc);
        goto err_mutex;
    }

    dango_debug("file iface %p: ring of %u on loop %s, direct %s",
                (void *)iface, iface->depth, dango_loop_name(iface->loop),
                iface->config.direct ? "on" : "off");
    *iface_p = iface;
    return 0;

err_mutex:
    pthread_mutex_destroy(&iface->lock);
err_evfd:
    close(iface->evfd);
err_ring:
    io_uring_queue_exit(&iface->ring);
err_config:
    dango__config_free(&file_config_table, &iface->config);
err_free:
    dango_free(iface);
    return rc;
}

static void file_iface_close(dango_tp_iface_t *iface)
{
    struct timespec deadline;
    int             left;

    if (iface == NULL) {
        return;
    }

    /*
     * Every endpoint has been destroyed, but the last references may still
     * be held by loop tasks (e.g. after an ep_destroy() on the loop
     * thread): wait for them, unless we are that thread. The loop is not
     * touched when nothing is pending: the engine may have destroyed it.
     */
    pthread_mutex_lock(&iface->lock);
    left = iface->num_eps;
    if ((left > 0) && !dango_loop_is_current(iface->loop)) {
        file_deadline(&deadline, FILE_DRAIN_TIMEOUT_NS);
        iface->waiters++;
        while (iface->num_eps > 0) {
            if (pthread_cond_timedwait(&iface->cond, &iface->lock, &deadline) ==
                ETIMEDOUT) {
                break;
            }
        }

        iface->waiters--;
        left = iface->num_eps;
    }

    pthread_mutex_unlock(&iface->lock);
    if (left > 0) {
        /* Freeing now would let the loop thread use freed memory. */
        dango_error("file iface %p: %d endpoints still referenced by I/O or "
                    "loop tasks; leaking the ring",
                    (void *)iface, left);
        return;
    }

    if (__atomic_load_n(&iface->evfd_watched, __ATOMIC_ACQUIRE)) {
        if (!dango_loop_is_current(iface->loop)) {
            dango_error("file iface %p: eventfd still watched by loop %s; "
                        "leaking the ring",
                        (void *)iface, dango_loop_name(iface->loop));
            return;
        }

        dango_loop_fd_del(iface->loop, iface->evfd);
    }

    io_uring_queue_exit(&iface->ring);
    close(iface->evfd);
    pthread_cond_destroy(&iface->cond);
    pthread_mutex_destroy(&iface->lock);
    dango__config_free(&file_config_table, &iface->config);
    dango_debug("file iface %p: closed", (void *)iface);
    dango_free(iface);
}

static int file_iface_query(dango_tp_iface_t      *iface,
                            dango_tp_iface_attr_t *attr)
{
    if ((iface == NULL) || (attr == NULL)) {
        return DANGO_EINVAL;
    }

    attr->caps      = DANGO_TP_CAP_FILE;
    attr->max_slice = iface->config.max_slice;
    attr->desc_json = NULL;
    return 0;
}

static int file_ep_create(dango_tp_iface_t *iface, const dango_tp_peer_t *peer,
                          dango_tp_ep_t **ep_p)
{
    const size_t   plen = sizeof(DANGO__FILE_PREFIX) - 1;
    const char    *path;
    dango_tp_ep_t *ep;
    int            rc;

    if ((iface == NULL) || (peer == NULL) || (peer->name == NULL) ||
        (ep_p == NULL)) {
        return DANGO_EINVAL;
    }

    if (strncmp(peer->name, DANGO__FILE_PREFIX, plen) != 0) {
        dango_debug("file iface %p: segment '%s' is not a file", (void *)iface,
                    peer->name);
        return DANGO_ENOTSUP;
    }

    path = peer->name + plen;
    if (path[0] == '\0') {
        dango_debug("file iface %p: segment '%s' names no path", (void *)iface,
                    peer->name);
        return DANGO_EINVAL;
    }

    ep = dango_calloc(1, sizeof(*ep), "file_ep");
    if (ep == NULL) {
        return DANGO_ENOMEM;
    }

    ep->path = dango_strdup(path, "file_ep_path");
    if (ep->path == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    ep->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (ep->fd < 0) {
        rc = dango_err_from_errno(errno);
        dango_error("file ep %s: open failed: %s", path, dango_strerror(rc));
        goto err_free_path;
    }

    ep->dfd = -1;
    if (iface->config.direct) {
        ep->dfd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
        if (ep->dfd < 0) {
            dango_debug("file ep %s: no O_DIRECT (%s), page cache only", path,
                        dango_strerror(dango_err_from_errno(errno)));
        }
    }

    ep->iface            = iface;
    ep->direct           = ep->dfd >= 0;
    ep->stats.has_direct = ep->direct;
    ep->refs             = 1;
    ep->cancel_task.cb   = file_ep_cancel_task;
    pthread_mutex_lock(&iface->lock);
    iface->num_eps++;
    pthread_mutex_unlock(&iface->lock);
    __atomic_add_fetch(&iface->active_eps, 1, __ATOMIC_SEQ_CST);
    dango_debug("file ep %s: opened (%s)", path,
                ep->direct ? "direct and buffered" : "buffered");
    *ep_p = ep;
    return 0;

err_free_path:
    dango_free(ep->path);
err_free:
    dango_free(ep);
    return rc;
}

static void file_ep_destroy(dango_tp_ep_t *ep)
{
    dango_tp_iface_t *iface;
    struct timespec   deadline;
    unsigned long     left;

    if (ep == NULL) {
        return;
    }

    iface = ep->iface;
    __atomic_store_n(&ep->destroying, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&iface->active_eps, 1, __ATOMIC_SEQ_CST);

    /*
     * Nothing of @ep anywhere (every slice and task holds a reference) and
     * no eventfd to unwatch: no need to visit the loop, which may not even
     * run. The lock orders this with the loop thread's last put.
     */
    pthread_mutex_lock(&iface->lock);
    left = __atomic_load_n(&ep->refs, __ATOMIC_ACQUIRE);
    if ((left == 1) &&
        !__atomic_load_n(&iface->evfd_watched, __ATOMIC_ACQUIRE)) {
        pthread_mutex_unlock(&iface->lock);
        file_ep_put(ep, 1);
        return;
    }

    pthread_mutex_unlock(&iface->lock);
    if (dango_loop_is_current(iface->loop)) {
        file_ep_destroy_on_loop(ep);
        return;
    }

    /*
     * Slices queued on the loop ahead of the cancel task complete with
     * DANGO_ECANCELED when they run; the task fails the backlog; SQEs in
     * the kernel finish normally. All of them hold references.
     */
    __atomic_add_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL);
    dango_loop_post(iface->loop, &ep->cancel_task);

    file_deadline(&deadline, FILE_DRAIN_TIMEOUT_NS);
    pthread_mutex_lock(&iface->lock);
    iface->waiters++;
    while ((left = __atomic_load_n(&ep->refs, __ATOMIC_ACQUIRE)) > 1) {
        if (pthread_cond_timedwait(&iface->cond, &iface->lock, &deadline) ==
            ETIMEDOUT) {
            left = __atomic_load_n(&ep->refs, __ATOMIC_ACQUIRE);
            break;
        }
    }

    iface->waiters--;
    pthread_mutex_unlock(&iface->lock);
    if (left > 1) {
        /* The last reference frees the endpoint whenever it drops. */
        dango_error("file ep %s: %lu slices or tasks still pending after "
                    "%llu s (is loop %s running?); they complete later",
                    ep->path, left - 1,
                    FILE_DRAIN_TIMEOUT_NS / DANGO_NSEC_PER_SEC,
                    dango_loop_name(iface->loop));
    }

    file_ep_put(ep, 1);
}

static int file_post(dango_tp_ep_t *ep, dango_tp_slice_t *slice)
{
    file_op_t *op;

    if ((ep == NULL) || (slice == NULL) || (slice->length == 0) ||
        (slice->local == NULL) || (slice->complete == NULL) ||
        ((slice->op != DANGO_TP_OP_READ) && (slice->op != DANGO_TP_OP_WRITE))) {
        return DANGO_EINVAL;
    }

    /* The whole range must be addressable with an off_t. */
    if ((slice->remote > (uint64_t)INT64_MAX) ||
        (slice->length > (uint64_t)INT64_MAX - slice->remote)) {
        return DANGO_ERANGE;
    }

    if (__atomic_load_n(&ep->destroying, __ATOMIC_ACQUIRE)) {
        return DANGO_ECANCELED;
    }

    op          = file_op(slice);
    op->ep      = ep;
    op->done    = 0;
    op->task.cb = file_slice_task;
    __atomic_add_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL);
    dango_loop_post(ep->iface->loop, &op->task);
    return 0;
}

/* ---------- internal API ---------- */

void dango__file_ep_stats_get(dango_tp_ep_t *ep, dango__file_ep_stats_t *stats)
{
    stats->direct     = __atomic_load_n(&ep->stats.direct, __ATOMIC_RELAXED);
    stats->buffered   = __atomic_load_n(&ep->stats.buffered, __ATOMIC_RELAXED);
    stats->resubmits  = __atomic_load_n(&ep->stats.resubmits, __ATOMIC_RELAXED);
    stats->has_direct = ep->stats.has_direct;
}

const dango_transport_ops_t dango__file_ops = {.name         = "file",
                                               .iface_open   = file_iface_open,
                                               .iface_close  = file_iface_close,
                                               .iface_query  = file_iface_query,
                                               .mem_reg      = NULL,
                                               .mem_dereg    = NULL,
                                               .ep_create    = file_ep_create,
                                               .ep_destroy   = file_ep_destroy,
                                               .ep_can_serve = NULL,
                                               .post         = file_post,
                                               .notify       = NULL,
                                               .desc_fetch   = NULL};
