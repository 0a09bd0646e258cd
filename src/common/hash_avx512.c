/*
 * xxh3 compiled for AVX-512 (this file only is built with
 * -mavx512f); hash.c calls it when the CPU has it. The
 * result is the same on every vector path: only the speed differs.
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/hash_int.h"

uint64_t dango__hash64_avx512(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}
