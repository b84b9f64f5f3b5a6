"""Mutated requests never crash the server or produce an internal error.

Seeds are well-formed requests of every method; each case mutates one at
random (JSON structure and raw bytes), feeds it to a live session and checks
the reply is a proper JSON-RPC answer with an RFC 7047 error or a result.
100 000 cases by default (a few seconds), as the issue asks; ``OVSDB_FUZZ_N``
changes the count."""
import json
import os
import random

from vswitch.ovsdb.db import Database
from vswitch.ovsdb.schema import load_schema
from vswitch.ovsdb.service import OvsdbService
from .conftest import VSWITCH_SCHEMA

N = int(os.environ.get("OVSDB_FUZZ_N", "100000"))

SEEDS = [
    ["transact", ["Open_vSwitch",
                  {"op": "insert", "table": "Interface", "row": {"name": "p", "type": "internal",
                                                                  "options": ["map", [["k", "v"]]]},
                   "uuid-name": "i"},
                  {"op": "insert", "table": "Port", "row": {"name": "p", "interfaces": ["named-uuid", "i"],
                                                             "tag": 5, "trunks": ["set", [1, 2]]},
                   "uuid-name": "p"},
                  {"op": "insert", "table": "Bridge", "row": {"name": "b", "ports": ["named-uuid", "p"]},
                   "uuid-name": "b"},
                  {"op": "mutate", "table": "Open_vSwitch", "where": [],
                   "mutations": [["bridges", "insert", ["set", [["named-uuid", "b"]]]], ["next_cfg", "+=", 1]]},
                  {"op": "comment", "comment": "x"}, {"op": "commit", "durable": False}]],
    ["transact", ["Open_vSwitch", {"op": "select", "table": "Bridge", "where": [["name", "==", "b"]],
                                   "columns": ["name", "_uuid", "ports"]},
                  {"op": "update", "table": "Bridge", "where": [["name", "!=", "x"]],
                   "row": {"other_config": ["map", [["a", "b"]]], "fail_mode": "secure"}},
                  {"op": "wait", "table": "Bridge", "where": [], "columns": ["name"], "until": "!=",
                   "rows": [], "timeout": 0},
                  {"op": "delete", "table": "Port", "where": [["tag", ">", 3]]},
                  {"op": "mutate", "table": "Port", "where": [["trunks", "includes", 1]],
                   "mutations": [["trunks", "delete", 1], ["tag", "*=", 2]]},
                  {"op": "assert", "lock": "l"}, {"op": "abort"}]],
    ["monitor", ["Open_vSwitch", "m", {"Bridge": {"columns": ["name"], "select": {"initial": True}}}]],
    ["monitor_cond", ["Open_vSwitch", "mc", {"Interface": [{"columns": ["name", "ofport"],
                                                            "where": [["ofport", ">=", 1]]}]}]],
    ["monitor_cond_since", ["Open_vSwitch", "ms", {"Bridge": [{"where": [True]}]},
                            "00000000-0000-0000-0000-000000000000"]],
    ["monitor_cond_change", ["mc", "mc2", {"Interface": [{"where": [["name", "==", "p"]]}]}]],
    ["monitor_cancel", ["m"]],
    ["lock", ["l"]], ["steal", ["l"]], ["unlock", ["l"]],
    ["get_schema", ["Open_vSwitch"]], ["list_dbs", []], ["echo", ["x"]],
    ["set_db_change_aware", [True]],
    ["transact", ["_Server", {"op": "select", "table": "Database", "where": []}]],
]

ATOMS = [None, True, False, 0, -1, 2 ** 63, 1.5, "", "x", "uuid", "named-uuid", "set", "map",
         "==", "includes", "<", "+=", "insert", "delete", "_uuid", "name",
         ["uuid", "00000000-0000-0000-0000-000000000000"], ["named-uuid", "i"], ["set", []],
         ["map", []], [], {}, "Bridge", "Open_vSwitch", "insert", "select", "mutate"]


def mutate(rng, v, depth=0):
    r = rng.random()
    if r < 0.15:
        return rng.choice(ATOMS)
    if isinstance(v, dict) and v:
        v = dict(v)
        k = rng.choice(list(v))
        r2 = rng.random()
        if r2 < 0.2:
            del v[k]
        elif r2 < 0.3:
            v[rng.choice(["op", "table", "row", "where", "columns", "mutations", "rows", "until",
                          "timeout", "uuid-name", "uuid", "lock", "durable", "select", "zz"])] = rng.choice(ATOMS)
        else:
            v[k] = mutate(rng, v[k], depth + 1)
        return v
    if isinstance(v, list) and v:
        v = list(v)
        i = rng.randrange(len(v))
        r2 = rng.random()
        if r2 < 0.15:
            del v[i]
        elif r2 < 0.25:
            v.insert(i, rng.choice(ATOMS))
        else:
            v[i] = mutate(rng, v[i], depth + 1)
        return v
    return rng.choice(ATOMS)


def test_fuzz_mutated_requests():
    rng = random.Random(1234)
    svc = OvsdbService([Database(load_schema(VSWITCH_SCHEMA))])
    svc.dbs["Open_vSwitch"].ensure_open_vswitch_row()
    sessions = [svc.new_session() for _ in range(3)]
    dec = json.JSONDecoder()
    for i in range(N):
        s = rng.choice(sessions)
        method, params = rng.choice(SEEDS)
        msg = {"id": i, "method": method, "params": params}
        for _ in range(rng.randrange(1, 4)):
            msg = mutate(rng, msg)
        try:
            wire = json.dumps(msg).encode()
        except (TypeError, ValueError):
            continue
        if rng.random() < 0.1 and wire:
            j = rng.randrange(len(wire))
            wire = wire[:j] + bytes([rng.randrange(256)]) + wire[j + 1:]
        s.receive_bytes(wire, float(i))
        out = s.bytes_to_send().decode()
        pos = 0
        while pos < len(out):
            reply, pos = dec.raw_decode(out, pos)
            err = reply.get("error")
            assert not (isinstance(err, dict) and err.get("error") == "internal error"), (msg, reply)
        if rng.random() < 0.01:        # reconnect now and then: drops locks/monitors/pending
            sessions.remove(s)
            s.close()
            sessions.append(svc.new_session(float(i)))
    # the database is still consistent: every strong reference resolves
    db = svc.dbs["Open_vSwitch"]
    for tn, table in db.tables.items():
        for row in table.rows.values():
            for cname, ty in db._ref_cols[tn]:
                from vswitch.ovsdb.datum import refs_of
                for rt, target in refs_of(ty, row[cname], "strong"):
                    assert target in db.tables[rt].rows
    assert len(db.tables["Open_vSwitch"].rows) == 1
