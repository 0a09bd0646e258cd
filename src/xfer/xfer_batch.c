/*
 * Batches: submission, slicing, completion counting and waiting.
 *
 * DESIGN
 * - Counter-based completion (UCX uct_completion): a request split into N
 *   slices holds slices_left = N; each slice decrements it, the first error
 *   wins, and the request finishes once at zero. A batch counts unfinished
 *   requests (plus one for an armed notification) in `outstanding`; no
 *   per-slice callback or allocation reaches the user.
 * - Slices come from the engine's pool: after warm-up a submit allocates
 *   nothing and makes no syscall beyond the transport's wake-up.
 * - Waiting spins for XFER_WAIT_SPIN (a 64 KiB transfer on loopback takes
 *   tens of microseconds; a sleep/wake costs as much) and then sleeps on a
 *   futex on `outstanding` itself, woken only when it reaches zero.
 * - Everything a submit checks is checked before anything is queued, so a
 *   refused submit leaves the batch as it was.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/spinlock.h"
#include "common/time.h"
#include "xfer/xfer_int.h"

/* Largest request sent uncut (one frame) when its range is unpublished. */
#define XFER_UNCUT_MAX (1ull << 30)

typedef struct xfer_req {
    int             state;       /* atomic dango_xfer_state_t */
    int             error;       /* atomic, first error */
    uint64_t        bytes;       /* atomic */
    uint32_t        slices_left; /* atomic */
    uint8_t         op;
    xfer_segment_t *seg;
} xfer_req_t;

typedef enum xfer_notify_state {
    XFER_NOTIFY_NONE,
    XFER_NOTIFY_ARMED,
    XFER_NOTIFY_SENT
} xfer_notify_state_t;

struct dango_xfer_batch {
    dango_xfer_engine_t *eng;
    size_t               capacity;
    size_t               count;
    uint32_t             outstanding;  /* atomic; futex word */
    uint32_t             reqs_pending; /* atomic */
    int                  waiting;      /* atomic */
    int                  completing;   /* atomic, see batch_release_one() */
    int                  first_error;  /* atomic */
    int                  notify_state; /* atomic xfer_notify_state_t */
    xfer_segment_t      *notify_seg;
    void                *notify_msg;
    size_t               notify_len;
    xfer_req_t           reqs[];
};

typedef struct xfer_slice {
    dango_tp_slice_t    tp;
    dango_xfer_batch_t *batch;
    xfer_req_t         *req; /* NULL for a notification */
} xfer_slice_t;

_Static_assert(sizeof(xfer_slice_t) <= 160, "slice pool element size");

/* ---------- completion ---------- */

/*
 * The last completion may race with the owner: once `outstanding` reads 0
 * the owner may reset or destroy the batch, while this thread still has to
 * look at `waiting` and wake it. `completing` counts threads inside this
 * window; reset and destroy wait for it to drain (a few instructions).
 */
static void batch_release_one(dango_xfer_batch_t *batch)
{
    __atomic_add_fetch(&batch->completing, 1, __ATOMIC_SEQ_CST);
    if ((__atomic_sub_fetch(&batch->outstanding, 1, __ATOMIC_SEQ_CST) == 0) &&
        __atomic_load_n(&batch->waiting, __ATOMIC_SEQ_CST)) {
        syscall(SYS_futex, &batch->outstanding, FUTEX_WAKE_PRIVATE, INT_MAX,
                NULL, NULL, 0);
    }

    __atomic_sub_fetch(&batch->completing, 1, __ATOMIC_SEQ_CST);
}

/* Waits until no completing thread still touches the batch. */
static void batch_quiesce(dango_xfer_batch_t *batch)
{
    while (__atomic_load_n(&batch->completing, __ATOMIC_SEQ_CST) != 0) {
        dango_cpu_relax();
    }
}

