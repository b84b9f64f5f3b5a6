"""NAT both directions (checksums checked by scapy), limits, the ct action
under odp_execute, and the control commands' text."""

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath.conntrack import ConnTracker, dpctl
from slowpath.conntrack.execute import make_handler
from slowpath.conntrack.nat import parse_nat
from slowpath.flow import parse_packet
from tests.unit.conntrack.helpers import C, E, S, Wire, checksums_ok, icmp_echo, tcp, udp


def ip(s):
    return int(ipaddress.ip_address(s))


def test_parse_nat_specs():
    s = parse_nat("src=10.0.0.100-10.0.0.101:2000-2010,random")
    assert (s.kind, s.ip_lo, s.ip_hi, s.port_lo, s.port_hi, s.random) == (
        "src", ip("10.0.0.100"), ip("10.0.0.101"), 2000, 2010, True)
    d = parse_nat("dst=[fd00::5]:80,persistent")
    assert (d.kind, d.af, d.ip_lo, d.port_lo, d.persistent) == ("dst", 6, ip("fd00::5"), 80, True)
    assert parse_nat("dst=fd00::5-fd00::6").ip_hi == ip("fd00::6")
    assert parse_nat("").kind is None and parse_nat(None) is None
    with pytest.raises(ValueError):
        parse_nat("src=10.0.0.5-10.0.0.1")


def test_snat_to_a_pool_both_directions():
    ct = ConnTracker(seed=1)
    w = Wire(ct)
    nat = "src=10.0.0.100-10.0.0.101:2000-2010"
    r = w.run(tcp(flags="S", payload=b""), commit=True, nat=nat)
    assert r.state == {"trk", "new", "snat"}
    p = r.pkt
    assert p[IP].src in ("10.0.0.100", "10.0.0.101") and 2000 <= p[TCP].sport <= 2010
    assert p[IP].dst == S and p[TCP].dport == 8080
    assert checksums_ok(r.frame)
    assert (r.key.nw_src, r.key.tp_src) == (ip(p[IP].src), p[TCP].sport)    # key follows
    assert r.key.ct_nw_src == ip(C)                                        # original tuple
    pool_ip, pool_port = p[IP].src, p[TCP].sport
    reply = w.run(tcp(src=S, dst=pool_ip, sport=8080, dport=pool_port, flags="SA",
                      seq=5000, ack=1001, payload=b"hello"), nat="")
    q = reply.pkt
    assert reply.state == {"trk", "est", "rpl", "snat"}
    assert (q[IP].dst, q[TCP].dport, q[IP].src, q[TCP].sport) == (C, 40000, S, 8080)
    assert checksums_ok(reply.frame)
    # without "nat" in the action the packet is classified but not translated
    plain = w.run(tcp(flags="A", seq=1001, ack=5001))
    assert plain.state == {"trk", "est"} and plain.pkt[IP].src == C
    # a second client gets a different pool tuple
    r2 = w.run(tcp(src="10.0.0.9", flags="S"), commit=True, nat=nat)
    assert (r2.pkt[IP].src, r2.pkt[TCP].sport) != (pool_ip, pool_port)


def test_snat_keeps_the_port_when_free_and_persistent_keeps_the_address():
    ct = ConnTracker(seed=2)
    w = Wire(ct)
    nat = "src=192.0.2.1-192.0.2.50,persistent"
    a = w.run(udp(sport=1111), commit=True, nat=nat).pkt
    b = w.run(udp(sport=2222), commit=True, nat=nat).pkt
    assert a[UDP].sport == 1111 and b[UDP].sport == 2222
    assert a[IP].src == b[IP].src


def test_dnat_to_a_backend_with_port():
    ct = ConnTracker()
    w = Wire(ct)
    vip, backend = "10.0.0.200", "10.0.0.3"
    r = w.run(tcp(dst=vip, dport=80, flags="S"), commit=True, nat=f"dst={backend}:8080")
    assert r.state == {"trk", "new", "dnat"}
    assert (r.pkt[IP].dst, r.pkt[TCP].dport) == (backend, 8080) and checksums_ok(r.frame)
    rep = w.run(tcp(src=backend, dst=C, sport=8080, dport=40000, flags="SA", seq=7, ack=1001),
                nat="")
    assert (rep.pkt[IP].src, rep.pkt[TCP].sport) == (vip, 80) and checksums_ok(rep.frame)
    assert rep.state == {"trk", "est", "rpl", "dnat"}
    out = dpctl.run(ct, "dpctl/dump-conntrack", [], w.now)
    assert out == ("tcp,orig=(src=10.0.0.1,dst=10.0.0.200,sport=40000,dport=80),"
                   "reply=(src=10.0.0.3,dst=10.0.0.1,sport=8080,dport=40000),"
                   "protoinfo=(state=ESTABLISHED)\n")


