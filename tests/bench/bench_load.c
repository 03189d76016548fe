/*
 * Load generator for the benchmarks (tests/bench/run.py drives it).
 *
 * One single-threaded epoll process plays every party around one gateway,
 * so that it can count both ends of each message with one clock:
 *  - a minimal XEP-0114 server: accepts the component, checks the
 *    handshake (SHA-1 of stream id + secret), registers users, answers
 *    probes, pumps messages to the gateway and counts what comes back;
 *  - Barev peers: one listener on [::]:port answers every dial to an
 *    address of an "AnyIP" prefix (the dialled address says which contact
 *    it is), echoes the stream header, answers pings and ack-N pings,
 *    counts messages and sends pre-built ones;
 *  - light XMPP clients (SASL PLAIN, bind) for the end-to-end runs
 *    through a real server.
 *
 * Figures go to stdout as "R name value unit", one sample per line; the
 * driver takes medians. Progress and errors go to stderr. Every loop is
 * bounded in time; any failure exits non-zero.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define PEER_PREFIX "201:bbbb::" /* reachable contacts (AnyIP route to lo) */
#define DEAD_PREFIX "201:dddd::" /* unreachable contacts (no route) */
#define READ_MAX (256 * 1024) /* bytes read from one socket per wakeup */
#define STANZA_MAX (1024 * 1024)
#define CHUNK 64 /* messages written at once in bulk runs */
#define BUCKET 0.1 /* seconds per accept-rate bucket */
#define MAX_BUCKETS 6000
#define MAX_BULK_PAIRS 1000 /* relay and e2e: pairs that carry traffic */

enum kind { K_COMP_LISTEN, K_COMP, K_PEER_LISTEN, K_PEER, K_C2S, K_TIMER };

enum c2s_state {
	C_CONNECTING,
	C_FEAT1,
	C_IBR,
	C_AUTH,
	C_FEAT2,
	C_BIND,
	C_GREG,
	C_AVAIL, /* presence sent; ready once the server has processed it */
	C_READY,
};

/* Which way bulk and paced traffic flows. */
enum dir {
	TO_BAREV, /* fake server (or XMPP clients) -> gateway -> peers */
	TO_XMPP, /* peers -> gateway -> fake server (or XMPP clients) */
	DIRECT, /* XMPP client -> server -> XMPP client, no gateway */
};

struct buf {
	char *p;
	size_t off; /* out: bytes already written */
	size_t len;
	size_t cap;
};

struct conn {
	enum kind kind;
	int fd;
	int dead;
	int want_out;
	int in_stream; /* the splitter is inside the stream element */
	int restart; /* a callback restarted the stream (after SASL) */
	struct buf in;
	struct buf out;
	int pair; /* peers: contact index; c2s: user index */
	int up; /* peers: saw the gateway's presence; c2s: ready */
	int role; /* c2s: 0 gateway user, 1 direct sender, 2 direct receiver */
	enum c2s_state state;
	char self[128]; /* peers: our Barev JID; c2s: localpart */
	char other[128]; /* peers: the gateway user's Barev JID */
	char *msg; /* pre-built bulk chunk this conn sends */
	size_t msglen;
	size_t msgoff[CHUNK + 1]; /* where message k of the chunk starts */
};

struct opts {
	const char *mode;
	int users;
	int contacts;
	int comp_port;
	int peer_port;
	int c2s_port;
	const char *secret;
	const char *domain; /* the component's JID */
	const char *xmpp_domain; /* the users' server */
	long msgs;
	int batches;
	long warmup;
	int window;
	int chunk; /* bulk messages a sender writes at once (<= CHUNK) */
	const char *prefix; /* e2e: the figures' prefix */
	int rate;
	double seconds;
	double
	    batch_seconds; /* adaptive batch size: this long at the warm-up's rate */
	int dead_every; /* every n-th contact is unreachable (0: none) */
	char *stages; /* idle: users online at each stage */
	int ka_windows;
	double ka_seconds;
	double timeout;
	int gw_pid;
	int srv_pid; /* e2e: the XMPP server */
	int ibr; /* e2e: register the accounts in-band first */
	int direct_pairs; /* e2e: client-to-client pairs */
	const char *dirs; /* which directions to run */
};

static struct opts O = {
	.mode = NULL,
	.users = 10,
	.contacts = 10,
	.comp_port = 5347,
	.peer_port = 5299,
	.c2s_port = 5222,
	.secret = "bench-secret",
	.domain = "barev.localhost",
	.xmpp_domain = "localhost",
	.msgs = 200000,
	.batches = 5,
	.warmup = 20000,
	.window = 2000,
	.chunk = CHUNK,
	.prefix = "e2e",
	.rate = 1000,
	.seconds = 4,
	.batch_seconds = 4,
	.dead_every = 0,
	.stages = NULL,
	.ka_windows = 5,
	.ka_seconds = 12,
	.timeout = 120,
	.gw_pid = 0,
	.srv_pid = 0,
	.ibr = 1,
	.direct_pairs = 10,
	.dirs = "to-barev,to-xmpp",
};

struct pair {
	struct conn *peer;
	char *to_contact; /* bulk chunk, server -> contact */
	size_t to_contact_len;
	size_t to_contact_off[CHUNK + 1];
	char jid[128]; /* the contact's JID on the gateway */
	char user_full[96]; /* the user's full JID */
};

static struct {
	int epfd;
	struct conn *comp;
	struct conn *timer;
	int comp_up;
	double t_link;
	char stream_id[40];
	long sync_seen;
	long sync_sent;
	int greg_errors;

	struct pair *pairs;
	int npairs;
	unsigned char *online; /* users whose probes we answer */

	struct conn **all; /* every connection, for the final resets */
	int nall;
	struct conn **c2s;
	int nc2s;
	int c2s_ready;

	long ups; /* peers that saw the gateway's presence */
	long accepts;
	long peers_open;
	double last_up;
	long buckets[MAX_BUCKETS];

	/* the traffic being counted */
	long sent;
	long got;
	int lat_on;
	double *lat;
	long nlat;
	long caplat;
	long pings;
	long acks;
} G;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void __attribute__((format(printf, 1, 2), noreturn))
die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "bench_load: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

