"""OpenFlow 1.4 and 1.5 additions to the switch-side codec (`codec.py`).

Most 1.4/1.5 messages keep the 1.3 layouts; where they do, the 1.3 parser or
encoder is registered again for the newer os-ken classes.  Where they differ
(ports and port stats carry properties, async config is a property list,
1.5 PACKET_OUT carries a match, 1.5 flow stats/flow-removed/aggregate use
OXS `ofp_stats`, 1.5 group buckets have ids and properties, standard
BUNDLE_CONTROL/ADD), the code below follows os-ken's PACK_STR constants and
property classes.  Importing this module registers everything.
"""
from __future__ import annotations

import struct

from os_ken.lib import addrconv
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_4 as of14
from os_ken.ofproto import ofproto_v1_4_parser as p14
from os_ken.ofproto import ofproto_v1_5 as of15
from os_ken.ofproto import ofproto_v1_5_parser as p15

from . import codec
from .codec import (
    HEADER_SIZE, OFP14, OFP15, _PARSERS, _MP_ITEM, _ENCODERS, _finish, _unpack, _name, _mac,
    _match13, _instructions, parse, parse_header,
)
from .sp import OFError

VERSIONS = {OFP14: (of14, p14), OFP15: (of15, p15)}

# ---------------------------------------------------------------------- parse
for _v, (_of, _p) in VERSIONS.items():
    for _t, _c in ((_of.OFPT_ERROR, _p.OFPErrorMsg),
                   (_of.OFPT_ECHO_REQUEST, _p.OFPEchoRequest),
                   (_of.OFPT_ECHO_REPLY, _p.OFPEchoReply),
                   (_of.OFPT_BUNDLE_CONTROL, _p.OFPBundleCtrlMsg)):
        _PARSERS[(_v, _t)] = codec._oken(_c)
    # same layouts as 1.3, walked safely (see codec._parse_actions)
    _PARSERS[(_v, _of.OFPT_FLOW_MOD)] = codec._flow_mod13
    _PARSERS[(_v, _of.OFPT_METER_MOD)] = codec._p13_meter_mod
    for _t, _c in ((_of.OFPT_HELLO, _p.OFPHello),
                   (_of.OFPT_FEATURES_REQUEST, _p.OFPFeaturesRequest),
                   (_of.OFPT_GET_CONFIG_REQUEST, _p.OFPGetConfigRequest),
                   (_of.OFPT_BARRIER_REQUEST, _p.OFPBarrierRequest),
                   (_of.OFPT_GET_ASYNC_REQUEST, _p.OFPGetAsyncRequest)):
        _PARSERS[(_v, _t)] = codec._empty(_c)
_PARSERS[(OFP14, of14.OFPT_GROUP_MOD)] = codec._p13_group_mod


def _reg(msg_type, versions=(OFP14, OFP15)):
    def register(fn):
        for v in versions:
            _PARSERS[(v, msg_type)] = fn
        return fn
    return register


@_reg(of14.OFPT_SET_CONFIG)
def _set_config(dp, version, msg_type, msg_len, xid, buf):
    flags, miss = _unpack(of13.OFP_SWITCH_CONFIG_PACK_STR, buf)
    return _finish(dp.ofproto_parser.OFPSetConfig(dp, flags, miss), version, msg_type, msg_len,
                   xid, buf)


