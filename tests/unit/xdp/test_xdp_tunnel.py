"""GENEVE in the XDP cache (native tunnelling, BPF_PROG_RUN): ``tnl_push``
puts on the wire byte for byte what the Cython executor (fastpath/execute.pyx
``_tnl_push``) does; ``tnl_pop`` decapsulates as ``_tnl_decap`` does (same
tunnel port, same key: the inner megaflow matches exactly the Cython key)
and forwards the inner frame by its megaflow; whatever XDP does not finish
(malformed GENEVE, a UDP checksum, an inner miss...) reaches userspace as
the outer frame exactly as it came."""

import dataclasses
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from fastpath import execute as fx
from fastpath.dpif import Dpif
from slowpath import dpactions as A
from slowpath import tunnel as t
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS
from slowpath.flow import FlowKey, parse_packet
from fastpath.bpf import xdp_cache as X

from .conftest import LO
from .test_xdp_property import packets, set_masked
from .util import FULL_MASK, XDP_PASS, XDP_REDIRECT, mask_of, masked

UNDERLAY = 3                    # dp_port of the underlay NIC (an output of the cache)
ROUTE4 = t.NativeRoute(UNDERLAY, "02:00:00:00:00:0a", "02:00:00:00:00:0b", "10.0.0.1")
ROUTE6 = t.NativeRoute(UNDERLAY, "02:00:00:00:00:0a", "02:00:00:00:00:0b", "fd00::1")
TLV = t.TlvMap({0: (0x0102, 0x80, 4), 1: (0xFFFF, 0x01, 8)})
E = Ether(src="02:aa:00:00:00:01", dst="02:aa:00:00:00:02")
INNERS = {
    "udp": bytes(E / IP(src="192.168.1.1", dst="192.168.1.2") / UDP(sport=1234, dport=80) / (b"x" * 20)),
    "tcp": bytes(E / IP(src="192.168.1.1", dst="192.168.1.2") / TCP(sport=999, dport=22) / b"y"),
    "icmp": bytes(E / IP(src="192.168.1.1", dst="192.168.1.2") / ICMP(type=8) / b"ping"),
    "ipv6": bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=6) / b"z"),
}
TUN_PORT = 11
PORTS = [
    (TUN_PORT, t.parse_tunnel_options({"remote_ip": "10.0.0.2", "key": "flow",
                                       "local_ip": "10.0.0.1"}), TLV),
    (12, t.parse_tunnel_options({"remote_ip": "10.0.0.2", "key": "77"}), t.TlvMap()),
    (13, t.parse_tunnel_options({"remote_ip": "flow", "key": "flow"}), TLV),
    (14, t.parse_tunnel_options({"remote_ip": "fd00::2", "key": "flow"}), TLV),
    (15, t.parse_tunnel_options({"remote_ip": "10.0.0.3", "key": "flow", "dst_port": "4789",
                                 "packet_type": "legacy_l3"}), t.TlvMap()),
]
TUNNEL_REGION = bytes([0xff]) * MEMBERS["metadata"][0]
EXACT_TUNNEL = TUNNEL_REGION + FULL_MASK[len(TUNNEL_REGION):]


@pytest.fixture(scope="module")
def dpif():
    """The Cython reference: dummy ports (1..3) and the tunnel table (every
    test that asks fx.tunnel_decap needs it)."""
    d = Dpif()
    for i in range(UNDERLAY):
        d.add_port(f"xt{i + 1}", "dummy")
    fx.set_tunnel_ports(PORTS)
    yield d
    fx.set_tunnel_ports([])
    d.close()


@pytest.fixture
def tcache(cache):
    cache.set_tunnel_ports(PORTS)
    yield cache
    cache.set_tunnel_ports([])


def cython_run(dpif, frame, actions, out_port=UNDERLAY):
    dpif.execute(frame, tuple(actions))
    return dpif.dummy_peer(out_port).recv(65536)


def push_for(frame, vni=0x42, opts=(0x01020304, 0x1122334455667788), csum=False, route=ROUTE4,
             remote="10.0.0.2", mtu=None):
    key = parse_packet(frame, 1)
    key.tun_id = vni
    key.tun_metadata0 = opts[0] << 32
    key.tun_metadata1 = opts[1]
    cfg = t.TunnelConfig(remote_ip=remote, key=None, csum=csum, route=route)
    push = t.tunnel_push(key, cfg, TLV, tnl_dp_port=TUN_PORT)
    if mtu is not None:
        push = dataclasses.replace(push, mtu=mtu)
    return push


