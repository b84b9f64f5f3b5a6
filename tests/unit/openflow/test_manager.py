"""The asyncio ConnectionManager over real sockets: targets, reconnect, fan-out."""
import asyncio
import os
import struct
import tempfile

import pytest
from os_ken.ofproto import ofproto_v1_3 as of13

from slowpath.port import Port
from tests.unit.openflow.fake_pipeline import FakeBackend, make_pipeline
from tests.unit.openflow.helpers import hello_bytes, parse_reply, split_messages
from vswitch.openflow import manager as M
from vswitch.openflow.manager import ConnectionManager


def run(coro):
    return asyncio.new_event_loop().run_until_complete(asyncio.wait_for(coro, 20))


def new_mgr(versions=(4,)):
    return ConnectionManager("br0", make_pipeline(), FakeBackend(), datapath_id=7,
                             allowed_versions=set(versions))


class Peer:
    """A minimal controller end: HELLO, then read whole messages."""

    def __init__(self, reader, writer):
        self.r, self.w, self.buf = reader, writer, b""

    async def hello(self, version=4):
        self.w.write(hello_bytes(version))
        first = await self.read()
        assert first.msg_type == 0
        return first

    async def read(self, timeout=5):
        while True:
            msgs = split_messages(self.buf)
            if msgs and len(msgs[0]) == struct.unpack_from("!H", self.buf, 2)[0]:
                raw = msgs[0]
                self.buf = self.buf[len(raw):]
                return parse_reply(raw)
            data = await asyncio.wait_for(self.r.read(65536), timeout)
            if not data:
                raise EOFError
            self.buf += data

    def send(self, raw):
        self.w.write(raw)


def test_punix_mgmt_socket_serves_features_and_is_removed_on_stop():
    async def main():
        d = tempfile.mkdtemp(dir="/tmp")
        path = os.path.join(d, "br0.mgmt")
        mgr = new_mgr()
        await mgr.start([f"punix:{path}"])
        assert os.path.exists(path)
        peer = Peer(*await asyncio.open_unix_connection(path))
        await peer.hello()
        peer.send(struct.pack("!BBHI", 4, of13.OFPT_FEATURES_REQUEST, 8, 99))
        f = await peer.read()
        assert (type(f).__name__, f.datapath_id, f.xid) == ("OFPSwitchFeatures", 7, 99)
        await mgr.stop()
        assert not os.path.exists(path)
    run(main())


