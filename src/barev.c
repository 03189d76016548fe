#include "config.h"

#include <errno.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "barev.h"
#include "clock.h"
#include "conf.h"
#include "log.h"
#include "ratelog.h"
#include "pipe.h"
#include "xmalloc.h"

#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Sockets below this stay free for libstrophe's select(). */
#define FD_HIGH_BASE 1024
/* An outgoing pipe younger than this meeting an inbound one is a race. */
#define RACE_WINDOW 10.0
/* How long the higher side of a race waits for the peer to pick. */
#define RACE_SETTLE 5.0
/* A pipe that lived this long resets its pair's backoff. */
#define STABLE_SECONDS 30.0
/* Bounded wait for a peer to close after our stream end. */
#define CLOSE_WAIT 5.0
#define SHUTDOWN_WAIT 1.5
#define RATE_WINDOW 60.0
/* Refusals of one kind from one /64 are summarised per this many seconds. */
#define REFUSAL_WINDOW 10.0

struct pair;

TAILQ_HEAD(pair_queue, pair);

/*
 * A local identity's share of the dial budget (limits.dials_per_user)
 * and its queue of pairs to dial; identities with queued pairs take turns.
 */
struct ident {
	struct barev_jid local;
	unsigned refs; /* its pairs */
	double tokens;
	double tokens_at;
	struct pair_queue q;
	int in_ring;
	TAILQ_ENTRY(ident) ring;
};
TAILQ_HEAD(ident_ring, ident);

/* The engine's record of one pipe. */
struct conn {
	struct pipe *pipe;
	struct pair *pair; /* NULL until identified, and once detached */
	struct barev *b;
	struct in6_addr dialled;
	unsigned short
	    port; /* dialled (outbound): the log of a failed dial names it */
	int dialing; /* counted in dials_in_progress */
	int stranger; /* counted in nstrangers, holds its user's slot */
	struct event *ev_silence; /* a stranger that says nothing is closed */
	int dead;
	TAILQ_ENTRY(conn) entry;
};
TAILQ_HEAD(conn_list, conn);

struct pair {
	struct barev_jid local;
	struct barev_jid remote;
	char name[2 * BAREV_JID_STRLEN + 8];
	unsigned short port;
	int wanted;
	int up;
	int queued;
	struct conn *out; /* our dial, until it dies */
	struct conn *in; /* the peer's pipe, once open */
	struct conn *active; /* the settled one of out and in */
	unsigned attempt;
	/* Dials of ours the peer answered with not-authorized, in a row. */
	unsigned refusals;
	struct event *ev_redial;
	struct event *ev_settle;
	struct barev *b;
	struct ident *ident;
	TAILQ_ENTRY(pair) dq;
};

/* Counts for one remote address, or for one remote /64 (inbound pipes only). */
struct addr_stat {
	struct in6_addr addr;
	unsigned pipes;
	unsigned inbound;
	double window_start;
};

/*
 * The one stranger pipe a local identity may hold per remote /64: a peer
 * churning nicks or addresses inside its /64 cannot hold more.
 */
struct stranger_slot {
	struct barev_jid local;
	struct in6_addr subnet;
	struct conn *c;
};

/* "300:1:2:3::/64" */
#define SUBNET_STRLEN (ADDR_STRLEN + 3)

struct listener {
	struct evconnlistener *lev;
	struct event *ev_resume;
	struct barev *b;
};

struct barev {
	struct event_base *base;
	xmpp_ctx_t *ctx;
	const struct barev_cb *cb;
	void *cb_arg;
	struct pipe_params params;
	int allow_any;
	unsigned max_pipes;
	unsigned max_per_addr;
	unsigned inbound_per_minute;
	unsigned max_per_subnet;
	unsigned inbound_per_subnet;
	unsigned max_strangers;
	double stranger_silence;
	unsigned dials_concurrent;
	double dials_per_second;
	double dials_per_user;
	double redial_min;
	double redial_max;
	double refused_min;
	double refused_max;
	unsigned short default_port; /* for pairs without a port of their own */

	struct listener *listeners;
	size_t nlisteners;
	void *pairs; /* tsearch tree of struct pair */
	void *addrs; /* tsearch tree of struct addr_stat */
	void *subnets; /* the same per /64 */
	void *slots; /* tsearch tree of struct stranger_slot */
	unsigned nstrangers;
	void *idents; /* tsearch tree of struct ident */
	struct conn_list conns;
	struct conn_list dead;
	unsigned nconns;
	uint64_t next_id;

	struct ident_ring dialq; /* identities with pairs to dial, in turn */
	unsigned dials_in_progress;
	double tokens;
	double tokens_at;
	int pacing; /* the queue waits for tokens, not for a free slot */
	struct event *ev_dialq;
	struct event *ev_reap;
	struct event *ev_sweep;
	struct event *ev_shutdown;
	struct ratelog
	    *refusals; /* logged once per reason and /64, then counted */
	struct event *ev_refusals;
	void (*shutdown_done)(void *);
	void *shutdown_arg;
	int stopping; /* no new dials once shutdown began */
};

static void pair_detach(struct pair *P, struct conn *c, const char *reason);
static void dialq_kick(struct barev *b);
static void dialq_remove(struct pair *P);

int
barev_fd_high(int fd)
{
	int nfd;

	if (fd < 0 || fd >= FD_HIGH_BASE)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, FD_HIGH_BASE);
	close(fd);
	return nfd;
}

int
barev_raise_fd_limit(char **cause)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		xasprintf(cause, "getrlimit: %s", strerror(errno));
		return -1;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
		xasprintf(cause, "setrlimit: %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur <= FD_HIGH_BASE + 64) {
		xasprintf(cause,
		    "the open-file limit %llu leaves no room for "
		    "Barev sockets above fd %d; raise it (e.g. LimitNOFILE="
		    "65536 in the systemd unit, or ulimit -n)",
		    (unsigned long long)rl.rlim_cur, FD_HIGH_BASE);
		return -1;
	}
	return 0;
}

/* --- per-address bookkeeping --------------------------------------- */

static int
addr_cmp(const void *a, const void *b)
{
	return memcmp(&((const struct addr_stat *)a)->addr,
	    &((const struct addr_stat *)b)->addr, sizeof(struct in6_addr));
}

/* The /64 an address is in: every Yggdrasil node routes a whole one. */
static struct in6_addr
subnet_of(const struct in6_addr *a)
{
	struct in6_addr s = *a;

	memset(&s.s6_addr[8], 0, 8);
	return s;
}

