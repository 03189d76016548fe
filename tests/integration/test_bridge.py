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

import base64
import calendar
import hashlib
import os
import re
import shutil
import signal
import socket
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
REX_NICK, REX_I = "Rex", 12             # RefPeer: default_port on SIGHUP
TOM_NICK, TOM_I = "Tom", 13             # RefPeer: access narrowed on SIGHUP
MAX_NICK, MAX_I = "Max", 14             # RefPeer: stanza limit on SIGHUP
NOBODY = "Nobody@%s" % bn.peer_addr(15)  # nobody there (lifetime on SIGHUP)
ZED_NICK, ZED_I = "Zed", 16             # RefPeer: redial backoff on SIGHUP
PIP_NICK, PIP_I = "Pip", 8              # RefPeer: ping_interval on SIGHUP
QUINN_NICK, QUINN_I = "Quinn", 7        # raw stranger: request_timeout on SIGHUP
ERIN_B = B.barev_of("Erin")
GHOST = "Ghost@%s" % bn.peer_addr(9)   # nobody there (expiry)
TAM_NICK, TAM_I = "Tam", 17            # plugin 2.x: has not added alice
NELL_NICK, NELL_I = "Nell", 18         # plugin 2.x: a burst, a call
TINY_NICK, TINY_I = "tiny", 19         # raw peer: added by the typeable JID
PASCAL_NICK, PASCAL_I = "Pascal", 20   # raw peer: the Pascal library

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
# A contact on the Pascal library: it never pings, answers no ping, and
# sends its presence twice. Its own gateway (in place of the expiry one,
# done by now) pings every second, one second for an answer, two misses.

def pascal_contact_idle(w):
    """Idle for eight ping intervals, the contact's pipe stays up, its
    user (dora: not registered with barev2 before, so her roster has no
    trace of it) sees no unavailable/available churn from it, and the peer
    is told nothing of her going away and coming back."""
    srv = w.server()
    if w.gw2 is not None:
        w.gw2.stop()
    w.gw2 = B.GatewayRun(w.dir, srv, "gateway-pascal", component=COMPONENT2,
                         address=GW2, ping_interval=1.0, ping_timeout=1.0,
                         ping_failures=2, allowed=B.ALLOWED)
    w.gw2.start()
    dora = w.user("dora")
    dora.presence()
    B.register(dora, "Dora", gw=COMPONENT2)
    w.registered[(COMPONENT2, "dora")] = "Dora"
    peer = w.raw_peer(PASCAL_I, PASCAL_NICK)
    cj = B.add_contact(dora, peer.jid, gw=COMPONENT2)
    m = dora.mark()
    pipe = peer.expect_dial(B.barev_of("Dora", GW2), presence=None,
                            answer_pings=False)
    pipe.send(b"<presence/>")
    time.sleep(0.05)
    pipe.send(b"<presence/>")
    dora.take(is_pres(cj, None), since=m, what="the contact's presence")
    # The server probes the new contact around now; the gateway rightly
    # answers with the same presence. Let that pass first.
    time.sleep(1.0)
    m = dora.mark()
    soft = B.Soft()
    soft.check(pipe.expect_none, lambda el: el.tag == C("presence")
               and el.get("type") == "unavailable", 8.0,
               "unavailable presence")
    soft.check(dora.expect_none, is_pres(cj, B.ANY), 0.5, since=m,
               what="presence churn from the idle contact")
    if not pipe.alive() or pipe.c.stream_end or not pipe.c.poke():
        soft.problems.append("the gateway closed the idle pipe: %s"
                             % pipe.c.dump())
    soft.done()
    w.gw2.check_alive()
    w.gw2.stop()


# ---------------------------------------------------------------------------

def registration(w):
    gw = w.gateway()
    alice = w.user("alice")
    soft = B.Soft()
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
        # Where Barev contacts reach her: the listen ports, not the port
        # the gateway dials contacts on (barev.default_port).
        want = "ports %d and %d" % (gw.listen_port, gw.listen_port2)
        if want not in body_of(welcome) or \
                ("port %d" % B.PEER_PORT) in body_of(welcome):
            soft.problems.append("the welcome message must give the listen "
                                 "ports (%s): %s" % (want, show(welcome)))
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
    # She is not offered what she cannot have: the form, a contact, the
    # gateway's presence and the Register command all say so, in the same
    # words as a submission.
    mallory = w.user("mallory")
    refused = expect_error(mallory.iq(COMPONENT, register_query("Mallory"),
                                      "set"),
                           "cancel", "not-allowed", "mallory registering")[2]
    if "localhost" not in refused:
        soft.problems.append("the refusal does not say whom the gateway "
                             "does not serve: %r" % refused)

    def mallory_refused(got, what):
        e = expect_error(got, "cancel", "not-allowed", what)
        assert_eq(e[2], refused, "%s: the text" % what)
    soft.check(lambda: mallory_refused(
        mallory.iq(COMPONENT, '<query xmlns="%s"/>' % NS_REGISTER),
        "mallory asking for the registration form"))
    m = mallory.mark()
    mallory.message(B.contact_jid(INKY), "hello?", mid="mal1")
    soft.check(lambda: mallory_refused(
        mallory.take(is_error(B.contact_jid(INKY), "message"), since=m),
        "mallory writing to a contact"))
    mallory.presence(to=COMPONENT, type="subscribe")
    soft.check(lambda: mallory_refused(
        mallory.take(is_error(COMPONENT, "presence"), since=m),
        "mallory subscribing to the gateway"))
    c = command(mallory, "register")
    soft.check(assert_eq, (c.get("status"), note(c)),
               ("completed", ("error", refused)),
               "mallory's Register command, first step")

    # Not registered: carol (allowed) writes to and subscribes to a contact.
    carol = w.user("carol")
    inky = B.contact_jid(INKY)
    m = carol.mark()
    carol.message(inky, "hello?", mid="c1")
    e = carol.take(is_error(inky, "message"), since=m)
    assert_eq(error_cond(e)[1], "registration-required",
              "carol's message, unregistered")
    assert_eq(error_cond(e)[0], "auth", "error type")
    # She is told how: the command's name and the registration form.
    text = error_cond(e)[2]
    if '"Register"' not in text or "XEP-0077" not in text or \
            COMPONENT not in text:
        soft.problems.append("carol is not told how to register (the "
                             "command \"Register\" or the XEP-0077 form "
                             "of %s): %r" % (COMPONENT, text))
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
    soft.done()


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
    # DEL in a status is cleaned out as in a body: it deafens the plugin.
    alice.presence(show="away", status="o\x7fut")
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

    # Barev -> user: body, XHTML-IM reduced to what cannot reach outside
    # the message (an image or a style url would make alice's client
    # fetch the peer's URL and tell it her address), a generated id.
    mark = alice.mark()
    pipe.send('<message type="chat"><body>hello &lt;world&gt; &amp; co</body>'
              '<html xmlns="%s"><body xmlns="%s"><b>hello</b> &lt;world&gt; '
              '<img src="http://[201:bbbb::99]/x.png"/><a href="http://[201:'
              'bbbb::99]/">&amp; co</a><span style="background: url(http://'
              '[201:bbbb::99]/y)">.</span></body></html></message>'
              % (NS_XHTML_IM, NS_XHTML))
    m = alice.take(is_msg(cj, "hello <world> & co"), since=mark)
    assert_eq(m.get("type"), "chat", "type")
    assert_eq(m.get("to"), "alice@localhost", "to the bare JID")
    if not m.get("id"):
        raise AssertionError("no id: %s" % show(m))
    if "201:bbbb::99" in show(m):
        raise AssertionError("an external reference reached the user: %s"
                             % show(m))
    b = m.find(".//" + q(NS_XHTML, "strong"))
    if b is None or b.text != "hello":
        raise AssertionError("the peer's formatting is lost: %s" % show(m))
    # The plugin's own form: <html> in the XHTML namespace, <font> inside.
    pipe.send('<message type="chat"><body>styled</body><html xmlns="%s">'
              '<body><font face="Sans"><span style="font-weight: bold;">'
              'styled</span></font></body></html></message>' % NS_XHTML)
    m = alice.take(is_msg(cj, "styled"), since=mark)
    span = m.find(".//" + q(NS_XHTML_IM, "html") + "/" + q(NS_XHTML, "body")
                  + "/" + q(NS_XHTML, "span"))
    if span is None or span.get("style") != "font-weight:bold":
        raise AssertionError("the plugin's formatting did not reach the "
                             "user: %s" % show(m))
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


