# cython: language_level=3
"""The userspace datapath (OVS ``dpif-netdev``): ports, poll-mode threads, caches.

One ``Dpif`` per daemon.  Its ports are polled by one or more *poll-mode
contexts* (``Pmd``, OVS's ``dp_netdev_pmd_thread``): each port's receive
queue belongs to exactly one PMD (round robin over the PMDs by dp_port, or
``set_rxq_affinity``), and each PMD has its own EMC and megaflow cache.
``Pmd.poll(timeout_ms)`` does one iteration over that PMD's ports: receive
a burst, extract flow keys, look each up in the EMC then the megaflow cache,
execute hits' compiled actions, flush TX, and return misses (and Userspace /
slow-path actions) as ``Upcall`` objects.  All per packet work is nogil C;
only upcalls create Python objects.  ``vswitch/datapath.py`` runs one thread
per PMD (pinned to its core) plus the upcall handler thread.

Why per-PMD caches (as OVS) rather than one shared cache: the EMC and the
subtable hit counters are written on every lookup, which a shared cache
would have to make atomic or accept torn; per-PMD caches keep the hot loop
free of shared writes, and a port's flows simply live in the PMD that polls
it.  Each cache has one reader (its PMD) and writers that never wait for it
(``fastpath/cache.pyx``: release-store publication, graveyard freed by the
reader between polls, RCU-style), so an upcall storm's flow_puts do not stall
forwarding.  A miss installs its megaflow into the PMD that missed
(``flow_put(..., pmd=upcall.pmd)``); ``flow_put`` without ``pmd`` installs
into every context.  Deleting, dumping and counting act on all of them
(``flow_dump`` merges a megaflow's per-PMD counters; ``flow_dump_pmds`` shows
them apart, as ``dpctl/dump-flows`` does).  ``synchronize()`` returns once
every PMD finished the iteration it was in: after it, no packet is forwarded
by a megaflow deleted before it (what BARRIER needs).

Besides the PMDs there is the *main* context (OVS's non-PMD thread): what
``execute`` runs (packet-out, upcalled packets) uses its scratch and its own
megaflow cache for recirculation, under ``Dpif``'s lock.

Shared between contexts: the ports (a port's TX staging is taken under a
per-port spinlock, ``execute.pxd`` ``fp_dp_tx``; an AF_XDP or DPDK port's
receive also touches its TX state, so it is polled under that lock too) and
the meters (one spinlock each).  Adding or removing ports and reassigning
receive queues waits for each PMD's current iteration (``Pmd.lock``, held
while a PMD iterates, never while it sleeps).

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
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport calloc, malloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from posix.unistd cimport close as c_close

from fastpath.fpcore cimport (fp_packet, fp_arena, fp_arena_alloc, FP_PKT_OWNED,
                              FP_PKT_CSUM_PARTIAL, FP_PKT_GSO, FP_HEADROOM,
                              fp_spin_lock, fp_spin_unlock)
from fastpath._fields cimport FLOW_KEY_SIZE, FK_OFS_DL_DST
from fastpath.parse cimport fp_parse
from fastpath.cache cimport (fp_cache, fp_megaflow, fp_cache_lookup, fp_cache_rank,
                             fp_key_hash, FlowCache, Megaflow, KEY_WORDS)
from fastpath.io.port cimport (fp_port, fp_port_rx_burst, fp_port_rx_done, fp_port_tx_flush,
                               fp_gso_segment, Port, FP_RX_CAP,
                               FP_PORT_AFPACKET, FP_PORT_TAP, FP_PORT_AFXDP)
from fastpath.execute cimport (fp_dp, fp_upcall, fp_pending, fp_execute, fp_upcall_add,
                               fp_csum_complete, CompiledActions, FP_MAX_PORTS,
                               FP_MAX_METERS, UPCALL_MISS, UPCALL_ACTION, UPCALL_SLOW,
                               fp_act, A_OUTPUT, fp_meter, fp_dp_tx_gso, fp_dp_tx_flush,
                               FP_TX_LOCK_STRIDE)

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

cdef class Upcall:
    """A packet for the slow path.

    ``reason`` is "miss" (no megaflow), "action" (a Userspace action; see
    ``action``/``userdata``) or "slow_path" (a cached action this fast path
    cannot execute, e.g. Ct; the packet was not otherwise processed further).
    ``key`` is the FLOW_KEY_SIZE-byte flow key (in_port = dp_port).
    ``pmd`` is the context whose cache missed (a ``Pmd``, or the main
    thread's for packets run by ``execute``): pass it to ``flow_put``.
    """
    cdef readonly int dp_port
    cdef readonly bytes packet
    cdef readonly bytes key
    cdef readonly str reason
    cdef readonly object action
    cdef readonly object pmd

    def __init__(self, int dp_port, bytes packet, bytes key, str reason="miss", action=None,
                 pmd=None):
        self.dp_port = dp_port
        self.pmd = pmd
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


cdef inline uint64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


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
            fp_dp_tx_gso(dp, a.arg, p)
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



cdef inline bint _rx_touches_tx(fp_port* p) noexcept nogil:
    """AF_XDP (and DPDK) receive also reclaims and kicks TX: take the port lock."""
    return p.kind != FP_PORT_AFPACKET and p.kind != FP_PORT_TAP


cdef inline int _rx_burst(fp_dp* dp, fp_port* port, fp_packet* pkts, int burst) noexcept nogil:
    cdef int n
    if dp.tx_locks == NULL or not _rx_touches_tx(port):
        return fp_port_rx_burst(port, pkts, burst, &dp.arena)
    fp_spin_lock(&dp.tx_locks[port.dp_port * FP_TX_LOCK_STRIDE])
    n = fp_port_rx_burst(port, pkts, burst, &dp.arena)
    fp_spin_unlock(&dp.tx_locks[port.dp_port * FP_TX_LOCK_STRIDE])
    return n


cdef void _flush_all(fp_dp* dp, fp_port** ports, int n_ports) noexcept nogil:
    """Send what this context queued on any port.  The unlocked tx_n read
    may be stale; then the context that is queueing flushes it itself."""
    cdef int i
    cdef fp_port* p
    for i in range(n_ports):
        p = ports[i]
        if p.tx_n == 0 and (p.kind == FP_PORT_AFPACKET or p.kind == FP_PORT_TAP):
            continue
        fp_dp_tx_flush(dp, p)


cdef int _run_once(fp_dp* dp, fp_port** ports, int n_ports, fp_port** txports, int n_tx,
                   fp_packet* pkts, uint64_t* keys, int burst) noexcept nogil:
    """One pass over a PMD's receive ports; returns packets received."""
    cdef int i, j, n, total = 0
    cdef fp_packet* p
    cdef uint64_t* key
    dp.now_ns = _now_ns()
    cdef uint64_t now_ms = dp.now_ns // 1000000
    for i in range(n_ports):
        if dp.arena.used + <size_t>burst * 4096 + TAP_ROOM > dp.arena.size:
            break   # no scratch left this round; the rest waits for the next poll
        n = _rx_burst(dp, ports[i], pkts, burst)
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
    _flush_all(dp, txports, n_tx)
    return total


cdef class _Shared:
    """What every context of a Dpif shares in C: the meters and the per-port
    TX locks (kept alive by each context, which may outlive the Dpif)."""
    cdef fp_meter* meters
    cdef int* tx_locks

    def __cinit__(self):
        self.meters = <fp_meter*>calloc(FP_MAX_METERS, sizeof(fp_meter))
        self.tx_locks = <int*>calloc(FP_MAX_PORTS * FP_TX_LOCK_STRIDE, sizeof(int))
        if self.meters == NULL or self.tx_locks == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.meters)
        free(self.tx_locks)


