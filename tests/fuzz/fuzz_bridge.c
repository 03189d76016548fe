/*
 * Fuzz target: the bridge as the component sees it. The input is a few
 * chunks split at 0xff (never a byte of UTF-8, so never inside a stanza).
 * A chunk's first byte says what it is and who sends it; the rest is one
 * stanza, or nothing for an event:
 *
 *   bits 6-7  0, 1: a stanza from the XMPP server (bridge_xmpp), from the
 *                   user in bits 0-2 to the JID in bits 3-5 (7: the
 *                   stanza's own from or to)
 *             2:    a stanza from a Barev peer (bridge_barev_cb.stanza),
 *                   from the contact in bits 0-2 to the user in bits 3-5
 *             3:    an event, bits 0-3: link up/down, pipe up/down,
 *                   the oldest message confirmed, assumed or lost, ...
 *
 * The networks are fakes that check what the bridge gives them: every
 * stanza towards the XMPP server is well-formed, from the gateway's domain
 * and to a JID; every chat message towards Barev re-parses with its body.
 * Each input starts from the same registered users and contacts, in a
 * store on a temporary file that is reset per input, and a new bridge.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <strophe.h>

#include "bridge.h"
#include "conf.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"
#include "store.h"
#include "xmalloc.h"
#include "ygg.h"

#define DOMAIN "barev.localhost"
#define SEP 0xff
#define MAX_CHUNKS 16
/* Tokens of chat messages written and not yet confirmed. */
#define MAX_TOKENS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf_shared[] =
    "component = { jid = \"" DOMAIN "\"; secret = \"s\"; };\n"
    "access = { admins = [ \"admin@localhost\" ]; };\n";
static const char conf_per_user[] =
    "component = { jid = \"" DOMAIN "\"; secret = \"s\"; };\n"
    "barev = { address_mode = \"per-user\"; allow_any_address = true; };\n"
    "access = { domains = [ \"localhost\", \"example.org\" ]; };\n";

/* XMPP senders as the server gives them: full JIDs. */
static const char *const users[7] = {
	"alice@localhost/phone",
	"alice@localhost/desk",
	"bob@localhost/r",
	"carol@localhost/new", /* not registered */
	"admin@localhost/a",
	"mallory@evil.example/m", /* a domain the gateway does not serve */
	"Alice@LocalHost/Case",
};

/* Registered users: bare JID and nick. */
static const char *const registered[][2] = {
	{ "alice@localhost", "alice" },
	{ "bob@localhost", "Bob" },
	{ "admin@localhost", "admin" },
};

/* Barev peers: the first two are alice's contacts, inky is bob's too. */
static const char *const peers[7] = {
	"inky@201:af82::1",
	"Blinky@200:1::2",
	"clyde@202::3", /* a stranger */
	"alice@201:af82::1", /* a peer with a user's nick */
	"inky@300:1::5", /* in the node's subnet */
	"pinky@fe80::1", /* not Yggdrasil */
	"s\xc3\xbc\xc3\x9f@201:af82::1",
};

static xmpp_ctx_t *ctx;
static struct event_base *base;
static struct conf *confs[2];
static struct store *store;
static struct ygg_node node;
static char dbdir[64];
static char dbpath[128];
static struct barev_jid peer_id[7];
static char *to_jids[7];

/* What the fakes do; reset per input. */
static struct fake {
	int xmpp_ok; /* the server takes stanzas */
	int pipes_up; /* every pair's pipe is open */
	uint64_t tokens[MAX_TOKENS];
	size_t ntokens;
	/* The XMPP stanza being handled: errors get no error back (RFC 6120). */
	int in_error;
	/* An iq get/set being handled, and the replies to it seen. */
	const char *iq_id, *iq_from;
	int iq_replies;
} fake;

static void
check(int ok)
{
	if (!ok)
		abort();
}

/* The stanza serializes and reads back as one element. */
static void
check_wellformed(xmpp_stanza_t *st)
{
	xmpp_stanza_t *again;
	size_t len;
	char *buf;

	check(xmpp_stanza_get_name(st) != NULL);
	check(xmpp_stanza_to_text(st, &buf, &len) == XMPP_EOK);
	check(strlen(buf) == len);
	again = xmpp_stanza_new_from_string(ctx, buf);
	check(again != NULL);
	xmpp_stanza_release(again);
	xmpp_free(ctx, buf);
}

