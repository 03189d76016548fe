/* Summaries of repeated log events: what is logged in full, what is counted, what is reported. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ratelog.h"

struct reports {
	unsigned n;
	char kind[8][96];
	unsigned count[8];
};

static void
collect(void *arg, const char *kind, unsigned count, double window)
{
	struct reports *r = arg;

	assert_true(window >= 10.0);
	if (r->n < 8) {
		snprintf(r->kind[r->n], sizeof(r->kind[0]), "%s", kind);
		r->count[r->n] = count;
	}
	r->n++;
}

/* A flood of one kind: one line in full, one summary with the count. */
static void
test_flood_is_one_line_and_a_count(void **state)
{
	struct ratelog *r = ratelog_new(10.0);
	struct reports rep = { 0 };
	unsigned i, logged = 0;

	for (i = 0; i < 2000; i++)
		logged += ratelog_hit(
		    r, "reason=x subnet=300:1::/64", 100.0 + i / 1000.0);
	assert_int_equal(logged, 1);
	/* Not yet: the window is still open, and it says when it ends. */
	assert_true(ratelog_flush(r, 105.0, collect, &rep) > 4.9);
	assert_int_equal(rep.n, 0);
	assert_true(ratelog_flush(r, 110.5, collect, &rep) < 0);
	assert_int_equal(rep.n, 1);
	assert_string_equal(rep.kind[0], "reason=x subnet=300:1::/64");
	assert_int_equal(rep.count[0], 1999);
	/* Reported once only. */
	ratelog_flush(r, 130.0, collect, &rep);
	assert_int_equal(rep.n, 1);
	/* After a quiet window the next one is logged in full again. */
	assert_int_equal(
	    ratelog_hit(r, "reason=x subnet=300:1::/64", 140.0), 1);
	ratelog_free(r);
}

/* Kinds are counted apart; more kinds than slots share one count. */
static void
test_kinds_apart_and_bounded(void **state)
{
	struct ratelog *r = ratelog_new(10.0);
	struct reports rep = { 0 };
	char kind[64];
	unsigned i, logged = 0;

	assert_int_equal(ratelog_hit(r, "reason=a subnet=300:1::/64", 0.0), 1);
	assert_int_equal(ratelog_hit(r, "reason=b subnet=300:1::/64", 0.0), 1);
	assert_int_equal(ratelog_hit(r, "reason=a subnet=300:2::/64", 0.0), 1);
	assert_int_equal(ratelog_hit(r, "reason=a subnet=300:1::/64", 0.1), 0);
	/* A node that makes every refusal a kind of its own. */
	for (i = 0; i < 10 * RATELOG_KINDS; i++) {
		snprintf(
		    kind, sizeof(kind), "reason=a subnet=300:%x::/64", i + 3);
		logged += ratelog_hit(r, kind, 1.0);
	}
	assert_true(logged <= RATELOG_KINDS);
	ratelog_flush(r, 12.0, collect, &rep);
	/* The held-back one of the first kind and the shared rest. */
	assert_int_equal(rep.n, 2);
	assert_true(strcmp(rep.kind[0], "reason=a subnet=300:1::/64") == 0 ||
	    strcmp(rep.kind[1], "reason=a subnet=300:1::/64") == 0);
	/* Quiet kinds are forgotten, and the table works after it. */
	ratelog_flush(r, 40.0, collect, &rep);
	assert_int_equal(ratelog_hit(r, "reason=b subnet=300:1::/64", 41.0), 1);
	assert_int_equal(ratelog_hit(r, "reason=b subnet=300:1::/64", 41.5), 0);
	ratelog_free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flood_is_one_line_and_a_count),
		cmocka_unit_test(test_kinds_apart_and_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
