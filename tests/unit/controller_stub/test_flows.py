"""Desired state -> flow mods, checked by where packets go in fake switches
(Faucet's FakeOFTable way): L2 forwarding local and over tunnels, tenant
isolation with overlapping addresses, port security, local ARP answers,
stateful ACLs with default deny, and a port move sent as a small diff."""

import pytest

from controller_stub import flows as F
from controller_stub import ofmsg
from controller_stub.fake import Fabric
from controller_stub.state import State, StateError

MAC = "02:00:00:00:{:02x}:{:02x}"


def make_state():
    return State.from_dict({
        "hosts": {"hv1": {"tunnel_ip": "192.168.0.1"}, "hv2": {"tunnel_ip": "192.168.0.2"},
                  "hv3": {"tunnel_ip": "192.168.0.3"}},
        "switches": {"red": {"vni": 100, "subnet": "10.0.0.0/24"},
                     "blue": {"vni": 200, "subnet": "10.0.0.0/24"}},
        "ports": {
            "web1": {"switch": "red", "mac": MAC.format(1, 1), "ips": ["10.0.0.1"], "host": "hv1"},
            "app1": {"switch": "red", "mac": MAC.format(1, 2), "ips": ["10.0.0.2"], "host": "hv1"},
            "db1": {"switch": "red", "mac": MAC.format(1, 3), "ips": ["10.0.0.3"], "host": "hv2"},
            # blue reuses red's addresses: tenants must not see each other
            "b1": {"switch": "blue", "mac": MAC.format(2, 1), "ips": ["10.0.0.1"], "host": "hv1"},
            "b2": {"switch": "blue", "mac": MAC.format(2, 2), "ips": ["10.0.0.2"], "host": "hv3"},
        },
        "port_groups": {"web": ["web1"], "app": ["app1"], "db": ["db1"]},
        "acls": [
            {"group": "web", "proto": "tcp", "ports": [80]},
            {"group": "web", "proto": "icmp"},
            {"group": "app", "proto": "tcp", "ports": [8080], "src": "@web"},
            {"group": "db", "proto": "tcp", "ports": [5432], "src": "@app"},
        ],
    })


def views_for(state):
    """ofports: VIFs numbered from 1 per host, tunnels from 100."""
    views = {}
    for h in state.hosts:
        ofports = {}
        for i, p in enumerate(sorted(p.ifname for p in state.ports.values() if p.host == h)):
            ofports[p] = i + 1
        for j, r in enumerate(sorted(r for r in state.hosts if r != h)):
            ofports[F.tunnel_port_name(r)] = 100 + j
        views[h] = F.HostView(ofports)
    return views


@pytest.fixture
def net():
    state = make_state()
    fab = Fabric(state, views_for(state))
    for h, sw in fab.switches.items():
        sw.apply(ofmsg.diff([], F.host_flows(state, h, fab.views[h])))
    return fab


def pkt(state, src, dst, proto="icmp", dport=None, sport=40000, **extra):
    s, d = state.ports[src], state.ports[dst]
    p = {"eth_src": s.mac, "eth_dst": d.mac, "eth_type": F.ETH_IP,
         "ipv4_src": s.ips[0], "ipv4_dst": d.ips[0], "ip_proto": F.PROTO_NUM[proto]}
    if proto in ("tcp", "udp"):
        p[f"{proto}_src"], p[f"{proto}_dst"] = sport, dport
    p.update(extra)
    return p


def send(fab, src, p):
    host, ofport = fab.vif_of(src)
    return [(h, o) for h, o, q in fab.send(host, ofport, p) if "tunnel_to" not in q]


def reply(p):
    r = dict(p)
    r["eth_src"], r["eth_dst"] = p["eth_dst"], p["eth_src"]
    r["ipv4_src"], r["ipv4_dst"] = p["ipv4_dst"], p["ipv4_src"]
    for proto in ("tcp", "udp"):
        if f"{proto}_dst" in p:
            r[f"{proto}_src"], r[f"{proto}_dst"] = p[f"{proto}_dst"], p[f"{proto}_src"]
    return r