# ---------------------------------------------------------------------------
# Discovery: answers from the JID asked, XEP-0115 caps, vCard, time.

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"
NS_XML = "http://www.w3.org/XML/1998/namespace"


def caps_ver(query):
    """XEP-0115 5.1: the ver of a disco#info <query/> (no forms allowed:
    the gateway sends none, and this check would have to hash them)."""
    if query.find(q(NS_XDATA, "x")) is not None:
        raise AssertionError("disco#info with a data form: %s" % show(query))
    idents = sorted((i.get("category", ""), i.get("type", ""),
                     i.get("{%s}lang" % NS_XML, ""), i.get("name", ""))
                    for i in query.findall(q(NS_DISCO_INFO, "identity")))
    feats = sorted(f.get("var") for f in query.findall(q(NS_DISCO_INFO,
                                                           "feature")))
    if not idents or len(set(feats)) != len(feats):
        raise AssertionError("disco#info needs an identity and distinct "
                             "features: %s" % show(query))
    text = "".join("%s/%s/%s/%s<" % i for i in idents) + \
        "".join("%s<" % f for f in feats)
    return base64.b64encode(hashlib.sha1(text.encode("utf-8")).digest()) \
        .decode("ascii")


def check_caps(u, jid, pres, what):
    """pres (from jid) carries caps whose ver is the hash of what jid
    answers to disco#info at node#ver, from jid itself. Returns the
    features."""
    c = pres.find(q(NS_CAPS, "c"))
    if c is None or c.get("hash") != "sha-1" or not c.get("node") or \
            not c.get("ver"):
        raise AssertionError("%s: presence without XEP-0115 caps: %s"
                             % (what, show(pres)))
    node = "%s#%s" % (c.get("node"), c.get("ver"))
    r = ok_result(u.iq(jid, '<query xmlns="%s" node="%s"/>'
                       % (NS_DISCO_INFO, B.xml_escape(node)), timeout=3),
                  "%s: disco#info at %s" % (what, node))
    if not B.jid_eq(r.get("from"), jid):
        raise AssertionError("%s: disco#info answered from %s"
                             % (what, r.get("from")))
    qe = r.find(q(NS_DISCO_INFO, "query"))
    assert_eq(qe.get("node"), node, "%s: node of the answer" % what)
    assert_eq(caps_ver(qe), c.get("ver"), "%s: caps ver recomputed from "
              "the disco#info answer" % what)
    return set(f.get("var") for f in qe.findall(q(NS_DISCO_INFO, "feature")))


def answered_from(u, jid, payload, what, soft):
    """u's iq get to jid is answered (result or error) from jid."""
    try:
        r = u.iq(jid, payload, timeout=3)
    except AssertionError as e:
        soft.problems.append("%s: no answer from %s (a client drops an "
                             "answer from another JID): %s" % (what, jid, e))
        return None
    if not B.jid_eq(r.get("from"), jid):
        soft.problems.append("%s: answered from %s, not %s: %s"
                             % (what, r.get("from"), jid, show(r)))
    return r


