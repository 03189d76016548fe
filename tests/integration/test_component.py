"""The gateway as an XEP-0114 component of a real server.

Each scenario runs against a private Prosody, then a private ejabberd. A user
(alice@localhost, driven by slixmpp) talks to the gateway's JID through the
server, the way any XMPP client would.
"""

import asyncio
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GW = h.COMPONENT  # the gateway's JID: barev.localhost

# The gateway's log lines this file relies on, in one place.
LINK_UP = h.LINK_UP_RE  # "component: link up jid=%s server=[^ ]+:%d"
LINK_DOWN = r"component: link down reason=(?P<reason>.*?) retry_in_ms=(?P<ms>\d+)"
CONNECTING = r"component: connecting server=[^ ]+:%d attempt=(?P<n>\d+)"
EXITING = r"main: exiting reason=SIGTERM"
STATE = r"component: state (?P<old>\w+) -> (?P<new>\w+)"

FEATURES = [h.NS_DISCO_INFO, h.NS_DISCO_ITEMS, h.NS_VERSION, h.NS_PING]


def link_up(world):
    srv = world.server()
    return LINK_UP % (re.escape(srv.component_domain), srv.component_port)


def assert_from_gateway(reply):
    assert reply["from"].full == GW, \
        "reply from %r, expected %r: %s" % (reply["from"].full, GW, h.show(reply))


def assert_result(reply):
    assert reply["type"] == "result", "expected a result: %s" % h.show(reply)
    assert_from_gateway(reply)


