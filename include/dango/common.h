/**
 * @file common.h
 * @brief Basic definitions shared by every public Dango header.
 *
 * Export macro, C++ guards, version numbers and the branch-prediction hints.
 * Nothing here allocates or can fail.
 */
#ifndef DANGO_COMMON_H
#define DANGO_COMMON_H

#include <stddef.h>
#include <stdint.h>

/** Marks a symbol as part of the exported ABI of libdango. */
#if defined(__GNUC__)
#define DANGO_API __attribute__((visibility("default")))
#else
#define DANGO_API
#endif

#ifdef __cplusplus
#define DANGO_BEGIN_DECLS extern "C" {
#define DANGO_END_DECLS   }
#else
/** Opens an `extern "C"` block when compiled as C++. */
#define DANGO_BEGIN_DECLS
/** Closes the block opened by DANGO_BEGIN_DECLS. */
#define DANGO_END_DECLS
#endif

/** Major version: incremented on incompatible API changes. */
#define DANGO_VERSION_MAJOR 0
/** Minor version: incremented when features are added compatibly. */
#define DANGO_VERSION_MINOR 1
/** Patch version: incremented for fixes. */
#define DANGO_VERSION_PATCH 0

/** Branch hint: the condition is expected to be true. Use only where measured.
 */
#define dango_likely(_x) __builtin_expect(!!(_x), 1)
/** Branch hint: the condition is expected to be false. Use only where measured.
 */
#define dango_unlikely(_x) __builtin_expect(!!(_x), 0)

/** Number of elements of a fixed-size array. */
#define DANGO_ARRAY_SIZE(_a) (sizeof(_a) / sizeof((_a)[0]))

/** Pointer to the structure that contains @p _ptr as member @p _member. */
#define dango_container_of(_ptr, _type, _member)                               \
    ((_type *)((char *)(_ptr)-offsetof(_type, _member)))

/** Smaller of two values (evaluates each once). */
#define DANGO_MIN(_a, _b)                                                      \
    ({                                                                         \
        __typeof__(_a) _min_a = (_a);                                          \
        __typeof__(_b) _min_b = (_b);                                          \
        _min_a < _min_b ? _min_a : _min_b;                                     \
    })
/** Larger of two values (evaluates each once). */
#define DANGO_MAX(_a, _b)                                                      \
    ({                                                                         \
        __typeof__(_a) _max_a = (_a);                                          \
        __typeof__(_b) _max_b = (_b);                                          \
        _max_a > _max_b ? _max_a : _max_b;                                     \
    })

/** Round @p _v up to a multiple of @p _a (a power of two). */
#define DANGO_ALIGN_UP(_v, _a) (((_v) + ((_a)-1)) & ~((__typeof__(_v))(_a)-1))
/** Round @p _v down to a multiple of @p _a (a power of two). */
#define DANGO_ALIGN_DOWN(_v, _a) ((_v) & ~((__typeof__(_v))(_a)-1))

DANGO_BEGIN_DECLS

/**
 * @brief Version of the library that is linked, as "major.minor.patch".
 * @return A static string; never NULL.
 * @note Thread safety: safe from any thread.
 */
DANGO_API const char *dango_version_string(void);

/**
 * A replacement allocator for everything the library allocates. All four
 * functions must be provided and behave like their libc namesakes.
 */
typedef struct dango_allocator {
    void *(*malloc_fn)(size_t size);               /**< Like malloc(). */
    void *(*calloc_fn)(size_t nmemb, size_t size); /**< Like calloc(). */
    void *(*realloc_fn)(void *ptr, size_t size);   /**< Like realloc(). */
    void (*free_fn)(void *ptr);                    /**< Like free(). */
} dango_allocator_t;

/**
 * @brief Replaces the library allocator.
 * @param[in] alloc  Functions to use, or NULL to restore libc's.
 * @return 0, or DANGO_EINVAL when a function pointer is missing.
 * @note Call before creating any object: memory must be freed by the
 *       allocator that allocated it. Not thread-safe against allocations
 *       in progress.
 */
DANGO_API int dango_set_allocator(const dango_allocator_t *alloc);

DANGO_END_DECLS

#endif /* DANGO_COMMON_H */
