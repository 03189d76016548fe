"""A hostile mesh node against the real gateway beside a real Prosody and
a real ejabberd (bridgenet's worlds): what it sends must not forge the
gateway's log, nor choose how much of it there is.

Needs root, Prosody, ejabberd, Debian's /usr/bin/python3 (slixmpp):
    GATEWAY_BIN=$PWD/barev-gateway TEST_SRCDIR=$PWD \\
        /usr/bin/python3 tests/integration/test_hostile.py
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import barevnet as bn  # noqa: E402
import bridgenet as B  # noqa: E402

# How every line the gateway writes to its log begins.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z barev-gateway "
                      r"(error|warning|info|debug|trace): ")
FORGED = "2026-12-07T12:00:00.000Z barev-gateway info: bridge: registered"


def mesh_addr(net, host=7):
    """An address in /64 number net of a "node" of our own, put on the
    namespace's lo: refusals are summarised per /64, so tests that want
    each one logged use one /64 each."""
    a = "203:%x::%x" % (net, host)
    p = subprocess.run(["ip", "-6", "addr", "add", a + "/128", "dev", "lo",
                        "nodad"],
                       capture_output=True, text=True)
    if p.returncode != 0 and "already assigned" not in p.stderr:
        raise AssertionError("ip addr add %s: %s" % (a, p.stderr.strip()))
    return a


def log_lines_since(gw, start):
    """The gateway's log lines after byte offset start; fails on a line
    that is not one of its own."""
    text = gw.log_since(start)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for ln in lines:
        if not LOG_LINE.match(ln):
            raise AssertionError("a log line the gateway did not write: %r"
                                 % ln)
    return lines


def forged_header(w):
    """A header whose from holds a newline (a character reference, which
    XML turns into a real one) and a whole fake log line: logged as one
    escaped line, so nobody can write lines that read as the gateway's."""
    gw = w.gateway()
    w.registered_user("alice", "Alice")
    m = gw.mark()
    nets = [mesh_addr(n) for n in (1, 2, 3)]
    for attacker, frm in zip(nets, (
            "x@%s&#10;%s" % (nets[0], FORGED),
            "x@%s&#13;%s" % (nets[1], FORGED),
            'x@%s" reason=ok' % nets[2].replace("::7", "::8"))):
        c = w.keep(bn.connect(attacker, B.GW, gw.listen_port))
        c.send(('<?xml version="1.0" encoding="UTF-8" ?>\n<stream:stream '
                'xmlns="jabber:client" xmlns:stream="http://etherx.jabber.'
                'org/streams" from="%s" to="Alice@%s">' % (
                    frm.replace('"', "&quot;"), B.GW)).encode())
        # Refused after the header: our header, a stream error, the end.
        c.wait_stream_error(5)
        c.close()
    gw.wait_log(r"rejected reason=[a-z-]+ peer=203:[123]::7 subnet=\S+ from=",
                start=m,
                count=3)
    lines = log_lines_since(gw, m)
    if any(ln.startswith(FORGED) for ln in lines):
        raise AssertionError("the attacker wrote a log line of its own: %r"
                             % [ln for ln in lines if ln.startswith(FORGED)])
    refusals = [ln for ln in lines if "rejected reason=" in ln
                and "from=" in ln]
    if not any("\\x0a" in ln for ln in refusals):
        raise AssertionError("the newline is not shown escaped: %r"
                             % refusals)
    if not any("\\x0d" in ln for ln in refusals):
        raise AssertionError("the carriage return is not shown escaped: %r"
                             % refusals)
    if not any('from="x@%s\\" reason=ok' % nets[2].replace("::7", "::8")
               in ln for ln in refusals):
        raise AssertionError("the quote in from is not escaped: %r"
                             % refusals)
    gw.check_alive()


