"""Our server and the real ovsdb-server 3.1 answer the same requests alike.

Both are started on fresh databases; each request goes to both and the
answers are compared after normalising what legitimately differs (UUIDs,
"details" text, the "syntax" echo ovsdb-server adds).  The real server is the
reference for error names the RFC leaves open.
"""
import json
import re
import socket
import subprocess
import sys
import time

import pytest

from tests.capabilities import require_tools

from .test_ovsdb_server import ROOT

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"



@pytest.fixture(autouse=True)
def _ovsdb_server_installed():
    require_tools("ovsdb-server", package="openvswitch-switch")


def T(*ops):
    return {"id": 1, "method": "transact", "params": ["Open_vSwitch", *ops]}


CASES = [
    T({"op": "insert", "table": "Open_vSwitch", "row": {}}),
    T({"op": "insert", "table": "Bridge", "row": {"name": 5}}),
    T({"op": "insert", "table": "Bridge", "row": {"nope": 5}}),
    T({"op": "insert", "table": "Nope", "row": {}}),
    T({"op": "insert", "table": "Port", "row": {"name": "p"}}),
    T({"op": "insert", "table": "Bridge", "row": {"name": "b", "protocols": "OpenFlow99"}}),
    T({"op": "insert", "table": "Bridge", "row": {"name": "b"}, "uuid-name": "a"},
      {"op": "insert", "table": "Bridge", "row": {"name": "c"}, "uuid-name": "a"}),
    T({"op": "insert", "table": "Bridge", "row": {"name": "br0"}, "uuid-name": "b"},
      {"op": "mutate", "table": "Open_vSwitch", "where": [],
       "mutations": [["bridges", "insert", ["named-uuid", "b"]], ["next_cfg", "+=", 1]]}),
    T({"op": "insert", "table": "Bridge", "row": {"name": "br0"}, "uuid-name": "b"},
      {"op": "mutate", "table": "Open_vSwitch", "where": [],
       "mutations": [["bridges", "insert", ["named-uuid", "b"]]]}),
    T({"op": "select", "table": "Bridge", "where": [["name", "==", "br0"]], "columns": ["name", "ports"]}),
    T({"op": "select", "table": "Bridge", "where": [["name", "<", "a"]]}),
    T({"op": "select", "table": "Bridge", "where": [["nope", "==", "a"]]}),
    T({"op": "select", "table": "Bridge", "where": [["name", "~", "a"]]}),
    T({"op": "select", "table": "Bridge", "where": [], "columns": ["nope"]}),
    T({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg", "cur_cfg"]}),
    T({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "/=", 0]]}),
    T({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "insert", 1]]}),
    T({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["_uuid", "+=", 1]]}),
    T({"op": "mutate", "table": "Open_vSwitch", "where": [],
       "mutations": [["next_cfg", "+=", 9223372036854775807]]}),
    T({"op": "mutate", "table": "Bridge", "where": [], "mutations": [["flood_vlans", "insert", ["set", [1, 4096]]]]}),
    T({"op": "update", "table": "Bridge", "where": [["name", "==", "br0"]],
       "row": {"other_config": ["map", [["a", "b"]]]}}),
    T({"op": "wait", "table": "Bridge", "where": [], "columns": ["name"], "until": "!=", "rows": [],
       "timeout": 0}),
    T({"op": "wait", "table": "Bridge", "where": [], "columns": ["name"], "until": "==",
       "rows": [{"name": "br0"}], "timeout": 0}),
    T({"op": "commit", "durable": True}),
    T({"op": "abort"}),
    T({"op": "assert", "lock": "x"}),
    T({"op": "frob"}),
    T({"op": "insert", "table": "Open_vSwitch", "row": {}}),
    T({"op": "insert", "table": "Interface", "row": {"name": "i", "ofport_request": 0}}),
    T({"op": "insert", "table": "Bridge", "row": {"name": "x", "ports": ["uuid", "11111111-0000-0000-0000-000000000000"]}}),
    T({"op": "insert", "table": "Bridge", "row": {"name": "x", "flood_vlans": ["set", [1, 1]]}}),
    T({"op": "delete", "table": "Bridge", "where": [["name", "==", "br0"]]}),
    T({"op": "update", "table": "Open_vSwitch", "where": [], "row": {"bridges": ["set", []]}},
      {"op": "select", "table": "Bridge", "where": [], "columns": ["name"]}),
    {"id": 2, "method": "transact", "params": ["Nope"]},
    {"id": 2, "method": "frob", "params": []},
    {"id": 3, "method": "monitor_cancel", "params": ["zz"]},
    {"id": 3, "method": "get_schema", "params": ["Nope"]},
    {"id": 3, "method": "list_dbs", "params": []},
    {"id": 3, "method": "echo", "params": [1, "x"]},
    {"id": 3, "method": "lock", "params": ["l"]},
    {"id": 3, "method": "unlock", "params": ["l"]},
]


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def normalise(v):
    if isinstance(v, dict):
        return {("U" if _UUID.match(k) else k): normalise(x) for k, x in v.items()
                if k not in ("details", "syntax")}
    if isinstance(v, str) and _UUID.match(v):
        return "U"
    if isinstance(v, list):
        if len(v) == 2 and v[0] == "uuid":
            return ["uuid", "U"]
        return [normalise(x) for x in v]
    return v


def ask(sock_path, msg):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock_path)
    s.sendall(json.dumps(msg).encode())
    buf, dec = "", json.JSONDecoder()
    while True:
        buf += s.recv(65536).decode()
        try:
            obj, _ = dec.raw_decode(buf)
            s.close()
            return obj
        except ValueError:
            continue


