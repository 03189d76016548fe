#include "config.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include "bridge.h"
#include "chatmsg.h"
#include "clock.h"
#include "conf.h"
#include "log.h"
#include "stanza.h"
#include "store.h"
#include "users.h"
#include "xmalloc.h"
#include "ygg.h"

#define NS_REGISTER "jabber:iq:register"
#define NS_GATEWAY "jabber:iq:gateway"
#define NS_XDATA "jabber:x:data"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"
#define NS_XHTML_IM "http://jabber.org/protocol/xhtml-im"
#define NS_XHTML "http://www.w3.org/1999/xhtml"
#define NS_RECEIPTS "urn:xmpp:receipts"
#define NS_EVENT "jabber:x:event"
#define NS_DELAY "urn:xmpp:delay"
#define NS_VCARD "vcard-temp"
#define NS_NICK "http://jabber.org/protocol/nick"
#define NS_COMMANDS "http://jabber.org/protocol/commands"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

/* The reference client's typing indicator fades after about a second. */
#define TYPING_REPEAT 1.0
/* A client that said "composing" and went quiet is not typing for ever. */
#define TYPING_MAX 30.0
#define EXPIRE_EVERY 60.0
/*
 * How long a delivered message's deletion (and so its receipt) may wait
 * for a transaction that new messages open anyway: under steady traffic
 * both share one commit instead of two.
 */
#define DELETE_WAIT 0.05

const char *const bridge_features[] = {
	NS_REGISTER,
	NS_GATEWAY,
	NS_COMMANDS,
	NULL,
};

/* What the bridge carries between a user and a Barev peer. */
const char *const bridge_contact_features[] = {
	NS_CHATSTATES,
	NS_RECEIPTS,
	NS_XHTML_IM,
	NULL,
};

/* A message written to a pipe, waiting for the proof it was read. */
struct inflight {
	int64_t id;
	char *sender;
	char *stanza_id;
	char *user_jid;
	struct barev_jid to;
	int receipt;
	struct inflight *next;
};

/*
 * A Barev peer, not a contact, that asked a user: one open subscription
 * request (a row of the pending table), found by (user, peer) in a tree.
 */
struct stranger {
	struct bridge *b;
	char *user_jid;
	struct barev_jid who;
	struct shown seen; /* its presence, shown once the user accepts */
	int64_t last_asked; /* it expires request_lifetime after this */
	struct event *ev_timeout; /* closes its pipe after request_timeout */
	struct asker *asker;
	TAILQ_ENTRY(stranger) by_age; /* all requests, oldest asked first */
	TAILQ_ENTRY(stranger) mine; /* its user's, oldest asked first */
};
TAILQ_HEAD(stranger_list, stranger);

/* One user's open requests, for the bounds per user and per /64. */
struct asker {
	char *user_jid;
	unsigned n;
	struct stranger_list list;
};

/*
 * A message the peer has: its row is deleted in the next transaction, and
 * once that commits, its XEP-0184 receipt goes (if it asked for one).
 */
struct receipt {
	int64_t msg_id;
	char *from; /* NULL: no receipt */
	char *to;
	char *id;
	struct receipt *next;
};

/*
 * A message stored in the pass's transaction, kept until the commit: then
 * it goes to its pipe from here (no read back), or its sender hears that
 * it could not be stored.
 */
struct added {
	xmpp_stanza_t *st;
	struct store_msg m; /* its strings: the three below, and st's */
	char *user_jid;
	char *body;
	char *xhtml;
	struct added *next;
};

/* How many pipes in a row died after a message was written to them. */
struct lost {
	int64_t msg_id;
	int times;
	struct lost *next;
};

/* A (user, contact) with a presence or chat state waiting for presence_interval. */
struct due {
	char *user_jid;
	struct barev_jid who;
	struct due *next;
};

/* A (user, contact) whose typing notification is being repeated. */
struct typing {
	char *user_jid;
	struct barev_jid who;
	struct typing *next;
};

struct bridge {
	struct event_base *base;
	xmpp_ctx_t *ctx;
	const struct conf *conf;
	struct ygg_node node;
	struct store *st;
	struct bridge_net net;
	char *domain;
	struct users *users;
	/* Oldest first: confirmations come in sending order. */
	struct inflight *inflight;
	struct inflight **inflight_tail;
	void *strangers; /* tsearch tree of struct stranger by (user, peer) */
	void *askers; /* tsearch tree of struct asker by user */
	struct stranger_list requests; /* oldest asked first */
	struct event *ev_requests; /* the oldest request's expiry */
	struct lost *lost;
	/* Inside send_chat: a loss reported now is no pipe that died. */
	int sending;
	struct typing *typing;
	struct event *ev_typing;
	struct due *due;
	struct event *ev_due;
	struct event *ev_expire;
	/*
	 * One transaction per loop pass holds the pass's new messages and the
	 * deletions of confirmed ones; after its commit come the receipts and
	 * the writes to the pipes.
	 */
	int txn_open;
	struct event *ev_commit;
	struct receipt *delivered; /* waiting for a transaction */
	struct receipt **delivered_tail;
	struct event *ev_delivered; /* opens one if no message does first */
	struct receipt *receipts; /* deleted in the open transaction */
	struct receipt **receipts_tail;
	struct added *added; /* in the order they came */
	struct added **added_tail;
	unsigned long serial;
	/* What the server says of users' presence holds only while it is up. */
	int link_up;
	double lifetime; /* the message_lifetime queued expiries follow */
};

static void flush_queue(struct bridge *b, struct user *u, struct contact *c);
static void flush_later(struct bridge *b, xmpp_stanza_t *st,
    const struct store_msg *m, char *body, char *xhtml);
static void batch_open(struct bridge *b);
static void batch_commit(struct bridge *b);

static int
peer_flags(const struct bridge *b)
{
	return b->conf->allow_any_address ? BAREV_ANY_ADDR : 0;
}

/* --- building and sending XMPP stanzas ------------------------------ */

static void
xsend(struct bridge *b, xmpp_stanza_t *st)
{
	if (b->net.xmpp_send(b->net.xmpp_arg, st) == -1)
		log_debug("bridge: %s to %s dropped, link down",
		    xmpp_stanza_get_name(st), xmpp_stanza_get_to(st));
	xmpp_stanza_release(st);
}

static char *
contact_jid(const struct bridge *b, const struct barev_jid *who)
{
	return gateway_jid_from_barev(who, b->domain);
}

static xmpp_stanza_t *
new_stanza(struct bridge *b, const char *name, const char *from, const char *to,
    const char *type)
{
	xmpp_stanza_t *st = xmpp_stanza_new(b->ctx);

	xmpp_stanza_set_name(st, name);
	xmpp_stanza_set_from(st, from);
	xmpp_stanza_set_to(st, to);
	if (type != NULL)
		xmpp_stanza_set_type(st, type);
	return st;
}

/*
 * The JID user_jid knows who by (free it): the one they subscribed to or
 * wrote to (the typeable form, say), or the canonical one. Their roster
 * then has one entry for the contact, answered from the JID they typed.
 */
static char *
contact_name(
    struct bridge *b, const char *user_jid, const struct barev_jid *who)
{
	struct user *u = users_get(b->users, user_jid);
	struct contact *c = u != NULL ? user_contact(u, who) : NULL;

	if (c != NULL && c->jid != NULL)
		return xstrdup(c->jid);
	return contact_jid(b, who);
}

/* The contact is known as the bare JID `to` from now on. */
static void
contact_rename(struct bridge *b, struct contact *c, const char *to)
{
	char *canonical = contact_jid(b, &c->who), *bare;
	const char *cause;

	if (jid_bare(to, &bare, &cause) == -1)
		bare = xstrdup(canonical);
	free(c->jid);
	c->jid = strcasecmp(bare, canonical) == 0 ? NULL : xstrdup(bare);
	free(bare);
	free(canonical);
}

/* Our presence to jid, with caps when available (XEP-0115). */
static void
gateway_presence_to(struct bridge *b, const char *jid, const char *type)
{
	xmpp_stanza_t *p = new_stanza(b, "presence", b->domain, jid, type);

	if (type == NULL)
		b->net.caps(b->net.caps_arg, SERVICE_GATEWAY, p);
	xsend(b, p);
}

/* A chat message from contact who to a user; takes html (may be NULL). */
static xmpp_stanza_t *
chat_to_user(struct bridge *b, const struct barev_jid *who, const char *to,
    const char *body, xmpp_stanza_t *html)
{
	char *from = contact_name(b, to, who), id[32];
	xmpp_stanza_t *m = new_stanza(b, "message", from, to, "chat");

	snprintf(id, sizeof(id), "bg-%lu", ++b->serial);
	xmpp_stanza_set_id(m, id);
	if (body != NULL)
		stanza_add_text_child(m, "body", body);
	if (html != NULL)
		xmpp_stanza_add_child_ex(m, html, 0);
	free(from);
	return m;
}

/*
 * The server cannot take it now: the message waits in the store until the
 * link is back (send_kept). Chat states are not kept; they would be stale.
 */
static void
keep_for_link(struct bridge *b, struct user *u, struct contact *c,
    const char *body, xmpp_stanza_t *html)
{
	struct store_msg m;
	char who[BAREV_JID_STRLEN], *xhtml = NULL;
	size_t len;

	if (html != NULL && xmpp_stanza_to_text(html, &xhtml, &len) != 0)
		xhtml = NULL;
	memset(&m, 0, sizeof(m));
	m.dir = STORE_TO_XMPP;
	m.user_jid = u->jid;
	m.to = c->who;
	m.sender = barev_jid_format(&c->who, who);
	m.body = body;
	m.xhtml = xhtml;
	m.created = (int64_t)time(NULL);
	/* Committed on its own: a failed pass commit must not take it along. */
	batch_commit(b);
	if (store_msg_add(b->st, &m) == -1)
		log_warn("bridge: message from %s to %s lost: link down and "
			 "the store failed",
		    who, u->jid);
	else
		log_info("bridge: message from %s to %s kept until the link "
			 "is up",
		    who, u->jid);
	if (xhtml != NULL)
		xmpp_free(b->ctx, xhtml);
}

/* Presence from a contact's JID to a user. */
static void
presence_from_contact(struct bridge *b, const struct barev_jid *who,
    const char *to, const char *type, const struct shown *shown)
{
	char *from = contact_name(b, to, who);
	xmpp_stanza_t *p = new_stanza(b, "presence", from, to, type);
	static const char *const shows[] = { NULL, "away", "dnd" };
	xmpp_stanza_t *nick;

	if (type == NULL && shown != NULL) {
		if (shows[shown->show] != NULL)
			stanza_add_text_child(p, "show", shows[shown->show]);
		if (shown->status != NULL)
			stanza_add_text_child(p, "status", shown->status);
	}
	if (type == NULL)
		b->net.caps(b->net.caps_arg, SERVICE_CONTACT, p);
	if (type != NULL && strcmp(type, "subscribe") == 0) {
		/* XEP-0172: the client can show the nick with its case. */
		nick = stanza_add_child(p, "nick", NS_NICK);
		stanza_add_text(nick, who->nick);
	}
	xsend(b, p);
	free(from);
}

static void
error_reply(struct bridge *b, xmpp_stanza_t *st, const char *type,
    const char *condition, const char *text)
{
	xmpp_stanza_t *r = stanza_error_reply(st, type, condition, text);

	log_debug("bridge: %s error=%s from=%s", xmpp_stanza_get_name(st),
	    condition, xmpp_stanza_get_from(st));
	xsend(b, r);
}

static void
tell_user(struct bridge *b, const char *jid, const char *text)
{
	xmpp_stanza_t *m = new_stanza(b, "message", b->domain, jid, "chat");
	char id[32];

	snprintf(id, sizeof(id), "bg-%lu", ++b->serial);
	xmpp_stanza_set_id(m, id);
	stanza_add_text_child(m, "body", text);
	xsend(b, m);
}

/* --- who may use the gateway ---------------------------------------- */

static int
access_ok(const struct bridge *b, const char *bare)
{
	const char *at = strchr(bare, '@');
	size_t i;

	for (i = 0; i < b->conf->access_jids.n; i++)
		if (strcasecmp(bare, b->conf->access_jids.v[i]) == 0)
			return 1;
	for (i = 0; i < b->conf->access_domains.n; i++)
		if (at != NULL &&
		    strcasecmp(at + 1, b->conf->access_domains.v[i]) == 0)
			return 1;
	return 0;
}

/*
 * What a user access.* no longer lists may still do: read (iq get to the
 * gateway) and end or re-check a registration (jabber:iq:register, the
 * register and unregister commands), so that leaving stays possible.
 */
static int
refused_may(xmpp_stanza_t *st, int to_gateway)
{
	const char *name = xmpp_stanza_get_name(st);
	const char *type = xmpp_stanza_get_type(st);
	xmpp_stanza_t *cmd;
	const char *node;

	if (!to_gateway || strcmp(name, "iq") != 0 || type == NULL)
		return 0;
	if (strcmp(type, "get") == 0 ||
	    stanza_child(st, "query", NS_REGISTER) != NULL)
		return 1;
	if ((cmd = stanza_child(st, "command", NS_COMMANDS)) == NULL ||
	    (node = xmpp_stanza_get_attribute(cmd, "node")) == NULL)
		return 0;
	return strcmp(node, "unregister") == 0 || strcmp(node, "register") == 0;
}

