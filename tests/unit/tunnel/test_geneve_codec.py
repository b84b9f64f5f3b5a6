"""GENEVE codec, TLV map, port options and encap/decap (slowpath/tunnel.py),
checked against scapy's GENEVE dissector; malformed input is dropped and
counted, never raised."""


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath import tunnel as t
from slowpath.flow import FlowKey, parse_packet

INNER = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
              / IP(src="192.168.1.1", dst="192.168.1.2") / UDP(sport=1234, dport=80) / (b"x" * 20))
OVN_OPT = (0x0102, 0x80, b"\x00\x01\x00\x02")
TLV = t.TlvMap({0: (0x0102, 0x80, 4), 1: (0xFFFF, 0x01, 8)})
CFG = t.parse_tunnel_options({"remote_ip": "10.0.0.2", "key": "flow"})


def outer_pkt(gnv: bytes, src="10.0.0.2", dst="10.0.0.1", csum=True, sport=50000) -> bytes:
    return t.push_udp_ip(gnv, t.Outer(src, dst, sport, csum=csum))


# --- codec ----------------------------------------------------------------------
def test_push_matches_scapy_and_pull_inverts():
    opts = [OVN_OPT, (0xFFFF, 0x01, b"12345678")]
    ours = t.push_geneve(INNER, 0x123456, opts)
    ref = bytes(GENEVE(vni=0x123456, proto=0x6558, critical=1, options=[
        GENEVE.options.cls(classid=0x0102, type=0x80, data=OVN_OPT[2]),
        GENEVE.options.cls(classid=0xFFFF, type=0x01, data=b"12345678")]) / INNER) \
        if hasattr(GENEVE.options, "cls") else None
    sc = GENEVE(ours)
    assert sc.version == 0 and sc.optionlen == 5 and sc.critical == 1 and sc.oam == 0
    assert sc.vni == 0x123456 and sc.proto == 0x6558
    assert [(o.classid, o.type, o.data) for o in sc.options] == [
        (0x0102, 0x80, OVN_OPT[2]), (0xFFFF, 0x01, b"12345678")]
    assert bytes(sc.payload) == INNER
    if ref is not None:
        assert ours == ref
    hdr, payload = t.pull_geneve(ours)
    assert payload == INNER and hdr.vni == 0x123456 and hdr.critical and not hdr.oam
    assert hdr.options == (t.GeneveOption(*OVN_OPT), t.GeneveOption(0xFFFF, 1, b"12345678"))


def test_oam_and_no_critical_bit_without_critical_options():
    hdr, _ = t.pull_geneve(t.push_geneve(INNER, 7, [(0xFFFF, 0x01, b"abcd")], oam=True))
    assert hdr.oam and not hdr.critical


@pytest.mark.parametrize("csum", [False, True])
def test_outer_ipv4_udp_checksums_agree_with_scapy(csum):
    pkt = outer_pkt(t.push_geneve(INNER, 5, [OVN_OPT]), csum=csum)
    sc = IP(pkt)
    assert sc.flags.DF and sc.ttl == 64 and sc[UDP].dport == 6081 and sc[UDP].sport == 50000
    again = IP(bytes(sc))
    del again.chksum, again[UDP].chksum
    again = IP(bytes(again))
    assert sc.chksum == again.chksum
    assert sc[UDP].chksum == (again[UDP].chksum if csum else 0)
    outer, payload = t.pull_udp_ip(pkt)
    assert (outer.src, outer.dst, outer.sport, outer.csum) == ("10.0.0.2", "10.0.0.1", 50000, csum)
    assert payload == t.push_geneve(INNER, 5, [OVN_OPT])


def test_outer_ipv6():
    pkt = t.push_udp_ip(b"g" * 9, t.Outer("fd00::1", "fd00::2", 50001, tos=0x28, ttl=7))
    sc = IPv6(pkt)
    assert sc.hlim == 7 and sc.tc == 0x28 and sc.nh == 17
    again = IPv6(bytes(sc))
    del again[UDP].chksum
    assert sc[UDP].chksum == IPv6(bytes(again))[UDP].chksum != 0
    outer, payload = t.pull_udp_ip(pkt)
    assert (outer.src, outer.dst, outer.tos, outer.ttl, payload) == (
        "fd00::1", "fd00::2", 0x28, 7, b"g" * 9)


