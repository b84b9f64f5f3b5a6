"""Switch-side OpenFlow wire codec on top of os-ken.

os-ken is a *controller* codec: it serializes what a controller sends and
parses what a switch sends.  A switch needs the opposite direction for most
messages (parse FEATURES_REQUEST, PACKET_OUT, MULTIPART_REQUEST...; serialize
FEATURES_REPLY, PACKET_IN, multipart replies...).  This module fills that gap
without inventing wire formats: every struct layout comes from os-ken's
`ofproto_v1_x` / `nicira_ext` PACK_STR constants, matches/actions/instructions
use os-ken's own `parser`/`serialize`, and messages are os-ken message objects
both ways, so handlers never see bytes and tests can check our encodings by
parsing them back with os-ken.

`parse(buf)` turns one complete message into an os-ken object or raises
`OFError` (OF1.3 numbering) for the channel to answer; `serialize(msg)` returns
bytes.  Versions: OpenFlow 1.0 (+ Nicira NXM extensions) and 1.3 (+ ONF bundle
and Nicira experimenter messages).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from os_ken.lib import addrconv
from os_ken.ofproto import nicira_ext, nx_match, ofproto_common, ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13
from os_ken.ofproto import ofproto_v1_5 as _of15
from os_ken.ofproto import ofproto_v1_5_parser as _p15

from . import nx
from .sp import OFError

OFP10 = 0x01
OFP13 = 0x04
OFP14 = 0x05
OFP15 = 0x06
SUPPORTED_VERSIONS = frozenset({OFP10, OFP13, OFP14, OFP15})
HEADER_PACK_STR = ofproto_common.OFP_HEADER_PACK_STR
HEADER_SIZE = ofproto_common.OFP_HEADER_SIZE
MAX_MESSAGE = 0xFFFF
NX = ofproto_common.NX_EXPERIMENTER_ID
ONF = ofproto_common.ONF_EXPERIMENTER_ID

# OF1.3 error numbering (what OFError carries)
ET_HELLO_FAILED = of13.OFPET_HELLO_FAILED
ET_BAD_REQUEST = of13.OFPET_BAD_REQUEST
BRC_BAD_VERSION = of13.OFPBRC_BAD_VERSION
BRC_BAD_TYPE = of13.OFPBRC_BAD_TYPE
BRC_BAD_MULTIPART = of13.OFPBRC_BAD_MULTIPART
BRC_BAD_EXPERIMENTER = of13.OFPBRC_BAD_EXPERIMENTER
BRC_BAD_EXP_TYPE = of13.OFPBRC_BAD_EXP_TYPE
BRC_BAD_LEN = of13.OFPBRC_BAD_LEN

_DPS: dict = {}


def datapath(version: int) -> ofproto_protocol.ProtocolDesc:
    """os-ken's per-version (ofproto, ofproto_parser) holder."""
    dp = _DPS.get(version)
    if dp is None:
        dp = _DPS[version] = ofproto_protocol.ProtocolDesc(version)
    return dp


def parse_header(buf) -> tuple:
    return struct.unpack_from(HEADER_PACK_STR, buf, 0)


# ===================================================================== parse
_PARSERS: dict = {}


def _parser(version, msg_type):
    def register(fn):
        _PARSERS[(version, msg_type)] = fn
        return fn
    return register


def _finish(msg, version, msg_type, msg_len, xid, buf):
    msg.version, msg.msg_type, msg.msg_len, msg.xid = version, msg_type, msg_len, xid
    msg.buf = bytes(buf)
    return msg


# ------------------------------------------------------ stride-safe list parsing
# os-ken's parsers walk length-prefixed lists with `offset += item.len`, where
# item.len is sometimes the class's fixed size rather than the length on the
# wire; a list whose declared lengths disagree (or an unknown item, or a 0
# length) makes them loop forever - found by tests/unit/openflow/test_fuzz.py.
# So every list is walked here by its *declared* lengths and each item is
# handed to os-ken alone; nested lists (ct(...) actions) are walked first.
NXAST_CT = 35
NX_ACTION_CT_SIZE = 24


def _bad_action_len():
    return OFError(of13.OFPET_BAD_ACTION, of13.OFPBAC_BAD_LEN)


def _parse_actions(parser_mod, buf, offset, end, depth=0):
    if depth > 4:
        raise _bad_action_len()
    actions = []
    while offset < end:
        if end - offset < 8:
            raise _bad_action_len()
        a_type, a_len = struct.unpack_from("!HH", buf, offset)
        if a_len < 8 or a_len % 8 or offset + a_len > end:
            raise _bad_action_len()
        if a_type == 0xFFFF and a_len >= 16:
            vendor, subtype = struct.unpack_from("!IH", buf, offset + 4)
            if vendor == NX and subtype == NXAST_CHECK_PKT_LARGER:   # nor this
                actions.append(_check_pkt_larger(bytes(buf[offset:offset + a_len]),
                                                 _version_of(parser_mod)))
                offset += a_len
                continue
            if vendor == NX and subtype == NXAST_CONTROLLER2:   # os-ken lacks meter_id
                actions.append(_controller2(bytes(buf[offset:offset + a_len]),
                                            _version_of(parser_mod)))
                offset += a_len
                continue
            if vendor == NX and subtype == NXAST_LEARN:   # os-ken's parser can loop forever
                actions.append(_learn(bytes(buf[offset:offset + a_len]), _version_of(parser_mod)))
                offset += a_len
                continue
            if vendor == NX and subtype == NXAST_CLONE:   # os-ken has no clone
                inner = _parse_actions(parser_mod, buf, offset + NX_ACTION_CLONE_SIZE,
                                       offset + a_len, depth + 1)
                actions.append(Clone(inner, _version_of(parser_mod)))
                offset += a_len
                continue
            if vendor == NX and subtype == NXAST_CT:
                if a_len < NX_ACTION_CT_SIZE:
                    raise _bad_action_len()
                inner = _parse_actions(parser_mod, buf, offset + NX_ACTION_CT_SIZE,
                                       offset + a_len, depth + 1)
                # os-ken would parse the nested actions with its own parsers,
                # which fail on OF1.5 copy_field (OVN's ct(exec(move:...->
                # ct_label))); give it the bare ct, then our parse of them.
                head = bytearray(buf[offset:offset + NX_ACTION_CT_SIZE])
                struct.pack_into("!H", head, 2, NX_ACTION_CT_SIZE)
                try:
                    a = parser_mod.OFPAction.parser(bytes(head), 0)
                except Exception:
                    raise OFError(of13.OFPET_BAD_ACTION, of13.OFPBAC_BAD_TYPE) from None
                a.actions, a.len = inner, a_len
                actions.append(a)
                offset += a_len
                continue
        one = bytes(buf[offset:offset + a_len])
        if a_type == OFPAT15_COPY_FIELD and getattr(parser_mod, "OFPActionCopyField", None):
            actions.append(_copy_field15(one))   # os-ken's parser reads past the action
            offset += a_len
            continue
        try:
            a = parser_mod.OFPAction.parser(one, 0)
        except OFError:
            raise
        except Exception:
            raise OFError(of13.OFPET_BAD_ACTION, of13.OFPBAC_BAD_TYPE) from None
        if a is None or getattr(a, "len", a_len) != a_len:
            raise _bad_action_len()
        actions.append(a)
        offset += a_len
    return actions


OFPAT15_COPY_FIELD = 28
NXAST_CLONE = 42                 # include/openflow/nicira-ext.h: header + pad[6]
NX_ACTION_CLONE_SIZE = 16


NXAST_CHECK_PKT_LARGER = 49
NX_ACTION_CHECK_PKT_LARGER = "!HHIHHH"   # type, len (24), vendor, subtype, pkt_len, offset;
                                        # then the dst field's NXM/OXM header, zero padding


def _check_pkt_larger(one: bytes, version: int):
    if len(one) != 24:
        raise _bad_action_len()
    _, _, _, _, pkt_len, ofs = struct.unpack_from(NX_ACTION_CHECK_PKT_LARGER, one)
    (header,) = struct.unpack_from("!I", one, 14)
    if header >> 16 == 0xFFFF:          # experimenter OXM: no field of ours
        raise OFError(of13.OFPET_BAD_ACTION, of13.OFPBAC_BAD_SET_TYPE)
    raw = _RawAction(one, version)
    raw.check_pkt_larger = (pkt_len, ofs, header >> 9)
    return raw