@_reg(of14.OFPT_PACKET_OUT)
def _packet_out(dp, version, msg_type, msg_len, xid, buf):
    P = dp.ofproto_parser
    if version == OFP14:
        buffer_id, in_port, actions_len = _unpack(of14.OFP_PACKET_OUT_PACK_STR, buf)
        off = HEADER_SIZE + struct.calcsize(of14.OFP_PACKET_OUT_PACK_STR)
        match = None
    else:
        buffer_id, actions_len = _unpack(of15.OFP_PACKET_OUT_0_PACK_STR, buf)
        off = HEADER_SIZE + struct.calcsize(of15.OFP_PACKET_OUT_0_PACK_STR)
        match, off = codec.parse_match13(P, buf, off, msg_len)
        in_port = None
    if off + actions_len > msg_len:
        raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN)
    actions = codec._parse_actions(P, buf, off, off + actions_len)
    data = buf[off + actions_len:msg_len]
    if version == OFP14:
        msg = P.OFPPacketOut(dp, buffer_id, in_port, actions, data)
    else:
        msg = P.OFPPacketOut(dp, buffer_id, match, actions, data)
        msg.in_port = dict(match._fields2).get("in_port", of13.OFPP_CONTROLLER)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_reg(of14.OFPT_PORT_MOD)
def _port_mod(dp, version, msg_type, msg_len, xid, buf):
    port_no, hw_addr, config, mask = _unpack(of14.OFP_PORT_MOD_PACK_STR, buf)
    msg = dp.ofproto_parser.OFPPortMod(dp, port_no, addrconv.mac.bin_to_text(hw_addr), config,
                                       mask, [])
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_reg(of14.OFPT_TABLE_MOD)
def _table_mod(dp, version, msg_type, msg_len, xid, buf):
    table_id, config = _unpack(of14.OFP_TABLE_MOD_PACK_STR, buf)
    msg = dp.ofproto_parser.OFPTableMod(dp, table_id, config, [])
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_reg(of14.OFPT_ROLE_REQUEST)
def _role_request(dp, version, msg_type, msg_len, xid, buf):
    P = dp.ofproto_parser
    if version == OFP14:
        role, generation_id = _unpack(of14.OFP_ROLE_REQUEST_PACK_STR, buf)
        msg = P.OFPRoleRequest(dp, role, generation_id)
    else:
        role, short_id, generation_id = _unpack(of15.OFP_ROLE_REQUEST_PACK_STR, buf)
        msg = P.OFPRoleRequest(dp, role, short_id, generation_id)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


# async config: property type -> (kind, index 0 = master/equal, 1 = slave)
ASYNC_PROPS = {
    of14.OFPACPT_PACKET_IN_SLAVE: ("packet_in", 1), of14.OFPACPT_PACKET_IN_MASTER: ("packet_in", 0),
    of14.OFPACPT_PORT_STATUS_SLAVE: ("port_status", 1),
    of14.OFPACPT_PORT_STATUS_MASTER: ("port_status", 0),
    of14.OFPACPT_FLOW_REMOVED_SLAVE: ("flow_removed", 1),
    of14.OFPACPT_FLOW_REMOVED_MASTER: ("flow_removed", 0),
    of14.OFPACPT_ROLE_STATUS_SLAVE: ("role_status", 1),
    of14.OFPACPT_ROLE_STATUS_MASTER: ("role_status", 0),
    of14.OFPACPT_TABLE_STATUS_SLAVE: ("table_status", 1),
    of14.OFPACPT_TABLE_STATUS_MASTER: ("table_status", 0),
    of14.OFPACPT_REQUESTFORWARD_SLAVE: ("requestforward", 1),
    of14.OFPACPT_REQUESTFORWARD_MASTER: ("requestforward", 0),
}


@_reg(of14.OFPT_SET_ASYNC)
def _set_async(dp, version, msg_type, msg_len, xid, buf):
    props = []
    off = HEADER_SIZE
    while off < msg_len:
        ptype, plen = _unpack("!HH", buf, off)
        if plen < 4 or off + plen > msg_len:
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN)
        if ptype in ASYNC_PROPS:
            if plen != 8:
                raise OFError(of14.OFPET_ASYNC_CONFIG_FAILED, of14.OFPACFC_INVALID)
            (mask,) = _unpack("!I", buf, off + 4)
            props.append(dp.ofproto_parser.OFPAsyncConfigPropReasons(ptype, plen, mask))
        elif ptype not in (of14.OFPACPT_EXPERIMENTER_SLAVE, of14.OFPACPT_EXPERIMENTER_MASTER):
            raise OFError(of14.OFPET_ASYNC_CONFIG_FAILED, of14.OFPACFC_UNSUPPORTED)
        off += plen + (-plen % 8)
    msg = dp.ofproto_parser.OFPSetAsync(dp, props)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


