"""Real OVN (Debian ovn-central/ovn-host 23.03, unmodified) drives pyvswitch.

One deployment for the module (`vswitch.ovn.Deployment`): private NB/SB
ovsdb-servers and ovn-northd; two "hypervisor" namespaces joined by an
underlay, each running a pyvswitch daemon and an ovn-controller pointed at
it (hv1 tunnels through the host's IP stack, hv2 in its datapath with the
underlay NIC on br-phy); VMs are namespaces bound with
``external_ids:iface-id``::

    sw0 10.0.0.0/24: a (hv1, .1)  b (hv2, .2)  c (hv1, .3)
    sw1 10.1.0.0/24: d (hv2, .4)  e (hv1, DHCP from OVN)
    lr0: 10.0.0.254 on sw0, 10.1.0.254 on sw1 (distributed)

Every test leaves the logical network as it found it (ACLs, load
balancers); the port-move test moves its VM back.  A second, smaller
deployment puts Open vSwitch 3.1's userspace datapath on one hypervisor.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.capabilities import require_module, require_tools
from vswitch.ovn import Deployment, wait_for

def _tools():
    require_tools("ovn-northd", "ovn-nbctl", "ovn-sbctl", package="ovn-central")
    require_tools("ovn-controller", package="ovn-host")
    require_tools("ovsdb-server", "ovsdb-tool", package="openvswitch-switch")
    require_tools("ethtool", package="ethtool")
    require_module("scapy")


@pytest.fixture(scope="module")
def ovn():
    _tools()
    with Deployment() as d:
        try:
            # hv1 tunnels through its host IP stack, hv2 natively in the
            # datapath (underlay NIC on br-phy, as OVS userspace does)
            hv1, hv2 = d.add_hypervisor("hv1"), d.add_hypervisor("hv2", native=True)
            d.add_routed_switches()
            d.add_vm("a", hv1, "sw0", "10.0.0.1/24", gateway="10.0.0.254")
            d.add_vm("b", hv2, "sw0", "10.0.0.2/24", gateway="10.0.0.254")
            d.add_vm("c", hv1, "sw0", "10.0.0.3/24", gateway="10.0.0.254")
            d.add_vm("d", hv2, "sw1", "10.1.0.4/24", gateway="10.1.0.254")
            e = d.add_vm("e", hv1, "sw1", "dhcp", lsp_addresses="0a:00:00:00:01:05 10.1.0.5",
                         mac="0a:00:00:00:01:05")
            d.serve_dhcp(e)
            d.wait_up(*d.vms.values())
        except BaseException:
            print(d.logs())
            raise
        yield d
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"ovn-{d.tag}-" not in left, left


def check(ok: bool, ovn: Deployment, what: str = "") -> None:
    if not ok:
        pytest.fail(f"{what}\n{ovn.logs()}", pytrace=True)


def tcp_server(vm, port: int, reply: str) -> subprocess.Popen:
    return vm.serve_tcp(port, reply)


def tcp_get(vm, ip: str, port: int, timeout: float = 2.0) -> str:
    return vm.tcp_get(ip, port, timeout)


def stop(*procs) -> None:
    for p in procs:
        p.terminate()
        p.wait(5)


def test_chassis_register_and_ports_bind(ovn):
    chassis = ovn.sbctl("--bare", "--columns=name", "list", "Chassis").split()
    assert sorted(chassis) == ["hv1", "hv2"]
    for vm in ovn.vms.values():
        assert ovn.port_chassis(vm.lsp) == vm.hypervisor.name
        assert ovn.installed(vm)
    # ovn-controller made br-int and one GENEVE tunnel per remote chassis
    for hv, peer in (("hv1", "hv2"), ("hv2", "hv1")):
        h = ovn.hypervisors[hv]
        assert h.vsctl("get", "Bridge", "br-int", "fail_mode").strip() == "secure"
        opts = h.vsctl("get", "Interface", f"ovn-{peer}-0", "options")
        assert f'remote_ip="{ovn.hypervisors[peer].encap_ip}"' in opts and "key=flow" in opts
    assert ovn.sbctl("--bare", "--columns=up", "find", "Port_Binding",
                     "logical_port=a").strip() == "true"


def test_ping_across_the_geneve_overlay_both_ways(ovn):
    a, b, c = (ovn.vms[n] for n in "abc")
    for src, dst in ((a, b), (b, a), (a, c), (c, b)):
        check(src.reaches(dst.addr), ovn, f"{src.name} -> {dst.name}")
        p = src.ping(dst.addr, count=3)
        check(" 0% packet loss" in p.stdout, ovn, p.stdout)


def test_acl_drop_and_allow_related(ovn):
    """Nothing new reaches b; b's own connections are allowed, and their
    replies come back through conntrack (allow-related)."""
    a, b = ovn.vms["a"], ovn.vms["b"]
    # the drop is logged through a meter (controller(userdata,meter_id))
    ovn.nbctl("meter-add", "acl-meter", "drop", "100", "pktps")
    ovn.nbctl("--log", "--meter=acl-meter", "--name=into-b", "--severity=info", "acl-add",
              "sw0", "to-lport", "1000", 'outport == "b" && ip4', "drop", "--",
              "acl-add", "sw0", "from-lport", "1000", 'inport == "b" && ip4', "allow-related")
    srv_a, srv_b = tcp_server(a, 8080, "from-a"), tcp_server(b, 8080, "from-b")
    try:
        ovn.nbctl("--wait=hv", "sync")
        assert a.ping(b.addr, count=2, wait=1).returncode != 0
        hv2_log = ovn.hypervisors["hv2"].controller_log
        wait_for(lambda: 'name="into-b", verdict=drop' in open(hv2_log).read(), 10,
                 "the ACL's drop logged by ovn-controller")
        assert tcp_get(a, b.addr, 8080) == "TimeoutError"
        p = b.ping(a.addr, count=3)
        check(" 0% packet loss" in p.stdout, ovn, p.stdout)
        assert tcp_get(b, a.addr, 8080) == "from-a"
    finally:
        stop(srv_a, srv_b)
        ovn.nbctl("--wait=hv", "acl-del", "sw0")
        ovn.nbctl("meter-del", "acl-meter")
    check(a.reaches(b.addr), ovn, "a -> b after the ACLs are gone")


def test_address_set_acl_compiles_to_conjunctions(ovn):
    a, b, c = (ovn.vms[n] for n in "abc")
    ovn.nbctl("create", "Address_Set", "name=clients", 'addresses="10.0.0.1","10.0.0.9"')
    ovn.nbctl("acl-add", "sw0", "to-lport", "1000", 'outport == "b" && ip4', "drop", "--",
              "acl-add", "sw0", "to-lport", "1001",
              'outport == "b" && ip4.src == $clients && tcp.dst == {8080, 8081}',
              "allow-related")
    srv = [tcp_server(b, port, f"b:{port}") for port in (8080, 8081, 8082)]
    try:
        ovn.nbctl("--wait=hv", "sync")
        flows = ovn.hypervisors["hv2"].ofctl("dump-flows")
        assert "conjunction(" in flows and "conj_id=" in flows, flows
        assert tcp_get(a, b.addr, 8080) == "b:8080"
        assert tcp_get(a, b.addr, 8081) == "b:8081"
        assert tcp_get(a, b.addr, 8082) == "TimeoutError"      # port not in the set
        assert tcp_get(c, b.addr, 8080) == "TimeoutError"      # address not in the set
    finally:
        stop(*srv)
        ovn.nbctl("--wait=hv", "acl-del", "sw0")
        ovn.nbctl("destroy", "Address_Set", "clients")


def test_reject_answers_tcp_rst_and_icmp_unreachable(ovn):
    """reject needs controller(pause) continuations: ovn-controller builds
    the RST / ICMP error and resumes the pipeline with it (NXT_RESUME)."""
    a, b = ovn.vms["a"], ovn.vms["b"]
    ovn.nbctl("acl-add", "sw0", "to-lport", "1000", 'outport == "b" && tcp.dst == 9001',
              "reject", "--",
              "acl-add", "sw0", "to-lport", "1000", 'outport == "b" && udp.dst == 9002', "reject")
    try:
        ovn.nbctl("--wait=hv", "sync")
        t = time.monotonic()
        assert tcp_get(a, b.addr, 9001, timeout=3) == "ConnectionRefusedError"   # an RST
        assert time.monotonic() - t < 3
        p = a.run(sys.executable, "-c", textwrap.dedent(f"""
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(({b.addr!r}, 9002)); s.settimeout(3); s.send(b"x")
            try:
                s.recv(10)
            except OSError as e:
                print(type(e).__name__)     # ICMP port unreachable -> ECONNREFUSED
        """), check=False)
        check(p.stdout.strip() == "ConnectionRefusedError", ovn, p.stdout + p.stderr)
    finally:
        ovn.nbctl("--wait=hv", "acl-del", "sw0")


def test_distributed_logical_router_between_two_switches(ovn):
    a, b, d = (ovn.vms[n] for n in "abd")
    for src, dst in ((a, d), (d, a), (b, d), (a, "10.0.0.254"), (d, "10.1.0.254")):
        ip = dst if isinstance(dst, str) else dst.addr
        check(src.reaches(ip), ovn, f"{src.name} -> {ip}")
        p = src.ping(ip, count=3)
        check(" 0% packet loss" in p.stdout, ovn, p.stdout)
        if not isinstance(dst, str):
            assert "ttl=63" in p.stdout, p.stdout            # routed: one hop
    # the router answered ARP for its port itself, with its own MAC
    assert "02:ff:00:00:00:01" in a.run("ip", "neigh", "show", "10.0.0.254").stdout


def test_load_balancer_vip_reaches_both_backends(ovn):
    """VIP 10.0.0.100:80 on sw0 (and the router) -> b (sw0, hv2) and d
    (sw1, hv2, through the router); clients on hv1."""
    a, b, c, d = (ovn.vms[n] for n in "abcd")
    ovn.nbctl("lb-add", "lb0", "10.0.0.100:80", f"{b.addr}:80,{d.addr}:80", "tcp")
    ovn.nbctl("ls-lb-add", "sw0", "lb0", "--", "lr-lb-add", "lr0", "lb0")
    srv = [tcp_server(b, 80, "b"), tcp_server(d, 80, "d")]
    try:
        ovn.nbctl("--wait=hv", "sync")
        got = [tcp_get(vm, "10.0.0.100", 80, timeout=3) for vm in (a, c) for _ in range(8)]
        check(set(got) == {"b", "d"}, ovn, f"replies: {got}")
    finally:
        stop(*srv)
        ovn.nbctl("--wait=hv", "lb-del", "lb0")


def test_native_dhcp_from_ovn(ovn):
    """OVN answers DHCP itself: controller(pause) to ovn-controller, which
    fills in the offer and resumes the pipeline; the offer reaches the VM."""
    e = ovn.vms["e"]
    offer = e.dhcp_discover()
    assert offer == {"yiaddr": "10.1.0.5", "message-type": "2", "router": "10.1.0.254",
                     "lease_time": "3600", "server_id": "10.1.0.254",
                     "subnet_mask": "255.255.255.0"}, offer
    yiaddr, router = offer["yiaddr"], offer["router"]
    # configured with what OVN offered, e talks through the router
    e.run("ip", "addr", "add", f"{yiaddr}/24", "dev", "eth0")
    e.run("ip", "route", "add", "default", "via", router)
    check(e.reaches(ovn.vms["a"].addr), ovn, "e -> a after DHCP")


def test_ipv6_neighbour_discovery_switching_and_routing(ovn):
    """Dual-stack VMs g (hv1) and h (hv2) on sw0, d on sw1 gets an IPv6
    address too: OVN answers ND itself (nd_na through ovn-controller, the
    switch rewrites nd_tll), across the overlay and through the router."""
    from vswitch.ovn import sh
    hv1, hv2 = ovn.hypervisors["hv1"], ovn.hypervisors["hv2"]
    ovn.nbctl("lrp-del", "lr0-sw0", "--", "lrp-add", "lr0", "lr0-sw0", "02:ff:00:00:00:01",
              "10.0.0.254/24", "fd00::ff/64")
    ovn.nbctl("lrp-del", "lr0-sw1", "--", "lrp-add", "lr0", "lr0-sw1", "02:ff:00:00:01:01",
              "10.1.0.254/24", "fd01::ff/64")
    made = []
    for name, hv, sw, ip4, ip6, mac in (("g", hv1, "sw0", "10.0.0.7", "fd00::7", "0a:00:00:00:00:07"),
                                        ("h", hv2, "sw0", "10.0.0.8", "fd00::8", "0a:00:00:00:00:08"),
                                        ("i", hv2, "sw1", "10.1.0.9", "fd01::9", "0a:00:00:00:01:09")):
        vm = ovn.add_vm(name, hv, sw, f"{ip4}/24", mac=mac, lsp_addresses=f"{mac} {ip4} {ip6}")
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", ns=vm.netns)
        sh("sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0", ns=vm.netns)
        sh("ip", "-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad", ns=vm.netns)
        sh("ip", "-6", "route", "add", "default", "via", ip6.rsplit(":", 1)[0] + ":ff",
           ns=vm.netns)
        made.append(vm)
    ovn.wait_up(*made)
    g, h, i = made
    for src, dst in ((g, "fd00::8"), (h, "fd00::7"), (g, "fd00::ff"), (g, "fd01::9"),
                     (i, "fd00::7")):
        check(src.reaches(dst), ovn, f"{src.name} -> {dst}")
        p = src.ping(dst, count=3)
        check(" 0% packet loss" in p.stdout and "duplicates" not in p.stdout, ovn, p.stdout)
    # g learnt h's own MAC (not the solicited-node multicast one)
    assert "0a:00:00:00:00:08" in g.run("ip", "-6", "neigh", "show", "fd00::8").stdout
    # a router solicitation is answered by OVN (put_nd_ra_opts pauses inside
    # the router's clone(); NXT_RESUME sends the advertisement back)
    ovn.nbctl("set", "logical_router_port", "lr0-sw0", "ipv6_ra_configs:address_mode=slaac")
    ovn.nbctl("--wait=hv", "sync")
    ra = g.run(sys.executable, "-c", RS_THEN_RA, "0a:00:00:00:00:07", timeout=60, check=False)
    check(ra.returncode == 0 and "prefix fd00::" in ra.stdout, ovn, ra.stdout + ra.stderr)


RS_THEN_RA = """
import sys, time
from scapy.all import AsyncSniffer, Ether, IPv6, ICMPv6ND_RS, ICMPv6ND_RA, ICMPv6NDOptPrefixInfo
from scapy.all import ICMPv6NDOptSrcLLAddr, sendp
mac = sys.argv[1]
ras = []
sn = AsyncSniffer(iface="eth0", lfilter=lambda p: ICMPv6ND_RA in p, prn=ras.append, store=False)
sn.start()
time.sleep(0.5)
for _ in range(8):           # ovn-controller rate-limits its packet-ins: ask again
    sendp(Ether(src=mac, dst="33:33:00:00:00:02") / IPv6(src="fe80::807:ff:fe00:7", dst="ff02::2")
          / ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=mac), iface="eth0", verbose=False)
    time.sleep(1)
    if ras:
        break
