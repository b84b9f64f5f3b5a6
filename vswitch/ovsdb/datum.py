"""Datums: the values of OVSDB columns, as plain Python values.

Representation (what ``Row`` hands to the daemon):

* scalar column (min=max=1): the bare atom -- ``int``, ``float``, ``bool``,
  ``str`` or ``uuid.UUID``;
* any other non-map column (including optional ``min 0 max 1``): ``frozenset``;
* map column: ``dict`` (treat as read-only; the engine copies on write).

Conversion to and from RFC 7047 JSON (``["set", ...]``, ``["map", ...]``,
``["uuid", ...]``, ``["named-uuid", ...]``) and constraint checking live here,
so every path into the database (insert, update, mutate, log replay) validates
the same way and reports the same RFC error names.
"""
from __future__ import annotations

import math
import re
import uuid as uuidlib
from typing import Callable

from .errors import OvsdbError
from .schema import INT_MAX, INT_MIN, BaseType, Type

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NAME_RE = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")

Symtab = Callable[[str], uuidlib.UUID]


def _syntax(msg: str) -> OvsdbError:
    return OvsdbError("syntax error", msg)


def atom_from_json(bt: BaseType, j, symtab: Symtab | None = None):
    t = bt.type
    if t == "integer":
        if isinstance(j, bool) or not isinstance(j, int):
            raise _syntax(f"expected integer, got {j!r}")
        if not INT_MIN <= j <= INT_MAX:
            raise OvsdbError("range error", f"{j} out of 64-bit integer range")
        return j
    if t == "real":
        if isinstance(j, bool) or not isinstance(j, (int, float)):
            raise _syntax(f"expected real, got {j!r}")
        j = float(j)
        if not math.isfinite(j):
            raise _syntax("real must be finite")
        return j
    if t == "boolean":
        if not isinstance(j, bool):
            raise _syntax(f"expected boolean, got {j!r}")
        return j
    if t == "string":
        if not isinstance(j, str):
            raise _syntax(f"expected string, got {j!r}")
        return j
    # uuid
    if isinstance(j, list) and len(j) == 2 and isinstance(j[1], str):
        if j[0] == "uuid":
            if not _UUID_RE.match(j[1]):
                raise _syntax(f"{j[1]!r} is not a valid UUID")
            return uuidlib.UUID(j[1])
        if j[0] == "named-uuid":
            if symtab is None:
                raise _syntax(f"named-uuid {j[1]!r} not allowed here")
            if not _NAME_RE.match(j[1]):
                raise _syntax(f"bad uuid-name {j[1]!r}")
            return symtab(j[1])
    raise _syntax(f"expected uuid, got {j!r}")


def atom_to_json(v):
    if isinstance(v, uuidlib.UUID):
        return ["uuid", str(v)]
    return v


def check_atom(bt: BaseType, v) -> None:
    """Raise 'constraint violation' unless ``v`` obeys ``bt``'s constraints."""
    if bt.enum is not None and v not in bt.enum:
        raise OvsdbError("constraint violation",
                         f"{v!r} is not one of the allowed values ({sorted(bt.enum)!r})")
    if bt.type in ("integer", "real"):
        if bt.min is not None and v < bt.min:
            raise OvsdbError("constraint violation", f"{v} is less than minimum allowed value {bt.min}")
        if bt.max is not None and v > bt.max:
            raise OvsdbError("constraint violation", f"{v} is greater than maximum allowed value {bt.max}")
    elif bt.type == "string":
        if len(v) < bt.min_length:
            raise OvsdbError("constraint violation",
                             f'"{v}" length {len(v)} is less than minimum allowed length {bt.min_length}')
        if bt.max_length is not None and len(v) > bt.max_length:
            raise OvsdbError("constraint violation",
                             f'"{v}" length {len(v)} is greater than maximum allowed length {bt.max_length}')


def _unconstrained(bt: BaseType) -> bool:
    return (bt.enum is None and bt.min is None and bt.max is None
            and not bt.min_length and bt.max_length is None)