def _mp_classes(version):
    P = VERSIONS[version][1]
    of = VERSIONS[version][0]
    flow = P.OFPFlowDescStatsRequest if version == OFP15 else P.OFPFlowStatsRequest
    meter_cfg = P.OFPMeterDescStatsRequest if version == OFP15 else P.OFPMeterConfigStatsRequest
    return {
        "bodyless": {of.OFPMP_DESC: P.OFPDescStatsRequest, 3: P.OFPTableStatsRequest,
                     of.OFPMP_GROUP_DESC: P.OFPGroupDescStatsRequest,
                     of.OFPMP_GROUP_FEATURES: P.OFPGroupFeaturesStatsRequest,
                     of.OFPMP_METER_FEATURES: P.OFPMeterFeaturesStatsRequest,
                     of.OFPMP_PORT_DESC: P.OFPPortDescStatsRequest},
        "flow": {1: flow, 2: P.OFPAggregateStatsRequest},
        "meter": {9: P.OFPMeterStatsRequest, 10: meter_cfg},
    }


_MPC = {v: _mp_classes(v) for v in VERSIONS}


@_reg(of14.OFPT_MULTIPART_REQUEST)
def _multipart(dp, version, msg_type, msg_len, xid, buf):
    P = dp.ofproto_parser
    mp_type, flags = _unpack(of13.OFP_MULTIPART_REQUEST_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of13.OFP_MULTIPART_REQUEST_PACK_STR)
    c = _MPC[version]
    if mp_type in c["bodyless"]:
        msg = c["bodyless"][mp_type](dp, flags)
    elif mp_type in c["flow"]:
        table_id, out_port, out_group, cookie, cookie_mask = _unpack(
            of13.OFP_FLOW_STATS_REQUEST_0_PACK_STR, buf, off)
        off += struct.calcsize(of13.OFP_FLOW_STATS_REQUEST_0_PACK_STR)
        match, _ = codec.parse_match13(P, buf, off, msg_len)
        msg = c["flow"][mp_type](dp, flags, table_id, out_port, out_group, cookie, cookie_mask,
                                 match)
    elif mp_type == 4:
        (port_no,) = _unpack(of13.OFP_PORT_STATS_REQUEST_PACK_STR, buf, off)
        msg = P.OFPPortStatsRequest(dp, flags, port_no)
    elif mp_type == 5:
        port_no, queue_id = _unpack(of13.OFP_QUEUE_STATS_REQUEST_PACK_STR, buf, off)
        msg = P.OFPQueueStatsRequest(dp, flags, port_no, queue_id)
    elif mp_type == 6:
        (group_id,) = _unpack(of13.OFP_GROUP_STATS_REQUEST_PACK_STR, buf, off)
        msg = P.OFPGroupStatsRequest(dp, flags, group_id)
    elif mp_type in c["meter"]:
        (meter_id,) = _unpack(of13.OFP_METER_MULTIPART_REQUEST_PACK_STR, buf, off)
        msg = c["meter"][mp_type](dp, flags, meter_id)
    elif mp_type == 12:
        msg = P.OFPTableFeaturesStatsRequest(dp, flags, [])
        msg.set_request = msg_len > off
    elif mp_type == of14.OFPMP_FLOW_MONITOR:
        msg = codec.monitor.parse_request(dp, "of14", buf, off, msg_len)
    else:
        raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_MULTIPART)
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_reg(of14.OFPT_BUNDLE_ADD_MESSAGE)
def _bundle_add(dp, version, msg_type, msg_len, xid, buf):
    bundle_id, flags = _unpack(of14.OFP_BUNDLE_ADD_MSG_0_PACK_STR, buf)
    off = HEADER_SIZE + struct.calcsize(of14.OFP_BUNDLE_ADD_MSG_0_PACK_STR)
    inner_buf = buf[off:msg_len]
    if len(inner_buf) < HEADER_SIZE:
        raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN)
    inner_len = parse_header(inner_buf)[2]
    if inner_len < HEADER_SIZE or inner_len > len(inner_buf):
        raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN)
    inner = parse(inner_buf[:inner_len])
    msg = dp.ofproto_parser.OFPBundleAddMsg(dp, bundle_id, flags, inner, [])
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_reg(of14.OFPT_EXPERIMENTER)
def _experimenter(dp, version, msg_type, msg_len, xid, buf):
    # same experimenter messages as 1.3 (Nicira), minus the ONF bundle extension
    return codec._experimenter_common(dp, version, msg_type, msg_len, xid, buf, onf_bundles=False)


