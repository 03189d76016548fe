#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ratelog.h"
#include "xmalloc.h"

#define KIND_MAX 96
#define OTHER "other kinds"

struct kind {
	char name[KIND_MAX]; /* "" for a free slot */
	double start; /* when its window began */
	unsigned held; /* events counted, not logged, in this window */
};

struct ratelog {
	double window;
	size_t used;
	struct kind slots[RATELOG_KINDS];
	struct kind other; /* every kind that found no slot */
};

struct ratelog *
ratelog_new(double window)
{
	struct ratelog *r = xcalloc(1, sizeof(*r));

	r->window = window;
	strcpy(r->other.name, OTHER);
	return r;
}

void
ratelog_free(struct ratelog *r)
{
	free(r);
}

static uint32_t
hash(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* The kind's slot (open addressing), a free one to take, or &r->other. */
static struct kind *
find(struct ratelog *r, const char *name)
{
	size_t i, n, at = hash(name) % RATELOG_KINDS;
	struct kind *k;

	for (n = 0; n < RATELOG_KINDS; n++) {
		i = (at + n) % RATELOG_KINDS;
		k = &r->slots[i];
		if (k->name[0] == '\0' ||
		    strncmp(k->name, name, KIND_MAX - 1) == 0)
			return k;
	}
	return &r->other;
}

int
ratelog_hit(struct ratelog *r, const char *name, double now)
{
	struct kind *k = find(r, name);

	if (k->name[0] == '\0') {
		/* A slot is taken only while another stays free for lookups. */
		if (r->used + 1 >= RATELOG_KINDS)
			k = &r->other;
		else {
			strncpy(k->name, name, KIND_MAX - 1);
			k->start = now;
			r->used++;
			return 1;
		}
	}
	if (now - k->start >= r->window && k->held == 0) {
		k->start = now;
		return 1;
	}
	k->held++;
	return 0;
}

/* Reports k if its window is over; returns when its window ends, or -1. */
static double
flush_one(struct ratelog *r, struct kind *k, double now, ratelog_report report,
    void *arg)
{
	if (k->held == 0)
		return -1;
	if (now - k->start < r->window)
		return k->start + r->window - now;
	report(arg, k->name, k->held, now - k->start);
	k->held = 0;
	k->start = now;
	return -1;
}

double
ratelog_flush(struct ratelog *r, double now, ratelog_report report, void *arg)
{
	struct kind *k, kept[RATELOG_KINDS];
	size_t i, nkept = 0;
	double next = -1, t;

	for (i = 0; i < RATELOG_KINDS; i++) {
		k = &r->slots[i];
		if (k->name[0] == '\0')
			continue;
		t = flush_one(r, k, now, report, arg);
		if (t >= 0 && (next < 0 || t < next))
			next = t;
		if (k->held > 0 || now - k->start < r->window)
			kept[nkept++] = *k;
	}
	t = flush_one(r, &r->other, now, report, arg);
	if (t >= 0 && (next < 0 || t < next))
		next = t;
	/* Open addressing cannot delete in place: put back what stays. */
	if (nkept != r->used) {
		memset(r->slots, 0, sizeof(r->slots));
		r->used = 0;
		for (i = 0; i < nkept; i++) {
			k = find(r, kept[i].name);
			*k = kept[i];
			r->used++;
		}
	}
	return next;
}
