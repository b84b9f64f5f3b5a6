"""``type=dpdk`` interfaces: DPDK ethdev ports, as OVS-DPDK has them.

DPDK is initialised once per daemon, when ``Open_vSwitch other_config``
says ``dpdk-init=true`` (or ``try``); ``dpdk-lcore-mask``,
``dpdk-socket-mem``, ``dpdk-socket-limit`` and ``dpdk-extra`` shape the EAL
command line (`eal_args`).  As in OVS it cannot be undone or redone without
a restart; unlike OVS a failed EAL initialisation does not stop the daemon:
``Open_vSwitch.dpdk_initialized`` stays false and every dpdk port reports
why in ``Interface.error``.

A port names its device with ``options:dpdk-devargs`` — here a virtual
device over a Linux interface: ``net_af_packet0,iface=veth0``,
``net_af_xdp0,iface=veth0`` or ``net_tap0,iface=dtap0`` (a new TAP device).
The datapath side lives in ``fastpath/io/dpdk.pyx``.

Without hugepages (this VM has none) EAL runs on ordinary memory:
``--no-huge`` with a fixed ``-m`` budget (the sum of dpdk-socket-mem, else
DEFAULT_MEM_MB), ``--no-pci`` (a NIC could not DMA into that memory) and
``--no-shconf``; with hugepages it runs ``--in-memory``.  Telemetry is off
(its socket would collide between daemons).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shlex

from vswitch.ports import Netdev, PortError

log = logging.getLogger(__name__)

DEFAULT_MEM_MB = 256  # -m without hugepages: mbuf pools of ~20 MB per port
EAL_ARGV0 = "pyvswitch"


def eal_args(other_config: dict[str, str], cpus: set[int], hugepages: int) -> list[str]:
    """The EAL command line for ``other_config`` (raises ValueError).

    ``cpus``: the daemon's CPU affinity (EAL's main lcore is its first CPU
    unless dpdk-lcore-mask says otherwise); ``hugepages``: free hugepages."""
    args = [EAL_ARGV0]
    mask = other_config.get("dpdk-lcore-mask")
    if mask:
        if not re.fullmatch(r"(0[xX])?[0-9a-fA-F]+", mask):
            raise ValueError(f"bad other_config:dpdk-lcore-mask {mask!r} (want hex)")
        args += ["-c", mask]
    else:
        args += ["-l", str(min(cpus))]
    mem = other_config.get("dpdk-socket-mem")
    if mem is not None and not re.fullmatch(r"\d+(,\d+)*", mem):
        raise ValueError(f"bad other_config:dpdk-socket-mem {mem!r} (want MB per socket, "
                         f"e.g. 1024,0)")
    if hugepages:
        args.append("--in-memory")
        if mem:
            args += ["--socket-mem", mem]
        limit = other_config.get("dpdk-socket-limit")
        if limit:
            args += ["--socket-limit", limit]
    else:
        total = sum(int(m) for m in mem.split(",")) if mem else DEFAULT_MEM_MB
        args += ["--no-huge", "--no-pci", "--no-shconf", "-m", str(total)]
    args.append("--no-telemetry")
    try:
        args += shlex.split(other_config.get("dpdk-extra", ""))
    except ValueError as e:
        raise ValueError(f"bad other_config:dpdk-extra: {e}") from None
    return args


def _free_hugepages() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Dpdk:
    """The daemon's one DPDK environment (EAL is per process)."""

    def __init__(self):
        #: built with DPDK (fastpath.io.dpdk exists); found without loading it
        self.available = importlib.util.find_spec("fastpath.io.dpdk") is not None
        self.initialized = False
        self.version: str | None = None
        #: why dpdk ports cannot open (None once initialized)
        self.error = "DPDK is not initialized (set other_config:dpdk-init=true)"
        self._tried = False
        if not self.available:
            self.error = ("this build of pyvswitch has no DPDK support (pkg-config found "
                          "no libdpdk when it was built: install libdpdk-dev and rebuild)")

    def configure(self, other_config: dict[str, str]) -> bool:
        """Initialise DPDK if ``dpdk-init`` asks and it has not been tried;
        returns True when this call initialised it."""
        if self._tried or other_config.get("dpdk-init") not in ("true", "try"):
            return False
        self._tried = True
        if not self.available:
            log.error("dpdk-init: %s", self.error)
            return False
        from fastpath.io import dpdk
        self.version = dpdk.version()
        try:
            args = eal_args(other_config, os.sched_getaffinity(0), _free_hugepages())
            log.info("initialising DPDK: %s", " ".join(args[1:]))
            dpdk.eal_init(args)
        except (OSError, ValueError) as e:
            self.error = f"DPDK is not initialized: {getattr(e, 'strerror', None) or e}"
            log.error("%s", self.error)
            return False
        self.initialized = True
        self.error = None
        log.info("%s initialised", self.version)
        return True


DPDK = Dpdk()


class DpdkNetdev(Netdev):
    """A DPDK ethdev named by ``options:dpdk-devargs`` (see module doc)."""

    type = "dpdk"
    kind = "dpdk"
    advertised = DPDK.available  # listed in iface_types only when built with DPDK

    def check(self, name: str, options: dict[str, str]) -> None:
        if not options.get("dpdk-devargs"):
            raise PortError(f"'{name}' is missing 'options:dpdk-devargs'. "
                            f"The old 'dpdk<port_id>' names are not supported")
        if DPDK.error is not None:
            raise PortError(f"could not open network device {name} ({DPDK.error})")

    def open(self, dpif, name: str, options: dict[str, str], kind: str | None = None) -> int:
        self.check(name, options)
        try:
            return dpif.add_port(name, self.kind, devargs=options["dpdk-devargs"])
        except OSError as e:
            raise PortError(f"{name}: {e.strerror or e}") from None
