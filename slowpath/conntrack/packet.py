"""What conntrack needs to know about one frame, and how it rewrites it.

`parse()` finds the IP header behind Ethernet/VLAN, walks IPv6 extension
headers (fragment header included) and returns a `CtPacket`: the 5-tuple,
TCP sequence fields, ICMP type/id and, for ICMP errors, the tuple of the
packet quoted inside.  It never raises on bad input; it returns None (not IP:
+inv) or a packet with ``l4 = None`` (truncated).

Rewrites for NAT are in place on the frame's bytearray with RFC 1624
incremental checksum updates, so they also work on a first fragment whose L4
checksum covers bytes this frame does not hold.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from slowpath.odp_execute import csum_replace

ETH_IP, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8)
ICMP, TCP, UDP, ICMPV6, SCTP, UDPLITE = 1, 6, 17, 58, 132, 136
PORT_PROTOS = (TCP, UDP, SCTP, UDPLITE)

# ICMP request type <-> reply type (echo, timestamp, info, address mask; ICMPv6 echo)
ICMP_REPLY = {8: 0, 13: 14, 15: 16, 17: 18}
ICMP6_REPLY = {128: 129}
ICMP_PAIR = {**ICMP_REPLY, **{v: k for k, v in ICMP_REPLY.items()}}
ICMP6_PAIR = {**ICMP6_REPLY, **{v: k for k, v in ICMP6_REPLY.items()}}
ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
ICMP6_ERRORS = frozenset((1, 2, 3, 4))
V6_EXT = frozenset((0, 43, 60, 51, 44, 135, 139, 140))


class Tuple(NamedTuple):
    """A connection tuple as seen in one direction.  For ICMP ``sport`` is
    the echo id and ``dport`` the ICMP type (so a request and its reply are
    each other's reverse); for protocols without ports both are 0."""
    af: int        # 4 or 6
    src: int
    dst: int
    proto: int
    sport: int
    dport: int

    def reverse(self) -> "Tuple":
        if self.proto == ICMP:
            return Tuple(self.af, self.dst, self.src, ICMP, self.sport,
                         ICMP_PAIR.get(self.dport, self.dport))
        if self.proto == ICMPV6:
            return Tuple(self.af, self.dst, self.src, ICMPV6, self.sport,
                         ICMP6_PAIR.get(self.dport, self.dport))
        return Tuple(self.af, self.dst, self.src, self.proto, self.dport, self.sport)


class Inner(NamedTuple):
    """The packet an ICMP error quotes: its tuple and where its fields are."""
    tuple: Tuple
    l3: int
    l4: int | None       # None when fewer than 8 bytes of L4 are quoted


class CtPacket:
    __slots__ = ("af", "l3", "l4", "proto", "tuple", "frag", "frag_first", "frag_id",
                 "tcp_flags", "seq", "ack", "win", "wscale", "payload_len", "payload_off",
                 "icmp_type", "icmp_code", "inner", "l3_end")

    def __init__(self):
        self.l4 = None
        self.frag = False          # a fragment (first or later)
        self.frag_first = False
        self.frag_id = 0
        self.tcp_flags = 0
        self.seq = self.ack = self.win = 0
        self.wscale = None         # TCP window scale option value (SYN only)
        self.payload_len = 0
        self.payload_off = 0
        self.icmp_type = self.icmp_code = None
        self.inner: Inner | None = None


def _ip_header(frame, off: int):
    """(af, src, dst, proto, l4_offset_or_None, frag, first, frag_id, l3_end)
    of the IP header at ``off``, or None."""
    n = len(frame)
    if off + 1 > n:
        return None
    ver = frame[off] >> 4
    if ver == 4:
        if off + 20 > n:
            return None
        ihl = (frame[off] & 0x0F) * 4
        if ihl < 20 or off + ihl > n:
            return None
        total = struct.unpack_from("!H", frame, off + 2)[0]
        end = min(n, off + total) if total >= ihl else n
        fo = struct.unpack_from("!H", frame, off + 6)[0]
        frag = bool(fo & 0x3FFF)
        first = frag and not (fo & 0x1FFF)
        src, dst = struct.unpack_from("!II", frame, off + 12)
        l4 = off + ihl if not (fo & 0x1FFF) else None
        fid = struct.unpack_from("!H", frame, off + 4)[0]
        return 4, src, dst, frame[off + 9], l4, frag, first, fid, end
    if ver == 6:
        if off + 40 > n:
            return None
        plen = struct.unpack_from("!H", frame, off + 4)[0]
        end = min(n, off + 40 + plen)
        src = int.from_bytes(frame[off + 8:off + 24], "big")
        dst = int.from_bytes(frame[off + 24:off + 40], "big")
        nh, p = frame[off + 6], off + 40
        frag = first = False
        fid = 0
        while nh in V6_EXT:
            if p + 8 > n:
                return 6, src, dst, nh, None, frag, first, fid, end
            if nh == 44:
                fo = struct.unpack_from("!H", frame, p + 2)[0]
                frag = True
                first = not (fo & 0xFFF8)
                fid = struct.unpack_from("!I", frame, p + 4)[0]
                nh = frame[p]
                p += 8
                if not first:
                    return 6, src, dst, nh, None, frag, first, fid, end
                continue
            hlen = (frame[p + 1] + 2) * 4 if nh == 51 else (frame[p + 1] + 1) * 8
            nh, p = frame[p], p + hlen
        return 6, src, dst, nh, (p if p <= n else None), frag, first, fid, end
    return None


def _l4_tuple(frame, af, src, dst, proto, l4, end) -> Tuple | None:
    if proto in PORT_PROTOS:
        if l4 is None or l4 + 4 > end:
            return None
        sp, dp = struct.unpack_from("!HH", frame, l4)
        return Tuple(af, src, dst, proto, sp, dp)
    if proto in (ICMP, ICMPV6):
        if l4 is None or l4 + 8 > end:
            return None
        t = frame[l4]
        (ident,) = struct.unpack_from("!H", frame, l4 + 4)
        return Tuple(af, src, dst, proto, ident, t)
    return Tuple(af, src, dst, proto, 0, 0)


def l3_offset(frame) -> tuple[int, int] | None:
    if len(frame) < 14:
        return None
    off = 12
    (et,) = struct.unpack_from("!H", frame, off)
    while et in VLAN_TPIDS and len(frame) >= off + 6:
        off += 4
        (et,) = struct.unpack_from("!H", frame, off)
    if et not in (ETH_IP, ETH_IPV6):
        return None
    return off + 2, et


def parse(frame) -> CtPacket | None:
    """The conntrack view of ``frame``; None when it is not (sane) IP."""
    lo = l3_offset(frame)
    if lo is None:
        return None
    l3, et = lo
    h = _ip_header(frame, l3)
    if h is None or (h[0] == 4) != (et == ETH_IP):
        return None
    af, src, dst, proto, l4, frag, first, fid, end = h
    pkt = CtPacket()
    pkt.af, pkt.l3, pkt.proto, pkt.l3_end = af, l3, proto, end
    pkt.frag, pkt.frag_first, pkt.frag_id = frag, first, fid
    if frag and not first:
        pkt.tuple = Tuple(af, src, dst, proto, 0, 0)
        return pkt
    t = _l4_tuple(frame, af, src, dst, proto, l4, end)
    if t is None:
        pkt.tuple = Tuple(af, src, dst, proto, 0, 0)
        return pkt   # truncated L4: l4 stays None
    pkt.tuple, pkt.l4 = t, l4
    if proto == TCP:
        if l4 + 20 > end:
            pkt.l4 = None
            return pkt
        seq, ack, offfl, win = struct.unpack_from("!IIHH", frame, l4 + 4)
        doff = (offfl >> 12) * 4
        if doff < 20 or l4 + doff > end:
            pkt.l4 = None
            return pkt
        pkt.seq, pkt.ack, pkt.win, pkt.tcp_flags = seq, ack, win, offfl & 0x0FFF
        pkt.payload_len = end - l4 - doff if not frag else max(0, end - l4 - doff)
        pkt.payload_off = l4 + doff
        if offfl & 0x02:
            pkt.wscale = _wscale(frame, l4 + 20, l4 + doff)
    elif proto in (ICMP, ICMPV6):
        pkt.icmp_type, pkt.icmp_code = frame[l4], frame[l4 + 1]
        errors = ICMP_ERRORS if proto == ICMP else ICMP6_ERRORS
        if pkt.icmp_type in errors:
            pkt.inner = _inner(frame, l4 + 8, end, af)
    elif proto == UDP:
        pkt.payload_len = end - l4 - 8
    return pkt


def _wscale(frame, p: int, end: int) -> int | None:
    while p < end:
        kind = frame[p]
        if kind == 0:
            return None
        if kind == 1:
            p += 1
            continue
        if p + 1 >= end or frame[p + 1] < 2:
            return None
        if kind == 3 and frame[p + 1] == 3 and p + 2 < end:
            return frame[p + 2]
        p += frame[p + 1]
    return None


def _inner(frame, off: int, end: int, af: int) -> Inner | None:
    h = _ip_header(frame[:end], off)
    if h is None or h[0] != af:
        return None
    iaf, src, dst, proto, l4, frag, first, _fid, _iend = h
    if frag and not first:
        return None
    # The quoted header's total length exceeds what is quoted; use the frame end.
    if proto in PORT_PROTOS or proto in (ICMP, ICMPV6):
        if l4 is None or l4 + 8 > end:
            return None
        if proto in PORT_PROTOS:
            sp, dp = struct.unpack_from("!HH", frame, l4)
            t = Tuple(af, src, dst, proto, sp, dp)
        else:
            t = Tuple(af, src, dst, proto, struct.unpack_from("!H", frame, l4 + 4)[0], frame[l4])
        return Inner(t, off, l4)
    return Inner(Tuple(af, src, dst, proto, 0, 0), off, None)


# --- checksums and rewrites ---------------------------------------------------
def csum16(data) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def l4_csum_at(proto: int, l4: int | None) -> int | None:
    if l4 is None:
        return None
    return {TCP: l4 + 16, UDP: l4 + 6, ICMP: l4 + 2, ICMPV6: l4 + 2, UDPLITE: l4 + 6}.get(proto)


def set_addr(frame, l3: int, af: int, which: str, value: int, csums: list[tuple[int, bool]]) -> None:
    """Write the src/dst address of the IP header at ``l3``; ``csums`` are the
    (offset, is_udp_over_v4) of checksums covering it (L4 pseudo-headers)."""
    if af == 4:
        at = l3 + (12 if which == "src" else 16)
        old = bytes(frame[at:at + 4])
        new = value.to_bytes(4, "big")
        if old == new:
            return
        frame[at:at + 4] = new
        csum_replace(frame, l3 + 10, old, new, at)
    else:
        at = l3 + (8 if which == "src" else 24)
        old = bytes(frame[at:at + 16])
        new = value.to_bytes(16, "big")
        if old == new:
            return
        frame[at:at + 16] = new
    for c, udp in csums:
        csum_replace(frame, c, old, new, at, udp)


def set_u16(frame, at: int, value: int, csums: list[tuple[int, bool]]) -> None:
    old = bytes(frame[at:at + 2])
    new = value.to_bytes(2, "big")
    if old == new:
        return
    frame[at:at + 2] = new
    for c, udp in csums:
        csum_replace(frame, c, old, new, at, udp)


def fix_ipv4_csum(frame, l3: int) -> None:
    ihl = (frame[l3] & 0x0F) * 4
    if l3 + ihl > len(frame):
        return
    frame[l3 + 10:l3 + 12] = b"\0\0"
    struct.pack_into("!H", frame, l3 + 10, csum16(frame[l3:l3 + ihl]))


def fix_icmp_csum(frame, pkt: CtPacket) -> None:
    """Recompute the whole ICMP(v6) checksum (errors are never fragmented
    in practice and fit in one frame)."""
    l4, end = pkt.l4, pkt.l3_end
    frame[l4 + 2:l4 + 4] = b"\0\0"
    data = bytes(frame[l4:end])
    if pkt.af == 6:
        l3 = pkt.l3
        pseudo = bytes(frame[l3 + 8:l3 + 40]) + struct.pack("!IxxxB", len(data), ICMPV6)
        data = pseudo + data
    struct.pack_into("!H", frame, l4 + 2, csum16(data))