cdef class Pmd:
    """One poll-mode context: its receive ports, EMC + megaflow cache and
    scratch (``core_id`` -1: not pinned; the main context has ``main``).

    Only the thread polling it (or ``Dpif`` holding ``lock``) touches its
    scratch; control code reaches its cache through ``Dpif``."""
    cdef fp_dp* dp
    cdef FlowCache cache
    cdef fp_port** _plist            # receive ports
    cdef int _n_plist
    cdef fp_port** _txlist           # every port (flushed after each pass)
    cdef int _n_txlist
    cdef list _rx_ports              # Port objects of _plist (their fds, errors)
    cdef fp_packet* pkts
    cdef uint64_t* keys
    cdef readonly int core_id
    cdef readonly bint main
    cdef readonly bint alive         # False once the Dpif dropped it
    cdef readonly object lock        # held while iterating (not while sleeping)
    cdef int burst
    cdef list _cookies               # the Dpif's (Userspace action cookies)
    cdef _Shared _shared
    cdef int wake_fd
    cdef readonly uint64_t polls, rounds, rx_packets, busy_ns, idle_ns
    cdef uint64_t last_rank_ns
    cdef object __weakref__

    def __cinit__(self, int core_id, bint main, int burst, uint64_t max_flows, list cookies,
                  _Shared shared):
        self.core_id = core_id
        self.main = main
        self.alive = True
        self.burst = burst
        self._cookies = cookies
        self._rx_ports = []
        self.dp = <fp_dp*>calloc(1, sizeof(fp_dp))
        if self.dp == NULL:
            raise MemoryError()
        self.dp.arena.base = <uint8_t*>malloc(ARENA_SIZE)
        self.dp.arena.size = ARENA_SIZE
        self.dp.upcalls = <fp_upcall*>calloc(MAX_UPCALLS, sizeof(fp_upcall))
        self.dp.max_upcalls = MAX_UPCALLS
        self.dp.recirc = <fp_pending*>calloc(MAX_RECIRC, sizeof(fp_pending))
        self.dp.max_recirc = MAX_RECIRC
        self.dp.rng = 0x9E3779B97F4A7C15 ^ <uint64_t>(core_id + 2)
        self._shared = shared
        self.dp.meters = shared.meters
        self.dp.tx_locks = shared.tx_locks
        self._plist = <fp_port**>calloc(FP_MAX_PORTS, sizeof(fp_port*))
        self._txlist = <fp_port**>calloc(FP_MAX_PORTS, sizeof(fp_port*))
        self.pkts = <fp_packet*>calloc(MAX_BURST, sizeof(fp_packet))
        self.keys = <uint64_t*>calloc(MAX_BURST, FLOW_KEY_SIZE)
        self.dp.segs = <fp_packet*>calloc(FP_RX_CAP, sizeof(fp_packet))
        self.dp.segkeys = <uint64_t*>calloc(FP_RX_CAP, FLOW_KEY_SIZE)
        if (self.dp.arena.base == NULL or self.dp.upcalls == NULL or self.dp.recirc == NULL
                or self._plist == NULL or self._txlist == NULL or self.pkts == NULL
                or self.keys == NULL or self.dp.segs == NULL or self.dp.segkeys == NULL):
            raise MemoryError()
        self.cache = FlowCache(max_flows)
        self.dp.cache = self.cache.c
        self.lock = threading.Lock()
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
        free(self._txlist)
        free(self.pkts)
        free(self.keys)

    def __repr__(self):
        return "Pmd(main)" if self.main else f"Pmd(core_id={self.core_id})"

    @property
    def name(self):
        """As OVS names them in pmd-*-show (core "unpinned" without pmd-cpu-mask)."""
        if self.main:
            return "main thread"
        return "pmd thread numa_id 0 core_id " + (
            str(self.core_id) if self.core_id >= 0 else "unpinned")

    # --- set up by the Dpif, under self.lock --------------------------------
    cdef void _set_ports(self, dict ports, list rx):
        """``ports``: every dp_port -> Port; ``rx``: the Ports this polls."""
        cdef Port port
        cdef int i = 0
        memset(self.dp.ports, 0, sizeof(self.dp.ports))
        for n in sorted(ports):
            port = ports[n]
            self.dp.ports[n] = port.p
            self._txlist[i] = port.p
            i += 1
        self._n_txlist = i
        i = 0
        for port in rx:
            self._plist[i] = port.p
            i += 1
        self._n_plist = i
        self._rx_ports = list(rx)

    def rx_ports(self):
        """[(dp_port, name)] of the ports whose receive queue this PMD polls."""
        return [((<Port>p).p.dp_port, (<Port>p).name) for p in self._rx_ports]

    # --- the poll loop -----------------------------------------------------
    cdef list _collect(self):
        """Turn queued upcalls into Python objects, then return RX blocks."""
        cdef int i
        cdef fp_upcall* u
        out = []
        cookies = self._cookies
        for i in range(self.dp.n_upcalls):
            u = &self.dp.upcalls[i]
            if u.reason == UPCALL_MISS:
                reason, action = "miss", None
            else:
                reason = "action" if u.reason == UPCALL_ACTION else "slow_path"
                action = cookies[u.arg] if u.arg < len(cookies) else None
            out.append(Upcall(u.in_port,
                              PyBytes_FromStringAndSize(<char*>u.data, u.len),
                              PyBytes_FromStringAndSize(<char*>u.key, FLOW_KEY_SIZE),
                              reason, action, self))
        self.dp.n_upcalls = 0
        for i in range(self._n_plist):
            fp_port_rx_done(self._plist[i])
        return out

    cdef int _iterate(self) except -1:
        cdef int got, n, i, rounds = 1
        cdef uint64_t t0, t_start
        self.cache.quiesce()
        self.dp.arena.used = 0
        t_start = _now_ns()
        with nogil:
            got = _run_once(self.dp, self._plist, self._n_plist, self._txlist, self._n_txlist,
                            self.pkts, self.keys, self.burst)
            # While packets keep coming and none needs Python (no upcall),
            # run more bursts here: the way back through Python costs as
            # much as a burst's lookups.  Bounded (1 ms, MAX_ROUNDS) so
            # writers waiting for this iteration (synchronize) wait little.
            t0 = self.dp.now_ns
            n = got
            while (n and self.dp.n_upcalls == 0 and rounds < MAX_ROUNDS
                   and self.dp.now_ns - t0 < 1000000):
                for i in range(self._n_plist):
                    fp_port_rx_done(self._plist[i])
                self.dp.arena.used = 0
                n = _run_once(self.dp, self._plist, self._n_plist, self._txlist,
                              self._n_txlist, self.pkts, self.keys, self.burst)
                got += n
                rounds += 1
        self.polls += 1
        self.rounds += rounds
        self.rx_packets += got
        if got:
            self.busy_ns += self.dp.now_ns - t_start
        else:
            self.idle_ns += self.dp.now_ns - t_start
        if self.dp.now_ns - self.last_rank_ns > 1000000000:
            fp_cache_rank(self.dp.cache)
            self.last_rank_ns = self.dp.now_ns
            # Once a second: notice devices that vanished without a socket
            # error (AF_XDP does not always report one).
            for p in self._rx_ports:
                if (<Port>p).error is None and (<Port>p).peer is None:
                    (<Port>p).check_error()
        return got

    def poll(self, int timeout_ms=0):
        """One iteration over this PMD's ports; returns a list of Upcall.

        When nothing arrived, waits up to ``timeout_ms`` for any of its
        ports to become readable (or ``wakeup()``) and iterates once more."""
        cdef int got, i, n, r
        cdef pollfd fds[257]
        cdef uint64_t t0
        polled = []
        with self.lock:
            if not self.alive:
                return []
            got = self._iterate()
            out = self._collect()
            if got or timeout_ms == 0:
                return out
            n = 0
            for p in self._rx_ports:
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
        t0 = _now_ns()
        with nogil:
            r = c_poll(fds, n + 1, timeout_ms)
        self.idle_ns += _now_ns() - t0
        if fds[n].revents & POLLIN:
            try:
                os.eventfd_read(self.wake_fd)
            except BlockingIOError:
                pass
        with self.lock:
            if not self.alive:
                return out
            if r > 0:
                for i in range(n):
                    if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL)
                            and polled[i] in self._rx_ports):
                        # A vanished device would make every poll return at
                        # once (a busy loop): stop polling that port.
                        (<Port>polled[i]).check_error()
            self._iterate()
            out += self._collect()
        return out

    def wakeup(self):
        """End a poll() sleeping in another thread now (thread-safe)."""
        os.eventfd_write(self.wake_fd, 1)

    def clear_stats(self):
        """pmd-stats-clear: this context's counters back to zero."""
        memset(&self.dp.stats, 0, sizeof(self.dp.stats))
        self.polls = self.rounds = self.rx_packets = self.busy_ns = self.idle_ns = 0
        self.cache.c.emc_hits = self.cache.c.mf_hits = self.cache.c.misses = 0
        self.cache.c.lookups_subtables = 0

    def stats(self):
        """This context's counters (pmd-stats-show)."""
        s = self.dp.stats
        d = {"hit": s.hit, "missed": s.missed, "lost": s.lost,
             "malformed": s.malformed, "dropped": s.dropped, "recirc": s.recirc,
             "polls": self.polls, "rounds": self.rounds, "rx_packets": self.rx_packets,
             "busy_ns": self.busy_ns, "idle_ns": self.idle_ns}
        d.update(self.cache.stats())
        return d


