"""Interop: the real `ovs-ofctl` (Debian openvswitch-common) against our channel.

A test-only in-process ConnectionManager serves `punix:<tmp>/br0.mgmt` from a
background event loop, on top of the real slow-path Pipeline and a fake
daemon backend; each test runs ovs-ofctl commands as a user would and checks
what they print and what reached the pipeline/backend.  No root needed.
"""
import asyncio
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from tests.capabilities import require_tools
from tests.unit.openflow.fake_pipeline import FakeBackend, make_pipeline
from vswitch.openflow import sp
from vswitch.openflow.manager import ConnectionManager

OFCTL = shutil.which("ovs-ofctl")


@pytest.fixture(autouse=True)
def _ofctl_installed():
    require_tools("ovs-ofctl", package="openvswitch-common")


class Switch:
    def __init__(self, versions=(1, 4, 5, 6)):
        self.dir = tempfile.mkdtemp(prefix="pyvs-of-", dir="/tmp")
        self.sock = os.path.join(self.dir, "br0.mgmt")
        self.target = "unix:" + self.sock
        self.pipeline = make_pipeline()
        self.backend = FakeBackend()
        self.loop = asyncio.new_event_loop()
        self.mgr = ConnectionManager("br0", self.pipeline, self.backend, datapath_id=0xabc,
                                     allowed_versions=set(versions))
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.mgr.start(["punix:" + self.sock]))
            ready.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    def call(self, fn, *args):
        """Run fn(*args) on the switch's loop (the manager is single-threaded)."""
        done = threading.Event()
        out = []
        self.loop.call_soon_threadsafe(lambda: (out.append(fn(*args)), done.set()))
        done.wait(5)
        return out[0]

    def ofctl(self, *args, ok=True, stdin=None):
        r = subprocess.run([OFCTL, *args], capture_output=True, text=True, timeout=20,
                           input=stdin)
        if ok:
            assert r.returncode == 0, r.stderr
        return r

    def close(self):
        fut = asyncio.run_coroutine_threadsafe(self.mgr.stop(), self.loop)
        fut.result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sw():
    s = Switch()
    yield s
    s.close()


def flows(sw, *extra):
    out = sw.ofctl("dump-flows", *extra, sw.target).stdout
    return [line.split(" actions=")[0].split(", ")[-1] + " actions=" + line.split(" actions=")[1]
            for line in out.splitlines() if "actions=" in line]


ALL = ["OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15"]


@pytest.mark.parametrize("proto", ALL)
def test_show(sw, proto):
    out = sw.ofctl("-O", proto, "show", sw.target).stdout
    assert "dpid:0000000000000abc" in out
    assert "1(p1): addr:02:00:00:00:00:01" in out and "LOCAL(br0)" in out
    assert "miss_send_len=128" in out


@pytest.mark.parametrize("proto", ALL)
def test_add_mod_del_flows(sw, proto):
    t = sw.target
    sw.ofctl("-O", proto, "add-flow", t, "priority=10,in_port=1,ip,nw_dst=10.0.0.0/8,actions=output:2")
    sw.ofctl("-O", proto, "add-flow", t, "table=2,priority=5,tcp,tp_dst=80,reg0=0x5/0xff,"
             "actions=resubmit(,3),ct(commit,zone=NXM_NX_REG1[0..15])")
    sw.ofctl("-O", proto, "add-flow", t, "cookie=0x7,in_port=2,dl_vlan=10,actions=strip_vlan,NORMAL")
    got = flows(sw, "-O", proto)
    assert "priority=10,ip,in_port=1,nw_dst=10.0.0.0/8 actions=output:2" in got
    assert "priority=5,tcp,reg0=0x5/0xff,tp_dst=80 actions=resubmit(,3),ct(commit,zone=NXM_NX_REG1[0..15])" in got
    assert len(sw.pipeline.flow_stats()) == 3
    sw.ofctl("-O", proto, "mod-flows", t, "in_port=1,ip,nw_dst=10.0.0.0/8,actions=drop")
    assert "priority=10,ip,in_port=1,nw_dst=10.0.0.0/8 actions=drop" in flows(sw, "-O", proto)
    sw.ofctl("-O", proto, "del-flows", t, "cookie=0x7/-1")
    assert len(sw.pipeline.flow_stats()) == 2
    sw.ofctl("-O", proto, "--strict", "del-flows", t, "table=2,priority=5,tcp,tp_dst=80,reg0=0x5/0xff")
    assert len(sw.pipeline.flow_stats()) == 1
    sw.ofctl("-O", proto, "del-flows", t)
    assert sw.pipeline.flow_stats() == []


