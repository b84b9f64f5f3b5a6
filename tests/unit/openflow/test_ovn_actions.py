"""Actions real ovn-controller (23.03) sends in OpenFlow 1.5, as bytes it sent.

Each was a gap found by running OVN against pyvswitch: the flow-mod was
refused (OFPBAC_BAD_TYPE) or a dump could not be read back by ovs-ofctl.
"""
from os_ken.ofproto import ofproto_v1_5_parser as p15

from slowpath import actions as A
from slowpath import dpactions as dp
from slowpath.match import Match
from slowpath.pipeline import FlowMod, Pipeline
from slowpath.port import Port
from slowpath.stack import StackPop, StackPush
from slowpath.flow import parse_packet
from slowpath import xlate as X
from vswitch.openflow import codec, convert

# table=26,priority=100,ip,reg0=0x2002/0x2002,metadata=0x1 actions=ct(commit,
# zone=NXM_NX_REG13[0..15],nat(src),exec(set_field:0/0x1->ct_mark,
# move:NXM_NX_XXREG0[0..31]->NXM_NX_CT_LABEL[96..127])),resubmit(,27)
CT_EXEC_MOVE = bytes.fromhex(
    "060e00c800000002000000000000000000000000000000001a00000000000064ffffffffffffffff"
    "ffffffff000000000001002a80000a02080080010110000020020000000000002002000000008000"
    "040800000000000000010000000000000004006800000000ffff0050000023200023000100011a04"
    "000fff0000000000ffff0010000023200024000000010000001900100001d7080000000000000001"
    "001c001800200000006000000001de100001d81000000000ffff001000002320000efff81b000000")
# table=64,actions=push:NXM_OF_IN_PORT[],set_field:ANY->in_port,resubmit(,65),
# pop:NXM_OF_IN_PORT[]
LOOPBACK = bytes.fromhex(
    "060e009000000002000000000000000000000000000000004000000000008000ffffffffffffffff"
    "ffffffff0000000000010004000000000004005800000000ffff001800002320001b000000000002"
    "00100000000000000019001000000002ffff000000000000ffff001000002320000efff841000000"
    "ffff001800002320001c0000000000020010000000000000")


def _actions(raw):
    fm = convert.flow_mod_from_oken(codec.parse(raw))
    (inst,) = fm.instructions
    return fm, inst.actions


def _wire(actions) -> bytes:
    buf = bytearray()
    for a in actions:
        o = convert.action_to_oken(a, codec.OFP15)
        start = len(buf)
        o.serialize(buf, start)
    return bytes(buf)


def test_ct_exec_with_of15_copy_field_is_accepted():
    """os-ken parsed ct's nested actions itself and failed on copy_field."""
    fm, (ct, resubmit) = _actions(CT_EXEC_MOVE)
    assert isinstance(ct, A.Ct) and ct.commit and ct.zone_src == "reg13" and ct.nat == "src"
    assert ct.exec == (A.SetField("ct_mark", 0, 1),
                       A.Move("xxreg0", "ct_label", 32, src_ofs=0, dst_ofs=96))
    assert resubmit == A.Resubmit(in_port=0xfffffff8, table=27)
    # and it dumps back as it came (the action bytes are the message's tail)
    assert CT_EXEC_MOVE.endswith(_wire((ct, resubmit)))


def test_stack_push_pop_and_set_in_port_any_round_trip():
    fm, acts = _actions(LOOPBACK)
    assert acts == (StackPush("in_port", 0, 16), A.SetField("in_port", 0xffffffff),
                    A.Resubmit(in_port=0xfffffff8, table=65), StackPop("in_port", 0, 16))
    # OVS rejects OXM in_port=ANY in a dump: it is written back as it was sent
    assert LOOPBACK.endswith(_wire(acts))


def test_stack_of_a_register_slice():
    a = p15.NXActionStackPush(field="reg1", start=3, end=8)
    assert convert.action_from_oken(a, codec.OFP15) == StackPush("reg1", 3, 8)


def _bridge():
    p = Pipeline()
    for i in (1, 2):
        p.set_port(Port(i, f"p{i}", dp_port=100 + i))
    return p


def _add(p, table, match, *actions):
    p.flow_mod(FlowMod("add", table, 100, Match.parse(match),
                       instructions=(A.ApplyActions(tuple(actions)),)), 0.0)


FRAME = bytes.fromhex("0a0000000002" "0a0000000001" "0800") + bytes(46)


def test_loopback_output_to_in_port_then_in_port_restored():
    """OVN's table 64: in_port saved, cleared so output to it is allowed,
    restored after the resubmit."""
    p = _bridge()
    _add(p, 0, "in_port=1", StackPush("in_port", 0, 16), A.SetField("in_port", 0xffffffff),
         A.Resubmit(in_port=0xfffffff8, table=1), StackPop("in_port", 0, 16),
         A.Resubmit(in_port=0xfffffff8, table=2))
    _add(p, 1, "", A.Output(1))
    _add(p, 2, "in_port=1", A.Output(2))
    x = p.xlate(parse_packet(FRAME, 1), FRAME, 1.0)
    assert x.actions == (dp.Output(101), dp.Output(102))


def test_pop_of_an_empty_stack_is_ignored():
    p = _bridge()
    _add(p, 0, "in_port=1", StackPop("reg0", 0, 32), A.Output(2))
    x = p.xlate(parse_packet(FRAME, 1), FRAME, 1.0)
    assert x.actions == (dp.Output(102),)


