"""Bridges and ports, reconciled from the database (OVS's vswitchd/bridge.c).

The database says what should exist; `BridgeReconciler.reconcile()` makes
the live bridges and datapath ports match it and writes back what it found
(``Interface.ofport``, ``error``, ``mac_in_use``, link state, and
``Open_vSwitch.cur_cfg`` so ``ovs-vsctl`` stops waiting).  It is the one place
that turns database rows into bridges, so the OVSDB engine and the OpenFlow
code never meet.  Reconciling is idempotent: it runs after every committed
transaction, including its own write-backs, which then change nothing.

Each `Bridge` owns a slow-path `Pipeline` (its OpenFlow tables, ports and MAC
learning table).  All bridges share the daemon's one `Datapath`; a datapath
port number maps back to (bridge, ofport) for upcalls.  The pipelines are read
by the datapath thread (upcalls) and written by the control thread (OpenFlow,
reconciling), so both hold `ofproto_lock` around them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
import threading
import time
import uuid as uuidlib

from fastpath.bpf.xdp_cache import XdpCache, XdpError, cleanup_stale
from slowpath import dpactions as dp
from slowpath import odp_execute
from slowpath.conntrack import ConnTracker
from slowpath.conntrack import config as ct_config
from slowpath.conntrack import dpctl as ct_dpctl
from slowpath.conntrack import execute as ct_execute
from slowpath.conntrack.offload import CtOffload
from slowpath.flow import FlowKey, parse_packet
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline, RecircTable
from slowpath.port import Port
from slowpath.revalidator import Revalidator
from slowpath.tunnel import TlvMap
from slowpath.xlate import Megaflow
from vswitch import __version__
from vswitch.datapath import parse_cpu_mask
from vswitch.openflow.manager import (PORT_ADD, PORT_DELETE, PORT_MODIFY,
                                      ConnectionManager)
from vswitch.ports import NETDEV_TYPES, PortError, netdev_for
from vswitch.ports.dpdk import DPDK
from vswitch.ports.geneve import TunnelManager

log = logging.getLogger(__name__)

OFPP_LOCAL = 0xfffffffe  # the bridge-local port, 32-bit (OF1.1+ numbering)
OFPP_LOCAL_DB = 0xfffe  # how OVSDB's Interface.ofport spells it (16-bit)
OFPP_MAX = 0xfeff  # highest ofport we hand out (OVS keeps 16-bit ports)
OF_VERSIONS = {"OpenFlow10": 1, "OpenFlow11": 2, "OpenFlow12": 3, "OpenFlow13": 4,
               "OpenFlow14": 5, "OpenFlow15": 6}
DEFAULT_OF_VERSIONS = {1, 2, 3, 4, 5, 6}  # an empty Bridge.protocols, as OVS
REOPENABLE = ("", "system", "afxdp")  # types whose device may come back by itself
STATS_EVERY = 5  # seconds between Interface.statistics refreshes, as OVS
SWEEP_INTERVAL = 1.0  # seconds between revalidator sweeps when nothing changed
# OFPPC_* config bits a PORT_MOD may change, and the Port flag each sets.
PORT_CONFIG_BITS = {0x1: "port_down", 0x4: "no_recv", 0x10: "no_flood",
                    0x20: "no_fwd", 0x40: "no_packet_in"}


def col(row, name: str):
    """One column of an OVSDB row as a plain Python value."""
    return row[name]


def opt(value):
    """An optional (min 0, max 1) column: its value or None."""
    if isinstance(value, (set, frozenset, list, tuple)):
        return next(iter(value), None)
    return value


@dataclasses.dataclass
class IfaceConfig:
    """What the database asks for one interface."""

    name: str
    type: str
    options: dict
    ofport_request: int | None
    uuid: uuidlib.UUID
    port_uuid: uuidlib.UUID
    # From the Port row: VLAN configuration that NORMAL obeys.
    tag: int | None = None
    trunks: frozenset = frozenset()
    vlan_mode: str | None = None
    rxq_affinity: str | None = None  # other_config:pmd-rxq-affinity ("0:CORE")


@dataclasses.dataclass
class BridgeConfig:
    name: str
    uuid: uuidlib.UUID
    fail_mode: str
    protocols: frozenset
    controllers: list[str]
    datapath_id: int | None  # other_config:datapath-id
    ifaces: dict[str, IfaceConfig]
    datapath_type: str = "netdev"  # "xdp": kernel flow cache in front (fastpath/bpf)
    xdp_mode: str = "generic"  # other_config:xdp-mode, native|generic|auto


def read_config(db) -> dict[str, BridgeConfig]:
    """The desired bridges, from Open_vSwitch → Bridge → Port → Interface."""
    tables = {name: db.tables[name].rows for name in
              ("Open_vSwitch", "Bridge", "Port", "Interface", "Controller")}
    bridges: dict[str, BridgeConfig] = {}
    for ovs in tables["Open_vSwitch"].values():
        for br_uuid in col(ovs, "bridges"):
            br = tables["Bridge"].get(br_uuid)
            if br is None:
                continue
            ifaces: dict[str, IfaceConfig] = {}
            for port_uuid in col(br, "ports"):
                port = tables["Port"].get(port_uuid)
                if port is None:
                    continue
                for if_uuid in col(port, "interfaces"):
                    iface = tables["Interface"].get(if_uuid)
                    if iface is None:
                        continue
                    name = col(iface, "name")
                    ifaces[name] = IfaceConfig(
                        name=name, type=col(iface, "type"),
                        options=dict(col(iface, "options")),
                        ofport_request=opt(col(iface, "ofport_request")),
                        uuid=if_uuid, port_uuid=port_uuid,
                        tag=opt(col(port, "tag")),
                        trunks=frozenset(col(port, "trunks")),
                        vlan_mode=opt(col(port, "vlan_mode")),
                        rxq_affinity=col(iface, "other_config").get("pmd-rxq-affinity"))
            controllers = [col(tables["Controller"][c], "target")
                           for c in col(br, "controller") if c in tables["Controller"]]
            name = col(br, "name")
            dpid = col(br, "other_config").get("datapath-id")
            try:
                dpid = int(dpid, 16) if dpid else None
            except ValueError:
                log.warning("%s: ignoring bad other_config:datapath-id %r", name, dpid)
                dpid = None
            bridges[name] = BridgeConfig(
                name=name, uuid=br_uuid, fail_mode=opt(col(br, "fail_mode")) or "standalone",
                protocols=frozenset(col(br, "protocols")), controllers=controllers,
                datapath_id=dpid, ifaces=ifaces,
                datapath_type=col(br, "datapath_type") or "netdev",
                xdp_mode=col(br, "other_config").get("xdp-mode", "generic"))
    return bridges


def _ifindex(name: str) -> int | None:
    try:
        with open(f"/sys/class/net/{name}/ifindex") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _mac_of(ifname: str) -> str:
    try:
        with open(f"/sys/class/net/{ifname}/address") as f:
            return f.read().strip()
    except OSError:
        return "00:00:00:00:00:00"


@dataclasses.dataclass
class LivePort:
    """An interface that is (or failed to be) in the datapath."""

    config: IfaceConfig
    ofport: int  # -1 when it could not be opened
    dp_port: int | None
    error: str | None = None
    mac: str | None = None
    #: the device's ifindex when it failed to open: retried only once the
    #: device is re-created (not every second, logging the same error)
    failed_ifindex: int | None = None


class LockedPipeline:
    """The pipeline as the OpenFlow handlers see it: every method call holds
    the ofproto lock, since the datapath thread translates concurrently."""

    def __init__(self, pipeline: Pipeline, lock: threading.RLock):
        object.__setattr__(self, "_pipeline", pipeline)
        object.__setattr__(self, "_lock", lock)

    def atomically(self, fn):
        """``fn(pipeline)`` under the lock, as one step (a bundle commit)."""
        with self._lock:
            return fn(self._pipeline)

    def __setattr__(self, name: str, value) -> None:
        with self._lock:
            setattr(self._pipeline, name, value)

    def __getattr__(self, name: str):
        attr = getattr(self._pipeline, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def locked(*args, **kw):
            with self._lock:
                return attr(*args, **kw)
        return locked


class Bridge:
    """One OpenFlow bridge: its pipeline, its ports and its OpenFlow channel.

    It is also the backend the OpenFlow handlers call for what needs the
    datapath (packet-out, barrier, port-mod, port stats).
    """

    def __init__(self, name: str, reconciler: "BridgeReconciler"):
        self.name = name
        self.reconciler = reconciler
        self.lock = reconciler.ofproto_lock
        self.pipeline = Pipeline()
        self.ports: dict[str, LivePort] = {}
        self.fail_mode: str | None = None
        self.controllers: list[str] | None = None
        self.versions: set[int] | None = None
        self.datapath_id = 0
        self.connmgr: ConnectionManager | None = None
        self.revalidated_version = -1
        #: GENEVE option -> tun_metadataN (NXT_TLV_TABLE_MOD), read by tunnel ports
        self.tlv_map: dict[int, tuple[int, int, int]] = {}
        self.datapath_type: str | None = None
        #: datapath_type=xdp: the kernel flow cache on this bridge's ports
        self.xdp = None
        self.xdp_mode = "generic"

    @property
    def mgmt_target(self) -> str:
        return f"punix:{self.reconciler.rundir}/{self.name}.mgmt"

    # --- ports -------------------------------------------------------------
    def _alloc_ofport(self, cfg: IfaceConfig) -> int:
        if cfg.name == self.name:
            return OFPP_LOCAL
        used = {p.ofport for p in self.ports.values()}
        req = cfg.ofport_request
        if req is not None and 1 <= req <= OFPP_MAX and req not in used:
            return req
        return next(n for n in range(1, OFPP_MAX + 1) if n not in used)

    def add_port(self, cfg: IfaceConfig) -> LivePort:
        try:
            netdev = netdev_for(cfg.type)
            if netdev.datapath_port:
                # Behind the XDP cache, an interface's socket is AF_XDP fed by
                # the cache program's XSKMAP (misses, actions XDP cannot run).
                kind = ("afxdp-cache" if self.xdp is not None
                        and netdev.kind in ("afpacket", "afxdp") else None)
                dp_port = self.reconciler.datapath.call(netdev.open, cfg.name, cfg.options,
                                                        kind)
            else:   # a patch port: the pipeline's only (linked by the reconciler)
                netdev.check(cfg.name, cfg.options)
                dp_port = None
        except PortError as e:
            log.warning("%s: %s", self.name, e)
            live = self.ports[cfg.name] = LivePort(cfg, -1, None, str(e),
                                                   failed_ifindex=_ifindex(cfg.name))
            return live
        ofport = self._alloc_ofport(cfg)
        live = self.ports[cfg.name] = LivePort(cfg, ofport, dp_port, mac=_mac_of(cfg.name))
        port = Port(ofport=ofport, name=cfg.name, dp_port=dp_port, hw_addr=live.mac,
                    tag=cfg.tag, trunks=cfg.trunks, vlan_mode=cfg.vlan_mode,
                    tunnel=self.reconciler.tunnels.port_config(cfg.type, cfg.options))
        with self.lock:
            self.pipeline.set_port(port)
        if dp_port is not None:
            self.reconciler.dp_ports[dp_port] = (self, ofport)
            if cfg.rxq_affinity:
                self._set_rxq_affinity(cfg, dp_port)
        if self.xdp is not None and dp_port is not None:
            self._xdp_add(live)
        if self.connmgr is not None:
            self.connmgr.port_status(PORT_ADD, port)
        log.info("%s: added %s port %s", self.name, netdev.type, cfg.name,
                 extra={"fields": {"ofport": ofport, "dp_port": dp_port}})
        return live

    def del_port(self, name: str) -> None:
        live = self.ports.pop(name)
        if live.dp_port is None:
            if live.ofport > 0:            # a patch port: the pipeline's only
                with self.lock:
                    port = self.pipeline.ports.get(live.ofport)
                    self.pipeline.remove_port(live.ofport)
                    self.pipeline.patch_peers.pop(live.ofport, None)
                if self.connmgr is not None and port is not None:
                    self.connmgr.port_status(PORT_DELETE, port)
                # Before cur_cfg: PMDs forward through the patch independently
                # of the handler thread, so wait until their megaflows obey.
                self.revalidate()
            return
        self.reconciler.dp_ports.pop(live.dp_port, None)
        with self.lock:
            port = self.pipeline.ports.get(live.ofport)
            self.pipeline.remove_port(live.ofport)
        try:
            self.reconciler.datapath.call(lambda dpif: dpif.del_port(live.dp_port))
        except OSError as e:
            log.warning("%s: removing %s: %s", self.name, name, e)
        self.revalidate()
        if self.xdp is not None:
            self._xdp_remove(live)
        if self.connmgr is not None and port is not None:
            self.connmgr.port_status(PORT_DELETE, port)
        log.info("%s: deleted port %s", self.name, name)

    def _update_port(self, live: LivePort, **changes) -> None:
        with self.lock:
            port = dataclasses.replace(self.pipeline.ports[live.ofport], **changes)
            self.pipeline.set_port(port)
        self.revalidate()
        if self.connmgr is not None:
            self.connmgr.port_status(PORT_MODIFY, port)

    # --- reconcile -----------------------------------------------------------
    def reconcile(self, cfg: BridgeConfig) -> "asyncio.Task | None":
        """Apply ``cfg``; returns the task still opening OpenFlow listeners
        and controller connections, if any."""
        if (cfg.datapath_type, cfg.xdp_mode) != (self.datapath_type, self.xdp_mode):
            self._set_datapath_type(cfg.datapath_type, cfg.xdp_mode)
        for name in [n for n, p in self.ports.items()
                     if n not in cfg.ifaces
                     or (p.config.type, p.config.options)
                     != (cfg.ifaces[n].type, cfg.ifaces[n].options)]:
            self.del_port(name)
        for name, icfg in cfg.ifaces.items():
            live = self.ports.get(name)
            if live is None:
                self.add_port(icfg)
                continue
            old, live.config = live.config, icfg  # uuids may change on re-creation
            vlan = (icfg.tag, icfg.trunks, icfg.vlan_mode)
            if live.dp_port is not None and (old.tag, old.trunks, old.vlan_mode) != vlan:
                self._update_port(live, tag=icfg.tag, trunks=icfg.trunks,
                                  vlan_mode=icfg.vlan_mode)
        self._reconcile_flows(cfg)
        return self._reconcile_openflow(cfg)

    def _reconcile_flows(self, cfg: BridgeConfig) -> None:
        """OVS's default behaviour: with no controller, a standalone bridge
        is a MAC-learning switch (``priority=0,actions=NORMAL``); whenever
        the fail mode or the presence of controllers changes, rules are
        flushed first."""
        state = (cfg.fail_mode, bool(cfg.controllers))
        if state == (self.fail_mode, bool(self.controllers)):
            return
        with self.lock:
            self.pipeline.fail_mode = cfg.fail_mode
            if self.fail_mode is not None:
                self.pipeline.flow_mod(FlowMod("delete", 0xff, 0, Match()), time.monotonic())
            if not cfg.controllers:
                self.pipeline.install_default_flows(time.monotonic())
        self.fail_mode = cfg.fail_mode
        self.revalidate()

    def _reconcile_openflow(self, cfg: BridgeConfig) -> "asyncio.Task | None":
        versions = {OF_VERSIONS[p] for p in cfg.protocols if p in OF_VERSIONS} \
            or DEFAULT_OF_VERSIONS
        local = self.ports.get(self.name)
        dpid = cfg.datapath_id or _dpid_from_mac(local.mac if local and local.mac else None,
                                                 self.name)
        targets = [self.mgmt_target] + cfg.controllers
        if self.connmgr is not None and (versions, dpid) != (self.versions, self.datapath_id):
            # Versions and datapath id are fixed per connection: reconnect all.
            old, self.connmgr = self.connmgr, None
            asyncio.ensure_future(old.stop())
            self.controllers = None
        if self.connmgr is None:
            self.connmgr = ConnectionManager(
                self.name, LockedPipeline(self.pipeline, self.lock), self,
                datapath_id=dpid, allowed_versions=versions)
            self.versions, self.datapath_id = versions, dpid
        if cfg.controllers != self.controllers:
            self.controllers = list(cfg.controllers)
            return self.connmgr.set_controllers(targets)
        return None

    def _set_datapath_type(self, datapath_type: str, xdp_mode: str) -> None:
        """netdev: the userspace caches only; xdp: an XDP flow cache on each
        port forwards what it can in the kernel and redirects misses to the
        port's AF_XDP socket (its XSKMAP).  Changing it reopens every port."""
        self.remove_ports()
        self._close_xdp()
        self.datapath_type, self.xdp_mode = datapath_type, xdp_mode
        if datapath_type == "xdp":
            try:
                self.xdp = self.reconciler.xdp_cache()
            except XdpError as e:
                log.error("%s: datapath_type=xdp unavailable, using netdev: %s", self.name, e)
        elif datapath_type not in ("netdev", "system"):
            log.warning("%s: unknown datapath_type %r, using netdev", self.name, datapath_type)

    def _close_xdp(self) -> None:
        if self.xdp is not None:
            self.xdp = None
            self.reconciler.xdp_release()

    def _xdp_add(self, live: LivePort) -> None:
        if live.config.type == "geneve":
            return      # no device: its packets come from tnl_pop, in XDP too
        try:
            if live.config.type == "internal":
                self.xdp.set_output(live.dp_port, socket.if_nametoindex(live.config.name))
            else:
                self.xdp.attach(live.config.name, live.dp_port, mode=self.xdp_mode)
                fd = self.reconciler.datapath.call(lambda dpif: dpif.port_xsk_fd(live.dp_port))
                # Native mode: misses go up over AF_XDP.  Generic mode keeps
                # them on AF_PACKET, whose vnet header carries what AF_XDP
                # loses (partial checksums, GSO), as its hits keep the skb.
                if fd >= 0 and self.xdp.attached()[live.config.name][1] == "native":
                    self.xdp.set_xsk(live.dp_port, 0, fd)
        except (XdpError, OSError, ValueError) as e:
            # Still forwarded, by the userspace datapath alone.
            log.warning("%s: no XDP cache on %s: %s", self.name, live.config.name, e)

    def _xdp_remove(self, live: LivePort) -> None:
        try:
            if live.config.type == "internal":
                self.xdp.del_output(live.dp_port)
            elif live.config.name in self.xdp.attached():
                self.xdp.detach(live.config.name)
                if live.dp_port < 256:
                    self.xdp.set_xsk(live.dp_port, 0, None)
            self.xdp.delete_in_port(live.dp_port)   # the cache is shared by the bridges
        except (XdpError, OSError) as e:
            log.warning("%s: removing XDP from %s: %s", self.name, live.config.name, e)

    def check_ports(self, errors: dict[int, str]) -> None:
        """Take out ports whose device failed; reopen those whose device is
        back (a veth re-created, say)."""
        for name, live in list(self.ports.items()):
            if live.dp_port is not None and live.dp_port in errors:
                log.warning("%s: port %s failed: %s", self.name, name, errors[live.dp_port])
                self.del_port(name)
                self.ports[name] = LivePort(live.config, -1, None,
                                            f"network device {name} failed "
                                            f"({errors[live.dp_port]})")
            elif (live.dp_port is None and live.config.type in REOPENABLE
                  and _ifindex(name) not in (None, live.failed_ifindex)):
                del self.ports[name]
                self.add_port(live.config)

    def _set_rxq_affinity(self, cfg: IfaceConfig, dp_port: int) -> None:
        """pmd-rxq-affinity "0:CORE": queue 0 (our ports have one) polled by
        the PMD on CORE; malformed: logged, round robin."""
        try:
            pairs = dict(item.split(":") for item in cfg.rxq_affinity.split(","))
            core = int(pairs["0"])
        except (ValueError, KeyError):
            log.error("%s: %s: bad other_config:pmd-rxq-affinity %r (want 0:CORE)",
                      self.name, cfg.name, cfg.rxq_affinity)
            return
        self.reconciler.datapath.call(lambda dpif: dpif.set_rxq_affinity(dp_port, core))

    def remove_ports(self) -> None:
        """Take every port out of the datapath now (internal devices vanish)."""
        for name in list(self.ports):
            self.del_port(name)

    async def close(self) -> None:
        self.remove_ports()
        self._close_xdp()
        if self.connmgr is not None:
            connmgr, self.connmgr = self.connmgr, None
            await connmgr.stop()

    # --- backend of the OpenFlow handlers ----------------------------------
    def revalidate(self) -> None:
        """Return once the datapath obeys this bridge's current pipeline."""
        self.reconciler.datapath.call(self.reconciler.sweep)

    def execute_packet_out(self, in_port: int, actions: list, data: bytes) -> None:
        key = parse_packet(data, in_port)
        with self.lock:
            out = self.pipeline.packet_out(key, data, actions, time.monotonic())
        self._execute_once(key, data, out, "packet-out")

    def resume(self, data: bytes, metadata: Match | None, continuation: bytes) -> None:
        """NXT_RESUME: run what a controller(pause) left, on the packet the
        controller handed back, with the pipeline metadata (registers,
        in_port, tunnel, ct) it handed back.  Raises NXR_STALE (an OFError)
        for a continuation this bridge did not issue or no longer keeps."""
        in_port = FlowKey.from_int(metadata.value).in_port if metadata is not None else 0
        key = parse_packet(data, in_port)
        if metadata is not None:
            key = FlowKey.from_int((int(key) & ~metadata.mask) | metadata.value)
        with self.lock:
            out = self.pipeline.resume(key, data, continuation, time.monotonic())
        self._execute_once(key, data, out, "resume")

    def _execute_once(self, key: FlowKey, data: bytes, out, what: str) -> None:
        """Execute a one-packet translation (packet-out, resume) on the
        datapath thread, then hand its packet-ins to the controllers."""
        port = self.pipeline.ports.get(key.in_port)
        # The datapath's view: in_port is a datapath port (0: none, e.g. CONTROLLER).
        dp_key = key.copy()
        dp_key.in_port = port.dp_port if port is not None else 0
        reconciler, datapath = self.reconciler, self.reconciler.datapath

        def run(dpif):
            if fast_path_can_execute(out.actions):
                reconciler._handle_upcalls(datapath, dpif.execute(data, out.actions,
                                                                  bytes(dp_key)))
            else:  # ct, tunnel push/pop...: the Python executor
                odp_execute.execute(data, dp_key, out.actions, _SlowEnv(reconciler, datapath))

        try:
            datapath.call(run)
        except Exception:
            log.exception("%s: %s actions %s", self.name, what, out.actions)
        self.send_packet_ins(out.packet_ins)

    def tlv_map_changed(self, tlv_map: dict) -> None:
        self.tlv_map = tlv_map
        self.reconciler.tunnels.tlv_map_changed()   # the Cython tnl_pop decodes options
        with self.lock:
            self.pipeline.tlv_map = TlvMap(tlv_map)
            self.pipeline.version += 1
        self.revalidate()

    def port_mod(self, ofport: int, config: int, mask: int) -> None:
        live = next((p for p in self.ports.values() if p.ofport == ofport), None)
        if live is None:
            return
        self._update_port(live, **{flag: bool(config & bit)
                                   for bit, flag in PORT_CONFIG_BITS.items() if mask & bit})

    def port_stats(self, ofport: int | None) -> list[dict]:
        wanted = [p for p in self.ports.values() if p.dp_port is not None
                  and (ofport is None or p.ofport == ofport)]
        stats = self.reconciler.datapath.call(
            lambda dpif: [dpif.port_stats(p.dp_port) for p in wanted])
        return [dict(s, port_no=p.ofport) for p, s in zip(wanted, stats)]

    def send_packet_ins(self, packet_ins: list) -> None:
        """From any thread: hand packet-ins to the OpenFlow side -- of the
        bridge whose pipeline made them (a patch port may have led there)."""
        for pin in packet_ins:
            owner = self
            if pin.pipeline is not None and pin.pipeline is not self.pipeline:
                owner = self.reconciler.bridge_of(pin.pipeline) or self
            connmgr = owner.connmgr
            if connmgr is not None:
                self.reconciler.loop.call_soon_threadsafe(connmgr.send_packet_in, pin)

    def ct_flush_zone(self, zone: int) -> None:
        """NXT_CT_FLUSH_ZONE: forget the zone's connections (all bridges
        share the daemon's tracker, as OVS bridges share a datapath's)."""
        rec = self.reconciler

        def flush(dpif):
            rec.conntrack.flush(zone)
            rec._ct_drop_unoffloaded(dpif)    # their cached flows go too
        rec.datapath.call(flush)


