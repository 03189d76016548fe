/* Users in memory: lookups, contacts, and the presence Barev peers are shown. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "users.h"

static xmpp_ctx_t *ctx;

static int
setup(void **state)
{
	ctx = xmpp_ctx_new(NULL, NULL);
	return 0;
}

static int
teardown(void **state)
{
	xmpp_ctx_free(ctx);
	return 0;
}

static struct barev_jid
bj(const char *s)
{
	struct barev_jid j;
	const char *cause;

	assert_int_equal(barev_jid_parse(s, 0, &j, &cause), 0);
	return j;
}

/* Feeds one presence; returns whether the aggregate changed. */
static int
feed(struct user *u, const char *full, const char *xml)
{
	xmpp_stanza_t *st = xmpp_stanza_new_from_string(ctx, xml);
	const struct shown *now = NULL;
	int changed;

	assert_non_null(st);
	changed = user_presence(u, full, st, &now);
	if (changed)
		assert_ptr_equal(now, &u->sent);
	xmpp_stanza_release(st);
	return changed;
}

static void
expect_sent(const struct user *u, int available, enum barev_show show,
    const char *status)
{
	assert_int_equal(u->sent.available, available);
	assert_int_equal(u->sent.show, show);
	if (status == NULL)
		assert_null(u->sent.status);
	else
		assert_string_equal(u->sent.status, status);
}

static void
test_lookup(void **state)
{
	struct users *us = users_new();
	struct barev_jid a = bj("Alice@200:aaaa::1"), b = bj("bob@200:aaaa::1");
	struct barev_jid a_lower = bj("alice@200:aaaa::1");
	struct barev_jid a_other = bj("alice@200:aaaa::2");
	struct user *ua, *ub;

	ua = users_add(us, "alice@example.org", &a);
	ub = users_add(us, "bob@example.org", &b);
	assert_non_null(ua);
	assert_non_null(ub);
	/* One nick per address, whatever its case; one identity per JID. */
	assert_null(users_add(us, "carol@example.org", &a_lower));
	assert_null(users_add(us, "alice@example.org", &a_other));
	assert_ptr_equal(users_get(us, "alice@example.org"), ua);
	assert_null(users_get(us, "nobody@example.org"));
	assert_ptr_equal(users_by_id(us, &a_lower), ua);
	assert_null(users_by_id(us, &a_other));
	assert_int_equal(users_count_at(us, &a.addr), 2);
	assert_int_equal(users_count_at(us, &a_other.addr), 0);
	assert_null(users_only_at(us, &a.addr));
	/* A new identity re-keys the user; a taken one is refused. */
	assert_int_equal(users_set_id(us, ua, &b), -1);
	assert_int_equal(users_set_id(us, ua, &a_other), 0);
	assert_ptr_equal(users_by_id(us, &a_other), ua);
	assert_null(users_by_id(us, &a));
	assert_int_equal(users_set_id(us, ua, &a), 0);
	users_remove(us, ua);
	assert_ptr_equal(users_only_at(us, &a.addr), ub);
	assert_null(users_get(us, "alice@example.org"));
	assert_null(users_by_id(us, &a));
	assert_int_equal(users_count_at(us, &a.addr), 1);
	users_free(us);
}

static void
test_contacts(void **state)
{
	struct users *us = users_new();
	struct barev_jid me = bj("alice@200:aaaa::1");
	struct barev_jid inky = bj("Inky@201:af82::1");
	struct barev_jid inky_lower = bj("inky@201:af82::1");
	struct user *u = users_add(us, "alice@example.org", &me);
	struct contact *c;

	c = user_contact_add(u, &inky, 1337);
	assert_int_equal(c->port, 1337);
	assert_string_equal(c->who.nick, "Inky");
	assert_ptr_equal(user_contact_add(u, &inky_lower, 5299), c);
	assert_int_equal(c->port, 1337);
	assert_ptr_equal(user_contact(u, &inky_lower), c);
	user_contact_remove(u, c);
	assert_null(user_contact(u, &inky));
	users_free(us);
}

