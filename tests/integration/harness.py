"""Integration test harness for barev-gateway.

Real servers, real users: a private Prosody or ejabberd in a temporary
directory, the gateway connected to it as an XEP-0114 component, and users
driven by slixmpp. Output is TAP. Standard library and slixmpp only; run it
with Debian's /usr/bin/python3 (the only interpreter that has slixmpp).

A test is a plain function. A test that needs a shared server takes one
argument, the World (one server + one gateway + one logged-in user, started
lazily and shared by consecutive tests); see both_servers().

Environment: GATEWAY_BIN (the binary under test), TEST_SRCDIR,
TEST_WRAPPER (e.g. "valgrind -q --error-exitcode=99", prefixed to the
gateway's command line), TEST_KEEP=1 (keep the temporary directory),
TEST_TOTAL_TIMEOUT (seconds for the whole script, default 300),
TEST_ONLY=REGEX (run only the tests whose names match; for development),
TEST_TIMES=1 (print each test's duration), TEST_XMPP_DEBUG=1 (slixmpp
debug log, with every stanza, in slixmpp.log).
"""

import asyncio
import atexit
import ctypes
import datetime
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("TEST_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
GATEWAY_BIN = os.environ.get("GATEWAY_BIN") or os.path.join(SRCDIR, "barev-gateway")

COMPONENT = "barev.localhost"
SECRET = "s3cret"

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_VERSION = "jabber:iq:version"
NS_PING = "urn:xmpp:ping"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

# The gateway's log line the harness waits for (test files keep theirs at
# their top): % (re.escape(jid), server's component port).
LINK_UP_RE = r"component: link up jid=%s server=[^ ]+:%d"

# Sanitizer and valgrind reports that make a gateway run a failure.
SANITIZER_RE = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
    r"WARNING: ThreadSanitizer|==\d+== (Invalid|Conditional|Use of uninit|"
    r"Syscall param|Mismatched free|Source and destination overlap)|"
    r"==\d+== .* definitely lost")


class Unavailable(Exception):
    """The test cannot run here (not root, a program or package missing)."""


class TestTimeout(BaseException):
    """The per-test alarm fired (BaseException: `except Exception` in a
    test must not swallow it)."""


# ---------------------------------------------------------------------------
# Bookkeeping: everything started is registered, and stopped by PID on any
# exit path (normal end, exception, SIGTERM/SIGINT, the global watchdog).

_live = []           # objects with kill_now(), in start order
_live_lock = threading.RLock()
_popen_pids = set()  # our own children that subprocess.Popen will reap
_tmp_root = None
_test_logs = []      # (label, path) of logs worth showing if this test fails


def _track(obj):
    with _live_lock:
        if obj not in _live:
            _live.append(obj)


def _untrack(obj):
    with _live_lock:
        if obj in _live:
            _live.remove(obj)


def _cleanup_all():
    with _live_lock:
        objs = list(reversed(_live))
    for obj in objs:
        try:
            obj.kill_now()
        except Exception:
            pass
    _kill_strays()


def _proc_table():
    """{pid: (ppid, state, comm)} for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        fields = data[data.rindex(")") + 2:].split()
        table[int(name)] = (int(fields[1]), fields[0], comm)
    return table


def descendants(pid, table=None):
    """PIDs of every live descendant of pid."""
    table = table or _proc_table()
    children = {}
    for p, (pp, _state, _comm) in table.items():
        children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_strays():
    """Kill whatever is still below us (orphans reparented to us, thanks to
    PR_SET_CHILD_SUBREAPER) and reap zombies that are not Popen's."""
    table = _proc_table()
    me = os.getpid()
    for pid in descendants(me, table):
        if table[pid][1] != "Z" and pid not in _popen_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    _reap_orphans()


def _reap_orphans():
    table = _proc_table()
    me = os.getpid()
    for pid, (ppid, state, _comm) in table.items():
        if ppid == me and state == "Z" and pid not in _popen_pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except OSError:
                pass


def _set_subreaper():
    # Orphaned grandchildren (beam.smp below ejabberdctl/su/sh) stay our
    # descendants, so they can be found and killed, and no zombie is left.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _on_signal(signum, _frame):
    print("Bail out! got signal %d" % signum, flush=True)
    _cleanup_all()
    if _tmp_root is not None:
        print("# kept temporary directory %s" % _tmp_root, flush=True)
    os._exit(1)


def _popen(argv, log_path, **kw):
    """Start a child in its own session, output appended to log_path."""
    logf = open(log_path, "ab")
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             close_fds=True, **kw)
    finally:
        logf.close()
    _popen_pids.add(p.pid)
    return p


def _stop_popen(p, sig=signal.SIGTERM, timeout=10.0):
    """Signal p, wait up to timeout, then SIGKILL it and its process group.
    Returns (returncode, elapsed, killed)."""
    if p is None:
        return None, 0.0, False
    t0 = time.monotonic()
    killed = False
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except OSError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.kill()
            p.wait(5)
    return p.returncode, time.monotonic() - t0, killed


