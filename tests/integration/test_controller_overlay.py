"""controller_stub driving real pyvswitch daemons (one per "hypervisor"),
VMs as namespaces: logical switches isolate tenants with overlapping
addresses, ARP is answered by the controller's directory, port security
stops spoofing, a VM move reconciles both hosts with a small diff, and a
restarted controller or switch reconverges to the same rules.

The full stateful pipeline runs (ct with per-port zones).  Traffic here
stays on one host at a time; test_controller_tunnel.py runs it across
daemons over GENEVE.
"""

import re
import time

import pytest

from controller_stub import flows as F
from controller_stub.controller import BackgroundController
from controller_stub.state import State


@pytest.fixture
def hypervisors(daemons_with_bridge):
    """Two daemons, each with one bridge; yields {name: (daemon, bridge)}."""
    return daemons_with_bridge(("hv1", "hv2"), "pvsc")


def state_for(hvs, vms, placement):
    """red: a(.1) b(.2) e(.5); blue reuses red's addresses: c(.2) d(.1)."""
    tenant = {"a": "red", "b": "red", "e": "red", "c": "blue", "d": "blue"}
    return State.from_dict({
        "hosts": {hv: {"tunnel_ip": f"192.168.77.{i + 1}", "openflow": d.mgmt(br),
                       "ovsdb": d.db, "bridge": br}
                  for i, (hv, (d, br)) in enumerate(sorted(hvs.items()))},
        "switches": {"red": {"vni": 100, "subnet": "10.0.0.0/24"},
                     "blue": {"vni": 200, "subnet": "10.0.0.0/24"}},
        "ports": {n: {"switch": tenant[n], "mac": vm.mac, "ips": [vm.addr],
                      "host": placement[n], "iface": vm.port} for n, vm in vms.items()},
    })


def plug(hvs, hv, vm):
    d, br = hvs[hv]
    d.vsctl("add-port", br, vm.port)


def unplug(hvs, hv, vm):
    d, br = hvs[hv]
    d.vsctl("del-port", br, vm.port)


def rules(hvs, hv, by_name=False) -> list:
    """The controller's rules on a bridge as ovs-ofctl shows them (no
    counters); with `by_name`, ofport numbers replaced by interface names."""
    d, br = hvs[hv]
    out = d.ofctl("dump-flows", br, "cookie=0xc500000000000000/0xff00000000000000").stdout
    lines = [re.sub(r" (duration|n_packets|n_bytes|idle_age|hard_age)=[^ ,]+,?", "", ln)
             for ln in out.splitlines()[1:]]
    if by_name:
        csv = d.vsctl("-f", "csv", "--no-headings", "--columns=name,ofport", "list",
                      "Interface").stdout
        names = {int(o): n for n, o in (ln.split(",") for ln in csv.split()) if o != "-1"}
        lines = [re.sub(r"(in_port=|output:)(\d+)",
                        lambda m: m.group(1) + names.get(int(m.group(2)), m.group(2)), ln)
                 for ln in lines]
    return sorted(lines)


def neigh_mac(vm, ip):
    out = vm.run("ip", "neigh", "show", ip).stdout
    m = re.search(r"lladdr (\S+)", out)
    return m and m.group(1)


@pytest.fixture
def vms(topology):
    return {"a": topology.add_host("a", "10.0.0.1/24"),
            "b": topology.add_host("b", "10.0.0.2/24"),
            "c": topology.add_host("c", "10.0.0.2/24"),
            "d": topology.add_host("d", "10.0.0.1/24"),
            "e": topology.add_host("e", "10.0.0.5/24")}


PLACEMENT = {"a": "hv1", "b": "hv1", "c": "hv1", "d": "hv1", "e": "hv2"}


def test_tenants_isolated_arp_local_port_security(hypervisors, vms):
    hvs = hypervisors
    for n, hv in PLACEMENT.items():
        plug(hvs, hv, vms[n])
    a, b, c, d = vms["a"], vms["b"], vms["c"], vms["d"]
    with BackgroundController(state_for(hvs, vms, PLACEMENT)) as bg:
        bg.wait_converged(15)
        # same logical switch: ping works, both ways
        assert a.ping("10.0.0.2", count=2).returncode == 0
        assert d.ping("10.0.0.2", count=2).returncode == 0      # blue's 10.0.0.2 is c
        # the overlapping address resolved inside each tenant
        assert neigh_mac(a, "10.0.0.2") == b.mac
        assert neigh_mac(d, "10.0.0.2") == c.mac
        # force red's a to send to blue's c: the red switch has no such MAC
        a.run("ip", "neigh", "replace", "10.0.0.2", "lladdr", c.mac, "dev", "eth0")
        assert a.ping("10.0.0.2", count=2, wait=1).returncode != 0
        a.run("ip", "neigh", "del", "10.0.0.2", "dev", "eth0")
        # ARP is answered by the switch from the directory: even with b's
        # cable pulled, a learns b's MAC (ping itself fails, nobody answers)
        b.run("ip", "link", "set", "eth0", "down")
        a.run("ip", "neigh", "flush", "dev", "eth0")
        assert a.ping("10.0.0.2", count=1, wait=1).returncode != 0
        assert neigh_mac(a, "10.0.0.2") == b.mac
        b.run("ip", "link", "set", "eth0", "up")
        # port security: a spoofed source address goes nowhere
        a.run("ip", "addr", "add", "10.0.0.50/24", "dev", "eth0")
        p = a.run("ping", "-c", "2", "-W", "1", "-I", "10.0.0.50", "10.0.0.2", check=False)
        assert p.returncode != 0
        # a second pass over an unchanged state sends nothing
        assert bg.call(bg.controller.reconcile) == {"hv1": 0, "hv2": 0}
        # tunnel ports to the other hypervisor were created over OVSDB
        d1, br1 = hvs["hv1"]
        opts = d1.vsctl("get", "Interface", F.tunnel_port_name("hv2"), "options").stdout
        assert 'remote_ip="192.168.77.2"' in opts and 'key=flow' in opts
        assert d1.vsctl("get", "Interface", F.tunnel_port_name("hv2"),
                        "type").stdout.strip() == "geneve"


