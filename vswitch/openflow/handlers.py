"""OpenFlow semantics: decoded os-ken messages in, os-ken replies out.

`Handlers.handle(channel, msg, now)` is called for every message a connection
decodes.  It returns the replies for that connection (STYLE.md §3: build
messages here, one sender in the manager sends them) and raises `OFError`
for the caller to turn into an OFPT_ERROR carrying the offending bytes.
Effects on *other* connections (FLOW_REMOVED after a delete, a new master
demoting the old one) go through `SwitchContext.broadcast_flow_removed`.

Per-connection state (role, async masks, flow/packet-in formats, open
bundles, miss_send_len) lives in `Channel`; switch-wide state (datapath id,
generation id, the pipeline and backend) lives in `SwitchContext`.  Slow-path
objects are only built through `convert.py`.
"""
from __future__ import annotations

import copy
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13
from os_ken.ofproto import ofproto_v1_4 as of14

from . import codec, convert, monitor, nx, sp
from .sp import OFError

VERSION_STRING = "pyvswitch 0.1"
N_TABLES = 254
NO_BUFFER = 0xFFFFFFFF
CAPABILITIES13 = (of13.OFPC_FLOW_STATS | of13.OFPC_TABLE_STATS | of13.OFPC_PORT_STATS
                  | of13.OFPC_GROUP_STATS | of13.OFPC_QUEUE_STATS)
CAPABILITIES10 = (of10.OFPC_FLOW_STATS | of10.OFPC_TABLE_STATS | of10.OFPC_PORT_STATS
                  | of10.OFPC_QUEUE_STATS | of10.OFPC_ARP_MATCH_IP)
ACTIONS10 = 0xFFF

ROLE_EQUAL, ROLE_MASTER, ROLE_SLAVE = of13.OFPCR_ROLE_EQUAL, of13.OFPCR_ROLE_MASTER, of13.OFPCR_ROLE_SLAVE
PIF_STANDARD, PIF_NXT_PACKET_IN, PIF_NXT_PACKET_IN2 = 0, 1, 2  # NXPIF_*

# default async config, OF1.3 §7.3.10: [master/equal, slave]
DEFAULT_ASYNC = {
    "packet_in": [(1 << of13.OFPR_NO_MATCH) | (1 << of13.OFPR_ACTION), 0],
    "port_status": [0x7, 0x7],
    "flow_removed": [0xF, 0],
    "role_status": [0x7, 0x7],
    "table_status": [0x3, 0x3],
    "requestforward": [0x3, 0x3],
}

# messages a slave may not send (OF1.3 §6.3.5)
_WRITE_MSGS = {"OFPFlowMod", "NXTFlowMod", "OFPPacketOut", "OFPGroupMod", "OFPPortMod",
               "OFPTableMod", "OFPMeterMod", "ONFBundleCtrlMsg", "ONFBundleAddMsg"}


