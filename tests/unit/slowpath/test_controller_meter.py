"""controller(meter_id=N): packet-ins are rate-limited by the meter, as OVN
relies on to keep ACL logs and rejects from flooding its controller."""

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath.flow import parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, MeterBand, MeterMod, Pipeline
from slowpath.port import Port

DATA = bytes(Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
             / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))


def pipeline(flags, rate, burst=0, pause=False):
    p = Pipeline("secure")
    p.set_port(Port(1, "p1", dp_port=101))
    p.set_port(Port(2, "p2", dp_port=102))
    p.meter_mod(MeterMod("add", 7, frozenset(flags), (MeterBand("drop", rate, burst),)))
    acts = (A.Controller(userdata=b"x", meter_id=7, pause=pause), A.Output(2))
    p.flow_mod(FlowMod("add", 0, 1, Match.parse("in_port=1"),
                       instructions=(A.ApplyActions(acts),)), 0.0)
    return p


def packet_ins(p, now, n=10):
    return sum(len(p.xlate(parse_packet(DATA, 1), DATA, now).packet_ins) for _ in range(n))


def test_pktps_meter_limits_packet_ins_and_refills():
    p = pipeline({"pktps", "burst"}, rate=2, burst=3)
    assert packet_ins(p, 100.0) == 3          # the burst
    assert packet_ins(p, 100.5) == 1          # half a second at 2/s
    assert packet_ins(p, 110.0) == 3          # refilled up to the burst only
    m = p.meters[7]
    assert m.packet_in_count == 30 and m.band_counts[0][0] == 23


def test_kbps_meter_counts_bits():
    p = pipeline({"kbps"}, rate=1)             # 1 kbit/s, one second's worth of burst
    assert packet_ins(p, 5.0) == 2             # 42-byte frames: 336 bits each


def test_a_paused_packet_whose_packet_in_is_dropped_goes_no_further():
    p = pipeline({"pktps"}, rate=1, pause=True)
    first = p.xlate(parse_packet(DATA, 1), DATA, 1.0)
    second = p.xlate(parse_packet(DATA, 1), DATA, 1.0)
    assert len(first.packet_ins) == 1 and first.packet_ins[0].continuation
    assert second.packet_ins == [] and dp.Output(102) not in second.actions


def test_unknown_meter_does_not_limit():
    p = pipeline({"pktps"}, rate=1)
    p.meter_mod(MeterMod("delete", 7))
    p.flow_mod(FlowMod("add", 0, 1, Match.parse("in_port=1"), instructions=(
        A.ApplyActions((A.Controller(meter_id=7),)),)), 0.0)
    assert packet_ins(p, 1.0) == 10