def test_bad_udp_checksum_is_dropped():
    pkt = bytearray(outer_pkt(t.push_geneve(INNER, 5)))
    pkt[-1] ^= 0xFF
    c = t.Counters()
    assert t.receive(bytes(pkt), lambda p: TLV, [(3, CFG)], c) is None
    assert c.drops["bad_outer_header"] == 1


# --- malformed input: drop + count -------------------------------------------------
def _recv(gnv: bytes):
    c = t.Counters()
    r = t.receive(outer_pkt(gnv), lambda p: TLV, [(3, CFG)], c)
    return r, c


@pytest.mark.parametrize("mangle,reason", [
    (lambda g: g[:5], "truncated"),                                  # header cut
    (lambda g: bytes([g[0] | 0x3F]) + g[1:60], "truncated"),         # Opt Len past the end
    (lambda g: bytes([0x40 | (g[0] & 0x3F)]) + g[1:], "bad_version"),
    (lambda g: bytes([0xC0 | (g[0] & 0x3F)]) + g[1:], "bad_version"),
    # option claims 8 data words inside a 2-word option area
    (lambda g: g[:11] + bytes([0x08]) + g[12:], "bad_option_length"),
    # Opt Len 1 word: an option header with 4 data bytes cut off
    (lambda g: bytes([0x01]) + g[1:], "bad_option_length"),
])
def test_malformed_geneve_is_dropped_and_counted(mangle, reason):
    good = t.push_geneve(INNER, 9, [OVN_OPT])
    assert _recv(good)[0] is not None
    r, c = _recv(mangle(good))
    assert r is None and c.drops[reason] == 1 and c.rx_packets == 0


def test_unknown_critical_option_dropped_noncritical_ignored():
    r, c = _recv(t.push_geneve(INNER, 9, [(0x0555, 0x81, b"abcd")]))
    assert r is None and c.drops["unknown_critical_option"] == 1
    r, c = _recv(t.push_geneve(INNER, 9, [(0x0555, 0x01, b"abcd")]))
    assert r is not None and c.rx_packets == 1
    assert not any(r[2].tun_md_opts.to_bytes(32, "big"))


def test_mapped_option_with_wrong_length_dropped():
    r, c = _recv(t.push_geneve(INNER, 9, [(0x0102, 0x80, b"12345678")]))
    assert r is None and c.drops["option_length_mismatch"] == 1


def test_unsupported_protocol_and_inner_too_short():
    r, c = _recv(t.push_geneve(INNER[14:], 9, proto=0x0800))   # L3 into an L2 port
    assert r is None and c.drops["unsupported_protocol"] == 1
    r, c = _recv(t.push_geneve(INNER[:10], 9))
    assert r is None and c.drops["truncated"] == 1


def test_outer_fragments_and_non_udp_dropped():
    pkt = bytearray(outer_pkt(t.push_geneve(INNER, 9)))
    frag = bytes(pkt[:6]) + b"\x20\x00" + bytes(pkt[8:])      # MF set
    c = t.Counters()
    assert t.receive(frag, lambda p: TLV, [(3, CFG)], c) is None
    assert c.drops["fragment"] == 1
    pkt[9] = 6
    assert t.receive(bytes(pkt), lambda p: TLV, [(3, CFG)], c) is None
    assert c.drops["bad_outer_header"] == 1


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=8), st.binary(max_size=300), st.integers(0, 255), st.integers(0, 255))
def test_fuzz_random_geneve_headers_never_raise(head, rest, b0, b1):
    """Random headers (valid-looking first bytes + random option area and
    payload): either a decoded packet with a sane key, or a counted drop."""
    gnv = bytes([b0, b1]) + head + rest
    c = t.Counters()
    for pkt in (outer_pkt(gnv, csum=False), gnv, bytes([0x45]) + rest):
        r = t.receive(pkt, lambda p: TLV, [(3, CFG)], c)
        if r is not None:
            dp_port, inner, key = r
            assert dp_port == 3 and len(inner) >= 14 and key.in_port == 3
    assert c.rx_packets + sum(c.drops.values()) == 3


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFFFF),
       st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0x7F),
                          st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))),
                max_size=6),
       st.booleans())
