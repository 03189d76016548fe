/* Monotonic time and libevent timers in seconds, as every module counts them. */
#ifndef BG_CLOCK_H
#define BG_CLOCK_H

#include <event2/event.h>

/* Seconds on the monotonic clock. */
double clock_now(void);
/* (Re)arms ev to fire after seconds (negative: at once). */
void timer_after(struct event *ev, double seconds);
/* If ev is pending and due later than seconds from now, re-arms it then: 1. */
int timer_shorten(struct event *ev, double seconds);
/*
 * A retry delay: min doubled `doublings` times, capped at max, then
 * lengthened by up to half at random so that many retrying together do
 * not retry in step.
 */
double backoff_delay(double min, double max, unsigned doublings);

#endif