# ---------------------------------------------------------------------------
# Small helpers

def require_root():
    if os.geteuid() != 0:
        raise Unavailable("needs root (Prosody/ejabberd/namespace fixtures)")


def require_program(path_or_name):
    found = shutil.which(path_or_name) if os.sep not in path_or_name else (
        path_or_name if os.access(path_or_name, os.X_OK) else None)
    if not found:
        raise Unavailable("program not found: %s" % path_or_name)
    return found


def require_gateway():
    if not (os.path.isfile(GATEWAY_BIN) and os.access(GATEWAY_BIN, os.X_OK)):
        raise Unavailable("gateway binary not found: %s (set GATEWAY_BIN)"
                          % GATEWAY_BIN)
    return GATEWAY_BIN


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (bind to port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host, port, timeout=10.0, proc=None, what=None):
    """Wait until something accepts connections on host:port. If proc (a
    Popen) dies meanwhile, fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s exited with status %s before listening on "
                                 "%s:%d" % (what or "process", proc.returncode,
                                            host, port))
        if time.monotonic() > deadline:
            raise AssertionError("nothing listens on %s:%d after %.1fs%s"
                                 % (host, port, timeout,
                                    " (%s)" % what if what else ""))
        time.sleep(0.05)


def wait_until(pred, timeout, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def tmp_root():
    """This script's temporary directory (created on first use). World
    readable/traversable: ejabberd runs as user ejabberd."""
    global _tmp_root
    if _tmp_root is None:
        base = os.path.splitext(os.path.basename(sys.argv[0] or "test"))[0]
        _tmp_root = tempfile.mkdtemp(prefix="bgw-%s-" % base, dir="/tmp")
        os.chmod(_tmp_root, 0o755)
    return _tmp_root


def subdir(name):
    """A fresh directory under the script's temporary directory."""
    root = tmp_root()
    path = os.path.join(root, name)
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(root, "%s-%d" % (name, n))
    os.makedirs(path)
    return path


def show_log(label, path):
    """Show this log's tail if the current test fails."""
    if (label, path) not in _test_logs:
        _test_logs.append((label, path))


def tail(path, lines=20):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return ["(cannot read %s: %s)" % (path, e)]
    text = data.decode("utf-8", "replace").splitlines()
    return text[-lines:]


def run_cmd(argv, timeout=30, **kw):
    """Run a short command; returns CompletedProcess with text output."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout, **kw)
    return p


# ---------------------------------------------------------------------------
# Servers. Common interface: start(), stop(), restart(), register(user, pw),
# alive(), name, host, domain, c2s_port, component_port, component_domain,
# secret, log_path.

class Prosody:
    name = "prosody"

    def __init__(self, tmpdir, component_domain=COMPONENT, secret=SECRET,
                 host="127.0.0.1"):
        """host: the address every listener uses ("::1" inside a network
        namespace, where libstrophe cannot resolve 127.0.0.1)."""
        require_root()
        self.prosody = require_program("prosody")
        self.prosodyctl = require_program("prosodyctl")
        self.dir = os.path.join(tmpdir, "prosody")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "certs"), exist_ok=True)
        self.host = host
        self.domain = "localhost"
        self.component_domain = component_domain
        self.secret = secret
        self.c2s_port = free_port(host)
        self.component_port = free_port(host)
        self.config = os.path.join(self.dir, "prosody.cfg.lua")
        self.log_path = os.path.join(self.dir, "prosody.log")
        self.console_path = os.path.join(self.dir, "console.log")
        self.proc = None
        with open(self.config, "w") as f:
            f.write(self._config_text())

    def _config_text(self):
        d = self.dir
        return """\
-- private Prosody for barev-gateway integration tests
run_as_root = true -- otherwise it refuses, then hangs
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
log = {{ debug = "{d}/prosody.log" }}
interfaces = {{ "{host}" }}
local_interfaces = {{ "{host}" }}
c2s_ports = {{ {c2s} }}
c2s_interfaces = {{ "{host}" }}
component_ports = {{ {comp} }}
component_interfaces = {{ "{host}" }}
s2s_ports = {{ }}
modules_enabled = {{
  "roster"; "saslauth"; "disco"; "ping"; "version"; "posix";
}}
modules_disabled = {{ "s2s"; "tls"; "offline"; "admin_telnet"; "http"; }}
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"

VirtualHost "localhost"

Component "{comp_domain}"
  component_secret = "{secret}"