def test_every_rule_survives_the_os_ken_codec():
    state = make_state()
    for h, v in views_for(state).items():
        for f in F.host_flows(state, h, v):
            assert ofmsg.canonical(f) == f


def test_allowed_traffic_local_and_across_a_tunnel(net):
    st = net.state
    # anyone -> web1 tcp/80 (web1 on hv1, app1 on hv1: local)
    assert send(net, "app1", pkt(st, "app1", "web1", "tcp", 80)) == [net.vif_of("web1")]
    # web -> app on 8080
    assert send(net, "web1", pkt(st, "web1", "app1", "tcp", 8080)) == [net.vif_of("app1")]
    # app (hv1) -> db (hv2) on 5432 crosses a tunnel with tun_id = VNI
    p = pkt(st, "app1", "db1", "tcp", 5432)
    host, ofport = net.vif_of("app1")
    hops = net.send(host, ofport, p)
    assert [(h, o) for h, o, q in hops if "tunnel_to" not in q] == [net.vif_of("db1")]
    (tun,) = [q for h, o, q in hops if "tunnel_to" in q]
    assert tun["tunnel_to"] == "hv2" and tun["tunnel_id"] == 100
    # OVN's GENEVE option: ingress key << 16 | egress key
    assert tun["tun_metadata0"] == st.port_key("app1") << 16 | st.port_key("db1")


def test_destination_outputs_by_the_geneve_option_not_the_mac(net):
    st = net.state
    # what hv1 would send to hv2 for db1, but with a MAC that is nobody's
    p = {**pkt(st, "app1", "db1", "tcp", 5432), "eth_dst": "02:de:ad:00:00:01",
         "tunnel_id": 100, "tun_metadata0": st.port_key("app1") << 16 | st.port_key("db1")}
    tun = net.views["hv2"].tunnel("hv1")
    assert [(h, o) for h, o, _ in net.send("hv2", tun, p)] == [net.vif_of("db1")]
    # hv1 has red and blue ports: an egress key of the other tenant's switch
    # than the VNI says is dropped
    tun1 = net.views["hv1"].tunnel("hv2")
    q = {**p, "tun_metadata0": st.port_key("db1") << 16 | st.port_key("b1")}
    assert net.send("hv1", tun1, q) == []
    q = {**p, "tunnel_id": 200, "tun_metadata0": st.port_key("db1") << 16 | st.port_key("web1")}
    assert net.send("hv1", tun1, q) == []
    q = {**p, "tcp_dst": 80, "tun_metadata0": st.port_key("db1") << 16 | st.port_key("web1")}
    assert [(h, o) for h, o, _ in net.send("hv1", tun1, q)] == [net.vif_of("web1")]
    # a switch without a TLV map: no option, the destination looks the MAC up
    state = make_state()
    views = views_for(state)
    for v in views.values():
        v.tlv_index = None
    flows = F.host_flows(state, "hv2", views["hv2"])
    assert not any("tun_metadata" in str(f) for f in flows)
    assert any(f.table == F.REMOTE_L2 and dict(f.match).get("eth_dst") for f in flows)


def test_tlv_table_messages():
    msg = ofmsg.tlv_table_add(3)
    msg.serialize()
    assert bytes(msg.buf)[8:].hex() == "00002320" "00000018" "0000000000000000" "0102800400030000"
    assert ofmsg.tlv_index_for({}, 8) == (0, True)
    assert ofmsg.tlv_index_for({0: (0x0102, 0x80, 4)}, 8) == (0, False)
    assert ofmsg.tlv_index_for({0: (0x0104, 1, 8), 2: (0x0102, 0x80, 4)}, 8) == (2, False)
    assert ofmsg.tlv_index_for({0: (0x0104, 1, 8)}, 8) == (1, True)
    assert ofmsg.tlv_index_for({i: (9, i, 4) for i in range(8)}, 8) == (None, False)


