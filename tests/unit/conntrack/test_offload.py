"""Conntrack offload (slowpath/conntrack/offload.py): the flattened megaflow
of an established connection decides exactly what the slow path decides.

The reference is the slow path itself: the packet translated from table 0,
executed by odp_execute with the tracker running ``ct`` and every
recirculation translated again.  The candidate is the offload plan's
actions executed without the tracker (what the fast path runs)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath.conntrack import ConnTracker
from slowpath.conntrack.execute import make_handler
from slowpath.conntrack.offload import CtOffload
from slowpath.flow import FlowKey, parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port
from slowpath.revalidator import Revalidator
from slowpath.xlate import Megaflow
from tests.unit.conntrack.helpers import tcp, udp
from vswitch.bridge import fast_path_can_execute

C, S, VIP, POOL = "10.0.0.1", "10.0.0.2", "10.0.0.100", "10.0.4.50"


def fm(table, prio, match, *actions):
    return FlowMod("add", table, prio, Match.parse(match),
                   instructions=(A.ApplyActions(tuple(actions)),))


def ct(**kw):
    return A.Ct(**kw)


def firewall(kind: str, mark: bool = False, pre_set: bool = False, post: tuple = ()):
    """Rule sets: one zone (plain), two zones (three-tier style), DNAT, SNAT."""
    pre = (A.SetField("eth_src", 0x020000000099),) if pre_set else ()
    commit_exec = (A.SetField("ct_mark", 7),) if mark else ()
    rules = [fm(0, 0, "", )]
    if kind == "plain":
        rules += [
            fm(0, 10, "ip", *pre, ct(zone=1, table=1)),
            fm(1, 200, "ct_state=+inv+trk"),
            fm(1, 100, "ct_state=+new-est+trk,tcp,in_port=1",
               ct(commit=True, zone=1, exec=commit_exec), A.Output(2)),
            fm(1, 100, "ct_state=+new-est+trk,udp,in_port=1",
               ct(commit=True, zone=1, exec=commit_exec), A.Output(2)),
            fm(1, 90, "ct_state=+est+trk,ip,in_port=1", *post, A.Output(2)),
            fm(1, 90, "ct_state=+est+trk,in_port=2", A.Output(1)),
        ]
    elif kind == "two-zones":
        rules += [
            fm(0, 10, "ip,in_port=1", *pre, ct(zone=1, table=1)),
            fm(0, 10, "ip,in_port=2", ct(zone=2, table=1)),
            fm(1, 200, "ct_state=+inv+trk"),
            fm(1, 150, "ct_state=+est+trk", A.Resubmit(table=2)),
            fm(1, 100, "ct_state=+new-est+trk,in_port=1",
               ct(commit=True, zone=1, exec=commit_exec), A.Resubmit(table=2)),
            fm(2, 10, f"ip,nw_dst={S}", ct(zone=2, table=3)),
            fm(2, 10, f"ip,nw_dst={C}", ct(zone=1, table=3)),
            fm(3, 200, "ct_state=+inv+trk"),
            fm(3, 150, "ct_state=+est+trk", A.Resubmit(table=4)),
            fm(3, 100, "ct_state=+new-est+trk", ct(commit=True, zone=2), A.Resubmit(table=4)),
            fm(4, 10, f"ip,nw_dst={S}", *post, A.Output(2)),
            fm(4, 10, f"ip,nw_dst={C}", A.Output(1)),
        ]
    elif kind in ("dnat", "snat"):
        nat = f"dst={S}" if kind == "dnat" else f"src={POOL}:40000-40100"
        rules += [
            fm(0, 10, "ip", *pre, ct(zone=5, table=1, nat="")),
            fm(1, 100, "ct_state=+new-inv+trk,in_port=1",
               ct(commit=True, zone=5, nat=nat, exec=commit_exec), A.Output(2)),
            fm(1, 90, "ct_state=+est+trk,ip,in_port=1", *post, A.Output(2)),
            fm(1, 90, "ct_state=+est+trk,in_port=2", A.Output(1)),
        ]
    return rules


class Env:
    """The slow path's datapath: outputs recorded, recirculation translated."""

    def __init__(self, h):
        self.h, self.out = h, []

    def output(self, dp_port, frame, key):
        self.out.append((dp_port, bytes(frame)))

    def recirculate(self, frame, key):
        x = self.h.p.xlate(key, frame, self.h.now)
        odp_execute.run(odp_execute.PacketState(bytearray(frame), key.copy()), x.actions, self)

    def meter(self, meter_id, frame):
        return True


