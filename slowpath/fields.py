"""The one definition of the flow key and of every matchable field.

Like Open vSwitch's ``struct flow`` plus ``meta-flow``: ``FLOW_MEMBERS`` lays
out a fixed-size packed byte string (the *flow key*) that the pure-Python
extractor (``slowpath/flow.py``), the Cython fast path and the XDP program
all fill identically; ``FIELDS`` maps every OpenFlow/Nicira field name onto a
bit range of one member.  ``fields_codegen.py`` turns this module into
``fastpath/_fields.pxd`` and ``fastpath/bpf/flow_key.h`` so the layout is
written exactly once.

Layout rules (why they are what they are):

* **Every member is big-endian** (network byte order), metadata included.
  Header fields can be copied straight from the wire, and overlapping
  registers work like OVS's: ``xreg0`` is ``reg0:reg1`` and ``xxreg0`` is
  ``reg0..reg3`` simply because they are the same bytes read wider.  The
  fast paths must store ``in_port``, ``recirc_id`` etc. with ``htonl``.
* Members are naturally aligned (2/4/8-byte members at multiples of their
  size) and the key is a multiple of 8 bytes, so C code can compare/mask it
  in 64-bit words.
* Values follow OVS ``struct flow`` semantics: ``vlan0`` is the outer tag and
  its TCI has the CFI bit (0x1000) set when a tag is present; ``dl_type`` is
  the innermost ethertype; ARP opcode lives in ``nw_proto``, ARP spa/tpa in
  ``nw_src``/``nw_dst``, ARP/ND link addresses in ``arp_sha``/``arp_tha``;
  ICMP(v6) type/code live in the low byte of ``tp_src``/``tp_dst``;
  ``nw_frag`` holds FLOW_NW_FRAG_ANY (1) | FLOW_NW_FRAG_LATER (2);
  ``tcp_flags`` holds the low 12 bits of the TCP flags; ``packet_type`` is
  0 (namespace 0, Ethernet) for Ethernet frames.
* Tunnel metadata (GENEVE options) is bounded: 8 option slots.  Slot *i* is
  described by ``tun_md_opts[4*i:4*i+4]`` = (class u16, type u8, len u8) and
  its data is ``tun_md_data[8*i:8*i+8]`` (left-aligned, at most 8 bytes), so
  ``tun_metadata0``..``tun_metadata7`` are 64-bit fields.  Longer options or
  more than 8 of them are not representable (OVS allows 124 bytes / 64).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

# (name, size in bytes).  Offsets are computed below; names starting with
# "pad" are padding and always zero.
_MEMBER_SIZES = [
    # --- tunnel metadata (struct flow_tnl) ---
    ("tun_ipv6_src", 16), ("tun_ipv6_dst", 16), ("tun_id", 8),
    ("tun_src", 4), ("tun_dst", 4), ("tun_flags", 2), ("tun_tos", 1),
    ("tun_ttl", 1), ("tun_tp_src", 2), ("tun_tp_dst", 2), ("tun_gbp_id", 2),
    ("tun_gbp_flags", 1), ("pad0", 5),
    ("tun_md_opts", 32), ("tun_md_data", 64),
    # --- pipeline metadata ---
    ("metadata", 8), ("regs", 64),
    ("in_port", 4), ("recirc_id", 4), ("dp_hash", 4), ("skb_priority", 4),
    ("pkt_mark", 4), ("ct_mark", 4), ("ct_label", 16),
    ("ct_nw_src", 4), ("ct_nw_dst", 4), ("ct_ipv6_src", 16), ("ct_ipv6_dst", 16),
    ("ct_tp_src", 2), ("ct_tp_dst", 2), ("ct_zone", 2), ("ct_state", 1),
    ("ct_nw_proto", 1), ("conj_id", 4), ("actset_output", 4),
    ("packet_type", 4), ("pbb_isid", 4),
    # --- L2 ---
    ("dl_dst", 6), ("dl_src", 6), ("dl_type", 2),
    ("vlan0_tpid", 2), ("vlan0_tci", 2), ("vlan1_tpid", 2), ("vlan1_tci", 2),
    # --- L3 ---
    ("nw_frag", 1), ("nw_tos", 1), ("mpls_lse", 4),
    ("nw_src", 4), ("nw_dst", 4), ("ipv6_label", 4),
    ("ipv6_src", 16), ("ipv6_dst", 16), ("nd_target", 16),
    ("nw_ttl", 1), ("nw_proto", 1),
    # --- L4 ---
    ("tcp_flags", 2), ("tp_src", 2), ("tp_dst", 2), ("igmp_group_ip4", 4),
    ("arp_sha", 6), ("arp_tha", 6), ("ipv6_exthdr", 2), ("pad1", 6),
]


def _layout(sizes):
    out, ofs = [], 0
    for name, size in sizes:
        out.append((name, size, ofs))
        ofs += size
    return out, ofs


#: Ordered (name, size_in_bytes, byte_offset) of every key member.
FLOW_MEMBERS: list[tuple[str, int, int]]
FLOW_MEMBERS, FLOW_KEY_SIZE = _layout(_MEMBER_SIZES)
#: member name -> (offset, size)
MEMBERS: dict[str, tuple[int, int]] = {n: (o, s) for n, s, o in FLOW_MEMBERS}

assert FLOW_KEY_SIZE % 8 == 0, FLOW_KEY_SIZE
for _n, _s, _o in FLOW_MEMBERS:
    assert _s not in (2, 4, 8) or _o % _s == 0, (_n, _o)

# Well-known constants (OVS semantics).
VLAN_CFI = 0x1000
FLOW_NW_FRAG_ANY = 1
FLOW_NW_FRAG_LATER = 2
CS = {  # ct_state bits, lib/packets.h CS_*
    "new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10,
    "trk": 0x20, "snat": 0x40, "dnat": 0x80,
}
TCP_FLAGS = {  # ovs-ofctl tcp_flags names
    "fin": 0x001, "syn": 0x002, "rst": 0x004, "psh": 0x008, "ack": 0x010,
    "urg": 0x020, "ece": 0x040, "cwr": 0x080, "ns": 0x100,
}

OFPXMC_NXM_0 = 0x0000
OFPXMC_NXM_1 = 0x0001
OFPXMC_OPENFLOW_BASIC = 0x8000
OFPXMC_PACKET_REGS = 0x8001


@dataclass(frozen=True)
class Field:
    """One matchable/settable field: a bit range of one key member.

    The field's value ``v`` occupies ``(v << ofs)`` of the member read as a
    big-endian unsigned integer.  ``valid`` is the mask of meaningful bits of
    the field value (e.g. nw_tos ignores its 2 ECN bits).
    """

    name: str
    member: str
    n_bits: int
    ofs: int = 0
    maskable: bool = True
    prereq: str = ""            # key into PREREQS ("" = none)
    oxm: tuple[int, int] | None = None   # (class, field) OpenFlow 1.2+
    nxm: tuple[int, int] | None = None   # (class, field) Nicira NXM
    wire_bytes: int = 0         # on-the-wire width when != ceil(n_bits/8)
    fmt: str = "int"            # int | hex | mac | ipv4 | ipv6 | frag | ct_state | tcp_flags | port
    aliases: tuple[str, ...] = ()
    valid: int | None = None
    writable: bool = True

    @cached_property
    def max(self) -> int:
        return (1 << self.n_bits) - 1

    @cached_property
    def valid_mask(self) -> int:
        return self.max if self.valid is None else self.valid

    @cached_property
    def member_mask(self) -> int:
        """Bits of the member (as int) this field covers."""
        return self.valid_mask << self.ofs

    @cached_property
    def shift(self) -> int:
        """Left shift placing a field value in the whole-key integer."""
        o, s = MEMBERS[self.member]
        return self.ofs + (FLOW_KEY_SIZE - o - s) * 8

    @cached_property
    def int_mask(self) -> int:
        """The field's bits as a mask over the whole key as one big-endian int."""
        return self.member_mask << (self.shift - self.ofs)

    @cached_property
    def key_range(self) -> tuple[int, int]:
        """(byte offset, byte size) of the member in the key."""
        return MEMBERS[self.member]


