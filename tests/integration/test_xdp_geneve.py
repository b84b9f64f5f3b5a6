"""GENEVE through the XDP flow cache: two pyvswitch hypervisors in OVS's
native-tunnelling layout (the underlay veth on br-phy, the tunnel address on
br-phy's internal port, the VM and the geneve port on br-int), every bridge
``datapath_type=xdp``.  Once a flow is established, its packets are
encapsulated (tnl_push) and decapsulated (tnl_pop, then the inner megaflow)
in the kernel in both directions: the XDP megaflow counters rise, the
userspace ones and the Cython tunnel counters do not.  The wire between the
hypervisors is a Linux bridge in a namespace of its own (XDP-redirected
frames bypass packet taps on the hypervisors' ends), where tshark and scapy
decode the GENEVE, options included.

    vm-a --veth-- [hv-a: br-int(vport, gnv0)  br-phy(ul)] --ul-- [wire: br0] --ul-- [hv-b ...] -- vm-b
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tempfile
import time

import pytest

from tests.capabilities import require_tools
from tests.integration.test_geneve_interop import sh, tshark_geneve
from vswitch.process import DaemonProcess

TLV = "{class=0x0102,type=0x80,len=4}->tun_metadata0"
MARK = {"hva": 0xA1A2A3A4, "hvb": 0xB1B2B3B4}
VNI = 0x77
MAC = {"vma": "02:0a:00:00:00:01", "vmb": "02:0b:00:00:00:01"}


class XdpTunnels:
    def __init__(self):
        self.tag = secrets.token_hex(2)
        n = int(self.tag, 16) % 200 + 20
        self.ns = {k: f"xgn-{self.tag}-{k}" for k in ("hva", "hvb", "vma", "vmb", "wire")}
        self.ul = {"hva": f"10.97.{n}.1", "hvb": f"10.97.{n}.2"}
        self.vm = {"vma": "10.202.0.1", "vmb": "10.202.0.2"}
        self.tmp = tempfile.mkdtemp(prefix="xdp-geneve-")
        self.made: list[str] = []
        self.d: dict[str, DaemonProcess] = {}

    def build(self) -> "XdpTunnels":
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns, check=False)
        wire = self.ns["wire"]
        sh("ip", "link", "add", "br0", "type", "bridge", ns=wire)
        sh("ip", "link", "set", "br0", "up", ns=wire)
        for hv, vm in (("hva", "vma"), ("hvb", "vmb")):
            sh("ip", "link", "add", hv, "netns", wire, "type", "veth", "peer", "ul", "netns",
               self.ns[hv])
            sh("ip", "link", "set", hv, "master", "br0", ns=wire)
            sh("ip", "link", "set", hv, "up", ns=wire)
            sh("ip", "link", "set", "ul", "up", ns=self.ns[hv])
            sh("ip", "link", "add", "eth0", "netns", self.ns[vm], "address", MAC[vm], "mtu", 1400,
               "type", "veth", "peer", "vport", "netns", self.ns[hv])
            sh("ip", "addr", "add", f"{self.vm[vm]}/24", "dev", "eth0", ns=self.ns[vm])
            sh("ip", "link", "set", "eth0", "up", ns=self.ns[vm])
            sh("ip", "link", "set", "vport", "up", ns=self.ns[hv])
            sh("ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", ns=self.ns[vm],
               check=False)
        # Static neighbours: no ARP (which XDP leaves to userspace) while measuring.
        sh("ip", "neigh", "replace", self.vm["vmb"], "lladdr", MAC["vmb"], "dev", "eth0",
           ns=self.ns["vma"])
        sh("ip", "neigh", "replace", self.vm["vma"], "lladdr", MAC["vma"], "dev", "eth0",
           ns=self.ns["vmb"])
        for hv, other in (("hva", "hvb"), ("hvb", "hva")):
            os.makedirs(f"{self.tmp}/{hv}")
            d = self.d[hv] = DaemonProcess(rundir=f"{self.tmp}/{hv}", netns=self.ns[hv]).start()
            d.vsctl("add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=xdp")
            d.vsctl("add-port", "br-phy", "ul")
            sh("ip", "addr", "add", f"{self.ul[hv]}/24", "dev", "br-phy", ns=self.ns[hv])
            sh("ip", "link", "set", "br-phy", "up", ns=self.ns[hv])
            d.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=xdp")
            d.vsctl("add-port", "br-int", "vport", "--", "set", "Interface", "vport",
                    "ofport_request=1")
            d.vsctl("add-port", "br-int", "gnv0", "--", "set", "Interface", "gnv0",
                    "type=geneve", "ofport_request=2", f"options:remote_ip={self.ul[other]}",
                    f"options:local_ip={self.ul[hv]}", "options:key=flow")
            d.ofctl("add-tlv-map", "br-int", TLV)
            d.ofctl("del-flows", "br-int")
            d.ofctl("add-flow", "br-int", f"priority=10,in_port=1,actions=set_field:"
                    f"{MARK[hv]:#x}->tun_metadata0,set_field:{VNI:#x}->tun_id,output:2")
            d.ofctl("add-flow", "br-int", f"priority=10,in_port=2,tun_id={VNI:#x},"
                    f"tun_metadata0={MARK[other]:#x},actions=output:1")
            d.ofctl("add-flow", "br-int", "priority=5,in_port=2,actions=drop")
        for d in self.d.values():
            deadline = time.monotonic() + 15
            while "native: out dp_port" not in d.appctl("tnl/geneve/show"):
                assert time.monotonic() < deadline, d.appctl("tnl/geneve/show") + d.log_tail()
                time.sleep(0.2)
        return self

    def ping(self, count: int, interval: float = 0.2, timeout: float = 2):
        return sh("ping", "-c", count, "-i", interval, "-W", timeout, self.vm["vmb"],
                  ns=self.ns["vma"], check=False, timeout=count * (interval + 1) + 20)

    def counters(self, hv: str) -> dict:
        """Kernel megaflow packets, userspace megaflow packets (the tunnel
        ones: their key or actions name a tunnel), Cython tnl_push/tnl_pop."""
        d = self.d[hv]
        kernel = _packets(d.appctl("dpctl/dump-flows", "--kernel"))
        user = _packets("\n".join(ln for ln in d.appctl("dpctl/dump-flows").splitlines()
                                  if "tnl_" in ln or "tun_" in ln))
        (native,) = [ln for ln in d.appctl("tnl/geneve/show").splitlines()
                     if ln.startswith("native (tnl_pop)")]
        c = dict((k, int(v)) for k, v in re.findall(r"(\w+):(\d+)", native))
        return {"kernel": kernel, "user": user, "tnl_pop": c["rx_packets"],
                "tnl_push": c["tx_packets"]}

    def logs(self) -> str:
        return "".join(f"--- {hv}\n{d.appctl('dpctl/dump-flows', '--kernel', check=False)}"
                       f"{d.appctl('dpctl/dump-flows', check=False)}{d.log_tail()}"
                       for hv, d in self.d.items())

    def close(self):
        for d in self.d.values():
            try:
                d.stop()
            except Exception:
                pass
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", self.tmp])


def _packets(dump: str) -> int:
    return sum(int(v) for v in re.findall(r"packets:(\d+)", dump))


@pytest.fixture(scope="module")
def tunnels():
    t = XdpTunnels()
    try:
        yield t.build()
    finally:
        t.close()


def _converge(t: XdpTunnels) -> None:
    """Until a few round trips pass with no userspace work on either side:
    the first packets upcall, and a native route resolved a moment later
    changes the tnl_push header, which the revalidator re-installs."""
    deadline = time.monotonic() + 15
    while t.ping(1, timeout=1).returncode != 0:
        assert time.monotonic() < deadline, t.logs()
    while True:
        before = {hv: t.counters(hv) for hv in t.d}
        assert t.ping(5, interval=0.05).returncode == 0, t.logs()
        after = {hv: t.counters(hv) for hv in t.d}
        if all((a["user"], a["tnl_pop"], a["tnl_push"]) == (b["user"], b["tnl_pop"], b["tnl_push"])
               for a, b in ((after[hv], before[hv]) for hv in t.d)):
            return
        assert time.monotonic() < deadline, (before, after, t.logs())


def test_established_tunnel_flow_runs_in_xdp_both_ways_with_no_upcall(tunnels):
    t = tunnels
    _converge(t)
    before = {hv: t.counters(hv) for hv in t.d}
    n = 40
    p = t.ping(n, interval=0.02)
    assert p.returncode == 0 and f"{n} received" in p.stdout, p.stdout + t.logs()
    time.sleep(0.3)
    after = {hv: t.counters(hv) for hv in t.d}
    for hv in t.d:
        b, a = before[hv], after[hv]
        # each side pushes n (requests or replies) and pops n, then runs the
        # inner megaflow: 3 kernel megaflow hits per round trip and side
        assert a["kernel"] - b["kernel"] >= 3 * n, (hv, b, a, t.logs())
        assert (a["user"], a["tnl_pop"], a["tnl_push"]) == \
            (b["user"], b["tnl_pop"], b["tnl_push"]), (hv, b, a, t.logs())
    kdump = t.d["hva"].appctl("dpctl/dump-flows", "--kernel")
    assert "tnl_push(" in kdump and "tnl_pop(" in kdump, kdump


def test_wire_geneve_decodes_with_the_options(tunnels):
    """tshark and scapy on the wire: GENEVE with the VNI and each side's
    option value, a good IPv4 header checksum, UDP checksum off."""
    require_tools("tcpdump", package="tcpdump")
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import IP, UDP
    from scapy.utils import rdpcap

    t = tunnels
    _converge(t)
    pcap = os.path.join(t.tmp, "wire.pcap")
    cap = subprocess.Popen(["ip", "netns", "exec", t.ns["wire"], "tcpdump", "-U",
                            "--immediate-mode", "-s", "0", "-i", "br0", "-w", pcap,
                            "udp", "port", "6081"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert b"listening" in cap.stderr.readline()
        time.sleep(0.2)
        before = t.counters("hva")
        assert t.ping(4, interval=0.05).returncode == 0, t.logs()
        after = t.counters("hva")
        time.sleep(0.5)
    finally:
        cap.terminate()
        cap.wait(timeout=10)
    assert after["tnl_push"] == before["tnl_push"]     # these were pushed by XDP
    rows = tshark_geneve(pcap)
    assert len(rows) >= 8, rows
    seen = {}
    for r in rows:
        assert (r["geneve.version"], int(r["geneve.vni"], 16), r["geneve.proto_type"]) == \
            ("0", VNI, "0x6558"), r
        assert (r["geneve.option.class"], r["geneve.option.type"], r["geneve.option.length"]) \
            == ("0x0102", "0x80", "8"), r
        assert r["ip.checksum.status"] in ("1", "2") and r["_ws.malformed"] == "", r
        seen[r["ip.src"]] = int(r["geneve.option.unknown.data"], 16)
    assert seen == {t.ul["hva"]: MARK["hva"], t.ul["hvb"]: MARK["hvb"]}, rows
    for pkt in (p for p in rdpcap(pcap) if GENEVE in p):
        assert pkt[UDP].chksum == 0 and 32768 <= pkt[UDP].sport <= 60999
        assert pkt[GENEVE].vni == VNI and pkt[GENEVE].options[0].classid == 0x0102
        assert pkt[IP].len == len(pkt[IP])
