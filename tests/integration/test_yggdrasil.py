"""One Yggdrasil address per user, found automatically (issue 6), over REAL
Yggdrasil.

Two yggdrasil daemons (Debian's 0.4.7) run in network namespaces A and B,
joined by a veth pair (see yggnet.py). In A: a private Prosody on ::1 and
the gateway with barev.address_mode = "per-user", barev.admin_socket = A's
admin socket (it finds A's address and /64 itself), listening on
[::]:GW_PORT, with the AnyIP route for A's /64. In B: a Barev peer
pascal@<B's address> that, like the Pascal library, admits only one nick
per source address; raw peers from other addresses of B's /64.

Scenarios:
 1. detection: `barev-gateway -t` finds A's address and subnet from the
    admin socket; from the interfaces when the admin socket is wrong; says
    in one line what it tried in a namespace without Yggdrasil.
 2. alice and bob get different addresses of A's /64 (welcome message,
    "address" command); both talk to pascal at the same time.
 3. a restart keeps each user's address (command, and the source of the
    gateway's dial).
 4. an address of the /64 that is nobody's is refused; a stream `to` that
    disagrees with the dialled address is refused; a user's address is
    reachable only while they are registered.
 5. without the AnyIP route the gateway exits at start naming
    `ip -6 route add local`.
 6. the ad-hoc command own-address moves a user registered while the
    gateway shared one address to an address of their own.

Needs root, /dev/net/tun, yggdrasil, prosody, Debian's /usr/bin/python3:
    /usr/bin/python3 tests/integration/test_yggdrasil.py
TEST_ONLY=REGEX, TEST_TIMES=1, TEST_KEEP=1 as in harness.py.
"""

import os
import re
import shlex
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import barevnet as bn  # noqa: E402
import yggnet as yn  # noqa: E402
from yggnet import same_addr, in_subnet, canon  # noqa: E402

COMPONENT = h.COMPONENT
GW_PORT = 5299          # the gateway listens on [::]:GW_PORT in namespace A
PEER_PORT = 1337        # pascal listens here (the gateway's default_port)
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

NS_REGISTER = "jabber:iq:register"
NS_GATEWAY = "jabber:iq:gateway"
NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_STREAMS = "http://etherx.jabber.org/streams"


def gateway_conf(srv, statedir, admin_socket, mode="per-user", extra=""):
    return """\
# test_yggdrasil.py: per-user addresses, detected from the admin socket
component = {{
  jid = "{jid}";
  secret = "{secret}";
  host = "{host}";
  port = {port};
  reconnect_min = 0.3;
  reconnect_max = 1.0;
}};
barev = {{
  address_mode = "{mode}";
  admin_socket = "{admin}";
  listen = [ "[::]:{gwport}" ];
  default_port = {pport};
  redial_min = 0.5;
  redial_max = 2.0;
  connect_timeout = 3.0;
  handshake_timeout = 5.0;
  {extra}
}};
limits = {{ inbound_per_minute = 6000; }};
storage = {{ path = "{statedir}/state.db"; }};
log = {{ level = "debug"; syslog = false; }};
access = {{ domains = [ "{domain}" ]; }};
""".format(jid=srv.component_domain if srv else COMPONENT,
           secret=srv.secret if srv else h.SECRET,
           host=srv.host if srv else "::1",
           port=srv.component_port if srv else 5347,
           mode=mode, admin=admin_socket, gwport=GW_PORT, pport=PEER_PORT,
           statedir=statedir, domain="localhost", extra=extra)


def check_conf(path, netns=None):
    """`barev-gateway -t -c path` (in netns if given): (status, output)."""
    wrapper = shlex.split(os.environ.get("TEST_WRAPPER", ""))
    argv = wrapper + [h.require_gateway(), "-t", "-c", path]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    p = h.run_cmd(argv, timeout=30)
    out = (p.stdout or "") + (p.stderr or "")
    if h.SANITIZER_RE.search(out):
        raise AssertionError("sanitizer report from %s:\n%s"
                             % (" ".join(argv), out))
    return p.returncode, out


