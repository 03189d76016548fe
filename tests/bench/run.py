"""barev-gateway benchmarks: `make bench` runs this (see tests/bench/README).

Every scenario runs in a network namespace of its own (created here,
deleted on every exit path): the gateway, tests/bench/bench_load (the fake
XMPP server, the fake Barev peers and light XMPP clients, in C) and, for
the end-to-end figures, a private Prosody. Contacts live at addresses of
an "AnyIP" prefix routed to lo, so any number of peers needs no address
set-up. bench_load prints one sample per line ("R name value unit");
this script takes the median, min and max of each figure, prints a table
and writes the same figures, one "name value unit" per line, to --out.

Standard library only; needs root (namespaces) and `ip`.
Environment: GATEWAY_BIN, BENCH_LOAD (the binaries; `make bench` sets
them), BENCH_KEEP=1 (keep the temporary directory with every log).
"""

import argparse
import datetime
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(os.path.dirname(HERE))

SECRET = "bench-secret"
DOMAIN = "barev.localhost"
GW_ADDR = "200:aaaa::1"
PEER_NET = "201:bbbb::/64"    # AnyIP: every address is a reachable peer
COMP_PORT = 5347
GW_PORT = 5299
PEER_PORT = 5300
C2S_PORT = 5222

SCENARIOS = ("relay", "latency", "e2e", "e2e64", "idle", "keepalive",
             "startup")

# Figures with a target from the issue: (name, test, text).
TARGETS = {
    "relay.to_barev.rate": (lambda v: v >= 50000, ">= 50000"),
    "relay.to_xmpp.rate": (lambda v: v >= 50000, ">= 50000"),
    "e2e.to_barev.gw_over_server_cpu": (lambda v: v <= 0.2, "<= 0.2"),
    "e2e.to_xmpp.gw_over_server_cpu": (lambda v: v <= 0.2, "<= 0.2"),
    # "within 1.5 times the client-to-client rate"
    "e2e64.to_xmpp.rate_over_direct": (lambda v: v >= 1 / 1.5, ">= 0.667"),
    "latency.to_barev.p99": (lambda v: v < 1000, "< 1000"),
    "latency.to_xmpp.p99": (lambda v: v < 1000, "< 1000"),
    "idle.bytes_per_pipe.pipes_1000": (lambda v: v <= 16384, "<= 16384"),
    "idle.bytes_per_pipe.pipes_10000": (lambda v: v <= 16384, "<= 16384"),
    "keepalive.cpu_percent_at_30s": (lambda v: v < 1.0, "< 1"),
}


class BenchError(Exception):
    pass


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


# --- processes and namespaces ---------------------------------------------

_children = []      # Popen objects still to stop
_namespaces = []    # namespaces still to delete


def run(argv, check=True):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    if check and p.returncode != 0:
        raise BenchError("%s failed: %s" % (" ".join(argv),
                                            p.stderr.strip()))
    return p


