"""Translation: run the OpenFlow pipeline for one flow key, produce a megaflow.

Shaped after OVS ``ofproto/ofproto-dpif-xlate.c``.  ``XlateCtx`` carries the
flow as OpenFlow sees it (``key``, modified by actions), the flow as the
datapath packet's VLAN stack currently is (``committed_vlans``), and ``wc``: every bit of the
*incoming* key that the translation consulted.  All reads of the key go
through ``XlateCtx.read`` (or a classifier lookup), which marks the bits in
``wc`` -- except bits that actions already wrote, whose value no longer
depends on the packet.  The megaflow's mask is therefore a by-product of
translation, never recomputed.

Header rewrites are accumulated and *committed* as masked ``SetMasked``
datapath actions just before anything that emits the packet (output,
userspace, conntrack, recirculation), like OVS's ``commit_odp_actions``; VLAN
stack changes are committed as pops and pushes.

Side effects (rule/table/group counters, MAC learning, learn actions,
packet-ins) happen only when ``side_effects`` is true; revalidation
re-translates without them.  What a megaflow's later cache hits must be
credited to is listed in ``XlateOutput`` (see ``Pipeline.credit``).

Megaflow conventions: ``in_port`` (OpenFlow ofport; the caller maps it to
its datapath port) is always exact; ``recirc_id`` is exact once the pipeline
has ever recirculated; pipeline metadata (regs, metadata, conj_id) starts at
zero and never appears.  Actions emitting to the controller become
``Userspace("controller")``: the caller re-translates such packets one by
one to produce their packet-ins.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from os_ken.ofproto import ofproto_v1_3 as ofp

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath.classifier import Rule, Wildcards
from slowpath.errors import OFError
from slowpath.fields import (
    FIELDS, FLOW_KEY_SIZE, MEMBERS, OFPP_ALL, OFPP_ANY, OFPP_CONTROLLER, OFPP_FLOOD,
    OFPP_IN_PORT, OFPP_NORMAL, OFPP_TABLE, PREREQS, VLAN_CFI, Field, member_int_mask,
)
from slowpath.flow import FlowKey
from slowpath.match import Match, member_shift

# As in OVS (xlate_recursively): only a resubmit to the same or an earlier
# table deepens the recursion, limited to 64; forward chains are bounded by
# the 4096 resubmits of a translation (OVN's switch -> router -> switch path
# nests ~120 forward ones).  Python frames are the other bound: the daemon
# raises the interpreter's recursion limit, and a translation that still
# hits it is dropped like one over these limits.
MAX_RESUBMIT_DEPTH = 64
MAX_RESUBMITS = 4096
RECURSION_LIMIT = 30000       # frames; ~5 per nested resubmit

# Members whose rewrites become SetMasked datapath actions (packet headers
# and datapath metadata the executors know).  Pipeline metadata (regs,
# metadata, conj_id...) never leaves the slow path; tunnel metadata (tun_*)
# is consumed at translation time by the TunnelPush of a tunnel output.
EMIT_MEMBERS = ("dl_dst", "dl_src", "vlan0_tci", "mpls_lse", "nw_tos", "nw_ttl", "nw_src",
                "nw_dst", "ipv6_label", "ipv6_src", "ipv6_dst", "tp_src", "tp_dst",
                "arp_sha", "arp_tha", "nd_target", "pkt_mark",
                "nw_proto")  # nw_proto: only ever written as arp_op (ip_proto is read-only)
_EMIT_MASKS = [(m, member_int_mask(m), member_shift(m)) for m in EMIT_MEMBERS]
_VLAN_MASK = (member_int_mask("vlan0_tpid") | member_int_mask("vlan0_tci")
              | member_int_mask("vlan1_tpid") | member_int_mask("vlan1_tci"))
_VLAN0_TCI = member_int_mask("vlan0_tci")
_PIPELINE_META = ("metadata", "regs", "conj_id", "actset_output")
_PIPELINE_META_MASK = 0
for _m in _PIPELINE_META:
    _PIPELINE_META_MASK |= member_int_mask(_m)
del _m
_IN_PORT_MASK = member_int_mask("in_port")
_CT_MEMBERS = tuple(m for m in MEMBERS if m.startswith("ct_"))
_CT_MASK = 0
for _m in _CT_MEMBERS:
    _CT_MASK |= member_int_mask(_m)
del _m
_RECIRC_MASK = member_int_mask("recirc_id")
_CONJ_MASK = member_int_mask("conj_id")
_FULL = (1 << (8 * FLOW_KEY_SIZE)) - 1
_F = FIELDS


def _tlv_slot_mask(index: int) -> int:
    """Key bits of GENEVE option slot ``index`` (its class/type/len in
    tun_md_opts and its data in tun_md_data): a tunnel output reads only the
    slots the TLV map maps, so a megaflow need not pin the others."""
    o = MEMBERS["tun_md_opts"][0]
    opts = 0xFFFFFFFF << ((FLOW_KEY_SIZE - o - 4 * index - 4) * 8)
    f = _F[f"tun_metadata{index}"]
    return opts | (f.max << f.shift)


@dataclass(frozen=True)
class Megaflow:
    """What the fast paths cache: packets whose key ``k`` satisfies
    ``k & mask == match`` get ``actions``.  ``match``/``mask`` are packed keys."""

    match: bytes
    mask: bytes
    actions: tuple

    def matches(self, key) -> bool:
        k = int(key) if not isinstance(key, (bytes, bytearray)) else int.from_bytes(key, "big")
        return k & int.from_bytes(self.mask, "big") == int.from_bytes(self.match, "big")

    def __str__(self):
        m = Match(int.from_bytes(self.match, "big"), int.from_bytes(self.mask, "big"))
        return f"{m.to_string()}, actions:{dp.format_actions(self.actions)}"


@dataclass
class PacketIn:
    """A packet-in for the controller(s).  ``key`` is the flow as the
    pipeline saw it at the controller action (in_port, metadata, regs,
    tunnel: the OXM match of OFPT_PACKET_IN)."""

    reason: int
    table_id: int
    cookie: int
    key: FlowKey
    data: bytes
    total_len: int
    max_len: int = 0xffff
    userdata: bytes = b""
    pause: bool = False
    controller_id: int = 0
    frozen: "Frozen | None" = None     # controller(pause): what is left to run
    continuation: bytes = b""          # ``frozen`` registered for NXT_RESUME
    pipeline: object = None            # whose controllers get it (patch ports cross)

    @property
    def in_port(self) -> int:
        return self.key.in_port


class XlateOutput:
    """What a translation produced.  Besides the megaflow and packet-ins it
    lists what the megaflow's cache hits must be credited to (``rules``,
    ``groups``, NORMAL's ``macs``, learn actions' ``learns``): see
    ``Pipeline.credit``."""

    __slots__ = ("megaflow", "packet_ins", "rules", "groups", "macs", "learns", "slow",
                 "version", "peers", "trace", "final_key")

    def __init__(self, megaflow: Megaflow):
        self.megaflow = megaflow
        self.packet_ins: list[PacketIn] = []
        self.rules: list[Rule] = []       # rules matched, in order
        self.groups: list = []            # (Group, chosen bucket indexes)
        self.macs: list = []              # (mac, vlan, ofport) NORMAL learned
        self.learns: list = []            # FlowMods from learn actions
        self.slow = False                 # must not be cached (per-packet work)
        self.version = 0                  # pipeline.version the translation saw
        self.peers: list = []             # (pipeline, version) entered by patch ports
        self.trace: list[str] = []
        self.final_key: FlowKey | None = None   # the flow after all actions (when tracing)

    @property
    def actions(self) -> tuple:
        return self.megaflow.actions

    def __repr__(self):
        return (f"XlateOutput({self.megaflow}, packet_ins={len(self.packet_ins)}, "
                f"rules={self.rules}, slow={self.slow}, version={self.version})")


_NO_MEGAFLOW = Megaflow(b"", b"", ())
_REWRITES = (dp.SetMasked, dp.PushVlan, dp.PopVlan, dp.PushMpls, dp.PopMpls)


class _NoEnv:
    """Execution environment for rewriting a packet-in's data only."""

    def output(self, dp_port, frame, key):
        pass

    def recirculate(self, frame, key):
        pass

    def meter(self, meter_id, frame):
        return True


