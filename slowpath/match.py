"""OpenFlow matches over the flow key: a value and a mask, both whole-key
integers (the key read big-endian, see ``slowpath/fields.py``).

Using one integer pair for every match makes the classifier's job a single
``key & mask == value`` and makes megaflow masks (``Wildcards``) the same
kind of object.  Matches are built from field names (``from_fields``) or
ovs-ofctl text (``parse``), print like ovs-ofctl (``to_string``), and are
validated as OpenFlow requires (prerequisites, masks, values) raising
``OFError`` with the OFPET_BAD_MATCH code a controller expects.
"""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3 as ofp

from slowpath.errors import bad_match
from slowpath.fields import (
    CS, FIELDS, FLOW_KEY_SIZE, FLOW_MEMBERS, MEMBERS, PREREQS, PROTOCOLS, TCP_FLAGS, VLAN_CFI, Field,
    field_shift, format_value, parse_value,
)

_FULL = (1 << (8 * FLOW_KEY_SIZE)) - 1


def _canonical(name: str) -> Field:
    f = FIELDS.get(name)
    if f is None:
        raise bad_match(ofp.OFPBMC_BAD_FIELD, f"unknown field {name!r}")
    return f


class Match:
    """``value`` and ``mask`` as whole-key integers; ``value & ~mask == 0``."""

    __slots__ = ("value", "mask")

    def __init__(self, value: int = 0, mask: int = 0):
        self.value = value & mask
        self.mask = mask

    # -- construction -------------------------------------------------------
    @classmethod
    def from_fields(cls, fields: dict | None = None, **kw) -> "Match":
        """Build from ``{field: value}`` or ``{field: (value, mask)}``; values
        may be ints or ovs-ofctl strings.  Prerequisites are checked."""
        m = cls()
        for name, v in {**(fields or {}), **kw}.items():
            if isinstance(v, tuple):
                m.set_field(name, v[0], v[1])
            else:
                m.set_field(name, v)
        m.check_prereqs(tuple({**(fields or {}), **kw}))
        return m

    @classmethod
    def parse(cls, text: str) -> "Match":
        """Parse ovs-ofctl match syntax, e.g. ``in_port=1,icmp,nw_dst=10.0.0.0/24``."""
        m, names = cls(), []
        for item in _split(text):
            if "=" not in item:
                proto = PROTOCOLS.get(item)
                if proto is None:
                    raise bad_match(ofp.OFPBMC_BAD_FIELD, f"unknown keyword {item!r}")
                for n, v in proto:
                    m.set_field(n, v)
                continue
            name, _, val = item.partition("=")
            name, val = name.strip(), val.strip()
            f = _canonical(name)
            names.append(name)
            if f.fmt in ("tcp_flags", "ct_state") and val[:1] in "+-":
                v, mask = _parse_flag_set(f, val)
                m.set_field(name, v, mask)
            elif f.fmt == "frag" and val in FRAG_KEYWORDS:
                m.set_field(name, *FRAG_KEYWORDS[val])
            elif "/" in val:
                v, _, ms = val.partition("/")
                m.set_field(name, v, _parse_mask(f, ms))
            else:
                m.set_field(name, val)
        m.check_prereqs(names)
        return m

    def set_field(self, name: str, value, mask=None) -> "Match":
        """Add one field (in place).  Raises OFError on bad value/mask."""
        f = _canonical(name)
        try:
            v = parse_value(f, value) if isinstance(value, str) else int(value)
            mk = f.max if mask is None else (
                _parse_mask(f, mask) if isinstance(mask, str) else int(mask))
        except (ValueError, KeyError) as e:
            raise bad_match(ofp.OFPBMC_BAD_VALUE, str(e)) from None
        if not (0 <= v <= f.max) or not (0 <= mk <= f.max):
            raise bad_match(ofp.OFPBMC_BAD_VALUE, f"{f.name}: value out of range")
        if name == "dl_vlan":
            # OF1.0 semantics: 0xffff = no tag, else a tag with this VID
            if v == 0xffff:
                return self.set_field("vlan_tci", 0, 0xffff)
            return self._merge_tci(VLAN_CFI | v, 0x1fff)
        if name in ("vlan_pcp", "dl_vlan_pcp"):
            return self._merge_tci(v << 13 | VLAN_CFI, 0xf000)
        if mk != f.max and not f.maskable:
            raise bad_match(ofp.OFPBMC_BAD_MASK, f"{f.name} is not maskable")
        if v & ~mk:
            raise bad_match(ofp.OFPBMC_BAD_WILDCARDS,
                            f"{f.name}: value has 1-bits where the mask has 0-bits")
        mk &= f.valid_mask
        sh = field_shift(f)
        full = f.max << sh
        self.mask = (self.mask & ~full) | (mk << sh)
        self.value = (self.value & ~full) | ((v & mk) << sh)
        return self

    def _merge_tci(self, value: int, region: int) -> "Match":
        """Match ``region`` bits of the TCI exactly, keeping the other bits
        (dl_vlan and dl_vlan_pcp combine, each implying a tag)."""
        v, m = self.get("vlan_tci")
        return self.set_field("vlan_tci", (v & ~region) | value, m | region)

    # -- access -------------------------------------------------------------
    def get(self, name: str) -> tuple[int, int]:
        """(value, mask) of a field; mask 0 when unmatched."""
        f = _canonical(name)
        sh = field_shift(f)
        return (self.value >> sh) & f.max, (self.mask >> sh) & f.max

    def is_exact(self, name: str, value: int | None = None) -> bool:
        v, mk = self.get(name)
        f = FIELDS[name]
        return mk == f.valid_mask and (value is None or v == value)

    def matches(self, key) -> bool:
        return int(key) & self.mask == self.value

    def covers(self, other: "Match") -> bool:
        """True if every key matching ``self`` ... i.e. ``self`` is at least as
        specific as ``other`` on other's bits (OpenFlow loose match)."""
        return self.mask & other.mask == other.mask and self.value & other.mask == other.value

    def __eq__(self, other):
        return isinstance(other, Match) and (self.value, self.mask) == (other.value, other.mask)

    def __hash__(self):
        return hash((self.value, self.mask))

    def __repr__(self):
        return f"Match({self.to_string()!r})"

    # -- validation ---------------------------------------------------------
    def check_prereqs(self, names=()) -> None:
        """Raise OFError(BAD_MATCH, BAD_PREREQ) unless every matched bit
        belongs to some field whose prerequisites this match pins (OpenFlow
        1.3 §7.2.3.6).  Works on bits, not names, because several fields share
        a member (tp_src is tcp_src, udp_src, icmp_type...).

        The verdict depends only on the mask, the pinned values and the
        names, so it is remembered: a controller's flow-mods share a few
        shapes, and a burst of them pays for the check once per shape."""
        names = tuple(names)
        memo = (self.mask, self.value & _PIN_BITS, names)
        error = _PREREQ_VERDICTS.get(memo, _UNKNOWN)
        if error is _UNKNOWN:
            error = self._prereq_error(names)
            if len(_PREREQ_VERDICTS) >= _PREREQ_VERDICTS_MAX:
                _PREREQ_VERDICTS.clear()
            _PREREQ_VERDICTS[memo] = error
        if error is not None:
            raise bad_match(ofp.OFPBMC_BAD_PREREQ, error)

    def _prereq_error(self, names: tuple) -> str | None:
        """Why the prerequisites fail (check_prereqs' message), or None."""
        if self.mask & _PREREQ_BITS:
            for mmask, sh, mx, fs in _PREREQ_MEMBERS:
                if not self.mask & mmask:
                    continue
                mb = (self.mask >> sh) & mx
                covered = 0
                for f in fs:
                    if not f.prereq or self.prereq_ok(f.prereq):
                        covered |= f.member_mask
                if mb & ~covered:
                    return f"{fs[0].name}: prerequisite {fs[0].prereq} not met"
        for name in names:   # fields named by the caller: their own prerequisites
            f = FIELDS[name]
            if f.prereq and not self.prereq_ok(f.prereq) and not (
                    f.name in ("icmp_type", "icmp_code") and self.prereq_ok("icmpv6")):
                return f"{name} requires {f.prereq}"
        return None

    def prereq_ok(self, prereq: str) -> bool:
        mask, value = self.mask, self.value
        for pm, pv in _PREREQ_PINS[prereq]:
            if mask & pm == pm and value & pm == pv:
                return True
        return False

    # -- text -----------------------------------------------------------
    def to_string(self) -> str:
        """ovs-ofctl style: protocol shorthand first, then fields."""
        parts = []
        rest = self.mask
        proto = None
        if self.is_exact("eth_type"):
            for kw, sets in PROTOCOLS.items():
                if sets and all(self.is_exact(n, v) for n, v in sets):
                    if proto is None or len(sets) > len(PROTOCOLS[proto]):
                        proto = kw
        if proto:
            parts.append(proto)
            for n, _ in PROTOCOLS[proto]:
                f = FIELDS[n]
                rest &= ~(f.max << field_shift(f))
        for name in _DISPLAY:
            f = FIELDS[name]
            sh = field_shift(f)
            fm = (rest >> sh) & f.valid_mask
            if not fm or (f.prereq and not self.prereq_ok(f.prereq)):
                continue
            v = (self.value >> sh) & f.valid_mask
            if f.member == "vlan0_tci":
                text = _format_vlan(v, fm)
            else:
                text = f"{name}={_format_masked(f, v, fm)}"
            parts.append(text)
            rest &= ~(fm << sh)
        for member, _, _ in FLOW_MEMBERS:   # bits no field could explain
            sh, mx = member_shift(member), member_max(member)
            mb = (rest >> sh) & mx
            if mb:
                parts.append(f"{member}={(self.value >> sh) & mx:#x}/{mb:#x}")
        return ",".join(parts)


