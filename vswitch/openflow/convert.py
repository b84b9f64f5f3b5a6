"""os-ken objects <-> slow-path objects, in one place.

This is the only module that touches both worlds: handlers give it decoded
os-ken matches/actions/instructions and get slow-path `Match`, action and
instruction values back (and the reverse for stats replies and packet-ins).
Matches travel through the raw TLV form `(oxm num, value bytes, mask bytes)`
that os-ken parses for OXM (OF1.2+) and NXM (OF1.0 Nicira) alike, so both
flavours land on the same field names (OXM/ovs-ofctl spelling, `_nxm` suffix
dropped) with integer values.  OF1.0's fixed `ofp_match` and 16-bit port
numbers are translated here too.

Unsupported things raise `OFError` with the code OpenFlow wants
(BAD_ACTION/BAD_TYPE, BAD_INSTRUCTION/UNKNOWN_INST, BAD_MATCH/BAD_FIELD).
"""
from __future__ import annotations

import contextvars
import struct

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from . import codec, sp
from .sp import OFError

ALL32 = 0xFFFFFFFF
OFPP_CONTROLLER = of13.OFPP_CONTROLLER
OFPP_TABLE = of13.OFPP_TABLE
OFPP_ANY = of13.OFPP_ANY


# ---------------------------------------------------------------- port numbers
def port_from10(p: int) -> int:
    return p + 0xFFFF0000 if p >= 0xFF00 else p


def port_to10(p: int) -> int:
    return p - 0xFFFF0000 if p >= 0xFFFFFF00 else p & 0xFFFF


# ---------------------------------------------------------------------- matches
from slowpath import fields as _sf  # noqa: E402  (field table shared with the slow path)
from slowpath import stack as _stack  # noqa: E402  (push/pop: OVN's loopback table)

_NXM0 = _sf.OFPXMC_NXM_0


def _int(b):
    return None if b is None else int.from_bytes(b, "big")


def make_match(fields: dict):
    """{field name: (value, mask|None)} -> slow-path Match (prerequisites checked)."""
    return sp.Match.from_fields(fields)


def match_items(match) -> dict:
    """Slow-path Match -> {canonical field name: (value, mask|None)}, one field per bit."""
    return {f.name: (v, m) for f, v, m in _match_fields(match, nxm=False)}


def _tun_align(name, raw: bytes, v: int, m):
    """GENEVE option data sits left-aligned in the slow path's 64-bit slot.
    The option's length comes from the bridge's TLV map (clients that do not
    know the map send shorter, right-aligned values); without a mapping the
    wire length is the option length."""
    idx = int(name[12:])
    length = TLV_MAP.get().get(idx, (0, 0, len(raw)))[2]
    if len(raw) > 8 or length > 8:
        raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_LEN)
    value_bits = (1 << 8 * length) - 1
    if v > value_bits or (m is not None and m > value_bits):
        raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_VALUE)
    shift = 8 * (8 - length)
    return v << shift, (value_bits if m is None else m) << shift


def match_from_tlvs(tlvs) -> "sp.Match":
    """OXM/NXM TLVs [(os-ken num, value bytes, mask bytes|None)] -> Match."""
    fields = {}
    for num, value, mask in tlvs:
        if not isinstance(num, int):
            raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_FIELD)
        cls, fld = num >> 7, num & 0x7F
        f = _wire_field(num)
        if f is None:
            raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_FIELD)
        v, m = _int(value), _int(mask)
        if f.name == "in_port" and cls == _NXM0:
            v = port_from10(v)
        if f.name.startswith("tun_metadata"):
            v, m = _tun_align(f.name, value, v, m)
        if f.name in fields:
            raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_DUP_FIELD)
        if m is not None and v & ~m:
            raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_WILDCARDS)
        fields[f.name] = (v, m)
    return make_match(fields)


NXM_NX_COOKIE = (1 << 7) | 30   # shares its number with mpls_ttl; told apart by length


def split_nxm_cookie(tlvs):
    """NXM matches in flow mods/stats requests may carry the cookie pseudo-field."""
    cookie = cookie_mask = 0
    rest = []
    for num, value, mask in tlvs:
        if num == NXM_NX_COOKIE and len(value) == 8:
            cookie = _int(value)
            cookie_mask = 0xFFFFFFFFFFFFFFFF if mask is None else _int(mask)
        else:
            rest.append((num, value, mask))
    return rest, cookie & cookie_mask, cookie_mask


_PI_FIELDS = (["in_port", "metadata", "tun_id", "tun_src", "tun_dst", "tun_ipv6_src",
               "tun_ipv6_dst", "tun_flags", "pkt_mark", "ct_state", "ct_zone", "ct_mark",
               "ct_label"] + [f"reg{i}" for i in range(16)]
              + [f"tun_metadata{i}" for i in range(8)])


def packet_in_match(key):
    """The OXM match of a PACKET_IN: in_port plus the pipeline metadata that is set."""
    k = int(key)
    fields = {}
    for name in _PI_FIELDS:
        f = _sf.FIELDS[name]
        v = (k >> _sf.field_shift(f)) & f.max
        if v or name == "in_port":
            fields[name] = (v, None)
    return sp.Match.from_fields(fields)


def match_from_ofp13(match) -> "sp.Match":
    """An os-ken OXM match -> Match.  One parsed off the wire carries its
    TLVs (``codec.parse_match13``); one built in Python is encoded first."""
    tlvs = getattr(match, "wire_tlvs", None)
    if tlvs is None:
        buf = bytearray()
        match.serialize(buf, 0)
        tlvs = codec.parse_oxm_fields(bytes(buf), 4, match.length)
    return match_from_tlvs(tlvs)


_UNIQUE_FIELDS = list({id(f): f for f in _sf.FIELDS.values()}.values())
_ORDER = sorted(_UNIQUE_FIELDS, key=lambda f: (f.n_bits, _UNIQUE_FIELDS.index(f)))


def _match_fields(match, nxm: bool):
    """Greedy cover of the match's bits by wire-encodable fields, narrowest
    first (reg0 over xreg0, vlan_pcp+vlan_vid over vlan_tci), respecting
    prerequisites (tcp_src only under tcp)."""
    rest = match.mask
    out = []
    for f in _ORDER:
        if f.oxm is None and f.nxm is None:
            continue
        if f.prereq and not match.prereq_ok(f.prereq):
            continue
        sh = _sf.field_shift(f)
        fm = (rest >> sh) & f.valid_mask
        if not fm:
            continue
        v = (match.value >> sh) & f.max
        out.append((f, v, None if fm == f.valid_mask else fm))
        rest &= ~(fm << sh)
    return out


