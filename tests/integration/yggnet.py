"""Real Yggdrasil for tests: two `yggdrasil` daemons (Debian's 0.4.7) in two
network namespaces joined by a veth pair, a third namespace with no
Yggdrasil at all, and a Barev peer on node B that behaves like the Pascal
library (it admits one nick per source address).

    namespace A  -- veth (fdXX::1 <-> fdXX::2) --  namespace B
    yggdrasil A (listens tcp://[fdXX::1]:PORT)     yggdrasil B (peers to A)
    the test script itself (re-executed here):     the Barev peers (their
    Prosody on ::1, the gateway, slixmpp users      sockets are created by
                                                    threads that entered B)
    namespace C: only lo (no Yggdrasil).

main(tests) is the entry point, like barevnet.main: the outer process
(root namespace) creates the three namespaces and the veth pair, re-executes
the script inside A (`ip netns exec A python3 SCRIPT`), then kills whatever
is left in the namespaces by PID and deletes them (the veth pair and the
tun devices go with them), on every exit path. The daemons are started by
the script inside A (YggNet.start()), node A first: if both start at once
B's dial is retried only after 60 s.

Standard library only (plus harness and barevnet). Environment besides
harness.py's: YGGDRASIL (default /usr/sbin/yggdrasil), YGGDRASILCTL
(default /usr/sbin/yggdrasilctl).
"""

import ctypes
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import barevnet as bn  # noqa: E402

YGGDRASIL = os.environ.get("YGGDRASIL", "/usr/sbin/yggdrasil")
YGGDRASILCTL = os.environ.get("YGGDRASILCTL", "/usr/sbin/yggdrasilctl")

ENV = "YGGNET"            # JSON with the names chosen by the outer process
CLONE_NEWNET = 0x40000000


# --- addresses ---------------------------------------------------------------

def pton(a):
    return socket.inet_pton(socket.AF_INET6, a)


def canon(a):
    """RFC 5952 text of an IPv6 address."""
    return socket.inet_ntop(socket.AF_INET6, pton(a))


def same_addr(a, b):
    try:
        return pton(a) == pton(b)
    except (OSError, TypeError, ValueError):
        return False


def prefix64(a):
    """The /64 prefix of an address or of "prefix/64" text, as 8 bytes."""
    return pton(a.split("/")[0])[:8]


def in_subnet(addr, subnet):
    return pton(addr)[:8] == prefix64(subnet)


def subnet_addr(subnet, low):
    """The address of subnet ("300:...::/64") whose low 64 bits are low."""
    return socket.inet_ntop(socket.AF_INET6,
                            prefix64(subnet) + low.to_bytes(8, "big"))


IPV6_RE = re.compile(r"(?<![0-9A-Za-z:])([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4})"
                     r"{2,7})(?:/(\d+))?")


def ipv6_tokens(text):
    """[(address, prefix length or None)] of the IPv6 literals in text."""
    out = []
    for m in IPV6_RE.finditer(text):
        try:
            pton(m.group(1))
        except OSError:
            continue
        out.append((m.group(1), int(m.group(2)) if m.group(2) else None))
    return out


def jids_in(text):
    """[(nick, address)] of the nick@ipv6 in text."""
    out = []
    for m in re.finditer(r"([^\s@<>\"'(]+)@([0-9A-Fa-f:]{2,})", text or ""):
        for cand in (m.group(2), m.group(2).rstrip(":")):
            try:
                pton(cand)
            except OSError:
                continue
            out.append((m.group(1), cand))
            break
    return out


# --- network namespaces ------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(ns):
    fd = os.open("/var/run/netns/%s" % ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (ns, os.strerror(e)))
    finally:
        os.close(fd)


def in_ns(ns, fn, *args):
    """fn(*args) run by a thread that entered network namespace ns (a
    socket created there stays in ns whoever uses it afterwards)."""
    box = {}

    def go():
        try:
            _setns(ns)
            box["v"] = fn(*args)
        except BaseException as e:  # handed to the caller
            box["e"] = e
    t = threading.Thread(target=go, name="in %s" % ns, daemon=True)
    t.start()
    t.join(30)
    if "e" in box:
        raise box["e"]
    if t.is_alive():
        raise AssertionError("a thread in namespace %s is stuck" % ns)
    return box.get("v")


