"""The command line and the configuration file: -t, --version, --help, bad
configurations, SIGHUP reloads. No XMPP server is needed: the gateway points
at a closed port and keeps retrying."""

import os
import re
import shlex
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# The gateway's output this file relies on, in one place.
VERSION = r"^barev-gateway \S+\n?$"
CONNECTING = r"component: connecting server=[^ ]+:%d attempt=\d+"
RELOADED = r"conf: reloaded %s"
RELOAD_FAILED = r"conf: reload failed, keeping the old configuration: .+"
DEBUG_LINE = r"^\S+ barev-gateway debug: "
RESTART_NEEDED = r"takes effect only after a restart"
EXITING = r"main: exiting reason=SIGTERM"
LINK_DOWN = r"component: link down reason="
CONNECT_FAILED = (r'component: connect failed address=%s port=%d '
                  r'error="(?P<error>[^"]*)"')
LINK_DOWN_FAILED = (r'component: link down reason=connect-failed address=%s '
                    r'port=%d error="(?P<error>[^"]*)"')
EXIT_BAD_CONFIG = 2


def good_conf(d, server=None, **kw):
    server = server or h.NoServer()
    return h.gateway_conf(server, d, **kw)


def line_of(text, needle):
    """1-based number of the first line of text containing needle."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError("%r not in the configuration" % needle)


def check(conf_text, d):
    """Write conf_text to a file in d and run `barev-gateway -t -c FILE`."""
    path = os.path.join(d, "barev-gateway.conf")
    with open(path, "w") as f:
        f.write(conf_text)
    return path, h.run_gateway(["-t", "-c", path])


# --- the command line --------------------------------------------------------

def version():
    p = h.run_gateway(["--version"])
    assert p.returncode == 0, "exit status %d, stderr %r" % (p.returncode, p.stderr)
    assert re.match(VERSION, p.stdout), "stdout %r" % p.stdout


def help_():
    p = h.run_gateway(["--help"])
    assert p.returncode == 0, "exit status %d, stderr %r" % (p.returncode, p.stderr)
    out = p.stdout + p.stderr
    for opt in ("-c", "-t"):
        assert re.search(r"(^|\s)%s\b" % opt, out), "%s not in:\n%s" % (opt, out)


def check_good():
    d = h.subdir("good")
    path, p = check(good_conf(d), d)
    assert p.returncode == 0, "exit status %d for a good file %s; stderr:\n%s" \
        % (p.returncode, path, p.stderr)


def check_good_secret_file():
    d = h.subdir("good-secret-file")
    secret = os.path.join(d, "secret")
    with open(secret, "w") as f:
        f.write("s3cret\n")
    path, p = check(good_conf(d, secret_file=secret), d)
    assert p.returncode == 0, "exit status %d for a good file %s; stderr:\n%s" \
        % (p.returncode, path, p.stderr)


def check_admins_ignored():
    """access.admins gates no command yet: -t accepts a file that has it
    (copied from an older example) and warns in one line that it does
    nothing, naming the file, the line and the key."""
    d = h.subdir("admins")
    text = replace("access = {", 'access = {\n  admins = [ "root@example.org" ];'
                   )(good_conf(d))
    path, p = check(text, d)
    assert p.returncode == 0, "exit status %d; stderr:\n%s" \
        % (p.returncode, p.stderr)
    warn = [l for l in p.stderr.splitlines() if "access.admins" in l]
    assert len(warn) == 1, "no one-line warning about access.admins:\n%s" \
        % p.stderr
    n = line_of(text, "admins =")
    assert "%s:%d:" % (path, n) in warn[0], \
        "file and line %d not named in %r" % (n, warn[0])


# --- bad configurations: exit 2, one line naming the file, line and key -----

def bad_case(edit, marker, keys):
    """edit(text) -> bad text; marker: a string on the bad line whose number
    must be reported (None: no line to name); keys: acceptable spellings of
    the key that must be named (empty: none)."""
    def t():
        d = h.subdir("bad")
        text = edit(good_conf(d))
        path, p = check(text, d)
        lines = p.stderr.splitlines()
        assert p.returncode == EXIT_BAD_CONFIG, \
            "exit status %d, expected %d; stderr %r" \
            % (p.returncode, EXIT_BAD_CONFIG, p.stderr)
        assert len(lines) == 1, "expected one line on stderr, got %d:\n%s" \
            % (len(lines), p.stderr)
        msg = lines[0]
        assert path in msg, "file %s not named in %r" % (path, msg)
        if marker is not None:
            n = line_of(text, marker)
            assert re.search(r"(?<!\d)%d(?!\d)" % n, msg), \
                "line %d not named in %r" % (n, msg)
        if keys:
            assert any(k in msg for k in keys), \
                "key %s not named in %r" % (" or ".join(keys), msg)
    return t


def replace(old, new):
    def edit(text):
        assert old in text, "%r not in the configuration" % old
        return text.replace(old, new, 1)
    return edit


def drop_line(needle):
    def edit(text):
        lines = text.splitlines(True)
        return "".join(l for l in lines if needle not in l)
    return edit


BAD = [
    ("syntax error", replace("  reconnect_max", "  reconnect_max = ;\n  x"),
     "reconnect_max = ;", []),
    ("unknown key", replace("  reconnect_min", '  colour = "blue";\n  reconnect_min'),
     "colour", ["colour"]),
    ("wrong type", lambda t: re.sub(r"port = (\d+);", r'port = "\1";', t, 1),
     'port = "', ["port"]),
    ("out-of-range value", lambda t: re.sub(r"port = \d+;", "port = 70000;", t, 1),
     "port = 70000;", ["port"]),
    ("missing required key component.jid", drop_line("jid ="),
     None, ["component.jid"]),
    ("unreadable secret_file",
     lambda t: re.sub(r'secret = "[^"]*";',
                      'secret_file = "/nonexistent/barev-test/secret";', t, 1),
     "secret_file", ["secret_file"]),
    ("both secret and secret_file",
     replace("  host =", '  secret_file = "/dev/null";\n  host ='),
     None, ["secret"]),
    ("the same listen address twice",
     lambda t: re.sub(r'listen = \[ "([^"]+)" \];',
                      r'listen = [ "\1", "\1" ];', t, 1),
     "listen =", ["barev.listen"]),
    ("one listen address written two ways",
     lambda t: re.sub(r'listen = \[ "\[::1\]:(\d+)" \];',
                      r'listen = [ "[0:0::1]:\1", "[::1]:\1" ];', t, 1),
     "listen =", ["barev.listen"]),
    ("storage.path in a directory that does not exist",
     lambda t: re.sub(r'path = "[^"]*";',
                      'path = "/nonexistent/barev-test/state.db";', t, 1),
     "/nonexistent/barev-test", ["storage.path"]),
    ("storage.path in a file, not a directory",
     lambda t: re.sub(r'path = "[^"]*";', 'path = "/dev/null/state.db";',
                      t, 1),
     "/dev/null/state.db", ["storage.path"]),
]


def storage_not_writable():
    """-t run as the daemon's user refuses a storage.path whose directory
    that user cannot write (root can write anywhere, so the check is run
    as nobody; the same file passes as root)."""
    top = tempfile.mkdtemp(prefix="bgw-ro-")
    try:
        os.chmod(top, 0o755)
        ro = os.path.join(top, "ro")
        os.mkdir(ro, 0o755)   # root's, not writable by nobody
        text = re.sub(r'path = "[^"]*";',
                      'path = "%s/state.db";' % ro, good_conf(top), 1)
        path = os.path.join(top, "barev-gateway.conf")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        as_root = h.run_gateway(["-t", "-c", path])
        assert as_root.returncode == 0, \
            "as root: exit %d: %r" % (as_root.returncode, as_root.stderr)
        wrapper = shlex.split(os.environ.get("TEST_WRAPPER", ""))
        p = h.run_cmd(["runuser", "-u", "nobody", "--"] + wrapper +
                      [h.require_gateway(), "-t", "-c", path], timeout=30)
        lines = p.stderr.splitlines()
        assert p.returncode == EXIT_BAD_CONFIG, \
            "as nobody: exit %d, expected %d; stderr %r" \
            % (p.returncode, EXIT_BAD_CONFIG, p.stderr)
        assert len(lines) == 1, "expected one line, got:\n%s" % p.stderr
        n = line_of(text, ro)
        assert path in lines[0] and "storage.path" in lines[0] and \
            re.search(r"(?<!\d)%d(?!\d)" % n, lines[0]), \
            "file, line %d or key not named in %r" % (n, lines[0])
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- SIGHUP ------------------------------------------------------------------

def start_idle_gateway(**kw):
    """A gateway aimed at a closed port: it runs and retries forever."""
    srv = h.NoServer()
    gw = h.Gateway(h.subdir("hup"), srv, reconnect_min=0.2, reconnect_max=1.0,
                   **kw)
    gw.start()
    gw.wait_log(CONNECTING % srv.component_port, 5)
    return gw, srv


def sighup_broken():
    """SIGHUP with a broken file: the gateway keeps running on the old
    configuration and says so."""
    gw, srv = start_idle_gateway()
    try:
        mark = gw.mark()
        gw.write_conf(gw.conf() + "\nthis is not libconfig\n")
        gw.signal(signal.SIGHUP)
        m = gw.wait_log(RELOAD_FAILED, 5, start=mark)
        assert gw.conf_path in m.group(0), \
            "the cause does not name the file: %r" % m.group(0)
        # still alive and still doing its job with the old configuration
        gw.wait_log(CONNECTING % srv.component_port, 5, start=gw.mark())
        assert gw.alive()
    except BaseException:
        gw.kill_now()
        raise
    gw.stop_clean(2)


def sighup_log_level():
    """SIGHUP with a valid file whose log level changed from info to debug:
    the reload is logged and debug lines appear from then on."""
    gw, srv = start_idle_gateway(args=(), level="info")
    try:
        assert not gw.matches(DEBUG_LINE), "debug lines at level info"
        mark = gw.mark()
        gw.write_conf(gw.conf(level="debug"))
        gw.signal(signal.SIGHUP)
        gw.wait_log(RELOADED % re.escape(gw.conf_path), 5, start=mark)
        gw.wait_log(DEBUG_LINE, 5, start=mark)
        assert not gw.matches(RESTART_NEEDED, mark), \
            "only log.level changed, yet:\n" + gw.log_since(mark)
        assert gw.alive()
    except BaseException:
        gw.kill_now()
        raise
    gw.stop_clean(2)


def sighup_shorter_backoff():
    """A gateway waiting 30 s or more before dialling the server again; a
    SIGHUP lowering reconnect_min and reconnect_max to 0.2 s and 1 s
    shortens that wait: it dials again within a few seconds."""
    srv = h.NoServer()
    gw = h.Gateway(h.subdir("hup-backoff"), srv, reconnect_min=30.0,
                   reconnect_max=30.0)
    gw.start()
    try:
        gw.wait_log(r"component: link down .*retry_in_ms=\d+", 5)
        mark = gw.mark()
        gw.write_conf(gw.conf(reconnect_min=0.2, reconnect_max=1.0))
        gw.signal(signal.SIGHUP)
        gw.wait_log(RELOADED % re.escape(gw.conf_path), 5, start=mark)
        gw.wait_log(CONNECTING % srv.component_port, 4, start=mark)
        assert gw.alive()
    except BaseException:
        gw.kill_now()
        raise
    gw.stop_clean(2)


def sigterm_idle():
    """SIGTERM while retrying: exit 0 within 2 s, with a log line."""
    gw, _srv = start_idle_gateway()
    status, elapsed = gw.stop(2)
    assert status == 0, "exit status %s" % status
    assert elapsed < 2.0, "took %.2fs" % elapsed
    assert gw.matches(EXITING), "no /%s/ in the log" % EXITING
    assert not gw.sanitizer_report(), "\n".join(gw.sanitizer_report())


# Runs "$@" in a mount namespace of its own where /dev/log is no socket.
HIDE_DEV_LOG = (
    "mount --make-rprivate / || exit 97; "
    "if [ -e /dev/log ]; then mount --bind /dev/null /dev/log || exit 97; fi; "
    "[ ! -S /dev/log ] || exit 97; exec \"$@\"")
SYSLOG_FALLBACK = r"^\S+ barev-gateway warning: log: syslog .*stderr"


class NoDevLogGateway(h.Gateway):
    def argv(self):
        return [h.require_program("unshare"), "-m", "sh", "-c",
                HIDE_DEV_LOG, "sh"] + super().argv()


def syslog_without_dev_log():
    """-s on a machine without /dev/log: one warning on stderr, then the
    log goes on on stderr (never into silence)."""
    srv = h.NoServer()
    gw = NoDevLogGateway(h.subdir("nodevlog"), srv, args=("-s",),
                         reconnect_min=0.2, reconnect_max=1.0)
    gw.start()
    try:
        gw.wait_log(CONNECTING % srv.component_port, 5)
        warnings = gw.matches(SYSLOG_FALLBACK)
        assert len(warnings) == 1, "%d syslog warnings:\n%s" \
            % (len(warnings), gw.log_text())
        assert gw.log_text().index(warnings[0].group(0)) < \
            gw.log_text().index("component: connecting"), gw.log_text()
    except BaseException:
        gw.kill_now()
        raise
    status, _elapsed = gw.stop(2)
    assert status == 0, "exit status %s:\n%s" % (status, gw.log_text())
    assert gw.matches(EXITING), "no /%s/ on stderr:\n%s" % (EXITING,
                                                           gw.log_text())


def refused_connect_logged():
    """With the default component.host (localhost: 127.0.0.1, then ::1)
    and nobody listening, each failed connect names the address, the port
    and the system's error in words."""
    srv = h.NoServer()
    d = h.subdir("refused")
    text = good_conf(d, srv, reconnect_min=30.0, reconnect_max=60.0)
    assert '  host = "127.0.0.1";\n' in text
    gw = h.Gateway(d, srv, conf_text=text.replace('  host = "127.0.0.1";\n',
                                                  ""))
    gw.start()
    try:
        gw.wait_log(LINK_DOWN, 10)
        first = gw.wait_log(CONNECT_FAILED % ("127\\.0\\.0\\.1",
                                               srv.component_port), 1)
        assert first.group("error") == "Connection refused", first.group(0)
        assert gw.matches(re.escape(first.group(0)) + " next=::1"), \
            "::1 not tried next:\n" + gw.log_text()
        last = gw.wait_log(LINK_DOWN_FAILED % ("::1", srv.component_port), 1)
        assert re.match(r"[A-Za-z]", last.group("error")), last.group(0)
        assert not gw.matches(r"code=-?\d"), gw.log_text()
    except BaseException:
        gw.kill_now()
        raise
    gw.stop_clean(2)


TESTS = [
    ("--version prints the name and version", version),
    ("--help mentions -c and -t", help_),
    ("-t on a good file: exit 0", check_good),
    ("-t on a good file with secret_file: exit 0", check_good_secret_file),
    ("-t on a file with access.admins: exit 0, one warning line",
     check_admins_ignored),
] + [
    ("-t on a bad file (%s): exit 2, one line naming file, line and key" % name,
     bad_case(edit, marker, keys))
    for name, edit, marker, keys in BAD
] + [
    ("-t as the daemon's user on a storage directory it cannot write: exit 2",
     storage_not_writable),
    ("SIGHUP with a broken file keeps the old configuration", sighup_broken),
    ("SIGHUP applies a new log level", sighup_log_level),
    ("SIGHUP shortens a pending reconnect wait", sighup_shorter_backoff),
    ("SIGTERM while retrying: clean exit", sigterm_idle),
    ("a refused connect names the address, the port and the error",
     refused_connect_logged),
    ("-s without /dev/log: one warning, then the log on stderr",
     syslog_without_dev_log),
]

if __name__ == "__main__":
    h.run(TESTS)
