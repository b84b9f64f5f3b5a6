"""Conntrack offload end to end (slowpath/conntrack/offload.py): once a
connection is established, its packets are forwarded by the fast path's
exact per-direction megaflows without reaching Python, while the tracker
stays right -- teardown, expiry, flushes and rule changes all still act.

Real namespaces, a real daemon, rules from the real ovs-ofctl, real TCP/UDP
sockets driven step by step (so the test knows which packets belong to
which phase) and scapy for the packets that must never pass.
"""

from __future__ import annotations

import re
import select
import subprocess
import sys
import textwrap
import time

import pytest

from tests.integration.test_conntrack_firewall import SNIFFER, _send, servers, setup_bridge  # noqa: F401

H1, H2 = "10.0.7.1", "10.0.7.2"

FLOWS = textwrap.dedent("""
    table=0,priority=10,ip,actions=ct(table=1,zone=1)
    table=0,priority=0,actions=drop
    table=1,priority=200,ct_state=+inv+trk,actions=drop
    table=1,priority=100,ct_state=+new-est-inv+trk,tcp,in_port=1,tp_dst=8080,actions=ct(commit,zone=1),output:2
    table=1,priority=100,ct_state=+new-est-inv+trk,udp,in_port=1,tp_dst=5353,actions=ct(commit,zone=1),output:2
    table=1,priority=90,ct_state=+est+trk,in_port=1,actions=output:2
    table=1,priority=90,ct_state=+est+trk,in_port=2,actions=output:1
    table=1,priority=0,actions=drop
""").strip() + "\n"

PEER = textwrap.dedent("""
    import os, socket, struct, sys, time
    proto, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if proto == "tcp":
        s = socket.create_connection((dst, port), timeout=5)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((dst, port))
    print("ready", s.getsockname()[1], flush=True)
    for line in sys.stdin:
        cmd, *a = line.split()
        try:
            if cmd == "send":     # TCP: N bytes echoed; UDP: N datagrams each echoed
                n, t = int(a[0]), float(a[1])
                gap = float(a[2]) if len(a) > 2 else 0.0
                s.settimeout(t)
                if proto == "tcp":
                    data = os.urandom(n)
                    s.sendall(data)
                    got = b""
                    while len(got) < n:
                        d = s.recv(1 << 20)
                        if not d:
                            break
                        got += d
                    ok = got == data
                else:
                    ok = True
                    for i in range(n):
                        s.send(b"%d" % i)
                        ok = ok and s.recv(2048) == b"%d" % i
                        time.sleep(gap)
                print("ok" if ok else "mismatch", flush=True)
            elif cmd == "close":      # orderly: our FIN, then the server's
                s.shutdown(socket.SHUT_WR)
                s.settimeout(5)
                print("closed" if s.recv(1) == b"" else "data", flush=True)
                s.close()
            elif cmd == "reset":      # abortive: RST
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                print("reset", flush=True)
        except OSError as e:
            print("fail", type(e).__name__, flush=True)
""")


class Peer:
    """A TCP or UDP client in a namespace, one command at a time."""

    def __init__(self, host, proto: str, dst: str, port: int):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, "-c", PEER, proto, dst,
             str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready, self.port = self._line(15).split()
        assert ready == "ready"
        self.port = int(self.port)

    def _line(self, timeout: float) -> str:
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert r, "peer did not answer"
        return self.proc.stdout.readline().strip()

    def do(self, cmd: str, timeout: float = 30) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def peers():
    made = []

    def make(*args):
        p = Peer(*args)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


@pytest.fixture
def fw(daemon, topology, bridge_name):
    """The firewall, with TCP offload allowed (windows unchecked) unless a
    test says otherwise: most tests here are about what offload does."""
    for name, ip in (("h1", H1), ("h2", H2)):
        topology.add_host(name, ip + "/24")
    setup_bridge(daemon, bridge_name, topology, FLOWS)
    daemon.appctl("dpctl/ct-set-offload", "tcp-liberal")
    return topology


