"""The firewall's cost: TCP handshakes/s and established-flow Mpps, on vs off.

``python -m bench.bench_conntrack [--seconds S] [--reps N]`` (root).

Three firewall settings: off (``in_port`` rules), on with conntrack offload
(the default: established connections become exact megaflows of the fast
path, slowpath/conntrack/offload.py), and on with offload turned off
(``dpctl/ct-set-offload off``: every packet through ``ct`` in Python).  The
established-flow figure is also measured behind the XDP flow cache
(``datapath_type=xdp``), where offloaded connections run in the kernel.

* **new connections/s**: a client in h1 opens, uses (100 bytes echoed) and
  closes TCP connections to a server in h2 one after another for S seconds;
  "off" forwards with ``in_port`` rules, "on" runs the stateful policy below
  (ct in zone 1, commit on +new, pass +est, drop the rest).
* **established Mpps**: `bench.scenarios.Bench` (XDP live-frames generator in
  h1, XDP drop sink in h2, 64-byte UDP, one flow) through the same two rule
  sets; for "on" h2 first answers once, so the measured flow is +est.

Prints a Markdown table of medians (min–max).  Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import textwrap

from bench.scenarios import SWITCH_CPU, Bench, Pyvswitch, _pin
from vswitch.process import DaemonProcess
from vswitch.topology import Topology

FIREWALL = textwrap.dedent("""
    table=0,priority=10,ip,actions=ct(table=1,zone=1)
    table=0,priority=0,actions=drop
    table=1,priority=200,ct_state=+inv+trk,actions=drop
    table=1,priority=100,ct_state=+new-inv+trk,ip,in_port=1,actions=ct(commit,zone=1),output:2
    table=1,priority=90,ct_state=+est+trk,in_port=1,actions=output:2
    table=1,priority=90,ct_state=+est+trk,in_port=2,actions=output:1
    table=1,priority=0,actions=drop
""").strip() + "\n"
PLAIN = "in_port=1,actions=output:2\nin_port=2,actions=output:1\n"

SERVER = textwrap.dedent("""
    import socket, threading
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8080)); s.listen(512)
    print("ready", flush=True)
    def serve(c):
        d = c.recv(100); c.sendall(d); c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")
CLIENT = textwrap.dedent("""
    import socket, sys, time
    dst, seconds = sys.argv[1], float(sys.argv[2])
    n = fail = 0
    end = time.time() + seconds
    start = time.time()
    while time.time() < end:
        try:
            s = socket.create_connection((dst, 8080), timeout=2)
            s.sendall(b"x" * 100); s.recv(100); s.close()
            n += 1
        except OSError:
            fail += 1
    print(n / (time.time() - start), fail)
""")


def _load(daemon, bridge, flows: str) -> None:
    daemon.ofctl("del-flows", bridge)
    p = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", daemon.mgmt(bridge), "-"],
                       input=flows, capture_output=True, text=True, timeout=30)
    if p.returncode:
        raise RuntimeError(p.stderr)


def conns_per_second(firewall: bool, seconds: float, offload: bool = True) -> tuple[float, int]:
    with Topology() as topo:
        h1 = topo.add_host("h1", "10.78.0.1/24")
        h2 = topo.add_host("h2", "10.78.0.2/24")
        h1.run("ip", "neigh", "replace", h2.addr, "lladdr", h2.mac, "dev", "eth0")
        h2.run("ip", "neigh", "replace", h1.addr, "lladdr", h1.mac, "dev", "eth0")
        daemon = DaemonProcess(log_level="warning").start()
        server = None
        try:
            _pin(daemon.proc.pid, SWITCH_CPU)
            br = f"pvsbr{topo.tag}"
            daemon.vsctl("add-br", br)
            for port in topo.ports:
                daemon.vsctl("add-port", br, port)
            _load(daemon, br, FIREWALL if firewall else PLAIN)
            if not offload:
                daemon.appctl("dpctl/ct-set-offload", "off")
            server = subprocess.Popen(["ip", "netns", "exec", h2.netns, sys.executable, "-c",
                                       SERVER], stdout=subprocess.PIPE, text=True)
            assert server.stdout.readline().strip() == "ready"
            out = h1.run(sys.executable, "-c", CLIENT, h2.addr, str(seconds),
                         timeout=seconds + 60).stdout.split()
            return float(out[0]), int(out[1])
        finally:
            if server is not None:
                server.kill()
                server.wait()
            daemon.cleanup()


