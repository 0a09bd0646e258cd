/* xxh3 variants built for wider vector units (x86-64 only), picked once by
 * hash.c from what the CPU supports. */
#ifndef DANGO_COMMON_HASH_INT_H
#define DANGO_COMMON_HASH_INT_H

#include <stddef.h>
#include <stdint.h>

uint64_t dango__hash64_avx2(const void *data, size_t len);
uint64_t dango__hash64_avx512(const void *data, size_t len);

#endif
