"""OpenFlow flow monitors: `ovs-ofctl monitor BRIDGE watch:` and controllers
that follow a flow table other controllers write (OVS ofproto/connmgr.c
"ofmonitor", lib/ofp-monitor.c).

One feature, three encodings, each what ovs-ofctl 3.1 sends for its -O:
  OF1.0   NXST_FLOW_MONITOR vendor stats (NXM match, OF1.0 actions);
          cancel: NXT_FLOW_MONITOR_CANCEL
  OF1.3   ONFST_FLOW_MONITOR, ONF experimenter multipart 1870 (the Nicira
          update layout with an OXM ofp_match and instructions);
          cancel: ONFT_FLOW_MONITOR_CANCEL (experimenter message 1870)
  OF1.4+  OFPMP_FLOW_MONITOR (os-ken's ofproto_v1_4 structs); the request's
          command adds, modifies or deletes (cancels) a monitor
All parse into one `FlowMonitorRequest` of `Monitor`s whose flags are
NXFMF_* bits.  OF1.4's OFPFMF_* map onto them as OVS 3.1 maps them, so
ONLY_OWN reads as "own" (ovs-ofctl sets it to see its own changes in full);
NO_ABBREV, which OVS refuses, reads as "own" too.

What a monitor reports (OVS semantics): with INITIAL, the reply lists the
rules it selects now (event ADDED; OF1.4+ INITIAL).  Then every later change
to such a rule whose kind it asked for (ADD, DELETE, MODIFY) leaves as an
unsolicited reply (xid 0), one message per OpenFlow message handled: adds,
modifications (the instructions changed), deletes by flow-mod, expiry
(reason idle/hard), group and meter deletes, bundle commits, learned rules.
A monitor selects a rule in its table (0xff: any) that is at least as
specific as its match and outputs to its out_port/out_group (before or after
a modification).  A change the monitoring connection made itself is one
ABBREV carrying that message's xid, unless the monitor says OWN; ACTIONS
puts the instructions in full updates.

Errors: duplicate id MONITOR_EXISTS, unknown id UNKNOWN_MONITOR, flags
without add/delete/modify or with unknown bits BAD_FLAGS, non-zero padding
NXBRC_MUST_BE_ZERO, an OF1.4 command other than add/modify/delete
BAD_COMMAND - numbered per version as OVS numbers them (OF1.0: Nicira
vendor error, OF1.3: Nicira experimenter error, OF1.4+:
OFPET_FLOW_MONITOR_FAILED).  OVS 3.1 itself answers some of these with a
malformed message; this sends what it means to.

Flow control, as OVS: when more than PAUSE_BACKLOG bytes wait to be sent
to a monitoring connection after its updates, it gets "paused"
(NXT_FLOW_MONITOR_PAUSED, ONFT 1871, OF1.4+ event PAUSED) and only deletes
of rules it was told about keep coming; once the backlog drains (the
manager calls `resume`) it gets the rules added or modified meanwhile that
its monitors select, as ADDED updates, then "resumed".
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_4 as of14
from os_ken.ofproto.ofproto_parser import MsgBase

from . import codec, convert, nx, sp
from .sp import OFError

# NXFMF_*: what a monitor asks for
INITIAL, ADD, DELETE, MODIFY, ACTIONS, OWN = 1, 2, 4, 8, 16, 32
_KNOWN = INITIAL | ADD | DELETE | MODIFY | ACTIONS | OWN
_EVENT_FLAG = {"added": ADD, "deleted": DELETE, "modified": MODIFY}
_OF14_FLAGS = ((of14.OFPFMF_INITIAL, INITIAL), (of14.OFPFMF_ADD, ADD),
               (of14.OFPFMF_REMOVED, DELETE), (of14.OFPFMF_MODIFY, MODIFY),
               (of14.OFPFMF_INSTRUCTIONS, ACTIONS), (of14.OFPFMF_NO_ABBREV, OWN),
               (of14.OFPFMF_ONLY_OWN, OWN))
_NX_EVENTS = {"initial": nx.NXFME_ADDED, "added": nx.NXFME_ADDED,
              "deleted": nx.NXFME_DELETED, "modified": nx.NXFME_MODIFIED,
              "abbrev": nx.NXFME_ABBREV}
_OF14_EVENTS = {"initial": of14.OFPFME_INITIAL, "added": of14.OFPFME_ADDED,
                "deleted": of14.OFPFME_REMOVED, "modified": of14.OFPFME_MODIFIED,
                "abbrev": of14.OFPFME_ABBREV, "paused": of14.OFPFME_PAUSED,
                "resumed": of14.OFPFME_RESUMED}
OFPTT_ALL = 0xFF
PAUSE_BACKLOG = 128 * 1024      # OVS connmgr: bytes queued past which monitors pause

# error -> (OF1.4+ OFPMOFC_* code, Nicira code in OF1.2/1.3, Nicira (type, code) in OF1.0)
_ERRORS = {
    "MONITOR_EXISTS": (of14.OFPMOFC_MONITOR_EXISTS, 6, (1, 517)),
    "BAD_FLAGS": (of14.OFPMOFC_BAD_FLAGS, 7, (1, 518)),
    "UNKNOWN_MONITOR": (of14.OFPMOFC_UNKNOWN_MONITOR, 8, (1, 519)),
    "BAD_COMMAND": (of14.OFPMOFC_BAD_COMMAND, None, None),
    "MUST_BE_ZERO": (None, 4, (1, 515)),                # NXBRC_MUST_BE_ZERO
}


def monitor_error(version: int, name: str) -> OFError:
    of14_code, nx_code, nx10 = _ERRORS[name]
    if version >= codec.OFP14 and of14_code is not None:
        return OFError(of14.OFPET_FLOW_MONITOR_FAILED, of14_code, name)
    err = OFError(of13.OFPET_EXPERIMENTER, nx_code, name)
    err.experimenter = codec.NX
    err.nx10 = nx10           # OF1.0 has no experimenter errors: NXET_VENDOR
    return err


@dataclass
class Monitor:
    """One monitor as a request asked for it (match as wire TLVs until the
    handler converts it with the bridge's TLV map)."""
    id: int
    flags: int                       # NXFMF_*
    table_id: int = OFPTT_ALL
    out_port: int = of13.OFPP_ANY            # slow-path numbering (OF1.0's is converted)
    out_group: int = of13.OFPG_ANY
    command: int = of14.OFPFMC_ADD
    match_tlvs: list = field(default_factory=list)
    match: sp.Match = field(default_factory=sp.Match)
    zeros: bool = True               # the request's padding was zero

    def selects(self, rule, old_instructions=()) -> bool:
        if self.table_id != OFPTT_ALL and self.table_id != rule.table_id:
            return False
        if not rule.match.covers(self.match):
            return False
        return sp.outputs_to(rule.instructions, self.out_port, self.out_group) or bool(
            old_instructions and sp.outputs_to(old_instructions, self.out_port, self.out_group))


# ------------------------------------------------------------------ messages
class FlowMonitorRequest(MsgBase):
    def __init__(self, datapath, monitors):
        super().__init__(datapath)
        self.monitors = monitors


class FlowMonitorCancel(MsgBase):
    def __init__(self, datapath, id_):
        super().__init__(datapath)
        self.id = id_


@dataclass
class Update:
    """One flow update: event "initial"/"added"/"deleted"/"modified" about
    `rule`, "abbrev" carrying the xid of the requester's own change, or
    "paused"/"resumed" (OF1.4+ flow control)."""
    event: str
    rule: object = None
    reason: int = 0
    actions: bool = False
    xid: int = 0


class FlowMonitorPaused(MsgBase):
    """NXT_FLOW_MONITOR_PAUSED/RESUMED (OF1.0) or ONFT 1871/1872 (OF1.3):
    a vendor/experimenter header and nothing else.  OF1.4+ says it with an
    update event instead."""
    cls_msg_type = 4               # OFPT_VENDOR == OFPT_EXPERIMENTER

    def __init__(self, datapath, resumed: bool):
        super().__init__(datapath)
        self.resumed = resumed

    def _serialize_body(self):
        if self.datapath.ofproto.OFP_VERSION == codec.OFP10:
            self.buf += struct.pack("!II", codec.NX, nx.NXT_FLOW_MONITOR_PAUSED + self.resumed)
        else:
            self.buf += struct.pack("!II", codec.ONF, nx.ONF_FLOW_MONITOR_PAUSED + self.resumed)


class FlowMonitorReply(MsgBase):
    """The reply to a request (its initial rules) or an unsolicited batch of
    updates (xid 0); `codec.encode` splits it into multipart messages."""

    def __init__(self, datapath, updates):
        super().__init__(datapath)
        self.updates = updates
        version = datapath.ofproto.OFP_VERSION
        if version == codec.OFP10:
            self.cls_stats_type = 0xFFFF          # OFPST_VENDOR
            self.stats_prefix = struct.pack("!II4x", codec.NX, nx.NXST_FLOW_MONITOR)
        elif version == codec.OFP13:
            self.cls_stats_type = 0xFFFF          # OFPMP_EXPERIMENTER
            self.stats_prefix = struct.pack("!II", codec.ONF, nx.ONF_FLOW_MONITOR)
        else:
            self.cls_stats_type = of14.OFPMP_FLOW_MONITOR
            self.stats_prefix = b""


# ------------------------------------------------------------------ parsing
def _bad_len():
    return OFError(codec.ET_BAD_REQUEST, codec.BRC_BAD_LEN)


def parse_request(dp, flavor: str, buf, off: int, end: int) -> FlowMonitorRequest:
    """The monitors of one request body at buf[off:end] ("nx", "onf", "of14");
    a message may carry several."""
    monitors = []
    if off >= end:
        raise _bad_len()
    while off < end:
        if flavor == "nx":
            fmt = nx.NX_FLOW_MONITOR_REQUEST_PACK_STR
            mid, flags, out_port, match_len, table_id, zeros = codec._unpack(fmt, buf, off)
            off += struct.calcsize(fmt)
            if off + match_len > end:
                raise _bad_len()
            tlvs = codec.parse_oxm_fields(buf, off, off + match_len)
            off += (match_len + 7) // 8 * 8
            m = Monitor(mid, flags, table_id, convert.port_from10(out_port), match_tlvs=tlvs,
                        zeros=not any(zeros))
        elif flavor == "onf":
            fmt = nx.ONF_FLOW_MONITOR_REQUEST_PACK_STR
            mid, flags, _, out_port, table_id, zeros = codec._unpack(fmt, buf, off)
            match, off = codec.parse_match13(dp.ofproto_parser, buf, off + struct.calcsize(fmt),
                                             end)
            m = Monitor(mid, flags, table_id, out_port, match_tlvs=match.wire_tlvs,
                        zeros=not any(zeros))
        else:
            fmt = of14.OFP_FLOW_MONITOR_REQUEST_0_PACK_STR
            mid, out_port, out_group, wire_flags, table_id, command = codec._unpack(fmt, buf, off)
            match, off = codec.parse_match13(dp.ofproto_parser, buf,
                                             off + of14.OFP_FLOW_MONITOR_REQUEST_0_SIZE, end)
            flags = 0
            for bit, nxfmf in _OF14_FLAGS:
                if wire_flags & bit:
                    flags |= nxfmf
                    wire_flags &= ~bit
            m = Monitor(mid, flags | (wire_flags << 8), table_id, out_port, out_group, command,
                        match.wire_tlvs)
        monitors.append(m)
    return FlowMonitorRequest(dp, monitors)


def parse_cancel(dp, buf, off: int, end: int) -> FlowMonitorCancel:
    (mid,) = codec._unpack(nx.NX_FLOW_MONITOR_CANCEL_PACK_STR, buf, off)
    return FlowMonitorCancel(dp, mid)


# ----------------------------------------------------------------- encoding
def _encode_update(u: Update, version: int) -> bytes:
    events = _OF14_EVENTS if version >= codec.OFP14 else _NX_EVENTS
    if u.event in ("paused", "resumed"):
        return struct.pack(of14.OFP_FLOW_UPDATE_PAUSED_PACK_STR, 8, events[u.event])
    if u.event == "abbrev":
        return struct.pack(nx.NX_FLOW_UPDATE_ABBREV_PACK_STR, 8, events["abbrev"], u.xid)
    r = u.rule
    if version == codec.OFP10:
        match = codec.serialize_oxm_fields(convert.match_to_tlvs(r.match, nxm=True))
        match_len = len(match)
        match += bytes(-match_len % 8)
        body = codec._actions(convert.instructions_to_actions10(r.instructions)) \
            if u.actions else b""
    else:
        match = codec._match13(convert.match_to_ofp13(r.match))
        (match_len,) = struct.unpack_from("!H", match, 2)
        body = codec._instructions(convert.instructions_to_oken(r.instructions, version)) \
            if u.actions else b""
    if version >= codec.OFP14:
        length = of14.OFP_FLOW_UPDATE_FULL_0_SIZE + len(match) + len(body)
        head = struct.pack(of14.OFP_FLOW_UPDATE_FULL_0_PACK_STR, length, events[u.event],
                           r.table_id, u.reason, r.idle_timeout, r.hard_timeout, r.priority,
                           r.cookie)
    else:
        length = struct.calcsize(nx.NX_FLOW_UPDATE_FULL_PACK_STR) + len(match) + len(body)
        head = struct.pack(nx.NX_FLOW_UPDATE_FULL_PACK_STR, length, events[u.event], u.reason,
                           r.priority, r.idle_timeout, r.hard_timeout, match_len, r.table_id,
                           r.cookie)
    return head + bytes(match) + bytes(body)


def _mp_items(msg) -> list[bytes]:
    version = msg.datapath.ofproto.OFP_VERSION
    return [_encode_update(u, version) for u in msg.updates]


codec._MP_ITEM[FlowMonitorReply] = _mp_items


# ---------------------------------------------------------------- semantics
def _check(ch, m: Monitor) -> None:
    if ch.version >= codec.OFP14 and m.command not in (of14.OFPFMC_ADD, of14.OFPFMC_MODIFY,
                                                       of14.OFPFMC_DELETE):
        raise monitor_error(ch.version, "BAD_COMMAND")
    if m.command == of14.OFPFMC_DELETE:
        return
    if m.flags & ~_KNOWN or not m.flags & (ADD | DELETE | MODIFY):
        raise monitor_error(ch.version, "BAD_FLAGS")
    if not m.zeros:
        raise monitor_error(ch.version, "MUST_BE_ZERO")


def _flags(monitors, rule, want: int = ~0, old_instructions=()) -> int:
    """The flags of those `monitors` asking for any of `want` that select
    `rule`, or-ed together (0: none does)."""
    flags = 0
    for m in monitors:
        if m.flags & want and m.selects(rule, old_instructions):
            flags |= m.flags
    return flags


def handle_request(sw, ch, req: FlowMonitorRequest) -> list:
    """Add/modify/delete the request's monitors on `ch`, all or none, and
    reply with the rules the INITIAL ones select."""
    monitors = dict(ch.monitors)
    initial = []
    for m in req.monitors:
        _check(ch, m)
        if m.command == of14.OFPFMC_DELETE:
            if monitors.pop(m.id, None) is None:
                raise monitor_error(ch.version, "UNKNOWN_MONITOR")
            continue
        if m.command == of14.OFPFMC_ADD and m.id in monitors:
            raise monitor_error(ch.version, "MONITOR_EXISTS")
        if m.command == of14.OFPFMC_MODIFY and m.id not in monitors:
            raise monitor_error(ch.version, "UNKNOWN_MONITOR")
        m.match = convert.match_from_tlvs(m.match_tlvs)
        monitors[m.id] = m
        if m.flags & INITIAL:
            initial.append(m)
    ch.monitors = monitors
    watch(sw)
    updates = []
    if initial:
        for rule in sw.pipeline.rules():
            flags = _flags(initial, rule)
            if flags:
                updates.append(Update("initial", rule, actions=bool(flags & ACTIONS)))
    return [FlowMonitorReply(ch.dp, updates)]


def handle_cancel(sw, ch, msg: FlowMonitorCancel) -> list:
    if msg.id not in ch.monitors:
        raise monitor_error(ch.version, "UNKNOWN_MONITOR")
    ch.monitors = {k: v for k, v in ch.monitors.items() if k != msg.id}
    watch(sw)
    return []


def watch(sw) -> None:
    """Have the pipeline report rule changes while any connection monitors
    (and only then: a bridge nobody monitors records nothing)."""
    want = any(ch.monitors for ch in sw.channels)
    if want != sw.monitoring:
        sw.monitoring = want
        sw.pipeline.rule_monitor = sw.rule_monitor_hook if want else None
        if not want:
            sw.rule_changes = []


def report(sw, changes) -> None:
    """Send each monitoring connection its updates for `changes`, a list of
    (RuleChange, origin) where origin is the (channel, xid) whose message
    made the change, or None."""
    for ch in list(sw.channels):
        if not ch.monitors:
            continue
        updates = []
        abbreviated = set()             # one ABBREV per message (xid), as OVS
        paused = ch.monitor_paused
        for change, origin in changes:
            if paused is not None:
                # remember what changed; only deletes of rules added before
                # the pause still go out (OVS: add_seqno < monitor_paused)
                key = id(change.rule)
                if change.event == "added":
                    paused[key] = (change.rule, True)
                    continue
                if change.event == "modified":
                    paused.setdefault(key, (change.rule, False))
                    continue
                if paused.pop(key, (None, False))[1]:
                    continue
            flags = _flags(ch.monitors.values(), change.rule, _EVENT_FLAG[change.event],
                           change.old_instructions)
            if not flags:
                continue
            if origin is not None and origin[0] is ch and not flags & OWN:
                if origin[1] not in abbreviated:
                    updates.append(Update("abbrev", xid=origin[1]))
                    abbreviated.add(origin[1])
            else:
                updates.append(Update(change.event, change.rule, change.reason,
                                      bool(flags & ACTIONS)))
        if updates:
            _send_updates(ch, updates)
        if paused is None and ch.backlog() > PAUSE_BACKLOG:
            ch.monitor_paused = {}
            _send_flow_control(ch, "paused")


def resume(sw, ch) -> None:
    """The paused connection's backlog drained: the rules added or modified
    meanwhile that its monitors select, then "resumed"."""
    paused = ch.monitor_paused
    if paused is None:
        return
    ch.monitor_paused = None
    updates = []
    tables = sw.pipeline.tables
    for rule, _ in paused.values():
        table = tables.get(rule.table_id)
        if table is None or table.find_exact(rule.match, rule.priority) is not rule:
            continue                     # replaced by a later add of the same rule
        flags = _flags(ch.monitors.values(), rule)
        if flags:
            updates.append(Update("added", rule, actions=bool(flags & ACTIONS)))
    if updates:
        _send_updates(ch, updates)
    _send_flow_control(ch, "resumed")


def _send_updates(ch, updates) -> None:
    msg = FlowMonitorReply(ch.dp, updates)
    msg.xid = 0                          # unsolicited
    ch.send_async(msg)


def _send_flow_control(ch, event: str) -> None:
    if ch.version >= codec.OFP14:
        _send_updates(ch, [Update(event)])
        return
    msg = FlowMonitorPaused(ch.dp, event == "resumed")
    msg.xid = 0
    ch.send_async(msg)