_F: list[Field] = []


def _f(name, member, n_bits, ofs=0, **kw):
    _F.append(Field(name, member, n_bits, ofs, **kw))


B, N0, N1 = OFPXMC_OPENFLOW_BASIC, OFPXMC_NXM_0, OFPXMC_NXM_1
_f("in_port", "in_port", 32, maskable=False, oxm=(B, 0), nxm=(N0, 0), fmt="port")
_f("metadata", "metadata", 64, oxm=(B, 2), fmt="hex")
_f("actset_output", "actset_output", 32, maskable=False, oxm=(B, 43), fmt="port", writable=False)
_f("packet_type", "packet_type", 32, maskable=False, oxm=(B, 44), fmt="hex", writable=False)
for _i in range(16):
    _f(f"reg{_i}", "regs", 32, (15 - _i) * 32, nxm=(N1, _i), fmt="hex")
for _i in range(8):
    _f(f"xreg{_i}", "regs", 64, (7 - _i) * 64, oxm=(OFPXMC_PACKET_REGS, _i), fmt="hex")
for _i in range(4):
    _f(f"xxreg{_i}", "regs", 128, (3 - _i) * 128, nxm=(N1, 111 + _i), fmt="hex")
# tunnel
_f("tun_id", "tun_id", 64, oxm=(B, 38), nxm=(N1, 16), fmt="hex", aliases=("tunnel_id",))
_f("tun_src", "tun_src", 32, nxm=(N1, 31), fmt="ipv4", aliases=("tun_ipv4_src",))
_f("tun_dst", "tun_dst", 32, nxm=(N1, 32), fmt="ipv4", aliases=("tun_ipv4_dst",))
_f("tun_ipv6_src", "tun_ipv6_src", 128, nxm=(N1, 109), fmt="ipv6")
_f("tun_ipv6_dst", "tun_ipv6_dst", 128, nxm=(N1, 110), fmt="ipv6")
_f("tun_flags", "tun_flags", 16, nxm=(N1, 104), fmt="hex")
_f("tun_gbp_id", "tun_gbp_id", 16, nxm=(N1, 38))
_f("tun_gbp_flags", "tun_gbp_flags", 8, nxm=(N1, 39))
_f("tun_tos", "tun_tos", 8, maskable=False)
_f("tun_ttl", "tun_ttl", 8, maskable=False)
for _i in range(8):
    _f(f"tun_metadata{_i}", "tun_md_data", 64, (7 - _i) * 64, nxm=(N1, 40 + _i), fmt="hex")