/* The answer to any other stanza of a refused user: not-allowed, and why. */
static void
refuse_stanza(struct bridge *b, xmpp_stanza_t *st, const char *bare)
{
	const char *type = xmpp_stanza_get_type(st);
	const char *at = strchr(bare, '@');
	char text[512];

	/*
	 * Errors and results are never answered; an unavailable changes
	 * nothing for a user Barev already sees offline.
	 */
	if (type != NULL &&
	    (strcmp(type, "error") == 0 || strcmp(type, "result") == 0 ||
		strcmp(type, "unavailable") == 0)) {
		log_debug("bridge: %s type=%s of refused user %s ignored",
		    xmpp_stanza_get_name(st), type, bare);
		return;
	}
	snprintf(text, sizeof(text),
	    "The operator of %s no longer allows users of %s (nor %s) to use "
	    "it. Your registration and contacts are kept until you unregister.",
	    b->domain, at != NULL ? at + 1 : bare, bare);
	error_reply(b, st, "cancel", "not-allowed", text);
}

/* Why bare may not register here, for the user: their domain, or them. */
static void
not_served(const struct bridge *b, const char *bare, char *buf, size_t len)
{
	const char *at = strchr(bare, '@'), *domain = at ? at + 1 : bare;
	const char *jat;
	size_t i;

	for (i = 0; i < b->conf->access_jids.n; i++) {
		jat = strchr(b->conf->access_jids.v[i], '@');
		if (jat != NULL && strcasecmp(jat + 1, domain) == 0) {
			snprintf(buf, len,
			    "This gateway serves only some users of "
			    "%s, and "
			    "not %s; ask its operator.",
			    domain, bare);
			return;
		}
	}
	snprintf(buf, len,
	    "This gateway does not serve users of %s; ask its "
	    "operator.",
	    domain);
}

/* The answer to a user who is not registered: how to, or that they may not. */
static void
refuse_unregistered(struct bridge *b, xmpp_stanza_t *st, const char *bare)
{
	char text[512];

	if (!access_ok(b, bare)) {
		not_served(b, bare, text, sizeof(text));
		error_reply(b, st, "cancel", "not-allowed", text);
		return;
	}
	snprintf(text, sizeof(text),
	    "You are not registered with the Barev gateway %s. "
	    "Register with "
	    "its ad-hoc command \"Register\", or with its registration "
	    "form "
	    "(XEP-0077; \"Register\" in your client's service "
	    "discovery).",
	    b->domain);
	error_reply(b, st, "auth", "registration-required", text);
}

/* --- presence towards Barev ----------------------------------------- */

/* What the pipe of contact c should show of u right now. */
static void
send_user_presence(struct bridge *b, struct user *u, struct contact *c)
{
	xmpp_stanza_t *p = xmpp_stanza_new(b->ctx);
	static const char *const shows[] = { NULL, "away", "dnd" };
	struct shown view;

	/* A resource that sent c a directed unavailable is not shown to c. */
	user_shown_to(u, c, &view);
	if (!user_online(u))
		view.available = 0;
	/* One logout reaches us once per contact JID and at our own JID. */
	if (c->told_valid && shown_equal(&view, &c->told)) {
		xmpp_stanza_release(p);
		shown_clear(&view);
		return;
	}
	shown_set(&c->told, view.available, view.show, view.status);
	c->told_valid = 1;
	xmpp_stanza_set_name(p, "presence");
	if (!view.available)
		xmpp_stanza_set_type(p, "unavailable");
	else {
		if (shows[view.show] != NULL)
			stanza_add_text_child(p, "show", shows[view.show]);
		if (view.status != NULL)
			stanza_add_text_child(p, "status", view.status);
	}
	b->net.send(b->net.barev_arg, &u->id, &c->who, p);
	xmpp_stanza_release(p);
	shown_clear(&view);
}

static void
went_online(struct bridge *b, struct user *u)
{
	struct contact *c;

	log_info("bridge: user online jid=%s", u->jid);
	for (c = u->contacts; c != NULL; c = c->next) {
		/* A contact that dialled in while the user was away is told now. */
		if (c->pipe_up)
			send_user_presence(b, u, c);
		else if (c->sub_to)
			/*
			 * A session that outlived a gateway crash or a lost
			 * link may still show the contact online.
			 */
			presence_from_contact(
			    b, &c->who, u->jid, "unavailable", NULL);
		b->net.want(b->net.barev_arg, &u->id, &c->who, c->port);
	}
}

static void
went_offline(struct bridge *b, struct user *u)
{
	struct contact *c;

	log_info("bridge: user offline jid=%s", u->jid);
	/* The engine sends unavailable and the stream end on each pipe. */
	for (c = u->contacts; c != NULL; c = c->next) {
		c->composing = 0;
		b->net.unwant(b->net.barev_arg, &u->id, &c->who);
	}
}

/* A presence from one of u's resources for everyone; 1 if the contacts' pipes were told. */
static int
user_resource_presence(
    struct bridge *b, struct user *u, const char *from, xmpp_stanza_t *st)
{
	int was = user_online(u);
	const struct shown *now;
	struct contact *c;

	if (!user_presence(u, from, st, &now))
		return 0;
	if (!was && user_online(u)) {
		went_online(b, u);
		return 1;
	}
	if (was && !user_online(u)) {
		went_offline(b, u);
		return 1;
	}
	for (c = u->contacts; c != NULL; c = c->next)
		if (c->pipe_up)
			send_user_presence(b, u, c);
	return 1;
}

/* --- contacts --------------------------------------------------------- */

static void
contact_save(struct bridge *b, struct user *u, struct contact *c)
{
	struct store_contact sc;

	memset(&sc, 0, sizeof(sc));
	sc.who = c->who;
	sc.port = c->port;
	sc.sub_to = c->sub_to;
	sc.sub_from = c->sub_from;
	if (c->jid != NULL)
		snprintf(sc.jid, sizeof(sc.jid), "%s", c->jid);
	if (store_contact_put(b->st, u->jid, &sc) == -1)
		log_err("bridge: could not save contact of %s", u->jid);
}

static int
stranger_cmp(const void *va, const void *vb)
{
	const struct stranger *a = va, *b = vb;
	int r;

	if ((r = strcmp(a->user_jid, b->user_jid)) != 0)
		return r;
	if ((r = memcmp(&a->who.addr, &b->who.addr, 16)) != 0)
		return r;
	return strcasecmp(a->who.nick, b->who.nick);
}

static int
asker_cmp(const void *a, const void *b)
{
	return strcmp(((const struct asker *)a)->user_jid,
	    ((const struct asker *)b)->user_jid);
}

static struct stranger *
stranger_find(
    struct bridge *b, const char *user_jid, const struct barev_jid *who)
{
	struct stranger key, **found;

	key.user_jid = (char *)user_jid;
	key.who = *who;
	found = tfind(&key, &b->strangers, stranger_cmp);
	return found != NULL ? *found : NULL;
}

static struct asker *
asker_get(struct bridge *b, const char *user_jid)
{
	struct asker key, *a, **found;

	key.user_jid = (char *)user_jid;
	if ((found = tfind(&key, &b->askers, asker_cmp)) != NULL)
		return *found;
	a = xcalloc(1, sizeof(*a));
	a->user_jid = xstrdup(user_jid);
	TAILQ_INIT(&a->list);
	tsearch(a, &b->askers, asker_cmp);
	return a;
}

static void on_stranger_timeout(evutil_socket_t, short, void *);

/* A new record, the newest asked of its user and of all (last_asked = now). */
static struct stranger *
stranger_new(struct bridge *b, const char *user_jid,
    const struct barev_jid *who, int64_t last_asked)
{
	struct stranger *s = xcalloc(1, sizeof(*s));

	s->b = b;
	s->user_jid = xstrdup(user_jid);
	s->who = *who;
	s->last_asked = last_asked;
	s->ev_timeout = evtimer_new(b->base, on_stranger_timeout, s);
	s->asker = asker_get(b, user_jid);
	s->asker->n++;
	TAILQ_INSERT_TAIL(&s->asker->list, s, mine);
	TAILQ_INSERT_TAIL(&b->requests, s, by_age);
	tsearch(s, &b->strangers, stranger_cmp);
	return s;
}

/* Asked again now: the newest of its user and of all. */
static void
stranger_touch(struct stranger *s, int64_t now)
{
	struct bridge *b = s->b;

	s->last_asked = now;
	TAILQ_REMOVE(&s->asker->list, s, mine);
	TAILQ_INSERT_TAIL(&s->asker->list, s, mine);
	TAILQ_REMOVE(&b->requests, s, by_age);
	TAILQ_INSERT_TAIL(&b->requests, s, by_age);
}

/* Frees the record only (not its row, not its pipe). */
static void
stranger_free(struct stranger *s)
{
	struct bridge *b = s->b;
	struct asker *a = s->asker;

	tdelete(s, &b->strangers, stranger_cmp);
	TAILQ_REMOVE(&b->requests, s, by_age);
	TAILQ_REMOVE(&a->list, s, mine);
	if (--a->n == 0) {
		tdelete(a, &b->askers, asker_cmp);
		free(a->user_jid);
		free(a);
	}
	event_free(s->ev_timeout);
	shown_clear(&s->seen);
	free(s->user_jid);
	free(s);
}

static void
stranger_forget(
    struct bridge *b, const char *user_jid, const struct barev_jid *who_arg)
{
	/* who_arg may point into the record freed below. */
	struct barev_jid who = *who_arg;
	char *jid = xstrdup(user_jid);
	struct stranger *s = stranger_find(b, jid, &who);

	if (s != NULL)
		stranger_free(s);
	store_pending_del(b->st, jid, &who);
	free(jid);
}

/*
 * The request goes without an answer: the user's client is told (a
 * contact's unsubscribe retracts its request), the pipe closes, the row
 * and the record go.
 */
static void
stranger_drop(struct bridge *b, struct stranger *s, const char *reason)
{
	struct user *u = users_get(b->users, s->user_jid);
	char who[BAREV_JID_STRLEN], subnet[ADDR_STRLEN];
	struct in6_addr net = s->who.addr;

	memset(&net.s6_addr[8], 0, 8);
	log_info("bridge: request dropped reason=%s user=%s peer=%s "
		 "subnet=%s/64",
	    reason, s->user_jid, barev_jid_format(&s->who, who),
	    addr_format(&net, subnet));
	presence_from_contact(b, &s->who, s->user_jid, "unsubscribe", NULL);
	if (u != NULL && user_contact(u, &s->who) == NULL)
		b->net.unwant(b->net.barev_arg, &u->id, &s->who);
	stranger_forget(b, s->user_jid, &s->who);
}

/* The timer follows the oldest request's expiry. */
static void
requests_arm(struct bridge *b)
{
	struct stranger *s = TAILQ_FIRST(&b->requests);
	double left;

	if (s == NULL) {
		evtimer_del(b->ev_requests);
		return;
	}
	left = (double)s->last_asked + b->conf->request_lifetime -
	    (double)time(NULL);
	timer_after(b->ev_requests, left > 0 ? left : 0);
}

static void
on_requests(evutil_socket_t fd, short what, void *arg)
{
	struct bridge *b = arg;
	struct stranger *s;
	int64_t now = (int64_t)time(NULL);

	while ((s = TAILQ_FIRST(&b->requests)) != NULL &&
	    (double)(now - s->last_asked) >= b->conf->request_lifetime)
		stranger_drop(b, s, "expired");
	requests_arm(b);
}

/* Open requests of u's from who's /64 (at most requests_per_user to look at). */
static unsigned
requests_from_subnet(
    struct bridge *b, const char *user_jid, const struct in6_addr *who)
{
	struct asker key, **found;
	struct stranger *s;
	unsigned n = 0;

	key.user_jid = (char *)user_jid;
	if ((found = tfind(&key, &b->askers, asker_cmp)) == NULL)
		return 0;
	for (s = TAILQ_FIRST(&(*found)->list); s != NULL;
	     s = TAILQ_NEXT(s, mine)) {
		if (memcmp(&s->who.addr, who, 8) == 0)
			n++;
	}
	return n;
}

/* The user's subscribe or subscribed to a contact JID: make it a contact. */
static struct contact *
contact_accept(struct bridge *b, struct user *u, const struct barev_jid *who)
{
	struct contact *c = user_contact(u, who);
	struct stranger *s = stranger_find(b, u->jid, who);
	int up;

	if (c == NULL)
		c = user_contact_add(u, who, 0);
	if (s != NULL && s->seen.available && !c->seen.available) {
		/* What the stranger said while waiting is its presence now. */
		c->seen = s->seen;
		memset(&s->seen, 0, sizeof(s->seen));
	}
	stranger_forget(b, u->jid, who);
	up = b->net.is_up(b->net.barev_arg, &u->id, who);
	if (up && !c->pipe_up) {
		/* A stranger's pipe that was open all along. */
		c->pipe_up = 1;
		c->told_valid = 0;
		send_user_presence(b, u, c);
	}
	if (user_online(u))
		b->net.want(b->net.barev_arg, &u->id, &c->who, c->port);
	return c;
}

