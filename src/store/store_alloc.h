/*
 * Per-segment offset allocator of the store master (spec store.md §3.7).
 *
 * The master never touches segment memory: it hands out offsets inside a
 * segment of a given size, and clients turn them into addresses (segment base
 * plus offset) for the transfer engine. This allocator manages those offsets
 * for one segment in O(1) per operation: size classes ("bins") found through
 * a two-level bitmap, ranges kept in a node array, neighbouring free ranges
 * merged on free. Nothing is ever scanned per live object.
 *
 * Units. Every offset and size that crosses this API is in bytes and a
 * multiple of the allocator's granule. The granule is the min_align given to
 * dango__store_alloc_create() unless the segment holds more than
 * 15 * 2^30 min_align units (960 GiB with the minimum 64 B alignment): then
 * it is the smallest power-of-two multiple of min_align that brings the
 * segment under that limit (the spec's "multiplier bits"), reported in
 * dango_store_alloc_stats_t.granule. Offsets are 64-bit, so segments larger
 * than 4 GiB need nothing special.
 *
 * Ownership: the allocator owns its node storage; it holds no pointer into
 * the segment and no reference to anything of the caller's.
 *
 * Thread safety: none. An allocator belongs to the master's single event
 * loop, which calls every function below from that one thread; calls on
 * distinct allocators may run on distinct threads.
 */
#ifndef DANGO_STORE_ALLOC_H
#define DANGO_STORE_ALLOC_H

#include <stdint.h>
#include <dango/common.h>

DANGO_BEGIN_DECLS

/** An offset allocator for one segment (opaque). */
typedef struct dango_store_alloc dango_store_alloc_t;

/** Usage figures of an allocator, as filled by dango__store_alloc_stats(). */
typedef struct dango_store_alloc_stats {
    uint64_t capacity;        /**< Usable bytes: the segment size rounded
                                   down to the granule. */
    uint64_t granule;         /**< Unit of every offset and size, bytes. */
    uint64_t allocated_bytes; /**< Sum of the sizes of live allocations
                                   (alloc_size, not the requested size). */
    uint64_t allocated_count; /**< Number of live allocations. */
    uint64_t free_bytes;      /**< capacity - allocated_bytes. */
    uint64_t largest_free;    /**< Size of the largest free range, exact. */
    uint64_t free_ranges;     /**< Number of maximal free ranges. */
} dango_store_alloc_stats_t;

/**
 * @brief Creates an allocator for a segment of @p size bytes.
 *
 * The whole usable range [0, capacity) starts free. Node storage for the
 * first clamp(capacity / granule / 4096, 1024, 65536) ranges is allocated
 * now and doubles on demand.
 *
 * @param[in]  size       Segment size in bytes; > 0. Only the part that is a
 *                        whole number of granules is used.
 * @param[in]  min_align  Power of two >= 64: every offset and size returned
 *                        later is a multiple of it.
 * @param[out] a_p        Set to the new allocator on success only.
 *
 * @return 0 on success, or:
 *         - DANGO_EINVAL  @p size is 0 or smaller than one granule,
 *                         @p min_align is not a power of two >= 64, or
 *                         @p a_p is NULL.
 *         - DANGO_ENOMEM  memory for the allocator could not be obtained
 *                         (nothing is leaked).
 *
 * @note Ownership: the caller owns the result and releases it with
 *       dango__store_alloc_destroy().
 * @note Thread safety: callable from any thread; the result is then used by
 *       one thread at a time (see the file comment).
 */
int dango__store_alloc_create(uint64_t size, uint64_t min_align,
                              dango_store_alloc_t **a_p);

/**
 * @brief Destroys an allocator and its node storage.
 *
 * Live allocations are simply forgotten: they name offsets only, so there is
 * nothing to release for them. NULL is a no-op.
 *
 * @param[in] a  Allocator from dango__store_alloc_create(), or NULL.
 *
 * @note Thread safety: the owning thread only; @p a is invalid afterwards.
 */
void dango__store_alloc_destroy(dango_store_alloc_t *a);

