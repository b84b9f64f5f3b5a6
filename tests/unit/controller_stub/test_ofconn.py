"""The sans-IO controller connection against the real switch-side stack
(pyvswitch's OpenFlowConnection + Handlers + slowpath Pipeline), bytes
shuttled by hand with a fake clock: negotiation, features and port names,
echo, probes, xids, barrier-scoped errors, multipart gathering — and every
rule the pipeline computes is accepted by the switch and dumps back equal,
so a resynchronising controller sends nothing."""

import asyncio
import struct

from os_ken.ofproto import ofproto_v1_3 as ofp

from controller_stub import flows as F
from controller_stub import ofconn, ofmsg
from controller_stub.ofconn import (BarrierDone, Closed, Connected, ControllerConnection, Error,
                                    Message, Reply)
from tests.unit.controller_stub.test_flows import make_state, views_for
from tests.unit.openflow.fake_pipeline import FakeBackend, make_pipeline
from slowpath.port import Port
from vswitch.openflow import codec
from vswitch.openflow.connection import Connected as SwConnected
from vswitch.openflow.connection import MessageReceived, OpenFlowConnection
from vswitch.openflow.handlers import Channel, Handlers, SwitchContext
from vswitch.openflow.sp import OFError


class Switch:
    """The real switch-side channel, driven without sockets."""

    def __init__(self, ports=None, versions=(codec.OFP10, codec.OFP13), now=0.0):
        self.pipeline = make_pipeline(ports)
        self.ctx = SwitchContext("br0", self.pipeline, FakeBackend(), 0xabc)
        self.handlers = Handlers(self.ctx)
        self.conn = OpenFlowConnection(set(versions), now, probe_interval=None)
        self.channel = None

    def feed(self, data, now=0.0) -> bytes:
        self.conn.receive_bytes(data, now)
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, SwConnected):
                self.channel = Channel(ev.version, send_async=self.conn.send)
                self.ctx.channels.append(self.channel)
            elif isinstance(ev, MessageReceived):
                try:
                    for r in self.handlers.handle(self.channel, ev.msg, now):
                        self.conn.send(r)
                except OFError as e:
                    self.conn.send_error(e, ev.msg.buf, ev.msg.xid)
        return self.conn.bytes_to_send()


def pump(ctl, sw, now=0.0):
    """Exchange bytes until both sides are quiet; return the controller's events."""
    events = []
    for _ in range(50):
        a = ctl.bytes_to_send()
        b = sw.feed(a, now) if a else b""
        if b:
            ctl.receive_bytes(b, now)
        while (ev := ctl.next_event()) is not None:
            events.append(ev)
        if not a and not b:
            return events
    raise AssertionError("no quiescence")


def connected_pair(ports=None):
    ctl = ControllerConnection(0.0, probe_interval=5.0)
    sw = Switch(ports)
    sw.feed(b"")                    # the switch's HELLO goes out
    ctl.receive_bytes(sw.conn.bytes_to_send() or b"", 0.0)
    return ctl, sw


def test_handshake_reports_datapath_and_port_names():
    ctl = ControllerConnection(0.0)
    sw = Switch()
    events = pump(ctl, sw)
    (c,) = [e for e in events if isinstance(e, Connected)]
    assert c.datapath_id == 0xabc
    assert c.ports == {"p1": 1, "p2": 2, "br0": ofp.OFPP_LOCAL}
    assert ctl.state == ofconn.CONNECTED


def test_no_common_version_fails_the_hello():
    ctl = ControllerConnection(0.0)
    sw = Switch(versions=(codec.OFP10,))
    events = pump(ctl, sw)
    assert isinstance(events[-1], Closed) and "no common OpenFlow version" in events[-1].reason
    assert ctl.closed


def test_echo_request_answered_and_idle_peer_probed_then_dropped():
    ctl = ControllerConnection(0.0, probe_interval=5.0)
    pump(ctl, Switch())
    echo = ofconn.parser.OFPEchoRequest(ofconn.DP, data=b"hi")
    echo.set_xid(99)
    echo.serialize()
    ctl.receive_bytes(bytes(echo.buf), 1.0)
    out = ctl.bytes_to_send()
    assert struct.unpack_from("!BBHI", out) == (4, ofp.OFPT_ECHO_REPLY, 10, 99) and out[8:] == b"hi"
    assert ctl.get_timer() == 6.0
    ctl.handle_timer(6.0)
    assert struct.unpack_from("!BB", ctl.bytes_to_send()) == (4, ofp.OFPT_ECHO_REQUEST)
    assert ctl.get_timer() == 11.0
    ctl.handle_timer(11.0)
    assert ctl.next_event() == Closed("inactivity probe")


def test_barrier_collects_errors_of_the_messages_before_it():
    ctl = ControllerConnection(0.0)
    sw = Switch()
    pump(ctl, sw)
    good = ofmsg.add_msg(F.flow(0, 10, {"in_port": 1}, (("output", 2),)))
    bad = ofmsg.add_msg(F.flow(0, 10, {"in_port": 2}, (("goto", 0),)))   # goto backwards
    x_good, x_bad = ctl.send(good), ctl.send(bad)
    b = ctl.barrier()
    events = pump(ctl, sw)
    (done,) = [e for e in events if isinstance(e, BarrierDone)]
    assert done.xid == b
    assert [e.xid for e in done.errors] == [x_bad] and x_good != x_bad
    assert done.errors[0].type == ofp.OFPET_BAD_INSTRUCTION
    assert any(isinstance(e, Error) and e.xid == x_bad for e in events)


