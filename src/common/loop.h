/*
 * A small epoll event loop (the shape of Redis ae and libuv uv_run).
 *
 * One thread owns a loop and runs its callbacks; the only thread-safe entry
 * points are dango_loop_post() and dango_loop_wakeup(): other threads hand
 * work over through an MPSC queue and one eventfd write. Timers are periodic
 * and coarse (millisecond), meant for timeouts and housekeeping.
 */
#ifndef DANGO_COMMON_LOOP_H
#define DANGO_COMMON_LOOP_H

#include <stdint.h>
#include <dango/common.h>
#include "common/mpsc.h"

typedef struct dango_loop dango_loop_t;

enum {
    DANGO_LOOP_READ  = 1u << 0,
    DANGO_LOOP_WRITE = 1u << 1,
    DANGO_LOOP_ERROR = 1u << 2 /* reported only: hang-up or socket error */
};

/* Called on the loop thread with the DANGO_LOOP_* bits that fired. */
typedef void (*dango_loop_fd_cb)(dango_loop_t *loop, int fd, unsigned events,
                                 void *arg);
/* A task handed to the loop; runs once on the loop thread. */
typedef struct dango_loop_task {
    dango_mpsc_link_t link; /* owned by the loop while queued */
    void (*cb)(struct dango_loop_task *task);
} dango_loop_task_t;
/* Periodic timer callback. */
typedef void (*dango_loop_timer_cb)(dango_loop_t *loop, void *arg);

DANGO_BEGIN_DECLS

DANGO_API int dango_loop_create(const char *name, dango_loop_t **loop_p);
/* Stops the thread (if started) and frees; fds still watched are not closed. */
DANGO_API void dango_loop_destroy(dango_loop_t *loop);

/* Watches @fd. Returns 0, DANGO_EEXIST, DANGO_ENOMEM or a system error. */
DANGO_API int dango_loop_fd_add(dango_loop_t *loop, int fd, unsigned events,
                                dango_loop_fd_cb cb, void *arg);
DANGO_API int dango_loop_fd_mod(dango_loop_t *loop, int fd, unsigned events);
/* Stops watching @fd; no callback for it runs after this returns. */
DANGO_API int dango_loop_fd_del(dango_loop_t *loop, int fd);

/* Adds a periodic timer; returns its id (> 0) or a negative error. */
DANGO_API int dango_loop_timer_add(dango_loop_t *loop, uint64_t interval_ms,
                                   dango_loop_timer_cb cb, void *arg);
DANGO_API int dango_loop_timer_del(dango_loop_t *loop, int timer_id);

/* Thread-safe: queues @task to run on the loop thread and wakes the loop. */
DANGO_API void dango_loop_post(dango_loop_t *loop, dango_loop_task_t *task);
/* Thread-safe: wakes the loop out of epoll_wait. */
DANGO_API void dango_loop_wakeup(dango_loop_t *loop);

/*
 * Runs @fn(@arg) on the loop thread and waits for it to return. Runs it
 * directly when called on the loop thread or when no thread runs the loop.
 * Must not be called while holding a lock the loop thread may need.
 */
DANGO_API void dango_loop_run_sync(dango_loop_t *loop, void (*fn)(void *arg),
                                   void         *arg);

/* Runs one iteration, waiting at most @timeout_ms (-1 = until an event). */
DANGO_API int dango_loop_run_once(dango_loop_t *loop, int timeout_ms);

/* Starts a thread that runs the loop until dango_loop_stop(). */
DANGO_API int dango_loop_start(dango_loop_t *loop);
/* Stops and joins the loop thread; idempotent. Must not be called on it. */
DANGO_API void dango_loop_stop(dango_loop_t *loop);
/* True when called from the thread that runs @loop. */
DANGO_API int         dango_loop_is_current(const dango_loop_t *loop);
DANGO_API const char *dango_loop_name(const dango_loop_t *loop);

DANGO_END_DECLS

#endif
