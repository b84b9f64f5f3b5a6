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


def port_stats(daemon, ifname: str) -> dict:
    lines = daemon.appctl("dpctl/show").splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"\s*port \d+: {re.escape(ifname)}\b", line):
            return {k: int(v) for k, v in (kv.split(":") for kv in lines[i + 1].split())}
    raise AssertionError(f"{ifname} not in dpctl/show")


def kernel_packets(daemon) -> int:
    return sum(int(n) for n in re.findall(r"packets:(\d+)",
                                          daemon.appctl("dpctl/dump-flows", "--kernel")))


def test_a_miss_goes_up_over_af_xdp_and_its_answer_into_the_kernel(daemon, topology, bridge_name):
    """Native mode: the cache program redirects a miss through its XSKMAP to
    the port's AF_XDP socket (not XDP_PASS to AF_PACKET); the userspace fast
    path upcalls it once, the slow path's megaflow lands in the kernel map,
    and the flow's next packets are forwarded in XDP with zero upcalls."""
    h1 = topology.add_host("h1", "10.0.12.1/24")
    h2 = topology.add_host("h2", "10.0.12.2/24")
    for h in (h1, h2):
        h.run("ethtool", "-K", "eth0", "gro", "on", "tx", "off")
    daemon.vsctl("add-br", bridge_name, "--", "set", "Bridge", bridge_name,
                 "datapath_type=xdp", "other_config:xdp-mode=native")
    for i, h in enumerate((h1, h2), 1):
        daemon.vsctl("add-port", bridge_name, h.port, "--", "set", "Interface", h.port,
                     f"ofport_request={i}")
    daemon.ofctl("del-flows", bridge_name)
    daemon.ofctl("add-flow", bridge_name, "in_port=1,udp,actions=output:2")
    h1.run("ip", "neigh", "replace", h2.addr, "lladdr", h2.mac, "dev", "eth0")
    assert kernel_packets(daemon) == 0

    before, st0 = upcalls(daemon), port_stats(daemon, h1.port)
    assert "rx_xdp_passed" in st0, st0        # an afxdp-cache port
    sink = h2.udp_sink(4001)
    h1.udp_send(h2.addr, 4001, 1)
    assert sink.count() == 1, daemon.log_tail()
    st1 = port_stats(daemon, h1.port)
    assert upcalls(daemon) - before == 1
    # it reached userspace through the XSK, not the AF_PACKET fallback
    assert st1["rx_packets"] - st0["rx_packets"] == 1, (st0, st1)
    assert st1["rx_xdp_passed"] == st0["rx_xdp_passed"], (st0, st1)
    kernel = daemon.appctl("dpctl/dump-flows", "--kernel")
    assert re.search(r"udp,in_port=\d+.*actions:output:\d+", kernel), kernel

    sink = h2.udp_sink(4001)
    h1.udp_send(h2.addr, 4001, 200)
    assert sink.count() == 200, daemon.log_tail()
    assert upcalls(daemon) - before == 1      # no new upcall
    assert port_stats(daemon, h1.port)["rx_packets"] == st1["rx_packets"]  # userspace saw none
    assert kernel_packets(daemon) >= 200