class Harness:
    def __init__(self, rules):
        self.p = Pipeline("secure")
        for n in (1, 2):
            self.p.set_port(Port(ofport=n, name=f"p{n}", dp_port=10 + n))
        for r in rules:
            self.p.flow_mod(r, 0.0)
        self.ct = ConnTracker(seed=1)
        self.ct.set_offload(True, tcp=True)      # most tests here are about TCP
        self.off = CtOffload(self.ct, fast_path_can_execute)
        self.now = 100.0

    def slow(self, pkt, port):
        """Through the slow path, tracker included; returns the outputs."""
        data = bytes(pkt)
        key = parse_packet(data, port)
        x = self.p.xlate(key, data, self.now)
        env = Env(self)
        odp_execute.execute(data, key, x.actions, env)
        return env.out

    def offloaded(self, plan, pkt, port):
        """What the cached entry does to ``pkt`` (no tracker, no recirculation)."""
        data = bytes(pkt)
        env = Env(self)
        env.recirculate = None         # must not happen
        odp_execute.execute(data, parse_packet(data, port), plan.actions, env)
        return env.out

    def plan(self, pkt, port):
        return self.off.plan(self.p, parse_packet(bytes(pkt), port), self.now)


@pytest.fixture(autouse=True)
def ct_handler():
    saved = odp_execute._HANDLERS.get(dp.Ct)
    yield
    if saved is not None:
        odp_execute.register(dp.Ct, saved)


def install(h):
    odp_execute.register(dp.Ct, make_handler(h.ct, lambda: h.now))


def handshake(h, sport=40000, dst=S):
    """An allowed TCP connection, established both ways; returns the server's
    view of addresses (after NAT) for the replies."""
    out = h.slow(tcp(dst=dst, sport=sport, flags="S", seq=1000), 1)
    assert out, "SYN dropped"
    syn = FlowKey(parse_packet(out[0][1], 2).buf)
    srv, cli, cport, sport2 = syn.nw_dst, syn.nw_src, syn.tp_src, syn.tp_dst
    ip = lambda v: ".".join(str(b) for b in v.to_bytes(4, "big"))  # noqa: E731
    srv, cli = ip(srv), ip(cli)
    assert h.slow(tcp(src=srv, dst=cli, sport=sport2, dport=cport, flags="SA", seq=5000,
                      ack=1001), 2)
    assert h.slow(tcp(dst=dst, sport=sport, flags="A", seq=1001, ack=5001), 1)
    return srv, cli, sport2, cport


def reply(srv, cli, sport, dport, flags="A", seq=5001, ack=1001, payload=b""):
    return tcp(src=srv, dst=cli, sport=sport, dport=dport, flags=flags, seq=seq, ack=ack,
               payload=payload)


@pytest.mark.parametrize("kind", ["plain", "two-zones", "dnat", "snat"])
def test_established_tcp_flattens_to_what_the_slow_path_does(kind):
    h = Harness(firewall(kind))
    install(h)
    dst = VIP if kind == "dnat" else S
    if kind == "dnat":
        h.p.flow_mod(fm(1, 100, f"ct_state=+new-inv+trk,in_port=1,tcp,nw_dst={VIP}",
                        ct(commit=True, zone=5, nat=f"dst={S}"), A.Output(2)), 0.0)
    srv, cli, sp, cp = handshake(h, dst=dst)
    fwd = tcp(dst=dst, flags="PA", seq=1001, ack=5001, payload=b"x" * 50)
    back = reply(srv, cli, sp, cp, flags="PA", payload=b"y" * 30)
    for pkt, port in ((fwd, 1), (back, 2)):
        plan = h.plan(pkt, port)
        assert plan is not None, kind
        assert not any(isinstance(a, (dp.Ct, dp.Recirc, dp.Userspace)) for a in plan.actions)
        assert Megaflow(plan.match, plan.mask, plan.actions).matches(
            parse_packet(bytes(pkt), port))
        assert h.offloaded(plan, pkt, port) == h.slow(pkt, port)
    if kind in ("dnat", "snat"):
        assert any(isinstance(a, dp.SetMasked) for a in h.plan(fwd, 1).actions)


