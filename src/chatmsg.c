#include "config.h"

#include <stdlib.h>
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

/* A new <html/> in the XHTML-IM namespace; *body is its XHTML <body/>. */
static xmpp_stanza_t *
new_xhtml_im(xmpp_ctx_t *ctx, xmpp_stanza_t **body)
{
	xmpp_stanza_t *html = xmpp_stanza_new(ctx);

	xmpp_stanza_set_name(html, "html");
	xmpp_stanza_set_ns(html, NS_XHTML_IM);
	*body = stanza_add_child(html, "body", NS_XHTML);
	return html;
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
	out = new_xhtml_im(ctx, &obody);
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

/* Elements kept, with what they become. */
static const char *const kept_elements[][2] = {
	{ "p", "p" },
	{ "br", "br" },
	{ "span", "span" },
	{ "strong", "strong" },
	{ "b", "strong" },
	{ "em", "em" },
	{ "i", "em" },
	{ "blockquote", "blockquote" },
	{ "cite", "cite" },
	{ "code", "code" },
	{ "pre", "pre" },
	{ "q", "q" },
	{ "ul", "ul" },
	{ "ol", "ol" },
	{ "li", "li" },
};

/* Elements whose text is code, not message: dropped with everything in them. */
static const char *const dropped_elements[] = { "script", "style", "head",
	"title", "object", "embed", "iframe", "audio", "video", "svg", "math" };

/* CSS properties that cannot load anything. */
static const char *const safe_properties[] = { "color", "background-color",
	"font-weight", "font-style", "font-size", "font-family",
	"text-decoration" };

static int
in_list(const char *name, const char *const *list, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(name, list[i]) == 0)
			return 1;
	return 0;
}

/* A value that is plain words, numbers, #colours, commas, quotes and spaces. */
static int
safe_css_value(const char *v, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];

		if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
		    !(c >= '0' && c <= '9') && strchr(" #%.,-'\"", c) == NULL)
			return 0;
	}
	return len > 0;
}

/* The declarations of style whose property is safe and value plain; NULL if none. */
static char *
safe_style(const char *style)
{
	char *out = xmalloc(strlen(style) + 2), *decl, *copy, *last, *colon;
	char *prop, *val;
	size_t o = 0, plen, vlen;

	copy = xstrdup(style);
	for (decl = strtok_r(copy, ";", &last); decl != NULL;
	     decl = strtok_r(NULL, ";", &last)) {
		if ((colon = strchr(decl, ':')) == NULL)
			continue;
		*colon = '\0';
		for (prop = decl; *prop == ' '; prop++)
			;
		for (plen = strlen(prop); plen > 0 && prop[plen - 1] == ' ';)
			plen--;
		prop[plen] = '\0';
		for (val = colon + 1; *val == ' '; val++)
			;
		for (vlen = strlen(val); vlen > 0 && val[vlen - 1] == ' ';)
			vlen--;
		if (!in_list(prop, safe_properties,
			sizeof(safe_properties) / sizeof(safe_properties[0])) ||
		    !safe_css_value(val, vlen))
			continue;
		memcpy(out + o, prop, plen);
		o += plen;
		out[o++] = ':';
		memcpy(out + o, val, vlen);
		o += vlen;
		out[o++] = ';';
	}
	free(copy);
	if (o == 0) {
		free(out);
		return NULL;
	}
	out[o - 1] = '\0'; /* no trailing ';' */
	return out;
}

/* Appends to out the safe form of the children of in; returns how many it appended. */
static size_t
safe_children(xmpp_ctx_t *ctx, xmpp_stanza_t *out, xmpp_stanza_t *in)
{
	xmpp_stanza_t *c, *e;
	const char *name, *style;
	char *text, *css;
	size_t i, n = 0;

	for (c = xmpp_stanza_get_children(in); c != NULL;
	     c = xmpp_stanza_get_next(c)) {
		if (xmpp_stanza_is_text(c)) {
			text = xmpp_stanza_get_text(c);
			if (text != NULL && *text != '\0') {
				stanza_add_text(out, text);
				n++;
			}
			xmpp_free(ctx, text);
			continue;
		}
		if ((name = xmpp_stanza_get_name(c)) == NULL ||
		    in_list(name, dropped_elements,
			sizeof(dropped_elements) / sizeof(dropped_elements[0])))
			continue;
		for (i = 0;
		     i < sizeof(kept_elements) / sizeof(kept_elements[0]); i++)
			if (strcmp(name, kept_elements[i][0]) == 0)
				break;
		if (i == sizeof(kept_elements) / sizeof(kept_elements[0])) {
			/* A link or an unknown element gives its text. */
			n += safe_children(ctx, out, c);
			continue;
		}
		e = stanza_add_child(out, kept_elements[i][1], NULL);
		if ((style = xmpp_stanza_get_attribute(c, "style")) != NULL &&
		    (css = safe_style(style)) != NULL) {
			xmpp_stanza_set_attribute(e, "style", css);
			free(css);
		}
		safe_children(ctx, e, c);
		n++;
	}
	return n;
}

xmpp_stanza_t *
chatmsg_safe_xhtml(xmpp_ctx_t *ctx, xmpp_stanza_t *html)
{
	xmpp_stanza_t *body, *out, *obody;

	body = html != NULL ? stanza_child(html, "body", NULL) : NULL;
	if (body == NULL)
		return NULL;
	out = new_xhtml_im(ctx, &obody);
	if (safe_children(ctx, obody, body) == 0) {
		xmpp_stanza_release(out);
		return NULL;
	}
	return out;
}
