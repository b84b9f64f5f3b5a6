"""Sans-IO OpenFlow channel: bytes and time in, bytes and events out.

One `OpenFlowConnection` per TCP/unix stream, switch side.  It never touches a
socket or a clock (STYLE.md §1, like aioquic's QuicConnection and h11's
Connection): the transport calls `receive_bytes(data, now)` and
`handle_timer(now)`, sends whatever `bytes_to_send()` returns, and re-arms a
timer for `get_timer()`.  Decoded messages come out of `next_event()` as
`MessageReceived`; replies go in through `send(msg)`.

The channel itself owns only what OpenFlow says the channel owns:
  * HELLO and version negotiation (version bitmaps, limited by the bridge's
    allowed `protocols`), HELLO_FAILED/INCOMPATIBLE when there is no overlap;
  * framing: partial input is buffered, a header whose length is < 8 cannot be
    resynchronised (BAD_LEN error, then close), a message of the wrong version
    gets BAD_VERSION, undecodable ones the codec's error - always with up to 64
    bytes of the offending message, and the connection stays up;
  * ECHO_REQUEST answers and the inactivity probe (ECHO after `probe_interval`
    of silence, disconnect after another one), as OVS's rconn does.
Everything else is the handlers' business.

States and the only legal moves between them are in `TRANSITIONS`.
"""
from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_3 as of13

from . import codec
from .sp import OFError

ERROR_DATA_MAX = 64
NXET_VENDOR, NXVC_VENDOR_ERROR = 0xB0C2, 0     # OVS include/openflow/nicira-ext.h


class State(enum.Enum):
    HELLO = "hello"            # our HELLO sent, waiting for the peer's
    CONNECTED = "connected"    # version agreed, messages flow
    PROBING = "probing"        # idle too long, ECHO_REQUEST sent, waiting
    CLOSING = "closing"        # flushing a final error; input ignored
    CLOSED = "closed"


# (state, trigger) -> next state.  Anything else is a bug (ProtocolStateError).
TRANSITIONS = {
    (State.HELLO, "hello_ok"): State.CONNECTED,
    (State.HELLO, "hello_bad"): State.CLOSING,
    (State.HELLO, "timeout"): State.CLOSED,
    (State.CONNECTED, "idle"): State.PROBING,
    (State.CONNECTED, "input"): State.CONNECTED,
    (State.PROBING, "input"): State.CONNECTED,
    (State.PROBING, "timeout"): State.CLOSED,
    (State.HELLO, "fatal"): State.CLOSING,
    (State.CONNECTED, "fatal"): State.CLOSING,
    (State.PROBING, "fatal"): State.CLOSING,
    (State.HELLO, "close"): State.CLOSED,
    (State.CONNECTED, "close"): State.CLOSED,
    (State.PROBING, "close"): State.CLOSED,
    (State.CLOSING, "close"): State.CLOSED,
    (State.CLOSED, "close"): State.CLOSED,
}


class ProtocolStateError(RuntimeError):
    pass


# ---- events ----------------------------------------------------------------
@dataclass(frozen=True)
class Connected:
    version: int


@dataclass(frozen=True)
class MessageReceived:
    msg: Any


@dataclass(frozen=True)
class ErrorSent:
    """The channel answered a message with OFPT_ERROR (for logs/tests);
    ``offending``: the whole message it refused."""
    type: int
    code: int
    xid: int
    offending: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True)
class ConnectionClosed:
    reason: str


