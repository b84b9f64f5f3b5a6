"""Flow monitors, sans-IO: requests as ovs-ofctl 3.1 sends them, answers
decoded by ``ovs-ofctl ofp-print`` (the peer that matters) and by os-ken.

OVS_WIRE holds what ``ovs-ofctl -O <version> monitor <br> watch:`` and
Open vSwitch 3.1's ovs-vswitchd exchanged (recorded through a proxy): the
request, then the updates after another connection added
``table=1,priority=7,tcp,tp_dst=80,actions=drop``, modified it to
``output:2`` and deleted it.
"""
from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_4 as of14

from slowpath import actions as A
from slowpath.match import Match
from slowpath.pipeline import FlowMod, GroupMod, Bucket
from tests.unit.openflow.helpers import (
    Harness, monitor_cancel, monitor_request, nx_monitor_request, of14_monitor_request,
    onf_monitor_request, parse_reply, split_messages)
from vswitch.openflow import codec, monitor

ALL = (codec.OFP10, codec.OFP13, codec.OFP14, codec.OFP15)
VERSIONS = pytest.mark.parametrize("version", ALL, ids=["of10", "of13", "of14", "of15"])
OFCTL = shutil.which("ovs-ofctl")
if OFCTL is None:
    raise RuntimeError("ovs-ofctl not found: install Debian package openvswitch-common "
                       "(pyvswitch.sh setup)")

OVS_WIRE = {
    codec.OFP10: (
        "0110002800000006ffff000000002320000000020000000000000000003fffff0000ff0000000000",
        ("0111004800000000ffff00000000232000000002000000000030000000000007000000000011010000000000"
         "0000000000000602080000000c010600001402005000000000000000"),
        ("0111005000000000ffff00000000232000000002000000000038000200000007000000000011010000000000"
         "0000000000000602080000000c0106000014020050000000000000000000000800020000"),
        ("0111005000000000ffff00000000232000000002000000000038000100020007000000000011010000000000"
         "0000000000000602080000000c0106000014020050000000000000000000000800020000"),
    ),
    codec.OFP13: (
        ("0412003000000006ffff0000000000004f4e46000000074e00000000003f0004ffffffffff00000000010004"
         "00000000"),
        ("0413004800000000ffff0000000000004f4e46000000074e0030000000000007000000000015010000000000"
         "000000000001001580000a020800800014010680001c020050000000"),
        ("0413006000000000ffff0000000000004f4e46000000074e0048000200000007000000000015010000000000"
         "000000000001001580000a020800800014010680001c02005000000000040018000000000000001000000002"
         "0000000000000000"),
        ("0413006000000000ffff0000000000004f4e46000000074e0048000100020007000000000015010000000000"
         "000000000001001580000a020800800014010680001c02005000000000040018000000000000001000000002"
         "0000000000000000"),
    ),
    codec.OFP14: (
        "0512002800000006001000000000000000000000ffffffffffffffff005fff000001000400000000",
        ("0513004000000000001000000000000000300001010000000000000700000000000000000000000000010015"
         "80000a020800800014010680001c020050000000"),
        ("0513005800000000001000000000000000480003010000000000000700000000000000000000000000010015"
         "80000a020800800014010680001c020050000000000400180000000000000010000000020000000000000000"),
        ("0513005800000000001000000000000000480002010200000000000700000000000000000000000000010015"
         "80000a020800800014010680001c020050000000000400180000000000000010000000020000000000000000"),
    ),
    codec.OFP15: (
        "0612002800000006001000000000000000000000ffffffffffffffff005fff000001000400000000",
        ("0613004000000000001000000000000000300001010000000000000700000000000000000000000000010015"
         "80000a020800800014010680001c020050000000"),
        ("0613005800000000001000000000000000480003010000000000000700000000000000000000000000010015"
         "80000a020800800014010680001c020050000000000400180000000000000010000000020000000000000000"),
        ("0613005800000000001000000000000000480002010200000000000700000000000000000000000000010015"
         "80000a020800800014010680001c020050000000000400180000000000000010000000020000000000000000"),
    ),
}


def ofp_print(raw: bytes) -> list[str]:
    out = subprocess.run([OFCTL, "ofp-print", raw.hex()], capture_output=True, text=True,
                         check=True).stdout
    return out.rstrip("\n").split("\n")


def pending(h) -> list[bytes]:
    """What the switch has queued for `h`'s controller (async updates)."""
    return split_messages(h.conn.bytes_to_send())


