"""Server protocol logic driven through sessions with bytes and a fake clock."""
import json

import pytest

from vswitch.ovsdb.db import Database
from vswitch.ovsdb.schema import DbSchema
from vswitch.ovsdb.service import OvsdbService
from .conftest import TEST_SCHEMA


class Client:
    def __init__(self, svc, now=0.0):
        self.s = svc.new_session(now)
        self.next_id = 0

    def send(self, method, params, now=0.0, id=None):
        if id is None:
            self.next_id += 1
            id = self.next_id
        self.s.receive_bytes(json.dumps({"id": id, "method": method, "params": params}).encode(), now)
        return id

    def recv(self):
        data = self.s.bytes_to_send()
        out, dec, i = [], json.JSONDecoder(), 0
        text = data.decode()
        while i < len(text):
            obj, i = dec.raw_decode(text, i)
            out.append(obj)
        return out

    def call(self, method, *params, now=0.0):
        i = self.send(method, list(params), now)
        msgs = self.recv()
        replies = [m for m in msgs if m.get("id") == i and "method" not in m]
        assert len(replies) == 1, msgs
        self.notes = [m for m in msgs if m is not replies[0]]
        return replies[0]


@pytest.fixture
def svc():
    return OvsdbService([Database(DbSchema.from_json(TEST_SCHEMA))])


def ins(table, row):
    return {"op": "insert", "table": table, "row": row}


def test_basic_methods(svc):
    c = Client(svc)
    assert c.call("list_dbs")["result"] == ["T", "_Server"]
    assert c.call("get_schema", "T")["result"]["name"] == "T"
    assert c.call("get_schema", "nope")["error"]["error"] == "unknown database"
    assert c.call("echo", "x", 1)["result"] == ["x", 1]
    assert c.call("frob")["error"] == "unknown method"
    assert c.call("set_db_change_aware", True)["result"] == {}
    assert c.call("transact", "nope", ins("Other", {}))["error"]["error"] == "unknown database"
    r = c.call("transact", "T", ins("Other", {"name": "o"}), {"op": "commit", "durable": False})
    assert r["error"] is None and "uuid" in r["result"][0]


def test_malformed_request_gets_error_and_session_survives(svc):
    c = Client(svc)
    c.s.receive_bytes(b'{"id": 1, "method": "transact", "params": "x"}{]', 0.0)
    msgs = c.recv()
    assert [m["error"]["error"] for m in msgs] == ["syntax error", "syntax error"]
    assert msgs[0]["id"] == 1
    assert c.call("transact", "T", 7)["result"][0]["error"] == "syntax error"
    assert c.call("monitor", "T")["error"]["error"] == "syntax error"
    assert c.call("echo")["result"] == []


def test_server_database(svc):
    c = Client(svc)
    r = c.call("transact", "_Server", {"op": "select", "table": "Database", "where": [],
                                        "columns": ["name", "model", "connected", "leader"]})
    assert sorted(r["result"][0]["rows"], key=lambda x: x["name"]) == [
        {"name": "T", "model": "standalone", "connected": True, "leader": True}]
    r = c.call("monitor_cond", "_Server", "s", {"Database": [{"columns": ["name", "schema"]}]})
    row = list(r["result"]["Database"].values())[0]["initial"]
    assert json.loads(row["schema"])["name"] == "T"
    assert c.call("transact", "_Server", ins("Database", {"name": "x"}))["result"][0]["error"] == "not allowed"


def test_monitor_v1_updates(svc):
    a, b = Client(svc), Client(svc)
    u = b.call("transact", "T", ins("Other", {"name": "o"}))["result"][0]["uuid"][1]
    r = a.call("monitor", "T", "m1", {"Other": {"columns": ["name"]}})
    assert r["result"] == {"Other": {u: {"new": {"name": "o"}}}}
    b.call("transact", "T", {"op": "update", "table": "Other", "where": [], "row": {"name": "p"}})
    assert a.recv() == [{"id": None, "method": "update",
                         "params": ["m1", {"Other": {u: {"old": {"name": "o"}, "new": {"name": "p"}}}}]}]
    b.call("transact", "T", {"op": "delete", "table": "Other", "where": []})
    assert a.recv()[0]["params"][1] == {"Other": {u: {"old": {"name": "p"}}}}
    assert a.call("monitor", "T", "m1", {})["error"]["error"] == "duplicate monitor ID"
    assert a.call("monitor_cancel", "m1")["result"] == {}
    b.call("transact", "T", ins("Other", {"name": "q"}))
    assert a.recv() == []
    assert a.call("monitor_cancel", "m1")["error"] == "unknown monitor"


def test_committer_sees_update_before_reply(svc):
    a = Client(svc)
    a.call("monitor_cond", "T", "m", {"Other": [{}]})
    i = a.send("transact", ["T", ins("Other", {"name": "o"})])
    msgs = a.recv()
    assert msgs[0]["method"] == "update2" and msgs[1]["id"] == i