def stop(proc, sig=signal.SIGTERM, timeout=10.0):
    """Stops one child by PID; SIGKILL after timeout. Exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def spawn(ns, argv, log_path, cpu=None, rt=False, **kw):
    """argv inside namespace ns (`ip netns exec` execs it: same PID)."""
    def pre():
        os.setsid()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        if rt:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    f = open(log_path, "ab")
    try:
        p = subprocess.Popen(["ip", "netns", "exec", ns] + argv,
                             stdout=kw.pop("stdout", f), stderr=f,
                             preexec_fn=pre, **kw)
    finally:
        f.close()
    _children.append(p)
    return p


class Netns:
    """A network namespace with lo up, the gateway's address on lo and an
    AnyIP route making every address of PEER_NET local."""
    seq = 0

    def __init__(self):
        Netns.seq += 1
        self.name = "bgbench-%d-%d" % (os.getpid(), Netns.seq)
        run(["ip", "netns", "add", self.name])
        _namespaces.append(self.name)
        for cmd in (["link", "set", "lo", "up"],
                    ["-6", "addr", "add", GW_ADDR + "/128", "dev", "lo"],
                    ["-6", "route", "add", "local", PEER_NET, "dev", "lo"]):
            run(["ip", "-n", self.name] + cmd)

    def delete(self):
        if self.name not in _namespaces:
            return
        p = run(["ip", "netns", "pids", self.name], check=False)
        for pid in p.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        for _ in range(50):
            if run(["ip", "netns", "del", self.name],
                   check=False).returncode == 0:
                break
            time.sleep(0.1)
        _namespaces.remove(self.name)


def cleanup():
    for p in list(_children):
        stop(p, signal.SIGKILL, 5)
    for name in list(_namespaces):
        run(["ip", "netns", "del", name], check=False)
        _namespaces.remove(name)


# --- the gateway and Prosody ------------------------------------------------

def gateway_conf(statedir, **kw):
    v = dict(ping_interval=30, ping_timeout=10, dials_per_second=1000, dials_concurrent=256,
             pipes=60000, pipes_per_address=16, inbound_per_minute=60,
             comp_host="::1", comp_port=COMP_PORT)
    v.update(kw)
    return """\
# barev-gateway configuration written by tests/bench/run.py
component = {{
  jid = "{domain}";
  secret = "{secret}";
  host = "{comp_host}";
  port = {comp_port};
  reconnect_min = 0.1;
  reconnect_max = 1.0;
}};
barev = {{
  address = "{gw}";
  listen = [ "[{gw}]:{gwport}" ];
  default_port = {peerport};
  ping_interval = {ping_interval!r};
  ping_timeout = {ping_timeout!r};
}};
limits = {{
  pipes = {pipes};
  pipes_per_address = {pipes_per_address};
  inbound_per_minute = {inbound_per_minute};
  # Every bench peer lives in PEER_NET, one /64.
  pipes_per_subnet = {pipes};
  inbound_per_minute_per_subnet = 1000000;
  dials_concurrent = {dials_concurrent};
  dials_per_second = {dials_per_second};
}};
storage = {{
  path = "{statedir}/state.db";
}};
log = {{ level = "info"; }};
""".format(domain=DOMAIN, secret=SECRET, gw=GW_ADDR, gwport=GW_PORT,
           peerport=PEER_PORT, statedir=statedir,
           **{k: (float(x) if k.startswith("ping_") else x)
              for k, x in v.items()})


PROSODY_CONF = """\
-- private Prosody for tests/bench (end-to-end figures)
run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ info = "{d}/prosody.log" }}
interfaces = {{ "::1" }}
local_interfaces = {{ "::1" }}
c2s_ports = {{ {c2s} }}
c2s_interfaces = {{ "::1" }}
component_ports = {{ {comp} }}
component_interfaces = {{ "::1" }}
s2s_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "posix"; "register"; }}
modules_disabled = {{ "s2s"; "tls"; "offline"; "admin_telnet"; "http"; }}
allow_registration = true
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"

VirtualHost "localhost"

Component "{domain}"
  component_secret = "{secret}"
