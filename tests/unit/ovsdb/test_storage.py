"""Durable log: OVS standalone format both ways, torn tails, compaction."""
import json
import os
import subprocess

import pytest

from vswitch.ovsdb.db import open_database
from vswitch.ovsdb.storage import compose_record, parse_records
from tests.capabilities import require_tools

from .conftest import VSWITCH_SCHEMA



def add_bridge(db, name):
    db.ensure_open_vswitch_row()
    res = db.transact_local([
        {"op": "insert", "table": "Interface", "row": {"name": name, "type": "internal"}, "uuid-name": "i"},
        {"op": "insert", "table": "Port", "row": {"name": name, "interfaces": ["named-uuid", "i"]},
         "uuid-name": "p"},
        {"op": "insert", "table": "Bridge", "row": {"name": name, "ports": ["named-uuid", "p"],
                                                    "other_config": ["map", [["k", "v"]]]},
         "uuid-name": "b"},
        {"op": "mutate", "table": "Open_vSwitch", "where": [],
         "mutations": [["bridges", "insert", ["named-uuid", "b"]]]},
        {"op": "commit", "durable": True}, {"op": "comment", "comment": f"add-br {name}"}])
    assert all("error" not in r for r in res), res


def names(db, table):
    return sorted(r.name for r in db.tables[table].rows.values())


def test_record_format():
    rec = compose_record({"a": 1})
    assert rec.startswith(b"OVSDB JSON 8 ") and rec.endswith(b'{"a":1}\n')
    assert parse_records(rec * 2) == ([{"a": 1}, {"a": 1}], 2 * len(rec))


def test_reopen_replays(tmp_path):
    path = str(tmp_path / "conf.db")
    db = open_database(path, VSWITCH_SCHEMA)
    add_bridge(db, "br0")
    add_bridge(db, "br1")
    db.transact_local([{"op": "mutate", "table": "Open_vSwitch", "where": [],
                        "mutations": [["bridges", "delete", ["set", [
                            ["uuid", str(next(r.uuid for r in db.tables["Bridge"].rows.values()
                                              if r.name == "br0"))]]]]]}])
    db.storage.close()
    db2 = open_database(path, VSWITCH_SCHEMA)
    assert names(db2, "Bridge") == ["br1"] and names(db2, "Port") == ["br1"]
    assert {u: r.to_dict() for u, r in db2.tables["Bridge"].rows.items()} == \
        {u: r.to_dict() for u, r in db.tables["Bridge"].rows.items()}
    # reference and index maps are rebuilt: GC and uniqueness still work
    assert db2.transact_local([{"op": "insert", "table": "Bridge", "row": {"name": "br1"}, "uuid-name": "b"},
                               {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [
                                   ["bridges", "insert", ["named-uuid", "b"]]]}])[-1]["error"] == \
        "constraint violation"
    db2.transact_local([{"op": "update", "table": "Open_vSwitch", "where": [], "row": {"bridges": ["set", []]}}])
    assert not db2.tables["Interface"].rows


@pytest.mark.parametrize("cut", [1, 10, 40, 70])
def test_torn_tail_is_dropped(tmp_path, cut):
    path = str(tmp_path / "conf.db")
    db = open_database(path, VSWITCH_SCHEMA)
    add_bridge(db, "br0")
    size_after_br0 = os.path.getsize(path)
    add_bridge(db, "br1")
    db.storage.close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - cut)
    db2 = open_database(path, VSWITCH_SCHEMA)
    assert names(db2, "Bridge") == ["br0"]
    assert os.path.getsize(path) == size_after_br0     # truncated to the last good record
    add_bridge(db2, "br2")                                # and appending continues cleanly
    db2.storage.close()
    assert names(open_database(path, VSWITCH_SCHEMA), "Bridge") == ["br0", "br2"]


def test_corrupt_checksum_stops_replay(tmp_path):
    path = str(tmp_path / "conf.db")
    db = open_database(path, VSWITCH_SCHEMA)
    add_bridge(db, "br0")
    add_bridge(db, "br1")
    db.storage.close()
    data = open(path, "rb").read()
    i = data.rindex(b"br1")
    open(path, "wb").write(data[:i] + b"brX" + data[i + 3:])
    assert names(open_database(path, VSWITCH_SCHEMA), "Bridge") == ["br0"]


def test_compaction(tmp_path):
    path = str(tmp_path / "conf.db")
    db = open_database(path, VSWITCH_SCHEMA, fsync=False)
    add_bridge(db, "br0")
    for i in range(200):
        db.transact_local([{"op": "update", "table": "Bridge", "where": [],
                            "row": {"external_ids": ["map", [["i", str(i)]]]}}])
    big = os.path.getsize(path)
    db.compact()
    assert os.path.getsize(path) < big / 3     # the schema record alone is ~15 kB
    add_bridge(db, "br1")
    db.storage.close()
    db2 = open_database(path, VSWITCH_SCHEMA)
    assert names(db2, "Bridge") == ["br0", "br1"]
    assert next(r for r in db2.tables["Bridge"].rows.values() if r.name == "br0").external_ids == {"i": "199"}


def test_automatic_compaction_threshold(tmp_path):
    path = str(tmp_path / "conf.db")
    db = open_database(path, VSWITCH_SCHEMA, fsync=False)
    db.ensure_open_vswitch_row()
    blob = "x" * 20000
    for i in range(120):
        db.transact_local([{"op": "update", "table": "Open_vSwitch", "where": [],
                            "row": {"external_ids": ["map", [["blob", blob + str(i)]]]}}])
    assert os.path.getsize(path) < 1 << 20
    db.storage.close()
    row = next(iter(open_database(path, VSWITCH_SCHEMA).tables["Open_vSwitch"].rows.values()))
    assert row.external_ids["blob"] == blob + "119"


