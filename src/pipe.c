#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "pipe.h"
#include "utf8.h"
#include "stanza.h"
#include "xmalloc.h"

#define NS_PING "urn:xmpp:ping"
#define NS_YGGB_PING "urn:yggb:ping"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
/* A peer's header attributes we keep, to address a rejection. */
#define PEER_ATTR_MAX 256
#define READ_CHUNK 16384

/*
 * What a pipe has shown of the peer's pings. Only a peer known to do
 * pings is declared dead by missed ones: the Pascal library answers none.
 */
enum ping_habit {
	HABIT_UNKNOWN, /* it has answered no ping of ours yet */
	HABIT_ANSWERS, /* it answered one or pinged us: misses mean it is gone */
	HABIT_DEAF, /* it speaks but answers no pings: TCP keepalive watches it */
};

static const char *const habit_names[] = {
	[HABIT_UNKNOWN] = "unknown",
	[HABIT_ANSWERS] = "answers",
	[HABIT_DEAF] = "deaf",
};

static const char *const state_names[] = {
	[PIPE_CONNECTING] = "connecting",
	[PIPE_HEADER_WAIT] = "header-wait",
	[PIPE_OPEN] = "open",
	[PIPE_CLOSING] = "closing",
	[PIPE_DEAD] = "dead",
};

struct pipe {
	uint64_t id;
	enum pipe_state state;
	enum pipe_dir dir;
	struct event_base *base;
	xmpp_ctx_t *ctx;
	int fd;
	struct in6_addr peer;
	char peer_text[ADDR_STRLEN];
	const struct pipe_params *params;
	const struct pipe_cb *cb;
	void *cb_arg;
	void *owner_data;

	struct event *ev_read;
	struct event *ev_write;
	struct event *ev_timer;
	struct evbuffer *out;
	struct xstream *xs;

	struct barev_jid local;
	struct barev_jid remote;
	char local_text[BAREV_JID_STRLEN];
	char remote_text[BAREV_JID_STRLEN];
	int have_identity;
	char peer_from[PEER_ATTR_MAX];
	char peer_to[PEER_ATTR_MAX];

	int header_sent;
	int wrote_any;
	int shut_wr;
	int peer_ended;
	/*
	 * close_pipe is writing our end: a write failing now (a peer that
	 * refused us and closed at once) dies for the close's reason.
	 */
	int ending;
	double opened_at;
	/*
	 * The peer has sent a stanza since the headers. The newest Pidgin
	 * plugin says nothing at all, and drops all we send, to a nick it
	 * does not list: only a peer that spoke may have its silence taken
	 * as delivery.
	 */
	int heard;
	int silence_logged;
	double last_rx;
	/* The silence that ended with the newest read. */
	double rx_gap;
	enum ping_habit habit;
	/*
	 * The longest silence the peer let pass before pinging us, 0 if it
	 * never did: its own pace, which our pings must not undercut.
	 */
	double peer_cadence;
	unsigned ping_misses;
	int ping_pending;
	unsigned ping_seq;
	char ping_id[48];
	double ping_sent_at;
	/* The last presence we sent, to repeat after pings. */
	xmpp_stanza_t *presence;
	const char *close_reason;
	struct confirm *confirms; /* in sending order */
	size_t nconfirms;
	size_t capconfirms;
	/* Chat messages queued in this loop pass get one ping, at its end. */
	struct event *ev_flush;
	int ack_owed;
	uint64_t ack_token;
};

struct confirm {
	uint64_t token;
	double sent_at;
};

static void pipe_dead(struct pipe *p, const char *reason);
static void on_flush(evutil_socket_t fd, short what, void *arg);

static void
set_state(struct pipe *p, enum pipe_state next)
{
	if (p->state == next)
		return;
	log_debug("pipe %llu: state %s -> %s peer=%s",
	    (unsigned long long)p->id, state_names[p->state], state_names[next],
	    p->peer_text);
	p->state = next;
}

static void
set_habit(struct pipe *p, enum ping_habit next, const char *why)
{
	if (p->habit == next)
		return;
	log_debug("pipe %llu: pings %s -> %s (%s) peer=%s",
	    (unsigned long long)p->id, habit_names[p->habit], habit_names[next],
	    why, p->peer_text);
	p->habit = next;
	/* A deaf peer had no keepalive timer; one that pings needs one. */
	if (p->state == PIPE_OPEN)
		timer_after(p->ev_timer, 0);
}

