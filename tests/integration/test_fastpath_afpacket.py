"""The Cython datapath between real namespaces: AF_PACKET (veth) and TAP ports.

Each test builds its own uniquely named namespaces and veth pairs and removes
them in teardown, also on failure.  A small loop thread plays daemon: it
polls the Dpif and answers misses like a trivial slow path (install the
megaflow, execute the packet).
"""

import os
import secrets
import subprocess
import threading
import time

import pytest

from slowpath import dpactions as A
from slowpath.fields import FIELDS, FLOW_KEY_SIZE, MEMBERS
from slowpath.flow import FlowKey

pytestmark = pytest.mark.integration


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True,
                          timeout=60)


def _require():
    if os.geteuid() != 0:
        pytest.fail("missing capability: root (netns, AF_PACKET, TAP)", pytrace=False)
    if not os.path.exists("/dev/net/tun"):
        pytest.fail("missing capability: /dev/net/tun (TAP ports)", pytrace=False)
    try:
        from fastpath.dpif import Dpif  # noqa: F401
    except ImportError as e:
        pytest.fail(f"missing capability: built fast path ({e}); run setup.py build_ext",
                    pytrace=False)


class Net:
    """Namespaces + veths with a random tag; close() removes all of it."""

    def __init__(self):
        self.tag = secrets.token_hex(3)
        self.netns: list[str] = []
        self.links: list[str] = []

    def ns(self, short: str) -> str:
        name = f"fp{short}{self.tag}"
        sh(f"ip netns add {name}")
        self.netns.append(name)
        sh(f"ip -n {name} link set lo up")
        return name

    def host(self, short: str, ip: str, vlan: int | None = None) -> tuple[str, str]:
        """A namespace whose eth0 is a veth; returns (netns, root-side port)."""
        ns = self.ns(short)
        port = f"fp{short}{self.tag}"
        self.links.append(port)
        sh(f"ip link add {port} type veth peer name eth0 netns {ns}")
        sh(f"ip link set {port} up")
        sh(f"ip -n {ns} link set eth0 up")
        dev = "eth0"
        if vlan is not None:
            dev = f"eth0.{vlan}"
            sh(f"ip -n {ns} link add link eth0 name {dev} type vlan id {vlan}")
            sh(f"ip -n {ns} link set {dev} up")
        sh(f"ip -n {ns} addr add {ip}/24 dev {dev}")
        return ns, port

    def close(self):
        for ns in self.netns:
            sh(f"ip netns del {ns}", check=False)
        for link in self.links:
            sh(f"ip link del {link}", check=False)


@pytest.fixture
def net():
    _require()
    n = Net()
    try:
        yield n
    finally:
        n.close()


class Loop:
    """Datapath thread + a trivial slow path: ``table`` maps in dp_port to
    the actions of a megaflow that matches only in_port."""

    def __init__(self, dp, table):
        self.dp, self.table = dp, table
        self.stop = False
        self.upcalls = 0
        self.error = None
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        o, s = MEMBERS["in_port"]
        mask = bytearray(FLOW_KEY_SIZE)
        mask[o:o + s] = b"\xff" * s
        try:
            while not self.stop:
                for u in self.dp.poll(10):
                    self.upcalls += 1
                    actions = self.table.get(u.dp_port, ())
                    self.dp.flow_put(u.key, bytes(mask), actions)
                    self.dp.execute(u.packet, actions, u.key)
        except BaseException as e:  # surfaced by __exit__
            self.error = e

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.t.join(5)
        if self.error:
            raise self.error


def ping(ns, dst, count=3):
    return sh(f"ip netns exec {ns} ping -c {count} -i 0.2 -W 2 {dst}", check=False)


