"""xlate: NORMAL, actions, megaflow masks, and the megaflow invariant."""

from hypothesis import given, settings, strategies as st
from os_ken.ofproto import ofproto_v1_3 as ofp
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath.errors import OFError
from slowpath.fields import (
    FIELDS, FLOW_KEY_SIZE, OFPP_ALL, OFPP_CONTROLLER, OFPP_FLOOD, OFPP_IN_PORT, OFPP_NORMAL,
    field_int_mask, member_int_mask,
)
from slowpath.flow import FlowKey, parse_packet
from slowpath.match import Match, member_shift
from slowpath.pipeline import Bucket, FlowMod, GroupMod, Pipeline
from slowpath.port import Port

A1, A2, A3 = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03"
BCAST = "ff:ff:ff:ff:ff:ff"


def mask_of(*names):
    m = 0
    for n in names:
        m |= field_int_mask(FIELDS[n])
    return m


def bridge(n=3, **ports):
    p = Pipeline()
    for i in range(1, n + 1):
        p.set_port(Port(i, f"p{i}", dp_port=100 + i, **ports.get(f"p{i}", {})))
    return p


def pkt(src, dst, vlan=None, **ip):
    e = Ether(src=src, dst=dst)
    if vlan is not None:
        e = e / Dot1Q(vlan=vlan)
    return bytes(e / IP(**ip) / UDP(sport=1, dport=2))


def run(p, data, in_port, now=1.0, **kw):
    return p.xlate(parse_packet(data, in_port), data, now, **kw)


def add(p, text, actions=(), table=0, priority=0x8000, **kw):
    insts = kw.pop("instructions", None) or (A.ApplyActions(tuple(actions)),)
    p.flow_mod(FlowMod("add", table, priority, Match.parse(text), instructions=insts, **kw), 0.0)


# ---- NORMAL ------------------------------------------------------------------

def test_normal_floods_then_learns_with_exact_mask():
    p = bridge()
    p.install_default_flows()
    x = run(p, pkt(A1, A2), 1)
    assert x.actions == (dp.Output(102), dp.Output(103))
    vlan_bits = field_int_mask(FIELDS["vlan_vid"])     # VID + CFI, not PCP
    want = mask_of("in_port", "eth_src", "eth_dst") | vlan_bits
    assert int.from_bytes(x.megaflow.mask, "big") == want
    v = p.version
    x = run(p, pkt(A2, A1), 2)
    assert x.actions == (dp.Output(101),)
    assert p.version > v          # learning A2 changed forwarding
    assert int.from_bytes(x.megaflow.mask, "big") == mask_of("in_port", "eth_src", "eth_dst") | vlan_bits
    # the megaflow covers every packet with the same in_port/src/dst/vlan
    assert x.megaflow.matches(parse_packet(bytes(Ether(src=A2, dst=A1) / IP() / TCP()), 2))
    assert not x.megaflow.matches(parse_packet(pkt(A2, A3), 2))


def test_normal_drops_to_input_port_and_reserved_macs():
    p = bridge()
    p.install_default_flows()
    run(p, pkt(A1, A2), 1)
    assert run(p, pkt(A3, A1), 1).actions == ()          # A1 is behind port 1 itself
    assert run(p, pkt(A3, "01:80:c2:00:00:00"), 1).actions == ()


def test_normal_skips_no_flood_and_down_ports():
    p = bridge(4, p2={"no_flood": True}, p3={"link_down": True})
    p.install_default_flows()
    assert run(p, pkt(A1, BCAST), 1).actions == (dp.Output(104),)


