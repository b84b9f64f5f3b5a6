"""Mpps through a GENEVE tunnel: encap on one hypervisor, decap on the other.

    vm-a --veth-- [hv-a: switch, gnv0] ==underlay veth== [hv-b: switch, gnv0] --veth-- vm-b

Both hypervisors run the same system under test: two pyvswitch daemons
(host-stack tunnel endpoint: Python encap and decap per packet; or native
tunnelling with the underlay on a pyvswitch br-phy: tnl_push and tnl_pop
in the Cython fast path, see ``vswitch/ports/geneve.py``; or the same with
every bridge ``datapath_type=xdp`` in native XDP mode: tnl_push and tnl_pop
in the XDP flow cache, ``fastpath/bpf``), or two private
Open vSwitch 3.1 userspace datapaths (``bench.ovs.OvsSwitch``, native
tunnelling: the underlay veth is a port of br-phy, which owns the address).
Both switches share one core (CPU 1), so a packet's encap and decap and its
four port crossings are all paid on it; on this 2-core VM shared with other
work the figures are noisy — compare systems within one run.
Rules are plain ``in_port=1 -> output:2`` / ``in_port=2 -> output:1`` with a
fixed VNI.  vm-a transmits 64-byte UDP with the XDP live-frames generator
(``bench.trafgen``, CPU 0), vm-b drops in XDP and its receive counter is the
figure; both switches are pinned to CPU 1.

    sudo .venv/bin/python -m bench.bench_geneve [--seconds 3] [--reps 3] [--systems pyvswitch,ovs]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

from bench.ovs import OvsSwitch
from vswitch.process import DaemonProcess

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_CPU, SWITCH_CPU = 0, 1
VNI = 77
MAC_A, MAC_B = "02:0a:00:00:00:01", "02:0b:00:00:00:01"


def sh(*argv, ns=None, check=True, timeout=60, **kw):
    argv = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    return subprocess.run(argv, check=check, capture_output=True, text=True,
                          timeout=timeout, **kw)


def _pin_tree(pid: int, cpu: int) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), {cpu})
        except OSError:
            pass


class Hypervisors:
    """The namespaces and cables; switches come and go per system."""

    def __init__(self):
        self.tag = secrets.token_hex(2)
        n = int(self.tag, 16) % 200 + 20
        self.ns = {k: f"gbn-{self.tag}-{k}" for k in ("hva", "hvb", "vma", "vmb")}
        self.ul = {"hva": f"10.98.{n}.1", "hvb": f"10.98.{n}.2"}
        self.vm_a, self.vm_b = "10.201.0.1", "10.201.0.2"
        self.tmp = tempfile.mkdtemp(prefix="bench-geneve-")
        self.made: list[str] = []
        self.sink = None
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self):
        from pyroute2 import NetNS

        from bench.trafgen import XDP_DROP, load_xdp_return
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns, check=False)
        sh("ip", "link", "add", "ul", "netns", self.ns["hva"], "type", "veth", "peer", "ul",
           "netns", self.ns["hvb"])
        for vm, hv, ip, mac in (("vma", "hva", self.vm_a, MAC_A), ("vmb", "hvb", self.vm_b, MAC_B)):
            sh("ip", "link", "add", "eth0", "netns", self.ns[vm], "address", mac, "mtu", 1400,
               "type", "veth", "peer", "vport", "netns", self.ns[hv])
            sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", ns=self.ns[vm])
            sh("ip", "link", "set", "eth0", "up", ns=self.ns[vm])
            sh("ip", "link", "set", "vport", "up", ns=self.ns[hv])
            sh("ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off",
               ns=self.ns[vm], check=False)
            # Native XDP_TX from the generator lands only in a peer with NAPI.
            sh("ethtool", "-K", "vport", "gro", "on", ns=self.ns[hv], check=False)
        sh("ip", "neigh", "replace", self.vm_b, "lladdr", MAC_B, "dev", "eth0", ns=self.ns["vma"])
        sh("ip", "neigh", "replace", self.vm_a, "lladdr", MAC_A, "dev", "eth0", ns=self.ns["vmb"])
        self.sink = load_xdp_return(XDP_DROP, b"pvs_gsink")
        with NetNS(self.ns["vmb"]) as ns:
            ns.link("set", index=ns.link_lookup(ifname="eth0")[0], xdp_fd=self.sink)

    def rx_packets(self) -> int:
        return int(sh("cat", "/sys/class/net/eth0/statistics/rx_packets",
                      ns=self.ns["vmb"]).stdout)

    def generate(self, seconds: float) -> dict:
        p = sh(sys.executable, "-m", "bench.trafgen", "--ifname", "eth0", "--src-mac", MAC_A,
               "--dst-mac", MAC_B, "--src-ip", self.vm_a, "--dst-ip", self.vm_b,
               "--size", "60", "--seconds", seconds, "--flows", "1", "--cpu", GEN_CPU,
               ns=self.ns["vma"], cwd=TOP, timeout=seconds + 60)
        return json.loads(p.stdout)

    def close(self):
        if self.sink is not None:
            os.close(self.sink)
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", self.tmp])


class PyvswitchPair:
    """``native=False``: the underlay veth is a plain host interface (tunnel
    traffic through the host stack both ways).  ``native=True``: OVS's
    layout, the underlay veth on a pyvswitch br-phy with the address on its
    internal port, so encapsulation and decapsulation run in the Cython
    fast path."""

    def __init__(self, native: bool = False, xdp: bool = False):
        self.native, self.xdp = native, xdp
        self.name = ("pyvswitch-native-xdp" if xdp else "pyvswitch-native" if native
                     else "pyvswitch-hoststack")

    def setup(self, hv: Hypervisors):
        self.daemons = []
        for side, other in (("hva", "hvb"), ("hvb", "hva")):
            sh("ip", "addr", "flush", "dev", "ul", ns=hv.ns[side])
            if not self.native:
                sh("ip", "addr", "replace", f"{hv.ul[side]}/24", "dev", "ul", ns=hv.ns[side])
            sh("ip", "link", "set", "ul", "up", ns=hv.ns[side])
            rundir = tempfile.mkdtemp(prefix=f"{self.name}-{side}-", dir=hv.tmp)
            d = DaemonProcess(rundir=rundir, log_level="warning", netns=hv.ns[side]).start()
            self.daemons.append(d)
            dp_type = (["--", "set", "Bridge", "BR", "datapath_type=xdp",
                        "other_config:xdp-mode=native"] if self.xdp else [])
            if self.xdp:   # native XDP redirects into a veth need NAPI on its peer
                sh("ethtool", "-K", "eth0", "gro", "on", ns=hv.ns["vma" if side == "hva" else "vmb"],
                   check=False)
            if self.native:
                d.vsctl("add-br", "br-phy", *[a.replace("BR", "br-phy") for a in dp_type])
                d.vsctl("add-port", "br-phy", "ul")
                sh("ip", "addr", "replace", f"{hv.ul[side]}/24", "dev", "br-phy", ns=hv.ns[side])
                sh("ip", "link", "set", "br-phy", "up", ns=hv.ns[side])
            d.vsctl("add-br", "br-int", *[a.replace("BR", "br-int") for a in dp_type])
            d.vsctl("add-port", "br-int", "vport", "--", "set", "Interface", "vport",
                    "ofport_request=1")
            d.vsctl("add-port", "br-int", "gnv0", "--", "set", "Interface", "gnv0",
                    "type=geneve", "ofport_request=2", f"options:remote_ip={hv.ul[other]}",
                    f"options:local_ip={hv.ul[side]}", f"options:key={VNI}")
            d.ofctl("del-flows", "br-int")
            d.ofctl("add-flow", "br-int", "in_port=1,actions=output:2")
            d.ofctl("add-flow", "br-int", "in_port=2,actions=output:1")
        self.pids = [d.proc.pid for d in self.daemons]

    def teardown(self):
        for d in self.daemons:
            d.stop()


class OvsPair:
    name = "ovs-userspace"

    def setup(self, hv: Hypervisors):
        self.switches = []
        for side, other in (("hva", "hvb"), ("hvb", "hva")):
            sh("ip", "addr", "flush", "dev", "ul", ns=hv.ns[side])
            o = OvsSwitch(rundir=tempfile.mkdtemp(prefix=f"ovs-{side}-", dir=hv.tmp),
                          netns=hv.ns[side],
                          log_level="warn").start()
            self.switches.append(o)
            o.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev")
            o.vsctl("add-port", "br-int", "vport", "--", "set", "Interface", "vport",
                    "ofport_request=1")
            o.vsctl("add-port", "br-int", "gnv0", "--", "set", "Interface", "gnv0",
                    "type=geneve", "ofport_request=2", f"options:remote_ip={hv.ul[other]}",
                    f"options:key={VNI}")
            o.vsctl("add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev")
            o.vsctl("add-port", "br-phy", "ul")
            sh("ip", "addr", "replace", f"{hv.ul[side]}/24", "dev", "br-phy", ns=hv.ns[side])
            sh("ip", "link", "set", "br-phy", "up", ns=hv.ns[side])
            o.ofctl("del-flows", "br-int")
            o.ofctl("add-flow", "br-int", "in_port=1,actions=output:2")
            o.ofctl("add-flow", "br-int", "in_port=2,actions=output:1")
        self.pids = [o.procs["ovs-vswitchd"].pid for o in self.switches]

    def teardown(self):
        for o in self.switches:
            o.stop()


SYSTEMS = {s.name: s for s in (PyvswitchPair(), PyvswitchPair(native=True),
                               PyvswitchPair(native=True, xdp=True), OvsPair())}


def measure(hv: Hypervisors, system, seconds: float) -> dict:
    for side in ("hva", "hvb"):   # MACs of the previous system's devices are gone
        sh("ip", "neigh", "flush", "all", ns=hv.ns[side], check=False)
    system.setup(hv)
    try:
        for pid in system.pids:
            _pin_tree(pid, SWITCH_CPU)
        # Warm up: ARP on the underlay, native routes resolved, caches filled.
        for _ in range(20):
            if sh("ping", "-c", "1", "-W", "1", hv.vm_b, ns=hv.ns["vma"],
                  check=False).returncode == 0:
                break
        for d in getattr(system, "daemons", []) if getattr(system, "native", False) else []:
            deadline = time.monotonic() + 10
            while "native: out dp_port" not in d.appctl("tnl/geneve/show") \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
        hv.generate(0.3)
        time.sleep(0.3)
        for pid in system.pids:
            _pin_tree(pid, SWITCH_CPU)   # threads started since
        pops, xpops = _tnl_pop_rx(system), _xdp_pops(system)
        before = hv.rx_packets()
        gen = hv.generate(seconds)
        time.sleep(0.5)
        got = hv.rx_packets() - before
        r = {"system": system.name, "offered_mpps": gen["mpps"],
             "mpps": got / gen["seconds"] / 1e6, "sent": gen["sent"], "received": got}
        if pops is not None:   # how many the decapsulating side popped in Cython
            r["tnl_pop_rx"] = _tnl_pop_rx(system) - pops
        if xpops is not None:   # ... and in XDP
            r["xdp_pops"] = _xdp_pops(system) - xpops
        return r
    finally:
        system.teardown()


def _xdp_pops(system) -> int | None:
    """hv-b's XDP tnl_pop megaflow hits (datapath_type=xdp), else None."""
    if not getattr(system, "xdp", False):
        return None
    dump = system.daemons[1].appctl("dpctl/dump-flows", "--kernel")
    return sum(int(ln.split("packets:")[1].split(",")[0]) for ln in dump.splitlines()
               if "tnl_pop(" in ln and "packets:" in ln)