sn.stop()
for p in ras:
    if ICMPv6NDOptPrefixInfo in p:
        print("prefix", p[ICMPv6NDOptPrefixInfo].prefix)
sys.exit(0 if ras else 1)
"""


def test_localnet_port_through_patch_ports_to_a_physical_network(ovn):
    """A logical switch with a localnet port: ovn-controller joins br-int to
    the provider bridge br-phys with a pair of patch ports (ovn-bridge-
    mappings), and a VM reaches a host on the "physical" network behind it."""
    from vswitch.ovn import sh
    hv1 = ovn.hypervisors["hv1"]
    phys = f"ovn-{ovn.tag}-phys"
    ovn._netns(phys)
    sh("ip", "link", "add", "eth0", "netns", phys, "type", "veth", "peer", "phys0",
       "netns", hv1.netns)
    sh("ip", "addr", "add", "172.31.0.100/24", "dev", "eth0", ns=phys)
    sh("ip", "link", "set", "eth0", "up", ns=phys)
    sh("ip", "link", "set", "phys0", "up", ns=hv1.netns)
    hv1.vsctl("add-br", "br-phys", "--", "add-port", "br-phys", "phys0")
    hv1.vsctl("set", "Open_vSwitch", ".", "external_ids:ovn-bridge-mappings=physnet1:br-phys")
    ovn.nbctl("ls-add", "pub", "--", "lsp-add", "pub", "pub-ln", "--",
              "lsp-set-type", "pub-ln", "localnet", "--", "lsp-set-addresses", "pub-ln",
              "unknown", "--", "lsp-set-options", "pub-ln", "network_name=physnet1")
    p = ovn.add_vm("p", hv1, "pub", "172.31.0.5/24")
    ovn.wait_up(p)
    wait_for(lambda: any(n.startswith("patch-") for n in
                         hv1.vsctl("list-ports", "br-phys").split()), 30,
             "ovn-controller's patch port on br-phys")
    check(p.reaches("172.31.0.100"), ovn, "VM -> physical host over localnet")
    ping = p.ping("172.31.0.100", count=3)
    check(" 0% packet loss" in ping.stdout, ovn, ping.stdout)


def test_port_move_during_continuous_ping(ovn):
    """c moves hv1 -> hv2 (and back) while a (hv1) pings it every 10 ms; the
    traffic lost is printed.  Issue 13's target: under 200 ms (OVS loses
    about 100 ms).  Measured 70-110 ms on an idle machine; on this shared
    2-core VM a loaded moment can double it, so a second move may try again."""
    a, c = ovn.vms["a"], ovn.vms["c"]
    hv1, hv2 = ovn.hypervisors["hv1"], ovn.hypervisors["hv2"]
    check(a.reaches(c.addr), ovn, "a -> c before the move")
    losses = []
    for to, back in ((hv2, hv1), (hv1, hv2)):
        m = ovn.measure_move(c, to, pinger=a, interval=0.01)
        losses.append(m["lost_ms"])
        print(f"\nport move {back.name} -> {to.name}: {m['sent'] - m['received']} of {m['sent']}"
              f" pings lost at 10 ms intervals = {m['lost_ms']:.0f} ms of traffic; SB binding "
              f"moved after {m['bound_after_s']:.2f} s")
        check(m["received"] > 0 and c.reaches(ovn.vms["b"].addr), ovn, m["output"])
        if m["lost_ms"] < 200:
            break
    if c.hypervisor is not hv1:
        ovn.move_vm(c, hv1)
    ovn.wait_up(c)
    check(min(losses) < 200, ovn, f"lost {losses} ms")


def test_switch_restart_under_ovn(ovn):
    """hv2's pyvswitch restarts (SIGTERM, same rundir and database):
    ovn-controller reconnects to OVSDB and OpenFlow and reinstalls every
    flow; traffic across the overlay and through the router comes back."""
    from vswitch.ovn import sh
    hv2 = ovn.hypervisors["hv2"]
    a, b, d = (ovn.vms[n] for n in "abd")
    hv2.switch.stop()
    hv2.switch.start()
    # the bridge-local port holding the encap address is a new TAP device
    sh("ip", "addr", "replace", f"{hv2.encap_ip}/24", "dev", "br-phy", ns=hv2.netns)
    sh("ip", "link", "set", "br-phy", "up", ns=hv2.netns)
    for src, dst in ((a, b), (b, a), (a, d)):
        check(src.reaches(dst.addr, timeout=30), ovn, f"{src.name} -> {dst.name} after restart")
    ovn.wait_up(b, d)


def test_mixed_deployment_pyvswitch_and_open_vswitch():
    """hv1 runs pyvswitch, hv2 Open vSwitch 3.1's userspace datapath (its
    underlay NIC on br-phy, as OVS tunnels natively): the same logical
    network works across them — switching, routing, a stateful ACL and a
    load balancer whose backends sit on both kinds of switch."""
    _tools()
    require_tools("ovs-vswitchd", package="openvswitch-switch")
    with Deployment() as ovn:
        try:
            hv1, hv2 = ovn.add_hypervisor("hv1"), ovn.add_hypervisor("hv2", switch="ovs")
            ovn.add_routed_switches()
            n = ovn.nbctl
            a = ovn.add_vm("a", hv1, "sw0", "10.0.0.1/24", gateway="10.0.0.254")
            b = ovn.add_vm("b", hv2, "sw0", "10.0.0.2/24", gateway="10.0.0.254")
            d = ovn.add_vm("d", hv2, "sw1", "10.1.0.4/24", gateway="10.1.0.254")
            f = ovn.add_vm("f", hv1, "sw1", "10.1.0.6/24", gateway="10.1.0.254")
            ovn.wait_up(a, b, d, f)
            for src, dst in ((a, b), (b, a), (a, d), (d, a), (f, b)):
                check(src.reaches(dst.addr), ovn, f"{src.name} -> {dst.name}")
                p = src.ping(dst.addr, count=3)
                check(" 0% packet loss" in p.stdout, ovn, p.stdout)
            n("acl-add", "sw0", "to-lport", "1000", 'outport == "a" && ip4', "drop", "--",
              "acl-add", "sw0", "from-lport", "1000", 'inport == "a" && ip4', "allow-related")
            n("lb-add", "lb0", "10.0.0.100:80", f"{d.addr}:80,{f.addr}:80", "tcp")
            n("ls-lb-add", "sw0", "lb0", "--", "lr-lb-add", "lr0", "lb0")
            srv = [tcp_server(d, 80, "d"), tcp_server(f, 80, "f"), tcp_server(a, 80, "a")]
            try:
                n("--wait=hv", "sync")
                assert tcp_get(b, a.addr, 80) == "TimeoutError"       # into a: dropped
                got = {tcp_get(vm, "10.0.0.100", 80, timeout=3) for vm in (a, b) for _ in range(8)}
                check(got == {"d", "f"}, ovn, f"replies {got}")       # out of a: allowed
            finally:
                stop(*srv)
        except BaseException:
            print(ovn.logs())
            raise


def _peer_echo(vm, port: int) -> subprocess.Popen:
    """A TCP server that answers each connection with the peer's address."""
    p = subprocess.Popen(["ip", "netns", "exec", vm.netns, sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", {port})); s.listen(16); print("ready", flush=True)
        while True:
            c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
    """)], stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    return p


def test_gateway_router_snat_and_floating_ip():
    """A gateway router pinned to hv1 (options:chassis) between sw0 and an
    "external" switch: SNAT of sw0 to the router's address, and a floating
    IP (dnat_and_snat) for b — b lives on hv2, so its traffic crosses the
    tunnel to the gateway chassis and back.  Conntrack NAT in the router's
    zones on pyvswitch."""
    _tools()
    with Deployment() as ovn:
        try:
            hv1, hv2 = ovn.add_hypervisor("hv1"), ovn.add_hypervisor("hv2")
            n = ovn.nbctl
            n("ls-add", "sw0")
            n("ls-add", "ext")
            n("lr-add", "gw", "--", "set", "Logical_Router", "gw", "options:chassis=hv1")
            n("lrp-add", "gw", "gw-sw0", "02:ff:00:00:00:01", "10.0.0.254/24")
            n("lrp-add", "gw", "gw-ext", "02:ff:00:00:02:01", "172.16.0.1/24")
            for sw, lrp in (("sw0", "gw-sw0"), ("ext", "gw-ext")):
                n("lsp-add", sw, f"{sw}-gw", "--", "lsp-set-type", f"{sw}-gw", "router",
                  "--", "lsp-set-addresses", f"{sw}-gw", "router",
                  "--", "lsp-set-options", f"{sw}-gw", f"router-port={lrp}")
            n("lr-nat-add", "gw", "snat", "172.16.0.1", "10.0.0.0/24")
            n("lr-nat-add", "gw", "dnat_and_snat", "172.16.0.100", "10.0.0.2")
            a = ovn.add_vm("a", hv1, "sw0", "10.0.0.1/24", gateway="10.0.0.254")
            b = ovn.add_vm("b", hv2, "sw0", "10.0.0.2/24", gateway="10.0.0.254")
            x = ovn.add_vm("x", hv2, "ext", "172.16.0.10/24", gateway="172.16.0.1")
            ovn.wait_up(a, b, x)
            servers = [_peer_echo(x, 81), _peer_echo(b, 81)]
            try:
                check(a.reaches(x.addr), ovn, "a -> x")
                assert a.tcp_get(x.addr, 81) == "172.16.0.1"       # SNAT
                assert b.tcp_get(x.addr, 81) == "172.16.0.100"     # the floating IP
                assert x.tcp_get("172.16.0.100", 81) == x.addr     # DNAT to b
            finally:
                stop(*servers)
        except BaseException:
            print(ovn.logs())
            raise