@pytest.mark.parametrize("kind", sorted(INNERS))
def test_encap_is_byte_for_byte_the_cython_one(tcache, dpif, kind):
    frame = INNERS[kind]
    push = push_for(frame)
    assert push.header and X.offloadable((push,))
    key = bytes(parse_packet(frame, 1))
    assert tcache.put(masked(key, FULL_MASK), FULL_MASK, (push,)) is True
    verdict, out = tcache.test_run(frame, LO)
    assert verdict == XDP_REDIRECT
    want = cython_run(dpif, frame, (push,))
    assert out == want, (out.hex(), want.hex())
    p = Ether(out)
    assert p[IP].dst == "10.0.0.2" and p[UDP].dport == 6081 and p[UDP].chksum == 0
    assert p[UDP].sport == t.flow_source_port(parse_packet(frame, 1))
    assert tcache.stats(masked(key, FULL_MASK), FULL_MASK)["packets"] == 1


def test_encap_after_sets_hashes_the_rewritten_flow(tcache, dpif):
    frame = INNERS["tcp"]
    push = push_for(frame)
    acts = (A.SetMasked("nw_src", 0x0A0B0C0D, 0xFFFFFFFF), A.SetMasked("tp_dst", 443, 0xFFFF),
            A.SetMasked("dl_dst", 0x020000000099, 0xFFFFFFFFFFFF), push)
    key = bytes(parse_packet(frame, 1))
    assert tcache.put(masked(key, FULL_MASK), FULL_MASK, acts) is True
    verdict, out = tcache.test_run(frame, LO)
    assert verdict == XDP_REDIRECT
    assert out == cython_run(dpif, frame, acts)


def test_what_xdp_does_not_push_stays_in_userspace(tcache):
    frame = INNERS["udp"]
    key = bytes(parse_packet(frame, 1))
    m = masked(key, FULL_MASK)
    for push in (push_for(frame, csum=True), push_for(frame, route=ROUTE6, remote="fd00::2")):
        assert not X.offloadable((push,))
        assert tcache.put(m, FULL_MASK, (push,)) is False
        assert tcache.test_run(frame, LO) == (XDP_PASS, frame)
    push = push_for(frame)
    # an output beside it, a VLAN push before it: userspace
    assert not X.offloadable((A.Output(2), push))
    assert not X.offloadable((A.PushVlan(0x8100, 5), push))
    assert not X.offloadable((push, A.Output(2)))


def test_outer_packet_above_the_mtu_goes_to_userspace_untouched(tcache, dpif):
    frame = INNERS["udp"]
    push = push_for(frame, mtu=len(frame) + len(push_for(frame).header) - 14 - 1)
    key = bytes(parse_packet(frame, 1))
    assert tcache.put(masked(key, FULL_MASK), FULL_MASK, (push,)) is True
    assert tcache.test_run(frame, LO) == (XDP_PASS, frame)     # userspace drops and counts it
    assert tcache.stats(masked(key, FULL_MASK), FULL_MASK)["packets"] == 0
    before = fx.tunnel_counters()["tx_too_big"]
    dpif.execute(frame, (push,))
    assert fx.tunnel_counters()["tx_too_big"] == before + 1


# ---------------------------------------------------------------- decap
POP_MASK = mask_of("in_port", "dl_type", "nw_proto", "nw_dst", "tp_dst")


def outer(gnv: bytes, src="10.0.0.2", dst="10.0.0.1", sport=50000, dport=6081, csum=False,
          tos=0x28, ttl=61) -> bytes:
    ip = t.push_udp_ip(gnv, t.Outer(src, dst, sport, dport, tos, ttl, True, csum))
    return bytes.fromhex("020000000a0a020000000a0b") + struct.pack("!H", 0x0800) + ip


def install_pop(cache, fr):
    key = bytes(parse_packet(fr, 1))
    assert cache.put(masked(key, POP_MASK), POP_MASK, (A.TunnelPop(99),)) is True
    return masked(key, POP_MASK)


def cython_key(fr: bytes) -> bytes:
    """The key the Cython tnl_pop looks the inner frame up with."""
    dp_port, inner, meta = fx.tunnel_decap(fr)
    k = bytearray(parse_packet(inner, dp_port).buf)
    k[:len(meta)] = meta
    return bytes(k)


OPTS = [(0x0102, 0x80, b"\x00\x01\x00\x02"), (0xFFFF, 0x01, b"12345678"), (0x0999, 0x01, b"zzzz")]