""".format(d=d, c2s=self.c2s_port, comp=self.component_port,
           comp_domain=self.component_domain, secret=self.secret,
           host=self.host)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=15.0):
        if self.alive():
            return
        show_log("prosody log", self.log_path)
        show_log("prosody console", self.console_path)
        self.proc = _popen([self.prosody, "-F", "--config", self.config],
                           self.console_path, cwd=self.dir)
        _track(self)
        try:
            wait_port(self.host, self.c2s_port, timeout, self.proc, "prosody")
            wait_port(self.host, self.component_port, timeout, self.proc,
                      "prosody")
        except BaseException:
            self.kill_now()
            raise

    def stop(self, timeout=10.0):
        rc, _elapsed, killed = _stop_popen(self.proc, signal.SIGTERM, timeout)
        if self.proc is not None:
            _popen_pids.discard(self.proc.pid)
        self.proc = None
        _untrack(self)
        if killed:
            raise AssertionError("prosody did not stop within %.0fs" % timeout)
        return rc

    def restart(self):
        self.stop()
        self.start()

    def kill_now(self):
        if self.proc is not None and self.proc.poll() is None:
            _stop_popen(self.proc, signal.SIGKILL, 5)
        self.proc = None
        _untrack(self)

    def register(self, user, password):
        p = run_cmd([self.prosodyctl, "--config", self.config, "register",
                     user, self.domain, password], cwd=self.dir)
        if p.returncode != 0:
            raise AssertionError("prosodyctl register %s failed (%d): %s%s"
                                 % (user, p.returncode, p.stdout, p.stderr))


class Ejabberd:
    name = "ejabberd"
    user = "ejabberd"  # ejabberdctl as root always switches to this user

    def __init__(self, tmpdir, component_domain=COMPONENT, secret=SECRET,
                 host="127.0.0.1"):
        """host: the address the c2s and component listeners use (see
        Prosody); Erlang distribution stays on 127.0.0.1."""
        require_root()
        self.ctl = require_program("ejabberdctl")
        try:
            pw = pwd.getpwnam(self.user)
        except KeyError:
            raise Unavailable("no user %s (is ejabberd installed?)" % self.user)
        self.dir = os.path.join(tmpdir, "ejabberd")
        self.conf_dir = os.path.join(self.dir, "conf")
        self.logs_dir = os.path.join(self.dir, "logs")
        self.spool_dir = os.path.join(self.dir, "spool")
        for d in (self.dir, self.conf_dir, self.logs_dir, self.spool_dir):
            os.makedirs(d, exist_ok=True)
        self.host = host
        self.domain = "localhost"
        self.component_domain = component_domain
        self.secret = secret
        self.c2s_port = free_port(host)
        self.component_port = free_port(host)
        self.dist_port = free_port()
        self.node = "bgtest%d@localhost" % self.dist_port
        self.cookie = os.urandom(12).hex()
        self.config = os.path.join(self.conf_dir, "ejabberd.yml")
        self.ctl_config = os.path.join(self.conf_dir, "ejabberdctl.cfg")
        self.log_path = os.path.join(self.logs_dir, "ejabberd.log")
        self.console_path = os.path.join(self.dir, "console.log")
        self.proc = None
        self.beam = None
        with open(self.config, "w") as f:
            f.write(self._config_text())
        with open(self.ctl_config, "w") as f:
            # ejabberdctl resets INET_DIST_INTERFACE before reading this file,
            # so it must be set here, not in the environment. With
            # ERL_DIST_PORT set no epmd is started. -setcookie keeps Erlang
            # from creating ~ejabberd/.erlang.cookie.
            f.write('ERLANG_NODE=%s\n' % self.node)
            f.write('ERL_DIST_PORT=%d\n' % self.dist_port)
            f.write('INET_DIST_INTERFACE=127.0.0.1\n')
            f.write('ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -setcookie %s"\n'
                    % self.cookie)
        with open(os.path.join(self.conf_dir, "inetrc"), "w") as f:
            f.write('{lookup,["file","native"]}.\n'
                    '{host,{127,0,0,1}, ["localhost"]}.\n')
        for root, dirs, files in os.walk(self.dir):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.chown(n, pw.pw_uid, pw.pw_gid)

    def _config_text(self):
        return """\
# private ejabberd for barev-gateway integration tests
loglevel: info
log_rotate_count: 0
hosts:
  - localhost
listen:
  -
    port: {c2s}
    ip: "{host}"
    module: ejabberd_c2s
    starttls: false
    starttls_required: false
  -
    port: {comp}
    ip: "{host}"
    module: ejabberd_service
    hosts:
      "{comp_domain}":
        password: "{secret}"
