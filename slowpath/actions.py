"""OpenFlow actions and instructions as small frozen values.

Independent of os-ken so the slow path can be driven and tested with plain
values; ``vswitch/openflow`` converts os-ken messages into these.  Ports are
32-bit OpenFlow port numbers (reserved ones from ``slowpath.fields``:
OFPP_NORMAL, OFPP_FLOOD, ...).  Field names are ``slowpath.fields`` names.
Validation against the switch (ports, groups, prerequisites) happens in
``pipeline.py`` when a flow-mod is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from os_ken.ofproto import ofproto_v1_3 as ofp

from slowpath.fields import OFPP_IN_PORT

# ---- actions -----------------------------------------------------------


@dataclass(frozen=True)
class Output:
    port: int
    max_len: int = 0xffff


@dataclass(frozen=True)
class Controller:
    """Send to controller (OFPP_CONTROLLER output or NXAST_CONTROLLER2)."""
    max_len: int = 0xffff
    reason: int = ofp.OFPR_ACTION
    userdata: bytes = b""
    pause: bool = False
    controller_id: int = 0
    meter_id: int | None = None   # NXAC2PT_METER_ID: rate-limits the packet-ins


@dataclass(frozen=True)
class SetField:
    """set_field / NXAST_REG_LOAD (``mask`` None = whole field)."""
    field: str
    value: int
    mask: int | None = None


@dataclass(frozen=True)
class Move:
    """NXAST_REG_MOVE: copy n_bits from src[src_ofs] to dst[dst_ofs]."""
    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0


@dataclass(frozen=True)
class PushVlan:
    ethertype: int = 0x8100


@dataclass(frozen=True)
class PopVlan:
    pass


@dataclass(frozen=True)
class PushMpls:
    ethertype: int = 0x8847


@dataclass(frozen=True)
class PopMpls:
    ethertype: int


@dataclass(frozen=True)
class SetMplsTtl:
    ttl: int


@dataclass(frozen=True)
class DecMplsTtl:
    pass


@dataclass(frozen=True)
class SetNwTtl:
    ttl: int


@dataclass(frozen=True)
class DecTtl:
    controller_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class CopyTtl:
    """copy_ttl_out (outward=True) / copy_ttl_in."""
    outward: bool


@dataclass(frozen=True)
class Group:
    group_id: int


@dataclass(frozen=True)
class SetQueue:
    queue_id: int


@dataclass(frozen=True)
class Resubmit:
    """NXAST_RESUBMIT(_TABLE): in_port OFPP_IN_PORT keeps the port, table
    None means the current table."""
    in_port: int = OFPP_IN_PORT
    table: int | None = None


@dataclass(frozen=True)
class Conjunction:
    id: int
    clause: int       # 0-based
    n_clauses: int


@dataclass(frozen=True)
class Ct:
    commit: bool = False
    zone: int = 0
    zone_src: str | None = None     # field to take the zone from (zone=NXM_NX_REG0[0..15])
    table: int | None = None        # recirculate to this table after conntrack
    nat: str | None = None          # ovs-ofctl nat(...) body; "" = plain nat
    exec: tuple = ()                # actions (SetField on ct_mark / ct_label)
    alg: str | None = None
    force: bool = False


@dataclass(frozen=True)
class CtClear:
    pass


@dataclass(frozen=True)
class Note:
    data: bytes = b""


@dataclass(frozen=True)
class Meter:
    """OpenFlow 1.3 meter instruction (also the 1.5 meter action)."""
    meter_id: int


@dataclass(frozen=True)
class CheckPktLarger:
    """NXAST_CHECK_PKT_LARGER: ``field[ofs]`` = 1 if the packet (L2 header
    and payload, VLAN tags not counted) is longer than ``pkt_len``, else 0.
    OVN uses it for gateway-router MTU checks."""
    pkt_len: int
    field: str
    ofs: int = 0


@dataclass(frozen=True)
class OutputReg:
    field: str
    ofs: int = 0
    n_bits: int = 32
    max_len: int = 0xffff


@dataclass(frozen=True)
class Clone:
    actions: tuple = ()


@dataclass(frozen=True)
class Multipath:
    """NXAST_MULTIPATH: hash ``fields`` ("eth_src", "symmetric_l4",
    "symmetric_l3l4", "nw_src", "nw_dst") into a link 0..n_links-1 and
    store it in ``dst[dst_ofs:+n_bits]``.  Algorithms: "modulo_n",
    "hash_threshold", "hrw", "iter_hash" (all hash-based here)."""
    fields: str = "symmetric_l4"
    basis: int = 0
    algorithm: str = "hrw"
    n_links: int = 1
    dst: str = "reg0"
    dst_ofs: int = 0
    n_bits: int = 16


@dataclass(frozen=True)
class Bundle:
    """NXAST_BUNDLE: output to one live member port chosen by hash."""
    fields: str = "symmetric_l4"
    basis: int = 0
    members: tuple = ()


@dataclass(frozen=True)
class Sample:
    """NXAST_SAMPLE: send 1 in 65536/probability packets to a collector."""
    probability: int = 65535
    collector_set_id: int = 0
    obs_domain_id: int = 0
    obs_point_id: int = 0


@dataclass(frozen=True)
class LearnSpec:
    """One flow_mod_spec of NXAST_LEARN.

    ``kind`` "match": the learned rule matches ``dst[dst_ofs:+n_bits]`` against
    ``src[src_ofs:+n_bits]`` of the current packet (or the immediate
    ``value``); "load": the learned rule loads that into ``dst``; "output":
    the learned rule outputs to the port in ``src``."""
    kind: str
    dst: str = ""
    n_bits: int = 0
    dst_ofs: int = 0
    src: str | None = None
    src_ofs: int = 0
    value: int | None = None


@dataclass(frozen=True)
class Learn:
    """NXAST_LEARN: add (or refresh) a rule built from the current packet."""
    table_id: int = 1
    priority: int = 0x8000
    idle_timeout: int = 0
    hard_timeout: int = 0
    cookie: int = 0
    flags: frozenset = frozenset()          # send_flow_rem, delete_learned
    specs: tuple = ()


# ---- instructions ---------------------------------------------------------


@dataclass(frozen=True)
class ApplyActions:
    actions: tuple = ()


@dataclass(frozen=True)
class WriteActions:
    actions: tuple = ()


@dataclass(frozen=True)
class ClearActions:
    pass


@dataclass(frozen=True)
class WriteMetadata:
    metadata: int
    mask: int = 0xffffffffffffffff


@dataclass(frozen=True)
class GotoTable:
    table_id: int


INSTRUCTION_TYPES = (Meter, ApplyActions, ClearActions, WriteActions, WriteMetadata, GotoTable)