# ------------------------------------------------------------------ serialize
def _same_as_13(cls13, *classes):
    for c in classes:
        _ENCODERS[c] = _ENCODERS[cls13]


_same_as_13(codec.p13.OFPHello, p14.OFPHello, p15.OFPHello)
_same_as_13(codec.p13.OFPSwitchFeatures, p14.OFPSwitchFeatures, p15.OFPSwitchFeatures)
_same_as_13(codec.p13.OFPGetConfigReply, p14.OFPGetConfigReply, p15.OFPGetConfigReply)
_same_as_13(codec.p13.OFPBarrierReply, p14.OFPBarrierReply, p15.OFPBarrierReply)
_same_as_13(codec.p13.OFPPacketIn, p14.OFPPacketIn, p15.OFPPacketIn)
_same_as_13(codec.p13.OFPRoleReply, p14.OFPRoleReply)


def _enc(*classes):
    def register(fn):
        for c in classes:
            _ENCODERS[c] = fn
        return fn
    return register


@_enc(p15.OFPRoleReply)
def _role_reply15(msg):
    return struct.pack(of15.OFP_ROLE_REQUEST_PACK_STR, msg.role, getattr(msg, "short_id", 0),
                       msg.generation_id)


@_enc(p14.OFPGetAsyncReply, p15.OFPGetAsyncReply)
def _async_reply(msg):
    out = b""
    for p in msg.properties:
        out += bytes(p.serialize())
    return out


def port14(p) -> bytes:
    """ofp_port of 1.4/1.5: fixed part plus one ethernet property."""
    eth = struct.pack(of14.OFP_PORT_DESC_PROP_ETHERNET_PACK_STR, of14.OFPPDPT_ETHERNET,
                      of14.OFP_PORT_DESC_PROP_ETHERNET_SIZE, p.curr, p.advertised, p.supported,
                      p.peer, p.curr_speed, p.max_speed)
    length = of14.OFP_PORT_SIZE + len(eth)
    return struct.pack(of14.OFP_PORT_PACK_STR, p.port_no, length, _mac(p.hw_addr), _name(p.name),
                       p.config, p.state) + eth


@_enc(p14.OFPPortStatus, p15.OFPPortStatus)
def _port_status14(msg):
    return struct.pack("!B7x", msg.reason) + port14(msg.desc)


@_enc(p14.OFPFlowRemoved)
def _flow_removed14(msg):
    return struct.pack(of14.OFP_FLOW_REMOVED_PACK_STR0, msg.cookie, msg.priority, msg.reason,
                       msg.table_id, msg.duration_sec, msg.duration_nsec, msg.idle_timeout,
                       msg.hard_timeout, msg.packet_count, msg.byte_count) + _match13(msg.match)