def test_teardown_segments_are_not_covered():
    h = Harness(firewall("plain"))
    install(h)
    handshake(h)
    plan = h.plan(tcp(flags="A", seq=1001, ack=5001), 1)
    mf = Megaflow(plan.match, plan.mask, plan.actions)
    for flags in ("S", "F", "R", "FA", "RA", "SA", "", "P", "U"):   # no ACK: +inv
        assert not mf.matches(parse_packet(bytes(tcp(flags=flags, seq=1001, ack=5001)), 1))
    for flags in ("A", "PA", "UA"):
        assert mf.matches(parse_packet(bytes(tcp(flags=flags, seq=9, ack=9)), 1))
    # another connection, or the same ports another way round, is not covered
    assert not mf.matches(parse_packet(bytes(tcp(sport=40001, flags="A")), 1))
    assert not mf.matches(parse_packet(bytes(tcp(src=S, dst=C, sport=8080, dport=40000,
                                                 flags="A")), 1))


def test_tcp_is_offloaded_only_when_asked_udp_by_default():
    """Offloaded TCP segments skip the window check: the cache would decide
    differently from the slow path, so TCP waits for tcp-liberal."""
    h = Harness(firewall("plain"))
    h.ct.set_offload(True)
    install(h)
    handshake(h)
    assert h.plan(tcp(flags="A", seq=1001, ack=5001), 1) is None
    h.slow(udp(), 1)
    h.slow(udp(src=S, dst=C, sport=53, dport=5000), 2)
    assert h.plan(udp(), 1) is not None
    h.ct.set_offload(True, tcp=True)
    assert h.plan(tcp(flags="A", seq=1001, ack=5001), 1) is not None


def test_not_established_not_offloaded():
    h = Harness(firewall("plain"))
    install(h)
    h.slow(tcp(flags="S"), 1)
    assert h.plan(tcp(flags="A", seq=1001), 1) is None      # no answer yet
    h.slow(udp(), 1)
    assert h.plan(udp(), 1) is None                          # UDP: one way only so far
    h.slow(udp(src=S, dst=C, sport=53, dport=5000), 2)
    assert h.plan(udp(), 1) is not None


def test_per_packet_work_is_not_offloaded():
    # a controller action after ct: the flow cannot be flattened
    h = Harness(firewall("plain", post=(A.Controller(),)))
    install(h)
    handshake(h)
    assert h.plan(tcp(flags="A", seq=1001, ack=5001), 1) is None
    # a commit that changes the mark on every packet (by direction)
    rules = firewall("plain")
    rules.append(fm(1, 95, "ct_state=+est+trk,in_port=1",
                    ct(commit=True, zone=1, exec=(A.SetField("ct_mark", 1),)), A.Output(2)))
    rules.append(fm(1, 95, "ct_state=+est+trk,in_port=2",
                    ct(commit=True, zone=1, exec=(A.SetField("ct_mark", 2),)), A.Output(1)))
    h = Harness(rules)
    install(h)
    srv, cli, sp, cp = handshake(h)
    fwd, back = tcp(flags="A", seq=1001, ack=5001), reply(srv, cli, sp, cp)
    h.slow(fwd, 1)
    assert h.plan(fwd, 1) is not None         # mark is 1: committing 1 changes nothing
    h.slow(back, 2)                           # ... until a reply sets 2
    assert h.plan(fwd, 1) is None