cdef _dump_tuple(Megaflow m):
    return (m.match, m.mask, m.actions, m.packets, m.bytes, m.used)


cdef class Dpif:
    """A userspace datapath.  See the module docstring and DESIGN.md."""
    cdef dict _ports                  # dp_port -> Port
    cdef list _pmds                   # poll-mode contexts, by core id
    cdef Pmd _main                    # the main (non-PMD) context: execute()
    cdef dict _affinity               # dp_port -> core id (pmd-rxq-affinity)
    cdef _Shared _shared
    cdef fp_meter* meters
    cdef readonly int burst
    cdef uint64_t max_flows
    cdef list _cookies
    cdef dict _cookie_ids
    cdef object _compiled            # actions tuple -> CompiledActions (shared, weak)
    cdef object lock                 # writers and the main context

    def __cinit__(self, int burst=64, uint64_t max_flows=200000):
        if not 1 <= burst <= MAX_BURST:
            raise ValueError(f"burst must be 1..{MAX_BURST}")
        self.burst = burst
        self.max_flows = max_flows
        self._shared = _Shared()
        self.meters = self._shared.meters
        self._ports = {}
        self._affinity = {}
        self._cookies = []
        self._cookie_ids = {}
        self._compiled = weakref.WeakValueDictionary()
        self.lock = threading.RLock()
        self._main = self._new_pmd(-1, True)
        self._pmds = [self._new_pmd(-1, False)]

    cdef Pmd _new_pmd(self, int core_id, bint main):
        return Pmd(core_id, main, self.burst, self.max_flows, self._cookies, self._shared)

    # ------------------------------------------------------------ PMDs
    def pmds(self):
        """The poll-mode contexts (one thread each in the daemon)."""
        return list(self._pmds)

    @property
    def main(self):
        return self._main

    def set_pmds(self, cores):
        """Reconcile the PMDs with ``cores`` (core ids; -1 for one unpinned
        PMD): keep those still wanted, add new ones, drop the rest (their
        megaflows go with them; their ports' packets miss in the new owner),
        then reassign receive queues.  Returns (added, removed) Pmds."""
        cdef Pmd p
        cores = sorted(set(int(c) for c in cores))
        if not cores:
            raise ValueError("at least one PMD is needed")
        if -1 in cores and len(cores) > 1:
            raise ValueError("core -1 (unpinned) is only valid alone")
        with self.lock:
            have = {p.core_id: p for p in self._pmds}
            removed = [p for c, p in have.items() if c not in cores]
            added = [self._new_pmd(c, False) for c in cores if c not in have]
            self._pmds = sorted([have[c] for c in cores if c in have] + added,
                                key=lambda p: p.core_id)
            for gone in removed:
                p = gone
                with p.lock:
                    p.alive = False
                    p._set_ports({}, [])
                p.wakeup()
            self._assign_rxqs()
            return added, removed

    def set_rxq_affinity(self, int dp_port, core):
        """Pin a port's receive queue to the PMD on ``core`` (None: round
        robin).  A core without a PMD falls back to round robin, as OVS."""
        with self.lock:
            if core is None:
                self._affinity.pop(dp_port, None)
            else:
                self._affinity[dp_port] = int(core)
            self._assign_rxqs()

    def rxq_assignment(self):
        """{Pmd: [dp_port, ...]} as currently polled."""
        with self.lock:
            return {p: [(<Port>x).p.dp_port for x in (<Pmd>p)._rx_ports] for p in self._pmds}

    cdef _assign_rxqs(self):
        """Round robin by dp_port over the PMDs not named by an affinity
        (OVS's roundrobin assignment); waits for each context's iteration."""
        cdef Pmd p
        by_core = {p.core_id: p for p in self._pmds}
        rx = {p: [] for p in self._pmds}
        rest = []
        for n in sorted(self._ports):
            core = self._affinity.get(n)
            if core in by_core:
                rx[by_core[core]].append(self._ports[n])
            else:
                rest.append(self._ports[n])
        pinned = {by_core[c] for c in self._affinity.values() if c in by_core}
        pool = [p for p in self._pmds if p not in pinned] or list(self._pmds)
        for i, port in enumerate(rest):
            rx[pool[i % len(pool)]].append(port)
        for p in self._pmds:
            with p.lock:
                p._set_ports(self._ports, rx[p])
            p.wakeup()
        with self._main.lock:
            self._main._set_ports(self._ports, [])

    def synchronize(self):
        """Return once every PMD finished the iteration it was in (if any):
        from then on no packet is forwarded by a megaflow deleted before."""
        cdef Pmd p
        for p in list(self._pmds):
            with p.lock:
                pass

    # ------------------------------------------------------------ ports
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
            self._assign_rxqs()
            return n

    def del_port(self, int dp_port):
        cdef Port port
        with self.lock:
            port = self._ports.pop(dp_port)
            self._affinity.pop(dp_port, None)
            self._assign_rxqs()          # no context polls or sends to it after this
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

    def port_error(self, int dp_port):
        """None, or why the port stopped working (e.g. its device vanished)."""
        with self.lock:
            return (<Port>self._ports[dp_port]).error

    def close(self):
        cdef Pmd p
        with self.lock:
            for n in list(self._ports):
                self.del_port(n)
            for p in self._contexts():
                p.cache.flush()
                p.cache.quiesce()

    cdef list _contexts(self):
        return [self._main] + self._pmds

    # ------------------------------------------------------------ poll
    def poll(self, int timeout_ms=0):
        """One iteration of every PMD in the calling thread (tests, tools
        without PMD threads); returns their upcalls.  With one PMD this is
        that PMD's ``poll(timeout_ms)``; with several each is polled once
        without waiting, then once more after up to ``timeout_ms`` if none
        received anything."""
        cdef Pmd p
        pmds = list(self._pmds)
        if len(pmds) == 1:
            return (<Pmd>pmds[0]).poll(timeout_ms)
        out = []
        for p in pmds:
            out += p.poll(0)
        if out or timeout_ms == 0:
            return out
        import select
        fds = [fd for p in pmds for x in p._rx_ports if (<Port>x).error is None
               for fd in (<Port>x).fds]
        if fds:
            select.select(fds, [], [], timeout_ms / 1000.0)
        for p in pmds:
            out += p.poll(0)
        return out

    def wakeup(self):
        """End every PMD's poll() sleeping in another thread (thread-safe)."""
        cdef Pmd p
        for p in list(self._pmds):
            p.wakeup()

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

    def flow_put(self, bytes match, bytes mask, actions, int prio=0, pmd=None):
        """Install or modify (counters kept) a megaflow in the context
        ``pmd`` (an Upcall's ``pmd``: the one that missed), or in every
        context when None; ``prio`` > 0 makes it override overlapping
        megaflows (FlowCache.put).  A PMD that is gone takes nothing."""
        cdef Pmd p
        actions = tuple(actions)
        compiled = self.compile(actions)
        with self.lock:
            if pmd is not None:
                if (<Pmd?>pmd).alive:
                    (<Pmd>pmd).cache.put(match, mask, actions, compiled, prio)
                return
            for p in self._contexts():
                p.cache.put(match, mask, actions, compiled, prio)

    def flow_del(self, bytes match, bytes mask):
        """Delete a megaflow from every context; returns its final stats
        (summed over the contexts) or None if none held it."""
        cdef Pmd p
        out = None
        with self.lock:
            for p in self._contexts():
                mf = p.cache.delete(match, mask)
                if mf is not None:
                    out = _merge_stats(out, mf.stats())
        return out

    def flow_flush(self):
        cdef Pmd p
        with self.lock:
            for p in self._contexts():
                p.cache.flush()

    def flow_stats(self, bytes match, bytes mask):
        cdef Pmd p
        out = None
        with self.lock:
            for p in self._contexts():
                mf = p.cache.get(match, mask)
                if mf is not None:
                    out = _merge_stats(out, mf.stats())
        return out

    def flow_dump(self):
        """[(match, mask, actions, packets, bytes, used)] over all contexts,
        one tuple per megaflow (counters summed, latest use) — used is
        time.monotonic() seconds of the last hit, 0 if never."""
        cdef Pmd p
        with self.lock:
            return _merge_dump([p.cache.values() for p in self._contexts()])

    def flow_dump_pmds(self):
        """[(Pmd, flow_dump tuples)]: each context's own megaflows and
        counters, main context first (dpctl/dump-flows)."""
        cdef Pmd p
        with self.lock:
            return [(p, [_dump_tuple(m) for m in p.cache.values()]) for p in self._contexts()]

    def flow_sweep(self, double now, double idle):
        """Delete megaflows idle for ``idle`` seconds at ``now``
        (time.monotonic()) in each context; returns them as flow_dump tuples."""
        cdef Pmd p
        with self.lock:
            return _merge_dump([p.cache.sweep(now, idle) for p in self._contexts()])

    def flow_count(self):
        """Distinct megaflows over all contexts."""
        cdef Pmd p
        with self.lock:
            ctxs = self._contexts()
            if len(ctxs) == 2 and len(self._main.cache) == 0:
                return len((<Pmd>ctxs[1]).cache)
            return len({(m.match, m.mask) for p in ctxs for m in p.cache.values()})

    # ------------------------------------------------------------ execute
    def execute(self, bytes packet, actions, key=None):
        """Execute ``actions`` on ``packet`` now (packet-out, upcalled packet),
        in the main context.

        ``key`` (FLOW_KEY_SIZE bytes) supplies in_port and metadata; headers
        are always re-parsed from the packet.  Returns upcalls the actions
        produced (Userspace, recirculation misses), usually []."""
        cdef CompiledActions c = self.compile(actions)
        cdef fp_packet p
        cdef uint64_t kbuf[KEY_WORDS]
        cdef uint8_t* b
        cdef uint32_t in_port = 0
        cdef uint32_t n = len(packet)
        cdef Pmd m = self._main
        cdef fp_dp* dp
        if key is not None:
            if len(key) != FLOW_KEY_SIZE:
                raise ValueError(f"key must be {FLOW_KEY_SIZE} bytes")
            from slowpath.fields import MEMBERS
            o, s = MEMBERS["in_port"]
            in_port = int.from_bytes(key[o:o + s], "big")
        with self.lock, m.lock:
            dp = m.dp
            m.cache.quiesce()
            dp.arena.used = 0
            dp.n_upcalls = 0
            b = fp_arena_alloc(&dp.arena, FP_HEADROOM + n + 64)
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
                dp.now_ns = _now_ns()
                fp_execute(dp, &p, kbuf, c.buf + 8, c.length, 0)
                if dp.n_recirc:
                    _run_recirc(dp, dp.now_ns // 1000000)
                _flush_all(dp, m._txlist, m._n_txlist)
            out = m._collect()
            dp.arena.used = 0
            return out

    # ------------------------------------------------------------ meters
    def meter_set(self, int meter_id, rate, burst=None, str unit="pktps"):
        """Token-bucket meter: ``rate`` in packets/s (unit "pktps") or kbit/s
        ("kbps"); ``burst`` in packets or kbit (default: one second)."""
        cdef fp_meter* m
        if not 0 <= meter_id < FP_MAX_METERS:
            raise ValueError(f"meter id {meter_id} out of range")
        if unit not in ("pktps", "kbps"):
            raise ValueError("unit must be pktps or kbps")
        pkts = unit == "pktps"
        r = int(rate) if pkts else int(rate) * 1000
        b = int(rate if burst is None else burst)
        b = b * 1000 if pkts else b * 1000 * 1000
        with self.lock:
            m = &self.meters[meter_id]
            fp_spin_lock(&m.lock)
            m.pkts = pkts
            m.rate = r
            m.burst = b
            m.tokens = b
            m.last_ns = _now_ns()
            m.active = 1
            fp_spin_unlock(&m.lock)

    def meter_del(self, int meter_id):
        cdef fp_meter* m
        with self.lock:
            m = &self.meters[meter_id]
            fp_spin_lock(&m.lock)
            m.active = 0
            m.rate = m.burst = m.tokens = m.passed = m.dropped = 0
            fp_spin_unlock(&m.lock)

    def meter_stats(self, int meter_id):
        with self.lock:
            m = self.meters[meter_id]
            return {"passed": m.passed, "dropped": m.dropped}

    # ------------------------------------------------------------ stats
    def stats(self):
        """Counters summed over the contexts; ``flows`` counts distinct megaflows."""
        cdef Pmd p
        with self.lock:
            total = {}
            for p in self._contexts():
                for k, v in p.stats().items():
                    total[k] = total.get(k, 0) + v
            total["flows"] = self.flow_count()
            total["masks"] = max((<Pmd>p).cache.stats()["masks"] for p in self._contexts())
            return total

    def rank(self):
        cdef Pmd p
        with self.lock:
            for p in self._contexts():
                fp_cache_rank(p.dp.cache)

    def mask_order(self):
        """The first PMD's masks in probe order (tests)."""
        with self.lock:
            return (<Pmd>self._pmds[0]).cache.mask_order()


cdef list _merge_dump(list per_context):
    """flow_dump tuples, one per (match, mask): a megaflow several contexts
    hold is reported once with their counters summed."""
    cdef Megaflow m
    busy = [ms for ms in per_context if ms]
    if len(busy) <= 1:                        # the usual case: one PMD's flows
        return [_dump_tuple(m) for ms in busy for m in ms]
    merged = {}
    for m in [m for ms in busy for m in ms]:
        t = _dump_tuple(m)
        k = (t[0], t[1])
        old = merged.get(k)
        merged[k] = t if old is None else (
            t[0], t[1], old[2], old[3] + t[3], old[4] + t[4], max(old[5], t[5]))
    return list(merged.values())


def _merge_stats(a, b):
    if a is None:
        return b
    return {"packets": a["packets"] + b["packets"], "bytes": a["bytes"] + b["bytes"],
            "used": max(a["used"], b["used"])}