NXAST_CONTROLLER2 = 37
# property types (OVS ofp-actions.c nx_action_controller2_prop_type)
NXAC2PT_MAX_LEN, NXAC2PT_CONTROLLER_ID, NXAC2PT_REASON = 0, 1, 2
NXAC2PT_USERDATA, NXAC2PT_PAUSE, NXAC2PT_METER_ID = 3, 4, 5


def _controller2(one: bytes, version: int):
    """NXAST_CONTROLLER2: header (16 bytes) then properties, each type,
    length (header included) and value, padded to 8 bytes."""
    c2 = {"max_len": 0xFFFF, "controller_id": 0, "reason": of13.OFPR_ACTION,
          "userdata": b"", "pause": False, "meter_id": None}
    i = 16
    while i + 4 <= len(one):
        ptype, plen = struct.unpack_from("!HH", one, i)
        if plen < 4 or i + plen > len(one):
            raise _bad_action_len()
        value = one[i + 4:i + plen]
        # OVS pads u8/u16 values to 4 bytes inside the property (length 8)
        if ptype == NXAC2PT_MAX_LEN and len(value) >= 2:
            c2["max_len"] = struct.unpack_from("!H", value)[0]
        elif ptype == NXAC2PT_CONTROLLER_ID and len(value) >= 2:
            c2["controller_id"] = struct.unpack_from("!H", value)[0]
        elif ptype == NXAC2PT_REASON and len(value) >= 1:
            c2["reason"] = value[0]
        elif ptype == NXAC2PT_USERDATA:
            c2["userdata"] = bytes(value)
        elif ptype == NXAC2PT_PAUSE and not value:
            c2["pause"] = True
        elif ptype == NXAC2PT_METER_ID and len(value) >= 4:
            c2["meter_id"] = struct.unpack_from("!I", value)[0]
        else:
            raise OFError(of13.OFPET_BAD_ACTION, of13.OFPBAC_BAD_ARGUMENT)
        i += (plen + 7) // 8 * 8
    raw = _RawAction(one, version)
    raw.controller2 = c2
    return raw


def controller2(max_len: int, controller_id: int, reason: int, userdata: bytes, pause: bool,
                meter_id, version=OFP13):
    """NXAST_CONTROLLER2 with the properties that differ from the defaults."""
    body = bytearray()

    def prop(ptype, value=b""):
        body.extend(struct.pack("!HH", ptype, 4 + len(value)) + value)
        body.extend(bytes(-len(body) % 8))
    if max_len != 0xFFFF:
        prop(NXAC2PT_MAX_LEN, struct.pack("!H2x", max_len))
    if controller_id:
        prop(NXAC2PT_CONTROLLER_ID, struct.pack("!H2x", controller_id))
    if reason != of13.OFPR_ACTION:
        prop(NXAC2PT_REASON, struct.pack("!B3x", reason))
    if userdata:
        prop(NXAC2PT_USERDATA, bytes(userdata))
    if pause:
        prop(NXAC2PT_PAUSE)
    if meter_id is not None:
        prop(NXAC2PT_METER_ID, struct.pack("!I", meter_id))
    data = struct.pack("!HHIH6x", 0xFFFF, 16 + len(body), NX, NXAST_CONTROLLER2) + bytes(body)
    return _controller2(data, version)


NXAST_LEARN = 16
NX_LEARN_HEAD = "!HHIHHHHQHBxHH"   # type, len, vendor, subtype, idle, hard, priority, cookie,
                                   # flags, table_id, pad, fin_idle, fin_hard (32 bytes)
NX_LEARN_SRC_IMMEDIATE = 1 << 13
NX_LEARN_DST_SHIFT = 11            # 0 match, 1 load, 2 output
LEARN_DST_KINDS = ("match", "load", "output")


@dataclass
class LearnWire:
    """NXAST_LEARN as on the wire; `specs` are (kind, n_bits, src_header or
    None, src_ofs, value or None, dst_header or None, dst_ofs), fields as raw
    NXM/OXM headers (convert.py names them)."""
    idle_timeout: int
    hard_timeout: int
    priority: int
    cookie: int
    flags: int
    table_id: int
    fin_idle_timeout: int
    fin_hard_timeout: int
    specs: list


def _learn_header(one: bytes, i: int) -> tuple[int, int]:
    (h,) = struct.unpack_from("!I", one, i)
    return h, (8 if h >> 16 == 0xFFFF else 4)   # experimenter OXM headers are 8 bytes


