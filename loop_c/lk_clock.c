/* lk_clock.c -- the loop's notion of time.
 *
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds: the same clock as
 * Python's time.monotonic_ns(), so Python can compute deadlines itself and
 * the two never disagree.  Monotonic, because a wall-clock jump (NTP, the
 * user changing the date) must not make every timer fire or none.
 */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <time.h>

#include "lk_loop_internal.h"

int64_t lk_now_ns(void)
{
    struct timespec ts;
    /* Cannot fail with a valid clock id and pointer. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The pollers take milliseconds.  Round UP: rounding down would wake us
 * just before a timer is due, find nothing expired, and poll again with a
 * timeout of 0 -- a busy spin for up to a millisecond. */
int64_t lk__ns_to_ms_ceil(int64_t ns)
{
    if (ns < 0)
        return -1;
    int64_t ms = ns / 1000000 + (ns % 1000000 != 0);
    return ms > INT_MAX ? INT_MAX : ms;
}
