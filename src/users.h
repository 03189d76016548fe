/* Registered users in memory: their XMPP resources, one aggregated presence, their Barev contacts. */
#ifndef BG_USERS_H
#define BG_USERS_H

#include <stdint.h>
#include <strophe.h>

#include "jid.h"

/* What Barev peers can be shown: the reference client knows no xa or chat. */
enum barev_show {
	BSHOW_NONE, /* available */
	BSHOW_AWAY,
	BSHOW_DND,
};

/* A presence as one side shows it: available or not, show, status text. */
struct shown {
	int available;
	enum barev_show show;
	char *status; /* NULL: none */
};

struct contact {
	struct barev_jid who;
	char *jid; /* the XMPP JID the user knows it by; NULL: the canonical */
	unsigned short port;
	int sub_to; /* the user sees the contact's presence */
	int sub_from; /* the contact may see the user's presence */
	int pipe_up;
	/* Queued messages up to this id are on the current pipe (kept in
	 * memory: after a restart everything stored is sent again). */
	int64_t sent_upto;
	/* The store may hold messages not on the pipe: new ones go through it. */
	int backlog;
	/* The contact's newest presence; the user sees it within presence_interval. */
	struct shown seen;
	double
	    shown_at; /* when a presence of the contact last went to the user */
	int presence_due; /* seen waits for presence_interval to pass */
	double state_at; /* when a chat state of the contact last went */
	const char
	    *state_due; /* the newest chat state waiting (static), or NULL */
	/* The user was told the contact's client does not list them. */
	int refusal_told;
	int composing; /* the user is typing to this contact */
	/* Resources that sent this contact a directed unavailable. */
	struct hidden *hidden;
	/* The user's presence as last sent on the current pipe, if told. */
	struct shown told;
	int told_valid;
	double composing_at; /* when the user last said so */
	struct contact *next;
};

struct hidden {
	char *jid; /* full JID */
	struct hidden *next;
};

struct resource {
	char *jid; /* full JID */
	int rank; /* dnd 1, xa 2, away 3, available 4, chat 5 */
	int priority;
	char *status;
	struct resource *next;
};

struct user {
	char *jid; /* bare, lower case */
	struct barev_jid id; /* the user's Barev identity */
	struct resource *resources;
	struct shown sent; /* what Barev peers were last told */
	struct contact *contacts;
	int refused; /* access.* no longer lists them: data kept, stanzas refused */
};

struct users;

struct users *users_new(void);
void users_free(struct users *us);
/* Adds a user (fresh, offline, no contacts); NULL if jid is present. */
struct user *
users_add(struct users *us, const char *jid, const struct barev_jid *id);
void users_remove(struct users *us, struct user *u);
/* Gives u another Barev identity; -1 if another user has it. */
int users_set_id(struct users *us, struct user *u, const struct barev_jid *id);
struct user *users_get(struct users *us, const char *bare_jid);
/* By Barev identity: nick without ASCII case, address by bytes. */
struct user *users_by_id(struct users *us, const struct barev_jid *id);
/* How many users have an identity at this address. */
unsigned users_count_at(struct users *us, const struct in6_addr *addr);
/* The user at addr if exactly one has it, else NULL. */
struct user *users_only_at(struct users *us, const struct in6_addr *addr);
void users_each(struct users *us, void (*fn)(struct user *, void *), void *arg);

struct contact *user_contact(struct user *u, const struct barev_jid *who);
struct contact *user_contact_add(
    struct user *u, const struct barev_jid *who, unsigned short port);
void user_contact_remove(struct user *u, struct contact *c);

/*
 * Takes one presence stanza from one of the user's resources (full JID).
 * Returns 1 if what Barev peers should see changed: then *now holds it
 * (borrowed until the next call) and u->sent is updated.
 */
int user_presence(struct user *u, const char *full_jid, xmpp_stanza_t *pres,
    const struct shown **now);
int user_online(const struct user *u);

/*
 * A directed unavailable from the user's resource full_jid to c: c no
 * longer sees that resource, the others still do. A directed available
 * (contact_unhide) undoes it; 1 if it did. A resource that leaves
 * (user_presence) is shown to nobody and forgotten here too.
 */
void contact_hide(struct contact *c, const char *full_jid);
int contact_unhide(struct contact *c, const char *full_jid);
/* Whether u has resource full_jid and every contact u shares presence with hides it. */
int user_hidden_from_all(const struct user *u, const char *full_jid);
/* What c is to be shown of u: u->sent unless c hides a resource. Clear *out. */
void
user_shown_to(const struct user *u, const struct contact *c, struct shown *out);
/* Drops every resource (the server can no longer tell); 1 if u was online. */
int user_forget_resources(struct user *u);

void shown_set(
    struct shown *s, int available, enum barev_show show, const char *status);
int shown_equal(const struct shown *a, const struct shown *b);
void shown_clear(struct shown *s);

#endif
