"""Stand-ins for the agreed slow-path API, used only while `slowpath/` lacks them.

The OpenFlow layer is written against the contract agreed with the slow-path
engineer (slowpath/match.py `Match`, slowpath/errors.py `OFError`,
slowpath/actions.py action/instruction dataclasses, slowpath/pipeline.py
`FlowMod`...).  While those modules are still being written, this file holds
minimal definitions with the same names so the channel can be built and tested.
`vswitch/openflow/sp.py` picks the real module when it exists and falls back to
these; nothing else imports this file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


class OFError(Exception):
    """An OpenFlow error, OF1.3 numbering (type, code)."""

    def __init__(self, type: int, code: int, msg: str = ""):
        super().__init__(type, code, msg)
        self.type = type
        self.code = code


@dataclass(frozen=True)
class Match:
    """field name (ovs-ofctl/OXM spelling) -> (value, mask or None)."""

    fields: tuple = ()

    @classmethod
    def from_dict(cls, d: dict) -> "Match":
        return cls(tuple(sorted(d.items())))

    def to_dict(self) -> dict:
        return dict(self.fields)


# ---- actions -------------------------------------------------------------
@dataclass(frozen=True)
class Output:
    port: int
    max_len: int = 0xFFFF


@dataclass(frozen=True)
class Controller:
    max_len: int = 0xFFFF
    reason: int = 1
    controller_id: int = 0
    userdata: bytes = b""
    pause: bool = False


@dataclass(frozen=True)
class SetField:
    field: str
    value: int
    mask: Optional[int] = None


@dataclass(frozen=True)
class PushVlan:
    ethertype: int = 0x8100


@dataclass(frozen=True)
class PopVlan:
    pass


@dataclass(frozen=True)
class Group:
    group_id: int


@dataclass(frozen=True)
class Resubmit:
    in_port: int = 0xFFFFFFF8
    table: Optional[int] = None


@dataclass(frozen=True)
class Ct:
    commit: bool = False
    zone: int = 0
    zone_src: Optional[str] = None
    table: Optional[int] = None
    alg: int = 0
    actions: tuple = ()


@dataclass(frozen=True)
class CtClear:
    pass


@dataclass(frozen=True)
class DecTtl:
    pass


@dataclass(frozen=True)
class SetQueue:
    queue_id: int


@dataclass(frozen=True)
class Move:
    src: str
    src_ofs: int
    dst: str
    dst_ofs: int
    n_bits: int


@dataclass(frozen=True)
class Conjunction:
    id: int
    clause: int
    n_clauses: int


@dataclass(frozen=True)
class Note:
    data: bytes = b""


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
class GotoTable:
    table_id: int


@dataclass(frozen=True)
class WriteMetadata:
    metadata: int
    mask: int = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Meter:
    meter_id: int


# ---- pipeline requests (slowpath/pipeline.py spelling: commands/types/flags as words)
@dataclass
class FlowMod:
    command: str = "add"
    table_id: int = 0
    priority: int = 0x8000
    match: Match = field(default_factory=Match)
    cookie: int = 0
    cookie_mask: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: frozenset = frozenset()
    out_port: int = 0xFFFFFFFF
    out_group: int = 0xFFFFFFFF
    instructions: tuple = ()
    importance: int = 0


@dataclass(frozen=True)
class Bucket:
    actions: tuple = ()
    weight: int = 0
    watch_port: int = 0xFFFFFFFF
    watch_group: int = 0xFFFFFFFF


@dataclass
class GroupMod:
    command: str = "add"
    type: str = "all"
    group_id: int = 0
    buckets: tuple = ()


@dataclass(frozen=True)
class MeterBand:
    type: str = "drop"
    rate: int = 0
    burst_size: int = 0
    prec_level: int = 0


@dataclass
class MeterMod:
    command: str = "add"
    meter_id: int = 1
    flags: frozenset = frozenset({"kbps"})
    bands: tuple = ()


@dataclass
class TableMod:
    table_id: int
    config: int = 0


@dataclass
class Port:
    ofport: int
    name: str = ""
    dp_port: Optional[int] = None
    hw_addr: str = "00:00:00:00:00:00"
    port_down: bool = False
    no_recv: bool = False
    no_fwd: bool = False
    no_flood: bool = False
    no_packet_in: bool = False
    link_down: bool = False
    blocked: bool = False
    live: bool = True


@dataclass(frozen=True)
class PushMpls:
    ethertype: int = 0x8847


@dataclass(frozen=True)
class PopMpls:
    ethertype: int = 0x0800


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
class CopyTtl:
    outward: bool
