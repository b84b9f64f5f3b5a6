"""Datapath actions executed by the Cython fast path, checked as bytes on
dummy ports (frames in/out through socketpairs, no devices)."""

import time

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (IPv6, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.sctp import SCTP

from slowpath import dpactions as A
from slowpath.fields import MEMBERS

from .util import key_of, mask_of, parse_packet, recv_all, run

E = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
UDP4 = bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=2000) / b"payload")
IN_PORT = mask_of("in_port")


def on_port(dp, port, actions, mask=IN_PORT, **fields):
    dp.flow_put(key_of(in_port=port, **fields), mask, tuple(actions))


def test_miss_upcalls_packet_and_reference_key(dp3):
    ups = run(dp3, 1, UDP4)
    assert len(ups) == 1
    u = ups[0]
    assert (u.dp_port, u.reason, u.packet, u.action) == (1, "miss", UDP4, None)
    assert u.key == bytes(parse_packet(UDP4, 1))
    assert dp3.stats()["missed"] == 1


def test_outputs_to_several_ports_and_counts(dp3):
    on_port(dp3, 1, [A.Output(2), A.Output(3)])
    assert run(dp3, 1, UDP4, UDP4) == []
    assert recv_all(dp3.dummy_peer(2)) == [UDP4, UDP4]
    assert recv_all(dp3.dummy_peer(3)) == [UDP4, UDP4]
    [(match, mask, actions, pkts, nbytes, used)] = dp3.flow_dump()
    assert (actions, pkts, nbytes) == ((A.Output(2), A.Output(3)), 2, 2 * len(UDP4))
    assert abs(used - time.monotonic()) < 5
    st = dp3.port_stats(2)
    assert (st["tx_packets"], st["tx_bytes"]) == (2, 2 * len(UDP4))
    assert dp3.port_stats(1)["rx_packets"] == 2


def test_drop(dp3):
    on_port(dp3, 1, [])
    assert run(dp3, 1, UDP4) == []
    assert recv_all(dp3.dummy_peer(2)) == [] and recv_all(dp3.dummy_peer(3)) == []
    assert dp3.flow_stats(key_of(in_port=1), IN_PORT)["packets"] == 1


def test_set_eth(dp3):
    on_port(dp3, 1, [A.SetMasked("dl_dst", 0x0a0b0c0d0e0f, 0xffffffffffff),
                     A.SetMasked("dl_src", 0x112233445566, 0xffffff000000), A.Output(2)])
    run(dp3, 1, UDP4)
    [out] = recv_all(dp3.dummy_peer(2))
    assert out == bytes.fromhex("0a0b0c0d0e0f") + bytes.fromhex("112233000001") + UDP4[12:]


def test_push_and_pop_vlan_with_outputs_between(dp3):
    on_port(dp3, 1, [A.Output(3), A.push_vlan(10, pcp=2), A.Output(2), A.PopVlan(), A.Output(3)])
    run(dp3, 1, UDP4)
    [tagged] = recv_all(dp3.dummy_peer(2))
    assert tagged == bytes(E / Dot1Q(vlan=10, prio=2) / IP(src="10.0.0.1", dst="10.0.0.2")
                           / UDP(sport=1000, dport=2000) / b"payload")
    assert recv_all(dp3.dummy_peer(3)) == [UDP4, UDP4]


def test_pop_vlan_and_qinq_push(dp3):
    tagged = bytes(E / Dot1Q(vlan=7) / IP() / UDP())
    on_port(dp3, 1, [A.PopVlan(), A.Output(2), A.push_vlan(5, tpid=0x88a8),
                     A.push_vlan(6), A.Output(3)])
    run(dp3, 1, tagged)
    assert recv_all(dp3.dummy_peer(2)) == [bytes(E / IP() / UDP())]
    [qq] = recv_all(dp3.dummy_peer(3))
    k = parse_packet(qq, 3)
    assert (k.vlan0_tci, k.vlan1_tpid, k.vlan1_tci) == (0x1006, 0x88a8, 0x1005)


def _checksums_ok(frame: bytes) -> bool:
    p = Ether(frame)
    q = p.copy()
    for layer in (IP, TCP, UDP, ICMP, SCTP):
        if layer in q:
            if hasattr(q[layer], "chksum"):
                q[layer].chksum = None
    if IPv6 in q:
        for layer in (TCP, UDP):
            if layer in q:
                q[layer].chksum = None
        from scapy.layers.inet6 import _ICMPv6
        if q.haslayer(_ICMPv6):
            q.getlayer(_ICMPv6).cksum = None
    return bytes(q.__class__(bytes(q))) == frame