def test_udp_and_icmp_nat_checksums_and_ipv6():
    ct = ConnTracker()
    w = Wire(ct)
    r = w.run(udp(), commit=True, nat="src=10.1.1.1")
    assert r.pkt[IP].src == "10.1.1.1" and checksums_ok(r.frame)
    back = w.run(udp(src=S, dst="10.1.1.1", sport=53, dport=5000), nat="")
    assert back.pkt[IP].dst == C and checksums_ok(back.frame)
    e = w.run(icmp_echo(), commit=True, nat="src=10.1.1.2")
    assert e.pkt[IP].src == "10.1.1.2" and checksums_ok(e.frame)
    er = w.run(icmp_echo(src=S, dst="10.1.1.2", type=0), nat="")
    assert er.pkt[IP].dst == C and er.state == {"trk", "est", "rpl", "snat"} and checksums_ok(er.frame)
    v6 = w.run(tcp(src="fd00::1", dst="fd00::2", v6=True), commit=True, nat="src=fd00::99")
    p = v6.pkt
    assert p[IPv6].src == "fd00::99"
    q = Ether(bytes(p))
    del q[TCP].chksum
    assert Ether(bytes(q))[TCP].chksum == p[TCP].chksum


def test_icmp_error_about_a_translated_connection_is_translated():
    ct = ConnTracker()
    w = Wire(ct)
    w.run(udp(), commit=True, nat="src=10.1.1.1:3000")
    err = (E / IP(src=S, dst="10.1.1.1") / ICMP(type=3, code=3)
           / IPerror(src="10.1.1.1", dst=S) / UDPerror(sport=3000, dport=53) / b"q")
    r = w.run(err, nat="")
    assert r.state == {"trk", "rel", "rpl", "snat"}
    p = r.pkt
    assert p[IP].dst == C and p[IPerror].src == C and p[UDPerror].sport == 5000
    q = Ether(bytes(p))
    del q[IP].chksum, q[ICMP].chksum, q[IPerror].chksum
    q = Ether(bytes(q))
    assert (q[IP].chksum, q[ICMP].chksum, q[IPerror].chksum) == (
        p[IP].chksum, p[ICMP].chksum, p[IPerror].chksum)


def test_translated_icmp_error_through_ct_again_is_left_alone():
    ct = ConnTracker()
    w = Wire(ct)
    w.run(udp(), commit=True, nat="src=10.1.1.1:3000")
    err = (E / IP(src=S, dst="10.1.1.1") / ICMP(type=3, code=3)
           / IPerror(src="10.1.1.1", dst=S) / UDPerror(sport=3000, dport=53) / b"q")
    first = w.run(err, nat="")
    again = w.run(first.pkt, nat="", commit=True, key=first.key)
    assert again.state == {"trk", "rel", "rpl", "snat"}
    assert bytes(again.frame) == bytes(first.frame)


def test_nat_pool_exhaustion_refuses():
    ct = ConnTracker()
    w = Wire(ct)
    nat = "src=10.1.1.1:3000-3001"
    assert w.run(udp(sport=1), commit=True, nat=nat).ok
    assert w.run(udp(sport=2), commit=True, nat=nat).ok
    r = w.run(udp(sport=3), commit=True, nat=nat)
    assert not r.ok and r.state == {"trk", "inv"} and ct.stats["nat_exhausted"] == 1


