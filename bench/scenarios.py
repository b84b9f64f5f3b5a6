"""Systems under test on one topology: h1 → switch → h2, UDP at Mpps.

Every system wires the same two hosts (namespaces with a veth each) and
forwards h1's traffic to h2; only what sits between the root-side veth ends
changes.  The generator (`bench.trafgen`, XDP live frames, N flows) runs in
h1 pinned to CPU 0, the switch is pinned to CPU 1, and h2 drops frames in
XDP and counts them with the veth's receive counter, so the figure is what
the switch delivered, not what was offered.  Where the switch reports its own
forwarding count, the run records it beside ours as a sanity check.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

from pyroute2 import IPRoute, NetNS

from bench.trafgen import XDP_DROP, _insn, load_xdp, load_xdp_return
from vswitch.process import DaemonProcess
from vswitch.topology import Host, Topology

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_CPU, SWITCH_CPU = 0, 1
HZ = os.sysconf("SC_CLK_TCK")


def _rx_packets(host: Host) -> int:
    return int(host.run("cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, IndexError):
                pass
    return total / HZ


def _pin(pid: int, cpu: int) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), {cpu})
        except OSError:
            pass


class System:
    """One switch under test: set up on a topology, then measured."""

    name = ""
    pids: list[int] = []

    def setup(self, topo: Topology) -> None: ...

    def teardown(self) -> None: ...

    def forwarded(self) -> int | None:
        """Packets the switch says it sent to h2, or None if it cannot say."""
        return None

    def flow_count(self) -> int | None:
        return None


class RawXdpRedirect(System):
    """The ceiling: XDP redirect from h1's cable straight into h2's."""

    name = "raw-xdp-redirect"

    def setup(self, topo: Topology) -> None:
        p1, p2 = topo.ports
        with IPRoute() as ipr:
            out_idx = ipr.link_lookup(ifname=p2)[0]
            self.idx = ipr.link_lookup(ifname=p1)[0]
            self.fd = load_xdp(_insn(0xb7, 1, imm=out_idx) + _insn(0xb7, 2, imm=0)
                               + _insn(0x85, imm=23) + _insn(0x95), b"pvs_raw")  # bpf_redirect
            ipr.link("set", index=self.idx, xdp_fd=self.fd)

    def teardown(self) -> None:
        with IPRoute() as ipr:
            ipr.link("set", index=self.idx, xdp_fd=-1)
        os.close(self.fd)


class LinuxBridge(System):
    name = "linux-bridge"

    def setup(self, topo: Topology) -> None:
        self.br = f"pvsbr{topo.tag}"
        subprocess.run(["ip", "link", "add", self.br, "type", "bridge"], check=True)
        for port in topo.ports:
            subprocess.run(["ip", "link", "set", port, "master", self.br], check=True)
        subprocess.run(["ip", "link", "set", self.br, "up"], check=True)

    def teardown(self) -> None:
        subprocess.run(["ip", "link", "del", self.br], check=False)


def dpdk_devargs(port_type: str, index: int, ifname: str) -> str | None:
    """``dpdk_af_packet``/``dpdk_af_xdp``: the vdev over ``ifname``."""
    if not port_type.startswith("dpdk_"):
        return None
    return f"net_{port_type[len('dpdk_'):]}{index},iface={ifname}"


class Pyvswitch(System):
    """pyvswitch with ``system`` (AF_PACKET), ``afxdp`` or DPDK ports
    (``dpdk_af_packet``, ``dpdk_af_xdp``: type=dpdk over that vdev),
    optionally behind the XDP flow cache (``datapath_type=xdp``, native
    mode); rules: ``normal`` (NORMAL), ``in_port`` (in_port→output),
    ``tp_src10k`` (10 000 rules on the UDP source port: one megaflow per
    flow).  ``pmds=2``: other_config:pmd-cpu-mask=0x3, a PMD thread on each
    core, one of them the generator's (the rest of the daemon stays on
    SWITCH_CPU)."""

    def __init__(self, rules: str = "normal", port_type: str = "system",
                 datapath_type: str = "netdev", pmds: int = 1):
        self.rules, self.port_type, self.datapath_type = rules, port_type, datapath_type
        self.pmds = pmds
        kind = "xdp" if datapath_type == "xdp" else (
            "afpacket" if port_type == "system" else port_type)
        self.name = f"pyvswitch-{kind}-{rules}" + (f"-{pmds}pmd" if pmds > 1 else "")

    def setup(self, topo: Topology) -> None:
        self.daemon = DaemonProcess(log_level="warning").start()
        self.pids = [self.daemon.proc.pid]
        _pin(self.daemon.proc.pid, SWITCH_CPU)
        self.br = f"pvsbr{topo.tag}"
        self.daemon.vsctl("add-br", self.br, "--", "set", "Bridge", self.br,
                          f"datapath_type={self.datapath_type}",
                          "other_config:xdp-mode=native")
        names = []
        for i, port in enumerate(topo.ports):
            devargs = dpdk_devargs(self.port_type, i, port)
            if devargs is None:
                names.append(port)
                self.daemon.vsctl("add-port", self.br, port, "--", "set", "Interface",
                                  port, f"type={self.port_type}")
            else:
                names.append(f"dpdk{i}")
                self.daemon.vsctl("set", "Open_vSwitch", ".", "other_config:dpdk-init=true")
                self.daemon.vsctl("add-port", self.br, names[-1], "--", "set", "Interface",
                                  names[-1], "type=dpdk", f"options:dpdk-devargs={devargs}")
        if self.rules == "in_port":
            self.daemon.ofctl("del-flows", self.br)
            self.daemon.ofctl("add-flow", self.br, "in_port=1,actions=output:2")
            self.daemon.ofctl("add-flow", self.br, "in_port=2,actions=output:1")
        elif self.rules == "tp_src10k":
            with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as f:
                f.write("priority=0,in_port=2,actions=output:1\n")
                for tp in range(10_000):
                    f.write(f"priority=100,udp,in_port=1,tp_src={tp},actions=output:2\n")
            try:
                self.daemon.ofctl("del-flows", self.br)
                self.daemon.ofctl("add-flows", self.br, "--bundle", f.name)
            finally:
                os.unlink(f.name)
        self.out_port = names[1]
        _pin(self.daemon.proc.pid, SWITCH_CPU)  # threads started since
        if self.pmds > 1:                       # pinned by the daemon itself
            self.daemon.vsctl("set", "Open_vSwitch", ".",
                              f"other_config:pmd-cpu-mask={(1 << self.pmds) - 1:#x}")

    def forwarded(self) -> int | None:
        show = self.daemon.appctl("dpctl/show")
        lines = show.splitlines()
        for i, line in enumerate(lines):
            if f": {self.out_port} " in line + " " and i + 1 < len(lines):
                stats = dict(kv.split(":") for kv in lines[i + 1].split())
                dp_port = int(line.split()[1].rstrip(":"))
                return int(stats["tx_packets"]) + self._kernel_forwarded(dp_port)
        return None

    def _kernel_forwarded(self, dp_port: int) -> int:
        if self.datapath_type != "xdp":
            return 0
        dump = self.daemon.appctl("dpctl/dump-flows", "--kernel")
        return sum(int(m.group(1)) for m in re.finditer(
            rf"packets:(\d+),.*actions:output:{dp_port}$", dump, re.M))

    def flow_count(self) -> int | None:
        """Distinct megaflows (each PMD lists its own under a header)."""
        return len({ln.split(", packets:")[0] for ln in
                    self.daemon.appctl("dpctl/dump-flows").splitlines() if "actions:" in ln})

    def teardown(self) -> None:
        self.daemon.cleanup()


class OpenVswitch(System):
    """Open vSwitch 3.1's userspace datapath, run privately (bench/ovs.py),
    with ``system`` (AF_PACKET) or ``afxdp`` ports, or OVS-DPDK (Debian's
    ovs-vswitchd-dpdk) with ``dpdk_af_packet`` ports: the same vdevs as
    pyvswitch's dpdk ports, its PMD thread busy-polling SWITCH_CPU.  No
    hugepages here: ``--no-huge --legacy-mem`` (OVS adds ``--in-memory``,
    which --no-huge's implied legacy memory refuses, unless it is given)."""

    def __init__(self, port_type: str = "system", rules: str = "normal"):
        self.port_type, self.rules = port_type, rules
        self.name = f"ovs-{'afpacket' if port_type == 'system' else port_type}-{rules}"

    def setup(self, topo: Topology) -> None:
        from bench.ovs import VSWITCHD_DPDK, OvsSwitch

        dpdk = {}
        if self.port_type.startswith("dpdk_"):
            dpdk = {"vswitchd": VSWITCHD_DPDK, "other_config": {
                "dpdk-init": "true", "pmd-cpu-mask": hex(1 << SWITCH_CPU),
                "dpdk-extra": f"--no-huge --legacy-mem -m 256 --no-pci --no-shconf "
                              f"--no-telemetry -l {SWITCH_CPU}"}}
        self.ovs = OvsSwitch(log_level="warn", **dpdk).start()
        self.br = f"pvsbr{topo.tag}"
        self.ovs.vsctl("add-br", self.br, "--", "set", "bridge", self.br,
                       "datapath_type=netdev")
        names = []
        for i, port in enumerate(topo.ports, 1):
            devargs = dpdk_devargs(self.port_type, i - 1, port)
            names.append(port if devargs is None else f"dpdk{i - 1}")
            self.ovs.vsctl("add-port", self.br, names[-1], "--", "set", "interface",
                           names[-1], f"ofport_request={i}",
                           *([f"type={self.port_type}"] if devargs is None else
                             ["type=dpdk", f"options:dpdk-devargs={devargs}"]))
        if self.rules == "in_port":
            self.ovs.ofctl("del-flows", self.br)
            self.ovs.ofctl("add-flow", self.br, "in_port=1,actions=output:2")
            self.ovs.ofctl("add-flow", self.br, "in_port=2,actions=output:1")
        self.pids = [self.ovs.procs["ovs-vswitchd"].pid]
        _pin(self.pids[0], SWITCH_CPU)
        self.out_port = topo.ports[1]

    def forwarded(self) -> int | None:
        out = self.ovs.ofctl("dump-ports", self.br, "2", version="OpenFlow13").stdout
        tx = out.split("tx pkts=", 1)
        return int(tx[1].split(",", 1)[0]) if len(tx) == 2 else None

    def flow_count(self) -> int | None:
        return len(self.ovs.appctl("dpctl/dump-flows").splitlines())

    def teardown(self) -> None:
        self.ovs.cleanup()


SYSTEMS = {s.name: s for s in (RawXdpRedirect(), LinuxBridge(),
                               OpenVswitch("system"), OpenVswitch("afxdp"),
                               OpenVswitch("dpdk_af_packet", "in_port"),
                               Pyvswitch("normal"), Pyvswitch("in_port"),
                               Pyvswitch("in_port", pmds=2),
                               Pyvswitch("tp_src10k"), Pyvswitch("in_port", "afxdp"),
                               Pyvswitch("in_port", "dpdk_af_packet"),
                               Pyvswitch("in_port", "dpdk_af_xdp"),
                               Pyvswitch("in_port", datapath_type="xdp"),
                               Pyvswitch("tp_src10k", datapath_type="xdp"))}


def _gro_on(ifname: str) -> None:
    # Native XDP_TX from the generator lands only in a peer with NAPI.
    subprocess.run(["ethtool", "-K", ifname, "gro", "on"], check=False,
                   capture_output=True)


class Bench:
    """Two hosts, a sink, and the systems measured one after another."""

    def __init__(self, size: int = 60):
        self.size = size
        self.topo = Topology()
        self.h1 = self.topo.add_host("h1", "10.77.0.1/24")
        self.h2 = self.topo.add_host("h2", "10.77.0.2/24")
        for port in self.topo.ports:
            _gro_on(port)
        # The sink: XDP_DROP on h2's eth0 (cheap counting, and NAPI for
        # redirects into it).
        self.sink = load_xdp_return(XDP_DROP, b"pvs_sink")
        with NetNS(self.h2.netns) as ns:
            ns.link("set", index=ns.link_lookup(ifname="eth0")[0], xdp_fd=self.sink)
        # Static neighbours: no ARP during runs.
        self.h1.run("ip", "neigh", "replace", self.h2.addr, "lladdr", self.h2.mac, "dev", "eth0")

    def close(self) -> None:
        try:
            with NetNS(self.h2.netns) as ns:
                ns.link("set", index=ns.link_lookup(ifname="eth0")[0], xdp_fd=-1)
        except Exception:
            pass
        os.close(self.sink)
        self.topo.close()

    def generate(self, seconds: float, flows: int) -> dict:
        p = self.h1.run(sys.executable, "-m", "bench.trafgen", "--ifname", "eth0",
                        "--src-mac", self.h1.mac, "--dst-mac", self.h2.mac,
                        "--src-ip", self.h1.addr, "--dst-ip", self.h2.addr,
                        "--size", str(self.size), "--seconds", str(seconds),
                        "--flows", str(flows), "--cpu", str(GEN_CPU),
                        cwd=TOP, timeout=seconds + 60)
        return json.loads(p.stdout)

    def measure(self, system: System, seconds: float, flows: int) -> dict:
        system.setup(self.topo)
        try:
            # Teach MAC-learning switches where h1 and h2 are.
            self.h2.ping(self.h1.addr, count=1, wait=1)
            self.generate(0.3, flows)  # warm-up: caches filled
            time.sleep(0.2)
            before, fwd0 = _rx_packets(self.h2), system.forwarded()
            cpu0 = _cpu_seconds(system.pids)
            gen = self.generate(seconds, flows)
            time.sleep(0.3)  # let queues drain into the counter
            got = _rx_packets(self.h2) - before
            fwd1 = system.forwarded()
            cpu = _cpu_seconds(system.pids) - cpu0
            return {"system": system.name, "flows": flows, "size": self.size + 4,
                    "offered_mpps": gen["mpps"], "mpps": got / gen["seconds"] / 1e6,
                    "sent": gen["sent"], "received": got,
                    "switch_reported": None if fwd0 is None else fwd1 - fwd0,
                    "switch_cpu": cpu / gen["seconds"] if system.pids else None,
                    "cached_flows": system.flow_count()}
        finally:
            system.teardown()
