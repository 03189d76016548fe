/* Unit tests for the stream parser: every event, split at every byte. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <strophe.h>

#include "xstream.h"

/* Byte for byte what the reference plugin sends to open a stream. */
#define DECL "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n"
#define ROOT                                                                   \
	"<stream:stream xmlns=\"jabber:client\" "                              \
	"xmlns:stream=\"http://etherx.jabber.org/streams\" "                   \
	"from=\"inky@201:af82::1\" to=\"bob@200:1::2\">"
#define OPEN_EV                                                                \
	"open inky@201:af82::1 bob@200:1::2 "                                  \
	"[from=inky@201:af82::1 to=bob@200:1::2]\n"

/* Stanzas as libpurple's xmlnode_to_str() writes them: single quotes. */
#define PRESENCE "<presence/>"
#define MESSAGE                                                                \
	"<message to='bob@200:1::2' from='inky@201:af82::1' type='chat'>"      \
	"<body>Hello &amp; welcome \xc3\xa9\xe2\x9c\x93</body>"                \
	"<html xmlns='http://www.w3.org/1999/xhtml'><body>"                    \
	"<font>Hello &amp; welcome</font></body></html>"                       \
	"<x xmlns='jabber:x:event'><composing/></x></message>"
#define PING                                                                   \
	"<iq to='bob@200:1::2' from='inky@201:af82::1' id='ping-1' "           \
	"type='get'><ping xmlns='urn:xmpp:ping'/></iq>"
#define END "</stream:stream>"

#define PRESENCE_EV "stanza <presence xmlns=\"jabber:client\"/>\n"
#define MESSAGE_EV                                                             \
	"stanza <message from=\"inky@201:af82::1\" to=\"bob@200:1::2\" "       \
	"type=\"chat\" xmlns=\"jabber:client\">"                               \
	"<body>'Hello & welcome \xc3\xa9\xe2\x9c\x93'</body>"                  \
	"<html xmlns=\"http://www.w3.org/1999/xhtml\"><body>"                  \
	"<font>'Hello & welcome'</font></body></html>"                         \
	"<x xmlns=\"jabber:x:event\"><composing/></x></message>\n"
#define PING_EV                                                                \
	"stanza <iq from=\"inky@201:af82::1\" id=\"ping-1\" "                  \
	"to=\"bob@200:1::2\" type=\"get\" xmlns=\"jabber:client\">"            \
	"<ping xmlns=\"urn:xmpp:ping\"/></iq>\n"

#define PREHDR                                                                 \
	"<stream:error><host-unknown "                                         \
	"xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></stream:error>"
#define PREHDR_EV                                                              \
	"prehdr <error xmlns=\"http://etherx.jabber.org/streams\">"            \
	"<host-unknown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"        \
	"</error>\n"

static const char session[] = DECL ROOT PRESENCE MESSAGE PING END;
static const char session_ev[] = OPEN_EV PRESENCE_EV MESSAGE_EV PING_EV
    "close\n";

static const struct xstream_limits default_limits = {
	.max_stanza_bytes = 65536,
	.max_depth = 32,
	.max_header_bytes = 4096,
};

/* Records events as text, so whole runs compare with one string. */
struct rec {
	struct xstream *xs;
	char log[16384];
	size_t len;
	unsigned events;
	unsigned stop_at; /* xstream_stop() inside this event (1-based) */
};

static xmpp_ctx_t *ctx;

static void
addf(struct rec *, const char *, ...) __attribute__((format(printf, 2, 3)));

static void
addf(struct rec *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(r->log) - r->len);
	r->len += (size_t)n;
}

struct pair {
	const char *k, *v;
};

static int
pair_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pair *)a)->k, ((const struct pair *)b)->k);
}

/* Sorted name=value pairs, values in quotes if quote is set. */
static void
add_pairs(struct rec *r, struct pair *p, size_t n, int quote)
{
	const char *q = quote ? "\"" : "";
	size_t i;

	qsort(p, n, sizeof(*p), pair_cmp);
	for (i = 0; i < n; i++)
		addf(r, "%s%s=%s%s%s", i == 0 ? "" : " ", p[i].k, q, p[i].v, q);
}

/* Canonical form: sorted attributes, text in quotes (so two adjacent
 * text nodes show as two quoted strings). */
