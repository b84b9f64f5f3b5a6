"""Handlers against a pipeline: messages in as bytes, answers parsed back by os-ken."""
import pytest
from os_ken.ofproto import nicira_ext, nx_match
from os_ken.ofproto import ofproto_v1_0 as of10, ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as of13, ofproto_v1_3_parser as p13

from slowpath.match import Match
from tests.unit.openflow.helpers import Harness
from vswitch.openflow import codec, sp
from vswitch.openflow.handlers import PIF_NXT_PACKET_IN2, packet_in_msg, port_status_msg


@pytest.fixture
def h():
    return Harness()


def only(replies, name):
    assert [type(r).__name__ for r in replies] == [name], replies
    return replies[0]


def test_features_desc_config(h):
    f = only(h.roundtrip(h.P.OFPFeaturesRequest(h.dp)), "OFPSwitchFeatures")
    assert (f.datapath_id, f.n_tables, f.xid) == (0x1234, 254, 0x77)
    d = only(h.roundtrip(h.P.OFPDescStatsRequest(h.dp, 0)), "OFPDescStatsReply")
    assert d.body.dp_desc.rstrip(b"\0") == b"br0"
    h.roundtrip(h.P.OFPSetConfig(h.dp, of13.OFPC_FRAG_DROP, 256))
    c = only(h.roundtrip(h.P.OFPGetConfigRequest(h.dp)), "OFPGetConfigReply")
    assert (c.flags, c.miss_send_len) == (of13.OFPC_FRAG_DROP, 256)


def test_port_desc_lists_ports_with_state(h):
    r = only(h.roundtrip(h.P.OFPPortDescStatsRequest(h.dp, 0)), "OFPPortDescStatsReply")
    assert [(p.port_no, p.name.rstrip(b"\0"), p.hw_addr) for p in r.body] == [
        (1, b"p1", "02:00:00:00:00:01"), (2, b"p2", "02:00:00:00:00:02"),
        (of13.OFPP_LOCAL, b"br0", "02:00:00:00:00:00")]
    assert r.body[0].state & of13.OFPPS_LIVE


def test_flow_mod_reaches_pipeline_and_stats_round_trip(h):
    P = h.P
    match = P.OFPMatch(in_port=1, eth_type=0x800, ipv4_dst=("10.0.0.0", "255.0.0.0"), reg0=(5, 0xff))
    insts = [P.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS, [
        P.OFPActionSetField(eth_dst="00:11:22:33:44:55"), P.OFPActionOutput(2),
        P.NXActionResubmitTable(in_port=0xfff8, table_id=3)]),
        P.OFPInstructionGotoTable(4)]
    assert h.roundtrip(h.flow_mod(table_id=1, priority=7, cookie=9, match=match,
                                  instructions=insts)) == []
    (fm,) = h.pipeline.flow_stats()
    assert (fm.table_id, fm.priority, fm.cookie) == (1, 7, 9)
    assert fm.match == Match.from_fields({"in_port": 1, "eth_type": 0x800,
                                          "ip_dst": (0x0A000000, 0xFF000000),
                                          "reg0": (5, 0xff)})
    assert fm.instructions[0].actions == (
        sp.SetField("eth_dst", 0x001122334455), sp.Output(2), sp.Resubmit(table=3))
    assert fm.instructions[1] == sp.GotoTable(4)
    r = only(h.roundtrip(P.OFPFlowStatsRequest(h.dp, 0, of13.OFPTT_ALL, of13.OFPP_ANY,
                                               of13.OFPG_ANY, 0, 0, P.OFPMatch())),
             "OFPFlowStatsReply")
    (s,) = r.body
    assert (s.table_id, s.priority, s.cookie) == (1, 7, 9)
    assert dict(s.match._fields2) == dict(match._fields2)
    assert [type(a).__name__ for a in s.instructions[0].actions] == [
        "OFPActionSetField", "OFPActionOutput", "NXActionResubmitTable"]
    agg = only(h.roundtrip(P.OFPAggregateStatsRequest(h.dp, 0, of13.OFPTT_ALL, of13.OFPP_ANY,
                                                      of13.OFPG_ANY, 0, 0, P.OFPMatch())),
               "OFPAggregateStatsReply")
    assert agg.body.flow_count == 1


