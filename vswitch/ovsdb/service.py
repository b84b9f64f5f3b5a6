"""The OVSDB server's protocol logic, sans-IO: methods, monitors, locks.

``OvsdbService`` owns the databases (plus the built-in ``_Server``), the lock
table and the blocked "wait" transactions; each client gets a ``Session``
wrapping a ``JsonRpcConnection``.  The asyncio layer feeds a session bytes and
time and sends what it has to send; when a commit or a lock change produces
output for *other* sessions, the service calls their ``wakeup`` callback so the
transport flushes them.

Methods: list_dbs, get_schema, transact, cancel, monitor (update),
monitor_cond / monitor_cond_change (update2), monitor_cond_since (update3),
monitor_cancel, lock / steal / unlock (locked / stolen), echo,
set_db_change_aware, get_server_id.  Monitor updates for a commit are queued
before the committing client's reply, so a client sees its own change by the
time it hears "success" (as ovsdb-server does).
"""
from __future__ import annotations

import json
import logging
import uuid as uuidlib
from collections import deque
from typing import Callable

from .datum import datum_to_json, diff_datum
from .db import Database, Pending
from .errors import OvsdbError
from .jsonrpc import (ConnectionClosed, JsonRpcConnection, Notification, ProtocolError,
                      Request, Response)
from .schema import server_schema

log = logging.getLogger(__name__)


class _MonTable:
    def __init__(self, ts, columns, select, conds):
        self.ts = ts
        self.columns = columns          # list of column names
        self.select = select            # dict initial/insert/delete/modify -> bool
        self.conds = conds              # list of predicate lists (OR of ANDs) or None = all


class Monitor:
    def __init__(self, session, db: Database, mid, version: int):
        self.session = session
        self.db = db
        self.id = mid
        self.version = version          # 1 update, 2 update2, 3 update3
        self.tables: dict[str, _MonTable] = {}

    def matches(self, mt: _MonTable, u, data) -> bool:
        if mt.conds is None:
            return True
        return any(all(p[0](u, data) for p in preds) for preds in mt.conds)

    def row(self, mt: _MonTable, row_data, omit_default: bool) -> dict:
        out = {}
        for c in mt.columns:
            col = mt.ts.columns[c]
            v = row_data[c]
            if omit_default and v == col.default():
                continue
            out[c] = datum_to_json(col.type, v)
        return out

    def initial(self) -> dict:
        out = {}
        for tn, mt in self.tables.items():
            if not mt.select["initial"]:
                continue
            tu = {}
            for u, r in self.db.tables[tn].rows.items():
                if self.matches(mt, u, r._data):
                    if self.version == 1:
                        tu[str(u)] = {"new": self.row(mt, r._data, False)}
                    else:
                        tu[str(u)] = {"initial": self.row(mt, r._data, True)}
            if tu:
                out[tn] = tu
        return out

    def updates_for(self, changes: dict) -> dict:
        out = {}
        for tn, ch in changes.items():
            mt = self.tables.get(tn)
            if mt is None:
                continue
            tu = {}
            for u, (old, new) in ch.items():
                om = old is not None and self.matches(mt, u, old._data)
                nm = new is not None and self.matches(mt, u, new._data)
                if om and nm:
                    if not mt.select["modify"]:
                        continue
                    changed = [c for c in mt.columns if old._data[c] != new._data[c]]
                    if not changed:
                        continue
                    if self.version == 1:
                        tu[str(u)] = {
                            "old": {c: datum_to_json(mt.ts.columns[c].type, old._data[c]) for c in changed},
                            "new": self.row(mt, new._data, False)}
                    else:
                        tu[str(u)] = {"modify": {
                            c: datum_to_json(_diff_t(mt.ts.columns[c].type),
                                             diff_datum(mt.ts.columns[c].type, old._data[c], new._data[c]))
                            for c in changed}}
                elif nm:
                    if not mt.select["insert"]:
                        continue
                    if self.version == 1:
                        tu[str(u)] = {"new": self.row(mt, new._data, False)}
                    else:
                        tu[str(u)] = {"insert": self.row(mt, new._data, True)}
                elif om:
                    if not mt.select["delete"]:
                        continue
                    if self.version == 1:
                        tu[str(u)] = {"old": self.row(mt, old._data, False)}
                    else:
                        tu[str(u)] = {"delete": None}
            if tu:
                out[tn] = tu
        return out

    def send(self, updates: dict) -> None:
        conn = self.session.conn
        if self.version == 1:
            conn.send_notification("update", [self.id, updates])
        elif self.version == 2:
            conn.send_notification("update2", [self.id, updates])
        else:
            conn.send_notification("update3", [self.id, str(self.db.last_txn_id), updates])