static void __attribute__((format(printf, 1, 2))) note(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "bench_load: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

static void __attribute__((format(printf, 3, 4)))
result(const char *name, const char *unit, const char *fmt, ...)
{
	va_list ap;

	printf("R %s ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" %s\n", unit);
	fflush(stdout);
}

static void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		die("out of memory");
	return p;
}

static void *
xrealloc(void *p, size_t n)
{
	if ((p = realloc(p, n ? n : 1)) == NULL)
		die("out of memory");
	return p;
}

/* --- /proc ------------------------------------------------------------ */

/* utime + stime of pid in seconds (/proc/PID/stat fields 14 and 15). */
static double
proc_cpu(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	FILE *f;
	int i;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((f = fopen(path, "r")) == NULL)
		die("%s: %s", path, strerror(errno));
	if (fgets(buf, sizeof(buf), f) == NULL)
		die("%s: empty", path);
	fclose(f);
	/* The command name may hold spaces: count fields after its ')'. */
	if ((p = strrchr(buf, ')')) == NULL)
		die("%s: unexpected format", path);
	p += 2; /* field 3 */
	for (i = 3; i < 14; i++) {
		if ((p = strchr(p, ' ')) == NULL)
			die("%s: short", path);
		p++;
	}
	if (sscanf(p, "%llu %llu", &ut, &st) != 2)
		die("%s: unexpected format", path);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double
self_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* VmRSS of pid in bytes. */
static long
proc_rss(int pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if ((f = fopen(path, "r")) == NULL)
		die("%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	if (kb < 0)
		die("%s: no VmRSS", path);
	return kb * 1024;
}

/* --- addresses and names --------------------------------------------- */

/* The address of contact i (0-based): PREFIX + hi:lo of i + 1. */
static void
contact_addr(int i, int dead, char *out, size_t len)
{
	struct in6_addr a;
	unsigned n = (unsigned)i + 1;
	char text[INET6_ADDRSTRLEN];

	if (inet_pton(AF_INET6, dead ? DEAD_PREFIX : PEER_PREFIX, &a) != 1)
		die("bad prefix");
	a.s6_addr[12] = (unsigned char)(n >> 24);
	a.s6_addr[13] = (unsigned char)(n >> 16);
	a.s6_addr[14] = (unsigned char)(n >> 8);
	a.s6_addr[15] = (unsigned char)n;
	inet_ntop(AF_INET6, &a, text, sizeof(text));
	snprintf(out, len, "%s", text);
}

static int
contact_dead(int i)
{
	return O.dead_every > 0 && i % O.dead_every == O.dead_every - 1;
}

/* Contact index from the address a peer was dialled at, or -1. */
static int
contact_of_addr(const struct in6_addr *a)
{
	struct in6_addr pre;
	unsigned n;

	inet_pton(AF_INET6, PEER_PREFIX, &pre);
	if (memcmp(a, &pre, 12) != 0)
		return -1;
	n = (unsigned)a->s6_addr[12] << 24 | (unsigned)a->s6_addr[13] << 16 |
	    (unsigned)a->s6_addr[14] << 8 | a->s6_addr[15];
	if (n == 0 || n > (unsigned)G.npairs)
		return -1;
	return (int)n - 1;
}

/* The contact's JID on the gateway, in the typeable nick%addr form. */
static void
contact_jid(int i, char *out, size_t len)
{
	char addr[INET6_ADDRSTRLEN], *p;

	contact_addr(i, contact_dead(i), addr, sizeof(addr));
	for (p = addr; *p != '\0'; p++)
		if (*p == ':')
			*p = '-';
	snprintf(out, len, "p%d%%%s@%s", i, addr, O.domain);
}

/* --- buffers and sockets ---------------------------------------------- */

/* Appends one message to a bulk chunk, remembering where it starts. */
static void
chunk_add(
    char **chunk, size_t *len, size_t *off, int k, const char *msg, size_t mlen)
{
	off[k] = *len;
	*chunk = xrealloc(*chunk, *len + mlen);
	memcpy(*chunk + *len, msg, mlen);
	*len += mlen;
	off[k + 1] = *len;
}

static void
buf_reserve(struct buf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return;
	if (b->off > 0) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->len + more <= b->cap)
			return;
	}
	while (b->len + more > b->cap)
		b->cap = b->cap ? b->cap * 2 : 65536;
	b->p = xrealloc(b->p, b->cap);
}

static void
ep_mod(struct conn *c, int out)
{
	struct epoll_event ev;

	if (c->want_out == out)
		return;
	ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
	ev.data.ptr = c;
	if (epoll_ctl(G.epfd, EPOLL_CTL_MOD, c->fd, &ev) == -1)
		die("epoll_ctl: %s", strerror(errno));
	c->want_out = out;
}

static struct conn *
conn_add(int fd, enum kind kind, int out)
{
	struct conn *c = xmalloc(sizeof(*c));
	struct epoll_event ev;

	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->kind = kind;
	c->pair = -1;
	c->want_out = out;
	ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
	ev.data.ptr = c;
	if (epoll_ctl(G.epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
		die("epoll_ctl: %s", strerror(errno));
	G.all = xrealloc(G.all, (size_t)(G.nall + 1) * sizeof(*G.all));
	G.all[G.nall++] = c;
	return c;
}

/* Closes with a reset: no TIME_WAIT is left on either side. */
static void
conn_kill(struct conn *c)
{
	struct linger lg = { 1, 0 };

	if (c->dead)
		return;
	c->dead = 1;
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	epoll_ctl(G.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->kind == K_PEER && c->pair >= 0 && G.pairs[c->pair].peer == c)
		G.pairs[c->pair].peer = NULL;
	if (c->kind == K_PEER)
		G.peers_open--;
	if (c == G.comp) {
		G.comp = NULL;
		G.comp_up = 0;
	}
	/* Freed at exit only: a callback up the stack may still hold it. */
}

static void
conn_flush(struct conn *c)
{
	ssize_t n;

	while (!c->dead && c->out.off < c->out.len) {
		n = write(
		    c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (c->kind == K_PEER) {
				conn_kill(c);
				return;
			}
			die("write (kind %d): %s", c->kind, strerror(errno));
		}
		c->out.off += (size_t)n;
	}
	if (c->out.off == c->out.len)
		c->out.off = c->out.len = 0;
	if (!c->dead)
		ep_mod(c, c->out.len > 0);
}

static void
conn_put(struct conn *c, const char *data, size_t len)
{
	if (c == NULL || c->dead)
		return;
	buf_reserve(&c->out, len);
	memcpy(c->out.p + c->out.len, data, len);
	c->out.len += len;
}

static void
conn_send(struct conn *c, const char *data, size_t len)
{
	conn_put(c, data, len);
	if (c != NULL && !c->dead)
		conn_flush(c);
}

static void
conn_sendstr(struct conn *c, const char *s)
{
	conn_send(c, s, strlen(s));
}

static int
listen_tcp(const char *addr, int port)
{
	struct sockaddr_in6 sa;
	int fd, one = 1;

	memset(&sa, 0, sizeof(sa));
	sa.sin6_family = AF_INET6;
	sa.sin6_port = htons((uint16_t)port);
	if (inet_pton(AF_INET6, addr, &sa.sin6_addr) != 1)
		die("bad address %s", addr);
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    listen(fd, 4096) == -1)
		die("listen on [%s]:%d: %s", addr, port, strerror(errno));
	return fd;
}

static int
connect_tcp(const char *addr, int port)
{
	struct sockaddr_in6 sa;
	int fd, one = 1;

	memset(&sa, 0, sizeof(sa));
	sa.sin6_family = AF_INET6;
	sa.sin6_port = htons((uint16_t)port);
	if (inet_pton(AF_INET6, addr, &sa.sin6_addr) != 1)
		die("bad address %s", addr);
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		die("socket: %s", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 &&
	    errno != EINPROGRESS)
		die("connect [%s]:%d: %s", addr, port, strerror(errno));
	return fd;
}

/* --- a tiny XML splitter -------------------------------------------------- */

enum piece { P_HEADER, P_STANZA, P_END };

typedef void (*piece_fn)(struct conn *, enum piece, const char *, size_t);

/* Index of the '>' closing the tag that starts at p[j], or -1. */
static long
tag_end(const char *p, size_t j, size_t len)
{
	char q = 0;
	size_t k;

	for (k = j + 1; k < len; k++) {
		if (q != 0) {
			if (p[k] == q)
				q = 0;
		} else if (p[k] == '"' || p[k] == '\'')
			q = p[k];
		else if (p[k] == '>')
			return (long)k;
	}
	return -1;
}

/*
 * Hands every complete top-level piece of p[0..len) to fn: the stream
 * header, each stanza (depth-1 element), the stream end. Returns how many
 * bytes were used; the rest (an incomplete stanza) is fed again later.
 */
static size_t
split(struct conn *c, const char *p, size_t len, piece_fn fn)
{
	size_t i = 0, start = 0, done = 0;
	int depth = c->in_stream, done_depth = c->in_stream;
	const char *lt, *e;
	long k;

	while (i < len && !c->dead) {
		if ((lt = memchr(p + i, '<', len - i)) == NULL) {
			if (depth <= 1) {
				done = len;
				done_depth = depth;
			}
			break;
		}
		i = (size_t)(lt - p);
		if (depth <= 1) {
			done = i;
			done_depth = depth;
		}
		if (i + 1 >= len)
			break;
		if (p[i + 1] == '?' || p[i + 1] == '!') {
			e = memmem(p + i, len - i,
			    p[i + 1] == '?' ? "?>" : "-->",
			    p[i + 1] == '?' ? 2 : 3);
			if (e == NULL)
				break;
			i = (size_t)(e - p) + (p[i + 1] == '?' ? 2 : 3);
			if (depth <= 1) {
				done = i;
				done_depth = depth;
			}
			continue;
		}
		if ((k = tag_end(p, i, len)) < 0)
			break;
		if (p[i + 1] == '/') {
			depth--;
			if (depth == 1)
				fn(c, P_STANZA, p + start,
				    (size_t)k + 1 - start);
			else if (depth <= 0) {
				fn(c, P_END, p + i, (size_t)k + 1 - i);
				depth = 0;
			}
		} else if (p[k - 1] == '/') {
			if (depth == 1)
				fn(c, P_STANZA, p + i, (size_t)k + 1 - i);
		} else if (depth == 0) {
			fn(c, P_HEADER, p + i, (size_t)k + 1 - i);
			depth = 1;
		} else {
			if (depth == 1)
				start = i;
			depth++;
		}
		i = (size_t)k + 1;
		if (c->restart) {
			/* A new stream follows on the same socket. */
			c->restart = 0;
			depth = 0;
		}
		if (depth <= 1) {
			done = i;
			done_depth = depth;
		}
	}
	c->in_stream = done_depth;
	return done;
}

/* The element name at tag (after '<'). */
static int
name_is(const char *tag, size_t len, const char *name)
{
	size_t n = strlen(name);

	return len > n + 1 && memcmp(tag + 1, name, n) == 0 &&
	    (tag[n + 1] == ' ' || tag[n + 1] == '>' || tag[n + 1] == '/' ||
		tag[n + 1] == '\n' || tag[n + 1] == '\t');
}

/* Value of attribute name in the first tag of s, into out; 0 or -1. */
static int
attr(const char *s, size_t len, const char *name, char *out, size_t outlen)
{
	size_t n = strlen(name), i, j;
	long end = tag_end(s, 0, len);
	char q;

	if (end < 0)
		end = (long)len;
	for (i = 1; i + n + 2 < (size_t)end; i++) {
		if (s[i - 1] != ' ' && s[i - 1] != '\n' && s[i - 1] != '\t')
			continue;
		if (memcmp(s + i, name, n) != 0 || s[i + n] != '=')
			continue;
		q = s[i + n + 1];
		if (q != '"' && q != '\'')
			continue;
		for (j = i + n + 2; j < (size_t)end && s[j] != q; j++)
			;
		if (j - (i + n + 2) >= outlen)
			return -1;
		memcpy(out, s + i + n + 2, j - (i + n + 2));
		out[j - (i + n + 2)] = '\0';
		return 0;
	}
	return -1;
}

/* A message with a body: counted; a timestamp in it gives a latency. */
static int
count_message(const char *s, size_t len)
{
	const char *b = memmem(s, len, "<body>", 6), *t;
	uint64_t ts;

	if (b == NULL)
		return 0;
	G.got++;
	if (!G.lat_on)
		return 1;
	t = memmem(b, len - (size_t)(b - s), "t=", 2);
	if (t == NULL)
		return 1;
	ts = strtoull(t + 2, NULL, 10);
	if (ts == 0)
		return 1;
	if (G.nlat == G.caplat) {
		G.caplat = G.caplat ? G.caplat * 2 : 4096;
		G.lat = xrealloc(G.lat, (size_t)G.caplat * sizeof(*G.lat));
	}
	G.lat[G.nlat++] = (double)(now_ns() - ts) / 1e3; /* microseconds */
	return 1;
}

/* --- the fake XMPP server (component side) ------------------------------ */

static void
hex_sha1(const char *in, char out[41])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;

	if (!EVP_Digest(in, strlen(in), md, &mdlen, EVP_sha1(), NULL))
		die("EVP_Digest failed");
	for (i = 0; i < mdlen && i < 20; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
	out[40] = '\0';
}

static void
user_jid(int u, char *out, size_t len, int full)
{
	snprintf(out, len, "bu%d@%s%s", u, O.xmpp_domain, full ? "/b" : "");
}

static void
comp_piece(struct conn *c, enum piece kind, const char *s, size_t len)
{
	char buf[512], want[41], got[64], id[64], type[32], to[128];
	int u;

	if (kind == P_END)
		die("the gateway closed the component stream");
	if (kind == P_HEADER) {
		snprintf(G.stream_id, sizeof(G.stream_id), "bench%ld%d",
		    (long)time(NULL), getpid());
		snprintf(buf, sizeof(buf),
		    "<?xml version='1.0'?><stream:stream "
		    "xmlns:stream='http://etherx.jabber.org/streams' "
		    "xmlns='jabber:component:accept' from='%s' id='%s'>",
		    O.domain, G.stream_id);
		conn_sendstr(c, buf);
		return;
	}
	if (name_is(s, len, "message")) {
		count_message(s, len);
		return;
	}
	if (name_is(s, len, "handshake")) {
		const char *gt = memchr(s, '>', len), *lt;

		snprintf(buf, sizeof(buf), "%s%s", G.stream_id, O.secret);
		hex_sha1(buf, want);
		lt = gt ? memchr(gt, '<', len - (size_t)(gt - s)) : NULL;
		if (gt == NULL || lt == NULL ||
		    lt - gt - 1 >= (long)sizeof(got))
			die("bad handshake");
		memcpy(got, gt + 1, (size_t)(lt - gt - 1));
		got[lt - gt - 1] = '\0';
		if (strcasecmp(got, want) != 0)
			die("handshake mismatch: got %s want %s", got, want);
		conn_sendstr(c, "<handshake/>");
		G.comp_up = 1;
		G.t_link = now();
		return;
	}
	if (name_is(s, len, "iq")) {
		if (attr(s, len, "id", id, sizeof(id)) == 0 &&
		    strncmp(id, "sync-", 5) == 0 &&
		    attr(s, len, "type", type, sizeof(type)) == 0 &&
		    strcmp(type, "result") == 0)
			G.sync_seen = strtol(id + 5, NULL, 10);
		else if (attr(s, len, "type", type, sizeof(type)) == 0 &&
		    strcmp(type, "error") == 0)
			note("gateway answered an iq with an error: %.*s",
			    (int)(len > 300 ? 300 : len), s);
		return;
	}
	if (name_is(s, len, "presence")) {
		if (attr(s, len, "type", type, sizeof(type)) != 0 ||
		    strcmp(type, "probe") != 0 ||
		    attr(s, len, "to", to, sizeof(to)) != 0 ||
		    sscanf(to, "bu%d@", &u) != 1 || u < 0 || u >= O.users ||
		    !G.online[u])
			return;
		user_jid(u, to, sizeof(to), 1);
		snprintf(buf, sizeof(buf), "<presence from='%s' to='%s'/>", to,
		    O.domain);
		conn_sendstr(c, buf);
	}
}

/* A stanza the gateway answers, so that everything before it was handled. */
static long
comp_sync(void)
{
	char buf[256], from[96];

	user_jid(0, from, sizeof(from), 1);
	snprintf(buf, sizeof(buf),
	    "<iq type='get' id='sync-%ld' from='%s' "
	    "to='%s'><query xmlns='http://jabber.org/protocol/disco#info'/>"
	    "</iq>",
	    ++G.sync_sent, from, O.domain);
	conn_sendstr(G.comp, buf);
	return G.sync_sent;
}

static void
comp_online(int u)
{
	char buf[256], from[96];

	G.online[u] = 1;
	user_jid(u, from, sizeof(from), 1);
	snprintf(
	    buf, sizeof(buf), "<presence from='%s' to='%s'/>", from, O.domain);
	conn_put(G.comp, buf, strlen(buf));
}

/* Registers every user and makes each contact theirs (subscribe). */
static void
comp_register(void)
{
	char buf[512], from[96], bare[96];
	int u, k, i;

	for (u = 0; u < O.users; u++) {
		user_jid(u, from, sizeof(from), 1);
		user_jid(u, bare, sizeof(bare), 0);
		snprintf(buf, sizeof(buf),
		    "<iq type='set' id='reg-%d' "
		    "from='%s' to='%s'><query xmlns='jabber:iq:register'>"
		    "<username>bu%d</username></query></iq>",
		    u, from, O.domain, u);
		conn_put(G.comp, buf, strlen(buf));
		for (k = 0; k < O.contacts; k++) {
			i = u * O.contacts + k;
			snprintf(buf, sizeof(buf),
			    "<presence type='subscribe' "
			    "from='%s' to='%s'/>",
			    bare, G.pairs[i].jid);
			conn_put(G.comp, buf, strlen(buf));
		}
		if (u % 50 == 49)
			conn_flush(G.comp);
	}
	conn_flush(G.comp);
}

/* --- the Barev peers ------------------------------------------------------ */

/* Every body: t= carries CLOCK_MONOTONIC ns in paced runs, zeros otherwise. */
#define BODY_TEXT                                                              \
	"Benchmark message t=%019" PRIu64 " lorem ipsum dolor "                \
	"sit amet, a short chat line"

static void
peer_piece(struct conn *c, enum piece kind, const char *s, size_t len)
{
	char buf[512], id[96], type[16];
	size_t n;

	if (kind == P_END) {
		conn_kill(c);
		return;
	}
	if (kind == P_HEADER) {
		/*
		 * The gateway dials: echo its from/to, as an acceptor does,
		 * and say we are here, as the reference client does.
		 */
		if (attr(s, len, "from", c->other, sizeof(c->other)) != 0 ||
		    attr(s, len, "to", c->self, sizeof(c->self)) != 0)
			die("peer: header without from/to");
		snprintf(buf, sizeof(buf),
		    "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n"
		    "<stream:stream xmlns=\"jabber:client\" "
		    "xmlns:stream=\"http://etherx.jabber.org/streams\" "
		    "from=\"%s\" to=\"%s\"><presence/>",
		    c->self, c->other);
		conn_sendstr(c, buf);
		/* The chunk this pipe sends in bulk runs. */
		free(c->msg);
		c->msg = NULL;
		c->msglen = 0;
		for (n = 0; n < CHUNK; n++) {
			int l = snprintf(buf, sizeof(buf),
			    "<message type=\"chat\" from=\"%s\" to=\"%s\">"
			    "<body>" BODY_TEXT "</body></message>",
			    c->self, c->other, (uint64_t)0);
			chunk_add(&c->msg, &c->msglen, c->msgoff, (int)n, buf,
			    (size_t)l);
		}
		return;
	}
	if (name_is(s, len, "message")) {
		count_message(s, len);
		return;
	}
	if (name_is(s, len, "iq")) {
		/* Pings (ping-N keepalive, ack-N delivery proof): answer at once. */
		if (attr(s, len, "type", type, sizeof(type)) == 0 &&
		    strcmp(type, "get") == 0 &&
		    attr(s, len, "id", id, sizeof(id)) == 0) {
			n = (size_t)snprintf(buf, sizeof(buf),
			    "<iq type=\"result\" id=\"%s\"/>", id);
			conn_put(c, buf, n);
			if (strncmp(id, "ack-", 4) == 0)
				G.acks++;
			else
				G.pings++;
		}
		return;
	}
	if (name_is(s, len, "presence") && !c->up) {
		c->up = 1;
		G.ups++;
		G.last_up = now();
	}
}

static void
peer_accept(struct conn *l)
{
	struct sockaddr_in6 local;
	socklen_t llen;
	struct conn *c;
	double t;
	long b;
	int fd, one = 1;

	for (;;) {
		fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EAGAIN || errno == EINTR ||
			    errno == ECONNABORTED)
				return;
			die("accept: %s", strerror(errno));
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		G.accepts++;
		if (G.comp_up) {
			t = now() - G.t_link;
			b = (long)(t / BUCKET);
			if (b >= 0 && b < MAX_BUCKETS)
				G.buckets[b]++;
		}
		c = conn_add(fd, K_PEER, 0);
		G.peers_open++;
		llen = sizeof(local);
		if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
			c->pair = contact_of_addr(&local.sin6_addr);
		if (c->pair < 0) {
			note("a dial to an unknown address; closing it");
			conn_kill(c);
			continue;
		}
		if (G.pairs[c->pair].peer != NULL)
			conn_kill(G.pairs[c->pair].peer);
		G.pairs[c->pair].peer = c;
	}
}

/* --- light XMPP clients (end to end) -------------------------------------- */

static void
b64(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;
	unsigned v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 |
		    in[i + 2];
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
		*out++ = tab[v & 63];
	}
	if (i < len) {
		v = (unsigned)in[i] << 16 |
		    (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0);
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
		*out++ = '=';
	}
	*out = '\0';
}