static const char *
subnet_format(const struct in6_addr *a, char *buf)
{
	struct in6_addr s = subnet_of(a);
	char text[ADDR_STRLEN];

	snprintf(buf, SUBNET_STRLEN, "%s/64", addr_format(&s, text));
	return buf;
}

static struct addr_stat *
stat_get(void **tree, const struct in6_addr *a)
{
	struct addr_stat key, *s, **found;

	key.addr = *a;
	found = tfind(&key, tree, addr_cmp);
	if (found != NULL)
		return *found;
	s = xcalloc(1, sizeof(*s));
	s->addr = *a;
	s->window_start = clock_now();
	tsearch(s, tree, addr_cmp);
	return s;
}

static struct addr_stat *
addr_get(struct barev *b, const struct in6_addr *a)
{
	return stat_get(&b->addrs, a);
}

static struct addr_stat *
subnet_get(struct barev *b, const struct in6_addr *a)
{
	struct in6_addr s = subnet_of(a);

	return stat_get(&b->subnets, &s);
}

struct sweep {
	double now;
	struct addr_stat **victims;
	size_t n;
	size_t cap;
};

static void
sweep_visit(const void *node, VISIT which, void *arg)
{
	struct addr_stat *s = *(struct addr_stat *const *)node;
	struct sweep *sw = arg;

	if (which != postorder && which != leaf)
		return;
	if (s->pipes != 0 || sw->now - s->window_start < RATE_WINDOW)
		return;
	if (sw->n == sw->cap) {
		sw->cap = sw->cap ? sw->cap * 2 : 64;
		sw->victims = xrealloc(
		    sw->victims, sw->cap * sizeof(*sw->victims));
	}
	sw->victims[sw->n++] = s;
}

static void
sweep_tree(void **tree, double now)
{
	struct sweep sw = { now, NULL, 0, 0 };
	size_t i;

	twalk_r(*tree, sweep_visit, &sw);
	for (i = 0; i < sw.n; i++) {
		tdelete(sw.victims[i], tree, addr_cmp);
		free(sw.victims[i]);
	}
	free(sw.victims);
}

/* Drops idle entries, so that a scan from many addresses cannot grow memory for ever. */
static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct barev *b = arg;
	double now = clock_now();

	sweep_tree(&b->addrs, now);
	sweep_tree(&b->subnets, now);
	timer_after(b->ev_sweep, RATE_WINDOW);
}

/* --- strangers ------------------------------------------------------ */

static int
slot_cmp(const void *va, const void *vb)
{
	const struct stranger_slot *a = va, *b = vb;
	int r;

	if ((r = memcmp(&a->local.addr, &b->local.addr, 16)) != 0)
		return r;
	if ((r = strcasecmp(a->local.nick, b->local.nick)) != 0)
		return r;
	return memcmp(&a->subnet, &b->subnet, 16);
}

static struct stranger_slot *
slot_find(
    struct barev *b, const struct barev_jid *local, const struct in6_addr *peer)
{
	struct stranger_slot key, **found;

	memset(&key, 0, sizeof(key));
	key.local = *local;
	key.subnet = subnet_of(peer);
	found = tfind(&key, &b->slots, slot_cmp);
	return found != NULL ? *found : NULL;
}

static void
conn_drop(struct conn *c, const char *reason, const char *condition);

/* Real clients send their presence right after the headers; a flood does not. */
static void
on_silence(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	char text[SUBNET_STRLEN];

	if (!c->stranger || pipe_heard(c->pipe))
		return;
	log_info("pipe %llu: closing reason=stranger-silent subnet=%s",
	    (unsigned long long)pipe_id(c->pipe),
	    subnet_format(pipe_peer(c->pipe), text));
	conn_drop(c, "stranger-silent", "connection-timeout");
}

/*
 * Whether a stranger's pipe may open: NULL, or why not. A local identity
 * holds one stranger pipe per remote /64 (the same peer dialling again
 * replaces its own), and all strangers together at most
 * limits.stranger_pipes: whatever strangers do, contacts keep the rest.
 */
static const char *
stranger_admit(struct barev *b, struct conn *c, const struct barev_jid *local,
    const struct barev_jid *remote)
{
	struct stranger_slot *slot = slot_find(b, local, &remote->addr);

	if (slot != NULL &&
	    !barev_jid_equal_nocase(pipe_remote(slot->c->pipe), remote))
		return "stranger-subnet-busy";
	if (slot == NULL && b->nstrangers >= b->max_strangers)
		return "too-many-strangers";
	if (slot == NULL) {
		slot = xcalloc(1, sizeof(*slot));
		slot->local = *local;
		slot->subnet = subnet_of(&remote->addr);
		tsearch(slot, &b->slots, slot_cmp);
	}
	/* The older pipe of the same peer is replaced once this one opens. */
	slot->c = c;
	c->stranger = 1;
	b->nstrangers++;
	c->ev_silence = evtimer_new(b->base, on_silence, c);
	timer_after(c->ev_silence, b->stranger_silence);
	return NULL;
}

/* c no longer counts as a stranger's: it closes, or its user accepted it. */
static void
stranger_release(struct conn *c)
{
	struct barev *b = c->b;
	struct stranger_slot *slot;

	if (!c->stranger)
		return;
	c->stranger = 0;
	b->nstrangers--;
	/* Freed with c: this may run inside on_silence. */
	evtimer_del(c->ev_silence);
	slot = slot_find(b, pipe_local(c->pipe), pipe_peer(c->pipe));
	if (slot != NULL && slot->c == c) {
		tdelete(slot, &b->slots, slot_cmp);
		free(slot);
	}
}

/* --- pairs ---------------------------------------------------------- */

/* Nicks compare without case, as the Pascal library does; addresses by bytes. */
static int
pair_cmp(const void *va, const void *vb)
{
	const struct pair *a = va, *b = vb;
	int r;

	if ((r = memcmp(&a->local.addr, &b->local.addr, 16)) != 0)
		return r;
	if ((r = strcasecmp(a->local.nick, b->local.nick)) != 0)
		return r;
	if ((r = memcmp(&a->remote.addr, &b->remote.addr, 16)) != 0)
		return r;
	return strcasecmp(a->remote.nick, b->remote.nick);
}

static void on_redial(evutil_socket_t, short, void *);
static void on_settle(evutil_socket_t, short, void *);