def test_add_flows_file_and_aggregate(sw):
    lines = "\n".join(f"priority={i},in_port=1,dl_src=02:00:00:00:00:{i:02x},actions=output:2"
                      for i in range(1, 51))
    sw.ofctl("add-flows", sw.target, "-", stdin=lines + "\n")
    assert len(flows(sw)) == 50
    out = sw.ofctl("dump-aggregate", sw.target).stdout
    assert "flow_count=50" in out
    out = sw.ofctl("-O", "OpenFlow13", "dump-aggregate", sw.target).stdout
    assert "flow_count=50" in out


def test_many_flows_multipart(sw):
    lines = "\n".join(f"priority=1,reg1={i},actions=drop" for i in range(3000))
    sw.ofctl("-O", "OpenFlow13", "add-flows", sw.target, "-", stdin=lines + "\n")
    assert len(flows(sw, "-O", "OpenFlow13")) == 3000
    assert len(flows(sw)) == 3000


@pytest.mark.parametrize("proto", ["OpenFlow13", "OpenFlow14", "OpenFlow15"])
def test_bundle_add_flows(sw, proto):
    lines = "in_port=1,actions=output:2\nin_port=2,actions=output:1\n"
    sw.ofctl("-O", proto, "--bundle", "add-flows", sw.target, "-", stdin=lines)
    assert len(sw.pipeline.flow_stats()) == 2
    # one bad flow: nothing of the bundle is applied
    bad = "in_port=1,actions=output:3\ntable=1,in_port=1,actions=group:77\n"
    r = sw.ofctl("-O", proto, "--bundle", "add-flows", sw.target, "-", stdin=bad, ok=False)
    assert r.returncode != 0 and "OFPBAC_BAD_OUT_GROUP" in r.stderr
    assert len(sw.pipeline.flow_stats()) == 2
    assert "output:2" in " ".join(flows(sw, "-O", proto))


def test_dump_ports_and_tables(sw):
    out = sw.ofctl("dump-ports", sw.target).stdout
    assert "port  1: rx pkts=10, bytes=1000" in out
    out = sw.ofctl("-O", "OpenFlow13", "dump-ports", sw.target, "2").stdout
    assert "port  2: rx pkts=20" in out
    sw.ofctl("add-flow", sw.target, "actions=drop")
    out = sw.ofctl("-O", "OpenFlow13", "dump-tables", sw.target).stdout
    assert "table 0:" in out and "active=1" in out
    assert "table 0" in sw.ofctl("dump-tables", sw.target).stdout