def test_bad_match_prereq_is_reported(h):
    # tcp_dst without ip_proto=6: OFPBMC_BAD_PREREQ from the slow path's Match
    err = only(h.roundtrip(h.flow_mod(match=h.P.OFPMatch(tcp_dst=80))), "OFPErrorMsg")
    assert (err.type, err.code) == (of13.OFPET_BAD_MATCH, of13.OFPBMC_BAD_PREREQ)
    assert err.xid == 0x77


def test_unsupported_action_is_bad_action(h):
    insts = [h.P.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS, [h.P.OFPActionSetQueue(1),
                                                                   h.P.NXActionBundle(
        algorithm=0, fields=0, basis=0, slave_type=0, n_slaves=0, ofs_nbits=0, dst=0,
        slaves=[])])]
    err = only(h.roundtrip(h.flow_mod(instructions=insts)), "OFPErrorMsg")
    assert (err.type, err.code) == (of13.OFPET_BAD_ACTION, of13.OFPBAC_BAD_TYPE)


def test_many_flow_stats_split_with_reply_more(h):
    for i in range(1500):
        h.pipeline.flow_mod(sp.FlowMod(command="add", priority=i,
                                       match=Match.from_fields({"reg1": i}),
                                       instructions=(sp.ApplyActions((sp.Output(1),)),)), 0.0)
    req = h.P.OFPFlowStatsRequest(h.dp, 0, of13.OFPTT_ALL, of13.OFPP_ANY, of13.OFPG_ANY, 0, 0,
                                  h.P.OFPMatch())
    replies = h.roundtrip(req)
    assert len(replies) > 1
    assert all(r.flags & of13.OFPMPF_REPLY_MORE for r in replies[:-1])
    assert not replies[-1].flags
    assert sum(len(r.body) for r in replies) == 1500


def test_barrier_revalidates_before_reply(h):
    only(h.roundtrip(h.P.OFPBarrierRequest(h.dp)), "OFPBarrierReply")
    assert h.backend.revalidations == 1


def test_packet_out_goes_to_backend(h):
    P = h.P
    msg = P.OFPPacketOut(h.dp, 0xffffffff, of13.OFPP_CONTROLLER, [P.OFPActionOutput(2)], b"\x01" * 60)
    assert h.roundtrip(msg) == []
    assert h.backend.packet_outs == [(of13.OFPP_CONTROLLER, [sp.Output(2)], b"\x01" * 60)]
    bad = P.OFPPacketOut(h.dp, 7, 1, [], None)
    err = only(h.roundtrip(bad), "OFPErrorMsg")
    assert (err.type, err.code) == (of13.OFPET_BAD_REQUEST, of13.OFPBRC_BUFFER_UNKNOWN)
    bad = P.OFPPacketOut(h.dp, 0xffffffff, 99, [], b"")
    assert only(h.roundtrip(bad), "OFPErrorMsg").code == of13.OFPBRC_BAD_PORT


def test_port_mod_checks_port_and_address(h):
    P = h.P
    assert h.roundtrip(P.OFPPortMod(h.dp, 1, "02:00:00:00:00:01", of13.OFPPC_PORT_DOWN,
                                    of13.OFPPC_PORT_DOWN, 0)) == []
    assert h.backend.port_mods == [(1, of13.OFPPC_PORT_DOWN, of13.OFPPC_PORT_DOWN)]
    err = only(h.roundtrip(P.OFPPortMod(h.dp, 1, "02:00:00:00:00:09", 0, 1, 0)), "OFPErrorMsg")
    assert (err.type, err.code) == (of13.OFPET_PORT_MOD_FAILED, of13.OFPPMFC_BAD_HW_ADDR)
    err = only(h.roundtrip(P.OFPPortMod(h.dp, 9, "02:00:00:00:00:09", 0, 1, 0)), "OFPErrorMsg")
    assert err.code == of13.OFPPMFC_BAD_PORT