def _out_of_window_ack_arrives(h1, h2, sport: int) -> bool:
    sniffer = subprocess.Popen(["ip", "netns", "exec", h2.netns, sys.executable, "-c", SNIFFER],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sniffer.stdout.readline().strip() == "ready"
        _send(h1, h2, f"A:{sport}:8080:3000000000")
        time.sleep(0.5)
        return "MARK-A" in sniffer.communicate("stop\n", timeout=20)[0].split()
    finally:
        if sniffer.poll() is None:
            sniffer.kill()


def test_by_default_tcp_stays_with_the_tracker_so_windows_are_checked(daemon, fw, servers,
                                                                     peers):
    """The cache must not decide differently from the slow path: by default
    only UDP is offloaded; an out-of-window ACK on an established TCP
    connection is dropped.  tcp-liberal trades that check for speed."""
    h1, h2 = fw["h1"], fw["h2"]
    daemon.appctl("dpctl/ct-set-offload", "on")
    assert "offload on" in daemon.appctl("dpctl/ct-get-offload")
    servers(h2, "tcp", 8080)
    servers(h2, "udp", 5353)
    c, u = peers(h1, "tcp", H2, 8080), peers(h1, "udp", H2, 5353)
    for _ in range(3):
        assert c.do("send 1000 5") == "ok" and u.do("send 3 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="the UDP flow offloaded both ways")
    assert entries_for(daemon, c.port) == [], "TCP was offloaded by default"
    assert not _out_of_window_ack_arrives(h1, h2, c.port)
    assert c.do("send 1000 5") == "ok"
    daemon.appctl("dpctl/ct-set-offload", "tcp-liberal")
    for _ in range(2):
        assert c.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 4, what="TCP offloaded too")
    assert _out_of_window_ack_arrives(h1, h2, c.port)     # the documented trade


def upcalls(daemon) -> int:
    return int(re.search(r"upcalls:(\d+)", daemon.appctl("dpctl/show")).group(1))


def offloaded(daemon) -> int:
    """Offloaded entries in the datapath (the daemon's bookkeeping)."""
    return int(re.search(r"ct_offload: flows:(\d+)", daemon.appctl("dpctl/show")).group(1))


def entries_for(daemon, port: int, *args: str) -> list[str]:
    """The offloaded entries of connections on ``port``: the only megaflows
    exact on the port that do not match ct_state."""
    return [line for line in daemon.appctl("dpctl/dump-flows", *args).splitlines()
            if (f"tp_src={port}," in line or f"tp_dst={port}," in line)
            and "ct_state" not in line and "userspace" not in line]


def offload_hits(daemon, port: int) -> int:
    """Packets forwarded by the offloaded entries of connections on ``port``."""
    return sum(int(re.search(r"packets:(\d+)", line).group(1))
               for line in entries_for(daemon, port))


def conns(daemon, proto: str) -> list[str]:
    return [line for line in daemon.appctl("dpctl/dump-conntrack").splitlines()
            if line.startswith(proto + ",")]


def wait_for(pred, timeout: float = 5.0, what: str = "") -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_established_tcp_is_forwarded_without_python_and_closes(daemon, fw, servers, peers):
    h1, h2 = fw["h1"], fw["h2"]
    servers(h2, "tcp", 8080)
    c = peers(h1, "tcp", H2, 8080)
    assert c.do("send 1000 5") == "ok"      # handshake and first data: the slow path
    assert c.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="both directions offloaded")
    before, hits = upcalls(daemon), offload_hits(daemon, c.port)
    assert c.do("send 4000000 30") == "ok"  # 4 MB each way
    assert upcalls(daemon) - before <= 2, "established segments reached Python"
    assert offload_hits(daemon, c.port) - hits >= 20, daemon.appctl("dpctl/dump-flows")
    conn = [line for line in conns(daemon, "tcp") if f"sport={c.port}" in line]
    assert conn and "ESTABLISHED" in conn[0], conn
    # the tracker counted what the cache forwarded (touch from the revalidator)
    time.sleep(1.5)
    st = daemon.appctl("dpctl/dump-conntrack", "-s")
    pk = [int(n) for n in re.findall(r"packets=(\d+)", next(
        line for line in st.splitlines() if f"sport={c.port}" in line))]
    assert sum(pk) > 100, st
    # orderly teardown: the FINs and their ACKs reach the tracker
    assert c.do("close") == "closed"
    wait_for(lambda: offloaded(daemon) == 0, what="entries of the closed connection gone")
    conn = [line for line in conns(daemon, "tcp") if f"sport={c.port}" in line]
    assert conn and "TIME_WAIT" in conn[0], conn


