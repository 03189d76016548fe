/* The local Yggdrasil node: its address and routed /64, found or configured; per-user addresses. */
#ifndef BG_YGG_H
#define BG_YGG_H

#include <netinet/in.h>
#include <stddef.h>

struct conf;

struct ygg_node {
	int have_addr;
	struct in6_addr addr; /* in 200::/8 */
	int have_subnet;
	struct in6_addr subnet; /* the /64 prefix in 300::/8, low half zero */
	char source[256]; /* where they came from, for people */
};

/* The address and subnet in a getSelf answer (JSON). 0 or -1 + cause. */
int ygg_parse_self(
    const char *json, size_t len, struct ygg_node *out, const char **cause);
/* Asks the admin socket at path, waiting at most timeout seconds. */
int ygg_query_admin(
    const char *path, double timeout, struct ygg_node *out, char **cause);
/* The first 200::/8 address of a local interface, and its /64. */
int ygg_from_interfaces(struct ygg_node *out, char **cause);
/* A node's routed /64: its address's first half with 0x02 made 0x03. */
void ygg_subnet_of(const struct in6_addr *addr, struct in6_addr *subnet);
int ygg_in_subnet(const struct in6_addr *subnet, const struct in6_addr *a);
/*
 * The address of a user in subnet: the low half from SHA-256 of the bare
 * JID and attempt (try the next attempt on a collision). Stable for ever.
 */
void ygg_user_address(const struct in6_addr *subnet, const char *bare_jid,
    unsigned attempt, struct in6_addr *out);
/*
 * What the configuration needs, from the configuration, the admin socket
 * or the interfaces. -1 + one line (what was tried, what to do) if the
 * address mode cannot work; *out is filled as far as found either way.
 */
int ygg_resolve(const struct conf *conf, struct ygg_node *out, char **cause);
/*
 * Whether an address of subnet can be bound and reached here, i.e. the
 * AnyIP route exists. -1 + cause naming the command that adds it.
 */
int ygg_check_anyip(const struct in6_addr *subnet, char **cause);

#endif
