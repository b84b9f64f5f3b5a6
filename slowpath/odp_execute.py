"""Executing datapath actions on one packet in Python (OVS's odp-execute.c).

The compiled fast paths execute most datapath actions themselves; some they
hand back (connection tracking, tunnel push/pop, anything needing Python
state), and then the whole action list of that packet runs here.  It is also
the plain reference the Cython executor is tested against.

`execute()` walks an action list over a `PacketState` (the frame as a
bytearray plus its flow key).  Header rewrites (``SetMasked``), VLAN
push/pop and truncation are done here with checksum fix-ups; what needs the
outside world goes through the `Environment` the caller provides: sending a
frame out of a datapath port, recirculating, meters.  Actions that other
parts of the switch implement (``Ct`` by conntrack, ``TunnelPush``/
``TunnelPop`` by the tunnel code) register a handler with `register()`, so
this module does not import them.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Protocol

from slowpath import dpactions as dp
from slowpath.fields import MEMBERS
from slowpath.flow import FlowKey, parse_packet

ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_ARP = 0x0800, 0x86DD, 0x0806
ETH_TYPES_MPLS = (0x8847, 0x8848)
VLAN_TPIDS = (0x8100, 0x88A8)
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_SCTP = 1, 6, 17, 58, 132

# Key members that live only in the key (datapath metadata), not in headers.
METADATA_MEMBERS = frozenset(m for m in MEMBERS if m.startswith(("tun_", "ct_"))) | {
    "pkt_mark", "skb_priority", "recirc_id", "dp_hash", "metadata", "regs"}


class Environment(Protocol):
    """What execution needs from the datapath around it."""

    def output(self, dp_port: int, frame: bytes, key: FlowKey) -> None: ...

    def recirculate(self, frame: bytes, key: FlowKey) -> None: ...

    def meter(self, meter_id: int, frame: bytes) -> bool:
        """True when the packet may pass."""


@dataclass
class PacketState:
    frame: bytearray
    key: FlowKey
    dropped: bool = False
    trunc: int | None = None  # max length of the next output only
    notes: list[str] = field(default_factory=list)


Handler = Callable[[PacketState, object, Environment], None]
_HANDLERS: dict[type, Handler] = {}


def register(action_type: type, handler: Handler) -> None:
    """Let another module execute ``action_type`` (e.g. Ct, TunnelPush)."""
    _HANDLERS[action_type] = handler


def execute(frame: bytes, key: FlowKey, actions, env: Environment) -> PacketState:
    """Run ``actions`` on ``frame`` whose flow key is ``key``."""
    state = PacketState(bytearray(frame), key.copy())
    run(state, actions, env)
    return state


def run(state: PacketState, actions, env: Environment) -> None:
    for a in actions:
        if state.dropped:
            return
        handler = _HANDLERS.get(type(a))
        if handler is None:
            raise NotImplementedError(f"no executor for datapath action {a}")
        handler(state, a, env)


# --- header layout ------------------------------------------------------------
@dataclass
class Layout:
    l3: int | None  # offset of the IP/ARP header
    eth_type: int
    l4: int | None  # offset of the TCP/UDP/ICMP header
    proto: int | None


def layout(frame: bytearray) -> Layout:
    """Where the headers are; tolerant of truncated frames (fields None)."""
    if len(frame) < 14:
        return Layout(None, 0, None, None)
    off = 12
    (eth_type,) = struct.unpack_from("!H", frame, off)
    for _ in range(2):  # at most two tags, like the flow key (and OVS)
        if eth_type not in VLAN_TPIDS or len(frame) < off + 6:
            break
        off += 4
        (eth_type,) = struct.unpack_from("!H", frame, off)
    l3 = off + 2
    # the version nibble must agree with the type, as the flow parsers require
    if eth_type == ETH_TYPE_IP and len(frame) >= l3 + 20 and frame[l3] >> 4 == 4:
        ihl = (frame[l3] & 0x0F) * 4
        frag = struct.unpack_from("!H", frame, l3 + 6)[0] & 0x1FFF
        l4 = l3 + ihl if not frag and len(frame) >= l3 + ihl else None
        return Layout(l3, eth_type, l4, frame[l3 + 9])
    if eth_type == ETH_TYPE_IPV6 and len(frame) >= l3 + 40 and frame[l3] >> 4 == 6:
        return Layout(l3, eth_type, l3 + 40, frame[l3 + 6])
    if eth_type == ETH_TYPE_ARP and len(frame) >= l3 + 28:
        return Layout(l3, eth_type, None, None)
    if eth_type in ETH_TYPES_MPLS and len(frame) >= l3 + 4:
        return Layout(l3, eth_type, None, None)  # l3: the outermost label stack entry
    return Layout(None, eth_type, None, None)


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), SCTP's checksum."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _sctp_fix(frame: bytearray, lay: Layout) -> None:
    """SCTP's CRC32c covers the whole packet: recompute it after a rewrite."""
    at = lay.l4 + 8
    if at + 4 > len(frame):
        return
    frame[at:at + 4] = b"\0\0\0\0"
    frame[at:at + 4] = crc32c(bytes(frame[lay.l4:])).to_bytes(4, "little")


