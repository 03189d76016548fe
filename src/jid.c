#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "jid.h"
#include "utf8.h"
#include "xmalloc.h"

/* Longest text that can be a Barev JID: nick, '@', a bracketed address. */
#define BAREV_JID_INPUT_MAX (BAREV_NICK_MAX + 1 + ADDR_STRLEN + 1)

/* What XEP-0106 escapes, as RFC 7622 forbids it in a localpart. */
static const char esc_forbidden[] = " \"&'/:<>@";
/* Not in a nick: special to XMPP, or '%' which the typeable form splits on. */
static const char nick_forbidden[] = "\"&'/:<>@\\%";
static const char hexdigits[] = "0123456789abcdef";

static int
ascii_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* ASCII only and locale-independent, unlike strcasecmp(3). */
static int
ascii_caseeq(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t i;

	if (alen != blen)
		return 0;
	for (i = 0; i < alen; i++) {
		if (ascii_lower((unsigned char)a[i]) !=
		    ascii_lower((unsigned char)b[i]))
			return 0;
	}
	return 1;
}

/*
 * Whitespace (Unicode White_Space), C0/C1 controls and the two
 * non-characters XML cannot carry: a peer would show them as nothing, or its
 * parser would stop on them.
 */
static int
nick_char_blank(uint32_t c)
{
	if (c <= 0x20 || (c >= 0x7f && c <= 0xa0))
		return 1;
	if (c >= 0x2000 && c <= 0x200a)
		return 1;
	switch (c) {
	case 0x1680:
	case 0x2028:
	case 0x2029:
	case 0x202f:
	case 0x205f:
	case 0x3000:
	case 0xfffe:
	case 0xffff:
		return 1;
	}
	return 0;
}

int
barev_nick_check(const char *nick, size_t len, const char **cause)
{
	const unsigned char *p = (const unsigned char *)nick;
	size_t i, n;
	uint32_t c;

	if (len == 0) {
		*cause = "the nick before '@' is empty";
		return -1;
	}
	if (len > BAREV_NICK_MAX) {
		*cause = "the nick is longer than 64 bytes";
		return -1;
	}
	for (i = 0; i < len; i += n) {
		if ((n = utf8_next(p + i, len - i, &c)) == 0) {
			*cause = "the nick is not valid UTF-8";
			return -1;
		}
		if (nick_char_blank(c)) {
			*cause =
			    "the nick contains a space or a control character";
			return -1;
		}
		if (c < 0x80 && strchr(nick_forbidden, (int)c) != NULL) {
			*cause = "the nick must not contain any of \" & ' / : "
				 "< > @ \\ %";
			return -1;
		}
	}
	return 0;
}

static int
parse_address(const char *s, int flags, struct in6_addr *a, const char **cause)
{
	if (*s == '\0') {
		*cause = "the IPv6 address after '@' is missing";
		return -1;
	}
	if (addr_parse(s, a) == -1) {
		*cause =
		    "not an IPv6 address after '@' (e.g. inky@201:af82::1)";
		return -1;
	}
	if (!(flags & BAREV_ANY_ADDR) && !addr_is_yggdrasil(a)) {
		*cause = "not a Yggdrasil address (must be in 200::/7)";
		return -1;
	}
	return 0;
}

int
barev_jid_parse(
    const char *s, int flags, struct barev_jid *out, const char **cause)
{
	size_t len = strnlen(s, BAREV_JID_INPUT_MAX + 1);
	const char *at;

	memset(out, 0, sizeof(*out));
	if (len > BAREV_JID_INPUT_MAX) {
		*cause = "too long for nick@ipv6 (a nick has at most 64 bytes)";
		return -1;
	}
	/* The last '@' splits, so "a@b@addr" is blamed on the nick. */
	if ((at = strrchr(s, '@')) == NULL) {
		*cause = "expected nick@ipv6, e.g. inky@201:af82::1";
		return -1;
	}
	if (barev_nick_check(s, (size_t)(at - s), cause) == -1 ||
	    parse_address(at + 1, flags, &out->addr, cause) == -1) {
		memset(out, 0, sizeof(*out));
		return -1;
	}
	memcpy(out->nick, s, (size_t)(at - s));
	return 0;
}