static int
ident_cmp(const void *va, const void *vb)
{
	const struct ident *a = va, *b = vb;
	int r;

	if ((r = memcmp(&a->local.addr, &b->local.addr, 16)) != 0)
		return r;
	return strcasecmp(a->local.nick, b->local.nick);
}

/* The identity's record, taken by one more pair. */
static struct ident *
ident_ref(struct barev *b, const struct barev_jid *local)
{
	struct ident key, *id, **found;

	memset(&key, 0, sizeof(key));
	key.local = *local;
	if ((found = tfind(&key, &b->idents, ident_cmp)) != NULL)
		id = *found;
	else {
		id = xcalloc(1, sizeof(*id));
		id->local = *local;
		id->tokens = 1;
		id->tokens_at = clock_now();
		TAILQ_INIT(&id->q);
		tsearch(id, &b->idents, ident_cmp);
	}
	id->refs++;
	return id;
}

static void
ident_unref(struct barev *b, struct ident *id)
{
	if (--id->refs > 0)
		return;
	tdelete(id, &b->idents, ident_cmp);
	free(id);
}

static struct pair *
pair_find(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote, int create)
{
	struct pair key, *P, **found;
	char l[BAREV_JID_STRLEN], r[BAREV_JID_STRLEN];

	memset(&key, 0, sizeof(key));
	key.local = *local;
	key.remote = *remote;
	found = tfind(&key, &b->pairs, pair_cmp);
	if (found != NULL)
		return *found;
	if (!create)
		return NULL;
	P = xcalloc(1, sizeof(*P));
	P->local = *local;
	P->remote = *remote;
	P->b = b;
	snprintf(P->name, sizeof(P->name), "%s>%s", barev_jid_format(local, l),
	    barev_jid_format(remote, r));
	P->ev_redial = evtimer_new(b->base, on_redial, P);
	P->ev_settle = evtimer_new(b->base, on_settle, P);
	P->ident = ident_ref(b, local);
	tsearch(P, &b->pairs, pair_cmp);
	return P;
}

static void
pair_free(struct pair *P)
{
	ident_unref(P->b, P->ident);
	event_free(P->ev_redial);
	event_free(P->ev_settle);
	free(P);
}

/* A pair nobody wants and no pipe uses is forgotten. */
static void
pair_maybe_forget(struct pair *P)
{
	struct barev *b = P->b;

	if (P->wanted || P->out != NULL || P->in != NULL || P->up)
		return;
	if (P->queued) {
		dialq_remove(P);
	}
	tdelete(P, &b->pairs, pair_cmp);
	pair_free(P);
}

static int
conn_open(const struct conn *c)
{
	return c != NULL && pipe_state(c->pipe) == PIPE_OPEN;
}

/* Picks the pipe stanzas use once only one candidate is left. */
static void
pair_settle(struct pair *P)
{
	struct barev *b = P->b;
	struct conn *pick = NULL;

	if (P->active != NULL)
		return;
	if (conn_open(P->out) && P->in != NULL)
		return; /* a race: wait for the peer, or on_settle */
	if (conn_open(P->out))
		pick = P->out;
	else if (P->in != NULL && P->out == NULL)
		pick = P->in;
	else if (P->in != NULL && !conn_open(P->out) &&
	    !evtimer_pending(P->ev_settle, NULL))
		pick = P->in;
	if (pick == NULL)
		return;
	evtimer_del(P->ev_settle);
	P->active = pick;
	log_debug("pair %s: using pipe %llu", P->name,
	    (unsigned long long)pipe_id(pick->pipe));
	if (!P->up) {
		P->up = 1;
		log_info("pair %s: up pipe=%llu", P->name,
		    (unsigned long long)pipe_id(pick->pipe));
		b->cb->up(b->cb_arg, &P->local, &P->remote);
	}
}

/* Takes c out of its pair and closes it gracefully. */
static void
conn_drop(struct conn *c, const char *reason, const char *condition)
{
	if (c->pair != NULL)
		pair_detach(c->pair, c, reason);
	pipe_close(c->pipe, reason, condition);
}

/*
 * The wait before P's redial after attempt failed dials (from 0). A peer
 * that does not list us gets the long backoff: it dials us itself once it
 * does.
 */
static double
pair_delay(const struct pair *P, unsigned attempt)
{
	const struct barev *b = P->b;

	if (P->refusals > 0)
		return backoff_delay(
		    b->refused_min, b->refused_max, P->refusals - 1);
	return backoff_delay(b->redial_min, b->redial_max, attempt);
}

/* The delay before the next dial, or -1 if none is due. */
static double
schedule_redial(struct pair *P)
{
	struct barev *b = P->b;
	double delay;

	if (!P->wanted || P->out != NULL || P->in != NULL || P->queued ||
	    b->stopping || evtimer_pending(P->ev_redial, NULL))
		return -1;
	delay = pair_delay(P, P->attempt);
	P->attempt++;
	log_info("pair %s: redial_in_ms=%.0f attempt=%u refusals=%u", P->name,
	    delay * 1000, P->attempt, P->refusals);
	timer_after(P->ev_redial, delay);
	return delay;
}

/* The peer dialled us or accepted our dial: it lists us (again). */
static void
pair_accepted(struct pair *P)
{
	if (P->refusals == 0)
		return;
	log_info("pair %s: the peer accepts us now after refusals=%u", P->name,
	    P->refusals);
	P->refusals = 0;
}

static void
pair_detach(struct pair *P, struct conn *c, const char *reason)
{
	struct barev *b = P->b;
	double opened = pipe_opened_at(c->pipe), retry = -1;
	int refused = c == P->out && reason != NULL &&
	    strcmp(reason, PIPE_REASON_NOT_AUTHORIZED) == 0;
	char l[BAREV_JID_STRLEN];

	if (refused) {
		P->refusals++;
		log_info("pair %s: refused by the peer (not-authorized): it "
			 "does not list %s as a contact refusals=%u",
		    P->name, barev_jid_format(&P->local, l), P->refusals);
	}
	c->pair = NULL;
	if (P->out == c)
		P->out = NULL;
	if (P->in == c)
		P->in = NULL;
	if (opened > 0 && clock_now() - opened >= STABLE_SECONDS)
		P->attempt = 0;
	if (P->active == c) {
		P->active = NULL;
		pair_settle(P);
		if (P->active == NULL && P->up) {
			P->up = 0;
			log_info("pair %s: down reason=%s", P->name, reason);
			b->cb->down(b->cb_arg, &P->local, &P->remote, reason);
		}
	} else
		pair_settle(P);
	if (P->out == NULL && P->in == NULL)
		retry = schedule_redial(P);
	if (refused)
		b->cb->refused(b->cb_arg, &P->local, &P->remote, retry);
	pair_maybe_forget(P);
}