def addr_line(out):
    """The line of -t's output that reports the address and subnet."""
    for line in out.splitlines():
        if re.search(r"\baddress\b", line) and re.search(r"\bsubnet\b", line):
            return line
    raise AssertionError("no line with the address and the subnet in:\n%s"
                         % out)


def check_found(line, node):
    """line names node's address and exactly its /64."""
    toks = yn.ipv6_tokens(line)
    if not any(same_addr(a, node.address) and plen is None
               for a, plen in toks):
        raise AssertionError("A's address %s is not in: %s"
                             % (node.address, line))
    if not any(plen == 64 and yn.prefix64(a) == yn.prefix64(node.subnet)
               and yn.pton(a)[8:] == bytes(8) for a, plen in toks):
        raise AssertionError("A's subnet %s is not in: %s"
                             % (node.subnet, line))


# --- the shared world: the network, Prosody, the gateway, users, pascal ------

class World:
    def __init__(self):
        self.net = None
        self.srv = None
        self.gw = None
        self.dir = None
        self.statedir = None
        self.clients = {}
        self.addr = {}        # user -> their Barev address (welcome message)
        self.cjid = {}        # user -> pascal's contact JID for them
        self.peer = None
        self.raw = []
        self.gw6 = None       # scenario 6's gateway (a state of its own)

    def logs(self):
        out = []
        if self.net is not None:
            out += self.net.logs()
        if self.srv is not None:
            out.append(("prosody log", self.srv.log_path))
        if self.gw is not None:
            out.append(("gateway log", self.gw.log_path))
        if self.gw6 is not None:
            out.append(("gateway (scenario 6) log", self.gw6.log_path))
        return out

    def network(self):
        if self.net is None:
            net = yn.YggNet()
            self.net = net
            net.start()
            self.dir = h.subdir("world")
            self.statedir = os.path.join(self.dir, "state")
            os.makedirs(self.statedir)
        for label, path in self.logs():
            h.show_log(label, path)
        return self.net

    def server(self):
        self.network()
        if self.srv is None:
            self.srv = h.Prosody(h.subdir("prosody"), host="::1")
        if not self.srv.alive():
            self.srv.start()
            for u, p in PASSWORDS.items():
                self.srv.register(u, p)
        h.show_log("prosody log", self.srv.log_path)
        return self.srv

    def conf_text(self):
        return gateway_conf(self.server(), self.statedir,
                            self.network().a.admin_socket)

    def new_gateway(self, conf_text=None):
        """A gateway process (not started) with the per-user configuration
        and the world's state directory (or conf_text)."""
        return h.Gateway(self.dir, self.server(),
                         conf_text=conf_text or self.conf_text(), args=())

    def gateway(self):
        """The gateway, running and linked up."""
        if self.gw is not None and not self.gw.alive():
            if not self.gw.stopped:
                gw, self.gw = self.gw, None
                h._popen_pids.discard(gw.proc.pid)
                raise AssertionError("the gateway died (status %s); last "
                                     "lines:\n%s" % (
                                         gw.proc.returncode,
                                         "\n".join(h.tail(gw.log_path, 15))))
            self.gw = None
        if self.gw is None:
            srv = self.server()
            gw = self.new_gateway()
            gw.start()
            h.show_log("gateway log", gw.log_path)
            try:
                gw.wait_log(h.LINK_UP_RE % (re.escape(COMPONENT),
                                            srv.component_port), 10)
            except BaseException:
                gw.kill_now()
                raise
            self.gw = gw
        return self.gw

    def stop_gateway(self):
        if self.gw is not None and self.gw.alive():
            self.gw.stop_clean(10)
        self.gw = None

    def client(self, name):
        c = self.clients.get(name)
        if c is None or not c.connected():
            if c is not None:
                c.disconnect()
            srv = self.server()
            # Subscription requests are answered by the test (register,
            # add_contact), never automatically.
            c = h.Client("%s@%s" % (name, srv.domain), PASSWORDS[name], srv,
                         auto_authorize=None, auto_subscribe=False)
            c.send_presence()
            self.clients[name] = c
        return c

    def pascal(self):
        if self.peer is None:
            net = self.network()
            self.peer = yn.PascalPeer(net.ns_b, "pascal@%s" % net.b.address)
            self.peer.listen(PEER_PORT)
        return self.peer

    def close(self):
        errors = []
        for c in self.clients.values():
            c.disconnect()
        self.clients.clear()
        for r in self.raw:
            r.close()
        if self.peer is not None:
            self.peer.close()
        try:
            self.stop_gateway()
        except BaseException as e:
            errors.append("gateway: %s" % e)
            if self.gw is not None:
                self.gw.kill_now()
        if self.gw6 is not None:
            self.gw6.kill_now()
        if self.srv is not None:
            try:
                self.srv.stop()
            except BaseException as e:
                errors.append("prosody: %s" % e)
                self.srv.kill_now()
        if self.net is not None:
            self.net.close()
        self.net = self.srv = self.gw = self.peer = None
        if errors:
            raise AssertionError("; ".join(errors))


