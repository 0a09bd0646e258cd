/* Bulk copies into memory that is not read again soon. */
#ifndef DANGO_COMMON_COPY_H
#define DANGO_COMMON_COPY_H

#include <stddef.h>
#include <dango/common.h>

DANGO_BEGIN_DECLS

/* Copies at or above this many bytes stream (see dango_copy_stream). */
#define DANGO_COPY_STREAM_MIN 4096

/*
 * Copies @len bytes from @src to @dst like memcpy (the ranges must not
 * overlap). From DANGO_COPY_STREAM_MIN bytes on, on x86-64, the stores
 * bypass the cache (non-temporal): the destination lines are not read
 * first and do not evict what the caller is working on, which roughly
 * doubles the rate of a copy into cold memory (a value written into a
 * segment, read much later by someone else). The stores are fenced before
 * the call returns, so a store the caller makes afterwards (a commit word,
 * a completion flag) is never seen before the copied bytes. Anywhere else,
 * and for shorter copies, it is memcpy. Safe from any thread.
 */
DANGO_API void dango_copy_stream(void *dst, const void *src, size_t len);

DANGO_END_DECLS

#endif
