"""Quick numbers for the OVSDB engine (issue 6): durable small transactions
per second, and the time to answer a monitor over N rows.

    python -m bench.bench_ovsdb [--rows 10000] [--txns 1000] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from vswitch.ovsdb.db import open_database
from vswitch.ovsdb.server import DEFAULT_SCHEMA
from vswitch.ovsdb.service import OvsdbService


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--txns", type=int, default=1000)
    ap.add_argument("--dir", default=None, help="where to put the db file (default: a temp dir)")
    args = ap.parse_args(argv)
    d = args.dir or tempfile.mkdtemp()

    db = open_database(os.path.join(d, "bench-durable.db"), DEFAULT_SCHEMA)
    db.ensure_open_vswitch_row()
    t = time.perf_counter()
    for i in range(args.txns):
        db.transact_local([{"op": "insert", "table": "QoS", "row": {"type": f"linux-htb-{i}"}}])
    dt = time.perf_counter() - t
    print(f"durable insert transactions: {args.txns / dt:,.0f}/s ({args.txns} in {dt:.2f} s, fsync each)")
    db.storage.close()

    db = open_database(os.path.join(d, "bench-monitor.db"), DEFAULT_SCHEMA, fsync=False)
    db.ensure_open_vswitch_row()
    t = time.perf_counter()
    batch = 500
    for start in range(0, args.rows, batch):
        ops = [{"op": "insert", "table": "QoS", "row": {"type": f"t{i}",
                                                            "external_ids": ["map", [["k", "v"]]]}}
               for i in range(start, min(args.rows, start + batch))]
        db.transact_local(ops)
    print(f"loaded {args.rows} rows in {time.perf_counter() - t:.2f} s")
    svc = OvsdbService([db])
    s = svc.new_session()
    t = time.perf_counter()
    s.receive_bytes(json.dumps({"id": 1, "method": "monitor_cond", "params": [
        "Open_vSwitch", "m", {"QoS": [{}]}]}).encode(), 0.0)
    out = s.bytes_to_send()
    dt = time.perf_counter() - t
    print(f"monitor_cond over {args.rows} rows: {dt * 1000:.0f} ms, {len(out) / 1e6:.1f} MB reply")
    db.storage.close()


if __name__ == "__main__":
    main()
