#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int
addr_parse(const char *s, struct in6_addr *out)
{
	char buf[ADDR_STRLEN + 2];
	size_t len = strlen(s);

	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		s++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

const char *
addr_format(const struct in6_addr *a, char *buf)
{
	/* glibc's inet_ntop already follows RFC 5952 (tests/unit/test_jid.c checks). */
	if (inet_ntop(AF_INET6, a, buf, ADDR_STRLEN) == NULL)
		buf[0] = '\0';
	return buf;
}

int
addr_equal(const struct in6_addr *a, const struct in6_addr *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

int
addr_is_yggdrasil(const struct in6_addr *a)
{
	return (a->s6_addr[0] & 0xfe) == 0x02;
}

static int
parse_port(const char *s, uint16_t *port)
{
	char *end;
	long v;

	if (*s == '\0' || !isdigit((unsigned char)*s))
		return -1;
	v = strtol(s, &end, 10);
	if (*end != '\0' || v < 0 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

int
addr_parse_listen(const char *s, uint16_t default_port, struct in6_addr *addr,
    uint16_t *port, const char **cause)
{
	const char *close;
	char host[ADDR_STRLEN + 2];
	size_t hlen;

	*port = default_port;
	*addr = in6addr_any;
	if (s[0] == '[') {
		close = strchr(s, ']');
		if (close == NULL) {
			*cause = "missing ']' after the address";
			return -1;
		}
		hlen = (size_t)(close - s - 1);
		if (close[1] == ':') {
			if (parse_port(close + 2, port) == -1) {
				*cause = "port must be a number from 0 (any "
					 "free port) to 65535";
				return -1;
			}
		} else if (close[1] != '\0') {
			*cause = "expected ':port' after ']'";
			return -1;
		}
		s++;
	} else if (s[0] == ':' && s[1] != ':') {
		if (parse_port(s + 1, port) == -1) {
			*cause = "port must be a number from 0 (any free port) "
				 "to 65535";
			return -1;
		}
		return 0;
	} else if (strchr(s, ':') == NULL) {
		if (parse_port(s, port) == -1) {
			*cause = "expected \"[address]:port\", \"address\" or "
				 "a port";
			return -1;
		}
		return 0;
	} else
		hlen = strlen(s);
	if (hlen == 0 || hlen >= sizeof(host)) {
		*cause = "not an IPv6 address";
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET6, host, addr) != 1) {
		*cause = "not an IPv6 address";
		return -1;
	}
	return 0;
}