def discovery(w):
    gw = w.gateway()
    alice, pipe = inky_pipe(w)
    cj = B.contact_jid(INKY)
    soft = B.Soft()
    # A contact: its presence carries the caps of what the gateway answers
    # for it; every iq to it is answered from it.
    m = alice.mark()
    pipe.send(b"<presence><show>away</show></presence>")
    p = alice.take(is_pres(cj, None), since=m)
    pipe.send(b"<presence/>")
    alice.take(is_pres(cj, None), since=m)
    feats = soft.check(check_caps, alice, cj, p, "Inky")
    if feats is not None and not {NS_CHATSTATES, NS_RECEIPTS} <= feats:
        soft.problems.append("Inky's features lack chat states or receipts: "
                             "%s" % sorted(feats))
    for name, payload in (
            ("disco#info", '<query xmlns="%s"/>' % NS_DISCO_INFO),
            ("version", '<query xmlns="%s"/>' % NS_VERSION),
            ("ping", '<ping xmlns="%s"/>' % B.NS_PING),
            ("time", '<time xmlns="%s"/>' % NS_TIME),
            ("vCard", '<vCard xmlns="%s"/>' % NS_VCARD)):
        answered_from(alice, cj, payload, "%s to Inky" % name, soft)

    # The gateway: presence with caps to a resource that logs in (its
    # server probes the gateway), vCard, time.
    second = w.user("alice", "caps")
    p = soft.check(second.take, is_pres(COMPONENT, None), 3,
                   what="the gateway's presence at login")
    if p is not None:
        feats = soft.check(check_caps, second, COMPONENT, p, "the gateway")
        if feats is not None and not {B.NS_PING, NS_TIME, NS_VCARD,
                                      NS_VERSION, NS_REGISTER} <= feats:
            soft.problems.append("the gateway's features lack ping, time, "
                                 "vCard, version or register: %s"
                                 % sorted(feats))
    w.drop_user("alice", "caps")
    r = answered_from(alice, COMPONENT, '<vCard xmlns="%s"/>' % NS_VCARD,
                      "the gateway's vCard", soft)
    if r is not None:
        v = r.find(q(NS_VCARD, "vCard"))
        if r.get("type") != "result" or v is None or \
                not B.child_text(v, NS_VCARD, "FN") or \
                not B.child_text(v, NS_VCARD, "DESC"):
            soft.problems.append("the gateway's vCard needs FN and DESC: %s"
                                 % show(r))
    r = answered_from(alice, COMPONENT, '<time xmlns="%s"/>' % NS_TIME,
                      "the gateway's time", soft)
    if r is not None:
        t = r.find(q(NS_TIME, "time"))
        utc = B.child_text(t, NS_TIME, "utc") if t is not None else None
        tzo = B.child_text(t, NS_TIME, "tzo") if t is not None else None
        try:
            when = calendar.timegm(time.strptime(utc, "%Y-%m-%dT%H:%M:%SZ"))
            if abs(when - time.time()) > 5 or \
                    not re.match(r"^([+-]\d\d:\d\d|Z)$", tzo):
                raise ValueError("off")
        except (TypeError, ValueError):
            soft.problems.append("the gateway's time needs utc (now) and "
                                 "tzo: %s" % show(r))

    # Stopping: unavailable from the gateway; starting: available again.
    m = alice.mark()
    gw.restart()
    soft.check(alice.take, is_pres(COMPONENT, "unavailable"), since=m,
               what="the gateway's unavailable when it stops")
    soft.check(alice.take, is_pres(COMPONENT, None), since=m,
               what="the gateway's presence when its link comes up")
    pipe.wait_end(5)
    w.state.pop("inky_pipe", None)
    gw.check_alive()
    soft.done()


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


