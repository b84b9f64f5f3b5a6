"""The Cython executor against slowpath.odp_execute (the Python reference):
random action lists on random packets give the same frames on the same
ports, in the same order, and the same final key where it is observable."""

from hypothesis import assume, given, settings, strategies as st, HealthCheck
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from fastpath.dpif import Dpif
from slowpath import dpactions as A
from slowpath import odp_execute
from slowpath.fields import MEMBERS
from slowpath.flow import parse_packet

from .util import recv_all

E = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
PACKETS = [
    bytes(E / IP(src="10.0.0.1", dst="10.0.0.2", tos=8) / UDP(sport=1, dport=2) / (b"u" * 9)),
    bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=5, dport=6, flags="S")),
    bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8) / (b"p" * 5)),
    bytes(E / IP(src="10.0.0.1", dst="10.0.0.2", frag=3) / (b"f" * 12)),
    bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=7, dport=8)),
    bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=7, dport=8)),
    bytes(E / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest()),
    bytes(E / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP()),
    bytes(E / Dot1AD(vlan=6) / Dot1Q(vlan=7) / IP() / TCP()),
    bytes(E / ARP(psrc="10.0.0.1", pdst="10.0.0.2")),
    bytes(E / IP() / UDP(chksum=0)),
    b"\x01" * 13,
]
# Members both executors rewrite in headers (nd_target, mpls_lse and ARP op
# are rewritten only by the Cython executor, as OVS does) or key-only ones.
MEMBERS_SET = ["dl_dst", "dl_src", "vlan0_tci", "nw_src", "nw_dst", "nw_tos", "nw_ttl",
               "ipv6_src", "ipv6_dst", "ipv6_label", "tp_src", "tp_dst", "arp_sha",
               "arp_tha", "pkt_mark", "skb_priority", "tun_id", "ct_mark"]


def _value(size):
    return st.integers(0, (1 << 8 * size) - 1)


@st.composite
def set_masked(draw):
    m = draw(st.sampled_from(MEMBERS_SET))
    size = MEMBERS[m][1]
    full = (1 << 8 * size) - 1
    return A.SetMasked(m, draw(_value(size)), draw(st.sampled_from([full]) | _value(size)))


def actions(depth=1):
    leaf = st.one_of(
        set_masked(),
        st.builds(A.PushVlan, st.sampled_from([0x8100, 0x88a8]), st.integers(0, 0xffff)),
        st.just(A.PopVlan()),
        st.builds(A.Output, st.sampled_from([2, 3])),
        st.builds(A.Trunc, st.integers(10, 80)),
        st.builds(A.Hash, st.just("l4"), st.integers(0, 0xffffffff)),
        st.just(A.CtClear()),
        st.builds(A.PushMpls, st.integers(0, 0xffffffff), st.sampled_from([0x8847, 0x8848])),
        st.builds(A.PopMpls, st.sampled_from([0x0800, 0x86dd, 0x8847])),
    )
    if depth:
        inner = st.lists(actions(depth - 1), max_size=4).map(tuple)
        leaf = leaf | st.builds(A.Clone, inner) | st.builds(
            A.CheckPktLen, st.sampled_from([20, 50, 60, 64, 70, 90, 1500]), inner, inner)
    return leaf


class Env:
    def __init__(self):
        self.out = []

    def output(self, dp_port, frame, key):
        self.out.append((dp_port, frame))

    def recirculate(self, frame, key):
        raise AssertionError("no recirc in this test")

    def meter(self, meter_id, frame):
        return True


def _tags(pkt):
    n, o = 0, 12
    while len(pkt) >= o + 4 and pkt[o:o + 2] in (b"\x81\x00", b"\x88\xa8"):
        n, o = n + 1, o + 4
    return n


