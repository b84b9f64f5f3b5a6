"""datapath_type=xdp: a bridge whose established flows stay in the kernel.

The daemon puts every megaflow XDP can execute into the XDP cache on the
bridge's ports; later packets of the flow never reach userspace (no
upcalls, kernel counters rise), and a flow-mod that changes the flow's
treatment takes effect before ovs-ofctl returns.
"""

import re
import time

import pytest


def upcalls(daemon) -> int:
    return int(re.search(r"upcalls:(\d+)", daemon.appctl("dpctl/show")).group(1))


@pytest.mark.parametrize("mode", ["generic", "native"])
def test_established_flows_are_forwarded_in_the_kernel(daemon, topology, bridge_name, mode):
    h1 = topology.add_host("h1", "10.0.11.1/24")
    h2 = topology.add_host("h2", "10.0.11.2/24")
    if mode == "native":
        # Native redirect into a veth needs NAPI (GRO) on its peer, and
        # frames lose checksum offload state on the way: senders checksum.
        for h in (h1, h2):
            h.run("ethtool", "-K", "eth0", "gro", "on", "tx", "off")
    daemon.vsctl("add-br", bridge_name, "--", "set", "Bridge", bridge_name,
                 "datapath_type=xdp", f"other_config:xdp-mode={mode}")
    for h in (h1, h2):
        daemon.vsctl("add-port", bridge_name, h.port)
    h1.run("ip", "neigh", "replace", h2.addr, "lladdr", h2.mac, "dev", "eth0")
    h2.run("ip", "neigh", "replace", h1.addr, "lladdr", h1.mac, "dev", "eth0")
    assert h1.ping(h2.addr, count=2).returncode == 0, daemon.log_tail()
    kernel = daemon.appctl("dpctl/dump-flows", "--kernel")
    assert "actions:" in kernel, kernel
    before = upcalls(daemon)
    sink = h2.udp_sink(4000)
    h1.udp_send(h2.addr, 4000, 300)
    assert sink.count() == 300
    assert upcalls(daemon) - before <= 1  # at most the new UDP flow's first packet
    hits = sum(int(n) for n in re.findall(r"packets:(\d+)",
                                          daemon.appctl("dpctl/dump-flows", "--kernel")))
    assert hits >= 299

    # A drop rule wins at once: the kernel entry is gone before the reply.
    daemon.ofctl("add-flow", bridge_name, "priority=100,udp,actions=drop")
    sink = h2.udp_sink(4000, idle=2)
    h1.udp_send(h2.addr, 4000, 20)
    assert sink.count() == 0
