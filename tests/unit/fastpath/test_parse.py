"""fastpath.parse (Cython) == slowpath.flow.parse_packet (reference), bytewise."""

import struct

from hypothesis import given, settings, strategies as st, HealthCheck
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr,
    IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, LLC, SNAP, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.contrib.igmp import IGMP
from scapy.contrib.mpls import MPLS
from scapy.packet import Raw

from fastpath import parse as fp
from slowpath import flow as ref
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS

E = Ether(src="00:11:22:33:44:55", dst="66:77:88:99:aa:bb")

CORPUS = [
    E / IP(src="10.0.0.1", dst="10.0.0.2", tos=0x2e, ttl=7) / TCP(sport=1234, dport=80, flags="SA"),
    E / IP() / UDP(sport=53, dport=5353) / b"hello",
    E / IP(flags="MF") / UDP(),
    E / IP(frag=10) / UDP(),
    E / IP(ihl=6, options=b"\x01\x01\x01\x00") / TCP(),
    E / IP() / ICMP(type=8, code=0),
    E / IP() / IGMP(type=0x16, gaddr="224.1.2.3"),
    E / IP() / SCTP(sport=5, dport=6),
    E / IP(proto=47) / (b"\x00" * 8),
    E / Dot1Q(vlan=5, prio=3) / IP() / UDP(),
    E / Dot1AD(vlan=7) / Dot1Q(vlan=9) / IP() / TCP(),
    E / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP() / TCP(),
    E / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2", hwsrc="00:11:22:33:44:55"),
    E / ARP(op=2, hwtype=6),
    E / LLC(dsap=0xaa, ssap=0xaa, ctrl=3) / SNAP(OUI=0, code=0x0800) / IP() / UDP(),
    E / LLC(dsap=0x42, ssap=0x42, ctrl=3) / b"stp-ish....",
    E / MPLS(label=100, ttl=9) / IP() / UDP(),
    E / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0xb8, fl=0x12345, hlim=3) / TCP(dport=22),
    E / IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / UDP(),
    E / IPv6() / IPv6ExtHdrFragment(offset=0, m=1) / UDP(),
    E / IPv6() / IPv6ExtHdrFragment(offset=5, m=0) / UDP(),
    E / IPv6() / IPv6ExtHdrFragment(offset=0, m=0) / TCP(),
    E / IPv6(nh=50) / (b"\x00" * 16),
    E / IPv6(nh=59),
    E / IPv6() / ICMPv6EchoRequest(),
    E / IPv6() / ICMPv6ND_NS(tgt="fe80::1") / ICMPv6NDOptSrcLLAddr(lladdr="00:11:22:33:44:55"),
    E / IPv6() / ICMPv6ND_NA(tgt="fe80::2") / ICMPv6NDOptDstLLAddr(lladdr="00:aa:22:33:44:55"),
    E / IPv6() / ICMPv6ND_NS(tgt="fe80::1") / ICMPv6NDOptSrcLLAddr() / ICMPv6NDOptSrcLLAddr(),
    E / IPv6() / ICMPv6ND_NS(tgt="fe80::1") / (b"\x01\x00" + b"\x00" * 6),
    Ether(type=0x1234) / b"xyz",
    Ether(type=0x88cc) / (b"\x00" * 30),
]


def _eq(data: bytes, in_port: int = 7) -> None:
    got = fp.parse_packet(data, in_port)
    want = bytes(ref.parse_packet(data, in_port))
    assert len(got) == FLOW_KEY_SIZE
    if got != want:
        diff = [n for n, (o, s) in MEMBERS.items() if got[o:o + s] != want[o:o + s]]
        raise AssertionError(f"members differ: {diff} for {data.hex()}")


def test_corpus_and_every_truncation():
    for pkt in CORPUS:
        data = bytes(pkt)
        for n in range(len(data) + 1):
            _eq(data[:n])


def test_in_port_is_big_endian():
    k = fp.parse_packet(bytes(CORPUS[0]), 0x01020304)
    o, s = MEMBERS["in_port"]
    assert k[o:o + s] == b"\x01\x02\x03\x04"


def test_trailing_padding_is_ignored():
    data = bytes(E / IP() / UDP()) + b"\x00" * 18
    _eq(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 0xffffffff))
def test_random_bytes(data, port):
    _eq(data, port)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(CORPUS), st.data())
def test_mutated_packets(pkt, data):
    b = bytearray(bytes(pkt))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    _eq(bytes(b[:cut]))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x8847, 0x0500]),
       st.binary(min_size=0, max_size=120))
def test_random_payload_after_known_ethertype(etype, payload):
    _eq(b"\x02" * 12 + struct.pack("!H", etype) + payload)


def test_header_offsets():
    l25, l3, l4, kind, proto, bad = fp.parse_offsets(bytes(E / Dot1Q(vlan=3) / IP() / UDP()))
    assert (l25, l3, l4, kind, proto, bad) == (12, 18, 38, 4, 17, 0)
    assert fp.parse_offsets(b"\x00" * 5)[-1] == 1