def rule(table, prio, match, out=None, **kw):
    insts = (A.ApplyActions((A.Output(out),)),) if out is not None else ()
    return FlowMod("add", table, prio, Match.parse(match), instructions=insts, **kw)


def pair(version):
    """`mon` monitors (in `version`); `other` is a second controller (OF1.3)."""
    mon = Harness(version=version, allowed=ALL)
    other = Harness(version=codec.OFP13, allowed=ALL, switch=mon.switch)
    return mon, other


def flow_mod13(h, command, table, prio, out=None, xid=0x50, **match):
    P = h.P
    insts = [P.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS, [P.OFPActionOutput(out, 0)])] \
        if out is not None else []
    msg = P.OFPFlowMod(h.dp, table_id=table, command=command, priority=prio,
                       match=P.OFPMatch(**match), instructions=insts,
                       out_port=of13.OFPP_ANY, out_group=of13.OFPG_ANY)
    msg.xid = xid
    msg.serialize()
    return h.feed(bytes(msg.buf))


def error_name(raw: bytes) -> str:
    """`OFPMOFC_UNKNOWN_MONITOR` from ofp-print's first line of an error."""
    return ofp_print(raw)[0].rsplit(" ", 1)[-1]


# ---------------------------------------------------------------- OVS's wire
@VERSIONS
def test_ovs_ofctl_watch_sees_what_ovs_shows(version):
    """ovs-ofctl's own request; the initial reply and the updates print the
    lines Open vSwitch 3.1 printed for the same flows."""
    mon, other = pair(version)
    mon.pipeline.flow_mod(rule(0, 5, "ip,nw_dst=10.0.0.1", out=1), 0)
    req, *ovs_updates = (bytes.fromhex(h) for h in OVS_WIRE[version])
    (initial,) = mon.feed(req)
    event = "INITIAL" if version >= codec.OFP14 else "ADDED"
    assert ofp_print(initial)[1:] == [
        f" event={event} table=0 cookie=0 ip,nw_dst=10.0.0.1 actions=output:1"]
    assert ofp_print(initial)[0].endswith("(xid=0x6):")

    flow_mod13(other, of13.OFPFC_ADD, 1, 7, eth_type=0x800, ip_proto=6, tcp_dst=80)
    flow_mod13(other, of13.OFPFC_MODIFY, 1, 7, out=2, eth_type=0x800, ip_proto=6, tcp_dst=80)
    flow_mod13(other, of13.OFPFC_DELETE, 1, 0)
    ours = pending(mon)
    assert [ofp_print(u) for u in ours] == [ofp_print(u) for u in ovs_updates]
    assert ours[0] == ovs_updates[0]          # byte for byte (no actions to differ in)
    # the rest differs only in output's max_len (OVS: 0, we: 0xffff; both ignored)
    for o, theirs in zip(ours[1:], ovs_updates[1:]):
        assert o.replace(b"\x00\x02\xff\xff", b"\x00\x02\x00\x00") == theirs


def test_of15_encoding_decodes_with_os_ken():
    """os-ken's OFPFlowMonitorReply parser reads the initial reply and an
    ABBREV (its full-update parser only accepts INITIAL events: each
    register decorator overwrites the class's one event)."""
    mon = Harness(version=codec.OFP15, allowed=ALL)
    mon.pipeline.flow_mod(rule(3, 9, "arp", out=4, idle_timeout=30), 0)
    flags = monitor.INITIAL | monitor.ADD | monitor.ACTIONS
    msg = parse_reply(mon.feed(monitor_request(codec.OFP15, 1, flags, xid=0x33))[0])
    assert type(msg).__name__ == "OFPFlowMonitorReply" and msg.xid == 0x33
    (u,) = msg.body
    assert (u.event, u.table_id, u.priority, u.idle_timeout, u.cookie) == \
        (of14.OFPFME_INITIAL, 3, 9, 30, 0)
    assert dict(u.match.items()) == {"eth_type": 0x806}
    assert u.instructions[0].actions[0].port == 4
    out = flow_mod13(mon, of13.OFPFC_ADD, 0, 1, xid=0x44, eth_type=0x800)
    msg = parse_reply(out[0])
    (u,) = msg.body
    assert (msg.xid, u.event, u.xid) == (0, of14.OFPFME_ABBREV, 0x44)