def _learn(one: bytes, version: int):
    size = struct.calcsize(NX_LEARN_HEAD)
    if len(one) < size:
        raise _bad_action_len()
    (_, _, _, _, idle, hard, prio, cookie, flags, table_id, fin_idle,
     fin_hard) = struct.unpack_from(NX_LEARN_HEAD, one)
    specs, i = [], size
    try:
        while i + 2 <= len(one):
            (h,) = struct.unpack_from("!H", one, i)
            i += 2
            if h == 0:
                break
            n_bits, dst_kind = h & 0x3FF, (h >> NX_LEARN_DST_SHIFT) & 3
            if dst_kind > 2 or h >> 14 or n_bits == 0:
                raise OFError(of13.OFPET_BAD_ACTION, of13.OFPBAC_BAD_ARGUMENT)
            src = src_ofs = value = dst = dst_ofs = None
            if h & NX_LEARN_SRC_IMMEDIATE:
                n = 2 * ((n_bits + 15) // 16)
                if i + n > len(one):
                    raise _bad_action_len()
                value = int.from_bytes(one[i:i + n], "big")
                i += n
            else:
                src, w = _learn_header(one, i)
                (src_ofs,) = struct.unpack_from("!H", one, i + w)
                i += w + 2
            if dst_kind < 2:
                dst, w = _learn_header(one, i)
                (dst_ofs,) = struct.unpack_from("!H", one, i + w)
                i += w + 2
            specs.append((LEARN_DST_KINDS[dst_kind], n_bits, src, src_ofs, value, dst, dst_ofs))
    except struct.error:
        raise _bad_action_len() from None
    raw = _RawAction(one, version)
    raw.learn = LearnWire(idle, hard, prio, cookie, flags, table_id, fin_idle, fin_hard, specs)
    return raw


def learn(w: LearnWire, version=OFP13):
    """NXAST_LEARN from a `LearnWire` (stats replies)."""
    body = bytearray()
    for kind, n_bits, src, src_ofs, value, dst, dst_ofs in w.specs:
        h = n_bits | (LEARN_DST_KINDS.index(kind) << NX_LEARN_DST_SHIFT)
        if src is None:
            body += struct.pack("!H", h | NX_LEARN_SRC_IMMEDIATE)
            body += value.to_bytes(2 * ((n_bits + 15) // 16), "big")
        else:
            body += struct.pack("!HIH", h, src, src_ofs)
        if kind != "output":
            body += struct.pack("!IH", dst, dst_ofs)
    head_len = struct.calcsize(NX_LEARN_HEAD)
    length = head_len + len(body)
    length += -length % 8
    data = struct.pack(NX_LEARN_HEAD, 0xFFFF, length, NX, NXAST_LEARN, w.idle_timeout,
                       w.hard_timeout, w.priority, w.cookie, w.flags, w.table_id,
                       w.fin_idle_timeout, w.fin_hard_timeout) + bytes(body)
    raw = _RawAction(data + bytes(length - len(data)), version)
    raw.learn = w
    return raw


def check_pkt_larger(pkt_len: int, ofs: int, dst_header: int, version=OFP13):
    """NXAST_CHECK_PKT_LARGER (os-ken has no class for it)."""
    raw = _RawAction(struct.pack(NX_ACTION_CHECK_PKT_LARGER, 0xFFFF, 24, NX,
                                 NXAST_CHECK_PKT_LARGER, pkt_len, ofs)
                     + struct.pack("!I", dst_header) + bytes(6), version)
    raw.check_pkt_larger = (pkt_len, ofs, dst_header >> 9)
    return raw


def _version_of(parser_mod) -> int:
    return {p10: OFP10, p13: OFP13, _p15: OFP15}.get(parser_mod, OFP14)




class CopyField(_p15.OFPActionCopyField):
    """OF1.5 copy_field (what OVS sends for `move` in 1.5), with the two
    fields as raw OXM/NXM headers: os-ken's own class reads past the action
    when parsing and cannot name fields it does not know (tun_metadataN)."""

    def __init__(self, n_bits, src_offset, dst_offset, src_num, dst_num, src_len=0,
                 dst_len=0):
        self.type, self.len = OFPAT15_COPY_FIELD, 0
        self.n_bits, self.src_offset, self.dst_offset = n_bits, src_offset, dst_offset
        self.src_num, self.dst_num, self.src_len, self.dst_len = src_num, dst_num, src_len, dst_len
        self.oxm_ids = []

    def serialize(self, buf, offset):
        body = struct.pack(_of15.OFP_ACTION_COPY_FIELD_PACK_STR, self.type, 0, self.n_bits,
                           self.src_offset, self.dst_offset)
        body += struct.pack("!II", self.src_num << 9 | self.src_len,
                            self.dst_num << 9 | self.dst_len)
        body += b"\0" * (-len(body) % 8)
        self.len = len(body)
        body = body[:2] + struct.pack("!H", self.len) + body[4:]
        if len(buf) < offset:
            buf += bytearray(offset - len(buf))
        buf[offset:offset + len(body)] = body


def _copy_field15(one: bytes) -> CopyField:
    from os_ken.ofproto import ofproto_v1_5 as of15
    size = of15.OFP_ACTION_COPY_FIELD_SIZE
    if len(one) < size + 8:
        raise _bad_action_len()
    _, _, n_bits, src_ofs, dst_ofs = struct.unpack_from(of15.OFP_ACTION_COPY_FIELD_PACK_STR,
                                                        one, 0)
    src, dst = struct.unpack_from("!II", one, size)
    if src >> 16 == 0xFFFF or dst >> 16 == 0xFFFF:       # experimenter OXM ids
        raise OFError(of13.OFPET_BAD_ACTION, of13.OFPBAC_BAD_SET_TYPE)
    return CopyField(n_bits, src_ofs, dst_ofs, src >> 9, dst >> 9, src & 0x7F, dst & 0x7F)


class _RawActionMixin:
    """An action whose bytes we lay out from os-ken's PACK_STRs because os-ken
    cannot name the fields involved (NXM headers of tun_metadataN etc.)."""

    def __init__(self, data: bytes):
        self.type, self.len, self.data = struct.unpack_from("!H", data)[0], len(data), data

    def serialize(self, buf, offset):
        if len(buf) < offset:
            buf += bytearray(offset - len(buf))
        buf[offset:offset + len(self.data)] = self.data


# os-ken's instruction classes check isinstance against their own version's OFPAction
_RAW = {v: type(f"RawAction{v}", (_RawActionMixin, mod.OFPAction), {})
        for v, mod in ((OFP10, p10), (OFP13, p13), (OFP14, __import__(
            "os_ken.ofproto.ofproto_v1_4_parser", fromlist=["x"])), (OFP15, _p15))}


def _RawAction(data: bytes, version: int = OFP13):
    return _RAW[version](data)


def Clone(actions, version=OFP13):
    """NXAST_CLONE: run `actions` on a copy of the packet (OVN uses it a lot)."""
    body = bytearray()
    for a in actions:
        _put_action(body, a)
    length = NX_ACTION_CLONE_SIZE + len(body)
    raw = _RawAction(struct.pack("!HHIH6x", 0xFFFF, length, NX, NXAST_CLONE) + bytes(body),
                     version)
    raw.clone_actions = list(actions)
    return raw


def nx_reg_load(dst_header: int, ofs: int, n_bits: int, value: int, version=OFP13):
    return _RawAction(struct.pack(nicira_ext.NX_ACTION_REG_LOAD_PACK_STR, 0xFFFF,
                                  nicira_ext.NX_ACTION_REG_LOAD_SIZE, NX,
                                  nicira_ext.NXAST_REG_LOAD, (ofs << 6) | (n_bits - 1),
                                  dst_header, value), version)


def nx_reg_move(src_header: int, dst_header: int, n_bits: int, src_ofs: int,
                dst_ofs: int, version=OFP13):
    return _RawAction(struct.pack(nicira_ext.NX_ACTION_REG_MOVE_PACK_STR, 0xFFFF,
                                  nicira_ext.NX_ACTION_REG_MOVE_SIZE, NX,
                                  nicira_ext.NXAST_REG_MOVE, n_bits, src_ofs, dst_ofs,
                                  src_header, dst_header), version)


def set_field_raw(num: int, value: bytes, mask, version=OFP13):
    tlv = serialize_oxm_fields([(num, value, mask)])
    body = struct.pack(of13.OFP_ACTION_SET_FIELD_PACK_STR, of13.OFPAT_SET_FIELD, 0)[:4] + tlv
    body += b"\0" * (-len(body) % 8)
    body = body[:2] + struct.pack("!H", len(body)) + body[4:]
    return _RawAction(body, version)


_FIXED_INSTRUCTIONS = {of13.OFPIT_GOTO_TABLE: of13.OFP_INSTRUCTION_GOTO_TABLE_SIZE,
                       of13.OFPIT_WRITE_METADATA: of13.OFP_INSTRUCTION_WRITE_METADATA_SIZE,
                       of13.OFPIT_METER: of13.OFP_INSTRUCTION_METER_SIZE}


def parse_instructions(parser_mod, buf, offset, end):
    out = []
    while offset < end:
        if end - offset < 8:
            raise OFError(of13.OFPET_BAD_INSTRUCTION, of13.OFPBIC_BAD_LEN)
        i_type, i_len = struct.unpack_from("!HH", buf, offset)
        if i_len < 8 or i_len % 8 or offset + i_len > end:
            raise OFError(of13.OFPET_BAD_INSTRUCTION, of13.OFPBIC_BAD_LEN)
        if i_type in (of13.OFPIT_WRITE_ACTIONS, of13.OFPIT_APPLY_ACTIONS,
                      of13.OFPIT_CLEAR_ACTIONS):
            acts = _parse_actions(parser_mod, buf, offset + of13.OFP_INSTRUCTION_ACTIONS_SIZE,
                                  offset + i_len)
            if i_type == of13.OFPIT_CLEAR_ACTIONS and acts:
                raise OFError(of13.OFPET_BAD_INSTRUCTION, of13.OFPBIC_BAD_LEN)
            out.append(parser_mod.OFPInstructionActions(i_type, acts))
        elif i_type in _FIXED_INSTRUCTIONS:
            if i_len != _FIXED_INSTRUCTIONS[i_type]:
                raise OFError(of13.OFPET_BAD_INSTRUCTION, of13.OFPBIC_BAD_LEN)
            out.append(parser_mod.OFPInstruction.parser(bytes(buf[offset:offset + i_len]), 0))
        else:
            raise OFError(of13.OFPET_BAD_INSTRUCTION, of13.OFPBIC_UNKNOWN_INST)
        offset += i_len
    return out


def parse_match13(parser_mod, buf, offset, msg_len):
    """An OXM ofp_match at `offset`; returns (match, offset after its padding)."""
    if msg_len < offset + 4:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
    m_type, m_len = struct.unpack_from("!HH", buf, offset)
    if m_type != of13.OFPMT_OXM:
        raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_TYPE)
    end = offset + (m_len + 7) // 8 * 8
    if m_len < 4 or end > msg_len:
        raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_LEN)
    tlvs = parse_oxm_fields(buf, offset + 4, offset + m_len)   # validates the TLV chain
    match = parser_mod.OFPMatch.parser(bytes(buf[offset:end]), 0)
    match.wire_tlvs = tlvs   # convert.match_from_ofp13 need not re-encode and re-parse
    return match, end


def _flow_mod13(dp, version, msg_type, msg_len, xid, buf):
    P, ofp = dp.ofproto_parser, dp.ofproto
    vals = _unpack(ofp.OFP_FLOW_MOD_PACK_STR0, buf)
    off = HEADER_SIZE + struct.calcsize(ofp.OFP_FLOW_MOD_PACK_STR0)
    match, off = parse_match13(P, buf, off, msg_len)
    insts = parse_instructions(P, buf, off, msg_len)
    names = ["cookie", "cookie_mask", "table_id", "command", "idle_timeout", "hard_timeout",
             "priority", "buffer_id", "out_port", "out_group", "flags"]
    if version >= OFP14:
        names.append("importance")
    kw = dict(zip(names, vals))
    return _finish(P.OFPFlowMod(dp, match=match, instructions=insts, **kw), version, msg_type,
                   msg_len, xid, buf)


def _flow_mod10(dp, version, msg_type, msg_len, xid, buf):
    if msg_len < of10.OFP_FLOW_MOD_SIZE:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
    match = p10.OFPMatch.parse(buf, HEADER_SIZE)
    (cookie, command, idle, hard, priority, buffer_id, out_port, flags) = _unpack(
        of10.OFP_FLOW_MOD_PACK_STR0, buf, HEADER_SIZE + of10.OFP_MATCH_SIZE)
    actions = _parse_actions(p10, buf, of10.OFP_FLOW_MOD_SIZE, msg_len)
    msg = p10.OFPFlowMod(dp, match, cookie, command, idle, hard, priority, buffer_id, out_port,
                         flags, actions)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


def parse(buf: bytes):
    """Parse one complete message (len(buf) == header length)."""
    version, msg_type, msg_len, xid = parse_header(buf)
    fn = _PARSERS.get((version, msg_type))
    if fn is None:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_TYPE)
    try:
        msg = fn(datapath(version), version, msg_type, msg_len, xid, bytes(buf))
    except OFError:
        raise
    except Exception as e:  # os-ken raises assorted errors on short input
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, repr(e)) from None
    if msg is None:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
    return msg


