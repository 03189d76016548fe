"""A private Barev network for tests: a network namespace whose lo carries
"Yggdrasil" addresses (200::/7), raw peers that speak Barev byte by byte the
way the reference Pidgin plugin does, and barev_driver (the engine under a
fake upper layer, driven over its stdin/stdout).

Standard library only. main(tests) runs a test script inside its own
namespace: the outer process creates the namespace, re-executes the script
inside it (`ip netns exec NS python3 SCRIPT`), then kills whatever is left in
the namespace by PID and deletes it, on every exit path. Without root or
`ip`, every test is reported `not ok` with the reason.

Environment (besides harness.py's TEST_TOTAL_TIMEOUT, TEST_KEEP,
TEST_WRAPPER, TEST_TIMES): BAREV_DRIVER (the driver binary; default
$TEST_BUILDDIR/tests/barev_driver), TEST_ONLY (a regex: run only the tests
whose name matches).
"""

import os
import re
import resource
import select
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape as xml_text

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# --- addresses in the namespace ---------------------------------------------

GW = "200:aaaa::1"       # the gateway's identities live here
GW2 = "200:aaaa::2"      # a second gateway (driver) for gateway-to-gateway
NON_YGG = "fd00::5"      # outside 200::/7


def peer_addr(i):
    """Address of raw peer number i (1..32)."""
    return "201:bbbb::%x" % i


def mass_addr(i):
    """Address number i (1..50) for the many-pipes test."""
    return "201:cccc::%x" % i


ADDRESSES = ([GW, GW2, NON_YGG] + [peer_addr(i) for i in range(1, 33)]
             + [mass_addr(i) for i in range(1, 51)])

# A whole routed /64, as every Yggdrasil node owns one (300::/8), made
# local by an "AnyIP" route: a hostile node connects from any of its 2^64
# addresses, and so can a test, with IPV6_FREEBIND, without adding them.
FLOOD_SUBNET = "301:dddd:0:1::/64"
IPV6_FREEBIND = 78


def flood_addr(i):
    """Address number i (0..2^32-1) of FLOOD_SUBNET, in RFC 5952 form."""
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(
        socket.AF_INET6, "301:dddd:0:1:1:0:%x:%x" % (i >> 16, i & 0xffff)))


class Flood:
    """n connections, number i from src_of(i), each sending header_of(i)
    and then nothing, as a hostile node does (connections the gateway
    refused at accept are among socks). Close it to end them."""

    def __init__(self, n, dst, dst_port, header_of, src_of=flood_addr,
                 timeout=20.0):
        self.socks = []
        deadline = time.monotonic() + timeout
        try:
            for i in range(n):
                if time.monotonic() > deadline:
                    raise AssertionError("flood: %d of %d connections in "
                                         "%.0fs" % (i, n, timeout))
                sk = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                self.socks.append(sk)
                sk.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                sk.bind((src_of(i), 0))
                sk.settimeout(3.0)
                try:
                    sk.connect((dst, dst_port))
                    sk.sendall(header_of(i))
                except OSError:
                    pass    # refused at accept: closed without a byte
        except BaseException:
            self.close()
            raise

    def close(self):
        for sk in self.socks:
            sk.close()

    kill_now = close

ENV_NS = "BAREVNET_NS"

_next_port = [20000]


def port():
    """A fresh TCP port: the namespace is ours, so counting is enough, and
    never reusing one avoids TIME_WAIT surprises between tests."""
    _next_port[0] += 1
    return _next_port[0]


# --- namespaces and XML names -----------------------------------------------

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PING = "urn:xmpp:ping"
NS_YGGB_PING = "urn:yggb:ping"

STREAM_END = b"</stream:stream>"


def header(frm, to):
    """The exact stream header the reference plugin sends (both roles)."""
    return ('<?xml version="1.0" encoding="UTF-8" ?>\n'
            '<stream:stream xmlns="jabber:client" '
            'xmlns:stream="http://etherx.jabber.org/streams" '
            'from="%s" to="%s">' % (frm, to)).encode()


def addr_of(jid):
    return jid.split("@", 1)[1]


def q(ns, name):
    return "{%s}%s" % (ns, name)


def name_of(el):
    return el.tag.split("}")[-1]


def ns_of(el):
    return el.tag[1:].split("}")[0] if el.tag.startswith("{") else ""


def show(el):
    if isinstance(el, ET.Element):
        return ET.tostring(el, encoding="unicode")
    return repr(el)


def is_stream_error(el):
    return el.tag == q(NS_STREAMS, "error")


def stream_error_condition(el):
    for c in el:
        if ns_of(c) == NS_STREAM_ERR and name_of(c) != "text":
            return name_of(c)
    return None


def stanza_error_condition(el):
    """(type, condition) of a stanza's <error/>, or None."""
    err = el.find(q(NS_CLIENT, "error"))
    if err is None:
        return None
    for c in err:
        if ns_of(c) == NS_STANZA_ERR and name_of(c) != "text":
            return err.get("type"), name_of(c)
    return err.get("type"), None


def ping_ns(el):
    """The ping namespace if el is a ping request, else None."""
    if name_of(el) != "iq" or el.get("type") != "get":
        return None
    for c in el:
        if c.tag in (q(NS_PING, "ping"), q(NS_YGGB_PING, "ping")):
            return ns_of(c)
    return None


def pong(el, frm, to):
    return ('<iq type="result" id="%s" from="%s" to="%s"/>'
            % (el.get("id", ""), frm, to)).encode()


def is_message(el, body=None):
    if el.tag != q(NS_CLIENT, "message"):
        return False
    if body is None:
        return True
    b = el.find(q(NS_CLIENT, "body"))
    return b is not None and b.text == body


# --- parsing what a peer receives -------------------------------------------

