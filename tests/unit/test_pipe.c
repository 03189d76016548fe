/* One pipe over a socketpair: confirmed sends, and how they are written. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pipe.h"

struct seen {
	int opened;
	int dead;
	int reports;
	uint64_t token;
	enum pipe_confirm how;
};

static int
cb_header(void *arg, struct pipe *p, const char *from, const char *to,
    const char **condition)
{
	struct barev_jid l, r;
	const char *cause;

	assert_int_equal(
	    barev_jid_parse("alice@200:aaaa::1", 0, &l, &cause), 0);
	assert_int_equal(barev_jid_parse(from, 0, &r, &cause), 0);
	pipe_set_identity(p, &l, &r);
	return 0;
}

static void
cb_open(void *arg, struct pipe *p)
{
	((struct seen *)arg)->opened = 1;
}

static int
cb_stanza(void *arg, struct pipe *p, xmpp_stanza_t *st)
{
	return 0;
}

static void
cb_confirmed(void *arg, struct pipe *p, uint64_t token, enum pipe_confirm how)
{
	struct seen *s = arg;

	s->reports++;
	s->token = token;
	s->how = how;
}

static void
cb_closing(void *arg, struct pipe *p, const char *reason)
{
}

static void
cb_dead(void *arg, struct pipe *p, const char *reason)
{
	((struct seen *)arg)->dead = 1;
}

static const struct pipe_cb callbacks = {
	cb_header,
	cb_open,
	cb_stanza,
	cb_confirmed,
	cb_closing,
	cb_dead,
};

/* A pipe at sv[0] that bob, at sv[1], has opened with his header. */
struct fx {
	struct event_base *base;
	xmpp_ctx_t *ctx;
	struct pipe_params params;
	struct seen seen;
	struct pipe *p;
	int sv[2];
};

static const struct pipe_params default_params = { 30, 10, 3, 10, 10, 5,
	1 << 20, { 65536, 32, 4096 } };

static void
fx_open_with(struct fx *f, int type, const struct pipe_params *params)
{
	static const char header[] =
	    "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<stream:stream "
	    "xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/"
	    "streams\" from=\"bob@201:bbbb::1\" to=\"alice@200:aaaa::1\">";
	struct in6_addr peer = IN6ADDR_LOOPBACK_INIT;
	int i;

	memset(f, 0, sizeof(*f));
	f->params = *params;
	f->base = event_base_new();
	f->ctx = xmpp_ctx_new(NULL, NULL);
	assert_int_equal(
	    socketpair(AF_UNIX, type | SOCK_NONBLOCK, 0, f->sv), 0);
	f->p = pipe_new(f->base, f->ctx, 1, PIPE_INBOUND, f->sv[0], &peer,
	    &f->params, &callbacks, &f->seen);
	assert_int_equal(write(f->sv[1], header, sizeof(header) - 1),
	    (ssize_t)sizeof(header) - 1);
	for (i = 0; i < 100 && !f->seen.opened; i++)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_true(f->seen.opened);
	assert_int_equal(pipe_state(f->p), PIPE_OPEN);
}

static void
fx_open(struct fx *f, int type)
{
	fx_open_with(f, type, &default_params);
}

static void
fx_close(struct fx *f)
{
	pipe_free(f->p);
	if (f->sv[1] != -1)
		close(f->sv[1]);
	xmpp_ctx_free(f->ctx);
	event_base_free(f->base);
}