# --------------------------------------------------------------- semantics
@VERSIONS
def test_own_changes_are_abbreviated_unless_own(version):
    mon = Harness(version=version, allowed=ALL)
    flags = monitor.ADD | monitor.DELETE | monitor.MODIFY
    assert ofp_print(mon.feed(monitor_request(version, 1, flags))[0])[1:] == []
    if version == codec.OFP10:
        from os_ken.ofproto import ofproto_v1_0_parser as p10
        m = p10.OFPFlowMod(mon.dp, p10.OFPMatch(dl_type=0x800), 0, 0, 0, 0, 9, 0xFFFFFFFF,
                           0xFFFF, 0, [p10.OFPActionOutput(3)])
        m.xid = 0x77
        m.serialize()
        out = mon.feed(bytes(m.buf))
    else:
        out = flow_mod13(mon, of13.OFPFC_ADD, 0, 9, out=3, xid=0x77, eth_type=0x800)
    assert [ofp_print(o)[1:] for o in out] == [[" event=ABBREV xid=0x77"]]
    if version != codec.OFP10:     # one ABBREV per message, however many rules it changed
        flow_mod13(mon, of13.OFPFC_ADD, 0, 8, eth_type=0x86dd)
        out = flow_mod13(mon, of13.OFPFC_DELETE, 0xFF, 0, xid=0x78)
        assert [ofp_print(o)[1:] for o in out] == [[" event=ABBREV xid=0x78"]]
    # with "own" the same connection sees its changes in full
    mon.feed(monitor_request(version, 2, flags | monitor.OWN))
    pending(mon)
    mon.pipeline.flow_mod(rule(0, 1, "arp"), 0)          # made by nobody in particular
    mon.switch.report_rule_changes()
    assert [ofp_print(o)[1:] for o in pending(mon)] == [[" event=ADDED table=0 cookie=0 arp"]]


def test_filters_table_out_port_and_match():
    mon, other = pair(codec.OFP13)
    mon.feed(onf_monitor_request(1, monitor.ADD | monitor.ACTIONS))
    mon.channel.monitors[1].table_id = 2
    mon.channel.monitors[1].out_port = 5
    mon.channel.monitors[1].match = Match.parse("ip")
    flow_mod13(other, of13.OFPFC_ADD, 1, 1, out=5, eth_type=0x800)       # wrong table
    flow_mod13(other, of13.OFPFC_ADD, 2, 1, out=4, eth_type=0x800)       # wrong port
    flow_mod13(other, of13.OFPFC_ADD, 2, 2, out=5, eth_type=0x806)       # not ip
    assert pending(mon) == []
    flow_mod13(other, of13.OFPFC_ADD, 2, 3, out=5, eth_type=0x800, ip_proto=17)
    assert [ofp_print(o)[1:] for o in pending(mon)] == [
        [" event=ADDED table=2 cookie=0 udp actions=output:5"]]


def test_modify_away_from_out_port_is_still_reported():
    mon, other = pair(codec.OFP14)
    mon.feed(of14_monitor_request(codec.OFP14, 1, of14.OFPFMF_MODIFY | of14.OFPFMF_INSTRUCTIONS,
                          out_port=5))
    flow_mod13(other, of13.OFPFC_ADD, 0, 3, out=5, eth_type=0x800)
    flow_mod13(other, of13.OFPFC_MODIFY, 0, 3, out=6, eth_type=0x800)
    flow_mod13(other, of13.OFPFC_MODIFY, 0, 3, out=6, eth_type=0x800)  # no change, no event
    assert [ofp_print(o)[1:] for o in pending(mon)] == [
        [" event=MODIFIED table=0 cookie=0 ip actions=output:6"]]


def test_expiry_and_group_delete_are_deletes_with_their_reason():
    mon, other = pair(codec.OFP10)
    mon.feed(nx_monitor_request(1, monitor.DELETE))
    sw = mon.switch
    sw.pipeline.flow_mod(rule(0, 1, "udp", out=1, idle_timeout=1), 0)
    sw.pipeline.group_mod(GroupMod("add", "all", 7, (Bucket((A.Output(3),)),)), 0)
    sw.pipeline.flow_mod(FlowMod("add", 0, 2, Match.parse("icmp"),
                                 instructions=(A.ApplyActions((A.Group(7),)),)), 0)
    sw.pipeline.expire(5.0)
    sw.report_rule_changes()
    sw.pipeline.group_mod(GroupMod("delete", "all", 7), 5.0)
    sw.report_rule_changes()
    assert [ofp_print(o)[1:] for o in pending(mon)] == [
        [" event=DELETED reason=idle table=0 idle_timeout=1 cookie=0 udp"],
        [" event=DELETED reason=group_delete table=0 cookie=0 icmp"]]


