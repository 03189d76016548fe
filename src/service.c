#include "config.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "service.h"
#include "stanza.h"
#include "xmalloc.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_VERSION "jabber:iq:version"
#define NS_PING "urn:xmpp:ping"
#define NS_TIME "urn:xmpp:time"
#define NS_VCARD "vcard-temp"
#define NS_CAPS "http://jabber.org/protocol/caps"

struct entity;

typedef void (*iq_fn)(struct service *, const struct entity *,
    xmpp_stanza_t *iq, xmpp_stanza_t *payload);

/* Features we advertise are exactly the ones these tables answer. */
struct iq_handler {
	const char *type;
	const char *ns;
	iq_fn fn;
};

/* What one kind of JID is (XEP-0030) and its XEP-0115 hash of that. */
struct entity {
	const char *category;
	const char *type;
	const char *name;
	const struct iq_handler *handlers;
	size_t nhandlers;
	const char **features; /* sorted: handlers' and extras' namespaces */
	size_t nfeatures;
	char ver[EVP_ENCODE_LENGTH(SHA_DIGEST_LENGTH) + 1];
};

struct service {
	char *jid;
	struct service_out out;
	struct entity e[2]; /* enum service_entity */
};

static void iq_disco_info(
    struct service *, const struct entity *, xmpp_stanza_t *, xmpp_stanza_t *);
static void iq_disco_items(
    struct service *, const struct entity *, xmpp_stanza_t *, xmpp_stanza_t *);
static void iq_version(
    struct service *, const struct entity *, xmpp_stanza_t *, xmpp_stanza_t *);
static void iq_ping(
    struct service *, const struct entity *, xmpp_stanza_t *, xmpp_stanza_t *);
static void iq_time(
    struct service *, const struct entity *, xmpp_stanza_t *, xmpp_stanza_t *);
static void iq_vcard(
    struct service *, const struct entity *, xmpp_stanza_t *, xmpp_stanza_t *);

static const struct iq_handler gateway_handlers[] = {
	{ "get", NS_DISCO_INFO, iq_disco_info },
	{ "get", NS_DISCO_ITEMS, iq_disco_items },
	{ "get", NS_VERSION, iq_version },
	{ "get", NS_PING, iq_ping },
	{ "get", NS_TIME, iq_time },
	{ "get", NS_VCARD, iq_vcard },
};

/*
 * A contact JID stands for a Barev peer, which answers no queries (the
 * reference client never answers disco): only what the gateway knows of
 * it on its behalf.
 */
static const struct iq_handler contact_handlers[] = {
	{ "get", NS_DISCO_INFO, iq_disco_info },
};

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* XEP-0115 5.1: SHA-1 of "category/type//name<" and each "feature<", base64. */
static void
entity_hash(struct entity *e)
{
	unsigned char md[SHA_DIGEST_LENGTH];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t i;

	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1)
		fatalx("service: cannot hash the capabilities");
	EVP_DigestUpdate(ctx, e->category, strlen(e->category));
	EVP_DigestUpdate(ctx, "/", 1);
	EVP_DigestUpdate(ctx, e->type, strlen(e->type));
	EVP_DigestUpdate(ctx, "//", 2);
	EVP_DigestUpdate(ctx, e->name, strlen(e->name));
	EVP_DigestUpdate(ctx, "<", 1);
	for (i = 0; i < e->nfeatures; i++) {
		EVP_DigestUpdate(ctx, e->features[i], strlen(e->features[i]));
		EVP_DigestUpdate(ctx, "<", 1);
	}
	if (EVP_DigestFinal_ex(ctx, md, NULL) != 1)
		fatalx("service: cannot hash the capabilities");
	EVP_MD_CTX_free(ctx);
	EVP_EncodeBlock((unsigned char *)e->ver, md, sizeof(md));
}

static void
entity_init(struct entity *e, const char *category, const char *type,
    const char *name, const struct iq_handler *h, size_t nh,
    const char *const *extra)
{
	size_t i, n = 0;

	e->category = category;
	e->type = type;
	e->name = name;
	e->handlers = h;
	e->nhandlers = nh;
	for (i = 0; extra != NULL && extra[i] != NULL; i++)
		n++;
	e->features = xcalloc(nh + n, sizeof(*e->features));
	for (i = 0; i < nh; i++)
		e->features[e->nfeatures++] = h[i].ns;
	for (i = 0; i < n; i++)
		e->features[e->nfeatures++] = extra[i];
	qsort(e->features, e->nfeatures, sizeof(*e->features), cmp_str);
	entity_hash(e);
}

struct service *
service_new(const char *jid, const struct service_out *out,
    const char *const *extra, const char *const *contact_extra)
{
	struct service *s = xcalloc(1, sizeof(*s));

	s->jid = xstrdup(jid);
	s->out = *out;
	entity_init(&s->e[SERVICE_GATEWAY], "gateway", "barev", "Barev gateway",
	    gateway_handlers, nitems(gateway_handlers), extra);
	entity_init(&s->e[SERVICE_CONTACT], "client", "pc", "Barev contact",
	    contact_handlers, nitems(contact_handlers), contact_extra);
	return s;
}

void
service_free(struct service *s)
{
	if (s == NULL)
		return;
	free(s->e[SERVICE_GATEWAY].features);
	free(s->e[SERVICE_CONTACT].features);
	free(s->jid);
	free(s);
}