auth_method: internal
auth_password_format: plain
disable_sasl_mechanisms: ["digest-md5", "X-OAUTH2"]
s2s_access: none
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_version: {{}}
""".format(c2s=self.c2s_port, comp=self.component_port,
           comp_domain=self.component_domain, secret=self.secret,
           host=self.host)

    def _ctl_argv(self, *args):
        return [self.ctl, "--config-dir", self.conf_dir, "--config", self.config,
                "--ctl-config", self.ctl_config, "--logs", self.logs_dir,
                "--spool", self.spool_dir] + list(args)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _find_beam(self):
        table = _proc_table()
        for pid in descendants(self.proc.pid, table):
            if table[pid][2].startswith("beam"):
                return pid
        return None

    def start(self, timeout=30.0):
        if self.alive():
            return
        show_log("ejabberd log", self.log_path)
        show_log("ejabberd console", self.console_path)
        self.proc = _popen(self._ctl_argv("foreground"), self.console_path,
                           cwd="/")
        _track(self)
        try:
            wait_port(self.host, self.c2s_port, timeout, self.proc, "ejabberd")
            wait_port(self.host, self.component_port, timeout, self.proc,
                      "ejabberd")
            self.beam = self._find_beam()
            if self.beam is None:
                raise AssertionError("ejabberd listens but no beam.smp below "
                                     "pid %d" % self.proc.pid)
        except BaseException:
            self.kill_now()
            raise

    def stop(self, timeout=15.0):
        if self.proc is None:
            return None
        t0 = time.monotonic()
        if self.beam is not None:
            try:
                os.kill(self.beam, signal.SIGTERM)
            except OSError:
                pass
        killed = False
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
        self._kill_tree()
        rc = self.proc.returncode
        _popen_pids.discard(self.proc.pid)
        self.proc = None
        self.beam = None
        _untrack(self)
        if killed:
            raise AssertionError("ejabberd did not stop within %.0fs"
                                 % (time.monotonic() - t0))
        return rc

    def _kill_tree(self):
        """SIGKILL every process left below ejabberdctl (beam, its port
        programs), then make sure the ports are free again."""
        if self.proc is None:
            return
        table = _proc_table()
        pids = descendants(self.proc.pid, table)
        if self.beam is not None and self.beam in table:
            pids.append(self.beam)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(5)
        _reap_orphans()

    def restart(self):
        self.stop()
        self.start()

    def kill_now(self):
        if self.proc is not None:
            self._kill_tree()
            _popen_pids.discard(self.proc.pid)
        self.proc = None
        self.beam = None
        _untrack(self)

    def register(self, user, password):
        p = run_cmd(self._ctl_argv("register", user, self.domain, password),
                    cwd="/")
        if p.returncode != 0:
            raise AssertionError("ejabberdctl register %s failed (%d): %s%s"
                                 % (user, p.returncode, p.stdout, p.stderr))


SERVERS = (Prosody, Ejabberd)


class NoServer:
    """Stands in for a server when the gateway should find nobody listening
    (CLI and reload tests): a free port on 127.0.0.1 that stays closed."""
    name = "none"

    def __init__(self, tmpdir=None, component_domain=COMPONENT, secret=SECRET):
        self.host = "127.0.0.1"
        self.domain = "localhost"
        self.component_domain = component_domain
        self.secret = secret
        self.component_port = free_port()
        self.c2s_port = None
        self.log_path = None

    def alive(self):
        return False


# ---------------------------------------------------------------------------
# The gateway under test

LOG_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z ")


def log_time(line):
    """Seconds since the epoch from a gateway log line's timestamp, or None."""
    m = LOG_TS_RE.match(line)
    if not m:
        return None
    s = m.group(1)
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    dt = datetime.datetime.strptime(s, fmt).replace(
        tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def gateway_conf(server, dirpath, secret=None, secret_file=None,
                 reconnect_min=1.0, reconnect_max=8.0, level="info",
                 extra_conf="", barev_port=None):
    """The text of a gateway configuration file pointing at server."""
    if barev_port is None:
        barev_port = free_port("::1")
    if secret_file is not None:
        secret_line = 'secret_file = "%s";' % secret_file
    else:
        secret_line = 'secret = "%s";' % (server.secret if secret is None
                                          else secret)
    return """\
# barev-gateway test configuration
component = {{
  jid = "{jid}";
  {secret_line}
  host = "{host}";
  port = {port};
  reconnect_min = {rmin};
  reconnect_max = {rmax};
}};
barev = {{
  listen = [ "[::1]:{barev_port}" ];
}};
storage = {{ path = "{dir}/state.db"; }};
log = {{ level = "{level}"; syslog = false; }};
access = {{ domains = [ "{domain}" ]; }};
{extra}
""".format(jid=server.component_domain, secret_line=secret_line,
           host=server.host, port=server.component_port,
           rmin=_num(reconnect_min), rmax=_num(reconnect_max), dir=dirpath,
           level=level, domain=server.domain, extra=extra_conf,
           barev_port=barev_port)


def _num(x):
    return repr(float(x))


class Gateway:
    """One barev-gateway process. The configuration is written at
    construction (conf_text replaces it entirely); start() runs
    `$GATEWAY_BIN -c FILE <args>` with stdout+stderr to log_path."""

    def __init__(self, tmpdir, server, extra_conf="", args=("-v",),
                 conf_text=None, name="gateway", **conf_kw):
        self.bin = require_gateway()
        self.server = server
        self.dir = os.path.join(tmpdir, name)
        n = 1
        while os.path.exists(self.dir):
            n += 1
            self.dir = os.path.join(tmpdir, "%s-%d" % (name, n))
        os.makedirs(self.dir)
        self.conf_path = os.path.join(self.dir, "barev-gateway.conf")
        self.log_path = os.path.join(self.dir, "gateway.log")
        self.args = list(args)
        self.proc = None
        self.stopped = False  # by stop(), as opposed to dying
        self.started_at = None
        self.conf_kw = dict(conf_kw, extra_conf=extra_conf)
        self.conf_kw.setdefault("barev_port", free_port("::1"))
        self.write_conf(self.conf() if conf_text is None else conf_text)

    def conf(self, **changes):
        """This gateway's configuration text, with changes (gateway_conf's
        keywords); ports stay the same."""
        return gateway_conf(self.server, self.dir,
                            **dict(self.conf_kw, **changes))

    def write_conf(self, text):
        tmp = self.conf_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.conf_path)

    def argv(self):
        wrapper = shlex.split(os.environ.get("TEST_WRAPPER", ""))
        return wrapper + [self.bin, "-c", self.conf_path] + self.args

    def start(self):
        show_log("gateway log", self.log_path)
        with open(self.log_path, "ab") as f:
            f.write(b"")
        self.proc = _popen(self.argv(), self.log_path, cwd=self.dir)
        self.started_at = time.monotonic()
        _track(self)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def mark(self):
        """The current end of the log, to scan only what comes after."""
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, start):
        """The log's text from byte offset start (see mark())."""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")

    def matches(self, regex, start=0):
        """Every match of regex (multiline) in the log from byte offset
        start."""
        return list(re.finditer(regex, self.log_since(start), re.M))

    def wait_log(self, regex, timeout=5.0, start=0, count=1):
        """Wait until regex has matched count times in the log after byte
        offset start; returns the count-th match. Fails at once if the
        gateway exits."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matches(regex, start)
            if len(found) >= count:
                return found[count - 1]
            if self.proc is not None and self.proc.poll() is not None:
                found = self.matches(regex, start)
                if len(found) >= count:
                    return found[count - 1]
                raise AssertionError(
                    "gateway exited (status %s) while waiting for /%s/"
                    % (self.proc.returncode, regex))
            if time.monotonic() > deadline:
                raise AssertionError("no /%s/ (x%d) in the gateway log after "
                                     "%.1fs (found %d)"
                                     % (regex, count, timeout, len(found)))
            time.sleep(0.05)

    def stop(self, timeout=2.0):
        """SIGTERM; returns (exit status, seconds). Fails (after kill -9) if
        it has not exited within timeout."""
        if self.proc is None:
            raise AssertionError("gateway was never started")
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            _popen_pids.discard(self.proc.pid)
            _untrack(self)
            raise AssertionError("gateway had already exited with status %s"
                                 % rc)
        rc, elapsed, killed = _stop_popen(self.proc, signal.SIGTERM, timeout)
        self.stopped = True
        _popen_pids.discard(self.proc.pid)
        _untrack(self)
        if killed:
            raise AssertionError("gateway still running %.1fs after SIGTERM; "
                                 "killed with SIGKILL" % timeout)
        return rc, elapsed

    def stop_clean(self, timeout=2.0):
        """stop(), and fail unless it exited with status 0 and the log has
        no sanitizer or valgrind report."""
        rc, elapsed = self.stop(timeout)
        if rc != 0:
            raise AssertionError("gateway exited with status %s after SIGTERM"
                                 % rc)
        report = self.sanitizer_report()
        if report:
            raise AssertionError("gateway log has a sanitizer report:\n"
                                 + "\n".join(report))
        return rc, elapsed

    def kill_now(self):
        if self.proc is not None and self.proc.poll() is None:
            _stop_popen(self.proc, signal.SIGKILL, 5)
            self.stopped = True
        if self.proc is not None:
            _popen_pids.discard(self.proc.pid)
        _untrack(self)

    def sanitizer_report(self):
        """Lines of sanitizer/valgrind reports in the log (empty if none)."""
        return [l for l in self.log_text().splitlines() if SANITIZER_RE.search(l)]


def run_gateway(args, timeout=10, **kw):
    """Run the gateway binary to completion (CLI tests): CompletedProcess."""
    wrapper = shlex.split(os.environ.get("TEST_WRAPPER", ""))
    return run_cmd(wrapper + [require_gateway()] + list(args), timeout=timeout,
                   **kw)


# ---------------------------------------------------------------------------
# XMPP users (slixmpp). One asyncio loop in a daemon thread serves every
# Client; the synchronous methods below run coroutines on it with timeouts.

_loop = None
_slix_log = None


def _xmpp_loop():
    global _loop, _slix_log
    if _loop is None:
        import logging
        _slix_log = os.path.join(tmp_root(), "slixmpp.log")
        handler = logging.FileHandler(_slix_log)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if os.environ.get("TEST_XMPP_DEBUG")
                      else logging.INFO)
        try:
            import slixmpp  # noqa: F401
        except ImportError:
            raise Unavailable("slixmpp is not importable by %s (use Debian's "
                              "/usr/bin/python3 with python3-slixmpp)"
                              % sys.executable)
        loop = asyncio.new_event_loop()
        t = threading.Thread(target=loop.run_forever, name="xmpp", daemon=True)
        t.start()
        _loop = loop
    return _loop


def _run(coro, timeout):
    loop = _xmpp_loop()
    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return fut.result(timeout)
    except BaseException:
        fut.cancel()
        raise


class Client:
    """A user logged in to a test server, driven synchronously."""

    def __init__(self, jid, password, server, timeout=10.0, resource="test",
                 auto_authorize=True, auto_subscribe=True, all_messages=False):
        """auto_authorize / auto_subscribe: slixmpp's answers to subscription
        requests (None / False: the test answers them itself).
        all_messages: keep every <message/> in received (body-less chat
        states, receipts, errors), not only those with a body."""
        self.jid = jid
        self.server = server
        self._auto = (auto_authorize, auto_subscribe)
        self._all_messages = all_messages
        self.received = []
        self.cond = threading.Condition()
        self.xmpp = None
        self.closed = False
        if _slix_log:
            show_log("slixmpp log", _slix_log)
        _run(self._connect(jid + "/" + resource, password, timeout),
             timeout + 2)
        show_log("slixmpp log", _slix_log)
        _track(self)

    async def _connect(self, full_jid, password, timeout):
        import slixmpp
        loop = asyncio.get_running_loop()
        c = slixmpp.ClientXMPP(full_jid, password)
        c.loop = loop
        c["feature_mechanisms"].unencrypted_plain = True
        # Answer what the gateway may ask a user: disco and ping.
        c.register_plugin("xep_0030")
        c.register_plugin("xep_0199")
        c.default_port = self.server.c2s_port
        done = loop.create_future()

        def finish(exc=None):
            if not done.done():
                if exc is None:
                    done.set_result(True)
                else:
                    done.set_exception(exc)

        c.add_event_handler("session_start", lambda _e: finish())
        c.add_event_handler("failed_all_auth", lambda _e: finish(
            AssertionError("%s: authentication failed" % full_jid)))
        c.add_event_handler("connection_failed", lambda e: finish(
            AssertionError("%s: connection failed: %s" % (full_jid, e))))
        c.add_event_handler("disconnected", self._on_disconnected)
        c.add_event_handler("disconnected", lambda e: finish(
            AssertionError("%s: disconnected before session start: %s"
                           % (full_jid, e))))
        c.auto_authorize, c.auto_subscribe = self._auto
        if self._all_messages:
            from slixmpp.xmlstream.handler import Callback
            from slixmpp.xmlstream.matcher import MatchXPath
            c.register_handler(Callback(
                "every message", MatchXPath("{%s}message" % c.default_ns),
                self._on_stanza))
            c.add_event_handler("presence", self._on_stanza)
        else:
            for ev in ("message", "presence"):
                c.add_event_handler(ev, self._on_stanza)
        self.xmpp = c
        c.connect((self.server.host, self.server.c2s_port),
                  force_starttls=False, disable_starttls=True)
        try:
            await asyncio.wait_for(done, timeout)
        except BaseException:
            c.cancel_connection_attempt()
            c.abort()
            raise

    def _on_disconnected(self, _event):
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _on_stanza(self, stanza):
        with self.cond:
            self.received.append(stanza)
            self.cond.notify_all()

    def connected(self):
        return self.xmpp is not None and not self.closed

    def iq(self, to, payload=None, type="get", timeout=5.0):
        """Send an iq (payload: XML text, an Element, or None) and return the
        reply stanza, result or error. Raises AssertionError on timeout."""
        if isinstance(payload, str):
            payload = ET.fromstring(payload)

        async def go():
            from slixmpp.exceptions import IqError, IqTimeout
            iq = self.xmpp.Iq()
            iq["type"] = type
            iq["to"] = to
            if payload is not None:
                iq.append(payload)
            try:
                return await iq.send(timeout=timeout)
            except IqError as e:
                return e.iq
            except IqTimeout:
                raise AssertionError("no reply from %s within %.1fs to: %s"
                                     % (to, timeout, iq))
        return _run(go(), timeout + 3)

    def send_raw(self, xml):
        _run(self._call(self.xmpp.send_raw, xml), 5)

    def send_presence(self, **kw):
        _run(self._call(self.xmpp.send_presence, **kw), 5)

    def send_message(self, to, body, mtype="chat"):
        _run(self._call(self.xmpp.send_message, mto=to, mbody=body,
                        mtype=mtype), 5)

    async def _call(self, fn, *a, **kw):
        return fn(*a, **kw)

    def wait_for(self, pred, timeout=5.0, what="stanza"):
        """Wait for a received message/presence for which pred is true."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for st in self.received:
                    if pred(st):
                        return st
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s within %.1fs" % (what, timeout))
                self.cond.wait(left)

    def disconnect(self):
        if self.xmpp is None:
            return
        c, self.xmpp = self.xmpp, None

        async def go():
            try:
                await asyncio.wait_for(c.disconnect(wait=1.0), 3)
            except Exception:
                pass
            c.abort()
        try:
            _run(go(), 5)
        except Exception:
            pass
        _untrack(self)

    def kill_now(self):
        self.disconnect()

    # --- helpers that read like the protocol ---------------------------

    def disco_info(self, to, node=None):
        q = ET.Element("{%s}query" % NS_DISCO_INFO)
        if node:
            q.set("node", node)
        return self.iq(to, q)

    def disco_items(self, to, node=None):
        q = ET.Element("{%s}query" % NS_DISCO_ITEMS)
        if node:
            q.set("node", node)
        return self.iq(to, q)

    def version(self, to):
        return self.iq(to, ET.Element("{%s}query" % NS_VERSION))

    def ping(self, to, timeout=5.0):
        return self.iq(to, ET.Element("{%s}ping" % NS_PING), timeout=timeout)

    def unknown_iq(self, to, ns="urn:example:barev-test:unknown"):
        return self.iq(to, ET.Element("{%s}query" % ns))