static void
dump(struct rec *r, xmpp_stanza_t *s)
{
	const char *a[64];
	struct pair p[32];
	xmpp_stanza_t *c;
	int i, n;

	if (xmpp_stanza_is_text(s)) {
		addf(r, "'%s'", xmpp_stanza_get_text_ptr(s));
		return;
	}
	addf(r, "<%s", xmpp_stanza_get_name(s));
	n = xmpp_stanza_get_attributes(s, a, 64);
	for (i = 0; i < n; i += 2) {
		p[i / 2].k = a[i];
		p[i / 2].v = a[i + 1];
	}
	if (n > 0) {
		addf(r, " ");
		add_pairs(r, p, (size_t)n / 2, 1);
	}
	if ((c = xmpp_stanza_get_children(s)) == NULL) {
		addf(r, "/>");
		return;
	}
	addf(r, ">");
	for (; c != NULL; c = xmpp_stanza_get_next(c))
		dump(r, c);
	addf(r, "</%s>", xmpp_stanza_get_name(s));
}

static void
event(struct rec *r)
{
	if (++r->events == r->stop_at)
		xstream_stop(r->xs);
}

static void
on_open(void *arg, const char *from, const char *to, const char **attrs)
{
	struct rec *r = arg;
	struct pair p[32] = { { NULL, NULL } };
	size_t n;

	addf(r, "open %s %s [", from ? from : "(null)", to ? to : "(null)");
	for (n = 0; attrs[2 * n] != NULL; n++) {
		assert_true(n < 32);
		p[n].k = attrs[2 * n];
		p[n].v = attrs[2 * n + 1];
	}
	add_pairs(r, p, n, 0);
	addf(r, "]\n");
	event(r);
}

static void
on_stanza(void *arg, xmpp_stanza_t *stanza)
{
	struct rec *r = arg;

	addf(r, "stanza ");
	dump(r, stanza);
	addf(r, "\n");
	event(r);
}

static void
on_prehdr(void *arg, xmpp_stanza_t *error)
{
	struct rec *r = arg;

	addf(r, "prehdr ");
	dump(r, error);
	addf(r, "\n");
	event(r);
}

static void
on_close(void *arg)
{
	struct rec *r = arg;

	addf(r, "close\n");
	event(r);
}

static void
on_error(void *arg, enum xstream_error err, const char *detail)
{
	struct rec *r = arg;

	addf(r, "error %s: %s\n", xstream_error_name(err), detail);
	event(r);
}

static const struct xstream_cb rec_cb = {
	.open = on_open,
	.stanza = on_stanza,
	.pre_header_error = on_prehdr,
	.close = on_close,
	.error = on_error,
};

static void
rec_start(struct rec *r, const struct xstream_limits *lim)
{
	xstream_free(r->xs);
	r->xs = xstream_new(ctx, lim, &rec_cb, r);
	r->len = 0;
	r->log[0] = '\0';
	r->events = 0;
}

static struct rec *
rec_new(void)
{
	struct rec *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	return r;
}

static void
rec_free(struct rec *r)
{
	xstream_free(r->xs);
	free(r);
}

/* Feeds in chunks ending at the given cut points, then the rest. */
static int
run_cuts(struct rec *r, const struct xstream_limits *lim, const char *in,
    size_t len, const size_t *cuts, size_t ncuts)
{
	size_t i, at = 0;
	int rc = 0;

	rec_start(r, lim);
	for (i = 0; i < ncuts; i++) {
		rc = xstream_feed(r->xs, in + at, cuts[i] - at);
		at = cuts[i];
	}
	return xstream_feed(r->xs, in + at, len - at) | rc;
}

static int
run(struct rec *r, const struct xstream_limits *lim, const char *in, size_t len)
{
	return run_cuts(r, lim, in, len, NULL, 0);
}

static int
run_bytes(
    struct rec *r, const struct xstream_limits *lim, const char *in, size_t len)
{
	size_t i;
	int rc = 0;

	rec_start(r, lim);
	for (i = 0; i < len; i++)
		rc = xstream_feed(r->xs, in + i, 1);
	return rc;
}

/* Whole, in two pieces split at every position, and byte by byte: the
 * same events every time. */
