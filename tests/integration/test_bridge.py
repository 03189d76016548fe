"""The bridge, end to end: real XMPP users on a real Prosody and a real
ejabberd, the gateway as their component, and raw Barev peers, all inside a
network namespace of this script's own (barevnet.main).

Each server gets one world (server + gateway + users), shared by its
scenarios in order; a second gateway (barev2.localhost, Barev address
200:aaaa::2, message lifetime 2 s) runs beside it for the expiry scenario.

Needs root, Prosody, ejabberd, Debian's /usr/bin/python3 (slixmpp):
    GATEWAY_BIN=$PWD/barev-gateway TEST_SRCDIR=$PWD \\
        /usr/bin/python3 tests/integration/test_bridge.py
TEST_ONLY=REGEX runs only the matching scenarios (e.g. "prosody: " or
"ejabberd: "); a scenario sets up what it needs if an earlier one did not.
TEST_TIMES=1 prints durations.
"""

import calendar
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import barevnet as bn  # noqa: E402
import bridgenet as B  # noqa: E402
from bridgenet import (COMPONENT, COMPONENT2, GW2, NS_CHATSTATES,  # noqa: E402
                       NS_DELAY, NS_GATEWAY, NS_REGISTER, NS_XDATA, NS_XHTML,
                       NS_XHTML_IM, NS_RECEIPTS, NS_VCARD, C, q,
                       show, is_pres, is_msg, is_state, is_receipt, is_error,
                       b_is_pres, b_is_msg, b_is_state, b_is_ack, body_of,
                       chat_state, error_cond, header)

ALICE_B = B.barev_of("Alice")          # alice's Barev identity
BOB_B = B.barev_of("Bob")
INKY = "Inky@%s" % bn.peer_addr(1)     # raw peer: contact and presence
PINKY_NICK, PINKY_I = "Pinky", 2       # RefPeer: store-and-forward
CLYDE = "Clyde@%s" % bn.peer_addr(3)   # raw peer shared by alice and bob
BLINKY_NICK, BLINKY_I = "Blinky", 4    # RefPeer: kill -9 in a burst
SUE_NICK, SUE_I = "Sue", 5             # RefPeer: restart of the gateway
DOT_NICK, DOT_I = "Dot", 6             # RefPeer: disk full
OTTO_NICK, OTTO_I = "Otto", 10          # raw peer: server outage
VIC_NICK, VIC_I = "Vic", 11             # raw peer: gone during a crash
GHOST = "Ghost@%s" % bn.peer_addr(9)   # nobody there (expiry)

EXPIRY_LIFETIME = 2.0
EXPIRY_CHECK_EVERY = 60.0   # the gateway looks for expired messages this often


def ok_result(reply, what):
    if reply.get("type") != "result":
        raise AssertionError("%s: expected a result, got %s" % (what,
                                                               show(reply)))
    return reply


def expect_error(reply, etype, cond, what):
    e = error_cond(reply)
    if e is None or e[1] != cond or (etype and e[0] != etype):
        raise AssertionError("%s: expected error %s/%s, got %s"
                             % (what, etype, cond, show(reply)))
    return e


def register_query(nick=None, remove=False):
    if remove:
        return '<query xmlns="%s"><remove/></query>' % NS_REGISTER
    return ('<query xmlns="%s"><username>%s</username></query>'
            % (NS_REGISTER, B.xml_escape(nick)))


def prompt(u, text):
    return u.iq(COMPONENT, '<query xmlns="%s"><prompt>%s</prompt></query>'
                % (NS_GATEWAY, B.xml_escape(text)), "set")


def roster_item(u, jid, want, timeout=3.0):
    """Wait until u's roster item for jid has a subscription in want (None:
    no item)."""
    deadline = time.monotonic() + timeout
    while True:
        r = u.iq(u.bare, '<query xmlns="jabber:iq:roster"/>')
        sub = None
        for it in r.iter("{jabber:iq:roster}item"):
            if B.jid_eq(it.get("jid"), jid):
                sub = it.get("subscription")
        if sub in want:
            return sub
        if time.monotonic() > deadline:
            raise AssertionError("%s's roster: %s has subscription %r, "
                                 "expected one of %s"
                                 % (u.bare, jid, sub, want))
        time.sleep(0.2)


def assert_eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, expected %r" % (what, got, want))


# ---------------------------------------------------------------------------
# expiry, part 1: a second gateway whose message lifetime is 2 s; alice
# writes to a Barev address where nobody listens. Part 2 (the last
# scenario) waits for the error while the other scenarios run.

def expiry_setup(w):
    srv = w.server()
    w.gw2 = B.GatewayRun(w.dir, srv, "gateway2", component=COMPONENT2,
                         address=GW2, lifetime=EXPIRY_LIFETIME,
                         allowed=B.ALLOWED)
    w.gw2.start()
    alice = w.user("alice")
    B.register(alice, "Alice", gw=COMPONENT2)
    w.registered[(COMPONENT2, "alice")] = "Alice"
    # Past the gateway's first look at the queue (1 s after its start).
    time.sleep(1.2)
    ghost = B.contact_jid(GHOST, COMPONENT2)
    m = alice.mark()
    alice.message(ghost, "into the void", mid="exp-1", receipt=True)
    w.state["expiry"] = (time.monotonic(), m, ghost, alice)
    alice.expect_none(is_error(ghost), 1.0, since=m)


def expiry_check(w):
    if "expiry" not in w.state:
        expiry_setup(w)
    sent_at, m, ghost, sender = w.state["expiry"]
    alice = w.user("alice")
    if alice is not sender:
        m = 0   # alice logged in again since (same full JID)
    left = sent_at + EXPIRY_LIFETIME + EXPIRY_CHECK_EVERY + 5 - time.monotonic()
    err = alice.take(is_error(ghost, "message"), max(left, 3.0), since=m,
                     what="the expiry error for exp-1")
    waited = time.monotonic() - sent_at
    assert_eq(err.get("id"), "exp-1", "expiry error id")
    assert_eq(err.get("to"), alice.full, "expiry error goes to the sender")
    etype, cond, text = error_cond(err)
    assert_eq(cond, "recipient-unavailable", "expiry error condition")
    if not text or GHOST not in text:
        raise AssertionError("expiry error text does not name %s: %r"
                             % (GHOST, text))
    h._diag("expiry error after %.1fs: type=%s text=%r" % (waited, etype,
                                                          text))
    # Expired means dropped: when Ghost appears, nothing is delivered.
    ghost_peer = w.raw_peer(9, "Ghost")
    p = ghost_peer.expect_dial(B.barev_of("Alice", GW2), timeout=6)
    p.expect_none(b_is_msg(), 1.5, "a message (it expired)")
    w.gw2.check_alive()


# ---------------------------------------------------------------------------