HEADER_RE = re.compile(rb"<stream:stream\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>")
ATTR_RE = re.compile(rb"([\w:.-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
WRAP_OPEN = (b'<w xmlns="jabber:client" '
             b'xmlns:stream="http://etherx.jabber.org/streams">')


def _wait_fd(sock, events, timeout):
    """Whether sock became ready for events within timeout seconds (poll:
    the many-pipes test has descriptors beyond select()'s 1024)."""
    p = select.poll()
    p.register(sock, events)
    return bool(p.poll(max(0, timeout) * 1000))


def _truthy(v):
    """A wait's condition holds: an element counts even without children
    (ElementTree elements are false when they have none)."""
    return v is not None and v is not False


def scan_element(buf, i):
    """End offset of the complete element starting at buf[i] ('<'), or None
    while it is incomplete. Comments, CDATA, PIs and quoted '>' are skipped."""
    depth, j, n = 0, i, len(buf)
    while True:
        if j >= n:
            return None
        if buf[j] != 0x3c:
            j = buf.find(b"<", j)
            if j < 0:
                return None
            continue
        for opener, closer in ((b"<!--", b"-->"), (b"<![CDATA[", b"]]>"),
                               (b"<?", b"?>")):
            if buf.startswith(opener, j):
                k = buf.find(closer, j)
                if k < 0:
                    return None
                j = k + len(closer)
                break
        else:
            k, quote = j + 1, None
            while k < n:
                c = buf[k]
                if quote is not None:
                    if c == quote:
                        quote = None
                elif c in (0x22, 0x27):
                    quote = c
                elif c == 0x3e:
                    break
                k += 1
            else:
                return None
            if buf[j + 1] == 0x2f:
                depth -= 1
            elif buf[k - 1] != 0x2f:
                depth += 1
            j = k + 1
            if depth <= 0:
                return j


def parse_element(chunk):
    """The element in chunk, with the stream's namespaces in scope; a
    {barevnet}unparsable element carrying the bytes if it is not XML."""
    try:
        return list(ET.fromstring(WRAP_OPEN + chunk + b"</w>"))[0]
    except (ET.ParseError, IndexError):
        el = ET.Element("{barevnet}unparsable")
        el.text = chunk.decode("utf-8", "replace")
        return el


class Conn:
    """One TCP connection seen from a raw peer. Everything received is kept
    in raw; a lenient parser splits it into the stream header (attrs), the
    top-level elements (items) and the stream end. Not thread-safe: either
    the test drives it (wait_* methods) or a RefPeer's thread does."""

    def __init__(self, sock, label):
        self.sock = sock
        sock.setblocking(False)
        self.label = label
        self.raw = bytearray()
        self.pos = 0
        self.header_attrs = None
        self.header_end = None        # offset in raw just after the header
        self.items = []               # ET.Element, in order
        self.taken = set()            # indices of items a wait_for consumed
        self.stream_end = False
        self.eof = False              # EOF or reset seen
        self.reset = False
        self.eof_at = None
        self.closed = False
        self.first_byte_at = None
        self.opened_at = time.monotonic()
        self.last_rx_at = self.opened_at   # when bytes last arrived
        self.remote_addr = None
        self.local_addr = None
        try:
            self.remote_addr = sock.getpeername()[0]
            self.local_addr = sock.getsockname()[0]
        except (OSError, IndexError):
            pass

    def fileno(self):
        return self.sock.fileno()

    def __repr__(self):
        return "<Conn %s>" % self.label

    # --- I/O ---

    def send(self, data, timeout=5.0):
        if isinstance(data, str):
            data = data.encode()
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except (BlockingIOError, InterruptedError):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: could not send %d bytes within "
                                         "%.1fs" % (self.label, len(view),
                                                    timeout))
                _wait_fd(self.sock, select.POLLOUT, min(left, 0.1))

    def pump(self):
        """Read what is available (never blocks). True if anything changed."""
        if self.closed or self.eof:
            return False
        changed = False
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except (ConnectionResetError, BrokenPipeError):
                self.eof = self.reset = True
                self.eof_at = time.monotonic()
                changed = True
                break
            if not data:
                self.eof, self.eof_at = True, time.monotonic()
                changed = True
                break
            if self.first_byte_at is None:
                self.first_byte_at = time.monotonic()
            self.last_rx_at = time.monotonic()
            self.raw += data
            changed = True
        if changed:
            self._parse()
        return changed

    def _parse(self):
        raw = self.raw
        if self.header_attrs is None:
            m = HEADER_RE.search(raw)
            if m is None:
                return
            self.header_attrs = {}
            for am in ATTR_RE.finditer(m.group(1)):
                v = am.group(2) if am.group(2) is not None else am.group(3)
                self.header_attrs[am.group(1).decode()] = v.decode()
            self.pos = self.header_end = m.end()
        while not self.stream_end:
            i = raw.find(b"<", self.pos)
            if i < 0:
                return
            if raw.startswith(b"</", i):
                k = raw.find(b">", i)
                if k < 0:
                    return
                self.stream_end = True  # the only end tag at this level
                self.pos = k + 1
                return
            end = scan_element(raw, i)
            if end is None:
                return
            self.items.append(parse_element(bytes(raw[i:end])))
            self.pos = end

    def wait(self, pred, timeout, what):
        """Read until pred() is true; AssertionError naming what otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if _truthy(v):
                return v
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                if self.eof and left > 0:
                    why = "the connection was closed%s" % (
                        " (reset)" if self.reset else "")
                else:
                    why = "nothing within %.1fs" % timeout
                raise AssertionError("%s: waiting for %s: %s; received: %s"
                                     % (self.label, what, why, self.dump()))
            if self.closed:
                raise AssertionError("%s: waiting for %s on a closed socket"
                                     % (self.label, what))
            _wait_fd(self.sock, select.POLLIN, min(left, 0.2))
            self.pump()

    def dump(self, limit=1500):
        data = bytes(self.raw)
        if len(data) > limit:
            data = data[:limit // 2] + b" ... " + data[-limit // 2:]
        return repr(data) if data else "(no bytes)"

    # --- what the tests wait for ---

    def wait_header(self, timeout=3.0):
        return self.wait(lambda: self.header_attrs, timeout, "a stream header")

    def untaken(self):
        return [(i, el) for i, el in enumerate(self.items)
                if i not in self.taken]

    def find(self, match):
        for i, el in self.untaken():
            if match(el):
                self.taken.add(i)
                return el
        return None

    def wait_for(self, match, timeout=3.0, what="a stanza"):
        """The first not yet consumed element for which match(el) is true."""
        return self.wait(lambda: self.find(match), timeout, what)

    def wait_stream_error(self, timeout=3.0):
        """The condition of the stream error the peer sent."""
        el = self.wait_for(is_stream_error, timeout, "a stream error")
        return stream_error_condition(el)

    def wait_stream_end(self, timeout=3.0):
        self.wait(lambda: self.stream_end, timeout, "</stream:stream>")

    def wait_eof(self, timeout=3.0):
        """Seconds from now until the peer closed (EOF or reset)."""
        t0 = time.monotonic()
        self.wait(lambda: self.eof, timeout, "the connection to close")
        return max(0.0, self.eof_at - t0)

    def expect_silence(self, seconds, what="anything"):
        """Nothing arrives and the connection stays open for seconds."""
        before = len(self.raw)
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            _wait_fd(self.sock, select.POLLIN, min(left, 0.2))
            self.pump()
            if len(self.raw) != before:
                raise AssertionError("%s: expected no %s for %.1fs, got %r"
                                     % (self.label, what, seconds,
                                        bytes(self.raw[before:])))
            if self.eof:
                raise AssertionError("%s: expected the connection to stay "
                                     "open for %.1fs, it was closed%s"
                                     % (self.label, seconds,
                                        " (reset)" if self.reset else ""))

    def poke(self):
        """Write one byte of whitespace (legal between stanzas). False if
        the connection is known to be closed: the write failed, or an
        earlier one made the other side answer with a reset."""
        try:
            self.sock.send(b" ")
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self.reset = True
            return False
        self.pump()
        return not self.reset

    def expect_kept_open(self, seconds):
        """For seconds, nothing more arrives and the other side still takes
        our bytes: it may have shut down its writing half (EOF is fine) but
        has not closed the socket (our writes would be reset)."""
        before = len(self.raw)
        deadline = time.monotonic() + seconds
        while True:
            if not self.poke():
                raise AssertionError(
                    "%s: the other side closed the connection %.1fs too "
                    "early (our write was reset)"
                    % (self.label, deadline - time.monotonic()))
            if len(self.raw) != before:
                raise AssertionError("%s: expected nothing more, got %r"
                                     % (self.label,
                                        bytes(self.raw[before:])))
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def wait_closed(self, timeout):
        """Seconds until the other side closed the socket for good (our
        writes are reset); EOF alone is only a half-close."""
        t0 = time.monotonic()
        while self.poke():
            if time.monotonic() - t0 > timeout:
                raise AssertionError("%s: still open after %.1fs"
                                     % (self.label, timeout))
            time.sleep(0.05)
        return time.monotonic() - t0

    def answer_pings(self, frm, to):
        """Answer every ping received so far (either namespace)."""
        n = 0
        for i, el in self.untaken():
            if ping_ns(el):
                self.taken.add(i)
                self.send(pong(el, frm, to))
                n += 1
        return n

    def shutdown_wr(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    kill_now = close


def connect(src, dst, dst_port, label=None, rcvbuf=None, timeout=3.0,
            freebind=False):
    """A TCP connection from src (bound, as the plugin does) to dst;
    freebind for a source in FLOOD_SUBNET."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        if freebind:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((src, 0))
        s.settimeout(timeout)
        s.connect((dst, dst_port))
    except BaseException:
        s.close()
        raise
    return Conn(s, label or "%s->[%s]:%d" % (src, dst, dst_port))