def typeable_contact(w):
    """alice adds tiny by the typeable JID (nick%addr-with-dashes): her
    roster ends with one entry, subscription both and nothing pending, and
    the gateway speaks from that JID; Set a contact's port takes it."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    peer = w.raw_peer(TINY_I, TINY_NICK)
    tj = B.typeable_jid(peer.jid)
    m = alice.mark()
    alice.presence(to=tj, type="subscribe")
    soft = B.Soft()
    soft.check(alice.take, is_pres(tj, "subscribed"), since=m,
               what="subscribed from the typed JID %s" % tj)
    s = soft.check(alice.take, is_pres(tj, "subscribe"), since=m,
                   what="subscribe from the typed JID %s" % tj)
    if s is not None:
        alice.presence(to=tj, type="subscribed")
    pipe = peer.expect_dial(ALICE_B)
    soft.check(alice.take, is_pres(tj, None), since=m,
               what="tiny's presence from the typed JID")
    # The server's roster: one entry for tiny, both ways, nothing asked.
    soft.check(roster_item, alice, tj, ("both",))
    r = alice.iq(alice.bare, '<query xmlns="jabber:iq:roster"/>')
    items = [it for it in r.iter("{jabber:iq:roster}item")
             if TINY_NICK in (it.get("jid") or "").lower()]
    if len(items) != 1 or not B.jid_eq(items[0].get("jid"), tj) or \
            items[0].get("subscription") != "both" or items[0].get("ask"):
        soft.problems.append("alice's roster must hold tiny once, as %s, "
                             "subscription both, nothing pending: %s"
                             % (tj, [show(i) for i in items]))
    if soft.problems:
        soft.done()   # the rest needs a working subscription
    m = alice.mark()
    pipe.send(b'<message type="chat"><body>typed to you</body></message>')
    soft.check(alice.take, is_msg(tj, "typed to you"), since=m,
               what="tiny's message from the typed JID")
    alice.message(tj, "and back", mid="t1")
    pipe.wait_msg("and back")
    # Set a contact's port: the JID as it stands in the roster.
    c = command(alice, "contact-port", {"contact": tj, "port": "1339"})
    soft.check(assert_eq, note(c)[0], "info", "contact-port by the typed "
               "JID: %r" % (note(c),))
    rows = gw.db("SELECT port FROM contacts WHERE user_jid = ? AND nick = ?",
                 ("alice@localhost", TINY_NICK))
    soft.check(assert_eq, rows, [(1339,)], "tiny's stored port")
    # And back to where the peer listens, by the canonical JID.
    c = command(alice, "contact-port", {"contact": peer.cjid,
                                        "port": str(B.PEER_PORT)})
    soft.check(assert_eq, note(c)[0], "info", "contact-port by the "
               "canonical JID: %r" % (note(c),))
    # The name survives a restart.
    gw.restart()
    pipe.wait_end(5)
    m = alice.mark()
    pipe = peer.expect_dial(ALICE_B)
    soft.check(alice.take, is_pres(tj, None), since=m,
               what="tiny's presence from the typed JID after a restart")
    # Clean up: alice drops tiny.
    alice.presence(to=tj, type="unsubscribe")
    pipe.wait(b_is_pres("unavailable"))
    pipe.wait_end(5)
    roster_item(alice, tj, ("none", None))
    gw.check_alive()
    soft.done()


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
    # replaces p1; on the second listen port (a realloc of the listeners
    # once freed the first's while it was in use)
    p2 = sid.dial(ALICE_B, gw.listen_port2)
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
# A hostile mesh node: every Yggdrasil node routes a whole /64 and can
# connect from any of its addresses. These scenarios run the gateway with
# limits of their own on the same state, and restore the usual one after.

def swap_gateway(w, **conf):
    """The world's gateway, stopped and started again with conf
    (gateway_conf keywords) on the same state directory."""
    srv = w.server()
    if w.gw is not None:
        w.gw.stop()
    w.gw = B.GatewayRun(w.dir, srv, "gateway", allowed=B.ALLOWED, **conf)
    w.gw.start()
    h.show_log("gateway log", w.gw.log_path)
    return w.gw


def flood_subscribes(u, since):
    """The subscription requests u got from the flood /64 since a mark."""
    return [el for el in u.all(is_pres(B.ANY, "subscribe"), since=since)
            if "301\\3adddd\\3a0\\3a1\\3a" in el.get("from", "")]


def subnet_flood(w):
    """At a small limits.pipes, 100 strangers from 100 addresses of one
    /64 send alice a valid header and then nothing. A new contact is
    still dialled, it still dials in, and its messages reach alice both
    ways; alice is asked at most requests_per_subnet times."""
    gw = swap_gateway(w, limits={"pipes": 60, "pipes_per_subnet": 20,
                                 "stranger_pipes": 10,
                                 "inbound_per_minute_per_subnet": 100000},
                      barev={"stranger_silence": 2.0})
    flood = None
    kim = w.raw_peer(12, "Kim")
    try:
        alice = w.registered_user("alice", "Alice")
        alice.presence()
        m = alice.mark()
        t0 = time.monotonic()
        flood = bn.Flood(100, bn.GW, gw.listen_port, lambda i: header(
            "m%d@%s" % (i, bn.flood_addr(i)), ALICE_B))
        B.add_contact(alice, kim.jid)
        p = kim.expect_dial(ALICE_B)
        alice.take(is_pres(kim.cjid, None), since=m,
                   what="Kim's presence during the flood")
        p.send(b'<message type="chat"><body>through the flood</body>'
               b'</message>')
        alice.take(is_msg(kim.cjid, "through the flood"), since=m)
        alice.message(kim.cjid, "back through it", mid="fl1")
        p.wait_msg("back through it")
        h._diag("contact reached through the flood in %.1fs"
                % (time.monotonic() - t0))
        # A contact dialling in is taken too (it replaces the pipe).
        p2 = kim.dial(ALICE_B, gw.listen_port)
        p2.send(b'<message type="chat"><body>dialled in</body></message>')
        alice.take(is_msg(kim.cjid, "dialled in"), since=m)
        subs = flood_subscribes(alice, m)
        if not 1 <= len(subs) <= 3:
            raise AssertionError("%d requests from the flood /64 (at most "
                                 "requests_per_subnet = 3):\n%s"
                                 % (len(subs), alice.dump(m)))
        alice.presence(to=kim.cjid, type="unsubscribe")
        alice.presence(to=kim.cjid, type="unsubscribed")
        gw.check_alive()
    finally:
        if flood is not None:
            flood.close()
        kim.close()
        swap_gateway(w)


def churn(addr, nicks, port):
    """One address opens a short pipe per nick: header, presence, close."""
    for nick in nicks:
        jid = "%s@%s" % (nick, addr)
        c = bn.connect(addr, bn.GW, port, label=jid, freebind=True)
        try:
            c.send(header(jid, ALICE_B) + b"<presence/>")
            c.wait(lambda: c.header_attrs is not None or c.eof, 3,
                   "an answer to %s" % jid)
        finally:
            c.close()
        # The gateway takes in each close before the next pipe comes.
        time.sleep(0.1)


def withdrawn(w, u, peer, since):
    """A dropped request is withdrawn with the contact's unsubscribe.
    Prosody hands that to the client; ejabberd 23.01 does not forward it
    to the client, so there the gateway's log line and rows are what a
    test can see."""
    if w.name == "prosody":
        u.take(is_pres(B.contact_jid(peer), "unsubscribe"), 3.0,
               since=since, what="the dropped request withdrawn")


def nick_churn(w):
    """One address sends 30 short pipes with 30 new nicks: alice gets
    requests_per_subnet requests, and the store holds that many rows. They
    expire after request_lifetime; a restart deletes the expired rows and
    loads the live one only."""
    lifetime = 8.0
    gw = swap_gateway(w, limits={"requests_per_subnet": 3},
                      barev={"request_lifetime": lifetime})
    addr = bn.peer_addr(13)
    late = "Late@%s" % bn.mass_addr(2)
    ours = tuple(socket.inet_pton(socket.AF_INET6, a)
                 for a in (addr, bn.mass_addr(2)))

    def rows():
        """alice's pending rows from the two addresses of this scenario."""
        return [r[0] for r in gw.db("SELECT nick, addr FROM pending WHERE "
                                    "user_jid = ? ORDER BY nick",
                                    ("alice@localhost",)) if r[1] in ours]
    try:
        alice = w.registered_user("alice", "Alice")
        alice.presence()
        m = alice.mark()
        t0 = time.monotonic()
        churn(addr, ["Churn%d" % i for i in range(30)], gw.listen_port)
        alice.expect_none(is_pres(B.contact_jid("Churn3@" + addr),
                                  "subscribe"), 1.0, since=m)
        subs = [el for el in alice.all(is_pres(B.ANY, "subscribe"), since=m)]
        got = sorted(B.child_text(el, B.NS_NICK, "nick") for el in subs)
        assert_eq(got, ["Churn0", "Churn1", "Churn2"],
                  "the requests alice got from 30 nicks at one address")
        assert_eq(rows(), ["Churn0", "Churn1", "Churn2"],
                  "pending rows of that address")
        # One more, from another /64, 4 s later; then a restart after the
        # first three expired and before this one does.
        time.sleep(max(0, t0 + 4.0 - time.monotonic()))
        churn(bn.mass_addr(2), ["Late"], gw.listen_port)
        alice.take(is_pres(B.contact_jid(late), "subscribe"), since=m)
        gw.stop()
        assert_eq(rows(), ["Churn0", "Churn1", "Churn2", "Late"],
                  "pending rows while the gateway is stopped")
        time.sleep(max(0, t0 + lifetime + 1.0 - time.monotonic()))
        mark = 0
        gw.start()
        gw.wait_log(r"bridge: [3-9] expired requests deleted", 5, mark)
        assert_eq(rows(), ["Late"], "pending rows after the restart")
        # The live one was loaded: dialling again asks alice nothing new.
        m2 = alice.mark()
        churn(bn.mass_addr(2), ["Late"], gw.listen_port)
        alice.expect_none(is_pres(B.contact_jid(late), "subscribe"), 1.0,
                          since=m2, what="a second request after a restart")
        # ... and it expires while the gateway runs: row gone, alice told.
        left = t0 + 4.0 + lifetime + 3.0 - time.monotonic()
        gw.wait_log(r"bridge: request dropped reason=expired "
                    r"user=alice@localhost peer=Late@", max(left, 1.0))
        assert_eq(rows(), [], "pending rows after the last expired")
        withdrawn(w, alice, late, m2)
        # The /64 has room again.
        m3 = alice.mark()
        churn(addr, ["Again"], gw.listen_port)
        alice.take(is_pres(B.contact_jid("Again@" + addr), "subscribe"),
                   since=m3)
        gw.check_alive()
    finally:
        swap_gateway(w)


