#include "config.h"

#include <stdlib.h>
#include <time.h>

#include "clock.h"

double
clock_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
timer_after(struct event *ev, double seconds)
{
	struct timeval tv;

	if (seconds < 0)
		seconds = 0;
	/*
	 * libevent counts from the time cached at the start of this loop
	 * pass; after a slow callback that would fire the timer early.
	 */
	event_base_update_cache_time(event_get_base(ev));
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	evtimer_add(ev, &tv);
}

int
timer_shorten(struct event *ev, double seconds)
{
	struct timeval at, now;
	double left;

	if (!evtimer_pending(ev, &at))
		return 0;
	/* libevent reports when it fires in wall-clock time. */
	event_base_update_cache_time(event_get_base(ev));
	event_base_gettimeofday_cached(event_get_base(ev), &now);
	left = (double)(at.tv_sec - now.tv_sec) +
	    (double)(at.tv_usec - now.tv_usec) / 1e6;
	if (left <= seconds)
		return 0;
	timer_after(ev, seconds);
	return 1;
}

double
backoff_delay(double min, double max, unsigned doublings)
{
	double d = min;
	unsigned i;

	for (i = 0; i < doublings && d < max; i++)
		d *= 2;
	if (d > max)
		d = max;
	return d + (d / 2) * ((double)arc4random_uniform(1000001) / 1e6);
}
