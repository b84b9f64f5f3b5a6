"""Flow keys and the pure-Python reference flow extractor.

``FlowKey`` is a fixed-size byte string (layout in ``slowpath/fields.py``) with
attribute access by member (``key.dl_type``) or field name (``key.eth_src``),
all values as unsigned integers.  ``parse_packet`` is the reference that the
Cython parser and the XDP parser are held to: it follows Open vSwitch's
``flow_extract`` (lib/flow.c), including its behaviour on bad input: a
truncated or insane header leaves its fields (and everything after it) zero,
and the function never raises.
"""

from __future__ import annotations

import struct

from slowpath.fields import (
    FIELDS, FLOW_KEY_SIZE, FLOW_NW_FRAG_ANY, FLOW_NW_FRAG_LATER, MEMBERS, VLAN_CFI, Field,
)


class FlowKey:
    """A mutable packed flow key.  ``bytes(key)`` is the wire form shared with
    the fast paths; ``int(key)`` reads the whole key as one big-endian integer
    (what masks and the classifier operate on)."""

    __slots__ = ("buf",)

    def __init__(self, data: bytes | bytearray | None = None):
        if data is None:
            buf = bytearray(FLOW_KEY_SIZE)
        else:
            if len(data) != FLOW_KEY_SIZE:
                raise ValueError(f"flow key must be {FLOW_KEY_SIZE} bytes, got {len(data)}")
            buf = bytearray(data)
        self.buf = buf

    @classmethod
    def from_int(cls, v: int) -> "FlowKey":
        return cls(v.to_bytes(FLOW_KEY_SIZE, "big"))

    @classmethod
    def from_fields(cls, **kw: int) -> "FlowKey":
        k = cls()
        for name, v in kw.items():
            setattr(k, name, v)
        return k

    def __int__(self) -> int:
        return int.from_bytes(self.buf, "big")

    def __bytes__(self) -> bytes:
        return bytes(self.buf)

    def copy(self) -> "FlowKey":
        return FlowKey(self.buf)

    def __eq__(self, other):
        return isinstance(other, FlowKey) and self.buf == other.buf

    def __hash__(self):
        return hash(bytes(self.buf))

    def get(self, f: Field) -> int:
        o, s = MEMBERS[f.member]
        return (int.from_bytes(self.buf[o:o + s], "big") >> f.ofs) & f.max

    def set(self, f: Field, v: int, mask: int | None = None) -> None:
        """Write field ``f`` (only the bits in ``mask``, default all)."""
        o, s = MEMBERS[f.member]
        m = f.max if mask is None else mask & f.max
        cur = int.from_bytes(self.buf[o:o + s], "big")
        cur = (cur & ~(m << f.ofs)) | ((v & m) << f.ofs)
        self.buf[o:o + s] = cur.to_bytes(s, "big")

    def __repr__(self) -> str:
        from slowpath.fields import FLOW_MEMBERS
        parts = [f"{n}={int.from_bytes(self.buf[o:o + s], 'big'):#x}"
                 for n, s, o in FLOW_MEMBERS
                 if any(self.buf[o:o + s])]
        return f"FlowKey({', '.join(parts)})"


def _member_property(name: str):
    o, s = MEMBERS[name]
    end = o + s

    def get(self) -> int:
        return int.from_bytes(self.buf[o:end], "big")

    def set_(self, v: int) -> None:
        self.buf[o:end] = int(v).to_bytes(s, "big")
    return property(get, set_, doc=f"key member {name} ({s} bytes at {o})")


def _field_property(f: Field):
    def get(self) -> int:
        return self.get(f)

    def set_(self, v: int) -> None:
        self.set(f, int(v))
    return property(get, set_, doc=f"field {f.name}")


# Attribute access per member and per field name (members win on clashes,
# e.g. ``nw_src`` is both; they denote the same bits).
for _name in FIELDS:
    if _name not in MEMBERS:
        setattr(FlowKey, _name, _field_property(FIELDS[_name]))
for _name in MEMBERS:
    setattr(FlowKey, _name, _member_property(_name))
del _name


# ---------------------------------------------------------------------------
# Reference extractor.

ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_ARP, ETH_TYPE_RARP = 0x0800, 0x86dd, 0x0806, 0x8035
ETH_TYPE_VLAN_8021Q, ETH_TYPE_VLAN_8021AD = 0x8100, 0x88a8
ETH_TYPE_MPLS, ETH_TYPE_MPLS_MCAST = 0x8847, 0x8848
FLOW_DL_TYPE_NONE = 0x05ff

_O = {n: o for n, (o, s) in MEMBERS.items()}
_p16, _p32 = struct.Struct("!H").pack_into, struct.Struct("!I").pack_into
_u16, _u32 = struct.Struct("!H").unpack_from, struct.Struct("!I").unpack_from

