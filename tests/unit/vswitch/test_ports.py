"""Interface types refuse clearly what they cannot open."""

import pytest

from vswitch.ports import PortError, netdev_for


def test_unknown_type():
    with pytest.raises(PortError, match='type "vxlanx" is not supported'):
        netdev_for("vxlanx")


def test_missing_system_device():
    with pytest.raises(PortError, match=r"could not open network device nosuchdev0 \(No such device\)"):
        netdev_for("system").check("nosuchdev0", {})


def test_internal_refuses_existing_device():
    with pytest.raises(PortError, match="exists"):
        netdev_for("internal").check("lo", {})
