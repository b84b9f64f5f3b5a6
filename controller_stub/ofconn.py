"""Controller side of one OpenFlow connection, sans-IO (aioquic / h11 style).

`ControllerConnection` takes bytes and the time in, hands bytes and events
out; it never reads a clock or touches a socket.  It speaks OpenFlow 1.3
(Nicira extensions ride on it) with os-ken's parsers as the codec:

* HELLO and version negotiation (header version, or the switch's version
  bitmap when it sends one); no common version -> HELLO_FAILED error, close.
* FEATURES_REQUEST and a PORT_DESC multipart, then `Connected(datapath_id,
  ports)`: the switch is known and its ports are named.
* ECHO_REQUEST answered; an idle peer is probed with ECHO_REQUEST and
  dropped after a second silent interval (`Closed("inactivity probe")`).
* xid tracking: `send()` returns the xid; errors name it (`Error`);
  `barrier()` returns a xid whose `BarrierDone` lists the errors of every
  message sent since the previous barrier; multipart replies are gathered
  into one `Reply(xid, parts)`.
* Anything else the switch says (PORT_STATUS, PACKET_IN...) is a `Message`.

States and what moves them are one table, `TRANSITIONS`.
"""
from __future__ import annotations

import dataclasses
import struct
from collections import deque
from typing import Optional

from os_ken.ofproto import ofproto_common, ofproto_parser, ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp

VERSION = ofp.OFP_VERSION
HEADER = ofproto_common.OFP_HEADER_PACK_STR
HEADER_SIZE = ofproto_common.OFP_HEADER_SIZE
DP = ofproto_protocol.ProtocolDesc(VERSION)
parser = DP.ofproto_parser

WAIT_HELLO, WAIT_FEATURES, WAIT_PORTS, CONNECTED, CLOSED = (
    "WAIT_HELLO", "WAIT_FEATURES", "WAIT_PORTS", "CONNECTED", "CLOSED")

# (state, message class name) -> next state; a message not in the table for
# the current state is either generic (echo, error, multipart...) or ignored
TRANSITIONS = {
    (WAIT_HELLO, "OFPHello"): WAIT_FEATURES,
    (WAIT_FEATURES, "OFPSwitchFeatures"): WAIT_PORTS,
    (WAIT_PORTS, "OFPPortDescStatsReply"): CONNECTED,
}


# ---------------------------------------------------------------- events
@dataclasses.dataclass
class Connected:
    datapath_id: int
    ports: dict           # port name -> ofport


@dataclasses.dataclass
class Message:
    msg: object


@dataclasses.dataclass
class Reply:
    xid: int
    parts: list           # every multipart reply message of that request


@dataclasses.dataclass
class Error:
    xid: int
    type: int
    code: int
    data: bytes


@dataclasses.dataclass
class BarrierDone:
    xid: int
    errors: list          # Error events for messages sent before the barrier


@dataclasses.dataclass
class Closed:
    reason: str


