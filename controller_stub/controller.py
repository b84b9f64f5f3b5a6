"""The reconciling controller on asyncio.

One `HostAgent` per host of the desired `State` keeps what the controller
believes that host's bridge holds (`installed`, learned by dumping the
controller's cookie space when a switch connects) and what it reports (port
names -> ofports).  `Controller.reconcile()` computes each host's desired
rules (`flows.host_flows`), sends only the difference (`ofmsg.diff`)
followed by a barrier, and records what failed so the next pass retries it.
A switch that reconnects — or a controller that restarts — is resynchronised
the same way: dump, diff, send the difference (nothing, when unchanged), so
established traffic never sees its rules flushed.

Transports: `SwitchSession` is the thin asyncio protocol around the sans-IO
`ofconn.ControllerConnection` (bytes in, events out, one timer).  Hosts with
``openflow: unix:...``/``tcp:...`` are dialled (and re-dialled with backoff);
``listen("ptcp:PORT[:IP]")`` accepts switches that dial us and binds them to
the host whose ``datapath_id`` they report.  Hosts with an ``ovsdb`` endpoint
get their GENEVE ports (one per other host, ``key=flow``) created over OVSDB.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from . import flows as F
from . import ofmsg
from .ofconn import BarrierDone, Closed, Connected, ControllerConnection, Error, Message, Reply
from .ovsdb import OvsdbClient
from .state import State

log = logging.getLogger("controller_stub")
BACKOFF_MIN, BACKOFF_MAX = 0.2, 4.0


class SwitchSession(asyncio.Protocol):
    """One stream <-> one ControllerConnection; events go to the controller."""

    def __init__(self, controller: "Controller", agent: Optional["HostAgent"],
                 probe: Optional[float]):
        self.controller = controller
        self.agent = agent
        self.loop = asyncio.get_event_loop()
        self.conn = ControllerConnection(self.loop.time(), probe_interval=probe)
        self.transport = None
        self._timer = None
        self.closed = self.loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.transmit()

    def data_received(self, data):
        self.conn.receive_bytes(data, self.loop.time())
        self.drain()

    def connection_lost(self, exc):
        if self._timer:
            self._timer.cancel()
        if self.agent is not None and self.agent.session is self:
            self.agent.disconnected()
        if not self.closed.done():
            self.closed.set_result(None)

    def _on_timer(self):
        self._timer = None
        self.conn.handle_timer(self.loop.time())
        self.drain()

    def drain(self):
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, Connected) and self.agent is None:
                self.agent = self.controller.agent_for_datapath(ev.datapath_id)
                if self.agent is None:
                    log.warning("switch %016x matches no host; closing", ev.datapath_id)
                    self.conn.close("unknown datapath")
                    continue
            if self.agent is not None:
                self.agent.event(self, ev)
        self.transmit()

    def transmit(self):
        if self.transport is None or self.transport.is_closing():
            return
        data = self.conn.bytes_to_send()
        if data:
            self.transport.write(data)
        if self.conn.closed:
            self.transport.close()
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        t = self.conn.get_timer()
        if t is not None:
            self._timer = self.loop.call_at(t, self._on_timer)


class HostAgent:
    def __init__(self, controller: "Controller", name: str):
        self.controller = controller
        self.name = name
        self.session: Optional[SwitchSession] = None
        self.view = F.HostView()
        self.installed: dict = {}          # Flow.key -> Flow
        self.synced = False
        self._dump_xid = None
        self._inflight: dict = {}          # barrier xid -> {xid: ("add"|"del", Flow)}
        self._sent: dict = {}              # xid -> ("add"|"del", Flow) since the last barrier
        self.last_flow_mods = 0
        self.total_flow_mods = 0
        self.n_errors = 0
        self.connects = 0
        self.dialer: Optional[asyncio.Task] = None
        self.pending_garp: set = set()    # logical ports to announce once their VIF is up
        self.tlv_index: Optional[int] = None   # tun_metadata slot of OVN's GENEVE option
        self._tlv_xid = self._tlv_mod_xid = None
        self.garps_sent = 0
        self.nd_answered = 0

    @property
    def connected(self) -> bool:
        return self.session is not None and not self.session.conn.closed

    @property
    def idle(self) -> bool:
        return self.synced and not self._inflight

    # ---- events of the current session
    def event(self, session: SwitchSession, ev):
        if isinstance(ev, Connected):
            if self.session is not None and self.session is not session:
                self.session.conn.close("replaced by a new connection")
                self.session.transmit()
            self.session = session
            self.connects += 1
            self.tlv_index = None
            self.view = self._view(ev.ports)
            self.synced = False
            self._inflight.clear()
            self._sent.clear()
            # packet-ins (the ND responder's) also on a service connection:
            # OVS sends none there unless miss_send_len is set
            session.conn.send(ofmsg.parser.OFPSetConfig(ofmsg.DP, 0, ofmsg.ofp.OFPCML_NO_BUFFER))
            # the GENEVE option map first: the switch answers in order, so the
            # slot is known when the dump arrives and rules are computed
            self._tlv_xid = session.conn.send(ofmsg.tlv_table_request())
            self._dump_xid = session.conn.send(ofmsg.dump_request())
            h = self.controller.state.hosts[self.name]
            missing = [r for r in self.controller.state.hosts
                       if r != self.name and self.view.tunnel(r) is None]
            if h.ovsdb and missing:   # e.g. OVSDB was unreachable when we started
                asyncio.ensure_future(self.controller.ensure_tunnels([self.name]))
            log.info("%s: connected (datapath %016x, %d ports); dumping its rules",
                     self.name, ev.datapath_id, len(ev.ports))
        elif session is not self.session:
            return
        elif isinstance(ev, Reply) and ev.xid == self._dump_xid:
            self.installed = {f.key: f for f in (ofmsg.flow_from_stats(s)
                                                 for part in ev.parts for s in part.body)}
            self.synced = True
            log.info("%s: holds %d controller rules", self.name, len(self.installed))
            self.reconcile()
        elif isinstance(ev, Message) and ofmsg.is_tlv_table_reply(ev.msg):
            max_fields, maps = ofmsg.tlv_mappings(ev.msg)
            index, add = ofmsg.tlv_index_for(maps, max_fields)
            if add:
                self._tlv_mod_xid = session.conn.send(ofmsg.tlv_table_add(index))
            self.tlv_index = index
            self.view = self._view(session.conn.ports)
            log.info("%s: GENEVE option %s in tun_metadata%s%s", self.name,
                     ofmsg.OVN_OPTION, index, " (mapped now)" if add else "")
        elif isinstance(ev, Error) and ev.xid in (self._tlv_xid, self._tlv_mod_xid):
            # no TLV map on this switch: the destination looks the MAC up again
            log.warning("%s: switch refused the GENEVE option map (type %d code %d)",
                        self.name, ev.type, ev.code)
            self.tlv_index = None
            self.view = self._view(session.conn.ports)
            self._tlv_xid = self._tlv_mod_xid = None
            self.reconcile()
        elif isinstance(ev, Message) and type(ev.msg).__name__ == "OFPPacketIn":
            self.packet_in(ev.msg)
        elif isinstance(ev, Message) and type(ev.msg).__name__ == "OFPPortStatus":
            self.view = self._view(session.conn.ports)
            self.reconcile()
        elif isinstance(ev, BarrierDone):
            sent = self._inflight.pop(ev.xid, {})
            for err in ev.errors:
                self.n_errors += 1
                what = sent.get(err.xid)
                log.warning("%s: switch refused %s (type %d code %d)", self.name,
                            what and f"{what[0]} {what[1]}", err.type, err.code)
                for kind, f in (what[1] if what and what[0] == "bundle" else
                                [what] if what else []):
                    if kind == "add":
                        self.installed.pop(f.key, None)   # retried next pass
                    else:
                        self.installed[f.key] = f
            self.controller._changed()
        elif isinstance(ev, Closed):
            log.info("%s: connection closed: %s", self.name, ev.reason)
        elif isinstance(ev, Error) and ev.xid not in self._sent:
            log.debug("%s: error %s", self.name, ev)

    def packet_in(self, msg) -> None:
        """Neighbour solicitations the ND responder sent up (OVN's nd_na):
        answered from the directory of the logical switch, out of the port
        that asked.  Nothing crosses the overlay."""
        fields = dict(msg.match.items())
        in_port, vni = fields.get("in_port"), fields.get("metadata")
        state = self.controller.state
        ls = next((x.name for x in state.switches.values() if x.vni == vni), None)
        if in_port is None or ls is None:
            return

        def directory(target):
            return next((q.mac for q in state.ports_on(ls)
                         if q.host is not None and target in q.ips), None)
        got = ofmsg.answer_solicitation(bytes(msg.data), directory)
        if got is None:
            return
        self.session.conn.send(ofmsg.packet_out(in_port, got[0]))
        self.session.transmit()
        self.nd_answered += 1
        log.debug("%s: answered neighbour solicitation for %s on port %d",
                  self.name, got[1], in_port)

    def _view(self, ports) -> F.HostView:
        return F.HostView(dict(ports), self.tlv_index)

    def disconnected(self):
        self.session = None
        self.synced = False
        self._inflight.clear()
        self.controller._changed()

    # ---- reconciliation
    def desired(self) -> list:
        return F.host_flows(self.controller.state, self.name, self.view)

    def reconcile(self) -> int:
        """Send the difference between installed and desired; returns its size."""
        if not (self.connected and self.synced):
            return 0
        dels, adds = ofmsg.diff_flows(self.installed.values(), self.desired())
        n = len(dels) + len(adds)
        self.last_flow_mods = n
        if not n:
            self._announce()
            return 0
        conn = self.session.conn
        sent = {}
        bundled = self.controller.state.options["bundles"]
        if bundled:
            self._bundle_id = getattr(self, "_bundle_id", 0) % 0xFFFFFFFF + 1
            conn.send(ofmsg.bundle_ctrl(self._bundle_id, ofmsg.ofp.ONF_BCT_OPEN_REQUEST))

        def send(msg):
            return conn.send(ofmsg.bundle_add(self._bundle_id, msg) if bundled else msg)
        for f in dels:
            sent[send(ofmsg.delete_msg(f))] = ("del", f)
            del self.installed[f.key]
        for f in adds:
            sent[send(ofmsg.add_msg(f))] = ("add", f)
            self.installed[f.key] = f
        if bundled:   # all or nothing: a failed commit undoes every change
            commit = conn.send(ofmsg.bundle_ctrl(self._bundle_id,
                                                 ofmsg.ofp.ONF_BCT_COMMIT_REQUEST))
            sent[commit] = ("bundle", list(sent.values()))
        self._inflight[conn.barrier()] = sent
        self._announce()
        self.total_flow_mods += n
        self.session.transmit()
        log.info("%s: sent %d flow mods (%d deletes)", self.name, n, len(dels))
        return n

    def _announce(self):
        """Gratuitous ARPs for ports that moved here, once their VIF is up
        (sent after the barrier, so the rules they run through are in place)."""
        state = self.controller.state
        for name in sorted(self.pending_garp):
            p = state.ports.get(name)
            if p is None or p.host != self.name:
                self.pending_garp.discard(name)
                continue
            ofport = self.view.vif(p.ifname)
            if ofport is None:
                continue
            for ip in p.ips:
                self.session.conn.send(ofmsg.na_packet_out(ofport, p.mac, ip) if ":" in ip
                                       else ofmsg.garp_packet_out(ofport, p.mac, ip))
                self.garps_sent += 1
            self.pending_garp.discard(name)
        self.session.transmit()


class Controller:
    def __init__(self, state: State, probe: Optional[float] = 5.0):
        self.state = state
        self.probe = probe
        self.agents: dict[str, HostAgent] = {}
        self._servers: list = []
        self._cond: Optional[asyncio.Condition] = None
        self._sync_agents()

    # ---- lifecycle
    async def start(self, listen: Optional[str] = None) -> None:
        self._cond = asyncio.Condition()
        if listen:
            await self.listen(listen)
        await self.ensure_tunnels()
        for agent in self.agents.values():
            self._dial(agent)

    async def stop(self) -> None:
        for a in self.agents.values():
            if a.dialer:
                a.dialer.cancel()
            if a.session and a.session.transport:
                a.session.transport.close()
        for s in self._servers:
            s.close()
        await asyncio.sleep(0)

    async def listen(self, target: str) -> None:
        kind, _, rest = target.partition(":")
        if kind != "ptcp":
            raise ValueError(f"bad listen target {target!r}")
        port, _, ip = rest.partition(":")
        loop = asyncio.get_event_loop()
        self._servers.append(await loop.create_server(
            lambda: SwitchSession(self, None, self.probe), ip or "0.0.0.0", int(port or 6653),
            reuse_address=True))

    def agent_for_datapath(self, dpid: int) -> Optional[HostAgent]:
        for name, h in self.state.hosts.items():
            if h.datapath_id == dpid:
                return self.agents[name]
        return None

    def _dial(self, agent: HostAgent) -> None:
        target = self.state.hosts[agent.name].openflow
        if target and target.split(":")[0] in ("unix", "tcp") and agent.dialer is None:
            agent.dialer = asyncio.ensure_future(self._dialer(agent, target))

    async def _dialer(self, agent: HostAgent, target: str):
        loop = asyncio.get_event_loop()
        backoff = BACKOFF_MIN
        kind, _, rest = target.partition(":")
        while agent.name in self.agents:
            try:
                factory = lambda: SwitchSession(self, agent, self.probe)  # noqa: E731
                if kind == "unix":
                    _, proto = await loop.create_unix_connection(factory, rest)
                else:
                    ip, _, port = rest.rpartition(":")
                    _, proto = await loop.create_connection(factory, ip, int(port))
                backoff = BACKOFF_MIN
                await proto.closed
            except OSError as e:
                log.debug("%s: %s: %s", agent.name, target, e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _sync_agents(self) -> None:
        for name in self.state.hosts:
            if name not in self.agents:
                self.agents[name] = HostAgent(self, name)
                if self._cond is not None:
                    self._dial(self.agents[name])
        for name in list(self.agents):
            if name not in self.state.hosts:
                a = self.agents.pop(name)
                if a.dialer:
                    a.dialer.cancel()

    # ---- OVSDB: tunnel ports
    async def ensure_tunnels(self, hosts=None) -> dict:
        """Create/update/remove each (given) host's GENEVE ports, one per
        other host; returns host -> the OVSDB operations it took."""
        done = {}
        for name, h in self.state.hosts.items():
            if not h.ovsdb or (hosts is not None and name not in hosts):
                continue
            want = {F.tunnel_port_name(r): rh.tunnel_ip
                    for r, rh in self.state.hosts.items() if r != name}
            client = OvsdbClient()
            try:
                await client.connect(h.ovsdb)
                done[name] = await client.ensure_tunnels(h.bridge, want, h.tunnel_ip)
            except Exception as e:
                log.warning("%s: tunnel ports not made: %s", name, e)
            finally:
                await client.close()
        return done

    # ---- reconciliation and changes
    def reconcile(self) -> dict:
        """Reconcile every connected host; returns host -> flow mods sent."""
        return {name: a.reconcile() for name, a in self.agents.items()}

    def _changed(self):
        if self._cond is None:
            return

        async def notify():
            async with self._cond:
                self._cond.notify_all()
        asyncio.ensure_future(notify())

    async def wait_converged(self, timeout: float = 10.0, hosts=None) -> None:
        """Until every (given) host is connected, synced and has no barrier pending."""
        names = hosts or list(self.agents)

        def ok():
            return all(self.agents[n].connected and self.agents[n].idle for n in names)
        deadline = time.monotonic() + timeout
        async with self._cond:
            while not ok():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("not converged: " + ", ".join(
                        f"{n}(connected={self.agents[n].connected},synced={self.agents[n].synced})"
                        for n in names))
                try:
                    await asyncio.wait_for(self._cond.wait(), min(left, 0.2))
                except asyncio.TimeoutError:
                    pass

    def apply(self, mutate) -> dict:
        """Change the desired state with `mutate(state_copy)`; if it validates,
        adopt it and reconcile.  Returns host -> flow mods sent."""
        new = self.state.copy()
        mutate(new)
        hosts_changed = new.hosts != self.state.hosts
        self.state = new
        self._sync_agents()
        if hosts_changed and self._cond is not None:
            asyncio.ensure_future(self.ensure_tunnels())
        return self.reconcile()

    def move_port(self, port: str, host: str, iface: Optional[str] = None) -> dict:
        """Rebind `port` to `host`; every host's rules are reconciled and a
        gratuitous ARP is sent from the new location once the VIF is there."""
        self.state.ports[port]  # KeyError before anything changes
        if host in self.agents:
            self.agents[host].pending_garp.add(port)
        try:
            return self.apply(lambda s: s.move_port(port, host, iface))
        except Exception:
            if host in self.agents:
                self.agents[host].pending_garp.discard(port)
            raise

    def replace_state(self, data: dict) -> dict:
        def mutate(s):
            fresh = State.from_dict(data, previous=s)
            s.__dict__.update(fresh.__dict__)
        return self.apply(mutate)

    def status(self) -> dict:
        return {n: {"connected": a.connected, "synced": a.synced, "rules": len(a.installed),
                    "last_flow_mods": a.last_flow_mods, "total_flow_mods": a.total_flow_mods,
                    "errors": a.n_errors, "connects": a.connects, "garps": a.garps_sent,
                    "nd_answered": a.nd_answered, "tlv_index": a.tlv_index,
                    "ports": dict(a.view.ofports)}
                for n, a in self.agents.items()}


class BackgroundController:
    """A `Controller` on its own event loop thread, for synchronous callers
    (tests, the demo): ``with BackgroundController(state) as bg: bg.call(...)``."""

    def __init__(self, state: State, probe: Optional[float] = 5.0, listen: Optional[str] = None,
                 api: Optional[str] = None):
        import threading
        self.loop = asyncio.new_event_loop()
        self.controller = Controller(state, probe=probe)
        self._listen, self._api_addr, self.api_port = listen, api, None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="controller_stub")

    def start(self) -> "BackgroundController":
        self._thread.start()
        self.run(self.controller.start(listen=self._listen))
        if self._api_addr is not None:
            from .api import Api
            self.api = Api(self.controller)
            host, _, port = self._api_addr.rpartition(":")
            self.api_port = self.run(self.api.start(host or "127.0.0.1", int(port or 0)))
        return self

    def run(self, coro, timeout: float = 60.0):
        """Run a coroutine on the controller's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args, **kw):
        """Call `fn` on the controller's loop (e.g. ``bg.call(c.move_port, ...)``)."""
        async def wrap():
            return fn(*args, **kw)
        return self.run(wrap())

    def wait_converged(self, timeout: float = 10.0, hosts=None):
        return self.run(self.controller.wait_converged(timeout, hosts), timeout + 5)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            if getattr(self, "api", None):
                self.run(self.api.stop())
            self.run(self.controller.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