def ns_socket(ns):
    """A TCP/IPv6 socket of namespace ns."""
    return in_ns(ns, socket.socket, socket.AF_INET6, socket.SOCK_STREAM)


def ip(*args, stdin=None, check=True):
    p = subprocess.run(["ip"] + list(args), input=stdin, capture_output=True,
                       text=True, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError("ip %s: %s" % (" ".join(args),
                                            (p.stderr or p.stdout).strip()))
    return p


def connect(ns, src, dst, port, label=None, timeout=3.0, freebind=False):
    """A barevnet.Conn from [src] (bound; src None: the kernel's choice) in
    namespace ns to [dst]:port."""
    s = ns_socket(ns)
    try:
        if freebind:
            s.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND
        if src is not None:
            s.bind((src, 0))
        s.settimeout(timeout)
        s.connect((dst, port))
    except BaseException:
        s.close()
        raise
    return bn.Conn(s, label or "%s->[%s]:%d" % (src, dst, port))


def tcp_reaches(src_ns, src, dst_ns, dst, timeout=10.0):
    """Wait until a TCP connection from [src] in src_ns reaches [dst] in
    dst_ns (a listener of ours there); seconds it took."""
    t0 = time.monotonic()
    lst = ns_socket(dst_ns)
    try:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((dst, 0))
        lst.listen(8)
        port = lst.getsockname()[1]
        last = None
        while time.monotonic() - t0 < timeout:
            try:
                c = connect(src_ns, src, dst, port, timeout=1.0)
                c.close()
                return time.monotonic() - t0
            except OSError as e:
                last = e
                time.sleep(0.1)
        raise AssertionError("[%s] in %s does not reach [%s] in %s over "
                             "Yggdrasil within %.0fs: %s"
                             % (src, src_ns, dst, dst_ns, timeout, last))
    finally:
        lst.close()


# --- one yggdrasil daemon ----------------------------------------------------

class YggNode:
    """`yggdrasil -useconffile` in namespace ns, admin socket in its own
    directory, no multicast, a tun device ("auto")."""

    def __init__(self, name, ns, listen=(), peers=()):
        h.require_program(YGGDRASIL)
        h.require_program(YGGDRASILCTL)
        if not os.path.exists("/dev/net/tun"):
            raise h.Unavailable("/dev/net/tun is missing (yggdrasil needs it)")
        self.name = name
        self.ns = ns
        self.dir = h.subdir("ygg-%s" % name)
        self.admin_socket = os.path.join(self.dir, "admin.sock")
        self.conf_path = os.path.join(self.dir, "yggdrasil.json")
        self.log_path = os.path.join(self.dir, "yggdrasil.log")
        p = h.run_cmd([YGGDRASIL, "-genconf", "-json"])
        if p.returncode != 0:
            raise AssertionError("yggdrasil -genconf -json: %s" % p.stderr)
        conf = json.loads(p.stdout)
        conf["AdminListen"] = "unix://" + self.admin_socket
        conf["MulticastInterfaces"] = []
        conf["IfName"] = "auto"
        conf["Listen"] = list(listen)
        conf["Peers"] = list(peers)
        with open(self.conf_path, "w") as f:
            json.dump(conf, f, indent=2)
        self.proc = None
        self.address = None
        self.subnet = None     # "3xx:...::/64"

    def start(self, timeout=10.0):
        h.show_log("yggdrasil %s log" % self.name, self.log_path)
        self.proc = h._popen(["ip", "netns", "exec", self.ns, YGGDRASIL,
                              "-useconffile", self.conf_path], self.log_path)
        h._track(self)
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("yggdrasil %s exited with status %s: %s"
                                     % (self.name, self.proc.returncode,
                                        " | ".join(h.tail(self.log_path, 5))))
            if os.path.exists(self.admin_socket):
                try:
                    me = self.get_self()
                    self.address, self.subnet = me["address"], me["subnet"]
                    break
                except AssertionError as e:
                    last = e
            if time.monotonic() > deadline:
                raise AssertionError("yggdrasil %s: no answer on its admin "
                                     "socket within %.0fs (%s)"
                                     % (self.name, timeout, last))
            time.sleep(0.05)
        # Its tun carries the address once it is configured.
        h.wait_until(lambda: pton(self.address) in self.tun_addresses(),
                     timeout, "yggdrasil %s's tun to carry %s"
                     % (self.name, self.address))
        return self

    def get_self(self):
        """yggdrasilctl's getSelf answer (dict with address and subnet)."""
        p = h.run_cmd([YGGDRASILCTL, "-json", "-endpoint",
                       "unix://" + self.admin_socket, "getSelf"], timeout=10)
        if p.returncode != 0:
            raise AssertionError("yggdrasilctl getSelf (%s): %s%s"
                                 % (self.name, p.stdout, p.stderr))
        try:
            d = json.loads(p.stdout)
        except ValueError:
            raise AssertionError("yggdrasilctl getSelf: not JSON: %r"
                                 % p.stdout)
        if "response" in d:
            d = d["response"]
        if "address" not in d or "subnet" not in d:
            raise AssertionError("yggdrasilctl getSelf: %r" % d)
        return d

    def tun_addresses(self):
        p = ip("-n", self.ns, "-j", "-6", "addr", "show", check=False)
        out = set()
        try:
            for link in json.loads(p.stdout or "[]"):
                for a in link.get("addr_info", []):
                    out.add(pton(a["local"]))
        except (ValueError, KeyError, OSError):
            pass
        return out

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            h._stop_popen(self.proc, signal.SIGTERM, 5)
            h._popen_pids.discard(self.proc.pid)
        self.proc = None
        h._untrack(self)

    kill_now = stop


# --- the network -------------------------------------------------------------

class YggNet:
    """The two nodes, started once. A's subnet gets the AnyIP route (every
    address of it is local in A); B's lo gets extra addresses of B's subnet
    (extra_b_addresses, for peers that need one of their own)."""

    def __init__(self):
        cfg = json.loads(os.environ[ENV])
        self.ns_a, self.ns_b, self.ns_c = cfg["a"], cfg["b"], cfg["c"]
        self.veth_a, self.veth_b = cfg["veth_a_addr"], cfg["veth_b_addr"]
        self.a = self.b = None
        self.extra_b = []
        self.route = False

    def start(self, n_extra_b=4):
        port = 23000 + int.from_bytes(os.urandom(2), "big") % 20000
        self.a = YggNode("A", self.ns_a,
                         listen=["tcp://[%s]:%d" % (self.veth_a, port)])
        self.a.start()
        _wait_file(self.a.log_path, r"listener started", 5)
        self.b = YggNode("B", self.ns_b,
                         peers=["tcp://[%s]:%d" % (self.veth_a, port)])
        self.b.start()
        for i in range(1, n_extra_b + 1):
            a = subnet_addr(self.b.subnet, 0x5000 + i)
            ip("-n", self.ns_b, "addr", "add", "%s/128" % a, "dev", "lo",
               "nodad")
            self.extra_b.append(a)
        self.add_route()
        if not self.has_route():
            raise AssertionError("the AnyIP route for %s is not in A's local "
                                 "table" % self.a.subnet)
        # Both ways, from the node addresses and from B's extra ones.
        tcp_reaches(self.ns_b, self.b.address, self.ns_a, self.a.address)
        tcp_reaches(self.ns_a, self.a.address, self.ns_b, self.b.address)
        tcp_reaches(self.ns_b, self.extra_b[0], self.ns_a, self.a.address)
        return self

    def add_route(self):
        if not self.route:
            ip("-n", self.ns_a, "-6", "route", "add", "local", self.a.subnet,
               "dev", "lo")
            self.route = True

    def del_route(self):
        if self.route:
            ip("-n", self.ns_a, "-6", "route", "del", "local", self.a.subnet,
               "dev", "lo", "table", "local")
            self.route = False

    def has_route(self):
        """Whether namespace A has a local route for exactly A's /64."""
        p = ip("-n", self.ns_a, "-6", "route", "show", "table", "local",
               "type", "local", check=False)
        for line in p.stdout.splitlines():
            for tok in line.split():
                if tok.endswith("/64") and \
                        prefix64(tok) == prefix64(self.a.subnet):
                    return True
        return False

    def logs(self):
        return [("yggdrasil %s log" % n.name, n.log_path)
                for n in (self.a, self.b) if n is not None]

    def close(self):
        for n in (self.b, self.a):
            if n is not None:
                n.stop()


def _wait_file(path, regex, timeout):
    deadline = time.monotonic() + timeout
    rx = re.compile(regex)
    while True:
        try:
            with open(path, "rb") as f:
                if rx.search(f.read().decode("utf-8", "replace")):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no /%s/ in %s within %.0fs"
                                 % (regex, path, timeout))
        time.sleep(0.05)


