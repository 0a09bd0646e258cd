/* Small helpers shared by the stand-alone benchmarks in bench/. */
#ifndef DANGO_BENCH_UTIL_H
#define DANGO_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

/* Monotonic time in seconds. */
static inline double bench_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "4m", "1g", "64k" or plain bytes; returns 0 on a malformed value. */
static inline size_t bench_parse_size(const char *s)
{
    char  *end;
    double v = strtod(s, &end);

    if ((end == s) || (v < 0)) {
        return 0;
    }

    switch (*end) {
    case 'k':
    case 'K':
        return (size_t)(v * 1024);
    case 'm':
    case 'M':
        return (size_t)(v * 1024 * 1024);
    case 'g':
    case 'G':
        return (size_t)(v * 1024 * 1024 * 1024);
    default:
        return (size_t)v;
    }
}

#endif