def test_failed_bundle_reports_nothing():
    mon, other = pair(codec.OFP14)
    mon.feed(monitor_request(codec.OFP14, 1, monitor.ADD | monitor.DELETE))
    P, dp = other.P, other.dp

    def send(msg, xid):
        msg.xid = xid
        msg.serialize()
        return other.feed(bytes(msg.buf))
    send(P.ONFBundleCtrlMsg(dp, 1, of14.OFPBCT_OPEN_REQUEST, 0, []), 1)
    good = P.OFPFlowMod(dp, table_id=0, command=of13.OFPFC_ADD, priority=1,
                        match=P.OFPMatch(eth_type=0x800), instructions=[])
    bad = P.OFPFlowMod(dp, table_id=0, command=of13.OFPFC_ADD, priority=2,
                       match=P.OFPMatch(), instructions=[P.OFPInstructionGotoTable(0)])
    for n, fm in enumerate((good, bad)):
        fm.xid = 2 + n
        fm.serialize()
        send(P.ONFBundleAddMsg(dp, 1, 0, fm, []), 2 + n)
    out = send(P.ONFBundleCtrlMsg(dp, 1, of14.OFPBCT_COMMIT_REQUEST, 0, []), 4)
    assert "OFPT_ERROR" in ofp_print(out[0])[0]
    assert pending(mon) == []


# ------------------------------------------------------- cancel, errors
@VERSIONS
def test_cancel_and_errors_keep_the_connection(version):
    mon, other = pair(version)
    flags = monitor.ADD | monitor.MODIFY
    assert mon.switch.pipeline.rule_monitor is None      # nobody monitors: nothing recorded
    mon.feed(monitor_request(version, 4, flags))
    assert mon.switch.pipeline.rule_monitor is not None
    assert error_name(mon.feed(monitor_request(version, 4, flags, xid=10))[0]) == \
        "OFPMOFC_MONITOR_EXISTS"
    assert error_name(mon.feed(monitor_cancel(version, 99))[0]) == "OFPMOFC_UNKNOWN_MONITOR"
    assert error_name(mon.feed(monitor_request(version, 5, monitor.INITIAL))[0]) == \
        "OFPMOFC_BAD_FLAGS"
    out = mon.feed(monitor_cancel(version, 4))     # OF1.4+: a multipart request, an empty reply
    assert [ofp_print(o)[1:] for o in out] == ([[]] if version >= codec.OFP14 else [])
    assert mon.switch.pipeline.rule_monitor is None
    flow_mod13(other, of13.OFPFC_ADD, 0, 1, eth_type=0x800)
    assert pending(mon) == []
    barrier = struct.pack("!BBHI", version, 18 if version == codec.OFP10 else 20, 8, 12)
    assert "BARRIER_REPLY" in ofp_print(mon.feed(barrier)[0])[0]


def test_of10_errors_are_nicira_vendor_errors():
    mon = Harness(version=codec.OFP10, allowed=ALL)
    (err,) = mon.feed(monitor_cancel(codec.OFP10, 99, xid=0x21))
    # what OVS 3.1 sends: NXET_VENDOR, (NX, 1, 519), the request
    assert err[:20] == bytes.fromhex("0101002800000021" "b0c20000" "00002320" "0001" "0207")
    assert err[20:] == monitor_cancel(codec.OFP10, 99, xid=0x21)
    (err,) = mon.feed(nx_monitor_request(1, monitor.ADD, zeros=b"\x01"))
    assert error_name(err) == "NXBRC_MUST_BE_ZERO"


def test_of14_modify_and_bad_command():
    mon, other = pair(codec.OFP14)
    mon.feed(of14_monitor_request(codec.OFP14, 1, of14.OFPFMF_ADD))
    assert error_name(mon.feed(of14_monitor_request(codec.OFP14, 2, of14.OFPFMF_ADD,
                                            command=of14.OFPFMC_MODIFY))[0]) == \
        "OFPMOFC_UNKNOWN_MONITOR"
    bad = of14_monitor_request(codec.OFP14, 1, of14.OFPFMF_ADD, command=7)
    assert error_name(mon.feed(bad)[0]) == "OFPMOFC_BAD_COMMAND"
    mon.feed(of14_monitor_request(codec.OFP14, 1, of14.OFPFMF_ADD, command=of14.OFPFMC_MODIFY,
                          table=3))
    flow_mod13(other, of13.OFPFC_ADD, 0, 1, eth_type=0x800)
    assert pending(mon) == []
    flow_mod13(other, of13.OFPFC_ADD, 3, 1, eth_type=0x800)
    assert len(pending(mon)) == 1