# --- a Barev peer with the Pascal library's admission rule -------------------

class PascalPeer:
    """A Barev peer in namespace ns at jid (nick@address), run by its own
    thread (which entered ns, so every socket it creates lives there).

    Admission, as the Pascal library does it: an inbound stream is matched
    by its SOURCE ADDRESS first; the first nick seen from an address is
    remembered for good, and a stream from that address with another nick
    (compared without case) is closed without a byte; like the library, such
    a refused attempt also kills the conversation the address already has.
    Admitted streams get our header and <presence/>. Every ping (both
    namespaces, including the gateway's delivery acks) is answered. A
    conversation is keyed by the remote JID (nick@canonical address); a new
    inbound stream replaces the old one of the same JID."""

    def __init__(self, ns, jid):
        self.ns = ns
        self.jid = jid
        self.nick, self.addr = jid.split("@", 1)
        self.nicks = {}          # source address bytes -> nick (lower)
        self.conv = {}           # remote JID -> Conn
        self.conns = []
        self.opens = []          # (time, "in"/"out", source, remote JID)
        self.refusals = []       # (time, source, nick, remembered nick)
        self.accepts = []        # (time, source, dialled address)
        self.received = []       # (remote JID, Conn, element)
        self.events = []
        self.listener = None
        self.port = None
        self.cond = threading.Condition()
        self.sel = selectors.DefaultSelector()
        self._tasks = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self.error = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name="peer %s" % jid)
        self.thread.start()
        if not self._ready.wait(5) or self.error:
            raise AssertionError("%s: peer thread: %s" % (jid, self.error))

    # --- from the test ---

    def _sync(self, fn, *args, timeout=10.0):
        box = {}
        done = threading.Event()

        def go():
            try:
                box["v"] = fn(*args)
            except BaseException as e:
                box["e"] = e
            done.set()
        with self.cond:
            self._tasks.append((go, ()))
        self._wake_w.send(b"x")
        if not done.wait(timeout):
            raise AssertionError("%s: peer thread stuck" % self.jid)
        if "e" in box:
            raise box["e"]
        return box.get("v")

    def listen(self, port):
        def go():
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.addr, port))
            s.listen(64)
            s.setblocking(False)
            self.listener = s
            self.sel.register(s, selectors.EVENT_READ, "listen")
        self._sync(go)
        self.port = port
        return port

    def dial(self, host, port, to_jid):
        """Dial [host]:port and open a stream to to_jid; returns the Conn
        (the conversation is keyed by to_jid once the answer arrives)."""
        def go():
            c = connect(self.ns, self.addr, host, port,
                        "%s->%s" % (self.jid, to_jid))
            c.direction, c.buddy, c.opened = "out", key_of(to_jid), False
            self.conns.append(c)
            self.sel.register(c.sock, selectors.EVENT_READ, c)
            c.send(bn.header(self.jid, to_jid))
            self._event("dialled", to_jid)
            return c
        return self._sync(go)

    def hang_up(self, buddy):
        """Close buddy's conversation the library's way: a bare TCP close."""
        buddy = key_of(buddy)

        def go():
            c = self.conv.get(buddy)
            if c is not None:
                self._drop(c, "hung up by the test")
        self._sync(go)

    def send(self, buddy, data):
        if isinstance(data, str):
            data = data.encode()
        buddy = key_of(buddy)

        def go():
            c = self.conv.get(buddy)
            if c is None or c.closed:
                raise AssertionError("%s: no conversation with %s (have: %s)"
                                     % (self.jid, buddy, sorted(self.conv)))
            c.send(data)
        self._sync(go)

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.error:
                    raise AssertionError("%s: peer thread failed: %s"
                                         % (self.jid, self.error))
                v = pred()
                if v is not None and v is not False:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no %s within %.1fs; peer "
                                         "events: %s" % (self.jid, what,
                                                         timeout,
                                                         self.describe()))
                self.cond.wait(min(left, 0.2))

    def conversation(self, buddy):
        """The open Conn of buddy's conversation, or None."""
        with self.cond:
            c = self.conv.get(key_of(buddy))
            return c if c is not None and not c.closed else None

    def wait_conversation(self, buddy, timeout=15.0, since=0.0):
        """The conversation with buddy, opened after time since."""
        buddy = key_of(buddy)

        def find():
            c = self.conv.get(buddy)
            if c is not None and not c.closed and c.opened_at >= since:
                return c
            return None
        return self.wait(find, timeout, "conversation with %s" % buddy)

    def wait_message(self, buddy, body, timeout=10.0):
        buddy = key_of(buddy)

        def find():
            for i, (b, c, el) in enumerate(self.received):
                if b == buddy and bn.is_message(el, body):
                    del self.received[i]
                    return (c, el)
            return None
        return self.wait(find, timeout, "message %r from %s" % (body, buddy))

    def describe(self):
        t0 = self.events[0][0] if self.events else 0
        return "; ".join("%+.2fs %s %s" % (t - t0, w, d)
                         for t, w, d in self.events[-40:]) or "(none)"

    def close(self):
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
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
            _setns(self.ns)
        except BaseException as e:
            self.error = "setns: %s" % e
            self._ready.set()
            return
        self._ready.set()
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
                            self._readable(key.data)
                with self.cond:
                    tasks, self._tasks = self._tasks, []
                for fn, args in tasks:
                    with self.cond:
                        fn(*args)
                with self.cond:
                    self.cond.notify_all()
        except BaseException as e:
            with self.cond:
                self.error = "%s: %s" % (type(e).__name__, e)
                self.cond.notify_all()

    def _accept(self):
        try:
            s, peer = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        c = bn.Conn(s, "%s<-%s" % (self.jid, peer[0]))
        c.direction, c.buddy, c.opened = "in", None, False
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns.append(c)
        self.accepts.append((time.monotonic(), c.remote_addr, c.local_addr))
        self.sel.register(s, selectors.EVENT_READ, c)
        self._event("accepted", c.remote_addr)

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
        self._event("closed", "%s %s: %s" % (c.direction, c.buddy, why))

    def _readable(self, c):
        c.pump()
        if c.header_attrs is not None and not c.opened:
            if not self._on_header(c):
                return
        if c.opened:
            for i, el in c.untaken():
                c.taken.add(i)
                if bn.ping_ns(el):
                    c.send(bn.pong(el, self.jid, c.buddy or ""))
                    continue
                self.received.append((c.buddy, c, el))
                self._event("stanza", "%s %s" % (c.buddy, bn.name_of(el)))
        if c.stream_end or c.eof:
            self._drop(c, "stream end" if c.stream_end else "eof")

    def _on_header(self, c):
        c.opened = True
        if c.direction == "out":
            self.conv[c.buddy] = c
            self.opens.append((time.monotonic(), "out", c.remote_addr,
                               c.buddy))
            self._event("open", "out %s" % c.buddy)
            c.send(b"<presence/>")
            return True
        frm = c.header_attrs.get("from", "")
        nick = frm.split("@", 1)[0]
        src = pton(c.remote_addr)
        known = self.nicks.get(src)
        if known is not None and known != nick.lower():
            self.refusals.append((time.monotonic(), c.remote_addr, nick,
                                  known))
            self._drop(c, "refused: nick %r from %s, which is %r's address"
                       % (nick, c.remote_addr, known))
            # The library's habit: the failed attempt kills the
            # conversation that address already had.
            for b, old in list(self.conv.items()):
                if old.remote_addr and pton(old.remote_addr) == src:
                    self._drop(old, "killed by a refused attempt")
            return False
        self.nicks[src] = nick.lower()
        buddy = key_of("%s@%s" % (nick, c.remote_addr))
        old = self.conv.get(buddy)
        if old is not None and old is not c:
            self._drop(old, "replaced by a newer inbound stream")
        c.buddy = buddy
        self.conv[buddy] = c
        self.opens.append((time.monotonic(), "in", c.remote_addr, frm))
        self._event("open", "in %s (from=%s)" % (buddy, frm))
        c.send(bn.header(self.jid, frm) + b"<presence/>")
        return True


