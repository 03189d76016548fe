#include "config.h"

#include <string.h>

#include "chatmsg.h"
#include "stanza.h"
#include "xmalloc.h"

#define NS_XHTML_IM "http://jabber.org/protocol/xhtml-im"
#define NS_XHTML "http://www.w3.org/1999/xhtml"

char *
chatmsg_clean(const char *in)
{
	size_t i, o = 0, len = strlen(in);
	char *out = xmalloc(len + 1);
	const unsigned char *s = (const unsigned char *)in;

	for (i = 0; i < len; i++) {
		if (s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
			continue;
		if (s[i] == 0x7f)
			continue;
		if (s[i] == 0xef && i + 2 < len && s[i + 1] == 0xbf &&
		    (s[i + 2] == 0xbe || s[i + 2] == 0xbf)) {
			i += 2;
			continue;
		}
		out[o++] = (char)s[i];
	}
	out[o] = '\0';
	return out;
}

/* Escaped text of s[0..len) at out; returns the bytes written (at most 5 * len). */
static size_t
escape(char *out, const char *s, size_t len)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		switch (s[i]) {
		case '&':
			memcpy(out + o, "&amp;", 5);
			o += 5;
			break;
		case '<':
			memcpy(out + o, "&lt;", 4);
			o += 4;
			break;
		case '>':
			memcpy(out + o, "&gt;", 4);
			o += 4;
			break;
		default:
			out[o++] = s[i];
			break;
		}
	}
	return o;
}

static size_t
put(char *out, const char *s)
{
	size_t n = strlen(s);

	memcpy(out, s, n);
	return n;
}

char *
chatmsg_inner(const char *body, const char *xhtml, size_t *len)
{
	static const char html_open[] = "<html xmlns=\"" NS_XHTML_IM
					"\"><body xmlns=\"" NS_XHTML
					"\"><font>";
	size_t blen = strlen(body), o = 0, cap;
	const char *p, *nl;
	char *out;

	/* Every byte escaped at most 5-fold, twice; a newline gives <br/>. */
	cap = 2 * 5 * blen + sizeof(html_open) + 64 +
	    (xhtml != NULL ? strlen(xhtml) : 0);
	out = xmalloc(cap);
	o += put(out + o, "<body>");
	o += escape(out + o, body, blen);
	o += put(out + o, "</body>");
	if (xhtml != NULL)
		o += put(out + o, xhtml);
	else {
		o += put(out + o, html_open);
		for (p = body; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
			o += escape(out + o, p, (size_t)(nl - p));
			o += put(out + o, "<br/>");
		}
		o += escape(out + o, p, strlen(p));
		o += put(out + o, "</font></body></html>");
	}
	out[o] = '\0';
	*len = o;
	return out;
}

char *
chatmsg_xhtml(xmpp_ctx_t *ctx, xmpp_stanza_t *html)
{
	xmpp_stanza_t *body, *c, *out, *obody, *font;
	char *buf = NULL, *clean = NULL;
	size_t len;

	body = html != NULL ? stanza_child(html, "body", NS_XHTML) : NULL;
	if (body == NULL)
		return NULL;
	out = xmpp_stanza_new(ctx);
	xmpp_stanza_set_name(out, "html");
	xmpp_stanza_set_ns(out, NS_XHTML_IM);
	obody = stanza_add_child(out, "body", NS_XHTML);
	font = stanza_add_child(obody, "font", NULL);
	for (c = xmpp_stanza_get_children(body); c != NULL;
	     c = xmpp_stanza_get_next(c))
		xmpp_stanza_add_child_ex(font, xmpp_stanza_copy(c), 0);
	if (xmpp_stanza_to_text(out, &buf, &len) == XMPP_EOK) {
		clean = chatmsg_clean(buf);
		xmpp_free(ctx, buf);
	}
	xmpp_stanza_release(out);
	return clean;
}
