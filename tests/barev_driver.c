/*
 * A fake upper layer for the Barev engine, driven line by line from stdin
 * by the integration tests (tests/integration/test_barev.py).
 *
 * Commands (one a line):
 *	identity NICK@ADDR		add a local identity
 *	contact LOCAL REMOTE		allow the pair
 *	want LOCAL REMOTE PORT		barev_want
 *	unwant LOCAL REMOTE		barev_unwant
 *	send LOCAL REMOTE XML...	barev_send one stanza -> "sent" or "error not-up"
 *	sendc LOCAL REMOTE TOKEN INNER...
 *					barev_send_chat: a chat message with
 *					these children, the same answers
 *	strangers			non-contacts become strangers, not refused
 *	count				-> "pipes N"
 *	shutdown			barev_shutdown -> "stopped", exit 0
 * Events on stdout, one a line: ready, fatal CAUSE, up LOCAL REMOTE,
 * down LOCAL REMOTE REASON, stranger LOCAL REMOTE, stanza LOCAL REMOTE XML,
 * confirmed TOKEN confirmed|assumed|lost, error TEXT.
 * End of input exits at once.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <strophe.h>

#include "barev.h"
#include "conf.h"
#include "jid.h"
#include "log.h"
#include "xmalloc.h"

#define EXIT_FATAL 2

struct pair {
	struct barev_jid local;
	struct barev_jid remote;
};

struct driver {
	struct event_base *base;
	xmpp_ctx_t *ctx;
	struct conf *conf;
	struct barev *barev;
	struct event *ev_in;
	struct evbuffer *in;
	int jid_flags;

	struct barev_jid *ids;
	size_t nids;
	struct pair *contacts;
	size_t ncontacts;
	int strangers; /* non-contacts are BAREV_STRANGER */

	int exit_code;
};

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One event line on stdout, flushed at once. */
static void
emit(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static int
find_contact(const struct driver *d, const struct barev_jid *local,
    const struct barev_jid *remote)
{
	size_t i;

	for (i = 0; i < d->ncontacts; i++) {
		if (barev_jid_equal(&d->contacts[i].local, local) &&
		    barev_jid_equal(&d->contacts[i].remote, remote))
			return 1;
	}
	return 0;
}

static int
cb_lookup_local(void *arg, const char *to_nick, const struct in6_addr *dialled,
    struct barev_jid *out)
{
	struct driver *d = arg;
	const struct barev_jid *found = NULL;
	size_t i, n = 0;

	for (i = 0; i < d->nids; i++) {
		if (!addr_equal(&d->ids[i].addr, dialled))
			continue;
		n++;
		if (to_nick == NULL)
			found = &d->ids[i];
		else if (strcasecmp(d->ids[i].nick, to_nick) == 0) {
			found = &d->ids[i];
			break;
		}
	}
	if (found == NULL || (to_nick == NULL && n != 1))
		return -1;
	*out = *found;
	return 0;
}

static enum barev_verdict
cb_allow(
    void *arg, const struct barev_jid *local, const struct barev_jid *remote)
{
	struct driver *d = arg;

	if (find_contact(d, local, remote))
		return BAREV_ALLOW;
	return d->strangers ? BAREV_STRANGER : BAREV_DENY;
}

static void
cb_stranger(
    void *arg, const struct barev_jid *local, const struct barev_jid *remote)
{
	char l[BAREV_JID_STRLEN], r[BAREV_JID_STRLEN];

	emit("stranger %s %s", barev_jid_format(local, l),
	    barev_jid_format(remote, r));
}

static void
cb_up(void *arg, const struct barev_jid *local, const struct barev_jid *remote)
{
	char l[BAREV_JID_STRLEN], r[BAREV_JID_STRLEN];

	emit("up %s %s", barev_jid_format(local, l),
	    barev_jid_format(remote, r));
}

static void
cb_down(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, const char *reason)
{
	char l[BAREV_JID_STRLEN], r[BAREV_JID_STRLEN];

	emit("down %s %s %s", barev_jid_format(local, l),
	    barev_jid_format(remote, r), reason != NULL ? reason : "-");
}

/* Text of len bytes on one line: CR and LF become character references. */
static char *
one_line(const char *text, size_t len)
{
	char *out, *o;
	size_t i;

	out = o = xmalloc(len * 5 + 1);
	for (i = 0; i < len; i++) {
		if (text[i] == '\n') {
			memcpy(o, "&#10;", 5);
			o += 5;
		} else if (text[i] == '\r') {
			memcpy(o, "&#13;", 5);
			o += 5;
		} else
			*o++ = text[i];
	}
	*o = '\0';
	return out;
}

static int
cb_stanza(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, xmpp_stanza_t *stanza)
{
	struct driver *d = arg;
	char l[BAREV_JID_STRLEN], r[BAREV_JID_STRLEN];
	const char *name, *type;
	char *text, *line;
	size_t len;

	if (xmpp_stanza_to_text(stanza, &text, &len) == XMPP_EOK) {
		line = one_line(text, len);
		xmpp_free(d->ctx, text);
	} else
		line = xstrdup("(unprintable)");
	emit("stanza %s %s %s", barev_jid_format(local, l),
	    barev_jid_format(remote, r), line);
	free(line);

	/* We understand no request at all: let the engine refuse it. */
	name = xmpp_stanza_get_name(stanza);
	type = xmpp_stanza_get_type(stanza);
	if (name != NULL && strcmp(name, "iq") == 0 && type != NULL &&
	    (strcmp(type, "get") == 0 || strcmp(type, "set") == 0))
		return -1;
	return 0;
}

static void
cb_confirmed(void *arg, uint64_t token, enum pipe_confirm how)
{
	static const char *names[] = { "confirmed", "assumed", "lost" };

	emit("confirmed %llu %s", (unsigned long long)token,
	    (unsigned)how < sizeof(names) / sizeof(names[0]) ? names[how]
							     : "unknown");
}

static void
cb_refused(void *arg, const struct barev_jid *local,
    const struct barev_jid *remote, double retry_in)
{
	char l[BAREV_JID_STRLEN], r[BAREV_JID_STRLEN];

	emit("refused %s %s %.0f", barev_jid_format(local, l),
	    barev_jid_format(remote, r), retry_in * 1000);
}

static const struct barev_cb callbacks = {
	cb_lookup_local,
	cb_allow,
	cb_stranger,
	cb_up,
	cb_down,
	cb_stanza,
	cb_confirmed,
	cb_refused,
};

/* The next space-separated word of *line (advanced past it), or NULL. */
static char *
next_word(char **line)
{
	char *p = *line, *w;

	while (*p == ' ')
		p++;
	if (*p == '\0') {
		*line = p;
		return NULL;
	}
	w = p;
	while (*p != '\0' && *p != ' ')
		p++;
	if (*p != '\0')
		*p++ = '\0';
	*line = p;
	return w;
}

/* Parses n JIDs from *line into out; -1 after printing an error. */
static int
parse_jids(struct driver *d, char **line, struct barev_jid *out, int n)
{
	const char *cause;
	char *w;
	int i;

	for (i = 0; i < n; i++) {
		if ((w = next_word(line)) == NULL) {
			emit("error missing JID");
			return -1;
		}
		if (barev_jid_parse(w, d->jid_flags, &out[i], &cause) == -1) {
			emit("error bad JID %s: %s", w, cause);
			return -1;
		}
	}
	return 0;
}

static void
cmd_identity(struct driver *d, char *args)
{
	struct barev_jid j;

	if (parse_jids(d, &args, &j, 1) == -1)
		return;
	d->ids = xrealloc(d->ids, (d->nids + 1) * sizeof(*d->ids));
	d->ids[d->nids++] = j;
}

static void
cmd_contact(struct driver *d, char *args)
{
	struct barev_jid j[2];

	if (parse_jids(d, &args, j, 2) == -1)
		return;
	if (find_contact(d, &j[0], &j[1]))
		return;
	d->contacts = xrealloc(
	    d->contacts, (d->ncontacts + 1) * sizeof(*d->contacts));
	d->contacts[d->ncontacts].local = j[0];
	d->contacts[d->ncontacts].remote = j[1];
	d->ncontacts++;
}

static void
cmd_strangers(struct driver *d, char *args)
{
	d->strangers = 1;
}

static void
cmd_want(struct driver *d, char *args)
{
	struct barev_jid j[2];
	char *w, *end;
	long port;

	if (parse_jids(d, &args, j, 2) == -1)
		return;
	if ((w = next_word(&args)) == NULL) {
		emit("error missing port");
		return;
	}
	errno = 0;
	port = strtol(w, &end, 10);
	if (errno != 0 || *end != '\0' || port < 1 || port > 65535) {
		emit("error bad port %s", w);
		return;
	}
	barev_want(d->barev, &j[0], &j[1], (unsigned short)port);
}

static void
cmd_unwant(struct driver *d, char *args)
{
	struct barev_jid j[2];

	if (parse_jids(d, &args, j, 2) == -1)
		return;
	barev_unwant(d->barev, &j[0], &j[1]);
}

/* send and sendc: the stanza, or the chat message's children, is the rest of the line. */
static void
send_common(struct driver *d, char *args, int confirmed)
{
	struct barev_jid j[2];
	xmpp_stanza_t *stanza;
	unsigned long long token = 0;
	char *w, *end, *xml = NULL;
	int rc;

	if (parse_jids(d, &args, j, 2) == -1)
		return;
	if (confirmed) {
		if ((w = next_word(&args)) == NULL) {
			emit("error missing token");
			return;
		}
		errno = 0;
		token = strtoull(w, &end, 10);
		if (errno != 0 || *end != '\0') {
			emit("error bad token %s", w);
			return;
		}
	}
	while (*args == ' ')
		args++;
	if (confirmed)
		xasprintf(&xml, "<message>%s</message>", args);
	stanza = xmpp_stanza_new_from_string(d->ctx, xml ? xml : args);
	free(xml);
	if (stanza == NULL) {
		emit("error bad XML");
		return;
	}
	if (confirmed)
		rc = barev_send_chat(
		    d->barev, &j[0], &j[1], args, strlen(args), token);
	else
		rc = barev_send(d->barev, &j[0], &j[1], stanza);
	emit("%s", rc == -1 ? "error not-up" : "sent");
	xmpp_stanza_release(stanza);
}

static void
cmd_send(struct driver *d, char *args)
{
	send_common(d, args, 0);
}

static void
cmd_sendc(struct driver *d, char *args)
{
	send_common(d, args, 1);
}

static void
cmd_count(struct driver *d, char *args)
{
	emit("pipes %u", barev_pipe_count(d->barev));
}

static void
stopped(void *arg)
{
	struct driver *d = arg;

	emit("stopped");
	d->exit_code = 0;
	event_base_loopbreak(d->base);
}

static void
cmd_shutdown(struct driver *d, char *args)
{
	event_del(d->ev_in);
	barev_shutdown(d->barev, stopped, d);
}

static const struct command {
	const char *name;
	void (*fn)(struct driver *, char *);
} commands[] = {
	{ "identity", cmd_identity },
	{ "contact", cmd_contact },
	{ "strangers", cmd_strangers },
	{ "want", cmd_want },
	{ "unwant", cmd_unwant },
	{ "send", cmd_send },
	{ "sendc", cmd_sendc },
	{ "count", cmd_count },
	{ "shutdown", cmd_shutdown },
};

static void
command(struct driver *d, char *line)
{
	const char *name;
	size_t i;

	if ((name = next_word(&line)) == NULL)
		return;
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, name) == 0) {
			commands[i].fn(d, line);
			return;
		}
	}
	emit("error unknown command %s", name);
}

