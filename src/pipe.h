/* One Barev TCP stream: state machine, output buffer, parser, handshake/ping/close timers. */
#ifndef BG_PIPE_H
#define BG_PIPE_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>
#include <strophe.h>

#include "jid.h"
#include "xstream.h"

enum pipe_dir {
	PIPE_OUTBOUND,
	PIPE_INBOUND,
};

enum pipe_state {
	PIPE_CONNECTING, /* outbound TCP connect in progress */
	PIPE_HEADER_WAIT, /* waiting for the peer's stream header */
	PIPE_OPEN, /* headers exchanged; stanzas flow */
	PIPE_CLOSING, /* our end written; waiting for the peer's EOF */
	PIPE_DEAD, /* socket closed; the owner frees it later */
};

/* The close reason when the peer answered with not-authorized. */
#define PIPE_REASON_NOT_AUTHORIZED "peer-not-authorized"

/* Settings shared by all pipes, owned by the engine. */
struct pipe_params {
	double ping_interval;
	double ping_timeout;
	int ping_failures;
	double handshake_timeout;
	double connect_timeout;
	double close_wait;
	size_t max_output;
	struct xstream_limits limits;
};

struct pipe;

/* What became of a message sent with pipe_send_chat(). */
enum pipe_confirm {
	PIPE_CONFIRMED, /* the peer answered the ping that followed it */
	PIPE_ASSUMED, /* no answer within ping_timeout, pipe still open */
	PIPE_LOST, /* the pipe died first: it may not have arrived */
};

/* How a pipe reports to its owner (the engine). */
struct pipe_cb {
	/*
	 * The peer's header arrived (from/to as sent, possibly NULL).
	 * Return 0 to open the pipe, or -1 with the stream error condition
	 * to send.
	 */
	int (*header)(void *arg, struct pipe *p, const char *from,
	    const char *to, const char **condition);
	void (*open)(void *arg, struct pipe *p);
	/* A stanza other than a ping; -1 = not understood (see barev.h). */
	int (*stanza)(void *arg, struct pipe *p, xmpp_stanza_t *stanza);
	void (*confirmed)(
	    void *arg, struct pipe *p, uint64_t token, enum pipe_confirm how);
	/* The pipe began to close (it carries no more stanzas of ours). */
	void (*closing)(void *arg, struct pipe *p, const char *reason);
	/* The socket is closed; the owner must free the pipe outside this call. */
	void (*dead)(void *arg, struct pipe *p, const char *reason);
};

/* fd is connected (inbound) or connecting (outbound) and non-blocking. */
struct pipe *pipe_new(struct event_base *base, xmpp_ctx_t *ctx, uint64_t id,
    enum pipe_dir dir, int fd, const struct in6_addr *peer,
    const struct pipe_params *params, const struct pipe_cb *cb, void *arg);
/* The owner changed *params: an open pipe re-reckons its keepalive now. */
void pipe_params_changed(struct pipe *p);
void pipe_free(struct pipe *p);

/* Identities: set before the outbound header goes, or by the header callback. */
void pipe_set_identity(struct pipe *p, const struct barev_jid *local,
    const struct barev_jid *remote);
/*
 * Sends a stanza (borrowed) with from/to set; presences are remembered,
 * to be sent again after our pings (the reference client resets the
 * pinger's status when pinged).
 */
void pipe_send(struct pipe *p, xmpp_stanza_t *stanza);
/*
 * Sends a chat message whose children are already serialized (inner,
 * len bytes), then, at the end of the loop pass, a ping: since TCP keeps
 * order, the pong proves the peer processed every message before it.
 * The owner learns each message's outcome through confirmed() with its
 * token, exactly once.
 */
void
pipe_send_chat(struct pipe *p, const char *inner, size_t len, uint64_t token);
/*
 * Graceful and idempotent: an optional stream error, unavailable presence
 * on an open pipe, the stream end, then the socket is closed once the peer
 * closed or after close_wait. A pipe that never wrote a byte closes at once.
 */
void pipe_close(struct pipe *p, const char *reason, const char *condition);
/*
 * The same for a pipe another one replaces: no unavailable presence, which
 * a peer would apply to the pair, whose other pipe stays up.
 */
void pipe_retire(struct pipe *p, const char *reason);

uint64_t pipe_id(const struct pipe *p);
enum pipe_state pipe_state(const struct pipe *p);
enum pipe_dir pipe_dir(const struct pipe *p);
const struct in6_addr *pipe_peer(const struct pipe *p);
const struct barev_jid *pipe_local(const struct pipe *p);
const struct barev_jid *pipe_remote(const struct pipe *p);
/* Whether the peer has sent any stanza since the stream headers. */
int pipe_heard(const struct pipe *p);
/* Monotonic seconds when the pipe opened, 0 if it never did. */
double pipe_opened_at(const struct pipe *p);
/* The owner's link to its bookkeeping (the pair), or NULL. */
void pipe_set_owner_data(struct pipe *p, void *data);
void *pipe_owner_data(const struct pipe *p);

#endif