def registration(w):
    gw = w.gateway()
    alice = w.user("alice")
    # The form (XEP-0077 with XEP-0004).
    r = ok_result(alice.iq(COMPONENT, '<query xmlns="%s"/>' % NS_REGISTER),
                  "form")
    qe = r.find(q(NS_REGISTER, "query"))
    if qe is None:
        raise AssertionError("register get: no query: %s" % show(r))
    if qe.find(q(NS_REGISTER, "registered")) is not None:
        raise AssertionError("<registered/> before registering: %s" % show(r))
    assert_eq(B.child_text(qe, NS_REGISTER, "username"), "alice",
              "default username")
    x = qe.find(q(NS_XDATA, "x"))
    if x is None or x.get("type") != "form":
        raise AssertionError("register get: no x:data form: %s" % show(r))
    fields = {f.get("var"): f for f in x.findall(q(NS_XDATA, "field"))}
    if "username" not in fields or "FORM_TYPE" not in fields:
        raise AssertionError("form fields %s: %s" % (sorted(fields), show(r)))
    assert_eq(B.child_text(fields["FORM_TYPE"], NS_XDATA, "value"),
              NS_REGISTER, "FORM_TYPE")
    assert_eq(fields["FORM_TYPE"].get("type"), "hidden", "FORM_TYPE type")
    assert_eq(B.child_text(fields["username"], NS_XDATA, "value"), "alice",
              "form's default username")

    # Submitting the form: result, a subscription request, a welcome.
    if w.registered.get((COMPONENT, "alice")) != "Alice":
        welcome = B.register(alice, "Alice", form=True)
        w.registered[(COMPONENT, "alice")] = "Alice"
        if ALICE_B not in (body_of(welcome) or ""):
            raise AssertionError("the welcome message does not give the "
                                 "Barev address %s: %s" % (ALICE_B,
                                                           show(welcome)))
        assert_eq(welcome.get("type"), "chat", "welcome type")
        gw.wait_log(r"bridge: registered jid=alice@localhost "
                    r"barev=Alice@200:aaaa::1")
    r = ok_result(alice.iq(COMPONENT, '<query xmlns="%s"/>' % NS_REGISTER),
                  "form when registered")
    qe = r.find(q(NS_REGISTER, "query"))
    if qe.find(q(NS_REGISTER, "registered")) is None:
        raise AssertionError("no <registered/> once registered: %s" % show(r))
    assert_eq(B.child_text(qe, NS_REGISTER, "username"), "Alice",
              "username once registered")
    # Same nick again: fine; another nick: conflict.
    ok_result(alice.iq(COMPONENT, register_query("Alice"), "set"),
              "registering again with the same nick")
    expect_error(alice.iq(COMPONENT, register_query("Alicia"), "set"),
                 None, "conflict", "changing the nick")

    # Bad nicks, taken nicks (case does not matter), then bob's own.
    bob = w.user("bob")
    if w.registered.get((COMPONENT, "bob")) is None:
        for bad in ("bad nick", "bo@b", "bo/b", "bo:b", "x" * 65):
            expect_error(bob.iq(COMPONENT, register_query(bad), "set"),
                         "modify", "not-acceptable", "nick %r" % bad)
        for taken in ("Alice", "alice", "ALICE"):
            expect_error(bob.iq(COMPONENT, register_query(taken), "set"),
                         "cancel", "conflict", "taken nick %r" % taken)
        B.register(bob, "Bob")
        w.registered[(COMPONENT, "bob")] = "Bob"

    # Not allowed: mallory is in neither access.domains nor access.jids.
    mallory = w.user("mallory")
    expect_error(mallory.iq(COMPONENT, register_query("Mallory"), "set"),
                 "cancel", "not-allowed", "mallory registering")

    # Not registered: carol (allowed) writes to and subscribes to a contact.
    carol = w.user("carol")
    inky = B.contact_jid(INKY)
    m = carol.mark()
    carol.message(inky, "hello?", mid="c1")
    e = carol.take(is_error(inky, "message"), since=m)
    assert_eq(error_cond(e)[1], "registration-required",
              "carol's message, unregistered")
    assert_eq(error_cond(e)[0], "auth", "error type")
    carol.presence(to=inky, type="subscribe")
    e = carol.take(is_error(inky, "presence"), since=m)
    assert_eq(error_cond(e)[1], "registration-required",
              "carol's subscription, unregistered")
    carol.presence(to=COMPONENT, type="subscribe")
    e = carol.take(is_error(COMPONENT, "presence"), since=m)
    assert_eq(error_cond(e)[1], "registration-required",
              "carol subscribing to the gateway, unregistered")
    w.drop_user("carol")
    w.drop_user("mallory")
    gw.check_alive()


def gateway_prompt(w):
    w.gateway()
    alice = w.user("alice")
    r = ok_result(alice.iq(COMPONENT, '<query xmlns="%s"/>' % NS_GATEWAY),
                  "jabber:iq:gateway get")
    qe = r.find(q(NS_GATEWAY, "query"))
    if qe is None or qe.find(q(NS_GATEWAY, "desc")) is None or \
            qe.find(q(NS_GATEWAY, "prompt")) is None:
        raise AssertionError("gateway get: want desc and prompt: %s"
                             % show(r))
    want = r"\49nky\40201\3abbbb\3a\3a1@barev.localhost"
    for text in ("Inky@201:bbbb::1", "Inky@0201:BBBB:0:0:0:0:0:0001",
                 "Inky@201:bbbb:0::1"):
        r = ok_result(prompt(alice, text), "prompt %r" % text)
        assert_eq(B.child_text(r.find(q(NS_GATEWAY, "query")), NS_GATEWAY,
                               "jid"), want, "jid for %r" % text)
    r = ok_result(prompt(alice, "inky@201:bbbb::1"), "lower-case nick")
    assert_eq(B.child_text(r.find(q(NS_GATEWAY, "query")), NS_GATEWAY, "jid"),
              r"inky\40201\3abbbb\3a\3a1@barev.localhost", "lower-case nick")
    # 300::/8 is Yggdrasil too (a node's routed subnet).
    r = ok_result(prompt(alice, "Sub@300:1:2:3::4"), "a 300::/8 address")
    assert_eq(B.child_text(r.find(q(NS_GATEWAY, "query")), NS_GATEWAY, "jid"),
              B.contact_jid("Sub@300:1:2:3::4"), "a 300::/8 address")
    for bad in ("nonsense", "inky@fd00::5", "inky@10.0.0.1", "in ky@201::1",
                "@201:bbbb::1", "inky@", "inky@201:bbbb::1::2"):
        expect_error(prompt(alice, bad), "modify", "jid-malformed",
                     "prompt %r" % bad)
    # Writing to a JID of the gateway that names no Barev address.
    m = alice.mark()
    for bad in ("nonsense@" + COMPONENT,
                B.escape_local("inky@fd00::5") + "@" + COMPONENT):
        alice.message(bad, "anyone there?", mid="jm")
        e = alice.take(is_error(bad, "message"), since=m)
        assert_eq(error_cond(e)[1], "jid-malformed", "message to %s" % bad)


# ---------------------------------------------------------------------------
# Inky, a raw peer: contact, presence both ways, offline delivery,
# messages, receipts, typing, removal.

def inky_peer(w):
    return w.raw_peer(1, "Inky")


def inky_pipe(w):
    """alice online with Inky as a contact and a pipe up (set up here if an
    earlier scenario did not leave one)."""
    alice = w.registered_user("alice", "Alice")
    pipe = w.state.get("inky_pipe")
    if pipe is not None and pipe.alive():
        return alice, pipe
    peer = inky_peer(w)
    if not w.state.get("inky_contact"):
        B.add_contact(alice, INKY)
        w.state["inky_contact"] = True
    pipe = peer.expect_dial(ALICE_B)
    pipe.wait(b_is_pres(None))
    w.state["inky_pipe"] = pipe
    return alice, pipe


def contact_and_presence(w):
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()   # plain available, whatever an earlier test left
    peer = inky_peer(w)
    cj = peer.cjid
    # Subscribing adds the contact: subscribed, and a subscribe back with
    # the nick (XEP-0172); alice is online, so the gateway dials at once.
    B.add_contact(alice, INKY)
    w.state["inky_contact"] = True
    m = alice.mark()
    pipe = peer.expect_dial(ALICE_B, presence=b"<presence><show>away</show>"
                            b"<status>lunch</status></presence>")
    w.state["inky_pipe"] = pipe
    first = pipe.wait(lambda el: el.tag == C("presence"), 5,
                      "alice's presence")
    if first.get("type") is not None or first.find(C("show")) is not None:
        raise AssertionError("alice is plainly available; the peer got %s"
                             % show(first))
    gw.wait_log(r"pair Alice@200:aaaa::1>Inky@201:bbbb::1: up")

    # Peer -> user.
    p = alice.take(is_pres(cj, None), since=m)
    assert_eq(B.child_text(p, "jabber:client", "show"), "away", "show")
    assert_eq(B.child_text(p, "jabber:client", "status"), "lunch", "status")
    # The server probes the new contact around now; the gateway rightly
    # answers with the same presence. Let that pass first.
    time.sleep(1.0)
    m = alice.mark()
    pipe.send(b"<presence><show>away</show><status>lunch</status></presence>")
    alice.expect_none(is_pres(cj, B.ANY), 1.0, since=m,
                      what="presence (a duplicate must be suppressed)")
    pipe.send(b"<presence><show>offline</show></presence>")   # Pascal's offline
    alice.take(is_pres(cj, "unavailable"), since=m)
    pipe.send(b"<presence/>")
    p = alice.take(is_pres(cj, None), since=m)
    if p.find(C("show")) is not None:
        raise AssertionError("plain presence became %s" % show(p))
    pipe.send(b"<presence><show>dnd</show><status>busy</status></presence>")
    p = alice.take(is_pres(cj, None), since=m)
    assert_eq(B.child_text(p, "jabber:client", "show"), "dnd", "show dnd")

    # User -> peer: the aggregate of alice's resources.
    second = w.user("alice", "second", online=False)
    second.presence(show="xa", status="zzz")
    pipe.expect_none(lambda el: el.tag == C("presence"), 1.5,
                     "presence (a less available resource changed nothing)")
    alice.presence(show="away", status="out")
    p = pipe.wait(b_is_pres(None))
    assert_eq((B.child_text(p, "jabber:client", "show"),
               B.child_text(p, "jabber:client", "status")), ("away", "out"),
              "aggregate: away beats xa")
    second.presence(show="chat")
    p = pipe.wait(b_is_pres(None))
    if p.find(C("show")) is not None or p.find(C("status")) is not None:
        raise AssertionError("chat must become plain available: %s" % show(p))
    w.drop_user("alice", "second")
    p = pipe.wait(b_is_pres(None))
    assert_eq((B.child_text(p, "jabber:client", "show"),
               B.child_text(p, "jabber:client", "status")), ("away", "out"),
              "the other resource left")
    alice.presence(show="xa", status="gone")
    p = pipe.wait(b_is_pres(None))
    assert_eq((B.child_text(p, "jabber:client", "show"),
               B.child_text(p, "jabber:client", "status")), ("away", "gone"),
              "xa becomes away")
    alice.presence(show="xa", status="gone")
    pipe.expect_none(lambda el: el.tag == C("presence"), 1.0,
                     "presence (the aggregate did not change)")
    alice.presence(show="dnd")
    p = pipe.wait(b_is_pres(None))
    assert_eq((B.child_text(p, "jabber:client", "show"),
               B.child_text(p, "jabber:client", "status")), ("dnd", None),
              "dnd")
    alice.presence()
    p = pipe.wait(b_is_pres(None))
    if p.find(C("show")) is not None:
        raise AssertionError("plain available: %s" % show(p))

    # The last resource leaves: unavailable, then the stream end.
    w.drop_user("alice")
    pipe.wait(b_is_pres("unavailable"))
    pipe.wait_end(5)
    w.state.pop("inky_pipe", None)
    peer.listener.expect_no_connection(1.5)
    gw.check_alive()


