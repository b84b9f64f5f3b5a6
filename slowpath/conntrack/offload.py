"""Conntrack offload, the cache's half: established connections as exact
megaflows the compiled fast paths run without the tracker.

OVS does not need this: its kernel (and DPDK) datapaths run conntrack per
packet in C.  Ours is Python, so a ``ct`` megaflow is "slow path" and every
packet through it costs an upcall.  We do what Linux's netfilter flowtable
(``nf_flow_offload``) and the hardware conntrack offload of OVS/tc do: once
the tracker says a connection is established both ways (`ConnTracker.offload`),
its packets in one direction get one megaflow that is exact on that
direction's flow and whose actions are the whole run *flattened*: the actions
before ``ct``, the NAT rewrite the connection implies, then the datapath
actions of the translation after recirculation, made for the ct_state the
tracker gives such packets (``+trk+est``, ``+rpl`` on replies, ct_zone,
ct_mark, ct_label and the original tuple as the connection has them), and so
on through every further ``ct``/recirculation.  The match is the pre-ct
megaflow's match narrowed to the connection -- in_port, Ethernet addresses
and type, the 5-tuple, not a fragment, recirc_id 0, plus every header bit a
later translation consulted -- and, for TCP, the flags SYN, FIN and RST
masked in and required zero, so every segment that can change the
connection's state still reaches the tracker through the generic megaflow
(which the offloaded one overrides: it goes in with priority).  ACK must be
set: a segment without SYN/FIN/RST and without ACK is +inv
(tcp.invalid_flags), so it goes to the tracker too.

A connection qualifies only while the decision cannot change per packet:
`ConnTracker.predict` refuses a ``ct(commit)`` that would change mark or
label, ``force`` on a reply, FTP (the ALG reads payloads) and anything that
is not TCP/UDP; the flattened run must contain nothing but actions the fast
path executes (no controller, no ``hash`` for a select group, no tunnel
pop).  What the tracker loses and how it is given back:

* last-seen time and counters: the revalidator reads each entry's hits and
  calls `ConnTracker.touch`; before expiring an offloaded connection the
  tracker asks `used` (the cache's last hit) so unreported hits count too;
* TCP state: SYN/FIN/RST come to the tracker; the entries of a connection a
  FIN or RST makes non-offloadable are deleted right after that packet, so
  the closing ACKs are seen too.  TCP is offloaded only when the operator
  allows it (``ConnTracker.offload_tcp``, ``dpctl/ct-set-offload
  tcp-liberal``), because windows are not checked for what the cache forwarded (the tracker turns liberal for that connection, like
  Linux's ``nf_conntrack_tcp_be_liberal`` for flowtable connections): an
  out-of-window segment of an established connection (ACK, no SYN/FIN/RST)
  passes -- the one thing an offloaded connection lets through that the
  tracker would have marked +inv;
* rule changes: entries are ukeys of the revalidator like any megaflow and
  are re-planned (`Plan.still_valid`) whenever the pipeline's version
  moves, before the barrier reply; a plan whose actions changed is deleted;
* mark/label changes, flushes, expiry, deletion: the tracker lists the
  connection in `unoffloaded` and its entries are deleted.

Sans-IO: the caller installs and deletes the datapath entries.
"""

from __future__ import annotations

from collections import OrderedDict

from slowpath import dpactions as dp
from slowpath.conntrack.packet import TCP
from slowpath.conntrack.tracker import ConnTracker, key_tuple
from slowpath.fields import FLOW_KEY_SIZE, MEMBERS, TCP_FLAGS
from slowpath.flow import FlowKey
from slowpath.match import member_shift

MAX_DEPTH = 8          # recirculations followed when flattening
MAX_REFUSED = 65536    # remembered "this flow cannot be offloaded" answers
_TEARDOWN = TCP_FLAGS["syn"] | TCP_FLAGS["fin"] | TCP_FLAGS["rst"]
_ACK = TCP_FLAGS["ack"]


def _mask_of(*members: str) -> int:
    m = 0
    for name in members:
        o, s = MEMBERS[name]
        m |= ((1 << (8 * s)) - 1) << (8 * (FLOW_KEY_SIZE - o - s))
    return m