/* Whole seconds, at least one, for the kernel's keepalive knobs. */
static int
whole_seconds(double s)
{
	int n = (int)s;

	if (n < s)
		n++;
	return n < 1 ? 1 : n;
}

/*
 * The kernel watches every pipe as our pings would, so that a vanished
 * peer that answers no pings (the Pascal library) is still found: probes
 * after ping_interval of silence, ping_failures of them ping_timeout
 * apart. TCP_USER_TIMEOUT bounds unacknowledged data by the same time,
 * since no probe goes while data is outstanding.
 */
static void
tcp_keepalive(struct pipe *p)
{
	const struct pipe_params *pp = p->params;
	double deadline = pp->ping_interval +
	    pp->ping_failures * pp->ping_timeout;
	const int on = 1, idle = whole_seconds(pp->ping_interval),
		  intvl = whole_seconds(pp->ping_timeout),
		  cnt = pp->ping_failures;
	const unsigned int ms = (unsigned int)(deadline * 1000);
	const struct {
		int level, name;
		const void *value;
		socklen_t len;
	} opt[] = {
		{ SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on) },
		{ IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle) },
		{ IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl) },
		{ IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt) },
		{ IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms) },
	};
	size_t i;

	for (i = 0; i < sizeof(opt) / sizeof(opt[0]); i++) {
		if (setsockopt(p->fd, opt[i].level, opt[i].name, opt[i].value,
			opt[i].len) == -1) {
			log_debug("pipe %llu: no TCP keepalive: %s",
			    (unsigned long long)p->id, strerror(errno));
			return;
		}
	}
}

/* writev, but without SIGPIPE whatever the process does with it. */
static ssize_t
sendv(int fd, const struct iovec *v, int n)
{
	struct msghdr mh;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = (struct iovec *)(uintptr_t)v;
	mh.msg_iovlen = (size_t)n;
	return sendmsg(fd, &mh, MSG_NOSIGNAL);
}

/* What is queued, as far as the socket takes it. */
static int
out_write(struct pipe *p)
{
	struct evbuffer_iovec v[16];
	struct iovec iov[16];
	ssize_t w;
	int i, n;

	n = evbuffer_peek(p->out, -1, NULL, v, 16);
	if (n > 16)
		n = 16;
	for (i = 0; i < n; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	if ((w = sendv(p->fd, iov, n)) < 0)
		return -1;
	evbuffer_drain(p->out, (size_t)w);
	return 0;
}

/* What the socket did not take waits for it, within max_output. */
static void
queue_rest(struct pipe *p)
{
	if (evbuffer_get_length(p->out) == 0)
		return;
	if (evbuffer_get_length(p->out) > p->params->max_output) {
		log_info("pipe %llu: peer is not reading; output exceeds %zu "
			 "bytes",
		    (unsigned long long)p->id, p->params->max_output);
		pipe_dead(p, "slow-reader");
		return;
	}
	event_add(p->ev_write, NULL);
}

/* Why a failed write kills the pipe. */
static const char *
write_failure(const struct pipe *p, int err)
{
	if (p->ending)
		return p->close_reason;
	return err == ECONNRESET ? "reset" : "write-error";
}

/*
 * One stanza, in parts, with a write of its own when nothing is queued:
 * the Pascal library loses a stanza that shares a read with another, so
 * stanzas never share a write (and, with TCP_NODELAY, rarely a segment).
 */
static void
write_stanza(struct pipe *p, const struct iovec *part, int nparts)
{
	ssize_t n = 0;
	size_t skip;
	int i;

	if (p->state == PIPE_DEAD || p->state == PIPE_CLOSING || p->shut_wr)
		return;
	p->wrote_any = 1;
	if (evbuffer_get_length(p->out) == 0) {
		n = sendv(p->fd, part, nparts);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR) {
				pipe_dead(p, write_failure(p, errno));
				return;
			}
			n = 0;
		}
	}
	for (i = 0, skip = (size_t)n; i < nparts; i++) {
		if (skip >= part[i].iov_len) {
			skip -= part[i].iov_len;
			continue;
		}
		evbuffer_add(p->out, (const char *)part[i].iov_base + skip,
		    part[i].iov_len - skip);
		skip = 0;
	}
	queue_rest(p);
}

static void
write_bytes(struct pipe *p, const char *data, size_t len)
{
	struct iovec v = { (void *)(uintptr_t)data, len };

	write_stanza(p, &v, 1);
}

static void
write_str(struct pipe *p, const char *s)
{
	write_bytes(p, s, strlen(s));
}

