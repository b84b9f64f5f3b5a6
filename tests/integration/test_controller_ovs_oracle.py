"""controller_stub against real Open vSwitch 3.1 as the oracle for what the
pyvswitch daemon cannot run yet (conntrack, GENEVE tunnels).

A real ``ovsdb-server`` + ``ovs-vswitchd --enable-dummy`` (userspace dummy
datapath, dummy ports: no kernel module, no packets) holds one hypervisor's
bridge; the controller creates the GENEVE ports over OVSDB and installs the
stateful-ACL pipeline over OpenFlow; ``ofproto/trace`` with ``--ct-next``
then shows where packets go, connection states supplied by hand.  A second
controller finds the same rules on the switch and sends nothing.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from controller_stub import flows as F
from controller_stub.controller import BackgroundController
from controller_stub.state import State

WEB, APP, DB = "02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03"
B1, B2 = "02:00:00:00:02:01", "02:00:00:00:02:02"


class RealOVS:
    def __init__(self):
        for tool in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-appctl"):
            if shutil.which(tool) is None:
                pytest.fail(f"missing capability: {tool} (Debian package openvswitch-switch)",
                            pytrace=False)
        self.dir = tempfile.mkdtemp(prefix="pvsovs")   # short: unix socket paths
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir,
                        OVS_DBDIR=self.dir)
        self.db = f"unix:{self.dir}/db.sock"

    def start(self):
        d = self.dir
        self._run("ovsdb-tool", "create", f"{d}/conf.db",
                  "/usr/share/openvswitch/vswitch.ovsschema")
        self._run("ovsdb-server", f"--remote=punix:{d}/db.sock",
                  f"--unixctl={d}/ovsdb-server.ctl", f"--pidfile={d}/ovsdb-server.pid",
                  f"--log-file={d}/ovsdb-server.log", "--detach", "--no-chdir", f"{d}/conf.db")
        self.vsctl("--no-wait", "init")
        self._run("ovs-vswitchd", "--enable-dummy=override", "--disable-system",
                  "--disable-system-route", self.db, f"--unixctl={d}/vswitchd.ctl",
                  f"--pidfile={d}/vswitchd.pid", f"--log-file={d}/vswitchd.log",
                  "--detach", "--no-chdir")
        self.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=dummy",
                   "fail_mode=secure")
        for i in (1, 2, 3):
            self.vsctl("add-port", "br0", f"p{i}", "--", "set", "interface", f"p{i}",
                       "type=dummy", f"ofport_request={i}")
        return self

    def _run(self, *argv):
        p = subprocess.run(argv, env=self.env, check=False, capture_output=True, text=True,
                           timeout=30)
        if p.returncode:
            raise AssertionError(f"{argv} failed ({p.returncode}): {p.stderr}{p.stdout}")
        return p

    def vsctl(self, *args):
        return self._run("ovs-vsctl", f"--db={self.db}", "--timeout=20", *args).stdout

    def trace(self, flow: str, *ct_states: str) -> str:
        argv = ["ovs-appctl", "-t", f"{self.dir}/vswitchd.ctl", "ofproto/trace", "br0", flow]
        for ct in ct_states:
            argv += ["--ct-next", ct]
        return self._run(*argv).stdout

    def stop(self):
        for name in ("vswitchd", "ovsdb-server"):
            pidfile = f"{self.dir}/{name}.pid"
            try:
                with open(pidfile) as f:
                    pid = int(f.read())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def ovs():
    o = RealOVS()
    try:
        yield o.start()
    finally:
        o.stop()


def three_tier(ovs) -> State:
    return State.from_dict({
        "hosts": {"hv1": {"tunnel_ip": "192.168.0.1", "openflow": f"unix:{ovs.dir}/br0.mgmt",
                          "ovsdb": ovs.db, "bridge": "br0"},
                  "hv2": {"tunnel_ip": "192.168.0.2"}, "hv3": {"tunnel_ip": "192.168.0.3"}},
        "switches": {"red": {"vni": 100, "subnet": "10.0.0.0/24"},
                     "blue": {"vni": 200, "subnet": "10.0.0.0/24"}},
        "ports": {
            "web1": {"switch": "red", "mac": WEB, "ips": ["10.0.0.1"], "host": "hv1",
                     "iface": "p1"},
            "app1": {"switch": "red", "mac": APP, "ips": ["10.0.0.2"], "host": "hv1",
                     "iface": "p2"},
            "db1": {"switch": "red", "mac": DB, "ips": ["10.0.0.3"], "host": "hv2"},
            "b1": {"switch": "blue", "mac": B1, "ips": ["10.0.0.1"], "host": "hv1",
                   "iface": "p3"},
            "b2": {"switch": "blue", "mac": B2, "ips": ["10.0.0.3"], "host": "hv3"},
        },
        "port_groups": {"web": ["web1"], "app": ["app1"], "db": ["db1"]},
        "acls": [{"group": "web", "proto": "tcp", "ports": [80]},
                 {"group": "web", "proto": "icmp"},
                 {"group": "app", "proto": "tcp", "ports": [8080], "src": "@web"},
                 {"group": "db", "proto": "tcp", "ports": [5432], "src": "@app"}],
    })


def outputs(trace: str) -> list:
    """OpenFlow outputs the trace performed (not those OVS skipped)."""
    return re.findall(r"^\s+(?:output:(\d+)|(IN_PORT))[ \t]*\n(?![ \t]*>> skipping)",
                      trace + "\n", re.M)


def ports_out(trace: str) -> list:
    return sorted(p or "IN_PORT" for p, inport in outputs(trace) for p in [p or inport])


def geneve(vni, state, src_port, dst_port) -> str:
    """The tunnel metadata hv2/hv3 send: VNI and OVN's option (ingress key << 16 | egress key)."""
    opt = state.port_key(src_port) << 16 | state.port_key(dst_port)
    return f"tun_id={vni},tun_metadata0={opt:#x},"