def test_roles_master_slave_generation(h):
    P = h.P
    r = only(h.roundtrip(P.OFPRoleRequest(h.dp, of13.OFPCR_ROLE_MASTER, 10)), "OFPRoleReply")
    assert (r.role, r.generation_id) == (of13.OFPCR_ROLE_MASTER, 10)
    h2 = Harness(switch=h.switch)
    r = only(h2.roundtrip(P.OFPRoleRequest(h2.dp, of13.OFPCR_ROLE_MASTER, 9)), "OFPErrorMsg")
    assert (r.type, r.code) == (of13.OFPET_ROLE_REQUEST_FAILED, of13.OFPRRFC_STALE)
    only(h2.roundtrip(P.OFPRoleRequest(h2.dp, of13.OFPCR_ROLE_MASTER, 11)), "OFPRoleReply")
    assert h.channel.role == of13.OFPCR_ROLE_SLAVE           # old master demoted
    err = only(h.roundtrip(h.flow_mod()), "OFPErrorMsg")
    assert (err.type, err.code) == (of13.OFPET_BAD_REQUEST, of13.OFPBRC_IS_SLAVE)
    only(h.roundtrip(P.OFPFeaturesRequest(h.dp)), "OFPSwitchFeatures")   # reads still fine


def test_async_config_filters_packet_in_and_flow_removed(h):
    P = h.P
    a = only(h.roundtrip(P.OFPGetAsyncRequest(h.dp)), "OFPGetAsyncReply")
    assert a.packet_in_mask == [3, 0] and a.flow_removed_mask == [15, 0]
    h.roundtrip(P.OFPSetAsync(h.dp, [1 << of13.OFPR_ACTION, 0], [7, 7], [0, 0]))
    ev = PacketIn(reason=of13.OFPR_NO_MATCH)
    assert packet_in_msg(h.channel, ev) is None
    assert packet_in_msg(h.channel, PacketIn(reason=of13.OFPR_ACTION)) is not None


class PacketIn:
    def __init__(self, **kw):
        self.reason = of13.OFPR_NO_MATCH
        self.in_port = 1
        self.table_id = 3
        self.cookie = 0xab
        self.data = bytes(range(200))
        self.__dict__.update(kw)


def test_packet_in_standard_truncated_to_miss_send_len(h):
    msg = packet_in_msg(h.channel, PacketIn())
    h.conn.send(msg)
    from tests.unit.openflow.helpers import parse_reply, split_messages
    (raw,) = split_messages(h.conn.bytes_to_send())
    pi = parse_reply(raw)
    assert type(pi).__name__ == "OFPPacketIn"
    assert (pi.total_len, len(pi.data), pi.table_id, pi.cookie, pi.buffer_id) == (
        200, 128, 3, 0xab, 0xffffffff)
    assert pi.match["in_port"] == 1


def test_packet_in2_after_set_packet_in_format(h):
    from tests.unit.openflow.helpers import parse_reply, split_messages
    h.roundtrip(p13.NXTSetPacketInFormatMsg(h.dp, PIF_NXT_PACKET_IN2))
    msg = packet_in_msg(h.channel, PacketIn(reason=of13.OFPR_ACTION, max_len=0xffff,
                                            userdata=b"\x01\x02", continuation=b"CONT"))
    h.conn.send(msg)
    (raw,) = split_messages(h.conn.bytes_to_send())
    pi = parse_reply(raw)
    assert type(pi).__name__ == "NXTPacketIn2"
    assert (pi.data, pi.total_len, pi.table_id, pi.reason) == (
        bytes(range(200)), 200, 3, of13.OFPR_ACTION)
    # OVS pads 64-bit properties (os-ken's parser does not know): pad + cookie
    cookie = [p for p in pi.properties if p.type == nicira_ext.NXPINT_COOKIE][0]
    assert cookie.length == 16
    # the continuation is a nested property list: 4 pad bytes, then ours
    assert pi.userdata == b"\x01\x02" and pi.continuation == bytes(4) + b"CONT"