def test_default_deny_and_stateful_return(net):
    st = net.state
    # web -> db directly: db only admits app
    assert send(net, "web1", pkt(st, "web1", "db1", "tcp", 5432)) == []
    # app -> web on 22: web only admits 80 and icmp
    assert send(net, "app1", pkt(st, "app1", "web1", "tcp", 22)) == []
    # db may not open connections to app (app admits only @web on 8080)...
    assert send(net, "db1", pkt(st, "db1", "app1", "tcp", 8080)) == []
    # ...but replies of app's connection to db come back (ct on both hosts)
    p = pkt(st, "app1", "db1", "tcp", 5432, sport=41000)
    assert send(net, "app1", p) == [net.vif_of("db1")]
    assert send(net, "db1", reply(p)) == [net.vif_of("app1")]
    # a reply-looking packet with a different source port is a new connection: dropped
    q = reply(p)
    q["tcp_src"] = 5433
    assert send(net, "db1", q) == []


def test_tenants_with_overlapping_addresses_are_isolated(net):
    st = net.state
    # b1 (blue, 10.0.0.1, hv1) sends to red's web1 MAC: no such MAC in blue
    p = pkt(st, "b1", "b2")
    p["eth_dst"] = st.ports["app1"].mac
    assert send(net, "b1", p) == []
    # b1 -> b2 works (blue, hv1 -> hv3) and never reaches a red port
    assert send(net, "b1", pkt(st, "b1", "b2")) == [net.vif_of("b2")]
    # broadcast from b1 floods only blue: b2 over the tunnel, nothing red
    bc = pkt(st, "b1", "b2", eth_dst="ff:ff:ff:ff:ff:ff", ipv4_dst="10.0.0.255")
    assert send(net, "b1", bc) == [net.vif_of("b2")]


def test_port_security_drops_spoofed_sources(net):
    st = net.state
    p = pkt(st, "app1", "web1", "tcp", 80)
    assert send(net, "app1", {**p, "eth_src": MAC.format(9, 9)}) == []
    assert send(net, "app1", {**p, "ipv4_src": "10.0.0.99"}) == []
    arp = {"eth_src": st.ports["app1"].mac, "eth_dst": "ff:ff:ff:ff:ff:ff",
           "eth_type": F.ETH_ARP, "arp_op": 1, "arp_spa": "10.0.0.1",   # claims web1's IP
           "arp_sha": st.ports["app1"].mac, "arp_tpa": "10.0.0.3", "arp_tha": "00:00:00:00:00:00"}
    assert send(net, "app1", arp) == []


def test_arp_for_a_known_address_is_answered_at_the_source(net):
    st = net.state
    app = st.ports["app1"]
    arp = {"eth_src": app.mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": F.ETH_ARP,
           "arp_op": 1, "arp_spa": "10.0.0.2", "arp_sha": app.mac, "arp_tpa": "10.0.0.3",
           "arp_tha": "00:00:00:00:00:00"}
    host, ofport = net.vif_of("app1")
    hops = net.send(host, ofport, arp)
    assert len(hops) == 1 and hops[0][:2] == (host, ofport)    # back out of app1's port
    ans = hops[0][2]
    assert ans["arp_op"] == 2 and ans["arp_sha"] == st.ports["db1"].mac
    assert ans["arp_spa"] == "10.0.0.3" and ans["eth_dst"] == app.mac
    assert ans["arp_tpa"] == "10.0.0.2"
    # an unknown address is flooded on the host only: no ARP crosses a tunnel
    hops = net.send(host, ofport, {**arp, "arp_tpa": "10.0.0.77"})
    assert all("tunnel_to" not in q for _, _, q in hops)
    assert sorted(o for h, o, q in hops) == [net.vif_of("web1")[1]]


