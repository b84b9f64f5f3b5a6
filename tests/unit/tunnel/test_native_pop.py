"""Native tunnelling, receive side: the Cython ``tnl_pop`` (fastpath/execute.pyx
``_tnl_decap``) against its Python twin ``slowpath.tunnel.decap_frame`` —
same tunnel port, inner frame and key metadata, or the same drop reason —
on well-formed, malformed and random GENEVE; and the datapath running a
cached ``tnl_pop`` then the tunnel port's megaflow with no upcall."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from fastpath import execute as fx
from fastpath.dpif import Dpif
from slowpath import dpactions as dp
from slowpath import tunnel as t
from slowpath.fields import MEMBERS
from slowpath.flow import FlowKey, parse_packet
from tests.unit.fastpath.util import key_of, mask_of, recv_all

META_END = MEMBERS["dl_dst"][0]
INNER = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
              / IP(src="192.168.1.1", dst="192.168.1.2") / UDP(sport=1234, dport=80)
              / (b"x" * 20))
TLV_A = t.TlvMap({0: (0x0102, 0x80, 4), 1: (0xFFFF, 0x01, 8)})
TLV_B = t.TlvMap({3: (0x0102, 0x80, 4)})
ETH = bytes.fromhex("020000000a0b020000000a0a")

# Ports as a daemon may have them: fixed remote+key, fixed remote key=flow,
# remote=flow, an IPv6 one, a legacy_l3 one on another UDP port.
PORTS = [
    (11, t.parse_tunnel_options({"remote_ip": "10.0.0.2", "key": "flow", "local_ip": "10.0.0.1"}),
     TLV_A),
    (12, t.parse_tunnel_options({"remote_ip": "10.0.0.2", "key": "77"}), TLV_B),
    (13, t.parse_tunnel_options({"remote_ip": "flow", "key": "flow"}), TLV_A),
    (14, t.parse_tunnel_options({"remote_ip": "fd00::2", "key": "flow"}), TLV_A),
    (15, t.parse_tunnel_options({"remote_ip": "10.0.0.3", "key": "flow", "dst_port": "4789",
                                 "packet_type": "legacy_l3"}), t.TlvMap()),
]
TLVS = {dp_port: tlv for dp_port, _c, tlv in PORTS}


@pytest.fixture(autouse=True, scope="module")
def table():
    fx.set_tunnel_ports(PORTS)
    yield
    fx.set_tunnel_ports([])


def frame(gnv: bytes, src="10.0.0.2", dst="10.0.0.1", sport=50000, dport=6081, csum=True,
          ethertype=None) -> bytes:
    ip = t.push_udp_ip(gnv, t.Outer(src, dst, sport, dport, 0x28, 61, True, csum))
    et = ethertype or (0x86DD if ":" in src else 0x0800)
    return ETH + struct.pack("!H", et) + ip


def python(fr: bytes):
    got = t.decap_frame(fr, [(p, c) for p, c, _ in PORTS], TLVS.__getitem__)
    if isinstance(got, str):
        return got
    dp_port, inner, key = got
    return dp_port, inner, bytes(key.buf[:META_END])


def same(fr: bytes):
    c, py = fx.tunnel_decap(fr), python(fr)
    assert c == py, (fr.hex(), c, py)
    return c


def test_wellformed_port_choice_key_and_options():
    opts = [(0x0102, 0x80, b"\x00\x01\x00\x02"), (0xFFFF, 0x01, b"12345678"), (0x0999, 1, b"zz")]
    dp_port, inner, meta = same(frame(t.push_geneve(INNER, 0x42, opts, oam=True)))
    assert (dp_port, inner) == (11, INNER)
    key = FlowKey(meta + bytes(len(FlowKey().buf) - META_END))
    assert (key.tun_id, key.tun_src, key.tun_dst, key.in_port) == (0x42, 0x0A000002, 0x0A000001, 11)
    assert (key.tun_tos, key.tun_ttl, key.tun_tp_src, key.tun_tp_dst, key.tun_flags) == \
        (0x28, 61, 50000, 6081, t.FLOW_TNL_F_OAM)
    assert key.tun_metadata0 >> 32 == 0x00010002 and key.tun_metadata1 == int.from_bytes(b"12345678", "big")
    # the fixed key beats key=flow (vni 77), remote=flow takes other remotes
    assert same(frame(t.push_geneve(INNER, 77)))[0] == 12
    assert same(frame(t.push_geneve(INNER, 5), src="10.9.9.9", dst="10.0.0.7"))[0] == 13
    assert same(frame(t.push_geneve(INNER, 5), src="fd00::2", dst="fd00::1"))[0] == 14
    # legacy_l3: the inner IP packet gets a zero Ethernet header
    dp_port, inner, _ = same(frame(t.push_geneve(INNER[14:], 1, proto=0x0800), src="10.0.0.3",
                                   dport=4789))
    assert dp_port == 15 and inner == bytes(12) + b"\x08\x00" + INNER[14:]
    # no UDP checksum, and padding after the IP packet
    assert same(frame(t.push_geneve(INNER, 0x42), csum=False) + bytes(9))[1] == INNER


@pytest.mark.parametrize("reason,gnv,kw", [
    ("truncated", t.push_geneve(INNER, 1)[:6], {}),
    ("truncated", bytes([0x3F]) + t.push_geneve(INNER, 1)[1:20], {}),
    ("bad_version", bytes([0x80]) + t.push_geneve(INNER, 1)[1:], {}),
    ("bad_option_length", bytes([0x01]) + t.push_geneve(INNER, 1)[1:8]
     + struct.pack("!HBB", 1, 1, 9) + INNER, {}),
    ("unknown_critical_option", t.push_geneve(INNER, 1, [(0x0777, 0x99, b"abcd")]), {}),
    ("option_length_mismatch", t.push_geneve(INNER, 1, [(0x0102, 0x80, b"abcdefgh")]), {}),
    ("unsupported_protocol", t.push_geneve(INNER[14:], 1, proto=0x0800), {}),
    ("no_port", t.push_geneve(INNER, 1), {"dport": 9999}),
    ("truncated", t.push_geneve(INNER[:10], 1), {}),
])
def test_malformed_is_dropped_with_the_reason(reason, gnv, kw):
    assert same(frame(gnv, **kw)) == reason


def test_bad_outer_headers():
    good = frame(t.push_geneve(INNER, 1))
    bad_csum = bytearray(good)
    bad_csum[14 + 20 + 6] ^= 0x55
    frag = bytearray(good)
    frag[14 + 6] |= 0x20
    tcp = bytearray(good)
    tcp[14 + 9] = 6
    cases = {"bad_outer_header": [bytes(bad_csum), bytes(tcp), good[:12] + b"\x08\x06" + good[14:]],
             "fragment": [bytes(frag)], "truncated": [good[:13], good[:30], good[:40]]}
    for reason, frames in cases.items():
        for fr in frames:
            assert same(fr) == reason


def test_cached_pop_then_tunnel_megaflow_without_upcall():
    """Underlay port 1 has a megaflow ``tnl_pop``; the tunnel port's
    megaflow outputs to VM port 3: after both are cached, GENEVE frames
    arriving on port 1 leave decapsulated on port 3 with no upcall, and
    malformed ones are counted."""
    d = Dpif()
    try:
        for i in range(3):
            d.add_port(f"p{i + 1}", "dummy")
        d.flow_put(key_of(in_port=1), mask_of("in_port"), (dp.TunnelPop(9),))
        d.flow_put(key_of(in_port=11, tun_id=0x42), mask_of("in_port", "tun_id"), (dp.Output(3),))
        before = fx.tunnel_counters()
        good = frame(t.push_geneve(INNER, 0x42, [(0x0102, 0x80, b"\x00\x01\x00\x02")]))
        peer1, peer3 = d.dummy_peer(1), d.dummy_peer(3)
        for _ in range(5):
            peer1.send(good)
        peer1.send(frame(bytes([0x80]) + t.push_geneve(INNER, 0x42)[1:]))
        ups = []
        for _ in range(3):
            ups += d.poll(0)
        assert ups == []
        assert recv_all(peer3, 0.2) == [INNER] * 5
        after = fx.tunnel_counters()
        assert after["rx_packets"] - before["rx_packets"] == 5
        assert after["drop_bad_version"] - before["drop_bad_version"] == 1
        # a miss after the pop upcalls with the tunnel port and its metadata
        peer1.send(frame(t.push_geneve(INNER, 0x43)))
        ups = []
        for _ in range(3):
            ups += d.poll(0)
        (u,) = ups
        key = FlowKey(u.key)
        assert (u.dp_port, u.packet, key.in_port, key.tun_id) == (11, INNER, 11, 0x43)
        assert bytes(key.buf[:META_END]) == python(frame(t.push_geneve(INNER, 0x43)))[2]
        # execute() (the first packet's path) does the same
        ups = d.execute(frame(t.push_geneve(INNER, 0x44)), (dp.TunnelPop(9),))
        assert [(u.dp_port, FlowKey(u.key).tun_id) for u in ups] == [(11, 0x44)]
    finally:
        d.close()


def _mutations():
    good = [frame(t.push_geneve(INNER, 0x42, [(0x0102, 0x80, b"\x00\x01\x00\x02"),
                                            (0xFFFF, 0x01, b"12345678")])),
            frame(t.push_geneve(INNER, 77, [(0x0999, 0x01, b"ab")]), csum=False),
            frame(t.push_geneve(INNER, 5, [(0x0102, 0x80, b"wxyz")]), src="fd00::2",
                  dst="fd00::1"),
            frame(t.push_geneve(INNER[14:], 1, proto=0x86DD), src="10.0.0.3", dport=4789)]
    return st.tuples(st.sampled_from(good),
                     st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=4),
                     st.one_of(st.none(), st.integers(0, 200)))


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_mutations())
def test_fuzz_mutated_headers_cython_equals_python(m):
    base, flips, cut = m
    b = bytearray(base)
    for pos, val in flips:
        if pos < len(b):
            b[pos] = val
    if cut is not None:
        b = b[:cut]
    same(bytes(b))


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=8), st.integers(0, 255), st.integers(0, 255),
       st.binary(max_size=80), st.booleans())
def test_fuzz_random_geneve_headers_cython_equals_python(head, b0, b1, rest, csum):
    """Random GENEVE headers (version/optlen byte, flags, options) behind a
    correct outer IPv4/UDP header: same result or the same drop."""
    gnv = bytes([b0, b1]) + head[:6].ljust(6, b"\0") + rest + INNER
    same(frame(gnv, csum=csum))