static void
check_all_splits(const struct xstream_limits *lim, const char *in, size_t len,
    const char *expect, int expect_rc)
{
	struct rec *r = rec_new();
	size_t cut;

	assert_int_equal(run(r, lim, in, len), expect_rc);
	assert_string_equal(r->log, expect);
	for (cut = 0; cut <= len; cut++) {
		run_cuts(r, lim, in, len, &cut, 1);
		assert_string_equal(r->log, expect);
	}
	assert_int_equal(run_bytes(r, lim, in, len), expect_rc);
	assert_string_equal(r->log, expect);
	rec_free(r);
}

#define CHECK(in, expect, rc)                                                  \
	check_all_splits(&default_limits, in, sizeof(in) - 1, expect, rc)

static const char *
parse(struct rec *r, const char *in)
{
	run(r, &default_limits, in, strlen(in));
	return r->log;
}

static void
test_session(void **state)
{
	CHECK(session, session_ev, -1);
}

/* Each event fires on the very byte that completes it (expat's reparse
 * deferral, left on, holds these back until more input comes). */
static void
test_events_on_last_byte(void **state)
{
	struct rec *r = rec_new();
	size_t ends[5], i, k = 0;
	const char *s = session;

	ends[0] = strlen(DECL ROOT);
	ends[1] = ends[0] + strlen(PRESENCE);
	ends[2] = ends[1] + strlen(MESSAGE);
	ends[3] = ends[2] + strlen(PING);
	ends[4] = ends[3] + strlen(END);
	assert_int_equal(ends[4], strlen(s));
	rec_start(r, &default_limits);
	for (i = 0; i < ends[4]; i++) {
		xstream_feed(r->xs, s + i, 1);
		if (k < 5 && i + 1 == ends[k])
			k++;
		assert_int_equal(r->events, k);
	}
	assert_string_equal(r->log, session_ev);
	rec_free(r);
}

static void
test_many_per_read(void **state)
{
	static const char in[] = DECL ROOT "\n  " PRESENCE "\n" PRESENCE
					   " \t\r\n" PING PING "\n" MESSAGE;
	struct rec *r = rec_new();

	assert_int_equal(run(r, &default_limits, in, sizeof(in) - 1), 0);
	assert_string_equal(
	    r->log, OPEN_EV PRESENCE_EV PRESENCE_EV PING_EV PING_EV MESSAGE_EV);
	assert_int_equal(r->events, 6);
	rec_free(r);
}

static void
test_declarations(void **state)
{
	/* None; the spec's typo; single quotes; two; junk; BOM; comment. */
	CHECK(ROOT PRESENCE, OPEN_EV PRESENCE_EV, 0);
	CHECK("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>}\n" ROOT PRESENCE,
	    OPEN_EV PRESENCE_EV, 0);
	CHECK("<?xml version='1.0' encoding='UTF-8'?>"
	      "<stream:stream xmlns='jabber:client' "
	      "to='bob@200:1::2' from='inky@201:af82::1' "
	      "xmlns:stream='http://etherx.jabber.org/streams'>" PRESENCE,
	    OPEN_EV PRESENCE_EV, 0);
	CHECK(DECL DECL ROOT PRESENCE, OPEN_EV PRESENCE_EV, 0);
	CHECK("\r\n}}junk> text\n" DECL "}" DECL " x " ROOT PRESENCE,
	    OPEN_EV PRESENCE_EV, 0);
	CHECK("\xef\xbb\xbf" DECL ROOT PRESENCE, OPEN_EV PRESENCE_EV, 0);
	CHECK(DECL "<!-- hi - there -->" ROOT PRESENCE, OPEN_EV PRESENCE_EV, 0);
	CHECK("<?xml?>" ROOT PRESENCE, OPEN_EV PRESENCE_EV, 0);
}