def test_port_move_is_a_small_diff_and_traffic_follows(net):
    st = net.state
    before = {h: F.host_flows(st, h, v) for h, v in net.views.items()}
    st.move_port("db1", "hv3")
    net.views["hv3"].ofports["db1"] = 7
    del net.views["hv2"].ofports["db1"]
    sent = {}
    for h, sw in net.switches.items():
        msgs = ofmsg.diff(before[h], F.host_flows(st, h, net.views[h]))
        sent[h] = msgs
        sw.apply(msgs)
        assert sw.flows() == set(F.host_flows(st, h, net.views[h]))
    # hv2 loses db1's rules, hv3 gains them, hv1 only re-points db1's MAC
    # and red's broadcast (its tunnel now goes to hv3 instead of hv2)
    assert all(m.command == 4 for m in sent["hv2"])           # DELETE_STRICT only
    assert all(m.command == 0 for m in sent["hv3"])           # ADD only
    mod, flood = sorted(sent["hv1"], key=lambda m: -m.priority)
    assert mod.command == 0 and mod.match["eth_dst"] == st.ports["db1"].mac
    assert flood.command == 0 and flood.match["eth_dst"] == F.MULTICAST
    # blue (and the fixed pipeline) is never touched
    untouchable = {F.cookie(F.K_PORT, st.port_key("b1")), F.cookie(F.K_PORT, st.port_key("b2")),
                   F.cookie(F.K_SWITCH, 200), F.cookie(F.K_TUNNEL, 200), F.cookie(F.K_PIPELINE)}
    assert not [m for ms in sent.values() for m in ms if m.cookie in untouchable]
    p = pkt(st, "app1", "db1", "tcp", 5432)
    assert send(net, "app1", p) == [("hv3", 7)]
    # a second reconciliation of the same state sends nothing
    for h in net.switches:
        assert ofmsg.diff(net.switches[h].flows(), F.host_flows(st, h, net.views[h])) == []


def test_acl_change_touches_only_acl_rules(net):
    st = net.state
    before = {h: F.host_flows(st, h, v) for h, v in net.views.items()}
    st.set_acls([*map(lambda a: a.__dict__, st.acls),
                 {"group": "db", "proto": "tcp", "ports": [22], "src": "10.0.0.0/24"}])
    msgs = ofmsg.diff(before["hv2"], F.host_flows(st, "hv2", net.views["hv2"]))
    assert len(msgs) == 1 and msgs[0].match["tcp_dst"] == 22
    assert msgs[0].cookie >> 48 & 0xFF == F.K_ACL
    net.switches["hv2"].apply(msgs)
    assert send(net, "web1", pkt(st, "web1", "db1", "tcp", 22)) == [net.vif_of("db1")]
    for h in ("hv1", "hv3"):
        assert ofmsg.diff(before[h], F.host_flows(st, h, net.views[h])) == []


def test_unbound_or_unplugged_ports_get_no_rules():
    st = make_state()
    views = views_for(st)
    del views["hv2"].ofports["db1"]            # interface not (yet) on the bridge
    flows = F.host_flows(st, "hv2", views["hv2"])
    assert not any(f.cookie == F.cookie(F.K_PORT, st.port_key("db1")) for f in flows)


def test_state_validation():
    st = make_state()
    with pytest.raises(StateError):
        st.add_port("x", "red", MAC.format(1, 1), ["10.0.0.9"], "hv1")   # duplicate MAC
    with pytest.raises(StateError):
        st.add_port("x", "red", MAC.format(1, 9), ["10.0.1.9"], "hv1")   # outside subnet
    with pytest.raises(StateError):
        st.move_port("db1", "hv9")
    with pytest.raises(StateError):
        st.set_acls([{"group": "nope"}])
    k = st.port_key("db1")
    st.move_port("db1", "hv3")
    assert st.port_key("db1") == k and st.ports["db1"].host == "hv3"
    again = State.from_dict(st.to_dict())
    assert again.to_dict() == st.to_dict()


def test_without_conntrack_no_ct_action_and_acls_are_stateless():
    st = make_state()
    st.set_options({"conntrack": False})
    views = views_for(st)
    fab = Fabric(st, views)
    for h, sw in fab.switches.items():
        flows = F.host_flows(st, h, views[h])
        assert not [f for f in flows for a in f.actions if a[0] == "ct"]
        assert not [f for f in flows if any(k == "ct_state" for k, _ in f.match)]
        sw.apply(ofmsg.diff([], flows))
    assert send(fab, "app1", pkt(st, "app1", "web1", "tcp", 80)) == [fab.vif_of("web1")]
    assert send(fab, "app1", pkt(st, "app1", "web1", "tcp", 22)) == []
    # stateless: web1's reply to app1 on a port app1's ACL does not admit is dropped
    assert send(fab, "web1", reply(pkt(st, "app1", "web1", "tcp", 80))) == []
    # ports outside ACL'd groups talk freely
    assert send(fab, "b1", pkt(st, "b1", "b2", "udp", 53)) == [fab.vif_of("b2")]