@pytest.mark.parametrize("proto", ["OpenFlow13", "OpenFlow14", "OpenFlow15"])
def test_groups_and_meters(sw, proto):
    t = sw.target
    sw.ofctl("-O", proto, "add-group", t,
             "group_id=1,type=select,bucket=weight:5,output:1,bucket=weight:3,output:2")
    out = sw.ofctl("-O", proto, "dump-groups", t).stdout
    assert "group_id=1,type=select" in out and "weight:5" in out and "actions=output:2" in out
    (g,) = sw.pipeline.group_stats()
    assert [b.weight for b in g.buckets] == [5, 3]
    sw.ofctl("-O", proto, "add-flow", t, "in_port=1,actions=group:1")
    out = sw.ofctl("-O", proto, "dump-group-stats", t).stdout
    assert "group_id=1" in out and "ref_count=1" in out
    r = sw.ofctl("-O", proto, "add-group", t, "group_id=1,type=all,bucket=output:1", ok=False)
    assert "OFPGMFC_GROUP_EXISTS" in r.stderr
    sw.ofctl("-O", proto, "add-meter", t, "meter=1,kbps,band=type=drop,rate=1000")
    out = sw.ofctl("-O", proto, "dump-meters", t).stdout
    assert "meter=1 kbps bands=" in out and "type=drop rate=1000" in out
    assert "meter:1 flow_count:0" in sw.ofctl("-O", proto, "meter-stats", t).stdout
    assert "max_meter:65536" in sw.ofctl("-O", proto, "meter-features", t).stdout
    sw.ofctl("-O", proto, "del-groups", t)
    assert sw.pipeline.groups == {}
    assert sw.pipeline.flow_stats() == []      # deleting the group removed its flow
    sw.ofctl("-O", proto, "del-meters", t)
    assert sw.pipeline.meters == {}


def test_packet_out_reaches_backend(sw):
    pkt = "ffffffffffff020000000001" + "0800" + "45" + "00" * 40
    sw.ofctl("-O", "OpenFlow13", "packet-out", sw.target, "CONTROLLER", "output:2", pkt)
    sw.ofctl("packet-out", sw.target, "1", "output:2", pkt)
    sw.ofctl("-O", "OpenFlow15", "packet-out", sw.target,
             f"in_port=2 packet={pkt} actions=output:1")
    ((p1, a1, d1), (p2, a2, d2), (p3, a3, d3)) = sw.backend.packet_outs
    assert (p1, [type(a).__name__ for a in a1], d1.hex()) == (0xfffffffd, ["Output"], pkt)
    assert p2 == 1 and a2[0].port == 2
    assert (p3, a3[0].port, d3.hex()) == (2, 1, pkt)


def test_mod_port(sw):
    sw.ofctl("mod-port", sw.target, "p1", "down")
    assert sw.backend.port_mods == [(1, 1, 1)]


def test_errors_are_reported_and_switch_survives(sw):
    r = sw.ofctl("-O", "OpenFlow13", "add-flow", sw.target, "table=1,actions=group:5", ok=False)
    assert "OFPBAC_BAD_OUT_GROUP" in r.stderr
    # garbage straight onto the socket: error or close, never a crash
    s = socket.socket(socket.AF_UNIX)
    s.connect(sw.sock)
    s.recv(100)                                        # our HELLO
    s.sendall(struct.pack("!BBHI", 4, 0, 8, 1))        # HELLO 1.3
    s.sendall(struct.pack("!BBHI", 4, 77, 12, 2) + b"junk")
    s.settimeout(2)
    data = s.recv(1000)
    assert data[1] == 1 and struct.unpack_from("!HH", data, 8) == (1, 1)   # BAD_REQUEST/BAD_TYPE
    s.sendall(struct.pack("!BBHI", 4, 5, 3, 3))        # length < 8: unframeable
    data = s.recv(1000)
    assert struct.unpack_from("!HH", data, 8) == (1, 6)                    # BAD_LEN
    s.close()
    assert "dpid:" in sw.ofctl("show", sw.target).stdout


def test_version_limited_by_protocols():
    sw = Switch(versions=(4,))
    try:
        r = sw.ofctl("-O", "OpenFlow10", "show", sw.target, ok=False)
        assert r.returncode != 0 and "version negotiation failed" in r.stderr
        assert "dpid:" in sw.ofctl("-O", "OpenFlow13", "show", sw.target).stdout
    finally:
        sw.close()


class _PI:
    def __init__(self, **kw):
        self.reason, self.in_port, self.table_id, self.cookie = 1, 1, 0, 0
        self.data = bytes.fromhex("ffffffffffff0200000000010806") + bytes(28)
        self.__dict__.update(kw)