/**
 * @brief Allocates a range of at least @p size bytes.
 *
 * The request is rounded up to the granule, and exactly that many bytes are
 * taken from the front of a free range whose size class guarantees it is
 * large enough; the rest of the range goes back to the free bins. Internal
 * fragmentation is therefore below one granule per allocation. The price of
 * O(1) lookup is on the external side: a request may fail with DANGO_ENOSPC
 * while one free range of size between @p size and about 9/8 of it exists
 * (ranges in the size class just below the request's are probed only a
 * bounded number of times, see store_alloc.c).
 *
 * @param[in]  a             Allocator.
 * @param[in]  size          Bytes wanted; 1 .. capacity.
 * @param[out] offset_p      Set to the range's byte offset (a multiple of
 *                           the granule) on success only.
 * @param[out] alloc_size_p  Set to the range's size in bytes, @p size rounded
 *                           up to the granule, on success only. May be NULL.
 *
 * @return 0 on success, or, with the allocator unchanged:
 *         - DANGO_EINVAL  @p size is 0 or larger than the capacity, or
 *                         @p a or @p offset_p is NULL.
 *         - DANGO_ENOSPC  no free range is large enough (see above).
 *         - DANGO_ENOMEM  node storage was full and could not grow (memory,
 *                         or the limit of 2^30 ranges per allocator).
 *
 * @note Ownership: the range stays allocated until
 *       dango__store_alloc_free() of @p *offset_p or allocator destroy.
 * @note Thread safety: the owning thread only.
 */
int dango__store_alloc_alloc(dango_store_alloc_t *a, uint64_t size,
                             uint64_t *offset_p, uint64_t *alloc_size_p);

/**
 * @brief Frees the allocation that starts at @p offset.
 *
 * The range is merged with free neighbours, so free ranges are always
 * maximal. Offsets are checked against a hash of live allocation starts: a
 * double free, an offset inside an allocation or a wild offset is refused and
 * changes nothing. Never allocates memory.
 *
 * @param[in] a       Allocator.
 * @param[in] offset  Byte offset returned by dango__store_alloc_alloc() or
 *                    given to dango__store_alloc_reserve().
 *
 * @return 0 on success, or, with the allocator unchanged:
 *         - DANGO_EINVAL  @p a is NULL.
 *         - DANGO_ENOENT  @p offset is not the start of a live allocation.
 *
 * @note Thread safety: the owning thread only.
 */
int dango__store_alloc_free(dango_store_alloc_t *a, uint64_t offset);

/**
 * @brief Marks the exact range [@p offset, @p offset + @p size) allocated.
 *
 * Used to rebuild an allocator from what a store node reports it holds
 * after a master restart. The range becomes a live allocation like one
 * returned by dango__store_alloc_alloc(), freed with
 * dango__store_alloc_free(@p offset). Finding the free range that contains
 * @p offset walks the ranges from a per-region hint (the range list is not
 * indexed by offset, to keep alloc and free O(1)): replaying a report sorted
 * by offset costs O(1) per call, an unsorted one costs a walk over the
 * ranges between the hint and @p offset.
 *
 * @param[in] a       Allocator.
 * @param[in] offset  Byte offset, a multiple of the granule.
 * @param[in] size    Byte size, > 0 and a multiple of the granule.
 *
 * @return 0 on success, or, with the allocator unchanged:
 *         - DANGO_EINVAL  @p size is 0, @p offset or @p size is not a
 *                         multiple of the granule, the range ends past the
 *                         capacity, or @p a is NULL.
 *         - DANGO_EEXIST  the range overlaps a live allocation.
 *         - DANGO_ENOMEM  node storage was full and could not grow (memory,
 *                         or the limit of 2^30 ranges per allocator).
 *
 * @note Thread safety: the owning thread only.
 */
int dango__store_alloc_reserve(dango_store_alloc_t *a, uint64_t offset,
                               uint64_t size);

/**
 * @brief Reports usage figures.
 *
 * All fields but largest_free are counters read in O(1); largest_free is
 * exact and costs a walk over the free ranges of the largest non-empty size
 * class (those within 1/8 of the largest range, usually a handful).
 *
 * @param[in]  a   Allocator.
 * @param[out] st  Filled on return.
 *
 * @note Thread safety: the owning thread only.
 */
void dango__store_alloc_stats(const dango_store_alloc_t *a,
                              dango_store_alloc_stats_t *st);

/**
 * @brief Verifies every internal invariant (for tests and debugging).
 *
 * Checks that the ranges tile [0, capacity) in order, that no two free
 * ranges touch, that each free range sits in the bin of its size class and
 * the bitmaps agree with the bins, that the offset hash holds exactly the
 * live allocations and that the counters match. Costs O(ranges + hash size).
 *
 * @param[in] a  Allocator.
 *
 * @return 0 when consistent, DANGO_ECORRUPT otherwise (the first violation is
 *         logged at error level).
 *
 * @note Thread safety: the owning thread only.
 */
int dango__store_alloc_check(const dango_store_alloc_t *a);

DANGO_END_DECLS

#endif /* DANGO_STORE_ALLOC_H */