def test_multipart_replies_are_gathered_by_xid():
    ctl = ControllerConnection(0.0)
    sw = Switch()
    pump(ctl, sw)
    for i in range(3):
        ctl.send(ofmsg.add_msg(F.flow(0, 10 + i, {"in_port": i + 1}, (), F.cookie(F.K_PORT, i))))
    ctl.send(ofmsg.add_msg(F.flow(0, 5, {}, (), 0x1234)))   # not ours: not dumped
    ctl.barrier()
    xid = ctl.send(ofmsg.dump_request())
    (reply,) = [e for e in pump(ctl, sw) if isinstance(e, Reply)]
    assert reply.xid == xid
    stats = [s for part in reply.parts for s in part.body]
    assert sorted(s.priority for s in stats) == [10, 11, 12]


def test_port_status_updates_port_names():
    ctl = ControllerConnection(0.0)
    sw = Switch()
    pump(ctl, sw)
    port = Port(ofport=7, name="vm7", hw_addr="02:00:00:00:00:07")
    sw.pipeline.set_port(port)
    for ch in sw.ctx.channels:
        from vswitch.openflow.handlers import port_status_msg
        sw.conn.send(port_status_msg(ch, ofp.OFPPR_ADD, port))
    ctl.receive_bytes(sw.conn.bytes_to_send(), 0.0)
    ev = ctl.next_event()
    assert isinstance(ev, Message) and type(ev.msg).__name__ == "OFPPortStatus"
    assert ctl.ports["vm7"] == 7


def test_the_real_pipeline_accepts_every_rule_and_dumps_them_back_equal():
    state = make_state()
    views = views_for(state)
    ports = [Port(ofport=o, name=n, hw_addr="02:00:00:00:ff:%02x" % o)
             for n, o in views["hv1"].ofports.items()]
    ctl = ControllerConnection(0.0)
    sw = Switch(ports)
    pump(ctl, sw)
    desired = F.host_flows(state, "hv1", views["hv1"])
    ctl.send(ofmsg.tlv_table_add(0))     # OVN's GENEVE option -> tun_metadata0
    for m in ofmsg.diff([], desired):
        ctl.send(m)
    ctl.barrier()
    (done,) = [e for e in pump(ctl, sw) if isinstance(e, BarrierDone)]
    assert done.errors == []
    ctl.send(ofmsg.dump_request())
    (reply,) = [e for e in pump(ctl, sw) if isinstance(e, Reply)]
    dumped = [ofmsg.flow_from_stats(s) for part in reply.parts for s in part.body]
    assert sorted(map(str, dumped)) == sorted(map(str, desired))
    assert ofmsg.diff(dumped, desired) == []


def test_the_real_pipeline_accepts_the_router_rules():
    from tests.unit.controller_stub.test_flows import routed_state
    state = routed_state()
    views = views_for(state)
    ports = [Port(ofport=o, name=n, hw_addr="02:00:00:00:ff:%02x" % o)
             for n, o in views["hv1"].ofports.items()]
    ctl = ControllerConnection(0.0)
    sw = Switch(ports)
    pump(ctl, sw)
    desired = F.host_flows(state, "hv1", views["hv1"])
    assert any(f.table == F.ROUTING for f in desired)
    ctl.send(ofmsg.tlv_table_add(0))     # OVN's GENEVE option -> tun_metadata0
    for m in ofmsg.diff([], desired):
        ctl.send(m)
    ctl.barrier()
    (done,) = [e for e in pump(ctl, sw) if isinstance(e, BarrierDone)]
    assert done.errors == []
    ctl.send(ofmsg.dump_request())
    (reply,) = [e for e in pump(ctl, sw) if isinstance(e, Reply)]
    dumped = [ofmsg.flow_from_stats(s) for part in reply.parts for s in part.body]
    assert ofmsg.diff(dumped, desired) == []


def test_a_reconciliation_as_one_atomic_bundle():
    from controller_stub.controller import Controller
    state = make_state()
    state.set_options({"bundles": True})
    views = views_for(state)
    ctl = Controller(state, probe=None)
    agent = ctl.agents["hv1"]
    conn = ControllerConnection(0.0)
    ports = [Port(ofport=o, name=n, hw_addr="02:00:00:00:ff:%02x" % o)
             for n, o in views["hv1"].ofports.items()]
    sw = Switch(ports)

    class FakeSession:      # the agent only needs .conn and .transmit()
        def __init__(self):
            self.conn = conn

        def transmit(self):
            pass
    session = FakeSession()
    events = pump(conn, sw)
    asyncio.run(_feed(agent, session, events, conn, sw))
    assert agent.synced and agent.idle and agent.n_errors == 0
    conn.send(ofmsg.dump_request())
    (reply,) = [e for e in pump(conn, sw) if isinstance(e, Reply)]
    dumped = [ofmsg.flow_from_stats(s) for part in reply.parts for s in part.body]
    assert ofmsg.diff(dumped, agent.desired()) == []
    # a bundle the switch refuses (goto backwards) changes nothing, and the
    # agent forgets every rule of it so the next pass retries them all
    bad = F.flow(F.OUTPUT, 5, {"in_port": 1}, (("goto", 0),))
    agent.desired = lambda: [*F.host_flows(state, "hv1", agent.view), bad]
    assert agent.reconcile() == 1
    asyncio.run(_feed(agent, session, [], conn, sw))
    assert agent.n_errors >= 1 and bad.key not in agent.installed
    conn.send(ofmsg.dump_request())
    (reply,) = [e for e in pump(conn, sw) if isinstance(e, Reply)]
    assert len([s for part in reply.parts for s in part.body]) == len(dumped)


async def _feed(agent, session, events, conn, sw):
    agent.controller._cond = asyncio.Condition()
    for ev in events:
        agent.event(session, ev)
    for _ in range(10):
        evs = pump(conn, sw)
        if not evs:
            break
        for ev in evs:
            agent.event(session, ev)
    await asyncio.sleep(0)
