# cython: language_level=3
"""DPDK ethdev ports of the userspace datapath (kind ``dpdk``).

Built only when pkg-config finds ``libdpdk`` (Debian ``libdpdk-dev`` 22.11);
without it this module is absent and ``fastpath.io.port`` fails a dpdk port
with a clear error.  The port driver reaches the per-packet functions here
through the ``OPS`` capsule (`fp_dpdk_ops`), so only this extension links
DPDK.

``eal_init(args)`` runs ``rte_eal_init`` once per process.  EAL pins the
calling thread to its main lcore; the thread's CPU affinity is put back
afterwards so the daemon's other threads (created later from it) are not all
squeezed onto that core.  No DPDK lcore threads poll here: the datapath
thread (a non-EAL thread; mempools then skip their per-lcore caches) calls
``rte_eth_rx_burst``/``rte_eth_tx_burst`` itself, one RX and one TX queue per
device.

``attach(port, name, devargs)`` hot-plugs a device with ``rte_dev_probe``
(a vdev such as ``net_af_packet0,iface=veth0``, ``net_tap0,iface=dtap0`` or
``net_af_xdp0,iface=veth0``; the ethdev is named by what precedes the first
comma), gives it its own mbuf pool, one queue each way, starts it in
promiscuous mode.  Closing the port stops and closes the ethdev, removes the
device (``rte_dev_remove``) and frees the pool, so the same devargs can be
attached again.

Received frames are used in place (zero copy) until ``rx_done``; frames to
send are copied into fresh mbufs and sent in bursts of up to FP_TXQ.
"""

from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from libc.stdio cimport snprintf

from fastpath.fpcore cimport fp_packet, fp_arena, fp_arena_alloc, FP_HEADROOM, FP_PKT_OWNED
from fastpath.io.port cimport fp_port, fp_dpdk_ops, FP_RX_CAP, FP_TXQ

import os
import threading

cdef enum:
    # Per device: RX ring + what a poll may hold + TX.  Not more: with 8 191
    # the af_xdp PMD's RX stops for good after ~4 700 frames (its UMEM is the
    # pool's memory; measured here, cause not found), with 4 095 it runs.
    POOL_MBUFS = 4095
    POOL_CACHE = 256
    RING_DESC = 1024
    TX_RETRIES = 4              # tx_burst calls before the rest is dropped

ctypedef struct fp_dpdk_dev:
    uint16_t port_id
    rte_mempool* pool
    rte_device* device
    int started
    uint16_t n_rx                       # mbufs lent to the datapath until rx_done
    uint16_t n_tx                       # mbufs queued for tx_flush
    rte_mbuf* rx[FP_RX_CAP]
    rte_mbuf* tx[FP_TXQ]
    uint32_t tx_len[FP_TXQ]


cdef inline fp_dpdk_dev* _dev(fp_port* p) noexcept nogil:
    return <fp_dpdk_dev*>p.dpdk


cdef int _rx_burst(fp_port* p, fp_packet* pkts, int max_n, fp_arena* arena) noexcept nogil:
    cdef fp_dpdk_dev* d = _dev(p)
    cdef int room = FP_RX_CAP - d.n_rx
    cdef int got, i, n = 0
    cdef rte_mbuf* m
    cdef uint8_t* b
    if max_n > room:
        max_n = room
    if max_n <= 0:
        return 0
    got = rte_eth_rx_burst(d.port_id, 0, d.rx + d.n_rx, <uint16_t>max_n)
    for i in range(got):
        m = d.rx[d.n_rx + i]
        if m.pkt_len < 14:
            p.stats.rx_dropped += 1
            continue
        if m.nb_segs == 1:
            pkts[n].buf = NULL
            pkts[n].bufsize = 0
            pkts[n].data = fp_mbuf_data(m)
            pkts[n].flags = 0
        else:                   # a chained (scattered) frame: make it contiguous
            b = fp_arena_alloc(arena, FP_HEADROOM + m.pkt_len + 64)
            if b == NULL:
                p.stats.rx_dropped += 1
                continue
            rte_pktmbuf_read(m, 0, m.pkt_len, b + FP_HEADROOM)
            pkts[n].buf = b
            pkts[n].bufsize = FP_HEADROOM + m.pkt_len + 64
            pkts[n].data = b + FP_HEADROOM
            pkts[n].flags = FP_PKT_OWNED
        pkts[n].len = m.pkt_len
        pkts[n].in_port = p.dp_port
        p.stats.rx_packets += 1
        p.stats.rx_bytes += m.pkt_len
        n += 1
    d.n_rx += got
    return n


