"""Transaction engine: every RFC 7047 operation, every error name, references,
garbage collection, indexes, maxRows, constraints, listeners."""
import uuid

import pytest

from vswitch.ovsdb.db import Database, Pending
from .conftest import U, uid


def ok(db, *ops):
    res = db.transact_local(list(ops))
    for r in res:
        assert r is not None and "error" not in r, res
    return res


def err(db, *ops):
    res = db.transact_local(list(ops))
    errors = [r for r in res if isinstance(r, dict) and "error" in r]
    assert errors, res
    return errors[0]["error"]


def ins(table, row=None, name=None):
    op = {"op": "insert", "table": table, "row": row or {}}
    if name:
        op["uuid-name"] = name
    return op


# ---------------------------------------------------------------- insert/select
def test_insert_defaults_and_select(tdb):
    u = uid(ok(tdb, ins("Root", {"name": "a"}))[0])
    row = tdb.tables["Root"].rows[u]
    assert row.name == "a" and row.n == 0 and row.r == 0.0 and row.b is False
    assert row.color == frozenset() and row.m == {} and row.scalar("opt") is None
    res = ok(tdb, {"op": "select", "table": "Root", "where": [["name", "==", "a"]],
                   "columns": ["name", "n", "_uuid"]})
    assert res[0] == {"rows": [{"name": "a", "n": 0, "_uuid": U(u)}]}
    full = ok(tdb, {"op": "select", "table": "Root", "where": []})[0]["rows"][0]
    assert full["_version"] == U(row.version) and full["m"] == ["map", []]


def test_uuid_name_forward_reference_and_duplicate(tdb):
    res = ok(tdb, ins("Root", {"name": "a", "kids": ["named-uuid", "k"]}), ins("Kid", {"name": "k"}, "k"))
    root = tdb.tables["Root"].rows[uid(res[0])]
    assert root.kids == frozenset([uid(res[1])])
    assert err(tdb, ins("Other", {}, "x"), ins("Other", {}, "x")) == "duplicate uuid-name"


def test_insert_with_explicit_uuid(tdb):
    u = uuid.uuid4()
    res = ok(tdb, {"op": "insert", "table": "Other", "uuid": U(u), "row": {"name": "o"}})
    assert uid(res[0]) == u and u in tdb.tables["Other"].rows
    assert err(tdb, {"op": "insert", "table": "Other", "uuid": U(u)}) == "duplicate uuid"


@pytest.mark.parametrize("row,error", [
    ({"n": 101}, "constraint violation"),
    ({"n": -1}, "constraint violation"),
    ({"color": "blue"}, "constraint violation"),
    ({"short": "abcd"}, "constraint violation"),
    ({"ints": ["set", [1, 2, 3, 4]]}, "constraint violation"),
    ({"ints": ["set", [1, 1]]}, "ovsdb error"),      # sic: ovsdb-server 3.1
    ({"n": "x"}, "syntax error"),
    ({"n": True}, "syntax error"),
    ({"b": 1}, "syntax error"),
    ({"m": ["set", []]}, "syntax error"),
    ({"kids": ["uuid", "not-a-uuid"]}, "syntax error"),
    ({"nope": 1}, "unknown column"),
    ({"_uuid": U(uuid.uuid4())}, "constraint violation"),
    ({"n": 2 ** 64}, "range error"),
])
def test_insert_constraints(tdb, row, error):
    assert err(tdb, ins("Root", dict({"name": "x"}, **row))) == error
    assert not tdb.tables["Root"].rows


def test_unknown_table_and_op(tdb):
    assert err(tdb, ins("Nope")) == "syntax error"      # as ovsdb-server says
    assert err(tdb, {"op": "frobnicate", "table": "Root"}) == "syntax error"
    assert err(tdb, "not an object") == "syntax error"


def test_error_result_shape(tdb):
    """Failed op: error object in its slot, nulls after, nothing committed."""
    res = tdb.transact_local([ins("Other"), ins("Nope"), ins("Other")])
    assert "uuid" in res[0] and res[1]["error"] == "syntax error" and res[2] is None
    assert len(res) == 3 and not tdb.tables["Other"].rows


