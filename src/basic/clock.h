/* basic/clock.h - the monotonic clock, in the units ferry's caches and retry budgets count in
 * (libc only). */
#ifndef FERRY_BASIC_CLOCK_H
#define FERRY_BASIC_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in milliseconds / seconds (never fails on Linux). */
static inline int64_t ferry_mono_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t ferry_mono_s(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

#endif
