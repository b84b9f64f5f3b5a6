"""Bench systems for the XDP flow cache, in the shape of ``bench.scenarios``.

``XdpCacheSystem`` loads ``XdpCache`` on the two switch ports of the bench
topology (h1 -> p1 -> [XDP] -> p2 -> h2) and installs megaflows directly,
without the daemon, so the figure is the kernel cache alone:

- ``exact_flows=0``: two megaflows ``in_port=1 -> output:2`` and back (mask:
  in_port only), whatever the generator's flow count;
- ``exact_flows=N``: one megaflow per generator flow, masked on the 5-tuple
  (in_port, dl_type, nw_src, nw_dst, nw_proto, tp_src, tp_dst), matching what
  ``bench.trafgen --flows N`` sends (flow i: UDP sport ``i & 0xffff``, dport
  ``5000 + (i >> 16)``; one flow: the template's 1234 -> 5678); with the
  reverse megaflow that makes two masks, so the exact-match LRU is in play.

Plug in with::

    from fastpath.bpf.bench_scenarios import XdpCacheSystem
    SYSTEMS.update({s.name: s for s in (XdpCacheSystem(), XdpCacheSystem(1000))})

(or run ``python -m fastpath.bpf.bench_scenarios`` for a quick table).
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import sys

from bench.scenarios import Bench, RawXdpRedirect, System
from fastpath.bpf import xdp_cache as X
from slowpath import dpactions as A
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS
from slowpath.flow import FlowKey


def _mask(*members: str) -> bytes:
    b = bytearray(FLOW_KEY_SIZE)
    for m in members:
        o, s = MEMBERS[m]
        b[o:o + s] = b"\xff" * s
    return bytes(b)


def _ip(a: str) -> int:
    return int.from_bytes(socket.inet_aton(a), "big")


class XdpCacheSystem(System):
    def __init__(self, exact_flows: int = 0, mode: str = "native", emc: bool = True):
        self.exact_flows = exact_flows
        self.mode = mode
        self.emc = emc
        self.name = (f"pyvswitch-xdp-cache-{mode}" + (f"-{exact_flows}mf" if exact_flows else "")
                     + ("" if emc else "-noemc"))
        self.pids = []
        self.xc = None

    def setup(self, topo) -> None:
        p1, p2 = topo.ports
        h1, h2 = list(topo.hosts.values())[:2]
        self.xc = X.XdpCache(os.path.join(X.PIN_ROOT, "bench-" + secrets.token_hex(4)),
                             max_flows=self.exact_flows + 1024,
                             emc_min_masks=2 if self.emc else X.MAX_MASKS + 1)
        try:
            self.xc.attach(p1, 1, mode=self.mode)
            self.xc.attach(p2, 2, mode=self.mode)
            back = FlowKey.from_fields(in_port=2)
            self.xc.put(bytes(back), _mask("in_port"), (A.Output(1),))
            if not self.exact_flows:
                self.xc.put(bytes(FlowKey.from_fields(in_port=1)), _mask("in_port"), (A.Output(2),))
                return
            m = _mask("in_port", "dl_type", "nw_src", "nw_dst", "nw_proto", "tp_src", "tp_dst")
            # trafgen: one flow is its template (1234 -> 5678); N flows are
            # sport 0..N-1 -> dport 5000.
            ports = ([(1234, 5678)] if self.exact_flows == 1
                     else [(i & 0xffff, 5000 + (i >> 16)) for i in range(self.exact_flows)])
            src, dst = _ip(h1.addr), _ip(h2.addr)
            self.xc.put_many((bytes(FlowKey.from_fields(in_port=1, dl_type=0x0800, nw_src=src,
                                                        nw_dst=dst, nw_proto=17, tp_src=sport,
                                                        tp_dst=dport)), m, (A.Output(2),))
                             for sport, dport in ports)
        except BaseException:
            self.teardown()
            raise

    def forwarded(self) -> int | None:
        return sum(e[3] for e in self.xc.dump() if e[2] == (A.Output(2),))

    def flow_count(self) -> int | None:
        return len(self.xc)

    def teardown(self) -> None:
        if self.xc is not None:
            self.xc.close()
            self.xc = None


def main(argv=None) -> int:
    seconds, reps = 2.0, 3
    bench = Bench()
    try:
        rows = []
        for system, flows in [(RawXdpRedirect(), 1), (RawXdpRedirect(), 1000),
                              (RawXdpRedirect(), 100000),
                              (XdpCacheSystem(), 1), (XdpCacheSystem(), 1000),
                              (XdpCacheSystem(1), 1), (XdpCacheSystem(1000), 1000),
                              (XdpCacheSystem(100000), 100000),
                              (XdpCacheSystem(mode="generic"), 1)]:
            runs = [bench.measure(system, seconds, flows) for _ in range(reps)]
            mpps = [r["mpps"] for r in runs]
            rows.append((system.name, flows, statistics.median(mpps), min(mpps), max(mpps),
                         statistics.median(r["offered_mpps"] for r in runs),
                         runs[-1]["switch_reported"], runs[-1]["received"]))
            print(f"{system.name:40s} flows={flows:5d} {rows[-1][2]:.3f} Mpps "
                  f"({rows[-1][3]:.3f}-{rows[-1][4]:.3f}) offered {rows[-1][5]:.3f} "
                  f"reported/counted {rows[-1][6]}/{rows[-1][7]}", flush=True)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