class OpenFlowConnection:
    def __init__(self, allowed_versions, now: float, *, probe_interval: Optional[float] = 5.0,
                 hello_timeout: float = 10.0):
        self.allowed = set(allowed_versions) & codec.SUPPORTED_VERSIONS
        if not self.allowed:
            raise ValueError("no supported OpenFlow version allowed")
        self.state = State.HELLO
        self.version: Optional[int] = None
        self.probe_interval = probe_interval
        self._hello_deadline = now + hello_timeout
        self._last_rx = now
        self._probe_sent_at: Optional[float] = None
        self._rx = bytearray()
        self._tx = bytearray()
        self._events: deque = deque()
        self._xid = 0x10000000
        # our HELLO goes out at once, at our highest version, with a bitmap
        top = max(self.allowed)
        self._tx += codec.serialize(codec.hello(top, self.allowed))

    # ---- state table
    def _move(self, trigger: str) -> None:
        nxt = TRANSITIONS.get((self.state, trigger))
        if nxt is None:
            raise ProtocolStateError(f"{trigger} in state {self.state}")
        self.state = nxt

    @property
    def closed(self) -> bool:
        return self.state in (State.CLOSING, State.CLOSED)

    # ---- outputs
    def bytes_to_send(self) -> bytes:
        data, self._tx = bytes(self._tx), bytearray()
        if self.state is State.CLOSING and not data:
            self._close("closed after error")
        return data

    def next_event(self):
        return self._events.popleft() if self._events else None

    def get_timer(self) -> Optional[float]:
        if self.state is State.HELLO:
            return self._hello_deadline
        if self.state is State.CONNECTED and self.probe_interval:
            return self._last_rx + self.probe_interval
        if self.state is State.PROBING:
            return self._probe_sent_at + self.probe_interval
        return None

    def next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        return self._xid

    def send(self, msg) -> None:
        """Queue an os-ken message; its xid is kept if set (replies)."""
        if self.closed or self.version is None:
            return
        if msg.xid is None:
            msg.xid = self.next_xid()
        for chunk in codec.encode(msg):
            self._tx += chunk

    def send_error(self, err: OFError, offending: bytes, xid: Optional[int] = None) -> None:
        """OFPT_ERROR carrying up to 64 bytes of the offending message."""
        version = self.version or max(self.allowed)
        etype, ecode = translate_error(version, err.type, err.code)
        if xid is None:
            xid = codec.parse_header(offending)[3] if len(offending) >= codec.HEADER_SIZE else 0
        dp = codec.datapath(version)
        data = bytes(offending[:ERROR_DATA_MAX])
        nx10 = getattr(err, "nx10", None)
        if version == codec.OFP10 and nx10 is not None:
            # OF1.0 has no experimenter errors: Nicira's NXET_VENDOR carries
            # (vendor, type, code) ahead of the offending bytes
            etype, ecode = NXET_VENDOR, NXVC_VENDOR_ERROR
            data = struct.pack("!IHH", codec.NX, *nx10) + data
        if etype == of13.OFPET_HELLO_FAILED:
            data = _error_text(err).encode()
        if etype == of13.OFPET_EXPERIMENTER and version >= codec.OFP13:
            msg = dp.ofproto_parser.OFPErrorMsg(
                dp, type_=etype, code=None, data=data, exp_type=ecode,
                experimenter=getattr(err, "experimenter", codec.NX))
        else:
            msg = dp.ofproto_parser.OFPErrorMsg(dp, type_=etype, code=ecode, data=data)
        msg.xid = xid
        self._tx += codec.serialize(msg)
        self._events.append(ErrorSent(etype, ecode, xid, bytes(offending)))

    def close(self, reason: str = "closed") -> None:
        self._close(reason)

    def _close(self, reason: str) -> None:
        if self.state is State.CLOSED:
            return
        self._move("close")
        self._events.append(ConnectionClosed(reason))

    def _fatal(self, reason: str) -> None:
        if self.state not in (State.CLOSING, State.CLOSED):
            self._move("fatal")
            self._events.append(ConnectionClosed(reason))

    # ---- inputs
    def handle_timer(self, now: float) -> None:
        t = self.get_timer()
        if t is None or now < t:
            return
        if self.state is State.HELLO:
            self._move("timeout")
            self._events.append(ConnectionClosed("hello timeout"))
        elif self.state is State.CONNECTED:
            self._move("idle")
            self._probe_sent_at = now
            dp = codec.datapath(self.version)
            self.send(dp.ofproto_parser.OFPEchoRequest(dp, data=b""))
        elif self.state is State.PROBING:
            self._move("timeout")
            self._events.append(ConnectionClosed("inactivity probe timeout"))

    def receive_bytes(self, data: bytes, now: float) -> None:
        if self.closed:
            return
        self._rx += data
        if data:
            self._last_rx = now
            if self.state is State.PROBING:
                self._move("input")
        while not self.closed and len(self._rx) >= codec.HEADER_SIZE:
            version, msg_type, length, xid = codec.parse_header(self._rx)
            if length < codec.HEADER_SIZE:
                # cannot find the next message boundary: report and hang up
                self.send_error(OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_LEN),
                                bytes(self._rx[:codec.HEADER_SIZE]))
                self._fatal("bad message length")
                return
            if len(self._rx) < length:
                return
            buf = bytes(self._rx[:length])
            del self._rx[:length]
            self._receive_message(version, msg_type, xid, buf)

    def _receive_message(self, version, msg_type, xid, buf) -> None:
        if self.state is State.HELLO:
            self._receive_hello(version, msg_type, buf)
            return
        if version != self.version:
            self.send_error(OFError(of13.OFPET_BAD_REQUEST, of13.OFPBRC_BAD_VERSION), buf)
            return
        try:
            msg = codec.parse(buf)
        except OFError as e:
            self.send_error(e, buf)
            return
        name = type(msg).__name__
        if name == "OFPEchoRequest":
            dp = codec.datapath(self.version)
            reply = dp.ofproto_parser.OFPEchoReply(dp, data=msg.data)
            reply.xid = xid
            self.send(reply)
        elif name in ("OFPEchoReply", "OFPHello"):
            pass
        else:
            self._events.append(MessageReceived(msg))

    def _receive_hello(self, version, msg_type, buf) -> None:
        if msg_type != of13.OFPT_HELLO:
            self.send_error(OFError(of13.OFPET_HELLO_FAILED, of13.OFPHFC_INCOMPATIBLE,
                                    "expected HELLO"), buf)
            self._move("hello_bad")
            self._events.append(ConnectionClosed("no HELLO"))
            return
        theirs = codec.parse_hello_versions(buf)
        if theirs is None:
            # no bitmap: the peer supports its version and (we assume) all older
            theirs = set(range(1, version + 1))
        common = theirs & self.allowed
        if not common:
            ours = ", ".join(f"0x{v:02x}" for v in sorted(self.allowed))
            self.version = max(self.allowed)
            self.send_error(OFError(of13.OFPET_HELLO_FAILED, of13.OFPHFC_INCOMPATIBLE,
                                    f"We support versions {ours}, peer supports "
                                    f"0x{version:02x}"), buf)
            self._move("hello_bad")
            self._events.append(ConnectionClosed("version negotiation failed"))
            return
        self.version = max(common)
        self._move("hello_ok")
        self._events.append(Connected(self.version))