/* The reference client's rejection: error, then its header, then the end. */
static void
test_pre_header_error(void **state)
{
	CHECK(PREHDR DECL ROOT END, PREHDR_EV OPEN_EV "close\n", -1);
	CHECK(PREHDR "\n" ROOT "\n" END, PREHDR_EV OPEN_EV "close\n", -1);
	CHECK("<stream:error><host-unknown/></stream:error>" ROOT END,
	    "prehdr <error xmlns=\"http://etherx.jabber.org/streams\">"
	    "<host-unknown xmlns=\"\"/></error>\n" OPEN_EV "close\n",
	    -1);
	CHECK(DECL "<stream:error/>" DECL ROOT END,
	    "prehdr <error "
	    "xmlns=\"http://etherx.jabber.org/streams\"/>\n" OPEN_EV "close\n",
	    -1);
	/* With its own declaration of the prefix, and text in it. */
	CHECK("<e:error xmlns:e='http://etherx.jabber.org/streams'>"
	      "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
	      "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>a &lt; b"
	      "</text></e:error>" ROOT PRESENCE,
	    "prehdr <error xmlns=\"http://etherx.jabber.org/streams\">"
	    "<conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"
	    "<text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">'a < b'"
	    "</text></error>\n" OPEN_EV PRESENCE_EV,
	    0);
}

static void
test_stream_error_inside(void **state)
{
	CHECK(ROOT
	    "<stream:error><conflict "
	    "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>" END,
	    OPEN_EV "stanza <error xmlns=\"http://etherx.jabber.org/streams\">"
		    "<conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"
		    "</error>\nclose\n",
	    -1);
}

static void
test_prefixes(void **state)
{
	/* Any prefix for the stream, prefixed stanzas. */
	CHECK("<s:stream xmlns:s='http://etherx.jabber.org/streams' "
	      "xmlns:c='jabber:client' from='a@200::1'>"
	      "<c:message type='chat'><c:body>hi</c:body></c:message>"
	      "</s:stream>",
	    "open a@200::1 (null) [from=a@200::1]\n"
	    "stanza <message type=\"chat\" xmlns=\"jabber:client\">"
	    "<body>'hi'</body></message>\nclose\n",
	    -1);
	/* The streams namespace as the default one. */
	CHECK("<stream xmlns='http://etherx.jabber.org/streams'>"
	      "<message xmlns='jabber:client'><body>x</body></message>"
	      "<presence/></stream>",
	    "open (null) (null) []\n"
	    "stanza <message xmlns=\"jabber:client\"><body>'x'</body>"
	    "</message>\nstanza <presence "
	    "xmlns=\"http://etherx.jabber.org/streams\"/>\nclose\n",
	    -1);
	/* A header that forgets xmlns:stream is taken as meant. */
	CHECK("<stream:stream xmlns='jabber:client'>" PRESENCE END,
	    "open (null) (null) []\n" PRESENCE_EV "close\n", -1);
}

static void
test_namespaces_and_attributes(void **state)
{
	CHECK(ROOT "<message xml:lang='en' xmlns:a='urn:a' a:from='evil' "
		   "from='good'><x xmlns='jabber:x:event'><composing/></x>"
		   "<a:body>t</a:body><body xmlns=''>u</body></message>",
	    OPEN_EV "stanza <message from=\"good\" xml:lang=\"en\" "
		    "xmlns=\"jabber:client\"><x xmlns=\"jabber:x:event\">"
		    "<composing/></x><body xmlns=\"urn:a\">'t'</body>"
		    "<body xmlns=\"\">'u'</body></message>\n",
	    0);
	CHECK("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'"
	      " xmlns='jabber:client' version='1.0' xml:lang='fr' id='x1'"
	      " xmlns:a='urn:a' a:to='evil'>",
	    "open (null) (null) [id=x1 version=1.0 xml:lang=fr]\n", 0);
}

static void
test_text_merged(void **state)
{
	/* Entities, character references, CDATA and line ends: one node. */
	CHECK(ROOT "<message><body>a&amp;b&#x263a;<![CDATA[<c>]]>\r\nd</body>"
		   "</message>",
	    OPEN_EV "stanza <message xmlns=\"jabber:client\">"
		    "<body>'a&b\xe2\x98\xba<c>\nd'</body></message>\n",
	    0);
	/* Mixed content keeps its order. */
	CHECK(ROOT "<message>a<b/>c<d>e</d></message>",
	    OPEN_EV "stanza <message xmlns=\"jabber:client\">'a'<b/>'c'"
		    "<d>'e'</d></message>\n",
	    0);
}