@pytest.mark.parametrize("proto", ["OpenFlow10", "OpenFlow13", "OpenFlow15"])
@pytest.mark.parametrize("fmt", ["standard", "nxt_packet_in", "nxt_packet_in2"])
def test_monitor_receives_packet_in(sw, fmt, proto):
    args = [OFCTL, "-O", proto, "--unixctl=" + os.path.join(sw.dir, "ofctl.ctl"),
            "monitor", sw.target, "65534", "-P", fmt]
    mon = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 5
        while sw.call(lambda: sw.mgr.n_connections) < 1 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)   # let monitor finish its setup messages
        sw.call(sw.mgr.send_packet_in, _PI(userdata=b"\x01\x02"))
        time.sleep(0.5)
    finally:
        mon.terminate()
        out, err = mon.communicate(timeout=5)
    out += err   # monitor's output is not line-buffered into a pipe; either stream
    want = {"standard": "OFPT_PACKET_IN", "nxt_packet_in": "NXT_PACKET_IN",
            "nxt_packet_in2": "NXT_PACKET_IN2"}[fmt]
    assert want in out, out
    assert "in_port=1" in out and "arp" in out
    if fmt == "nxt_packet_in2":
        assert "userdata=01.02" in out


@pytest.mark.parametrize("proto", ["OpenFlow10", "OpenFlow13", "OpenFlow15"])
def test_tlv_map_and_tun_metadata_flows(sw, proto):
    t = sw.target
    sw.ofctl("-O", proto, "add-tlv-map", t, "{class=0x102,type=0x80,len=4}->tun_metadata0")
    out = sw.ofctl("-O", proto, "dump-tlv-map", t).stdout
    assert "0x102  0x80       4  tun_metadata0" in out
    assert sw.backend.tlv_maps[-1] == {0: (0x102, 0x80, 4)}
    r = sw.ofctl("-O", proto, "add-tlv-map", t, "{class=0x102,type=0x81,len=4}->tun_metadata0",
                 ok=False)
    assert "NXTTMFC_ALREADY_MAPPED" in r.stderr or r.returncode != 0
    sw.ofctl("-O", proto, "add-flow", t, "tun_metadata0=0x1234,actions=drop")
    sw.ofctl("-O", proto, "add-flow", t, "priority=5,tun_metadata0=0x10/0xf0,actions=drop")
    got = flows(sw, "-O", proto)
    assert "tun_metadata0=0x1234 actions=drop" in got
    assert "priority=5,tun_metadata0=0x10/0xf0 actions=drop" in got
    sw.ofctl("-O", proto, "del-tlv-map", t)
    assert "allocated option space=0" in sw.ofctl("-O", proto, "dump-tlv-map", t).stdout


def test_ct_flush_zone(sw):
    sw.ofctl("-O", "OpenFlow15", "ct-flush-zone", sw.target, "7")
    assert sw.backend.ct_flushes == [7]



@pytest.mark.parametrize("proto", ["OpenFlow13", "OpenFlow15"])
def test_ovn_style_geneve_metadata_actions_round_trip(sw, proto):
    """What ovn-controller installs: tun_metadata0 (GENEVE option 0x102/0x80, 4 bytes)
    matched by bit range and written by move/load; OF1.5 move is copy_field."""
    t = sw.target
    sw.ofctl("-O", proto, "add-tlv-map", t, "{class=0x102,type=0x80,len=4}->tun_metadata0")
    sw.ofctl("-O", proto, "add-flow", t,
             "tun_metadata0[16..30]=0x5,actions=move:NXM_NX_REG14[0..14]->"
             "NXM_NX_TUN_METADATA0[16..30],load:0x5->NXM_NX_REG3[4..7],"
             "move:NXM_NX_REG1[]->NXM_NX_REG2[],output:1")
    (r,) = sw.pipeline.flow_stats()
    acts = r.instructions[0].actions
    assert acts[0] == sp.Move(src="reg14", dst="tun_metadata0", n_bits=15, src_ofs=0,
                              dst_ofs=16 + 32)          # option left-aligned in the slot
    assert r.match.get("tun_metadata0") == (0x5 << 48, 0x7FFF << 48)
    for p in ("OpenFlow10", "OpenFlow13", "OpenFlow15"):
        (line,) = flows(sw, "-O", p)
        assert "tun_metadata0=0x50000/0x7fff0000" in line
        assert "move:NXM_NX_REG14[0..14]->NXM_NX_TUN_METADATA0[16..30]" in line
        assert "move:NXM_NX_REG1[]->NXM_NX_REG2[]" in line


