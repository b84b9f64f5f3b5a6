"""``pyvswitch demo``: hosts in namespaces ping each other through the daemon.

It does what a user would do on a host running Open vSwitch: start the
daemon, ``ovs-vsctl add-br`` / ``add-port`` the hosts' veths, ping, look at
the caches, and take it all down again — printing each step so the output
doubles as a walkthrough.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import time

from vswitch.process import DaemonProcess, ToolMissing
from vswitch.topology import Topology, link_exists

BRIDGE = "br0"


def say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(args) -> int:
    if os.geteuid() != 0:
        say("pyvswitch demo: needs root (network namespaces, AF_PACKET)")
        return 2
    n = max(2, min(args.hosts, 9))
    failures = 0
    daemon = DaemonProcess()
    # Ctrl-C arrives as KeyboardInterrupt; SIGTERM is made to do the same so
    # that teardown below runs in both cases.
    signal.signal(signal.SIGTERM, _interrupt)
    with Topology() as topo:
        try:
            say(f"== building {n} hosts (network namespaces, veth to the root namespace)")
            for i in range(1, n + 1):
                h = topo.add_host(f"h{i}", f"10.0.0.{i}/24")
                say(f"   {h.name}: netns {h.netns}, eth0 {h.ip} {h.mac}, "
                    f"switch port {h.port}")
            say(f"== starting pyvswitch (rundir {daemon.rundir})")
            daemon.start()
            say(f"== ovs-vsctl --db={daemon.db} add-br {BRIDGE}")
            daemon.vsctl("add-br", BRIDGE)
            for h in topo.hosts.values():
                say(f"== ovs-vsctl add-port {BRIDGE} {h.port}")
                daemon.vsctl("add-port", BRIDGE, h.port)
            say(daemon.vsctl("show").stdout.rstrip())
            say("== pings (every host to every other host)")
            for a, b in itertools.permutations(topo.hosts.values(), 2):
                p = a.ping(b.addr, count=args.count)
                stats = _ping_summary(p.stdout)
                ok = p.returncode == 0
                failures += not ok
                say(f"   {a.name} -> {b.name} ({b.addr}): "
                    f"{'ok' if ok else 'FAILED'}  {stats}")
            say("== megaflows in the datapath (pyvswitch dpctl dump-flows)")
            say(_indent(daemon.appctl("dpctl/dump-flows")))
            say("== OpenFlow rules (ovs-ofctl dump-flows)")
            of = daemon.ofctl("dump-flows", BRIDGE, check=False)
            say(_indent(of.stdout if of.returncode == 0 else of.stderr))
            if args.keep:
                say("== running; Ctrl-C to tear down")
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            say("== interrupted")
        except ToolMissing as e:
            say(f"pyvswitch demo: {e}")
            failures += 1
        except (subprocess.CalledProcessError, RuntimeError) as e:
            say(f"pyvswitch demo: {e}")
            out = getattr(e, "stderr", None)
            if out:
                say(out)
            say("daemon log:\n" + daemon.log_tail())
            failures += 1
        finally:
            say("== tearing down (daemon, namespaces, links)")
            rc = daemon.stop()
            daemon.cleanup()
    left = [p for p in topo.ports + [BRIDGE] if link_exists(p)]
    if left:
        say(f"   links left behind: {left}")
        failures += 1
    say(f"== daemon exited with {rc}; {'all pings passed' if not failures else f'{failures} failure(s)'}")
    return 0 if failures == 0 and rc == 0 else 1


_DEMO_PID = os.getpid()


def _interrupt(signum, _frame) -> None:
    if os.getpid() != _DEMO_PID:
        # A helper process forked by pyroute2 (namespace set-up): die as if
        # we had no handler, never run the demo's teardown twice.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    raise KeyboardInterrupt


def _ping_summary(out: str) -> str:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
    if not m:
        return out.strip().splitlines()[-1] if out.strip() else ""
    return f"{m.group(2)}/{m.group(1)} replies" + (f", avg rtt {rtt.group(1)} ms" if rtt else "")


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.rstrip().splitlines()) or "   (none)"