static void
undeliverable(struct bridge *b, const struct store_msg *m, const char *why);
static void lost_forget(struct bridge *b, int64_t id);

struct dropped {
	struct bridge *b;
	int64_t *ids;
	size_t n;
};

static int
drop_one(void *arg, const struct store_msg *m)
{
	struct dropped *d = arg;

	lost_forget(d->b, m->id);
	undeliverable(d->b, m,
	    "you removed this contact before it could be "
	    "delivered");
	d->ids = xrealloc(d->ids, (d->n + 1) * sizeof(*d->ids));
	d->ids[d->n++] = m->id;
	return 0;
}

/* Messages queued for a contact that is going: their senders hear now. */
static void
drop_queue(struct bridge *b, struct user *u, const struct barev_jid *who)
{
	struct dropped d = { b, NULL, 0 };
	size_t i;

	store_msg_each_for(b->st, u->jid, who, drop_one, &d);
	for (i = 0; i < d.n; i++)
		store_msg_del(b->st, d.ids[i]);
	free(d.ids);
}

static void
contact_drop(
    struct bridge *b, struct user *u, struct contact *c, const char *bare)
{
	char *cj = contact_jid(b, &c->who);
	struct barev_jid who = c->who;

	log_info("bridge: contact removed user=%s contact=%s", u->jid, cj);
	if (c->seen.available)
		presence_from_contact(b, &who, bare, "unavailable", NULL);
	presence_from_contact(b, &who, bare, "unsubscribed", NULL);
	presence_from_contact(b, &who, bare, "unsubscribe", NULL);
	drop_queue(b, u, &who);
	store_contact_del(b->st, u->jid, &who);
	user_contact_remove(u, c);
	b->net.unwant(b->net.barev_arg, &u->id, &who);
	free(cj);
}

/* Presence from a user to one of the contact JIDs (to). */
static void
presence_to_contact(struct bridge *b, xmpp_stanza_t *st, struct user *u,
    const char *bare, const struct barev_jid *who, const char *to)
{
	const char *type = xmpp_stanza_get_type(st);
	const char *from = xmpp_stanza_get_from(st);
	struct contact *c = user_contact(u, who);
	int unhid;

	if (type == NULL) {
		unhid = c != NULL && contact_unhide(c, from);
		if (!user_resource_presence(b, u, from, st) && unhid &&
		    c->pipe_up)
			send_user_presence(b, u, c);
		return;
	}
	if (strcmp(type, "unavailable") == 0) {
		/*
		 * Directed to this contact alone, or one copy of a logout
		 * (which also reaches the gateway's JID, and every contact
		 * the user shares presence with): the resource leaves when
		 * no one sees it any more.
		 */
		if (c != NULL)
			contact_hide(c, from);
		if (c == NULL || user_hidden_from_all(u, from))
			user_resource_presence(b, u, from, st);
		else if (c->pipe_up)
			send_user_presence(b, u, c);
		return;
	}
	if (strcmp(type, "probe") == 0) {
		if (c != NULL && c->seen.available)
			presence_from_contact(b, who, bare, NULL, &c->seen);
		else
			presence_from_contact(
			    b, who, bare, "unavailable", NULL);
		return;
	}
	if (strcmp(type, "subscribe") == 0) {
		c = contact_accept(b, u, who);
		/* Answered from the JID the user typed: one roster entry. */
		contact_rename(b, c, to);
		c->sub_to = 1;
		contact_save(b, u, c);
		presence_from_contact(b, who, bare, "subscribed", NULL);
		if (!c->sub_from)
			presence_from_contact(b, who, bare, "subscribe", NULL);
		if (c->seen.available)
			presence_from_contact(b, who, bare, NULL, &c->seen);
		return;
	}
	if (strcmp(type, "subscribed") == 0) {
		c = contact_accept(b, u, who);
		if (!c->sub_to)
			contact_rename(b, c, to);
		c->sub_from = 1;
		contact_save(b, u, c);
		if (c->seen.available)
			presence_from_contact(b, who, bare, NULL, &c->seen);
		return;
	}
	if (strcmp(type, "unsubscribe") == 0 ||
	    strcmp(type, "unsubscribed") == 0) {
		if (c != NULL)
			contact_drop(b, u, c, bare);
		else if (stranger_find(b, u->jid, who) != NULL) {
			/* A refused stranger: its pipe closes, the request goes. */
			stranger_forget(b, u->jid, who);
			b->net.unwant(b->net.barev_arg, &u->id, who);
		}
	}
}

/* --- messages towards Barev ----------------------------------------- */

static char *
text_of(xmpp_stanza_t *st, const char *name, const char *ns)
{
	char *t = stanza_child_text(st, name, ns), *clean;

	if (t == NULL)
		return NULL;
	clean = chatmsg_clean(t);
	free(t);
	return clean;
}

/* The user's own XHTML-IM part as the reference client reads it, or NULL (made from the text when sent). */
static char *
xhtml_of_message(struct bridge *b, xmpp_stanza_t *msg)
{
	return chatmsg_xhtml(b->ctx, stanza_child(msg, "html", NS_XHTML_IM));
}

/* A body-less typing notification: with a body the reference client drops the text. */
static void
send_chat_state(
    struct bridge *b, struct user *u, struct contact *c, const char *state)
{
	xmpp_stanza_t *m = xmpp_stanza_new(b->ctx);

	xmpp_stanza_set_name(m, "message");
	xmpp_stanza_set_type(m, "chat");
	stanza_add_child(m, state, NS_CHATSTATES);
	b->net.send(b->net.barev_arg, &u->id, &c->who, m);
	xmpp_stanza_release(m);
}

static void
typing_start(struct bridge *b, struct user *u, struct contact *c)
{
	struct typing *t;

	c->composing_at = clock_now();
	if (!c->composing && c->pipe_up)
		send_chat_state(b, u, c, "composing");
	if (c->composing)
		return;
	c->composing = 1;
	t = xcalloc(1, sizeof(*t));
	t->user_jid = xstrdup(u->jid);
	t->who = c->who;
	t->next = b->typing;
	b->typing = t;
	if (!evtimer_pending(b->ev_typing, NULL))
		timer_after(b->ev_typing, TYPING_REPEAT);
}

static void
on_typing(evutil_socket_t fd, short what, void *arg)
{
	struct bridge *b = arg;
	struct typing **tp = &b->typing, *t;
	struct user *u;
	struct contact *c;
	double now = clock_now();

	while ((t = *tp) != NULL) {
		u = users_get(b->users, t->user_jid);
		c = u ? user_contact(u, &t->who) : NULL;
		if (c != NULL && c->composing &&
		    now - c->composing_at > TYPING_MAX)
			c->composing = 0;
		if (c == NULL || !c->composing) {
			*tp = t->next;
			free(t->user_jid);
			free(t);
			continue;
		}
		if (c->pipe_up)
			send_chat_state(b, u, c, "composing");
		tp = &t->next;
	}
	if (b->typing != NULL)
		timer_after(b->ev_typing, TYPING_REPEAT);
}

static const char *const chat_states[] = {
	"active",
	"composing",
	"paused",
	"inactive",
	"gone",
	NULL,
};

static const char *
chat_state_of(xmpp_stanza_t *msg)
{
	size_t i;

	for (i = 0; chat_states[i] != NULL; i++)
		if (stanza_child(msg, chat_states[i], NS_CHATSTATES) != NULL)
			return chat_states[i];
	return NULL;
}

/* The most a chat message may take on a pipe, all of it. */
static size_t
barev_limit(const struct bridge *b)
{
	/*
	 * A pipe closes when its unsent output passes output_bytes, and a
	 * peer running this gateway refuses a stanza over its stanza_bytes;
	 * what other peers take is unknown, so ours is the bound for all.
	 */
	return (size_t)(b->conf->max_stanza_bytes < b->conf->max_output_bytes
		? b->conf->max_stanza_bytes
		: b->conf->max_output_bytes);
}

/* The bytes pipe_send_chat() writes for a message of inner_len bytes on u's pipe to who. */
static size_t
barev_form_size(
    const struct user *u, const struct barev_jid *who, size_t inner_len)
{
	static const char head[] = "<message type=\"chat\" from=\"\" to=\"\">";
	static const char tail[] = "</message>";
	char from[BAREV_JID_STRLEN], to[BAREV_JID_STRLEN];

	return sizeof(head) - 1 + strlen(barev_jid_format(&u->id, from)) +
	    strlen(barev_jid_format(who, to)) + inner_len + sizeof(tail) - 1;
}

/* Why a message of size bytes cannot go to Barev, for its sender. */
static void
too_big_text(const struct bridge *b, size_t size, char *buf, size_t len)
{
	snprintf(buf, len,
	    "This message is too long for Barev: as a Barev peer receives it "
	    "(line breaks and the characters & < > escaped, the text sent "
	    "twice, as plain text and as XHTML-IM) it takes %zu bytes, and "
	    "the limit is %zu bytes. Send it in shorter parts.",
	    size, barev_limit(b));
}

static void
message_to_contact(struct bridge *b, xmpp_stanza_t *st, struct user *u,
    const struct barev_jid *who, const char *to)
{
	const char *type = xmpp_stanza_get_type(st);
	const char *state = chat_state_of(st);
	struct store_msg m;
	struct contact *c;
	char *body, *xhtml, *inner, text[512];
	size_t len, size;
	int64_t now = (int64_t)time(NULL);

	if (type != NULL && strcmp(type, "error") == 0)
		return;
	c = user_contact(u, who);
	if (c == NULL) {
		/* Writing to an address is enough to make it a contact. */
		batch_commit(b);
		c = user_contact_add(u, who, 0);
		contact_rename(b, c, to);
		contact_save(b, u, c);
	}
	body = text_of(st, "body", NULL);
	if (body == NULL || *body == '\0') {
		free(body);
		if (state == NULL)
			return;
		/* Not before a message the user sent earlier. */
		if (b->added != NULL)
			batch_commit(b);
		if (strcmp(state, "composing") == 0)
			typing_start(b, u, c);
		else if (c->composing) {
			c->composing = 0;
			if (c->pipe_up)
				send_chat_state(b, u, c, "active");
		}
		return;
	}
	c->composing = 0;
	xhtml = xhtml_of_message(b, st);
	/*
	 * Decided from its size, never from what a socket happens to absorb:
	 * stored, it would close every pipe it is written to.
	 */
	inner = chatmsg_inner(body, xhtml, &len);
	free(inner);
	if ((size = barev_form_size(u, &c->who, len)) > barev_limit(b)) {
		log_info("bridge: message refused user=%s size=%zu limit=%zu",
		    u->jid, size, barev_limit(b));
		too_big_text(b, size, text, sizeof(text));
		error_reply(b, st, "modify", "policy-violation", text);
		free(body);
		free(xhtml);
		return;
	}
	memset(&m, 0, sizeof(m));
	m.dir = STORE_TO_BAREV;
	m.user_jid = u->jid;
	m.to = c->who;
	m.sender = (char *)(uintptr_t)xmpp_stanza_get_from(st);
	m.stanza_id = (char *)(uintptr_t)xmpp_stanza_get_id(st);
	m.body = body;
	m.xhtml = xhtml;
	m.receipt = stanza_child(st, "request", NS_RECEIPTS) != NULL &&
	    m.stanza_id != NULL;
	m.created = now;
	m.expires = now + (int64_t)b->conf->message_lifetime;
	/* Stored before anything else happens to it: nothing is lost. */
	batch_open(b);
	if ((m.id = store_msg_add(b->st, &m)) == -1) {
		error_reply(b, st, "wait", "internal-server-error",
		    "The gateway could not store this message; it was "
		    "not "
		    "sent.");
		free(body);
		free(xhtml);
		return;
	}
	flush_later(b, st, &m, body, xhtml);
}

/* Stored in the pass's transaction: it goes out after the commit. Takes body and xhtml. */
static void
flush_later(struct bridge *b, xmpp_stanza_t *st, const struct store_msg *m,
    char *body, char *xhtml)
{
	struct added *a = xmalloc(sizeof(*a));

	a->st = xmpp_stanza_clone(st);
	a->m = *m;
	a->m.user_jid = a->user_jid = xstrdup(m->user_jid);
	a->m.body = a->body = body;
	a->m.xhtml = a->xhtml = xhtml;
	a->next = NULL;
	*b->added_tail = a;
	b->added_tail = &a->next;
	if (!b->txn_open)
		batch_commit(b);
}

static void
inflight_free(struct inflight *in)
{
	free(in->sender);
	free(in->stanza_id);
	free(in->user_jid);
	free(in);
}