class Listener:
    """A raw listening socket, driven by the test."""

    def __init__(self, addr, lport=None, backlog=128):
        self.addr = addr
        self.port = lport or port()
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, self.port))
        self.sock.listen(backlog)
        self.sock.setblocking(False)

    def fileno(self):
        return self.sock.fileno()

    def accept(self, timeout=3.0, label=None):
        r = _wait_fd(self.sock, select.POLLIN, timeout)
        if not r:
            raise AssertionError("nobody connected to [%s]:%d within %.1fs"
                                 % (self.addr, self.port, timeout))
        s, peer = self.sock.accept()
        return Conn(s, label or "[%s]:%d<-%s" % (self.addr, self.port,
                                                  peer[0]))

    def expect_no_connection(self, seconds):
        r = _wait_fd(self.sock, select.POLLIN, seconds)
        if r:
            s, peer = self.sock.accept()
            s.close()
            raise AssertionError("unexpected connection to [%s]:%d from %s"
                                 % (self.addr, self.port, peer[0]))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    kill_now = close


# --- a peer that behaves like the reference Pidgin plugin -------------------

# The plugin's keepalive after its first ping (reference behaviour).
PLUGIN_PING_RETRY = 10.0
PLUGIN_PING_MISSES = 3
_seq_ping = [0]


