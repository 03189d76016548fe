"""The README's first command, after the build: a private Prosody, the
gateway as its component barev.localhost, and one XMPP user talking to it.

Run by contrib/demo.sh with Debian's /usr/bin/python3. --stay keeps
everything running until Ctrl-C. Everything started is stopped at the end.
"""

import logging
import os
import re
import shutil
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
import harness  # noqa: E402


def say(text):
    print("demo: " + text, flush=True)


def main():
    stay = "--stay" in sys.argv[1:]
    harness.require_root()
    tmp = harness.tmp_root()
    prosody = harness.Prosody(harness.subdir("prosody"))
    prosody.start()
    prosody.register("alice", "alice-pw")
    say("private Prosody on 127.0.0.1:%d (users), :%d (components), data in %s"
        % (prosody.c2s_port, prosody.component_port, tmp))

    gw = harness.Gateway(tmp, prosody, args=())
    gw.start()
    gw.wait_log(harness.LINK_UP_RE % (re.escape(prosody.component_domain),
                                      prosody.component_port), timeout=10)
    say("barev-gateway connected as %s (log: %s)"
        % (prosody.component_domain, gw.log_path))

    alice = harness.Client("alice@localhost", "alice-pw", prosody)
    say("alice@localhost logged in with slixmpp")
    gwjid = prosody.component_domain
    info = alice.disco_info(gwjid)
    say("disco#info of %s: identity %s, features %s"
        % (gwjid, harness.identities(info), sorted(harness.features(info))))
    version = alice.version(gwjid)
    say("version: %s %s" % (
        harness.child_text(version, harness.NS_VERSION, "name"),
        harness.child_text(version, harness.NS_VERSION, "version")))
    pong = alice.ping(gwjid)
    say("ping: %s from %s" % (pong["type"], pong["from"]))
    unknown = alice.unknown_iq(gwjid)
    say("an unknown request: %s (%s)"
        % (unknown["type"], unknown["error"]["condition"]))

    if stay:
        say("running; log in as alice@localhost / alice-pw on 127.0.0.1:%d. "
            "Ctrl-C stops everything." % prosody.c2s_port)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    alice.disconnect()
    rc, elapsed = gw.stop()
    say("gateway stopped: exit %s after %.2fs" % (rc, elapsed))
    prosody.stop()
    # slixmpp's loop thread logs into tmp until the process ends.
    logging.disable(logging.CRITICAL)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