static void
c2s_header(struct conn *c)
{
	char buf[256];

	snprintf(buf, sizeof(buf),
	    "<?xml version='1.0'?><stream:stream "
	    "to='%s' xmlns='jabber:client' "
	    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
	    O.xmpp_domain);
	conn_sendstr(c, buf);
}

static void
c2s_auth(struct conn *c)
{
	unsigned char raw[256];
	char enc[400], buf[512];
	size_t n = 0, ul = strlen(c->self);

	raw[n++] = 0;
	memcpy(raw + n, c->self, ul);
	n += ul;
	raw[n++] = 0;
	memcpy(raw + n, "benchpw", 7);
	n += 7;
	b64(raw, n, enc);
	snprintf(buf, sizeof(buf),
	    "<auth xmlns='urn:ietf:params:xml:ns:"
	    "xmpp-sasl' mechanism='PLAIN'>%s</auth>",
	    enc);
	conn_sendstr(c, buf);
	c->state = C_AUTH;
}

/* Logged in: become available, and as a gateway user register and subscribe. */
static void
c2s_bound(struct conn *c)
{
	char buf[512];
	int k, i;

	/*
	 * The server answers the iq after it processed the presence: a
	 * message sent to us before that finds no available resource and is
	 * lost (no offline storage).
	 */
	if (c->role != 0) {
		snprintf(buf, sizeof(buf),
		    "<presence/><iq type='get' id='avail' to='%s'><query "
		    "xmlns='http://jabber.org/protocol/disco#info'/></iq>",
		    O.xmpp_domain);
		conn_sendstr(c, buf);
		c->state = C_AVAIL;
		return;
	}
	if (c->state == C_BIND) {
		snprintf(buf, sizeof(buf),
		    "<iq type='set' id='greg' to='%s'>"
		    "<query xmlns='jabber:iq:register'><username>%s</username>"
		    "</query></iq>",
		    O.domain, c->self);
		conn_sendstr(c, buf);
		c->state = C_GREG;
		return;
	}
	for (k = 0; k < O.contacts; k++) {
		i = c->pair * O.contacts + k;
		snprintf(buf, sizeof(buf),
		    "<presence type='subscribe' "
		    "to='%s'/>",
		    G.pairs[i].jid);
		conn_put(c, buf, strlen(buf));
	}
	snprintf(buf, sizeof(buf), "<presence/><presence to='%s'/>", O.domain);
	conn_sendstr(c, buf);
	c->state = C_READY;
	G.c2s_ready++;
}

