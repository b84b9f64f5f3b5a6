"""Table exhaustion: a SYN flood fills a zone to its limit; refused
connections are counted and never reach the server, established ones keep
flowing, and a fresh connection is refused until entries expire."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from tests.integration.test_conntrack_firewall import connect, servers, setup_bridge  # noqa: F401

A, B = "10.0.5.1", "10.0.5.2"
LIMIT = 40
FLOOD = 400

FLOWS = textwrap.dedent("""
    table=0,priority=10,ip,actions=ct(table=1,zone=7)
    table=0,priority=0,actions=drop
    table=1,priority=200,ct_state=+inv+trk,actions=drop
    table=1,priority=100,ct_state=+new-inv+trk,tcp,in_port=1,tp_dst=8080,actions=ct(commit,zone=7),output:2
    table=1,priority=90,ct_state=+est+trk,in_port=1,actions=output:2
    table=1,priority=90,ct_state=+est+trk,in_port=2,actions=output:1
    table=1,priority=0,actions=drop
""").strip() + "\n"

LONG_CLIENT = textwrap.dedent("""
    import socket, sys, time
    s = socket.create_connection((sys.argv[1], 8080), timeout=2)
    print("connected", flush=True)
    ok = bad = 0
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        try:
            s.sendall(b"k" * 100)
            got = b""
            while len(got) < 100:
                got += s.recv(100 - len(got))
            ok += 1
        except OSError:
            bad += 1
        time.sleep(0.05)
    print(ok, bad, flush=True)
""")

# Counts the distinct source ports of flood SYNs that reach the server.
SNIFFER = textwrap.dedent("""
    import socket, struct, sys
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("eth0", 0))
    s.settimeout(0.2)
    print("ready", flush=True)
    while sys.stdin.readline().strip() != "stop":
        pass
    ports = set()
    while True:
        try:
            d, addr = s.recvfrom(65536)
        except socket.timeout:
            break
        if b"MARK-F" in d and addr[2] != socket.PACKET_OUTGOING:
            ihl = (d[14] & 15) * 4
            ports.add(struct.unpack_from("!H", d, 14 + ihl)[0])
    print(len(ports), flush=True)
""")

FLOODER = textwrap.dedent("""
    import sys
    from scapy.all import Ether, IP, TCP, Raw, sendp
    src_mac, dst_mac, src, dst, n = sys.argv[1:6]
    pkts = [Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst)
            / TCP(sport=20000 + i, dport=8080, flags="S", seq=i * 1000) / Raw(b"MARK-F")
            for i in range(int(n))]
    sendp(pkts, iface="eth0", verbose=False)
