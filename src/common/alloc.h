/*
 * Named allocation for the whole library. Every allocation carries a short
 * name ("xfer_batch", "tcp_conn") so leak reports say what leaked, and a test
 * hook makes the n-th allocation from now fail so that OOM paths are tested.
 */
#ifndef DANGO_COMMON_ALLOC_H
#define DANGO_COMMON_ALLOC_H

#include <stddef.h>
#include <dango/common.h>

DANGO_BEGIN_DECLS

DANGO_API void *dango_malloc(size_t size, const char *name);
DANGO_API void *dango_calloc(size_t nmemb, size_t size, const char *name);
DANGO_API void *dango_realloc(void *ptr, size_t size, const char *name);
DANGO_API void  dango_free(void *ptr);
DANGO_API char *dango_strdup(const char *s, const char *name);
DANGO_API char *dango_strndup(const char *s, size_t n, const char *name);

/*
 * Test hook: the @n-th allocation from now (1 = the next one) fails, and so
 * does every allocation after it until the hook is reset with a negative n.
 */
DANGO_API void dango__alloc_fail_after(long n);

/* Number of allocations that have not been freed (for leak checks in tests). */
DANGO_API long dango__alloc_live(void);

DANGO_END_DECLS

#endif