class PyvswitchFirewall(Pyvswitch):
    def __init__(self, offload: bool = True, datapath_type: str = "netdev"):
        super().__init__("in_port", datapath_type=datapath_type)
        self.offload = offload
        self.name = (f"pyvswitch-{'xdp' if datapath_type == 'xdp' else 'afpacket'}-firewall"
                     + ("" if offload else "-no-offload"))
        self.offload_report = ""

    def setup(self, topo: Topology) -> None:
        super().setup(topo)
        _load(self.daemon, self.br, FIREWALL)
        if not self.offload:
            self.daemon.appctl("dpctl/ct-set-offload", "off")
        h1, h2 = topo.hosts["h1"], topo.hosts["h2"]
        h2.run("ip", "neigh", "replace", h1.addr, "lladdr", h1.mac, "dev", "eth0")
        # The generator's flow (1234 -> 5678) is committed by a first packet
        # and answered once by h2: from then on it is +est.
        for host, sport, dst, dport in ((h1, 1234, h2.addr, 5678), (h2, 5678, h1.addr, 1234)):
            host.run(sys.executable, "-c", textwrap.dedent(f"""
                import socket, time
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("{host.addr}", {sport}))
                s.sendto(b"hello", ("{dst}", {dport}))
                time.sleep(0.2)
            """))
        dump = self.daemon.appctl("dpctl/dump-conntrack", "--", "-s")
        if not re.search(r"udp,orig=\(src=%s,dst=%s,sport=1234,dport=5678,packets=1,.*"
                         r"packets=1," % (h1.addr, h2.addr), dump):
            raise RuntimeError("the measured flow is not established: " + dump)
        _pin(self.daemon.proc.pid, SWITCH_CPU)

    def teardown(self) -> None:
        try:      # did the measured flow run offloaded?  (sanity, to stderr)
            show = self.daemon.appctl("dpctl/show")
            self.offload_report = next((ln.strip() for ln in show.splitlines()
                                        if "ct_offload" in ln), "")
            self.offload_report += " " + next((ln.strip() for ln in show.splitlines()
                                               if "upcalls:" in ln), "")
        except Exception as e:      # noqa: BLE001 - figures only
            self.offload_report = f"(no report: {e})"
        super().teardown()


def _fmt(xs: list[float], fmt: str) -> str:
    if not xs:
        return "–"
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}–{max(xs):{fmt}})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    # (name, firewall, offload); conns/s and Mpps through AF_PACKET ports
    settings = [("off", False, True), ("on, offload", True, True),
                ("on, no offload", True, False)]
    conns = {n: [] for n, _, _ in settings}
    mpps = {n: [] for n, _, _ in settings}
    xdp = {"off": [], "on, offload": []}
    for rep in range(a.reps):
        for name, fw, off in settings:
            rate, fail = conns_per_second(fw, a.seconds, off)
            conns[name].append(rate)
            print(f"rep {rep + 1} firewall {name}: {rate:.0f} conn/s ({fail} failed)",
                  file=sys.stderr)
    bench = Bench()
    try:
        for rep in range(a.reps):
            systems = [(name, mpps, PyvswitchFirewall(off) if fw else Pyvswitch("in_port"))
                       for name, fw, off in settings]
            systems += [("off", xdp, Pyvswitch("in_port", datapath_type="xdp")),
                        ("on, offload", xdp, PyvswitchFirewall(True, datapath_type="xdp"))]
            for name, table, system in systems:
                try:
                    r = bench.measure(system, a.seconds, 1)
                except Exception as e:     # noqa: BLE001 - one system failing is a figure too
                    print(f"rep {rep + 1} {system.name}: failed: {e}", file=sys.stderr)
                    continue
                table[name].append(r["mpps"])
                print(f"rep {rep + 1} {system.name}: {r['mpps']:.4f} Mpps "
                      f"(offered {r['offered_mpps']:.2f}) "
                      f"{getattr(system, 'offload_report', '')}", file=sys.stderr)
    finally:
        bench.close()
    rows = ["| firewall | new TCP connections/s | established Mpps (AF_PACKET) "
            "| established Mpps (XDP cache) |", "|---|---|---|---|"]
    for name, _, _ in settings:
        rows.append(f"| {name} | {_fmt(conns[name], '.0f')} | {_fmt(mpps[name], '.4f')} "
                    f"| {_fmt(xdp.get(name, []), '.3f')} |")
    print(f"(medians of {a.reps}, min–max; 64-byte UDP, one flow; 2 shared cores: noisy)")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