static void
maybe_shutdown(struct pipe *p)
{
	if (p->state == PIPE_CLOSING && !p->shut_wr &&
	    evbuffer_get_length(p->out) == 0) {
		shutdown(p->fd, SHUT_WR);
		p->shut_wr = 1;
	}
}

/* A peer's header attribute kept to echo back: cut, if it must be, between characters. */
static void
copy_attr(char *out, size_t size, const char *in)
{
	size_t n;

	if (in == NULL)
		in = "";
	n = utf8_prefix(in, strlen(in), size - 1);
	memcpy(out, in, n);
	out[n] = '\0';
}

/* Attribute text for a header; the peer's own strings may hold anything. */
static void
attr_escape(const char *in, char *out, size_t outlen)
{
	size_t o = 0;
	const char *rep;

	for (; *in != '\0'; in++) {
		switch (*in) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&apos;";
			break;
		default:
			rep = NULL;
			break;
		}
		if ((unsigned char)*in < 0x20)
			continue;
		if (rep == NULL) {
			if (o + 2 > outlen)
				break;
			out[o++] = *in;
		} else {
			if (o + strlen(rep) + 1 > outlen)
				break;
			memcpy(out + o, rep, strlen(rep));
			o += strlen(rep);
		}
	}
	out[o] = '\0';
}

/* Exactly the reference client's bytes: double quotes, " ?>", one LF, no id or version. */
static void
send_header(struct pipe *p)
{
	char from[PEER_ATTR_MAX * 6], to[PEER_ATTR_MAX * 6], *hdr;

	if (p->header_sent)
		return;
	if (p->have_identity) {
		attr_escape(p->local_text, from, sizeof(from));
		attr_escape(p->remote_text, to, sizeof(to));
	} else {
		/* A rejection before we know who is who: echo the peer's view. */
		attr_escape(p->peer_to, from, sizeof(from));
		attr_escape(p->peer_from, to, sizeof(to));
	}
	xasprintf(&hdr,
	    "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n"
	    "<stream:stream xmlns=\"jabber:client\" "
	    "xmlns:stream=\"http://etherx.jabber.org/streams\" "
	    "from=\"%s\" to=\"%s\">",
	    from, to);
	p->header_sent = 1;
	write_str(p, hdr);
	free(hdr);
}

static void
send_stanza_text(struct pipe *p, xmpp_stanza_t *st)
{
	char *buf;
	size_t len;

	if (xmpp_stanza_to_text(st, &buf, &len) != XMPP_EOK) {
		log_warn("pipe %llu: could not serialise a stanza",
		    (unsigned long long)p->id);
		return;
	}
	write_bytes(p, buf, len);
	xmpp_free(p->ctx, buf);
}

static int
is_plain_available(xmpp_stanza_t *presence)
{
	return xmpp_stanza_get_type(presence) == NULL &&
	    stanza_child(presence, "show", NULL) == NULL &&
	    stanza_child(presence, "status", NULL) == NULL;
}

/* The reference client shows anyone who pings it as plain available. */
static void
repeat_presence(struct pipe *p)
{
	if (p->presence != NULL && !is_plain_available(p->presence))
		send_stanza_text(p, p->presence);
}

/* A ping, keepalive or ack; being pinged resets the peer's view of us. */
static void
write_ping(struct pipe *p, const char *id)
{
	char buf[2 * BAREV_JID_STRLEN + 128];

	snprintf(buf, sizeof(buf),
	    "<iq type=\"get\" id=\"%s\" from=\"%s\" to=\"%s\">"
	    "<ping xmlns=\"" NS_PING "\"/></iq>",
	    id, p->local_text, p->remote_text);
	write_str(p, buf);
	repeat_presence(p);
}

static void
send_ping(struct pipe *p)
{
	snprintf(p->ping_id, sizeof(p->ping_id), "ping-%lld-%u",
	    (long long)time(NULL), ++p->ping_seq);
	write_ping(p, p->ping_id);
	p->ping_pending = 1;
	p->ping_sent_at = clock_now();
	timer_after(p->ev_timer, p->params->ping_timeout);
}

