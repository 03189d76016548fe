/* Config loader: defaults, every key, and one clear line for each kind of bad file. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "conf.h"
#include "xmalloc.h"

static char *
fixture(const char *name)
{
	const char *src = getenv("TEST_SRCDIR");
	char *path;

	xasprintf(&path, "%s/tests/unit/conf/%s", src ? src : ".", name);
	return path;
}

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long len;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = xmalloc((size_t)len + 1);
	assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

/* Loads a fixture that must fail; returns the cause for the caller to check. */
static char *
load_bad(const char *name)
{
	char *path = fixture(name), *cause = NULL;
	struct conf *conf = NULL;

	assert_int_equal(conf_load(path, &conf, &cause), -1);
	assert_null(conf);
	assert_non_null(cause);
	assert_null(strchr(cause, '\n'));
	/* Every message starts with the file it is about. */
	assert_int_equal(strncmp(cause, path, strlen(path)), 0);
	free(path);
	return cause;
}

static void
expect_bad(const char *name, const char *line_and_key, const char *words)
{
	char *cause = load_bad(name);

	if (strstr(cause, line_and_key) == NULL ||
	    (words != NULL && strstr(cause, words) == NULL))
		fail_msg("%s: unexpected message \"%s\"", name, cause);
	free(cause);
}

static void
test_minimal_gets_defaults(void **state)
{
	char *path = fixture("minimal.conf"), *cause = NULL;
	struct conf *c = NULL;
	char buf[ADDR_STRLEN];

	assert_int_equal(conf_load(path, &c, &cause), 0);
	assert_string_equal(c->component_jid, "barev.localhost");
	assert_string_equal(c->component_secret, "s");
	assert_null(c->component_secret_file);
	assert_string_equal(c->component_host, "localhost");
	assert_int_equal(c->component_port, 5347);
	assert_true(c->reconnect_min == 1.0 && c->reconnect_max == 60.0);
	assert_string_equal(c->barev_address_text, "");
	assert_int_equal(c->barev_listen.n, 2);
	assert_string_equal(addr_format(&c->barev_listen.v[0].addr, buf), "::");
	assert_int_equal(c->barev_listen.v[0].port, 5299);
	assert_string_equal(addr_format(&c->barev_listen.v[1].addr, buf), "::");
	assert_int_equal(c->barev_listen.v[1].port, 1337);
	assert_int_equal(c->barev_default_port, 5299);
	assert_true(c->ping_interval == 120.0 && c->ping_timeout == 10.0);
	assert_int_equal(c->ping_failures, 3);
	assert_true(c->handshake_timeout == 10.0 && c->connect_timeout == 10.0);
	assert_true(c->redial_min == 5.0 && c->redial_max == 900.0);
	assert_true(
	    c->refused_redial_min == 600.0 && c->refused_redial_max == 21600.0);
	assert_false(c->allow_any_address);
	assert_true(c->request_timeout == 300.0);
	assert_true(c->request_lifetime == 604800.0);
	assert_true(c->stranger_silence == 10.0);
	assert_true(c->request_interval == 3600.0);
	assert_int_equal(c->requests_per_user, 20);
	assert_int_equal(c->requests_per_subnet, 3);
	assert_true(c->message_lifetime == 604800.0);
	assert_int_equal(c->max_stanza_bytes, 65536);
	assert_int_equal(c->max_depth, 32);
	assert_int_equal(c->max_output_bytes, 1048576);
	assert_int_equal(c->max_pipes, 20000);
	assert_int_equal(c->max_pipes_per_address, 16);
	assert_int_equal(c->inbound_per_minute, 60);
	assert_int_equal(c->max_pipes_per_subnet, 64);
	assert_int_equal(c->inbound_per_minute_per_subnet, 240);
	assert_int_equal(c->max_stranger_pipes, 200);
	assert_int_equal(c->dials_concurrent, 64);
	assert_int_equal(c->dials_per_second, 50);
	assert_string_equal(c->storage_path, "/var/lib/barev-gateway/state.db");
	assert_int_equal(c->log_level, LOG_LEVEL_INFO);
	assert_false(c->log_syslog);
	/* Nobody listed: the users of the domain the component lives under. */
	assert_int_equal(c->access_domains.n, 1);
	assert_string_equal(c->access_domains.v[0], "localhost");
	assert_int_equal(c->access_jids.n, 0);
	assert_null(c->warning);
	conf_free(c);
	free(path);
}

