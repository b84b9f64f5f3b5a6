"""The connection tracker: per-zone connection tables, limits, expiry, NAT.

Sans-IO like the rest of ``slowpath/``: nothing here reads a clock or
touches a socket; every entry point takes ``now`` (seconds, monotonic).

One `ConnTracker` serves a whole daemon (OVS has one per datapath).  A
connection lives in its zone under two keys, the tuple its originator's
packets carry and the tuple its replies carry (after NAT), so one dict
lookup classifies a packet and tells its direction.

`ConnTracker.execute(frame, key, ct, now)` is the ``ct`` datapath action:
it classifies the packet, runs the protocol's state machine, commits when
asked, applies NAT to the frame (both directions, checksums fixed
incrementally) and fills the key's ct_* members exactly as OVS userspace
conntrack does (lib/conntrack.c ``process_one``/``write_ct_md``):

* ``+trk`` always; ``+inv`` for what cannot be tracked (not IP, truncated
  L4, invalid TCP flags or out-of-window segments, an unsolicited SYN+ACK,
  an ICMP error quoting no known connection, a later fragment whose first
  fragment was not seen);
* ``+new`` for a connection's first packet(s) before any reply (retransmitted
  SYNs included), ``+est`` afterwards, ``+rpl`` on the reply direction,
  ``+rel`` for ICMP errors about a connection and for connections an ALG
  expected, ``+snat``/``+dnat`` when the action had ``nat`` and the
  connection is translated;
* ``ct_zone``, ``ct_mark``, ``ct_label`` and the original direction tuple
  (``ct_nw_src`` ... ``ct_tp_dst``; ICMP type/code in the ports; the
  parent's tuple for ALG-related connections).

Limits (the invariant in DESIGN.md): a commit that would exceed the zone's
limit or the global one is refused -- the connection is not created, no
existing entry is evicted, the refusal is counted, the packet gets
``+trk+inv`` and, unless ``drop_refused`` is False, is dropped on the spot
(a ``ct(commit),output`` rule set would otherwise forward it).

Fragments (documented choice): tracked by the first fragment's tuple, not by
reassembly.  The first fragment is tracked like a whole packet and its
verdict is remembered under (zone, addresses, protocol, IP id) for
`FRAG_TIMEOUT` seconds; later fragments get the same ct_state (and the
addresses of the connection's NAT); a later fragment whose first fragment
was not seen is ``+inv``.  Fragments are forwarded as they are.

A packet that goes through ``ct`` again in the same zone (``ct(table=N)``
then ``ct(commit)`` after recirculation, as every OVS firewall pipeline
does) is recognised from the ct_state/ct_zone already in its key: the state
machine does not run twice and NAT is not applied twice (OVS keeps the
connection pointer in packet metadata for the same purpose).
"""

from __future__ import annotations

import ipaddress
import random as _random
import re
import struct
from collections import Counter, OrderedDict
from typing import Callable, NamedTuple

from slowpath.conntrack import tcp as tcpmod
from slowpath.conntrack.nat import NatSpec, allocate, parse_nat
from slowpath.conntrack.packet import (
    ICMP, ICMPV6, PORT_PROTOS, TCP, UDP, CtPacket, Tuple, fix_icmp_csum, fix_ipv4_csum,
    l4_csum_at, parse, set_addr, set_u16,
)
from slowpath.conntrack.timeouts import DEFAULTS, normalize
from slowpath.fields import CS, MEMBERS

NEW, EST, REL, RPL, INV, TRK = CS["new"], CS["est"], CS["rel"], CS["rpl"], CS["inv"], CS["trk"]
SNAT, DNAT = CS["snat"], CS["dnat"]
FRAG_TIMEOUT = 30.0
MAX_FRAGS = 65536      # remembered first fragments; beyond, later fragments are +inv
EXPECT_TIMEOUT = 30.0
DEFAULT_MAX_CONNS = 3_000_000      # OVS's default ct-maxconns
ALGS = ("tftp", "ftp")    # the alg= values ct(commit,alg=...) understands
_FTP_PORT = re.compile(rb"^PORT (?P<h1>\d+),(?P<h2>\d+),(?P<h3>\d+),(?P<h4>\d+),"
                       rb"(?P<p1>\d+),(?P<p2>\d+)\r?\n", re.I | re.M)
_FTP_EPRT = re.compile(rb"^EPRT \|[12]\|(?P<addr>[0-9a-fA-F.:]+)\|(?P<port>\d+)\|", re.I | re.M)
_FTP_PASV = re.compile(rb"^227 .*?(?P<h1>\d+),(?P<h2>\d+),(?P<h3>\d+),(?P<h4>\d+),"
                       rb"(?P<p1>\d+),(?P<p2>\d+)", re.M)
_FTP_EPSV = re.compile(rb"^229 .*?\(\|\|\|(?P<port>\d+)\|\)", re.M)