def test_normal_vlans_access_and_trunk():
    p = bridge(4, p1={"tag": 10}, p2={"tag": 20}, p4={"tag": 10})
    p.install_default_flows()    # port 3 is a trunk
    x = run(p, pkt(A1, BCAST), 1)
    assert x.actions == (dp.push_vlan(10), dp.Output(103), dp.PopVlan(), dp.Output(104))
    # tagged VLAN 10 from the trunk reaches only the access ports of VLAN 10, untagged
    x = run(p, pkt(A3, BCAST, vlan=10), 3)
    assert x.actions == (dp.PopVlan(), dp.Output(101), dp.Output(104))
    # learned: A1 in VLAN 10 is on port 1
    assert run(p, pkt(A3, A1, vlan=10), 3).actions == (dp.PopVlan(), dp.Output(101))
    # same MAC in VLAN 20 is unknown: flood VLAN 20 only
    assert run(p, pkt(A3, A1, vlan=20), 3).actions == (dp.PopVlan(), dp.Output(102))
    # access port drops tagged input
    assert run(p, pkt(A1, BCAST, vlan=10), 1).actions == ()


def test_mac_aging_bumps_version():
    p = bridge()
    p.install_default_flows()
    run(p, pkt(A2, A1), 2, now=0.0)
    assert run(p, pkt(A1, A2), 1, now=1.0).actions == (dp.Output(102),)
    v = p.version
    p.expire(400.0)
    assert p.version > v
    assert run(p, pkt(A1, A2), 1, now=400.0).actions == (dp.Output(102), dp.Output(103))


# ---- megaflow widths --------------------------------------------------------

def test_eth_dst_rules_give_eth_dst_and_in_port_mask():
    p = bridge()
    add(p, f"dl_dst={A1}", [A.Output(1)], priority=10)
    add(p, f"dl_dst={A2}", [A.Output(2)], priority=10)
    for dst in (A1, A3):
        x = run(p, bytes(Ether(src=A3, dst=dst) / IP(src="9.9.9.9") / TCP(dport=22)), 3)
        assert int.from_bytes(x.megaflow.mask, "big") == mask_of("in_port", "eth_dst")
    assert x.actions == ()


def test_set_field_not_marked_and_committed_masked():
    p = bridge()
    add(p, "ip", [A.SetField("ip_dst", 0x0a000005), A.SetField("eth_dst", 0x0a, 0xff),
                  A.Output(2)])
    x = run(p, pkt(A1, A2), 1)
    assert x.actions == (dp.SetMasked("dl_dst", 0x0a, 0xff), dp.SetMasked("nw_dst", 0x0a000005, 0xffffffff),
                         dp.Output(102))
    assert int.from_bytes(x.megaflow.mask, "big") == mask_of("in_port", "eth_type")
    assert str(x.actions[1]) == "set(ipv4(dst=10.0.0.5))"


# ---- actions -----------------------------------------------------------------

def test_controller_and_table_miss():
    p = bridge()
    add(p, "icmp", [A.Output(OFPP_CONTROLLER, 64)], cookie=7)
    data = bytes(Ether(src=A1, dst=A2) / IP() / ICMP())
    x = run(p, data, 1)
    assert [type(a) for a in x.actions] == [dp.Userspace]
    (pi,) = x.packet_ins
    assert (pi.reason, pi.table_id, pi.cookie, pi.in_port, pi.data) == (ofp.OFPR_ACTION, 0, 7, 1, data)
    # OpenFlow 1.3 miss: drop; 1.0 miss: packet-in
    assert run(p, pkt(A1, A2), 1).packet_ins == []
    p.miss_to_controller = True
    (pi,) = run(p, pkt(A1, A2), 1).packet_ins
    assert pi.reason == ofp.OFPR_NO_MATCH


def test_dec_ttl_expiry_goes_to_controller_and_stops():
    p = bridge()
    add(p, "ip", [A.DecTtl(), A.Output(2)])
    x = run(p, pkt(A1, A2, ttl=5), 1)
    assert x.actions == (dp.SetMasked("nw_ttl", 4, 0xff), dp.Output(102))
    x = run(p, pkt(A1, A2, ttl=1), 1)
    assert [pi.reason for pi in x.packet_ins] == [ofp.OFPR_INVALID_TTL]
    assert not any(isinstance(a, dp.Output) for a in x.actions)


