"""Mutation fuzzing of the channel + handlers with real messages.

A corpus of valid controller messages for every supported version (built
with os-ken's controller-side serializers, i.e. what controllers really send)
is mutated - bit flips, byte overwrites, truncation, length/type/version
rewrites, splices - and fed through the same connection+handlers path the
manager uses, against the real slow-path Pipeline.  Invariants: no exception
other than OFError ever leaves a handler (the manager would turn one into
EPERM and log a bug), no exception at all leaves the connection, and every
message that reaches a handler and fails gets an OFPT_ERROR.

PYVS_FUZZ_N sets the number of mutated messages (default 100000, about 10 s;
PYVS_FUZZ_SEED the random seed;
the harness starts over every 5000 messages so rule tables stay small).
"""
import os
import random
import struct

from os_ken.ofproto import nicira_ext, nx_match
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_3 as of13, ofproto_v1_3_parser as p13

from tests.unit.openflow.helpers import Harness, monitor_cancel, monitor_request
from vswitch.openflow import codec, nx
from vswitch.openflow.connection import MessageReceived
from vswitch.openflow.sp import OFError

N = int(os.environ.get("PYVS_FUZZ_N", "100000"))


def _raw(msg, xid=1):
    msg.xid = xid
    msg.serialize()
    return bytes(msg.buf)


def corpus(version):
    dp = codec.datapath(version)
    P = dp.ofproto_parser
    out = []
    if version == codec.OFP10:
        rule = nx_match.ClsRule()
        rule.set_in_port(1)
        rule.set_reg(0, 5)
        m = P.OFPMatch(wildcards=of10.OFPFW_ALL & ~of10.OFPFW_IN_PORT, in_port=1)
        out += [
            _raw(P.OFPFlowMod(dp, m, 1, of10.OFPFC_ADD, 0, 0, 10, 0xffffffff, of10.OFPP_NONE, 0,
                              [P.OFPActionOutput(2), P.OFPActionSetDlDst(b"\x02" * 6)])),
            _raw(P.NXTFlowMod(dp, cookie=1, command=0, rule=rule,
                              actions=[P.NXActionResubmitTable(in_port=0xfff8, table_id=1)])),
            _raw(P.NXTSetFlowFormat(dp, nicira_ext.NXFF_NXM)),
            _raw(P.NXTFlowModTableId(dp, 1)),
            _raw(P.NXFlowStatsRequest(dp, 0, of10.OFPP_NONE, 0xff, rule)),
            _raw(P.OFPFlowStatsRequest(dp, 0, P.OFPMatch(), 0xff, of10.OFPP_NONE)),
            _raw(P.OFPPacketOut(dp, 0xffffffff, 1, [P.OFPActionOutput(2)], b"\x00" * 60)),
            _raw(P.OFPPortStatsRequest(dp, 0, of10.OFPP_NONE)),
            _raw(P.OFPSetConfig(dp, 0, 128)),
        ]
    else:
        match = P.OFPMatch(in_port=1, eth_type=0x800, ipv4_dst=("10.0.0.0", "255.0.0.0"))
        nat = P.NXActionNAT(1, range_ipv4_min="10.0.0.1", range_ipv4_max="10.0.0.9")
        insts = [P.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS,
                                         [P.OFPActionOutput(2), P.OFPActionSetField(reg0=3),
                                          P.NXActionCT(flags=1, zone_src="", zone_ofs_nbits=5,
                                                       recirc_table=4, alg=0, actions=[nat]),
                                          codec.Clone([P.OFPActionOutput(1)], version),
                                          P.NXActionRegMove(src_field="reg1", dst_field="reg2",
                                                            n_bits=8, src_ofs=0, dst_ofs=8)]),
                 P.OFPInstructionGotoTable(3)]
        fm = P.OFPFlowMod(dp, table_id=1, priority=5, match=match, instructions=insts)
        out += [
            _raw(fm),
            _raw(P.OFPFlowStatsRequest(dp, 0, 0xff, of13.OFPP_ANY, of13.OFPG_ANY, 0, 0,
                                       P.OFPMatch(in_port=1))
                 if version < codec.OFP15 else
                 P.OFPFlowDescStatsRequest(dp, 0, 0xff, of13.OFPP_ANY, of13.OFPG_ANY, 0, 0,
                                           P.OFPMatch(in_port=1))),
            _raw(P.OFPPortDescStatsRequest(dp, 0)),
            _raw(P.OFPMeterFeaturesStatsRequest(dp, 0)),
            _raw(P.OFPGroupMod(dp, of13.OFPGC_ADD, of13.OFPGT_ALL, 1, buckets=(
                [P.OFPBucket(0, of13.OFPP_ANY, of13.OFPG_ANY, [P.OFPActionOutput(1)])]
                if version < codec.OFP15 else [P.OFPBucket(0, [P.OFPActionOutput(1)], [])]))),
            _raw(P.OFPMeterMod(dp, of13.OFPMC_ADD, of13.OFPMF_KBPS, 1,
                               [P.OFPMeterBandDrop(rate=10, burst_size=0)])),
            _raw(P.OFPRoleRequest(dp, of13.OFPCR_ROLE_MASTER, 1)
                 if version < codec.OFP15 else P.OFPRoleRequest(dp, 2, 0, 1)),
            _raw(P.OFPSetConfig(dp, 0, 128)),
            _raw(P.OFPTableMod(dp, 1, 0) if version == codec.OFP13 else P.OFPTableMod(dp, 1, 0, [])),
            _raw(P.NXTSetPacketInFormatMsg(dp, 2)),
            _raw(nx.NXTTlvTableMod(dp, command=0, mappings=[(0x102, 0x80, 4, 0)])),
            _raw(nx.NXTCtFlushZone(dp, zone_id=3)),
            _raw(P.OFPPortStatsRequest(dp, 0, of13.OFPP_ANY)),
            _raw(P.OFPGroupDescStatsRequest(dp, 0)),
        ]
        if version == codec.OFP13:
            out.append(_raw(p13.ONFBundleCtrlMsg(dp, 1, 0, 1, [])))
            out.append(_raw(p13.ONFBundleAddMsg(dp, 1, 1, fm, [])))
            out.append(_raw(P.OFPPacketOut(dp, 0xffffffff, 1, [P.OFPActionOutput(2)], b"\0" * 60)))
        else:
            out.append(_raw(P.OFPBundleCtrlMsg(dp, 1, 0, 1, [])))
            fm2 = P.OFPFlowMod(dp, table_id=1, priority=5, match=match, instructions=insts)
            out.append(_raw(P.OFPBundleAddMsg(dp, 1, 1, fm2, [])))
    out += [monitor_request(version, 1, 0x3F), monitor_request(version, 2, 0x0E),
            monitor_cancel(version, 2)]
    return out


