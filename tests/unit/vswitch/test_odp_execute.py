"""The Python datapath-action executor equals the Cython one, byte for byte.

Both executors get the same random packets and action lists (header
rewrites, VLAN push/pop, outputs); the frames that come out of the Cython
datapath's dummy ports must equal what the Python executor emits.
"""

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.contrib.mpls import MPLS
from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
                                ICMPv6NDOptSrcLLAddr)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.sctp import SCTP

from fastpath.dpif import Dpif
from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath.fields import MEMBERS
from slowpath.flow import parse_packet

E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
PACKETS = [
    bytes(E / IP(src="10.0.0.1", dst="10.0.0.2", ttl=9) / UDP(sport=1000, dport=53) / (b"q" * 20)),
    bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=53, chksum=0) / b"q"),
    bytes(E / IP(src="10.1.0.1", dst="10.1.0.2", tos=4) / TCP(sport=40000, dport=80, flags="S")),
    bytes(E / IP(src="10.1.0.1", dst="10.1.0.2") / ICMP()),
    bytes(E / Dot1Q(vlan=10, prio=3) / IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=5, dport=6)),
    bytes(E / IPv6(src="fd00::1", dst="fd00::2", hlim=3) / UDP(sport=7, dport=8) / b"six"),
    bytes(E / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=9, dport=10)),
    bytes(E / ARP(psrc="10.3.0.1", pdst="10.3.0.2", hwsrc="02:00:00:00:00:01")),
    bytes(E / IP(src="10.4.0.1", dst="10.4.0.2") / SCTP(sport=5000, dport=6000)),
    bytes(E / IPv6(src="fd00::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="fd00::2")),
    bytes(E / IPv6(src="fd00::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="fd00::2")
          / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01")),
    bytes(E / IPv6(src="fd00::2", dst="fd00::1") / ICMPv6ND_NA(tgt="fd00::2")
          / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:02")),
    bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x8847)
          / MPLS(label=100, ttl=9) / IP(src="10.5.0.1", dst="10.5.0.2")),
    bytes(E / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(src="10.6.0.1", dst="10.6.0.2")),
]


def _set(member):
    size = MEMBERS[member][1]
    full = (1 << 8 * size) - 1
    return st.builds(lambda v, m: dp.SetMasked(member, v & full, m & full),
                     st.integers(0, full), st.one_of(st.just(full), st.integers(1, full)))


ACTIONS = st.one_of(
    *[_set(m) for m in ("dl_dst", "dl_src", "nw_src", "nw_dst", "nw_ttl", "nw_tos",
                        "tp_src", "tp_dst", "ipv6_src", "ipv6_dst", "nd_target", "nw_proto",
                        "mpls_lse", "arp_sha", "arp_tha")],
    st.builds(lambda vid, pcp: dp.PushVlan(0x8100, 0x1000 | pcp << 13 | vid),
              st.integers(1, 4094), st.integers(0, 7)),
    st.just(dp.PopVlan()),
)


class Collect:
    def __init__(self):
        self.out = []

    def output(self, dp_port, frame, key):
        self.out.append((dp_port, frame))

    def recirculate(self, frame, key):
        raise AssertionError("no recirculation in this test")

    def meter(self, meter_id, frame):
        return True


DPIF = None


def dpif():
    global DPIF
    if DPIF is None:
        DPIF = Dpif()
        for n in (1, 2, 3):
            DPIF.add_port(f"d{n}", "dummy")
        for n in (1, 2, 3):
            DPIF.dummy_peer(n).settimeout(0.5)
    return DPIF


def cython_outputs(packet, actions):
    d = dpif()
    d.execute(packet, actions)
    got = []
    for port in (1, 2, 3):
        peer = d.dummy_peer(port)
        peer.setblocking(False)
        while True:
            try:
                got.append((port, peer.recv(65536)))
            except (BlockingIOError, socket.timeout):
                break
    return sorted(got)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PACKETS), st.lists(ACTIONS, max_size=4),
       st.lists(st.integers(1, 3), min_size=1, max_size=2))