def _error_text(err) -> str:
    if isinstance(getattr(err, "msg", None), str):
        return err.msg
    args = getattr(err, "args", ())
    return str(args[2]) if len(args) > 2 and args[2] else ""


# OF1.0 numbers differ from OF1.3 for a few types; everything the handlers raise
# is OF1.3-numbered, translate the common ones (OVS lib/ofp-errors.c has all).
_OF10_FLOW_MOD_FAILED = {1: 0, 3: 1, 4: 2, 5: 3, 6: 4}


def translate_error(version: int, etype: int, code: int) -> tuple[int, int]:
    if version != codec.OFP10:
        return etype, code
    if etype == of13.OFPET_HELLO_FAILED:
        return etype, code
    # codes OpenFlow 1.0 does not have (1.2+'s BAD_SET_TYPE, IS_SLAVE...) would
    # not decode at the peer: the nearest 1.0 code
    if etype == of13.OFPET_BAD_ACTION:
        return etype, code if code <= of10.OFPBAC_BAD_QUEUE else of10.OFPBAC_BAD_ARGUMENT
    if etype == of13.OFPET_BAD_REQUEST:
        return etype, code if code <= of10.OFPBRC_BUFFER_UNKNOWN else of10.OFPBRC_EPERM
    if etype == of13.OFPET_FLOW_MOD_FAILED:
        return 3, _OF10_FLOW_MOD_FAILED.get(code, 5)
    if etype == of13.OFPET_PORT_MOD_FAILED:
        return 4, min(code, 1)
    if etype == of13.OFPET_BAD_MATCH:
        return of13.OFPET_BAD_REQUEST, of13.OFPBRC_EPERM
    return of13.OFPET_BAD_REQUEST, of13.OFPBRC_EPERM