PKTS = {
    "udp4": bytes(E / IP(src="10.0.0.1", dst="10.0.0.2", tos=4) / UDP(sport=1, dport=2) / (b"x" * 11)),
    "tcp4": bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2) / (b"y" * 7)),
    "icmp4": bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8) / (b"z" * 9)),
    "sctp4": bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / SCTP(sport=1, dport=2)),
    "tcp6": bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=3, dport=4)),
    "udp6": bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=3, dport=4)),
    "icmp6": bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest()),
    "vlan_udp4": bytes(E / Dot1Q(vlan=3) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP()),
    # nd_sll / nd_tll live in the key's arp_sha / arp_tha (OVN's ND responder)
    "ns6": bytes(E / IPv6(src="2001:db8::1", dst="ff02::1:ff00:2")
                 / ICMPv6ND_NS(tgt="2001:db8::2") / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01")),
    "na6": bytes(E / IPv6(src="2001:db8::2", dst="2001:db8::1")
                 / ICMPv6ND_NA(tgt="2001:db8::2", R=0, S=1, O=1)
                 / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:02")),
}
SETTABLE = {
    "udp4": ["nw_src", "nw_dst", "nw_tos", "nw_ttl", "tp_src", "tp_dst", "dl_dst"],
    "tcp4": ["nw_src", "nw_dst", "nw_ttl", "tp_src", "tp_dst"],
    "icmp4": ["nw_src", "nw_dst", "tp_src", "tp_dst"],
    "sctp4": ["nw_src", "tp_src", "tp_dst"],
    "tcp6": ["ipv6_src", "ipv6_dst", "tp_src", "tp_dst", "nw_ttl", "nw_tos", "ipv6_label"],
    "udp6": ["ipv6_src", "ipv6_dst", "tp_dst"],
    "icmp6": ["ipv6_dst", "tp_src", "tp_dst"],
    "vlan_udp4": ["vlan0_tci", "nw_dst", "tp_dst"],
    "ns6": ["arp_sha", "nd_target", "ipv6_src"],
    "na6": ["arp_tha", "nd_target", "dl_src"],
}


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(PKTS)), st.data())
def test_set_masked_rewrites_headers_key_and_checksums(name, data):
    """After SetMasked the output parses to the expected key (member bits
    replaced, nothing else changed) and every checksum verifies."""
    from fastpath.dpif import Dpif
    pkt = PKTS[name]
    sets = []
    for member in data.draw(st.lists(st.sampled_from(SETTABLE[name]), min_size=1, max_size=3)):
        size = MEMBERS[member][1]
        sets.append(A.SetMasked(member, data.draw(st.integers(0, (1 << 8 * size) - 1)),
                                data.draw(st.sampled_from([(1 << 8 * size) - 1,
                                                           data.draw(st.integers(0, (1 << 8 * size) - 1))]))))
    dp = Dpif()
    try:
        dp.add_port("a", "dummy")
        dp.add_port("b", "dummy")
        on_port(dp, 1, sets + [A.Output(2)])
        run(dp, 1, pkt)
        [out] = recv_all(dp.dummy_peer(2))
    finally:
        dp.close()
    want = parse_packet(pkt, 2)
    for s in sets:
        o, size = MEMBERS[s.member]
        m = s.mask
        cur = int.from_bytes(want.buf[o:o + size], "big")
        new = (cur & ~m) | (s.value & m)
        if s.member == "vlan0_tci":
            new |= 0x1000                       # CFI is "present", never on the wire
        if s.member in ("tp_src", "tp_dst") and name.startswith("icmp"):
            new &= 0xff                          # ICMP type/code are 8 bits
        if s.member == "ipv6_label":
            new &= 0xfffff
        want.buf[o:o + size] = new.to_bytes(size, "big")
    got = parse_packet(out, 2)
    assert got == want
    assert len(out) == len(pkt)
    assert _checksums_ok(out), Ether(out).show2(dump=True)


def test_udp_zero_checksum_stays_zero(dp3):
    p = bytearray(UDP4)
    p[40:42] = b"\0\0"
    on_port(dp3, 1, [A.SetMasked("nw_dst", 0x0a000063, 0xffffffff), A.Output(2)])
    run(dp3, 1, bytes(p))
    [out] = recv_all(dp3.dummy_peer(2))
    assert out[40:42] == b"\0\0" and out[30:34] == bytes([10, 0, 0, 99])


