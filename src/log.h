/* Leveled logging to stderr or syslog; one line per event, "subject: what key=value". */
#ifndef BG_LOG_H
#define BG_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <strophe.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_TRACE, /* also libstrophe's own debug output and raw XML */
};

void log_init(const char *ident, enum log_level level, int use_syslog);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);

void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Peer or user text for a key=value field: s in double quotes with
 * control characters, non-UTF-8 bytes, " and \ escaped, cut (marked
 * "...") to fit size bytes (at least LOG_QUOTE_MIN); "-" for NULL.
 * Returns buf (or "-").
 */
#define LOG_QUOTE_MIN 8
#define LOG_QUOTE_SIZE 300
const char *log_quote(char *buf, size_t size, const char *s);

/* A broken invariant: log and exit(1). */
void
fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* libstrophe's logger, routed into ours (its debug level maps to trace). */
const xmpp_log_t *log_strophe_logger(void);

#endif
