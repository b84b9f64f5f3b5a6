"""Microbenchmarks of the Cython fast path (pytest-benchmark).

Run with ``pytest bench/test_micro_fastpath.py --benchmark-enable``.  Each
benchmark runs a C loop (no Python per packet), so the figures are per-call
times for a batch; the printed ns/op is what one packet costs.
"""

import os

import pytest

from fastpath.cache import FlowCache, MEGAFLOW_BYTES
from fastpath.parse import parse_packet, parse_repeat
from slowpath.fields import FLOW_KEY_SIZE, FIELDS
from slowpath.flow import FlowKey

UDP = bytes.fromhex(
    "020000000002020000000001080045000020000040004011f6c20a0000010a000002"
    "04d2162e000c0000") + b"\0" * 18

FIVE = ("in_port", "eth_type", "ip_src", "ip_dst", "nw_proto", "tp_src", "tp_dst")


def _mask(*names):
    k = FlowKey()
    for n in names:
        k.set(FIELDS[n], FIELDS[n].max)
    return bytes(k)


def _keys(n):
    return [bytes(FlowKey.from_fields(in_port=1, eth_type=0x0800, ip_src=0x0a000001,
                                      ip_dst=0x0a000002, nw_proto=17, tp_src=1000 + i // 60000,
                                      tp_dst=i % 60000)) for i in range(n)]


def _per_op(benchmark, name, n):
    if benchmark.stats is not None:            # None with --benchmark-disable
        benchmark.extra_info[name] = benchmark.stats.stats.mean / n * 1e9


def test_parse_udp(benchmark):
    N = 10000
    benchmark(parse_repeat, UDP, 1, N)
    _per_op(benchmark, "ns_per_packet", N)


@pytest.mark.parametrize("flows", [1, 1000, 100000])
def test_lookup(benchmark, flows):
    c = FlowCache()
    mask = _mask(*FIVE)
    keys = _keys(flows)
    for k in keys:
        c.put(k, mask, None)
    # Several unrelated masks ahead of the hit one (ranking must fix that).
    for i in range(4):
        c.put(bytes(FlowKey.from_fields(in_port=50 + i)), _mask("in_port", "vlan_tci"), None)
    blob = b"".join(keys[i % flows] for i in range(min(flows, 4096) if flows > 1 else 64))
    n = len(blob) // FLOW_KEY_SIZE
    c.lookup_batch(blob, 1)
    c.rank()
    hits = benchmark(c.lookup_batch, blob, 4)
    assert hits == 4 * n
    _per_op(benchmark, "ns_per_lookup", 4 * n)
    benchmark.extra_info["megaflow_struct_bytes"] = MEGAFLOW_BYTES