static void
test_every_key_set(void **state)
{
	char *path = fixture("full.conf"), *text = slurp(path), *cause = NULL;
	char secret[] = "/tmp/bg-test-secret-XXXXXX", *p, *full;
	struct conf *c = NULL;
	char buf[ADDR_STRLEN];
	int fd;

	fd = mkstemp(secret);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "from-file\nignored\n", 18), 18);
	close(fd);
	p = strstr(text, "@SECRET@");
	assert_non_null(p);
	*p = '\0';
	xasprintf(&full, "%s%s%s", text, secret, p + 8);

	if (conf_load_string("full.conf", full, &c, &cause) != 0)
		fail_msg("full.conf: %s", cause);
	assert_string_equal(c->component_jid, "gw.example.net");
	assert_string_equal(c->component_secret, "from-file");
	assert_string_equal(c->component_host, "::1");
	assert_int_equal(c->component_port, 15347);
	assert_true(c->reconnect_min == 0.5 && c->reconnect_max == 30.0);
	/* Written in long upper-case form, kept as parsed bytes. */
	assert_string_equal(addr_format(&c->barev_address, buf),
	    "201:af82:9f2f:7809:be0c:360a:1587:6be7");
	assert_int_equal(c->barev_listen.n, 3);
	assert_int_equal(c->barev_listen.v[1].port, 1337);
	assert_string_equal(addr_format(&c->barev_listen.v[1].addr, buf), "::");
	assert_string_equal(
	    addr_format(&c->barev_listen.v[2].addr, buf), "201:af82::1");
	assert_int_equal(c->barev_listen.v[2].port, 5299);
	assert_int_equal(c->barev_default_port, 1337);
	assert_true(c->ping_interval == 2.5 && c->ping_timeout == 1.0);
	assert_int_equal(c->ping_failures, 5);
	assert_true(c->handshake_timeout == 3.0 && c->connect_timeout == 4.0);
	assert_true(c->redial_min == 1.0 && c->redial_max == 60.0);
	assert_true(
	    c->refused_redial_min == 120.0 && c->refused_redial_max == 7200.0);
	assert_true(c->allow_any_address);
	assert_true(c->request_timeout == 20.0);
	assert_true(c->request_lifetime == 2.0);
	assert_true(c->stranger_silence == 3.0);
	assert_true(c->request_interval == 60.0);
	assert_int_equal(c->requests_per_user, 4);
	assert_int_equal(c->requests_per_subnet, 1);
	assert_true(c->message_lifetime == 3600.0);
	assert_int_equal(c->max_stanza_bytes, 4096);
	assert_int_equal(c->max_depth, 8);
	assert_int_equal(c->max_output_bytes, 8192);
	assert_int_equal(c->max_pipes, 2000);
	assert_int_equal(c->max_pipes_per_address, 2);
	assert_int_equal(c->inbound_per_minute, 5);
	assert_int_equal(c->max_pipes_per_subnet, 9);
	assert_int_equal(c->inbound_per_minute_per_subnet, 11);
	assert_int_equal(c->max_stranger_pipes, 13);
	assert_int_equal(c->dials_concurrent, 3);
	assert_int_equal(c->dials_per_second, 7);
	assert_string_equal(c->storage_path, "/tmp/x.db");
	assert_int_equal(c->log_level, LOG_LEVEL_DEBUG);
	assert_true(c->log_syslog);
	assert_int_equal(c->access_domains.n, 2);
	assert_string_equal(c->access_domains.v[1], "example.org");
	assert_int_equal(c->access_jids.n, 1);
	assert_string_equal(c->access_jids.v[0], "guest@example.com");
	/* access.admins gates nothing yet: accepted, with a warning. */
	assert_non_null(c->warning);
	/* Keeping it at the end of full.conf keeps this line number. */
	assert_non_null(
	    strstr(c->warning, "full.conf:49: key 'access.admins'"));
	assert_non_null(strstr(c->warning, "ignored"));
	conf_free(c);
	unlink(secret);
	free(full);
	free(text);
	free(path);
}

/* The shipped example documents every key with its default value. */
static void
test_example_documents_every_key(void **state)
{
	const char *src = getenv("TEST_SRCDIR");
	char *path, *text, *cause = NULL, pattern[128];
	struct conf *ex = NULL;
	const char *key, *leaf;
	size_t i;

	xasprintf(&path, "%s/conf/barev-gateway.conf.example", src ? src : ".");
	text = slurp(path);
	for (i = 0; (key = conf_key_name(i)) != NULL; i++) {
		leaf = strchr(key, '.') + 1;
		snprintf(pattern, sizeof(pattern), "%s = ", leaf);
		if (strstr(text, pattern) == NULL)
			fail_msg("example does not document %s", key);
	}
	assert_true(i >= 30);
	if (conf_load(path, &ex, &cause) != 0)
		fail_msg("example: %s", cause);
	assert_int_equal(ex->component_port, 5347);
	assert_int_equal(ex->barev_listen.n, 2);
	assert_int_equal(ex->barev_listen.v[0].port, 5299);
	assert_int_equal(ex->barev_listen.v[1].port, 1337);
	assert_int_equal(ex->max_stanza_bytes, 65536);
	assert_int_equal(ex->max_pipes, 20000);
	assert_true(ex->ping_interval == 120.0 && ex->redial_max == 900.0);
	assert_string_equal(
	    ex->storage_path, "/var/lib/barev-gateway/state.db");
	assert_int_equal(ex->access_domains.n, 1);
	assert_string_equal(ex->access_domains.v[0], "example.org");
	conf_free(ex);
	free(text);
	free(path);
}

