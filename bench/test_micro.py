"""Microbenchmarks of the Python parts that bound flow setup (pytest-benchmark).

Run with ``pyvswitch bench --micro`` (or ``pytest bench/test_micro.py
--benchmark-enable``).  Flow setup rate is bounded by the upcall (parse →
xlate → megaflow), so that is measured on the rule sets the Mpps bench uses;
the classifier at 100 000 rules, one OVSDB transaction, and one OpenFlow
flow-mod from wire bytes to an installed rule complete the picture.
"""

import itertools
import os

import pytest
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from slowpath import actions as A
from slowpath.classifier import Wildcards
from slowpath.flow import parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port
from vswitch.openflow import codec
from vswitch.openflow.convert import flow_mod_from_oken
from vswitch.ovsdb.db import Database
from vswitch.ovsdb.schema import load_schema
from bench.trafgen import udp_frame

FRAME = udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2")
ports = itertools.count(1024)


def pipeline(rules: str) -> Pipeline:
    p = Pipeline("standalone")
    for n in (1, 2):
        p.set_port(Port(ofport=n, name=f"p{n}", dp_port=n))
    if rules == "normal":
        p.install_default_flows()
    else:
        for tp in range(10_000):
            p.flow_mod(FlowMod("add", 0, 100, Match.parse(f"udp,tp_src={tp}"),
                               instructions=(A.ApplyActions((A.Output(2),)),)), 0.0)
    return p


@pytest.mark.parametrize("rules", ["normal", "10k-tp_src"])
def test_upcall(benchmark, rules):
    """One miss: key extraction + translation to a megaflow (new flow each time)."""
    p = pipeline(rules)

    def upcall():
        sport = next(ports) % 10_000
        frame = FRAME[:34] + sport.to_bytes(2, "big") + FRAME[36:]
        return p.xlate(parse_packet(frame, 1), frame, 0.0)

    out = benchmark(upcall)
    assert out.megaflow.actions


def test_classifier_lookup_100k(benchmark):
    p = Pipeline("secure")
    for i in range(100_000):
        p.flow_mod(FlowMod("add", 0, 100 + i % 7, Match.parse(
            f"ip,nw_src=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255},nw_dst=192.168.{i % 3}.0/24"),
            instructions=()), 0.0)
    table = p.table(0)
    key = int(parse_packet(FRAME, 1))
    benchmark(lambda: table.classifier.lookup(key, Wildcards()))


def test_classifier_insert(benchmark):
    p = Pipeline("secure")
    n = itertools.count()

    def insert():
        i = next(n)
        p.flow_mod(FlowMod("add", 0, 100, Match.parse(
            f"tcp,nw_dst=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255},tp_dst=80"),
            instructions=()), 0.0)

    benchmark(insert)


def test_ovsdb_transact(benchmark):
    db = Database(load_schema("/usr/share/openvswitch/vswitch.ovsschema"))
    db.ensure_open_vswitch_row()
    n = itertools.count()

    def transact():
        i = next(n)
        return db.transact_local([
            {"op": "insert", "table": "Interface", "uuid-name": "i",
             "row": {"name": f"p{i}"}},
            {"op": "insert", "table": "Port", "row": {"name": f"p{i}",
                                                      "interfaces": ["named-uuid", "i"]}}])

    assert "error" not in benchmark(transact)[0]


def test_openflow_flow_mod_wire_to_rule(benchmark):
    dp = codec.datapath(of13.OFP_VERSION)
    p = Pipeline("secure")
    n = itertools.count()

    def flow_mod():
        msg = p13.OFPFlowMod(dp, priority=100, match=p13.OFPMatch(
            eth_type=0x0800, ip_proto=6, tcp_dst=next(n) % 65536),
            instructions=[p13.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS,
                                                    [p13.OFPActionOutput(2)])])
        msg.serialize()
        fm = flow_mod_from_oken(codec.parse(bytes(msg.buf)))
        p.flow_mod(fm, 0.0)

    benchmark(flow_mod)
