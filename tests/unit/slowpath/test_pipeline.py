"""Flow-mod, group-mod, meter-mod semantics and error codes (OpenFlow 1.3)."""

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from slowpath import actions as A
from slowpath.errors import OFError
from slowpath.fields import OFPP_NORMAL
from slowpath.flow import FlowKey
from slowpath.match import Match
from slowpath.pipeline import (
    Bucket, FlowMod, GroupMod, MeterBand, MeterMod, Pipeline,
)
from slowpath.port import Port


def fm(cmd="add", match="", priority=100, actions=(A.Output(1),), table=0, **kw):
    insts = kw.pop("instructions", None)
    if insts is None:
        insts = (A.ApplyActions(tuple(actions)),)
    return FlowMod(cmd, table, priority, Match.parse(match), instructions=insts, **kw)


def err(e: OFError):
    return (e.type, e.code)


@pytest.fixture
def p():
    pl = Pipeline("secure")
    for i in (1, 2, 3):
        pl.set_port(Port(i, f"p{i}"))
    return pl


def key(**kw):
    return FlowKey.from_fields(**kw)


def test_add_replaces_identical_and_keeps_or_resets_counters(p):
    p.flow_mod(fm(match="in_port=1", cookie=1), 0)
    (r,) = p.rules()
    r.packet_count, r.byte_count = 5, 500
    p.flow_mod(fm(match="in_port=1", cookie=2, actions=(A.Output(2),)), 10)
    (r2,) = p.rules()
    assert r2 is not r and r2.cookie == 2 and r2.packet_count == 5 and r2.created == 10
    p.flow_mod(fm(match="in_port=1", flags=frozenset({"reset_counts"})), 11)
    assert next(p.rules()).packet_count == 0
    # a different priority is a different rule
    p.flow_mod(fm(match="in_port=1", priority=5), 12)
    assert len(list(p.rules())) == 2


def test_check_overlap(p):
    p.flow_mod(fm(match="ip,nw_dst=10.0.0.0/8"), 0)
    with pytest.raises(OFError) as e:
        p.flow_mod(fm(match="ip,nw_src=1.1.1.1", flags=frozenset({"check_overlap"})), 0)
    assert err(e.value) == (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_OVERLAP)
    # different priority or disjoint: fine
    p.flow_mod(fm(match="ip,nw_src=1.1.1.1", priority=7, flags=frozenset({"check_overlap"})), 0)
    p.flow_mod(fm(match="ip,nw_dst=11.0.0.1", flags=frozenset({"check_overlap"})), 0)
    assert len(list(p.rules())) == 3


def test_modify_loose_and_strict_do_not_add(p):
    p.flow_mod(fm(match="ip,nw_dst=10.0.0.1", cookie=0x10), 0)
    p.flow_mod(fm(match="ip,nw_dst=10.0.0.2", priority=50, cookie=0x20), 0)
    p.flow_mod(fm("modify", match="ip", actions=(A.Output(3),)), 1)
    assert all(r.instructions == (A.ApplyActions((A.Output(3),)),) for r in p.rules())
    assert {r.cookie for r in p.rules()} == {0x10, 0x20}        # cookies untouched
    p.flow_mod(fm("modify_strict", match="ip,nw_dst=10.0.0.2", priority=100,
                  actions=(A.Output(2),)), 2)                   # wrong priority: nothing
    assert all(r.instructions == (A.ApplyActions((A.Output(3),)),) for r in p.rules())
    p.flow_mod(fm("modify", match="ip,nw_dst=10.0.0.9"), 3)     # no match: no add (OF1.1+)
    assert len(list(p.rules())) == 2
    # cookie filter
    p.flow_mod(fm("modify", match="", actions=(A.Output(1),), cookie=0x20, cookie_mask=0xff), 4)
    assert {r.cookie: r.instructions[0].actions[0].port for r in p.rules()} == {0x10: 3, 0x20: 1}


def test_delete_filters_and_flow_removed(p):
    sfr = frozenset({"send_flow_rem"})
    p.flow_mod(fm(match="in_port=1", actions=(A.Output(2),), flags=sfr, cookie=1), 0)
    p.flow_mod(fm(match="in_port=2", actions=(A.Output(3),), flags=sfr, cookie=2), 0)
    p.flow_mod(fm(match="in_port=3", actions=(A.Output(1),), table=3), 0)
    assert p.flow_mod(fm("delete", table=0, out_port=1), 5) == []        # nobody outputs to 1 in t0
    (ev,) = p.flow_mod(fm("delete", table=0xff, out_port=2), 5)
    assert ev.reason == ofp.OFPRR_DELETE and ev.rule.cookie == 1 and ev.duration == 5
    assert p.flow_mod(fm("delete_strict", match="in_port=2", priority=1), 6) == []
    (ev,) = p.flow_mod(fm("delete_strict", match="in_port=2", priority=100), 6)
    assert ev.rule.cookie == 2
    p.flow_mod(fm("delete", table=0xff), 7)
    assert list(p.rules()) == []