def test_fuzz_round_trip(vni, opts, oam):
    hdr, payload = t.pull_geneve(t.push_geneve(INNER, vni, opts, oam))
    assert (hdr.vni, hdr.oam, payload) == (vni, oam, INNER)
    assert [(o.cls, o.type, o.data) for o in hdr.options] == opts


# --- TLV map and the flow key ---------------------------------------------------------
def test_decap_fills_the_tunnel_key():
    r, c = _recv(t.push_geneve(INNER, 0xABCDE, [OVN_OPT, (0xFFFF, 1, b"ABCDEFGH")]))
    dp_port, inner, key = r
    assert inner == INNER and dp_port == 3 and key.in_port == 3
    assert key.tun_id == 0xABCDE and key.tun_src == 0x0A000002 and key.tun_dst == 0x0A000001
    assert key.tun_tp_src == 50000 and key.tun_tp_dst == 6081 and key.tun_ttl == 64
    assert key.tun_metadata0 == 0x00010002_00000000      # left-aligned, 4 bytes
    assert key.tun_metadata1 == int.from_bytes(b"ABCDEFGH", "big")
    assert key.nw_src == 0xC0A80101 and key.tp_dst == 80   # the inner packet's fields
    assert TLV.from_key(key) == (t.GeneveOption(*OVN_OPT), t.GeneveOption(0xFFFF, 1, b"ABCDEFGH"))


def test_from_key_includes_set_metadata_only():
    key = parse_packet(INNER, 1)
    assert TLV.from_key(key) == ()
    key.tun_metadata0 = 0x11223344 << 32
    assert TLV.from_key(key) == (t.GeneveOption(0x0102, 0x80, bytes.fromhex("11223344")),)


def test_port_selection_prefers_specific_ports():
    fixed = t.parse_tunnel_options({"remote_ip": "10.0.0.2", "key": "5"})
    anyr = t.parse_tunnel_options({"remote_ip": "flow", "key": "flow"})
    ports = [(1, anyr), (2, fixed)]
    c = t.Counters()
    gnv5, gnv6 = t.push_geneve(INNER, 5), t.push_geneve(INNER, 6)
    assert t.receive(outer_pkt(gnv5), lambda p: TLV, ports, c)[0] == 2
    assert t.receive(outer_pkt(gnv6), lambda p: TLV, ports, c)[0] == 1
    assert t.receive(outer_pkt(gnv5, src="10.0.0.9"), lambda p: TLV, ports, c)[0] == 1
    assert t.receive(outer_pkt(gnv6), lambda p: TLV, [(2, fixed)], c) is None
    assert c.drops["no_port"] == 1


# --- port options -------------------------------------------------------------------
def test_parse_tunnel_options():
    cfg = t.parse_tunnel_options({"remote_ip": "10.1.1.1", "local_ip": "10.1.1.2", "key": "0x10",
                                  "dst_port": "6082", "csum": "true", "tos": "inherit",
                                  "ttl": "9", "df_default": "false"})
    assert cfg == t.TunnelConfig("10.1.1.1", "10.1.1.2", 16, 6082, True, "inherit", 9, False)
    assert t.parse_tunnel_options({"remote_ip": "flow", "key": "flow"}).remote_ip is None
    assert t.parse_tunnel_options({"remote_ip": "fd00::1"}).families == (6,)
    assert t.parse_tunnel_options({"remote_ip": "flow"}).families == (4, 6)
    for bad in ({}, {"remote_ip": "nope"}, {"remote_ip": "1.1.1.1", "key": str(1 << 24)},
                {"remote_ip": "1.1.1.1", "local_ip": "fd00::1"}, {"remote_ip": "1.1.1.1", "x": "1"},
                {"remote_ip": "1.1.1.1", "csum": "maybe"}, {"remote_ip": "1.1.1.1", "ttl": "0"}):
        with pytest.raises(ValueError):
            t.parse_tunnel_options(bad)