/*
 * Whether we keep our outgoing pipe in a race. The plugin's 2.x line lets
 * the side whose JID text is smaller keep its outgoing connection: its own
 * "nick@address" (the address as its socket names it, RFC 5952) against
 * the contact's name, without ASCII case. Deciding by the same text makes
 * both ends keep the same pipe; two gateways agree as well.
 */
static int
local_is_lower(const struct pair *P)
{
	char l[BAREV_JID_STRLEN], r[BAREV_JID_STRLEN];

	barev_jid_format(&P->local, l);
	barev_jid_format(&P->remote, r);
	return strcasecmp(l, r) < 0;
}

/*
 * An inbound pipe of P opened. The spec: a new inbound pipe replaces the
 * old one. A race (both sides dialled at once) must end with one pipe:
 * the reference client keeps its newest inbound pipe (our outgoing) and
 * closes its outgoing one (our inbound), so we keep our outgoing too;
 * between two gateways only the lower side closes its inbound pipe, the
 * higher one waits for that (or for on_settle).
 */
static void
pair_inbound(struct pair *P, struct conn *c)
{
	struct conn *old = P->in, *out = P->out;

	evtimer_del(P->ev_redial);
	if (P->queued) {
		dialq_remove(P);
	}
	pair_accepted(P);
	c->pair = P;
	if (old != NULL) {
		P->in = c;
		old->pair = NULL;
		if (P->active == old)
			P->active = c;
		pipe_retire(old->pipe, "replaced");
		return;
	}
	if (out != NULL && pipe_state(out->pipe) == PIPE_CONNECTING) {
		/* The peer reached us first; our dial has written nothing. */
		out->pair = NULL;
		P->out = NULL;
		pipe_close(out->pipe, "peer-dialled-first", NULL);
		out = NULL;
	}
	if (out != NULL && P->active == out &&
	    clock_now() - pipe_opened_at(out->pipe) >= RACE_WINDOW) {
		out->pair = NULL;
		P->out = NULL;
		P->in = c;
		P->active = c;
		pipe_retire(out->pipe, "replaced");
		return;
	}
	if (out != NULL) {
		if (local_is_lower(P)) {
			log_info("pair %s: simultaneous dial; keeping ours",
			    P->name);
			c->pair = NULL;
			pipe_retire(c->pipe, "race-lost");
			return;
		}
		log_info("pair %s: simultaneous dial; waiting for the peer",
		    P->name);
		P->in = c;
		timer_after(P->ev_settle, RACE_SETTLE);
		return;
	}
	P->in = c;
	pair_settle(P);
}

static void
on_settle(evutil_socket_t fd, short what, void *arg)
{
	struct pair *P = arg;
	struct conn *c;

	if (P->in != NULL && conn_open(P->out)) {
		log_info("pair %s: race unresolved; keeping our outgoing pipe",
		    P->name);
		c = P->in;
		pair_detach(P, c, "race-settled");
		pipe_retire(c->pipe, "race-settled");
		return;
	}
	pair_settle(P);
}

/* --- pipes ---------------------------------------------------------- */

static const struct pipe_cb barev_pipe_cb;

static void
dial_done(struct conn *c)
{
	if (!c->dialing)
		return;
	c->dialing = 0;
	c->b->dials_in_progress--;
	dialq_kick(c->b);
}

static int
parse_peer_jid(struct barev *b, const char *s, struct barev_jid *out)
{
	const char *cause;

	return barev_jid_parse(
	    s, b->allow_any ? BAREV_ANY_ADDR : 0, out, &cause);
}

static void
report_refusals(void *arg, const char *kind, unsigned count, double window)
{
	log_info("pipe: rejected %s count=%u seconds=%.0f (summary)", kind,
	    count, window);
}

static void
on_refusals(evutil_socket_t fd, short what, void *arg)
{
	struct barev *b = arg;
	double next = ratelog_flush(
	    b->refusals, clock_now(), report_refusals, NULL);

	if (next >= 0)
		timer_after(b->ev_refusals, next);
}

/*
 * Whether to log a refusal of peer: the first for each reason and /64 in
 * REFUSAL_WINDOW is, the others are counted and summarised in one line,
 * so a node with 2^64 addresses cannot choose how much we log.
 */
static int
refusal_logged(struct barev *b, const char *reason, const struct in6_addr *peer)
{
	char kind[128], subnet[SUBNET_STRLEN];

	snprintf(kind, sizeof(kind), "reason=%s subnet=%s", reason,
	    subnet_format(peer, subnet));
	if (ratelog_hit(b->refusals, kind, clock_now()))
		return 1;
	if (!evtimer_pending(b->ev_refusals, NULL))
		timer_after(b->ev_refusals, REFUSAL_WINDOW);
	return 0;
}

static int
inbound_header(struct barev *b, struct conn *c, const char *from,
    const char *to, const char **condition)
{
	struct barev_jid remote, local, to_jid;
	const char *to_nick = NULL, *reason;
	char peer[ADDR_STRLEN], subnet[SUBNET_STRLEN];
	char qfrom[LOG_QUOTE_SIZE], qto[LOG_QUOTE_SIZE];
	enum barev_verdict verdict;

	if (from == NULL || *from == '\0') {
		reason = "no-from";
		*condition = "improper-addressing";
		goto reject;
	}
	if (parse_peer_jid(b, from, &remote) == -1) {
		reason = "bad-from";
		*condition = "invalid-from";
		goto reject;
	}
	if (!addr_equal(&remote.addr, pipe_peer(c->pipe))) {
		reason = "spoofed-from";
		*condition = "invalid-from";
		goto reject;
	}
	/* The reference client's `to` is whatever its user typed: compare parsed. */
	if (to != NULL && parse_peer_jid(b, to, &to_jid) == 0) {
		if (!addr_equal(&to_jid.addr, &c->dialled)) {
			reason = "to-elsewhere";
			*condition = "host-unknown";
			goto reject;
		}
		to_nick = to_jid.nick;
	}
	if (b->cb->lookup_local(b->cb_arg, to_nick, &c->dialled, &local) ==
	    -1) {
		reason = "unknown-local";
		*condition = "host-unknown";
		goto reject;
	}
	verdict = b->cb->allow(b->cb_arg, &local, &remote);
	if (verdict == BAREV_DENY) {
		reason = "not-allowed";
		*condition = "not-authorized";
		goto reject;
	}
	if (verdict == BAREV_STRANGER &&
	    (reason = stranger_admit(b, c, &local, &remote)) != NULL) {
		*condition = "policy-violation";
		goto reject;
	}
	pipe_set_identity(c->pipe, &local, &remote);
	if (verdict == BAREV_STRANGER)
		b->cb->stranger(b->cb_arg, &local, &remote);
	return 0;
reject:
	if (refusal_logged(b, reason, pipe_peer(c->pipe)))
		log_info("pipe %llu: rejected reason=%s peer=%s subnet=%s "
			 "from=%s to=%s",
		    (unsigned long long)pipe_id(c->pipe), reason,
		    addr_format(pipe_peer(c->pipe), peer),
		    subnet_format(pipe_peer(c->pipe), subnet),
		    log_quote(qfrom, sizeof(qfrom), from),
		    log_quote(qto, sizeof(qto), to));
	return -1;
}