/* Reports the first n confirmations, oldest first, and forgets them. */
static void
settle_confirms(struct pipe *p, size_t n, enum pipe_confirm how)
{
	struct confirm *done;
	size_t i;

	if (n > p->nconfirms)
		n = p->nconfirms;
	if (n == 0)
		return;
	/* Taken out first: a report may lead the owner to send more. */
	done = xmalloc(n * sizeof(*done));
	memcpy(done, p->confirms, n * sizeof(*done));
	memmove(p->confirms, p->confirms + n,
	    (p->nconfirms - n) * sizeof(*p->confirms));
	p->nconfirms -= n;
	for (i = 0; i < n; i++)
		p->cb->confirmed(p->cb_arg, p, done[i].token, how);
	free(done);
}

/* An answer to our "ack-" ping: it and everything sent before it arrived. */
static void
ack_received(struct pipe *p, const char *id)
{
	uint64_t token = strtoull(id + 4, NULL, 10);
	size_t i;

	set_habit(p, HABIT_ANSWERS, "answered a ping");
	for (i = 0; i < p->nconfirms; i++) {
		if (p->confirms[i].token == token) {
			settle_confirms(p, i + 1, PIPE_CONFIRMED);
			return;
		}
	}
}

/*
 * Peers that never answer pings (the Pascal library) must not stall
 * delivery; a peer that has said nothing at all keeps its messages
 * unconfirmed until the pipe dies, and they are sent again.
 */
static double
expire_confirms(struct pipe *p, double now)
{
	size_t n = 0;

	while (n < p->nconfirms &&
	    now - p->confirms[n].sent_at >= p->params->ping_timeout)
		n++;
	if (n > 0 && !p->heard)
		return -1;
	settle_confirms(p, n, PIPE_ASSUMED);
	if (p->nconfirms == 0)
		return -1;
	return p->params->ping_timeout - (now - p->confirms[0].sent_at);
}

/* Once per pipe, ping_timeout after the headers; else when it is due. */
static double
note_silence(struct pipe *p, double now)
{
	double due;

	if (p->heard || p->silence_logged)
		return -1;
	due = p->params->ping_timeout - (now - p->opened_at);
	if (due > 0)
		return due;
	log_info("pipe %llu: %s has sent nothing since the stream headers, so "
		 "its client probably does not list %s as a contact (the "
		 "newest Pidgin plugin then ignores all we send); messages to "
		 "it wait",
	    (unsigned long long)p->id, p->remote_text, p->local_text);
	p->silence_logged = 1;
	return -1;
}

/* How long the peer may be silent before we ping it. */
static double
idle_allowed(const struct pipe *p)
{
	/*
	 * A peer that pings us keeps the pipe alive at its own pace (the
	 * Pidgin plugin after 60-90 s of silence, at random), and each ping
	 * it receives shows the pinger as available for a moment: ping it
	 * only once it has been silent twice as long as it ever was.
	 */
	if (2 * p->peer_cadence > p->params->ping_interval)
		return 2 * p->peer_cadence;
	return p->params->ping_interval;
}

/* Our keepalive ping went unanswered; -1 if that closed the pipe. */
static int
ping_missed(struct pipe *p)
{
	p->ping_pending = 0;
	p->ping_misses++;
	log_debug("pipe %llu: ping unanswered misses=%u",
	    (unsigned long long)p->id, p->ping_misses);
	if (p->ping_misses < (unsigned)p->params->ping_failures) {
		send_ping(p);
		return 0;
	}
	/*
	 * Silence proves nothing about a peer that speaks but never answered
	 * a ping (the Pascal library); one that has said nothing at all since
	 * the headers (a plugin that does not list our nick) is let go, so
	 * that a later dial finds out whether it was added meanwhile.
	 */
	if (p->habit == HABIT_ANSWERS || !p->heard) {
		pipe_close(p, "ping-timeout", NULL);
		return -1;
	}
	p->ping_misses = 0;
	set_habit(p, HABIT_DEAF, "no answer to any ping");
	return 0;
}

/* A keepalive ping if one is due; seconds until the next check, or -1. */
static double
keepalive_ping(struct pipe *p, double now)
{
	double idle = now - p->last_rx, allowed = idle_allowed(p);

	if (p->ping_pending) {
		if (now - p->ping_sent_at < p->params->ping_timeout)
			return p->params->ping_timeout -
			    (now - p->ping_sent_at);
		if (ping_missed(p) == -1)
			return -1;
		if (p->ping_pending)
			return p->params->ping_timeout;
	}
	if (p->habit == HABIT_DEAF)
		return -1;
	if (idle < allowed)
		return allowed - idle;
	send_ping(p);
	return p->params->ping_timeout;
}

