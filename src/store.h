/* Persistent state on SQLite: users, their Barev contacts, pending requests, the message queue. */
#ifndef BG_STORE_H
#define BG_STORE_H

#include <netinet/in.h>
#include <stdint.h>

#include "jid.h"

/*
 * One store is one database file used by one single-threaded program. Every
 * call runs to completion at once (no threads, no callbacks later); a call
 * outside store_begin() commits before it returns.
 *
 * Conventions:
 * - Text arguments are borrowed, NUL-terminated UTF-8.
 * - Nicks compare without ASCII case (Inky@a is inky@a) but keep the case
 *   they were last written with; addresses compare as their 16 bytes.
 * - A user's JID is the bare JID as the caller normalized it (lower case,
 *   no resource) and compares byte for byte.
 * - Lookups return 0 found, 1 not found, -1 error. Deletes and updates
 *   return 0 done, 1 nothing matched, -1 error. An error logs one line
 *   ("store: <what>: <sqlite's message>") and returns -1.
 * - The walks (*_each, *_at, take_expired) call fn once per row; what fn
 *   is given is valid only during that call. fn returning non-zero stops
 *   the walk, which returns that value. fn may call other store functions
 *   but not the walk it is called from (that returns -1).
 */

/* Longest bare JID: localpart '@' domainpart, each at most JID_PART_MAX. */
#define STORE_JID_MAX (2 * JID_PART_MAX + 1)

struct store;

struct store_user {
	char jid[STORE_JID_MAX + 1];
	char nick[BAREV_NICK_MAX + 1]; /* NUL-padded, case kept */
	struct in6_addr addr; /* the gateway's Barev address */
	int64_t created; /* Unix time of registration */
};

struct store_contact {
	struct barev_jid who; /* nick case as last put */
	unsigned short port; /* 0: the default Barev port */
	int sub_to; /* the user receives the contact's presence */
	int sub_from; /* the contact may see the user's presence */
	char jid[JID_MAX +
	    1]; /* what the user calls it; "": the canonical JID */
};

/* Which way a queued message goes. */
enum store_dir {
	STORE_TO_BAREV = 0, /* from an XMPP user to a Barev contact */
	STORE_TO_XMPP = 1, /* from a Barev contact to a user, link down */
};

/* The strings are borrowed: the caller's for store_msg_add, SQLite's in a walk. */
struct store_msg {
	int64_t id; /* the delivery order; never reused */
	enum store_dir dir;
	const char *user_jid; /* bare JID of the gateway user */
	struct barev_jid to; /* the Barev contact */
	const char *sender; /* full JID that sent it (errors, receipts) */
	const char *stanza_id; /* may be NULL */
	const char *body;
	const char *xhtml; /* XHTML-IM body, may be NULL */
	int receipt; /* the sender asked for a XEP-0184 receipt */
	int64_t created;
	int64_t expires; /* 0: never */
};

/*
 * Open path, creating it (mode 0600) or bringing its schema up to date.
 * NULL + *cause (free it) if the file cannot be opened, is not a database
 * or was written by a newer version of this program.
 */
struct store *store_open(const char *path, char **cause);
/* Finalize everything and close; NULL is a no-op. */
void store_close(struct store *st);
/* The schema version this program writes (PRAGMA user_version). */
int store_schema_version(void);

/* One write transaction around several calls; they do not nest. 0 or -1. */
int store_begin(struct store *st);
int store_commit(struct store *st);
/* 0 also when no transaction is open, so a fail path may always call it. */
int store_rollback(struct store *st);

/* users */
/*
 * Register jid as nick at addr. -1 + cause: "already registered", "nick
 * taken" (the nick, ignoring case, has a user at addr), a bad JID or nick,
 * or "database error" (logged).
 */
int store_user_add(struct store *st, const char *jid, const char *nick,
    const struct in6_addr *addr, const char **cause);