def test_goto_write_actions_and_metadata():
    p = bridge()
    add(p, "in_port=1", instructions=(A.WriteActions((A.Output(3),)),
                                      A.WriteMetadata(5, 0xff), A.GotoTable(1)))
    add(p, "metadata=5", table=1, instructions=(A.ApplyActions((A.Output(2),)),))
    x = run(p, pkt(A1, A2), 1)
    assert x.actions == (dp.Output(102), dp.Output(103))
    add(p, "metadata=5", table=1, instructions=(A.ClearActions(),))
    assert run(p, pkt(A1, A2), 1).actions == ()


def test_resubmit_in_port_and_output_special_ports():
    p = bridge()
    add(p, "in_port=1", [A.Resubmit(2, 1), A.Output(OFPP_IN_PORT)])
    add(p, "in_port=2", [A.Output(3), A.Output(2)], table=1)
    # output:2 inside resubmit(2,...) is output to the (temporary) input port: skipped
    assert run(p, pkt(A1, A2), 1).actions == (dp.Output(103), dp.Output(101))
    q = bridge(3, p2={"no_flood": True})
    add(q, "in_port=1", [A.Output(OFPP_FLOOD)])
    add(q, "in_port=2", [A.Output(OFPP_ALL)])
    assert run(q, pkt(A1, A2), 1).actions == (dp.Output(103),)
    assert run(q, pkt(A1, A2), 2).actions == (dp.Output(101), dp.Output(103))


def test_resubmit_loop_is_bounded():
    p = bridge()
    add(p, "in_port=1", [A.Output(2), A.Resubmit()])
    x = run(p, pkt(A1, A2), 1)
    assert x.actions == ()


def test_vlan_push_pop_set():
    p = bridge()
    add(p, "in_port=1", [A.PushVlan(), A.SetField("vlan_vid", 0x1000 | 7), A.Output(2)])
    assert run(p, pkt(A1, A2), 1).actions == (dp.push_vlan(7), dp.Output(102))
    add(p, "in_port=2", [A.PopVlan(), A.Output(1)])
    assert run(p, pkt(A1, A2, vlan=9), 2).actions == (dp.PopVlan(), dp.Output(101))
    assert run(p, pkt(A1, A2), 2).actions == (dp.Output(101),)


def test_groups_all_select_ff():
    p = bridge(5)
    p.group_mod(GroupMod("add", "all", 1, (Bucket((A.Output(2),)),
                                           Bucket((A.SetField("eth_dst", 9), A.Output(3),)))))
    add(p, "in_port=1", [A.Group(1), A.Output(4)])
    x = run(p, pkt(A1, A2), 1)
    # the second bucket's rewrite does not leak into the later output: it is undone
    assert x.actions == (dp.Output(102),
                         dp.Clone((dp.SetMasked("dl_dst", 9, 0xffffffffffff), dp.Output(103))),
                         dp.Output(104))
    assert int.from_bytes(x.megaflow.mask, "big") == mask_of("in_port")
    p.group_mod(GroupMod("add", "ff", 2, (Bucket((A.Output(2),), watch_port=2),
                                          Bucket((A.Output(3),), watch_port=3))))
    add(p, "in_port=2", [A.Group(2)])
    assert run(p, pkt(A1, A2), 2).actions == ()   # bucket 0 outputs to in_port: skipped
    add(p, "in_port=4", [A.Group(2)])
    assert run(p, pkt(A1, A2), 4).actions == (dp.Output(102),)
    p.set_port(Port(2, "p2", dp_port=102, link_down=True))
    assert run(p, pkt(A1, A2), 4).actions == (dp.Output(103),)
    p.group_mod(GroupMod("add", "select", 3, (Bucket((A.Output(2),), weight=1, watch_port=2),
                                              Bucket((A.Output(3),), weight=3, watch_port=3))))
    add(p, "in_port=5", [A.Group(3)])
    # select, as OVS's dp_hash method: hash in the datapath, recirculate, then
    # the bucket from dp_hash -- one megaflow per hash slot, not per connection
    first = run(p, pkt(A1, A2), 5)
    hash_, recirc = first.actions
    assert isinstance(hash_, dp.Hash) and isinstance(recirc, dp.Recirc)

    def after_hash(h):
        k = parse_packet(pkt(A1, A2), 5)
        k.recirc_id, k.dp_hash = recirc.recirc_id, h
        return p.xlate(k, pkt(A1, A2), 1.0)
    # port 2 is down: only bucket 1 is live
    assert {after_hash(h).actions for h in range(0, 256, 17)} == {(dp.Output(103),)}
    p.set_port(Port(2, "p2", dp_port=102))
    assert run(p, pkt(A1, A2), 5).actions == first.actions     # the same recirc_id again
    outs = [after_hash(h).actions for h in range(256)]
    assert outs.count((dp.Output(102),)) == 64 and outs.count((dp.Output(103),)) == 192
    x = after_hash(5)
    assert int.from_bytes(x.megaflow.mask, "big") & mask_of("nw_src", "tp_src") == 0
    # 16 slots are enough for weights 1:3 (OVS takes at least 16 too)
    assert int.from_bytes(x.megaflow.mask, "big") & mask_of("dp_hash") == \
        0xf << FIELDS["dp_hash"].shift