def _max_tags(n, acts):
    """Most VLAN tags the frame carries while ``acts`` run."""
    most = n
    for a in acts:
        if isinstance(a, A.PushVlan):
            n += 1
        elif isinstance(a, A.PopVlan):
            n = max(0, n - 1)
        elif isinstance(a, A.Clone):
            most = max(most, _max_tags(n, a.actions))
        most = max(most, n)
    return most


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PACKETS), st.lists(actions(), min_size=1, max_size=8))
def test_same_frames_as_reference(pkt, acts):
    # OVS parses at most two VLAN tags (a third hides L3, so the slow path
    # never emits L3 rewrites for it); the reference looks through any number.
    assume(_max_tags(_tags(pkt), acts) <= 2)
    acts = tuple(acts) + (A.Output(2),)
    env = Env()
    odp_execute.execute(pkt, parse_packet(pkt, 1), acts, env)
    dp = Dpif()
    try:
        for i in range(3):
            dp.add_port(f"p{i}", "dummy")
        dp.execute(pkt, acts)
        got = {p: recv_all(dp.dummy_peer(p)) for p in (2, 3)}
    finally:
        dp.close()
    want = {p: [f for q, f in env.out if q == p] for p in (2, 3)}
    assert got == want


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PACKETS), st.lists(actions(depth=0), min_size=1, max_size=6))
def test_same_key_as_reference_at_recirculation(pkt, acts):
    """The key a recirculated packet is looked up with (Cython: re-parsed,
    metadata kept) equals the reference's running key."""
    class RecircEnv(Env):
        key = None

        def recirculate(self, frame, key):
            self.key = bytes(key)
    assume(_max_tags(_tags(pkt), acts) <= 2)
    acts = tuple(a for a in acts if not isinstance(a, A.Trunc)) + (A.Recirc(9),)
    env = RecircEnv()
    odp_execute.execute(pkt, parse_packet(pkt, 1), acts, env)
    dp = Dpif()
    try:
        dp.add_port("p1", "dummy")
        dp.add_port("p2", "dummy")
        dp.add_port("p3", "dummy")
        ups = dp.execute(pkt, acts, key=bytes(parse_packet(pkt, 1)))
    finally:
        dp.close()
    if env.key is None:
        assert ups == []
        return
    [u] = ups
    assert u.reason == "miss"
    ref = bytearray(env.key)
    got = bytearray(u.key)
    # Setting a header field the packet does not have changes only the
    # reference's key; a re-parse (OVS semantics) does not see it.
    assert parse_packet(u.packet, 1).buf[MEMBERS["dl_dst"][0]:] == got[MEMBERS["dl_dst"][0]:]
    o = MEMBERS["dl_dst"][0]
    assert got[:o] == ref[:o]


def _all_actions():
    return st.one_of(actions(), st.builds(A.Recirc, st.integers(0, 3)),
                     st.builds(A.Meter, st.integers(0, 5000)),
                     st.builds(A.Userspace, st.just("controller"), st.integers(0, 3)),
                     st.builds(A.Sample, st.sampled_from([0, 0x7fffffff, 0xffffffff]),
                               st.lists(actions(0), max_size=3).map(tuple)),
                     st.builds(A.PushMpls, st.integers(0, 0xffffffff), st.sampled_from([0x8847, 0x8848])),
                     st.builds(A.PopMpls, st.sampled_from([0x0800, 0x86dd])),
                     st.just(A.Ct(commit=True)),
                     st.builds(A.SetMasked, st.sampled_from(["nd_target", "mpls_lse", "nw_proto", "dl_type"]),
                               st.integers(0, 0xffff), st.integers(0, 0xffff)))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.sampled_from(PACKETS), st.binary(max_size=120)),
       st.data(), st.lists(_all_actions(), max_size=10))
def test_random_frames_and_actions_never_crash(pkt, data, acts):
    """Wire input never crashes: malformed/truncated frames under any action
    list, through the cache (poll) and through execute()."""
    if data.draw(st.booleans()) and len(pkt) > 20:
        cut = data.draw(st.integers(0, len(pkt)))
        pkt = pkt[:cut]
    dp = Dpif()
    try:
        for i in range(3):
            dp.add_port(f"p{i}", "dummy")
        dp.meter_set(7, rate=5, burst=1)
        o, s = MEMBERS["in_port"]
        mask = bytearray(len(bytes(parse_packet(b"", 0))))
        mask[o:o + s] = b"\xff" * s
        match = bytes(parse_packet(b"", 1))
        dp.flow_put(match, bytes(mask), tuple(acts) + (A.Output(2),))
        if pkt:
            dp.dummy_peer(1).send(pkt)
        for _ in range(2):
            dp.poll(0)
        dp.execute(pkt or b"\0", tuple(acts))
        recv_all(dp.dummy_peer(2))
        recv_all(dp.dummy_peer(3))
    finally:
        dp.close()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PACKETS[:-1]), st.booleans(), st.booleans(), st.binary(max_size=16),
       st.one_of(st.none(), st.integers(14, 60)))
def test_tunnel_push_equals_python_twin(pkt, v6, csum, opts, trunc):
    """_tnl_push (Cython) == slowpath.tunnel.push_header (its Python twin)."""
    from scapy.contrib.geneve import GENEVE
    from slowpath import tunnel
    opts = opts[:len(opts) // 4 * 4]
    ip = (IPv6(src="2001:db8::a", dst="2001:db8::b") if v6 else
          IP(src="192.0.2.1", dst="192.0.2.2", flags="DF"))
    hdr = bytearray(bytes(Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b") / ip
                          / UDP(sport=0, dport=6081) / GENEVE(vni=7, options=opts)))
    l4 = 14 + (40 if v6 else 20)
    hdr[l4 + 6:l4 + 8] = b"\xff\xff" if csum else b"\0\0"
    hdr = bytes(hdr)
    acts = ((A.Trunc(trunc),) if trunc else ()) + (A.TunnelPush(9, 3, header=hdr),)
    dp = Dpif()
    try:
        for i in range(3):
            dp.add_port(f"p{i}", "dummy")
        dp.execute(pkt, acts, key=bytes(parse_packet(pkt, 1)))
        [got] = recv_all(dp.dummy_peer(3))
    finally:
        dp.close()
    inner = pkt[:trunc] if trunc else pkt
    assert got == tunnel.push_header(inner, parse_packet(pkt, 1), hdr)
