"""``ofproto/trace``: how a bridge would treat a packet, step by step.

Like ``ovs-appctl ofproto/trace BRIDGE FLOW``: FLOW is in ovs-ofctl match
syntax (``in_port=1,icmp,nw_dst=10.0.0.2``); the pipeline is run on that
flow without side effects (no counters, no MAC learning, no packet-ins) and
the answer (``slowpath/trace.py``) lists the rules it went through, then the
megaflow and datapath actions the caches would get — the oracle the tests
and users compare the datapath against.  This module is the control-socket
adapter: it finds the bridge and holds the ofproto lock.
"""

from __future__ import annotations

import time

from slowpath.errors import OFError
from slowpath.trace import parse_flow, trace as trace_pipeline
from vswitch.unixctl import UnixctlError


def trace(reconciler, bridge_name: str, flow: str) -> str:
    bridge = reconciler.bridges.get(bridge_name)
    if bridge is None:
        raise UnixctlError(f"{bridge_name}: unknown bridge")
    try:
        key = parse_flow(flow)
    except OFError as e:
        raise UnixctlError(f"bad flow {flow!r}: {e}") from None
    with reconciler.ofproto_lock:
        return trace_pipeline(bridge.pipeline, key, time.monotonic(), bridge=bridge_name)


def register_commands(ctl, reconciler) -> None:
    def cmd(args: list[str]) -> str:
        if len(args) != 2:
            raise UnixctlError("usage: ofproto/trace BRIDGE FLOW")
        return trace(reconciler, args[0], args[1])

    ctl.register("ofproto/trace", "BRIDGE FLOW", cmd)