def test_syn_flood_fills_a_zone_new_refused_established_keep_flowing():
    ct = ConnTracker()
    ct.set_zone_limit(9, 20)
    w = Wire(ct, zone=9)
    # one established connection before the flood
    w.run(tcp(sport=1000, flags="S", seq=1), commit=True)
    w.run(tcp(src=S, dst=C, sport=8080, dport=1000, flags="SA", seq=100, ack=2))
    w.run(tcp(sport=1000, flags="A", seq=2, ack=101))
    results = [w.run(tcp(src="10.7.%d.%d" % (i // 250, i % 250 + 1), sport=20000 + i, flags="S"),
                     commit=True) for i in range(200)]
    admitted = [r for r in results if r.ok]
    refused = [r for r in results if not r.ok]
    assert len(admitted) == 19 and len(refused) == 181
    assert all(r.state == {"trk", "inv"} for r in refused)
    assert ct.stats["refused_zone_limit"] == 181 and ct.zone_count[9] == 20
    # established traffic keeps flowing in both directions
    for i in range(5):
        a = w.run(tcp(sport=1000, flags="PA", seq=2 + i * 10, ack=101, payload=b"d" * 10))
        b = w.run(tcp(src=S, dst=C, sport=8080, dport=1000, flags="A", seq=101, ack=12 + i * 10))
        assert a.ok and a.state == {"trk", "est"}
        assert b.ok and b.state == {"trk", "est", "rpl"}
    # other zones are not affected; a refused SYN never got an entry
    assert Wire(ct, zone=1).run(tcp(flags="S"), commit=True).ok
    assert ct.lookup(9, __import__("slowpath.conntrack.packet", fromlist=["parse"]).parse(
        bytearray(bytes(tcp(src="10.7.0.200", sport=20199, flags="S")))).tuple) is None
    # once half-open entries expire, new connections are admitted again
    w.now += 31
    assert w.run(tcp(sport=3000, flags="S"), commit=True).ok
    assert "zone=9,limit=20,count=2" in dpctl.run(ct, "dpctl/ct-get-limits", [], w.now)


def test_global_limit_and_refusal_may_be_marked_only():
    ct = ConnTracker(max_conns=3)
    dpctl.run(ct, "dpctl/ct-set-refuse-policy", ["mark"], 0.0)
    w = Wire(ct)
    for i in range(3):
        assert w.run(udp(sport=100 + i), commit=True).state == {"trk", "new"}
    r = w.run(udp(sport=200), commit=True)
    assert r.ok and r.state == {"trk", "inv"} and ct.stats["refused_global_limit"] == 1
    assert ct.n_conns == 3


class Env:
    def __init__(self):
        self.out, self.recirc = [], []

    def output(self, port, frame, key):
        self.out.append((port, frame))

    def recirculate(self, frame, key):
        self.recirc.append((frame, key))

    def meter(self, meter_id, frame):
        return True


def test_ct_action_through_odp_execute():
    ct = ConnTracker()
    ct.set_zone_limit(3, 1)
    now = [50.0]
    saved = odp_execute._HANDLERS.get(dp.Ct)
    odp_execute.register(dp.Ct, make_handler(ct, lambda: now[0]))
    try:
        env = Env()
        f = bytes(tcp(flags="S"))
        st = odp_execute.execute(f, parse_packet(f, 1),
                                 (dp.Ct(zone=3), dp.Recirc(5)), env)
        (frame, key), = env.recirc
        assert key.ct_state == 0x21 and key.ct_zone == 3 and key.recirc_id == 5
        # the recirculated pass commits and outputs, translated
        st = odp_execute.execute(frame, key, (dp.Ct(True, 3, nat="src=10.5.5.5"), dp.Output(2)), env)
        assert Ether(env.out[-1][1])[IP].src == "10.5.5.5"
        # zone 3 is full: the next commit is dropped before the output
        g = bytes(tcp(sport=1, flags="S"))
        st = odp_execute.execute(g, parse_packet(g, 1), (dp.Ct(True, 3), dp.Output(2)), env)
        assert st.dropped and len(env.out) == 1
    finally:
        if saved is not None:
            odp_execute.register(dp.Ct, saved)
        else:
            odp_execute._HANDLERS.pop(dp.Ct, None)


def test_control_commands():
    ct = ConnTracker()
    w = Wire(ct, zone=4)
    w.run(tcp(flags="S"), commit=True, mark=(7, 0xffffffff))
    w.run(udp(), commit=True, zone=0)
    out = dpctl.run(ct, "dpctl/dump-conntrack", ["zone=4"], w.now)
    assert out == ("tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=8080),"
                   "reply=(src=10.0.0.2,dst=10.0.0.1,sport=8080,dport=40000),zone=4,mark=7,"
                   "protoinfo=(state=SYN_SENT)\n")
    assert "timeout=30" in dpctl.run(ct, "dpctl/dump-conntrack", ["-s", "zone=4"], w.now)
    stats = dpctl.run(ct, "dpctl/ct-stats-show", [], w.now)
    assert "Total: 2" in stats and "TCP: 1" in stats and "UDP: 1" in stats
    dpctl.run(ct, "dpctl/ct-set-limits", ["default=10", "zone=4,limit=5"], w.now)
    assert dpctl.run(ct, "dpctl/ct-get-limits", ["zone=4,7"], w.now) == (
        "default limit=10\nzone=4,limit=5,count=1\nzone=7,limit=10,count=0\n")
    dpctl.run(ct, "dpctl/flush-conntrack", ["zone=4"], w.now)
    assert dpctl.run(ct, "dpctl/ct-get-nconns", [], w.now) == "1\n"
    dpctl.run(ct, "dpctl/ct-set-timeout-policy", ["zone=0", "udp_first=1"], w.now)
    with pytest.raises(ValueError):
        dpctl.run(ct, "dpctl/ct-set-timeout-policy", ["zone=0", "bogus=1"], w.now)
    w.run(udp(sport=7), commit=True, zone=0)
    dpctl.run(ct, "dpctl/flush-conntrack", ["zone=0", "ct_nw_src=10.0.0.1,ct_nw_proto=17,ct_tp_src=7"],
              w.now)
    assert [c.key.sport for c in ct.connections()] == [5000]
    with pytest.raises(ValueError):
        dpctl.run(ct, "dpctl/flush-conntrack", ["ct_bogus=1"], w.now)
    dpctl.run(ct, "dpctl/flush-conntrack", [], w.now)
    assert ct.n_conns == 0 and dpctl.run(ct, "dpctl/dump-conntrack", [], w.now) == ""


def test_timeout_policies_from_database_rows():
    import uuid

    from slowpath.conntrack.config import timeout_policies

    class T:
        def __init__(self, rows):
            self.rows = rows

    class DB:
        pass
    dp_u, z_u, tp_u, bad_u, zb_u = (uuid.uuid4() for _ in range(5))
    db = DB()
    db.tables = {
        "Open_vSwitch": T({uuid.uuid4(): {"datapaths": {"netdev": dp_u}}}),
        "Datapath": T({dp_u: {"ct_zones": {5: z_u, 6: zb_u}}}),
        "CT_Zone": T({z_u: {"timeout_policy": {tp_u}}, zb_u: {"timeout_policy": {bad_u}}}),
        "CT_Timeout_Policy": T({tp_u: {"timeouts": {"udp_first": 7, "tcp_close_wait": 9}},
                                bad_u: {"timeouts": {"nonsense": 1}}}),
    }
    policies, problems = timeout_policies(db)
    assert policies == {5: {"udp_first": 7.0, "tcp_fin_wait": 9.0}}
    assert len(problems) == 1 and "nonsense" in problems[0]
    ct = ConnTracker()
    ct.replace_timeout_policies(policies)
    assert ct.timeout(5, "udp_first") == 7 and ct.timeout(6, "udp_first") == 60


def test_tftp_behind_snat_reaches_the_real_client():
    ct = ConnTracker()
    w = Wire(ct)
    req = udp(sport=3333, dport=69, payload=b"\x00\x01f\x00octet\x00")
    r = w.run(req, commit=True, nat="src=10.1.1.1:4000", helper="tftp")
    assert (r.pkt[IP].src, r.pkt[UDP].sport) == ("10.1.1.1", 4000)
    data = udp(src=S, dst="10.1.1.1", sport=45000, dport=4000, payload=b"\x00\x03\x00\x01d")
    d = w.run(data, commit=True, nat="")
    assert d.state == {"trk", "new", "rel", "dnat"}
    assert (d.pkt[IP].dst, d.pkt[UDP].dport) == (C, 3333) and checksums_ok(d.frame)
    ack = w.run(udp(sport=3333, dport=45000, payload=b"\x00\x04\x00\x01"), nat="")
    assert ack.state == {"trk", "est", "rel", "rpl", "dnat"}
    assert (ack.pkt[IP].src, ack.pkt[UDP].sport) == ("10.1.1.1", 4000) and checksums_ok(ack.frame)