/* A row the gateway gave up on: deleted with the next delivered ones. */
static void
forget_row(struct bridge *b, int64_t id)
{
	struct receipt *r = xcalloc(1, sizeof(*r));

	r->msg_id = id;
	*b->delivered_tail = r;
	b->delivered_tail = &r->next;
	/* Maybe inside a walk of the queue: the deletion waits for the timer. */
	if (!evtimer_pending(b->ev_delivered, NULL))
		timer_after(b->ev_delivered, DELETE_WAIT);
}

/* Writes one stored message to the pair's pipe; -1 if the pipe is not up. */
static int
send_msg(struct bridge *b, struct user *u, struct contact *c,
    const struct store_msg *m)
{
	struct inflight *in, **ip;
	char *inner, why[512];
	size_t len, size;
	int rc;

	inner = chatmsg_inner(m->body, m->xhtml, &len);
	if ((size = barev_form_size(u, &c->who, len)) > barev_limit(b)) {
		/* Stored before a lower limit was configured. */
		free(inner);
		too_big_text(b, size, why, sizeof(why));
		why[strlen(why) - 1] = '\0';
		undeliverable(b, m, why);
		forget_row(b, m->id);
		c->sent_upto = m->id;
		return 0;
	}
	in = xcalloc(1, sizeof(*in));
	in->id = m->id;
	in->receipt = m->receipt;
	if (m->receipt) {
		in->sender = xstrdup(m->sender);
		in->stanza_id = xstrdup(m->stanza_id);
	}
	in->user_jid = xstrdup(m->user_jid);
	in->to = m->to;
	*b->inflight_tail = in;
	ip = b->inflight_tail;
	b->inflight_tail = &in->next;
	/* Raised first: a report that it was lost lowers it again. */
	c->sent_upto = m->id;
	b->sending = 1;
	rc = b->net.send_chat(
	    b->net.barev_arg, &u->id, &c->who, inner, len, (uint64_t)m->id);
	b->sending = 0;
	free(inner);
	if (rc == -1) {
		/* No report comes for it: it was the last one queued. */
		c->sent_upto = m->id - 1;
		c->backlog = 1;
		*ip = NULL;
		b->inflight_tail = ip;
		inflight_free(in);
		return -1;
	}
	return 0;
}

struct flush {
	struct bridge *b;
	struct user *u;
	struct contact *c;
	int failed;
};

static int
flush_one(void *arg, const struct store_msg *m)
{
	struct flush *f = arg;

	if (send_msg(f->b, f->u, f->c, m) == -1) {
		f->failed = 1;
		return 1;
	}
	return 0;
}

/* Sends what the pipe has not had of the pair's stored queue, or asks for a pipe. */
static void
flush_queue(struct bridge *b, struct user *u, struct contact *c)
{
	struct flush f = { b, u, c, 0 };

	/*
	 * What goes on the wire must be committed first, and what was
	 * delivered must be deleted first, or it would go again.
	 */
	if (b->delivered != NULL)
		batch_open(b);
	batch_commit(b);
	if (!c->pipe_up) {
		b->net.want(b->net.barev_arg, &u->id, &c->who, c->port);
		return;
	}
	if (store_msg_each_after(
		b->st, u->jid, &c->who, c->sent_upto, flush_one, &f) == 0 &&
	    !f.failed)
		c->backlog = 0;
}

/*
 * A message just committed: straight to the pipe when nothing of the
 * pair's is left in the store unsent (the common case), else through the
 * store, which keeps the order.
 */
static void
flush_new(struct bridge *b, const struct store_msg *m)
{
	struct user *u = users_get(b->users, m->user_jid);
	struct contact *c = u != NULL ? user_contact(u, &m->to) : NULL;

	if (c == NULL || m->id <= c->sent_upto)
		return; /* gone, or already sent from the store */
	if (c->pipe_up && !c->backlog && send_msg(b, u, c, m) == 0)
		return;
	c->backlog = 1;
	flush_queue(b, u, c);
}

/*
 * Commits the pass's transaction. Then its receipts go (a receipt only
 * once the message can no longer be sent again) and its new messages are
 * written to their pipes; if the commit failed, their senders hear so.
 */
static void
batch_commit(struct bridge *b)
{
	struct receipt *r;
	struct added *a, *added;
	xmpp_stanza_t *m, *rec;
	int committed = 1;

	if (b->txn_open) {
		b->txn_open = 0;
		if (store_commit(b->st) == -1) {
			/* Deleted rows stay: sent again later, so no receipts. */
			store_rollback(b->st);
			committed = 0;
		}
	}
	while ((r = b->receipts) != NULL) {
		b->receipts = r->next;
		if (committed && r->from != NULL) {
			m = new_stanza(b, "message", r->from, r->to, NULL);
			rec = stanza_add_child(m, "received", NS_RECEIPTS);
			xmpp_stanza_set_attribute(rec, "id", r->id);
			xsend(b, m);
		}
		free(r->from);
		free(r->to);
		free(r->id);
		free(r);
	}
	b->receipts_tail = &b->receipts;
	/* Taken whole first: sending may commit again, and add nothing. */
	added = b->added;
	b->added = NULL;
	b->added_tail = &b->added;
	while ((a = added) != NULL) {
		added = a->next;
		if (committed)
			flush_new(b, &a->m);
		else
			error_reply(b, a->st, "wait", "internal-server-error",
			    "The gateway could not store this message; "
			    "it was "
			    "not sent.");
		xmpp_stanza_release(a->st);
		free(a->user_jid);
		free(a->body);
		free(a->xhtml);
		free(a);
	}
}

static void
on_commit(evutil_socket_t fd, short what, void *arg)
{
	batch_commit(arg);
}

/*
 * Messages and acks arrive in bursts: one transaction for a loop pass's,
 * which also takes the deletions of every message delivered since the last.
 */
static void
batch_open(struct bridge *b)
{
	struct receipt *r;

	if (!b->txn_open && store_begin(b->st) == 0) {
		b->txn_open = 1;
		event_active(b->ev_commit, 0, 0);
	}
	while ((r = b->delivered) != NULL) {
		b->delivered = r->next;
		r->next = NULL;
		store_msg_del(b->st, r->msg_id);
		*b->receipts_tail = r;
		b->receipts_tail = &r->next;
	}
	b->delivered_tail = &b->delivered;
	if (!b->txn_open)
		batch_commit(b);
}

static void
on_delivered(evutil_socket_t fd, short what, void *arg)
{
	struct bridge *b = arg;

	/* Messages may have opened a transaction for them meanwhile. */
	if (b->delivered != NULL)
		batch_open(b);
}

/* One more pipe died with message id on it: how many in a row now. */
static int
lost_again(struct bridge *b, int64_t id)
{
	struct lost *l;

	for (l = b->lost; l != NULL; l = l->next)
		if (l->msg_id == id)
			return ++l->times;
	l = xcalloc(1, sizeof(*l));
	l->msg_id = id;
	l->times = 1;
	l->next = b->lost;
	b->lost = l;
	return 1;
}

static void
lost_forget(struct bridge *b, int64_t id)
{
	struct lost **lp, *l;

	for (lp = &b->lost; (l = *lp) != NULL; lp = &l->next)
		if (l->msg_id == id) {
			*lp = l->next;
			free(l);
			return;
		}
}

struct give_up {
	struct bridge *b;
	int64_t id;
};

static int
give_up_one(void *arg, const struct store_msg *m)
{
	struct give_up *g = arg;
	char why[256];

	if (m->id != g->id)
		return 1;
	snprintf(why, sizeof(why),
	    "the connection to the contact broke right after it was sent, "
	    "%d times in a row, so the gateway gave up on this message",
	    g->b->conf->message_attempts);
	undeliverable(g->b, m, why);
	return 1;
}

/*
 * Message id went down with pipe after pipe: whatever the cause, it must
 * not block the queue behind it. Its sender hears, its row goes.
 */
static void
give_up_lost(struct bridge *b, struct user *u, struct contact *c, int64_t id)
{
	struct give_up g = { b, id };
	char who[BAREV_JID_STRLEN];

	log_info("bridge: message given up user=%s contact=%s id=%lld "
		 "attempts=%d",
	    u->jid, barev_jid_format(&c->who, who), (long long)id,
	    b->conf->message_attempts);
	lost_forget(b, id);
	store_msg_each_after(b->st, u->jid, &c->who, id - 1, give_up_one, &g);
	forget_row(b, id);
}

static void
confirmed(void *arg, uint64_t token, enum pipe_confirm how)
{
	struct bridge *b = arg;
	struct inflight **ip, *in;
	struct user *u;
	struct contact *c;
	struct receipt *r;

	for (ip = &b->inflight; (in = *ip) != NULL; ip = &in->next)
		if ((uint64_t)in->id == token)
			break;
	if (in == NULL)
		return;
	*ip = in->next;
	if (b->inflight_tail == &in->next)
		b->inflight_tail = ip;
	if (how == PIPE_LOST) {
		u = users_get(b->users, in->user_jid);
		c = u != NULL ? user_contact(u, &in->to) : NULL;
		if (c != NULL && !b->sending &&
		    lost_again(b, in->id) >= b->conf->message_attempts)
			give_up_lost(b, u, c, in->id);
		else if (c != NULL && c->sent_upto >= in->id) {
			/* Sent again on the next pipe: at least once. */
			c->sent_upto = in->id - 1;
			c->backlog = 1;
		}
		inflight_free(in);
		return;
	}
	lost_forget(b, in->id);
	r = xcalloc(1, sizeof(*r));
	r->msg_id = in->id;
	/* A receipt only with proof that the peer read it. */
	if (how == PIPE_CONFIRMED && in->receipt) {
		r->from = contact_name(b, in->user_jid, &in->to);
		r->to = xstrdup(in->sender);
		r->id = xstrdup(in->stanza_id);
	}
	*b->delivered_tail = r;
	b->delivered_tail = &r->next;
	inflight_free(in);
	/*
	 * The deletion rides with the next messages' transaction; without
	 * one soon, it gets its own.
	 */
	if (b->txn_open)
		batch_open(b);
	else if (!evtimer_pending(b->ev_delivered, NULL))
		timer_after(b->ev_delivered, DELETE_WAIT);
}

/* An error to the sender of a message that will never be delivered. */
static void
undeliverable(struct bridge *b, const struct store_msg *m, const char *why)
{
	char *from = contact_name(b, m->user_jid, &m->to), text[512],
	     who[BAREV_JID_STRLEN];
	xmpp_stanza_t *e, *err;

	snprintf(text, sizeof(text), "Not delivered to %s: %s.",
	    barev_jid_format(&m->to, who), why);
	e = new_stanza(b, "message", from, m->sender, "error");
	if (m->stanza_id != NULL)
		xmpp_stanza_set_id(e, m->stanza_id);
	stanza_add_text_child(e, "body", m->body);
	err = stanza_add_child(e, "error", NULL);
	xmpp_stanza_set_type(err, "wait");
	stanza_add_child(err, "recipient-unavailable", NS_STANZAS);
	stanza_add_text(stanza_add_child(err, "text", NS_STANZAS), text);
	xsend(b, e);
	free(from);
}

/* "90 seconds", "7 days": how long, as a person says it. */
static void
human_duration(double s, char *buf, size_t len)
{
	if (s < 120)
		snprintf(buf, len, "%.0f seconds", s);
	else if (s < 7200)
		snprintf(buf, len, "%.0f minutes", s / 60);
	else if (s < 172800)
		snprintf(buf, len, "%.0f hours", s / 3600);
	else
		snprintf(buf, len, "%.0f days", s / 86400);
}

static int
expired_one(void *arg, const struct store_msg *m)
{
	struct bridge *b = arg;
	char why[160], span[32];

	human_duration(b->conf->message_lifetime, span, sizeof(span));
	snprintf(why, sizeof(why),
	    "the contact could not be reached for %s, "
	    "so the gateway gave up",
	    span);
	undeliverable(b, m, why);
	return 0;
}

static void
on_expire(evutil_socket_t fd, short what, void *arg)
{
	struct bridge *b = arg;

	batch_commit(b);
	store_msg_take_expired(b->st, (int64_t)time(NULL), expired_one, b);
	timer_after(b->ev_expire, EXPIRE_EVERY);
}

/* --- registration (XEP-0077) and the address prompt (XEP-0100) ------ */

static void
add_field(xmpp_stanza_t *form, const char *type, const char *var,
    const char *label, const char *value)
{
	xmpp_stanza_t *f = stanza_add_child(form, "field", NULL);

	xmpp_stanza_set_type(f, type);
	xmpp_stanza_set_attribute(f, "var", var);
	if (label != NULL)
		xmpp_stanza_set_attribute(f, "label", label);
	if (value != NULL)
		stanza_add_text_child(f, "value", value);
}