@pytest.mark.parametrize("proto", ALL)
def test_descriptions_queues_frags_replace_flows(sw, proto):
    t = sw.target
    assert "pyvswitch" in sw.ofctl("-O", proto, "dump-desc", t).stdout
    assert "1(p1): addr:02:00:00:00:00:01" in sw.ofctl("-O", proto, "dump-ports-desc", t).stdout
    assert "0 queues" in sw.ofctl("-O", proto, "queue-stats", t).stdout
    sw.ofctl("-O", proto, "set-frags", t, "drop")
    assert sw.ofctl("-O", proto, "get-frags", t).stdout.strip() == "drop"
    sw.ofctl("-O", proto, "add-flow", t, "in_port=9,actions=drop")
    wanted = "in_port=1,actions=output:2\npriority=5,ip,actions=drop\n"
    sw.ofctl("-O", proto, "replace-flows", t, "-", stdin=wanted)
    path = os.path.join(sw.dir, "wanted.txt")
    with open(path, "w") as f:
        f.write(wanted)
    assert sw.ofctl("-O", proto, "diff-flows", t, path).stdout == ""
    assert len(sw.pipeline.flow_stats()) == 2


@pytest.mark.parametrize("proto", ["OpenFlow10", "OpenFlow13", "OpenFlow15"])
def test_clone_ct_nat_output_reg_round_trip(sw, proto):
    t = sw.target
    sw.ofctl("-O", proto, "add-flow", t,
             "ip,actions=clone(set_field:1->reg0,output:2),ct(commit,table=3,zone=5,"
             "nat(src=10.0.0.1-10.0.0.9:100-200,random)),output:NXM_NX_REG1[0..15]")
    sw.ofctl("-O", proto, "add-flow", t, "table=2,ip,actions=ct(nat),ct(commit,nat(dst=10.1.1.1))")
    acts = {r.table_id: r.instructions[0].actions for r in sw.pipeline.flow_stats()}
    assert acts[0][0] == sp.Clone((sp.SetField("reg0", 1, 0xFFFFFFFF) if proto == "OpenFlow10"
                                   else acts[0][0].actions[0], sp.Output(2)))
    assert acts[0][1].nat == "src=10.0.0.1-10.0.0.9:100-200,random"
    assert acts[0][2] == sp.OutputReg(field="reg1", ofs=0, n_bits=16)
    for p in ("OpenFlow10", "OpenFlow13", "OpenFlow15"):
        got = " ".join(flows(sw, "-O", p))
        assert "clone(" in got and "output:2)" in got
        assert "ct(commit,table=3,zone=5,nat(src=10.0.0.1-10.0.0.9:100-200,random))" in got
        assert "output:NXM_NX_REG1[0..15]" in got
        assert "ct(nat),ct(commit,nat(dst=10.1.1.1))" in got


def test_conjunction_controller_pause_and_version_gaps(sw):
    t = sw.target
    sw.ofctl("-O", "OpenFlow15", "add-flow", t, "ip,nw_src=10.0.0.1,actions=conjunction(7,1/2)")
    sw.ofctl("-O", "OpenFlow15", "add-group", t, "group_id=1,type=all,bucket=output:1")
    sw.ofctl("-O", "OpenFlow15", "add-flow", t,
             "conj_id=7,ip,actions=controller(userdata=01.02.03,pause,max_len=128,id=3),"
             "dec_ttl,push_vlan:0x8100,set_field:4196->vlan_vid,ct_clear,group:1")
    for p in ("OpenFlow13", "OpenFlow15"):
        got = " ".join(flows(sw, "-O", p))
        assert "conjunction(7,1/2)" in got
        assert ("conj_id=7,ip actions=controller(max_len=128,id=3,userdata=01.02.03,pause),"
                "dec_ttl,push_vlan:0x8100,set_field:4196->vlan_vid,ct_clear,group:1") in got
    # OF1.0 cannot say group:1 - the rule is still listed, the gap is marked
    got = " ".join(flows(sw))
    assert "mod_vlan_vid:100" in got and "note:70.79.76" in got    # "pyvswitch:Group"