static void notify_complete(dango_tp_slice_t *tp, int status)
{
    xfer_slice_t       *xs    = dango_container_of(tp, xfer_slice_t, tp);
    dango_xfer_batch_t *batch = xs->batch;
    int                 zero  = 0;

    if (status != 0) {
        __atomic_compare_exchange_n(&batch->first_error, &zero, status, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }

    dango_mpool_put(&batch->eng->slice_pool, xs);
    batch_release_one(batch);
}

/* Sends the armed notification once every covered request is done. */
static void batch_try_notify(dango_xfer_batch_t *batch)
{
    dango_xfer_engine_t *eng   = batch->eng;
    int                  armed = XFER_NOTIFY_ARMED;
    xfer_tp_t           *tp;
    xfer_slice_t        *xs;
    int                  rc;

    if ((__atomic_load_n(&batch->reqs_pending, __ATOMIC_ACQUIRE) != 0) ||
        !__atomic_compare_exchange_n(&batch->notify_state, &armed,
                                     XFER_NOTIFY_SENT, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED)) {
        return;
    }

    if (__atomic_load_n(&batch->first_error, __ATOMIC_ACQUIRE) != 0) {
        batch_release_one(batch); /* a request failed: nothing to announce */
        return;
    }

    tp = &eng->tps[batch->notify_seg->notify_tp];
    xs = dango_mpool_get(&eng->slice_pool);
    if (xs == NULL) {
        rc = DANGO_ENOMEM;
    } else {
        memset(xs, 0, sizeof(*xs));
        xs->batch = batch;
        xs->tp.id =
            __atomic_add_fetch(&eng->next_slice_id, 1, __ATOMIC_RELAXED);
        xs->tp.post_ns  = dango_time_ns();
        xs->tp.complete = notify_complete;
        rc              = tp->ops->notify(
                         batch->notify_seg->eps[batch->notify_seg->notify_tp],
                         batch->notify_msg, batch->notify_len, &xs->tp);
        if (rc == 0) {
            return;
        }

        dango_mpool_put(&eng->slice_pool, xs);
    }

    {
        int zero = 0;

        __atomic_compare_exchange_n(&batch->first_error, &zero, rc, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
        batch_release_one(batch);
    }
}

static void req_finish(dango_xfer_batch_t *batch, xfer_req_t *req)
{
    int err = __atomic_load_n(&req->error, __ATOMIC_ACQUIRE);

    if (err != 0) {
        int zero = 0;

        __atomic_compare_exchange_n(&batch->first_error, &zero, err, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }

    __atomic_store_n(&req->state,
                     err ? DANGO_XFER_FAILED : DANGO_XFER_COMPLETED,
                     __ATOMIC_RELEASE);
    if (__atomic_sub_fetch(&batch->reqs_pending, 1, __ATOMIC_ACQ_REL) == 0) {
        batch_try_notify(batch);
    }

    batch_release_one(batch);
}

static void req_slices_done(dango_xfer_batch_t *batch, xfer_req_t *req,
                            uint32_t n, int status)
{
    if (status != 0) {
        int zero = 0;

        __atomic_compare_exchange_n(&req->error, &zero, status, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
        if ((status == DANGO_ESEGMENT_STALE) || (status == DANGO_EPEER_GONE)) {
            dango__xfer_segment_mark_stale(req->seg);
        }
    }

    if (__atomic_sub_fetch(&req->slices_left, n, __ATOMIC_ACQ_REL) == 0) {
        req_finish(batch, req);
    }
}

static void slice_complete(dango_tp_slice_t *tp, int status)
{
    xfer_slice_t       *xs    = dango_container_of(tp, xfer_slice_t, tp);
    dango_xfer_batch_t *batch = xs->batch;
    xfer_req_t         *req   = xs->req;

    if (status == 0) {
        __atomic_add_fetch(&req->bytes, tp->length, __ATOMIC_RELAXED);
    } else {
        dango_debug("xfer_batch %p: slice %lu failed: %s", (void *)batch,
                    (unsigned long)tp->id, dango_strerror(status));
    }

    dango_mpool_put(&batch->eng->slice_pool, xs);
    req_slices_done(batch, req, 1, status);
}

/* ---------- dispatch ---------- */

/* Copy within this process (the local segment). */
static int req_local_copy(dango_xfer_engine_t *eng, const dango_xfer_req_t *r)
{
    void *region;
    int   rc;

    rc = dango__xfer_host_mem_acquire(eng, r->remote_addr, r->length,
                                      r->op == DANGO_XFER_OP_WRITE
                                          ? DANGO_TP_ACCESS_WRITE
                                          : DANGO_TP_ACCESS_READ,
                                      &region);
    if (rc != 0) {
        return rc;
    }

    if (r->op == DANGO_XFER_OP_WRITE) {
        memmove((void *)(uintptr_t)r->remote_addr, r->local_addr, r->length);
    } else {
        memmove(r->local_addr, (void *)(uintptr_t)r->remote_addr, r->length);
    }

    dango__xfer_host_mem_release(eng, region);
    return 0;
}

/* Transport index that serves request @r on @seg, or -1. */
static int req_pick_tp(dango_xfer_engine_t *eng, xfer_segment_t *seg,
                       const dango_xfer_req_t *r)
{
    if (seg->kind == XFER_SEG_FILE) {
        return eng->file_idx;
    }

    for (unsigned k = 0; k < eng->num_order; k++) {
        int        t  = eng->order[k];
        xfer_tp_t *tp = &eng->tps[t];

        if ((seg->eps[t] != NULL) &&
            ((tp->ops->ep_can_serve == NULL) ||
             tp->ops->ep_can_serve(seg->eps[t], r->remote_addr, r->length))) {
            return t;
        }
    }

    return -1;
}

static void req_dispatch(dango_xfer_batch_t *batch, xfer_req_t *req,
                         const dango_xfer_req_t *r)
{
    dango_xfer_engine_t *eng = batch->eng;
    xfer_tp_t           *tp;
    uint64_t             slice, off;
    uint32_t             n, posted = 0;
    int                  t, rc = 0, unpublished = 0;

    if (r->length == 0) {
        req->slices_left = 1;
        req_slices_done(batch, req, 1, 0);
        return;
    }

    if (req->seg->kind == XFER_SEG_LOCAL) {
        rc               = req_local_copy(eng, r);
        req->slices_left = 1;
        if (rc == 0) {
            req->bytes = r->length;
        }

        req_slices_done(batch, req, 1, rc);
        return;
    }

    /*
     * The target checks every slice on its own, so a request cut into
     * several slices that runs off the end of a buffer would be written in
     * part before its last slices are refused. The peer's descriptor shows
     * such a violation up front: refuse the whole request, send nothing.
     */
    if (req->seg->kind == XFER_SEG_MEMORY) {
        rc = dango__xfer_segment_check_range(req->seg, r->remote_addr,
                                             r->length);
        if (rc < 0) {
            req->slices_left = 1;
            req_slices_done(batch, req, 1, rc);
            return;
        }

        unpublished = (rc == 1);
        rc          = 0;
    }

    t = req_pick_tp(eng, req->seg, r);
    if (t < 0) {
        req->slices_left = 1;
        req_slices_done(batch, req, 1, DANGO_EPEER_GONE);
        return;
    }

    tp    = &eng->tps[t];
    slice = tp->attr.max_slice;
    if (unpublished && (r->length <= XFER_UNCUT_MAX)) {
        /*
         * A range the descriptor does not show travels as one slice, so the
         * target checks the whole request at once: it can never be refused
         * in part after some slices landed.
         */
        slice = r->length;
    }
    n = (uint32_t)((r->length + slice - 1) / slice);
    __atomic_store_n(&req->slices_left, n, __ATOMIC_RELEASE);
    for (off = 0; off < r->length; off += slice) {
        xfer_slice_t *xs = dango_mpool_get(&eng->slice_pool);

        if (xs == NULL) {
            rc = DANGO_ENOMEM;
            break;
        }

        memset(&xs->tp, 0, sizeof(xs->tp));
        xs->batch = batch;
        xs->req   = req;
        xs->tp.id =
            __atomic_add_fetch(&eng->next_slice_id, 1, __ATOMIC_RELAXED);
        xs->tp.op       = (uint8_t)r->op;
        xs->tp.local    = (char *)r->local_addr + off;
        xs->tp.remote   = r->remote_addr + off;
        xs->tp.length   = DANGO_MIN(slice, r->length - off);
        xs->tp.post_ns  = dango_time_ns();
        xs->tp.complete = slice_complete;
        posted++;
        rc = tp->ops->post(req->seg->eps[t], &xs->tp);
        if (rc != 0) {
            dango_mpool_put(&eng->slice_pool, xs);
            posted--;
            break;
        }
    }

    if (posted < n) {
        /* The slices never posted count as failed with the first error. */
        req_slices_done(batch, req, n - posted, rc);
    }
}

/* ---------- public API ---------- */

int dango_xfer_batch_create(dango_xfer_engine_t *eng, size_t capacity,
                            dango_xfer_batch_t **batch_p)
{
    dango_xfer_batch_t *batch;

    if ((eng == NULL) || (batch_p == NULL) || (capacity == 0) ||
        (capacity > eng->cfg.max_batch)) {
        return DANGO_EINVAL;
    }

    batch = dango_calloc(1, sizeof(*batch) + capacity * sizeof(xfer_req_t),
                         "xfer_batch");
    if (batch == NULL) {
        return DANGO_ENOMEM;
    }

    batch->eng      = eng;
    batch->capacity = capacity;
    *batch_p        = batch;
    return 0;
}

int dango_xfer_batch_submit(dango_xfer_batch_t     *batch,
                            const dango_xfer_req_t *reqs, size_t count)
{
    dango_xfer_engine_t *eng;
    xfer_segment_t      *segs[64];
    size_t               base;

    if ((batch == NULL) || (reqs == NULL) || (count == 0) ||
        (count > batch->capacity - batch->count)) {
        return DANGO_EINVAL;
    }

    eng = batch->eng;
    if (__atomic_load_n(&eng->shutting_down, __ATOMIC_ACQUIRE)) {
        return DANGO_ESTATE;
    }

    if (__atomic_load_n(&batch->notify_state, __ATOMIC_ACQUIRE) !=
        XFER_NOTIFY_NONE) {
        return DANGO_EBUSY; /* the notification covers what came before */
    }

    /* Validate everything first: a refused submit queues nothing. */
    for (size_t i = 0; i < count; i++) {
        const dango_xfer_req_t *r = &reqs[i];
        xfer_segment_t         *seg;
        int                     rc;

        if (((r->op != DANGO_XFER_OP_READ) && (r->op != DANGO_XFER_OP_WRITE)) ||
            ((r->length > 0) && (r->local_addr == NULL)) ||
            ((uintptr_t)r->local_addr + r->length < (uintptr_t)r->local_addr) ||
            (r->remote_addr + r->length < r->remote_addr)) {
            return DANGO_EINVAL;
        }

        seg = dango__xfer_segment_get(eng, r->segment);
        if (seg == NULL) {
            return DANGO_ENOENT;
        }

        if (__atomic_load_n(&seg->stale, __ATOMIC_ACQUIRE)) {
            return DANGO_ESEGMENT_STALE;
        }

        if (r->length > 0) {
            rc = dango__xfer_local_check(eng, r->local_addr, r->length);
            if (rc != 0) {
                return rc;
            }
        }

        if (i < DANGO_ARRAY_SIZE(segs)) {
            segs[i] = seg;
        }
    }

    base = batch->count;
    __atomic_add_fetch(&batch->outstanding, (uint32_t)count, __ATOMIC_ACQ_REL);
    __atomic_add_fetch(&batch->reqs_pending, (uint32_t)count, __ATOMIC_ACQ_REL);
    for (size_t i = 0; i < count; i++) {
        xfer_req_t *req = &batch->reqs[base + i];

        req->state = DANGO_XFER_PENDING;
        req->error = 0;
        req->bytes = 0;
        req->op    = (uint8_t)reqs[i].op;
        req->seg   = (i < DANGO_ARRAY_SIZE(segs))
                         ? segs[i]
                         : dango__xfer_segment_get(eng, reqs[i].segment);
    }

    batch->count += count;
    for (size_t i = 0; i < count; i++) {
        req_dispatch(batch, &batch->reqs[base + i], &reqs[i]);
    }

    return 0;
}

int dango_xfer_batch_notify(dango_xfer_batch_t *batch,
                            dango_segment_id_t target, const void *msg,
                            size_t len)
{
    xfer_segment_t *seg;
    void           *copy;

    if ((batch == NULL) || (msg == NULL) || (len == 0) ||
        (len > DANGO_XFER_NOTIFY_MAX)) {
        return DANGO_EINVAL;
    }

    if (__atomic_load_n(&batch->notify_state, __ATOMIC_ACQUIRE) !=
        XFER_NOTIFY_NONE) {
        return DANGO_EBUSY;
    }

    seg = dango__xfer_segment_get(batch->eng, target);
    if (seg == NULL) {
        return DANGO_ENOENT;
    }

    if (seg->notify_tp < 0) {
        return DANGO_ENOTSUP; /* local or file segment */
    }

    copy = dango_malloc(len, "xfer_notify_msg");
    if (copy == NULL) {
        return DANGO_ENOMEM;
    }

    memcpy(copy, msg, len);
    batch->notify_seg = seg;
    batch->notify_msg = copy;
    batch->notify_len = len;
    __atomic_add_fetch(&batch->outstanding, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&batch->notify_state, XFER_NOTIFY_ARMED, __ATOMIC_RELEASE);
    batch_try_notify(batch); /* everything may already be done */
    return 0;
}

int dango_xfer_batch_status(const dango_xfer_batch_t *batch, size_t index,
                            dango_xfer_status_t *status)
{
    const xfer_req_t *req;

    if ((batch == NULL) || (status == NULL) || (index >= batch->count)) {
        return DANGO_EINVAL;
    }

    req           = &batch->reqs[index];
    status->state = __atomic_load_n(&req->state, __ATOMIC_ACQUIRE);
    status->error = __atomic_load_n(&req->error, __ATOMIC_ACQUIRE);
    status->bytes = __atomic_load_n(&req->bytes, __ATOMIC_RELAXED);
    return 0;
}

int dango_xfer_batch_query(const dango_xfer_batch_t *batch,
                           dango_xfer_status_t      *status)
{
    uint64_t bytes = 0;
    int      err;

    if ((batch == NULL) || (status == NULL)) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < batch->count; i++) {
        bytes += __atomic_load_n(&batch->reqs[i].bytes, __ATOMIC_RELAXED);
    }

    err           = __atomic_load_n(&batch->first_error, __ATOMIC_ACQUIRE);
    status->error = err;
    status->bytes = bytes;
    if (err != 0) {
        status->state = DANGO_XFER_FAILED;
    } else if (__atomic_load_n(&batch->outstanding, __ATOMIC_ACQUIRE) == 0) {
        status->state = DANGO_XFER_COMPLETED;
    } else {
        status->state = DANGO_XFER_PENDING;
    }

    return 0;
}

int dango_xfer_batch_wait(dango_xfer_batch_t *batch, int timeout_ms)
{
    uint64_t start, deadline = 0, spin_end;
    uint32_t cur;

    if (batch == NULL) {
        return DANGO_EINVAL;
    }

    start    = dango_time_ns();
    spin_end = start + batch->eng->cfg.wait_spin;
    if (timeout_ms >= 0) {
        deadline = start + (uint64_t)timeout_ms * DANGO_NSEC_PER_MSEC;
    }

    for (;;) {
        uint64_t now;

        cur = __atomic_load_n(&batch->outstanding, __ATOMIC_ACQUIRE);
        if (cur == 0) {
            break;
        }

        now = dango_time_ns();
        if ((timeout_ms >= 0) && (now >= deadline)) {
            return DANGO_ETIMEDOUT;
        }

        if (now < spin_end) {
            dango_cpu_relax();
            continue;
        }

        /* Sleep until outstanding changes from cur (woken at zero). */
        __atomic_store_n(&batch->waiting, 1, __ATOMIC_SEQ_CST);
        cur = __atomic_load_n(&batch->outstanding, __ATOMIC_SEQ_CST);
        if (cur != 0) {
            struct timespec ts, *tsp = NULL;

            if (timeout_ms >= 0) {
                uint64_t left = deadline - now;

                ts.tv_sec  = (time_t)(left / DANGO_NSEC_PER_SEC);
                ts.tv_nsec = (long)(left % DANGO_NSEC_PER_SEC);
                tsp        = &ts;
            }

            syscall(SYS_futex, &batch->outstanding, FUTEX_WAIT_PRIVATE, cur,
                    tsp, NULL, 0);
        }

        __atomic_store_n(&batch->waiting, 0, __ATOMIC_SEQ_CST);
    }

    return __atomic_load_n(&batch->first_error, __ATOMIC_ACQUIRE);
}

int dango_xfer_batch_reset(dango_xfer_batch_t *batch)
{
    if (batch == NULL) {
        return DANGO_EINVAL;
    }

    if (__atomic_load_n(&batch->outstanding, __ATOMIC_ACQUIRE) != 0) {
        return DANGO_EBUSY;
    }

    batch_quiesce(batch);
    dango_free(batch->notify_msg);
    batch->notify_msg   = NULL;
    batch->notify_seg   = NULL;
    batch->notify_len   = 0;
    batch->notify_state = XFER_NOTIFY_NONE;
    batch->first_error  = 0;
    batch->count        = 0;
    return 0;
}

size_t dango_xfer_batch_capacity(const dango_xfer_batch_t *batch)
{
    return batch != NULL ? batch->capacity : 0;
}

int dango_xfer_batch_destroy(dango_xfer_batch_t *batch)
{
    if (batch == NULL) {
        return DANGO_EINVAL;
    }

    if (__atomic_load_n(&batch->outstanding, __ATOMIC_ACQUIRE) != 0) {
        return DANGO_EBUSY;
    }

    batch_quiesce(batch);
    dango_free(batch->notify_msg);
    dango_free(batch);
    return 0;
}

/* ---------- standalone notifications ---------- */

int dango_xfer_notify_send(dango_xfer_engine_t *eng, dango_segment_id_t target,
                           const void *msg, size_t len, int timeout_ms)
{
    dango_xfer_batch_t *batch;
    int                 rc;

    rc = dango_xfer_batch_create(eng, 1, &batch);
    if (rc != 0) {
        return rc;
    }

    rc = dango_xfer_batch_notify(batch, target, msg, len);
    if (rc != 0) {
        dango_xfer_batch_destroy(batch);
        return rc;
    }

    rc = dango_xfer_batch_wait(batch, timeout_ms);
    if (rc == DANGO_ETIMEDOUT) {
        /*
         * The transport still owns the notification: it finishes within
         * TCP_IO_TIMEOUT (plus retries). Wait for that bound before freeing.
         */
        dango_xfer_batch_wait(batch, -1);
        rc = DANGO_ETIMEDOUT;
    }

    dango_xfer_batch_destroy(batch);
    return rc;
}
