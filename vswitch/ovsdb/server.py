"""The asyncio face of the embedded OVSDB server.

Everything protocol-shaped lives in ``service.py`` (methods, monitors, locks)
and ``jsonrpc.py`` (framing); this module only accepts connections on the
configured remotes, feeds each session bytes and ``loop.time()``, writes what
it has to send, and keeps one timer per session.

    server = OvsdbServer("/var/lib/pyvswitch/conf.db")
    await server.start(["punix:/run/pyvswitch/db.sock", "ptcp:6640"])
    server.db.add_listener(reconcile)        # called after every commit
    server.db.transact_local([...])          # daemon-side writes
    await server.stop()

Run standalone (tests, debugging):
``python -m vswitch.ovsdb.server --db FILE --remote punix:SOCK [--remote ptcp:6640]``.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading

from .db import Database, open_database
from .jsonrpc import JsonRpcConnection
from .service import OvsdbService, Session

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
MAX_BACKLOG = 256 << 20      # bytes queued to one client before we give up on it


class _Protocol(asyncio.Protocol):
    def __init__(self, server: "OvsdbServer"):
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport = None
        self.session: Session | None = None
        self._timer = None

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername") or "unix"
        # Like ovsdb-server: inactivity probes on TCP only (a unix peer that
        # dies is noticed by the kernel; a TCP peer may just vanish).
        tcp = isinstance(peer, tuple)
        self.session = self.server.service.new_session(
            self.loop.time(), self.server.probe_interval if tcp else None, str(peer))
        self.session.wakeup = self.transmit
        self.server._protocols.add(self)

    def data_received(self, data):
        self.session.receive_bytes(data, self.loop.time())
        self.transmit()

    def transmit(self):
        if self.transport is None:
            return
        if threading.get_ident() != self.server._loop_thread:
            # a commit made from another thread (transact_local off-loop):
            # asyncio transports may only be touched from the loop
            self.loop.call_soon_threadsafe(self.transmit)
            return
        data = self.session.bytes_to_send()
        if data:
            self.transport.write(data)
            if self.transport.get_write_buffer_size() > MAX_BACKLOG:
                # a client that stopped reading its monitor updates: drop it
                # rather than buffer without bound (ovsdb-server does the same)
                log.warning("OVSDB client %s: %d bytes unread, disconnecting", self.session.peer,
                            self.transport.get_write_buffer_size())
                self.transport.abort()
                return
        if self.session.conn.state == JsonRpcConnection.CLOSED:
            self.transport.close()
            return
        self._rearm()

    def _rearm(self):
        t = self.session.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if t is not None:
            self._timer = self.loop.call_at(t, self._on_timer)

    def _on_timer(self):
        self._timer = None
        if self.session is not None and not self.session.closed:
            self.session.handle_timer(self.loop.time())
            self.server._flush_all()

    def connection_lost(self, exc):
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None
        self.server._protocols.discard(self)
        if self.session is not None:
            self.session.close()


class OvsdbServer:
    """Embedded OVSDB server for one durable database (plus ``_Server``)."""

    def __init__(self, db_path: str, schema_path: str = DEFAULT_SCHEMA, *,
                 fsync: bool = True, probe_interval: float | None = 5.0):
        self.db_path = db_path
        self.db: Database = open_database(db_path, schema_path, fsync=fsync)
        self.service = OvsdbService([self.db])
        self.probe_interval = probe_interval
        self._listeners: dict[str, tuple] = {}   # remote -> (server, unix path, tcp port)
        self._static: set[str] = set()
        self._sync_scheduled = False
        self._loop = None
        self._loop_thread = None
        self._protocols: set[_Protocol] = set()
        self.tcp_ports: list[int] = []     # bound ports of the ptcp remotes given to start()

    async def start(self, remotes: list[str]) -> None:
        """Listen on ``remotes`` (``punix:PATH``, ``ptcp:PORT[:IP]``, IP
        defaulting to 127.0.0.1), and from then on also on the passive targets
        of ``Open_vSwitch.manager_options`` (as ovsdb-server's
        ``--remote=db:Open_vSwitch,Open_vSwitch,manager_options``)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.service.wakeup_pending = lambda: loop.call_soon_threadsafe(self._run_pending)
        for remote in remotes:
            await self._open(remote)
            self._static.add(remote)
        self.tcp_ports = [self._listeners[r][2] for r in remotes if r.startswith("ptcp:")]
        self.db.add_listener(self._on_commit)
        await self._sync_db_remotes()

    async def _open(self, remote: str) -> None:
        loop = asyncio.get_running_loop()
        kind, _, rest = remote.partition(":")
        unix_path = port = None
        if kind == "punix":
            if os.path.exists(rest):
                os.unlink(rest)          # stale socket from a previous run
            srv = await loop.create_unix_server(lambda: _Protocol(self), rest)
            unix_path = rest
        elif kind == "ptcp":
            port_s, _, ip = rest.partition(":")
            ip = ip.strip("[]") or "127.0.0.1"
            srv = await loop.create_server(lambda: _Protocol(self), ip, int(port_s))
            port = srv.sockets[0].getsockname()[1]
        else:
            raise ValueError(f"unsupported remote {remote!r} (use punix:PATH or ptcp:PORT[:IP])")
        self._listeners[remote] = (srv, unix_path, port)
        log.info("OVSDB listening on %s", remote)

    async def _close(self, remote: str) -> None:
        srv, unix_path, _ = self._listeners.pop(remote)
        srv.close()
        await srv.wait_closed()
        if unix_path:
            try:
                os.unlink(unix_path)
            except OSError:
                pass
        log.info("OVSDB stopped listening on %s", remote)

    def _db_remotes(self) -> set[str]:
        out = set()
        managers = self.db.tables.get("Manager")
        for row in self.db.tables.get("Open_vSwitch", _NoTable).rows.values():
            for mu in row.get("manager_options", ()):
                m = managers.rows.get(mu) if managers is not None else None
                if m is not None and m.target.startswith(("ptcp:", "punix:")):
                    out.add(m.target)
        return out

    def _on_commit(self, db, changes) -> None:
        if "Manager" in changes or "Open_vSwitch" in changes:
            if self._db_remotes() | self._static != set(self._listeners) and not self._sync_scheduled:
                self._sync_scheduled = True
                self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._sync_db_remotes()))

    async def _sync_db_remotes(self) -> None:
        self._sync_scheduled = False
        want = self._db_remotes() | self._static
        for remote in sorted(set(self._listeners) - want):
            await self._close(remote)
        for remote in sorted(want - set(self._listeners)):
            try:
                await self._open(remote)
            except (OSError, ValueError) as e:
                log.warning("cannot listen on %s from manager_options: %s", remote, e)

    def listening(self) -> dict[str, int | str]:
        """remote -> bound TCP port or unix path, for everything we listen on."""
        return {r: (port if port is not None else path) for r, (_, path, port) in self._listeners.items()}

    def _run_pending(self):
        loop = asyncio.get_running_loop()
        self.service.run_pending(loop.time())
        self._flush_all()

    def _flush_all(self):
        for p in list(self._protocols):
            p.transmit()

    async def stop(self) -> None:
        if self._loop is not None:
            self.db.remove_listener(self._on_commit)
            self._loop = None
        for remote in list(self._listeners):
            srv = self._listeners[remote][0]
            srv.close()
        for p in list(self._protocols):
            if p.transport is not None:
                p.transport.close()
        for remote in list(self._listeners):
            await self._close(remote)
        if self.db.storage is not None:
            self.db.storage.close()


