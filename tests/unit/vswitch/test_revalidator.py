"""Cached megaflows follow the pipeline: credited, kept, or deleted."""

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from slowpath import actions as A
from slowpath.flow import parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port
from slowpath.revalidator import Revalidator

PKT = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))


def setup():
    p = Pipeline("secure")
    for n in (1, 2, 3):
        p.set_port(Port(ofport=n, name=f"p{n}", dp_port=10 + n))
    p.flow_mod(FlowMod("add", 0, 100, Match.parse("in_port=1,udp"),
                       instructions=(A.ApplyActions((A.Output(2),)),)), 0.0)
    key = parse_packet(PKT, 1)
    out = p.xlate(key, PKT, 0.0)
    rv = Revalidator()
    rv.installed(out.megaflow.match, out.megaflow.mask, p, 1, out, 0.0)
    return p, rv, out.megaflow


def dump(mf, packets, nbytes, used):
    return [(mf.match, mf.mask, mf.actions, packets, nbytes, used)]


def test_hits_are_credited_to_the_rule_once():
    p, rv, mf = setup()
    assert rv.sweep(dump(mf, 5, 500, 1.0), now=1.5) == []
    assert rv.sweep(dump(mf, 7, 700, 2.0), now=2.5) == []
    (rule,) = [r for r in p.flow_stats() if r.priority == 100]
    assert (rule.packet_count, rule.byte_count) == (1 + 7, len(PKT) + 700)


def test_changed_actions_delete_the_megaflow():
    p, rv, mf = setup()
    p.flow_mod(FlowMod("modify", 0, 100, Match.parse("in_port=1,udp"),
                       instructions=(A.ApplyActions((A.Output(3),)),)), 1.0)
    assert rv.sweep(dump(mf, 0, 0, 0), now=1.0) == [(mf.match, mf.mask)]
    assert rv.ukeys == {}


def test_unrelated_change_keeps_the_megaflow():
    p, rv, mf = setup()
    p.flow_mod(FlowMod("add", 0, 50, Match.parse("in_port=3,tcp"),
                       instructions=(A.ApplyActions((A.Output(1),)),)), 1.0)
    assert rv.sweep(dump(mf, 0, 0, 0), now=1.0) == []


def test_wider_consultation_deletes_the_megaflow():
    # A higher-priority rule on a field the megaflow never looked at
    # (nw_dst) makes its mask too wide: it must go even though this
    # packet's actions would not change.
    p, rv, mf = setup()
    p.flow_mod(FlowMod("add", 0, 200, Match.parse("in_port=1,udp,nw_dst=10.9.9.9"),
                       instructions=(A.ApplyActions((A.Output(3),)),)), 1.0)
    assert rv.sweep(dump(mf, 0, 0, 0), now=1.0) == [(mf.match, mf.mask)]


def test_idle_megaflows_expire():
    p, rv, mf = setup()
    assert rv.sweep(dump(mf, 1, 60, 1.0), now=5.0) == []
    assert rv.sweep(dump(mf, 1, 60, 1.0), now=1.0 + rv.max_idle + 0.1) == [(mf.match, mf.mask)]