W = World()


# --- XMPP helpers --------------------------------------------------------------

def gw_iq(c, payload, what):
    """c's iq set to the gateway; if it goes unanswered because the
    gateway died, say so (with its sanitizer report)."""
    try:
        return c.iq(COMPONENT, payload, type="set", timeout=10)
    except AssertionError as e:
        for gw in (W.gw, W.gw6):
            if gw is not None and gw.proc is not None and not gw.alive() \
                    and not gw.stopped:
                report = gw.sanitizer_report()
                log = gw.log_text().splitlines()
                frames = [l for l in log if re.match(r"\s+#\d+ ", l)][:8]
                raise AssertionError(
                    "%s: the gateway died (exit status %s) instead of "
                    "answering:\n%s\n%s\n(log: %s)"
                    % (what, gw.proc.returncode,
                       "\n".join(report[:3]), "\n".join(frames),
                       gw.log_path))
        raise AssertionError("%s: %s" % (what, e))


def the_address(text, nick, what):
    """The address of nick@ADDR in text (exactly one such JID)."""
    found = [a for n, a in yn.jids_in(text) if n.lower() == nick.lower()]
    if len(found) != 1:
        raise AssertionError("%s: expected one %s@<address>, got %r in: %r"
                             % (what, nick, found, text))
    return canon(found[0])


def register(name):
    """Registers name (nick = name) by XEP-0077; returns the address the
    welcome message gives."""
    c = W.client(name)
    since = len(c.received)
    r = gw_iq(c, '<query xmlns="%s"><username>%s</username></query>'
              % (NS_REGISTER, name), "%s registering" % name)
    if r["type"] != "result":
        raise AssertionError("%s: registration answered %s" % (name, h.show(r)))

    def welcome(s):
        return (s in c.received[since:] and s.name == "message"
                and s["from"].bare == COMPONENT
                and yn.jids_in(s["body"]))
    msg = c.wait_for(welcome, 10, "%s's welcome message" % name)
    # XEP-0100: the gateway asks for the user's presence; allow it.
    c.wait_for(lambda s: s in c.received[since:] and s.name == "presence"
               and s["type"] == "subscribe" and s["from"].bare == COMPONENT,
               10, "the gateway's subscription request to %s" % name)
    c.send_raw('<presence to="%s" type="subscribed"/>' % COMPONENT)
    c.send_raw('<presence to="%s" type="subscribe"/>' % COMPONENT)
    return the_address(msg["body"], name, "%s's welcome message" % name)


def unregister(name):
    c = W.client(name)
    r = gw_iq(c, '<query xmlns="%s"><remove/></query>' % NS_REGISTER,
              "%s unregistering" % name)
    if r["type"] != "result":
        raise AssertionError("%s: unregistering answered %s"
                             % (name, h.show(r)))


def address_command(name):
    """The address the ad-hoc command "address" tells name."""
    c = W.client(name)
    cmd = ET.Element("{%s}command" % NS_COMMANDS, node="address",
                     action="execute")
    r = gw_iq(c, cmd, "%s's address command" % name)
    el = r.xml.find("{%s}command" % NS_COMMANDS)
    if r["type"] != "result" or el is None:
        raise AssertionError("%s: command address answered %s"
                             % (name, h.show(r)))
    text = " ".join((n.text or "") for n in el.iter("{%s}note" % NS_COMMANDS))
    if el.get("status") != "completed":
        raise AssertionError("%s: command address: %s" % (name, h.show(r)))
    return the_address(text, name, "%s's address command" % name)