_CONN4 = _mask_of("in_port", "recirc_id", "dl_dst", "dl_src", "dl_type", "nw_frag",
                  "nw_src", "nw_dst", "nw_proto", "tp_src", "tp_dst")
_CONN6 = _mask_of("in_port", "recirc_id", "dl_dst", "dl_src", "dl_type", "nw_frag",
                  "ipv6_src", "ipv6_dst", "ipv6_exthdr", "nw_proto", "tp_src", "tp_dst")
# nw_frag: only its two flag bits (FLOW_NW_FRAG_ANY | LATER) mean something
_FRAG_UNUSED = (0xFC << member_shift("nw_frag"))
_CONN4 &= ~_FRAG_UNUSED
_CONN6 &= ~_FRAG_UNUSED
# TCP: SYN, FIN, RST clear and ACK set -- exactly the segments whose flags
# the tracker finds valid (tcp.invalid_flags) and that change no state.
_TCP_FLAGS_BITS = (_TEARDOWN | _ACK) << member_shift("tcp_flags")
_TCP_ACK = _ACK << member_shift("tcp_flags")
# Key members that a recirculated translation reads but that are fixed by
# the connection, the recirc_id or the translation before: not packet bits.
_METADATA = _mask_of(*[m for m in MEMBERS if m.startswith("ct_")], "recirc_id", "regs",
                     "metadata", "conj_id", "actset_output", "dp_hash")
_FULL = (1 << (8 * FLOW_KEY_SIZE)) - 1
_PASS = (dp.Output, dp.Trunc, dp.Meter, dp.CtClear)
_VLAN = (dp.PushVlan, dp.PopVlan, dp.PushMpls, dp.PopMpls)


class Plan:
    """One offloadable direction of a connection: the megaflow to install
    (``match``/``mask`` in OpenFlow terms: in_port is the ofport), what its
    hits are credited to, and how to check it again."""

    __slots__ = ("offloads", "pipeline", "in_ofport", "match", "mask", "actions", "conns",
                 "xouts", "flow")

    def __init__(self, offloads, pipeline, in_ofport, match, mask, actions, conns, xouts):
        self.flow = b""             # _flow_id of the key it was planned for
        self.offloads, self.pipeline, self.in_ofport = offloads, pipeline, in_ofport
        self.match, self.mask, self.actions = match, mask, actions
        self.conns = conns          # [(Conn, reply)] in the order the ct actions run
        self.xouts = xouts          # the translations flattened (rule counters)

    def credit(self, packets: int, nbytes: int, used: float) -> None:
        """Hits of the installed entry: rule counters and the connections."""
        for xout in self.xouts:
            self.pipeline.credit(xout, packets, nbytes, used)
        for conn, reply in self.conns:
            self.offloads.tracker.touch(conn, used, packets, nbytes, reply)

    def still_valid(self, match: bytes, mask: bytes, now: float) -> bool:
        """Re-plan from the installed match (the pipeline changed): valid if
        the same connections give the same actions and nothing outside the
        installed mask is consulted now."""
        key = FlowKey(match)
        key.in_port = self.in_ofport
        new = self.offloads.plan(self.pipeline, key, now)
        if new is None or new.actions != self.actions:
            return False
        if [(id(c), r) for c, r in new.conns] != [(id(c), r) for c, r in self.conns]:
            return False
        if int.from_bytes(new.mask, "big") & ~int.from_bytes(mask, "big"):
            return False
        self.xouts = new.xouts
        return True


class _Refuse(Exception):
    pass


