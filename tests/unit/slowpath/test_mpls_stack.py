"""MPLS label stacks: push twice, set each label, pop twice -- validated the
way OVS checks actions (a set after push_mpls sees an MPLS packet).  The
Python executor is held to the Cython one by
tests/unit/fastpath/test_execute_vs_reference.py."""

from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from slowpath import actions as A
from slowpath.flow import parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port
from tests.unit.slowpath.pipelines import execute

IP_FRAME = bytes(Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
                 / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))


def pipeline(match, acts):
    p = Pipeline("secure")
    for i in (1, 2):
        p.set_port(Port(i, f"p{i}", dp_port=100 + i))
    p.flow_mod(FlowMod("add", 0, 1, Match.parse(match),
                       instructions=(A.ApplyActions(tuple(acts)),)), 0.0)
    return p


def python_run(frame, actions):
    return [f for _, f in execute(actions, frame)]


def test_push_two_labels_then_pop_both():
    push = pipeline("ip,in_port=1", [A.PushMpls(0x8847), A.SetField("mpls_label", 10),
                                     A.PushMpls(0x8847), A.SetField("mpls_label", 20),
                                     A.Output(2)])
    x = push.xlate(parse_packet(IP_FRAME, 1), IP_FRAME, 1.0)
    (out,) = python_run(IP_FRAME, x.actions)
    labels = [(m.label, m.s) for m in Ether(out).iterpayloads() if isinstance(m, MPLS)]
    assert labels == [(20, 0), (10, 1)]
    pop = pipeline("mpls,in_port=1", [A.PopMpls(0x8847), A.PopMpls(0x0800), A.Output(2)])
    y = pop.xlate(parse_packet(out, 1), out, 1.0)
    (back,) = python_run(out, y.actions)
    assert back == IP_FRAME