static int
is_type(xmpp_stanza_t *st, const char *type)
{
	const char *t = xmpp_stanza_get_type(st);

	return t != NULL && strcmp(t, type) == 0;
}

static int
fake_xmpp_send(void *arg, xmpp_stanza_t *st)
{
	const char *from = xmpp_stanza_get_from(st);
	const char *to = xmpp_stanza_get_to(st);
	struct jid_parts p;
	const char *cause;

	check(from != NULL && jid_split(from, &p, &cause) == 0 &&
	    jid_on_domain(&p, DOMAIN));
	check(to != NULL && jid_split(to, &p, &cause) == 0);
	check_wellformed(st);
	check(!fake.in_error || !is_type(st, "error"));
	if (fake.iq_id != NULL && strcmp(xmpp_stanza_get_name(st), "iq") == 0 &&
	    (is_type(st, "result") || is_type(st, "error")) &&
	    xmpp_stanza_get_id(st) != NULL &&
	    strcmp(xmpp_stanza_get_id(st), fake.iq_id) == 0 &&
	    strcmp(to, fake.iq_from) == 0)
		fake.iq_replies++;
	return fake.xmpp_ok ? 0 : -1;
}

static void
check_pair(const struct barev_jid *local, const struct barev_jid *remote)
{
	const char *cause;

	check(barev_nick_check(local->nick, strlen(local->nick), &cause) == 0);
	check(
	    barev_nick_check(remote->nick, strlen(remote->nick), &cause) == 0);
}

static void
fake_want(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, unsigned short port)
{
	check_pair(local, remote);
}

static void
fake_unwant(
    void *arg, const struct barev_jid *local, const struct barev_jid *remote)
{
	check_pair(local, remote);
}

static int
fake_send(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, xmpp_stanza_t *st)
{
	check_pair(local, remote);
	check_wellformed(st);
	return fake.pipes_up ? 0 : -1;
}

static int
fake_send_chat(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, const char *inner, size_t len,
    uint64_t token)
{
	xmpp_stanza_t *m;
	char *wrapped;

	check_pair(local, remote);
	check(strlen(inner) == len);
	xasprintf(&wrapped, "<message type='chat'>%s</message>", inner);
	m = xmpp_stanza_new_from_string(ctx, wrapped);
	check(m != NULL && stanza_child(m, "body", NULL) != NULL);
	xmpp_stanza_release(m);
	free(wrapped);
	if (!fake.pipes_up || fake.ntokens == MAX_TOKENS)
		return -1;
	fake.tokens[fake.ntokens++] = token;
	return 0;
}

static int
fake_is_up(
    void *arg, const struct barev_jid *local, const struct barev_jid *remote)
{
	check_pair(local, remote);
	return fake.pipes_up;
}

static void
cleanup(void)
{
	char path[160];

	store_close(store);
	snprintf(path, sizeof(path), "%s-wal", dbpath);
	unlink(path);
	snprintf(path, sizeof(path), "%s-shm", dbpath);
	unlink(path);
	unlink(dbpath);
	rmdir(dbdir);
}

static void
init(void)
{
	const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	const char *cause;
	char *err;
	size_t i;

	log_set_level(LOG_LEVEL_ERROR);
	check((ctx = xmpp_ctx_new(NULL, NULL)) != NULL);
	check((base = event_base_new()) != NULL);
	check(conf_load_string("shared", conf_shared, &confs[0], &err) == 0);
	check(
	    conf_load_string("per-user", conf_per_user, &confs[1], &err) == 0);
	snprintf(dbdir, sizeof(dbdir), "%s/fuzz_bridge.XXXXXX", tmp);
	check(mkdtemp(dbdir) != NULL);
	snprintf(dbpath, sizeof(dbpath), "%s/state.db", dbdir);
	check((store = store_open(dbpath, &err)) != NULL);
	atexit(cleanup);
	node.have_addr = 1;
	check(inet_pton(AF_INET6, "200:1::1", &node.addr) == 1);
	node.have_subnet = 1;
	ygg_subnet_of(&node.addr, &node.subnet);
	snprintf(node.source, sizeof(node.source), "fuzz");
	for (i = 0; i < 7; i++) {
		check(barev_jid_parse(
			  peers[i], BAREV_ANY_ADDR, &peer_id[i], &cause) == 0);
		to_jids[i] = gateway_jid_from_barev(&peer_id[i], DOMAIN);
	}
	/* The gateway, the typeable form, a resource, another domain. */
	free(to_jids[3]);
	to_jids[3] = xstrdup(DOMAIN);
	free(to_jids[4]);
	to_jids[4] = xstrdup("inky%201-af82--1@" DOMAIN);
	free(to_jids[5]);
	xasprintf(&to_jids[5], "%s/res", to_jids[0]);
	free(to_jids[6]);
	to_jids[6] = xstrdup("inky@other.example");
}

