#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "clock.h"
#include "conf.h"
#include "xmalloc.h"
#include "ygg.h"

#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif

/* A getSelf answer is a few hundred bytes; anything far larger is not one. */
#define ADMIN_MAX 65536

/*
 * The string value of "key" anywhere in json. getSelf's keys are unique
 * and its values (addresses) need no escapes, so no general parser.
 */
static int
json_string(
    const char *json, size_t len, const char *key, char *out, size_t outlen)
{
	char pattern[64];
	const char *p = json, *end = json + len, *hit;
	size_t plen, n;

	plen = (size_t)snprintf(pattern, sizeof(pattern), "\"%s\"", key);
	while ((hit = memmem(p, (size_t)(end - p), pattern, plen)) != NULL) {
		p = hit + plen;
		while (p < end &&
		    (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
			p++;
		if (p >= end || *p != ':')
			continue;
		p++;
		while (p < end &&
		    (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
			p++;
		if (p >= end || *p != '"')
			continue;
		p++;
		for (n = 0; p + n < end && p[n] != '"'; n++)
			if (p[n] == '\\' || n + 1 >= outlen)
				return -1;
		if (p + n >= end)
			return -1;
		memcpy(out, p, n);
		out[n] = '\0';
		return 0;
	}
	return -1;
}

void
ygg_subnet_of(const struct in6_addr *addr, struct in6_addr *subnet)
{
	memset(subnet, 0, sizeof(*subnet));
	memcpy(subnet->s6_addr, addr->s6_addr, 8);
	subnet->s6_addr[0] |= 0x01;
}

int
ygg_in_subnet(const struct in6_addr *subnet, const struct in6_addr *a)
{
	return memcmp(subnet->s6_addr, a->s6_addr, 8) == 0;
}

int
ygg_parse_self(
    const char *json, size_t len, struct ygg_node *out, const char **cause)
{
	char addr[ADDR_STRLEN + 8], subnet[ADDR_STRLEN + 8], *slash;

	memset(out, 0, sizeof(*out));
	if (json_string(json, len, "address", addr, sizeof(addr)) == -1 ||
	    addr_parse(addr, &out->addr) == -1 ||
	    out->addr.s6_addr[0] != 0x02) {
		*cause = "no Yggdrasil address (200::/8) in the answer";
		return -1;
	}
	out->have_addr = 1;
	if (json_string(json, len, "subnet", subnet, sizeof(subnet)) == 0 &&
	    (slash = strchr(subnet, '/')) != NULL &&
	    strcmp(slash, "/64") == 0) {
		*slash = '\0';
		if (addr_parse(subnet, &out->subnet) == 0 &&
		    out->subnet.s6_addr[0] == 0x03) {
			memset(out->subnet.s6_addr + 8, 0, 8);
			out->have_subnet = 1;
		}
	}
	if (!out->have_subnet)
		ygg_subnet_of(&out->addr, &out->subnet);
	out->have_subnet = 1;
	return 0;
}

/* Waits for events on fd until deadline; 0 when ready, -1 on timeout. */
static int
wait_fd(int fd, short events, double deadline)
{
	struct pollfd pfd = { fd, events, 0 };
	double left = deadline - clock_now();

	if (left <= 0)
		return -1;
	return poll(&pfd, 1, (int)(left * 1000) + 1) == 1 ? 0 : -1;
}

/* Runs before the event loop exists (start-up and -t): blocking with a bound is fine. */
int
ygg_query_admin(
    const char *path, double timeout, struct ygg_node *out, char **cause)
{
	static const char request[] = "{\"request\":\"getSelf\"}";
	struct sockaddr_un sun;
	double deadline = clock_now() + timeout;
	const char *why;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd = -1, ret = -1, err = 0;
	socklen_t elen = sizeof(err);

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		xasprintf(cause, "%s: path too long", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 ||
	    (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 &&
		errno != EINPROGRESS)) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (wait_fd(fd, POLLOUT, deadline) == -1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == -1 || err) {
		xasprintf(cause, "%s: %s", path,
		    err ? strerror(err) : "no answer in time");
		goto out;
	}
	if (send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL) !=
	    (ssize_t)sizeof(request) - 1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		goto out;
	}
	buf = xmalloc(ADMIN_MAX);
	for (;;) {
		if (ygg_parse_self(buf, len, out, &why) == 0) {
			snprintf(out->source, sizeof(out->source),
			    "the admin socket %s", path);
			ret = 0;
			goto out;
		}
		if (len == ADMIN_MAX || wait_fd(fd, POLLIN, deadline) == -1)
			break;
		n = recv(fd, buf + len, ADMIN_MAX - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	xasprintf(cause, "%s: %s", path, len ? why : "no answer in time");
out:
	free(buf);
	if (fd != -1)
		close(fd);
	return ret;
}

int
ygg_from_interfaces(struct ygg_node *out, char **cause)
{
	struct ifaddrs *ifs, *i;
	const struct in6_addr *a;

	memset(out, 0, sizeof(*out));
	if (getifaddrs(&ifs) == -1) {
		xasprintf(cause, "getifaddrs: %s", strerror(errno));
		return -1;
	}
	for (i = ifs; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET6)
			continue;
		a = &((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr;
		if (a->s6_addr[0] != 0x02)
			continue;
		out->addr = *a;
		out->have_addr = 1;
		ygg_subnet_of(a, &out->subnet);
		out->have_subnet = 1;
		snprintf(out->source, sizeof(out->source), "the interface %s",
		    i->ifa_name);
		break;
	}
	freeifaddrs(ifs);
	if (!out->have_addr) {
		xasprintf(cause, "no interface has an address in 200::/8");
		return -1;
	}
	return 0;
}

void
ygg_user_address(const struct in6_addr *subnet, const char *bare_jid,
    unsigned attempt, struct in6_addr *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *data;
	int len;

	len = xasprintf(
	    &data, "barev-gateway user address\n%s\n%u", bare_jid, attempt);
	if (EVP_Digest(data, (size_t)len, md, &mdlen, EVP_sha256(), NULL) != 1)
		memset(md, 0, sizeof(md));
	free(data);
	memcpy(out->s6_addr, subnet->s6_addr, 8);
	memcpy(out->s6_addr + 8, md, 8);
}

static void
fill_missing(struct ygg_node *node, const struct ygg_node *found)
{
	if (!node->have_addr && found->have_addr) {
		node->addr = found->addr;
		node->have_addr = 1;
	}
	if (!node->have_subnet && found->have_subnet) {
		node->subnet = found->subnet;
		node->have_subnet = 1;
	}
	snprintf(node->source, sizeof(node->source), "%s", found->source);
}

int
ygg_resolve(const struct conf *conf, struct ygg_node *out, char **cause)
{
	struct ygg_node found;
	char *why1 = NULL, *why2 = NULL;
	int needed;

	memset(out, 0, sizeof(*out));
	snprintf(out->source, sizeof(out->source), "the configuration");
	if (conf->barev_address_text[0] != '\0') {
		out->addr = conf->barev_address;
		out->have_addr = 1;
	}
	if (conf->barev_subnet_text[0] != '\0') {
		out->subnet = conf->barev_subnet;
		out->have_subnet = 1;
	}
	if (!out->have_addr || !out->have_subnet) {
		if (ygg_query_admin(conf->admin_socket, 2.0, &found, &why1) ==
		    0)
			fill_missing(out, &found);
		else if (ygg_from_interfaces(&found, &why2) == 0)
			fill_missing(out, &found);
	}
	if (out->have_addr && !out->have_subnet) {
		ygg_subnet_of(&out->addr, &out->subnet);
		out->have_subnet = 1;
	}
	needed = conf->per_user ? out->have_subnet : out->have_addr;
	if (!needed)
		xasprintf(cause,
		    "barev: no Yggdrasil %s found (admin socket "
		    "%s; interfaces: %s); start yggdrasil, or set barev.%s",
		    conf->per_user ? "subnet" : "address",
		    why1 ? why1 : "not asked", why2 ? why2 : "not looked at",
		    conf->per_user ? "subnet" : "address");
	free(why1);
	free(why2);
	return needed ? 0 : -1;
}

int
ygg_check_anyip(const struct in6_addr *subnet, char **cause)
{
	struct sockaddr_in6 sin6;
	socklen_t slen = sizeof(sin6);
	char text[ADDR_STRLEN];
	int l = -1, c = -1, one = 1, err = 0, ret = -1;
	socklen_t elen = sizeof(err);
	uint32_t r = arc4random();

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	memcpy(sin6.sin6_addr.s6_addr, subnet->s6_addr, 8);
	memcpy(sin6.sin6_addr.s6_addr + 12, &r, 4);
	sin6.sin6_addr.s6_addr[8] = 0xb0;
	l = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	c = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l == -1 || c == -1 ||
	    setsockopt(l, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one)) ||
	    bind(l, (struct sockaddr *)&sin6, sizeof(sin6)) == -1 ||
	    listen(l, 1) == -1 ||
	    getsockname(l, (struct sockaddr *)&sin6, &slen) == -1)
		goto fail;
	if (connect(c, (struct sockaddr *)&sin6, sizeof(sin6)) == -1 &&
	    errno != EINPROGRESS)
		goto fail;
	errno = ETIMEDOUT;
	if (wait_fd(c, POLLOUT, clock_now() + 1.0) == -1)
		goto fail;
	if (getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &elen) == -1 || err) {
		errno = err;
		goto fail;
	}
	ret = 0;
	goto out;
fail:
	addr_format(subnet, text);
	xasprintf(cause,
	    "the addresses of %s/64 do not reach this host (%s); "
	    "add the AnyIP route: ip -6 route add local %s/64 dev lo",
	    text, strerror(errno), text);
out:
	if (l != -1)
		close(l);
	if (c != -1)
		close(c);
	return ret;
}