static void
on_stdin(evutil_socket_t fd, short what, void *arg)
{
	struct driver *d = arg;
	char *line;
	size_t len;
	int n;

	while ((n = evbuffer_read(d->in, fd, 65536)) > 0)
		continue;
	if (n == -1 && errno != EAGAIN && errno != EINTR) {
		log_err("driver: reading commands: %s", strerror(errno));
		n = 0;
	}
	while (event_pending(d->ev_in, EV_READ, NULL) &&
	    (line = evbuffer_readln(d->in, &len, EVBUFFER_EOL_LF)) != NULL) {
		command(d, line);
		free(line);
	}
	if (n == 0 && event_pending(d->ev_in, EV_READ, NULL)) {
		/* End of input: the test is gone, so are we. */
		d->exit_code = 0;
		event_base_loopbreak(d->base);
	}
}

int
main(int argc, char **argv)
{
	struct driver d;
	char *cause, *conf_path = NULL;
	int ch;

	while ((ch = getopt(argc, argv, "c:")) != -1) {
		switch (ch) {
		case 'c':
			conf_path = optarg;
			break;
		default:
			fprintf(stderr, "usage: barev_driver -c CONF\n");
			return EXIT_FATAL;
		}
	}
	if (conf_path == NULL || optind != argc) {
		fprintf(stderr, "usage: barev_driver -c CONF\n");
		return EXIT_FATAL;
	}

	memset(&d, 0, sizeof(d));
	d.exit_code = EXIT_FATAL;
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	log_init("barev-driver", LOG_LEVEL_DEBUG, 0);

	if (conf_load(conf_path, &d.conf, &cause) == -1) {
		emit("fatal %s", cause);
		free(cause);
		return EXIT_FATAL;
	}
	d.jid_flags = d.conf->allow_any_address ? BAREV_ANY_ADDR : 0;
	if (barev_raise_fd_limit(&cause) == -1) {
		emit("fatal %s", cause);
		free(cause);
		conf_free(d.conf);
		return EXIT_FATAL;
	}

	if ((d.base = event_base_new()) == NULL)
		fatalx("driver: cannot create the event loop");
	xmpp_initialize();
	d.ctx = xmpp_ctx_new(NULL, log_strophe_logger());
	d.barev = barev_new(d.base, d.ctx, d.conf, &callbacks, &d, &cause);
	if (d.barev == NULL) {
		emit("fatal %s", cause);
		free(cause);
		goto out;
	}

	if (fcntl(STDIN_FILENO, F_SETFL,
		fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK) == -1)
		fatalx("driver: stdin: %s", strerror(errno));
	d.in = evbuffer_new();
	d.ev_in = event_new(
	    d.base, STDIN_FILENO, EV_READ | EV_PERSIST, on_stdin, &d);
	event_add(d.ev_in, NULL);
	emit("ready");

	event_base_dispatch(d.base);

	event_free(d.ev_in);
	evbuffer_free(d.in);
	barev_free(d.barev);
out:
	xmpp_ctx_free(d.ctx);
	xmpp_shutdown();
	event_base_free(d.base);
	conf_free(d.conf);
	free(d.ids);
	free(d.contacts);
	return d.exit_code;
}