def test_vm_move_reconciles_both_hosts(hypervisors, vms):
    hvs = hypervisors
    for n, hv in PLACEMENT.items():
        plug(hvs, hv, vms[n])
    a, b, e = vms["a"], vms["b"], vms["e"]
    with BackgroundController(state_for(hvs, vms, PLACEMENT)) as bg:
        ctl = bg.controller
        bg.wait_converged(15)
        assert a.ping(b.addr, count=2).returncode == 0
        before = {hv: rules(hvs, hv) for hv in hvs}
        # e accepts gratuitous ARPs into its neighbour table (to see b's)
        e.run("sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
        e.run("ip", "neigh", "flush", "dev", "eth0")
        # live-migrate b: its cable moves to hv2, then the controller is told
        unplug(hvs, "hv1", b)
        plug(hvs, "hv2", b)
        sent = bg.call(ctl.move_port, "b", "hv2")
        bg.wait_converged(15)
        # b's delivery rule (table OUTPUT) left hv1 and appeared on hv2; its
        # directory entry (ARP answer) stays everywhere red has ports
        key = ctl.state.port_key("b")
        deliver = "table=%d, priority=100,reg15=0x%x actions=output" % (F.OUTPUT, key)
        arp = "arp_tpa=%s,arp_op=1 actions=move" % b.addr
        after = {hv: rules(hvs, hv) for hv in hvs}
        assert any(deliver in r for r in before["hv1"]), before["hv1"]
        assert not any(deliver in r for r in after["hv1"])
        assert any(deliver in r for r in after["hv2"])
        assert not any(deliver in r for r in before["hv2"])
        assert all(any(arp in r for r in after[hv]) for hv in hvs)
        # the rules on each bridge are exactly what the controller computes
        for hv in hvs:
            want = {str(f) for f in ctl.agents[hv].desired()}
            assert len(after[hv]) == len(want), (hv, sent)
            assert {str(f) for f in ctl.agents[hv].installed.values()} == want
        # the move was a difference, not a reload
        total = sum(ctl.agents[hv].total_flow_mods for hv in hvs)
        assert ctl.status()["hv1"]["connects"] == 1
        assert total - sum(len(r) for r in before.values()) < len(before["hv1"])
        # b announced itself from hv2 with a gratuitous ARP (packet-out
        # through hv2's pipeline), which e heard
        assert ctl.agents["hv2"].garps_sent == 1
        for _ in range(50):
            if neigh_mac(e, b.addr) == b.mac:
                break
            time.sleep(0.1)
        assert neigh_mac(e, b.addr) == b.mac
        # traffic follows b: now local to e on hv2
        assert b.ping(e.addr, count=2).returncode == 0, bg.call(ctl.status)
        # and back
        unplug(hvs, "hv2", b)
        plug(hvs, "hv1", b)
        bg.call(ctl.move_port, "b", "hv1")
        bg.wait_converged(15)
        assert a.ping(b.addr, count=2).returncode == 0
        assert sorted(rules(hvs, "hv1")) == sorted(before["hv1"])


def test_controller_and_switch_restart_reconverge_to_the_same_rules(hypervisors, vms):
    hvs = hypervisors
    for n, hv in PLACEMENT.items():
        plug(hvs, hv, vms[n])
    a, b = vms["a"], vms["b"]
    state = state_for(hvs, vms, PLACEMENT)
    with BackgroundController(state) as bg:
        bg.wait_converged(15)
        first = {hv: rules(hvs, hv) for hv in hvs}
        first_named = rules(hvs, "hv1", by_name=True)
    # rules stay while no controller runs; a new controller sends nothing
    assert a.ping(b.addr, count=2).returncode == 0
    with BackgroundController(state_for(hvs, vms, PLACEMENT)) as bg:
        bg.wait_converged(15)
        assert {hv: a.total_flow_mods for hv, a in bg.controller.agents.items()} == \
            {"hv1": 0, "hv2": 0}
        assert {hv: rules(hvs, hv) for hv in hvs} == first
        # restart hv1's daemon: flows are gone, the controller re-dials and
        # reinstalls them (ofport numbers may differ after the restart)
        d1, br1 = hvs["hv1"]
        d1.stop()
        d1.start()
        bg.wait_converged(20)
        assert bg.controller.agents["hv1"].connects == 2
        assert rules(hvs, "hv1", by_name=True) == first_named
        assert a.ping(b.addr, count=2).returncode == 0
