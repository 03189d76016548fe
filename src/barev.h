/*
 * The Barev side: listeners, dialing, the table of pairs and their pipes,
 * limits. The only module that creates or frees pipes.
 *
 * A pair is (local identity, remote JID); it has at most one pipe in use.
 * The layer above (the bridge) says which identities exist, which pairs
 * are allowed, and which pairs it wants kept open; the engine tells it
 * when a pair comes up or goes down and hands it every stanza a peer sent.
 */
#ifndef BG_BAREV_H
#define BG_BAREV_H

#include <event2/event.h>
#include <strophe.h>

#include "jid.h"
#include "pipe.h"

struct conf;
struct barev;

enum barev_verdict {
	BAREV_ALLOW, /* a known contact of that identity */
	BAREV_STRANGER, /* no contact yet: admitted within the stranger limits */
	BAREV_DENY, /* refuse with not-authorized */
};

struct barev_cb {
	/*
	 * Which local identity an inbound stream is for: to_nick may be NULL
	 * (the peer sent no usable `to`), dialled is the local address the
	 * peer connected to. Fill *out and return 0, or return -1.
	 */
	int (*lookup_local)(void *arg, const char *to_nick,
	    const struct in6_addr *dialled, struct barev_jid *out);
	/* Whether remote may talk to local. */
	enum barev_verdict (*allow)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote);
	/*
	 * A stranger's pipe (BAREV_STRANGER) passed the stranger limits and
	 * opens: the user may be asked. barev_want() makes it a contact's.
	 */
	void (*stranger)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote);
	/* The pair has one settled, open pipe: stanzas can flow. */
	void (*up)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote);
	/* The pair has no open pipe any more. */
	void (*down)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote, const char *reason);
	/*
	 * A stanza from remote to local (borrowed). Pings are answered by the
	 * engine and not passed up. Return 0 if handled; -1 makes the engine
	 * answer an iq get/set with service-unavailable and ignore the rest.
	 */
	int (*stanza)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote, xmpp_stanza_t *stanza);
	/* The outcome of barev_send_chat(token), reported exactly once. */
	void (*confirmed)(void *arg, uint64_t token, enum pipe_confirm how);
	/*
	 * remote answered our dial with not-authorized: it does not list
	 * local as a contact. The engine redials only after retry_in seconds
	 * (growing with each refusal) and forgets the refusals once remote
	 * dials us or accepts a dial.
	 */
	void (*refused)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote, double retry_in);
};

/* Listens as configured; NULL and *cause if a listener cannot be opened. */
struct barev *
barev_new(struct event_base *base, xmpp_ctx_t *ctx, const struct conf *conf,
    const struct barev_cb *cb, void *arg, char **cause);
/* Closes every pipe at once (no waiting) and frees everything. */
void barev_free(struct barev *b);
/* Takes the reloadable settings (limits, timers) from a new configuration. */
void barev_set_conf(struct barev *b, const struct conf *conf);

/*
 * Keep a pipe open for the pair, dialling remote at port when there is
 * none (redialled with backoff after losses). Calling again updates port.
 * Port 0: barev.default_port as configured at each dial, so that a
 * reload reaches the next redial.
 */
void barev_want(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote, unsigned short port);
/* No longer wanted: its pipe, if any, is closed gracefully. */
void barev_unwant(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote);
/*
 * Sends a stanza (borrowed) on the pair's open pipe; from and to are set
 * by the engine. -1 if the pair is not up.
 */
int barev_send(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote, xmpp_stanza_t *stanza);
/*
 * A chat message whose children are serialized in inner (len bytes),
 * followed by a ping whose answer proves the peer processed it;
 * confirmed() reports the outcome. -1 (and no report) if the pair is not
 * up.
 */
int barev_send_chat(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote, const char *inner, size_t len,
    uint64_t token);
int barev_is_up(struct barev *b, const struct barev_jid *local,
    const struct barev_jid *remote);

/* Pipes open now, in any state (for tests and benchmarks). */
unsigned barev_pipe_count(const struct barev *b);
/* Graceful close of everything: unavailable, stream end; done when all are gone or after a bounded wait. */
void barev_shutdown(struct barev *b, void (*done)(void *), void *arg);

/*
 * Moves a socket to fd >= 1024 (closing the original) so that
 * libstrophe's select() on the component socket never sees a large fd.
 * Returns the new fd, or -1 (socket closed) if that is impossible.
 */
int barev_fd_high(int fd);
/* Raises RLIMIT_NOFILE to its hard limit; -1 + cause if that leaves no room above 1024. */
int barev_raise_fd_limit(char **cause);

#endif
