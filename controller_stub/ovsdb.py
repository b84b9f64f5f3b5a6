"""The OVSDB side: a small RFC 7047 JSON-RPC client and the tunnel ports.

`tunnel_ops(bridge, existing, desired)` is pure: given the GENEVE ports a
bridge has (name -> (iface uuid, port uuid, options)) and those it should
have (name -> remote IP), it returns the ``transact`` operations that
create, update or remove them, as ovs-vsctl would (new Port + Interface rows
added to ``Bridge.ports``; removed ports are dropped from the set and
garbage-collected).  `OvsdbClient` is the asyncio transport: one JSON-RPC
stream, ``transact`` and ``echo``, answering the server's echo requests.
"""
from __future__ import annotations

import asyncio
import itertools
import json
from typing import Optional

DB = "Open_vSwitch"
TUNNEL_TYPE = "geneve"


class OvsdbError(RuntimeError):
    pass


def _map(d: dict) -> list:
    return ["map", [[k, v] for k, v in sorted(d.items())]]


def tunnel_options(remote_ip: str, local_ip: Optional[str] = None) -> dict:
    opts = {"remote_ip": remote_ip, "key": "flow"}
    if local_ip:
        opts["local_ip"] = local_ip
    return opts


def tunnel_ops(bridge: str, existing: dict, desired: dict, local_ip: Optional[str] = None,
               ) -> list:
    """existing: name -> (iface_uuid, port_uuid, options); desired: name -> remote_ip."""
    ops = []
    new_ports = []
    for i, (name, remote) in enumerate(sorted(desired.items())):
        opts = tunnel_options(remote, local_ip)
        if name in existing:
            if existing[name][2] != opts:
                ops.append({"op": "update", "table": "Interface",
                            "where": [["_uuid", "==", ["uuid", existing[name][0]]]],
                            "row": {"options": _map(opts), "type": TUNNEL_TYPE}})
            continue
        iface, port = f"iface{i}", f"port{i}"
        ops.append({"op": "insert", "table": "Interface", "uuid-name": iface,
                    "row": {"name": name, "type": TUNNEL_TYPE, "options": _map(opts)}})
        ops.append({"op": "insert", "table": "Port", "uuid-name": port,
                    "row": {"name": name, "interfaces": ["named-uuid", iface]}})
        new_ports.append(["named-uuid", port])
    gone = [["uuid", existing[n][1]] for n in sorted(existing) if n not in desired]
    if new_ports:
        ops.append({"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
                    "mutations": [["ports", "insert", ["set", new_ports]]]})
    if gone:
        ops.append({"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
                    "mutations": [["ports", "delete", ["set", gone]]]})
    return ops


def _set(v) -> list:
    if isinstance(v, list) and v and v[0] == "set":
        return v[1]
    return [v]


def _pymap(v) -> dict:
    return {k: val for k, val in v[1]} if isinstance(v, list) and v[0] == "map" else {}


class OvsdbClient:
    def __init__(self):
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._ids = itertools.count(1)
        self._pending: dict = {}
        self._task = None

    async def connect(self, target: str) -> "OvsdbClient":
        kind, _, rest = target.partition(":")
        if kind == "unix":
            self._reader, self._writer = await asyncio.open_unix_connection(rest)
        elif kind == "tcp":
            host, _, port = rest.rpartition(":")
            self._reader, self._writer = await asyncio.open_connection(host, int(port))
        else:
            raise ValueError(f"bad OVSDB target {target!r}")
        self._task = asyncio.ensure_future(self._read_loop())
        return self

    async def close(self):
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()

    async def _read_loop(self):
        dec = json.JSONDecoder()
        buf = ""
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                buf += data.decode()
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        msg, end = dec.raw_decode(buf)
                    except json.JSONDecodeError:
                        break
                    buf = buf[end:]
                    self._dispatch(msg)
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(OvsdbError("connection closed"))
            self._pending.clear()

    def _dispatch(self, msg):
        if msg.get("method") == "echo":
            self._write({"id": msg.get("id"), "result": msg.get("params", []), "error": None})
        elif "id" in msg and msg["id"] in self._pending:
            fut = self._pending.pop(msg["id"])
            if msg.get("error"):
                fut.set_exception(OvsdbError(str(msg["error"])))
            else:
                fut.set_result(msg.get("result"))

    def _write(self, obj):
        self._writer.write(json.dumps(obj).encode())

    async def call(self, method: str, params: list, timeout: float = 10.0):
        i = next(self._ids)
        fut = asyncio.get_event_loop().create_future()
        self._pending[i] = fut
        self._write({"id": i, "method": method, "params": params})
        return await asyncio.wait_for(fut, timeout)

    async def transact(self, ops: list) -> list:
        result = await self.call("transact", [DB, *ops])
        for op, r in zip(ops + [None] * len(result), result):
            if r and r.get("error"):
                raise OvsdbError(f"{r['error']}: {r.get('details', '')} (op {op})")
        return result

    # ---- the controller's needs
    async def tunnel_ports(self, bridge: str) -> dict:
        """The GENEVE ports of `bridge`: name -> (iface uuid, port uuid, options)."""
        res = await self.transact([
            {"op": "select", "table": "Bridge", "where": [["name", "==", bridge]],
             "columns": ["ports"]},
            {"op": "select", "table": "Port", "where": [], "columns": ["_uuid", "name",
                                                                       "interfaces"]},
            {"op": "select", "table": "Interface", "where": [["type", "==", TUNNEL_TYPE]],
             "columns": ["_uuid", "name", "options"]},
        ])
        if not res[0]["rows"]:
            raise OvsdbError(f"no bridge {bridge!r}")
        on_bridge = {u[1] for u in _set(res[0]["rows"][0]["ports"])}
        ifaces = {r["_uuid"][1]: r for r in res[2]["rows"]}
        out = {}
        for p in res[1]["rows"]:
            if p["_uuid"][1] not in on_bridge:
                continue
            for i in _set(p["interfaces"]):
                row = ifaces.get(i[1])
                if row is not None:
                    out[row["name"]] = (row["_uuid"][1], p["_uuid"][1], _pymap(row["options"]))
        return out

    async def ensure_tunnels(self, bridge: str, desired: dict, local_ip=None) -> list:
        ops = tunnel_ops(bridge, await self.tunnel_ports(bridge), desired, local_ip)
        if ops:
            await self.transact(ops)
        return ops

    async def set_fail_mode_secure(self, bridge: str) -> None:
        await self.transact([{"op": "update", "table": "Bridge",
                              "where": [["name", "==", bridge]],
                              "row": {"fail_mode": "secure"}}])