def test_rst_reaches_the_tracker(daemon, fw, servers, peers):
    h1, h2 = fw["h1"], fw["h2"]
    servers(h2, "tcp", 8080)
    c = peers(h1, "tcp", H2, 8080)
    assert c.do("send 1000 5") == "ok" and c.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="offloaded")
    assert c.do("reset") == "reset"
    wait_for(lambda: offloaded(daemon) == 0, what="entries of the reset connection gone")
    conn = [line for line in conns(daemon, "tcp") if f"sport={c.port}" in line]
    assert not conn or "TIME_WAIT" in conn[0] or "CLOSED" in conn[0], conn


def test_udp_offloaded_stays_alive_by_its_hits_then_expires(daemon, fw, servers, peers):
    h1, h2 = fw["h1"], fw["h2"]
    # (as on OVS, the policy comes from the database here)
    daemon.vsctl("--", "--id=@d", "create", "Datapath", "datapath_version=0",
                 "--", "set", "Open_vSwitch", ".", "datapaths:netdev=@d")
    daemon.vsctl("add-zone-tp", "netdev", "zone=1", "udp_first=2", "udp_single=2",
                 "udp_multiple=3")
    srv = servers(h2, "udp", 5353)
    c = peers(h1, "udp", H2, 5353)
    assert c.do("send 2 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="UDP offloaded both ways")
    before = upcalls(daemon)
    # 8 s of traffic, far beyond the 3 s timeout: kept alive by cache hits
    assert c.do("send 40 5 0.2") == "ok"
    assert upcalls(daemon) - before <= 2
    assert [line for line in conns(daemon, "udp") if f"sport={c.port}" in line]
    # silence: the connection expires and its entries go
    wait_for(lambda: not [line for line in conns(daemon, "udp") if f"sport={c.port}" in line],
             timeout=10, what="UDP connection expired")
    wait_for(lambda: offloaded(daemon) == 0, what="entries of the expired connection gone")
    # a "reply" without a request (the connection is gone) never passes
    srv.stop()
    c.close()
    sink = h1.udp_sink(c.port, idle=2)
    h2.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("{H2}", 5353))
        for _ in range(5):
            s.sendto(b"unsolicited", ("{H1}", {c.port}))
    """))
    assert sink.count() == 0


def test_a_flow_mod_that_denies_stops_an_offloaded_connection(daemon, fw, bridge_name,
                                                               servers, peers):
    h1, h2 = fw["h1"], fw["h2"]
    servers(h2, "tcp", 8080)
    c = peers(h1, "tcp", H2, 8080)
    assert c.do("send 1000 5") == "ok" and c.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="offloaded")
    # ovs-ofctl waits for the barrier: the datapath obeys when it returns
    daemon.ofctl("add-flow", bridge_name,
                 "table=1,priority=300,ct_state=+est+trk,tcp,tp_dst=8080,actions=drop")
    assert offloaded(daemon) <= 1          # the client->server entry is gone
    assert c.do("send 1000 2") == "fail TimeoutError"


def test_forbidden_packets_never_pass_while_connections_are_offloaded(daemon, fw, servers,
                                                                      peers):
    h1, h2 = fw["h1"], fw["h2"]
    servers(h2, "tcp", 8080)
    c = peers(h1, "tcp", H2, 8080)
    assert c.do("send 1000 5") == "ok" and c.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="offloaded")
    sniffers = {h.name: subprocess.Popen(
        ["ip", "netns", "exec", h.netns, sys.executable, "-c", SNIFFER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for h in (h1, h2)}
    try:
        for p in sniffers.values():
            assert p.stdout.readline().strip() == "ready"
        # next to the offloaded tuple: its source port to a port not allowed,
        # the same ports over UDP, a "reply" from a port nobody talked to,
        # an unsolicited SYN+ACK
        _send(h1, h2, f"A:{c.port}:9090:5", f"udp:{c.port}:8080:0")
        _send(h2, h1, f"PA:9090:{c.port}:7", f"SA:8080:{c.port + 2}:9")
        time.sleep(0.5)
        seen = {n: p.communicate("stop\n", timeout=20)[0].split() for n, p in sniffers.items()}
    finally:
        for p in sniffers.values():
            if p.poll() is None:
                p.kill()
    assert seen == {"h1": [], "h2": []}, seen
    assert c.do("send 1000 5") == "ok"     # the offloaded connection itself still works


def test_flushes_take_the_cached_flows_too(daemon, fw, bridge_name, servers, peers):
    h1, h2 = fw["h1"], fw["h2"]
    servers(h2, "tcp", 8080)
    c = peers(h1, "tcp", H2, 8080)
    assert c.do("send 1000 5") == "ok" and c.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="offloaded")
    daemon.ofctl("ct-flush-zone", bridge_name, "1")        # NXT_CT_FLUSH_ZONE
    assert offloaded(daemon) == 0 and conns(daemon, "tcp") == []
    # picked up mid-stream (as after any flush), offloaded again
    assert c.do("send 1000 5") == "ok" and c.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="offloaded again")
    p = subprocess.run([sys.executable, "-m", "vswitch.cli", "conntrack", "flush",
                        "--rundir", daemon.rundir], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert offloaded(daemon) == 0 and conns(daemon, "tcp") == []
    # offload off: the connection works, every packet through the tracker
    daemon.appctl("dpctl/ct-set-offload", "off")
    before = upcalls(daemon)
    assert c.do("send 20000 5") == "ok"
    assert offloaded(daemon) == 0 and upcalls(daemon) - before > 4
    assert "offload off" in daemon.appctl("dpctl/ct-get-offload")


def test_nat_connections_are_offloaded_with_their_rewrites(daemon, topology, bridge_name,
                                                           servers, peers):
    """DNAT and SNAT: the offloaded entries rewrite addresses and ports (with
    checksums) in the fast path exactly as the tracker did."""
    from tests.integration.test_conntrack_nat import POOL, VIP, C, S, nat_flows

    c = topology.add_host("c", C + "/24")
    s = topology.add_host("s", S + "/24")
    daemon.appctl("dpctl/ct-set-offload", "tcp-liberal")
    setup_bridge(daemon, bridge_name, topology, nat_flows())
    c.run("ip", "neigh", "replace", VIP, "lladdr", s.mac, "dev", "eth0")
    for ip in POOL:
        s.run("ip", "neigh", "replace", ip, "lladdr", c.mac, "dev", "eth0")
    servers(s, "tcp", 8080)
    servers(s, "tcp", 9090)
    for n, (dst, port) in enumerate(((VIP, 80), (S, 9090)), 1):
        p = peers(c, "tcp", dst, port)
        assert p.do("send 1000 5") == "ok" and p.do("send 1000 5") == "ok"
        wait_for(lambda: offloaded(daemon) == 2 * n, what="NAT connection offloaded")
        flows = daemon.appctl("dpctl/dump-flows")
        assert "set(ipv4(" in flows or "set(l4(" in flows, flows
        before = upcalls(daemon)
        assert p.do("send 2000000 30") == "ok"
        assert upcalls(daemon) - before <= 2


def kernel_hits(daemon) -> int:
    return sum(int(n) for n in re.findall(r"packets:(\d+)",
                                          daemon.appctl("dpctl/dump-flows", "--kernel")))


@pytest.mark.parametrize("mode", ["generic", "native"])
def test_offloaded_connections_run_in_the_xdp_cache(daemon, topology, bridge_name, servers,
                                                    peers, mode):
    """datapath_type=xdp: the offloaded entries are plain header rewrites and
    outputs, so the kernel cache forwards established connections; the
    generic ct megaflow stays out of it so it cannot shadow them."""
    h1 = topology.add_host("h1", H1 + "/24")
    h2 = topology.add_host("h2", H2 + "/24")
    for h in (h1, h2):
        if mode == "native":  # as in test_xdp_datapath: NAPI on the peer, senders checksum
            h.run("ethtool", "-K", "eth0", "gro", "on", "tx", "off")
        else:                 # generic XDP cannot redirect TSO super-frames (> MTU)
            h.run("ethtool", "-K", "eth0", "tso", "off", "gso", "off")
    daemon.vsctl("add-br", bridge_name, "--", "set", "Bridge", bridge_name,
                 "datapath_type=xdp", f"other_config:xdp-mode={mode}")
    for i, h in enumerate((h1, h2), 1):
        daemon.vsctl("add-port", bridge_name, h.port, "--", "set", "Interface", h.port,
                     f"ofport_request={i}")
    h1.run("ip", "neigh", "replace", H2, "lladdr", h2.mac, "dev", "eth0")
    h2.run("ip", "neigh", "replace", H1, "lladdr", h1.mac, "dev", "eth0")
    daemon.appctl("dpctl/ct-set-offload", "tcp-liberal")
    daemon.ofctl("del-flows", bridge_name)
    p = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", daemon.mgmt(bridge_name),
                        "-"], input=FLOWS, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    srv = servers(h2, "udp", 5353)
    c = peers(h1, "udp", H2, 5353)
    assert c.do("send 2 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="offloaded")
    kernel = daemon.appctl("dpctl/dump-flows", "--kernel")
    assert "tp_src=5353" in kernel and "userspace" not in kernel, kernel
    before, hits = upcalls(daemon), kernel_hits(daemon)
    assert c.do("send 200 5") == "ok"
    assert upcalls(daemon) - before <= 2
    assert kernel_hits(daemon) - hits >= 390, daemon.appctl("dpctl/dump-flows", "--kernel")
    # the tracker saw those packets through the revalidator (kernel counters)
    time.sleep(1.5)
    line = next(ln for ln in daemon.appctl("dpctl/dump-conntrack", "-s").splitlines()
                if f"sport={c.port}" in ln)
    assert sum(int(n) for n in re.findall(r"packets=(\d+)", line)) >= 400, line
    # TCP too, teardown included
    servers(h2, "tcp", 8080)
    t = peers(h1, "tcp", H2, 8080)
    assert t.do("send 1000 5") == "ok" and t.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 4, what="TCP offloaded")
    assert t.do("send 300000 30") == "ok"
    assert t.do("close") == "closed"
    wait_for(lambda: not entries_for(daemon, t.port), what="TCP entries gone")
    wait_for(lambda: not entries_for(daemon, t.port, "--kernel"), what="TCP entries gone")
    srv.stop()


def test_three_tier_connections_are_offloaded_across_both_zones(daemon, topology, bridge_name,
                                                                servers, peers):
    """The README's microsegmentation rules check every packet in two zones
    (source, then destination): the offloaded entry flattens both ct passes,
    and both zones' connections are kept alive and torn down."""
    from tests.integration.test_conntrack_firewall import APP, DB, OTHER, WEB, three_tier_flows

    for name, ip in (("web", WEB), ("app", APP), ("db", DB), ("other", OTHER)):
        topology.add_host(name, ip + "/24")
    daemon.appctl("dpctl/ct-set-offload", "tcp-liberal")
    setup_bridge(daemon, bridge_name, topology, three_tier_flows())
    web, app = topology["web"], topology["app"]
    servers(app, "tcp", 8080)
    c = peers(web, "tcp", APP, 8080)
    assert c.do("send 1000 5") == "ok" and c.do("send 1000 5") == "ok"
    wait_for(lambda: offloaded(daemon) == 2, what="offloaded")
    assert "connections:2" in daemon.appctl("dpctl/show")     # zone 1 and zone 2
    before = upcalls(daemon)
    assert c.do("send 2000000 30") == "ok"
    assert upcalls(daemon) - before <= 2
    time.sleep(1.5)
    lines = [ln for ln in daemon.appctl("dpctl/dump-conntrack", "-s").splitlines()
             if f"sport={c.port}" in ln]
    assert len(lines) == 2 and all(sum(map(int, re.findall(r"packets=(\d+)", ln))) > 50
                                   for ln in lines), lines
    assert c.do("close") == "closed"
    wait_for(lambda: offloaded(daemon) == 0, what="entries gone")
    lines = [ln for ln in conns(daemon, "tcp") if f"sport={c.port}" in ln]
    assert len(lines) == 2 and all("TIME_WAIT" in ln for ln in lines), lines
    # still nothing the policy forbids: app may not open connections to web
    assert app.ping(WEB, count=1, wait=1).returncode != 0
