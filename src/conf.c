#include "config.h"

#include <errno.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "conf.h"
#include "xmalloc.h"

enum conf_type {
	CT_STRING,
	CT_INT,
	CT_SECONDS,
	CT_BOOL,
	CT_STRLIST,
	CT_LISTEN,
	CT_LOGLEVEL,
	CT_IGNORED, /* accepted with a warning, so that old files still load */
};

/* A string value's extra check: 0, or -1 with a cause for the person. */
typedef int (*conf_check)(
    struct conf *conf, const char *value, const char **cause);

/* The one table of keys: type, bounds, default, whether SIGHUP may change it. */
struct conf_key {
	const char *path;
	enum conf_type type;
	size_t offset;
	double min;
	double max;
	const char *def; /* NULL: no default (required unless optional) */
	int optional;
	int reloadable;
	conf_check check;
};

static int check_domain(struct conf *, const char *, const char **);
static int check_barev_address(struct conf *, const char *, const char **);
static int check_jid(struct conf *, const char *, const char **);
static int check_mode(struct conf *, const char *, const char **);
static int check_subnet(struct conf *, const char *, const char **);

#define OFF(f) offsetof(struct conf, f)
static const struct conf_key keys[] = {
	{ "component.jid", CT_STRING, OFF(component_jid), 0, 0, NULL, 0, 0,
	    check_domain },
	{ "component.secret", CT_STRING, OFF(component_secret), 0, 0, NULL, 1,
	    0, NULL },
	{ "component.secret_file", CT_STRING, OFF(component_secret_file), 0, 0,
	    NULL, 1, 0, NULL },
	{ "component.host", CT_STRING, OFF(component_host), 0, 0, "localhost",
	    0, 0, NULL },
	{ "component.port", CT_INT, OFF(component_port), 1, 65535, "5347", 0, 0,
	    NULL },
	{ "component.reconnect_min", CT_SECONDS, OFF(reconnect_min), 0.1, 3600,
	    "1", 0, 1, NULL },
	{ "component.reconnect_max", CT_SECONDS, OFF(reconnect_max), 1, 86400,
	    "60", 0, 1, NULL },

	{ "barev.address", CT_STRING, OFF(barev_address_text), 0, 0, "", 0, 0,
	    check_barev_address },
	{ "barev.address_mode", CT_STRING, OFF(address_mode), 0, 0, "shared", 0,
	    0, check_mode },
	{ "barev.subnet", CT_STRING, OFF(barev_subnet_text), 0, 0, "", 0, 0,
	    check_subnet },
	{ "barev.admin_socket", CT_STRING, OFF(admin_socket), 0, 0,
	    "/var/run/yggdrasil/yggdrasil.sock", 0, 0, NULL },
	/*
	 * The specification's port and the one the Pidgin plugin and the
	 * Pascal library dial by default; a list default is space-separated.
	 */
	{ "barev.listen", CT_LISTEN, OFF(barev_listen), 0, 0,
	    "[::]:5299 [::]:1337", 0, 0, NULL },
	{ "barev.default_port", CT_INT, OFF(barev_default_port), 1, 65535,
	    "5299", 0, 1, NULL },
	{ "barev.ping_interval", CT_SECONDS, OFF(ping_interval), 0.1, 3600,
	    "120", 0, 1, NULL },
	{ "barev.ping_timeout", CT_SECONDS, OFF(ping_timeout), 0.1, 600, "10",
	    0, 1, NULL },
	{ "barev.ping_failures", CT_INT, OFF(ping_failures), 1, 100, "3", 0, 1,
	    NULL },
	{ "barev.handshake_timeout", CT_SECONDS, OFF(handshake_timeout), 0.1,
	    600, "10", 0, 1, NULL },
	{ "barev.connect_timeout", CT_SECONDS, OFF(connect_timeout), 0.1, 600,
	    "10", 0, 1, NULL },
	{ "barev.redial_min", CT_SECONDS, OFF(redial_min), 0.1, 3600, "5", 0, 1,
	    NULL },
	{ "barev.redial_max", CT_SECONDS, OFF(redial_max), 1, 86400, "900", 0,
	    1, NULL },
	{ "barev.refused_redial_min", CT_SECONDS, OFF(refused_redial_min), 0.1,
	    86400, "600", 0, 1, NULL },
	{ "barev.refused_redial_max", CT_SECONDS, OFF(refused_redial_max), 1,
	    7 * 86400, "21600", 0, 1, NULL },
	{ "barev.allow_any_address", CT_BOOL, OFF(allow_any_address), 0, 0,
	    "false", 0, 0, NULL },
	{ "barev.request_timeout", CT_SECONDS, OFF(request_timeout), 1, 86400,
	    "300", 0, 1, NULL },
	{ "barev.request_lifetime", CT_SECONDS, OFF(request_lifetime), 1,
	    86400 * 365, "604800", 0, 1, NULL },
	{ "barev.stranger_silence", CT_SECONDS, OFF(stranger_silence), 1, 600,
	    "10", 0, 1, NULL },

	{ "limits.stanza_bytes", CT_INT, OFF(max_stanza_bytes), 512,
	    16 * 1024 * 1024, "65536", 0, 1, NULL },
	{ "limits.depth", CT_INT, OFF(max_depth), 4, 1024, "32", 0, 1, NULL },
	{ "limits.output_bytes", CT_INT, OFF(max_output_bytes), 4096,
	    256 * 1024 * 1024, "1048576", 0, 1, NULL },
	{ "limits.pipes", CT_INT, OFF(max_pipes), 1, 1000000, "20000", 0, 1,
	    NULL },
	{ "limits.pipes_per_address", CT_INT, OFF(max_pipes_per_address), 1,
	    100000, "16", 0, 1, NULL },
	{ "limits.inbound_per_minute", CT_INT, OFF(inbound_per_minute), 1,
	    1000000, "60", 0, 1, NULL },
	/* Every Yggdrasil node routes a whole /64: count that too. */
	{ "limits.pipes_per_subnet", CT_INT, OFF(max_pipes_per_subnet), 1,
	    1000000, "64", 0, 1, NULL },
	{ "limits.inbound_per_minute_per_subnet", CT_INT,
	    OFF(inbound_per_minute_per_subnet), 1, 1000000, "240", 0, 1, NULL },
	{ "limits.stranger_pipes", CT_INT, OFF(max_stranger_pipes), 1, 1000000,
	    "200", 0, 1, NULL },
	{ "limits.dials_concurrent", CT_INT, OFF(dials_concurrent), 1, 100000,
	    "64", 0, 1, NULL },
	{ "limits.dials_per_second", CT_INT, OFF(dials_per_second), 1, 100000,
	    "50", 0, 1, NULL },
	{ "limits.dials_per_user", CT_INT, OFF(dials_per_user), 1, 100000, "10",
	    0, 1, NULL },
	{ "limits.request_interval", CT_SECONDS, OFF(request_interval), 0,
	    86400 * 30, "3600", 0, 1, NULL },
	{ "limits.requests_per_user", CT_INT, OFF(requests_per_user), 1, 100000,
	    "20", 0, 1, NULL },
	{ "limits.requests_per_subnet", CT_INT, OFF(requests_per_subnet), 1,
	    100000, "3", 0, 1, NULL },
	{ "limits.message_attempts", CT_INT, OFF(message_attempts), 1, 1000,
	    "3", 0, 1, NULL },
	{ "limits.presence_interval", CT_SECONDS, OFF(presence_interval), 0.01,
	    60, "0.5", 0, 1, NULL },

	{ "storage.path", CT_STRING, OFF(storage_path), 0, 0,
	    "/var/lib/barev-gateway/state.db", 0, 0, NULL },
	{ "storage.message_lifetime", CT_SECONDS, OFF(message_lifetime), 1,
	    86400 * 365, "604800", 0, 1, NULL },

	{ "log.level", CT_LOGLEVEL, OFF(log_level), 0, 0, "info", 0, 1, NULL },
	{ "log.syslog", CT_BOOL, OFF(log_syslog), 0, 0, "false", 0, 1, NULL },

	/* Empty domains and jids: the domain the component lives under. */
	{ "access.domains", CT_STRLIST, OFF(access_domains), 0, 0, "", 0, 1,
	    check_domain },
	{ "access.jids", CT_STRLIST, OFF(access_jids), 0, 0, "", 0, 1,
	    check_jid },
	/*
	 * No administrative command exists yet; the key was in the shipped
	 * example, so refusing it would stop gateways that copied it.
	 */
	{ "access.admins", CT_IGNORED, 0, 0, 0, NULL, 1, 1, NULL },
};
#undef OFF
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static void *
field(struct conf *conf, const struct conf_key *k)
{
	return (char *)conf + k->offset;
}

