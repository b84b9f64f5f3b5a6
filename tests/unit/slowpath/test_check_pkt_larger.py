"""check_pkt_larger: one megaflow, a datapath check_pkt_len that picks the
branch per packet -- and the branch always agrees with a fresh translation."""

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath.errors import OFError
from slowpath.flow import parse_packet
from tests.unit.slowpath.pipelines import add, bridge, execute, outputs

CHECK = A.CheckPktLarger(100, "reg0", 3)


def frame(payload_len: int, vlan: int | None = None) -> bytes:
    e = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
    if vlan is not None:
        e = e / Dot1Q(vlan=vlan)
    return bytes(e / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2)
                 / (b"x" * payload_len))


def mtu_pipeline():
    p = bridge()
    add(p, "in_port=1", [CHECK, A.Resubmit(table=1)])
    add(p, "reg0=0x8/0x8", [A.Output(2)], table=1, priority=200)
    add(p, "", [A.Output(3)], table=1)
    return p


def run_cached(actions, data):
    return [port for port, _ in execute(actions, data)]


def test_one_megaflow_both_branches():
    p = mtu_pipeline()
    x = p.xlate(parse_packet(frame(10), 1), frame(10), 1.0)
    assert x.actions == (dp.CheckPktLen(100, (dp.Output(102),), (dp.Output(103),)),)
    assert run_cached(x.actions, frame(10)) == [103]
    assert run_cached(x.actions, frame(200)) == [102]
    assert "check_pkt_len(size=100,gt(output:102),le(output:103))" == str(x.actions[0])


def test_vlan_tags_are_not_counted():
    # 14 + 4 + 20 + 8 + 58 = 104 bytes on the wire, 100 without the tag
    assert run_cached(mtu_pipeline().xlate(parse_packet(frame(10), 1), frame(10), 1.0).actions,
                      frame(58, vlan=5)) == [103]
    assert odp_execute.l2_len_without_vlans(frame(58, vlan=5)) == 100


def test_later_instructions_and_the_action_set_run_in_both_branches():
    p = bridge()
    add(p, "in_port=1", instructions=(A.ApplyActions((CHECK,)),
                                      A.WriteActions((A.Output(4),)), A.GotoTable(1)))
    add(p, "reg0=0x8/0x8", [A.Output(2)], table=1, priority=200)
    add(p, "", [A.Output(3)], table=1)
    (cpl,) = p.xlate(parse_packet(frame(10), 1), frame(10), 1.0).actions
    assert outputs(cpl.gt) == [102, 104] and outputs(cpl.le) == [103, 104]


def test_inside_a_clone_the_fork_ends_with_the_clone():
    p = bridge()
    add(p, "in_port=1", [A.Clone((CHECK, A.Resubmit(table=1))), A.Output(4)])
    add(p, "reg0=0x8/0x8", [A.Output(2)], table=1, priority=200)
    add(p, "", [A.Output(3)], table=1)
    x = p.xlate(parse_packet(frame(10), 1), frame(10), 1.0)
    assert run_cached(x.actions, frame(10)) == [103, 104]
    assert run_cached(x.actions, frame(200)) == [102, 104]


def test_packet_ins_only_from_the_branch_the_packet_takes():
    p = bridge()
    add(p, "in_port=1", [CHECK, A.Resubmit(table=1)])
    add(p, "reg0=0x8/0x8", [A.Controller(userdata=b"big")], table=1, priority=200)
    add(p, "", [A.Output(3)], table=1)
    small = p.xlate(parse_packet(frame(10), 1), frame(10), 1.0)
    big = p.xlate(parse_packet(frame(200), 1), frame(200), 1.0)
    assert small.packet_ins == [] and [pi.userdata for pi in big.packet_ins] == [b"big"]
    assert small.actions == big.actions      # same megaflow either way


def test_pause_in_the_taken_branch_resumes_with_the_bit_set():
    p = bridge()
    add(p, "in_port=1", [CHECK, A.Controller(pause=True), A.Resubmit(table=1)])
    add(p, "reg0=0x8/0x8", [A.Output(2)], table=1, priority=200)
    add(p, "", [A.Output(3)], table=1)
    x = p.xlate(parse_packet(frame(200), 1), frame(200), 1.0)
    (pin,) = x.packet_ins
    assert pin.key.reg0 & 8
    key = parse_packet(frame(200), 1)
    key.regs = pin.key.regs
    assert outputs(p.resume(key, frame(200), pin.continuation, 2.0).actions) == [102]


def test_bad_destination_is_rejected():
    p = bridge()
    for bad in (A.CheckPktLarger(100, "reg0", 32), A.CheckPktLarger(100, "eth_type", 0)):
        with pytest.raises(OFError):
            add(p, "in_port=1", [bad])
    assert list(p.rules()) == []


@settings(max_examples=60, deadline=None)
@given(first=st.integers(0, 300), later=st.integers(0, 300), limit=st.integers(60, 300),
       vlan=st.booleans())
def test_cached_branch_equals_fresh_translation(first, later, limit, vlan):
    """The megaflow made from one packet decides any other packet it covers
    exactly as translating that packet would."""
    p = bridge()
    add(p, "in_port=1", [A.CheckPktLarger(limit, "reg1", 0), A.Resubmit(table=1)])
    add(p, "reg1=1", [A.Output(2)], table=1, priority=200)
    add(p, "", [A.Output(3)], table=1)
    f1, f2 = frame(first, 7 if vlan else None), frame(later, 7 if vlan else None)
    cached = p.xlate(parse_packet(f1, 1), f1, 1.0)
    fresh = p.xlate(parse_packet(f2, 1), f2, 1.0)
    assert cached.megaflow.matches(bytes(parse_packet(f2, 1)))
    assert run_cached(cached.actions, f2) == run_cached(fresh.actions, f2)
