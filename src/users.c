#include "config.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chatmsg.h"
#include "stanza.h"
#include "users.h"
#include "utf8.h"
#include "xmalloc.h"

/* Resource ranks: "most available" first. */
#define RANK_DND 1
#define RANK_XA 2
#define RANK_AWAY 3
#define RANK_AVAILABLE 4
#define RANK_CHAT 5

struct users {
	void *by_jid;
	void *by_id;
	size_t n;
};

static int
jid_cmp(const void *a, const void *b)
{
	return strcmp(
	    ((const struct user *)a)->jid, ((const struct user *)b)->jid);
}

static int
id_cmp(const void *va, const void *vb)
{
	const struct user *a = va, *b = vb;
	int r = memcmp(&a->id.addr, &b->id.addr, sizeof(a->id.addr));

	return r != 0 ? r : strcasecmp(a->id.nick, b->id.nick);
}

struct users *
users_new(void)
{
	return xcalloc(1, sizeof(struct users));
}

static void
hidden_free(struct contact *c)
{
	struct hidden *h;

	while ((h = c->hidden) != NULL) {
		c->hidden = h->next;
		free(h->jid);
		free(h);
	}
}

static void
contact_free(struct contact *c)
{
	free(c->jid);
	shown_clear(&c->seen);
	shown_clear(&c->told);
	hidden_free(c);
	free(c);
}

static void
resource_free(struct resource *r)
{
	free(r->jid);
	free(r->status);
	free(r);
}

static void
resources_free(struct user *u)
{
	struct resource *r;
	struct contact *c;

	for (c = u->contacts; c != NULL; c = c->next)
		hidden_free(c);
	while ((r = u->resources) != NULL) {
		u->resources = r->next;
		resource_free(r);
	}
}

static void
user_free(struct user *u)
{
	struct contact *c;

	resources_free(u);
	while ((c = u->contacts) != NULL) {
		u->contacts = c->next;
		contact_free(c);
	}
	shown_clear(&u->sent);
	free(u->jid);
	free(u);
}

static void
free_node(void *node)
{
	user_free(node);
}

static void
no_free(void *node)
{
}

void
users_free(struct users *us)
{
	if (us == NULL)
		return;
	tdestroy(us->by_id, no_free);
	tdestroy(us->by_jid, free_node);
	free(us);
}

struct user *
users_add(struct users *us, const char *jid, const struct barev_jid *id)
{
	struct user *u = xcalloc(1, sizeof(*u));

	u->jid = xstrdup(jid);
	u->id = *id;
	if (tfind(u, &us->by_jid, jid_cmp) != NULL ||
	    tfind(u, &us->by_id, id_cmp) != NULL) {
		user_free(u);
		return NULL;
	}
	tsearch(u, &us->by_jid, jid_cmp);
	tsearch(u, &us->by_id, id_cmp);
	us->n++;
	return u;
}

void
users_remove(struct users *us, struct user *u)
{
	tdelete(u, &us->by_id, id_cmp);
	tdelete(u, &us->by_jid, jid_cmp);
	us->n--;
	user_free(u);
}

int
users_set_id(struct users *us, struct user *u, const struct barev_jid *id)
{
	struct user key;

	memset(&key, 0, sizeof(key));
	key.id = *id;
	if (tfind(&key, &us->by_id, id_cmp) != NULL)
		return -1;
	tdelete(u, &us->by_id, id_cmp);
	u->id = *id;
	tsearch(u, &us->by_id, id_cmp);
	return 0;
}

struct user *
users_get(struct users *us, const char *bare_jid)
{
	struct user key, **found;

	memset(&key, 0, sizeof(key));
	key.jid = (char *)(uintptr_t)bare_jid;
	found = tfind(&key, &us->by_jid, jid_cmp);
	return found ? *found : NULL;
}

struct user *
users_by_id(struct users *us, const struct barev_jid *id)
{
	struct user key, **found;

	memset(&key, 0, sizeof(key));
	key.id = *id;
	found = tfind(&key, &us->by_id, id_cmp);
	return found ? *found : NULL;
}

struct walk {
	void (*fn)(struct user *, void *);
	void *arg;
	const struct in6_addr *addr;
	unsigned count;
	struct user *last;
};