def requests_per_user(w):
    """limits.requests_per_user: three strangers from three /64s ask
    alice; past the bound her oldest request goes first (row, record, and
    alice is told), the newest stay."""
    gw = swap_gateway(w, limits={"requests_per_user": 2})
    peers = ["P1@%s" % bn.peer_addr(14), "P2@%s" % bn.mass_addr(3),
             "P3@%s" % bn.flood_addr(7)]
    try:
        alice = w.registered_user("alice", "Alice")
        alice.presence()
        m = alice.mark()
        for p in peers:
            nick, addr = p.split("@")
            churn(addr, [nick], gw.listen_port)
            alice.take(is_pres(B.contact_jid(p), "subscribe"), since=m)
        withdrawn(w, alice, peers[0], m)
        gw.wait_log(r"bridge: request dropped reason=too-many-requests "
                    r"user=alice@localhost peer=P1@")
        left = sorted(r[0] for r in gw.db(
            "SELECT nick FROM pending WHERE user_jid = ?",
            ("alice@localhost",)))
        assert_eq(left, ["P2", "P3"], "alice's pending rows")
        gw.check_alive()
    finally:
        swap_gateway(w)


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


def plugin2_not_added(w):
    """A 2.x plugin that does not list alice answers the gateway's dial
    with its header and not-authorized ("Not in contact list"): alice is
    told once, in words, in the conversation with the contact (what she
    writes is kept); the contact is never shown online; the gateway
    redials only after barev.refused_redial_min, not every redial_min.
    Once the contact adds alice and its client dials in, all is normal:
    presence, the kept message, messages both ways."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    tam = w.keep(B.plugin2_peer(TAM_I, TAM_NICK, []))
    tam.listen(B.PEER_PORT)
    cj = tam.cjid
    m = alice.mark()
    B.add_contact(alice, tam.jid)
    alice.message(cj, "are you there?")
    note = alice.take(is_msg(cj, B.ANY), 8, since=m,
                      what="the gateway's note that Tam has not added alice")
    text = body_of(note) or ""
    for words in ("has not added you", ALICE_B, tam.jid, "kept"):
        if words not in text:
            raise AssertionError("the note lacks %r: %r" % (words, text))
    tam.wait(lambda: len(tam.rejected) >= 2, 3 * B.REFUSED_REDIAL_MIN + 8,
             "a second refused dial")
    gap = tam.rejected[1][0] - tam.rejected[0][0]
    if gap < 0.9 * B.REFUSED_REDIAL_MIN:
        raise AssertionError("redialled %.2f s after the refusal; expected "
                             "barev.refused_redial_min (%.0f s)"
                             % (gap, B.REFUSED_REDIAL_MIN))
    time.sleep(0.5)
    notes = alice.all(is_msg(cj, B.ANY), since=m)
    assert_eq(len(notes), 1, "notes after two refusals (%s)"
              % [body_of(n) for n in notes])
    online = alice.all(is_pres(cj, None), since=m)
    if online:
        raise AssertionError("Tam was shown online: %s" % show(online[0]))
    # Tam's user adds alice; Tam's client dials in.
    m = alice.mark()
    with tam.cond:
        tam.buddies.append(ALICE_B)
    tam.dial(ALICE_B, B.GW, gw.listen_port)
    alice.take(is_pres(cj, None), 8, since=m, what="Tam's presence")
    tam.wait(lambda: "are you there?" in [b for _c, b in B.ref_bodies(tam)],
             8, "the message kept while Tam refused")
    alice.message(cj, "hello again")
    tam.wait(lambda: "hello again" in [b for _c, b in B.ref_bodies(tam)],
             5, "a message after Tam added alice")
    tam.send(ALICE_B, tam.message_xml(ALICE_B, "hi alice"))
    alice.take(is_msg(cj, "hi alice"), since=m)
    assert_eq(len(alice.all(is_msg(cj, B.ANY), since=m)), 1,
              "messages from Tam's JID after it added alice (no new note)")
    gw.check_alive()


BURST_2X = 60


def plugin2_burst_and_call(w):
    """A 2.x plugin contact comes back and sends, in the same write as its
    presence right after its header, the %d messages its user typed while
    it was away: all reach alice complete and in order. Then it places a
    call (a Jingle session-initiate iq): an iq error comes back on the
    pipe, which stays up.""" % BURST_2X
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    nell = w.keep(B.plugin2_peer(NELL_I, NELL_NICK, [ALICE_B]))
    nell.listen(B.PEER_PORT)
    cj = nell.cjid
    m = alice.mark()
    B.add_contact(alice, nell.jid)
    nell.wait(lambda: ALICE_B in nell.open_conversations(), 8,
              "a pipe from alice")
    alice.take(is_pres(cj, None), since=m, what="Nell's presence")
    # Nell's client quits; what its user types meanwhile is queued.
    bodies = ["burst %02d: %s & <%d>" % (i, "z" * 300, i)
              for i in range(BURST_2X)]

    def away():
        for c in nell.conns:
            if not c.closed:
                nell._drop(c, "client quits")
        nell.queue(ALICE_B, bodies)
    m = alice.mark()
    nell.call(away)
    alice.take(is_pres(cj, "unavailable"), since=m)
    nell.dial(ALICE_B, B.GW, gw.listen_port)
    deadline = time.monotonic() + 10 * B.SLOW
    while len(alice.all(is_msg(cj, B.ANY), since=m)) < BURST_2X:
        if time.monotonic() > deadline:
            raise AssertionError("%d of %d messages after 10 s:\n%s"
                                 % (len(alice.all(is_msg(cj, B.ANY),
                                                  since=m)),
                                    BURST_2X, alice.dump(m)))
        time.sleep(0.1)
    time.sleep(0.5)
    got = [body_of(el) for el in alice.all(is_msg(cj, B.ANY), since=m)]
    if got != bodies:
        raise AssertionError("the burst arrived as %d messages, not in "
                             "order or not whole: %s"
                             % (len(got), [g[:9] for g in got]))
    # A call.
    conv = nell.open_conversations()[ALICE_B]
    iq_id = nell.jingle_call(ALICE_B)
    r = nell.wait_stanza(ALICE_B, lambda e: bn.name_of(e) == "iq"
                         and e.get("id") == iq_id, 5, "the answer to the call")
    err = bn.stanza_error_condition(r)
    if r.get("type") != "error" or err is None or err[1] not in (
            "feature-not-implemented", "service-unavailable"):
        raise AssertionError("the call got %s" % bn.show(r))
    m = alice.mark()
    alice.message(cj, "after the call")
    nell.wait(lambda: "after the call" in [b for _c, b in B.ref_bodies(nell)],
              5, "a message after the call")
    nell.send(ALICE_B, nell.message_xml(ALICE_B, "still here"))
    alice.take(is_msg(cj, "still here"), since=m)
    if nell.open_conversations().get(ALICE_B) is not conv:
        raise AssertionError("the pipe did not stay up: " + nell.describe())
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
    soft = B.Soft()
    # The gateway shows itself to a user who registers (XEP-0115 caps).
    p = soft.check(dora.take, is_pres(COMPONENT, None), since=m,
                   what="the gateway's presence after registering")
    if p is not None:
        soft.check(check_caps, dora, COMPONENT, p, "the gateway")
    assert_eq(gw.db("SELECT nick FROM users WHERE jid = ?",
                    ("dora@localhost",)), [("Dora",)], "stored user")
    c = command(dora, "address")
    if "Dora@%s" % B.GW not in note(c)[1]:
        raise AssertionError("address note: %r" % (note(c),))
    want = "ports %d and %d" % (gw.listen_port, gw.listen_port2)
    if want not in note(c)[1]:
        soft.problems.append("My Barev address must give the listen ports "
                             "(%s): %r" % (want, note(c)[1]))
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
    # The contact's JID exactly as the roster shows it.
    c = command(dora, "contact-port", {"contact": B.contact_jid(inky),
                                       "port": "1338"})
    soft.check(assert_eq, note(c)[0], "info", "contact-port by JID: %r"
               % (note(c),))
    soft.check(assert_eq, gw.db("SELECT port FROM contacts WHERE user_jid "
                                "= ?", ("dora@localhost",)), [(1338,)],
               "port set by the contact's JID")
    c = command(dora, "own-address")
    assert_eq(note(c)[0], "error", "own-address in shared mode")
    c = command(dora, "register", action="cancel")
    assert_eq(c.get("status"), "canceled", "cancel")
    # Unregister asks first (a boolean in a form); no, or cancel, deletes
    # nothing; yes deletes.
    def dora_rows():
        return (gw.db("SELECT count(*) FROM users WHERE jid = ?",
                      ("dora@localhost",))[0][0],
                gw.db("SELECT count(*) FROM contacts WHERE user_jid = ?",
                      ("dora@localhost",))[0][0])
    c = command(dora, "unregister")
    assert_eq(dora_rows(), (1, 1), "dora's rows after the first step of "
              "unregister")
    assert_eq(c.get("status"), "executing", "unregister asks first: %s"
              % (note(c),))
    x = c.find(q(NS_XDATA, "x"))
    fields = {f.get("var"): f.get("type")
              for f in x.findall(q(NS_XDATA, "field"))}
    assert_eq(fields, {"confirm": "boolean"}, "unregister's form")
    c2 = command(dora, "unregister", {"confirm": "false"},
                 sid=c.get("sessionid"))
    assert_eq((c2.get("status"), note(c2)[0]), ("completed", "info"),
              "unregister, answered no")
    assert_eq(dora_rows(), (1, 1), "dora's rows after saying no")
    c = command(dora, "unregister")
    c2 = command(dora, "unregister", action="cancel", sid=c.get("sessionid"))
    assert_eq(c2.get("status"), "canceled", "unregister canceled")
    assert_eq(dora_rows(), (1, 1), "dora's rows after cancel")
    c = command(dora, "unregister")
    c = command(dora, "unregister", {"confirm": "1"}, sid=c.get("sessionid"))
    assert_eq(note(c)[0], "info", "unregister")
    assert_eq(dora_rows(), (0, 0), "dora's rows after unregister")
    gw.check_alive()
    soft.done()


# ---------------------------------------------------------------------------
# SIGHUP reaches what is in flight.

RELOADED = r"conf: reloaded "


def reload_with(gw, text):
    """Write text as gw's configuration and SIGHUP it; wait for the reload."""
    m = gw.mark()
    gw.gw.write_conf(text)
    gw.gw.signal(signal.SIGHUP)
    gw.wait_log(RELOADED, 5, start=m)


