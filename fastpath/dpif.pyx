# cython: language_level=3
"""The userspace datapath (OVS ``dpif-netdev``): ports, caches, poll loop.

One ``Dpif`` per daemon.  ``poll(timeout_ms)`` does one iteration over every
port: receive a burst, extract flow keys, look each up in the EMC then the
megaflow cache, execute hits' compiled actions, flush TX once, and return
misses (and Userspace / slow-path actions) as ``Upcall`` objects.  All per
packet work is nogil C; only upcalls create Python objects.

Port kinds (``add_port(name, kind)``): ``afpacket``/``system`` (TPACKET_V3
RX ring, sendmmsg TX, PACKET_VNET_HDR with software GSO and checksum
completion), ``tap``/``internal`` (non-persistent TAP created by name),
``afxdp`` (AF_XDP copy mode + XDP redirect program; ``afxdp-native`` /
``afxdp-generic`` force the XDP mode), ``afxdp-cache`` (AF_XDP without a
program of its own, fed by the XDP flow cache's XSKMAP -- ``port_xsk_fd`` --
plus an AF_PACKET ring for what that program passes up), ``dummy``
(socketpair, for tests).

Upcall reasons: "miss" (install a megaflow, then ``execute``), "action" (a
cached Userspace action: the packet already went through the other actions)
and "slow_path" (a cached action this fast path cannot run -- Ct,
TunnelPop, ...; nothing else was done to the packet: run the whole action
list in the slow path).

Threading: every method takes one internal lock, so control calls from
another thread (flow_put from a revalidator, add_port from the bridge) are
safe; they simply wait for the current burst.  ``poll`` does not hold the
lock while it sleeps on the port fds.  Replaced megaflows and action blocks
are freed only at the start of the next poll (a quiescent point), so a
lock-free concurrent reader could later be added without torn entries.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport calloc, malloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from posix.unistd cimport close as c_close

from fastpath.fpcore cimport (fp_packet, fp_arena, fp_arena_alloc, FP_PKT_OWNED,
                              FP_PKT_CSUM_PARTIAL, FP_PKT_GSO, FP_HEADROOM)
from fastpath._fields cimport FLOW_KEY_SIZE, FK_OFS_DL_DST
from fastpath.parse cimport fp_parse
from fastpath.cache cimport (fp_cache, fp_megaflow, fp_cache_lookup, fp_cache_rank,
                             fp_key_hash, FlowCache, Megaflow, KEY_WORDS)
from fastpath.io.port cimport (fp_port, fp_port_rx_burst, fp_port_rx_done, fp_port_tx_flush,
                               fp_port_tx_gso, fp_gso_segment, Port, FP_RX_CAP,
                               FP_PORT_AFPACKET)
from fastpath.execute cimport (fp_dp, fp_upcall, fp_pending, fp_execute, fp_upcall_add,
                               fp_csum_complete, CompiledActions, FP_MAX_PORTS,
                               FP_MAX_METERS, UPCALL_MISS, UPCALL_ACTION, UPCALL_SLOW,
                               fp_act, A_OUTPUT)

import os
import threading
import weakref

cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int c_poll "poll"(pollfd* fds, unsigned long nfds, int timeout)
    short POLLIN, POLLERR, POLLHUP, POLLNVAL

cdef enum:
    ARENA_SIZE = 32 << 20
    MAX_UPCALLS = 1024
    MAX_RECIRC = 1024
    MAX_BURST = 256
    MAX_ROUNDS = 64               # bursts per poll() without returning to Python
    TAP_ROOM = 128 + 65536 + 64 + 64

cdef inline uint64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class Upcall:
    """A packet for the slow path.

    ``reason`` is "miss" (no megaflow), "action" (a Userspace action; see
    ``action``/``userdata``) or "slow_path" (a cached action this fast path
    cannot execute, e.g. Ct; the packet was not otherwise processed further).
    ``key`` is the FLOW_KEY_SIZE-byte flow key (in_port = dp_port).
    """
    cdef readonly int dp_port
    cdef readonly bytes packet
    cdef readonly bytes key
    cdef readonly str reason
    cdef readonly object action

    def __init__(self, int dp_port, bytes packet, bytes key, str reason="miss", action=None):
        self.dp_port = dp_port
        self.packet = packet
        self.key = key
        self.reason = reason
        self.action = action

    @property
    def userdata(self):
        return getattr(self.action, "cookie", None)

    def __repr__(self):
        return (f"Upcall(dp_port={self.dp_port}, reason={self.reason!r}, "
                f"len={len(self.packet)}, action={self.action!r})")


cdef void _run_packet(fp_dp* dp, fp_packet* p, uint64_t* key, int depth, uint64_t now_ms) noexcept nogil:
    cdef uint32_t h = fp_key_hash(key) if dp.cache.n_subtables >= dp.cache.emc_min else 0
    cdef fp_megaflow* mf = fp_cache_lookup(dp.cache, key, h)
    cdef uint8_t* acts
    if mf == NULL:
        dp.stats.missed += 1
        fp_upcall_add(dp, p, key, UPCALL_MISS, 0, 0)
        return
    dp.stats.hit += 1
    mf.packets += 1
    mf.bytes += p.len
    mf.used_ms = now_ms
    acts = <uint8_t*>mf.actions
    if acts != NULL:
        fp_execute(dp, p, key, acts + 8, (<uint32_t*>acts)[0], depth)


cdef bint _gso_passthrough(fp_dp* dp, const uint8_t* acts) noexcept nogil:
    """True when the actions only output to AF_PACKET ports that take GSO."""
    cdef uint32_t alen = (<uint32_t*>acts)[0]
    cdef uint32_t pos = 0
    cdef const fp_act* a
    if alen == 0:
        return False
    while pos + 16 <= alen:
        a = <const fp_act*>(acts + 8 + pos)
        if a.type != A_OUTPUT or a.arg >= FP_MAX_PORTS or dp.ports[a.arg] == NULL \
                or not dp.ports[a.arg].vnet or dp.ports[a.arg].kind != FP_PORT_AFPACKET:
            return False
        pos += a.len
    return True


cdef void _run_gso(fp_dp* dp, fp_packet* p, uint64_t* key, uint64_t now_ms) noexcept nogil:
    """A TSO/USO super-packet: forward it whole when its megaflow only outputs
    to GSO-capable ports, else segment it and run every segment."""
    cdef uint32_t h = fp_key_hash(key) if dp.cache.n_subtables >= dp.cache.emc_min else 0
    cdef fp_megaflow* mf = fp_cache_lookup(dp.cache, key, h)
    cdef uint8_t* acts
    cdef uint32_t pos = 0, alen
    cdef const fp_act* a
    cdef int i, n
    cdef uint64_t* k
    if mf != NULL and mf.actions != NULL and _gso_passthrough(dp, <uint8_t*>mf.actions):
        dp.stats.hit += 1
        mf.packets += 1
        mf.bytes += p.len
        mf.used_ms = now_ms
        acts = <uint8_t*>mf.actions
        alen = (<uint32_t*>acts)[0]
        while pos + 16 <= alen:
            a = <const fp_act*>(acts + 8 + pos)
            fp_port_tx_gso(dp.ports[a.arg], p)
            pos += a.len
        return
    n = fp_gso_segment(p, dp.segs, FP_RX_CAP, &dp.arena)
    if n < 0:
        dp.stats.dropped += 1
        return
    for i in range(n):
        k = dp.segkeys + <size_t>i * KEY_WORDS
        fp_parse(&dp.segs[i], <uint8_t*>k)
        memcpy(k, key, FK_OFS_DL_DST)             # metadata (in_port, ...) as received
        _run_packet(dp, &dp.segs[i], k, 0, now_ms)


cdef void _run_recirc(fp_dp* dp, uint64_t now_ms) noexcept nogil:
    cdef int i = 0
    while i < dp.n_recirc:
        _run_packet(dp, &dp.recirc[i].pkt, dp.recirc[i].key, dp.recirc[i].depth, now_ms)
        i += 1
    dp.n_recirc = 0


cdef int _run_once(fp_dp* dp, fp_port** ports, int n_ports, fp_packet* pkts,
                   uint64_t* keys, int burst) noexcept nogil:
    """One pass over all ports; returns packets received."""
    cdef int i, j, n, total = 0
    cdef fp_packet* p
    cdef uint64_t* key
    dp.now_ns = _now_ns()
    cdef uint64_t now_ms = dp.now_ns // 1000000
    for i in range(n_ports):
        if dp.arena.used + <size_t>burst * 4096 + TAP_ROOM > dp.arena.size:
            break   # no scratch left this round; the rest waits for the next poll
        n = fp_port_rx_burst(ports[i], pkts, burst, &dp.arena)
        if n == 0:
            continue
        total += n
        for j in range(n):
            p = &pkts[j]
            key = keys + <size_t>j * KEY_WORDS
            p.depth = 0
            if fp_parse(p, <uint8_t*>key):
                dp.stats.malformed += 1
            if p.flags & FP_PKT_GSO:
                _run_gso(dp, p, key, now_ms)
                continue
            if p.flags & FP_PKT_CSUM_PARTIAL:
                fp_csum_complete(p, &dp.arena)
            _run_packet(dp, p, key, 0, now_ms)
        if dp.n_recirc:
            _run_recirc(dp, now_ms)
    for i in range(n_ports):
        fp_port_tx_flush(ports[i])
    return total


cdef class Dpif:
    """A userspace datapath.  See the module docstring and DESIGN.md."""
    cdef fp_dp* dp
    cdef FlowCache cache
    cdef dict _ports                  # dp_port -> Port
    cdef fp_port** _plist
    cdef int _n_plist
    cdef fp_packet* pkts
    cdef uint64_t* keys
    cdef readonly int burst
    cdef uint64_t polls
    cdef uint64_t rounds
    cdef uint64_t last_rank_ns
    cdef list _cookies
    cdef dict _cookie_ids
    cdef object _compiled            # actions tuple -> CompiledActions (shared, weak)
    cdef object lock
    cdef int wake_fd                 # eventfd: wakeup() ends a poll() early

    def __cinit__(self, int burst=64, uint64_t max_flows=200000):
        if not 1 <= burst <= MAX_BURST:
            raise ValueError(f"burst must be 1..{MAX_BURST}")
        self.burst = burst
        self.dp = <fp_dp*>calloc(1, sizeof(fp_dp))
        if self.dp == NULL:
            raise MemoryError()
        self.dp.arena.base = <uint8_t*>malloc(ARENA_SIZE)
        self.dp.arena.size = ARENA_SIZE
        self.dp.upcalls = <fp_upcall*>calloc(MAX_UPCALLS, sizeof(fp_upcall))
        self.dp.max_upcalls = MAX_UPCALLS
        self.dp.recirc = <fp_pending*>calloc(MAX_RECIRC, sizeof(fp_pending))
        self.dp.max_recirc = MAX_RECIRC
        self.dp.rng = 0x9E3779B97F4A7C15
        self._plist = <fp_port**>calloc(FP_MAX_PORTS, sizeof(fp_port*))
        self.pkts = <fp_packet*>calloc(MAX_BURST, sizeof(fp_packet))
        self.keys = <uint64_t*>calloc(MAX_BURST, FLOW_KEY_SIZE)
        self.dp.segs = <fp_packet*>calloc(FP_RX_CAP, sizeof(fp_packet))
        self.dp.segkeys = <uint64_t*>calloc(FP_RX_CAP, FLOW_KEY_SIZE)
        if self.dp.segs == NULL or self.dp.segkeys == NULL:
            raise MemoryError()
        if (self.dp.arena.base == NULL or self.dp.upcalls == NULL or self.dp.recirc == NULL
                or self._plist == NULL or self.pkts == NULL or self.keys == NULL):
            raise MemoryError()
        self.cache = FlowCache(max_flows)
        self.dp.cache = self.cache.c
        self._ports = {}
        self._cookies = []
        self._cookie_ids = {}
        self._compiled = weakref.WeakValueDictionary()
        self.lock = threading.RLock()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def __dealloc__(self):
        if self.wake_fd > 0:
            c_close(self.wake_fd)
            self.wake_fd = -1
        if self.dp != NULL:
            free(self.dp.arena.base)
            free(self.dp.upcalls)
            free(self.dp.recirc)
            free(self.dp.segs)
            free(self.dp.segkeys)
            free(self.dp)
            self.dp = NULL
        free(self._plist)
        free(self.pkts)
        free(self.keys)

    # ------------------------------------------------------------ ports
    cdef void _rebuild_plist(self):
        cdef int i = 0
        cdef Port port
        for n in sorted(self._ports):
            port = self._ports[n]
            self._plist[i] = port.p
            i += 1
        self._n_plist = i

    def add_port(self, str name, str kind="afpacket", dp_port=None, devargs=None):
        """Open a port; returns its dp_port number (>= 1).

        kind: "afpacket"/"system" (existing interface), "tap"/"internal"
        (creates a non-persistent TAP device named ``name``), "dummy" (no
        device: frames through ``dummy_peer(dp_port)``, for tests), "dpdk"
        (the DPDK device ``devargs``, once fastpath.io.dpdk.eal_init ran)."""
        cdef Port port
        with self.lock:
            if any((<Port>p).name == name for p in self._ports.values()):
                raise ValueError(f"port {name} is already in the datapath")
            if dp_port is None:
                n = 1
                while n in self._ports:
                    n += 1
            else:
                n = int(dp_port)
                if n in self._ports:
                    raise ValueError(f"dp_port {n} is in use")
            if not 1 <= n < FP_MAX_PORTS:
                raise ValueError(f"dp_port {n} out of range")
            port = Port(name, kind, n, devargs)
            self._ports[n] = port
            self.dp.ports[n] = port.p
            self._rebuild_plist()
            return n

    def del_port(self, int dp_port):
        cdef Port port
        with self.lock:
            port = self._ports.pop(dp_port)
            self.dp.ports[dp_port] = NULL
            self._rebuild_plist()
            port.close()

    def ports(self):
        with self.lock:
            return {n: (<Port>p).name for n, p in self._ports.items()}

    def port_stats(self, int dp_port):
        with self.lock:
            return (<Port>self._ports[dp_port]).stats()

    def dummy_peer(self, int dp_port):
        """The test's socket of a "dummy" port: send() injects a frame,
        recv() returns one the datapath transmitted."""
        with self.lock:
            return (<Port>self._ports[dp_port]).peer

    def port_xsk_fd(self, int dp_port):
        """The AF_XDP socket of an afxdp/afxdp-cache port (-1 for others):
        what an XDP program's XSKMAP redirects to."""
        with self.lock:
            return (<Port>self._ports[dp_port]).xsk_fd

    def port_ifindex(self, int dp_port):
        with self.lock:
            return (<Port>self._ports[dp_port]).ifindex

    def close(self):
        with self.lock:
            for n in list(self._ports):
                self.del_port(n)
            self.cache.flush()
            self.cache.quiesce()

    # ------------------------------------------------------------ poll
    cdef list _collect(self):
        """Turn queued upcalls into Python objects, then return RX blocks."""
        cdef int i
        cdef fp_upcall* u
        out = []
        for i in range(self.dp.n_upcalls):
            u = &self.dp.upcalls[i]
            if u.reason == UPCALL_MISS:
                reason, action = "miss", None
            else:
                reason = "action" if u.reason == UPCALL_ACTION else "slow_path"
                action = self._cookies[u.arg] if u.arg < len(self._cookies) else None
            out.append(Upcall(u.in_port,
                              PyBytes_FromStringAndSize(<char*>u.data, u.len),
                              PyBytes_FromStringAndSize(<char*>u.key, FLOW_KEY_SIZE),
                              reason, action))
        self.dp.n_upcalls = 0
        for i in range(self._n_plist):
            fp_port_rx_done(self._plist[i])
        return out

    cdef int _iterate(self) except -1:
        cdef int got, n, i, rounds = 1
        cdef uint64_t t0
        self.cache.quiesce()
        self.dp.arena.used = 0
        with nogil:
            got = _run_once(self.dp, self._plist, self._n_plist, self.pkts, self.keys,
                            self.burst)
            # While packets keep coming and none needs Python (no upcall),
            # run more bursts here: the way back through Python costs as
            # much as a burst's lookups.  Bounded (1 ms, MAX_ROUNDS) so
            # control calls wait little.
            t0 = self.dp.now_ns
            n = got
            while (n and self.dp.n_upcalls == 0 and rounds < MAX_ROUNDS
                   and self.dp.now_ns - t0 < 1000000):
                for i in range(self._n_plist):
                    fp_port_rx_done(self._plist[i])
                self.dp.arena.used = 0
                n = _run_once(self.dp, self._plist, self._n_plist, self.pkts, self.keys,
                              self.burst)
                got += n
                rounds += 1
        self.polls += 1
        self.rounds += rounds
        if self.dp.now_ns - self.last_rank_ns > 1000000000:
            fp_cache_rank(self.dp.cache)
            self.last_rank_ns = self.dp.now_ns
            # Once a second: notice devices that vanished without a socket
            # error (AF_XDP does not always report one).
            for p in self._ports.values():
                if (<Port>p).error is None and (<Port>p).peer is None:
                    (<Port>p).check_error()
        return got

    def poll(self, int timeout_ms=0):
        """One iteration over every port; returns a list of Upcall.

        When nothing arrived, waits up to ``timeout_ms`` for any port to
        become readable and iterates once more."""
        cdef int got, i, n, r
        cdef pollfd fds[257]
        polled = []
        with self.lock:
            got = self._iterate()
            out = self._collect()
            if got or timeout_ms == 0:
                return out
            n = 0
            for p in self._ports.values():
                if (<Port>p).error is None:
                    for fd in (<Port>p).fds:
                        if n < 256:
                            fds[n].fd = fd
                            fds[n].events = POLLIN
                            fds[n].revents = 0
                            polled.append(p)
                            n += 1
            fds[n].fd = self.wake_fd
            fds[n].events = POLLIN
            fds[n].revents = 0
        with nogil:
            r = c_poll(fds, n + 1, timeout_ms)
        if fds[n].revents & POLLIN:
            try:
                os.eventfd_read(self.wake_fd)
            except BlockingIOError:
                pass
        with self.lock:
            if r > 0:
                for i in range(n):
                    if fds[i].revents & (POLLERR | POLLHUP | POLLNVAL):
                        # A vanished device would make every poll return at
                        # once (a busy loop): stop polling that port.
                        (<Port>polled[i]).check_error()
            self._iterate()
            out = self._collect()
        return out

    def wakeup(self):
        """End a poll() sleeping in another thread now (thread-safe)."""
        os.eventfd_write(self.wake_fd, 1)

    def port_error(self, int dp_port):
        """None, or why the port stopped working (e.g. its device vanished)."""
        with self.lock:
            return (<Port>self._ports[dp_port]).error

    # ------------------------------------------------------------ flows
    def _cookie_id(self, action):
        try:
            i = self._cookie_ids.get(action)
        except TypeError:
            i = None
            for j, a in enumerate(self._cookies):
                if a is action:
                    i = j
                    break
        if i is None:
            i = len(self._cookies)
            self._cookies.append(action)
            try:
                self._cookie_ids[action] = i
            except TypeError:
                pass
        return i

    def compile(self, actions):
        """The compiled block for ``actions`` (shared by equal action tuples)."""
        actions = tuple(actions)
        try:
            c = self._compiled.get(actions)
        except TypeError:                      # unhashable cookie somewhere
            return CompiledActions(actions, self._cookie_id)
        if c is None:
            c = CompiledActions(actions, self._cookie_id)
            self._compiled[actions] = c
        return c

    def flow_put(self, bytes match, bytes mask, actions, int prio=0):
        """Install or modify (counters kept) a megaflow; ``prio`` > 0 makes
        it override overlapping megaflows (FlowCache.put)."""
        actions = tuple(actions)
        compiled = self.compile(actions)
        with self.lock:
            self.cache.put(match, mask, actions, compiled, prio)

    def flow_del(self, bytes match, bytes mask):
        """Delete a megaflow; returns its final stats dict or None."""
        with self.lock:
            mf = self.cache.delete(match, mask)
            return None if mf is None else mf.stats()

    def flow_flush(self):
        with self.lock:
            self.cache.flush()

    def flow_stats(self, bytes match, bytes mask):
        with self.lock:
            mf = self.cache.get(match, mask)
            return None if mf is None else mf.stats()

    def flow_dump(self):
        """[(match, mask, actions, packets, bytes, used)] — used is
        time.monotonic() seconds of the last hit, 0 if never."""
        cdef Megaflow m
        with self.lock:
            return [(m.match, m.mask, m.actions, m.packets, m.bytes, m.used)
                    for m in self.cache.values()]

    def flow_sweep(self, double now, double idle):
        """Delete megaflows idle for ``idle`` seconds at ``now``
        (time.monotonic()); returns them as flow_dump tuples."""
        cdef Megaflow m
        with self.lock:
            return [(m.match, m.mask, m.actions, m.packets, m.bytes, m.used)
                    for m in self.cache.sweep(now, idle)]

    def flow_count(self):
        return len(self.cache)

    # ------------------------------------------------------------ execute
    def execute(self, bytes packet, actions, key=None):
        """Execute ``actions`` on ``packet`` now (packet-out, upcalled packet).

        ``key`` (FLOW_KEY_SIZE bytes) supplies in_port and metadata; headers
        are always re-parsed from the packet.  Returns upcalls the actions
        produced (Userspace, recirculation misses), usually []."""
        cdef CompiledActions c = self.compile(actions)
        cdef fp_packet p
        cdef uint64_t kbuf[KEY_WORDS]
        cdef uint8_t* b
        cdef uint32_t in_port = 0
        cdef uint32_t n = len(packet)
        if key is not None:
            if len(key) != FLOW_KEY_SIZE:
                raise ValueError(f"key must be {FLOW_KEY_SIZE} bytes")
            from slowpath.fields import MEMBERS
            o, s = MEMBERS["in_port"]
            in_port = int.from_bytes(key[o:o + s], "big")
        with self.lock:
            self.dp.arena.used = 0
            self.dp.n_upcalls = 0
            b = fp_arena_alloc(&self.dp.arena, FP_HEADROOM + n + 64)
            if b == NULL:
                raise ValueError("packet too large")
            memcpy(b + FP_HEADROOM, <char*>packet, n)
            memset(&p, 0, sizeof(p))
            p.buf = b
            p.bufsize = FP_HEADROOM + n + 64
            p.data = b + FP_HEADROOM
            p.len = n
            p.flags = FP_PKT_OWNED
            p.in_port = in_port
            fp_parse(&p, <uint8_t*>kbuf)
            if key is not None:
                memcpy(kbuf, <char*>key, FK_OFS_DL_DST)
            with nogil:
                self.dp.now_ns = _now_ns()
                fp_execute(self.dp, &p, kbuf, c.buf + 8, c.length, 0)
                if self.dp.n_recirc:
                    _run_recirc(self.dp, self.dp.now_ns // 1000000)
                for i in range(self._n_plist):
                    fp_port_tx_flush(self._plist[i])
            out = self._collect()
            self.dp.arena.used = 0
            return out

    # ------------------------------------------------------------ meters
    def meter_set(self, int meter_id, rate, burst=None, str unit="pktps"):
        """Token-bucket meter: ``rate`` in packets/s (unit "pktps") or kbit/s
        ("kbps"); ``burst`` in packets or kbit (default: one second)."""
        if not 0 <= meter_id < FP_MAX_METERS:
            raise ValueError(f"meter id {meter_id} out of range")
        if unit not in ("pktps", "kbps"):
            raise ValueError("unit must be pktps or kbps")
        with self.lock:
            m = &self.dp.meters[meter_id]
            m.pkts = unit == "pktps"
            m.rate = int(rate) if m.pkts else int(rate) * 1000
            b = int(rate if burst is None else burst)
            m.burst = b * 1000 if m.pkts else b * 1000 * 1000
            m.tokens = m.burst
            m.last_ns = _now_ns()
            m.active = 1

    def meter_del(self, int meter_id):
        with self.lock:
            memset(&self.dp.meters[meter_id], 0, sizeof(self.dp.meters[0]))

    def meter_stats(self, int meter_id):
        with self.lock:
            m = self.dp.meters[meter_id]
            return {"passed": m.passed, "dropped": m.dropped}

    # ------------------------------------------------------------ stats
    def stats(self):
        with self.lock:
            s = self.dp.stats
            d = {"hit": s.hit, "missed": s.missed, "lost": s.lost,
                 "malformed": s.malformed, "dropped": s.dropped, "recirc": s.recirc,
                 "polls": self.polls, "rounds": self.rounds}
            d.update(self.cache.stats())
            return d

    def rank(self):
        with self.lock:
            fp_cache_rank(self.dp.cache)

    def mask_order(self):
        with self.lock:
            return self.cache.mask_order()