# ---- the invariant -----------------------------------------------------------

ACTIONS = [
    [A.Output(1)], [A.Output(2)], [A.Output(OFPP_NORMAL)], [A.SetField("eth_dst", 5), A.Output(3)],
    [A.Output(OFPP_FLOOD)], [A.DecTtl(), A.Output(2)], [A.PushVlan(), A.Output(1)],
    [A.PopVlan(), A.Output(3)], [A.SetField("reg0", 5), A.Resubmit(table=1)],
    [A.Output(OFPP_CONTROLLER)], [], [A.Conjunction(1, 0, 2)], [A.Conjunction(1, 1, 2)],
    [A.Group(1)], [A.Group(2), A.Output(3)], [A.SetField("vlan_vid", 0x1000 | 20), A.Output(2)],
    [A.SetField("ip_dst", 0x0a000009), A.Resubmit(table=1)], [A.Move("eth_src", "eth_dst", 48),
                                                               A.Output(OFPP_IN_PORT)],
]
MATCHES = ["", "in_port=1", "in_port=2", f"dl_dst={A2}", f"dl_src={A1}", "ip",
           "ip,nw_dst=10.0.0.0/24", "ip,nw_dst=10.0.0.2", "udp,tp_dst=2", "reg0=5",
           "dl_vlan=10", "vlan_tci=0/0x1000", "tcp", "ip,nw_ttl=1", "conj_id=1"]


@st.composite
def rulesets(draw):
    rules = []
    for _ in range(draw(st.integers(0, 12))):
        rules.append((draw(st.integers(0, 1)), draw(st.sampled_from(MATCHES)),
                      draw(st.integers(0, 20)), draw(st.integers(0, len(ACTIONS) - 1))))
    return rules


@st.composite
def packets(draw):
    src = draw(st.sampled_from([A1, A2, A3]))
    dst = draw(st.sampled_from([A1, A2, A3, BCAST]))
    vlan = draw(st.sampled_from([None, 10, 20, (10, 20)]))
    e = Ether(src=src, dst=dst)
    if isinstance(vlan, tuple):
        e = e / Dot1Q(vlan=vlan[0]) / Dot1Q(vlan=vlan[1])
    elif vlan:
        e = e / Dot1Q(vlan=vlan)
    ipdst = draw(st.sampled_from(["10.0.0.2", "10.0.0.9", "10.1.0.2"]))
    l4 = draw(st.sampled_from([UDP(dport=2), UDP(dport=3), TCP(dport=2), ICMP()]))
    return bytes(e / IP(dst=ipdst, ttl=draw(st.sampled_from([1, 64]))) / l4), draw(st.integers(1, 3))