def _wire_width(f) -> int:
    return f.wire_bytes or (f.n_bits + 7) // 8


def match_to_tlvs(match, nxm: bool = False) -> list:
    out = []
    for f, v, m in sorted(_match_fields(match, nxm), key=lambda x: _UNIQUE_FIELDS.index(x[0])):
        code = _code(f, oxm_first=not nxm)
        width = _wire_width(f)
        if nxm and f.name == "in_port":
            v, width = port_to10(v), 2
        if f.name.startswith("tun_metadata"):
            # option width from the bridge's TLV map, else the mask's significant bytes
            mm = f.max if m is None else m
            trailing = (((mm & -mm).bit_length() - 1) // 8) if mm else 0
            if int(f.name[12:]) in TLV_MAP.get():
                trailing = tun_shift(f.name) // 8
            width = 8 - trailing
            v >>= 8 * trailing
            m = None if m is None or (m >> 8 * trailing) == (1 << 8 * width) - 1 \
                else m >> 8 * trailing
        num = (code[0] << 7) | code[1]
        out.append((num, v.to_bytes(width, "big"),
                    None if m is None else m.to_bytes(width, "big")))
    return out


def match_to_ofp13(match) -> p13.OFPMatch:
    body = codec.serialize_oxm_fields(match_to_tlvs(match))
    length = 4 + len(body)
    buf = struct.pack("!HH", of13.OFPMT_OXM, length) + bytes(body) + b"\0" * (-length % 8)
    return p13.OFPMatch.parser(buf, 0)


# OF1.0 ofp_match <-> fields
def match_from_ofp10(m) -> "sp.Match":
    w = m.wildcards
    f = {}
    if not w & of10.OFPFW_IN_PORT:
        f["in_port"] = (port_from10(m.in_port), None)
    if not w & of10.OFPFW_DL_SRC:
        f["eth_src"] = (_int(_mac(m.dl_src)), None)
    if not w & of10.OFPFW_DL_DST:
        f["eth_dst"] = (_int(_mac(m.dl_dst)), None)
    if not w & of10.OFPFW_DL_VLAN:
        f["vlan_vid"] = (0, None) if m.dl_vlan == 0xFFFF else (0x1000 | m.dl_vlan, None)
    if not w & of10.OFPFW_DL_VLAN_PCP:
        f["vlan_pcp"] = (m.dl_vlan_pcp, None)
    if not w & of10.OFPFW_DL_TYPE:
        f["eth_type"] = (m.dl_type, None)
    if not w & of10.OFPFW_NW_TOS:
        f["ip_dscp"] = (m.nw_tos >> 2, None)
    if not w & of10.OFPFW_NW_PROTO:
        f["ip_proto"] = (m.nw_proto, None)
    for key, shift, val in (("ipv4_src", of10.OFPFW_NW_SRC_SHIFT, m.nw_src),
                            ("ipv4_dst", of10.OFPFW_NW_DST_SHIFT, m.nw_dst)):
        bits = (w >> shift) & 0x3F
        if bits < 32:
            mask = (ALL32 << bits) & ALL32
            f[key] = (val & mask, None if bits == 0 else mask)
    proto = f.get("ip_proto", (None,))[0]
    l4 = {6: ("tcp_src", "tcp_dst"), 17: ("udp_src", "udp_dst"),
          1: ("icmpv4_type", "icmpv4_code"), 132: ("sctp_src", "sctp_dst")}.get(proto)
    if l4:
        if not w & of10.OFPFW_TP_SRC:
            f[l4[0]] = (m.tp_src, None)
        if not w & of10.OFPFW_TP_DST:
            f[l4[1]] = (m.tp_dst, None)
    return make_match(f)


def _mac(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    from os_ken.lib import addrconv
    return addrconv.mac.text_to_bin(v)


def match_to_ofp10(match) -> p10.OFPMatch:
    f = match_items(match)
    w = of10.OFPFW_ALL
    kw = {}

    def take(name, bit, key, conv=lambda x: x):
        nonlocal w
        if name in f:
            w &= ~bit
            kw[key] = conv(f[name][0])
    take("in_port", of10.OFPFW_IN_PORT, "in_port", port_to10)
    take("eth_src", of10.OFPFW_DL_SRC, "dl_src", lambda v: v.to_bytes(6, "big"))
    take("eth_dst", of10.OFPFW_DL_DST, "dl_dst", lambda v: v.to_bytes(6, "big"))
    take("vlan_vid", of10.OFPFW_DL_VLAN, "dl_vlan", lambda v: v & 0xFFF if v else 0xFFFF)
    take("vlan_pcp", of10.OFPFW_DL_VLAN_PCP, "dl_vlan_pcp")
    take("eth_type", of10.OFPFW_DL_TYPE, "dl_type")
    take("ip_dscp", of10.OFPFW_NW_TOS, "nw_tos", lambda v: v << 2)
    take("nw_proto", of10.OFPFW_NW_PROTO, "nw_proto")
    take("arp_op", of10.OFPFW_NW_PROTO, "nw_proto")
    for name in ("tcp_src", "udp_src", "icmp_type", "sctp_src"):
        take(name, of10.OFPFW_TP_SRC, "tp_src")
    for name in ("tcp_dst", "udp_dst", "icmp_code", "sctp_dst"):
        take(name, of10.OFPFW_TP_DST, "tp_dst")
    for name, shift, key in (("ip_src", of10.OFPFW_NW_SRC_SHIFT, "nw_src"),
                             ("ip_dst", of10.OFPFW_NW_DST_SHIFT, "nw_dst"),
                             ("arp_spa", of10.OFPFW_NW_SRC_SHIFT, "nw_src"),
                             ("arp_tpa", of10.OFPFW_NW_DST_SHIFT, "nw_dst")):
        if name in f:
            v, m = f[name]
            bits = 0 if m is None else 32 - bin(m).count("1")
            w = (w & ~(0x3F << shift)) | (bits << shift)
            kw[key] = v
    return p10.OFPMatch(wildcards=w, **kw)


# ---------------------------------------------------------------------- actions
def _bad_action(code=of13.OFPBAC_BAD_TYPE):
    return OFError(of13.OFPET_BAD_ACTION, code)


def _canon(name: str) -> str:
    """os-ken field spelling (reg0, eth_dst_nxm, tunnel_id, field_<num> for
    fields os-ken does not know, like tun_metadataN) -> slow-path name."""
    if name.endswith("_nxm"):
        name = name[:-4]
    f = _sf.FIELDS.get(name)
    if f is None and name.startswith("field_") and name[6:].isdigit():
        f = _wire_field(int(name[6:]))
    if f is None:
        raise _bad_action(of13.OFPBAC_BAD_SET_TYPE)
    return f.name


#: The bridge's GENEVE option map by slow-path slot {slot: (class, type, len)}
#: for the message being converted (set by the handlers): tun_metadataN bit
#: offsets on the wire count from the end of an option `len` bytes long, the
#: slow path's slot is 8 bytes with the option left-aligned.
TLV_MAP: contextvars.ContextVar = contextvars.ContextVar("tlv_map", default={})
#: {OpenFlow index N of tun_metadataN: slow-path slot}: OpenFlow names 64
#: option fields, the flow key holds 8 (slowpath/fields.py); the TLV map
#: gives each mapped index a slot.  An unmapped index below 8 whose slot is
#: free keeps it (as before any map).
TLV_SLOTS: contextvars.ContextVar = contextvars.ContextVar("tlv_slots", default={})
_TUN_MD = 40                  # NXM_NX_TUN_METADATA0's field number (class 1)
_TUN_MD_SLOTS = 8


def tun_slot(index: int) -> int | None:
    slots = TLV_SLOTS.get()
    if index in slots:
        return slots[index]
    if index < _TUN_MD_SLOTS and index not in slots.values():
        return index
    return None


def _wire_field(num: int):
    """The slow-path field an OXM/NXM number (class << 7 | field) names."""
    cls, fld = num >> 7, num & 0x7F
    if cls == 1 and _TUN_MD <= fld < _TUN_MD + 64:
        slot = tun_slot(fld - _TUN_MD)
        return None if slot is None else _sf.FIELDS[f"tun_metadata{slot}"]
    return _sf.BY_OXM.get((cls, fld))


def _code(f, oxm_first: bool = False) -> tuple[int, int]:
    """(class, field) that names slow-path field ``f`` on the wire."""
    if f.name.startswith("tun_metadata"):
        slot = int(f.name[12:])
        return 1, _TUN_MD + next((i for i, s in TLV_SLOTS.get().items() if s == slot), slot)
    return (f.oxm or f.nxm) if oxm_first else (f.nxm or f.oxm)


def tun_shift(field: str) -> int:
    if not field.startswith("tun_metadata"):
        return 0
    length = TLV_MAP.get().get(int(field[12:]), (0, 0, 8))[2]
    return 8 * (8 - length)


def _set_from_oxm(num, v, m):
    f = _wire_field(num) if isinstance(num, int) else None
    if f is None:
        raise _bad_action(of13.OFPBAC_BAD_SET_TYPE)
    value, mask = _int(v), _int(m)
    if f.name.startswith("tun_metadata"):
        value, mask = _tun_align(f.name, v, value, mask)
    if f.name == "in_port" and num >> 7 == _NXM0 and mask is None:
        value = port_from10(value)   # NXM_OF_IN_PORT is 16 bits: ANY is 0xffff (OVN sets it)
    return sp.SetField(f.name, value, mask)


def _field_by_num(num: int) -> str:
    f = _wire_field(num)
    if f is None:
        raise _bad_action(of13.OFPBAC_BAD_SET_TYPE)
    return f.name


_CT_ALGS = {21: "ftp", 69: "tftp"}


def action_from_oken(a, version: int):
    """One os-ken action -> one slow-path action."""
    n = type(a).__name__
    if n == "OFPActionOutput":
        port = port_from10(a.port) if version == codec.OFP10 else a.port
        if port == OFPP_CONTROLLER:
            return sp.Controller(max_len=a.max_len)
        return sp.Output(port)   # max_len only means something towards the controller
    if n == "OFPActionSetField":
        try:
            num, v, m = of13.oxm_from_user(a.key, a.value)
        except Exception:
            raise _bad_action(of13.OFPBAC_BAD_SET_TYPE) from None
        return _set_from_oxm(num, v, m)
    if n == "OFPActionPushVlan":
        return sp.PushVlan(a.ethertype)
    if n in ("OFPActionPopVlan", "OFPActionStripVlan"):
        return sp.PopVlan()
    if n == "OFPActionPushMpls":
        return sp.PushMpls(a.ethertype)
    if n == "OFPActionPopMpls":
        return sp.PopMpls(a.ethertype)
    if n == "OFPActionSetMplsTtl":
        return sp.SetMplsTtl(a.mpls_ttl)
    if n == "OFPActionDecMplsTtl":
        return sp.DecMplsTtl()
    if n == "OFPActionSetNwTtl":
        return sp.SetNwTtl(a.nw_ttl)
    if n == "OFPActionCopyTtlOut":
        return sp.CopyTtl(outward=True)
    if n == "OFPActionCopyTtlIn":
        return sp.CopyTtl(outward=False)
    if n == "OFPActionMeter":           # OF1.5: meter is an action (OVN's QoS rate limit)
        return sp.Meter(a.meter_id)
    if n == "OFPActionGroup":
        return sp.Group(a.group_id)
    if n == "OFPActionSetQueue":
        return sp.SetQueue(a.queue_id)
    if n in ("OFPActionDecNwTtl", "NXActionDecTtl"):
        return sp.DecTtl()
    if n == "NXActionDecTtlCntIds":      # OVN's ip.ttl-- is dec_ttl(0)
        return sp.DecTtl(controller_ids=tuple(a.cnt_ids))
    # OF1.0 set actions
    if n == "OFPActionVlanVid":
        return sp.SetField("vlan_vid", 0x1000 | a.vlan_vid)
    if n == "OFPActionVlanPcp":
        return sp.SetField("vlan_pcp", a.vlan_pcp)
    if n in ("OFPActionSetDlSrc", "OFPActionSetDlDst"):
        return sp.SetField("eth_src" if n.endswith("Src") else "eth_dst", _int(_mac(a.dl_addr)))
    if n in ("OFPActionSetNwSrc", "OFPActionSetNwDst"):
        return sp.SetField("ip_src" if n.endswith("Src") else "ip_dst", a.nw_addr)
    if n == "OFPActionSetNwTos":
        return sp.SetField("ip_dscp", a.tos >> 2)
    if n in ("OFPActionSetTpSrc", "OFPActionSetTpDst"):
        return sp.SetField("tp_src" if n.endswith("Src") else "tp_dst", a.tp)
    if n == "OFPActionEnqueue":
        return sp.SetQueue(a.queue_id)
    # Nicira
    if n == "NXActionResubmit":
        return sp.Resubmit(in_port=port_from10(a.in_port), table=None)
    if n == "NXActionResubmitTable":
        return sp.Resubmit(in_port=port_from10(a.in_port),
                           table=None if a.table_id == 0xFF else a.table_id)
    if n == "NXActionCT":
        if a.zone_src:
            # the slow path takes the zone from the field's low 16 bits
            ofs, nbits = a.zone_ofs_nbits >> 6, (a.zone_ofs_nbits & 0x3F) + 1
            if ofs != 0 or nbits != 16:
                raise _bad_action(of13.OFPBAC_BAD_ARGUMENT)
            zone_src, zone = _canon(a.zone_src), 0
        else:
            zone_src, zone = None, a.zone_ofs_nbits
        nat = None
        execs = []
        for x in a.actions:
            if type(x).__name__ == "NXActionNAT":
                nat = _nat_text(x)
            else:
                execs.append(action_from_oken(x, version))
        return sp.Ct(commit=bool(a.flags & nicira_ext.NX_CT_F_COMMIT), zone=zone,
                     zone_src=zone_src, table=None if a.recirc_table == 0xFF else a.recirc_table,
                     nat=nat, exec=tuple(execs), alg=_CT_ALGS.get(a.alg),
                     force=bool(a.flags & getattr(nicira_ext, "NX_CT_F_FORCE", 2)))
    if n == "NXActionCTClear":
        return sp.CtClear()
    if n == "NXActionRegLoad":
        dst = _canon(a.dst)
        ofs, nbits = (a.ofs_nbits >> 6) + tun_shift(dst), (a.ofs_nbits & 0x3F) + 1
        mask = ((1 << nbits) - 1) << ofs
        return sp.SetField(dst, a.value << ofs, mask)
    if n == "NXActionRegLoad2":
        num, v, m = of13.oxm_from_user(a.dst, a.value if a.mask is None else (a.value, a.mask))
        return _set_from_oxm(num, v, m)
    if n == "NXActionRegMove":
        src, dst = _canon(a.src_field), _canon(a.dst_field)
        return sp.Move(src=src, dst=dst, n_bits=a.n_bits, src_ofs=a.src_ofs + tun_shift(src),
                       dst_ofs=a.dst_ofs + tun_shift(dst))
    if hasattr(a, "clone_actions"):
        return sp.Clone(tuple(action_from_oken(x, version) for x in a.clone_actions))
    if hasattr(a, "learn"):
        return _learn_from_wire(a.learn)
    if hasattr(a, "controller2"):
        return sp.Controller(**a.controller2)
    if hasattr(a, "check_pkt_larger"):
        pkt_len, ofs, num = a.check_pkt_larger
        field = _field_by_num(num)
        return sp.CheckPktLarger(pkt_len, field, ofs + tun_shift(field))
    if n in ("NXActionStackPush", "NXActionStackPop"):
        # os-ken names the offset/width "start"/"end"
        field = _canon(a.field)
        cls = _stack.StackPush if n.endswith("Push") else _stack.StackPop
        return cls(field, a.start + tun_shift(field), a.end)
    if n == "NXActionOutputReg":
        ofs, nbits = a.ofs_nbits >> 6, (a.ofs_nbits & 0x3F) + 1
        return sp.OutputReg(field=_canon(a.src), ofs=ofs, n_bits=nbits, max_len=a.max_len)
    if n == "CopyField":
        src, dst = _field_by_num(a.src_num), _field_by_num(a.dst_num)
        return sp.Move(src=src, dst=dst, n_bits=a.n_bits,
                       src_ofs=a.src_offset + tun_shift(src),
                       dst_ofs=a.dst_offset + tun_shift(dst))
    if n == "NXActionConjunction":
        return sp.Conjunction(a.id, a.clause, a.n_clauses)
    if n == "NXActionNote":
        return sp.Note(bytes(a.note))
    if n == "NXActionController":
        return sp.Controller(max_len=a.max_len, reason=a.reason, controller_id=a.controller_id)
    if n == "NXActionController2":
        return sp.Controller(max_len=getattr(a, "max_len", 0xFFFF),
                             reason=getattr(a, "reason", of13.OFPR_ACTION),
                             controller_id=getattr(a, "controller_id", 0),
                             userdata=bytes(getattr(a, "userdata", b"") or b""),
                             pause=bool(getattr(a, "pause", False)))
    raise _bad_action()


# nx_nat flags (OVS include/openvswitch/ofp-actions.h); os-ken does not define them
NX_NAT_F_SRC, NX_NAT_F_DST, NX_NAT_F_PERSISTENT = 1 << 0, 1 << 1, 1 << 2
NX_NAT_F_PROTO_HASH, NX_NAT_F_PROTO_RANDOM = 1 << 3, 1 << 4


def _nat_text(x) -> str:
    """NXActionNAT -> the ovs-ofctl ``nat(...)`` body the slow path parses."""
    parts = []
    kind = "src" if x.flags & NX_NAT_F_SRC else "dst" if x.flags & NX_NAT_F_DST else None
    if kind:
        rng = ""
        lo = getattr(x, "range_ipv4_min", "") or getattr(x, "range_ipv6_min", "")
        hi = getattr(x, "range_ipv4_max", "") or getattr(x, "range_ipv6_max", "")
        if lo:
            rng = f"={lo}" + (f"-{hi}" if hi and hi != lo else "")
            if getattr(x, "range_proto_min", None) and ":" in lo:   # IPv6: [lo]-[hi]:ports
                rng = f"=[{lo}]" + (f"-[{hi}]" if hi and hi != lo else "")
            if getattr(x, "range_proto_min", None):
                rng += f":{x.range_proto_min}"
                if x.range_proto_max and x.range_proto_max != x.range_proto_min:
                    rng += f"-{x.range_proto_max}"
        parts.append(kind + rng)
    for flag, word in ((NX_NAT_F_PERSISTENT, "persistent"), (NX_NAT_F_PROTO_HASH, "hash"),
                       (NX_NAT_F_PROTO_RANDOM, "random")):
        if x.flags & flag:
            parts.append(word)
    return ",".join(parts)


def _nat_to_oken(P, text: str):
    """The ovs-ofctl nat(...) body (as _nat_text writes it) -> NXActionNAT."""
    from . import nx
    flags, kw = 0, {}
    for part in filter(None, text.split(",")):
        word, _, rng = part.partition("=")
        if word in ("src", "dst"):
            flags |= nx.NX_NAT_F_SRC if word == "src" else nx.NX_NAT_F_DST
            if rng:
                if rng.startswith("["):       # IPv6 with ports: [lo]-[hi]:ports
                    close = rng.rfind("]")
                    addrs, ports = rng[:close + 1].replace("[", "").replace("]", ""), \
                        rng[close + 1:].lstrip(":")
                else:
                    addrs, _, ports = (rng.rpartition(":") if rng.count(":") == 1
                                       else (rng, "", ""))
                lo, _, hi = addrs.partition("-")
                fam = "ipv6" if ":" in lo else "ipv4"
                kw[f"range_{fam}_min"] = lo
                if hi:
                    kw[f"range_{fam}_max"] = hi
                if ports:
                    plo, _, phi = ports.partition("-")
                    kw["range_proto_min"] = int(plo)
                    if phi:
                        kw["range_proto_max"] = int(phi)
        else:
            flags |= {"persistent": nx.NX_NAT_F_PERSISTENT, "hash": nx.NX_NAT_F_PROTO_HASH,
                      "random": nx.NX_NAT_F_PROTO_RANDOM}.get(word, 0)
    return P.NXActionNAT(flags, **kw)


def _nx_port(p):
    return port_to10(p)


_LEARN_FLAGS = {1: "send_flow_rem", 2: "delete_learned"}   # NX_LEARN_F_*


def _learn_from_wire(w) -> "sp.Learn":
    specs = []
    for kind, n_bits, src, src_ofs, value, dst, dst_ofs in w.specs:
        src_name = None if src is None else _field_by_num(src >> 9)
        dst_name = "" if dst is None else _field_by_num(dst >> 9)
        specs.append(sp.LearnSpec(kind, dst_name, n_bits,
                                  (dst_ofs or 0) + tun_shift(dst_name), src_name,
                                  (src_ofs or 0) + (tun_shift(src_name) if src_name else 0),
                                  value))
    flags = frozenset(n for bit, n in _LEARN_FLAGS.items() if w.flags & bit)
    return sp.Learn(table_id=w.table_id, priority=w.priority, idle_timeout=w.idle_timeout,
                    hard_timeout=w.hard_timeout, cookie=w.cookie, flags=flags,
                    specs=tuple(specs))


def _learn_header(name: str) -> int:
    f = _sf.FIELDS[name]
    return 0x00000002 if f.name == "in_port" else _nx_header(f)   # NXM_OF_IN_PORT


def _learn_to_wire(a, version: int):
    specs = []
    for s in a.specs:
        src = None if s.src is None else _learn_header(s.src)
        dst = None if s.kind == "output" else _learn_header(s.dst)
        specs.append((s.kind, s.n_bits, src,
                      None if s.src is None else s.src_ofs - tun_shift(s.src),
                      None if s.src is not None else (s.value or 0), dst,
                      None if dst is None else s.dst_ofs - tun_shift(s.dst)))
    flags = sum(bit for bit, n in _LEARN_FLAGS.items() if n in a.flags)
    return codec.learn(codec.LearnWire(a.idle_timeout, a.hard_timeout, a.priority, a.cookie,
                                       flags, a.table_id, 0, 0, specs), version)


def actions_from_oken(actions, version: int) -> tuple:
    return tuple(action_from_oken(a, version) for a in actions)


def _nxm_name(field: str, ofp=of13) -> str:
    """slow-path field name -> a name `ofp`'s os-ken field table can encode."""
    f = _sf.FIELDS[field]
    for alias in (field, f.name, *f.aliases):
        for cand in (alias + "_nxm", alias):
            try:
                ofp.oxm_get_field_info_by_name(cand)
                return cand
            except KeyError:
                pass
    code = _code(f)
    if code is not None and code[0] in (0, 1):       # NXM field os-ken has no name for
        return f"field_{(code[0] << 7) | code[1]}"
    raise _bad_action(of13.OFPBAC_BAD_SET_TYPE)


def _header_len(f) -> int:
    # OVS writes variable-length tun_metadata headers with their maximum size
    return 124 if f.name.startswith("tun_metadata") else _wire_width(f)


def _nx_header(f) -> int:
    cls, fld = _code(f)
    return (cls << 16) | (fld << 9) | _header_len(f)


def _set_field_wire(f, a, version):
    """set_field/load for fields os-ken cannot spell, and masked set_field in 1.5."""
    shift = tun_shift(f.name)
    width = 8 - shift // 8 if shift or f.name.startswith("tun_metadata") else _wire_width(f)
    value = a.value >> shift
    mask = None if a.mask is None else a.mask >> shift
    if mask == (1 << 8 * width) - 1:
        mask = None
    if version == codec.OFP10 or (version < codec.OFP15 and mask is not None):
        m = (1 << 8 * width) - 1 if mask is None else mask
        ofs = (m & -m).bit_length() - 1
        return codec.nx_reg_load(_nx_header(f), ofs, m.bit_length() - ofs, (value & m) >> ofs,
                                 version)
    cls, fld = _code(f, oxm_first=version >= codec.OFP13)
    return codec.set_field_raw((cls << 7) | fld, value.to_bytes(width, "big"),
                               None if mask is None else mask.to_bytes(width, "big"), version)


def _set_field10(P, a):
    """OF1.0 has native actions for the classic header fields."""
    if a.mask is not None:
        return None
    v = a.value
    if a.field == "vlan_vid":
        return P.OFPActionVlanVid(v & 0xFFF) if v & 0x1000 else P.OFPActionStripVlan()
    if a.field == "vlan_pcp":
        return P.OFPActionVlanPcp(v)
    if a.field in ("eth_src", "eth_dst"):
        cls = P.OFPActionSetDlSrc if a.field == "eth_src" else P.OFPActionSetDlDst
        return cls(v.to_bytes(6, "big"))
    if a.field in ("ip_src", "ip_dst"):
        return (P.OFPActionSetNwSrc if a.field == "ip_src" else P.OFPActionSetNwDst)(v)
    if a.field == "ip_dscp":
        return P.OFPActionSetNwTos(v << 2)
    if a.field in ("tp_src", "tp_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst"):
        return (P.OFPActionSetTpSrc if a.field.endswith("src") else P.OFPActionSetTpDst)(v)
    return None


def action_to_oken(a, version: int):
    """One slow-path action -> os-ken action for `version` (stats replies)."""
    P = codec.datapath(version).ofproto_parser
    is10 = version == codec.OFP10
    n = type(a).__name__
    if n == "Output":
        return P.OFPActionOutput(port_to10(a.port) if is10 else a.port, a.max_len)
    if n == "Controller":
        if getattr(a, "meter_id", None) is not None:
            return codec.controller2(a.max_len, a.controller_id, a.reason, a.userdata, a.pause,
                                     a.meter_id, version)
        if a.userdata or a.pause or a.controller_id or a.reason != of13.OFPR_ACTION:
            kw = dict(max_len=a.max_len, controller_id=a.controller_id, reason=a.reason)
            if a.userdata:
                kw["userdata"] = list(a.userdata)
            if a.pause:
                kw["pause"] = True
            return P.NXActionController2(**kw)
        return P.OFPActionOutput(of10.OFPP_CONTROLLER if is10 else OFPP_CONTROLLER, a.max_len)
    if n == "SetField":
        f = _sf.FIELDS[a.field]
        if is10 and (native := _set_field10(P, a)) is not None:
            return native
        if f.name == "in_port" and not is10 and a.mask is None:
            # as OVS writes it: NXM_OF_IN_PORT (16 bits); it rejects OXM in_port=ANY
            return codec.set_field_raw(0, port_to10(a.value).to_bytes(2, "big"), None, version)
        if f.name.startswith("tun_metadata") or version >= codec.OFP15:
            return _set_field_wire(f, a, version)   # OVS takes no NX load in 1.5
        if is10 or a.mask is not None or f.oxm is None:
            value, ofs, nbits = a.value, 0, f.n_bits
            if a.mask is not None:
                ofs = (a.mask & -a.mask).bit_length() - 1
                nbits = a.mask.bit_length() - ofs
                value = a.value >> ofs
                ofs -= tun_shift(a.field)
            return P.NXActionRegLoad(ofs_nbits=(ofs << 6) | (nbits - 1),
                                     dst=_nxm_name(a.field, of10 if is10 else of13), value=value)
        num = (f.oxm[0] << 7) | f.oxm[1]
        _, user = of13.oxm_to_user(num, a.value.to_bytes(_wire_width(f), "big"), None)
        return P.OFPActionSetField(**{of13.oxm_to_user_header(num): user})
    if n == "PushVlan":
        return P.OFPActionPushVlan(a.ethertype)
    if n == "PopVlan":
        return P.OFPActionStripVlan() if is10 else P.OFPActionPopVlan()
    if n == "PushMpls":
        return P.OFPActionPushMpls(a.ethertype)
    if n == "PopMpls":
        return P.OFPActionPopMpls(a.ethertype)
    if n == "SetMplsTtl":
        return P.OFPActionSetMplsTtl(a.ttl)
    if n == "DecMplsTtl":
        return P.OFPActionDecMplsTtl()
    if n == "SetNwTtl":
        return P.OFPActionSetNwTtl(a.ttl)
    if n == "CopyTtl":
        return P.OFPActionCopyTtlOut() if a.outward else P.OFPActionCopyTtlIn()
    if n == "Meter" and version >= codec.OFP15:
        return P.OFPActionMeter(a.meter_id)
    if n == "Group":
        return P.OFPActionGroup(a.group_id)
    if n == "SetQueue":
        return P.OFPActionEnqueue(0, a.queue_id) if is10 else P.OFPActionSetQueue(a.queue_id)
    if n == "DecTtl":
        if a.controller_ids:
            return P.NXActionDecTtlCntIds(cnt_ids=list(a.controller_ids))
        return P.NXActionDecTtl() if is10 else P.OFPActionDecNwTtl()
    if n == "Resubmit":
        return P.NXActionResubmitTable(in_port=port_to10(a.in_port),
                                       table_id=0xFF if a.table is None else a.table)
    if n == "Ct":
        flags = nicira_ext.NX_CT_F_COMMIT if a.commit else 0
        zone_src, zone = "", a.zone
        if a.zone_src:
            zone_src, zone = _nxm_name(a.zone_src, of10 if is10 else of13), 15   # bits 0..15
        inner = [action_to_oken(x, version) for x in a.exec]
        if a.nat is not None:
            inner.insert(0, _nat_to_oken(P, a.nat))
        if getattr(a, "force", False):
            flags |= getattr(nicira_ext, "NX_CT_F_FORCE", 2)
        return P.NXActionCT(flags=flags, zone_src=zone_src, zone_ofs_nbits=zone,
                            recirc_table=0xFF if a.table is None else a.table,
                            alg={v: k for k, v in _CT_ALGS.items()}.get(a.alg, 0),
                            actions=inner)
    if n == "CtClear":
        return P.NXActionCTClear()
    if n == "Clone":
        return codec.Clone([action_to_oken(x, version) for x in a.actions], version)
    if n in ("StackPush", "StackPop"):
        f = _sf.FIELDS[a.field]
        header = 0x00000002 if f.name == "in_port" else _nx_header(f)   # NXM_OF_IN_PORT
        n_bits = 16 if f.name == "in_port" else (a.n_bits or f.max.bit_length())
        return codec._RawAction(struct.pack("!HHIHHIH6x", 0xFFFF, 24, codec.NX,
                                            27 if n == "StackPush" else 28,
                                            a.ofs - tun_shift(a.field), header, n_bits), version)
    if n == "Learn":
        return _learn_to_wire(a, version)
    if n == "OutputReg":
        return P.NXActionOutputReg(ofs_nbits=(a.ofs << 6) | (a.n_bits - 1),
                                   src=_nxm_name(a.field, of10 if is10 else of13),
                                   max_len=a.max_len)
    if n == "Move":
        sf_, df_ = _sf.FIELDS[a.src], _sf.FIELDS[a.dst]
        src_ofs, dst_ofs = a.src_ofs - tun_shift(a.src), a.dst_ofs - tun_shift(a.dst)
        if version >= codec.OFP15:       # OVS takes only the standard copy_field in 1.5
            (sc, sfld), (dc, dfld) = _code(sf_, oxm_first=True), _code(df_, oxm_first=True)
            return codec.CopyField(a.n_bits, src_ofs, dst_ofs, (sc << 7) | sfld,
                                   (dc << 7) | dfld, _header_len(sf_), _header_len(df_))
        return codec.nx_reg_move(_nx_header(sf_), _nx_header(df_), a.n_bits, src_ofs, dst_ofs,
                                 version)
    if n == "CheckPktLarger":
        f = _sf.FIELDS[a.field]
        return codec.check_pkt_larger(a.pkt_len, a.ofs - tun_shift(a.field), _nx_header(f),
                                      version)
    if n == "Conjunction":
        return P.NXActionConjunction(clause=a.clause, n_clauses=a.n_clauses, id_=a.id)
    if n == "Note":
        return P.NXActionNote(note=list(a.data))
    raise _bad_action()


# ------------------------------------------------------------------ instructions
def instructions_from_oken(insts, version: int) -> tuple:
    out = []
    for i in insts:
        n = type(i).__name__
        if n == "OFPInstructionActions":
            acts = actions_from_oken(i.actions, version)
            if i.type == of13.OFPIT_APPLY_ACTIONS:
                out.append(sp.ApplyActions(acts))
            elif i.type == of13.OFPIT_WRITE_ACTIONS:
                out.append(sp.WriteActions(acts))
            else:
                out.append(sp.ClearActions())
        elif n == "OFPInstructionGotoTable":
            out.append(sp.GotoTable(i.table_id))
        elif n == "OFPInstructionWriteMetadata":
            out.append(sp.WriteMetadata(i.metadata, i.metadata_mask))
        elif n == "OFPInstructionMeter":
            out.append(sp.Meter(i.meter_id))
        else:
            raise OFError(of13.OFPET_BAD_INSTRUCTION, of13.OFPBIC_UNKNOWN_INST)
    return tuple(out)


def instructions_to_oken(insts, version: int) -> list:
    P = codec.datapath(version).ofproto_parser
    out = []
    for i in insts:
        n = type(i).__name__
        if n == "ApplyActions":
            out.append(P.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS,
                                               report_actions(i.actions, version)))
        elif n == "WriteActions":
            out.append(P.OFPInstructionActions(of13.OFPIT_WRITE_ACTIONS,
                                               report_actions(i.actions, version)))
        elif n == "ClearActions":
            out.append(P.OFPInstructionActions(of13.OFPIT_CLEAR_ACTIONS, []))
        elif n == "GotoTable":
            out.append(P.OFPInstructionGotoTable(i.table_id))
        elif n == "WriteMetadata":
            out.append(P.OFPInstructionWriteMetadata(i.metadata, i.mask))
        elif n == "Meter":
            out.append(P.OFPInstructionMeter(i.meter_id))
    return out


def report_actions(actions, version) -> list:
    """Actions for a stats reply.  A rule must stay visible even if one of its
    actions has no encoding in this version: that action becomes a note
    `pyvswitch:<Name>` instead of failing the whole dump."""
    out = []
    for i, a in enumerate(actions):
        if version == codec.OFP10 and type(a).__name__ == "PushVlan" and any(
                type(b).__name__ == "SetField" and b.field == "vlan_vid" for b in actions[i:]):
            continue    # OF1.0's set_vlan_vid pushes a tag when there is none
        try:
            out.append(action_to_oken(a, version))
        except Exception:    # noqa: BLE001 - reporting only
            P = codec.datapath(version).ofproto_parser
            out.append(P.NXActionNote(note=list(b"pyvswitch:" + type(a).__name__.encode())))
    return out


def instructions_to_actions10(insts, version=codec.OFP10) -> list:
    """OF1.0 has only an action list: flatten apply-actions (+ goto as resubmit)."""
    out = []
    for i in insts:
        n = type(i).__name__
        if n in ("ApplyActions", "WriteActions"):
            out.extend(report_actions(i.actions, version))
        elif n == "GotoTable":
            out.append(action_to_oken(sp.Resubmit(table=i.table_id), version))
    return out


# ------------------------------------------------- flow/group/meter mod words
FLOW_COMMANDS = {of13.OFPFC_ADD: "add", of13.OFPFC_MODIFY: "modify",
                 of13.OFPFC_MODIFY_STRICT: "modify_strict", of13.OFPFC_DELETE: "delete",
                 of13.OFPFC_DELETE_STRICT: "delete_strict"}
FLOW_FLAGS = {of13.OFPFF_SEND_FLOW_REM: "send_flow_rem", of13.OFPFF_CHECK_OVERLAP: "check_overlap",
              of13.OFPFF_RESET_COUNTS: "reset_counts", of13.OFPFF_NO_PKT_COUNTS: "no_pkt_counts",
              of13.OFPFF_NO_BYT_COUNTS: "no_byt_counts"}
GROUP_COMMANDS = {of13.OFPGC_ADD: "add", of13.OFPGC_MODIFY: "modify", of13.OFPGC_DELETE: "delete"}
GROUP_TYPES = {of13.OFPGT_ALL: "all", of13.OFPGT_SELECT: "select",
               of13.OFPGT_INDIRECT: "indirect", of13.OFPGT_FF: "ff"}
METER_COMMANDS = {of13.OFPMC_ADD: "add", of13.OFPMC_MODIFY: "modify", of13.OFPMC_DELETE: "delete"}
METER_FLAGS = {of13.OFPMF_KBPS: "kbps", of13.OFPMF_PKTPS: "pktps", of13.OFPMF_BURST: "burst",
               of13.OFPMF_STATS: "stats"}
BAND_TYPES = {of13.OFPMBT_DROP: "drop", of13.OFPMBT_DSCP_REMARK: "dscp_remark"}


def _word(table, value, err):
    w = table.get(value)
    if w is None:
        raise err
    return w


def _bits_to_words(table, bits, err) -> frozenset:
    out = set()
    for bit, word in table.items():
        if bits & bit:
            out.add(word)
            bits &= ~bit
    if bits:
        raise err
    return frozenset(out)


def words_to_bits(table, words) -> int:
    if isinstance(words, int):
        return words
    rev = {w: b for b, w in table.items()}
    return sum(rev.get(w, 0) for w in words)


def _inverse(table):
    return {w: v for v, w in table.items()}


def _bucket_from_oken(b, version):
    if version < codec.OFP15:
        return sp.Bucket(actions=actions_from_oken(b.actions, version), weight=b.weight,
                         watch_port=b.watch_port, watch_group=b.watch_group)
    from os_ken.ofproto import ofproto_v1_5 as of15
    weight, watch_port, watch_group = 0, OFPP_ANY, OFPP_ANY
    for p in b.properties or ():
        if p.type == of15.OFPGBPT_WEIGHT:
            weight = p.weight
        elif p.type == of15.OFPGBPT_WATCH_PORT:
            watch_port = p.watch
        elif p.type == of15.OFPGBPT_WATCH_GROUP:
            watch_group = p.watch
    return sp.Bucket(actions=actions_from_oken(b.actions, version), weight=weight,
                     watch_port=watch_port, watch_group=watch_group)


def bucket_to_oken(P, bucket_id, b, version):
    acts = [action_to_oken(a, version) for a in b.actions]
    if version < codec.OFP15:
        return P.OFPBucket(b.weight, b.watch_port, b.watch_group, acts)
    from os_ken.ofproto import ofproto_v1_5 as of15
    props = []
    if b.weight:
        props.append(P.OFPGroupBucketPropWeight(type_=of15.OFPGBPT_WEIGHT, weight=b.weight))
    if b.watch_port != OFPP_ANY:
        props.append(P.OFPGroupBucketPropWatch(type_=of15.OFPGBPT_WATCH_PORT, watch=b.watch_port))
    if b.watch_group != OFPP_ANY:
        props.append(P.OFPGroupBucketPropWatch(type_=of15.OFPGBPT_WATCH_GROUP,
                                               watch=b.watch_group))
    return P.OFPBucket(bucket_id, acts, props)


def group_mod_from_oken(msg, version: int):
    if msg.command not in GROUP_COMMANDS:   # 1.5 insert/remove bucket
        raise OFError(of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_BAD_COMMAND)
    buckets = tuple(_bucket_from_oken(b, version) for b in msg.buckets)
    return sp.GroupMod(
        command=_word(GROUP_COMMANDS, msg.command,
                      OFError(of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_BAD_COMMAND)),
        type=_word(GROUP_TYPES, msg.type,
                   OFError(of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_BAD_TYPE)),
        group_id=msg.group_id, buckets=buckets)


def meter_mod_from_oken(msg):
    bands = []
    for b in msg.bands:
        bands.append(sp.MeterBand(
            type=_word(BAND_TYPES, b.type, OFError(of13.OFPET_METER_MOD_FAILED,
                                                   of13.OFPMMFC_BAD_BAND)),
            rate=b.rate, burst_size=b.burst_size, prec_level=getattr(b, "prec_level", 0)))
    return sp.MeterMod(
        command=_word(METER_COMMANDS, msg.command,
                      OFError(of13.OFPET_METER_MOD_FAILED, of13.OFPMMFC_BAD_COMMAND)),
        meter_id=msg.meter_id,
        flags=_bits_to_words(METER_FLAGS, msg.flags,
                             OFError(of13.OFPET_METER_MOD_FAILED, of13.OFPMMFC_BAD_FLAGS)),
        bands=tuple(bands))


def band_to_oken(P, b):
    if b.type == "drop":
        return P.OFPMeterBandDrop(b.rate, b.burst_size)
    return P.OFPMeterBandDscpRemark(b.rate, b.burst_size, b.prec_level)


# ------------------------------------------------------------------ flow mods
def _flow_command(cmd):
    return _word(FLOW_COMMANDS, cmd, OFError(of13.OFPET_FLOW_MOD_FAILED, of13.OFPFMFC_BAD_COMMAND))


def _flow_flags(bits, version):
    if version == codec.OFP10:
        if bits & of10.OFPFF_EMERG:
            raise OFError(of13.OFPET_FLOW_MOD_FAILED, of13.OFPFMFC_BAD_FLAGS)
        bits &= of10.OFPFF_SEND_FLOW_REM | of10.OFPFF_CHECK_OVERLAP
    return _bits_to_words(FLOW_FLAGS, bits,
                          OFError(of13.OFPET_FLOW_MOD_FAILED, of13.OFPFMFC_BAD_FLAGS))


def flow_mod_from_oken(msg) -> "sp.FlowMod":
    """OF1.3 OFPFlowMod, OF1.0 OFPFlowMod or NXTFlowMod -> slow-path FlowMod."""
    n = type(msg).__name__
    version = msg.version or msg.datapath.ofproto.OFP_VERSION
    if version >= codec.OFP13 and n == "OFPFlowMod":
        return sp.FlowMod(command=_flow_command(msg.command), table_id=msg.table_id,
                          priority=msg.priority, match=match_from_ofp13(msg.match),
                          cookie=msg.cookie, cookie_mask=msg.cookie_mask,
                          idle_timeout=msg.idle_timeout, hard_timeout=msg.hard_timeout,
                          flags=_flow_flags(msg.flags, version), out_port=msg.out_port,
                          out_group=msg.out_group,
                          instructions=instructions_from_oken(msg.instructions, version),
                          importance=getattr(msg, "importance", 0))
    # OF1.0: command's high byte is the table id when NXT_FLOW_MOD_TABLE_ID is on
    cookie, cookie_mask = msg.cookie, 0
    if n == "NXTFlowMod":
        tlvs, nx_cookie, nx_mask = split_nxm_cookie(msg.nxm)
        match = match_from_tlvs(tlvs)
        if nx_mask and (msg.command & 0xFF) != of13.OFPFC_ADD:
            cookie, cookie_mask = nx_cookie, nx_mask
    else:
        match = match_from_ofp10(msg.match)
    command = _flow_command(msg.command & 0xFF)
    table_id = msg.command >> 8 if getattr(msg, "table_id_enabled", False) else 0xFF
    if not command.startswith("delete") and table_id == 0xFF:
        table_id = 0
    acts = actions_from_oken(msg.actions, codec.OFP10)
    return sp.FlowMod(command=command, table_id=table_id, priority=msg.priority, match=match,
                      cookie=cookie, cookie_mask=cookie_mask, idle_timeout=msg.idle_timeout,
                      hard_timeout=msg.hard_timeout, flags=_flow_flags(msg.flags, codec.OFP10),
                      out_port=port_from10(msg.out_port), out_group=OFPP_ANY,
                      instructions=(sp.ApplyActions(acts),) if acts else (),
                      importance=0)