def _csum_fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum_replace(frame: bytearray, at: int, old: bytes, new: bytes, data_at: int,
                  udp: bool = False) -> None:
    """RFC 1624 incremental update of the 16-bit checksum at ``at`` for
    bytes that changed at ``data_at`` (headers start at even offsets, so the
    parity of ``data_at`` tells which half of a 16-bit word a byte is)."""
    if at + 2 > len(frame):
        return
    (c,) = struct.unpack_from("!H", frame, at)
    if udp and c == 0:
        return  # UDP over IPv4 without checksum stays without
    if data_at % 2:
        old, new = b"\0" + old, b"\0" + new
    if len(old) % 2:
        old, new = old + b"\0", new + b"\0"
    s = ~c & 0xFFFF
    for i in range(0, len(old), 2):
        s += (~struct.unpack_from("!H", old, i)[0] & 0xFFFF) + struct.unpack_from("!H", new, i)[0]
    c = ~_csum_fold(s) & 0xFFFF
    if udp and c == 0:
        c = 0xFFFF
    struct.pack_into("!H", frame, at, c)


def _l4_csum_at(lay: Layout) -> tuple[int, bool] | None:
    if lay.l4 is None:
        return None
    if lay.proto == IPPROTO_TCP:
        return lay.l4 + 16, False
    if lay.proto == IPPROTO_UDP:
        return lay.l4 + 6, True
    if lay.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        return lay.l4 + 2, False
    return None


def _rewrite(frame: bytearray, at: int, size: int, value: int, mask: int,
             lay: Layout, pseudo: bool, ip_csum: bool) -> None:
    """Masked write of ``size`` bytes at ``at`` with checksum fix-ups.

    ``pseudo``: the bytes are in the L4 pseudo-header (IP addresses);
    ``ip_csum``: they are covered by the IPv4 header checksum.
    """
    if at + size > len(frame):
        return
    old = bytes(frame[at:at + size])
    cur = int.from_bytes(old, "big")
    new = ((cur & ~mask) | (value & mask)).to_bytes(size, "big")
    if new == old:
        return
    frame[at:at + size] = new
    if ip_csum and lay.l3 is not None:
        csum_replace(frame, lay.l3 + 10, old, new, at)
    csum = _l4_csum_at(lay)
    in_l4 = lay.l4 is not None and at >= lay.l4
    pseudo = pseudo and lay.proto != IPPROTO_ICMP  # ICMPv4 has no pseudo-header
    if csum and (pseudo or in_l4) and at != csum[0]:
        csum_replace(frame, csum[0], old, new, at,
                      udp=csum[1] and lay.eth_type == ETH_TYPE_IP)