def tcp(src_mac, dst_mac, src, dst, sport, dport, in_port):
    return (f"in_port={in_port},dl_src={src_mac},dl_dst={dst_mac},tcp,nw_src={src},"
            f"nw_dst={dst},tp_src={sport},tp_dst={dport}")


@pytest.fixture
def net(ovs):
    with BackgroundController(three_tier(ovs)) as bg:
        bg.wait_converged(15, hosts=["hv1"])
        tun = {r: int(ovs.vsctl("get", "Interface", F.tunnel_port_name(r), "ofport"))
               for r in ("hv2", "hv3")}
        yield bg, tun


def test_tunnel_ports_made_over_ovsdb(ovs, net):
    bg, tun = net
    opts = ovs.vsctl("get", "Interface", "gnv-hv2", "options")
    assert 'remote_ip="192.168.0.2"' in opts and "key=flow" in opts
    assert 'local_ip="192.168.0.1"' in opts
    assert ovs.vsctl("get", "Interface", "gnv-hv3", "type").strip() == "geneve"
    assert all(p > 0 for p in tun.values())
    assert bg.controller.status()["hv1"]["errors"] == 0


def test_stateful_acls_on_real_ovs(ovs, net):
    bg, tun = net
    # anyone -> web tcp/80: ingress zone(app) new, egress zone(web) new -> delivered
    t = ovs.trace(tcp(APP, WEB, "10.0.0.2", "10.0.0.1", 40000, 80, 2), "trk,new", "trk,new")
    assert ports_out(t) == ["1"], t
    assert "ct(commit,zone=1)" in t and "ct(commit,zone=2)" in t
    # app -> web tcp/22: default deny at web
    t = ovs.trace(tcp(APP, WEB, "10.0.0.2", "10.0.0.1", 40000, 22, 2), "trk,new", "trk,new")
    assert ports_out(t) == [], t
    # an established connection passes whatever the port (replies)
    t = ovs.trace(tcp(APP, WEB, "10.0.0.2", "10.0.0.1", 40000, 22, 2), "trk,est", "trk,est")
    assert ports_out(t) == ["1"], t
    # +inv never passes
    t = ovs.trace(tcp(APP, WEB, "10.0.0.2", "10.0.0.1", 40000, 80, 2), "trk,inv")
    assert ports_out(t) == [], t
    # from the tunnel: db (hv2) may not open app:8080 (only @web may)...
    st = bg.controller.state
    t = ovs.trace(geneve(100, st, "db1", "app1")
                  + tcp(DB, APP, "10.0.0.3", "10.0.0.2", 40000, 8080, tun["hv2"]),
                  "trk,new")
    assert ports_out(t) == [], t
    # ...web may
    t = ovs.trace(tcp(WEB, APP, "10.0.0.1", "10.0.0.2", 40000, 8080, 1), "trk,new", "trk,new")
    assert ports_out(t) == ["2"], t
    # app -> db goes out the tunnel to hv2 with tun_id = red's VNI (db's ACL is hv2's job)
    t = ovs.trace(tcp(APP, DB, "10.0.0.2", "10.0.0.3", 41000, 5432, 2), "trk,new")
    assert ports_out(t) == [str(tun["hv2"])] and "set_field:0x64->tun_id" in t, t
    # with OVN's GENEVE option naming db1 as egress and app1 as ingress port
    assert f"set_field:{st.port_key('db1'):#x}->tun_metadata0" in t, t
    assert f"NXM_NX_TUN_METADATA0[16..30] is now {st.port_key('app1'):#x}" in t, t
    # and db's reply comes back through app's egress stage as +est
    t = ovs.trace(geneve(100, st, "db1", "app1")
                  + tcp(DB, APP, "10.0.0.3", "10.0.0.2", 5432, 41000, tun["hv2"]),
                  "trk,est")
    assert ports_out(t) == ["2"], t


