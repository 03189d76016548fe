#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

#include "log.h"
#include "xmalloc.h"
#include "xstream.h"

/* Without a way to turn reparse deferral off, expat holds back the end of
 * a stanza that arrived in small pieces (configure looks for it). */
#if !defined(HAVE_XML_SETREPARSEDEFERRALENABLED) &&                            \
    (XML_MAJOR_VERSION * 100 + XML_MINOR_VERSION >= 206)
#error "expat >= 2.6 needs XML_SetReparseDeferralEnabled; rerun configure"
#endif

/*
 * Everything before the stream root is scanned by hand, because peers send
 * what expat refuses there: junk after the declaration, a second
 * declaration, a <stream:error> with an unbound prefix before the header.
 * Each element found there gets a fresh expat parser that first reads this
 * wrapper, which binds "stream" and makes the element an ordinary child.
 * A pre-header error is parsed as one element, then its parser is dropped
 * and scanning resumes; the stream root keeps its parser to the end.
 * Parser offsets below exclude the wrapper.
 */
static const char wrapper[] = "<w xmlns:stream='" XSTREAM_NS_STREAMS "'>";
#define WRAPPER_LEN (sizeof(wrapper) - 1)

/* Expat joins namespace and local name with this; it cannot occur in a
 * namespace name (expat refuses one that contains it). */
#define NS_SEP '\x1f'
#define NS_SEP_STR "\x1f"
#define NS_XML "http://www.w3.org/XML/1998/namespace"
#define NAME_STREAM XSTREAM_NS_STREAMS NS_SEP_STR "stream"
#define NAME_ERROR XSTREAM_NS_STREAMS NS_SEP_STR "error"

/* An offset into one parser's input.  Only differences are used, so it may
 * wrap around as expat's own index does on 32-bit hosts. */
typedef unsigned long xs_off;

enum phase {
	PH_PROLOG, /* scanning by hand for the next element */
	PH_ELEMENT, /* an expat parser owns the input */
	PH_DONE, /* closed, failed or stopped */
};

enum prolog_state {
	PS_TEXT, /* whitespace or junk */
	PS_LT, /* after '<' */
	PS_PI, /* after "<?", matching "xml" */
	PS_DECL, /* inside the XML declaration */
	PS_DECL_Q, /* after '?' inside it */
	PS_BANG, /* after "<!" */
	PS_BANG_DASH, /* after "<!-" */
	PS_COMMENT, /* inside a comment */
	PS_COMMENT_D1, /* after '-' inside it */
	PS_COMMENT_D2, /* after "--" inside it */
};

enum kind {
	K_UNKNOWN, /* the first element's start tag is not complete */
	K_PREHDR, /* it is a <stream:error> before the header */
	K_STREAM, /* it is the stream root */
};

struct frame {
	xmpp_stanza_t *el; /* owned by the top-level stanza */
	char *ns; /* its namespace, NULL for none */
};

struct xstream {
	xmpp_ctx_t *ctx;
	/* Borrowed, not copied: a reload reaches streams already open. */
	const struct xstream_limits *lim;
	struct xstream_cb cb;
	void *arg;
	enum phase phase;

	enum prolog_state ps;
	unsigned pi_len; /* bytes of "xml" matched after "<?" */
	size_t hdr_bytes; /* header bytes before the current parser */

	XML_Parser parser;
	int in_parse; /* inside XML_Parse(): XML_StopParser() allowed */
	enum kind kind;
	xs_off fed; /* bytes given to the parser */
	xs_off mark; /* where the unfinished top-level item begins */
	xs_off stanza_start; /* where the stanza being built begins */
	xs_off prehdr_end; /* where the pre-header error ended ... */
	int prehdr_done; /* ... so this parser is being dropped */
	unsigned depth; /* open elements; the first element is 1 */
	unsigned base; /* depth of top-level stanzas */

	xmpp_stanza_t *top; /* the stanza being built */
	struct frame *frames; /* its open elements, frames[0] is top */
	unsigned nframes, frames_cap;
	char *text; /* character data not yet in the tree */
	size_t text_len, text_cap;

	char detail[96];
};