static void
test_comments_dropped(void **state)
{
	CHECK(ROOT "<!-- between -->" PRESENCE "<message><!-- in -->"
		   "<body>a<!-- text -->b</body></message>",
	    OPEN_EV PRESENCE_EV "stanza <message xmlns=\"jabber:client\">"
				"<body>'ab'</body></message>\n",
	    0);
}

static void
test_top_level_text_ignored(void **state)
{
	CHECK(ROOT "junk and more" PRESENCE " ]]x " PRESENCE END,
	    OPEN_EV PRESENCE_EV PRESENCE_EV "close\n", -1);
}

static void
test_after_close_and_error(void **state)
{
	static const char in[] = ROOT END "junk <x>" PRESENCE;
	struct rec *r = rec_new();

	/* Bytes after the end are ignored, in the same read or later. */
	assert_int_equal(run(r, &default_limits, in, sizeof(in) - 1), -1);
	assert_string_equal(r->log, OPEN_EV "close\n");
	assert_int_equal(xstream_feed(r->xs, PRESENCE, strlen(PRESENCE)), -1);
	assert_int_equal(xstream_feed(r->xs, "", 0), -1);
	assert_string_equal(r->log, OPEN_EV "close\n");

	/* One error, then silence. */
	assert_string_equal(parse(r, ROOT "<a></b>" PRESENCE),
	    OPEN_EV "error not-well-formed: mismatched tag\n");
	assert_int_equal(xstream_feed(r->xs, PRESENCE, strlen(PRESENCE)), -1);
	assert_int_equal(xstream_feed(r->xs, END, strlen(END)), -1);
	assert_int_equal(r->events, 2);
	rec_free(r);
}

static void
expect_limit(const struct xstream_limits *lim, const char *in,
    const char *before, const char *what, size_t n)
{
	char expect[1024];

	snprintf(expect, sizeof(expect),
	    "%serror policy-violation: %s exceeds %zu bytes\n", before, what,
	    n);
	check_all_splits(lim, in, strlen(in), expect, -1);
}

static void
test_stanza_limit(void **state)
{
	static const char stanza[] = "<message><body>hello</body></message>";
	static const char in[] = ROOT PRESENCE "\n<message><body>hello</body>"
					       "</message>" PRESENCE;
	struct xstream_limits lim = default_limits;

	lim.max_stanza_bytes = strlen(stanza);
	check_all_splits(&lim, in, strlen(in),
	    OPEN_EV PRESENCE_EV
	    "stanza <message xmlns=\"jabber:client\"><body>'hello'</body>"
	    "</message>\n" PRESENCE_EV,
	    0);
	lim.max_stanza_bytes--;
	expect_limit(
	    &lim, in, OPEN_EV PRESENCE_EV, "stanza", lim.max_stanza_bytes);
	/* Text counts: it is bytes of the stanza. */
	lim.max_stanza_bytes = 30;
	expect_limit(&lim, ROOT "<message><body>0123456789012345</body>",
	    OPEN_EV, "stanza", 30);
}

/* A stanza that never ends is refused as soon as it outgrows the limit:
 * the peer cannot make us hold more. */
static void
test_stanza_limit_unfinished(void **state)
{
	struct xstream_limits lim = default_limits;
	struct rec *r = rec_new();
	char body[100];

	lim.max_stanza_bytes = 100;
	memset(body, 'x', sizeof(body));
	rec_start(r, &lim);
	assert_int_equal(xstream_feed(r->xs, ROOT, strlen(ROOT)), 0);
	assert_int_equal(xstream_feed(r->xs, "<message to='", 13), 0);
	assert_int_equal(xstream_feed(r->xs, body, 87), 0);
	assert_int_equal(xstream_pending(r->xs), 100);
	assert_string_equal(r->log, OPEN_EV);
	assert_int_equal(xstream_feed(r->xs, body, 1), -1);
	assert_string_equal(r->log,
	    OPEN_EV "error policy-violation: stanza exceeds 100 bytes\n");
	/* Within one read too. */
	rec_start(r, &lim);
	assert_int_equal(xstream_feed(r->xs, ROOT, strlen(ROOT)), 0);
	assert_int_equal(xstream_feed(r->xs, "<m>", 3), 0);
	assert_int_equal(xstream_feed(r->xs, body, sizeof(body)), -1);
	assert_string_equal(r->log,
	    OPEN_EV "error policy-violation: stanza exceeds 100 bytes\n");
	rec_free(r);
}

