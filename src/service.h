/* What the gateway JID itself answers: disco, version, ping; errors for the rest. */
#ifndef BG_SERVICE_H
#define BG_SERVICE_H

#include <strophe.h>

struct service;

/* How the service reaches the XMPP server; a fake in tests. */
struct service_out {
	int (*send)(void *arg, xmpp_stanza_t *stanza);
	void *arg;
};

/* extra: more features to advertise (answered elsewhere), NULL-terminated, may be NULL. */
struct service *service_new(
    const char *jid, const struct service_out *out, const char *const *extra);
void service_free(struct service *s);
/* Handles one stanza from the server (borrowed). */
void service_handle(struct service *s, xmpp_stanza_t *stanza);

#endif