@settings(max_examples=120, deadline=None)
@given(rulesets(), st.lists(packets(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_any_key_matching_the_megaflow_gets_the_same_actions(rules, pkts, rnd):
    p = bridge(3, p1={"tag": 10})
    p.group_mod(GroupMod("add", "select", 1, (Bucket((A.Output(1),), 1), Bucket((A.Output(2),), 1),
                                              Bucket((A.SetField("eth_src", 7), A.Output(3)), 1))))
    p.group_mod(GroupMod("add", "ff", 2, (Bucket((A.Output(2),), watch_port=2),
                                          Bucket((A.Output(OFPP_NORMAL),), watch_port=3))))
    for table, m, prio, ai in rules:
        try:
            p.flow_mod(FlowMod("add", table, prio, Match.parse(m),
                               instructions=(A.ApplyActions(tuple(ACTIONS[ai])),)), 0.0)
        except OFError:
            pass    # e.g. set_field ip_dst on a non-IP match: rejected, as OpenFlow says
    for data, port in pkts:
        key = parse_packet(data, port)
        x = p.xlate(key, data, 1.0)
        mask = int.from_bytes(x.megaflow.mask, "big")
        assert x.megaflow.matches(key)
        assert mask & member_int_mask("in_port") == member_int_mask("in_port")
        ref = p.xlate(key, None, 1.0, side_effects=False).actions
        assert ref == x.actions
        for other_data, other_port in pkts + [(data, port)]:
            # real packets that happen to fall in the megaflow
            k2 = parse_packet(other_data, other_port)
            if x.megaflow.matches(k2):
                assert p.xlate(k2, None, 1.0, side_effects=False).actions == x.actions
        for _ in range(3):
            # random keys that agree on the mask
            k2 = FlowKey.from_int((int(key) & mask) | (rnd.getrandbits(8 * FLOW_KEY_SIZE) & ~mask))
            if not mask & member_int_mask("recirc_id"):
                k2.recirc_id = 0    # only ids the pipeline allocated ever reach it
            assert p.xlate(k2, None, 1.0, side_effects=False).actions == x.actions


def test_conjunctive_match():
    p = bridge(4)
    # allow (src in {A1, A2}) x (tp_dst in {22, 80}) -> output:4, else drop
    for src in (A1, A2):
        add(p, f"dl_src={src}", [A.Conjunction(7, 0, 2)], priority=100)
    for port in (22, 80):
        add(p, f"tcp,tp_dst={port}", [A.Conjunction(7, 1, 2)], priority=100)
    add(p, "conj_id=7", [A.Output(4)], priority=100)
    add(p, "", [A.Output(3)], priority=1)

    def go(src, dport):
        return run(p, bytes(Ether(src=src, dst=A3) / IP() / TCP(dport=dport)), 1).actions

    assert go(A1, 22) == (dp.Output(104),)
    assert go(A2, 80) == (dp.Output(104),)
    assert go(A1, 23) == (dp.Output(103),)        # one clause only: falls to lower priority
    assert go(A3, 80) == (dp.Output(103),)
    x = run(p, bytes(Ether(src=A1, dst=A3) / IP() / TCP(dport=22)), 1)
    mask = int.from_bytes(x.megaflow.mask, "big")
    assert not mask & member_int_mask("conj_id")
    assert mask & field_int_mask(FIELDS["eth_src"]) and mask & field_int_mask(FIELDS["tp_dst"])
    assert len(list(p.rules())) == 6
    p.flow_mod(FlowMod("delete", 0xff, match=Match.parse("tcp")), 0)
    assert go(A1, 22) == (dp.Output(103),)


def test_packet_in_carries_the_rewritten_packet():
    p = bridge()
    add(p, "ip", [A.SetField("eth_dst", 0x0a), A.PushVlan(), A.SetField("vlan_vid", 0x1000 | 5),
                  A.Output(OFPP_CONTROLLER)])
    data = pkt(A1, A2)
    (pi,) = run(p, data, 1).packet_ins
    k = parse_packet(pi.data, 1)
    assert k.dl_dst == 0x0a and k.vlan_vid == 0x1005 and k.dl_type == 0x800
    assert pi.total_len == len(pi.data) == len(data) + 4


def test_learn_builds_a_mac_table_in_another_table():
    # the classic OVS learn() L2 switch: table 0 learns dst=src -> output:in_port
    # into table 1, then resubmits there; misses flood
    p = bridge()
    learn = A.Learn(table_id=1, priority=10, idle_timeout=60, specs=(
        A.LearnSpec("match", "eth_dst", 48, src="eth_src"),
        A.LearnSpec("output", src="in_port", n_bits=32),
    ))
    add(p, "", [learn, A.Resubmit(table=1)])
    add(p, "", [A.Output(OFPP_FLOOD)], table=1, priority=0)
    x = run(p, pkt(A1, A2), 1)
    assert x.actions == (dp.Output(102), dp.Output(103))
    mask = int.from_bytes(x.megaflow.mask, "big")
    assert mask & field_int_mask(FIELDS["eth_src"]) == field_int_mask(FIELDS["eth_src"])
    learned = [r for r in p.rules(1) if r.priority == 10]
    assert len(learned) == 1 and learned[0].match == Match.parse(f"dl_dst={A1}")
    assert run(p, pkt(A2, A1), 2).actions == (dp.Output(101),)
    # a cache hit re-runs the learn: refreshes, no new rule, no version churn
    v = p.version
    p.credit(x, 1, 60, 30.0)
    assert p.version == v and learned[0].used == 30.0
    p.expire(80.0)      # A2's rule (learned at 1.0) idled out; A1's was refreshed at 30
    assert [r.match for r in p.rules(1) if r.priority == 10] == [Match.parse(f"dl_dst={A1}")]
    p.expire(95.0)
    assert [r.priority for r in p.rules(1)] == [0]


def test_recirc_id_enters_masks_once_recirculation_exists():
    p = bridge()
    add(p, f"dl_dst={A2}", [A.Output(2)])
    x = run(p, pkt(A1, A2), 1)
    assert int.from_bytes(x.megaflow.mask, "big") == mask_of("in_port", "eth_dst")
    v = p.version
    add(p, "ip", [A.Ct(table=1)], table=0, priority=0x9000)
    add(p, "ct_state=+trk", [A.Output(3)], table=1)
    x = run(p, pkt(A1, A2), 1)
    rid = x.actions[-1].recirc_id
    assert p.version > v + 1 and isinstance(x.actions[-1], dp.Recirc)
    assert int.from_bytes(x.megaflow.mask, "big") & member_int_mask("recirc_id")
    # the recirculated packet resumes in table 1
    k = parse_packet(pkt(A1, A2), 1)
    k.recirc_id, k.ct_state = rid, 0x21
    y = p.xlate(k, None, 1.0)
    assert y.actions == (dp.Output(103),)
    assert y.megaflow.matches(k) and not x.megaflow.matches(k)


def test_output_to_tunnel_port_emits_tunnel_push():
    from slowpath.tunnel import TunnelConfig
    p = bridge(2)
    p.set_port(Port(5, "gnv0", dp_port=105, tunnel=TunnelConfig(remote_ip="192.0.2.9", key=None,
                                                               local_ip="192.0.2.1")))
    p.set_port(Port(6, "gnv1", dp_port=106, tunnel=TunnelConfig(remote_ip=None, key=7)))
    add(p, "in_port=1", [A.SetField("tun_id", 0x1234), A.Output(5)])
    x = run(p, pkt(A1, A2), 1)
    (push,) = x.actions
    assert isinstance(push, dp.TunnelPush)
    assert (push.tnl_dp_port, push.tun_id, push.dst, push.src) == (105, 0x1234, "192.0.2.9", "192.0.2.1")
    # tun_id was written by the rule: the megaflow does not depend on the
    # packet's (tun_flags is read: its O bit goes into the header)
    assert int.from_bytes(x.megaflow.mask, "big") == mask_of("in_port") | member_int_mask("tun_flags")
    # remote_ip=flow: the destination comes from tun_dst, which is then consulted
    add(p, "in_port=2", [A.Output(6)])
    k = parse_packet(pkt(A1, A2), 2)
    k.tun_dst = 0xc6336401
    x = p.xlate(k, None, 1.0)
    assert x.actions[0].dst == "198.51.100.1" and x.actions[0].tun_id == 7
    assert int.from_bytes(x.megaflow.mask, "big") & member_int_mask("tun_dst") == member_int_mask("tun_dst")
    assert run(p, pkt(A1, A2), 2).actions == ()     # no tun_dst: dropped


def test_set_vlan_pcp_on_untagged_pushes_a_tag():
    p = bridge()
    add(p, "in_port=1", [A.SetField("vlan_pcp", 5), A.Output(2)])
    assert run(p, pkt(A1, A2), 1).actions == (dp.PushVlan(0x8100, (5 << 13) | 0x1000), dp.Output(102))
    x = run(p, pkt(A1, A2, vlan=3), 1)
    assert x.actions == (dp.SetMasked("vlan0_tci", 5 << 13, 0xe000), dp.Output(102))
    # only the tag's presence was consulted, not its VID or PCP
    assert int.from_bytes(x.megaflow.mask, "big") == mask_of("in_port") | (
        0x1000 << member_shift("vlan0_tci"))


def test_multipath_bundle_sample():
    p = bridge(4)
    add(p, "in_port=1", [A.Multipath("symmetric_l4", 0, "hrw", 3, "reg1", 0, 16),
                         A.Resubmit(table=1)])
    for link in range(3):
        add(p, f"reg1={link}", [A.Output(2 + (link % 3))], table=1)
    add(p, "in_port=2", [A.Bundle("symmetric_l4", 0, (3, 4))])
    add(p, "in_port=3", [A.Sample(65535, 5), A.Output(1)])
    seen = set()
    for i in range(30):
        data = bytes(Ether(src=A1, dst=A2) / IP(src=f"10.0.0.{i}") / UDP())
        fwd = run(p, data, 1)
        seen.add(fwd.actions)
        assert int.from_bytes(fwd.megaflow.mask, "big") & field_int_mask(FIELDS["ip_src"])
        # reg1 was written by multipath: not part of the megaflow
        assert not int.from_bytes(fwd.megaflow.mask, "big") & field_int_mask(FIELDS["reg1"])
    assert len(seen) == 3
    outs = {run(p, bytes(Ether(src=A1, dst=A2) / IP(src=f"10.0.0.{i}") / UDP()), 2).actions
            for i in range(30)}
    assert outs == {(dp.Output(103),), (dp.Output(104),)}
    p.set_port(Port(4, "p4", dp_port=104, link_down=True))
    assert {run(p, bytes(Ether(src=A1, dst=A2) / IP(src=f"10.0.0.{i}") / UDP()), 2).actions
            for i in range(10)} == {(dp.Output(103),)}
    (s, o) = run(p, pkt(A1, A2), 3).actions
    assert isinstance(s, dp.Sample) and s.probability == 0xffffffff and o == dp.Output(101)


def test_push_onto_two_tags_pushes_one():
    p = bridge()
    add(p, "in_port=1", [A.PushVlan(0x88a8), A.Output(2)])
    data = bytes(Ether(src=A1, dst=A2) / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IP() / UDP())
    x = run(p, data, 1)
    assert x.actions == (dp.PushVlan(0x88a8, 0x1005), dp.Output(102))
    one = run(p, pkt(A1, A2, vlan=5), 1)
    assert one.actions == (dp.PushVlan(0x88a8, 0x1005), dp.Output(102))
    assert not x.megaflow.matches(parse_packet(pkt(A1, A2, vlan=5), 1))


def test_set_arp_op_reaches_the_datapath():
    """An ARP responder's set_field:2->arp_op must rewrite the packet, not
    only the pipeline's view of it (found by controller_stub)."""
    from scapy.layers.l2 import ARP, Ether

    from slowpath.pipeline import FlowMod, Pipeline
    from slowpath.port import Port

    p = Pipeline("secure")
    for n in (1, 2):
        p.set_port(Port(ofport=n, name=f"p{n}", dp_port=n))
    p.flow_mod(FlowMod("add", 0, 100, Match.parse("arp,arp_op=1"), instructions=(
        A.ApplyActions((A.SetField("arp_op", 2, None), A.Output(2))),)), 0)
    frame = bytes(Ether() / ARP(op=1))
    out = p.xlate(parse_packet(frame, 1), frame, 0)
    assert out.megaflow.actions == (dp.SetMasked("nw_proto", 2, 0xFF), dp.Output(2))
