"""The embedded OVSDB server against the real OVS clients, over a real socket.

Each test starts ``python -m vswitch.ovsdb.server`` as a subprocess on a
temporary unix socket (``--bump-cur-cfg`` stands in for the daemon: it assigns
ofports and sets cur_cfg = next_cfg, so ovs-vsctl runs *without* --no-wait),
then drives it with ovs-vsctl, ovsdb-client, the ``ovs`` Python IDL and raw
bytes, and checks what really is in the database -- including after kill -9.
"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.capabilities import require_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ServerProc:
    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.db = str(tmp_path / "conf.db")
        self.sock = str(tmp_path / "db.sock")
        self.remote = "unix:" + self.sock
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vswitch.ovsdb.server", "--db", self.db,
             "--remote", "punix:" + self.sock, "--bump-cur-cfg"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=open(str(self.dir / "server.log"), "ab"))
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", line

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill9()

    def vsctl(self, *args, check=True):
        r = subprocess.run(["ovs-vsctl", "--db=" + self.remote, "--timeout=10", *args],
                           capture_output=True, text=True, timeout=20)
        if check:
            assert r.returncode == 0, r.stderr
            assert "Error detected" not in r.stderr, r.stderr
        return r

    def client(self, *args, check=True):
        r = subprocess.run(["ovsdb-client", "--timeout=10", *args], capture_output=True, text=True, timeout=20)
        if check:
            assert r.returncode == 0, r.stderr
        return r

    def transact(self, *ops):
        out = self.client("transact", self.remote, json.dumps(["Open_vSwitch", *ops])).stdout
        return json.loads(out)

    def select(self, table, columns, where=()):
        return self.transact({"op": "select", "table": table, "where": list(where),
                              "columns": columns})[0]["rows"]


@pytest.fixture
def server(tmp_path):
    s = ServerProc(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_vsctl_workflow(server):
    server.vsctl("init")
    server.vsctl("add-br", "br0")
    server.vsctl("add-port", "br0", "p1", "--", "set", "interface", "p1", "type=internal")
    server.vsctl("add-port", "br0", "p2", "tag=10")
    assert server.vsctl("list-ports", "br0").stdout.split() == ["p1", "p2"]
    assert server.vsctl("get", "port", "p2", "tag").stdout.strip() == "10"
    server.vsctl("set", "bridge", "br0", "other_config:hwaddr=00:11:22:33:44:55", "protocols=OpenFlow13")
    server.vsctl("set-fail-mode", "br0", "secure")
    server.vsctl("set-controller", "br0", "tcp:127.0.0.1:6653")
    rows = server.select("Bridge", ["name", "fail_mode", "protocols", "other_config"])
    assert rows == [{"name": "br0", "fail_mode": "secure", "protocols": "OpenFlow13",
                     "other_config": ["map", [["hwaddr", "00:11:22:33:44:55"]]]}]
    assert server.select("Controller", ["target"]) == [{"target": "tcp:127.0.0.1:6653"}]
    ofports = {r["name"]: r["ofport"] for r in server.select("Interface", ["name", "ofport"])}
    assert ofports == {"br0": 65534, "p1": 1, "p2": 2}
    assert "p2" in server.vsctl("find", "port", "tag=10").stdout
    show = server.vsctl("show").stdout
    assert 'Bridge br0' in show and 'Controller "tcp:127.0.0.1:6653"' in show and "tag: 10" in show
    server.vsctl("del-port", "br0", "p1")
    assert sorted(r["name"] for r in server.select("Interface", ["name"])) == ["br0", "p2"]
    server.vsctl("emer-reset")
    assert server.select("Controller", ["target"]) == []
    server.vsctl("del-br", "br0")
    for t in ("Bridge", "Port", "Interface"):
        assert server.select(t, ["_uuid"]) == []
    r = server.vsctl("add-port", "nobr", "p9", check=False)
    assert r.returncode != 0 and "no bridge named nobr" in r.stderr
    r = server.vsctl("add-br", "a", "--", "add-br", "a", check=False)
    assert r.returncode != 0


def _readline(proc, timeout=10.0) -> str:
    """One line of a child's stdout, without trusting Python's buffering."""
    import select
    buf = proc.__dict__.setdefault("_linebuf", bytearray())
    deadline = time.time() + timeout
    while b"\n" not in buf:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.time()))
        assert r, "timed out waiting for output"
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, "child closed stdout"
        buf += chunk
    i = buf.index(b"\n")
    line = bytes(buf[:i]).decode()
    del buf[:i + 1]
    return line.strip()


def test_ovsdb_client(server):
    server.vsctl("init")
    assert server.client("list-dbs", server.remote).stdout.split() == ["Open_vSwitch", "_Server"]
    assert server.client("get-schema-version", server.remote).stdout.strip() == "8.3.1"
    schema = json.loads(server.client("get-schema", server.remote).stdout)
    assert schema["name"] == "Open_vSwitch" and "Bridge" in schema["tables"]
    server.vsctl("add-br", "br0")
    mon = subprocess.Popen(["ovsdb-client", "monitor", server.remote, "Open_vSwitch", "Bridge", "name",
                            "--format=csv"], stdout=subprocess.PIPE)
    try:
        assert _readline(mon) == "row,action,name"
        assert _readline(mon).endswith(",initial,br0")
        server.vsctl("add-br", "brm")
        assert [_readline(mon) for _ in range(2)] == ["", "row,action,name"]
        assert _readline(mon).endswith(",insert,brm")
    finally:
        mon.kill()
        mon.wait()
    dump = server.client("dump", server.remote, "Open_vSwitch", "Bridge", "name").stdout
    assert "brm" in dump
    res = server.transact({"op": "select", "table": "Nope", "where": []})
    assert res[0]["error"] == "syntax error" and "No table named Nope" in res[0]["details"]
    # backup produces a standalone file the real tool reads
    backup = server.client("backup", server.remote).stdout
    path = str(server.dir / "backup.db")
    open(path, "w").write(backup)
    out = subprocess.run(["ovsdb-tool", "query", path, json.dumps(
        ["Open_vSwitch", {"op": "select", "table": "Bridge", "where": [], "columns": ["name"]}])],
        capture_output=True, text=True, check=True).stdout
    assert sorted(r["name"] for r in json.loads(out)[0]["rows"]) == ["br0", "brm"]


def test_python_idl(server):
    """The ``ovs`` IDL (monitor_cond_since + _Server) reads and writes."""
    server.vsctl("init")
    server.vsctl("add-br", "br0")
    code = r'''
import sys, time, warnings
warnings.simplefilter("ignore")
import ovs.db.idl, ovs.poller
h = ovs.db.idl.SchemaHelper("/usr/share/openvswitch/vswitch.ovsschema"); h.register_all()
idl = ovs.db.idl.Idl(sys.argv[1], h)
def spin(n=1):
    for _ in range(n):
        idl.run(); p = ovs.poller.Poller(); idl.wait(p); p.timer_wait(50); p.block()
t0 = time.time()
while idl.change_seqno == 0 and time.time() - t0 < 10: spin()
print(sorted(b.name for b in idl.tables["Bridge"].rows.values()))
txn = ovs.db.idl.Transaction(idl)
br = txn.insert(idl.tables["Bridge"]); br.name = "br-idl"
next(iter(idl.tables["Open_vSwitch"].rows.values())).addvalue("bridges", br.uuid)
while (st := txn.commit()) == txn.INCOMPLETE:
    idl.run(); p = ovs.poller.Poller(); idl.wait(p); txn.wait(p); p.block()
print(st)
spin(3)
print(sorted(b.name for b in idl.tables["Bridge"].rows.values()))
'''
    r = subprocess.run([sys.executable, "-c", code, server.remote], capture_output=True, text=True, timeout=30)
    assert r.stdout.split("\n")[:3] == ["['br0']", "success", "['br-idl', 'br0']"], r.stderr
    assert sorted(b["name"] for b in server.select("Bridge", ["name"])) == ["br-idl", "br0"]


def _raw(sock_path, payload: bytes, want: int, timeout=5.0):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(payload)
    dec, buf, out = json.JSONDecoder(), "", []
    deadline = time.time() + timeout
    while len(out) < want and time.time() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk.decode()
        while buf.strip():
            try:
                obj, i = dec.raw_decode(buf.lstrip())
            except ValueError:
                break
            out.append(obj)
            buf = buf.lstrip()[i:]
    s.close()
    return out


def test_malformed_input_gets_errors_and_server_survives(server):
    msgs = _raw(server.sock, b'this is not json {"id":1,"method":"transact","params":"x"}'
                             b'{"id":2,"method":"nope","params":[]}'
                             b'{"id":3,"method":"transact","params":["Open_vSwitch",{"op":"insert",'
                             b'"table":"Bridge","row":{"name":5}}]}'
                             b'{"id":4,"method":"transact","params":["Open_vSwitch",{"op":"insert",'
                             b'"table":"Bridge","row":{"nope":5}}]}'
                             b'{"id":5,"method":"transact","params":["Open_vSwitch",{"op":"insert",'
                             b'"table":"Bridge","row":{"name":"x","datapath_type":"netdev",'
                             b'"protocols":"OpenFlow99"}}]}'
                             b'{"id":6,"method":"echo","params":["alive"]}', want=6)
    assert msgs[0]["id"] is None and msgs[0]["error"]["error"] == "syntax error"
    by_id = {m["id"]: m for m in msgs[1:]}
    assert by_id[1]["error"]["error"] == "syntax error"
    assert by_id[2]["error"] == "unknown method"
    assert by_id[3]["result"][0]["error"] == "syntax error"
    assert by_id[4]["result"][0]["error"] == "unknown column"
    assert by_id[5]["result"][0]["error"] == "constraint violation"
    assert by_id[6]["result"] == ["alive"]
    # a client that sends half a message and hangs up does not hurt anyone
    s = socket.socket(socket.AF_UNIX)
    s.connect(server.sock)
    s.sendall(b'{"id":1,"method":"transact","params":["Open_vSwitch",{"op":')
    s.close()
    rng = random.Random(7)
    for _ in range(20):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        s = socket.socket(socket.AF_UNIX)
        s.connect(server.sock)
        s.sendall(junk)
        s.close()
    server.vsctl("init")
    server.vsctl("add-br", "br0")
    assert server.proc.poll() is None


def test_committed_transactions_survive_kill9(server):
    server.vsctl("init")
    server.vsctl("add-br", "br0", "--", "add-port", "br0", "p1")
    server.kill9()
    server.start()
    assert server.vsctl("list-ports", "br0").stdout.split() == ["p1"]
    # many small durable transactions, killed at a random moment: every
    # acknowledged insert is there after restart, nothing half-applied
    script = r'''
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
dec = json.JSONDecoder(); buf = ""
for i in range(int(sys.argv[2]), 10 ** 6):
    op = [{"op": "mutate", "table": "Open_vSwitch", "where": [],
           "mutations": [["external_ids", "insert", ["map", [["k%d" % i, "v"]]]]]},
          {"op": "mutate", "table": "Open_vSwitch", "where": [],
           "mutations": [["next_cfg", "+=", 1]]}]
    s.sendall(json.dumps({"id": i, "method": "transact", "params": ["Open_vSwitch"] + op}).encode())
    while True:
        try:
            obj, j = dec.raw_decode(buf); buf = buf[j:]; break
        except ValueError:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(0)
            buf += chunk.decode()
    assert obj["id"] == i and "error" not in obj["result"][0], obj
    print(i, flush=True)
'''
    base_cfg = server.select("Open_vSwitch", ["next_cfg"])[0]["next_cfg"]
    rng = random.Random()
    n = 0
    for _ in range(4):                                # ~1 000 transactions, 4 crashes
        w = subprocess.Popen([sys.executable, "-c", script, server.sock, str(n)],
                             stdout=subprocess.PIPE, text=True)
        try:
            acked = n - 1
            target = n + rng.randrange(200, 320)
            for line in w.stdout:
                acked = int(line)
                if acked >= target:
                    break
            server.kill9()
        finally:
            w.kill()
            w.wait(10)
        server.start()
        row = server.select("Open_vSwitch", ["external_ids", "next_cfg"])[0]
        keys = {k for k, v in row["external_ids"][1]}
        n = row["next_cfg"] - base_cfg
        assert n >= acked + 1                         # every acknowledged commit survived
        assert keys == {f"k{i}" for i in range(n)}    # and each transaction is all-or-nothing


def test_ovsdbapp(server):
    """An ovsdbapp session (what OpenStack Neutron uses): add_br, add_port,
    db_set in one transaction, reads, del_port."""
    require_module("ovsdbapp")
    server.vsctl("init")
    code = r'''
import sys, warnings
warnings.simplefilter("ignore")
from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl
conn = connection.Connection(idl=connection.OvsdbIdl.from_server(sys.argv[1], "Open_vSwitch"), timeout=10)
api = impl_idl.OvsdbIdl(conn)
api.add_br("br-app").execute(check_error=True)
with api.transaction(check_error=True) as txn:
    txn.add(api.add_port("br-app", "p1"))
    txn.add(api.db_set("Interface", "p1", ("type", "internal"), ("external_ids", {"iface-id": "x"})))
print(api.list_ports("br-app").execute(check_error=True))
print(api.db_get("Interface", "p1", "external_ids").execute(check_error=True))
api.add_port("br-app", "p2").execute(check_error=True)
api.del_port("p1").execute(check_error=True)
print(api.list_ports("br-app").execute(check_error=True))
conn.stop()
'''
    r = subprocess.run([sys.executable, "-c", code, server.remote], capture_output=True, text=True, timeout=60)
    assert r.stdout.split("\n")[:3] == ["['p1']", "{'iface-id': 'x'}", "['p2']"], r.stderr[-2000:]
    assert sorted(i["name"] for i in server.select("Interface", ["name"])) == ["br-app", "p2"]