static void fail(struct xstream *, enum xstream_error, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static const XML_Memory_Handling_Suite xs_mem = { xmalloc, xrealloc, free };

static const char *const error_names[] = {
	[XSTREAM_ERR_NOT_WELL_FORMED] = "not-well-formed",
	[XSTREAM_ERR_RESTRICTED_XML] = "restricted-xml",
	[XSTREAM_ERR_POLICY_VIOLATION] = "policy-violation",
	[XSTREAM_ERR_INVALID_NAMESPACE] = "invalid-namespace",
};

static void
must(int rc)
{
	/* libstrophe's setters fail only when its allocator does. */
	if (rc != XMPP_EOK)
		fatalx("xstream: libstrophe error %d", rc);
}

static xmpp_stanza_t *
stanza_new(struct xstream *xs)
{
	xmpp_stanza_t *s;

	if ((s = xmpp_stanza_new(xs->ctx)) == NULL)
		fatalx("xstream: out of memory");
	return s;
}

static int
live(const struct xstream *xs)
{
	return xs->phase != PH_DONE && !xs->prehdr_done;
}

/* No more events; stops expat at once if it is running. */
static void
halt(struct xstream *xs)
{
	if (xs->phase == PH_DONE)
		return;
	xs->phase = PH_DONE;
	if (xs->in_parse)
		XML_StopParser(xs->parser, XML_FALSE);
}

static void
fail(struct xstream *xs, enum xstream_error err, const char *fmt, ...)
{
	va_list ap;

	if (xs->phase == PH_DONE)
		return;
	halt(xs);
	va_start(ap, fmt);
	vsnprintf(xs->detail, sizeof(xs->detail), fmt, ap);
	va_end(ap);
	if (xs->cb.error != NULL)
		xs->cb.error(xs->arg, err, xs->detail);
}

/* Bytes of the unfinished item (header or stanza) and their limit. */
static xs_off
pending(const struct xstream *xs)
{
	if (xs->kind == K_STREAM)
		return xs->fed - xs->mark;
	return xs->hdr_bytes + xs->fed;
}

static size_t
limit(const struct xstream *xs)
{
	if (xs->kind == K_STREAM)
		return xs->lim->max_stanza_bytes;
	return xs->lim->max_header_bytes;
}

static void
over_limit(struct xstream *xs)
{
	fail(xs, XSTREAM_ERR_POLICY_VIOLATION, "%s exceeds %zu bytes",
	    xs->kind == K_STREAM ? "stanza" : "stream header", limit(xs));
}

static xs_off
event_start(const struct xstream *xs)
{
	return (xs_off)XML_GetCurrentByteIndex(xs->parser) - WRAPPER_LEN;
}

static xs_off
event_end(const struct xstream *xs)
{
	return event_start(xs) + (xs_off)XML_GetCurrentByteCount(xs->parser);
}

static const char *
local_name(const char *name)
{
	const char *sep = strchr(name, NS_SEP);

	return sep != NULL ? sep + 1 : name;
}

/* The namespace part of an expat name, allocated; NULL for none. */
static char *
name_ns(const char *name)
{
	const char *sep = strchr(name, NS_SEP);

	return sep != NULL ? xstrndup(name, (size_t)(sep - name)) : NULL;
}

/* An attribute's name in a stanza, allocated; NULL to drop it. */
static char *
attr_name(const char *name)
{
	const char *sep = strchr(name, NS_SEP);
	char *out;

	if (sep == NULL)
		return xstrdup(name);
	if ((size_t)(sep - name) != strlen(NS_XML) ||
	    strncmp(name, NS_XML, strlen(NS_XML)) != 0)
		return NULL;
	xasprintf(&out, "xml:%s", sep + 1);
	return out;
}

static void
set_attrs(xmpp_stanza_t *el, const char **attrs)
{
	char *name;
	size_t i;

	for (i = 0; attrs[i] != NULL; i += 2) {
		if ((name = attr_name(attrs[i])) == NULL)
			continue;
		must(xmpp_stanza_set_attribute(el, name, attrs[i + 1]));
		free(name);
	}
}

static int
same_ns(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
text_append(struct xstream *xs, const char *s, size_t len)
{
	size_t cap;

	if (xs->text_cap - xs->text_len < len) {
		cap = xs->text_cap != 0 ? xs->text_cap : 64;
		while (cap - xs->text_len < len)
			cap *= 2;
		xs->text = xrealloc(xs->text, cap);
		xs->text_cap = cap;
	}
	memcpy(xs->text + xs->text_len, s, len);
	xs->text_len += len;
}

/* Adjacent character data becomes one text child, added when it ends. */
static void
text_flush(struct xstream *xs, xmpp_stanza_t *el)
{
	xmpp_stanza_t *t;

	if (xs->text_len == 0)
		return;
	t = stanza_new(xs);
	must(xmpp_stanza_set_text_with_size(t, xs->text, xs->text_len));
	must(xmpp_stanza_add_child_ex(el, t, 0));
	xs->text_len = 0;
}

static void
frame_push(struct xstream *xs, xmpp_stanza_t *el, char *ns)
{
	if (xs->nframes == xs->frames_cap) {
		xs->frames_cap = xs->frames_cap != 0 ? xs->frames_cap * 2 : 8;
		xs->frames = xrealloc(
		    xs->frames, xs->frames_cap * sizeof(*xs->frames));
	}
	xs->frames[xs->nframes].el = el;
	xs->frames[xs->nframes].ns = ns;
	xs->nframes++;
}

static void
element_start(struct xstream *xs, const char *name, const char **attrs)
{
	struct frame *parent;
	xmpp_stanza_t *el;
	char *ns = name_ns(name);

	el = stanza_new(xs);
	must(xmpp_stanza_set_name(el, local_name(name)));
	set_attrs(el, attrs);
	if (xs->top == NULL) {
		if (ns != NULL)
			must(xmpp_stanza_set_ns(el, ns));
		xs->top = el;
		xs->stanza_start = event_start(xs);
		xs->mark = xs->stanza_start;
	} else {
		parent = &xs->frames[xs->nframes - 1];
		text_flush(xs, parent->el);
		if (!same_ns(ns, parent->ns))
			must(xmpp_stanza_set_ns(el, ns != NULL ? ns : ""));
		must(xmpp_stanza_add_child_ex(parent->el, el, 0));
	}
	frame_push(xs, el, ns);
}

static void
deliver_stanza(struct xstream *xs, xmpp_stanza_t *stanza, xs_off end)
{
	/* Checked here too: a stanza can start and end within the read
	 * that completed the header, which the header limit bounded. */
	if (end - xs->stanza_start > xs->lim->max_stanza_bytes) {
		over_limit(xs);
		return;
	}
	xs->mark = end;
	if (xs->cb.stanza != NULL)
		xs->cb.stanza(xs->arg, stanza);
}

static void
deliver_prehdr(struct xstream *xs, xmpp_stanza_t *error, xs_off end)
{
	xs->prehdr_end = end;
	xs->prehdr_done = 1;
	if (xs->cb.pre_header_error != NULL)
		xs->cb.pre_header_error(xs->arg, error);
	/* What follows (a declaration, the header) is the scanner's. */
	if (xs->phase != PH_DONE)
		XML_StopParser(xs->parser, XML_FALSE);
}

static void
element_end(struct xstream *xs)
{
	struct frame *f = &xs->frames[--xs->nframes];
	xmpp_stanza_t *top;

	text_flush(xs, f->el);
	free(f->ns);
	if (xs->nframes > 0)
		return;
	top = xs->top;
	xs->top = NULL;
	if (xs->kind == K_PREHDR)
		deliver_prehdr(xs, top, event_end(xs));
	else
		deliver_stanza(xs, top, event_end(xs));
	xmpp_stanza_release(top);
}

/* Entries in expat's NULL-terminated name/value array. */
static size_t
attrs_len(const char **attrs)
{
	size_t n = 0;

	while (attrs[n] != NULL)
		n += 2;
	return n;
}

static void
open_stream(struct xstream *xs, const char **attrs)
{
	const char *from = NULL, *to = NULL;
	char **out;
	size_t i, n = 0;

	xs->kind = K_STREAM;
	xs->base = 2;
	xs->mark = event_end(xs);
	out = xcalloc(attrs_len(attrs) + 1, sizeof(*out));
	for (i = 0; attrs[i] != NULL; i += 2) {
		if ((out[n] = attr_name(attrs[i])) == NULL)
			continue;
		/* Values stay expat's: they live until the handler returns. */
		out[n + 1] = (char *)attrs[i + 1];
		if (strcmp(out[n], "from") == 0)
			from = attrs[i + 1];
		else if (strcmp(out[n], "to") == 0)
			to = attrs[i + 1];
		n += 2;
	}
	if (xs->cb.open != NULL)
		xs->cb.open(xs->arg, from, to, (const char **)out);
	for (i = 0; i < n; i += 2)
		free(out[i]);
	free(out);
}

static void XMLCALL
on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	struct xstream *xs = ud;

	if (!live(xs))
		return;
	if (xs->depth >= xs->lim->max_depth) {
		fail(xs, XSTREAM_ERR_POLICY_VIOLATION,
		    "element depth exceeds %u", xs->lim->max_depth);
		return;
	}
	if (++xs->depth > 1)
		element_start(xs, name, attrs);
	else if (strcmp(name, NAME_STREAM) == 0)
		open_stream(xs, attrs);
	else if (strcmp(name, NAME_ERROR) == 0) {
		xs->kind = K_PREHDR;
		xs->base = 1;
		element_start(xs, name, attrs);
	} else
		fail(xs, XSTREAM_ERR_INVALID_NAMESPACE,
		    "first element is not {" XSTREAM_NS_STREAMS "}stream");
}

static void XMLCALL
on_end(void *ud, const XML_Char *name)
{
	struct xstream *xs = ud;

	if (!live(xs))
		return;
	/* Before the first element, only our wrapper is open: "</w>". */
	if (xs->depth == 0) {
		fail(xs, XSTREAM_ERR_NOT_WELL_FORMED, "mismatched tag");
		return;
	}
	if (xs->depth-- >= xs->base) {
		element_end(xs);
		return;
	}
	halt(xs);
	if (xs->cb.close != NULL)
		xs->cb.close(xs->arg);
}

static void XMLCALL
on_text(void *ud, const XML_Char *s, int len)
{
	struct xstream *xs = ud;

	if (!live(xs))
		return;
	/* Text between stanzas is dropped: whitespace keepalives are normal
	 * and anything else there carries no meaning a peer could rely on. */
	if (xs->top != NULL)
		text_append(xs, s, (size_t)len);
	else
		xs->mark = event_end(xs);
}

static void XMLCALL
on_comment(void *ud, const XML_Char *data)
{
	struct xstream *xs = ud;

	if (live(xs) && xs->top == NULL)
		xs->mark = event_end(xs);
}

static void XMLCALL
on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	fail(ud, XSTREAM_ERR_RESTRICTED_XML, "processing instruction");
}