class _NoTable:
    rows: dict = {}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="pyvswitch embedded OVSDB server")
    ap.add_argument("--db", required=True)
    ap.add_argument("--schema", default=DEFAULT_SCHEMA)
    ap.add_argument("--remote", action="append", default=[])
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--bump-cur-cfg", action="store_true",
                    help="set cur_cfg = next_cfg after each commit (stand-in for the daemon)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    async def run():
        server = OvsdbServer(args.db, args.schema, fsync=not args.no_fsync)
        if args.bump_cur_cfg:
            server.db.add_listener(bump_cur_cfg)
        await server.start(args.remote or ["punix:db.sock"])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.stop()

    asyncio.run(run())


def bump_cur_cfg(db: Database, changes: dict) -> None:
    """Stand-in for the daemon's reconciler (tests only): give every new
    interface an ofport and acknowledge each configuration change at once, so
    ovs-vsctl without --no-wait returns cleanly."""
    ports = [r.scalar("ofport") for r in db.tables["Interface"].rows.values()]
    nxt = max([p for p in ports if p is not None and p < 65000] + [0]) + 1
    for u, row in db.tables["Interface"].rows.items():
        if row.scalar("ofport") is None:
            ofport = 65534 if row.type == "internal" and any(
                b.name == row.name for b in db.tables["Bridge"].rows.values()) else nxt
            nxt += ofport == nxt
            db.transact_local([{"op": "update", "table": "Interface",
                                "where": [["_uuid", "==", ["uuid", str(u)]]],
                                "row": {"ofport": ofport}}])
    for u, row in db.tables["Open_vSwitch"].rows.items():
        if row.cur_cfg != row.next_cfg:
            db.transact_local([{"op": "update", "table": "Open_vSwitch",
                                "where": [["_uuid", "==", ["uuid", str(u)]]],
                                "row": {"cur_cfg": row.next_cfg}}])


if __name__ == "__main__":
    main()