def offline_delivery(w):
    """alice offline: Inky dials in and writes; the server keeps the
    message; alice logs in, gets it, and the gateway uses Inky's pipe (and
    tells Inky she is online)."""
    gw = w.gateway()
    if not w.state.get("inky_contact"):
        inky_pipe(w)
    w.drop_user("alice")
    w.drop_user("alice", "second")
    peer = inky_peer(w)
    time.sleep(0.5)
    mark = gw.mark()
    pipe = peer.dial(ALICE_B, gw.listen_port)
    pipe.send(b'<message type="chat"><body>while you were away</body>'
              b'</message>')
    gw.wait_log(r"pair Alice@200:aaaa::1>Inky@201:bbbb::1: up", 5,
                start=mark)
    time.sleep(0.5)
    alice = w.user("alice")
    m0 = 0
    msg = alice.take(is_msg(peer.cjid, "while you were away"), 8, since=m0,
                     what="the message sent while alice was offline")
    assert_eq(msg.get("type"), "chat", "type")
    assert_eq(msg.get("to"), "alice@localhost", "to (the bare JID)")
    # Back online: the gateway tells Inky on the pipe it has, and alice
    # learns Inky's presence (the gateway answers the server's probe).
    # (While alice was offline the gateway said so: unavailable.)
    soft = B.Soft()
    soft.check(pipe.wait, b_is_pres(None), 5,
               "alice's presence on the pipe Inky opened, once she is online")
    alice.take(is_pres(peer.cjid, None), 5, since=m0,
               what="Inky's presence after login")
    peer.listener.expect_no_connection(1.0)
    w.state["inky_pipe"] = pipe
    gw.check_alive()
    soft.done()


def messages(w):
    gw = w.gateway()
    alice, pipe = inky_pipe(w)
    cj = B.contact_jid(INKY)
    # Markup typed by the user, with <active/> as Conversations/Gajim/Dino
    # send it: Pidgin must show it as typed, not render it.
    typed = '<b>x</b> & \u2603 "q"'
    alice.message(cj, typed, mid="x1", state="active")
    m = pipe.wait(b_is_msg(typed))
    assert_eq(m.get("type"), "chat", "type")
    if chat_state(m) is not None:
        raise AssertionError("chat state not stripped from a message with a "
                             "body (the plugin drops it): %s" % show(m))
    assert_eq(B.plugin_shows(m), typed, "what Pidgin shows for %s" % show(m))
    if b"&lt;b&gt;x&lt;/b&gt; &amp; " not in bytes(pipe.c.raw):
        raise AssertionError("the escaped text is not on the wire: %s"
                             % pipe.c.dump())
    pipe.ack(pipe.wait(b_is_ack))

    # DEL is an XML character but not one to send the plugin.
    alice.message(cj, "del\x7fchar", mid="x1b")
    pipe.wait_msg("delchar")

    # The typeable form of the contact JID.
    alice.message(B.typeable_jid(INKY), "typed address", mid="x2")
    pipe.wait_msg("typed address")

    # The user's own XHTML-IM passes through.
    alice.message(cj, "bold move", mid="x3", extra=(
        '<html xmlns="%s"><body xmlns="%s"><p><strong>bold</strong> move</p>'
        '</body></html>' % (NS_XHTML_IM, NS_XHTML)))
    m = pipe.wait_msg("bold move")
    strong = m.find(".//" + q(NS_XHTML, "font") + "//" + q(NS_XHTML, "strong"))
    if strong is None or strong.text != "bold":
        raise AssertionError("the user's XHTML-IM did not reach Pidgin (the "
                             "plugin reads it only inside <font>): %s"
                             % show(m))
    assert_eq(B.plugin_shows(m), "bold move", "what Pidgin shows")

    # Barev -> user: body, XHTML-IM passed through, a generated id.
    mark = alice.mark()
    pipe.send('<message type="chat"><body>hello &lt;world&gt; &amp; co</body>'
              '<html xmlns="%s"><body xmlns="%s"><b>hello</b> &lt;world&gt; '
              '&amp; co</body></html></message>' % (NS_XHTML_IM, NS_XHTML))
    m = alice.take(is_msg(cj, "hello <world> & co"), since=mark)
    assert_eq(m.get("type"), "chat", "type")
    assert_eq(m.get("to"), "alice@localhost", "to the bare JID")
    if not m.get("id"):
        raise AssertionError("no id: %s" % show(m))
    b = m.find(".//" + q(NS_XHTML, "b"))
    if b is None or b.text != "hello":
        raise AssertionError("XHTML-IM not passed through: %s" % show(m))
    pipe.send(b'<message type="chat"><body>second</body></message>')
    m2 = alice.take(is_msg(cj, "second"), since=mark)
    if m2.get("id") == m.get("id"):
        raise AssertionError("two messages with id %s" % m.get("id"))
    # Typing, both XEP-0085 and Pidgin's jabber:x:event.
    pipe.send('<message type="chat"><composing xmlns="%s"/></message>'
              % NS_CHATSTATES)
    alice.take(is_state(cj, "composing"), since=mark)
    pipe.send(b'<message type="chat"><x xmlns="jabber:x:event"><composing/>'
              b'</x></message>')
    alice.take(is_state(cj, "composing"), since=mark,
               what="composing from jabber:x:event")
    # The plugin asks for our vCard.
    pipe.send('<iq type="get" id="vc1" from="%s" to="%s"><vCard xmlns="%s"/>'
              '</iq>' % (INKY, ALICE_B, NS_VCARD))
    r = pipe.wait(lambda el: el.tag == C("iq") and el.get("id") == "vc1")
    assert_eq(r.get("type"), "result", "vCard answer")
    if r.find(q(NS_VCARD, "vCard")) is None:
        raise AssertionError("vCard answer without vCard: %s" % show(r))
    gw.check_alive()


def receipts(w):
    gw = w.gateway()
    alice, pipe = inky_pipe(w)
    cj = B.contact_jid(INKY)
    # A receipt only once the peer answered the ack ping.
    m = alice.mark()
    alice.message(cj, "receipt please", mid="r1", receipt=True)
    msg = pipe.wait(b_is_msg("receipt please"))
    if msg.find(q(NS_RECEIPTS, "request")) is not None:
        raise AssertionError("the receipt request went to Barev: %s"
                             % show(msg))
    ack = pipe.wait(b_is_ack)
    alice.expect_none(is_receipt(cj), 1.5, since=m,
                      what="receipt before the peer answered the ack ping")
    pipe.ack(ack)
    r = alice.take(is_receipt(cj, "r1"), since=m)
    if body_of(r) is not None:
        raise AssertionError("a receipt with a body: %s" % show(r))
    # No request, no receipt.
    alice.message(cj, "no receipt wanted", mid="r2")
    pipe.wait_msg("no receipt wanted")
    alice.expect_none(is_receipt(cj, "r2"), 1.0, since=m)
    # The peer never answers: assumed delivered after ping_timeout (3 s),
    # no receipt, not sent again.
    t0 = time.monotonic()
    alice.message(cj, "unanswered", mid="r3", receipt=True)
    pipe.wait(b_is_msg("unanswered"))
    pipe.wait(b_is_ack)
    alice.expect_none(is_receipt(cj, "r3"), 3.0 + 2.0 - (time.monotonic() - t0),
                      since=m)
    # A later confirmed message gets its receipt; r3 still gets none.
    alice.message(cj, "confirmed later", mid="r4", receipt=True)
    pipe.wait_msg("confirmed later")
    alice.take(is_receipt(cj, "r4"), since=m)
    alice.expect_none(is_receipt(cj, "r3"), 0.5, since=m)
    pipe.expect_none(b_is_msg("unanswered"), 0.5, "r3 sent again")
    # The pipe dies before the peer answered (a bare TCP close, as the
    # Pascal library closes): the message is sent again on the next pipe.
    alice.message(cj, "lost pipe", mid="r5", receipt=True)
    pipe.wait(b_is_msg("lost pipe"))
    pipe.wait(b_is_ack)
    pipe.close()
    w.state.pop("inky_pipe", None)
    alice.take(is_pres(cj, "unavailable"), since=m,
               what="Inky unavailable once the pipe closed")
    p2 = inky_peer(w).expect_dial(ALICE_B, timeout=8)
    w.state["inky_pipe"] = p2
    p2.wait(b_is_pres(None))
    p2.wait_msg("lost pipe")
    alice.take(is_receipt(cj, "r5"), since=m)
    for old in ("receipt please", "no receipt wanted", "unanswered",
                "confirmed later"):
        p2.expect_none(b_is_msg(old), 0.1, "%r sent again" % old)
    gw.check_alive()