# conntrack
_f("ct_state", "ct_state", 8, nxm=(N1, 105), wire_bytes=4, fmt="ct_state", writable=False)
_f("ct_zone", "ct_zone", 16, maskable=False, nxm=(N1, 106), writable=False)
_f("ct_mark", "ct_mark", 32, nxm=(N1, 107), fmt="hex")
_f("ct_label", "ct_label", 128, nxm=(N1, 108), fmt="hex")
_f("ct_nw_proto", "ct_nw_proto", 8, maskable=False, nxm=(N1, 119), writable=False)
_f("ct_nw_src", "ct_nw_src", 32, nxm=(N1, 120), fmt="ipv4", writable=False, prereq="ipv4")
_f("ct_nw_dst", "ct_nw_dst", 32, nxm=(N1, 121), fmt="ipv4", writable=False, prereq="ipv4")
_f("ct_ipv6_src", "ct_ipv6_src", 128, nxm=(N1, 122), fmt="ipv6", writable=False, prereq="ipv6")
_f("ct_ipv6_dst", "ct_ipv6_dst", 128, nxm=(N1, 123), fmt="ipv6", writable=False, prereq="ipv6")
_f("ct_tp_src", "ct_tp_src", 16, nxm=(N1, 124), writable=False, prereq="ip_any")
_f("ct_tp_dst", "ct_tp_dst", 16, nxm=(N1, 125), writable=False, prereq="ip_any")
# other metadata
_f("pkt_mark", "pkt_mark", 32, nxm=(N1, 33), fmt="hex")
_f("dp_hash", "dp_hash", 32, nxm=(N1, 35), fmt="hex", writable=False)
_f("recirc_id", "recirc_id", 32, maskable=False, nxm=(N1, 36), fmt="hex", writable=False)
_f("conj_id", "conj_id", 32, maskable=False, nxm=(N1, 37), writable=False)
_f("skb_priority", "skb_priority", 32, maskable=False, fmt="hex")
# L2
_f("eth_src", "dl_src", 48, oxm=(B, 4), nxm=(N0, 2), fmt="mac", aliases=("dl_src",))
_f("eth_dst", "dl_dst", 48, oxm=(B, 3), nxm=(N0, 1), fmt="mac", aliases=("dl_dst",))
_f("eth_type", "dl_type", 16, maskable=False, oxm=(B, 5), nxm=(N0, 3), fmt="hex",
   aliases=("dl_type",), writable=False)