def reload_default_port(w):
    """A contact without a port of its own listens only on port B; the
    gateway's default_port is A (PEER_PORT), where nothing answers. A
    SIGHUP setting default_port to B makes the pair's next redial go to B,
    without alice doing anything."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    rex = w.keep(B.ref_peer(REX_I, REX_NICK, [ALICE_B]))
    other = rex.listen()
    try:
        B.add_contact(alice, rex.jid)
        # Settled (alice's subscribed also asks for the pipe), then a
        # redial that fails at the default port, and the log says which.
        roster_item(alice, rex.cjid, ("both",))
        m = gw.mark()
        gw.wait_log(r"pair \S+: dial failed addr=%s port=%d "
                    % (re.escape(rex.addr), B.PEER_PORT), 8, start=m)
        assert not rex.open_conversations(), "a pipe on the wrong port"
        text = gw.conf_text.replace("default_port = %d;" % B.PEER_PORT,
                                    "default_port = %d;" % other)
        assert text != gw.conf_text, "no default_port in the configuration"
        reload_with(gw, text)
        # redial_max is 2 s: the next redial is due within about 3 s.
        rex.wait(lambda: ALICE_B in rex.open_conversations(), 8,
                 "a pipe from alice on port %d" % other)
    finally:
        reload_with(gw, gw.conf_text)
        alice.presence(to=rex.cjid, type="unsubscribe")
    gw.check_alive()


def reload_stanza_limit(w):
    """A pipe open before a SIGHUP that lowers limits.stanza_bytes to 512
    holds the new limit: a 2000-byte message on it closes that pipe with
    policy-violation instead of reaching alice."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    mx = w.keep(B.ref_peer(MAX_I, MAX_NICK, [ALICE_B]))
    mx.listen(B.PEER_PORT)
    cj = B.add_contact(alice, mx.jid)
    mx.wait(lambda: ALICE_B in mx.open_conversations(), 8, "a pipe from alice")
    old = mx.open_conversations()[ALICE_B]
    text = gw.conf_text.replace("limits = {", "limits = {\n  stanza_bytes = 512;")
    try:
        reload_with(gw, text)
        m = alice.mark()
        mx.send(ALICE_B, '<message type="chat"><body>%s</body></message>'
                % ("x" * 2000))
        mx.wait_stanza(ALICE_B, lambda el: el.tag.endswith("}error")
                       and "policy-violation" in B.show(el), 5,
                       "a stream error policy-violation")
        mx.wait(lambda: old.closed, 8, "the pipe closed by the gateway")
        alice.expect_none(is_msg(cj), 1.0, since=m,
                          what="the oversized message")
    finally:
        reload_with(gw, gw.conf_text)
        alice.presence(to=cj, type="unsubscribe")
    gw.check_alive()


