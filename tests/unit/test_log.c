/* The log: one line per event whatever text it carries, and quoted fields a peer cannot end. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "utf8.h"

/* What one call of fn wrote to stderr, as a string to free. */
static char *
captured(void (*fn)(const void *), const void *arg)
{
	FILE *f = tmpfile();
	int saved = dup(2);
	char *out;
	long n;

	assert_non_null(f);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(f), 2) == 2);
	fn(arg);
	fflush(stderr);
	assert_true(dup2(saved, 2) == 2);
	close(saved);
	n = ftell(f);
	assert_true(n > 0);
	out = calloc(1, (size_t)n + 1);
	assert_non_null(out);
	rewind(f);
	assert_int_equal(fread(out, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return out;
}

static void
log_peer_text(const void *arg)
{
	char q[LOG_QUOTE_SIZE];

	log_info("pipe 1: rejected reason=test from=%s",
	    log_quote(q, sizeof(q), arg));
}

static size_t
count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

/* Each of these, in a log line, must not start another line or hide one. */
static void
test_one_line_per_event(void **state)
{
	static const char *const forged[] = {
		"x\n2026-12-07T00:00:00.000Z barev-gateway info: forged",
		"x\r2026-12-07T00:00:00.000Z barev-gateway info: forged",
		"x\x1b[2Kforged",
		"x\xc2\x85nel", /* U+0085 NEL */
		"x\xe2\x80\xa8ls", /* U+2028 LINE SEPARATOR */
		"x\xff\xfe bytes that are not UTF-8",
		"x\x7f del",
	};
	size_t i;
	char *out;

	log_init("barev-gateway", LOG_LEVEL_INFO, 0);
	for (i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
		out = captured(log_peer_text, forged[i]);
		assert_int_equal(count_lines(out), 1);
		assert_non_null(strstr(out, "from=\"x\\x"));
		assert_null(strchr(out, '\r'));
		assert_null(strchr(out, '\x1b'));
		free(out);
	}
	/* Ordinary UTF-8 stays readable. */
	out = captured(log_peer_text, "\xd5\xa2\xd5\xa1\xd6\x80\xd6\x87");
	assert_non_null(
	    strstr(out, "from=\"\xd5\xa2\xd5\xa1\xd6\x80\xd6\x87\""));
	free(out);
}

static void
log_raw(const void *arg)
{
	log_info("%s", (const char *)arg);
}

/* A caller that forgot log_quote still cannot start a line. */
static void
test_sink_escapes(void **state)
{
	char *out;

	log_init("barev-gateway", LOG_LEVEL_INFO, 0);
	out = captured(log_raw, "a\nb\tc");
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "a\\x0ab\\x09c\n"));
	free(out);
}

static void
test_quote(void **state)
{
	char buf[LOG_QUOTE_SIZE], small[16];

	assert_string_equal(log_quote(buf, sizeof(buf), NULL), "-");
	assert_string_equal(log_quote(buf, sizeof(buf), ""), "\"\"");
	/* A quote cannot end the field and add a key of its own. */
	assert_string_equal(log_quote(buf, sizeof(buf), "x\" reason=ok"),
	    "\"x\\\" reason=ok\"");
	assert_string_equal(log_quote(buf, sizeof(buf), "a\\b"), "\"a\\\\b\"");
	/* Cut to fit, between characters, and marked. */
	assert_string_equal(log_quote(small, sizeof(small), "abcdefghijklmnop"),
	    "\"abcdefghij...\"");
	assert_string_equal(
	    log_quote(small, sizeof(small), "abcdefghi\xe2\x98\x83z"),
	    "\"abcdefghi...\"");
}

static void
test_utf8_prefix(void **state)
{
	const char *snowmen = "\xe2\x98\x83\xe2\x98\x83"; /* 2 x 3 bytes */
	size_t i;

	assert_int_equal(utf8_prefix("abc", 3, 10), 3);
	assert_int_equal(utf8_prefix("abc", 3, 2), 2);
	for (i = 0; i <= 6; i++)
		assert_int_equal(utf8_prefix(snowmen, 6, i), i / 3 * 3);
	/* Four-byte sequences too. */
	assert_int_equal(utf8_prefix("a\xf0\x9f\x98\x80", 5, 4), 1);
	assert_int_equal(utf8_prefix("a\xf0\x9f\x98\x80", 5, 5), 5);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_line_per_event),
		cmocka_unit_test(test_sink_escapes),
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_utf8_prefix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
