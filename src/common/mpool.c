/*
 * Fixed-size object pool. Chunks of per_chunk objects are allocated on
 * demand and kept until cleanup; free objects form a LIFO list threaded
 * through their first word, so a warm get/put is a pop/push under a
 * spinlock (no syscall, no malloc on the hot path).
 */
#include <string.h>

#include "common/alloc.h"
#include "common/mpool.h"

#define MPOOL_ALIGN                                                            \
    64 /* object size granule: no two objects share a line                     \
        * when the chunk is line-aligned (malloc gives 16) */

void dango_mpool_init(dango_mpool_t *mp, size_t elem_size, size_t per_chunk,
                      size_t max_elems, const char *name)
{
    memset(mp, 0, sizeof(*mp));
    dango_spin_init(&mp->lock);
    if (elem_size < sizeof(void *)) {
        elem_size = sizeof(void *);
    }

    mp->elem_size = DANGO_ALIGN_UP(elem_size, (size_t)MPOOL_ALIGN);
    mp->per_chunk = per_chunk == 0 ? 64 : per_chunk;
    mp->max_elems = max_elems;
    mp->name      = name;
}

void dango_mpool_cleanup(dango_mpool_t *mp)
{
    void *chunk = mp->chunks;

    while (chunk != NULL) {
        void *next = *(void **)chunk;

        dango_free(chunk);
        chunk = next;
    }

    mp->chunks    = NULL;
    mp->free_list = NULL;
    mp->num_elems = 0;
}

/* Allocates one chunk and threads its objects onto the free list. */
static int mpool_grow(dango_mpool_t *mp)
{
    size_t n = mp->per_chunk;
    char  *chunk, *obj;

    if ((mp->max_elems != 0) && (mp->num_elems + n > mp->max_elems)) {
        n = mp->max_elems - mp->num_elems;
        if (n == 0) {
            return -1;
        }
    }

    chunk = dango_malloc(MPOOL_ALIGN + n * mp->elem_size, mp->name);
    if (chunk == NULL) {
        return -1;
    }

    *(void **)chunk = mp->chunks;
    mp->chunks      = chunk;
    obj             = chunk + MPOOL_ALIGN;
    for (size_t i = 0; i < n; i++, obj += mp->elem_size) {
        *(void **)obj = mp->free_list;
        mp->free_list = obj;
    }

    mp->num_elems += n;
    return 0;
}

void *dango_mpool_get(dango_mpool_t *mp)
{
    void *obj;

    dango_spin_lock(&mp->lock);
    if ((mp->free_list == NULL) && (mpool_grow(mp) != 0)) {
        dango_spin_unlock(&mp->lock);
        return NULL;
    }

    obj           = mp->free_list;
    mp->free_list = *(void **)obj;
    mp->num_out++;
    dango_spin_unlock(&mp->lock);
    return obj;
}

void dango_mpool_put(dango_mpool_t *mp, void *obj)
{
    dango_spin_lock(&mp->lock);
    *(void **)obj = mp->free_list;
    mp->free_list = obj;
    mp->num_out--;
    dango_spin_unlock(&mp->lock);
}
