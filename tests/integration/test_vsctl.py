"""ovs-vsctl against the daemon, without --no-wait: each command returns
only when the data plane is in the state asked (issue 6's interop list)."""

import socket
import time

import pytest

from vswitch.topology import link_exists


@pytest.fixture
def two_hosts(daemon, topology, bridge_name):
    h1 = topology.add_host("h1", "10.0.7.1/24")
    h2 = topology.add_host("h2", "10.0.7.2/24")
    daemon.vsctl("add-br", bridge_name)
    daemon.vsctl("add-port", bridge_name, h1.port)
    daemon.vsctl("add-port", bridge_name, h2.port)
    return h1, h2


def pings(h1, h2):
    return h1.ping(h2.addr, count=1, wait=1).returncode == 0


def test_show_get_list_find(daemon, two_hosts, bridge_name):
    h1, h2 = two_hosts
    show = daemon.vsctl("show").stdout
    assert f"Bridge {bridge_name}" in show and f"Port {h1.port}" in show
    assert daemon.vsctl("get", "Interface", h1.port, "ofport").stdout.strip() == "1"
    assert h1.port in daemon.vsctl("list", "Interface", h1.port).stdout
    found = daemon.vsctl("--bare", "--columns=name", "find", "Interface", "ofport=2").stdout
    assert found.strip() == h2.port
    assert daemon.vsctl("list-ports", bridge_name).stdout.split() == sorted([h1.port, h2.port])
    assert daemon.vsctl("br-exists", bridge_name, check=False).returncode == 0


def test_vlan_tag_set_and_clear(daemon, two_hosts):
    h1, h2 = two_hosts
    assert pings(h1, h2)
    daemon.vsctl("set", "Port", h2.port, "tag=10")
    assert not pings(h1, h2)  # h2 now in VLAN 10, h1 untagged
    daemon.vsctl("set", "Port", h1.port, "tag=10")
    assert pings(h1, h2)
    daemon.vsctl("clear", "Port", h1.port, "tag", "--", "clear", "Port", h2.port, "tag")
    assert pings(h1, h2)


def test_fail_mode_secure_drops_until_standalone(daemon, two_hosts, bridge_name):
    h1, h2 = two_hosts
    assert pings(h1, h2)
    daemon.vsctl("set-fail-mode", bridge_name, "secure")
    assert daemon.vsctl("get-fail-mode", bridge_name).stdout.strip() == "secure"
    assert not pings(h1, h2)
    assert "actions=NORMAL" not in daemon.ofctl("dump-flows", bridge_name).stdout
    daemon.vsctl("del-fail-mode", bridge_name)
    assert pings(h1, h2)


def test_del_port_and_del_br(daemon, two_hosts, bridge_name):
    h1, h2 = two_hosts
    daemon.vsctl("del-port", bridge_name, h2.port)
    assert not pings(h1, h2)
    assert link_exists(h2.port)  # a system port is only released, never deleted
    daemon.vsctl("del-br", bridge_name)
    assert not link_exists(bridge_name)
    assert "Bridge" not in daemon.vsctl("show").stdout


def test_set_controller_connects_and_emer_reset_removes_it(daemon, two_hosts, bridge_name):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(15)
    port = listener.getsockname()[1]
    try:
        daemon.vsctl("set-controller", bridge_name, f"tcp:127.0.0.1:{port}")
        assert daemon.vsctl("get-controller", bridge_name).stdout.strip() == f"tcp:127.0.0.1:{port}"
        conn, _ = listener.accept()
        conn.settimeout(10)
        hello = conn.recv(8)
        assert hello[1] == 0 and hello[0] in (1, 2, 3, 4, 5, 6)  # OFPT_HELLO
        # Answer as an OpenFlow 1.3 controller: the session is up.
        conn.sendall(bytes([4, 0, 0, 8, 0, 0, 0, 1]))
        deadline = time.monotonic() + 10
        while daemon.vsctl("get", "Controller", bridge_name, "is_connected").stdout.strip() != "true":
            assert time.monotonic() < deadline, "Controller.is_connected never became true"
            time.sleep(0.3)
        conn.close()
        daemon.vsctl("emer-reset")
        assert daemon.vsctl("get-controller", bridge_name).stdout.strip() == ""
    finally:
        listener.close()
