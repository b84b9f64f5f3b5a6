"""The daemon as a user meets it: start, refuse a second start, forward
pings and UDP between namespaces with actions=NORMAL, report bad ports,
shut down leaving no links."""

import os
import re
import signal
import subprocess
import sys
import time

from vswitch.pidfile import read_pid
from vswitch.topology import link_exists


def add_bridge(daemon, bridge, topo):
    daemon.vsctl("add-br", bridge)
    for h in topo.hosts.values():
        daemon.vsctl("add-port", bridge, h.port)


def test_second_daemon_on_same_rundir_is_refused(daemon):
    p = subprocess.run([sys.executable, "-m", "vswitch.cli", "run", "--rundir", daemon.rundir],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert f"already running on {daemon.rundir}" in p.stderr
    assert f"pid {daemon.proc.pid}" in p.stderr
    assert daemon.appctl("version").startswith("pyvswitch ")  # first one unharmed


def test_ping_and_udp_cross_the_bridge(daemon, topology, bridge_name):
    for i in (1, 2, 3):
        topology.add_host(f"h{i}", f"10.0.0.{i}/24")
    add_bridge(daemon, bridge_name, topology)
    h1, h2, h3 = topology["h1"], topology["h2"], topology["h3"]
    for a, b in ((h1, h2), (h2, h3), (h3, h1)):
        p = a.ping(b.addr, count=2)
        assert p.returncode == 0, p.stdout + p.stderr + daemon.log_tail()

    # UDP: 200 datagrams from h1, counted by a receiver in h3.
    sink = h3.udp_sink(9999)
    h1.udp_send(h3.addr, 9999, 200)
    assert sink.count() == 200

    flows = daemon.appctl("dpctl/dump-flows")
    assert "packets:" in flows and "actions:" in flows, flows


def test_missing_port_gets_an_error_and_the_daemon_keeps_running(daemon, topology, bridge_name):
    topology.add_host("h1", "10.0.1.1/24")
    topology.add_host("h2", "10.0.1.2/24")
    add_bridge(daemon, bridge_name, topology)
    daemon.vsctl("add-port", bridge_name, "pvsnosuchdev")
    err = daemon.vsctl("get", "Interface", "pvsnosuchdev", "error").stdout
    assert "could not open network device pvsnosuchdev (No such device)" in err
    assert daemon.vsctl("get", "Interface", "pvsnosuchdev", "ofport").stdout.strip() == "-1"
    p = topology["h1"].ping("10.0.1.2", count=2)
    assert p.returncode == 0, p.stdout
    assert daemon.proc.poll() is None


def test_ofports_are_reported(daemon, topology, bridge_name):
    topology.add_host("h1", "10.0.2.1/24")
    topology.add_host("h2", "10.0.2.2/24")
    add_bridge(daemon, bridge_name, topology)
    ofports = {h.port: int(daemon.vsctl("get", "Interface", h.port, "ofport").stdout)
               for h in topology.hosts.values()}
    assert sorted(ofports.values()) == [1, 2]
    assert daemon.vsctl("get", "Interface", bridge_name, "ofport").stdout.strip() == "65534"


def test_sigterm_removes_every_link_and_socket(daemon, topology, bridge_name):
    topology.add_host("h1", "10.0.3.1/24")
    add_bridge(daemon, bridge_name, topology)
    assert link_exists(bridge_name)  # the bridge-local internal (TAP) port
    assert daemon.stop() == 0
    assert not link_exists(bridge_name)
    for leftover in ("pyvswitch.pid", "pyvswitch.ctl", "db.sock", f"{bridge_name}.mgmt"):
        assert not os.path.exists(os.path.join(daemon.rundir, leftover)), leftover
    assert link_exists(topology["h1"].port)  # not ours: untouched


def test_detach_returns_when_ready_and_writes_pidfile(tmp_path):
    rundir = str(tmp_path / "run")
    p = subprocess.run([sys.executable, "-m", "vswitch.cli", "run", "--detach",
                        "--rundir", rundir], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pid = read_pid(os.path.join(rundir, "pyvswitch.pid"))
    try:
        assert pid and f"pid {pid}" in p.stdout
        assert os.path.exists(os.path.join(rundir, "db.sock"))
        assert os.path.exists(os.path.join(rundir, "pyvswitch.log"))
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("detached daemon did not stop on SIGTERM")


def test_openflow_rules_from_ovs_ofctl_change_forwarding(daemon, topology, bridge_name):
    """A drop rule added with ovs-ofctl stops pings at once (cached
    megaflows are revalidated before the barrier reply); deleting it
    brings them back."""
    h1 = topology.add_host("h1", "10.0.4.1/24")
    h2 = topology.add_host("h2", "10.0.4.2/24")
    add_bridge(daemon, bridge_name, topology)
    assert h1.ping(h2.addr, count=2).returncode == 0
    daemon.ofctl("add-flow", bridge_name, "priority=100,icmp,actions=drop")
    assert h1.ping(h2.addr, count=2, wait=1).returncode != 0
    dump = daemon.ofctl("dump-flows", bridge_name).stdout
    (line,) = [ln for ln in dump.splitlines() if "priority=100,icmp actions=drop" in ln]
    assert int(re.search(r"n_packets=(\d+)", line).group(1)) >= 2, dump
    daemon.ofctl("del-flows", bridge_name, "icmp")
    assert h1.ping(h2.addr, count=2).returncode == 0


def test_demo_command():
    p = subprocess.run([sys.executable, "-m", "vswitch.cli", "demo", "--hosts", "2",
                        "--count", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "h1 -> h2 (10.0.0.2): ok" in p.stdout and "all pings passed" in p.stdout


def test_controller_action_runs_in_the_slow_path(daemon, topology, bridge_name):
    """actions=controller,output:2 — the fast path hands such packets back
    (it cannot send packet-ins); each one still reaches h2 exactly once
    and reaches an ovs-ofctl monitor as a packet-in."""
    h1 = topology.add_host("h1", "10.0.5.1/24")
    h2 = topology.add_host("h2", "10.0.5.2/24")
    add_bridge(daemon, bridge_name, topology)
    daemon.ofctl("add-flow", bridge_name, "priority=100,udp,actions=controller,output:2")
    monitor = subprocess.Popen(
        ["ovs-ofctl", "-O", "OpenFlow13", f"--unixctl={daemon.rundir}/ofctl.ctl", "monitor",
         daemon.mgmt(bridge_name), "65534"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        sink = h2.udp_sink(7777)
        # Static neighbour entry: the test is about UDP, not ARP.
        h1.run("ip", "neigh", "add", h2.addr, "lladdr", h2.mac, "dev", "eth0")
        h1.udp_send(h2.addr, 7777, 5, payload=b"hello", gap=0.05)
        assert sink.count() == 5
        time.sleep(0.5)
    finally:
        monitor.terminate()
        log, _ = monitor.communicate(timeout=10)
    # ovs-ofctl monitor asks for NXT_PACKET_IN2, as with Open vSwitch.
    assert log.count("PACKET_IN") == 5, log + daemon.log_tail()
    assert "udp" in log and "tp_dst=7777" in log


def test_interface_statistics_are_written_back(daemon, topology, bridge_name):
    h1 = topology.add_host("h1", "10.0.6.1/24")
    topology.add_host("h2", "10.0.6.2/24")
    add_bridge(daemon, bridge_name, topology)
    assert h1.ping("10.0.6.2", count=3).returncode == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = daemon.vsctl("get", "Interface", h1.port, "statistics").stdout
        m = re.search(r"rx_packets=(\d+)", stats)
        if m and int(m.group(1)) >= 3:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"statistics never showed the pings: {stats}")


def test_trace_shows_rules_megaflow_and_datapath_actions(daemon, topology, bridge_name):
    topology.add_host("h1", "10.0.8.1/24")
    topology.add_host("h2", "10.0.8.2/24")
    add_bridge(daemon, bridge_name, topology)
    daemon.ofctl("add-flow", bridge_name, "priority=100,in_port=1,icmp,actions=output:2")
    p = subprocess.run([sys.executable, "-m", "vswitch.cli", "trace", "--rundir", daemon.rundir,
                        bridge_name, "in_port=1,icmp,nw_dst=10.0.8.2"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    dp_out = [ln for ln in lines if ln.startswith("Datapath actions:")]
    assert dp_out == ["Datapath actions: output:3"], p.stdout  # ofport 2 = dp port 3
    (mf,) = [ln for ln in lines if ln.startswith("Megaflow:")]
    assert "in_port=1" in mf and "icmp" in mf or "nw_proto=1" in mf
    assert "nw_dst" not in mf  # the rule never looked at it
    bad = subprocess.run([sys.executable, "-m", "vswitch.cli", "trace", "--rundir", daemon.rundir,
                          bridge_name, "in_port=1,nosuchfield=3"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "bad flow" in bad.stderr


def test_vanished_device_is_reported_and_reopened_when_back(daemon, topology, bridge_name):
    h1 = topology.add_host("h1", "10.0.9.1/24")
    h2 = topology.add_host("h2", "10.0.9.2/24")
    add_bridge(daemon, bridge_name, topology)
    subprocess.run(["ip", "link", "del", h2.port], check=True)  # h2's cable cut
    deadline = time.monotonic() + 10
    while "failed" not in daemon.vsctl("get", "Interface", h2.port, "error").stdout:
        assert time.monotonic() < deadline, daemon.log_tail()
        time.sleep(0.3)
    assert daemon.vsctl("get", "Interface", h2.port, "ofport").stdout.strip() == "-1"
    # Re-cable h2 with a new veth of the same name: the port comes back.
    subprocess.run(["ip", "link", "add", h2.port, "type", "veth", "peer", "name", "pvstmp0",
                    "netns", h2.netns], check=True)
    h2.run("ip", "link", "del", "eth0", check=False)
    h2.run("ip", "link", "set", "pvstmp0", "name", "eth0")
    h2.run("ip", "link", "set", "eth0", "address", h2.mac)
    h2.run("ip", "addr", "add", h2.ip, "dev", "eth0")
    h2.run("ip", "link", "set", "eth0", "up")
    subprocess.run(["ip", "link", "set", h2.port, "up"], check=True)
    deadline = time.monotonic() + 10
    while daemon.vsctl("get", "Interface", h2.port, "ofport").stdout.strip() == "-1":
        assert time.monotonic() < deadline, daemon.log_tail()
        time.sleep(0.3)
    assert daemon.vsctl("get", "Interface", h2.port, "error").stdout.strip() == "[]"
    assert h1.ping(h2.addr, count=2).returncode == 0


def test_afxdp_ports_forward(daemon, topology, bridge_name):
    h1 = topology.add_host("h1", "10.0.10.1/24")
    h2 = topology.add_host("h2", "10.0.10.2/24")
    daemon.vsctl("add-br", bridge_name)
    for h in (h1, h2):
        # AF_XDP carries no partial-checksum state: the sender must checksum.
        h.run("ethtool", "-K", "eth0", "tx", "off")
        daemon.vsctl("add-port", bridge_name, h.port, "--", "set", "Interface", h.port,
                     "type=afxdp")
        assert daemon.vsctl("get", "Interface", h.port, "error").stdout.strip() == "[]"
    assert h1.ping(h2.addr, count=3).returncode == 0, daemon.log_tail()


def test_device_that_cannot_be_opened_is_not_retried_until_recreated(daemon, topology,
                                                                      bridge_name):
    """Another program's XDP on the device: AF_XDP cannot attach.  The error is
    reported once, not logged again every second, and a re-created device
    (new ifindex) is tried again."""
    h1 = topology.add_host("h1", "10.0.11.1/24")
    obj = os.path.join(os.path.dirname(__file__), "..", "..", "fastpath", "bpf",
                       "xdp_cache.bpf.o")
    subprocess.run(["ip", "link", "set", "dev", h1.port, "xdpdrv", "obj", obj, "sec", "xdp"],
                   check=True, capture_output=True)
    daemon.vsctl("add-br", bridge_name)
    daemon.vsctl("add-port", bridge_name, h1.port, "--", "set", "Interface", h1.port,
                 "type=afxdp")
    assert daemon.vsctl("get", "Interface", h1.port, "error").stdout.strip() != "[]"
    time.sleep(3.5)      # three check_ports rounds
    with open(daemon.log_path) as f:
        assert f.read().count(f"{h1.port}") <= 2, daemon.log_tail()
    # the device is re-created: a new ifindex, tried again, and now it opens
    subprocess.run(["ip", "link", "del", h1.port], check=True)
    subprocess.run(["ip", "link", "add", h1.port, "type", "veth", "peer", "name", "pvstmp1"],
                   check=True)
    try:
        subprocess.run(["ip", "link", "set", h1.port, "up"], check=True)
        deadline = time.monotonic() + 10
        while daemon.vsctl("get", "Interface", h1.port, "ofport").stdout.strip() == "-1":
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.3)
    finally:
        daemon.vsctl("del-port", bridge_name, h1.port)
        subprocess.run(["ip", "link", "del", h1.port], check=False)