static void
c2s_piece(struct conn *c, enum piece kind, const char *s, size_t len)
{
	char buf[256], id[32], type[16];

	if (kind == P_END)
		die("c2s %s: the server closed the stream", c->self);
	if (kind == P_HEADER)
		return;
	switch (c->state) {
	case C_FEAT1:
		if (!name_is(s, len, "stream:features"))
			return;
		if (O.ibr) {
			snprintf(buf, sizeof(buf),
			    "<iq type='set' id='ibr'>"
			    "<query xmlns='jabber:iq:register'><username>%s"
			    "</username><password>benchpw</password></query>"
			    "</iq>",
			    c->self);
			conn_sendstr(c, buf);
			c->state = C_IBR;
		} else
			c2s_auth(c);
		return;
	case C_IBR:
		if (name_is(s, len, "iq"))
			c2s_auth(c);
		return;
	case C_AUTH:
		if (name_is(s, len, "success")) {
			c->restart = 1;
			c->state = C_FEAT2;
			c2s_header(c);
		} else if (name_is(s, len, "failure"))
			die("c2s %s: authentication failed: %.*s", c->self,
			    (int)len, s);
		return;
	case C_FEAT2:
		if (!name_is(s, len, "stream:features"))
			return;
		conn_sendstr(c,
		    "<iq type='set' id='bind'><bind xmlns='urn:"
		    "ietf:params:xml:ns:xmpp-bind'><resource>b</resource>"
		    "</bind></iq>");
		c->state = C_BIND;
		return;
	case C_BIND:
		if (name_is(s, len, "iq") &&
		    attr(s, len, "id", id, sizeof(id)) == 0 &&
		    strcmp(id, "bind") == 0) {
			if (attr(s, len, "type", type, sizeof(type)) != 0 ||
			    strcmp(type, "result") != 0)
				die("c2s %s: bind failed", c->self);
			c2s_bound(c);
		}
		return;
	case C_GREG:
		if (name_is(s, len, "iq") &&
		    attr(s, len, "id", id, sizeof(id)) == 0 &&
		    strcmp(id, "greg") == 0) {
			if (attr(s, len, "type", type, sizeof(type)) != 0 ||
			    strcmp(type, "result") != 0)
				G.greg_errors++;
			c2s_bound(c);
		}
		return;
	case C_AVAIL:
		if (name_is(s, len, "iq") &&
		    attr(s, len, "id", id, sizeof(id)) == 0 &&
		    strcmp(id, "avail") == 0) {
			c->state = C_READY;
			G.c2s_ready++;
		}
		return;
	case C_READY:
		if (name_is(s, len, "message"))
			count_message(s, len);
		return;
	default:
		return;
	}
}