def test_ovsdb_tool_reads_our_file(tmp_path):
    require_tools("ovsdb-tool", package="openvswitch-common")
    path = str(tmp_path / "conf.db")
    db = open_database(path, VSWITCH_SCHEMA)
    add_bridge(db, "br0")
    add_bridge(db, "br1")
    db.transact_local([{"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
                        "mutations": [["other_config", "insert", ["map", [["z", "1"]]]],
                                      ["other_config", "delete", ["set", ["k"]]]]},
                       {"op": "update", "table": "Open_vSwitch", "where": [], "row": {"bridges": ["set", [
                           ["uuid", str(next(u for u, r in db.tables["Bridge"].rows.items() if r.name == "br0"))]]]}}])
    assert b'"_is_diff":true' in open(path, "rb").read()
    db.storage.close()
    out = subprocess.run(["ovsdb-tool", "query", path, json.dumps(
        ["Open_vSwitch", {"op": "select", "table": "Bridge", "where": [], "columns": ["name", "other_config"]}])],
        capture_output=True, text=True, check=True).stdout
    assert json.loads(out)[0]["rows"] == [{"name": "br0", "other_config": ["map", [["z", "1"]]]}]
    log = subprocess.run(["ovsdb-tool", "show-log", path], capture_output=True, text=True, check=True).stdout
    assert "add-br br0" in log


def test_we_read_ovsdb_tool_file_with_diffs(tmp_path):
    require_tools("ovsdb-tool", package="openvswitch-common")
    path = str(tmp_path / "conf.db")
    subprocess.run(["ovsdb-tool", "create", path, VSWITCH_SCHEMA], check=True)

    def tool(*ops):
        subprocess.run(["ovsdb-tool", "transact", path, json.dumps(["Open_vSwitch", *ops])],
                       check=True, capture_output=True)

    tool({"op": "insert", "table": "Open_vSwitch", "row": {"external_ids": ["map", [["a", "1"], ["b", "2"]]],
                                                           "next_cfg": 4}})
    tool({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [
        ["external_ids", "delete", ["set", ["a"]]], ["external_ids", "insert", ["map", [["c", "3"]]]],
        ["next_cfg", "+=", 1]]})
    assert b'"_is_diff":true' in open(path, "rb").read()
    db = open_database(path, VSWITCH_SCHEMA)
    row = next(iter(db.tables["Open_vSwitch"].rows.values()))
    assert row.external_ids == {"b": "2", "c": "3"} and row.next_cfg == 5


def test_schema_upgrade_converts_data(tmp_path):
    """A file written with an older schema is converted on open (like
    ``ovsdb-tool convert``) and rewritten with the new schema."""
    schema = json.load(open(VSWITCH_SCHEMA))
    old = json.loads(json.dumps(schema))
    old["version"] = "8.0.0"
    old["tables"]["Bridge"]["columns"]["legacy"] = {"type": "string"}
    del old["tables"]["Bridge"]["columns"]["rstp_enable"]
    old_path = str(tmp_path / "old.ovsschema")
    json.dump(old, open(old_path, "w"))
    path = str(tmp_path / "conf.db")
    db = open_database(path, old_path)
    add_bridge(db, "br0")
    db.transact_local([{"op": "update", "table": "Bridge", "where": [], "row": {"legacy": "x"}}])
    db.storage.close()
    db2 = open_database(path, VSWITCH_SCHEMA)
    assert db2.schema.version == schema["version"]
    br = next(iter(db2.tables["Bridge"].rows.values()))
    assert br.name == "br0" and br.rstp_enable is False and "legacy" not in br.to_dict()
    assert names(db2, "Interface") == ["br0"]
    add_bridge(db2, "br1")                     # refs and indexes work after conversion
    db2.storage.close()
    db3 = open_database(path, VSWITCH_SCHEMA)
    assert names(db3, "Bridge") == ["br0", "br1"]
    assert json.loads(open(path, "rb").read().split(b"\n")[1])["version"] == schema["version"]


def test_write_after_close_is_io_error(tmp_path):
    db = open_database(str(tmp_path / "conf.db"), VSWITCH_SCHEMA)
    db.storage.close()
    res = db.transact_local([{"op": "insert", "table": "Open_vSwitch", "row": {}}])
    assert res[-1]["error"] == "I/O error" and not db.tables["Open_vSwitch"].rows


def test_ephemeral_only_changes_are_not_written(tmp_path):
    path = str(tmp_path / "conf.db")
    db = open_database(path, VSWITCH_SCHEMA)
    add_bridge(db, "br0")
    size = os.path.getsize(path)
    res = db.transact_local([{"op": "update", "table": "Interface", "where": [],
                              "row": {"statistics": ["map", [["rx_packets", 5]]],
                                      "link_state": "up"}}])
    assert res == [{"count": 1}]
    assert os.path.getsize(path) == size
    assert next(iter(db.tables["Interface"].rows.values())).statistics == {"rx_packets": 5}
    db.storage.close()
    iface = next(iter(open_database(path, VSWITCH_SCHEMA).tables["Interface"].rows.values()))
    assert iface.statistics == {} and iface.link_state == frozenset()