# ipv6_exthdr bits (OpenFlow 1.3 OFPIEH_*)
_EXTHDR_BIT = {0: 0x40, 43: 0x20, 44: 0x10, 60: 0x08, 51: 0x04, 50: 0x02, 59: 0x01}


def parse_packet(data: bytes, in_port: int) -> FlowKey:
    """Extract the flow key of an Ethernet frame received on ``in_port``."""
    key = FlowKey()
    b = key.buf
    _p32(b, _O["in_port"], in_port & 0xffffffff)
    try:
        _parse_l2(memoryview(bytes(data)), b)
    except (struct.error, IndexError, ValueError):  # pragma: no cover - guarded by length checks
        pass
    return key


def _parse_l2(d: memoryview, b: bytearray) -> None:
    n = len(d)
    if n < 14:
        return
    b[_O["dl_dst"]:_O["dl_dst"] + 12] = d[0:12]   # dl_dst then dl_src, adjacent
    pos = 12
    etype = _u16(d, pos)[0]
    pos += 2
    # VLAN tags: up to two, outermost first (flow->vlans[0]).
    for i in range(2):
        if etype not in (ETH_TYPE_VLAN_8021Q, ETH_TYPE_VLAN_8021AD):
            break
        if n < pos + 4:
            return  # truncated tag: OVS stops with dl_type unset
        tci = _u16(d, pos)[0]
        _p16(b, _O[f"vlan{i}_tpid"], etype)
        _p16(b, _O[f"vlan{i}_tci"], tci | VLAN_CFI)
        etype = _u16(d, pos + 2)[0]
        pos += 4
    if etype < 0x600:
        # 802.3 length field: LLC, maybe SNAP with a real ethertype.
        if (n >= pos + 8 and bytes(d[pos:pos + 3]) == b"\xaa\xaa\x03"
                and bytes(d[pos + 3:pos + 6]) == b"\x00\x00\x00"):
            etype = _u16(d, pos + 6)[0]
            pos += 8
            if etype < 0x600:
                etype = FLOW_DL_TYPE_NONE
        else:
            etype = FLOW_DL_TYPE_NONE
    _p16(b, _O["dl_type"], etype)
    if etype in (ETH_TYPE_MPLS, ETH_TYPE_MPLS_MCAST):
        if n >= pos + 4:
            b[_O["mpls_lse"]:_O["mpls_lse"] + 4] = d[pos:pos + 4]
        return
    if etype == ETH_TYPE_IP:
        _parse_ipv4(d[pos:], b)
    elif etype == ETH_TYPE_IPV6:
        _parse_ipv6(d[pos:], b)
    elif etype in (ETH_TYPE_ARP, ETH_TYPE_RARP):
        _parse_arp(d[pos:], b)


def _parse_arp(d: memoryview, b: bytearray) -> None:
    if len(d) < 28:
        return
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", d, 0)
    if htype != 1 or ptype != ETH_TYPE_IP or hlen != 6 or plen != 4:
        return
    if op <= 0xff:
        b[_O["nw_proto"]] = op
    b[_O["nw_src"]:_O["nw_src"] + 4] = d[14:18]
    b[_O["nw_dst"]:_O["nw_dst"] + 4] = d[24:28]
    b[_O["arp_sha"]:_O["arp_sha"] + 6] = d[8:14]
    b[_O["arp_tha"]:_O["arp_tha"] + 6] = d[18:24]


def _parse_ipv4(d: memoryview, b: bytearray) -> None:
    n = len(d)
    if n < 20:
        return
    vihl = d[0]
    ihl = (vihl & 0x0f) * 4
    tot_len = _u16(d, 2)[0]
    if vihl >> 4 != 4 or ihl < 20 or n < ihl or tot_len < ihl or tot_len > n:
        return  # ipv4_sanity_check failed: no L3 fields
    b[_O["nw_src"]:_O["nw_src"] + 8] = d[12:20]   # nw_src, nw_dst adjacent
    b[_O["nw_tos"]] = d[1]
    b[_O["nw_ttl"]] = d[8]
    proto = d[9]
    b[_O["nw_proto"]] = proto
    frag = _u16(d, 6)[0]
    if frag & 0x3fff:  # MF or offset
        b[_O["nw_frag"]] = FLOW_NW_FRAG_ANY | (FLOW_NW_FRAG_LATER if frag & 0x1fff else 0)
        if frag & 0x1fff:
            return  # later fragments carry no L4 header
    _parse_l4(d[ihl:tot_len], b, proto, False)