def echo_cut_between_characters(w):
    """A refusal before we know who is who echoes the peer's own from and
    to in our header, cut to 255 bytes: the cut must fall between
    characters, or our header is not UTF-8 and the plugin's parser stops
    reading the pipe."""
    gw = w.gateway()
    attacker = bn.peer_addr(9)
    for pad in range(250, 256):
        frm = "a" * pad + "\u2603" * 4
        c = w.keep(bn.connect(attacker, B.GW, gw.listen_port))
        c.send(('<?xml version="1.0" encoding="UTF-8" ?>\n<stream:stream '
                'xmlns="jabber:client" xmlns:stream="http://etherx.jabber.'
                'org/streams" from="%s" to="%s">' % (frm, frm)).encode())
        c.wait_stream_error(5)
        head = bytes(c.raw).split(b">", 2)[:2]
        try:
            b">".join(head).decode("utf-8", "strict")
        except UnicodeDecodeError as e:
            raise AssertionError("our header is not UTF-8 (%s): %r"
                                 % (e, b">".join(head)[-40:]))
        c.close()
    gw.check_alive()


def refusals_summarised(w):
    """300 connections refused in a burst (from outside 200::/7, so at
    accept time) are one line in full and, once the 10 s window ends, one
    summary with the count: a peer does not choose how much we log."""
    gw = w.gateway()
    m = gw.mark()
    n = 300
    for _ in range(n):
        c = bn.connect(bn.NON_YGG, B.GW, gw.listen_port)
        c.close()
    gw.wait_log(r"rejected reason=not-yggdrasil peer=fd00::5", start=m)
    summary = gw.wait_log(r"pipe: rejected reason=not-yggdrasil "
                          r"subnet=fd00::/64 count=(\d+) seconds=\d+ \(summary\)",
                          timeout=15, start=m)
    lines = [ln for ln in log_lines_since(gw, m) if "not-yggdrasil" in ln]
    if len(lines) != 2:
        raise AssertionError("%d refusals gave %d log lines, expected 2:\n%s"
                             % (n, len(lines), "\n".join(lines[:5])))
    if int(summary.group(1)) != n - 1:
        raise AssertionError("the summary counts %s of the %d held back"
                             % (summary.group(1), n - 1))
    gw.check_alive()


def directed_unavailable(w):
    """A client's directed unavailable to one contact (e.g. "appear
    offline to this contact") takes the user offline to that contact only;
    a directed available brings them back. It took the user offline to
    every contact."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    pipes = []
    for i, nick in ((13, "Dot"), (14, "Dash")):
        peer = w.keep(B.RawPeer(i, nick))
        B.add_contact(alice, peer.jid)
        p = peer.expect_dial(B.barev_of("Alice"))
        p.wait(B.b_is_pres(None), what="alice available at %s" % nick)
        pipes.append((peer, p))
    (dot, dot_pipe), (dash, dash_pipe) = pipes
    alice.presence(to=dot.cjid, type="unavailable")
    dot_pipe.wait(B.b_is_pres("unavailable"), what="unavailable at Dot")
    dash_pipe.expect_none(B.b_is_pres("unavailable"), 1.5,
                          "unavailable at Dash (the presence was for Dot)")
    if not dash_pipe.alive() or not dot_pipe.alive():
        raise AssertionError("a pipe closed after a directed unavailable")
    alice.presence(to=dot.cjid)
    dot_pipe.wait(B.b_is_pres(None), what="alice available again at Dot")
    gw.check_alive()
    for _peer, p in pipes:
        p.close()


SCENARIOS = [
    ("a directed unavailable affects that contact only",
     directed_unavailable),
    ("300 refused connections: one line and one summary",
     refusals_summarised, 60),
    ("an echoed from or to is cut between characters",
     echo_cut_between_characters),
    ("a header with a newline in from: one escaped log line", forged_header),
]


def tests():
    return B.server_tests(SCENARIOS)


if __name__ == "__main__":
    os.environ.setdefault("TEST_TOTAL_TIMEOUT", "300")
    bn.main(tests())
