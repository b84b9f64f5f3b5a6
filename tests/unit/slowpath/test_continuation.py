"""controller(pause) freezes the rest of a translation; NXT_RESUME runs it."""

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath.continuation import NXR_STALE, ContinuationStore
from slowpath.errors import OFError
from slowpath.fields import FIELDS
from slowpath.flow import parse_packet
from slowpath.pipeline import Bucket, GroupMod
from tests.unit.slowpath.pipelines import add, bridge
from tests.unit.slowpath.pipelines import outputs as port_list

DATA = bytes(Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
             / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
PAUSE = A.Controller(userdata=b"\x01\x02", pause=True)


def outputs(x):
    return port_list(x.actions)


def pause(p, in_port=1):
    x = p.xlate(parse_packet(DATA, in_port), DATA, 1.0)
    (pin,) = x.packet_ins
    assert pin.pause and pin.continuation and x.slow
    assert isinstance(x.actions[-1], dp.Userspace)     # nothing after the pause runs
    return x, pin


def resume(p, pin, data=DATA, **regs):
    key = parse_packet(data, pin.key.in_port)
    key.regs = pin.key.regs
    for name, value in regs.items():
        key.set(FIELDS[name], value)
    return p.resume(key, data, pin.continuation, 2.0)


def test_pause_then_resume_runs_the_rest_of_the_action_list():
    p = bridge()
    add(p, "in_port=1", [PAUSE, A.Output(2)])
    x, pin = pause(p)
    assert outputs(x) == [] and pin.userdata == b"\x01\x02"
    assert outputs(resume(p, pin)) == [102]


def test_resume_unwinds_resubmits_instructions_and_the_action_set():
    p = bridge()
    add(p, "in_port=1", instructions=(
        A.ApplyActions((A.Resubmit(table=1), A.Output(3))),
        A.WriteActions((A.Output(4),)),
        A.GotoTable(2)))
    add(p, "", [A.Output(2), PAUSE, A.Output(2)], table=1)
    add(p, "", [A.Output(2)], table=2)
    x, pin = pause(p)
    assert outputs(x) == [102] and pin.table_id == 1
    # inner rest, back in table 0: rest of its actions, write_actions, goto, action set
    assert outputs(resume(p, pin)) == [102, 103, 102, 104]


def test_resume_sees_the_metadata_the_controller_wrote():
    """OVN's put_dhcp_opts: the controller sets a result bit in a register."""
    p = bridge()
    add(p, "in_port=1", [PAUSE, A.Resubmit(table=1)])
    add(p, "reg0=0x8/0x8", [A.Output(2)], table=1, priority=200)
    add(p, "", [A.Output(3)], table=1)
    _, pin = pause(p)
    assert outputs(resume(p, pin)) == [103]
    assert outputs(resume(p, pin, reg0=8)) == [102]


def test_resume_uses_the_packet_the_controller_handed_back():
    p = bridge()
    add(p, "in_port=1", [PAUSE, A.Resubmit(table=1)])
    add(p, "ip,nw_dst=10.0.0.9", [A.Output(4)], table=1)
    _, pin = pause(p)
    new = bytes(Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
                / IP(src="10.0.0.1", dst="10.0.0.9") / UDP(sport=1, dport=2))
    assert outputs(resume(p, pin)) == []
    assert outputs(resume(p, pin, data=new)) == [104]


def test_goto_miss_after_resume_drops_the_action_set():
    p = bridge()
    add(p, "in_port=1", instructions=(A.ApplyActions((PAUSE,)),
                                      A.WriteActions((A.Output(4),)), A.GotoTable(5)))
    _, pin = pause(p)
    assert outputs(resume(p, pin)) == []


def test_a_resumed_translation_can_pause_again():
    p = bridge()
    add(p, "in_port=1", [PAUSE, A.Output(2), PAUSE, A.Output(3)])
    _, pin = pause(p)
    x = resume(p, pin)
    (pin2,) = x.packet_ins
    assert outputs(x) == [102] and pin2.continuation != pin.continuation
    assert outputs(resume(p, pin2)) == [103]


def test_pause_inside_a_clone_or_group_bucket_freezes_only_their_rest():
    """OVN runs router pipelines in clone(): a pause there freezes the rest of
    the clone; what follows the clone goes on with the original packet."""
    p = bridge()
    p.group_mod(GroupMod("add", "all", 1, (Bucket(actions=(PAUSE, A.Output(3))),)))
    add(p, "in_port=1", [A.Clone((PAUSE, A.Output(2))), A.Group(1), A.Output(4)])
    x = p.xlate(parse_packet(DATA, 1), DATA, 1.0)
    assert outputs(x) == [104] and x.slow
    in_clone, in_bucket = x.packet_ins
    assert in_clone.continuation and in_bucket.continuation
    assert outputs(resume(p, in_clone)) == [102]
    assert outputs(resume(p, in_bucket)) == [103]


def test_resubmit_depth_counts_only_resubmits_to_earlier_tables():
    """As OVS: 254 tables chained forward translate; a resubmit loop stops."""
    import sys
    from slowpath.xlate import RECURSION_LIMIT
    p = bridge()
    for t in range(254):
        add(p, "", [A.Resubmit(table=t + 1)], table=t)
    add(p, "", [A.Output(2)], table=254)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(RECURSION_LIMIT)
    try:
        assert outputs(p.xlate(parse_packet(DATA, 1), DATA, 1.0)) == [102]
    finally:
        sys.setrecursionlimit(old)
    q = bridge()
    add(q, "", [A.Output(2), A.Resubmit(table=0)])
    assert q.xlate(parse_packet(DATA, 1), DATA, 1.0).actions == ()


def test_revalidation_does_not_pause_or_register():
    p = bridge()
    add(p, "in_port=1", [PAUSE, A.Output(2)])
    x = p.revalidate(parse_packet(DATA, 1), 1.0)
    assert x.packet_ins == [] and len(p.continuations) == 0
    assert any(isinstance(a, dp.Userspace) for a in x.actions)


@pytest.mark.parametrize("cont", [
    b"", b"\x80", b"\x80\x00\x00\x02xxxx", b"\x80\x00\x00\x40" + bytes(8),
    b"\x80\x00\x00\x14" + bytes(16) + bytes(4),
])
def test_garbage_continuations_are_stale(cont):
    p = bridge()
    with pytest.raises(OFError) as e:
        p.resume(parse_packet(DATA, 1), DATA, cont, 1.0)
    assert e.value.code == NXR_STALE


def test_continuations_of_another_bridge_or_evicted_are_stale():
    p, q = bridge(), bridge()
    add(p, "in_port=1", [PAUSE, A.Output(2)])
    _, pin = pause(p)
    with pytest.raises(OFError):
        q.resume(parse_packet(DATA, 1), DATA, pin.continuation, 1.0)
    p.continuations.capacity = 1
    pause(p)
    with pytest.raises(OFError):
        resume(p, pin)


def test_store_keeps_only_the_newest():
    s = ContinuationStore(capacity=3)
    conts = [s.freeze(object(), 0, 0) for _ in range(5)]
    assert len(s) == 3
    s.thaw(conts[-1])
    with pytest.raises(OFError):
        s.thaw(conts[0])
    assert len(conts[0]) % 8 == 0      # nested property list, 8-byte aligned
