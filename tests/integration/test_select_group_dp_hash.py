"""Select groups as OVS's dp_hash method: the datapath hashes the packet and
recirculates, the bucket follows from the hash -- traffic spreads over the
buckets, each connection sticks to one, and megaflows are per hash slot."""

import re
import sys


def test_connections_spread_over_buckets_and_megaflows_are_per_slot(daemon, topology,
                                                                    bridge_name):
    h1 = topology.add_host("h1", "10.0.51.1/24")
    h2 = topology.add_host("h2", "10.0.51.2/24")
    h3 = topology.add_host("h3", "10.0.51.2/24", mac=h2.mac)      # a second backend
    daemon.vsctl("add-br", bridge_name, "--", "set-fail-mode", bridge_name, "secure")
    for h in (h1, h2, h3):
        daemon.vsctl("add-port", bridge_name, h.port)
    of = {h.name: daemon.vsctl("get", "Interface", h.port, "ofport").stdout.strip()
          for h in (h1, h2, h3)}
    h1.run("ip", "neigh", "replace", h2.addr, "lladdr", h2.mac, "dev", "eth0")
    daemon.ofctl("add-group", bridge_name,
                 f"group_id=1,type=select,bucket=output:{of['h2']},bucket=output:{of['h3']}")
    daemon.ofctl("add-flow", bridge_name, f"in_port={of['h1']},udp,actions=group:1")
    sinks = [h.udp_sink(9999, idle=3) for h in (h2, h3)]
    h1.run(sys.executable, "-c", (
        "import socket\n"
        "for port in range(20000, 20060):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.bind(('0.0.0.0', port))\n"
        "    for _ in range(3):\n"
        f"        s.sendto(b'x' * 32, ('{h2.addr}', 9999))\n"
        "    s.close()\n"))
    counts = [s.count() for s in sinks]
    assert sum(counts) == 180 and min(counts) >= 30, counts   # 60 connections x 3
    flows = daemon.appctl("dpctl/dump-flows")
    assert "hash(l4(1)),recirc(" in flows, flows
    after = [ln for ln in flows.splitlines() if "recirc_id=" in ln and "dp_hash" in ln]
    assert after and all("tp_src" not in ln for ln in after), flows
    # (Each PMD and the main thread list their own copies, as in OVS.)
    assert len({ln.split(", packets:")[0] for ln in after}) <= 16, \
        "more megaflows than hash slots"
    assert all("dp_hash=" in ln and "/0xf," in ln for ln in after), after