int store_user_get(struct store *st, const char *jid, struct store_user *out);
/* The user called nick (ignoring case) at addr. */
int store_user_by_nick(struct store *st, const char *nick,
    const struct in6_addr *addr, struct store_user *out);
/* How many users have addr, or -1. */
int store_user_count_at(struct store *st, const struct in6_addr *addr);
/* Move a user to another address (per-user mode); -1 if the nick is taken there. */
int store_user_set_addr(
    struct store *st, const char *jid, const struct in6_addr *addr);
/* Delete a user with their contacts, pending requests and queued messages. */
int store_user_del(struct store *st, const char *jid);
/* Every user, in JID order. */
int store_users_each(struct store *st,
    int (*fn)(void *arg, const struct store_user *u), void *arg);

/* contacts of a user */
/* Insert, or update port, subscriptions and the nick's case. -1 if no such user. */
int store_contact_put(
    struct store *st, const char *user_jid, const struct store_contact *c);
int store_contact_get(struct store *st, const char *user_jid,
    const struct barev_jid *who, struct store_contact *out);
int store_contact_del(
    struct store *st, const char *user_jid, const struct barev_jid *who);
/* A user's contacts, by nick (ignoring case) then address. */
int store_contacts_each(struct store *st, const char *user_jid,
    int (*fn)(void *arg, const struct store_contact *c), void *arg);
/* Every (user, contact) whose contact is at addr, for inbound routing. */
int store_contacts_at(struct store *st, const struct in6_addr *addr,
    int (*fn)(void *arg, const char *user_jid, const struct store_contact *c),
    void *arg);

/* subscription requests from Barev strangers */
/* Record who asking user_jid at now: created is kept from the first time. */
int store_pending_put(struct store *st, const char *user_jid,
    const struct barev_jid *who, int64_t now);
int store_pending_del(
    struct store *st, const char *user_jid, const struct barev_jid *who);
/* Every pending request last asked after the time after, oldest asked first. */
int store_pending_each(struct store *st, int64_t after,
    int (*fn)(void *arg, const char *user_jid, const struct barev_jid *who,
	int64_t created, int64_t last_asked),
    void *arg);
/* Deletes the requests last asked at upto or before; how many, or -1. */
int store_pending_expire(struct store *st, int64_t upto);

/* message queue (store and forward) */
/*
 * Queue m (its id is ignored; body and sender must not be NULL).
 * Returns the new id, or -1 if the message could not be stored (no such
 * user, or an error). Outside store_begin() the message is committed when
 * this returns and survives a crash of the process (see store.c).
 */
int64_t store_msg_add(struct store *st, const struct store_msg *m);
/*
 * The STORE_TO_BAREV messages of user_jid for the contact to (nick ignoring
 * case), in id order.
 */
int store_msg_each_for(struct store *st, const char *user_jid,
    const struct barev_jid *to, int (*fn)(void *arg, const struct store_msg *m),
    void *arg);
/* The same from the first id above after: what a pipe has not been given yet. */
int store_msg_each_after(struct store *st, const char *user_jid,
    const struct barev_jid *to, int64_t after,
    int (*fn)(void *arg, const struct store_msg *m), void *arg);
/* Every STORE_TO_XMPP message (to = the contact that sent it), in id order. */
int store_msg_each_to_xmpp(struct store *st,
    int (*fn)(void *arg, const struct store_msg *m), void *arg);
int store_msg_del(struct store *st, int64_t id);
/*
 * Call fn for each message with 0 < expires <= now in id order, then delete
 * those fn was called for (also when fn stopped the walk).
 */
int store_msg_take_expired(struct store *st, int64_t now,
    int (*fn)(void *arg, const struct store_msg *m), void *arg);
/* Every message that expires does so seconds after it was written (a reload). */
int store_msg_set_lifetime(struct store *st, int64_t seconds);
/* Messages in the queue, or -1. */
int store_msg_count(struct store *st);

#endif
