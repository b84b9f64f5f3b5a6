"""GENEVE (RFC 8926): wire codec, tunnel port options, TLV map, encap/decap.

Sans-IO like the rest of ``slowpath/``: bytes and flow keys in, bytes and
flow keys out.  The daemon's tunnel ports (``vswitch/ports/geneve.py``) do
the sockets; xlate and the fast paths can call the same functions.

Wire format (RFC 8926 §3.4)::

    |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
    |        Virtual Network Identifier (VNI)       |    Reserved   |
    |    Option Class  |     Type     |R|R|R| Length  |  data ...    |

``Opt Len`` counts the option bytes in 4-byte words (at most 252 bytes);
each option's ``Length`` counts its data in 4-byte words (at most 124 bytes).
Option types with the high bit set (0x80) are *critical*: a receiver that
does not understand one must drop the packet (§3.5.1).  Here "understand"
means "the bridge's TLV map (``ovs-ofctl add-tlv-map``) maps its class and
type to a ``tun_metadataN`` field", as in Open vSwitch.

Decoding never raises anything but `GeneveError`, whose ``reason`` is the
name of the drop counter (`DROP_REASONS`).

Tunnel metadata in the flow key (``slowpath/fields.py``): ``tun_id`` (VNI),
``tun_src``/``tun_dst`` (outer IPv4, as received: src = remote),
``tun_ipv6_src``/``tun_ipv6_dst``, ``tun_tos``/``tun_ttl``,
``tun_tp_src``/``tun_tp_dst`` (outer UDP ports), ``tun_flags`` (bit 0: OAM,
the O bit, OVS's public ``oam`` flag), and per mapped option *i* of the TLV
map ``tun_md_opts[4i:4i+4]`` = (class, type, length) plus
``tun_md_data[8i:8i+8]`` = data, left-aligned — exactly what
``tun_metadata<i>`` matches.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import zlib
from dataclasses import dataclass, field

from slowpath import dpactions as dp
from slowpath.fields import MEMBERS
from slowpath.flow import FlowKey, parse_packet

GENEVE_PORT = 6081
GENEVE_HLEN = 8
GENEVE_VER = 0
GENEVE_OPT_MAX = 252          # Opt Len is 6 bits of 4-byte words
GENEVE_OPT_DATA_MAX = 124     # an option's Length is 5 bits of 4-byte words
GENEVE_F_OAM = 0x80           # in the second header byte
GENEVE_F_CRITICAL = 0x40
GENEVE_CRIT_OPT_TYPE = 0x80
ETH_P_TEB = 0x6558            # Transparent Ethernet Bridging: inner Ethernet frame
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
PROTO_TYPES = (ETH_P_TEB, ETH_P_IP, ETH_P_IPV6)
IPPROTO_UDP = 17

FLOW_TNL_F_OAM = 0x1          # tun_flags bit, ovs-ofctl "tun_flags=+oam"
TLV_SLOTS = 8                 # tun_metadata0..7 (fields.py)
TLV_SLOT_BYTES = 8
SPORT_MIN, SPORT_MAX = 32768, 60999   # OVS's tunnel source port range (RFC 8926 §3.3)

#: Why a received packet was dropped: the counters the tunnel ports keep.
DROP_REASONS = (
    "truncated",                 # shorter than its headers say
    "bad_version",               # Ver != 0
    "bad_option_length",         # an option runs past Opt Len
    "unknown_critical_option",   # critical option the TLV map does not know
    "option_length_mismatch",    # mapped option whose length differs from the map
    "unsupported_protocol",      # protocol type this port does not carry
    "bad_outer_header",          # outer IP/UDP not what a tunnel packet is
    "fragment",                  # outer IP fragment (we do not reassemble)
    "no_port",                   # no tunnel port accepts (remote, local, VNI)
)


class GeneveError(ValueError):
    """A malformed or unacceptable tunnel packet; ``reason`` names the counter."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in DROP_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --- GENEVE header -----------------------------------------------------------
@dataclass(frozen=True)
class GeneveOption:
    cls: int
    type: int
    data: bytes

    @property
    def critical(self) -> bool:
        return bool(self.type & GENEVE_CRIT_OPT_TYPE)


