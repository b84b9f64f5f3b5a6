"""The OVSDB operations that create, update and remove tunnel ports."""

from controller_stub.ovsdb import tunnel_ops, tunnel_options


def test_new_ports_are_inserted_and_added_to_the_bridge():
    ops = tunnel_ops("br0", {}, {"gnv-hv2": "10.0.0.2", "gnv-hv3": "10.0.0.3"}, "10.0.0.1")
    inserts = [o for o in ops if o["op"] == "insert"]
    assert [(o["table"], o["row"]["name"]) for o in inserts] == [
        ("Interface", "gnv-hv2"), ("Port", "gnv-hv2"), ("Interface", "gnv-hv3"),
        ("Port", "gnv-hv3")]
    iface = inserts[0]["row"]
    assert iface["type"] == "geneve"
    assert iface["options"] == ["map", [["key", "flow"], ["local_ip", "10.0.0.1"],
                                        ["remote_ip", "10.0.0.2"]]]
    (mutate,) = [o for o in ops if o["op"] == "mutate"]
    assert mutate["where"] == [["name", "==", "br0"]]
    assert mutate["mutations"] == [["ports", "insert", ["set", [["named-uuid", "port0"],
                                                                ["named-uuid", "port1"]]]]]


def test_unchanged_ports_need_nothing_changed_ones_are_updated_gone_ones_removed():
    existing = {"gnv-hv2": ("i2", "p2", tunnel_options("10.0.0.2", "10.0.0.1")),
                "gnv-hv3": ("i3", "p3", tunnel_options("10.0.0.99", "10.0.0.1")),
                "gnv-hv4": ("i4", "p4", tunnel_options("10.0.0.4", "10.0.0.1"))}
    assert tunnel_ops("br0", existing, {"gnv-hv2": "10.0.0.2"}, "10.0.0.1") == [
        {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
         "mutations": [["ports", "delete", ["set", [["uuid", "p3"], ["uuid", "p4"]]]]]}]
    ops = tunnel_ops("br0", existing, {"gnv-hv2": "10.0.0.2", "gnv-hv3": "10.0.0.3",
                                       "gnv-hv4": "10.0.0.4"}, "10.0.0.1")
    (update,) = ops
    assert update["op"] == "update" and update["where"] == [["_uuid", "==", ["uuid", "i3"]]]
    assert ["remote_ip", "10.0.0.3"] in update["row"]["options"][1]