class _Rec:
    """Plain attribute bag for reply bodies os-ken has no constructor for."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


@dataclass
class Bundle:
    flags: int
    messages: list = field(default_factory=list)
    closed: bool = False


@dataclass
class Channel:
    """What the handlers remember about one controller connection."""
    version: int
    send_async: Callable[[Any], None] = lambda msg: None
    role: int = ROLE_EQUAL
    miss_send_len: int = 128
    flow_format: int = nicira_ext.NXFF_OPENFLOW10
    packet_in_format: int = PIF_STANDARD
    table_id_enabled: bool = False
    controller_id: int = 0
    async_masks: dict = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ASYNC.items()})
    bundles: dict = field(default_factory=dict)
    #: flow monitors by id (monitor.py); replaced, never mutated, on change
    monitors: dict = field(default_factory=dict)
    #: bytes waiting to be sent to this controller (flow monitors pause past a limit)
    backlog: Callable[[], int] = lambda: 0
    #: flow monitors paused: the rules added or modified since, by id, as
    #: (rule, added since); else None
    monitor_paused: Optional[dict] = None

    @property
    def dp(self):
        return codec.datapath(self.version)

    def wants(self, kind: str, reason: int) -> bool:
        idx = 1 if self.role == ROLE_SLAVE else 0
        return bool(self.async_masks[kind][idx] & (1 << reason))


class SwitchContext:
    """Switch-wide facts shared by every connection of one bridge."""

    def __init__(self, bridge_name: str, pipeline, backend, datapath_id: int):
        self.bridge_name = bridge_name
        self.pipeline = pipeline
        self.backend = backend
        self.datapath_id = datapath_id
        self.frag_flags = 0
        self.generation_id: Optional[int] = None
        self.channels: list[Channel] = []
        self.deferred: Optional[list] = None
        #: GENEVE option -> tun_metadataN map (NXT_TLV_TABLE_MOD): index -> (class, type, len)
        self.tlv_map: dict[int, tuple[int, int, int]] = {}
        #: tun_metadata index -> slow-path slot (the flow key holds 8 options)
        self.tlv_slots: dict[int, int] = {}
        #: flow monitors (monitor.py): whether the pipeline reports rule
        #: changes, what it calls with each (the manager wraps it to report
        #: changes made outside a handler), and the changes not yet reported,
        #: each with the (channel, xid) of the message that made it, or None
        self.monitoring = False
        self.rule_monitor_hook = self.record_rule_change
        self.rule_changes: list = []
        self.origin: Optional[tuple] = None     # (channel, xid, thread ident) in a handler

    def record_rule_change(self, change) -> bool:
        """The pipeline's rule_monitor.  True if the change came from outside
        a handler (expiry, learning on the datapath thread): someone must
        call report_rule_changes() later."""
        origin = self.origin
        if origin is not None and origin[2] != threading.get_ident():
            origin = None
        self.rule_changes.append((change, origin and origin[:2]))
        return origin is None

    def report_rule_changes(self) -> None:
        changes, self.rule_changes = self.rule_changes, []
        if changes:
            monitor.report(self, changes)

    def slot_map(self) -> dict[int, tuple[int, int, int]]:
        """The TLV map by slow-path slot: what the pipeline and tunnels use."""
        return {self.tlv_slots[i]: e for i, e in self.tlv_map.items()}

    def broadcast_flow_removed(self, events, now: float) -> None:
        if self.deferred is not None:
            self.deferred.extend(events)
            return
        for ch in self.channels:
            for ev in events:
                msg = flow_removed_msg(ch, ev, now)
                if msg is not None:
                    ch.send_async(msg)


def _new(cls, dp, **kw):
    """Build an os-ken message; OF1.0 reply classes only take `datapath`."""
    try:
        return cls(dp, **kw)
    except TypeError:
        obj = cls(dp)
        for k, v in kw.items():
            setattr(obj, k, v)
        return obj


def port_config(port) -> int:
    """OFPPC_* bits of a slow-path Port (booleans there, bits on the wire)."""
    if isinstance(getattr(port, "config", None), int):
        return port.config
    bits = 0
    for attr, bit in (("port_down", of13.OFPPC_PORT_DOWN), ("no_recv", of13.OFPPC_NO_RECV),
                      ("no_flood", of10.OFPPC_NO_FLOOD), ("no_fwd", of13.OFPPC_NO_FWD),
                      ("no_packet_in", of13.OFPPC_NO_PACKET_IN)):
        if getattr(port, attr, False):
            bits |= bit
    return bits


def port_state(port) -> int:
    if isinstance(getattr(port, "state", None), int):
        return port.state
    bits = 0
    if getattr(port, "link_down", False):
        bits |= of13.OFPPS_LINK_DOWN
    if getattr(port, "blocked", False):
        bits |= of13.OFPPS_BLOCKED
    if getattr(port, "live", False):
        bits |= of13.OFPPS_LIVE
    return bits


def _hw_text(port) -> str:
    hw = getattr(port, "hw_addr", "00:00:00:00:00:00")
    return hw if isinstance(hw, str) else ":".join(f"{b:02x}" for b in bytes(hw))


def _port_obj(version, port, P):
    hw = _hw_text(port)
    cfg, state = port_config(port), port_state(port)
    if version == codec.OFP10:
        cfg &= 0x7F
        state &= of10.OFPPS_LINK_DOWN
    curr = getattr(port, "curr", 0)
    name = port.name.encode()[:15]
    if version == codec.OFP10:
        return P.OFPPhyPort(convert.port_to10(port.ofport), hw, name, cfg, state, curr,
                            getattr(port, "advertised", 0), getattr(port, "supported", 0),
                            getattr(port, "peer", 0))
    # the 1.3 namedtuple carries the data for the 1.3 and 1.4/1.5 (property) encoders
    return p13.OFPPort(port.ofport, hw, name, cfg, state, curr, getattr(port, "advertised", 0),
                       getattr(port, "supported", 0), getattr(port, "peer", 0),
                       getattr(port, "curr_speed", 0), getattr(port, "max_speed", 0))


def _duration(obj, now):
    d = getattr(obj, "duration", None)
    if d is None:
        created = getattr(obj, "created", now)
        d = max(0.0, now - created)
    sec = int(d)
    return sec, int((d - sec) * 1e9)


def flow_removed_msg(ch: Channel, ev, now: float):
    """FLOW_REMOVED for one slow-path FlowRemoved(rule, reason, duration), or None."""
    reason = getattr(ev, "reason", of13.OFPRR_DELETE)
    if not ch.wants("flow_removed", reason):
        return None
    sec, nsec = _duration(ev, now)
    ev = getattr(ev, "rule", ev)
    P = ch.dp.ofproto_parser
    if ch.version == codec.OFP10:
        if ch.flow_format == nicira_ext.NXFF_NXM:
            nxm = codec.serialize_oxm_fields(convert.match_to_tlvs(ev.match, nxm=True))
            return nx.NXTFlowRemovedNXM(
                ch.dp, cookie=getattr(ev, "cookie", 0), priority=getattr(ev, "priority", 0),
                reason=reason, duration_sec=sec, duration_nsec=nsec,
                idle_timeout=getattr(ev, "idle_timeout", 0),
                packet_count=getattr(ev, "packet_count", 0),
                byte_count=getattr(ev, "byte_count", 0), nxm=nxm)
        return _new(P.OFPFlowRemoved, ch.dp, cookie=getattr(ev, "cookie", 0),
                    priority=getattr(ev, "priority", 0), reason=reason, duration_sec=sec,
                    duration_nsec=nsec, idle_timeout=getattr(ev, "idle_timeout", 0),
                    packet_count=getattr(ev, "packet_count", 0),
                    byte_count=getattr(ev, "byte_count", 0),
                    match=convert.match_to_ofp10(ev.match))
    return _new(P.OFPFlowRemoved, ch.dp, cookie=getattr(ev, "cookie", 0),
                priority=getattr(ev, "priority", 0), reason=reason,
                table_id=getattr(ev, "table_id", 0), duration_sec=sec, duration_nsec=nsec,
                idle_timeout=getattr(ev, "idle_timeout", 0),
                hard_timeout=getattr(ev, "hard_timeout", 0),
                packet_count=getattr(ev, "packet_count", 0),
                byte_count=getattr(ev, "byte_count", 0), match=convert.match_to_ofp13(ev.match))


def packet_in_msg(ch: Channel, ev):
    """PACKET_IN (or NXT_PACKET_IN2) for one slow-path packet-in event, or None."""
    reason = getattr(ev, "reason", of13.OFPR_NO_MATCH)
    if getattr(ev, "controller_id", 0) != ch.controller_id:   # OVS: ids must be equal
        return None
    if not ch.wants("packet_in", reason):
        return None
    data = bytes(ev.data)
    max_len = getattr(ev, "max_len", None)
    if max_len is None:
        max_len = ch.miss_send_len if reason == of13.OFPR_NO_MATCH else 0xFFFF
    if max_len != 0xFFFF:
        data = data[:max_len]
    total_len = getattr(ev, "total_len", len(ev.data))
    in_port = ev.in_port
    table_id = getattr(ev, "table_id", 0)
    cookie = getattr(ev, "cookie", 0xFFFFFFFFFFFFFFFF)
    if getattr(ev, "key", None) is not None:
        pi_match = convert.packet_in_match(ev.key)
    else:
        pi_match = convert.make_match({"in_port": (in_port, None)})
    P = ch.dp.ofproto_parser
    if ch.packet_in_format == PIF_NXT_PACKET_IN2:
        meta = codec.serialize_oxm_fields(convert.match_to_tlvs(pi_match))
        props = [
            _pi2_prop(P, nicira_ext.NXPINT_PACKET, bytes(data)),
            _pi2_prop(P, nicira_ext.NXPINT_FULL_LEN, struct.pack("!I", total_len)),
            _pi2_prop(P, nicira_ext.NXPINT_TABLE_ID, struct.pack("!B", table_id)),
            # 64-bit properties carry 4 pad bytes first (OVS ofpprop_put_be64)
            _pi2_prop(P, nicira_ext.NXPINT_COOKIE, struct.pack("!4xQ", cookie)),
            _pi2_prop(P, nicira_ext.NXPINT_REASON, struct.pack("!B", reason)),
            _pi2_prop(P, nicira_ext.NXPINT_METADATA, bytes(meta)),
        ]
        userdata = getattr(ev, "userdata", b"")
        if userdata:
            props.append(_pi2_prop(P, nicira_ext.NXPINT_USERDATA, bytes(userdata)))
        cont = getattr(ev, "continuation", None)
        if cont:
            # a nested property list: 4 pad bytes align it (OVS ofpprop_put_nested)
            props.append(_pi2_prop(P, nicira_ext.NXPINT_CONTINUATION, bytes(4) + bytes(cont)))
        # same layout in every version (OF1.0 VENDOR == OF1.2+ EXPERIMENTER)
        return getattr(P, "NXTPacketIn2", p13.NXTPacketIn2)(ch.dp, props)
    if ch.packet_in_format == PIF_NXT_PACKET_IN:
        nxm = codec.serialize_oxm_fields(convert.match_to_tlvs(pi_match, nxm=True))
        return nx.NXTPacketInNXM(ch.dp, buffer_id=NO_BUFFER, total_len=total_len,
                                 reason=reason, table_id=table_id, cookie=cookie, nxm=nxm,
                                 data=data)
    if ch.version == codec.OFP10:
        return P.OFPPacketIn(ch.dp, NO_BUFFER, total_len, convert.port_to10(in_port), reason, data)
    return P.OFPPacketIn(ch.dp, NO_BUFFER, total_len, reason, table_id, cookie,
                         convert.match_to_ofp13(pi_match), data)


class _PI2Prop(p13.NXTPacketIn2Prop):
    def __init__(self, type_, data):
        super().__init__(type_)
        self.data = data

    def serialize_body(self):
        return self.data


def _pi2_prop(P, type_, data):
    return _PI2Prop(type_, data)


def port_status_msg(ch: Channel, reason: int, port):
    if not ch.wants("port_status", reason):
        return None
    P = ch.dp.ofproto_parser
    return P.OFPPortStatus(ch.dp, reason, _port_obj(ch.version, port, P))


class Handlers:
    def __init__(self, switch: SwitchContext):
        self.sw = switch
        self._table = {}
        for name in dir(self):
            if name.startswith("h_"):
                self._table[name[2:]] = getattr(self, name)

    def handle(self, ch: Channel, msg, now: float) -> list:
        name = type(msg).__name__
        fn = self._table.get(name)
        if fn is None:
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_TYPE)
        if ch.role == ROLE_SLAVE and name in _WRITE_MSGS:
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_IS_SLAVE)
        convert.TLV_MAP.set(self.sw.slot_map())
        convert.TLV_SLOTS.set(self.sw.tlv_slots)
        sw = self.sw
        sw.origin = (ch, msg.xid, threading.get_ident())
        try:
            replies = fn(ch, msg, now) or []
        finally:
            sw.origin = None
            if sw.rule_changes:
                sw.report_rule_changes()
        for r in replies:
            if r.xid is None:
                r.xid = msg.xid
        return replies

    # ---- switch description and config
    def h_OFPFeaturesRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        if ch.version == codec.OFP10:
            ports = {convert.port_to10(p.ofport): _port_obj(ch.version, p, P)
                     for p in self._ports()}
            return [P.OFPSwitchFeatures(ch.dp, self.sw.datapath_id, 0, N_TABLES,
                                        CAPABILITIES10, ACTIONS10, ports)]
        return [P.OFPSwitchFeatures(ch.dp, self.sw.datapath_id, 0, N_TABLES, 0, CAPABILITIES13)]

    def h_OFPGetConfigRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        return [_new(P.OFPGetConfigReply, ch.dp, flags=self.sw.frag_flags,
                     miss_send_len=ch.miss_send_len)]

    def h_OFPSetConfig(self, ch, msg, now):
        self.sw.frag_flags = msg.flags & 3
        ch.miss_send_len = msg.miss_send_len
        # implicit table misses are truncated by the pipeline (switch-wide here;
        # OVS keeps it per connection)
        self.sw.pipeline.miss_send_len = msg.miss_send_len
        return []

    def h_OFPBarrierRequest(self, ch, msg, now):
        self.sw.backend.revalidate()
        return [ch.dp.ofproto_parser.OFPBarrierReply(ch.dp)]

    def _ports(self):
        return sorted(self.sw.pipeline.ports.values(), key=lambda p: p.ofport)

    # ---- stats
    def h_OFPDescStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        body = P.OFPDescStats(b"pyvswitch", b"pyvswitch", VERSION_STRING.encode(), b"None",
                              self.sw.bridge_name.encode())
        return [_new(P.OFPDescStatsReply, ch.dp, body=body)]

    def _flow_stats(self, ch, table_id, match, out_port, out_group, cookie, cookie_mask, now):
        return self.sw.pipeline.flow_stats(table_id=table_id, match=match, out_port=out_port,
                                           out_group=out_group, cookie=cookie,
                                           cookie_mask=cookie_mask)

    def _aggregate(self, table_id, match, out_port, out_group, cookie, cookie_mask, now):
        r = self.sw.pipeline.aggregate_stats(table_id=table_id, match=match, out_port=out_port,
                                             out_group=out_group, cookie=cookie,
                                             cookie_mask=cookie_mask)
        if isinstance(r, tuple):
            return r
        return r.packet_count, r.byte_count, r.flow_count

    def h_OFPFlowStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        if ch.version == codec.OFP10:
            match = convert.match_from_ofp10(msg.match)
            rules = self._flow_stats(ch, msg.table_id, match, convert.port_from10(msg.out_port),
                                     of13.OFPG_ANY, 0, 0, now)
            body = []
            for r in rules:
                sec, nsec = _duration(r, now)
                s = P.OFPFlowStats()
                s.table_id, s.match, s.duration_sec, s.duration_nsec = r.table_id, \
                    convert.match_to_ofp10(r.match), sec, nsec
                s.priority, s.idle_timeout, s.hard_timeout = r.priority, r.idle_timeout, r.hard_timeout
                s.cookie, s.packet_count, s.byte_count = r.cookie, r.packet_count, r.byte_count
                s.actions = convert.instructions_to_actions10(r.instructions)
                body.append(s)
            return [_new(P.OFPFlowStatsReply, ch.dp, body=body)]
        match = convert.match_from_ofp13(msg.match)
        rules = self._flow_stats(ch, msg.table_id, match, msg.out_port, msg.out_group,
                                 msg.cookie, msg.cookie_mask, now)
        body = []
        for r in rules:
            sec, nsec = _duration(r, now)
            kw = dict(table_id=r.table_id, duration_sec=sec, duration_nsec=nsec,
                      priority=r.priority, idle_timeout=r.idle_timeout,
                      hard_timeout=r.hard_timeout,
                      flags=convert.words_to_bits(convert.FLOW_FLAGS, r.flags),
                      cookie=r.cookie, packet_count=r.packet_count, byte_count=r.byte_count,
                      match=convert.match_to_ofp13(r.match),
                      instructions=convert.instructions_to_oken(r.instructions, ch.version))
            if ch.version == codec.OFP14:
                kw["importance"] = r.importance
            if ch.version >= codec.OFP15:
                from .codec15 import _stats15
                kw["importance"] = r.importance
                kw["stats_bytes"] = bytes(_stats15(duration=(sec, nsec),
                                                   packet_count=r.packet_count,
                                                   byte_count=r.byte_count))
                body.append(_Rec(**kw))
            else:
                body.append(P.OFPFlowStats(**kw))
        if ch.version >= codec.OFP15:
            return [P.OFPFlowDescStatsReply(ch.dp, body=body)]
        return [_new(P.OFPFlowStatsReply, ch.dp, body=body)]

    h_OFPFlowDescStatsRequest = h_OFPFlowStatsRequest

    def h_OFPAggregateStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        if ch.version == codec.OFP10:
            pk, by, fl = self._aggregate(msg.table_id, convert.match_from_ofp10(msg.match),
                                         convert.port_from10(msg.out_port), of13.OFPG_ANY, 0, 0, now)
        else:
            pk, by, fl = self._aggregate(msg.table_id, convert.match_from_ofp13(msg.match),
                                         msg.out_port, msg.out_group, msg.cookie,
                                         msg.cookie_mask, now)
        if ch.version >= codec.OFP15:
            body = _Rec(packet_count=pk, byte_count=by, flow_count=fl)
        else:
            body = P.OFPAggregateStats(pk, by, fl)
        return [_new(P.OFPAggregateStatsReply, ch.dp, body=body)]

    def h_NXFlowStatsRequest(self, ch, msg, now):
        tlvs, cookie, cookie_mask = convert.split_nxm_cookie(msg.nxm)
        rules = self._flow_stats(ch, msg.table_id, convert.match_from_tlvs(tlvs),
                                 convert.port_from10(msg.out_port), of13.OFPG_ANY, cookie,
                                 cookie_mask, now)
        body = []
        for r in rules:
            sec, nsec = _duration(r, now)
            s = p10.NXFlowStats()
            s.table_id, s.duration_sec, s.duration_nsec = r.table_id, sec, nsec
            s.priority, s.idle_timeout, s.hard_timeout = r.priority, r.idle_timeout, r.hard_timeout
            s.idle_age = s.hard_age = 0
            s.cookie, s.packet_count, s.byte_count = r.cookie, r.packet_count, r.byte_count
            s.nxm = convert.match_to_tlvs(r.match, nxm=True)
            s.actions = convert.instructions_to_actions10(r.instructions)
            body.append(s)
        reply = p10.NXFlowStatsReply(ch.dp)
        reply.body = body
        return [reply]

    def h_NXAggregateStatsRequest(self, ch, msg, now):
        tlvs, cookie, cookie_mask = convert.split_nxm_cookie(msg.nxm)
        pk, by, fl = self._aggregate(msg.table_id, convert.match_from_tlvs(tlvs),
                                     convert.port_from10(msg.out_port), of13.OFPG_ANY, cookie,
                                     cookie_mask, now)
        reply = p10.NXAggregateStatsReply(ch.dp)
        reply.body = p10.NXAggregateStats(pk, by, fl)
        return [reply]

    def h_OFPTableStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        stats = {}
        for s in self.sw.pipeline.table_stats():
            t = tuple(s) if isinstance(s, tuple) else (
                s.table_id, s.active_count, s.lookup_count, s.matched_count)
            stats[t[0]] = t
        body = []
        for t in range(N_TABLES):
            _, active, lookup, matched = stats.get(t, (t, 0, 0, 0))
            if ch.version == codec.OFP10:
                body.append(P.OFPTableStats(t, f"table{t}".encode(), of10.OFPFW_ALL, 1000000,
                                            active, lookup, matched))
            else:
                body.append(P.OFPTableStats(t, active, lookup, matched))
        return [_new(P.OFPTableStatsReply, ch.dp, body=body)]

    def h_OFPTableFeaturesStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        if getattr(msg, "set_request", False):
            raise OFError(of13.OFPET_TABLE_FEATURES_FAILED, of13.OFPTFFC_EPERM)
        return [_new(P.OFPTableFeaturesStatsReply, ch.dp, body=table_features13())]

    _PORT_STAT_FIELDS13 = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped",
                           "tx_dropped", "rx_errors", "tx_errors", "rx_frame_err",
                           "rx_over_err", "rx_crc_err", "collisions")

    def h_OFPPortStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        port_no = convert.port_from10(msg.port_no) if ch.version == codec.OFP10 else msg.port_no
        want = None if port_no == of13.OFPP_ANY else port_no
        if want is not None and want not in self.sw.pipeline.ports:
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_PORT)
        body = []
        for s in self.sw.backend.port_stats(want):
            get = (lambda k: s.get(k, 0)) if isinstance(s, dict) else (lambda k: getattr(s, k, 0))
            vals = [get(k) for k in self._PORT_STAT_FIELDS13]
            if ch.version == codec.OFP10:
                body.append((convert.port_to10(get("port_no")), *vals))
            else:
                body.append((get("port_no"), *vals, get("duration_sec"), get("duration_nsec")))
        return [_new(P.OFPPortStatsReply, ch.dp, body=body)]

    def h_OFPPortDescStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        return [_new(P.OFPPortDescStatsReply, ch.dp, body=[_port_obj(ch.version, p, P)
                                                     for p in self._ports()])]

    def h_PortDescStatsRequest10(self, ch, msg, now):
        return [codec.PortDescStatsReply10(ch.dp, [_port_obj(ch.version, p, ch.dp.ofproto_parser)
                                                   for p in self._ports()])]

    def h_OFPQueueStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        return [_new(P.OFPQueueStatsReply, ch.dp, body=[])]

    def h_OFPGroupStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        body = []
        for g in self.sw.pipeline.group_stats(msg.group_id):
            sec, nsec = _duration(g, now)
            counts = list(getattr(g, "bucket_counts", [])) or [[0, 0] for _ in g.buckets]
            body.append(P.OFPGroupStats(
                length=0, group_id=g.group_id, ref_count=self._group_refs(g.group_id),
                packet_count=g.packet_count, byte_count=g.byte_count,
                duration_sec=sec, duration_nsec=nsec,
                bucket_stats=[P.OFPBucketCounter(*c) for c in counts]))
        return [_new(P.OFPGroupStatsReply, ch.dp, body=body)]

    def h_OFPGroupDescStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        body = []
        types = convert._inverse(convert.GROUP_TYPES)
        for g in self.sw.pipeline.group_stats(of13.OFPG_ALL):
            buckets = [convert.bucket_to_oken(P, n, b, ch.version) for n, b in enumerate(g.buckets)]
            body.append(P.OFPGroupDescStats(types.get(g.type, g.type), g.group_id, buckets))
        return [_new(P.OFPGroupDescStatsReply, ch.dp, body=body)]

    def h_OFPGroupFeaturesStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        body = P.OFPGroupFeaturesStats(0xF, 0, [65535] * 4, [0x3FFF9] * 4)
        return [_new(P.OFPGroupFeaturesStatsReply, ch.dp, body=body)]

    def h_OFPMeterStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        body = []
        for m, flow_count in self.sw.pipeline.meter_stats(msg.meter_id):
            sec, nsec = _duration(m, now)
            kw = dict(meter_id=m.meter_id, len_=0, packet_in_count=m.packet_in_count,
                      byte_in_count=m.byte_in_count, duration_sec=sec, duration_nsec=nsec,
                      band_stats=[P.OFPMeterBandStats(*b) for b in m.band_counts])
            kw["ref_count" if ch.version >= codec.OFP15 else "flow_count"] = flow_count
            st = P.OFPMeterStats(**kw)
            st.flow_count = flow_count       # 1.5 calls it ref_count; same place on the wire
            body.append(st)
        return [_new(P.OFPMeterStatsReply, ch.dp, body=body)]

    def h_OFPMeterConfigStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        body = []
        for m, _ in self.sw.pipeline.meter_stats(msg.meter_id):
            bands = [convert.band_to_oken(P, b) for b in m.bands]
            cls = getattr(P, "OFPMeterConfigStats", None) or P.OFPMeterDescStats
            body.append(cls(flags=convert.words_to_bits(convert.METER_FLAGS, m.flags),
                            meter_id=m.meter_id, bands=bands))
        reply = getattr(P, "OFPMeterConfigStatsReply", None) or P.OFPMeterDescStatsReply
        return [reply(ch.dp, body=body)]

    h_OFPMeterDescStatsRequest = h_OFPMeterConfigStatsRequest

    def h_OFPMeterFeaturesStatsRequest(self, ch, msg, now):
        P = ch.dp.ofproto_parser
        kw = dict(max_meter=65536, band_types=(1 << of13.OFPMBT_DROP),
                  capabilities=of13.OFPMF_KBPS | of13.OFPMF_PKTPS | of13.OFPMF_BURST
                  | of13.OFPMF_STATS, max_bands=1, max_color=0)
        if "features" in P.OFPMeterFeaturesStats._fields:
            kw["features"] = 0
        body = [P.OFPMeterFeaturesStats(**kw)]
        return [_new(P.OFPMeterFeaturesStatsReply, ch.dp, body=body)]

    # ---- modifications
    def h_OFPFlowMod(self, ch, msg, now):
        if msg.version == codec.OFP10:
            msg.table_id_enabled = ch.table_id_enabled
        fm = convert.flow_mod_from_oken(msg)
        if msg.version == codec.OFP10 and fm.command.startswith("modify") and not \
                self.sw.pipeline.flow_stats(table_id=fm.table_id, match=fm.match):
            fm.command = "add"   # OF1.0: modifying nothing adds the flow
        if msg.buffer_id != NO_BUFFER and msg.buffer_id is not None:
            # we never buffer: OVS answers BUFFER_UNKNOWN after applying the mod
            self._apply_flow_mod(fm, now)
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BUFFER_UNKNOWN)
        self._apply_flow_mod(fm, now)
        return []

    h_NXTFlowMod = h_OFPFlowMod

    def _apply_flow_mod(self, fm, now):
        removed = self.sw.pipeline.flow_mod(fm, now) or []
        if removed:
            self.sw.broadcast_flow_removed(removed, now)

    def h_OFPGroupMod(self, ch, msg, now):
        removed = self.sw.pipeline.group_mod(convert.group_mod_from_oken(msg, ch.version), now)
        if removed:
            self.sw.broadcast_flow_removed(removed, now)
        return []

    def h_OFPMeterMod(self, ch, msg, now):
        removed = self.sw.pipeline.meter_mod(convert.meter_mod_from_oken(msg), now)
        if removed:
            self.sw.broadcast_flow_removed(removed, now)
        return []

    def h_OFPTableMod(self, ch, msg, now):
        self.sw.pipeline.table_mod(sp.TableMod(msg.table_id, msg.config))
        return []

    def _group_refs(self, group_id):
        n = 0
        for r in self.sw.pipeline.flow_stats():
            for i in r.instructions:
                n += any(type(a).__name__ == "Group" and a.group_id == group_id
                         for a in getattr(i, "actions", ()))
        return n

    def h_OFPPortMod(self, ch, msg, now):
        port_no = convert.port_from10(msg.port_no) if ch.version == codec.OFP10 else msg.port_no
        port = self.sw.pipeline.ports.get(port_no)
        if port is None:
            raise OFError(of13.OFPET_PORT_MOD_FAILED, of13.OFPPMFC_BAD_PORT)
        if msg.hw_addr.lower() != _hw_text(port).lower():
            raise OFError(of13.OFPET_PORT_MOD_FAILED, of13.OFPPMFC_BAD_HW_ADDR)
        self.sw.backend.port_mod(port_no, msg.config, msg.mask)
        return []

    def h_OFPPacketOut(self, ch, msg, now):
        if msg.buffer_id != NO_BUFFER:
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BUFFER_UNKNOWN)
        in_port = convert.port_from10(msg.in_port) if ch.version == codec.OFP10 else msg.in_port
        if in_port not in (of13.OFPP_CONTROLLER, of13.OFPP_ANY, of13.OFPP_LOCAL) \
                and in_port not in self.sw.pipeline.ports:
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_PORT)
        actions = list(convert.actions_from_oken(msg.actions, ch.version))
        validate = getattr(self.sw.pipeline, "validate_actions", None)
        if validate is not None:
            validate(actions)
        self.sw.backend.execute_packet_out(in_port, actions, bytes(msg.data or b""))
        return []

    # ---- roles and async config
    def h_OFPRoleRequest(self, ch, msg, now):
        role = msg.role
        if role not in (of13.OFPCR_ROLE_NOCHANGE, ROLE_EQUAL, ROLE_MASTER, ROLE_SLAVE):
            raise OFError(of13.OFPET_ROLE_REQUEST_FAILED, of13.OFPRRFC_BAD_ROLE)
        if role in (ROLE_MASTER, ROLE_SLAVE):
            gen = self.sw.generation_id
            if gen is not None and ((msg.generation_id - gen) & 0xFFFFFFFFFFFFFFFF) >= (1 << 63):
                raise OFError(of13.OFPET_ROLE_REQUEST_FAILED, of13.OFPRRFC_STALE)
            self.sw.generation_id = msg.generation_id
        if role != of13.OFPCR_ROLE_NOCHANGE:
            self._set_role(ch, role)
        gen = self.sw.generation_id if self.sw.generation_id is not None else 0xFFFFFFFFFFFFFFFF
        if ch.version >= codec.OFP15:
            return [ch.dp.ofproto_parser.OFPRoleReply(ch.dp, ch.role, 0, gen)]
        return [ch.dp.ofproto_parser.OFPRoleReply(ch.dp, ch.role, gen)]

    def _set_role(self, ch, role):
        if role == ROLE_MASTER:
            for other in self.sw.channels:
                if other is not ch and other.role == ROLE_MASTER:
                    other.role = ROLE_SLAVE
                    self._role_status(other)
        ch.role = role

    def _role_status(self, ch):
        """OF1.4+: tell a demoted master (OFPCRR_MASTER_REQUEST)."""
        if ch.version < codec.OFP14 or not ch.wants("role_status", of14.OFPCRR_MASTER_REQUEST):
            return
        gen = self.sw.generation_id if self.sw.generation_id is not None else 0xFFFFFFFFFFFFFFFF
        ch.send_async(ch.dp.ofproto_parser.OFPRoleStatus(
            ch.dp, ch.role, of14.OFPCRR_MASTER_REQUEST, gen, []))

    def h_NXTRoleRequest(self, ch, msg, now):
        # NX roles: 0 other(equal), 1 master, 2 slave
        role = {0: ROLE_EQUAL, 1: ROLE_MASTER, 2: ROLE_SLAVE}.get(msg.role)
        if role is None:
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_EPERM)
        self._set_role(ch, role)
        return [p10.NXTRoleReply(ch.dp, {ROLE_EQUAL: 0, ROLE_MASTER: 1, ROLE_SLAVE: 2}[role])]

    def h_OFPGetAsyncRequest(self, ch, msg, now):
        m = ch.async_masks
        P = ch.dp.ofproto_parser
        if ch.version >= codec.OFP14:
            from .codec15 import ASYNC_PROPS
            props = [P.OFPAsyncConfigPropReasons(t, 8, m.get(kind, [0, 0])[idx])
                     for t, (kind, idx) in sorted(ASYNC_PROPS.items())]
            return [P.OFPGetAsyncReply(ch.dp, props)]
        return [P.OFPGetAsyncReply(
            ch.dp, list(m["packet_in"]), list(m["port_status"]), list(m["flow_removed"]))]

    def h_OFPSetAsync(self, ch, msg, now):
        if ch.version >= codec.OFP14:
            from .codec15 import ASYNC_PROPS
            masks = {k: list(v) for k, v in ch.async_masks.items()}
            for p in msg.properties:
                kind, idx = ASYNC_PROPS[p.type]
                masks.setdefault(kind, [0, 0])[idx] = p.mask
            ch.async_masks = masks
            return []
        ch.async_masks = {"packet_in": list(msg.packet_in_mask),
                          "port_status": list(msg.port_status_mask),
                          "flow_removed": list(msg.flow_removed_mask)}
        return []

    # ---- Nicira session settings
    def h_NXTSetFlowFormat(self, ch, msg, now):
        if msg.format not in (nicira_ext.NXFF_OPENFLOW10, nicira_ext.NXFF_NXM):
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_EPERM)
        ch.flow_format = msg.format
        return []

    def h_NXTFlowModTableId(self, ch, msg, now):
        ch.table_id_enabled = bool(msg.set)
        return []

    def h_NXTSetPacketInFormat(self, ch, msg, now):
        if msg.format not in (PIF_STANDARD, PIF_NXT_PACKET_IN, PIF_NXT_PACKET_IN2):
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_EPERM)
        ch.packet_in_format = msg.format
        return []

    def h_NXTSetPacketInFormatMsg(self, ch, msg, now):
        if msg.packet_in_format not in (PIF_STANDARD, PIF_NXT_PACKET_IN, PIF_NXT_PACKET_IN2):
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_EPERM)
        ch.packet_in_format = msg.packet_in_format
        return []

    # ---- Nicira: GENEVE option map, conntrack flush
    def h_NXTTlvTableMod(self, ch, msg, now):
        """OpenFlow's 64 tun_metadata indexes share the flow key's 8 option
        slots: a mapped index gets its own number as slot when that is free,
        else the lowest free one; a ninth mapping is TABLE_FULL."""
        new, slots = dict(self.sw.tlv_map), dict(self.sw.tlv_slots)
        if msg.command == nx.NXTTMC_CLEAR:
            new, slots = {}, {}
        elif msg.command in (nx.NXTTMC_ADD, nx.NXTTMC_DELETE):
            seen = set()
            for cls, typ, length, index in msg.mappings:
                if index in seen:
                    raise _nx_error(NXTTMFC_DUP_ENTRY)
                seen.add(index)
                if msg.command == nx.NXTTMC_DELETE:
                    new.pop(index, None)
                    slots.pop(index, None)
                    continue
                if index >= TLV_MAX_INDEX:
                    raise _nx_error(NXTTMFC_BAD_FIELD_IDX)
                if length % 4 or not 0 < length <= TLV_MAX_LEN:
                    raise _nx_error(NXTTMFC_BAD_OPT_LEN)
                if new.get(index, (cls, typ, length)) != (cls, typ, length):
                    raise _nx_error(NXTTMFC_ALREADY_MAPPED)
                new[index] = (cls, typ, length)
                if index not in slots:
                    free = [s for s in range(TLV_MAX_FIELDS) if s not in slots.values()]
                    if not free:
                        raise _nx_error(NXTTMFC_TABLE_FULL)
                    slots[index] = index if index in free else free[0]
        else:
            raise _nx_error(NXTTMFC_BAD_COMMAND)
        self.sw.tlv_map, self.sw.tlv_slots = new, slots
        hook = getattr(self.sw.backend, "tlv_map_changed", None)
        if hook is not None:
            hook(self.sw.slot_map())
        return []

    def h_NXTTlvTableRequest(self, ch, msg, now):
        maps = [(c, t, ln, i) for i, (c, t, ln) in sorted(self.sw.tlv_map.items())]
        return [nx.NXTTlvTableReply(ch.dp, max_option_space=TLV_MAX_FIELDS * TLV_MAX_LEN,
                                    max_fields=TLV_MAX_FIELDS, mappings=maps)]

    def h_NXTSetAsyncConfig(self, ch, msg, now):
        ch.async_masks.update(packet_in=list(msg.packet_in_mask),
                              port_status=list(msg.port_status_mask),
                              flow_removed=list(msg.flow_removed_mask))
        return []

    def h_NXTSetControllerId(self, ch, msg, now):
        ch.controller_id = msg.controller_id
        return []

    def h_NXTResume(self, ch, msg, now):
        """Resume a paused pipeline run (controller(pause)): the backend owns the
        continuation format (slowpath/continuation.py) and raises NXR_STALE
        for one it did not issue."""
        hook = getattr(self.sw.backend, "resume", None)
        if hook is None:
            raise _nx_error(sp.NXR_NOT_SUPPORTED)
        if not msg.packet or not msg.continuation:
            raise OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN)
        metadata = convert.match_from_tlvs(
            codec.parse_oxm_fields(msg.metadata, 0, len(msg.metadata))) if msg.metadata else None
        hook(bytes(msg.packet), metadata, bytes(msg.continuation))
        return []

    # ---- flow monitors (monitor.py)
    def h_FlowMonitorRequest(self, ch, msg, now):
        return monitor.handle_request(self.sw, ch, msg)

    def h_FlowMonitorCancel(self, ch, msg, now):
        return monitor.handle_cancel(self.sw, ch, msg)

    def h_NXTCtFlushZone(self, ch, msg, now):
        hook = getattr(self.sw.backend, "ct_flush_zone", None)
        if hook is not None:
            hook(msg.zone_id)
        return []

    # ---- bundles (OF1.4+ standard, ONF extension for OF1.3)
    def h_ONFBundleCtrlMsg(self, ch, msg, now):
        return self._bundle_ctrl(ch, msg, now)

    h_OFPBundleCtrlMsg = h_ONFBundleCtrlMsg

    def _bundle_ctrl(self, ch, msg, now):
        bid, t = msg.bundle_id, msg.type
        b = ch.bundles.get(bid)
        if t == of14.OFPBCT_OPEN_REQUEST:
            if b is not None:
                raise _bundle_error(ch, of14.OFPBFC_BUNDLE_EXIST)
            ch.bundles[bid] = Bundle(msg.flags)
        elif t == of14.OFPBCT_CLOSE_REQUEST:
            if b is None:
                raise _bundle_error(ch, of14.OFPBFC_BAD_ID)
            if b.closed:
                raise _bundle_error(ch, of14.OFPBFC_BUNDLE_CLOSED)
            b.closed = True
        elif t == of14.OFPBCT_COMMIT_REQUEST:
            if b is None:
                raise _bundle_error(ch, of14.OFPBFC_BAD_ID)
            if b.flags != msg.flags:
                del ch.bundles[bid]
                raise _bundle_error(ch, of14.OFPBFC_BAD_FLAGS)
            del ch.bundles[bid]
            self._commit(ch, b, now)
        elif t == of14.OFPBCT_DISCARD_REQUEST:
            if b is None:
                raise _bundle_error(ch, of14.OFPBFC_BAD_ID)
            del ch.bundles[bid]
        else:
            raise _bundle_error(ch, of14.OFPBFC_BAD_TYPE)
        if ch.version == codec.OFP13:
            return [p13.ONFBundleCtrlMsg(ch.dp, bid, t + 1, msg.flags, [])]
        return [ch.dp.ofproto_parser.OFPBundleCtrlMsg(ch.dp, bid, t + 1, msg.flags, [])]

    def h_ONFBundleAddMsg(self, ch, msg, now):
        b = ch.bundles.get(msg.bundle_id)
        if b is None:
            b = ch.bundles[msg.bundle_id] = Bundle(msg.flags)   # implicit open, like OVS
        if b.closed:
            raise _bundle_error(ch, of14.OFPBFC_BUNDLE_CLOSED)
        if b.flags != msg.flags:
            raise _bundle_error(ch, of14.OFPBFC_BAD_FLAGS)
        inner = msg.message
        name = type(inner).__name__
        if name not in _BUNDLEABLE:
            raise _bundle_error(ch, of14.OFPBFC_MSG_UNSUP)
        if inner.xid != msg.xid:
            raise _bundle_error(ch, of14.OFPBFC_MSG_BAD_XID)
        # convert now so a bad message fails at add time, as OVS does
        if name in ("OFPFlowMod", "NXTFlowMod"):
            if inner.version == codec.OFP10:
                inner.table_id_enabled = ch.table_id_enabled
            b.messages.append(("flow", convert.flow_mod_from_oken(inner)))
        else:
            b.messages.append(("msg", inner))
        return []

    h_OFPBundleAddMsg = h_ONFBundleAddMsg

    def _commit(self, ch, b: Bundle, now):
        """Apply in order, all or nothing, with no translation in between.

        The pipeline may be shared with a datapath thread (the daemon wraps it
        so each call takes a lock).  A bundle must be applied under that lock
        as one step: the wrapper can offer `atomically(fn)`, which calls
        fn(real_pipeline) holding it; a bare Pipeline (tests) is used as it
        is.  On any error the tables, groups and meters are restored from a
        snapshot and the error is re-raised."""
        wrapper = self.sw.pipeline
        atomically = getattr(wrapper, "atomically", None)
        if atomically is not None:
            removed = atomically(lambda real: self._apply_bundle(ch, b, real, now))
        else:
            removed = self._apply_bundle(ch, b, wrapper, now)
        if removed:
            self.sw.broadcast_flow_removed(removed, now)

    def _apply_bundle(self, ch, b, pipeline, now):
        commit = getattr(pipeline, "bundle_commit", None)
        if commit is not None and all(kind == "flow" for kind, _ in b.messages):
            return commit([m for _, m in b.messages], now) or []   # atomic in the pipeline
        # Undo by copy-on-first-touch: a table is copied just before the first
        # flow-mod that can change it.  A group/meter mod (which may delete rules
        # anywhere) snapshots groups, meters and all tables once; tables copied
        # before that moment keep their older, original copy.
        tables = getattr(pipeline, "tables", None)
        saved_tables: dict = {}        # table id -> copy before the bundle (None: absent)
        saved_all: dict = {}           # "tables"/"groups"/"meters" at the first other mod

        def touch_tables(table_id):
            if saved_all or not isinstance(tables, dict):
                return
            for t in (list(tables) if table_id == 0xFF else [table_id]):
                if t not in saved_tables:
                    saved_tables[t] = _table_snapshot(tables.get(t))

        def touch_all():
            if not saved_all:
                for k in ("tables", "groups", "meters"):
                    if k == "tables" and isinstance(tables, dict):
                        saved_all[k] = {t: _table_snapshot(tab) for t, tab in tables.items()}
                    elif hasattr(pipeline, k):
                        saved_all[k] = copy.deepcopy(getattr(pipeline, k))

        removed = []
        self.sw.deferred = []        # FLOW_REMOVED only once the bundle stands
        n_changes = len(self.sw.rule_changes)     # flow monitors: likewise
        try:
            for kind, m in b.messages:
                if kind == "flow":
                    touch_tables(m.table_id)
                    removed.extend(pipeline.flow_mod(m, now) or [])
                else:
                    touch_all()
                    self._table[type(m).__name__](ch, m, now)
        except Exception:
            del self.sw.rule_changes[n_changes:]
            if saved_all:
                snaps = saved_all.get("tables")
                if snaps is not None:
                    snaps.update(saved_tables)    # the older copy wins
                    saved_all["tables"] = {t: _table_restore(v) for t, v in snaps.items()
                                           if v is not None}
                for k, v in saved_all.items():
                    setattr(pipeline, k, v)
            else:
                for t, snap in saved_tables.items():
                    if snap is None:
                        tables.pop(t, None)
                    else:
                        tables[t] = _table_restore(snap)
            if hasattr(pipeline, "version"):
                pipeline.version += 1
            raise
        finally:
            removed.extend(self.sw.deferred)
            self.sw.deferred = None
        return removed


def _table_snapshot(table):
    """What undoing a bundle needs of one table, without deep-copying it
    (that cost OVN ~0.2 s a bundle at 3 000 rules): its rules, with what a
    flow-mod changes in place (instructions, counters).  Adds replace rule
    objects and deletes drop them, so the objects themselves are kept."""
    if table is None:
        return None
    if not hasattr(table, "classifier_for"):
        return ("copy", copy.deepcopy(table))
    return (table, [(r, r.instructions, r.packet_count, r.byte_count) for r in table])


def _table_restore(snap):
    table, rules = snap
    if table == "copy":
        return rules
    fresh = type(table)(table.table_id)
    fresh.lookup_count, fresh.matched_count = table.lookup_count, table.matched_count
    fresh.config = table.config
    for r, instructions, packets, nbytes in rules:
        r.instructions, r.packet_count, r.byte_count = instructions, packets, nbytes
        fresh.classifier_for(r).insert(r)
    return fresh


# the slow path keeps 8 option slots of at most 8 bytes (slowpath/fields.py)
TLV_MAX_FIELDS, TLV_MAX_LEN = 8, 8
TLV_MAX_INDEX = 64            # tun_metadata0..63 (OpenFlow's names)
# Nicira TLV-table errors (OVS lib/ofp-errors.h, NXTTMFC_*): NX experimenter codes
NXTTMFC_BAD_COMMAND, NXTTMFC_BAD_OPT_LEN, NXTTMFC_BAD_FIELD_IDX = 16, 17, 18
NXTTMFC_TABLE_FULL, NXTTMFC_ALREADY_MAPPED, NXTTMFC_DUP_ENTRY = 19, 20, 21


def _nx_error(code):
    e = OFError(of13.OFPET_EXPERIMENTER, code)
    e.experimenter = codec.NX
    return e


_BUNDLEABLE = {"OFPFlowMod", "NXTFlowMod", "OFPGroupMod", "OFPPortMod", "OFPMeterMod",
               "OFPTableMod"}


def _bundle_error(ch, code):
    """OFPET_BUNDLE_FAILED (OF1.4+); the ONF 1.3 extension sends it as an
    experimenter error, exp_type 2300 + code (OVS lib/ofp-errors.h)."""
    if ch.version >= codec.OFP14:
        return OFError(of14.OFPET_BUNDLE_FAILED, code)
    e = OFError(of13.OFPET_EXPERIMENTER, 2300 + code)
    e.experimenter = codec.ONF
    return e


_TABLE_FEATURES = None


def table_features13() -> list:
    """What every table supports (all tables are alike here), built once."""
    global _TABLE_FEATURES
    if _TABLE_FEATURES is not None:
        return _TABLE_FEATURES
    from slowpath import fields as sf
    P = p13
    insts = [P.OFPInstructionId(t) for t in (
        of13.OFPIT_GOTO_TABLE, of13.OFPIT_WRITE_METADATA, of13.OFPIT_WRITE_ACTIONS,
        of13.OFPIT_APPLY_ACTIONS, of13.OFPIT_CLEAR_ACTIONS, of13.OFPIT_METER)]
    acts = [P.OFPActionId(t) for t in (
        of13.OFPAT_OUTPUT, of13.OFPAT_COPY_TTL_OUT, of13.OFPAT_COPY_TTL_IN,
        of13.OFPAT_SET_MPLS_TTL, of13.OFPAT_DEC_MPLS_TTL, of13.OFPAT_PUSH_VLAN,
        of13.OFPAT_POP_VLAN, of13.OFPAT_PUSH_MPLS, of13.OFPAT_POP_MPLS, of13.OFPAT_SET_QUEUE,
        of13.OFPAT_GROUP, of13.OFPAT_SET_NW_TTL, of13.OFPAT_DEC_NW_TTL, of13.OFPAT_SET_FIELD)]
    match_ids, set_ids = [], []
    seen = set()
    for f in sf.FIELDS.values():
        if f.oxm is None or f.oxm[0] != sf.OFPXMC_OPENFLOW_BASIC or id(f) in seen:
            continue
        seen.add(id(f))
        try:
            name = of13.oxm_to_user_header((f.oxm[0] << 7) | f.oxm[1])
        except KeyError:
            continue
        match_ids.append(P.OFPOxmId(name, hasmask=f.maskable))
        if f.writable:
            set_ids.append(P.OFPOxmId(name))
    T = of13
    out = []
    for t in range(N_TABLES):
        nxt = list(range(t + 1, N_TABLES))
        props = [
            P.OFPTableFeaturePropInstructions(T.OFPTFPT_INSTRUCTIONS, insts),
            P.OFPTableFeaturePropInstructions(T.OFPTFPT_INSTRUCTIONS_MISS, insts),
            P.OFPTableFeaturePropNextTables(T.OFPTFPT_NEXT_TABLES, nxt),
            P.OFPTableFeaturePropNextTables(T.OFPTFPT_NEXT_TABLES_MISS, nxt),
            P.OFPTableFeaturePropActions(T.OFPTFPT_WRITE_ACTIONS, acts),
            P.OFPTableFeaturePropActions(T.OFPTFPT_WRITE_ACTIONS_MISS, acts),
            P.OFPTableFeaturePropActions(T.OFPTFPT_APPLY_ACTIONS, acts),
            P.OFPTableFeaturePropActions(T.OFPTFPT_APPLY_ACTIONS_MISS, acts),
            P.OFPTableFeaturePropOxm(T.OFPTFPT_MATCH, match_ids),
            P.OFPTableFeaturePropOxm(T.OFPTFPT_WILDCARDS, match_ids),
            P.OFPTableFeaturePropOxm(T.OFPTFPT_WRITE_SETFIELD, set_ids),
            P.OFPTableFeaturePropOxm(T.OFPTFPT_WRITE_SETFIELD_MISS, set_ids),
            P.OFPTableFeaturePropOxm(T.OFPTFPT_APPLY_SETFIELD, set_ids),
            P.OFPTableFeaturePropOxm(T.OFPTFPT_APPLY_SETFIELD_MISS, set_ids),
        ]
        out.append(P.OFPTableFeaturesStats(t, f"table{t}".encode(), 0xFFFFFFFFFFFFFFFF,
                                           0xFFFFFFFFFFFFFFFF, 0, 1000000, props))
    _TABLE_FEATURES = out
    return out
