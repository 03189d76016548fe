"""The configurations we ship and recommend, run as an operator runs them:
conf/barev-gateway.conf.example with only the site-specific values
replaced (bridgenet.example_conf), beside a real Prosody and a real
ejabberd, with Barev peers that dial the gateway the way the reference
clients do. Every recommendation of the README and the example that can
be run here has a scenario in this file.

Needs root, Prosody, ejabberd, Debian's /usr/bin/python3 (slixmpp):
    GATEWAY_BIN=$PWD/barev-gateway TEST_SRCDIR=$PWD \\
        /usr/bin/python3 tests/integration/test_shipped.py
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import barevnet as bn  # noqa: E402
import bridgenet as B  # noqa: E402
from bridgenet import C, b_is_pres, show  # noqa: E402

ALICE_B = B.barev_of("Alice")


def example_listen_ports():
    """The ports of the example's barev.listen, which must be the
    recommended pair: the specification's 5299 and the clients' 1337."""
    with open(B.EXAMPLE_CONF, encoding="utf-8") as f:
        m = re.search(r"(?m)^\s*listen\s*=\s*\[(.*)\];", f.read())
    if m is None:
        raise AssertionError("the example has no barev.listen line")
    ports = [int(p) for p in re.findall(r':(\d+)"', m.group(1))]
    if sorted(ports) != [1337, 5299]:
        raise AssertionError("the example listens on %s; the README "
                             "recommends 5299 and 1337" % ports)
    return ports


class ShippedWorld(B.BridgeWorld):
    """A BridgeWorld whose gateway runs the shipped example configuration."""

    def gateway(self):
        srv = self.server()
        if self.gw is None:
            self.gw = B.GatewayRun(
                self.dir, srv, "gateway",
                conf_text=lambda statedir: B.example_conf(srv, statedir))
        if not self.gw.alive():
            self.gw.start()
            h.show_log("gateway log", self.gw.log_path)
        return self.gw


def two_listen_ports(w):
    """Each listen port of the example takes a contact's pipe: the Pascal
    library dials 5299 every 6 s, the Pidgin plugin 1337. With the
    listener array grown by realloc, the first connection to any listener
    but the last crashed the gateway."""
    ports = example_listen_ports()
    gw = w.gateway()
    for port in ports:
        gw.wait_log(r"barev: listening on \[::\]:%d" % port)
    alice = w.registered_user("alice", "Alice")
    for i, port in enumerate(ports):
        # A Pidgin user adds alice: a stranger's pipe on this port, a
        # subscription request, alice accepts. (Adding the peer from
        # alice's side would make the gateway dial it, and in this one
        # namespace [::]:5299 is also the peer's address: the gateway
        # would reach itself.)
        peer = w.keep(B.RawPeer(12 + i, "Port%d" % port, listen=False))
        m = alice.mark()
        pipe = peer.dial(ALICE_B, port)
        alice.take(B.is_pres(peer.cjid, "subscribe"), since=m,
                   what="%s's request (it dialled port %d)" % (peer.jid, port))
        alice.presence(to=peer.cjid, type="subscribed")
        alice.presence(to=peer.cjid, type="subscribe")
        first = pipe.wait(lambda el: el.tag == C("presence"), 5,
                          "alice's presence on the pipe to port %d" % port)
        if first.get("type") is not None:
            raise AssertionError("port %d: alice is available, the peer "
                                 "got %s" % (port, show(first)))
        gw.check_alive()
        alice.take(B.is_pres(peer.cjid, None), since=m,
                   what="%s available (it dialled port %d)" % (peer.jid, port))
        w.state[port] = pipe
    # Both pipes are still up once both listeners have been used.
    for port in ports:
        if not w.state[port].alive():
            raise AssertionError("the pipe on port %d closed" % port)
        w.state[port].expect_none(b_is_pres("unavailable"), 0.5)
    gw.check_alive()


SCENARIOS = [
    ("the example config: a contact on each of its two listen ports",
     two_listen_ports, 60),
]


def tests():
    return B.server_tests(SCENARIOS, ShippedWorld)


if __name__ == "__main__":
    os.environ.setdefault("TEST_TOTAL_TIMEOUT", "300")
    bn.main(tests())