static const void *
cfield(const struct conf *conf, const struct conf_key *k)
{
	return (const char *)conf + k->offset;
}

static int
check_domain(struct conf *conf, const char *v, const char **cause)
{
	const char *p;

	if (*v == '\0' || strlen(v) > 1023) {
		*cause = "must be a domain name of 1 to 1023 characters";
		return -1;
	}
	for (p = v; *p != '\0'; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		    *p == '-' || *p == '.')
			continue;
		*cause =
		    "must be a lower-case domain name (a-z, 0-9, '-', '.')";
		return -1;
	}
	return 0;
}

static int
check_jid(struct conf *conf, const char *v, const char **cause)
{
	const char *at = strchr(v, '@');

	if (at == NULL || at == v || strchr(v, '/') != NULL) {
		*cause = "must be a bare JID such as user@example.org";
		return -1;
	}
	return check_domain(conf, at + 1, cause);
}

static int
check_barev_address(struct conf *conf, const char *v, const char **cause)
{
	if (*v == '\0')
		return 0;
	if (addr_parse(v, &conf->barev_address) == -1) {
		*cause = "must be an IPv6 address";
		return -1;
	}
	return 0;
}

static int
check_mode(struct conf *conf, const char *v, const char **cause)
{
	if (strcmp(v, "shared") == 0 || strcmp(v, "per-user") == 0) {
		conf->per_user = strcmp(v, "per-user") == 0;
		return 0;
	}
	*cause = "must be \"shared\" or \"per-user\"";
	return -1;
}