class _Stop(Exception):
    """Abort the whole translation (e.g. dec_ttl hit zero)."""


class _Unwind(Exception):
    """Unwind the translation to a point that runs what is left: each level
    it crosses appends what it had left to do to ``rest`` -- innermost
    first, which is execution order -- like OVS's freeze_unroll_actions."""

    def __init__(self):
        self.rest: list = []


class _Pause(_Unwind):
    """controller(pause): the rest is frozen for NXT_RESUME."""

    def __init__(self, pin: PacketIn):
        super().__init__()
        self.pin = pin


class _HashRecirc(_Unwind):
    """A select group: the datapath hashes the packet (dp_hash) and
    recirculates; the bucket is chosen from the hash after that, with the
    rest of the translation frozen into the recirculation (as OVS's dp_hash
    selection method), so one megaflow serves every connection that hashes
    into the same slot instead of one upcall per new connection."""

    def __init__(self, group_id: int):
        super().__init__()
        self.group_id = group_id


@dataclass(frozen=True)
class SelectBucket:
    """Frozen: choose group ``group_id``'s bucket from dp_hash."""
    group_id: int


class _Fork(_Unwind):
    """check_pkt_larger: the rest is translated once per result bit."""

    def __init__(self, action):
        super().__init__()
        self.action = action


@dataclass(frozen=True)
class PatchReturn:
    """Frozen end of a patch port crossing: back to this bridge and flow."""
    pipeline: object
    table_id: int
    rule: Rule | None
    action_set: dict
    saved: tuple


@dataclass(frozen=True)
class Return:
    """Frozen end of a resubmit: restore what the resubmit saved."""
    in_port: int
    table_id: int
    rule: Rule | None


class RunActionSet:
    """Frozen end of the pipeline: execute the action set."""

    def __repr__(self):
        return "RunActionSet"


RUN_ACTION_SET = RunActionSet()


@dataclass
class Frozen:
    """The rest of a translation, frozen: by controller(pause) until
    NXT_RESUME, or by a select group until the datapath has hashed and
    recirculated the packet.  ``items`` are actions, instructions
    (goto_table, write_actions...), `SelectBucket`, `Return`, `PatchReturn`
    and `RUN_ACTION_SET` markers, run in order."""
    items: tuple
    action_set: dict
    table_id: int
    rule: Rule | None
    n_resubmits: int
    version: int