def _diff_t(t):
    from .datum import diff_type
    return diff_type(t)


class Session:
    """One client connection."""

    def __init__(self, service: "OvsdbService", now: float = 0.0,
                 probe_interval: float | None = None, peer: str = ""):
        self.service = service
        self.conn = JsonRpcConnection(now, probe_interval)
        self.peer = peer
        self.monitors: dict[str, Monitor] = {}    # key: json of monitor id
        self.locks: set[str] = set()
        self.wakeup: Callable[[], None] = lambda: None
        self.closed = False

    # -- IO-facing
    def receive_bytes(self, data: bytes, now: float) -> None:
        self.conn.receive_bytes(data, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        self.conn.handle_timer(now)
        self.service.run_pending(now)
        self._process(now)

    def get_timer(self) -> float | None:
        ts = [t for t in (self.conn.get_timer(), self.service.next_deadline()) if t is not None]
        return min(ts) if ts else None

    def bytes_to_send(self) -> bytes:
        return self.conn.bytes_to_send()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.service._session_closed(self)

    def _process(self, now: float) -> None:
        while True:
            ev = self.conn.next_event()
            if ev is None:
                break
            if isinstance(ev, Request):
                try:
                    self.service.handle_request(self, ev, now)
                except OvsdbError as e:
                    self.conn.send_error(ev.id, e.to_json())
                except Exception as e:   # never let one request kill the server
                    log.exception("internal error handling %s", ev.method)
                    self.conn.send_error(ev.id, {"error": "internal error", "details": str(e)})
            elif isinstance(ev, Notification):
                self.service.handle_notification(self, ev, now)
            elif isinstance(ev, ProtocolError):
                self.conn.send_error(ev.id, {"error": "syntax error", "details": ev.message})
            elif isinstance(ev, Response):
                pass        # replies to our echo probes
            elif isinstance(ev, ConnectionClosed):
                self.close()
        self.service.run_pending(now)


class OvsdbService:
    def __init__(self, databases: list[Database]):
        self.dbs: dict[str, Database] = {}
        self.server_id = uuidlib.uuid4()
        self.sessions: set[Session] = set()
        self.locks: dict[str, deque] = {}
        self.pending: list[tuple] = []   # (session, id, db, ops, started, deadline)
        self._retry = False
        self.wakeup_pending: Callable[[], None] = lambda: None
        sdb = Database(server_schema())
        self.server_db = sdb
        self.dbs["_Server"] = sdb
        for db in databases:
            self.add_database(db)
        sdb.read_only = True

    def add_database(self, db: Database) -> None:
        self.dbs[db.name] = db
        db.add_commit_hook(self._on_commit)
        ro, self.server_db.read_only = self.server_db.read_only, False
        self.server_db.transact_local([{"op": "insert", "table": "Database", "row": {
            "name": db.name, "model": "standalone", "connected": True, "leader": True,
            "schema": json.dumps(db.schema.to_json(), separators=(",", ":"))}}])
        self.server_db.read_only = ro
        if not hasattr(self, "_monitors_by_db"):
            self._monitors_by_db = {}
        self._monitors_by_db.setdefault(db.name, [])
        self._monitors_by_db.setdefault("_Server", [])

    def new_session(self, now: float = 0.0, probe_interval: float | None = None,
                    peer: str = "") -> Session:
        s = Session(self, now, probe_interval, peer)
        self.sessions.add(s)
        return s

    def _session_closed(self, s: Session) -> None:
        self.sessions.discard(s)
        for m in list(s.monitors.values()):
            self._monitors_by_db[m.db.name].remove(m)
        s.monitors.clear()
        for name in list(s.locks):
            self._unlock(s, name)
        self.pending = [p for p in self.pending if p[0] is not s]

    # -- commits -> monitors
    def _on_commit(self, db: Database, changes: dict) -> None:
        touched = set()
        for m in self._monitors_by_db.get(db.name, ()):
            upd = m.updates_for(changes)
            if upd:
                m.send(upd)
                touched.add(m.session)
        for s in touched:
            s.wakeup()
        if self.pending:
            self._retry = True
            self.wakeup_pending()

    # -- requests
    def _db(self, name) -> Database:
        db = self.dbs.get(name) if isinstance(name, str) else None
        if db is None:
            raise OvsdbError("unknown database", f"{name} is not a valid database name")
        return db

    def handle_notification(self, s: Session, ev: Notification, now: float) -> None:
        if ev.method == "cancel" and ev.params:
            for p in list(self.pending):
                if p[0] is s and p[1] == ev.params[0]:
                    self.pending.remove(p)
                    s.conn.send_error(p[1], "canceled")

    def handle_request(self, s: Session, req: Request, now: float) -> None:
        fn = getattr(self, "_m_" + req.method, None)
        if fn is None:
            s.conn.send_error(req.id, "unknown method")      # a bare string, as ovsdb-server
            return
        fn(s, req, now)

    def _m_echo(self, s, req, now):
        s.conn.send_result(req.id, req.params)

    def _m_list_dbs(self, s, req, now):
        s.conn.send_result(req.id, sorted(self.dbs))     # ovsdb-server sorts

    def _m_get_server_id(self, s, req, now):
        s.conn.send_result(req.id, str(self.server_id))

    def _m_get_schema(self, s, req, now):
        db = self._db(req.params[0] if req.params else None)
        s.conn.send_result(req.id, db.schema.to_json())

    def _m_set_db_change_aware(self, s, req, now):
        s.conn.send_result(req.id, {})

    def _m_transact(self, s, req, now):
        if not req.params:
            raise OvsdbError("syntax error", "transact needs a database name")
        db = self._db(req.params[0])
        ops = req.params[1:]
        res = db.execute(ops, now=now, started=now, has_lock=lambda n: self._owns(s, n))
        if isinstance(res, Pending):
            self.pending.append((s, req.id, db, ops, now, res.deadline))
            return
        s.conn.send_result(req.id, res)

    def run_pending(self, now: float) -> None:
        """Retry blocked transactions (after a commit or at a deadline)."""
        due = [p for p in self.pending if self._retry or (p[5] is not None and now >= p[5])]
        if not due:
            return
        self._retry = False
        for p in due:
            if p not in self.pending:
                continue
            s, rid, db, ops, started, _ = p
            res = db.execute(ops, now=now, started=started, has_lock=lambda n, s=s: self._owns(s, n))
            idx = self.pending.index(p)
            if isinstance(res, Pending):
                self.pending[idx] = (s, rid, db, ops, started, res.deadline)
                continue
            del self.pending[idx]
            s.conn.send_result(rid, res)
            s.wakeup()
        if self._retry:
            self.run_pending(now)

    def next_deadline(self) -> float | None:
        ds = [p[5] for p in self.pending if p[5] is not None]
        return min(ds) if ds else None

    # -- monitors
    def _parse_monitor(self, s, db: Database, mid, requests, version) -> Monitor:
        key = json.dumps(mid)
        if key in s.monitors:
            raise OvsdbError("duplicate monitor ID", f"monitor {mid!r} already exists")
        if not isinstance(requests, dict):
            raise OvsdbError("syntax error", "monitor requests must be an object")
        m = Monitor(s, db, mid, version)
        for tn, reqs in requests.items():
            ts = db.schema.tables.get(tn)
            if ts is None:
                raise OvsdbError("syntax error", f"no table named {tn}")
            if isinstance(reqs, dict):
                reqs = [reqs]
            if not isinstance(reqs, list):
                raise OvsdbError("syntax error", "monitor request must be an object or array")
            m.tables[tn] = self._mon_table(db, ts, reqs, version)
        return m

    def _mon_table(self, db, ts, reqs, version) -> _MonTable:
        cols: list = []
        select = {"initial": False, "insert": False, "delete": False, "modify": False}
        conds: list | None = []
        for r in reqs:
            if not isinstance(r, dict):
                raise OvsdbError("syntax error", "monitor request must be an object")
            rc = r.get("columns")
            if rc is None:
                rc = list(ts.columns)
            for c in rc:
                if not isinstance(c, str):
                    raise OvsdbError("syntax error", "column names must be strings")
                if c not in ts.columns:
                    if c in ("_uuid", "_version"):
                        continue
                    raise OvsdbError("unknown column", f"no column {c} in table {ts.name}")
                if c not in cols:
                    cols.append(c)
            sel = r.get("select", {})
            if not isinstance(sel, dict):
                raise OvsdbError("syntax error", "select must be an object")
            for k in select:
                v = sel.get(k, True)
                if not isinstance(v, bool):
                    raise OvsdbError("syntax error", f"select {k} must be a boolean")
                select[k] = select[k] or v
            if conds is not None:
                where = r.get("where") if version > 1 else None
                if where is None:
                    conds = None
                else:
                    conds.append(self._parse_where(db, ts, where))
        return _MonTable(ts, cols, select, conds)

    @staticmethod
    def _parse_where(db: Database, ts, where) -> list:
        if not isinstance(where, list):
            raise OvsdbError("syntax error", "where must be an array")
        preds = []
        for cl in where:
            if cl is True:
                continue
            if cl is False:
                preds.append((lambda u, d: False, "false", None))
                continue
            if not (isinstance(cl, list) and len(cl) == 3 and isinstance(cl[0], str)
                    and isinstance(cl[1], str)):
                raise OvsdbError("syntax error", f"bad condition {cl!r}")
            preds.append(db._clause(ts, cl, None))
        return preds

    def _monitor(self, s, req, version):
        p = req.params
        if len(p) < 3:
            raise OvsdbError("syntax error", "monitor needs [db, id, requests]")
        db = self._db(p[0])
        m = self._parse_monitor(s, db, p[1], p[2], version)
        s.monitors[json.dumps(p[1])] = m
        self._monitors_by_db[db.name].append(m)
        return m

    def _m_monitor(self, s, req, now):
        m = self._monitor(s, req, 1)
        s.conn.send_result(req.id, m.initial())

    def _m_monitor_cond(self, s, req, now):
        m = self._monitor(s, req, 2)
        s.conn.send_result(req.id, m.initial())

    def _m_monitor_cond_since(self, s, req, now):
        last = req.params[3] if len(req.params) > 3 else None
        try:
            since = m_changes = None
            since = uuidlib.UUID(last) if isinstance(last, str) else None
        except ValueError:
            pass
        m = self._monitor(s, req, 3)
        if since is not None:
            m_changes = m.db.changes_since(since)
        if m_changes is None:
            # unknown or too old: a full snapshot, "found" false
            s.conn.send_result(req.id, [False, str(m.db.last_txn_id), m.initial()])
        else:
            s.conn.send_result(req.id, [True, str(m.db.last_txn_id), m.updates_for(m_changes)])

    def _m_monitor_cond_change(self, s, req, now):
        p = req.params
        if len(p) < 3 or not isinstance(p[2], dict):
            raise OvsdbError("syntax error", "monitor_cond_change needs [id, new-id, requests]")
        old_key = json.dumps(p[0])
        m = s.monitors.get(old_key)
        if m is None:
            s.conn.send_error(req.id, "unknown monitor")
            return
        new_key = json.dumps(p[1])
        if new_key != old_key and new_key in s.monitors:
            raise OvsdbError("duplicate monitor ID", f"monitor {p[1]!r} already exists")
        changes = {}
        for tn, reqs in p[2].items():
            mt = m.tables.get(tn)
            if mt is None:
                raise OvsdbError("syntax error", f"table {tn} is not monitored")
            if isinstance(reqs, dict):
                reqs = [reqs]
            conds: list | None = []
            for r in reqs:
                if not isinstance(r, dict):
                    raise OvsdbError("syntax error", "request must be an object")
                if "columns" in r and set(r["columns"]) - set(mt.columns):
                    raise OvsdbError("syntax error", "monitor_cond_change cannot change columns")
                where = r.get("where")
                if where is None:
                    conds = None
                    break
                conds.append(self._parse_where(m.db, mt.ts, where))
            old_mt = _MonTable(mt.ts, mt.columns, mt.select, mt.conds)
            mt.conds = conds
            tc = {}
            for u, r in m.db.tables[tn].rows.items():
                was = m.matches(old_mt, u, r._data)
                is_ = m.matches(mt, u, r._data)
                if is_ and not was:
                    tc[str(u)] = {"insert": m.row(mt, r._data, True)}
                elif was and not is_:
                    tc[str(u)] = {"delete": None}
            if tc:
                changes[tn] = tc
        del s.monitors[old_key]
        m.id = p[1]
        s.monitors[new_key] = m
        if changes:
            # rows entering / leaving the condition are inserts / deletes,
            # sent before the reply (as ovsdb-server does)
            m.send(changes)
        s.conn.send_result(req.id, {})

    def _m_monitor_cancel(self, s, req, now):
        key = json.dumps(req.params[0] if req.params else None)
        m = s.monitors.pop(key, None)
        if m is None:
            s.conn.send_error(req.id, "unknown monitor")
            return
        self._monitors_by_db[m.db.name].remove(m)
        s.conn.send_result(req.id, {})

    # -- locks (RFC 7047 4.1.8-4.1.11)
    def _owns(self, s, name) -> bool:
        q = self.locks.get(name)
        return bool(q) and q[0] is s

    def _lock_name(self, req) -> str:
        if len(req.params) != 1 or not isinstance(req.params[0], str) or not req.params[0]:
            raise OvsdbError("syntax error", "lock name must be a non-empty string")
        return req.params[0]

    def _m_lock(self, s, req, now):
        name = self._lock_name(req)
        if name in s.locks:
            raise OvsdbError("duplicate lock", f'Session already has or waits for lock "{name}".')
        q = self.locks.setdefault(name, deque())
        q.append(s)
        s.locks.add(name)
        s.conn.send_result(req.id, {"locked": q[0] is s})

    def _m_steal(self, s, req, now):
        name = self._lock_name(req)
        q = self.locks.setdefault(name, deque())
        old = q[0] if q else None
        if s in q:
            q.remove(s)
        q.appendleft(s)
        s.locks.add(name)
        s.conn.send_result(req.id, {"locked": True})
        if old is not None and old is not s:
            old.conn.send_notification("stolen", [name])
            old.wakeup()

    def _m_unlock(self, s, req, now):
        name = self._lock_name(req)
        if name not in s.locks:
            raise OvsdbError("syntax error", f'Session does not hold or wait for lock "{name}".')
        self._unlock(s, name)
        s.conn.send_result(req.id, {})

    def _unlock(self, s, name) -> None:
        s.locks.discard(name)
        q = self.locks.get(name)
        if not q or s not in q:
            return
        was_owner = q[0] is s
        q.remove(s)
        if not q:
            del self.locks[name]
        elif was_owner:
            new = q[0]
            new.conn.send_notification("locked", [name])
            new.wakeup()