/* A /64 of 300::/8, written "300:1:2:3::/64" (or without the length). */
static int
check_subnet(struct conf *conf, const char *v, const char **cause)
{
	char buf[ADDR_STRLEN + 4];
	const char *slash;
	size_t len;

	if (*v == '\0')
		return 0;
	slash = strchr(v, '/');
	len = slash ? (size_t)(slash - v) : strlen(v);
	if ((slash != NULL && strcmp(slash, "/64") != 0) ||
	    len >= sizeof(buf)) {
		*cause = "must be a /64 such as \"300:1234:5678:9abc::/64\"";
		return -1;
	}
	memcpy(buf, v, len);
	buf[len] = '\0';
	if (addr_parse(buf, &conf->barev_subnet) == -1 ||
	    conf->barev_subnet.s6_addr[0] != 0x03) {
		*cause =
		    "must be a /64 inside 300::/8 (a Yggdrasil node's subnet)";
		return -1;
	}
	memset(conf->barev_subnet.s6_addr + 8, 0, 8);
	return 0;
}

static void
strlist_free(struct conf_strlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static void
strlist_add(struct conf_strlist *l, const char *s)
{
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = xstrdup(s);
}

/* Two sockets cannot listen on one address and port: compared as parsed. */
static int
listen_add(struct conf_listenlist *l, const char *s, const char **cause)
{
	static char twice[ADDR_STRLEN + 64];
	char text[ADDR_STRLEN];
	struct conf_listen one;
	size_t i;

	memset(&one, 0, sizeof(one));
	if (addr_parse_listen(s, 5299, &one.addr, &one.port, cause) == -1)
		return -1;
	for (i = 0; i < l->n; i++) {
		if (!addr_equal(&l->v[i].addr, &one.addr) ||
		    l->v[i].port != one.port)
			continue;
		snprintf(twice, sizeof(twice),
		    "lists [%s]:%u twice; list each address and port once",
		    addr_format(&one.addr, text), one.port);
		*cause = twice;
		return -1;
	}
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = one;
	return 0;
}

/* Each space-separated entry of a built-in default. */
static int
listen_defaults(struct conf_listenlist *l, const char *def, const char **cause)
{
	char *copy, *one, *last;
	int rv = 0;

	copy = xstrdup(def);
	for (one = strtok_r(copy, " ", &last); one != NULL && rv == 0;
	     one = strtok_r(NULL, " ", &last))
		rv = listen_add(l, one, cause);
	free(copy);
	return rv;
}

static int
set_string(struct conf *conf, const struct conf_key *k, const char *v,
    const char **cause)
{
	char **dst = field(conf, k);
	enum log_level level;

	switch (k->type) {
	case CT_STRING:
		if (k->check != NULL && k->check(conf, v, cause) == -1)
			return -1;
		free(*dst);
		*dst = xstrdup(v);
		return 0;
	case CT_LOGLEVEL:
		if (log_level_parse(v, &level) == -1) {
			*cause = "must be one of error, warning, info, debug, "
				 "trace";
			return -1;
		}
		*(enum log_level *)field(conf, k) = level;
		return 0;
	default:
		*cause = "internal: not a string key";
		return -1;
	}
}

static int
set_number(
    struct conf *conf, const struct conf_key *k, double v, const char **cause)
{
	static char range[128];

	if (v < k->min || v > k->max) {
		snprintf(range, sizeof(range), "must be from %g to %g", k->min,
		    k->max);
		*cause = range;
		return -1;
	}
	if (k->type == CT_INT)
		*(int *)field(conf, k) = (int)v;
	else
		*(double *)field(conf, k) = v;
	return 0;
}

static int
set_default(struct conf *conf, const struct conf_key *k)
{
	const char *cause;

	switch (k->type) {
	case CT_STRING:
	case CT_LOGLEVEL:
		return set_string(conf, k, k->def, &cause);
	case CT_INT:
	case CT_SECONDS:
		return set_number(conf, k, strtod(k->def, NULL), &cause);
	case CT_BOOL:
		*(int *)field(conf, k) = strcmp(k->def, "true") == 0;
		return 0;
	case CT_STRLIST:
		if (*k->def != '\0')
			strlist_add(field(conf, k), k->def);
		return 0;
	case CT_LISTEN:
		return listen_defaults(field(conf, k), k->def, &cause);
	case CT_IGNORED:
		return 0;
	}
	return -1;
}

static const struct conf_key *
key_find(const char *path)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].path, path) == 0)
			return &keys[i];
	return NULL;
}

