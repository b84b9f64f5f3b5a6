"""The overlay across three pyvswitch daemons joined by GENEVE (underlay:
loopback addresses 127.X.Y.1-3, one per hypervisor): tenants with
overlapping addresses stay apart across tunnels, ARP never crosses a
tunnel (checked on a capture of the underlay), stateful ACLs hold across
hosts, and a VM migrating during a continuous ping loses well under 1 s."""

import random
import re
import subprocess
import time

import pytest

from controller_stub.controller import BackgroundController
from controller_stub.state import State

HVS = ("hv1", "hv2", "hv3")
# This run's underlay, somewhere in 127/8: two runs at once (a full suite and
# a developer's) must not bind the same tunnel endpoints — with SO_REUSEADDR
# one daemon would receive the other's GENEVE packets.
UL = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}."


@pytest.fixture
def hvs(daemons_with_bridge):
    return daemons_with_bridge(HVS, "pvst")


@pytest.fixture
def vms(topology):
    return {"a": topology.add_host("a", "10.0.0.1/24"),     # red, hv1
            "b": topology.add_host("b", "10.0.0.2/24"),     # red, hv2
            "c": topology.add_host("c", "10.0.0.2/24"),     # blue, hv1 (b's address)
            "d": topology.add_host("d", "10.0.0.1/24")}     # blue, hv3 (a's address)


PLACE = {"a": "hv1", "b": "hv2", "c": "hv1", "d": "hv3"}
TENANT = {"a": "red", "b": "red", "c": "blue", "d": "blue"}


def plug(hvs, hv, vm):
    d, br = hvs[hv]
    d.vsctl("add-port", br, vm.port)


def unplug(hvs, hv, vm):
    d, br = hvs[hv]
    d.vsctl("del-port", br, vm.port)


def make_state(hvs, vms) -> State:
    return State.from_dict({
        "hosts": {hv: {"tunnel_ip": f"{UL}{i + 1}", "openflow": d.mgmt(br), "ovsdb": d.db,
                       "bridge": br} for i, (hv, (d, br)) in enumerate(sorted(hvs.items()))},
        "switches": {"red": {"vni": 100, "subnet": "10.0.0.0/24"},
                     "blue": {"vni": 200, "subnet": "10.0.0.0/24"}},
        "ports": {n: {"switch": TENANT[n], "mac": vm.mac, "ips": [vm.addr], "host": PLACE[n],
                      "iface": vm.port} for n, vm in vms.items()},
    })


@pytest.fixture
def overlay(hvs, vms):
    for n, hv in PLACE.items():
        plug(hvs, hv, vms[n])
    with BackgroundController(make_state(hvs, vms)) as bg:
        bg.wait_converged(20)
        yield bg


def neigh_mac(vm, ip):
    m = re.search(r"lladdr (\S+)", vm.run("ip", "neigh", "show", ip).stdout)
    return m and m.group(1)


def inner_frames(pcap: str, macs) -> list:
    """The Ethernet frames inside the GENEVE packets of a capture (scapy)
    from or to one of `macs` (other tests may use GENEVE on lo meanwhile)."""
    from scapy.all import UDP, Ether, rdpcap
    out = []
    for p in rdpcap(pcap):
        if UDP in p and p[UDP].dport == 6081:
            g = bytes(p[UDP].payload)
            f = Ether(g[8 + (g[0] & 0x3F) * 4:])
            if f.src in macs or f.dst in macs:
                out.append(f)
    return out


