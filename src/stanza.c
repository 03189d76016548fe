#include "config.h"

#include <string.h>

#include "stanza.h"
#include "xmalloc.h"

xmpp_stanza_t *
stanza_first_tag(xmpp_stanza_t *parent)
{
	xmpp_stanza_t *c;

	for (c = xmpp_stanza_get_children(parent); c != NULL;
	     c = xmpp_stanza_get_next(c))
		if (xmpp_stanza_is_tag(c))
			return c;
	return NULL;
}

char *
stanza_child_text(xmpp_stanza_t *parent, const char *name, const char *ns)
{
	xmpp_stanza_t *c = stanza_child(parent, name, ns);
	char *t, *copy;

	if (c == NULL || (t = xmpp_stanza_get_text(c)) == NULL)
		return NULL;
	copy = xstrdup(t);
	xmpp_free(xmpp_stanza_get_context(parent), t);
	return copy;
}

xmpp_stanza_t *
stanza_child(xmpp_stanza_t *parent, const char *name, const char *ns)
{
	xmpp_stanza_t *c;
	const char *cns;

	for (c = xmpp_stanza_get_children(parent); c != NULL;
	     c = xmpp_stanza_get_next(c)) {
		if (!xmpp_stanza_is_tag(c) ||
		    strcmp(xmpp_stanza_get_name(c), name) != 0)
			continue;
		cns = xmpp_stanza_get_ns(c);
		if (ns == NULL || (cns != NULL && strcmp(cns, ns) == 0))
			return c;
	}
	return NULL;
}

xmpp_stanza_t *
stanza_reply(xmpp_stanza_t *s, const char *type)
{
	xmpp_ctx_t *ctx = xmpp_stanza_get_context(s);
	xmpp_stanza_t *r = xmpp_stanza_new(ctx);
	const char *v;

	xmpp_stanza_set_name(r, xmpp_stanza_get_name(s));
	if ((v = xmpp_stanza_get_id(s)) != NULL)
		xmpp_stanza_set_id(r, v);
	if ((v = xmpp_stanza_get_to(s)) != NULL)
		xmpp_stanza_set_from(r, v);
	if ((v = xmpp_stanza_get_from(s)) != NULL)
		xmpp_stanza_set_to(r, v);
	if (type != NULL)
		xmpp_stanza_set_type(r, type);
	return r;
}

xmpp_stanza_t *
stanza_add_child(xmpp_stanza_t *parent, const char *name, const char *ns)
{
	xmpp_stanza_t *c = xmpp_stanza_new(xmpp_stanza_get_context(parent));

	xmpp_stanza_set_name(c, name);
	if (ns != NULL)
		xmpp_stanza_set_ns(c, ns);
	xmpp_stanza_add_child_ex(parent, c, 0);
	return c;
}

void
stanza_add_text(xmpp_stanza_t *parent, const char *text)
{
	xmpp_stanza_t *t = xmpp_stanza_new(xmpp_stanza_get_context(parent));

	xmpp_stanza_set_text(t, text);
	xmpp_stanza_add_child_ex(parent, t, 0);
}

void
stanza_add_text_child(xmpp_stanza_t *parent, const char *name, const char *text)
{
	stanza_add_text(stanza_add_child(parent, name, NULL), text);
}

xmpp_stanza_t *
stanza_error_reply(
    xmpp_stanza_t *s, const char *type, const char *condition, const char *text)
{
	xmpp_stanza_t *r = stanza_reply(s, "error");
	xmpp_stanza_t *err, *c;

	/* RFC 6120 8.3.1: an error reply may include the original payload; we do not. */
	err = stanza_add_child(r, "error", NULL);
	xmpp_stanza_set_type(err, type);
	stanza_add_child(err, condition, NS_STANZAS);
	if (text != NULL) {
		c = stanza_add_child(err, "text", NS_STANZAS);
		xmpp_stanza_set_attribute(c, "xml:lang", "en");
		stanza_add_text(c, text);
	}
	return r;
}