class XlateCtx:
    def __init__(self, pipeline, key: FlowKey, packet: bytes | None, now: float,
                 side_effects: bool, trace: bool):
        self.p = pipeline
        self.base = key          # never mutated
        self.key = key.copy()
        self.committed_vlans = _vlan_stack(key)
        self.packet = packet
        self.now = now
        self.side_effects = side_effects
        self.tracing = trace
        # in_port is always exact.  recirc_id only matters once some
        # translation recirculates (allocating the first id bumps the version,
        # so older megaflows without it get revalidated away).
        self.wc = Wildcards(_IN_PORT_MASK | (
            _RECIRC_MASK if pipeline.recirc_states or key.recirc_id else 0))
        # Pipeline metadata starts at zero for every packet (it is not part
        # of a packet): never packet-dependent, never in a megaflow.
        for m in _PIPELINE_META:
            o, n = MEMBERS[m]
            self.key.buf[o:o + n] = bytes(n)
        self.written = _PIPELINE_META_MASK   # bits set by actions: not packet-dependent
        self.pending = 0      # written bits not yet committed to the datapath
        self.odp: list = []
        self.out = XlateOutput(_NO_MEGAFLOW)
        self.action_set: dict = {}
        self.depth = 0        # nesting of action lists (trace indentation)
        self.recursion = 0    # resubmits to the same or an earlier table in progress
        self.n_resubmits = 0
        self.table_id = 0
        self.rule: Rule | None = None
        self.in_group = 0
        self.packet_out = False

    # --- the one accessor -------------------------------------------------
    def read(self, f: Field | str) -> int:
        """Read a field of the current flow and mark it consulted."""
        if isinstance(f, str):
            f = _F[f]
        self.wc.mask |= f.int_mask & ~self.written
        return self.key.get(f) & f.valid_mask

    def read_bits(self, f: Field | str, mask: int) -> int:
        """Read only ``mask`` bits of a field (e.g. the VLAN CFI bit)."""
        if isinstance(f, str):
            f = _F[f]
        self.wc.mask |= ((mask & f.max) << f.shift) & ~self.written
        return self.key.get(f) & mask

    def write(self, f: Field | str, value: int, mask: int | None = None) -> None:
        if isinstance(f, str):
            f = _F[f]
        m = f.max if mask is None else mask & f.max
        self.key.set(f, value, m)
        bits = m << f.shift
        self.written |= bits
        self.pending |= bits

    def lookup(self, table) -> Rule | None:
        tmp = Wildcards()
        key = int(self.key)
        rule = table.classifier.lookup(key, tmp)
        if table.conj.n_rules:
            rule = self._conj_lookup(table, key, rule, tmp)
        # conj_id is pipeline state, never part of a packet's key
        self.wc.mask |= tmp.mask & ~self.written & ~_CONJ_MASK
        return rule

    def _conj_lookup(self, table, key: int, hard: Rule | None, tmp: Wildcards) -> Rule | None:
        """Conjunctive match (OVS): among clause rules with priority above
        the best ordinary match, the highest priority whose conjunction has
        every clause matched sets conj_id, and the table is looked up again."""
        floor = hard.priority if hard is not None else -1
        clauses = table.conj.lookup_all(key, tmp, floor)
        if not clauses:
            return hard
        by_prio: dict[int, dict[int, tuple[int, set]]] = {}
        for r in clauses:
            sets = by_prio.setdefault(r.priority, {})
            for inst in r.instructions:
                for a in inst.actions:
                    n, seen = sets.setdefault(a.id, (a.n_clauses, set()))
                    seen.add(a.clause)
        conj_mask = _CONJ_MASK
        for prio in sorted(by_prio, reverse=True):
            for cid, (n, seen) in sorted(by_prio[prio].items()):
                if len(seen) < n:
                    continue
                probe = Wildcards()
                r = table.classifier.lookup((key & ~conj_mask) | (cid << member_shift("conj_id")),
                                            probe)
                tmp.mask |= probe.mask & ~conj_mask   # conj_id is ours, not the packet's
                if r is not None:
                    self.note(f"conjunction({cid}) complete at priority {prio}")
                    return r
        return hard

    def note(self, text: str) -> None:
        if self.tracing:
            self.out.trace.append("    " * self.depth + text)

    # --- committing to the datapath ---------------------------------------
    def commit(self) -> None:
        pending = self.pending
        if pending & _VLAN_MASK and not pending & (_VLAN_MASK & ~_VLAN0_TCI) and (
                self.committed_vlans and self.key.vlan0_tci & VLAN_CFI):
            # only the outer TCI was rewritten (set_field vlan_vid/pcp on a
            # tag the writer saw): a masked rewrite of just those bits
            sh = member_shift("vlan0_tci")
            self.wc.mask |= VLAN_CFI << sh    # that the packet has a tag decides this
            w = (pending & _VLAN0_TCI) >> sh
            self.odp.append(dp.SetMasked("vlan0_tci", self.key.vlan0_tci & w, w))
            self.committed_vlans = _vlan_stack(self.key)
            pending &= ~_VLAN_MASK
        if pending & _VLAN_MASK:
            # Which pops/pushes/rewrites are needed depends on the tags
            # themselves: consult them all (only when VLANs were touched).
            self.wc.mask |= _VLAN_MASK
            sk, sc = _vlan_stack(self.key), self.committed_vlans
            if sk != sc:
                if len(sk) == len(sc) == 1 and sk[0][0] == sc[0][0]:
                    diff = sk[0][1] ^ sc[0][1]
                    self.odp.append(dp.SetMasked("vlan0_tci", sk[0][1] & diff, diff))
                else:
                    common = 0
                    while common < min(len(sk), len(sc)) and sk[-1 - common] == sc[-1 - common]:
                        common += 1
                    for _ in range(len(sc) - common):
                        self.odp.append(dp.PopVlan())
                    for tpid, tci in reversed(sk[:len(sk) - common]):
                        self.odp.append(dp.PushVlan(tpid or 0x8100, tci))
            self.committed_vlans = sk
            pending &= ~_VLAN_MASK
        if pending:
            ki = int(self.key)
            for member, mmask, sh in _EMIT_MASKS:
                w = pending & mmask
                if w:
                    self.odp.append(dp.SetMasked(member, (ki & w) >> sh, w >> sh))
        self.pending = 0

    def emit(self, action) -> None:
        self.commit()
        self.odp.append(action)

    # --- outputs -----------------------------------------------------------
    def output(self, ofport: int, max_len: int = 0xffff) -> None:
        in_port = self.key.in_port
        if ofport == OFPP_IN_PORT:
            ofport = in_port
        elif ofport == OFPP_NORMAL:
            return self.p.normal(self)
        elif ofport == OFPP_FLOOD or ofport == OFPP_ALL:
            for port in self.p.sorted_ports():
                if port.ofport == in_port or (ofport == OFPP_FLOOD and port.no_flood):
                    continue
                self._output_port(port)
            return
        elif ofport == OFPP_CONTROLLER:
            return self.controller(A.Controller(max_len=max_len))
        elif ofport == OFPP_TABLE:
            if self.packet_out and self.depth == 0:   # only a packet-out's own actions
                self.run_pipeline(0)
            return
        elif ofport == OFPP_ANY or ofport == 0:
            return
        elif ofport == in_port:
            self.note(f"skipping output to input port {ofport}")
            return
        port = self.p.ports.get(ofport)
        if port is None:
            self.note(f"output to nonexistent port {ofport}")
            return
        self._output_port(port)

    def _output_port(self, port) -> None:
        if port.no_fwd:
            self.note(f"port {port.ofport} is no_fwd: dropping")
            return
        peer = self.p.patch_peers.get(port.ofport)
        if peer is not None:
            return self._output_patch(*peer)
        if port.tunnel is not None:
            return self._output_tunnel(port)
        self.note(f"output:{port.ofport}")
        self.emit(dp.Output(port.dp_port))

    def _output_patch(self, peer, peer_ofport: int) -> None:
        """A patch port: the packet enters the peer bridge on its end of the
        patch, within this translation (OVS patch_port_output): pipeline
        metadata and conntrack state start afresh there, the action set is
        the peer's own; afterwards this bridge goes on as before."""
        if self.recursion >= MAX_RESUBMIT_DEPTH or self.n_resubmits >= MAX_RESUBMITS:
            self.note("patch port: recursion limit reached, dropping")
            self.odp.clear()
            raise _Stop
        self.note(f"patch port to {peer_ofport} of the peer bridge")
        saved = self.save()
        state = (self.p, self.table_id, self.rule, self.action_set)
        self.n_resubmits += 1
        self.recursion += 1
        if peer is not self.p and all(p is not peer for p, _ in self.out.peers):
            self.out.peers.append((peer, peer.version))
        self.p, self.action_set = peer, {}
        self.key.in_port = peer_ofport
        for m in _PIPELINE_META + _CT_MEMBERS:
            o, n = MEMBERS[m]
            self.key.buf[o:o + n] = bytes(n)
        self.written |= _IN_PORT_MASK | _PIPELINE_META_MASK | _CT_MASK
        try:
            self.run_pipeline(0)
        except _Unwind as u:
            u.rest.append(PatchReturn(*state, saved))
            raise
        self.recursion -= 1
        self.restore(saved)
        self.p, self.table_id, self.rule, self.action_set = state

    def consult(self, *members: str) -> None:
        """Mark whole key members consulted (what a helper outside xlate reads)."""
        for m in members:
            self.wc.mask |= member_int_mask(m) & ~self.written

    def _output_tunnel(self, port) -> None:
        """Output to a GENEVE port: the encapsulation comes from the port's
        options and, where they say ``flow``, from the flow's tun_* fields.
        Output to an internal port holding tunnel addresses (a
        `TunnelEndpoint`) may become a ``tnl_pop`` instead."""
        from slowpath import tunnel as T
        cfg = port.tunnel
        if isinstance(cfg, T.TunnelEndpoint):
            if not self._tnl_pop(cfg):
                self.note(f"output:{port.ofport}")
                self.emit(dp.Output(port.dp_port))
            return
        if cfg.remote_ip is None:
            self.consult("tun_dst", "tun_ipv6_dst")
        if cfg.key is None:
            self.consult("tun_id")
        self.consult("tun_flags")   # the O bit
        if cfg.ttl == "inherit":
            self.consult("nw_ttl")
        if cfg.tos == "inherit":
            self.consult("nw_tos")
        tlv = self.p.tlv_map or T.TlvMap()
        for index in tlv.by_index:      # the options the header carries
            self.wc.mask |= _tlv_slot_mask(index) & ~self.written
        push = T.tunnel_push(self.key, cfg, tlv, port.dp_port, 0)
        if not push.dst:
            self.note(f"tunnel port {port.ofport}: no remote IP, dropping")
            return
        self.note(f"output:{port.ofport} (tunnel to {push.dst}, vni {push.tun_id:#x})")
        self.emit(push)

    def _tnl_pop(self, ep) -> bool:
        """Native tunnelling, receive (OVS ``tnl_port_map_lookup``): a
        non-fragment UDP packet to a tunnel address and port of ``ep`` is
        decapsulated by the datapath (``TunnelPop``) instead of going to
        the host stack.  Consults exactly what it compares."""
        k = self.key
        self.consult("dl_type")
        if k.dl_type == 0x0800:
            self.consult("nw_dst")
            version, addr = 4, k.nw_dst
        elif k.dl_type == 0x86DD:
            self.consult("ipv6_dst")
            version, addr = 6, k.ipv6_dst
        else:
            return False
        self.consult("nw_proto", "nw_frag")
        if k.nw_proto != 17 or k.nw_frag & 1:
            return False   # fragments: the host stack reassembles them
        self.consult("tp_dst")
        endpoint = ep.lookup(version, addr, k.tp_dst)
        if endpoint is None:
            return False
        self.note(f"tnl_pop({endpoint}): GENEVE to a local tunnel address")
        self.emit(dp.TunnelPop(endpoint))
        return True

    def controller(self, act: A.Controller, reason: int | None = None) -> None:
        in_port = self.p.ports.get(self.key.in_port)
        if in_port is not None and in_port.no_packet_in:
            return
        reason = act.reason if reason is None else reason
        self.note(f"controller(reason={reason})")
        self.emit(dp.Userspace("controller", (act.controller_id, reason, act.max_len)))
        if self.side_effects:
            data = self._packet_now()
            if act.meter_id is not None and not self.p.meter_packet_in(
                    act.meter_id, len(data), self.now):
                self.note(f"controller: meter {act.meter_id} drops the packet-in")
                if act.pause:
                    raise _Stop      # the paused rest would have waited for it
                return
            cookie = self.rule.cookie if self.rule is not None else 0xffffffffffffffff
            pin = PacketIn(reason, self.table_id, cookie, self.key.copy(), data, len(data),
                           act.max_len, act.userdata, act.pause, act.controller_id,
                           pipeline=self.p)
            self.out.packet_ins.append(pin)
            if act.pause:
                self.out.slow = True
                raise _Pause(pin)

    def _packet_now(self) -> bytes:
        """The packet as the actions so far made it (what a packet-in carries)."""
        data = self.packet or b""
        mods = [a for a in self.odp if isinstance(a, _REWRITES)]
        if not data or not mods:
            return data
        from slowpath import odp_execute
        try:
            return bytes(odp_execute.execute(data, self.base, mods, _NoEnv()).frame)
        except Exception:      # an executor gap must not lose the packet-in
            return data

    # --- pipeline ------------------------------------------------------------
    def run_pipeline(self, table_id: int) -> None:
        """Walk tables from ``table_id`` following goto_table; then run the
        action set (OpenFlow 1.3 §5.1)."""
        try:
            ok = self.run_table(table_id)
        except _Unwind as p:
            p.rest.append(RUN_ACTION_SET)
            raise
        if ok:
            self.execute_action_set()

    def run_table(self, table_id: int) -> bool:
        """Look up one table and run the matched rule's instructions; returns
        False if the packet was dropped by a table miss."""
        while True:
            table = self.p.table(table_id)
            self.table_id = table_id
            rule = self.lookup(table)
            if self.side_effects:
                table.lookup_count += 1
            if rule is None:
                self.note(f"{table_id}. No match.")
                if self.p.miss_to_controller:
                    self.rule = None
                    self.controller(A.Controller(max_len=self.p.miss_send_len), ofp.OFPR_NO_MATCH)
                return False
            if self.tracing:
                self.note(f"{table_id}. {rule.match.to_string() or '(any)'}, "
                          f"priority {rule.priority}"
                          + (f", cookie {rule.cookie:#x}" if rule.cookie else ""))
            self.rule = rule
            self.out.rules.append(rule)
            if self.side_effects:
                table.matched_count += 1
                self.p.credit_rule(rule, 1, len(self.packet or b""), self.now)
            goto = None
            for i, inst in enumerate(rule.instructions):
                if isinstance(inst, A.GotoTable):
                    goto = inst.table_id
                    continue
                try:
                    self.run_instruction(inst)
                except _Unwind as p:
                    p.rest.extend(rule.instructions[i + 1:])
                    raise
            if goto is None:
                return True
            table_id = goto

    def run_instruction(self, inst) -> None:
        """One instruction other than goto_table."""
        if isinstance(inst, A.Meter):
            self.emit(dp.Meter(inst.meter_id))
        elif isinstance(inst, A.ApplyActions):
            self.depth += 1
            self.do_actions(inst.actions)
            self.depth -= 1
        elif isinstance(inst, A.ClearActions):
            self.action_set.clear()
        elif isinstance(inst, A.WriteActions):
            for a in inst.actions:
                self.action_set[_set_slot(a)] = a
        elif isinstance(inst, A.WriteMetadata):
            self.write("metadata", inst.metadata, inst.mask)

    def run_frozen(self, items) -> None:
        """Run a `Frozen`'s items.  A goto_table that misses ends its table
        walk: the rest up to the enclosing resubmit's `Return` is skipped,
        and at the top level so is the action set."""
        skipping = False
        for i, it in enumerate(items):
            if skipping and not isinstance(it, (Return, PatchReturn)):
                continue
            skipping = False
            try:
                if isinstance(it, Return):
                    self.key.in_port = it.in_port
                    self.table_id, self.rule = it.table_id, it.rule
                elif isinstance(it, PatchReturn):
                    self.restore(it.saved)
                    self.p, self.table_id, self.rule = it.pipeline, it.table_id, it.rule
                    self.action_set = it.action_set
                elif it is RUN_ACTION_SET:
                    self.execute_action_set()
                elif isinstance(it, SelectBucket):
                    self.p.xlate_group(self, it.group_id, hashed=True)
                elif isinstance(it, A.GotoTable):
                    skipping = not self.run_table(it.table_id)
                elif isinstance(it, _INSTRUCTIONS):
                    self.run_instruction(it)
                else:
                    self.do_actions((it,))
            except _Unwind as p:
                p.rest.extend(items[i + 1:])
                raise

    def execute_action_set(self) -> None:
        if not self.action_set:
            return
        acts = sorted(self.action_set.items(), key=lambda kv: _SET_ORDER.get(kv[0][0], 99))
        self.action_set = {}
        ordered = [a for _, a in acts]
        # group wins over output (OpenFlow 1.3 §5.10)
        if any(isinstance(a, A.Group) for a in ordered):
            ordered = [a for a in ordered if not isinstance(a, A.Output)]
        self.note("action set: " + ", ".join(type(a).__name__ for a in ordered))
        self.do_actions(ordered)

    def do_actions(self, actions) -> None:
        for i, a in enumerate(actions):
            h = _HANDLERS.get(type(a))
            if h is None:
                self.note(f"unsupported action {a!r}: slow path")
                self.out.slow = True
                continue
            try:
                h(self, a)
            except _Unwind as p:
                p.rest.extend(actions[i + 1:])
                raise

    def hash_recirc(self, h: _HashRecirc) -> None:
        """Emit hash + recirculate, the rest frozen into the recirc_id."""
        frozen = Frozen((SelectBucket(h.group_id),) + tuple(h.rest), dict(self.action_set),
                        self.table_id, self.rule, self.n_resubmits, self.p.version)
        # the recirc_id freezes metadata and registers: it depends on them
        self.wc.mask |= (member_int_mask("metadata") | member_int_mask("regs")) & ~self.written
        rid = self.p.recirc.alloc(self.p, frozen, self.key)
        self.wc.mask |= _RECIRC_MASK
        self.emit(dp.Hash("l4", h.group_id))
        self.emit(dp.Recirc(rid))

    def freeze(self, p: _Pause) -> None:
        """Register what a pause left for NXT_RESUME; its packet-in carries
        the continuation."""
        p.pin.frozen = Frozen(tuple(p.rest), dict(self.action_set), self.table_id, self.rule,
                              self.n_resubmits, self.p.version)
        p.pin.continuation = self.p.continuations.freeze(p.pin.frozen, p.pin.table_id,
                                                         p.pin.cookie)

    def fork(self, f: _Fork) -> None:
        """check_pkt_larger: the packet's length is not in the flow key, so
        (as OVS does) what is left is translated twice, with the result bit
        1 and 0, into a datapath ``CheckPktLen`` that picks a branch per
        packet.  Side effects (packet-ins, learning, counters) belong to the
        branch this packet takes."""
        a = f.action
        self.commit()
        from slowpath.odp_execute import l2_len_without_vlans
        actual = l2_len_without_vlans(self._packet_now()) > a.pkt_len if self.packet else None
        key, written, vlans = self.key.copy(), self.written, list(self.committed_vlans)
        action_set, side_effects, odp = dict(self.action_set), self.side_effects, self.odp
        table_id, rule, depth = self.table_id, self.rule, self.depth
        pipeline, recursion = self.p, self.recursion
        branches = []
        for bit in (1, 0):
            self.key, self.written, self.committed_vlans = key.copy(), written, list(vlans)
            self.action_set, self.pending, self.odp = dict(action_set), 0, list(odp)
            self.table_id, self.rule, self.depth = table_id, rule, depth
            self.p, self.recursion = pipeline, recursion
            self.side_effects = side_effects and actual in (None, bool(bit))
            self.note(f"check_pkt_larger({a.pkt_len}) -> {a.field}[{a.ofs}] = {bit}")
            self.write(a.field, bit << a.ofs, 1 << a.ofs)
            try:
                self.run_frozen(f.rest)
            except _Stop:
                pass
            except _Fork as inner:
                self.fork(inner)
            except _HashRecirc as h:
                self.hash_recirc(h)
            branches.append(tuple(self.odp[len(odp):]))
        self.key, self.written, self.committed_vlans = key, written, vlans
        self.action_set, self.pending, self.side_effects = action_set, 0, side_effects
        self.table_id, self.rule, self.depth = table_id, rule, depth
        self.p, self.recursion = pipeline, recursion
        self.odp = odp + [dp.CheckPktLen(a.pkt_len, branches[0], branches[1])]

    # --- cloning for groups and clone() ----------------------------------
    def save(self):
        return self.key.copy(), self.written

    def restore(self, saved) -> None:
        """Undo key changes made since ``save`` (the datapath packet keeps
        them until the next commit rewrites it back)."""
        key, written = saved
        diff = int(key) ^ int(self.key)
        # restoring to packet values that were never consulted makes the
        # rewrite-back depend on them
        self.wc.mask |= diff & self.written & ~written
        self.pending |= diff & self.written
        self.key = key
        self.written |= written

    def run_clone(self, actions) -> None:
        """Run ``actions`` on a copy of the packet (group buckets, clone()):
        nothing they change is visible afterwards.  Emitted flat when they
        only output, else inside a datapath ``Clone``."""
        self.commit()
        key, written, odp = self.key.copy(), self.written, self.odp
        self.odp = []
        self.depth += 1
        try:
            try:
                self.do_actions(actions)
            except _Fork as f:
                self.fork(f)
            except _Pause as p:
                # as OVS: the pause freezes the rest of the clone only; the
                # actions after the clone go on with the original packet
                self.freeze(p)
            except _HashRecirc as h:
                self.hash_recirc(h)
        finally:
            self.depth -= 1
            inner = self.odp
            if not all(isinstance(a, (dp.Output, dp.Userspace, dp.Meter)) for a in inner):
                inner = [dp.Clone(tuple(inner))]
            self.odp = odp + inner
            self.key, self.written = key, written
            self.committed_vlans, self.pending = _vlan_stack(key), 0