def test_ptcp_and_port_status_fan_out():
    async def main():
        mgr = new_mgr()
        await mgr.start(["ptcp:0:127.0.0.1"])
        server = mgr._targets["ptcp:0:127.0.0.1"]
        port = server.sockets[0].getsockname()[1]
        peers = [Peer(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(2)]
        for p in peers:
            await p.hello()
        for _ in range(50):
            if mgr.n_connections == 2:
                break
            await asyncio.sleep(0.01)
        mgr.port_status(M.PORT_ADD, Port(ofport=9, name="p9", hw_addr="02:00:00:00:00:09"))
        for p in peers:
            ps = await p.read()
            assert (type(ps).__name__, ps.reason, ps.desc.port_no) == ("OFPPortStatus", 0, 9)
        await mgr.stop()
    run(main())


def test_active_tcp_controller_reconnects_with_backoff(monkeypatch):
    monkeypatch.setattr(M, "BACKOFF_MIN", 0.05)
    monkeypatch.setattr(M, "BACKOFF_MAX", 0.2)

    async def main():
        accepted = asyncio.Queue()

        async def on_conn(r, w):
            await accepted.put(Peer(r, w))
        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()            # controller down at first
        mgr = new_mgr()
        await mgr.start([f"tcp:127.0.0.1:{port}"])
        await asyncio.sleep(0.3)               # a few failed attempts
        server = await asyncio.start_server(on_conn, "127.0.0.1", port)
        peer = await asyncio.wait_for(accepted.get(), 5)
        await peer.hello()
        peer.w.close()                         # controller drops us: we come back
        peer2 = await asyncio.wait_for(accepted.get(), 5)
        await peer2.hello()
        # reconcile: removing the target stops reconnecting
        await mgr.set_controllers([])
        with pytest.raises(EOFError):
            await peer2.read()
        await mgr.stop()
        server.close()
    run(main())


def test_send_packet_in_and_flow_removed_reach_controllers():
    async def main():
        mgr = new_mgr()
        d = tempfile.mkdtemp(dir="/tmp")
        path = os.path.join(d, "br0.mgmt")
        await mgr.start([f"punix:{path}"])
        peer = Peer(*await asyncio.open_unix_connection(path))
        await peer.hello()
        while mgr.n_connections < 1:
            await asyncio.sleep(0.01)

        class PI:
            reason, in_port, table_id, cookie, data = 0, 2, 0, 0, b"\xff" * 64
        mgr.send_packet_in(PI())
        pi = await peer.read()
        assert type(pi).__name__ == "OFPPacketIn" and pi.match["in_port"] == 2

        from slowpath.pipeline import FlowMod
        from slowpath.match import Match
        pl = mgr.switch.pipeline
        pl.flow_mod(FlowMod("add", match=Match.from_fields({"in_port": 1}),
                            flags=frozenset({"send_flow_rem"})), 0.0)
        removed = pl.flow_mod(FlowMod("delete", table_id=0xff), 1.0)
        mgr.flow_removed(removed)
        fr = await peer.read()
        assert type(fr).__name__ == "OFPFlowRemoved" and fr.match["in_port"] == 1
        await mgr.stop()
    run(main())


def test_bad_target_is_rejected():
    async def main():
        with pytest.raises(ValueError):
            await new_mgr().start(["bogus:1"])
    run(main())


def test_packet_ins_to_a_controller_that_does_not_read_are_dropped(monkeypatch):
    monkeypatch.setattr(M, "ASYNC_BACKLOG_BYTES", 64 << 10)

    async def main():
        mgr = new_mgr()
        d = tempfile.mkdtemp(dir="/tmp")
        path = os.path.join(d, "br0.mgmt")
        await mgr.start([f"punix:{path}"])
        peer = Peer(*await asyncio.open_unix_connection(path))
        await peer.hello()
        while mgr.n_connections < 1:
            await asyncio.sleep(0.01)

        class PI:
            reason, in_port, table_id, cookie, max_len = 0, 2, 0, 0, 0xffff
            data = b"\xff" * 1500
        for _ in range(20000):            # ~30 MB if nothing were dropped
            mgr.send_packet_in(PI())
        (session,) = mgr._sessions
        assert session.dropped > 0
        assert session.transport.get_write_buffer_size() < (64 << 10) + 2000
        await mgr.stop()
    run(main())


def test_refused_message_is_logged_whole_and_rate_limited(caplog, monkeypatch):
    """What the switch refuses is in its log in full (ovs-ofctl ofp-print
    decodes the hex): the error's 64 bytes rarely show the offending action."""
    monkeypatch.setattr(M, "_refused_window", [0.0, 0])
    # OF1.3 flow-mod whose only action has an unknown experimenter subtype
    bad_action = struct.pack("!HHIH6x", 0xFFFF, 16, 0x2320, 0x7FFF)
    inst = struct.pack("!HH4x", of13.OFPIT_APPLY_ACTIONS, 8 + len(bad_action)) + bad_action
    body = struct.pack("!QQBBHHHIIIH2x", 0, 0, 0, 0, 0, 0, 0x8000, 0xFFFFFFFF, 0xFFFFFFFF,
                       0xFFFFFFFF, 0) + struct.pack("!HH4x", 1, 4) + inst
    fm = struct.pack("!BBHI", 4, of13.OFPT_FLOW_MOD, 8 + len(body), 0) + body

    async def main():
        d = tempfile.mkdtemp(dir="/tmp")
        path = os.path.join(d, "br0.mgmt")
        mgr = new_mgr()
        await mgr.start([f"punix:{path}"])
        peer = Peer(*await asyncio.open_unix_connection(path))
        await peer.hello()
        for xid in range(M.REFUSED_LOG_BURST + 3):
            peer.send(fm[:4] + struct.pack("!I", xid) + fm[8:])
            err = await peer.read()
            assert type(err).__name__ == "OFPErrorMsg"
        await mgr.stop()
    with caplog.at_level("WARNING", logger=M.__name__):
        run(main())
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == M.REFUSED_LOG_BURST
    assert bad_action.hex() in logged[0] and "xid=0x0" in logged[0]