def _format_vlan(v: int, m: int) -> str:
    """dl_vlan/dl_vlan_pcp when the mask is exactly theirs, else vlan_tci=v/m."""
    if m == 0xffff and not v:
        return "vlan_tci=0x0000"
    if v & VLAN_CFI:
        if m == 0x1fff:
            return f"dl_vlan={v & 0xfff}"
        if m == 0xf000:
            return f"dl_vlan_pcp={v >> 13}"
        if m == 0xffff:
            return f"dl_vlan={v & 0xfff},dl_vlan_pcp={v >> 13}"
    return f"vlan_tci={v:#06x}/{m:#06x}"


MEMBER_FIELDS: dict[str, list[Field]] = {}
for _f in {id(f): f for f in FIELDS.values()}.values():
    MEMBER_FIELDS.setdefault(_f.member, []).append(_f)


def member_shift(member: str) -> int:
    """Left shift of a member within the whole-key integer."""
    o, s = MEMBERS[member]
    return (FLOW_KEY_SIZE - o - s) * 8


def member_max(member: str) -> int:
    return (1 << (8 * MEMBERS[member][1])) - 1


def _prereq_members():
    out, bits = [], 0
    for member, fs in MEMBER_FIELDS.items():
        free = 0
        for f in fs:
            if not f.prereq:
                free |= f.member_mask
        mx = member_max(member)
        if free & mx == mx:
            continue    # some prerequisite-free field covers every bit
        mmask = mx << member_shift(member)
        out.append((mmask, member_shift(member), mx, fs))
        bits |= mmask
    return out, bits