def _vlan_stack(k: FlowKey) -> list[tuple[int, int]]:
    out = []
    if k.vlan0_tci & VLAN_CFI:
        out.append((k.vlan0_tpid, k.vlan0_tci))
        if k.vlan1_tci & VLAN_CFI:
            out.append((k.vlan1_tpid, k.vlan1_tci))
    return out


_SET_ORDER = {"copy_ttl_in": 0, "pop": 1, "push_mpls": 2, "push_vlan": 3, "copy_ttl_out": 4,
              "dec_ttl": 5, "set": 6, "qos": 7, "group": 8, "output": 9, "other": 10}


def _set_slot(a):
    """Action-set slot: one action of each type (set_field: one per field)."""
    if isinstance(a, A.CopyTtl):
        return ("copy_ttl_out" if a.outward else "copy_ttl_in", None)
    if isinstance(a, (A.PopVlan, A.PopMpls)):
        return ("pop", None)
    if isinstance(a, A.PushMpls):
        return ("push_mpls", None)
    if isinstance(a, A.PushVlan):
        return ("push_vlan", None)
    if isinstance(a, (A.DecTtl, A.DecMplsTtl)):
        return ("dec_ttl", type(a).__name__)
    if isinstance(a, (A.SetField, A.SetNwTtl, A.SetMplsTtl)):
        return ("set", getattr(a, "field", type(a).__name__))
    if isinstance(a, A.SetQueue):
        return ("qos", None)
    if isinstance(a, A.Group):
        return ("group", None)
    if isinstance(a, A.Output):
        return ("output", None)
    return ("other", type(a).__name__)