def add_contact(name, barev_jid):
    """name adds barev_jid (XEP-0100 prompt, subscribe, available)."""
    c = W.client(name)
    r = gw_iq(c, '<query xmlns="%s"><prompt>%s</prompt></query>'
              % (NS_GATEWAY, barev_jid), "%s adding %s" % (name, barev_jid))
    jid = r.xml.find("{%s}query/{%s}jid" % (NS_GATEWAY, NS_GATEWAY))
    if r["type"] != "result" or jid is None or not jid.text:
        raise AssertionError("%s: prompt for %s answered %s"
                             % (name, barev_jid, h.show(r)))
    cj = jid.text
    since = len(c.received)
    c.send_raw('<presence to="%s" type="subscribe"/>' % cj)
    c.wait_for(lambda s: s in c.received[since:] and s.name == "presence"
               and s["type"] == "subscribe"
               and s["from"].bare.lower() == cj.lower(), 10,
               "%s's subscription request to %s" % (cj, name))
    c.send_raw('<presence to="%s" type="subscribed"/>' % cj)
    c.send_presence()
    return cj


def wait_xmpp_message(name, frm, body, timeout=15.0):
    c = W.client(name)
    return c.wait_for(lambda s: s.name == "message" and s["body"] == body
                      and s["from"].bare.lower() == frm.lower(), timeout,
                      "message %r from %s to %s" % (body, frm, name))


def chat(frm, to, body):
    return ('<message type="chat" from="%s" to="%s"><body>%s</body>'
            '</message>' % (frm, to, body))


def user_jid(name):
    return "%s@%s" % (name, W.addr[name])


def check_dial(conn, name, since_what):
    """conn (pascal's inbound stream) came from name's own address with
    from = name@that address."""
    if not same_addr(conn.remote_addr, W.addr[name]):
        raise AssertionError("%s: the gateway dialled pascal from %s, not "
                             "from %s's address %s" % (since_what,
                                                       conn.remote_addr, name,
                                                       W.addr[name]))
    frm = conn.header_attrs.get("from", "")
    nick, _, addr = frm.partition("@")
    if nick.lower() != name or not same_addr(addr, W.addr[name]):
        raise AssertionError("%s: stream from %r, expected %s"
                             % (since_what, frm, user_jid(name)))


def exchange(rounds, tag):
    """alice and bob write to pascal and pascal writes to both, all at the
    same time; every message arrives on the right pipe."""
    peer = W.pascal()
    sent = []
    for i in range(1, rounds + 1):
        for name in ("alice", "bob"):
            body = "%s %s to pascal #%d" % (tag, name, i)
            W.clients[name].send_message(W.cjid[name], body)
            sent.append(("to-peer", name, body))
        for name in ("alice", "bob"):
            body = "%s pascal to %s #%d" % (tag, name, i)
            peer.send(user_jid(name), chat(peer.jid, user_jid(name), body))
            sent.append(("to-user", name, body))
    for direction, name, body in sent:
        if direction == "to-peer":
            conn, _el = peer.wait_message(user_jid(name), body, 15)
            if not same_addr(conn.remote_addr, W.addr[name]):
                raise AssertionError("%r arrived on a pipe from %s, not from "
                                     "%s's address %s" % (body,
                                                          conn.remote_addr,
                                                          name, W.addr[name]))
        else:
            wait_xmpp_message(name, W.cjid[name], body, 15)


def no_refusals(peer):
    if peer.refusals:
        raise AssertionError("pascal (one nick per source address) refused: "
                             "%s; events: %s" % (peer.refusals,
                                                 peer.describe()))