/* Regression: a token sent as the pipe died was never reported. */
static void
test_confirmed_send_on_a_dying_pipe(void **state)
{
	struct fx f;
	int i;

	fx_open(&f, SOCK_STREAM);
	close(f.sv[1]); /* the peer is gone: our next write fails */
	f.sv[1] = -1;
	pipe_send_chat(f.p, "<body>hi</body>", 15, 42);
	for (i = 0; i < 100 && !f.seen.dead; i++)
		event_base_loop(f.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_true(f.seen.dead);
	assert_int_equal(f.seen.reports, 1);
	assert_int_equal(f.seen.token, 42);
	assert_int_equal(f.seen.how, PIPE_LOST);
	fx_close(&f);
}

/*
 * The Pascal library loses a stanza that shares a read with another: each
 * chat message and the pass's ack ping get a write of their own. A
 * SOCK_SEQPACKET pair keeps write boundaries, so each recv is one write.
 */
static void
test_each_stanza_its_own_write(void **state)
{
	static const char *const want[] = {
		"<message type=\"chat\" from=\"alice@200:aaaa::1\" "
		"to=\"bob@201:bbbb::1\"><body>one</body></message>",
		"<message type=\"chat\" from=\"alice@200:aaaa::1\" "
		"to=\"bob@201:bbbb::1\"><body>two</body></message>",
		"<message type=\"chat\" from=\"alice@200:aaaa::1\" "
		"to=\"bob@201:bbbb::1\"><body>three</body></message>",
		"<iq type=\"get\" id=\"ack-3\" from=\"alice@200:aaaa::1\" "
		"to=\"bob@201:bbbb::1\"><ping xmlns=\"urn:xmpp:ping\"/></iq>",
	};
	struct fx f;
	char buf[4096];
	ssize_t n;
	size_t k;

	fx_open(&f, SOCK_SEQPACKET);
	/* Our header answers bob's, in one write. */
	assert_true(recv(f.sv[1], buf, sizeof(buf), 0) > 0);
	assert_int_equal(recv(f.sv[1], buf, sizeof(buf), 0), -1);

	/* Three messages in one pass, then the end of the pass. */
	pipe_send_chat(f.p, "<body>one</body>", 16, 1);
	pipe_send_chat(f.p, "<body>two</body>", 16, 2);
	pipe_send_chat(f.p, "<body>three</body>", 18, 3);
	event_base_loop(f.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	for (k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
		n = recv(f.sv[1], buf, sizeof(buf) - 1, 0);
		assert_true(n > 0);
		buf[n] = '\0';
		assert_string_equal(buf, want[k]);
	}
	assert_int_equal(recv(f.sv[1], buf, sizeof(buf), 0), -1);
	assert_int_equal(f.seen.reports, 0);
	fx_close(&f);
}

static void
run_for(struct fx *f, double seconds)
{
	long us = (long)(seconds * 1e6);
	struct timeval tv = { us / 1000000, (suseconds_t)(us % 1000000) };

	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

/*
 * The newest Pidgin plugin says nothing, and drops all we send, to a nick
 * it does not list: a peer's silence counts as delivery only once it has
 * said something since the headers.
 */
static void
test_silent_peer_confirms_nothing(void **state)
{
	static const char presence[] = "<presence/>";
	struct fx f;

	fx_open(&f, SOCK_STREAM);
	f.params.ping_timeout = 0.2;
	pipe_send_chat(f.p, "<body>one</body>", 16, 1);
	run_for(&f, 0.6);
	assert_int_equal(f.seen.reports, 0);
	assert_int_equal(pipe_state(f.p), PIPE_OPEN);

	assert_int_equal(write(f.sv[1], presence, sizeof(presence) - 1),
	    (ssize_t)sizeof(presence) - 1);
	run_for(&f, 0.6);
	assert_int_equal(f.seen.reports, 1);
	assert_int_equal(f.seen.token, 1);
	assert_int_equal(f.seen.how, PIPE_ASSUMED);

	pipe_send_chat(f.p, "<body>two</body>", 16, 2);
	run_for(&f, 0.6);
	assert_int_equal(f.seen.reports, 2);
	assert_int_equal(f.seen.token, 2);
	assert_int_equal(f.seen.how, PIPE_ASSUMED);
	fx_close(&f);
}

/* What bob has received so far, appended to buf (NUL-terminated). */
static void
bob_reads(struct fx *f, char *buf, size_t size)
{
	size_t have = strlen(buf);
	ssize_t n;

	while (have + 1 < size &&
	    (n = recv(f->sv[1], buf + have, size - 1 - have, 0)) > 0)
		have += (size_t)n;
	buf[have] = '\0';
}

static void
bob_writes(struct fx *f, const char *s)
{
	assert_int_equal(write(f->sv[1], s, strlen(s)), (ssize_t)strlen(s));
}

static int
count(const char *hay, const char *needle)
{
	int n = 0;

	for (; (hay = strstr(hay, needle)) != NULL; hay += strlen(needle))
		n++;
	return n;
}

/* Our keepalive pings in buf (ack pings after messages have ids "ack-"). */
static int
keepalive_pings(const char *buf)
{
	return count(buf, "<iq type=\"get\" id=\"ping-");
}

/* A pipe whose pings come every 0.2 s, two misses allowed. */
static void
fx_open_fast(struct fx *f)
{
	struct pipe_params params = default_params;

	params.ping_interval = 0.2;
	params.ping_timeout = 0.2;
	params.ping_failures = 2;
	fx_open_with(f, SOCK_STREAM, &params);
}

/*
 * The Pascal library answers no ping and sends its presence twice: idle
 * for many ping intervals, its pipe stays open, it is told nothing, and
 * once ping_failures pings went unanswered it is pinged no more (TCP
 * keepalive watches it). A message to it still counts as delivered after
 * ping_timeout of silence.
 */
static void
test_peer_that_never_answers_stays(void **state)
{
	static char got[16384];
	struct fx f;

	fx_open_fast(&f);
	bob_writes(&f, "<presence/>");
	bob_writes(&f, "<presence/>");
	got[0] = '\0';
	run_for(&f, 3.0); /* fifteen ping intervals */
	bob_reads(&f, got, sizeof(got));
	assert_false(f.seen.dead);
	assert_int_equal(pipe_state(f.p), PIPE_OPEN);
	assert_null(strstr(got, "unavailable"));
	assert_null(strstr(got, "</stream:stream>"));
	assert_int_equal(keepalive_pings(got), 2);

	pipe_send_chat(f.p, "<body>one</body>", 16, 1);
	run_for(&f, 0.6);
	bob_reads(&f, got, sizeof(got));
	assert_int_equal(count(got, "id=\"ack-1\""), 1);
	assert_int_equal(f.seen.reports, 1);
	assert_int_equal(f.seen.how, PIPE_ASSUMED);
	assert_int_equal(pipe_state(f.p), PIPE_OPEN);
	fx_close(&f);
}

/* The id of the first keepalive ping in buf, or NULL. */
static const char *
first_ping_id(const char *buf, char *id, size_t size)
{
	const char *s = strstr(buf, "<iq type=\"get\" id=\"ping-");
	size_t n;

	if (s == NULL)
		return NULL;
	s += strlen("<iq type=\"get\" id=\"");
	n = strcspn(s, "\"");
	if (n >= size)
		return NULL;
	memcpy(id, s, n);
	id[n] = '\0';
	return id;
}

/*
 * A peer that answered a ping once and then goes silent is gone: after
 * ping_failures misses in a row the pipe closes.
 */
static void
test_peer_that_answered_once_is_closed(void **state)
{
	static char got[16384];
	char id[64], pong[128];
	struct fx f;
	int i;

	fx_open_fast(&f);
	bob_writes(&f, "<presence/>");
	got[0] = '\0';
	for (i = 0; i < 20 && first_ping_id(got, id, sizeof(id)) == NULL; i++) {
		run_for(&f, 0.05);
		bob_reads(&f, got, sizeof(got));
	}
	assert_non_null(first_ping_id(got, id, sizeof(id)));
	snprintf(pong, sizeof(pong), "<iq type=\"result\" id=\"%s\"/>", id);
	bob_writes(&f, pong);
	run_for(&f, 3.0);
	bob_reads(&f, got, sizeof(got));
	assert_int_not_equal(pipe_state(f.p), PIPE_OPEN);
	assert_non_null(strstr(got, "<presence type=\"unavailable\"/>"));
	assert_non_null(strstr(got, "</stream:stream>"));
	fx_close(&f);
}

/*
 * A peer that has said nothing since the headers is not one that just
 * does not do pings (the Pascal library sends its presence at once): the
 * newest plugin, not listing our nick, holds such a pipe mute; missed
 * pings still close it, so that a later dial can find the contact added.
 */
static void
test_mute_peer_is_closed(void **state)
{
	static char got[16384];
	struct fx f;

	fx_open_fast(&f);
	run_for(&f, 3.0);
	got[0] = '\0';
	bob_reads(&f, got, sizeof(got));
	assert_int_not_equal(pipe_state(f.p), PIPE_OPEN);
	assert_non_null(strstr(got, "</stream:stream>"));
	fx_close(&f);
}

/*
 * The Pidgin plugin pings a pipe silent for 60-90 s itself, and each ping
 * it receives shows the pinger as available for a moment: a peer that
 * pings us is not pinged while it keeps its own pace, even a pace slower
 * than our ping_interval (here 1 s, the peer's pings 0.9 then 1.4 s apart).
 */
static void
test_peer_that_pings_is_not_pinged(void **state)
{
	static char got[16384];
	char ping[128];
	struct pipe_params params = default_params;
	struct fx f;
	int i;

	params.ping_interval = 1.0;
	params.ping_timeout = 0.5;
	params.ping_failures = 2;
	fx_open_with(&f, SOCK_STREAM, &params);
	bob_writes(&f, "<presence/>");
	got[0] = '\0';
	run_for(&f, 0.9);
	for (i = 0; i < 4; i++) {
		snprintf(ping, sizeof(ping),
		    "<iq type=\"get\" id=\"bob-%d\"><ping "
		    "xmlns=\"urn:xmpp:ping\"/></iq>",
		    i);
		bob_writes(&f, ping);
		run_for(&f, 1.4);
	}
	bob_reads(&f, got, sizeof(got));
	assert_int_equal(count(got, "type=\"result\""), 4);
	assert_int_equal(keepalive_pings(got), 0);
	assert_int_equal(pipe_state(f.p), PIPE_OPEN);
	fx_close(&f);
}

/*
 * A dead peer that answers no pings is found by the kernel: TCP keepalive
 * after ping_interval of silence, ping_failures probes ping_timeout apart,
 * and unacknowledged data bounded by the same time (keepalive does not
 * probe while data is outstanding).
 */
static void
test_tcp_keepalive_from_ping_keys(void **state)
{
	struct pipe_params params = default_params;
	struct sockaddr_in6 sa;
	socklen_t len = sizeof(sa);
	struct in6_addr peer = IN6ADDR_LOOPBACK_INIT;
	struct event_base *base = event_base_new();
	xmpp_ctx_t *ctx = xmpp_ctx_new(NULL, NULL);
	struct seen seen;
	struct pipe *p;
	int l, c, v;
	unsigned int ms;
	socklen_t vl = sizeof(v);

	params.ping_interval = 120;
	memset(&seen, 0, sizeof(seen));
	memset(&sa, 0, sizeof(sa));
	sa.sin6_family = AF_INET6;
	sa.sin6_addr = in6addr_loopback;
	assert_true((l = socket(AF_INET6, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
	assert_true(
	    (c = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0)) >= 0);
	connect(c, (struct sockaddr *)&sa, sizeof(sa));
	p = pipe_new(
	    base, ctx, 1, PIPE_OUTBOUND, c, &peer, &params, &callbacks, &seen);
	assert_int_equal(getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, &vl), 0);
	assert_int_equal(v, 1);
	assert_int_equal(getsockopt(c, IPPROTO_TCP, TCP_KEEPIDLE, &v, &vl), 0);
	assert_int_equal(v, 120);
	assert_int_equal(getsockopt(c, IPPROTO_TCP, TCP_KEEPINTVL, &v, &vl), 0);
	assert_int_equal(v, 10);
	assert_int_equal(getsockopt(c, IPPROTO_TCP, TCP_KEEPCNT, &v, &vl), 0);
	assert_int_equal(v, 3);
	vl = sizeof(ms);
	assert_int_equal(
	    getsockopt(c, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, &vl), 0);
	assert_int_equal(ms, 150000);
	pipe_free(p); /* closes c */
	close(l);
	xmpp_ctx_free(ctx);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_confirmed_send_on_a_dying_pipe),
		cmocka_unit_test(test_each_stanza_its_own_write),
		cmocka_unit_test(test_silent_peer_confirms_nothing),
		cmocka_unit_test(test_peer_that_never_answers_stays),
		cmocka_unit_test(test_peer_that_answered_once_is_closed),
		cmocka_unit_test(test_mute_peer_is_closed),
		cmocka_unit_test(test_peer_that_pings_is_not_pinged),
		cmocka_unit_test(test_tcp_keepalive_from_ping_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