@pytest.mark.parametrize("kind", sorted(INNERS))
@pytest.mark.parametrize("oam", [False, True])
def test_decap_fills_the_cython_key_and_forwards_the_inner_frame(tcache, dpif, kind, oam):
    inner = INNERS[kind]
    fr = outer(t.push_geneve(inner, 0x42, OPTS, oam=oam))
    pop = install_pop(tcache, fr)
    k = cython_key(fr)
    assert FlowKey(k).in_port == TUN_PORT and FlowKey(k).tun_metadata1 == int.from_bytes(b"12345678", "big")
    acts = (A.SetMasked("dl_src", 0x020000000077, 0xFFFFFFFFFFFF), A.Output(2))
    assert tcache.put(masked(k, EXACT_TUNNEL), EXACT_TUNNEL, acts) is True
    verdict, out = tcache.test_run(fr, LO)
    assert verdict == XDP_REDIRECT
    assert out == bytes.fromhex("020000000077").join([inner[:6], inner[12:]])
    assert tcache.stats(pop, POP_MASK)["packets"] == 1
    assert tcache.stats(masked(k, EXACT_TUNNEL), EXACT_TUNNEL)["packets"] == 1


def test_decap_then_encap_hairpin(tcache, dpif):
    """An inner megaflow that tunnels again (tnl_pop then tnl_push)."""
    inner = INNERS["udp"]
    fr = outer(t.push_geneve(inner, 0x42, OPTS[:1]))
    install_pop(tcache, fr)
    k = cython_key(fr)
    push = push_for(inner, vni=0x43)
    assert tcache.put(masked(k, EXACT_TUNNEL), EXACT_TUNNEL, (push,)) is True
    verdict, out = tcache.test_run(fr, LO)
    assert verdict == XDP_REDIRECT
    assert out == t.push_header(inner, FlowKey(k), push.header)


def test_inner_miss_and_inner_userspace_give_userspace_the_outer_frame(tcache, dpif):
    fr = outer(t.push_geneve(INNERS["udp"], 0x42, OPTS))
    pop = install_pop(tcache, fr)
    assert tcache.test_run(fr, LO) == (XDP_PASS, fr)
    k = cython_key(fr)
    assert tcache.put(masked(k, EXACT_TUNNEL), EXACT_TUNNEL, (A.Ct(),)) is False
    assert tcache.test_run(fr, LO) == (XDP_PASS, fr)
    assert tcache.stats(pop, POP_MASK)["packets"] == 0        # userspace counts these