def test_monitor_cond_update2_and_change(svc):
    a, b = Client(svc), Client(svc)
    r = a.call("monitor_cond", "T", "m", {"Root": [{"columns": ["name", "n", "m", "ints"],
                                                     "where": [["n", ">", 5]]}]})
    assert r["result"] == {}
    res = b.call("transact", "T", ins("Root", {"name": "a", "n": 1}), ins("Root", {"name": "b", "n": 9}))
    ua, ub = (x["uuid"][1] for x in res["result"][:2])
    assert a.recv()[0]["params"] == ["m", {"Root": {ub: {"insert": {"name": "b", "n": 9}}}}]
    # modify: only changed columns, sets/maps as diffs
    b.call("transact", "T", {"op": "update", "table": "Root", "where": [["name", "==", "b"]],
                             "row": {"ints": ["set", [1, 2]], "m": ["map", [["k", "v"]]]}})
    b.call("transact", "T", {"op": "mutate", "table": "Root", "where": [["name", "==", "b"]],
                             "mutations": [["ints", "delete", 1], ["m", "insert", ["map", [["z", "1"]]]]]})
    msgs = a.recv()
    assert msgs[0]["params"][1] == {"Root": {ub: {"modify": {"ints": ["set", [1, 2]],
                                                             "m": ["map", [["k", "v"]]]}}}}
    assert msgs[1]["params"][1] == {"Root": {ub: {"modify": {"ints": 1, "m": ["map", [["z", "1"]]]}}}}
    # a row moving into / out of the condition is an insert / a delete
    b.call("transact", "T", {"op": "update", "table": "Root", "where": [["name", "==", "a"]], "row": {"n": 6}})
    assert a.recv()[0]["params"][1] == {"Root": {ua: {"insert": {"name": "a", "n": 6}}}}
    b.call("transact", "T", {"op": "update", "table": "Root", "where": [["name", "==", "a"]], "row": {"n": 0}})
    assert a.recv()[0]["params"][1] == {"Root": {ua: {"delete": None}}}
    # monitor_cond_change: new condition; rows entering/leaving are reported
    r = a.call("monitor_cond_change", "m", "m2", {"Root": [{"where": [["name", "==", "a"]]}]})
    assert r["result"] == {}
    assert a.notes[0]["params"] == ["m2", {"Root": {ua: {"insert": {"name": "a"}},
                                                     ub: {"delete": None}}}]
    assert a.call("monitor_cancel", "m")["error"] == "unknown monitor"
    assert a.call("monitor_cancel", "m2")["result"] == {}


def test_monitor_cond_since_update3(svc):
    a, b = Client(svc), Client(svc)
    b.call("transact", "T", ins("Other", {"name": "o"}))
    r = a.call("monitor_cond_since", "T", "m", {"Other": [{"where": [True]}]},
               "00000000-0000-0000-0000-000000000000")
    found, last, upd = r["result"]
    assert found is False and len(upd["Other"]) == 1
    assert last == str(svc.dbs["T"].last_txn_id)
    b.call("transact", "T", ins("Other", {"name": "p"}))
    note = a.recv()[0]
    assert note["method"] == "update3" and note["params"][1] == str(svc.dbs["T"].last_txn_id) != last


def test_wait_blocks_until_other_commit(svc):
    a, b = Client(svc), Client(svc)
    wait = {"op": "wait", "table": "Other", "where": [], "columns": ["name"], "until": "==",
            "rows": [{"name": "go"}]}
    i = a.send("transact", ["T", wait, ins("Other", {"name": "after"})], now=0.0)
    assert a.recv() == []
    b.call("transact", "T", ins("Other", {"name": "go"}), now=1.0)
    msgs = a.recv()
    assert msgs[0]["id"] == i and "uuid" in msgs[0]["result"][1]


def test_wait_times_out_on_timer(svc):
    a = Client(svc)
    wait = {"op": "wait", "table": "Other", "where": [], "columns": ["name"], "until": "==",
            "rows": [{"name": "go"}], "timeout": 500}
    i = a.send("transact", ["T", wait], now=10.0)
    assert a.s.get_timer() == 10.5
    a.s.handle_timer(10.4)
    assert a.recv() == []
    a.s.handle_timer(10.5)
    assert a.recv() == [{"id": i, "result": [{"error": "timed out",
                                              "details": '"wait" timed out after 500 ms'}], "error": None}]


def test_cancel(svc):
    a = Client(svc)
    wait = {"op": "wait", "table": "Other", "where": [], "columns": [], "until": "!=", "rows": []}
    i = a.send("transact", ["T", wait])
    a.s.receive_bytes(json.dumps({"id": None, "method": "cancel", "params": [i]}).encode(), 0.0)
    assert a.recv() == [{"id": i, "result": None, "error": "canceled"}]
    assert svc.pending == []