def identities(reply):
    """[(category, type, name)] of a disco#info reply."""
    q = reply.xml.find("{%s}query" % NS_DISCO_INFO)
    if q is None:
        return []
    return [(i.get("category"), i.get("type"), i.get("name"))
            for i in q.findall("{%s}identity" % NS_DISCO_INFO)]


def features(reply):
    q = reply.xml.find("{%s}query" % NS_DISCO_INFO)
    if q is None:
        return []
    return [f.get("var") for f in q.findall("{%s}feature" % NS_DISCO_INFO)]


def child_text(reply, ns, path):
    """Text of query/<path> in namespace ns (e.g. version's name)."""
    q = reply.xml.find("{%s}query" % ns)
    if q is None:
        return None
    el = q.find("{%s}%s" % (ns, path))
    return None if el is None else (el.text or "")


def error_of(reply):
    """(type, condition, text) of an error reply; None if not an error."""
    if reply["type"] != "error":
        return None
    err = reply.xml.find("{jabber:client}error")
    if err is None:
        return ("", "", "")
    cond, text = "", ""
    for el in err:
        tag = el.tag.split("}")[-1]
        if el.tag.startswith("{%s}" % NS_STANZAS):
            if tag == "text":
                text = el.text or ""
            else:
                cond = tag
    return (err.get("type"), cond, text)