# ---------------------------------------------------------------- where
def test_conditions(tdb):
    ok(tdb, ins("Root", {"name": "a", "n": 1, "opt": 5, "ints": ["set", [1, 2]], "m": ["map", [["k", "v"]]]}),
       ins("Root", {"name": "b", "n": 7, "r": 2.5}))

    def names(where):
        rows = ok(tdb, {"op": "select", "table": "Root", "where": where, "columns": ["name"]})[0]["rows"]
        return sorted(r["name"] for r in rows)

    assert names([["n", "<", 5]]) == ["a"]
    assert names([["n", ">=", 1], ["n", "<=", 7]]) == ["a", "b"]
    assert names([["opt", ">", 4]]) == ["a"]          # optional scalar: empty never matches
    assert names([["r", ">", 2.0]]) == ["b"]
    assert names([["name", "!=", "a"]]) == ["b"]
    assert names([["ints", "includes", ["set", [2]]]]) == ["a"]
    assert names([["ints", "excludes", 2]]) == ["b"]
    assert names([["m", "includes", ["map", [["k", "v"]]]]]) == ["a"]
    assert names([["m", "excludes", ["map", [["k", "v"]]]]]) == ["b"]
    assert names([["ints", "==", ["set", []]]]) == ["b"]
    assert names([]) == ["a", "b"]
    assert err(tdb, {"op": "select", "table": "Root", "where": [["name", "<", "a"]]}) == "syntax error"
    assert err(tdb, {"op": "select", "table": "Root", "where": [["zz", "==", 1]]}) == "unknown column"
    assert err(tdb, {"op": "select", "table": "Root", "where": [["n", "~", 1]]}) == "unknown function"


# ---------------------------------------------------------------- update/mutate/delete
def test_update(tdb):
    ok(tdb, ins("Root", {"name": "a"}), ins("Root", {"name": "b"}))
    res = ok(tdb, {"op": "update", "table": "Root", "where": [], "row": {"n": 3}})
    assert res[0] == {"count": 2}
    assert {r.n for r in tdb.tables["Root"].rows.values()} == {3}
    assert err(tdb, {"op": "update", "table": "Root", "where": [], "row": {"fixed": 1}}) == \
        "constraint violation"
    assert err(tdb, {"op": "update", "table": "Root", "where": [], "row": {"n": 1000}}) == \
        "constraint violation"


def test_update_changes_version(tdb):
    u = uid(ok(tdb, ins("Root", {"name": "a"}))[0])
    v1 = tdb.tables["Root"].rows[u].version
    ok(tdb, {"op": "update", "table": "Root", "where": [], "row": {"n": 3}})
    assert tdb.tables["Root"].rows[u].version != v1


def test_mutate_arithmetic_and_errors(tdb):
    ok(tdb, ins("Root", {"name": "a", "n": 10, "r": 1.0, "ints": ["set", [1, 2]]}))

    def mut(*ms):
        return {"op": "mutate", "table": "Root", "where": [], "mutations": list(ms)}

    ok(tdb, mut(["n", "+=", 5], ["r", "*=", 4], ["ints", "*=", 10]))
    row = next(iter(tdb.tables["Root"].rows.values()))
    assert row.n == 15 and row.r == 4.0 and row.ints == frozenset([10, 20])
    ok(tdb, mut(["n", "/=", 2]), mut(["n", "%=", 4]))
    assert next(iter(tdb.tables["Root"].rows.values())).n == 3
    assert err(tdb, mut(["n", "/=", 0])) == "domain error"
    assert err(tdb, mut(["n", "+=", 200])) == "constraint violation"
    assert err(tdb, mut(["n", "+=", 2 ** 63 - 1])) == "range error"
    assert err(tdb, mut(["r", "%=", 2])) == "syntax error"
    assert err(tdb, mut(["name", "+=", 1])) == "syntax error"
    assert err(tdb, mut(["fixed", "insert", ["set", [1]]])) == "constraint violation"
    assert err(tdb, mut(["_uuid", "+=", 1])) == "constraint violation"
    # set elements that collide after arithmetic collapse
    ok(tdb, mut(["ints", "*=", 0]))
    assert next(iter(tdb.tables["Root"].rows.values())).ints == frozenset([0])


