"""GENEVE between pyvswitch and Open vSwitch 3.1 (userspace datapath).

Two "hypervisor" namespaces joined by an underlay veth (10.99.x.0/24):

    vm-a --veth-- [hv-a: pyvswitch br-int, gnv0] ==underlay== [hv-b: OVS br-int, gnv0 | br-phy] --veth-- vm-b

hv-a runs a pyvswitch daemon inside the namespace (tunnel traffic through the
host stack: UDP socket + raw socket); hv-b runs a private ovsdb-server +
ovs-vswitchd (`bench.ovs.OvsSwitch`, datapath_type=netdev) with OVS's native
tunnelling: the underlay veth is a port of br-phy, which owns the address.
Checks: ping and TCP both ways with NORMAL; with the same TLV map on both
sides, an option set on one side is matched on the other (and a wrong value
is not); a capture on the underlay decodes (tshark, and scapy's GENEVE
dissector) as well-formed GENEVE with the option, from both switches —
through the host stack and with pyvswitch's native tunnelling, where its
Cython fast path encapsulates and decapsulates.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager

import pytest

from vswitch.process import DaemonProcess

from bench.ovs import OvsSwitch
from tests.capabilities import require_tools

VM_MTU = 1400
# OVN's option: class 0x0102, type 0x80 (critical), 4 bytes.
TLV = "{class=0x0102,type=0x80,len=4}->tun_metadata0"
MARK_A, MARK_B = 0xA1A2A3A4, 0xB1B2B3B4
BAD = 0x0BAD0BAD


def sh(*argv, ns=None, check=True, timeout=30):
    argv = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


class Overlay:
    """The two hypervisors.  ``peer``: what runs in hv-b ("ovs" or "pvs");
    ``family``: underlay IPv4 or IPv6; ``gnv_b``: options of hv-b's geneve
    port when it is pyvswitch (default: fixed remote, key=flow)."""

    def __init__(self, peer: str = "ovs", family: int = 4, vm_mtu: int = VM_MTU,
                 gnv_b: dict | None = None, native: bool = False, gnv_a: dict | None = None):
        self.tag = secrets.token_hex(2)
        n = int(self.tag, 16) % 200 + 20
        self.peer, self.family, self.vm_mtu = peer, family, vm_mtu
        self.ns = {k: f"gnv-{self.tag}-{k}" for k in ("hva", "hvb", "vma", "vmb")}
        if family == 6:
            self.ul_a, self.ul_b, self.plen = f"fd00:99:{n:x}::1", f"fd00:99:{n:x}::2", 64
        else:
            self.ul_a, self.ul_b, self.plen = f"10.99.{n}.1", f"10.99.{n}.2", 24
        self.vm_a, self.vm_b = "10.200.0.1", "10.200.0.2"
        self.gnv_b = gnv_b
        self.gnv_a = gnv_a   # hv-a's geneve options (default: fixed remote, key=flow, csum)
        self.native = native   # hv-a's underlay NIC on a pyvswitch br-phy (as OVS's)
        self.tmp = tempfile.mkdtemp(prefix="gnv-interop-")
        self.pvs: DaemonProcess | None = None
        self.pvs_b: DaemonProcess | None = None
        self.ovs: OvsSwitch | None = None
        self.made_ns: list[str] = []

    @property
    def sw_b(self):
        return self.ovs if self.peer == "ovs" else self.pvs_b

    def _pvs(self, ns: str, name: str, gnv: dict) -> DaemonProcess:
        os.makedirs(f"{self.tmp}/{name}")
        d = DaemonProcess(rundir=f"{self.tmp}/{name}", netns=ns).start()
        d.vsctl("add-br", "br-int")
        d.vsctl("add-port", "br-int", "vport", "--", "set", "Interface", "vport",
                "ofport_request=1")
        d.vsctl("add-port", "br-int", "gnv0", "--", "set", "Interface", "gnv0", "type=geneve",
                "ofport_request=2", *[f"options:{k}={v}" for k, v in gnv.items()])
        return d

    def build(self):
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self.made_ns.append(ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            v6off = "0" if self.family == 6 and "hv" in ns[-3:] else "1"
            sh("sysctl", "-qw", f"net.ipv6.conf.all.disable_ipv6={v6off}", ns=ns, check=False)
        hva, hvb, vma, vmb = (self.ns[k] for k in ("hva", "hvb", "vma", "vmb"))
        # underlay
        sh("ip", "link", "add", "ul", "netns", hva, "type", "veth", "peer", "ul", "netns", hvb)
        nodad = ["nodad"] if self.family == 6 else []
        if not self.native:
            sh("ip", "addr", "add", f"{self.ul_a}/{self.plen}", "dev", "ul", *nodad, ns=hva)
        if self.peer != "ovs":
            sh("ip", "addr", "add", f"{self.ul_b}/{self.plen}", "dev", "ul", *nodad, ns=hvb)
        sh("ip", "link", "set", "ul", "up", ns=hva)
        sh("ip", "link", "set", "ul", "up", ns=hvb)
        # VMs
        for vm, hv, ip, mac in ((vma, hva, self.vm_a, "02:0a:00:00:00:01"),
                                (vmb, hvb, self.vm_b, "02:0b:00:00:00:01")):
            sh("ip", "link", "add", "eth0", "netns", vm, "address", mac, "mtu", self.vm_mtu,
               "type", "veth", "peer", "vport", "netns", hv)
            sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=vm)
            sh("ip", "link", "set", "eth0", "up", ns=vm)
            sh("ip", "link", "set", "vport", "up", ns=hv)
            # OVS's AF_PACKET netdev takes no offloaded (partial-checksum,
            # GSO) frames; give both switches plain ones.
            sh("ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", ns=vm,
               check=False)
        # pyvswitch in hv-a
        self.pvs = self._pvs(hva, "pvs", self.gnv_a or {
            "remote_ip": self.ul_b, "local_ip": self.ul_a, "key": "flow", "csum": "true"})
        if self.native:
            self.pvs.vsctl("add-br", "br-phy")
            self.pvs.vsctl("add-port", "br-phy", "ul")
            sh("ip", "addr", "add", f"{self.ul_a}/{self.plen}", "dev", "br-phy", *nodad, ns=hva)
            sh("ip", "link", "set", "br-phy", "up", ns=hva)
        if self.peer == "pvs":
            self.pvs_b = self._pvs(hvb, "pvs_b", self.gnv_b or {
                "remote_ip": self.ul_a, "key": "flow", "csum": "true"})
            return self
        # OVS in hv-b
        self.ovs = OvsSwitch(rundir=f"{self.tmp}/ovs", netns=hvb).start()
        o = self.ovs.vsctl
        o("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev")
        o("add-port", "br-int", "vport", "--", "set", "Interface", "vport", "ofport_request=1")
        o("add-port", "br-int", "gnv0", "--", "set", "Interface", "gnv0", "type=geneve",
          "ofport_request=2", f"options:remote_ip={self.ul_a}", "options:key=flow",
          "options:csum=true")
        o("add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev")
        o("add-port", "br-phy", "ul")
        sh("ip", "addr", "add", f"{self.ul_b}/{self.plen}", "dev", "br-phy", *nodad, ns=hvb)
        sh("ip", "link", "set", "br-phy", "up", ns=hvb)
        deadline = time.monotonic() + 10
        prefix = self.ul_a.rsplit(".", 1)[0] if self.family == 4 else self.ul_a.rsplit(":", 2)[0]
        while prefix not in self.ovs.appctl("ovs/route/show"):
            if time.monotonic() > deadline:
                raise AssertionError("OVS did not learn the underlay route:\n"
                                     + self.ovs.appctl("ovs/route/show"))
            time.sleep(0.2)
        return self

    def flows(self, send_a=MARK_A, send_b=MARK_B):
        """Options decide forwarding: each side sends a mark (its own unless
        told otherwise), and accepts only the other side's own mark."""
        for sw, send, accept in ((self.pvs, send_a, MARK_B), (self.sw_b, send_b, MARK_A)):
            sw.ofctl("del-flows", "br-int")
            sw.ofctl("add-flow", "br-int",
                     f"priority=10,in_port=2,tun_metadata0={accept:#x},actions=output:1")
            sw.ofctl("add-flow", "br-int", "priority=5,in_port=2,actions=drop")
            sw.ofctl("add-flow", "br-int",
                     f"priority=10,in_port=1,actions=set_field:{send:#x}->tun_metadata0,"
                     "set_field:0x77->tun_id,output:2")

    def ensure_tlv_map(self):
        for sw in (self.pvs, self.sw_b):
            if "0x102" not in sw.ofctl("dump-tlv-map", "br-int").stdout:
                sw.ofctl("add-tlv-map", "br-int", TLV)

    def converge(self, src_vm, dst_ip, timeout=10.0) -> bool:
        """Wait until one ping gets through: the first packets each way
        resolve ARP in the VMs and OVS's tunnel neighbour table (OVS drops
        the packet that triggers its ARP request)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sh("ping", "-c", "1", "-W", "1", dst_ip, ns=self.ns[src_vm],
                  check=False).returncode == 0:
                return True
        return False

    def ping(self, src_vm, dst_ip, count=3):
        return sh("ping", "-c", count, "-i", "0.2", "-W", "2", dst_ip, ns=self.ns[src_vm],
                  check=False, timeout=count * 3 + 10)

    def close(self):
        for what in (self.pvs, self.pvs_b, self.ovs):
            if what is not None:
                try:
                    what.stop()
                except Exception:
                    pass
        for ns in self.made_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", self.tmp])

    def logs(self) -> str:
        out = ""
        for name, d in (("hv-a", self.pvs), ("hv-b", self.pvs_b)):
            if d is None:
                continue
            out += f"--- pyvswitch log {name}\n" + d.log_tail()
            try:
                out += d.appctl("tnl/geneve/show") + d.appctl("dpctl/dump-flows")
            except Exception:
                pass
        if self.ovs is not None:
            out += "--- ovs-vswitchd log\n" + self.ovs.log_tail()
        return out


@pytest.fixture(scope="module")
def overlay():
    ov = Overlay()
    try:
        ov.build()
        yield ov
    finally:
        ov.close()
        assert not any(ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                            text=True).stdout for ns in ov.made_ns)


def test_ping_and_tcp_both_ways_with_normal(overlay):
    for sw in (overlay.pvs, overlay.ovs):
        sw.ofctl("del-flows", "br-int")
        sw.ofctl("add-flow", "br-int", "actions=NORMAL")
    for src, dst in (("vma", overlay.vm_b), ("vmb", overlay.vm_a)):
        assert overlay.converge(src, dst), overlay.logs()
        p = overlay.ping(src, dst)
        assert p.returncode == 0 and " 0% packet loss" in p.stdout, \
            p.stdout + p.stderr + overlay.logs()
    for server, client, dst in (("vmb", "vma", overlay.vm_b), ("vma", "vmb", overlay.vm_a)):
        tcp_transfer(overlay, server, client, dst, 200_000)


def tcp_transfer(ov, server_vm, client_vm, dst_ip, nbytes):
    srv = subprocess.Popen(
        ["ip", "netns", "exec", ov.ns[server_vm], sys.executable, "-c", textwrap.dedent("""
            import hashlib, socket
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 5001)); s.listen(1); s.settimeout(30)
            c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
            while True:
                b = c.recv(65536)
                if not b: break
                h.update(b); n += len(b)
            c.sendall(h.hexdigest().encode()); c.close()
            print(n)
        """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        cli = sh(sys.executable, "-c", textwrap.dedent(f"""
            import hashlib, os, socket
            data = os.urandom({nbytes})
            s = socket.create_connection(("{dst_ip}", 5001), timeout=30)
            s.sendall(data); s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                b = s.recv(100)
                if not b: break
                got += b
            assert got.decode() == hashlib.sha256(data).hexdigest(), got
            print("ok")
        """), ns=ov.ns[client_vm], check=False, timeout=60)
        out, err = srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    assert cli.returncode == 0 and cli.stdout.strip() == "ok", cli.stdout + cli.stderr + ov.logs()
    assert int(out) == nbytes, out + err


def test_tlv_options_set_on_one_side_are_matched_on_the_other(overlay):
    overlay.ensure_tlv_map()
    overlay.flows()
    for src, dst in (("vma", overlay.vm_b), ("vmb", overlay.vm_a)):
        assert overlay.converge(src, dst), overlay.logs()
        p = overlay.ping(src, dst)
        assert p.returncode == 0, p.stdout + p.stderr + overlay.logs()
    tcp_transfer(overlay, "vmb", "vma", overlay.vm_b, 100_000)
    # Both sides' "accept" rules were hit (OVS by rule counters, pyvswitch
    # by megaflows that match its mark).
    dump = overlay.ovs.ofctl("dump-flows", "br-int").stdout
    hit = [ln for ln in dump.splitlines() if f"tun_metadata0={MARK_A:#x}" in ln]
    assert hit and "n_packets=0," not in hit[0], dump
    mf = overlay.pvs.appctl("dpctl/dump-flows")
    assert f"tun_metadata0={MARK_B:#x}" in mf, mf
    # A wrong mark from pyvswitch is not matched by OVS (and vice versa).
    overlay.flows(send_a=BAD)
    p = overlay.ping("vma", overlay.vm_b, count=2)
    assert p.returncode != 0, p.stdout
    overlay.flows(send_b=BAD)
    p = overlay.ping("vmb", overlay.vm_a, count=2)
    assert p.returncode != 0, p.stdout
    overlay.flows()
    p = overlay.ping("vma", overlay.vm_b, count=2)
    assert p.returncode == 0, p.stdout + overlay.logs()


def _accept_hits(ov) -> int:
    dump = ov.ovs.ofctl("dump-flows", "br-int").stdout
    (line,) = [ln for ln in dump.splitlines() if f"tun_metadata0={MARK_A:#x}" in ln]
    return int(line.split("n_packets=")[1].split(",")[0])


def test_packet_out_to_a_tunnel_port(overlay):
    """A controller's packet-out to the geneve port is encapsulated too (in
    Python when the tunnel goes through the host stack), options included."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    overlay.ensure_tlv_map()
    overlay.flows()
    assert overlay.converge("vma", overlay.vm_b), overlay.logs()
    before = _accept_hits(overlay)
    frame = bytes(Ether(src="02:0a:00:00:00:01", dst="02:0b:00:00:00:01")
                  / IP(src=overlay.vm_a, dst=overlay.vm_b) / ICMP())
    overlay.pvs.ofctl("packet-out", "br-int", "in_port=LOCAL,packet=" + frame.hex()
                      + f",actions=set_field:{MARK_A:#x}->tun_metadata0,"
                      "set_field:0x77->tun_id,output:2")
    deadline = time.monotonic() + 5
    while _accept_hits(overlay) == before:
        assert time.monotonic() < deadline, overlay.logs()
        time.sleep(0.1)