def test_isolation_port_security_and_arp_on_real_ovs(ovs, net):
    bg, tun = net
    # blue's b1 (same IP as web1) cannot reach a red MAC; reaches b2 over hv3's tunnel
    t = ovs.trace(tcp(B1, WEB, "10.0.0.1", "10.0.0.1", 1, 80, 3), "trk,new", "trk,new")
    assert ports_out(t) == [], t
    t = ovs.trace(tcp(B1, B2, "10.0.0.1", "10.0.0.3", 1, 80, 3), "trk,new")
    assert ports_out(t) == [str(tun["hv3"])] and "set_field:0xc8->tun_id" in t, t
    # red traffic from the tunnel with blue's VNI finds no red port, even when
    # the GENEVE option names one
    t = ovs.trace(geneve(200, bg.controller.state, "db1", "web1")
                  + tcp(DB, WEB, "10.0.0.3", "10.0.0.1", 1, 80, tun["hv2"]),
                  "trk,new")
    assert ports_out(t) == [], t
    # spoofed IP or MAC from app1
    t = ovs.trace(tcp(APP, WEB, "10.0.0.9", "10.0.0.1", 1, 80, 2), "trk,new", "trk,new")
    assert ports_out(t) == [], t
    t = ovs.trace(tcp("02:00:00:00:09:09", WEB, "10.0.0.2", "10.0.0.1", 1, 80, 2),
                  "trk,new", "trk,new")
    assert ports_out(t) == [], t
    # ARP for db1 (remote) answered on hv1, back out of app1's port
    arp = (f"in_port=2,dl_src={APP},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,arp_spa=10.0.0.2,"
           f"arp_tpa=10.0.0.3,arp_sha={APP},arp_tha=00:00:00:00:00:00")
    t = ovs.trace(arp)
    assert ports_out(t) == ["IN_PORT"], t
    final = re.findall(r"^Final flow: (.*)$", t, re.M)[-1]
    assert f"dl_src={DB}" in final and f"dl_dst={APP}" in final and "arp_op=2" in final
    assert "arp_spa=10.0.0.3" in final and f"arp_sha={DB}" in final
    # ARP for an unknown address floods the host's red ports only, never a tunnel
    t = ovs.trace(arp.replace("arp_tpa=10.0.0.3", "arp_tpa=10.0.0.99"))
    assert ports_out(t) == ["1"], t


def test_a_second_controller_finds_the_same_rules_and_sends_nothing(ovs, net):
    bg, tun = net
    first = sorted(str(f) for f in bg.controller.agents["hv1"].installed.values())
    with BackgroundController(three_tier(ovs)) as bg2:
        bg2.wait_converged(15, hosts=["hv1"])
        agent = bg2.controller.agents["hv1"]
        assert agent.total_flow_mods == 0
        assert sorted(str(f) for f in agent.installed.values()) == first
        # a move of db1 to hv3 changes hv1's rules by a handful of flow mods
        sent = bg2.call(bg2.controller.move_port, "db1", "hv3")
        bg2.wait_converged(15, hosts=["hv1"])
        assert 0 < sent["hv1"] <= 4, sent
        t = ovs.trace(tcp(APP, DB, "10.0.0.2", "10.0.0.3", 41000, 5432, 2), "trk,new")
        assert ports_out(t) == [str(tun["hv3"])], t


