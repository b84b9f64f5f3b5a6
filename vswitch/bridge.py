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
import logging
import threading
import time
import uuid as uuidlib

from slowpath.pipeline import Pipeline
from slowpath.port import Port
from vswitch import __version__
from vswitch.ports import NETDEV_TYPES, PortError, netdev_for

log = logging.getLogger(__name__)

OFPP_LOCAL = 0xfffffffe  # the bridge-local port, 32-bit (OF1.1+ numbering)
OFPP_MAX = 0xfeff  # highest ofport we hand out (OVS keeps 16-bit ports)


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


@dataclasses.dataclass
class BridgeConfig:
    name: str
    uuid: uuidlib.UUID
    fail_mode: str
    protocols: frozenset
    controllers: list[str]
    ifaces: dict[str, IfaceConfig]


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
                        vlan_mode=opt(col(port, "vlan_mode")))
            controllers = [col(tables["Controller"][c], "target")
                           for c in col(br, "controller") if c in tables["Controller"]]
            name = col(br, "name")
            bridges[name] = BridgeConfig(
                name=name, uuid=br_uuid, fail_mode=opt(col(br, "fail_mode")) or "standalone",
                protocols=frozenset(col(br, "protocols")), controllers=controllers,
                ifaces=ifaces)
    return bridges


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


class Bridge:
    def __init__(self, name: str, reconciler: "BridgeReconciler"):
        self.name = name
        self.reconciler = reconciler
        self.pipeline = Pipeline()
        self.ports: dict[str, LivePort] = {}
        self.fail_mode = ""
        self.controllers: list[str] = []

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
        datapath = self.reconciler.datapath
        try:
            netdev = netdev_for(cfg.type)
            dp_port = datapath.call(netdev.open, cfg.name, cfg.options)
        except PortError as e:
            log.warning("%s: %s", self.name, e)
            live = LivePort(cfg, -1, None, str(e))
            self.ports[cfg.name] = live
            return live
        ofport = self._alloc_ofport(cfg)
        live = LivePort(cfg, ofport, dp_port)
        self.ports[cfg.name] = live
        with self.reconciler.ofproto_lock:
            self.pipeline.ports[ofport] = Port(
                ofport=ofport, name=cfg.name, dp_port=dp_port,
                hw_addr=_mac_of(cfg.name), tag=cfg.tag, trunks=cfg.trunks,
                vlan_mode=cfg.vlan_mode)
            self.pipeline.port_changed()
        self.reconciler.dp_ports[dp_port] = (self, ofport)
        log.info("%s: added %s port %s", self.name, netdev.type, cfg.name,
                 extra={"fields": {"ofport": ofport, "dp_port": dp_port}})
        return live

    def del_port(self, name: str) -> None:
        live = self.ports.pop(name)
        if live.dp_port is None:
            return
        self.reconciler.dp_ports.pop(live.dp_port, None)
        with self.reconciler.ofproto_lock:
            self.pipeline.ports.pop(live.ofport, None)
            self.pipeline.port_changed()
        try:
            self.reconciler.datapath.call(lambda dpif: dpif.del_port(live.dp_port))
        except OSError as e:
            log.warning("%s: removing %s: %s", self.name, name, e)
        self.reconciler.revalidate()
        log.info("%s: deleted port %s", self.name, name)

    def reconcile(self, cfg: BridgeConfig) -> None:
        if cfg.fail_mode != self.fail_mode:
            self.fail_mode = cfg.fail_mode
            with self.reconciler.ofproto_lock:
                self.pipeline.fail_mode = cfg.fail_mode
                if cfg.fail_mode != "secure" and not cfg.controllers:
                    self.pipeline.install_default_flows()
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
            if live.dp_port is not None and (old.tag, old.trunks, old.vlan_mode) != (
                    icfg.tag, icfg.trunks, icfg.vlan_mode):
                with self.reconciler.ofproto_lock:
                    port = self.pipeline.ports[live.ofport]
                    port.tag, port.trunks, port.vlan_mode = (
                        icfg.tag, icfg.trunks, icfg.vlan_mode)
                    self.pipeline.port_changed()
                self.reconciler.revalidate()

    def close(self) -> None:
        for name in list(self.ports):
            self.del_port(name)