def test_userspace_action(dp3):
    us = A.Userspace("controller", cookie=("table", 3))
    on_port(dp3, 1, [A.Output(2), us])
    [u] = run(dp3, 1, UDP4)
    assert (u.reason, u.action, u.userdata, u.packet) == ("action", us, ("table", 3), UDP4)
    assert recv_all(dp3.dummy_peer(2)) == [UDP4]


def test_unsupported_action_goes_to_slow_path(dp3):
    on_port(dp3, 1, [A.Ct(commit=True), A.Output(2)])
    [u] = run(dp3, 1, UDP4)
    assert (u.reason, u.action) == ("slow_path", A.Ct(commit=True))
    assert recv_all(dp3.dummy_peer(2)) == []


def test_unsupported_action_anywhere_means_nothing_runs_here(dp3):
    """Actions before (or around) an unsupported one must not run in the fast
    path: the slow path executes the whole list, so they would run twice."""
    acts = [A.Output(3), A.SetMasked("dl_dst", 1, 0xffffffffffff),
            A.Clone((A.Output(2), A.Ct(zone=5))), A.Output(2)]
    on_port(dp3, 1, acts)
    [u] = run(dp3, 1, UDP4)
    assert (u.reason, u.action, u.packet) == ("slow_path", A.Ct(zone=5), UDP4)
    assert recv_all(dp3.dummy_peer(2)) == [] and recv_all(dp3.dummy_peer(3)) == []


def test_recirculation(dp3):
    on_port(dp3, 1, [A.SetMasked("dl_dst", 0xaa, 0xffffffffffff), A.Recirc(5)],
            mask=mask_of("in_port", "recirc_id"))
    # First pass: the recirculated packet misses, with recirc_id=5 in its key.
    [u] = run(dp3, 1, UDP4)
    assert u.reason == "miss"
    k = parse_packet(u.packet, 1)
    assert k.dl_dst == 0xaa
    k.recirc_id = 5
    assert u.key == bytes(k)
    # Install the second-stage flow: now the packet goes out.
    dp3.flow_put(key_of(in_port=1, recirc_id=5), mask_of("in_port", "recirc_id"), (A.Output(3),))
    assert run(dp3, 1, UDP4) == []
    [out] = recv_all(dp3.dummy_peer(3))
    assert out[:6] == bytes.fromhex("0000000000aa")
    assert dp3.stats()["recirc"] == 2


def test_recirculation_loop_is_bounded(dp3):
    on_port(dp3, 1, [A.Recirc(0)], mask=mask_of("in_port"))
    assert run(dp3, 1, UDP4) == []
    assert dp3.stats()["dropped"] >= 1


def test_meter_token_bucket(dp3):
    dp3.meter_set(1, rate=10, burst=5)
    on_port(dp3, 1, [A.Meter(1), A.Output(2)])
    peer = dp3.dummy_peer(1)
    for _ in range(40):
        peer.send(UDP4)
    for _ in range(3):
        dp3.poll(0)
    n = len(recv_all(dp3.dummy_peer(2)))
    assert 5 <= n <= 7, n
    s = dp3.meter_stats(1)
    assert s["passed"] == n and s["dropped"] == 40 - n


def test_meter_kbps(dp3):
    dp3.meter_set(2, rate=8, burst=8, unit="kbps")         # 1000 bytes of burst
    on_port(dp3, 1, [A.Meter(2), A.Output(2)])
    run(dp3, 1, *[bytes(E / IP() / UDP() / (b"x" * 200))] * 10)   # 242 bytes each
    assert len(recv_all(dp3.dummy_peer(2))) == 4


def test_clone_sample_trunc(dp3):
    on_port(dp3, 1, [A.Clone((A.push_vlan(9), A.Output(2))), A.Output(3),
                     A.Sample(0, (A.Output(2),)), A.Sample(0xffffffff, (A.Output(2),)),
                     A.Trunc(20), A.Output(3)])
    run(dp3, 1, UDP4)
    out2 = recv_all(dp3.dummy_peer(2))
    assert len(out2) == 2 and parse_packet(out2[0], 2).vlan0_tci == 0x1009 and out2[1] == UDP4
    assert recv_all(dp3.dummy_peer(3)) == [UDP4, UDP4[:20]]


def test_hash_sets_dp_hash_for_recirc(dp3):
    on_port(dp3, 1, [A.Hash("l4", 0), A.Recirc(1)], mask=mask_of("in_port", "recirc_id"))
    [u] = run(dp3, 1, UDP4)
    o, s = MEMBERS["dp_hash"]
    assert u.key[o:o + s] != b"\0\0\0\0"