def test_bundled_reconciliation_on_real_ovs(ovs):
    state = three_tier(ovs)
    state.set_options({"bundles": True})
    with BackgroundController(state) as bg:
        bg.wait_converged(15, hosts=["hv1"])
        agent = bg.controller.agents["hv1"]
        assert agent.n_errors == 0 and agent.total_flow_mods > 0
        t = ovs.trace(tcp(APP, WEB, "10.0.0.2", "10.0.0.1", 40000, 80, 2), "trk,new", "trk,new")
        assert ports_out(t) == ["1"], t
        sent = bg.call(bg.controller.move_port, "db1", "hv3")
        bg.wait_converged(15, hosts=["hv1"])
        assert 0 < sent["hv1"] <= 4 and agent.n_errors == 0
    # what the bundles installed is what a fresh controller expects: nothing to send
    # (the move is in its desired state before it connects: moving it after
    # would race its first reconcile)
    moved = three_tier(ovs)
    moved.move_port("db1", "hv3")
    with BackgroundController(moved) as bg2:
        bg2.wait_converged(15, hosts=["hv1"])
        assert bg2.controller.agents["hv1"].total_flow_mods == 0


def test_ipv6_nd_responder_port_security_and_acl_on_real_ovs(ovs):
    state = three_tier(ovs)
    d = state.to_dict()
    d["switches"]["red"]["subnet6"] = "fd00::/64"
    for name, ip6 in (("web1", "fd00::1"), ("app1", "fd00::2"), ("db1", "fd00::3")):
        d["ports"][name]["ips"].append(ip6)
    with BackgroundController(State.from_dict(d)) as bg:
        bg.wait_converged(15, hosts=["hv1"])
        assert bg.controller.agents["hv1"].n_errors == 0
        st = bg.controller.state
        tun = int(ovs.vsctl("get", "Interface", F.tunnel_port_name("hv2"), "ofport"))
        ns = (f"in_port=2,dl_src={APP},dl_dst=33:33:ff:00:00:03,icmp6,ipv6_src=fd00::2,"
              f"ipv6_dst=ff02::1:ff00:3,icmpv6_type=135,icmpv6_code=0,nd_target=fd00::3,"
              f"nd_sll={APP}")
        # a solicitation for db1 (on hv2) goes to the controller, never to a tunnel
        t = ovs.trace(ns)
        assert "controller" in t.split("Datapath actions:")[-1] and ports_out(t) == [], t
        # one for an unknown address floods hv1's red ports only
        t = ovs.trace(ns.replace("nd_target=fd00::3", "nd_target=fd00::99"))
        assert ports_out(t) == ["1"], t
        # claiming another MAC in the solicitation: dropped
        t = ovs.trace(ns.replace(f"nd_sll={APP}", "nd_sll=02:00:00:00:09:09"))
        assert "Datapath actions: drop" in t, t
        # app -> db tcp/5432 over IPv6: out the tunnel with the option
        tcp6 = (f"in_port=2,dl_src={APP},dl_dst={DB},tcp6,ipv6_src=fd00::2,ipv6_dst=fd00::3,"
                f"tp_src=41000,tp_dst=5432")
        t = ovs.trace(tcp6, "trk,new")
        assert ports_out(t) == [str(tun)], t
        assert f"set_field:{st.port_key('db1'):#x}->tun_metadata0" in t, t
        # spoofed IPv6 source: dropped at port security
        t = ovs.trace(tcp6.replace("ipv6_src=fd00::2", "ipv6_src=fd00::9"), "trk,new")
        assert ports_out(t) == [], t
        # db -> app:8080 over IPv6 from the tunnel: app only admits @web
        t = ovs.trace(geneve(100, st, "db1", "app1") + tcp6.replace("in_port=2", f"in_port={tun}")
                      .replace(f"dl_src={APP},dl_dst={DB}", f"dl_src={DB},dl_dst={APP}")
                      .replace("ipv6_src=fd00::2,ipv6_dst=fd00::3", "ipv6_src=fd00::3,"
                               "ipv6_dst=fd00::2").replace("tp_dst=5432", "tp_dst=8080"),
                      "trk,new")
        assert ports_out(t) == [], t
        # web -> app:8080 over IPv6 is admitted (web's IPv6 address is in @web)
        t = ovs.trace(f"in_port=1,dl_src={WEB},dl_dst={APP},tcp6,ipv6_src=fd00::1,"
                      f"ipv6_dst=fd00::2,tp_src=1000,tp_dst=8080", "trk,new", "trk,new")
        assert ports_out(t) == ["2"], t
