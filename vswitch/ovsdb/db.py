"""The sans-IO OVSDB transaction engine (RFC 7047 section 5).

``Database.execute(ops, now, ...)`` runs one "transact" request against the
in-memory tables and returns the RFC 7047 result array.  Operations are applied
to a copy-on-write overlay (``_Txn``); nothing in the committed tables changes
unless every operation succeeds *and* the commit-time checks pass:

1. weak references to rows that do not exist (or are being deleted) are
   dropped, and rows of non-root tables that no strong reference reaches are
   garbage-collected -- repeated until nothing changes (RFC 7047 3.2,
   "isRoot" and "refType");
2. strong references must point at existing rows and deleted rows must not be
   strongly referenced ("referential integrity violation");
3. ``maxRows``, index uniqueness and count constraints hold ("constraint
   violation").

Then the change is written to storage (if any; fsync'd before we return), the
tables are updated, and commit hooks and listeners are called with
``changes: {table: {uuid: (old Row | None, new Row | None)}}``.  Reference
counts and index maps are maintained incrementally so a commit costs time in
proportion to what it touches, not to the database size.

The engine never reads a clock: "wait" timeouts are decided from the ``now``
and ``started`` the caller passes; a wait that must block makes ``execute``
return a ``Pending`` instead of a result, and the caller retries it after the
next commit or at its deadline.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid as uuidlib
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Iterable

from .datum import (apply_diff, diff_datum, atom_from_json, check_datum, datum_from_json,
                    datum_to_json, diff_type)
from .errors import OvsdbError
from .schema import INT_MAX, INT_MIN, DbSchema, TableSchema, Type

_NAME_RE = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
_log = logging.getLogger(__name__)


class Row:
    """A committed row: immutable; a modification creates a new Row.

    ``row.name`` / ``row["name"]`` give column values as plain Python values
    (see ``datum.py``); ``row.uuid`` and ``row.version`` are ``uuid.UUID``.
    """
    __slots__ = ("uuid", "version", "_data", "table")

    def __init__(self, table: str, uuid: uuidlib.UUID, data: dict, version: uuidlib.UUID):
        self.table = table
        self.uuid = uuid
        self.version = version
        self._data = data

    def __getattr__(self, name):
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        if name == "_uuid":
            return self.uuid
        if name == "_version":
            return self.version
        return self._data[name]

    def get(self, name, default=None):
        return self._data.get(name, default)

    def scalar(self, name, default=None):
        """Value of an optional (min 0, max 1) column, or ``default`` if empty."""
        v = self._data[name]
        if isinstance(v, frozenset):
            return next(iter(v)) if v else default
        return v

    def to_dict(self) -> dict:
        return dict(self._data)

    def __repr__(self):
        return f"Row({self.table}, {self.uuid}, {self._data!r})"


class Table:
    def __init__(self, schema: TableSchema):
        self.schema = schema
        self.name = schema.name
        self.rows: dict[uuidlib.UUID, Row] = {}
        # one dict per schema index: key tuple -> row uuid
        self.index_maps: list[dict] = [dict() for _ in schema.indexes]


@dataclass
class Pending:
    """execute() could not finish because a "wait" blocks; retry later.
    ``deadline`` is the absolute time (same clock as ``now``) at which the
    wait times out, or None for no timeout."""
    deadline: float | None


class _Blocked(Exception):
    def __init__(self, deadline):
        self.deadline = deadline


def _hashable(v):
    return frozenset(v.items()) if isinstance(v, dict) else v


def _row_to_json(tschema: TableSchema, uuid, data, version=None, columns=None) -> dict:
    out = {}
    cols = columns if columns is not None else \
        (["_uuid", "_version"] if version is not None else []) + list(tschema.columns)
    for c in cols:
        if c == "_uuid":
            out[c] = ["uuid", str(uuid)]
        elif c == "_version":
            out[c] = ["uuid", str(version)]
        else:
            out[c] = datum_to_json(tschema.columns[c].type, data[c])
    return out


class _Txn:
    """Copy-on-write view of the database during one transaction."""

    def __init__(self, db: "Database"):
        self.db = db
        self.changed: dict[str, dict[uuidlib.UUID, dict | None]] = {}
        self.symtab: dict[str, uuidlib.UUID] = {}
        self.inserted_names: set[str] = set()
        self.comments: list[str] = []
        self.durable = False

    def symbol(self, name: str) -> uuidlib.UUID:
        u = self.symtab.get(name)
        if u is None:
            u = self.symtab[name] = uuidlib.uuid4()
        return u

    def get(self, table: str, u) -> dict | None:
        ch = self.changed.get(table)
        if ch is not None and u in ch:
            return ch[u]
        r = self.db.tables[table].rows.get(u)
        return r._data if r is not None else None

    def committed(self, table: str, u) -> dict | None:
        r = self.db.tables[table].rows.get(u)
        return r._data if r is not None else None

    def rows(self, table: str) -> Iterable[tuple]:
        ch = self.changed.get(table, {})
        for u, r in self.db.tables[table].rows.items():
            if u in ch:
                continue
            yield u, r._data
        for u, d in list(ch.items()):
            if d is not None:
                yield u, d

    def put(self, table: str, u, data: dict | None):
        self.changed.setdefault(table, {})[u] = data


def _ref_sides(ty: Type):
    out = []
    if ty.key.is_ref:
        out.append(("k", ty.key))
    if ty.value is not None and ty.value.is_ref:
        out.append(("v", ty.value))
    return out


_EMPTY: frozenset = frozenset()


def _atoms(ty: Type, side: str, v):
    """The set of atoms on one side ("k" keys / "v" values) of a datum."""
    if v is None:
        return _EMPTY
    if ty.is_map:
        return set(v) if side == "k" else set(v.values())
    if ty.is_scalar:
        return {v}
    return v


def _without(ty: Type, side: str, v, dead: set, tn: str, cname: str):
    """Datum ``v`` with the atoms in ``dead`` removed from one side."""
    if ty.is_map:
        if side == "k":
            return {k: x for k, x in v.items() if k not in dead}
        return {k: x for k, x in v.items() if x not in dead}
    if ty.is_scalar:
        raise OvsdbError("constraint violation",
                         f"Column {cname} in table {tn} would lose its only weak reference.")
    return v - dead


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


class Database:
    """One OVSDB database: schema, tables, optional storage, listeners."""
    HISTORY = 200

    def __init__(self, schema: DbSchema, storage=None, read_only: bool = False):
        self.schema = schema
        self.name = schema.name
        self.tables: dict[str, Table] = {n: Table(t) for n, t in schema.tables.items()}
        self.storage = storage
        self.read_only = read_only
        # Random, never the all-zeros id clients send when they know nothing:
        # a restarted server must not claim to continue an old history.
        self.last_txn_id: uuidlib.UUID = uuidlib.uuid4()
        # recent (txn id, changes), for monitor_cond_since resumption
        self.history: deque = deque(maxlen=self.HISTORY)
        self._strong_in: dict[uuidlib.UUID, set] = {}
        self._weak_in: dict[uuidlib.UUID, set] = {}
        self._listeners: list[Callable] = []
        self._hooks: list[Callable] = []
        self._queue: list = []
        self._notifying = False
        # Safety net only: the engine is meant to be driven from the event
        # loop thread; the lock keeps a stray call from another thread from
        # interleaving with a commit.
        self._lock = threading.RLock()
        # which columns hold references, per table: [(column, Type)]
        self._ref_cols = {n: [(c.name, c.type) for c in t.columns.values()
                              if c.type.key.is_ref or (c.type.value is not None and c.type.value.is_ref)]
                          for n, t in schema.tables.items()}

    # ------------------------------------------------------------------ API
    def add_listener(self, callback: Callable) -> None:
        """``callback(db, changes)`` after every committed transaction."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable) -> None:
        self._listeners.remove(callback)

    def add_commit_hook(self, callback: Callable) -> None:
        """Like add_listener, but called before listeners (server monitors)."""
        self._hooks.append(callback)

    def remove_commit_hook(self, callback: Callable) -> None:
        self._hooks.remove(callback)

    def transact_local(self, ops: list[dict]) -> list:
        """Run RFC 7047 operations from inside the process.  A "wait" that is
        not satisfied fails at once with "timed out" (nothing can change while
        we hold the thread).  Returns the RFC 7047 result array."""
        now = time.monotonic()
        res = self.execute(ops, now=now, started=now, can_block=False)
        assert isinstance(res, list)
        return res

    def ensure_open_vswitch_row(self) -> uuidlib.UUID | None:
        """Create the single Open_vSwitch row if there is none (ovs-vsctl init)."""
        t = self.tables.get("Open_vSwitch")
        if t is None:
            return None
        if t.rows:
            return next(iter(t.rows))
        res = self.transact_local([{"op": "insert", "table": "Open_vSwitch", "row": {}}])
        if "error" in res[0]:
            raise OvsdbError(res[0]["error"], res[0].get("details"))
        return uuidlib.UUID(res[0]["uuid"][1])

    def row_json(self, table: str, row: Row, columns=None) -> dict:
        return _row_to_json(self.tables[table].schema, row.uuid, row._data, row.version, columns)

    # ------------------------------------------------------------ execute
    def execute(self, ops, now: float = 0.0, started: float | None = None,
                has_lock: Callable[[str], bool] | None = None,
                can_block: bool = True):
        """Run a transaction.  ``ops`` are the RFC 7047 operation objects
        (without the leading database name).  Returns the result list, or
        ``Pending`` if a "wait" must block."""
        with self._lock:
            return self._execute(ops, now, started, has_lock, can_block)

    def _execute(self, ops, now, started, has_lock, can_block):
        if started is None:
            started = now
        txn = _Txn(self)
        results: list = []
        if not isinstance(ops, list):
            ops = [ops]
        try:
            for op in ops:
                results.append(self._execute_op(txn, op, now, started, has_lock, can_block))
        except _Blocked as b:
            return Pending(b.deadline)
        except OvsdbError as e:
            results.append(e.to_json())
            results.extend([None] * (len(ops) - len(results)))
            return results
        try:
            self._commit(txn)
        except OvsdbError as e:
            results.append(e.to_json())
        return results

    def _table(self, op) -> TableSchema:
        name = op.get("table")
        if not isinstance(name, str):
            raise OvsdbError("syntax error", "operation is missing \"table\"")
        t = self.schema.tables.get(name)
        if t is None:
            # ovsdb-server reports this as a parse failure of the operation
            raise OvsdbError("syntax error", f"No table named {name}.")
        return t

    def _execute_op(self, txn: _Txn, op, now, started, has_lock, can_block):
        if not isinstance(op, dict):
            raise OvsdbError("syntax error", f"operation must be an object, not {op!r}")
        name = op.get("op")
        if name in ("insert", "update", "mutate", "delete") and self.read_only:
            raise OvsdbError("not allowed", f"Database {self.name} is read-only.")
        fn = getattr(self, "_op_" + name, None) if isinstance(name, str) else None
        if fn is None:
            raise OvsdbError("syntax error", f"No operation named {name!r}.")
        if name == "wait":
            return fn(txn, op, now, started, can_block)
        if name == "assert":
            return fn(txn, op, has_lock)
        return fn(txn, op)

    def _parse_row(self, t: TableSchema, rj, txn: _Txn, for_update: bool) -> dict:
        if not isinstance(rj, dict):
            raise OvsdbError("syntax error", "row must be an object")
        out = {}
        for cname, vj in rj.items():
            c = t.column(cname)
            if cname.startswith("_"):
                raise OvsdbError("constraint violation",
                                 f"Cannot set {cname} column of table {t.name}.")
            if for_update and not c.mutable:
                raise OvsdbError("constraint violation",
                                 f"Cannot update immutable column {cname} in table {t.name}.")
            out[cname] = datum_from_json(c.type, vj, txn.symbol)
        return out

    # -- conditions (RFC 7047 5.1 <condition>)
    def _where(self, t: TableSchema, where, txn: _Txn) -> list[tuple]:
        if where is None:
            where = []
        if not isinstance(where, list):
            raise OvsdbError("syntax error", "where must be an array")
        preds = []
        uuid_eq = None
        for cl in where:
            if cl is True:
                continue
            if cl is False:
                return []
            if not (isinstance(cl, list) and len(cl) == 3 and isinstance(cl[0], str)
                    and isinstance(cl[1], str)):
                raise OvsdbError("syntax error", f"bad condition {cl!r}")
            preds.append(self._clause(t, cl, txn.symbol))
            if cl[0] == "_uuid" and cl[1] == "==":
                uuid_eq = preds[-1][2]
        if uuid_eq is not None:
            d = txn.get(t.name, uuid_eq)
            cands = [(uuid_eq, d)] if d is not None else []
        else:
            cands = txn.rows(t.name)
        return [(u, d) for u, d in cands if all(p[0](u, d) for p in preds)]

    def _clause(self, t: TableSchema, cl, symtab):
        cname, func, vj = cl
        c = t.column(cname)
        ty = c.type
        if cname == "_uuid":
            get = lambda u, d: u                          # noqa: E731
        elif cname == "_version":
            get = lambda u, d: self._version_of(t.name, u)  # noqa: E731
        else:
            get = lambda u, d: d[cname]                   # noqa: E731
        if func in ("<", "<=", ">", ">="):
            if ty.key.type not in ("integer", "real") or not (ty.is_scalar or ty.is_optional_scalar):
                raise OvsdbError("syntax error",
                                 f'Type mismatch: "{func}" operator may not be applied to column {cname}.')
            a = atom_from_json(ty.key.unconstrained(), vj)
            cmp = {"<": lambda x: x < a, "<=": lambda x: x <= a,
                   ">": lambda x: x > a, ">=": lambda x: x >= a}[func]
            if ty.is_scalar:
                return (lambda u, d: cmp(get(u, d)), func, a)
            return (lambda u, d: any(cmp(x) for x in get(u, d)), func, a)
        if func not in ("==", "!=", "includes", "excludes"):
            raise OvsdbError("unknown function", f"No function named {func}.")
        rt = ty if ty.is_scalar else Type(ty.key.unconstrained(),
                                          ty.value.unconstrained() if ty.value else None, 0, None)
        v = datum_from_json(rt, vj, symtab, check=False)
        if func == "==":
            return (lambda u, d: get(u, d) == v, func, v)
        if func == "!=":
            return (lambda u, d: get(u, d) != v, func, v)
        if ty.is_scalar:
            inc = lambda x: x == v                        # noqa: E731
        elif ty.is_map:
            inc = lambda x: all(k in x and x[k] == val for k, val in v.items())  # noqa: E731
        else:
            inc = lambda x: v <= x                        # noqa: E731
        if func == "includes":
            return (lambda u, d: inc(get(u, d)), func, v)
        if ty.is_scalar:
            return (lambda u, d: get(u, d) != v, func, v)
        if ty.is_map:
            return (lambda u, d: not any(k in get(u, d) and get(u, d)[k] == val
                                         for k, val in v.items()), func, v)
        return (lambda u, d: not (v & get(u, d)), func, v)

    def _version_of(self, table, u):
        r = self.tables[table].rows.get(u)
        return r.version if r is not None else None

    def _columns(self, t: TableSchema, op) -> list[str] | None:
        cols = op.get("columns")
        if cols is None:
            return None
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise OvsdbError("syntax error", "columns must be an array of strings")
        for c in cols:
            if c not in t.columns and c not in ("_uuid", "_version"):
                raise OvsdbError("syntax error", f"{c} is not a valid column name")
        return cols

    # -- operations
    def _op_insert(self, txn: _Txn, op):
        t = self._table(op)
        name = op.get("uuid-name")
        if name is not None:
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise OvsdbError("syntax error", f"bad uuid-name {name!r}")
            if name in txn.inserted_names:
                raise OvsdbError("duplicate uuid-name",
                                 f"This uuid-name ({name}) appears more than once.")
        if "uuid" in op:
            u = atom_from_json(t.column("_uuid").type.key, op["uuid"])
            if txn.get(t.name, u) is not None or any(
                    u in tb.rows for tb in self.tables.values()):
                raise OvsdbError("duplicate uuid", f"This UUID ({u}) already exists.")
            if name is not None:
                txn.symtab[name] = u
        elif name is not None:
            u = txn.symbol(name)
        else:
            u = uuidlib.uuid4()
        if name is not None:
            txn.inserted_names.add(name)
        data = {c.name: c.default() for c in t.columns.values()}
        data.update(self._parse_row(t, op.get("row", {}), txn, for_update=False))
        txn.put(t.name, u, data)
        return {"uuid": ["uuid", str(u)]}

    def _op_select(self, txn: _Txn, op):
        t = self._table(op)
        cols = self._columns(t, op)
        rows = self._where(t, op.get("where"), txn)
        out = []
        for u, d in rows:
            v = self._version_of(t.name, u) if (txn.changed.get(t.name, {}).get(u) is None) else None
            js = _row_to_json(t, u, d, v or uuidlib.UUID(int=0), cols)
            out.append(js)
        return {"rows": out}

    def _op_update(self, txn: _Txn, op):
        t = self._table(op)
        new = self._parse_row(t, op.get("row"), txn, for_update=True)
        rows = self._where(t, op.get("where"), txn)
        for u, d in rows:
            nd = dict(d)
            nd.update(new)
            txn.put(t.name, u, nd)
        return {"count": len(rows)}

    def _op_delete(self, txn: _Txn, op):
        t = self._table(op)
        rows = self._where(t, op.get("where"), txn)
        for u, _ in rows:
            txn.put(t.name, u, None)
        return {"count": len(rows)}

    def _op_mutate(self, txn: _Txn, op):
        t = self._table(op)
        muts = op.get("mutations")
        if not isinstance(muts, list):
            raise OvsdbError("syntax error", "mutations must be an array")
        parsed = [self._mutation(t, m, txn) for m in muts]
        rows = self._where(t, op.get("where"), txn)
        for u, d in rows:
            nd = dict(d)
            for cname, fn in parsed:
                nd[cname] = fn(nd[cname])
                check_datum(t.columns[cname].type, nd[cname])
            txn.put(t.name, u, nd)
        return {"count": len(rows)}

    def _mutation(self, t: TableSchema, m, txn: _Txn):
        if not (isinstance(m, list) and len(m) == 3 and isinstance(m[0], str)
                and isinstance(m[1], str)):
            raise OvsdbError("syntax error", f"bad mutation {m!r}")
        cname, mut, vj = m
        c = t.column(cname)
        if cname.startswith("_") or not c.mutable:
            raise OvsdbError("constraint violation",
                             f"Cannot mutate immutable column {cname} in table {t.name}.")
        ty = c.type
        if mut in ("+=", "-=", "*=", "/=", "%="):
            kt = ty.key.type
            if ty.is_map or kt not in ("integer", "real") or (mut == "%=" and kt != "integer"):
                raise OvsdbError("syntax error",
                                 f'Type mismatch: "{mut}" may not be applied to column {cname}.')
            a = atom_from_json(ty.key.unconstrained(), vj)

            def arith(x, mut=mut, a=a, kt=kt):
                if mut == "+=":
                    r = x + a
                elif mut == "-=":
                    r = x - a
                elif mut == "*=":
                    r = x * a
                else:
                    if a == 0:
                        raise OvsdbError("domain error", "Division by zero.")
                    if kt == "real":
                        r = x / a
                    elif mut == "/=":
                        r = _c_div(x, a)
                    else:
                        r = x - a * _c_div(x, a)
                if kt == "integer" and not INT_MIN <= r <= INT_MAX:
                    raise OvsdbError("range error", "Result of mutation is out of range.")
                if kt == "real" and r in (float("inf"), float("-inf")):
                    raise OvsdbError("range error", "Result of mutation is out of range.")
                return r

            if ty.is_scalar:
                return cname, arith
            return cname, lambda v: frozenset(arith(x) for x in v)
        if mut not in ("insert", "delete"):
            raise OvsdbError("syntax error", f"unknown mutator {mut!r}")
        if ty.is_scalar:
            raise OvsdbError("syntax error",
                             f'Type mismatch: "{mut}" may not be applied to scalar column {cname}.')
        rt = Type(ty.key, ty.value, 0, None)
        if ty.is_map:
            if mut == "delete" and not (isinstance(vj, list) and vj and vj[0] == "map"):
                keys = datum_from_json(Type(ty.key, None, 0, None), vj, txn.symbol, check=False)
                return cname, lambda v: {k: x for k, x in v.items() if k not in keys}
            arg = datum_from_json(rt, vj, txn.symbol, check=False)
            if mut == "insert":
                return cname, lambda v: {**arg, **v}
            return cname, lambda v: {k: x for k, x in v.items() if not (k in arg and arg[k] == x)}
        arg = datum_from_json(rt, vj, txn.symbol, check=False)
        if mut == "insert":
            return cname, lambda v: v | arg
        return cname, lambda v: v - arg

    def _op_wait(self, txn: _Txn, op, now, started, can_block):
        t = self._table(op)
        until = op.get("until")
        if until not in ("==", "!="):
            raise OvsdbError("syntax error", 'until must be "==" or "!="')
        timeout = op.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout < 0):
            raise OvsdbError("syntax error", "timeout must be a non-negative number")
        cols = self._columns(t, op)
        if cols is None:
            cols = []
        want = op.get("rows")
        if not isinstance(want, list):
            raise OvsdbError("syntax error", "rows must be an array")
        want_c = Counter()
        for rj in want:
            if not isinstance(rj, dict) or set(rj) != set(cols):
                raise OvsdbError("syntax error", "each row must have exactly the given columns")
            want_c[tuple(_hashable(datum_from_json(t.column(c).type, rj[c], txn.symbol, check=False))
                         for c in cols)] += 1
        have_c = Counter()
        for u, d in self._where(t, op.get("where"), txn):
            have_c[tuple(_hashable(u if c == "_uuid" else self._version_of(t.name, u)
                                   if c == "_version" else d[c]) for c in cols)] += 1
        if (have_c == want_c) == (until == "=="):
            return {}
        if timeout is not None:
            deadline = started + timeout / 1000.0
            if not can_block or now >= deadline:
                raise OvsdbError("timed out", f'"wait" timed out after {timeout} ms')
            raise _Blocked(deadline)
        if not can_block:
            raise OvsdbError("timed out", '"wait" cannot block here')
        raise _Blocked(None)

    def _op_commit(self, txn: _Txn, op):
        durable = op.get("durable")
        if not isinstance(durable, bool):
            raise OvsdbError("syntax error", "durable must be a boolean")
        if durable and self.storage is None:
            raise OvsdbError("not supported", "Database is not configured for durability.")
        txn.durable = txn.durable or durable
        return {}

    def _op_abort(self, txn: _Txn, op):
        raise OvsdbError("aborted", "Aborted by request.")

    def _op_comment(self, txn: _Txn, op):
        c = op.get("comment")
        if not isinstance(c, str):
            raise OvsdbError("syntax error", "comment must be a string")
        txn.comments.append(c)
        return {}

    def _op_assert(self, txn: _Txn, op, has_lock):
        lock = op.get("lock")
        if not isinstance(lock, str):
            raise OvsdbError("syntax error", "lock must be a string")
        if has_lock is None or not has_lock(lock):
            raise OvsdbError("not owner", f'Asserted lock {lock} not held.')
        return {}

    # ------------------------------------------------------------- commit
    def _precommit(self, txn: _Txn) -> tuple[dict, dict, dict]:
        """Referential integrity, GC and constraint checks.  Returns the final
        change set {table: {uuid: new data | None}} with no-op entries removed,
        and the strong/weak reverse-reference overlays to install on commit.

        Reference bookkeeping works on per-column deltas (C-level set
        differences), so a commit that adds one bridge to a 10 000-element
        ``Open_vSwitch.bridges`` costs O(1) Python work per changed reference.
        A referrer is keyed (table, row, column, "k"|"v")."""
        strong_ov: dict = {}
        weak_ov: dict = {}

        def ov(base, over, target):
            s = over.get(target)
            if s is None:
                s = over[target] = set(base.get(target, ()))
            return s

        def referrers(base, over, target):
            s = over.get(target)
            return s if s is not None else base.get(target, ())

        applied: dict = {}
        weak_fixed: set = set()
        gc_cands: set = set()
        added_strong: list = []
        deleted: list = []
        pending = [(tn, u) for tn, ch in txn.changed.items() for u in ch]
        missing = object()

        def drop_dead_weak(tn, u, prev, new):
            """New weak references to rows that do not exist are dropped."""
            nd = None
            for cname, ty in self._ref_cols[tn]:
                pv = prev[cname] if prev is not None else None
                nv = new[cname]
                if pv is not None and (pv is nv or pv == nv):
                    continue
                for side, bt in _ref_sides(ty):
                    if bt.ref_type != "weak":
                        continue
                    added = _atoms(ty, side, nv) - _atoms(ty, side, pv)
                    dead = {a for a in added if txn.get(bt.ref_table, a) is None}
                    if dead:
                        nd = nd if nd is not None else dict(new)
                        nd[cname] = _without(ty, side, nd[cname], dead, tn, cname)
            if nd is not None:
                txn.put(tn, u, nd)
                weak_fixed.add((tn, u))
                return nd
            return new

        def sync(tn, u):
            new = txn.get(tn, u)
            prev = applied.get((tn, u), missing)
            if prev is missing:
                prev = txn.committed(tn, u)
            elif prev is new:
                return
            cols = self._ref_cols[tn]
            if cols:
                if new is not None:
                    new = drop_dead_weak(tn, u, prev, new)
                for cname, ty in cols:
                    pv = prev[cname] if prev is not None else None
                    nv = new[cname] if new is not None else None
                    if pv is not None and nv is not None and (pv is nv or pv == nv):
                        continue
                    for side, bt in _ref_sides(ty):
                        pa, na = _atoms(ty, side, pv), _atoms(ty, side, nv)
                        key = (tn, u, cname, side)
                        if bt.ref_type == "strong":
                            for target in pa - na:
                                ov(self._strong_in, strong_ov, target).discard(key)
                                gc_cands.add((bt.ref_table, target))
                            for target in na - pa:
                                ov(self._strong_in, strong_ov, target).add(key)
                                added_strong.append((key, bt.ref_table, target))
                        else:
                            for target in pa - na:
                                ov(self._weak_in, weak_ov, target).discard(key)
                            for target in na - pa:
                                ov(self._weak_in, weak_ov, target).add(key)
            applied[(tn, u)] = new
            if new is None:
                deleted.append((tn, u))
                for rtn, ru, rc, side in list(referrers(self._weak_in, weak_ov, u)):
                    rd = txn.get(rtn, ru)
                    if rd is None:
                        continue
                    ty = self.schema.tables[rtn].columns[rc].type
                    nd = dict(rd)
                    nd[rc] = _without(ty, side, rd[rc], {u}, rtn, rc)
                    txn.put(rtn, ru, nd)
                    weak_fixed.add((rtn, ru))
                    pending.append((rtn, ru))
            elif not self.schema.tables[tn].is_root:
                gc_cands.add((tn, u))

        def check_ri():
            """Strong references must resolve; deleted rows must be unreferenced.
            Checked before garbage collection, as ovsdb-server does."""
            for tn, u in deleted:
                if applied.get((tn, u)) is not None or txn.committed(tn, u) is None:
                    continue
                s = referrers(self._strong_in, strong_ov, u)
                if s:
                    raise OvsdbError("referential integrity violation",
                                     f"cannot delete {tn} row {u} because of {len(s)} "
                                     f"remaining reference(s)")
            for key, rt, target in added_strong:
                if key in referrers(self._strong_in, strong_ov, target) and txn.get(rt, target) is None:
                    raise OvsdbError("referential integrity violation",
                                     f"Table {key[0]} column {key[2]} row {key[1]} references "
                                     f"nonexistent row {target} in table {rt}.")

        first = True
        while True:
            while pending:
                sync(*pending.pop())
            if first:
                check_ri()
                first = False
            collected = False
            for tn, u in gc_cands:
                if self.schema.tables[tn].is_root or txn.get(tn, u) is None:
                    continue
                if not referrers(self._strong_in, strong_ov, u):
                    txn.put(tn, u, None)
                    pending.append((tn, u))
                    collected = True
            gc_cands = set()
            if not collected:
                break

        for tn, u in weak_fixed:
            d = txn.get(tn, u)
            if d is not None:
                for cname, ty in self._ref_cols[tn]:
                    check_datum(ty, d[cname])

        final: dict = {}
        for tn, ch in txn.changed.items():
            committed = self.tables[tn].rows
            out = {}
            for u, d in ch.items():
                old = committed.get(u)
                if d is None and old is None:
                    continue
                if d is not None and old is not None and old._data == d:
                    continue
                out[u] = d
            if out:
                final[tn] = out
        for tn, ch in final.items():
            ts = self.schema.tables[tn]
            table = self.tables[tn]
            if ts.max_rows is not None:
                n = len(table.rows) + sum(1 for u, d in ch.items() if d is not None and u not in table.rows) \
                    - sum(1 for d in ch.values() if d is None)
                if n > ts.max_rows:
                    raise OvsdbError("constraint violation",
                                     f'transaction causes "{tn}" table to contain {n} rows, greater '
                                     f"than the schema-defined limit of {ts.max_rows} row(s).")
            for i, cols in enumerate(ts.indexes):
                imap = table.index_maps[i]
                seen = {}
                for u, d in ch.items():
                    if d is None:
                        continue
                    key = tuple(_hashable(d[c]) for c in cols)
                    other = seen.get(key)
                    if other is None:
                        o = imap.get(key)
                        if o is not None and o != u:
                            od = txn.get(tn, o)
                            if od is not None and tuple(_hashable(od[c]) for c in cols) == key:
                                other = o
                    if other is not None:
                        raise OvsdbError(
                            "constraint violation",
                            f'Transaction causes multiple rows in "{tn}" table to have identical '
                            f'values ({", ".join(json.dumps(datum_to_json(ts.columns[c].type, d[c])) for c in cols)}) '
                            f'for index on column{"s" if len(cols) > 1 else ""} '
                            f'{", ".join(chr(34) + c + chr(34) for c in cols)}.  First row, with UUID {u}, '
                            f"was inserted or modified by this transaction.  Second row, with UUID "
                            f"{other}, existed in the database before this transaction"
                            f"{' and was not modified by the transaction' if other not in ch else ''}.")
                    seen[key] = u
        return final, strong_ov, weak_ov

    def _commit(self, txn: _Txn) -> None:
        if not txn.changed:
            return          # read-only or comment-only: nothing to log or tell
        final, strong_ov, weak_ov = self._precommit(txn)
        if not final:
            return
        if self.storage is not None:
            rec: dict = {}
            for tn, ch in final.items():
                ts = self.schema.tables[tn]
                committed = self.tables[tn].rows
                tj = {}
                for u, d in ch.items():
                    if d is None:
                        tj[str(u)] = None
                        continue
                    old = committed.get(u)
                    cols = {}
                    for cname, c in ts.columns.items():
                        if c.ephemeral:
                            continue
                        v = d[cname]
                        if old is None:
                            if v != c.default():
                                cols[cname] = datum_to_json(c.type, v)
                        elif old._data[cname] != v:
                            # "_is_diff" format (as ovsdb-server writes): a
                            # change to a big set costs only the delta
                            cols[cname] = datum_to_json(diff_type(c.type),
                                                        diff_datum(c.type, old._data[cname], v))
                    if cols or old is None:
                        tj[str(u)] = cols
                if tj:
                    rec[tn] = tj
            # Only ephemeral columns changed (statistics, status...): nothing
            # to make durable, no disk write (as ovsdb-server).
            if rec:
                rec["_is_diff"] = True
                if txn.comments:
                    rec["_comment"] = "\n".join(txn.comments)
                try:
                    self.storage.append_txn(rec)
                except OSError as e:
                    raise OvsdbError("I/O error", str(e)) from e
        self._apply(final, strong_ov, weak_ov)
        if self.storage is not None and self.storage.should_compact():
            self.compact()

    def compact(self) -> None:
        """Rewrite the log as schema + one snapshot record."""
        if self.storage is not None:
            self.storage.compact(self.schema.to_json(), self.snapshot_record())

    def _apply(self, final: dict, strong_ov: dict, weak_ov: dict) -> None:
        changes: dict = {}
        for tn, ch in final.items():
            table = self.tables[tn]
            ts = table.schema
            tc = changes[tn] = {}
            for u, d in ch.items():
                old = table.rows.get(u)
                if old is not None:
                    for i, cols in enumerate(ts.indexes):
                        key = tuple(_hashable(old._data[c]) for c in cols)
                        if table.index_maps[i].get(key) == u:
                            del table.index_maps[i][key]
                if d is None:
                    del table.rows[u]
                    new = None
                else:
                    new = table.rows[u] = Row(tn, u, d, uuidlib.uuid4())
                    for i, cols in enumerate(ts.indexes):
                        table.index_maps[i][tuple(_hashable(d[c]) for c in cols)] = u
                tc[u] = (old, new)
        for base, over in ((self._strong_in, strong_ov), (self._weak_in, weak_ov)):
            for target, s in over.items():
                if s:
                    base[target] = s
                else:
                    base.pop(target, None)
        self.last_txn_id = uuidlib.uuid4()
        self.history.append((self.last_txn_id, changes))
        self._notify(changes)

    def changes_since(self, txn_id: uuidlib.UUID) -> dict | None:
        """Net changes committed after ``txn_id``, or None if it is too old
        (or unknown) to answer from history."""
        if txn_id == self.last_txn_id:
            return {}
        ids = [t for t, _ in self.history]
        if txn_id not in ids:
            return None
        merged: dict = {}
        for _, ch in list(self.history)[ids.index(txn_id) + 1:]:
            for tn, rows in ch.items():
                mt = merged.setdefault(tn, {})
                for u, (old, new) in rows.items():
                    mt[u] = (mt[u][0] if u in mt else old, new)
        return {tn: {u: on for u, on in rows.items() if on != (None, None)}
                for tn, rows in merged.items()}

    def _rebuild_refs(self) -> None:
        self._strong_in.clear()
        self._weak_in.clear()
        for tn, table in self.tables.items():
            for u, row in table.rows.items():
                for cname, ty in self._ref_cols[tn]:
                    for side, bt in _ref_sides(ty):
                        idx = self._strong_in if bt.ref_type == "strong" else self._weak_in
                        for a in _atoms(ty, side, row._data[cname]):
                            idx.setdefault(a, set()).add((tn, u, cname, side))

    def _notify(self, changes: dict) -> None:
        self._queue.append(changes)
        if self._notifying:
            return          # a listener committed; delivered after the current one
        self._notifying = True
        try:
            while self._queue:
                ch = self._queue.pop(0)
                for cb in list(self._hooks) + list(self._listeners):
                    try:
                        cb(self, ch)
                    except Exception:
                        # The commit is done and durable; a failing listener
                        # must not turn it into an error for the client.
                        _log.exception("OVSDB commit listener %r failed", cb)
        finally:
            self._notifying = False

    # --------------------------------------------------------- storage load
    def load_record(self, rec: dict) -> None:
        """Apply one transaction record read from the log (no checks beyond
        datum parsing: the log was written by a commit that passed them)."""
        final: dict = {}
        for tn, tj in rec.items():
            if tn.startswith("_") or tn not in self.tables:
                continue
            ts = self.schema.tables[tn]
            table = self.tables[tn]
            out = {}
            for us, rj in tj.items():
                u = uuidlib.UUID(us)
                if rj is None:
                    if u in table.rows:
                        out[u] = None
                    continue
                old = table.rows.get(u)
                d = dict(old._data) if old is not None else {c.name: c.default() for c in ts.columns.values()}
                is_diff = rec.get("_is_diff", False) and old is not None
                for cname, vj in rj.items():
                    c = ts.columns.get(cname)
                    if c is None:
                        continue
                    if is_diff:
                        d[cname] = apply_diff(c.type, d[cname], datum_from_json(diff_type(c.type), vj, check=False))
                    else:
                        d[cname] = datum_from_json(c.type, vj, check=False)
                out[u] = d
            if out:
                final[tn] = out
        if final:
            self._apply_loaded(final)

    def _apply_loaded(self, final):
        for tn, ch in final.items():
            table = self.tables[tn]
            for u, d in ch.items():
                if d is None:
                    table.rows.pop(u, None)
                else:
                    table.rows[u] = Row(tn, u, d, uuidlib.uuid4())

    def finish_load(self) -> None:
        """Rebuild reference and index maps after replaying a log."""
        self._rebuild_refs()
        for table in self.tables.values():
            for i, cols in enumerate(table.schema.indexes):
                table.index_maps[i] = {tuple(_hashable(r._data[c]) for c in cols): u
                                       for u, r in table.rows.items()}

    def snapshot_record(self) -> dict:
        """All rows as one log record (compaction)."""
        rec: dict = {}
        for tn, table in self.tables.items():
            ts = table.schema
            tj = {}
            for u, row in table.rows.items():
                tj[str(u)] = {c: datum_to_json(col.type, row._data[c]) for c, col in ts.columns.items()
                              if not col.ephemeral and row._data[c] != col.default()}
            if tj:
                rec[tn] = tj
        return rec


