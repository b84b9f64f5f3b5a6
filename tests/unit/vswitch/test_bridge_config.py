"""Database rows become the desired bridges the reconciler applies."""

from vswitch.bridge import read_config
from vswitch.ovsdb.db import Database
from vswitch.ovsdb.schema import load_schema

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def make_db():
    db = Database(load_schema(SCHEMA))
    ovs = db.ensure_open_vswitch_row()
    res = db.transact_local([
        {"op": "insert", "table": "Interface", "uuid-name": "i0",
         "row": {"name": "br0", "type": "internal"}},
        {"op": "insert", "table": "Port", "uuid-name": "p0",
         "row": {"name": "br0", "interfaces": ["named-uuid", "i0"]}},
        {"op": "insert", "table": "Interface", "uuid-name": "i1",
         "row": {"name": "veth1", "ofport_request": 7, "options": ["map", [["k", "v"]]]}},
        {"op": "insert", "table": "Port", "uuid-name": "p1",
         "row": {"name": "veth1", "interfaces": ["named-uuid", "i1"], "tag": 10,
                 "vlan_mode": "access"}},
        {"op": "insert", "table": "Bridge", "uuid-name": "b",
         "row": {"name": "br0", "fail_mode": "secure",
                 "protocols": ["set", ["OpenFlow13", "OpenFlow15"]],
                 "ports": ["set", [["named-uuid", "p0"], ["named-uuid", "p1"]]]}},
        {"op": "update", "table": "Open_vSwitch",
         "where": [["_uuid", "==", ["uuid", str(ovs)]]],
         "row": {"bridges": ["named-uuid", "b"]}},
    ])
    assert not any("error" in r for r in res if isinstance(r, dict)), res
    return db


def test_read_config():
    cfg = read_config(make_db())
    assert list(cfg) == ["br0"]
    br = cfg["br0"]
    assert br.fail_mode == "secure"
    assert br.protocols == {"OpenFlow13", "OpenFlow15"}
    assert set(br.ifaces) == {"br0", "veth1"}
    assert br.ifaces["br0"].type == "internal"
    v = br.ifaces["veth1"]
    assert (v.type, v.options, v.ofport_request, v.tag, v.vlan_mode) == (
        "", {"k": "v"}, 7, 10, "access")


def test_bridge_not_in_open_vswitch_is_ignored():
    db = Database(load_schema(SCHEMA))
    db.ensure_open_vswitch_row()
    db.transact_local([{"op": "insert", "table": "Bridge", "row": {"name": "orphan"}}])
    assert read_config(db) == {}