_f("vlan_tci", "vlan0_tci", 16, nxm=(N0, 4), fmt="hex")
_f("vlan_vid", "vlan0_tci", 13, oxm=(B, 6), wire_bytes=2)       # includes OFPVID_PRESENT
_f("dl_vlan", "vlan0_tci", 12, maskable=False)                  # implies a tag is present
_f("vlan_pcp", "vlan0_tci", 3, 13, oxm=(B, 7), maskable=False, prereq="vlan",
   aliases=("dl_vlan_pcp",))
_f("mpls_label", "mpls_lse", 20, 12, maskable=False, oxm=(B, 34), wire_bytes=4, prereq="mpls")
_f("mpls_tc", "mpls_lse", 3, 9, maskable=False, oxm=(B, 35), prereq="mpls")
_f("mpls_bos", "mpls_lse", 1, 8, maskable=False, oxm=(B, 36), prereq="mpls", writable=False)
_f("mpls_ttl", "mpls_lse", 8, 0, maskable=False, nxm=(N1, 30), prereq="mpls")
_f("pbb_isid", "pbb_isid", 24, oxm=(B, 37), prereq="pbb")
_f("pbb_uca", "pbb_isid", 1, 24, maskable=False, oxm=(B, 41), prereq="pbb")
# L3
_f("ip_src", "nw_src", 32, oxm=(B, 11), nxm=(N0, 7), fmt="ipv4", prereq="ipv4",
   aliases=("nw_src", "ipv4_src"))
_f("ip_dst", "nw_dst", 32, oxm=(B, 12), nxm=(N0, 8), fmt="ipv4", prereq="ipv4",
   aliases=("nw_dst", "ipv4_dst"))
_f("ipv6_src", "ipv6_src", 128, oxm=(B, 26), nxm=(N1, 19), fmt="ipv6", prereq="ipv6")
_f("ipv6_dst", "ipv6_dst", 128, oxm=(B, 27), nxm=(N1, 20), fmt="ipv6", prereq="ipv6")
_f("ipv6_label", "ipv6_label", 20, oxm=(B, 28), nxm=(N1, 27), wire_bytes=4, fmt="hex",
   prereq="ipv6", aliases=("ipv6_flabel",))
_f("ipv6_exthdr", "ipv6_exthdr", 9, oxm=(B, 39), wire_bytes=2, fmt="hex", prereq="ipv6",
   writable=False)
_f("nw_proto", "nw_proto", 8, maskable=False, oxm=(B, 10), nxm=(N0, 6), prereq="ip_any",
   aliases=("ip_proto",), writable=False)
_f("nw_tos", "nw_tos", 8, maskable=False, nxm=(N0, 5), prereq="ip_any", valid=0xfc)
_f("ip_dscp", "nw_tos", 6, 2, maskable=False, oxm=(B, 8), prereq="ip_any")
_f("nw_ecn", "nw_tos", 2, maskable=False, oxm=(B, 9), nxm=(N1, 28), prereq="ip_any",
   aliases=("ip_ecn",))
_f("nw_ttl", "nw_ttl", 8, maskable=False, nxm=(N1, 29), prereq="ip_any")
_f("ip_frag", "nw_frag", 2, nxm=(N1, 26), wire_bytes=1, fmt="frag", prereq="ip_any",
   aliases=("nw_frag",), writable=False)
_f("arp_op", "nw_proto", 8, maskable=False, oxm=(B, 21), nxm=(N0, 15), wire_bytes=2,
   prereq="arp")
_f("arp_spa", "nw_src", 32, oxm=(B, 22), nxm=(N0, 16), fmt="ipv4", prereq="arp")
_f("arp_tpa", "nw_dst", 32, oxm=(B, 23), nxm=(N0, 17), fmt="ipv4", prereq="arp")
_f("arp_sha", "arp_sha", 48, oxm=(B, 24), nxm=(N1, 17), fmt="mac", prereq="arp")
_f("arp_tha", "arp_tha", 48, oxm=(B, 25), nxm=(N1, 18), fmt="mac", prereq="arp")
# L4
_f("tp_src", "tp_src", 16, prereq="tp")       # ovs-ofctl generic name
_f("tp_dst", "tp_dst", 16, prereq="tp")
_f("tcp_src", "tp_src", 16, oxm=(B, 13), nxm=(N0, 9), prereq="tcp")
_f("tcp_dst", "tp_dst", 16, oxm=(B, 14), nxm=(N0, 10), prereq="tcp")
_f("udp_src", "tp_src", 16, oxm=(B, 15), nxm=(N0, 11), prereq="udp")
_f("udp_dst", "tp_dst", 16, oxm=(B, 16), nxm=(N0, 12), prereq="udp")
_f("sctp_src", "tp_src", 16, oxm=(B, 17), prereq="sctp")
_f("sctp_dst", "tp_dst", 16, oxm=(B, 18), prereq="sctp")
_f("tcp_flags", "tcp_flags", 12, oxm=(B, 42), nxm=(N1, 34), wire_bytes=2, fmt="tcp_flags",
   prereq="tcp", writable=False)
