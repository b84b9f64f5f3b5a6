"""The datapath-action vocabulary: what a megaflow tells the fast paths to do.

These are the only actions the Cython cache and the XDP program execute, so
they are deliberately few and low level (like OVS's ``OVS_ACTION_ATTR_*``):
ports are *datapath* port numbers, header rewrites are masked writes to flow
key members.  All are frozen and hashable so a megaflow's action tuple can be
compared and deduplicated; ``str()`` gives ovs-dpctl syntax, and
``format_actions(())`` is ``drop``.
"""

from __future__ import annotations

from dataclasses import dataclass

from slowpath.fields import MEMBERS, VLAN_CFI

# member -> (dpctl key, attribute) for set()/set_masked() rendering
_SET_NAMES = {
    "dl_dst": ("eth", "dst"), "dl_src": ("eth", "src"),
    "nw_src": ("ipv4", "src"), "nw_dst": ("ipv4", "dst"), "nw_tos": ("ip", "tos"),
    "nw_ttl": ("ip", "ttl"), "ipv6_src": ("ipv6", "src"), "ipv6_dst": ("ipv6", "dst"),
    "ipv6_label": ("ipv6", "label"), "tp_src": ("l4", "src"), "tp_dst": ("l4", "dst"),
    "vlan0_tci": ("vlan", "tci"), "mpls_lse": ("mpls", "lse"), "arp_sha": ("arp", "sha"),
    "arp_tha": ("arp", "tha"), "nd_target": ("nd", "target"), "skb_priority": ("skb_priority", ""),
    "pkt_mark": ("skb_mark", ""), "tun_id": ("tunnel", "tun_id"), "tun_src": ("tunnel", "src"),
    "tun_dst": ("tunnel", "dst"), "ct_mark": ("ct_mark", ""), "ct_label": ("ct_label", ""),
}


def _fmt_member(member: str, v: int) -> str:
    size = MEMBERS[member][1]
    if member in ("dl_dst", "dl_src", "arp_sha", "arp_tha"):
        return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))
    if member in ("nw_src", "nw_dst", "tun_src", "tun_dst"):
        return ".".join(str(b) for b in v.to_bytes(4, "big"))
    if size == 16:
        import ipaddress
        return str(ipaddress.IPv6Address(v))
    return str(v) if size <= 2 else hex(v)


@dataclass(frozen=True)
class Output:
    dp_port: int

    def __str__(self):
        return f"output:{self.dp_port}"


@dataclass(frozen=True)
class Trunc:
    """Truncate the packet to max_len for the following outputs."""
    max_len: int

    def __str__(self):
        return f"trunc({self.max_len})"


@dataclass(frozen=True)
class SetMasked:
    """Rewrite the bits ``mask`` of key member ``member`` (and the packet
    header it mirrors) to ``value``.  Executors recompute checksums."""
    member: str
    value: int
    mask: int

    def __post_init__(self):
        if self.member not in MEMBERS:
            raise ValueError(f"unknown key member {self.member!r}")

    def __str__(self):
        full = (1 << (8 * MEMBERS[self.member][1])) - 1
        key, attr = _SET_NAMES.get(self.member, (self.member, ""))
        val = _fmt_member(self.member, self.value)
        if self.mask != full:
            val += "/" + _fmt_member(self.member, self.mask)
        inner = f"{attr}={val}" if attr else val
        return f"set({key}({inner}))"


@dataclass(frozen=True)
class PushVlan:
    tpid: int
    tci: int   # with VLAN_CFI set, as OVS

    def __str__(self):
        s = f"push_vlan(vid={self.tci & 0xfff},pcp={self.tci >> 13})"
        return s if self.tpid == 0x8100 else s[:-1] + f",tpid={self.tpid:#x})"


@dataclass(frozen=True)
class PopVlan:
    def __str__(self):
        return "pop_vlan"


@dataclass(frozen=True)
class PushMpls:
    lse: int
    ethertype: int

    def __str__(self):
        return (f"push_mpls(label={self.lse >> 12},tc={(self.lse >> 9) & 7},"
                f"ttl={self.lse & 0xff},bos={(self.lse >> 8) & 1},eth_type={self.ethertype:#x})")


@dataclass(frozen=True)
class PopMpls:
    ethertype: int

    def __str__(self):
        return f"pop_mpls(eth_type={self.ethertype:#x})"


@dataclass(frozen=True)
class Userspace:
    """Hand the packet to the slow path; ``kind`` is "controller" (packet-in),
    "slow_path" (must be translated per packet), or "sample"; ``cookie`` is
    an opaque hashable the slow path gets back."""
    kind: str
    cookie: object = None

    def __str__(self):
        return f"userspace(kind={self.kind},cookie={self.cookie!r})"