def _parse_ipv6(d: memoryview, b: bytearray) -> None:
    n = len(d)
    if n < 40 or d[0] >> 4 != 6:
        return
    plen = _u16(d, 4)[0]
    if 40 + plen > n:
        return  # ipv6_sanity_check failed: no L3 fields
    vtcfl = _u32(d, 0)[0]
    _p32(b, _O["ipv6_label"], vtcfl & 0xfffff)
    b[_O["nw_tos"]] = (vtcfl >> 20) & 0xff
    b[_O["nw_ttl"]] = d[7]
    b[_O["ipv6_src"]:_O["ipv6_src"] + 32] = d[8:40]   # ipv6_src, ipv6_dst adjacent
    nxt = d[6]
    d = d[40:40 + plen]
    exthdr = 0
    # Extension headers, as OVS parse_ipv6_ext_hdrs: hop-by-hop, routing,
    # destination options, AH, fragment.  ESP and "no next header" end it.
    while True:
        exthdr |= _EXTHDR_BIT.get(nxt, 0)
        if nxt in (0, 43, 60):
            if len(d) < 8:
                break
            hlen = (d[1] + 1) * 8
            if len(d) < hlen:
                break
            nxt, d = d[0], d[hlen:]
        elif nxt == 51:  # AH: length in 4-byte units, minus 2
            if len(d) < 8:
                break
            hlen = (d[1] + 2) * 4
            if len(d) < hlen:
                break
            nxt, d = d[0], d[hlen:]
        elif nxt == 44:  # fragment
            if len(d) < 8:
                break
            off_m = _u16(d, 2)[0]
            nxt, d = d[0], d[8:]
            if off_m & 0xfff9:  # offset != 0 or M set
                b[_O["nw_frag"]] = FLOW_NW_FRAG_ANY
                if off_m & 0xfff8:
                    b[_O["nw_frag"]] = FLOW_NW_FRAG_ANY | FLOW_NW_FRAG_LATER
                    b[_O["nw_proto"]] = nxt
                    _p16(b, _O["ipv6_exthdr"], exthdr)
                    return  # later fragments carry no L4 header
        else:
            break
    _p16(b, _O["ipv6_exthdr"], exthdr)
    b[_O["nw_proto"]] = nxt
    if nxt in (0, 43, 60, 51, 44):
        return  # truncated extension header chain
    _parse_l4(d, b, nxt, True)


def _parse_l4(d: memoryview, b: bytearray, proto: int, v6: bool) -> None:
    n = len(d)
    if proto == 6:
        if n >= 20:
            doff = (d[12] >> 4) * 4
            if 20 <= doff <= n:
                b[_O["tp_src"]:_O["tp_src"] + 4] = d[0:4]
                _p16(b, _O["tcp_flags"], _u16(d, 12)[0] & 0x0fff)
    elif proto == 17:
        if n >= 8:
            b[_O["tp_src"]:_O["tp_src"] + 4] = d[0:4]
    elif proto == 132:
        if n >= 12:
            b[_O["tp_src"]:_O["tp_src"] + 4] = d[0:4]
    elif proto == 1 and not v6:
        if n >= 8:
            _p16(b, _O["tp_src"], d[0])
            _p16(b, _O["tp_dst"], d[1])
    elif proto == 2 and not v6:
        if n >= 8:
            _p16(b, _O["tp_src"], d[0])
            _p16(b, _O["tp_dst"], d[1])
            b[_O["igmp_group_ip4"]:_O["igmp_group_ip4"] + 4] = d[4:8]
    elif proto == 58 and v6:
        if n >= 8:
            _p16(b, _O["tp_src"], d[0])
            _p16(b, _O["tp_dst"], d[1])
            if d[1] == 0 and d[0] in (135, 136):
                _parse_nd(d[8:], b, d[0])


def _parse_nd(d: memoryview, b: bytearray, icmp_type: int) -> None:
    """Neighbor solicitation/advertisement: target and link-layer options.
    A malformed option invalidates all ND fields (OVS parse_icmpv6)."""
    if len(d) < 16:
        return
    sll = tll = None
    opts = d[16:]
    while len(opts) >= 8:
        otype, olen = opts[0], opts[1] * 8
        if olen == 0 or olen > len(opts):
            return  # invalid: leave nd_target/sll/tll zero
        if olen == 8:
            if otype == 1 and icmp_type == 135:
                if sll is not None:
                    return  # duplicate SLL option
                sll = bytes(opts[2:8])
            elif otype == 2 and icmp_type == 136:
                if tll is not None:
                    return
                tll = bytes(opts[2:8])
        opts = opts[olen:]
    b[_O["nd_target"]:_O["nd_target"] + 16] = d[0:16]
    if sll is not None:
        b[_O["arp_sha"]:_O["arp_sha"] + 6] = sll
    if tll is not None:
        b[_O["arp_tha"]:_O["arp_tha"] + 6] = tll