cdef void _rx_done(fp_port* p) noexcept nogil:
    cdef fp_dpdk_dev* d = _dev(p)
    if d.n_rx:
        rte_pktmbuf_free_bulk(d.rx, d.n_rx)
        d.n_rx = 0


cdef void _tx_flush(fp_port* p) noexcept nogil:
    cdef fp_dpdk_dev* d = _dev(p)
    cdef uint16_t sent = 0, r, i
    cdef int tries = 0
    while sent < d.n_tx and tries < TX_RETRIES:
        r = rte_eth_tx_burst(d.port_id, 0, d.tx + sent, d.n_tx - sent)
        for i in range(sent, sent + r):
            p.stats.tx_bytes += d.tx_len[i]
        sent += r
        tries = tries + 1 if r == 0 else 0
    p.stats.tx_packets += sent
    if sent < d.n_tx:
        p.stats.tx_dropped += d.n_tx - sent
        rte_pktmbuf_free_bulk(d.tx + sent, d.n_tx - sent)
    d.n_tx = 0


cdef void _tx(fp_port* p, const uint8_t* data, uint32_t length) noexcept nogil:
    cdef fp_dpdk_dev* d = _dev(p)
    cdef rte_mbuf* m
    cdef char* dst
    if d.n_tx >= FP_TXQ:
        _tx_flush(p)
    m = rte_pktmbuf_alloc(d.pool)
    if m == NULL:
        p.stats.tx_dropped += 1
        return
    if length > rte_pktmbuf_tailroom(m):     # larger than one mbuf (jumbo): not sent
        rte_pktmbuf_free(m)
        p.stats.tx_dropped += 1
        return
    dst = rte_pktmbuf_append(m, <uint16_t>length)
    memcpy(dst, data, length)
    d.tx[d.n_tx] = m
    d.tx_len[d.n_tx] = length
    d.n_tx += 1


cdef uint64_t _rx_missed(fp_port* p) noexcept nogil:
    cdef rte_eth_stats st
    memset(&st, 0, sizeof(st))
    if rte_eth_stats_get(_dev(p).port_id, &st) != 0:
        return 0
    return st.imissed + st.rx_nombuf


cdef void _close(fp_port* p) noexcept nogil:
    cdef fp_dpdk_dev* d = _dev(p)
    if d == NULL:
        return
    p.dpdk = NULL
    if d.n_rx:
        rte_pktmbuf_free_bulk(d.rx, d.n_rx)
    if d.n_tx:
        rte_pktmbuf_free_bulk(d.tx, d.n_tx)
    if d.started:
        rte_eth_dev_stop(d.port_id)
    if d.device != NULL:
        rte_eth_dev_close(d.port_id)
        rte_dev_remove(d.device)
    if d.pool != NULL:
        rte_mempool_free(d.pool)
    free(d)


cdef fp_dpdk_ops _OPS
_OPS.rx_burst = _rx_burst
_OPS.rx_done = _rx_done
_OPS.tx = _tx
_OPS.tx_flush = _tx_flush
_OPS.rx_missed = _rx_missed
_OPS.close = _close

#: The functions fastpath.io.port calls for a dpdk port.
OPS_NAME = b"fastpath.io.dpdk.OPS"
OPS = PyCapsule_New(<void*>&_OPS, OPS_NAME, NULL)

# ------------------------------------------------------------------ EAL

_eal_lock = threading.Lock()
_eal_argv = None            # kept alive: EAL may hold pointers into argv
_eal_result = None          # None (not tried), True, or the failure (str)
cdef unsigned _pool_seq = 0


def version():
    """The DPDK version this module was built against, e.g. "DPDK 22.11.11"."""
    return rte_version().decode()


def initialized():
    return _eal_result is True


