/* Monotonic and wall clocks. */
#ifndef DANGO_COMMON_TIME_H
#define DANGO_COMMON_TIME_H

#include <stdint.h>
#include <time.h>

#define DANGO_NSEC_PER_USEC 1000ull
#define DANGO_NSEC_PER_MSEC 1000000ull
#define DANGO_NSEC_PER_SEC  1000000000ull

/* Monotonic time in nanoseconds; never goes backwards, not wall time. */
static inline uint64_t dango_time_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * DANGO_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* Wall-clock time in microseconds since the epoch (for descriptors, logs). */
static inline uint64_t dango_time_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

#endif