static int
is_group_prefix(const char *path)
{
	size_t i, len = strlen(path);

	for (i = 0; i < NKEYS; i++)
		if (strncmp(keys[i].path, path, len) == 0 &&
		    keys[i].path[len] == '.')
			return 1;
	return 0;
}

static const char *
type_words(enum conf_type t)
{
	switch (t) {
	case CT_STRING:
	case CT_LOGLEVEL:
		return "must be a string in double quotes";
	case CT_INT:
		return "must be an integer";
	case CT_SECONDS:
		return "must be a number of seconds";
	case CT_BOOL:
		return "must be true or false";
	case CT_STRLIST:
	case CT_LISTEN:
		return "must be a list of strings, e.g. [ \"a\", \"b\" ]";
	case CT_IGNORED:
		break;
	}
	return "has the wrong type";
}

static int
load_list(struct conf *conf, const struct conf_key *k, config_setting_t *s,
    const char **cause)
{
	int i, n = config_setting_length(s);
	config_setting_t *e;
	const char *v;

	if (k->type == CT_STRLIST)
		strlist_free(field(conf, k));
	else {
		struct conf_listenlist *l = field(conf, k);
		free(l->v);
		l->v = NULL;
		l->n = 0;
	}
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(s, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			*cause = type_words(k->type);
			return -1;
		}
		v = config_setting_get_string(e);
		if (k->type == CT_LISTEN) {
			if (listen_add(field(conf, k), v, cause) == -1)
				return -1;
			continue;
		}
		if (k->check != NULL && k->check(conf, v, cause) == -1)
			return -1;
		strlist_add(field(conf, k), v);
	}
	if (k->type == CT_LISTEN && n == 0) {
		*cause = "needs at least one address to listen on";
		return -1;
	}
	return 0;
}

