"""The distributed firewall end to end: real namespaces, a real daemon, rules
from the real ovs-ofctl, real TCP/UDP sockets and pings.

The rule set is the three-tier microsegmentation example of
slowpath/conntrack/README.md: each VM port has its own conntrack zone, every
IP packet is checked against its source's egress policy (in the source's
zone) and then its destination's ingress policy (in the destination's zone),
so each VM's zone sees all of its own traffic and nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

WEB, APP, DB, OTHER = "10.0.3.1", "10.0.3.2", "10.0.3.3", "10.0.3.4"

SERVER = textwrap.dedent("""
    import socket, sys, threading
    proto, port = sys.argv[1], int(sys.argv[2])
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        print("ready", flush=True)
        while True:
            d, a = s.recvfrom(65536)
            print(f"peer {a[0]}:{a[1]}", flush=True)
            s.sendto(d, a)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    print("ready", flush=True)
    def serve(c):
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.close()
    while True:
        c, a = s.accept()
        print(f"peer {a[0]}:{a[1]}", flush=True)
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")

CLIENT = textwrap.dedent("""
    import os, socket, sys
    proto, dst, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    timeout = float(sys.argv[5])
    data = os.urandom(size)
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.connect((dst, port))       # so ICMP errors are reported
            s.send(data)
            got = s.recv(65536)
        else:
            s = socket.create_connection((dst, port), timeout=timeout)
            s.sendall(data)
            got = b""
            while len(got) < size:
                d = s.recv(65536)
                if not d:
                    break
                got += d
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""       # orderly teardown: the server's FIN
            s.close()
        print("ok" if got == data else "mismatch")
    except (OSError, AssertionError) as e:
        print("fail", type(e).__name__, e)
""")


class Server:
    def __init__(self, host, proto: str, port: int):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, "-c", SERVER, proto, str(port)],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", line

    def stop(self) -> str:
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        return out


@pytest.fixture
def servers():
    running = []

    def start(host, proto, port):
        s = Server(host, proto, port)
        running.append(s)
        return s
    yield start
    for s in running:
        s.stop()


def connect(host, proto: str, dst: str, port: int, size: int = 2000,
            timeout: float = 3.0) -> str:
    p = host.run(sys.executable, "-c", CLIENT, proto, dst, str(port), str(size), str(timeout),
                 check=False, timeout=timeout + 20)
    return (p.stdout + p.stderr).strip()


def setup_bridge(daemon, bridge, topology, flows: str) -> None:
    daemon.vsctl("add-br", bridge)
    for h in topology.hosts.values():
        daemon.vsctl("add-port", bridge, h.port)
    # The hosts know each other's MACs: no ARP through the firewall needed.
    for h in topology.hosts.values():
        for o in topology.hosts.values():
            if o is not h:
                h.run("ip", "neigh", "replace", o.addr, "lladdr", o.mac, "dev", "eth0")
    daemon.ofctl("del-flows", bridge)
    p = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", daemon.mgmt(bridge), "-"],
                       input=flows, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


