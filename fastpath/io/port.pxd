# Port drivers: AF_PACKET (TPACKET_V3 RX ring + sendmmsg TX), TAP, AF_XDP, DPDK.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from posix.uio cimport iovec
from fastpath.fpcore cimport fp_packet, fp_arena

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    cdef struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

cdef enum:
    FP_PORT_AFPACKET = 1
    FP_PORT_TAP = 2
    FP_PORT_AFXDP = 3
    FP_PORT_DPDK = 4              # an ethdev of fastpath.io.dpdk (p.dpdk)
    FP_TXQ = 256                # max packets queued per port before a flush
    FP_RX_CAP = 256             # rx_burst may fill this many (GSO segments)
    FP_TXBUF = 1 << 20          # bytes of TX staging per port

ctypedef struct fp_port_stats:
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t rx_dropped
    uint64_t rx_errors
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t tx_dropped
    uint64_t tx_errors

ctypedef struct fp_xring:           # one AF_XDP ring (rx, tx, fill, completion)
    uint32_t* producer
    uint32_t* consumer
    uint32_t* flags
    void* desc
    uint32_t mask
    uint32_t size
    uint32_t cached_prod
    uint32_t cached_cons
    void* map
    size_t map_len

ctypedef struct fp_port:
    int kind
    int fd
    uint32_t dp_port
    int ifindex
    int vnet                        # PACKET_VNET_HDR on (AF_PACKET)
    # AF_PACKET TPACKET_V3 RX ring
    uint8_t* ring
    size_t ring_size
    uint32_t block_size
    uint32_t block_nr
    uint32_t cur_block          # block being read (or next to read)
    int reading                 # cur_block is open for reading
    uint32_t pkt_left
    uint8_t* next_pkt
    uint32_t release_start      # first block consumed but not yet returned
    uint32_t n_release
    uint8_t* tx_vnet                # FP_TXQ virtio_net_hdrs, 16 bytes apart
    # TX staging (copies; sendmmsg or write per flush)
    mmsghdr* tx_msgs
    iovec* tx_iov
    uint8_t* tx_buf
    size_t tx_used
    uint32_t tx_n
    fp_port_stats stats
    uint64_t kernel_rx_dropped      # AF_PACKET ring drops (PACKET_STATISTICS, accumulated)
    # AF_XDP (copy or zero-copy): UMEM, four rings, frame pool, XDP program
    uint8_t* umem
    size_t umem_size
    fp_xring xrx
    fp_xring xtx
    fp_xring xfq
    fp_xring xcq
    uint64_t* xfree                 # free UMEM frame addresses (TX pool)
    uint32_t n_xfree
    uint64_t* xheld                 # RX frames to give back to the fill ring
    uint32_t n_xheld
    uint32_t tx_inflight            # submitted to TX, not yet completed
    int prog_fd
    int map_fd
    int link_fd
    int xdp_mode                    # 1 native (driver), 2 generic (skb)
    int xsk_zerocopy                # bound with XDP_ZEROCOPY
    # AF_XDP behind the XDP flow cache (kind "afxdp-cache"): no program of
    # our own; an AF_PACKET socket (the RX ring above) takes what XDP passes
    # up instead (frames too big for a UMEM frame, queues without a socket).
    int pkt_fd
    uint64_t rx_passed              # frames received on pkt_fd (XDP_PASS), not the XSK
    # DPDK (kind "dpdk"): the ethdev state, owned by fastpath.io.dpdk; fd is
    # then a periodic timerfd, the only thing the datapath can sleep on.
    void* dpdk
    uint64_t dpdk_rx_ns             # CLOCK_MONOTONIC of its last received packet

# What fastpath.io.dpdk (built only when pkg-config finds libdpdk) lends the
# port drivers through a capsule, so this module never links DPDK itself.
ctypedef struct fp_dpdk_ops:
    int (*rx_burst)(fp_port* p, fp_packet* pkts, int max_n, fp_arena* arena) noexcept nogil
    void (*rx_done)(fp_port* p) noexcept nogil
    void (*tx)(fp_port* p, const uint8_t* data, uint32_t length) noexcept nogil
    void (*tx_flush)(fp_port* p) noexcept nogil
    uint64_t (*rx_missed)(fp_port* p) noexcept nogil    # dropped by the device/PMD
    void (*close)(fp_port* p) noexcept nogil             # stop, close, detach the device

# ``pkts`` must hold FP_RX_CAP packets: a GSO super-packet counts as one
# against ``max_n`` but may be segmented into many.
cdef int fp_port_rx_burst(fp_port* p, fp_packet* pkts, int max_n,
                          fp_arena* arena) noexcept nogil
cdef void fp_port_rx_done(fp_port* p) noexcept nogil
cdef void fp_port_tx(fp_port* p, const uint8_t* data, uint32_t length) noexcept nogil
cdef void fp_port_tx_flush(fp_port* p) noexcept nogil
# Queue a GSO super-packet with its offload header (AF_PACKET ports with
# vnet only: check p.vnet first).
cdef void fp_port_tx_gso(fp_port* p, fp_packet* pk) noexcept nogil
# Split a GSO super-packet into wire-size segments (complete checksums).
cdef int fp_gso_segment(fp_packet* src, fp_packet* out, int room, fp_arena* arena) noexcept nogil

cdef class Port:
    cdef fp_port* p
    cdef readonly str name
    cdef readonly str kind
    cdef readonly object peer       # "dummy" ports: the test's end of the socketpair
    cdef readonly object error      # None, or why the port stopped working (str)
    cdef readonly object devargs    # "dpdk" ports: the DPDK device arguments
    cpdef close(self)