@pytest.mark.parametrize("proto", ["OpenFlow10", "OpenFlow13", "OpenFlow15"])
def test_check_pkt_larger_round_trip(sw, proto):
    """OVN's gateway-MTU check: os-ken has no codec for it, ours does."""
    sw.ofctl("-O", proto, "add-flow", sw.target,
             "ip,actions=check_pkt_larger(1500)->NXM_NX_REG0[3],resubmit(,1)")
    (rule,) = sw.pipeline.flow_stats()
    assert rule.instructions[0].actions == (sp.CheckPktLarger(1500, "reg0", 3),
                                            sp.Resubmit(table=1))
    for p in ("OpenFlow10", "OpenFlow13", "OpenFlow15"):
        assert "check_pkt_larger(1500)->NXM_NX_REG0[3],resubmit(,1)" in " ".join(
            flows(sw, "-O", p))
    bad = sw.ofctl("-O", proto, "add-flow", sw.target,
                   "ip,actions=check_pkt_larger(1500)->NXM_OF_ETH_TYPE[3]", ok=False)
    # (OpenFlow 1.0 has no BAD_SET codes: the nearest, BAD_ARGUMENT)
    assert bad.returncode != 0 and ("OFPBAC_BAD_SET" in bad.stderr
                                    or "OFPBAC_BAD_ARGUMENT" in bad.stderr), bad.stderr


@pytest.mark.parametrize("proto", ["OpenFlow13", "OpenFlow15"])
def test_tun_metadata_indexes_up_to_63_share_eight_slots(sw, proto):
    """OpenFlow names tun_metadata0..63; the flow key holds 8 options.  A
    mapped index gets a slot (its own number when free), rules and dumps
    speak the index, and a ninth mapping is refused as OVS refuses a full
    table."""
    t = sw.target
    sw.ofctl("-O", proto, "add-tlv-map", t,
             "{class=0xffff,type=1,len=4}->tun_metadata40,{class=0xffff,type=2,len=8}->tun_metadata3")
    assert sw.backend.tlv_maps[-1] == {0: (0xffff, 1, 4), 3: (0xffff, 2, 8)}   # by slot
    sw.ofctl("-O", proto, "add-flow", t,
             "tun_metadata40=0x1234,actions=set_field:0x55->tun_metadata3,"
             "move:NXM_NX_TUN_METADATA40[0..15]->NXM_NX_REG0[0..15]")
    (rule,) = sw.pipeline.flow_stats()
    assert rule.match == sp.Match.from_fields({"tun_metadata0": (0x1234 << 32, 0xffffffff << 32)})
    got = " ".join(flows(sw, "-O", proto))
    assert "tun_metadata40=0x1234" in got and "->tun_metadata3" in got, got
    assert "NXM_NX_TUN_METADATA40[0..15]->NXM_NX_REG0[0..15]" in got, got
    sw.ofctl("-O", proto, "add-tlv-map", t, ",".join(
        f"{{class=0xffff,type={10 + i},len=4}}->tun_metadata{50 + i}" for i in range(6)))
    r = sw.ofctl("-O", proto, "add-tlv-map", t, "{class=0xffff,type=99,len=4}->tun_metadata63",
                 ok=False)
    assert r.returncode != 0 and "TABLE_FULL" in r.stderr, r.stderr
    # an unmapped index whose slot is taken names no field
    r = sw.ofctl("-O", proto, "add-flow", t, "tun_metadata1=1,actions=drop", ok=False)
    assert r.returncode != 0
