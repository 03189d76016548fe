/* Unit tests of src/jid.c and src/addr.c: tables of inputs and exact results. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "jid.h"
#include "xmalloc.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

#define DOMAIN "barev.example.org"

/* Canonical text of an address given in any form the test trusts. */
static const char *
canon(const char *s, char *buf)
{
	struct in6_addr a;

	assert_int_equal(inet_pton(AF_INET6, s, &a), 1);
	return addr_format(&a, buf);
}

/* --- addr.c -------------------------------------------------------------- */

static const struct {
	const char *in;
	const char *out; /* RFC 5952 form, NULL if addr_parse must fail */
} addr_cases[] = {
	/* Long forms as the Pascal library writes them. */
	{ "0200:0001:0000:0000:0000:0000:0000:0001", "200:1::1" },
	{ "0200:0001::0001", "200:1::1" },
	/* Upper case and brackets. */
	{ "201:AF82:9F2F:7809:BE0C:360A:1587:6BE7",
	    "201:af82:9f2f:7809:be0c:360a:1587:6be7" },
	{ "[201:af82::1]", "201:af82::1" },
	{ "[0201:AF82:0000::0001]", "201:af82::1" },
	/* A single zero field is not compressed (RFC 5952 4.2.2). */
	{ "2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1" },
	{ "201:0:1:1:1:1:1:1", "201:0:1:1:1:1:1:1" },
	/* The longest run is compressed (4.2.3). */
	{ "2001:0:0:1:0:0:0:1", "2001:0:0:1::1" },
	{ "201:0:0:1:0:0:0:0", "201:0:0:1::" },
	/* Of two equal runs, the first (4.2.3). */
	{ "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1" },
	{ "201:0:0:1:0:0:1:0", "201::1:0:0:1:0" },
	/* Lower case, no leading zeros (4.3, 4.1). */
	{ "0201:00AB:000C:0D00:0000:0000:0000:00EF", "201:ab:c:d00::ef" },
	{ "201::0:1", "201::1" },
	{ "200::", "200::" },
	{ "3ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	    "3ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
	{ "::", "::" },
	{ "::1", "::1" },
	/* IPv4-mapped keeps its dotted tail (RFC 5952 5). */
	{ "::FFFF:1.2.3.4", "::ffff:1.2.3.4" },
	{ "0:0:0:0:0:ffff:0102:0304", "::ffff:1.2.3.4" },
	/* Rejected. */
	{ "", NULL },
	{ "[]", NULL },
	{ "[201::1", NULL },
	{ "201::1]", NULL },
	{ "[[201::1]]", NULL },
	{ "00200::1", NULL },
	{ "201::1::", NULL },
	{ "1:2:3:4:5:6:7:8:9", NULL },
	{ "201::1%eth0", NULL },
	{ " 201::1", NULL },
	{ "201::1 ", NULL },
	{ "201:af82::g", NULL },
	{ "1.2.3.4", NULL },
	{ "201:af82::1:5299x:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1:1", NULL },
};

static void
test_addr_parse_format(void **state)
{
	struct in6_addr a;
	char buf[ADDR_STRLEN];
	size_t i;

	for (i = 0; i < nitems(addr_cases); i++) {
		if (addr_cases[i].out == NULL) {
			assert_int_equal(addr_parse(addr_cases[i].in, &a), -1);
			continue;
		}
		assert_int_equal(addr_parse(addr_cases[i].in, &a), 0);
		assert_string_equal(addr_format(&a, buf), addr_cases[i].out);
	}
}

static void
test_addr_equal(void **state)
{
	struct in6_addr a, b;

	assert_int_equal(addr_parse("0200:0001::0001", &a), 0);
	assert_int_equal(addr_parse("[200:1:0:0::1]", &b), 0);
	assert_true(addr_equal(&a, &b));
	assert_int_equal(addr_parse("200:1::2", &b), 0);
	assert_false(addr_equal(&a, &b));
}

static const struct {
	const char *addr;
	int ygg;
} ygg_cases[] = {
	{ "200::", 1 },
	{ "201:af82:9f2f:7809:be0c:360a:1587:6be7", 1 },
	{ "2ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 },
	{ "300::1", 1 }, /* a node's routed subnet */
	{ "3ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 },
	{ "1ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0 },
	{ "400::", 0 },
	{ "2001:db8::1", 0 },
	{ "fe80::1", 0 },
	{ "::1", 0 },
	{ "::", 0 },
	{ "::ffff:2.1.0.1", 0 },
	{ "::ffff:1.2.3.4", 0 },
	{ "::200:0:0:0", 0 },
};

static void
test_addr_is_yggdrasil(void **state)
{
	struct in6_addr a;
	size_t i;

	for (i = 0; i < nitems(ygg_cases); i++) {
		assert_int_equal(addr_parse(ygg_cases[i].addr, &a), 0);
		if (addr_is_yggdrasil(&a) != ygg_cases[i].ygg)
			fail_msg("%s: expected %d", ygg_cases[i].addr,
			    ygg_cases[i].ygg);
	}
}

#define PORT_CAUSE "port must be a number from 0 (any free port) to 65535"

static const struct {
	const char *in;
	const char *addr; /* canonical; NULL: parse fails */
	uint16_t port;
	const char *cause;
} listen_cases[] = {
	{ "[201:af82::1]:5299", "201:af82::1", 5299, NULL },
	{ "[0200:0001::0001]:1337", "200:1::1", 1337, NULL },
	{ "[201:AF82::1]", "201:af82::1", 5299, NULL },
	{ "201:af82::1", "201:af82::1", 5299, NULL },
	{ "::", "::", 5299, NULL },
	{ "::1", "::1", 5299, NULL },
	{ "[::]:1", "::", 1, NULL },
	{ ":1337", "::", 1337, NULL },
	{ "1337", "::", 1337, NULL },
	{ "65535", "::", 65535, NULL },
	{ "[::1]:65535", "::1", 65535, NULL },
	/* Port 0 asks for any free port. */
	{ "0", "::", 0, NULL },
	{ ":0", "::", 0, NULL },
	{ "[201::1]:0", "201::1", 0, NULL },
	{ "", NULL, 0, "expected \"[address]:port\", \"address\" or a port" },
	{ "65536", NULL, 0,
	    "expected \"[address]:port\", \"address\" or a port" },
	{ "localhost", NULL, 0,
	    "expected \"[address]:port\", \"address\" or a port" },
	{ ":", NULL, 0, PORT_CAUSE },
	{ ":65536", NULL, 0, PORT_CAUSE },
	{ ":+80", NULL, 0, PORT_CAUSE },
	{ ":80x", NULL, 0, PORT_CAUSE },
	{ "[::1]:", NULL, 0, PORT_CAUSE },
	{ "[::1]:-1", NULL, 0, PORT_CAUSE },
	{ "[::1]:99999999999999999999", NULL, 0, PORT_CAUSE },
	{ "[::1", NULL, 0, "missing ']' after the address" },
	{ "[::1]5299", NULL, 0, "expected ':port' after ']'" },
	{ "[::1]]", NULL, 0, "expected ':port' after ']'" },
	{ "[]:5299", NULL, 0, "not an IPv6 address" },
	{ "[1.2.3.4]:5299", NULL, 0, "not an IPv6 address" },
	{ "[201::zz]:5299", NULL, 0, "not an IPv6 address" },
	{ "localhost:5299", NULL, 0, "not an IPv6 address" },
	{ "201:af82::1:5299:1:2:3:4", NULL, 0, "not an IPv6 address" },
	{ "[0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]:1", NULL, 0,
	    "not an IPv6 address" },
};

static void
test_addr_parse_listen(void **state)
{
	struct in6_addr a;
	char buf[ADDR_STRLEN];
	const char *cause;
	uint16_t port;
	size_t i;
	int rv;

	for (i = 0; i < nitems(listen_cases); i++) {
		cause = NULL;
		rv = addr_parse_listen(
		    listen_cases[i].in, 5299, &a, &port, &cause);
		if (listen_cases[i].addr == NULL) {
			if (rv != -1)
				fail_msg("\"%s\" parsed", listen_cases[i].in);
			assert_non_null(cause);
			assert_string_equal(cause, listen_cases[i].cause);
			continue;
		}
		if (rv != 0)
			fail_msg("\"%s\": %s", listen_cases[i].in, cause);
		assert_string_equal(addr_format(&a, buf), listen_cases[i].addr);
		assert_int_equal(port, listen_cases[i].port);
	}
}

/* --- Barev JIDs ---------------------------------------------------------- */

static const struct {
	const char *in;
	int flags;
	const char *nick;
	const char *out;
} barev_ok[] = {
	{ "inky@201:af82:9f2f:7809:be0c:360a:1587:6be7", 0, "inky",
	    "inky@201:af82:9f2f:7809:be0c:360a:1587:6be7" },
	{ "alice@0200:0001::0001", 0, "alice", "alice@200:1::1" },
	{ "alice@0200:0001:0000:0000:0000:0000:0000:0001", 0, "alice",
	    "alice@200:1::1" },
	{ "Inky@201:AF82::1", 0, "Inky", "Inky@201:af82::1" },
	{ "INKY@[201:af82::1]", 0, "INKY", "INKY@201:af82::1" },
	{ "bob@300::1", 0, "bob", "bob@300::1" },
	{ "x@201:0:1:1:1:1:1:1", 0, "x", "x@201:0:1:1:1:1:1:1" },
	{ "x@201:0:0:1:0:0:0:1", 0, "x", "x@201:0:0:1::1" },
	{ "x@201:0:0:1:0:0:1:0", 0, "x", "x@201::1:0:0:1:0" },
	{ "my-nick_1.2@201::1", 0, "my-nick_1.2", "my-nick_1.2@201::1" },
	{ "!#$()*+,-.;=?[]^_`{|}~@201::1", 0, "!#$()*+,-.;=?[]^_`{|}~",
	    "!#$()*+,-.;=?[]^_`{|}~@201::1" },
	{ "\xc3\x84rger@201::1", 0, "\xc3\x84rger", "\xc3\x84rger@201::1" },
	{ "\xe6\x97\xa5\xe6\x9c\xac@201::1", 0, "\xe6\x97\xa5\xe6\x9c\xac",
	    "\xe6\x97\xa5\xe6\x9c\xac@201::1" },
	{ "smile\xf0\x9f\x98\x80@201::1", 0, "smile\xf0\x9f\x98\x80",
	    "smile\xf0\x9f\x98\x80@201::1" },
	{ "1234567890123456789012345678901234567890123456789012345678901234"
	  "@[0201:af82:9f2f:7809:be0c:360a:1587:6be7]",
	    0,
	    "1234567890123456789012345678901234567890123456789012345678901234",
	    "1234567890123456789012345678901234567890123456789012345678901234"
	    "@201:af82:9f2f:7809:be0c:360a:1587:6be7" },
	/* Any address only with the test flag. */
	{ "lo@::1", BAREV_ANY_ADDR, "lo", "lo@::1" },
	{ "v4@::FFFF:127.0.0.1", BAREV_ANY_ADDR, "v4", "v4@::ffff:127.0.0.1" },
	{ "doc@2001:DB8::1", BAREV_ANY_ADDR, "doc", "doc@2001:db8::1" },
};

static void
test_barev_parse_ok(void **state)
{
	struct barev_jid j, again;
	char buf[BAREV_JID_STRLEN];
	const char *cause;
	size_t i;

	for (i = 0; i < nitems(barev_ok); i++) {
		cause = NULL;
		if (barev_jid_parse(
			barev_ok[i].in, barev_ok[i].flags, &j, &cause) != 0)
			fail_msg("\"%s\": %s", barev_ok[i].in, cause);
		assert_string_equal(j.nick, barev_ok[i].nick);
		assert_string_equal(barev_jid_format(&j, buf), barev_ok[i].out);
		assert_int_equal(
		    barev_jid_parse(buf, barev_ok[i].flags, &again, &cause), 0);
		assert_memory_equal(&j, &again, sizeof(j));
	}
}

static const struct {
	const char *in;
	int flags;
	const char *cause;
} barev_bad[] = {
	{ "", 0, "expected nick@ipv6, e.g. inky@201:af82::1" },
	{ "inky", 0, "expected nick@ipv6, e.g. inky@201:af82::1" },
	{ "201:af82::1", 0, "expected nick@ipv6, e.g. inky@201:af82::1" },
	{ "@201::1", 0, "the nick before '@' is empty" },
	{ "inky@", 0, "the IPv6 address after '@' is missing" },
	{ "inky@201:af82::g", 0,
	    "not an IPv6 address after '@' (e.g. inky@201:af82::1)" },
	{ "inky@barev.example.org", 0,
	    "not an IPv6 address after '@' (e.g. inky@201:af82::1)" },
	{ "inky@201::1/res", 0,
	    "not an IPv6 address after '@' (e.g. inky@201:af82::1)" },
	{ "inky@201::1%eth0", 0,
	    "not an IPv6 address after '@' (e.g. inky@201:af82::1)" },
	{ "inky@ 201::1", 0,
	    "not an IPv6 address after '@' (e.g. inky@201:af82::1)" },
	{ "inky@2001:db8::1", 0,
	    "not a Yggdrasil address (must be in 200::/7)" },
	{ "inky@::ffff:2.1.0.1", 0,
	    "not a Yggdrasil address (must be in 200::/7)" },
	{ "inky@::1", 0, "not a Yggdrasil address (must be in 200::/7)" },
	{ "inky@400::1", 0, "not a Yggdrasil address (must be in 200::/7)" },
	{ "a@b@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "in ky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ " inky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\tky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\x7fky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\xc2\x85ky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\xc2\xa0ky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\xe2\x80\xa8ky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\xe3\x80\x80ky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\xe2\x80\x83ky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\xe1\x9a\x80ky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "in\xef\xbf\xbeky@201::1", 0,
	    "the nick contains a space or a control character" },
	{ "d'artagnan@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a\"b@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a&b@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a/b@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a:b@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "<b>@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a\\b@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a%b@201::1", 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	/*
	 * Not UTF-8: a lone continuation byte, overlong '/' (two forms), a
	 * surrogate, past U+10FFFF, truncated, 0xff, a missing continuation.
	 */
	{ "a\x80@201::1", 0, "the nick is not valid UTF-8" },
	{ "a\xc0\xaf@201::1", 0, "the nick is not valid UTF-8" },
	{ "a\xe0\x80\xaf@201::1", 0, "the nick is not valid UTF-8" },
	{ "a\xed\xa0\x80@201::1", 0, "the nick is not valid UTF-8" },
	{ "a\xf4\x90\x80\x80@201::1", 0, "the nick is not valid UTF-8" },
	{ "a\xe6\x97@201::1", 0, "the nick is not valid UTF-8" },
	{ "a\xc3"
	  "A@201::1",
	    0, "the nick is not valid UTF-8" },
	{ "a\xff@201::1", 0, "the nick is not valid UTF-8" },
	{ "12345678901234567890123456789012345678901234567890123456789012345"
	  "@201::1",
	    0, "the nick is longer than 64 bytes" },
	{ "12345678901234567890123456789012345678901234567890123456789012345"
	  "67890123456789012345678901234567890123456789012345678901234567890"
	  "@201::1",
	    0, "too long for nick@ipv6 (a nick has at most 64 bytes)" },
};

static void
test_barev_parse_bad(void **state)
{
	struct barev_jid j, zero;
	const char *cause;
	size_t i;

	memset(&zero, 0, sizeof(zero));
	for (i = 0; i < nitems(barev_bad); i++) {
		cause = NULL;
		if (barev_jid_parse(
			barev_bad[i].in, barev_bad[i].flags, &j, &cause) != -1)
			fail_msg("\"%s\" parsed", barev_bad[i].in);
		if (cause == NULL || strcmp(cause, barev_bad[i].cause) != 0)
			fail_msg(
			    "\"%s\": cause \"%s\"", barev_bad[i].in, cause);
		assert_memory_equal(&j, &zero, sizeof(j));
	}
}

static void
test_barev_nick_check(void **state)
{
	char nick[BAREV_NICK_MAX + 2];
	const char *cause;

	/* 62 ASCII bytes plus a 2-byte character is exactly 64. */
	memset(nick, 'n', sizeof(nick));
	memcpy(nick + 62, "\xc3\xa9", 2);
	assert_int_equal(barev_nick_check(nick, 64, &cause), 0);
	/* A 3-byte character cut by the length is not UTF-8. */
	memcpy(nick + 62, "\xe6\x97\xa5", 3);
	assert_int_equal(barev_nick_check(nick, 64, &cause), -1);
	assert_string_equal(cause, "the nick is not valid UTF-8");
	assert_int_equal(barev_nick_check(nick, 65, &cause), -1);
	assert_string_equal(cause, "the nick is longer than 64 bytes");
	/* An embedded NUL is a control character, not the end. */
	assert_int_equal(barev_nick_check("a\0b", 3, &cause), -1);
	assert_string_equal(
	    cause, "the nick contains a space or a control character");
	assert_int_equal(barev_nick_check("", 0, &cause), -1);
	assert_string_equal(cause, "the nick before '@' is empty");
	/* Max code point, and a non-ASCII letter. */
	assert_int_equal(barev_nick_check("\xf4\x8f\xbf\xbf", 4, &cause), 0);
	assert_int_equal(barev_nick_check("\xc3\x9f", 2, &cause), 0);
}

/*
 * Nicks go into stream headers, pings and message heads as they are: the
 * check is what keeps markup out. Every character it must refuse, each
 * on its own, in the nick alone and in a whole JID.
 */
static void
test_barev_nick_refuses_each_special(void **state)
{
	static const char special[] = "<>&'\"/:@\\%";
	char nick[8], jid[32];
	const char *cause;
	struct barev_jid j;
	unsigned c;
	size_t i;

	for (i = 0; special[i] != '\0'; i++) {
		snprintf(nick, sizeof(nick), "a%cb", special[i]);
		if (barev_nick_check(nick, 3, &cause) != -1)
			fail_msg("the nick check lets %c through", special[i]);
		snprintf(jid, sizeof(jid), "a%cb@201::1", special[i]);
		if (special[i] != '@' &&
		    barev_jid_parse(jid, 0, &j, &cause) != -1)
			fail_msg("barev_jid_parse lets %c through", special[i]);
	}
	/* C0 controls, space, DEL. */
	for (c = 0; c <= 0x20; c++) {
		nick[0] = 'a';
		nick[1] = (char)c;
		nick[2] = 'b';
		if (barev_nick_check(nick, 3, &cause) != -1)
			fail_msg("the nick check lets \\x%02x through", c);
	}
	if (barev_nick_check("a\x7f"
			     "b",
		3, &cause) != -1)
		fail_msg("the nick check lets DEL through");
	/* C1 controls (U+0080..U+009F), NBSP, U+2028, U+FFFE, U+FFFF. */
	for (c = 0x80; c <= 0x9f; c++) {
		snprintf(nick, sizeof(nick), "a%c%cb", 0xc2, (char)c);
		if (barev_nick_check(nick, 4, &cause) != -1)
			fail_msg("the nick check lets U+%04X through", c);
	}
	assert_int_equal(barev_nick_check("a\xc2\xa0"
					  "b",
			     4, &cause),
	    -1);
	assert_int_equal(barev_nick_check("a\xe2\x80\xa8"
					  "b",
			     5, &cause),
	    -1);
	assert_int_equal(barev_nick_check("a\xef\xbf\xbe"
					  "b",
			     5, &cause),
	    -1);
	assert_int_equal(barev_nick_check("a\xef\xbf\xbf"
					  "b",
			     5, &cause),
	    -1);
}

static void
test_barev_equal(void **state)
{
	struct barev_jid a, b;
	const char *cause;

	assert_int_equal(barev_jid_parse("Inky@201:af82::1", 0, &a, &cause), 0);
	assert_int_equal(
	    barev_jid_parse("Inky@0201:AF82:0:0::0001", 0, &b, &cause), 0);
	assert_true(barev_jid_equal(&a, &b));
	assert_true(barev_jid_equal_nocase(&a, &b));

	assert_int_equal(
	    barev_jid_parse("iNKY@[201:af82::1]", 0, &b, &cause), 0);
	assert_false(barev_jid_equal(&a, &b));
	assert_true(barev_jid_equal_nocase(&a, &b));

	assert_int_equal(
	    barev_jid_parse("Inkyy@201:af82::1", 0, &b, &cause), 0);
	assert_false(barev_jid_equal_nocase(&a, &b));
	assert_int_equal(barev_jid_parse("Ink@201:af82::1", 0, &b, &cause), 0);
	assert_false(barev_jid_equal_nocase(&a, &b));

	assert_int_equal(barev_jid_parse("Inky@201:af82::2", 0, &b, &cause), 0);
	assert_false(barev_jid_equal(&a, &b));
	assert_false(barev_jid_equal_nocase(&a, &b));

	/* Only ASCII is folded. */
	assert_int_equal(barev_jid_parse("\xc3\x84@201::1", 0, &a, &cause), 0);
	assert_int_equal(barev_jid_parse("\xc3\xa4@201::1", 0, &b, &cause), 0);
	assert_false(barev_jid_equal_nocase(&a, &b));
}

/* --- XEP-0106 ------------------------------------------------------------ */

static const struct {
	const char *in;
	int flags;
	const char *out;
} esc_cases[] = {
	/* XEP-0106 section 5.1, with the backslash rule of 4.1 rule 7. */
	{ "space cadet", 0, "space\\20cadet" },
	{ "call me \"ishmael\"", 0, "call\\20me\\20\\22ishmael\\22" },
	{ "at&t guy", 0, "at\\26t\\20guy" },
	{ "d'artagnan", 0, "d\\27artagnan" },
	{ "/.fanboy", 0, "\\2f.fanboy" },
	{ "::foo::", 0, "\\3a\\3afoo\\3a\\3a" },
	{ "<foo>", 0, "\\3cfoo\\3e" },
	{ "user@host", 0, "user\\40host" },
	{ "c:\\net", 0, "c\\3a\\net" },
	{ "c:\\\\net", 0, "c\\3a\\\\net" },
	{ "c:\\cool stuff", 0, "c\\3a\\cool\\20stuff" },
	{ "c:\\5commas", 0, "c\\3a\\5c5commas" },
	/* A backslash that starts a decodable sequence is escaped. */
	{ "\\20", 0, "\\5c20" },
	{ "\\5c", 0, "\\5c5c" },
	{ "a\\", 0, "a\\" },
	{ "\\2F", 0, "\\2F" },
	{ "\\41", 0, "\\41" },
	{ "", 0, "" },
	{ "caf\xc3\xa9", 0, "caf\xc3\xa9" },
	/* Upper-case letters under JID_ESC_UPPER. */
	{ "Inky", JID_ESC_UPPER, "\\49nky" },
	{ "AZaz09", JID_ESC_UPPER, "\\41\\5aaz09" },
	{ "\\41", JID_ESC_UPPER, "\\5c41" },
	{ "\\4a", JID_ESC_UPPER, "\\5c4a" },
	{ "\\4A", JID_ESC_UPPER, "\\4\\41" },
	{ "Inky@201:af82::1", JID_ESC_UPPER,
	    "\\49nky\\40201\\3aaf82\\3a\\3a1" },
	{ "\xc3\x84rger", JID_ESC_UPPER, "\xc3\x84rger" },
};

static void
test_escape(void **state)
{
	const char *cause;
	char *esc, *back;
	size_t i;

	for (i = 0; i < nitems(esc_cases); i++) {
		if (jid_escape(
			esc_cases[i].in, esc_cases[i].flags, &esc, &cause) != 0)
			fail_msg("\"%s\": %s", esc_cases[i].in, cause);
		assert_string_equal(esc, esc_cases[i].out);
		back = jid_unescape(esc, esc_cases[i].flags);
		assert_string_equal(back, esc_cases[i].in);
		free(back);
		free(esc);
	}
}

static void
test_escape_bad(void **state)
{
	char big[JID_PART_MAX + 2], *esc;
	const char *cause;

	assert_int_equal(jid_escape(" lead", 0, &esc, &cause), -1);
	assert_null(esc);
	assert_string_equal(
	    cause, "a JID localpart cannot begin or end with a space");
	assert_int_equal(jid_escape("trail ", 0, &esc, &cause), -1);
	assert_int_equal(jid_escape(" ", 0, &esc, &cause), -1);

	/* 1023 plain bytes fit; 342 escaped ones (1026 bytes) do not. */
	memset(big, 'x', JID_PART_MAX);
	big[JID_PART_MAX] = '\0';
	assert_int_equal(jid_escape(big, 0, &esc, &cause), 0);
	assert_int_equal(strlen(esc), JID_PART_MAX);
	free(esc);
	big[JID_PART_MAX] = 'x';
	big[JID_PART_MAX + 1] = '\0';
	assert_int_equal(jid_escape(big, 0, &esc, &cause), -1);
	assert_string_equal(
	    cause, "the escaped localpart would be longer than 1023 bytes");
	memset(big, '@', 342);
	big[342] = '\0';
	assert_int_equal(jid_escape(big, 0, &esc, &cause), -1);
	big[341] = '\0';
	assert_int_equal(jid_escape(big, 0, &esc, &cause), 0);
	assert_int_equal(strlen(esc), 1023);
	free(esc);
}

static const struct {
	const char *in;
	int flags;
	const char *out;
} unesc_cases[] = {
	/* XEP-0106 4.3: partial and unknown sequences are left alone. */
	{ "\\2plus\\2is\\4", 0, "\\2plus\\2is\\4" },
	{ "foo\\bar", 0, "foo\\bar" },
	{ "foob\\41r", 0, "foob\\41r" },
	{ "foob\\41r", JID_ESC_UPPER, "foobAr" },
	/* Case is significant: upper-case hex digits are no escape. */
	{ "a\\2Fb\\3Ac", 0, "a\\2Fb\\3Ac" },
	{ "\\4A", JID_ESC_UPPER, "\\4A" },
	{ "\\4a\\5a\\5b\\40", JID_ESC_UPPER, "JZ\\5b@" },
	{ "\\5c5c", 0, "\\5c" },
	{ "\\5c\\5c", 0, "\\\\" },
	{ "\\20\\22\\26\\27\\2f\\3a\\3c\\3e\\40\\5c", 0, " \"&'/:<>@\\" },
	{ "\\00\\01\\7f\\61", JID_ESC_UPPER, "\\00\\01\\7f\\61" },
	{ "\\", 0, "\\" },
	{ "\\3", 0, "\\3" },
	{ "trail\\20", 0, "trail " },
	{ "", 0, "" },
};

static void
test_unescape(void **state)
{
	char *out;
	size_t i;

	for (i = 0; i < nitems(unesc_cases); i++) {
		out = jid_unescape(unesc_cases[i].in, unesc_cases[i].flags);
		assert_string_equal(out, unesc_cases[i].out);
		free(out);
	}
}

/* --- gateway JIDs -------------------------------------------------------- */

static const struct {
	const char *barev;
	const char *jid;
} gw_cases[] = {
	{ "inky@201:af82::1", "inky\\40201\\3aaf82\\3a\\3a1@" DOMAIN },
	{ "Inky@201:af82::1", "\\49nky\\40201\\3aaf82\\3a\\3a1@" DOMAIN },
	{ "alice@0200:0001::0001", "alice\\40200\\3a1\\3a\\3a1@" DOMAIN },
	{ "inky@201:af82:9f2f:7809:be0c:360a:1587:6be7",
	    "inky\\40201\\3aaf82\\3a9f2f\\3a7809\\3abe0c\\3a360a\\3a1587"
	    "\\3a6be7@" DOMAIN },
	{ "O.Hara-Z@300::1", "\\4f.\\48ara-\\5a\\40300\\3a\\3a1@" DOMAIN },
	{ "\xc3\x84rger@201::1", "\xc3\x84rger\\40201\\3a\\3a1@" DOMAIN },
};

static void
test_gateway_from_barev(void **state)
{
	struct barev_jid b;
	const char *cause;
	char *jid;
	size_t i;

	for (i = 0; i < nitems(gw_cases); i++) {
		assert_int_equal(
		    barev_jid_parse(gw_cases[i].barev, 0, &b, &cause), 0);
		jid = gateway_jid_from_barev(&b, DOMAIN);
		assert_string_equal(jid, gw_cases[i].jid);
		free(jid);
	}
}

static const char *rt_nicks[] = {
	"inky",
	"Inky",
	"INKY",
	"iNkY",
	"a",
	"Z",
	"MiXeD-Case_09",
	"O.Hara",
	"x!#$()*+,-.;=?[]^_`{|}~",
	"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
	"my-nick",
	"-",
	"--",
	"a-",
	"41",
	"\\41",
	"\xc3\x84rger\xc3\x96",
	"\xe6\x97\xa5\xe6\x9c\xac",
	"Smile\xf0\x9f\x98\x80",
	"ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
};

static const char *rt_addrs[] = {
	"201:af82:9f2f:7809:be0c:360a:1587:6be7",
	"200::",
	"200:1::1",
	"3ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	"201:0:0:1:0:0:1:0",
	"300::1",
};

static void
ascii_lower_str(char *s)
{
	for (; *s != '\0'; s++) {
		if (*s >= 'A' && *s <= 'Z')
			*s += 'a' - 'A';
	}
}

/* The Barev contact behind jid must be exactly want. */
static void
expect_barev(const char *jid, const struct barev_jid *want)
{
	struct barev_jid got;
	const char *cause = NULL;

	if (gateway_jid_to_barev(jid, DOMAIN, 0, &got, &cause) != 0)
		fail_msg("\"%s\": %s", jid, cause);
	if (memcmp(&got, want, sizeof(got)) != 0)
		fail_msg("\"%s\": got nick \"%s\", want \"%s\"", jid, got.nick,
		    want->nick);
}

static void
test_gateway_roundtrip(void **state)
{
	struct barev_jid b;
	char in[BAREV_JID_STRLEN + 2], *jid, *full;
	char abuf[ADDR_STRLEN], cbuf[ADDR_STRLEN];
	const char *cause;
	size_t i, k;

	for (i = 0; i < nitems(rt_nicks); i++) {
		for (k = 0; k < nitems(rt_addrs); k++) {
			snprintf(
			    in, sizeof(in), "%s@%s", rt_nicks[i], rt_addrs[k]);
			if (strchr(rt_nicks[i], '\\') != NULL) {
				/* Not a nick: never reaches the gateway. */
				assert_int_equal(
				    barev_jid_parse(in, 0, &b, &cause), -1);
				continue;
			}
			assert_int_equal(barev_jid_parse(in, 0, &b, &cause), 0);
			assert_string_equal(b.nick, rt_nicks[i]);
			assert_string_equal(addr_format(&b.addr, abuf),
			    canon(rt_addrs[k], cbuf));
			jid = gateway_jid_from_barev(&b, DOMAIN);
			expect_barev(jid, &b);
			/* With a resource, then as a server folds it. */
			xasprintf(&full, "%s/Gajim.x7/@", jid);
			expect_barev(full, &b);
			ascii_lower_str(full);
			expect_barev(full, &b);
			free(full);
			free(jid);
		}
	}
}

static const struct {
	const char *jid;
	const char *barev; /* what it must map to, exactly */
} gw_forms[] = {
	/* Escaped, as the gateway writes it. */
	{ "\\49nky\\40201\\3aaf82\\3a\\3a1@" DOMAIN, "Inky@201:af82::1" },
	/* Domain and resource do not matter. */
	{ "\\49nky\\40201\\3aaf82\\3a\\3a1@BAREV.Example.ORG/res",
	    "Inky@201:af82::1" },
	/* Raw upper case that no server folded is kept as it came. */
	{ "Inky\\40201\\3aaf82\\3a\\3a1@" DOMAIN, "Inky@201:af82::1" },
	/* Long-form and upper-case addresses are accepted. */
	{ "alice\\400200\\3a0001\\3a\\3a0001@" DOMAIN, "alice@200:1::1" },
	{ "alice\\40[200\\3a1\\3a\\3a1]@" DOMAIN, "alice@200:1::1" },
	/* Typeable: the last '%' splits, '-' is ':' only in the address. */
	{ "inky%201-af82--1@" DOMAIN, "inky@201:af82::1" },
	{ "Inky%201-AF82--1@" DOMAIN "/phone", "Inky@201:af82::1" },
	{ "my-nick%201-af82--1@" DOMAIN, "my-nick@201:af82::1" },
	{ "inky%0200-0001--0001@" DOMAIN, "inky@200:1::1" },
	{ "inky%201:af82::1@" DOMAIN, "inky@201:af82::1" },
	{ "inky%201\\3aaf82\\3a\\3a1@" DOMAIN, "inky@201:af82::1" },
	/* Typeable with the letter escapes keeps the case. */
	{ "\\49nky%201-af82--1@" DOMAIN, "Inky@201:af82::1" },
};

static void
test_gateway_forms(void **state)
{
	struct barev_jid want;
	const char *cause;
	size_t i;

	for (i = 0; i < nitems(gw_forms); i++) {
		assert_int_equal(
		    barev_jid_parse(gw_forms[i].barev, 0, &want, &cause), 0);
		expect_barev(gw_forms[i].jid, &want);
	}
}

#define EXPECT_FORMS                                                           \
	"expected nick\\40address (XEP-0106) or nick%address "                 \
	"with - for : before the gateway domain, e.g. inky%201-af82--1"

static const struct {
	const char *jid;
	int flags;
	const char *cause;
} gw_bad[] = {
	{ "", 0, "the JID is empty" },
	{ DOMAIN, 0, "the gateway's own JID names no Barev contact" },
	{ DOMAIN "/res", 0, "the gateway's own JID names no Barev contact" },
	{ "@" DOMAIN, 0, "the localpart before '@' is empty" },
	{ "inky\\40201\\3a\\3a1@", 0, "the JID has no domain" },
	{ "inky\\40201\\3a\\3a1@" DOMAIN "/", 0,
	    "the resource after '/' is empty" },
	{ "inky\\40201\\3a\\3a1@example.org", 0,
	    "not a JID on the gateway's domain" },
	{ "inky\\40201\\3a\\3a1@" DOMAIN ".", 0,
	    "not a JID on the gateway's domain" },
	{ "inky\\40201\\3a\\3a1@x" DOMAIN, 0,
	    "not a JID on the gateway's domain" },
	{ "inky@" DOMAIN, 0, EXPECT_FORMS },
	{ "inky-201-af82--1@" DOMAIN, 0, EXPECT_FORMS },
	{ "\\40201\\3a\\3a1@" DOMAIN, 0, "the nick before '@' is empty" },
	{ "%201-af82--1@" DOMAIN, 0, "the nick before '@' is empty" },
	{ "inky\\40@" DOMAIN, 0, "the IPv6 address after '@' is missing" },
	{ "inky%@" DOMAIN, 0, "the IPv6 address after '@' is missing" },
	{ "inky%201_af82__1@" DOMAIN, 0,
	    "not an IPv6 address after '@' (e.g. inky@201:af82::1)" },
	{ "inky\\402001\\3adb8\\3a\\3a1@" DOMAIN, 0,
	    "not a Yggdrasil address (must be in 200::/7)" },
	{ "inky%--1@" DOMAIN, 0,
	    "not a Yggdrasil address (must be in 200::/7)" },
	{ "a%b%201--1@" DOMAIN, 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a\\40b\\40201\\3a\\3a1@" DOMAIN, 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a\\5cb\\40201\\3a\\3a1@" DOMAIN, 0,
	    "the nick must not contain any of \" & ' / : < > @ \\ %" },
	{ "a\\20b\\40201\\3a\\3a1@" DOMAIN, 0,
	    "the nick contains a space or a control character" },
	{ "12345678901234567890123456789012345678901234567890123456789012345"
	  "%201--1@" DOMAIN,
	    0, "the nick is longer than 64 bytes" },
};

static void
test_gateway_bad(void **state)
{
	struct barev_jid b, zero;
	const char *cause;
	size_t i;

	memset(&zero, 0, sizeof(zero));
	for (i = 0; i < nitems(gw_bad); i++) {
		cause = NULL;
		if (gateway_jid_to_barev(gw_bad[i].jid, DOMAIN, gw_bad[i].flags,
			&b, &cause) != -1)
			fail_msg("\"%s\" mapped", gw_bad[i].jid);
		if (cause == NULL || strcmp(cause, gw_bad[i].cause) != 0)
			fail_msg("\"%s\": cause \"%s\"", gw_bad[i].jid, cause);
		assert_memory_equal(&b, &zero, sizeof(b));
	}
	/* The test flag lets any address through, as for barev_jid_parse. */
	assert_int_equal(gateway_jid_to_barev("lo%--1@" DOMAIN, DOMAIN,
			     BAREV_ANY_ADDR, &b, &cause),
	    0);
	assert_string_equal(b.nick, "lo");
	assert_true(IN6_IS_ADDR_LOOPBACK(&b.addr));
}

/* --- XMPP JIDs ----------------------------------------------------------- */

static const struct {
	const char *jid;
	const char *local; /* NULL: none */
	const char *domain; /* NULL: jid_split fails */
	const char *resource; /* NULL: none; or the cause on failure */
} split_cases[] = {
	{ "romeo@example.net/orchard", "romeo", "example.net", "orchard" },
	{ "romeo@example.net", "romeo", "example.net", NULL },
	{ "example.net", NULL, "example.net", NULL },
	{ "example.net/res", NULL, "example.net", "res" },
	/* '@' and '/' after the first '/' belong to the resource. */
	{ "juliet@example.com/foo@bar/baz", "juliet", "example.com",
	    "foo@bar/baz" },
	{ "example.com/foo@bar", NULL, "example.com", "foo@bar" },
	/* Only the first '@' splits; the rest is the domain's problem. */
	{ "a@b@c", "a", "b@c", NULL },
	{ "\\49nky\\40201\\3a\\3a1@" DOMAIN "/x", "\\49nky\\40201\\3a\\3a1",
	    DOMAIN, "x" },
	{ "", NULL, NULL, "the JID is empty" },
	{ "@example.net", NULL, NULL, "the localpart before '@' is empty" },
	{ "romeo@", NULL, NULL, "the JID has no domain" },
	{ "romeo@/res", NULL, NULL, "the JID has no domain" },
	{ "/res", NULL, NULL, "the JID has no domain" },
	{ "romeo@example.net/", NULL, NULL, "the resource after '/' is empty" },
};

static void
expect_part(const char *part, size_t len, const char *want)
{
	if (want == NULL) {
		assert_null(part);
		assert_int_equal(len, 0);
		return;
	}
	assert_non_null(part);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(part, want, len);
}

static void
test_jid_split(void **state)
{
	struct jid_parts p;
	const char *cause;
	size_t i;

	for (i = 0; i < nitems(split_cases); i++) {
		cause = NULL;
		if (split_cases[i].domain == NULL) {
			if (jid_split(split_cases[i].jid, &p, &cause) != -1)
				fail_msg("\"%s\" split", split_cases[i].jid);
			assert_non_null(cause);
			assert_string_equal(cause, split_cases[i].resource);
			continue;
		}
		if (jid_split(split_cases[i].jid, &p, &cause) != 0)
			fail_msg("\"%s\": %s", split_cases[i].jid, cause);
		expect_part(p.local, p.local_len, split_cases[i].local);
		expect_part(p.domain, p.domain_len, split_cases[i].domain);
		expect_part(
		    p.resource, p.resource_len, split_cases[i].resource);
	}
}

static void
test_jid_split_limits(void **state)
{
	char jid[JID_MAX + 2];
	struct jid_parts p;
	const char *cause;

	/* Three parts of 1023 bytes each: the longest JID there is. */
	memset(jid, 'x', JID_MAX);
	jid[JID_PART_MAX] = '@';
	jid[2 * JID_PART_MAX + 1] = '/';
	jid[JID_MAX] = '\0';
	assert_int_equal(jid_split(jid, &p, &cause), 0);
	assert_int_equal(p.local_len, JID_PART_MAX);
	assert_int_equal(p.domain_len, JID_PART_MAX);
	assert_int_equal(p.resource_len, JID_PART_MAX);

	/* One byte more in any part is too long. */
	jid[JID_PART_MAX] = 'x';
	jid[JID_PART_MAX + 1] = '@';
	assert_int_equal(jid_split(jid, &p, &cause), -1);
	assert_string_equal(
	    cause, "a part of the JID is longer than 1023 bytes");
	jid[JID_PART_MAX] = '@';
	jid[JID_PART_MAX + 1] = 'x';
	jid[2 * JID_PART_MAX + 1] = 'x';
	jid[2 * JID_PART_MAX + 2] = '/';
	assert_int_equal(jid_split(jid, &p, &cause), -1);
	assert_string_equal(
	    cause, "a part of the JID is longer than 1023 bytes");
	jid[2 * JID_PART_MAX + 1] = '/';
	jid[2 * JID_PART_MAX + 2] = 'x';
	jid[JID_MAX] = 'x';
	jid[JID_MAX + 1] = '\0';
	assert_int_equal(jid_split(jid, &p, &cause), -1);
	assert_string_equal(cause, "the JID is longer than 3071 bytes");
	/* Nor may a resource. */
	memset(jid, 'x', JID_MAX);
	memcpy(jid, "a@b/", 4);
	jid[4 + JID_PART_MAX] = '\0';
	assert_int_equal(jid_split(jid, &p, &cause), 0);
	assert_int_equal(p.resource_len, JID_PART_MAX);
	jid[4 + JID_PART_MAX] = 'x';
	jid[5 + JID_PART_MAX] = '\0';
	assert_int_equal(jid_split(jid, &p, &cause), -1);
	assert_string_equal(
	    cause, "a part of the JID is longer than 1023 bytes");
	/* A domain alone may not exceed its own limit either. */
	memset(jid, 'x', JID_PART_MAX + 1);
	jid[JID_PART_MAX + 1] = '\0';
	assert_int_equal(jid_split(jid, &p, &cause), -1);
	assert_string_equal(
	    cause, "a part of the JID is longer than 1023 bytes");
}

static void
test_jid_bare_domain(void **state)
{
	struct jid_parts p;
	const char *cause;
	char *s;

	assert_int_equal(jid_bare("romeo@example.net/orchard", &s, &cause), 0);
	assert_string_equal(s, "romeo@example.net");
	free(s);
	assert_int_equal(jid_bare("example.net/a@b", &s, &cause), 0);
	assert_string_equal(s, "example.net");
	free(s);
	assert_int_equal(jid_bare("Romeo@Example.NET", &s, &cause), 0);
	assert_string_equal(s, "Romeo@Example.NET");
	free(s);
	assert_int_equal(jid_bare("romeo@/x", &s, &cause), -1);
	assert_null(s);
	assert_string_equal(cause, "the JID has no domain");

	assert_int_equal(
	    jid_domain("romeo@example.net/orchard", &s, &cause), 0);
	assert_string_equal(s, "example.net");
	free(s);
	assert_int_equal(jid_domain("example.net", &s, &cause), 0);
	assert_string_equal(s, "example.net");
	free(s);
	assert_int_equal(jid_domain("@example.net", &s, &cause), -1);
	assert_null(s);
	assert_string_equal(cause, "the localpart before '@' is empty");

	assert_int_equal(jid_split("x@BAREV.example.ORG/r", &p, &cause), 0);
	assert_true(jid_on_domain(&p, DOMAIN));
	assert_false(jid_on_domain(&p, "example.org"));
	assert_false(jid_on_domain(&p, DOMAIN "x"));
	assert_false(jid_on_domain(&p, ""));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_parse_format),
		cmocka_unit_test(test_addr_equal),
		cmocka_unit_test(test_addr_is_yggdrasil),
		cmocka_unit_test(test_addr_parse_listen),
		cmocka_unit_test(test_barev_parse_ok),
		cmocka_unit_test(test_barev_parse_bad),
		cmocka_unit_test(test_barev_nick_check),
		cmocka_unit_test(test_barev_nick_refuses_each_special),
		cmocka_unit_test(test_barev_equal),
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_escape_bad),
		cmocka_unit_test(test_unescape),
		cmocka_unit_test(test_gateway_from_barev),
		cmocka_unit_test(test_gateway_roundtrip),
		cmocka_unit_test(test_gateway_forms),
		cmocka_unit_test(test_gateway_bad),
		cmocka_unit_test(test_jid_split),
		cmocka_unit_test(test_jid_split_limits),
		cmocka_unit_test(test_jid_bare_domain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