def expect_refused(conn, what, timeout=8.0):
    """The gateway refuses conn's stream: closes it (with no byte, or after
    a stream error host-unknown), and never sends a stanza."""
    def settled():
        conn.pump()
        errs = [el for el in conn.items if bn.is_stream_error(el)]
        return conn.eof or conn.stream_end or bool(errs)
    conn.wait(settled, timeout, "%s: a refusal" % what)
    time.sleep(0.3)
    conn.pump()
    for el in conn.items:
        if bn.is_stream_error(el):
            cond = bn.stream_error_condition(el)
            if cond != "host-unknown":
                raise AssertionError("%s: stream error %s, expected "
                                     "host-unknown: %s" % (what, cond,
                                                           conn.dump()))
        else:
            raise AssertionError("%s: expected a refusal, the gateway sent "
                                 "a stanza: %s" % (what, conn.dump()))
    conn.close()


def raw_dial(src, dst, frm, to):
    """A raw stream from [src] (in B) to [dst]:GW_PORT: our header sent."""
    net = W.network()
    c = yn.connect(net.ns_b, src, dst, GW_PORT,
                   label="%s->%s at [%s]" % (frm, to, dst), timeout=5)
    W.raw.append(c)
    c.send(bn.header(frm, to))
    return c


# --- the scenarios -------------------------------------------------------------

def t_detection(_world):
    net = W.network()
    a = net.a
    d = h.subdir("detect")
    # (a) the admin socket
    path = os.path.join(d, "admin.conf")
    with open(path, "w") as f:
        f.write(gateway_conf(None, d, a.admin_socket))
    rc, out = check_conf(path)
    if rc != 0:
        raise AssertionError("-t with A's admin socket: status %d:\n%s"
                             % (rc, out))
    line = addr_line(out)
    check_found(line, a)
    if a.admin_socket not in line or "admin socket" not in line:
        raise AssertionError("-t does not say it asked the admin socket %s: "
                             "%s" % (a.admin_socket, line))
    # (b) a wrong admin socket, no barev.address: the interfaces (A's tun)
    missing = os.path.join(d, "no-such-dir", "yggdrasil.sock")
    path = os.path.join(d, "iface.conf")
    with open(path, "w") as f:
        f.write(gateway_conf(None, d, missing))
    rc, out = check_conf(path)
    if rc != 0:
        raise AssertionError("-t with a wrong admin socket in A: status %d:"
                             "\n%s" % (rc, out))
    line = addr_line(out)
    check_found(line, a)
    if not re.search(r"interface", line, re.I):
        raise AssertionError("-t does not say it found them on an interface:"
                             " %s" % line)
    # (c) a namespace without Yggdrasil: one line, what it tried
    rc, out = check_conf(path, netns=net.ns_c)
    lines = [l for l in out.splitlines() if l.strip()]
    if rc == 0:
        raise AssertionError("-t without Yggdrasil (per-user mode) exited 0:"
                             "\n%s" % out)
    if len(lines) != 1:
        raise AssertionError("-t without Yggdrasil: expected one line, got "
                             "%d:\n%s" % (len(lines), out))
    if missing not in lines[0] or not re.search(r"interface", lines[0], re.I):
        raise AssertionError("-t without Yggdrasil: the line does not name "
                             "the admin socket %s and the interfaces: %s"
                             % (missing, lines[0]))


