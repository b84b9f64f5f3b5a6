"""Time from an ``ovn-nbctl`` commit to traffic flowing, pyvswitch beside OVS.

Two hypervisors under real OVN (`vswitch.ovn.Deployment`), both running the
system under test (two pyvswitch daemons, or two Open vSwitch 3.1 userspace
datapaths), and a third chassis that exists only in the southbound database
(``ovn-sbctl chassis-add``): "the rest of the cloud".  VM ``a`` (hv1) is up
on logical switch sw0.  For N logical ports:

1. bulk: one transaction adds N-1 ports to sw0 (addresses, port security),
   bound to the third chassis (``ovn-sbctl lsp-bind``), so both hypervisors
   install their flows (L2 lookup, ARP responder, tunnel output: ~10
   OpenFlow rules each); timed from the NB commit until ``--wait=hv`` says
   every ovn-controller has installed it;
2. one more: VM ``b`` (hv2) is already plugged into br-int with
   ``iface-id=b``; one ``ovn-nbctl --wait=hv`` transaction creates port b.
   a pings b every 10 ms throughout (static neighbour entries, no ARP timer
   in the way); ``traffic`` is the first echo reply, counted from the commit.

    sudo .venv/bin/python -m bench.bench_ovn [--ports 1,100,1000] [--reps 1] [--systems pyvswitch,ovs]

Figures only, nothing asserted; on this 2-core VM shared with other work
they are noisy, compare systems within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

from vswitch.ovn import Deployment, sh


def _addr(i: int) -> tuple[str, str]:
    return "0a:01:00:%02x:%02x:%02x" % (i >> 16 & 0xff, i >> 8 & 0xff, i & 0xff), \
        f"10.0.{1 + i // 250}.{1 + i % 250}"


def measure(system: str, n_ports: int) -> dict:
    with Deployment() as ovn:
        # both systems tunnel in their datapath (underlay NIC on br-phy)
        hv1 = ovn.add_hypervisor("hv1", system, native=True)
        hv2 = ovn.add_hypervisor("hv2", system, native=True)
        ovn.sbctl("chassis-add", "hv3", "geneve", f"{ovn.subnet}.250")
        ovn.nbctl("ls-add", "sw0")
        a = ovn.add_vm("a", hv1, "sw0", "10.0.0.1/16", mac="0a:00:00:00:00:01")
        b = ovn.add_vm("b", hv2, "sw0", "10.0.0.2/16", mac="0a:00:00:00:00:02",
                       create_lsp=False)
        ovn.wait_up(a)
        sh("ip", "neigh", "replace", b.addr, "lladdr", b.mac, "dev", "eth0", "nud", "permanent",
           ns=a.netns)
        sh("ip", "neigh", "replace", a.addr, "lladdr", a.mac, "dev", "eth0", "nud", "permanent",
           ns=b.netns)
        bulk = None
        if n_ports > 1:
            txn = []
            for i in range(n_ports - 1):
                mac, ip = _addr(1000 + i)
                txn += ["--", "lsp-add", "sw0", f"p{i}", "--", "lsp-set-addresses", f"p{i}",
                        f"{mac} {ip}", "--", "lsp-set-port-security", f"p{i}", f"{mac} {ip}"]
            t0 = time.time()
            ovn.nbctl("--wait=sb", *txn[1:], timeout=600)
            bind = []
            for i in range(n_ports - 1):
                bind += ["--", "lsp-bind", f"p{i}", "hv3"]
            ovn.sbctl(*bind[1:], timeout=600)
            ovn.nbctl("--wait=hv", "sync", timeout=600)
            bulk = time.time() - t0
        rules = hv1.ofctl("dump-flows").count("\n") - 1
        ping = subprocess.Popen(["ip", "netns", "exec", a.netns, "ping", "-D", "-n", "-i",
                                 "0.01", "-W", "1", b.addr], stdout=subprocess.PIPE,
                                text=True)
        try:
            time.sleep(0.3)
            t0 = time.time()
            ovn.nbctl("--wait=hv", "lsp-add", "sw0", "b", "--", "lsp-set-addresses", "b",
                      f"{b.mac} {b.addr}", "--", "lsp-set-port-security", "b",
                      f"{b.mac} {b.addr}", timeout=600)
            synced = time.time() - t0
            first = None
            deadline = time.time() + 120
            while first is None and time.time() < deadline:
                line = ping.stdout.readline()
                if "bytes from" in line:
                    first = float(line.split("]")[0].lstrip("[")) - t0
        finally:
            ping.terminate()
            ping.wait()
        return {"system": system, "ports": n_ports, "bulk_s": bulk, "traffic_s": first,
                "synced_s": synced, "rules_hv1": rules}


def _med(runs, key):
    v = [r[key] for r in runs if r[key] is not None]
    return f"{statistics.median(v):.2f}" if v else "-"


def table(results: list[dict]) -> str:
    rows = ["| system | logical ports | N-1 ports: commit -> hv synced (s) | br-int rules (hv1) "
            "| port N: commit -> traffic (s) | port N: commit -> hv synced (s) |",
            "|---|---|---|---|---|---|"]
    for system in dict.fromkeys(r["system"] for r in results):
        for n in dict.fromkeys(r["ports"] for r in results):
            runs = [r for r in results if (r["system"], r["ports"]) == (system, n)]
            if runs:
                rows.append(f"| {system} | {n} | {_med(runs, 'bulk_s')} | {runs[-1]['rules_hv1']} "
                            f"| {_med(runs, 'traffic_s')} | {_med(runs, 'synced_s')} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ports", default="1,100,1000")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--systems", default="pyvswitch,ovs")
    ap.add_argument("--json", help="write the raw runs here")
    args = ap.parse_args(argv)
    results = []
    for _ in range(args.reps):
        for n in (int(x) for x in args.ports.split(",")):
            for system in args.systems.split(","):
                r = measure(system, n)
                print(f"{system:10} {n:5} ports: {r}", flush=True)
                results.append(r)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
