/* The text of a Barev chat message, built as the reference client renders it (pure). */
#ifndef BG_CHATMSG_H
#define BG_CHATMSG_H

#include <stddef.h>
#include <strophe.h>

/*
 * A copy (free it) of s without what XML cannot carry or the reference
 * client's parser chokes on: control characters other than tab, LF and
 * CR, DEL, U+FFFE and U+FFFF. One bad byte would deafen the whole pipe.
 */
char *chatmsg_clean(const char *s);

/*
 * The children of a chat message carrying body (clean text): <body> and
 * an XHTML-IM part. xhtml is a serialized, clean <html/> element from
 * chatmsg_xhtml() to use as it is, or NULL to make one from the text.
 * The reference client renders the plain body as HTML; it reads the
 * XHTML part instead only if that part's <body> has a <font> child, whose
 * content it re-escapes: escaped text inside <font> shows as typed, and
 * lines become <br/>. Returns a string to free, *len its length.
 */
char *chatmsg_inner(const char *body, const char *xhtml, size_t *len);

/*
 * An XMPP user's XHTML-IM part (html, borrowed) in the form the reference
 * client reads: the children of its first XHTML <body> inside one <font>.
 * A string to free, or NULL if html has no such body.
 */
char *chatmsg_xhtml(xmpp_ctx_t *ctx, xmpp_stanza_t *html);

/*
 * A peer's XHTML part (html, borrowed; in the XHTML-IM namespace or, as
 * the plugin sends it, the XHTML one) reduced to what cannot reach
 * outside the message: a few text-level elements (b and i become strong
 * and em), a style attribute with colours, weights and decorations only,
 * no links, images, scripts or other attributes; other elements give
 * their text. A new <html/> in the XHTML-IM namespace to release, or NULL
 * if there is nothing left.
 */
xmpp_stanza_t *chatmsg_safe_xhtml(xmpp_ctx_t *ctx, xmpp_stanza_t *html);

#endif
