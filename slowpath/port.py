"""The OpenFlow view of a bridge port, with OVS Port-table VLAN semantics.

The daemon owns real ports; the slow path only needs what changes forwarding:
numbers (``ofport`` for OpenFlow, ``dp_port`` for datapath actions), the
OpenFlow config/state bits, and for the NORMAL action the VLAN configuration
(``tag``, ``trunks``, ``vlan_mode``) with the meaning OVS's vswitchd gives
them (vswitch.xml, "VLAN Configuration").
"""

from __future__ import annotations

from dataclasses import dataclass, field

VLAN_MODES = ("access", "trunk", "native-tagged", "native-untagged")


@dataclass
class Port:
    ofport: int
    name: str = ""
    dp_port: int | None = None            # defaults to ofport
    hw_addr: str = "00:00:00:00:00:00"
    # OpenFlow config (OFPPC_*)
    port_down: bool = False
    no_recv: bool = False
    no_fwd: bool = False
    no_flood: bool = False
    no_packet_in: bool = False
    # OpenFlow state (OFPPS_*)
    link_down: bool = False
    blocked: bool = False
    live: bool = True
    # NORMAL: OVS Port table
    tag: int | None = None
    trunks: frozenset[int] = field(default_factory=frozenset)   # empty = all VLANs
    vlan_mode: str | None = None          # None = access if tag else trunk
    # tunnel ports: a slowpath.tunnel.TunnelConfig; output becomes TunnelPush
    tunnel: object | None = None

    def __post_init__(self):
        if self.dp_port is None:
            self.dp_port = self.ofport
        self.trunks = frozenset(self.trunks)
        if self.vlan_mode is not None and self.vlan_mode not in VLAN_MODES:
            raise ValueError(f"bad vlan_mode {self.vlan_mode!r}")

    @property
    def mode(self) -> str:
        if self.vlan_mode:
            return self.vlan_mode
        return "access" if self.tag is not None else "trunk"

    @property
    def is_up(self) -> bool:
        """Usable for forwarding (fast-failover liveness, NORMAL, FLOOD)."""
        return not (self.port_down or self.link_down or self.blocked) and self.live

    def trunks_vlan(self, vlan: int) -> bool:
        return not self.trunks or vlan in self.trunks

    def includes_vlan(self, vlan: int) -> bool:
        """Does this port carry ``vlan`` (0 = untagged/native)? (OVS
        ``xbundle_includes_vlan``)."""
        mode = self.mode
        if mode == "access":
            return vlan == (self.tag or 0)
        if mode == "trunk":
            return self.trunks_vlan(vlan)
        return vlan == (self.tag or 0) or self.trunks_vlan(vlan)

    def input_vlan(self, vid: int | None) -> int | None:
        """The VLAN a packet received here belongs to, given its 802.1Q VID
        (None = untagged; VID 0 = priority tag, treated as untagged);
        None if the port must drop it (OVS ``input_vid_is_valid``)."""
        if vid == 0:
            vid = None
        mode = self.mode
        if mode == "access":
            return (self.tag or 0) if vid is None else None
        if vid is None:
            return self.tag or 0 if mode != "trunk" else 0
        return vid if self.trunks_vlan(vid) else None

    def output_vid(self, vlan: int) -> int | None:
        """The VID to send ``vlan`` with out of this port (None = untagged)."""
        mode = self.mode
        if mode == "access":
            return None
        if mode == "native-untagged" and vlan == (self.tag or 0):
            return None
        if mode == "trunk" and vlan == 0:
            return None
        return vlan or None
