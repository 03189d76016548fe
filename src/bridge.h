/* Translation and routing between XMPP users and their Barev contacts. */
#ifndef BG_BRIDGE_H
#define BG_BRIDGE_H

#include <event2/event.h>
#include <strophe.h>

#include "barev.h"
#include "service.h"

struct conf;
struct store;
struct ygg_node;
struct bridge;

/* The two networks as the bridge sees them; fakes in tests. */
struct bridge_net {
	int (*xmpp_send)(void *arg, xmpp_stanza_t *stanza);
	/* port 0: the network's default, as configured when it dials. */
	void (*want)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote, unsigned short port);
	void (*unwant)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote);
	int (*send)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote, xmpp_stanza_t *stanza);
	int (*send_chat)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote, const char *inner, size_t len,
	    uint64_t token);
	int (*is_up)(void *arg, const struct barev_jid *local,
	    const struct barev_jid *remote);
	/* Appends the XEP-0115 caps of which to an available presence. */
	void (*caps)(
	    void *arg, enum service_entity which, xmpp_stanza_t *presence);
	void *xmpp_arg;
	void *barev_arg;
	void *caps_arg;
};

/* Loads users and contacts from the store; NULL + *cause on failure. */
struct bridge *bridge_new(struct event_base *base, xmpp_ctx_t *ctx,
    const struct conf *conf, const struct ygg_node *node, struct store *store,
    const struct bridge_net *net, char **cause);
void bridge_free(struct bridge *b);
void bridge_set_conf(struct bridge *b, const struct conf *conf);

/* A stanza from the XMPP server. 0 if the bridge took it, -1 if not ours. */
int bridge_xmpp(struct bridge *b, xmpp_stanza_t *stanza);
/* The component link is up: ask the server for every user's presence. */
void bridge_link_up(struct bridge *b);
/* The link is down: users are offline towards Barev; messages to them wait. */
void bridge_link_down(struct bridge *b);
/* The gateway is stopping: registered users see it go offline. */
void bridge_shutdown(struct bridge *b);
/* Features the gateway JID offers because of the bridge (disco#info). */
extern const char *const bridge_features[];
/* Features a contact JID offers because the bridge carries them. */
extern const char *const bridge_contact_features[];

/* The engine's callbacks; their arg is the bridge. */
extern const struct barev_cb bridge_barev_cb;

#endif