static struct conn *
c2s_new(int idx, int role, const char *local)
{
	struct conn *c = conn_add(connect_tcp("::1", O.c2s_port), K_C2S, 1);

	c->pair = idx;
	c->role = role;
	c->state = C_CONNECTING;
	snprintf(c->self, sizeof(c->self), "%s", local);
	return c;
}

/* --- the event loop ------------------------------------------------------- */

static void (*pump)(void);

static void
on_readable(struct conn *c)
{
	piece_fn fn = c->kind == K_COMP ? comp_piece
	    : c->kind == K_PEER		? peer_piece
					: c2s_piece;
	size_t total = 0, used;
	ssize_t n;

	while (total < READ_MAX && !c->dead) {
		buf_reserve(&c->in, 65536);
		n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (c->kind == K_PEER) {
				conn_kill(c);
				return;
			}
			die("read (kind %d): %s", c->kind, strerror(errno));
		}
		if (n == 0) {
			if (c->kind == K_PEER) {
				conn_kill(c);
				return;
			}
			die("%s closed the connection",
			    c->kind == K_COMP ? "the gateway"
					      : "the XMPP server");
		}
		total += (size_t)n;
		c->in.len += (size_t)n;
		used = split(c, c->in.p, c->in.len, fn);
		if (c->dead)
			return;
		memmove(c->in.p, c->in.p + used, c->in.len - used);
		c->in.len -= used;
		if (c->in.len > STANZA_MAX)
			die("a stanza larger than %d bytes", STANZA_MAX);
	}
	/* Answers queued by the callbacks go out in one write. */
	if (c->out.len > 0)
		conn_flush(c);
}

static void
on_event(struct conn *c, uint32_t ev)
{
	int fd, err = 0, one = 1;
	socklen_t elen = sizeof(err);

	switch (c->kind) {
	case K_COMP_LISTEN:
		fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			return;
		if (G.comp != NULL)
			die("a second component connection");
		/* As XMPP servers do: no Nagle delay on the component stream. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		G.comp = conn_add(fd, K_COMP, 0);
		return;
	case K_PEER_LISTEN:
		peer_accept(c);
		return;
	case K_TIMER:
		return; /* read by the paced pump */
	case K_C2S:
		if (c->state == C_CONNECTING && (ev & EPOLLOUT)) {
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
			if (err != 0)
				die("c2s connect: %s", strerror(err));
			c->state = C_FEAT1;
			c2s_header(c);
		}
		break;
	default:
		break;
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
		on_readable(c);
	if (!c->dead && (ev & EPOLLOUT) && c->out.len > 0)
		conn_flush(c);
}

/* Runs the loop until pred() holds; -1 after timeout seconds. */
static int
run_until(int (*pred)(void), double timeout)
{
	struct epoll_event evs[256];
	double end = now() + timeout;
	int n, i;

	for (;;) {
		if (pred != NULL && pred())
			return 0;
		if (now() >= end)
			return -1;
		if (pump != NULL)
			pump();
		n = epoll_wait(G.epfd, evs, 256, pump != NULL ? 1 : 10);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++)
			on_event(evs[i].data.ptr, evs[i].events);
	}
}

static void
must(int (*pred)(void), double timeout, const char *what)
{
	if (run_until(pred, timeout) == -1)
		die("timed out after %.0f s waiting for %s (got=%ld sent=%ld "
		    "ups=%ld accepts=%ld c2s_ready=%d)",
		    timeout, what, G.got, G.sent, G.ups, G.accepts,
		    G.c2s_ready);
}

static void
sleep_loop(double seconds)
{
	run_until(NULL, seconds);
}

static int
pred_comp_up(void)
{
	return G.comp_up;
}
static int
pred_synced(void)
{
	return G.sync_seen >= G.sync_sent;
}
static int
pred_c2s_ready(void)
{
	return G.c2s_ready >= G.nc2s;
}

static long want_ups;
static int
pred_ups(void)
{
	return G.ups >= want_ups;
}

/* --- traffic ---------------------------------------------------------------- */

static enum dir cur_dir;
static long cur_total;
#define MAX_SENDERS 65536
static struct conn *cur_srcs[MAX_SENDERS];
static int cur_nsrcs;
static unsigned cur_rr;

/* Queues up to n bulk messages, round-robin over the senders. */
static void
bulk_put(long n)
{
	struct conn *c;
	struct pair *p;
	long k;
	int i;

	while (n > 0) {
		i = (int)(cur_rr++ %
		    (unsigned)(cur_dir == TO_BAREV && G.comp != NULL
			    ? G.npairs
			    : cur_nsrcs));
		if (cur_dir == TO_BAREV && G.comp != NULL) {
			/* The fake server writes to the contacts in turn. */
			p = &G.pairs[i];
			if (contact_dead(i) || p->peer == NULL)
				continue;
			k = n < 16 ? n : 16;
			conn_put(G.comp, p->to_contact, p->to_contact_off[k]);
			n -= k;
			G.sent += k;
			continue;
		}
		c = cur_srcs[i];
		if (c == NULL || c->dead || c->msg == NULL)
			continue;
		k = n < O.chunk ? n : O.chunk;
		conn_put(c, c->msg, c->msgoff[k]);
		n -= k;
		G.sent += k;
	}
}

static void
flush_srcs(void)
{
	int i;

	if (cur_dir == TO_BAREV && G.comp != NULL) {
		conn_flush(G.comp);
		return;
	}
	for (i = 0; i < cur_nsrcs; i++)
		if (cur_srcs[i] != NULL && cur_srcs[i]->out.len > 0)
			conn_flush(cur_srcs[i]);
}