def typing(w):
    gw = w.gateway()
    alice, pipe = inky_pipe(w)
    cj = B.contact_jid(INKY)
    alice.message(cj, state="composing")
    times = []
    deadline = time.monotonic() + 4.2
    seen = set()
    while time.monotonic() < deadline:
        pipe.pump()
        for i, el in pipe.c.untaken():
            if i not in seen and b_is_state("composing")(el):
                seen.add(i)
                pipe.c.taken.add(i)
                times.append(time.monotonic())
            elif i not in seen and el.tag == C("message"):
                raise AssertionError("while composing the peer got %s"
                                     % show(el))
        time.sleep(0.02)
    if len(times) < 3:
        raise AssertionError("composing sent %d times in 4 s; the plugin's "
                             "indicator fades after ~1 s, so it must repeat "
                             "~1/s" % len(times))
    gaps = [b - a for a, b in zip(times, times[1:])]
    if max(gaps) > 1.6 or min(gaps) < 0.5:
        raise AssertionError("composing repeated at intervals %s; expected "
                             "about 1 s" % ["%.2f" % g for g in gaps])
    h._diag("composing repeats: %d, gaps %s" % (len(times),
                                                 ["%.2f" % g for g in gaps]))
    # paused -> one body-less <active/>, then silence.
    alice.message(cj, state="paused")
    pipe.wait(b_is_state("active"), 2)
    pipe.expect_none(lambda el: el.tag == C("message"), 2.0,
                     "message after paused (no more composing, one active)")
    # composing, then the text: the text carries no chat state, and the
    # repeats stop.
    alice.message(cj, state="composing")
    pipe.wait(b_is_state("composing"), 2)
    alice.message(cj, "done typing", mid="t1", state="active")
    m = pipe.wait_msg("done typing")
    if chat_state(m) is not None:
        raise AssertionError("chat state on a message with a body: %s"
                             % show(m))
    pipe.expect_none(b_is_state("composing"), 2.0,
                     "composing after the message was sent")
    gw.check_alive()


# 45,000 '&' are 225 kB on the client stream (under Prosody's default
# c2s_stanza_size_limit of 256 KiB; ejabberd sets none) and about 630 kB
# on Barev (&amp; in the body, &amp;amp; in the XHTML-IM part): over
# limits.output_bytes (256 KiB here) and the peer's stanza_bytes (64 KiB).
BIG_AMPS = 45000


def big_message(w):
    gw = w.gateway()
    alice, pipe = inky_pipe(w)
    cj = B.contact_jid(INKY)
    start = gw.mark()
    m = alice.mark()
    alice.message(cj, "&" * BIG_AMPS, mid="big1")
    e = alice.take(is_error(cj, "message", "policy-violation"), since=m,
                   timeout=8, what="an error for a message too big for Barev")
    text = error_cond(e)[2]
    if "65536" not in text:
        raise AssertionError("the error does not name the limit (65536 "
                             "bytes): %r" % text)
    assert_eq(e.get("id"), "big1", "error id")
    # The next message flows on the same pipe, which nothing closed.
    alice.message(cj, "after the big one", mid="big2")
    pipe.wait_msg("after the big one", timeout=8)
    if not pipe.alive():
        raise AssertionError("the pipe closed")
    log = gw.log_since(start)
    if "slow-reader" in log:
        raise AssertionError("a pipe closed as slow-reader:\n%s" % log)
    gw.check_alive()


def lost_attempts(w):
    """A message whose pipe dies right after it was written, on every
    pipe: after limits.message_attempts (3) its sender hears, and it
    blocks nothing behind it."""
    gw = w.gateway()
    alice, pipe = inky_pipe(w)
    peer = inky_peer(w)
    cj = B.contact_jid(INKY)
    m = m0 = alice.mark()
    alice.message(cj, "doomed", mid="d1")
    for attempt in range(3):
        pipe.wait(b_is_msg("doomed"), timeout=8,
                  what="'doomed', attempt %d" % (attempt + 1))
        pipe.close()
        w.state.pop("inky_pipe", None)
        alice.take(is_pres(cj, "unavailable"), since=m)
        m2 = alice.mark()
        pipe = peer.expect_dial(ALICE_B, timeout=8)
        pipe.wait(b_is_pres(None))
        alice.take(is_pres(cj), since=m2)
        m = m2
    w.state["inky_pipe"] = pipe
    e = alice.take(is_error(cj, "message", "recipient-unavailable"),
                   since=m0, timeout=5,
                   what="recipient-unavailable after 3 lost pipes")
    assert_eq(e.get("id"), "d1", "error id")
    if "3" not in error_cond(e)[2]:
        raise AssertionError("the error does not say how often it was "
                             "tried: %r" % error_cond(e)[2])
    alice.message(cj, "after doomed", mid="d2")
    pipe.wait_msg("after doomed", timeout=8)
    pipe.expect_none(b_is_msg("doomed"), 1.0, "'doomed' sent a 4th time")
    gw.check_alive()


FLOOD = 2000   # presences (and chat states) one contact sends in a burst
FLOOD_SHOWN = 12   # at most this many reach the user (0.5 s apart, 3 s)


def any_pres(frm):
    def match(el):
        return el.tag == C("presence") and B.jid_eq(el.get("from"), frm)
    return match


def flood(w):
    """A contact flaps away/available FLOOD times in one burst: the user
    sees a bounded number of presences, the last one the final state; the
    same for typing."""
    gw = w.gateway()
    alice, pipe = inky_pipe(w)
    cj = B.contact_jid(INKY)
    away, avail = b"<presence><show>away</show></presence>", b"<presence/>"
    m = alice.mark()
    # Ends with away: the burst is avail, away, avail, ..., away.
    pipe.send(b"".join(away if i % 2 else avail for i in range(FLOOD)))
    alice.take(lambda el: any_pres(cj)(el) and el.get("type") is None and
               el.findtext(C("show")) == "away", since=m, timeout=8,
               what="away, the final state")
    time.sleep(2.0)   # anything that still comes, comes now
    got = alice.all(any_pres(cj), since=m)
    h._diag("%d presences of %d reached the user" % (len(got), FLOOD))
    if len(got) > FLOOD_SHOWN:
        raise AssertionError("%d presences of a burst of %d reached the "
                             "user (at most %d expected)"
                             % (len(got), FLOOD, FLOOD_SHOWN))
    last = got[-1]
    if last.get("type") is not None or last.findtext(C("show")) != "away":
        raise AssertionError("the last presence is not the final state "
                             "(away): %s" % show(last))
    # Typing: composing/active, ending with composing.
    m = alice.mark()
    pipe.send("".join('<message type="chat"><%s xmlns="%s"/></message>'
                      % ("composing" if i % 2 else "active", NS_CHATSTATES)
                      for i in range(FLOOD)))
    time.sleep(3.0)
    got = alice.all(lambda el: el.tag == C("message") and
                    B.jid_eq(B.bare(el.get("from")), cj) and
                    chat_state(el) is not None, since=m)
    h._diag("%d chat states of %d reached the user" % (len(got), FLOOD))
    if not got or len(got) > FLOOD_SHOWN:
        raise AssertionError("%d chat states of a burst of %d reached the "
                             "user (1 to %d expected)"
                             % (len(got), FLOOD, FLOOD_SHOWN))
    if chat_state(got[-1]) != "composing":
        raise AssertionError("the last chat state is not the final one "
                             "(composing): %s" % show(got[-1]))
    # A message after the flood is not held back.
    m = alice.mark()
    pipe.send(b'<message type="chat"><body>after the flood</body></message>')
    got = alice.take(is_msg(cj, "after the flood"), since=m)
    pipe.send(avail)
    alice.take(lambda el: any_pres(cj)(el) and el.get("type") is None and
               el.findtext(C("show")) is None, since=m, timeout=3,
               what="available again")
    gw.check_alive()


