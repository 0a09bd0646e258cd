/*
 * Values the store tests can check by key alone, shared by the test
 * programs and the peer processes they start (store_peer, chaos_client):
 * a value is test_fill(buf, len, test_key_seed(key)), so any process can
 * tell whether bytes it read are the ones written for that key. Header
 * only, no test framework: the peers include it too.
 */
#ifndef DANGO_TEST_VALUES_H
#define DANGO_TEST_VALUES_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* FNV-1a of @key: the seed of its value. */
static inline uint64_t test_key_seed(const char *key)
{
    uint64_t h = 1469598103934665603ull;

    for (; *key != '\0'; key++) {
        h = (h ^ (uint8_t)*key) * 1099511628211ull;
    }
    return h;
}

/* @len bytes of xorshift64 output seeded by @seed. */
static inline void test_fill(void *buf, size_t len, uint64_t seed)
{
    uint8_t *p = buf;
    uint64_t s = seed | 1;

    for (size_t i = 0; i < len; i++) {
        if ((i & 7) == 0) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
        }
        p[i] = (uint8_t)(s >> ((i & 7) * 8));
    }
}

static inline void test_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

#endif
