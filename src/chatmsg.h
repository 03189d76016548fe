/* The text of a Barev chat message, built as the reference client renders it (pure). */
#ifndef BG_CHATMSG_H
#define BG_CHATMSG_H

#include <stddef.h>

/*
 * A copy (free it) of s without what XML cannot carry or the reference
 * client's parser chokes on: control characters other than tab, LF and
 * CR, DEL, U+FFFE and U+FFFF. One bad byte would deafen the whole pipe.
 */
char *chatmsg_clean(const char *s);

/*
 * The children of a chat message carrying body (clean text): <body> and
 * an XHTML-IM part. xhtml is a serialized, clean <html/> element to use
 * as it is, or NULL to make one from the text: the reference client
 * renders the body as HTML, so <, > and & must arrive escaped to show as
 * typed, and lines become <br/>. Returns a string to free, *len its length.
 */
char *chatmsg_inner(const char *body, const char *xhtml, size_t *len);

#endif