/* Whitespace keepalives and stray text between stanzas are no stanza. */
static void
test_stanza_limit_between(void **state)
{
	struct xstream_limits lim = default_limits;
	struct rec *r = rec_new();
	char gap[1000];
	int i;

	lim.max_stanza_bytes = 16;
	rec_start(r, &lim);
	assert_int_equal(xstream_feed(r->xs, ROOT, strlen(ROOT)), 0);
	for (i = 0; i < 10; i++) {
		memset(gap, i % 2 ? ' ' : 'j', sizeof(gap));
		assert_int_equal(xstream_feed(r->xs, gap, sizeof(gap)), 0);
		assert_true(xstream_pending(r->xs) <= 1);
	}
	assert_int_equal(xstream_feed(r->xs, PRESENCE, strlen(PRESENCE)), 0);
	/* A comment counts on its own, not with the stanza after it. */
	assert_int_equal(xstream_feed(r->xs, "<!-- 1234 -->" PRESENCE,
			     13 + strlen(PRESENCE)),
	    0);
	assert_string_equal(r->log, OPEN_EV PRESENCE_EV PRESENCE_EV);
	rec_free(r);
}

static void
test_depth_limit(void **state)
{
	static const char in[] = ROOT "<message><x><y/></x></message>" END;
	static const char ok[] = OPEN_EV
	    "stanza <message "
	    "xmlns=\"jabber:client\"><x><y/></x></message>\nclose\n";
	struct xstream_limits lim = default_limits;

	lim.max_depth = 4;
	check_all_splits(&lim, in, strlen(in), ok, -1);
	lim.max_depth = 3;
	check_all_splits(&lim, in, strlen(in),
	    OPEN_EV "error policy-violation: element depth exceeds 3\n", -1);
	lim.max_depth = 1;
	check_all_splits(
	    &lim, ROOT END, strlen(ROOT END), OPEN_EV "close\n", -1);
	check_all_splits(&lim, ROOT PRESENCE, strlen(ROOT PRESENCE),
	    OPEN_EV "error policy-violation: element depth exceeds 1\n", -1);
}

static void
test_header_limit(void **state)
{
	static const char in[] = DECL ROOT PRESENCE;
	static const char pre[] = PREHDR DECL ROOT PRESENCE;
	struct xstream_limits lim = default_limits;
	char junk[600];

	lim.max_header_bytes = strlen(DECL ROOT);
	check_all_splits(&lim, in, strlen(in), OPEN_EV PRESENCE_EV, 0);
	lim.max_header_bytes--;
	expect_limit(&lim, in, "", "stream header", lim.max_header_bytes);

	/* A pre-header error is header too. */
	lim.max_header_bytes = strlen(PREHDR DECL ROOT);
	check_all_splits(
	    &lim, pre, strlen(pre), PREHDR_EV OPEN_EV PRESENCE_EV, 0);
	lim.max_header_bytes--;
	expect_limit(
	    &lim, pre, PREHDR_EV, "stream header", lim.max_header_bytes);
	lim.max_header_bytes = strlen(PREHDR) - 1;
	expect_limit(&lim, pre, "", "stream header", lim.max_header_bytes);

	/* Junk before the header, without any markup. */
	lim.max_header_bytes = 512;
	memset(junk, ' ', sizeof(junk) - 1);
	junk[sizeof(junk) - 1] = '\0';
	expect_limit(&lim, junk, "", "stream header", 512);
}

