/*
 * The replaceable allocator. All library allocations go through
 * dango_malloc() and friends so that an application can route them to its
 * own allocator (dango_set_allocator) and tests can inject failures: the
 * fail-after counter makes the n-th allocation from now return NULL, which is
 * how OOM paths are proven to return DANGO_ENOMEM and leak nothing.
 *
 * The name argument is kept for leak reports under sanitizers and debuggers;
 * it costs nothing at run time.
 */
#include <stdlib.h>
#include <string.h>

#include <dango/error.h>
#include "common/alloc.h"

static dango_allocator_t dango_alloc_ops = {malloc, calloc, realloc, free};
static long              dango_alloc_fail_countdown = -1;
static long              dango_alloc_live_count;

int dango_set_allocator(const dango_allocator_t *alloc)
{
    if (alloc == NULL) {
        dango_alloc_ops = (dango_allocator_t){malloc, calloc, realloc, free};
        return 0;
    }

    if ((alloc->malloc_fn == NULL) || (alloc->calloc_fn == NULL) ||
        (alloc->realloc_fn == NULL) || (alloc->free_fn == NULL)) {
        return DANGO_EINVAL;
    }

    dango_alloc_ops = *alloc;
    return 0;
}

void dango__alloc_fail_after(long n)
{
    __atomic_store_n(&dango_alloc_fail_countdown, n, __ATOMIC_SEQ_CST);
}

long dango__alloc_live(void)
{
    return __atomic_load_n(&dango_alloc_live_count, __ATOMIC_SEQ_CST);
}

/* True when the fault-injection hook says this allocation must fail. */
static int alloc_should_fail(void)
{
    long cur = __atomic_load_n(&dango_alloc_fail_countdown, __ATOMIC_RELAXED);

    while (cur > 0) {
        if (__atomic_compare_exchange_n(&dango_alloc_fail_countdown, &cur,
                                        cur - 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED)) {
            return cur == 1; /* the n-th allocation itself fails */
        }
    }

    return cur == 0;
}

void *dango_malloc(size_t size, const char *name)
{
    void *p;

    (void)name;
    if (alloc_should_fail()) {
        return NULL;
    }

    p = dango_alloc_ops.malloc_fn(size == 0 ? 1 : size);
    if (p != NULL) {
        __atomic_add_fetch(&dango_alloc_live_count, 1, __ATOMIC_RELAXED);
    }

    return p;
}

void *dango_calloc(size_t nmemb, size_t size, const char *name)
{
    void *p;

    (void)name;
    if (alloc_should_fail()) {
        return NULL;
    }

    p = dango_alloc_ops.calloc_fn(nmemb == 0 ? 1 : nmemb, size == 0 ? 1 : size);
    if (p != NULL) {
        __atomic_add_fetch(&dango_alloc_live_count, 1, __ATOMIC_RELAXED);
    }

    return p;
}

void *dango_realloc(void *ptr, size_t size, const char *name)
{
    void *p;

    if (ptr == NULL) {
        return dango_malloc(size, name);
    }

    if (alloc_should_fail()) {
        return NULL;
    }

    p = dango_alloc_ops.realloc_fn(ptr, size == 0 ? 1 : size);
    return p;
}

void dango_free(void *ptr)
{
    if (ptr == NULL) {
        return;
    }

    __atomic_sub_fetch(&dango_alloc_live_count, 1, __ATOMIC_RELAXED);
    dango_alloc_ops.free_fn(ptr);
}

char *dango_strndup(const char *s, size_t n, const char *name)
{
    size_t len = strnlen(s, n);
    char  *p   = dango_malloc(len + 1, name);

    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }

    return p;
}

char *dango_strdup(const char *s, const char *name)
{
    return dango_strndup(s, strlen(s), name);
}
