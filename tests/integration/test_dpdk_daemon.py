"""DPDK ports through the daemon, driven with ovs-vsctl as on OVS-DPDK:
``other_config:dpdk-init=true`` initialises DPDK, ``type=dpdk`` ports name
their device with ``options:dpdk-devargs`` (here ``net_af_packet`` vdevs over
the root ends of veths whose other ends are namespace hosts).  Every way a
dpdk port can fail ends in ``Interface.error`` with the daemon still
answering."""

import time

import pytest

from vswitch.ports.dpdk import DPDK


@pytest.fixture(autouse=True)
def _needs_dpdk():
    if not DPDK.available:
        pytest.fail("missing capability: fastpath.io.dpdk (install libdpdk-dev, pkg-config, "
                    "and rebuild: setup.py build_ext)", pytrace=False)


def add_dpdk_port(daemon, bridge, name, devargs=None):
    args = ["add-port", bridge, name, "--", "set", "Interface", name, "type=dpdk"]
    if devargs is not None:
        args.append(f"options:dpdk-devargs={devargs}")
    daemon.vsctl(*args)


def iface(daemon, name, column):
    return daemon.vsctl("get", "Interface", name, column).stdout.strip()


def ovs(daemon, column):
    return daemon.vsctl("get", "Open_vSwitch", ".", column).stdout.strip()


def still_answers(daemon):
    assert daemon.proc.poll() is None
    assert daemon.appctl("version").startswith("pyvswitch ")
    daemon.vsctl("show")


def test_hosts_ping_through_dpdk_ports(daemon, topology, bridge_name):
    h1 = topology.add_host("h1", "10.0.40.1/24")
    h2 = topology.add_host("h2", "10.0.40.2/24")
    assert ovs(daemon, "dpdk_initialized") == "false"
    daemon.vsctl("set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                 "other_config:dpdk-socket-mem=128")
    assert ovs(daemon, "dpdk_initialized") == "true", daemon.log_tail()
    assert ovs(daemon, "dpdk_version").startswith('"DPDK 22.11')
    assert "dpdk" in ovs(daemon, "iface_types")
    daemon.vsctl("add-br", bridge_name)
    for i, h in enumerate((h1, h2)):
        add_dpdk_port(daemon, bridge_name, f"dpdk{i}", f"net_af_packet{i},iface={h.port}")
        assert iface(daemon, f"dpdk{i}", "error") == "[]", daemon.log_tail()
        assert int(iface(daemon, f"dpdk{i}", "ofport")) > 0
    for a, b in ((h1, h2), (h2, h1)):
        p = a.ping(b.addr, count=3)
        assert p.returncode == 0, p.stdout + daemon.log_tail()
    # UDP too, once the senders checksum themselves (the af_packet PMD
    # carries no partial-checksum state, as with OVS's af_packet/afxdp).
    for h in (h1, h2):
        h.run("ethtool", "-K", "eth0", "tx", "off")
    sink = h2.udp_sink(9999)
    h1.udp_send(h2.addr, 9999, 200)
    assert sink.count() == 200
    # Deleting a port detaches its device: the same devargs work again.
    daemon.vsctl("del-port", bridge_name, "dpdk1")
    assert h1.ping(h2.addr, count=1, wait=1).returncode != 0
    add_dpdk_port(daemon, bridge_name, "dpdk1", f"net_af_packet1,iface={h2.port}")
    assert iface(daemon, "dpdk1", "error") == "[]", daemon.log_tail()
    assert h1.ping(h2.addr, count=2).returncode == 0, daemon.log_tail()
    stats = daemon.vsctl("get", "Interface", "dpdk0", "statistics").stdout
    # SIGTERM still stops a daemon that runs DPDK, promptly and cleanly.
    t0 = time.monotonic()
    assert daemon.stop() == 0, daemon.log_tail()
    assert time.monotonic() - t0 < 10
    assert "rx_packets" in stats


def test_dpdk_port_errors_leave_the_daemon_running(daemon, topology, bridge_name):
    h1 = topology.add_host("h1", "10.0.41.1/24")
    daemon.vsctl("add-br", bridge_name)
    # No dpdk-init yet: the port waits, with a reason ...
    add_dpdk_port(daemon, bridge_name, "dpdk0", f"net_af_packet0,iface={h1.port}")
    assert "DPDK is not initialized (set other_config:dpdk-init=true)" in iface(
        daemon, "dpdk0", "error")
    assert iface(daemon, "dpdk0", "ofport") == "-1"
    still_answers(daemon)
    # ... and opens once DPDK is initialised.
    daemon.vsctl("set", "Open_vSwitch", ".", "other_config:dpdk-init=true")
    assert ovs(daemon, "dpdk_initialized") == "true", daemon.log_tail()
    assert iface(daemon, "dpdk0", "error") == "[]", daemon.log_tail()
    assert int(iface(daemon, "dpdk0", "ofport")) > 0
    cases = {
        "dpdk1": (None, "'dpdk1' is missing 'options:dpdk-devargs'"),
        "dpdk2": ("net_nosuchpmd0", "Error attaching device 'net_nosuchpmd0' to DPDK"),
        "dpdk3": ("net_af_packet3,iface=pvsnosuchdev", "Error attaching device"),
        "dpdk4": (f"net_af_packet0,iface={h1.port}", "already in use"),
    }
    for name, (devargs, want) in cases.items():
        add_dpdk_port(daemon, bridge_name, name, devargs)
        assert want in iface(daemon, name, "error"), daemon.log_tail()
        assert iface(daemon, name, "ofport") == "-1"
        still_answers(daemon)
    # Fixing the devargs opens the port.
    daemon.vsctl("del-port", bridge_name, "dpdk0")
    daemon.vsctl("set", "Interface", "dpdk4", "options:dpdk-devargs=net_tap4,iface=pvsdtap4")
    assert iface(daemon, "dpdk4", "error") == "[]", daemon.log_tail()
    still_answers(daemon)


def test_eal_failure_is_reported_not_fatal(daemon, bridge_name):
    daemon.vsctl("set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                 "other_config:dpdk-extra=--no-such-eal-option")
    assert ovs(daemon, "dpdk_initialized") == "false"
    daemon.vsctl("add-br", bridge_name)
    add_dpdk_port(daemon, bridge_name, "dpdk0", "net_tap0,iface=pvsdtap0")
    err = iface(daemon, "dpdk0", "error")
    assert "DPDK is not initialized: rte_eal_init failed" in err, err
    still_answers(daemon)