_f("icmp_type", "tp_src", 8, maskable=False, oxm=(B, 19), nxm=(N0, 13), prereq="icmp",
   aliases=("icmpv4_type",))
_f("icmp_code", "tp_dst", 8, maskable=False, oxm=(B, 20), nxm=(N0, 14), prereq="icmp",
   aliases=("icmpv4_code",))
_f("icmpv6_type", "tp_src", 8, maskable=False, oxm=(B, 29), nxm=(N1, 21), prereq="icmpv6")
_f("icmpv6_code", "tp_dst", 8, maskable=False, oxm=(B, 30), nxm=(N1, 22), prereq="icmpv6")
_f("nd_target", "nd_target", 128, oxm=(B, 31), nxm=(N1, 23), fmt="ipv6", prereq="nd",
   aliases=("ipv6_nd_target",))
_f("nd_sll", "arp_sha", 48, oxm=(B, 32), nxm=(N1, 24), fmt="mac", prereq="nd_solicit",
   aliases=("ipv6_nd_sll",))
_f("nd_tll", "arp_tha", 48, oxm=(B, 33), nxm=(N1, 25), fmt="mac", prereq="nd_advert",
   aliases=("ipv6_nd_tll",))
del _f, _i

#: Every field by canonical name and by alias.
FIELDS: dict[str, Field] = {}
for _fd in _F:
    for _n in (_fd.name, *_fd.aliases):
        assert _n not in FIELDS, _n
        FIELDS[_n] = _fd
#: (oxm_class, oxm_field) -> Field, for both OXM and NXM ids.
BY_OXM: dict[tuple[int, int], Field] = {}
for _fd in _F:
    for _id in (_fd.oxm, _fd.nxm):
        if _id is not None:
            BY_OXM[_id] = _fd
del _fd, _n, _id

# Prerequisites, as in meta-flow.h MFP_*: a field may be matched only when
# the match pins one of these alternatives; each alternative is a tuple of
# (field name, value, mask) that must all be matched exactly.
_ET = "eth_type"
_V4, _V6 = (_ET, 0x0800, 0xffff), (_ET, 0x86dd, 0xffff)
PREREQS: dict[str, tuple[tuple[tuple[str, int, int], ...], ...]] = {
    "vlan": (((("vlan_tci", VLAN_CFI, VLAN_CFI)),),),
    "arp": (((_ET, 0x0806, 0xffff),), ((_ET, 0x8035, 0xffff),)),
    "ipv4": ((_V4,),),
    "ipv6": ((_V6,),),
    "ip_any": ((_V4,), (_V6,)),
    "mpls": (((_ET, 0x8847, 0xffff),), ((_ET, 0x8848, 0xffff),)),
    "pbb": (((_ET, 0x88e7, 0xffff),),),
    "tcp": tuple((v, ("nw_proto", 6, 0xff)) for v in (_V4, _V6)),
    "udp": tuple((v, ("nw_proto", 17, 0xff)) for v in (_V4, _V6)),
    "sctp": tuple((v, ("nw_proto", 132, 0xff)) for v in (_V4, _V6)),
    "tp": tuple((v, ("nw_proto", p, 0xff)) for v in (_V4, _V6) for p in (6, 17, 132)),
    "icmp": ((_V4, ("nw_proto", 1, 0xff)),),
    "icmpv6": ((_V6, ("nw_proto", 58, 0xff)),),
    "nd": tuple((_V6, ("nw_proto", 58, 0xff), ("icmpv6_type", t, 0xff)) for t in (135, 136)),
    "nd_solicit": ((_V6, ("nw_proto", 58, 0xff), ("icmpv6_type", 135, 0xff)),),
    "nd_advert": ((_V6, ("nw_proto", 58, 0xff), ("icmpv6_type", 136, 0xff)),),
}