""")


def _stats(daemon) -> dict[str, int]:
    out = {}
    for line in daemon.appctl("dpctl/ct-stats-show").splitlines():
        k, _, v = line.strip().partition(":")
        if v.strip().isdigit():
            out[k] = int(v)
    return out


def test_syn_flood_fills_zone_refuses_new_keeps_established(daemon, topology, bridge_name,
                                                           servers):  # noqa: F811
    a = topology.add_host("a", A + "/24")
    b = topology.add_host("b", B + "/24")
    setup_bridge(daemon, bridge_name, topology, FLOWS)
    daemon.appctl("dpctl/ct-set-limits", f"zone=7,limit={LIMIT}")
    servers(b, "tcp", 8080)
    sniff = subprocess.Popen(["ip", "netns", "exec", b.netns, sys.executable, "-c", SNIFFER],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    long = subprocess.Popen(["ip", "netns", "exec", a.netns, sys.executable, "-c", LONG_CLIENT,
                             B, "6"], stdout=subprocess.PIPE, text=True)
    try:
        assert sniff.stdout.readline().strip() == "ready"
        assert long.stdout.readline().strip() == "connected"
        flood = a.run(sys.executable, "-c", FLOODER, a.mac, b.mac, A, B, str(FLOOD), check=False,
                      timeout=60)
        assert flood.returncode == 0, flood.stderr
        time.sleep(0.5)
        # the zone is full: a real client cannot open a connection now
        assert connect(a, "tcp", B, 8080, timeout=1.0).startswith("fail")
        ok, bad = map(int, long.communicate(timeout=30)[0].split())
        arrived = int(sniff.communicate("stop\n", timeout=20)[0])
    finally:
        for p in (sniff, long):
            if p.poll() is None:
                p.kill()
    # established traffic kept flowing during and after the flood
    assert bad == 0 and ok >= 40, (ok, bad)
    stats = _stats(daemon)
    limits = daemon.appctl("dpctl/ct-get-limits", "zone=7")
    assert f"zone=7,limit={LIMIT},count={LIMIT}" in limits, limits
    # one slot holds the long connection; every other flood SYN was refused
    admitted = LIMIT - 1
    assert stats["refused_zone_limit"] >= FLOOD - admitted, stats
    assert stats["refused"] == stats["refused_zone_limit"]
    # exactly the admitted SYNs reached the server, no refused one
    assert arrived == admitted, (arrived, stats)
    assert len(daemon.appctl("dpctl/dump-conntrack", "zone=7").splitlines()) == LIMIT
    cli = [sys.executable, "-m", "vswitch.cli", "conntrack"]
    stats_text = subprocess.run(cli + ["stats", "--rundir", daemon.rundir], capture_output=True,
                                text=True, timeout=30).stdout
    assert f"refused_zone_limit: {stats['refused_zone_limit']}" in stats_text
    subprocess.run(cli + ["flush", "--rundir", daemon.rundir, "--zone", "7"], check=True,
                   timeout=30)
    assert daemon.appctl("dpctl/ct-get-nconns").strip() == "0"


def test_timeout_policy_from_ovs_vsctl_and_periodic_expiry(daemon, topology, bridge_name):
    """Also: the zone comes from a register (ct(zone=NXM_NX_REG0[0..15]))."""
    a = topology.add_host("a", A + "/24")
    topology.add_host("b", B + "/24")
    setup_bridge(daemon, bridge_name, topology, textwrap.dedent("""
        table=0,priority=10,ip,in_port=1,actions=load:6->NXM_NX_REG0[0..15],ct(commit,zone=NXM_NX_REG0[0..15]),output:2
        table=0,priority=0,actions=drop
    """).strip() + "\n")
    # As on OVS: the user creates the Datapath row, then the zone's policy.
    daemon.vsctl("--", "--id=@d", "create", "Datapath", "datapath_version=0",
                 "--", "set", "Open_vSwitch", ".", "datapaths:netdev=@d")
    daemon.vsctl("add-zone-tp", "netdev", "zone=6", "udp_first=2", "udp_single=2")
    a.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for port in range(7000, 7005):
            s.sendto(b"x", ("{B}", port))
    """))
    deadline = time.time() + 5
    while daemon.appctl("dpctl/ct-get-nconns").strip() != "5" and time.time() < deadline:
        time.sleep(0.1)
    dump = daemon.appctl("dpctl/dump-conntrack", "--", "-s", "zone=6")
    assert dump.count("zone=6") == 5 and "timeout=" in dump
    assert int(daemon.appctl("dpctl/ct-get-nconns")) == 5
    # the daemon's periodic expiry (not a dump) removes them after 2 s
    deadline = time.time() + 6
    while int(daemon.appctl("dpctl/ct-get-nconns")) and time.time() < deadline:
        time.sleep(0.2)
    assert int(daemon.appctl("dpctl/ct-get-nconns")) == 0
    assert time.time() < deadline


def test_dpctl_timeout_policy_outlives_unrelated_reconciles(daemon, topology, bridge_name):
    """dpctl/ct-set-timeout-policy is a datapath setting: another OVSDB
    change (here: external_ids) must not put the defaults back."""
    a = topology.add_host("a", A + "/24")
    topology.add_host("b", B + "/24")
    setup_bridge(daemon, bridge_name, topology, textwrap.dedent("""
        table=0,priority=10,ip,in_port=1,actions=ct(commit,zone=9),output:2
        table=0,priority=0,actions=drop
    """).strip() + "\n")
    daemon.appctl("dpctl/ct-set-timeout-policy", "zone=9", "udp_first=500", "udp_single=500")
    daemon.vsctl("set", "Open_vSwitch", ".", "external_ids:touched=1")   # a reconcile
    a.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("{B}", 7100))
    """))
    deadline = time.time() + 5
    while "zone=9" not in daemon.appctl("dpctl/dump-conntrack", "--", "-s", "zone=9") \
            and time.time() < deadline:
        time.sleep(0.1)
    dump = daemon.appctl("dpctl/dump-conntrack", "--", "-s", "zone=9")
    timeouts = [int(f.split("=")[1]) for f in dump.replace(",", " ").split()
                if f.startswith("timeout=")]
    assert timeouts and all(t > 400 for t in timeouts), dump