static int
load_value(struct conf *conf, const struct conf_key *k, config_setting_t *s,
    const char **cause)
{
	int t = config_setting_type(s);

	switch (k->type) {
	case CT_STRING:
	case CT_LOGLEVEL:
		if (t != CONFIG_TYPE_STRING)
			break;
		return set_string(conf, k, config_setting_get_string(s), cause);
	case CT_INT:
		if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
			return set_number(conf, k,
			    (double)config_setting_get_int64(s), cause);
		break;
	case CT_SECONDS:
		if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
			return set_number(conf, k,
			    (double)config_setting_get_int64(s), cause);
		if (t == CONFIG_TYPE_FLOAT)
			return set_number(
			    conf, k, config_setting_get_float(s), cause);
		break;
	case CT_BOOL:
		if (t != CONFIG_TYPE_BOOL)
			break;
		*(int *)field(conf, k) = config_setting_get_bool(s);
		return 0;
	case CT_STRLIST:
	case CT_LISTEN:
		if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
			break;
		return load_list(conf, k, s, cause);
	case CT_IGNORED:
		return 0;
	}
	*cause = type_words(k->type);
	return -1;
}

/* Walks every setting so that a misspelt key is an error, not a silent default. */
static int
load_group(struct conf *conf, config_setting_t *group, const char *prefix,
    const char *name, char **cause)
{
	config_setting_t *s;
	const struct conf_key *k;
	const char *why;
	char path[256];
	int i, n = config_setting_length(group);

	for (i = 0; i < n; i++) {
		s = config_setting_get_elem(group, (unsigned)i);
		snprintf(path, sizeof(path), "%s%s%s", prefix,
		    *prefix ? "." : "", config_setting_name(s));
		if (config_setting_type(s) == CONFIG_TYPE_GROUP &&
		    is_group_prefix(path)) {
			if (load_group(conf, s, path, name, cause) == -1)
				return -1;
			continue;
		}
		if ((k = key_find(path)) == NULL) {
			xasprintf(cause, "%s:%d: unknown key '%s'", name,
			    config_setting_source_line(s), path);
			return -1;
		}
		if (load_value(conf, k, s, &why) == -1) {
			xasprintf(cause, "%s:%d: key '%s' %s", name,
			    config_setting_source_line(s), path, why);
			return -1;
		}
		if (k->type == CT_IGNORED) {
			free(conf->warning);
			xasprintf(&conf->warning,
			    "%s:%d: key '%s' does nothing (this version has "
			    "no such commands) and is ignored; remove it",
			    name, config_setting_source_line(s), path);
		}
	}
	return 0;
}

static int
read_secret_file(
    struct conf *conf, config_t *cfg, const char *name, char **cause)
{
	config_setting_t *s = config_lookup(cfg, "component.secret_file");
	char buf[1024];
	size_t len;
	FILE *f;
	int ret = -1;

