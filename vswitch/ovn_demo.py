"""``pyvswitch demo --ovn``: real OVN drives two pyvswitch hypervisors.

The same deployment as ``tests/integration/test_ovn.py`` (`vswitch.ovn`),
for a new user: each step says what OVN does and what it asked of the
switch, then shows the result with the usual tools.  Everything is torn
down at the end (or on Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import time

from vswitch.ovn import Deployment


def say(msg: str = "") -> None:
    print(msg, flush=True)


def _indent(text: str, n: int = 4) -> str:
    return "\n".join(" " * n + ln for ln in text.rstrip().splitlines())


def _interrupt(*_):
    raise KeyboardInterrupt


def _ping(src, dst: str, label: str) -> bool:
    src.reaches(dst, timeout=10)
    p = src.ping(dst, count=3)
    stats = [ln for ln in p.stdout.splitlines() if "packet loss" in ln]
    ok = " 0% packet loss" in p.stdout
    say(f"    {label}: {'ok' if ok else 'FAILED'}  {stats[0] if stats else p.stderr.strip()}")
    return ok


def run_demo(args) -> int:
    if os.geteuid() != 0:
        say("pyvswitch demo --ovn: needs root (network namespaces)")
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    failures = 0
    try:
        with Deployment() as ovn:
            failures = _story(ovn, keep=getattr(args, "keep", False))
    except KeyboardInterrupt:
        say("== interrupted; everything torn down")
    except Exception as e:  # a tool missing, a timeout: say it plainly
        say(f"pyvswitch demo --ovn: {type(e).__name__}: {e}")
        return 1
    say("== torn down: processes stopped, namespaces removed")
    return 1 if failures else 0


def _story(ovn: Deployment, keep: bool) -> int:
    failures = 0
    say("== OVN central: NB and SB databases (ovsdb-server) and ovn-northd, in "
        f"{ovn.central.dir}")
    say("   Logical networks go into NB; ovn-northd compiles them into logical flows in SB.")
    say("== two hypervisors (network namespaces hv1, hv2) joined by an underlay L2 segment;")
    say("   each runs a pyvswitch daemon and Debian's ovn-controller pointed at its OVSDB socket")
    hv1, hv2 = ovn.add_hypervisor("hv1"), ovn.add_hypervisor("hv2")
    for hv in (hv1, hv2):
        say(f"   {hv.name}: encap ip {hv.encap_ip}, pyvswitch rundir {hv.rundir}")
    say("== ovn-controller created br-int (fail-mode secure) and a GENEVE tunnel to the "
        "other chassis in pyvswitch's database, then registered its chassis in SB:")
    say(_indent(ovn.sbctl("show")))

    say("== the logical network (ovn-nbctl): two logical switches joined by a distributed router")
    ovn.add_routed_switches()
    n = ovn.nbctl
    a = ovn.add_vm("a", hv1, "sw0", "10.0.0.1/24", gateway="10.0.0.254")
    b = ovn.add_vm("b", hv2, "sw0", "10.0.0.2/24", gateway="10.0.0.254")
    c = ovn.add_vm("c", hv1, "sw0", "10.0.0.3/24", gateway="10.0.0.254")
    d = ovn.add_vm("d", hv2, "sw1", "10.1.0.4/24", gateway="10.1.0.254")
    e = ovn.add_vm("e", hv1, "sw1", "dhcp", mac="0a:00:00:00:01:05",
                   lsp_addresses="0a:00:00:00:01:05 10.1.0.5")
    ovn.serve_dhcp(e)
    t = time.monotonic()
    ovn.wait_up(*ovn.vms.values())
    say(f"   VMs plugged into br-int with external_ids:iface-id; bound and "
        f"ovn-installed in {time.monotonic() - t:.1f} s")
    say(_indent(n("show")))
    flows = hv1.ofctl("dump-flows").count("\n") - 1
    say(f"== hv1's br-int now holds {flows} OpenFlow rules from ovn-controller "
        "(OpenFlow 1.5, in atomic bundles):")
    say(_indent(hv1.vsctl("show")))

    say("== traffic: same switch across the GENEVE overlay, same host, and routed")
    for src, dst, label in ((a, b, "a(hv1) -> b(hv2)"), (b, a, "b(hv2) -> a(hv1)"),
                            (a, c, "a -> c (both hv1)"), (a, d, "a(sw0) -> d(sw1), routed"),
                            (d, c, "d(sw1) -> c(sw0), routed")):
        failures += not _ping(src, dst.addr, label)

    say("== native DHCP: e asks; OVN's pipeline pauses the packet (controller(pause)),")
    say("   ovn-controller writes the offer and resumes it (NXT_RESUME)")
    try:
        offer = e.dhcp_discover()
        say(f"    offer: {offer}")
        e.run("ip", "addr", "add", f"{offer['yiaddr']}/24", "dev", "eth0")
        e.run("ip", "route", "add", "default", "via", offer["router"])
        failures += not _ping(e, b.addr, "e (DHCP) -> b, routed")
    except RuntimeError as err:
        say(f"    FAILED: {err}")
        failures += 1

    say("== ACLs: nothing new into b, b's own connections allowed (allow-related, conntrack)")
    n("acl-add", "sw0", "to-lport", "1000", 'outport == "b" && ip4', "drop", "--",
      "acl-add", "sw0", "from-lport", "1000", 'inport == "b" && ip4', "allow-related", "--",
      "acl-add", "sw0", "to-lport", "1001", 'outport == "b" && tcp.dst == 23', "reject")
    n("--wait=hv", "sync")
    srv = a.serve_tcp(8080, "hello from a")
    try:
        blocked = a.ping(b.addr, count=2, wait=1).returncode != 0
        say(f"    a -> b ping: {'dropped, as the ACL says' if blocked else 'NOT dropped'}")
        failures += not blocked
        rst = a.tcp_get(b.addr, 23)
        say(f"    a -> b tcp/23 (reject): {rst} (an RST built by ovn-controller)")
        failures += rst != "ConnectionRefusedError"
        failures += not _ping(b, a.addr, "b -> a (replies come back: related)")
        got = b.tcp_get(a.addr, 8080)
        say(f"    b -> a tcp/8080: {got!r}")
        failures += got != "hello from a"
    finally:
        srv.terminate()
        srv.wait()
        n("--wait=hv", "acl-del", "sw0")

    say("== a load balancer: VIP 10.0.0.100:80 -> b:80 and d:80 (DNAT in conntrack)")
    n("lb-add", "lb0", "10.0.0.100:80", "10.0.0.2:80,10.1.0.4:80", "tcp")
    n("--wait=hv", "ls-lb-add", "sw0", "lb0", "--", "lr-lb-add", "lr0", "lb0")
    servers = [b.serve_tcp(80, "b"), d.serve_tcp(80, "d")]
    try:
        got = [a.tcp_get("10.0.0.100", 80, timeout=3) for _ in range(10)]
        say(f"    10 connections from a answered by: {', '.join(got)}")
        failures += set(got) != {"b", "d"}
    finally:
        for s in servers:
            s.terminate()
            s.wait()

    say("== live migration: c moves hv1 -> hv2 while a pings it every 10 ms")
    m = ovn.measure_move(c, hv2, pinger=a)
    say(f"    {m['sent'] - m['received']} of {m['sent']} pings lost = {m['lost_ms']:.0f} ms "
        f"of traffic (SB binding moved after {m['bound_after_s']:.2f} s)")
    failures += not (0 < m["received"])
    failures += not _ping(a, c.addr, "a -> c, now on hv2")

    say("== what the datapath cached on hv1 (pyvswitch dpctl dump-flows, first lines)")
    say(_indent("\n".join(hv1.switch.appctl("dpctl/dump-flows").splitlines()[:8])))
    if keep:
        say("== running; Ctrl-C to tear down.  Try: "
            f"ovn-nbctl --db={ovn.central.nb} show")
        while True:
            time.sleep(3600)
    say(f"== {'all steps worked' if not failures else f'{failures} step(s) FAILED'}")
    return failures
