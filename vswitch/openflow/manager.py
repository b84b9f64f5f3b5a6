"""Per-bridge OpenFlow connection manager: the thin asyncio layer.

Like OVS's connmgr, one `ConnectionManager` per bridge owns the listeners
(`punix:<rundir>/<br>.mgmt`, `ptcp:PORT[:IP]`) and the active controller
connections (`tcp:IP:PORT`, `unix:PATH`, reconnected with exponential backoff
1 s .. 8 s as rconn does).  Each stream gets a sans-IO `OpenFlowConnection`;
this module only feeds it bytes, drains events into `Handlers`, writes what is
pending and re-arms one timer (aioquic's `QuicConnectionProtocol.transmit`).
The daemon talks to it through `start/stop/set_controllers` and pushes
asynchronous events with `send_packet_in`, `port_status` and `flow_removed`.

The backend the daemon passes in provides (all called on the event loop):
  execute_packet_out(in_port, actions, data)   PACKET_OUT (actions: slowpath values)
  revalidate()                                 before every BARRIER reply
  port_mod(ofport, config, mask)               PORT_MOD (OFPPC_* bits)
  port_stats(ofport | None) -> [dict]          port_no, rx_packets, ... collisions,
                                               duration_sec, duration_nsec
and optionally
  tlv_map_changed({index: (class, type, len)}) NXT_TLV_TABLE_MOD
  ct_flush_zone(zone)                          NXT_CT_FLUSH_ZONE
  resume(packet, metadata_match, continuation) NXT_RESUME
The pipeline may be wrapped (the daemon's LockedPipeline); bundles commit
through `atomically(fn)` if the wrapper has it, else `_pipeline` under `_lock`.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Optional

from os_ken.ofproto import ofproto_v1_3 as of13

from . import codec, convert, monitor
from .connection import (Connected, ConnectionClosed, ErrorSent, MessageReceived,
                         OpenFlowConnection)
from .handlers import Channel, Handlers, SwitchContext, packet_in_msg, port_status_msg
from .sp import OFError

log = logging.getLogger(__name__)

#: Refused messages are logged whole (hex, for ``ovs-ofctl ofp-print``): the
#: 64 bytes an OFPT_ERROR carries back rarely show which action was refused.
#: At most REFUSED_LOG_BURST per REFUSED_LOG_PERIOD seconds, as OVS rate-limits.
REFUSED_LOG_BURST, REFUSED_LOG_PERIOD = 5, 10.0
REFUSED_LOG_BYTES = 2048
_refused_window = [0.0, 0]     # window start, messages logged in it


def _log_refused(bridge: str, ev: ErrorSent, now: float) -> None:
    if now - _refused_window[0] >= REFUSED_LOG_PERIOD:
        _refused_window[:] = [now, 0]
    if _refused_window[1] >= REFUSED_LOG_BURST:
        return
    _refused_window[1] += 1
    raw = ev.offending
    kind = f"message type {raw[1]}" if len(raw) >= 2 else "message"
    log.warning("%s: refused %s xid=%#x with error type %d code %d: %s%s", bridge, kind,
                ev.xid or 0, ev.type, ev.code, raw[:REFUSED_LOG_BYTES].hex(),
                "..." if len(raw) > REFUSED_LOG_BYTES else "")

MGMT_PROBE = None          # ovs-ofctl sessions are short; no inactivity probe
CONTROLLER_PROBE = 5.0     # OVS default inactivity_probe
BACKOFF_MIN, BACKOFF_MAX = 1.0, 8.0
ASYNC_BACKLOG_BYTES = 4 << 20  # unread output past which async messages are dropped

PORT_ADD, PORT_DELETE, PORT_MODIFY = of13.OFPPR_ADD, of13.OFPPR_DELETE, of13.OFPPR_MODIFY


class _Session(asyncio.Protocol):
    """One stream <-> one OpenFlowConnection."""

    def __init__(self, mgr: "ConnectionManager", probe: Optional[float]):
        self.mgr = mgr
        self.loop = asyncio.get_event_loop()
        self.conn = OpenFlowConnection(mgr.allowed_versions, self.loop.time(), probe_interval=probe)
        self.channel: Optional[Channel] = None
        self.transport = None
        self._timer = None
        self.dropped = 0
        self.closed = asyncio.get_event_loop().create_future()

    # asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport
        self.mgr._sessions.add(self)
        self.transmit()

    def data_received(self, data):
        self.conn.receive_bytes(data, self.loop.time())
        self._drain()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.mgr._sessions.discard(self)
        if self.channel in self.mgr.switch.channels:
            self.mgr.switch.channels.remove(self.channel)
            if self.channel.monitors:
                monitor.watch(self.mgr.switch)
        if self._timer:
            self._timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    def resume_writing(self):
        """The transport's buffer drained below its low-water mark."""
        if self.channel is not None and self.channel.monitor_paused is not None:
            monitor.resume(self.mgr.switch, self.channel)

    def backlog(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _on_timer(self):
        self._timer = None
        self.conn.handle_timer(self.loop.time())
        self._drain()

    # plumbing
    def _drain(self):
        now = self.loop.time()
        while True:
            ev = self.conn.next_event()
            if ev is None:
                break
            if isinstance(ev, Connected):
                self.channel = Channel(ev.version, send_async=self.send, backlog=self.backlog)
                self.mgr.switch.channels.append(self.channel)
            elif isinstance(ev, MessageReceived):
                self._dispatch(ev.msg, now)
            elif isinstance(ev, ErrorSent):
                _log_refused(self.mgr.bridge_name, ev, now)
            elif isinstance(ev, ConnectionClosed):
                log.info("%s: connection closed: %s", self.mgr.bridge_name, ev.reason)
        self.transmit()

    def _dispatch(self, msg, now):
        try:
            for reply in self.mgr.handlers.handle(self.channel, msg, now):
                self.conn.send(reply)
        except OFError as e:
            self.conn.send_error(e, msg.buf or b"", msg.xid)
        except Exception:  # a handler bug must not kill the switch
            log.exception("%s: handler failed for %s", self.mgr.bridge_name, type(msg).__name__)
            self.conn.send_error(OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_EPERM),
                                 msg.buf or b"", msg.xid)

    def send(self, msg):
        """Asynchronous messages (packet-in, port-status, flow-removed).  A
        controller that stops reading loses them instead of growing our
        memory without bound (OVS rconn caps its packet-in backlog too)."""
        if self.transport is not None and \
                self.transport.get_write_buffer_size() > ASYNC_BACKLOG_BYTES:
            self.dropped += 1
            return
        self.conn.send(msg)
        self.transmit()

    def transmit(self):
        if self.transport is None or self.transport.is_closing():
            return
        data = self.conn.bytes_to_send()
        if data:
            self.transport.write(data)
        if self.conn.closed:
            data = self.conn.bytes_to_send()
            if data:
                self.transport.write(data)
            self.transport.close()
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        t = self.conn.get_timer()
        if t is not None:
            self._timer = self.loop.call_at(t, self._on_timer)

    def abort(self):
        if self.transport is not None:
            self.transport.close()