def show(stanza):
    return ET.tostring(stanza.xml, encoding="unicode")


# ---------------------------------------------------------------------------
# A World: one server, the standard gateway connected to it, one user. Shared
# by a group of consecutive tests; every accessor repairs what a previous test
# may have stopped.

USER, PASSWORD = "alice", "alice-pw"


class World:
    def __init__(self, server_cls):
        self.server_cls = server_cls
        self.name = server_cls.name
        self.dir = None
        self.srv = None
        self.gw = None
        self.user = None
        self.users = {}

    def logs(self):
        out = []
        if self.srv is not None:
            out.append(("%s log" % self.name, self.srv.log_path))
        if self.gw is not None:
            out.append(("gateway log", self.gw.log_path))
        return out

    def server(self):
        if self.srv is None:
            self.dir = subdir(self.name)
            self.srv = self.server_cls(self.dir)
        for label, path in self.logs():
            show_log(label, path)
        if not self.srv.alive():
            self.srv.start()
            for u, p in self.users.items():
                self.srv.register(u, p)
        return self.srv

    def register(self, user, password):
        srv = self.server()
        if self.users.get(user) != password:
            srv.register(user, password)
            self.users[user] = password
        return "%s@%s" % (user, srv.domain)

    def new_gateway(self, **kw):
        """A gateway (not started) for this world's server."""
        return Gateway(self.dir, self.server(), **kw)

    def gateway(self):
        """The standard gateway, started and linked up."""
        srv = self.server()
        if self.gw is not None and not self.gw.alive() and not self.gw.stopped:
            gw, self.gw = self.gw, None
            _popen_pids.discard(gw.proc.pid)
            raise AssertionError("the gateway died since the previous test, "
                                 "status %s" % gw.proc.returncode)
        if self.gw is None or not self.gw.alive():
            gw = self.new_gateway()
            gw.start()
            try:
                gw.wait_log(LINK_UP_RE % (re.escape(srv.component_domain),
                                          srv.component_port), 10)
            except BaseException:
                gw.kill_now()
                raise
            self.gw = gw
        return self.gw

    def fresh_gateway(self):
        """The standard gateway, restarted: stop it if it runs, start a new
        one and wait for its link."""
        if self.gw is not None and self.gw.alive():
            gw, self.gw = self.gw, None
            gw.stop_clean(5)
        self.gw = None
        return self.gateway()

    def client(self):
        """alice, logged in."""
        if self.user is None or not self.user.connected():
            if self.user is not None:
                self.user.disconnect()
            jid = self.register(USER, PASSWORD)
            self.user = Client(jid, PASSWORD, self.server())
        return self.user

    def close(self):
        errors = []
        for what in ("user", "gw", "srv"):
            obj = getattr(self, what)
            if obj is None:
                continue
            try:
                if what == "user":
                    obj.disconnect()
                elif what == "gw":
                    if obj.alive():
                        obj.stop_clean(5)
                else:
                    obj.stop()
            except BaseException as e:
                errors.append("%s: %s" % (what, e))
                try:
                    obj.kill_now()
                except Exception:
                    pass
            setattr(self, what, None)
        if errors:
            raise AssertionError("; ".join(errors))