def t_two_users(_world):
    net = W.network()
    W.gateway()
    subnet = net.a.subnet
    for name in ("alice", "bob"):
        W.client(name)
    for name in ("alice", "bob"):
        W.addr[name] = register(name)
    for name in ("alice", "bob"):
        a = W.addr[name]
        if not in_subnet(a, subnet):
            raise AssertionError("%s's address %s is not in A's subnet %s"
                                 % (name, a, subnet))
        if same_addr(a, net.a.address) or yn.pton(a)[8:] == bytes(8):
            raise AssertionError("%s's address %s is not a user address"
                                 % (name, a))
    if same_addr(W.addr["alice"], W.addr["bob"]):
        raise AssertionError("alice and bob got the same address %s"
                             % W.addr["alice"])
    for name in ("alice", "bob"):
        got = address_command(name)
        if not same_addr(got, W.addr[name]):
            raise AssertionError("%s: the address command says %s, the "
                                 "welcome message said %s"
                                 % (name, got, W.addr[name]))
    peer = W.pascal()
    for name in ("alice", "bob"):
        W.cjid[name] = add_contact(name, peer.jid)
    for name in ("alice", "bob"):
        c = peer.wait_conversation(user_jid(name), 20)
        check_dial(c, name, "first dial")
    exchange(3, "[s2]")
    no_refusals(peer)
    for name in ("alice", "bob"):
        if peer.conversation(user_jid(name)) is None:
            raise AssertionError("pascal's conversation with %s ended; "
                                 "events: %s" % (name, peer.describe()))
    # Now pascal hangs up and dials both itself, from its one address: each
    # inbound pipe is attributed by the address dialled. (Hanging up first
    # keeps clear of the gateway's race rule for a dial that crosses its
    # own.)
    dials = {}
    for name in ("alice", "bob"):
        peer.hang_up(user_jid(name))
        dials[name] = peer.dial(W.addr[name], GW_PORT, user_jid(name))
    for name, c in dials.items():
        peer.wait(lambda: peer.conversation(user_jid(name)) is c, 10,
                  "its own pipe to %s as the conversation" % user_jid(name))
        frm = c.header_attrs.get("from", "")
        if (frm.partition("@")[0].lower() != name
                or not same_addr(frm.partition("@")[2], W.addr[name])):
            raise AssertionError("pascal dialled %s and was answered as %r"
                                 % (user_jid(name), frm))
    exchange(2, "[s2 pascal dialled]")
    no_refusals(peer)
    for name, c in dials.items():
        if peer.conversation(user_jid(name)) is not c:
            raise AssertionError("pascal's own pipe to %s was replaced or "
                                 "closed; events: %s" % (name,
                                                         peer.describe()))


def t_restart(_world):
    if set(W.addr) != {"alice", "bob"} or set(W.cjid) != {"alice", "bob"}:
        raise AssertionError("needs scenario 2's users and contacts")
    peer = W.pascal()
    W.gateway()
    before = dict(W.addr)
    W.stop_gateway()
    t0 = time.monotonic()
    W.gateway()
    # The users are still logged in: tell the new process they are here.
    for name in ("alice", "bob"):
        W.client(name).send_presence()
    for name in ("alice", "bob"):
        got = address_command(name)
        if not same_addr(got, before[name]):
            raise AssertionError("%s's address changed over a restart: %s "
                                 "before, %s after" % (name, before[name],
                                                       got))
    for name in ("alice", "bob"):
        c = peer.wait_conversation(user_jid(name), 20, since=t0)
        check_dial(c, name, "dial after the restart")
    exchange(1, "[s3]")
    no_refusals(peer)