static void
test_presence_mapping(void **state)
{
	struct users *us = users_new();
	struct barev_jid me = bj("alice@200:aaaa::1");
	struct user *u = users_add(us, "alice@example.org", &me);

	assert_false(user_online(u));
	assert_true(feed(u, "alice@example.org/a", "<presence/>"));
	assert_true(user_online(u));
	expect_sent(u, 1, BSHOW_NONE, NULL);
	/* The reference client shows xa as available: it becomes away. */
	assert_true(feed(u, "alice@example.org/a",
	    "<presence><show>xa</show><status>gone</status></presence>"));
	expect_sent(u, 1, BSHOW_AWAY, "gone");
	/* chat is plain available there. */
	assert_true(feed(u, "alice@example.org/a",
	    "<presence><show>chat</show></presence>"));
	expect_sent(u, 1, BSHOW_NONE, NULL);
	assert_true(feed(u, "alice@example.org/a",
	    "<presence><show>dnd</show><status>busy</status></presence>"));
	expect_sent(u, 1, BSHOW_DND, "busy");
	/* The same again: nothing to tell peers. */
	assert_false(feed(u, "alice@example.org/a",
	    "<presence><show>dnd</show><status>busy</status></presence>"));
	/* A status is cleaned like a body: DEL would deafen the plugin. */
	assert_false(feed(u, "alice@example.org/a",
	    "<presence><show>dnd</show><status>bu\x7fsy</status></presence>"));
	expect_sent(u, 1, BSHOW_DND, "busy");
	/* And bounded, cut between characters. */
	{
		char pres[4096];

		snprintf(pres, sizeof(pres),
		    "<presence><status>%01022d\xe2\x98\x83\xe2\x98\x83"
		    "</status></presence>",
		    0);
		assert_true(feed(u, "alice@example.org/a", pres));
		assert_int_equal(strlen(u->sent.status), 1022);
		assert_true(feed(u, "alice@example.org/a",
		    "<presence><show>dnd</show><status>busy</status></"
		    "presence>"));
	}
	/* Subscription handling, probes and errors are not presence. */
	assert_false(
	    feed(u, "alice@example.org/a", "<presence type='subscribe'/>"));
	assert_false(
	    feed(u, "alice@example.org/a", "<presence type='probe'/>"));
	assert_false(
	    feed(u, "alice@example.org/a", "<presence type='error'/>"));
	assert_true(
	    feed(u, "alice@example.org/a", "<presence type='unavailable'/>"));
	assert_false(user_online(u));
	expect_sent(u, 0, BSHOW_NONE, NULL);
	users_free(us);
}

/* The link to the server went down: nothing it said of resources holds. */
static void
test_forget_resources(void **state)
{
	struct users *us = users_new();
	struct barev_jid me = bj("alice@200:aaaa::1");
	struct user *u = users_add(us, "alice@example.org", &me);

	assert_false(user_forget_resources(u));
	assert_true(feed(u, "alice@example.org/a",
	    "<presence><show>away</show><status>out</status></presence>"));
	assert_true(feed(u, "alice@example.org/b", "<presence/>"));
	assert_true(user_forget_resources(u));
	assert_false(user_online(u));
	expect_sent(u, 0, BSHOW_NONE, NULL);
	/* Back: told again, though it is what peers were told before. */
	assert_true(feed(u, "alice@example.org/a",
	    "<presence><show>away</show><status>out</status></presence>"));
	expect_sent(u, 1, BSHOW_AWAY, "out");
	users_free(us);
}

