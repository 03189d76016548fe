#include "config.h"

#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>

#include "barev.h"
#include "bridge.h"
#include "component.h"
#include "addr.h"
#include "conf.h"
#include "log.h"
#include "service.h"
#include "store.h"
#include "xmalloc.h"
#include "ygg.h"

#define EXIT_BADCONF 2

struct gateway {
	struct event_base *base;
	struct conf *conf;
	const char *conf_path;
	int cli_level; /* -1: take log.level from the file */
	int cli_syslog;
	struct component *link;
	struct service *service;
	struct barev *barev;
	struct store *store;
	struct bridge *bridge;
	struct ygg_node node;
	int pending_stops;
	struct event *ev_term;
	struct event *ev_int;
	struct event *ev_hup;
	int stopping;
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: barev-gateway [-c FILE] [-t] [-f] [-v|-vv] [-q] [-s]\n"
	    "       barev-gateway --version | --help\n"
	    "\n"
	    "  -c FILE    configuration file (default " CONF_DEFAULT_PATH ")\n"
	    "  -t         check the configuration and exit (0 good, 2 bad)\n"
	    "  -f         stay in the foreground (always; for init systems)\n"
	    "  -v         more verbose: debug; twice: trace (libstrophe, raw "
	    "XML)\n"
	    "  -q         log errors only\n"
	    "  -s         log to syslog instead of stderr\n"
	    "  --version  print the version and exit\n"
	    "  --help     print this help and exit\n");
}

static int
link_send(void *arg, xmpp_stanza_t *stanza)
{
	return component_send(arg, stanza);
}

static void
on_link_up(void *arg)
{
	struct gateway *gw = arg;

	bridge_link_up(gw->bridge);
}

static void
on_link_down(void *arg)
{
	struct gateway *gw = arg;

	bridge_link_down(gw->bridge);
}

/* The bridge first (users, contacts); what it does not take, the service. */
static void
on_stanza(void *arg, xmpp_stanza_t *stanza)
{
	struct gateway *gw = arg;

	if (bridge_xmpp(gw->bridge, stanza) == -1)
		service_handle(gw->service, stanza);
}

static const struct component_cb link_cb = {
	on_link_up,
	on_link_down,
	on_stanza,
};

/* The bridge's view of the two networks. */
static void
net_want(void *arg, const struct barev_jid *l, const struct barev_jid *r,
    unsigned short port)
{
	struct gateway *gw = arg;

	barev_want(gw->barev, l, r, port);
}

static void
net_unwant(void *arg, const struct barev_jid *l, const struct barev_jid *r)
{
	struct gateway *gw = arg;

	barev_unwant(gw->barev, l, r);
}

static int
net_send(void *arg, const struct barev_jid *l, const struct barev_jid *r,
    xmpp_stanza_t *st)
{
	struct gateway *gw = arg;

	return barev_send(gw->barev, l, r, st);
}

static int
net_send_chat(void *arg, const struct barev_jid *l, const struct barev_jid *r,
    const char *inner, size_t len, uint64_t token)
{
	struct gateway *gw = arg;

	return barev_send_chat(gw->barev, l, r, inner, len, token);
}

static int
net_is_up(void *arg, const struct barev_jid *l, const struct barev_jid *r)
{
	struct gateway *gw = arg;

	return barev_is_up(gw->barev, l, r);
}

static void
apply_logging(struct gateway *gw)
{
	int level = gw->cli_level >= 0 ? gw->cli_level
				       : (int)gw->conf->log_level;

	log_init("barev-gateway", (enum log_level)level,
	    gw->cli_syslog || gw->conf->log_syslog);
}

static void
warn_fixed(const char *key)
{
	log_warn("conf: key '%s' changed; it takes effect only after a restart",
	    key);
}

