/* The Barev chat message text: what a parser reads back, and what the reference client needs. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>

#include "chatmsg.h"
#include "stanza.h"

#define NS_XHTML_IM "http://jabber.org/protocol/xhtml-im"
#define NS_XHTML "http://www.w3.org/1999/xhtml"

static xmpp_ctx_t *ctx;

/* inner inside a <message/>, parsed by libstrophe as a peer's parser would. */
static xmpp_stanza_t *
parse(const char *inner)
{
	size_t len = strlen(inner) + 32;
	char *xml = malloc(len);
	xmpp_stanza_t *st;

	assert_non_null(xml);
	snprintf(xml, len, "<message>%s</message>", inner);
	st = xmpp_stanza_new_from_string(ctx, xml);
	free(xml);
	assert_non_null(st);
	return st;
}

/* The XHTML body's <font>'s content as text, <br/> read as a newline. */
static char *
xhtml_text(xmpp_stanza_t *msg)
{
	xmpp_stanza_t *html = stanza_child(msg, "html", NS_XHTML_IM), *body, *c;
	char *out = calloc(1, 4096), *t;

	assert_non_null(html);
	body = stanza_child(html, "body", NS_XHTML);
	assert_non_null(body);
	body = stanza_child(body, "font", NULL);
	assert_non_null(body);
	for (c = xmpp_stanza_get_children(body); c != NULL;
	     c = xmpp_stanza_get_next(c)) {
		if (xmpp_stanza_is_text(c)) {
			t = xmpp_stanza_get_text(c);
			strcat(out, t);
			xmpp_free(ctx, t);
		} else {
			assert_string_equal(xmpp_stanza_get_name(c), "br");
			strcat(out, "\n");
		}
	}
	return out;
}

/*
 * What Pidgin shows for a message, by the reference behaviour of both
 * plugin versions: the HTML it hands to Pidgin is the XHTML part's
 * <font> content re-serialized (text escaped again) if the part's body
 * has a <font> child, else the plain <body> text. Pidgin then shows that
 * HTML: tags vanish (<br> is a line break) and entities are decoded.
 */
static char *
plugin_shows(const char *inner)
{
	xmpp_stanza_t *st = parse(inner), *html, *hb, *font = NULL, *c;
	char *markup = calloc(1, 65536), *out = calloc(1, 65536), *t, *p, *o;
	size_t len;

	assert_non_null(markup);
	assert_non_null(out);
	html = stanza_child(st, "html", NS_XHTML_IM);
	hb = html != NULL ? stanza_child(html, "body", NS_XHTML) : NULL;
	if (hb != NULL)
		font = stanza_child(hb, "font", NULL);
	if (font != NULL) {
		for (c = xmpp_stanza_get_children(font); c != NULL;
		     c = xmpp_stanza_get_next(c)) {
			assert_int_equal(xmpp_stanza_to_text(c, &t, &len), 0);
			strcat(markup, t);
			xmpp_free(ctx, t);
		}
	} else {
		t = stanza_child_text(st, "body", NULL);
		assert_non_null(t);
		strcat(markup, t);
		free(t);
	}
	for (p = markup, o = out; *p != '\0';) {
		if (*p == '<') {
			if (strncmp(p, "<br", 3) == 0)
				*o++ = '\n';
			p = strchr(p, '>');
			assert_non_null(p);
			p++;
		} else if (*p == '&') {
			static const char *const ent[][2] = { { "&amp;", "&" },
				{ "&lt;", "<" }, { "&gt;", ">" },
				{ "&quot;", "\"" }, { "&apos;", "'" } };
			size_t i;

			for (i = 0; i < 5; i++)
				if (strncmp(p, ent[i][0], strlen(ent[i][0])) ==
				    0)
					break;
			/* A lone & is shown as it is. */
			*o++ = i < 5 ? *ent[i][1] : '&';
			p += i < 5 ? strlen(ent[i][0]) : 1;
		} else
			*o++ = *p++;
	}
	free(markup);
	xmpp_stanza_release(st);
	return out;
}

