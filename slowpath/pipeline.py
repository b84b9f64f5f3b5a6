"""The sans-IO OpenFlow bridge: tables, groups, meters, ports and NORMAL.

``Pipeline`` holds what OpenFlow controllers configure (rules in tables
0-254, groups, meters) and what the bridge reconciler tells it (``ports``,
``fail_mode``), applies flow-mods/group-mods/meter-mods with the exact
OpenFlow 1.3 semantics and error codes, and translates packets through
``xlate`` (``slowpath/xlate.py``).  It never does I/O and never reads a
clock: ``now`` comes in with each call, so callers decide time and tests can
replay anything.

``version`` increases on every change that can alter forwarding (rules,
groups, meters, ports, MAC learning).  A caller caching megaflows records
the version it translated at; when the version moves it re-translates
(``revalidate``) its megaflows and updates or deletes those whose actions or
mask changed.  This is coarse but never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_v1_3 as ofp

from slowpath import actions as A
from slowpath.classifier import Classifier, Rule
from slowpath.continuation import ContinuationStore
from slowpath.errors import (
    OFError, bad_action, bad_instruction, flow_mod_failed, group_mod_failed,
    meter_mod_failed,
)
from slowpath.fields import (
    FIELDS, OFPP_ANY, OFPP_MAX, OFPP_NORMAL, OFPP_TABLE,
    PORT_NAMES, VLAN_CFI,
)
from slowpath.flow import FlowKey
from slowpath.mac_learning import MacLearning
from slowpath.match import Match
from slowpath.port import Port
from slowpath import xlate as X

N_TABLES = 255
DP_HASH_SLOTS = 256     # select groups: at most this many dp_hash slots (megaflows)
OFPTT_ALL = 0xff
OFPG_MAX = 0xffffff00
OFPG_ALL = 0xfffffffc
OFPG_ANY = 0xffffffff
OFPM_MAX = 0xffff0000
OFPM_ALL = 0xffffffff
FLOW_MOD_FLAGS = frozenset({"send_flow_rem", "check_overlap", "reset_counts",
                            "no_pkt_counts", "no_byt_counts"})
COMMANDS = ("add", "modify", "modify_strict", "delete", "delete_strict")
GROUP_TYPES = ("all", "select", "indirect", "ff")


@dataclass
class FlowMod:
    command: str = "add"
    table_id: int = 0
    priority: int = 0x8000
    match: Match = field(default_factory=Match)
    cookie: int = 0
    cookie_mask: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: frozenset = frozenset()
    out_port: int = OFPP_ANY
    out_group: int = OFPG_ANY
    instructions: tuple = ()
    importance: int = 0
    #: OpenFlow 1.0: a modify that matches nothing adds the rule
    add_if_missing: bool = False


@dataclass
class FlowRemoved:
    rule: Rule
    reason: int            # OFPRR_*
    duration: float        # seconds the rule existed

    @property
    def table_id(self) -> int:
        return self.rule.table_id


@dataclass
class RuleChange:
    """One rule added, modified (its instructions changed) or deleted, as
    OpenFlow flow monitors report it (OVS ofmonitor_report)."""
    event: str                     # "added" | "modified" | "deleted"
    rule: Rule
    reason: int = 0                # "deleted": OFPRR_* (delete, idle, hard, group_delete)
    #: "modified": the instructions before (a monitor on out_port N sees a
    #: rule that stopped outputting to N change)
    old_instructions: tuple = ()


@dataclass(frozen=True)
class Bucket:
    actions: tuple = ()
    weight: int = 0
    watch_port: int = OFPP_ANY
    watch_group: int = OFPG_ANY


def _state_id(target):
    """A hashable identity of a recirculation target: the same frozen rest
    must get the same recirc_id when revalidation translates it again."""
    if isinstance(target, int):
        return target
    key = (target.items, tuple(sorted(target.action_set.items(), key=repr)),
           target.table_id, id(target.rule))
    try:
        hash(key)
        return key
    except TypeError:          # e.g. a PatchReturn holds the flow it restores
        return repr(key)


class RecircTable:
    """recirc_id -> where a recirculated packet's translation resumes:
    (pipeline, table_id, frozen in_port/metadata/regs)."""

    def __init__(self, first_id: int = 1):
        self.states: dict[int, tuple] = {}
        self._by_state: dict[tuple, int] = {}
        self.pipelines: list = []
        self.next_id = first_id

    def alloc(self, pipeline, target, key: FlowKey) -> int:
        """``target``: the table_id to resume at, or an xlate.Frozen to run."""
        sk = (id(pipeline), _state_id(target), key.in_port, key.metadata, key.regs)
        rid = self._by_state.get(sk)
        if rid is None:
            frozen = FlowKey()
            frozen.in_port, frozen.metadata, frozen.regs = key.in_port, key.metadata, key.regs
            rid, self.next_id = self.next_id, self.next_id + 1
            self.states[rid] = (pipeline, target, frozen)
            self._by_state[sk] = rid
            for p in self.pipelines:
                p.version += 1   # their megaflows must start matching recirc_id
        return rid

    @staticmethod
    def join(pipelines) -> None:
        """Give ``pipelines`` (linked by patch ports) one shared table.  It
        starts empty, with ids above every old one: megaflows still holding
        an old id no longer resume and are revalidated away (all versions
        move), and their packets get fresh ids."""
        pipelines = list(pipelines)
        if len({id(p.recirc) for p in pipelines}) <= 1:
            return
        shared = RecircTable(max(p.recirc.next_id for p in pipelines))
        shared.pipelines = pipelines
        for p in pipelines:
            p.recirc = shared
            p.version += 1


@dataclass
class GroupMod:
    command: str = "add"           # add | modify | delete
    type: str = "all"              # all | select | indirect | ff
    group_id: int = 0
    buckets: tuple = ()


@dataclass
class Group:
    group_id: int
    type: str
    buckets: tuple
    created: float = 0.0
    packet_count: int = 0
    byte_count: int = 0
    bucket_counts: list = field(default_factory=list)   # [packets, bytes] per bucket


@dataclass(frozen=True)
class MeterBand:
    type: str = "drop"             # drop | dscp_remark
    rate: int = 0
    burst_size: int = 0
    prec_level: int = 0


@dataclass
class MeterMod:
    command: str = "add"
    meter_id: int = 1
    flags: frozenset = frozenset({"kbps"})   # kbps | pktps | burst | stats
    bands: tuple = ()


@dataclass
class Meter:
    meter_id: int
    flags: frozenset
    bands: tuple
    created: float = 0.0
    packet_in_count: int = 0
    byte_in_count: int = 0
    band_counts: list = field(default_factory=list)
    #: token bucket for packet-ins metered by controller(meter_id=...)
    #: (tokens, last refill time); datapath meters keep their own
    bucket: list = field(default_factory=lambda: [None, 0.0])


@dataclass
class TableMod:
    table_id: int
    config: int = 0


def is_conjunctive(instructions) -> bool:
    """Rules whose only actions are conjunction(...) are clauses of a
    conjunctive match, kept apart from ordinary rules (OVS semantics)."""
    acts = [a for i in instructions if isinstance(i, A.ApplyActions) for a in i.actions]
    return bool(acts) and all(isinstance(a, A.Conjunction) for a in acts) and all(
        isinstance(i, A.ApplyActions) for i in instructions)


class Table:
    """One OpenFlow table: ordinary rules in ``classifier``, conjunction
    clauses in ``conj``."""

    __slots__ = ("table_id", "classifier", "conj", "lookup_count", "matched_count", "config")

    def __init__(self, table_id: int):
        self.table_id = table_id
        self.classifier = Classifier()
        self.conj = Classifier()
        self.lookup_count = 0
        self.matched_count = 0
        self.config = 0

    def __len__(self):
        return len(self.classifier) + len(self.conj)

    def __iter__(self):
        yield from self.classifier
        yield from self.conj

    def classifier_for(self, rule: Rule) -> Classifier:
        return self.conj if is_conjunctive(rule.instructions) else self.classifier

    def find_exact(self, match: Match, priority: int) -> Rule | None:
        return (self.classifier.find_exact(match, priority)
                or self.conj.find_exact(match, priority))

    def iter_loose(self, match: Match):
        yield from self.classifier.iter_loose(match)
        yield from self.conj.iter_loose(match)


class Pipeline:
    def __init__(self, fail_mode: str = "standalone", *, miss_to_controller: bool = False,
                 mac_idle_time: float = 300.0, mac_max_entries: int = 8192):
        if fail_mode not in ("standalone", "secure"):
            raise ValueError(f"bad fail_mode {fail_mode!r}")
        self.fail_mode = fail_mode
        #: True for OpenFlow 1.0-1.2 controllers (table miss -> packet-in);
        #: 1.3+ drops on a miss unless a table-miss rule says otherwise.
        self.miss_to_controller = miss_to_controller
        self.miss_send_len = 128
        self.forward_bpdu = False
        self.tables: dict[int, Table] = {}
        self.ports: dict[int, Port] = {}
        self.groups: dict[int, Group] = {}
        self.meters: dict[int, Meter] = {}
        self.mac_learning = MacLearning(mac_idle_time, mac_max_entries)
        self.version = 0
        #: recirculation states; one table shared by the pipelines patch
        #: ports join (`RecircTable.join`), since a packet recirculates in
        #: the datapath with the in_port it entered with
        self.recirc = RecircTable()
        self.recirc.pipelines.append(self)
        #: patch ports: ofport -> (peer Pipeline, peer ofport), set by the caller
        self.patch_peers: dict[int, tuple["Pipeline", int]] = {}
        #: GENEVE option <-> tun_metadataN map (a slowpath.tunnel.TlvMap), set
        #: by the caller on NXT_TLV_TABLE_MOD; None = no options mapped
        self.tlv_map = None
        #: translations paused by controller(pause), for NXT_RESUME
        self.continuations = ContinuationStore()
        #: flow monitors: called with a RuleChange for every rule added,
        #: modified or deleted (flow-mods, expiry, group/meter deletes,
        #: learning); None while nobody monitors, so flow-mods pay one test
        self.rule_monitor = None

    # ---- ports ------------------------------------------------------------
    def set_port(self, port: Port) -> None:
        """Add or replace a port (config/state/VLAN change).  Flushes what
        MAC learning knew about it."""
        self.ports[port.ofport] = port
        self.mac_learning.flush_port(port.ofport)
        self.version += 1

    def remove_port(self, ofport: int) -> None:
        self.ports.pop(ofport, None)
        self.mac_learning.flush_port(ofport)
        self.version += 1

    def sorted_ports(self) -> list[Port]:
        return [self.ports[n] for n in sorted(self.ports)]

    def install_default_flows(self, now: float = 0.0) -> None:
        """What OVS does for a standalone bridge without a controller:
        ``priority=0,actions=NORMAL`` in table 0."""
        if self.fail_mode == "standalone":
            self.flow_mod(FlowMod("add", 0, 0, Match(),
                                  instructions=(A.ApplyActions((A.Output(OFPP_NORMAL),)),)), now)

    # ---- tables -------------------------------------------------------------
    def table(self, table_id: int) -> Table:
        t = self.tables.get(table_id)
        if t is None:
            t = self.tables[table_id] = Table(table_id)
        return t

    def rules(self, table_id: int = OFPTT_ALL):
        ids = sorted(self.tables) if table_id == OFPTT_ALL else [table_id]
        for tid in ids:
            if tid in self.tables:
                yield from self.tables[tid]

    # ---- flow mods -----------------------------------------------------------
    def flow_mod(self, fm: FlowMod, now: float) -> list[FlowRemoved]:
        """Apply a flow-mod; raises OFError (and changes nothing) if invalid.
        Returns FlowRemoved events for deleted rules that asked for them."""
        if fm.command not in COMMANDS:
            raise flow_mod_failed(ofp.OFPFMFC_BAD_COMMAND, f"bad command {fm.command!r}")
        if fm.flags - FLOW_MOD_FLAGS:
            raise flow_mod_failed(ofp.OFPFMFC_BAD_FLAGS, f"bad flags {set(fm.flags - FLOW_MOD_FLAGS)}")
        is_delete = fm.command.startswith("delete")
        if fm.table_id == OFPTT_ALL and not is_delete or fm.table_id > OFPTT_ALL:
            raise flow_mod_failed(ofp.OFPFMFC_BAD_TABLE_ID, f"bad table {fm.table_id}")
        if not 0 <= fm.priority <= 0xffff:
            raise flow_mod_failed(ofp.OFPFMFC_UNKNOWN, "bad priority")
        fm.match.check_prereqs()
        if is_delete:
            return self._delete(fm, now)
        self.validate_instructions(fm.instructions, fm.table_id, fm.match)
        if fm.command == "add":
            self._add(fm, now)
        else:
            self._modify(fm, now)
        return []

    def _add(self, fm: FlowMod, now: float) -> None:
        table = self.table(fm.table_id)
        if "check_overlap" in fm.flags:
            for cls in (table.classifier, table.conj):
                for _ in cls.iter_overlapping(fm.match, fm.priority):
                    raise flow_mod_failed(ofp.OFPFMFC_OVERLAP, "overlapping rule")
        rule = Rule(fm.priority, Match(fm.match.value, fm.match.mask), fm.table_id, fm.cookie,
                    fm.idle_timeout, fm.hard_timeout, frozenset(fm.flags), fm.importance,
                    tuple(fm.instructions), created=now, used=now)
        old = table.find_exact(fm.match, fm.priority)
        if old is not None:
            if "reset_counts" not in fm.flags:
                rule.packet_count, rule.byte_count = old.packet_count, old.byte_count
            table.classifier_for(old).remove(old)
        table.classifier_for(rule).insert(rule)
        self.version += 1
        if self.rule_monitor is not None:
            self.rule_monitor(RuleChange("added", rule))

    def _select(self, fm: FlowMod, strict: bool):
        ids = range(N_TABLES) if fm.table_id == OFPTT_ALL else [fm.table_id]
        out = []
        for tid in ids:
            t = self.tables.get(tid)
            if t is None:
                continue
            if strict:
                r = t.find_exact(fm.match, fm.priority)
                cands = [r] if r is not None else []
            else:
                cands = list(t.iter_loose(fm.match))
            for r in cands:
                if (r.cookie ^ fm.cookie) & fm.cookie_mask:
                    continue
                out.append(r)
        return out

    def _modify(self, fm: FlowMod, now: float) -> None:
        rules = self._select(fm, fm.command == "modify_strict")
        if not rules and fm.add_if_missing:
            return self._add(fm, now)
        for r in rules:
            t = self.tables[r.table_id]
            old_cls = t.classifier_for(r)
            old_instructions = r.instructions
            r.instructions = tuple(fm.instructions)
            if self.rule_monitor is not None and r.instructions != old_instructions:
                self.rule_monitor(RuleChange("modified", r, 0, old_instructions))
            if t.classifier_for(r) is not old_cls:
                old_cls.remove(r)
                t.classifier_for(r).insert(r)
            if "reset_counts" in fm.flags:
                r.packet_count = r.byte_count = 0
        if rules:
            self.version += 1

    def _delete(self, fm: FlowMod, now: float) -> list[FlowRemoved]:
        removed = []
        for r in self._select(fm, fm.command == "delete_strict"):
            if outputs_to(r.instructions, fm.out_port, fm.out_group):
                removed += self._remove_rule(r, ofp.OFPRR_DELETE, now)
        return removed

    def _remove_rule(self, r: Rule, reason: int, now: float) -> list[FlowRemoved]:
        t = self.tables[r.table_id]
        t.classifier_for(r).remove(r)
        self.version += 1
        if self.rule_monitor is not None:
            self.rule_monitor(RuleChange("deleted", r, reason))
        if "send_flow_rem" in r.flags:
            return [FlowRemoved(r, reason, now - r.created)]
        return []

    # ---- validation -------------------------------------------------------------
    def validate_instructions(self, instructions, table_id: int, match: Match) -> None:
        seen = set()
        for inst in instructions:
            t = type(inst)
            if t not in A.INSTRUCTION_TYPES:
                raise bad_instruction(ofp.OFPBIC_UNKNOWN_INST, f"unknown instruction {inst!r}")
            if t in seen:
                raise bad_instruction(ofp.OFPBIC_UNSUP_INST, f"duplicate {t.__name__}")
            seen.add(t)
            if t is A.GotoTable and not table_id < inst.table_id < N_TABLES:
                raise bad_instruction(ofp.OFPBIC_BAD_TABLE_ID, f"goto_table:{inst.table_id}")
            elif t is A.Meter and inst.meter_id not in self.meters:
                raise meter_mod_failed(ofp.OFPMMFC_UNKNOWN_METER, f"meter {inst.meter_id}")
            elif t in (A.ApplyActions, A.WriteActions):
                self.validate_actions(inst.actions, match)

    def validate_actions(self, actions, match: Match | None = None,
                         packet_out: bool = False) -> None:
        """Check actions the way OVS/OpenFlow do; raises OFError(BAD_ACTION...).
        output:TABLE is only valid in a packet-out."""
        for a in actions:
            if isinstance(a, A.Output):
                p = a.port
                if (p == 0 or p == OFPP_ANY or (p > OFPP_MAX and p not in PORT_NAMES)
                        or (p == OFPP_TABLE and not packet_out)):
                    raise bad_action(ofp.OFPBAC_BAD_OUT_PORT, f"output:{p}")
            elif isinstance(a, A.Group):
                if a.group_id not in self.groups:
                    raise bad_action(ofp.OFPBAC_BAD_OUT_GROUP, f"group:{a.group_id}")
            elif isinstance(a, A.SetField):
                f = FIELDS.get(a.field)
                if f is None or not f.writable:
                    raise bad_action(ofp.OFPBAC_BAD_SET_TYPE, f"set_field {a.field}")
                if not 0 <= a.value <= f.max or (a.mask is not None and not 0 <= a.mask <= f.max):
                    raise bad_action(ofp.OFPBAC_BAD_SET_ARGUMENT, f"set_field {a.field} value")
                # (VLAN fields on an untagged packet push a tag at run time)
                if (match is not None and f.prereq and f.prereq != "vlan"
                        and not match.prereq_ok(f.prereq)):
                    raise bad_action(ofp.OFPBAC_MATCH_INCONSISTENT,
                                     f"set_field {a.field} needs {f.prereq}")
            elif isinstance(a, A.Move):
                for name, ofs in ((a.src, a.src_ofs), (a.dst, a.dst_ofs)):
                    f = FIELDS.get(name)
                    if f is None or ofs + a.n_bits > f.n_bits or a.n_bits <= 0:
                        raise bad_action(ofp.OFPBAC_BAD_SET_ARGUMENT, f"move {name}")
                if not FIELDS[a.dst].writable:
                    raise bad_action(ofp.OFPBAC_BAD_SET_TYPE, f"move to {a.dst}")
            elif isinstance(a, A.PushVlan):
                if a.ethertype not in (0x8100, 0x88a8):
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, "push_vlan ethertype")
            elif isinstance(a, A.PushMpls):
                if a.ethertype not in (0x8847, 0x8848):
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, "push_mpls ethertype")
                match = _with_eth_type(match, a.ethertype)
            elif isinstance(a, A.PopMpls):
                # later actions see the payload's type (OVS ofpacts_check does too)
                match = _with_eth_type(match, a.ethertype)
            elif isinstance(a, A.Resubmit):
                if a.table is not None and not 0 <= a.table < N_TABLES:
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, "resubmit table")
            elif isinstance(a, A.Ct):
                if a.table is not None and not 0 <= a.table < N_TABLES:
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, "ct table")
                if a.zone_src is not None and a.zone_src not in FIELDS:
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, "ct zone field")
            elif isinstance(a, A.Conjunction):
                if not (2 <= a.n_clauses <= 64 and 0 <= a.clause < a.n_clauses):
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, "conjunction clause")
            elif isinstance(a, A.Meter):
                if a.meter_id not in self.meters:
                    raise meter_mod_failed(ofp.OFPMMFC_UNKNOWN_METER, f"meter {a.meter_id}")
            elif isinstance(a, A.OutputReg):
                if a.field not in FIELDS:
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, "output_reg field")
            elif isinstance(a, A.CheckPktLarger):
                f = FIELDS.get(a.field)
                if f is None or not f.writable or not 0 <= a.ofs < f.n_bits:
                    raise bad_action(ofp.OFPBAC_BAD_SET_ARGUMENT, f"check_pkt_larger {a}")
            elif isinstance(a, A.Clone):
                self.validate_actions(a.actions, match)
            elif isinstance(a, A.Multipath):
                f = FIELDS.get(a.dst)
                if f is None or not f.writable or a.dst_ofs + a.n_bits > f.n_bits or (
                        a.n_links < 1 or a.n_links > 1 << a.n_bits):
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, f"multipath {a}")
            elif isinstance(a, A.Bundle):
                if any(not 0 < m <= OFPP_MAX for m in a.members):
                    raise bad_action(ofp.OFPBAC_BAD_OUT_PORT, f"bundle members {a.members}")
            elif isinstance(a, A.Learn):
                if not 0 <= a.table_id < N_TABLES:
                    raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, "learn table")
                for sp in a.specs:
                    names = [n for n in (sp.dst, sp.src) if n]
                    if sp.kind not in ("match", "load", "output") or any(
                            n not in FIELDS for n in names) or sp.n_bits <= 0 or (
                            sp.dst and sp.dst_ofs + sp.n_bits > FIELDS[sp.dst].n_bits) or (
                            sp.src and sp.src_ofs + sp.n_bits > FIELDS[sp.src].n_bits):
                        raise bad_action(ofp.OFPBAC_BAD_ARGUMENT, f"learn spec {sp}")
            elif not isinstance(a, tuple(X._HANDLERS)):
                raise bad_action(ofp.OFPBAC_BAD_TYPE, f"unknown action {a!r}")

    # ---- groups -------------------------------------------------------------------
    def group_mod(self, gm: GroupMod, now: float = 0.0) -> list[FlowRemoved]:
        if gm.command not in ("add", "modify", "delete"):
            raise group_mod_failed(ofp.OFPGMFC_BAD_COMMAND, gm.command)
        if gm.command == "delete":
            ids = list(self.groups) if gm.group_id == OFPG_ALL else [gm.group_id]
            removed = []
            for gid in ids:
                if self.groups.pop(gid, None) is not None:
                    self.version += 1
                    for r in [r for r in self.rules() if gid in _out_groups(r.instructions)]:
                        removed += self._remove_rule(r, ofp.OFPRR_GROUP_DELETE, now)
            return removed
        if gm.group_id > OFPG_MAX:
            raise group_mod_failed(ofp.OFPGMFC_INVALID_GROUP, f"group {gm.group_id}")
        if gm.type not in GROUP_TYPES:
            raise group_mod_failed(ofp.OFPGMFC_BAD_TYPE, gm.type)
        exists = gm.group_id in self.groups
        if gm.command == "add" and exists:
            raise group_mod_failed(ofp.OFPGMFC_GROUP_EXISTS, f"group {gm.group_id}")
        if gm.command == "modify" and not exists:
            raise group_mod_failed(ofp.OFPGMFC_UNKNOWN_GROUP, f"group {gm.group_id}")
        if gm.type == "indirect" and len(gm.buckets) != 1:
            raise group_mod_failed(ofp.OFPGMFC_INVALID_GROUP, "indirect group needs 1 bucket")
        for b in gm.buckets:
            if gm.type == "ff" and b.watch_port == OFPP_ANY and b.watch_group == OFPG_ANY:
                raise group_mod_failed(ofp.OFPGMFC_BAD_WATCH, "ff bucket without watch")
            if gm.type != "select" and b.weight:
                raise group_mod_failed(ofp.OFPGMFC_WEIGHT_UNSUPPORTED, "weight")
            for a in b.actions:
                if isinstance(a, A.Group):
                    if a.group_id not in self.groups:
                        raise group_mod_failed(ofp.OFPGMFC_CHAINED_GROUP, f"group {a.group_id}")
                    if self._reaches(a.group_id, gm.group_id):
                        raise group_mod_failed(ofp.OFPGMFC_LOOP, "group loop")
            try:
                self.validate_actions([a for a in b.actions if not isinstance(a, A.Group)])
            except OFError as e:
                raise group_mod_failed(ofp.OFPGMFC_BAD_BUCKET, e.msg) from None
        old = self.groups.get(gm.group_id)
        g = Group(gm.group_id, gm.type, tuple(gm.buckets), now,
                  bucket_counts=[[0, 0] for _ in gm.buckets])
        if old is not None:
            g.created, g.packet_count, g.byte_count = old.created, old.packet_count, old.byte_count
        self.groups[gm.group_id] = g
        self.version += 1
        return []

    def _reaches(self, start: int, target: int, depth: int = 0) -> bool:
        if start == target:
            return True
        g = self.groups.get(start)
        if g is None or depth > 32:
            return False
        return any(self._reaches(a.group_id, target, depth + 1)
                   for b in g.buckets for a in b.actions if isinstance(a, A.Group))

    def bucket_live(self, b: Bucket, depth: int = 0) -> bool:
        if b.watch_port != OFPP_ANY:
            p = self.ports.get(b.watch_port)
            if p is None or not p.is_up:
                return False
        if b.watch_group != OFPG_ANY:
            g = self.groups.get(b.watch_group)
            if g is None or depth > 32 or not any(self.bucket_live(x, depth + 1) for x in g.buckets):
                return False
        return True

    def xlate_group(self, ctx, group_id: int, hashed: bool = False) -> None:
        """``hashed``: resuming after the datapath computed dp_hash for this
        select group (see xlate._HashRecirc); else a select group asks for it."""
        g = self.groups.get(group_id)
        if g is None or ctx.in_group > 32:
            return
        if g.type == "select" and not hashed:
            raise X._HashRecirc(group_id)
        ctx.note(f"group:{group_id} ({g.type})")
        if g.type in ("all",):
            chosen = list(range(len(g.buckets)))
        elif g.type == "indirect":
            chosen = [0] if g.buckets else []
        elif g.type == "ff":
            # liveness is port state, which bumps the version when it changes
            chosen = [next((i for i, b in enumerate(g.buckets) if self.bucket_live(b)), None)]
            chosen = [c for c in chosen if c is not None]
        else:
            live = [(i, b) for i, b in enumerate(g.buckets) if self.bucket_live(b) and b.weight]
            if not live:
                live = [(i, b) for i, b in enumerate(g.buckets) if self.bucket_live(b)]
            if live:
                # the low bits of dp_hash pick one of n slots dealt out by
                # weight: few slots (few megaflows), enough for the weights
                total = sum(max(b.weight, 1) for _, b in live)
                need = 4 * total // min(max(b.weight, 1) for _, b in live)
                n = 16
                while n < need and n < DP_HASH_SLOTS:
                    n *= 2
                h = ctx.read_bits("dp_hash", n - 1)
                point = (h * total) // n
                for i, b in live:
                    point -= max(b.weight, 1)
                    if point < 0:
                        chosen = [i]
                        break
            else:
                chosen = []
        if ctx.side_effects:
            n = len(ctx.packet or b"")
            g.packet_count += 1
            g.byte_count += n
            for i in chosen:
                g.bucket_counts[i][0] += 1
                g.bucket_counts[i][1] += n
        ctx.out.groups.append((g, tuple(chosen)))
        ctx.in_group += 1
        for i in chosen:
            ctx.run_clone(g.buckets[i].actions)   # each bucket acts on its own copy
        ctx.in_group -= 1

    def group_stats(self, group_id: int = OFPG_ALL) -> list[Group]:
        ids = sorted(self.groups) if group_id == OFPG_ALL else [group_id]
        return [self.groups[i] for i in ids if i in self.groups]

    # ---- meters ---------------------------------------------------------------------
    def meter_packet_in(self, meter_id: int, nbytes: int, now: float) -> bool:
        """May a packet-in of ``nbytes`` metered by ``meter_id`` go to the
        controller now?  Its lowest drop band's rate (packets or kbit per
        second) refills a bucket of its burst (or one second's worth).
        OVS (and OVN, which meters its packet-ins) do the same.  An
        unknown meter does not limit."""
        m = self.meters.get(meter_id)
        drops = [(b.rate, i, b) for i, b in enumerate(m.bands) if b.type == "drop"] if m else []
        if not drops:
            return True
        rate, i, band = min(drops)
        pkts = "pktps" in m.flags
        size = (band.burst_size if "burst" in m.flags and band.burst_size else rate)
        cost = 1.0 if pkts else nbytes * 8 / 1000.0
        tokens, last = m.bucket
        tokens = size if tokens is None else min(size, tokens + (now - last) * rate)
        m.packet_in_count += 1
        m.byte_in_count += nbytes
        if tokens >= cost:
            m.bucket[:] = [tokens - cost, now]
            return True
        m.bucket[:] = [tokens, now]
        while len(m.band_counts) <= i:
            m.band_counts.append([0, 0])
        m.band_counts[i][0] += 1
        m.band_counts[i][1] += nbytes
        return False

    def meter_mod(self, mm: MeterMod, now: float = 0.0) -> list[FlowRemoved]:
        if mm.command not in ("add", "modify", "delete"):
            raise meter_mod_failed(ofp.OFPMMFC_BAD_COMMAND, mm.command)
        if mm.command == "delete":
            ids = list(self.meters) if mm.meter_id == OFPM_ALL else [mm.meter_id]
            removed = []
            for mid in ids:
                if self.meters.pop(mid, None) is not None:
                    self.version += 1
                    for r in [r for r in self.rules() if mid in _meters(r)]:
                        removed += self._remove_rule(r, ofp.OFPRR_DELETE, now)
            return removed
        if not 1 <= mm.meter_id <= OFPM_MAX:
            raise meter_mod_failed(ofp.OFPMMFC_INVALID_METER, f"meter {mm.meter_id}")
        exists = mm.meter_id in self.meters
        if mm.command == "add" and exists:
            raise meter_mod_failed(ofp.OFPMMFC_METER_EXISTS, f"meter {mm.meter_id}")
        if mm.command == "modify" and not exists:
            raise meter_mod_failed(ofp.OFPMMFC_UNKNOWN_METER, f"meter {mm.meter_id}")
        if ({"kbps", "pktps"} <= mm.flags or mm.flags - {"kbps", "pktps", "burst", "stats"}):
            raise meter_mod_failed(ofp.OFPMMFC_BAD_FLAGS, str(set(mm.flags)))
        for b in mm.bands:
            if b.type not in ("drop", "dscp_remark"):
                raise meter_mod_failed(ofp.OFPMMFC_BAD_BAND, b.type)
            if b.rate <= 0:
                raise meter_mod_failed(ofp.OFPMMFC_BAD_RATE, "rate 0")
            if b.type == "dscp_remark" and not 0 < b.prec_level <= 63:
                raise meter_mod_failed(ofp.OFPMMFC_BAD_BAND_VALUE, "prec_level")
            if "burst" not in mm.flags and b.burst_size:
                raise meter_mod_failed(ofp.OFPMMFC_BAD_BURST, "burst without flag")
        old = self.meters.get(mm.meter_id)
        m = Meter(mm.meter_id, frozenset(mm.flags), tuple(mm.bands), now,
                  band_counts=[[0, 0] for _ in mm.bands])
        if old is not None:
            m.created = old.created
        self.meters[mm.meter_id] = m
        self.version += 1
        return []

    def meter_stats(self, meter_id: int = OFPM_ALL) -> list[tuple[Meter, int]]:
        """(meter, flow_count); byte/packet counters are the caller's to add."""
        ids = sorted(self.meters) if meter_id == OFPM_ALL else [meter_id]
        return [(self.meters[i], sum(1 for r in self.rules() if i in _meters(r)))
                for i in ids if i in self.meters]

    def table_mod(self, tm: TableMod) -> None:
        if not 0 <= tm.table_id < N_TABLES and tm.table_id != OFPTT_ALL:
            raise OFError(ofp.OFPET_TABLE_MOD_FAILED, ofp.OFPTMFC_BAD_TABLE, str(tm.table_id))
        ids = range(N_TABLES) if tm.table_id == OFPTT_ALL else [tm.table_id]
        for t in ids:
            self.table(t).config = tm.config

    # ---- stats ----------------------------------------------------------------------
    def flow_stats(self, table_id: int = OFPTT_ALL, match: Match | None = None,
                   out_port: int = OFPP_ANY, out_group: int = OFPG_ANY,
                   cookie: int = 0, cookie_mask: int = 0) -> list[Rule]:
        """Rules selected like a non-strict delete; duration is now - rule.created."""
        fm = FlowMod("delete", table_id, 0, match or Match(), cookie, cookie_mask)
        return [r for r in self._select(fm, False)
                if outputs_to(r.instructions, out_port, out_group)]

    def aggregate_stats(self, *args, **kw) -> tuple[int, int, int]:
        """(packet_count, byte_count, flow_count) over flow_stats(...)."""
        rules = self.flow_stats(*args, **kw)
        return (sum(r.packet_count for r in rules), sum(r.byte_count for r in rules), len(rules))

    def table_stats(self) -> list[tuple[int, int, int, int]]:
        """(table_id, active_count, lookup_count, matched_count) for 0..254."""
        out = []
        for tid in range(N_TABLES):
            t = self.tables.get(tid)
            out.append((tid, len(t), t.lookup_count, t.matched_count) if t
                       else (tid, 0, 0, 0))
        return out

    # ---- time -----------------------------------------------------------------------
    def expire(self, now: float) -> list[FlowRemoved]:
        """Remove rules whose hard/idle timeout passed and aged MAC entries."""
        removed = []
        for r in list(self.rules()):
            if r.hard_timeout and now - r.created >= r.hard_timeout:
                removed += self._remove_rule(r, ofp.OFPRR_HARD_TIMEOUT, now)
            elif r.idle_timeout and now - r.used >= r.idle_timeout:
                removed += self._remove_rule(r, ofp.OFPRR_IDLE_TIMEOUT, now)
        if self.mac_learning.expire(now):
            self.version += 1
        return removed

    def next_timeout(self) -> float | None:
        """Earliest time ``expire`` has work (for the caller's timer)."""
        ts = []
        for r in self.rules():
            if r.hard_timeout:
                ts.append(r.created + r.hard_timeout)
            if r.idle_timeout:
                ts.append(r.used + r.idle_timeout)
        t = self.mac_learning.next_expiry()
        if t is not None:
            ts.append(t)
        return min(ts) if ts else None

    # ---- translation ----------------------------------------------------------------
    def xlate(self, key: FlowKey, packet: bytes | None = None, now: float = 0.0,
              **kw) -> "X.XlateOutput":
        return X.xlate(self, key, packet, now, **kw)

    def packet_out(self, key: FlowKey, packet: bytes, actions, now: float) -> "X.XlateOutput":
        """OFPT_PACKET_OUT: run ``actions`` (output:TABLE runs the pipeline)."""
        self.validate_actions(actions, packet_out=True)
        return X.xlate(self, key, packet, now, actions=tuple(actions))

    def resume(self, key: FlowKey, packet: bytes, continuation: bytes,
               now: float) -> "X.XlateOutput":
        """NXT_RESUME: go on with a paused translation.  ``key`` is the
        (possibly rewritten) packet's flow with the pipeline metadata the
        controller handed back.  Raises NXR_STALE for an unknown continuation."""
        frozen = self.continuations.thaw(continuation)
        return X.xlate(self, key, packet, now, resume=frozen)

    def revalidate(self, key: FlowKey, now: float) -> "X.XlateOutput":
        """Re-translate a cached megaflow's upcall key without side effects."""
        return X.xlate(self, key, None, now, side_effects=False)

    def credit_rule(self, r: Rule, packets: int, nbytes: int, now: float) -> None:
        if "no_pkt_counts" not in r.flags:
            r.packet_count += packets
        if "no_byt_counts" not in r.flags:
            r.byte_count += nbytes
        r.used = max(r.used, now)

    def credit(self, xout: "X.XlateOutput", packets: int, nbytes: int, now: float) -> None:
        """Credit cache hits of a megaflow back to what its translation used:
        rule and group counters, rule idle time, MAC learning age."""
        for r in xout.rules:
            self.credit_rule(r, packets, nbytes, now)
        for g, chosen in xout.groups:
            g.packet_count += packets
            g.byte_count += nbytes
            for i in chosen:
                if i < len(g.bucket_counts):
                    g.bucket_counts[i][0] += packets
                    g.bucket_counts[i][1] += nbytes
        for mac, vlan, port, owner in xout.macs:     # owner: across a patch port
            if owner.mac_learning.learn(mac, vlan, port, now):
                owner.version += 1
        for fm, owner in xout.learns:
            owner.apply_learn(fm, now)

    def apply_learn(self, fm: FlowMod, now: float) -> None:
        """Add (or refresh) a learned rule.  Re-learning an identical rule
        only refreshes its timeouts, so cache hits do not churn the version."""
        t = self.tables.get(fm.table_id)
        old = t.find_exact(fm.match, fm.priority) if t is not None else None
        if old is not None and old.instructions == fm.instructions:
            old.used = now
            old.created = now if old.hard_timeout else old.created
            return
        try:
            self.flow_mod(fm, now)
        except OFError:
            pass       # an unlearnable rule (e.g. prerequisites) is skipped, as OVS does

    @property
    def recirc_states(self) -> dict:
        return self.recirc.states

    def alloc_recirc(self, table_id: int, key: FlowKey) -> int:
        """A recirc_id whose thawing resumes in this pipeline at ``table_id``
        with in_port and the pipeline metadata (metadata, regs) of ``key``."""
        return self.recirc.alloc(self, table_id, key)

    # ---- NORMAL ---------------------------------------------------------------------
    def normal(self, ctx) -> None:
        """OVS's L2 learning switch (xlate_normal): VLAN-aware learning on
        in_port, forward to the learned port or flood within the VLAN."""
        in_ofport = ctx.key.in_port
        in_port = self.ports.get(in_ofport)
        if in_port is None:
            ctx.note("NORMAL: unknown input port, dropping")
            return
        tci = ctx.read_bits("vlan_tci", VLAN_CFI | 0xfff)
        vid = tci & 0xfff if tci & VLAN_CFI else None
        vlan = in_port.input_vlan(vid)
        if vlan is None:
            ctx.note(f"NORMAL: VLAN {vid} not allowed on port {in_ofport}, dropping")
            return
        dl_src = ctx.read("eth_src")
        dl_dst = ctx.read("eth_dst")
        if not self.forward_bpdu and dl_dst & ~0xf == 0x0180c2000000:
            ctx.note("NORMAL: reserved destination MAC, dropping")
            return
        if not dl_src & (1 << 40):
            if ctx.side_effects and self.mac_learning.learn(dl_src, vlan, in_ofport, ctx.now):
                self.version += 1
            ctx.out.macs.append((dl_src, vlan, in_ofport, self))
        out = None if dl_dst & (1 << 40) else self.mac_learning.lookup(dl_dst, vlan, ctx.now)
        if out is None:
            ctx.note(f"NORMAL: flooding in VLAN {vlan}")
            for port in self.sorted_ports():
                if (port.ofport != in_ofport and not port.no_flood and port.is_up
                        and port.includes_vlan(vlan)):
                    self._output_normal(ctx, port, vlan)
        elif out == in_ofport:
            ctx.note("NORMAL: learned port is the input port, dropping")
        else:
            port = self.ports.get(out)
            if port is not None and port.includes_vlan(vlan):
                ctx.note(f"NORMAL: forwarding to learned port {out}")
                self._output_normal(ctx, port, vlan)

    def _output_normal(self, ctx, port: Port, vlan: int) -> None:
        out_vid = port.output_vid(vlan)
        saved = ctx.save()
        tagged = ctx.key.vlan0_tci & VLAN_CFI      # consulted by normal() already
        if out_vid is None:
            if tagged:
                X._x_pop_vlan(ctx, A.PopVlan())
        else:
            if not tagged:
                X._x_push_vlan(ctx, A.PushVlan())
            ctx.write("vlan_tci", VLAN_CFI | out_vid, VLAN_CFI | 0xfff)
        ctx._output_port(port)
        ctx.restore(saved)


def _with_eth_type(match: Match | None, eth_type: int) -> Match | None:
    """``match`` as seen after an action made the packet ``eth_type``."""
    if match is None:
        return None
    mk = FIELDS["eth_type"].max << FIELDS["eth_type"].shift
    return Match((match.value & ~mk) | (eth_type << FIELDS["eth_type"].shift), match.mask | mk)


def _actions_of(instructions):
    for inst in instructions:
        if isinstance(inst, (A.ApplyActions, A.WriteActions)):
            yield from inst.actions


def outputs_to(instructions, out_port: int = OFPP_ANY, out_group: int = OFPG_ANY) -> bool:
    """The out_port/out_group filter of non-strict deletes, flow stats and
    flow monitors: the instructions output to that port and that group."""
    if out_port != OFPP_ANY and out_port not in {
            a.port for a in _actions_of(instructions) if isinstance(a, A.Output)}:
        return False
    return out_group == OFPG_ANY or out_group in _out_groups(instructions)


def _out_groups(instructions) -> set[int]:
    return {a.group_id for a in _actions_of(instructions) if isinstance(a, A.Group)}


def _meters(r: Rule) -> set[int]:
    return ({i.meter_id for i in r.instructions if isinstance(i, A.Meter)}
            | {a.meter_id for a in _actions_of(r.instructions) if isinstance(a, A.Meter)})
