/* Fuzz target: any bytes as a Barev stream, fed in pieces it chooses. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include <strophe.h>

#include "log.h"
#include "xstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small enough to hit often; a header budget above the stanza one lets a
 * too-big stanza arrive in the read that completes the header. */
static const struct xstream_limits limits = {
	.max_stanza_bytes = 512,
	.max_depth = 8,
	.max_header_bytes = 768,
};

struct run {
	xmpp_ctx_t *ctx;
	struct xstream *xs;
	unsigned events;
	unsigned stop_at; /* xstream_stop() inside this event, 0 never */
	int opened;
	int ended; /* close, error or stop seen */
};

/* Every callback checks the contract: nothing after the end. */
static void
event(struct run *r)
{
	if (r->ended)
		abort();
	if (++r->events == r->stop_at) {
		xstream_stop(r->xs);
		r->ended = 1;
	}
}

/* Use the tree as a consumer would: render it and keep a copy. */
static void
use(struct run *r, xmpp_stanza_t *stanza)
{
	xmpp_stanza_t *copy;
	size_t len;
	char *buf;

	if (xmpp_stanza_get_name(stanza) == NULL)
		abort();
	if (xmpp_stanza_to_text(stanza, &buf, &len) == XMPP_EOK)
		xmpp_free(r->ctx, buf);
	copy = xmpp_stanza_copy(stanza);
	xmpp_stanza_release(copy);
}

static void
on_open(void *arg, const char *from, const char *to, const char **attrs)
{
	struct run *r = arg;
	size_t i;

	if (r->opened)
		abort();
	r->opened = 1;
	for (i = 0; attrs[i] != NULL; i += 2)
		if (attrs[i + 1] == NULL)
			abort();
	event(r);
}

static void
on_stanza(void *arg, xmpp_stanza_t *stanza)
{
	struct run *r = arg;

	if (!r->opened)
		abort();
	use(r, stanza);
	event(r);
}

static void
on_prehdr(void *arg, xmpp_stanza_t *error)
{
	struct run *r = arg;

	if (r->opened)
		abort();
	use(r, error);
	event(r);
}

static void
on_close(void *arg)
{
	struct run *r = arg;

	if (!r->opened)
		abort();
	event(r);
	r->ended = 1;
}

static void
on_error(void *arg, enum xstream_error err, const char *detail)
{
	struct run *r = arg;

	if (detail == NULL || xstream_error_name(err) == NULL)
		abort();
	event(r);
	r->ended = 1;
}

static const struct xstream_cb cb = {
	.open = on_open,
	.stanza = on_stanza,
	.pre_header_error = on_prehdr,
	.close = on_close,
	.error = on_error,
};

/*
 * The first byte steers (and is fed too, so plain transcripts work as
 * seeds): its low 4 bits bound the piece sizes (15 = all at once), the
 * piece sizes come from the bytes at each piece's start, and a first
 * byte of 0xc0 or more stops the stream inside event (byte & 7) + 1.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static xmpp_ctx_t *ctx;
	const char *in = (const char *)data;
	struct run r = { 0 };
	size_t at = 0, n, modulus;
	int rc;

	if (ctx == NULL) {
		log_set_level(LOG_LEVEL_ERROR);
		if ((ctx = xmpp_ctx_new(NULL, NULL)) == NULL)
			abort();
	}
	if (size == 0)
		return 0;
	modulus = (data[0] & 0x0f) + 1;
	r.stop_at = data[0] >= 0xc0 ? (data[0] & 7) + 1 : 0;
	r.ctx = ctx;
	r.xs = xstream_new(ctx, &limits, &cb, &r);
	while (at < size) {
		n = modulus == 16 ? size - at : 1 + data[at] % modulus;
		if (n > size - at)
			n = size - at;
		rc = xstream_feed(r.xs, in + at, n);
		if ((rc == -1) != r.ended)
			abort();
		/* Held back: never more than the larger limit. */
		if (rc == 0 && xstream_pending(r.xs) > limits.max_header_bytes)
			abort();
		at += n;
	}
	xstream_free(r.xs);
	return 0;
}