@contextmanager
def underlay_capture(ov, pcap: str, hv: str = "hva"):
    """tcpdump of GENEVE on a hypervisor's underlay veth while the block
    runs (what pyvswitch's fast path sends bypasses hv-a's own taps: capture
    those on hv-b)."""
    require_tools("tcpdump", package="tcpdump")
    cap = subprocess.Popen(["ip", "netns", "exec", ov.ns[hv], "tcpdump", "-U",
                            "--immediate-mode", "-s", "0", "-i", "ul", "-w", pcap,
                            "udp", "port", "6081"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        line = cap.stderr.readline()   # "listening on ul ..." once capturing
        assert b"listening" in line, line
        time.sleep(0.2)
        yield
        time.sleep(0.5)
    finally:
        cap.terminate()
        cap.wait(timeout=10)


TSHARK_FIELDS = ("ip.src", "ipv6.src", "geneve.version", "geneve.vni", "geneve.proto_type",
                 "geneve.flags.oam", "geneve.flags.critical", "geneve.option.class",
                 "geneve.option.type", "geneve.option.length", "geneve.option.unknown.data",
                 "udp.dstport", "udp.checksum.status", "ip.checksum.status", "_ws.malformed",
                 "_ws.expert.severity", "icmp.type")


def tshark_geneve(pcap: str) -> list[dict]:
    """Each GENEVE packet of a capture as Wireshark decodes it (``tshark -r
    PCAP -d udp.port==6081,geneve``, checksums verified): the outer
    header's value of every field in TSHARK_FIELDS."""
    require_tools("tshark", package="tshark")
    p = subprocess.run(["tshark", "-r", pcap, "-d", "udp.port==6081,geneve",
                        "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                        "-Y", "geneve", "-T", "fields", "-E", "separator=|",
                        *[x for f in TSHARK_FIELDS for x in ("-e", f)]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = []
    for line in p.stdout.splitlines():
        vals = line.split("|")
        assert len(vals) == len(TSHARK_FIELDS), line
        rows.append({f: v.split(",")[0] if f not in ("_ws.expert.severity",) else v
                     for f, v in zip(TSHARK_FIELDS, vals)})
    return rows


def check_tshark(pcap: str, marks: dict, vni: int = 0x77) -> None:
    """Well-formed GENEVE with the OVN option, good outer checksums, and on
    ICMP the option value each sender sets (``marks``: outer src -> mark)."""
    rows = tshark_geneve(pcap)
    assert rows, "tshark found no GENEVE"
    seen = {}
    for r in rows:
        assert (r["geneve.version"], int(r["geneve.vni"], 16), r["geneve.proto_type"]) == \
            ("0", vni, "0x6558"), r
        assert r["geneve.flags.critical"] in ("1", "True") and r["udp.dstport"] == "6081", r
        assert (r["geneve.option.class"], r["geneve.option.type"], r["geneve.option.length"]) \
            == ("0x0102", "0x80", "8"), r
        v6 = bool(r["ipv6.src"])     # outer IPv6 (the VMs have no IPv6)
        assert r["udp.checksum.status"] == "1", r
        assert v6 or r["ip.checksum.status"] in ("1", "2"), r
        assert r["_ws.malformed"] == "", r
        if r["icmp.type"]:
            seen[r["ipv6.src"] if v6 else r["ip.src"]] = int(r["geneve.option.unknown.data"], 16)
    assert seen == marks, (seen, rows)


def test_capture_shows_wellformed_geneve_with_options(overlay):
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import ARP
    from scapy.utils import rdpcap

    overlay.ensure_tlv_map()
    overlay.flows()
    pcap = os.path.join(overlay.tmp, "underlay.pcap")
    assert overlay.converge("vma", overlay.vm_b), overlay.logs()
    with underlay_capture(overlay, pcap):
        p = overlay.ping("vma", overlay.vm_b, count=3)
        assert p.returncode == 0, p.stdout + overlay.logs()
    check_tshark(pcap, {overlay.ul_a: MARK_A, overlay.ul_b: MARK_B})
    pkts = [p for p in rdpcap(pcap) if GENEVE in p]
    seen = {}
    for p in pkts:
        ip, udp, g = p[IP], p[UDP], p[GENEVE]
        assert g.version == 0 and g.proto == 0x6558 and g.vni == 0x77
        assert g.optionlen == 2 and g.critical == 1
        (opt,) = g.options
        assert (opt.classid, opt.type, opt.length) == (0x0102, 0x80, 1)
        assert udp.dport == 6081 and udp.len == len(udp)
        assert udp.chksum != 0                       # csum=true on both sides
        chk = IP(bytes(ip))
        del chk[UDP].chksum, chk.chksum
        chk = IP(bytes(chk))
        assert (chk.chksum, chk[UDP].chksum) == (ip.chksum, udp.chksum), p.summary()
        assert ICMP in g.payload or ARP in g.payload, g.summary()
        if ICMP in g.payload:
            seen[ip.src] = int.from_bytes(opt.data, "big")
    assert seen == {overlay.ul_a: MARK_A, overlay.ul_b: MARK_B}, (seen, [p.summary() for p in pkts])


@pytest.mark.parametrize("family", [4, 6])
def test_native_tunnelling_fast_path_encap_with_ovs(family):
    """hv-a in OVS's own layout (underlay NIC on br-phy, the address on
    br-phy's internal port): once ARP resolves, pyvswitch encapsulates in the
    fast path (a TunnelPush with a prebuilt header out of the NIC's datapath
    port, cached as a megaflow), and OVS still decapsulates and matches;
    over an IPv4 and an IPv6 underlay."""
    ov = Overlay(native=True, family=family)
    try:
        ov.build()
        ov.ensure_tlv_map()
        ov.flows()
        assert ov.converge("vma", ov.vm_b), ov.logs()
        deadline = time.monotonic() + 10
        while "native: out dp_port" not in ov.pvs.appctl("tnl/geneve/show"):
            assert time.monotonic() < deadline, ov.logs()
            time.sleep(0.2)
        for src, dst in (("vma", ov.vm_b), ("vmb", ov.vm_a)):
            p = ov.ping(src, dst)
            assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + ov.logs()
        tcp_transfer(ov, "vma", "vmb", ov.vm_a, 200_000)
        flows = ov.pvs.appctl("dpctl/dump-flows")
        assert "tnl_push(" in flows, flows
        fast = [ln for ln in flows.splitlines() if "tnl_push(" in ln]
        assert any("packets:0," not in ln for ln in fast), flows
        dump = ov.ovs.ofctl("dump-flows", "br-int").stdout
        hit = [ln for ln in dump.splitlines() if f"tun_metadata0={MARK_A:#x}" in ln]
        assert hit and "n_packets=0," not in hit[0], dump
        # Receive: the underlay NIC's megaflow decapsulates (tnl_pop, in
        # Cython), then the tunnel port's megaflow (matching OVS's option)
        # forwards; the host-stack UDP socket sees nothing once cached.
        pops = [ln for ln in flows.splitlines() if "tnl_pop(" in ln]
        assert any("packets:0," not in ln for ln in pops), flows + ov.logs()
        assert any(f"tun_metadata0={MARK_B:#x}" in ln and "packets:0," not in ln
                   for ln in flows.splitlines()), flows
        show = ov.pvs.appctl("tnl/geneve/show")
        before = _native_rx(show), _socket_rx(show)
        pcap = os.path.join(ov.tmp, "native.pcap")
        with underlay_capture(ov, pcap, hv="hvb"):
            p = ov.ping("vmb", ov.vm_a, count=5)
            assert p.returncode == 0, p.stdout + ov.logs()
        show = ov.pvs.appctl("tnl/geneve/show")
        assert _native_rx(show) - before[0] >= 5 and _socket_rx(show) == before[1], show
        # what the Cython encapsulation put on the wire, as Wireshark reads it
        check_tshark(pcap, {ov.ul_a: MARK_A, ov.ul_b: MARK_B})
        # an outer packet above the underlay MTU is dropped and counted
        sh("ip", "link", "set", "ul", "mtu", "1300", ns=ov.ns["hva"])
        deadline = time.monotonic() + 5
        while "mtu 1300" not in ov.pvs.appctl("tnl/geneve/show"):
            assert time.monotonic() < deadline, ov.pvs.appctl("tnl/geneve/show")
            time.sleep(0.2)
        before = _native(ov.pvs.appctl("tnl/geneve/show"), "tx_too_big")
        p = sh("ping", "-c", "2", "-i", "0.2", "-W", "1", "-s", "1300", ov.vm_b,
               ns=ov.ns["vma"], check=False)
        assert p.returncode != 0
        assert _native(ov.pvs.appctl("tnl/geneve/show"), "tx_too_big") - before >= 2
        p = sh("ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", "1100", ov.vm_b,
               ns=ov.ns["vma"], check=False)
        assert p.returncode == 0, p.stdout + ov.logs()
    finally:
        ov.close()


def _native(show: str, counter: str) -> int:
    (line,) = [ln for ln in show.splitlines() if ln.startswith("native (tnl_pop)")]
    return int(line.split(f" {counter}:")[1].split()[0])


def _native_rx(show: str) -> int:
    return _native(show, "rx_packets")


def _socket_rx(show: str) -> int:
    return sum(int(ln.split("rx_packets:")[1].split()[0]) for ln in show.splitlines()
               if ln.startswith("endpoint ") and "rx_packets:" in ln)


def test_native_send_with_remote_ip_flow():
    """``remote_ip=flow`` in OVS's layout: the remote comes from ``tun_dst``
    set by the rules; once the daemon has resolved that destination, the
    fast path encapsulates for it too (one prebuilt header per destination,
    the megaflow exact on tun_dst), and receive is tnl_pop as for fixed ports."""
    ov = Overlay(native=True, gnv_a={"remote_ip": "flow", "key": "flow", "csum": "true"})
    try:
        ov.build()
        ov.ensure_tlv_map()
        ov.flows()
        ov.pvs.ofctl("add-flow", "br-int",
                     f"priority=10,in_port=1,actions=set_field:{MARK_A:#x}->tun_metadata0,"
                     f"set_field:{ov.ul_b}->tun_dst,set_field:0x77->tun_id,output:2")
        assert ov.converge("vma", ov.vm_b), ov.logs()
        deadline = time.monotonic() + 10
        while "native: 1 flow destinations" not in ov.pvs.appctl("tnl/geneve/show"):
            assert time.monotonic() < deadline, ov.logs()
            time.sleep(0.2)
        for src, dst in (("vma", ov.vm_b), ("vmb", ov.vm_a)):
            p = ov.ping(src, dst)
            assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + ov.logs()
        flows = ov.pvs.appctl("dpctl/dump-flows")
        push = [ln for ln in flows.splitlines() if "tnl_push(" in ln and "packets:0," not in ln]
        assert push and all(f"dst={ov.ul_b}" in ln for ln in push), flows
        assert any("tnl_pop(" in ln and "packets:0," not in ln for ln in flows.splitlines()), flows
        # without tunnel ports, br-phy's internal port is a plain port again
        flow = f"in_port=1,udp,nw_dst={ov.ul_a},tp_dst=6081"
        assert "tnl_pop" in ov.pvs.appctl("ofproto/trace", "br-phy", flow)
        ov.pvs.vsctl("del-port", "br-int", "gnv0")
        deadline = time.monotonic() + 5
        while "endpoint br-phy" in ov.pvs.appctl("tnl/geneve/show"):
            assert time.monotonic() < deadline, ov.pvs.appctl("tnl/geneve/show")
            time.sleep(0.2)
        trace = ov.pvs.appctl("ofproto/trace", "br-phy", flow)
        assert "tnl_pop" not in trace, trace
    finally:
        ov.close()