static void
bulk_pump(void)
{
	long room = O.window - (G.sent - G.got), left = cur_total - G.sent;

	if (room > left)
		room = left;
	if (room < O.chunk && room < left)
		return; /* wait for a chunk's worth of room */
	if (room <= 0)
		return;
	bulk_put(room);
	flush_srcs();
}

static int
pred_all_got(void)
{
	return G.got >= cur_total;
}

static struct conn *timer_conn;
static double paced_end;

/* One message with a fresh timestamp from sender i (paced runs). */
static void
paced_one(void)
{
	char buf[768], body[256];
	struct pair *p;
	struct conn *c;
	int i, n, tries;

	for (tries = 0; tries < 65536; tries++) {
		i = (int)(cur_rr++ %
		    (unsigned)(cur_dir == TO_BAREV && G.comp != NULL
			    ? G.npairs
			    : cur_nsrcs));
		snprintf(body, sizeof(body), BODY_TEXT, now_ns());
		if (cur_dir == TO_BAREV && G.comp != NULL) {
			p = &G.pairs[i];
			if (contact_dead(i) || p->peer == NULL)
				continue;
			n = snprintf(buf, sizeof(buf),
			    "<message from='%s' "
			    "to='%s' type='chat' id='b'><body>%s</body>"
			    "</message>",
			    p->user_full, p->jid, body);
			conn_send(G.comp, buf, (size_t)n);
		} else {
			c = cur_srcs[i];
			if (c == NULL || c->dead)
				continue;
			if (c->kind == K_PEER)
				n = snprintf(buf, sizeof(buf),
				    "<message "
				    "type=\"chat\" from=\"%s\" to=\"%s\"><body>"
				    "%s</body></message>",
				    c->self, c->other, body);
			else
				n = snprintf(buf, sizeof(buf),
				    "<message to='%s' "
				    "type='chat' id='b'><body>%s</body>"
				    "</message>",
				    c->other, body);
			conn_send(c, buf, (size_t)n);
		}
		G.sent++;
		return;
	}
	die("no sender for a paced message");
}

static void
paced_pump(void)
{
	uint64_t ticks;
	long per_tick = O.rate / 1000 > 0 ? O.rate / 1000 : 1;

	if (now() >= paced_end)
		return;
	if (read(timer_conn->fd, &ticks, sizeof(ticks)) != sizeof(ticks))
		return;
	while (ticks-- > 0) {
		long k;

		for (k = 0; k < per_tick; k++)
			paced_one();
	}
}

static int
pred_paced_done(void)
{
	return now() >= paced_end && G.got >= G.sent;
}

static const char *
dir_name(enum dir d)
{
	return d == TO_BAREV ? "to_barev" : d == TO_XMPP ? "to_xmpp" : "direct";
}

/* Sets up who sends in direction d. */
static void
set_senders(enum dir d)
{
	int i;

	cur_dir = d;
	cur_nsrcs = 0;
	cur_rr = 0;
	if (d == TO_XMPP) {
		for (i = 0; i < G.npairs && cur_nsrcs < MAX_SENDERS; i++)
			if (G.pairs[i].peer != NULL)
				cur_srcs[cur_nsrcs++] = G.pairs[i].peer;
	} else if (G.comp == NULL || d == DIRECT) {
		/* XMPP clients send (end to end). */
		for (i = 0; i < G.nc2s && cur_nsrcs < MAX_SENDERS; i++)
			if ((d == DIRECT && G.c2s[i]->role == 1) ||
			    (d != DIRECT && G.c2s[i]->role == 0))
				cur_srcs[cur_nsrcs++] = G.c2s[i];
	}
	if (cur_nsrcs == 0 && !(d == TO_BAREV && G.comp != NULL))
		die("no senders for %s", dir_name(d));
}

static void
reset_counts(void)
{
	G.sent = G.got = 0;
	G.nlat = 0;
}

/* One bulk batch: rate, gateway CPU per 100k, our own CPU per 100k. */
static double
bulk_batch(const char *prefix, enum dir d, long total, int report)
{
	double t0, t1, c0, c1, s0, s1, p0 = 0, p1 = 0;
	char name[128];

	set_senders(d);
	reset_counts();
	cur_total = total;
	G.lat_on = 0;
	t0 = now();
	c0 = proc_cpu(O.gw_pid);
	s0 = self_cpu();
	if (O.srv_pid > 0)
		p0 = proc_cpu(O.srv_pid);
	pump = bulk_pump;
	must(pred_all_got, O.timeout, "the bulk messages");
	pump = NULL;
	t1 = now();
	c1 = proc_cpu(O.gw_pid);
	s1 = self_cpu();
	if (O.srv_pid > 0)
		p1 = proc_cpu(O.srv_pid);
	if (!report)
		return (double)total / (t1 - t0);
	snprintf(name, sizeof(name), "%s.%s.rate", prefix, dir_name(d));
	result(name, "msg/s", "%.0f", (double)total / (t1 - t0));
	if (d != DIRECT) {
		snprintf(name, sizeof(name), "%s.%s.gw_cpu_per_100k", prefix,
		    dir_name(d));
		result(name, "s", "%.3f", (c1 - c0) / (double)total * 1e5);
		snprintf(name, sizeof(name), "%s.%s.gw_cpu_share", prefix,
		    dir_name(d));
		result(name, "core", "%.2f", (c1 - c0) / (t1 - t0));
	}
	if (O.srv_pid > 0) {
		snprintf(name, sizeof(name), "%s.%s.server_cpu_per_100k",
		    prefix, dir_name(d));
		result(name, "s", "%.3f", (p1 - p0) / (double)total * 1e5);
	}
	snprintf(name, sizeof(name), "%s.%s.loadgen_cpu_per_100k", prefix,
	    dir_name(d));
	result(name, "s", "%.3f", (s1 - s0) / (double)total * 1e5);
	return (double)total / (t1 - t0);
}

/*
 * A warm-up batch, then O.batches measured ones of O.msgs messages, or,
 * with O.msgs 0, of as many as the warm-up's rate sends in O.batch_seconds.
 */