const char *
barev_jid_format(const struct barev_jid *j, char *buf)
{
	char abuf[ADDR_STRLEN];

	snprintf(buf, BAREV_JID_STRLEN, "%.*s@%s", BAREV_NICK_MAX, j->nick,
	    addr_format(&j->addr, abuf));
	return buf;
}

int
barev_jid_equal(const struct barev_jid *a, const struct barev_jid *b)
{
	return addr_equal(&a->addr, &b->addr) &&
	    strncmp(a->nick, b->nick, sizeof(a->nick)) == 0;
}

int
barev_jid_equal_nocase(const struct barev_jid *a, const struct barev_jid *b)
{
	return addr_equal(&a->addr, &b->addr) &&
	    ascii_caseeq(a->nick, strnlen(a->nick, sizeof(a->nick)), b->nick,
		strnlen(b->nick, sizeof(b->nick)));
}

/* Whether c is written as \xx under flags (the backslash has its own rule). */
static int
esc_needed(int c, int flags)
{
	if (c != '\0' && strchr(esc_forbidden, c) != NULL)
		return 1;
	return (flags & JID_ESC_UPPER) && c >= 'A' && c <= 'Z';
}

/* XEP-0106: "case is significant", so upper-case hex is never an escape. */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The character an escape sequence at p stands for, or -1 if p holds none. */
static int
esc_decode(const char *p, int flags)
{
	int c, hi, lo;

	if (p[0] != '\\' || (hi = hexval(p[1])) == -1 ||
	    (lo = hexval(p[2])) == -1)
		return -1;
	c = hi * 16 + lo;
	return c == '\\' || esc_needed(c, flags) ? c : -1;
}

/*
 * A backslash is escaped only where it starts a sequence unescaping would
 * decode (XEP-0106 business rule 7), so "c:\net" keeps its backslash and
 * every escaped text unescapes to what it came from.
 */
static int
esc_this(const char *p, int flags)
{
	if (*p == '\\')
		return esc_decode(p, flags) != -1;
	return esc_needed((unsigned char)*p, flags);
}

static size_t
escaped_len(const char *s, int flags)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += esc_this(s, flags) ? 3 : 1;
	return n;
}

static char *
escape(const char *s, int flags)
{
	char *out = xmalloc(escaped_len(s, flags) + 1), *o = out;
	unsigned char c;

	for (; *s != '\0'; s++) {
		c = (unsigned char)*s;
		if (esc_this(s, flags)) {
			*o++ = '\\';
			*o++ = hexdigits[c >> 4];
			*o++ = hexdigits[c & 0xf];
		} else
			*o++ = (char)c;
	}
	*o = '\0';
	return out;
}

int
jid_escape(const char *s, int flags, char **out, const char **cause)
{
	size_t len = strnlen(s, JID_PART_MAX + 1);

	*out = NULL;
	/* Checked before anything else, so the work is bounded by the limit. */
	if (len > JID_PART_MAX || escaped_len(s, flags) > JID_PART_MAX) {
		*cause =
		    "the escaped localpart would be longer than 1023 bytes";
		return -1;
	}
	if (len > 0 && (s[0] == ' ' || s[len - 1] == ' ')) {
		*cause = "a JID localpart cannot begin or end with a space";
		return -1;
	}
	*out = escape(s, flags);
	return 0;
}

char *
jid_unescape(const char *s, int flags)
{
	char *out = xmalloc(strlen(s) + 1), *o = out;
	int c;

	while (*s != '\0') {
		if ((c = esc_decode(s, flags)) != -1) {
			*o++ = (char)c;
			s += 3;
		} else
			*o++ = *s++;
	}
	*o = '\0';
	return out;
}

char *
gateway_jid_from_barev(const struct barev_jid *b, const char *domain)
{
	char buf[BAREV_JID_STRLEN], *local, *jid;

	/* A valid nick has no space, so no \20 rule and no length check apply. */
	local = escape(barev_jid_format(b, buf), JID_ESC_UPPER);
	xasprintf(&jid, "%s@%s", local, domain);
	free(local);
	return jid;
}

