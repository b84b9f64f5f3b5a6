"""A small JSON-over-HTTP API to change the desired state at run time.

=======  ==================  ==============================================
method   path                body / answer
=======  ==================  ==============================================
GET      /state              the desired state (same format as the file)
PUT      /state              a whole new state; port keys of ports that
                             remain are kept, so only differences are sent
POST     /move               {"port": P, "host": H, "iface": I?}
GET      /status             per host: connected, synced, rules, flow mods
GET      /flows/HOST         the rules the controller holds for HOST
=======  ==================  ==============================================

Changes answer ``{"flow_mods": {host: n}}`` (what the reconciliation sent);
bad input answers 400 with ``{"error": ...}``.  HTTP/1.0-style: one request
per connection, enough for the CLI, curl and tests.
"""
from __future__ import annotations

import asyncio
import json
import logging

from .state import StateError

log = logging.getLogger("controller_stub.api")


class Api:
    def __init__(self, controller):
        self.controller = controller
        self.server = None

    async def start(self, host: str = "127.0.0.1", port: int = 6680) -> int:
        self.server = await asyncio.start_server(self._client, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self):
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def _client(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, _, v in
                       (ln.partition(":") for ln in lines[1:] if ln)}
            n = int(headers.get("content-length", 0))
            body = json.loads(await reader.readexactly(n)) if n else None
            code, answer = self.handle(method, path, body)
        except (StateError, ValueError, KeyError, TypeError) as e:
            code, answer = 400, {"error": str(e)}
        except Exception as e:   # keep serving
            log.exception("api")
            code, answer = 500, {"error": str(e)}
        data = json.dumps(answer, indent=1, sort_keys=True).encode()
        writer.write(f"HTTP/1.0 {code} {'OK' if code == 200 else 'Error'}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                     f"\r\n".encode() + data)
        await writer.drain()
        writer.close()

    def handle(self, method: str, path: str, body):
        c = self.controller
        if method == "GET" and path == "/state":
            return 200, c.state.to_dict()
        if method == "PUT" and path == "/state":
            return 200, {"flow_mods": c.replace_state(body)}
        if method == "POST" and path == "/move":
            return 200, {"flow_mods": c.move_port(body["port"], body["host"], body.get("iface"))}
        if method == "GET" and path == "/status":
            return 200, c.status()
        if method == "GET" and path.startswith("/flows/"):
            agent = c.agents[path[len("/flows/"):]]
            return 200, sorted(str(f) for f in agent.installed.values())
        return 404, {"error": f"no {method} {path}"}
