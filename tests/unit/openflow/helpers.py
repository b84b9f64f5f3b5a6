"""Drive one switch-side OpenFlow channel by hand, like a controller would.

`Harness` wires an OpenFlowConnection to Handlers exactly as the manager's
asyncio session does, but with a fake clock and no sockets; `roundtrip()`
serializes an os-ken message (controller side), feeds the bytes, and returns
the switch's answers parsed back with os-ken's own (controller-side) parsers.
"""
from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_4 as of14

from tests.unit.openflow.fake_pipeline import FakeBackend, make_pipeline
from vswitch.openflow import codec, monitor, nx
from vswitch.openflow.connection import Connected, MessageReceived, OpenFlowConnection
from vswitch.openflow.handlers import Channel, Handlers, SwitchContext
from vswitch.openflow.sp import OFError


def split_messages(data: bytes) -> list[bytes]:
    out = []
    while len(data) >= 8:
        length = struct.unpack_from("!H", data, 2)[0]
        out.append(data[:length])
        data = data[length:]
    return out


def parse_reply(raw: bytes):
    version, msg_type, msg_len, xid = ofproto_parser.header(raw)
    return ofproto_parser.msg(codec.datapath(version), version, msg_type, msg_len, xid, raw)


def hello_bytes(version: int, versions=None) -> bytes:
    return codec.serialize(codec.hello(version, versions or {version}))


class Harness:
    def __init__(self, version=codec.OFP13, allowed=(codec.OFP10, codec.OFP13), switch=None,
                 probe=None):
        self.now = 0.0
        self.pipeline = make_pipeline()
        self.backend = FakeBackend()
        self.switch = switch or SwitchContext("br0", self.pipeline, self.backend, 0x1234)
        if switch is not None:
            self.pipeline, self.backend = switch.pipeline, switch.backend
        self.handlers = Handlers(self.switch)
        self.conn = OpenFlowConnection(set(allowed), self.now, probe_interval=probe)
        self.channel = None
        self.async_out = []
        self.conn.bytes_to_send()  # our HELLO
        self.feed(hello_bytes(version))
        assert self.conn.version == version
        self.dp = codec.datapath(version)
        self.P = self.dp.ofproto_parser

    def _send_async(self, msg):
        self.conn.send(msg)

    def feed(self, data: bytes) -> list[bytes]:
        self.conn.receive_bytes(data, self.now)
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, Connected):
                self.channel = Channel(ev.version, send_async=self._send_async)
                self.switch.channels.append(self.channel)
            elif isinstance(ev, MessageReceived):
                try:
                    for r in self.handlers.handle(self.channel, ev.msg, self.now):
                        self.conn.send(r)
                except OFError as e:
                    self.conn.send_error(e, ev.msg.buf, ev.msg.xid)
        return split_messages(self.conn.bytes_to_send())

    def roundtrip(self, msg, xid=0x77) -> list:
        msg.xid = xid
        msg.serialize()
        return [parse_reply(r) for r in self.feed(bytes(msg.buf))]

    def flow_mod(self, **kw):
        P = self.P
        kw.setdefault("match", P.OFPMatch())
        return P.OFPFlowMod(self.dp, **kw)


# ---- flow monitors (vswitch/openflow/monitor.py), in each version's encoding
def nx_monitor_request(mid, flags, table=0xFF, out_port=0xFFFF, zeros=b"", xid=9) -> bytes:
    body = struct.pack(nx.NX_FLOW_MONITOR_REQUEST_PACK_STR, mid, flags, out_port, 0, table,
                       zeros.ljust(5, b"\0"))
    stats = struct.pack("!HHII4x", 0xFFFF, 0, codec.NX, nx.NXST_FLOW_MONITOR) + body
    return struct.pack("!BBHI", 1, 16, 8 + len(stats), xid) + stats


def of14_monitor_request(version, mid, flags, command=of14.OFPFMC_ADD, table=0xFF, xid=9,
                 out_port=of13.OFPP_ANY, match=b"\x00\x01\x00\x04\x00\x00\x00\x00") -> bytes:
    body = struct.pack(of14.OFP_FLOW_MONITOR_REQUEST_0_PACK_STR, mid, out_port, of13.OFPG_ANY,
                       flags, table, command) + match
    mp = struct.pack("!HH4x", of14.OFPMP_FLOW_MONITOR, 0) + body
    return struct.pack("!BBHI", version, 18, 8 + len(mp), xid) + mp


def onf_monitor_request(mid, flags, xid=9) -> bytes:
    body = struct.pack(nx.ONF_FLOW_MONITOR_REQUEST_PACK_STR, mid, flags, 4, of13.OFPP_ANY,
                       0xFF, b"") + b"\x00\x01\x00\x04\x00\x00\x00\x00"
    mp = struct.pack("!HH4xII", 0xFFFF, 0, codec.ONF, nx.ONF_FLOW_MONITOR) + body
    return struct.pack("!BBHI", 4, 18, 8 + len(mp), xid) + mp


def monitor_request(version, mid, flags, xid=9):
    """A flow monitor request in `version`'s encoding, as ovs-ofctl 3.1
    sends it; flags are NXFMF_* bits (monitor.py)."""
    if version == codec.OFP10:
        return nx_monitor_request(mid, flags, xid=xid)
    if version == codec.OFP13:
        return onf_monitor_request(mid, flags, xid=xid)
    wire = 0
    for bit, nxfmf in monitor._OF14_FLAGS:
        if flags & nxfmf and bit != of14.OFPFMF_NO_ABBREV:
            wire |= bit
    return of14_monitor_request(version, mid, wire, xid=xid)


def monitor_cancel(version, mid, xid=11) -> bytes:
    if version == codec.OFP10:
        return struct.pack("!BBHIII", 1, 4, 20, xid, codec.NX, nx.NXT_FLOW_MONITOR_CANCEL) + \
            struct.pack("!I", mid)
    if version == codec.OFP13:
        return struct.pack("!BBHIII", 4, 4, 20, xid, codec.ONF, nx.ONF_FLOW_MONITOR) + \
            struct.pack("!I", mid)
    return of14_monitor_request(version, mid, 0, command=of14.OFPFMC_DELETE, xid=xid)
