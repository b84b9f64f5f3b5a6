"""xlate's side of native tunnelling receive: output to an internal port
carrying a `TunnelEndpoint` becomes ``tnl_pop`` exactly for non-fragment
UDP to a tunnel address and port; the megaflow consults what was compared."""

import ipaddress

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath import tunnel as t
from slowpath.fields import member_int_mask
from slowpath.flow import parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port

LOCAL = 0xFFFE
V4, V6 = "192.0.2.1", "fd00::1"
EP = t.TunnelEndpoint((((4, int(ipaddress.ip_address(V4)), 6081), 9),
                       ((6, int(ipaddress.ip_address(V6)), 6081), 9)))


def pipeline() -> Pipeline:
    p = Pipeline()
    p.set_port(Port(1, "ul", dp_port=101))
    p.set_port(Port(LOCAL, "br-phy", dp_port=102, tunnel=EP))
    p.flow_mod(FlowMod("add", 0, 0x8000, Match.parse("in_port=1"),
                       instructions=(A.ApplyActions((A.Output(LOCAL),)),)), 0.0)
    return p


def xlate(p, frame):
    return p.xlate(parse_packet(frame, 1), frame, 1.0)


def eth():
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def test_geneve_to_a_tunnel_address_is_popped():
    p = pipeline()
    for l3 in (IP(dst=V4), IPv6(dst=V6)):
        x = xlate(p, bytes(eth() / l3 / UDP(sport=5, dport=6081) / (b"x" * 20)))
        assert x.actions == (dp.TunnelPop(9),)
        mask = int.from_bytes(x.megaflow.mask, "big")
        want = ("dl_type", "nw_proto", "nw_frag", "tp_dst",
                "nw_dst" if isinstance(l3, IP) else "ipv6_dst")
        for m in want:
            assert mask & member_int_mask(m) == member_int_mask(m), m
        assert mask & member_int_mask("tp_src") == 0 and mask & member_int_mask("nw_src") == 0


def test_everything_else_goes_to_the_internal_port():
    p = pipeline()
    for frame in (bytes(eth() / IP(dst=V4) / UDP(dport=4789)),            # other UDP port
                  bytes(eth() / IP(dst="192.0.2.7") / UDP(dport=6081)),    # other address
                  bytes(eth() / IP(dst=V4) / TCP(dport=6081)),             # not UDP
                  bytes(eth() / IP(dst=V4, flags="MF") / UDP(dport=6081)),  # a fragment
                  bytes(eth() / IPv6(dst="fd00::2") / UDP(dport=6081))):
        assert xlate(p, frame).actions == (dp.Output(102),), Ether(frame).summary()
    # ARP: only dl_type was consulted
    x = xlate(p, bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff", type=0x0806))
              + bytes(28))
    assert x.actions == (dp.Output(102),)
    assert int.from_bytes(x.megaflow.mask, "big") & member_int_mask("nw_proto") == 0