def udp_roundtrip(src_ns, dst_ns, dst_ip, n=20):
    """Send n UDP datagrams (kernel checksum offload: CHECKSUM_PARTIAL on
    veth) and count how many the receiver's socket accepted."""
    rx = subprocess.Popen(
        ["ip", "netns", "exec", dst_ns, "python3", "-c",
         "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         "s.bind(('0.0.0.0',9999));s.settimeout(3);c=0\nprint('ready',flush=True)\n"
         f"try:\n  while c<{n}:\n    s.recv(2000);c+=1\nexcept Exception: pass\nprint(c)"],
        stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().strip() == "ready"
    sh(f"ip netns exec {src_ns} python3 -c \"import socket,time\n"
       f"s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
       f"for i in range({n}):\n  s.sendto(b'x'*100,('{dst_ip}',9999));time.sleep(0.005)\"")
    out, _ = rx.communicate(timeout=20)
    return int(out.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["afpacket", "afxdp", "mixed"])
def test_ping_and_udp_between_namespaces(net, kind):
    from fastpath.dpif import Dpif
    ns1, p1 = net.host("a", "10.77.0.1")
    ns2, p2 = net.host("b", "10.77.0.2")
    if kind != "afpacket":
        # AF_XDP sees no CHECKSUM_PARTIAL flag; like OVS's afxdp on veth, the
        # senders must compute checksums themselves (OVS docs: "tx off").
        for ns in (ns1, ns2):
            sh(f"ip netns exec {ns} ethtool -K eth0 tx off")
    dp = Dpif()
    try:
        a = dp.add_port(p1, "afxdp" if kind != "afpacket" else "afpacket")
        b = dp.add_port(p2, "afxdp" if kind == "afxdp" else "afpacket")
        with Loop(dp, {a: (A.Output(b),), b: (A.Output(a),)}) as loop:
            r = ping(ns1, "10.77.0.2")
            assert r.returncode == 0, r.stdout + r.stderr
            assert udp_roundtrip(ns1, ns2, "10.77.0.2") == 20
        assert loop.upcalls <= 4                     # then everything hit the cache
        assert dp.stats()["hit"] >= 25
        sa, sb = dp.port_stats(a), dp.port_stats(b)
        assert sa["rx_packets"] >= 23 and sb["tx_packets"] >= 23
    finally:
        dp.close()


VLAN_PROBE = r"""
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0))
s.setsockopt(263, 8, 1)                       # SOL_PACKET, PACKET_AUXDATA
s.settimeout(3)
s.send(bytes.fromhex(sys.argv[1]))
while True:
    data, anc, _, addr = s.recvmsg(4096, 1024)
    if addr[2] == 4:                           # PACKET_OUTGOING
        continue
    if len(data) >= 34 and data[12:14] == b"\x08\x00" and data[23] == 1 and data[34] == 0:
        tci = None
        for level, typ, val in anc:
            if level == 263 and typ == 8:
                st, ln, sn, mac, net, tci, tpid = struct.unpack("IIIHHHH", val[:20])
                if not st & (1 << 4):          # TP_STATUS_VLAN_VALID
                    tci = None
        print(tci)
        break
"""


def test_vlan_push_pop_between_access_and_trunk(net):
    """ns1 is an untagged access host; ns2 speaks VLAN 100 with raw sockets
    (no 8021q module here).  A tagged echo request from ns2 is popped into
    ns1, whose untagged reply comes back to ns2 tagged with VLAN 100."""
    from fastpath.dpif import Dpif
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Dot1Q, Ether
    ns1, p1 = net.host("c", "10.78.0.1")
    ns2 = net.ns("d")
    p2 = f"fpd{net.tag}"
    net.links.append(p2)
    sh(f"ip link add {p2} type veth peer name eth0 netns {ns2}")
    sh(f"ip link set {p2} up")
    sh(f"ip -n {ns2} link set eth0 up")
    mac1, mac2 = (sh(f"ip netns exec {ns} cat /sys/class/net/eth0/address").stdout.strip()
                  for ns in (ns1, ns2))
    sh(f"ip -n {ns1} neigh replace 10.78.0.2 lladdr {mac2} dev eth0")
    req = bytes(Ether(src=mac2, dst=mac1) / Dot1Q(vlan=100) / IP(src="10.78.0.2", dst="10.78.0.1")
                / ICMP(type=8, id=77) / (b"v" * 32))
    dp = Dpif()
    try:
        a = dp.add_port(p1, "afpacket")
        b = dp.add_port(p2, "afpacket")
        table = {a: (A.push_vlan(100), A.Output(b)), b: (A.PopVlan(), A.Output(a))}
        with Loop(dp, table):
            r = sh(f"ip netns exec {ns2} python3 -c '{VLAN_PROBE}' {req.hex()}", check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "100", r.stdout + r.stderr
    finally:
        dp.close()


def test_tap_port_carries_traffic_and_disappears_on_close(net):
    from fastpath.dpif import Dpif
    ns1, p1 = net.host("e", "10.79.0.1")
    ns3 = net.ns("t")
    tap = f"fpt{net.tag}"
    dp = Dpif()
    try:
        a = dp.add_port(p1, "afpacket")
        t = dp.add_port(tap, "tap")
        assert sh(f"ip link show {tap}", check=False).returncode == 0
        sh(f"ip link set {tap} netns {ns3}")
        sh(f"ip -n {ns3} addr add 10.79.0.3/24 dev {tap}")
        sh(f"ip -n {ns3} link set {tap} up")
        with Loop(dp, {a: (A.Output(t),), t: (A.Output(a),)}):
            r = ping(ns1, "10.79.0.3")
            assert r.returncode == 0, r.stdout + r.stderr
        dp.del_port(t)
        time.sleep(0.1)
        assert sh(f"ip -n {ns3} link show {tap}", check=False).returncode != 0
    finally:
        dp.close()


def tcp_transfer(src_ns, dst_ns, dst_ip, nbytes=4 << 20, timeout=20):
    """Bulk TCP (TSO/GSO on the veths) from src_ns to dst_ns; bytes received."""
    rx = subprocess.Popen(
        ["ip", "netns", "exec", dst_ns, "python3", "-c",
         "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
         "s.bind(('0.0.0.0',9998));s.listen(1);print('ready',flush=True)\n"
         f"s.settimeout({timeout});c,_=s.accept();c.settimeout({timeout});n=0\n"
         "try:\n  while True:\n    d=c.recv(1<<16)\n    if not d: break\n    n+=len(d)\n"
         "except Exception: pass\nprint(n)"],
        stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().strip() == "ready"
    sh(f"ip netns exec {src_ns} python3 -c \"import socket\n"
       f"s=socket.create_connection(('{dst_ip}',9998),timeout={timeout})\n"
       f"s.sendall(b'z'*{nbytes});s.close()\"", check=False)
    out, _ = rx.communicate(timeout=timeout + 10)
    return int(out.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["afpacket", "afpacket-segment", "afxdp", "mixed"])
def test_tcp_bulk_with_offloads(net, kind):
    """TCP from a stack with TSO/checksum offload on (the veth default):
    GSO super-packets and CHECKSUM_PARTIAL must be handled by the datapath.
    (AF_XDP: attaching XDP turns GSO off on the peer; checksum offload must
    be off, as for OVS afxdp on veth.)"""
    from fastpath.dpif import Dpif
    ns1, p1 = net.host("g", "10.80.0.1")
    ns2, p2 = net.host("h", "10.80.0.2")
    # afpacket: TSO super-packets pass through whole (GSO to GSO ports);
    # afpacket-segment: a header action forces software segmentation;
    # mixed: afpacket in, afxdp out (segmented for the non-GSO port).
    if kind in ("afxdp", "mixed"):
        for ns in ((ns1, ns2) if kind == "afxdp" else (ns2,)):
            sh(f"ip netns exec {ns} ethtool -K eth0 tx off")
    kinds = {"afpacket": ("afpacket", "afpacket"), "afpacket-segment": ("afpacket", "afpacket"),
             "afxdp": ("afxdp", "afxdp"), "mixed": ("afpacket", "afxdp")}[kind]
    dp = Dpif()
    try:
        a = dp.add_port(p1, kinds[0])
        b = dp.add_port(p2, kinds[1])
        pre = (A.SetMasked("skb_priority", 0, 0xffffffff),) if kind == "afpacket-segment" else ()
        with Loop(dp, {a: pre + (A.Output(b),), b: pre + (A.Output(a),)}):
            t0 = time.monotonic()
            n = tcp_transfer(ns1, ns2, "10.80.0.2")
            took = time.monotonic() - t0
        assert n == 4 << 20, (n, dp.port_stats(a), dp.port_stats(b))
        print(f"TCP 4 MiB in {took:.2f}s")
    finally:
        dp.close()


@pytest.mark.parametrize("kind", ["afpacket", "afxdp"])
def test_device_removed_under_the_datapath(net, kind):
    """Deleting a port's device must not make poll() spin; the port reports
    why it stopped, and the other ports keep working."""
    from fastpath.dpif import Dpif
    ns1, p1 = net.host("r", "10.81.0.1")
    ns2, p2 = net.host("s", "10.81.0.2")
    dp = Dpif()
    try:
        a = dp.add_port(p1, kind)
        b = dp.add_port(p2, kind)
        assert dp.port_error(a) is None
        sh(f"ip netns del {ns1}")              # takes the veth pair with it
        deadline = time.monotonic() + 1.0
        polls = 0
        while time.monotonic() < deadline:
            dp.poll(100)
            polls += 1
        assert polls <= 30, f"poll() spins after the device vanished ({polls} in 1 s)"
        assert "disappeared" in (dp.port_error(a) or ""), dp.port_error(a)
        assert dp.port_error(b) is None
        dp.del_port(a)
    finally:
        dp.close()


@pytest.mark.parametrize("kind", ["afpacket", "afxdp"])
def test_link_down_up_keeps_the_port(net, kind):
    from fastpath.dpif import Dpif
    ns1, p1 = net.host("u", "10.82.0.1")
    ns2, p2 = net.host("v", "10.82.0.2")
    if kind == "afxdp":
        for ns in (ns1, ns2):
            sh(f"ip netns exec {ns} ethtool -K eth0 tx off")
    dp = Dpif()
    try:
        a = dp.add_port(p1, kind)
        b = dp.add_port(p2, kind)
        with Loop(dp, {a: (A.Output(b),), b: (A.Output(a),)}):
            assert ping(ns1, "10.82.0.2", count=1).returncode == 0
            sh(f"ip link set {p1} down")
            time.sleep(0.3)
            sh(f"ip link set {p1} up")
            time.sleep(0.3)
            r = ping(ns1, "10.82.0.2", count=2)
            assert r.returncode == 0, r.stdout + r.stderr
        assert dp.port_error(a) is None
    finally:
        dp.close()