def _oken(cls):
    """Use os-ken's own parser for a class that has one."""
    def fn(dp, version, msg_type, msg_len, xid, buf):
        return cls.parser(dp, version, msg_type, msg_len, xid, buf)
    return fn


def _empty(cls):
    def fn(dp, version, msg_type, msg_len, xid, buf):
        return _finish(cls(dp), version, msg_type, msg_len, xid, buf)
    return fn


def _unpack(fmt, buf, offset=HEADER_SIZE):
    if len(buf) < offset + struct.calcsize(fmt):
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
    return struct.unpack_from(fmt, buf, offset)


def parse_oxm_fields(buf, offset, end, ofproto=of13):
    """TLVs (OXM or NXM, os-ken knows both) -> [(num, value bytes, mask bytes|None)]."""
    out = []
    while offset < end:
        if end - offset < 4:
            raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_LEN)
        try:
            num, value, mask, total = ofproto.oxm_parse(buf, offset)
        except Exception:
            raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_FIELD) from None
        if offset + total > end:
            raise OFError(of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_LEN)
        out.append((num, value, mask))
        offset += total
    return out


def serialize_oxm_fields(fields, ofproto=of13) -> bytearray:
    buf = bytearray()
    for num, value, mask in fields:
        ofproto.oxm_serialize(num, value, mask, buf, len(buf))
    return buf


# ---- OpenFlow 1.3 ----------------------------------------------------------
for _t, _c in ((of13.OFPT_ERROR, p13.OFPErrorMsg),
               (of13.OFPT_ECHO_REQUEST, p13.OFPEchoRequest),
               (of13.OFPT_ECHO_REPLY, p13.OFPEchoReply)):
    _PARSERS[(OFP13, _t)] = _oken(_c)
_PARSERS[(OFP13, of13.OFPT_FLOW_MOD)] = _flow_mod13
for _t, _c in ((of13.OFPT_HELLO, p13.OFPHello),
               (of13.OFPT_FEATURES_REQUEST, p13.OFPFeaturesRequest),
               (of13.OFPT_GET_CONFIG_REQUEST, p13.OFPGetConfigRequest),
               (of13.OFPT_BARRIER_REQUEST, p13.OFPBarrierRequest),
               (of13.OFPT_GET_ASYNC_REQUEST, p13.OFPGetAsyncRequest)):
    _PARSERS[(OFP13, _t)] = _empty(_c)
# OF1.0 hello/error/echo have the same layout as 1.3
for _t, _c in ((of10.OFPT_HELLO, p10.OFPHello), (of10.OFPT_ERROR, p10.OFPErrorMsg),
               (of10.OFPT_ECHO_REQUEST, p10.OFPEchoRequest),
               (of10.OFPT_ECHO_REPLY, p10.OFPEchoReply)):
    _PARSERS[(OFP10, _t)] = _oken(_c)
_PARSERS[(OFP10, of10.OFPT_FLOW_MOD)] = _flow_mod10
for _t, _c in ((of10.OFPT_FEATURES_REQUEST, p10.OFPFeaturesRequest),
               (of10.OFPT_GET_CONFIG_REQUEST, p10.OFPGetConfigRequest),
               (of10.OFPT_BARRIER_REQUEST, p10.OFPBarrierRequest)):
    _PARSERS[(OFP10, _t)] = _empty(_c)


