/* The XEP-0114 link to the XMPP server: libstrophe driven by libevent, reconnecting with backoff. */
#ifndef BG_COMPONENT_H
#define BG_COMPONENT_H

#include <event2/event.h>
#include <strophe.h>

struct conf;
struct component;

struct component_cb {
	void (*up)(void *arg);
	void (*down)(void *arg);
	/* Every stanza the server routes to us; borrowed for the call. */
	void (*stanza)(void *arg, xmpp_stanza_t *stanza);
};

struct component *component_new(struct event_base *base,
    const struct conf *conf, const struct component_cb *cb, void *arg);
void component_free(struct component *c);
/* Takes the reloadable settings (backoff) from a new configuration. */
void component_set_conf(struct component *c, const struct conf *conf);
void component_start(struct component *c);
/* Closes the stream; done runs once the server saw it go, or after a bounded wait. */
void component_shutdown(struct component *c, void (*done)(void *), void *arg);

int component_is_up(const struct component *c);
/* The domain we serve, e.g. barev.example.org. */
const char *component_jid(const struct component *c);
xmpp_ctx_t *component_ctx(const struct component *c);
/* Queues a stanza (borrowed) for the server; -1 while the link is down. */
int component_send(struct component *c, xmpp_stanza_t *stanza);

#endif