class RefPeer:
    """A Barev peer with the reference plugin's habits, run by its own
    thread: binds outgoing sockets to its address; admits inbound
    connections only from its buddies' addresses (else closes without a
    byte); as acceptor waits for the header, then answers with its own and
    <presence/>; one conversation per buddy: a new inbound stream replaces
    the old conversation (so in a race it keeps the newest inbound pipe and
    closes its own outgoing one); never dials a buddy it has a conversation
    with; answers pings in both namespaces; on </stream:stream> or EOF it
    closes at once, and closes with a bare </stream:stream>.

    Modes of its listener: "normal", or "refuse" (accept and close at once,
    like a host that does not know us; accept times are still recorded).
    on_accept(peer_addr), if set, runs in the peer's thread right after an
    accept (before any byte is read): a race test dials from there.

    self_ping, a list of seconds, makes it keep its pipes alive as the
    plugin does: a pipe silent for the next of those seconds (cycled; the
    plugin picks 60-90 s at random) gets a ping, then one every
    PLUGIN_PING_RETRY s while nothing arrives, and after PLUGIN_PING_MISSES
    unanswered ones it closes with </stream:stream>. Events: "self-ping",
    "self-ping-answered", "keepalive-closed"; a ping the gateway sends is
    "ping-answered" (the plugin then shows the gateway user as available)."""

    def __init__(self, jid, buddies=(), answer_pings=True, self_ping=None):
        self.jid = jid
        self.addr = addr_of(jid)
        self.buddies = list(buddies)
        self.answer_pings = answer_pings
        self.self_ping = list(self_ping) if self_ping else None
        self._silences = 0         # how many of self_ping were used
        self.mode = "normal"
        self.on_accept = None
        self.listener = None
        self.port = None
        self.conv = {}             # buddy JID -> Conn
        self.conns = []            # every live Conn
        self.events = []           # (monotonic time, what, detail)
        self.accept_times = []
        self.received = []         # (buddy, Conn, element)
        self.cond = threading.Condition()
        self.sel = selectors.DefaultSelector()
        self._tasks = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self.error = None
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name="peer %s" % jid)
        self.thread.start()

    # --- called from the test ---

    def call(self, fn, *args):
        """Run fn(*args) in the peer's thread (soon, not waiting)."""
        with self.cond:
            self._tasks.append((fn, args))
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def listen(self, lport=None):
        self.port = lport or port()
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.addr, self.port))
        s.listen(128)
        s.setblocking(False)
        self.listener = s
        self.call(lambda: self.sel.register(s, selectors.EVENT_READ, "listen"))
        return self.port

    def dial(self, buddy, host, dport):
        """Dial buddy at [host]:dport unless a conversation exists."""
        self.call(self._dial, buddy, host, dport)

    def send(self, buddy, data):
        """Send on the buddy's conversation (AssertionError if none)."""
        if isinstance(data, str):
            data = data.encode()
        done = threading.Event()
        box = []

        def go():
            c = self.conv.get(buddy)
            if c is None or c.closed:
                box.append("no conversation with %s" % buddy)
            else:
                try:
                    c.send(data)
                except (OSError, AssertionError) as e:
                    box.append(str(e))
            done.set()
        self.call(go)
        if not done.wait(5):
            raise AssertionError("%s: peer thread stuck" % self.jid)
        if box:
            raise AssertionError("%s: %s" % (self.jid, box[0]))

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.error:
                    raise AssertionError("%s: peer thread failed: %s"
                                         % (self.jid, self.error))
                v = pred()
                if _truthy(v):
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "%s: no %s within %.1fs; peer events: %s"
                        % (self.jid, what, timeout, self.describe()))
                self.cond.wait(min(left, 0.2))

    def open_conversations(self):
        """{buddy: Conn} of conversations whose stream is open."""
        with self.cond:
            return {b: c for b, c in self.conv.items()
                    if c.header_attrs is not None and not c.closed}

    def live_conns(self):
        with self.cond:
            return [c for c in self.conns if not c.closed]

    def wait_stanza(self, buddy, match, timeout=3.0, what="a stanza"):
        def find():
            for i, (b, _c, el) in enumerate(self.received):
                if b == buddy and match(el):
                    del self.received[i]
                    return el
            return None
        return self.wait(find, timeout, "%s from %s" % (what, buddy))

    def describe(self):
        t0 = self.events[0][0] if self.events else 0
        return "; ".join("%+.2fs %s %s" % (t - t0, w, d)
                         for t, w, d in self.events[-30:])

    def close(self):
        self._stop = True
        self.call(lambda: None)
        self.thread.join(5)
        for c in list(self.conns):
            c.close()
        if self.listener is not None:
            self.listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self.sel.close()

    kill_now = close

    # --- the peer's thread ---

    def _event(self, what, detail=""):
        self.events.append((time.monotonic(), what, detail))
        self.cond.notify_all()

    def _loop(self):
        try:
            while not self._stop:
                for key, _mask in self.sel.select(0.2):
                    with self.cond:
                        if key.data is None:
                            try:
                                self._wake_r.recv(4096)
                            except OSError:
                                pass
                        elif key.data == "listen":
                            self._accept()
                        else:
                            try:
                                self._readable(key.data)
                            except (BrokenPipeError,
                                    ConnectionResetError) as e:
                                # As a real peer: the other side is gone.
                                self._drop(key.data, "write failed: %s" % e)
                with self.cond:
                    tasks, self._tasks = self._tasks, []
                    for fn, args in tasks:
                        fn(*args)
                    if self.self_ping:
                        for c in list(self.conv.values()):
                            self._keepalive(c)
                    self.cond.notify_all()
        except BaseException as e:  # surfaced by wait()
            with self.cond:
                self.error = "%s: %s" % (type(e).__name__, e)
                self.cond.notify_all()

    def _accept(self):
        try:
            s, peer = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        now = time.monotonic()
        self.accept_times.append(now)
        src = socket.inet_pton(socket.AF_INET6, peer[0])
        known = any(socket.inet_pton(socket.AF_INET6, addr_of(b)) == src
                    for b in self.buddies)
        if self.mode == "refuse" or not known:
            self._event("refused", peer[0])
            s.close()
            return
        c = Conn(s, "%s<-%s" % (self.jid, peer[0]))
        c.direction, c.buddy, c.opened = "in", None, False
        self.conns.append(c)
        self.sel.register(c.sock, selectors.EVENT_READ, c)
        self._event("accepted", peer[0])
        if self.on_accept is not None:
            self.on_accept(peer[0])

    def _dial(self, buddy, host, dport):
        if buddy in self.conv:
            self._event("dial-skipped", buddy)
            return
        try:
            c = connect(self.addr, host, dport, "%s->%s" % (self.jid, buddy))
        except OSError as e:
            self._event("dial-failed", "%s %s" % (buddy, e))
            return
        c.direction, c.buddy, c.opened = "out", buddy, False
        self.conns.append(c)
        self.conv[buddy] = c
        self.sel.register(c.sock, selectors.EVENT_READ, c)
        self._event("dialled", buddy)
        c.send(header(self.jid, buddy))

    def _next_silence(self):
        s = self.self_ping[self._silences % len(self.self_ping)]
        self._silences += 1
        return s

    def _keepalive(self, c):
        """The plugin's keepalive on conversation c (see self_ping)."""
        if not c.opened or c.closed:
            return
        now = time.monotonic()
        if getattr(c, "ka_rx", None) != c.last_rx_at:
            # Anything received counts as life: a new silence begins.
            if getattr(c, "ka_ping", None) is not None:
                self._event("self-ping-answered", c.buddy)
            c.ka_rx, c.ka_ping, c.ka_misses = c.last_rx_at, None, 0
            c.ka_silence = self._next_silence()
        if c.ka_ping is None:
            if now - c.ka_rx < c.ka_silence:
                return
        elif now - c.ka_ping < PLUGIN_PING_RETRY:
            return
        else:
            c.ka_misses += 1
            if c.ka_misses >= PLUGIN_PING_MISSES:
                try:
                    c.send(STREAM_END)
                except (OSError, AssertionError):
                    pass
                self._drop(c, "keepalive: %d pings unanswered"
                           % c.ka_misses)
                self._event("keepalive-closed", c.buddy)
                return
        _seq_ping[0] += 1
        c.send('<iq type="get" id="plugin-ping-%d" from="%s" to="%s">'
               '<ping xmlns="%s"/></iq>'
               % (_seq_ping[0], self.jid, c.buddy, NS_PING))
        c.ka_ping = now
        self._event("self-ping", "%s after %.1fs of silence"
                    % (c.buddy, now - c.ka_rx))

    def _drop(self, c, why):
        if c.closed:
            return
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.close()
        if c.buddy is not None and self.conv.get(c.buddy) is c:
            del self.conv[c.buddy]
        self._event("closed", "%s %s %s" % (c.direction, c.buddy, why))

    def _readable(self, c):
        c.pump()
        if c.header_attrs is not None and not c.opened:
            if not self._on_header(c):
                return
        for i, el in c.untaken():
            c.taken.add(i)
            ns = ping_ns(el)
            if (name_of(el) == "iq" and el.get("type") == "result"
                    and el.get("id", "").startswith("plugin-ping-")):
                continue  # the answer to our keepalive: life, nothing more
            if ns and self.answer_pings:
                c.send(pong(el, self.jid, c.buddy))
                self._event("ping-answered", ns)
                continue
            self.received.append((c.buddy, c, el))
            self._event("stanza", "%s %s" % (c.buddy, name_of(el)))
        if c.stream_end or c.eof:
            self._drop(c, "stream end" if c.stream_end else "eof")

    def _on_header(self, c):
        c.opened = True
        if c.direction == "out":
            self._event("open", "out %s" % c.buddy)
            c.send(b"<presence/>")
            return True
        frm = c.header_attrs.get("from", "")
        buddy = frm if frm in self.buddies else None
        if buddy is None:
            src = socket.inet_pton(socket.AF_INET6, c.remote_addr)
            for b in self.buddies:
                if socket.inet_pton(socket.AF_INET6, addr_of(b)) == src:
                    buddy = b
        if buddy is None:
            self._drop(c, "unknown from %r" % frm)
            return False
        old = self.conv.get(buddy)
        if old is not None and old is not c:
            try:
                old.send(STREAM_END)
            except (OSError, AssertionError):
                pass
            self._drop(old, "replaced by a newer inbound stream")
        c.buddy = buddy
        self.conv[buddy] = c
        self._event("open", "in %s" % buddy)
        c.send(header(self.jid, buddy) + b"<presence/>")
        return True