def test_bench_small():
    from bench import bench_controller as bench
    res = bench.run(6, 60, out=lambda *a: None)
    assert res["rules"] > 0 and 0 < res["move_flow_mods"] < res["rules"] / 3
    # the same over OpenFlow sessions to in-process peers (the asyncio
    # controller, dumps, TLV map, barriers, PORT_STATUS): same rules, same diff
    of = bench.run_openflow(6, 60, out=lambda *a: None)
    assert (of["rules"], of["move_flow_mods"]) == (res["rules"], res["move_flow_mods"])


def routed_state():
    return State.from_dict({
        "hosts": {"hv1": {"tunnel_ip": "192.168.0.1"}, "hv2": {"tunnel_ip": "192.168.0.2"}},
        "switches": {"red": {"vni": 100, "subnet": "10.0.0.0/24"},
                     "green": {"vni": 300, "subnet": "10.1.0.0/24"}},
        "ports": {
            "r1": {"switch": "red", "mac": MAC.format(1, 1), "ips": ["10.0.0.1"], "host": "hv1"},
            "g1": {"switch": "green", "mac": MAC.format(3, 1), "ips": ["10.1.0.1"],
                   "host": "hv2"},
            "g2": {"switch": "green", "mac": MAC.format(3, 2), "ips": ["10.1.0.2"],
                   "host": "hv1"},
        },
        "routers": {"lr0": {"ports": [
            {"switch": "red", "mac": "02:00:00:00:fe:01", "ip": "10.0.0.254"},
            {"switch": "green", "mac": "02:00:00:00:fe:03", "ip": "10.1.0.254"}]}},
        "port_groups": {"g": ["g1"]},
        "acls": [{"group": "g", "proto": "tcp", "ports": [22], "src": "10.0.0.0/24"}],
    })


def test_distributed_router_between_two_switches():
    st = routed_state()
    views = views_for(st)
    fab = Fabric(st, views)
    for h, sw in fab.switches.items():
        flows = F.host_flows(st, h, views[h])
        assert all(ofmsg.canonical(f) == f for f in flows)
        sw.apply(ofmsg.diff([], flows))
    # r1 resolves its gateway on hv1
    host, ofport = fab.vif_of("r1")
    arp = {"eth_src": MAC.format(1, 1), "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": F.ETH_ARP,
           "arp_op": 1, "arp_spa": "10.0.0.1", "arp_sha": MAC.format(1, 1),
           "arp_tpa": "10.0.0.254", "arp_tha": "00:00:00:00:00:00"}
    ((h, o, ans),) = fab.send(host, ofport, arp)
    assert (h, o) == (host, ofport) and ans["arp_sha"] == "02:00:00:00:fe:01"
    # r1 (red, hv1) -> g1 (green, hv2): routed on hv1, tunnelled with green's VNI
    p = {"eth_src": MAC.format(1, 1), "eth_dst": "02:00:00:00:fe:01", "eth_type": F.ETH_IP,
         "ipv4_src": "10.0.0.1", "ipv4_dst": "10.1.0.1", "ip_proto": 6, "tcp_src": 3333,
         "tcp_dst": 22, "nw_ttl": 64}
    hops = fab.send(host, ofport, p)
    ((h, o, got),) = [x for x in hops if "tunnel_to" not in x[2]]
    assert (h, o) == fab.vif_of("g1")
    assert got["eth_src"] == "02:00:00:00:fe:03" and got["eth_dst"] == MAC.format(3, 1)
    assert got["nw_ttl"] == 63
    (tun,) = [x[2] for x in hops if "tunnel_to" in x[2]]
    assert tun["tunnel_id"] == 300
    # g1's ACL still rules routed traffic: port 80 is not admitted
    assert [x for x in fab.send(host, ofport, {**p, "tcp_dst": 80})
            if "tunnel_to" not in x[2]] == []
    # the reply is routed back on hv2 and is +est at r1's egress
    back = {"eth_src": MAC.format(3, 1), "eth_dst": "02:00:00:00:fe:03", "eth_type": F.ETH_IP,
            "ipv4_src": "10.1.0.1", "ipv4_dst": "10.0.0.1", "ip_proto": 6, "tcp_src": 22,
            "tcp_dst": 3333, "nw_ttl": 64}
    h2, o2 = fab.vif_of("g1")
    assert [(h, o) for h, o, q in fab.send(h2, o2, back) if "tunnel_to" not in q] == \
        [fab.vif_of("r1")]
    # local routing: r1 -> g2 (both on hv1) never leaves the host
    hops = fab.send(host, ofport, {**p, "ipv4_dst": "10.1.0.2", "tcp_dst": 5})
    assert [(h, o) for h, o, q in hops] == [fab.vif_of("g2")]


