/*
 * Fuzz target: the bytes of a Barev <message> stanza, read by the project's
 * stream parser inside a stream header, through what the bridge does with a
 * chat message both ways: towards the XMPP user (clean body, XHTML reduced
 * to the safe subset) and, taken as an XMPP user's message, towards Barev
 * (chatmsg_xhtml and chatmsg_inner). What either side is given must be
 * well-formed, keep the body's text, and carry nothing that loads or runs.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <strophe.h>

#include "chatmsg.h"
#include "log.h"
#include "stanza.h"
#include "xmalloc.h"
#include "xstream.h"

#define NS_XHTML_IM "http://jabber.org/protocol/xhtml-im"
#define NS_XHTML "http://www.w3.org/1999/xhtml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The daemon's defaults (limits.stanza_bytes is larger, but inputs are small). */
static const struct xstream_limits limits = {
	.max_stanza_bytes = 8192,
	.max_depth = 32,
	.max_header_bytes = 8192,
};

static const char header[] =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' "
    "from='inky@201:af82::1' to='alice@200:1::1' version='1.0'>";

/* What the safe XHTML may hold below its <body>. */
static const char *const safe_names[] = { "p", "br", "span", "strong", "em",
	"blockquote", "cite", "code", "pre", "q", "ul", "ol", "li" };

static xmpp_ctx_t *ctx;

static void
check(int ok)
{
	if (!ok)
		abort();
}

static int
named(xmpp_stanza_t *st, const char *name)
{
	const char *n = xmpp_stanza_get_name(st);

	return n != NULL && strcmp(n, name) == 0;
}

static int
has_ns(xmpp_stanza_t *st, const char *ns)
{
	const char *n = xmpp_stanza_get_ns(st);

	return n != NULL && strcmp(n, ns) == 0;
}