def _nd_lla_option(frame: bytearray, at: int, kind: int) -> int | None:
    """Offset of the 6-byte address in the first ND option of ``kind``
    (1: source, 2: target link-layer address) from ``at`` on, or None."""
    while at + 8 <= len(frame):
        otype, olen = frame[at], frame[at + 1]
        if olen == 0:
            return None
        if otype == kind and olen == 1:
            return at + 2
        at += 8 * olen
    return None


def _set_masked(state: PacketState, a: dp.SetMasked, env: Environment) -> None:
    key, frame = state.key, state.frame
    off, size = MEMBERS[a.member]
    full = (1 << (8 * size)) - 1
    cur = int.from_bytes(key.buf[off:off + size], "big")
    key.buf[off:off + size] = ((cur & ~a.mask) | (a.value & a.mask) & full).to_bytes(size, "big")
    if a.member in METADATA_MEMBERS:
        return
    lay = layout(frame)
    v4 = lay.eth_type == ETH_TYPE_IP and lay.l3 is not None
    v6 = lay.eth_type == ETH_TYPE_IPV6 and lay.l3 is not None
    arp = lay.eth_type == ETH_TYPE_ARP and lay.l3 is not None
    m = a.member
    if m in ("dl_dst", "dl_src"):
        _rewrite(frame, 0 if m == "dl_dst" else 6, 6, a.value, a.mask, lay, False, False)
    elif m == "vlan0_tci" and len(frame) >= 16 and struct.unpack_from("!H", frame, 12)[0] in VLAN_TPIDS:
        # The key's CFI bit means "tag present"; the wire carries DEI there.
        _rewrite(frame, 14, 2, a.value, a.mask & 0xEFFF, lay, False, False)
    elif v4 and m in ("nw_src", "nw_dst"):
        _rewrite(frame, lay.l3 + (12 if m == "nw_src" else 16), 4, a.value, a.mask, lay, True, True)
    elif v4 and m == "nw_tos":
        _rewrite(frame, lay.l3 + 1, 1, a.value, a.mask, lay, False, True)
    elif v4 and m == "nw_ttl":
        _rewrite(frame, lay.l3 + 8, 1, a.value, a.mask, lay, False, True)
    elif v6 and m in ("ipv6_src", "ipv6_dst"):
        _rewrite(frame, lay.l3 + (8 if m == "ipv6_src" else 24), 16, a.value, a.mask, lay, True, False)
    elif v6 and m == "nw_ttl":
        _rewrite(frame, lay.l3 + 7, 1, a.value, a.mask, lay, False, False)
    elif v6 and m == "nw_tos":
        # Traffic class straddles the first two 16-bit words.
        word = struct.unpack_from("!H", frame, lay.l3)[0]
        tc = ((word >> 4) & 0xFF & ~a.mask) | (a.value & a.mask)
        struct.pack_into("!H", frame, lay.l3, (word & 0xF00F) | (tc << 4))
    elif v6 and m == "ipv6_label":
        _rewrite(frame, lay.l3, 4, a.value, a.mask & 0xFFFFF, lay, False, False)
    elif m in ("tp_src", "tp_dst") and lay.l4 is not None and lay.proto in (
            IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP):
        _rewrite(frame, lay.l4 + (0 if m == "tp_src" else 2), 2, a.value, a.mask, lay, False, False)
        if lay.proto == IPPROTO_SCTP:
            _sctp_fix(frame, lay)
    elif (v6 and m == "nd_target" and lay.proto == IPPROTO_ICMPV6
          and lay.l4 + 24 <= len(frame) and frame[lay.l4] in (135, 136)):
        _rewrite(frame, lay.l4 + 8, 16, a.value, a.mask, lay, False, False)
    elif (v6 and m in ("arp_sha", "arp_tha") and lay.proto == IPPROTO_ICMPV6
          and lay.l4 + 24 <= len(frame) and frame[lay.l4] in (135, 136)):
        # nd_sll / nd_tll: the link-layer address option of an NS / NA
        # (OVN's nd_na: ovn-controller builds the NA, the switch sets nd_tll)
        at = _nd_lla_option(frame, lay.l4 + 24, 1 if m == "arp_sha" else 2)
        if at is not None:
            _rewrite(frame, at, 6, a.value, a.mask, lay, False, False)
    elif arp and m == "nw_proto":
        _rewrite(frame, lay.l3 + 7, 1, a.value, a.mask, lay, False, False)  # ARP opcode
    elif m == "mpls_lse" and (at := _mpls_at(frame)) is not None:
        # behind any number of tags, as push/pop_mpls find it (and the Cython executor)
        _rewrite(frame, at, 4, a.value, a.mask, lay, False, False)
    elif m in ("tp_src", "tp_dst") and lay.l4 is not None and lay.proto in (
            IPPROTO_ICMP, IPPROTO_ICMPV6):
        # ICMP type and code live in the low byte of tp_src / tp_dst.
        _rewrite(frame, lay.l4 + (0 if m == "tp_src" else 1), 1, a.value & 0xFF,
                 a.mask & 0xFF, lay, False, False)
    elif arp and m in ("nw_src", "nw_dst"):
        _rewrite(frame, lay.l3 + (14 if m == "nw_src" else 24), 4, a.value, a.mask, lay, False, False)
    elif arp and m in ("arp_sha", "arp_tha"):
        _rewrite(frame, lay.l3 + (8 if m == "arp_sha" else 18), 6, a.value, a.mask, lay, False, False)
    else:
        state.notes.append(f"set of {m} not applicable to this packet")


