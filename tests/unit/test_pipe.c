/* One pipe over a socketpair: confirmed sends, and how they are written. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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

static void
fx_open(struct fx *f, int type)
{
	static const char header[] =
	    "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<stream:stream "
	    "xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/"
	    "streams\" from=\"bob@201:bbbb::1\" to=\"alice@200:aaaa::1\">";
	const struct pipe_params params = { 30, 10, 3, 10, 10, 5, 1 << 20,
		{ 65536, 32, 4096 } };
	struct in6_addr peer = IN6ADDR_LOOPBACK_INIT;
	int i;

	memset(f, 0, sizeof(*f));
	f->params = params;
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
	struct timeval tv = { 0, (suseconds_t)(seconds * 1e6) };

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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_confirmed_send_on_a_dying_pipe),
		cmocka_unit_test(test_each_stanza_its_own_write),
		cmocka_unit_test(test_silent_peer_confirms_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
