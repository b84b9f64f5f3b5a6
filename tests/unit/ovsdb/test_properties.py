"""Properties over random transaction sequences (Hypothesis):

* replaying the log gives exactly the in-memory database (diff records,
  GC and weak-reference cleanup included);
* the incrementally maintained reference and index maps equal the ones
  rebuilt from scratch;
* every strong reference resolves and no non-root row is unreferenced.
"""
import json
import os
import tempfile

from hypothesis import given, settings, strategies as st

from vswitch.ovsdb.db import open_database
from .conftest import TEST_SCHEMA

NAMES = ["a", "b", "c", "d"]

name = st.sampled_from(NAMES)
where = st.one_of(st.just([]), name.map(lambda n: [["name", "==", n]]))


op = st.one_of(
    st.builds(lambda n, k: {"op": "insert", "table": "Root", "row": {
        "name": n, "n": k, "kids": ["named-uuid", "kid"], "m": ["map", [[n, str(k)]]]}}, name, st.integers(0, 100)),
    st.builds(lambda k: {"op": "insert", "table": "Kid", "row": {"name": f"k{k}", "toy": ["named-uuid", "toy"]},
                         "uuid-name": "kid"}, st.integers(0, 9)),
    st.builds(lambda k: {"op": "insert", "table": "Toy", "row": {"name": f"t{k}"}, "uuid-name": "toy"},
              st.integers(0, 9)),
    st.builds(lambda k: {"op": "insert", "table": "Other", "row": {"name": f"o{k}"}, "uuid-name": "oth"},
              st.integers(0, 9)),
    st.builds(lambda w: {"op": "mutate", "table": "Root", "where": w, "mutations": [
        ["weak", "insert", ["named-uuid", "oth"]], ["n", "+=", 1]]}, where),
    st.builds(lambda w, k: {"op": "mutate", "table": "Root", "where": w, "mutations": [
        ["m", "insert", ["map", [[f"x{k}", "v"]]]], ["ints", "insert", k % 4]]}, where, st.integers(0, 20)),
    st.builds(lambda w, k: {"op": "mutate", "table": "Root", "where": w, "mutations": [
        ["m", "delete", ["set", [f"x{k}"]]], ["ints", "delete", k % 4]]}, where, st.integers(0, 20)),
    st.builds(lambda w: {"op": "update", "table": "Root", "where": w, "row": {"kids": ["set", []]}}, where),
    st.builds(lambda w, c: {"op": "update", "table": "Root", "where": w, "row": {"color": c}},
              where, st.sampled_from(["red", "green", ["set", []]])),
    st.builds(lambda k: {"op": "delete", "table": "Other", "where": [["name", "==", f"o{k}"]]}, st.integers(0, 9)),
    st.builds(lambda w: {"op": "delete", "table": "Root", "where": w}, where),
)

txns = st.lists(st.lists(op, min_size=1, max_size=4), min_size=1, max_size=12)


def snapshot(db):
    return {tn: {u: r.to_dict() for u, r in t.rows.items()} for tn, t in db.tables.items()}


def check_invariants(db):
    strong, weak = dict(db._strong_in), dict(db._weak_in)
    idx = [dict(m) for t in db.tables.values() for m in t.index_maps]
    db.finish_load()
    assert db._strong_in == strong and db._weak_in == weak
    assert [dict(m) for t in db.tables.values() for m in t.index_maps] == idx
    for tn, t in db.tables.items():
        for u, r in t.rows.items():
            if not t.schema.is_root:
                assert db._strong_in.get(u), f"unreferenced {tn} row survived"
    for target, refs in db._strong_in.items():
        assert any(target in t.rows for t in db.tables.values())


@settings(max_examples=60, deadline=None)
@given(txns)
def test_replay_equals_memory_and_indexes_are_consistent(seq):
    d = tempfile.mkdtemp()
    schema_path = os.path.join(d, "t.ovsschema")
    json.dump(TEST_SCHEMA, open(schema_path, "w"))
    path = os.path.join(d, "t.db")
    db = open_database(path, schema_path, fsync=False)
    for ops in seq:
        db.transact_local(ops)
        check_invariants(db)
    db.storage.close()
    again = open_database(path, schema_path, fsync=False)
    assert snapshot(again) == snapshot(db)
    check_invariants(again)
    again.storage.close()
