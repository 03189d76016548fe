#include "config.h"

#include <errno.h>
#include <paths.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "utf8.h"

static enum log_level cur_level = LOG_LEVEL_INFO;
static int to_syslog;
static const char *log_ident = "barev-gateway";

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warning",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_TRACE] = "trace",
};

static const int syslog_prio[] = {
	[LOG_LEVEL_ERROR] = LOG_ERR,
	[LOG_LEVEL_WARN] = LOG_WARNING,
	[LOG_LEVEL_INFO] = LOG_INFO,
	[LOG_LEVEL_DEBUG] = LOG_DEBUG,
	[LOG_LEVEL_TRACE] = LOG_DEBUG,
};

/*
 * Whether syslog(3) can reach a daemon: it connects to _PATH_LOG as a
 * datagram, then a stream socket, and drops every line in silence if
 * neither works. 0, or -1 with errno set.
 */
static int
syslog_reachable(void)
{
	static const int types[] = { SOCK_DGRAM, SOCK_STREAM };
	struct sockaddr_un sun;
	size_t i;
	int fd, rc, err = 0;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", _PATH_LOG);
	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if ((fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0)) == -1)
			return -1;
		rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
		err = errno;
		close(fd);
		if (rc == 0)
			return 0;
	}
	errno = err;
	return -1;
}

void
log_init(const char *ident, enum log_level level, int use_syslog)
{
	static int warned; /* once per fallback, not at every reload */

	if (to_syslog && !use_syslog)
		closelog();
	log_ident = ident;
	cur_level = level;
	to_syslog = 0;
	if (!use_syslog) {
		warned = 0;
		return;
	}
	if (syslog_reachable() == -1) {
		if (!warned)
			log_warn("log: syslog is not reachable (%s: %s); "
				 "logging to stderr",
			    _PATH_LOG, strerror(errno));
		warned = 1;
		return;
	}
	warned = 0;
	to_syslog = 1;
	openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_set_level(enum log_level level)
{
	cur_level = level;
}

enum log_level
log_get_level(void)
{
	return cur_level;
}

int
log_level_parse(const char *name, enum log_level *out)
{
	size_t i;

	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

const char *
log_level_name(enum log_level level)
{
	return level_names[level];
}

/*
 * Appends s[0..len) to out (*o bytes used of size) with control
 * characters (C0, DEL, C1), the Unicode line separators and bytes that
 * are not UTF-8 written as \xNN, and, with quote, " and \ escaped too:
 * nothing a peer sends can start a log line or end a quoted value.
 * Stops before what does not fit (never inside a sequence); returns
 * whether all of s fitted.
 */
static int
escape_append(
    char *out, size_t size, size_t *o, const char *s, size_t len, int quote)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, k, n;
	uint32_t cp;

	while (i < len) {
		n = utf8_next(p + i, len - i, &cp);
		if (n == 0 || cp < 0x20 || cp == 0x7f ||
		    (cp >= 0x80 && cp < 0xa0) || cp == 0x2028 || cp == 0x2029) {
			if (n == 0)
				n = 1;
			if (*o + 4 * n >= size)
				break;
			for (k = 0; k < n; k++, *o += 4)
				snprintf(out + *o, 5, "\\x%02x", p[i + k]);
		} else if (quote && (cp == '"' || cp == '\\')) {
			if (*o + 2 >= size)
				break;
			out[(*o)++] = '\\';
			out[(*o)++] = (char)cp;
		} else {
			if (*o + n >= size)
				break;
			memcpy(out + *o, p + i, n);
			*o += n;
		}
		i += n;
	}
	out[*o] = '\0';
	return i == len;
}

const char *
log_quote(char *buf, size_t size, const char *s)
{
	size_t o = 1;

	if (s == NULL)
		return "-";
	buf[0] = '"';
	/* Room for the closing quote, and for "..." if s is cut. */
	if (!escape_append(buf, size - 4, &o, s, strlen(s), 1)) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

static void vlog(enum log_level, const char *, va_list)
    __attribute__((format(printf, 2, 0)));

static void
vlog(enum log_level level, const char *fmt, va_list ap)
{
	char raw[2048], line[4 * sizeof(raw)];
	struct timespec ts;
	struct tm tm;
	char stamp[32];
	size_t o = 0;
	int n;

	if (level > cur_level)
		return;
	n = vsnprintf(raw, sizeof(raw), fmt, ap);
	if (n < 0)
		return;
	/* Every line is one line, whatever a caller passed in. */
	escape_append(line, sizeof(line), &o, raw,
	    utf8_prefix(raw, strlen(raw), sizeof(raw) - 1), 0);
	if (to_syslog) {
		syslog(syslog_prio[level], "%s", line);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s %s: %s\n", stamp, ts.tv_nsec / 1000000,
	    log_ident, level_names[level], line);
}

#define LOG_FN(name, level)                                                    \
	void name(const char *fmt, ...)                                        \
	{                                                                      \
		va_list ap;                                                    \
		va_start(ap, fmt);                                             \
		vlog(level, fmt, ap);                                          \
		va_end(ap);                                                    \
	}

LOG_FN(log_err, LOG_LEVEL_ERROR)
LOG_FN(log_warn, LOG_LEVEL_WARN)
LOG_FN(log_info, LOG_LEVEL_INFO)
LOG_FN(log_debug, LOG_LEVEL_DEBUG)
LOG_FN(log_trace, LOG_LEVEL_TRACE)

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

static void
strophe_log(
    void *userdata, xmpp_log_level_t level, const char *area, const char *msg)
{
	enum log_level ours;

	switch (level) {
	case XMPP_LEVEL_ERROR:
		ours =
		    LOG_LEVEL_WARN; /* the link layer decides what is fatal */
		break;
	case XMPP_LEVEL_WARN:
		ours = LOG_LEVEL_INFO;
		break;
	default:
		ours = LOG_LEVEL_TRACE;
		break;
	}
	if (ours > cur_level)
		return;
	(void)userdata;
	if (ours == LOG_LEVEL_WARN)
		log_warn("libstrophe %s: %s", area, msg);
	else if (ours == LOG_LEVEL_INFO)
		log_info("libstrophe %s: %s", area, msg);
	else
		log_trace("libstrophe %s: %s", area, msg);
}

static const xmpp_log_t strophe_logger = { strophe_log, NULL };

const xmpp_log_t *
log_strophe_logger(void)
{
	return &strophe_logger;
}