def test_long_forward_resubmit_chains_as_in_ovn_pipelines():
    """OVS limits only resubmits to an earlier table; a packet OVN routes
    from one logical switch to another nests about 120 forward resubmits."""
    p = _bridge()
    for t in range(150):
        _add(p, t, "", A.Resubmit(in_port=0xfffffff8, table=t + 1))
    _add(p, 150, "", A.Output(2))
    x = p.xlate(parse_packet(FRAME, 1), FRAME, 1.0)
    assert x.actions == (dp.Output(102),)
    # a loop still ends (dropped), without a RecursionError
    _add(p, 150, "", A.Resubmit(in_port=0xfffffff8, table=0))
    assert p.xlate(parse_packet(FRAME, 1), FRAME, 1.0).actions == ()


# table=68,priority=100,tcp actions=learn(table=69,delete_learned,cookie=0xd10dc739,
# OXM_OF_METADATA[],eth_type=0x800,NXM_OF_IP_SRC[],ip_dst=10.0.0.100,nw_proto=6,
# NXM_OF_TCP_SRC[]=NXM_OF_TCP_DST[],load:0x1->NXM_NX_REG10[7])   (OVN's LB hairpin)
LEARN = bytes.fromhex(
    "060e00c000000002000000000000000000000000000000004400000000000064ffffffffffffffff"
    "ffffffff000000000001000f80000a0208008000140106000004008000000000ffff007800002320"
    "001000000000800000000000d10dc739000245000000000000408000040800008000040800002010"
    "0800000006020000002000000e04000000000e04000020200a000064000010040000200800060000"
    "0c01000000100000140200000000120200002801000100011404000700000000")


def test_learn_is_parsed_without_os_ken_and_dumps_back_identically():
    """os-ken had no usable NXAST_LEARN parser (it could loop forever)."""
    fm, (learn,) = _actions(LEARN)
    assert isinstance(learn, A.Learn)
    assert (learn.table_id, learn.cookie, learn.flags) == (69, 0xd10dc739,
                                                           frozenset({"delete_learned"}))
    assert learn.specs[0] == A.LearnSpec("match", "metadata", 64, 0, "metadata", 0)
    assert learn.specs[3] == A.LearnSpec("match", "ip_dst", 32, 0, None, 0, 0x0a000064)
    assert learn.specs[5] == A.LearnSpec("match", "tcp_src", 16, 0, "tcp_dst", 0)
    assert learn.specs[6] == A.LearnSpec("load", "reg10", 1, 7, None, 0, 1)
    assert LEARN.endswith(_wire((learn,)))


def test_learned_rule_from_ovn_hairpin_flow_matches_the_reply():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    fm, (learn,) = _actions(LEARN)
    p = _bridge()
    _add(p, 0, "tcp", learn)
    frame = bytes(Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02")
                  / IP(src="10.0.0.2", dst="10.0.0.2") / TCP(sport=40000, dport=80))
    p.xlate(parse_packet(frame, 1), frame, 1.0)
    (rule,) = list(p.rules(69))
    assert rule.match.to_string() == "tcp,metadata=0x0,nw_src=10.0.0.2,nw_dst=10.0.0.100,tp_src=80"
    assert rule.cookie == 0xd10dc739
    assert rule.instructions == (A.ApplyActions((A.SetField("reg10", 0x80, 0x80),)),)


def test_dec_ttl_with_controller_ids_round_trips():
    """OVN's ip.ttl-- is dec_ttl(0) (NXAST_DEC_TTL_CNT_IDS), refused before."""
    wire = bytes.fromhex("ffff00180000232000150001000000000000000000000000")
    (a,) = codec._parse_actions(p15, wire, 0, len(wire))
    assert convert.action_from_oken(a, codec.OFP15) == A.DecTtl(controller_ids=(0,))
    assert _wire((A.DecTtl(controller_ids=(0,)),)) == wire


def test_controller2_with_meter_id_round_trips():
    """OVN's logged ACLs send to the controller through a meter
    (controller(userdata=...,meter_id=1)); os-ken's parser knew no
    NXAC2PT_METER_ID and the whole flow bundle was refused."""
    wire = bytes.fromhex("ffff0030000023200025000000000000000300170000000700000000010464726f70"
                         "2d69636d70000005000800000001")
    (a,) = codec._parse_actions(p15, wire, 0, len(wire))
    c = convert.action_from_oken(a, codec.OFP15)
    assert c == A.Controller(userdata=bytes.fromhex("00000007000000000104") + b"drop-icmp",
                             meter_id=1)
    assert _wire((c,)) == wire
    # OVS pads u8/u16 properties to 8 bytes: max_len, id, pause as ovs-ofctl sends them
    wire = bytes.fromhex("ffff0030000023200025000000000000000000080080000000010008000300000003"
                         "0007010203000004000400000000")
    (a,) = codec._parse_actions(p15, wire, 0, len(wire))
    assert convert.action_from_oken(a, codec.OFP15) == A.Controller(
        max_len=128, controller_id=3, userdata=b"\x01\x02\x03", pause=True)


def test_of15_meter_action_round_trips():
    """OVN's QoS rate limit is meter:N as an OF1.5 action (the 1.3
    instruction became an action); it was refused."""
    wire = bytes.fromhex("001d000800000001")
    (a,) = codec._parse_actions(p15, wire, 0, len(wire))
    m = convert.action_from_oken(a, codec.OFP15)
    assert m == A.Meter(1)
    assert _wire((m,)) == wire