@dataclass(frozen=True)
class Recirc:
    recirc_id: int

    def __str__(self):
        return f"recirc({self.recirc_id:#x})"


@dataclass(frozen=True)
class Ct:
    commit: bool = False
    zone: int = 0
    mark: tuple[int, int] | None = None        # (value, mask)
    label: tuple[int, int] | None = None
    nat: str | None = None                     # ovs-dpctl nat(...) body, "" = plain nat
    helper: str | None = None
    force: bool = False

    def __str__(self):
        parts = []
        if self.commit:
            parts.append("force_commit" if self.force else "commit")
        if self.zone:
            parts.append(f"zone={self.zone}")
        if self.mark:
            parts.append(f"mark={self.mark[0]:#x}/{self.mark[1]:#x}")
        if self.label:
            parts.append(f"label={self.label[0]:#x}/{self.label[1]:#x}")
        if self.helper:
            parts.append(f"helper={self.helper}")
        if self.nat is not None:
            parts.append(f"nat({self.nat})" if self.nat else "nat")
        return f"ct({','.join(parts)})" if parts else "ct"


@dataclass(frozen=True)
class CtClear:
    def __str__(self):
        return "ct_clear"


@dataclass(frozen=True)
class TunnelPush:
    """Encapsulate and send out of ``out_dp_port`` (GENEVE/VXLAN over UDP).
    ``header`` is the prebuilt outer header (Ethernet/IP/UDP/tunnel) when the
    caller has resolved it; otherwise the fields describe it."""
    tnl_dp_port: int
    out_dp_port: int
    tun_type: str = "geneve"
    tun_id: int = 0
    src: str = ""
    dst: str = ""
    ttl: int = 64
    tos: int = 0
    tp_dst: int = 6081
    options: bytes = b""
    header: bytes = b""
    mtu: int = 0        # with a header: the route's IP MTU (0 unknown); longer is dropped

    def __str__(self):
        return (f"tnl_push(tnl_port={self.tnl_dp_port},type={self.tun_type},"
                f"vni={self.tun_id:#x},src={self.src},dst={self.dst},out_port={self.out_dp_port})")


@dataclass(frozen=True)
class TunnelPop:
    """Decapsulate GENEVE (outer Ethernet/IP/UDP) and recirculate the inner
    frame as received on the tunnel port that accepts it (native
    tunnelling; see vswitch/ports/geneve.py).  ``dp_port``: the tunnel
    endpoint's datapath port (``genev_sys``), as in OVS's ``tnl_pop(N)``."""
    dp_port: int

    def __str__(self):
        return f"tnl_pop({self.dp_port})"


@dataclass(frozen=True)
class Meter:
    meter_id: int

    def __str__(self):
        return f"meter({self.meter_id})"


@dataclass(frozen=True)
class Sample:
    probability: int            # out of 0xffffffff
    actions: tuple = ()

    def __str__(self):
        pct = self.probability * 100 / 0xffffffff
        return f"sample(sample={pct:g}%,actions({format_actions(self.actions)}))"


@dataclass(frozen=True)
class Clone:
    actions: tuple = ()

    def __str__(self):
        return f"clone({format_actions(self.actions)})"


@dataclass(frozen=True)
class CheckPktLen:
    """OVS's check_pkt_len: run ``gt`` on packets longer than ``pkt_len``
    (VLAN tags not counted), ``le`` on the others, on a copy of the packet
    unless it is the last action (xlate always puts it last)."""
    pkt_len: int
    gt: tuple = ()
    le: tuple = ()

    def __str__(self):
        return (f"check_pkt_len(size={self.pkt_len},gt({format_actions(self.gt)}),"
                f"le({format_actions(self.le)}))")


@dataclass(frozen=True)
class Hash:
    """Compute dp_hash (for select groups) then usually Recirc."""
    alg: str = "l4"
    basis: int = 0

    def __str__(self):
        return f"hash({self.alg}({self.basis}))"


DatapathAction = (Output | Trunc | SetMasked | PushVlan | PopVlan | PushMpls | PopMpls
                  | Userspace | Recirc | Ct | CtClear | TunnelPush | TunnelPop | Meter
                  | Sample | Clone | Hash)


def format_actions(actions) -> str:
    """ovs-dpctl rendering of an action list: ``drop`` when empty."""
    return ",".join(str(a) for a in actions) if actions else "drop"


def push_vlan(vid: int, pcp: int = 0, tpid: int = 0x8100) -> PushVlan:
    return PushVlan(tpid, (pcp << 13) | VLAN_CFI | (vid & 0xfff))
