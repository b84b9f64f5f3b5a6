"""The tracker on crafted packets: states, windows, ICMP, limits, expiry."""

from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror

from slowpath.conntrack import ConnTracker
from slowpath.conntrack.packet import Tuple
from tests.unit.conntrack.helpers import C, E, S, Wire, icmp_echo, tcp, udp


def handshake(w, commit=True, sport=40000, **kw):
    """SYN, SYN+ACK, ACK; returns the three results."""
    r1 = w.run(tcp(sport=sport, flags="S", seq=1000), commit=commit, **kw)
    r2 = w.run(tcp(src=S, dst=C, sport=8080, dport=sport, flags="SA", seq=5000, ack=1001), **kw)
    r3 = w.run(tcp(sport=sport, flags="A", seq=1001, ack=5001), **kw)
    return r1, r2, r3


def test_tcp_handshake_data_and_teardown():
    ct = ConnTracker()
    w = Wire(ct, zone=5)
    first = w.run(tcp(flags="S"))                 # uncommitted: just +new
    assert first.state == {"trk", "new"} and ct.n_conns == 0
    assert first.key.ct_zone == 5 and first.key.ct_tp_dst == 8080
    r1, r2, r3 = handshake(w)
    assert r1.state == {"trk", "new"} and ct.n_conns == 1
    assert r2.state == {"trk", "est", "rpl"}
    assert r3.state == {"trk", "est"}
    # the original direction tuple is in the key on both directions
    assert r2.key.ct_nw_src == int.from_bytes(bytes([10, 0, 0, 1]), "big")
    assert (r2.key.ct_tp_src, r2.key.ct_tp_dst, r2.key.ct_nw_proto) == (40000, 8080, 6)
    d1 = w.run(tcp(flags="PA", seq=1001, ack=5001, payload=b"x" * 100))
    d2 = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="PA", seq=5001, ack=1101,
                   payload=b"y" * 50))
    assert d1.state == {"trk", "est"} and d2.state == {"trk", "est", "rpl"}
    conn = ct.connections()[0]
    assert conn.tcp.state_name == "ESTABLISHED" and conn.tclass == "tcp_established"
    f1 = w.run(tcp(flags="FA", seq=1101, ack=5051))
    f2 = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="FA", seq=5051, ack=1102))
    f3 = w.run(tcp(flags="A", seq=1102, ack=5052))
    assert {"est"} <= f1.state and {"est", "rpl"} <= f2.state and {"est"} <= f3.state
    assert conn.tclass == "tcp_close"
    w.now += 31
    ct.expire(w.now)
    assert ct.n_conns == 0
    # the tuple can be reused at once after close (SYN reopens)
    again = w.run(tcp(flags="S", seq=9000), commit=True)
    assert again.state == {"trk", "new"} and ct.n_conns == 1


def test_syn_retransmission_stays_new_and_reopen_after_close():
    ct = ConnTracker()
    w = Wire(ct)
    w.run(tcp(flags="S"), commit=True)
    assert w.run(tcp(flags="S")).state == {"trk", "new"}
    assert ct.n_conns == 1


def test_out_of_window_and_bad_flags_are_invalid():
    ct = ConnTracker()
    w = Wire(ct)
    handshake(w)
    far = w.run(tcp(flags="PA", seq=1001 + 10_000_000, ack=5001, payload=b"z"))
    assert far.state == {"trk", "inv"}
    behind = w.run(tcp(flags="PA", seq=(1001 - 10_000_000) & 0xFFFFFFFF, ack=5001, payload=b"z"))
    assert behind.state == {"trk", "inv"}
    bad_ack = w.run(tcp(flags="A", seq=1001, ack=5001 + 10_000_000))
    assert bad_ack.state == {"trk", "inv"}
    assert w.run(tcp(flags="SF", seq=1001)).state == {"trk", "inv"}
    assert w.run(tcp(flags="F", seq=1001)).state == {"trk", "inv"}   # FIN without ACK
    # still fine afterwards: invalid segments do not change the state
    assert w.run(tcp(flags="PA", seq=1001, ack=5001, payload=b"ok")).state == {"trk", "est"}
    assert ct.stats["invalid"] == 5