@dataclass(frozen=True)
class GeneveHeader:
    vni: int
    options: tuple[GeneveOption, ...] = ()
    oam: bool = False
    critical: bool = False      # the C bit as received (pushed: derived)
    proto: int = ETH_P_TEB


def encode_options(options) -> bytes:
    """Options (GeneveOption or (class, type, data)) to wire bytes; data is
    zero-padded to a multiple of 4 bytes."""
    out = bytearray()
    for o in options:
        cls, typ, data = (o.cls, o.type, o.data) if isinstance(o, GeneveOption) else o
        data = bytes(data)
        data += bytes(-len(data) % 4)
        if len(data) > GENEVE_OPT_DATA_MAX:
            raise ValueError(f"GENEVE option data of {len(data)} bytes (max {GENEVE_OPT_DATA_MAX})")
        out += struct.pack("!HBB", cls & 0xFFFF, typ & 0xFF, len(data) // 4) + data
    if len(out) > GENEVE_OPT_MAX:
        raise ValueError(f"GENEVE options of {len(out)} bytes (max {GENEVE_OPT_MAX})")
    return bytes(out)


def decode_options(buf: bytes) -> tuple[GeneveOption, ...]:
    opts, off, n = [], 0, len(buf)
    while off < n:
        if off + 4 > n:
            raise GeneveError("bad_option_length", f"option header at {off} of {n}")
        cls, typ, ln = struct.unpack_from("!HBB", buf, off)
        dlen = (ln & 0x1F) * 4
        if off + 4 + dlen > n:
            raise GeneveError("bad_option_length", f"option {cls:#x}/{typ:#x} of {dlen} bytes")
        opts.append(GeneveOption(cls, typ, bytes(buf[off + 4:off + 4 + dlen])))
        off += 4 + dlen
    return tuple(opts)


def push_geneve(payload: bytes, vni: int, options=b"", oam: bool = False,
                proto: int = ETH_P_TEB) -> bytes:
    """GENEVE header + payload.  ``options`` is wire bytes or a list of
    options; the C bit is set when any option is critical."""
    opts = options if isinstance(options, (bytes, bytearray)) else encode_options(options)
    if len(opts) % 4 or len(opts) > GENEVE_OPT_MAX:
        raise ValueError(f"bad GENEVE options length {len(opts)}")
    crit = any(o.critical for o in decode_options(opts))
    flags = (GENEVE_F_OAM if oam else 0) | (GENEVE_F_CRITICAL if crit else 0)
    return struct.pack("!BBHI", (GENEVE_VER << 6) | (len(opts) // 4), flags, proto,
                       (vni & 0xFFFFFF) << 8) + bytes(opts) + bytes(payload)


def pull_geneve(buf: bytes) -> tuple[GeneveHeader, bytes]:
    """Parse a GENEVE header; returns (header, payload)."""
    if len(buf) < GENEVE_HLEN:
        raise GeneveError("truncated", f"{len(buf)} bytes")
    b0, b1, proto, w = struct.unpack_from("!BBHI", buf)
    if b0 >> 6 != GENEVE_VER:
        raise GeneveError("bad_version", str(b0 >> 6))
    hlen = GENEVE_HLEN + (b0 & 0x3F) * 4
    if len(buf) < hlen:
        raise GeneveError("truncated", f"options need {hlen} bytes, have {len(buf)}")
    opts = decode_options(buf[GENEVE_HLEN:hlen])
    hdr = GeneveHeader(w >> 8, opts, bool(b1 & GENEVE_F_OAM), bool(b1 & GENEVE_F_CRITICAL),
                       proto)
    return hdr, bytes(buf[hlen:])


# --- outer IP/UDP ------------------------------------------------------------
def _csum(data: bytes, s: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    s += sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    """UDP checksum over the IPv4 or IPv6 pseudo-header (0 is sent as 0xffff)."""
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, IPPROTO_UDP, len(udp))
    else:
        pseudo = src + dst + struct.pack("!I3xB", len(udp), IPPROTO_UDP)
    return _csum(pseudo + udp) or 0xFFFF


@dataclass(frozen=True)
class Outer:
    """The outer headers of a received (or to be sent) tunnel packet."""
    src: str
    dst: str
    sport: int
    dport: int = GENEVE_PORT
    tos: int = 0
    ttl: int = 64
    df: bool = True
    csum: bool = False


def push_udp_ip(payload: bytes, o: Outer, ident: int = 0) -> bytes:
    """IPv4 or IPv6 + UDP + payload, checksums filled (UDP's only with
    ``o.csum``; over IPv6 always, RFC 8200 §8.1)."""
    src, dst = ipaddress.ip_address(o.src), ipaddress.ip_address(o.dst)
    if src.version != dst.version:
        raise ValueError(f"mixed address families {o.src} -> {o.dst}")
    ulen = 8 + len(payload)
    udp = struct.pack("!HHHH", o.sport, o.dport, ulen, 0) + payload
    if o.csum or src.version == 6:
        udp = udp[:6] + struct.pack("!H", udp_checksum(src.packed, dst.packed, udp)) + udp[8:]
    if src.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, o.tos & 0xFF, 20 + ulen, ident & 0xFFFF,
                         0x4000 if o.df else 0, o.ttl & 0xFF, IPPROTO_UDP, 0,
                         src.packed, dst.packed)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        return ip + udp
    ver_tc_fl = (6 << 28) | ((o.tos & 0xFF) << 20)
    return struct.pack("!IHBB16s16s", ver_tc_fl, ulen, IPPROTO_UDP, o.ttl & 0xFF,
                       src.packed, dst.packed) + udp


def pull_udp_ip(pkt: bytes, verify_csum: bool = True) -> tuple[Outer, bytes]:
    """Parse outer IPv4/IPv6 + UDP; returns (outer, UDP payload)."""
    if len(pkt) < 1:
        raise GeneveError("truncated", "empty")
    ver = pkt[0] >> 4
    if ver == 4:
        if len(pkt) < 20:
            raise GeneveError("truncated", "IPv4 header")
        ihl = (pkt[0] & 0xF) * 4
        tot, frag, proto = struct.unpack_from("!H", pkt, 2)[0], \
            struct.unpack_from("!H", pkt, 6)[0], pkt[9]
        if ihl < 20 or tot < ihl + 8 or len(pkt) < tot:
            raise GeneveError("truncated" if len(pkt) < tot else "bad_outer_header", "IPv4 lengths")
        if frag & 0x3FFF:
            raise GeneveError("fragment")
        if proto != IPPROTO_UDP:
            raise GeneveError("bad_outer_header", f"IP protocol {proto}")
        srcb, dstb = bytes(pkt[12:16]), bytes(pkt[16:20])
        tos, ttl, df, l4, end = pkt[1], pkt[8], bool(frag & 0x4000), ihl, tot
    elif ver == 6:
        if len(pkt) < 48:
            raise GeneveError("truncated", "IPv6 header")
        plen, nh, hlim = struct.unpack_from("!HBB", pkt, 4)
        if nh != IPPROTO_UDP:
            raise GeneveError("bad_outer_header", f"IPv6 next header {nh}")
        if len(pkt) < 40 + plen or plen < 8:
            raise GeneveError("truncated", "IPv6 payload")
        srcb, dstb = bytes(pkt[8:24]), bytes(pkt[24:40])
        tos = (struct.unpack_from("!H", pkt, 0)[0] >> 4) & 0xFF
        ttl, df, l4, end = hlim, False, 40, 40 + plen
    else:
        raise GeneveError("bad_outer_header", f"IP version {ver}")
    sport, dport, ulen, csum = struct.unpack_from("!HHHH", pkt, l4)
    if ulen < 8 or l4 + ulen > end:
        raise GeneveError("truncated" if l4 + ulen > end else "bad_outer_header", "UDP length")
    udp = bytes(pkt[l4:l4 + ulen])
    if verify_csum and csum and udp_checksum(srcb, dstb, udp[:6] + b"\0\0" + udp[8:]) != csum:
        raise GeneveError("bad_outer_header", "UDP checksum")
    o = Outer(str(ipaddress.ip_address(srcb)), str(ipaddress.ip_address(dstb)), sport, dport,
              tos, ttl, df, bool(csum))
    return o, udp[8:]


# --- TLV map -----------------------------------------------------------------
class TlvMap:
    """GENEVE option (class, type, length) <-> ``tun_metadata<index>`` —
    the bridge's NXT_TLV_TABLE_MOD table, ``{index: (class, type, len)}``."""

    def __init__(self, mapping: dict[int, tuple[int, int, int]] | None = None):
        self.by_index = dict(mapping or {})
        self.by_key = {(c, t): (i, ln) for i, (c, t, ln) in self.by_index.items()}

    def __eq__(self, other):
        return isinstance(other, TlvMap) and self.by_index == other.by_index

    def to_key(self, key: FlowKey, options) -> None:
        """Store received options in ``key`` (OVS tun_metadata_from_geneve):
        mapped options fill their slot; an unmapped critical option or a
        mapped one of the wrong length is an error (drop)."""
        o_ofs, _ = MEMBERS["tun_md_opts"]
        d_ofs, _ = MEMBERS["tun_md_data"]
        for opt in options:
            hit = self.by_key.get((opt.cls, opt.type))
            if hit is None:
                if opt.critical:
                    raise GeneveError("unknown_critical_option",
                                      f"class={opt.cls:#x},type={opt.type:#x}")
                continue
            index, ln = hit
            if ln != len(opt.data) or not 0 <= index < TLV_SLOTS or ln > TLV_SLOT_BYTES:
                raise GeneveError("option_length_mismatch",
                                  f"class={opt.cls:#x},type={opt.type:#x} len {len(opt.data)}")
            key.buf[o_ofs + 4 * index:o_ofs + 4 * index + 4] = struct.pack(
                "!HBB", opt.cls, opt.type, ln)
            s = d_ofs + TLV_SLOT_BYTES * index
            key.buf[s:s + TLV_SLOT_BYTES] = opt.data.ljust(TLV_SLOT_BYTES, b"\0")

    def from_key(self, key: FlowKey) -> tuple[GeneveOption, ...]:
        """The options a packet with ``key`` carries out of a tunnel: every
        mapped slot that is present (received with the packet) or set
        (non-zero data), in index order."""
        o_ofs, _ = MEMBERS["tun_md_opts"]
        d_ofs, _ = MEMBERS["tun_md_data"]
        out = []
        for index in sorted(self.by_index):
            if not 0 <= index < TLV_SLOTS:
                continue
            cls, typ, ln = self.by_index[index]
            s = d_ofs + TLV_SLOT_BYTES * index
            data = bytes(key.buf[s:s + TLV_SLOT_BYTES])
            present = any(key.buf[o_ofs + 4 * index:o_ofs + 4 * index + 4])
            if present or any(data):
                out.append(GeneveOption(cls, typ, data[:ln]))
        return tuple(out)


# --- tunnel port options (OVS Interface.options for type=geneve) --------------
@dataclass(frozen=True)
class TunnelConfig:
    """A geneve port's options.  ``None`` for remote_ip/key means ``flow``."""
    remote_ip: str | None = None
    local_ip: str | None = None
    key: int | None = 0
    dst_port: int = GENEVE_PORT
    csum: bool = False
    tos: int | str = 0          # number or "inherit"
    ttl: int | str = 64         # number or "inherit"
    df_default: bool = True
    packet_type: str = "legacy_l2"
    #: Native tunnelling (set by the daemon, never by options): how to reach
    #: a fixed remote_ip through a datapath port, as a `NativeRoute`; then
    #: `tunnel_push` prebuilds the outer Ethernet/IP/UDP/GENEVE header and
    #: the fast path encapsulates by itself.
    route: "NativeRoute | None" = None
    #: The same for ``remote_ip=flow``: ((destination, NativeRoute), ...)
    #: for the destinations the daemon has resolved.
    flow_routes: tuple = ()

    @property
    def families(self) -> tuple[int, ...]:
        """Underlay address families (4, 6) this port sends/receives on."""
        ip = self.remote_ip or self.local_ip
        if ip is None:
            return (4, 6)    # remote_ip=flow, no local_ip: either
        return (6,) if ":" in ip else (4,)


@dataclass(frozen=True)
class NativeRoute:
    """Where encapsulated packets to a remote go: out of datapath port
    ``out_dp_port`` from ``src_mac``/``src_ip`` to the next hop ``dst_mac``."""
    out_dp_port: int
    src_mac: str
    dst_mac: str
    src_ip: str
    mtu: int = 0       # IP MTU towards the remote (0: unknown)


def _bool(name: str, v: str) -> bool:
    if v.lower() in ("true", "1", "yes", "on"):
        return True
    if v.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name}: bad boolean {v!r}")