static int
collect(void *arg, const struct store_user *u)
{
	struct conf_strlist *l = arg;

	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = xstrdup(u->jid);
	return 0;
}

static void
put_contact(const char *user, int peer, int sub_to, int sub_from)
{
	struct store_contact c;

	memset(&c, 0, sizeof(c));
	c.who = peer_id[peer];
	c.sub_to = sub_to;
	c.sub_from = sub_from;
	check(store_contact_put(store, user, &c) == 0);
}

/* The same users and contacts for every input, whatever the last one did. */
static void
reset_store(int per_user)
{
	struct conf_strlist l = { NULL, 0 };
	struct in6_addr addr;
	const char *cause;
	size_t i;

	check(store_begin(store) == 0);
	check(store_users_each(store, collect, &l) == 0);
	for (i = 0; i < l.n; i++) {
		check(store_user_del(store, l.v[i]) == 0);
		free(l.v[i]);
	}
	free(l.v);
	for (i = 0; i < sizeof(registered) / sizeof(registered[0]); i++) {
		if (per_user)
			ygg_user_address(
			    &node.subnet, registered[i][0], 0, &addr);
		else
			addr = node.addr;
		check(store_user_add(store, registered[i][0], registered[i][1],
			  &addr, &cause) == 0);
	}
	put_contact("alice@localhost", 0, 1, 1);
	put_contact("alice@localhost", 1, 1, 0);
	put_contact("bob@localhost", 0, 0, 1);
	check(store_commit(store) == 0);
}

/* A registered user's Barev identity, read back from the store. */
static void
local_id(int i, struct barev_jid *out)
{
	struct store_user u;

	memset(out, 0, sizeof(*out));
	if (store_user_get(store, registered[i % 3][0], &u) != 0) {
		/* Unregistered meanwhile: an identity the bridge does not know. */
		snprintf(out->nick, sizeof(out->nick), "gone");
		out->addr = node.addr;
		return;
	}
	snprintf(out->nick, sizeof(out->nick), "%s", u.nick);
	out->addr = u.addr;
}

static void
happen(struct bridge *b, unsigned op)
{
	struct barev_jid local;
	uint64_t token;
	size_t i;

	local_id((int)(op >> 4), &local);
	switch (op & 0x0f) {
	case 0:
		fake.xmpp_ok = 1;
		bridge_link_up(b);
		break;
	case 1:
		fake.xmpp_ok = 0;
		bridge_link_down(b);
		break;
	case 2:
		fake.pipes_up = 1;
		bridge_barev_cb.up(b, &local, &peer_id[(op >> 4) % 7]);
		break;
	case 3:
		/* As the engine does: what the pipe held is lost, then it is down. */
		for (i = 0; i < fake.ntokens; i++)
			bridge_barev_cb.confirmed(b, fake.tokens[i], PIPE_LOST);
		fake.ntokens = 0;
		fake.pipes_up = 0;
		bridge_barev_cb.down(
		    b, &local, &peer_id[(op >> 4) % 7], "fuzz");
		break;
	case 4:
	case 5:
	case 6:
		/* The engine confirms each written message once, in order. */
		if (fake.ntokens == 0)
			break;
		token = fake.tokens[0];
		memmove(fake.tokens, fake.tokens + 1,
		    --fake.ntokens * sizeof(fake.tokens[0]));
		bridge_barev_cb.confirmed(b, token,
		    (op & 0x0f) == 4	   ? PIPE_CONFIRMED
			: (op & 0x0f) == 5 ? PIPE_ASSUMED
					   : PIPE_LOST);
		break;
	case 7:
		bridge_barev_cb.allow(b, &local, &peer_id[(op >> 4) % 7]);
		break;
	case 8:
		bridge_barev_cb.lookup_local(
		    b, local.nick, &local.addr, &local);
		break;
	case 9:
		bridge_barev_cb.refused(
		    b, &local, &peer_id[(op >> 4) % 7], 600);
		break;
	default:
		fake.xmpp_ok = !fake.xmpp_ok;
		break;
	}
}

