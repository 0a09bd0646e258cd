/* Checksums and hashes: xxh3 from libxxhash. */
#ifndef DANGO_COMMON_HASH_H
#define DANGO_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <dango/common.h>

DANGO_BEGIN_DECLS

/* 64-bit xxh3 of @len bytes at @data. */
DANGO_API uint64_t dango_hash64(const void *data, size_t len);

/* 64-bit xxh3 with a seed. */
DANGO_API uint64_t dango_hash64_seed(const void *data, size_t len,
                                     uint64_t seed);

/* Streaming xxh3-64: state is opaque storage, large enough for XXH3_state_t. */
typedef struct dango_hash_state {
    void *impl;
} dango_hash_state_t;

DANGO_API int      dango_hash_init(dango_hash_state_t *st, uint64_t seed);
DANGO_API void     dango_hash_update(dango_hash_state_t *st, const void *data,
                                     size_t len);
DANGO_API uint64_t dango_hash_final(dango_hash_state_t *st);
DANGO_API void     dango_hash_cleanup(dango_hash_state_t *st);

/* Fills @buf with @len bytes from the kernel's random source. */
DANGO_API int dango_random_bytes(void *buf, size_t len);

DANGO_END_DECLS

#endif