def test_tracker_takes_back_closing_and_remarked_connections():
    h = Harness(firewall("plain"))
    install(h)
    handshake(h)
    fwd = tcp(flags="A", seq=1001, ack=5001)
    plan = h.plan(fwd, 1)
    h.off.installed(b"m", b"k", plan)
    conn = plan.conns[0][0]
    assert conn.offloaded and conn.tcp.liberal
    assert h.off.doomed() == []
    h.slow(tcp(flags="FA", seq=1001, ack=5001), 1)           # the FIN reaches the tracker
    assert h.off.doomed() == [(b"m", b"k")]
    h.off.forget(b"m", b"k")
    assert not conn.offloaded and h.off.by_conn == {}


def test_touch_and_cache_hits_keep_the_connection_alive():
    h = Harness(firewall("plain"))
    install(h)
    h.ct.set_timeout_policy(1, {"udp_multiple": 30})
    h.slow(udp(), 1)
    h.slow(udp(src=S, dst=C, sport=53, dport=5000), 2)
    plan = h.plan(udp(), 1)
    h.off.installed(b"m", b"k", plan)
    conn = plan.conns[0][0]
    last_hit = [h.now + 25]
    h.ct.cache_used = lambda c: h.off.used(c, lambda m, k: last_hit[0])
    assert h.ct.expire(h.now + 40) == 0                      # hit at +25: alive until +55
    assert h.ct.lookup(1, conn.key) is not None
    assert h.ct.expire(h.now + 56) == 1                      # no more hits: gone
    assert h.off.doomed() == [(b"m", b"k")]
    # touch (the revalidator's report) counts packets and refreshes
    h2 = Harness(firewall("plain"))
    install(h2)
    h2.slow(udp(), 1)
    h2.slow(udp(src=S, dst=C, sport=53, dport=5000), 2)
    c2 = h2.plan(udp(), 1).conns[0][0]
    h2.ct.touch(c2, h2.now + 100, packets=10, nbytes=1000, reply=False)
    assert c2.packets[0] == 11 and c2.expiration > h2.now + 100


def test_revalidation_follows_rule_changes():
    h = Harness(firewall("plain"))
    install(h)
    handshake(h)
    fwd = tcp(flags="A", seq=1001, ack=5001)
    plan = h.plan(fwd, 1)
    rv = Revalidator()
    rv.installed_offload(plan.match, plan.mask, plan, h.now)
    dump = [(plan.match, plan.mask, plan.actions, 5, 500, h.now + 1)]
    assert rv.sweep(dump, h.now + 1) == []
    assert plan.conns[0][0].packets[0] >= 5                  # hits reached the tracker
    (rule,) = [r for r in h.p.flow_stats() if r.table_id == 1 and r.priority == 90
               and "in_port=1" in r.match.to_string()]
    assert rule.packet_count >= 5
    # an unrelated rule: kept
    h.p.flow_mod(fm(1, 300, "udp,tp_dst=9"), 0.0)
    assert rv.sweep(dump, h.now + 2) == []
    # a rule that drops this established traffic: the entry goes
    h.p.flow_mod(fm(1, 300, "ct_state=+est+trk,tcp,tp_dst=8080"), 0.0)
    assert rv.sweep(dump, h.now + 3) == [(plan.match, plan.mask)]


def test_flush_and_offload_off_take_connections_back():
    h = Harness(firewall("plain"))
    install(h)
    handshake(h)
    plan = h.plan(tcp(flags="A", seq=1001, ack=5001), 1)
    h.off.installed(b"m", b"k", plan)
    h.ct.flush(1)
    assert h.off.doomed() == [(b"m", b"k")]
    h.off.forget(b"m", b"k")
    handshake(h)
    plan = h.plan(tcp(flags="A", seq=1001, ack=5001), 1)
    h.off.installed(b"m", b"k", plan)
    h.ct.set_offload(False)
    assert h.off.doomed() == [(b"m", b"k")]
    assert h.plan(tcp(flags="A", seq=1001, ack=5001), 1) is None