def test_mutate_sets_and_maps(tdb):
    ok(tdb, ins("Root", {"name": "a", "m": ["map", [["a", "1"], ["b", "2"]]]}))

    def mut(*ms):
        return {"op": "mutate", "table": "Root", "where": [], "mutations": list(ms)}

    ok(tdb, mut(["ints", "insert", ["set", [1, 2]]]), mut(["ints", "delete", 1]))
    ok(tdb, mut(["m", "insert", ["map", [["a", "X"], ["c", "3"]]]]))   # existing key kept
    row = next(iter(tdb.tables["Root"].rows.values()))
    assert row.ints == frozenset([2]) and row.m == {"a": "1", "b": "2", "c": "3"}
    ok(tdb, mut(["m", "delete", ["set", ["a"]]]), mut(["m", "delete", ["map", [["b", "wrong"], ["c", "3"]]]]))
    assert next(iter(tdb.tables["Root"].rows.values())).m == {"b": "2"}
    assert err(tdb, mut(["ints", "insert", ["set", [5, 6, 7]]])) == "constraint violation"
    assert err(tdb, mut(["n", "insert", 1])) == "syntax error"


def test_delete(tdb):
    ok(tdb, ins("Root", {"name": "a"}), ins("Root", {"name": "b"}))
    assert ok(tdb, {"op": "delete", "table": "Root", "where": [["name", "==", "a"]]})[0] == {"count": 1}
    assert [r.name for r in tdb.tables["Root"].rows.values()] == ["b"]


# ---------------------------------------------------------------- wait / commit / abort / comment / assert
def test_wait(tdb):
    ok(tdb, ins("Root", {"name": "a", "n": 1}))
    w = {"op": "wait", "table": "Root", "where": [], "columns": ["name", "n"], "until": "==",
         "rows": [{"name": "a", "n": 1}], "timeout": 0}
    ok(tdb, w)
    assert err(tdb, dict(w, until="!=")) == "timed out"
    assert err(tdb, dict(w, rows=[])) == "timed out"
    # blocking wait: Pending with a deadline, then times out at the deadline
    res = tdb.execute([dict(w, rows=[], timeout=1000)], now=10.0, started=10.0)
    assert isinstance(res, Pending) and res.deadline == 11.0
    res = tdb.execute([dict(w, rows=[], timeout=1000)], now=11.0, started=10.0)
    assert res[0]["error"] == "timed out"
    res = tdb.execute([dict(w, rows=[])] if False else [{k: v for k, v in w.items() if k != "timeout"} | {"rows": []}],
                      now=0.0)
    assert isinstance(res, Pending) and res.deadline is None
    assert err(tdb, dict(w, until="<")) == "syntax error"


def test_commit_abort_comment_assert(tdb):
    assert err(tdb, {"op": "commit", "durable": True}) == "not supported"   # no storage
    ok(tdb, {"op": "commit", "durable": False}, {"op": "comment", "comment": "hi"})
    res = tdb.transact_local([ins("Other"), {"op": "abort"}])
    assert res[1]["error"] == "aborted" and not tdb.tables["Other"].rows
    assert err(tdb, {"op": "assert", "lock": "l"}) == "not owner"
    res = tdb.execute([{"op": "assert", "lock": "l"}, ins("Other")], has_lock=lambda n: n == "l")
    assert "uuid" in res[1]


# ---------------------------------------------------------------- references & GC
def test_strong_ref_to_nonexistent_row(tdb):
    assert err(tdb, ins("Root", {"name": "a", "kids": U(uuid.uuid4())})) == \
        "referential integrity violation"


def test_cannot_delete_strongly_referenced_row(tdb):
    res = ok(tdb, ins("Kid", {}, "k"), ins("Root", {"name": "a", "kids": ["named-uuid", "k"]}))
    assert err(tdb, {"op": "delete", "table": "Kid", "where": []}) == "referential integrity violation"
    assert uid(res[0]) in tdb.tables["Kid"].rows


def test_garbage_collection_of_non_root_rows(tdb):
    # an unreferenced non-root row is collected in the same transaction
    ok(tdb, ins("Kid", {"name": "orphan"}))
    assert not tdb.tables["Kid"].rows
    # a chain Root -> Kid -> Toy is collected when the root lets go
    ok(tdb, ins("Toy", {}, "t"), ins("Kid", {"toy": ["named-uuid", "t"]}, "k"),
       ins("Root", {"name": "a", "kids": ["named-uuid", "k"]}))
    assert len(tdb.tables["Kid"].rows) == 1 and len(tdb.tables["Toy"].rows) == 1
    ok(tdb, {"op": "update", "table": "Root", "where": [], "row": {"kids": ["set", []]}})
    assert not tdb.tables["Kid"].rows and not tdb.tables["Toy"].rows
    assert not tdb._strong_in