def unsubscribe(w):
    gw = w.gateway()
    alice, pipe = inky_pipe(w)
    cj = B.contact_jid(INKY)
    m = alice.mark()
    alice.presence(to=cj, type="unsubscribe")
    pipe.wait(b_is_pres("unavailable"))
    pipe.wait_end(5)
    w.state.pop("inky_pipe", None)
    w.state["inky_contact"] = False
    # (The gateway's unsubscribed answers a subscription alice already
    # cancelled, so the server rightly drops it; its unsubscribe ends the
    # other direction.)
    alice.take(is_pres(cj, "unsubscribe"), since=m)
    alice.take(is_pres(cj, "unavailable"), since=m)
    roster_item(alice, cj, ("none", None))
    rows = gw.db("SELECT nick FROM contacts WHERE user_jid = ?",
                 ("alice@localhost",))
    if any(r[0].lower() == "inky" for r in rows):
        raise AssertionError("Inky is still alice's contact in the store: %s"
                             % rows)
    inky_peer(w).listener.expect_no_connection(2.5)
    gw.check_alive()


# ---------------------------------------------------------------------------

def strangers(w):
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    soft = B.Soft()
    # Accept: the pipe stays open, alice is asked once per request_interval.
    sid = w.raw_peer(5, "Sid", listen=False)
    m = alice.mark()
    p1 = sid.dial(ALICE_B, gw.listen_port)
    s = alice.take(is_pres(sid.cjid, "subscribe"), since=m)
    assert_eq(B.child_text(s, B.NS_NICK, "nick"), "Sid", "nick")
    p1.expect_none(lambda el: el.tag == C("presence") and
                   el.get("type") is None, 1.0,
                   "alice's presence sent to a stranger")
    if not p1.alive():
        raise AssertionError("the stranger's pipe was closed while alice is "
                             "asked")
    m2 = alice.mark()
    p2 = sid.dial(ALICE_B, gw.listen_port)   # replaces p1
    t_dial = time.monotonic()
    alice.expect_none(is_pres(sid.cjid, "subscribe"), 1.5, since=m2,
                      what="a second request within request_interval")
    alice.presence(to=sid.cjid, type="subscribed")
    alice.presence(to=sid.cjid, type="subscribe")
    p = p2.wait(lambda el: el.tag == C("presence"), 5,
                "alice's presence once accepted")
    if p.get("type") is not None:
        raise AssertionError("accepted; the peer got %s" % show(p))
    alice.take(is_pres(sid.cjid, "subscribed"), since=m2)
    # The peer's presence, sent when the pipe opened (before alice
    # accepted), must reach alice: the plugin sends presence only when it
    # changes, so otherwise she sees Sid offline although the pipe is up.
    soft.check(alice.take, is_pres(sid.cjid, None), 3.0, since=m,
               what="Sid's presence (sent at the start of the pipe, before "
               "alice accepted)")
    alice.message(sid.cjid, "welcome, Sid", mid="s1")
    p2.wait_msg("welcome, Sid")
    p2.send(b'<message type="chat"><body>thanks</body></message>')
    alice.take(is_msg(sid.cjid, "thanks"), since=m2)
    # Past request_timeout (4 s): an accepted pipe stays.
    while time.monotonic() < t_dial + 4.0 + 1.5:
        p2.pump()
        if p2.c.eof:
            raise AssertionError("the accepted stranger's pipe was closed "
                                 "%.1fs after it opened"
                                 % (time.monotonic() - t_dial))
        time.sleep(0.1)

    # Refuse: unsubscribed closes the pipe.
    rex = w.raw_peer(6, "Rex", listen=False)
    m = alice.mark()
    pr = rex.dial(ALICE_B, gw.listen_port)
    alice.take(is_pres(rex.cjid, "subscribe"), since=m)
    alice.presence(to=rex.cjid, type="unsubscribed")
    t0 = time.monotonic()
    pr.c.wait(lambda: pr.c.stream_end or pr.c.eof, 5,
              "the refused stranger's pipe to close")
    for el in pr.c.items:
        if el.tag == C("presence") and el.get("type") is None:
            raise AssertionError("the refused stranger got alice's presence:"
                                 " %s" % show(el))
    pr.wait_end(1)
    h._diag("refused stranger's pipe ended after %.1fs"
            % (time.monotonic() - t0))
    rows = gw.db("SELECT nick FROM contacts WHERE user_jid = ?",
                 ("alice@localhost",))
    if any(r[0].lower() == "rex" for r in rows):
        raise AssertionError("refused Rex is a contact: %s" % rows)

    # No answer: the pipe is closed after request_timeout (4 s).
    tim = w.raw_peer(7, "Tim", listen=False)
    m = alice.mark()
    t0 = time.monotonic()
    pt = tim.dial(ALICE_B, gw.listen_port)
    alice.take(is_pres(tim.cjid, "subscribe"), since=m)
    pt.c.wait(lambda: pt.c.stream_end or pt.c.eof, 10,
              "the unanswered stranger's pipe to close")
    took = time.monotonic() - t0
    pt.wait_end(1)
    if not 3.0 <= took <= 7.0:
        raise AssertionError("unanswered request: pipe closed after %.1fs, "
                             "request_timeout is 4 s" % took)
    h._diag("unanswered stranger's pipe closed after %.1fs" % took)

    # The request is stored: after a restart, Tim dialling again does not
    # ask alice again, and her late answer still works.
    gw.restart()
    m = alice.mark()
    pt = tim.dial(ALICE_B, gw.listen_port)
    alice.expect_none(is_pres(tim.cjid, "subscribe"), 1.5, since=m,
                      what="a second request after a restart")
    alice.presence(to=tim.cjid, type="subscribed")
    p = pt.wait(lambda el: el.tag == C("presence"), 5,
                "alice's presence after her late answer")
    if p.get("type") is not None:
        raise AssertionError("late accept; Tim got %s" % show(p))
    # Clean up: Sid and Tim stop being contacts.
    for peer, pipe in ((sid, p2), (tim, pt)):
        alice.presence(to=peer.cjid, type="unsubscribe")
        alice.presence(to=peer.cjid, type="unsubscribed")
        pipe.wait(b_is_pres("unavailable"))
        pipe.wait_end(5)
    gw.check_alive()
    soft.done()


# ---------------------------------------------------------------------------

def shared_contact(w):
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    bob = w.registered_user("bob", "Bob")
    alice.presence()
    bob.presence()
    clyde = w.raw_peer(3, "Clyde")
    cj = clyde.cjid
    ma, mb = alice.mark(), bob.mark()
    B.add_contact(alice, CLYDE)
    B.add_contact(bob, CLYDE)
    pipes = {}
    for _ in range(2):
        p, frm = clyde.accept()
        if frm not in (ALICE_B, BOB_B) or frm in pipes:
            raise AssertionError("unexpected dial from %r" % frm)
        p.send(header(CLYDE, frm) + b"<presence/>")
        pipes[frm] = p
    pa, pb = pipes[ALICE_B], pipes[BOB_B]
    pa.wait(b_is_pres(None))
    pb.wait(b_is_pres(None))
    alice.take(is_pres(cj, None), since=ma)
    bob.take(is_pres(cj, None), since=mb)
    ma, mb = alice.mark(), bob.mark()
    alice.message(cj, "from alice", mid="sa1")
    bob.message(cj, "from bob", mid="sb1")
    pa.wait_msg("from alice")
    pb.wait_msg("from bob")
    pa.send(b'<message type="chat"><body>to alice</body></message>')
    pb.send(b'<message type="chat"><body>to bob</body></message>')
    alice.take(is_msg(cj, "to alice"), since=ma)
    bob.take(is_msg(cj, "to bob"), since=mb)
    pa.expect_none(b_is_msg("from bob"), 0.5, "bob's message on alice's pipe")
    pb.expect_none(b_is_msg("from alice"), 0.1,
                   "alice's message on bob's pipe")
    alice.expect_none(is_msg(cj, "to bob"), 0.3, since=ma)
    bob.expect_none(is_msg(cj, "to alice"), 0.1, since=mb)
    # Inbound pipes are routed by the stream's `to`: bob goes offline (the
    # gateway closes his pipe); Clyde, whose pipe with alice is up, dials in
    # to Bob; what he writes there is bob's (the server keeps it for him).
    # (Dialling in while the gateway's own pipe is younger than 10 s would
    # be a simultaneous dial, which the engine settles its own way.)
    w.drop_user("bob")
    pb.wait(b_is_pres("unavailable"))
    pb.wait_end(5)
    pin = clyde.dial(BOB_B, gw.listen_port)
    pin.send(b'<message type="chat"><body>inbound to bob</body></message>')
    alice.expect_none(is_msg(cj, "inbound to bob"), 1.5, since=ma)
    bob = w.user("bob")
    bob.take(is_msg(cj, "inbound to bob"), 8, since=0)
    soft = B.Soft()
    soft.check(pin.wait, b_is_pres(None), 5,
               "bob's presence on the pipe Clyde opened, once he is online")
    clyde.listener.expect_no_connection(0.5)
    # alice's pipe is untouched.
    alice.message(cj, "still here", mid="sa2")
    pa.wait_msg("still here")
    w.state["clyde"] = (clyde, pa, pin)
    gw.check_alive()
    soft.done()