static void
parser_drop(struct xstream *xs)
{
	while (xs->nframes > 0)
		free(xs->frames[--xs->nframes].ns);
	if (xs->top != NULL)
		xmpp_stanza_release(xs->top);
	xs->top = NULL;
	xs->text_len = 0;
	if (xs->parser != NULL)
		XML_ParserFree(xs->parser);
	xs->parser = NULL;
}

static void
parser_new(struct xstream *xs)
{
	static const XML_Char sep = NS_SEP;
	XML_Parser p;

	if ((p = XML_ParserCreate_MM("UTF-8", &xs_mem, &sep)) == NULL)
		fatalx("xstream: out of memory");
#ifdef HAVE_XML_SETREPARSEDEFERRALENABLED
	XML_SetReparseDeferralEnabled(p, XML_FALSE);
#endif
	XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
	XML_SetUserData(p, xs);
	if (XML_Parse(p, wrapper, (int)WRAPPER_LEN, 0) != XML_STATUS_OK)
		fatalx("xstream: expat refused the wrapper");
	/* Handlers only now, so the wrapper itself is no event. */
	XML_SetElementHandler(p, on_start, on_end);
	XML_SetCharacterDataHandler(p, on_text);
	XML_SetCommentHandler(p, on_comment);
	XML_SetProcessingInstructionHandler(p, on_pi);
	xs->parser = p;
	xs->phase = PH_ELEMENT;
	xs->kind = K_UNKNOWN;
	xs->fed = 0;
	xs->mark = 0;
	xs->depth = 0;
	xs->base = 1;
	xs->prehdr_done = 0;
}