def test_tenants_across_tunnels_and_arp_stays_local(overlay, vms, tmp_path):
    a, b, c, d = (vms[n] for n in "abcd")
    pcap = str(tmp_path / "underlay.pcap")
    cap = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-w", pcap,
                            "udp", "port", "6081"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        for vm in vms.values():
            vm.run("ip", "neigh", "flush", "dev", "eth0")
        assert a.ping(b.addr, count=3).returncode == 0       # red hv1 -> hv2
        assert d.ping(c.addr, count=3).returncode == 0       # blue hv3 -> hv1
        assert neigh_mac(a, "10.0.0.2") == b.mac             # not blue's c
        assert neigh_mac(d, "10.0.0.2") == c.mac             # not red's b
        # red a aimed at blue d's MAC: red has no such MAC anywhere, d sees nothing
        a.run("ip", "neigh", "replace", "10.0.0.9", "lladdr", d.mac, "dev", "eth0")
        spy = subprocess.Popen(["ip", "netns", "exec", d.netns, "timeout", "4", "tcpdump",
                                "-i", "eth0", "-nn", "-c", "1", "icmp and dst host 10.0.0.9"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1)
        assert a.ping("10.0.0.9", count=3, wait=1).returncode != 0
        spied, _ = spy.communicate(timeout=10)
        assert "0 packets captured" in spied, spied
        time.sleep(0.5)
    finally:
        cap.terminate()
        cap.wait(10)
    macs = {vm.mac for vm in vms.values()}
    frames = inner_frames(pcap, macs)
    assert sum(f.type == 0x0800 for f in frames) >= 12   # the pings crossed the underlay
    # every tunnelled frame carries its tenant's VNI, and only that tenant's MACs
    from scapy.all import Ether
    vni = {"red": 100, "blue": 200}
    owner = {vms[n].mac: TENANT[n] for n in vms}
    for _, _, g in geneve_packets(pcap, macs):
        inner = Ether(bytes(g.payload))
        tenants = {owner.get(inner.src), owner.get(inner.dst)} - {None}
        assert len(tenants) == 1 and vni[tenants.pop()] == g.vni, (g.vni, inner.summary())
    arps = [f"{f.src}->{f.dst} op={f['ARP'].op}" for f in frames if f.type == 0x0806]
    # no ARP at all crosses a tunnel: the source host answers every request
    # for a known address (broadcast or a unicast probe) with an ARP reply
    assert not arps, arps


def test_stateful_acl_across_hosts(overlay, vms):
    a, b = vms["a"], vms["b"]
    bg = overlay
    ctl = bg.controller
    sent = bg.call(ctl.apply, lambda s: (
        s.set_port_group("db", ["b"]), s.set_port_group("web", ["a"]),
        s.set_acls([{"group": "db", "proto": "tcp", "ports": [5432], "src": "@web"}])))
    bg.wait_converged(15)
    assert sent["hv3"] == 0                          # hv3 hosts neither
    listener = subprocess.Popen(["ip", "netns", "exec", b.netns, "python3", "-c",
                                 "import socket\ns=socket.socket()\n"
                                 "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                                 "s.bind(('0.0.0.0',5432));s.listen(4);print('ready',flush=True)\n"
                                 "while True:\n c,_=s.accept();c.sendall(b'ok');c.close()"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        out = a.run("python3", "-c", "import socket;c=socket.create_connection(('10.0.0.2',5432),"
                    "timeout=3);print(c.recv(10).decode())", check=False)
        assert out.stdout.strip() == "ok", out.stderr
        assert a.ping(b.addr, count=1, wait=1).returncode != 0     # no ICMP to db
        # b's own connections out still get their replies (committed at both ends)
        assert b.ping(a.addr, count=2).returncode == 0
    finally:
        listener.kill()
        listener.wait()


def test_migration_during_continuous_ping_loses_under_a_second(overlay, hvs, vms, capsys):
    a, b = vms["a"], vms["b"]
    bg = overlay
    interval = 0.01
    assert a.ping(b.addr, count=2).returncode == 0
    ping = subprocess.Popen(["ip", "netns", "exec", a.netns, "ping", "-i", str(interval),
                             "-w", "6", "-W", "1", b.addr], stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    t0 = time.monotonic()
    unplug(hvs, "hv2", b)                  # the VM leaves hv2...
    plug(hvs, "hv3", b)                    # ...and shows up on hv3
    bg.call(bg.controller.move_port, "b", "hv3")
    bg.wait_converged(15)
    t1 = time.monotonic()
    out, _ = ping.communicate(timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    sent, got = int(m.group(1)), int(m.group(2))
    lost_s = (sent - got) * interval
    with capsys.disabled():     # printed in every run, not only with -s
        print(f"\nmigration hv2 -> hv3: cable move + reconcile took {t1 - t0:.2f} s, "
              f"ping lost {sent - got} of {sent} at {interval * 1000:.0f} ms "
              f"= {lost_s * 1000:.0f} ms of traffic")
    assert got > 0 and lost_s < 1.0, out
    assert a.ping(b.addr, count=2).returncode == 0
    assert bg.controller.agents["hv3"].garps_sent == 1


ECHO = ("import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('0.0.0.0',7000));s.listen(4);print('ready',flush=True)\n"
        "c,_=s.accept()\nwhile True:\n d=c.recv(100)\n if not d: break\n c.sendall(d.upper())")
CLIENT = ("import socket,time\nc=socket.create_connection(('10.0.0.2',7000),timeout=5)\n"
          "c.sendall(b'one');print(c.recv(9).decode(),flush=True)\ntime.sleep(4)\n"
          "c.sendall(b'two');print(c.recv(9).decode(),flush=True)")


def test_controller_restart_keeps_established_traffic(hvs, vms):
    for n, hv in PLACE.items():
        plug(hvs, hv, vms[n])
    a, b = vms["a"], vms["b"]
    with BackgroundController(make_state(hvs, vms)) as bg:
        bg.wait_converged(20)
        rules = {h: sorted(map(str, ag.installed.values()))
                 for h, ag in bg.controller.agents.items()}
    server = subprocess.Popen(["ip", "netns", "exec", b.netns, "python3", "-c", ECHO],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.Popen(["ip", "netns", "exec", a.netns, "python3", "-c", CLIENT],
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline().strip() == "ONE"     # established across hv1 -> hv2
        ping = subprocess.Popen(["ip", "netns", "exec", a.netns, "ping", "-i", "0.01", "-c", "250",
                                 "-W", "2", b.addr], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        # a new controller: dumps, finds its rules, sends nothing
        with BackgroundController(make_state(hvs, vms)) as bg:
            bg.wait_converged(20)
            assert {h: ag.total_flow_mods for h, ag in bg.controller.agents.items()} == \
                {h: 0 for h in HVS}
            assert {h: sorted(map(str, ag.installed.values()))
                    for h, ag in bg.controller.agents.items()} == rules
        out, _ = ping.communicate(timeout=20)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert int(m.group(1)) > 100 and m.group(1) == m.group(2), out   # not one lost
        assert client.stdout.readline().strip() == "TWO"     # the connection lived on
        client.wait(10)
    finally:
        server.kill()
        server.wait()


def test_logical_router_across_hosts(hvs, topology):
    r1 = topology.add_host("r1", "10.0.0.1/24")       # red, hv1
    g1 = topology.add_host("g1", "10.1.0.1/24")       # green, hv2
    g2 = topology.add_host("g2", "10.1.0.2/24")       # green, hv1
    r1.run("ip", "route", "add", "default", "via", "10.0.0.254")
    for g in (g1, g2):
        g.run("ip", "route", "add", "default", "via", "10.1.0.254")
    place = {"r1": ("hv1", r1, "red"), "g1": ("hv2", g1, "green"), "g2": ("hv1", g2, "green")}
    for hv, vm, _ in place.values():
        plug(hvs, hv, vm)
    state = State.from_dict({
        "hosts": {hv: {"tunnel_ip": f"{UL}{i + 1}", "openflow": d.mgmt(br), "ovsdb": d.db,
                       "bridge": br} for i, (hv, (d, br)) in enumerate(sorted(hvs.items()))},
        "switches": {"red": {"vni": 100, "subnet": "10.0.0.0/24"},
                     "green": {"vni": 300, "subnet": "10.1.0.0/24"}},
        "ports": {n: {"switch": ls, "mac": vm.mac, "ips": [vm.addr], "host": hv,
                      "iface": vm.port} for n, (hv, vm, ls) in place.items()},
        "routers": {"lr0": {"ports": [
            {"switch": "red", "mac": "02:00:00:00:fe:01", "ip": "10.0.0.254"},
            {"switch": "green", "mac": "02:00:00:00:fe:03", "ip": "10.1.0.254"}]}},
    })
    with BackgroundController(state) as bg:
        bg.wait_converged(20)
        p = r1.ping(g1.addr, count=3)                 # routed on hv1, tunnelled to hv2
        assert p.returncode == 0, p.stdout
        assert "ttl=63" in p.stdout                   # one router hop
        assert r1.ping(g2.addr, count=2).returncode == 0   # routed, stays on hv1
        assert neigh_mac(r1, "10.0.0.254") == "02:00:00:00:fe:01"


def geneve_packets(pcap: str, macs) -> list:
    """(outer src, outer dst, scapy GENEVE layer) of each GENEVE packet in a
    capture whose inner frame is from or to one of `macs`."""
    from scapy.all import IP, UDP, Ether, rdpcap
    from scapy.contrib.geneve import GENEVE
    out = []
    for p in rdpcap(pcap):
        if UDP in p and p[UDP].dport == 6081:
            g = GENEVE(bytes(p[UDP].payload))
            inner = Ether(bytes(g.payload))
            if inner.src in macs or inner.dst in macs:
                out.append((p[IP].src, p[IP].dst, g))
    return out


def test_geneve_option_carries_the_logical_ports_and_the_destination_obeys_it(
        overlay, vms, tmp_path):
    """OVN's option (class 0x0102, type 0x80, 4 bytes: ingress key << 16 |
    egress key) is on every tunnelled packet, and the destination picks the
    output port from it, not from the inner MAC."""
    import socket
    from scapy.all import ICMP, IP, Ether
    from scapy.contrib.geneve import GENEVE, GeneveOptions
    a, b = vms["a"], vms["b"]
    ctl = overlay.controller
    key = {n: ctl.state.port_key(n) for n in "ab"}
    assert {h: ag.tlv_index for h, ag in ctl.agents.items()} == {h: 0 for h in HVS}
    pcap = str(tmp_path / "underlay.pcap")
    cap = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-w", pcap,
                            "udp", "port", "6081"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        assert a.ping(b.addr, count=3).returncode == 0       # hv1 <-> hv2
        time.sleep(0.5)
    finally:
        cap.terminate()
        _, err = cap.communicate(timeout=10)
    packets = geneve_packets(pcap, {vm.mac for vm in vms.values()})
    assert packets, err
    seen = {}
    for src, dst, g in packets:
        opts = [(o.classid, o.type, bytes(o.data)) for o in g.options]
        assert len(opts) == 1 and opts[0][:2] == (0x0102, 0x80) and len(opts[0][2]) == 4, opts
        seen.setdefault((src, dst, g.vni), set()).add(int.from_bytes(opts[0][2], "big"))
    print(f"\nGENEVE options seen: " + ", ".join(
        f"{s}->{d} vni {v}: " + ",".join(f"{x:#010x}" for x in sorted(xs))
        for (s, d, v), xs in sorted(seen.items())))
    assert seen[(UL + "1", UL + "2", 100)] == {key["a"] << 16 | key["b"]}
    assert seen[(UL + "2", UL + "1", 100)] == {key["b"] << 16 | key["a"]}

    # A frame for b whose inner MAC is nobody's: hv2 delivers it to b because
    # the option says so (a MAC lookup would drop it).
    bogus = "02:de:ad:be:ef:01"
    inner = Ether(src=a.mac, dst=bogus) / IP(src=a.addr, dst=b.addr) / ICMP(id=4242)
    opt = GeneveOptions(classid=0x0102, type=0x80, data=(key["a"] << 16 | key["b"]).to_bytes(4, "big"))
    spy = subprocess.Popen(["ip", "netns", "exec", b.netns, "timeout", "5", "tcpdump", "-i",
                            "eth0", "-nn", "-e", "-c", "1", "icmp and icmp[4:2] = 4242"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((UL + "1", 0))
        for _ in range(3):
            s.sendto(bytes(GENEVE(vni=100, proto=0x6558, options=opt) / inner),
                     (UL + "2", 6081))
            time.sleep(0.2)
    out, _ = spy.communicate(timeout=10)
    assert "1 packet captured" in out and bogus in out, out
    # and the same frame for an egress key that is nobody's goes nowhere
    opt.data = (key["a"] << 16 | 0x7FFE).to_bytes(4, "big")
    inner[Ether].dst = b.mac
    spy = subprocess.Popen(["ip", "netns", "exec", b.netns, "timeout", "4", "tcpdump", "-i",
                            "eth0", "-nn", "-c", "1", "icmp and icmp[4:2] = 4243"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    inner[ICMP].id = 4243
    time.sleep(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((UL + "1", 0))
        s.sendto(bytes(GENEVE(vni=100, proto=0x6558, options=opt) / inner), (UL + "2", 6081))
    out, _ = spy.communicate(timeout=10)
    assert "0 packets captured" in out, out


def enable_ipv6(vm, addr: str) -> None:
    vm.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0",
           "net.ipv6.conf.eth0.disable_ipv6=0")
    vm.run("ip", "-6", "addr", "add", addr, "dev", "eth0", "nodad")


def test_ipv6_across_hosts_nd_answered_locally_port_security_and_acls(hvs, topology,
                                                                      tmp_path):
    """ping -6 between VMs on two hosts; neighbour solicitations for known
    addresses are answered on the source host (none crosses a tunnel, checked
    on the underlay capture); IPv6 port security and stateful ACLs hold."""
    a = topology.add_host("a", "10.0.0.1/24")       # hv1
    b = topology.add_host("b", "10.0.0.2/24")       # hv2
    for vm, ip6 in ((a, "fd00::1/64"), (b, "fd00::2/64")):
        enable_ipv6(vm, ip6)
    plug(hvs, "hv1", a)
    plug(hvs, "hv2", b)
    state = State.from_dict({
        "hosts": {hv: {"tunnel_ip": f"{UL}{i + 1}", "openflow": d.mgmt(br), "ovsdb": d.db,
                       "bridge": br} for i, (hv, (d, br)) in enumerate(sorted(hvs.items()))},
        "switches": {"red": {"vni": 100, "subnet": "10.0.0.0/24", "subnet6": "fd00::/64"}},
        "ports": {"a": {"switch": "red", "mac": a.mac, "ips": [a.addr, "fd00::1"],
                        "host": "hv1", "iface": a.port},
                  "b": {"switch": "red", "mac": b.mac, "ips": [b.addr, "fd00::2"],
                        "host": "hv2", "iface": b.port}},
    })
    pcap = str(tmp_path / "underlay.pcap")
    with BackgroundController(state) as bg:
        bg.wait_converged(20)
        ctl = bg.controller
        cap = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-w", pcap,
                                "udp", "port", "6081"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(1)
            p = a.ping("fd00::2", count=3)
            assert p.returncode == 0, p.stdout
            assert neigh_mac(a, "fd00::2") == b.mac
            assert neigh_mac(b, "fd00::1") == a.mac
            time.sleep(1)
        finally:
            cap.terminate()
            cap.communicate(timeout=10)
        assert ctl.agents["hv1"].nd_answered >= 1       # a's NS for b, answered on hv1
        assert ctl.agents["hv2"].nd_answered >= 1       # b's NS for a, answered on hv2
        frames = inner_frames(pcap, {a.mac, b.mac})
        v6 = [f for f in frames if f.type == 0x86DD]
        assert sum(f.haslayer("ICMPv6EchoRequest") or f.haslayer("ICMPv6EchoReply")
                   for f in v6) >= 6                   # the echoes crossed the underlay
        nd = [f.summary() for f in v6 if f.haslayer("ICMPv6ND_NS") or f.haslayer("ICMPv6ND_NA")]
        assert not nd, nd                               # no neighbour discovery did

        # port security: a source address that is not a's goes nowhere
        a.run("ip", "-6", "addr", "add", "fd00::99/64", "dev", "eth0", "nodad")
        assert a.run("ping", "-6", "-c", "2", "-W", "1", "-I", "fd00::99", "fd00::2",
                     check=False).returncode != 0
        a.run("ip", "-6", "addr", "del", "fd00::99/64", "dev", "eth0")

        # stateful ACL: to b only tcp/5432 from @web; b's own pings get replies
        bg.call(ctl.apply, lambda s: (
            s.set_port_group("db", ["b"]), s.set_port_group("web", ["a"]),
            s.set_acls([{"group": "db", "proto": "tcp", "ports": [5432], "src": "@web"}])))
        bg.wait_converged(15)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", b.netns, "python3", "-c",
             "import socket\ns=socket.socket(socket.AF_INET6)\n"
             "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
             "s.bind(('::',5432));s.listen(4);print('ready',flush=True)\n"
             "while True:\n c,_=s.accept();c.sendall(b'ok');c.close()"],
            stdout=subprocess.PIPE, text=True)
        try:
            assert listener.stdout.readline().strip() == "ready"
            out = a.run("python3", "-c", "import socket;c=socket.create_connection(('fd00::2',"
                        "5432),timeout=3);print(c.recv(10).decode())", check=False)
            assert out.stdout.strip() == "ok", out.stderr
            out = a.run("python3", "-c", "import socket;socket.create_connection(('fd00::2',"
                        "5433),timeout=2)", check=False)
            assert "timed out" in out.stderr, out.stderr      # dropped, not refused
            assert a.ping("fd00::2", count=2, wait=1).returncode != 0
            assert b.ping("fd00::1", count=2).returncode == 0
            # IPv4 obeys the same ACL
            assert a.ping(b.addr, count=1, wait=1).returncode != 0
        finally:
            listener.kill()
            listener.wait()


def test_switch_restart_reconverges_to_the_same_rules_and_keeps_the_connection(hvs, vms):
    """hv2's daemon restarts under an established TCP connection a (hv1) ->
    b (hv2): the controller re-dials, reinstalls the same rules (compared by
    interface name, as ofports may change), and the connection lives on."""
    from tests.integration.test_controller_overlay import rules
    for n, hv in PLACE.items():
        plug(hvs, hv, vms[n])
    a, b = vms["a"], vms["b"]
    server = subprocess.Popen(["ip", "netns", "exec", b.netns, "python3", "-c", ECHO],
                              stdout=subprocess.PIPE, text=True)
    with BackgroundController(make_state(hvs, vms)) as bg:
        try:
            bg.wait_converged(20)
            before = {hv: rules(hvs, hv, by_name=True) for hv in HVS}
            assert server.stdout.readline().strip() == "ready"
            client = subprocess.Popen(["ip", "netns", "exec", a.netns, "python3", "-c",
                                       CLIENT.replace("time.sleep(4)", "time.sleep(8)")],
                                      stdout=subprocess.PIPE, text=True)
            assert client.stdout.readline().strip() == "ONE"    # established over the tunnel
            t0 = time.monotonic()
            d2, _ = hvs["hv2"]
            d2.stop()
            d2.start()
            bg.wait_converged(20)
            print(f"\nhv2 restarted and reconverged in {time.monotonic() - t0:.2f} s")
            assert bg.controller.agents["hv2"].connects == 2
            after = {hv: rules(hvs, hv, by_name=True) for hv in HVS}
            assert after == before
            assert client.stdout.readline().strip() == "TWO"    # the connection lived on
            client.wait(10)
            assert a.ping(b.addr, count=2).returncode == 0
        finally:
            server.kill()
            server.wait()