def unregister(w):
    gw = w.gateway()
    if "clyde" not in w.state:
        raise AssertionError("cannot run: the shared-contact scenario did not "
                             "leave bob's pipe to Clyde")
    clyde, pa, pb = w.state.pop("clyde")
    cj = clyde.cjid
    alice = w.user("alice")
    bob = w.user("bob")
    m = bob.mark()
    ok_result(bob.iq(COMPONENT, register_query(remove=True), "set"),
              "unregistering")
    w.registered.pop((COMPONENT, "bob"), None)
    gw.wait_log(r"bridge: unregistered jid=bob@localhost")
    # bob's pipe to Clyde: unavailable, stream end.
    pb.wait(b_is_pres("unavailable"))
    pb.wait_end(5)
    for want in (is_pres(cj, "unsubscribed"), is_pres(cj, "unavailable"),
                 is_pres(COMPONENT, "unsubscribed")):
        bob.take(want, since=m)
    # XEP-0100 4.3.1 step 6: the gateway sends unavailable presence.
    soft = B.Soft()
    soft.check(bob.take, is_pres(COMPONENT, "unavailable"), 1.0, since=m)
    roster_item(bob, cj, ("none", None))
    roster_item(bob, COMPONENT, ("none", None))
    # The data is gone.
    for table in ("users", "contacts", "pending", "queue"):
        col = "jid" if table == "users" else "user_jid"
        n = gw.db("SELECT count(*) FROM %s WHERE %s = ?" % (table, col),
                  ("bob@localhost",))[0][0]
        if n:
            raise AssertionError("%d rows of bob in %s after unregistering"
                                 % (n, table))
    r = ok_result(bob.iq(COMPONENT, '<query xmlns="%s"/>' % NS_REGISTER),
                  "form after unregistering")
    qe = r.find(q(NS_REGISTER, "query"))
    if qe.find(q(NS_REGISTER, "registered")) is not None:
        raise AssertionError("still <registered/>: %s" % show(r))
    m = bob.mark()
    bob.message(cj, "am I still there?", mid="u1")
    e = bob.take(is_error(cj, "message"), since=m)
    assert_eq(error_cond(e)[1], "registration-required",
              "writing after unregistering")
    # alice's pipe to Clyde is untouched.
    alice.message(cj, "alice stays", mid="u2")
    pa.wait_msg("alice stays")
    # The nick is free again.
    B.register(bob, "Bob")
    w.registered[(COMPONENT, "bob")] = "Bob"
    # Clean up: alice drops Clyde.
    alice.presence(to=cj, type="unsubscribe")
    pa.wait(b_is_pres("unavailable"))
    pa.wait_end(5)
    clyde.close()
    gw.check_alive()
    soft.done()


# ---------------------------------------------------------------------------

def store_and_forward(w):
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    pinky = w.keep(B.ref_peer(PINKY_I, PINKY_NICK, [ALICE_B]))
    cj = pinky.cjid
    m = alice.mark()
    B.add_contact(alice, pinky.jid)     # nobody listens: refused, redials
    for i in (1, 2, 3):
        alice.message(cj, "stored %d" % i, mid="sf-%d" % i, receipt=True)
    alice.expect_none(is_receipt(cj), 1.5, since=m)
    pinky.listen(B.PEER_PORT)
    pinky.wait(lambda: len(B.ref_bodies(pinky)) >= 3, 8,
               "3 stored messages")
    assert_eq([b for _c, b in B.ref_bodies(pinky)],
              ["stored 1", "stored 2", "stored 3"], "delivered in order")
    for i in (1, 2, 3):
        alice.take(is_receipt(cj, "sf-%d" % i), since=m)
    alice.take(is_pres(cj, None), since=m, what="Pinky's presence")

    # Across a restart: Pinky goes away, alice writes, the gateway restarts,
    # Pinky comes back.
    # Marked first: the gateway may see the close before close() returns.
    m = alice.mark()
    pinky.close()
    alice.take(is_pres(cj, "unavailable"), since=m)
    pinky2 = w.keep(B.ref_peer(PINKY_I, PINKY_NICK, [ALICE_B]))
    for i in (4, 5, 6):
        alice.message(cj, "stored %d" % i, mid="sf-%d" % i, receipt=True)
    time.sleep(0.5)
    n = gw.db("SELECT count(*) FROM queue WHERE user_jid = ?",
              ("alice@localhost",))[0][0]
    assert_eq(n, 3, "messages in the store while Pinky is away")
    gw.restart()
    time.sleep(1.0)
    pinky2.listen(B.PEER_PORT)
    pinky2.wait(lambda: len(B.ref_bodies(pinky2)) >= 3, 10,
                "3 messages stored before the restart")
    time.sleep(0.5)
    assert_eq([b for _c, b in B.ref_bodies(pinky2)],
              ["stored 4", "stored 5", "stored 6"],
              "delivered once, in order, after the restart")
    for i in (4, 5, 6):
        alice.take(is_receipt(cj, "sf-%d" % i), since=m)
    n = gw.db("SELECT count(*) FROM queue")[0][0]
    assert_eq(n, 0, "messages left in the store once confirmed")
    gw.check_alive()


def listening_contact(w, alice, i, nick):
    """A RefPeer at peer_addr(i), listening and made alice's contact,
    once the gateway has opened a pipe to it."""
    p = w.keep(B.ref_peer(i, nick, [ALICE_B]))
    p.listen(B.PEER_PORT)
    B.add_contact(alice, p.jid)
    p.wait(lambda: ALICE_B in p.open_conversations(), 8,
           "a pipe from alice")
    return p


def new_pipe(p, old, timeout=10):
    """Wait until alice's pipe to RefPeer p is another than old."""
    p.wait(lambda: p.open_conversations().get(ALICE_B) not in (None, old),
           timeout, "a new pipe from alice")


def restart_everything(w):
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    # A contact of its own: this scenario does not depend on what an
    # earlier one left behind.
    sue = listening_contact(w, alice, SUE_I, SUE_NICK)
    cj = sue.cjid
    old = sue.open_conversations()[ALICE_B]
    gw.stop()
    m = alice.mark()
    t0 = time.monotonic()
    gw.start()
    # alice does nothing: the gateway probes her and dials her contacts.
    new_pipe(sue, old)
    alice.take(is_pres(cj, None), 10, since=m,
               what="Sue's presence after the restart")
    h._diag("pipe and presence back %.1fs after the restart"
            % (time.monotonic() - t0))
    alice.message(cj, "after restart", mid="ar1", receipt=True)
    sue.wait(lambda: any(b == "after restart"
                         for _c, b in B.ref_bodies(sue)), 5,
             "alice's message")
    alice.take(is_receipt(cj, "ar1"), since=m)
    sue.send(ALICE_B, b'<message type="chat"><body>welcome back</body>'
             b'</message>')
    alice.take(is_msg(cj, "welcome back"), since=m)
    for name, nick in (("alice", "Alice"), ("bob", "Bob")):
        if w.registered.get((COMPONENT, name)) != nick:
            continue
        u = w.user(name)
        r = ok_result(u.iq(COMPONENT, '<query xmlns="%s"/>' % NS_REGISTER),
                      "%s's registration after the restart" % name)
        qe = r.find(q(NS_REGISTER, "query"))
        if qe.find(q(NS_REGISTER, "registered")) is None or \
                B.child_text(qe, NS_REGISTER, "username") != nick:
            raise AssertionError("%s's registration lost: %s"
                                 % (name, show(r)))
    gw.check_alive()


# ---------------------------------------------------------------------------

BURST = 200


