"""check_pkt_larger through the daemon: one megaflow, executed by the Cython
fast path, sends small datagrams on and drops large ones (a gateway MTU
check as OVN writes it)."""

import re


def test_small_datagrams_pass_large_ones_do_not(daemon, topology, bridge_name):
    h1 = topology.add_host("h1", "10.0.32.1/24")
    h2 = topology.add_host("h2", "10.0.32.2/24")
    daemon.vsctl("add-br", bridge_name, "--", "set-fail-mode", bridge_name, "secure")
    for h in (h1, h2):
        daemon.vsctl("add-port", bridge_name, h.port)
    out2 = daemon.vsctl("get", "Interface", h2.port, "ofport").stdout.strip()
    h1.run("ip", "neigh", "replace", h2.addr, "lladdr", h2.mac, "dev", "eth0")
    for flow in ("table=0,priority=100,udp,actions=check_pkt_larger(300)->NXM_NX_REG0[0],"
                 "resubmit(,1)",
                 f"table=1,priority=100,reg0=0,actions=output:{out2}"):
        daemon.ofctl("add-flow", bridge_name, flow)
    sink = h2.udp_sink(9999, idle=3)
    h1.udp_send(h2.addr, 9999, count=20, payload=b"s" * 100, gap=0.01)
    h1.udp_send(h2.addr, 9999, count=20, payload=b"L" * 600, gap=0.01)
    assert sink.count() == 20, daemon.log_tail()
    flows = daemon.appctl("dpctl/dump-flows")
    assert "check_pkt_len(size=300,gt(drop),le(output:" in flows, flows
    # one megaflow for both sizes, its hits counted by the fast path
    (line,) = [ln for ln in flows.splitlines() if "check_pkt_len" in ln]
    assert int(re.search(r"packets:(\d+)", line).group(1)) >= 35, line