def test_port_status_message(h):
    from tests.unit.openflow.helpers import parse_reply
    port = sp.Port(ofport=5, name="p5", hw_addr="02:00:00:00:00:05", port_down=True)
    h.conn.send(port_status_msg(h.channel, of13.OFPPR_ADD, port))
    ps = parse_reply(h.conn.bytes_to_send())
    assert (ps.reason, ps.desc.port_no, ps.desc.config & of13.OFPPC_PORT_DOWN) == (
        of13.OFPPR_ADD, 5, of13.OFPPC_PORT_DOWN)


def test_delete_sends_flow_removed_to_every_interested_channel(h):
    h2 = Harness(switch=h.switch)
    h.roundtrip(h.flow_mod(flags=of13.OFPFF_SEND_FLOW_REM, cookie=3,
                           match=h.P.OFPMatch(in_port=2)))
    h.roundtrip(h.flow_mod(command=of13.OFPFC_DELETE, table_id=of13.OFPTT_ALL,
                           out_port=of13.OFPP_ANY, out_group=of13.OFPG_ANY))
    from tests.unit.openflow.helpers import parse_reply, split_messages
    for hh in (h2,):
        (raw,) = split_messages(hh.conn.bytes_to_send())
        fr = parse_reply(raw)
        assert type(fr).__name__ == "OFPFlowRemoved"
        assert (fr.cookie, fr.reason, fr.match["in_port"]) == (3, of13.OFPRR_DELETE, 2)


def test_group_and_meter_mods(h):
    P = h.P
    h.roundtrip(P.OFPGroupMod(h.dp, of13.OFPGC_ADD, of13.OFPGT_ALL, 1,
                              [P.OFPBucket(0, of13.OFPP_ANY, of13.OFPG_ANY, [P.OFPActionOutput(1)])]))
    assert h.pipeline.groups[1].buckets[0].actions == (sp.Output(1),)
    err = only(h.roundtrip(P.OFPGroupMod(h.dp, of13.OFPGC_ADD, of13.OFPGT_ALL, 1, [])), "OFPErrorMsg")
    assert (err.type, err.code) == (of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_GROUP_EXISTS)
    d = only(h.roundtrip(P.OFPGroupDescStatsRequest(h.dp, 0)), "OFPGroupDescStatsReply")
    assert d.body[0].group_id == 1
    h.roundtrip(P.OFPMeterMod(h.dp, of13.OFPMC_ADD, of13.OFPMF_KBPS, 1,
                              [P.OFPMeterBandDrop(rate=1000, burst_size=0)]))
    c = only(h.roundtrip(P.OFPMeterConfigStatsRequest(h.dp, 0, of13.OFPM_ALL)),
             "OFPMeterConfigStatsReply")
    assert c.body[0].bands[0].rate == 1000


def test_table_features_has_required_properties(h):
    replies = h.roundtrip(h.P.OFPTableFeaturesStatsRequest(h.dp, 0, []))
    body = [t for r in replies for t in r.body]
    assert len(body) == 254
    assert {p.type for p in body[0].properties} >= {0, 2, 4, 6, 8, 10, 12, 14}


def _bundle(h, bid, typ, flags=of13.ONF_BF_ATOMIC):
    return h.roundtrip(p13.ONFBundleCtrlMsg(h.dp, bid, typ, flags, []))


def test_bundle_commit_is_atomic(h):
    P = h.P
    r = only(_bundle(h, 1, of13.ONF_BCT_OPEN_REQUEST), "ONFBundleCtrlMsg")
    assert r.type == of13.ONF_BCT_OPEN_REPLY
    for port in (1, 2):
        fm = h.flow_mod(match=P.OFPMatch(in_port=port))
        assert h.roundtrip(p13.ONFBundleAddMsg(h.dp, 1, of13.ONF_BF_ATOMIC, fm, [])) == []
    assert h.pipeline.flow_stats() == []        # nothing before commit
    only(_bundle(h, 1, of13.ONF_BCT_CLOSE_REQUEST), "ONFBundleCtrlMsg")
    r = only(_bundle(h, 1, of13.ONF_BCT_COMMIT_REQUEST), "ONFBundleCtrlMsg")
    assert r.type == of13.ONF_BCT_COMMIT_REPLY
    assert len(h.pipeline.flow_stats()) == 2


