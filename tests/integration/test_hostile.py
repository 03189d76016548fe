"""A hostile mesh node against the real gateway beside a real Prosody and
a real ejabberd (bridgenet's worlds): what it sends must not forge the
gateway's log, nor choose how much of it there is.

Needs root, Prosody, ejabberd, Debian's /usr/bin/python3 (slixmpp):
    GATEWAY_BIN=$PWD/barev-gateway TEST_SRCDIR=$PWD \\
        /usr/bin/python3 tests/integration/test_hostile.py
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import barevnet as bn  # noqa: E402
import bridgenet as B  # noqa: E402

# How every line the gateway writes to its log begins.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z barev-gateway "
                      r"(error|warning|info|debug|trace): ")
FORGED = "2026-12-07T12:00:00.000Z barev-gateway info: bridge: registered"


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
    attacker = bn.peer_addr(7)
    for frm in ("x@%s&#10;%s" % (attacker, FORGED),
                "x@%s&#13;%s" % (attacker, FORGED),
                'x@%s" reason=ok' % attacker.replace("7", "8")):
        c = w.keep(bn.connect(attacker, B.GW, gw.listen_port))
        c.send(('<?xml version="1.0" encoding="UTF-8" ?>\n<stream:stream '
                'xmlns="jabber:client" xmlns:stream="http://etherx.jabber.'
                'org/streams" from="%s" to="Alice@%s">' % (
                    frm.replace('"', "&quot;"), B.GW)).encode())
        # Refused after the header: our header, a stream error, the end.
        c.wait_stream_error(5)
        c.close()
    gw.wait_log(r"rejected reason=[a-z-]+ peer=%s from=" % re.escape(attacker),
                start=m, count=3)
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
    if not any('from="x@%s\\" reason=ok' % attacker.replace("7", "8") in ln
               for ln in refusals):
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


SCENARIOS = [
    ("an echoed from or to is cut between characters",
     echo_cut_between_characters),
    ("a header with a newline in from: one escaped log line", forged_header),
]


def tests():
    out = []
    for cls in B.SERVERS:
        world = B.BridgeWorld(cls)
        for sc in SCENARIOS:
            out.append(h.Test("%s: %s" % (cls.name, sc[0]), sc[1], world,
                              sc[2] if len(sc) > 2 else 60))
    return out


if __name__ == "__main__":
    os.environ.setdefault("TEST_TOTAL_TIMEOUT", "300")
    bn.main(tests())
