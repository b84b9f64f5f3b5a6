"""Patch ports: a packet output to one enters the peer bridge on the other
end within the same translation (one megaflow), as OVS does."""

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath.flow import parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline, RecircTable
from slowpath.port import Port

DATA = bytes(Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
             / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))


def bridges():
    """a: 1 (dp 101), 2 = patch to b's 1, 3 (dp 103); b: 1 = patch, 2 (dp 202)."""
    a, b = Pipeline("secure"), Pipeline("secure")
    a.set_port(Port(1, "a1", dp_port=101))
    a.set_port(Port(2, "a-to-b"))
    a.set_port(Port(3, "a3", dp_port=103))
    b.set_port(Port(1, "b-to-a"))
    b.set_port(Port(2, "b2", dp_port=202))
    a.patch_peers[2] = (b, 1)
    b.patch_peers[1] = (a, 2)
    RecircTable.join([a, b])
    return a, b


def add(p, text, actions=(), table=0, priority=100):
    p.flow_mod(FlowMod("add", table, priority, Match.parse(text),
                       instructions=(A.ApplyActions(tuple(actions)),)), 0.0)


def run(p, data=DATA, in_port=1, **kw):
    return p.xlate(parse_packet(data, in_port), data, 1.0, **kw)


def test_the_packet_crosses_into_the_peer_within_one_translation():
    a, b = bridges()
    add(a, "in_port=1", [A.SetField("reg0", 5), A.Output(2)])
    add(b, "in_port=1,reg0=0", [A.Output(2)])          # registers start afresh there
    x = run(a)
    assert x.actions == (dp.Output(202),)
    assert [p for p, _ in x.peers] == [b]
    assert Match.parse("in_port=1").mask & int.from_bytes(x.megaflow.mask, "big")


def test_changes_made_in_the_peer_do_not_leak_back():
    a, b = bridges()
    add(a, "in_port=1", [A.Output(2), A.Output(3)])
    add(b, "in_port=1", [A.SetField("eth_dst", 0x0a0000000009), A.Output(2)])
    acts = run(a).actions
    assert [type(x) for x in acts] == [dp.SetMasked, dp.Output, dp.SetMasked, dp.Output]
    assert (acts[1], acts[3]) == (dp.Output(202), dp.Output(103))
    assert acts[2].value == 0x000000000002             # eth_dst back to the original


def test_conntrack_recirculation_resumes_in_the_peer():
    a, b = bridges()
    add(a, "in_port=1", [A.Output(2)])
    add(b, "ip,in_port=1", [A.Ct(zone=1, table=1)])
    add(b, "", [A.Output(2)], table=1)
    x = run(a)
    (rid,) = [r.recirc_id for r in x.actions if isinstance(r, dp.Recirc)]
    key = parse_packet(DATA, 1)
    key.recirc_id = rid                                 # the datapath's in_port: a's port 1
    y = a.xlate(key, DATA, 1.0)
    assert y.actions == (dp.Output(202),) and [p for p, _ in y.peers] == [b]


def test_packet_ins_and_mac_learning_belong_to_the_peer():
    a, b = bridges()
    add(a, "in_port=1", [A.Output(2)])
    add(b, "in_port=1", [A.Output(0xfffffffa), A.Controller(userdata=b"b")])  # NORMAL
    x = run(a)
    (pin,) = x.packet_ins
    assert pin.pipeline is b and pin.key.in_port == 1
    assert b.mac_learning.lookup(0x000000000001, 0, 1.0) == 1
    assert a.mac_learning.lookup(0x000000000001, 0, 1.0) is None


def test_a_patch_loop_is_bounded():
    """a:2 -> b:1, b:3 -> a:4, and rules that send each arrival on: like a
    resubmit loop, it stops at the recursion limit and drops."""
    a, b = bridges()
    a.set_port(Port(4, "a-to-b-2"))
    b.set_port(Port(3, "b-to-a-2"))
    a.patch_peers[4], b.patch_peers[3] = (b, 3), (a, 4)
    add(a, "in_port=1", [A.Output(3), A.Output(2)])
    add(a, "in_port=4", [A.Output(2)])
    add(b, "in_port=1", [A.Output(3)])
    x = run(a)
    assert x.actions == ()


def test_a_rule_change_in_the_peer_revalidates():
    a, b = bridges()
    add(a, "in_port=1", [A.Output(2)])
    add(b, "in_port=1", [A.Output(2)])
    x = run(a)
    ((peer, version),) = x.peers
    add(b, "in_port=1", [], priority=200)
    assert peer.version != version