class Conn:
    """One tracked connection."""
    __slots__ = ("zone", "key", "rkey", "tcp", "seen", "mark", "label", "snat", "dnat",
                 "expiration", "tclass", "tlist", "helper", "parent", "packets", "bytes",
                 "created", "offloaded")

    def __init__(self, zone: int, key: Tuple, rkey: Tuple, now: float):
        self.zone, self.key, self.rkey = zone, key, rkey
        self.tcp: tcpmod.TcpConn | None = None
        self.seen = 0          # non-TCP: 0 first packet, 1 more from originator, 2 replied
        self.mark = 0
        self.label = 0
        self.snat = self.dnat = False
        self.expiration = 0.0
        self.tclass = ""
        self.tlist = None
        self.helper: str | None = None
        self.parent: Tuple | None = None     # ALG-related: the parent's original tuple
        self.packets = [0, 0]
        self.bytes = [0, 0]
        self.created = now
        self.offloaded = False   # a cache forwards its packets without us

    @property
    def replied(self) -> bool:
        if self.tcp is not None:
            return self.tcp.peers[1].state >= tcpmod.TcpState.SYN_SENT
        return self.seen == 2


class Prediction(NamedTuple):
    """What ``execute`` does to every packet of an offloaded connection that
    reaches it with a given flow (`ConnTracker.predict`)."""
    conn: Conn
    reply: bool
    state: int            # ct_state it gets
    zone: int
    nat: Tuple | None     # the tuple it leaves with, when NAT rewrites it


def key_tuple(key) -> Tuple | None:
    """The connection tuple of a flow key (TCP and UDP over IPv4/IPv6, not
    fragments), or None."""
    if key.nw_frag:
        return None
    proto = key.nw_proto
    if proto != TCP and proto != UDP:
        return None
    dl = key.dl_type
    if dl == 0x0800:
        return Tuple(4, key.nw_src, key.nw_dst, proto, key.tp_src, key.tp_dst)
    if dl == 0x86DD:
        return Tuple(6, key.ipv6_src, key.ipv6_dst, proto, key.tp_src, key.tp_dst)
    return None


class Expectation:
    __slots__ = ("parent", "expiration")

    def __init__(self, parent: Conn, expiration: float):
        self.parent, self.expiration = parent, expiration