# --- action handlers --------------------------------------------------------

def _prereqs_ok(ctx: XlateCtx, prereq: str) -> bool:
    """Check a field's prerequisites on the current flow, consulting them."""
    for alt in PREREQS[prereq]:
        if all(ctx.read_bits(n, mk) == v for n, v, mk in alt):
            return True
    return False


def _x_output(ctx, a: A.Output):
    ctx.output(a.port, a.max_len)


def _x_controller(ctx, a: A.Controller):
    ctx.controller(a)


def _x_set_field(ctx, a: A.SetField):
    f = _F[a.field]
    if f.prereq and f.prereq != "vlan" and not _prereqs_ok(ctx, f.prereq):
        ctx.note(f"set_field {a.field}: prerequisites not met, skipped")
        return
    value, mask = a.value, a.mask
    if f.name == "vlan_vid":
        if not ctx.read_bits("vlan_tci", VLAN_CFI):
            _x_push_vlan(ctx, A.PushVlan())    # OF1.0 set_vlan_vid semantics
        value |= VLAN_CFI
        mask = (f.max if mask is None else mask) & 0xfff
    elif f.name in ("vlan_pcp", "dl_vlan_pcp", "dl_vlan"):
        if not ctx.read_bits("vlan_tci", VLAN_CFI):
            _x_push_vlan(ctx, A.PushVlan())
    ctx.write(f, value, mask)