def _push_vlan(state: PacketState, a: dp.PushVlan, env: Environment) -> None:
    f = state.frame
    if len(f) < 14:
        state.dropped = True
        return
    f[12:12] = struct.pack("!HH", a.tpid, a.tci & 0xEFFF)
    _refresh_l2(state)


def _pop_vlan(state: PacketState, a: dp.PopVlan, env: Environment) -> None:
    f = state.frame
    if len(f) >= 18 and struct.unpack_from("!H", f, 12)[0] in VLAN_TPIDS:
        del f[12:16]
    _refresh_l2(state)


def _refresh_l2(state: PacketState) -> None:
    """VLAN changes shift headers; re-derive the key's L2 view, keeping metadata."""
    fresh = parse_packet(bytes(state.frame), state.key.in_port)
    for m in ("vlan0_tpid", "vlan0_tci", "vlan1_tpid", "vlan1_tci", "dl_type"):
        setattr(state.key, m, getattr(fresh, m))


def _ethertype_offset(f) -> int:
    """Where the Ethernet type that follows the VLAN tags is."""
    off = 12
    while off + 4 <= len(f) and struct.unpack_from("!H", f, off)[0] in VLAN_TPIDS:
        off += 4
    return off


def _mpls_at(f) -> int | None:
    """Offset of the outermost MPLS label stack entry, or None."""
    o = _ethertype_offset(f)
    if o + 6 <= len(f) and struct.unpack_from("!H", f, o)[0] in ETH_TYPES_MPLS:
        return o + 2
    return None


def _reparse(state: PacketState) -> None:
    """MPLS changes move every header: re-extract the packet's members of
    the key, keeping its metadata (the members before dl_dst, as the Cython
    executor does)."""
    fresh = parse_packet(bytes(state.frame), state.key.in_port)
    meta = MEMBERS["dl_dst"][0]
    state.key.buf[meta:] = fresh.buf[meta:]


def _push_mpls(state: PacketState, a: dp.PushMpls, env: Environment) -> None:
    f = state.frame
    o = _ethertype_offset(f)
    if o + 2 > len(f):
        state.dropped = True
        return
    f[o:o + 2] = struct.pack("!HI", a.ethertype, a.lse & 0xFFFFFFFF)
    _reparse(state)