@VERSIONS
def test_connection_gone_stops_recording(version):
    from vswitch.openflow import monitor as m
    mon, other = pair(version)
    mon.feed(monitor_request(version, 1, monitor.ADD))
    mon.switch.channels.remove(mon.channel)
    m.watch(mon.switch)
    assert mon.switch.pipeline.rule_monitor is None


@VERSIONS
def test_truncated_requests_are_bad_len(version):
    mon = Harness(version=version, allowed=ALL)
    req = monitor_request(version, 1, monitor.ADD)
    for cut in range(8 + 8, len(req), 4):
        short = bytearray(req[:cut])
        struct.pack_into("!H", short, 2, cut)
        out = mon.feed(bytes(short))
        assert out and "OFPT_ERROR" in ofp_print(out[0])[0], cut
    assert mon.channel.monitors == {}
    assert ofp_print(mon.feed(req)[0])[1:] == []


def test_initial_reply_spans_multipart_messages():
    mon = Harness(version=codec.OFP13, allowed=ALL)
    for n in range(2000):
        mon.pipeline.flow_mod(rule(0, 100, f"ip,nw_dst=10.0.{n // 256}.{n % 256}", out=1), 0)
    out = mon.feed(onf_monitor_request(1, monitor.INITIAL | monitor.ADD | monitor.ACTIONS))
    assert len(out) > 1
    assert all(struct.unpack_from("!H", o, 10)[0] == of13.OFPMPF_REPLY_MORE for o in out[:-1])
    assert struct.unpack_from("!H", out[-1], 10)[0] == 0
    lines = [ln for o in out for ln in ofp_print(o)[1:]]
    assert len(lines) == 2000 and all(ln.startswith(" event=ADDED table=0") for ln in lines)


# ------------------------------------------------------------- flow control
PAUSED = {codec.OFP10: ["NXT_FLOW_MONITOR_PAUSED (xid=0x0):"],
          codec.OFP13: ["ONFT_FLOW_MONITOR_PAUSED (OF1.3) (xid=0x0):"],
          codec.OFP14: ["OFPST_FLOW_MONITOR reply (OF1.4) (xid=0x0):", " event=PAUSED"],
          codec.OFP15: ["OFPST_FLOW_MONITOR reply (OF1.5) (xid=0x0):", " event=PAUSED"]}


@VERSIONS
def test_backed_up_connection_is_paused_then_refreshed(version):
    mon, other = pair(version)
    sw = mon.switch
    sw.pipeline.flow_mod(rule(0, 1, "arp", out=1), 0)
    mon.feed(monitor_request(version, 1, monitor.ADD | monitor.DELETE | monitor.MODIFY))
    backlog = [monitor.PAUSE_BACKLOG + 1]
    mon.channel.backlog = lambda: backlog[0]
    flow_mod13(other, of13.OFPFC_ADD, 0, 2, out=2, eth_type=0x800)
    first, paused = pending(mon)
    assert ofp_print(first)[1:] == [" event=ADDED table=0 cookie=0 ip"]
    assert ofp_print(paused) == PAUSED[version]
    # paused: adds and modifications wait; deletes of what it knows still come
    flow_mod13(other, of13.OFPFC_ADD, 0, 3, out=3, eth_type=0x86dd)
    flow_mod13(other, of13.OFPFC_ADD, 0, 3, out=7, eth_type=0x86dd)    # replaces it
    flow_mod13(other, of13.OFPFC_ADD, 0, 4, out=4, eth_type=0x8847)
    flow_mod13(other, of13.OFPFC_DELETE_STRICT, 0, 4, eth_type=0x8847)   # came and went
    flow_mod13(other, of13.OFPFC_MODIFY, 0, 2, out=5, eth_type=0x800)
    flow_mod13(other, of13.OFPFC_MODIFY, 0, 1, out=6, eth_type=0x806)   # known before,
    flow_mod13(other, of13.OFPFC_DELETE_STRICT, 0, 1, eth_type=0x806)   # so its delete counts
    assert [ofp_print(o)[1:] for o in pending(mon)] == [
        [" event=DELETED reason=delete table=0 cookie=0 arp"]]
    backlog[0] = 0
    monitor.resume(sw, mon.channel)
    refresh, resumed = pending(mon)
    assert sorted(ofp_print(refresh)[1:]) == [" event=ADDED table=0 cookie=0 ip",
                                              " event=ADDED table=0 cookie=0 ipv6"]
    assert ofp_print(resumed) == [ln.replace("PAUSED", "RESUMED") for ln in PAUSED[version]]
    flow_mod13(other, of13.OFPFC_DELETE, 0xFF, 0)
    assert len(ofp_print(pending(mon)[0])) == 3          # reporting as usual again