# ovs-ofctl protocol shorthands (``ip``, ``tcp6`` ...) -> field settings.
PROTOCOLS: dict[str, tuple[tuple[str, int], ...]] = {
    "eth": (), "ip": ((_ET, 0x0800),), "ipv6": ((_ET, 0x86dd),),
    "icmp": ((_ET, 0x0800), ("nw_proto", 1)), "icmp6": ((_ET, 0x86dd), ("nw_proto", 58)),
    "tcp": ((_ET, 0x0800), ("nw_proto", 6)), "tcp6": ((_ET, 0x86dd), ("nw_proto", 6)),
    "udp": ((_ET, 0x0800), ("nw_proto", 17)), "udp6": ((_ET, 0x86dd), ("nw_proto", 17)),
    "sctp": ((_ET, 0x0800), ("nw_proto", 132)), "sctp6": ((_ET, 0x86dd), ("nw_proto", 132)),
    "arp": ((_ET, 0x0806),), "rarp": ((_ET, 0x8035),),
    "mpls": ((_ET, 0x8847),), "mplsm": ((_ET, 0x8848),),
}


def member_get(key: bytes, member: str) -> int:
    """Read a whole member of a packed key as a big-endian integer."""
    o, s = MEMBERS[member]
    return int.from_bytes(key[o:o + s], "big")


def field_int_mask(f: Field) -> int:
    """The field's bits as a mask over the whole key read as one big-endian int."""
    return f.int_mask


def field_shift(f: Field) -> int:
    """Left shift that places a field value in the whole-key integer."""
    return f.shift


def member_int_mask(member: str) -> int:
    o, s = MEMBERS[member]
    return ((1 << (8 * s)) - 1) << ((FLOW_KEY_SIZE - o - s) * 8)


# --- values as text (ovs-ofctl syntax) ---------------------------------------

def format_value(f: Field, v: int) -> str:
    """Render a field value the way ovs-ofctl prints it."""
    if f.fmt == "mac":
        return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))
    if f.fmt == "ipv4":
        return ".".join(str(b) for b in v.to_bytes(4, "big"))
    if f.fmt == "ipv6":
        import ipaddress
        return str(ipaddress.IPv6Address(v))
    if f.fmt == "hex":
        return hex(v)
    if f.fmt == "port":
        return PORT_NAMES.get(v, str(v))
    return str(v)


def parse_value(f: Field, s: str) -> int:
    """Parse one ovs-ofctl field value (no mask) into an integer."""
    s = s.strip()
    if f.fmt == "mac":
        parts = s.split(":")
        if len(parts) != 6:
            raise ValueError(f"{f.name}: bad MAC {s!r}")
        return int.from_bytes(bytes(int(p, 16) for p in parts), "big")
    if f.fmt == "ipv4" and "." in s:
        parts = [int(p) for p in s.split(".")]
        if len(parts) != 4 or any(not 0 <= p <= 255 for p in parts):
            raise ValueError(f"{f.name}: bad IPv4 address {s!r}")
        return int.from_bytes(bytes(parts), "big")
    if f.fmt == "ipv6" and ":" in s:
        import ipaddress
        return int(ipaddress.IPv6Address(s))
    if f.fmt == "port" and s.upper() in PORT_NUMBERS:
        return PORT_NUMBERS[s.upper()]
    v = int(s, 0)
    if not 0 <= v <= f.max:
        raise ValueError(f"{f.name}: value {s!r} out of range")
    return v


# Reserved OpenFlow 1.3 port numbers (32-bit), names as ovs-ofctl prints them.
OFPP_MAX = 0xffffff00
OFPP_IN_PORT = 0xfffffff8
OFPP_TABLE = 0xfffffff9
OFPP_NORMAL = 0xfffffffa
OFPP_FLOOD = 0xfffffffb
OFPP_ALL = 0xfffffffc
OFPP_CONTROLLER = 0xfffffffd
OFPP_LOCAL = 0xfffffffe
OFPP_ANY = 0xffffffff
PORT_NUMBERS = {"IN_PORT": OFPP_IN_PORT, "TABLE": OFPP_TABLE, "NORMAL": OFPP_NORMAL,
                "FLOOD": OFPP_FLOOD, "ALL": OFPP_ALL, "CONTROLLER": OFPP_CONTROLLER,
                "LOCAL": OFPP_LOCAL, "ANY": OFPP_ANY, "NONE": OFPP_ANY}
PORT_NAMES = {v: k for k, v in PORT_NUMBERS.items() if k != "NONE"}
