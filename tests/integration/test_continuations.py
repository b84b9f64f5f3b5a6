"""controller(pause) end to end: a packet from a namespace pauses in the
pipeline, a controller gets NXT_PACKET_IN2 with a continuation, rewrites the
metadata (a register, as OVN's put_dhcp_opts does) or the packet, and
NXT_RESUME sends it on -- or not -- to the other namespace."""

import socket
import struct
import time

from os_ken.ofproto import nicira_ext, ofproto_parser, ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as of13, ofproto_v1_3_parser as p13
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from vswitch.openflow import nx
from vswitch.openflow.handlers import PIF_NXT_PACKET_IN2, _pi2_prop

DP = ofproto_protocol.ProtocolDesc(of13.OFP_VERSION)
NXM_NX_REG0 = 0x00010004       # class NXM1, field 0, 4 bytes


class Controller:
    """A raw OpenFlow 1.3 client on the bridge's management socket."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = bytearray()
        self.send(p13.OFPHello(DP))
        while self.recv().msg_type != of13.OFPT_HELLO:
            pass
        self.send(p13.NXTSetPacketInFormatMsg(DP, PIF_NXT_PACKET_IN2))

    def send(self, msg) -> None:
        msg.serialize()
        self.sock.sendall(msg.buf)

    def recv(self):
        while True:
            if len(self.buf) >= 8:
                version, msg_type, length, xid = struct.unpack_from("!BBHI", self.buf)
                if len(self.buf) >= length:
                    raw = bytes(self.buf[:length])
                    del self.buf[:length]
                    return ofproto_parser.msg(DP, version, msg_type, length, xid, raw)
            chunk = self.sock.recv(65536)
            assert chunk, "switch closed the connection"
            self.buf += chunk

    def packet_in2(self):
        while True:
            m = self.recv()
            if type(m).__name__ == "NXTPacketIn2":
                return m

    def resume(self, pin, packet=None, metadata=b""):
        props = {p.type: p.data for p in pin.properties}
        self.send(nx.NXTResume(DP, properties=[
            _pi2_prop(None, nicira_ext.NXPINT_PACKET, packet or pin.data),
            _pi2_prop(None, nicira_ext.NXPINT_METADATA, props[nicira_ext.NXPINT_METADATA] + metadata),
            _pi2_prop(None, nicira_ext.NXPINT_CONTINUATION, props[nicira_ext.NXPINT_CONTINUATION]),
        ]))

    def close(self):
        self.sock.close()


def test_pause_and_resume_through_the_daemon(daemon, topology, bridge_name):
    h1 = topology.add_host("h1", "10.0.31.1/24")
    h2 = topology.add_host("h2", "10.0.31.2/24")
    daemon.vsctl("add-br", bridge_name, "--", "set-fail-mode", bridge_name, "secure")
    for h in (h1, h2):
        daemon.vsctl("add-port", bridge_name, h.port)
    out2 = daemon.vsctl("get", "Interface", h2.port, "ofport").stdout.strip()
    h1.run("ip", "neigh", "replace", h2.addr, "lladdr", h2.mac, "dev", "eth0")
    for flow in ("table=0,priority=100,udp,actions=controller(userdata=01.02,pause),resubmit(,1)",
                 f"table=1,priority=100,reg0=1,actions=output:{out2}"):
        daemon.ofctl("add-flow", bridge_name, flow)
    ctl = Controller(daemon.mgmt(bridge_name)[len("unix:"):])
    sink9, sink8 = h2.udp_sink(9999, idle=4), h2.udp_sink(9998, idle=4)
    try:
        h1.udp_send(h2.addr, 9999, count=3, gap=0.3)
        pins = [ctl.packet_in2() for _ in range(3)]
        assert all(p.userdata == b"\x01\x02" and p.continuation for p in pins)
        ctl.resume(pins[0])                                     # reg0 stays 0: dropped
        ctl.resume(pins[1], metadata=struct.pack("!II", NXM_NX_REG0, 1))
        rewritten = Ether(pins[2].data)
        rewritten[UDP].dport = 9998
        del rewritten[IP].chksum, rewritten[UDP].chksum
        ctl.resume(pins[2], packet=bytes(rewritten), metadata=struct.pack("!II", NXM_NX_REG0, 1))
        # a continuation this bridge never issued: NXR_STALE, and the channel lives on
        props = {p.type: p.data for p in pins[0].properties}
        forged = bytearray(props[nicira_ext.NXPINT_CONTINUATION])
        forged[-1] ^= 0xff
        pins[0].properties = [_pi2_prop(None, nicira_ext.NXPINT_CONTINUATION, bytes(forged))
                              if p.type == nicira_ext.NXPINT_CONTINUATION else p
                              for p in pins[0].properties]
        ctl.resume(pins[0])
        deadline = time.monotonic() + 10
        while True:
            m = ctl.recv()
            if type(m).__name__.startswith("OFPError"):
                break
            assert time.monotonic() < deadline, "no error for a forged continuation"
        assert (m.type, m.exp_type, m.experimenter) == (0xffff, 35, 0x2320)
        assert sink9.count() == 1 and sink8.count() == 1
    finally:
        ctl.close()