# --- encap --------------------------------------------------------------------------
def test_tunnel_push_fixed_and_flow():
    key = parse_packet(INNER, 1)
    key.tun_id, key.tun_dst = 77, 0x0A000063
    key.tun_metadata0 = 0xDEADBEEF << 32
    flow = t.parse_tunnel_options({"remote_ip": "flow", "key": "flow", "tos": "inherit"})
    p = t.tunnel_push(key, flow, TLV, 4, src="10.0.0.1")
    assert (p.tun_id, p.dst, p.src, p.tnl_dp_port, p.ttl) == (77, "10.0.0.99", "10.0.0.1", 4, 64)
    assert p.options == t.encode_options([(0x0102, 0x80, bytes.fromhex("deadbeef"))])
    fixed = t.parse_tunnel_options({"remote_ip": "10.0.0.2", "key": "9", "local_ip": "10.0.0.1",
                                    "ttl": "inherit"})
    p = t.tunnel_push(key, fixed, TLV)
    assert (p.tun_id, p.dst, p.src, p.ttl) == (9, "10.0.0.2", "10.0.0.1", key.nw_ttl)
    pkt = t.encap(INNER, key, p, fixed)
    sc = IP(pkt)
    assert sc.src == "10.0.0.1" and sc.dst == "10.0.0.2" and sc[GENEVE].vni == 9
    assert sc[GENEVE].options[0].data == bytes.fromhex("deadbeef")
    assert t.SPORT_MIN <= sc[UDP].sport <= t.SPORT_MAX
    assert sc[UDP].sport == t.flow_source_port(key)
    ports = set()
    for sport in range(1000, 1020):
        other = key.copy()
        other.tp_src = sport
        ports.add(t.flow_source_port(other))
    assert len(ports) > 15   # flows spread over source ports


def test_legacy_l3_round_trip():
    cfg = t.parse_tunnel_options({"remote_ip": "10.0.0.2", "packet_type": "legacy_l3"})
    key = parse_packet(INNER, 1)
    pkt = t.encap(INNER, key, t.tunnel_push(key, cfg, TLV, src="10.0.0.1"), cfg)
    assert IP(pkt)[GENEVE].proto == 0x0800
    outer, payload = t.pull_udp_ip(pkt)
    outer = t.Outer("10.0.0.2", outer.dst, outer.sport)
    inner, key2 = t.decap(outer, payload, TLV, 2, cfg)
    assert inner[12:] == INNER[12:] and inner[:12] == bytes(12)


# --- the TunnelPop datapath action --------------------------------------------------
class Env:
    def __init__(self):
        self.recirculated = []
        self.counters = t.Counters()

    def tunnel_lookup(self, endpoint):
        return ([(5, CFG)], lambda _p: TLV, self.counters) if endpoint == 9 else None

    def output(self, *a):
        raise AssertionError("no output expected")

    def recirculate(self, frame, key):
        self.recirculated.append((frame, key))


def test_tunnel_pop_action_recirculates_inner_frame():
    outer_frame = bytes(Ether(src="02:aa:00:00:00:01", dst="02:aa:00:00:00:02", type=0x0800)) + \
        outer_pkt(t.push_geneve(INNER, 0x42, [OVN_OPT]))
    env = Env()
    st_ = odp_execute.execute(outer_frame, parse_packet(outer_frame, 1), (dp.TunnelPop(9),), env)
    assert st_.dropped
    (frame, key), = env.recirculated
    assert frame == INNER and key.in_port == 5 and key.tun_id == 0x42
    env2 = Env()
    odp_execute.execute(outer_frame[:40], FlowKey(), (dp.TunnelPop(9),), env2)
    assert env2.recirculated == [] and env2.counters.drops["truncated"] == 1