static void
bulk_series(const char *prefix, enum dir d)
{
	double rate = bulk_batch(prefix, d, O.warmup, 0);
	char name[128];
	long n = O.msgs;
	int b;

	if (n <= 0) {
		n = (long)(rate * O.batch_seconds / 1000.0 + 0.5) * 1000;
		if (n < 5000)
			n = 5000;
		if (n > 2000000)
			n = 2000000;
	}
	snprintf(
	    name, sizeof(name), "%s.%s.msgs_per_batch", prefix, dir_name(d));
	result(name, "msgs", "%ld", n);
	for (b = 0; b < O.batches; b++)
		bulk_batch(prefix, d, n, 1);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
pct(double p)
{
	long i = (long)(p / 100.0 * (double)(G.nlat - 1) + 0.5);

	return G.lat[i < 0 ? 0 : i >= G.nlat ? G.nlat - 1 : i];
}

/* One paced batch at O.rate for O.seconds: latency percentiles. */
static void
paced_batch(const char *prefix, enum dir d)
{
	struct itimerspec its;
	char name[128];

	set_senders(d);
	reset_counts();
	G.lat_on = 1;
	memset(&its, 0, sizeof(its));
	its.it_interval.tv_nsec = 1000000;
	its.it_value.tv_nsec = 1000000;
	if (timerfd_settime(timer_conn->fd, 0, &its, NULL) == -1)
		die("timerfd_settime: %s", strerror(errno));
	paced_end = now() + O.seconds;
	pump = paced_pump;
	must(pred_paced_done, O.seconds + 30, "the paced messages");
	pump = NULL;
	memset(&its, 0, sizeof(its));
	timerfd_settime(timer_conn->fd, 0, &its, NULL);
	G.lat_on = 0;
	if (G.nlat < 100)
		die("only %ld latency samples", G.nlat);
	qsort(G.lat, (size_t)G.nlat, sizeof(*G.lat), cmp_double);
	snprintf(name, sizeof(name), "%s.%s.p50", prefix, dir_name(d));
	result(name, "us", "%.0f", pct(50));
	snprintf(name, sizeof(name), "%s.%s.p99", prefix, dir_name(d));
	result(name, "us", "%.0f", pct(99));
	snprintf(name, sizeof(name), "%s.%s.max", prefix, dir_name(d));
	result(name, "us", "%.0f", G.lat[G.nlat - 1]);
	snprintf(
	    name, sizeof(name), "%s.%s.rate_achieved", prefix, dir_name(d));
	result(name, "msg/s", "%.0f", (double)G.nlat / O.seconds);
}

/* --- set-up shared by the modes ---------------------------------------------- */

static void
build_pairs(void)
{
	char body[256], buf[768];
	struct pair *p;
	int i, k, l;

	G.npairs = O.users * O.contacts;
	G.pairs = xmalloc((size_t)G.npairs * sizeof(*G.pairs));
	memset(G.pairs, 0, (size_t)G.npairs * sizeof(*G.pairs));
	G.online = xmalloc((size_t)O.users);
	memset(G.online, 0, (size_t)O.users);
	snprintf(body, sizeof(body), BODY_TEXT, (uint64_t)0);
	for (i = 0; i < G.npairs; i++) {
		p = &G.pairs[i];
		contact_jid(i, p->jid, sizeof(p->jid));
		user_jid(i / O.contacts, p->user_full, sizeof(p->user_full), 1);
	}
	/* Bulk chunks are built only for the small relay set-ups. */
	if (G.npairs > MAX_BULK_PAIRS)
		return;
	for (i = 0; i < G.npairs; i++) {
		p = &G.pairs[i];
		for (k = 0; k < CHUNK; k++) {
			l = snprintf(buf, sizeof(buf),
			    "<message from='%s' "
			    "to='%s' type='chat' id='b'><body>%s</body>"
			    "</message>",
			    p->user_full, p->jid, body);
			chunk_add(&p->to_contact, &p->to_contact_len,
			    p->to_contact_off, k, buf, (size_t)l);
		}
	}
}

static int
reachable_pairs(int users)
{
	int i, n = 0;

	for (i = 0; i < users * O.contacts; i++)
		if (!contact_dead(i))
			n++;
	return n;
}

static void
open_listeners(int comp, int peers)
{
	if (comp)
		conn_add(listen_tcp("::1", O.comp_port), K_COMP_LISTEN, 0);
	if (peers)
		conn_add(listen_tcp("::", O.peer_port), K_PEER_LISTEN, 0);
	timer_conn = conn_add(
	    timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC),
	    K_TIMER, 0);
}

/* The driver starts the gateway when told, then tells us its pid. */
static void
start_gateway(void)
{
	char line[128];

	printf("start-gateway\n");
	fflush(stdout);
	if (fgets(line, sizeof(line), stdin) == NULL ||
	    sscanf(line, "pid %d", &O.gw_pid) != 1)
		die("expected \"pid N\" on stdin");
}

static void
link_up(void)
{
	must(pred_comp_up, 30, "the component to connect");
	note("component link up");
}

static void
sync_gateway(double timeout)
{
	comp_sync();
	must(pred_synced, timeout, "the gateway to catch up");
}

static int
dir_wanted(const char *name)
{
	return strstr(O.dirs, name) != NULL;
}

/* --- modes ---------------------------------------------------------------------- */

/* Register users and contacts through the component, then stop. */
static void
mode_prep(void)
{
	double t0;

	open_listeners(1, 0);
	start_gateway();
	link_up();
	t0 = now();
	comp_register();
	sync_gateway(O.timeout);
	note("registered %d users with %d contacts each in %.1f s", O.users,
	    O.contacts, now() - t0);
}

/* The gateway alone: bulk throughput both ways, then paced latency. */
static void
mode_relay(void)
{
	int u, b;

	if (G.npairs > MAX_BULK_PAIRS)
		die("relay: at most %d users x contacts", MAX_BULK_PAIRS);
	open_listeners(1, 1);
	start_gateway();
	link_up();
	comp_register();
	sync_gateway(60);
	for (u = 0; u < O.users; u++)
		comp_online(u);
	conn_flush(G.comp);
	want_ups = reachable_pairs(O.users);
	must(pred_ups, 60, "the pipes to come up");
	note("%ld pipes up", G.ups);
	if (dir_wanted("to-barev"))
		bulk_series("relay", TO_BAREV);
	if (dir_wanted("to-xmpp"))
		bulk_series("relay", TO_XMPP);
	if (dir_wanted("latency")) {
		for (b = 0; b < O.batches; b++)
			paced_batch("latency", TO_BAREV);
		for (b = 0; b < O.batches; b++)
			paced_batch("latency", TO_XMPP);
	}
}

/* The bulk chunk of an XMPP client: to its targets in turn. */
static void
c2s_chunk(struct conn *c)
{
	char buf[768], body[256];
	const char *to;
	int k, l;

	snprintf(body, sizeof(body), BODY_TEXT, (uint64_t)0);
	for (k = 0; k < CHUNK; k++) {
		to = c->role == 1
		    ? c->other
		    : G.pairs[c->pair * O.contacts + k % O.contacts].jid;
		l = snprintf(buf, sizeof(buf),
		    "<message to='%s' type='chat' "
		    "id='b'><body>%s</body></message>",
		    to, body);
		chunk_add(&c->msg, &c->msglen, c->msgoff, k, buf, (size_t)l);
	}
}

/* Through a real XMPP server: client to client alone, then through the gateway. */
static void
mode_e2e(void)
{
	char local[64];
	struct conn *c;
	int u, i;

	G.c2s = xmalloc(
	    (size_t)(O.users + 2 * O.direct_pairs) * sizeof(*G.c2s));
	open_listeners(0, 1);
	for (i = 0; i < O.direct_pairs; i++) {
		snprintf(local, sizeof(local), "da%d", i);
		c = G.c2s[G.nc2s++] = c2s_new(i, 1, local);
		snprintf(
		    c->other, sizeof(c->other), "db%d@%s", i, O.xmpp_domain);
		snprintf(local, sizeof(local), "db%d", i);
		G.c2s[G.nc2s++] = c2s_new(i, 2, local);
	}
	must(pred_c2s_ready, 60, "the direct clients to log in");
	for (i = 0; i < G.nc2s; i++)
		if (G.c2s[i]->role == 1)
			c2s_chunk(G.c2s[i]);
	if (dir_wanted("direct"))
		bulk_series(O.prefix, DIRECT);
	start_gateway();
	for (u = 0; u < O.users; u++) {
		snprintf(local, sizeof(local), "eu%d", u);
		c = G.c2s[G.nc2s++] = c2s_new(u, 0, local);
	}
	must(pred_c2s_ready, 60, "the gateway users to log in");
	if (G.greg_errors > 0)
		die("%d users could not register with the gateway",
		    G.greg_errors);
	want_ups = reachable_pairs(O.users);
	must(pred_ups, 60, "the pipes to come up");
	note("%ld pipes up", G.ups);
	for (i = 0; i < G.nc2s; i++)
		if (G.c2s[i]->role == 0)
			c2s_chunk(G.c2s[i]);
	if (dir_wanted("to-barev"))
		bulk_series(O.prefix, TO_BAREV);
	if (dir_wanted("to-xmpp"))
		bulk_series(O.prefix, TO_XMPP);
}

/* Brings users [from, to) online and waits for their pipes. */
static double
bring_online(int from, int to, double timeout)
{
	double t0 = now();
	int u;

	for (u = from; u < to; u++) {
		comp_online(u);
		if (u % 50 == 49)
			conn_flush(G.comp);
	}
	conn_flush(G.comp);
	want_ups = reachable_pairs(to);
	must(pred_ups, timeout, "the pipes to come up");
	return G.last_up - t0;
}