def parse_hello_versions(buf) -> set | None:
    """Versions in a HELLO's bitmap element, or None if it carries none."""
    version, msg_type, msg_len, xid = parse_header(buf)
    if msg_len <= HEADER_SIZE:
        return None
    # walk the elements ourselves: os-ken's OFPHello.parser loops on a 0 length
    off, found = HEADER_SIZE, None
    while off + of13.OFP_HELLO_ELEM_HEADER_SIZE <= min(msg_len, len(buf)):
        etype, elen = struct.unpack_from(of13.OFP_HELLO_ELEM_HEADER_PACK_STR, buf, off)
        if elen < of13.OFP_HELLO_ELEM_HEADER_SIZE or off + elen > msg_len:
            return found
        if etype == of13.OFPHET_VERSIONBITMAP:
            found = set()
            for w in range((elen - 4) // 4):
                (bits,) = struct.unpack_from("!I", buf, off + 4 + 4 * w)
                found |= {32 * w + i for i in range(32) if bits >> i & 1}
            return found
        off += (elen + 7) // 8 * 8
    return found


@_parser(OFP13, of13.OFPT_SET_CONFIG)
def _p13_set_config(dp, version, msg_type, msg_len, xid, buf):
    flags, miss = _unpack(of13.OFP_SWITCH_CONFIG_PACK_STR, buf)
    return _finish(p13.OFPSetConfig(dp, flags, miss), version, msg_type, msg_len, xid, buf)


@_parser(OFP13, of13.OFPT_PACKET_OUT)
def _p13_packet_out(dp, version, msg_type, msg_len, xid, buf):
    buffer_id, in_port, actions_len = _unpack(of13.OFP_PACKET_OUT_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of13.OFP_PACKET_OUT_PACK_STR)
    if off + actions_len > msg_len:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
    actions = _parse_actions(p13, buf, off, off + actions_len)
    data = buf[off + actions_len:msg_len]
    msg = p13.OFPPacketOut(dp, buffer_id, in_port, actions, data)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_parser(OFP13, of13.OFPT_GROUP_MOD)
def _p13_group_mod(dp, version, msg_type, msg_len, xid, buf):
    command, type_, group_id = _unpack(of13.OFP_GROUP_MOD_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of13.OFP_GROUP_MOD_PACK_STR)
    buckets = []
    P = dp.ofproto_parser
    while off < msg_len:
        blen, weight, watch_port, watch_group = _unpack(of13.OFP_BUCKET_PACK_STR, buf, off)
        if blen < of13.OFP_BUCKET_SIZE or blen % 8 or off + blen > msg_len:
            raise OFError(of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_BAD_BUCKET)
        actions = _parse_actions(P, buf, off + of13.OFP_BUCKET_SIZE, off + blen)
        buckets.append(P.OFPBucket(weight, watch_port, watch_group, actions))
        off += blen
    msg = P.OFPGroupMod(dp, command, type_, group_id, buckets)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_parser(OFP13, of13.OFPT_PORT_MOD)
def _p13_port_mod(dp, version, msg_type, msg_len, xid, buf):
    port_no, hw_addr, config, mask, advertise = _unpack(of13.OFP_PORT_MOD_PACK_STR, buf)
    msg = p13.OFPPortMod(dp, port_no, addrconv.mac.bin_to_text(hw_addr), config, mask, advertise)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_parser(OFP13, of13.OFPT_TABLE_MOD)
def _p13_table_mod(dp, version, msg_type, msg_len, xid, buf):
    table_id, config = _unpack(of13.OFP_TABLE_MOD_PACK_STR, buf)
    return _finish(p13.OFPTableMod(dp, table_id, config), version, msg_type, msg_len, xid, buf)


@_parser(OFP13, of13.OFPT_METER_MOD)
def _p13_meter_mod(dp, version, msg_type, msg_len, xid, buf):
    command, flags, meter_id = _unpack(of13.OFP_METER_MOD_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of13.OFP_METER_MOD_PACK_STR)
    bands = []
    P = dp.ofproto_parser
    while off < msg_len:
        _, blen = _unpack("!HH", buf, off)
        if blen < 16 or blen % 8 or off + blen > msg_len:
            raise OFError(of13.OFPET_METER_MOD_FAILED, of13.OFPMMFC_BAD_BAND)
        try:
            band = P.OFPMeterBandHeader.parser(bytes(buf[off:off + blen]), 0)
        except Exception:
            raise OFError(of13.OFPET_METER_MOD_FAILED, of13.OFPMMFC_BAD_BAND) from None
        bands.append(band)
        off += blen
    msg = P.OFPMeterMod(dp, command, flags, meter_id, bands)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_parser(OFP13, of13.OFPT_ROLE_REQUEST)
def _p13_role_request(dp, version, msg_type, msg_len, xid, buf):
    role, generation_id = _unpack(of13.OFP_ROLE_REQUEST_PACK_STR, buf)
    return _finish(p13.OFPRoleRequest(dp, role, generation_id), version, msg_type, msg_len, xid, buf)


@_parser(OFP13, of13.OFPT_SET_ASYNC)
def _p13_set_async(dp, version, msg_type, msg_len, xid, buf):
    v = _unpack(of13.OFP_ASYNC_CONFIG_PACK_STR, buf)
    msg = p13.OFPSetAsync(dp, [v[0], v[1]], [v[2], v[3]], [v[4], v[5]])
    return _finish(msg, version, msg_type, msg_len, xid, buf)


_MP_BODYLESS13 = {
    of13.OFPMP_DESC: p13.OFPDescStatsRequest,
    of13.OFPMP_TABLE: p13.OFPTableStatsRequest,
    of13.OFPMP_GROUP_DESC: p13.OFPGroupDescStatsRequest,
    of13.OFPMP_GROUP_FEATURES: p13.OFPGroupFeaturesStatsRequest,
    of13.OFPMP_METER_FEATURES: p13.OFPMeterFeaturesStatsRequest,
    of13.OFPMP_PORT_DESC: p13.OFPPortDescStatsRequest,
}


@_parser(OFP13, of13.OFPT_MULTIPART_REQUEST)
def _p13_multipart(dp, version, msg_type, msg_len, xid, buf):
    mp_type, flags = _unpack(of13.OFP_MULTIPART_REQUEST_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of13.OFP_MULTIPART_REQUEST_PACK_STR)
    if mp_type in _MP_BODYLESS13:
        msg = _MP_BODYLESS13[mp_type](dp, flags)
    elif mp_type in (of13.OFPMP_FLOW, of13.OFPMP_AGGREGATE):
        table_id, out_port, out_group, cookie, cookie_mask = _unpack(
            of13.OFP_FLOW_STATS_REQUEST_0_PACK_STR, buf, off)
        off += struct.calcsize(of13.OFP_FLOW_STATS_REQUEST_0_PACK_STR)
        match, _ = parse_match13(p13, buf, off, msg_len)
        cls = p13.OFPFlowStatsRequest if mp_type == of13.OFPMP_FLOW else p13.OFPAggregateStatsRequest
        msg = cls(dp, flags, table_id, out_port, out_group, cookie, cookie_mask, match)
    elif mp_type == of13.OFPMP_PORT_STATS:
        (port_no,) = _unpack(of13.OFP_PORT_STATS_REQUEST_PACK_STR, buf, off)
        msg = p13.OFPPortStatsRequest(dp, flags, port_no)
    elif mp_type == of13.OFPMP_QUEUE:
        port_no, queue_id = _unpack(of13.OFP_QUEUE_STATS_REQUEST_PACK_STR, buf, off)
        msg = p13.OFPQueueStatsRequest(dp, flags, port_no, queue_id)
    elif mp_type == of13.OFPMP_GROUP:
        (group_id,) = _unpack(of13.OFP_GROUP_STATS_REQUEST_PACK_STR, buf, off)
        msg = p13.OFPGroupStatsRequest(dp, flags, group_id)
    elif mp_type in (of13.OFPMP_METER, of13.OFPMP_METER_CONFIG):
        (meter_id,) = _unpack(of13.OFP_METER_MULTIPART_REQUEST_PACK_STR, buf, off)
        cls = p13.OFPMeterStatsRequest if mp_type == of13.OFPMP_METER else p13.OFPMeterConfigStatsRequest
        msg = cls(dp, flags, meter_id)
    elif mp_type == of13.OFPMP_TABLE_FEATURES:
        # A non-empty body asks to *set* table features; we only report them.
        msg = p13.OFPTableFeaturesStatsRequest(dp, flags, [])
        msg.set_request = msg_len > off
    elif mp_type == of13.OFPMP_EXPERIMENTER:
        experimenter, exp_type = _unpack(of13.OFP_EXPERIMENTER_MULTIPART_HEADER_PACK_STR, buf,
                                         off)
        if experimenter != ONF or exp_type != nx.ONF_FLOW_MONITOR:
            raise OFError(ET_BAD_REQUEST, BRC_BAD_EXPERIMENTER if experimenter not in (NX, ONF)
                          else BRC_BAD_EXP_TYPE)
        off += of13.OFP_EXPERIMENTER_MULTIPART_HEADER_SIZE
        msg = monitor.parse_request(dp, "onf", buf, off, msg_len)
    else:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_MULTIPART)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_parser(OFP13, of13.OFPT_EXPERIMENTER)
def _p13_experimenter(dp, version, msg_type, msg_len, xid, buf):
    return _experimenter_common(dp, version, msg_type, msg_len, xid, buf, onf_bundles=True)


def _experimenter_common(dp, version, msg_type, msg_len, xid, buf, onf_bundles):
    P = dp.ofproto_parser
    experimenter, exp_type = _unpack(of13.OFP_EXPERIMENTER_HEADER_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of13.OFP_EXPERIMENTER_HEADER_PACK_STR)
    if not onf_bundles and experimenter == ONF:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_EXP_TYPE)
    if experimenter == ONF and exp_type == of13.ONF_ET_BUNDLE_CONTROL:
        bundle_id, ctrl_type, flags = _unpack(of13.ONF_BUNDLE_CTRL_PACK_STR, buf, off)
        msg = p13.ONFBundleCtrlMsg(dp, bundle_id, ctrl_type, flags, [])
    elif experimenter == ONF and exp_type == of13.ONF_ET_BUNDLE_ADD_MESSAGE:
        bundle_id, flags = _unpack(of13.ONF_BUNDLE_ADD_MSG_PACK_STR, buf, off)
        off += struct.calcsize(of13.ONF_BUNDLE_ADD_MSG_PACK_STR)
        inner_buf = buf[off:msg_len]
        if len(inner_buf) < HEADER_SIZE:
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
        inner_len = parse_header(inner_buf)[2]
        if inner_len < HEADER_SIZE or inner_len > len(inner_buf):
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
        inner = parse(inner_buf[:inner_len])
        msg = p13.ONFBundleAddMsg(dp, bundle_id, flags, inner, [])
    elif experimenter == ONF and exp_type == nx.ONF_FLOW_MONITOR:
        msg = monitor.parse_cancel(dp, buf, off, msg_len)
    elif experimenter == NX and exp_type == nicira_ext.NXT_SET_PACKET_IN_FORMAT:
        (fmt,) = _unpack(nicira_ext.NX_SET_PACKET_IN_FORMAT_PACK_STR, buf, off)
        msg = P.NXTSetPacketInFormatMsg(dp, fmt)
    elif experimenter == NX and (nxm := nx.parse(dp, exp_type, buf, off, msg_len)) is not None:
        msg = nxm
    elif experimenter in (NX, ONF):
        raise OFError(ET_BAD_REQUEST, BRC_BAD_EXP_TYPE)
    else:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_EXPERIMENTER)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


# ---- OpenFlow 1.0 (+ Nicira vendor messages) -------------------------------
@_parser(OFP10, of10.OFPT_SET_CONFIG)
def _p10_set_config(dp, version, msg_type, msg_len, xid, buf):
    flags, miss = _unpack(of10.OFP_SWITCH_CONFIG_PACK_STR, buf)
    return _finish(p10.OFPSetConfig(dp, flags, miss), version, msg_type, msg_len, xid, buf)


