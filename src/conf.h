/* The configuration file (libconfig syntax) as a plain, validated struct. */
#ifndef BG_CONF_H
#define BG_CONF_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define CONF_DEFAULT_PATH SYSCONFDIR "/barev-gateway/barev-gateway.conf"

struct conf_listen {
	struct in6_addr addr;
	uint16_t port;
};

struct conf_strlist {
	char **v;
	size_t n;
};

struct conf_listenlist {
	struct conf_listen *v;
	size_t n;
};

struct conf {
	char *path;

	char *component_jid;
	char *component_secret; /* from component.secret or the secret file */
	char *component_secret_file;
	char *component_host;
	int component_port;
	double reconnect_min;
	double reconnect_max;

	char *barev_address_text; /* as written; empty = detect */
	struct in6_addr barev_address;
	char *address_mode; /* "shared" or "per-user" */
	int per_user;
	char *barev_subnet_text; /* as written; empty = detect */
	struct in6_addr barev_subnet;
	char *admin_socket;
	struct conf_listenlist barev_listen;
	int barev_default_port;
	double ping_interval;
	double ping_timeout;
	int ping_failures;
	double handshake_timeout;
	double connect_timeout;
	double redial_min;
	double redial_max;
	double refused_redial_min;
	double refused_redial_max;
	int allow_any_address;
	double request_timeout;
	double request_lifetime;
	double stranger_silence;

	int max_stanza_bytes;
	int max_depth;
	int max_output_bytes;
	int max_pipes;
	int max_pipes_per_address;
	int inbound_per_minute;
	int max_pipes_per_subnet; /* inbound, per remote /64 */
	int inbound_per_minute_per_subnet;
	int max_stranger_pipes;
	int dials_concurrent;
	int dials_per_second;
	int dials_per_user;
	double request_interval;
	int requests_per_user;
	int requests_per_subnet; /* open requests per user from one /64 */
	int message_attempts;
	double presence_interval;

	char *storage_path;
	int storage_path_line; /* where it was set; 0: the default */
	double message_lifetime;

	enum log_level log_level;
	int log_syslog;

	struct conf_strlist access_domains;
	struct conf_strlist access_jids;

	char *warning; /* one line about an ignored key, or NULL */
};

/*
 * Load and validate path. On failure returns -1 and sets *cause to one
 * line naming the file, the line and the key (free it).
 */
int conf_load(const char *path, struct conf **out, char **cause);
/* The same, from text in memory (name is used in messages). */
int conf_load_string(
    const char *name, const char *text, struct conf **out, char **cause);
/*
 * Whether storage.path can be opened: its directory exists and may be
 * written, and it is not a directory itself. -1 and one line as above.
 */
int conf_check_storage(const struct conf *conf, char **cause);
void conf_free(struct conf *conf);
/* The i-th known key ("group.key"), or NULL past the last: for docs and tests. */
const char *conf_key_name(size_t i);

/*
 * After a reload: keys that cannot change at run time are put back to
 * their old values in fresh; each such key is reported through warn.
 */
void conf_keep_fixed(
    struct conf *fresh, const struct conf *old, void (*warn)(const char *key));

#endif