def _pop_mpls(state: PacketState, a: dp.PopMpls, env: Environment) -> None:
    f = state.frame
    o = _ethertype_offset(f)
    if o + 6 <= len(f) and struct.unpack_from("!H", f, o)[0] in (0x8847, 0x8848):
        f[o:o + 6] = struct.pack("!H", a.ethertype)
        _reparse(state)


def _trunc(state: PacketState, a: dp.Trunc, env: Environment) -> None:
    state.trunc = a.max_len  # as in OVS: for the next output only


def _output(state: PacketState, a: dp.Output, env: Environment) -> None:
    frame = bytes(state.frame if state.trunc is None else state.frame[:state.trunc])
    state.trunc = None
    env.output(a.dp_port, frame, state.key)


def _recirc(state: PacketState, a: dp.Recirc, env: Environment) -> None:
    key = state.key.copy()
    key.recirc_id = a.recirc_id
    env.recirculate(bytes(state.frame), key)


def _meter(state: PacketState, a: dp.Meter, env: Environment) -> None:
    if not env.meter(a.meter_id, bytes(state.frame)):
        state.dropped = True


def _clone(state: PacketState, a: dp.Clone, env: Environment) -> None:
    inner = PacketState(bytearray(state.frame), state.key.copy())
    run(inner, a.actions, env)


def l2_len_without_vlans(frame) -> int:
    """The length check_pkt_len compares: the frame minus its VLAN tags."""
    n, off = len(frame), 12
    while off + 4 <= len(frame) and frame[off:off + 2] in (b"\x81\x00", b"\x88\xa8"):
        n -= 4
        off += 4
    return n


def _check_pkt_len(state: PacketState, a: dp.CheckPktLen, env: Environment) -> None:
    # on a copy: what follows sees the packet unchanged (as OVS's datapath,
    # which runs the branch in place only when nothing follows)
    inner = PacketState(bytearray(state.frame), state.key.copy())
    run(inner, a.gt if l2_len_without_vlans(state.frame) > a.pkt_len else a.le, env)


def _sample(state: PacketState, a: dp.Sample, env: Environment) -> None:
    if random.random() * 0xFFFFFFFF < a.probability:
        _clone(state, dp.Clone(a.actions), env)


def _hash(state: PacketState, a: dp.Hash, env: Environment) -> None:
    k = state.key
    l4 = b"".join(k.buf[o:o + s] for o, s in (MEMBERS[m] for m in (
        "nw_src", "nw_dst", "ipv6_src", "ipv6_dst", "nw_proto", "tp_src", "tp_dst")))
    state.key.dp_hash = zlib.crc32(l4, a.basis) & 0xFFFFFFFF


def _userspace(state: PacketState, a: dp.Userspace, env: Environment) -> None:
    pass  # packet-ins come from the translation that produced these actions


def _ct_clear(state: PacketState, a: dp.CtClear, env: Environment) -> None:
    for m in [m for m in MEMBERS if m.startswith("ct_")]:
        off, size = MEMBERS[m]
        state.key.buf[off:off + size] = bytes(size)


for _t, _h in ((dp.SetMasked, _set_masked), (dp.PushVlan, _push_vlan),
               (dp.PopVlan, _pop_vlan), (dp.Trunc, _trunc), (dp.Output, _output),
               (dp.Recirc, _recirc), (dp.Meter, _meter), (dp.Clone, _clone),
               (dp.Sample, _sample), (dp.Hash, _hash), (dp.Userspace, _userspace),
               (dp.CtClear, _ct_clear), (dp.CheckPktLen, _check_pkt_len),
               (dp.PushMpls, _push_mpls), (dp.PopMpls, _pop_mpls)):
    register(_t, _h)