def test_bundle_commit_failure_rolls_back(h):
    P = h.P
    _bundle(h, 2, of13.ONF_BCT_OPEN_REQUEST)
    h.roundtrip(p13.ONFBundleAddMsg(h.dp, 2, 1, h.flow_mod(match=P.OFPMatch(in_port=1)), []))
    bad = h.flow_mod(match=P.OFPMatch(in_port=2), instructions=[
        P.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS, [P.OFPActionGroup(99)])])
    h.roundtrip(p13.ONFBundleAddMsg(h.dp, 2, 1, bad, []))   # pipeline rejects: no group 99
    err = only(_bundle(h, 2, of13.ONF_BCT_COMMIT_REQUEST), "OFPErrorMsg")
    assert err.type == of13.OFPET_BAD_ACTION
    assert h.pipeline.flow_stats() == []


def test_bundle_rollback_restores_modified_instructions_and_counters(h):
    """Rolled back without deep-copying tables (OVN's bundles touch tables of
    thousands of rules): a modify in place, a delete and a replacing add are
    all undone, counters included."""
    P = h.P
    out = lambda port: [P.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS,   # noqa: E731
                                                [P.OFPActionOutput(port)])]
    for port in (1, 2, 3):
        h.roundtrip(h.flow_mod(match=P.OFPMatch(in_port=port), instructions=out(port)))
    rules = {r.match.to_string(): r for r in h.pipeline.rules(0)}
    rules["in_port=1"].packet_count = 7
    before = sorted((r.match.to_string(), r.instructions, r.packet_count)
                    for r in h.pipeline.rules(0))
    _bundle(h, 6, of13.ONF_BCT_OPEN_REQUEST)
    msgs = [h.flow_mod(command=of13.OFPFC_MODIFY_STRICT, match=P.OFPMatch(in_port=1),
                       instructions=out(9), flags=of13.OFPFF_RESET_COUNTS),
            h.flow_mod(command=of13.OFPFC_DELETE_STRICT, match=P.OFPMatch(in_port=2),
                       out_port=of13.OFPP_ANY, out_group=of13.OFPG_ANY),
            h.flow_mod(match=P.OFPMatch(in_port=3), instructions=out(8)),
            h.flow_mod(match=P.OFPMatch(in_port=4), instructions=out(4)),
            h.flow_mod(match=P.OFPMatch(in_port=5), instructions=[P.OFPInstructionActions(
                of13.OFPIT_APPLY_ACTIONS, [P.OFPActionGroup(77)])])]      # no group 77
    for m in msgs:
        h.roundtrip(p13.ONFBundleAddMsg(h.dp, 6, 1, m, []))
    only(_bundle(h, 6, of13.ONF_BCT_COMMIT_REQUEST), "OFPErrorMsg")
    after = sorted((r.match.to_string(), r.instructions, r.packet_count)
                   for r in h.pipeline.rules(0))
    assert after == before


def test_bundle_unknown_id_is_experimenter_error(h):
    err = only(_bundle(h, 9, of13.ONF_BCT_COMMIT_REQUEST), "OFPErrorMsg")
    assert (err.exp_type, err.experimenter) == (2302, codec.ONF)


# ---- OpenFlow 1.0 and Nicira extensions
@pytest.fixture
def h10():
    return Harness(version=codec.OFP10)


def test_of10_features_include_ports(h10):
    f = only(h10.roundtrip(p10.OFPFeaturesRequest(h10.dp)), "OFPSwitchFeatures")
    assert sorted(f.ports) == [1, 2, of10.OFPP_LOCAL]