/* Turn the typeable "nick%201-af82--1" into "nick@201:af82::1" in place. */
static int
typeable_to_barev(char *s, const char **cause)
{
	char *p;

	if ((p = strrchr(s, '%')) == NULL) {
		*cause = "expected nick\\40address (XEP-0106) or nick%address "
			 "with - for : before the gateway domain, "
			 "e.g. inky%201-af82--1";
		return -1;
	}
	for (*p = '@'; *p != '\0'; p++) {
		if (*p == '-')
			*p = ':';
	}
	return 0;
}

int
gateway_jid_to_barev(const char *jid, const char *domain, int flags,
    struct barev_jid *out, const char **cause)
{
	struct jid_parts p;
	char *local, *text;
	int rv = -1;

	memset(out, 0, sizeof(*out));
	if (jid_split(jid, &p, cause) == -1)
		return -1;
	if (!jid_on_domain(&p, domain)) {
		*cause = "not a JID on the gateway's domain";
		return -1;
	}
	if (p.local == NULL) {
		*cause = "the gateway's own JID names no Barev contact";
		return -1;
	}
	local = xstrndup(p.local, p.local_len);
	text = jid_unescape(local, JID_ESC_UPPER);
	if (strchr(text, '@') != NULL || typeable_to_barev(text, cause) == 0)
		rv = barev_jid_parse(text, flags, out, cause);
	free(text);
	free(local);
	return rv;
}

static int
check_parts(const struct jid_parts *p, const char **cause)
{
	if (p->local != NULL && p->local_len == 0) {
		*cause = "the localpart before '@' is empty";
		return -1;
	}
	if (p->domain_len == 0) {
		*cause = "the JID has no domain";
		return -1;
	}
	if (p->resource != NULL && p->resource_len == 0) {
		*cause = "the resource after '/' is empty";
		return -1;
	}
	if (p->local_len > JID_PART_MAX || p->domain_len > JID_PART_MAX ||
	    p->resource_len > JID_PART_MAX) {
		*cause = "a part of the JID is longer than 1023 bytes";
		return -1;
	}
	return 0;
}

int
jid_split(const char *jid, struct jid_parts *out, const char **cause)
{
	size_t len = strnlen(jid, JID_MAX + 1);
	const char *at, *end = jid + len, *slash;

	memset(out, 0, sizeof(*out));
	if (len == 0) {
		*cause = "the JID is empty";
		return -1;
	}
	if (len > JID_MAX) {
		*cause = "the JID is longer than 3071 bytes";
		return -1;
	}
	if ((slash = memchr(jid, '/', len)) != NULL) {
		out->resource = slash + 1;
		out->resource_len = (size_t)(end - slash - 1);
		end = slash;
	}
	if ((at = memchr(jid, '@', (size_t)(end - jid))) != NULL) {
		out->local = jid;
		out->local_len = (size_t)(at - jid);
		out->domain = at + 1;
	} else
		out->domain = jid;
	out->domain_len = (size_t)(end - out->domain);
	if (check_parts(out, cause) == -1) {
		memset(out, 0, sizeof(*out));
		return -1;
	}
	return 0;
}

int
jid_on_domain(const struct jid_parts *p, const char *domain)
{
	return ascii_caseeq(p->domain, p->domain_len, domain,
	    strnlen(domain, JID_PART_MAX + 1));
}

int
jid_bare(const char *jid, char **out, const char **cause)
{
	struct jid_parts p;

	*out = NULL;
	if (jid_split(jid, &p, cause) == -1)
		return -1;
	*out = xstrndup(jid, (size_t)(p.domain - jid) + p.domain_len);
	return 0;
}

int
jid_domain(const char *jid, char **out, const char **cause)
{
	struct jid_parts p;

	*out = NULL;
	if (jid_split(jid, &p, cause) == -1)
		return -1;
	*out = xstrndup(p.domain, p.domain_len);
	return 0;
}
