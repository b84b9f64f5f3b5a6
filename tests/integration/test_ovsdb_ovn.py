"""Real ovn-controller (Debian ovn-host 23.03) drives our OVSDB server.

Only the management plane is checked here (issue 13 builds the rest): with a
private OVN southbound ovsdb-server as the central, ovn-controller reads
``Open_vSwitch.external_ids``, creates ``br-int`` in our database, registers
its chassis, and creates a geneve tunnel port when a second chassis appears.
"""
import os
import subprocess
import sys
import time

import pytest

from tests.capabilities import require_tools

from .test_ovsdb_server import ROOT



@pytest.fixture(autouse=True)
def _ovn_installed():
    require_tools("ovn-controller", package="ovn-host")
    require_tools("ovn-sbctl", package="ovn-central")
    require_tools("ovsdb-server", package="openvswitch-switch")


def wait_until(fn, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition never became true")


def test_ovn_controller_configures_through_our_server(tmp_path):
    d = str(tmp_path)
    sock, sb = f"{d}/db.sock", f"{d}/sb.sock"
    procs = []
    env = dict(os.environ, OVN_RUNDIR=d, OVS_RUNDIR=d)
    try:
        subprocess.run(["ovsdb-tool", "create", f"{d}/sb.db", "/usr/share/ovn/ovn-sb.ovsschema"], check=True)
        procs.append(subprocess.Popen(["ovsdb-server", f"{d}/sb.db", f"--remote=punix:{sb}",
                                       f"--unixctl={d}/sb.ctl", "--no-chdir"], stderr=subprocess.DEVNULL))
        ours = subprocess.Popen([sys.executable, "-m", "vswitch.ovsdb.server", "--db", f"{d}/conf.db",
                                 "--remote", f"punix:{sock}"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        procs.append(ours)
        assert ours.stdout.readline().strip() == b"ready"
        vsctl = ["ovs-vsctl", f"--db=unix:{sock}", "--timeout=10"]
        subprocess.run(vsctl + ["--no-wait", "init", "--", "set", "open", ".",
                                "external_ids:system-id=hv1", f"external_ids:ovn-remote=unix:{sb}",
                                "external_ids:ovn-encap-type=geneve", "external_ids:ovn-encap-ip=10.0.0.1"],
                       check=True)
        procs.append(subprocess.Popen(["ovn-controller", f"unix:{sock}", f"--log-file={d}/ctl.log",
                                       "--no-chdir"], env=env, stderr=subprocess.DEVNULL))

        def show():
            return subprocess.run(vsctl + ["show"], capture_output=True, text=True).stdout

        wait_until(lambda: "Bridge br-int" in show())
        assert subprocess.run(vsctl + ["get", "bridge", "br-int", "fail_mode"],
                              capture_output=True, text=True).stdout.strip() == "secure"
        sbctl = ["ovn-sbctl", f"--db=unix:{sb}"]
        wait_until(lambda: "Chassis hv1" in subprocess.run(sbctl + ["show"], capture_output=True,
                                                             text=True).stdout)
        subprocess.run(sbctl + ["chassis-add", "hv2", "geneve", "10.0.0.2"], check=True)
        wait_until(lambda: "ovn-hv2-0" in show())
        opts = subprocess.run(vsctl + ["get", "interface", "ovn-hv2-0", "type", "options"],
                              capture_output=True, text=True).stdout.split("\n")
        assert opts[0] == "geneve" and 'remote_ip="10.0.0.2"' in opts[1] and "key=flow" in opts[1]
        subprocess.run(sbctl + ["chassis-del", "hv2"], check=True)
        wait_until(lambda: "ovn-hv2-0" not in show())
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
