# cython: language_level=3
"""Port drivers of the userspace datapath.

``afpacket``: an existing interface opened with AF_PACKET, a TPACKET_V3 mmap
RX ring (blocks retired by the kernel, at most 1 ms latency when idle),
``PACKET_IGNORE_OUTGOING`` so our own transmissions are not seen again, and
batched TX with ``sendmmsg`` (``PACKET_QDISC_BYPASS``).  Frames the kernel
delivered with the VLAN tag in metadata (``TP_STATUS_VLAN_VALID``) get the
tag put back inline, as OVS does.

``afxdp``: AF_XDP socket on queue 0 (copy mode, need_wakeup) with its own
UMEM and a 6-instruction XDP program (``bpf_redirect_map`` to an XSKMAP,
XDP_PASS otherwise) attached through a BPF link, so it detaches when the port
closes.  Native XDP first, generic as fallback (``afxdp-native`` /
``afxdp-generic`` force one).  Copy-mode TX sends only ~32 frames per kick,
so every poll kicks while TX frames are in flight.

``afxdp-cache``: the same AF_XDP socket without a program of its own, for
an interface the XDP flow cache (``fastpath/bpf``) runs on: that program
redirects misses to it through its XSKMAP (``Port.xsk_fd``), and an AF_PACKET
ring on the same interface takes what it passes up instead (frames larger
than a UMEM frame, queues without a socket, generic mode).

``dummy``: no device; frames go in and out through ``Port.peer``, the other
end of a datagram socketpair (OVS's netdev-dummy, for tests).

``tap``: a non-persistent TAP device (IFF_TAP|IFF_NO_PI) created by name; it
disappears when the port is closed.

``dpdk``: a DPDK ethdev hot-plugged from ``devargs`` (``fastpath.io.dpdk``,
present only if the build found libdpdk; its functions come through a
capsule).  A DPDK queue has no fd to sleep on, so the port's fd is a timerfd
firing every DPDK_IDLE_POLL_US: an idle datapath wakes that often to poll it
(a bounded sleep rather than OVS's busy-polling PMD threads, which would
take a whole core of this 2-core machine).  While packets flow, and for
DPDK_BUSY_POLL_US after the last one, the timer is left readable, so the
datapath does not sleep and polls the queue back to back (the af_packet
PMD's small kernel ring overflows within one idle tick).

Everything per packet is nogil C; Python is only touched to open and close.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, strlen
from libc.stdlib cimport calloc, malloc, free
from libc.errno cimport errno, EINTR, EAGAIN, ENOBUFS, ENODEV
from cpython.pycapsule cimport PyCapsule_GetPointer
from posix.unistd cimport close as c_close, read as c_read, write as c_write
from posix.fcntl cimport open as c_open, O_RDWR, O_NONBLOCK
from posix.mman cimport (mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED,
                         MAP_PRIVATE, MAP_ANONYMOUS, MAP_POPULATE)
from posix.uio cimport iovec

from fastpath.fpcore cimport (fp_packet, fp_arena, fp_arena_alloc, FP_HEADROOM,
                              FP_PKT_OWNED, FP_PKT_CSUM_PARTIAL, FP_PKT_GSO, fp_sum16,
                              rd16, wr16)
from fastpath.io.port cimport FP_RX_CAP

import os
from socket import if_nametoindex as socket_if_nametoindex

cdef extern from "<sys/socket.h>" nogil:
    int socket(int domain, int type, int protocol)
    int setsockopt(int fd, int level, int optname, const void* optval, socklen_t optlen)
    cdef struct sockaddr:
        unsigned short sa_family
    int bind(int fd, const sockaddr* addr, socklen_t addrlen)
    int getsockopt(int fd, int level, int optname, void* optval, socklen_t* optlen)
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
    int PACKET_VNET_HDR, PACKET_STATISTICS
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

cdef extern from "<linux/virtio_net.h>" nogil:
    struct virtio_net_hdr:
        uint8_t flags
        uint8_t gso_type
        uint16_t hdr_len
        uint16_t gso_size
        uint16_t csum_start
        uint16_t csum_offset
    int VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6
    int VIRTIO_NET_HDR_GSO_ECN

cdef enum:
    VIRTIO_NET_HDR_GSO_UDP_L4 = 5      # not in Debian 12's linux-libc-dev

cdef extern from "<sys/timerfd.h>" nogil:
    struct timespec_its "timespec":
        long tv_sec
        long tv_nsec
    struct itimerspec:
        timespec_its it_interval
        timespec_its it_value
    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec* new, itimerspec* old)
    int TFD_NONBLOCK, TFD_CLOEXEC
    int CLOCK_MONOTONIC
    int clock_gettime(int clk, timespec_its* ts)

cdef enum:
    DPDK_IDLE_POLL_US = 1000    # how often an idle datapath polls a dpdk port
    DPDK_BUSY_POLL_US = 1000    # busy-polled this long after its last packet

# fastpath.io.dpdk's functions, once a dpdk port was opened (else NULL).
cdef fp_dpdk_ops* _dpdk = NULL

cdef uint8_t _zero_vnet[16]
memset(_zero_vnet, 0, sizeof(_zero_vnet))

cdef enum:
    RING_BLOCK_SIZE = 1 << 18
    RING_BLOCK_NR = 32
    RING_FRAME_SIZE = 2048

cdef inline tpacket_block_desc* _block(fp_port* p, uint32_t i) noexcept nogil:
    return <tpacket_block_desc*>(p.ring + <size_t>i * p.block_size)


cdef uint16_t _csum(const uint8_t* b, uint32_t n, uint64_t s) noexcept nogil:
    s += fp_sum16(b, n)
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return <uint16_t>~s


cdef int fp_gso_segment(fp_packet* src, fp_packet* out, int room, fp_arena* arena) noexcept nogil:
    return _gso_segment(src.data, src.len, src.gso_type, src.gso_size, src.in_port,
                        out, room, arena)


cdef int _gso_segment(const uint8_t* d, uint32_t len, uint8_t gso_type_in, uint16_t gso_size,
                      uint32_t in_port, fp_packet* out, int room, fp_arena* arena) noexcept nogil:
    """Software GSO: split a TCP/UDP super-packet into wire-size segments
    with complete headers and checksums.  Returns the count, or -1."""
    cdef uint32_t l3 = 12, l4, hl, mss = gso_size, plen, off, i, j, nseg, seg_len
    cdef uint16_t et, ipid = 0
    cdef uint8_t proto, tcpflags = 0
    cdef int v4
    cdef uint32_t seq0 = 0, seq
    cdef uint8_t* b
    cdef uint8_t* ip
    cdef uint8_t* th
    cdef uint64_t ps
    cdef uint8_t gso = gso_type_in & ~VIRTIO_NET_HDR_GSO_ECN
    while l3 + 2 <= len and (rd16(d + l3) == 0x8100 or rd16(d + l3) == 0x88a8):
        l3 += 4
    if l3 + 2 > len or mss == 0:
        return -1
    et = rd16(d + l3)
    l3 += 2
    if et == 0x0800 and len >= l3 + 20 and (d[l3] & 0x0f) >= 5:
        v4 = 1
        l4 = l3 + (d[l3] & 0x0f) * 4
        proto = d[l3 + 9]
        ipid = rd16(d + l3 + 4)
    elif et == 0x86dd and len >= l3 + 40:
        v4 = 0
        l4 = l3 + 40
        proto = d[l3 + 6]
    else:
        return -1
    if proto == 6 and (gso == VIRTIO_NET_HDR_GSO_TCPV4 or gso == VIRTIO_NET_HDR_GSO_TCPV6):
        if len < l4 + 20:
            return -1
        if (d[l4 + 12] >> 4) < 5:
            return -1
        hl = l4 + (d[l4 + 12] >> 4) * 4
        seq0 = (<uint32_t>rd16(d + l4 + 4) << 16) | rd16(d + l4 + 6)
        tcpflags = d[l4 + 13]
    elif proto == 17 and gso == VIRTIO_NET_HDR_GSO_UDP_L4:
        hl = l4 + 8
    else:
        return -1
    if hl > len:
        return -1
    plen = len - hl
    nseg = (plen + mss - 1) // mss
    if nseg == 0 or <int>nseg > room:
        return -1
    off = 0
    for i in range(nseg):
        seg_len = mss if plen - off > mss else plen - off
        b = fp_arena_alloc(arena, FP_HEADROOM + hl + seg_len + 64)
        if b == NULL:
            return -1
        memcpy(b + FP_HEADROOM, d, hl)
        memcpy(b + FP_HEADROOM + hl, d + hl + off, seg_len)
        ip = b + FP_HEADROOM + l3
        th = b + FP_HEADROOM + l4
        if v4:
            wr16(ip + 2, <uint16_t>(hl - l3 + seg_len))
            wr16(ip + 4, <uint16_t>(ipid + i))
            wr16(ip + 10, 0)
            wr16(ip + 10, _csum(ip, l4 - l3, 0))
            ps = rd16(ip + 12) + rd16(ip + 14) + rd16(ip + 16) + rd16(ip + 18)
        else:
            wr16(ip + 4, <uint16_t>(hl - l3 - 40 + seg_len))
            ps = 0
            for j in range(16):
                ps += rd16(ip + 8 + 2 * j)
        ps += proto + (hl - l4) + seg_len
        if proto == 6:
            seq = seq0 + off
            wr16(th + 4, <uint16_t>(seq >> 16))
            wr16(th + 6, <uint16_t>seq)
            th[13] = tcpflags
            if i + 1 < nseg:
                th[13] &= ~0x09                  # FIN, PSH only on the last
            if i > 0:
                th[13] &= ~0x80                  # CWR only on the first
            wr16(th + 16, 0)
            wr16(th + 16, _csum(th, hl - l4 + seg_len, ps))
        else:
            wr16(th + 4, <uint16_t>(8 + seg_len))
            wr16(th + 6, 0)
            ps = _csum(th, 8 + seg_len, ps)
            wr16(th + 6, <uint16_t>(ps if ps else 0xffff))
        out[i].buf = b
        out[i].bufsize = FP_HEADROOM + hl + seg_len + 64
        out[i].data = b + FP_HEADROOM
        out[i].len = hl + seg_len
        out[i].flags = FP_PKT_OWNED
        out[i].in_port = in_port
        off += seg_len
    return nseg


cdef int _rx_afpacket(fp_port* p, fp_packet* pkts, int max_n, fp_arena* arena) noexcept nogil:
    cdef int n = 0, taken = 0, k
    cdef tpacket_block_desc* bd
    cdef tpacket3_hdr* h
    cdef virtio_net_hdr* vh
    cdef uint8_t* src
    cdef uint8_t* b
    cdef uint32_t snap, tpid
    cdef fp_packet* pk
    while taken < max_n and n < FP_RX_CAP:
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
        snap = h.tp_snaplen
        src = <uint8_t*>h + h.tp_mac
        vh = <virtio_net_hdr*>(src - sizeof(virtio_net_hdr)) if p.vnet else NULL
        p.next_pkt += h.tp_next_offset
        p.pkt_left -= 1
        taken += 1
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
        if vh != NULL and vh.gso_type != VIRTIO_NET_HDR_GSO_NONE:
            # Keep the super-packet whole: one lookup; passed through as GSO
            # to AF_PACKET outputs, segmented in software otherwise.
            k = 4 if (pk.flags & FP_PKT_OWNED) else 0     # re-inserted VLAN tag
            pk.flags |= FP_PKT_GSO
            pk.gso_type = vh.gso_type
            pk.gso_size = vh.gso_size
            pk.gso_hdr_len = vh.hdr_len + k
            pk.vnet_flags = vh.flags
            pk.csum_start = vh.csum_start + k
            pk.csum_offset = vh.csum_offset
        elif h.tp_status & TP_STATUS_CSUMNOTREADY:
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


# ---------------------------------------------------------------- AF_XDP

cdef extern from *:
    """
    #include <linux/bpf.h>
    #include <linux/if_xdp.h>
    #include <linux/if_link.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    #include <string.h>
    #ifndef SOL_XDP
    #define SOL_XDP 283
    #endif
    #ifndef AF_XDP
    #define AF_XDP 44
    #endif
    static long fp_bpf(int cmd, union bpf_attr *attr) {
        return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
    }
    static int fp_xsk_map_create(void) {
        union bpf_attr a; memset(&a, 0, sizeof(a));
        a.map_type = BPF_MAP_TYPE_XSKMAP; a.key_size = 4; a.value_size = 4;
        a.max_entries = 64;
        strncpy(a.map_name, "pvs_xsks", sizeof(a.map_name) - 1);
        return (int)fp_bpf(BPF_MAP_CREATE, &a);
    }
    /* return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS); */
    static int fp_xsk_prog_load(int map_fd, char *log, unsigned log_size) {
        struct bpf_insn insns[6];
        memset(insns, 0, sizeof(insns));
        insns[0].code = BPF_LDX | BPF_MEM | BPF_W; insns[0].dst_reg = 2; insns[0].src_reg = 1;
        insns[0].off = 16;                                   /* xdp_md.rx_queue_index */
        insns[1].code = BPF_LD | BPF_DW | BPF_IMM; insns[1].dst_reg = 1;
        insns[1].src_reg = BPF_PSEUDO_MAP_FD; insns[1].imm = map_fd;
        insns[3].code = BPF_ALU64 | BPF_MOV | BPF_K; insns[3].dst_reg = 3; insns[3].imm = XDP_PASS;
        insns[4].code = BPF_JMP | BPF_CALL; insns[4].imm = BPF_FUNC_redirect_map;
        insns[5].code = BPF_JMP | BPF_EXIT;
        union bpf_attr a; memset(&a, 0, sizeof(a));
        a.prog_type = BPF_PROG_TYPE_XDP; a.insns = (unsigned long)insns; a.insn_cnt = 6;
        a.license = (unsigned long)"GPL";
        a.log_buf = (unsigned long)log; a.log_size = log_size; a.log_level = log ? 1 : 0;
        strncpy(a.prog_name, "pvs_xsk", sizeof(a.prog_name) - 1);
        return (int)fp_bpf(BPF_PROG_LOAD, &a);
    }
    static int fp_map_update_u32(int map_fd, unsigned key, unsigned val) {
        union bpf_attr a; memset(&a, 0, sizeof(a));
        a.map_fd = map_fd; a.key = (unsigned long)&key; a.value = (unsigned long)&val;
        return (int)fp_bpf(BPF_MAP_UPDATE_ELEM, &a);
    }
    static int fp_xdp_link(int prog_fd, int ifindex, unsigned flags) {
        union bpf_attr a; memset(&a, 0, sizeof(a));
        a.link_create.prog_fd = prog_fd; a.link_create.target_ifindex = ifindex;
        a.link_create.attach_type = BPF_XDP; a.link_create.flags = flags;
        return (int)fp_bpf(BPF_LINK_CREATE, &a);
    }
    static int fp_xsk_setup_umem(int fd, void *area, unsigned long long len, unsigned chunk) {
        struct xdp_umem_reg r; memset(&r, 0, sizeof(r));
        r.addr = (unsigned long)area; r.len = len; r.chunk_size = chunk; r.headroom = 0;
        return setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &r, sizeof(r));
    }
    static int fp_xsk_ring_size(int fd, int which, unsigned n) {
        return setsockopt(fd, SOL_XDP, which, &n, sizeof(n));
    }
    static int fp_xsk_offsets(int fd, struct xdp_mmap_offsets *o) {
        socklen_t l = sizeof(*o);
        return getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, o, &l);
    }
    static int fp_xsk_bind(int fd, int ifindex, unsigned queue, unsigned flags) {
        struct sockaddr_xdp s; memset(&s, 0, sizeof(s));
        s.sxdp_family = AF_XDP; s.sxdp_ifindex = ifindex; s.sxdp_queue_id = queue;
        s.sxdp_flags = flags;
        return bind(fd, (struct sockaddr *)&s, sizeof(s));
    }
    static int fp_xsk_socket(void) { return socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0); }
    /* XDP_MAX_TX_SKB_BUDGET (9, Linux 6.17+): frames one copy-mode sendto()
     * may transmit (default 32).  Older kernels: ENOPROTOOPT, ignored. */
    static int fp_xsk_tx_budget(int fd, unsigned n) {
        return setsockopt(fd, SOL_XDP, 9, &n, sizeof(n));
    }
    static void fp_xsk_kick_tx(int fd) { sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0); }
    static void fp_xsk_kick_rx(int fd) { recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL); }
    """
    struct xdp_ring_offset:
        uint64_t producer
        uint64_t consumer
        uint64_t desc
        uint64_t flags
    struct xdp_mmap_offsets:
        xdp_ring_offset rx
        xdp_ring_offset tx
        xdp_ring_offset fr
        xdp_ring_offset cr
    struct xdp_desc:
        uint64_t addr
        uint32_t len
        uint32_t options
    int fp_xsk_map_create() nogil
    int fp_xsk_prog_load(int map_fd, char* log, unsigned log_size) nogil
    int fp_map_update_u32(int map_fd, unsigned key, unsigned val) nogil
    int fp_xdp_link(int prog_fd, int ifindex, unsigned flags) nogil
    int fp_xsk_setup_umem(int fd, void* area, unsigned long long length, unsigned chunk) nogil
    int fp_xsk_ring_size(int fd, int which, unsigned n) nogil
    int fp_xsk_offsets(int fd, xdp_mmap_offsets* o) nogil
    int fp_xsk_bind(int fd, int ifindex, unsigned queue, unsigned flags) nogil
    int fp_xsk_socket() nogil
    int fp_xsk_tx_budget(int fd, unsigned n) nogil
    void fp_xsk_kick_tx(int fd) nogil
    void fp_xsk_kick_rx(int fd) nogil
    int XDP_RX_RING, XDP_TX_RING, XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING
    int XDP_COPY, XDP_ZEROCOPY, XDP_USE_NEED_WAKEUP, XDP_RING_NEED_WAKEUP
    unsigned long long XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING
    unsigned long long XDP_UMEM_PGOFF_FILL_RING, XDP_UMEM_PGOFF_COMPLETION_RING
    unsigned XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE

cdef enum:
    XSK_FRAME = 2048
    XSK_FRAMES = 8192
    XSK_RING = 2048                  # rx, tx, fill, completion ring sizes
    XSK_FILL = 4096                  # frames owned by the kernel for RX


cdef inline uint64_t* _xaddr(fp_xring* r, uint32_t i) noexcept nogil:
    return &(<uint64_t*>r.desc)[i & r.mask]

cdef inline xdp_desc* _xdesc(fp_xring* r, uint32_t i) noexcept nogil:
    return &(<xdp_desc*>r.desc)[i & r.mask]


cdef void _xsk_reclaim(fp_port* p) noexcept nogil:
    """Completed TX frames back to the free pool."""
    cdef fp_xring* cq = &p.xcq
    cdef uint32_t prod = fp_load_acquire_u32(cq.producer)
    cdef uint32_t cons = cq.cached_cons
    while cons != prod:
        p.xfree[p.n_xfree] = _xaddr(cq, cons)[0]
        p.n_xfree += 1
        cons += 1
        p.tx_inflight -= 1
    if cons != cq.cached_cons:
        cq.cached_cons = cons
        fp_store_release_u32(cq.consumer, cons)


cdef void _xsk_tx_flush(fp_port* p) noexcept nogil:
    if p.xtx.cached_prod != p.xtx.cached_cons:
        fp_store_release_u32(p.xtx.producer, p.xtx.cached_prod)
        p.xtx.cached_cons = p.xtx.cached_prod
    # Copy mode sends only ~32 frames per kick: kick until the kernel has
    # taken every queued descriptor (bounded), then reclaim completions.
    cdef int kicks = 0
    while p.tx_inflight and kicks < 16:
        fp_xsk_kick_tx(p.fd)
        kicks += 1
        if fp_load_acquire_u32(p.xtx.consumer) == p.xtx.cached_prod:
            break
    if p.tx_inflight:
        _xsk_reclaim(p)


cdef void _xsk_tx(fp_port* p, const uint8_t* data, uint32_t length) noexcept nogil:
    cdef uint64_t addr
    cdef xdp_desc* d
    cdef uint32_t cons
    if length > XSK_FRAME:
        p.stats.tx_dropped += 1
        return
    if p.n_xfree == 0:
        _xsk_tx_flush(p)
        if p.n_xfree == 0:
            p.stats.tx_dropped += 1
            return
    cons = fp_load_acquire_u32(p.xtx.consumer)
    if p.xtx.cached_prod - cons >= p.xtx.size:
        _xsk_tx_flush(p)
        cons = fp_load_acquire_u32(p.xtx.consumer)
        if p.xtx.cached_prod - cons >= p.xtx.size:
            p.stats.tx_dropped += 1
            return
    p.n_xfree -= 1
    addr = p.xfree[p.n_xfree]
    memcpy(p.umem + addr, data, length)
    d = _xdesc(&p.xtx, p.xtx.cached_prod)
    d.addr = addr
    d.len = length
    d.options = 0
    p.xtx.cached_prod += 1
    p.tx_inflight += 1
    p.stats.tx_packets += 1
    p.stats.tx_bytes += length


cdef int _rx_xsk(fp_port* p, fp_packet* pkts, int max_n) noexcept nogil:
    cdef fp_xring* rx = &p.xrx
    cdef uint32_t prod, cons, n, i
    cdef xdp_desc* d
    if p.tx_inflight:
        _xsk_tx_flush(p)
    if p.xfq.flags[0] & XDP_RING_NEED_WAKEUP:
        fp_xsk_kick_rx(p.fd)
    prod = fp_load_acquire_u32(rx.producer)
    cons = rx.cached_cons
    n = prod - cons
    if n > <uint32_t>max_n:
        n = max_n
    for i in range(n):
        d = _xdesc(rx, cons + i)
        pkts[i].data = p.umem + d.addr
        pkts[i].len = d.len
        pkts[i].buf = NULL
        pkts[i].bufsize = 0
        pkts[i].flags = 0
        pkts[i].in_port = p.dp_port
        p.xheld[p.n_xheld] = d.addr & ~(<uint64_t>XSK_FRAME - 1)
        p.n_xheld += 1
        p.stats.rx_packets += 1
        p.stats.rx_bytes += d.len
    if n:
        rx.cached_cons = cons + n
        fp_store_release_u32(rx.consumer, cons + n)
    return n


cdef void _xsk_rx_done(fp_port* p) noexcept nogil:
    """Give the frames of the last burst back to the fill ring."""
    cdef fp_xring* fq = &p.xfq
    cdef uint32_t i
    if p.n_xheld == 0:
        return
    for i in range(p.n_xheld):
        _xaddr(fq, fq.cached_prod)[0] = p.xheld[i]
        fq.cached_prod += 1
    p.n_xheld = 0
    fp_store_release_u32(fq.producer, fq.cached_prod)


cdef int _map_ring(fp_port* p, fp_xring* r, xdp_ring_offset* o, unsigned long long pgoff,
                   uint32_t size, size_t desc_size, str name) except -1:
    r.map_len = o.desc + <size_t>size * desc_size
    cdef void* m = mmap(NULL, r.map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                        p.fd, pgoff)
    if m == MAP_FAILED:
        e = errno
        raise OSError(e, f"mmap AF_XDP ring of {name}: {os.strerror(e)}", name)
    r.map = m
    r.producer = <uint32_t*>(<uint8_t*>m + o.producer)
    r.consumer = <uint32_t*>(<uint8_t*>m + o.consumer)
    r.flags = <uint32_t*>(<uint8_t*>m + o.flags)
    r.desc = <uint8_t*>m + o.desc
    r.size = size
    r.mask = size - 1
    r.cached_prod = r.producer[0]
    r.cached_cons = r.consumer[0]
    return 0


cdef _open_afxdp(fp_port* p, str name, str mode):
    cdef bytes bname = name.encode()
    cdef xdp_mmap_offsets off
    cdef char log[4096]
    cdef int ifindex = if_nametoindex(bname)
    cdef uint32_t i
    if ifindex == 0:
        raise OSError(ENODEV, f"no such network device: {name}", name)
    p.ifindex = ifindex
    p.prog_fd = p.map_fd = p.link_fd = -1
    try:
        nq = sum(1 for q in os.listdir(f"/sys/class/net/{name}/queues") if q.startswith("rx-"))
    except OSError:
        nq = 1
    if nq > 1 and mode != "cache":
        # One socket serves queue 0; traffic on other queues would bypass
        # the switch.  Refuse rather than lose packets silently.
        raise OSError(95, f"afxdp port {name} has {nq} RX queues; only single-queue "
                          f"devices are supported (try: ethtool -L {name} combined 1)", name)
    p.fd = fp_xsk_socket()
    if p.fd < 0:
        e = errno
        raise OSError(e, f"AF_XDP socket for {name}: {os.strerror(e)}", name)
    p.umem_size = <size_t>XSK_FRAME * XSK_FRAMES
    cdef void* m = mmap(NULL, p.umem_size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
    if m == MAP_FAILED:
        e = errno
        raise OSError(e, f"UMEM for {name}: {os.strerror(e)}", name)
    p.umem = <uint8_t*>m
    if fp_xsk_setup_umem(p.fd, p.umem, p.umem_size, XSK_FRAME) < 0:
        e = errno
        raise OSError(e, f"XDP_UMEM_REG on {name}: {os.strerror(e)}", name)
    for which, what in ((XDP_UMEM_FILL_RING, "fill"), (XDP_UMEM_COMPLETION_RING, "completion"),
                        (XDP_RX_RING, "rx"), (XDP_TX_RING, "tx")):
        if fp_xsk_ring_size(p.fd, which, XSK_RING if which != XDP_UMEM_FILL_RING else XSK_FILL) < 0:
            e = errno
            raise OSError(e, f"AF_XDP {what} ring on {name}: {os.strerror(e)}", name)
    # Copy mode: one kick may send a whole burst, not 32 frames.
    fp_xsk_tx_budget(p.fd, 256)
    if fp_xsk_offsets(p.fd, &off) < 0:
        e = errno
        raise OSError(e, f"XDP_MMAP_OFFSETS on {name}: {os.strerror(e)}", name)
    _map_ring(p, &p.xrx, &off.rx, XDP_PGOFF_RX_RING, XSK_RING, sizeof(xdp_desc), name)
    _map_ring(p, &p.xtx, &off.tx, XDP_PGOFF_TX_RING, XSK_RING, sizeof(xdp_desc), name)
    _map_ring(p, &p.xfq, &off.fr, XDP_UMEM_PGOFF_FILL_RING, XSK_FILL, sizeof(uint64_t), name)
    _map_ring(p, &p.xcq, &off.cr, XDP_UMEM_PGOFF_COMPLETION_RING, XSK_RING, sizeof(uint64_t), name)
    p.xfree = <uint64_t*>malloc(XSK_FRAMES * sizeof(uint64_t))
    p.xheld = <uint64_t*>malloc(XSK_FRAMES * sizeof(uint64_t))
    if p.xfree == NULL or p.xheld == NULL:
        raise MemoryError()
    # Frames [0, XSK_FILL) go to the kernel for RX, the rest form the TX pool.
    for i in range(XSK_FILL):
        _xaddr(&p.xfq, p.xfq.cached_prod)[0] = <uint64_t>i * XSK_FRAME
        p.xfq.cached_prod += 1
    fp_store_release_u32(p.xfq.producer, p.xfq.cached_prod)
    for i in range(XSK_FILL, XSK_FRAMES):
        p.xfree[p.n_xfree] = <uint64_t>i * XSK_FRAME
        p.n_xfree += 1
    # Zero-copy where the driver supports it, else copy mode (veth).
    if fp_xsk_bind(p.fd, ifindex, 0, XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP) == 0:
        p.xsk_zerocopy = 1
    elif fp_xsk_bind(p.fd, ifindex, 0, XDP_COPY | XDP_USE_NEED_WAKEUP) < 0:
        e = errno
        raise OSError(e, f"bind AF_XDP to {name} queue 0: {os.strerror(e)}", name)
    if mode == "cache":
        # The XDP flow cache's program steers misses here through its own
        # XSKMAP (XdpCache.set_xsk with Port.xsk_fd): no program of ours.
        return
    p.map_fd = fp_xsk_map_create()
    if p.map_fd < 0:
        e = errno
        raise OSError(e, f"XSKMAP for {name}: {os.strerror(e)}", name)
    p.prog_fd = fp_xsk_prog_load(p.map_fd, log, sizeof(log))
    if p.prog_fd < 0:
        e = errno
        raise OSError(e, f"load XDP program for {name}: {os.strerror(e)}: "
                         f"{log[:200].decode(errors='replace')}", name)
    if fp_map_update_u32(p.map_fd, 0, p.fd) < 0:
        e = errno
        raise OSError(e, f"XSKMAP update for {name}: {os.strerror(e)}", name)
    # A BPF link detaches the program when this port closes (or we die).
    modes = {"native": [XDP_FLAGS_DRV_MODE], "generic": [XDP_FLAGS_SKB_MODE],
             "auto": [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]}[mode]
    e = 0
    for flags in modes:
        p.link_fd = fp_xdp_link(p.prog_fd, ifindex, flags)
        if p.link_fd >= 0:
            p.xdp_mode = 1 if flags == XDP_FLAGS_DRV_MODE else 2
            break
        e = errno
    if p.link_fd < 0:
        raise OSError(e, f"attach XDP program to {name}: {os.strerror(e)}"
                         + (" (another XDP program is attached?)" if e == 16 else ""), name)


cdef void _close_afxdp(fp_port* p) noexcept:
    if p.xrx.map != NULL:
        munmap(p.xrx.map, p.xrx.map_len)
    if p.xtx.map != NULL:
        munmap(p.xtx.map, p.xtx.map_len)
    if p.xfq.map != NULL:
        munmap(p.xfq.map, p.xfq.map_len)
    if p.xcq.map != NULL:
        munmap(p.xcq.map, p.xcq.map_len)
    if p.link_fd >= 0:
        c_close(p.link_fd)
    if p.prog_fd >= 0:
        c_close(p.prog_fd)
    if p.map_fd >= 0:
        c_close(p.map_fd)
    if p.umem != NULL:
        munmap(p.umem, p.umem_size)
    free(p.xfree)
    free(p.xheld)


cdef int fp_port_rx_burst(fp_port* p, fp_packet* pkts, int max_n,
                          fp_arena* arena) noexcept nogil:
    """Receive up to ``max_n`` packets; they stay valid until rx_done()."""
    cdef int n, m
    cdef uint64_t ticks
    cdef timespec_its now
    if p.kind == FP_PORT_AFPACKET:
        return _rx_afpacket(p, pkts, max_n, arena)
    elif p.kind == FP_PORT_TAP:
        return _rx_tap(p, pkts, max_n, arena)
    elif p.kind == FP_PORT_AFXDP:
        n = _rx_xsk(p, pkts, max_n)
        if p.pkt_fd >= 0 and n < max_n:
            m = _rx_afpacket(p, pkts + n, max_n - n, arena)
            p.rx_passed += m
            n += m
        return n
    elif p.kind == FP_PORT_DPDK:
        n = _dpdk.rx_burst(p, pkts, max_n, arena)
        clock_gettime(CLOCK_MONOTONIC, &now)
        ticks = <uint64_t>now.tv_sec * 1000000000 + now.tv_nsec
        if n:
            p.dpdk_rx_ns = ticks
        elif ticks - p.dpdk_rx_ns > DPDK_BUSY_POLL_US * 1000:
            c_read(p.fd, &ticks, 8)         # idle a while: sleep till the next tick
        return n
    return 0


cdef void fp_port_rx_done(fp_port* p) noexcept nogil:
    """Give consumed RX ring blocks back to the kernel."""
    cdef uint32_t i
    if p.kind == FP_PORT_DPDK:
        _dpdk.rx_done(p)
        return
    if p.kind == FP_PORT_AFXDP:
        _xsk_rx_done(p)
        if p.pkt_fd < 0:
            return
    elif p.kind != FP_PORT_AFPACKET:
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
    if p.kind == FP_PORT_AFXDP:
        _xsk_tx_flush(p)
        return
    if p.kind == FP_PORT_DPDK:
        _dpdk.tx_flush(p)
        return
    if p.tx_n == 0:
        return
    if p.kind == FP_PORT_AFPACKET:
        while sent < <int>p.tx_n:
            r = sendmmsg(p.fd, p.tx_msgs + sent, p.tx_n - sent, MSG_DONTWAIT)
            if r < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN or errno == ENOBUFS:
                    p.stats.tx_dropped += p.tx_n - sent
                    break
                # This one message is bad (e.g. EMSGSIZE): skip it, go on.
                p.stats.tx_errors += 1
                p.stats.tx_dropped += 1
                sent += 1
                continue
            for i in range(<uint32_t>sent, <uint32_t>(sent + r)):
                p.stats.tx_packets += 1
                p.stats.tx_bytes += p.tx_iov[2 * i + 1].iov_len
            sent += r
    else:
        for i in range(p.tx_n):
            w = c_write(p.fd, p.tx_iov[2 * i + 1].iov_base, p.tx_iov[2 * i + 1].iov_len)
            if w < 0:
                if errno == EINTR:
                    w = c_write(p.fd, p.tx_iov[2 * i + 1].iov_base, p.tx_iov[2 * i + 1].iov_len)
            if w < 0:
                p.stats.tx_dropped += 1
            else:
                p.stats.tx_packets += 1
                p.stats.tx_bytes += p.tx_iov[2 * i + 1].iov_len
    p.tx_n = 0
    p.tx_used = 0


cdef void fp_port_tx(fp_port* p, const uint8_t* data, uint32_t length) noexcept nogil:
    """Queue a copy of one frame for transmission (flushed by tx_flush)."""
    cdef size_t need = (length + 63) & ~(<size_t>63)
    if p.kind == FP_PORT_AFXDP:
        _xsk_tx(p, data, length)
        return
    if p.kind == FP_PORT_DPDK:
        _dpdk.tx(p, data, length)
        return
    if length > FP_TXBUF:
        p.stats.tx_dropped += 1
        return
    if p.tx_n >= FP_TXQ or p.tx_used + need > FP_TXBUF:
        fp_port_tx_flush(p)
    cdef uint8_t* dst = p.tx_buf + p.tx_used
    memcpy(dst, data, length)
    p.tx_iov[2 * p.tx_n + 1].iov_base = dst
    p.tx_iov[2 * p.tx_n + 1].iov_len = length
    if p.vnet:
        memset(p.tx_vnet + 16 * p.tx_n, 0, sizeof(virtio_net_hdr))
    p.tx_n += 1
    p.tx_used += need


cdef void fp_port_tx_gso(fp_port* p, fp_packet* pk) noexcept nogil:
    cdef size_t need = (pk.len + 63) & ~(<size_t>63)
    cdef virtio_net_hdr* vh
    if pk.len > FP_TXBUF or not p.vnet:
        p.stats.tx_dropped += 1
        return
    if p.tx_n >= FP_TXQ or p.tx_used + need > FP_TXBUF:
        fp_port_tx_flush(p)
    cdef uint8_t* dst = p.tx_buf + p.tx_used
    memcpy(dst, pk.data, pk.len)
    p.tx_iov[2 * p.tx_n + 1].iov_base = dst
    p.tx_iov[2 * p.tx_n + 1].iov_len = pk.len
    vh = <virtio_net_hdr*>(p.tx_vnet + 16 * p.tx_n)
    vh.flags = pk.vnet_flags
    vh.gso_type = pk.gso_type
    vh.hdr_len = pk.gso_hdr_len
    vh.gso_size = pk.gso_size
    vh.csum_start = pk.csum_start
    vh.csum_offset = pk.csum_offset
    p.tx_n += 1
    p.tx_used += need


cdef fp_port* _alloc_port() except NULL:
    cdef fp_port* p = <fp_port*>calloc(1, sizeof(fp_port))
    if p == NULL:
        raise MemoryError()
    p.fd = -1
    p.prog_fd = p.map_fd = p.link_fd = -1
    p.pkt_fd = -1
    p.tx_msgs = <mmsghdr*>calloc(FP_TXQ, sizeof(mmsghdr))
    p.tx_iov = <iovec*>calloc(2 * FP_TXQ, sizeof(iovec))
    p.tx_buf = <uint8_t*>malloc(FP_TXBUF)
    p.tx_vnet = <uint8_t*>calloc(FP_TXQ, 16)
    if p.tx_msgs == NULL or p.tx_iov == NULL or p.tx_buf == NULL or p.tx_vnet == NULL:
        _free_port(p)
        raise MemoryError()
    cdef int i
    for i in range(FP_TXQ):
        # [2i] = virtio_net_hdr (AF_PACKET with PACKET_VNET_HDR), [2i+1] = frame
        p.tx_iov[2 * i].iov_base = p.tx_vnet + 16 * i
        p.tx_iov[2 * i].iov_len = sizeof(virtio_net_hdr)
        p.tx_msgs[i].msg_hdr.msg_iov = &p.tx_iov[2 * i + 1]
        p.tx_msgs[i].msg_hdr.msg_iovlen = 1
    return p


cdef void _free_port(fp_port* p) noexcept:
    if p == NULL:
        return
    if p.kind == FP_PORT_AFXDP:
        _close_afxdp(p)
    if p.dpdk != NULL:
        _dpdk.close(p)
    if p.pkt_fd >= 0:
        c_close(p.pkt_fd)
    if p.ring != NULL:
        munmap(p.ring, p.ring_size)
    if p.fd >= 0:
        c_close(p.fd)
    free(p.tx_msgs)
    free(p.tx_iov)
    free(p.tx_buf)
    free(p.tx_vnet)
    free(p)


cdef int _sockopt(int fd, int level, int name, const void* val, socklen_t n, str ifname, str what) except -1:
    if setsockopt(fd, level, name, val, n) < 0:
        e = errno
        raise OSError(e, f"{what} on {ifname}: {os.strerror(e)}", ifname)
    return 0


cdef _open_afpacket(fp_port* p, str name):
    cdef bytes bname = name.encode()
    cdef int i
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
    # virtio_net_hdr in front of every frame: GSO super-packets (TSO on the
    # peer) are segmented here, CHECKSUM_PARTIAL is completed here; we send
    # with an all-zero header (no offload requested).
    _sockopt(p.fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one), name, "PACKET_VNET_HDR")
    p.vnet = 1
    for i in range(FP_TXQ):
        p.tx_msgs[i].msg_hdr.msg_iov = &p.tx_iov[2 * i]
        p.tx_msgs[i].msg_hdr.msg_iovlen = 2
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


cdef _open_dpdk(fp_port* p, str name, str devargs):
    global _dpdk
    cdef itimerspec its
    try:
        from fastpath.io import dpdk
    except ImportError as e:
        raise OSError(95, f"dpdk port {name}: this build of pyvswitch has no DPDK support "
                          f"(pkg-config found no libdpdk when it was built: install "
                          f"libdpdk-dev and rebuild) [{e}]", name) from None
    _dpdk = <fp_dpdk_ops*>PyCapsule_GetPointer(dpdk.OPS, dpdk.OPS_NAME)
    if not devargs:
        raise OSError(22, f"'{name}' is missing 'options:dpdk-devargs'", name)
    p.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
    if p.fd < 0:
        e = errno
        raise OSError(e, f"timerfd for {name}: {os.strerror(e)}", name)
    memset(&its, 0, sizeof(its))
    its.it_interval.tv_nsec = its.it_value.tv_nsec = DPDK_IDLE_POLL_US * 1000
    timerfd_settime(p.fd, 0, &its, NULL)
    p.kind = FP_PORT_DPDK
    dpdk.attach(<size_t>p, name, devargs)


cdef class Port:
    """One open datapath port (owns its fd, ring and TX staging)."""

    def __cinit__(self, str name, str kind, uint32_t dp_port=0, devargs=None):
        self.p = NULL
        self.name = name
        self.kind = kind
        self.devargs = devargs
        cdef fp_port* p = _alloc_port()
        p.dp_port = dp_port
        try:
            if kind in ("afpacket", "system"):
                p.kind = FP_PORT_AFPACKET
                _open_afpacket(p, name)
            elif kind in ("tap", "internal"):
                p.kind = FP_PORT_TAP
                _open_tap(p, name)
            elif kind == "afxdp-cache":
                # Behind the XDP flow cache: AF_XDP for what its program
                # redirects, AF_PACKET for what it passes up (XDP_PASS).
                _open_afpacket(p, name)
                p.pkt_fd, p.fd = p.fd, -1
                p.vnet = 1
                p.kind = FP_PORT_AFXDP
                _open_afxdp(p, name, "cache")
            elif kind in ("afxdp", "afxdp-native", "afxdp-generic"):
                p.kind = FP_PORT_AFXDP
                _open_afxdp(p, name, {"afxdp": "auto", "afxdp-native": "native",
                                      "afxdp-generic": "generic"}[kind])
            elif kind == "dpdk":
                _open_dpdk(p, name, devargs)
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
    def xsk_fd(self):
        """AF_XDP ports: the XSK socket (for an XSKMAP), else -1."""
        return self.p.fd if self.p != NULL and self.p.kind == FP_PORT_AFXDP else -1

    @property
    def fds(self):
        """Every fd to poll for input."""
        if self.p == NULL:
            return ()
        if self.p.pkt_fd < 0:
            return (self.p.fd,)
        return (self.p.fd, self.p.pkt_fd)

    @property
    def ifindex(self):
        return 0 if self.p == NULL else self.p.ifindex

    def check_error(self):
        """Called when poll() reports POLLERR/POLLHUP/POLLNVAL: clear the
        socket error; if the device is gone (or replaced), remember why in
        ``self.error`` and return False: stop polling this port, the daemon
        should del_port it (and may add it again)."""
        cdef int err = 0
        cdef socklen_t n = sizeof(err)
        if self.p == NULL:
            return False
        if self.p.kind == FP_PORT_TAP or self.p.kind == FP_PORT_DPDK:
            return True                 # no Linux device by this name behind the fd
        getsockopt(self.p.fd, 1, 4, &err, &n)           # SOL_SOCKET, SO_ERROR
        if err:
            self.p.stats.rx_errors += 1
        try:
            if socket_if_nametoindex(self.name) != self.p.ifindex:
                self.error = f"network device {self.name} was replaced"
                return False
        except OSError:
            self.error = f"network device {self.name} disappeared"
            return False
        return True

    @property
    def xsk_zerocopy(self):
        """AF_XDP ports: True when bound in zero-copy mode."""
        return self.p != NULL and self.p.kind == FP_PORT_AFXDP and self.p.xsk_zerocopy == 1

    @property
    def xdp_mode(self):
        """AF_XDP ports: "native" or "generic" XDP attachment; else None."""
        if self.p == NULL or self.p.kind != FP_PORT_AFXDP:
            return None
        return "native" if self.p.xdp_mode == 1 else "generic"

    def kernel_rx_dropped(self):
        """Frames the kernel dropped before we saw them (ring full etc.)."""
        cdef unsigned int st3[3]
        cdef uint64_t xs[6]
        cdef socklen_t n
        if self.p == NULL:
            return 0
        if self.p.kind == FP_PORT_AFPACKET:
            n = sizeof(st3)
            if getsockopt(self.p.fd, SOL_PACKET, PACKET_STATISTICS, st3, &n) == 0:
                self.p.kernel_rx_dropped += st3[1]          # tp_drops; reset by reading
            return self.p.kernel_rx_dropped
        if self.p.kind == FP_PORT_AFXDP:
            memset(xs, 0, sizeof(xs))
            n = sizeof(xs)
            if getsockopt(self.p.fd, 283, 7, xs, &n) == 0:   # SOL_XDP, XDP_STATISTICS
                return xs[0] + xs[1] + xs[3]                  # dropped, invalid, ring full
        if self.p.kind == FP_PORT_DPDK:
            return _dpdk.rx_missed(self.p)
        return 0

    def stats(self):
        if self.p == NULL:
            return {}
        kd = self.kernel_rx_dropped()
        s = self.p.stats
        d = {"rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
             "rx_dropped": s.rx_dropped + kd, "rx_errors": s.rx_errors,
             "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes,
             "tx_dropped": s.tx_dropped, "tx_errors": s.tx_errors}
        if self.p.pkt_fd >= 0:
            # afxdp-cache: of rx_packets, those XDP passed up (not via the XSK)
            d["rx_xdp_passed"] = self.p.rx_passed
        return d

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