_PRE = st.booleans()
_POST = st.sampled_from([(), (A.SetField("nw_tos", 0x20),), (A.DecTtl(),),
                         (A.PushVlan(), A.SetField("vlan_vid", 0x1000 | 7))])


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(["plain", "two-zones", "snat"]), mark=st.booleans(), pre=_PRE,
       post=_POST, proto=st.sampled_from(["tcp", "udp"]),
       probes=st.lists(st.tuples(st.sampled_from(["fwd", "back"]),
                                 st.sampled_from(["A", "PA", "UA", "S", "F", "R", "FA", "P", ""]),
                                 st.sampled_from([0, 1, 2]),          # 1: other sport
                                 st.integers(1, 255), st.binary(max_size=40)),
                       min_size=1, max_size=8))
def test_offloaded_decision_equals_slow_path_decision(kind, mark, pre, post, proto, probes):
    """For any packet the offloaded megaflow matches, its actions do what
    the slow path (tracker included) does with that packet."""
    h = Harness(firewall(kind, mark=mark, pre_set=pre, post=post))
    install(h)
    if proto == "tcp":
        srv, cli, sp, cp = handshake(h)
        mk = {"fwd": lambda fl, sport, ttl, pl: tcp(flags=fl, sport=sport, seq=1001, ack=5001,
                                                     payload=pl),
              "back": lambda fl, sport, ttl, pl: reply(srv, cli, sp, sport if sport != 40000
                                                       else cp, flags=fl, payload=pl)}
        base = 40000
    else:
        out = h.slow(udp(), 1)
        assert out
        k = parse_packet(out[0][1], 2)
        srv = ".".join(str(b) for b in k.nw_dst.to_bytes(4, "big"))
        cli = ".".join(str(b) for b in k.nw_src.to_bytes(4, "big"))
        sp, cp = k.tp_dst, k.tp_src
        assert h.slow(udp(src=srv, dst=cli, sport=sp, dport=cp), 2)
        mk = {"fwd": lambda fl, sport, ttl, pl: udp(sport=sport, payload=pl),
              "back": lambda fl, sport, ttl, pl: udp(src=srv, dst=cli, sport=sp,
                                                     dport=cp if sport == 5000 else sport,
                                                     payload=pl)}
        base = 5000
    plans = {"fwd": h.plan(mk["fwd"]("A", base, 64, b"a"), 1),
             "back": h.plan(mk["back"]("A", base, 64, b"b"), 2)}
    assert plans["fwd"] is not None and plans["back"] is not None
    for d, plan in plans.items():
        h.off.installed(d.encode(), b"", plan)
    for direction, flags, other, ttl, payload in probes:
        port = 1 if direction == "fwd" else 2
        pkt = mk[direction](flags, base + other, ttl, payload)
        pkt.payload.ttl = ttl
        plan = plans.get(direction)
        key = parse_packet(bytes(pkt), port)
        if plan is not None and Megaflow(plan.match, plan.mask, plan.actions).matches(key):
            assert not other and not (proto == "tcp" and (set(flags) & set("SFR")
                                                          or "A" not in flags))
            assert h.offloaded(plan, pkt, port) == h.slow(pkt, port), (direction, flags)
        else:
            h.slow(pkt, port)
        for m, k in h.off.doomed():      # what the daemon deletes right after
            plans.pop(m.decode(), None)
            h.off.forget(m, k)


def test_fast_path_cache_prefers_the_offloaded_entry():
    """The offloaded megaflow overlaps its connection's generic "slow path"
    megaflow: with prio it wins, also over an exact-match cache entry that
    pointed at the generic one, and once deleted the generic one is back."""
    from fastpath.cache import FlowCache

    h = Harness(firewall("plain"))
    install(h)
    handshake(h)
    pkt = tcp(flags="A", seq=1001, ack=5001)
    plan = h.plan(pkt, 1)
    key = bytes(parse_packet(bytes(pkt), 1))
    generic = h.p.xlate(parse_packet(bytes(pkt), 1), None, h.now).megaflow
    cache = FlowCache()
    cache.put(generic.match, generic.mask, ("generic",))
    from slowpath.fields import FLOW_KEY_SIZE, MEMBERS
    for member in ("pkt_mark", "skb_priority"):      # 3+ masks: the EMC is in use
        o, n = MEMBERS[member]
        other = bytearray(FLOW_KEY_SIZE)
        other[o:o + n] = b"\xff" * n
        cache.put(bytes(other), bytes(other), ("other",))
    for _ in range(3):
        assert cache.lookup(key).actions == ("generic",)     # now in the EMC too
    cache.put(plan.match, plan.mask, ("offloaded",), None, 1)
    assert cache.lookup(key).actions == ("offloaded",)
    assert cache.mask_order()[0] == plan.mask
    cache.rank()
    assert cache.mask_order()[0] == plan.mask                # ranking keeps prio first
    syn = bytes(parse_packet(bytes(tcp(flags="FA", seq=1001, ack=5001)), 1))
    assert cache.lookup(syn).actions == ("generic",)
    cache.delete(plan.match, plan.mask)
    assert cache.lookup(key).actions == ("generic",)