static void
register_form(struct bridge *b, xmpp_stanza_t *iq, const char *bare)
{
	struct user *u = users_get(b->users, bare);
	xmpp_stanza_t *r = stanza_reply(iq, "result"), *q, *x;
	char *local = xstrndup(bare, strcspn(bare, "@"));
	const char *nick = u ? u->id.nick : local;
	static const char words[] =
	    "Choose the nickname your Barev contacts will see. Your "
	    "Barev "
	    "address will be that nickname at this gateway's Yggdrasil "
	    "address.";
	char text[512];

	if (u == NULL && !access_ok(b, bare)) {
		/* The same words as a submission would get. */
		not_served(b, bare, text, sizeof(text));
		error_reply(b, iq, "cancel", "not-allowed", text);
		xmpp_stanza_release(r);
		free(local);
		return;
	}
	xmpp_stanza_set_from(r, b->domain);
	q = stanza_add_child(r, "query", NS_REGISTER);
	if (u != NULL)
		stanza_add_child(q, "registered", NULL);
	stanza_add_text_child(q, "instructions", words);
	stanza_add_text_child(q, "username", nick);
	x = stanza_add_child(q, "x", NS_XDATA);
	xmpp_stanza_set_type(x, "form");
	stanza_add_text_child(x, "title", "Barev gateway registration");
	stanza_add_text_child(x, "instructions", words);
	add_field(x, "hidden", "FORM_TYPE", NULL, NS_REGISTER);
	add_field(x, "text-single", "username", "Barev nickname", nick);
	xsend(b, r);
	free(local);
}

/* The value of a submitted data form's field var, or NULL. */
static char *
form_value(xmpp_stanza_t *x, const char *var)
{
	xmpp_stanza_t *f;
	const char *v;

	for (f = x ? xmpp_stanza_get_children(x) : NULL; f != NULL;
	     f = xmpp_stanza_get_next(f)) {
		if (!xmpp_stanza_is_tag(f) ||
		    strcmp(xmpp_stanza_get_name(f), "field") != 0)
			continue;
		v = xmpp_stanza_get_attribute(f, "var");
		if (v != NULL && strcmp(v, var) == 0)
			return text_of(f, "value", NULL);
	}
	return NULL;
}

/* The nickname from a data form's username field, or from <username/>. */
static char *
submitted_nick(xmpp_stanza_t *q)
{
	char *nick = form_value(stanza_child(q, "x", NS_XDATA), "username");

	return nick ? nick : text_of(q, "username", NULL);
}

static void
unregister(struct bridge *b, struct user *u)
{
	struct contact *c;
	struct asker key, **found;
	struct stranger *s;
	char *bare = xstrdup(u->jid);

	log_info("bridge: unregistered jid=%s", bare);

	while ((c = u->contacts) != NULL)
		contact_drop(b, u, c, bare);
	key.user_jid = bare;
	/* The last record frees the asker: look it up each time. */
	while ((found = tfind(&key, &b->askers, asker_cmp)) != NULL) {
		s = TAILQ_FIRST(&(*found)->list);
		b->net.unwant(b->net.barev_arg, &u->id, &s->who);
		stranger_forget(b, bare, &s->who);
	}
	store_user_del(b->st, bare);
	users_remove(b->users, u);
	xsend(b, new_stanza(b, "presence", b->domain, bare, "unavailable"));
	xsend(b, new_stanza(b, "presence", b->domain, bare, "unsubscribed"));
	xsend(b, new_stanza(b, "presence", b->domain, bare, "unsubscribe"));
	free(bare);
}

/* Why a registration failed, as an XMPP error. */
struct refusal {
	const char *type;
	const char *condition;
	char text[512];
};

/* A fresh address of the node's /64 for bare, stable across restarts. */
static void
own_address(struct bridge *b, const char *bare, struct in6_addr *out)
{
	unsigned attempt;

	for (attempt = 0; attempt < 64; attempt++) {
		ygg_user_address(&b->node.subnet, bare, attempt, out);
		if (users_count_at(b->users, out) == 0)
			return;
	}
}

/*
 * "port 1337" or "ports 1337 and 5299": where the gateway listens, which is
 * what a user's Barev contacts dial (barev.default_port is the port the
 * gateway dials them on).
 */
static void
listen_ports(const struct bridge *b, char *buf, size_t len)
{
	const struct conf_listenlist *l = &b->conf->barev_listen;
	unsigned short seen[64];
	size_t i, j, n = 0, off;

	for (i = 0; i < l->n && n < sizeof(seen) / sizeof(seen[0]); i++) {
		for (j = 0; j < n && seen[j] != l->v[i].port; j++)
			;
		if (j == n)
			seen[n++] = l->v[i].port;
	}
	off = (size_t)snprintf(buf, len, "port%s", n == 1 ? "" : "s");
	for (i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%u",
		    i == 0 ? " " : (i + 1 == n ? " and " : ", "), seen[i]);
}

/* Registers bare as nick; on success tells the user their address. */
static int
register_user(
    struct bridge *b, const char *bare, const char *nick, struct refusal *why)
{
	struct user *u = users_get(b->users, bare);
	struct barev_jid id;
	char text[768], addr[BAREV_JID_STRLEN], ports[256];
	const char *cause;

	why->type = "cancel";
	if (!access_ok(b, bare)) {
		why->condition = "not-allowed";
		not_served(b, bare, why->text, sizeof(why->text));
		return -1;
	}
	if (b->conf->per_user ? !b->node.have_subnet : !b->node.have_addr) {
		why->condition = "service-unavailable";
		snprintf(why->text, sizeof(why->text),
		    "This gateway has no "
		    "Barev (Yggdrasil) address yet; ask its operator.");
		return -1;
	}
	if (barev_nick_check(nick, strlen(nick), &cause) == -1) {
		why->type = "modify";
		why->condition = "not-acceptable";
		snprintf(why->text, sizeof(why->text),
		    "That nickname cannot be "
		    "used: %s.",
		    cause);
		return -1;
	}
	if (u != NULL) {
		if (strcasecmp(u->id.nick, nick) == 0)
			return 0;
		why->condition = "conflict";
		snprintf(why->text, sizeof(why->text),
		    "You are registered as "
		    "%s; unregister first to change it.",
		    u->id.nick);
		return -1;
	}
	memset(&id, 0, sizeof(id));
	snprintf(id.nick, sizeof(id.nick), "%s", nick);
	if (b->conf->per_user)
		own_address(b, bare, &id.addr);
	else
		id.addr = b->node.addr;
	if (store_user_add(b->st, bare, nick, &id.addr, &cause) == -1) {
		why->condition = "conflict";
		if (strcmp(cause, "nick taken") == 0)
			snprintf(why->text, sizeof(why->text),
			    "The nickname %s "
			    "is taken on this gateway; choose another.",
			    nick);
		else
			snprintf(why->text, sizeof(why->text), "%s", cause);
		return -1;
	}
	users_add(b->users, bare, &id);
	log_info("bridge: registered jid=%s barev=%s", bare,
	    barev_jid_format(&id, addr));
	/* XEP-0100: the gateway asks to see the user's presence. */
	xsend(b, new_stanza(b, "presence", b->domain, bare, "subscribe"));
	gateway_presence_to(b, bare, NULL);
	listen_ports(b, ports, sizeof(ports));
	snprintf(text, sizeof(text),
	    "Welcome. Your Barev address is %s (%s). Give it to the "
	    "people you want to talk to on Barev; they add it as a "
	    "contact. To "
	    "add a Barev contact yourself, add "
	    "nick@their-yggdrasil-address "
	    "through this gateway (%s).",
	    addr, ports, b->domain);
	tell_user(b, bare, text);
	return 0;
}

static void
register_submit(
    struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *q, const char *bare)
{
	struct user *u = users_get(b->users, bare);
	struct refusal why;
	char *nick;

	if (stanza_child(q, "remove", NULL) != NULL) {
		if (u == NULL) {
			error_reply(b, iq, "auth", "registration-required",
			    "You are not registered with this "
			    "gateway.");
			return;
		}
		unregister(b, u);
		xsend(b, stanza_reply(iq, "result"));
		return;
	}
	if ((nick = submitted_nick(q)) == NULL) {
		error_reply(b, iq, "modify", "bad-request",
		    "Send the nickname in <username/> or the form's "
		    "username "
		    "field.");
		return;
	}
	if (register_user(b, bare, nick, &why) == -1)
		error_reply(b, iq, why.type, why.condition, why.text);
	else
		xsend(b, stanza_reply(iq, "result"));
	free(nick);
}

static void
gateway_iq(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *q)
{
	const char *type = xmpp_stanza_get_type(iq);
	xmpp_stanza_t *r, *rq;
	struct barev_jid who;
	const char *cause;
	char *prompt, *jid, text[256];

	if (strcmp(type, "get") == 0) {
		r = stanza_reply(iq, "result");
		rq = stanza_add_child(r, "query", NS_GATEWAY);
		stanza_add_text_child(rq, "desc",
		    "Enter the Barev address of "
		    "your contact, nick@yggdrasil-address, e.g. "
		    "inky@201:af82:9f2f:7809:be0c:360a:1587:6be7");
		stanza_add_text_child(rq, "prompt", "Barev address");
		xsend(b, r);
		return;
	}
	prompt = text_of(q, "prompt", NULL);
	if (prompt == NULL ||
	    barev_jid_parse(prompt, peer_flags(b), &who, &cause) == -1) {
		snprintf(text, sizeof(text), "%s",
		    prompt ? cause
			   : "expected nick@ipv6, e.g. inky@201:af82::1");
		error_reply(b, iq, "modify", "jid-malformed", text);
		free(prompt);
		return;
	}
	jid = contact_jid(b, &who);
	r = stanza_reply(iq, "result");
	rq = stanza_add_child(r, "query", NS_GATEWAY);
	stanza_add_text_child(rq, "jid", jid);
	xsend(b, r);
	free(jid);
	free(prompt);
}

/* --- ad-hoc commands (XEP-0050) ---------------------------------------- */

typedef void (*command_fn)(struct bridge *, xmpp_stanza_t *iq,
    xmpp_stanza_t *cmd, xmpp_stanza_t *form, const char *bare);

struct command {
	const char *node;
	const char *name;
	command_fn run;
};

static void cmd_register(struct bridge *, xmpp_stanza_t *, xmpp_stanza_t *,
    xmpp_stanza_t *, const char *);
static void cmd_unregister(struct bridge *, xmpp_stanza_t *, xmpp_stanza_t *,
    xmpp_stanza_t *, const char *);
static void cmd_address(struct bridge *, xmpp_stanza_t *, xmpp_stanza_t *,
    xmpp_stanza_t *, const char *);
static void cmd_contact_port(struct bridge *, xmpp_stanza_t *, xmpp_stanza_t *,
    xmpp_stanza_t *, const char *);
static void cmd_own_address(struct bridge *, xmpp_stanza_t *, xmpp_stanza_t *,
    xmpp_stanza_t *, const char *);

static const struct command commands[] = {
	{ "register", "Register", cmd_register },
	{ "unregister", "Unregister", cmd_unregister },
	{ "address", "My Barev address", cmd_address },
	{ "contact-port", "Set a contact's port", cmd_contact_port },
	{ "own-address", "Get a Barev address of my own", cmd_own_address },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* A command answer; status is executing, completed or canceled. */
static xmpp_stanza_t *
command_reply(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd,
    const char *status, xmpp_stanza_t **out_cmd)
{
	xmpp_stanza_t *r = stanza_reply(iq, "result"), *c;
	const char *sid = xmpp_stanza_get_attribute(cmd, "sessionid");
	char id[32];

	xmpp_stanza_set_from(r, b->domain);
	c = stanza_add_child(r, "command", NS_COMMANDS);
	xmpp_stanza_set_attribute(
	    c, "node", xmpp_stanza_get_attribute(cmd, "node"));
	if (sid == NULL) {
		snprintf(id, sizeof(id), "s-%lu", ++b->serial);
		sid = id;
	}
	xmpp_stanza_set_attribute(c, "sessionid", sid);
	xmpp_stanza_set_attribute(c, "status", status);
	*out_cmd = c;
	return r;
}

static void
command_done(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd,
    const char *note_type, const char *text)
{
	xmpp_stanza_t *c, *r = command_reply(b, iq, cmd, "completed", &c);
	xmpp_stanza_t *note = stanza_add_child(c, "note", NULL);

	xmpp_stanza_set_type(note, note_type);
	stanza_add_text(note, text);
	xsend(b, r);
}

/* A one-page form; the client submits it with action complete. */
static xmpp_stanza_t *
command_form(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd,
    const char *title, const char *instructions, xmpp_stanza_t **out_r)
{
	xmpp_stanza_t *c, *actions, *x;

	*out_r = command_reply(b, iq, cmd, "executing", &c);
	actions = stanza_add_child(c, "actions", NULL);
	xmpp_stanza_set_attribute(actions, "execute", "complete");
	stanza_add_child(actions, "complete", NULL);
	x = stanza_add_child(c, "x", NS_XDATA);
	xmpp_stanza_set_type(x, "form");
	stanza_add_text_child(x, "title", title);
	stanza_add_text_child(x, "instructions", instructions);
	return x;
}

static void
cmd_register(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd,
    xmpp_stanza_t *form, const char *bare)
{
	xmpp_stanza_t *x, *r;
	struct refusal why;
	char *nick, *local, text[512];

	if (form == NULL && users_get(b->users, bare) == NULL &&
	    !access_ok(b, bare)) {
		/* No form for someone who could never submit it. */
		not_served(b, bare, text, sizeof(text));
		command_done(b, iq, cmd, "error", text);
		return;
	}
	if (form == NULL) {
		local = xstrndup(bare, strcspn(bare, "@"));
		x = command_form(b, iq, cmd, "Barev gateway registration",
		    "Choose the nickname your Barev contacts will see.", &r);
		add_field(
		    x, "text-single", "username", "Barev nickname", local);
		xsend(b, r);
		free(local);
		return;
	}
	if ((nick = form_value(form, "username")) == NULL) {
		command_done(b, iq, cmd, "error", "No nickname was given.");
		return;
	}
	if (register_user(b, bare, nick, &why) == -1)
		command_done(b, iq, cmd, "error", why.text);
	else
		command_done(b, iq, cmd, "info",
		    "You are registered; a "
		    "message tells you your Barev address.");
	free(nick);
}

/* Whether a submitted boolean field (XEP-0004) is true. */
static int
form_true(xmpp_stanza_t *form, const char *var)
{
	char *v = form_value(form, var);
	int yes = v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);

	free(v);
	return yes;
}