class BridgeReconciler:
    def __init__(self, db, datapath, rundir: str, loop: asyncio.AbstractEventLoop):
        self.db = db
        self.datapath = datapath
        self.rundir = rundir
        self.loop = loop
        self.bridges: dict[str, Bridge] = {}
        self.dp_ports: dict[int, tuple[Bridge, int]] = {}
        self.ofproto_lock = threading.RLock()
        self._pending = False
        datapath.upcall_handler = self.handle_upcall

    async def start(self) -> None:
        self.db.ensure_open_vswitch_row()
        self._write_system_info()
        self.db.add_listener(self._on_commit)
        self.reconcile()

    async def close(self) -> None:
        for br in list(self.bridges.values()):
            br.close()
        self.bridges.clear()

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
        for name in [n for n in self.bridges if n not in desired]:
            log.info("deleting bridge %s", name)
            self.bridges.pop(name).close()
        for name, cfg in desired.items():
            br = self.bridges.get(name)
            if br is None:
                log.info("adding bridge %s", name)
                br = self.bridges[name] = Bridge(name, self)
            br.reconcile(cfg)
        self._write_back(desired)

    def _write_system_info(self) -> None:
        ovs_uuid = next(iter(self.db.tables["Open_vSwitch"].rows))
        self.db.transact_local([{
            "op": "update", "table": "Open_vSwitch",
            "where": [["_uuid", "==", ["uuid", str(ovs_uuid)]]],
            "row": {"ovs_version": __version__,
                    "datapath_types": ["set", ["netdev"]],
                    "iface_types": ["set", sorted(t for t in NETDEV_TYPES if t)]},
        }])

    def _write_back(self, desired: dict[str, BridgeConfig]) -> None:
        """Report what happened: ofports, errors, and cur_cfg = next_cfg."""
        ops = []
        iface_rows = self.db.tables["Interface"].rows
        for br in self.bridges.values():
            for live in br.ports.values():
                row = iface_rows.get(live.config.uuid)
                if row is None:
                    continue
                want = {"ofport": live.ofport,
                        "error": live.error,
                        "admin_state": None if live.error else "up",
                        "link_state": None if live.error else "up"}
                have = {k: opt(col(row, k)) for k in want}
                if want != have:
                    ops.append({
                        "op": "update", "table": "Interface",
                        "where": [["_uuid", "==", ["uuid", str(live.config.uuid)]]],
                        "row": {k: (["set", []] if v is None else v)
                                for k, v in want.items()}})
        for ovs_uuid, row in self.db.tables["Open_vSwitch"].rows.items():
            if col(row, "cur_cfg") != col(row, "next_cfg"):
                ops.append({"op": "update", "table": "Open_vSwitch",
                            "where": [["_uuid", "==", ["uuid", str(ovs_uuid)]]],
                            "row": {"cur_cfg": col(row, "next_cfg")}})
        if ops:
            result = self.db.transact_local(ops)
            errors = [r for r in result if isinstance(r, dict) and "error" in r]
            if errors:
                log.error("write-back failed: %s", errors)

    # --- the slow path, on the datapath thread ------------------------------
    def handle_upcall(self, datapath, upcall) -> None:
        from slowpath.flow import FlowKey

        entry = self.dp_ports.get(upcall.dp_port)
        if entry is None:
            return  # the port is going away
        bridge, ofport = entry
        key = FlowKey(upcall.key)
        key.in_port = ofport
        with self.ofproto_lock:
            version = bridge.pipeline.version
            out = bridge.pipeline.xlate(key, upcall.packet, time.monotonic())
            changed = bridge.pipeline.version != version
        dpif = datapath.dpif
        if changed:
            # MAC learning (or another side effect) changed what earlier
            # megaflows decided: drop them; they come back on their next miss.
            dpif.flow_flush()
        mf = out.megaflow
        match = FlowKey(mf.match)
        match.in_port = upcall.dp_port
        dpif.flow_put(bytes(match), bytes(mf.mask), mf.actions)
        dpif.execute(upcall.packet, mf.actions)

    def revalidate(self) -> None:
        """Make the datapath obey the current pipelines before returning."""
        self.datapath.call(lambda dpif: dpif.flow_flush())

    # --- control commands ----------------------------------------------------
    def register_commands(self, ctl) -> None:
        ctl.register("dpctl/dump-flows", "[--kernel]", self._cmd_dump_flows)
        ctl.register("dpctl/show", "", self._cmd_show)
        ctl.register("dpctl/del-flows", "", self._cmd_del_flows)

    def _cmd_dump_flows(self, args: list[str]) -> str:
        from slowpath.flow import format_megaflow

        if "--kernel" in args:
            return "no kernel (XDP) flow cache on this datapath\n"
        flows = self.datapath.call(lambda dpif: dpif.flow_dump())
        lines = []
        now = time.monotonic()
        names = {dp: f"{br.name}:{ofp}" for dp, (br, ofp) in self.dp_ports.items()}
        for match, mask, actions, packets, nbytes, used in flows:
            lines.append(format_megaflow(match, mask, actions, port_names=names)
                         + f", packets:{packets}, bytes:{nbytes}, used:"
                         + (f"{now - used:.3f}s" if used else "never"))
        return "".join(line + "\n" for line in lines)

    def _cmd_del_flows(self, _args: list[str]) -> str:
        self.revalidate()
        return ""

    def _cmd_show(self, _args: list[str]) -> str:
        ports = self.datapath.call(lambda dpif: {dp: (name, dpif.port_stats(dp))
                                                 for dp, name in dpif.ports().items()})
        n_flows = self.datapath.call(lambda dpif: len(dpif.flow_dump()))
        out = [f"netdev@pyvswitch:\n  upcalls:{self.datapath.upcalls} "
               f"upcall_errors:{self.datapath.upcall_errors} flows:{n_flows}\n"]
        for dp, (name, st) in sorted(ports.items()):
            owner = self.dp_ports.get(dp)
            where = f" ({owner[0].name} ofport {owner[1]})" if owner else ""
            out.append(f"  port {dp}: {name}{where}\n    "
                       + " ".join(f"{k}:{v}" for k, v in st.items()) + "\n")
        return "".join(out)
