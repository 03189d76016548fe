"""Machinery for the bridge's integration tests (test_bridge.py): a real
XMPP server (Prosody or ejabberd) listening on ::1 inside the test's network
namespace, the gateway as its component with a Barev identity at
barevnet.GW, XMPP users driven by slixmpp, and raw Barev peers at
barevnet.peer_addr(i).

Why ::1: inside the namespace glibc's AI_ADDRCONFIG makes libstrophe fail
to resolve 127.0.0.1 (there is no non-loopback IPv4 address).

Every raw peer listens on PEER_PORT at its own address: a contact's port is
the gateway's barev.default_port.
"""

import asyncio
import html
import os
import re
import signal
import socket
import sqlite3
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import barevnet as bn  # noqa: E402
from barevnet import header, STREAM_END  # noqa: E402

COMPONENT = h.COMPONENT           # the gateway under test
COMPONENT2 = "barev2.localhost"   # a second gateway (message expiry)
GW = bn.GW                        # the shared Barev address of COMPONENT
GW2 = bn.GW2                      # the Barev address of COMPONENT2
PEER_PORT = 5299                  # where every raw peer listens
DOMAIN = "localhost"

NS_CLIENT = "jabber:client"
NS_REGISTER = "jabber:iq:register"
NS_GATEWAY = "jabber:iq:gateway"
NS_XDATA = "jabber:x:data"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_XHTML_IM = "http://jabber.org/protocol/xhtml-im"
NS_XHTML = "http://www.w3.org/1999/xhtml"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_NICK = "http://jabber.org/protocol/nick"
NS_EVENT = "jabber:x:event"
NS_VCARD = "vcard-temp"
NS_PING = "urn:xmpp:ping"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DELAY = "urn:xmpp:delay"

CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")

LINK_UP = r"component: link up jid=%s "


def q(ns, name):
    return "{%s}%s" % (ns, name)


def C(name):
    return q(NS_CLIENT, name)


def show(el):
    return ET.tostring(el, encoding="unicode") if el is not None else "None"


def xml_escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&quot;"))


# --- Barev addresses and the contact JIDs the gateway must use ------------

def canon(addr):
    """RFC 5952 text of an IPv6 address."""
    return socket.inet_ntop(socket.AF_INET6,
                            socket.inet_pton(socket.AF_INET6, addr))


def same_addr(a, b):
    return (socket.inet_pton(socket.AF_INET6, a)
            == socket.inet_pton(socket.AF_INET6, b))


_ESC = {" ": r"\20", '"': r"\22", "&": r"\26", "'": r"\27", "/": r"\2f",
        ":": r"\3a", "<": r"\3c", ">": r"\3e", "@": r"\40", "\\": r"\5c"}