/* Typed markup shows as typed in Pidgin, not rendered: the text and more. */
static void
test_plugin_shows_text(void **state)
{
	static const char *const typed[] = {
		"<b>x</b> & \xe2\x98\x83 \"q\"",
		"<i>not italic</i> &amp; &lt;",
		"a < b && c > d",
		"two\nlines <br> not a break",
		"<a href=\"http://x/\">no link</a>",
	};
	size_t i, len;
	char *inner, *shown;

	for (i = 0; i < sizeof(typed) / sizeof(typed[0]); i++) {
		inner = chatmsg_inner(typed[i], NULL, &len);
		shown = plugin_shows(inner);
		assert_string_equal(shown, typed[i]);
		free(shown);
		free(inner);
	}
}

/* A user's own XHTML-IM formatting reaches Pidgin; its text shows as typed. */
static void
test_plugin_shows_own_xhtml(void **state)
{
	xmpp_stanza_t *msg;
	char *xhtml, *inner, *shown;
	size_t len;

	msg = parse("<html xmlns=\"" NS_XHTML_IM "\"><body xmlns=\"" NS_XHTML
		    "\"><p><strong>bold</strong> &lt;b&gt;plain&lt;/b&gt; "
		    "&amp;</p></body></html>");
	xhtml = chatmsg_xhtml(ctx, stanza_child(msg, "html", NS_XHTML_IM));
	assert_non_null(xhtml);
	inner = chatmsg_inner("bold <b>plain</b> &", xhtml, &len);
	/* The formatting is in the markup Pidgin gets... */
	assert_non_null(strstr(inner, "<font><p"));
	assert_non_null(strstr(inner, "<strong>bold</strong>"));
	/* ...and the text the user typed shows as typed. */
	shown = plugin_shows(inner);
	assert_string_equal(shown, "bold <b>plain</b> &");
	free(shown);
	free(inner);
	free(xhtml);
	xmpp_stanza_release(msg);
	/* An XHTML-IM part without an XHTML body gives none. */
	msg = parse("<html xmlns=\"" NS_XHTML_IM "\"/>");
	assert_null(chatmsg_xhtml(ctx, stanza_child(msg, "html", NS_XHTML_IM)));
	xmpp_stanza_release(msg);
}

static void
test_text_survives(void **state)
{
	static const char *const bodies[] = {
		"hello",
		"a < b && c > d",
		"<b>not bold</b> &amp; not an entity",
		"line one\nline two\n\nline four",
		"\n",
		"quotes \" and ' stay",
		"UTF-8: \xd5\xa2\xd5\xa1\xd6\x80\xd6\x87 \xe2\x9c\x93",
	};
	size_t i, len;
	char *inner, *body, *x;
	xmpp_stanza_t *st;

	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		inner = chatmsg_inner(bodies[i], NULL, &len);
		assert_int_equal(len, strlen(inner));
		st = parse(inner);
		body = stanza_child_text(st, "body", NULL);
		assert_string_equal(body, bodies[i]);
		x = xhtml_text(st);
		assert_string_equal(x, bodies[i]);
		free(x);
		free(body);
		xmpp_stanza_release(st);
		free(inner);
	}
}

static void
test_markup_is_escaped(void **state)
{
	size_t len;
	char *inner = chatmsg_inner("<b>&", NULL, &len);

	/* The reference client renders HTML: markup must arrive as text. */
	assert_null(strstr(inner, "<b>"));
	assert_non_null(strstr(inner, "<body>&lt;b&gt;&amp;</body>"));
	free(inner);
}

static void
test_own_xhtml_kept(void **state)
{
	xmpp_stanza_t *msg = parse(
	    "<html xmlns=\"" NS_XHTML_IM "\"><body xmlns=\"" NS_XHTML
	    "\"><strong>bold</strong></body></html>");
	size_t len;
	char *html = chatmsg_xhtml(ctx, stanza_child(msg, "html", NS_XHTML_IM));
	char *inner = chatmsg_inner("bold", html, &len);
	xmpp_stanza_t *st = parse(inner), *h, *b;

	h = stanza_child(st, "html", NS_XHTML_IM);
	assert_non_null(h);
	b = stanza_child(h, "body", NS_XHTML);
	assert_non_null(b);
	b = stanza_child(b, "font", NULL);
	assert_non_null(b);
	assert_non_null(stanza_child(b, "strong", NULL));
	xmpp_stanza_release(st);
	xmpp_stanza_release(msg);
	free(inner);
	free(html);
}

