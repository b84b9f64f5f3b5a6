"""Priority tuple-space classifier with subtable ranking and staged lookup.

Like OVS's ``lib/classifier.c``: rules are grouped into *subtables* by mask;
each subtable is a hash from masked key to rules.  A lookup probes subtables
in decreasing order of the highest priority they hold and stops as soon as no
remaining subtable can beat the best match found (early exit), so the cost
is a few dict probes for typical rule sets.

Every lookup widens a ``Wildcards`` with exactly the bits it consulted, which
is what makes megaflows correct: two keys equal under the returned wildcards
probe the same subtables with the same results.  To keep megaflows wide each
subtable is searched in *stages* (metadata, L2, L3, L4, as OVS does): if the
key's metadata-stage bits already match no rule of the subtable, only the
metadata bits are added to the wildcards, not the L3/L4 ones.

Prefix tracking (OVS's tries) keeps IP-address megaflows wide: for
nw_src/nw_dst/ipv6_src/ipv6_dst the classifier keeps, per prefix length, the
sorted prefixes its rules use.  Before probing a subtable that matches such
a field as a /L prefix, it checks whether any /L prefix covers the packet's
address; if none does, the subtable is skipped and only the leading address
bits that prove it (the longest common prefix with any rule's prefix, plus
one bit) are added to the wildcards, instead of the subtable's whole mask.

Keys and masks are whole-key integers (``int(FlowKey)``); see ``match.py``.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

from slowpath.fields import FIELDS, Field, member_int_mask
from slowpath.match import Match

# Stage boundaries: members consulted first to last.
_STAGE_MEMBERS = [
    # metadata
    {"in_port", "recirc_id", "dp_hash", "skb_priority", "pkt_mark", "ct_mark", "ct_label",
     "ct_nw_src", "ct_nw_dst", "ct_ipv6_src", "ct_ipv6_dst", "ct_tp_src", "ct_tp_dst",
     "ct_zone", "ct_state", "ct_nw_proto", "conj_id", "actset_output", "packet_type",
     "metadata", "regs", "tun_ipv6_src", "tun_ipv6_dst", "tun_id", "tun_src", "tun_dst",
     "tun_flags", "tun_tos", "tun_ttl", "tun_tp_src", "tun_tp_dst", "tun_gbp_id",
     "tun_gbp_flags", "tun_md_opts", "tun_md_data"},
    # L2
    {"dl_dst", "dl_src", "dl_type", "vlan0_tpid", "vlan0_tci", "vlan1_tpid", "vlan1_tci",
     "mpls_lse", "pbb_isid"},
    # L3
    {"nw_frag", "nw_tos", "nw_src", "nw_dst", "ipv6_label", "ipv6_src", "ipv6_dst",
     "nw_ttl", "nw_proto", "ipv6_exthdr"},
]


def _stage_masks() -> list[int]:
    out, acc = [], 0
    for members in _STAGE_MEMBERS:
        for m in members:
            acc |= member_int_mask(m)
        out.append(acc)
    return out


_CUMULATIVE = _stage_masks()   # the last stage (L4) is the whole mask


#: fields with prefix tracking
TRIE_FIELDS: tuple[Field, ...] = tuple(FIELDS[n] for n in ("ip_src", "ip_dst", "ipv6_src", "ipv6_dst"))


def _prefix_len(f: Field, mask: int) -> int | None:
    """L if ``mask`` covers field ``f`` as a /L prefix (L > 0), else None."""
    bits = (mask >> f.shift) & f.max
    if not bits:
        return None
    n = bits.bit_length()
    inv = (~bits) & f.max
    if n != f.n_bits or inv & (inv + 1):
        return None    # not contiguous from the top
    return f.n_bits - (inv.bit_length())


class PrefixSet:
    """Prefixes of one field, by length: what a trie lookup needs."""

    __slots__ = ("f", "width", "by_len")

    def __init__(self, f: Field):
        self.f = f
        self.width = f.n_bits
        self.by_len: dict[int, tuple[dict[int, int], list[int]]] = {}

    def add(self, plen: int, v: int) -> None:
        entry = self.by_len.get(plen)
        if entry is None:
            entry = self.by_len[plen] = ({}, [])
        counts, lst = entry
        c = counts.get(v, 0)
        if not c:
            insort(lst, v)
        counts[v] = c + 1

    def remove(self, plen: int, v: int) -> None:
        counts, lst = self.by_len[plen]
        c = counts[v] - 1
        if c:
            counts[v] = c
            return
        del counts[v]
        del lst[bisect_left(lst, v)]
        if not counts:
            del self.by_len[plen]

    def proof_bits(self, plen: int, addr: int) -> int:
        """0 if some /plen prefix covers ``addr``; else how many leading bits
        of ``addr`` prove that none does (its longest common prefix with any
        /plen prefix, plus one)."""
        counts, lst = self.by_len[plen]
        v = addr >> (self.width - plen)
        if v in counts:
            return 0
        i = bisect_left(lst, v)
        diff = (v ^ lst[i - 1]).bit_length() if i else plen
        if i < len(lst):
            diff = min(diff, (v ^ lst[i]).bit_length())
        return plen - diff + 1       # common prefix (plen - diff) plus one bit


_TRIE_BITS = 0
for _f in TRIE_FIELDS:
    _TRIE_BITS |= _f.int_mask
del _f


class Wildcards:
    """A mask over the flow key: the bits a translation consulted."""

    __slots__ = ("mask",)

    def __init__(self, mask: int = 0):
        self.mask = mask

    def __or__(self, other):
        return Wildcards(self.mask | int(other))

    def __int__(self):
        return self.mask

    def __eq__(self, other):
        return isinstance(other, Wildcards) and self.mask == other.mask

    def __repr__(self):
        return f"Wildcards({Match(0, self.mask).to_string()!r})"


@dataclass(eq=False)
class Rule:
    """An OpenFlow flow entry.  The classifier uses ``priority`` and
    ``match``; the rest is pipeline state."""

    priority: int
    match: Match
    table_id: int = 0
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: frozenset = frozenset()
    importance: int = 0
    instructions: tuple = ()
    created: float = 0.0
    used: float = 0.0
    packet_count: int = 0
    byte_count: int = 0

    def __repr__(self):
        return f"Rule(table={self.table_id}, priority={self.priority}, {self.match.to_string()})"


def _tz(mask: int) -> int:
    """Trailing zero bits: masked values are stored shifted right by this, so
    dict keys are a few bytes instead of the whole 456-byte key (cheaper hashing)."""
    return (mask & -mask).bit_length() - 1 if mask else 0


class Subtable:
    __slots__ = ("mask", "shift", "stages", "rules", "max_priority", "n_rules", "plens",
                 "priorities")

    def __init__(self, mask: int):
        self.mask = mask
        self.shift = _tz(mask)
        # (trie index, prefix length) for address fields matched as prefixes
        self.plens = tuple((i, L) for i, f in enumerate(TRIE_FIELDS)
                           if (L := _prefix_len(f, mask)) is not None)
        # (stage mask, shift, {masked value >> shift: refcount}) for all but
        # the last stage; stages adding no bits are dropped.
        self.stages: list[tuple[int, int, dict[int, int]]] = []
        prev = 0
        for cm in _CUMULATIVE:
            sm = mask & cm
            if sm != prev and sm != mask:
                self.stages.append((sm, _tz(sm), {}))
                prev = sm
        # masked value >> shift -> rules, priority descending
        self.rules: dict[int, list[Rule]] = {}
        self.max_priority = -1
        self.n_rules = 0
        # priority -> number of rules: deleting a table's rules one by one
        # stays linear (max_priority is recomputed over distinct priorities)
        self.priorities: dict[int, int] = {}

    def insert(self, rule: Rule) -> None:
        v = rule.match.value
        lst = self.rules.setdefault(v >> self.shift, [])
        lst.append(rule)
        lst.sort(key=lambda r: -r.priority)
        for sm, sh, counts in self.stages:
            k = (v & sm) >> sh
            counts[k] = counts.get(k, 0) + 1
        self.n_rules += 1
        self.priorities[rule.priority] = self.priorities.get(rule.priority, 0) + 1
        self.max_priority = max(self.max_priority, rule.priority)

    def remove(self, rule: Rule) -> None:
        v = rule.match.value
        lst = self.rules[v >> self.shift]
        lst.remove(rule)
        if not lst:
            del self.rules[v >> self.shift]
        for sm, sh, counts in self.stages:
            k = (v & sm) >> sh
            c = counts[k] - 1
            if c:
                counts[k] = c
            else:
                del counts[k]
        self.n_rules -= 1
        left = self.priorities[rule.priority] - 1
        if left:
            self.priorities[rule.priority] = left
        else:
            del self.priorities[rule.priority]
            if rule.priority == self.max_priority:
                self.max_priority = max(self.priorities, default=-1)


class Classifier:
    """Rules of one OpenFlow table."""

    def __init__(self):
        self.subtables: dict[int, Subtable] = {}
        self._ranked: list[Subtable] | None = []
        self.n_rules = 0
        self.tries = [PrefixSet(f) for f in TRIE_FIELDS]

    def __len__(self):
        return self.n_rules

    def __iter__(self):
        for st in list(self.subtables.values()):
            for lst in list(st.rules.values()):
                yield from lst

    def insert(self, rule: Rule) -> None:
        st = self.subtables.get(rule.match.mask)
        if st is None:
            st = self.subtables[rule.match.mask] = Subtable(rule.match.mask)
        old_max = st.max_priority
        st.insert(rule)
        for i, plen in st.plens:
            f = TRIE_FIELDS[i]
            self.tries[i].add(plen, ((rule.match.value >> f.shift) & f.max) >> (f.n_bits - plen))
        if st.max_priority != old_max:
            self._ranked = None
        self.n_rules += 1

    def remove(self, rule: Rule) -> None:
        st = self.subtables[rule.match.mask]
        old_max = st.max_priority
        st.remove(rule)
        for i, plen in st.plens:
            f = TRIE_FIELDS[i]
            self.tries[i].remove(plen, ((rule.match.value >> f.shift) & f.max) >> (f.n_bits - plen))
        if not st.n_rules:
            del self.subtables[rule.match.mask]
            self._ranked = None
        elif st.max_priority != old_max:
            self._ranked = None
        self.n_rules -= 1

    def replace(self, old: Rule, new: Rule) -> None:
        self.remove(old)
        self.insert(new)

    def find_exact(self, match: Match, priority: int) -> Rule | None:
        """The rule with exactly this match and priority (strict flow-mods)."""
        st = self.subtables.get(match.mask)
        if st is None:
            return None
        for r in st.rules.get(match.value >> st.shift, ()):
            if r.priority == priority:
                return r
        return None

    def iter_loose(self, match: Match):
        """Rules at least as specific as ``match`` (non-strict flow-mods/stats)."""
        for st in list(self.subtables.values()):
            if st.mask & match.mask != match.mask:
                continue
            for lst in list(st.rules.values()):
                if lst[0].match.value & match.mask == match.value:
                    yield from list(lst)

    def iter_overlapping(self, match: Match, priority: int):
        """Rules of equal priority that some key could match together with
        ``match`` (OFPFF_CHECK_OVERLAP)."""
        for st in self.subtables.values():
            common = st.mask & match.mask
            for lst in st.rules.values():
                if lst[0].match.value & common == match.value & common:
                    for r in lst:
                        if r.priority == priority:
                            yield r

    def ranked(self) -> list[Subtable]:
        if self._ranked is None:
            self._ranked = sorted(self.subtables.values(), key=lambda s: -s.max_priority)
        return self._ranked

    def lookup_all(self, key: int, wc: Wildcards, floor: int) -> list[Rule]:
        """Every rule with priority > ``floor`` matching ``key`` (for
        conjunctive matches); ORs the consulted bits into ``wc``."""
        out = []
        consulted = 0
        tries: dict = {}
        for st in self.ranked():
            if st.max_priority <= floor:
                break
            bits, lst = self._probe(st, key, tries)
            consulted |= bits
            if lst:
                out += [r for r in lst if r.priority > floor]
        wc.mask |= consulted
        return out

    def lookup(self, key: int, wc: Wildcards | None = None) -> Rule | None:
        """Highest-priority rule matching ``key`` (a whole-key int); ORs the
        consulted bits into ``wc``."""
        if not isinstance(key, int):
            key = int(key)     # a FlowKey
        best = None
        best_pri = -1
        consulted = 0
        tries: dict = {}
        for st in self.ranked():
            if st.max_priority <= best_pri:
                break   # no later subtable can win: early exit
            bits, lst = self._probe(st, key, tries)
            consulted |= bits
            if lst and lst[0].priority > best_pri:
                best, best_pri = lst[0], lst[0].priority
        if wc is not None:
            wc.mask |= consulted
        return best

    def _probe(self, st: Subtable, key: int, tries: dict):
        """Search one subtable: (bits consulted, matching rules or None)."""
        for sm, sh, counts in st.stages:
            if (key & sm) >> sh not in counts:
                return self._miss_bits(st, sm, key, tries), None
        lst = st.rules.get((key & st.mask) >> st.shift)
        if lst:
            return st.mask, lst
        return self._miss_bits(st, st.mask, key, tries), None

    def _miss_bits(self, st: Subtable, bits: int, key: int, tries: dict) -> int:
        """What proves ``st`` has no match: the ``bits`` the failed probe
        looked at or, narrower when they include a tracked address prefix,
        the prefix-tracking proof."""
        if st.plens and bits & _TRIE_BITS:
            proof = self._trie_skip(st, key, tries)
            if proof:
                return proof
        return bits

    def _trie_skip(self, st: Subtable, key: int, cache: dict) -> int:
        """If prefix tracking proves ``st`` cannot match ``key``, the key
        bits that prove it (nonzero); else 0."""
        for i, plen in st.plens:
            ck = i << 8 | plen
            r = cache.get(ck)
            if r is None:
                f = TRIE_FIELDS[i]
                addr = cache.get(~i)          # ~i: the field's address, per lookup
                if addr is None:
                    addr = cache[~i] = (key >> f.shift) & f.max
                n = self.tries[i].proof_bits(plen, addr)
                r = cache[ck] = ((1 << n) - 1) << (f.n_bits - n + f.shift) if n else 0
            if r:
                return r
        return 0