class Proxy:
    """A TCP proxy between the gateway and the server, for the tests that
    need to see or shape the component stream: it can hold back the
    server's answer to the handshake (hold, seconds), or gather the
    stanzas the server routes to the gateway and pass them on in one write
    (gather()). It stands in for the server in the gateway's
    configuration (same domain and secret, its own port)."""

    def __init__(self, server, hold=0.0):
        self.server = server
        self.host = server.host
        self.domain = server.domain
        self.component_domain = server.component_domain
        self.secret = server.secret
        self.hold = hold
        self.holding = threading.Event()   # the answer is being held now
        self.released = threading.Event()  # and has been passed on
        self.lock = threading.Lock()
        self.gather_count = 0
        self.gathered = threading.Event()
        self.gw_socks = []                 # accepted from the gateway
        self.socks = []
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.lsock = socket.socket(family, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((self.host, 0))
        self.lsock.listen(8)
        self.component_port = self.lsock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        h._track(self)

    def _accept(self):
        while not self.closed:
            try:
                gw, _ = self.lsock.accept()
                srv = socket.create_connection((self.server.host,
                                                self.server.component_port))
            except OSError:
                return
            with self.lock:
                self.gw_socks.append(gw)
                self.socks += [gw, srv]
            threading.Thread(target=self._pass, args=(gw, srv, False),
                             daemon=True).start()
            threading.Thread(target=self._pass, args=(srv, gw, True),
                             daemon=True).start()

    def _pass(self, src, dst, from_server):
        held, pending = False, b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_server and self.hold and not held \
                        and b"handshake" in data:
                    # Later bytes queue behind this one: order is kept.
                    held = True
                    self.holding.set()
                    time.sleep(self.hold)
                    self.released.set()
                with self.lock:
                    n = self.gather_count if from_server else 0
                if n:
                    pending += data
                    if pending.count(b"</iq>") < n:
                        continue
                    with self.lock:
                        self.gather_count = 0
                    data, pending = pending, b""
                    self.gathered.set()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def gather(self, n):
        """From now on, hold what the server sends the gateway until n
        iq stanzas are in, then pass them on in one write."""
        with self.lock:
            self.gather_count = n
        self.gathered.clear()

    def gateway_data_segments(self):
        """TCP segments with data the proxy has received from the gateway
        on its latest connection (TCP_INFO tcpi_data_segs_in)."""
        with self.lock:
            s = self.gw_socks[-1]
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        if len(info) < 156:
            raise h.Unavailable("TCP_INFO without tcpi_data_segs_in")
        return struct.unpack_from("I", info, 152)[0]

    def kill_now(self):
        self.closed = True
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks + [self.lsock]:
            try:
                s.close()
            except OSError:
                pass
        h._untrack(self)


def pings_at_once(user, to, n, timeout=10.0):
    """n pings sent without waiting for answers; their replies."""
    async def go():
        from slixmpp.exceptions import IqError
        sent = []
        for _ in range(n):
            iq = user.xmpp.Iq()
            iq["type"] = "get"
            iq["to"] = to
            iq.append(ET.Element("{%s}ping" % h.NS_PING))
            sent.append(iq.send(timeout=timeout))
        out = []
        for r in await asyncio.gather(*sent, return_exceptions=True):
            if isinstance(r, IqError):
                r = r.iq
            elif isinstance(r, BaseException):
                raise AssertionError("a ping got no answer: %r" % r)
            out.append(r)
        return out
    return h._run(go(), timeout + 3)


def assert_stopped_within(gw, seconds):
    status, elapsed = gw.stop(seconds)
    assert status == 0, "exit status %s" % status
    assert elapsed < seconds, "took %.2fs" % elapsed
    assert gw.matches(EXITING), "no /%s/ in the log" % EXITING
    assert not gw.sanitizer_report(), "\n".join(gw.sanitizer_report())


# --- scenarios ---------------------------------------------------------------

def disco_info(world):
    """XEP-0030: the gateway is a gateway/barev with the basic features."""
    world.gateway()
    r = world.client().disco_info(GW)
    assert_result(r)
    ids = h.identities(r)
    assert any(cat == "gateway" and typ == "barev" for cat, typ, _ in ids), \
        "no identity category=gateway type=barev in %s" % h.show(r)
    missing = [f for f in FEATURES if f not in h.features(r)]
    assert not missing, "features %s missing in %s" % (missing, h.show(r))


def disco_items(world):
    """XEP-0030: disco#items gets a result (possibly empty)."""
    world.gateway()
    r = world.client().disco_items(GW)
    assert_result(r)
    assert r.xml.find("{%s}query" % h.NS_DISCO_ITEMS) is not None, \
        "no disco#items query in %s" % h.show(r)


def version(world):
    """XEP-0092: name barev-gateway and a version."""
    world.gateway()
    r = world.client().version(GW)
    assert_result(r)
    name = h.child_text(r, h.NS_VERSION, "name")
    ver = h.child_text(r, h.NS_VERSION, "version")
    assert name == "barev-gateway", "name %r in %s" % (name, h.show(r))
    assert ver and ver.strip(), "empty version in %s" % h.show(r)


def ping(world):
    """XEP-0199: a ping gets a result."""
    world.gateway()
    assert_result(world.client().ping(GW))


def unknown_namespace(world):
    """RFC 6120 8.4: an iq get nobody handles gets service-unavailable
    (cancel) from the gateway itself, and the link stays up."""
    gw = world.gateway()
    user = world.client()
    assert_result(user.ping(GW))  # linked: what follows is the gateway's answer
    mark = gw.mark()
    r = user.unknown_iq(GW)
    assert r["type"] == "error", "expected an error: %s" % h.show(r)
    assert_from_gateway(r)
    err = h.error_of(r)
    assert err[:2] == ("cancel", "service-unavailable"), \
        "error %r, expected (cancel, service-unavailable): %s" % (err, h.show(r))
    assert_result(user.ping(GW))
    assert not gw.matches(LINK_DOWN, mark), "link went down:\n" + \
        gw.log_since(mark)


def handshake_then_stanzas(world):
    """libstrophe 0.12.2 crashed on the first stanza after a component
    handshake. A freshly started gateway receives and answers stanzas right
    after its handshake, and is still alive (and sanitizer-clean)."""
    gw = world.fresh_gateway()
    user = world.client()
    assert_result(user.ping(GW))  # the first stanza after the handshake
    for _ in range(3):
        assert_result(user.disco_info(GW))
        assert user.unknown_iq(GW)["type"] == "error"
    assert_result(user.ping(GW))
    time.sleep(0.3)
    assert gw.alive(), "gateway died, status %s" % gw.proc.returncode
    assert not gw.sanitizer_report(), "\n".join(gw.sanitizer_report())


def server_restart(world):
    """After the server restarts, the gateway links up again by itself and
    answers a ping within 15 s."""
    gw = world.gateway()
    srv = world.server()
    mark = gw.mark()
    t0 = time.monotonic()
    srv.restart()
    gw.wait_log(LINK_DOWN, 10, start=mark)
    gw.wait_log(link_up(world), 15, start=mark)
    deadline = t0 + 15
    while True:
        try:
            r = world.client().ping(GW, timeout=2)
            if r["type"] == "result":
                break
        except AssertionError:
            r = None
        if time.monotonic() > deadline:
            raise AssertionError("no ping result 15 s after the restart; last "
                                 "reply: %s" % (h.show(r) if r is not None else None))
        time.sleep(0.2)
    assert_result(r)
    assert gw.alive()


def wrong_secret(world):
    """With a wrong secret the gateway logs each failure and retries with a
    growing delay: few attempts in 8 s, and it stays alive."""
    srv = world.server()
    gw = world.new_gateway(secret="not-the-secret", reconnect_min=1.0,
                           reconnect_max=60.0)
    gw.start()
    try:
        time.sleep(8)
        assert gw.alive(), "gateway exited with status %s" % gw.proc.returncode
        attempts = gw.matches(CONNECTING % srv.component_port)
        downs = gw.matches(LINK_DOWN)
        assert not gw.matches(r"component: link up"), "linked with a wrong secret"
        assert 2 <= len(attempts) <= 6, "%d connection attempts in 8 s" % len(attempts)
        assert len(downs) >= 2, "%d 'link down' lines in 8 s" % len(downs)
        delays = [int(m.group("ms")) for m in downs]
        assert all(b >= a for a, b in zip(delays, delays[1:])) \
            and delays[-1] > delays[0], "retry_in_ms does not grow: %s" % delays
        # The log's clock agrees: each new attempt starts retry_in_ms after
        # the failure of the previous one.
        lines = gw.log_text().splitlines()
        waits, down_at = [], None
        for line in lines:
            if re.search(LINK_DOWN, line):
                down_at = h.log_time(line)
            elif re.search(CONNECTING % srv.component_port, line) and down_at:
                waits.append(h.log_time(line) - down_at)
                down_at = None
        for ms, w in zip(delays, waits):
            assert ms / 1000.0 - 0.05 <= w <= ms / 1000.0 + 0.5, \
                "retry_in_ms=%d but the next attempt came after %.3fs" % (ms, w)
    except BaseException:
        gw.kill_now()
        raise
    gw.stop_clean(5)


def sigterm(world):
    """SIGTERM: exit status 0 within 2 s, and the server sees the component
    go: the user's next iq to the gateway's JID gets an error."""
    gw = world.gateway()
    user = world.client()
    assert_result(user.ping(GW))
    status, elapsed = gw.stop(2)
    assert status == 0, "exit status %s" % status
    assert elapsed < 2.0, "took %.2fs" % elapsed
    assert gw.matches(EXITING), "no /%s/ in the log" % EXITING
    # the server saw the component go: the next iq to it bounces
    def bounced():
        r = user.ping(GW, timeout=3)
        return r if r["type"] == "error" else None
    h.wait_until(bounced, 5, "an error reply from the server")
    assert not gw.sanitizer_report(), "\n".join(gw.sanitizer_report())


def sigterm_handshake_pending(world):
    """The reported case: the gateway has sent its handshake, the server's
    answer is held back a second by a proxy, SIGTERM comes meanwhile. The
    late answer must not bring the link up: exit 0 within 2 s."""
    srv = world.server()
    proxy = Proxy(srv, hold=1.0)
    gw = h.Gateway(world.dir, proxy, name="gateway-held")
    try:
        gw.start()
        if not proxy.holding.wait(10):
            raise AssertionError("the gateway's handshake never got an "
                                 "answer to hold:\n" + gw.log_text())
        assert_stopped_within(gw, 2.0)
        states = [(m.group("old"), m.group("new")) for m in gw.matches(STATE)]
        assert ("stopping", "up") not in states, \
            "the link came up while stopping: %s" % states
        assert not gw.matches(r"component: link up"), \
            "link up after SIGTERM:\n" + gw.log_text()
    finally:
        gw.kill_now()
        proxy.kill_now()


def burst_one_write(world):
    """What one loop pass sends to the server goes in one write: N pings
    that reach the gateway in one read are answered in one TCP segment,
    not N (Prosody keeps Nagle on and forwards each write of ours on its
    own, so that the next waits for the receiver's delayed ACK)."""
    n = 16
    srv = world.server()
    proxy = Proxy(srv)
    gw = h.Gateway(world.dir, proxy, name="gateway-burst")
    try:
        gw.start()
        gw.wait_log(LINK_UP % (re.escape(srv.component_domain),
                               proxy.component_port), 10)
        user = world.client()
        assert_result(user.ping(GW))  # routes are warm
        time.sleep(0.3)
        proxy.gather(n)
        before = proxy.gateway_data_segments()
        replies = pings_at_once(user, GW, n)
        assert proxy.gathered.is_set(), "the proxy did not gather the pings"
        for r in replies:
            assert_result(r)
        time.sleep(0.2)
        segs = proxy.gateway_data_segments() - before
        assert segs <= 2, "%d answers to pings read in one pass came in %d " \
            "TCP segments" % (n, segs)
        gw.stop_clean(2)
    finally:
        gw.kill_now()
        proxy.kill_now()


SCENARIOS = [
    ("disco#info of the gateway", disco_info),
    ("disco#items of the gateway", disco_items),
    ("jabber:iq:version of the gateway", version),
    ("ping the gateway", ping),
    ("unknown namespace gets service-unavailable", unknown_namespace),
    ("stanzas after the handshake (libstrophe crash regression)",
     handshake_then_stanzas),
    ("reconnects after a server restart", server_restart),
    ("wrong secret: retries with growing backoff", wrong_secret),
    ("SIGTERM: clean exit, component gone", sigterm),
    ("SIGTERM with the handshake sent and its answer held: exit in 2 s",
     sigterm_handshake_pending),
    ("a pass's answers to a burst of pings leave in one write",
     burst_one_write),
]


def silent_listener():
    """A TCP listener that accepts and reads, never answering."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    got = threading.Event()

    def serve():
        try:
            c, _ = ls.accept()
            while c.recv(4096):
                got.set()
        except OSError:
            pass
    threading.Thread(target=serve, daemon=True).start()
    return ls, got


def sigterm_connecting_silent():
    """SIGTERM while connecting to a server that accepts the connection
    and never answers our stream header: exit 0 within 2 s."""
    ls, got = silent_listener()
    srv = h.NoServer()
    srv.component_port = ls.getsockname()[1]
    gw = h.Gateway(h.subdir("silent"), srv)
    try:
        gw.start()
        if not got.wait(10):
            raise AssertionError("the gateway never wrote its stream header")
        assert_stopped_within(gw, 2.0)
    finally:
        gw.kill_now()
        ls.close()


def sigterm_backoff():
    """SIGTERM while waiting to dial again after a refused connect: exit 0
    within 2 s."""
    srv = h.NoServer()
    gw = h.Gateway(h.subdir("backoff"), srv, reconnect_min=30.0,
                   reconnect_max=60.0)
    try:
        gw.start()
        gw.wait_log(LINK_DOWN, 10)
        gw.wait_log(r"component: state \w+ -> backoff", 5)
        assert_stopped_within(gw, 2.0)
    finally:
        gw.kill_now()


class Netns:
    """A network namespace of this test's own with lo up and the given
    addresses on lo; deleted (what runs in it killed) at the end."""

    def __init__(self, addrs):
        h.require_root()
        h.require_program("ip")
        self.name = "bgc-" + os.urandom(4).hex()
        self._ip("netns", "add", self.name)
        h._track(self)
        self._ip("-n", self.name, "link", "set", "lo", "up")
        for a in addrs:
            self._ip("-n", self.name, "addr", "add", a, "dev", "lo", "nodad")

    @staticmethod
    def _ip(*args):
        p = h.run_cmd(["ip"] + list(args))
        if p.returncode != 0:
            raise AssertionError("ip %s: %s" % (" ".join(args),
                                                p.stderr.strip()))
        return p

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def addrconfig_refuses(self, addr):
        """Whether getaddrinfo(addr, AI_ADDRCONFIG) fails in here, as it
        does inside libstrophe."""
        code = ("import socket,sys\ntry:\n socket.getaddrinfo(sys.argv[1], 1,"
                " 0, socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG)\n"
                "except socket.gaierror:\n sys.exit(1)\n")
        p = h.run_cmd(self.prefix() + [sys.executable, "-c", code, addr])
        return p.returncode == 1

    def kill_now(self):
        p = h.run_cmd(["ip", "netns", "pids", self.name])
        for pid in p.stdout.split():
            try:
                os.kill(int(pid), 9)
            except (OSError, ValueError):
                pass
        h.run_cmd(["ip", "netns", "del", self.name])
        h._untrack(self)


class NsProsody(h.Prosody):
    """The harness's Prosody, run inside a Netns."""

    def __init__(self, tmpdir, ns, host):
        self.ns = ns
        super().__init__(tmpdir, host=host)

    def start(self, timeout=15.0):
        h.show_log("prosody log", self.log_path)
        self.proc = h._popen(self.ns.prefix() + [self.prosody, "-F",
                                                 "--config", self.config],
                             self.console_path, cwd=self.dir)
        h._track(self)


class NsGateway(h.Gateway):
    def __init__(self, tmpdir, server, ns, **kw):
        self.ns = ns
        super().__init__(tmpdir, server, **kw)

    def argv(self):
        return self.ns.prefix() + super().argv()


def default_host_links(addrs, server_host, refused):
    """In a namespace with addrs on lo, where AI_ADDRCONFIG refuses the
    loopback address refused, a gateway without component.host links up
    with a Prosody listening on server_host only."""
    ns = Netns(addrs)
    try:
        assert ns.addrconfig_refuses(refused), \
            "the namespace does not make AI_ADDRCONFIG refuse %s" % refused
        d = h.subdir("default-host")
        srv = NsProsody(d, ns, server_host)
        srv.start()
        text = h.gateway_conf(srv, d, reconnect_min=0.2, reconnect_max=1.0)
        assert '  host = "%s";\n' % server_host in text
        text = text.replace('  host = "%s";\n' % server_host, "")
        gw = NsGateway(d, srv, ns, conf_text=text)
        gw.start()
        gw.wait_log(LINK_UP % (re.escape(srv.component_domain),
                               srv.component_port), 15)
        for m in gw.matches(r"component: connect failed (?P<rest>.*)"):
            assert re.search(r'address=\S+ port=%d error="[A-Za-z][^"]+"'
                             % srv.component_port, m.group("rest")), \
                "a failed connect without address, port or words: %r" \
                % m.group(0)
        assert not gw.matches(r"code=-?\d"), gw.log_text()
        gw.stop_clean(2)
        srv.stop()
    finally:
        ns.kill_now()


def default_host_ipv6_only():
    """A host whose only non-loopback addresses are IPv6 (Yggdrasil, a
    namespace like the bridge tests'): 127.0.0.1 cannot be used, the
    default component.host reaches the server on ::1."""
    default_host_links(["200:aaaa::1/128"], "::1", "127.0.0.1")


def default_host_ipv4_only():
    """A host without a non-loopback IPv6 address: the default
    component.host reaches the server on 127.0.0.1."""
    default_host_links(["10.200.0.1/32"], "127.0.0.1", "::1")


TESTS = [
    ("default component.host on an IPv6-only host", default_host_ipv6_only),
    ("default component.host on an IPv4-only host", default_host_ipv4_only),
    ("SIGTERM while connecting to a silent server: exit in 2 s",
     sigterm_connecting_silent),
    ("SIGTERM in backoff after a refused connect: exit in 2 s",
     sigterm_backoff),
]

if __name__ == "__main__":
    h.run(h.both_servers(SCENARIOS) + TESTS)
