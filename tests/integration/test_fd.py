"""File descriptors: Barev sockets never push libstrophe's socket past 1023.

libstrophe select()s on the component socket, so it must stay below
FD_SETSIZE even when thousands of Barev pipes are open and the component
reconnects. The gateway keeps every Barev socket at fd >= 1024. Here 1,100
pipes are held open (connections that have not sent their stream header
yet, with a long handshake timeout), the XMPP server is restarted, and the
component must reconnect on a low fd and still answer.
"""

import os
import re
import resource
import socket

import harness

PIPES = 1100
LINK_UP = harness.LINK_UP_RE


def sockets_of(pid):
    """{fd: inode} of the process's sockets."""
    out = {}
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, name))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            out[int(name)] = int(m.group(1))
    return out


def inode_to_remote_port(path):
    """{inode: remote port} from /proc/net/tcp or tcp6."""
    out = {}
    with open(path) as f:
        next(f)
        for line in f:
            cols = line.split()
            remote = cols[2]
            out[int(cols[9])] = int(remote.rsplit(":", 1)[1], 16)
    return out


def component_fd(pid, component_port):
    """The fd of the gateway's socket to the server's component port."""
    ports = inode_to_remote_port("/proc/net/tcp")
    ports.update(inode_to_remote_port("/proc/net/tcp6"))
    for fd, inode in sockets_of(pid).items():
        if ports.get(inode) == component_port:
            return fd
    return None


def conf_text(server, gwdir, barev_port):
    return """\
component = {{ jid = "{jid}"; secret = "{secret}"; host = "{host}";
  port = {port}; reconnect_min = 0.2; reconnect_max = 1.0; }};
barev = {{ listen = [ "[::1]:{bport}" ]; allow_any_address = true;
  handshake_timeout = 300; }};
limits = {{ pipes = 5000; pipes_per_address = 5000;
  inbound_per_minute = 5000; pipes_per_subnet = 5000;
  inbound_per_minute_per_subnet = 5000; }};
storage = {{ path = "{dir}/state.db"; }};
""".format(jid=server.component_domain, secret=server.secret,
           host=server.host, port=server.component_port, bport=barev_port,
           dir=gwdir)


def many_pipes_survive_server_restart():
    harness.require_root()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = harness.tmp_root()
    server = harness.Prosody(harness.subdir("prosody"))
    server.start()
    server.register("alice", "pw")
    barev_port = harness.free_port("::1")
    gwdir = harness.subdir("gwconf")
    gw = harness.Gateway(tmp, server, conf_text=conf_text(server, gwdir,
                                                          barev_port))
    gw.start()
    up = LINK_UP % (re.escape(server.component_domain), server.component_port)
    gw.wait_log(up, timeout=10)
    peers = []
    try:
        for _ in range(PIPES):
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.connect(("::1", barev_port))
            peers.append(s)
        harness.wait_until(
            lambda: sum(1 for fd in sockets_of(gw.pid) if fd >= 1024)
            >= PIPES, 20, "%d Barev sockets at fd >= 1024" % PIPES)
        low_before = component_fd(gw.pid, server.component_port)
        assert low_before is not None and low_before < 1024, \
            "component socket fd %s" % low_before

        server.restart()
        gw.wait_log(up, timeout=20, count=2)
        fd = component_fd(gw.pid, server.component_port)
        assert fd is not None and fd < 1024, \
            "after the reconnect the component socket is fd %s" % fd
        high = [f for f in sockets_of(gw.pid) if f >= 1024]
        assert len(high) >= PIPES, "only %d Barev sockets left" % len(high)
        alice = harness.Client("alice@localhost", "pw", server)
        pong = alice.ping(server.component_domain)
        assert pong["type"] == "result", "ping after reconnect: %s" % pong
        alice.disconnect()
        # Every held pipe is still waiting for its header, none was lost.
        for s in peers[:5]:
            s.setblocking(False)
            try:
                data = s.recv(1)
                raise AssertionError("pipe closed or spoke first: %r" % data)
            except BlockingIOError:
                pass
    finally:
        for s in peers:
            s.close()
    gw.stop_clean()
    server.stop()


if __name__ == "__main__":
    harness.run([
        ("1,100 Barev pipes, server restart: component fd stays below 1024",
         many_pipes_survive_server_restart),
    ])
