"""Nicira extension messages os-ken does not define, for OVN-style controllers.

ovn-controller maps GENEVE options to `tun_metadataN` with NXT_TLV_TABLE_MOD
(and ovs-ofctl reads the map back with NXT_TLV_TABLE_REQUEST), and flushes
conntrack zones with NXT_CT_FLUSH_ZONE.  os-ken 4.2 has no classes or PACK_STRs
for these, so this module carries the few layouts, copied from Open vSwitch's
`include/openflow/nicira-ext.h` (the only definition that matters: the peers
are OVS tools), and the small message classes the handlers dispatch on.  They
ride in OFPT_EXPERIMENTER (OF1.2+) or OFPT_VENDOR (OF1.0), both type 4, after
the Nicira header (vendor/experimenter id, subtype).
"""
from __future__ import annotations

import struct

from os_ken.ofproto.ofproto_parser import MsgBase

NXT_TLV_TABLE_MOD = 24
NXT_TLV_TABLE_REQUEST = 25
NXT_TLV_TABLE_REPLY = 26
NXT_CT_FLUSH_ZONE = 29

NX_HEADER_PACK_STR = "!II"              # experimenter/vendor id, subtype
NX_TLV_TABLE_MOD_PACK_STR = "!H6x"      # command, pad
NX_TLV_MAP_PACK_STR = "!HBBH2x"         # option_class, option_type, option_len, index
NX_TLV_TABLE_REPLY_PACK_STR = "!IH10x"  # max_option_space, max_fields, reserved
NX_ZONE_ID_PACK_STR = "!6xH"            # zero[6], zone_id

NXTTMC_ADD, NXTTMC_DELETE, NXTTMC_CLEAR = 0, 1, 2
TLV_MAP_SIZE = struct.calcsize(NX_TLV_MAP_PACK_STR)


class _NXMsg(MsgBase):
    cls_msg_type = 4   # OFPT_EXPERIMENTER == OFPT_VENDOR
    subtype = None

    def __init__(self, datapath, **kw):
        super().__init__(datapath)
        self.__dict__.update(kw)

    def body(self) -> bytes:
        return b""

    def _serialize_body(self):
        self.buf += struct.pack(NX_HEADER_PACK_STR, 0x2320, self.subtype) + self.body()


class NXTTlvTableMod(_NXMsg):
    subtype = NXT_TLV_TABLE_MOD           # command, mappings [(class, type, len, index)]

    def body(self):
        return struct.pack(NX_TLV_TABLE_MOD_PACK_STR, self.command) + b"".join(
            struct.pack(NX_TLV_MAP_PACK_STR, *m) for m in self.mappings)


class NXTTlvTableRequest(_NXMsg):
    subtype = NXT_TLV_TABLE_REQUEST


class NXTTlvTableReply(_NXMsg):
    subtype = NXT_TLV_TABLE_REPLY         # max_option_space, max_fields, mappings

    def body(self):
        return struct.pack(NX_TLV_TABLE_REPLY_PACK_STR, self.max_option_space,
                           self.max_fields) + b"".join(
            struct.pack(NX_TLV_MAP_PACK_STR, *m) for m in self.mappings)


class NXTCtFlushZone(_NXMsg):
    subtype = NXT_CT_FLUSH_ZONE           # zone_id

    def body(self):
        return struct.pack(NX_ZONE_ID_PACK_STR, self.zone_id)


def parse(dp, subtype: int, buf: bytes, off: int, end: int):
    """The message for `subtype` with its body at buf[off:end], or None if unknown.
    Raises struct.error / ValueError on short bodies (the codec maps them to BAD_LEN)."""
    if subtype == NXT_TLV_TABLE_MOD:
        (command,) = struct.unpack_from(NX_TLV_TABLE_MOD_PACK_STR, buf, off)
        off += struct.calcsize(NX_TLV_TABLE_MOD_PACK_STR)
        if (end - off) % TLV_MAP_SIZE:
            raise ValueError("partial tlv map")
        maps = [struct.unpack_from(NX_TLV_MAP_PACK_STR, buf, o)
                for o in range(off, end, TLV_MAP_SIZE)]
        return NXTTlvTableMod(dp, command=command, mappings=maps)
    if subtype == NXT_TLV_TABLE_REQUEST:
        return NXTTlvTableRequest(dp)
    if subtype == NXT_CT_FLUSH_ZONE:
        (zone,) = struct.unpack_from(NX_ZONE_ID_PACK_STR, buf, off)
        return NXTCtFlushZone(dp, zone_id=zone)
    return None


NXT_SET_CONTROLLER_ID = 20
NX_CONTROLLER_ID_PACK_STR = "!6xH"      # zero[6], controller_id


class NXTSetControllerId(_NXMsg):
    subtype = NXT_SET_CONTROLLER_ID       # controller_id

    def body(self):
        return struct.pack(NX_CONTROLLER_ID_PACK_STR, self.controller_id)


def _nxm_padded(nxm: bytes) -> bytes:
    return bytes(nxm) + b"\0" * (-len(nxm) % 8)


class NXTPacketInNXM(_NXMsg):
    """NXT_PACKET_IN (packet-in format 1): metadata as an NXM match."""
    subtype = 17                          # buffer_id, total_len, reason, table_id, cookie, nxm, data

    def body(self):
        from os_ken.ofproto import nicira_ext
        return struct.pack(nicira_ext.NX_PACKET_IN_PACK_STR, self.buffer_id, self.total_len,
                           self.reason, self.table_id, self.cookie, len(self.nxm)) + \
            _nxm_padded(self.nxm) + b"\0\0" + bytes(self.data)