NOT_IN_CONTACT_LIST = (
    b"<stream:error>"
    b"<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
    b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>"
    b"Not in contact list</text></stream:error></stream:stream>")


class Plugin2Peer(RefPeer):
    """A peer with the habits of the plugin's 2.x line (2.4-2.13, read
    from its sources; shared/protocol/barev-reference-behaviour.md, last
    section). Unlike RefPeer:
    - it accepts every TCP connection and decides after the header: a
      peer that is none of its buddies (by exact JID, else by a unique nick,
      and only from that buddy's address) gets its header, then
      NOT_IN_CONTACT_LIST (ending with </stream:stream>), then a second
      </stream:stream> (its close sends one too) and a close;
    - a race: a buddy's inbound stream meeting a conversation that already
      exists in the same direction loses to it; meeting its own outgoing
      one, the side whose JID text is smaller (ASCII case ignored; its own
      nick@address against the buddy's name) keeps its outgoing
      connection. The losing inbound stream is closed without a byte (its
      header was not sent yet); a losing outgoing one gets
      </stream:stream> and is closed;
    - messages queued with queue() while a buddy was unreachable go right
      after its presence when a stream with that buddy opens, in order,
      in the same write as the presence, with no delay stamp;
    - it writes attributes with single quotes, as libpurple's xmlnode does;
    - on a stream end or EOF it sends </stream:stream> (if it sent its
      header) and closes."""

    def __init__(self, jid, buddies=(), answer_pings=True):
        super().__init__(jid, buddies, answer_pings)
        self.pending = {}          # buddy JID -> [body]
        self.rejected = []         # (monotonic time, from) of refusals

    def queue(self, buddy, bodies):
        """Messages the user typed while buddy was unreachable."""
        with self.cond:
            self.pending.setdefault(buddy, []).extend(bodies)

    def message_xml(self, buddy, body):
        """A chat message as the 2.x plugin writes it: the text, an XHTML
        part in the XHTML namespace (not XHTML-IM) and a jabber:x:event."""
        t = xml_text(body)
        return ("<message to='%s' from='%s' type='chat'><body>%s</body>"
                "<html xmlns='http://www.w3.org/1999/xhtml'><body><font>%s"
                "</font></body></html><x xmlns='jabber:x:event'><composing/>"
                "</x></message>" % (buddy, self.jid, t, t))

    def jingle_call(self, buddy, sid="barev-call-1"):
        """A call request as the 2.x plugin sends it (XEP-0166/0167 over
        raw UDP, XEP-0177); returns the iq id."""
        iq_id = "j-1700000000-1"
        self.send(buddy, (
            "<iq type='set' id='%s' from='%s' to='%s'>"
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' "
            "initiator='%s' sid='%s'>"
            "<content creator='initiator' name='audio'>"
            "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>"
            "<payload-type id='0' name='PCMU' clockrate='8000'/>"
            "</description>"
            "<transport xmlns='urn:xmpp:jingle:transports:raw-udp:1'>"
            "<candidate id='c1' component='1' generation='0' ip='%s' "
            "port='50200'/></transport></content></jingle></iq>"
            % (iq_id, self.jid, buddy, self.jid, sid, self.addr)))
        return iq_id

    # --- the peer's thread ---

    def _accept(self):
        try:
            s, peer = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.accept_times.append(time.monotonic())
        if self.mode == "refuse":
            self._event("refused", peer[0])
            s.close()
            return
        c = Conn(s, "%s<-%s" % (self.jid, peer[0]))
        c.direction, c.buddy, c.opened = "in", None, False
        c.header_sent = False
        self.conns.append(c)
        self.sel.register(c.sock, selectors.EVENT_READ, c)
        self._event("accepted", peer[0])
        if self.on_accept is not None:
            self.on_accept(peer[0])

    def _dial(self, buddy, host, dport):
        super()._dial(buddy, host, dport)
        c = self.conv.get(buddy)
        if c is not None:
            c.header_sent = True

    def _match(self, c):
        """The buddy an inbound stream is from, or None."""
        frm = c.header_attrs.get("from", "")
        src = socket.inet_pton(socket.AF_INET6, c.remote_addr)
        nick = frm.split("@", 1)[0]
        if frm in self.buddies:
            cands = [frm]
        else:
            cands = [b for b in self.buddies if b.split("@", 1)[0] == nick]
            if len(cands) != 1:
                cands = []
        for b in cands:
            if socket.inet_pton(socket.AF_INET6, addr_of(b)) == src:
                return b
        return None

    def _greet(self, c, buddy):
        """Presence, then the queued messages, in one write."""
        out = b"<presence/>"
        for body in self.pending.pop(buddy, []):
            out += self.message_xml(buddy, body).encode()
        c.send(out)

    def _on_header(self, c):
        c.opened = True
        if c.direction == "out":
            self._event("open", "out %s" % c.buddy)
            self._greet(c, c.buddy)
            return True
        frm = c.header_attrs.get("from", "")
        buddy = self._match(c)
        if buddy is None:
            self.rejected.append((time.monotonic(), frm))
            c.send(header(self.jid, frm) + NOT_IN_CONTACT_LIST)
            c.header_sent = True
            self._drop(c, "not in contact list: %r" % frm)
            return False
        old = self.conv.get(buddy)
        if old is not None and old is not c and not old.closed:
            if old.direction == "in":
                wins = False
            else:
                keep_out = self.jid.lower() < buddy.lower()
                wins = not keep_out
            if not wins:
                self._drop(c, "race: keeping the %s stream" % old.direction)
                return False
            self._drop(old, "race: the inbound stream wins")
        c.buddy = buddy
        self.conv[buddy] = c
        self._event("open", "in %s" % buddy)
        c.send(header(self.jid, buddy))
        c.header_sent = True
        self._greet(c, buddy)
        return True

    def _drop(self, c, why):
        if not c.closed and getattr(c, "header_sent", False):
            try:
                c.sock.send(STREAM_END)
            except OSError:
                pass
        super()._drop(c, why)