/* Nothing is deleted before the user says yes to what goes. */
static void
cmd_unregister(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd,
    xmpp_stanza_t *form, const char *bare)
{
	struct user *u = users_get(b->users, bare);
	xmpp_stanza_t *x, *r;
	struct contact *c;
	char text[256];
	size_t n = 0;

	if (u == NULL) {
		command_done(b, iq, cmd, "error",
		    "You are not registered with this gateway.");
		return;
	}
	if (form == NULL) {
		for (c = u->contacts; c != NULL; c = c->next)
			n++;
		snprintf(text, sizeof(text),
		    "Unregistering deletes your Barev address, your "
		    "%zu Barev "
		    "contact%s and the messages still queued for them. "
		    "They "
		    "cannot be brought back.",
		    n, n == 1 ? "" : "s");
		x = command_form(
		    b, iq, cmd, "Unregister from the Barev gateway", text, &r);
		add_field(x, "boolean", "confirm",
		    "Delete my registration, contacts and queued "
		    "messages",
		    "0");
		xsend(b, r);
		return;
	}
	if (!form_true(form, "confirm")) {
		command_done(b, iq, cmd, "info",
		    "Nothing was deleted; you are still registered.");
		return;
	}
	unregister(b, u);
	command_done(b, iq, cmd, "info",
	    "You are unregistered; your Barev "
	    "contacts and queued messages were removed.");
}

static void
cmd_address(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd,
    xmpp_stanza_t *form, const char *bare)
{
	struct user *u = users_get(b->users, bare);
	char addr[BAREV_JID_STRLEN], text[512], ports[256];

	if (u == NULL) {
		command_done(b, iq, cmd, "error",
		    "You are not registered with this gateway.");
		return;
	}
	listen_ports(b, ports, sizeof(ports));
	snprintf(text, sizeof(text), "Your Barev address is %s (%s).",
	    barev_jid_format(&u->id, addr), ports);
	command_done(b, iq, cmd, "info", text);
}

/* The reference clients listen on 1337, the specification says 5299. */
static void
cmd_contact_port(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd,
    xmpp_stanza_t *form, const char *bare)
{
	struct user *u = users_get(b->users, bare);
	xmpp_stanza_t *x, *r;
	struct barev_jid who;
	struct contact *c;
	const char *cause;
	char *addr = NULL, *port = NULL, text[256], *end;
	long v;

	if (u == NULL) {
		command_done(b, iq, cmd, "error",
		    "You are not registered with this gateway.");
		return;
	}
	if (form == NULL) {
		x = command_form(b, iq, cmd, "A Barev contact's port",
		    "Which port does your contact's Barev client "
		    "listen on? "
		    "Pidgin's plugin uses 1337.",
		    &r);
		add_field(x, "text-single", "contact",
		    "Barev address (nick@ipv6) or the contact's JID", NULL);
		add_field(x, "text-single", "port", "Port", "1337");
		xsend(b, r);
		return;
	}
	addr = form_value(form, "contact");
	port = form_value(form, "port");
	v = port ? strtol(port, &end, 10) : 0;
	/* As the user knows it: a Barev address, or the JID in the roster. */
	if (addr == NULL ||
	    (barev_jid_parse(addr, peer_flags(b), &who, &cause) == -1 &&
		gateway_jid_to_barev(
		    addr, b->domain, peer_flags(b), &who, &cause) == -1)) {
		snprintf(text, sizeof(text), "Not a Barev address: %s.",
		    addr ? cause : "none given");
		command_done(b, iq, cmd, "error", text);
	} else if (port == NULL || *end != '\0' || v < 1 || v > 65535)
		command_done(b, iq, cmd, "error",
		    "The port must be a number from 1 to 65535.");
	else if ((c = user_contact(u, &who)) == NULL)
		command_done(b, iq, cmd, "error",
		    "That address is not one of "
		    "your contacts; add it first.");
	else {
		c->port = (unsigned short)v;
		contact_save(b, u, c);
		if (!c->pipe_up && user_online(u)) {
			/* Dial the new port now rather than after a backoff. */
			b->net.unwant(b->net.barev_arg, &u->id, &c->who);
			b->net.want(b->net.barev_arg, &u->id, &c->who, c->port);
		}
		snprintf(text, sizeof(text), "%s is now reached on port %ld.",
		    addr, v);
		command_done(b, iq, cmd, "info", text);
	}
	free(addr);
	free(port);
}

/* A shared-address user moves to an address of their own (per-user mode). */
static void
cmd_own_address(struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd,
    xmpp_stanza_t *form, const char *bare)
{
	struct user *u = users_get(b->users, bare);
	struct barev_jid old, id;
	struct contact *c;
	char addr[BAREV_JID_STRLEN], text[256];

	if (u == NULL) {
		command_done(b, iq, cmd, "error",
		    "You are not registered with this gateway.");
		return;
	}
	if (!b->conf->per_user) {
		command_done(b, iq, cmd, "error",
		    "This gateway gives all its "
		    "users the same address.");
		return;
	}
	if (ygg_in_subnet(&b->node.subnet, &u->id.addr)) {
		snprintf(text, sizeof(text), "%s is already your own address.",
		    barev_jid_format(&u->id, addr));
		command_done(b, iq, cmd, "info", text);
		return;
	}
	old = id = u->id;
	own_address(b, bare, &id.addr);
	if (store_user_set_addr(b->st, bare, &id.addr) != 0 ||
	    users_set_id(b->users, u, &id) == -1) {
		command_done(b, iq, cmd, "error",
		    "The gateway could not move "
		    "you to a new address; nothing changed.");
		return;
	}
	/* Pipes belong to identities: the old ones close, new ones open. */
	for (c = u->contacts; c != NULL; c = c->next) {
		b->net.unwant(b->net.barev_arg, &old, &c->who);
		c->pipe_up = 0;
		c->told_valid = 0;
		c->sent_upto = 0;
		c->backlog = 1;
		if (c->seen.available) {
			shown_clear(&c->seen);
			presence_from_contact(
			    b, &c->who, u->jid, "unavailable", NULL);
		}
		if (user_online(u))
			b->net.want(b->net.barev_arg, &u->id, &c->who, c->port);
	}
	log_info("bridge: own address jid=%s barev=%s", bare,
	    barev_jid_format(&u->id, addr));
	snprintf(text, sizeof(text),
	    "Your Barev address is now %s. Your "
	    "Barev contacts must add you under it.",
	    addr);
	command_done(b, iq, cmd, "info", text);
}

static void
command_iq(
    struct bridge *b, xmpp_stanza_t *iq, xmpp_stanza_t *cmd, const char *bare)
{
	const char *node = xmpp_stanza_get_attribute(cmd, "node");
	const char *action = xmpp_stanza_get_attribute(cmd, "action");
	xmpp_stanza_t *form = stanza_child(cmd, "x", NS_XDATA), *c, *r;
	const char *ftype = form ? xmpp_stanza_get_type(form) : NULL;
	size_t i;

	for (i = 0; i < NCOMMANDS; i++)
		if (node != NULL && strcmp(commands[i].node, node) == 0)
			break;
	if (i == NCOMMANDS) {
		error_reply(
		    b, iq, "cancel", "item-not-found", "No such command.");
		return;
	}
	if (action != NULL && strcmp(action, "cancel") == 0) {
		r = command_reply(b, iq, cmd, "canceled", &c);
		xsend(b, r);
		return;
	}
	if (ftype == NULL || strcmp(ftype, "submit") != 0)
		form = NULL;
	commands[i].run(b, iq, cmd, form, bare);
}

/* disco#items of the command list and disco#info of each command. */
static int
command_disco(struct bridge *b, xmpp_stanza_t *iq, const char *bare)
{
	xmpp_stanza_t *q, *r, *rq, *item;
	const char *node;
	size_t i;

	if ((q = stanza_child(iq, "query", NS_DISCO_ITEMS)) != NULL &&
	    (node = xmpp_stanza_get_attribute(q, "node")) != NULL &&
	    strcmp(node, NS_COMMANDS) == 0) {
		r = stanza_reply(iq, "result");
		rq = stanza_add_child(r, "query", NS_DISCO_ITEMS);
		xmpp_stanza_set_attribute(rq, "node", NS_COMMANDS);
		for (i = 0; i < NCOMMANDS; i++) {
			item = stanza_add_child(rq, "item", NULL);
			xmpp_stanza_set_attribute(item, "jid", b->domain);
			xmpp_stanza_set_attribute(
			    item, "node", commands[i].node);
			xmpp_stanza_set_attribute(
			    item, "name", commands[i].name);
		}
		xsend(b, r);
		return 0;
	}
	if ((q = stanza_child(iq, "query", NS_DISCO_INFO)) == NULL ||
	    (node = xmpp_stanza_get_attribute(q, "node")) == NULL)
		return -1;
	for (i = 0; i < NCOMMANDS; i++) {
		if (strcmp(node, commands[i].node) != 0)
			continue;
		r = stanza_reply(iq, "result");
		rq = stanza_add_child(r, "query", NS_DISCO_INFO);
		xmpp_stanza_set_attribute(rq, "node", node);
		item = stanza_add_child(rq, "identity", NULL);
		xmpp_stanza_set_attribute(item, "category", "automation");
		xmpp_stanza_set_attribute(item, "type", "command-node");
		xmpp_stanza_set_attribute(item, "name", commands[i].name);
		item = stanza_add_child(rq, "feature", NULL);
		xmpp_stanza_set_attribute(item, "var", NS_COMMANDS);
		item = stanza_add_child(rq, "feature", NULL);
		xmpp_stanza_set_attribute(item, "var", NS_XDATA);
		xsend(b, r);
		return 0;
	}
	return -1;
}

/* --- from the XMPP server --------------------------------------------- */

static void
gateway_presence(struct bridge *b, xmpp_stanza_t *st, const char *bare)
{
	const char *type = xmpp_stanza_get_type(st);
	struct user *u = users_get(b->users, bare);

	if (type == NULL || strcmp(type, "unavailable") == 0) {
		if (u != NULL)
			user_resource_presence(
			    b, u, xmpp_stanza_get_from(st), st);
		return;
	}
	if (strcmp(type, "subscribe") == 0) {
		if (u == NULL) {
			refuse_unregistered(b, st, bare);
			return;
		}
		xsend(b,
		    new_stanza(b, "presence", b->domain, bare, "subscribed"));
		gateway_presence_to(b, bare, NULL);
		return;
	}
	if (strcmp(type, "probe") == 0 && u != NULL)
		gateway_presence_to(b, xmpp_stanza_get_from(st), NULL);
}