_KNOWN_OPTIONS = ("remote_ip", "local_ip", "key", "in_key", "out_key", "dst_port", "csum",
                  "tos", "ttl", "df_default", "packet_type")


def parse_tunnel_options(options: dict[str, str]) -> TunnelConfig:
    """Interface.options -> TunnelConfig; ValueError with OVS-like wording."""
    unknown = sorted(set(options) - set(_KNOWN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown geneve option(s): {', '.join(unknown)}")
    remote = options.get("remote_ip")
    if not remote:
        raise ValueError("geneve type requires 'remote_ip' argument")
    if remote != "flow":
        ipaddress.ip_address(remote)
    local = options.get("local_ip") or None
    if local is not None and local != "flow":
        ipaddress.ip_address(local)
    if local == "flow":
        raise ValueError("local_ip=flow is not supported")
    if remote != "flow" and local is not None and \
            ipaddress.ip_address(remote).version != ipaddress.ip_address(local).version:
        raise ValueError("remote_ip and local_ip are of different address families")
    kv = options.get("key", options.get("in_key", options.get("out_key", "0")))
    key = None if kv == "flow" else int(kv, 0)
    if key is not None and not 0 <= key < 1 << 24:
        raise ValueError(f"key {kv} out of the 24-bit VNI range")
    port = int(options.get("dst_port", GENEVE_PORT))
    if not 0 < port < 65536:
        raise ValueError(f"bad dst_port {port}")
    tos = options.get("tos", "0")
    tos = tos if tos == "inherit" else int(tos, 0)
    ttl = options.get("ttl", "64")
    ttl = ttl if ttl == "inherit" else int(ttl, 0)
    if isinstance(tos, int) and not 0 <= tos < 256 or isinstance(ttl, int) and not 0 < ttl < 256:
        raise ValueError("tos/ttl out of range")
    ptype = options.get("packet_type", "legacy_l2")
    if ptype not in ("legacy_l2", "legacy_l3"):
        raise ValueError(f"packet_type {ptype} is not supported (legacy_l2, legacy_l3)")
    return TunnelConfig(None if remote == "flow" else str(ipaddress.ip_address(remote)),
                        local and str(ipaddress.ip_address(local)), key, port,
                        _bool("csum", options.get("csum", "false")), tos, ttl,
                        _bool("df_default", options.get("df_default", "true")), ptype)


def accepts(cfg: TunnelConfig, outer: Outer, vni: int) -> int:
    """How well a port takes a received packet: 0 = not at all, higher =
    more specific (fixed remote beats flow, fixed key beats flow), as OVS's
    tnl_port_receive lookup order."""
    if cfg.dst_port != outer.dport:
        return 0
    if cfg.local_ip is not None and cfg.local_ip != outer.dst:
        return 0
    if cfg.remote_ip is not None and cfg.remote_ip != outer.src:
        return 0
    if cfg.key is not None and cfg.key != vni:
        return 0
    return 1 + (cfg.remote_ip is not None) * 2 + (cfg.key is not None)


# --- decap: outer packet -> inner frame + key ---------------------------------
_ZERO_ETH = bytes(12)


def decap(outer: Outer, payload: bytes, tlv: TlvMap, in_port: int,
          cfg: TunnelConfig | None = None, parse: bool = True) -> tuple[bytes, FlowKey]:
    """GENEVE payload of a UDP datagram -> (inner Ethernet frame, flow key
    with the tunnel metadata and ``in_port``).  ``parse=False`` leaves the
    key's header fields zero (for a datapath that re-parses the frame)."""
    hdr, inner = pull_geneve(payload)
    l3 = cfg is not None and cfg.packet_type == "legacy_l3"
    if hdr.proto == ETH_P_TEB and not l3:
        pass
    elif hdr.proto in (ETH_P_IP, ETH_P_IPV6) and l3:
        inner = _ZERO_ETH + struct.pack("!H", hdr.proto) + inner   # OVS legacy_l3
    else:
        raise GeneveError("unsupported_protocol", f"{hdr.proto:#06x}")
    if len(inner) < 14:
        raise GeneveError("truncated", "inner frame")
    if parse:
        key = parse_packet(inner, in_port)
    else:
        key = FlowKey()
        key.in_port = in_port
    tlv.to_key(key, hdr.options)
    fill_tunnel_key(key, outer, hdr)
    return inner, key


@functools.lru_cache(maxsize=4096)
def _ip(s: str) -> tuple[int, int]:
    """(version, value) of an address; tunnel endpoints repeat, so cached."""
    a = ipaddress.ip_address(s)
    return a.version, int(a)


def fill_tunnel_key(key: FlowKey, outer: Outer, hdr: GeneveHeader) -> None:
    key.tun_id = hdr.vni
    (v, src), (_, dst) = _ip(outer.src), _ip(outer.dst)
    if v == 4:
        key.tun_src, key.tun_dst = src, dst
    else:
        key.tun_ipv6_src, key.tun_ipv6_dst = src, dst
    key.tun_tos, key.tun_ttl = outer.tos, outer.ttl
    key.tun_tp_src, key.tun_tp_dst = outer.sport, outer.dport
    key.tun_flags = FLOW_TNL_F_OAM if hdr.oam else 0


# --- encap: key + port -> outer packet -----------------------------------------
_HASH_MEMBERS = ("nw_src", "nw_dst", "ipv6_src", "ipv6_dst", "nw_proto", "tp_src", "tp_dst")


def flow_source_port(key: FlowKey) -> int:
    """Outer UDP source port from a hash of the inner flow (RFC 8926 §3.3),
    so ECMP spreads flows and keeps each one on one path: OVS's range
    32768-60999 and the fast path's hash (the 5-tuple dp_hash), so Python
    and Cython encapsulate identically."""
    h = zlib.crc32(b"".join(bytes(key.buf[o:o + s]) for o, s in
                            (MEMBERS[m] for m in _HASH_MEMBERS)))
    return SPORT_MIN + h % (SPORT_MAX - SPORT_MIN + 1)


def _key_ip(key: FlowKey, v4: str, v6: str) -> str | None:
    if getattr(key, v4):
        return str(ipaddress.IPv4Address(getattr(key, v4)))
    if getattr(key, v6):
        return str(ipaddress.IPv6Address(getattr(key, v6)))
    return None


def tunnel_push(key: FlowKey, cfg: TunnelConfig, tlv: TlvMap, tnl_dp_port: int = 0,
                out_dp_port: int = 0, src: str | None = None) -> dp.TunnelPush:
    """Resolve an output to a tunnel port for a packet with ``key`` (the
    flow's tun_* fields after the pipeline's set_fields) into a TunnelPush
    whose every field is concrete — what xlate should emit.  ``dst`` is empty
    when remote_ip=flow and the flow has no tun_dst: the packet is dropped."""
    dst = cfg.remote_ip or _key_ip(key, "tun_dst", "tun_ipv6_dst") or ""
    src = cfg.local_ip or src or ""   # local_ip=flow (tun_src) is not supported
    vni = cfg.key if cfg.key is not None else key.tun_id & 0xFFFFFF
    ttl = key.nw_ttl if cfg.ttl == "inherit" else cfg.ttl
    tos = key.nw_tos if cfg.tos == "inherit" else cfg.tos
    options = encode_options(tlv.from_key(key))
    header = b""
    if cfg.remote_ip is not None:
        r = cfg.route if dst == cfg.remote_ip else None
    else:
        r = next((nr for d, nr in cfg.flow_routes if d == dst), None)
    if r is not None and cfg.packet_type == "legacy_l2":
        src, out_dp_port = r.src_ip, r.out_dp_port
        header = build_header(r, Outer(src, dst, 0, cfg.dst_port, tos, ttl or 64,
                                       cfg.df_default, cfg.csum), vni, options,
                              bool(key.tun_flags & FLOW_TNL_F_OAM))
    return dp.TunnelPush(tnl_dp_port, out_dp_port, "geneve", vni, src, dst, ttl or 64, tos,
                         cfg.dst_port, options, header, r.mtu if header else 0)


def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def build_header(r: NativeRoute, o: Outer, vni: int, options: bytes, oam: bool = False) -> bytes:
    """The prebuilt outer header of a TunnelPush (what the Cython executor
    takes): Ethernet + IPv4/IPv6 + UDP + GENEVE with options, lengths as for
    an empty payload, UDP source port 0, a non-zero UDP checksum field iff
    a checksum is wanted — the executor fixes lengths, IPv4 checksum, source
    port and UDP checksum per packet (`push_header` is its Python twin)."""
    ip = push_udp_ip(push_geneve(b"", vni, options, oam), o)
    et = ETH_P_IP if ip[0] >> 4 == 4 else ETH_P_IPV6
    return _mac(r.dst_mac) + _mac(r.src_mac) + struct.pack("!H", et) + ip


def push_header(frame: bytes, key: FlowKey, header: bytes) -> bytes:
    """Encapsulate ``frame`` in a prebuilt header exactly as the fast path
    does (fastpath/execute.pyx ``_tnl_push``)."""
    b = bytearray(header + frame)
    total = len(b)
    v4 = struct.unpack_from("!H", b, 12)[0] == ETH_P_IP
    l3 = 14
    l4 = l3 + ((b[l3] & 0x0F) * 4 if v4 else 40)
    if v4:
        struct.pack_into("!H", b, l3 + 2, total - l3)
        struct.pack_into("!H", b, l3 + 10, 0)
        struct.pack_into("!H", b, l3 + 10, _csum(bytes(b[l3:l4])))
    else:
        struct.pack_into("!H", b, l3 + 4, total - l3 - 40)
    struct.pack_into("!H", b, l4, flow_source_port(key))
    struct.pack_into("!H", b, l4 + 4, total - l4)
    if struct.unpack_from("!H", b, l4 + 6)[0]:
        struct.pack_into("!H", b, l4 + 6, 0)
        srcdst = bytes(b[l3 + 12:l3 + 20]) if v4 else bytes(b[l3 + 8:l3 + 40])
        half = len(srcdst) // 2
        struct.pack_into("!H", b, l4 + 6, udp_checksum(srcdst[:half], srcdst[half:],
                                                        bytes(b[l4:])))
    return bytes(b)


def encap(frame: bytes, key: FlowKey, push: dp.TunnelPush, cfg: TunnelConfig,
          ident: int = 0) -> bytes:
    """The outer IP packet (no Ethernet) carrying ``frame``."""
    payload = frame
    proto = ETH_P_TEB
    if cfg.packet_type == "legacy_l3":
        proto = struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
        if proto not in (ETH_P_IP, ETH_P_IPV6):
            raise ValueError("legacy_l3 tunnel carries only IPv4/IPv6")
        payload = frame[14:]
    oam = bool(key.tun_flags & FLOW_TNL_F_OAM)
    gnv = push_geneve(payload, push.tun_id, push.options, oam, proto)
    o = Outer(push.src, push.dst, flow_source_port(key), push.tp_dst, push.tos, push.ttl,
              cfg.df_default, cfg.csum)
    return push_udp_ip(gnv, o, ident)


# --- native tunnelling (outer Ethernet): the TunnelPop datapath action --------
def pull_ethernet(frame: bytes) -> bytes:
    """The IP packet inside an (untagged or 802.1Q-tagged) Ethernet frame."""
    off = 12
    while len(frame) >= off + 2 and struct.unpack_from("!H", frame, off)[0] in (0x8100, 0x88A8):
        off += 4
    if len(frame) < off + 2:
        raise GeneveError("truncated", "Ethernet")
    et = struct.unpack_from("!H", frame, off)[0]
    if et not in (ETH_P_IP, ETH_P_IPV6):
        raise GeneveError("bad_outer_header", f"ethertype {et:#06x}")
    return bytes(frame[off + 2:])


@dataclass
class Counters:
    """Per-reason drop counters plus traffic counters."""
    drops: dict = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    rx_packets: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_too_big: int = 0

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def as_dict(self) -> dict:
        return {"rx_packets": self.rx_packets, "tx_packets": self.tx_packets,
                "tx_errors": self.tx_errors, "tx_too_big": self.tx_too_big,
                **{f"drop_{k}": v for k, v in self.drops.items()}}


def receive(pkt: bytes, tlv_for, ports, counters: Counters):
    """A whole received outer IP packet -> (tnl_dp_port, inner, key) or None
    (dropped and counted).  ``ports`` is [(dp_port, TunnelConfig)];
    ``tlv_for(dp_port)`` gives that port's bridge TLV map."""
    try:
        outer, payload = pull_udp_ip(pkt)
        return receive_udp(outer, payload, tlv_for, ports, counters)
    except GeneveError as e:
        counters.drop(e.reason)
        return None


def receive_udp(outer: Outer, payload: bytes, tlv_for, ports, counters: Counters,
                parse: bool = True):
    """Like `receive` for a UDP payload whose outer headers are known."""
    try:
        if len(payload) < GENEVE_HLEN:
            raise GeneveError("truncated", "GENEVE header")
        vni = struct.unpack_from("!I", payload, 4)[0] >> 8
        best, score = None, 0
        for dp_port, cfg in ports:
            s = accepts(cfg, outer, vni)
            if s > score:
                best, score = (dp_port, cfg), s
        if best is None:
            pull_geneve(payload)   # malformed beats no_port as a reason
            raise GeneveError("no_port", f"{outer.src}->{outer.dst} vni {vni}")
        inner, key = decap(outer, payload, tlv_for(best[0]), best[0], best[1], parse)
    except GeneveError as e:
        counters.drop(e.reason)
        return None
    except Exception:  # never let wire input escape as an exception
        counters.drop("bad_outer_header")
        return None
    counters.rx_packets += 1
    return best[0], inner, key


# --- native tunnelling, receive: the TunnelPop datapath action ----------------
def decap_frame(frame: bytes, ports, tlv_for):
    """An outer Ethernet/IP/UDP/GENEVE frame as it arrives on the underlay
    NIC's datapath port -> ``(tnl_dp_port, inner frame, key)``, or the drop
    reason (a `DROP_REASONS` name).  The Python twin of fastpath's
    ``_tnl_decap`` (fastpath/execute.pyx): same port choice, key and reason."""
    try:
        outer, payload = pull_udp_ip(pull_ethernet(frame))
        c = Counters()
        got = receive_udp(outer, payload, tlv_for, ports, c)
    except GeneveError as e:
        return e.reason
    if got is None:
        return next(k for k, v in c.drops.items() if v)
    return got


@dataclass(frozen=True)
class TunnelEndpoint:
    """``Port.tunnel`` of an internal port that holds tunnel addresses (OVS's
    br-phy LOCAL port): output to it of a UDP packet to one of ``pops``
    ((IP version, address as int, UDP port) -> endpoint datapath port)
    becomes ``TunnelPop(endpoint)`` instead (OVS ``tnl_port_map_lookup``)."""
    pops: tuple = ()

    def lookup(self, version: int, addr: int, udp_port: int) -> int | None:
        for k, v in self.pops:
            if k == (version, addr, udp_port):
                return v
        return None


def execute_tunnel_pop(state, a: dp.TunnelPop, env) -> None:
    """Decapsulate ``state.frame`` (outer Ethernet/IP/UDP/GENEVE) and
    recirculate the inner frame as received on the tunnel port that accepts
    it.  The environment provides ``tunnel_lookup(endpoint dp_port) ->
    (ports [(dp_port, TunnelConfig)], tlv_for(dp_port) -> TlvMap, Counters)``."""
    state.dropped = True   # nothing continues with the outer packet
    lookup = getattr(env, "tunnel_lookup", None)
    found = lookup(a.dp_port) if lookup is not None else None
    if found is None:
        return
    ports, tlv_for, counters = found
    got = decap_frame(bytes(state.frame), ports, tlv_for)
    if isinstance(got, str):
        counters.drop(got)
        return
    counters.rx_packets += 1
    _, inner, key = got
    env.recirculate(inner, key)


def _register() -> None:
    from slowpath import odp_execute
    odp_execute.register(dp.TunnelPop, execute_tunnel_pop)


_register()