/* The earlier of two delays, where -1 means none. */
static double
sooner(double a, double b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/* One timer serves keepalive pings and confirmation deadlines. */
static void
keepalive(struct pipe *p)
{
	double now = clock_now(), next;

	next = expire_confirms(p, now);
	if (p->state != PIPE_OPEN)
		return; /* the owner closed it while hearing of a confirmation */
	next = sooner(next, note_silence(p, now));
	next = sooner(next, keepalive_ping(p, now));
	if (p->state == PIPE_OPEN && next >= 0)
		timer_after(p->ev_timer, next);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pipe *p = arg;

	switch (p->state) {
	case PIPE_CONNECTING:
		pipe_dead(p, "connect-timeout");
		break;
	case PIPE_HEADER_WAIT:
		pipe_close(p, "handshake-timeout", NULL);
		break;
	case PIPE_OPEN:
		keepalive(p);
		break;
	case PIPE_CLOSING:
		pipe_dead(p, p->close_reason);
		break;
	case PIPE_DEAD:
		break;
	}
}

static void
open_pipe(struct pipe *p)
{
	set_state(p, PIPE_OPEN);
	p->opened_at = clock_now();
	/* The first wake-up may be to remark that the peer says nothing. */
	timer_after(p->ev_timer,
	    p->params->ping_timeout < p->params->ping_interval
		? p->params->ping_timeout
		: p->params->ping_interval);
	p->cb->open(p->cb_arg, p);
}

static void
xs_open(void *arg, const char *from, const char *to, const char **attrs)
{
	struct pipe *p = arg;
	const char *condition = "undefined-condition";

	copy_attr(p->peer_from, sizeof(p->peer_from), from);
	copy_attr(p->peer_to, sizeof(p->peer_to), to);
	if (p->state != PIPE_HEADER_WAIT)
		return;
	if (p->cb->header(p->cb_arg, p, from, to, &condition) == -1) {
		pipe_close(p, "rejected", condition);
		return;
	}
	if (p->dir == PIPE_INBOUND)
		send_header(p);
	if (p->state == PIPE_HEADER_WAIT)
		open_pipe(p);
}

static void
answer_iq(struct pipe *p, xmpp_stanza_t *iq, const char *condition)
{
	xmpp_stanza_t *r;

	if (condition == NULL)
		r = stanza_reply(iq, "result");
	else
		r = stanza_error_reply(iq, "cancel", condition, NULL);
	pipe_send(p, r);
	xmpp_stanza_release(r);
}

/* Handles what the engine answers itself; 1 if it did. */
static int
handle_iq(struct pipe *p, xmpp_stanza_t *st)
{
	const char *type = xmpp_stanza_get_type(st);
	const char *id = xmpp_stanza_get_id(st);

	if (type == NULL)
		return 0;
	if (strcmp(type, "get") == 0 && id != NULL &&
	    (stanza_child(st, "ping", NS_PING) != NULL ||
		stanza_child(st, "ping", NS_YGGB_PING) != NULL)) {
		answer_iq(p, st, NULL);
		if (p->rx_gap > p->peer_cadence)
			p->peer_cadence = p->rx_gap;
		set_habit(p, HABIT_ANSWERS, "pinged us");
		return 1;
	}
	if ((strcmp(type, "result") == 0 || strcmp(type, "error") == 0) &&
	    id != NULL && strncmp(id, "ping-", 5) == 0) {
		/* Any traffic already counted as a pong. */
		set_habit(p, HABIT_ANSWERS, "answered a ping");
		return 1;
	}
	/* Even an error answer means the peer read everything before it. */
	if ((strcmp(type, "result") == 0 || strcmp(type, "error") == 0) &&
	    id != NULL && strncmp(id, "ack-", 4) == 0) {
		ack_received(p, id);
		return 1;
	}
	return 0;
}

/*
 * Why the pipe closes when the peer sent a stream error: not-authorized
 * gets a reason of its own, since the owner backs off from a peer that
 * says it does not list us (the plugin's 2.x line).
 */
static const char *
peer_error_reason(xmpp_stanza_t *cond, const char *otherwise)
{
	if (cond != NULL &&
	    strcmp(xmpp_stanza_get_name(cond), "not-authorized") == 0)
		return PIPE_REASON_NOT_AUTHORIZED;
	return otherwise;
}

static void
xs_stanza(void *arg, xmpp_stanza_t *st)
{
	struct pipe *p = arg;
	const char *name = xmpp_stanza_get_name(st);
	const char *ns = xmpp_stanza_get_ns(st);
	const char *type;
	xmpp_stanza_t *cond;

	/* After a graceful close the peer's last stanzas still count. */
	if (p->state != PIPE_OPEN &&
	    !(p->state == PIPE_CLOSING && p->opened_at > 0))
		return;
	if (!p->heard && p->state == PIPE_OPEN && p->nconfirms > 0)
		timer_after(p->ev_timer, 0); /* their silence may count now */
	p->heard = 1;
	if (strcmp(name, "error") == 0 && ns != NULL &&
	    strcmp(ns, XSTREAM_NS_STREAMS) == 0) {
		cond = stanza_first_tag(st);
		log_info("pipe %llu: peer sent stream error condition=%s",
		    (unsigned long long)p->id,
		    cond ? xmpp_stanza_get_name(cond) : "none");
		pipe_close(
		    p, peer_error_reason(cond, "peer-stream-error"), NULL);
		return;
	}
	if (strcmp(name, "iq") == 0 && handle_iq(p, st))
		return;
	if (p->cb->stanza(p->cb_arg, p, st) == 0)
		return;
	type = xmpp_stanza_get_type(st);
	if (p->state == PIPE_OPEN && strcmp(name, "iq") == 0 && type != NULL &&
	    (strcmp(type, "get") == 0 || strcmp(type, "set") == 0)) {
		answer_iq(p, st, "service-unavailable");
		return;
	}
	log_debug("pipe %llu: ignored %s", (unsigned long long)p->id, name);
}

static void
xs_pre_header_error(void *arg, xmpp_stanza_t *err)
{
	struct pipe *p = arg;
	xmpp_stanza_t *cond = stanza_first_tag(err);

	log_info("pipe %llu: peer refused the stream condition=%s",
	    (unsigned long long)p->id,
	    cond ? xmpp_stanza_get_name(cond) : "none");
	pipe_close(p, peer_error_reason(cond, "peer-refused"), NULL);
}

static void
xs_close(void *arg)
{
	struct pipe *p = arg;

	p->peer_ended = 1;
	pipe_close(p, "stream-end", NULL);
}

static void
xs_error(void *arg, enum xstream_error err, const char *detail)
{
	struct pipe *p = arg;

	log_info("pipe %llu: bad input from peer=%s: %s",
	    (unsigned long long)p->id, p->peer_text, detail);
	pipe_close(p, xstream_error_name(err), xstream_error_name(err));
}

static const struct xstream_cb xs_callbacks = {
	xs_open,
	xs_stanza,
	xs_pre_header_error,
	xs_close,
	xs_error,
};

static void
on_read(evutil_socket_t fd, short what, void *arg)
{
	struct pipe *p = arg;
	char buf[READ_CHUNK];
	ssize_t n;
	double now;

	n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		/* A reset after the stream ended is how many peers close. */
		pipe_dead(p,
		    p->state == PIPE_CLOSING  ? p->close_reason
			: errno == ECONNRESET ? "reset"
					      : "read-error");
		return;
	}
	if (n == 0) {
		pipe_dead(
		    p, p->state == PIPE_CLOSING ? p->close_reason : "eof");
		return;
	}
	now = clock_now();
	p->rx_gap = now - p->last_rx;
	p->last_rx = now;
	p->ping_pending = 0;
	p->ping_misses = 0;
	/* While closing, a stopped parser just drains, so that close sends no reset. */
	xstream_feed(p->xs, buf, (size_t)n);
}

