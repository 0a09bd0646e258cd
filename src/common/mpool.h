/*
 * Fixed-size object pool for hot-path objects (slices, frames, queue
 * entries): no malloc per operation once warm. Objects are carved from
 * chunks that stay allocated until the pool is cleaned up; get/put are
 * guarded by a spinlock (short critical section, a freelist pop or push).
 */
#ifndef DANGO_COMMON_MPOOL_H
#define DANGO_COMMON_MPOOL_H

#include <stddef.h>
#include <dango/common.h>
#include "common/spinlock.h"

typedef struct dango_mpool {
    dango_spinlock_t lock;
    void            *free_list; /* singly linked through the first word */
    void            *chunks;    /* singly linked list of chunks */
    size_t           elem_size;
    size_t           per_chunk;
    size_t           max_elems; /* 0 = unbounded */
    size_t           num_elems;
    size_t           num_out; /* objects handed out, for leak checks */
    const char      *name;
} dango_mpool_t;

DANGO_BEGIN_DECLS

/* @max_elems 0 = grow without bound. Never fails (allocation is lazy). */
DANGO_API void dango_mpool_init(dango_mpool_t *mp, size_t elem_size,
                                size_t per_chunk, size_t max_elems,
                                const char *name);
/* Frees every chunk; objects still out are reported (debug) and lost. */
DANGO_API void dango_mpool_cleanup(dango_mpool_t *mp);
/* Returns an object (contents undefined) or NULL when out of memory/limit. */
DANGO_API void *dango_mpool_get(dango_mpool_t *mp);
DANGO_API void  dango_mpool_put(dango_mpool_t *mp, void *obj);

DANGO_END_DECLS

#endif