def _opt(cls, typ, data):
    return struct.pack("!HBB", cls, typ, len(data) // 4) + data


def _raw_geneve(vni, opts: bytes, inner, ver=0, proto=0x6558, oam=False):
    return struct.pack("!BBHI", ver << 6 | len(opts) // 4, 0x80 if oam else 0, proto,
                       vni << 8) + opts + inner


MALFORMED = {
    "bad_version": _raw_geneve(0x42, b"", INNERS["udp"], ver=1),
    "unknown_critical": _raw_geneve(0x42, _opt(0x0123, 0x85, b"abcd"), INNERS["udp"]),
    "length_mismatch": _raw_geneve(0x42, _opt(0x0102, 0x80, b"abcdefgh"), INNERS["udp"]),
    "bad_option_length": _raw_geneve(0x42, _opt(0x0102, 0x80, b"abcd")[:2] + b"\x00\x1f"
                                     + b"abcd", INNERS["udp"]),
    "truncated_inner": _raw_geneve(0x42, b"", INNERS["udp"][:10]),
    "unsupported_protocol": _raw_geneve(0x42, b"", INNERS["udp"], proto=0x0800),
    "no_port": _raw_geneve(0x42, b"", INNERS["udp"]),     # (to a UDP port no tunnel has)
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_geneve_goes_to_userspace_which_drops_and_counts_it(tcache, dpif, name):
    fr = outer(MALFORMED[name], dport=9999 if name == "no_port" else 6081)
    pop = install_pop(tcache, fr)
    assert isinstance(fx.tunnel_decap(fr), str)            # the Cython decoder drops it
    assert tcache.test_run(fr, LO) == (XDP_PASS, fr)
    assert tcache.stats(pop, POP_MASK)["packets"] == 0
    before = fx.tunnel_counters()
    dpif.execute(fr, (A.TunnelPop(99),))
    after = fx.tunnel_counters()
    assert sum(after[r] for r in after if r.startswith("drop_")) == \
        sum(before[r] for r in before if r.startswith("drop_")) + 1


def test_what_xdp_leaves_to_userspace_although_valid(tcache, dpif):
    """UDP checksum (verified in userspace), more options than XDP walks,
    a legacy_l3 port: userspace decapsulates them."""
    inner = INNERS["udp"]
    many = [(0x0999, 0x01, b"zzzz")] * 9
    frames = [outer(t.push_geneve(inner, 0x42, OPTS), csum=True),
              outer(t.push_geneve(inner, 0x42, many)),
              outer(_raw_geneve(0x42, b"", inner[14:], proto=0x0800), src="10.0.0.3", dport=4789)]
    for fr in frames:
        assert not isinstance(fx.tunnel_decap(fr), str)
        install_pop(tcache, fr)
        k = cython_key(fr)
        tcache.put(masked(k, EXACT_TUNNEL), EXACT_TUNNEL, (A.Output(2),))
        assert tcache.test_run(fr, LO) == (XDP_PASS, fr)
        tcache.flush()


def test_more_tlv_entries_than_xdp_holds_punts_that_port(cache, dpif):
    big = t.TlvMap({i: (0x0102, i, 4) for i in range(X.TNL_TLVS + 1)})
    cache.set_tunnel_ports([(TUN_PORT, PORTS[0][1], big)])
    try:
        fr = outer(t.push_geneve(INNERS["udp"], 0x42, []))
        install_pop(cache, fr)
        assert cache.test_run(fr, LO) == (XDP_PASS, fr)
    finally:
        cache.set_tunnel_ports([])


opt_st = st.tuples(st.sampled_from([0x0102, 0xFFFF, 0x0999, 0x0123]),
                   st.sampled_from([0x80, 0x01, 0x85]),
                   st.sampled_from([b"", b"abcd", b"12345678", b"abcdefghijkl"]))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(opts=st.lists(opt_st, max_size=10), vni=st.sampled_from([0x42, 77, 5]),
       src=st.sampled_from(["10.0.0.2", "10.0.0.3", "10.0.0.9"]),
       dport=st.sampled_from([6081, 4789]), oam=st.booleans(),
       kind=st.sampled_from(sorted(INNERS)), cut=st.integers(0, 3))
def test_property_xdp_decides_as_the_cython_decoder(tcache, dpif, opts, vni, src, dport, oam, kind, cut):
    """Random GENEVE: when XDP forwards, the Cython decoder accepts the frame
    with the same port and key, and XDP's inner frame is its inner frame;
    otherwise XDP hands userspace the frame untouched."""
    tcache.flush()
    gnv = t.push_geneve(INNERS[kind], vni, opts, oam=oam)
    if cut:
        gnv = gnv[:len(gnv) - cut * 7]
    fr = outer(gnv, src=src, dport=dport)
    install_pop(tcache, fr)
    got = fx.tunnel_decap(fr)
    if not isinstance(got, str):
        tcache.put(masked(cython_key(fr), EXACT_TUNNEL), EXACT_TUNNEL, (A.Output(2),))
    verdict, out = tcache.test_run(fr, LO)
    if verdict == XDP_REDIRECT:
        assert not isinstance(got, str)
        assert out == got[1]
    else:
        assert (verdict, out) == (XDP_PASS, fr)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=packets(), sets=st.lists(set_masked(), max_size=4),
       vni=st.integers(0, 0xFFFFFF), opts=st.tuples(st.integers(0, 2 ** 32 - 1),
                                                     st.integers(0, 2 ** 64 - 1)),
       oam=st.booleans())
def test_property_encap_equals_cython(tcache, dpif, frame, sets, vni, opts, oam):
    """Random frames, random masked sets, then tnl_push: XDP's outer frame is
    the Cython executor's, byte for byte (the source port hashes the key as
    the sets left it, also where a set has no header to rewrite)."""
    tcache.flush()
    push = push_for(frame, vni=vni, opts=opts)
    if oam:
        key = parse_packet(frame, 1)
        key.tun_flags = t.FLOW_TNL_F_OAM
        push = dataclasses.replace(push, header=t.build_header(
            ROUTE4, t.Outer("10.0.0.1", "10.0.0.2", 0, 6081, 0, 64, True, False), vni,
            t.encode_options(TLV.from_key(key)), True))
    acts = tuple(sets) + (push,)
    assert X.offloadable(acts, FULL_MASK, FULL_MASK)
    key = bytes(parse_packet(frame, 1))
    assert tcache.put(masked(key, FULL_MASK), FULL_MASK, acts) is True
    verdict, out = tcache.test_run(frame, LO)
    want = cython_run(dpif, frame, acts)
    assert verdict == XDP_REDIRECT
    assert out == want, (out.hex(), want.hex())