def three_tier_flows() -> str:
    """The README's example: zones 1/2/3 for web/app/db (ofports 1/2/3)."""
    return textwrap.dedent(f"""
        table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
        table=0,priority=10,ip,in_port=2,actions=ct(table=1,zone=2)
        table=0,priority=10,ip,in_port=3,actions=ct(table=1,zone=3)
        table=0,priority=10,ip,in_port=4,actions=ct(table=1,zone=4)
        table=0,priority=0,actions=drop
        table=1,priority=200,ct_state=+inv+trk,actions=drop
        table=1,priority=150,ct_state=+est+trk,actions=resubmit(,2)
        table=1,priority=150,ct_state=+rel+trk,actions=resubmit(,2)
        table=1,priority=100,ct_state=+new-est-rel-inv+trk,tcp,in_port=1,nw_dst={APP},tp_dst=8080,actions=ct(commit,zone=1),resubmit(,2)
        table=1,priority=100,ct_state=+new-est-rel-inv+trk,tcp,in_port=2,nw_dst={DB},tp_dst=5432,actions=ct(commit,zone=2),resubmit(,2)
        table=1,priority=100,ct_state=+new-est-rel-inv+trk,udp,in_port=2,nw_dst={DB},tp_dst=53,actions=ct(commit,zone=2),resubmit(,2)
        table=1,priority=100,ct_state=+new-est-rel-inv+trk,icmp,icmp_type=8,in_port=1,nw_dst={APP},actions=ct(commit,zone=1),resubmit(,2)
        table=1,priority=0,actions=drop
        table=2,priority=10,ip,nw_dst={WEB},actions=ct(table=3,zone=1)
        table=2,priority=10,ip,nw_dst={APP},actions=ct(table=3,zone=2)
        table=2,priority=10,ip,nw_dst={DB},actions=ct(table=3,zone=3)
        table=2,priority=10,ip,nw_dst={OTHER},actions=ct(table=3,zone=4)
        table=2,priority=0,actions=drop
        table=3,priority=200,ct_state=+inv+trk,actions=drop
        table=3,priority=150,ct_state=+est+trk,actions=resubmit(,4)
        table=3,priority=150,ct_state=+rel+trk,actions=resubmit(,4)
        table=3,priority=100,ct_state=+new-est-rel-inv+trk,tcp,nw_src={WEB},nw_dst={APP},tp_dst=8080,actions=ct(commit,zone=2),resubmit(,4)
        table=3,priority=100,ct_state=+new-est-rel-inv+trk,tcp,nw_src={APP},nw_dst={DB},tp_dst=5432,actions=ct(commit,zone=3),resubmit(,4)
        table=3,priority=100,ct_state=+new-est-rel-inv+trk,udp,nw_src={APP},nw_dst={DB},tp_dst=53,actions=ct(commit,zone=3),resubmit(,4)
        table=3,priority=100,ct_state=+new-est-rel-inv+trk,icmp,icmp_type=8,nw_src={WEB},nw_dst={APP},actions=ct(commit,zone=2),resubmit(,4)
        table=3,priority=0,actions=drop
        table=4,ip,nw_dst={WEB},actions=output:1
        table=4,ip,nw_dst={APP},actions=output:2
        table=4,ip,nw_dst={DB},actions=output:3
        table=4,ip,nw_dst={OTHER},actions=output:4
    """).strip() + "\n"


@pytest.fixture
def three_tier(daemon, topology, bridge_name):
    for name, ip in (("web", WEB), ("app", APP), ("db", DB), ("other", OTHER)):
        topology.add_host(name, ip + "/24")
    setup_bridge(daemon, bridge_name, topology, three_tier_flows())
    return topology


def test_three_tier_policy_allows_exactly_the_allowed(daemon, three_tier, servers):
    web, app, db, other = (three_tier[n] for n in ("web", "app", "db", "other"))
    # before db listens on 53: its ICMP port unreachable is related to the
    # allowed UDP flow and gets back to app (a refused, not a timed-out, recv)
    out = connect(app, "udp", DB, 53, size=10, timeout=2.0)
    assert out.startswith("fail ConnectionRefusedError"), out
    servers(app, "tcp", 8080)
    servers(db, "tcp", 5432)
    servers(db, "udp", 53)
    servers(web, "tcp", 80)
    servers(app, "tcp", 5432)
    servers(db, "tcp", 8080)
    # allowed: handshakes, data both ways, teardown; several connections
    for _ in range(3):
        assert connect(web, "tcp", APP, 8080, size=100_000) == "ok"
    assert connect(app, "tcp", DB, 5432, size=20_000) == "ok"
    assert connect(app, "udp", DB, 53, size=200) == "ok"
    assert web.ping(APP, count=2).returncode == 0
    # everything else is dropped
    blocked = [
        (web, "tcp", DB, 5432),       # web may not skip a tier
        (web, "tcp", DB, 8080),
        (db, "tcp", APP, 8080),       # the right port from the wrong source
        (app, "tcp", WEB, 80),        # no connections back up the tiers
        (web, "tcp", APP, 5432),      # the wrong port on the right host
        (other, "tcp", APP, 8080),
        (web, "udp", DB, 53),
    ]
    for host, proto, dst, port in blocked:
        out = connect(host, proto, dst, port, timeout=1.0)
        assert out.startswith("fail"), (host.name, dst, port, out)
    assert app.ping(WEB, count=1, wait=1).returncode != 0
    assert db.ping(APP, count=1, wait=1).returncode != 0
    # the conntrack table shows the allowed connections in both zones
    dump = daemon.appctl("dpctl/dump-conntrack")
    assert f"tcp,orig=(src={WEB},dst={APP}" in dump and "zone=1" in dump and "zone=2" in dump
    assert f"udp,orig=(src={APP},dst={DB}" in dump and "zone=3" in dump
    assert f"orig=(src={WEB},dst={DB}" not in dump and f"orig=(src={APP},dst={WEB}" not in dump
    assert f"orig=(src={DB}," not in dump and f"orig=(src={OTHER}," not in dump
    z1 = subprocess.run([sys.executable, "-m", "vswitch.cli", "conntrack", "dump",
                         "--rundir", daemon.rundir, "--zone", "1"],
                        capture_output=True, text=True, timeout=30).stdout
    assert z1 and all("zone=1" in line for line in z1.splitlines())
    assert "TCP:" in daemon.appctl("dpctl/ct-stats-show")
    # the caches: the ct pass is a slow-path megaflow, the pass after
    # recirculation an ordinary one that depends on ct_state
    flows = daemon.appctl("dpctl/dump-flows")
    assert "slow_path" in flows and "ct_state" in flows, flows