/* The pre-header error ended inside the chunk that began at chunk_base:
 * returns how much of that chunk it used. */
static size_t
prehdr_finish(struct xstream *xs, xs_off chunk_base)
{
	size_t used = xs->prehdr_end - chunk_base;

	xs->hdr_bytes += xs->prehdr_end;
	parser_drop(xs);
	if (xs->phase != PH_DONE) {
		xs->phase = PH_PROLOG;
		xs->ps = PS_TEXT;
	}
	return used;
}

/* Parse what the limits allow of buf; returns the bytes used. */
static size_t
parse_some(struct xstream *xs, const char *buf, size_t len)
{
	xs_off chunk_base = xs->fed, used = pending(xs);
	size_t room, n;
	enum XML_Status rc;

	/* Never hand expat more than it may hold of one item. */
	room = used < limit(xs) ? limit(xs) - used : 0;
	if (room == 0) {
		over_limit(xs);
		return 0;
	}
	n = len < room ? len : room;
	if (n > INT_MAX)
		n = INT_MAX;
	xs->fed += n;
	xs->in_parse = 1;
	rc = XML_Parse(xs->parser, buf, (int)n, 0);
	xs->in_parse = 0;
	if (xs->prehdr_done)
		return prehdr_finish(xs, chunk_base);
	if (rc != XML_STATUS_OK)
		fail(xs, XSTREAM_ERR_NOT_WELL_FORMED, "%s",
		    XML_ErrorString(XML_GetErrorCode(xs->parser)));
	else if (pending(xs) > limit(xs))
		over_limit(xs);
	return n;
}