def test_window_scaling_allows_large_windows():
    ct = ConnTracker()
    w = Wire(ct)
    w.run(tcp(flags="S", seq=1000, options=[("WScale", 7)]), commit=True)
    w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="SA", seq=5000, ack=1001,
              win=1000, options=[("WScale", 7)]))
    w.run(tcp(flags="A", seq=1001, ack=5001, win=1000))
    # window updates are scaled (SYN windows are not)
    w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="A", seq=5001, ack=1001, win=1000))
    # the server advertised 1000 << 7 = 128000 bytes: 100 kB ahead is in window
    ok = w.run(tcp(flags="PA", seq=1001 + 100_000, ack=5001, win=1000, payload=b"a"))
    assert ok.state == {"trk", "est"}
    beyond = w.run(tcp(flags="PA", seq=1001 + 400_000, ack=5001, win=1000, payload=b"a"))
    assert beyond.state == {"trk", "inv"}


def test_rst_must_match_sequence():
    ct = ConnTracker()
    w = Wire(ct)
    handshake(w)
    bad = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="R", seq=5001 + 3000))
    assert bad.state == {"trk", "inv"}
    conn = ct.connections()[0]
    assert conn.tcp.state_name == "ESTABLISHED"
    good = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="R", seq=5001))
    assert good.state == {"trk", "est", "rpl"}
    assert conn.tcp.state_name == "TIME_WAIT" and conn.tclass == "tcp_close"


def test_unsolicited_syn_ack_and_rst_are_invalid():
    ct = ConnTracker()
    w = Wire(ct)
    r = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="SA", seq=5000, ack=1001),
              commit=True)
    assert r.state == {"trk", "inv"} and ct.n_conns == 0
    assert w.run(tcp(flags="R", seq=1), commit=True).state == {"trk", "inv"}


def test_udp_request_response_and_expiry():
    ct = ConnTracker()
    w = Wire(ct)
    assert w.run(udp(), commit=True).state == {"trk", "new"}
    assert w.run(udp()).state == {"trk", "new"}          # no reply yet
    conn = ct.connections()[0]
    assert conn.tclass == "udp_single"
    r = w.run(udp(src=S, dst=C, sport=53, dport=5000))
    assert r.state == {"trk", "est", "rpl"} and conn.tclass == "udp_multiple"
    assert w.run(udp()).state == {"trk", "est"}
    w.now += 29
    ct.expire(w.now)
    assert ct.n_conns == 1
    w.now += 2
    ct.expire(w.now)
    assert ct.n_conns == 0
    # a reply after expiry is a new connection from the server: policy decides
    assert w.run(udp(src=S, dst=C, sport=53, dport=5000)).state == {"trk", "new"}


def test_timeout_policy_per_zone():
    ct = ConnTracker()
    ct.set_timeout_policy(7, {"udp_first": 2, "udp_multiple": 5})
    w7, w0 = Wire(ct, zone=7), Wire(ct, zone=0)
    w7.run(udp(), commit=True)
    w0.run(udp(), commit=True)
    w7.now = w0.now = w7.now + 3
    ct.expire(w7.now)
    assert [c.zone for c in ct.connections()] == [0]


def test_icmp_echo_and_unsolicited_reply():
    ct = ConnTracker()
    w = Wire(ct)
    assert w.run(icmp_echo(), commit=True).state == {"trk", "new"}
    r = w.run(icmp_echo(src=S, dst=C, type=0))
    assert r.state == {"trk", "est", "rpl"}
    assert (r.key.ct_tp_src, r.key.ct_tp_dst) == (8, 0)   # type/code of the original
    assert w.run(icmp_echo(src=S, dst=C, type=0, id=99)).state == {"trk", "inv"}
    # a request the other way is its own connection
    assert w.run(icmp_echo(src=S, dst=C, type=8)).state == {"trk", "new"}


def test_icmp_error_is_related_to_its_connection():
    ct = ConnTracker()
    w = Wire(ct)
    w.run(udp(), commit=True)
    err = (E / IP(src=S, dst=C) / ICMP(type=3, code=3)
           / IPerror(src=C, dst=S) / UDPerror(sport=5000, dport=53) / b"q")
    r = w.run(err)
    assert r.state == {"trk", "rel", "rpl"}
    assert r.key.ct_tp_src == 5000
    # a router on the way reporting about the client's packet
    err2 = (E / IP(src="10.9.9.9", dst=C) / ICMP(type=11)
            / IPerror(src=C, dst=S) / UDPerror(sport=5000, dport=53))
    assert w.run(err2).state == {"trk", "rel", "rpl"}
    stray = (E / IP(src=S, dst=C) / ICMP(type=3, code=3)
             / IPerror(src=C, dst=S) / UDPerror(sport=5001, dport=53))
    assert w.run(stray).state == {"trk", "inv"}


