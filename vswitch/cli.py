"""The ``pyvswitch`` command: the daemon, the demo, the bench and introspection.

Configuration is not here on purpose: bridges and ports are set with the OVS
tools (``ovs-vsctl --db=unix:RUNDIR/db.sock ...``) and rules with ``ovs-ofctl
... unix:RUNDIR/BRIDGE.mgmt``, as on Open vSwitch.  What OVS tools cannot show
about our own datapath (its caches, the daemon's state) is asked of the
running daemon over its control socket ``RUNDIR/pyvswitch.ctl``, like
``ovs-appctl``.
"""

from __future__ import annotations

import argparse
import os
import sys

from vswitch import __version__

DEFAULT_RUNDIR = "/var/run/pyvswitch"


def _add_rundir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rundir", default=os.environ.get("PYVSWITCH_RUNDIR", DEFAULT_RUNDIR),
                   help="directory of the daemon's sockets, pidfile and database "
                        "(default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyvswitch",
        description="An Open vSwitch-class software switch. Configure it with "
                    "ovs-vsctl/ovs-ofctl against the sockets in --rundir.")
    parser.add_argument("--version", action="version",
                        version=f"pyvswitch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run the daemon (foreground unless --detach)",
                         description="Run the switch daemon: OVSDB at unix:RUNDIR/db.sock, "
                                     "OpenFlow at unix:RUNDIR/BRIDGE.mgmt, control "
                                     "socket unix:RUNDIR/pyvswitch.ctl.")
    _add_rundir(run)
    run.add_argument("--db", help="database file (default: RUNDIR/conf.db)")
    run.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", default="text", choices=["text", "json"])
    run.add_argument("--log-file", help="log to this file instead of stderr")
    run.add_argument("--detach", action="store_true",
                     help="run in the background once ready; the pid is in RUNDIR/pyvswitch.pid")
    run.add_argument("--remote", action="append", default=[],
                     help="extra OVSDB remote, e.g. ptcp:6640:127.0.0.1 (repeatable)")

    demo = sub.add_parser("demo", help="namespaces ping each other through the daemon",
                          description="Build network namespaces wired by veths to a "
                                      "bridge of a fresh daemon, ping between them, "
                                      "print what happened, tear everything down.")
    demo.add_argument("--hosts", type=int, default=3, help="number of namespaces (2-9)")
    demo.add_argument("--count", type=int, default=3, help="pings per pair")
    demo.add_argument("--keep", action="store_true",
                      help="keep running until Ctrl-C after the pings")
    demo.add_argument("--overlay", action="store_true",
                      help="the network-virtualization demo instead: three daemons "
                           "joined by GENEVE, driven by controller_stub (two tenants, "
                           "a three-tier ACL, a live migration)")
    demo.add_argument("--ovn", action="store_true",
                      help="real OVN (ovn-northd, ovn-controller) drives two pyvswitch "
                           "hypervisors: logical switches and router, ACLs, a load "
                           "balancer, native DHCP, a live migration")

    bench = sub.add_parser("bench", help="measure packet rates (see bench/README)",
                           add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)

    dpctl = sub.add_parser("dpctl", help="show the datapath and its flow caches",
                           description="Ask a running daemon about its datapath.")
    dpctl.add_argument("action", choices=["show", "dump-flows", "del-flows"])
    _add_rundir(dpctl)
    dpctl.add_argument("--kernel", action="store_true",
                       help="the XDP (kernel) flow cache instead of the userspace one")

    conntrack = sub.add_parser("conntrack", help="show or flush connection tracking",
                               description="Ask a running daemon about its connection "
                                           "tracker (dpctl/dump-conntrack, "
                                           "dpctl/flush-conntrack, dpctl/ct-stats-show).")
    conntrack.add_argument("action", choices=["dump", "flush", "stats"])
    _add_rundir(conntrack)
    conntrack.add_argument("--zone", type=int, help="only this zone")
    conntrack.add_argument("-s", "--stats", action="store_true", dest="more",
                           help="dump: with packet/byte counters and timeouts")

    tr = sub.add_parser("trace", help="show how a bridge treats a flow (like ofproto/trace)",
                        description="Run BRIDGE's OpenFlow pipeline on FLOW (ovs-ofctl "
                                    "syntax, e.g. in_port=1,icmp,nw_dst=10.0.0.2) and "
                                    "print the rules, the megaflow and datapath actions.")
    _add_rundir(tr)
    tr.add_argument("bridge")
    tr.add_argument("flow")

    appctl = sub.add_parser("appctl", help="send any control command to a running daemon",
                            description="Like ovs-appctl: COMMAND [ARG...]; "
                                        "'list-commands' lists them.")
    _add_rundir(appctl)
    appctl.add_argument("ctl_command", metavar="COMMAND")
    appctl.add_argument("ctl_args", nargs="*", metavar="ARG")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from vswitch.daemon import run_daemon
        return run_daemon(args)
    if args.command == "demo":
        if args.ovn:
            from vswitch.ovn_demo import run_demo as ovn_demo
            return ovn_demo(args)
        if args.overlay:
            from controller_stub.demo import main as overlay_demo
            return overlay_demo([])
        from vswitch.demo import run_demo
        return run_demo(args)
    if args.command == "bench":
        from bench.__main__ import main as bench_main
        return bench_main(args.args)
    if args.command == "dpctl":
        argv_ = ["dpctl/" + args.action] + (["--kernel"] if args.kernel else [])
        return _appctl(args.rundir, argv_[0], argv_[1:])
    if args.command == "conntrack":
        cmd = {"dump": "dpctl/dump-conntrack", "flush": "dpctl/flush-conntrack",
               "stats": "dpctl/ct-stats-show"}[args.action]
        params = (["-s"] if args.more and args.action == "dump" else []) + (
            [f"zone={args.zone}"] if args.zone is not None else [])
        return _appctl(args.rundir, cmd, params)
    if args.command == "trace":
        return _appctl(args.rundir, "ofproto/trace", [args.bridge, args.flow])
    if args.command == "appctl":
        return _appctl(args.rundir, args.ctl_command, args.ctl_args)
    return 2


def _appctl(rundir: str, command: str, params: list[str]) -> int:
    from vswitch.unixctl import UnixctlError, call
    try:
        print(call(os.path.join(rundir, "pyvswitch.ctl"), command, params), end="")
    except UnixctlError as e:
        print(f"pyvswitch: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