class ConnectionManager:
    def __init__(self, bridge_name: str, pipeline, backend, *, datapath_id: int,
                 allowed_versions: set[int]):
        self.bridge_name = bridge_name
        self.allowed_versions = set(allowed_versions) & codec.SUPPORTED_VERSIONS
        if not self.allowed_versions:
            raise ValueError(f"none of {allowed_versions} supported")
        self.switch = SwitchContext(bridge_name, pipeline, backend, datapath_id)
        self.switch.rule_monitor_hook = self._rule_changed
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._report_scheduled = False
        self.handlers = Handlers(self.switch)
        self._sessions: set[_Session] = set()
        self._targets: dict[str, object] = {}   # target -> asyncio.Server | Task
        self._active_sessions: dict[str, _Session] = {}  # active target -> its session

    # ---- lifecycle
    async def start(self, targets: list[str]) -> None:
        self._loop = asyncio.get_running_loop()
        await self._reconcile(targets)

    async def stop(self) -> None:
        await self._reconcile([])
        for s in list(self._sessions):
            s.abort()
        await asyncio.sleep(0)

    def set_controllers(self, targets: list[str]) -> "asyncio.Task":
        """Reconcile listeners/controllers to `targets` (returns the task doing it)."""
        return asyncio.ensure_future(self._reconcile(targets))

    async def _reconcile(self, targets):
        want = list(dict.fromkeys(targets))
        for t in list(self._targets):
            if t not in want:
                await self._close_target(t)
        for t in want:
            if t not in self._targets:
                self._targets[t] = await self._open_target(t)

    async def _open_target(self, target: str):
        kind, _, rest = target.partition(":")
        loop = asyncio.get_event_loop()
        if kind == "punix":
            if os.path.exists(rest):
                os.unlink(rest)
            return await loop.create_unix_server(lambda: _Session(self, MGMT_PROBE), rest)
        if kind == "ptcp":
            port, _, ip = rest.partition(":")
            return await loop.create_server(lambda: _Session(self, CONTROLLER_PROBE),
                                            ip or "0.0.0.0", int(port or 6653), reuse_address=True)
        if kind in ("tcp", "unix"):
            return asyncio.ensure_future(self._active(kind, rest, target))
        raise ValueError(f"bad OpenFlow target {target!r}")

    async def _active(self, kind, rest, target):
        loop = asyncio.get_event_loop()
        backoff = BACKOFF_MIN
        while True:
            try:
                if kind == "tcp":
                    ip, _, port = rest.rpartition(":")
                    if not ip:
                        ip, port = rest, "6653"
                    _, proto = await loop.create_connection(
                        lambda: _Session(self, CONTROLLER_PROBE), ip.strip("[]"), int(port))
                else:
                    _, proto = await loop.create_unix_connection(
                        lambda: _Session(self, CONTROLLER_PROBE), rest)
                self._active_sessions[target] = proto
                started = loop.time()
                try:
                    await proto.closed
                finally:
                    proto.abort()
                if loop.time() - started > BACKOFF_MAX:
                    backoff = BACKOFF_MIN
            except OSError as e:
                log.debug("%s: %s:%s: %s", self.bridge_name, kind, rest, e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _close_target(self, target):
        obj = self._targets.pop(target)
        if isinstance(obj, asyncio.Future):
            obj.cancel()
            try:
                await obj
            except (asyncio.CancelledError, Exception):
                pass
        else:
            obj.close()
            await obj.wait_closed()
            kind, _, rest = target.partition(":")
            if kind == "punix" and os.path.exists(rest):
                os.unlink(rest)

    # ---- asynchronous messages from the daemon
    def _each_channel(self):
        for s in list(self._sessions):
            if s.channel is not None and not s.conn.closed:
                yield s

    def send_packet_in(self, packet_in_event) -> None:
        # the metadata names tun_metadata fields by the bridge's TLV map
        convert.TLV_MAP.set(self.switch.slot_map())
        convert.TLV_SLOTS.set(self.switch.tlv_slots)
        for s in self._each_channel():
            msg = packet_in_msg(s.channel, packet_in_event)
            if msg is not None:
                s.send(msg)

    def port_status(self, reason: int, port) -> None:
        for s in self._each_channel():
            msg = port_status_msg(s.channel, reason, port)
            if msg is not None:
                s.send(msg)

    def _rule_changed(self, change) -> None:
        """The pipeline's rule_monitor while some connection monitors: called
        under the ofproto lock on any thread.  Changes a handler made are
        reported when it returns; others (expiry, learning on the datapath
        thread) by a callback on the event loop."""
        if self.switch.record_rule_change(change) and not self._report_scheduled:
            self._report_scheduled = True
            try:
                (self._loop or asyncio.get_event_loop()).call_soon_threadsafe(
                    self._report_changes)
            except RuntimeError:       # the loop is gone (shutting down): nobody to tell
                pass

    def _report_changes(self) -> None:
        self._report_scheduled = False
        self.switch.report_rule_changes()

    def flow_removed(self, events) -> None:
        self.switch.broadcast_flow_removed(list(events), asyncio.get_event_loop().time())

    def is_connected(self, target: str) -> bool:
        """Whether an active target (tcp:/unix:) has a negotiated session now
        (what OVS reports as Controller.is_connected)."""
        s = self._active_sessions.get(target)
        return s is not None and s.channel is not None and not s.conn.closed

    @property
    def n_connections(self) -> int:
        return sum(1 for _ in self._each_channel())
