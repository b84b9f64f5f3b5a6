"""Convergence benchmark on in-process switches.

``python -m bench.bench_controller --hosts 100 --ports 1000`` builds a
state (ports spread round-robin over hosts, 20 ports per logical switch,
a three-tier ACL on a tenth of them), then times:

* initial convergence: the asyncio `Controller` dials one
  `fake.OpenFlowPeer` per host (a real OpenFlow 1.3 session on a unix
  socket, switch side in the same process), reads features, ports and the
  TLV map, dumps their (empty) rule sets, computes every host's rules and
  sends the difference, until every barrier is answered;
* one port move: the VIF leaves its host and appears on another (PORT_STATUS
  on both), `move_port` rebinds it; the time until every host has answered
  its barrier again, and the flow mods each host received.

The peers decode every flow mod (the codec runs both ways) and share the
process' CPU; a real switch's own install time is not included.
``--direct`` skips the OpenFlow sessions (rules computed, encoded and applied
to a `FakeSwitch` per host directly), which isolates the computation.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from controller_stub import flows as F
from controller_stub import ofmsg
from controller_stub.controller import Controller
from controller_stub.fake import FakeSwitch, OpenFlowPeer
from controller_stub.state import State


def build(n_hosts: int, n_ports: int, per_switch: int = 20, openflow=None) -> tuple:
    hosts = {f"hv{i}": {"tunnel_ip": f"10.{i // 250}.{i % 250}.1"} for i in range(n_hosts)}
    if openflow is not None:
        for h, d in hosts.items():
            d["openflow"] = openflow(h)
    n_switches = max(1, n_ports // per_switch)
    switches = {f"ls{s}": {"vni": 1000 + s, "subnet": f"10.{100 + s // 250}.{s % 250}.0/24"}
                for s in range(n_switches)}
    ports = {}
    for p in range(n_ports):
        s = p % n_switches
        idx = p // n_switches + 2
        ports[f"vm{p}"] = {"switch": f"ls{s}", "mac": "02:%02x:%02x:%02x:%02x:%02x" % (
            s >> 8, s & 0xFF, 0, idx >> 8, idx & 0xFF),
            "ips": [f"10.{100 + s // 250}.{s % 250}.{idx}"], "host": f"hv{p % n_hosts}"}
    tiers = [f"vm{p}" for p in range(0, n_ports, 10)]
    state = State.from_dict({
        "hosts": hosts, "switches": switches, "ports": ports,
        "port_groups": {"web": tiers[0::3], "app": tiers[1::3], "db": tiers[2::3]},
        "acls": [{"group": "web", "proto": "tcp", "ports": [80, 443]},
                 {"group": "app", "proto": "tcp", "ports": [8080], "src": "@web"},
                 {"group": "db", "proto": "tcp", "ports": [5432], "src": "@app"}]})
    views = {}
    for h in hosts:
        ofports = {p.ifname: i + 1 for i, p in enumerate(
            q for q in state.ports.values() if q.host == h)}
        for j, r in enumerate(x for x in hosts if x != h):
            ofports[F.tunnel_port_name(r)] = 1000 + j
        views[h] = F.HostView(ofports)
    return state, views


def run(n_hosts: int, n_ports: int, out=print) -> dict:
    t0 = time.perf_counter()
    state, views = build(n_hosts, n_ports)
    t1 = time.perf_counter()
    switches = {h: FakeSwitch(h) for h in views}
    installed, n_mods = {}, 0
    for h, v in views.items():
        desired = F.host_flows(state, h, v)
        msgs = ofmsg.diff([], desired)
        for m in msgs:
            m.serialize()
        switches[h].apply(msgs)
        installed[h] = desired
        n_mods += len(msgs)
    t2 = time.perf_counter()
    # move one port to another host (its VIF shows up there)
    port = state.ports["vm0"]
    src, dst = port.host, f"hv{(int(port.host[2:]) + 1) % n_hosts}"
    state.move_port("vm0", dst)
    del views[src].ofports[port.ifname]
    views[dst].ofports[port.ifname] = 999
    t3 = time.perf_counter()
    moved = {}
    for h, v in views.items():
        desired = F.host_flows(state, h, v)
        msgs = ofmsg.diff(installed[h], desired)
        switches[h].apply(msgs)
        if msgs:
            moved[h] = len(msgs)
    t4 = time.perf_counter()
    res = {"hosts": n_hosts, "ports": n_ports, "state_s": t1 - t0, "converge_s": t2 - t1,
           "rules": n_mods, "move_s": t4 - t3, "move_flow_mods": sum(moved.values()),
           "move_hosts": len(moved)}
    out(f"{n_hosts} hosts x {n_ports} logical ports: {n_mods} rules, initial convergence "
        f"{res['converge_s']:.2f} s ({n_mods / res['converge_s']:.0f} flow mods/s incl. "
        f"os-ken encode+decode)")
    out(f"move vm0 {src} -> {dst}: {res['move_flow_mods']} flow mods on {len(moved)} hosts "
        f"({', '.join(f'{h}:{n}' for h, n in sorted(moved.items()))}), "
        f"reconciliation of all hosts {res['move_s'] * 1000:.0f} ms")
    return res


def run_openflow(n_hosts: int, n_ports: int, out=print) -> dict:
    return asyncio.run(_run_openflow(n_hosts, n_ports, out))


async def _run_openflow(n_hosts, n_ports, out):
    with tempfile.TemporaryDirectory(prefix="bench-ctl-") as tmp:
        t0 = time.perf_counter()
        state, views = build(n_hosts, n_ports, openflow=lambda h: f"unix:{tmp}/{h}.mgmt")
        peers = {h: await OpenFlowPeer(f"{tmp}/{h}.mgmt", i + 1, v.ofports).start()
                 for i, (h, v) in enumerate(views.items())}
        ctl = Controller(state, probe=None)
        t1 = time.perf_counter()
        try:
            await ctl.start()
            await ctl.wait_converged(timeout=900)
            t2 = time.perf_counter()
            rules = sum(len(p.switch.rules) for p in peers.values())
            mods0 = {h: a.total_flow_mods for h, a in ctl.agents.items()}
            assert all(a.tlv_index == 0 for a in ctl.agents.values())
            # move vm0: its VIF leaves one host and appears on another
            port = state.ports["vm0"]
            src, dst = port.host, f"hv{(int(port.host[2:]) + 1) % n_hosts}"
            t3 = time.perf_counter()
            peers[src].del_port(port.ifname)
            peers[dst].add_port(port.ifname, 999)
            ctl.move_port("vm0", dst)
            while (ctl.agents[dst].view.vif(port.ifname) is None      # both PORT_STATUS seen
                   or ctl.agents[src].view.vif(port.ifname) is not None):
                await asyncio.sleep(0.001)
            await ctl.wait_converged(timeout=120)
            t4 = time.perf_counter()
            moved = {h: a.total_flow_mods - mods0[h] for h, a in ctl.agents.items()
                     if a.total_flow_mods != mods0[h]}
            # a second move, to a host that already serves the port's logical switch
            p2 = state.ports["vm1"]
            dst2 = next((q.host for q in state.ports_on(p2.switch)
                         if q.host not in (p2.host, None)), None)
            moved2, src2 = {}, p2.host
            t5 = t6 = time.perf_counter()
            if dst2 is not None:
                mods1 = {h: a.total_flow_mods for h, a in ctl.agents.items()}
                src2 = p2.host
                peers[src2].del_port(p2.ifname)
                peers[dst2].add_port(p2.ifname, 998)
                ctl.move_port("vm1", dst2)
                while (ctl.agents[dst2].view.vif(p2.ifname) is None
                       or ctl.agents[src2].view.vif(p2.ifname) is not None):
                    await asyncio.sleep(0.001)
                await ctl.wait_converged(timeout=120)
                t6 = time.perf_counter()
                moved2 = {h: a.total_flow_mods - mods1[h] for h, a in ctl.agents.items()
                          if a.total_flow_mods != mods1[h]}
            # the peers hold exactly what the controller computes
            for h, a in ctl.agents.items():
                assert set(peers[h].switch.rules.values()) == set(a.desired()), h
        finally:
            await ctl.stop()
            for p in peers.values():
                p.close()
    res = {"hosts": n_hosts, "ports": n_ports, "state_s": t1 - t0, "converge_s": t2 - t1,
           "rules": rules, "flow_mods": sum(mods0.values()), "move_s": t4 - t3,
           "move_flow_mods": sum(moved.values()), "move_hosts": len(moved)}
    out(f"{n_hosts} hosts x {n_ports} logical ports over OpenFlow (in-process peers): "
        f"{rules} rules, initial convergence {res['converge_s']:.2f} s "
        f"({res['flow_mods'] / res['converge_s']:.0f} flow mods/s, barriers included)")
    out(f"move vm0 {src} -> {dst}: {res['move_flow_mods']} flow mods on {len(moved)} hosts "
        f"({', '.join(f'{h}:{n}' for h, n in sorted(moved.items()))}), converged again in "
        f"{res['move_s'] * 1000:.0f} ms")
    if moved2:
        res["move2_flow_mods"] = sum(moved2.values())
        out(f"move vm1 {src2} -> {dst2} (a host already serving its logical switch): "
            f"{res['move2_flow_mods']} flow mods on {len(moved2)} hosts "
            f"({', '.join(f'{h}:{n}' for h, n in sorted(moved2.items()))}), converged again "
            f"in {(t6 - t5) * 1000:.0f} ms")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.bench_controller")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--ports", type=int, default=1000)
    ap.add_argument("--direct", action="store_true",
                    help="no OpenFlow sessions: compute, encode and apply directly")
    args = ap.parse_args(argv)
    (run if args.direct else run_openflow)(args.hosts, args.ports)


if __name__ == "__main__":
    main()
