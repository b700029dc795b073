/* clock.h - the one monotonic clock of glmserve.
 *
 * Everything that measures durations or stamps events reads this clock (or
 * receives its value as `now`, STYLE.md 8.8), so that times from different
 * modules can be subtracted. Not wall time: never shown as a date.
 * Thread-safe: reads CLOCK_MONOTONIC only. */
#ifndef GS_CLOCK_H
#define GS_CLOCK_H

#include <stdint.h>

/* Nanoseconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
uint64_t gs_clock_now_ns(void);

#endif