def eal_init(list args):
    """Run ``rte_eal_init(args)`` once per process (argv[0] included).

    Returns None on success; raises OSError if EAL failed, now or on the
    earlier attempt (EAL cannot be initialised twice in one process)."""
    global _eal_argv, _eal_result
    cdef int argc, i, r, err
    cdef char** argv
    with _eal_lock:
        if _eal_result is None:
            _eal_argv = [a.encode() for a in args]
            argc = len(_eal_argv)
            argv = <char**>calloc(argc + 1, sizeof(char*))
            if argv == NULL:
                raise MemoryError()
            for i in range(argc):
                argv[i] = <char*>_eal_argv[i]
            affinity = os.sched_getaffinity(0)
            try:
                with nogil:
                    r = rte_eal_init(argc, argv)
                err = rte_errno
            finally:
                # EAL pinned this thread to its main lcore; threads started
                # from it later (the datapath's, asyncio's) must not be.
                os.sched_setaffinity(0, affinity)
            # argv stays allocated: EAL may have kept pointers into it.
            if r < 0:
                _eal_result = (f"rte_eal_init failed: {rte_strerror(err).decode()} "
                               f"(EAL arguments: {' '.join(args[1:])})")
            else:
                _eal_result = True
        if _eal_result is not True:
            raise OSError(95, _eal_result)


def attach(uintptr_t port, str name, str devargs):
    """Hot-plug ``devargs`` and make it the device of the fp_port at
    ``port`` (an address, from fastpath.io.port).  Raises OSError."""
    global _pool_seq
    cdef fp_port* p = <fp_port*>port
    cdef fp_dpdk_dev* d
    cdef uint16_t port_id, nb_rx = RING_DESC, nb_tx = RING_DESC
    cdef rte_eth_conf conf
    cdef rte_eth_dev_info info
    cdef char pool_name[32]
    cdef int r, socket
    if _eal_result is not True:
        raise OSError(95, "DPDK is not initialized (set other_config:dpdk-init=true)")
    dev_name = devargs.split(",", 1)[0].strip()
    if not dev_name:
        raise OSError(22, f"bad dpdk-devargs {devargs!r}: no device name")
    bname = dev_name.encode()
    if rte_eth_dev_get_port_by_name(bname, &port_id) == 0:
        raise OSError(16, f"'{name}' is trying to use device '{dev_name}' "
                          f"which is already in use by another port")
    r = rte_dev_probe(devargs.encode())
    if r < 0 or rte_eth_dev_get_port_by_name(bname, &port_id) != 0:
        # DPDK logs why (bad name, no such interface...); OVS says just this.
        raise OSError(19, f"Error attaching device '{devargs}' to DPDK")
    d = <fp_dpdk_dev*>calloc(1, sizeof(fp_dpdk_dev))
    if d == NULL:
        raise MemoryError()
    d.port_id = port_id
    p.dpdk = d
    # From here _close() undoes whatever was done (the port frees itself).
    memset(&info, 0, sizeof(info))
    if rte_eth_dev_info_get(port_id, &info) == 0:
        d.device = info.device

    def fail(what, int r):
        raise OSError(-r, f"{name}: {what} of DPDK device '{dev_name}' failed "
                          f"({rte_strerror(-r).decode()})")

    socket = rte_eth_dev_socket_id(port_id)
    if socket < 0:
        socket = 0
    _pool_seq += 1
    snprintf(pool_name, sizeof(pool_name), "pvs_mp_%u", _pool_seq)
    d.pool = rte_pktmbuf_pool_create(pool_name, POOL_MBUFS, POOL_CACHE, 0,
                                     RTE_MBUF_DEFAULT_BUF_SIZE, socket)
    if d.pool == NULL:
        fail("creating an mbuf pool (dpdk-socket-mem too small?)", -rte_errno)
    memset(&conf, 0, sizeof(conf))
    r = rte_eth_dev_configure(port_id, 1, 1, &conf)
    if r < 0:
        fail("configuration", r)
    rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &nb_rx, &nb_tx)
    r = rte_eth_rx_queue_setup(port_id, 0, nb_rx, socket, NULL, d.pool)
    if r < 0:
        fail("RX queue setup", r)
    r = rte_eth_tx_queue_setup(port_id, 0, nb_tx, socket, NULL)
    if r < 0:
        fail("TX queue setup", r)
    r = rte_eth_dev_start(port_id)
    if r < 0:
        fail("start", r)
    d.started = 1
    rte_eth_promiscuous_enable(port_id)    # not every PMD can; forwarding works anyway


def mac(uintptr_t port):
    """The device's MAC address as "aa:bb:cc:dd:ee:ff" (None if unknown)."""
    cdef fp_port* p = <fp_port*>port
    cdef rte_ether_addr a
    if p.dpdk == NULL or rte_eth_macaddr_get(_dev(p).port_id, &a) != 0:
        return None
    return ":".join("%02x" % a.addr_bytes[i] for i in range(6))