def test_of10_flow_mod_and_stats(h10):
    P = p10
    match = P.OFPMatch(wildcards=of10.OFPFW_ALL & ~(of10.OFPFW_IN_PORT | of10.OFPFW_DL_TYPE),
                       in_port=1, dl_type=0x800)
    fm = P.OFPFlowMod(h10.dp, match, 5, of10.OFPFC_ADD, 0, 0, 100, 0xffffffff, of10.OFPP_NONE, 0,
                      [P.OFPActionOutput(of10.OFPP_LOCAL)])
    assert h10.roundtrip(fm) == []
    assert h10.pipeline.flow_stats()[0].instructions == (
        sp.ApplyActions((sp.Output(of13.OFPP_LOCAL),)),)
    st = only(h10.roundtrip(P.OFPFlowStatsRequest(h10.dp, 0, P.OFPMatch(), 0xff, of10.OFPP_NONE)),
              "OFPFlowStatsReply")
    (s,) = st.body
    assert (s.match.in_port, s.match.dl_type, s.cookie, s.priority) == (1, 0x800, 5, 100)
    assert s.actions[0].port == of10.OFPP_LOCAL


def test_nxm_flow_mod_with_table_id_and_registers(h10):
    h10.roundtrip(p10.NXTSetFlowFormat(h10.dp, nicira_ext.NXFF_NXM))
    h10.roundtrip(p10.NXTFlowModTableId(h10.dp, 1))
    rule = nx_match.ClsRule()
    rule.set_in_port(2)
    rule.set_reg(3, 0x42)
    fm = p10.NXTFlowMod(h10.dp, cookie=7, command=(4 << 8) | of10.OFPFC_ADD, priority=9,
                        rule=rule, actions=[p10.NXActionResubmitTable(in_port=0xfff8, table_id=5)])
    assert h10.roundtrip(fm) == []
    (r,) = h10.pipeline.flow_stats()
    assert (r.table_id, r.priority, r.cookie) == (4, 9, 7)
    assert r.match == Match.from_fields({"in_port": 2, "reg3": 0x42})
    assert r.instructions[0].actions == (sp.Resubmit(table=5),)


def test_unsupported_flow_format_is_eperm(h10):
    err = only(h10.roundtrip(p10.NXTSetFlowFormat(h10.dp, 7)), "OFPErrorMsg")
    assert (err.type, err.code) == (of10.OFPET_BAD_REQUEST, of10.OFPBRC_EPERM)


def test_nx_role_request(h10):
    r = only(h10.roundtrip(p10.NXTRoleRequest(h10.dp, 2)), "OFPVendor")
    assert type(r.data).__name__ == "NXTRoleReply" and r.data.role == 2


class _Locked:
    """Like the daemon's LockedPipeline: a proxy that locks every call."""

    def __init__(self, pipeline):
        import threading
        self._pipeline, self._lock, self.lock_held_in_commit = pipeline, threading.RLock(), []

    def __getattr__(self, name):
        attr = getattr(self._pipeline, name)
        if not callable(attr):
            return attr

        def locked(*a, **kw):
            with self._lock:
                return attr(*a, **kw)
        return locked


def test_bundle_rollback_through_a_locking_proxy():
    from tests.unit.openflow.fake_pipeline import FakeBackend, make_pipeline
    from vswitch.openflow.handlers import SwitchContext
    real = make_pipeline()
    sw = SwitchContext("br0", _Locked(real), FakeBackend(), 1)
    h = Harness(switch=sw)
    P = h.P
    h.roundtrip(h.flow_mod(match=P.OFPMatch(in_port=2)))
    _bundle(h, 3, of13.ONF_BCT_OPEN_REQUEST)
    h.roundtrip(p13.ONFBundleAddMsg(h.dp, 3, 1, h.flow_mod(command=of13.OFPFC_DELETE,
                                                           table_id=of13.OFPTT_ALL,
                                                           out_port=of13.OFPP_ANY,
                                                           out_group=of13.OFPG_ANY), []))
    bad = h.flow_mod(instructions=[P.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS,
                                                           [P.OFPActionGroup(9)])])
    h.roundtrip(p13.ONFBundleAddMsg(h.dp, 3, 1, bad, []))
    only(_bundle(h, 3, of13.ONF_BCT_COMMIT_REQUEST), "OFPErrorMsg")
    assert len(real.flow_stats()) == 1          # the delete was rolled back in the real one