	if ((f = fopen(conf->component_secret_file, "r")) == NULL) {
		xasprintf(cause,
		    "%s:%d: key 'component.secret_file' cannot "
		    "read %s: %s",
		    name, config_setting_source_line(s),
		    conf->component_secret_file, strerror(errno));
		return -1;
	}
	len = fread(buf, 1, sizeof(buf) - 1, f);
	buf[len] = '\0';
	if (ferror(f) || !feof(f)) {
		xasprintf(cause,
		    "%s:%d: key 'component.secret_file' %s is "
		    "unreadable or longer than %zu bytes",
		    name, config_setting_source_line(s),
		    conf->component_secret_file, sizeof(buf) - 1);
		goto out;
	}
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		xasprintf(cause,
		    "%s:%d: key 'component.secret_file' %s is "
		    "empty",
		    name, config_setting_source_line(s),
		    conf->component_secret_file);
		goto out;
	}
	conf->component_secret = xstrdup(buf);
	ret = 0;
out:
	fclose(f);
	return ret;
}

/* Rules that involve more than one key. */
static int
validate(struct conf *conf, config_t *cfg, const char *name, char **cause)
{
	config_setting_t *s;
	size_t i;
	const char *dot;

	for (i = 0; i < NKEYS; i++) {
		const struct conf_key *k = &keys[i];
		if (k->def == NULL && !k->optional &&
		    config_lookup(cfg, k->path) == NULL) {
			xasprintf(cause, "%s: missing required key '%s'", name,
			    k->path);
			return -1;
		}
	}
	if (conf->component_secret != NULL &&
	    conf->component_secret_file != NULL) {
		xasprintf(cause,
		    "%s:%d: key 'component.secret_file' conflicts "
		    "with 'component.secret': set only one",
		    name,
		    config_setting_source_line(
			config_lookup(cfg, "component.secret_file")));
		return -1;
	}
	/* The rules below hold for a secret from a file too. */
	if (conf->component_secret_file != NULL &&
	    read_secret_file(conf, cfg, name, cause) == -1)
		return -1;
	if (conf->component_secret == NULL) {
		xasprintf(cause,
		    "%s: missing required key 'component.secret' "
		    "(or 'component.secret_file')",
		    name);
		return -1;
	}
	if (conf->component_secret[0] == '\0') {
		xasprintf(cause, "%s:%d: key 'component.secret' is empty", name,
		    config_setting_source_line(
			config_lookup(cfg, "component.secret")));
		return -1;
	}
	if (conf->barev_address_text[0] != '\0' && !conf->allow_any_address &&
	    !addr_is_yggdrasil(&conf->barev_address)) {
		xasprintf(cause,
		    "%s:%d: key 'barev.address' is not a Yggdrasil "
		    "address (200::/7)",
		    name,
		    config_setting_source_line(
			config_lookup(cfg, "barev.address")));
		return -1;
	}
	if ((s = config_lookup(cfg, "storage.path")) != NULL)
		conf->storage_path_line = config_setting_source_line(s);
	if (conf->reconnect_max < conf->reconnect_min) {
		xasprintf(cause,
		    "%s: key 'component.reconnect_max' must not be "
		    "below 'component.reconnect_min'",
		    name);
		return -1;
	}
	if (conf->redial_max < conf->redial_min) {
		xasprintf(cause,
		    "%s: key 'barev.redial_max' must not be below "
		    "'barev.redial_min'",
		    name);
		return -1;
	}
	if (conf->refused_redial_max < conf->refused_redial_min) {
		xasprintf(cause,
		    "%s: key 'barev.refused_redial_max' must not be below "
		    "'barev.refused_redial_min'",
		    name);
		return -1;
	}
	if (conf->access_domains.n == 0 && conf->access_jids.n == 0 &&
	    (dot = strchr(conf->component_jid, '.')) != NULL)
		strlist_add(&conf->access_domains, dot + 1);
	return 0;
}

