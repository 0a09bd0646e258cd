/*
 * Streaming copy: SSE2 non-temporal stores (part of every x86-64 CPU, and
 * as fast here as the 256- and 512-bit forms: the limit is the write
 * combining, not the vector width). The destination is aligned to 16 bytes
 * with one short memcpy; unaligned loads read the source.
 */
#include "common/copy.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>

void dango_copy_stream(void *dst, const void *src, size_t len)
{
    char       *d = dst;
    const char *s = src;
    size_t      head;

    if (len < DANGO_COPY_STREAM_MIN) {
        memcpy(dst, src, len);
        return;
    }

    head = (16 - ((uintptr_t)d & 15)) & 15;
    memcpy(d, s, head);
    d += head;
    s += head;
    len -= head;

    for (; len >= 64; d += 64, s += 64, len -= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(const void *)(s + 48));

        _mm_stream_si128((__m128i *)(void *)d, a);
        _mm_stream_si128((__m128i *)(void *)(d + 16), b);
        _mm_stream_si128((__m128i *)(void *)(d + 32), c);
        _mm_stream_si128((__m128i *)(void *)(d + 48), e);
    }

    for (; len >= 16; d += 16, s += 16, len -= 16) {
        _mm_stream_si128((__m128i *)(void *)d,
                         _mm_loadu_si128((const __m128i *)(const void *)s));
    }

    memcpy(d, s, len);
    _mm_sfence();
}

#else

void dango_copy_stream(void *dst, const void *src, size_t len)
{
    memcpy(dst, src, len);
}

#endif
