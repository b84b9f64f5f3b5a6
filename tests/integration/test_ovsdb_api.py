"""The API the daemon codes against, exercised in-process: OvsdbServer on
punix + ptcp, a listener reconciling from the event loop thread (the way the
bridge reconciler will: give interfaces ofports, bump cur_cfg), ovs-vsctl
without --no-wait, and stop()."""
import asyncio
import os
import threading
import uuid

from vswitch.ovsdb.server import OvsdbServer


async def run(*cmd):
    p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 20)
    return p.returncode, out.decode(), err.decode()


def test_daemon_api(tmp_path):
    db_path = str(tmp_path / "conf.db")
    sock = str(tmp_path / "db.sock")

    async def main():
        server = OvsdbServer(db_path)
        assert os.path.exists(db_path)
        loop_thread = threading.get_ident()
        calls = []

        def reconcile(db, changes):
            assert threading.get_ident() == loop_thread
            calls.append(set(changes))
            for u, iface in db.tables["Interface"].rows.items():
                if not iface.ofport:
                    db.transact_local([{"op": "update", "table": "Interface",
                                        "where": [["_uuid", "==", ["uuid", str(u)]]],
                                        "row": {"ofport": 7}}])
            ovs = next(iter(db.tables["Open_vSwitch"].rows.values()))
            if ovs.cur_cfg != ovs.next_cfg:
                db.transact_local([{"op": "update", "table": "Open_vSwitch", "where": [],
                                    "row": {"cur_cfg": ovs.next_cfg}}])

        server.db.ensure_open_vswitch_row()
        server.db.add_listener(reconcile)
        await server.start(["punix:" + sock, "ptcp:0"])      # ptcp binds 127.0.0.1 by default
        port = server.tcp_ports[0]
        try:
            rc, out, err = await run("ovs-vsctl", "--db=unix:" + sock, "--timeout=10",
                                     "add-br", "br0", "--", "set", "bridge", "br0", "fail_mode=secure")
            assert rc == 0 and "Error" not in err, err
            rc, out, err = await run("ovs-vsctl", f"--db=tcp:127.0.0.1:{port}", "--timeout=10", "list-br")
            assert rc == 0 and out.split() == ["br0"], err
            db = server.db
            br = next(iter(db.tables["Bridge"].rows.values()))
            assert br.name == "br0" and br.fail_mode == frozenset({"secure"})
            assert isinstance(br.ports, frozenset) and all(isinstance(p, uuid.UUID) for p in br.ports)
            port_row = db.tables["Port"].rows[next(iter(br.ports))]
            iface = db.tables["Interface"].rows[next(iter(port_row.interfaces))]
            assert iface.scalar("ofport") == 7 and iface.options == {}
            ovs = next(iter(db.tables["Open_vSwitch"].rows.values()))
            assert ovs.cur_cfg == ovs.next_cfg >= 1
            assert {"Bridge", "Port", "Interface", "Open_vSwitch"} <= set().union(*calls)
            # a passive manager target in the database opens a listener...
            rc, out, err = await run("ovs-vsctl", "--db=unix:" + sock, "--timeout=10",
                                     "set-manager", "ptcp:0:127.0.0.1")
            assert rc == 0, err
            for _ in range(50):
                if "ptcp:0:127.0.0.1" in server.listening():
                    break
                await asyncio.sleep(0.02)
            mport = server.listening()["ptcp:0:127.0.0.1"]
            rc, out, err = await run("ovs-vsctl", f"--db=tcp:127.0.0.1:{mport}", "--timeout=10",
                                     "get-manager")
            assert rc == 0 and out.strip() == "ptcp:0:127.0.0.1", err
            # ...and removing it closes the listener again
            rc, out, err = await run("ovs-vsctl", "--db=unix:" + sock, "--timeout=10", "del-manager")
            assert rc == 0, err
            for _ in range(50):
                if "ptcp:0:127.0.0.1" not in server.listening():
                    break
                await asyncio.sleep(0.02)
            assert set(server.listening()) == {"punix:" + sock, "ptcp:0"}
        finally:
            await server.stop()
        assert not os.path.exists(sock)
        # reopening finds the same rows (ensure_open_vswitch_row is idempotent)
        again = OvsdbServer(db_path)
        assert [b.name for b in again.db.tables["Bridge"].rows.values()] == ["br0"]
        assert again.db.ensure_open_vswitch_row() == ovs.uuid
        again.db.storage.close()

    asyncio.run(main())


def test_tcp_inactivity_probe_drops_dead_peer_and_its_lock(tmp_path):
    async def main():
        server = OvsdbServer(str(tmp_path / "conf.db"), probe_interval=0.2)
        await server.start(["ptcp:0"])
        try:
            r, w = await asyncio.open_connection("127.0.0.1", server.tcp_ports[0])
            w.write(b'{"id":1,"method":"lock","params":["L"]}')
            assert b'"locked":true' in await asyncio.wait_for(r.read(4096), 5)
            probe = await asyncio.wait_for(r.read(4096), 5)          # silent: server probes
            assert b'"method":"echo"' in probe
            assert await asyncio.wait_for(r.read(4096), 5) == b""    # no answer: hung up
            assert server.service.locks == {}
            w.close()
        finally:
            await server.stop()

    asyncio.run(main())


def test_commit_from_another_thread_reaches_monitors(tmp_path):
    async def main():
        server = OvsdbServer(str(tmp_path / "conf.db"))
        sock = str(tmp_path / "db.sock")
        await server.start(["punix:" + sock])
        try:
            r, w = await asyncio.open_unix_connection(sock)
            w.write(b'{"id":1,"method":"monitor_cond","params":["Open_vSwitch","m",{"Open_vSwitch":[{}]}]}')
            assert b'"id":1' in await asyncio.wait_for(r.read(65536), 5)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, server.db.ensure_open_vswitch_row)
            assert b'"update2"' in await asyncio.wait_for(r.read(65536), 5)
            w.close()
        finally:
            await server.stop()

    asyncio.run(main())