def test_locks(svc):
    a, b, c = Client(svc), Client(svc), Client(svc)
    assert a.call("lock", "L")["result"] == {"locked": True}
    assert b.call("lock", "L")["result"] == {"locked": False}
    assert b.call("lock", "L")["error"]["error"] == "duplicate lock"
    assert a.call("transact", "T", {"op": "assert", "lock": "L"})["result"] == [{}]
    assert b.call("transact", "T", {"op": "assert", "lock": "L"})["result"][0]["error"] == "not owner"
    assert a.call("unlock", "L")["result"] == {}
    assert b.recv() == [{"id": None, "method": "locked", "params": ["L"]}]
    assert c.call("steal", "L")["result"] == {"locked": True}
    assert b.recv() == [{"id": None, "method": "stolen", "params": ["L"]}]
    # the stealer disconnecting hands the lock back to the waiting client
    c.s.close()
    assert b.recv() == [{"id": None, "method": "locked", "params": ["L"]}]
    assert b.call("unlock", "L")["result"] == {}
    assert svc.locks == {}


def test_disconnect_drops_monitors(svc):
    a, b = Client(svc), Client(svc)
    a.call("monitor", "T", "m", {"Other": {}})
    a.s.close()
    b.call("transact", "T", ins("Other", {"name": "x"}))
    assert all(not mons for mons in svc._monitors_by_db.values())


def test_local_commit_reaches_monitors_and_wakes_session(svc):
    a = Client(svc)
    woke = []
    a.s.wakeup = lambda: woke.append(1)
    a.call("monitor_cond", "T", "m", {"Other": [{}]})
    svc.dbs["T"].transact_local([ins("Other", {"name": "daemon"})])
    assert woke and a.recv()[0]["method"] == "update2"


def test_monitor_cond_since_resumes_from_history(svc):
    a, b = Client(svc), Client(svc)
    u1 = b.call("transact", "T", ins("Other", {"name": "one"}))["result"][0]["uuid"][1]
    r = a.call("monitor_cond_since", "T", "m", {"Other": [{}]}, "00000000-0000-0000-0000-000000000000")
    last = r["result"][1]
    a.s.close()                                     # client goes away...
    u2 = b.call("transact", "T", ins("Other", {"name": "two"}))["result"][0]["uuid"][1]
    b.call("transact", "T", {"op": "update", "table": "Other", "where": [["name", "==", "one"]],
                             "row": {"name": "uno"}})
    u3 = b.call("transact", "T", ins("Other", {"name": "tmp"}))["result"][0]["uuid"][1]
    b.call("transact", "T", {"op": "delete", "table": "Other", "where": [["name", "==", "tmp"]]})
    c = Client(svc)                                 # ...and resumes: only the net changes
    r = c.call("monitor_cond_since", "T", "m", {"Other": [{}]}, last)
    found, new_last, upd = r["result"]
    assert found is True and new_last == str(svc.dbs["T"].last_txn_id)
    assert upd == {"Other": {u2: {"insert": {"name": "two"}}, u1: {"modify": {"name": "uno"}}}}
    assert u3 not in upd["Other"]
    r = c.call("monitor_cond_since", "T", "m2", {"Other": [{}]}, new_last)
    assert r["result"] == [True, new_last, {}]


def test_monitor_cond_since_zero_id_gets_snapshot(svc):
    b = Client(svc)
    b.call("transact", "T", ins("Other", {"name": "one"}))
    svc.dbs["T"].history.clear()          # as after a restart: rows, no history
    r = Client(svc).call("monitor_cond_since", "T", "m", {"Other": [{}]},
                         "00000000-0000-0000-0000-000000000000")
    assert r["result"][0] is False and len(r["result"][2]["Other"]) == 1


def test_update2_optional_column_sends_new_value(svc):
    """ovsdb-server sends the new value (not a toggle set) for min 0 max 1
    columns; the ovs IDL relies on it to clear such a column."""
    a, b = Client(svc), Client(svc)
    a.call("monitor_cond", "T", "m", {"Root": [{"columns": ["opt"]}]})
    u = b.call("transact", "T", ins("Root", {"name": "a", "opt": 5}))["result"][0]["uuid"][1]
    assert a.recv()[0]["params"][1] == {"Root": {u: {"insert": {"opt": 5}}}}
    b.call("transact", "T", {"op": "update", "table": "Root", "where": [], "row": {"opt": 6}})
    assert a.recv()[0]["params"][1] == {"Root": {u: {"modify": {"opt": 6}}}}
    b.call("transact", "T", {"op": "update", "table": "Root", "where": [], "row": {"opt": ["set", []]}})
    assert a.recv()[0]["params"][1] == {"Root": {u: {"modify": {"opt": ["set", []]}}}}


def test_pathological_nesting_and_sizes(svc):
    c = Client(svc)
    c.s.receive_bytes(b"[" * 200000 + b"]" * 200000, 0.0)
    c.s.receive_bytes(json.dumps({"id": 1, "method": "transact", "params": [
        "T", {"op": "insert", "table": "Other", "row": {"name": [[[[[[["deep"]]]]]]]}}]}).encode(), 0.0)
    msgs = c.recv()
    assert msgs[0]["error"]["error"] == "syntax error"
    assert msgs[1]["result"][0]["error"] == "syntax error"
    assert c.call("echo", "still here")["result"] == ["still here"]
