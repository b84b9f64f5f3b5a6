"""Systems under test on one topology: h1 → switch → h2, 64-byte UDP.

Every scenario wires the same two hosts (namespaces with a veth each) and
forwards h1's traffic to h2; only what sits between the root-side veth ends
changes.  The generator (`bench.trafgen`, XDP live frames) runs in h1 pinned
to CPU 0, the switch is pinned to CPU 1, and h2 drops frames in XDP and
counts them with the veth's receive counter, so the figure is what the
switch delivered, not what was offered.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

from pyroute2 import NetNS

from bench.trafgen import XDP_DROP, load_xdp_return
from vswitch.process import DaemonProcess
from vswitch.topology import Host, Topology

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_CPU, SWITCH_CPU = 0, 1


def _rx_packets(host: Host) -> int:
    return int(host.run("cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)


@contextlib.contextmanager
def xdp_sink(host: Host):
    """XDP_DROP on the host's eth0: cheap counting, and gives the veth NAPI."""
    fd = load_xdp_return(XDP_DROP, b"pvs_sink")
    with NetNS(host.netns) as ns:
        idx = ns.link_lookup(ifname="eth0")[0]
        ns.link("set", index=idx, xdp_fd=fd)
    try:
        yield
    finally:
        with NetNS(host.netns) as ns:
            ns.link("set", index=idx, xdp_fd=-1)
        os.close(fd)


def _gro_on(ifname: str) -> None:
    # Native XDP_TX from the generator lands only in a peer with NAPI.
    subprocess.run(["ethtool", "-K", ifname, "gro", "on"], check=False,
                   capture_output=True)


def measure(h1: Host, h2: Host, seconds: float, size: int = 60) -> dict:
    before = _rx_packets(h2)
    p = h1.run(sys.executable, "-m", "bench.trafgen", "--ifname", "eth0",
               "--src-mac", h1.mac, "--dst-mac", h2.mac, "--src-ip", h1.addr,
               "--dst-ip", h2.addr, "--size", str(size), "--seconds", str(seconds),
               "--cpu", str(GEN_CPU), cwd=TOP, timeout=seconds + 60)
    gen = json.loads(p.stdout)
    time.sleep(0.3)  # let queues drain into the counter
    got = _rx_packets(h2) - before
    return {"offered_mpps": gen["mpps"], "mpps": got / gen["seconds"] / 1e6,
            "sent": gen["sent"], "received": got}


@contextlib.contextmanager
def linux_bridge(topo: Topology):
    name = f"pvsbr{topo.tag}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        for port in topo.ports:
            subprocess.run(["ip", "link", "set", port, "master", name], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


@contextlib.contextmanager
def pyvswitch_afpacket(topo: Topology):
    with DaemonProcess(log_level="warning") as d:
        os.sched_setaffinity(d.proc.pid, {SWITCH_CPU})
        for t in os.listdir(f"/proc/{d.proc.pid}/task"):
            os.sched_setaffinity(int(t), {SWITCH_CPU})
        d.vsctl("add-br", f"pvsbr{topo.tag}")
        for port in topo.ports:
            d.vsctl("add-port", f"pvsbr{topo.tag}", port)
        yield


SCENARIOS = {
    "linux-bridge": linux_bridge,
    "pyvswitch-afpacket": pyvswitch_afpacket,
}


def run_scenario(name: str, seconds: float, reps: int, size: int = 60) -> dict:
    with Topology() as topo:
        h1 = topo.add_host("h1", "10.77.0.1/24")
        h2 = topo.add_host("h2", "10.77.0.2/24")
        for port in topo.ports:
            _gro_on(port)
        with SCENARIOS[name](topo):
            # Teach MAC-learning switches where h1 and h2 are.
            h1.ping(h2.addr, count=2, interval=0.2)
            with xdp_sink(h2):
                runs = [measure(h1, h2, seconds, size) for _ in range(reps)]
    return {"scenario": name, "size": size + 4,
            "mpps": statistics.median(r["mpps"] for r in runs),
            "offered_mpps": statistics.median(r["offered_mpps"] for r in runs),
            "runs": runs}
