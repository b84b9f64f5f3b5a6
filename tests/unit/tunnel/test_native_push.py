"""Native tunnelling: the TunnelPush header built by slowpath.tunnel is
what the Cython executor takes, and slowpath.tunnel.push_header (the Python
twin) produces the same bytes as fastpath's ``_tnl_push``."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from fastpath.dpif import Dpif
from slowpath import tunnel as t
from slowpath.flow import parse_packet

ROUTE4 = t.NativeRoute(3, "02:00:00:00:00:0a", "02:00:00:00:00:0b", "192.0.2.1")
ROUTE6 = t.NativeRoute(3, "02:00:00:00:00:0a", "02:00:00:00:00:0b", "fd00::1")
TLV = t.TlvMap({0: (0x0102, 0x80, 4)})


@pytest.fixture(scope="module")
def dp():
    d = Dpif()
    for i in range(3):
        d.add_port(f"n{i + 1}", "dummy")
    yield d
    d.close()


def encap_fast(dp, frame, push):
    dp.execute(frame, (push,))
    peer = dp.dummy_peer(push.out_dp_port)
    return peer.recv(65536)


def cfg(remote, csum, route):
    return t.TunnelConfig(remote_ip=remote, key=None, csum=csum, route=route)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 65535), st.integers(1, 65535), st.booleans(), st.booleans(),
       st.integers(0, 0xFFFFFF), st.binary(max_size=200))
def test_python_twin_equals_cython(dp, sport, dport, csum, v6, vni, payload):
    frame = bytes(Ether(src="02:aa:00:00:00:01", dst="02:aa:00:00:00:02")
                  / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=dport)
                  / payload)
    key = parse_packet(frame, 1)
    key.tun_id = vni
    key.tun_metadata0 = 0x01020304 << 32
    c = cfg("fd00::2" if v6 else "192.0.2.2", csum, ROUTE6 if v6 else ROUTE4)
    push = t.tunnel_push(key, c, TLV, tnl_dp_port=7)
    assert push.header and push.out_dp_port == 3 and push.src == c.route.src_ip
    fast = encap_fast(dp, frame, push)
    assert fast == t.push_header(frame, key, push.header)
    p = Ether(fast)
    outer = p[IPv6] if v6 else p[IP]
    assert outer.dst == c.remote_ip and p[UDP].dport == 6081
    assert p[UDP].sport == t.flow_source_port(key)
    g = p[GENEVE]
    assert g.vni == vni and g.options[0].data == bytes.fromhex("01020304") and g.critical
    assert bytes(g.payload) == frame
    # and equals the host-stack encapsulation of the same packet
    assert fast[14:] == t.encap(frame, key, push, c)


def test_no_header_without_route_or_for_flow_remote():
    frame = bytes(Ether() / IP() / UDP())
    key = parse_packet(frame, 1)
    assert not t.tunnel_push(key, cfg("192.0.2.2", False, None), TLV).header
    key.tun_dst = 0xC0000263
    assert not t.tunnel_push(key, cfg(None, False, ROUTE4), TLV).header


def test_oam_packets_get_the_o_bit_natively_too(dp):
    """tun_flags=+oam: the prebuilt header carries the O bit, and the fast
    path's packet equals the host stack's encapsulation."""
    frame = bytes(Ether(src="02:aa:00:00:00:01", dst="02:aa:00:00:00:02")
                  / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=7, dport=9))
    key = parse_packet(frame, 1)
    key.tun_flags = t.FLOW_TNL_F_OAM
    c = cfg("192.0.2.2", True, ROUTE4)
    push = t.tunnel_push(key, c, TLV, tnl_dp_port=7)
    assert push.header
    fast = encap_fast(dp, frame, push)
    g = Ether(fast)[GENEVE]
    assert g.oam == 1 and g.critical == 0
    assert fast[14:] == t.encap(frame, key, push, c)


def test_outer_packets_above_the_route_mtu_are_dropped_and_counted(dp):
    """The route MTU travels with the prebuilt header; an outer IP packet
    longer than it is not sent (raw sockets and NICs would not fragment
    it either) and counts as tx_too_big."""
    from fastpath import execute as fx
    from tests.unit.fastpath.util import recv_all
    route = t.NativeRoute(3, "02:00:00:00:00:0a", "02:00:00:00:00:0b", "192.0.2.1", mtu=200)
    c = cfg("192.0.2.2", False, route)
    for size, sent in ((100, True), (200, False)):
        frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / bytes(size))
        push = t.tunnel_push(parse_packet(frame, 1), c, TLV, tnl_dp_port=7)
        assert push.mtu == 200
        before = fx.tunnel_counters()
        dp.execute(frame, (push,))
        got = recv_all(dp.dummy_peer(3), 0.1)
        after = fx.tunnel_counters()
        assert bool(got) == sent and all(len(g) - 14 <= 200 for g in got)
        assert after["tx_too_big"] - before["tx_too_big"] == (0 if sent else 1)
        assert after["tx_packets"] - before["tx_packets"] == (1 if sent else 0)