def test_timeouts(p):
    sfr = frozenset({"send_flow_rem"})
    p.flow_mod(fm(match="in_port=1", idle_timeout=10, flags=sfr), 0)
    p.flow_mod(fm(match="in_port=2", hard_timeout=5, idle_timeout=100, flags=sfr), 0)
    x = p.xlate(key(in_port=1), b"x" * 60, 8.0)
    assert x.rules[0].packet_count == 1 and x.rules[0].byte_count == 60
    assert p.next_timeout() == 5
    (ev,) = p.expire(6.0)
    assert ev.reason == ofp.OFPRR_HARD_TIMEOUT
    assert p.expire(17.0) == []         # used at 8: idle until 18
    (ev,) = p.expire(18.0)
    assert ev.reason == ofp.OFPRR_IDLE_TIMEOUT


def test_credit_and_counter_flags(p):
    p.flow_mod(fm(match="in_port=1", flags=frozenset({"no_byt_counts"})), 0)
    x = p.xlate(key(in_port=1), b"x" * 10, 1.0)
    p.credit(x, 3, 300, 2.0)
    (r,) = p.rules()
    assert (r.packet_count, r.byte_count, r.used) == (4, 0, 2.0)
    assert p.aggregate_stats() == (4, 0, 1)
    assert p.table_stats()[0] == (0, 1, 1, 1)


@pytest.mark.parametrize("mod, code", [
    (lambda: fm(table=0xff), (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_TABLE_ID)),
    (lambda: fm("frob"), (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_COMMAND)),
    (lambda: fm(flags=frozenset({"bogus"})), (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_FLAGS)),
    (lambda: fm(instructions=(A.GotoTable(0),)), (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_TABLE_ID)),
    (lambda: fm(table=3, instructions=(A.GotoTable(2),)), (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_TABLE_ID)),
    (lambda: fm(instructions=(A.ApplyActions(()), A.ApplyActions(()))),
     (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNSUP_INST)),
    (lambda: fm(instructions=(A.Meter(9),)), (ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_UNKNOWN_METER)),
    (lambda: fm(actions=(A.Output(0),)), (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT)),
    (lambda: fm(actions=(A.Output(0xffffff01),)), (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT)),
    (lambda: fm(actions=(A.Group(7),)), (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_GROUP)),
    (lambda: fm(actions=(A.SetField("nope", 1),)), (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_SET_TYPE)),
    (lambda: fm(actions=(A.SetField("ct_state", 1),)), (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_SET_TYPE)),
    (lambda: fm(actions=(A.SetField("eth_dst", 1 << 48),)),
     (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_SET_ARGUMENT)),
    (lambda: fm(match="ip", actions=(A.SetField("tcp_dst", 80),)),
     (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_MATCH_INCONSISTENT)),
    (lambda: fm(actions=(A.PushVlan(0x800),)), (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_ARGUMENT)),
    (lambda: FlowMod("add", 0, 1, Match(0, 0), instructions=("junk",)),
     (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNKNOWN_INST)),
    (lambda: fm(actions=("junk",)), (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_TYPE)),
])
def test_flow_mod_errors_change_nothing(p, mod, code):
    p.flow_mod(fm(match="in_port=3"), 0)
    before = [(r.match, r.priority, r.instructions) for r in p.rules()]
    v = p.version
    with pytest.raises(OFError) as e:
        p.flow_mod(mod(), 1)
    assert err(e.value) == code
    assert [(r.match, r.priority, r.instructions) for r in p.rules()] == before and p.version == v


def test_match_errors():
    with pytest.raises(OFError) as e:
        Match.parse("tp_dst=80")
    assert err(e.value) == (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ)
    with pytest.raises(OFError) as e:
        Match.from_fields({"ip_proto": (6, 0xf0), "eth_type": 0x800})
    assert err(e.value) == (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_MASK)
    with pytest.raises(OFError) as e:
        Match.from_fields({"eth_dst": (0xff, 0x0f)})
    assert err(e.value) == (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_WILDCARDS)
    with pytest.raises(OFError) as e:
        Match.from_fields({"frobnitz": 1})
    assert err(e.value) == (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD)
    with pytest.raises(OFError) as e:
        Match.parse("vlan_pcp=9")
    assert err(e.value) == (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_VALUE)
    # raw matches (e.g. decoded OXM) are checked when a flow-mod uses them
    p = Pipeline()
    m = Match()
    m.set_field("tcp_dst", 80)
    with pytest.raises(OFError) as e:
        p.flow_mod(FlowMod("add", 0, 1, m), 0)
    assert err(e.value) == (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ)


