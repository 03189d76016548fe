/* JIDs: Barev nick@ipv6, XEP-0106 escaping, Barev <-> gateway JID mapping (pure). */
#ifndef BG_JID_H
#define BG_JID_H

#include <netinet/in.h>
#include <stddef.h>

#include "addr.h"

/*
 * A Barev JID is "nick@ipv6". The nick is 1..BAREV_NICK_MAX bytes of valid
 * UTF-8 without whitespace, control characters, U+FFFE/U+FFFF (XML cannot
 * carry them) or any of  " & ' / : < > @ \ %  and keeps its case.
 */
#define BAREV_NICK_MAX 64
/* "nick@" plus the canonical address plus the NUL. */
#define BAREV_JID_STRLEN (BAREV_NICK_MAX + 1 + ADDR_STRLEN)

/* Parse flag: accept any IPv6 address, not only 200::/7 (for tests). */
#define BAREV_ANY_ADDR 0x1

struct barev_jid {
	char nick[BAREV_NICK_MAX + 1]; /* NUL-padded */
	struct in6_addr addr;
};

/* Check a nick of len bytes (need not be NUL-terminated). 0 or -1 + cause. */
int barev_nick_check(const char *nick, size_t len, const char **cause);
/*
 * Parse "nick@ipv6"; the address may be in any textual form (long form,
 * upper case, [brackets]). out is zero-filled first, so two parses of the
 * same JID compare equal with memcmp. 0 or -1 + cause.
 */
int barev_jid_parse(
    const char *s, int flags, struct barev_jid *out, const char **cause);
/* "nick@addr", address in RFC 5952 form, into buf (BAREV_JID_STRLEN); returns buf. */
const char *barev_jid_format(const struct barev_jid *j, char *buf);
/* Same address bytes and byte-identical nick. */
int barev_jid_equal(const struct barev_jid *a, const struct barev_jid *b);
/* Same address bytes, nicks equal ignoring ASCII case (the Pascal library's test). */
int
barev_jid_equal_nocase(const struct barev_jid *a, const struct barev_jid *b);

/* Limits of RFC 7622: each part of a JID at most JID_PART_MAX bytes. */
#define JID_PART_MAX 1023
#define JID_MAX (3 * JID_PART_MAX + 2)

/*
 * XEP-0106 escaping of a localpart: space " & ' / : < > @ become \20 \22 \26
 * \27 \2f \3a \3c \3e \40, and a backslash becomes \5c only where it starts
 * a sequence that unescaping would otherwise decode. Unescaping decodes only
 * those ten lower-case sequences and leaves anything else as it is, so
 * jid_unescape(escaped) gives back exactly what jid_escape was given.
 *
 * JID_ESC_UPPER extends both tables with \41..\5a for the ASCII letters A..Z.
 * The escaped text then holds no ASCII upper case at all (the hex digits are
 * digits or a lower-case "a"), so it survives the case folding XMPP servers
 * apply to localparts (nodeprep, PRECIS UsernameCaseMapped) and a nick's case
 * comes back exactly. Non-ASCII letters are kept as UTF-8: a server that
 * folds them changes the text, and their case cannot be recovered from the
 * JID alone.
 */
#define JID_ESC_UPPER 0x1

/*
 * Escape s into *out (free it). -1 + cause if s begins or ends with a space
 * (XEP-0106 forbids a leading or trailing \20) or if the result would be
 * longer than JID_PART_MAX.
 */
int jid_escape(const char *s, int flags, char **out, const char **cause);
/* Unescaped copy of s (free it); never fails. */
char *jid_unescape(const char *s, int flags);

/*
 * Gateway JIDs. A Barev contact nick@addr is seen by XMPP users as the JID
 * jid_escape("nick@addr", JID_ESC_UPPER)@domain, the address in RFC 5952
 * form, e.g. Inky@201:af82::1 -> \49nky\40201\3aaf82\3a\3a1@barev.example.org.
 */
/* The gateway JID of a Barev contact (free it). */
char *gateway_jid_from_barev(const struct barev_jid *b, const char *domain);
/*
 * The Barev contact behind a JID on the gateway domain (bare, or full with a
 * resource that is ignored). The localpart may be the escaped form, the same
 * after a server folded its case, or the typeable form "nick%201-af82--1"
 * (the last '%' separates nick and address, '-' stands for ':'); in the
 * typeable form the nick is taken as it arrives, so after case folding it
 * is lower case. The domain is compared ignoring ASCII case. 0 or -1 + cause.
 */
int gateway_jid_to_barev(const char *jid, const char *domain, int flags,
    struct barev_jid *out, const char **cause);

/* The parts of "[local@]domain[/resource]", pointing into the split string. */
struct jid_parts {
	const char *local; /* NULL if there is no '@' */
	size_t local_len;
	const char *domain;
	size_t domain_len;
	const char *resource; /* NULL if there is no '/' */
	size_t resource_len;
};

/*
 * Split as RFC 7622 does: the resource from the first '/', the localpart up
 * to the first '@' before it. No part present may be empty or longer than
 * JID_PART_MAX; no other check is made. 0 or -1 + cause.
 */
int jid_split(const char *jid, struct jid_parts *out, const char **cause);
/* Whether the domain of p is domain, ignoring ASCII case. */
int jid_on_domain(const struct jid_parts *p, const char *domain);
/* "local@domain" or "domain" of a JID into *out (free it). 0 or -1 + cause. */
int jid_bare(const char *jid, char **out, const char **cause);
/* The domain of a JID into *out (free it). 0 or -1 + cause. */
int jid_domain(const char *jid, char **out, const char **cause);

#endif