# Datapath actions the Cython fast path executes itself (fastpath/execute.pyx);
# a megaflow with any other action is executed by slowpath/odp_execute.py.
FAST_ACTIONS = (dp.Output, dp.SetMasked, dp.PushVlan, dp.PopVlan, dp.Trunc, dp.Recirc,
                dp.Meter, dp.Hash, dp.PushMpls, dp.PopMpls, dp.CtClear)
def slow_path(actions: tuple) -> tuple:
    """What the fast path caches for a megaflow it cannot execute: "send
    it up", with the actions to run in Python — unless they need a fresh
    translation per packet (packet-ins carry per-packet data)."""
    return (dp.Userspace("slow_path", None if _has_userspace(actions) else actions),)


def _has_ct(actions) -> bool:
    return any(isinstance(a, dp.Ct) for a in actions)


def _has_userspace(actions) -> bool:
    return any(isinstance(a, dp.Userspace)
               or (isinstance(a, (dp.Clone, dp.Sample)) and _has_userspace(a.actions))
               or (isinstance(a, dp.CheckPktLen) and _has_userspace(a.gt + a.le))
               for a in actions)


def fast_path_can_execute(actions) -> bool:
    return all(isinstance(a, FAST_ACTIONS)
               or (isinstance(a, (dp.Clone, dp.Sample)) and fast_path_can_execute(a.actions))
               or (isinstance(a, dp.CheckPktLen) and fast_path_can_execute(a.gt + a.le))
               or (isinstance(a, dp.TunnelPush) and bool(a.header))   # native tunnelling
               or isinstance(a, dp.TunnelPop)
               for a in actions)


