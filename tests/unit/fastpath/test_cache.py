"""Megaflow cache + EMC lookups against brute force over random flow sets."""

import os
import time

from hypothesis import given, settings, strategies as st

from fastpath.cache import FlowCache, MEGAFLOW_BYTES
from slowpath.fields import FIELDS, FLOW_KEY_SIZE
from slowpath.flow import FlowKey

from .util import mask_of, masked

# Fields with tiny value domains so random keys actually hit.
DOMAIN = {"in_port": 3, "eth_type": 2, "vlan_tci": 2, "ip_src": 3, "ip_dst": 3,
          "nw_proto": 2, "tp_dst": 3, "recirc_id": 2}
VALUES = {"eth_type": [0x0800, 0x86dd], "nw_proto": [6, 17], "vlan_tci": [0, 0x1005]}

masks_st = st.lists(st.frozensets(st.sampled_from(sorted(DOMAIN)), min_size=1), min_size=1,
                    max_size=6, unique=True)


def value(field, i):
    return VALUES.get(field, range(1, 10))[i]


def key_st():
    return st.fixed_dictionaries({f: st.integers(0, n - 1) for f, n in DOMAIN.items()})


def make_key(d):
    return bytes(FlowKey.from_fields(**{f: value(f, i) for f, i in d.items()}))


def _i(b):
    return int.from_bytes(b, "big")


def matches(key, match, mask):
    return _i(key) & _i(mask) == _i(match)


def overlaps(m1, k1, m2, k2):
    """Some key matches both megaflows."""
    return _i(m1) & _i(k2) == _i(m2) & _i(k1)


@settings(max_examples=80, deadline=None)
@given(masks_st, st.data())
def test_lookup_equals_brute_force(masks, data):
    c = FlowCache()
    flows = {}
    for fs in masks:
        mask = mask_of(*fs)
        for _ in range(data.draw(st.integers(1, 6))):
            k = make_key(data.draw(key_st()))
            m = masked(k, mask)
            if any(overlaps(m, mask, fm, fk) for (fm, fk) in flows):
                continue       # the slow path never installs overlapping megaflows
            flows[(m, mask)] = object()
            c.put(k, mask, flows[(m, mask)])      # put masks the match itself
    victims = data.draw(st.lists(st.sampled_from(sorted(flows)), max_size=3, unique=True)) \
        if flows else []
    for m, mask in victims:
        assert c.delete(m, mask) is not None
        del flows[(m, mask)]
    assert len(c) == len(flows)
    for _ in range(20):
        k = make_key(data.draw(key_st()))
        want = [v for (m, mask), v in flows.items() if matches(k, m, mask)]
        for _rep in range(2):                     # second time through the EMC
            got = c.lookup(k)
            assert (got.actions if got else None) is (want[0] if want else None)
        if data.draw(st.booleans()):
            c.rank()


def test_ranking_puts_most_hit_mask_first():
    c = FlowCache()
    m1, m2 = mask_of("in_port"), mask_of("ip_dst")
    c.put(bytes(FlowKey.from_fields(in_port=1)), m1, "a")
    c.put(bytes(FlowKey.from_fields(ip_dst=7)), m2, "b")
    assert c.mask_order() == [m1, m2]
    for i in range(50):       # distinct keys: EMC misses, subtable m2 hits
        c.lookup(bytes(FlowKey.from_fields(ip_dst=7, tp_dst=i)))
    c.rank()
    assert c.mask_order() == [m2, m1]


def test_emc_never_returns_a_deleted_or_flushed_flow():
    c = FlowCache()
    c.emc_min_subtables = 0                   # the EMC even with one mask
    m = mask_of("in_port")
    k = bytes(FlowKey.from_fields(in_port=1))
    c.put(k, m, "x")
    assert c.lookup(k).actions == "x" and c.lookup(k).actions == "x"
    c.delete(k, m)
    assert c.lookup(k) is None
    c.put(k, m, "y")
    c.lookup(k)
    c.flush()
    assert c.lookup(k) is None and len(c) == 0


def test_table_growth_and_limit():
    c = FlowCache(max_flows=5000)
    m = mask_of("ip_src", "ip_dst")
    for i in range(5000):
        c.put(bytes(FlowKey.from_fields(ip_src=i, ip_dst=i * 7)), m, i)
    for i in range(0, 5000, 97):
        assert c.lookup(bytes(FlowKey.from_fields(ip_src=i, ip_dst=i * 7, tp_dst=3))).actions == i
    try:
        c.put(bytes(FlowKey.from_fields(ip_src=99999)), m, 0)
    except OSError as e:
        assert "full" in str(e)
    else:
        raise AssertionError("limit not enforced")
    for i in range(0, 5000, 2):
        c.delete(bytes(FlowKey.from_fields(ip_src=i, ip_dst=i * 7)), m)
    assert len(c) == 2500
    assert c.lookup(bytes(FlowKey.from_fields(ip_src=2, ip_dst=14))) is None
    assert c.lookup(bytes(FlowKey.from_fields(ip_src=3, ip_dst=21))).actions == 3
    assert MEGAFLOW_BYTES < 1024


def test_few_masks_skip_the_emc_many_use_it():
    c = FlowCache()
    k = bytes(FlowKey.from_fields(in_port=1, ip_dst=3))
    c.put(k, mask_of("in_port"), "x")
    for _ in range(3):
        assert c.lookup(k).actions == "x"
    assert c.stats()["emc_hits"] == 0
    c.put(k, mask_of("in_port", "ip_dst"), "y")           # overlapping: same answer either way
    c.put(bytes(FlowKey.from_fields(tp_dst=9)), mask_of("tp_dst"), "z")
    assert c.stats()["masks"] >= c.emc_min_subtables
    first = c.lookup(k).actions
    assert c.lookup(k).actions == first and c.stats()["emc_hits"] == 1
