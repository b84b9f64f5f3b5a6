# Core C-level types shared by the fast path modules (no Python objects).
#
# A packet in flight is an ``fp_packet``: a pointer into either an RX ring
# (read-only until copied) or the per-poll scratch arena (writable, with
# headroom for pushes).  The arena is reset once per poll iteration, so
# nothing here is ever freed per packet.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    FP_HEADROOM = 128          # bytes kept free before data in owned buffers
    FP_MAX_FRAME = 65536 + 256

# fp_packet.flags
cdef enum:
    FP_PKT_OWNED = 1           # data lives in the scratch arena (writable)
    FP_PKT_CSUM_PARTIAL = 2    # L4 checksum not yet complete (CHECKSUM_PARTIAL)
    FP_PKT_DROP = 4            # malformed or explicitly dropped
    FP_PKT_GSO = 8             # a TSO/USO super-packet (gso_* fields valid)

ctypedef struct fp_packet:
    uint8_t* data
    uint32_t len
    uint32_t in_port           # dp_port the packet came from
    uint32_t flags
    uint8_t* buf               # start of owned buffer (NULL if in a ring)
    uint32_t bufsize           # capacity from buf
    # Header offsets found by the key extractor (0xffff = absent).
    uint16_t l2_5_ofs          # first VLAN/MPLS label or the ethertype
    uint16_t l3_ofs
    uint16_t l4_ofs
    uint8_t l3_kind            # 0 none, 4 IPv4, 6 IPv6, 1 ARP
    uint8_t l4_proto           # IP protocol (TCP 6, UDP 17, ...)
    uint8_t depth              # recirculation depth
    # GSO super-packets from AF_PACKET (virtio_net_hdr), passed through to
    # AF_PACKET outputs as such or segmented in software otherwise.
    uint8_t gso_type
    uint8_t vnet_flags
    uint16_t gso_size
    uint16_t gso_hdr_len
    uint16_t csum_start
    uint16_t csum_offset

ctypedef struct fp_arena:
    uint8_t* base
    size_t size
    size_t used

cdef inline uint8_t* fp_arena_alloc(fp_arena* a, size_t n) noexcept nogil:
    cdef size_t need = (n + 63) & ~(<size_t>63)
    if a.used + need > a.size:
        return NULL
    cdef uint8_t* p = a.base + a.used
    a.used += need
    return p

from libc.string cimport memcpy

cdef inline int fp_pkt_own(fp_packet* p, fp_arena* a) noexcept nogil:
    """Make ``p`` writable (copy into the arena, with headroom); 0 or -1."""
    if p.flags & FP_PKT_OWNED:
        return 0
    cdef uint32_t cap = FP_HEADROOM + p.len + 64
    cdef uint8_t* b = fp_arena_alloc(a, cap)
    if b == NULL:
        return -1
    memcpy(b + FP_HEADROOM, p.data, p.len)
    p.buf = b
    p.bufsize = cap
    p.data = b + FP_HEADROOM
    p.flags |= FP_PKT_OWNED
    return 0

cdef inline int fp_pkt_push(fp_packet* p, fp_arena* a, uint32_t n) noexcept nogil:
    """Grow the packet by ``n`` bytes at the front (data moves back)."""
    if fp_pkt_own(p, a) < 0:
        return -1
    if <size_t>(p.data - p.buf) < n:
        return -1
    p.data -= n
    p.len += n
    return 0


# Big-endian loads and stores (packet headers and the flow key are network order).
cdef inline uint16_t rd16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline void wr16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v

cdef inline void wr32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v

cdef inline uint32_t rd32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline uint64_t fp_sum16(const uint8_t* b, uint32_t n) noexcept nogil:
    """Big-endian 16-bit words of ``b`` summed (the Internet checksum before folding)."""
    cdef uint64_t s = 0
    cdef uint32_t i = 0
    while i + 1 < n:
        s += rd16(b + i)
        i += 2
    if n & 1:
        s += <uint32_t>b[n - 1] << 8
    return s


# A spinlock for the few structures several poll-mode threads share (a
# port's TX staging, a meter's bucket): critical sections are a few hundred
# nanoseconds (a sendmmsg at most), so spinning beats a futex; a holder that
# was preempted is waited for with sched_yield rather than burnt cycles.
cdef extern from *:
    """
    #include <sched.h>
    static inline void fp_spin_lock(int *l) {
        int spins = 0;
        while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
            while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
                if (++spins > 1000) { sched_yield(); spins = 0; }
                else __builtin_ia32_pause();
            }
        }
    }
    static inline void fp_spin_unlock(int *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }
    """
    void fp_spin_lock(int* l) nogil
    void fp_spin_unlock(int* l) nogil