def wait_for(path):
    for _ in range(100):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{path} never came up")


def test_same_answers_as_ovsdb_server(tmp_path):
    real_db, ours_db = str(tmp_path / "real.db"), str(tmp_path / "ours.db")
    real_sock, ours_sock = str(tmp_path / "real.sock"), str(tmp_path / "ours.sock")
    subprocess.run(["ovsdb-tool", "create", real_db, SCHEMA], check=True)
    real = subprocess.Popen(["ovsdb-server", real_db, "--remote=punix:" + real_sock,
                             "--unixctl=" + str(tmp_path / "ctl"), "--no-chdir"],
                            stderr=subprocess.DEVNULL)
    ours = subprocess.Popen([sys.executable, "-m", "vswitch.ovsdb.server", "--db", ours_db,
                             "--remote", "punix:" + ours_sock], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(real_sock)
        wait_for(ours_sock)
        for msg in CASES:
            a, b = normalise(ask(real_sock, msg)), normalise(ask(ours_sock, msg))
            a.pop("result", None) if a.get("error") else None
            b.pop("result", None) if b.get("error") else None
            assert a.get("error") == b.get("error") and a.get("result") == b.get("result"), (msg, a, b)
    finally:
        for p in (real, ours):
            p.terminate()
            p.wait(5)


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(0.15)
        self.s.connect(path)

    def send(self, msg):
        self.s.sendall(json.dumps(msg).encode())

    def drain(self):
        """Every message that arrives within a short quiet period, normalised
        and sorted (notification order across monitors is not specified)."""
        buf, dec, out = "", json.JSONDecoder(), []
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    break
                buf += chunk.decode()
        except socket.timeout:
            pass
        pos = 0
        while pos < len(buf):
            obj, pos = dec.raw_decode(buf, pos)
            out.append(normalise(obj))
        return sorted(out, key=json.dumps)


def monitor_script(path):
    a, b = Conn(path), Conn(path)
    log = []

    def step(conn, msg, who=None):
        conn.send(msg)
        b_out = b.drain() if conn is b else None
        log.append((msg.get("method"), b_out, a.drain()))

    step(b, T({"op": "insert", "table": "Open_vSwitch", "row": {}}))
    step(a, {"id": 1, "method": "monitor_cond", "params": ["Open_vSwitch", "m", {
        "Open_vSwitch": [{"columns": ["bridges", "next_cfg", "external_ids"]}],
        "Bridge": [{"columns": ["name", "ports", "other_config", "fail_mode"],
                    "where": [["name", "!=", "zz"]]}]}]})
    step(b, T({"op": "insert", "table": "Bridge", "row": {"name": "br0"}, "uuid-name": "b"},
              {"op": "mutate", "table": "Open_vSwitch", "where": [],
               "mutations": [["bridges", "insert", ["named-uuid", "b"]], ["next_cfg", "+=", 1]]}))
    step(b, T({"op": "update", "table": "Bridge", "where": [],
               "row": {"other_config": ["map", [["a", "1"], ["b", "2"]]], "fail_mode": "secure"}}))
    step(b, T({"op": "update", "table": "Bridge", "where": [],
               "row": {"other_config": ["map", [["a", "9"], ["c", "3"]]], "fail_mode": ["set", []]}}))
    step(a, {"id": 2, "method": "monitor_cond_change", "params": ["m", "m2", {
        "Bridge": [{"where": [["name", "==", "zz"]]}]}]})
    step(a, {"id": 3, "method": "monitor", "params": ["Open_vSwitch", "v1", {
        "Bridge": {"columns": ["name", "fail_mode"]}}]})
    step(b, T({"op": "update", "table": "Bridge", "where": [], "row": {"fail_mode": "standalone"}}))
    step(a, {"id": 4, "method": "monitor_cond_since", "params": ["Open_vSwitch", "v3", {
        "Bridge": [{"columns": ["name"]}]}, "00000000-0000-0000-0000-000000000000"]})
    step(b, T({"op": "delete", "table": "Bridge", "where": []},
              {"op": "update", "table": "Open_vSwitch", "where": [], "row": {"bridges": ["set", []]}}))
    step(a, {"id": 5, "method": "lock", "params": ["x"]})
    step(b, {"id": 6, "method": "steal", "params": ["x"]})
    step(b, {"id": 7, "method": "unlock", "params": ["x"]})
    return log


def test_same_monitor_updates_as_ovsdb_server(tmp_path):
    real_db, ours_db = str(tmp_path / "real.db"), str(tmp_path / "ours.db")
    real_sock, ours_sock = str(tmp_path / "real.sock"), str(tmp_path / "ours.sock")
    subprocess.run(["ovsdb-tool", "create", real_db, SCHEMA], check=True)
    real = subprocess.Popen(["ovsdb-server", real_db, "--remote=punix:" + real_sock,
                             "--unixctl=" + str(tmp_path / "ctl"), "--no-chdir"],
                            stderr=subprocess.DEVNULL)
    ours = subprocess.Popen([sys.executable, "-m", "vswitch.ovsdb.server", "--db", ours_db,
                             "--remote", "punix:" + ours_sock], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(real_sock)
        wait_for(ours_sock)
        for want, got in zip(monitor_script(real_sock), monitor_script(ours_sock)):
            assert want == got
    finally:
        for p in (real, ours):
            p.terminate()
            p.wait(5)