class ControllerConnection:
    def __init__(self, now: float, probe_interval: Optional[float] = 5.0):
        self.state = WAIT_HELLO
        self.probe_interval = probe_interval
        self.datapath_id: Optional[int] = None
        self.ports: dict = {}
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque = deque()
        self._xid = 0
        self._multipart: dict = {}       # xid -> parts so far
        self._unacked: list = []         # xids sent since the last barrier
        self._errors: dict = {}          # xid -> Error, for those
        self._barriers: dict = {}        # barrier xid -> xids it covers
        self._last_rx = now
        self._probe_sent = False
        self._send_raw(parser.OFPHello(DP))

    # ---- input
    def receive_bytes(self, data: bytes, now: float) -> None:
        if self.state == CLOSED:
            return
        self._last_rx, self._probe_sent = now, False
        self._in += data
        while len(self._in) >= HEADER_SIZE and self.state != CLOSED:
            version, msg_type, length, xid = struct.unpack_from(HEADER, self._in)
            if length < HEADER_SIZE:
                return self._close("bad message length")
            if len(self._in) < length:
                break
            buf = bytes(self._in[:length])
            del self._in[:length]
            self._handle(version, msg_type, length, xid, buf)

    def handle_timer(self, now: float) -> None:
        if self.state == CLOSED or self.probe_interval is None:
            return
        idle = now - self._last_rx
        if idle >= 2 * self.probe_interval and self._probe_sent:
            self._close("inactivity probe")
        elif idle >= self.probe_interval and not self._probe_sent:
            self._probe_sent = True
            self._send_raw(parser.OFPEchoRequest(DP, data=b""))

    # ---- output
    def next_event(self):
        return self._events.popleft() if self._events else None

    def bytes_to_send(self) -> bytes:
        data, self._out = bytes(self._out), bytearray()
        return data

    def get_timer(self) -> Optional[float]:
        if self.state == CLOSED or self.probe_interval is None:
            return None
        return self._last_rx + (2 if self._probe_sent else 1) * self.probe_interval

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    # ---- requests
    def send(self, msg) -> int:
        """Queue an os-ken message; returns its xid."""
        if self.state != CONNECTED:
            raise RuntimeError(f"send in state {self.state}")
        xid = self._send_raw(msg)
        if isinstance(msg, parser.OFPMultipartRequest):
            self._multipart[xid] = []
        else:
            self._unacked.append(xid)
        return xid

    def barrier(self) -> int:
        xid = self._send_raw(parser.OFPBarrierRequest(DP))
        self._barriers[xid], self._unacked = self._unacked, []
        return xid

    def close(self, reason: str = "closed by controller") -> None:
        self._close(reason)

    # ---- internals
    def _send_raw(self, msg, xid: Optional[int] = None) -> int:
        if xid is None:
            self._xid = xid = (self._xid % 0xFFFFFFFF) + 1
        msg.set_xid(xid)
        msg.serialize()
        self._out += msg.buf
        return xid

    def _close(self, reason):
        if self.state != CLOSED:
            self.state = CLOSED
            self._events.append(Closed(reason))

    def _handle(self, version, msg_type, length, xid, buf):
        if self.state == WAIT_HELLO:
            if msg_type != ofp.OFPT_HELLO:
                return self._close(f"expected HELLO, got type {msg_type}")
            if not self._version_ok(version, buf):
                err = parser.OFPErrorMsg(DP, type_=ofp.OFPET_HELLO_FAILED,
                                         code=ofp.OFPHFC_INCOMPATIBLE,
                                         data=b"only OpenFlow 1.3 is supported")
                self._send_raw(err)
                return self._close(f"no common OpenFlow version (peer {version})")
            self.state = TRANSITIONS[(WAIT_HELLO, "OFPHello")]
            self._send_raw(parser.OFPFeaturesRequest(DP))
            return
        if version != VERSION:
            return self._close(f"message with version {version} after negotiating {VERSION}")
        try:
            msg = ofproto_parser.msg(DP, version, msg_type, length, xid, buf)
        except Exception as e:   # os-ken could not parse: tell, keep the session
            self._events.append(Error(xid, -1, -1, f"unparseable type {msg_type}: {e}".encode()))
            return
        name = type(msg).__name__
        nxt = TRANSITIONS.get((self.state, name))
        if name == "OFPEchoRequest":
            self._send_raw(parser.OFPEchoReply(DP, data=msg.data), xid)
        elif name == "OFPEchoReply":
            pass
        elif name == "OFPSwitchFeatures" and nxt:
            self.datapath_id = msg.datapath_id
            self._port_desc_xid = self._send_raw(parser.OFPPortDescStatsRequest(DP, 0))
            self.state = nxt
        elif name == "OFPPortDescStatsReply" and self.state == WAIT_PORTS:
            self.ports.update({_name(p): p.port_no for p in msg.body})
            if not msg.flags & ofp.OFPMPF_REPLY_MORE:
                self.state = nxt
                self._events.append(Connected(self.datapath_id, dict(self.ports)))
        elif name == "OFPErrorMsg":
            err = Error(xid, msg.type, msg.code, bytes(msg.data or b""))
            if any(xid in covered for covered in self._barriers.values()) or xid in self._unacked:
                self._errors[xid] = err
            self._events.append(err)
        elif name == "OFPBarrierReply" and xid in self._barriers:
            covered = self._barriers.pop(xid)
            errs = [self._errors.pop(x) for x in covered if x in self._errors]
            self._events.append(BarrierDone(xid, errs))
        elif isinstance(msg, parser.OFPMultipartReply) and xid in self._multipart:
            self._multipart[xid].append(msg)
            if not msg.flags & ofp.OFPMPF_REPLY_MORE:
                self._events.append(Reply(xid, self._multipart.pop(xid)))
        elif name == "OFPPortStatus":
            p = msg.desc
            if msg.reason == ofp.OFPPR_DELETE:
                self.ports.pop(_name(p), None)
            else:
                self.ports[_name(p)] = p.port_no
            self._events.append(Message(msg))
        else:
            self._events.append(Message(msg))

    @staticmethod
    def _version_ok(version, buf) -> bool:
        try:
            hello = ofproto_parser.msg(ofproto_protocol.ProtocolDesc(min(version, 6)), version,
                                       ofp.OFPT_HELLO, len(buf), 0, buf)
            bitmaps = [e.versions for e in getattr(hello, "elements", None) or []
                       if hasattr(e, "versions")]
        except Exception:
            bitmaps = []
        if bitmaps:
            return VERSION in bitmaps[0]
        return version >= VERSION


def _name(port) -> str:
    n = port.name
    return n.decode(errors="replace").rstrip("\0") if isinstance(n, bytes) else n