static void
reload(struct gateway *gw)
{
	struct conf *fresh;
	char *cause;

	if (conf_load(gw->conf_path, &fresh, &cause) == -1) {
		log_err(
		    "conf: reload failed, keeping the old configuration: %s",
		    cause);
		free(cause);
		return;
	}
	if (fresh->warning != NULL)
		log_warn("conf: %s", fresh->warning);
	conf_keep_fixed(fresh, gw->conf, warn_fixed);
	conf_free(gw->conf);
	gw->conf = fresh;
	apply_logging(gw);
	component_set_conf(gw->link, gw->conf);
	barev_set_conf(gw->barev, gw->conf);
	bridge_set_conf(gw->bridge, gw->conf);
	log_info("conf: reloaded %s", gw->conf_path);
}

static void
net_caps(void *arg, enum service_entity which, xmpp_stanza_t *presence)
{
	struct gateway *gw = arg;

	service_caps(gw->service, which, presence);
}

/* Both sides report here once they have closed. */
static void
stopped(void *arg)
{
	struct gateway *gw = arg;

	if (--gw->pending_stops == 0)
		event_base_loopbreak(gw->base);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct gateway *gw = arg;

	if (sig == SIGHUP) {
		reload(gw);
		return;
	}
	if (gw->stopping) {
		log_warn("main: second signal, exiting now");
		event_base_loopbreak(gw->base);
		return;
	}
	gw->stopping = 1;
	log_info(
	    "main: exiting reason=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	gw->pending_stops = 2;
	/* Before the link goes: the server must still take it. */
	bridge_shutdown(gw->bridge);
	barev_shutdown(gw->barev, stopped, gw);
	component_shutdown(gw->link, stopped, gw);
}

/*
 * The Yggdrasil address (shared mode) or /64 (per-user mode) the users
 * get. Without an address shared mode still runs, refusing registrations.
 */
static int
find_node(struct gateway *gw, int check_only)
{
	char a[ADDR_STRLEN], sn[ADDR_STRLEN], *cause = NULL;
	int rc = 0;

	if (ygg_resolve(gw->conf, &gw->node, &cause) == -1) {
		if (check_only)
			fprintf(stderr, "barev-gateway: %s\n", cause);
		else if (gw->conf->per_user)
			log_err("%s", cause);
		else
			log_warn(
			    "%s; registrations are refused until then", cause);
		rc = gw->conf->per_user ? -1 : 0;
		goto out;
	}
	if (gw->node.have_addr)
		addr_format(&gw->node.addr, a);
	else
		snprintf(a, sizeof(a), "none");
	addr_format(&gw->node.subnet, sn);
	if (check_only)
		printf("barev: address %s subnet %s/64 (from %s) mode %s\n", a,
		    sn, gw->node.source, gw->conf->address_mode);
	else
		log_info("barev: address %s subnet %s/64 (from %s) mode %s", a,
		    sn, gw->node.source, gw->conf->address_mode);
	if (gw->conf->per_user && !check_only &&
	    ygg_check_anyip(&gw->node.subnet, &cause) == -1) {
		log_err("barev: per-user addresses: %s", cause);
		rc = -1;
	}
out:
	free(cause);
	return rc;
}

static int
run(struct gateway *gw)
{
	struct service_out out;
	struct bridge_net net;
	char *cause;
	int rc = 0;

	gw->base = event_base_new();
	if (gw->base == NULL)
		fatalx("main: cannot create the event loop");
	gw->ev_term = evsignal_new(gw->base, SIGTERM, on_signal, gw);
	gw->ev_int = evsignal_new(gw->base, SIGINT, on_signal, gw);
	gw->ev_hup = evsignal_new(gw->base, SIGHUP, on_signal, gw);
	evsignal_add(gw->ev_term, NULL);
	evsignal_add(gw->ev_int, NULL);
	evsignal_add(gw->ev_hup, NULL);

	xmpp_initialize();
	gw->link = component_new(gw->base, gw->conf, &link_cb, gw);
	out.send = link_send;
	out.arg = gw->link;
	gw->service = service_new(gw->conf->component_jid, &out,
	    bridge_features, bridge_contact_features);
	net.xmpp_send = link_send;
	net.xmpp_arg = gw->link;
	net.want = net_want;
	net.unwant = net_unwant;
	net.send = net_send;
	net.send_chat = net_send_chat;
	net.is_up = net_is_up;
	net.caps = net_caps;
	net.barev_arg = gw;
	net.caps_arg = gw;
	if ((gw->store = store_open(gw->conf->storage_path, &cause)) == NULL ||
	    (gw->bridge = bridge_new(gw->base, component_ctx(gw->link),
		 gw->conf, &gw->node, gw->store, &net, &cause)) == NULL ||
	    (gw->barev = barev_new(gw->base, component_ctx(gw->link), gw->conf,
		 &bridge_barev_cb, gw->bridge, &cause)) == NULL) {
		log_err("main: %s", cause);
		free(cause);
		rc = 1;
		goto out;
	}
	log_info("main: starting version=%s jid=%s", PACKAGE_VERSION,
	    gw->conf->component_jid);
	component_start(gw->link);

	event_base_dispatch(gw->base);
out:
	barev_free(gw->barev);
	bridge_free(gw->bridge);
	store_close(gw->store);
	service_free(gw->service);
	component_free(gw->link);
	xmpp_shutdown();
	event_free(gw->ev_term);
	event_free(gw->ev_int);
	event_free(gw->ev_hup);
	event_base_free(gw->base);
	return rc;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct gateway gw;
	int ch, check_only = 0, verbose = 0, quiet = 0, rc;
	char *cause;

	memset(&gw, 0, sizeof(gw));
	gw.conf_path = CONF_DEFAULT_PATH;
	gw.cli_level = -1;
	while (
	    (ch = getopt_long(argc, argv, "c:tfvqs", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			gw.conf_path = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 'f':
			break;
		case 'v':
			verbose++;
			break;
		case 'q':
			quiet = 1;
			break;
		case 's':
			gw.cli_syslog = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("%s %s\n", PACKAGE_NAME, PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_BADCONF;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EXIT_BADCONF;
	}
	if (quiet)
		gw.cli_level = LOG_LEVEL_ERROR;
	else if (verbose > 0)
		gw.cli_level = verbose > 1 ? LOG_LEVEL_TRACE : LOG_LEVEL_DEBUG;

	if (conf_load(gw.conf_path, &gw.conf, &cause) == -1) {
		fprintf(stderr, "barev-gateway: %s\n", cause);
		free(cause);
		return EXIT_BADCONF;
	}
	/* Not in conf_load: a reload keeps the store it has open. */
	if (conf_check_storage(gw.conf, &cause) == -1) {
		fprintf(stderr, "barev-gateway: %s\n", cause);
		free(cause);
		conf_free(gw.conf);
		return EXIT_BADCONF;
	}
	if (check_only) {
		if (gw.conf->warning != NULL)
			fprintf(stderr, "barev-gateway: warning: %s\n",
			    gw.conf->warning);
		rc = find_node(&gw, 1);
		if (rc == 0)
			printf("barev-gateway: %s: configuration is valid\n",
			    gw.conf_path);
		conf_free(gw.conf);
		return rc == 0 ? 0 : EXIT_BADCONF;
	}
	signal(SIGPIPE, SIG_IGN);
	apply_logging(&gw);
	if (gw.conf->warning != NULL)
		log_warn("conf: %s", gw.conf->warning);
	if (barev_raise_fd_limit(&cause) == -1) {
		log_err("main: %s", cause);
		free(cause);
		conf_free(gw.conf);
		return 1;
	}
	if (find_node(&gw, 0) == -1) {
		conf_free(gw.conf);
		return 1;
	}
	rc = run(&gw);
	conf_free(gw.conf);
	return rc;
}