def escape_local(text):
    """XEP-0106, plus ASCII upper case as \\41..\\5a (survives case folding)."""
    out = []
    for ch in text:
        if ch in _ESC:
            out.append(_ESC[ch])
        elif "A" <= ch <= "Z":
            out.append("\\%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def contact_jid(barev_jid, domain=COMPONENT):
    nick, addr = barev_jid.split("@", 1)
    return "%s@%s" % (escape_local("%s@%s" % (nick, canon(addr))), domain)


def typeable_jid(barev_jid, domain=COMPONENT):
    nick, addr = barev_jid.split("@", 1)
    return "%s%%%s@%s" % (nick, canon(addr).replace(":", "-"), domain)


def jid_eq(a, b):
    return a is not None and b is not None and a.lower() == b.lower()


def bare(jid):
    return (jid or "").split("/", 1)[0]


# --- servers on ::1 with offline storage and a second component -----------

class BridgeProsody(h.Prosody):
    """Prosody on ::1, with mod_offline (Barev messages to an offline user)
    and a second component domain (COMPONENT2)."""

    def __init__(self, tmpdir):
        super().__init__(tmpdir, host="::1")
        self.component_port2 = self.component_port

    def _config_text(self):
        t = super()._config_text()
        t2 = t.replace('"offline"; "admin_telnet";', '"admin_telnet";')
        t2 = t2.replace('"posix";', '"posix"; "offline";', 1)
        if t2.count('"offline"') != 1:
            raise AssertionError("cannot enable mod_offline in the harness's "
                                 "Prosody configuration")
        return t2 + 'Component "%s"\n  component_secret = "%s"\n' % (
            COMPONENT2, self.secret)


class BridgeEjabberd(h.Ejabberd):
    """ejabberd on ::1, with mod_offline and a second component domain on a
    listener of its own: a connection authenticated for any host of an
    ejabberd_service listener is given the routes of all its hosts, and
    stanzas are balanced between the connections."""

    def __init__(self, tmpdir):
        self.component_port2 = h.free_port("::1")
        super().__init__(tmpdir, host="::1")

    def _config_text(self):
        t = super()._config_text()
        anchor = "auth_method:"
        if anchor not in t:
            raise AssertionError("cannot add a listener to the harness's "
                                 "ejabberd configuration")
        listener = """\
  -
    port: {port}
    ip: "{host}"
    module: ejabberd_service
    hosts:
      "{domain}":
        password: "{secret}"
""".format(port=self.component_port2, host=self.host, domain=COMPONENT2,
           secret=self.secret)
        t = t.replace(anchor, listener + anchor, 1)
        return t + "  mod_offline: {}\n"


SERVERS = (BridgeProsody, BridgeEjabberd)


# --- the gateway's configuration ------------------------------------------

# The backoff for a peer that refused us with not-authorized (short here).
REFUSED_REDIAL_MIN = 3.0
REFUSED_REDIAL_MAX = 6.0


def _conf_lines(extra):
    """Further keys of a group (none of those the template sets)."""
    return "".join("  %s = %s;\n" % (k, repr(v) if isinstance(v, float)
                                     else v) for k, v in (extra or {}).items())


def gateway_conf(srv, statedir, listen_ports, component=COMPONENT,
                 address=GW, lifetime=604800, request_timeout=4.0,
                 ping_timeout=3.0, allowed=(), barev=None, limits=None,
                 ping_interval=30.0, ping_failures=3):
    port = (srv.component_port2 if component == COMPONENT2
            else srv.component_port)
    return """\
# barev-gateway configuration for test_bridge.py
component = {{
  jid = "{component}";
  secret = "{secret}";
  host = "{host}";
  port = {port};
  reconnect_min = 0.3;
  reconnect_max = 1.0;
}};
barev = {{
  address = "{address}";
  listen = [ {listen} ];
  default_port = {pport};
  ping_interval = {ping_interval!r};
  ping_timeout = {ping_timeout!r};
  ping_failures = {ping_failures:d};
  handshake_timeout = 5.0;
  connect_timeout = 3.0;
  redial_min = 0.5;
  redial_max = 2.0;
  refused_redial_min = {refused_min!r};
  refused_redial_max = {refused_max!r};
  request_timeout = {request_timeout!r};
{barev}}};
limits = {{
  request_interval = 3600.0;
  inbound_per_minute = 6000;
  output_bytes = 262144;
{limits}}};
storage = {{
  path = "{statedir}/state.db";
  message_lifetime = {lifetime!r};
}};
log = {{ level = "debug"; syslog = false; }};
access = {{
  domains = [ "elsewhere.example" ];
  jids = [ {jids} ];
}};
""".format(component=component, secret=srv.secret, host=srv.host,
           port=port, address=address,
           listen=", ".join('"[%s]:%d"' % (address, p) for p in listen_ports),
           pport=PEER_PORT, ping_timeout=float(ping_timeout),
           ping_interval=float(ping_interval), ping_failures=ping_failures,
           request_timeout=float(request_timeout), statedir=statedir,
           refused_min=REFUSED_REDIAL_MIN, refused_max=REFUSED_REDIAL_MAX,
           lifetime=float(lifetime),
           jids=", ".join('"%s"' % j for j in allowed),
           barev=_conf_lines(barev), limits=_conf_lines(limits))


EXAMPLE_CONF = os.path.join(h.SRCDIR, "conf", "barev-gateway.conf.example")


def example_conf(srv, statedir, address=GW, **more):
    """The shipped example configuration with only what differs from site
    to site replaced, as the README tells an operator to do: the
    component's JID, secret and server port (the host stays "localhost",
    which must reach a server on ::1), the node's address (there is no
    Yggdrasil admin socket here) and the store's path; more
    replaces further keys (key=value text). Each key must occur exactly
    once in the example: if it changes shape, the test fails."""
    with open(EXAMPLE_CONF, encoding="utf-8") as f:
        text = f.read()
    site = {"jid": '"%s"' % COMPONENT, "secret": '"%s"' % srv.secret,
            "port": str(srv.component_port),
            "address": '"%s"' % address,
            "path": '"%s"' % os.path.join(statedir, "state.db")}
    site.update(more)
    for key, value in site.items():
        text, n = re.subn(r"(?m)^(\s*%s\s*=\s*)[^;]*;" % re.escape(key),
                          lambda m: m.group(1) + value + ";", text)
        if n != 1:
            raise AssertionError("%s: key %r occurs %d times, expected once"
                                 % (EXAMPLE_CONF, key, n))
    return text


class GatewayRun:
    """One gateway configuration (and its state directory) that survives
    restarts: each start() is a new process (and a new log file).
    conf_text, a function of the state directory, replaces the test
    configuration (gateway_conf)."""

    def __init__(self, world_dir, srv, name, conf_text=None, **conf):
        self.srv = srv
        self.name = name
        self.statedir = os.path.join(world_dir, name + "-state")
        os.makedirs(self.statedir, exist_ok=True)
        self.db_path = os.path.join(self.statedir, "state.db")
        # Two ports, as the README recommends (1337 and 5299 in real life).
        self.listen_port = bn.port()
        self.listen_port2 = bn.port()
        self.component = conf.get("component", COMPONENT)
        self.conf_text = (conf_text(self.statedir) if conf_text else
                          gateway_conf(srv, self.statedir,
                                       (self.listen_port, self.listen_port2),
                                       **conf))
        self.world_dir = world_dir
        self.gw = None
        self.starts = 0

    @property
    def log_path(self):
        return self.gw.log_path if self.gw is not None else None

    def start(self, timeout=10.0):
        self.starts += 1
        self.gw = h.Gateway(self.world_dir, self.srv, conf_text=self.conf_text,
                            args=(), name=self.name)
        self.gw.start()
        try:
            self.gw.wait_log(LINK_UP % re.escape(self.component), timeout)
        except BaseException:
            self.gw.kill_now()
            raise
        return self.gw

    def alive(self):
        return self.gw is not None and self.gw.alive()

    def check_alive(self):
        if self.gw is None:
            raise AssertionError("%s was never started" % self.name)
        if not self.gw.alive() and not self.gw.stopped:
            raise AssertionError("%s died: exit status %s; sanitizer report: "
                                 "%s" % (self.name, self.gw.proc.returncode,
                                         self.gw.sanitizer_report()))

    def stop(self):
        """SIGTERM: exit status 0 within 10 s and no sanitizer report."""
        if self.alive():
            self.gw.stop_clean(10)

    def kill9(self):
        """SIGKILL, after checking the log has no sanitizer report."""
        report = self.gw.sanitizer_report()
        os.kill(self.gw.pid, signal.SIGKILL)
        self.gw.proc.wait(5)
        self.gw.stopped = True
        h._popen_pids.discard(self.gw.pid)
        h._untrack(self.gw)
        if report:
            raise AssertionError("sanitizer report before kill -9:\n"
                                 + "\n".join(report))

    def restart(self):
        self.stop()
        return self.start()

    def mark(self):
        return self.gw.mark()

    def log_since(self, start=0):
        return self.gw.log_since(start)

    def wait_log(self, regex, timeout=5.0, start=0, count=1):
        return self.gw.wait_log(regex, timeout, start, count)

    def kill_now(self):
        if self.gw is not None:
            self.gw.kill_now()

    def db(self, sql, args=()):
        """Rows of a query on the gateway's SQLite file (read-only)."""
        con = sqlite3.connect("file:%s?mode=ro" % self.db_path, uri=True,
                              timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()


# --- XMPP users --------------------------------------------------------------

ANY = object()


def child(el, ns, name):
    return el.find(q(ns, name))


def child_text(el, ns, name):
    c = el.find(q(ns, name))
    return None if c is None else (c.text or "")


def body_of(el):
    return child_text(el, NS_CLIENT, "body")


def plugin_shows(el):
    """What Pidgin shows for a Barev message el, by the reference behaviour
    of both plugin versions: if the XHTML-IM part's body has a <font>
    child, the plugin hands Pidgin that element's content re-serialized
    (its text escaped again); otherwise the plain <body> text, as HTML.
    Pidgin shows HTML with the tags gone, <br> as a line break and the
    entities decoded."""
    html_part = el.find(q(NS_XHTML_IM, "html"))
    hb = html_part.find(q(NS_XHTML, "body")) if html_part is not None else None
    font = None
    for c in (hb if hb is not None else ()):
        if c.tag.split("}")[-1] == "font":
            font = c
            break
    if font is not None:
        markup = xml_escape(font.text or "") + "".join(
            ET.tostring(c, encoding="unicode") for c in font)
    else:
        markup = body_of(el) or ""
    markup = re.sub(r"<(?:[\w.-]+:)?br\b[^>]*>", "\n", markup)
    return html.unescape(re.sub(r"<[^>]*>", "", markup))


def chat_state(el):
    """The XEP-0085 chat state child's name, or None."""
    for c in el:
        if c.tag.startswith("{%s}" % NS_CHATSTATES):
            return c.tag.split("}")[1]
    return None


def error_cond(el):
    """(error type, condition, text) of an error stanza, else None."""
    if el.get("type") != "error":
        return None
    err = el.find(C("error"))
    if err is None:
        return ("", "", "")
    cond, text = "", ""
    for c in err:
        if c.tag.startswith("{%s}" % NS_STANZAS):
            n = c.tag.split("}")[1]
            if n == "text":
                text = c.text or ""
            else:
                cond = n
    return (err.get("type"), cond, text)


def is_pres(frm=ANY, type=None):
    """Presence from frm (compared without case) of type (None: available)."""
    def match(el):
        return (el.tag == C("presence")
                and (frm is ANY or jid_eq(el.get("from"), frm))
                and (type is ANY or el.get("type") == type))
    match.what = "presence type=%s from %s" % (type, frm)
    return match


def is_msg(frm=ANY, body=ANY, type=ANY):
    def match(el):
        return (el.tag == C("message")
                and (frm is ANY or jid_eq(bare(el.get("from")), frm))
                and (type is ANY or el.get("type") == type)
                and (body is ANY or body_of(el) == body))
    match.what = "message from %s body %r" % (frm, body)
    return match


def is_state(frm, state):
    """A body-less XEP-0085 chat state message."""
    def match(el):
        return (el.tag == C("message") and jid_eq(bare(el.get("from")), frm)
                and body_of(el) is None and chat_state(el) == state)
    match.what = "body-less <%s/> from %s" % (state, frm)
    return match


def is_receipt(frm=ANY, rid=ANY):
    def match(el):
        r = el.find(q(NS_RECEIPTS, "received"))
        return (el.tag == C("message") and r is not None
                and (frm is ANY or jid_eq(bare(el.get("from")), frm))
                and (rid is ANY or r.get("id") == rid))
    match.what = "receipt id=%s from %s" % (rid, frm)
    return match


def is_error(frm=ANY, name=ANY, cond=ANY):
    def match(el):
        e = error_cond(el)
        return (e is not None and (name is ANY or el.tag == C(name))
                and (frm is ANY or jid_eq(bare(el.get("from")), frm))
                and (cond is ANY or e[1] == cond))
    match.what = "%s error %s from %s" % (name, cond, frm)
    return match


class User:
    """One resource of an XMPP user (slixmpp), with every message and
    presence it receives kept in order. Subscription requests are answered
    by the test, never automatically."""

    def __init__(self, srv, name, password, resource="test", online=True):
        self.name = name
        self.bare = "%s@%s" % (name, srv.domain)
        self.resource = resource
        self.full = "%s/%s" % (self.bare, resource)
        self.cl = h.Client(self.bare, password, srv, resource=resource,
                           auto_authorize=None, auto_subscribe=False,
                           all_messages=True)
        self.taken = set()
        # An "interested resource" (RFC 6121): servers send subscription
        # answers and roster pushes only to resources that asked for the
        # roster.
        r = self.iq(self.bare, '<query xmlns="jabber:iq:roster"/>')
        if r.get("type") != "result":
            raise AssertionError("%s: roster get: %s" % (self.full, show(r)))
        if online:
            self.send("<presence/>")

    def connected(self):
        return self.cl.connected()

    def send(self, xml):
        self.cl.send_raw(xml)

    def presence(self, show=None, status=None, to=None, type=None):
        attrs = ""
        if to:
            attrs += ' to="%s"' % xml_escape(to)
        if type:
            attrs += ' type="%s"' % type
        inner = ""
        if show:
            inner += "<show>%s</show>" % show
        if status:
            inner += "<status>%s</status>" % xml_escape(status)
        self.send("<presence%s>%s</presence>" % (attrs, inner) if inner else
                  "<presence%s/>" % attrs)

    def message(self, to, body=None, mid=None, receipt=False, state=None,
                extra=""):
        parts = []
        if body is not None:
            parts.append("<body>%s</body>" % xml_escape(body))
        if state:
            parts.append('<%s xmlns="%s"/>' % (state, NS_CHATSTATES))
        if receipt:
            parts.append('<request xmlns="%s"/>' % NS_RECEIPTS)
        parts.append(extra)
        self.send('<message to="%s" type="chat"%s>%s</message>'
                  % (xml_escape(to), ' id="%s"' % mid if mid else "",
                     "".join(parts)))

    def iq(self, to, payload, type="get", timeout=5.0):
        """The reply (an ET element) to an iq with payload (XML text)."""
        return self.cl.iq(to, payload, type=type, timeout=timeout).xml

    def mark(self):
        with self.cl.cond:
            return len(self.cl.received)

    def _find(self, match, since):
        for i in range(since, len(self.cl.received)):
            if i in self.taken:
                continue
            el = self.cl.received[i].xml
            if match(el):
                self.taken.add(i)
                return el
        return None

    def take(self, match, timeout=5.0, since=0, what=None):
        """The first received stanza (not taken before) from index since
        for which match is true."""
        deadline = time.monotonic() + timeout * SLOW
        with self.cl.cond:
            while True:
                el = self._find(match, since)
                if el is not None:
                    return el
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "%s: no %s within %.1fs; received since then:\n%s"
                        % (self.full, what or getattr(match, "what", "stanza"),
                           timeout, self.dump(since)))
                self.cl.cond.wait(left)

    def expect_none(self, match, seconds, since=None, what=None):
        """Nothing matching arrives (from index since, default now) within
        seconds."""
        since = self.mark() if since is None else since
        deadline = time.monotonic() + seconds
        with self.cl.cond:
            while True:
                for i in range(since, len(self.cl.received)):
                    el = self.cl.received[i].xml
                    if i not in self.taken and match(el):
                        raise AssertionError(
                            "%s: unexpected %s: %s"
                            % (self.full, what or getattr(match, "what",
                                                          "stanza"), show(el)))
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.cl.cond.wait(left)

    def all(self, match, since=0):
        with self.cl.cond:
            return [s.xml for s in self.cl.received[since:] if match(s.xml)]

    def dump(self, since=0, limit=25):
        with self.cl.cond:
            els = [s.xml for s in self.cl.received[since:]]
        lines = [show(e) for e in els[-limit:]]
        return "\n".join("  " + (l if len(l) < 400 else l[:400] + "...")
                         for l in lines) or "  (nothing)"

    def disconnect(self):
        self.cl.disconnect()

    def kill_now(self):
        self.cl.disconnect()


def register(u, nick, gw=COMPONENT, form=False):
    """Registers u with nick (XEP-0077); checks the result, the gateway's
    subscription request and its welcome message; answers as an XEP-0100
    client does (subscribed, and subscribe to the gateway). Returns the
    welcome message."""
    m = u.mark()
    if form:
        payload = ('<query xmlns="%s"><x xmlns="%s" type="submit">'
                   '<field var="FORM_TYPE"><value>%s</value></field>'
                   '<field var="username"><value>%s</value></field>'
                   '</x></query>' % (NS_REGISTER, NS_XDATA, NS_REGISTER,
                                     xml_escape(nick)))
    else:
        payload = ('<query xmlns="%s"><username>%s</username></query>'
                   % (NS_REGISTER, xml_escape(nick)))
    r = u.iq(gw, payload, "set")
    if r.get("type") != "result":
        raise AssertionError("%s: registering %r: %s" % (u.bare, nick, show(r)))
    u.take(is_pres(gw, "subscribe"), since=m)
    welcome = u.take(is_msg(gw), since=m, what="welcome message")
    u.presence(to=gw, type="subscribed")
    u.presence(to=gw, type="subscribe")
    u.take(is_pres(gw, "subscribed"), since=m)
    return welcome


def add_contact(u, peer_jid, gw=COMPONENT):
    """u subscribes to the contact JID of peer_jid: the gateway answers
    subscribed and subscribes back with the nick (XEP-0172); u accepts."""
    cj = contact_jid(peer_jid, gw)
    m = u.mark()
    u.presence(to=cj, type="subscribe")
    u.take(is_pres(cj, "subscribed"), since=m)
    s = u.take(is_pres(cj, "subscribe"), since=m)
    nick = child_text(s, NS_NICK, "nick")
    if nick != peer_jid.split("@")[0]:
        raise AssertionError("subscribe from %s has nick %r, expected %r: %s"
                             % (cj, nick, peer_jid.split("@")[0], show(s)))
    u.presence(to=cj, type="subscribed")
    return cj


# --- raw Barev peers ---------------------------------------------------------

def b_is_pres(type=None, show_=ANY):
    def match(el):
        s = el.find(C("show"))
        return (el.tag == C("presence") and (type is ANY or el.get("type") == type)
                and (show_ is ANY or (s.text if s is not None else None) == show_))
    match.what = "presence type=%s show=%s" % (type, show_)
    return match


def b_is_msg(body=ANY):
    def match(el):
        return el.tag == C("message") and (body is ANY or body_of(el) == body)
    match.what = "message body %r" % (body,)
    return match


def b_is_state(state):
    def match(el):
        return (el.tag == C("message") and body_of(el) is None
                and chat_state(el) == state)
    match.what = "body-less <%s/>" % state
    return match


def b_is_ack(el):
    return (el.tag == C("iq") and el.get("type") == "get"
            and (el.get("id") or "").startswith("ack-")
            and el.find(q(NS_PING, "ping")) is not None)


b_is_ack.what = "an ack- ping"


def b_is_keepalive(el):
    return (el.tag == C("iq") and el.get("type") == "get"
            and not (el.get("id") or "").startswith("ack-")
            and bn.ping_ns(el) is not None)


def b_is_stream_end(_el):
    return False


class Pipe:
    """A Barev stream seen from a raw peer (me) talking to a gateway user
    (them). Keepalive pings are answered while waiting (unless answer_pings
    is false: the Pascal library answers none); "ack-" pings (the
    gateway's proof of delivery) only when the test says so."""

    def __init__(self, conn, me, them, answer_pings=True):
        self.c = conn
        self.me = me
        self.them = them
        self.answer_pings = answer_pings

    def __repr__(self):
        return "<Pipe %s <-> %s>" % (self.me, self.them)

    def send(self, data):
        self.c.send(data)

    def _keepalive(self):
        for i, el in self.c.untaken():
            if el.tag == C("presence") and el.get("type") not in (
                    None, "unavailable"):
                # The plugin shows any presence that is not unavailable
                # as online.
                raise AssertionError("%s: a %s presence was forwarded to "
                                     "Barev: %s" % (self, el.get("type"),
                                                    show(el)))
            sh = el.find(C("show")) if el.tag == C("presence") else None
            if sh is not None and sh.text not in ("away", "dnd"):
                raise AssertionError("%s: <show>%s</show> sent to Barev "
                                     "(the plugin knows away and dnd)"
                                     % (self, sh.text))
            if b_is_keepalive(el) and self.answer_pings:
                self.c.taken.add(i)
                self.c.send(bn.pong(el, self.me, self.them))

    def pump(self):
        self.c.pump()
        self._keepalive()

    def wait(self, match, timeout=5.0, what=None):
        def pred():
            self._keepalive()
            return self.c.find(match)
        return self.c.wait(pred, timeout,
                           what or getattr(match, "what", "a stanza"))

    def expect_none(self, match, seconds, what=None):
        """Nothing (not yet consumed) matching arrives within seconds."""
        deadline = time.monotonic() + seconds
        while True:
            self.pump()
            for _i, el in self.c.untaken():
                if match(el):
                    raise AssertionError("%s: unexpected %s: %s"
                                         % (self, what or getattr(
                                             match, "what", "stanza"),
                                            show(el)))
            left = deadline - time.monotonic()
            if left <= 0:
                return
            bn._wait_fd(self.c.sock, bn.select.POLLIN, min(left, 0.1))

    def ack(self, el):
        self.c.send(bn.pong(el, self.me, self.them))

    def wait_msg(self, body, timeout=5.0, ack=True):
        """The message with this body; with ack, the ack ping that follows
        it is answered."""
        m = self.wait(b_is_msg(body), timeout)
        if ack:
            self.ack(self.wait(b_is_ack, timeout))
        return m

    def wait_end(self, timeout=5.0):
        """The gateway ends the stream (or closes); we answer as the plugin
        does (stream end, close)."""
        self.c.wait(lambda: self.c.stream_end or self.c.eof, timeout,
                    "the stream end")
        try:
            self.c.send(STREAM_END)
        except (OSError, AssertionError):
            pass
        self.c.close()

    def alive(self):
        self.pump()
        return not self.c.eof and not self.c.closed

    def close(self):
        self.c.close()

    kill_now = close


def check_header(conn, frm, to):
    """The stream header conn received is byte for byte the reference one."""
    want = header(frm, to)
    got = bytes(conn.raw[:len(want) + 40])
    if bytes(conn.raw[:len(want)]) != want:
        raise AssertionError("stream header is not the reference one:\n"
                             "  want %r\n  got  %r" % (want, got))


class RawPeer:
    """A Barev peer driven byte by byte by the test: listens on
    [peer_addr(i)]:PEER_PORT (unless listen=False) and dials the gateway."""

    def __init__(self, i, nick, listen=True):
        self.addr = bn.peer_addr(i)
        self.nick = nick
        self.jid = "%s@%s" % (nick, self.addr)
        self.cjid = contact_jid(self.jid)
        self.listener = bn.Listener(self.addr, PEER_PORT) if listen else None
        self.conns = []

    def accept(self, timeout=8.0, gw=GW, answer_pings=True):
        """The gateway's next dial: its source is the gateway's address gw
        and its header is the reference one. Returns (Pipe, the header's
        from)."""
        c = self.listener.accept(timeout, label="%s<-gw" % self.jid)
        self.conns.append(c)
        if not same_addr(c.remote_addr, gw):
            raise AssertionError("%s: dial from %s, expected the gateway's "
                                 "address %s" % (self.jid, c.remote_addr, gw))
        c.wait_header(5)
        frm = c.header_attrs.get("from", "")
        check_header(c, frm, self.jid)
        return Pipe(c, self.jid, frm, answer_pings), frm

    def expect_dial(self, user_barev, timeout=8.0, presence=b"<presence/>",
                    answer_pings=True):
        """Accepts the gateway's dial for user_barev; answers with our
        header (and presence)."""
        p, frm = self.accept(timeout, user_barev.split("@", 1)[1],
                             answer_pings)
        if frm != user_barev:
            raise AssertionError("%s: the gateway dialled from %r, expected "
                                 "%r" % (self.jid, frm, user_barev))
        p.send(header(self.jid, user_barev) + (presence or b""))
        return p

    def dial(self, user_barev, port, presence=b"<presence/>", gw=GW):
        """We dial the gateway as the plugin does; the gateway must answer
        with the reference header. Returns the Pipe."""
        c = bn.connect(self.addr, gw, port, label="%s->%s" % (self.jid,
                                                           user_barev))
        self.conns.append(c)
        c.send(header(self.jid, user_barev))
        c.wait_header(5)
        check_header(c, user_barev, self.jid)
        p = Pipe(c, self.jid, user_barev)
        if presence:
            p.send(presence)
        return p

    def close(self):
        for c in self.conns:
            c.close()
        if self.listener is not None:
            self.listener.close()

    kill_now = close


def ref_peer(i, nick, buddies):
    """A RefPeer (barevnet) at peer_addr(i), not listening yet."""
    p = bn.RefPeer("%s@%s" % (nick, bn.peer_addr(i)), buddies)
    p.cjid = contact_jid(p.jid)
    return p


def plugin2_peer(i, nick, buddies):
    """A Plugin2Peer (barevnet: the plugin's 2.x line) at peer_addr(i),
    not listening yet."""
    p = bn.Plugin2Peer("%s@%s" % (nick, bn.peer_addr(i)), buddies)
    p.cjid = contact_jid(p.jid)
    return p


def ref_bodies(peer, buddy=None):
    """[(conn, body)] of the messages with a body a RefPeer received."""
    with peer.cond:
        return [(c, body_of(el)) for b, c, el in peer.received
                if el.tag == C("message") and body_of(el) is not None
                and (buddy is None or b == buddy)]


# --- one server, its gateways, users and peers -----------------------------

# Under valgrind the gateway runs several times slower: so do our waits.
SLOW = 3.0 if "valgrind" in os.environ.get("TEST_WRAPPER", "") else 1.0

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw",
             "mallory": "mallory-pw", "dora": "dora-pw", "erin": "erin-pw"}
