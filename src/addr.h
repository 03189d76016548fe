/* IPv6 addresses as Barev uses them: parse any textual form, emit RFC 5952 only. */
#ifndef BG_ADDR_H
#define BG_ADDR_H

#include <netinet/in.h>
#include <stdint.h>

#define ADDR_STRLEN INET6_ADDRSTRLEN

/* Any textual IPv6 form (long, short, upper case, optional [brackets]). 0 or -1. */
int addr_parse(const char *s, struct in6_addr *out);
/* RFC 5952 canonical text into buf (ADDR_STRLEN bytes); returns buf. */
const char *addr_format(const struct in6_addr *a, char *buf);
int addr_equal(const struct in6_addr *a, const struct in6_addr *b);
/* Inside 200::/7, which holds Yggdrasil node addresses (200::/8) and subnets (300::/8). */
int addr_is_yggdrasil(const struct in6_addr *a);
/* "[addr]:port", "addr" (with default_port) or ":port"/"port" (any address); port 0 = any free port. 0 or -1 + cause. */
int addr_parse_listen(const char *s, uint16_t default_port,
    struct in6_addr *addr, uint16_t *port, const char **cause);

#endif