static void
test_syntax_error(void **state)
{
	expect_bad("syntax.conf", ":3: syntax error", NULL);
}

static void
test_unknown_key(void **state)
{
	expect_bad("unknown-key.conf", ":4: unknown key 'limits.pipez'", NULL);
}

static void
test_wrong_type(void **state)
{
	expect_bad("wrong-type.conf", ":2: key 'component.port'",
	    "must be an integer");
}

static void
test_out_of_range(void **state)
{
	expect_bad("out-of-range.conf", ":3: key 'barev.ping_failures'",
	    "from 1 to 100");
}

static void
test_missing_required(void **state)
{
	expect_bad(
	    "missing-jid.conf", "missing required key 'component.jid'", NULL);
	expect_bad(
	    "no-secret.conf", "missing required key 'component.secret'", NULL);
}

static void
test_unreadable_secret_file(void **state)
{
	expect_bad("secret-file-missing.conf",
	    ":2: key 'component.secret_file'",
	    "/nonexistent/barev-secret: No such file or directory");
	expect_bad("both-secrets.conf", ":2: key 'component.secret_file'",
	    "set only one");
}

static void
test_bad_values(void **state)
{
	expect_bad("bad-listen.conf", ":3: key 'barev.listen'", "65535");
	expect_bad("bad-level.conf", ":2: key 'log.level'", "debug");
	expect_bad("not-yggdrasil.conf", ":2: key 'barev.address'", "200::/7");
	expect_bad("bad-jid.conf", ":1: key 'component.jid'", "lower-case");
	expect_bad("backoff-order.conf", "'component.reconnect_max'",
	    "must not be below");
	expect_bad("refused-backoff-order.conf", "'barev.refused_redial_max'",
	    "must not be below");
	expect_bad("bad-access-jid.conf", ":2: key 'access.jids'", "bare JID");
}

/* Regression: with secret_file the rules after the secret were skipped. */
static void
test_secret_file_keeps_other_rules(void **state)
{
	char secret[] = "/tmp/bg-test-secret-XXXXXX", *text, *cause = NULL;
	struct conf *c = NULL;
	int fd;

	fd = mkstemp(secret);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "s\n", 2), 2);
	close(fd);
	xasprintf(&text,
	    "component = { jid = \"barev.example.org\"; secret_file = "
	    "\"%s\"; };\n",
	    secret);
	if (conf_load_string("sf", text, &c, &cause) != 0)
		fail_msg("sf: %s", cause);
	/* Nobody listed: the users of the domain the component lives under. */
	assert_int_equal(c->access_domains.n, 1);
	assert_string_equal(c->access_domains.v[0], "example.org");
	conf_free(c);
	free(text);
	xasprintf(&text,
	    "component = { jid = \"barev.example.org\"; secret_file = "
	    "\"%s\"; reconnect_min = 9; reconnect_max = 2; };\n",
	    secret);
	c = NULL;
	assert_int_equal(conf_load_string("sf", text, &c, &cause), -1);
	assert_non_null(strstr(cause, "must not be below"));
	free(cause);
	free(text);
	unlink(secret);
}

/* Two listeners on one address and port, however written, cannot both bind. */
static void
test_duplicate_listen(void **state)
{
	expect_bad(
	    "dup-listen.conf", ":3: key 'barev.listen'", "[::]:5299 twice");
	/* [0::0]:1337 and :1337 are one address; [201:af82::1] is 5299. */
	expect_bad("dup-listen-forms.conf", ":3: key 'barev.listen'",
	    "[::]:1337 twice");
}

/* Loads name (which must load) and returns conf_check_storage's cause. */
static char *
storage_bad(const char *name)
{
	char *path = fixture(name), *cause = NULL;
	struct conf *c = NULL;

	if (conf_load(path, &c, &cause) != 0)
		fail_msg("%s: %s", name, cause);
	assert_int_equal(conf_check_storage(c, &cause), -1);
	assert_non_null(cause);
	assert_null(strchr(cause, '\n'));
	assert_int_equal(strncmp(cause, path, strlen(path)), 0);
	conf_free(c);
	free(path);
	return cause;
}