def t_unknown_refused(_world):
    if set(W.addr) != {"alice", "bob"}:
        raise AssertionError("needs scenario 2's users")
    net = W.network()
    W.gateway()
    src = net.extra_b[0]
    dave = "dave@%s" % src
    users = [yn.pton(a) for a in W.addr.values()]
    nobody = yn.subnet_addr(net.a.subnet, 0x0123456789abcdef)
    assert yn.pton(nobody) not in users
    # An address of the /64 that is nobody's, with a user's nick or not.
    expect_refused(raw_dial(src, nobody, dave, "nobody@%s" % nobody),
                   "a stream to nobody@%s" % nobody)
    expect_refused(raw_dial(src, nobody, dave, "alice@%s" % nobody),
                   "a stream to alice's nick at an address that is not hers "
                   "(%s)" % nobody)
    # The stream `to` must agree with the address dialled.
    expect_refused(raw_dial(src, W.addr["bob"], dave, user_jid("alice")),
                   "a stream to %s dialled at bob's address %s"
                   % (user_jid("alice"), W.addr["bob"]))
    # alice's address answers as alice while she is registered...
    c = raw_dial(src, W.addr["alice"], dave, user_jid("alice"))
    hdr = c.wait_header(5)
    frm = hdr.get("from", "")
    if (frm.split("@")[0].lower() != "alice"
            or not same_addr(frm.partition("@")[2], W.addr["alice"])):
        raise AssertionError("alice's address answered as %r: %s"
                             % (frm, c.dump()))
    if any(bn.is_stream_error(el) for el in c.items):
        raise AssertionError("a stream to alice's address was refused: %s"
                             % c.dump())
    c.send(b"<presence/>")
    # dave is a stranger to alice: she is asked (and leaves it unanswered).
    cl = W.client("alice")
    cl.wait_for(lambda s: s.name == "presence" and s["type"] == "subscribe"
                and s["from"].bare.lower().startswith("dave"), 10,
                "the subscription request of dave's contact JID to alice")
    # ...and no longer once she unregisters.
    unregister("alice")
    c.wait(lambda: c.stream_end or c.eof, 8,
           "the end of dave's stream with alice after she unregistered")
    c.close()
    peer = W.pascal()
    peer.wait(lambda: peer.conversation(user_jid("alice")) is None, 8,
              "the end of pascal's conversation with alice after she "
              "unregistered")
    expect_refused(raw_dial(src, W.addr["alice"], dave, user_jid("alice")),
                   "a stream to %s after she unregistered" % user_jid("alice"))
    # bob's address still answers as bob.
    c = raw_dial(src, W.addr["bob"], dave, user_jid("bob"))
    hdr = c.wait_header(5)
    frm = hdr.get("from", "")
    if (frm.split("@")[0].lower() != "bob"
            or not same_addr(frm.partition("@")[2], W.addr["bob"])):
        raise AssertionError("bob's address answered as %r: %s"
                             % (frm, c.dump()))
    c.send(bn.STREAM_END)
    c.close()
    W.addr.pop("alice")
    W.cjid.pop("alice", None)


def t_no_route(_world):
    net = W.network()
    W.server()
    W.stop_gateway()
    net.del_route()
    try:
        if net.has_route():
            raise AssertionError("the AnyIP route is still there")
        gw = W.new_gateway()
        gw.start()
        h.show_log("gateway log (no route)", gw.log_path)
        try:
            gw.proc.wait(10)
        except Exception:
            gw.kill_now()
            raise AssertionError("without the AnyIP route the gateway was "
                                 "still running after 10 s; log:\n%s"
                                 % "\n".join(h.tail(gw.log_path, 15)))
        h._popen_pids.discard(gw.proc.pid)
        h._untrack(gw)
        rc = gw.proc.returncode
        log = gw.log_text()
        if rc == 0:
            raise AssertionError("without the AnyIP route the gateway exited "
                                 "with status 0:\n%s" % log)
        lines = [l for l in log.splitlines() if "ip -6 route add local" in l]
        if not lines:
            raise AssertionError("the error does not mention `ip -6 route "
                                 "add local`:\n%s" % log)
        if not any(plen == 64 and yn.prefix64(a) == yn.prefix64(net.a.subnet)
                   for a, plen in yn.ipv6_tokens(lines[0])):
            raise AssertionError("the command does not name A's subnet %s: "
                                 "%s" % (net.a.subnet, lines[0]))
        if gw.sanitizer_report():
            raise AssertionError("sanitizer report:\n%s"
                                 % "\n".join(gw.sanitizer_report()))
        if re.search(r"component: link up", log):
            raise AssertionError("the gateway linked up before refusing to "
                                 "run:\n%s" % log)
        h.show_log("gateway log (no route)", gw.log_path)
    finally:
        net.add_route()


def own_address_command(name):
    """Runs the ad-hoc command own-address; returns its note's text."""
    c = W.client(name)
    cmd = ET.Element("{%s}command" % NS_COMMANDS, node="own-address",
                     action="execute")
    r = gw_iq(c, cmd, "%s's own-address command" % name)
    el = r.xml.find("{%s}command" % NS_COMMANDS)
    if r["type"] != "result" or el is None or el.get("status") != "completed":
        raise AssertionError("%s: command own-address answered %s"
                             % (name, h.show(r)))
    notes = list(el.iter("{%s}note" % NS_COMMANDS))
    if any(n.get("type") == "error" for n in notes):
        raise AssertionError("%s: command own-address failed: %s"
                             % (name, h.show(r)))
    return " ".join((n.text or "") for n in notes)