def test_non_ip_and_truncated_are_invalid():
    from scapy.layers.l2 import ARP
    ct = ConnTracker()
    w = Wire(ct)
    assert w.run(E / ARP(psrc=C, pdst=S)).state == {"trk", "inv"}
    short = bytes(tcp())[:14 + 20 + 10]
    from scapy.layers.l2 import Ether
    assert w.run(Ether(short)).state == {"trk", "inv"}


def test_mark_and_label_committed_and_reported():
    ct = ConnTracker()
    w = Wire(ct)
    w.run(tcp(flags="S"), commit=True, mark=(0x2a, 0xff), label=(1 << 100, 1 << 100))
    r = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="SA", seq=5000, ack=1001))
    assert r.key.ct_mark == 0x2a and r.key.ct_label == 1 << 100
    w.run(tcp(flags="A", seq=1001, ack=5001), commit=True, mark=(0x100, 0xf00))
    assert ct.connections()[0].mark == 0x12a


def test_zones_are_separate():
    ct = ConnTracker()
    w = Wire(ct)
    w.run(tcp(flags="S"), commit=True, zone=1)
    r = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="SA", seq=5000, ack=1001), zone=2)
    assert r.state == {"trk", "inv"}       # a SYN+ACK zone 2 never asked for
    r = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="SA", seq=5000, ack=1001), zone=1)
    assert r.state == {"trk", "est", "rpl"}


def test_force_commit_replaces_a_connection_in_the_other_direction():
    ct = ConnTracker()
    w = Wire(ct)
    w.run(udp(), commit=True)
    r = w.run(udp(src=S, dst=C, sport=53, dport=5000), commit=True, force=True)
    assert r.state == {"trk", "new"}
    (conn,) = ct.connections()
    assert conn.key == Tuple(4, int.from_bytes(bytes([10, 0, 0, 2]), "big"),
                             int.from_bytes(bytes([10, 0, 0, 1]), "big"), 17, 53, 5000)


def test_same_packet_through_ct_twice_in_a_zone_is_processed_once():
    ct = ConnTracker()
    w = Wire(ct)
    handshake(w)
    r = w.run(tcp(flags="PA", seq=1001, ack=5001, payload=b"x" * 10))
    conn = ct.connections()[0]
    seqlo = conn.tcp.peers[0].seqlo
    again = w.run(tcp(flags="PA", seq=1001, ack=5001, payload=b"x" * 10), commit=True,
                  key=r.key)
    assert again.state == {"trk", "est"} and conn.packets[0] == 3
    assert conn.tcp.peers[0].seqlo == seqlo


def test_tftp_alg_expects_the_data_connection():
    ct = ConnTracker()
    w = Wire(ct)
    req = udp(sport=3333, dport=69, payload=b"\x00\x01file\x00octet\x00")
    assert w.run(req, commit=True, helper="tftp").state == {"trk", "new"}
    data = udp(src=S, dst=C, sport=45000, dport=3333, payload=b"\x00\x03\x00\x01data")
    r = w.run(data)
    assert r.state == {"trk", "new", "rel"}
    assert (r.key.ct_tp_src, r.key.ct_tp_dst) == (3333, 69)    # the parent's tuple
    w.run(data, commit=True)
    ack = w.run(udp(sport=3333, dport=45000, payload=b"\x00\x04\x00\x01"))
    assert ack.state == {"trk", "est", "rpl", "rel"}
    # without the helper nothing is expected
    ct2 = ConnTracker()
    w2 = Wire(ct2)
    w2.run(req, commit=True)
    assert w2.run(data).state == {"trk", "new"}


def test_ipv6_tcp_and_icmpv6():
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
    ct = ConnTracker()
    w = Wire(ct)
    a, b = "fd00::1", "fd00::2"
    assert w.run(tcp(src=a, dst=b, v6=True), commit=True).state == {"trk", "new"}
    r = w.run(tcp(src=b, dst=a, sport=8080, dport=40000, flags="SA", seq=5000, ack=1001, v6=True))
    assert r.state == {"trk", "est", "rpl"} and r.key.ct_ipv6_src == int.from_bytes(
        bytes.fromhex("fd00" + "00" * 13 + "01"), "big")
    assert w.run(E / IPv6(src=a, dst=b) / ICMPv6EchoRequest(id=3), commit=True).state == {"trk", "new"}
    assert w.run(E / IPv6(src=b, dst=a) / ICMPv6EchoReply(id=3)).state == {"trk", "est", "rpl"}
    assert "tcp6,orig=(src=fd00::1" in __import__("slowpath.conntrack.dpctl", fromlist=["x"]).run(
        ct, "dpctl/dump-conntrack", [], w.now)


