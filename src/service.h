/*
 * What the gateway JID answers (disco, version, ping, time, vCard) and what
 * a contact JID answers on its peer's behalf (disco); errors for the rest,
 * each from the JID asked. XEP-0115 capabilities of both.
 */
#ifndef BG_SERVICE_H
#define BG_SERVICE_H

#include <strophe.h>

struct service;

/* How the service reaches the XMPP server; a fake in tests. */
struct service_out {
	int (*send)(void *arg, xmpp_stanza_t *stanza);
	void *arg;
};

/* The XEP-0115 node of our capabilities. */
#define SERVICE_CAPS_NODE "urn:x-barev-gateway"

enum service_entity {
	SERVICE_GATEWAY, /* the gateway's own JID */
	SERVICE_CONTACT, /* a Barev contact's JID on the gateway */
};

/*
 * extra, contact_extra: more features of the gateway and of contacts
 * (answered elsewhere), NULL-terminated, may be NULL; borrowed for good.
 */
struct service *service_new(const char *jid, const struct service_out *out,
    const char *const *extra, const char *const *contact_extra);
void service_free(struct service *s);
/* Handles one stanza from the server (borrowed). */
void service_handle(struct service *s, xmpp_stanza_t *stanza);
/* Appends the XEP-0115 <c/> of which to an available presence. */
void service_caps(const struct service *s, enum service_entity which,
    xmpp_stanza_t *presence);

#endif
