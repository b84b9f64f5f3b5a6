"""Classifier == brute-force scan; keys equal under the returned wildcards
get the same rule (the megaflow invariant at the lookup level)."""

from hypothesis import given, settings, strategies as st

from slowpath.classifier import Classifier, Rule, Wildcards
from slowpath.fields import FIELDS, field_int_mask
from slowpath.flow import FlowKey
from slowpath.match import Match

# (field, candidate values, candidate masks) kept small so rules and keys collide
SPACE = {
    "in_port": ([1, 2, 3], [None]),
    "eth_dst": ([0x0a, 0x0b, 0x010000000000], [None, 0x010000000000, 0xff]),
    "eth_type": ([0x0800, 0x86dd], [None]),
    "reg0": ([0, 5, 0x50], [None, 0xf0, 0x0f]),
    "nw_dst": ([0x0a000001, 0x0a000101, 0x0b000001], [None, 0xffffff00, 0xff000000]),
    "tp_dst": ([80, 443], [None]),
    "ipv6_dst": ([0x20010db8 << 96, (0x20010db8 << 96) | 1, 0xfe80 << 112],
                 [None, ((1 << 64) - 1) << 64, ((1 << 16) - 1) << 112]),
}


def rule_strategy():
    def build(draw_fields, prio):
        m = Match()
        for name, (vi, mi) in draw_fields.items():
            vals, masks = SPACE[name]
            v, mk = vals[vi % len(vals)], masks[mi % len(masks)]
            mk = FIELDS[name].max if mk is None else mk
            m.set_field(name, v & mk, mk)
        return Rule(priority=prio, match=m)
    fields = st.dictionaries(st.sampled_from(sorted(SPACE)), st.tuples(st.integers(0, 5), st.integers(0, 5)),
                             max_size=4)
    return st.builds(build, fields, st.integers(0, 40))


def key_strategy():
    def build(choices):
        k = FlowKey()
        for name, i in choices.items():
            vals, _ = SPACE[name]
            k.set(FIELDS[name], vals[i % len(vals)])
        return int(k)
    return st.builds(build, st.dictionaries(st.sampled_from(sorted(SPACE)), st.integers(0, 5)))


def brute(rules, key):
    matching = [r for r in rules if r.match.matches(key)]
    if not matching:
        return set()
    top = max(r.priority for r in matching)
    return {id(r) for r in matching if r.priority == top}


@settings(max_examples=150, deadline=None)
@given(st.lists(rule_strategy(), max_size=25), st.lists(key_strategy(), min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_lookup_equals_brute_force_and_wildcards_are_sound(rules, keys, rnd):
    cls = Classifier()
    for r in rules:
        cls.insert(r)
    for key in keys:
        wc = Wildcards()
        got = cls.lookup(key, wc)
        want = brute(rules, key)
        assert (id(got) in want) if want else got is None
        # any key equal under wc gets the same rule
        for _ in range(4):
            noise = rnd.getrandbits(456 * 8)
            other = (key & wc.mask) | (noise & ~wc.mask)
            assert cls.lookup(other) is got


@settings(max_examples=60, deadline=None)
@given(st.lists(rule_strategy(), max_size=20), st.randoms(use_true_random=False))
def test_remove_keeps_classifier_consistent(rules, rnd):
    cls = Classifier()
    for r in rules:
        cls.insert(r)
    gone = [r for r in rules if rnd.random() < 0.5]
    for r in gone:
        cls.remove(r)
    left = [r for r in rules if r not in gone]
    assert len(cls) == len(left) and {id(r) for r in cls} == {id(r) for r in left}
    for key in (0, int(FlowKey.from_fields(in_port=1, eth_type=0x800, nw_dst=0x0a000001))):
        want = brute(left, key)
        got = cls.lookup(key)
        assert (id(got) in want) if want else got is None


def test_staged_lookup_keeps_megaflows_narrow():
    # a rule on in_port + nw_dst: a packet from another port must not
    # unwildcard nw_dst (the metadata stage already fails)
    cls = Classifier()
    cls.insert(Rule(10, Match.parse("in_port=1,ip,nw_dst=10.0.0.1")))
    wc = Wildcards()
    assert cls.lookup(int(FlowKey.from_fields(in_port=2, eth_type=0x800, nw_dst=0x0a000001)), wc) is None
    assert wc.mask == field_int_mask(FIELDS["in_port"])


def test_priority_ranking_early_exit():
    cls = Classifier()
    hi = Rule(100, Match.parse("in_port=1"))
    cls.insert(hi)
    cls.insert(Rule(1, Match.parse("eth_dst=00:00:00:00:00:01")))
    wc = Wildcards()
    assert cls.lookup(int(FlowKey.from_fields(in_port=1)), wc) is hi
    assert wc.mask == field_int_mask(FIELDS["in_port"])   # eth_dst never consulted


def test_exact_and_loose():
    cls = Classifier()
    a = Rule(5, Match.parse("ip,nw_dst=10.0.0.0/24"))
    b = Rule(6, Match.parse("ip,nw_dst=10.0.0.1"))
    cls.insert(a)
    cls.insert(b)
    assert cls.find_exact(Match.parse("ip,nw_dst=10.0.0.0/24"), 5) is a
    assert cls.find_exact(Match.parse("ip,nw_dst=10.0.0.0/24"), 6) is None
    assert {id(r) for r in cls.iter_loose(Match.parse("ip,nw_dst=10.0.0.0/24"))} == {id(a), id(b)}
    assert list(cls.iter_loose(Match.parse("ip,nw_dst=10.0.0.1"))) == [b]
    assert {id(r) for r in cls.iter_loose(Match())} == {id(a), id(b)}


def test_prefix_tracking_keeps_address_megaflows_wide():
    cls = Classifier()
    cls.insert(Rule(10, Match.parse("ip,nw_dst=10.0.0.0/24")))
    cls.insert(Rule(10, Match.parse("ip,nw_dst=10.0.1.0/24")))
    cls.insert(Rule(5, Match.parse("ip,nw_dst=10.1.0.0/16")))
    wc = Wildcards()
    k = FlowKey.from_fields(eth_type=0x800, nw_dst=0xc0a80001)        # 192.168.0.1
    assert cls.lookup(int(k), wc) is None
    # one bit of nw_dst (192 vs 10 differ in the top bit) proves no rule matches
    assert wc.mask == Match.parse("ip,nw_dst=128.0.0.0/1").mask & field_int_mask(FIELDS["ip_dst"])
    wc = Wildcards()
    k.nw_dst = 0x0a000205                                               # 10.0.2.5
    assert cls.lookup(int(k), wc) is None
    m = Match(0, wc.mask)
    # 10.0.2.x differs from 10.0.0/24 and 10.0.1/24 in bit 23, from 10.1/16 in bit 16
    assert m.get("ip_dst")[1] == 0xfffffe00
    k.nw_dst = 0x0a000105
    assert cls.lookup(int(k)).match == Match.parse("ip,nw_dst=10.0.1.0/24")
    for r in list(cls):
        cls.remove(r)
    assert all(not t.by_len for t in cls.tries)
