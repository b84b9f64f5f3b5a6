"""pyvswitch's embedded OVSDB server (RFC 7047 + the OVS extensions).

Layers, each usable and tested on its own:

* ``schema.py``  -- schemas as plain facts (the system ``vswitch.ovsschema``,
  the built-in ``_Server``).
* ``datum.py``   -- column values as plain Python values, JSON both ways,
  constraints, update2 diffs.
* ``db.py``      -- the sans-IO transaction engine: every RFC 7047 operation,
  strong/weak references, garbage collection, indexes, maxRows; commit
  listeners; ``open_database`` (durable, schema conversion).
* ``storage.py`` -- the OVS standalone log file (``ovsdb-tool`` compatible),
  fsync per commit, torn-tail recovery, compaction.
* ``jsonrpc.py`` -- sans-IO JSON-RPC framing (bytes + time in, events out).
* ``service.py`` -- the protocol: methods, monitors (update/update2/update3),
  locks, blocking "wait", per-session state; still sans-IO.
* ``server.py``  -- the asyncio listeners (``punix:``, ``ptcp:``) and
  ``OvsdbServer``, the object the daemon holds.

The daemon's API::

    server = OvsdbServer(db_path)                 # schema defaults to the system one
    await server.start(["punix:/run/pyvswitch/db.sock"])
    db = server.db
    db.ensure_open_vswitch_row()
    db.add_listener(lambda db, changes: ...)      # after each commit, loop thread
    db.tables["Interface"].rows[uuid].ofport      # frozenset() or frozenset({n})
    db.transact_local([{"op": "update", ...}])    # RFC 7047 ops, returns results
    await server.stop()
"""