static void
connected(struct pipe *p)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		log_debug("pipe %llu: connect failed peer=%s error=\"%s\"",
		    (unsigned long long)p->id, p->peer_text, strerror(err));
		pipe_dead(p, "connect-failed");
		return;
	}
	set_state(p, PIPE_HEADER_WAIT);
	event_add(p->ev_read, NULL);
	timer_after(p->ev_timer, p->params->handshake_timeout);
	send_header(p);
}

static void
on_write(evutil_socket_t fd, short what, void *arg)
{
	struct pipe *p = arg;

	if (p->state == PIPE_CONNECTING) {
		connected(p);
		return;
	}
	if (out_write(p) < 0 && errno != EAGAIN && errno != EINTR) {
		pipe_dead(p,
		    p->state == PIPE_CLOSING ? p->close_reason : "write-error");
		return;
	}
	if (evbuffer_get_length(p->out) > 0) {
		event_add(p->ev_write, NULL);
		return;
	}
	maybe_shutdown(p);
}

struct pipe *
pipe_new(struct event_base *base, xmpp_ctx_t *ctx, uint64_t id,
    enum pipe_dir dir, int fd, const struct in6_addr *peer,
    const struct pipe_params *params, const struct pipe_cb *cb, void *arg)
{
	struct pipe *p = xcalloc(1, sizeof(*p));

	p->id = id;
	p->dir = dir;
	p->base = base;
	p->ctx = ctx;
	p->fd = fd;
	p->peer = *peer;
	addr_format(peer, p->peer_text);
	p->params = params;
	p->cb = cb;
	p->cb_arg = arg;
	p->last_rx = clock_now();
	p->close_reason = "closed";
	p->out = evbuffer_new();
	p->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, on_read, p);
	p->ev_write = event_new(base, fd, EV_WRITE, on_write, p);
	p->ev_timer = evtimer_new(base, on_timer, p);
	p->ev_flush = event_new(base, -1, 0, on_flush, p);
	p->xs = xstream_new(ctx, &params->limits, &xs_callbacks, p);
	tcp_keepalive(p);
	if (dir == PIPE_OUTBOUND) {
		p->state = PIPE_CONNECTING;
		event_add(p->ev_write, NULL);
		timer_after(p->ev_timer, params->connect_timeout);
	} else {
		/* The acceptor never speaks first: wait for the peer's header. */
		p->state = PIPE_HEADER_WAIT;
		event_add(p->ev_read, NULL);
		timer_after(p->ev_timer, params->handshake_timeout);
	}
	log_debug("pipe %llu: new dir=%s peer=%s", (unsigned long long)id,
	    dir == PIPE_OUTBOUND ? "out" : "in", p->peer_text);
	return p;
}

