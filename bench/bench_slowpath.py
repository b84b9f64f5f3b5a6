"""Slow-path benchmark: classifier lookups/s and upcalls/s vs rule count.

Run ``python -m bench.bench_slowpath [N ...]``.  Rules mix five mask shapes (L2
exact, IPv4 /24 and /32 prefixes, 5-tuple-ish, metadata+port) so lookups
probe several subtables; an *upcall* is the full slow-path cost of a miss:
``parse_packet`` -> ``xlate`` -> megaflow.  Memory per rule is measured with
tracemalloc around rule insertion.
"""

from __future__ import annotations

import random
import sys
import time
import tracemalloc

from slowpath import actions as A
from slowpath.classifier import Wildcards
from slowpath.flow import parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port


def _rule_matches(n: int, rnd: random.Random):
    for i in range(n):
        kind = i % 5
        a, b, c = (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff
        if kind == 0:
            yield 100, f"dl_dst=02:00:00:{a:02x}:{b:02x}:{c:02x}"
        elif kind == 1:
            yield 200, f"ip,nw_dst=10.{a}.{b}.0/24"
        elif kind == 2:
            yield 300, f"ip,nw_dst=11.{a}.{b}.{c}"
        elif kind == 3:
            yield 400, f"tcp,nw_src=12.{a}.{b}.{c},tp_dst={rnd.randint(1, 1024)}"
        else:
            yield 50, f"in_port={rnd.randint(1, 4)},metadata={i}"


def build(n: int, seed: int = 1) -> Pipeline:
    rnd = random.Random(seed)
    p = Pipeline("secure")
    for i in range(1, 5):
        p.set_port(Port(i, f"p{i}"))
    for prio, text in _rule_matches(n, rnd):
        p.flow_mod(FlowMod("add", 0, prio + rnd.randint(0, 9), Match.parse(text),
                           instructions=(A.ApplyActions((A.Output(rnd.randint(1, 4)),)),)), 0.0)
    p.flow_mod(FlowMod("add", 0, 0, Match(), instructions=(A.ApplyActions((A.Output(4),)),)), 0.0)
    return p


def _packets(n: int, count: int, rnd: random.Random) -> list[bytes]:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    out = []
    for _ in range(count):
        i = rnd.randrange(max(n, 1))
        a, b, c = (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff
        dst = rnd.choice([f"10.{a}.{b}.7", f"11.{a}.{b}.{c}", "192.168.0.1"])
        out.append(bytes(Ether(src="00:00:00:00:00:01", dst=f"02:00:00:{a:02x}:{b:02x}:{c:02x}")
                         / IP(src=f"12.{a}.{b}.{c}", dst=dst)
                         / TCP(sport=rnd.randint(1024, 65535), dport=rnd.randint(1, 1024))))
    return out


def _best(fn, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(n: int) -> dict:
    rnd = random.Random(2)
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    p = build(n)
    t_build = time.perf_counter() - t0
    mem = tracemalloc.get_traced_memory()[0] - m0
    tracemalloc.stop()
    pkts = _packets(n, 2000, rnd)
    keys = [parse_packet(d, 1) for d in pkts]
    ints = [int(k) for k in keys]
    cls = p.table(0).classifier

    def lookups():
        for k in ints:
            cls.lookup(k, Wildcards())

    def upcalls():
        for d in pkts:
            p.xlate(parse_packet(d, 1), d, 1.0)

    # best of 5: the machine is shared, the minimum is the code's cost
    t_lookup = _best(lookups) / len(ints)
    t_upcall = _best(upcalls) / len(pkts)
    return {"rules": n, "subtables": len(cls.subtables), "flow_mods_per_s": n / t_build,
            "lookups_per_s": 1 / t_lookup, "upcalls_per_s": 1 / t_upcall,
            "upcall_us": t_upcall * 1e6, "bytes_per_rule": mem / max(n, 1)}


def main(argv=None) -> None:
    sizes = [int(a) for a in (argv or sys.argv[1:])] or [10, 1000, 100000]
    print(f"{'rules':>8} {'subtables':>9} {'flow_mod/s':>11} {'lookup/s':>10} "
          f"{'upcall/s':>9} {'upcall us':>9} {'B/rule':>7}")
    for n in sizes:
        r = run(n)
        print(f"{r['rules']:>8} {r['subtables']:>9} {r['flow_mods_per_s']:>11.0f} "
              f"{r['lookups_per_s']:>10.0f} {r['upcalls_per_s']:>9.0f} {r['upcall_us']:>9.1f} "
              f"{r['bytes_per_rule']:>7.0f}")


if __name__ == "__main__":
    main()