def mutate(rng, msgs, raw):
    b = bytearray(raw)
    op = rng.randrange(8)
    if op == 0:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        i = rng.randrange(8, len(b)) if len(b) > 8 else 0
        b[i:i + 4] = bytes(rng.randrange(256) for _ in range(4))
    elif op == 2:
        b = b[:rng.randrange(8, len(b) + 1)]
    elif op == 3:
        b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24)))
    elif op == 4:
        b[1] = rng.randrange(40)
    elif op == 5:   # random interior 16-bit length-ish field
        if len(b) > 10:
            i = rng.randrange(8, len(b) - 1)
            b[i:i + 2] = struct.pack("!H", rng.choice([0, 1, 4, 7, 8, 0xffff, rng.randrange(65536)]))
    elif op == 6:   # splice two messages
        other = rng.choice(msgs)
        cut = rng.randrange(8, len(b) + 1)
        b = b[:cut] + other[rng.randrange(8, len(other)):]
    else:
        b = bytearray(rng.randbytes(rng.randrange(8, 64)))
        b[0] = raw[0]
    if len(b) >= 8:
        b[0] = raw[0]
        struct.pack_into("!H", b, 2, len(b))   # keep framing so each input is one message
    return bytes(b)


class FuzzHarness(Harness):
    """Like Harness.feed, but records non-OFError handler exceptions."""

    def __init__(self, version):
        super().__init__(version=version, allowed=codec.SUPPORTED_VERSIONS)
        self.bugs = []

    def feed_one(self, data):
        self.conn.receive_bytes(data, self.now)
        handled = failed = 0
        while (ev := self.conn.next_event()) is not None:
            if isinstance(ev, MessageReceived):
                handled += 1
                try:
                    for r in self.handlers.handle(self.channel, ev.msg, self.now):
                        self.conn.send(r)
                except OFError as e:
                    failed += 1
                    self.conn.send_error(e, ev.msg.buf, ev.msg.xid)
                except Exception as e:  # noqa: BLE001
                    self.bugs.append((data.hex(), repr(e)))
        out = self.conn.bytes_to_send()
        if failed:
            assert out, "a failed message got no error"
        return out


def test_mutated_messages_never_crash_and_errors_are_sent():
    rng = random.Random(int(os.environ.get("PYVS_FUZZ_SEED", "1234")))
    per_version = max(1, N // len(codec.SUPPORTED_VERSIONS))
    total = 0
    for version in sorted(codec.SUPPORTED_VERSIONS):
        msgs = corpus(version)
        h = FuzzHarness(version)
        for raw in msgs:                      # the valid corpus is accepted
            h.feed_one(raw)
        assert h.bugs == []
        for i in range(per_version):
            if h.conn.closed or i % 5000 == 4999:
                assert h.bugs == [], h.bugs[:5]
                h = FuzzHarness(version)
            h.feed_one(mutate(rng, msgs, rng.choice(msgs)))
            total += 1
        assert h.bugs == [], h.bugs[:5]
    assert total >= N - len(codec.SUPPORTED_VERSIONS)