def test_bundle_with_groups_applies_in_order_and_rolls_back_everything(h):
    P = h.P
    h.roundtrip(h.flow_mod(table_id=1, match=P.OFPMatch(in_port=2)))
    before = [(r.table_id, r.match) for r in h.pipeline.flow_stats()]
    _bundle(h, 4, of13.ONF_BCT_OPEN_REQUEST)
    msgs = [
        h.flow_mod(command=of13.OFPFC_DELETE, table_id=1, out_port=of13.OFPP_ANY,
                   out_group=of13.OFPG_ANY),
        P.OFPGroupMod(h.dp, of13.OFPGC_ADD, of13.OFPGT_ALL, 5,
                      [P.OFPBucket(0, of13.OFPP_ANY, of13.OFPG_ANY, [P.OFPActionOutput(1)])]),
        h.flow_mod(table_id=2, instructions=[P.OFPInstructionActions(
            of13.OFPIT_APPLY_ACTIONS, [P.OFPActionGroup(5)])]),       # needs the group above
    ]
    for m in msgs:
        assert h.roundtrip(p13.ONFBundleAddMsg(h.dp, 4, 1, m, [])) == []
    only(_bundle(h, 4, of13.ONF_BCT_COMMIT_REQUEST), "ONFBundleCtrlMsg")
    assert 5 in h.pipeline.groups and {x.table_id for x in h.pipeline.flow_stats()} == {2}
    # now one that fails at the end: everything it did is undone
    _bundle(h, 5, of13.ONF_BCT_OPEN_REQUEST)
    for m in [h.flow_mod(table_id=3, match=P.OFPMatch(in_port=1)),
              P.OFPGroupMod(h.dp, of13.OFPGC_DELETE, of13.OFPGT_ALL, 5, []),
              h.flow_mod(table_id=4, instructions=[P.OFPInstructionActions(
                  of13.OFPIT_APPLY_ACTIONS, [P.OFPActionGroup(5)])])]:   # group gone: fails
        h.roundtrip(p13.ONFBundleAddMsg(h.dp, 5, 1, m, []))
    only(_bundle(h, 5, of13.ONF_BCT_COMMIT_REQUEST), "OFPErrorMsg")
    assert 5 in h.pipeline.groups
    assert {x.table_id for x in h.pipeline.flow_stats()} == {2}
    assert before  # (table 1 rule was deleted by the first, committed bundle)


def test_nxm_session_gets_nxt_flow_removed_with_registers(h10):
    import struct
    h10.roundtrip(p10.NXTSetFlowFormat(h10.dp, nicira_ext.NXFF_NXM))
    rule = nx_match.ClsRule()
    rule.set_reg(3, 7)
    h10.roundtrip(p10.NXTFlowMod(h10.dp, cookie=9, command=of10.OFPFC_ADD, rule=rule,
                                 flags=of10.OFPFF_SEND_FLOW_REM, actions=[]))
    delete = p10.NXTFlowMod(h10.dp, cookie=0, command=of10.OFPFC_DELETE,
                            rule=nx_match.ClsRule(), actions=[])
    delete.xid = 5
    delete.serialize()
    (raw,) = h10.feed(bytes(delete.buf))
    vendor, subtype = struct.unpack_from("!II", raw, 8)
    assert (raw[1], vendor, subtype) == (of10.OFPT_VENDOR, 0x2320, nicira_ext.NXT_FLOW_REMOVED)
    cookie, prio, reason = struct.unpack_from("!QHB", raw, 16)
    assert (cookie, reason) == (9, of10.OFPRR_DELETE)
    # NXM_NX_REG3 (class 1, field 3, 4 bytes) = 7 inside the match
    assert struct.pack("!IIxxxxx", (1 << 16) | (3 << 9) | 4, 7)[:8] in raw