void
pipe_params_changed(struct pipe *p)
{
	/*
	 * From the timer's own callback, in the next loop pass: a ping now
	 * due may close the pipe, which the caller's walk must not see.
	 */
	if (p->state == PIPE_OPEN)
		timer_after(p->ev_timer, 0);
}

void
pipe_free(struct pipe *p)
{
	if (p == NULL)
		return;
	if (p->fd >= 0)
		close(p->fd);
	event_free(p->ev_read);
	event_free(p->ev_write);
	event_free(p->ev_timer);
	event_free(p->ev_flush);
	evbuffer_free(p->out);
	xstream_free(p->xs);
	if (p->presence != NULL)
		xmpp_stanza_release(p->presence);
	free(p->confirms);
	free(p);
}

void
pipe_set_identity(struct pipe *p, const struct barev_jid *local,
    const struct barev_jid *remote)
{
	p->local = *local;
	p->remote = *remote;
	barev_jid_format(local, p->local_text);
	barev_jid_format(remote, p->remote_text);
	p->have_identity = 1;
}

void
pipe_send(struct pipe *p, xmpp_stanza_t *st)
{
	if (p->state != PIPE_OPEN)
		return;
	xmpp_stanza_set_from(st, p->local_text);
	xmpp_stanza_set_to(st, p->remote_text);
	if (strcmp(xmpp_stanza_get_name(st), "presence") == 0) {
		if (p->presence != NULL)
			xmpp_stanza_release(p->presence);
		p->presence = xmpp_stanza_clone(st);
	}
	send_stanza_text(p, st);
}

void
pipe_send_chat(struct pipe *p, const char *inner, size_t len, uint64_t token)
{
	char head[2 * BAREV_JID_STRLEN + 64];
	struct iovec part[3];
	int n;

	if (p->state != PIPE_OPEN) {
		p->cb->confirmed(p->cb_arg, p, token, PIPE_LOST);
		return;
	}
	/* Recorded first: if the pipe dies before the write, it is reported lost. */
	if (p->nconfirms == p->capconfirms) {
		p->capconfirms = p->capconfirms ? p->capconfirms * 2 : 8;
		p->confirms = xrealloc(
		    p->confirms, p->capconfirms * sizeof(*p->confirms));
	}
	p->confirms[p->nconfirms].token = token;
	p->confirms[p->nconfirms].sent_at = clock_now();
	p->nconfirms++;
	n = snprintf(head, sizeof(head),
	    "<message type=\"chat\" from=\"%s\" to=\"%s\">", p->local_text,
	    p->remote_text);
	part[0].iov_base = head;
	part[0].iov_len = (size_t)n;
	part[1].iov_base = (void *)(uintptr_t)inner;
	part[1].iov_len = len;
	part[2].iov_base = (void *)(uintptr_t) "</message>";
	part[2].iov_len = 10;
	write_stanza(p, part, 3);
	if (p->state != PIPE_OPEN)
		return; /* the write failed: reported lost already */
	p->ack_token = token;
	if (!p->ack_owed) {
		p->ack_owed = 1;
		event_active(p->ev_flush, EV_TIMEOUT, 0);
	}
	if (p->nconfirms == 1 && !p->ping_pending)
		timer_after(p->ev_timer, p->params->ping_timeout);
}

