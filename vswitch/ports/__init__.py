"""Interface types: how an OVSDB ``Interface.type`` becomes a datapath port.

As in OVS's netdev providers, each type is one small class that knows how to
open its device in the datapath and what to check first; the bridge never
special-cases a type.  ``system`` opens an existing Linux interface with
AF_PACKET, ``internal`` creates a TAP device named after the port (the
bridge-local port is one), ``patch`` joins two bridges without any device.
``afxdp`` registers here too; ``dpdk`` (``dpdk.py``) and ``geneve``
(``geneve.py``) have modules of their own.
"""

from __future__ import annotations

import os


class PortError(Exception):
    """Why an interface could not be opened; goes to ``Interface.error``."""


class Netdev:
    """One interface type.  Subclasses set `kind` (the Dpif port kind)."""

    type = ""
    kind = ""
    #: Whether the daemon created the Linux device (and so must remove it).
    creates_device = False
    #: Listed in Open_vSwitch.iface_types (what controllers may use).
    advertised = True
    #: Whether it is a port of the datapath (a patch port is not).
    datapath_port = True

    def check(self, name: str, options: dict[str, str]) -> None:
        """Raise PortError if the port cannot be opened; called before open."""

    def open(self, dpif, name: str, options: dict[str, str], kind: str | None = None) -> int:
        """``kind`` overrides the Dpif port kind (the XDP datapath opens
        system/afxdp interfaces as ``afxdp-cache``)."""
        self.check(name, options)
        try:
            return dpif.add_port(name, kind or self.kind)
        except OSError as e:
            raise PortError(f"could not open network device {name} "
                            f"({e.strerror or e})") from None


class SystemNetdev(Netdev):
    type = "system"
    kind = "afpacket"

    def check(self, name: str, options: dict[str, str]) -> None:
        if not os.path.exists(f"/sys/class/net/{name}"):
            raise PortError(f"could not open network device {name} (No such device)")


class InternalNetdev(Netdev):
    type = "internal"
    kind = "tap"
    creates_device = True

    def check(self, name: str, options: dict[str, str]) -> None:
        if os.path.exists(f"/sys/class/net/{name}"):
            # OVS would take the name over; we refuse rather than hijack a
            # device someone else owns.
            raise PortError(f"could not create internal device {name} "
                            f"(a network device with that name exists)")


class AfxdpNetdev(SystemNetdev):
    """An existing interface over AF_XDP (copy mode on veth, zero-copy where
    the driver has it): the fast path's own UMEM and a small XDP program that
    steers every frame to its socket.  On veth the peer needs ``ethtool -K
    PEER tx off`` (AF_XDP carries no partial-checksum state), as with OVS."""

    type = "afxdp"
    kind = "afxdp"


class PatchNetdev(Netdev):
    """One end of a virtual cable to a port of another bridge that names
    this one back (``options:peer``).  No device and no datapath port: a
    packet output to it enters the peer bridge within the same translation
    (``slowpath.xlate.XlateCtx._output_patch``), as OVS does."""

    type = "patch"
    datapath_port = False

    def check(self, name: str, options: dict[str, str]) -> None:
        peer = options.get("peer")
        if not peer:
            raise PortError(f"{name}: a patch port needs options:peer")
        if peer == name:
            raise PortError(f"{name}: a patch port cannot be its own peer")


NETDEV_TYPES: dict[str, Netdev] = {
    cls.type: cls() for cls in (SystemNetdev, InternalNetdev, AfxdpNetdev, PatchNetdev)
}
NETDEV_TYPES[""] = NETDEV_TYPES["system"]  # OVSDB's default type

from vswitch.ports.dpdk import DpdkNetdev  # noqa: E402  (subclass Netdev above)
from vswitch.ports.geneve import GeneveNetdev  # noqa: E402

NETDEV_TYPES[DpdkNetdev.type] = DpdkNetdev()
NETDEV_TYPES[GeneveNetdev.type] = GeneveNetdev()


def netdev_for(type_: str) -> Netdev:
    try:
        return NETDEV_TYPES[type_]
    except KeyError:
        raise PortError(f"interface type \"{type_}\" is not supported "
                        f"(supported: {', '.join(sorted(t for t in NETDEV_TYPES if t))})"
                        ) from None