def test_groups(p):
    sfr = frozenset({"send_flow_rem"})
    with pytest.raises(OFError) as e:
        p.group_mod(GroupMod("modify", "all", 1, ()))
    assert err(e.value) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_UNKNOWN_GROUP)
    p.group_mod(GroupMod("add", "all", 1, (Bucket((A.Output(2),)),)))
    with pytest.raises(OFError) as e:
        p.group_mod(GroupMod("add", "all", 1, ()))
    assert err(e.value) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_GROUP_EXISTS)
    with pytest.raises(OFError) as e:
        p.group_mod(GroupMod("add", "indirect", 2, ()))
    assert err(e.value) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_INVALID_GROUP)
    with pytest.raises(OFError) as e:
        p.group_mod(GroupMod("add", "ff", 2, (Bucket((A.Output(2),)),)))
    assert err(e.value) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_BAD_WATCH)
    p.group_mod(GroupMod("add", "indirect", 2, (Bucket((A.Group(1),)),)))
    with pytest.raises(OFError) as e:
        p.group_mod(GroupMod("modify", "indirect", 1, (Bucket((A.Group(2),)),)))
    assert err(e.value) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_LOOP)
    p.flow_mod(fm(match="in_port=1", actions=(A.Group(1),), flags=sfr), 0)
    assert [g.group_id for g in p.group_stats()] == [1, 2]
    # deleting a group removes the rules that use it
    (ev,) = p.group_mod(GroupMod("delete", group_id=1), 3)
    assert ev.reason == ofp.OFPRR_GROUP_DELETE
    assert list(p.rules()) == []


def test_meters(p):
    with pytest.raises(OFError) as e:
        p.meter_mod(MeterMod("add", 0, frozenset({"kbps"}), (MeterBand("drop", 100),)))
    assert err(e.value) == (ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_INVALID_METER)
    with pytest.raises(OFError) as e:
        p.meter_mod(MeterMod("add", 1, frozenset({"kbps", "pktps"}), ()))
    assert err(e.value) == (ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_BAD_FLAGS)
    with pytest.raises(OFError) as e:
        p.meter_mod(MeterMod("add", 1, frozenset({"kbps"}), (MeterBand("drop", 0),)))
    assert err(e.value) == (ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_BAD_RATE)
    p.meter_mod(MeterMod("add", 1, frozenset({"kbps"}), (MeterBand("drop", 1000),)))
    p.flow_mod(fm(match="in_port=1", instructions=(A.Meter(1), A.ApplyActions((A.Output(2),)))), 0)
    x = p.xlate(key(in_port=1), None, 1.0)
    assert [str(a) for a in x.actions] == ["meter(1)", "output:2"]
    assert p.meter_stats(1)[0][1] == 1
    p.meter_mod(MeterMod("delete", 1))
    assert list(p.rules()) == []


def test_default_flows_and_fail_mode():
    p = Pipeline("standalone")
    p.install_default_flows()
    (r,) = p.rules()
    assert r.priority == 0 and r.instructions == (A.ApplyActions((A.Output(OFPP_NORMAL),)),)
    q = Pipeline("secure")
    q.install_default_flows()
    assert list(q.rules()) == []


def test_packet_out_table_and_controller(p):
    p.flow_mod(fm(match="in_port=1", actions=(A.Output(3),)), 0)
    from slowpath.fields import OFPP_TABLE
    x = p.packet_out(key(in_port=1), b"abc", [A.Output(OFPP_TABLE)], 1.0)
    assert [str(a) for a in x.actions] == ["output:3"]
    with pytest.raises(OFError):
        p.packet_out(key(in_port=1), b"abc", [A.Output(0)], 1.0)


def test_version_moves_on_every_change(p):
    v = p.version
    p.flow_mod(fm(), 0)
    p.group_mod(GroupMod("add", "all", 1, ()))
    p.set_port(Port(4, "p4"))
    assert p.version >= v + 3


def test_output_table_only_in_packet_out(p):
    from slowpath.fields import OFPP_TABLE
    with pytest.raises(OFError) as e:
        p.flow_mod(fm(actions=(A.Output(OFPP_TABLE),)), 0)
    assert err(e.value) == (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT)
    p.flow_mod(fm(match="in_port=1", actions=(A.Output(2),)), 0)
    x = p.packet_out(key(in_port=1), b"abc", [A.Output(OFPP_TABLE), A.Output(OFPP_TABLE)], 1.0)
    assert [str(a) for a in x.actions] == ["output:2", "output:2"]


def test_openflow10_modify_adds_when_missing(p):
    p.flow_mod(fm("modify", match="in_port=1", add_if_missing=True), 0)
    (r,) = p.rules()
    assert r.match == Match.parse("in_port=1") and r.priority == 100
