#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "service.h"
#include "stanza.h"
#include "xmalloc.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_VERSION "jabber:iq:version"
#define NS_PING "urn:xmpp:ping"

struct service {
	char *jid;
	struct service_out out;
	const char *const *extra;
};

typedef void (*iq_fn)(
    struct service *, xmpp_stanza_t *iq, xmpp_stanza_t *payload);

/* Features we advertise are exactly the ones this table answers. */
struct iq_handler {
	const char *type;
	const char *ns;
	iq_fn fn;
};

static void iq_disco_info(struct service *, xmpp_stanza_t *, xmpp_stanza_t *);
static void iq_disco_items(struct service *, xmpp_stanza_t *, xmpp_stanza_t *);
static void iq_version(struct service *, xmpp_stanza_t *, xmpp_stanza_t *);
static void iq_ping(struct service *, xmpp_stanza_t *, xmpp_stanza_t *);

static const struct iq_handler iq_handlers[] = {
	{ "get", NS_DISCO_INFO, iq_disco_info },
	{ "get", NS_DISCO_ITEMS, iq_disco_items },
	{ "get", NS_VERSION, iq_version },
	{ "get", NS_PING, iq_ping },
};
#define NHANDLERS (sizeof(iq_handlers) / sizeof(iq_handlers[0]))

struct service *
service_new(
    const char *jid, const struct service_out *out, const char *const *extra)
{
	struct service *s = xcalloc(1, sizeof(*s));

	s->jid = xstrdup(jid);
	s->out = *out;
	s->extra = extra;
	return s;
}

void
service_free(struct service *s)
{
	if (s == NULL)
		return;
	free(s->jid);
	free(s);
}

/* Sends and releases r; its from is always our JID (ejabberd insists on one). */
static void
send_reply(struct service *s, xmpp_stanza_t *r)
{
	xmpp_stanza_set_from(r, s->jid);
	if (s->out.send(s->out.arg, r) == -1)
		log_debug("service: reply dropped, link down");
	xmpp_stanza_release(r);
}

static void
send_error(struct service *s, xmpp_stanza_t *st, const char *type,
    const char *condition, const char *text)
{
	const char *from = xmpp_stanza_get_from(st);

	log_debug("service: %s error=%s from=%s", xmpp_stanza_get_name(st),
	    condition, from ? from : "-");
	send_reply(s, stanza_error_reply(st, type, condition, text));
}

static xmpp_stanza_t *
result_with(xmpp_stanza_t *iq, const char *name, const char *ns)
{
	xmpp_stanza_t *r = stanza_reply(iq, "result");

	if (name != NULL)
		stanza_add_child(r, name, ns);
	return r;
}

static void
iq_disco_info(struct service *s, xmpp_stanza_t *iq, xmpp_stanza_t *q)
{
	xmpp_stanza_t *r, *query, *ident, *feat;
	size_t i;

	/* Nodes (ad-hoc commands and the like) are not offered yet. */
	if (xmpp_stanza_get_attribute(q, "node") != NULL) {
		send_error(s, iq, "cancel", "item-not-found", NULL);
		return;
	}
	r = result_with(iq, "query", NS_DISCO_INFO);
	query = xmpp_stanza_get_children(r);
	ident = stanza_add_child(query, "identity", NULL);
	xmpp_stanza_set_attribute(ident, "category", "gateway");
	xmpp_stanza_set_attribute(ident, "type", "barev");
	xmpp_stanza_set_attribute(ident, "name", "Barev gateway");
	feat = stanza_add_child(query, "feature", NULL);
	xmpp_stanza_set_attribute(feat, "var", NS_DISCO_INFO);
	for (i = 0; i < NHANDLERS; i++) {
		if (strcmp(iq_handlers[i].ns, NS_DISCO_INFO) == 0)
			continue;
		feat = stanza_add_child(query, "feature", NULL);
		xmpp_stanza_set_attribute(feat, "var", iq_handlers[i].ns);
	}
	for (i = 0; s->extra != NULL && s->extra[i] != NULL; i++) {
		feat = stanza_add_child(query, "feature", NULL);
		xmpp_stanza_set_attribute(feat, "var", s->extra[i]);
	}
	send_reply(s, r);
}

static void
iq_disco_items(struct service *s, xmpp_stanza_t *iq, xmpp_stanza_t *q)
{
	if (xmpp_stanza_get_attribute(q, "node") != NULL) {
		send_error(s, iq, "cancel", "item-not-found", NULL);
		return;
	}
	send_reply(s, result_with(iq, "query", NS_DISCO_ITEMS));
}

static void
iq_version(struct service *s, xmpp_stanza_t *iq, xmpp_stanza_t *q)
{
	xmpp_stanza_t *r = result_with(iq, "query", NS_VERSION);
	xmpp_stanza_t *query = xmpp_stanza_get_children(r);

	/* No <os/>: it tells attackers more than it tells users. */
	stanza_add_text_child(query, "name", PACKAGE_NAME);
	stanza_add_text_child(query, "version", PACKAGE_VERSION);
	send_reply(s, r);
}

static void
iq_ping(struct service *s, xmpp_stanza_t *iq, xmpp_stanza_t *q)
{
	send_reply(s, result_with(iq, NULL, NULL));
}

static void
handle_iq(struct service *s, xmpp_stanza_t *iq, int to_gateway)
{
	const char *type = xmpp_stanza_get_type(iq);
	xmpp_stanza_t *payload;
	const char *ns;
	size_t i;

	if (type == NULL ||
	    (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
		return; /* results and errors are never answered */
	if (xmpp_stanza_get_id(iq) == NULL) {
		send_error(s, iq, "modify", "bad-request", "iq without id");
		return;
	}
	payload = stanza_first_tag(iq);
	ns = payload ? xmpp_stanza_get_ns(payload) : NULL;
	if (to_gateway && ns != NULL) {
		for (i = 0; i < NHANDLERS; i++) {
			if (strcmp(iq_handlers[i].type, type) == 0 &&
			    strcmp(iq_handlers[i].ns, ns) == 0) {
				iq_handlers[i].fn(s, iq, payload);
				return;
			}
		}
	}
	send_error(s, iq, "cancel", "service-unavailable", NULL);
}

/* Whether jid names the gateway itself (no localpart), resource allowed. */
static int
is_gateway_jid(const struct service *s, const char *jid)
{
	size_t len = strlen(s->jid);

	return strncasecmp(jid, s->jid, len) == 0 &&
	    (jid[len] == '\0' || jid[len] == '/');
}

void
service_handle(struct service *s, xmpp_stanza_t *st)
{
	const char *name = xmpp_stanza_get_name(st);
	const char *to = xmpp_stanza_get_to(st);
	const char *type = xmpp_stanza_get_type(st);
	int to_gateway;

	if (name == NULL || to == NULL || xmpp_stanza_get_from(st) == NULL) {
		log_debug("service: dropped stanza without name, to or from");
		return;
	}
	to_gateway = is_gateway_jid(s, to);
	if (strcmp(name, "iq") == 0) {
		handle_iq(s, st, to_gateway);
		return;
	}
	if (strcmp(name, "message") == 0) {
		if (type != NULL && strcmp(type, "error") == 0)
			return;
		send_error(s, st, "cancel", "service-unavailable",
		    to_gateway ? "This gateway takes no messages itself."
			       : "No such Barev contact on this gateway.");
		return;
	}
	/* Presence: nothing to track yet, and errors to presence help nobody. */
	log_debug("service: ignored %s to=%s", name, to);
}
