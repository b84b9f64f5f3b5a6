# cython: language_level=3
"""Datapath actions, compiled once per megaflow and executed per packet.

``compile_actions(actions)`` turns a tuple of ``slowpath.dpactions`` objects
into a flat C block of 8-byte-aligned ``fp_act`` records; ``fp_execute`` runs
such a block on one packet with no Python objects.  Header rewrites
(``SetMasked``) update the packet and its flow key together and fix the IPv4
header checksum and the TCP/UDP/ICMP(v6)/SCTP checksums incrementally (SCTP:
CRC32c recomputed).  Outputs are queued on the port (copies), flushed once
per poll.  Several threads transmit (the PMDs and the main thread, which
executes upcalled packets and packet-outs), so they queue and flush under the
port's TX lock (``fp_dp_tx``); meters are shared by all of them, each behind
its own spinlock.  Userspace/Recirc/slow actions leave through the datapath's upcall
and recirculation queues.  GENEVE native tunnelling runs here too:
``tnl_push`` (a prebuilt outer header; lengths, checksums and the UDP source
port fixed per packet) and ``tnl_pop`` (decapsulation, tunnel port choice,
TLV options into tun_metadata, recirculation; malformed frames counted per
reason).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset, memcmp
from libc.stdlib cimport malloc, free
import struct as _struct

from fastpath.fpcore cimport (fp_packet, fp_arena, fp_arena_alloc, fp_pkt_own, fp_pkt_push,
                              fp_sum16, rd16, rd32, wr16, wr32,
                              FP_PKT_OWNED, FP_PKT_CSUM_PARTIAL, FP_PKT_GSO, FP_HEADROOM)
from fastpath._fields cimport *
from fastpath.io.port cimport fp_port
from fastpath.parse cimport fp_parse

cdef enum:
    NO_OFS = 0xffff
    ACT_HDR = 16
    META_END = FK_OFS_DL_DST       # key bytes before this are metadata




# ---------------------------------------------------------------- checksums

cdef inline uint32_t _sum_words(const uint8_t* b, uint32_t start, uint32_t end) noexcept nogil:
    cdef uint32_t s = 0, i = start
    while i < end:
        s += rd16(b + i)
        i += 2
    return s

cdef inline uint16_t _fold(uint64_t s) noexcept nogil:
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return <uint16_t>s

cdef inline void _csum_adjust(uint8_t* field, uint64_t diff, int udp) noexcept nogil:
    """RFC 1624: HC' = ~(~HC + ~m + m'); ``diff`` = sum(~m) + sum(m')."""
    cdef uint16_t old = rd16(field)
    if udp and old == 0:
        return                                   # UDP without checksum
    cdef uint16_t new = ~_fold((<uint16_t>~old) + diff)
    if udp and new == 0:
        new = 0xffff
    wr16(field, new)

cdef void _crc_table_init(uint32_t* table, uint32_t poly) noexcept:
    """A byte-wise table for the reflected CRC of ``poly``."""
    cdef uint32_t i, j, c
    for i in range(256):
        c = i
        for j in range(8):
            c = (c >> 1) ^ (poly if (c & 1) else 0)
        table[i] = c


cdef uint32_t _crc32c_table[256]       # SCTP checksums (CRC32C)
_crc_table_init(_crc32c_table, 0x82F63B78)

cdef uint32_t _crc32c(const uint8_t* b, uint32_t n) noexcept nogil:
    cdef uint32_t c = 0xffffffff
    cdef uint32_t i
    for i in range(n):
        c = _crc32c_table[(c ^ b[i]) & 0xff] ^ (c >> 8)
    return ~c


cdef uint32_t _l4_len(fp_packet* p) noexcept nogil:
    """Bytes from the L4 header to the end of the IP payload (0 = none)."""
    cdef uint32_t end
    if p.l4_ofs == NO_OFS or p.l3_ofs == NO_OFS:
        return 0
    if p.l3_kind == 4:
        end = p.l3_ofs + rd16(p.data + p.l3_ofs + 2)
    elif p.l3_kind == 6:
        end = p.l3_ofs + 40 + rd16(p.data + p.l3_ofs + 4)
    else:
        return 0
    if end > p.len or end < p.l4_ofs:
        return 0
    return end - p.l4_ofs

cdef int _csum_ofs(uint8_t proto) noexcept nogil:
    if proto == 6:
        return 16
    if proto == 17:
        return 6
    if proto == 1 or proto == 58:
        return 2
    return -1

cdef void _sctp_fix(fp_packet* p) noexcept nogil:
    cdef uint32_t n = _l4_len(p)
    cdef uint8_t* h
    cdef uint32_t c
    if n < 12:
        return
    h = p.data + p.l4_ofs
    memset(h + 8, 0, 4)
    c = _crc32c(h, n)
    h[8] = <uint8_t>c          # CRC32c is stored little-endian
    h[9] = <uint8_t>(c >> 8)
    h[10] = <uint8_t>(c >> 16)
    h[11] = <uint8_t>(c >> 24)


cdef int fp_csum_complete(fp_packet* p, fp_arena* a) noexcept nogil:
    """Finish a CHECKSUM_PARTIAL TCP/UDP checksum in software."""
    cdef uint32_t n = _l4_len(p)
    cdef int co
    cdef uint64_t s
    cdef uint8_t* l3
    cdef uint16_t c
    p.flags &= ~FP_PKT_CSUM_PARTIAL
    if n == 0 or (p.l4_proto != 6 and p.l4_proto != 17):
        return 0
    co = _csum_ofs(p.l4_proto)
    if <uint32_t>co + 2 > n:
        return 0
    if fp_pkt_own(p, a) < 0:
        return -1
    l3 = p.data + p.l3_ofs
    if p.l3_kind == 4:
        s = fp_sum16(l3 + 12, 8)
    else:
        s = fp_sum16(l3 + 8, 32)
    s += p.l4_proto + n
    wr16(p.data + p.l4_ofs + co, 0)
    s += fp_sum16(p.data + p.l4_ofs, n)
    c = ~_fold(s)
    if p.l4_proto == 17 and c == 0:
        c = 0xffff
    wr16(p.data + p.l4_ofs + co, c)
    return 0


# ---------------------------------------------------------------- SET

cdef inline void _wmask(uint8_t* dst, const uint8_t* v, const uint8_t* m, uint32_t n) noexcept nogil:
    cdef uint32_t i
    for i in range(n):
        dst[i] = (dst[i] & ~m[i]) | (v[i] & m[i])

cdef uint64_t _write_region(uint8_t* base, uint32_t ofs, const uint8_t* v, const uint8_t* m,
                            uint32_t n) noexcept nogil:
    """Masked write of n bytes at base+ofs; returns the checksum diff over
    the covering 16-bit words (aligned to base)."""
    cdef uint32_t start = ofs & ~(<uint32_t>1)
    cdef uint32_t end = (ofs + n + 1) & ~(<uint32_t>1)
    cdef uint64_t diff = (end - start) // 2 * 0xffff - _sum_words(base, start, end)
    _wmask(base + ofs, v, m, n)
    return diff + _sum_words(base, start, end)


cdef inline uint32_t _eth_payload(fp_packet* p) noexcept nogil:
    """Offset of the ethertype that follows the VLAN tags."""
    cdef uint32_t o = 12
    cdef uint16_t t
    while o + 4 <= p.len:
        t = rd16(p.data + o)
        if t != 0x8100 and t != 0x88a8:
            break
        o += 4
    return o


cdef void _l4_csum_adjust(fp_packet* p, uint64_t diff) noexcept nogil:
    cdef int co = _csum_ofs(p.l4_proto)
    cdef uint32_t n = _l4_len(p)
    if co < 0 or n < <uint32_t>co + 2:
        return
    if p.l3_kind == 4 and p.l4_proto == 58:
        return
    if p.l3_kind == 6 and p.l4_proto == 1:
        return
    if p.l3_kind == 4 and p.l4_proto == 1:
        return                                   # ICMPv4 has no pseudo-header
    _csum_adjust(p.data + p.l4_ofs + co, diff, p.l4_proto == 17 and p.l3_kind == 4)


cdef int _set_packet(fp_packet* p, uint32_t kofs, uint32_t size, const uint8_t* v,
                     const uint8_t* m) noexcept nogil:
    """Apply a masked set of key member at ``kofs`` to the packet headers."""
    cdef uint8_t* d = p.data
    cdef uint8_t* l3
    cdef uint8_t* l4
    cdef uint64_t diff
    cdef uint32_t o, n4, old, new, vv, mm
    cdef uint8_t mb[4]
    cdef int co
    if kofs == FK_OFS_DL_DST:
        _wmask(d, v, m, 6)
    elif kofs == FK_OFS_DL_SRC:
        _wmask(d + 6, v, m, 6)
    elif kofs == FK_OFS_VLAN0_TCI:
        if p.len >= 18 and (rd16(d + 12) == 0x8100 or rd16(d + 12) == 0x88a8):
            mb[0] = m[0] & ~(FLOW_VLAN_CFI >> 8)
            mb[1] = m[1]
            _wmask(d + 14, v, mb, 2)
    elif kofs == FK_OFS_MPLS_LSE:
        o = _eth_payload(p)
        if o + 6 <= p.len and (rd16(d + o) == 0x8847 or rd16(d + o) == 0x8848):
            _wmask(d + o + 2, v, m, 4)
    elif p.l3_ofs == NO_OFS:
        return 0
    elif p.l3_kind == 4:
        l3 = d + p.l3_ofs
        if kofs == FK_OFS_NW_SRC or kofs == FK_OFS_NW_DST:
            diff = _write_region(l3, 12 if kofs == FK_OFS_NW_SRC else 16, v, m, 4)
            _csum_adjust(l3 + 10, diff, 0)
            if p.l4_proto == 132:
                return 0
            _l4_csum_adjust(p, diff)
        elif kofs == FK_OFS_NW_TOS:
            _csum_adjust(l3 + 10, _write_region(l3, 1, v, m, 1), 0)
        elif kofs == FK_OFS_NW_TTL:
            _csum_adjust(l3 + 10, _write_region(l3, 8, v, m, 1), 0)
        else:
            return _set_l4(p, kofs, v, m)
    elif p.l3_kind == 6:
        l3 = d + p.l3_ofs
        if kofs == FK_OFS_IPV6_SRC or kofs == FK_OFS_IPV6_DST:
            diff = _write_region(l3, 8 if kofs == FK_OFS_IPV6_SRC else 24, v, m, 16)
            if p.l4_proto != 132:
                _l4_csum_adjust(p, diff)
        elif kofs == FK_OFS_NW_TTL:
            _wmask(l3 + 7, v, m, 1)
        elif kofs == FK_OFS_NW_TOS:
            old = ((l3[0] & 0x0f) << 4) | (l3[1] >> 4)
            new = (old & ~m[0]) | (v[0] & m[0])
            l3[0] = (l3[0] & 0xf0) | (new >> 4)
            l3[1] = (l3[1] & 0x0f) | ((new & 0x0f) << 4)
        elif kofs == FK_OFS_IPV6_LABEL:
            vv = rd32(v) & 0xfffff
            mm = rd32(m) & 0xfffff
            old = rd32(l3)
            wr32(l3, (old & ~mm) | (vv & mm))
        elif kofs == FK_OFS_ARP_SHA or kofs == FK_OFS_ARP_THA:
            _set_nd_lla(p, 1 if kofs == FK_OFS_ARP_SHA else 2, v, m)
        else:
            return _set_l4(p, kofs, v, m)
    elif p.l3_kind == 1:
        l3 = d + p.l3_ofs
        if kofs == FK_OFS_NW_SRC:
            _wmask(l3 + 14, v, m, 4)
        elif kofs == FK_OFS_NW_DST:
            _wmask(l3 + 24, v, m, 4)
        elif kofs == FK_OFS_ARP_SHA:
            _wmask(l3 + 8, v, m, 6)
        elif kofs == FK_OFS_ARP_THA:
            _wmask(l3 + 18, v, m, 6)
        elif kofs == FK_OFS_NW_PROTO:
            if v[0] & m[0]:
                l3[6] = 0
            _wmask(l3 + 7, v, m, 1)
    return 0


cdef void _set_nd_lla(fp_packet* p, uint8_t kind, const uint8_t* v, const uint8_t* m) noexcept nogil:
    """nd_sll / nd_tll (the key's arp_sha / arp_tha): the first link-layer
    address option of ``kind`` (1 source, 2 target) of an NS / NA, as
    ``slowpath.odp_execute`` finds it (options up to the end of the frame);
    no such option, nothing changes.  OVN's ND responder sets nd_tll."""
    cdef uint8_t* l4
    cdef uint32_t at, end, olen
    if p.l4_proto != 58 or p.l4_ofs == NO_OFS or <uint32_t>p.l4_ofs + 24 > p.len:
        return
    l4 = p.data + p.l4_ofs
    if l4[0] != 135 and l4[0] != 136:
        return
    end = p.len - p.l4_ofs
    at = 24
    while at + 8 <= end:
        olen = l4[at + 1]
        if olen == 0:
            return
        if l4[at] == kind and olen == 1:
            _csum_adjust(l4 + 2, _write_region(l4, at + 2, v, m, 6), 0)
            return
        at += 8 * olen


cdef int _set_l4(fp_packet* p, uint32_t kofs, const uint8_t* v, const uint8_t* m) noexcept nogil:
    cdef uint32_t n = _l4_len(p)
    cdef uint8_t* l4
    cdef uint64_t diff
    cdef int co
    cdef uint8_t proto = p.l4_proto
    if n == 0:
        return 0
    l4 = p.data + p.l4_ofs
    if kofs == FK_OFS_TP_SRC or kofs == FK_OFS_TP_DST:
        if proto == 6 or proto == 17 or proto == 132:
            if n < 8:
                return 0
            diff = _write_region(l4, 0 if kofs == FK_OFS_TP_SRC else 2, v, m, 2)
            if proto == 132:
                _sctp_fix(p)
            else:
                co = _csum_ofs(proto)
                if n >= <uint32_t>co + 2:
                    _csum_adjust(l4 + co, diff, proto == 17 and p.l3_kind == 4)
        elif (proto == 1 and p.l3_kind == 4) or (proto == 58 and p.l3_kind == 6):
            if n < 4:
                return 0
            diff = _write_region(l4, 0 if kofs == FK_OFS_TP_SRC else 1, v + 1, m + 1, 1)
            _csum_adjust(l4 + 2, diff, 0)
    elif kofs == FK_OFS_ND_TARGET:
        if proto == 58 and n >= 24 and (l4[0] == 135 or l4[0] == 136):
            _csum_adjust(l4 + 2, _write_region(l4, 8, v, m, 16), 0)
    return 0


# ---------------------------------------------------------------- VLAN/MPLS

cdef inline void _shift_ofs(fp_packet* p, int delta) noexcept nogil:
    if p.l3_ofs != NO_OFS:
        p.l3_ofs += delta
    if p.l4_ofs != NO_OFS:
        p.l4_ofs += delta

cdef void _refresh_l2(fp_packet* p, uint64_t* key) noexcept nogil:
    """VLAN changes shift headers: re-derive header offsets and the key's
    tags and dl_type from the packet (other key members stay)."""
    cdef uint64_t fresh[KEY_WORDS]
    cdef uint8_t* k = <uint8_t*>key
    cdef uint8_t* f = <uint8_t*>fresh
    fp_parse(p, f)
    memcpy(k + FK_OFS_DL_TYPE, f + FK_OFS_DL_TYPE, 2)
    memcpy(k + FK_OFS_VLAN0_TPID, f + FK_OFS_VLAN0_TPID, 8)   # vlan0/vlan1 tpid+tci


cdef int _push_vlan(fp_dp* dp, fp_packet* p, uint64_t* key, uint16_t tpid, uint16_t tci) noexcept nogil:
    cdef uint8_t* k = <uint8_t*>key
    if p.len < 14 or fp_pkt_push(p, &dp.arena, 4) < 0:
        return -1
    memmove(p.data, p.data + 4, 12)
    wr16(p.data + 12, tpid)
    wr16(p.data + 14, tci & ~FLOW_VLAN_CFI)
    _refresh_l2(p, key)
    return 0

cdef int _pop_vlan(fp_dp* dp, fp_packet* p, uint64_t* key) noexcept nogil:
    cdef uint8_t* k = <uint8_t*>key
    cdef uint16_t t
    if p.len < 18:
        return 0
    t = rd16(p.data + 12)
    if t != 0x8100 and t != 0x88a8:
        return 0
    if fp_pkt_own(p, &dp.arena) < 0:
        return -1
    memmove(p.data + 4, p.data, 12)
    p.data += 4
    p.len -= 4
    _refresh_l2(p, key)
    return 0

cdef void _reparse(fp_packet* p, uint64_t* key) noexcept nogil:
    """Re-extract headers into ``key``, keeping its metadata members."""
    cdef uint8_t meta[META_END]
    memcpy(meta, key, META_END)
    fp_parse(p, <uint8_t*>key)
    memcpy(key, meta, META_END)

cdef int _push_mpls(fp_dp* dp, fp_packet* p, uint64_t* key, uint32_t lse, uint16_t etype) noexcept nogil:
    cdef uint32_t o = _eth_payload(p)
    if o + 2 > p.len or fp_pkt_push(p, &dp.arena, 4) < 0:
        return -1
    memmove(p.data, p.data + 4, o)
    wr16(p.data + o, etype)
    wr32(p.data + o + 2, lse)
    _reparse(p, key)
    return 0

cdef int _pop_mpls(fp_dp* dp, fp_packet* p, uint64_t* key, uint16_t etype) noexcept nogil:
    cdef uint32_t o = _eth_payload(p)
    cdef uint16_t t
    if o + 6 > p.len:
        return 0
    t = rd16(p.data + o)
    if t != 0x8847 and t != 0x8848:
        return 0
    if fp_pkt_own(p, &dp.arena) < 0:
        return -1
    memmove(p.data + 4, p.data, o)
    p.data += 4
    p.len -= 4
    wr16(p.data + o, etype)
    _reparse(p, key)
    return 0


# ---------------------------------------------------------------- queues

cdef int fp_upcall_add(fp_dp* dp, fp_packet* p, uint64_t* key, uint32_t reason,
                       uint32_t arg, int copy) noexcept nogil:
    cdef fp_upcall* u
    cdef uint64_t* k
    cdef uint8_t* d
    if dp.n_upcalls >= dp.max_upcalls:
        dp.stats.lost += 1
        return -1
    k = <uint64_t*>fp_arena_alloc(&dp.arena, FLOW_KEY_SIZE)
    if k == NULL:
        dp.stats.lost += 1
        return -1
    memcpy(k, key, FLOW_KEY_SIZE)
    d = p.data
    if copy:
        d = fp_arena_alloc(&dp.arena, p.len)
        if d == NULL:
            dp.stats.lost += 1
            return -1
        memcpy(d, p.data, p.len)
    u = &dp.upcalls[dp.n_upcalls]
    dp.n_upcalls += 1
    u.data = d
    u.len = p.len
    u.in_port = p.in_port
    u.key = k
    u.reason = reason
    u.arg = arg
    return 0


cdef int _clone(fp_dp* dp, fp_packet* src, fp_packet* dst) noexcept nogil:
    dst[0] = src[0]
    dst.flags &= ~FP_PKT_OWNED
    return fp_pkt_own(dst, &dp.arena)


cdef int _recirc(fp_dp* dp, fp_packet* p, uint64_t* key, uint32_t rid, int depth) noexcept nogil:
    cdef fp_pending* r
    cdef uint64_t* k
    if depth + 1 > FP_MAX_RECIRC_DEPTH or dp.n_recirc >= dp.max_recirc:
        dp.stats.dropped += 1
        return -1
    k = <uint64_t*>fp_arena_alloc(&dp.arena, FLOW_KEY_SIZE)
    if k == NULL:
        dp.stats.dropped += 1
        return -1
    r = &dp.recirc[dp.n_recirc]
    if _clone(dp, p, &r.pkt) < 0:
        dp.stats.dropped += 1
        return -1
    memcpy(k, key, FLOW_KEY_SIZE)
    _reparse(&r.pkt, k)
    wr32(<uint8_t*>k + FK_OFS_RECIRC_ID, rid)
    r.key = k
    r.depth = depth + 1
    dp.n_recirc += 1
    dp.stats.recirc += 1
    return 0


cdef inline uint64_t _rand(fp_dp* dp) noexcept nogil:
    cdef uint64_t x = dp.rng
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    dp.rng = x
    return x


cdef int _meter(fp_dp* dp, uint32_t mid, uint32_t nbytes) noexcept nogil:
    """Token bucket: 0 = pass, 1 = drop (band exceeded)."""
    cdef fp_meter* m
    cdef uint64_t el, add, cost
    if mid >= FP_MAX_METERS:
        return 0
    m = &dp.meters[mid]
    if not m.active:
        return 0
    fp_spin_lock(&m.lock)
    if dp.now_ns > m.last_ns:
        el = dp.now_ns - m.last_ns
        # tokens scaled by 1000: rate [units/s] * el [ns] / 1e6
        if el > <uint64_t>100000000000:
            el = <uint64_t>100000000000
        add = m.rate * (el // 1000) // 1000
        m.tokens = m.tokens + add
        if m.tokens > m.burst:
            m.tokens = m.burst
        m.last_ns = dp.now_ns
    cost = 1000 if m.pkts else <uint64_t>nbytes * 8000
    if m.tokens >= cost:
        m.tokens -= cost
        m.passed += 1
        fp_spin_unlock(&m.lock)
        return 0
    m.dropped += 1
    fp_spin_unlock(&m.lock)
    return 1


cdef uint32_t _crc32_table[256]        # dp_hash (zlib's CRC32)
_crc_table_init(_crc32_table, 0xEDB88320)

cdef inline uint32_t _crc32_upd(uint32_t c, const uint8_t* b, uint32_t n) noexcept nogil:
    cdef uint32_t i
    for i in range(n):
        c = _crc32_table[(c ^ b[i]) & 0xff] ^ (c >> 8)
    return c


cdef uint32_t _dp_hash(uint64_t* key, uint32_t basis) noexcept nogil:
    """zlib.crc32(nw_src|nw_dst|ipv6_src|ipv6_dst|nw_proto|tp_src|tp_dst, basis),
    as slowpath.odp_execute computes dp_hash."""
    cdef const uint8_t* k = <const uint8_t*>key
    cdef uint32_t c = ~basis
    c = _crc32_upd(c, k + FK_OFS_NW_SRC, 8)
    c = _crc32_upd(c, k + FK_OFS_IPV6_SRC, 32)
    c = _crc32_upd(c, k + FK_OFS_NW_PROTO, 1)
    c = _crc32_upd(c, k + FK_OFS_TP_SRC, 4)
    return ~c


cdef uint64_t _tnl_tx = 0          # tnl_push: packets sent
cdef uint64_t _tnl_tx_too_big = 0  # tnl_push: outer packet above the route MTU, dropped


cdef void _tnl_push(fp_dp* dp, fp_packet* p, uint64_t* key, const uint8_t* hdr,
                    uint32_t hlen, uint32_t out_port, uint32_t plen, uint32_t mtu) noexcept nogil:
    """Encapsulate a copy of ``p`` in the prebuilt outer header ``hdr``
    (Ethernet/IPv4-or-IPv6/UDP/tunnel), fix lengths, IPv4 checksum, the UDP
    source port (inner-flow hash, 32768-60999 as OVS) and, when the header
    asks for one (non-zero field), the UDP checksum; send it out of
    ``out_port``.  An outer IP packet longer than ``mtu`` (0: unknown) is
    dropped and counted.  The original packet is left as it was."""
    global _tnl_tx, _tnl_tx_too_big
    cdef uint32_t l3, l4, total = hlen + plen
    cdef uint16_t et
    cdef uint8_t* b
    cdef uint8_t* ip
    cdef uint8_t* udp
    cdef uint64_t s
    cdef uint16_t c
    cdef int v4
    if hlen < 14 + 20 + 8 or out_port >= FP_MAX_PORTS or dp.ports[out_port] == NULL:
        dp.stats.dropped += 1
        return
    et = rd16(hdr + 12)
    l3 = 14
    if et == 0x0800:
        v4 = 1
        l4 = l3 + (hdr[l3] & 0x0f) * 4
    elif et == 0x86dd and hlen >= 14 + 40 + 8:
        v4 = 0
        l4 = l3 + 40
    else:
        dp.stats.dropped += 1
        return
    if l4 + 8 > hlen:
        dp.stats.dropped += 1
        return
    if mtu and total - l3 > mtu:
        _tnl_tx_too_big += 1
        return
    b = fp_arena_alloc(&dp.arena, total + 64)
    if b == NULL:
        dp.stats.dropped += 1
        return
    memcpy(b, hdr, hlen)
    memcpy(b + hlen, p.data, plen)
    ip = b + l3
    udp = b + l4
    if v4:
        wr16(ip + 2, <uint16_t>(total - l3))
        wr16(ip + 10, 0)
        wr16(ip + 10, ~_fold(fp_sum16(ip, l4 - l3)))
    else:
        wr16(ip + 4, <uint16_t>(total - l3 - 40))
    wr16(udp + 4, <uint16_t>(total - l4))
    wr16(udp, <uint16_t>(32768 + _dp_hash(key, 0) % 28232))
    if rd16(udp + 6) != 0:
        wr16(udp + 6, 0)
        if v4:
            s = fp_sum16(ip + 12, 8)
        else:
            s = fp_sum16(ip + 8, 32)
        s += 17 + (total - l4) + fp_sum16(udp, total - l4)
        c = ~_fold(s)
        wr16(udp + 6, c if c else 0xffff)
    fp_dp_tx(dp, out_port, b, total)
    _tnl_tx += 1


# ---------------------------------------------------------------- GENEVE decap (tnl_pop)
#
# Native tunnelling, receive side: the underlay NIC is a datapath port, a
# megaflow on it says ``tnl_pop`` for GENEVE to a local tunnel address, and
# this code decapsulates and recirculates the inner frame as received on the
# tunnel port that accepts it (``slowpath.tunnel.receive_udp`` is the Python
# twin: same port choice, same key, same drop reasons, tested against each
# other).  The tunnel ports and their bridges' TLV maps are one table per
# process (``set_tunnel_ports``), written only on the datapath thread.

cdef enum:
    A_TNL_POP = 16               # decapsulate GENEVE and recirculate (arg: endpoint port)
    TNL_MAX_PORTS = 256
    TNL_MAX_TLV = 64
    TNL_SLOTS = 8                # tun_metadata0..7 (slowpath/fields.py)
    TNL_NREASONS = 9

# slowpath.tunnel.DROP_REASONS, in order
cdef enum:
    TD_TRUNCATED = 0
    TD_BAD_VERSION = 1
    TD_BAD_OPTION_LENGTH = 2
    TD_UNKNOWN_CRITICAL = 3
    TD_OPTION_LENGTH_MISMATCH = 4
    TD_UNSUPPORTED_PROTOCOL = 5
    TD_BAD_OUTER_HEADER = 6
    TD_FRAGMENT = 7
    TD_NO_PORT = 8

ctypedef struct fp_tnl_tlv:
    uint16_t cls
    uint8_t type
    uint8_t len                  # bytes, as the TLV map says
    int index                    # tun_metadata<index>

ctypedef struct fp_tnl_port:
    uint32_t dp_port
    uint8_t rfam                 # remote_ip: 0 = flow (any), 4 or 6
    uint8_t lfam                 # local_ip: 0 = any, 4 or 6
    uint8_t has_key              # 0: key=flow
    uint8_t l3                   # packet_type=legacy_l3
    uint8_t remote[16]
    uint8_t local[16]
    uint32_t key
    uint16_t dst_port
    uint16_t n_tlv
    fp_tnl_tlv tlv[TNL_MAX_TLV]

cdef fp_tnl_port _tnl_ports[TNL_MAX_PORTS]
cdef int _tnl_n = 0
cdef uint64_t _tnl_drops[TNL_NREASONS]
cdef uint64_t _tnl_rx = 0

TNL_DROP_REASONS = ("truncated", "bad_version", "bad_option_length", "unknown_critical_option",
                    "option_length_mismatch", "unsupported_protocol", "bad_outer_header",
                    "fragment", "no_port")


cdef int _tnl_accepts(const fp_tnl_port* t, int fam, const uint8_t* src, const uint8_t* dst,
                      uint16_t dport, uint32_t vni) noexcept nogil:
    """slowpath.tunnel.accepts: 0 = no, higher = more specific."""
    cdef int alen = 4 if fam == 4 else 16
    if t.dst_port != dport:
        return 0
    if t.lfam and (t.lfam != fam or memcmp(t.local, dst, alen) != 0):
        return 0
    if t.rfam and (t.rfam != fam or memcmp(t.remote, src, alen) != 0):
        return 0
    if t.has_key and t.key != vni:
        return 0
    return 1 + (2 if t.rfam else 0) + (1 if t.has_key else 0)


cdef int _tnl_decap(const uint8_t* d, uint32_t n, uint8_t* meta, uint32_t* inner_ofs,
                    uint32_t* inner_len, uint16_t* l3proto) noexcept nogil:
    """Outer Ethernet/IP/UDP/GENEVE frame -> index of the accepting tunnel
    port, the inner frame's offset and length (``l3proto`` non-zero: a
    legacy_l3 payload that needs a zero Ethernet header of that type) and
    the key's metadata (``meta``, META_END zeroed bytes) with in_port and
    the tunnel fields; or -(1 + drop reason).  Checks in the order of
    slowpath.tunnel (pull_ethernet, pull_udp_ip, receive_udp, decap)."""
    cdef uint32_t off = 12, m, ihl, tot, l4, end, ulen, plen, hlen, o, dlen, i
    cdef const uint8_t* ip
    cdef const uint8_t* src
    cdef const uint8_t* dst
    cdef const uint8_t* g
    cdef const uint8_t* opt
    cdef uint16_t et, frag, sport, dport, csum, proto, c
    cdef uint8_t tos, ttl
    cdef int fam, best = -1, score = 0, s, j, k
    cdef uint32_t vni
    cdef uint64_t sm
    cdef const fp_tnl_port* t
    cdef const fp_tnl_tlv* tl
    while n >= off + 2 and (rd16(d + off) == 0x8100 or rd16(d + off) == 0x88a8):
        off += 4
    if n < off + 2:
        return -1 - TD_TRUNCATED
    et = rd16(d + off)
    if et != 0x0800 and et != 0x86dd:
        return -1 - TD_BAD_OUTER_HEADER
    off += 2
    ip = d + off
    m = n - off
    if m < 1:
        return -1 - TD_TRUNCATED
    if ip[0] >> 4 == 4:
        if m < 20:
            return -1 - TD_TRUNCATED
        ihl = (ip[0] & 0x0f) * 4
        tot = rd16(ip + 2)
        frag = rd16(ip + 6)
        if ihl < 20 or tot < ihl + 8 or m < tot:
            return -1 - (TD_TRUNCATED if m < tot else TD_BAD_OUTER_HEADER)
        if frag & 0x3fff:
            return -1 - TD_FRAGMENT
        if ip[9] != 17:
            return -1 - TD_BAD_OUTER_HEADER
        fam, src, dst, tos, ttl, l4, end = 4, ip + 12, ip + 16, ip[1], ip[8], ihl, tot
    elif ip[0] >> 4 == 6:
        if m < 48:
            return -1 - TD_TRUNCATED
        if ip[6] != 17:
            return -1 - TD_BAD_OUTER_HEADER
        plen = rd16(ip + 4)
        if m < 40 + plen or plen < 8:
            return -1 - TD_TRUNCATED
        fam, src, dst, l4, end = 6, ip + 8, ip + 24, 40, 40 + plen
        tos = <uint8_t>(rd16(ip) >> 4)
        ttl = ip[7]
    else:
        return -1 - TD_BAD_OUTER_HEADER
    sport = rd16(ip + l4)
    dport = rd16(ip + l4 + 2)
    ulen = rd16(ip + l4 + 4)
    csum = rd16(ip + l4 + 6)
    if ulen < 8 or l4 + ulen > end:
        return -1 - (TD_TRUNCATED if l4 + ulen > end else TD_BAD_OUTER_HEADER)
    if csum:
        sm = fp_sum16(src, 8 if fam == 4 else 32) + 17 + ulen
        sm += fp_sum16(ip + l4, 6) + fp_sum16(ip + l4 + 8, ulen - 8)
        c = ~_fold(sm)
        if c == 0:
            c = 0xffff
        if c != csum:
            return -1 - TD_BAD_OUTER_HEADER
    g = ip + l4 + 8
    plen = ulen - 8
    # receive_udp
    if plen < 8:
        return -1 - TD_TRUNCATED
    vni = rd32(g + 4) >> 8
    for j in range(_tnl_n):
        s = _tnl_accepts(&_tnl_ports[j], fam, src, dst, dport, vni)
        if s > score:
            best, score = j, s
    # pull_geneve (also when no port accepts: malformed beats no_port)
    if g[0] >> 6 != 0:
        return -1 - TD_BAD_VERSION
    hlen = 8 + (g[0] & 0x3f) * 4
    if plen < hlen:
        return -1 - TD_TRUNCATED
    o = 8
    while o < hlen:
        if o + 4 > hlen:
            return -1 - TD_BAD_OPTION_LENGTH
        dlen = (g[o + 3] & 0x1f) * 4
        if o + 4 + dlen > hlen:
            return -1 - TD_BAD_OPTION_LENGTH
        o += 4 + dlen
    if best < 0:
        return -1 - TD_NO_PORT
    t = &_tnl_ports[best]
    proto = rd16(g + 2)
    l3proto[0] = 0
    if proto == 0x6558 and not t.l3:
        pass
    elif (proto == 0x0800 or proto == 0x86dd) and t.l3:
        l3proto[0] = proto
    else:
        return -1 - TD_UNSUPPORTED_PROTOCOL
    if plen - hlen + (14 if t.l3 else 0) < 14:
        return -1 - TD_TRUNCATED
    # TlvMap.to_key: mapped options fill their slot
    o = 8
    while o < hlen:
        opt = g + o
        dlen = (opt[3] & 0x1f) * 4
        tl = NULL
        for k in range(t.n_tlv):
            if t.tlv[k].cls == rd16(opt) and t.tlv[k].type == opt[2]:
                tl = &t.tlv[k]
                break
        if tl == NULL:
            if opt[2] & 0x80:
                return -1 - TD_UNKNOWN_CRITICAL
        elif tl.len != dlen or tl.index < 0 or tl.index >= TNL_SLOTS or tl.len > 8:
            return -1 - TD_OPTION_LENGTH_MISMATCH
        else:
            wr16(meta + FK_OFS_TUN_MD_OPTS + 4 * tl.index, tl.cls)
            meta[FK_OFS_TUN_MD_OPTS + 4 * tl.index + 2] = tl.type
            meta[FK_OFS_TUN_MD_OPTS + 4 * tl.index + 3] = tl.len
            memset(meta + FK_OFS_TUN_MD_DATA + 8 * tl.index, 0, 8)
            memcpy(meta + FK_OFS_TUN_MD_DATA + 8 * tl.index, opt + 4, dlen)
        o += 4 + dlen
    # fill_tunnel_key
    wr32(meta + FK_OFS_TUN_ID + 4, vni)
    if fam == 4:
        memcpy(meta + FK_OFS_TUN_SRC, src, 4)
        memcpy(meta + FK_OFS_TUN_DST, dst, 4)
    else:
        memcpy(meta + FK_OFS_TUN_IPV6_SRC, src, 16)
        memcpy(meta + FK_OFS_TUN_IPV6_DST, dst, 16)
    meta[FK_OFS_TUN_TOS] = tos
    meta[FK_OFS_TUN_TTL] = ttl
    wr16(meta + FK_OFS_TUN_TP_SRC, sport)
    wr16(meta + FK_OFS_TUN_TP_DST, dport)
    wr16(meta + FK_OFS_TUN_FLAGS, 1 if g[1] & 0x80 else 0)
    wr32(meta + FK_OFS_IN_PORT, t.dp_port)
    inner_ofs[0] = off + l4 + 8 + hlen
    inner_len[0] = plen - hlen
    return best


cdef void _tnl_pop(fp_dp* dp, fp_packet* p, int depth) noexcept nogil:
    """Decapsulate ``p`` and queue the inner frame for a cache lookup as
    received on its tunnel port (recirc_id 0, metadata: tunnel fields)."""
    global _tnl_rx
    cdef uint8_t meta[META_END]
    cdef uint32_t ofs = 0, ilen = 0
    cdef uint16_t l3proto = 0
    cdef int r
    cdef fp_pending* pe
    cdef uint64_t* k
    memset(meta, 0, META_END)
    r = _tnl_decap(p.data, p.len, meta, &ofs, &ilen, &l3proto)
    if r < 0:
        _tnl_drops[-r - 1] += 1
        return
    if depth + 1 > FP_MAX_RECIRC_DEPTH or dp.n_recirc >= dp.max_recirc:
        dp.stats.dropped += 1
        return
    k = <uint64_t*>fp_arena_alloc(&dp.arena, FLOW_KEY_SIZE)
    if k == NULL:
        dp.stats.dropped += 1
        return
    pe = &dp.recirc[dp.n_recirc]
    pe.pkt = p[0]
    pe.pkt.flags &= ~(FP_PKT_OWNED | FP_PKT_CSUM_PARTIAL | FP_PKT_GSO)
    pe.pkt.data = p.data + ofs
    pe.pkt.len = ilen
    if fp_pkt_own(&pe.pkt, &dp.arena) < 0:
        dp.stats.dropped += 1
        return
    if l3proto:
        if fp_pkt_push(&pe.pkt, &dp.arena, 14) < 0:
            dp.stats.dropped += 1
            return
        memset(pe.pkt.data, 0, 12)
        wr16(pe.pkt.data + 12, l3proto)
    pe.pkt.in_port = _tnl_ports[r].dp_port
    fp_parse(&pe.pkt, <uint8_t*>k)
    memcpy(k, meta, META_END)
    pe.key = k
    pe.depth = depth + 1
    dp.n_recirc += 1
    dp.stats.recirc += 1
    _tnl_rx += 1


def set_tunnel_ports(ports):
    """The tunnel ports the ``tnl_pop`` action chooses among, in the order
    of preference on ties: ``[(dp_port, TunnelConfig, TlvMap)]``.  Call on
    the datapath thread (``Datapath.call``)."""
    import ipaddress
    cdef int i, k
    cdef fp_tnl_port* t
    ports = list(ports)
    if len(ports) > TNL_MAX_PORTS:
        raise ValueError(f"at most {TNL_MAX_PORTS} tunnel ports")
    for i, (dp_port, cfg, tlv) in enumerate(ports):
        t = &_tnl_ports[i]
        memset(t, 0, sizeof(fp_tnl_port))
        t.dp_port = dp_port
        for attr, fam_name in (("remote_ip", "r"), ("local_ip", "l")):
            v = getattr(cfg, attr)
            if v is None:
                continue
            a = ipaddress.ip_address(v)
            raw = a.packed
            if fam_name == "r":
                t.rfam = a.version
                memcpy(t.remote, <char*>raw, len(raw))
            else:
                t.lfam = a.version
                memcpy(t.local, <char*>raw, len(raw))
        t.has_key = cfg.key is not None
        t.key = cfg.key or 0
        t.l3 = cfg.packet_type == "legacy_l3"
        t.dst_port = cfg.dst_port
        entries = list(tlv.by_key.items())[:TNL_MAX_TLV]
        t.n_tlv = len(entries)
        for k, ((cls, typ), (index, ln)) in enumerate(entries):
            t.tlv[k].cls = cls
            t.tlv[k].type = typ
            t.tlv[k].len = ln if 0 <= ln < 256 else 255
            t.tlv[k].index = index
    global _tnl_n
    _tnl_n = len(ports)


def tunnel_counters():
    """What ``tnl_pop`` and ``tnl_push`` did: rx_packets and drop_<reason>,
    tx_packets and tx_too_big (cumulative)."""
    d = {"rx_packets": _tnl_rx, "tx_packets": _tnl_tx, "tx_too_big": _tnl_tx_too_big}
    for i, r in enumerate(TNL_DROP_REASONS):
        d["drop_" + r] = _tnl_drops[i]
    return d


def tunnel_decap(bytes frame):
    """The ``tnl_pop`` decoder on one frame, for tests: ``(dp_port, inner
    frame, key metadata bytes)`` or the drop reason (not counted)."""
    cdef uint8_t meta[META_END]
    cdef uint32_t ofs = 0, ilen = 0
    cdef uint16_t l3proto = 0
    cdef int r
    memset(meta, 0, META_END)
    r = _tnl_decap(<const uint8_t*><char*>frame, len(frame), meta, &ofs, &ilen, &l3proto)
    if r < 0:
        return TNL_DROP_REASONS[-r - 1]
    inner = frame[ofs:ofs + ilen]
    if l3proto:
        inner = bytes(12) + _struct.pack("!H", l3proto) + inner
    return _tnl_ports[r].dp_port, inner, (<char*>meta)[:META_END]


# ---------------------------------------------------------------- execute

cdef int fp_execute(fp_dp* dp, fp_packet* p, uint64_t* key, const uint8_t* acts,
                    uint32_t alen, int depth) noexcept nogil:
    """Run a compiled action block on one packet.  Returns 0, or 1 when
    execution stopped early (meter drop, error)."""
    cdef uint32_t pos = 0
    cdef const fp_act* a
    cdef fp_port* port
    cdef uint32_t trunc = 0xffffffff
    cdef uint32_t n
    cdef fp_packet cp
    cdef uint64_t ckey[KEY_WORDS]
    cdef const uint8_t* v
    while pos + ACT_HDR <= alen:
        a = <const fp_act*>(acts + pos)
        pos += a.len
        if a.type == A_OUTPUT:
            if a.arg < FP_MAX_PORTS and dp.ports[a.arg] != NULL:
                n = p.len if p.len < trunc else trunc
                fp_dp_tx(dp, a.arg, p.data, n)
            else:
                dp.stats.dropped += 1
            trunc = 0xffffffff                  # as in OVS: next output only
        elif a.type == A_SET:
            v = (<const uint8_t*>a) + ACT_HDR
            if fp_pkt_own(p, &dp.arena) < 0:
                dp.stats.dropped += 1
                return 1
            _wmask((<uint8_t*>key) + a.ofs, v, v + a.size, a.size)
            _set_packet(p, a.ofs, a.size, v, v + a.size)
        elif a.type == A_PUSH_VLAN:
            if _push_vlan(dp, p, key, <uint16_t>(a.arg >> 16), <uint16_t>a.arg) < 0:
                dp.stats.dropped += 1
                return 1
        elif a.type == A_POP_VLAN:
            if _pop_vlan(dp, p, key) < 0:
                dp.stats.dropped += 1
                return 1
        elif a.type == A_TRUNC:
            trunc = a.arg
        elif a.type == A_USERSPACE:
            fp_upcall_add(dp, p, key, UPCALL_ACTION, a.arg, 1)
        elif a.type == A_RECIRC:
            _recirc(dp, p, key, a.arg, depth)
        elif a.type == A_METER:
            if _meter(dp, a.arg, p.len):
                return 1
        elif a.type == A_HASH:
            wr32((<uint8_t*>key) + FK_OFS_DP_HASH, _dp_hash(key, a.arg))
        elif a.type == A_CLONE or a.type == A_SAMPLE:
            if a.type == A_SAMPLE and a.arg != <uint32_t>0xffffffffU and <uint32_t>_rand(dp) > a.arg:
                continue
            if _clone(dp, p, &cp) < 0:
                dp.stats.dropped += 1
                continue
            memcpy(ckey, key, FLOW_KEY_SIZE)
            fp_execute(dp, &cp, ckey, (<const uint8_t*>a) + ACT_HDR, a.len - ACT_HDR, depth)
        elif a.type == A_PUSH_MPLS:
            if _push_mpls(dp, p, key, a.arg, <uint16_t>a.arg2) < 0:
                dp.stats.dropped += 1
                return 1
        elif a.type == A_POP_MPLS:
            if _pop_mpls(dp, p, key, <uint16_t>a.arg) < 0:
                dp.stats.dropped += 1
                return 1
        elif a.type == A_TNL_PUSH:
            _tnl_push(dp, p, key, (<const uint8_t*>a) + ACT_HDR, a.arg2, a.arg,
                      p.len if p.len < trunc else trunc, a.size)
            trunc = 0xffffffff                  # like an output: trunc is spent
        elif a.type == A_TNL_POP:
            _tnl_pop(dp, p, depth)
            return 1                            # nothing continues with the outer packet
        elif a.type == A_CHECK_PKT_LEN:
            v = (<const uint8_t*>a) + ACT_HDR
            if _l2_len_without_vlans(p) > a.arg:
                n = a.arg2
            else:
                v += a.arg2
                n = a.len - ACT_HDR - a.arg2
            if pos >= alen:          # last action (as xlate emits it): in place
                return fp_execute(dp, p, key, v, n, depth)
            if _clone(dp, p, &cp) < 0:           # else on a copy, as OVS does
                dp.stats.dropped += 1
                continue
            memcpy(ckey, key, FLOW_KEY_SIZE)
            fp_execute(dp, &cp, ckey, v, n, depth)
        elif a.type == A_SLOW:
            fp_upcall_add(dp, p, key, UPCALL_SLOW, a.arg, 1)
            return 1
    return 0


cdef inline uint32_t _l2_len_without_vlans(fp_packet* p) noexcept nogil:
    """What check_pkt_len compares (slowpath.odp_execute.l2_len_without_vlans)."""
    cdef uint32_t n = p.len, off = 12
    cdef uint16_t t
    while off + 4 <= p.len:
        t = rd16(p.data + off)
        if t != 0x8100 and t != 0x88a8:
            break
        n -= 4
        off += 4
    return n


# ---------------------------------------------------------------- compile

_HDR = _struct.Struct("<HHIIHH")
_KEY_ONLY_CT = ("ct_state", "ct_zone", "ct_mark", "ct_label", "ct_nw_src", "ct_nw_dst",
                "ct_ipv6_src", "ct_ipv6_dst", "ct_tp_src", "ct_tp_dst", "ct_nw_proto")


def _rec(int t, uint32_t arg=0, uint32_t arg2=0, uint16_t ofs=0, uint16_t size=0,
         bytes payload=b""):
    pad = (-len(payload)) % 8
    n = ACT_HDR + len(payload) + pad
    if n > 0xffff:
        raise ValueError("compiled action too large")
    return _HDR.pack(t, n, arg, arg2, ofs, size) + payload + b"\0" * pad


class _Unsupported(Exception):
    """An action this fast path cannot execute."""


def _compile(actions, cookies):
    from slowpath import dpactions as A
    from slowpath.fields import MEMBERS
    out = []
    for a in actions:
        if isinstance(a, A.Output):
            if not 0 <= a.dp_port < FP_MAX_PORTS:
                raise ValueError(f"dp_port {a.dp_port} out of range")
            out.append(_rec(A_OUTPUT, a.dp_port))
        elif isinstance(a, A.SetMasked):
            o, s = MEMBERS[a.member]
            full = (1 << (8 * s)) - 1
            m = a.mask & full
            out.append(_rec(A_SET, 0, 0, o, s,
                            (a.value & m).to_bytes(s, "big") + m.to_bytes(s, "big")))
        elif isinstance(a, A.PushVlan):
            out.append(_rec(A_PUSH_VLAN, ((a.tpid & 0xffff) << 16) | (a.tci & 0xffff)))
        elif isinstance(a, A.PopVlan):
            out.append(_rec(A_POP_VLAN))
        elif isinstance(a, A.Trunc):
            out.append(_rec(A_TRUNC, a.max_len))
        elif isinstance(a, A.Userspace):
            out.append(_rec(A_USERSPACE, cookies(a)))
        elif isinstance(a, A.Recirc):
            out.append(_rec(A_RECIRC, a.recirc_id & 0xffffffff))
        elif isinstance(a, A.Meter):
            out.append(_rec(A_METER, a.meter_id))
        elif isinstance(a, A.Hash):
            out.append(_rec(A_HASH, a.basis & 0xffffffff))
        elif isinstance(a, A.Clone):
            out.append(_rec(A_CLONE, 0, 0, 0, 0, _compile(a.actions, cookies)))
        elif isinstance(a, A.Sample):
            out.append(_rec(A_SAMPLE, a.probability & 0xffffffff, 0, 0, 0,
                            _compile(a.actions, cookies)))
        elif isinstance(a, A.PushMpls):
            out.append(_rec(A_PUSH_MPLS, a.lse & 0xffffffff, a.ethertype & 0xffff))
        elif isinstance(a, A.PopMpls):
            out.append(_rec(A_POP_MPLS, a.ethertype & 0xffff))
        elif isinstance(a, A.TunnelPush) and a.header:
            # Prebuilt outer header: encapsulate a copy and send it out of
            # out_dp_port (lengths, checksums, UDP source port fixed here).
            if not 0 <= a.out_dp_port < FP_MAX_PORTS:
                raise ValueError(f"dp_port {a.out_dp_port} out of range")
            # (``size`` carries the route MTU: longer outer packets are dropped)
            out.append(_rec(A_TNL_PUSH, a.out_dp_port, len(a.header), 0,
                            min(max(a.mtu, 0), 0xffff), bytes(a.header)))
        elif isinstance(a, A.TunnelPop):
            # GENEVE decapsulation and recirculation (native tunnelling)
            out.append(_rec(A_TNL_POP, a.dp_port & 0xffffffff))
        elif isinstance(a, A.CheckPktLen):
            gt = _compile(a.gt, cookies)      # multiples of 8: the le block stays aligned
            out.append(_rec(A_CHECK_PKT_LEN, a.pkt_len & 0xffff, len(gt), 0, 0,
                            gt + _compile(a.le, cookies)))
        elif isinstance(a, A.CtClear):
            for mem in _KEY_ONLY_CT:
                o, s = MEMBERS[mem]
                out.append(_rec(A_SET, 0, 0, o, s, bytes(s) + b"\xff" * s))
        else:
            # Ct, TunnelPush without a prebuilt header, ...
            raise _Unsupported(a)
    return b"".join(out)


cdef class CompiledActions:
    """A compiled action block (immutable; owned by its megaflow)."""

    def __cinit__(self, tuple actions, cookies):
        try:
            data = _compile(actions, cookies)
        except _Unsupported as e:
            # Not executable here: the whole packet, untouched, goes to the
            # slow path (nothing before the action may run twice).
            data = _rec(A_SLOW, cookies(e.args[0]))
        self.actions = actions
        self.length = len(data)
        self.buf = <uint8_t*>malloc(self.length + 8)
        if self.buf == NULL:
            raise MemoryError()
        # Layout: uint32 length, 4 bytes pad, then the records.
        (<uint32_t*>self.buf)[0] = self.length
        (<uint32_t*>self.buf)[1] = 0
        memcpy(self.buf + 8, <char*>data, self.length)

    def __dealloc__(self):
        free(self.buf)

    @property
    def address(self):
        return <size_t>self.buf

    @property
    def slow(self):
        """True when the block hands packets to the slow path (A_SLOW)."""
        cdef uint32_t pos = 0
        cdef fp_act* a
        while pos + ACT_HDR <= self.length:
            a = <fp_act*>(self.buf + 8 + pos)
            if a.type == A_SLOW:
                return True
            pos += a.len
        return False

    def __bytes__(self):
        return bytes((<char*>self.buf + 8)[:self.length])