void
service_caps(
    const struct service *s, enum service_entity which, xmpp_stanza_t *pres)
{
	xmpp_stanza_t *c = stanza_add_child(pres, "c", NS_CAPS);

	xmpp_stanza_set_attribute(c, "hash", "sha-1");
	xmpp_stanza_set_attribute(c, "node", SERVICE_CAPS_NODE);
	xmpp_stanza_set_attribute(c, "ver", s->e[which].ver);
}

/* Sends and releases r: from the JID asked (stanza_reply), never a bare domain for a contact. */
static void
send_reply(struct service *s, xmpp_stanza_t *r)
{
	/* ejabberd closes the link on a stanza without from. */
	if (xmpp_stanza_get_from(r) == NULL)
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

/* Whether node is none, or the XEP-0115 node#ver of our hash (5.4). */
static int
caps_node_ok(const struct entity *e, const char *node)
{
	size_t len = strlen(SERVICE_CAPS_NODE);

	return node == NULL ||
	    (strncmp(node, SERVICE_CAPS_NODE, len) == 0 && node[len] == '#' &&
		strcmp(node + len + 1, e->ver) == 0);
}

static void
iq_disco_info(struct service *s, const struct entity *e, xmpp_stanza_t *iq,
    xmpp_stanza_t *q)
{
	const char *node = xmpp_stanza_get_attribute(q, "node");
	xmpp_stanza_t *r, *query, *ident, *feat;
	size_t i;

	/* Ad-hoc command nodes are the bridge's; nothing else has nodes. */
	if (!caps_node_ok(e, node)) {
		send_error(s, iq, "cancel", "item-not-found", NULL);
		return;
	}
	r = result_with(iq, "query", NS_DISCO_INFO);
	query = xmpp_stanza_get_children(r);
	if (node != NULL)
		xmpp_stanza_set_attribute(query, "node", node);
	ident = stanza_add_child(query, "identity", NULL);
	xmpp_stanza_set_attribute(ident, "category", e->category);
	xmpp_stanza_set_attribute(ident, "type", e->type);
	xmpp_stanza_set_attribute(ident, "name", e->name);
	for (i = 0; i < e->nfeatures; i++) {
		feat = stanza_add_child(query, "feature", NULL);
		xmpp_stanza_set_attribute(feat, "var", e->features[i]);
	}
	send_reply(s, r);
}

static void
iq_disco_items(struct service *s, const struct entity *e, xmpp_stanza_t *iq,
    xmpp_stanza_t *q)
{
	if (xmpp_stanza_get_attribute(q, "node") != NULL) {
		send_error(s, iq, "cancel", "item-not-found", NULL);
		return;
	}
	send_reply(s, result_with(iq, "query", NS_DISCO_ITEMS));
}

static void
iq_version(struct service *s, const struct entity *e, xmpp_stanza_t *iq,
    xmpp_stanza_t *q)
{
	xmpp_stanza_t *r = result_with(iq, "query", NS_VERSION);
	xmpp_stanza_t *query = xmpp_stanza_get_children(r);

	/* No <os/>: it tells attackers more than it tells users. */
	stanza_add_text_child(query, "name", PACKAGE_NAME);
	stanza_add_text_child(query, "version", PACKAGE_VERSION);
	send_reply(s, r);
}

static void
iq_ping(struct service *s, const struct entity *e, xmpp_stanza_t *iq,
    xmpp_stanza_t *q)
{
	send_reply(s, result_with(iq, NULL, NULL));
}

/* XEP-0202 in UTC: the clock is the user's business, where it stands is not. */
static void
iq_time(struct service *s, const struct entity *e, xmpp_stanza_t *iq,
    xmpp_stanza_t *q)
{
	xmpp_stanza_t *r = result_with(iq, "time", NS_TIME);
	xmpp_stanza_t *t = xmpp_stanza_get_children(r);
	time_t now = time(NULL);
	struct tm tm;
	char utc[32];

	gmtime_r(&now, &tm);
	strftime(utc, sizeof(utc), "%Y-%m-%dT%H:%M:%SZ", &tm);
	stanza_add_text_child(t, "tzo", "+00:00");
	stanza_add_text_child(t, "utc", utc);
	send_reply(s, r);
}

static void
iq_vcard(struct service *s, const struct entity *e, xmpp_stanza_t *iq,
    xmpp_stanza_t *q)
{
	xmpp_stanza_t *r = result_with(iq, "vCard", NS_VCARD);
	xmpp_stanza_t *v = xmpp_stanza_get_children(r);

	stanza_add_text_child(v, "FN", "Barev gateway");
	stanza_add_text_child(v, "DESC",
	    "A gateway to Barev, the serverless chat of the Yggdrasil "
	    "network. Register with it to get a Barev address, then add "
	    "Barev contacts through it.");
	send_reply(s, r);
}

static void
handle_iq(struct service *s, xmpp_stanza_t *iq, const struct entity *e)
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
	for (i = 0; ns != NULL && i < e->nhandlers; i++) {
		if (strcmp(e->handlers[i].type, type) == 0 &&
		    strcmp(e->handlers[i].ns, ns) == 0) {
			e->handlers[i].fn(s, e, iq, payload);
			return;
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
		handle_iq(s, st,
		    &s->e[to_gateway ? SERVICE_GATEWAY : SERVICE_CONTACT]);
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