/* Idle pipes: resident memory at each stage, or keepalive CPU. */
static void
mode_idle(void)
{
	char *stages = O.stages, *tok, *save = NULL, name[96];
	long rss0, rss;
	double c0, c1, t0, t1;
	int online = 0, target, w;

	open_listeners(1, 1);
	start_gateway();
	link_up();
	/* Link up probes every user: nobody is online yet. */
	sync_gateway(60);
	sleep_loop(1.0);
	rss0 = proc_rss(O.gw_pid);
	if (stages != NULL) {
		result("idle.rss.pipes_0", "bytes", "%ld", rss0);
		for (tok = strtok_r(stages, ",", &save); tok != NULL;
		     tok = strtok_r(NULL, ",", &save)) {
			target = atoi(tok);
			if (target > O.users)
				die("stage %d is more users than %d", target,
				    O.users);
			bring_online(online, target, O.timeout);
			online = target;
			sleep_loop(1.0);
			rss = proc_rss(O.gw_pid);
			snprintf(
			    name, sizeof(name), "idle.rss.pipes_%ld", G.ups);
			result(name, "bytes", "%ld", rss);
			snprintf(name, sizeof(name),
			    "idle.bytes_per_pipe.pipes_%ld", G.ups);
			result(name, "bytes", "%.0f",
			    (double)(rss - rss0) / (double)G.ups);
		}
		return;
	}
	/* Keepalive: everyone online, then CPU over windows. */
	bring_online(0, O.users, O.timeout);
	note("%ld pipes up; measuring keepalive", G.ups);
	sleep_loop(3.0);
	for (w = 0; w < O.ka_windows; w++) {
		long p0 = G.pings, u0 = G.ups;

		t0 = now();
		c0 = proc_cpu(O.gw_pid);
		sleep_loop(O.ka_seconds);
		t1 = now();
		c1 = proc_cpu(O.gw_pid);
		result("keepalive.pings_per_s", "ping/s", "%.0f",
		    (double)(G.pings - p0) / (t1 - t0));
		result("keepalive.cpu_share_measured", "core", "%.4f",
		    (c1 - c0) / (t1 - t0));
		/* A pipe closed for missed pings comes back as a new one. */
		result("keepalive.pipes_reopened", "pipes", "%ld", G.ups - u0);
	}
}

/* Start-up: every user comes online at once (link up, probes answered). */
static void
mode_startup(void)
{
	double t_end, best = 0;
	long sum = 0;
	int u, b, reach;

	for (u = 0; u < O.users; u++)
		G.online[u] = 1;
	open_listeners(1, 1);
	start_gateway();
	link_up();
	reach = reachable_pairs(O.users);
	want_ups = reach;
	must(pred_ups, O.timeout, "every reachable pipe to come up");
	t_end = G.last_up - G.t_link;
	/* The peak over any 1 s window of 100 ms buckets. */
	for (b = 0; b < MAX_BUCKETS; b++) {
		sum += G.buckets[b];
		if (b >= (int)(1 / BUCKET))
			sum -= G.buckets[b - (int)(1 / BUCKET)];
		if (sum > best)
			best = (double)sum;
	}
	result("startup.reachable_pipes", "pipes", "%d", reach);
	result("startup.time_all_up", "s", "%.2f", t_end);
	result("startup.peak_dials_per_s", "dial/s", "%.0f", best);
	result("startup.mean_dials_per_s", "dial/s", "%.0f",
	    (double)G.accepts / t_end);
	sleep_loop(1.0);
	result("startup.rss_end", "bytes", "%ld", proc_rss(O.gw_pid));
	result("startup.gw_cpu", "s", "%.2f", proc_cpu(O.gw_pid));
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: bench_load prep|relay|e2e|idle|startup "
	    "[options]\n  see tests/bench/README\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "users", required_argument, NULL, 'u' },
		{ "contacts", required_argument, NULL, 'c' },
		{ "comp-port", required_argument, NULL, 'P' },
		{ "peer-port", required_argument, NULL, 'B' },
		{ "c2s-port", required_argument, NULL, 'C' },
		{ "secret", required_argument, NULL, 's' },
		{ "domain", required_argument, NULL, 'd' },
		{ "msgs", required_argument, NULL, 'n' },
		{ "batches", required_argument, NULL, 'b' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "window", required_argument, NULL, 'W' },
		{ "chunk", required_argument, NULL, 'H' },
		{ "prefix", required_argument, NULL, 'X' },
		{ "rate", required_argument, NULL, 'r' },
		{ "seconds", required_argument, NULL, 'S' },
		{ "batch-seconds", required_argument, NULL, 'T' },
		{ "dead-every", required_argument, NULL, 'x' },
		{ "stages", required_argument, NULL, 'g' },
		{ "ka-windows", required_argument, NULL, 'k' },
		{ "ka-seconds", required_argument, NULL, 'K' },
		{ "timeout", required_argument, NULL, 't' },
		{ "server-pid", required_argument, NULL, 'p' },
		{ "direct-pairs", required_argument, NULL, 'D' },
		{ "dirs", required_argument, NULL, 'R' },
		{ "no-ibr", no_argument, NULL, 'I' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	if (argc < 2)
		usage();
	O.mode = argv[1];
	optind = 2;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'u':
			O.users = atoi(optarg);
			break;
		case 'c':
			O.contacts = atoi(optarg);
			break;
		case 'P':
			O.comp_port = atoi(optarg);
			break;
		case 'B':
			O.peer_port = atoi(optarg);
			break;
		case 'C':
			O.c2s_port = atoi(optarg);
			break;
		case 's':
			O.secret = optarg;
			break;
		case 'd':
			O.domain = optarg;
			break;
		case 'n':
			O.msgs = atol(optarg);
			break;
		case 'b':
			O.batches = atoi(optarg);
			break;
		case 'w':
			O.warmup = atol(optarg);
			break;
		case 'W':
			O.window = atoi(optarg);
			break;
		case 'H':
			O.chunk = atoi(optarg);
			break;
		case 'X':
			O.prefix = optarg;
			break;
		case 'r':
			O.rate = atoi(optarg);
			break;
		case 'S':
			O.seconds = atof(optarg);
			break;
		case 'T':
			O.batch_seconds = atof(optarg);
			break;
		case 'x':
			O.dead_every = atoi(optarg);
			break;
		case 'g':
			O.stages = optarg;
			break;
		case 'k':
			O.ka_windows = atoi(optarg);
			break;
		case 'K':
			O.ka_seconds = atof(optarg);
			break;
		case 't':
			O.timeout = atof(optarg);
			break;
		case 'p':
			O.srv_pid = atoi(optarg);
			break;
		case 'D':
			O.direct_pairs = atoi(optarg);
			break;
		case 'R':
			O.dirs = optarg;
			break;
		case 'I':
			O.ibr = 0;
			break;
		default:
			usage();
		}
	}
	if (O.users < 1 || O.contacts < 1 || O.users * O.contacts > 1000000 ||
	    O.window < 1 || O.chunk < 1 || O.chunk > CHUNK)
		usage();
	signal(SIGPIPE, SIG_IGN);
	if ((G.epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
		die("epoll_create1: %s", strerror(errno));
	build_pairs();
	if (strcmp(O.mode, "prep") == 0)
		mode_prep();
	else if (strcmp(O.mode, "relay") == 0)
		mode_relay();
	else if (strcmp(O.mode, "e2e") == 0)
		mode_e2e();
	else if (strcmp(O.mode, "idle") == 0)
		mode_idle();
	else if (strcmp(O.mode, "startup") == 0)
		mode_startup();
	else
		usage();
	/* Resets, so that no TIME_WAIT outlives the run on either side. */
	for (ch = 0; ch < G.nall; ch++)
		conn_kill(G.all[ch]);
	printf("done\n");
	fflush(stdout);
	return 0;
}