static int
outbound_header(
    struct barev *b, struct conn *c, const char *from, const char **condition)
{
	const struct barev_jid *want = pipe_remote(c->pipe);
	struct barev_jid got;
	char qfrom[LOG_QUOTE_SIZE];

	/* Liberal: a missing from still means the host we dialled. */
	if (from == NULL || *from == '\0')
		return 0;
	if (parse_peer_jid(b, from, &got) == 0 &&
	    barev_jid_equal_nocase(&got, want))
		return 0;
	log_info("pipe %llu: rejected reason=wrong-peer from=%s",
	    (unsigned long long)pipe_id(c->pipe),
	    log_quote(qfrom, sizeof(qfrom), from));
	*condition = "invalid-from";
	return -1;
}

static int
cb_header(void *arg, struct pipe *p, const char *from, const char *to,
    const char **condition)
{
	struct conn *c = pipe_owner_data(p);

	if (pipe_dir(p) == PIPE_INBOUND)
		return inbound_header(arg, c, from, to, condition);
	return outbound_header(arg, c, from, condition);
}

static void
cb_open(void *arg, struct pipe *p)
{
	struct barev *b = arg;
	struct conn *c = pipe_owner_data(p);
	struct pair *P;

	if (pipe_dir(p) == PIPE_OUTBOUND) {
		dial_done(c);
		if ((P = c->pair) == NULL)
			return;
		if (P->in != NULL && !evtimer_pending(P->ev_settle, NULL))
			timer_after(P->ev_settle, RACE_SETTLE);
		pair_settle(P);
		return;
	}
	P = pair_find(b, pipe_local(p), pipe_remote(p), 1);
	pair_inbound(P, c);
}

static int
cb_stanza(void *arg, struct pipe *p, xmpp_stanza_t *st)
{
	struct barev *b = arg;
	struct conn *c = pipe_owner_data(p);

	/*
	 * The identity of a peer is the pipe, whichever of a pair's pipes it
	 * is: a pipe being closed after a race still delivers what the peer
	 * sent on it before it saw our stream end.
	 */
	if (pipe_local(p) == NULL)
		return 0;
	/* A stream error never comes here: anything else is acceptance. */
	if (c->pair != NULL)
		pair_accepted(c->pair);
	return b->cb->stanza(b->cb_arg, pipe_local(p), pipe_remote(p), st);
}

static void
cb_confirmed(void *arg, struct pipe *p, uint64_t token, enum pipe_confirm how)
{
	struct barev *b = arg;

	b->cb->confirmed(b->cb_arg, token, how);
}

static void
cb_closing(void *arg, struct pipe *p, const char *reason)
{
	struct conn *c = pipe_owner_data(p);

	/* A failed dial waiting for the peer to close no longer holds a slot. */
	dial_done(c);
	stranger_release(c);
	if (c->pair != NULL)
		pair_detach(c->pair, c, reason);
}

static void
check_shutdown_done(struct barev *b)
{
	if (b->shutdown_done != NULL && b->nconns == 0)
		event_active(b->ev_shutdown, 0, 0);
}

/* Our connect never completed: say where we dialled, so a wrong port shows. */
static void
log_dial_failed(struct conn *c, const char *reason)
{
	char text[ADDR_STRLEN];

	addr_format(pipe_peer(c->pipe), text);
	if (c->pair != NULL)
		log_info("pair %s: dial failed addr=%s port=%u reason=%s",
		    c->pair->name, text, c->port, reason);
	else
		log_info("pipe %llu: dial failed addr=%s port=%u reason=%s",
		    (unsigned long long)pipe_id(c->pipe), text, c->port,
		    reason);
}

static void
cb_dead(void *arg, struct pipe *p, const char *reason)
{
	struct barev *b = arg;
	struct conn *c = pipe_owner_data(p);
	struct addr_stat *s = addr_get(b, pipe_peer(p)), *n;

	/* Still dialing: the connect failed or timed out, nobody closed it. */
	if (c->dialing)
		log_dial_failed(c, reason);
	dial_done(c);
	stranger_release(c);
	if (c->pair != NULL)
		pair_detach(c->pair, c, reason);
	if (s->pipes > 0)
		s->pipes--;
	n = subnet_get(b, pipe_peer(p));
	if (pipe_dir(p) == PIPE_INBOUND && n->pipes > 0)
		n->pipes--;
	c->dead = 1;
	TAILQ_REMOVE(&b->conns, c, entry);
	TAILQ_INSERT_TAIL(&b->dead, c, entry);
	b->nconns--;
	/* Never free a pipe inside its own callback: after this loop pass. */
	event_active(b->ev_reap, 0, 0);
	check_shutdown_done(b);
}

static const struct pipe_cb barev_pipe_cb = {
	cb_header,
	cb_open,
	cb_stanza,
	cb_confirmed,
	cb_closing,
	cb_dead,
};

static void
on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct barev *b = arg;
	struct conn *c;

	while ((c = TAILQ_FIRST(&b->dead)) != NULL) {
		TAILQ_REMOVE(&b->dead, c, entry);
		pipe_free(c->pipe);
		if (c->ev_silence != NULL)
			event_free(c->ev_silence);
		free(c);
	}
}

static struct conn *
conn_new(
    struct barev *b, int fd, enum pipe_dir dir, const struct in6_addr *peer)
{
	struct conn *c = xcalloc(1, sizeof(*c));

