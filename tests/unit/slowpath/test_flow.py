"""parse_packet against packets built with scapy (OVS flow_extract semantics)."""

from hypothesis import given, settings, strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, IPv6,
    IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.contrib.mpls import MPLS
from scapy.layers.sctp import SCTP

from slowpath.fields import FLOW_KEY_SIZE
from slowpath.flow import FlowKey, parse_packet

E = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")


def mac(s):
    return int(s.replace(":", ""), 16)


def test_tcp_over_qinq():
    p = (Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02") / Dot1AD(vlan=100, prio=5)
         / Dot1Q(vlan=10) / IP(src="10.0.0.1", dst="10.0.0.2", tos=0xb8, ttl=9)
         / TCP(sport=1234, dport=80, flags="SA"))
    k = parse_packet(bytes(p), 7)
    assert k.in_port == 7 and k.dl_src == 1 and k.dl_dst == 2
    assert (k.vlan0_tpid, k.vlan0_tci) == (0x88a8, 0xb000 | 0x1000 | 100)
    assert (k.vlan1_tpid, k.vlan1_tci) == (0x8100, 0x1000 | 10)
    assert k.vlan_vid == 0x1000 | 100 and k.vlan_pcp == 5
    assert k.dl_type == 0x0800 and k.nw_proto == 6 and k.nw_ttl == 9
    assert k.nw_tos == 0xb8 and k.ip_dscp == 46 and k.nw_ecn == 0
    assert k.nw_src == 0x0a000001 and k.ip_dst == 0x0a000002
    assert (k.tp_src, k.tp_dst, k.tcp_flags) == (1234, 80, 0x12)
    assert len(bytes(k)) == FLOW_KEY_SIZE


def test_udp_sctp_icmp():
    k = parse_packet(bytes(E / IP() / UDP(sport=53, dport=5353)), 1)
    assert (k.nw_proto, k.tp_src, k.tp_dst) == (17, 53, 5353)
    k = parse_packet(bytes(E / IP() / SCTP(sport=9, dport=10)), 1)
    assert (k.nw_proto, k.tp_src, k.tp_dst) == (132, 9, 10)
    k = parse_packet(bytes(E / IP() / ICMP(type=3, code=4)), 1)
    assert (k.icmp_type, k.icmp_code, k.tp_src, k.tp_dst) == (3, 4, 3, 4)


def test_ipv4_fragments():
    first = E / IP(flags="MF", frag=0, proto=17) / UDP(sport=1, dport=2)
    k = parse_packet(bytes(first), 1)
    assert k.nw_frag == 1 and k.tp_src == 1
    later = E / IP(frag=10, proto=17) / (b"\x00\x07\x00\x08" + b"x" * 12)
    k = parse_packet(bytes(later), 1)
    assert k.nw_frag == 3 and k.nw_proto == 17 and k.tp_src == 0


def test_arp():
    p = E / ARP(op=2, hwsrc="00:00:00:00:00:0a", psrc="1.2.3.4",
                hwdst="00:00:00:00:00:0b", pdst="5.6.7.8")
    k = parse_packet(bytes(p), 1)
    assert k.dl_type == 0x0806 and k.arp_op == 2
    assert k.arp_spa == 0x01020304 and k.arp_tpa == 0x05060708
    assert k.arp_sha == 0x0a and k.arp_tha == 0x0b


def test_ipv6_ext_headers_and_fragments():
    p = (E / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0x20, fl=0x12345, hlim=3)
         / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=0, m=1) / UDP(sport=7, dport=8))
    k = parse_packet(bytes(p), 1)
    assert k.dl_type == 0x86dd and k.nw_proto == 17 and k.nw_frag == 1
    assert (k.tp_src, k.tp_dst) == (7, 8)
    assert k.ipv6_label == 0x12345 and k.nw_tos == 0x20 and k.nw_ttl == 3
    assert k.ipv6_src == (0x20010db8 << 96) | 1
    assert k.ipv6_exthdr & 0x40 and k.ipv6_exthdr & 0x10
    later = E / IPv6() / IPv6ExtHdrFragment(offset=5, nh=6) / (b"\x00" * 20)
    k = parse_packet(bytes(later), 1)
    assert k.nw_frag == 3 and k.nw_proto == 6 and k.tp_src == 0


def test_nd():
    ns = (E / IPv6() / ICMPv6ND_NS(tgt="fe80::1")
          / ICMPv6NDOptSrcLLAddr(lladdr="00:00:00:00:00:aa"))
    k = parse_packet(bytes(ns), 1)
    assert (k.nw_proto, k.icmpv6_type, k.icmpv6_code) == (58, 135, 0)
    assert k.nd_target == (0xfe80 << 112) | 1 and k.nd_sll == 0xaa and k.nd_tll == 0
    na = E / IPv6() / ICMPv6ND_NA(tgt="fe80::2") / ICMPv6NDOptDstLLAddr(lladdr="00:00:00:00:00:bb")
    k = parse_packet(bytes(na), 1)
    assert k.icmpv6_type == 136 and k.nd_tll == 0xbb and k.nd_sll == 0
    # a zero-length option makes the whole ND part invalid, as in OVS
    bad = bytes(ns)[:-8] + b"\x01\x00" + b"\x00" * 6
    k = parse_packet(bad, 1)
    assert k.icmpv6_type == 135 and k.nd_target == 0 and k.nd_sll == 0


def test_mpls_and_llc():
    k = parse_packet(bytes(E / MPLS(label=100, cos=3, s=1, ttl=64) / IP()), 1)
    assert k.dl_type == 0x8847 and k.mpls_label == 100 and k.mpls_tc == 3
    assert k.mpls_bos == 1 and k.mpls_ttl == 64 and k.nw_src == 0
    llc = bytes(Ether(dst="01:80:c2:00:00:00", src="00:00:00:00:00:01", type=38)) + b"\x42\x42\x03" + b"\x00" * 35
    assert parse_packet(llc, 1).dl_type == 0x05ff


def test_truncation_leaves_fields_zero():
    full = bytes(E / IP(src="1.1.1.1") / TCP(sport=5, dport=6))
    k = parse_packet(full[:14 + 20 + 10], 1)   # TCP header cut
    # tot_len now exceeds the frame: ipv4 sanity check fails, no L3 at all
    assert k.dl_type == 0x0800 and k.nw_src == 0 and k.tp_src == 0
    assert parse_packet(full[:10], 4) == FlowKey.from_fields(in_port=4)
    short_vlan = bytes(E / Dot1Q(vlan=5))[:16]
    assert parse_packet(short_vlan, 1).vlan0_tci == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 0xffffffff))
def test_random_bytes_never_raise(data, port):
    k = parse_packet(data, port)
    assert k.in_port == port and len(bytes(k)) == FLOW_KEY_SIZE


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 120))
def test_every_truncation_of_real_packets_is_safe(cut):
    for p in (E / Dot1Q(vlan=3) / IPv6() / IPv6ExtHdrHopByHop() / TCP(),
              E / IP(options=b"\x01" * 4) / UDP(), E / ARP()):
        parse_packet(bytes(p)[:cut], 1)


def test_flowkey_field_access_and_roundtrip():
    k = FlowKey.from_fields(in_port=3, eth_src=mac("00:11:22:33:44:55"), reg1=7, xreg0=(5 << 32) | 9)
    assert k.reg0 == 5 and k.reg1 == 9 and k.dl_src == 0x001122334455
    assert FlowKey.from_int(int(k)) == k and FlowKey(bytes(k)) == k
    k2 = k.copy()
    k2.reg1 = 1
    assert k.reg1 == 9
