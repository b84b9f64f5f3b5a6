"""Flow monitors against the daemon: the real `ovs-ofctl monitor BRIDGE watch:`
(OpenFlow 1.0, 1.3 and 1.5 encodings) while a second ovs-ofctl adds, modifies
and deletes flows.  The same script runs against a private Open vSwitch 3.1
(`bench.ovs.OvsSwitch`) and what ovs-ofctl prints must be the same lines.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import struct
import subprocess
import time

import pytest

from bench.ovs import OvsSwitch
from tests.unit.openflow.helpers import onf_monitor_request
from vswitch.openflow import monitor, nx
from vswitch.process import require_tool, terminate

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+\|")
INITIAL_FLOW = "priority=5,ip,nw_dst=10.0.0.1,actions=output:1"
CHANGES = [("add-flow", "table=1,priority=7,tcp,tp_dst=80,actions=drop"),
           ("mod-flows", "table=1,tcp,tp_dst=80,actions=output:2"),
           ("add-flow", "table=2,priority=9,udp,actions=output:3"),
           ("del-flows", "table=1")]
#: deletes the OpenFlow message did not ask for: expiry, a group's removal
SIDE_DELETES = [("add-flow", "table=3,priority=1,hard_timeout=2,arp,actions=output:1"),
                ("add-group", "group_id=7,type=all,bucket=output:3"),
                ("add-flow", "table=3,priority=2,icmp,actions=group:7"),
                ("del-groups", "group_id=7")]
SCENARIOS = {   # watch: spec -> (changes, updates expected)
    "": (CHANGES, 4),
    "table=1,!initial": (CHANGES, 3),
    "table=3,!initial,!actions": (SIDE_DELETES, 4),
}


@pytest.fixture(scope="module")
def ovs(tmp_path_factory):
    """Open vSwitch 3.1 with one secure-mode (empty) netdev bridge, in a
    namespace of its own: the userspace datapath's "ovs-netdev" device
    would collide with any other OVS on the host."""
    ns = "pvsfm" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    sw = OvsSwitch(rundir=str(tmp_path_factory.mktemp("ovs")), netns=ns)
    br = "pvsfm" + secrets.token_hex(3)
    try:
        sw.start()
        sw.vsctl("add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
                 "fail-mode=secure")
        _wait_for(lambda: os.path.exists(sw.mgmt(br)[len("unix:"):]))
        yield sw, br
    finally:
        sw.cleanup()
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture
def pyvswitch(daemon, bridge_name):
    daemon.vsctl("add-br", bridge_name, "--", "set-fail-mode", bridge_name, "secure")
    yield daemon, bridge_name
    daemon.vsctl("del-br", bridge_name)


def watch(mgmt: str, version: str, spec: str, workdir: str, changes,
          n_updates: int) -> list[str]:
    """What `ovs-ofctl monitor mgmt watch:spec` prints (initial reply on
    stdout, updates on stderr, log lines dropped) while `changes` run."""
    ofctl = require_tool("ovs-ofctl", "openvswitch-common")
    out_path, err_path = os.path.join(workdir, "mon.out"), os.path.join(workdir, "mon.err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        mon = subprocess.Popen([ofctl, "-O", version, f"--unixctl={workdir}/mon.ctl",
                                "monitor", mgmt, f"watch:{spec}"],
                               stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: "reply" in _read(out_path) or mon.poll() is not None)
        assert mon.poll() is None, _read(err_path)
        for command, flow in changes:
            subprocess.run([ofctl, "-O", "OpenFlow13", command, mgmt, flow], check=True,
                           capture_output=True, timeout=20)
        _wait_for(lambda: _read(err_path).count("reply") >= n_updates, timeout=8)
        time.sleep(0.3)                 # nothing more should come
    finally:
        terminate(mon, 5)
    lines = _read(out_path).splitlines() + _read(err_path).splitlines()
    return [ln for ln in lines if ln and not _LOG_LINE.match(ln)]


def _read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def _wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("version", ["OpenFlow10", "OpenFlow13", "OpenFlow15"])
@pytest.mark.parametrize("spec", list(SCENARIOS), ids=["all", "table1", "expiry-group"])
def test_monitor_prints_what_ovs_prints(pyvswitch, ovs, tmp_path, version, spec):
    changes, n_updates = SCENARIOS[spec]
    seen = {}
    for name, (sw, br) in {"pyvswitch": pyvswitch, "ovs": ovs}.items():
        mgmt = sw.mgmt(br)
        for command, arg in (("del-flows", None), ("del-groups", None),
                             ("add-flow", INITIAL_FLOW)):
            subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", command, mgmt,
                            *([arg] if arg else [])], check=True, timeout=20)
        workdir = tmp_path / name
        workdir.mkdir()
        seen[name] = watch(mgmt, version, spec, str(workdir), changes, n_updates)
    assert seen["pyvswitch"] == seen["ovs"]
    assert sum("event=" in ln for ln in seen["ovs"]) == n_updates + (spec == "")


def _messages(sock, buf: bytearray):
    """Complete OpenFlow messages read so far (blocking until one arrives)."""
    while True:
        if len(buf) >= 8:
            length = struct.unpack_from("!H", buf, 2)[0]
            if len(buf) >= length:
                msg = bytes(buf[:length])
                del buf[:length]
                return msg
        data = sock.recv(1 << 16)
        if not data:
            raise EOFError("switch closed the connection")
        buf += data


def test_monitor_that_stops_reading_is_paused_and_refreshed(pyvswitch, tmp_path):
    """A controller (OF1.3, ONF encoding) that does not read while 6000
    flows are added: the daemon pauses its monitor, and once it reads again
    sends the rules it missed and "resumed" - every rule reported exactly once."""
    daemon, br = pyvswitch
    n = 6000
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(daemon.mgmt(br)[len("unix:"):])
    sock.settimeout(20)
    try:
        sock.sendall(struct.pack("!BBHIHHI", 4, 0, 16, 1, 1, 8, 1 << 4))   # HELLO, OF1.3
        sock.sendall(onf_monitor_request(1, monitor.ADD | monitor.ACTIONS, xid=2))
        buf = bytearray()
        while _messages(sock, buf)[1] != 19:      # the (empty) monitor reply
            pass
        flows = "\n".join(f"priority=10,ip,nw_dst=10.{i >> 8 & 255}.{i & 255}.1,actions=output:1"
                          for i in range(n))
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", daemon.mgmt(br), "-"],
                       input=flows, text=True, check=True, capture_output=True, timeout=120)
        seen, paused, resumed = [], False, False
        while not resumed:
            msg = _messages(sock, buf)
            if msg[1] == 4:                        # ONFT_FLOW_MONITOR_PAUSED/RESUMED
                exp_type = struct.unpack_from("!I", msg, 12)[0]
                paused |= exp_type == nx.ONF_FLOW_MONITOR_PAUSED
                resumed = exp_type == nx.ONF_FLOW_MONITOR_PAUSED + 1
            elif msg[1] == 19:
                off = 24
                while off < len(msg):
                    length, event = struct.unpack_from("!HH", msg, off)
                    assert event == nx.NXFME_ADDED
                    seen.append(msg[off + 24:off + 24 + 24])    # the match: the rule
                    off += length
            if len(seen) == n and not paused:
                break
        assert paused and resumed
        assert len(seen) == n and len(set(seen)) == n
    finally:
        sock.close()
