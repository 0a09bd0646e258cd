/*
 * Checksums: xxh3 from libxxhash (fast enough to checksum every payload end
 * to end). The header-only build defaults to SSE2 on x86-64 (~11 GB/s per
 * core here); dango_hash64() instead runs the AVX2 or AVX-512 build of the
 * same function when the CPU has it (~25-30 GB/s), chosen on the first
 * call. Every path gives the same result. Random bytes come from
 * getrandom(2).
 */
#include <sys/random.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <dango/error.h>
#include "common/alloc.h"
#include "common/hash.h"
#include "common/hash_int.h"

typedef uint64_t (*hash64_fn)(const void *data, size_t len);

static uint64_t hash64_base(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

static hash64_fn hash64_pick(void)
{
#ifdef DANGO_HASH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        return dango__hash64_avx512;
    }

    if (__builtin_cpu_supports("avx2")) {
        return dango__hash64_avx2;
    }
#endif
    return hash64_base;
}

uint64_t dango_hash64(const void *data, size_t len)
{
    static hash64_fn impl;
    hash64_fn        f = __atomic_load_n(&impl, __ATOMIC_RELAXED);

    if (f == NULL) {
        /* Racing first callers pick the same function. */
        f = hash64_pick();
        __atomic_store_n(&impl, f, __ATOMIC_RELAXED);
    }

    return f(data, len);
}

uint64_t dango_hash64_seed(const void *data, size_t len, uint64_t seed)
{
    return XXH3_64bits_withSeed(data, len, seed);
}

int dango_hash_init(dango_hash_state_t *st, uint64_t seed)
{
    XXH3_state_t *s = XXH3_createState();

    if (s == NULL) {
        return DANGO_ENOMEM;
    }

    XXH3_64bits_reset_withSeed(s, seed);
    st->impl = s;
    return 0;
}

void dango_hash_update(dango_hash_state_t *st, const void *data, size_t len)
{
    XXH3_64bits_update(st->impl, data, len);
}

uint64_t dango_hash_final(dango_hash_state_t *st)
{
    return XXH3_64bits_digest(st->impl);
}

void dango_hash_cleanup(dango_hash_state_t *st)
{
    if (st->impl != NULL) {
        XXH3_freeState(st->impl);
        st->impl = NULL;
    }
}

int dango_random_bytes(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            return dango_err_from_errno(errno);
        }

        p += n;
        len -= (size_t)n;
    }

    return 0;
}
