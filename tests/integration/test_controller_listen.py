"""Switches that dial the controller: the daemon's Controller row
(``ovs-vsctl set-controller br tcp:127.0.0.1:PORT``) reaches the
controller's ``ptcp:`` listener and is bound to its host by datapath id."""

import re

from controller_stub.controller import BackgroundController
from controller_stub.state import State


def test_switch_dials_the_controller(daemon, topology, bridge_name, free_tcp_port):
    h1 = topology.add_host("h1", "10.0.5.1/24")
    h2 = topology.add_host("h2", "10.0.5.2/24")
    daemon.vsctl("add-br", bridge_name)
    for h in (h1, h2):
        daemon.vsctl("add-port", bridge_name, h.port)
    dpid = re.search(r"dpid:([0-9a-f]{16})", daemon.ofctl("show", bridge_name).stdout).group(1)
    port = free_tcp_port
    state = State.from_dict({
        "hosts": {"hv1": {"tunnel_ip": "192.168.0.1", "openflow": "listen", "datapath_id": dpid,
                          "bridge": bridge_name}},
        "switches": {"ls": {"vni": 5}},
        "ports": {n: {"switch": "ls", "mac": h.mac, "ips": [h.addr], "host": "hv1",
                      "iface": h.port} for n, h in (("h1", h1), ("h2", h2))}})
    with BackgroundController(state, listen=f"ptcp:{port}:127.0.0.1") as bg:
        daemon.vsctl("set-controller", bridge_name, f"tcp:127.0.0.1:{port}")
        bg.wait_converged(20)
        assert bg.controller.agents["hv1"].total_flow_mods > 0
        assert h1.ping(h2.addr, count=2).returncode == 0
        dump = daemon.ofctl("dump-flows", bridge_name).stdout
        assert "cookie=0xc5" in dump