	c->b = b;
	c->pipe = pipe_new(b->base, b->ctx, ++b->next_id, dir, fd, peer,
	    &b->params, &barev_pipe_cb, b);
	pipe_set_owner_data(c->pipe, c);
	TAILQ_INSERT_TAIL(&b->conns, c, entry);
	b->nconns++;
	addr_get(b, peer)->pipes++;
	if (dir == PIPE_INBOUND)
		subnet_get(b, peer)->pipes++;
	return c;
}

static void
sock_tune(int fd)
{
	int one = 1;

	/* The Pascal library loses stanzas that share a read: one segment each. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* --- accepting ------------------------------------------------------ */

static void
window_roll(struct addr_stat *s, double now)
{
	if (now - s->window_start >= RATE_WINDOW) {
		s->window_start = now;
		s->inbound = 0;
	}
}

/*
 * Per address and per /64: a node can connect from any of the 2^64
 * addresses it routes, each of which passes the from-equals-source check.
 */
static const char *
admit(struct barev *b, const struct in6_addr *peer)
{
	struct addr_stat *s, *n;
	double now = clock_now();

	if (!b->allow_any && !addr_is_yggdrasil(peer))
		return "not-yggdrasil";
	if (b->nconns >= b->max_pipes)
		return "too-many-pipes";
	s = addr_get(b, peer);
	n = subnet_get(b, peer);
	if (s->pipes >= b->max_per_addr)
		return "too-many-pipes-per-address";
	if (n->pipes >= b->max_per_subnet)
		return "too-many-pipes-per-subnet";
	window_roll(s, now);
	window_roll(n, now);
	if (s->inbound >= b->inbound_per_minute)
		return "rate-limit";
	if (n->inbound >= b->inbound_per_subnet)
		return "rate-limit-per-subnet";
	s->inbound++;
	n->inbound++;
	return NULL;
}

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct listener *l = arg;
	struct barev *b = l->b;
	struct sockaddr_in6 local;
	socklen_t llen = sizeof(local);
	struct in6_addr peer;
	char text[ADDR_STRLEN], subnet[SUBNET_STRLEN];
	const char *why;
	struct conn *c;

	if (sa->sa_family != AF_INET6) {
		close(fd);
		return;
	}
	peer = ((struct sockaddr_in6 *)sa)->sin6_addr;
	/* Refusals close before writing a byte: safe for every peer. */
	if ((why = admit(b, &peer)) != NULL) {
		if (refusal_logged(b, why, &peer))
			log_info("pipe: rejected reason=%s peer=%s subnet=%s",
			    why, addr_format(&peer, text),
			    subnet_format(&peer, subnet));
		close(fd);
		return;
	}
	if ((fd = barev_fd_high(fd)) == -1) {
		if (refusal_logged(b, "no-high-fd", &peer))
			log_warn("pipe: rejected reason=no-high-fd peer=%s "
				 "error=\"%s\"",
			    addr_format(&peer, text), strerror(errno));
		return;
	}
	sock_tune(fd);
	if (getsockname(fd, (struct sockaddr *)&local, &llen) == -1) {
		close(fd);
		return;
	}
	c = conn_new(b, fd, PIPE_INBOUND, &peer);
	c->dialled = local.sin6_addr;
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	evconnlistener_enable(l->lev);
}

static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct listener *l = arg;

	/* Out of descriptors: pause instead of spinning on the same error. */
	log_warn("barev: accept failed: %s; pausing the listener for 1 s",
	    strerror(errno));
	evconnlistener_disable(lev);
	timer_after(l->ev_resume, 1.0);
}

static int
listen_on(struct barev *b, const struct conf_listen *cl, char **cause)
{
	struct sockaddr_in6 sin6;
	struct listener *l;
	char text[ADDR_STRLEN];
	socklen_t len;
	int fd, one = 1;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = cl->addr;
	sin6.sin6_port = htons(cl->port);
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		fd = barev_fd_high(fd);
	if (fd < 0 ||
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == -1 ||
	    listen(fd, 512) == -1) {
		xasprintf(cause, "cannot listen on [%s]:%u: %s",
		    addr_format(&cl->addr, text), cl->port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	/* The array is sized once in barev_new: each evconnlistener keeps l. */
	l = &b->listeners[b->nlisteners];
	l->b = b;
	l->lev = evconnlistener_new(b->base, on_accept, l,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	l->ev_resume = evtimer_new(b->base, on_resume, l);
	evconnlistener_set_error_cb(l->lev, on_accept_error);
	b->nlisteners++;
	/* Port 0 picks a free port: say which, tests read it from here. */
	memset(&sin6, 0, sizeof(sin6));
	len = sizeof(sin6);
	getsockname(fd, (struct sockaddr *)&sin6, &len);
	log_info("barev: listening on [%s]:%u", addr_format(&cl->addr, text),
	    ntohs(sin6.sin6_port));
	return 0;
}

/* --- dialling ------------------------------------------------------- */

static int
dial(struct pair *P)
{
	struct barev *b = P->b;
	struct sockaddr_in6 src, dst;
	char text[ADDR_STRLEN];
	const char *why = NULL;
	unsigned short port = P->port != 0 ? P->port : b->default_port;
	struct conn *c;
	int fd, one = 1;

	if (b->nconns >= b->max_pipes)
		why = "too-many-pipes";
	else if (addr_get(b, &P->remote.addr)->pipes >= b->max_per_addr)
		why = "too-many-pipes-per-address";
	if (why != NULL) {
		log_warn("pair %s: not dialling reason=%s", P->name, why);
		return -1;
	}
	memset(&src, 0, sizeof(src));
	src.sin6_family = AF_INET6;
	src.sin6_addr = P->local.addr;
	dst = src;
	dst.sin6_addr = P->remote.addr;
	dst.sin6_port = htons(port);
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		fd = barev_fd_high(fd);
	if (fd < 0) {
		log_warn("pair %s: cannot create a socket: %s", P->name,
		    strerror(errno));
		return -1;
	}
	/*
	 * Peers admit only the address in our `from`: bind it. FREEBIND lets
	 * a per-user address from an AnyIP route be bound without adding it.
	 */
	setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one));
	/*
	 * Let connect() pick the port from the whole 4-tuple: a port reserved
	 * by bind() makes the kernel scan every port in use on the address,
	 * which dominated start-up with thousands of pipes (tests/bench) and
	 * caps one address at the ~28,000 ephemeral ports.
	 */
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == -1) {
		log_warn("pair %s: cannot bind source address %s: %s", P->name,
		    addr_format(&P->local.addr, text), strerror(errno));
		close(fd);
		return -1;
	}
	sock_tune(fd);
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == -1 &&
	    errno != EINPROGRESS) {
		log_info("pair %s: dial failed addr=%s port=%u error=\"%s\"",
		    P->name, addr_format(&P->remote.addr, text), port,
		    strerror(errno));
		close(fd);
		return -1;
	}
	c = conn_new(b, fd, PIPE_OUTBOUND, &P->remote.addr);
	pipe_set_identity(c->pipe, &P->local, &P->remote);
	c->port = port;
	c->pair = P;
	c->dialing = 1;
	b->dials_in_progress++;
	P->out = c;
	log_debug("pair %s: dialling pipe=%llu addr=%s port=%u", P->name,
	    (unsigned long long)pipe_id(c->pipe),
	    addr_format(&P->remote.addr, text), port);
	return 0;
}

