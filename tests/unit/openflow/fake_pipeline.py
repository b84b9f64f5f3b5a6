"""A small stand-in for slowpath.pipeline.Pipeline (used until it lands).

It keeps real OpenFlow flow-table semantics that the channel tests rely on:
add replaces an identical (table, priority, match) rule, modify/delete
strict and non-strict, out_port and cookie filters, FLOW_REMOVED events for
rules with SEND_FLOW_REM, stats.  Plus a fake daemon backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from os_ken.ofproto import ofproto_v1_3 as of13

from vswitch.openflow import convert, sp


@dataclass
class Rule:
    table_id: int
    priority: int
    match: object
    cookie: int
    idle_timeout: int
    hard_timeout: int
    flags: int
    importance: int
    instructions: tuple
    created: float
    packet_count: int = 0
    byte_count: int = 0


@dataclass
class FlowRemoved:
    table_id: int
    priority: int
    match: object
    cookie: int
    reason: int
    duration: float
    idle_timeout: int
    hard_timeout: int
    packet_count: int
    byte_count: int


@dataclass
class Agg:
    packet_count: int
    byte_count: int
    flow_count: int


@dataclass
class TableStat:
    table_id: int
    active_count: int
    lookup_count: int = 0
    matched_count: int = 0


def _outputs(insts):
    for i in insts:
        for a in getattr(i, "actions", ()):
            if type(a).__name__ == "Output":
                yield a.port


class FakePipeline:
    def __init__(self, ports=()):
        self.rules: list[Rule] = []
        self.groups: dict = {}
        self.meters: dict = {}
        self.table_config: dict = {}
        self.ports = {p.ofport: p for p in ports}
        self.log: list = []

    # -- matching helpers
    @staticmethod
    def _items(m):
        return convert.match_items(m)

    def _select(self, table_id, match, strict, priority=None, out_port=of13.OFPP_ANY,
                out_group=of13.OFPG_ANY, cookie=0, cookie_mask=0):
        out = []
        for r in self.rules:
            if table_id != of13.OFPTT_ALL and r.table_id != table_id:
                continue
            if strict:
                if r.match != match or r.priority != priority:
                    continue
            elif not r.match.covers(match):
                continue
            if out_port != of13.OFPP_ANY and out_port not in set(_outputs(r.instructions)):
                continue
            if cookie_mask and (r.cookie & cookie_mask) != (cookie & cookie_mask):
                continue
            out.append(r)
        return out

    # -- the contract
    def flow_mod(self, fm, now):
        self.log.append(fm)
        c = fm.command
        if fm.table_id >= 254 and c not in (of13.OFPFC_DELETE, of13.OFPFC_DELETE_STRICT):
            raise sp.OFError(of13.OFPET_FLOW_MOD_FAILED, of13.OFPFMFC_BAD_TABLE_ID)
        if c == of13.OFPFC_ADD:
            for r in self._select(fm.table_id, fm.match, True, fm.priority):
                self.rules.remove(r)
            self.rules.append(Rule(fm.table_id, fm.priority, fm.match, fm.cookie,
                                   fm.idle_timeout, fm.hard_timeout, fm.flags, fm.importance,
                                   fm.instructions, now))
            return []
        if c in (of13.OFPFC_MODIFY, of13.OFPFC_MODIFY_STRICT):
            for r in self._select(fm.table_id, fm.match, c == of13.OFPFC_MODIFY_STRICT,
                                  fm.priority, cookie=fm.cookie, cookie_mask=fm.cookie_mask):
                r.instructions = fm.instructions
            return []
        if c in (of13.OFPFC_DELETE, of13.OFPFC_DELETE_STRICT):
            gone = self._select(fm.table_id, fm.match, c == of13.OFPFC_DELETE_STRICT,
                                fm.priority, fm.out_port, fm.out_group, fm.cookie, fm.cookie_mask)
            events = []
            for r in gone:
                self.rules.remove(r)
                if r.flags & of13.OFPFF_SEND_FLOW_REM:
                    events.append(FlowRemoved(r.table_id, r.priority, r.match, r.cookie,
                                              of13.OFPRR_DELETE, now - r.created, r.idle_timeout,
                                              r.hard_timeout, r.packet_count, r.byte_count))
            return events
        raise sp.OFError(of13.OFPET_FLOW_MOD_FAILED, of13.OFPFMFC_BAD_COMMAND)

    def bundle_commit(self, flow_mods, now):
        saved = list(self.rules)
        try:
            events = []
            for fm in flow_mods:
                events.extend(self.flow_mod(fm, now))
            return events
        except Exception:
            self.rules = saved
            raise

    def flow_stats(self, *, table_id, match, out_port, out_group, cookie, cookie_mask, now):
        rs = self._select(table_id, match, False, None, out_port, out_group, cookie, cookie_mask)
        return sorted(rs, key=lambda r: (r.table_id, -r.priority))

    def aggregate_stats(self, **kw):
        rs = self.flow_stats(**kw)
        return Agg(sum(r.packet_count for r in rs), sum(r.byte_count for r in rs), len(rs))

    def table_stats(self):
        counts = {}
        for r in self.rules:
            counts[r.table_id] = counts.get(r.table_id, 0) + 1
        return [TableStat(t, n) for t, n in counts.items()]

    def group_mod(self, gm):
        if gm.command == of13.OFPGC_ADD:
            if gm.group_id in self.groups:
                raise sp.OFError(of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_GROUP_EXISTS)
            self.groups[gm.group_id] = gm
        elif gm.command == of13.OFPGC_MODIFY:
            if gm.group_id not in self.groups:
                raise sp.OFError(of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_UNKNOWN_GROUP)
            self.groups[gm.group_id] = gm
        elif gm.command == of13.OFPGC_DELETE:
            if gm.group_id == of13.OFPG_ALL:
                self.groups.clear()
            else:
                self.groups.pop(gm.group_id, None)

    def group_desc(self):
        return [self.groups[g] for g in sorted(self.groups)]

    def group_stats(self, group_id, now):
        return [replace_group(g) for gid, g in sorted(self.groups.items())
                if group_id in (None, gid)]

    def meter_mod(self, mm):
        if mm.command == of13.OFPMC_ADD:
            self.meters[mm.meter_id] = mm
        elif mm.command == of13.OFPMC_DELETE:
            if mm.meter_id == of13.OFPM_ALL:
                self.meters.clear()
            else:
                self.meters.pop(mm.meter_id, None)
        else:
            self.meters[mm.meter_id] = mm

    def meter_config(self, meter_id):
        return [m for mid, m in sorted(self.meters.items()) if meter_id in (None, mid)]

    def table_mod(self, table_id, config):
        self.table_config[table_id] = config


@dataclass
class GroupStat:
    group_id: int
    duration: float = 0.0
    bucket_stats: list = field(default_factory=list)


def replace_group(g):
    return GroupStat(g.group_id, 0.0, [(0, 0) for _ in g.buckets])


class FakeBackend:
    def __init__(self):
        self.packet_outs = []
        self.revalidations = 0
        self.port_mods = []

    def execute_packet_out(self, in_port, actions, data):
        self.packet_outs.append((in_port, list(actions), data))

    def revalidate(self):
        self.revalidations += 1

    def port_mod(self, ofport, config, mask):
        self.port_mods.append((ofport, config, mask))

    def port_stats(self, ofport):
        ports = [1, 2] if ofport is None else [ofport]
        return [dict(port_no=p, rx_packets=10 * p, tx_packets=20 * p, rx_bytes=1000 * p,
                     tx_bytes=2000 * p) for p in ports]


def default_ports():
    return [sp.Port(ofport=1, name="p1", dp_port=1, hw_addr="02:00:00:00:00:01"),
            sp.Port(ofport=2, name="p2", dp_port=2, hw_addr="02:00:00:00:00:02"),
            sp.Port(ofport=of13.OFPP_LOCAL, name="br0", dp_port=0,
                    hw_addr="02:00:00:00:00:00")]