def start_gw6(mode, statedir):
    srv = W.server()
    gw = W.new_gateway(gateway_conf(srv, statedir, W.network().a.admin_socket,
                                    mode=mode))
    W.gw6 = gw
    gw.start()
    h.show_log("gateway (scenario 6) log", gw.log_path)
    gw.wait_log(h.LINK_UP_RE % (re.escape(COMPONENT), srv.component_port), 10)
    return gw


def t_own_address(_world):
    net = W.network()
    peer = W.pascal()
    W.stop_gateway()  # one component connection at a time
    statedir = h.subdir("state6")
    gw = start_gw6("shared", statedir)
    try:
        # carol registers while the gateway shares A's address.
        W.addr["carol"] = register("carol")
        if not same_addr(W.addr["carol"], net.a.address):
            raise AssertionError("in shared mode carol got %s, not A's "
                                 "address %s" % (W.addr["carol"],
                                                 net.a.address))
        W.cjid["carol"] = add_contact("carol", peer.jid)
        check_dial(peer.wait_conversation(user_jid("carol"), 20), "carol",
                   "shared-mode dial")
        peer.send(user_jid("carol"), chat(peer.jid, user_jid("carol"),
                                          "[s6] shared"))
        wait_xmpp_message("carol", W.cjid["carol"], "[s6] shared")
        # The operator switches to per-user mode: carol keeps her address
        # until she asks for her own.
        gw.stop_clean(10)
        gw = start_gw6("per-user", statedir)
        got = address_command("carol")
        if not same_addr(got, net.a.address):
            raise AssertionError("after the switch to per-user mode carol's "
                                 "address is %s, expected the shared %s "
                                 "until she asks" % (got, net.a.address))
        t0 = time.monotonic()
        text = own_address_command("carol")
        new = the_address(text, "carol", "own-address's answer")
        if not in_subnet(new, net.a.subnet) or same_addr(new, net.a.address):
            raise AssertionError("own-address gave %s, not an address of "
                                 "A's subnet %s" % (new, net.a.subnet))
        got = address_command("carol")
        if not same_addr(got, new):
            raise AssertionError("after own-address the address command says "
                                 "%s, own-address said %s" % (got, new))
        W.addr["carol"] = new
        check_dial(peer.wait_conversation(user_jid("carol"), 20, since=t0),
                   "carol", "dial after own-address")
        W.clients["carol"].send_message(W.cjid["carol"], "[s6] own to pascal")
        conn, _el = peer.wait_message(user_jid("carol"), "[s6] own to pascal",
                                      15)
        if not same_addr(conn.remote_addr, new):
            raise AssertionError("carol's message came from %s, not from "
                                 "her own address %s" % (conn.remote_addr,
                                                         new))
        peer.send(user_jid("carol"), chat(peer.jid, user_jid("carol"),
                                          "[s6] pascal to own"))
        wait_xmpp_message("carol", W.cjid["carol"], "[s6] pascal to own")
        # Asking again changes nothing.
        again = the_address(own_address_command("carol"), "carol",
                            "own-address's second answer")
        if not same_addr(again, new):
            raise AssertionError("a second own-address moved carol from %s "
                                 "to %s" % (new, again))
        no_refusals(peer)
        gw.stop_clean(10)
    finally:
        if gw.alive():
            gw.kill_now()


TESTS = [
    ("1 detection: admin socket, interfaces, nothing (-t)", t_detection, 40),
    ("2 per-user addresses: alice and bob talk to a one-nick-per-address "
     "peer at the same time", t_two_users, 60),
    ("3 a restart keeps each user's address", t_restart, 50),
    ("4 a /64 address of nobody is refused; a user's only while "
     "registered", t_unknown_refused, 50),
    ("5 without the AnyIP route the gateway exits naming the command",
     t_no_route, 30),
    ("6 own-address moves a shared-address user to an address of their "
     "own", t_own_address, 60),
]


if __name__ == "__main__":
    # The world is shared: harness.run shows its logs when a test fails and
    # closes it after the last test.
    yn.main([h.Test(name, fn, world=W, timeout=t) for name, fn, t in TESTS])