# Allowed by access.jids (domains names another domain); mallory is not.
ALLOWED = ("alice@localhost", "bob@localhost", "carol@localhost",
           "dora@localhost", "erin@localhost")


class BridgeWorld:
    """Shared by one server's scenarios (harness.run calls logs() and,
    after the last one, close())."""

    def __init__(self, server_cls):
        self.server_cls = server_cls
        self.name = server_cls.name
        self.dir = None
        self.srv = None
        self.gw = None          # GatewayRun for COMPONENT
        self.gw2 = None         # GatewayRun for COMPONENT2 (expiry)
        self.users = {}         # (name, resource) -> User
        self.things = []        # peers etc. to close at the end
        self.state = {}         # what scenarios hand on to later ones
        self.registered = {}    # (component, user) -> nick

    def logs(self):
        out = []
        if self.srv is not None:
            out.append(("%s log" % self.name, self.srv.log_path))
        for g in (self.gw, self.gw2):
            if g is not None and g.log_path:
                out.append(("%s log" % g.name, g.log_path))
        return out

    def server(self):
        if self.srv is None:
            self.dir = h.subdir(self.name)
            self.srv = self.server_cls(self.dir)
        for label, path in self.logs():
            h.show_log(label, path)
        if not self.srv.alive():
            self.srv.start()
            for u, p in PASSWORDS.items():
                self.srv.register(u, p)
        return self.srv

    def gateway(self):
        """The gateway under test (COMPONENT at GW), running."""
        srv = self.server()
        if self.gw is None:
            self.gw = GatewayRun(self.dir, srv, "gateway", allowed=ALLOWED)
        if not self.gw.alive():
            if self.gw.gw is not None and not self.gw.gw.stopped:
                self.gw.check_alive()
            self.gw.start()
            h.show_log("gateway log", self.gw.log_path)
        return self.gw

    def user(self, name, resource="test", online=True):
        """name/resource logged in (and available, unless online=False)."""
        key = (name, resource)
        u = self.users.get(key)
        if u is None or not u.connected():
            self.server()
            u = User(self.srv, name, PASSWORDS[name], resource, online)
            self.users[key] = u
        return u

    def drop_user(self, name, resource="test"):
        u = self.users.pop((name, resource), None)
        if u is not None:
            u.disconnect()

    def registered_user(self, name, nick):
        """name logged in, available and registered with the gateway as
        nick (registers if a previous scenario did not)."""
        gw = self.gateway()
        u = self.user(name)
        if self.registered.get((COMPONENT, name)) != nick:
            register(u, nick)
            self.registered[(COMPONENT, name)] = nick
        gw.check_alive()
        return u

    def keep(self, thing):
        self.things.append(thing)
        return thing

    def raw_peer(self, i, nick, listen=True):
        """The world's raw peer number i (created once, kept)."""
        key = ("raw", i)
        if key not in self.state:
            self.state[key] = self.keep(RawPeer(i, nick, listen))
        return self.state[key]

    def close(self):
        errors = []
        for u in list(self.users.values()):
            u.disconnect()
        self.users.clear()
        for t in reversed(self.things):
            try:
                t.kill_now()
            except Exception:
                pass
        for g in (self.gw, self.gw2):
            if g is None:
                continue
            try:
                if g.gw is not None and not g.alive() and not g.gw.stopped:
                    g.check_alive()
                g.stop()
            except BaseException as e:
                errors.append("%s: %s" % (g.name, e))
                g.kill_now()
        if self.srv is not None:
            try:
                self.srv.stop()
            except BaseException as e:
                errors.append("%s: %s" % (self.name, e))
                self.srv.kill_now()
        self.srv = self.gw = self.gw2 = None
        if errors:
            raise AssertionError("; ".join(errors))


def server_tests(scenarios, world_cls=None):
    """harness Tests for scenarios [(title, fn(world)[, timeout])] on
    each server, one world (world_cls, default BridgeWorld) per server
    shared by its scenarios in order."""
    out = []
    for cls in SERVERS:
        world = (world_cls or BridgeWorld)(cls)
        for sc in scenarios:
            out.append(h.Test("%s: %s" % (cls.name, sc[0]), sc[1], world,
                              sc[2] if len(sc) > 2 else 60))
    return out


def barev_of(nick, addr=GW):
    return "%s@%s" % (nick, addr)


class Soft:
    """Failures that should not stop a scenario: collected, reported at the
    end (the rest of the scenario still runs and checks its own things)."""

    def __init__(self):
        self.problems = []

    def check(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except AssertionError as e:
            self.problems.append(str(e))
            return None

    def done(self):
        if self.problems:
            raise AssertionError("\n---\n".join(self.problems))


def run_async(coro_fn, *args):
    """Start coro_fn(*args) on slixmpp's loop; returns its future."""
    return asyncio.run_coroutine_threadsafe(coro_fn(*args), h._xmpp_loop())