class Test:
    def __init__(self, name, fn, world=None, timeout=60):
        self.name = name
        self.fn = fn
        self.world = world
        self.timeout = timeout


def test(name, fn, timeout=60):
    return Test(name, fn, timeout=timeout)


def both_servers(scenarios):
    """scenarios: [(title, fn(world)) or (title, fn(world), timeout)].
    Returns the tests for Prosody, then ejabberd, each server shared by its
    group and started once (lazily)."""
    tests = []
    for cls in SERVERS:
        world = World(cls)
        for sc in scenarios:
            title, fn = sc[0], sc[1]
            timeout = sc[2] if len(sc) > 2 else 60
            tests.append(Test("%s: %s" % (cls.name, title), fn, world, timeout))
    return tests


# ---------------------------------------------------------------------------
# TAP runner

_alarm_seconds = [0]


def _alarm(_signum, _frame):
    raise TestTimeout("test timed out after %ds" % _alarm_seconds[0])


def _diag(text):
    for line in str(text).splitlines() or [""]:
        print("# " + line)


def _watchdog(seconds):
    def fire():
        print("Bail out! the whole script exceeded %ds" % seconds, flush=True)
        _cleanup_all()
        if _tmp_root is not None:
            print("# kept temporary directory %s" % _tmp_root, flush=True)
        os._exit(1)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def _leftovers():
    table = _proc_table()
    return ["%d %s" % (p, table[p][2]) for p in descendants(os.getpid(), table)
            if table[p][1] != "Z"]


