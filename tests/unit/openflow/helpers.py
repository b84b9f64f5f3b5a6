"""Drive one switch-side OpenFlow channel by hand, like a controller would.

`Harness` wires an OpenFlowConnection to Handlers exactly as the manager's
asyncio session does, but with a fake clock and no sockets; `roundtrip()`
serializes an os-ken message (controller side), feeds the bytes, and returns
the switch's answers parsed back with os-ken's own (controller-side) parsers.
"""
from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_parser

from tests.unit.openflow.fake_pipeline import FakeBackend, make_pipeline
from vswitch.openflow import codec
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