/*
 * The end of the loop pass: one ping after the pass's chat messages, whose
 * answer confirms them all (TCP keeps order).
 */
static void
on_flush(evutil_socket_t fd, short what, void *arg)
{
	struct pipe *p = arg;
	char id[32];

	if (!p->ack_owed || p->state != PIPE_OPEN)
		return;
	p->ack_owed = 0;
	snprintf(id, sizeof(id), "ack-%llu", (unsigned long long)p->ack_token);
	write_ping(p, id);
}

static void
pipe_dead(struct pipe *p, const char *reason)
{
	if (p->state == PIPE_DEAD)
		return;
	set_state(p, PIPE_DEAD);
	event_del(p->ev_read);
	event_del(p->ev_write);
	evtimer_del(p->ev_timer);
	event_del(p->ev_flush);
	xstream_stop(p->xs);
	close(p->fd);
	p->fd = -1;
	log_info("pipe %llu: closed reason=%s peer=%s local=%s remote=%s",
	    (unsigned long long)p->id, reason, p->peer_text,
	    p->have_identity ? p->local_text : "-",
	    p->have_identity ? p->remote_text : "-");
	settle_confirms(p, p->nconfirms, PIPE_LOST);
	p->cb->dead(p->cb_arg, p, reason);
}

static void
close_pipe(struct pipe *p, const char *reason, const char *condition,
    int say_unavailable)
{
	char buf[256];
	int was_open = p->state == PIPE_OPEN;

	if (p->state == PIPE_CLOSING || p->state == PIPE_DEAD)
		return;
	/* Nothing written yet: closing at once cannot hurt the peer. */
	if (p->state == PIPE_CONNECTING ||
	    (!p->wrote_any && condition == NULL)) {
		pipe_dead(p, reason);
		return;
	}
	p->close_reason = reason;
	p->ending = 1;
	if (condition != NULL) {
		send_header(p);
		snprintf(buf, sizeof(buf),
		    "<stream:error><%s xmlns=\"" NS_STREAM_ERRORS "\"/>"
		    "</stream:error>",
		    condition);
		write_str(p, buf);
	} else if (was_open && !p->peer_ended && say_unavailable)
		write_str(p, "<presence type=\"unavailable\"/>");
	write_str(p, "</stream:stream>");
	if (p->state == PIPE_DEAD)
		return;
	set_state(p, PIPE_CLOSING);
	/* The owner learns now, not when the socket finally goes. */
	p->cb->closing(p->cb_arg, p, reason);
	if (condition != NULL)
		xstream_stop(p->xs);
	/*
	 * The reference client crashes if we close right after writing to
	 * it: let the peer close first, within a bound.
	 */
	timer_after(p->ev_timer, p->params->close_wait);
	maybe_shutdown(p);
	log_debug(
	    "pipe %llu: closing reason=%s", (unsigned long long)p->id, reason);
}

void
pipe_close(struct pipe *p, const char *reason, const char *condition)
{
	close_pipe(p, reason, condition, 1);
}

void
pipe_retire(struct pipe *p, const char *reason)
{
	close_pipe(p, reason, NULL, 0);
}

uint64_t
pipe_id(const struct pipe *p)
{
	return p->id;
}

enum pipe_state
pipe_state(const struct pipe *p)
{
	return p->state;
}

enum pipe_dir
pipe_dir(const struct pipe *p)
{
	return p->dir;
}

const struct in6_addr *
pipe_peer(const struct pipe *p)
{
	return &p->peer;
}

const struct barev_jid *
pipe_local(const struct pipe *p)
{
	return p->have_identity ? &p->local : NULL;
}

const struct barev_jid *
pipe_remote(const struct pipe *p)
{
	return p->have_identity ? &p->remote : NULL;
}

int
pipe_heard(const struct pipe *p)
{
	return p->heard;
}

double
pipe_opened_at(const struct pipe *p)
{
	return p->opened_at;
}

void
pipe_set_owner_data(struct pipe *p, void *data)
{
	p->owner_data = data;
}

void *
pipe_owner_data(const struct pipe *p)
{
	return p->owner_data;
}
