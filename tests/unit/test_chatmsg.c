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

/* The XHTML body's content as text, <br/> read as a newline. */
static char *
xhtml_text(xmpp_stanza_t *msg)
{
	xmpp_stanza_t *html = stanza_child(msg, "html", NS_XHTML_IM), *body, *c;
	char *out = calloc(1, 4096), *t;

	assert_non_null(html);
	body = stanza_child(html, "body", NS_XHTML);
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
	const char *html = "<html xmlns=\"" NS_XHTML_IM
			   "\"><body xmlns=\"" NS_XHTML
			   "\"><strong>bold</strong></body></html>";
	size_t len;
	char *inner = chatmsg_inner("bold", html, &len);
	xmpp_stanza_t *st = parse(inner), *h, *b;

	h = stanza_child(st, "html", NS_XHTML_IM);
	assert_non_null(h);
	b = stanza_child(h, "body", NS_XHTML);
	assert_non_null(b);
	assert_non_null(stanza_child(b, "strong", NULL));
	xmpp_stanza_release(st);
	free(inner);
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
		cmocka_unit_test(test_text_survives),
		cmocka_unit_test(test_markup_is_escaped),
		cmocka_unit_test(test_own_xhtml_kept),
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