def key_of(jid):
    """A conversation key: lower-case nick @ canonical address."""
    nick, addr = jid.split("@", 1)
    return "%s@%s" % (nick.lower(), canon(addr))


# --- running a script inside namespace A -------------------------------------

def _ns_pids(ns):
    p = ip("netns", "pids", ns, check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _delete_ns(ns):
    for _ in range(5):
        pids = _ns_pids(ns)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not pids:
            break
        time.sleep(0.2)
    ip("netns", "del", ns, check=False)


def _cannot_run():
    if os.geteuid() != 0:
        return "needs root (network namespaces, yggdrasil)"
    for prog in ("ip", YGGDRASIL, YGGDRASILCTL):
        try:
            h.require_program(prog)
        except h.Unavailable as e:
            return str(e)
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    return None


def _setup(cfg):
    a, b, c = cfg["a"], cfg["b"], cfg["c"]
    for ns in (a, b, c):
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    ip("link", "add", cfg["veth_a"], "netns", a, "type", "veth", "peer",
       "name", cfg["veth_b"], "netns", b)
    ip("-n", a, "addr", "add", cfg["veth_a_addr"] + "/64", "dev",
       cfg["veth_a"], "nodad")
    ip("-n", b, "addr", "add", cfg["veth_b_addr"] + "/64", "dev",
       cfg["veth_b"], "nodad")
    ip("-n", a, "link", "set", cfg["veth_a"], "up")
    ip("-n", b, "link", "set", cfg["veth_b"], "up")


class _Interrupted(Exception):
    pass


def _interrupt(signum, _frame):
    raise _Interrupted("signal %d" % signum)


def main(tests):
    """Run tests (harness Test objects) inside namespace A of a fresh
    A/B/C setup; prints TAP and exits."""
    if os.environ.get(ENV):
        h.run(tests)
        return
    reason = _cannot_run()
    if reason:
        def fail():
            raise h.Unavailable(reason)
        h.run([h.Test(t.name, fail, timeout=10) for t in tests])
        return
    tag = os.urandom(4).hex()
    net = os.urandom(2).hex()
    cfg = {"a": "ygga-" + tag, "b": "yggb-" + tag, "c": "yggc-" + tag,
           "veth_a": "yva" + tag, "veth_b": "yvb" + tag,
           "veth_a_addr": "fd%s:%s::1" % (net[:2], net),
           "veth_b_addr": "fd%s:%s::2" % (net[:2], net)}
    script = os.path.abspath(sys.argv[0])
    limit = int(os.environ.get("TEST_TOTAL_TIMEOUT", "300")) + 30
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _interrupt)
    rc, proc = 1, None
    try:
        try:
            _setup(cfg)
        except AssertionError as e:
            msg = "cannot set up the namespaces: %s" % e

            def fail():
                raise h.Unavailable(msg)
            for ns in (cfg["a"], cfg["b"], cfg["c"]):
                _delete_ns(ns)
            h.run([h.Test(t.name, fail, timeout=10) for t in tests])
            return
        env = dict(os.environ, **{ENV: json.dumps(cfg)})
        sys.stdout.flush()
        proc = subprocess.Popen(["ip", "netns", "exec", cfg["a"],
                                 sys.executable, script], env=env,
                                start_new_session=True)
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
        for ns in (cfg["a"], cfg["b"], cfg["c"]):
            _delete_ns(ns)
    sys.exit(rc)
