/* Small helpers over libstrophe stanzas that every sender needs. */
#ifndef BG_STANZA_H
#define BG_STANZA_H

#include <strophe.h>

#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* The first child that is an element, or NULL. */
xmpp_stanza_t *stanza_first_tag(xmpp_stanza_t *parent);
/* A copy (free it) of the text of the child name (ns may be NULL), or NULL. */
char *
stanza_child_text(xmpp_stanza_t *parent, const char *name, const char *ns);
/* The first child with this name and namespace, or NULL. */
xmpp_stanza_t *
stanza_child(xmpp_stanza_t *parent, const char *name, const char *ns);
/*
 * A new stanza of the same name answering s: from and to swapped, id
 * kept, and never libstrophe's bare `lang`. Caller releases.
 */
xmpp_stanza_t *stanza_reply(xmpp_stanza_t *s, const char *type);
/*
 * An RFC 6120 error reply to s with the given type ("cancel", "modify",
 * "auth", "wait") and condition; text may be NULL. Caller releases.
 */
xmpp_stanza_t *stanza_error_reply(xmpp_stanza_t *s, const char *type,
    const char *condition, const char *text);
/* Appends <name xmlns=ns/> to parent and returns it (borrowed). */
xmpp_stanza_t *
stanza_add_child(xmpp_stanza_t *parent, const char *name, const char *ns);
/* Appends a text node to parent. */
void stanza_add_text(xmpp_stanza_t *parent, const char *text);
/* Appends <name>text</name> to parent. */
void stanza_add_text_child(
    xmpp_stanza_t *parent, const char *name, const char *text);

#endif
