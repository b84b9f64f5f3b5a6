"""Whatever the rules and the packet, translation terminates without raising
and produces a megaflow that matches the packet."""

from hypothesis import given, settings, strategies as st

from slowpath import actions as A
from slowpath.errors import OFError
from slowpath.fields import (
    FLOW_KEY_SIZE, OFPP_ALL, OFPP_CONTROLLER, OFPP_FLOOD, OFPP_IN_PORT, OFPP_LOCAL,
    OFPP_NORMAL, OFPP_TABLE,
)
from slowpath.fields import member_int_mask
from slowpath.flow import FlowKey
from slowpath.match import Match
from slowpath.pipeline import Bucket, FlowMod, GroupMod, MeterBand, MeterMod, Pipeline
from slowpath.port import Port
from slowpath.tunnel import TunnelConfig

PORTS = [1, 2, 3, 4, OFPP_IN_PORT, OFPP_NORMAL, OFPP_FLOOD, OFPP_ALL, OFPP_CONTROLLER,
         OFPP_LOCAL, OFPP_TABLE, 77]
ACTION = st.one_of(
    st.builds(A.Output, st.sampled_from(PORTS)),
    st.builds(A.SetField, st.sampled_from(["eth_dst", "ip_dst", "tcp_dst", "vlan_vid", "reg0",
                                           "tun_dst", "tun_id",
                                           "metadata", "nw_ttl", "vlan_pcp", "mpls_label"]),
              st.integers(0, 0xfff)),
    st.builds(A.Move, st.sampled_from(["reg0", "in_port", "eth_src"]),
              st.sampled_from(["reg1", "eth_dst", "vlan_tci"]), st.just(16)),
    st.just(A.PushVlan()), st.just(A.PopVlan()), st.just(A.PushMpls()), st.just(A.PopMpls(0x800)),
    st.just(A.DecTtl()), st.just(A.DecMplsTtl()), st.just(A.SetNwTtl(3)), st.just(A.CopyTtl(True)),
    st.builds(A.Resubmit, st.sampled_from([OFPP_IN_PORT, 1, 2]), st.sampled_from([None, 0, 1, 2])),
    st.builds(A.Group, st.sampled_from([1, 2, 3])), st.just(A.SetQueue(1)),
    st.just(A.Ct(commit=True, table=2)), st.just(A.CtClear()), st.just(A.Meter(1)),
    st.just(A.OutputReg("reg0", 0, 16)), st.just(A.Note(b"x")),
    st.builds(A.Clone, st.lists(st.builds(A.Output, st.sampled_from(PORTS)), max_size=2).map(tuple)),
    st.just(A.Conjunction(5, 0, 2)), st.just(A.Conjunction(5, 1, 2)),
    st.just(A.Multipath("symmetric_l4", 1, "hrw", 2, "reg0", 0, 8)),
    st.just(A.Bundle("eth_src", 0, (1, 2))), st.just(A.Sample(100, 1)),
    st.just(A.Learn(2, 5, specs=(A.LearnSpec("match", "eth_dst", 48, src="eth_src"),
                                 A.LearnSpec("output", src="in_port", n_bits=16)))),
)
MATCH = st.sampled_from(["", "in_port=1", "ip", "tcp,tp_dst=5", "dl_vlan=3", "conj_id=5",
                         "reg0=5", "mpls", "ip,nw_ttl=1", "arp", "metadata=5/0xff",
                         "ip,nw_dst=10.0.0.0/8"])


EXTRA = st.lists(st.one_of(
    st.builds(A.WriteActions, st.lists(ACTION, max_size=2).map(tuple)),
    st.just(A.ClearActions()), st.just(A.WriteMetadata(5, 0xff)), st.just(A.Meter(1)),
    st.builds(A.GotoTable, st.integers(1, 3))), max_size=2)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), MATCH, st.integers(0, 3),
                          st.lists(ACTION, max_size=4), EXTRA), max_size=10),
       st.lists(st.binary(min_size=FLOW_KEY_SIZE, max_size=FLOW_KEY_SIZE), min_size=1, max_size=4),
       st.integers(1, 3))
def test_xlate_never_raises(rules, keys, in_port):
    p = Pipeline(miss_to_controller=True)
    for i in (1, 2, 3):
        p.set_port(Port(i, tag=10 if i == 3 else None))
    p.set_port(Port(4, tunnel=TunnelConfig(remote_ip=None, key=None, ttl="inherit")))
    p.meter_mod(MeterMod("add", 1, frozenset({"kbps"}), (MeterBand("drop", 10),)))
    p.group_mod(GroupMod("add", "all", 1, (Bucket((A.Output(1), A.Resubmit(table=1))),)))
    p.group_mod(GroupMod("add", "select", 2, (Bucket((A.Group(1),), 1), Bucket((A.Output(2),), 1))))
    p.group_mod(GroupMod("add", "ff", 3, (Bucket((A.Output(3),), watch_port=3),)))
    for table, m, prio, acts, extra in rules:
        try:
            p.flow_mod(FlowMod("add", table, prio, Match.parse(m),
                               instructions=(A.ApplyActions(tuple(acts)), *extra)), 0.0)
        except OFError:
            pass
    for raw in keys:
        k = FlowKey(raw)
        k.in_port = in_port
        k.recirc_id = 0
        x = p.xlate(k, b"\x00" * 60, 1.0)
        assert x.megaflow.matches(k)
        ref = p.xlate(k, None, 1.0, side_effects=False)
        mask = int.from_bytes(ref.megaflow.mask, "big")
        for other in keys:   # the megaflow invariant, on arbitrary keys
            k2 = FlowKey.from_int((int(k) & mask) | (int.from_bytes(other, "big") & ~mask))
            if not mask & member_int_mask("recirc_id"):
                k2.recirc_id = 0    # only ids the pipeline allocated ever reach it
            assert p.xlate(k2, None, 1.0, side_effects=False).actions == ref.actions
        p.packet_out(k, b"\x00" * 60, [A.Output(OFPP_TABLE)], 2.0)
