"""OVSDB schemas (RFC 7047 section 3.2), parsed into small immutable objects.

Why our own parser instead of ``ovs.db.schema``: the engine needs the column
types as plain Python facts (atomic type, min/max counts, constraints, enum as a
frozenset of Python values, ref kind) on every datum it validates; the ``ovs``
classes carry C-generation helpers and eventlet imports we do not want on the hot
path.  The format is the one ``ovsdb-tool`` reads, and ``_Server`` is built in.
"""
from __future__ import annotations

import functools
import json
import re
import uuid as uuidlib
from dataclasses import dataclass, field

from .errors import OvsdbError

ATOMIC_TYPES = ("integer", "real", "boolean", "string", "uuid")
_ID_RE = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1


def _syntax(msg: str) -> OvsdbError:
    return OvsdbError("syntax error", msg)


@dataclass(frozen=True)
class BaseType:
    """An atomic type with its constraints (RFC 7047 <base-type>)."""
    type: str
    min: float | int | None = None        # minInteger / minReal
    max: float | int | None = None        # maxInteger / maxReal
    min_length: int = 0
    max_length: int | None = None
    enum: frozenset | None = None
    ref_table: str | None = None
    ref_type: str = "strong"

    @property
    def is_ref(self) -> bool:
        return self.type == "uuid" and self.ref_table is not None

    @classmethod
    def from_json(cls, j) -> "BaseType":
        if isinstance(j, str):
            if j not in ATOMIC_TYPES:
                raise _syntax(f"unknown atomic type {j}")
            return cls(j)
        if not isinstance(j, dict) or j.get("type") not in ATOMIC_TYPES:
            raise _syntax(f"bad base type {j!r}")
        t = j["type"]
        kw: dict = {}
        if "enum" in j:
            from .datum import datum_from_json  # local: datum imports schema
            et = Type(BaseType(t), None, 0, None)
            kw["enum"] = frozenset(datum_from_json(et, j["enum"], check=False))
        if t == "integer":
            kw["min"] = j.get("minInteger")
            kw["max"] = j.get("maxInteger")
        elif t == "real":
            kw["min"] = j.get("minReal")
            kw["max"] = j.get("maxReal")
        elif t == "string":
            kw["min_length"] = j.get("minLength", 0)
            kw["max_length"] = j.get("maxLength")
        elif t == "uuid":
            kw["ref_table"] = j.get("refTable")
            kw["ref_type"] = j.get("refType", "strong")
            if kw["ref_type"] not in ("strong", "weak"):
                raise _syntax("refType must be strong or weak")
        return cls(t, **kw)

    def to_json(self):
        from .datum import datum_to_json
        j: dict = {"type": self.type}
        if self.enum is not None:
            j["enum"] = datum_to_json(Type(BaseType(self.type), None, 0, None), self.enum)
        if self.type in ("integer", "real"):
            suffix = "Integer" if self.type == "integer" else "Real"
            if self.min is not None:
                j["min" + suffix] = self.min
            if self.max is not None:
                j["max" + suffix] = self.max
        if self.type == "string":
            if self.min_length:
                j["minLength"] = self.min_length
            if self.max_length is not None:
                j["maxLength"] = self.max_length
        if self.ref_table is not None:
            j["refTable"] = self.ref_table
            if self.ref_type != "strong":
                j["refType"] = self.ref_type
        return j["type"] if len(j) == 1 else j

    def unconstrained(self) -> "BaseType":
        return BaseType(self.type, ref_table=self.ref_table, ref_type=self.ref_type)


@dataclass(frozen=True)
class Type:
    """A column type: key, optional value (then it is a map), min..max count."""
    key: BaseType
    value: BaseType | None
    n_min: int
    n_max: int | None            # None = unlimited

    @property
    def is_map(self) -> bool:
        return self.value is not None

    @property
    def is_scalar(self) -> bool:
        """Exactly one atom: represented as a bare Python value."""
        return self.value is None and self.n_min == 1 and self.n_max == 1

    @property
    def is_optional_scalar(self) -> bool:
        return self.value is None and self.n_min == 0 and self.n_max == 1

    @classmethod
    def from_json(cls, j) -> "Type":
        if isinstance(j, str) or (isinstance(j, dict) and "key" not in j):
            return cls(BaseType.from_json(j), None, 1, 1)
        if not isinstance(j, dict):
            raise _syntax(f"bad type {j!r}")
        key = BaseType.from_json(j["key"])
        value = BaseType.from_json(j["value"]) if "value" in j else None
        n_min = j.get("min", 1)
        n_max = j.get("max", 1)
        if n_max == "unlimited":
            n_max = None
        if not isinstance(n_min, int) or n_min not in (0, 1) or (
                n_max is not None and (not isinstance(n_max, int) or n_max < max(1, n_min))):
            raise _syntax(f"bad min/max in type {j!r}")
        return cls(key, value, n_min, n_max)

    def to_json(self):
        if self.is_scalar:
            return self.key.to_json()
        j: dict = {"key": self.key.to_json()}
        if self.value is not None:
            j["value"] = self.value.to_json()
        if self.n_min != 1:
            j["min"] = self.n_min
        if self.n_max != 1:
            j["max"] = "unlimited" if self.n_max is None else self.n_max
        return j