def kill9_burst(w):
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    m = alice.mark()
    blinky = listening_contact(w, alice, BLINKY_I, BLINKY_NICK)
    cj = blinky.cjid
    alice.take(is_pres(cj, None), since=m)
    ids = ["kb-%03d" % i for i in range(1, BURST + 1)]
    body = {i: "burst %s" % i[3:] for i in ids}
    m = alice.mark()

    # The first half paced (the gateway keeps up: receipts come back), the
    # second half at once (a backlog: stored, sent, unconfirmed); the kill
    # comes in the second half.
    async def burst():
        import asyncio
        for n, i in enumerate(ids):
            alice.cl.xmpp.send_raw(
                '<message to="%s" type="chat" id="%s"><body>%s</body>'
                '<request xmlns="%s"/></message>'
                % (B.xml_escape(cj), i, body[i], NS_RECEIPTS))
            await asyncio.sleep(0.003 if n < BURST // 2 else 0)
    t_burst = time.monotonic()
    fut = B.run_async(burst)

    def delivered():
        return [b for _c, b in B.ref_bodies(blinky) if b.startswith("burst")]
    blinky.wait(lambda: len(delivered()) >= BURST // 2 + 10, 10,
                "%d burst messages" % (BURST // 2 + 10))
    gw.kill9()
    t_kill = time.monotonic()
    receipts_at_kill = {e.find(q(NS_RECEIPTS, "received")).get("id")
                        for e in alice.all(is_receipt(cj), since=m)}
    fut.result(15)
    # What the gateway had stored when it died.
    rows = gw.db("SELECT id, stanza_id FROM queue ORDER BY id")
    stored = [r[1] for r in rows]
    blinky.wait(lambda: ALICE_B not in blinky.open_conversations(), 5,
                "the dead gateway's pipe to close")
    n_before = len(delivered())
    time.sleep(1.0)   # the server bounces what it could not route
    bounced = {e.get("id") for e in alice.all(is_error(B.ANY, "message"),
                                              since=m)}
    gw.start()
    if stored:
        gw.wait_log(r"bridge: %d stored messages will be sent"
                    % len(stored), 5)
    # Every stored message arrives, and gets its receipt.
    want = set(stored)

    def arrived():
        return {"kb-" + b.split()[1] for b in delivered()}
    blinky.wait(lambda: want <= arrived(), 20,
                "every stored message after the restart")
    alice.take(lambda el: want <= {
        e.find(q(NS_RECEIPTS, "received")).get("id")
        for e in alice.all(is_receipt(cj), since=m)}, 20, since=m,
        what="receipts for every stored message")
    time.sleep(1.0)
    got = ["kb-" + b.split()[1] for b in delivered()]
    receipted = [e.find(q(NS_RECEIPTS, "received")).get("id")
                 for e in alice.all(is_receipt(cj), since=m)]
    arrived_set = set(got)
    counts = {}
    for i in got:
        counts[i] = counts.get(i, 0) + 1
    dups = sorted(i for i, n in counts.items() if n > 1)
    lost = [i for i in ids if i not in arrived_set and i not in bounced]
    h._diag("burst of %d: %d delivered before the kill (%.1fs), %d receipts "
            "then; %d stored at the kill; %d bounced "
            "by the server; %d duplicates; %d never reached the gateway "
            "(lost in the component socket at the kill, no error)"
            % (BURST, n_before, t_kill - t_burst, len(receipts_at_kill),
               len(stored), len(bounced), len(dups),
               len(lost)))
    problems = []
    if not set(receipted) <= arrived_set:
        problems.append("receipts for messages that never arrived: %s"
                        % sorted(set(receipted) - arrived_set))
    if not want <= arrived_set:
        problems.append("stored but never delivered: %s"
                        % sorted(want - arrived_set))
    if bounced & arrived_set:
        problems.append("bounced by the server yet delivered: %s"
                        % sorted(bounced & arrived_set))
    unconfirmed = set(stored)
    bad_dups = [i for i in dups if i not in unconfirmed]
    if bad_dups:
        problems.append("duplicates of messages that were confirmed at the "
                        "kill: %s" % bad_dups)
    dup_receipted = [i for i in dups if i in receipts_at_kill]
    if dup_receipted:
        problems.append("messages delivered again although their receipt "
                        "was sent: %s" % dup_receipted)
    # In order: on each pipe, and by first arrival.
    per_conn = {}
    for c, b in B.ref_bodies(blinky):
        if b.startswith("burst"):
            per_conn.setdefault(id(c), []).append(int(b.split()[1]))
    for seq in per_conn.values():
        if seq != sorted(seq) or len(set(seq)) != len(seq):
            problems.append("out of order on one pipe: %s" % seq)
    firsts = []
    for i in got:
        if i not in firsts:
            firsts.append(i)
    if firsts != sorted(firsts):
        problems.append("first arrivals out of order: %s" % firsts)
    rec_counts = {}
    for i in receipted:
        rec_counts[i] = rec_counts.get(i, 0) + 1
    dup_rec = sorted(i for i, n in rec_counts.items() if n > 1)
    if dup_rec:
        h._diag("messages receipted twice: %s" % dup_rec)
    if problems:
        raise AssertionError("\n".join(problems))
    n = gw.db("SELECT count(*) FROM queue")[0][0]
    assert_eq(n, 0, "messages left in the store")
    w.state["blinky"] = blinky
    gw.check_alive()


# ---------------------------------------------------------------------------
# Disk full: the gateway's state on a 4 MiB tmpfs that a file then fills.
# Every message alice sends meanwhile is either delivered or answered with
# an error, never both, never neither; once there is room again, messages
# flow.

DISK_FULL_MSGS = 40


def disk_full(w):
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    dot = listening_contact(w, alice, DOT_I, DOT_NICK)
    cj = dot.cjid
    old = dot.open_conversations()[ALICE_B]
    gw.stop()
    # Its state directory is the tmpfs; its log stays outside.
    run = B.GatewayRun(w.dir, w.srv, "diskfull", allowed=B.ALLOWED)
    small = run.statedir
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs",
                    small], check=True)
    try:
        shutil.copy(gw.db_path, run.db_path)
        run.start()
        new_pipe(dot, old)
        fill = os.path.join(small, "fill")
        with open(fill, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        m = alice.mark()
        ids = ["df-%02d" % i for i in range(DISK_FULL_MSGS)]
        pad = "x" * 6000    # 40 x 6 kB: more than any WAL room left
        for i in ids:
            alice.message(cj, "%s %s" % (i, pad), mid=i)
        alice.take(is_error(cj, "message", "internal-server-error"), 10,
                   since=m, what="an error for a message the gateway "
                   "could not store")
        os.unlink(fill)
        refused = set()

        def accounted():
            refused.clear()
            refused.update(e.get("id") for e in alice.all(
                is_error(cj, "message", "internal-server-error"), since=m))
            got = {b.split()[0] for _c, b in B.ref_bodies(dot)
                   if b.startswith("df-")}
            return refused | got >= set(ids) and (got, refused)
        got, refused = dot.wait(accounted, 15,
                                "every message delivered or refused")
        h._diag("disk full: %d of %d refused with an error, %d delivered"
                % (len(refused), len(ids), len(got)))
        assert_eq(sorted(got & refused), [],
                  "messages both refused and delivered")
        e = alice.all(is_error(cj, "message"), since=m)[0]
        txt = B.child_text(e.find(C("error")), B.NS_STANZAS, "text") or ""
        if "could not store" not in txt:
            raise AssertionError("error text: %r" % txt)
        # Room again: messages flow, and the store is consistent.
        alice.message(cj, "room again", mid="df-after", receipt=True)
        dot.wait(lambda: any(b == "room again"
                             for _c, b in B.ref_bodies(dot)), 8,
                 "a message once there is room")
        alice.take(is_receipt(cj, "df-after"), since=m)
        run.stop()
    finally:
        if run.alive():
            run.gw.kill_now()
        subprocess.run(["umount", small], check=False)
    gw.start()
    gw.check_alive()


NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


def stale_after_crash(w):
    """alice stays logged in while the gateway is killed, and Vic goes away
    meanwhile. The restarted gateway finds him unreachable and says so:
    alice's client does not keep showing him online from before."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    peer = w.keep(B.RawPeer(VIC_I, VIC_NICK))
    B.add_contact(alice, peer.jid)
    m = alice.mark()
    peer.expect_dial(ALICE_B)
    alice.take(is_pres(peer.cjid, None), 5, since=m,
               what="Vic online before the crash")
    m = alice.mark()
    gw.kill9()
    peer.close()
    gw.start()
    alice.take(is_pres(peer.cjid, "unavailable"), 10, since=m,
               what="Vic unavailable after the restart")
    gw.check_alive()


def server_outage(w):
    """The server goes away. Barev contacts see alice offline at once: the
    gateway can no longer know that she stays. What they write meanwhile
    waits in the gateway and reaches her, stamped with when it was written,
    once the server is back; her pipes come back with her."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    peer = w.raw_peer(OTTO_I, OTTO_NICK)
    B.add_contact(alice, peer.jid)
    pipe = peer.expect_dial(ALICE_B)
    pipe.wait(b_is_pres(None))
    srv = w.server()
    mark = gw.mark()
    # Killed: a server that stops cleanly says every user left first.
    srv.kill_now()
    pipe.wait(b_is_pres("unavailable"), 10)
    pipe.wait_end(5)
    # Otto dials in while the server is down and writes twice.
    pipe = peer.dial(ALICE_B, gw.listen_port)
    pipe.wait(b_is_pres("unavailable"), 5)
    t_written = time.time()
    pipe.send(b'<message type="chat"><body>while the server was down'
              b'</body><html xmlns="%s"><body xmlns="%s"><b>bold</b>'
              b'</body></html></message>'
              % (NS_XHTML_IM.encode(), NS_XHTML.encode()))
    pipe.send(b'<message type="chat"><body>and again</body></message>')
    gw.wait_log(r"bridge: message from %s to alice@\S+ kept until the "
                r"link is up" % re.escape(peer.jid), 5, start=mark,
                count=2)
    assert_eq(gw.db("SELECT count(*) FROM queue WHERE direction = 1")[0][0],
              2, "messages kept for the link")
    srv.start()
    gw.wait_log(r"bridge: 2 kept messages sent to the server", 15,
                start=mark)
    alice = w.user("alice")
    first = alice.take(is_msg(peer.cjid, "while the server was down"), 10,
                       what="the first message written during the outage")
    second = alice.take(is_msg(peer.cjid, "and again"), 5,
                        what="the second message written during the outage")
    got = [m for m in alice.all(is_msg(peer.cjid))
           if body_of(m) in ("while the server was down", "and again")]
    assert_eq([body_of(m) for m in got],
              ["while the server was down", "and again"], "order, once each")
    for m in (first, second):
        d = m.find(q(NS_DELAY, "delay"))
        if d is None:
            raise AssertionError("no XEP-0203 delay: %s" % show(m))
        stamp = calendar.timegm(time.strptime(d.get("stamp"),
                                              "%Y-%m-%dT%H:%M:%SZ"))
        if abs(stamp - t_written) > 2:
            raise AssertionError("delay stamp %s is not when it was written "
                                 "(%.0f): %s" % (d.get("stamp"), t_written,
                                                 show(m)))
    if first.find(q(NS_XHTML_IM, "html")) is None:
        raise AssertionError("XHTML-IM lost while kept: %s" % show(first))
    assert_eq(gw.db("SELECT count(*) FROM queue WHERE direction = 1")[0][0],
              0, "kept messages once sent")
    # alice is online again: the gateway tells Otto on the pipe it has.
    pipe.wait(b_is_pres(None), 10)
    gw.check_alive()


def command(u, node, fields=None, action=None, sid=None):
    """Runs an ad-hoc command step; returns the <command/> of the answer."""
    x = ""
    if fields is not None:
        x = '<x xmlns="%s" type="submit">%s</x>' % (NS_XDATA, "".join(
            '<field var="%s"><value>%s</value></field>' % (k, B.xml_escape(v))
            for k, v in fields.items()))
    attrs = ' node="%s"' % node
    if action:
        attrs += ' action="%s"' % action
    if sid:
        attrs += ' sessionid="%s"' % sid
    r = ok_result(u.iq(COMPONENT, '<command xmlns="%s"%s>%s</command>'
                       % (NS_COMMANDS, attrs, x), type="set"),
                  "command %s" % node)
    c = r.find(q(NS_COMMANDS, "command"))
    if c is None:
        raise AssertionError("no <command/> in %s" % show(r))
    return c


def note(c):
    n = c.find(q(NS_COMMANDS, "note"))
    return (n.get("type"), n.text or "") if n is not None else (None, "")


def adhoc_commands(w):
    """XEP-0050: Register, My Barev address, Set a contact's port, Get an
    address of my own (shared mode: refused), cancel, Unregister."""
    gw = w.gateway()
    dora = w.user("dora")
    r = ok_result(dora.iq(COMPONENT, '<query xmlns="%s" node="%s"/>'
                          % (NS_DISCO_ITEMS, NS_COMMANDS)), "command list")
    nodes = sorted(i.get("node") for i in r.iter(q(NS_DISCO_ITEMS, "item")))
    assert_eq(nodes, sorted(["register", "unregister", "address",
                             "contact-port", "own-address"]), "commands")
    c = command(dora, "address")
    assert_eq(note(c)[0], "error", "address before registering")
    # Register: a form, then the submission.
    c = command(dora, "register")
    assert_eq(c.get("status"), "executing", "register step 1")
    x = c.find(q(NS_XDATA, "x"))
    fields = {f.get("var"): B.child_text(f, NS_XDATA, "value")
              for f in x.findall(q(NS_XDATA, "field"))}
    assert_eq(fields.get("username"), "dora", "default nickname")
    m = dora.mark()
    c = command(dora, "register", {"username": "Dora"},
                sid=c.get("sessionid"))
    assert_eq((c.get("status"), note(c)[0]), ("completed", "info"),
              "register step 2")
    dora.take(is_msg(COMPONENT), since=m, what="the welcome message")
    assert_eq(gw.db("SELECT nick FROM users WHERE jid = ?",
                    ("dora@localhost",)), [("Dora",)], "stored user")
    c = command(dora, "address")
    if "Dora@%s" % B.GW not in note(c)[1]:
        raise AssertionError("address note: %r" % (note(c),))
    # A contact's port.
    inky = INKY
    c = command(dora, "contact-port", {"contact": inky, "port": "1337"})
    assert_eq(note(c)[0], "error", "port of a non-contact")
    B.add_contact(dora, inky)
    c = command(dora, "contact-port", {"contact": inky, "port": "99999"})
    assert_eq(note(c)[0], "error", "port out of range")
    c = command(dora, "contact-port")
    assert_eq(c.get("status"), "executing", "contact-port form")
    c = command(dora, "contact-port", {"contact": inky, "port": "1337"})
    assert_eq(note(c)[0], "info", "contact-port")
    assert_eq(gw.db("SELECT port FROM contacts WHERE user_jid = ?",
                    ("dora@localhost",)), [(1337,)], "stored port")
    c = command(dora, "own-address")
    assert_eq(note(c)[0], "error", "own-address in shared mode")
    c = command(dora, "register", action="cancel")
    assert_eq(c.get("status"), "canceled", "cancel")
    c = command(dora, "unregister")
    assert_eq(note(c)[0], "info", "unregister")
    assert_eq(gw.db("SELECT count(*) FROM users WHERE jid = ?",
                    ("dora@localhost",)), [(0,)], "user after unregister")
    gw.check_alive()


# ---------------------------------------------------------------------------

SCENARIOS = [
    ("expiry: a message queued for an unreachable peer", expiry_setup),
    ("registration: form, submit, welcome, errors", registration),
    ("XEP-0100 prompt and jid-malformed", gateway_prompt),
    ("contact: subscribe, dial, presence both ways, aggregate",
     contact_and_presence),
    ("offline user: Barev message kept by the server, pipe reused",
     offline_delivery),
    ("messages both ways: escaping, chat states, XHTML-IM, vCard", messages),
    ("receipts only after the peer's answer", receipts),
    ("typing: composing repeated, paused", typing),
    ("a message too big for Barev is refused, the next flows", big_message),
    ("a flood of presences and chat states is coalesced", flood),
    ("a message lost on %d pipes is given up, the next flows" % 3,
     lost_attempts, 90),
    ("unsubscribe removes the contact and closes the pipe", unsubscribe),
    ("strangers: accept, refuse, timeout, stored request", strangers),
    ("two users share one contact; inbound routed by `to`", shared_contact),
    ("unregister removes everything", unregister),
    ("ad-hoc commands: register, address, contact port, unregister",
     adhoc_commands),
    ("store-and-forward, in order, across a restart", store_and_forward),
    ("restart brings pipes and presence back", restart_everything),
    ("kill -9 in a burst of %d messages: at least once, in order" % BURST,
     kill9_burst, 90),
    ("disk full: each message delivered or refused, then flowing again",
     disk_full, 90),
    ("expiry: the sender gets recipient-unavailable", expiry_check, 90),
    ("a contact gone during a crash is shown offline after it",
     stale_after_crash),
    # Last: the server restarts, and every user's session with it.
    ("server outage: users offline on Barev, messages kept for the link",
     server_outage, 90),
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
    os.environ.setdefault("TEST_TOTAL_TIMEOUT", "600")
    bn.main(tests())