"""


def port_listening(ns, port):
    p = run(["ip", "netns", "exec", ns, "ss", "-Hltn", "sport = :%d" % port],
            check=False)
    return p.returncode == 0 and p.stdout.strip() != ""


def wait_for(pred, timeout, what, proc=None):
    end = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise BenchError("%s exited (status %s) while waiting for %s"
                             % (proc.args[3], proc.returncode, what))
        if time.monotonic() > end:
            raise BenchError("timed out waiting for %s" % what)
        time.sleep(0.05)


# --- one scenario run ---------------------------------------------------------

class Run:
    """One namespace, one gateway (restartable), one bench_load."""

    def __init__(self, bench, label):
        self.b = bench
        self.label = label
        self.dir = os.path.join(bench.tmp, label)
        os.makedirs(self.dir)
        self.ns = Netns()
        self.gw = None
        self.prosody = None

    def start_prosody(self):
        d = os.path.join(self.dir, "prosody")
        os.makedirs(os.path.join(d, "data"))
        conf = os.path.join(d, "prosody.cfg.lua")
        with open(conf, "w") as f:
            f.write(PROSODY_CONF.format(d=d, c2s=C2S_PORT, comp=COMP_PORT,
                                        domain=DOMAIN, secret=SECRET))
        self.prosody = spawn(self.ns.name, [self.b.prosody, "-F", "--config",
                                            conf],
                             os.path.join(d, "console.log"), cwd=d)
        wait_for(lambda: port_listening(self.ns.name, C2S_PORT) and
                 port_listening(self.ns.name, COMP_PORT), 20, "prosody",
                 self.prosody)
        return self.prosody.pid

    def start_gateway(self, conf_text, db_template=None, cpu=None,
                      wait_link=False, rt=False):
        statedir = os.path.join(self.dir, "state")
        os.makedirs(statedir, exist_ok=True)
        if db_template is not None:
            shutil.copyfile(db_template, os.path.join(statedir, "state.db"))
        conf = os.path.join(self.dir, "barev-gateway.conf")
        with open(conf, "w") as f:
            f.write(conf_text.replace("@STATEDIR@", statedir))
        self.gw_log = os.path.join(self.dir, "gateway.log")
        self.gw = spawn(self.ns.name, self.b.wrapper +
                        [self.b.gateway, "-c", conf], self.gw_log, cpu=cpu,
                        rt=rt)
        if wait_link:
            wait_for(lambda: "component: link up" in self.read(self.gw_log),
                     20, "the gateway's component link", self.gw)
        return self.gw.pid

    @staticmethod
    def read(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def load(self, mode, args, conf_text, db_template=None, timeout=600,
             gw_cpu=None, load_cpu=None, wait_link=False, rt=False):
        """Runs bench_load; starts the gateway when it asks. Samples."""
        load_log = os.path.join(self.dir, "bench_load.log")
        p = spawn(self.ns.name, [self.b.load, mode] + args, load_log,
                  cpu=load_cpu, rt=rt, stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE)
        samples = []
        end = time.monotonic() + timeout
        buf = b""
        done = False
        try:
            while not done:
                left = end - time.monotonic()
                if left <= 0:
                    raise BenchError("%s: no result within %d s" %
                                     (self.label, timeout))
                r, _, _ = select.select([p.stdout], [], [], min(left, 1.0))
                if not r:
                    if self.gw is not None and self.gw.poll() is not None:
                        raise BenchError("the gateway exited (status %s)" %
                                         self.gw.returncode)
                    continue
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.decode()
                    if line == "start-gateway":
                        pid = self.start_gateway(conf_text, db_template,
                                                 gw_cpu, wait_link, rt)
                        p.stdin.write(b"pid %d\n" % pid)
                        p.stdin.flush()
                    elif line.startswith("R "):
                        _, name, value, unit = line.split(" ", 3)
                        samples.append((name, float(value), unit))
                    elif line == "done":
                        done = True
            rc = p.wait(30)
            if rc != 0 or not done:
                raise BenchError("bench_load %s failed (status %s):\n%s" %
                                 (mode, rc, tail(load_log)))
        except BaseException:
            stop(p, signal.SIGKILL)
            sys.stderr.write(tail(load_log, 15))
            if self.gw is not None:
                sys.stderr.write("--- gateway log (end) ---\n" +
                                 tail(self.gw_log, 15))
            raise
        finally:
            _children.remove(p) if p in _children else None
        return samples

    def stop_gateway(self):
        rc = stop(self.gw, signal.SIGTERM, 10)
        self.gw = None
        return rc

    def close(self):
        if self.gw is not None:
            self.stop_gateway()
        if self.prosody is not None:
            stop(self.prosody, signal.SIGTERM, 10)
            self.prosody = None
        self.ns.delete()


def tail(path, n=25):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:]) + "\n"


# --- the suite ------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.gateway = os.environ.get("GATEWAY_BIN") or os.path.join(
            os.getcwd(), "barev-gateway")
        self.load = os.environ.get("BENCH_LOAD") or os.path.join(
            os.getcwd(), "tests", "bench", "bench_load")
        self.prosody = shutil.which("prosody") or "/usr/bin/prosody"
        # e.g. "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p"
        self.wrapper = shlex.split(args.gateway_wrapper or "")
        self.tmp = tempfile.mkdtemp(prefix="bgbench-", dir="/var/tmp")
        self.samples = {}
        self.units = {}
        self.times = {}
        self.quick = args.quick
        self.batches = 2 if args.quick else args.runs

    def add(self, samples):
        for name, value, unit in samples:
            self.samples.setdefault(name, []).append(value)
            self.units[name] = unit

    def derive(self, name, unit, values):
        self.samples[name] = values
        self.units[name] = unit

    # Scenario 1 and 3: the gateway alone, against bench_load's fake server.
    def relay(self, latency_only=False):
        r = Run(self, "relay" if not latency_only else "latency")
        try:
            n = self.args.relay_msgs
            dirs = "latency" if latency_only else self.args.relay_dirs
            conf = gateway_conf("@STATEDIR@")
            self.add(r.load("relay", [
                "--users", "10", "--contacts", "10",
                "--msgs", str(n), "--warmup", "10000",
                "--batch-seconds", "1" if self.quick else "4",
                "--batches", str(self.batches), "--window", "2000",
                "--rate", "1000", "--seconds", "2" if self.quick else "4",
                "--comp-port", str(COMP_PORT), "--peer-port", str(PEER_PORT),
                "--secret", SECRET, "--dirs", dirs, "--timeout", "300"],
                conf, gw_cpu=1, load_cpu=0,
                rt=latency_only and not self.args.no_rt))
        finally:
            r.close()

    # Scenario 2: through Prosody, and client to client alone.
    def e2e(self):
        r = Run(self, "e2e")
        try:
            n = self.args.e2e_msgs
            srv = r.start_prosody()
            conf = gateway_conf("@STATEDIR@")
            self.add(r.load("e2e", [
                "--users", "10", "--contacts", "10", "--direct-pairs", "10",
                "--msgs", str(n), "--warmup", "5000",
                "--batch-seconds", "1" if self.quick else "3",
                "--batches", str(self.batches), "--window", "2000",
                "--c2s-port", str(C2S_PORT), "--peer-port", str(PEER_PORT),
                "--server-pid", str(srv),
                "--dirs", "direct,to-barev,to-xmpp", "--timeout", "300"],
                conf, wait_link=True))
        finally:
            r.close()
        for d in ("to_barev", "to_xmpp"):
            rate = self.samples.get("e2e.%s.rate" % d)
            direct = self.samples.get("e2e.direct.rate")
            gw = self.samples.get("e2e.%s.gw_cpu_per_100k" % d)
            srv = self.samples.get("e2e.%s.server_cpu_per_100k" % d)
            if rate and direct:
                self.derive("e2e.%s.rate_over_direct" % d, "ratio",
                            [x / statistics.median(direct) for x in rate])
            if gw and srv:
                self.derive("e2e.%s.gw_over_server_cpu" % d, "ratio",
                            [g / s for g, s in zip(gw, srv) if s > 0])

    # Scenario 2b: the same shape with only 64 messages in flight, one per
    # write, spread over the 100 pipes (and over the 10 direct senders):
    # what shows Prosody's Nagle behind the gateway's writes.
    def e2e64(self):
        r = Run(self, "e2e64")
        try:
            srv = r.start_prosody()
            self.add(r.load("e2e", [
                "--prefix", "e2e64", "--window", "64", "--chunk", "1",
                "--users", "10", "--contacts", "10", "--direct-pairs", "10",
                "--msgs", str(self.args.e2e_msgs), "--warmup", "2000",
                "--batch-seconds", "1" if self.quick else "3",
                "--batches", str(self.batches),
                "--c2s-port", str(C2S_PORT), "--peer-port", str(PEER_PORT),
                "--server-pid", str(srv),
                "--dirs", "direct,to-xmpp", "--timeout", "300"],
                gateway_conf("@STATEDIR@"), wait_link=True))
        finally:
            r.close()
        rate = self.samples.get("e2e64.to_xmpp.rate")
        direct = self.samples.get("e2e64.direct.rate")
        if rate and direct:
            self.derive("e2e64.to_xmpp.rate_over_direct", "ratio",
                        [x / statistics.median(direct) for x in rate])

    # Registered users and contacts, made once through the component.
    def prepare(self, label, users, contacts, dead_every=0):
        r = Run(self, "prep-" + label)
        try:
            t0 = time.monotonic()
            conf = gateway_conf("@STATEDIR@")
            r.load("prep", ["--users", str(users), "--contacts",
                            str(contacts), "--dead-every", str(dead_every),
                            "--comp-port", str(COMP_PORT), "--secret", SECRET,
                            "--timeout", "300"], conf)
            if r.stop_gateway() != 0:
                raise BenchError("the gateway did not exit cleanly after "
                                 "registering users:\n" + tail(r.gw_log))
            path = os.path.join(self.tmp, "%s.db" % label)
            shutil.copyfile(os.path.join(r.dir, "state", "state.db"), path)
            log("prepared %d users x %d contacts in %.1f s" %
                (users, contacts, time.monotonic() - t0))
            return path
        finally:
            r.close()

    # Scenario 4: resident memory with idle pipes; keepalive CPU.
    def idle(self, db):
        for i in range(self.batches):
            r = Run(self, "idle-%d" % i)
            try:
                conf = gateway_conf("@STATEDIR@", dials_per_second=5000,
                                    dials_concurrent=512)
                self.add(r.load("idle", [
                    "--users", "500", "--contacts", "20",
                    "--stages", "50,500", "--comp-port", str(COMP_PORT),
                    "--peer-port", str(PEER_PORT), "--secret", SECRET,
                    "--timeout", "120"], conf, db_template=db))
            finally:
                r.close()

    def keepalive(self, db):
        r = Run(self, "keepalive")
        try:
            # 30 s and 10 s scaled down 30 times: a pipe is
            # pinged every max(interval, timeout) when its peer answers.
            conf = gateway_conf("@STATEDIR@", dials_per_second=5000,
                                dials_concurrent=512, ping_interval=1,
                                ping_timeout=1 / 3)
            samples = r.load("idle", [
                "--users", "500", "--contacts", "20",
                "--ka-windows", str(self.batches),
                "--ka-seconds", "4" if self.quick else "12",
                "--comp-port", str(COMP_PORT), "--peer-port", str(PEER_PORT),
                "--secret", SECRET, "--timeout", "120"], conf,
                db_template=db, gw_cpu=1, load_cpu=0)
        finally:
            r.close()
        self.add(samples)
        measured = self.samples.get("keepalive.cpu_share_measured", [])
        # Pings scale with 1/ping_interval: 1 s measured, reported at 30 s
        # (the default, 120 s, costs a quarter of that).
        self.derive("keepalive.cpu_percent_at_30s", "%",
                    [100.0 * x / 30.0 for x in measured])

    # Scenario 5: start-up with 1,000 users x 20 contacts.
    def startup(self, db, users, contacts, dead_every):
        for i in range(self.batches):
            r = Run(self, "startup-%d" % i)
            try:
                conf = gateway_conf("@STATEDIR@",
                                    dials_per_second=self.args.dials_per_second)
                self.add(r.load("startup", [
                    "--users", str(users), "--contacts", str(contacts),
                    "--dead-every", str(dead_every),
                    "--comp-port", str(COMP_PORT),
                    "--peer-port", str(PEER_PORT), "--secret", SECRET,
                    "--timeout", "300"], conf, db_template=db))
            finally:
                r.close()
        self.derive("startup.dials_per_second_limit", "dial/s",
                    [float(self.args.dials_per_second)])

    def run(self, only):
        t_all = time.monotonic()
        for name in SCENARIOS:
            if name not in only:
                continue
            t0 = time.monotonic()
            log("scenario %s" % name)
            if name == "relay":
                self.relay()
            elif name == "latency":
                self.relay(latency_only=True)
            elif name == "e2e":
                self.e2e()
            elif name == "e2e64":
                self.e2e64()
            elif name == "idle":
                self.idle(self.db("idle", 500, 20))
            elif name == "keepalive":
                self.keepalive(self.db("idle", 500, 20))
            elif name == "startup":
                # 10% of the contacts are unreachable. 18,000 pipes fit
                # under an open-file limit of 20,000 (sockets sit at fd
                # 1024 and above).
                u, c = (200, 20) if self.quick else (1000, 20)
                self.startup(self.db("startup", u, c, 10), u, c, 10)
            self.times[name] = time.monotonic() - t0
        self.times["total"] = time.monotonic() - t_all

    _dbs = {}

    def db(self, label, users, contacts, dead_every=0):
        key = (label, users, contacts, dead_every)
        if key not in self._dbs:
            self._dbs[key] = self.prepare(label, users, contacts, dead_every)
        return self._dbs[key]


# --- output -----------------------------------------------------------------------

def fmt(v):
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 1:
        return "%.2f" % v
    return "%.4f" % v


ORDER = ("relay.", "latency.", "e2e.", "e2e64.", "idle.", "keepalive.",
         "startup.")


def sort_key(name):
    for i, p in enumerate(ORDER):
        if name.startswith(p):
            return (i, name)
    return (len(ORDER), name)


def report(bench, meta, out_path):
    rows = []
    for name in sorted(bench.samples, key=sort_key):
        vals = bench.samples[name]
        if not vals:
            continue
        med = statistics.median(vals)
        tgt = TARGETS.get(name)
        status = ""
        if tgt is not None:
            status = "met" if tgt[0](med) else "MISSED"
        rows.append((name, med, min(vals), max(vals), len(vals),
                     bench.units[name], tgt[1] if tgt else "", status))
    w = max([len(r[0]) for r in rows] + [10])
    lines = [("%-*s %12s %12s %12s %4s  %-7s %-10s" %
              (w, "figure", "median", "min", "max", "n", "unit",
               "target")).rstrip()]
    for name, med, lo, hi, n, unit, tgt, status in rows:
        lines.append(("%-*s %12s %12s %12s %4d  %-7s %-10s %s" %
                      (w, name, fmt(med), fmt(lo), fmt(hi), n, unit, tgt,
                       status)).rstrip())
    with open("/proc/loadavg") as f:
        meta = meta + [("load average at end",
                        " ".join(f.read().split()[:3]))]
    print("\n".join("# %s: %s" % kv for kv in meta))
    print("\n".join(lines))
    print("# seconds per scenario: " + ", ".join(
        "%s %.0f" % kv for kv in bench.times.items()))
    sys.stdout.flush()
    with open(out_path + ".new", "w") as f:
        for k, v in meta:
            f.write("# %s: %s\n" % (k, v))
        for name, med, lo, hi, n, unit, tgt, status in rows:
            f.write("%s %s %s\n" % (name, fmt(med), unit))
            f.write("%s.min %s %s\n" % (name, fmt(lo), unit))
            f.write("%s.max %s %s\n" % (name, fmt(hi), unit))
    os.rename(out_path + ".new", out_path)
    print("# figures written to %s" % out_path)


def meta_lines(bench):
    commit = "unknown"
    p = subprocess.run(["git", "-C", SRCDIR, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    if p.returncode == 0:
        commit = p.stdout.strip()
        d = subprocess.run(["git", "-C", SRCDIR, "status", "--porcelain",
                            "--untracked-files=no"],
                           capture_output=True, text=True)
        if d.returncode == 0 and d.stdout.strip():
            commit += " (with uncommitted changes)"
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [("date", datetime.datetime.now(datetime.timezone.utc)
             .strftime("%Y-%m-%dT%H:%M:%SZ")),
            ("commit", commit),
            ("machine", "%s, %d cores, Linux %s" % (cpu, os.cpu_count(),
                                                    platform.release())),
            ("load average at start", load),
            ("gateway CFLAGS", os.environ.get("BENCH_CFLAGS", "unknown")),
            ("runs per figure", str(bench.batches))]


def check_binary(path, what):
    if not os.access(path, os.X_OK):
        raise BenchError("%s not found at %s (run `make bench`)" % (what, path))
    with open(path, "rb") as f:
        data = f.read()
    if b"__asan_init" in data or b"__ubsan_handle" in data:
        raise BenchError("%s is a sanitizer build; benchmark a plain build "
                         "(configure without --enable-sanitizers)" % path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SCENARIOS),
                    help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--runs", type=int, default=5,
                    help="runs (batches) per figure")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke test: small counts, 2 runs")
    ap.add_argument("--out", default=os.path.join("tests", "bench",
                                                  "results.txt"))
    ap.add_argument("--relay-msgs", type=int, default=0,
                    help="messages per relay batch (default: 4 s worth at "
                    "the warm-up's rate)")
    ap.add_argument("--relay-dirs", default="to-barev,to-xmpp")
    ap.add_argument("--e2e-msgs", type=int, default=0,
                    help="messages per end-to-end batch (default: 3 s worth "
                    "at the warm-up's rate)")
    ap.add_argument("--dials-per-second", type=int, default=1000)
    ap.add_argument("--no-rt", action="store_true",
                    help="latency runs without SCHED_FIFO (by default the "
                    "gateway and bench_load run SCHED_FIFO there, so that "
                    "other processes do not preempt them)")
    ap.add_argument("--gateway-wrapper", default=os.environ.get(
        "BENCH_GATEWAY_WRAPPER", ""),
        help="command prefixed to the gateway's (profiling), e.g. "
        "\"valgrind --tool=callgrind\"")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in SCENARIOS:
            ap.error("unknown scenario %s" % s)
    if os.geteuid() != 0:
        log("needs root (network namespaces)")
        return 1
    if shutil.which("ip") is None:
        log("needs ip (iproute2)")
        return 1
    # Thousands of pipes: a descriptor each in the gateway and in
    # bench_load. Raising the hard limit needs CAP_SYS_RESOURCE.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 20000:
        log("needs an open-file limit of at least 20000 (ulimit -n)")
        return 1
    bench = Bench(args)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (_ for _ in ()).throw(
            KeyboardInterrupt()))
    try:
        check_binary(bench.gateway, "barev-gateway")
        check_binary(bench.load, "bench_load")
        meta = meta_lines(bench)
        with open("/proc/loadavg") as f:
            if float(f.read().split()[0]) > 0.5:
                log("warning: the machine is busy (load average above 0.5);"
                    " figures will be noisy")
        bench.run(only)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        report(bench, meta, args.out)
        return 0
    except BenchError as e:
        log("FAILED: %s" % e)
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 1
    finally:
        cleanup()
        if os.environ.get("BENCH_KEEP"):
            log("kept %s" % bench.tmp)
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
