# cython: language_level=3
"""Port drivers of the userspace datapath.

``afpacket``: an existing interface opened with AF_PACKET, a TPACKET_V3 mmap
RX ring (blocks retired by the kernel, at most 1 ms latency when idle),
``PACKET_IGNORE_OUTGOING`` so our own transmissions are not seen again, and
batched TX with ``sendmmsg`` (``PACKET_QDISC_BYPASS``).  Frames the kernel
delivered with the VLAN tag in metadata (``TP_STATUS_VLAN_VALID``) get the
tag put back inline, as OVS does.

``dummy``: no device; frames go in and out through ``Port.peer``, the other
end of a datagram socketpair (OVS's netdev-dummy, for tests).

``tap``: a non-persistent TAP device (IFF_TAP|IFF_NO_PI) created by name; it
disappears when the port is closed.

Everything per packet is nogil C; Python is only touched to open and close.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, strlen
from libc.stdlib cimport calloc, malloc, free
from libc.errno cimport errno, EINTR, EAGAIN, ENOBUFS, ENODEV
from posix.unistd cimport close as c_close, read as c_read, write as c_write
from posix.fcntl cimport open as c_open, O_RDWR, O_NONBLOCK
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.uio cimport iovec

from fastpath.fpcore cimport (fp_packet, fp_arena, fp_arena_alloc, FP_HEADROOM,
                              FP_PKT_OWNED, FP_PKT_CSUM_PARTIAL)

import os

cdef extern from "<sys/socket.h>" nogil:
    int socket(int domain, int type, int protocol)
    int setsockopt(int fd, int level, int optname, const void* optval, socklen_t optlen)
    cdef struct sockaddr:
        unsigned short sa_family
    int bind(int fd, const sockaddr* addr, socklen_t addrlen)
    int sendmmsg(int fd, mmsghdr* msgvec, unsigned int vlen, int flags)
    int AF_PACKET, SOCK_RAW, SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_DONTWAIT

cdef extern from "<net/if.h>" nogil:
    unsigned int if_nametoindex(const char* name)

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long req, ...)

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)

cdef extern from "<linux/if_ether.h>":
    int ETH_P_ALL

cdef extern from "<linux/if_packet.h>" nogil:
    struct sockaddr_ll:
        unsigned short sll_family
        unsigned short sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]
    struct packet_mreq:
        int mr_ifindex
        unsigned short mr_type
        unsigned short mr_alen
        unsigned char mr_address[8]
    struct tpacket_req3:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
        unsigned int tp_retire_blk_tov
        unsigned int tp_sizeof_priv
        unsigned int tp_feature_req_word
    struct tpacket_hdr_variant1:
        uint32_t tp_rxhash
        uint32_t tp_vlan_tci
        uint16_t tp_vlan_tpid
    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
        uint16_t tp_net
        tpacket_hdr_variant1 hv1
    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt
        uint32_t blk_len
    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1
    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr
    int SOL_PACKET, PACKET_VERSION, PACKET_RX_RING, PACKET_ADD_MEMBERSHIP
    int PACKET_MR_PROMISC, PACKET_QDISC_BYPASS, PACKET_IGNORE_OUTGOING, TPACKET_V3
    int TP_STATUS_USER, TP_STATUS_KERNEL, TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID
    int TP_STATUS_CSUMNOTREADY

cdef extern from *:
    """
    static inline uint32_t fp_load_acquire_u32(uint32_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void fp_store_release_u32(uint32_t *p, uint32_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    #define FP_TUNSETIFF 0x400454caUL
    #define FP_IFF_TAP 0x0002
    #define FP_IFF_NO_PI 0x1000
    """
    uint32_t fp_load_acquire_u32(uint32_t* p) nogil
    void fp_store_release_u32(uint32_t* p, uint32_t v) nogil
    unsigned long FP_TUNSETIFF
    int FP_IFF_TAP, FP_IFF_NO_PI

cdef enum:
    RING_BLOCK_SIZE = 1 << 18
    RING_BLOCK_NR = 32
    RING_FRAME_SIZE = 2048

cdef inline tpacket_block_desc* _block(fp_port* p, uint32_t i) noexcept nogil:
    return <tpacket_block_desc*>(p.ring + <size_t>i * p.block_size)


cdef int _rx_afpacket(fp_port* p, fp_packet* pkts, int max_n, fp_arena* arena) noexcept nogil:
    cdef int n = 0
    cdef tpacket_block_desc* bd
    cdef tpacket3_hdr* h
    cdef uint8_t* src
    cdef uint8_t* b
    cdef uint32_t snap, tpid
    cdef fp_packet* pk
    while n < max_n:
        if p.pkt_left == 0:
            if p.reading:
                # Current block fully consumed: return it at rx_done().
                p.reading = 0
                p.n_release += 1
                p.cur_block = (p.cur_block + 1) % p.block_nr
            if p.n_release >= p.block_nr:
                break
            bd = _block(p, p.cur_block)
            if (fp_load_acquire_u32(&bd.hdr.bh1.block_status) & TP_STATUS_USER) == 0:
                break
            p.reading = 1
            p.pkt_left = bd.hdr.bh1.num_pkts
            p.next_pkt = <uint8_t*>bd + bd.hdr.bh1.offset_to_first_pkt
            continue
        h = <tpacket3_hdr*>p.next_pkt
        p.next_pkt += h.tp_next_offset
        p.pkt_left -= 1
        snap = h.tp_snaplen
        src = <uint8_t*>h + h.tp_mac
        if snap < h.tp_len or snap < 14:
            p.stats.rx_dropped += 1
            continue
        pk = &pkts[n]
        pk.in_port = p.dp_port
        pk.flags = 0
        if h.tp_status & TP_STATUS_VLAN_VALID:
            tpid = h.hv1.tp_vlan_tpid if (h.tp_status & TP_STATUS_VLAN_TPID_VALID) else 0x8100
            if tpid == 0:
                tpid = 0x8100
            b = fp_arena_alloc(arena, FP_HEADROOM + snap + 4 + 64)
            if b == NULL:
                p.stats.rx_dropped += 1
                continue
            pk.buf = b
            pk.bufsize = FP_HEADROOM + snap + 4 + 64
            pk.data = b + FP_HEADROOM
            memcpy(pk.data, src, 12)
            pk.data[12] = <uint8_t>(tpid >> 8)
            pk.data[13] = <uint8_t>tpid
            pk.data[14] = <uint8_t>(h.hv1.tp_vlan_tci >> 8)
            pk.data[15] = <uint8_t>h.hv1.tp_vlan_tci
            memcpy(pk.data + 16, src + 12, snap - 12)
            pk.len = snap + 4
            pk.flags = FP_PKT_OWNED
        else:
            pk.buf = NULL
            pk.bufsize = 0
            pk.data = src
            pk.len = snap
        if h.tp_status & TP_STATUS_CSUMNOTREADY:
            pk.flags |= FP_PKT_CSUM_PARTIAL
        p.stats.rx_packets += 1
        p.stats.rx_bytes += pk.len
        n += 1
    return n


cdef int _rx_tap(fp_port* p, fp_packet* pkts, int max_n, fp_arena* arena) noexcept nogil:
    cdef int n = 0
    cdef ssize_t r
    cdef uint8_t* b
    cdef size_t room = FP_HEADROOM + 65536 + 64
    while n < max_n:
        if arena.used + room > arena.size:
            break
        b = arena.base + arena.used
        r = c_read(p.fd, b + FP_HEADROOM, 65536)
        if r < 0:
            if errno == EINTR:
                continue
            if errno != EAGAIN:
                p.stats.rx_errors += 1
            break
        if r < 14:
            p.stats.rx_dropped += 1
            continue
        fp_arena_alloc(arena, FP_HEADROOM + r + 64)
        pkts[n].buf = b
        pkts[n].bufsize = FP_HEADROOM + r + 64
        pkts[n].data = b + FP_HEADROOM
        pkts[n].len = r
        pkts[n].flags = FP_PKT_OWNED
        pkts[n].in_port = p.dp_port
        p.stats.rx_packets += 1
        p.stats.rx_bytes += r
        n += 1
    return n


cdef int fp_port_rx_burst(fp_port* p, fp_packet* pkts, int max_n,
                          fp_arena* arena) noexcept nogil:
    """Receive up to ``max_n`` packets; they stay valid until rx_done()."""
    if p.kind == FP_PORT_AFPACKET:
        return _rx_afpacket(p, pkts, max_n, arena)
    elif p.kind == FP_PORT_TAP:
        return _rx_tap(p, pkts, max_n, arena)
    return 0


cdef void fp_port_rx_done(fp_port* p) noexcept nogil:
    """Give consumed RX ring blocks back to the kernel."""
    cdef uint32_t i
    if p.kind != FP_PORT_AFPACKET:
        return
    while p.n_release:
        fp_store_release_u32(&_block(p, p.release_start).hdr.bh1.block_status,
                             TP_STATUS_KERNEL)
        p.release_start = (p.release_start + 1) % p.block_nr
        p.n_release -= 1


cdef void fp_port_tx_flush(fp_port* p) noexcept nogil:
    cdef int sent = 0
    cdef int r
    cdef uint32_t i
    cdef ssize_t w
    if p.tx_n == 0:
        return
    if p.kind == FP_PORT_AFPACKET:
        while sent < <int>p.tx_n:
            r = sendmmsg(p.fd, p.tx_msgs + sent, p.tx_n - sent, MSG_DONTWAIT)
            if r < 0:
                if errno == EINTR:
                    continue
                if errno != EAGAIN and errno != ENOBUFS:
                    p.stats.tx_errors += 1
                p.stats.tx_dropped += p.tx_n - sent
                break
            for i in range(<uint32_t>sent, <uint32_t>(sent + r)):
                p.stats.tx_packets += 1
                p.stats.tx_bytes += p.tx_iov[i].iov_len
            sent += r
    else:
        for i in range(p.tx_n):
            w = c_write(p.fd, p.tx_iov[i].iov_base, p.tx_iov[i].iov_len)
            if w < 0:
                if errno == EINTR:
                    w = c_write(p.fd, p.tx_iov[i].iov_base, p.tx_iov[i].iov_len)
            if w < 0:
                p.stats.tx_dropped += 1
            else:
                p.stats.tx_packets += 1
                p.stats.tx_bytes += p.tx_iov[i].iov_len
    p.tx_n = 0
    p.tx_used = 0


cdef void fp_port_tx(fp_port* p, const uint8_t* data, uint32_t length) noexcept nogil:
    """Queue a copy of one frame for transmission (flushed by tx_flush)."""
    cdef size_t need = (length + 63) & ~(<size_t>63)
    if length > FP_TXBUF:
        p.stats.tx_dropped += 1
        return
    if p.tx_n >= FP_TXQ or p.tx_used + need > FP_TXBUF:
        fp_port_tx_flush(p)
    cdef uint8_t* dst = p.tx_buf + p.tx_used
    memcpy(dst, data, length)
    p.tx_iov[p.tx_n].iov_base = dst
    p.tx_iov[p.tx_n].iov_len = length
    p.tx_n += 1
    p.tx_used += need


cdef fp_port* _alloc_port() except NULL:
    cdef fp_port* p = <fp_port*>calloc(1, sizeof(fp_port))
    if p == NULL:
        raise MemoryError()
    p.fd = -1
    p.tx_msgs = <mmsghdr*>calloc(FP_TXQ, sizeof(mmsghdr))
    p.tx_iov = <iovec*>calloc(FP_TXQ, sizeof(iovec))
    p.tx_buf = <uint8_t*>malloc(FP_TXBUF)
    if p.tx_msgs == NULL or p.tx_iov == NULL or p.tx_buf == NULL:
        _free_port(p)
        raise MemoryError()
    cdef int i
    for i in range(FP_TXQ):
        p.tx_msgs[i].msg_hdr.msg_iov = &p.tx_iov[i]
        p.tx_msgs[i].msg_hdr.msg_iovlen = 1
    return p


cdef void _free_port(fp_port* p) noexcept:
    if p == NULL:
        return
    if p.ring != NULL:
        munmap(p.ring, p.ring_size)
    if p.fd >= 0:
        c_close(p.fd)
    free(p.tx_msgs)
    free(p.tx_iov)
    free(p.tx_buf)
    free(p)


cdef int _sockopt(int fd, int level, int name, const void* val, socklen_t n, str ifname, str what) except -1:
    if setsockopt(fd, level, name, val, n) < 0:
        e = errno
        raise OSError(e, f"{what} on {ifname}: {os.strerror(e)}", ifname)
    return 0


cdef _open_afpacket(fp_port* p, str name):
    cdef bytes bname = name.encode()
    cdef int one = 1
    cdef int ver = TPACKET_V3
    cdef tpacket_req3 req
    cdef sockaddr_ll sll
    cdef packet_mreq mr
    cdef int ifindex = if_nametoindex(bname)
    if ifindex == 0:
        raise OSError(ENODEV, f"no such network device: {name}", name)
    p.ifindex = ifindex
    p.fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if p.fd < 0:
        e = errno
        raise OSError(e, f"AF_PACKET socket for {name}: {os.strerror(e)}", name)
    _sockopt(p.fd, SOL_PACKET, PACKET_VERSION, &ver, sizeof(ver), name, "PACKET_VERSION")
    # Not seeing our own transmissions matters (no loops); qdisc bypass is speed.
    _sockopt(p.fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one), name,
             "PACKET_IGNORE_OUTGOING")
    _sockopt(p.fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one), name,
             "PACKET_QDISC_BYPASS")
    memset(&req, 0, sizeof(req))
    req.tp_block_size = RING_BLOCK_SIZE
    req.tp_block_nr = RING_BLOCK_NR
    req.tp_frame_size = RING_FRAME_SIZE
    req.tp_frame_nr = (RING_BLOCK_SIZE // RING_FRAME_SIZE) * RING_BLOCK_NR
    req.tp_retire_blk_tov = 1
    _sockopt(p.fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req), name, "PACKET_RX_RING")
    p.block_size = RING_BLOCK_SIZE
    p.block_nr = RING_BLOCK_NR
    p.ring_size = <size_t>RING_BLOCK_SIZE * RING_BLOCK_NR
    cdef void* m = mmap(NULL, p.ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd, 0)
    if m == MAP_FAILED:
        e = errno
        raise OSError(e, f"mmap RX ring of {name}: {os.strerror(e)}", name)
    p.ring = <uint8_t*>m
    memset(&sll, 0, sizeof(sll))
    sll.sll_family = AF_PACKET
    sll.sll_protocol = htons(ETH_P_ALL)
    sll.sll_ifindex = ifindex
    if bind(p.fd, <sockaddr*>&sll, sizeof(sll)) < 0:
        e = errno
        raise OSError(e, f"bind AF_PACKET to {name}: {os.strerror(e)}", name)
    memset(&mr, 0, sizeof(mr))
    mr.mr_ifindex = ifindex
    mr.mr_type = PACKET_MR_PROMISC
    _sockopt(p.fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr), name, "promiscuous mode")


cdef _open_tap(fp_port* p, str name):
    cdef bytes bname = name.encode()
    cdef char ifr[40]
    if not 0 < len(bname) < 16:
        raise ValueError(f"tap name must be 1-15 bytes: {name!r}")
    p.fd = c_open(b"/dev/net/tun", O_RDWR | O_NONBLOCK)
    if p.fd < 0:
        e = errno
        raise OSError(e, f"open /dev/net/tun for {name}: {os.strerror(e)}", name)
    memset(ifr, 0, sizeof(ifr))
    memcpy(ifr, <char*>bname, len(bname))
    (<short*>(ifr + 16))[0] = FP_IFF_TAP | FP_IFF_NO_PI
    if ioctl(p.fd, FP_TUNSETIFF, ifr) < 0:
        e = errno
        raise OSError(e, f"create tap {name}: {os.strerror(e)}", name)
    p.ifindex = if_nametoindex(bname)


cdef class Port:
    """One open datapath port (owns its fd, ring and TX staging)."""

    def __cinit__(self, str name, str kind, uint32_t dp_port=0):
        self.p = NULL
        self.name = name
        self.kind = kind
        cdef fp_port* p = _alloc_port()
        p.dp_port = dp_port
        try:
            if kind in ("afpacket", "system"):
                p.kind = FP_PORT_AFPACKET
                _open_afpacket(p, name)
            elif kind in ("tap", "internal"):
                p.kind = FP_PORT_TAP
                _open_tap(p, name)
            elif kind == "dummy":
                # Like OVS netdev-dummy: frames in and out through the other
                # end of a datagram socketpair (self.peer); no device.
                import socket
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                a.setblocking(False)
                a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
                b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
                p.kind = FP_PORT_TAP
                p.fd = a.detach()
                self.peer = b
            else:
                raise ValueError(f"unknown port kind {kind!r} for {name}")
        except BaseException:
            _free_port(p)
            raise
        self.p = p

    def __dealloc__(self):
        if self.p != NULL:
            _free_port(self.p)
            self.p = NULL

    cpdef close(self):
        if self.p != NULL:
            fp_port_tx_flush(self.p)
            _free_port(self.p)
            self.p = NULL
        if self.peer is not None:
            self.peer.close()

    @property
    def fd(self):
        return -1 if self.p == NULL else self.p.fd

    @property
    def ifindex(self):
        return 0 if self.p == NULL else self.p.ifindex

    def stats(self):
        if self.p == NULL:
            return {}
        s = self.p.stats
        return {"rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
                "rx_dropped": s.rx_dropped, "rx_errors": s.rx_errors,
                "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes,
                "tx_dropped": s.tx_dropped, "tx_errors": s.tx_errors}

    def send_repeat(self, bytes frame, uint64_t count):
        """Transmit ``frame`` ``count`` times in batches (traffic generator
        for tests and benchmarks); returns frames the kernel accepted."""
        if self.p == NULL:
            raise ValueError("port closed")
        cdef uint64_t i, before = self.p.stats.tx_packets
        cdef const uint8_t* d = <const uint8_t*><char*>frame
        cdef uint32_t n = len(frame)
        with nogil:
            for i in range(count):
                fp_port_tx(self.p, d, n)
            fp_port_tx_flush(self.p)
        return self.p.stats.tx_packets - before

    def send(self, bytes frame):
        """Transmit one frame now (tests, packet-outs)."""
        if self.p == NULL:
            raise ValueError("port closed")
        fp_port_tx(self.p, <const uint8_t*><char*>frame, len(frame))
        fp_port_tx_flush(self.p)
