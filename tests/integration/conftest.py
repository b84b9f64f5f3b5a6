"""Fixtures that build real namespaces and run real daemons.

Every fixture tears down what it made — namespaces, veths, daemons — also when
the test fails, and checks that the daemon left no link behind.
"""

import os
import secrets
import shutil
import socket

import pytest

from vswitch.process import DaemonProcess
from vswitch.topology import Topology, link_exists


def require(condition: bool, what: str) -> None:
    if not condition:
        pytest.fail(f"missing capability: {what}", pytrace=False)


@pytest.fixture(autouse=True)
def _needs_root():
    require(os.geteuid() == 0, "root (network namespaces, AF_PACKET, XDP)")
    require(os.path.isdir("/var/run/netns") or os.access("/var/run", os.W_OK),
            "network namespaces (/var/run/netns)")
    for tool, pkg in (("ip", "iproute2"), ("ping", "iputils-ping"),
                      ("ovs-vsctl", "openvswitch-common"), ("ovs-ofctl", "openvswitch-common")):
        require(shutil.which(tool) is not None, f"{tool} (Debian package {pkg})")


@pytest.fixture
def topology():
    with Topology() as topo:
        yield topo


@pytest.fixture
def daemon(tmp_path, bridge_name):
    # Depends on bridge_name so that its leftover check runs after the
    # daemon has stopped.
    d = DaemonProcess(rundir=str(tmp_path / "run"))
    os.makedirs(d.rundir)
    d.start()
    try:
        yield d
    finally:
        d.cleanup()
        if d.proc is None and os.path.exists(d.log_path):
            print("daemon log tail:\n" + d.log_tail())


@pytest.fixture
def bridge_name():
    """A bridge name no other test (or host) uses: its TAP device is created."""
    name = "pvsbr" + secrets.token_hex(3)
    yield name
    assert not link_exists(name), f"bridge-local device {name} left behind"


@pytest.fixture
def free_tcp_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def daemons_with_bridge(tmp_path):
    """Start, on call, one daemon per name, each with one new bridge; returns
    {name: (DaemonProcess, bridge)}.  All are stopped at teardown, and each
    bridge's device must be gone then."""
    made = {}

    def start(names, prefix: str = "pvsd") -> dict:
        for name in names:
            d = DaemonProcess(rundir=str(tmp_path / name))
            os.makedirs(d.rundir)
            d.start()
            br = prefix + secrets.token_hex(3)
            made[name] = (d, br)
            d.vsctl("add-br", br)
        return made

    try:
        yield start
    finally:
        for d, br in made.values():
            d.cleanup()
            assert not link_exists(br)