def check_datum(t: Type, v) -> None:
    """Full constraint check of a datum in canonical form."""
    if t.is_scalar:
        check_atom(t.key, v)
        return
    n = len(v)
    if n < t.n_min:
        raise OvsdbError("constraint violation", f"{n} values when type requires at least {t.n_min}")
    if t.n_max is not None and n > t.n_max:
        raise OvsdbError("constraint violation", f"{n} values when type requires no more than {t.n_max}")
    if t.is_map:
        if not _unconstrained(t.key):
            for k in v:
                check_atom(t.key, k)
        if not _unconstrained(t.value):
            for val in v.values():
                check_atom(t.value, val)
    elif not _unconstrained(t.key):
        for k in v:
            check_atom(t.key, k)


def datum_from_json(t: Type, j, symtab: Symtab | None = None, check: bool = True):
    """Parse RFC 7047 <value> JSON for type ``t`` into canonical form."""
    if t.is_map:
        if not (isinstance(j, list) and len(j) == 2 and j[0] == "map" and isinstance(j[1], list)):
            raise _syntax(f"expected map, got {j!r}")
        out: dict = {}
        for pair in j[1]:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise _syntax(f"bad map pair {pair!r}")
            k = atom_from_json(t.key, pair[0], symtab)
            if k in out:
                raise OvsdbError("ovsdb error", "map contains duplicate key")
            out[k] = atom_from_json(t.value, pair[1], symtab)
        v = out
    else:
        if isinstance(j, list) and len(j) == 2 and j[0] == "set":
            if not isinstance(j[1], list):
                raise _syntax(f"bad set {j!r}")
            elems = [atom_from_json(t.key, e, symtab) for e in j[1]]
            v = frozenset(elems)
            if len(v) != len(elems):
                # ovsdb-server's (odd) error name for this case
                raise OvsdbError("ovsdb error", "set contains duplicate")
        else:
            v = frozenset([atom_from_json(t.key, j, symtab)])
        if t.is_scalar:
            if len(v) != 1:
                raise OvsdbError("constraint violation",
                                 f"{len(v)} values when type requires exactly 1")
            (v,) = v
    if check:
        check_datum(t, v)
    return v


def datum_to_json(t: Type, v):
    if t.is_scalar:
        return atom_to_json(v)
    if t.is_map:
        return ["map", [[atom_to_json(k), atom_to_json(v[k])] for k in sorted(v)]]
    if len(v) == 1:
        (a,) = v
        return atom_to_json(a)
    return ["set", [atom_to_json(a) for a in sorted(v)]]


def refs_of(t: Type, v, ref_type: str | None = None):
    """Yield (table, uuid) for each reference in datum ``v`` (optionally only
    strong or weak ones)."""
    for bt, atoms in _ref_atoms(t, v):
        if ref_type is None or bt.ref_type == ref_type:
            for a in atoms:
                yield bt.ref_table, a


def _ref_atoms(t: Type, v):
    k, val = t.key, t.value
    if t.is_scalar:
        if k.is_ref:
            yield k, (v,)
        return
    if t.is_map:
        if k.is_ref:
            yield k, v.keys()
        if val.is_ref:
            yield val, v.values()
        return
    if k.is_ref:
        yield k, v


def diff_datum(t: Type, old, new):
    """The update2 "modify" diff of a column (ovsdb-server.7 <diff>): the new
    atom for scalars, the symmetric difference for sets, and for maps the
    removed/changed keys with old values plus added keys with new values...
    expressed as the pairs the client must toggle (RFC-extension semantics).
    Columns holding at most one value (scalar or optional) send the new value,
    as ovsdb-server does and as the IDLs expect."""
    if t.n_max == 1 and not t.is_map:
        return new
    if t.is_map:
        out = {}
        for k, ov in old.items():
            if k not in new:
                out[k] = ov
            elif new[k] != ov:
                out[k] = new[k]
        for k, nv in new.items():
            if k not in old:
                out[k] = nv
        return out
    return old ^ new


def apply_diff(t: Type, old, diff):
    """Inverse of diff_datum (used for "_is_diff" log records)."""
    if t.n_max == 1 and not t.is_map:
        return diff
    if t.is_map:
        out = dict(old)
        for k, dv in diff.items():
            if k in out and out[k] == dv:
                del out[k]
            else:
                out[k] = dv
        return out
    return old ^ diff


def diff_type(t: Type) -> Type:
    """Type used to encode a diff: same atoms, unlimited count."""
    if t.n_max == 1 and not t.is_map:
        return t
    return Type(t.key.unconstrained(), t.value.unconstrained() if t.value else None, 0, None)
