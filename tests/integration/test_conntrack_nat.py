"""NAT through the daemon with real TCP: DNAT of a virtual IP to a backend,
SNAT of a client to an address/port pool, both directions translated."""

from __future__ import annotations

import re
import textwrap

from tests.integration.test_conntrack_firewall import connect, servers, setup_bridge  # noqa: F401

C, S, VIP = "10.0.4.1", "10.0.4.3", "10.0.4.100"
POOL = ("10.0.4.50", "10.0.4.51")


def nat_flows() -> str:
    return textwrap.dedent(f"""
        table=0,priority=10,ip,actions=ct(nat,zone=5,table=1)
        table=0,priority=0,actions=drop
        table=1,priority=200,ct_state=+inv+trk,actions=drop
        table=1,priority=100,ct_state=+new-inv+trk,tcp,in_port=1,nw_dst={VIP},tp_dst=80,actions=ct(commit,zone=5,nat(dst={S}:8080)),output:2
        table=1,priority=100,ct_state=+new-inv+trk,tcp,in_port=1,nw_dst={S},tp_dst=9090,actions=ct(commit,zone=5,nat(src={POOL[0]}-{POOL[1]}:40000-40100)),output:2
        table=1,priority=90,ct_state=+est+trk,in_port=1,actions=output:2
        table=1,priority=90,ct_state=+est+trk,in_port=2,actions=output:1
        table=1,priority=0,actions=drop
    """).strip() + "\n"


def test_dnat_to_backend_and_snat_to_pool(daemon, topology, bridge_name, servers):  # noqa: F811
    c = topology.add_host("c", C + "/24")
    s = topology.add_host("s", S + "/24")
    setup_bridge(daemon, bridge_name, topology, nat_flows())
    # The client reaches the VIP through the switch; the server answers the pool.
    c.run("ip", "neigh", "replace", VIP, "lladdr", s.mac, "dev", "eth0")
    for ip in POOL:
        s.run("ip", "neigh", "replace", ip, "lladdr", c.mac, "dev", "eth0")
    backend = servers(s, "tcp", 8080)
    snat_srv = servers(s, "tcp", 9090)
    for _ in range(2):
        assert connect(c, "tcp", VIP, 80, size=50_000) == "ok"
    for _ in range(4):
        assert connect(c, "tcp", S, 9090, size=20_000) == "ok"
    # nothing else is translated or allowed
    assert connect(c, "tcp", S, 8080, timeout=1.0).startswith("fail")
    assert connect(c, "tcp", VIP, 81, timeout=1.0).startswith("fail")

    dump = daemon.appctl("dpctl/dump-conntrack", "zone=5")
    assert (f"tcp,orig=(src={C},dst={VIP},sport=" in dump
            and f"reply=(src={S},dst={C},sport=8080," in dump), dump
    pool_replies = re.findall(r"orig=\(src=10\.0\.4\.1,dst=10\.0\.4\.3,sport=\d+,dport=9090\),"
                              r"reply=\(src=10\.0\.4\.3,dst=(10\.0\.4\.5[01]),sport=9090,"
                              r"dport=(\d+)\)", dump)
    assert len(pool_replies) == 4, dump
    assert all(40000 <= int(p) <= 40100 for _, p in pool_replies)

    # NXT_CT_FLUSH_ZONE from the real ovs-ofctl empties the zone
    daemon.ofctl("ct-flush-zone", bridge_name, "5")
    assert daemon.appctl("dpctl/dump-conntrack", "zone=5") == ""

    peers_backend = re.findall(r"peer (\S+):(\d+)", backend.stop())
    assert [ip for ip, _ in peers_backend] == [C, C]         # DNAT keeps the client address
    peers_snat = re.findall(r"peer (\S+):(\d+)", snat_srv.stop())
    assert len(peers_snat) == 4
    assert all(ip in POOL and 40000 <= int(port) <= 40100 for ip, port in peers_snat)