def test_python_executor_equals_cython(packet, rewrites, ports):
    actions = tuple(rewrites) + tuple(dp.Output(p) for p in ports)
    env = Collect()
    odp_execute.execute(packet, parse_packet(packet, 1), actions, env)
    assert sorted(env.out) == cython_outputs(packet, actions)


def test_udp_checksum_stays_valid_after_rewrite():
    pkt = PACKETS[0]
    env = Collect()
    odp_execute.execute(pkt, parse_packet(pkt, 1),
                        (dp.SetMasked("nw_dst", 0x0A000063, 0xFFFFFFFF),
                         dp.SetMasked("tp_dst", 5353, 0xFFFF), dp.Output(2)), env)
    (_, frame), = env.out
    p = Ether(frame)
    assert p[IP].dst == "10.0.0.99" and p[UDP].dport == 5353
    fixed_ip, fixed_udp = p[IP].chksum, p[UDP].chksum
    del p[IP].chksum, p[UDP].chksum
    p2 = Ether(bytes(p))
    assert (p2[IP].chksum, p2[UDP].chksum) == (fixed_ip, fixed_udp)


def test_unknown_action_is_refused_not_ignored():
    class Weird:
        pass
    try:
        odp_execute.execute(PACKETS[0], parse_packet(PACKETS[0], 1), (Weird(),), Collect())
    except NotImplementedError as e:
        assert "no executor" in str(e)
    else:
        raise AssertionError("an unknown action must not be silently skipped")


def test_mpls_label_set_behind_three_pushed_tags():
    """Hypothesis found it: both executors find the label stack entry behind
    any number of VLAN tags (as push/pop_mpls do), not only behind two."""
    pkt = next(p for p in PACKETS if p[12:14] == b"\x88\x47")
    acts = (dp.PushVlan(0x8100, 0x1001), dp.PushVlan(0x8100, 0x1002),
            dp.PushVlan(0x8100, 0x1003), dp.SetMasked("mpls_lse", 0x12345678, 0xFFFFFFFF),
            dp.Output(1))
    env = Collect()
    odp_execute.execute(pkt, parse_packet(pkt, 1), acts, env)
    assert sorted(env.out) == cython_outputs(pkt, acts)
    assert env.out[0][1][26:30] == bytes.fromhex("12345678")


def test_nd_link_layer_address_options_are_rewritten():
    """set_field nd_tll / nd_sll (the arp_tha / arp_sha members) rewrite the
    NA's target / NS's source link-layer address option, checksum kept
    valid; OVN's ND responder sets nd_tll on the NA ovn-controller builds.
    The Cython executor does the same, so such megaflows stay in the fast path."""
    from vswitch.bridge import fast_path_can_execute
    na = bytes(E / IPv6(src="fd00::2", dst="fd00::1") / ICMPv6ND_NA(tgt="fd00::2")
               / ICMPv6NDOptDstLLAddr(lladdr="33:33:ff:00:00:02"))
    ns = bytes(E / IPv6(src="fd00::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="fd00::2")
               / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01"))
    for frame, member, opt in ((na, "arp_tha", ICMPv6NDOptDstLLAddr),
                               (ns, "arp_sha", ICMPv6NDOptSrcLLAddr)):
        acts = (dp.SetMasked(member, 0x0a0000000002, 0xFFFFFFFFFFFF), dp.Output(1))
        assert fast_path_can_execute(acts)
        env = Collect()
        odp_execute.execute(frame, parse_packet(frame, 1), acts, env)
        assert sorted(env.out) == cython_outputs(frame, acts)
        (_, out), = env.out
        p = Ether(out)
        assert p[opt].lladdr == "0a:00:00:00:00:02"
        sent = p[IPv6].payload.cksum
        del p[IPv6].payload.cksum
        assert Ether(bytes(p))[IPv6].payload.cksum == sent