/*
 * A stanza from the server. An iq get or set the bridge takes gets exactly
 * one answer from it; one it leaves (-1) gets none, as main.c's service
 * answers it then.
 */
static void
from_xmpp(struct bridge *b, xmpp_stanza_t *st)
{
	int rc;

	fake.in_error = is_type(st, "error") ||
	    (strcmp(xmpp_stanza_get_name(st), "iq") == 0 &&
		is_type(st, "result"));
	fake.iq_id = NULL;
	fake.iq_replies = 0;
	if (strcmp(xmpp_stanza_get_name(st), "iq") == 0 &&
	    (is_type(st, "get") || is_type(st, "set")) &&
	    xmpp_stanza_get_id(st) != NULL &&
	    xmpp_stanza_get_from(st) != NULL) {
		fake.iq_id = xmpp_stanza_get_id(st);
		fake.iq_from = xmpp_stanza_get_from(st);
	}
	rc = bridge_xmpp(b, st);
	if (fake.iq_id != NULL)
		check(fake.iq_replies == (rc == 0 ? 1 : 0));
	fake.in_error = 0;
	fake.iq_id = NULL;
}

/* One chunk: its first byte steers, the rest is a stanza. */
static void
chunk(struct bridge *b, const uint8_t *p, size_t n)
{
	xmpp_stanza_t *st;
	struct barev_jid local;
	unsigned sel = p[0], lo = sel & 7, hi = (sel >> 3) & 7;
	char *text;

	if ((sel >> 6) == 3) {
		happen(b, sel & 0x3f);
		return;
	}
	text = xmalloc(n);
	memcpy(text, p + 1, n - 1);
	text[n - 1] = '\0';
	st = xmpp_stanza_new_from_string(ctx, text);
	free(text);
	if (st == NULL)
		return;
	if ((sel >> 6) == 2) {
		local_id((int)hi, &local);
		/* The engine sets from and to; a peer's own are not trusted. */
		xmpp_stanza_del_attribute(st, "from");
		xmpp_stanza_del_attribute(st, "to");
		bridge_barev_cb.stanza(b, &local, &peer_id[lo % 7], st);
	} else {
		if (lo < 7)
			xmpp_stanza_set_from(st, users[lo]);
		if (hi < 7)
			xmpp_stanza_set_to(st, to_jids[hi]);
		from_xmpp(b, st);
	}
	xmpp_stanza_release(st);
}

/* Caps are the service's (main.c wires service_caps): none here. */
static void
fake_caps(void *arg, enum service_entity which, xmpp_stanza_t *presence)
{
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct bridge_net net = {
		.xmpp_send = fake_xmpp_send,
		.want = fake_want,
		.unwant = fake_unwant,
		.send = fake_send,
		.send_chat = fake_send_chat,
		.is_up = fake_is_up,
		.caps = fake_caps,
	};
	struct bridge *b;
	const uint8_t *end;
	size_t at, n, chunks = 0;
	int per_user;
	char *cause;

	if (ctx == NULL)
		init();
	if (size == 0)
		return 0;
	/* The first byte picks the configuration and is a chunk's too. */
	per_user = data[0] & 1;
	reset_store(per_user);
	memset(&fake, 0, sizeof(fake));
	fake.xmpp_ok = 1;
	b = bridge_new(base, ctx, confs[per_user], &node, store, &net, &cause);
	check(b != NULL);
	bridge_link_up(b);
	for (at = 0; at < size && chunks < MAX_CHUNKS; at += n + 1, chunks++) {
		end = memchr(data + at, SEP, size - at);
		n = end != NULL ? (size_t)(end - (data + at)) : size - at;
		if (n > 0)
			chunk(b, data + at, n);
		/* What the bridge left for the loop pass: its commit. */
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	bridge_free(b);
	return 0;
}