def test_router_validation():
    st = routed_state()
    with pytest.raises(StateError):
        st.add_router("bad", [{"switch": "red", "mac": "02:00:00:00:fe:09", "ip": "10.1.0.9"}])
    with pytest.raises(StateError):
        st.add_router("bad", [{"switch": "red", "mac": MAC.format(1, 1), "ip": "10.0.0.200"}])
    assert State.from_dict(st.to_dict()).to_dict() == st.to_dict()


def v6_net():
    state = State.from_dict({
        "hosts": {"hv1": {"tunnel_ip": "192.168.0.1"}, "hv2": {"tunnel_ip": "192.168.0.2"}},
        "switches": {"red": {"vni": 100, "subnet6": "fd00::/64"},
                     "blue": {"vni": 200, "subnet6": "fd00::/64"}},
        "ports": {"a": {"switch": "red", "mac": MAC.format(1, 1), "ips": ["fd00::1"],
                        "host": "hv1"},
                  "b": {"switch": "red", "mac": MAC.format(1, 2), "ips": ["fd00:0::2"],
                        "host": "hv2"},
                  "c": {"switch": "blue", "mac": MAC.format(2, 1), "ips": ["fd00::2"],
                        "host": "hv1"}},
        "port_groups": {"db": ["b"], "web": ["a"]},
        "acls": [{"group": "db", "proto": "tcp", "ports": [5432], "src": "@web"}],
    })
    fab = Fabric(state, views_for(state))
    for h, sw in fab.switches.items():
        sw.apply(ofmsg.diff([], F.host_flows(state, h, fab.views[h])))
    return fab


def pkt6(state, src, dst, proto="tcp", dport=5432, sport=40000, **extra):
    s, d = state.ports[src], state.ports[dst]
    p = {"eth_src": s.mac, "eth_dst": d.mac, "eth_type": F.ETH_IPV6,
         "ipv6_src": s.ips[0], "ipv6_dst": d.ips[0], "ip_proto": F.PROTO_NUM6[proto]}
    if proto in ("tcp", "udp"):
        p[f"{proto}_src"], p[f"{proto}_dst"] = sport, dport
    return {**p, **extra}


def ns(state, src, target, **extra):
    s = state.ports[src]
    return {"eth_src": s.mac, "eth_dst": "33:33:ff:00:00:02", "eth_type": F.ETH_IPV6,
            "ipv6_src": s.ips[0], "ipv6_dst": "ff02::1:ff00:2", "ip_proto": 58,
            "icmpv6_type": 135, "ipv6_nd_target": target, "ipv6_nd_sll": s.mac, **extra}