static int
is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void
prolog_step(struct xstream *xs, int c)
{
	switch (xs->ps) {
	case PS_TEXT:
		/* Anything but markup is tolerated: the spec's own example
		 * has a stray '}' after the declaration. */
		if (c == '<')
			xs->ps = PS_LT;
		break;
	case PS_LT:
		xs->pi_len = 0;
		xs->ps = c == '?' ? PS_PI : PS_BANG;
		break;
	case PS_PI:
		if (xs->pi_len < 3 && c == "xml"[xs->pi_len])
			xs->pi_len++;
		else if (xs->pi_len == 3 && (c == '?' || is_space(c)))
			xs->ps = c == '?' ? PS_DECL_Q : PS_DECL;
		else
			fail(xs, XSTREAM_ERR_RESTRICTED_XML,
			    "processing instruction");
		break;
	case PS_DECL:
		if (c == '?')
			xs->ps = PS_DECL_Q;
		break;
	case PS_DECL_Q:
		if (c == '>')
			xs->ps = PS_TEXT;
		else if (c != '?')
			xs->ps = PS_DECL;
		break;
	case PS_BANG:
		if (c == '-')
			xs->ps = PS_BANG_DASH;
		else
			fail(xs, XSTREAM_ERR_RESTRICTED_XML,
			    "DTD or markup declaration");
		break;
	case PS_BANG_DASH:
		if (c == '-')
			xs->ps = PS_COMMENT;
		else
			fail(xs, XSTREAM_ERR_NOT_WELL_FORMED, "bad comment");
		break;
	case PS_COMMENT:
		if (c == '-')
			xs->ps = PS_COMMENT_D1;
		break;
	case PS_COMMENT_D1:
		xs->ps = c == '-' ? PS_COMMENT_D2 : PS_COMMENT;
		break;
	case PS_COMMENT_D2:
		if (c == '>')
			xs->ps = PS_TEXT;
		else if (c != '-')
			xs->ps = PS_COMMENT;
		break;
	}
}

/* Scan up to the next element; returns the bytes consumed. */
static size_t
prolog_scan(struct xstream *xs, const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len && xs->phase == PH_PROLOG; i++) {
		if (xs->ps == PS_LT && buf[i] != '?' && buf[i] != '!') {
			/* An element (or garbage expat will name): its '<'
			 * was counted here but belongs to the parser. */
			xs->hdr_bytes--;
			parser_new(xs);
			parse_some(xs, "<", 1);
			return i;
		}
		if (xs->hdr_bytes == xs->lim->max_header_bytes) {
			over_limit(xs);
			break;
		}
		xs->hdr_bytes++;
		prolog_step(xs, (unsigned char)buf[i]);
	}
	return i;
}

struct xstream *
xstream_new(xmpp_ctx_t *ctx, const struct xstream_limits *limits,
    const struct xstream_cb *cb, void *arg)
{
	struct xstream *xs = xcalloc(1, sizeof(*xs));

	xs->ctx = ctx;
	xs->lim = limits;
	xs->cb = *cb;
	xs->arg = arg;
	xs->phase = PH_PROLOG;
	xs->ps = PS_TEXT;
	return xs;
}

int
xstream_feed(struct xstream *xs, const char *buf, size_t len)
{
	size_t n;

	while (len > 0 && xs->phase != PH_DONE) {
		if (xs->phase == PH_PROLOG)
			n = prolog_scan(xs, buf, len);
		else
			n = parse_some(xs, buf, len);
		buf += n;
		len -= n;
	}
	return xs->phase == PH_DONE ? -1 : 0;
}

void
xstream_stop(struct xstream *xs)
{
	halt(xs);
}

size_t
xstream_pending(const struct xstream *xs)
{
	if (xs->phase == PH_DONE)
		return 0;
	if (xs->phase == PH_PROLOG)
		return xs->hdr_bytes;
	return pending(xs);
}

void
xstream_free(struct xstream *xs)
{
	if (xs == NULL)
		return;
	parser_drop(xs);
	free(xs->frames);
	free(xs->text);
	free(xs);
}

const char *
xstream_error_name(enum xstream_error err)
{
	if ((unsigned)err >= sizeof(error_names) / sizeof(error_names[0]))
		return "undefined-condition";
	return error_names[err];
}