static void
walk_visit(const void *node, VISIT which, void *arg)
{
	struct walk *w = arg;
	struct user *u = *(struct user *const *)node;

	if (which != postorder && which != leaf)
		return;
	if (w->addr != NULL) {
		if (memcmp(&u->id.addr, w->addr, sizeof(*w->addr)) == 0) {
			w->count++;
			w->last = u;
		}
		return;
	}
	w->fn(u, w->arg);
}

unsigned
users_count_at(struct users *us, const struct in6_addr *addr)
{
	struct walk w = { NULL, NULL, addr, 0, NULL };

	twalk_r(us->by_jid, walk_visit, &w);
	return w.count;
}

struct user *
users_only_at(struct users *us, const struct in6_addr *addr)
{
	struct walk w = { NULL, NULL, addr, 0, NULL };

	twalk_r(us->by_jid, walk_visit, &w);
	return w.count == 1 ? w.last : NULL;
}

/* fn must not add or remove users. */
void
users_each(struct users *us, void (*fn)(struct user *, void *), void *arg)
{
	struct walk w = { fn, arg, NULL, 0, NULL };

	twalk_r(us->by_jid, walk_visit, &w);
}

struct contact *
user_contact(struct user *u, const struct barev_jid *who)
{
	struct contact *c;

	for (c = u->contacts; c != NULL; c = c->next)
		if (barev_jid_equal_nocase(&c->who, who))
			return c;
	return NULL;
}

struct contact *
user_contact_add(
    struct user *u, const struct barev_jid *who, unsigned short port)
{
	struct contact *c = user_contact(u, who);

	if (c != NULL)
		return c;
	c = xcalloc(1, sizeof(*c));
	c->who = *who;
	c->port = port;
	c->backlog = 1; /* until a read of the store shows otherwise */
	c->next = u->contacts;
	u->contacts = c;
	return c;
}

void
user_contact_remove(struct user *u, struct contact *victim)
{
	struct contact **cp;

	for (cp = &u->contacts; *cp != NULL; cp = &(*cp)->next) {
		if (*cp == victim) {
			*cp = victim->next;
			contact_free(victim);
			return;
		}
	}
}

void
shown_set(
    struct shown *s, int available, enum barev_show show, const char *status)
{
	free(s->status);
	s->available = available;
	s->show = available ? show : BSHOW_NONE;
	s->status = status && *status ? xstrdup(status) : NULL;
}

int
shown_equal(const struct shown *a, const struct shown *b)
{
	if (a->available != b->available || a->show != b->show)
		return 0;
	if (a->status == NULL || b->status == NULL)
		return a->status == b->status;
	return strcmp(a->status, b->status) == 0;
}

void
shown_clear(struct shown *s)
{
	free(s->status);
	memset(s, 0, sizeof(*s));
}

static int
rank_of(xmpp_stanza_t *pres)
{
	xmpp_stanza_t *show = stanza_child(pres, "show", NULL);
	char *text;
	int rank = RANK_AVAILABLE;

	if (show == NULL || (text = xmpp_stanza_get_text(show)) == NULL)
		return rank;
	if (strcmp(text, "chat") == 0)
		rank = RANK_CHAT;
	else if (strcmp(text, "away") == 0)
		rank = RANK_AWAY;
	else if (strcmp(text, "xa") == 0)
		rank = RANK_XA;
	else if (strcmp(text, "dnd") == 0)
		rank = RANK_DND;
	xmpp_free(xmpp_stanza_get_context(pres), text);
	return rank;
}

static void
resource_drop(struct user *u, const char *full)
{
	struct resource **rp, *r;

	struct contact *c;

	for (c = u->contacts; c != NULL; c = c->next)
		contact_unhide(c, full);
	for (rp = &u->resources; (r = *rp) != NULL; rp = &r->next) {
		if (strcmp(r->jid, full) == 0) {
			*rp = r->next;
			resource_free(r);
			return;
		}
	}
}

/* Longest status text passed on, in bytes. */
#define STATUS_MAX 1024