static void
expect_storage_bad(
    const char *name, const char *line_and_key, const char *words)
{
	char *cause = storage_bad(name);

	if (strstr(cause, line_and_key) == NULL || strstr(cause, words) == NULL)
		fail_msg("%s: unexpected message \"%s\"", name, cause);
	free(cause);
}

static void
test_storage_directory(void **state)
{
	char dir[] = "/tmp/bg-test-store-XXXXXX", *text, *cause = NULL;
	struct conf *c = NULL;

	expect_storage_bad("storage-no-dir.conf", ":3: key 'storage.path'",
	    "/nonexistent/barev-gateway: No such file or directory");
	expect_storage_bad("storage-not-dir.conf", ":2: key 'storage.path'",
	    "/dev/null: Not a directory");
	expect_storage_bad("storage-is-dir.conf", ":2: key 'storage.path'",
	    "/tmp is a directory");
	/* A file that does not exist yet, in a directory we may write. */
	assert_non_null(mkdtemp(dir));
	xasprintf(&text,
	    "component = { jid = \"a.example\"; secret = \"s\"; };\n"
	    "storage = { path = \"%s/state.db\"; };\n",
	    dir);
	assert_int_equal(conf_load_string("good", text, &c, &cause), 0);
	if (conf_check_storage(c, &cause) != 0)
		fail_msg("good: %s", cause);
	conf_free(c);
	rmdir(dir);
	free(text);
}

static void
test_missing_file(void **state)
{
	char *cause = NULL;
	struct conf *c = NULL;

	assert_int_equal(conf_load("/nonexistent/gw.conf", &c, &cause), -1);
	assert_string_equal(cause,
	    "/nonexistent/gw.conf: cannot read: No such file or directory");
	free(cause);
}

static const char *warned[8];
static size_t nwarned;

static void
record_warning(const char *key)
{
	if (nwarned < 8)
		warned[nwarned++] = key;
}

static void
test_reload_keeps_fixed_keys(void **state)
{
	struct conf *old = NULL, *fresh = NULL;
	char *cause = NULL;

	assert_int_equal(conf_load_string("old",
			     "component = { jid = \"a.example\"; secret = "
			     "\"s\"; port = 1; };\n"
			     "log = { level = \"info\"; };\n",
			     &old, &cause),
	    0);
	assert_int_equal(
	    conf_load_string("new",
		"component = { jid = \"b.example\"; secret = \"s\"; port = 2; "
		"reconnect_max = 9; };\n"
		"log = { level = \"debug\"; };\n",
		&fresh, &cause),
	    0);
	nwarned = 0;
	conf_keep_fixed(fresh, old, record_warning);
	assert_int_equal(nwarned, 2);
	assert_string_equal(warned[0], "component.jid");
	assert_string_equal(warned[1], "component.port");
	assert_string_equal(fresh->component_jid, "a.example");
	assert_int_equal(fresh->component_port, 1);
	/* Reloadable keys keep their new values. */
	assert_int_equal(fresh->log_level, LOG_LEVEL_DEBUG);
	assert_true(fresh->reconnect_max == 9.0);
	conf_free(old);
	conf_free(fresh);
}

/* Regression: padding in the listen list made every reload report a change. */
static void
test_reload_unchanged_warns_nothing(void **state)
{
	static const char text[] =
	    "component = { jid = \"a.example\"; secret = \"s\"; };\n"
	    "barev = { listen = [ \"[::1]:5299\", \":1337\" ]; };\n";
	struct conf *old = NULL, *fresh = NULL;
	char *cause = NULL;

	assert_int_equal(conf_load_string("old", text, &old, &cause), 0);
	assert_int_equal(conf_load_string("new", text, &fresh, &cause), 0);
	nwarned = 0;
	conf_keep_fixed(fresh, old, record_warning);
	assert_int_equal(nwarned, 0);
	conf_free(old);
	conf_free(fresh);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal_gets_defaults),
		cmocka_unit_test(test_every_key_set),
		cmocka_unit_test(test_example_documents_every_key),
		cmocka_unit_test(test_syntax_error),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_wrong_type),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_missing_required),
		cmocka_unit_test(test_unreadable_secret_file),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_secret_file_keeps_other_rules),
		cmocka_unit_test(test_duplicate_listen),
		cmocka_unit_test(test_storage_directory),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_reload_keeps_fixed_keys),
		cmocka_unit_test(test_reload_unchanged_warns_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