@_parser(OFP10, of10.OFPT_PACKET_OUT)
def _p10_packet_out(dp, version, msg_type, msg_len, xid, buf):
    buffer_id, in_port, actions_len = _unpack(of10.OFP_PACKET_OUT_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of10.OFP_PACKET_OUT_PACK_STR)
    if off + actions_len > msg_len:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
    actions = _parse_actions(p10, buf, off, off + actions_len)
    msg = p10.OFPPacketOut(dp, buffer_id, in_port, actions, buf[off + actions_len:msg_len])
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_parser(OFP10, of10.OFPT_PORT_MOD)
def _p10_port_mod(dp, version, msg_type, msg_len, xid, buf):
    port_no, hw_addr, config, mask, advertise = _unpack(of10.OFP_PORT_MOD_PACK_STR, buf)
    msg = p10.OFPPortMod(dp, port_no, addrconv.mac.bin_to_text(hw_addr), config, mask, advertise)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_parser(OFP10, of10.OFPT_STATS_REQUEST)
def _p10_stats(dp, version, msg_type, msg_len, xid, buf):
    st_type, flags = _unpack(of10.OFP_STATS_MSG_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of10.OFP_STATS_MSG_PACK_STR)
    if st_type == of10.OFPST_DESC:
        msg = p10.OFPDescStatsRequest(dp, flags)
    elif st_type == of10.OFPST_TABLE:
        msg = p10.OFPTableStatsRequest(dp, flags)
    elif st_type in (of10.OFPST_FLOW, of10.OFPST_AGGREGATE):
        _unpack(of10.OFP_FLOW_STATS_REQUEST_PACK_STR, buf, off)
        match = p10.OFPMatch.parse(buf, off)
        table_id, out_port = _unpack(of10.OFP_FLOW_STATS_REQUEST_ID_PORT_STR, buf,
                                     off + of10.OFP_MATCH_SIZE)
        cls = p10.OFPFlowStatsRequest if st_type == of10.OFPST_FLOW else p10.OFPAggregateStatsRequest
        msg = cls(dp, flags, match, table_id, out_port)
    elif st_type == of10.OFPST_PORT:
        (port_no,) = _unpack(of10.OFP_PORT_STATS_REQUEST_PACK_STR, buf, off)
        msg = p10.OFPPortStatsRequest(dp, flags, port_no)
    elif st_type == of10.OFPST_QUEUE:
        port_no, queue_id = _unpack(of10.OFP_QUEUE_STATS_REQUEST_PACK_STR, buf, off)
        msg = p10.OFPQueueStatsRequest(dp, flags, port_no, queue_id)
    elif st_type == of10.OFPST_VENDOR:
        (vendor,) = _unpack(of10.OFP_VENDOR_STATS_MSG_PACK_STR, buf, off)
        off += 4
        if vendor != NX:
            raise OFError(ET_BAD_REQUEST, BRC_BAD_EXPERIMENTER)
        (subtype,) = _unpack(nicira_ext.NX_STATS_MSG_PACK_STR, buf, off)
        off += nicira_ext.NX_STATS_MSG0_SIZE
        if subtype == nx.NXST_FLOW_MONITOR:
            msg = monitor.parse_request(dp, "nx", buf, off, msg_len)
            return _finish(msg, version, msg_type, msg_len, xid, buf)
        if subtype not in (nicira_ext.NXST_FLOW, nicira_ext.NXST_AGGREGATE):
            raise OFError(ET_BAD_REQUEST, BRC_BAD_EXP_TYPE)
        out_port, match_len, table_id = _unpack(nicira_ext.NX_FLOW_STATS_REQUEST_PACK_STR, buf, off)
        off += nicira_ext.NX_FLOW_STATS_REQUEST_SIZE
        if off + match_len > msg_len:
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
        cls = p10.NXFlowStatsRequest if subtype == nicira_ext.NXST_FLOW else p10.NXAggregateStatsRequest
        msg = cls(dp, flags, out_port, table_id)
        msg.nxm = parse_oxm_fields(buf, off, off + match_len)
    elif st_type == PortDescStatsRequest10.OFPST10_PORT_DESC:
        msg = PortDescStatsRequest10(dp, flags)
    else:
        raise OFError(ET_BAD_REQUEST, of10.OFPBRC_BAD_STAT)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_parser(OFP10, of10.OFPT_VENDOR)
def _p10_vendor(dp, version, msg_type, msg_len, xid, buf):
    (vendor,) = _unpack(of10.OFP_VENDOR_HEADER_PACK_STR, buf)
    if vendor != NX:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_EXPERIMENTER)
    _, subtype = _unpack(nicira_ext.NICIRA_HEADER_PACK_STR, buf)
    off = nicira_ext.NICIRA_HEADER_SIZE
    if subtype == nicira_ext.NXT_SET_FLOW_FORMAT:
        (fmt,) = _unpack(nicira_ext.NX_SET_FLOW_FORMAT_PACK_STR, buf, off)
        msg = p10.NXTSetFlowFormat(dp, fmt)
    elif subtype == nicira_ext.NXT_SET_PACKET_IN_FORMAT:
        (fmt,) = _unpack(nicira_ext.NX_SET_PACKET_IN_FORMAT_PACK_STR, buf, off)
        msg = p10.NXTSetPacketInFormat(dp, fmt)
    elif subtype == nicira_ext.NXT_FLOW_MOD_TABLE_ID:
        (set_,) = _unpack(nicira_ext.NX_FLOW_MOD_TABLE_ID_PACK_STR, buf, off)
        msg = p10.NXTFlowModTableId(dp, set_)
    elif subtype == nicira_ext.NXT_ROLE_REQUEST:
        (role,) = _unpack(nicira_ext.NX_ROLE_PACK_STR, buf, off)
        msg = p10.NXTRoleRequest(dp, role)
    elif subtype == nx.NXT_FLOW_MONITOR_CANCEL:
        msg = monitor.parse_cancel(dp, buf, off, msg_len)
    elif subtype == nicira_ext.NXT_FLOW_MOD:
        (cookie, command, idle, hard, priority, buffer_id, out_port, flags,
         match_len) = _unpack(nicira_ext.NX_FLOW_MOD_PACK_STR, buf, off)
        off += struct.calcsize(nicira_ext.NX_FLOW_MOD_PACK_STR)
        if off + match_len > msg_len:
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN)
        nxm = parse_oxm_fields(buf, off, off + match_len)
        off += (match_len + 7) // 8 * 8
        actions = _parse_actions(p10, buf, off, msg_len)
        msg = p10.NXTFlowMod(dp, cookie, command, idle, hard, priority, buffer_id,
                             out_port, flags, nx_match.ClsRule(), actions)
        msg.nxm = nxm
    elif (nxm := nx.parse(dp, subtype, buf, off, msg_len)) is not None:
        msg = nxm
    else:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_EXP_TYPE)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


# ================================================================= serialize
_ENCODERS: dict = {}


def _encoder(*classes):
    def register(fn):
        for c in classes:
            _ENCODERS[c] = fn
        return fn
    return register


def serialize(msg) -> bytes:
    """Bytes for one os-ken message object (either direction)."""
    fn = _ENCODERS.get(type(msg))
    if fn is None:
        msg.serialize()
        return bytes(msg.buf)
    body = fn(msg)
    version = msg.datapath.ofproto.OFP_VERSION
    xid = msg.xid or 0
    msg.version, msg.msg_type, msg.xid = version, msg.cls_msg_type, xid
    msg.msg_len = HEADER_SIZE + len(body)
    if msg.msg_len > MAX_MESSAGE:
        raise ValueError("message too long")
    out = struct.pack(HEADER_PACK_STR, version, msg.cls_msg_type, msg.msg_len, xid) + bytes(body)
    msg.buf = out
    return out


def _mac(v) -> bytes:
    return v if isinstance(v, (bytes, bytearray)) else addrconv.mac.text_to_bin(v)


def _name(v) -> bytes:
    return v if isinstance(v, (bytes, bytearray)) else v.encode()