def _tnl_pop_rx(system) -> int | None:
    """hv-b's datapath tnl_pop count (pyvswitch), None for other systems."""
    daemons = getattr(system, "daemons", None)
    if not daemons:
        return None
    show = daemons[1].appctl("tnl/geneve/show")
    line = next((ln for ln in show.splitlines() if ln.startswith("native (tnl_pop)")), "")
    return int(line.split("rx_packets:")[1].split()[0]) if "rx_packets:" in line else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--json", help="write the raw runs here")
    args = ap.parse_args(argv)
    systems = [SYSTEMS[s] for s in args.systems.split(",")]
    hv = Hypervisors()
    results = []
    try:
        for rep in range(args.reps):
            for s in systems:
                r = measure(hv, s, args.seconds)
                results.append(r)
                print(f"rep {rep + 1}: {r['system']}: {r['mpps']:.4f} Mpps "
                      f"(offered {r['offered_mpps']:.2f})"
                      + (f", decapsulated by tnl_pop: {r['tnl_pop_rx']}/{r['received']}"
                         if "tnl_pop_rx" in r else "")
                      + (f", by XDP tnl_pop: {r['xdp_pops']}" if "xdp_pops" in r else ""),
                      file=sys.stderr)
    finally:
        hv.close()
    print("| system (GENEVE encap -> decap, 64B UDP, 1 flow) | Mpps median (min-max) |")
    print("|---|---|")
    for s in systems:
        m = [r["mpps"] for r in results if r["system"] == s.name]
        print(f"| {s.name} | {statistics.median(m):.4f} ({min(m):.4f}-{max(m):.4f}) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
