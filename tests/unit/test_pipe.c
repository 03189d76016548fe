/* One pipe over a socketpair: what happens to a confirmed send when the peer is gone. */
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

/* Regression: a token sent as the pipe died was never reported. */
static void
test_confirmed_send_on_a_dying_pipe(void **state)
{
	static const char header[] =
	    "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<stream:stream "
	    "xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/"
	    "streams\" from=\"bob@201:bbbb::1\" to=\"alice@200:aaaa::1\">";
	struct pipe_params params = { 30, 10, 3, 10, 10, 5, 1 << 20,
		{ 65536, 32, 4096 } };
	struct event_base *base = event_base_new();
	xmpp_ctx_t *ctx = xmpp_ctx_new(NULL, NULL);
	struct in6_addr peer = IN6ADDR_LOOPBACK_INIT;
	struct seen seen;
	struct pipe *p;
	int sv[2], i;

	memset(&seen, 0, sizeof(seen));
	assert_int_equal(
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	p = pipe_new(base, ctx, 1, PIPE_INBOUND, sv[0], &peer, &params,
	    &callbacks, &seen);
	assert_int_equal(write(sv[1], header, sizeof(header) - 1),
	    (ssize_t)sizeof(header) - 1);
	for (i = 0; i < 100 && !seen.opened; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_true(seen.opened);
	assert_int_equal(pipe_state(p), PIPE_OPEN);

	close(sv[1]); /* the peer is gone: our next write fails */
	pipe_send_chat(p, "<body>hi</body>", 15, 42);
	assert_int_equal(seen.reports, 0); /* written at the end of the pass */
	for (i = 0; i < 100 && !seen.dead; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_true(seen.dead);
	assert_int_equal(seen.reports, 1);
	assert_int_equal(seen.token, 42);
	assert_int_equal(seen.how, PIPE_LOST);

	pipe_free(p);
	xmpp_ctx_free(ctx);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_confirmed_send_on_a_dying_pipe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