static int
xmpp_to_gateway(struct bridge *b, xmpp_stanza_t *st, const char *bare)
{
	const char *name = xmpp_stanza_get_name(st);
	const char *type = xmpp_stanza_get_type(st);
	xmpp_stanza_t *q;

	if (strcmp(name, "presence") == 0) {
		gateway_presence(b, st, bare);
		return 0;
	}
	if (strcmp(name, "iq") != 0 || type == NULL ||
	    (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
		return -1;
	if ((q = stanza_child(st, "query", NS_REGISTER)) != NULL) {
		if (strcmp(type, "get") == 0)
			register_form(b, st, bare);
		else
			register_submit(b, st, q, bare);
		return 0;
	}
	if ((q = stanza_child(st, "query", NS_GATEWAY)) != NULL) {
		gateway_iq(b, st, q);
		return 0;
	}
	if (strcmp(type, "set") == 0 &&
	    (q = stanza_child(st, "command", NS_COMMANDS)) != NULL) {
		command_iq(b, st, q, bare);
		return 0;
	}
	if (strcmp(type, "get") == 0)
		return command_disco(b, st, bare);
	return -1;
}

static int
xmpp_to_contact(
    struct bridge *b, xmpp_stanza_t *st, const char *bare, const char *to)
{
	const char *name = xmpp_stanza_get_name(st);
	const char *type = xmpp_stanza_get_type(st);
	struct user *u = users_get(b->users, bare);
	struct barev_jid who;
	const char *cause;
	char text[256];

	if (strcmp(name, "iq") == 0)
		return -1; /* Barev peers answer no queries: the service does */
	if (type != NULL && strcmp(type, "error") == 0)
		return 0;
	if (gateway_jid_to_barev(to, b->domain, peer_flags(b), &who, &cause) ==
	    -1) {
		snprintf(text, sizeof(text),
		    "Not a Barev contact: %s. Contacts "
		    "look like nick@yggdrasil-address; ask %s "
		    "(XEP-0100) for "
		    "the JID of one.",
		    cause, b->domain);
		if (strcmp(name, "message") == 0 ||
		    (type != NULL && strcmp(type, "subscribe") == 0))
			error_reply(b, st, "modify", "jid-malformed", text);
		return 0;
	}
	if (u == NULL) {
		if (strcmp(name, "message") == 0 ||
		    (type != NULL && strcmp(type, "subscribe") == 0))
			refuse_unregistered(b, st, bare);
		return 0;
	}
	if (strcmp(name, "presence") == 0)
		presence_to_contact(b, st, u, bare, &who, to);
	else if (strcmp(name, "message") == 0)
		message_to_contact(b, st, u, &who, to);
	return 0;
}

int
bridge_xmpp(struct bridge *b, xmpp_stanza_t *st)
{
	const char *to = xmpp_stanza_get_to(st);
	const char *from = xmpp_stanza_get_from(st);
	const char *name = xmpp_stanza_get_name(st);
	struct jid_parts parts;
	const char *cause;
	struct user *u;
	char *bare;
	int rc = 0;

	if (to == NULL || from == NULL || name == NULL ||
	    jid_split(to, &parts, &cause) == -1 ||
	    !jid_on_domain(&parts, b->domain) ||
	    jid_bare(from, &bare, &cause) == -1)
		return -1;
	/*
	 * Messages to contacts join the pass's transaction; any other write
	 * commits on its own, so that a failed batch takes nothing else with it.
	 */
	if (parts.local == NULL || strcmp(name, "message") != 0)
		batch_commit(b);
	/* Servers fold localparts to lower case; so do we for the user's JID. */
	for (char *p = bare; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	if ((u = users_get(b->users, bare)) != NULL && u->refused &&
	    !refused_may(st, parts.local == NULL))
		refuse_stanza(b, st, bare);
	else if (parts.local == NULL)
		rc = xmpp_to_gateway(b, st, bare);
	else
		rc = xmpp_to_contact(b, st, bare, to);
	free(bare);
	return rc;
}

/* The gateway is back: it shows itself and asks for the user's presence. */
static void
probe_user(struct user *u, void *arg)
{
	struct bridge *b = arg;

	if (u->refused)
		return;
	gateway_presence_to(b, u->jid, NULL);
	xsend(b, new_stanza(b, "presence", b->domain, u->jid, "probe"));
}

struct kept {
	struct bridge *b;
	int64_t *sent; /* ids, deleted after the walk */
	size_t n, cap;
};

static int
send_kept_one(void *arg, const struct store_msg *m)
{
	struct kept *k = arg;
	struct bridge *b = k->b;
	struct user *u = users_get(b->users, m->user_jid);
	xmpp_stanza_t *msg, *html = NULL, *delay;
	char stamp[32];
	time_t t = (time_t)m->created;
	struct tm tm;

	if (u != NULL) {
		if (m->xhtml != NULL)
			html = xmpp_stanza_new_from_string(b->ctx, m->xhtml);
		msg = chat_to_user(b, &m->to, u->jid, m->body, html);
		/* XEP-0203: the user's client shows when it was written. */
		gmtime_r(&t, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
		delay = stanza_add_child(msg, "delay", NS_DELAY);
		xmpp_stanza_set_attribute(delay, "from", b->domain);
		xmpp_stanza_set_attribute(delay, "stamp", stamp);
		if (b->net.xmpp_send(b->net.xmpp_arg, msg) == -1) {
			xmpp_stanza_release(msg);
			return 1; /* down again: the rest waits */
		}
		xmpp_stanza_release(msg);
	}
	if (k->n == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 64;
		k->sent = xrealloc(k->sent, k->cap * sizeof(*k->sent));
	}
	k->sent[k->n++] = m->id;
	return 0;
}

/* What Barev contacts wrote while the link was down, oldest first. */
static void
send_kept(struct bridge *b)
{
	struct kept k = { b, NULL, 0, 0 };
	size_t i;

	if (store_msg_each_to_xmpp(b->st, send_kept_one, &k) == -1)
		log_warn("bridge: could not read the messages kept for the "
			 "link; they stay stored");
	if (k.n > 0) {
		batch_open(b);
		for (i = 0; i < k.n; i++)
			store_msg_del(b->st, k.sent[i]);
		log_info("bridge: %zu kept messages sent to the server", k.n);
	}
	free(k.sent);
}

void
bridge_link_up(struct bridge *b)
{
	b->link_up = 1;
	users_each(b->users, probe_user, b);
	send_kept(b);
}

static void
forget_user(struct user *u, void *arg)
{
	struct bridge *b = arg;

	if (user_forget_resources(u))
		went_offline(b, u);
}

static void
goodbye_user(struct user *u, void *arg)
{
	gateway_presence_to(arg, u->jid, "unavailable");
}

void
bridge_shutdown(struct bridge *b)
{
	users_each(b->users, goodbye_user, b);
}

void
bridge_link_down(struct bridge *b)
{
	b->link_up = 0;
	/*
	 * Users may log out meanwhile and nobody would tell us: Barev sees
	 * them offline until the server's answers to our probes say more.
	 */
	users_each(b->users, forget_user, b);
}

/* --- from the Barev engine -------------------------------------------- */

static int
cb_lookup_local(void *arg, const char *to_nick, const struct in6_addr *dialled,
    struct barev_jid *out)
{
	struct bridge *b = arg;
	struct barev_jid key;
	struct user *u;

	memset(&key, 0, sizeof(key));
	key.addr = *dialled;
	if (to_nick != NULL) {
		snprintf(key.nick, sizeof(key.nick), "%s", to_nick);
		if ((u = users_by_id(b->users, &key)) == NULL)
			return -1;
		*out = u->id;
		return 0;
	}
	/* No usable `to`: unambiguous only if one user has that address. */
	if ((u = users_only_at(b->users, dialled)) == NULL)
		return -1;
	*out = u->id;
	return 0;
}

static void
on_stranger_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct stranger *s = arg;
	struct bridge *b = s->b;
	struct user *u = users_get(b->users, s->user_jid);
	char who[BAREV_JID_STRLEN];

	log_info("bridge: request unanswered; closing the pipe user=%s "
		 "peer=%s",
	    s->user_jid, barev_jid_format(&s->who, who));
	if (u != NULL && user_contact(u, &s->who) == NULL)
		b->net.unwant(b->net.barev_arg, &u->id, &s->who);
}

/* A new request past requests_per_user: the user's oldest goes first. */
static void
requests_make_room(struct bridge *b, const char *user_jid)
{
	struct asker key, **found;

	key.user_jid = (char *)user_jid;
	while ((found = tfind(&key, &b->askers, asker_cmp)) != NULL &&
	    (*found)->n >= (unsigned)b->conf->requests_per_user)
		stranger_drop(
		    b, TAILQ_FIRST(&(*found)->list), "too-many-requests");
}

static void
ask_user(struct bridge *b, struct user *u, const struct barev_jid *who)
{
	struct stranger *s = stranger_find(b, u->jid, who);
	int64_t now = (int64_t)time(NULL);

	if (s == NULL) {
		requests_make_room(b, u->jid);
		s = stranger_new(b, u->jid, who, 0);
	}
	timer_after(s->ev_timeout, b->conf->request_timeout);
	if (s->last_asked != 0 &&
	    now - s->last_asked < (int64_t)b->conf->request_interval)
		return;
	stranger_touch(s, now);
	requests_arm(b);
	batch_commit(b);
	store_pending_put(b->st, u->jid, who, now);
	presence_from_contact(b, who, u->jid, "subscribe", NULL);
}

/*
 * A stranger is let in while its /64 has fewer than requests_per_subnet
 * open requests to that user, or is one of them: a peer churning nicks or
 * addresses in its /64 asks a user that many times, not for ever.
 */
static enum barev_verdict
cb_allow(
    void *arg, const struct barev_jid *local, const struct barev_jid *remote)
{
	struct bridge *b = arg;
	struct user *u = users_by_id(b->users, local);
	char subnet[ADDR_STRLEN];
	struct in6_addr net = remote->addr;

	if (u == NULL || u->refused)
		return BAREV_DENY;
	if (user_contact(u, remote) != NULL)
		return BAREV_ALLOW;
	if (stranger_find(b, u->jid, remote) != NULL ||
	    requests_from_subnet(b, u->jid, &remote->addr) <
		(unsigned)b->conf->requests_per_subnet)
		return BAREV_STRANGER;
	memset(&net.s6_addr[8], 0, 8);
	log_info("bridge: request refused reason=too-many-requests-per-subnet "
		 "user=%s subnet=%s/64",
	    u->jid, addr_format(&net, subnet));
	return BAREV_DENY;
}

static void
cb_stranger(
    void *arg, const struct barev_jid *local, const struct barev_jid *remote)
{
	struct bridge *b = arg;
	struct user *u = users_by_id(b->users, local);

	if (u != NULL)
		ask_user(b, u, remote);
}

static void
cb_up(void *arg, const struct barev_jid *local, const struct barev_jid *remote)
{
	struct bridge *b = arg;
	struct user *u = users_by_id(b->users, local);
	struct contact *c = u ? user_contact(u, remote) : NULL;

	if (c == NULL)
		return; /* a stranger: nothing to show until the user accepts */
	c->pipe_up = 1;
	c->told_valid = 0;
	send_user_presence(b, u, c);
	flush_queue(b, u, c);
}

static void
cb_down(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, const char *reason)
{
	struct bridge *b = arg;
	struct user *u = users_by_id(b->users, local);
	struct contact *c = u ? user_contact(u, remote) : NULL;

	if (c == NULL)
		return;
	c->pipe_up = 0;
	c->told_valid = 0;
	/* The unavailable below is the newest state: nothing older follows. */
	c->presence_due = 0;
	c->state_due = NULL;
	/* Whatever is still stored goes again on the next pipe. */
	c->sent_upto = 0;
	c->backlog = 1;
	if (c->seen.available) {
		shown_clear(&c->seen);
		presence_from_contact(b, &c->who, u->jid, "unavailable", NULL);
	}
}

/*
 * A Barev presence as shown: 0 and *out set, or -1 if it is no presence
 * (subscriptions, errors). The Pascal library says offline with a show.
 */
static int
barev_shown(xmpp_stanza_t *st, struct shown *out)
{
	const char *type = xmpp_stanza_get_type(st);
	char *show = text_of(st, "show", NULL);
	char *status = text_of(st, "status", NULL);
	enum barev_show bshow = BSHOW_NONE;
	int available, rc = -1;

	memset(out, 0, sizeof(*out));
	if (type != NULL && strcmp(type, "unavailable") != 0)
		goto out;
	available = type == NULL && !(show && strcmp(show, "offline") == 0);
	if (show != NULL &&
	    (strcmp(show, "away") == 0 || strcmp(show, "xa") == 0))
		bshow = BSHOW_AWAY;
	else if (show != NULL && strcmp(show, "dnd") == 0)
		bshow = BSHOW_DND;
	shown_set(out, available, bshow, available ? status : NULL);
	rc = 0;
out:
	free(show);
	free(status);
	return rc;
}

/* The contact's newest presence, to the user. */
static void
send_seen(struct bridge *b, struct user *u, struct contact *c)
{
	c->presence_due = 0;
	c->shown_at = clock_now();
	if (c->seen.available)
		presence_from_contact(b, &c->who, u->jid, NULL, &c->seen);
	else
		presence_from_contact(b, &c->who, u->jid, "unavailable", NULL);
}

/* A body-less chat state from contact c to its user (state is static). */
static void
send_state(
    struct bridge *b, struct user *u, struct contact *c, const char *state)
{
	char who[BAREV_JID_STRLEN];
	xmpp_stanza_t *m = chat_to_user(b, &c->who, u->jid, NULL, NULL);

	c->state_due = NULL;
	c->state_at = clock_now();
	stanza_add_child(m, state, NS_CHATSTATES);
	if (!b->link_up || b->net.xmpp_send(b->net.xmpp_arg, m) == -1)
		log_debug("bridge: chat state from %s dropped, link down",
		    barev_jid_format(&c->who, who));
	xmpp_stanza_release(m);
}

/* c has something waiting: it goes when the timer fires. */
static void
due_add(struct bridge *b, struct user *u, struct contact *c)
{
	struct due *d;

	if (c->presence_due || c->state_due != NULL)
		return; /* listed already */
	d = xcalloc(1, sizeof(*d));
	d->user_jid = xstrdup(u->jid);
	d->who = c->who;
	d->next = b->due;
	b->due = d;
	if (!evtimer_pending(b->ev_due, NULL))
		timer_after(b->ev_due, b->conf->presence_interval);
}

static void
on_due(evutil_socket_t fd, short what, void *arg)
{
	struct bridge *b = arg;
	struct due *d;
	struct user *u;
	struct contact *c;

	while ((d = b->due) != NULL) {
		b->due = d->next;
		u = users_get(b->users, d->user_jid);
		c = u != NULL ? user_contact(u, &d->who) : NULL;
		if (c != NULL && c->presence_due)
			send_seen(b, u, c);
		if (c != NULL && c->state_due != NULL)
			send_state(b, u, c, c->state_due);
		free(d->user_jid);
		free(d);
	}
}

/*
 * A contact that flaps its presence (or its typing) must not flood its
 * user: at most one per presence_interval, and the newest goes last.
 */
static void
presence_coalesced(struct bridge *b, struct user *u, struct contact *c)
{
	if (c->presence_due)
		return; /* the timer sends the newest */
	if (clock_now() - c->shown_at >= b->conf->presence_interval) {
		send_seen(b, u, c);
		return;
	}
	due_add(b, u, c);
	c->presence_due = 1;
}

static void
state_coalesced(
    struct bridge *b, struct user *u, struct contact *c, const char *state)
{
	if (c->state_due == NULL &&
	    clock_now() - c->state_at >= b->conf->presence_interval) {
		send_state(b, u, c, state);
		return;
	}
	due_add(b, u, c);
	c->state_due = state;
}

static void
contact_presence(
    struct bridge *b, struct user *u, struct contact *c, xmpp_stanza_t *st)
{
	struct shown next;

	/* The Pascal library sends every presence twice. */
	if (barev_shown(st, &next) == -1 || shown_equal(&next, &c->seen)) {
		shown_clear(&next);
		return;
	}
	shown_clear(&c->seen);
	c->seen = next;
	presence_coalesced(b, u, c);
}

/* A stranger's presence is kept for when the user accepts it. */
static void
stranger_presence(struct bridge *b, struct user *u, const struct barev_jid *who,
    xmpp_stanza_t *st)
{
	struct stranger *s = stranger_find(b, u->jid, who);
	struct shown next;

	if (s == NULL || barev_shown(st, &next) == -1)
		return;
	shown_clear(&s->seen);
	s->seen = next;
}

static void
contact_message(
    struct bridge *b, struct user *u, struct contact *c, xmpp_stanza_t *st)
{
	const char *type = xmpp_stanza_get_type(st);
	char *body = text_of(st, "body", NULL);
	const char *state = chat_state_of(st);
	xmpp_stanza_t *m, *html, *ev;

	if (type != NULL && strcmp(type, "error") == 0)
		goto out;
	/* Pidgin's legacy typing events (XEP-0022) become XEP-0085. */
	if (state == NULL && (ev = stanza_child(st, "x", NS_EVENT)) != NULL &&
	    body == NULL)
		state = stanza_child(ev, "composing", NULL) ? "composing"
							    : "active";
	if (body == NULL && state == NULL)
		goto out;
	if (body == NULL) {
		state_coalesced(b, u, c, state);
		goto out;
	}
	/* The text carries its own state: an older one waiting would follow it. */
	c->state_due = NULL;
	/* The plugin puts its <html> in the XHTML namespace. */
	if ((html = stanza_child(st, "html", NS_XHTML_IM)) == NULL)
		html = stanza_child(st, "html", NS_XHTML);
	html = chatmsg_safe_xhtml(b->ctx, html);
	/* m takes html; keep_for_link borrows it while m lives. */
	m = chat_to_user(b, &c->who, u->jid, body, html);
	stanza_add_child(m, state != NULL ? state : "active", NS_CHATSTATES);
	if (!b->link_up || b->net.xmpp_send(b->net.xmpp_arg, m) == -1)
		keep_for_link(b, u, c, body, html);
	xmpp_stanza_release(m);
out:
	free(body);
}

static int
cb_stanza(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, xmpp_stanza_t *st)
{
	struct bridge *b = arg;
	struct user *u = users_by_id(b->users, local);
	struct contact *c = u ? user_contact(u, remote) : NULL;
	const char *name = xmpp_stanza_get_name(st);
	const char *type = xmpp_stanza_get_type(st);
	xmpp_stanza_t *r;

	/* A peer that talks to us lists the user: a later refusal is news. */
	if (c != NULL)
		c->refusal_told = 0;
	if (strcmp(name, "iq") == 0) {
		/* The reference client asks for our vCard; an empty one will do. */
		if (type != NULL && strcmp(type, "get") == 0 &&
		    stanza_child(st, "vCard", NS_VCARD) != NULL) {
			r = stanza_reply(st, "result");
			stanza_add_child(r, "vCard", NS_VCARD);
			b->net.send(b->net.barev_arg, local, remote, r);
			xmpp_stanza_release(r);
			return 0;
		}
		return -1;
	}
	if (c == NULL) {
		if (u != NULL && strcmp(name, "presence") == 0)
			stranger_presence(b, u, remote, st);
		else
			log_debug("bridge: %s from a stranger dropped", name);
		return 0;
	}
	if (strcmp(name, "presence") == 0)
		contact_presence(b, u, c, st);
	else if (strcmp(name, "message") == 0)
		contact_message(b, u, c, st);
	else
		return -1;
	return 0;
}

/*
 * The contact's client refused the user's pipe with not-authorized (the
 * plugin's 2.x line): it does not list the user. Said once, in words, in
 * the conversation with the contact, where the user's waiting messages
 * are; not at each of the engine's (long-spaced) redials, and again only
 * after the contact has talked to us in between.
 */
static void
cb_refused(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, double retry_in)
{
	struct bridge *b = arg;
	struct user *u = users_by_id(b->users, local);
	struct contact *c = u ? user_contact(u, remote) : NULL;
	char who[BAREV_JID_STRLEN], me[BAREV_JID_STRLEN], kept[32], *text;
	xmpp_stanza_t *m;

	if (c == NULL || c->refusal_told || !b->link_up)
		return;
	barev_jid_format(remote, who);
	barev_jid_format(local, me);
	human_duration(b->conf->message_lifetime, kept, sizeof(kept));
	xasprintf(&text,
	    "[barev-gateway] %s has not added you (%s) to their Barev "
	    "contacts yet, so they cannot see you or read your "
	    "messages. "
	    "What you write is kept for up to %s and delivered once "
	    "they "
	    "add you. (A note from the gateway, not from %s.)",
	    who, me, kept, c->who.nick);
	m = chat_to_user(b, remote, u->jid, text, NULL);
	if (b->net.xmpp_send(b->net.xmpp_arg, m) == 0) {
		c->refusal_told = 1;
		log_info("bridge: told %s that %s does not list %s yet "
			 "retry_in_s=%.0f",
		    u->jid, who, me, retry_in);
	}
	xmpp_stanza_release(m);
	free(text);
}

const struct barev_cb bridge_barev_cb = {
	cb_lookup_local,
	cb_allow,
	cb_stranger,
	cb_up,
	cb_down,
	cb_stanza,
	confirmed,
	cb_refused,
};

/* --- life cycle ------------------------------------------------------- */

struct load {
	struct bridge *b;
	struct user *u;
	int failed;
};

static int
load_contact(void *arg, const struct store_contact *sc)
{
	struct load *l = arg;
	struct contact *c = user_contact_add(l->u, &sc->who, sc->port);

	c->sub_to = sc->sub_to;
	c->sub_from = sc->sub_from;
	c->jid = sc->jid[0] != '\0' ? xstrdup(sc->jid) : NULL;
	return 0;
}

static int
load_user(void *arg, const struct store_user *su)
{
	struct load *l = arg;
	struct barev_jid id;

	memset(&id, 0, sizeof(id));
	snprintf(id.nick, sizeof(id.nick), "%s", su->nick);
	id.addr = su->addr;
	if ((l->u = users_add(l->b->users, su->jid, &id)) == NULL)
		return 0;
	if ((l->u->refused = !access_ok(l->b, su->jid)))
		log_info("bridge: user jid=%s refused (not in "
			 "access.*); data "
			 "kept",
		    su->jid);
	return store_contacts_each(l->b->st, su->jid, load_contact, l) == -1;
}

/* Rows come oldest asked first, as the lists keep them. */
static int
load_pending(void *arg, const char *user_jid, const struct barev_jid *who,
    int64_t created, int64_t last_asked)
{
	stranger_new(arg, user_jid, who, last_asked);
	return 0;
}

struct bridge *
bridge_new(struct event_base *base, xmpp_ctx_t *ctx, const struct conf *conf,
    const struct ygg_node *node, struct store *st, const struct bridge_net *net,
    char **cause)
{
	struct bridge *b = xcalloc(1, sizeof(*b));
	struct load l = { b, NULL, 0 };
	int64_t live = (int64_t)time(NULL) - (int64_t)conf->request_lifetime;
	int queued, expired;

	b->base = base;
	b->ctx = ctx;
	b->conf = conf;
	b->node = *node;
	b->st = st;
	b->net = *net;
	b->domain = xstrdup(conf->component_jid);
	b->lifetime = conf->message_lifetime;
	b->users = users_new();
	b->ev_typing = evtimer_new(base, on_typing, b);
	b->ev_due = evtimer_new(base, on_due, b);
	b->ev_expire = evtimer_new(base, on_expire, b);
	b->ev_commit = event_new(base, -1, 0, on_commit, b);
	b->receipts_tail = &b->receipts;
	b->delivered_tail = &b->delivered;
	b->ev_delivered = evtimer_new(base, on_delivered, b);
	b->added_tail = &b->added;
	b->inflight_tail = &b->inflight;
	TAILQ_INIT(&b->requests);
	b->ev_requests = evtimer_new(base, on_requests, b);
	/* A request older than request_lifetime is not loaded: it is gone. */
	if (store_users_each(st, load_user, &l) != 0 ||
	    (expired = store_pending_expire(st, live)) == -1 ||
	    store_pending_each(st, live, load_pending, b) != 0 ||
	    (queued = store_msg_count(st)) == -1) {
		xasprintf(
		    cause, "cannot load the state from %s", conf->storage_path);
		bridge_free(b);
		return NULL;
	}
	if (queued > 0)
		log_info("bridge: %d stored messages will be sent", queued);
	if (expired > 0)
		log_info("bridge: %d expired requests deleted", expired);
	requests_arm(b);
	timer_after(b->ev_expire, 1.0);
	return b;
}

/* After a reload: access.* holds for registered users too, at once. */
static void
recheck_access(struct user *u, void *arg)
{
	struct bridge *b = arg;
	int refused = !access_ok(b, u->jid);

	if (refused == u->refused)
		return;
	u->refused = refused;
	log_info("bridge: user jid=%s access %s", u->jid,
	    refused ? "allowed -> refused" : "refused -> allowed");
	if (refused) {
		if (user_forget_resources(u))
			went_offline(b, u);
	} else if (b->link_up)
		/* Their presence brings their pipes back, as after a restart. */
		probe_user(u, b);
}

void
bridge_set_conf(struct bridge *b, const struct conf *conf)
{
	struct stranger *s;

	b->conf = conf;
	users_each(b->users, recheck_access, b);
	/* A stranger being asked waits no longer than the new timeout. */
	TAILQ_FOREACH(s, &b->requests, by_age)
	timer_shorten(s->ev_timeout, conf->request_timeout);
	/* request_lifetime may have changed. */
	requests_arm(b);
	if (conf->message_lifetime == b->lifetime)
		return;
	/* Queued messages too: each expires lifetime after it was written. */
	b->lifetime = conf->message_lifetime;
	batch_commit(b);
	if (store_msg_set_lifetime(b->st, (int64_t)b->lifetime) == -1)
		log_err("bridge: queued messages keep their old lifetime");
	else
		log_info("bridge: queued messages expire %.0f s after they "
			 "were written",
		    b->lifetime);
	/* What the new lifetime makes due goes now, not at the next pass. */
	timer_after(b->ev_expire, 0);
}

void
bridge_free(struct bridge *b)
{
	struct inflight *in;
	struct stranger *s;
	struct typing *t;
	struct lost *l;
	struct due *d;

	if (b == NULL)
		return;
	if (b->delivered != NULL)
		batch_open(b);
	batch_commit(b);
	while ((in = b->inflight) != NULL) {
		b->inflight = in->next;
		inflight_free(in);
	}
	while ((s = TAILQ_FIRST(&b->requests)) != NULL)
		stranger_free(s);
	if (b->ev_requests != NULL)
		event_free(b->ev_requests);
	while ((t = b->typing) != NULL) {
		b->typing = t->next;
		free(t->user_jid);
		free(t);
	}
	while ((d = b->due) != NULL) {
		b->due = d->next;
		free(d->user_jid);
		free(d);
	}
	while ((l = b->lost) != NULL) {
		b->lost = l->next;
		free(l);
	}
	event_free(b->ev_typing);
	event_free(b->ev_due);
	event_free(b->ev_expire);
	event_free(b->ev_commit);
	event_free(b->ev_delivered);
	users_free(b->users);
	free(b->domain);
	free(b);
}