static void
test_restricted(void **state)
{
	struct rec *r = rec_new();

	assert_string_equal(parse(r, DECL "<!DOCTYPE stream:stream>" ROOT),
	    "error restricted-xml: DTD or markup declaration\n");
	assert_string_equal(parse(r, "<!ENTITY x 'y'>" ROOT),
	    "error restricted-xml: DTD or markup declaration\n");
	assert_string_equal(parse(r, "<?xml-stylesheet href='a'?>" ROOT),
	    "error restricted-xml: processing instruction\n");
	assert_string_equal(parse(r, DECL "<?php echo 1 ?>" ROOT),
	    "error restricted-xml: processing instruction\n");
	assert_string_equal(parse(r, "<?XML version='1.0'?>" ROOT),
	    "error restricted-xml: processing instruction\n");
	assert_string_equal(parse(r, ROOT "<?foo bar?>" PRESENCE),
	    OPEN_EV "error restricted-xml: processing instruction\n");
	assert_string_equal(parse(r, ROOT "<message><?foo?></message>"),
	    OPEN_EV "error restricted-xml: processing instruction\n");
	assert_string_equal(parse(r, PREHDR "<?foo?>" ROOT),
	    PREHDR_EV "error restricted-xml: processing instruction\n");
	/* With no DTD, other entities are simply undefined. */
	assert_string_equal(parse(r, ROOT "<message>&ent;</message>"),
	    OPEN_EV "error not-well-formed: undefined entity\n");
	/* A DTD inside the stream is plain bad syntax. */
	assert_string_equal(parse(r, ROOT "<!DOCTYPE x>"),
	    OPEN_EV "error not-well-formed: not well-formed (invalid token)\n");
	rec_free(r);
}

static void
test_malformed(void **state)
{
	CHECK(ROOT "<message><body></message>",
	    OPEN_EV "error not-well-formed: mismatched tag\n", -1);
	CHECK(ROOT "<message><body>\xff</body></message>",
	    OPEN_EV "error not-well-formed: not well-formed (invalid token)\n",
	    -1);
	CHECK(ROOT "<message><body>\xc0\xaf</body></message>",
	    OPEN_EV "error not-well-formed: not well-formed (invalid token)\n",
	    -1);
	CHECK(ROOT "<message><body>a\0b</body></message>",
	    OPEN_EV "error not-well-formed: not well-formed (invalid token)\n",
	    -1);
	CHECK(ROOT "<message><body>\xc3(</body></message>",
	    OPEN_EV "error not-well-formed: not well-formed (invalid token)\n",
	    -1);
	CHECK(ROOT "<foo:message/>",
	    OPEN_EV "error not-well-formed: unbound prefix\n", -1);
	CHECK(ROOT "<message a='1' a='2'/>",
	    OPEN_EV "error not-well-formed: duplicate attribute\n", -1);
	CHECK(
	    "</stream:stream>", "error not-well-formed: mismatched tag\n", -1);
	CHECK("<<", "error not-well-formed: not well-formed (invalid token)\n",
	    -1);
	/* The name of the parser's hidden outer element is no way out. */
	CHECK("</w>", "error not-well-formed: mismatched tag\n", -1);
	CHECK(PREHDR "</w>" ROOT,
	    PREHDR_EV "error not-well-formed: mismatched tag\n", -1);
	CHECK("<!-x", "error not-well-formed: bad comment\n", -1);
	CHECK("<foo/>",
	    "error invalid-namespace: first element is not "
	    "{http://etherx.jabber.org/streams}stream\n",
	    -1);
	CHECK("<stream xmlns='jabber:client'>" PRESENCE,
	    "error invalid-namespace: first element is not "
	    "{http://etherx.jabber.org/streams}stream\n",
	    -1);
	CHECK("<stream:stream xmlns:stream='urn:wrong'>",
	    "error invalid-namespace: first element is not "
	    "{http://etherx.jabber.org/streams}stream\n",
	    -1);
	/* An unclosed pre-header error swallows the header: we wait, for
	 * no more than the header limit (see test_header_limit). */
	CHECK("<stream:error><host-unknown/>" ROOT END, "", 0);
}

static void
test_stop_in_callbacks(void **state)
{
	static const char in[] = ROOT PRESENCE PRESENCE PING;
	static const char pre[] = PREHDR ROOT PRESENCE;
	struct rec *r = rec_new();

	r->stop_at = 2;
	assert_int_equal(run(r, &default_limits, in, sizeof(in) - 1), -1);
	assert_string_equal(r->log, OPEN_EV PRESENCE_EV);
	assert_int_equal(xstream_feed(r->xs, PING, strlen(PING)), -1);
	assert_int_equal(r->events, 2);

	r->stop_at = 1;
	assert_int_equal(run(r, &default_limits, in, sizeof(in) - 1), -1);
	assert_string_equal(r->log, OPEN_EV);
	assert_int_equal(run(r, &default_limits, pre, sizeof(pre) - 1), -1);
	assert_string_equal(r->log, PREHDR_EV);
	assert_int_equal(
	    run_bytes(r, &default_limits, pre, sizeof(pre) - 1), -1);
	assert_string_equal(r->log, PREHDR_EV);

	/* From outside a callback, between reads. */
	r->stop_at = 0;
	rec_start(r, &default_limits);
	assert_int_equal(xstream_feed(r->xs, ROOT, strlen(ROOT)), 0);
	xstream_stop(r->xs);
	assert_int_equal(xstream_feed(r->xs, PRESENCE, strlen(PRESENCE)), -1);
	assert_string_equal(r->log, OPEN_EV);
	rec_free(r);
}

