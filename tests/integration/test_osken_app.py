"""An unmodified-style os-ken application (simple_switch_13's learning
switch, tests/integration/osken_apps/) connected as the bridge's active
controller makes pings work between namespaces."""

import os
import re
import subprocess
import sys
import time

APP = os.path.join(os.path.dirname(__file__), "osken_apps", "learning_switch_13.py")


def test_osken_learning_switch_drives_the_bridge(daemon, topology, bridge_name, free_tcp_port):
    h1 = topology.add_host("h1", "10.0.12.1/24")
    h2 = topology.add_host("h2", "10.0.12.2/24")
    port = free_tcp_port
    app = subprocess.Popen([sys.executable, APP, str(port)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2)  # the app's listener
        daemon.vsctl("add-br", bridge_name, "--", "set", "Bridge", bridge_name,
                     "protocols=OpenFlow13")
        for h in (h1, h2):
            daemon.vsctl("add-port", bridge_name, h.port)
        daemon.vsctl("set-controller", bridge_name, f"tcp:127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while daemon.vsctl("get", "Controller", bridge_name, "is_connected").stdout.strip() != "true":
            assert time.monotonic() < deadline and app.poll() is None, "os-ken app never connected"
            time.sleep(0.3)
        p = h1.ping(h2.addr, count=4, interval=0.3)
        assert p.returncode == 0, p.stdout
        flows = daemon.ofctl("dump-flows", bridge_name).stdout
        # The app learned both hosts and installed unicast rules for them.
        assert len(re.findall(r"priority=1,in_port=", flows)) >= 2, flows
    finally:
        app.terminate()
        try:
            out, _ = app.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            app.kill()
            out, _ = app.communicate()
    assert "switch connected" in out, out