def test_fragments_follow_the_first_fragment():
    from scapy.layers.inet import fragment
    ct = ConnTracker()
    w = Wire(ct)
    big = IP(src=C, dst=S, id=77) / UDP(sport=5000, dport=53) / (b"z" * 3000)
    frags = [E / f for f in fragment(big, fragsize=1000)]
    assert len(frags) == 4
    assert w.run(frags[0], commit=True).state == {"trk", "new"}
    assert w.run(frags[1]).state == {"trk", "new"}
    assert w.run(frags[3]).state == {"trk", "new"}
    rep = IP(src=S, dst=C, id=78) / UDP(sport=53, dport=5000) / (b"r" * 3000)
    rfr = [E / f for f in fragment(rep, fragsize=1000)]
    assert w.run(rfr[0]).state == {"trk", "est", "rpl"}
    assert w.run(rfr[2]).state == {"trk", "est", "rpl"}
    orphan = IP(src=S, dst=C, id=999) / UDP(sport=53, dport=5000) / (b"o" * 3000)
    assert w.run(E / fragment(orphan, fragsize=1000)[1]).state == {"trk", "inv"}


def test_ipv6_fragments_follow_the_first_fragment():
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
    ct = ConnTracker()
    w = Wire(ct)
    pkt = IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(id=42) / UDP(
        sport=5000, dport=53) / (b"z" * 3000)
    frags = [E / f for f in fragment6(pkt, 1280)]
    assert len(frags) >= 3
    first = w.run(frags[0], commit=True)
    assert first.state == {"trk", "new"} and first.key.ct_tp_dst == 53
    assert all(w.run(f).state == {"trk", "new"} for f in frags[1:])
    other = IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(id=43) / UDP(
        sport=5000, dport=53) / (b"z" * 3000)
    assert w.run(E / fragment6(other, 1280)[1]).state == {"trk", "inv"}


def test_tcp_picked_up_mid_stream_after_a_flush():
    ct = ConnTracker()
    w = Wire(ct)
    handshake(w)
    ct.flush()
    # an established stream seen from the middle is accepted (as OVS/pf do)
    r = w.run(tcp(flags="PA", seq=777_000, ack=9_000, payload=b"m" * 20), commit=True)
    assert r.state == {"trk", "new"} and ct.n_conns == 1
    back = w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="A", seq=9_000, ack=777_020))
    assert back.state == {"trk", "est", "rpl"}


def test_icmpv6_error_is_related_and_nd_is_invalid():
    from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6ND_NS, IPerror6, IPv6, UDPerror
    ct = ConnTracker()
    w = Wire(ct)
    a, b = "fd00::1", "fd00::2"
    w.run(E / IPv6(src=a, dst=b) / UDP(sport=5000, dport=53) / b"q", commit=True)
    err = (E / IPv6(src=b, dst=a) / ICMPv6DestUnreach(code=4)
           / IPerror6(src=a, dst=b) / UDPerror(sport=5000, dport=53) / b"q")
    assert w.run(err).state == {"trk", "rel", "rpl"}
    assert w.run(E / IPv6(src=a, dst=b) / ICMPv6ND_NS(tgt=b)).state == {"trk", "inv"}


def test_fragment_memory_is_bounded():
    from scapy.layers.inet import fragment

    from slowpath.conntrack import tracker as tr
    ct = ConnTracker()
    w = Wire(ct)
    saved, tr.MAX_FRAGS = tr.MAX_FRAGS, 2
    try:
        pieces = [[E / f for f in fragment(IP(src=C, dst=S, id=i) / UDP(sport=5000 + i, dport=53)
                                           / (b"z" * 2000), fragsize=1000)] for i in range(3)]
        for p in pieces:
            w.run(p[0], commit=True)
        assert len(ct.frags) == 2
        assert w.run(pieces[0][1]).state == {"trk", "new"}
        assert w.run(pieces[2][1]).state == {"trk", "inv"}
        w.now += 31
        ct.expire(w.now)
        assert not ct.frags
    finally:
        tr.MAX_FRAGS = saved