static void
test_pending(void **state)
{
	struct rec *r = rec_new();

	rec_start(r, &default_limits);
	assert_int_equal(xstream_pending(r->xs), 0);
	xstream_feed(r->xs, DECL, strlen(DECL));
	assert_int_equal(xstream_pending(r->xs), strlen(DECL));
	xstream_feed(r->xs, ROOT, 10);
	assert_int_equal(xstream_pending(r->xs), strlen(DECL) + 10);
	xstream_feed(r->xs, &ROOT[10], strlen(ROOT) - 10);
	assert_int_equal(xstream_pending(r->xs), 0);
	xstream_feed(r->xs, "<message><bo", 12);
	assert_int_equal(xstream_pending(r->xs), 12);
	xstream_feed(r->xs, "dy/></message>", 14);
	assert_int_equal(xstream_pending(r->xs), 0);
	xstream_feed(r->xs, END, strlen(END));
	assert_int_equal(xstream_pending(r->xs), 0);
	/* Freed with a stanza half built: nothing leaks. */
	rec_start(r, &default_limits);
	xstream_feed(
	    r->xs, ROOT "<message><body>x<y a='1'>", strlen(ROOT) + 25);
	assert_int_equal(xstream_pending(r->xs), 25);
	rec_free(r);
}

static void
test_no_callbacks(void **state)
{
	static const struct xstream_cb none;
	struct xstream *xs;

	xs = xstream_new(ctx, &default_limits, &none, NULL);
	assert_int_equal(xstream_feed(xs, PREHDR, strlen(PREHDR)), 0);
	assert_int_equal(xstream_feed(xs, session, strlen(session)), -1);
	xstream_free(xs);
	xs = xstream_new(ctx, &default_limits, &none, NULL);
	assert_int_equal(xstream_feed(xs, "<x/>", 4), -1);
	xstream_free(xs);
	xstream_free(NULL);
}

static void
test_error_names(void **state)
{
	assert_string_equal(
	    xstream_error_name(XSTREAM_ERR_NOT_WELL_FORMED), "not-well-formed");
	assert_string_equal(
	    xstream_error_name(XSTREAM_ERR_RESTRICTED_XML), "restricted-xml");
	assert_string_equal(xstream_error_name(XSTREAM_ERR_POLICY_VIOLATION),
	    "policy-violation");
	assert_string_equal(xstream_error_name(XSTREAM_ERR_INVALID_NAMESPACE),
	    "invalid-namespace");
	assert_string_equal(
	    xstream_error_name((enum xstream_error)99), "undefined-condition");
}

static int
setup(void **state)
{
	ctx = xmpp_ctx_new(NULL, NULL);
	return ctx == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	xmpp_ctx_free(ctx);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_session),
		cmocka_unit_test(test_events_on_last_byte),
		cmocka_unit_test(test_many_per_read),
		cmocka_unit_test(test_declarations),
		cmocka_unit_test(test_pre_header_error),
		cmocka_unit_test(test_stream_error_inside),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_namespaces_and_attributes),
		cmocka_unit_test(test_text_merged),
		cmocka_unit_test(test_comments_dropped),
		cmocka_unit_test(test_top_level_text_ignored),
		cmocka_unit_test(test_after_close_and_error),
		cmocka_unit_test(test_stanza_limit),
		cmocka_unit_test(test_stanza_limit_unfinished),
		cmocka_unit_test(test_stanza_limit_between),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_header_limit),
		cmocka_unit_test(test_restricted),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_stop_in_callbacks),
		cmocka_unit_test(test_pending),
		cmocka_unit_test(test_no_callbacks),
		cmocka_unit_test(test_error_names),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