@_encoder(p10.OFPHello, p13.OFPHello)
def _e_hello(msg):
    body = bytearray()
    for elem in getattr(msg, "elements", None) or ():
        bitmap = 0
        for v in elem.versions:
            bitmap |= 1 << v
        words = []
        while True:
            words.append(bitmap & 0xFFFFFFFF)
            bitmap >>= 32
            if not bitmap:
                break
        length = of13.OFP_HELLO_ELEM_VERSIONBITMAP_HEADER_SIZE + 4 * len(words)
        body += struct.pack(of13.OFP_HELLO_ELEM_VERSIONBITMAP_HEADER_PACK_STR,
                            of13.OFPHET_VERSIONBITMAP, length)
        body += b"".join(struct.pack("!I", w) for w in words)
        body += b"\0" * (-len(body) % 8)
    return body


def hello(version: int, versions: set):
    """A HELLO for `version`, with a version bitmap when one can be carried."""
    dp = datapath(version)
    msg = dp.ofproto_parser.OFPHello(dp)
    if version >= OFP13:
        msg.elements = [p13.OFPHelloElemVersionBitmap(sorted(versions))]
    else:
        msg.elements = []
    return msg


@_encoder(p10.NXTRoleReply)
def _e_nx_role_reply(msg):
    return struct.pack(nicira_ext.NICIRA_HEADER_PACK_STR, NX, nicira_ext.NXT_ROLE_REPLY) + \
        struct.pack(nicira_ext.NX_ROLE_PACK_STR, msg.role)


@_encoder(p13.OFPSwitchFeatures)
def _e_features13(msg):
    return struct.pack(of13.OFP_SWITCH_FEATURES_PACK_STR, msg.datapath_id, msg.n_buffers,
                       msg.n_tables, msg.auxiliary_id, msg.capabilities, 0)


def _port10(p) -> bytes:
    return struct.pack(of10.OFP_PHY_PORT_PACK_STR, p.port_no, _mac(p.hw_addr), _name(p.name),
                       p.config, p.state, p.curr, p.advertised, p.supported, p.peer)


def _port13(p) -> bytes:
    return struct.pack(of13.OFP_PORT_PACK_STR, p.port_no, _mac(p.hw_addr), _name(p.name),
                       p.config, p.state, p.curr, p.advertised, p.supported, p.peer,
                       p.curr_speed, p.max_speed)


@_encoder(p10.OFPSwitchFeatures)
def _e_features10(msg):
    return struct.pack(of10.OFP_SWITCH_FEATURES_PACK_STR, msg.datapath_id, msg.n_buffers,
                       msg.n_tables, msg.capabilities, msg.actions) + \
        b"".join(_port10(p) for p in msg.ports.values())


@_encoder(p10.OFPGetConfigReply, p13.OFPGetConfigReply)
def _e_get_config(msg):
    return struct.pack(of13.OFP_SWITCH_CONFIG_PACK_STR, msg.flags, msg.miss_send_len)


@_encoder(p10.OFPBarrierReply, p13.OFPBarrierReply)
def _e_empty(msg):
    return b""


@_encoder(p13.OFPRoleReply)
def _e_role13(msg):
    return struct.pack(of13.OFP_ROLE_REQUEST_PACK_STR, msg.role, msg.generation_id)


@_encoder(p13.OFPGetAsyncReply)
def _e_async13(msg):
    return struct.pack(of13.OFP_ASYNC_CONFIG_PACK_STR, *msg.packet_in_mask,
                       *msg.port_status_mask, *msg.flow_removed_mask)


@_encoder(p13.OFPPortStatus)
def _e_port_status13(msg):
    return struct.pack("!B7x", msg.reason) + _port13(msg.desc)


@_encoder(p10.OFPPortStatus)
def _e_port_status10(msg):
    return struct.pack("!B7x", msg.reason) + _port10(msg.desc)


def _match13(match) -> bytearray:
    buf = bytearray()
    match.serialize(buf, 0)
    return buf


@_encoder(p13.OFPPacketIn)
def _e_packet_in13(msg):
    return struct.pack(of13.OFP_PACKET_IN_PACK_STR, msg.buffer_id, msg.total_len, msg.reason,
                       msg.table_id, msg.cookie) + _match13(msg.match) + b"\0\0" + bytes(msg.data)


@_encoder(p10.OFPPacketIn)
def _e_packet_in10(msg):
    return struct.pack(of10.OFP_PACKET_IN_PACK_STR, msg.buffer_id, msg.total_len,
                       msg.in_port, msg.reason) + bytes(msg.data)


@_encoder(p13.OFPFlowRemoved)
def _e_flow_removed13(msg):
    return struct.pack(of13.OFP_FLOW_REMOVED_PACK_STR0, msg.cookie, msg.priority, msg.reason,
                       msg.table_id, msg.duration_sec, msg.duration_nsec, msg.idle_timeout,
                       msg.hard_timeout, msg.packet_count, msg.byte_count) + _match13(msg.match)


def _match10(match) -> bytearray:
    buf = bytearray(of10.OFP_MATCH_SIZE)
    match.serialize(buf, 0)
    return buf


@_encoder(p10.OFPFlowRemoved)
def _e_flow_removed10(msg):
    return bytes(_match10(msg.match)) + struct.pack(
        "!" + of10._OFP_FLOW_REMOVED_PACK_STR0, msg.cookie, msg.priority, msg.reason,
        msg.duration_sec, msg.duration_nsec, msg.idle_timeout, msg.packet_count, msg.byte_count)


def _actions(actions, offset=0) -> bytearray:
    buf = bytearray(offset)
    for a in actions:
        _put_action(buf, a)
    return buf[offset:]


def _put_action(buf: bytearray, a) -> None:
    """Append one action; trust its `len` (os-ken's NAT writes fewer bytes)."""
    start = len(buf)
    a.serialize(buf, start)
    end = start + (getattr(a, "len", 0) or len(buf) - start)
    if len(buf) < end:
        buf += bytes(end - len(buf))


def _instructions(insts) -> bytearray:
    buf = bytearray()
    for i in insts:
        i.serialize(buf, len(buf))
    return buf


# ---- multipart replies: each body item encoded alone, then packed in chunks
_MP_ITEM: dict = {}


def _mp_item(*classes):
    def register(fn):
        for c in classes:
            _MP_ITEM[c] = fn
        return fn
    return register


@_mp_item(p13.OFPDescStatsReply, p10.OFPDescStatsReply)
def _i_desc(msg):
    d = msg.body
    pack = of13.OFP_DESC_PACK_STR if isinstance(msg, p13.OFPDescStatsReply) else of10.OFP_DESC_STATS_PACK_STR
    return [struct.pack(pack, _name(d.mfr_desc), _name(d.hw_desc), _name(d.sw_desc),
                        _name(d.serial_num), _name(d.dp_desc))]


@_mp_item(p13.OFPFlowStatsReply)
def _i_flow13(msg):
    out = []
    for s in msg.body:
        tail = _match13(s.match) + _instructions(s.instructions)
        head = struct.pack(of13.OFP_FLOW_STATS_0_PACK_STR, of13.OFP_FLOW_STATS_0_SIZE + len(tail),
                           s.table_id, s.duration_sec, s.duration_nsec, s.priority,
                           s.idle_timeout, s.hard_timeout, s.flags, s.cookie,
                           s.packet_count, s.byte_count)
        out.append(head + tail)
    return out


@_mp_item(p10.OFPFlowStatsReply)
def _i_flow10(msg):
    out = []
    for s in msg.body:
        acts = _actions(s.actions)
        length = of10.OFP_FLOW_STATS_SIZE + len(acts)
        out.append(struct.pack(of10.OFP_FLOW_STATS_0_PACK_STR, length, s.table_id)
                   + bytes(_match10(s.match))
                   + struct.pack(of10.OFP_FLOW_STATS_1_PACK_STR, s.duration_sec,
                                 s.duration_nsec, s.priority, s.idle_timeout, s.hard_timeout,
                                 s.cookie, s.packet_count, s.byte_count) + acts)
    return out


@_mp_item(p10.NXFlowStatsReply)
def _i_nxflow(msg):
    out = [struct.pack(of10.OFP_VENDOR_STATS_MSG_PACK_STR, NX)
           + struct.pack(nicira_ext.NX_STATS_MSG_PACK_STR, nicira_ext.NXST_FLOW)]
    for s in msg.body:
        nxm = serialize_oxm_fields(s.nxm)
        match_len = len(nxm)
        nxm += b"\0" * (-len(nxm) % 8)
        acts = _actions(s.actions)
        length = nicira_ext.NX_FLOW_STATS_SIZE + len(nxm) + len(acts)
        out.append(struct.pack(nicira_ext.NX_FLOW_STATS_PACK_STR, length, s.table_id,
                               s.duration_sec, s.duration_nsec, s.priority, s.idle_timeout,
                               s.hard_timeout, match_len, s.idle_age, s.hard_age, s.cookie,
                               s.packet_count, s.byte_count) + nxm + acts)
    return out


