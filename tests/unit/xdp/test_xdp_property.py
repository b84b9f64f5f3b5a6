"""Property: for random packets and random megaflows of offloadable actions,
the XDP program's verdict and output bytes equal the slow path's reference
(slowpath.flow.parse_packet for the key, slowpath.odp_execute for the
actions)."""

from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether

from slowpath import dpactions as A
from slowpath.fields import MEMBERS
from slowpath.flow import parse_packet
from fastpath.bpf import xdp_cache as X

from .util import (FULL_MASK, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_MEMBERS, mask_of, masked,
                   reference, same_frame)

u8, u16, u32 = (st.integers(0, 2 ** n - 1) for n in (8, 16, 32))
mac = st.integers(0, 2 ** 48 - 1).map(lambda v: ":".join(f"{b:02x}" for b in v.to_bytes(6, "big")))
ip4 = st.sampled_from(["10.0.0.1", "10.0.0.2", "192.168.7.9", "0.0.0.0", "255.255.255.255"])
ip6 = st.sampled_from(["2001:db8::1", "2001:db8::2", "fe80::1", "::"])
payload = st.binary(max_size=24)


@st.composite
def packets(draw):
    eth = Ether(src=draw(mac), dst=draw(mac))
    tags = draw(st.integers(0, 2))
    pkt = eth
    for i in range(tags):
        pkt = pkt / Dot1Q(vlan=draw(st.integers(0, 4095)), prio=draw(st.integers(0, 7)),
                          id=draw(st.integers(0, 1)))
    if tags == 2:
        pkt[Ether].type = draw(st.sampled_from([0x8100, 0x88a8]))
    l3 = draw(st.sampled_from(["ip", "ip", "ip6", "other"]))
    if l3 == "ip":
        ip = IP(src=draw(ip4), dst=draw(ip4), tos=draw(u8), ttl=draw(u8),
                options=draw(st.sampled_from([b"", b"\x01\x01\x01\x01"])))
        l4 = draw(st.sampled_from(["udp", "tcp", "icmp", "gre"]))
        if l4 == "udp":
            pkt = pkt / ip / UDP(sport=draw(u16), dport=draw(u16))
        elif l4 == "tcp":
            pkt = pkt / ip / TCP(sport=draw(u16), dport=draw(u16), flags=draw(st.integers(0, 0xfff)))
        elif l4 == "icmp":
            pkt = pkt / ip / ICMP(type=draw(u8), code=draw(u8))
        else:
            ip.proto = 47
            pkt = pkt / ip
    elif l3 == "ip6":
        ip = IPv6(src=draw(ip6), dst=draw(ip6), tc=draw(u8), fl=draw(st.integers(0, 0xfffff)),
                  hlim=draw(u8))
        l4 = draw(st.sampled_from(["udp", "tcp", "icmp6"]))
        if l4 == "udp":
            pkt = pkt / ip / UDP(sport=draw(u16), dport=draw(u16))
        elif l4 == "tcp":
            pkt = pkt / ip / TCP(sport=draw(u16), dport=draw(u16), flags=draw(st.integers(0, 0xff)))
        else:
            pkt = pkt / ip / draw(st.sampled_from([ICMPv6EchoRequest(), ICMPv6EchoReply()]))
    else:
        pkt.lastlayer().type = draw(st.sampled_from([0x88cc, 0x9000, 0x0900]))
    frame = bytes(pkt / draw(payload))
    return frame


SETTABLE = ["dl_dst", "dl_src", "nw_src", "nw_dst", "nw_tos", "nw_ttl", "tp_src", "tp_dst",
            "ipv6_src", "ipv6_dst", "ipv6_label", "vlan0_tci"]


@st.composite
def set_masked(draw):
    m = draw(st.sampled_from(SETTABLE))
    bits = 8 * MEMBERS[m][1]
    if m == "ipv6_label":
        bits = 20
    full = (1 << bits) - 1
    mask = draw(st.sampled_from([full, draw(st.integers(0, full))]))
    return A.SetMasked(m, draw(st.integers(0, full)), mask)


action = st.one_of(set_masked(), set_masked(),
                   st.builds(A.push_vlan, st.integers(0, 4095), st.integers(0, 7),
                             st.sampled_from([0x8100, 0x88a8])),
                   st.just(A.PopVlan()))
action_lists = st.tuples(st.lists(action, max_size=6),
                         st.lists(st.integers(1, 4), unique=True, max_size=3)).map(
    lambda t: tuple(t[0]) + tuple(A.Output(p) for p in t[1])).filter(X.offloadable)
member_sets = st.lists(st.sampled_from(XDP_MEMBERS), max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=packets(), actions=action_lists, members=member_sets, in_port=st.integers(1, 4))
def test_xdp_equals_reference(xc, frame, actions, members, in_port):
    xc.flush()
    xc.map_port(1, in_port)
    key = bytes(parse_packet(frame, in_port))
    mask = mask_of("in_port", *members)
    assert xc.put(masked(key, mask), mask, actions)
    verdict, out = xc.test_run(frame)
    want = reference(frame, in_port, actions)
    if want:
        assert verdict == XDP_REDIRECT
        assert [p for p, _ in want] == [a.dp_port for a in actions if isinstance(a, A.Output)]
        for _, frame_out in want:      # a broadcast sends one frame to all
            assert same_frame(out, frame_out), (out.hex(), frame_out.hex())
    else:
        assert verdict == XDP_DROP
    # A megaflow that differs in one bit under its mask is a miss.
    xc.flush()
    bit = len(members)
    flipped = bytearray(masked(key, FULL_MASK))
    o = MEMBERS["in_port"][0] + 3
    flipped[o] ^= 1 << (bit % 8)
    assert xc.put(bytes(flipped), FULL_MASK, actions)
    assert xc.test_run(frame) == (XDP_PASS, frame)
    xc.flush()


@st.composite
def mangled(draw):
    """Well-formed frames with bytes overwritten and/or cut short."""
    frame = bytearray(draw(packets()))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] = draw(u8)
    if draw(st.booleans()):
        frame = frame[:draw(st.integers(0, len(frame)))]
    return bytes(frame)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=mangled())
def test_xdp_key_is_the_reference_key_or_userspace(xc, frame):
    """Whatever the bytes, XDP either computes exactly the reference key or
    leaves the packet to userspace: with a full-mask megaflow on the
    reference key (slot 0) and a catch-all drop behind it (slot 1), the
    verdict is never the catch-all's."""
    xc.flush()
    xc.map_port(1, 1)
    key = bytes(parse_packet(frame, 1))
    assert xc.put(masked(key, FULL_MASK), FULL_MASK, (A.Output(2),))
    assert xc.put(mask_of(), mask_of(), ())
    assert xc.mask_slots[X.xdp_key(FULL_MASK)][0] == 0
    # (BPF_PROG_RUN, like a NIC, needs an Ethernet header)
    verdict, out = xc.test_run(frame) if len(frame) >= 14 else (XDP_PASS, frame)
    assert verdict in (XDP_REDIRECT, XDP_PASS), verdict
    if verdict == XDP_PASS:
        assert out == frame
    xc.flush()