def run(tests):
    """Run tests (Test objects or (name, fn[, timeout]) tuples) and exit:
    0 only if every test passed."""
    _set_subreaper()
    atexit.register(_cleanup_all)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)
    signal.signal(signal.SIGALRM, _alarm)
    _watchdog(int(os.environ.get("TEST_TOTAL_TIMEOUT", "300")))
    tests = [t if isinstance(t, Test) else Test(*t) for t in tests]
    only = os.environ.get("TEST_ONLY")  # a regex, for development
    last_use = {}
    for i, t in enumerate(tests):
        if only and not re.search(only, t.name):
            continue
        if t.world is not None:
            last_use[id(t.world)] = i
    print("1..%d" % len(tests), flush=True)
    failed = 0
    t_start = time.monotonic()
    for k, t in enumerate(tests, 1):
        del _test_logs[:]
        if t.world is not None:
            for label, path in t.world.logs():
                show_log(label, path)
        if only and not re.search(only, t.name):
            print("ok %d - %s # SKIP not selected by TEST_ONLY" % (k, t.name))
            continue
        t0 = time.monotonic()
        ok, err = True, None
        _alarm_seconds[0] = t.timeout
        signal.alarm(t.timeout)
        try:
            if t.world is not None:
                t.fn(t.world)
            else:
                t.fn()
        except Unavailable as e:
            ok, err = False, "cannot run: %s" % e
        except (Exception, TestTimeout):
            ok, err = False, traceback.format_exc()
        finally:
            signal.alarm(0)
        # Tear the group's world down after its last test; a failure there
        # is this test's failure.
        if t.world is not None and last_use.get(id(t.world)) == k - 1:
            _alarm_seconds[0] = 60
            signal.alarm(60)
            try:
                t.world.close()
            except (Exception, TestTimeout):
                if ok:
                    ok, err = False, "teardown: " + traceback.format_exc()
            finally:
                signal.alarm(0)
        dt = time.monotonic() - t0
        if ok:
            print("ok %d - %s" % (k, t.name))
        else:
            failed += 1
            print("not ok %d - %s" % (k, t.name))
            _diag(err.rstrip())
            for label, path in ([] if err.startswith("cannot run") else
                                _test_logs):
                if path and os.path.exists(path):
                    _diag("--- %s (%s), last lines:" % (label, path))
                    _diag("\n".join(tail(path, 25)))
        if os.environ.get("TEST_TIMES"):
            _diag("%s: %.1fs" % (t.name, dt))
        sys.stdout.flush()
    _cleanup_all()
    left = _leftovers()
    if left:
        _diag("processes left behind (killed): " + ", ".join(left))
    _diag("total %.1fs" % (time.monotonic() - t_start))
    if _tmp_root is not None:
        if failed or os.environ.get("TEST_KEEP"):
            _diag("kept temporary directory %s" % _tmp_root)
        else:
            shutil.rmtree(_tmp_root, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0 if failed == 0 else 1)