# --- barev_driver -----------------------------------------------------------

def driver_bin():
    path = os.environ.get("BAREV_DRIVER")
    if not path:
        build = os.environ.get("TEST_BUILDDIR") or h.SRCDIR
        path = os.path.join(build, "tests", "barev_driver")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise h.Unavailable("barev_driver not found: %s (build it with "
                            "`make tests/barev_driver`, or set BAREV_DRIVER)"
                            % path)
    return path


def _val(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[ %s ]" % ", ".join(_val(x) for x in v)
    return '"%s"' % v


BAREV_DEFAULTS = dict(ping_interval=30.0, ping_timeout=10.0, ping_failures=3,
                      handshake_timeout=5.0, connect_timeout=3.0,
                      redial_min=0.5, redial_max=4.0, allow_any_address=False)
LIMITS_DEFAULTS = dict(stanza_bytes=65536, depth=32, output_bytes=1048576,
                       pipes=20000, pipes_per_address=16,
                       inbound_per_minute=6000,
                       inbound_per_minute_per_subnet=6000,
                       dials_concurrent=64, dials_per_second=200,
                       dials_per_user=200)


def driver_conf(dirpath, listen, barev=None, limits=None):
    b = dict(BAREV_DEFAULTS, listen=list(listen), **(barev or {}))
    lim = dict(LIMITS_DEFAULTS, **(limits or {}))
    return ("# barev_driver test configuration\n"
            'component = { jid = "barev.localhost"; secret = "unused"; };\n'
            "barev = {\n%s};\n"
            "limits = {\n%s};\n"
            'storage = { path = "%s/state.db"; };\n'
            'log = { level = "debug"; };\n'
            % ("".join("  %s = %s;\n" % (k, _val(v)) for k, v in b.items()),
               "".join("  %s = %s;\n" % (k, _val(v)) for k, v in lim.items()),
               dirpath))


def example_ping_settings():
    """barev.ping_interval, ping_timeout and ping_failures as the shipped
    conf/barev-gateway.conf.example sets them (the defaults)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                        "..", "conf", "barev-gateway.conf.example")
    with open(path) as f:
        text = f.read()
    out = {}
    for key in ("ping_interval", "ping_timeout", "ping_failures"):
        m = re.search(r"^\s*%s\s*=\s*([0-9.]+)\s*;" % key, text, re.M)
        if m is None:
            raise AssertionError("%s: no %s" % (path, key))
        out[key] = (int(m.group(1)) if key == "ping_failures"
                    else float(m.group(1)))
    return out


RESPONSE_RE = re.compile(r"^(sent|error .*|pipes \d+)$")


class Driver:
    """One barev_driver process: commands to its stdin, events from its
    stdout (kept with their arrival times), stderr (the engine's debug log)
    to a file shown when a test fails."""

    def __init__(self, name, listen, barev=None, limits=None):
        self.bin = driver_bin()
        self.name = name
        self.dir = h.subdir("driver-%s" % name)
        self.conf_path = os.path.join(self.dir, "barev.conf")
        self.log_path = os.path.join(self.dir, "stderr.log")
        with open(self.conf_path, "w") as f:
            f.write(driver_conf(self.dir, listen, barev, limits))
        self.lines = []            # (monotonic time, text)
        self.resp_seen = 0         # responses consumed by commands
        self.cond = threading.Condition()
        self.proc = None
        self.reader = None

    def start(self, timeout=5.0):
        h.show_log("%s stderr" % self.name, self.log_path)
        wrapper = shlex.split(os.environ.get("TEST_WRAPPER", ""))
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                wrapper + [self.bin, "-c", self.conf_path],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, close_fds=True, cwd=self.dir)
        self.reader = threading.Thread(target=self._read, daemon=True,
                                       name="driver %s" % self.name)
        self.reader.start()
        m = self.wait_line(r"^(ready|fatal .*)$", timeout)
        if m.group(1) != "ready":
            raise AssertionError("%s: %s" % (self.name, m.group(1)))
        return self

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append((time.monotonic(), line))
                self.cond.notify_all()
        with self.cond:
            self.lines.append((time.monotonic(), None))  # end of output
            self.cond.notify_all()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # --- events ---

    def mark(self):
        with self.cond:
            return len(self.lines)

    def wait_line(self, regex, timeout=3.0, start=0, what=None):
        """The first line from index start matching regex: a _Found (its
        match, .index and .time)."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    t, line = self.lines[i]
                    if line is None:
                        continue
                    m = rx.search(line)
                    if m:
                        return _Found(m, i, t)
                ended = self.lines and self.lines[-1][1] is None
                left = deadline - time.monotonic()
                if left <= 0 or ended:
                    raise AssertionError(
                        "%s: no line /%s/ (%s) within %.1fs%s; its output:\n%s"
                        % (self.name, regex, what or "event", timeout,
                           " (the driver exited, status %s)"
                           % self.proc.poll() if ended else "",
                           self.transcript(start)))
                self.cond.wait(min(left, 0.2))

    def find_lines(self, regex, start=0):
        rx = re.compile(regex)
        with self.cond:
            return [(t, line) for t, line in self.lines[start:]
                    if line is not None and rx.search(line)]

    def transcript(self, start=0, limit=40):
        with self.cond:
            lines = [ln for _t, ln in self.lines[start:] if ln is not None]
        if len(lines) > limit:
            lines = lines[:5] + ["..."] + lines[-(limit - 6):]
        return "\n".join("  " + (ln if len(ln) < 300 else ln[:300] + "...")
                         for ln in lines) or "  (nothing)"

    def wait_up(self, local, remote, timeout=3.0, start=0):
        return self.wait_line(r"^up %s %s$" % (re.escape(local),
                                              re.escape(remote)),
                              timeout, start, "up")

    def wait_down(self, local, remote, timeout=3.0, start=0):
        return self.wait_line(r"^down %s %s (.*)$" % (re.escape(local),
                                                     re.escape(remote)),
                              timeout, start, "down")

    def wait_stanza(self, local, remote, timeout=3.0, start=0,
                    contains=""):
        """The stanza (parsed) of the first matching `stanza` event."""
        f = self.wait_line(r"^stanza %s %s (.*%s.*)$"
                           % (re.escape(local), re.escape(remote),
                              re.escape(contains)),
                           timeout, start, "stanza")
        return ET.fromstring(f.group(1)), f

    def is_up(self, local, remote):
        """Whether the last up/down event of the pair was up."""
        last = None
        for _t, line in self.find_lines(r"^(up|down) %s %s( |$)"
                                        % (re.escape(local),
                                           re.escape(remote))):
            last = line.split()[0]
        return last == "up"

    # --- commands ---

    def cmd(self, line):
        if "\n" in line:
            raise ValueError("a command is one line")
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise AssertionError("%s: cannot send a command (%s); status %s"
                                 % (self.name, e, self.proc.poll()))

    def _response(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                seen = 0
                for _t, line in self.lines:
                    if line is not None and RESPONSE_RE.match(line):
                        seen += 1
                        if seen > self.resp_seen:
                            self.resp_seen = seen
                            return line
                ended = self.lines and self.lines[-1][1] is None
                left = deadline - time.monotonic()
                if left <= 0 or ended:
                    raise AssertionError("%s: no response within %.1fs%s"
                                         % (self.name, timeout,
                                            " (the driver exited)" if ended
                                            else ""))
                self.cond.wait(min(left, 0.2))

    def setup(self, identities=(), contacts=()):
        for j in identities:
            self.cmd("identity %s" % j)
        for l, r in contacts:
            self.cmd("contact %s %s" % (l, r))
        self.count()  # in step again: a bad line would show up here

    def count(self):
        self.cmd("count")
        r = self._response(10)
        m = re.match(r"^pipes (\d+)$", r)
        if not m:
            raise AssertionError("%s: `count` answered %r" % (self.name, r))
        return int(m.group(1))

    def want(self, local, remote, rport):
        self.cmd("want %s %s %d" % (local, remote, rport))

    def unwant(self, local, remote):
        self.cmd("unwant %s %s" % (local, remote))

    def send(self, local, remote, xml, timeout=5.0, token=None):
        """`send` (`sendc` with a token); returns the driver's answer:
        "sent" or "error ..."."""
        if token is None:
            self.cmd("send %s %s %s" % (local, remote, xml))
        else:
            self.cmd("sendc %s %s %d %s" % (local, remote, token, xml))
        return self._response(timeout)

    def sendc_many(self, local, remote, items, timeout=5.0):
        """`sendc` for each (token, inner) in one write, so that the driver
        reads them in one loop pass; returns the answers."""
        lines = "".join("sendc %s %s %d %s\n" % (local, remote, t, x)
                        for t, x in items)
        try:
            self.proc.stdin.write(lines.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise AssertionError("%s: cannot send commands (%s); status %s"
                                 % (self.name, e, self.proc.poll()))
        return [self._response(timeout) for _ in items]

    def send_ok(self, local, remote, xml):
        r = self.send(local, remote, xml)
        if r != "sent":
            raise AssertionError("%s: send %s -> %s answered %r"
                                 % (self.name, local, remote, r))

    def wait_count(self, n, timeout=5.0, what=None):
        deadline = time.monotonic() + timeout
        while True:
            c = self.count()
            if c == n:
                return
            if time.monotonic() > deadline:
                raise AssertionError("%s: %d pipes open, expected %d (%s) "
                                     "after %.1fs" % (self.name, c, n,
                                                      what or "", timeout))
            time.sleep(0.1)

    def shutdown(self, timeout=10.0):
        """`shutdown`: waits for `stopped` and exit status 0."""
        start = self.mark()
        self.cmd("shutdown")
        self.wait_line(r"^stopped$", timeout, start, "stopped")
        try:
            rc = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s: still running 5 s after `stopped`"
                                 % self.name)
        if rc != 0:
            raise AssertionError("%s: exit status %d after shutdown"
                                 % (self.name, rc))

    # --- ending ---

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        """End of input: the driver must exit 0, with no sanitizer report."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_now()
            raise AssertionError("%s: did not exit within %.0fs of the end "
                                 "of its input" % (self.name, timeout))
        finally:
            if self.reader is not None:
                self.reader.join(2)
        m = h.SANITIZER_RE.search(self.log_text())
        if m:
            raise AssertionError("%s: sanitizer report in its stderr (%s)"
                                 % (self.name, self.log_path))
        if rc != 0:
            raise AssertionError("%s: exit status %s at the end of its input"
                                 % (self.name, rc))

    def kill_now(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait(5)


class _Found:
    """A matched driver line: its match, index and arrival time."""

    def __init__(self, m, index, t):
        self.m, self.index, self.time = m, index, t

    def group(self, *a):
        return self.m.group(*a)


class Scope:
    """Everything a test starts, stopped on the way out: drivers get the end
    of their input (and are checked for sanitizer reports) when the test
    passed, everything is killed when it failed."""

    def __init__(self):
        self.things = []

    def add(self, thing):
        self.things.append(thing)
        return thing

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        errors = []
        for t in reversed(self.things):
            try:
                if exc_type is None and isinstance(t, Driver):
                    t.stop()
                else:
                    t.kill_now()
            except BaseException as e:
                errors.append(str(e))
                try:
                    t.kill_now()
                except BaseException:
                    pass
        if errors and exc_type is None:
            raise AssertionError("; ".join(errors))
        return False


# --- running a script in its own namespace -----------------------------------

def _cannot_run():
    if os.geteuid() != 0:
        return "needs root (creates a network namespace)"
    for prog in ("ip",):
        try:
            h.require_program(prog)
        except h.Unavailable as e:
            return str(e)
    return None


def _tests(tests):
    """harness Test objects from (name, fn[, timeout]) tuples."""
    only = os.environ.get("TEST_ONLY")
    out = []
    for t in tests:
        if not isinstance(t, h.Test):
            t = h.Test(t[0], t[1], timeout=t[2] if len(t) > 2 else 60)
        if not only or re.search(only, t.name):
            out.append(t)
    return out


def _all_unavailable(tests, reason):
    def fail():
        raise h.Unavailable(reason)
    h.run([h.Test(t.name, fail, timeout=10) for t in _tests(tests)])


def _ip(*args, stdin=None):
    return subprocess.run(["ip"] + list(args), input=stdin,
                          capture_output=True, text=True, timeout=30)


def _ns_pids(ns):
    p = _ip("netns", "pids", ns)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _delete_ns(ns):
    for _ in range(3):
        pids = _ns_pids(ns)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not pids:
            break
        time.sleep(0.2)
    _ip("netns", "del", ns)


def _make_ns(ns):
    """Create and populate the namespace; None, or why it failed."""
    p = _ip("netns", "add", ns)
    if p.returncode != 0:
        return "ip netns add %s: %s" % (ns, p.stderr.strip())
    p = _ip("-n", ns, "link", "set", "lo", "up")
    if p.returncode != 0:
        return "ip link set lo up: %s" % p.stderr.strip()
    batch = "".join("addr add %s/128 dev lo nodad\n" % a for a in ADDRESSES)
    batch += "route add local %s dev lo\n" % FLOOD_SUBNET
    p = _ip("-n", ns, "-batch", "-", stdin=batch)
    if p.returncode != 0:
        return "adding addresses: %s" % p.stderr.strip()
    return None


class _Interrupted(Exception):
    pass


def _interrupt(signum, _frame):
    raise _Interrupted("signal %d" % signum)


def main(tests):
    """Run tests (harness Test objects or tuples) inside a fresh network
    namespace; prints TAP and exits."""
    if os.environ.get(ENV_NS):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        h.run(_tests(tests))
        return
    reason = _cannot_run()
    if reason:
        _all_unavailable(tests, reason)
        return
    ns = "bgt-" + os.urandom(4).hex()
    script = os.path.abspath(sys.argv[0])
    limit = int(os.environ.get("TEST_TOTAL_TIMEOUT", "300")) + 30
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _interrupt)
    rc, proc = 1, None
    try:
        why = _make_ns(ns)
        if why:
            _delete_ns(ns)
            _all_unavailable(tests, "cannot set up a network namespace: "
                             + why)
            return
        env = dict(os.environ, **{ENV_NS: ns})
        sys.stdout.flush()
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                                 script], env=env, start_new_session=True)
        try:
            rc = proc.wait(limit)
        except subprocess.TimeoutExpired:
            print("Bail out! %s did not finish within %ds" % (script, limit),
                  flush=True)
            rc = 1
    except _Interrupted as e:
        print("Bail out! interrupted (%s)" % e, flush=True)
        rc = 1
    finally:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(10)
        _delete_ns(ns)
    sys.exit(rc)
