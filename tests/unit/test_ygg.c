/* The Yggdrasil node: getSelf answers, subnets, per-user addresses. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "addr.h"
#include "ygg.h"

static const char *
fmt(const struct in6_addr *a)
{
	static char buf[4][ADDR_STRLEN];
	static int i;

	return addr_format(a, buf[i++ % 4]);
}

static void
test_parse_self(void **state)
{
	/* yggdrasil 0.4.7's answer, as read from its admin socket. */
	static const char answer[] =
	    "{\n  \"status\": \"success\",\n  \"request\": null,\n"
	    "  \"response\": {\n    \"build_name\": \"unknown\",\n"
	    "    \"key\": \"f403feb2e999012dbb1000f7ca4f58c0\",\n"
	    "    \"address\": \"200:17f8:29a:2ccd:fda4:89df:fe10:6b61\",\n"
	    "    \"coords\": [],\n"
	    "    \"subnet\": \"300:17f8:29a:2ccd::/64\"\n  }\n}\n";
	struct ygg_node n;
	const char *cause;

	assert_int_equal(ygg_parse_self(answer, strlen(answer), &n, &cause), 0);
	assert_true(n.have_addr && n.have_subnet);
	assert_string_equal(
	    fmt(&n.addr), "200:17f8:29a:2ccd:fda4:89df:fe10:6b61");
	assert_string_equal(fmt(&n.subnet), "300:17f8:29a:2ccd::");
}

static void
test_parse_self_partial_and_bad(void **state)
{
	static const char no_subnet[] =
	    "{\"response\":{\"address\":\"201:af82:9f2f:7809::1\"}}";
	static const char not_ygg[] =
	    "{\"response\":{\"address\":\"2001:db8::1\"}}";
	static const char escaped[] =
	    "{\"response\":{\"address\":\"200:\\u0031::1\"}}";
	static const char truncated[] = "{\"response\":{\"address\":\"200:1::";
	struct ygg_node n;
	const char *cause;

	/* No subnet: it follows from the address. */
	assert_int_equal(
	    ygg_parse_self(no_subnet, strlen(no_subnet), &n, &cause), 0);
	assert_string_equal(fmt(&n.subnet), "301:af82:9f2f:7809::");
	assert_int_equal(
	    ygg_parse_self(not_ygg, strlen(not_ygg), &n, &cause), -1);
	assert_string_equal(
	    cause, "no Yggdrasil address (200::/8) in the answer");
	assert_int_equal(
	    ygg_parse_self(escaped, strlen(escaped), &n, &cause), -1);
	assert_int_equal(
	    ygg_parse_self(truncated, strlen(truncated), &n, &cause), -1);
	assert_int_equal(ygg_parse_self("", 0, &n, &cause), -1);
}

static void
test_subnet_of(void **state)
{
	struct in6_addr a, sn;

	assert_int_equal(
	    addr_parse("200:17f8:29a:2ccd:fda4:89df:fe10:6b61", &a), 0);
	ygg_subnet_of(&a, &sn);
	assert_string_equal(fmt(&sn), "300:17f8:29a:2ccd::");
	assert_true(ygg_in_subnet(&sn, &sn));
	assert_false(ygg_in_subnet(&sn, &a));
}

static void
test_user_address(void **state)
{
	struct in6_addr sn, a1, a1again, a2, a1next;

	assert_int_equal(addr_parse("300:17f8:29a:2ccd::", &sn), 0);
	ygg_user_address(&sn, "alice@example.org", 0, &a1);
	ygg_user_address(&sn, "alice@example.org", 0, &a1again);
	ygg_user_address(&sn, "bob@example.org", 0, &a2);
	ygg_user_address(&sn, "alice@example.org", 1, &a1next);
	/* Stable, inside the /64, and different per JID and per attempt. */
	assert_memory_equal(&a1, &a1again, sizeof(a1));
	assert_true(ygg_in_subnet(&sn, &a1));
	assert_true(ygg_in_subnet(&sn, &a2));
	assert_memory_not_equal(&a1, &a2, sizeof(a1));
	assert_memory_not_equal(&a1, &a1next, sizeof(a1));
	/*
	 * Pinned, because a change would move every user of every
	 * installation: printf 'barev-gateway user address\nalice@example.org\n0'
	 * | sha256sum starts with a3e80c001a856ba4.
	 */
	assert_string_equal(fmt(&a1), "300:17f8:29a:2ccd:a3e8:c00:1a85:6ba4");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_self),
		cmocka_unit_test(test_parse_self_partial_and_bad),
		cmocka_unit_test(test_subnet_of),
		cmocka_unit_test(test_user_address),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