class ConnTracker:
    def __init__(self, max_conns: int = DEFAULT_MAX_CONNS, *, seed: int | None = None,
                 drop_refused: bool = True):
        self.max_conns = max_conns
        self.drop_refused = drop_refused
        self.rng = _random.Random(seed)
        self.conns: dict[tuple[int, Tuple], tuple[Conn, bool]] = {}
        self.n_conns = 0
        self.zone_count: Counter = Counter()
        self.zone_limits: dict[int, int] = {}    # zone -> limit (0 = unlimited)
        self.default_zone_limit = 0
        self.policies: dict[int, dict[str, float]] = {}
        self.expectations: dict[tuple, Expectation] = {}
        self.frags: dict[tuple, tuple] = {}
        self._lists: dict[float, OrderedDict] = {}
        self.stats: Counter = Counter()
        self._last_expire = 0.0
        self._unoffloaded: list[Conn] = []
        #: may caches forward established connections without us (`offload`)?
        self.offload_enabled = True
        #: TCP too?  Off by default: we would not see the segments a cache
        #: forwards, so their windows go unchecked and an out-of-window ACK
        #: would pass where we mark it +inv -- the cache must never decide
        #: differently from the slow path unless the operator asks for it
        #: (``dpctl/ct-set-offload tcp-liberal``, Linux flowtable's trade).
        self.offload_tcp = False
        #: set by the cache half: when did a cache last forward ``conn``'s
        #: packets (time.monotonic() seconds, 0: never)?  Asked before an
        #: offloaded connection is expired, so hits not yet reported by
        #: `touch` keep it alive.
        self.cache_used: Callable[[Conn], float] | None = None

    # --- configuration ---------------------------------------------------------
    def set_zone_limit(self, zone: int | None, limit: int) -> None:
        """``zone=None`` sets the default limit of zones without their own."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if zone is None:
            self.default_zone_limit = limit
        else:
            self.zone_limits[zone] = limit

    def del_zone_limit(self, zone: int) -> None:
        self.zone_limits.pop(zone, None)

    def zone_limit(self, zone: int) -> int:
        return self.zone_limits.get(zone, self.default_zone_limit)

    def set_timeout_policy(self, zone: int, policy: dict | None) -> None:
        """Override timeouts for ``zone`` (None or {} restores the defaults).
        Applies to connections from their next packet on."""
        pol = normalize(policy or {})
        if pol:
            self.policies[zone] = pol
        else:
            self.policies.pop(zone, None)

    def replace_timeout_policies(self, policies: dict[int, dict[str, float]]) -> None:
        """All zones' policies at once (already normalized, e.g. from
        config.timeout_policies); one attribute swap, safe to call from
        another thread than the one executing packets."""
        self.policies = {z: dict(p) for z, p in policies.items() if p}

    def timeout(self, zone: int, name: str) -> float:
        pol = self.policies.get(zone)
        return pol.get(name, DEFAULTS[name]) if pol else DEFAULTS[name]

    # --- table maintenance -----------------------------------------------------
    def _refresh(self, conn: Conn, tclass: str, now: float) -> None:
        dur = self.timeout(conn.zone, tclass)
        conn.tclass = tclass
        conn.expiration = now + dur
        lst = self._lists.get(dur)
        if lst is None:
            lst = self._lists[dur] = OrderedDict()
        if conn.tlist is lst:
            lst.move_to_end(conn)
        else:
            if conn.tlist is not None:
                conn.tlist.pop(conn, None)
            lst[conn] = None
            conn.tlist = lst

    def _delete(self, conn: Conn) -> None:
        if self.conns.get((conn.zone, conn.key), (None,))[0] is conn:
            del self.conns[(conn.zone, conn.key)]
        if self.conns.get((conn.zone, conn.rkey), (None,))[0] is conn:
            del self.conns[(conn.zone, conn.rkey)]
        if conn.tlist is not None:
            conn.tlist.pop(conn, None)
            conn.tlist = None
        self.n_conns -= 1
        self.zone_count[conn.zone] -= 1
        if not self.zone_count[conn.zone]:
            del self.zone_count[conn.zone]
        if conn.offloaded:
            conn.offloaded = False
            self._unoffloaded.append(conn)

    # --- offload to a cache (the tracker's half) -------------------------------
    def _offloadable(self, conn: Conn) -> bool:
        if conn.helper == "ftp":          # the ALG must see the payload
            return False
        if conn.tcp is not None:
            if not self.offload_tcp:
                return False
            a, b = conn.tcp.peers
            return a.state == b.state == tcpmod.TcpState.ESTABLISHED
        return conn.seen == 2

    def offload(self, zone: int, t: Tuple) -> Conn | None:
        """May a cache forward the packets of the connection that ``t`` (a
        packet tuple, either direction) belongs to in ``zone``, without
        showing them to the tracker?  Yes once both directions were seen
        (TCP: established on both sides) and no ALG reads the payload; the
        connection is then marked offloaded and, for TCP, its windows are no
        longer checked (we will not see every segment).  The cache must keep
        sending SYN/FIN/RST segments here and call `touch` with its hit
        times; `unoffloaded` says which connections it must drop."""
        ent = self.conns.get((zone, t))
        if ent is None or not self.offload_enabled or not self._offloadable(ent[0]):
            return None
        conn = ent[0]
        conn.offloaded = True
        if conn.tcp is not None:
            conn.tcp.liberal = True
        return conn

    def release(self, conn: Conn) -> None:
        """The cache no longer holds any entry of ``conn`` (idle, replaced):
        we see all its packets again.  TCP stays liberal: the windows of
        the segments the cache forwarded are unknown."""
        conn.offloaded = False

    def set_offload(self, enabled: bool, tcp: bool = False) -> None:
        """Allow or forbid offloading (of TCP too: ``tcp``, windows then go
        unchecked); what may no longer be offloaded is taken back (see
        `unoffloaded`)."""
        self.offload_enabled, self.offload_tcp = enabled, enabled and tcp
        for c, reply in self.conns.values():
            if not reply and c.offloaded and not (enabled and self._offloadable(c)):
                c.offloaded = False
                self._unoffloaded.append(c)

    def predict(self, key, ct) -> Prediction | None:
        """What `execute` would do with action ``ct`` to a packet with flow
        ``key`` (after the actions before it) -- if the answer is the same
        for every packet of an offloadable connection that a cache would
        forward (no SYN/FIN/RST: those must still come here).  None when
        the packet is not TCP/UDP, its connection is not offloadable, the
        action would change the connection (a commit that changes mark or
        label, ``force`` on a reply), or offload is disabled.  Side-effect
        free: `offload` then marks the connection."""
        if not self.offload_enabled:
            return None
        t = key_tuple(key)
        if t is None:
            return None
        zone = ct.zone
        prev = key.ct_state
        nat = ct.nat is not None
        if prev & TRK and not prev & INV and key.ct_zone == zone:
            ent = self.conns.get((zone, t))
            if ent is None:
                ent = self.conns.get((zone, t.reverse()))    # already translated
                if ent is not None:
                    ent = (ent[0], not ent[1])
            if ent is not None and not (ct.force and ent[1]):
                conn, reply = ent      # the _repeat path
                if not self._offloadable(conn) or (ct.commit and self._changes(conn, ct)):
                    return None
                state = prev & (NEW | EST | REL | RPL)
                target = None
                if nat and (conn.snat or conn.dnat):
                    if not prev & (SNAT | DNAT):
                        target = conn.key.reverse() if reply else conn.rkey.reverse()
                    state |= (SNAT if conn.snat else 0) | (DNAT if conn.dnat else 0)
                return Prediction(conn, reply, TRK | state, conn.zone,
                                  None if target == t else target)
        ent = self.conns.get((zone, t))
        if ent is None:
            return None
        conn, reply = ent
        if not self._offloadable(conn) or (ct.force and ct.commit and reply):
            return None
        if ct.commit and self._changes(conn, ct):
            return None
        state = TRK | EST | (RPL if reply else 0) | (REL if conn.parent is not None else 0)
        target = None
        if nat and (conn.snat or conn.dnat):
            target = conn.key.reverse() if reply else conn.rkey.reverse()
            state |= (SNAT if conn.snat else 0) | (DNAT if conn.dnat else 0)
        return Prediction(conn, reply, state, zone, None if target == t else target)

    @staticmethod
    def _changes(conn: Conn, ct) -> bool:
        """Would committing ``ct`` change the connection's mark or label?"""
        if ct.mark is not None:
            v, m = ct.mark
            if (conn.mark & ~m) | (v & m) != conn.mark:
                return True
        if ct.label is not None:
            v, m = ct.label
            if (conn.label & ~m) | (v & m) != conn.label:
                return True
        return False

    def apply_prediction(self, key, p: Prediction) -> None:
        """Write into ``key`` what `execute` writes for prediction ``p``:
        the ct_* members and the translated addresses/ports."""
        if p.nat is not None:
            self._key_addrs(key, p.nat)
            key.tp_src, key.tp_dst = p.nat.sport, p.nat.dport
        self._md(key, p.state, p.zone, p.conn, None)

    def touch(self, conn: Conn, used: float, packets: int = 0, nbytes: int = 0,
              reply: bool = False) -> None:
        """The cache forwarded ``packets`` (``nbytes``) of ``conn`` in the
        ``reply`` direction or not, the last at ``used``: count them and
        keep the connection alive as if we had seen them."""
        conn.packets[reply] += packets
        conn.bytes[reply] += nbytes
        if conn.tlist is not None and used + self.timeout(conn.zone, conn.tclass) > conn.expiration:
            self._refresh(conn, conn.tclass, used)

    def unoffloaded(self) -> list[Conn]:
        """Offloaded connections that were deleted (expired, flushed,
        closed and reopened) or stopped qualifying since the last call."""
        out, self._unoffloaded = self._unoffloaded, []
        return out

    def _expired(self, conn: Conn, now: float) -> bool:
        """Has ``conn`` timed out?  An offloaded one is asked about first
        (`cache_used`): hits not yet reported refresh it instead."""
        if conn.expiration > now:
            return False
        if conn.offloaded and self.cache_used is not None:
            used = self.cache_used(conn)
            if used and used + self.timeout(conn.zone, conn.tclass) > now:
                self._refresh(conn, conn.tclass, used)
                return False
        return True

    def expire(self, now: float) -> int:
        """Remove connections whose timeout passed; returns how many."""
        self._last_expire = now
        n = 0
        for lst in self._lists.values():
            while lst:
                conn = next(iter(lst))
                if conn.expiration > now:
                    break
                if not self._expired(conn, now):
                    continue          # refreshed: moved to the end of its list
                self._delete(conn)
                n += 1
        if self.expectations:
            for k in [k for k, e in self.expectations.items() if e.expiration <= now]:
                del self.expectations[k]
        if self.frags:
            for k in [k for k, v in self.frags.items() if v[3] <= now]:
                del self.frags[k]
        self.stats["expired"] += n
        return n

    def delete(self, conn: Conn) -> None:
        """Forget one connection (dpctl/flush-conntrack with a tuple)."""
        if self.conns.get((conn.zone, conn.key), (None,))[0] is conn:
            self._delete(conn)

    def flush(self, zone: int | None = None) -> int:
        """Delete every connection (of ``zone``); returns how many."""
        doomed = {c for c, _ in self.conns.values() if zone is None or c.zone == zone}
        for c in doomed:
            self._delete(c)
        for k in [k for k, e in self.expectations.items()
                  if zone is None or k[0] == zone]:
            del self.expectations[k]
        for k in [k for k in self.frags if zone is None or k[0] == zone]:
            del self.frags[k]
        return len(doomed)

    def connections(self, zone: int | None = None) -> list[Conn]:
        return [c for (z, t), (c, reply) in self.conns.items()
                if not reply and (zone is None or z == zone)]

    def lookup(self, zone: int, t: Tuple) -> tuple[Conn, bool] | None:
        return self.conns.get((zone, t))

    # --- the ct action ------------------------------------------------------------
    def execute(self, frame: bytearray, key, ct, now: float) -> bool:
        """Run datapath action ``ct`` (a ``dpactions.Ct``) on ``frame`` whose
        flow key is ``key`` (both updated in place).  False: drop it."""
        if now - self._last_expire >= 1.0:
            self.expire(now)
        zone = ct.zone
        pkt = parse(frame)
        prev_state = key.ct_state
        if pkt is None:
            return self._md(key, TRK | INV, zone, None, None)
        nat = parse_nat(ct.nat)
        if pkt.frag and not pkt.frag_first:
            return self._later_fragment(frame, pkt, key, ct, nat, zone, now)
        if pkt.l4 is None and (pkt.proto in PORT_PROTOS or pkt.proto in (ICMP, ICMPV6)):
            self.stats["invalid"] += 1
            return self._md(key, TRK | INV, zone, None, None)
        if prev_state & TRK and not prev_state & INV and key.ct_zone == zone:
            found = self._again(pkt, zone)
            if found is not None and not (ct.force and found[1]):
                return self._repeat(frame, pkt, key, ct, nat, found, prev_state, now)
        ok = self._track(frame, pkt, key, ct, nat, zone, now)
        if pkt.frag_first and len(self.frags) < MAX_FRAGS:
            self.frags[(zone, pkt.tuple.af, pkt.tuple.src, pkt.tuple.dst, pkt.proto,
                        pkt.frag_id)] = (key.ct_state, self._conn_of(pkt, zone),
                                         bool(key.ct_state & RPL), now + FRAG_TIMEOUT)
        return ok

    def _conn_of(self, pkt, zone):
        ent = self.conns.get((zone, pkt.tuple))
        return ent[0] if ent else None

    def _again(self, pkt: CtPacket, zone: int):
        if pkt.inner is not None:          # an ICMP error: by the quoted tuple
            ent = self.conns.get((zone, pkt.inner.tuple.reverse()))
            if ent is not None:
                return ent
            ent = self.conns.get((zone, pkt.inner.tuple))   # already translated
            return (ent[0], not ent[1]) if ent is not None else None
        ent = self.conns.get((zone, pkt.tuple))
        if ent is not None:
            return ent
        ent = self.conns.get((zone, pkt.tuple.reverse()))   # already translated
        if ent is not None:
            return ent[0], not ent[1]
        return None

    def _repeat(self, frame, pkt, key, ct, nat, found, prev_state, now) -> bool:
        conn, reply = found
        if ct.commit:
            self._set_mark_label(conn, ct)
        state = prev_state & (NEW | EST | REL | RPL)
        if nat is not None and (conn.snat or conn.dnat):
            if not prev_state & (SNAT | DNAT):
                if state & REL and pkt.inner is not None:
                    self._nat_related(frame, pkt, conn, reply)
                else:
                    self._nat_packet(frame, pkt, conn, reply, key)
            state |= (SNAT if conn.snat else 0) | (DNAT if conn.dnat else 0)
        return self._md(key, TRK | state, conn.zone, conn, None)

    def _track(self, frame, pkt: CtPacket, key, ct, nat: NatSpec | None, zone: int,
               now: float) -> bool:
        t = pkt.tuple
        if pkt.inner is not None or pkt.icmp_type is not None and self._is_error(pkt):
            return self._related_icmp(frame, pkt, key, nat, zone)
        ent = self.conns.get((zone, t))
        if ent is not None:
            conn, reply = ent
            if self._expired(conn, now):
                self._delete(conn)
                ent = None
            elif ct.force and ct.commit and reply:
                self._delete(conn)
                ent = None
        if ent is not None:
            res = self._update(conn, pkt, reply, now)
            if res == tcpmod.NEW:
                self._delete(conn)
            elif res == tcpmod.INVALID:
                self.stats["invalid"] += 1
                return self._md(key, TRK | INV, zone, conn, None)
            else:
                conn.packets[reply] += 1
                conn.bytes[reply] += len(frame)
                state = TRK | (NEW if res == tcpmod.VALID_NEW else EST)
                if reply:
                    state |= RPL
                if conn.parent is not None:
                    state |= REL
                if ct.commit:
                    self._set_mark_label(conn, ct)
                if conn.helper == "ftp" and pkt.payload_len:
                    self._ftp(frame, pkt, conn, reply, now)
                if conn.offloaded and not self._offloadable(conn):
                    conn.offloaded = False              # e.g. a FIN: closing
                    self._unoffloaded.append(conn)
                if nat is not None and (conn.snat or conn.dnat):
                    self._nat_packet(frame, pkt, conn, reply, key)
                    state |= (SNAT if conn.snat else 0) | (DNAT if conn.dnat else 0)
                return self._md(key, state, zone, conn, None)
        return self._new(frame, pkt, key, ct, nat, zone, now)

    @staticmethod
    def _is_error(pkt) -> bool:
        from slowpath.conntrack.packet import ICMP6_ERRORS, ICMP_ERRORS
        return pkt.icmp_type in (ICMP_ERRORS if pkt.proto == ICMP else ICMP6_ERRORS)

    def _related_icmp(self, frame, pkt, key, nat, zone) -> bool:
        inner = pkt.inner
        ent = self.conns.get((zone, inner.tuple.reverse())) if inner is not None else None
        if ent is None:
            self.stats["invalid"] += 1
            return self._md(key, TRK | INV, zone, None, None)
        conn, reply = ent
        state = TRK | REL | (RPL if reply else 0)
        if nat is not None and (conn.snat or conn.dnat):
            self._nat_related(frame, pkt, conn, reply)
            state |= (SNAT if conn.snat else 0) | (DNAT if conn.dnat else 0)
        self.stats["related"] += 1
        return self._md(key, state, zone, conn, None)

    def _update(self, conn: Conn, pkt: CtPacket, reply: bool, now: float) -> str:
        if conn.tcp is not None:
            res = conn.tcp.update(pkt, reply)
            if res in (tcpmod.VALID, tcpmod.VALID_NEW):
                self._refresh(conn, conn.tcp.timeout_class(), now)
            return tcpmod.VALID if res == tcpmod.LOOSE else res
        icmp = pkt.proto in (ICMP, ICMPV6)
        if reply:
            conn.seen = 2
            self._refresh(conn, "icmp_reply" if icmp else "udp_multiple", now)
            return tcpmod.VALID
        if conn.seen == 2:
            self._refresh(conn, "icmp_reply" if icmp else "udp_multiple", now)
            return tcpmod.VALID
        conn.seen = 1
        self._refresh(conn, "icmp_first" if icmp else "udp_single", now)
        return tcpmod.VALID_NEW

    def _valid_new(self, pkt: CtPacket) -> bool:
        if pkt.proto == TCP:
            return tcpmod.valid_new(pkt)
        if pkt.proto == ICMP:
            return pkt.icmp_type in (8, 13, 15, 17)
        if pkt.proto == ICMPV6:
            return pkt.icmp_type == 128
        return True

    def _new(self, frame, pkt, key, ct, nat, zone, now) -> bool:
        t = pkt.tuple
        if not self._valid_new(pkt):
            self.stats["invalid"] += 1
            return self._md(key, TRK | INV, zone, None, t)
        exp = None
        if self.expectations and pkt.proto in (UDP, TCP):
            exp = self.expectations.get((zone, t.af, t.src, t.dst, t.proto, t.dport))
            if exp is not None and exp.parent.expiration <= now:
                exp = None
        state = TRK | NEW | (REL if exp else 0)
        if not ct.commit:
            if exp is not None:
                return self._md(key, state, zone, None, exp.parent.key,
                                exp.parent.mark, exp.parent.label)
            return self._md(key, state, zone, None, t)
        # --- commit: limits first, never evicting anyone ---
        limit = self.zone_limit(zone)
        if (limit and self.zone_count[zone] >= limit) or self.n_conns >= self.max_conns:
            self.expire(now)
        if limit and self.zone_count[zone] >= limit:
            return self._refuse(key, zone, t, "refused_zone_limit")
        if self.n_conns >= self.max_conns:
            return self._refuse(key, zone, t, "refused_global_limit")
        rkey = t.reverse()
        inherit_nat = exp is not None and exp.parent.snat and t.dst == exp.parent.rkey.dst
        if inherit_nat:
            # The parent's client was SNATed: its data flow goes back to the
            # real client (translated destination), replies are SNATed again.
            p = exp.parent.key
            rkey = Tuple(t.af, p.src, t.src, t.proto, p.sport, t.sport)
        elif nat is not None and nat.kind is not None:
            rkey = allocate(nat, t, lambda r: (zone, r) in self.conns, self.rng)
            if rkey is None:
                return self._refuse(key, zone, t, "nat_exhausted")
        if (zone, rkey) in self.conns:       # would shadow another connection
            self.stats["invalid"] += 1
            return self._md(key, TRK | INV, zone, None, t)
        conn = Conn(zone, t, rkey, now)
        if pkt.proto == TCP:
            conn.tcp = tcpmod.TcpConn(pkt)
            tclass = "tcp_syn_sent"
        else:
            tclass = "icmp_first" if pkt.proto in (ICMP, ICMPV6) else "udp_first"
        if inherit_nat:
            conn.dnat = True
        elif nat is not None and nat.kind is not None and rkey != t.reverse():
            conn.snat, conn.dnat = nat.kind == "src", nat.kind == "dst"
        if exp is not None:
            conn.parent = exp.parent.key
            conn.mark, conn.label = exp.parent.mark, exp.parent.label
        self._set_mark_label(conn, ct)
        self.conns[(zone, t)] = (conn, False)
        self.conns[(zone, rkey)] = (conn, True)
        self.n_conns += 1
        self.zone_count[zone] += 1
        self._refresh(conn, tclass, now)
        conn.packets[0] += 1
        conn.bytes[0] += len(frame)
        self.stats["committed"] += 1
        if ct.helper is not None:
            self._helper(conn, ct.helper, now)
        if (conn.snat or conn.dnat) and nat is not None:
            self._nat_packet(frame, pkt, conn, False, key)
            state |= (SNAT if conn.snat else 0) | (DNAT if conn.dnat else 0)
        return self._md(key, state, zone, conn, None)

    def _refuse(self, key, zone, t, why) -> bool:
        self.stats[why] += 1
        self.stats["refused"] += 1
        self._md(key, TRK | INV, zone, None, t)
        return not self.drop_refused

    def _helper(self, conn: Conn, helper: str, now: float) -> None:
        """ALGs.  tftp: the server answers a request to port 69 from a new
        port to the client's port; expect that flow as related.  ftp: the
        control connection is watched (see `_ftp`)."""
        t = conn.key
        if helper == "tftp" and t.proto == UDP:
            conn.helper = helper
            r = conn.rkey        # as the server's packets look
            self.expectations[(conn.zone, t.af, r.src, r.dst, UDP, r.dport)] = Expectation(
                conn, now + EXPECT_TIMEOUT)
        elif helper == "ftp" and t.proto == TCP:
            conn.helper = helper

    def _ftp(self, frame, pkt: CtPacket, conn: Conn, reply: bool, now: float) -> None:
        """FTP ALG (no NAT of the payload): PORT/EPRT from the client expect
        the server's data connection to the given port; 227/229 replies
        from the server expect the client's connection to the given port.
        The announced address must be the endpoint's own (no third-party
        transfers)."""
        data = bytes(frame[pkt.payload_off:pkt.payload_off + min(pkt.payload_len, 512)])
        t = pkt.tuple
        m = None
        if not reply:
            m = _FTP_PORT.search(data) or _FTP_EPRT.search(data)
        else:
            m = _FTP_PASV.search(data) or _FTP_EPSV.search(data)
        if m is None:
            return
        g = m.groupdict()
        port = int(g["port"]) if g.get("port") else int(g["p1"]) * 256 + int(g["p2"])
        if g.get("h1") is not None:
            addr = int.from_bytes(bytes(int(g[f"h{i}"]) & 0xFF for i in range(1, 5)), "big")
        elif g.get("addr"):
            try:
                addr = int(ipaddress.ip_address(g["addr"].decode()))
            except ValueError:
                return
        else:
            addr = t.src                    # EPSV: the server's own address
        if addr != t.src or not 0 < port < 65536:
            return
        # the data connection goes from the other end to addr:port
        self.expectations[(conn.zone, t.af, t.dst, addr, TCP, port)] = Expectation(
            conn, now + EXPECT_TIMEOUT)

    def _set_mark_label(self, conn: Conn, ct) -> None:
        if conn.offloaded and self._changes(conn, ct):
            # cached flows were translated with the old mark/label
            conn.offloaded = False
            self._unoffloaded.append(conn)
        if ct.mark is not None:
            v, m = ct.mark
            conn.mark = (conn.mark & ~m) | (v & m)
        if ct.label is not None:
            v, m = ct.label
            conn.label = (conn.label & ~m) | (v & m)

    def _later_fragment(self, frame, pkt, key, ct, nat, zone, now) -> bool:
        t = pkt.tuple
        rec = self.frags.get((zone, t.af, t.src, t.dst, pkt.proto, pkt.frag_id))
        if rec is None or rec[3] <= now:
            self.stats["invalid"] += 1
            return self._md(key, TRK | INV, zone, None, None)
        state, conn, reply, _ = rec
        if conn is not None and self.conns.get((conn.zone, conn.key), (None,))[0] is not conn:
            conn = None
        if conn is not None and nat is not None and (conn.snat or conn.dnat):
            target = conn.key.reverse() if reply else conn.rkey.reverse()
            set_addr(frame, pkt.l3, t.af, "src", target.src, [])
            set_addr(frame, pkt.l3, t.af, "dst", target.dst, [])
            self._key_addrs(key, target)
        elif state & (SNAT | DNAT):
            state &= ~(SNAT | DNAT)
        return self._md(key, state, zone, conn, None) if conn else self._md(key, state, zone, None, None)

    # --- NAT on the packet ----------------------------------------------------------
    @staticmethod
    def _key_addrs(key, target: Tuple) -> None:
        if target.af == 4:
            key.nw_src, key.nw_dst = target.src, target.dst
        else:
            key.ipv6_src, key.ipv6_dst = target.src, target.dst

    def _nat_packet(self, frame, pkt: CtPacket, conn: Conn, reply: bool, key) -> None:
        """Rewrite a packet of ``conn`` to what the other side expects."""
        target = conn.key.reverse() if reply else conn.rkey.reverse()
        t = pkt.tuple
        if target == t:
            return
        csum = l4_csum_at(pkt.proto, pkt.l4)
        csums = []
        if csum is not None and csum + 2 <= len(frame) and pkt.proto != ICMP:
            csums = [(csum, pkt.proto == UDP and t.af == 4)]
        if target.src != t.src:
            set_addr(frame, pkt.l3, t.af, "src", target.src, csums)
        if target.dst != t.dst:
            set_addr(frame, pkt.l3, t.af, "dst", target.dst, csums)
        self._key_addrs(key, target)
        if pkt.proto in PORT_PROTOS and pkt.l4 is not None:
            if target.sport != t.sport:
                set_u16(frame, pkt.l4, target.sport, csums)
            if target.dport != t.dport:
                set_u16(frame, pkt.l4 + 2, target.dport, csums)
            key.tp_src, key.tp_dst = target.sport, target.dport
        elif pkt.proto in (ICMP, ICMPV6) and pkt.l4 is not None and target.sport != t.sport:
            set_u16(frame, pkt.l4 + 4, target.sport, [(pkt.l4 + 2, False)])

    def _nat_related(self, frame, pkt: CtPacket, conn: Conn, reply: bool) -> None:
        """An ICMP error about a translated connection: translate the outer
        addresses the way the connection's own packets are, and the quoted
        packet back to what its sender saw."""
        target = conn.key.reverse() if reply else conn.rkey.reverse()
        af, l3 = pkt.tuple.af, pkt.l3
        if reply:
            if conn.snat:
                set_addr(frame, l3, af, "dst", target.dst, [])
            if conn.dnat:
                set_addr(frame, l3, af, "src", target.src, [])
        else:
            if conn.snat:
                set_addr(frame, l3, af, "src", target.src, [])
            if conn.dnat:
                set_addr(frame, l3, af, "dst", target.dst, [])
        inner = pkt.inner
        it = target.reverse()
        set_addr(frame, inner.l3, af, "src", it.src, [])
        set_addr(frame, inner.l3, af, "dst", it.dst, [])
        if inner.l4 is not None:
            if it.proto in PORT_PROTOS:
                set_u16(frame, inner.l4, it.sport, [])
                set_u16(frame, inner.l4 + 2, it.dport, [])
            elif it.proto in (ICMP, ICMPV6):
                set_u16(frame, inner.l4 + 4, it.sport, [])
        if af == 4:
            fix_ipv4_csum(frame, inner.l3)
        fix_icmp_csum(frame, pkt)

    # --- metadata -----------------------------------------------------------------
    @staticmethod
    def _md(key, state: int, zone: int, conn: Conn | None, t: Tuple | None,
            mark: int = 0, label: int = 0) -> bool:
        """Write ct_state, ct_zone, ct_mark, ct_label and the original
        tuple into the key (one contiguous block of members)."""
        if conn is not None:
            mark, label = conn.mark, conn.label
            t = conn.parent or conn.key
        if t is None:
            _MD.pack_into(key.buf, _MD_OFS, mark, label.to_bytes(16, "big"), 0, 0, _Z16, _Z16,
                          0, 0, zone, state, 0)
            return True
        if t.proto in (ICMP, ICMPV6):
            tps, tpd = t.dport, 0                   # type, code
        else:
            tps, tpd = t.sport, t.dport
        if t.af == 4:
            _MD.pack_into(key.buf, _MD_OFS, mark, label.to_bytes(16, "big"), t.src, t.dst,
                          _Z16, _Z16, tps, tpd, zone, state, t.proto)
        else:
            _MD.pack_into(key.buf, _MD_OFS, mark, label.to_bytes(16, "big"), 0, 0,
                          t.src.to_bytes(16, "big"), t.dst.to_bytes(16, "big"),
                          tps, tpd, zone, state, t.proto)
        return True


# ct_mark .. ct_nw_proto are contiguous in the flow key: written with one pack.
_MD_MEMBERS = ("ct_mark", "ct_label", "ct_nw_src", "ct_nw_dst", "ct_ipv6_src", "ct_ipv6_dst",
               "ct_tp_src", "ct_tp_dst", "ct_zone", "ct_state", "ct_nw_proto")
_MD = struct.Struct("!I16sII16s16sHHHBB")
_MD_OFS = MEMBERS["ct_mark"][0]
_Z16 = bytes(16)
assert all(MEMBERS[a][0] + MEMBERS[a][1] == MEMBERS[b][0]
           for a, b in zip(_MD_MEMBERS, _MD_MEMBERS[1:])), "ct_* members moved"
assert _MD.size == MEMBERS["ct_nw_proto"][0] + 1 - _MD_OFS