def _ftp_control(w, helper="ftp"):
    w.run(tcp(sport=40000, dport=21, flags="S", seq=100), commit=True, helper=helper)
    w.run(tcp(src=S, dst=C, sport=21, dport=40000, flags="SA", seq=900, ack=101))
    w.run(tcp(sport=40000, dport=21, flags="A", seq=101, ack=901))


def test_ftp_alg_passive_and_active():
    ct = ConnTracker()
    w = Wire(ct)
    _ftp_control(w)
    pasv = b"227 Entering Passive Mode (10,0,0,2,195,80).\r\n"      # port 50000
    r = w.run(tcp(src=S, dst=C, sport=21, dport=40000, flags="PA", seq=901, ack=101,
                  payload=pasv))
    assert r.state == {"trk", "est", "rpl"}
    data = w.run(tcp(sport=40100, dport=50000, flags="S", seq=1), commit=True)
    assert data.state == {"trk", "new", "rel"}
    assert (data.key.ct_tp_src, data.key.ct_tp_dst) == (40000, 21)     # the control tuple
    port_cmd = b"PORT 10,0,0,1,156,64\r\n"                              # port 40000
    w.run(tcp(sport=40000, dport=21, flags="PA", seq=101, ack=901 + len(pasv), payload=port_cmd))
    active = w.run(tcp(src=S, dst=C, sport=20, dport=40000, flags="S", seq=5), commit=True)
    assert active.state == {"trk", "new", "rel"}
    eprt = b"EPRT |1|10.0.0.1|40002|\r\n"
    w.run(tcp(sport=40000, dport=21, flags="PA", seq=101 + len(port_cmd), ack=901 + len(pasv),
              payload=eprt))
    assert w.run(tcp(src=S, dst=C, sport=20, dport=40002, flags="S"), commit=True).state == {
        "trk", "new", "rel"}
    # a PORT naming another host (a bounce attack) expects nothing
    bounce = b"PORT 10,9,9,9,0,80\r\n"
    w.run(tcp(sport=40000, dport=21, flags="PA", seq=101 + len(port_cmd) + len(eprt),
              ack=901 + len(pasv), payload=bounce))
    assert w.run(tcp(src=S, dst="10.9.9.9", sport=20, dport=80, flags="S")).state == {"trk", "new"}
    # without alg=ftp the same exchange expects nothing
    ct2 = ConnTracker()
    w2 = Wire(ct2)
    _ftp_control(w2, helper=None)
    w2.run(tcp(src=S, dst=C, sport=21, dport=40000, flags="PA", seq=901, ack=101, payload=pasv))
    assert w2.run(tcp(sport=40100, dport=50000, flags="S", seq=1)).state == {"trk", "new"}


def test_offload_half_windows_relaxed_touch_and_unoffload_events():
    ct = ConnTracker()
    ct.set_offload(True, tcp=True)
    w = Wire(ct)
    r1, _, _ = handshake(w)
    t = __import__("slowpath.conntrack.packet", fromlist=["parse"]).parse(
        bytearray(bytes(tcp(flags="A", seq=1001, ack=5001)))).tuple
    assert ct.offload(0, Tuple(*t[:4], 1, 2)) is None          # unknown tuple
    conn = ct.offload(0, t)
    assert conn is not None and conn.offloaded and conn.tcp.liberal
    # a cache forwarded 10 MB we never saw; the FIN it hands us is fine
    w.now += 100
    ct.touch(conn, w.now)
    assert conn.expiration == w.now + 24 * 3600
    fin = w.run(tcp(flags="FA", seq=1001 + 10_000_000, ack=5001 + 3_000_000))
    assert fin.state == {"trk", "est"}
    assert ct.unoffloaded() == [conn] and not conn.offloaded   # closing: back to us
    assert ct.unoffloaded() == []
    w.run(tcp(src=S, dst=C, sport=8080, dport=40000, flags="FA", seq=5001 + 3_000_000,
              ack=1002 + 10_000_000))
    assert conn.tclass in ("tcp_close", "tcp_time_wait")
    # not offloadable: half-open, or before a UDP reply
    w.run(udp(), commit=True)
    assert ct.offload(0, __import__("slowpath.conntrack.packet", fromlist=["parse"]).parse(
        bytearray(bytes(udp()))).tuple) is None
    # deleting an offloaded connection reports it
    w.run(udp(src=S, dst=C, sport=53, dport=5000))
    u = ct.offload(0, __import__("slowpath.conntrack.packet", fromlist=["parse"]).parse(
        bytearray(bytes(udp()))).tuple)
    assert u is not None
    ct.flush()
    assert ct.unoffloaded() == [u]