static void
resource_set(struct user *u, const char *full, xmpp_stanza_t *pres)
{
	struct resource *r;
	char *prio, *status;

	for (r = u->resources; r != NULL; r = r->next)
		if (strcmp(r->jid, full) == 0)
			break;
	if (r == NULL) {
		r = xcalloc(1, sizeof(*r));
		r->jid = xstrdup(full);
		r->next = u->resources;
		u->resources = r;
	}
	r->rank = rank_of(pres);
	prio = stanza_child_text(pres, "priority", NULL);
	r->priority = prio ? atoi(prio) : 0;
	free(prio);
	free(r->status);
	r->status = NULL;
	if ((status = stanza_child_text(pres, "status", NULL)) != NULL) {
		/* What the reference client's parser cannot take goes, as in bodies. */
		r->status = chatmsg_clean(status);
		r->status[utf8_prefix(
		    r->status, strlen(r->status), STATUS_MAX)] = '\0';
		free(status);
	}
}

static int
hides(const struct contact *c, const char *full)
{
	const struct hidden *h;

	for (h = c != NULL ? c->hidden : NULL; h != NULL; h = h->next)
		if (strcmp(h->jid, full) == 0)
			return 1;
	return 0;
}

/*
 * The aggregate: the most available resource, then the highest priority;
 * only the resources c sees if c is not NULL.
 */
static void
aggregate(const struct user *u, const struct contact *c, struct shown *out)
{
	const struct resource *r, *best = NULL;
	enum barev_show show;

	for (r = u->resources; r != NULL; r = r->next) {
		if (hides(c, r->jid))
			continue;
		if (best == NULL || r->rank > best->rank ||
		    (r->rank == best->rank && r->priority > best->priority) ||
		    (r->rank == best->rank && r->priority == best->priority &&
			strcmp(r->jid, best->jid) < 0))
			best = r;
	}
	memset(out, 0, sizeof(*out));
	if (best == NULL)
		return;
	/* xa means available to the reference client, chat is unknown to it. */
	if (best->rank == RANK_DND)
		show = BSHOW_DND;
	else if (best->rank == RANK_XA || best->rank == RANK_AWAY)
		show = BSHOW_AWAY;
	else
		show = BSHOW_NONE;
	shown_set(out, 1, show, best->status);
}

int
user_presence(struct user *u, const char *full_jid, xmpp_stanza_t *pres,
    const struct shown **now)
{
	const char *type = xmpp_stanza_get_type(pres);
	struct shown next;

	if (type != NULL && strcmp(type, "unavailable") == 0)
		resource_drop(u, full_jid);
	else if (type == NULL)
		resource_set(u, full_jid, pres);
	else
		return 0; /* subscriptions, probes and errors are not presence */
	aggregate(u, NULL, &next);
	if (shown_equal(&next, &u->sent)) {
		shown_clear(&next);
		return 0;
	}
	shown_clear(&u->sent);
	u->sent = next;
	*now = &u->sent;
	return 1;
}

int
user_online(const struct user *u)
{
	return u->resources != NULL;
}

int
user_forget_resources(struct user *u)
{
	int was = user_online(u);

	resources_free(u);
	shown_clear(&u->sent);
	return was;
}

void
contact_hide(struct contact *c, const char *full)
{
	struct hidden *h;

	if (hides(c, full))
		return;
	h = xmalloc(sizeof(*h));
	h->jid = xstrdup(full);
	h->next = c->hidden;
	c->hidden = h;
}

int
contact_unhide(struct contact *c, const char *full)
{
	struct hidden **hp, *h;

	for (hp = &c->hidden; (h = *hp) != NULL; hp = &h->next) {
		if (strcmp(h->jid, full) == 0) {
			*hp = h->next;
			free(h->jid);
			free(h);
			return 1;
		}
	}
	return 0;
}

int
user_hidden_from_all(const struct user *u, const char *full)
{
	const struct resource *r;
	const struct contact *c;
	int sharing = 0;

	for (r = u->resources; r != NULL; r = r->next)
		if (strcmp(r->jid, full) == 0)
			break;
	if (r == NULL)
		return 0;
	for (c = u->contacts; c != NULL; c = c->next) {
		if (!c->sub_from)
			continue;
		sharing = 1;
		if (!hides(c, full))
			return 0;
	}
	return sharing;
}

void
user_shown_to(const struct user *u, const struct contact *c, struct shown *out)
{
	memset(out, 0, sizeof(*out));
	if (c->hidden == NULL)
		shown_set(out, u->sent.available, u->sent.show, u->sent.status);
	else
		aggregate(u, c, out);
}