class CtOffload:
    """Plans offloads and remembers which installed entries belong to which
    connection."""

    def __init__(self, tracker: ConnTracker, fast_ok):
        self.tracker = tracker
        self.fast_ok = fast_ok          # can the fast path execute this action tuple?
        self.entries: dict[tuple[bytes, bytes], Plan] = {}    # datapath (match, mask)
        self.by_conn: dict = {}                                # Conn -> {(match, mask)}
        self.refused: OrderedDict = OrderedDict()              # flow -> pipeline version
        self.by_flow: dict[bytes, set] = {}                    # flow -> {(match, mask)}
        self.stats = {"installed": 0, "refused": 0, "removed": 0}

    # --- deciding -------------------------------------------------------------
    def candidate(self, key: FlowKey, actions) -> bool:
        """Cheap first test for a packet just executed in the slow path with
        ``actions`` (its pre-ct megaflow's): a first pass, TCP/UDP without
        SYN/FIN/RST, whose first ``ct`` finds an offloadable connection."""
        if key.recirc_id or not self.tracker.offload_enabled:
            return False
        if key.nw_proto == TCP and key.tcp_flags & (_TEARDOWN | _ACK) != _ACK:
            return False
        if key_tuple(key) is None:
            return False
        sim = None
        for a in actions:
            if isinstance(a, dp.Ct):
                return self.tracker.predict(sim or key, a) is not None
            if isinstance(a, dp.SetMasked):
                sim = sim or key.copy()
                _apply_set(sim, a)
            elif not isinstance(a, _PASS):
                return False
        return False

    def covered(self, key: FlowKey, dp_port: int) -> bool:
        """Is a packet with ``key`` (in_port the ofport) already matched by
        an installed entry (in_port ``dp_port``)?  Then it came up in the
        same burst as the packet that installed it: nothing to plan."""
        ents = self.by_flow.get(_flow_id(key))
        if not ents:
            return False
        k = key.copy()
        k.in_port = dp_port
        ki = int(k)
        return any(ki & int.from_bytes(mask, "big") == int.from_bytes(match, "big")
                   for match, mask in ents)

    def refused_before(self, key: FlowKey, version: int) -> bool:
        return self.refused.get(_flow_id(key)) == version

    def refuse(self, key: FlowKey, version: int) -> None:
        self.refused[_flow_id(key)] = version
        self.stats["refused"] += 1
        while len(self.refused) > MAX_REFUSED:
            self.refused.popitem(last=False)

    def plan(self, pipeline, key: FlowKey, now: float) -> Plan | None:
        """Flatten the treatment of packets like ``key`` (``in_port`` the
        ofport, recirc_id 0) into one megaflow, or None if it depends on
        more than the connection's state."""
        out = pipeline.revalidate(key, now)
        if out.slow:
            return None
        t = key_tuple(key)
        if t is None:
            return None
        mask = int.from_bytes(out.megaflow.mask, "big") | (_CONN4 if t.af == 4 else _CONN6)
        if t.proto == TCP:
            mask |= _TCP_FLAGS_BITS
        state = {"mask": mask, "conns": [], "xouts": [out]}
        try:
            acts = self._walk(pipeline, out.actions, key.copy(), now, 0, state)
        except _Refuse:
            return None
        if not any(isinstance(a, dp.Ct) for a in out.actions) or not state["conns"]:
            return None
        acts = tuple(acts)
        if not self.fast_ok(acts):
            return None
        mask = state["mask"]
        m = int(key) & mask
        if t.proto == TCP:
            m = (m & ~_TCP_FLAGS_BITS) | _TCP_ACK
        match = m.to_bytes(FLOW_KEY_SIZE, "big")
        plan = Plan(self, pipeline, key.in_port, match, mask.to_bytes(FLOW_KEY_SIZE, "big"),
                    acts, state["conns"], state["xouts"])
        plan.flow = _flow_id(key)
        return plan

    def _walk(self, pipeline, actions, sim: FlowKey, now: float, depth: int, st) -> list:
        out = []
        actions = tuple(actions)
        for i, a in enumerate(actions):
            if isinstance(a, dp.SetMasked):
                _apply_set(sim, a)
                out.append(a)
            elif isinstance(a, _PASS):
                if isinstance(a, dp.CtClear):
                    for m in [m for m in MEMBERS if m.startswith("ct_")]:
                        o, n = MEMBERS[m]
                        sim.buf[o:o + n] = bytes(n)
                out.append(a)
            elif isinstance(a, dp.Ct):
                p = self.tracker.predict(sim, a)
                if p is None:
                    raise _Refuse
                if p.nat is not None:
                    out.extend(_nat_sets(sim, p.nat))
                self.tracker.apply_prediction(sim, p)
                st["conns"].append((p.conn, p.reply))
            elif isinstance(a, dp.Recirc):
                if depth >= MAX_DEPTH:
                    raise _Refuse
                post = sim.copy()
                post.recirc_id = a.recirc_id
                xo = pipeline.revalidate(post, now)
                if xo.slow:
                    raise _Refuse
                st["mask"] |= int.from_bytes(xo.megaflow.mask, "big") & ~_METADATA & _FULL
                st["xouts"].append(xo)
                inner = self._walk(pipeline, xo.actions, post, now, depth + 1, st)
                rest = actions[i + 1:]
                if not rest:
                    out.extend(inner)
                elif inner:
                    # the recirculated copy is a clone; the rest sees the packet as it was
                    out.append(dp.Clone(tuple(inner)))
            elif isinstance(a, (dp.Clone, dp.Sample)) and self.fast_ok((a,)):
                out.append(a)
            elif isinstance(a, _VLAN) and not any(
                    isinstance(b, (dp.Ct, dp.Recirc)) for b in actions[i + 1:]):
                out.append(a)      # tag changes after the last ct: the key no longer matters
            elif isinstance(a, dp.TunnelPush) and a.header:
                out.append(a)
            else:
                raise _Refuse      # controller, hash, tunnel pop, ...
        return out

    # --- bookkeeping ------------------------------------------------------------
    def installed(self, match: bytes, mask: bytes, plan: Plan) -> None:
        """``plan`` is in the datapath as (match, mask) (in_port = dp_port)."""
        k = (match, mask)
        self.entries[k] = plan
        self.by_flow.setdefault(plan.flow, set()).add(k)
        for conn, _ in plan.conns:
            self.tracker.offload(conn.zone, conn.key)
            self.by_conn.setdefault(conn, set()).add(k)
        self.stats["installed"] += 1

    def forget(self, match: bytes, mask: bytes) -> None:
        """The entry left the datapath (revalidator, purge)."""
        plan = self.entries.pop((match, mask), None)
        if plan is None:
            return
        self.stats["removed"] += 1
        flows = self.by_flow.get(plan.flow)
        if flows is not None:
            flows.discard((match, mask))
            if not flows:
                del self.by_flow[plan.flow]
        for conn, _ in plan.conns:
            keys = self.by_conn.get(conn)
            if keys is not None:
                keys.discard((match, mask))
                if not keys:
                    del self.by_conn[conn]
                    self.tracker.release(conn)

    def doomed(self) -> list[tuple[bytes, bytes]]:
        """Entries of connections the tracker took back (`unoffloaded`):
        the caller deletes them from the datapath (and calls `forget`)."""
        out = []
        for conn in self.tracker.unoffloaded():
            out.extend(self.by_conn.get(conn, ()))
        return out

    def clear(self) -> None:
        """Every entry is gone (datapath flushed)."""
        for conn in self.by_conn:
            self.tracker.release(conn)
        self.entries.clear()
        self.by_conn.clear()
        self.by_flow.clear()

    def used(self, conn, stats) -> float:
        """Last hit of any entry of ``conn``; ``stats(match, mask)`` gives
        one entry's last-used time."""
        return max((stats(m, k) for m, k in self.by_conn.get(conn, ())), default=0.0)


def _flow_id(key: FlowKey) -> bytes:
    """The connection-narrowed part of a key: what `refuse` remembers."""
    t = key_tuple(key)
    m = _CONN4 if t is None or t.af == 4 else _CONN6
    return (int(key) & m).to_bytes(FLOW_KEY_SIZE, "big")


def _apply_set(key: FlowKey, a: dp.SetMasked) -> None:
    o, n = MEMBERS[a.member]
    full = (1 << (8 * n)) - 1
    cur = int.from_bytes(key.buf[o:o + n], "big")
    key.buf[o:o + n] = ((cur & ~a.mask) | (a.value & a.mask) & full).to_bytes(n, "big")


def _nat_sets(sim: FlowKey, target) -> list:
    """SetMasked actions turning the packet ``sim`` describes into ``target``."""
    out = []
    names = ("nw_src", "nw_dst") if target.af == 4 else ("ipv6_src", "ipv6_dst")
    for member, value in ((names[0], target.src), (names[1], target.dst),
                          ("tp_src", target.sport), ("tp_dst", target.dport)):
        if getattr(sim, member) != value:
            full = (1 << (8 * MEMBERS[member][1])) - 1
            out.append(dp.SetMasked(member, value, full))
    return out