SENDER = textwrap.dedent("""
    import sys
    from scapy.all import Ether, IP, TCP, UDP, Raw, sendp
    src_mac, dst_mac, src, dst = sys.argv[1:5]
    for spec in sys.argv[5:]:
        kind, sport, dport, seq = spec.split(":")
        l4 = (TCP(sport=int(sport), dport=int(dport), flags=kind, seq=int(seq), ack=1)
              if kind != "udp" else UDP(sport=int(sport), dport=int(dport)))
        sendp(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) / l4
              / Raw(b"MARK-" + kind.encode()), iface="eth0", verbose=False)
""")

SNIFFER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("eth0", 0))
    s.settimeout(0.2)
    print("ready", flush=True)
    seen = set()
    while sys.stdin.readline().strip() != "stop":
        pass
    while True:          # drain what arrived, incoming frames only
        try:
            d, addr = s.recvfrom(65536)
        except socket.timeout:
            break
        i = d.find(b"MARK-")
        if i >= 0 and addr[2] != socket.PACKET_OUTGOING:
            seen.add(d[i:].split(b"\\0")[0][:9].decode(errors="replace"))
    print(" ".join(sorted(seen)), flush=True)
""")


def _send(host, dst_host, *specs):
    p = host.run(sys.executable, "-c", SENDER, host.mac, dst_host.mac, host.addr,
                 dst_host.addr, *specs, check=False)
    assert p.returncode == 0, p.stderr


def test_replies_without_request_and_out_of_window_segments_are_dropped(daemon, three_tier,
                                                                        servers):
    web, app, db = three_tier["web"], three_tier["app"], three_tier["db"]
    sniffers = {h.name: subprocess.Popen(
        ["ip", "netns", "exec", h.netns, sys.executable, "-c", SNIFFER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for h in (web, app)}
    try:
        for p in sniffers.values():
            assert p.stdout.readline().strip() == "ready"
        inv_before = _counter(daemon, "invalid")
        # "replies" nobody asked for: a SYN+ACK from app to web, UDP from db:53 to app
        _send(app, web, "SA:8080:45678:5000")
        _send(db, app, "udp:53:45679:0")
        # an allowed SYN (the control) opens 40001 -> 8080; a segment on that
        # tuple far outside the window must not pass, nor a RST out of sequence
        _send(web, app, "S:40001:8080:1000", "A:40001:8080:3000000000",
              "R:40001:8080:2000000000")
        time.sleep(0.5)
        seen = {}
        for name, p in sniffers.items():
            seen[name] = p.communicate("stop\n", timeout=20)[0].split()
    finally:
        for p in sniffers.values():
            if p.poll() is None:
                p.kill()
    assert "MARK-S" in seen["app"], seen        # the allowed SYN arrived
    assert "MARK-A" not in seen["app"], seen    # the out-of-window segment did not
    assert "MARK-R" not in seen["app"], seen
    assert "MARK-udp" not in seen["app"], seen  # nor the unsolicited UDP "reply"
    assert "MARK-SA" not in seen["web"], seen   # nor the unsolicited SYN+ACK
    assert _counter(daemon, "invalid") >= inv_before + 3


def _counter(daemon, name: str) -> int:
    for line in daemon.appctl("dpctl/ct-stats-show").splitlines():
        if line.strip().startswith(name + ":"):
            return int(line.split(":")[1])
    raise AssertionError(f"no counter {name}")