static int
load(const char *name, const char *text, struct conf **out, char **cause)
{
	struct conf *conf = xcalloc(1, sizeof(*conf));
	config_t cfg;
	size_t i;
	int rc;

	*cause = NULL;
	config_init(&cfg);
	conf->path = xstrdup(name);
	for (i = 0; i < NKEYS; i++) {
		if (keys[i].def != NULL && set_default(conf, &keys[i]) == -1)
			fatalx(
			    "conf: bad built-in default for %s", keys[i].path);
	}
	if (text != NULL)
		rc = config_read_string(&cfg, text);
	else
		rc = config_read_file(&cfg, name);
	if (rc != CONFIG_TRUE) {
		if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
			xasprintf(cause, "%s: cannot read: %s", name,
			    strerror(errno ? errno : EIO));
		else
			xasprintf(cause, "%s:%d: %s", name,
			    config_error_line(&cfg), config_error_text(&cfg));
		goto fail;
	}
	if (load_group(conf, config_root_setting(&cfg), "", name, cause) == -1)
		goto fail;
	if (validate(conf, &cfg, name, cause) == -1)
		goto fail;
	config_destroy(&cfg);
	*out = conf;
	return 0;
fail:
	config_destroy(&cfg);
	conf_free(conf);
	return -1;
}

int
conf_load(const char *path, struct conf **out, char **cause)
{
	FILE *f;

	/* libconfig reports a missing file as a bare "file I/O error". */
	if ((f = fopen(path, "r")) == NULL) {
		xasprintf(cause, "%s: cannot read: %s", path, strerror(errno));
		return -1;
	}
	fclose(f);
	errno = 0;
	return load(path, NULL, out, cause);
}

int
conf_load_string(
    const char *name, const char *text, struct conf **out, char **cause)
{
	return load(name, text, out, cause);
}

/* Says why path cannot be the store, in a static buffer; NULL if it can. */
static const char *
storage_problem(const char *path)
{
	static char why[1200];
	char dir[1024];
	const char *slash = strrchr(path, '/');
	struct stat st;
	size_t len;
	int err = 0;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(
		    why, sizeof(why), "%s is a directory, not a file", path);
		return why;
	}
	len = slash == NULL ? 1 : slash == path ? 1 : (size_t)(slash - path);
	if (len >= sizeof(dir)) {
		snprintf(why, sizeof(why), "is longer than %zu bytes",
		    sizeof(dir) - 1);
		return why;
	}
	memcpy(dir, slash == NULL ? "." : path, len);
	dir[len] = '\0';
	if (stat(dir, &st) == -1)
		err = errno;
	else if (!S_ISDIR(st.st_mode))
		err = ENOTDIR;
	if (err != 0) {
		snprintf(why, sizeof(why), "cannot use the directory %s: %s",
		    dir, strerror(err));
		return why;
	}
	/* SQLite writes a journal beside the file: the directory must be writable. */
	if (access(dir, W_OK | X_OK) == -1) {
		snprintf(why, sizeof(why),
		    "cannot write in the directory %s: %s", dir,
		    strerror(errno));
		return why;
	}
	if (access(path, F_OK) == 0 && access(path, R_OK | W_OK) == -1) {
		snprintf(why, sizeof(why), "cannot write %s: %s", path,
		    strerror(errno));
		return why;
	}
	return NULL;
}

int
conf_check_storage(const struct conf *conf, char **cause)
{
	const char *why = storage_problem(conf->storage_path);

	if (why == NULL)
		return 0;
	if (conf->storage_path_line > 0)
		xasprintf(cause, "%s:%d: key 'storage.path' %s", conf->path,
		    conf->storage_path_line, why);
	else
		xasprintf(cause, "%s: key 'storage.path' (the default) %s",
		    conf->path, why);
	return -1;
}

void
conf_free(struct conf *conf)
{
	size_t i;

	if (conf == NULL)
		return;
	for (i = 0; i < NKEYS; i++) {
		const struct conf_key *k = &keys[i];
		switch (k->type) {
		case CT_STRING:
			free(*(char **)field(conf, k));
			break;
		case CT_STRLIST:
			strlist_free(field(conf, k));
			break;
		case CT_LISTEN:
			free(((struct conf_listenlist *)field(conf, k))->v);
			break;
		default:
			break;
		}
	}
	free(conf->warning);
	free(conf->path);
	free(conf);
}