def test_execute_packet_out(dp3):
    assert dp3.execute(UDP4, (A.Output(2), A.push_vlan(4), A.Output(3))) == []
    assert recv_all(dp3.dummy_peer(2)) == [UDP4]
    [t] = recv_all(dp3.dummy_peer(3))
    assert parse_packet(t, 0).vlan0_tci == 0x1004
    ups = dp3.execute(UDP4, (A.Userspace("controller", 1),), key=key_of(in_port=3))
    assert [(u.dp_port, u.reason) for u in ups] == [(3, "action")]


def test_bad_output_port_is_counted(dp3):
    on_port(dp3, 1, [A.Output(99)])
    run(dp3, 1, UDP4)
    assert dp3.stats()["dropped"] == 1


def test_flow_put_modify_keeps_counters_and_del_returns_stats(dp3):
    on_port(dp3, 1, [A.Output(2)])
    run(dp3, 1, UDP4)
    on_port(dp3, 1, [A.Output(3)])            # modify: EMC entry must follow
    run(dp3, 1, UDP4)
    assert len(recv_all(dp3.dummy_peer(2))) == 1 and len(recv_all(dp3.dummy_peer(3))) == 1
    st = dp3.flow_del(key_of(in_port=1), IN_PORT)
    assert st["packets"] == 2
    [u] = run(dp3, 1, UDP4)                   # deleted: EMC must not still hit
    assert u.reason == "miss"
    assert dp3.flow_del(key_of(in_port=1), IN_PORT) is None


def test_flow_sweep_idle(dp3):
    on_port(dp3, 1, [A.Output(2)])
    on_port(dp3, 2, [A.Output(1)])
    run(dp3, 1, UDP4)
    now = time.monotonic()
    assert dp3.flow_sweep(now, 60) == []
    gone = dp3.flow_sweep(now + 61, 60)
    assert len(gone) == 2 and dp3.flow_dump() == []


def test_ports_api_and_errors(dp3):
    assert dp3.ports() == {1: "d1", 2: "d2", 3: "d3"}
    dp3.del_port(2)
    assert dp3.ports() == {1: "d1", 3: "d3"}
    assert dp3.add_port("d4", "dummy") == 2
    with pytest.raises(OSError) as e:
        dp3.add_port("nope-such-dev0", "afpacket")
    assert "nope-such-dev0" in str(e.value)
    with pytest.raises(ValueError):
        dp3.add_port("x", "bogus")


def test_tunnel_push_prebuilt_geneve_header(dp3):
    from scapy.contrib.geneve import GENEVE
    hdr = bytes(Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
                / IP(src="192.0.2.1", dst="192.0.2.2", flags="DF", ttl=64)
                / UDP(sport=0, dport=6081, chksum=0) / GENEVE(vni=0x1234, proto=0x6558))
    hdr = hdr[:14 + 20] + hdr[14 + 20:14 + 20 + 4] + b"\0\0" + hdr[14 + 20 + 6:]
    push = A.TunnelPush(tnl_dp_port=9, out_dp_port=3, header=hdr)
    on_port(dp3, 1, [push, A.Output(2)])
    run(dp3, 1, UDP4)
    assert recv_all(dp3.dummy_peer(2)) == [UDP4]          # the original is untouched
    [enc] = recv_all(dp3.dummy_peer(3))
    p = Ether(enc)
    assert p[IP].len == len(enc) - 14 and p[UDP].len == len(enc) - 34
    assert 32768 <= p[UDP].sport < 61000 and p[UDP].chksum == 0
    assert bytes(p[GENEVE].payload) == UDP4 and p[GENEVE].vni == 0x1234
    ipc = p.copy()
    ipc[IP].chksum = None
    assert bytes(Ether(bytes(ipc)))[:34] == enc[:34]      # outer IPv4 checksum
    # With a checksum requested (non-zero field in the template).
    hdr2 = hdr[:14 + 20 + 6] + b"\xff\xff" + hdr[14 + 20 + 8:]
    on_port(dp3, 1, [A.TunnelPush(9, 3, header=hdr2)])
    run(dp3, 1, UDP4)
    [enc2] = recv_all(dp3.dummy_peer(3))
    q = Ether(enc2)
    want = q.copy()
    want[UDP].chksum = None
    assert bytes(Ether(bytes(want)))[14 + 20 + 6:14 + 20 + 8] == enc2[14 + 20 + 6:14 + 20 + 8]