def _x_move(ctx, a: A.Move):
    src = ctx.read_bits(a.src, ((1 << a.n_bits) - 1) << a.src_ofs) >> a.src_ofs
    ctx.write(a.dst, src << a.dst_ofs, ((1 << a.n_bits) - 1) << a.dst_ofs)


def _x_push_vlan(ctx, a: A.PushVlan):
    tci = ctx.read("vlan_tci")          # the new tag copies VID/PCP of the old outer tag
    k = ctx.key
    tpid = k.vlan0_tpid
    tci = tci if tci & VLAN_CFI else 0
    third = False
    if tci:   # is there an inner tag too?  (consult its presence)
        ctx.wc.mask |= (VLAN_CFI << member_shift("vlan1_tci")) & ~ctx.written
        third = bool(k.vlan1_tci & VLAN_CFI)
    if third:
        # a third tag: the key keeps only the outer two, so the push cannot
        # be deferred to a commit that diffs stacks; emit it now
        ctx.commit()
        ctx.odp.append(dp.PushVlan(a.ethertype, tci | VLAN_CFI))
    for n in ("vlan0_tpid", "vlan0_tci", "vlan1_tpid", "vlan1_tci"):
        ctx.written |= member_int_mask(n)
        if not third:
            ctx.pending |= member_int_mask(n)
    k.vlan1_tpid, k.vlan1_tci = (tpid, tci) if tci else (0, 0)
    k.vlan0_tpid, k.vlan0_tci = a.ethertype, tci | VLAN_CFI
    if third:
        ctx.committed_vlans = _vlan_stack(k)


def _x_pop_vlan(ctx, a: A.PopVlan):
    if not ctx.read_bits("vlan_tci", VLAN_CFI):
        return
    k = ctx.key
    inner_tpid, inner_tci = k.vlan1_tpid, k.vlan1_tci
    for n in ("vlan0_tpid", "vlan0_tci", "vlan1_tpid", "vlan1_tci"):
        ctx.written |= member_int_mask(n)
        ctx.pending |= member_int_mask(n)
    # inner tag (if any) becomes outer: its presence is consulted
    ctx.wc.mask |= (VLAN_CFI << member_shift("vlan1_tci")) & ~ctx.written
    k.vlan0_tpid, k.vlan0_tci = inner_tpid, inner_tci
    k.vlan1_tpid, k.vlan1_tci = 0, 0


def _x_push_mpls(ctx, a: A.PushMpls):
    ctx.commit()
    if ctx.read_bits("eth_type", 0xffff) in (0x8847, 0x8848):
        ctx.wc.mask |= member_int_mask("mpls_lse") & ~ctx.written
        lse = ctx.key.mpls_lse & ~0x100          # copy the outer LSE, bos=0
    elif ctx.read_bits("eth_type", 0xffff) in (0x0800, 0x86dd):
        lse = 0x100 | ctx.read("nw_ttl")
    else:
        lse = 0x100 | 64
    ctx.odp.append(dp.PushMpls(lse, a.ethertype))
    ctx.key.dl_type = a.ethertype
    ctx.key.mpls_lse = lse
    ctx.written |= member_int_mask("dl_type") | member_int_mask("mpls_lse")


def _x_pop_mpls(ctx, a: A.PopMpls):
    if ctx.read_bits("eth_type", 0xffff) not in (0x8847, 0x8848):
        return
    ctx.commit()
    ctx.odp.append(dp.PopMpls(a.ethertype))
    ctx.key.dl_type = a.ethertype
    ctx.key.mpls_lse = 0
    # L3 fields of the inner packet stay unknown (zero) until reparsed
    ctx.written |= member_int_mask("dl_type") | member_int_mask("mpls_lse")


