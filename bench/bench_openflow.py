"""OpenFlow channel figures: flow-mods/s and packet-in round trips/s.

``python -m bench.bench_openflow [--flows 10000] [--round-trips 2000]``
starts a daemon with one bridge and measures, over the bridge's management
socket (then the same against a private Open vSwitch userspace datapath,
``--no-ovs`` to skip it):

* flow-mods/s: ``ovs-ofctl add-flows`` of N distinct rules (one connection,
  ending with a barrier, so the time includes the data plane obeying), plain
  and as one ``--bundle``;
* packet-in round trips/s: a client sends PACKET_OUT(output:CONTROLLER) and
  waits for the PACKET_IN it causes, one at a time (os-ken's codec on the
  controller side).
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import tempfile
import time

from os_ken.ofproto import ofproto_protocol, ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from bench.trafgen import udp_frame
from vswitch.process import DaemonProcess


def flow_mods_per_second(d: DaemonProcess, bridge: str, n: int, bundle: bool) -> float:
    d.ofctl("del-flows", bridge)
    with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as f:
        for i in range(n):
            f.write(f"priority=100,udp,nw_dst=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255},"
                    f"tp_dst={i % 1000 + 1},actions=output:1\n")
    try:
        args = (["--bundle"] if bundle else [])
        t0 = time.perf_counter()
        d.ofctl("add-flows", bridge, *args, f.name)
        return n / (time.perf_counter() - t0)
    finally:
        os.unlink(f.name)


def _recv_msg(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    while True:
        if len(buf) >= 8:
            (length,) = struct.unpack_from("!H", buf, 2)
            if len(buf) >= length:
                msg = bytes(buf[:length])
                del buf[:length]
                return msg[1], msg
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("switch closed the connection")
        buf += chunk


def packet_in_round_trips(d: DaemonProcess, bridge: str, n: int) -> float:
    dp = ofproto_protocol.ProtocolDesc(of13.OFP_VERSION)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(d.mgmt(bridge)[len("unix:"):])
    buf = bytearray()
    hello = p13.OFPHello(dp)
    hello.serialize()
    sock.sendall(hello.buf)
    while _recv_msg(sock, buf)[0] != of13.OFPT_HELLO:
        pass
    # Open vSwitch sends a service (management socket) connection no
    # packet-ins until it asks for them
    ask = p13.OFPSetAsync(dp, packet_in_mask=[0x7, 0x7], port_status_mask=[0, 0],
                          flow_removed_mask=[0, 0])
    ask.serialize()
    sock.sendall(ask.buf)
    frame = udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2")
    out = p13.OFPPacketOut(dp, buffer_id=of13.OFP_NO_BUFFER, in_port=of13.OFPP_CONTROLLER,
                           actions=[p13.OFPActionOutput(of13.OFPP_CONTROLLER, 0xffff)],
                           data=frame)
    out.serialize()
    wire = bytes(out.buf)
    t0 = time.perf_counter()
    for _ in range(n):
        sock.sendall(wire)
        while _recv_msg(sock, buf)[0] != of13.OFPT_PACKET_IN:
            pass
    rate = n / (time.perf_counter() - t0)
    sock.close()
    return rate


def measure(switch, bridge: str, flows: int, round_trips: int) -> tuple[float, float, float]:
    """(flow-mods/s plain, flow-mods/s bundled, packet-in round trips/s)."""
    return (flow_mods_per_second(switch, bridge, flows, bundle=False),
            flow_mods_per_second(switch, bridge, flows, bundle=True),
            packet_in_round_trips(switch, bridge, round_trips))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flows", type=int, default=10_000)
    p.add_argument("--round-trips", type=int, default=2_000)
    p.add_argument("--no-ovs", action="store_true",
                   help="skip the same measurements against Open vSwitch's userspace datapath")
    a = p.parse_args(argv)
    bridge = "pvsbrofb"
    rows = []
    with DaemonProcess(log_level="warning") as d:
        d.vsctl("add-br", bridge, "--", "set-fail-mode", bridge, "secure")
        rows.append(("pyvswitch", measure(d, bridge, a.flows, a.round_trips)))
    if not a.no_ovs:
        from bench.ovs import OvsSwitch
        with OvsSwitch() as ovs:
            ovs.vsctl("add-br", bridge, "--", "set", "Bridge", bridge, "datapath_type=netdev",
                      "--", "set-fail-mode", bridge, "secure")
            rows.append(("Open vSwitch (userspace)", measure(ovs, bridge, a.flows,
                                                             a.round_trips)))
    print(f"| switch | flow-mods/s ({a.flows} rules, then barrier) | flow-mods/s (one bundle) "
          "| packet-in round trips/s |")
    print("|---|---|---|---|")
    for name, (plain, bundled, rtt) in rows:
        print(f"| {name} | {plain:,.0f} | {bundled:,.0f} | {rtt:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