def test_ipv6_addresses_acls_and_isolation():
    net = v6_net()
    st = net.state
    assert st.ports["b"].ips == ("fd00::2",)            # stored compressed
    assert send(net, "a", pkt6(st, "a", "b")) == [net.vif_of("b")]     # allowed, via hv2
    assert send(net, "a", pkt6(st, "a", "b", dport=22)) == []          # default deny
    assert send(net, "a", pkt6(st, "a", "b", "icmp")) == []
    r = pkt6(st, "b", "a", sport=5432, dport=40000)                   # the reply: +est
    assert send(net, "b", r) == [net.vif_of("a")]
    # spoofed IPv6 source; blue c cannot reach red b's MAC
    assert send(net, "a", pkt6(st, "a", "b", ipv6_src="fd00::9")) == []
    assert send(net, "c", pkt6(st, "c", "b", eth_dst=st.ports["b"].mac)) == []
    # the link-local address of a's MAC is a's too: it leaves hv1 (and b's
    # ACL, which names a's configured addresses, then drops it)
    assert F.link_local("02:00:00:00:01:01") == "fe80::ff:fe00:101"
    ll = pkt6(st, "a", "b", ipv6_src=F.link_local(st.ports["a"].mac))
    host, port = net.vif_of("a")
    assert [q["tunnel_to"] for _, _, q in net.send(host, port, ll) if "tunnel_to" in q] == ["hv2"]
    assert net.send(host, port, pkt6(st, "a", "b", ipv6_src="fe80::1")) == []


def test_neighbour_solicitation_answered_at_the_source():
    net = v6_net()
    st = net.state
    host, port = net.vif_of("a")
    out = net.send(host, port, ns(st, "a", "fd00::2"))
    assert [(h, o) for h, o, _ in out] == [("hv1", "CONTROLLER")]   # never a tunnel
    # the controller's answer: b's MAC, to a
    from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet
    from scapy.all import Ether, ICMPv6ND_NS, IPv6, ICMPv6NDOptSrcLLAddr
    wire = bytes(Ether(src=st.ports["a"].mac, dst="33:33:ff:00:00:02")
                 / IPv6(src="fd00::1", dst="ff02::1:ff00:2")
                 / ICMPv6ND_NS(tgt="fd00::2") / ICMPv6NDOptSrcLLAddr(lladdr=st.ports["a"].mac))
    na, target = ofmsg.answer_solicitation(wire, {"fd00::2": st.ports["b"].mac}.get)
    p = packet.Packet(na)
    eth, ip6, icmp = (p.get_protocol(c) for c in (ethernet.ethernet, ipv6.ipv6, icmpv6.icmpv6))
    assert (eth.src, eth.dst) == (st.ports["b"].mac, st.ports["a"].mac)
    assert (ip6.src, ip6.dst, ip6.hop_limit) == ("fd00::2", "fd00::1", 255)
    assert icmp.type_ == 136 and icmp.data.dst == "fd00::2" and icmp.data.res == 0b011
    assert icmp.data.option.hw_src == st.ports["b"].mac
    assert ofmsg.answer_solicitation(wire, {}.get) is None             # unknown: no answer
    # unknown targets, DAD and other ND multicast stay on the host
    out = net.send(host, port, ns(st, "a", "fd00::77"))
    assert all("tunnel_to" not in q for _, _, q in out)
    dad = ns(st, "a", "fd00::1", ipv6_src="::", ipv6_nd_sll="00:00:00:00:00:00")
    assert all("tunnel_to" not in q for _, _, q in net.send(host, port, dad))
    # a solicitation claiming another MAC, an advert for another's address: dropped
    assert net.send(host, port, ns(st, "a", "fd00::2", ipv6_nd_sll="02:00:00:00:09:09")) == []
    na_spoof = {**ns(st, "a", "fd00::2"), "icmpv6_type": 136, "ipv6_nd_tll": st.ports["a"].mac}
    del na_spoof["ipv6_nd_sll"]
    assert net.send(host, port, na_spoof) == []


def test_ipv6_rules_survive_the_os_ken_codec():
    st = v6_net().state
    st.set_acls([{"group": "db", "proto": "tcp", "ports": [5432], "src": "fd00::/64"},
                 {"group": "db", "proto": "icmp", "src": "fd00::1/128"},
                 {"group": "web", "proto": "udp", "src": "10.0.0.0/8"}])
    for h, v in views_for(st).items():
        for f in F.host_flows(st, h, v):
            assert ofmsg.canonical(f) == f
