/* libFuzzer target for src/jid.c: no input crashes, every mapping round-trips. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "jid.h"
#include "xmalloc.h"

#define DOMAIN "barev.example.org"

/* Inputs longer than any JID only repeat what shorter ones find. */
#define INPUT_MAX (JID_MAX + 16)

/* A violated property: abort so that libFuzzer keeps the input. */
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
is_zero(const void *p, size_t len)
{
	const unsigned char *c = p;

	while (len-- > 0) {
		if (*c++ != 0)
			return 0;
	}
	return 1;
}

static int
has_ascii_upper(const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s >= 'A' && *s <= 'Z')
			return 1;
	}
	return 0;
}

/* What a server's case folding does to the ASCII part of a JID. */
static char *
ascii_lowered(const char *s)
{
	char *l = xstrdup(s), *p;

	for (p = l; *p != '\0'; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p += 'a' - 'A';
	}
	return l;
}

static void
expect_maps_to(const char *jid, int flags, const struct barev_jid *want)
{
	struct barev_jid got;
	const char *cause = NULL;

	CHECK(gateway_jid_to_barev(jid, DOMAIN, flags, &got, &cause) == 0);
	CHECK(memcmp(&got, want, sizeof(got)) == 0);
}

/* "nick%addr" with '-' for ':', as a person would type it. */
static char *
typeable(const struct barev_jid *b)
{
	char abuf[ADDR_STRLEN], *jid, *p;

	addr_format(&b->addr, abuf);
	for (p = abuf; *p != '\0'; p++) {
		if (*p == ':')
			*p = '-';
	}
	xasprintf(&jid, "%s%%%s@%s", b->nick, abuf, DOMAIN);
	return jid;
}

/* A valid Barev JID maps to a gateway JID and back, in every form. */
static void
check_gateway(const struct barev_jid *b, int flags)
{
	struct barev_jid got;
	const char *cause = NULL;
	char *jid, *low, *full;

	jid = gateway_jid_from_barev(b, DOMAIN);
	CHECK(!has_ascii_upper(jid));
	expect_maps_to(jid, flags, b);
	xasprintf(&full, "%s/Res@x/y", jid);
	expect_maps_to(full, flags, b);
	low = ascii_lowered(full);
	expect_maps_to(low, flags, b);
	free(low);
	free(full);
	free(jid);

	jid = typeable(b);
	expect_maps_to(jid, flags, b);
	low = ascii_lowered(jid);
	CHECK(gateway_jid_to_barev(low, DOMAIN, flags, &got, &cause) == 0);
	CHECK(barev_jid_equal_nocase(&got, b));
	free(low);
	free(jid);
}

static void
check_barev(const char *s, int flags)
{
	struct barev_jid j, again;
	char buf[BAREV_JID_STRLEN], buf2[BAREV_JID_STRLEN];
	const char *cause = NULL;

	if (barev_jid_parse(s, flags, &j, &cause) != 0) {
		CHECK(cause != NULL && is_zero(&j, sizeof(j)));
		return;
	}
	CHECK(barev_nick_check(j.nick, strlen(j.nick), &cause) == 0);
	CHECK(
	    is_zero(j.nick + strlen(j.nick), sizeof(j.nick) - strlen(j.nick)));
	CHECK((flags & BAREV_ANY_ADDR) || addr_is_yggdrasil(&j.addr));
	barev_jid_format(&j, buf);
	CHECK(barev_jid_parse(buf, flags, &again, &cause) == 0);
	CHECK(memcmp(&j, &again, sizeof(j)) == 0);
	CHECK(
	    barev_jid_equal(&j, &again) && barev_jid_equal_nocase(&j, &again));
	CHECK(strcmp(barev_jid_format(&again, buf2), buf) == 0);
	check_gateway(&j, flags);
}

/* Whatever maps to a contact maps back to it from its canonical JID. */
static void
check_gateway_input(const char *s, int flags)
{
	struct barev_jid b;
	const char *cause = NULL;

	if (gateway_jid_to_barev(s, DOMAIN, flags, &b, &cause) != 0) {
		CHECK(cause != NULL && is_zero(&b, sizeof(b)));
		return;
	}
	CHECK(barev_nick_check(b.nick, strlen(b.nick), &cause) == 0);
	check_gateway(&b, flags);
}

static void
check_escape(const char *s, int flags)
{
	const char *cause = NULL;
	char *esc, *back;
	size_t len = strlen(s);

	back = jid_unescape(s, flags);
	CHECK(strlen(back) <= len);
	free(back);
	if (jid_escape(s, flags, &esc, &cause) != 0) {
		CHECK(cause != NULL && esc == NULL);
		CHECK(len > JID_PART_MAX / 3 ||
		    (len > 0 && (s[0] == ' ' || s[len - 1] == ' ')));
		return;
	}
	CHECK(strlen(esc) <= JID_PART_MAX && strlen(esc) >= len);
	CHECK(strpbrk(esc, " \"&'/:<>@") == NULL);
	CHECK(!(flags & JID_ESC_UPPER) || !has_ascii_upper(esc));
	back = jid_unescape(esc, flags);
	CHECK(strcmp(back, s) == 0);
	free(back);
	free(esc);
}

static void
check_split(const char *s)
{
	struct jid_parts p;
	const char *cause = NULL;
	char *bare, *domain;
	size_t len = strlen(s), n;

	if (jid_split(s, &p, &cause) != 0) {
		CHECK(cause != NULL);
		CHECK(jid_bare(s, &bare, &cause) == -1 && bare == NULL);
		return;
	}
	CHECK(p.domain_len > 0 && p.domain_len <= JID_PART_MAX);
	CHECK(p.local == NULL ||
	    (p.local == s && p.local_len > 0 && p.local_len <= JID_PART_MAX &&
		s[p.local_len] == '@'));
	CHECK(memchr(p.domain, '/', p.domain_len) == NULL);
	n = (size_t)(p.domain - s) + p.domain_len;
	if (p.resource == NULL)
		CHECK(n == len);
	else
		CHECK(p.resource_len > 0 && p.resource_len <= JID_PART_MAX &&
		    s[n] == '/' && p.resource == s + n + 1 &&
		    n + 1 + p.resource_len == len);
	CHECK(jid_bare(s, &bare, &cause) == 0);
	CHECK(strlen(bare) == n && memcmp(bare, s, n) == 0);
	CHECK(jid_domain(s, &domain, &cause) == 0);
	CHECK(strlen(domain) == p.domain_len && jid_on_domain(&p, domain));
	free(domain);
	free(bare);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size > INPUT_MAX)
		return 0;
	s = xmalloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	check_barev(s, 0);
	check_barev(s, BAREV_ANY_ADDR);
	check_gateway_input(s, 0);
	check_gateway_input(s, BAREV_ANY_ADDR);
	check_escape(s, 0);
	check_escape(s, JID_ESC_UPPER);
	check_split(s);
	free(s);
	return 0;
}
