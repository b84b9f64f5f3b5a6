"""The fast path is only a cache (DESIGN.md invariant, issue 7 "done when").

Random OpenFlow rule sets and packet sequences go (a) through a Dpif whose
misses are translated by the slow path, installed as megaflows and executed,
as the daemon does, and (b) through the slow path alone (xlate +
odp_execute for every packet).  Both must put the same frames on the same
ports, also after flow-mods (revalidation by flush, as the bridge does
today) and after idle expiry.  Also with two PMDs (ports 1 and 3 polled by one, 2
by the other): each miss is installed into the PMD that missed, as the
daemon does, and flow-mods and expiry reach both caches.
"""

import pytest

from hypothesis import given, settings, strategies as st, HealthCheck
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from fastpath.dpif import Dpif
from slowpath import actions as A
from slowpath import odp_execute
from slowpath.errors import OFError
from slowpath.fields import OFPP_CONTROLLER, OFPP_FLOOD, OFPP_IN_PORT, OFPP_NORMAL
from slowpath.flow import FlowKey, parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port

from .util import recv_all

M1, M2, M3 = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03"
ACTIONS = [
    [A.Output(1)], [A.Output(2)], [A.Output(3)], [A.Output(OFPP_NORMAL)],
    [A.SetField("eth_dst", 5), A.Output(3)], [A.Output(OFPP_FLOOD)], [A.DecTtl(), A.Output(2)],
    [A.PushVlan(), A.SetField("vlan_vid", 0x1000 | 30), A.Output(1)], [A.PopVlan(), A.Output(3)],
    [A.SetField("reg0", 5), A.Resubmit(table=1)], [A.Output(OFPP_CONTROLLER)], [],
    [A.SetField("ip_dst", 0x0a000009), A.Output(2)],
    [A.SetField("tcp_dst", 99), A.Output(1)], [A.SetField("udp_src", 7), A.Output(OFPP_IN_PORT)],
    [A.SetField("vlan_vid", 0x1000 | 20), A.Output(2)],
]
MATCHES = ["", "in_port=1", "in_port=2", f"dl_dst={M2}", f"dl_src={M1}", "ip",
           "ip,nw_dst=10.0.0.0/24", "ip,nw_dst=10.0.0.2", "udp,tp_dst=2", "tcp,tp_dst=2",
           "reg0=5", "dl_vlan=10", "vlan_tci=0/0x1000", "tcp", "ip,nw_ttl=1"]

rule = st.tuples(st.integers(0, 1), st.sampled_from(MATCHES), st.integers(0, 20),
                 st.integers(0, len(ACTIONS) - 1))


@st.composite
def packets(draw):
    e = Ether(src=draw(st.sampled_from([M1, M2, M3])),
              dst=draw(st.sampled_from([M1, M2, M3, "ff:ff:ff:ff:ff:ff"])))
    vlan = draw(st.sampled_from([None, 10, 20]))
    if vlan:
        e = e / Dot1Q(vlan=vlan)
    l4 = draw(st.sampled_from([UDP(dport=2), UDP(dport=3), TCP(dport=2), ICMP()]))
    ip = IP(dst=draw(st.sampled_from(["10.0.0.2", "10.0.0.9", "10.1.0.2"])),
            ttl=draw(st.sampled_from([1, 64])))
    return bytes(e / ip / l4), draw(st.integers(1, 3))


# A step is a packet (from a small pool, so flows repeat and hit the cache),
# a flow-mod (+ revalidation), or an expiry sweep.
step = st.one_of(st.integers(0, 3).map(lambda i: ("pkt", i)), st.integers(0, 3).map(lambda i: ("pkt", i)),
                 st.integers(0, 3).map(lambda i: ("pkt", i)), rule.map(lambda r: ("mod", r)),
                 st.just(("expire",)))


def pipeline():
    p = Pipeline()
    for i in (1, 2, 3):
        p.set_port(Port(i, f"p{i}", dp_port=i, tag=10 if i == 1 else None))
    return p


def add_rule(p, r):
    table, m, prio, ai = r
    try:
        p.flow_mod(FlowMod("add", table, prio, Match.parse(m),
                           instructions=(A.ApplyActions(tuple(ACTIONS[ai])),)), 0.0)
    except OFError:
        pass


class Env:
    def __init__(self):
        self.out = []

    def output(self, dp_port, frame, key):
        self.out.append((dp_port, frame))

    def recirculate(self, frame, key):
        raise AssertionError("no recirculation expected")

    def meter(self, meter_id, frame):
        return True


def through_slowpath(p, data, port, now):
    x = p.xlate(parse_packet(data, port), data, now)
    env = Env()
    odp_execute.execute(data, parse_packet(data, port), x.actions, env)
    return sorted(env.out)


def through_cache(dp, p, data, port, now, counters):
    dp.dummy_peer(port).send(data)
    for _ in range(3):
        for u in dp.poll(0):
            counters["upcalls"] += 1
            key = FlowKey(u.key)
            version = p.version
            x = p.xlate(key, u.packet, now)
            if p.version != version:
                dp.flow_flush()        # what MAC learning changed: revalidate all
            if not x.slow:
                dp.flow_put(x.megaflow.match, x.megaflow.mask, x.actions, pmd=u.pmd)
            dp.execute(u.packet, x.actions, u.key)
    return sorted((q, f) for q in (1, 2, 3) for f in recv_all(dp.dummy_peer(q)))


@pytest.mark.parametrize("cores", [[-1], [0, 1]], ids=["1pmd", "2pmds"])
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(rule, max_size=10), st.lists(packets(), min_size=4, max_size=4),
       st.lists(step, min_size=1, max_size=20))
def test_cache_forwards_exactly_like_the_slow_path(cores, rules, pool, steps):
    slow, fast = pipeline(), pipeline()
    for r in rules:
        add_rule(slow, r)
        add_rule(fast, r)
    dp = Dpif()
    counters = {"upcalls": 0}
    try:
        for i in (1, 2, 3):
            dp.add_port(f"p{i}", "dummy")
        dp.set_pmds(cores)
        assert len({p for p, ports in dp.rxq_assignment().items() if ports}) == len(cores)
        now = 1.0
        for s in steps:
            now += 1.0
            if s[0] == "pkt":
                data, port = pool[s[1]]
                want = through_slowpath(slow, data, port, now)
                got = through_cache(dp, fast, data, port, now, counters)
                assert got == want, (data.hex(), port, dp.flow_dump())
            elif s[0] == "mod":
                add_rule(slow, s[1])
                add_rule(fast, s[1])
                dp.flow_flush()
            else:
                import time
                dp.flow_sweep(time.monotonic() + 3600, 10)
        assert dp.stats()["hit"] + counters["upcalls"] >= sum(1 for s in steps if s[0] == "pkt")
    finally:
        dp.close()
