"""Sans-IO JSON-RPC 1.0 connection, as OVSDB speaks it (RFC 7047 section 4).

Bytes and time go in (``receive_bytes(data, now)``, ``handle_timer(now)``);
events (``Request``, ``Notification``, ``Response``, ``ProtocolError``) and
bytes come out (``next_event()``, ``bytes_to_send()``); ``get_timer()`` says
when ``handle_timer`` wants to run.  No sockets, no clock: the asyncio layer
in ``server.py`` is a page long and tests feed captured bytes with a fake clock.

Framing: OVSDB messages are JSON objects written back to back, with no length
prefix or delimiter.  We scan for the end of each top-level value (tracking
strings and nesting), then decode it.  Malformed input becomes a
``ProtocolError`` event (the server replies with an error and carries on);
only an oversized message closes the connection, since we cannot resync.

Inactivity probe (like OVS ``jsonrpc_session``): when ``probe_interval`` is set,
after that long without input we send an "echo" request, and if nothing
arrives for another interval the connection is declared dead.
"""
from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 64 << 20

_OUT_STR = re.compile(rb'[{}\[\]"]')
_IN_STR = re.compile(rb'["\\]')
_START = re.compile(rb'[^\s]')
_OPEN = re.compile(rb'[{\[]')


@dataclass
class Request:
    id: Any
    method: str
    params: list


@dataclass
class Notification:
    method: str
    params: list


@dataclass
class Response:
    id: Any
    result: Any = None
    error: Any = None


@dataclass
class ProtocolError:
    """Malformed input; ``id`` is the request id when one could be read."""
    message: str
    id: Any = None


@dataclass
class ConnectionClosed:
    reason: str


def encode(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()


class JsonRpcConnection:
    # states: the whole state table
    OPEN, PROBING, CLOSED = "OPEN", "PROBING", "CLOSED"

    def __init__(self, now: float = 0.0, probe_interval: float | None = None):
        self.state = self.OPEN
        self._buf = bytearray()
        self._pos = 0          # scan position in _buf
        self._start = -1       # start of current value, -1 if between values
        self._depth = 0
        self._in_str = False
        self._events: deque = deque()
        self._out: list[bytes] = []
        self._next_id = 0
        self.probe_interval = probe_interval
        self._last_rx = now

    # ---------------------------------------------------------------- input
    def receive_bytes(self, data: bytes, now: float) -> None:
        if self.state == self.CLOSED:
            return
        self._last_rx = now
        if self.state == self.PROBING:
            self.state = self.OPEN
        self._buf += data
        self._scan()
        if len(self._buf) > MAX_MESSAGE:
            self._events.append(ProtocolError(f"message longer than {MAX_MESSAGE} bytes"))
            self.close("oversized message")

    def _scan(self) -> None:
        buf = self._buf
        pos = self._pos
        n = len(buf)
        while pos < n:
            if self._start < 0:
                m = _START.search(buf, pos)
                if m is None:
                    pos = n
                    break
                pos = m.start()
                c = buf[pos]
                if c not in (0x7B, 0x5B):   # '{' '['
                    # garbage between messages: skip to the next '{' or '['
                    m2 = _OPEN.search(buf, pos)
                    j = m2.start() if m2 is not None else n
                    bad = bytes(buf[pos:j])
                    self._events.append(ProtocolError(
                        f"syntax error: unexpected {bad[:40]!r} between messages"))
                    pos = j
                    continue
                self._start = pos
                self._depth = 0
                self._in_str = False
            if self._in_str:
                m = _IN_STR.search(buf, pos)
                if m is None:
                    pos = n
                    break
                pos = m.start()
                if buf[pos] == 0x5C:        # backslash
                    if pos + 1 >= n:
                        break               # need the escaped byte
                    pos += 2
                    continue
                self._in_str = False
                pos += 1
                continue
            m = _OUT_STR.search(buf, pos)
            if m is None:
                pos = n
                break
            pos = m.start()
            c = buf[pos]
            pos += 1
            if c == 0x22:
                self._in_str = True
            elif c in (0x7B, 0x5B):
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._decode(bytes(buf[self._start:pos]))
                    del buf[:pos]
                    n = len(buf)
                    pos = 0
                    self._start = -1
        if self._start < 0:
            # nothing pending: drop scanned whitespace/garbage
            del buf[:pos]
            pos = 0
        self._pos = pos

    def _decode(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            self._events.append(ProtocolError(f"syntax error: {str(e)[:200]}"))
            return
        self._events.append(self._classify(msg))

    @staticmethod
    def _classify(msg):
        if not isinstance(msg, dict):
            return ProtocolError("message is not a JSON object")
        mid = msg.get("id")
        if "method" in msg:
            method, params = msg["method"], msg.get("params")
            if not isinstance(method, str):
                return ProtocolError("method is not a string", mid)
            if not isinstance(params, list):
                return ProtocolError("params is not an array", mid)
            if mid is None:
                return Notification(method, params)
            return Request(mid, method, params)
        if "result" in msg or "error" in msg:
            return Response(mid, msg.get("result"), msg.get("error"))
        return ProtocolError("message is neither request nor response", mid)

    def next_event(self):
        return self._events.popleft() if self._events else None

    # ---------------------------------------------------------------- timers
    def get_timer(self) -> float | None:
        if self.probe_interval is None or self.state == self.CLOSED:
            return None
        return self._last_rx + self.probe_interval * (1 if self.state == self.OPEN else 2)

    def handle_timer(self, now: float) -> None:
        t = self.get_timer()
        if t is None or now < t:
            return
        if self.state == self.OPEN:
            self.state = self.PROBING
            self.send_request("echo", [])
        else:
            self.close("inactivity probe timeout")

    # ---------------------------------------------------------------- output
    def _send(self, msg: dict) -> None:
        if self.state != self.CLOSED:
            self._out.append(encode(msg))

    def send_request(self, method: str, params: list) -> int:
        self._next_id += 1
        self._send({"id": self._next_id, "method": method, "params": params})
        return self._next_id

    def send_notification(self, method: str, params: list) -> None:
        self._send({"id": None, "method": method, "params": params})

    def send_result(self, id, result) -> None:
        self._send({"id": id, "result": result, "error": None})

    def send_error(self, id, error) -> None:
        self._send({"id": id, "result": None, "error": error})

    def bytes_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    def close(self, reason: str = "closed") -> None:
        if self.state != self.CLOSED:
            self.state = self.CLOSED
            self._events.append(ConnectionClosed(reason))