def reload_redial(w):
    """A pair waiting a minute to redial (redial_min = redial_max = 60);
    a SIGHUP back to 0.5 s and 2 s shortens that wait: the contact, now
    listening, gets its pipe within a few seconds."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    zed = w.keep(B.ref_peer(ZED_I, ZED_NICK, [ALICE_B]))
    slow = re.sub(r"redial_max = [0-9.]+;", "redial_max = 60.0;",
                  re.sub(r"redial_min = [0-9.]+;", "redial_min = 60.0;",
                         gw.conf_text))
    assert slow != gw.conf_text, "no redial_min/max in the configuration"
    try:
        reload_with(gw, slow)
        m = gw.mark()
        B.add_contact(alice, zed.jid)
        r = gw.wait_log(r"pair \S+%s: redial_in_ms=(\d+)"
                        % re.escape(zed.jid), 8, start=m)
        assert int(r.group(1)) >= 60000, "redial in %s ms" % r.group(1)
        zed.listen(B.PEER_PORT)
        reload_with(gw, gw.conf_text)
        zed.wait(lambda: ALICE_B in zed.open_conversations(), 5,
                 "a pipe from alice soon after the reload")
    finally:
        reload_with(gw, gw.conf_text)
        alice.presence(to=zed.cjid, type="unsubscribe")
    gw.check_alive()


def reload_ping_interval(w):
    """An open, idle pipe whose next keepalive is some 30 s away
    (ping_interval 30); a SIGHUP setting ping_interval to 1 s reaches it:
    the peer is pinged within a few seconds."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    pip = w.keep(B.ref_peer(PIP_I, PIP_NICK, [ALICE_B]))
    pip.listen(B.PEER_PORT)
    cj = B.add_contact(alice, pip.jid)
    pip.wait(lambda: ALICE_B in pip.open_conversations(), 8,
             "a pipe from alice")
    # Past the first wake-up (ping_timeout after the headers).
    time.sleep(4)

    def pinged_since(t):
        return lambda: any(w_ == "ping-answered" and at > t
                           for at, w_, _d in pip.events)
    fast = re.sub(r"ping_interval = [0-9.]+;", "ping_interval = 1.0;",
                  gw.conf_text)
    assert fast != gw.conf_text, "no ping_interval in the configuration"
    try:
        t = time.monotonic()
        assert not pinged_since(0)(), "pinged before the reload"
        reload_with(gw, fast)
        pip.wait(pinged_since(t), 4, "a ping soon after the reload")
    finally:
        reload_with(gw, gw.conf_text)
        alice.presence(to=cj, type="unsubscribe")
    gw.check_alive()