/* The serialized safe form of a peer's <html> given as text. */
static char *
safe_text(const char *html_xml)
{
	xmpp_stanza_t *msg = parse(html_xml), *safe;
	xmpp_stanza_t *html = stanza_child(msg, "html", NULL);
	char *buf = NULL, *out = NULL;
	size_t len;

	safe = chatmsg_safe_xhtml(ctx, html);
	if (safe != NULL) {
		assert_int_equal(xmpp_stanza_to_text(safe, &buf, &len), 0);
		out = strdup(buf);
		xmpp_free(ctx, buf);
		xmpp_stanza_release(safe);
	}
	xmpp_stanza_release(msg);
	return out;
}

/* Nothing from a peer's XHTML can make the user's client fetch anything. */
static void
test_safe_xhtml_no_external_references(void **state)
{
	char *t;

	t = safe_text("<html xmlns=\"" NS_XHTML_IM "\"><body xmlns=\"" NS_XHTML
		      "\"><p style=\"color: red; background-image: "
		      "url(http://evil/x.png); font-weight: bold\" "
		      "onclick=\"x()\">hi <img src=\"http://evil/y.png\" "
		      "alt=\"pic\"/><a href=\"http://evil/\">link</a> "
		      "<b>bold</b> <i>it</i><script>alert(1)</script>"
		      "<style>p{background:url(http://evil/z)}</style>"
		      "<span style=\"color: expression(x)\">e</span>"
		      "<unknown>text</unknown></p></body></html>");
	assert_non_null(t);
	assert_null(strstr(t, "evil"));
	assert_null(strstr(t, "url"));
	assert_null(strstr(t, "src"));
	assert_null(strstr(t, "href"));
	assert_null(strstr(t, "onclick"));
	assert_null(strstr(t, "alert"));
	assert_null(strstr(t, "expression"));
	assert_null(strstr(t, "<img"));
	/* What is safe stays: formatting and every bit of text. */
	assert_non_null(strstr(t, "<p style=\"color:red;font-weight:bold\">"));
	assert_non_null(strstr(t, "<strong>bold</strong>"));
	assert_non_null(strstr(t, "<em>it</em>"));
	assert_non_null(strstr(t, "link"));
	assert_non_null(strstr(t, "text"));
	assert_non_null(strstr(t, "xmlns=\"" NS_XHTML_IM "\""));
	free(t);
	/* The plugin's own form: <html> in the XHTML namespace, a <font>. */
	t = safe_text("<html xmlns=\"" NS_XHTML "\"><body><font face=\"Sans\" "
		      "color=\"#ff0000\"><span style=\"font-style: "
		      "italic;\">hello</span></font></body></html>");
	assert_non_null(t);
	assert_non_null(strstr(t, "<span style=\"font-style:italic\">hello"));
	assert_null(strstr(t, "font face"));
	free(t);
	/* Nothing left: no XHTML part at all. */
	assert_null(
	    safe_text("<html xmlns=\"" NS_XHTML_IM "\"><body xmlns=\"" NS_XHTML
		      "\"><img src=\"http://evil/\"/></body></html>"));
	assert_null(safe_text("<html xmlns=\"" NS_XHTML_IM "\"/>"));
}

static void
test_clean(void **state)
{
	char *c;

	c = chatmsg_clean("a\x01"
			  "b\x1f"
			  "c\x7f"
			  "d\te\nf\rg");
	assert_string_equal(c, "abcd\te\nf\rg");
	free(c);
	/* U+FFFE, U+FFFF go; U+FFFD and U+FEFF stay. */
	c = chatmsg_clean(
	    "x\xef\xbf\xbey\xef\xbf\xbfz\xef\xbf\xbd\xef\xbb\xbf");
	assert_string_equal(c, "xyz\xef\xbf\xbd\xef\xbb\xbf");
	free(c);
	c = chatmsg_clean("");
	assert_string_equal(c, "");
	free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plugin_shows_text),
		cmocka_unit_test(test_plugin_shows_own_xhtml),
		cmocka_unit_test(test_text_survives),
		cmocka_unit_test(test_markup_is_escaped),
		cmocka_unit_test(test_own_xhtml_kept),
		cmocka_unit_test(test_safe_xhtml_no_external_references),
		cmocka_unit_test(test_clean),
	};
	int rc;

	xmpp_initialize();
	ctx = xmpp_ctx_new(NULL, NULL);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	xmpp_ctx_free(ctx);
	xmpp_shutdown();
	return rc;
}
