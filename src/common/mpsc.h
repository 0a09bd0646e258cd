/*
 * Multi-producer, single-consumer hand-off: a lock-free intrusive stack.
 * Any thread pushes (one compare-and-swap); the one consumer takes the
 * whole stack at once and gets it back in push order. This is how work
 * crosses from application threads to the thread that owns an object (the
 * loop's task queue, a connection's slice inbox, an RPC server's deferred
 * replies); the caller pairs it with its own wake-up.
 */
#ifndef DANGO_COMMON_MPSC_H
#define DANGO_COMMON_MPSC_H

#include <stddef.h>

typedef struct dango_mpsc_link {
    struct dango_mpsc_link *next;
} dango_mpsc_link_t;

typedef struct dango_mpsc {
    dango_mpsc_link_t *head; /* atomic */
} dango_mpsc_t;

/* Any thread. */
static inline void dango_mpsc_push(dango_mpsc_t *q, dango_mpsc_link_t *link)
{
    dango_mpsc_link_t *head = __atomic_load_n(&q->head, __ATOMIC_RELAXED);

    do {
        link->next = head;
    } while (!__atomic_compare_exchange_n(&q->head, &head, link, 1,
                                          __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/* Any thread: a hint, exact only for the consumer. */
static inline int dango_mpsc_is_empty(const dango_mpsc_t *q)
{
    return __atomic_load_n(&q->head, __ATOMIC_RELAXED) == NULL;
}

/*
 * Consumer only: takes everything pushed so far, oldest first, as a list
 * linked through ->next (NULL-terminated). The links belong to the caller.
 */
static inline dango_mpsc_link_t *dango_mpsc_take(dango_mpsc_t *q)
{
    dango_mpsc_link_t *lifo, *fifo = NULL;

    lifo = __atomic_exchange_n(&q->head, NULL, __ATOMIC_ACQUIRE);
    while (lifo != NULL) {
        dango_mpsc_link_t *next = lifo->next;

        lifo->next = fifo;
        fifo       = lifo;
        lifo       = next;
    }

    return fifo;
}

#endif