def test_controller_id_filters_packet_ins(h):
    from vswitch.openflow import nx
    h.roundtrip(nx.NXTSetControllerId(h.dp, controller_id=5))
    assert packet_in_msg(h.channel, PacketIn(reason=of13.OFPR_ACTION)) is None
    assert packet_in_msg(h.channel, PacketIn(reason=of13.OFPR_ACTION, controller_id=5)) is not None


def test_packet_in2_continuation_comes_back_with_nxt_resume(h):
    """controller(pause): the continuation we send in NXT_PACKET_IN2 returns in
    NXT_RESUME and reaches the backend's resume hook with packet and metadata."""
    from tests.unit.openflow.helpers import parse_reply, split_messages
    from vswitch.openflow import nx
    from slowpath.flow import FlowKey
    resumed = []
    h.backend.resume = lambda packet, metadata, cont: resumed.append((packet, metadata, cont))
    h.roundtrip(p13.NXTSetPacketInFormatMsg(h.dp, PIF_NXT_PACKET_IN2))
    key = FlowKey.from_fields(in_port=2)
    h.conn.send(packet_in_msg(h.channel, PacketIn(reason=of13.OFPR_ACTION, key=key,
                                                  continuation=b"\x01" * 16)))
    (raw,) = split_messages(h.conn.bytes_to_send())
    pi = parse_reply(raw)
    # a controller echoes packet, metadata and continuation back (OVN's pinctrl does)
    keep = [p for p in pi.properties if p.type in (nicira_ext.NXPINT_PACKET,
                                                   nicira_ext.NXPINT_METADATA,
                                                   nicira_ext.NXPINT_CONTINUATION)]
    resume = nx.NXTResume(h.dp, properties=keep)
    assert h.roundtrip(resume) == []
    ((packet, metadata, cont),) = resumed
    assert packet == bytes(range(200)) and cont == b"\x01" * 16
    assert metadata.get("in_port") == (2, 0xFFFFFFFF)
    del h.backend.resume
    err = h.roundtrip(resume)[0]
    assert (err.type, err.exp_type, err.experimenter) == (0xffff, sp.NXR_NOT_SUPPORTED, 0x2320)


def test_of14_demoted_master_gets_role_status():
    from os_ken.ofproto import ofproto_v1_4 as of14
    from tests.unit.openflow.helpers import parse_reply, split_messages
    a = Harness(version=codec.OFP14, allowed=codec.SUPPORTED_VERSIONS)
    b = Harness(version=codec.OFP14, allowed=codec.SUPPORTED_VERSIONS, switch=a.switch)
    only(a.roundtrip(a.P.OFPRoleRequest(a.dp, of13.OFPCR_ROLE_MASTER, 1)), "OFPRoleReply")
    only(b.roundtrip(b.P.OFPRoleRequest(b.dp, of13.OFPCR_ROLE_MASTER, 2)), "OFPRoleReply")
    (raw,) = split_messages(a.conn.bytes_to_send())
    st = parse_reply(raw)
    assert type(st).__name__ == "OFPRoleStatus"
    assert (st.role, st.reason, st.generation_id) == (of13.OFPCR_ROLE_SLAVE,
                                                      of14.OFPCRR_MASTER_REQUEST, 2)


def test_nx_set_async_config_on_of10(h10):
    from vswitch.openflow import nx
    assert h10.roundtrip(nx.NXTSetAsyncConfig(h10.dp, packet_in_mask=[1 << of10.OFPR_ACTION, 0],
                                              port_status_mask=[0, 0],
                                              flow_removed_mask=[0, 0])) == []
    assert packet_in_msg(h10.channel, PacketIn(reason=of10.OFPR_NO_MATCH)) is None
    assert packet_in_msg(h10.channel, PacketIn(reason=of10.OFPR_ACTION)) is not None