/* The identity's tokens now: one dial at most saved up, so no bursts. */
static double
ident_tokens(struct barev *b, struct ident *id, double now)
{
	id->tokens += (now - id->tokens_at) * b->dials_per_user;
	if (id->tokens > 1)
		id->tokens = 1;
	id->tokens_at = now;
	return id->tokens;
}

static void
dialq_remove(struct pair *P)
{
	struct barev *b = P->b;
	struct ident *id = P->ident;

	TAILQ_REMOVE(&id->q, P, dq);
	P->queued = 0;
	if (TAILQ_EMPTY(&id->q) && id->in_ring) {
		TAILQ_REMOVE(&b->dialq, id, ring);
		id->in_ring = 0;
	}
}

/*
 * The next pair to dial: the oldest of the first identity in turn with a
 * dial left in its share, which then goes to the back, so one user's many
 * contacts never hold back another user's dial. Pairs no longer to be
 * dialled leave the queue on the way. NULL if none may go now; *wait then
 * says how long until one may.
 */
static struct pair *
dialq_next(struct barev *b, double now, double *wait)
{
	struct ident *id, *next;
	struct pair *P;
	double w;

	*wait = 0;
	for (id = TAILQ_FIRST(&b->dialq); id != NULL; id = next) {
		next = TAILQ_NEXT(id, ring);
		if (ident_tokens(b, id, now) < 1) {
			w = (1 - id->tokens) / b->dials_per_user;
			if (*wait == 0 || w < *wait)
				*wait = w;
			continue;
		}
		while ((P = TAILQ_FIRST(&id->q)) != NULL &&
		    (!P->wanted || P->out != NULL || P->in != NULL))
			dialq_remove(P); /* may take id out of the ring */
		if (P == NULL)
			continue;
		dialq_remove(P);
		if (id->in_ring) {
			TAILQ_REMOVE(&b->dialq, id, ring);
			TAILQ_INSERT_TAIL(&b->dialq, id, ring);
		}
		return P;
	}
	return NULL;
}

static void
on_dialq(evutil_socket_t fd, short what, void *arg)
{
	struct barev *b = arg;
	struct pair *P;
	double now = clock_now(), cap, wait = 0;

	if (b->stopping)
		return;
	/*
	 * Time spent idle or waiting for a free slot earns one dial at most:
	 * a full second's worth would let a burst and the steady rate share
	 * one second, up to twice the limit. While pacing, a late timer may
	 * catch up what it missed.
	 */
	cap = b->pacing ? b->dials_per_second / 10 : 1;
	if (cap < 1)
		cap = 1;
	b->tokens += (now - b->tokens_at) * b->dials_per_second;
	if (b->tokens > cap)
		b->tokens = cap;
	b->tokens_at = now;
	while (b->dials_in_progress < b->dials_concurrent && b->tokens >= 1 &&
	    (P = dialq_next(b, now, &wait)) != NULL) {
		b->tokens -= 1;
		P->ident->tokens -= 1;
		if (dial(P) == -1)
			schedule_redial(P);
	}
	b->pacing = TAILQ_FIRST(&b->dialq) != NULL &&
	    b->dials_in_progress < b->dials_concurrent;
	if (!b->pacing)
		return;
	/* Waiting for the global budget, else for a queued user's share. */
	if (b->tokens < 1)
		wait = (1 - b->tokens) / b->dials_per_second;
	timer_after(b->ev_dialq, wait);
}

/* A finished dial or a new entry may let the queue move. */
static void
dialq_kick(struct barev *b)
{
	if (TAILQ_FIRST(&b->dialq) != NULL &&
	    !evtimer_pending(b->ev_dialq, NULL))
		event_active(b->ev_dialq, 0, 0);
}

static void
dial_enqueue(struct pair *P)
{
	if (P->queued || P->out != NULL || P->in != NULL || P->b->stopping)
		return;
	P->queued = 1;
	TAILQ_INSERT_TAIL(&P->ident->q, P, dq);
	if (!P->ident->in_ring) {
		TAILQ_INSERT_TAIL(&P->b->dialq, P->ident, ring);
		P->ident->in_ring = 1;
	}
	dialq_kick(P->b);
}

static void
on_redial(evutil_socket_t fd, short what, void *arg)
{
	dial_enqueue(arg);
}

/* --- the engine ----------------------------------------------------- */

/* A reload reaches a redial already waiting: no longer than the new backoff. */
static void
redial_visit(const void *node, VISIT which, void *arg)
{
	struct pair *P = *(struct pair *const *)node;
	double delay;

	if (which != postorder && which != leaf)
		return;
	delay = pair_delay(P, P->attempt > 0 ? P->attempt - 1 : 0);
	if (timer_shorten(P->ev_redial, delay))
		log_info("pair %s: reload shortens the wait redial_in_ms=%.0f",
		    P->name, delay * 1000);
}

