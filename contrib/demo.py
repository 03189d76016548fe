"""The README's first command, after the build: in a private network
namespace, a private Prosody, barev-gateway as its component
barev.localhost at the Yggdrasil-style address 200:aaaa::1, a sample Barev
peer "inky" at 201:bbbb::1 (port 1337, behaving like the Pidgin plugin),
and an XMPP user alice who registers, adds inky, and exchanges one message
each way.

Run by contrib/demo.sh with Debian's /usr/bin/python3, as root. Everything
it starts, and the namespace, is removed at the end.
"""

import os
import re
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
import barevnet as bn  # noqa: E402
import harness as h  # noqa: E402

INKY = "inky@201:bbbb::1"
ALICE_BAREV = "alice@200:aaaa::1"
NS_REGISTER = "jabber:iq:register"
NS_GATEWAY = "jabber:iq:gateway"


def say(text):
    print("demo: " + text, flush=True)


def demo():
    tmp = h.tmp_root()
    prosody = h.Prosody(h.subdir("prosody"), host="::1")
    prosody.start()
    prosody.register("alice", "alice-pw")
    say("private Prosody on [::1]:%d, in a network namespace of its own"
        % prosody.c2s_port)

    inky = bn.RefPeer(INKY, [ALICE_BAREV])
    inky.listen(1337)
    say("sample Barev peer %s listening on port 1337" % INKY)

    conf = """component = {{ jid = "barev.localhost"; secret = "{secret}";
  host = "::1"; port = {cport}; }};
barev = {{ address = "200:aaaa::1"; listen = [ "[200:aaaa::1]:5299" ];
  default_port = 1337; }};
storage = {{ path = "{dir}/state.db"; }};
""".format(secret=prosody.secret, cport=prosody.component_port, dir=tmp)
    gw = h.Gateway(tmp, prosody, conf_text=conf, args=())
    gw.start()
    gw.wait_log(h.LINK_UP_RE % (re.escape(prosody.component_domain),
                                prosody.component_port), timeout=10)
    say("barev-gateway connected as barev.localhost; Barev address "
        "200:aaaa::1 (log: %s)" % gw.log_path)

    alice = h.Client("alice@localhost", "alice-pw", prosody)
    q = ET.Element("{%s}query" % NS_REGISTER)
    ET.SubElement(q, "{%s}username" % NS_REGISTER).text = "alice"
    alice.iq("barev.localhost", q, type="set")
    say("alice@localhost registered; her Barev address is " + ALICE_BAREV)

    q = ET.Element("{%s}query" % NS_GATEWAY)
    ET.SubElement(q, "{%s}prompt" % NS_GATEWAY).text = INKY
    r = alice.iq("barev.localhost", q, type="set")
    contact = r.xml.find("{%s}query/{%s}jid" % (NS_GATEWAY, NS_GATEWAY)).text
    say("inky appears to XMPP users as %s" % contact)
    alice.send_raw("<presence to='%s' type='subscribe'/>" % contact)
    alice.send_raw("<presence/>")

    inky.wait(lambda: ALICE_BAREV in inky.open_conversations(), 15,
              "a pipe from the gateway")
    say("the gateway dialled inky: the Barev pipe is open")
    alice.send_raw("<message to='%s' type='chat'><body>Barev, inky! "
                   "Greetings from XMPP.</body></message>" % contact)
    el = inky.wait_stanza(ALICE_BAREV, lambda e: bn.is_message(e), 15,
                          "alice's message")
    say("inky received: %r" % el.findtext("{jabber:client}body"))

    inky.send(ALICE_BAREV, '<message type="chat"><body>Hello alice, '
              'greetings from Barev.</body></message>')
    got = alice.wait_for(
        lambda s: s.name == "message" and s["body"], 15, "inky's reply")
    say("alice received from %s: %r" % (got["from"], got["body"]))

    alice.disconnect()
    rc, elapsed = gw.stop_clean()
    say("gateway stopped: exit %s after %.2fs; everything is cleaned up"
        % (rc, elapsed))
    prosody.stop()


if __name__ == "__main__":
    h.require_root()
    bn.main([("one message each way between XMPP and Barev", demo, 90)])