/* A style the user's client can show but that cannot fetch or run anything. */
static void
check_style(const char *style)
{
	const char *p;

	for (p = style; *p != '\0'; p++)
		check((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') ||
		    strchr(" #%.,-'\":;", *p) != NULL);
	check(strstr(style, "url(") == NULL);
}

/* Below the safe <body>: known elements with a style attribute at most. */
static void
check_safe_children(xmpp_stanza_t *parent)
{
	xmpp_stanza_t *c;
	const char *attrs[8];
	size_t i;
	int n, known;

	for (c = xmpp_stanza_get_children(parent); c != NULL;
	     c = xmpp_stanza_get_next(c)) {
		if (xmpp_stanza_is_text(c))
			continue;
		check(xmpp_stanza_is_tag(c));
		for (known = 0, i = 0;
		     i < sizeof(safe_names) / sizeof(safe_names[0]); i++)
			known |= named(c, safe_names[i]);
		check(known);
		check(xmpp_stanza_get_attribute_count(c) <= 1);
		n = xmpp_stanza_get_attributes(c, attrs, 8);
		for (i = 0; i < (size_t)n; i += 2) {
			check(strcmp(attrs[i], "style") == 0);
			check_style(attrs[i + 1]);
		}
		check_safe_children(c);
	}
}

/*
 * s as an XML reader gets it back: a CR that reaches the serialization raw
 * (neither libstrophe nor chatmsg_inner writes &#13;) is read as a line end,
 * CR LF and CR alone both as LF (XML 1.0, 2.11). Free it.
 */
static char *
as_read(const char *s)
{
	char *out = xstrdup(s), *o = out;

	for (; *s != '\0'; s++) {
		if (*s == '\r') {
			*o++ = '\n';
			if (s[1] == '\n')
				s++;
		} else
			*o++ = *s;
	}
	*o = '\0';
	return out;
}

/* A copy of st's serialization parsed again; the text of both (free them). */
static xmpp_stanza_t *
reparse(xmpp_stanza_t *st, char **text)
{
	xmpp_stanza_t *again;
	size_t len;
	char *buf;

	check(xmpp_stanza_to_text(st, &buf, &len) == XMPP_EOK);
	check(strlen(buf) == len);
	*text = xstrdup(buf);
	xmpp_free(ctx, buf);
	again = xmpp_stanza_new_from_string(ctx, *text);
	check(again != NULL);
	return again;
}

/* The peer's XHTML as the user gets it: nothing that loads or runs, stable. */
static void
check_safe(xmpp_stanza_t *safe)
{
	xmpp_stanza_t *body, *again, *twice;
	char *text, *text2, *lower, *read, *p;

	check(named(safe, "html") && has_ns(safe, NS_XHTML_IM));
	check(xmpp_stanza_get_attribute_count(safe) == 1); /* xmlns */
	body = xmpp_stanza_get_children(safe);
	check(body != NULL && xmpp_stanza_get_next(body) == NULL);
	check(named(body, "body") && has_ns(body, NS_XHTML));
	check(xmpp_stanza_get_attribute_count(body) == 1);
	check(xmpp_stanza_get_children(body) != NULL);
	check_safe_children(body);
	/* What the user's client parses is what was checked. */
	again = reparse(safe, &text);
	lower = xstrdup(text);
	for (p = lower; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	check(
	    strstr(lower, "<img") == NULL && strstr(lower, "<script") == NULL);
	free(lower);
	/* The subset is a fixed point: reducing it again changes nothing. */
	twice = chatmsg_safe_xhtml(ctx, again);
	check(twice != NULL);
	xmpp_stanza_release(reparse(twice, &text2));
	read = as_read(text);
	check(strcmp(read, text2) == 0);
	free(read);
	free(text2);
	free(text);
	xmpp_stanza_release(twice);
	xmpp_stanza_release(again);
}

/* Barev -> XMPP, as the bridge's contact_message() builds the user's message. */
static void
to_user(xmpp_stanza_t *st, const char *body)
{
	xmpp_stanza_t *html, *safe, *m, *again;
	char *text, *got, *want;

	if ((html = stanza_child(st, "html", NS_XHTML_IM)) == NULL)
		html = stanza_child(st, "html", NS_XHTML);
	safe = chatmsg_safe_xhtml(ctx, html);
	if (safe != NULL)
		check_safe(safe);
	m = xmpp_stanza_new(ctx);
	xmpp_stanza_set_name(m, "message");
	xmpp_stanza_set_type(m, "chat");
	stanza_add_text_child(m, "body", body);
	if (safe != NULL)
		xmpp_stanza_add_child_ex(m, safe, 0);
	again = reparse(m, &text);
	got = stanza_child_text(again, "body", NULL);
	want = as_read(body);
	check(got != NULL && strcmp(got, want) == 0);
	free(want);
	free(got);
	free(text);
	xmpp_stanza_release(again);
	xmpp_stanza_release(m);
}

/* XMPP -> Barev: what the bridge writes to the pipe for a user's message. */
static void
to_barev(xmpp_stanza_t *st, const char *body, int own_xhtml)
{
	xmpp_stanza_t *again, *html, *hbody;
	char *xhtml = NULL, *inner, *wrapped, *got, *want;
	size_t len;

	if (own_xhtml)
		xhtml = chatmsg_xhtml(
		    ctx, stanza_child(st, "html", NS_XHTML_IM));
	inner = chatmsg_inner(body, xhtml, &len);
	check(strlen(inner) == len);
	xasprintf(&wrapped, "<message type='chat'>%s</message>", inner);
	again = xmpp_stanza_new_from_string(ctx, wrapped);
	check(again != NULL);
	got = stanza_child_text(again, "body", NULL);
	want = as_read(body);
	check(got != NULL && strcmp(got, want) == 0);
	free(want);
	free(got);
	/* The reference client reads the XHTML part only with a <font>. */
	html = stanza_child(again, "html", NS_XHTML_IM);
	hbody = html != NULL ? stanza_child(html, "body", NS_XHTML) : NULL;
	check(hbody != NULL && stanza_child(hbody, "font", NULL) != NULL);
	xmpp_stanza_release(again);
	free(wrapped);
	free(inner);
	free(xhtml);
}

static void
on_stanza(void *arg, xmpp_stanza_t *st)
{
	char *raw, *body;

	if (!named(st, "message") ||
	    (raw = stanza_child_text(st, "body", NULL)) == NULL)
		return;
	body = chatmsg_clean(raw);
	free(raw);
	/* The bridge sends nothing for an empty body but chat states. */
	if (*body != '\0') {
		to_user(st, body);
		to_barev(st, body, 0);
		to_barev(st, body, 1);
	}
	free(body);
}

static const struct xstream_cb cb = {
	.stanza = on_stanza,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xstream *xs;

	if (ctx == NULL) {
		log_set_level(LOG_LEVEL_ERROR);
		if ((ctx = xmpp_ctx_new(NULL, NULL)) == NULL)
			abort();
	}
	xs = xstream_new(ctx, &limits, &cb, NULL);
	if (xstream_feed(xs, header, strlen(header)) == 0 &&
	    xstream_feed(xs, (const char *)data, size) == 0)
		xstream_feed(xs, "</stream:stream>", 16);
	xstream_free(xs);
	return 0;
}