@_mp_item(p10.NXAggregateStatsReply)
def _i_nxagg(msg):
    b = msg.body
    return [struct.pack(of10.OFP_VENDOR_STATS_MSG_PACK_STR, NX)
            + struct.pack(nicira_ext.NX_STATS_MSG_PACK_STR, nicira_ext.NXST_AGGREGATE)
            + struct.pack(nicira_ext.NX_AGGREGATE_STATS_REPLY_PACK_STR, b.packet_count,
                          b.byte_count, b.flow_count)]


@_mp_item(p13.OFPAggregateStatsReply, p10.OFPAggregateStatsReply)
def _i_agg(msg):
    b = msg.body
    if isinstance(b, list):
        b = b[0]
    return [struct.pack(of13.OFP_AGGREGATE_STATS_REPLY_PACK_STR, b.packet_count,
                        b.byte_count, b.flow_count)]


@_mp_item(p13.OFPTableStatsReply)
def _i_table13(msg):
    return [struct.pack(of13.OFP_TABLE_STATS_PACK_STR, s.table_id, s.active_count,
                        s.lookup_count, s.matched_count) for s in msg.body]


@_mp_item(p10.OFPTableStatsReply)
def _i_table10(msg):
    return [struct.pack(of10.OFP_TABLE_STATS_PACK_STR, s.table_id, _name(s.name), s.wildcards,
                        s.max_entries, s.active_count, s.lookup_count, s.matched_count)
            for s in msg.body]


@_mp_item(p13.OFPPortStatsReply)
def _i_port13(msg):
    return [struct.pack(of13.OFP_PORT_STATS_PACK_STR, *s) for s in msg.body]


@_mp_item(p10.OFPPortStatsReply)
def _i_port10(msg):
    return [struct.pack(of10.OFP_PORT_STATS_PACK_STR, *s) for s in msg.body]


@_mp_item(p13.OFPPortDescStatsReply)
def _i_port_desc13(msg):
    return [_port13(p) for p in msg.body]


@_mp_item(p13.OFPGroupStatsReply)
def _i_group13(msg):
    out = []
    for s in msg.body:
        counters = b"".join(struct.pack(of13.OFP_BUCKET_COUNTER_PACK_STR, c.packet_count, c.byte_count)
                            for c in s.bucket_stats)
        out.append(struct.pack(of13.OFP_GROUP_STATS_PACK_STR, of13.OFP_GROUP_STATS_SIZE + len(counters),
                               s.group_id, s.ref_count, s.packet_count, s.byte_count,
                               s.duration_sec, s.duration_nsec) + counters)
    return out


@_mp_item(p13.OFPGroupDescStatsReply)
def _i_group_desc13(msg):
    out = []
    for s in msg.body:
        buckets = bytearray()
        for b in s.buckets:
            b.serialize(buckets, len(buckets))
        out.append(struct.pack(of13.OFP_GROUP_DESC_STATS_PACK_STR,
                               of13.OFP_GROUP_DESC_STATS_SIZE + len(buckets), s.type, s.group_id)
                   + buckets)
    return out


@_mp_item(p13.OFPGroupFeaturesStatsReply)
def _i_group_features13(msg):
    b = msg.body
    return [struct.pack(of13.OFP_GROUP_FEATURES_PACK_STR, b.types, b.capabilities,
                        *b.max_groups, *b.actions)]


@_mp_item(p13.OFPMeterStatsReply)
def _i_meter13(msg):
    out = []
    for s in msg.body:
        bands = b"".join(struct.pack(of13.OFP_METER_BAND_STATS_PACK_STR, b.packet_band_count,
                                     b.byte_band_count) for b in s.band_stats)
        out.append(struct.pack(of13.OFP_METER_STATS_PACK_STR, s.meter_id,
                               of13.OFP_METER_STATS_SIZE + len(bands), s.flow_count,
                               s.packet_in_count, s.byte_in_count, s.duration_sec,
                               s.duration_nsec) + bands)
    return out


@_mp_item(p13.OFPMeterConfigStatsReply)
def _i_meter_config13(msg):
    out = []
    for s in msg.body:
        bands = bytearray()
        for b in s.bands:
            b.serialize(bands, len(bands))
        out.append(struct.pack(of13.OFP_METER_CONFIG_PACK_STR, of13.OFP_METER_CONFIG_SIZE + len(bands),
                               s.flags, s.meter_id) + bands)
    return out


@_mp_item(p13.OFPMeterFeaturesStatsReply)
def _i_meter_features13(msg):
    return [struct.pack(of13.OFP_METER_FEATURES_PACK_STR, b.max_meter, b.band_types,
                        b.capabilities, b.max_bands, b.max_color) for b in msg.body]


_TF_CACHE: dict = {}


@_mp_item(p13.OFPTableFeaturesStatsReply)
def _i_table_features13(msg):
    out = []
    for s in msg.body:   # os-ken can serialize these (used in requests); cache: they are big
        b = _TF_CACHE.get(id(s))
        if b is None or b[0] is not s:
            b = _TF_CACHE[id(s)] = (s, bytes(s.serialize()))
        out.append(b[1])
    return out


@_mp_item(p13.OFPQueueStatsReply, p10.OFPQueueStatsReply)
def _i_queue(msg):
    if msg.body:
        raise ValueError("queues are not implemented")
    return []


class PortDescStatsRequest10(p10.OFPStatsRequest):
    """OFPST_PORT_DESC in OpenFlow 1.0 (an OVS extension; os-ken has no class)."""
    cls_stats_type = OFPST10_PORT_DESC = 13

    def __init__(self, datapath, flags=0):
        super().__init__(datapath, flags)


class PortDescStatsReply10(p10.OFPStatsReply):
    cls_stats_type = 13

    def __init__(self, datapath, body=None):
        super().__init__(datapath)
        self.body = body or []


@_mp_item(PortDescStatsReply10)
def _i_port_desc10(msg):
    return [_port10(p) for p in msg.body]


_MP_CHUNK = MAX_MESSAGE - 64


def serialize_multipart(msg) -> list[bytes]:
    """A multipart reply as one or more messages (OFPMPF_REPLY_MORE between)."""
    items = _MP_ITEM[type(msg)](msg)
    version = msg.datapath.ofproto.OFP_VERSION
    is13 = version >= OFP13
    prefix = getattr(msg, "stats_prefix", b"")     # vendor/experimenter stats header
    if isinstance(msg, (p10.NXFlowStatsReply, p10.NXAggregateStatsReply)):
        prefix, items = items[0], items[1:]
        st_type = of10.OFPST_VENDOR
    else:
        st_type = msg.cls_stats_type
    chunks, cur, size = [], [], 0
    for it in items:
        if cur and size + len(it) > _MP_CHUNK:
            chunks.append(cur)
            cur, size = [], 0
        cur.append(it)
        size += len(it)
    chunks.append(cur)
    out = []
    msg_type = of13.OFPT_MULTIPART_REPLY if is13 else of10.OFPT_STATS_REPLY
    for n, chunk in enumerate(chunks):
        more = n < len(chunks) - 1
        flags = (of13.OFPMPF_REPLY_MORE if is13 else of10.OFPSF_REPLY_MORE) if more else 0
        pack = of13.OFP_MULTIPART_REPLY_PACK_STR if is13 else of10.OFP_STATS_MSG_PACK_STR
        body = struct.pack(pack, st_type, flags) + prefix + b"".join(chunk)
        out.append(struct.pack(HEADER_PACK_STR, version, msg_type, HEADER_SIZE + len(body),
                               msg.xid or 0) + body)
    return out


def is_multipart_reply(msg) -> bool:
    return type(msg) in _MP_ITEM


def encode(msg) -> list[bytes]:
    """All wire messages for `msg` (multipart replies may need several)."""
    if is_multipart_reply(msg):
        return serialize_multipart(msg)
    return [serialize(msg)]


from . import codec15  # noqa: E402,F401  (registers the OpenFlow 1.4/1.5 codecs)
from . import monitor  # noqa: E402  (flow monitor requests and replies)