def _with_kernel_hits(dump, caches) -> list:
    """A megaflow's counters are its userspace hits plus its XDP hits."""
    kernel = {(m, k): (p, b, u) for xdp in caches for m, k, _a, p, b, u in xdp.dump()}
    merged = []
    for match, mask, actions, packets, nbytes, used in dump:
        kp, kb, ku = kernel.get((match, mask), (0, 0, 0.0))
        merged.append((match, mask, actions, packets + kp, nbytes + kb, max(used or 0.0, ku)))
    return merged


class _SlowEnv:
    """odp_execute's view of the datapath, for packets run in Python."""

    def __init__(self, reconciler: "BridgeReconciler", datapath):
        self.reconciler = reconciler
        self.datapath = datapath

    def output(self, dp_port: int, frame: bytes, key: FlowKey) -> None:
        self.datapath.dpif.execute(frame, (dp.Output(dp_port),))

    def recirculate(self, frame: bytes, key: FlowKey) -> None:
        # Back through the caches with the new metadata (recirc_id, ct_*).
        self.reconciler._handle_upcalls(self.datapath, self.datapath.dpif.execute(
            frame, (dp.Recirc(key.recirc_id),), bytes(key)))

    def meter(self, meter_id: int, frame: bytes) -> bool:
        return True  # meters in the Python path are not enforced yet


