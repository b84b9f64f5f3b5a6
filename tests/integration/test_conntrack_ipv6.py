"""IPv6 through the firewall: TCP with ct states, DNAT of a virtual address,
blocked connections the other way."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from tests.integration.test_conntrack_firewall import setup_bridge

A6, B6, VIP6 = "fd00:3::1", "fd00:3::2", "fd00:3::100"

SERVER6 = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(sys.argv[1]))); s.listen(16)
    print("ready", flush=True)
    while True:
        c, a = s.accept()
        print("peer", a[0], flush=True)
        d = c.recv(65536); c.sendall(d); c.close()
""")
CLIENT6 = textwrap.dedent("""
    import socket, sys
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
        s.sendall(b"v6" * 500)
        got = b""
        while len(got) < 1000:
            d = s.recv(4096)
            if not d:
                break
            got += d
        print("ok" if got == b"v6" * 500 else "mismatch")
    except OSError as e:
        print("fail", type(e).__name__)
""")

FLOWS = textwrap.dedent(f"""
    table=0,priority=10,ipv6,actions=ct(nat,zone=8,table=1)
    table=0,priority=0,actions=drop
    table=1,priority=200,ct_state=+inv+trk,actions=drop
    table=1,priority=100,ct_state=+new-inv+trk,tcp6,in_port=1,ipv6_dst={B6},tp_dst=8080,actions=ct(commit,zone=8),output:2
    table=1,priority=100,ct_state=+new-inv+trk,tcp6,in_port=1,ipv6_dst={VIP6},tp_dst=80,actions=ct(commit,zone=8,nat(dst=[{B6}]:8080)),output:2
    table=1,priority=90,ct_state=+est+trk,in_port=1,actions=output:2
    table=1,priority=90,ct_state=+est+trk,in_port=2,actions=output:1
    table=1,priority=0,actions=drop
""").strip() + "\n"


def test_ipv6_tcp_and_dnat(daemon, topology, bridge_name):
    a = topology.add_host("a", "10.0.6.1/24")
    b = topology.add_host("b", "10.0.6.2/24")
    for h, addr in ((a, A6), (b, B6)):
        h.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
        h.run("sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0")
        h.run("ip", "-6", "addr", "add", addr + "/64", "dev", "eth0", "nodad")
    a.run("ip", "-6", "neigh", "replace", B6, "lladdr", b.mac, "dev", "eth0", "nud", "permanent")
    a.run("ip", "-6", "neigh", "replace", VIP6, "lladdr", b.mac, "dev", "eth0", "nud", "permanent")
    b.run("ip", "-6", "neigh", "replace", A6, "lladdr", a.mac, "dev", "eth0", "nud", "permanent")
    setup_bridge(daemon, bridge_name, topology, FLOWS)
    flows = daemon.ofctl("dump-flows", bridge_name).stdout     # NAT survives the round trip
    assert f"ct(commit,zone=8,nat(dst=[{B6}]:8080))" in flows, flows
    servers = [subprocess.Popen(["ip", "netns", "exec", h.netns, sys.executable, "-c", SERVER6,
                                 str(port)], stdout=subprocess.PIPE, text=True)
               for h, port in ((b, 8080), (a, 8080))]
    try:
        for s in servers:
            assert s.stdout.readline().strip() == "ready"

        def connect(host, dst, port, timeout=3.0):
            return host.run(sys.executable, "-c", CLIENT6, dst, str(port), str(timeout),
                            check=False, timeout=30).stdout.strip()
        assert connect(a, B6, 8080) == "ok"
        assert connect(a, VIP6, 80) == "ok"
        assert connect(b, A6, 8080, timeout=1.0).startswith("fail")   # not the other way
        dump = daemon.appctl("dpctl/dump-conntrack", "zone=8")
        assert f"tcp6,orig=(src={A6},dst={VIP6}," in dump
        assert f"reply=(src={B6},dst={A6},sport=8080," in dump
    finally:
        outs = []
        for s in servers:
            s.kill()
            outs.append(s.communicate(timeout=10)[0])
    assert re.findall(r"peer (\S+)", outs[0]) == [A6, A6]
    assert "peer" not in outs[1]