def _x_set_mpls_ttl(ctx, a: A.SetMplsTtl):
    if ctx.read_bits("eth_type", 0xffff) in (0x8847, 0x8848):
        ctx.write("mpls_ttl", a.ttl)


def _x_dec_mpls_ttl(ctx, a: A.DecMplsTtl):
    if ctx.read_bits("eth_type", 0xffff) not in (0x8847, 0x8848):
        return
    ttl = ctx.read("mpls_ttl")
    if ttl <= 1:
        ctx.controller(A.Controller(), ofp.OFPR_INVALID_TTL)
        raise _Stop
    ctx.write("mpls_ttl", ttl - 1)


def _x_set_nw_ttl(ctx, a: A.SetNwTtl):
    if _prereqs_ok(ctx, "ip_any"):
        ctx.write("nw_ttl", a.ttl)


def _x_dec_ttl(ctx, a: A.DecTtl):
    if not _prereqs_ok(ctx, "ip_any"):
        return
    ttl = ctx.read("nw_ttl")
    if ttl <= 1:
        for cid in a.controller_ids or (0,):
            ctx.controller(A.Controller(controller_id=cid), ofp.OFPR_INVALID_TTL)
        raise _Stop
    ctx.write("nw_ttl", ttl - 1)


def _x_copy_ttl(ctx, a: A.CopyTtl):
    if ctx.read_bits("eth_type", 0xffff) not in (0x8847, 0x8848):
        return
    if a.outward:
        return   # inner IP TTL unknown without reparsing: no-op
    ctx.note("copy_ttl_in: inner header not parsed, ignored")


def _x_group(ctx, a: A.Group):
    ctx.p.xlate_group(ctx, a.group_id)


def _x_set_queue(ctx, a: A.SetQueue):
    ctx.write("skb_priority", a.queue_id)


def _x_resubmit(ctx, a: A.Resubmit):
    table = ctx.table_id if a.table is None else a.table
    deepens = table <= ctx.table_id
    if (deepens and ctx.recursion >= MAX_RESUBMIT_DEPTH) or ctx.n_resubmits >= MAX_RESUBMITS:
        ctx.note("resubmit: recursion limit reached, dropping")
        ctx.odp.clear()
        raise _Stop
    ctx.n_resubmits += 1
    ctx.recursion += deepens
    saved_port, saved_table, saved_rule = ctx.key.in_port, ctx.table_id, ctx.rule
    if a.in_port != OFPP_IN_PORT:
        ctx.key.in_port = a.in_port
    ctx.depth += 1
    ctx.note(f"resubmit({'' if a.in_port == OFPP_IN_PORT else a.in_port},{table})")
    try:
        ctx.run_table(table)
    except _Unwind as p:
        p.rest.append(Return(saved_port, saved_table, saved_rule))
        raise
    ctx.depth -= 1
    ctx.recursion -= deepens
    ctx.key.in_port = saved_port
    ctx.table_id, ctx.rule = saved_table, saved_rule


def _x_ct(ctx, a: A.Ct):
    zone = ctx.read(a.zone_src) & 0xffff if a.zone_src else a.zone
    mark = label = None
    for e in a.exec:
        if isinstance(e, A.SetField) and _F[e.field].name == "ct_mark":
            mark = (e.value, 0xffffffff if e.mask is None else e.mask)
        elif isinstance(e, A.SetField) and _F[e.field].name == "ct_label":
            label = (e.value, (1 << 128) - 1 if e.mask is None else e.mask)
    ctx.emit(dp.Ct(a.commit, zone, mark, label, a.nat, a.alg, a.force))
    if a.table is not None:
        # the recirc_id freezes metadata and registers: it depends on them
        ctx.wc.mask |= (member_int_mask("metadata") | member_int_mask("regs")) & ~ctx.written
        rid = ctx.p.alloc_recirc(a.table, ctx.key)
        ctx.wc.mask |= _RECIRC_MASK
        ctx.emit(dp.Recirc(rid))


def _x_ct_clear(ctx, a: A.CtClear):
    for n in ("ct_state", "ct_zone", "ct_mark", "ct_label"):
        o, s = MEMBERS[n]
        ctx.key.buf[o:o + s] = bytes(s)
        ctx.written |= member_int_mask(n)
    ctx.emit(dp.CtClear())


def _x_meter(ctx, a: A.Meter):
    ctx.emit(dp.Meter(a.meter_id))


def _x_output_reg(ctx, a: A.OutputReg):
    port = ctx.read_bits(a.field, ((1 << a.n_bits) - 1) << a.ofs) >> a.ofs
    ctx.output(port, a.max_len)


def _x_check_pkt_larger(ctx, a: A.CheckPktLarger):
    raise _Fork(a)


def _x_clone(ctx, a: A.Clone):
    ctx.run_clone(a.actions)


def _x_learn(ctx, a: A.Learn):
    """Build the learned rule from the packet (reading marks the source
    bits) and add it; cache hits re-run it through ``XlateOutput.learns``."""
    match = Match()
    acts = []
    for sp in a.specs:
        bits = (1 << sp.n_bits) - 1
        if sp.src is not None:
            v = ctx.read_bits(sp.src, bits << sp.src_ofs) >> sp.src_ofs
        else:
            v = sp.value or 0
        if sp.kind == "match":
            old_v, old_m = match.get(sp.dst)
            mask = bits << sp.dst_ofs
            try:
                match.set_field(sp.dst, (old_v & ~mask) | (v << sp.dst_ofs), old_m | mask)
            except OFError:
                ctx.note(f"learn: cannot match {sp.dst} partially, skipped")
                return
        elif sp.kind == "load":
            acts.append(A.SetField(sp.dst, v << sp.dst_ofs, bits << sp.dst_ofs))
        elif sp.kind == "output":
            acts.append(A.Output(v))
    from slowpath.pipeline import FlowMod
    fm = FlowMod("add", a.table_id, a.priority, match, a.cookie, 0, a.idle_timeout,
                 a.hard_timeout, frozenset(a.flags) - {"delete_learned"},
                 instructions=(A.ApplyActions(tuple(acts)),))
    ctx.out.learns.append((fm, ctx.p))
    ctx.note(f"learn: table={a.table_id},priority={a.priority},{match.to_string()}")
    if ctx.side_effects:
        ctx.p.apply_learn(fm, ctx.now)


