/* Unit tests of src/store.c: a fresh database file per test, exact values back. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "jid.h"
#include "store.h"
#include "xmalloc.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#define GW "201:1111::1" /* the gateway's Barev address */
#define ROMEO "romeo@example.net"
#define JULIET "juliet@example.net"

struct fx {
	char dir[64];
	char path[128];
	struct store *st;
};

static int
setup(void **state)
{
	struct fx *fx = xcalloc(1, sizeof(*fx));

	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_store.XXXXXX");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof(fx->path), "%s/state.db", fx->dir);
	*state = fx;
	return 0;
}

/* Close the store and remove the directory with whatever SQLite left in it. */
static int
teardown(void **state)
{
	struct fx *fx = *state;
	struct dirent *de;
	char path[512];
	DIR *d;

	store_close(fx->st);
	if ((d = opendir(fx->dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(
			    path, sizeof(path), "%s/%s", fx->dir, de->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static struct store *
open_ok(struct fx *fx)
{
	char *cause = NULL;

	fx->st = store_open(fx->path, &cause);
	if (fx->st == NULL)
		fail_msg("store_open: %s", cause);
	assert_null(cause);
	return fx->st;
}

static struct store *
reopen(struct fx *fx)
{
	store_close(fx->st);
	fx->st = NULL;
	return open_ok(fx);
}

/* store_open must fail; returns the cause (free it). */
static char *
open_bad(struct fx *fx)
{
	char *cause = NULL;

	assert_null(store_open(fx->path, &cause));
	assert_non_null(cause);
	assert_null(strchr(cause, '\n'));
	return cause;
}

static struct in6_addr
A(const char *s) {
	struct in6_addr a;

	assert_int_equal(addr_parse(s, &a), 0);
	return a;
}

static struct barev_jid
B(const char *s) {
	struct barev_jid j;
	const char *cause;

	assert_int_equal(barev_jid_parse(s, BAREV_ANY_ADDR, &j, &cause), 0);
	return j;
}

static void
assert_addr(const struct in6_addr *a, const char *want)
{
	char buf[ADDR_STRLEN];

	assert_string_equal(addr_format(a, buf), want);
}

/* --- a second connection that looks at the file directly ---------------- */

static sqlite3 *
raw_open(const char *path)
{
	sqlite3 *db;

	assert_int_equal(sqlite3_open_v2(path, &db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
	    SQLITE_OK);
	return db;
}

static void
raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = raw_open(path);

	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static int64_t
raw_int(const char *path, const char *sql)
{
	sqlite3 *db = raw_open(path);
	sqlite3_stmt *s;
	int64_t v;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
	return v;
}

static void
raw_text(const char *path, const char *sql, char *buf, size_t size)
{
	sqlite3 *db = raw_open(path);
	sqlite3_stmt *s;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	snprintf(buf, size, "%s", (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/* --- collectors for the walks (copies: what fn gets dies with the call) -- */

struct got {
	char user_jid[STORE_JID_MAX + 1];
	char nick[BAREV_NICK_MAX + 1];
	char addr[ADDR_STRLEN];
	unsigned short port;
	int sub_to;
	int sub_from;
	int64_t created;
	int64_t last_asked;
	/* messages */
	int64_t id;
	int dir;
	char sender[64];
	char stanza_id[64]; /* "(null)" for NULL */
	char body[64];
	char xhtml[64]; /* "(null)" for NULL */
	int receipt;
	int64_t expires;
};

struct gots {
	int n;
	int stop_at; /* return 42 from the call that makes n this */
	struct got g[16];
};

static struct got *
got_next(struct gots *gs)
{
	assert_true(gs->n < (int)nitems(gs->g));
	return &gs->g[gs->n++];
}

static int
got_ret(struct gots *gs)
{
	return gs->stop_at != 0 && gs->n == gs->stop_at ? 42 : 0;
}

static void
got_barev(struct got *g, const struct barev_jid *j)
{
	snprintf(g->nick, sizeof(g->nick), "%s", j->nick);
	addr_format(&j->addr, g->addr);
}

static int
got_user(void *arg, const struct store_user *u)
{
	struct got *g = got_next(arg);

	snprintf(g->user_jid, sizeof(g->user_jid), "%s", u->jid);
	snprintf(g->nick, sizeof(g->nick), "%s", u->nick);
	addr_format(&u->addr, g->addr);
	g->created = u->created;
	return got_ret(arg);
}

static int
got_contact(void *arg, const struct store_contact *c)
{
	struct got *g = got_next(arg);

	got_barev(g, &c->who);
	g->port = c->port;
	g->sub_to = c->sub_to;
	g->sub_from = c->sub_from;
	return got_ret(arg);
}

static int
got_contact_at(void *arg, const char *user_jid, const struct store_contact *c)
{
	struct gots *gs = arg;

	got_contact(arg, c);
	snprintf(gs->g[gs->n - 1].user_jid, sizeof(gs->g[0].user_jid), "%s",
	    user_jid);
	return got_ret(arg);
}

static int
got_pending(void *arg, const char *user_jid, const struct barev_jid *who,
    int64_t created, int64_t last_asked)
{
	struct got *g = got_next(arg);

	snprintf(g->user_jid, sizeof(g->user_jid), "%s", user_jid);
	got_barev(g, who);
	g->created = created;
	g->last_asked = last_asked;
	return got_ret(arg);
}

static int
got_msg(void *arg, const struct store_msg *m)
{
	struct got *g = got_next(arg);

	g->id = m->id;
	g->dir = m->dir;
	snprintf(g->user_jid, sizeof(g->user_jid), "%s", m->user_jid);
	got_barev(g, &m->to);
	snprintf(g->sender, sizeof(g->sender), "%s", m->sender);
	snprintf(g->stanza_id, sizeof(g->stanza_id), "%s",
	    m->stanza_id ? m->stanza_id : "(null)");
	snprintf(g->body, sizeof(g->body), "%s", m->body);
	snprintf(
	    g->xhtml, sizeof(g->xhtml), "%s", m->xhtml ? m->xhtml : "(null)");
	g->receipt = m->receipt;
	g->created = m->created;
	g->expires = m->expires;
	return got_ret(arg);
}

/* --- fixtures of data --------------------------------------------------- */

static void
add_user(struct store *st, const char *jid, const char *nick)
{
	struct in6_addr gw = A(GW);
	const char *cause = NULL;

	if (store_user_add(st, jid, nick, &gw, &cause) != 0)
		fail_msg("store_user_add %s: %s", jid, cause);
}

static void
put_contact(struct store *st, const char *user, const char *who,
    unsigned short port, int sub_to, int sub_from)
{
	struct store_contact c;

	memset(&c, 0, sizeof(c));
	c.who = B(who);
	c.port = port;
	c.sub_to = sub_to;
	c.sub_from = sub_from;
	assert_int_equal(store_contact_put(st, user, &c), 0);
}

static int64_t
add_msg(struct store *st, const char *user, const char *to, const char *body,
    int64_t expires)
{
	struct store_msg m;
	int64_t id;

	memset(&m, 0, sizeof(m));
	m.user_jid = user;
	m.to = B(to);
	m.sender = "romeo@example.net/orchard";
	m.body = body;
	m.created = 1000;
	m.expires = expires;
	id = store_msg_add(st, &m);
	assert_true(id > 0);
	return id;
}

/* --- tests -------------------------------------------------------------- */

static void
test_open_create(void **state)
{
	struct fx *fx = *state;
	struct gots gs = { 0 };
	struct stat sb;
	char mode[16];

	open_ok(fx);
	assert_int_equal(stat(fx->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(store_schema_version(), 3);
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), 3);
	assert_int_equal(
	    raw_int(fx->path, "PRAGMA application_id"), 0x42617276);
	raw_text(fx->path, "PRAGMA journal_mode", mode, sizeof(mode));
	assert_string_equal(mode, "wal");
	assert_int_equal(raw_int(fx->path,
			     "SELECT count(*) FROM sqlite_master"
			     " WHERE type = 'table' AND name IN"
			     " ('users', 'contacts', 'pending', 'queue')"),
	    4);
	assert_int_equal(store_users_each(fx->st, got_user, &gs), 0);
	assert_int_equal(gs.n, 0);
	assert_int_equal(store_msg_count(fx->st), 0);

	/* Opening again changes nothing. */
	reopen(fx);
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), 3);
	store_close(NULL);
}

static void
test_reopen_keeps_everything(void **state)
{
	struct fx *fx = *state;
	struct store_msg m;
	struct store_user u;
	struct gots gs = { 0 };
	int64_t id[3];
	time_t now = time(NULL);

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	add_user(fx->st, JULIET, "Blinky");
	put_contact(fx->st, ROMEO, "Pinky@201:af82::1", 5300, 1, 0);
	put_contact(fx->st, ROMEO, "CLYDE@202::2", 0, 1, 1);
	/* The schema refuses what the C types let through: an empty nick. */
	memset(&m.to, 0, sizeof(m.to));
	assert_int_equal(store_pending_put(fx->st, JULIET, &m.to, 1), -1);
	m.to = B("Sue@203::3");
	assert_int_equal(store_pending_put(fx->st, JULIET, &m.to, 1000), 0);
	memset(&m, 0, sizeof(m));
	m.user_jid = ROMEO;
	m.to = B("Pinky@201:af82::1");
	m.sender = "romeo@example.net/orchard";
	m.stanza_id = "a1";
	m.body = "one";
	m.receipt = 1;
	m.created = 10;
	id[0] = store_msg_add(fx->st, &m);
	m.stanza_id = NULL;
	m.body = "two";
	m.xhtml = "<p>two</p>";
	m.receipt = 0;
	m.created = 11;
	m.expires = 100;
	id[1] = store_msg_add(fx->st, &m);
	m.xhtml = NULL;
	m.body = "three";
	m.created = 12;
	m.expires = 200;
	id[2] = store_msg_add(fx->st, &m);
	assert_true(id[0] > 0 && id[0] < id[1] && id[1] < id[2]);
	add_msg(fx->st, ROMEO, "CLYDE@202::2", "x", 0);

	reopen(fx);

	assert_int_equal(store_user_get(fx->st, ROMEO, &u), 0);
	assert_string_equal(u.jid, ROMEO);
	assert_string_equal(u.nick, "Inky");
	assert_addr(&u.addr, GW);
	assert_true(u.created >= now - 5 && u.created <= now + 5);
	assert_int_equal(store_users_each(fx->st, got_user, &gs), 0);
	assert_int_equal(gs.n, 2);
	assert_string_equal(gs.g[0].user_jid, JULIET); /* JID order */
	assert_string_equal(gs.g[0].nick, "Blinky");
	assert_string_equal(gs.g[1].user_jid, ROMEO);

	/* Contacts keep nick case, port and subscriptions, by nick ignoring case. */
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(
	    store_contacts_each(fx->st, ROMEO, got_contact, &gs), 0);
	assert_int_equal(gs.n, 2);
	assert_string_equal(gs.g[0].nick, "CLYDE");
	assert_string_equal(gs.g[0].addr, "202::2");
	assert_int_equal(gs.g[0].port, 0);
	assert_int_equal(gs.g[0].sub_to, 1);
	assert_int_equal(gs.g[0].sub_from, 1);
	assert_string_equal(gs.g[1].nick, "Pinky");
	assert_string_equal(gs.g[1].addr, "201:af82::1");
	assert_int_equal(gs.g[1].port, 5300);
	assert_int_equal(gs.g[1].sub_to, 1);
	assert_int_equal(gs.g[1].sub_from, 0);

	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_pending_each(fx->st, 0, got_pending, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_string_equal(gs.g[0].user_jid, JULIET);
	assert_string_equal(gs.g[0].nick, "Sue");
	assert_string_equal(gs.g[0].addr, "203::3");
	assert_int_equal(gs.g[0].created, 1000);
	assert_int_equal(gs.g[0].last_asked, 1000);

	/* Only what comes after a given id: what a pipe has not had yet. */
	memset(&gs, 0, sizeof(gs));
	m.to = B("Pinky@201:af82::1");
	assert_int_equal(
	    store_msg_each_after(fx->st, ROMEO, &m.to, id[0], got_msg, &gs), 0);
	assert_int_equal(gs.n, 2);
	assert_int_equal(gs.g[0].id, id[1]);
	assert_int_equal(gs.g[1].id, id[2]);

	memset(&gs, 0, sizeof(gs));
	assert_int_equal(
	    store_msg_each_for(fx->st, ROMEO, &m.to, got_msg, &gs), 0);
	assert_int_equal(gs.n, 3);
	assert_int_equal(gs.g[0].id, id[0]);
	assert_int_equal(gs.g[0].dir, STORE_TO_BAREV);
	assert_string_equal(gs.g[0].user_jid, ROMEO);
	assert_string_equal(gs.g[0].nick, "Pinky");
	assert_string_equal(gs.g[0].addr, "201:af82::1");
	assert_string_equal(gs.g[0].sender, "romeo@example.net/orchard");
	assert_string_equal(gs.g[0].stanza_id, "a1");
	assert_string_equal(gs.g[0].body, "one");
	assert_string_equal(gs.g[0].xhtml, "(null)");
	assert_int_equal(gs.g[0].receipt, 1);
	assert_int_equal(gs.g[0].created, 10);
	assert_int_equal(gs.g[0].expires, 0);
	assert_int_equal(gs.g[1].id, id[1]);
	assert_string_equal(gs.g[1].stanza_id, "(null)");
	assert_string_equal(gs.g[1].body, "two");
	assert_string_equal(gs.g[1].xhtml, "<p>two</p>");
	assert_int_equal(gs.g[1].receipt, 0);
	assert_int_equal(gs.g[1].created, 11);
	assert_int_equal(gs.g[1].expires, 100);
	assert_int_equal(gs.g[2].id, id[2]);
	assert_string_equal(gs.g[2].body, "three");
	assert_int_equal(gs.g[2].expires, 200);
	assert_int_equal(store_msg_count(fx->st), 4);
}

static void
test_empty_file_migrates(void **state)
{
	struct fx *fx = *state;
	struct store_user u;

	write_file(fx->path, "");
	open_ok(fx);
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), 3);
	add_user(fx->st, ROMEO, "Inky");
	assert_int_equal(store_user_get(fx->st, ROMEO, &u), 0);
}

static void
test_newer_version_refused(void **state)
{
	struct fx *fx = *state;
	char *cause, want[256];

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	store_close(fx->st);
	fx->st = NULL;
	raw_exec(fx->path, "PRAGMA user_version = 4");

	cause = open_bad(fx);
	snprintf(want, sizeof(want),
	    "%s: schema version 4 is newer than the 3 "
	    "this barev-gateway knows; run a newer barev-gateway",
	    fx->path);
	assert_string_equal(cause, want);
	free(cause);
	/* Refused untouched: the version and the data are still there. */
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), 4);
	assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM users"), 1);
}

static void
test_not_a_database(void **state)
{
	struct fx *fx = *state;
	char *cause, want[256];
	struct stat sb;
	static const char text[] =
	    "storage.path = \"/var/lib/x\";\n"
	    "this is a configuration file, not an SQLite database\n";

	write_file(fx->path, text);
	cause = open_bad(fx);
	snprintf(want, sizeof(want), "%s: file is not a database", fx->path);
	assert_string_equal(cause, want);
	free(cause);
	assert_int_equal(stat(fx->path, &sb), 0);
	assert_int_equal(sb.st_size, sizeof(text) - 1);

	/* A real database of someone else is not taken over either. */
	unlink(fx->path);
	raw_exec(fx->path, "CREATE TABLE moz_places (id INTEGER);");
	cause = open_bad(fx);
	snprintf(want, sizeof(want),
	    "%s: an SQLite database of another "
	    "program (application_id 0, user_version 0), not "
	    "barev-gateway's",
	    fx->path);
	assert_string_equal(cause, want);
	free(cause);
	assert_int_equal(
	    raw_int(fx->path, "SELECT count(*) FROM sqlite_master"), 1);

	/* A directory that does not exist. */
	snprintf(fx->path, sizeof(fx->path), "%s/no/state.db", fx->dir);
	cause = open_bad(fx);
	snprintf(want, sizeof(want), "%s: No such file or directory", fx->path);
	assert_string_equal(cause, want);
	free(cause);
}

static void
test_nick_unique_per_address(void **state)
{
	struct fx *fx = *state;
	struct in6_addr gw = A(GW), other = A("202:2222::2");
	struct store_user u;
	const char *cause;

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");

	cause = NULL;
	assert_int_equal(
	    store_user_add(fx->st, JULIET, "iNKY", &gw, &cause), -1);
	assert_string_equal(cause, "nick taken");
	cause = NULL;
	assert_int_equal(
	    store_user_add(fx->st, ROMEO, "Other", &gw, &cause), -1);
	assert_string_equal(cause, "already registered");
	/* The same nick at another address is another person. */
	assert_int_equal(
	    store_user_add(fx->st, JULIET, "iNKY", &other, &cause), 0);

	assert_int_equal(store_user_by_nick(fx->st, "INKY", &gw, &u), 0);
	assert_string_equal(u.jid, ROMEO);
	assert_string_equal(u.nick, "Inky");
	assert_int_equal(store_user_by_nick(fx->st, "inky", &other, &u), 0);
	assert_string_equal(u.jid, JULIET);
	assert_string_equal(u.nick, "iNKY");
	assert_addr(&u.addr, "202:2222::2");
	assert_int_equal(store_user_by_nick(fx->st, "Pinky", &gw, &u), 1);
	assert_int_equal(store_user_get(fx->st, "nobody@example.net", &u), 1);
	assert_int_equal(store_user_count_at(fx->st, &gw), 1);
	assert_int_equal(store_user_count_at(fx->st, &other), 1);
	add_user(fx->st, "mercutio@example.net", "Mercutio");
	assert_int_equal(store_user_count_at(fx->st, &gw), 2);
	other = A("203::3");
	assert_int_equal(store_user_count_at(fx->st, &other), 0);

	/* ASCII case only: non-ASCII nicks differing in case are two nicks. */
	add_user(fx->st, "a@example.net", "\xc3\x89mile"); /* Émile */
	add_user(fx->st, "b@example.net", "\xc3\xa9mile"); /* émile */
}

static void
test_user_add_bad_input(void **state)
{
	struct fx *fx = *state;
	struct in6_addr gw = A(GW);
	static const struct {
		const char *jid;
		const char *nick;
		const char *cause;
	} bad[] = {
		{ "Romeo@example.net", "Inky",
		    "the JID must be in lower case" },
		{ ROMEO "/orchard", "Inky",
		    "a bare JID is needed, without a resource" },
		{ "", "Inky", "the JID is empty" },
		{ ROMEO, "", "the nick before '@' is empty" },
		{ ROMEO, "in ky",
		    "the nick contains a space or a control character" },
		{ ROMEO, "inky@x",
		    "the nick must not contain any of \" & ' / : < > @ \\ %" },
		{ ROMEO,
		    "0123456789012345678901234567890123456789012345678901234567"
		    "890123x",
		    "the nick is longer than 64 bytes" },
	};
	const char *cause;
	size_t i;

	open_ok(fx);
	for (i = 0; i < nitems(bad); i++) {
		cause = NULL;
		assert_int_equal(store_user_add(fx->st, bad[i].jid, bad[i].nick,
				     &gw, &cause),
		    -1);
		assert_string_equal(cause, bad[i].cause);
	}
	assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM users"), 0);
	/* 64 bytes is allowed. */
	add_user(fx->st, ROMEO,
	    "0123456789012345678901234567890123456789012345678901234567890123");
}

static void
test_user_del_cascades(void **state)
{
	struct fx *fx = *state;
	struct barev_jid sue = B("Sue@203::3");
	struct store_contact c;
	struct gots gs = { 0 };

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	add_user(fx->st, JULIET, "Blinky");
	put_contact(fx->st, ROMEO, "Pinky@201:af82::1", 0, 1, 1);
	put_contact(fx->st, JULIET, "Pinky@201:af82::1", 0, 1, 1);
	assert_int_equal(store_pending_put(fx->st, ROMEO, &sue, 5), 0);
	assert_int_equal(store_pending_put(fx->st, JULIET, &sue, 6), 0);
	add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "to go", 0);
	add_msg(fx->st, JULIET, "Pinky@201:af82::1", "to stay", 0);

	assert_int_equal(store_user_del(fx->st, ROMEO), 0);
	assert_int_equal(store_user_del(fx->st, ROMEO), 1);
	assert_int_equal(
	    raw_int(fx->path,
		"SELECT count(*) FROM contacts WHERE user_jid = '" ROMEO "'"),
	    0);
	assert_int_equal(
	    store_contacts_each(fx->st, ROMEO, got_contact, &gs), 0);
	assert_int_equal(gs.n, 0);
	assert_int_equal(store_pending_each(fx->st, 0, got_pending, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_string_equal(gs.g[0].user_jid, JULIET);
	assert_int_equal(store_msg_count(fx->st), 1);
	memset(&gs, 0, sizeof(gs));
	c.who = B("Pinky@201:af82::1");
	assert_int_equal(
	    store_msg_each_for(fx->st, JULIET, &c.who, got_msg, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_string_equal(gs.g[0].body, "to stay");
	assert_int_equal(store_contact_get(fx->st, JULIET, &c.who, &c), 0);

	/* Nothing can hang off a user that is not there. */
	c.who = B("Pinky@201:af82::1");
	assert_int_equal(store_contact_put(fx->st, ROMEO, &c), -1);
	assert_int_equal(store_pending_put(fx->st, ROMEO, &sue, 7), -1);
	{
		struct store_msg m;

		memset(&m, 0, sizeof(m));
		m.user_jid = ROMEO;
		m.to = c.who;
		m.sender = ROMEO "/x";
		m.body = "b";
		assert_int_equal(store_msg_add(fx->st, &m), -1);
	}
	assert_int_equal(store_msg_count(fx->st), 1);
}

static void
test_contact_put_updates(void **state)
{
	struct fx *fx = *state;
	struct store_contact c;
	struct barev_jid who;
	struct gots gs = { 0 };

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	put_contact(fx->st, ROMEO, "Pinky@201:af82::1", 0, 0, 0);
	/* Same contact in other case: one row, new case, port and subs. */
	put_contact(fx->st, ROMEO, "PINKY@201:af82::1", 5301, 1, 0);
	/* Same nick at another address: another contact. */
	put_contact(fx->st, ROMEO, "pinky@202::2", 0, 0, 1);
	assert_int_equal(
	    store_contacts_each(fx->st, ROMEO, got_contact, &gs), 0);
	assert_int_equal(gs.n, 2);
	assert_string_equal(gs.g[0].nick, "PINKY");
	assert_string_equal(gs.g[0].addr, "201:af82::1");
	assert_int_equal(gs.g[0].port, 5301);
	assert_int_equal(gs.g[0].sub_to, 1);
	assert_int_equal(gs.g[0].sub_from, 0);
	assert_string_equal(gs.g[1].nick, "pinky");
	assert_string_equal(gs.g[1].addr, "202::2");
	assert_int_equal(gs.g[1].sub_from, 1);

	who = B("pInKy@201:af82::1");
	assert_int_equal(store_contact_get(fx->st, ROMEO, &who, &c), 0);
	assert_string_equal(c.who.nick, "PINKY");
	assert_int_equal(c.port, 5301);
	/* Booleans are stored as 0/1 whatever non-zero was given. */
	c.sub_from = 7;
	assert_int_equal(store_contact_put(fx->st, ROMEO, &c), 0);
	assert_int_equal(store_contact_get(fx->st, ROMEO, &who, &c), 0);
	assert_int_equal(c.sub_from, 1);

	assert_int_equal(store_contact_get(fx->st, JULIET, &who, &c), 1);
	assert_int_equal(store_contact_del(fx->st, ROMEO, &who), 0);
	assert_int_equal(store_contact_del(fx->st, ROMEO, &who), 1);
	assert_int_equal(store_contact_get(fx->st, ROMEO, &who, &c), 1);
	who = B("Pinky@202::2");
	assert_int_equal(store_contact_get(fx->st, ROMEO, &who, &c), 0);
	assert_string_equal(c.who.nick, "pinky");
}

static void
test_contacts_at(void **state)
{
	struct fx *fx = *state;
	struct in6_addr p = A("201:af82::1"), r = A("204::4");
	struct gots gs = { 0 };

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	add_user(fx->st, JULIET, "Blinky");
	put_contact(fx->st, ROMEO, "Pinky@201:af82::1", 5300, 1, 1);
	put_contact(fx->st, ROMEO, "Clyde@202::2", 0, 1, 1);
	put_contact(fx->st, JULIET, "Sue@201:af82::1", 0, 0, 1);
	put_contact(fx->st, JULIET, "Pinky@201:af82::1", 0, 1, 0);

	assert_int_equal(store_contacts_at(fx->st, &p, got_contact_at, &gs), 0);
	assert_int_equal(gs.n, 3);
	assert_string_equal(gs.g[0].user_jid, JULIET);
	assert_string_equal(gs.g[0].nick, "Pinky");
	assert_int_equal(gs.g[0].sub_to, 1);
	assert_int_equal(gs.g[0].sub_from, 0);
	assert_string_equal(gs.g[1].user_jid, JULIET);
	assert_string_equal(gs.g[1].nick, "Sue");
	assert_string_equal(gs.g[2].user_jid, ROMEO);
	assert_string_equal(gs.g[2].nick, "Pinky");
	assert_string_equal(gs.g[2].addr, "201:af82::1");
	assert_int_equal(gs.g[2].port, 5300);

	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_contacts_at(fx->st, &r, got_contact_at, &gs), 0);
	assert_int_equal(gs.n, 0);
}

static void
test_pending(void **state)
{
	struct fx *fx = *state;
	struct barev_jid sue = B("Sue@203::3"), SUE = B("SUE@203::3");
	struct barev_jid bob = B("bob@204::4");
	struct gots gs = { 0 };

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	add_user(fx->st, JULIET, "Blinky");
	assert_int_equal(store_pending_put(fx->st, ROMEO, &sue, 1000), 0);
	assert_int_equal(store_pending_put(fx->st, JULIET, &bob, 1100), 0);
	/* Asking again keeps created, moves last_asked, takes the new case. */
	assert_int_equal(store_pending_put(fx->st, ROMEO, &SUE, 1500), 0);
	/* Oldest asked first: the order in which they expire. */
	assert_int_equal(store_pending_each(fx->st, 0, got_pending, &gs), 0);
	assert_int_equal(gs.n, 2);
	assert_string_equal(gs.g[0].user_jid, JULIET);
	assert_string_equal(gs.g[0].nick, "bob");
	assert_int_equal(gs.g[0].created, 1100);
	assert_string_equal(gs.g[1].user_jid, ROMEO);
	assert_string_equal(gs.g[1].nick, "SUE");
	assert_string_equal(gs.g[1].addr, "203::3");
	assert_int_equal(gs.g[1].created, 1000);
	assert_int_equal(gs.g[1].last_asked, 1500);
	/* Only live ones: asked after the time given. */
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_pending_each(fx->st, 1100, got_pending, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_string_equal(gs.g[0].nick, "SUE");

	assert_int_equal(store_pending_del(fx->st, ROMEO, &sue), 0);
	assert_int_equal(store_pending_del(fx->st, ROMEO, &sue), 1);
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_pending_each(fx->st, 0, got_pending, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_string_equal(gs.g[0].nick, "bob");
}

/* Requests expire: the rows asked at or before a time are deleted, counted. */
static void
test_pending_expire(void **state)
{
	struct fx *fx = *state;
	struct barev_jid sue = B("Sue@203::3"), bob = B("bob@204::4");
	struct barev_jid tim = B("Tim@204::5");
	struct gots gs = { 0 };

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	assert_int_equal(store_pending_put(fx->st, ROMEO, &sue, 1000), 0);
	assert_int_equal(store_pending_put(fx->st, ROMEO, &bob, 1100), 0);
	assert_int_equal(store_pending_put(fx->st, ROMEO, &tim, 1200), 0);
	assert_int_equal(store_pending_expire(fx->st, 999), 0);
	assert_int_equal(store_pending_expire(fx->st, 1100), 2);
	assert_int_equal(store_pending_expire(fx->st, 1100), 0);
	assert_int_equal(store_pending_each(fx->st, 0, got_pending, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_string_equal(gs.g[0].nick, "Tim");
	assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM pending"), 1);
}

static void
test_queue_order_across_reopen(void **state)
{
	struct fx *fx = *state;
	struct barev_jid pinky = B("pinky@201:af82::1"),
			 clyde = B("Clyde@202::2");
	struct store_msg m;
	struct gots gs = { 0 };
	int64_t id[6], inbound, fresh;
	int i;

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	add_user(fx->st, JULIET, "Blinky");
	/* Interleaved: two contacts of romeo, and juliet to the same pinky. */
	id[0] = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "p1", 0);
	id[1] = add_msg(fx->st, ROMEO, "Clyde@202::2", "c1", 0);
	id[2] = add_msg(fx->st, JULIET, "Pinky@201:af82::1", "j1", 0);
	id[3] = add_msg(fx->st, ROMEO, "PINKY@201:af82::1", "p2", 0);
	id[4] = add_msg(fx->st, ROMEO, "Pinky@201:af82::2", "other addr", 0);
	id[5] = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "p3", 0);
	for (i = 1; i < 6; i++)
		assert_true(id[i] > id[i - 1]);
	/* A message the other way is not for the pipe to pinky. */
	memset(&m, 0, sizeof(m));
	m.dir = STORE_TO_XMPP;
	m.user_jid = ROMEO;
	m.to = pinky;
	m.sender = "pinky@201:af82::1";
	m.body = "inbound";
	inbound = store_msg_add(fx->st, &m);
	assert_true(inbound > id[5]);

	for (i = 0; i < 2; i++) {
		memset(&gs, 0, sizeof(gs));
		assert_int_equal(
		    store_msg_each_for(fx->st, ROMEO, &pinky, got_msg, &gs), 0);
		assert_int_equal(gs.n, 3);
		assert_int_equal(gs.g[0].id, id[0]);
		assert_string_equal(gs.g[0].body, "p1");
		assert_string_equal(gs.g[0].nick, "Pinky");
		assert_int_equal(gs.g[1].id, id[3]);
		assert_string_equal(gs.g[1].body, "p2");
		assert_string_equal(gs.g[1].nick, "PINKY"); /* as queued */
		assert_int_equal(gs.g[2].id, id[5]);
		assert_string_equal(gs.g[2].body, "p3");
		memset(&gs, 0, sizeof(gs));
		assert_int_equal(
		    store_msg_each_for(fx->st, ROMEO, &clyde, got_msg, &gs), 0);
		assert_int_equal(gs.n, 1);
		assert_string_equal(gs.g[0].body, "c1");
		memset(&gs, 0, sizeof(gs));
		assert_int_equal(
		    store_msg_each_for(fx->st, JULIET, &pinky, got_msg, &gs),
		    0);
		assert_int_equal(gs.n, 1);
		assert_string_equal(gs.g[0].body, "j1");
		assert_int_equal(store_msg_count(fx->st), 7);
		reopen(fx);
	}
	assert_int_equal(store_msg_count(fx->st), 7);

	/* The walk at link-up sees the other way only, with what was kept. */
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_msg_each_to_xmpp(fx->st, got_msg, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_int_equal(gs.g[0].id, inbound);
	assert_string_equal(gs.g[0].body, "inbound");
	assert_string_equal(gs.g[0].nick, "pinky");

	/* Deleting the newest rows does not let their ids come back. */
	assert_int_equal(store_msg_del(fx->st, inbound), 0);
	assert_int_equal(store_msg_del(fx->st, id[5]), 0);
	assert_int_equal(store_msg_del(fx->st, id[5]), 1);
	reopen(fx);
	fresh = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "p4", 0);
	assert_true(fresh > inbound);
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_msg_each_to_xmpp(fx->st, got_msg, &gs), 0);
	assert_int_equal(gs.n, 0);
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(
	    store_msg_each_for(fx->st, ROMEO, &pinky, got_msg, &gs), 0);
	assert_int_equal(gs.n, 3);
	assert_string_equal(gs.g[2].body, "p4");
	assert_int_equal(gs.g[2].id, fresh);
}

static void
test_take_expired(void **state)
{
	struct fx *fx = *state;
	struct gots gs = { 0 };
	int64_t id[5];

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	id[0] = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "never", 0);
	id[1] = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "at 300", 300);
	id[2] = add_msg(fx->st, ROMEO, "Clyde@202::2", "at 100", 100);
	id[3] = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "at 200", 200);
	id[4] = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "at 201", 201);

	assert_int_equal(store_msg_take_expired(fx->st, 99, got_msg, &gs), 0);
	assert_int_equal(gs.n, 0);
	assert_int_equal(store_msg_count(fx->st), 5);

	/* Called back in id order with the whole message, then gone. */
	assert_int_equal(store_msg_take_expired(fx->st, 200, got_msg, &gs), 0);
	assert_int_equal(gs.n, 2);
	assert_int_equal(gs.g[0].id, id[2]);
	assert_string_equal(gs.g[0].body, "at 100");
	assert_string_equal(gs.g[0].nick, "Clyde");
	assert_string_equal(gs.g[0].sender, "romeo@example.net/orchard");
	assert_int_equal(gs.g[0].expires, 100);
	assert_int_equal(gs.g[1].id, id[3]);
	assert_string_equal(gs.g[1].body, "at 200");
	assert_int_equal(store_msg_count(fx->st), 3);
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_msg_take_expired(fx->st, 200, got_msg, &gs), 0);
	assert_int_equal(gs.n, 0);

	/* A stopped walk deletes only what fn saw. */
	memset(&gs, 0, sizeof(gs));
	gs.stop_at = 1;
	assert_int_equal(
	    store_msg_take_expired(fx->st, 1000, got_msg, &gs), 42);
	assert_int_equal(gs.n, 1);
	assert_int_equal(gs.g[0].id, id[1]);
	assert_int_equal(store_msg_count(fx->st), 2);
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_msg_take_expired(fx->st, 1000, got_msg, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_int_equal(gs.g[0].id, id[4]);
	/* expires 0 never goes. */
	assert_int_equal(store_msg_count(fx->st), 1);
	assert_int_equal(raw_int(fx->path, "SELECT id FROM queue"), id[0]);
}

/* A reload's message_lifetime counts from when each queued message was written. */
static void
test_set_lifetime(void **state)
{
	struct fx *fx = *state;
	struct gots gs = { 0 };
	int64_t id[2];

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	/* Both written at 1000 (add_msg), due in a week. */
	id[0] = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "never", 0);
	id[1] = add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "week", 605800);
	assert_int_equal(store_msg_set_lifetime(fx->st, 60), 0);
	assert_int_equal(store_msg_take_expired(fx->st, 1059, got_msg, &gs), 0);
	assert_int_equal(gs.n, 0);
	assert_int_equal(store_msg_take_expired(fx->st, 1060, got_msg, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_int_equal(gs.g[0].id, id[1]);
	assert_int_equal(gs.g[0].expires, 1060);
	/* A message that never expires stays so. */
	assert_int_equal(store_msg_count(fx->st), 1);
	assert_int_equal(raw_int(fx->path, "SELECT expires FROM queue"), 0);
	assert_int_equal(raw_int(fx->path, "SELECT id FROM queue"), id[0]);
}

static void
test_transactions(void **state)
{
	struct fx *fx = *state;
	struct store_user u;
	struct gots gs = { 0 };

	open_ok(fx);
	assert_int_equal(store_begin(fx->st), 0);
	add_user(fx->st, ROMEO, "Inky");
	put_contact(fx->st, ROMEO, "Pinky@201:af82::1", 0, 1, 1);
	add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "hi", 0);
	assert_int_equal(store_msg_count(fx->st), 1); /* seen inside */
	assert_int_equal(store_begin(fx->st), -1); /* no nesting */
	assert_int_equal(store_rollback(fx->st), 0);
	assert_int_equal(store_user_get(fx->st, ROMEO, &u), 1);
	assert_int_equal(
	    store_contacts_each(fx->st, ROMEO, got_contact, &gs), 0);
	assert_int_equal(gs.n, 0);
	assert_int_equal(store_msg_count(fx->st), 0);
	assert_int_equal(raw_int(fx->path, "SELECT count(*) FROM users"), 0);

	/* Rollback without a transaction is harmless; commit is an error. */
	assert_int_equal(store_rollback(fx->st), 0);
	assert_int_equal(store_commit(fx->st), -1);

	assert_int_equal(store_begin(fx->st), 0);
	add_user(fx->st, ROMEO, "Inky");
	add_msg(fx->st, ROMEO, "Pinky@201:af82::1", "hi", 0);
	assert_int_equal(store_commit(fx->st), 0);
	reopen(fx);
	assert_int_equal(store_user_get(fx->st, ROMEO, &u), 0);
	assert_int_equal(store_msg_count(fx->st), 1);
}

/* Calls its own walk from inside it: that must be refused, not corrupt the walk. */
static int
reenter(void *arg, const struct store_user *u)
{
	struct fx *fx = arg;
	struct store_user other;
	struct gots gs = { 0 };

	assert_int_equal(store_users_each(fx->st, got_user, &gs), -1);
	assert_int_equal(gs.n, 0);
	/* Other statements work. */
	assert_int_equal(store_user_get(fx->st, u->jid, &other), 0);
	assert_string_equal(other.nick, u->nick);
	return 0;
}

static void
test_walks_stop_and_reentry(void **state)
{
	struct fx *fx = *state;
	struct gots gs = { 0 };

	open_ok(fx);
	add_user(fx->st, "a@example.net", "A");
	add_user(fx->st, "b@example.net", "B");
	add_user(fx->st, "c@example.net", "C");
	gs.stop_at = 2;
	assert_int_equal(store_users_each(fx->st, got_user, &gs), 42);
	assert_int_equal(gs.n, 2);
	assert_string_equal(gs.g[1].user_jid, "b@example.net");
	/* The stopped walk was reset: a new one starts from the top. */
	memset(&gs, 0, sizeof(gs));
	assert_int_equal(store_users_each(fx->st, got_user, &gs), 0);
	assert_int_equal(gs.n, 3);
	assert_int_equal(store_users_each(fx->st, reenter, fx), 0);
}

/* A child queues a message and dies by SIGKILL; 0 or which step failed. */
static void
child_then_kill(const char *path, int commit)
{
	struct store *st;
	struct store_msg m;
	char *cause;

	if ((st = store_open(path, &cause)) == NULL)
		_exit(2);
	if (!commit && store_begin(st) == -1)
		_exit(3);
	memset(&m, 0, sizeof(m));
	m.user_jid = ROMEO;
	m.to = B("Pinky@201:af82::1");
	m.sender = ROMEO "/orchard";
	m.body = commit ? "survives" : "never committed";
	if (store_msg_add(st, &m) <= 0)
		_exit(4);
	kill(getpid(), SIGKILL);
	_exit(5);
}

static void
test_survives_kill9(void **state)
{
	struct fx *fx = *state;
	struct barev_jid pinky = B("Pinky@201:af82::1");
	struct gots gs = { 0 };
	int commit, status;
	pid_t pid;

	open_ok(fx);
	add_user(fx->st, ROMEO, "Inky");
	store_close(fx->st);
	fx->st = NULL;

	for (commit = 1; commit >= 0; commit--) {
		fflush(NULL);
		if ((pid = fork()) == 0)
			child_then_kill(fx->path, commit);
		assert_true(pid > 0);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);
	}
	open_ok(fx);
	assert_int_equal(store_msg_count(fx->st), 1);
	assert_int_equal(
	    store_msg_each_for(fx->st, ROMEO, &pinky, got_msg, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_string_equal(gs.g[0].body, "survives");
}

/* A version 1 file (with the expiry index) keeps its queue through migration 2. */
static void
test_migration_2_drops_the_expiry_index(void **state)
{
	struct fx *fx = *state;
	struct barev_jid pinky = B("pinky@201:bbbb::2");
	struct gots gs = { 0 };
	const char *idx = "SELECT count(*) FROM sqlite_master WHERE type = "
			  "'index' AND name = 'queue_expires'";

	open_ok(fx);
	add_user(fx->st, ROMEO, "romeo");
	add_msg(fx->st, ROMEO, "pinky@201:bbbb::2", "kept", 0);
	store_close(fx->st);
	fx->st = NULL;
	raw_exec(fx->path,
	    "CREATE INDEX queue_expires ON queue (expires) WHERE expires > 0;"
	    "ALTER TABLE contacts DROP COLUMN jid;"
	    "PRAGMA user_version = 1");
	assert_int_equal(raw_int(fx->path, idx), 1);
	open_ok(fx);
	assert_int_equal(
	    raw_int(fx->path, "PRAGMA user_version"), store_schema_version());
	assert_int_equal(raw_int(fx->path, idx), 0);
	assert_int_equal(
	    store_msg_each_for(fx->st, ROMEO, &pinky, got_msg, &gs), 0);
	assert_int_equal(gs.n, 1);
	assert_string_equal(gs.g[0].body, "kept");
}

/*
 * The JID a user knows a contact by is kept (empty: the canonical one),
 * and a version 2 file's contacts come through migration 3 without one.
 */
static void
test_contact_jid(void **state)
{
	struct fx *fx = *state;
	struct barev_jid tiny = B("tiny@201:bbbb::c");
	struct barev_jid inky = B("Inky@201:bbbb::1");
	struct store_contact c;
	static const char typed[] = "tiny%201-bbbb--c@barev.example.org";

	open_ok(fx);
	add_user(fx->st, ROMEO, "romeo");
	memset(&c, 0, sizeof(c));
	c.who = tiny;
	snprintf(c.jid, sizeof(c.jid), "%s", typed);
	assert_int_equal(store_contact_put(fx->st, ROMEO, &c), 0);
	put_contact(fx->st, ROMEO, "Inky@201:bbbb::1", 0, 1, 1);
	reopen(fx);
	assert_int_equal(store_contact_get(fx->st, ROMEO, &tiny, &c), 0);
	assert_string_equal(c.jid, typed);
	assert_int_equal(store_contact_get(fx->st, ROMEO, &inky, &c), 0);
	assert_string_equal(c.jid, "");

	/* Back to version 2: the column goes, and migration 3 brings it. */
	store_close(fx->st);
	fx->st = NULL;
	raw_exec(fx->path,
	    "ALTER TABLE contacts DROP COLUMN jid; PRAGMA user_version = 2");
	open_ok(fx);
	assert_int_equal(raw_int(fx->path, "PRAGMA user_version"), 3);
	assert_int_equal(store_contact_get(fx->st, ROMEO, &inky, &c), 0);
	assert_string_equal(c.jid, "");
	assert_int_equal(c.sub_to, 1);
	assert_int_equal(store_contact_get(fx->st, ROMEO, &tiny, &c), 0);
	assert_string_equal(c.jid, "");
}

static off_t
file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/*
 * Checkpoints run in a thread of their own, and also after a quiet
 * second: a few hundred frames, far below SQLite's automatic 1,000, still
 * reach the database file (which only a checkpoint writes) soon.
 */
static void
test_checkpoint_in_the_background(void **state)
{
	struct fx *fx = *state;
	char body[2048];
	off_t before;
	int i;

	open_ok(fx);
	add_user(fx->st, ROMEO, "romeo");
	memset(body, 'x', sizeof(body) - 1);
	body[sizeof(body) - 1] = '\0';
	before = file_size(fx->path);
	assert_true(before > 0);
	for (i = 0; i < 100; i++)
		add_msg(fx->st, ROMEO, "pinky@201:bbbb::2", body, 0);
	for (i = 0; i < 50 && file_size(fx->path) <= before + 100 * 1024; i++)
		usleep(100000);
	assert_true(file_size(fx->path) > before + 100 * 1024);
	assert_int_equal(store_msg_count(fx->st), 100);
	/* Its thread stops cleanly with the store, and the rows stay. */
	reopen(fx);
	assert_int_equal(store_msg_count(fx->st), 100);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_open_create, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_reopen_keeps_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_empty_file_migrates, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_newer_version_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_not_a_database, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_nick_unique_per_address, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_user_add_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_user_del_cascades, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_contact_put_updates, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_contacts_at, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_pending_expire, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_queue_order_across_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_take_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_set_lifetime, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_transactions, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_walks_stop_and_reentry, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_survives_kill9, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_checkpoint_in_the_background, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_migration_2_drops_the_expiry_index, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_contact_jid, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