def _pmd_header(pmd) -> str:
    """dpctl/dump-flows' line before a PMD's megaflows, as OVS prints it."""
    if pmd.main:
        return "flow-dump from the main thread:"
    core = pmd.core_id if pmd.core_id >= 0 else "unpinned"
    return f"flow-dump from pmd on cpu core: {core}"


def _dpid_from_mac(mac: str | None, name: str) -> int:
    """OVS derives the datapath id from the bridge's Ethernet address."""
    if mac:
        return int(mac.replace(":", ""), 16)
    return int.from_bytes(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, name).bytes[:6], "big")


class BridgeReconciler:
    def __init__(self, db, datapath, rundir: str, loop: asyncio.AbstractEventLoop):
        self.db = db
        self.datapath = datapath
        self.rundir = rundir
        self.loop = loop
        self.bridges: dict[str, Bridge] = {}
        self.dp_ports: dict[int, tuple[Bridge, int]] = {}
        self.ofproto_lock = threading.RLock()
        self._unmatched_patches: set = set()
        self.revalidator = Revalidator()
        self.tunnels = TunnelManager(self)
        self._xdp: XdpCache | None = None       # see xdp_cache()
        self._xdp_users = 0
        self._xdp_tunnel_ports: list = []
        self._pending = False
        self._last_sweep = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._ticks = 0
        self._pmd_cpu_mask: str | None = None   # as last applied (or refused)
        datapath.upcall_handler = self.handle_upcall
        datapath.after_poll = self.maybe_sweep
        # One connection tracker per daemon, used only on the datapath thread
        # (ct actions run in odp_execute there; commands go through call()).
        self.conntrack = ConnTracker()
        #: The CT_Timeout_Policy configuration last applied (see reconcile).
        self._db_timeout_policies: dict | None = None
        ct_execute.install(self.conntrack, time.monotonic)
        # Established connections cached in the fast paths (offload.py).
        self.ct_offload = CtOffload(self.conntrack, fast_path_can_execute)
        self.conntrack.cache_used = self._ct_cache_used

    # --- the XDP flow cache -------------------------------------------------
    def xdp_cache(self) -> XdpCache:
        """The datapath's one kernel flow cache, shared by every bridge with
        datapath_type=xdp (as OVS has one datapath per type): megaflows are
        keyed by datapath port, and native tunnels cross bridges (br-int's
        tnl_push outputs to br-phy's NIC; tnl_pop on br-phy's NIC looks up
        br-int's megaflows).  Pair every call with ``xdp_release``."""
        if self._xdp is None:
            self._xdp = XdpCache(f"/sys/fs/bpf/pyvswitch/pid{os.getpid()}")
            self._xdp.set_tunnel_ports(self._xdp_tunnel_ports)
        self._xdp_users += 1
        return self._xdp

    def xdp_release(self) -> None:
        self._xdp_users -= 1
        if self._xdp_users == 0 and self._xdp is not None:
            self._xdp.close()
            self._xdp = None

    def xdp_tunnel_ports(self, spec: list) -> None:
        """The tunnel ports tnl_pop chooses among (TunnelManager.push_table)."""
        self._xdp_tunnel_ports = list(spec)
        if self._xdp is not None:
            self._xdp.set_tunnel_ports(spec)

    def _xdp_caches(self) -> list:
        return [self._xdp] if self._xdp is not None else []

    async def start(self) -> None:
        try:
            cleanup_stale()  # pinned maps of a daemon that died
        except OSError as e:
            log.warning("cleaning stale XDP maps: %s", e)
        self.db.ensure_open_vswitch_row()
        self._write_system_info()
        self.db.add_listener(self._on_commit)
        self.reconcile()
        self._expire_tick()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.db.remove_listener(self._on_commit)
        for br in list(self.bridges.values()):
            await br.close()
        self.bridges.clear()
        self.tunnels.close()

    def _on_commit(self, _db, _changes) -> None:
        # Coalesce bursts of transactions into one reconcile pass.
        if not self._pending:
            self._pending = True
            self.loop.call_soon(self._reconcile_pending)

    def _reconcile_pending(self) -> None:
        self._pending = False
        try:
            self.reconcile()
        except Exception:
            log.exception("reconcile failed")

    # --- reconcile -----------------------------------------------------------
    def reconcile(self) -> None:
        desired = read_config(self.db)
        self._configure_dpdk()
        policies, problems = ct_config.timeout_policies(self.db)
        if policies != self._db_timeout_policies:
            # Only a change of the database's policies replaces them: what
            # dpctl/ct-set-timeout-policy set lasts until then (a datapath
            # setting, as on OVS), not until any other column changes.
            for problem in problems:
                log.warning("ignoring conntrack timeout policy of %s", problem)
            self.conntrack.replace_timeout_policies(policies)
            self._db_timeout_policies = policies
        opening = []
        for name in [n for n in self.bridges if n not in desired]:
            log.info("deleting bridge %s", name)
            br = self.bridges.pop(name)
            br.remove_ports()  # before cur_cfg says the change is live
            asyncio.ensure_future(br.close())
        for name, cfg in desired.items():
            br = self.bridges.get(name)
            if br is None:
                log.info("adding bridge %s", name)
                br = self.bridges[name] = Bridge(name, self)
            if (task := br.reconcile(cfg)) is not None:
                opening.append(task)
        self.link_patches()
        self.tunnels.sync()
        self._configure_pmds()
        if opening:
            # cur_cfg only once BRIDGE.mgmt exists: `ovs-vsctl add-br br0 &&
            # ovs-ofctl dump-flows br0` must work, as with OVS.
            asyncio.ensure_future(self._write_back_after(opening))
        else:
            self._write_back()

    def _other_config(self) -> dict[str, str]:
        """The Open_vSwitch row's other_config (the switch-wide settings)."""
        config: dict[str, str] = {}
        for row in self.db.tables["Open_vSwitch"].rows.values():   # one row (maxRows 1)
            config = dict(col(row, "other_config"))
        return config

    def _configure_dpdk(self) -> None:
        """other_config:dpdk-init (once per daemon, as in OVS); dpdk ports
        that failed for want of it are then opened again."""
        if DPDK.configure(self._other_config()):
            for br in self.bridges.values():
                for name, live in list(br.ports.items()):
                    if live.config.type == "dpdk" and live.dp_port is None:
                        br.del_port(name)      # re-added by this reconcile

    def bridge_of(self, pipeline) -> "Bridge | None":
        return next((b for b in self.bridges.values() if b.pipeline is pipeline), None)

    def link_patches(self) -> None:
        """Join the patch ports whose ends name each other (both must exist,
        as in OVS); the pipelines they link share their recirculation ids."""
        ends = {name: (br, live.ofport, live.config.options.get("peer"))
                for br in self.bridges.values() for name, live in br.ports.items()
                if live.config.type == "patch" and live.ofport > 0}
        linked = []
        with self.ofproto_lock:
            for br in self.bridges.values():
                peers = {ofport: (ends[peer][0].pipeline, ends[peer][1])
                         for name, (b, ofport, peer) in ends.items()
                         if b is br and peer in ends and ends[peer][2] == name}
                if peers != br.pipeline.patch_peers:
                    br.pipeline.patch_peers = peers
                    br.pipeline.version += 1
                if peers:
                    linked.append(br.pipeline)
            if linked:
                RecircTable.join(linked)
        unmatched = {name for name, (_, _, peer) in ends.items()
                     if peer not in ends or ends[peer][2] != name}
        for name in sorted(unmatched - self._unmatched_patches):
            log.warning("%s: patch port %s: no patch port %s names it as its peer",
                        ends[name][0].name, name, ends[name][2])
        self._unmatched_patches = unmatched

    def _configure_pmds(self) -> None:
        """other_config:pmd-cpu-mask: one PMD thread per set bit, pinned
        (unset: one unpinned PMD).  A mask that cannot be applied is logged
        and the PMDs stay as they were."""
        text = self._other_config().get("pmd-cpu-mask")
        if text == self._pmd_cpu_mask:
            return
        self._pmd_cpu_mask = text
        try:
            cores = parse_cpu_mask(text)
            if cores != self.datapath.pmd_cores:
                self.datapath.set_pmd_cpus(cores)
                log.info("PMD threads on cores %s", cores if cores else "(one, unpinned)")
        except ValueError as e:
            log.error("other_config:pmd-cpu-mask: %s; keeping PMDs on %s", e,
                      self.datapath.pmd_cores or "(one, unpinned)")

    async def _write_back_after(self, tasks: list) -> None:
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("opening OpenFlow targets failed: %s", result)
        self._write_back()

    def _write_system_info(self) -> None:
        ovs_uuid = next(iter(self.db.tables["Open_vSwitch"].rows))
        self.db.transact_local([{
            "op": "update", "table": "Open_vSwitch",
            "where": [["_uuid", "==", ["uuid", str(ovs_uuid)]]],
            "row": {"ovs_version": __version__,
                    "datapath_types": ["set", ["netdev", "xdp"]],
                    "iface_types": ["set", sorted(t for t, n in NETDEV_TYPES.items()
                                                  if t and n.advertised)]},
        }])

    def _write_back(self) -> None:
        """Report what happened: ofports, errors, MACs, datapath ids and
        ``cur_cfg = next_cfg`` (what ``ovs-vsctl`` waits for)."""
        ops = []

        def update(table: str, row_uuid, row: dict, want: dict) -> None:
            have = {k: opt(col(row, k)) for k in want}
            if have != want:
                ops.append({"op": "update", "table": table,
                            "where": [["_uuid", "==", ["uuid", str(row_uuid)]]],
                            "row": {k: (["set", []] if v is None else v)
                                    for k, v in want.items()}})

        iface_rows = self.db.tables["Interface"].rows
        bridge_rows = self.db.tables["Bridge"].rows
        for br in self.bridges.values():
            for live in br.ports.values():
                row = iface_rows.get(live.config.uuid)
                if row is not None:
                    ok = live.error is None
                    update("Interface", live.config.uuid, row, {
                        "ofport": OFPP_LOCAL_DB if live.ofport == OFPP_LOCAL else live.ofport,
                        "error": live.error,
                        "mac_in_use": live.mac if ok else None,
                        "admin_state": "up" if ok else None,
                        "link_state": "up" if ok else None})
            for row_uuid, row in bridge_rows.items():
                if col(row, "name") == br.name and br.connmgr is not None:
                    update("Bridge", row_uuid, row,
                           {"datapath_id": "%016x" % br.datapath_id})
        ctl_rows = self.db.tables["Controller"].rows
        for br_uuid, row in bridge_rows.items():
            br = self.bridges.get(col(row, "name"))
            if br is None or br.connmgr is None:
                continue
            for ctl_uuid in col(row, "controller"):
                ctl = ctl_rows.get(ctl_uuid)
                if ctl is not None:
                    update("Controller", ctl_uuid, ctl, {
                        "is_connected": br.connmgr.is_connected(col(ctl, "target"))})
        for ovs_uuid, row in self.db.tables["Open_vSwitch"].rows.items():
            update("Open_vSwitch", ovs_uuid, row, {"cur_cfg": col(row, "next_cfg"),
                                                   "dpdk_initialized": DPDK.initialized,
                                                   "dpdk_version": DPDK.version})
        self._transact(ops, "write-back")

    # --- timers on the control thread ----------------------------------------
    def _expire_tick(self) -> None:
        """Once a second: rule timeouts (as OVS), devices that vanished or
        came back, and every few seconds statistics."""
        try:
            self._check_devices()
        except Exception:
            log.exception("checking devices failed")
        now = time.monotonic()
        for br in list(self.bridges.values()):
            with self.ofproto_lock:
                removed = br.pipeline.expire(now)
            if removed and br.connmgr is not None:
                br.connmgr.flow_removed(removed)
        self._ticks += 1
        if self._ticks % STATS_EVERY == 0:
            try:
                self._write_statistics()
            except Exception:
                log.exception("writing statistics failed")
        self._timer = self.loop.call_later(1.0, self._expire_tick)

    def _check_devices(self) -> None:
        dp_ports = [live.dp_port for br in self.bridges.values()
                    for live in br.ports.values() if live.dp_port is not None]
        errors = self.datapath.call(lambda dpif: {
            dp: err for dp in dp_ports if (err := dpif.port_error(dp)) is not None})
        for br in list(self.bridges.values()):
            br.check_ports(errors)
        self._write_back()  # also Controller.is_connected; writes only what changed

    def _write_statistics(self) -> None:
        """Interface.statistics, as OVS refreshes it every few seconds."""
        ports = [(live.config.uuid, live.dp_port) for br in self.bridges.values()
                 for live in br.ports.values() if live.dp_port is not None]
        if not ports:
            return
        stats = self.datapath.call(lambda dpif: [dpif.port_stats(dp) for _, dp in ports])
        rows = self.db.tables["Interface"].rows
        ops = [{"op": "update", "table": "Interface",
                "where": [["_uuid", "==", ["uuid", str(u)]]],
                "row": {"statistics": ["map", [[k, v] for k, v in sorted(st.items())]]}}
               for (u, _), st in zip(ports, stats)
               if u in rows and dict(col(rows[u], "statistics")) != st]
        self._transact(ops, "statistics")

    def _transact(self, ops: list[dict], what: str) -> None:
        """Our own write to the database; a failure is a bug worth a log line."""
        if not ops:
            return
        errors = [r for r in self.db.transact_local(ops) if isinstance(r, dict) and "error" in r]
        if errors:
            log.error("writing %s failed: %s", what, errors)

    # --- the slow path, on the datapath thread ------------------------------
    def handle_upcall(self, datapath, upcall, origin=None) -> None:
        """A packet no megaflow covered, or one whose megaflow says "slow
        path": translate it, cache the result, and execute it.

        ``origin``: the PMD whose upcall led here when ``upcall`` comes from
        executing that packet (a recirculation miss in the main context):
        the megaflow goes into that PMD too, so its next packets recirculate
        within it, as when dpif-netdev's PMD handles its own misses."""
        if self.tunnels.handle_upcall(datapath, upcall):
            return  # received tunnel packets were waiting (vswitch/ports/geneve.py)
        cached = getattr(upcall.action, "cookie", None) if upcall.reason == "action" else None
        if isinstance(cached, tuple):
            # A hit on a slow-path megaflow that carries its actions: no need
            # to translate again (the revalidator keeps it true and credits it).
            odp_execute.execute(upcall.packet, FlowKey(upcall.key), cached,
                                _SlowEnv(self, datapath))
            self._ct_after_slow(datapath, upcall, cached)
            return
        entry = self.dp_ports.get(upcall.dp_port)
        if entry is None:
            return  # the port is going away
        bridge, ofport = entry
        key = FlowKey(upcall.key)
        key.in_port = ofport
        now = time.monotonic()
        dpif = datapath.dpif
        with self.ofproto_lock:
            out = bridge.pipeline.xlate(key, upcall.packet, now)
            actions = tuple(out.megaflow.actions)
            fast = fast_path_can_execute(actions)
            if not out.slow and upcall.reason == "miss":
                match = FlowKey(out.megaflow.match)
                match.in_port = upcall.dp_port
                match = bytes(match)
                # Megaflows the fast path cannot execute still get cached,
                # as "send to the slow path", so they cost no miss lookups.
                # Into the PMD that missed (its cache), as dpif-netdev does.
                cached_actions = actions if fast else slow_path(actions)
                dpif.flow_put(match, out.megaflow.mask, cached_actions, pmd=upcall.pmd)
                if origin is not None and origin is not upcall.pmd:
                    dpif.flow_put(match, out.megaflow.mask, cached_actions, pmd=origin)
                if bridge.xdp is not None and not _has_ct(actions):
                    # Same key space (in_port = dp_port); XDP runs what it can
                    # and flags the rest "to userspace".  Not ct: XDP searches
                    # masks in order, and the generic entry must not shadow
                    # the connections offloaded from it (_ct_offload).
                    bridge.xdp.put(match, out.megaflow.mask, actions)
                if (match, out.megaflow.mask) not in self.revalidator.ukeys:
                    # (Another PMD may hold it already: its ukey keeps the
                    # counters credited so far and the translation to check.)
                    self.revalidator.installed(match, out.megaflow.mask, bridge.pipeline,
                                               ofport, out, now)
        if fast:
            if origin is None and upcall.pmd is not None and not upcall.pmd.main:
                origin = upcall.pmd
            self._handle_upcalls(datapath, dpif.execute(upcall.packet, actions, upcall.key),
                                 origin)
        else:
            odp_execute.execute(upcall.packet, FlowKey(upcall.key), actions,
                                _SlowEnv(self, datapath))
            self._ct_after_slow(datapath, upcall, actions)
        bridge.send_packet_ins(out.packet_ins)

    def _handle_upcalls(self, datapath, upcalls, origin=None) -> None:
        for u in upcalls or ():
            self.handle_upcall(datapath, u, origin)

    # --- conntrack offload (slowpath/conntrack/offload.py) -------------------
    def _ct_after_slow(self, datapath, upcall, actions) -> None:
        """After a packet ran through ``ct`` in Python: cache its connection
        in the fast paths if it now may be (established both ways), and
        delete the cached flows of connections the tracker took back (this
        packet's FIN, say), so the next segments reach it."""
        if _has_ct(actions):
            key = FlowKey(upcall.key)
            if self.ct_offload.candidate(key, actions):
                self._ct_offload(datapath.dpif, upcall.dp_port, key)
        self._ct_drop_unoffloaded(datapath.dpif)

    def _ct_offload(self, dpif, dp_port: int, key: FlowKey) -> None:
        entry = self.dp_ports.get(dp_port)
        if entry is None:
            return
        bridge, ofport = entry
        key.in_port = ofport
        now = time.monotonic()
        off = self.ct_offload
        with self.ofproto_lock:
            version = bridge.pipeline.version
            if off.refused_before(key, version) or off.covered(key, dp_port):
                return      # (covered: a packet of the burst that installed it)
            plan = off.plan(bridge.pipeline, key, now)
            if plan is None:
                off.refuse(key, version)
                return
            match = FlowKey(plan.match)
            match.in_port = dp_port
            match = bytes(match)
            try:
                dpif.flow_put(match, plan.mask, plan.actions, prio=1)
            except OSError as e:            # the megaflow cache is full
                log.debug("ct offload: %s", e)
                return
            if bridge.xdp is not None:
                try:
                    bridge.xdp.put(match, plan.mask, plan.actions)
                except (XdpError, OSError, ValueError) as e:
                    log.debug("ct offload to XDP: %s", e)
            self.revalidator.installed_offload(match, plan.mask, plan, now)
            off.installed(match, plan.mask, plan)

    def _ct_drop_unoffloaded(self, dpif) -> None:
        """Delete the cached flows of connections the tracker took back
        (closing, flushed, expired, mark changed); final hits are credited."""
        doomed = self.ct_offload.doomed()
        if not doomed:
            return
        caches = self._xdp_caches()
        now = time.monotonic()
        with self.ofproto_lock:
            for match, mask in doomed:
                st = dpif.flow_del(match, mask) or {"packets": 0, "bytes": 0, "used": 0.0}
                p, b, u = st["packets"], st["bytes"], st["used"]
                for xdp in caches:
                    try:
                        ks = xdp.stats(match, mask)
                    except KeyError:
                        continue
                    p, b, u = p + ks["packets"], b + ks["bytes"], max(u, ks["used"])
                    xdp.delete(match, mask)
                self.revalidator.retire(match, mask, p, b, u, now)
                self.ct_offload.forget(match, mask)

    def _ct_cache_used(self, conn) -> float:
        """ConnTracker.cache_used: the last hit of a connection's entries."""
        dpif = self.datapath.dpif
        caches = self._xdp_caches()

        def used(match: bytes, mask: bytes) -> float:
            st = dpif.flow_stats(match, mask)
            u = st["used"] if st else 0.0
            for xdp in caches:
                try:
                    u = max(u, xdp.stats(match, mask)["used"])
                except KeyError:
                    pass
            return u
        return self.ct_offload.used(conn, used)

    def maybe_sweep(self, dpif) -> None:
        """After each poll: sweep if a pipeline moved on, or every second."""
        if (time.monotonic() - self._last_sweep > SWEEP_INTERVAL
                or any(br.pipeline.version != br.revalidated_version
                       for br in tuple(self.bridges.values()))):
            self.sweep(dpif)

    def sweep(self, dpif, force: bool = False) -> None:
        """Revalidate every megaflow; on the datapath thread."""
        now = time.monotonic()
        bridges = tuple(self.bridges.values())
        caches = self._xdp_caches()
        with self.ofproto_lock:
            versions = [(br, br.pipeline.version) for br in bridges]
            doomed = self.revalidator.sweep(_with_kernel_hits(dpif.flow_dump(), caches),
                                            now, force)
        for match, mask in doomed:
            dpif.flow_del(match, mask)
            for xdp in caches:
                xdp.delete(match, mask)
            self.ct_offload.forget(match, mask)
        for k in [k for k in self.ct_offload.entries if k not in self.revalidator.ukeys]:
            self.ct_offload.forget(*k)      # gone from the datapath behind our back
        for br, version in versions:
            br.revalidated_version = version
        self._last_sweep = now
        self.conntrack.expire(now)
        self._ct_drop_unoffloaded(dpif)

    # --- control commands ----------------------------------------------------
    def register_commands(self, ctl) -> None:
        ctl.register("dpctl/dump-flows", "[--kernel]", self._cmd_dump_flows)
        ctl.register("dpctl/show", "", self._cmd_show)
        for name, usage in ct_dpctl.COMMANDS.items():
            ctl.register(name, usage, functools.partial(self._cmd_conntrack, name))
        ctl.register("dpctl/del-flows", "", self._cmd_del_flows)
        ctl.register("dpif-netdev/pmd-rxq-show", "", self._cmd_pmd_rxq_show)
        ctl.register("dpif-netdev/pmd-stats-show", "", self._cmd_pmd_stats_show)
        ctl.register("dpif-netdev/pmd-stats-clear", "", self._cmd_pmd_stats_clear)
        ctl.register("revalidator/purge", "", self._cmd_del_flows)
        ctl.register("fdb/show", "BRIDGE", self._cmd_fdb_show)
        self.tunnels.register_commands(ctl)

    def _cmd_dump_flows(self, args: list[str]) -> str:
        """Megaflows like ``ovs-appctl dpctl/dump-flows``: in_port and
        outputs are datapath port numbers (see dpctl/show)."""
        if "--kernel" in args:
            caches = self._xdp_caches()
            if not caches:
                return "no bridge has datapath_type=xdp: no kernel flow cache\n"
            groups = [(None, [f for xdp in caches for f in xdp.dump()])]
        else:
            # As dpif-netdev: each PMD's own megaflows under a header.
            groups = [(_pmd_header(pmd), flows) for pmd, flows in
                      self.datapath.call(lambda dpif: dpif.flow_dump_pmds()) if flows]
        now = time.monotonic()
        lines = []
        for header, flows in groups:
            if header:
                lines.append(header + "\n")
            for match, mask, actions, packets, nbytes, used in flows:
                text = str(Megaflow(match, mask, tuple(actions)))
                flow, _, acts = text.rpartition(", actions:")
                lines.append(f"{flow}, packets:{packets}, bytes:{nbytes}, used:"
                             + (f"{now - used:.3f}s" if used else "never")
                             + f", actions:{acts}\n")
        return "".join(lines)

    def _cmd_pmd_rxq_show(self, _args: list[str]) -> str:
        """Which PMD polls which port, as ``dpif-netdev/pmd-rxq-show``."""
        def run(dpif):
            return [(pmd, pmd.rx_ports(), pmd.stats()) for pmd in dpif.pmds()]
        out = []
        for pmd, ports, st in self.datapath.call(run):
            busy = st["busy_ns"] * 100 // max(st["busy_ns"] + st["idle_ns"], 1)
            out.append(f"{pmd.name}:\n  isolated : false\n")
            for _dp_port, name in ports:
                out.append(f"  port: {name:<16}  queue-id: {0:>2} (enabled)   "
                           f"pmd usage: {busy:>2} %\n")
        return "".join(out)

    def _cmd_pmd_stats_show(self, _args: list[str]) -> str:
        """Per-PMD counters, as ``dpif-netdev/pmd-stats-show``."""
        out = []
        for pmd, st in self.datapath.call(lambda dpif: [(p, p.stats()) for p in
                                                        [dpif.main] + dpif.pmds()]):
            rx = st["rx_packets"]
            hits = st["megaflow_hits"]
            cycles = st["busy_ns"] + st["idle_ns"]
            out.append(f"{pmd.name}:\n"
                       f"  packets received: {rx}\n"
                       f"  packet recirculations: {st['recirc']}\n"
                       f"  avg. datapath passes per packet: "
                       f"{(rx + st['recirc']) / rx if rx else 0:.2f}\n"
                       f"  emc hits: {st['emc_hits']}\n"
                       f"  smc hits: 0\n"
                       f"  megaflow hits: {hits}\n"
                       f"  avg. subtable lookups per megaflow hit: "
                       f"{st['subtables_probed'] / hits if hits else 0:.2f}\n"
                       f"  miss with success upcall: {st['missed'] - st['lost']}\n"
                       f"  miss with failed upcall: {st['lost']}\n"
                       f"  polls: {st['polls']} rounds: {st['rounds']}\n")
            if not pmd.main:
                out.append(f"  idle cycles: {st['idle_ns']} "
                           f"({st['idle_ns'] * 100 / cycles if cycles else 0:.2f}%)\n"
                           f"  processing cycles: {st['busy_ns']} "
                           f"({st['busy_ns'] * 100 / cycles if cycles else 0:.2f}%)\n")
        out.append(f"  upcalls queued to the handler: {self.datapath.upcalls} "
                   f"dropped (queue full): {self.datapath.upcalls_dropped}\n")
        return "".join(out)

    def _cmd_pmd_stats_clear(self, _args: list[str]) -> str:
        self.datapath.call(lambda dpif: [p.clear_stats() for p in [dpif.main] + dpif.pmds()])
        return ""

    def _cmd_del_flows(self, _args: list[str]) -> str:
        def purge(dpif):
            dpif.flow_flush()
            with self.ofproto_lock:
                self.revalidator.clear()
                self.ct_offload.clear()
        self.datapath.call(purge)
        return ""

    def _cmd_fdb_show(self, args: list[str]) -> str:
        from vswitch.unixctl import UnixctlError

        if len(args) != 1 or args[0] not in self.bridges:
            raise UnixctlError(f"no such bridge {' '.join(args)!r}")
        with self.ofproto_lock:
            entries = self.bridges[args[0]].pipeline.mac_learning.dump(time.monotonic())
        lines = [" port  VLAN  MAC                Age\n"]
        for port, vlan, mac, age in entries:
            mac_s = ":".join(f"{b:02x}" for b in mac.to_bytes(6, "big"))
            port_s = "LOCAL" if port == OFPP_LOCAL else str(port)
            lines.append(f"{port_s:>5}  {vlan:>4}  {mac_s}  {int(age):>3}\n")
        return "".join(lines)

    def _cmd_show(self, _args: list[str]) -> str:
        ports = self.datapath.call(lambda dpif: {dp: (name, dpif.port_stats(dp))
                                                 for dp, name in dpif.ports().items()})
        n_flows = self.datapath.call(lambda dpif: dpif.flow_count())
        out = [f"netdev@pyvswitch:\n  upcalls:{self.datapath.upcalls} "
               f"upcall_errors:{self.datapath.upcall_errors} "
               f"upcall_dropped:{self.datapath.upcalls_dropped} flows:{n_flows}\n"]
        cto = self.ct_offload
        out.append(f"  ct_offload: flows:{len(cto.entries)} connections:{len(cto.by_conn)} "
                   + " ".join(f"{k}:{v}" for k, v in cto.stats.items()) + "\n")
        for dp, (name, st) in sorted(ports.items()):
            owner = self.dp_ports.get(dp)
            where = f" ({owner[0].name} ofport {owner[1]})" if owner else ""
            out.append(f"  port {dp}: {name}{where}\n    "
                       + " ".join(f"{k}:{v}" for k, v in st.items()) + "\n")
        return "".join(out)

    def _cmd_conntrack(self, command: str, args: list[str]) -> str:
        from vswitch.unixctl import UnixctlError

        def run(dpif):
            try:
                return ct_dpctl.run(self.conntrack, command, args, time.monotonic())
            finally:
                self._ct_drop_unoffloaded(dpif)   # flushed, offload turned off...
        try:
            return self.datapath.call(run)
        except ValueError as e:
            raise UnixctlError(str(e)) from None