def test_gc_deletes_when_root_deleted(tdb):
    ok(tdb, ins("Kid", {}, "k"), ins("Root", {"name": "a", "kids": ["named-uuid", "k"]}))
    ok(tdb, {"op": "delete", "table": "Root", "where": []})
    assert not tdb.tables["Kid"].rows


def test_weak_refs_dropped(tdb):
    res = ok(tdb, ins("Other", {"name": "o1"}, "o1"), ins("Other", {"name": "o2"}, "o2"),
             ins("WeakHolder", {"w": ["named-uuid", "o2"]}),
             ins("Root", {"name": "a", "weak": ["set", [["named-uuid", "o1"], ["named-uuid", "o2"]]],
                          "wmap": ["map", [["x", ["named-uuid", "o1"]]]]}))
    o1 = uid(res[0])
    ok(tdb, {"op": "delete", "table": "Other", "where": [["name", "==", "o1"]]})
    root = next(iter(tdb.tables["Root"].rows.values()))
    assert root.weak == frozenset([uid(res[1])]) and root.wmap == {}
    assert o1 not in tdb._weak_in
    # dropping the last weak ref of a min-1 column is a constraint violation
    assert err(tdb, {"op": "delete", "table": "Other", "where": [["name", "==", "o2"]]}) == \
        "constraint violation"
    # a weak ref to a row that never existed is silently dropped on insert
    ok(tdb, ins("Root", {"name": "b", "weak": U(uuid.uuid4())}))
    b = [r for r in tdb.tables["Root"].rows.values() if r.name == "b"][0]
    assert b.weak == frozenset()


def test_index_uniqueness(tdb):
    ok(tdb, ins("Root", {"name": "a"}))
    assert err(tdb, ins("Root", {"name": "a"})) == "constraint violation"
    assert err(tdb, ins("Root", {"name": "b"}), ins("Root", {"name": "b"})) == "constraint violation"
    # swapping names inside one transaction is fine
    ok(tdb, ins("Root", {"name": "b"}))
    ok(tdb, {"op": "update", "table": "Root", "where": [["name", "==", "a"]], "row": {"name": "tmp"}},
       {"op": "update", "table": "Root", "where": [["name", "==", "b"]], "row": {"name": "a"}},
       {"op": "update", "table": "Root", "where": [["name", "==", "tmp"]], "row": {"name": "b"}})
    # a deleted row frees its key
    ok(tdb, {"op": "delete", "table": "Root", "where": [["name", "==", "a"]]}, ins("Root", {"name": "a"}))
    assert sorted(r.name for r in tdb.tables["Root"].rows.values()) == ["a", "b"]


def test_max_rows(tdb):
    ok(tdb, ins("Root", {"name": "a"}), ins("Root", {"name": "b"}), ins("Root", {"name": "c"}))
    assert err(tdb, ins("Root", {"name": "d"})) == "constraint violation"
    ok(tdb, {"op": "delete", "table": "Root", "where": [["name", "==", "a"]]}, ins("Root", {"name": "d"}))


# ---------------------------------------------------------------- listeners
def test_listener_gets_changes_and_may_transact(tdb):
    seen = []

    def listener(db, changes):
        seen.append({t: {u: (o is not None, n is not None) for u, (o, n) in ch.items()}
                     for t, ch in changes.items()})
        if "Root" in changes and len(seen) == 1:
            db.transact_local([ins("Other", {"name": "from-listener"})])

    tdb.add_listener(listener)
    u = uid(ok(tdb, ins("Root", {"name": "a"}))[0])
    assert seen[0] == {"Root": {u: (False, True)}}
    assert list(seen[1]) == ["Other"]          # nested commit delivered after the first
    ok(tdb, {"op": "select", "table": "Root", "where": []})   # read-only: no notification
    ok(tdb, {"op": "update", "table": "Root", "where": [], "row": {"name": "a"}})  # no-op
    assert len(seen) == 2