static void
test_presence_two_resources(void **state)
{
	struct users *us = users_new();
	struct barev_jid me = bj("alice@200:aaaa::1");
	struct user *u = users_add(us, "alice@example.org", &me);

	assert_true(feed(u, "alice@example.org/desk",
	    "<presence><status>at my desk</status></presence>"));
	/* A less available second device changes nothing peers see. */
	assert_false(feed(u, "alice@example.org/phone",
	    "<presence><show>away</show><status>phone</status></presence>"));
	assert_false(feed(u, "alice@example.org/phone",
	    "<presence><show>xa</show></presence>"));
	expect_sent(u, 1, BSHOW_NONE, "at my desk");
	/* The best one going away hands over to the other. */
	assert_true(feed(
	    u, "alice@example.org/desk", "<presence type='unavailable'/>"));
	expect_sent(u, 1, BSHOW_AWAY, NULL);
	/* Equal availability: the higher priority wins. */
	assert_true(feed(u, "alice@example.org/desk",
	    "<presence><show>xa</show><priority>5</priority>"
	    "<status>desk</status></presence>"));
	expect_sent(u, 1, BSHOW_AWAY, "desk");
	assert_false(feed(u, "alice@example.org/phone",
	    "<presence><show>xa</show><priority>-1</priority></presence>"));
	assert_true(feed(u, "alice@example.org/phone",
	    "<presence><show>xa</show><priority>9</priority>"
	    "<status>phone</status></presence>"));
	expect_sent(u, 1, BSHOW_AWAY, "phone");
	assert_true(feed(
	    u, "alice@example.org/phone", "<presence type='unavailable'/>"));
	assert_true(feed(
	    u, "alice@example.org/desk", "<presence type='unavailable'/>"));
	expect_sent(u, 0, BSHOW_NONE, NULL);
	users_free(us);
}

/* A directed unavailable hides one resource from one contact only. */
static void
test_directed_unavailable(void **state)
{
	struct users *us = users_new();
	struct barev_jid me = bj("alice@200:aaaa::1");
	struct user *u = users_add(us, "alice@example.org", &me);
	struct contact *c1 = user_contact_add(u, &me, 0);
	struct barev_jid other = bj("bob@201::1");
	struct contact *c2 = user_contact_add(u, &other, 0);
	struct shown v;

	c1->sub_from = c2->sub_from = 1;
	assert_true(feed(
	    u, "alice@example.org/a", "<presence><show>dnd</show></presence>"));
	assert_true(feed(u, "alice@example.org/b", "<presence/>"));
	contact_hide(c1, "alice@example.org/b");
	/* c1 sees only resource a (dnd); c2 still sees b (available). */
	user_shown_to(u, c1, &v);
	assert_int_equal(v.available, 1);
	assert_int_equal(v.show, BSHOW_DND);
	shown_clear(&v);
	user_shown_to(u, c2, &v);
	assert_int_equal(v.available, 1);
	assert_int_equal(v.show, BSHOW_NONE);
	shown_clear(&v);
	assert_false(user_hidden_from_all(u, "alice@example.org/b"));
	/* Hidden from everyone it shares presence with: it has left. */
	contact_hide(c2, "alice@example.org/b");
	assert_true(user_hidden_from_all(u, "alice@example.org/b"));
	assert_false(user_hidden_from_all(u, "alice@example.org/nobody"));
	/* A directed available undoes it. */
	assert_true(contact_unhide(c2, "alice@example.org/b"));
	assert_false(contact_unhide(c2, "alice@example.org/b"));
	/* Both resources hidden from c1: c1 sees the user unavailable. */
	contact_hide(c1, "alice@example.org/a");
	user_shown_to(u, c1, &v);
	assert_int_equal(v.available, 0);
	shown_clear(&v);
	/* A resource that leaves is forgotten by every contact (b stays, so
	 * peers are told nothing). */
	assert_false(
	    feed(u, "alice@example.org/a", "<presence type='unavailable'/>"));
	assert_false(contact_unhide(c1, "alice@example.org/a"));
	users_free(us);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_contacts),
		cmocka_unit_test(test_presence_mapping),
		cmocka_unit_test(test_forget_resources),
		cmocka_unit_test(test_presence_two_resources),
		cmocka_unit_test(test_directed_unavailable),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
