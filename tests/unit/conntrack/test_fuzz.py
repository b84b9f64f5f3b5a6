"""Wire input never crashes the tracker: random and mutated frames."""

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, IPerror, UDPerror
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment

from slowpath import dpactions as dp
from slowpath.conntrack import ConnTracker
from slowpath.flow import parse_packet
from tests.unit.conntrack.helpers import C, E, S, icmp_echo, tcp, udp

SEEDS = [bytes(p) for p in (
    tcp(flags="S", options=[("WScale", 3), ("MSS", 1460)]), tcp(flags="SA"), udp(),
    icmp_echo(), tcp(src="fd00::1", dst="fd00::2", v6=True),
    E / IP(src=S, dst=C) / ICMP(type=3, code=3) / IPerror(src=C, dst=S) / UDPerror(),
    E / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=0, m=1, id=5) / (b"x" * 40),
    E / IP(src=C, dst=S, flags="MF", frag=0, proto=17) / (b"y" * 30),
)]
NATS = [None, "", "src=10.9.9.1-10.9.9.2:1000-1001", "dst=10.0.0.7", "src=fd00::9"]


@settings(max_examples=400, deadline=None)
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.integers(0, 200),
                                                             st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 200), commit=st.booleans(), nat=st.sampled_from(NATS),
       zone=st.integers(0, 3), helper=st.sampled_from([None, "tftp"]))
def test_mutated_frames_never_raise(seed, flips, cut, commit, nat, zone, helper):
    ct = ConnTracker(max_conns=5)
    frame = bytearray(seed)
    for at, v in flips:
        if at < len(frame):
            frame[at] = v
    if cut:
        frame = frame[:max(0, len(frame) - cut)]
    for _ in range(3):      # again: finds the connection it may have made
        key = parse_packet(bytes(frame), 1)
        ct.execute(frame, key, dp.Ct(commit, zone, None, None, nat, helper), 5.0)
        assert key.ct_state & 0x20


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data):
    ct = ConnTracker()
    frame = bytearray(data)
    key = parse_packet(bytes(frame), 1)
    ct.execute(frame, key, dp.Ct(True, 0, nat="src=10.1.1.1"), 1.0)
