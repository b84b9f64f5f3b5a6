"""``python -m controller_stub.demo`` (root): the overlay demo, narrated.

Three hypervisors, each its own pyvswitch daemon with one bridge, joined by
GENEVE over loopback addresses (127.X.Y.1-3, X.Y random so that two runs
never share tunnel endpoints); VMs are network namespaces.
Two tenants use the same 10.0.0.0/24: tenant red runs a three-tier app
(web, app, db) under a microsegmentation policy, tenant blue reuses red's
addresses.  The controller creates the tunnel ports over OVSDB, installs
the pipeline over OpenFlow, and then db live-migrates from hv2 to hv3
during a continuous ping.  Everything it made is removed at the end.

This is the equivalent of the issue's ``pyvswitch demo --overlay`` (the
``pyvswitch`` CLI belongs to ``vswitch/cli.py``; it can call `main()`).
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time

from .controller import BackgroundController
from .state import State

PLACE = {"web": "hv1", "app": "hv2", "db": "hv2", "blue1": "hv1", "blue2": "hv3"}
TENANT = {"web": "red", "app": "red", "db": "red", "blue1": "blue", "blue2": "blue"}
ADDR = {"web": "10.0.0.1", "app": "10.0.0.2", "db": "10.0.0.3", "blue1": "10.0.0.3",
        "blue2": "10.0.0.1"}
ADDR6 = {"web": "fd00::1", "app": "fd00::2", "db": "fd00::3"}     # red is dual-stack
LISTEN = ("import socket,sys\ns=socket.socket()\n"
          "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',int(sys.argv[1])));s.listen(8);print('ready',flush=True)\n"
          "while True:\n c,_=s.accept();c.sendall(b'ok');c.close()")
CONNECT = ("import socket,sys\ntry:\n c=socket.create_connection((sys.argv[1],int(sys.argv[2])),"
           "timeout=2);print(c.recv(9).decode())\nexcept OSError:\n print('blocked')")


def say(msg=""):
    print(msg, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controller_stub.demo")
    ap.add_argument("--interval", type=float, default=0.01, help="ping interval during the move")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("the demo needs root (namespaces, AF_PACKET)")
    from vswitch.process import DaemonProcess
    from vswitch.topology import Topology

    daemons, listeners = {}, []
    underlay = f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(256)}."
    base = tempfile.mkdtemp(prefix="pvsdemo")
    try:
        for hv in ("hv1", "hv2", "hv3"):
            d = DaemonProcess(rundir=os.path.join(base, hv))
            os.makedirs(d.rundir)
            d.start()
            br = "pvsd" + secrets.token_hex(3)
            d.vsctl("add-br", br)
            daemons[hv] = (d, br)
        say(f"three hypervisors: {', '.join(f'{h} (bridge {b})' for h, (_, b) in daemons.items())}")
        with Topology() as topo:
            vms = {n: topo.add_host(n, ADDR[n] + "/24") for n in PLACE}
            for n, ip6 in ADDR6.items():
                vms[n].run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0",
                           "net.ipv6.conf.eth0.disable_ipv6=0")
                vms[n].run("ip", "-6", "addr", "add", ip6 + "/64", "dev", "eth0", "nodad")
            for n, vm in vms.items():
                d, br = daemons[PLACE[n]]
                d.vsctl("add-port", br, vm.port)
            say("VMs: " + ", ".join(f"{n} {TENANT[n]} {ADDR[n]} on {PLACE[n]}" for n in vms))
            state = State.from_dict({
                "hosts": {hv: {"tunnel_ip": f"{underlay}{i + 1}", "openflow": d.mgmt(br),
                               "ovsdb": d.db, "bridge": br}
                          for i, (hv, (d, br)) in enumerate(daemons.items())},
                "switches": {"red": {"vni": 100, "subnet": "10.0.0.0/24",
                                     "subnet6": "fd00::/64"},
                             "blue": {"vni": 200, "subnet": "10.0.0.0/24"}},
                "ports": {n: {"switch": TENANT[n], "mac": vm.mac,
                              "ips": [vm.addr] + ([ADDR6[n]] if n in ADDR6 else []),
                              "host": PLACE[n], "iface": vm.port} for n, vm in vms.items()},
                "port_groups": {"web": ["web"], "app": ["app"], "db": ["db"]},
                "acls": [{"group": "web", "proto": "tcp", "ports": [80]},
                         {"group": "web", "proto": "icmp"},
                         {"group": "app", "proto": "tcp", "ports": [8080], "src": "@web"},
                         {"group": "app", "proto": "icmp", "src": "@web"},
                         {"group": "db", "proto": "tcp", "ports": [5432], "src": "@app"},
                         {"group": "db", "proto": "icmp", "src": "@web"}],
            })
            t0 = time.monotonic()
            with BackgroundController(state) as bg:
                bg.wait_converged(30)
                st = bg.controller.status()
                say(f"controller converged in {time.monotonic() - t0:.2f} s: "
                    + ", ".join(f"{h} {s['rules']} rules" for h, s in st.items()))
                for n, port in (("web", 80), ("app", 8080), ("db", 5432)):
                    p = subprocess.Popen(["ip", "netns", "exec", vms[n].netns, sys.executable,
                                          "-c", LISTEN, str(port)], stdout=subprocess.PIPE,
                                         text=True)
                    p.stdout.readline()
                    listeners.append(p)

                say("\n-- tenants share 10.0.0.0/24 and never see each other")
                for src, dst in (("web", "db"), ("blue2", "blue1")):
                    ok = vms[src].ping(ADDR[dst], count=2).returncode == 0
                    mac = re.search(r"lladdr (\S+)", vms[src].run(
                        "ip", "neigh", "show", ADDR[dst]).stdout)
                    owner = next((n for n, v in vms.items() if mac and v.mac == mac.group(1)),
                                 "?")
                    say(f"{src} ({TENANT[src]}) ping {ADDR[dst]}: {'ok' if ok else 'FAILED'}, "
                        f"answered by {owner} ({TENANT.get(owner, '?')}), "
                        f"ARP resolved by {PLACE[src]}'s directory")

                key = bg.controller.state.port_key
                say(f"tunnelled frames carry OVN's GENEVE option (class 0x0102, type 0x80) "
                    f"in tun_metadata{bg.controller.agents['hv1'].tlv_index}: web -> db as "
                    f"{key('web') << 16 | key('db'):#010x} (ingress key {key('web')}, egress key "
                    f"{key('db')}); hv2 outputs to the port the option names")
                ok = vms["web"].run("ping", "-6", "-c", "2", "-W", "2", ADDR6["db"],
                                    check=False).returncode == 0
                nd = bg.controller.agents["hv1"].nd_answered
                say(f"web ping -6 {ADDR6['db']} (db): {'ok' if ok else 'FAILED'}; neighbour "
                    f"solicitations answered at the source host by the controller: {nd} "
                    f"(no ND multicast crosses a tunnel)")

                say("\n-- three-tier policy (web:80 from all; app:8080 from web; db:5432 from app)")
                for src, dst, port in (("web", "app", 8080), ("app", "db", 5432),
                                       ("web", "db", 5432), ("db", "app", 8080),
                                       ("app", "web", 80)):
                    out = vms[src].run(sys.executable, "-c", CONNECT, ADDR[dst], str(port),
                                       check=False).stdout.strip()
                    say(f"{src} -> {dst}:{port}  {'allowed' if out == 'ok' else 'blocked'}")

                say("\n-- live migration: db moves hv2 -> hv3 while web pings it every "
                    f"{args.interval * 1000:.0f} ms")
                ping = subprocess.Popen(["ip", "netns", "exec", vms["web"].netns, "ping", "-i",
                                         str(args.interval), "-w", "5", "-W", "1", ADDR["db"]],
                                        stdout=subprocess.PIPE, text=True)
                time.sleep(1.5)
                t0 = time.monotonic()
                daemons["hv2"][0].vsctl("del-port", daemons["hv2"][1], vms["db"].port)
                daemons["hv3"][0].vsctl("add-port", daemons["hv3"][1], vms["db"].port)
                sent = bg.call(bg.controller.move_port, "db", "hv3")
                bg.wait_converged(30)
                took = time.monotonic() - t0
                out, _ = ping.communicate(timeout=30)
                m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
                tx, rx = int(m.group(1)), int(m.group(2))
                say(f"VIF unplugged from hv2, plugged into hv3, controller told: {took:.2f} s")
                say("flow mods sent: " + ", ".join(f"{h} {n}" for h, n in sorted(sent.items()))
                    + f"; gratuitous ARP / unsolicited NA from hv3: "
                    f"{bg.controller.agents['hv3'].garps_sent}")
                say(f"ping: {tx} sent, {rx} received, lost {tx - rx} = "
                    f"{(tx - rx) * args.interval * 1000:.0f} ms of traffic")
                out = vms["app"].run(sys.executable, "-c", CONNECT, ADDR["db"], "5432",
                                     check=False).stdout.strip()
                say(f"app -> db:5432 after the move: {'allowed' if out == 'ok' else 'blocked'}")
            say("\ndone; removing daemons, namespaces and links")
    finally:
        for p in listeners:
            p.kill()
        for d, _ in daemons.values():
            d.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