def _stats15(duration=None, packet_count=None, byte_count=None, flow_count=None,
             idle_time=None) -> bytearray:
    kw = {}
    if duration is not None:
        kw["duration"] = duration
    if idle_time is not None:
        kw["idle_time"] = idle_time
    if flow_count is not None:
        kw["flow_count"] = flow_count
    if packet_count is not None:
        kw["packet_count"] = packet_count
    if byte_count is not None:
        kw["byte_count"] = byte_count
    buf = bytearray()
    p15.OFPStats(**kw).serialize(buf, 0)
    return buf


@_enc(p15.OFPFlowRemoved)
def _flow_removed15(msg):
    m = _match13(msg.match)
    st = _stats15(duration=(msg.duration_sec, msg.duration_nsec),
                  packet_count=msg.packet_count, byte_count=msg.byte_count)
    return struct.pack(of15.OFP_FLOW_REMOVED_PACK_STR0, msg.table_id, msg.reason, msg.priority,
                       msg.idle_timeout, msg.hard_timeout, msg.cookie) + m + st


# ---- multipart bodies
def _mp(*classes):
    def register(fn):
        for c in classes:
            _MP_ITEM[c] = fn
        return fn
    return register


for _c14, _c15, _c13 in (
        (p14.OFPDescStatsReply, p15.OFPDescStatsReply, codec.p13.OFPDescStatsReply),
        (p14.OFPQueueStatsReply, p15.OFPQueueStatsReply, codec.p13.OFPQueueStatsReply),
        (p14.OFPTableStatsReply, p15.OFPTableStatsReply, codec.p13.OFPTableStatsReply),
        (p14.OFPGroupStatsReply, p15.OFPGroupStatsReply, codec.p13.OFPGroupStatsReply),
        (p14.OFPGroupFeaturesStatsReply, p15.OFPGroupFeaturesStatsReply,
         codec.p13.OFPGroupFeaturesStatsReply),
        (p14.OFPMeterStatsReply, p15.OFPMeterStatsReply, codec.p13.OFPMeterStatsReply),
        (p14.OFPMeterConfigStatsReply, p15.OFPMeterDescStatsReply,
         codec.p13.OFPMeterConfigStatsReply),
        (p14.OFPTableFeaturesStatsReply, p15.OFPTableFeaturesStatsReply,
         codec.p13.OFPTableFeaturesStatsReply),
        (p14.OFPGroupDescStatsReply, None, codec.p13.OFPGroupDescStatsReply),
        (p14.OFPAggregateStatsReply, None, codec.p13.OFPAggregateStatsReply),
        (p14.OFPMeterFeaturesStatsReply, None, codec.p13.OFPMeterFeaturesStatsReply)):
    for _c in (_c14, _c15):
        if _c is not None:
            _MP_ITEM[_c] = _MP_ITEM[_c13]


@_mp(p14.OFPFlowStatsReply)
def _flow14(msg):
    out = []
    for s in msg.body:
        tail = _match13(s.match) + _instructions(s.instructions)
        out.append(struct.pack(of14.OFP_FLOW_STATS_0_PACK_STR, of14.OFP_FLOW_STATS_0_SIZE + len(tail),
                               s.table_id, s.duration_sec, s.duration_nsec, s.priority,
                               s.idle_timeout, s.hard_timeout, s.flags, s.importance, s.cookie,
                               s.packet_count, s.byte_count) + tail)
    return out


@_mp(p15.OFPFlowDescStatsReply)
def _flow_desc15(msg):
    out = []
    for s in msg.body:
        tail = _match13(s.match) + s.stats_bytes + _instructions(s.instructions)
        out.append(struct.pack(of15.OFP_FLOW_DESC_0_PACK_STR, of15.OFP_FLOW_DESC_0_SIZE + len(tail),
                               s.table_id, s.priority, s.idle_timeout, s.hard_timeout, s.flags,
                               s.importance, s.cookie) + tail)
    return out


