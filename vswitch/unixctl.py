"""The daemon's control socket, speaking OVS's unixctl protocol.

``RUNDIR/pyvswitch.ctl`` takes JSON-RPC 1.0 requests ``{"method": COMMAND,
"params": [ARG, ...], "id": N}`` and answers ``{"result": TEXT, "error":
null, "id": N}`` (or an error string), exactly as ovs-vswitchd's control
socket does, so both ``pyvswitch appctl`` and the real ``ovs-appctl -t
RUNDIR/pyvswitch.ctl COMMAND`` work.

`UnixctlConnection` is the sans-IO part (bytes in, replies out); the asyncio
server is a thin loop around it.  Command functions run in a worker thread
because several of them wait on the datapath thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import Callable

log = logging.getLogger(__name__)

Command = Callable[[list[str]], str]
MAX_REQUEST = 1 << 20


class UnixctlError(Exception):
    pass


class UnixctlConnection:
    """Splits a byte stream into JSON-RPC requests; formats replies."""

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = json.JSONDecoder()
        self._out = bytearray()

    def receive_bytes(self, data: bytes) -> list[tuple[object, str, list]]:
        """Feed bytes; return complete requests as (id, method, params).

        Malformed input raises UnixctlError: the caller answers and closes,
        as OVS does, since the stream cannot be resynchronised.
        """
        self._buf += data.decode("utf-8", errors="replace")
        if len(self._buf) > MAX_REQUEST:
            raise UnixctlError("request too long")
        requests = []
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                return requests
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError as e:
                if e.pos >= len(text) - 1 or "Unterminated" in e.msg:
                    self._buf = text
                    return requests  # wait for more bytes
                raise UnixctlError(f"syntax error: {e.msg}") from None
            self._buf = text[end:]
            if (not isinstance(obj, dict) or not isinstance(obj.get("method"), str)
                    or not isinstance(obj.get("params", []), list)
                    or not all(isinstance(p, str) for p in obj.get("params", []))):
                raise UnixctlError("request is not a JSON-RPC request with string params")
            requests.append((obj.get("id"), obj["method"], obj.get("params", [])))

    def reply(self, req_id: object, result: str | None, error: str | None) -> None:
        self._out += json.dumps({"id": req_id, "result": result,
                                 "error": error}).encode()

    def bytes_to_send(self) -> bytes:
        data, self._out = bytes(self._out), bytearray()
        return data


class UnixctlServer:
    def __init__(self, path: str):
        self.path = path
        self.commands: dict[str, tuple[str, Command]] = {}
        self._server: asyncio.base_events.Server | None = None
        self.register("list-commands", "", lambda _args: "".join(
            f"  {name} {usage}\n".replace(" \n", "\n")
            for name, (usage, _) in sorted(self.commands.items())))

    def register(self, name: str, usage: str, fn: Command) -> None:
        self.commands[name] = (usage, fn)

    async def start(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)  # stale: the pidfile lock proved we own the rundir
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        conn = UnixctlConnection()
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                try:
                    requests = conn.receive_bytes(data)
                except UnixctlError as e:
                    conn.reply(None, None, str(e))
                    writer.write(conn.bytes_to_send())
                    break
                for req_id, method, params in requests:
                    if method not in self.commands:
                        conn.reply(req_id, None, f'"{method}" is not a valid command '
                                                 f'(use "list-commands")')
                        continue
                    try:
                        result = await loop.run_in_executor(
                            None, self.commands[method][1], params)
                        conn.reply(req_id, result, None)
                    except UnixctlError as e:
                        conn.reply(req_id, None, str(e))
                    except Exception as e:
                        log.exception("control command %s failed", method)
                        conn.reply(req_id, None, f"{method} failed: {e}")
                writer.write(conn.bytes_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def call(path: str, method: str, params: list[str], timeout: float = 30.0) -> str:
    """Client side: send one command to a daemon and return its text."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as e:
            raise UnixctlError(f"cannot connect to {path}: {e.strerror} "
                               f"(is the daemon running with this --rundir?)") from None
        sock.sendall(json.dumps({"method": method, "params": params, "id": 0}).encode())
        buf, decoder = "", json.JSONDecoder()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise UnixctlError("daemon closed the connection without a reply")
            buf += chunk.decode()
            try:
                reply, _ = decoder.raw_decode(buf)
                break
            except json.JSONDecodeError:
                continue
    finally:
        sock.close()
    if reply.get("error") is not None:
        raise UnixctlError(str(reply["error"]))
    return reply.get("result") or ""