_PREREQ_MEMBERS, _PREREQ_BITS = _prereq_members()

# Each prerequisite alternative as whole-key (pin mask, pin value) bits.
_PREREQ_PINS = {
    prereq: tuple((sum(mk << FIELDS[n].shift for n, _, mk in alt),
                   sum(v << FIELDS[n].shift for n, v, _ in alt)) for alt in alts)
    for prereq, alts in PREREQS.items()
}
_PIN_BITS = 0
for _pins in _PREREQ_PINS.values():
    for _pm, _pv in _pins:
        _PIN_BITS |= _pm
del _pins, _pm, _pv
_UNKNOWN = object()
_PREREQ_VERDICTS: dict = {}     # (mask, pinned value bits, names) -> error text or None
_PREREQ_VERDICTS_MAX = 4096

_DISPLAY = (
    ["recirc_id", "dp_hash", "conj_id", "ct_state", "ct_zone", "ct_mark", "ct_label",
     "ct_nw_proto", "ct_nw_src", "ct_nw_dst", "ct_ipv6_src", "ct_ipv6_dst", "ct_tp_src",
     "ct_tp_dst", "metadata"] + [f"reg{i}" for i in range(16)]
    + ["skb_priority", "pkt_mark", "tun_id", "tun_src", "tun_dst", "tun_ipv6_src",
       "tun_ipv6_dst", "tun_flags", "tun_gbp_id", "tun_gbp_flags", "tun_tos", "tun_ttl"]
    + [f"tun_metadata{i}" for i in range(8)]
    + ["in_port", "actset_output", "packet_type", "vlan_tci", "dl_src", "dl_dst", "dl_type",
       "mpls_label", "mpls_tc", "mpls_bos", "mpls_ttl", "pbb_isid", "pbb_uca",
       "arp_spa", "arp_tpa", "nw_src", "nw_dst", "ipv6_src", "ipv6_dst", "ipv6_label",
       "ipv6_exthdr", "arp_op", "nw_proto", "nw_tos", "nw_ecn", "nw_ttl", "nw_frag",
       "arp_sha", "arp_tha", "nd_target", "nd_sll", "nd_tll", "icmp_type", "icmp_code",
       "icmpv6_type", "icmpv6_code", "tp_src", "tp_dst", "tcp_flags"])