@dataclass(frozen=True)
class Column:
    name: str
    type: Type
    mutable: bool = True
    ephemeral: bool = False

    def default(self):
        """The column's default value (RFC 7047: 0, 0.0, false, "", all-zero uuid;
        empty set / map when min is 0).  Maps come back as a fresh dict."""
        if self.type.is_map:
            return {}
        return self._default

    @functools.cached_property
    def _default(self):
        t = self.type
        if t.is_map:
            return {}
        if t.n_min == 0:
            return frozenset()
        if t.is_scalar:
            return atom_default(t.key)
        return frozenset([atom_default(t.key)])


def atom_default(bt: BaseType):
    if bt.enum:
        return min(bt.enum)
    return {"integer": 0, "real": 0.0, "boolean": False, "string": "",
            "uuid": uuidlib.UUID(int=0)}[bt.type]


UUID_COL = Column("_uuid", Type(BaseType("uuid"), None, 1, 1), mutable=False)
VERSION_COL = Column("_version", Type(BaseType("uuid"), None, 1, 1), mutable=False)


@dataclass
class TableSchema:
    name: str
    columns: dict[str, Column]
    is_root: bool = False
    max_rows: int | None = None
    indexes: list[tuple[str, ...]] = field(default_factory=list)

    def column(self, name: str) -> Column:
        """All columns including _uuid/_version; raises 'unknown column'."""
        c = self.columns.get(name)
        if c is not None:
            return c
        if name == "_uuid":
            return UUID_COL
        if name == "_version":
            return VERSION_COL
        raise OvsdbError("unknown column", f"No column {name} in table {self.name}.")


@dataclass
class DbSchema:
    name: str
    version: str
    tables: dict[str, TableSchema]
    cksum: str | None = None
    raw: dict | None = None   # the JSON as read, returned verbatim by get_schema

    @classmethod
    def from_json(cls, j: dict) -> "DbSchema":
        if not isinstance(j, dict) or not isinstance(j.get("name"), str) \
                or not isinstance(j.get("tables"), dict):
            raise _syntax("schema must be an object with name and tables")
        tables = {}
        for tname, tj in j["tables"].items():
            if not _ID_RE.match(tname):
                raise _syntax(f"bad table name {tname}")
            cols = {}
            for cname, cj in tj["columns"].items():
                if not _ID_RE.match(cname) or cname.startswith("_"):
                    raise _syntax(f"bad column name {cname}")
                cols[cname] = Column(cname, Type.from_json(cj["type"]),
                                     cj.get("mutable", True), cj.get("ephemeral", False))
            indexes = []
            for idx in tj.get("indexes", []):
                for c in idx:
                    if c not in cols:
                        raise _syntax(f"index column {c} not in table {tname}")
                indexes.append(tuple(idx))
            tables[tname] = TableSchema(tname, cols, tj.get("isRoot", False),
                                        tj.get("maxRows"), indexes)
        for t in tables.values():
            for c in t.columns.values():
                for bt in (c.type.key, c.type.value):
                    if bt is not None and bt.ref_table is not None and bt.ref_table not in tables:
                        raise _syntax(f"column {t.name}.{c.name} refers to unknown table {bt.ref_table}")
        # Version-less schemas predate RFC 7047's "version"; keep them loadable.
        return cls(j["name"], j.get("version", "0.0.0"), tables, j.get("cksum"), j)

    def to_json(self) -> dict:
        if self.raw is not None:
            return self.raw
        tables = {}
        for t in self.tables.values():
            tj: dict = {"columns": {}}
            for c in t.columns.values():
                cj: dict = {"type": c.type.to_json()}
                if not c.mutable:
                    cj["mutable"] = False
                if c.ephemeral:
                    cj["ephemeral"] = True
                tj["columns"][c.name] = cj
            if t.is_root:
                tj["isRoot"] = True
            if t.max_rows is not None:
                tj["maxRows"] = t.max_rows
            if t.indexes:
                tj["indexes"] = [list(i) for i in t.indexes]
            tables[t.name] = tj
        return {"name": self.name, "version": self.version, "tables": tables}


def load_schema(path: str) -> DbSchema:
    with open(path, encoding="utf-8") as f:
        return DbSchema.from_json(json.load(f))


# The OVS built-in _Server database (ovsdb/_server.ovsschema in OVS 3.1).
SERVER_SCHEMA_JSON = {
    "name": "_Server",
    "version": "1.2.0",
    "tables": {
        "Database": {
            "columns": {
                "name": {"type": "string"},
                "model": {"type": {"key": {"type": "string",
                                           "enum": ["set", ["standalone", "clustered", "relay"]]}}},
                "connected": {"type": "boolean"},
                "leader": {"type": "boolean"},
                "schema": {"type": {"key": {"type": "string"}, "min": 0, "max": 1}},
                "cid": {"type": {"key": {"type": "uuid"}, "min": 0, "max": 1}},
                "sid": {"type": {"key": {"type": "uuid"}, "min": 0, "max": 1}},
                "index": {"type": {"key": {"type": "integer"}, "min": 0, "max": 1}},
            },
            "isRoot": True,
        }
    },
}


def server_schema() -> DbSchema:
    return DbSchema.from_json(SERVER_SCHEMA_JSON)