def test_packets_of_the_installing_burst_do_not_plan_again():
    h = Harness(firewall("plain"))
    install(h)
    handshake(h)
    pkt = tcp(flags="PA", seq=1001, ack=5001, payload=b"z")
    plan = h.plan(pkt, 1)
    m = FlowKey(plan.match)
    m.in_port = 11                       # the datapath's view of ofport 1
    h.off.installed(bytes(m), plan.mask, plan)
    assert h.off.covered(parse_packet(bytes(tcp(flags="A", seq=7, ack=9)), 1), 11)
    assert not h.off.covered(parse_packet(bytes(tcp(flags="A", sport=40001)), 1), 11)
    assert not h.off.covered(parse_packet(bytes(tcp(flags="FA")), 1), 11)
    h.off.forget(bytes(m), plan.mask)
    assert not h.off.covered(parse_packet(bytes(pkt), 1), 11) and h.off.by_flow == {}


def test_ipv6_tcp_is_offloaded_like_ipv4():
    c6, s6 = "2001:db8::1", "2001:db8::2"
    rules = [fm(0, 10, "ipv6", ct(zone=1, table=1)),
             fm(1, 100, "ct_state=+new-est+trk,tcp6,in_port=1", ct(commit=True, zone=1),
                A.Output(2)),
             fm(1, 90, "ct_state=+est+trk,in_port=1", A.Output(2)),
             fm(1, 90, "ct_state=+est+trk,in_port=2", A.Output(1))]
    h = Harness(rules)
    install(h)
    assert h.slow(tcp(src=c6, dst=s6, flags="S", seq=1000, v6=True), 1)
    assert h.slow(tcp(src=s6, dst=c6, sport=8080, dport=40000, flags="SA", seq=5000,
                      ack=1001, v6=True), 2)
    assert h.slow(tcp(src=c6, dst=s6, flags="A", seq=1001, ack=5001, v6=True), 1)
    for pkt, port in ((tcp(src=c6, dst=s6, flags="PA", seq=1001, ack=5001, payload=b"q",
                           v6=True), 1),
                      (tcp(src=s6, dst=c6, sport=8080, dport=40000, flags="A", seq=5001,
                           ack=1002, v6=True), 2)):
        plan = h.plan(pkt, port)
        assert plan is not None
        mf = Megaflow(plan.match, plan.mask, plan.actions)
        assert mf.matches(parse_packet(bytes(pkt), port))
        assert h.offloaded(plan, pkt, port) == h.slow(pkt, port)
    other = tcp(src=c6, dst="2001:db8::3", flags="A", seq=1, ack=1, v6=True)
    assert not mf.matches(parse_packet(bytes(other), 2))


def test_retired_entries_credit_their_last_hits():
    h = Harness(firewall("plain"))
    install(h)
    handshake(h)
    plan = h.plan(tcp(flags="A", seq=1001, ack=5001), 1)
    rv = Revalidator()
    rv.installed_offload(plan.match, plan.mask, plan, h.now)
    rv.sweep([(plan.match, plan.mask, plan.actions, 3, 300, h.now + 1)], h.now + 1)
    conn = plan.conns[0][0]
    seen = conn.packets[0]
    rv.retire(plan.match, plan.mask, 10, 1000, h.now + 2, h.now + 2)
    assert conn.packets[0] == seen + 7 and rv.ukeys == {}