void
barev_set_conf(struct barev *b, const struct conf *conf)
{
	struct conn *c;

	b->params.ping_interval = conf->ping_interval;
	b->params.ping_timeout = conf->ping_timeout;
	b->params.ping_failures = conf->ping_failures;
	b->params.handshake_timeout = conf->handshake_timeout;
	b->params.connect_timeout = conf->connect_timeout;
	b->params.close_wait = CLOSE_WAIT;
	b->params.max_output = (size_t)conf->max_output_bytes;
	b->params.limits.max_stanza_bytes = (size_t)conf->max_stanza_bytes;
	b->params.limits.max_depth = (unsigned)conf->max_depth;
	b->params.limits.max_header_bytes = 4096;
	b->max_pipes = (unsigned)conf->max_pipes;
	b->max_per_addr = (unsigned)conf->max_pipes_per_address;
	b->inbound_per_minute = (unsigned)conf->inbound_per_minute;
	b->max_per_subnet = (unsigned)conf->max_pipes_per_subnet;
	b->inbound_per_subnet = (unsigned)conf->inbound_per_minute_per_subnet;
	b->max_strangers = (unsigned)conf->max_stranger_pipes;
	b->stranger_silence = conf->stranger_silence;
	b->dials_concurrent = (unsigned)conf->dials_concurrent;
	b->dials_per_second = conf->dials_per_second;
	b->dials_per_user = conf->dials_per_user;
	b->redial_min = conf->redial_min;
	b->redial_max = conf->redial_max;
	b->refused_min = conf->refused_redial_min;
	b->refused_max = conf->refused_redial_max;
	b->default_port = (unsigned short)conf->barev_default_port;
	twalk_r(b->pairs, redial_visit, b);
	TAILQ_FOREACH(c, &b->conns, entry)
	pipe_params_changed(c->pipe);
}

static void
on_shutdown(evutil_socket_t fd, short what, void *arg)
{
	struct barev *b = arg;
	void (*done)(void *) = b->shutdown_done;

	if (done == NULL)
		return;
	b->shutdown_done = NULL;
	done(b->shutdown_arg);
}

struct barev *
barev_new(struct event_base *base, xmpp_ctx_t *ctx, const struct conf *conf,
    const struct barev_cb *cb, void *arg, char **cause)
{
	struct barev *b = xcalloc(1, sizeof(*b));
	size_t i;

	b->base = base;
	b->ctx = ctx;
	b->cb = cb;
	b->cb_arg = arg;
	b->allow_any = conf->allow_any_address;
	TAILQ_INIT(&b->conns);
	TAILQ_INIT(&b->dead);
	TAILQ_INIT(&b->dialq);
	barev_set_conf(b, conf);
	b->tokens = 1;
	b->tokens_at = clock_now();
	b->ev_dialq = evtimer_new(base, on_dialq, b);
	b->ev_reap = event_new(base, -1, 0, on_reap, b);
	b->ev_sweep = evtimer_new(base, on_sweep, b);
	b->ev_shutdown = evtimer_new(base, on_shutdown, b);
	b->refusals = ratelog_new(REFUSAL_WINDOW);
	b->ev_refusals = evtimer_new(base, on_refusals, b);
	timer_after(b->ev_sweep, RATE_WINDOW);
	b->listeners = xcalloc(conf->barev_listen.n, sizeof(*b->listeners));
	for (i = 0; i < conf->barev_listen.n; i++) {
		if (listen_on(b, &conf->barev_listen.v[i], cause) == -1) {
			barev_free(b);
			return NULL;
		}
	}
	return b;
}

static void
free_pair_node(void *node)
{
	pair_free(node);
}

void
barev_free(struct barev *b)
{
	struct conn *c;
	size_t i;

	if (b == NULL)
		return;
	for (i = 0; i < b->nlisteners; i++) {
		evconnlistener_free(b->listeners[i].lev);
		event_free(b->listeners[i].ev_resume);
	}
	free(b->listeners);
	while ((c = TAILQ_FIRST(&b->conns)) != NULL) {
		TAILQ_REMOVE(&b->conns, c, entry);
		TAILQ_INSERT_TAIL(&b->dead, c, entry);
	}
	on_reap(-1, 0, b);
	tdestroy(b->pairs, free_pair_node);
	tdestroy(b->addrs, free);
	tdestroy(b->subnets, free);
	tdestroy(b->slots, free);
	event_free(b->ev_dialq);
	event_free(b->ev_reap);
	event_free(b->ev_sweep);
	event_free(b->ev_shutdown);
	event_free(b->ev_refusals);
	ratelog_free(b->refusals);
	free(b);
}

void
barev_want(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote, unsigned short port)
{
	struct pair *P = pair_find(b, local, remote, 1);

	P->port = port;
	if (P->in != NULL && P->in->stranger) {
		log_info("pair %s: stranger accepted pipe=%llu", P->name,
		    (unsigned long long)pipe_id(P->in->pipe));
		stranger_release(P->in);
	}
	if (P->wanted)
		return;
	P->wanted = 1;
	P->attempt = 0;
	dial_enqueue(P);
}

void
barev_unwant(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote)
{
	struct pair *P = pair_find(b, local, remote, 0);

	if (P == NULL)
		return;
	P->wanted = 0;
	evtimer_del(P->ev_redial);
	if (P->queued) {
		dialq_remove(P);
	}
	/* Each drop may forget P: take what is left each time. */
	if (P->in != NULL) {
		struct conn *in = P->in;
		int last = P->out == NULL;
		conn_drop(in, "unwanted", NULL);
		if (last)
			return;
	}
	if (P->out != NULL)
		conn_drop(P->out, "unwanted", NULL);
	else
		pair_maybe_forget(P);
}

static struct conn *
active_conn(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote)
{
	struct pair *P = pair_find(b, local, remote, 0);

	if (P == NULL || P->active == NULL || !conn_open(P->active))
		return NULL;
	return P->active;
}

int
barev_send(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote, xmpp_stanza_t *stanza)
{
	struct conn *c = active_conn(b, local, remote);

	if (c == NULL)
		return -1;
	pipe_send(c->pipe, stanza);
	return 0;
}

int
barev_send_chat(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote, const char *inner, size_t len,
    uint64_t token)
{
	struct conn *c = active_conn(b, local, remote);

	if (c == NULL)
		return -1;
	pipe_send_chat(c->pipe, inner, len, token);
	return 0;
}

int
barev_is_up(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote)
{
	return active_conn(b, local, remote) != NULL;
}

unsigned
barev_pipe_count(const struct barev *b)
{
	return b->nconns;
}

void
barev_shutdown(struct barev *b, void (*done)(void *), void *arg)
{
	struct conn *c, *next;
	size_t i;

	b->stopping = 1;
	for (i = 0; i < b->nlisteners; i++)
		evconnlistener_disable(b->listeners[i].lev);
	evtimer_del(b->ev_dialq);
	b->shutdown_done = done;
	b->shutdown_arg = arg;
	b->params.close_wait = SHUTDOWN_WAIT;
	for (c = TAILQ_FIRST(&b->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->pair != NULL)
			c->pair->wanted = 0;
		conn_drop(c, "shutdown", NULL);
	}
	/* Peers that never close must not hold up our exit. */
	timer_after(b->ev_shutdown, SHUTDOWN_WAIT + 0.2);
	check_shutdown_done(b);
}