def open_database(db_path: str, schema_path: str, fsync: bool = True) -> Database:
    """Open (or create from ``schema_path``) a durable database file.

    If the file was written with a different schema version than
    ``schema_path`` (openvswitch-common was upgraded), the data is converted
    the way ``ovsdb-tool convert`` does: columns and tables the new schema
    lacks are dropped, new columns get defaults, values the new types reject
    are reset to the default, and the file is rewritten atomically."""
    import os
    from .schema import load_schema
    from .storage import LogStorage
    if not os.path.exists(db_path):
        schema = load_schema(schema_path)
        storage = LogStorage.create(db_path, schema.to_json(), fsync=fsync)
        return Database(schema, storage)
    storage = LogStorage(db_path, fsync=fsync)
    schema_json, records = storage.read()
    db = Database(DbSchema.from_json(schema_json), storage)
    for rec in records:
        db.load_record(rec)
    db.finish_load()
    if schema_path and os.path.exists(schema_path):
        want = load_schema(schema_path)
        if want.name == db.schema.name and want.version != db.schema.version:
            db = convert_database(db, want)
    return db


def convert_database(old: Database, schema: DbSchema) -> Database:
    """A new Database with ``schema`` holding ``old``'s data (see open_database)."""
    import logging
    new = Database(schema, old.storage)
    for tn, ts in schema.tables.items():
        if tn not in old.tables:
            continue
        table = new.tables[tn]
        for u, row in old.tables[tn].rows.items():
            data = {}
            for cname, col in ts.columns.items():
                v = col.default()
                oc = old.schema.tables[tn].columns.get(cname)
                if oc is not None:
                    try:
                        v = datum_from_json(col.type, datum_to_json(oc.type, row._data[cname]))
                    except OvsdbError:
                        logging.getLogger(__name__).warning(
                            "convert: %s.%s of row %s does not fit the new type; reset", tn, cname, u)
                data[cname] = v
            table.rows[u] = Row(tn, u, data, row.version)
    # Drop references the new schema cannot hold (rows of dropped tables).
    for tn, table in new.tables.items():
        for u, row in list(table.rows.items()):
            for cname, ty in new._ref_cols[tn]:
                v = row._data[cname]
                for side, bt in _ref_sides(ty):
                    dead = {a for a in _atoms(ty, side, v) if a not in new.tables[bt.ref_table].rows}
                    if dead and not ty.is_scalar:
                        v = _without(ty, side, v, dead, tn, cname)
                row._data[cname] = v
    new.finish_load()
    if new.storage is not None:
        new.storage.compact(schema.to_json(), new.snapshot_record())
    return new
