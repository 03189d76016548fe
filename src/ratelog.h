/*
 * Summaries of repeated log events, so that a peer cannot choose how much
 * is logged: within a window the first event of a kind is logged in full,
 * the others are only counted and then logged as one line with the count.
 */
#ifndef BG_RATELOG_H
#define BG_RATELOG_H

#include <stddef.h>

/* Kinds followed at once; events of further kinds share one count. */
#define RATELOG_KINDS 256

struct ratelog;

/* Called for a kind whose window ended with count events held back. */
typedef void (*ratelog_report)(
    void *arg, const char *kind, unsigned count, double window);

struct ratelog *ratelog_new(double window);
void ratelog_free(struct ratelog *r);
/*
 * An event of this kind (a short text, e.g. "reason=x subnet=300:1::/64") at
 * now (seconds): 1 if it is to be logged in full, 0 if it was counted.
 */
int ratelog_hit(struct ratelog *r, const char *kind, double now);
/*
 * Reports every kind whose window has ended with events held back, and
 * forgets kinds quiet for a window. Returns the seconds until the next
 * window with held-back events ends, or -1 if there is none.
 */
double
ratelog_flush(struct ratelog *r, double now, ratelog_report report, void *arg);

#endif