# ---------------------------------------------------------------- vswitch schema
def test_ensure_open_vswitch_row_and_max_rows(vdb):
    u = vdb.ensure_open_vswitch_row()
    assert vdb.ensure_open_vswitch_row() == u and len(vdb.tables["Open_vSwitch"].rows) == 1
    assert err(vdb, ins("Open_vSwitch")) == "constraint violation"   # maxRows 1


def test_add_bridge_like_ovs_vsctl(vdb):
    ovs = vdb.ensure_open_vswitch_row()
    ok(vdb, ins("Interface", {"name": "br0", "type": "internal"}, "i"),
       ins("Port", {"name": "br0", "interfaces": ["named-uuid", "i"]}, "p"),
       ins("Bridge", {"name": "br0", "ports": ["named-uuid", "p"]}, "b"),
       {"op": "mutate", "table": "Open_vSwitch", "where": [["_uuid", "==", U(ovs)]],
        "mutations": [["bridges", "insert", ["named-uuid", "b"]], ["next_cfg", "+=", 1]]})
    br = next(iter(vdb.tables["Bridge"].rows.values()))
    port = vdb.tables["Port"].rows[next(iter(br.ports))]
    iface = vdb.tables["Interface"].rows[next(iter(port.interfaces))]
    assert iface.type == "internal" and iface.ofport == frozenset()
    ok(vdb, {"op": "update", "table": "Interface", "where": [["name", "==", "br0"]],
             "row": {"ofport": 65534}})
    assert vdb.tables["Interface"].rows[iface.uuid].scalar("ofport") == 65534
    # removing the bridge from Open_vSwitch collects bridge, port and interface
    ok(vdb, {"op": "mutate", "table": "Open_vSwitch", "where": [],
             "mutations": [["bridges", "delete", ["set", [U(br.uuid)]]]]})
    assert not vdb.tables["Bridge"].rows and not vdb.tables["Port"].rows and not vdb.tables["Interface"].rows
    # Bridge.name index
    ok(vdb, ins("Bridge", {"name": "x"}, "b"),
       {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["bridges", "insert", ["named-uuid", "b"]]]})
    assert err(vdb, ins("Bridge", {"name": "x"}, "b"),
               {"op": "mutate", "table": "Open_vSwitch", "where": [],
                "mutations": [["bridges", "insert", ["named-uuid", "b"]]]}) == "constraint violation"


def test_read_only_database():
    from vswitch.ovsdb.schema import server_schema
    db = Database(server_schema(), read_only=True)
    assert err(db, ins("Database", {"name": "x"})) == "not allowed"


def test_dangling_strong_ref_fails_even_if_row_would_be_collected(vdb):
    # ovsdb-server checks references before garbage collection
    assert err(vdb, ins("Port", {"name": "p"})) == "referential integrity violation"


def test_mirror_weak_ref_to_port_dropped_on_del_port(vdb):
    ok(vdb, ins("Interface", {"name": "p1"}, "i"),
       ins("Port", {"name": "p1", "interfaces": ["named-uuid", "i"]}, "p"),
       ins("Mirror", {"name": "m", "select_src_port": ["named-uuid", "p"],
                      "output_port": ["named-uuid", "p"]}, "m"),
       ins("Bridge", {"name": "br0", "ports": ["named-uuid", "p"], "mirrors": ["named-uuid", "m"]}, "b"),
       ins("Open_vSwitch", {"bridges": ["named-uuid", "b"]}))
    ok(vdb, {"op": "update", "table": "Bridge", "where": [], "row": {"ports": ["set", []]}})
    m = next(iter(vdb.tables["Mirror"].rows.values()))
    assert m.select_src_port == frozenset() and m.output_port == frozenset()
    assert not vdb.tables["Port"].rows and not vdb.tables["Interface"].rows
    assert not vdb._weak_in and set(vdb._strong_in) == {m.uuid, next(iter(vdb.tables["Bridge"].rows))}


def test_failing_listener_does_not_fail_the_commit(tdb, caplog):
    def bad(db, changes):
        raise RuntimeError("boom")

    seen = []
    tdb.add_listener(bad)
    tdb.add_listener(lambda db, ch: seen.append(ch))
    ok(tdb, ins("Other", {"name": "o"}))
    assert len(tdb.tables["Other"].rows) == 1 and len(seen) == 1
    assert "boom" in caplog.text
