# cython: language_level=3
"""Flow key extraction (OVS ``miniflow_extract`` semantics), nogil C.

Fills the packed big-endian key laid out by ``slowpath/fields.py`` (via the
generated ``_fields.pxd``).  ``slowpath.flow.parse_packet`` is the reference;
tests hold the two to byte equality.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from fastpath.fpcore cimport fp_packet, rd16, wr16, wr32
from fastpath._fields cimport *

cdef enum:
    ETH_TYPE_IP = 0x0800
    ETH_TYPE_ARP = 0x0806
    ETH_TYPE_RARP = 0x8035
    ETH_TYPE_VLAN = 0x8100
    ETH_TYPE_VLAN_8021AD = 0x88a8
    ETH_TYPE_IPV6 = 0x86dd
    ETH_TYPE_MPLS = 0x8847
    ETH_TYPE_MPLS_MCAST = 0x8848
    ETH_TYPE_MIN = 0x600
    FLOW_DL_TYPE_NONE = 0x5ff
    NO_OFS = 0xffff



cdef int _parse_nd(const uint8_t* d, uint32_t size, uint8_t icmp_type,
                   uint8_t* key) noexcept nogil:
    """ND target and link-layer options; a bad option leaves all ND fields 0."""
    cdef uint32_t ofs = 16, olen
    cdef const uint8_t* sll = NULL
    cdef const uint8_t* tll = NULL
    cdef const uint8_t* opt
    if size < 16:
        return 1
    while size - ofs >= 8:
        opt = d + ofs
        olen = <uint32_t>opt[1] * 8
        if olen == 0 or olen > size - ofs:
            return 1
        if olen == 8:
            if opt[0] == 1 and icmp_type == 135:
                if sll != NULL:
                    return 1
                sll = opt + 2
            elif opt[0] == 2 and icmp_type == 136:
                if tll != NULL:
                    return 1
                tll = opt + 2
        ofs += olen
    memcpy(key + FK_OFS_ND_TARGET, d, 16)
    if sll != NULL:
        memcpy(key + FK_OFS_ARP_SHA, sll, 6)
    if tll != NULL:
        memcpy(key + FK_OFS_ARP_THA, tll, 6)
    return 0


cdef inline uint16_t _exthdr_bit(uint8_t nxt) noexcept nogil:
    if nxt == 0:
        return 0x40
    elif nxt == 43:
        return 0x20
    elif nxt == 44:
        return 0x10
    elif nxt == 60:
        return 0x08
    elif nxt == 51:
        return 0x04
    elif nxt == 50:
        return 0x02
    elif nxt == 59:
        return 0x01
    return 0


cdef int _parse_l4(const uint8_t* d, uint32_t size, uint8_t proto, int is_v6,
                   uint8_t* key) noexcept nogil:
    cdef uint32_t hl, ofs, optlen
    cdef uint8_t t
    cdef const uint8_t* opt
    if proto == 6:
        if size < 20:
            return 1
        hl = (d[12] >> 4) * 4
        if hl < 20 or hl > size:
            return 1
        memcpy(key + FK_OFS_TP_SRC, d, 2)
        memcpy(key + FK_OFS_TP_DST, d + 2, 2)
        wr16(key + FK_OFS_TCP_FLAGS, rd16(d + 12) & 0x0fff)
    elif proto == 17:
        if size < 8:
            return 1
        memcpy(key + FK_OFS_TP_SRC, d, 2)
        memcpy(key + FK_OFS_TP_DST, d + 2, 2)
    elif proto == 132:
        if size < 12:
            return 1
        memcpy(key + FK_OFS_TP_SRC, d, 2)
        memcpy(key + FK_OFS_TP_DST, d + 2, 2)
    elif proto == 1 and not is_v6:
        if size < 8:
            return 1
        key[FK_OFS_TP_SRC + 1] = d[0]
        key[FK_OFS_TP_DST + 1] = d[1]
    elif proto == 2 and not is_v6:
        if size < 8:
            return 1
        key[FK_OFS_TP_SRC + 1] = d[0]
        key[FK_OFS_TP_DST + 1] = d[1]
        memcpy(key + FK_OFS_IGMP_GROUP_IP4, d + 4, 4)
    elif proto == 58 and is_v6:
        if size < 8:
            return 1
        key[FK_OFS_TP_SRC + 1] = d[0]
        key[FK_OFS_TP_DST + 1] = d[1]
        if (d[0] == 135 or d[0] == 136) and d[1] == 0:
            return _parse_nd(d + 8, size - 8, d[0], key)
    return 0


cdef int fp_parse(fp_packet* p, uint8_t* key) noexcept nogil:
    cdef const uint8_t* d = p.data
    cdef uint32_t size = p.len
    cdef uint32_t ofs, ihl, tot, plen, hl
    cdef uint16_t tpid, dl_type, frag, exthdr
    cdef int nvlan = 0
    cdef uint8_t nxt, proto
    memset(key, 0, FLOW_KEY_SIZE)
    wr32(key + FK_OFS_IN_PORT, p.in_port)
    p.l2_5_ofs = NO_OFS
    p.l3_ofs = NO_OFS
    p.l4_ofs = NO_OFS
    p.l3_kind = 0
    p.l4_proto = 0
    if size < 14:
        return 1
    memcpy(key + FK_OFS_DL_DST, d, 6)
    memcpy(key + FK_OFS_DL_SRC, d + 6, 6)
    ofs = 12
    # VLAN tags (up to two, outer first), TCI stored with the CFI bit set.
    while True:
        tpid = rd16(d + ofs)
        if tpid != ETH_TYPE_VLAN and tpid != ETH_TYPE_VLAN_8021AD:
            break
        if nvlan == 2:
            break
        if size - ofs < 6:
            return 1            # truncated tag: dl_type stays unset
        if nvlan == 0:
            wr16(key + FK_OFS_VLAN0_TPID, tpid)
            wr16(key + FK_OFS_VLAN0_TCI, rd16(d + ofs + 2) | FLOW_VLAN_CFI)
            p.l2_5_ofs = ofs
        else:
            wr16(key + FK_OFS_VLAN1_TPID, tpid)
            wr16(key + FK_OFS_VLAN1_TCI, rd16(d + ofs + 2) | FLOW_VLAN_CFI)
        nvlan += 1
        ofs += 4
    # Ethertype (802.3 + LLC/SNAP handled like OVS parse_ethertype).
    if size - ofs < 2:
        return 1
    dl_type = rd16(d + ofs)
    ofs += 2
    if dl_type < ETH_TYPE_MIN:
        if (size - ofs >= 8 and d[ofs] == 0xaa and d[ofs + 1] == 0xaa and d[ofs + 2] == 0x03
                and d[ofs + 3] == 0 and d[ofs + 4] == 0 and d[ofs + 5] == 0):
            dl_type = rd16(d + ofs + 6)
            ofs += 8
            if dl_type < ETH_TYPE_MIN:
                dl_type = FLOW_DL_TYPE_NONE
        else:
            dl_type = FLOW_DL_TYPE_NONE
    wr16(key + FK_OFS_DL_TYPE, dl_type)
    if p.l2_5_ofs == NO_OFS:
        p.l2_5_ofs = ofs - 2
    if dl_type == ETH_TYPE_MPLS or dl_type == ETH_TYPE_MPLS_MCAST:
        if size - ofs < 4:
            return 1
        memcpy(key + FK_OFS_MPLS_LSE, d + ofs, 4)
        return 0
    p.l3_ofs = ofs
    if dl_type == ETH_TYPE_IP:
        if size - ofs < 20:
            return 1
        ihl = (d[ofs] & 0x0f) * 4
        tot = rd16(d + ofs + 2)
        if (d[ofs] >> 4) != 4 or ihl < 20 or tot < ihl or tot > size - ofs:
            return 1
        p.l3_kind = 4
        memcpy(key + FK_OFS_NW_SRC, d + ofs + 12, 4)
        memcpy(key + FK_OFS_NW_DST, d + ofs + 16, 4)
        key[FK_OFS_NW_TOS] = d[ofs + 1]
        key[FK_OFS_NW_TTL] = d[ofs + 8]
        proto = d[ofs + 9]
        key[FK_OFS_NW_PROTO] = proto
        p.l4_proto = proto
        frag = rd16(d + ofs + 6)
        if frag & 0x3fff:                   # MF or offset
            key[FK_OFS_NW_FRAG] = 1
            if frag & 0x1fff:
                key[FK_OFS_NW_FRAG] = 3
                return 0
        p.l4_ofs = ofs + ihl
        return _parse_l4(d + ofs + ihl, tot - ihl, proto, 0, key)
    elif dl_type == ETH_TYPE_IPV6:
        if size - ofs < 40:
            return 1
        plen = rd16(d + ofs + 4)
        if (d[ofs] >> 4) != 6 or plen > size - ofs - 40:
            return 1
        p.l3_kind = 6
        key[FK_OFS_NW_TOS] = <uint8_t>(((d[ofs] & 0x0f) << 4) | (d[ofs + 1] >> 4))
        wr32(key + FK_OFS_IPV6_LABEL,
             ((<uint32_t>d[ofs + 1] & 0x0f) << 16) | (<uint32_t>d[ofs + 2] << 8) | d[ofs + 3])
        key[FK_OFS_NW_TTL] = d[ofs + 7]
        memcpy(key + FK_OFS_IPV6_SRC, d + ofs + 8, 16)
        memcpy(key + FK_OFS_IPV6_DST, d + ofs + 24, 16)
        nxt = d[ofs + 6]
        ofs += 40
        size = ofs + plen
        # Extension headers (OVS parse_ipv6_ext_hdrs).
        exthdr = 0
        while True:
            exthdr |= _exthdr_bit(nxt)
            if nxt == 0 or nxt == 43 or nxt == 60 or nxt == 51:
                if size - ofs < 8:
                    break
                if nxt == 51:
                    hl = (<uint32_t>d[ofs + 1] + 2) * 4
                else:
                    hl = (<uint32_t>d[ofs + 1] + 1) * 8
                if hl > size - ofs:
                    break
                nxt = d[ofs]
                ofs += hl
            elif nxt == 44:
                if size - ofs < 8:
                    break
                frag = rd16(d + ofs + 2)
                nxt = d[ofs]
                ofs += 8
                if frag & 0xfff9:
                    key[FK_OFS_NW_FRAG] = 1
                    if frag & 0xfff8:
                        key[FK_OFS_NW_FRAG] = 3
                        key[FK_OFS_NW_PROTO] = nxt
                        wr16(key + FK_OFS_IPV6_EXTHDR, exthdr)
                        return 0
            else:
                break
        wr16(key + FK_OFS_IPV6_EXTHDR, exthdr)
        key[FK_OFS_NW_PROTO] = nxt
        if nxt == 0 or nxt == 43 or nxt == 60 or nxt == 51 or nxt == 44:
            return 1
        p.l4_proto = nxt
        p.l4_ofs = ofs
        return _parse_l4(d + ofs, size - ofs, nxt, 1, key)
    elif dl_type == ETH_TYPE_ARP or dl_type == ETH_TYPE_RARP:
        if size - ofs < 28:
            return 1
        if rd16(d + ofs) != 1 or rd16(d + ofs + 2) != ETH_TYPE_IP or d[ofs + 4] != 6 or d[ofs + 5] != 4:
            return 0
        p.l3_kind = 1
        if d[ofs + 6] == 0:
            key[FK_OFS_NW_PROTO] = d[ofs + 7]
        memcpy(key + FK_OFS_ARP_SHA, d + ofs + 8, 6)
        memcpy(key + FK_OFS_NW_SRC, d + ofs + 14, 4)
        memcpy(key + FK_OFS_ARP_THA, d + ofs + 18, 6)
        memcpy(key + FK_OFS_NW_DST, d + ofs + 24, 4)
    return 0


def parse_packet(bytes data, uint32_t in_port):
    """Extract the flow key of ``data`` received on ``in_port`` (bytes)."""
    cdef fp_packet p
    cdef bytearray key = bytearray(FLOW_KEY_SIZE)
    p.data = <uint8_t*><char*>data
    p.len = len(data)
    p.in_port = in_port
    p.flags = 0
    p.buf = NULL
    fp_parse(&p, <uint8_t*><char*>key)
    return bytes(key)


def parse_offsets(bytes data):
    """(l2_5, l3, l4, l3_kind, l4_proto, malformed) — for tests."""
    cdef fp_packet p
    cdef uint8_t key[FLOW_KEY_SIZE]
    p.data = <uint8_t*><char*>data
    p.len = len(data)
    p.in_port = 0
    p.flags = 0
    r = fp_parse(&p, key)
    return (p.l2_5_ofs, p.l3_ofs, p.l4_ofs, p.l3_kind, p.l4_proto, r)


def parse_repeat(bytes data, uint32_t in_port, int repeat):
    """Extract the key of ``data`` ``repeat`` times in C (benchmarks)."""
    cdef fp_packet p
    cdef uint8_t key[FLOW_KEY_SIZE]
    cdef int i
    p.data = <uint8_t*><char*>data
    p.len = len(data)
    p.in_port = in_port
    p.flags = 0
    with nogil:
        for i in range(repeat):
            fp_parse(&p, key)
    return bytes(key[:FLOW_KEY_SIZE])