def _format_masked(f: Field, v: int, mk: int) -> str:
    if f.fmt == "ct_state" or f.fmt == "tcp_flags":
        names = CS if f.fmt == "ct_state" else TCP_FLAGS
        bits = [("+" if v & b else "-") + n for n, b in names.items() if mk & b]
        if sum(bin(b).count("1") for n, b in names.items() if mk & b) == bin(mk).count("1"):
            return "".join(bits)
    if f.fmt == "frag":
        for word, vm in FRAG_KEYWORDS.items():
            if vm == (v, mk):
                return word
    if mk == f.valid_mask:
        return format_value(f, v)
    if f.fmt in ("ipv4", "ipv6"):
        n = bin(mk).count("1")
        if mk == ((1 << n) - 1) << (f.n_bits - n):
            return f"{format_value(f, v)}/{n}"
    return f"{format_value(f, v)}/{format_value(f, mk) if f.fmt in ('mac', 'ipv4', 'ipv6') else hex(mk)}"


#: ovs-ofctl ip_frag keywords -> (value, mask) over FLOW_NW_FRAG_ANY|LATER
FRAG_KEYWORDS = {"no": (0, 1), "yes": (1, 1), "first": (1, 3), "later": (3, 3),
                 "not_later": (0, 2)}


def _parse_mask(f: Field, s: str) -> int:
    s = s.strip()
    if f.fmt in ("ipv4", "ipv6") and s.isdigit():
        n = int(s)
        if not 0 <= n <= f.n_bits:
            raise ValueError(f"bad prefix length {s}")
        return ((1 << n) - 1) << (f.n_bits - n)
    return parse_value(f, s)


def _parse_flag_set(f: Field, s: str) -> tuple[int, int]:
    names = CS if f.fmt == "ct_state" else TCP_FLAGS
    v = mk = 0
    import re
    for sign, name in re.findall(r"([+-])([a-z_]+)", s):
        if name not in names:
            raise bad_match(ofp.OFPBMC_BAD_VALUE, f"unknown flag {name!r}")
        mk |= names[name]
        if sign == "+":
            v |= names[name]
    return v, mk


def _split(text: str) -> list[str]:
    """Split on commas/whitespace outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if depth == 0 and (ch == "," or ch.isspace()):
            if cur.strip():
                out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