const char *
conf_key_name(size_t i)
{
	size_t k;

	/* An ignored key is not documented: it is not one of them. */
	for (k = 0; k < NKEYS; k++)
		if (keys[k].type != CT_IGNORED && i-- == 0)
			return keys[k].path;
	return NULL;
}

static int
strlist_equal(const struct conf_strlist *a, const struct conf_strlist *b)
{
	size_t i;

	if (a->n != b->n)
		return 0;
	for (i = 0; i < a->n; i++)
		if (strcmp(a->v[i], b->v[i]) != 0)
			return 0;
	return 1;
}

/* Field by field: struct padding must not make equal lists differ. */
static int
listen_equal(const struct conf_listenlist *a, const struct conf_listenlist *b)
{
	size_t i;

	if (a->n != b->n)
		return 0;
	for (i = 0; i < a->n; i++)
		if (!addr_equal(&a->v[i].addr, &b->v[i].addr) ||
		    a->v[i].port != b->v[i].port)
			return 0;
	return 1;
}

static int
value_equal(
    const struct conf *a, const struct conf *b, const struct conf_key *k)
{
	const void *fa = cfield(a, k), *fb = cfield(b, k);
	const struct conf_listenlist *la = fa, *lb = fb;
	const char *sa, *sb;

	switch (k->type) {
	case CT_STRING:
		sa = *(char *const *)fa;
		sb = *(char *const *)fb;
		if (sa == NULL || sb == NULL)
			return sa == sb;
		return strcmp(sa, sb) == 0;
	case CT_INT:
	case CT_BOOL:
		return *(const int *)fa == *(const int *)fb;
	case CT_SECONDS:
		return *(const double *)fa == *(const double *)fb;
	case CT_LOGLEVEL:
		return *(const enum log_level *)fa ==
		    *(const enum log_level *)fb;
	case CT_STRLIST:
		return strlist_equal(fa, fb);
	case CT_LISTEN:
		return listen_equal(la, lb);
	case CT_IGNORED:
		return 1;
	}
	return 0;
}

/* Replaces dst's value of one key with a deep copy of src's. */
static void
value_copy(struct conf *dst, const struct conf *src, const struct conf_key *k)
{
	const struct conf_strlist *sl;
	const struct conf_listenlist *ll;
	struct conf_listenlist *dl;
	char **ds;
	size_t i;

	switch (k->type) {
	case CT_STRING:
		ds = field(dst, k);
		free(*ds);
		*ds = NULL;
		if (*(char *const *)cfield(src, k) != NULL)
			*ds = xstrdup(*(char *const *)cfield(src, k));
		break;
	case CT_INT:
	case CT_BOOL:
		*(int *)field(dst, k) = *(const int *)cfield(src, k);
		break;
	case CT_SECONDS:
		*(double *)field(dst, k) = *(const double *)cfield(src, k);
		break;
	case CT_LOGLEVEL:
		*(enum log_level *)field(dst, k) = *(
		    const enum log_level *)cfield(src, k);
		break;
	case CT_STRLIST:
		sl = cfield(src, k);
		strlist_free(field(dst, k));
		for (i = 0; i < sl->n; i++)
			strlist_add(field(dst, k), sl->v[i]);
		break;
	case CT_LISTEN:
		ll = cfield(src, k);
		dl = field(dst, k);
		free(dl->v);
		dl->v = xcalloc(ll->n, sizeof(*dl->v));
		memcpy(dl->v, ll->v, ll->n * sizeof(*dl->v));
		dl->n = ll->n;
		break;
	case CT_IGNORED:
		break;
	}
}

void
conf_keep_fixed(
    struct conf *fresh, const struct conf *old, void (*warn)(const char *key))
{
	size_t i;

	for (i = 0; i < NKEYS; i++) {
		const struct conf_key *k = &keys[i];
		if (k->reloadable || value_equal(fresh, old, k))
			continue;
		warn(k->path);
		value_copy(fresh, old, k);
	}
	fresh->barev_address = old->barev_address;
	fresh->barev_subnet = old->barev_subnet;
	fresh->per_user = old->per_user;
}
