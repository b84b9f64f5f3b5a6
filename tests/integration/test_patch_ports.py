"""Patch ports between two bridges (OVS's br-int <-> br-ex): pings cross
them, a stateful firewall on the second bridge works through them
(recirculation resumes in the peer), and deleting one end cuts the cable."""

import secrets
import textwrap

import pytest


@pytest.fixture
def two_bridges(daemon, topology):
    tag = secrets.token_hex(2)
    br0, br1 = f"pvsp{tag}a", f"pvsp{tag}b"
    h1 = topology.add_host("h1", "10.0.41.1/24")
    h2 = topology.add_host("h2", "10.0.41.2/24")
    p0, p1 = f"pp{tag}to1", f"pp{tag}to0"
    daemon.vsctl("add-br", br0, "--", "add-br", br1)
    daemon.vsctl("add-port", br0, h1.port, "--", "add-port", br1, h2.port)
    daemon.vsctl("add-port", br0, p0, "--", "set", "Interface", p0, "type=patch",
                 f"options:peer={p1}", "--", "add-port", br1, p1, "--", "set", "Interface",
                 p1, "type=patch", f"options:peer={p0}")
    yield daemon, br0, br1, h1, h2, p0, p1
    for br in (br0, br1):
        daemon.vsctl("--if-exists", "del-br", br)


def test_ping_crosses_the_patch_and_deleting_an_end_cuts_it(two_bridges):
    daemon, br0, br1, h1, h2, p0, p1 = two_bridges
    assert daemon.vsctl("get", "Interface", p0, "ofport").stdout.strip() not in ("-1", "[]")
    assert "patch" in daemon.vsctl("get", "Open_vSwitch", ".", "iface_types").stdout
    p = h1.ping(h2.addr, count=3)
    assert p.returncode == 0, p.stdout + daemon.log_tail()
    # one megaflow per direction, from h1's port straight to h2's
    flows = daemon.appctl("dpctl/dump-flows")
    assert "output:" in flows and "userspace" not in flows, flows
    daemon.vsctl("del-port", br1, p1)
    assert h1.ping(h2.addr, count=2, wait=1.0).returncode != 0


def test_stateful_firewall_on_the_far_bridge(two_bridges):
    daemon, br0, br1, h1, h2, p0, p1 = two_bridges
    of = {n: daemon.vsctl("get", "Interface", n, "ofport").stdout.strip()
          for n in (h2.port, p1)}
    daemon.vsctl("set-fail-mode", br1, "secure")
    flows = textwrap.dedent(f"""
        table=0,priority=100,arp,actions=NORMAL
        table=0,priority=90,ip,actions=ct(table=1,zone=9)
        table=1,priority=100,ct_state=+new+trk,icmp,in_port={of[p1]},actions=ct(commit,zone=9),output:{of[h2.port]}
        table=1,priority=100,ct_state=+est+trk,in_port={of[p1]},actions=output:{of[h2.port]}
        table=1,priority=100,ct_state=+est+trk,in_port={of[h2.port]},actions=output:{of[p1]}
        table=1,priority=0,actions=drop
    """).strip()
    for flow in flows.splitlines():
        daemon.ofctl("add-flow", br1, flow)
    p = h1.ping(h2.addr, count=3)
    assert p.returncode == 0, p.stdout + daemon.log_tail()
    assert "zone=9" in daemon.appctl("dpctl/dump-conntrack")
    # h2 may answer but not start: its ping is +new from h2's side, dropped
    assert h2.ping(h1.addr, count=2, wait=1.0).returncode != 0
