"""Port VLAN semantics (OVS Port table) and the MAC learning table."""

import pytest

from slowpath.mac_learning import MacLearning
from slowpath.port import Port


@pytest.mark.parametrize("port, vid, want_in, out_vlan, want_out", [
    (Port(1, tag=10), None, 10, 10, None),            # access: untagged in/out
    (Port(1, tag=10), 10, None, 10, None),            # access drops tagged input
    (Port(1, tag=10), 0, 10, 10, None),               # priority tag = untagged
    (Port(1), None, 0, 0, None),                      # trunk, native VLAN 0
    (Port(1), 20, 20, 20, 20),
    (Port(1, trunks=frozenset({5})), 20, None, 5, 5),
    (Port(1, tag=7, vlan_mode="native-untagged"), None, 7, 7, None),
    (Port(1, tag=7, vlan_mode="native-untagged"), 9, 9, 9, 9),
    (Port(1, tag=7, vlan_mode="native-tagged"), None, 7, 7, 7),
])
def test_vlan_modes(port, vid, want_in, out_vlan, want_out):
    assert port.input_vlan(vid) == want_in
    assert port.output_vid(out_vlan) == want_out


def test_includes_vlan_and_state():
    assert Port(1, tag=10).includes_vlan(10) and not Port(1, tag=10).includes_vlan(11)
    assert Port(1, trunks=frozenset({1, 2})).includes_vlan(2)
    assert not Port(1, trunks=frozenset({1, 2})).includes_vlan(3)
    assert Port(1).is_up and not Port(1, link_down=True).is_up and not Port(1, blocked=True).is_up
    assert Port(3).dp_port == 3
    with pytest.raises(ValueError):
        Port(1, vlan_mode="bogus")


def test_mac_learning_aging_moves_and_eviction():
    t = MacLearning(idle_time=300, max_entries=2)
    assert t.learn(0xa, 0, 1, 0.0)
    assert not t.learn(0xa, 0, 1, 10.0)      # refresh: no change
    assert t.learn(0xa, 0, 2, 11.0)          # moved
    assert t.lookup(0xa, 0, 100.0) == 2 and t.lookup(0xa, 5, 100.0) is None
    assert t.lookup(0xa, 0, 311.0) is None   # aged out
    t.learn(0xb, 0, 1, 12.0)
    t.learn(0xc, 0, 1, 13.0)                 # evicts the least recently updated (0xa)
    assert len(t) == 2 and t.lookup(0xa, 0, 14.0) is None
    assert t.next_expiry() == 312.0
    t.flush_port(1)
    assert len(t) == 0
