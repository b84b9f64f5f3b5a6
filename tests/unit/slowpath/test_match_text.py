"""Match text (ovs-ofctl syntax), datapath-action text, and trace output."""

import pytest

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath.flow import FlowKey
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port
from slowpath.trace import parse_flow, trace


@pytest.mark.parametrize("text", [
    "in_port=1",
    "icmp,in_port=1,nw_dst=10.0.0.0/24",
    "tcp,dl_src=00:00:00:00:00:01,tp_dst=80",
    "udp6,ipv6_src=2001:db8::/32,tp_src=53",
    "arp,arp_spa=1.2.3.4,arp_op=1",
    "ct_state=-new+trk,ct_zone=5,reg3=0x5,tcp",
    "dl_vlan=10,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00",
    "vlan_tci=0x0000",
    "metadata=0x10/0xff,tun_id=0x5,tun_src=1.1.1.1",
    "tcp,tcp_flags=+syn-ack",
    "ip,nw_frag=later",
    "ip,nw_frag=yes",
    "ipv6,nw_frag=not_later",
    "icmp6,icmp_type=135,nd_target=fe80::1",
])
def test_parse_to_string_round_trip(text):
    m = Match.parse(text)
    again = Match.parse(m.to_string())
    assert again == m, (text, m.to_string())


def test_to_string_shapes():
    assert Match.parse("in_port=1,icmp,nw_dst=10.0.0.0/24").to_string() == \
        "icmp,in_port=1,nw_dst=10.0.0.0/24"
    assert Match.from_fields({"in_port": 1, "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")}
                             ).to_string() == "in_port=1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"
    assert Match.parse("tcp,tcp_src=1").get("tp_src") == (1, 0xffff)
    assert Match().to_string() == ""


def test_frag_keywords_follow_ovs():
    first = FlowKey.from_fields(dl_type=0x800, nw_frag=1)
    later = FlowKey.from_fields(dl_type=0x800, nw_frag=3)
    whole = FlowKey.from_fields(dl_type=0x800, nw_frag=0)
    assert [Match.parse("ip,ip_frag=yes").matches(k) for k in (first, later, whole)] == [1, 1, 0]
    assert [Match.parse("ip,ip_frag=no").matches(k) for k in (first, later, whole)] == [0, 0, 1]
    assert [Match.parse("ip,ip_frag=first").matches(k) for k in (first, later, whole)] == [1, 0, 0]
    assert [Match.parse("ip,ip_frag=not_later").matches(k) for k in (first, later, whole)] == [1, 0, 1]
    assert Match.parse("ip,nw_frag=yes").to_string() == "ip,nw_frag=yes"


def test_matches_and_covers():
    m = Match.parse("ip,nw_dst=10.0.0.0/8")
    assert m.matches(FlowKey.from_fields(dl_type=0x800, nw_dst=0x0a010203))
    assert not m.matches(FlowKey.from_fields(dl_type=0x800, nw_dst=0x0b010203))
    assert Match.parse("ip,nw_dst=10.1.0.0/16").covers(m)
    assert not m.covers(Match.parse("ip,nw_dst=10.1.0.0/16"))


def test_dpaction_text():
    assert dp.format_actions(()) == "drop"
    acts = (dp.SetMasked("dl_dst", 0x0a, 0xffffffffffff), dp.push_vlan(10, 3), dp.Output(2),
            dp.PopVlan(), dp.SetMasked("nw_src", 0x0a000001, 0xffffff00), dp.Recirc(5),
            dp.Ct(commit=True, zone=3), dp.Userspace("controller", 1))
    assert dp.format_actions(acts) == (
        "set(eth(dst=00:00:00:00:00:0a)),push_vlan(vid=10,pcp=3),output:2,pop_vlan,"
        "set(ipv4(src=10.0.0.1/255.255.255.0)),recirc(0x5),ct(commit,zone=3),"
        "userspace(kind=controller,cookie=1)")
    assert len({dp.Output(1), dp.Output(1), dp.PopVlan(), dp.PopVlan()}) == 2


def test_trace_output():
    p = Pipeline()
    for i in (1, 2):
        p.set_port(Port(i))
    p.flow_mod(FlowMod("add", 0, 10, Match.parse("icmp"),
                       instructions=(A.ApplyActions((A.DecTtl(), A.Output(2))),)), 0)
    out = trace(p, "in_port=1,icmp,nw_dst=10.0.0.2,nw_ttl=64")
    assert "0. icmp, priority 10" in out
    assert out.rstrip().endswith("Datapath actions: set(ip(ttl=63)),output:2")
    assert "Megaflow: icmp,in_port=1,nw_ttl=64" in out
    assert "Final flow: icmp,in_port=1,nw_dst=10.0.0.2,nw_ttl=63" in out
    assert parse_flow("in_port=3,tcp,tp_dst=22").tp_dst == 22


from hypothesis import given, settings, strategies as st  # noqa: E402

from slowpath.fields import FIELDS  # noqa: E402

_PROTO_FIELDS = {
    "": ["in_port", "eth_src", "eth_dst", "reg0", "reg5", "metadata", "tun_id", "tun_src",
         "pkt_mark", "ct_mark", "ct_zone", "ct_state", "vlan_tci", "tun_metadata3", "conj_id"],
    "tcp": ["ip_src", "ip_dst", "tcp_src", "tcp_dst", "tcp_flags", "nw_ttl", "ip_dscp", "nw_ecn"],
    "udp6": ["ipv6_src", "ipv6_dst", "udp_dst", "ipv6_label"],
    "arp": ["arp_spa", "arp_tpa", "arp_op", "arp_sha", "arp_tha"],
    "icmp": ["icmp_type", "icmp_code", "ip_src"],
    "mpls": ["mpls_label", "mpls_tc", "mpls_ttl"],
    "icmp6,icmp_type=135": ["nd_target", "nd_sll", "ipv6_src"],
    "icmp6,icmp_type=136": ["nd_target", "nd_tll"],
    "ip": ["nw_tos", "ip_frag", "ct_nw_src", "ct_tp_dst", "nw_proto"],
    "ipv6": ["ct_ipv6_src", "ipv6_exthdr", "ip_frag"],
    "eth_type=0x88e7": ["pbb_isid"],
    "eth": ["xreg1", "xxreg1", "tun_ipv6_src", "tun_flags", "tun_gbp_id", "dp_hash",
            "recirc_id", "actset_output", "skb_priority", "ct_label", "dl_vlan", "vlan_pcp"],
}


@st.composite
def matches(draw):
    proto = draw(st.sampled_from(sorted(_PROTO_FIELDS)))
    m = Match.parse(proto) if proto not in ("", "eth") else Match()
    names = draw(st.lists(st.sampled_from(_PROTO_FIELDS[proto] + _PROTO_FIELDS[""]),
                          max_size=5, unique=True))
    for n in names:
        f = FIELDS[n]
        v = draw(st.integers(0, f.max))
        mk = draw(st.integers(0, f.max)) if f.maskable and draw(st.booleans()) else f.max
        m.set_field(n, v & mk, mk)
    return m


@settings(max_examples=300, deadline=None)
@given(matches())
def test_to_string_parse_round_trip_property(m):
    assert Match.parse(m.to_string()) == m, m.to_string()