def reload_request_timeout(w):
    """A stranger's pipe open while alice is asked, under request_timeout
    60 s; a SIGHUP back to 4 s reaches it: the pipe closes some 4 s after
    the reload, not a minute after it opened."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    alice.presence()
    quinn = w.keep(B.RawPeer(QUINN_I, QUINN_NICK, listen=False))
    slow = re.sub(r"request_timeout = [0-9.]+;", "request_timeout = 60.0;",
                  gw.conf_text)
    assert slow != gw.conf_text, "no request_timeout in the configuration"
    try:
        reload_with(gw, slow)
        m = alice.mark()
        p = quinn.dial(ALICE_B, gw.listen_port)
        alice.take(is_pres(quinn.cjid, "subscribe"), since=m)
        reload_with(gw, gw.conf_text)
        p.c.wait(lambda: p.c.stream_end or p.c.eof, 7,
                 "the stranger's pipe closed after the new request_timeout")
    finally:
        reload_with(gw, gw.conf_text)
        alice.presence(to=quinn.cjid, type="unsubscribed")
    gw.check_alive()


def reload_lifetime(w):
    """A message queued for an unreachable contact under the default
    lifetime (7 days); a SIGHUP that shortens storage.message_lifetime to
    1 s applies to it: its sender gets recipient-unavailable at once, not
    in a week."""
    gw = w.gateway()
    alice = w.registered_user("alice", "Alice")
    cj = B.contact_jid(NOBODY)
    m = alice.mark()
    alice.message(cj, "will you ever read this", mid="life-1")
    time.sleep(2.5)   # older than the new lifetime, in whole seconds
    assert_eq(gw.db("SELECT count(*) FROM queue WHERE body = ?",
                    ("will you ever read this",)), [(1,)], "queued")
    text = re.sub(r"message_lifetime = [0-9.]+;", "message_lifetime = 1.0;",
                  gw.conf_text)
    assert text != gw.conf_text, "no message_lifetime in the configuration"
    try:
        reload_with(gw, text)
        err = alice.take(is_error(cj, "message"), 5, since=m,
                         what="the expiry error after the reload")
        assert_eq(err.get("id"), "life-1", "expiry error id")
        assert_eq(error_cond(err)[1], "recipient-unavailable",
                  "expiry error condition")
    finally:
        reload_with(gw, gw.conf_text)
        alice.presence(to=cj, type="unsubscribe")
    gw.check_alive()


REFUSED_TEXT = "no longer allows"


def expect_refused(u, m, frm, name, what):
    check_refused(u.take(is_error(frm, name), since=m, what=what), what)


def check_refused(e, what):
    etype, cond, text = error_cond(e) or (None, None, None)
    if cond != "not-allowed" or REFUSED_TEXT not in (text or ""):
        raise AssertionError("%s: expected not-allowed saying %r, got %s"
                             % (what, REFUSED_TEXT, show(e)))


def reload_access(w):
    """erin is registered and chatting with Tom; a SIGHUP whose access.jids
    no longer lists her: her pipe closes, her next stanzas to the gateway
    and to Tom get not-allowed with an explanation, her rows stay in the
    store; listing her again restores service without a new login."""
    gw = w.gateway()
    erin = w.registered_user("erin", "Erin")
    tom = w.keep(B.ref_peer(TOM_I, TOM_NICK, [ERIN_B]))
    tom.listen(B.PEER_PORT)
    cj = B.add_contact(erin, tom.jid)
    tom.wait(lambda: ERIN_B in tom.open_conversations(), 8,
             "a pipe from erin")
    narrowed = gw.conf_text.replace('"erin@localhost", ', "").replace(
        ', "erin@localhost"', "")
    assert "erin@localhost" not in narrowed, "erin still listed"
    try:
        reload_with(gw, narrowed)
        tom.wait(lambda: ERIN_B not in tom.open_conversations(), 5,
                 "erin's pipe closed")
        m = erin.mark()
        erin.message(cj, "still there?", mid="refused-1")
        expect_refused(erin, m, cj, "message", "a message to Tom")
        erin.presence(show="away")
        expect_refused(erin, m, COMPONENT, "presence", "presence")
        check_refused(erin.iq(COMPONENT, '<command xmlns="%s" node="address"/>'
                              % NS_COMMANDS, "set"), "the address command")
        assert not any(b == "still there?" for _c, b in B.ref_bodies(tom)), \
            "the refused message reached Tom"
        assert_eq(gw.db("SELECT nick FROM users WHERE jid = ?",
                        ("erin@localhost",)), [("Erin",)],
                  "erin's row once refused")
        rows = gw.db("SELECT nick FROM contacts WHERE user_jid = ?",
                     ("erin@localhost",))
        assert_eq([r[0].lower() for r in rows], ["tom"],
                  "erin's contacts once refused")
        time.sleep(1.5)
        assert ERIN_B not in tom.open_conversations(), \
            "the gateway dialled Tom for a refused user"
    finally:
        reload_with(gw, gw.conf_text)
    # The gateway asks the server for erin's presence: her pipe comes back.
    tom.wait(lambda: ERIN_B in tom.open_conversations(), 8,
             "erin's pipe after she is allowed again")
    m = erin.mark()
    erin.message(cj, "back again", mid="allowed-1")
    tom.wait(lambda: any(b == "back again" for _c, b in B.ref_bodies(tom)),
             5, "erin's message after she is allowed again")
    erin.expect_none(is_error(cj), 1.0, since=m)
    gw.check_alive()


def restart_access(w):
    """The same at a restart: a gateway started with access.jids no longer
    listing erin refuses her stanzas and keeps her rows; started again
    with her listed, it serves her."""
    gw = w.gateway()
    erin = w.registered_user("erin", "Erin")
    orig = gw.conf_text
    gw.conf_text = orig.replace('"erin@localhost", ', "").replace(
        ', "erin@localhost"', "")
    assert "erin@localhost" not in gw.conf_text, "erin still listed"
    cj = B.contact_jid("Tom@%s" % bn.peer_addr(TOM_I))
    try:
        gw.restart()
        m = erin.mark()
        erin.message(cj, "after the restart", mid="refused-2")
        expect_refused(erin, m, cj, "message", "a message after the restart")
        assert_eq(gw.db("SELECT nick FROM users WHERE jid = ?",
                        ("erin@localhost",)), [("Erin",)],
                  "erin's row after the restart")
    finally:
        gw.conf_text = orig
        gw.restart()
    m = erin.mark()
    erin.message(cj, "allowed again", mid="allowed-2")
    erin.expect_none(is_error(cj), 1.5, since=m)
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
    ("discovery: answers from the JID asked, caps, vCard, time, presence",
     discovery),
    ("receipts only after the peer's answer", receipts),
    ("typing: composing repeated, paused", typing),
    ("a message too big for Barev is refused, the next flows", big_message),
    ("a flood of presences and chat states is coalesced", flood),
    ("a message lost on %d pipes is given up, the next flows" % 3,
     lost_attempts, 90),
    ("unsubscribe removes the contact and closes the pipe", unsubscribe),
    ("a contact added by its typeable JID: one roster entry",
     typeable_contact),
    ("strangers: accept, refuse, timeout, stored request", strangers),
    ("a /64 flood of silent strangers: contacts still reach the user",
     subnet_flood),
    ("nick churn: requests bounded per /64, expiring, restart loads live",
     nick_churn),
    ("limits.requests_per_user: the oldest request goes first",
     requests_per_user),
    ("two users share one contact; inbound routed by `to`", shared_contact),
    ("unregister removes everything", unregister),
    ("ad-hoc commands: register, address, contact port, unregister",
     adhoc_commands),
    ("SIGHUP: a new default_port reaches the next redial",
     reload_default_port),
    ("SIGHUP: narrowed access refuses a registered user, keeps her data",
     reload_access),
    ("restart with narrowed access refuses her too", restart_access),
    ("SIGHUP: a lower stanza limit holds on open pipes", reload_stanza_limit),
    ("SIGHUP: a shorter message lifetime applies to queued messages",
     reload_lifetime),
    ("SIGHUP: a shorter redial backoff reaches a pair waiting to redial",
     reload_redial),
    ("SIGHUP: a shorter ping_interval reaches open pipes",
     reload_ping_interval),
    ("SIGHUP: a shorter request_timeout reaches a waiting stranger",
     reload_request_timeout),
    ("store-and-forward, in order, across a restart", store_and_forward),
    ("plugin 2.x has not added alice: told once, never online, backoff",
     plugin2_not_added),
    ("plugin 2.x: a burst after reconnecting, in order; a call gets an "
     "iq error", plugin2_burst_and_call),
    ("restart brings pipes and presence back", restart_everything),
    ("kill -9 in a burst of %d messages: at least once, in order" % BURST,
     kill9_burst, 90),
    ("disk full: each message delivered or refused, then flowing again",
     disk_full, 90),
    ("expiry: the sender gets recipient-unavailable", expiry_check, 90),
    ("a Pascal contact idle: pipe kept, no presence churn",
     pascal_contact_idle),
    ("a contact gone during a crash is shown offline after it",
     stale_after_crash),
    # Last: the server restarts, and every user's session with it.
    ("server outage: users offline on Barev, messages kept for the link",
     server_outage, 90),
]


def tests():
    return B.server_tests(SCENARIOS)


if __name__ == "__main__":
    os.environ.setdefault("TEST_TOTAL_TIMEOUT", "600")
    bn.main(tests())