_HASH_FIELDS = {
    "eth_src": ("eth_src",),
    "nw_src": ("eth_type", "ip_src", "ipv6_src"),
    "nw_dst": ("eth_type", "ip_dst", "ipv6_dst"),
    "symmetric_l3l4": ("eth_type", "ip_src", "ip_dst", "ipv6_src", "ipv6_dst", "nw_proto",
                       "tp_src", "tp_dst"),
    "symmetric_l4": ("eth_src", "eth_dst", "eth_type", "vlan_tci", "ip_src", "ip_dst",
                     "ipv6_src", "ipv6_dst", "nw_proto", "tp_src", "tp_dst"),
}


def flow_hash(ctx: XlateCtx, fields: str, basis: int) -> int:
    """Symmetric hash of the named field set (src/dst order-independent);
    consults the fields."""
    names = _HASH_FIELDS.get(fields, _HASH_FIELDS["symmetric_l4"])
    vals = {n: ctx.read(n) for n in names}
    parts = []
    for a, b in (("eth_src", "eth_dst"), ("ip_src", "ip_dst"), ("ipv6_src", "ipv6_dst"),
                 ("tp_src", "tp_dst")):
        pair = sorted(v for v in (vals.pop(a, None), vals.pop(b, None)) if v is not None)
        parts += pair
    parts += [vals[n] for n in sorted(vals)]
    return zlib.crc32(b"".join(v.to_bytes(16, "big") for v in parts), basis)


def _x_multipath(ctx, a: A.Multipath):
    link = flow_hash(ctx, a.fields, a.basis) % max(a.n_links, 1)
    ctx.write(a.dst, link << a.dst_ofs, ((1 << a.n_bits) - 1) << a.dst_ofs)


def _x_bundle(ctx, a: A.Bundle):
    live = [m for m in a.members if (p := ctx.p.ports.get(m)) is not None and p.is_up]
    if live:
        ctx.output(live[flow_hash(ctx, a.fields, a.basis) % len(live)])


def _x_sample(ctx, a: A.Sample):
    # executed per packet by the datapath: probability out of 2**32-1
    prob = (a.probability * 0xffffffff) // 0xffff
    ctx.emit(dp.Sample(prob, (dp.Userspace("sample", (a.collector_set_id, a.obs_domain_id,
                                                        a.obs_point_id)),)))


def _x_nothing(ctx, a):
    pass


_HANDLERS = {
    A.Output: _x_output, A.Controller: _x_controller, A.SetField: _x_set_field,
    A.Move: _x_move, A.PushVlan: _x_push_vlan, A.PopVlan: _x_pop_vlan,
    A.PushMpls: _x_push_mpls, A.PopMpls: _x_pop_mpls, A.SetMplsTtl: _x_set_mpls_ttl,
    A.DecMplsTtl: _x_dec_mpls_ttl, A.SetNwTtl: _x_set_nw_ttl, A.DecTtl: _x_dec_ttl,
    A.CopyTtl: _x_copy_ttl, A.Group: _x_group, A.SetQueue: _x_set_queue,
    A.Resubmit: _x_resubmit, A.Ct: _x_ct, A.CtClear: _x_ct_clear, A.Meter: _x_meter,
    A.OutputReg: _x_output_reg, A.Clone: _x_clone, A.Note: _x_nothing,
    A.CheckPktLarger: _x_check_pkt_larger,
    A.Conjunction: _x_nothing, A.Learn: _x_learn, A.Multipath: _x_multipath,
    A.Bundle: _x_bundle, A.Sample: _x_sample,
}


_INSTRUCTIONS = (A.ApplyActions, A.ClearActions, A.WriteActions, A.WriteMetadata)


def xlate(pipeline, key: FlowKey, packet: bytes | None = None, now: float = 0.0, *,
          actions=None, side_effects: bool = True, trace: bool = False,
          resume: Frozen | None = None) -> XlateOutput:
    """Translate ``key`` (``key.in_port`` is the OpenFlow port) through
    ``pipeline`` from table 0, or run ``actions`` (packet-out), or go on
    with a paused translation (``resume``: ``key`` then carries the pipeline
    metadata the controller handed back).  Returns the megaflow and the
    packet-ins and rules it produced."""
    ctx = XlateCtx(pipeline, key, packet, now, side_effects, trace)
    ctx.out.version = pipeline.version
    in_port = pipeline.ports.get(key.in_port)
    try:
        try:
            _translate(ctx, pipeline, key, in_port, actions, resume)
        except _Fork as f:
            ctx.fork(f)
        except _HashRecirc as h:
            ctx.hash_recirc(h)
    except _Stop:
        pass
    except _Pause as p:
        ctx.freeze(p)
    except RecursionError:
        ctx.note("translation nests deeper than the interpreter allows, dropping")
        ctx.odp.clear()
    if trace:
        ctx.out.final_key = ctx.key.copy()
    mask = ctx.wc.mask
    ctx.out.megaflow = Megaflow((int(ctx.base) & mask).to_bytes(FLOW_KEY_SIZE, "big"),
                                mask.to_bytes(FLOW_KEY_SIZE, "big"), tuple(ctx.odp))
    return ctx.out


def _translate(ctx: XlateCtx, pipeline, key: FlowKey, in_port, actions, resume) -> None:
    """The body of `xlate`: where this translation starts."""
    if resume is not None:
        for m in _PIPELINE_META:
            o, n = MEMBERS[m]
            ctx.key.buf[o:o + n] = key.buf[o:o + n]
        ctx.action_set = dict(resume.action_set)
        ctx.table_id, ctx.rule = resume.table_id, resume.rule
        ctx.n_resubmits = resume.n_resubmits
        ctx.out.slow = True
        ctx.run_frozen(resume.items)
    elif in_port is not None and in_port.no_recv and actions is None:
        ctx.note(f"port {key.in_port} is no_recv: dropping")
    elif key.recirc_id:
        state = pipeline.recirc_states.get(key.recirc_id)
        if state is None:
            ctx.note(f"unknown recirc_id {key.recirc_id:#x}: dropping")
        else:
            owner, target, frozen = state
            if owner is not pipeline:      # frozen beyond a patch port
                ctx.p = owner
                ctx.out.peers.append((owner, owner.version))
            for n in ("in_port", "metadata", "regs"):
                setattr(ctx.key, n, getattr(frozen, n))
                ctx.written |= member_int_mask(n)   # constants of the recirc_id
            if isinstance(target, Frozen):          # a select group's bucket choice
                ctx.action_set = dict(target.action_set)
                ctx.table_id, ctx.rule = target.table_id, target.rule
                ctx.n_resubmits = target.n_resubmits
                ctx.run_frozen(target.items)
            else:
                ctx.run_pipeline(target)
    elif actions is not None:
        ctx.packet_out = True
        ctx.do_actions(actions)
    else:
        ctx.run_pipeline(0)
