/* Streaming XMPP parser: bytes in, stream open/stanza/close events out. */
#ifndef BG_XSTREAM_H
#define BG_XSTREAM_H

#include <stddef.h>
#include <strophe.h>

#define XSTREAM_NS_STREAMS "http://etherx.jabber.org/streams"

/*
 * Bounds on what one peer can make us hold.  All must be non-zero; a limit
 * is inclusive (a stanza of exactly max_stanza_bytes is accepted).
 */
struct xstream_limits {
	/* One top-level stanza, from its '<' to the '>' of its end tag. */
	size_t max_stanza_bytes;
	/* Element depth; the stream root (or a pre-header error) is 1. */
	unsigned max_depth;
	/* Bytes up to the '>' of the stream root's start tag: declarations,
	 * junk, comments, pre-header errors and the tag itself. */
	size_t max_header_bytes;
};

enum xstream_error {
	XSTREAM_ERR_NOT_WELL_FORMED, /* expat's error, or a bad comment */
	XSTREAM_ERR_RESTRICTED_XML, /* DTD, entity declaration, PI */
	XSTREAM_ERR_POLICY_VIOLATION, /* a limit was exceeded */
	XSTREAM_ERR_INVALID_NAMESPACE, /* first element is no stream header */
};

/*
 * What peers send is taken liberally.  Before the stream root: any number
 * of XML declarations, comments, and bytes that are not markup (the spec's
 * stray "}") are skipped, and <stream:error> elements are reported.  The
 * root may use any prefix for the streams namespace, and "stream" is bound
 * even if the peer forgot to declare it.  Between stanzas, text (whitespace
 * keepalives or anything else) is ignored.  Refused: DTDs, entity
 * declarations and processing instructions other than the declaration.
 */

/*
 * Event callbacks; any may be NULL.  They run inside xstream_feed() and must
 * not call xstream_feed() or xstream_free() on the same stream; to end
 * parsing from a callback, call xstream_stop().  Stanzas are BORROWED: valid
 * only during the call, keep one with xmpp_stanza_clone().
 *
 * Stanza representation: element names are local names; the top-level
 * stanza carries "xmlns" = its namespace (if it has one), a descendant
 * carries "xmlns" only where its namespace differs from its parent's ("" if
 * it has none while the parent has one).  Adjacent character data (text,
 * entity references, CDATA) is merged into one text child.  Attributes keep
 * their local name; xml:* attributes are named "xml:lang" etc.; attributes
 * in any other namespace are dropped (an "a:from" must not replace "from").
 * Comments are dropped.
 */
struct xstream_cb {
	/* The stream root opened.  attrs: NULL-terminated name/value pairs,
	 * named as stanza attributes are.  from/to are NULL when absent. */
	void (*open)(
	    void *arg, const char *from, const char *to, const char **attrs);
	/* One complete top-level element inside the stream, including a
	 * <stream:error> (name "error", xmlns XSTREAM_NS_STREAMS). */
	void (*stanza)(void *arg, xmpp_stanza_t *stanza);
	/* A <stream:error> the peer sent before its stream header (its
	 * "stream:" prefix may be unbound); parsing continues after it. */
	void (*pre_header_error)(void *arg, xmpp_stanza_t *error);
	/* The peer sent </stream:stream>.  Bytes after it are ignored. */
	void (*close)(void *arg);
	/* Fatal parse error, reported once; detail is a short fixed text
	 * that never quotes the peer.  No callbacks follow. */
	void (*error)(void *arg, enum xstream_error err, const char *detail);
};

struct xstream;

/*
 * A parser for one incoming stream; cb is copied, limits is borrowed for
 * the parser's life (so that new limits apply to streams already open).
 */
struct xstream *
xstream_new(xmpp_ctx_t *ctx, const struct xstream_limits *limits,
    const struct xstream_cb *cb, void *arg);

/*
 * Parse bytes as they arrive, split anywhere.  Returns 0 while the stream
 * wants more input, -1 once it has ended: closed by the peer, failed (the
 * error callback ran), or stopped; later calls make no callbacks.
 */
int xstream_feed(struct xstream *xs, const char *buf, size_t len);

/* End parsing now (callable from a callback): no further callbacks. */
void xstream_stop(struct xstream *xs);

/* Bytes received but not yet delivered as an event: the unfinished stanza,
 * or the header so far.  At most the matching limit while the stream is
 * open; 0 once it has ended. */
size_t xstream_pending(const struct xstream *xs);

/* xstream_free(NULL) is a no-op. */
void xstream_free(struct xstream *xs);

/* The RFC 6120 stream error condition for err, e.g. "not-well-formed". */
const char *xstream_error_name(enum xstream_error err);

#endif