class NXTFlowRemovedNXM(_NXMsg):
    """NXT_FLOW_REMOVED for OF1.0 sessions that chose the NXM flow format."""
    subtype = 14

    def body(self):
        from os_ken.ofproto import nicira_ext
        return struct.pack(nicira_ext.NX_FLOW_REMOVED_PACK_STR, self.cookie, self.priority,
                           self.reason, self.duration_sec, self.duration_nsec,
                           self.idle_timeout, len(self.nxm), self.packet_count,
                           self.byte_count) + _nxm_padded(self.nxm)


_parse_base = parse


def parse(dp, subtype: int, buf: bytes, off: int, end: int):  # noqa: F811
    if subtype == NXT_SET_CONTROLLER_ID:
        (cid,) = struct.unpack_from(NX_CONTROLLER_ID_PACK_STR, buf, off)
        return NXTSetControllerId(dp, controller_id=cid)
    return _parse_base(dp, subtype, buf, off, end)


NXT_RESUME = 28


class NXTResume(_NXMsg):
    """NXT_RESUME: a controller hands back a paused packet-in (same property
    list as NXT_PACKET_IN2: packet, metadata, continuation, ...)."""
    subtype = NXT_RESUME

    def body(self):
        return b"".join(bytes(p.serialize()) for p in self.properties)


def _parse_resume(dp, buf, off, end):
    from os_ken.ofproto import ofproto_v1_3_parser as p13
    from os_ken.ofproto import nicira_ext as nxe
    msg = NXTResume(dp, properties=[], packet=b"", metadata=b"", continuation=b"")
    rest = bytes(buf[off:end])
    while rest:
        prop, rest = p13.NXTPacketIn2Prop.parse(rest)
        msg.properties.append(prop)
        data = getattr(prop, "data", b"")
        if prop.type == nxe.NXPINT_PACKET:
            msg.packet = data
        elif prop.type == nxe.NXPINT_METADATA:
            msg.metadata = data
        elif prop.type == nxe.NXPINT_CONTINUATION:
            msg.continuation = data[4:]     # nested: 4 pad bytes first
    return msg


_parse_base2 = parse


def parse(dp, subtype: int, buf: bytes, off: int, end: int):  # noqa: F811
    if subtype == NXT_RESUME:
        return _parse_resume(dp, buf, off, end)
    return _parse_base2(dp, subtype, buf, off, end)


# NXAST_NAT flags (include/openflow/nicira-ext.h); os-ken only has the range bits
NX_NAT_F_SRC = 1 << 0
NX_NAT_F_DST = 1 << 1
NX_NAT_F_PERSISTENT = 1 << 2
NX_NAT_F_PROTO_HASH = 1 << 3
NX_NAT_F_PROTO_RANDOM = 1 << 4


NXT_SET_ASYNC_CONFIG = 19
NX_ASYNC_CONFIG_PACK_STR = "!6I"  # packet_in_mask[2], port_status_mask[2], flow_removed_mask[2]


class NXTSetAsyncConfig(_NXMsg):
    """OF1.0 spelling of SET_ASYNC: [master/equal, slave] masks per kind."""
    subtype = NXT_SET_ASYNC_CONFIG

    def body(self):
        return struct.pack(NX_ASYNC_CONFIG_PACK_STR, *self.packet_in_mask,
                           *self.port_status_mask, *self.flow_removed_mask)


_parse_base3 = parse


def parse(dp, subtype: int, buf: bytes, off: int, end: int):  # noqa: F811
    if subtype == NXT_SET_ASYNC_CONFIG:
        v = struct.unpack_from(NX_ASYNC_CONFIG_PACK_STR, buf, off)
        return NXTSetAsyncConfig(dp, packet_in_mask=list(v[0:2]),
                                 port_status_mask=list(v[2:4]), flow_removed_mask=list(v[4:6]))
    return _parse_base3(dp, subtype, buf, off, end)


# Flow monitors (OVS include/openflow/nicira-ext.h; the ONF 1.3 extension,
# ONFST/ONFT 1870, reuses the update layout with an OXM ofp_match).
NXST_FLOW_MONITOR = 2                     # vendor stats subtype (request and reply)
NXT_FLOW_MONITOR_CANCEL = 21              # OF1.0 only; OF1.3: ONFT 1870; OF1.4+: command=DELETE
NXT_FLOW_MONITOR_PAUSED = 22              # RESUMED = 23; no body
ONF_FLOW_MONITOR = 1870                   # ONFST multipart exp_type and ONFT cancel message
ONF_FLOW_MONITOR_PAUSED = 1871            # RESUMED = 1872; no body
NX_FLOW_MONITOR_REQUEST_PACK_STR = "!IHHHB5s"   # id, flags, out_port, match_len, table_id, zeros
ONF_FLOW_MONITOR_REQUEST_PACK_STR = "!IHHIB3s"  # id, flags, match_len, out_port, table_id, zeros
NX_FLOW_MONITOR_CANCEL_PACK_STR = "!I"           # id
# length, event, reason, priority, idle_timeout, hard_timeout, match_len, table_id, pad, cookie
NX_FLOW_UPDATE_FULL_PACK_STR = "!HHHHHHHBxQ"
NX_FLOW_UPDATE_ABBREV_PACK_STR = "!HHI"          # length, event, xid
NXFME_ADDED, NXFME_DELETED, NXFME_MODIFIED, NXFME_ABBREV = 0, 1, 2, 3