@_mp(p15.OFPAggregateStatsReply)
def _agg15(msg):
    b = msg.body
    return [bytes(_stats15(packet_count=b.packet_count, byte_count=b.byte_count,
                           flow_count=b.flow_count))]


@_mp(p14.OFPPortStatsReply, p15.OFPPortStatsReply)
def _port_stats14(msg):
    out = []
    for s in msg.body:
        (port_no, rx_p, tx_p, rx_b, tx_b, rx_d, tx_d, rx_e, tx_e, frame, over, crc, coll,
         dsec, dnsec) = s
        eth = struct.pack(of14.OFP_PORT_STATS_PROP_ETHERNET_PACK_STR, of14.OFPPSPT_ETHERNET,
                          of14.OFP_PORT_STATS_PROP_ETHERNET_SIZE, frame, over, crc, coll)
        length = of14.OFP_PORT_STATS_SIZE + len(eth)
        out.append(struct.pack(of14.OFP_PORT_STATS_PACK_STR, length, port_no, dsec, dnsec,
                               rx_p, tx_p, rx_b, tx_b, rx_d, tx_d, rx_e, tx_e) + eth)
    return out


@_mp(p14.OFPPortDescStatsReply, p15.OFPPortDescStatsReply)
def _port_desc14(msg):
    return [port14(p) for p in msg.body]


@_mp(p15.OFPGroupDescStatsReply)
def _group_desc15(msg):
    out = []
    for s in msg.body:
        buckets = bytearray()
        for b in s.buckets:
            b.serialize(buckets, len(buckets))
        head = struct.pack(of15.OFP_GROUP_DESC_STATS_PACK_STR,
                           of15.OFP_GROUP_DESC_STATS_SIZE + len(buckets), s.type, s.group_id,
                           len(buckets))
        out.append(head + buckets)
    return out


# OVS (3.1) still sends and expects the 16-byte 1.3 ofp_meter_features in 1.5,
# without the 1.5 `features` word: follow the peer that matters (ovn-controller).
_MP_ITEM[p15.OFPMeterFeaturesStatsReply] = _MP_ITEM[codec.p13.OFPMeterFeaturesStatsReply]


@_reg(of15.OFPT_GROUP_MOD, versions=(OFP15,))
def _group_mod15(dp, version, msg_type, msg_len, xid, buf):
    """os-ken 4.2's 1.5 bucket parser reads past each bucket's end; parse the
    buckets here with the same structs and property classes."""
    command, type_, group_id, array_len, command_bucket_id = _unpack(
        of15.OFP_GROUP_MOD_PACK_STR, buf)
    off = of15.OFP_GROUP_MOD_SIZE
    end = off + array_len
    if end > msg_len:
        raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN)
    buckets = []
    while off < end:
        blen, alen, bucket_id = _unpack(of15.OFP_BUCKET_PACK_STR, buf, off)
        if blen < of15.OFP_BUCKET_SIZE or off + blen > end or alen > blen - of15.OFP_BUCKET_SIZE:
            raise OFError(of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_BAD_BUCKET)
        a0 = off + of15.OFP_BUCKET_SIZE
        actions = codec._parse_actions(p15, buf, a0, a0 + alen)
        rest = buf[a0 + alen:off + blen]
        props = []
        while rest:
            prop, rest = p15.OFPGroupBucketProp.parse(rest)
            props.append(prop)
        buckets.append(p15.OFPBucket(bucket_id, actions, props))
        off += blen
    msg = p15.OFPGroupMod(dp, command, type_, group_id, command_bucket_id, buckets, [])
    return _finish(msg, version, msg_type, msg_len, xid, buf)


@_enc(p14.OFPRoleStatus, p15.OFPRoleStatus)
def _role_status(msg):
    return struct.pack(of14.OFP_ROLE_STATUS_PACK_STR, msg.role, msg.reason, msg.generation_id)
